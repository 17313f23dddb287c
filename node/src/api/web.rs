//! The node's web view: the page itself comes from the `cpns-web` crate (embedded assets,
//! one-time links, session cookies, the loopback guard); this module adds what is the node's
//! own: `POST /v1/web/link` (the one-time URL `cpns web` prints), `GET /web/events` (the PN
//! pushed as server-sent events) and `GET /v1/content/progress/{id}` (how far a fetch got).
//!
//! The page uses the same `/v1/…` endpoints as the CLI, authenticated by its cookie instead
//! of the bearer token (see `require_token` in `api.rs`), so it can do exactly what the API
//! allows and nothing more.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::extract::{Path, State};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_api::{ContentProgress, PnEvent, WebLink};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::{ApiResult, ApiState};
use crate::views::IntoApi;

/// Fetches in flight at once that progress is kept for (more still run, without progress).
const MAX_FETCHES: usize = 64;

/// What the web view keeps: its sessions, where downloads land, and the fetches in flight.
#[derive(Debug)]
pub(crate) struct WebState {
    pub(crate) sessions: Arc<cpns_web::Sessions>,
    port: u16,
    downloads: PathBuf,
    /// Service id -> when its fetch started, while it runs.
    fetches: Mutex<HashMap<String, SystemTime>>,
    /// The node's shutdown: event streams end with it, so that an open page does not hold
    /// up the API's graceful shutdown.
    cancel: tokio_util::sync::CancellationToken,
}

impl WebState {
    pub(crate) fn new(
        port: u16,
        data_dir: &std::path::Path,
        cancel: tokio_util::sync::CancellationToken,
    ) -> Self {
        Self {
            sessions: Arc::new(cpns_web::Sessions::new("node", port)),
            port,
            downloads: data_dir.join("downloads"),
            fetches: Mutex::new(HashMap::new()),
            cancel,
        }
    }

    /// Marks a fetch as running until the guard drops.
    pub(crate) fn fetching(self: &Arc<Self>, service_id: &str) -> FetchGuard {
        let mut f = self.fetches.lock().unwrap_or_else(|p| p.into_inner());
        let tracked = f.len() < MAX_FETCHES && !f.contains_key(service_id);
        if tracked {
            f.insert(service_id.to_string(), SystemTime::now());
        }
        FetchGuard {
            web: self.clone(),
            id: tracked.then(|| service_id.to_string()),
        }
    }
}

/// Forgets a fetch's progress when the fetch ends (or its request is dropped).
pub(crate) struct FetchGuard {
    web: Arc<WebState>,
    id: Option<String>,
}

impl Drop for FetchGuard {
    fn drop(&mut self) {
        if let Some(id) = &self.id {
            self.web
                .fetches
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(id);
        }
    }
}

/// The node's own routes of the web view; they sit behind the API's token check (which
/// takes the session cookie too). The page and its assets are `cpns_web::assets::routes`.
pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/web/link", post(link))
        .route("/web/events", get(events))
        .route("/v1/content/progress/{id}", get(progress))
}

async fn link(State(s): State<ApiState>) -> ApiResult<WebLink> {
    let token = s.web.sessions.issue_link();
    Ok(Json(WebLink {
        url: format!("http://127.0.0.1:{}/web/login?token={token}", s.web.port),
        expires_in_secs: cpns_web::LINK_TTL.as_secs(),
    }))
}

async fn progress(State(s): State<ApiState>, Path(id): Path<String>) -> Json<ContentProgress> {
    let started = s
        .web
        .fetches
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(&id)
        .copied();
    // The content is written straight into downloads/<id> (created anew when the stream
    // opens), so its size is how far the fetch got; a file older than the fetch is the last
    // fetch's.
    let bytes = match started.filter(|_| plain_file_name(&id)) {
        Some(t) => std::fs::metadata(s.web.downloads.join(&id))
            .ok()
            .filter(|m| m.modified().is_ok_and(|m| m >= t))
            .map_or(0, |m| m.len()),
        None => 0,
    };
    Json(ContentProgress {
        service_id: id,
        active: started.is_some(),
        bytes,
    })
}

/// Whether the delivery stores `id`'s content under the id itself (generated `svc-…` ids and
/// any id of letters, digits, `-_.` not starting with a dot); other ids get no progress.
fn plain_file_name(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

/// One SSE event of the page.
fn event(e: &PnEvent) -> Event {
    let name = match e {
        PnEvent::Status(_) => "status",
        PnEvent::Capabilities(_) => "capabilities",
        PnEvent::Notification(_) => "notification",
    };
    Event::default()
        .event(name)
        .json_data(e)
        .unwrap_or_else(|_| Event::default().event(name))
}

/// `GET /web/events`: the node's status (members, their status, gateway, epoch) and its
/// capabilities at once, then again at every PN change (`Handle::pn_changes`) and every
/// status notification (`Handle::watch_notifications`), which is sent too; it ends when the
/// node shuts down. Cancel-safe: the stream holds only receivers; a slow page skips to the
/// newest state.
async fn events(State(s): State<ApiState>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let changes = s.handle.pn_changes();
    let notes = s.handle.watch_notifications();
    let stream = futures::stream::unfold(
        (s, changes, notes, true, VecDeque::<PnEvent>::new()),
        |(s, mut changes, mut notes, first, mut queue)| async move {
            loop {
                if let Some(e) = queue.pop_front() {
                    return Some((Ok(event(&e)), (s, changes, notes, false, queue)));
                }
                let mut note = None;
                if !first {
                    tokio::select! {
                        biased;
                        () = s.web.cancel.cancelled() => return None,
                        r = changes.changed() => { if r.is_err() { return None; } }
                        n = notes.recv() => match n {
                            Ok(n) => note = Some(PnEvent::Notification(n.into_api())),
                            Err(RecvError::Lagged(_)) => {}
                            Err(RecvError::Closed) => return None,
                        },
                    }
                }
                changes.borrow_and_update();
                if let Ok(st) = s.handle.status().await {
                    queue.push_back(PnEvent::Status(Box::new(st)));
                }
                queue.push_back(PnEvent::Capabilities(Box::new(
                    s.handle.capabilities().into_api(),
                )));
                queue.extend(note);
            }
        },
    );
    Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}
