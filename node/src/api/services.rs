//! Service Publication & Discovery (5.6.4), Service/Content Delivery (5.6.7) and usage
//! reporting (5.6.3) endpoints: the typical flow of Appendix G.1 from an application's side.

use crate::delivery::{ContentSource, Needs, Origin, Variant};
use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cpns_api::{
    DiscoveryView, FetchBody, FetchOutcome, FindEvent, FoundView, InboxEntry, PublishBody,
    QueuedReport, SendBody, Sent, ServiceView, Unpublished, UsagePrefs, WatchBody, Watching,
};
use cpns_directory::{Endpoint, Scope, ServiceDraft, Source, Visibility};

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;
use crate::views::{IntoApi, requirements};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/services", get(list).post(publish))
        .route("/v1/services/find", get(find))
        .route("/v1/services/watch", post(watch))
        .route("/v1/services/advertisements", get(advertisements))
        .route("/v1/services/{id}", get(show))
        .route("/v1/services/{id}", delete(unpublish))
        .route("/v1/content/fetch", post(fetch))
        .route("/v1/content/send", post(send))
        .route("/v1/content/inbox", get(inbox))
        .route("/v1/usage/prefs", get(prefs_get).post(prefs_set))
        .route("/v1/usage/queued", get(queued))
}

/// The metadata key under which a service that serves a file states its size in bytes.
pub(crate) const CONTENT_SIZE_KEY: &str = "size";

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(OpError::BadRequest(e.to_string()))
}

async fn publish(State(s): State<ApiState>, Body(b): Body<PublishBody>) -> ApiResult<ServiceView> {
    let visibility = match b.visibility.as_deref() {
        None | Some("pn") => s.handle.default_visibility(),
        Some(v) => v.parse().map_err(bad)?,
    };
    if b.name.trim().is_empty() {
        return Err(bad("a service needs a name"));
    }
    let source = b.external.map(|name| Source::External {
        name,
        url: b.external_url.clone().or_else(|| b.source_url.clone()),
    });
    let mut metadata = b.metadata;
    if let Some(file) = &b.file {
        // `size`: what a consumer's progress bar counts up to (docs/API.md).
        let len = tokio::fs::metadata(file)
            .await
            .map_err(|e| bad(format!("{}: {e}", file.display())))?
            .len();
        metadata.insert(CONTENT_SIZE_KEY.into(), len.to_string());
    }
    let origin = match (&b.file, &b.source_url) {
        (Some(_), Some(_)) => return Err(bad("give a file or a source URL, not both")),
        (Some(f), None) => Some(Origin::File(f.clone())),
        (None, Some(u)) => Some(Origin::Http(u.clone())),
        (None, None) if !b.variants.is_empty() => {
            return Err(bad("variants need the service's file or source URL"));
        }
        (None, None) => None,
    };
    let content = origin.map(|origin| ContentSource {
        origin,
        variants: b.variants.into_iter().map(variant).collect(),
    });
    let draft = ServiceDraft {
        id: b.id,
        name: b.name,
        keywords: b.keywords,
        offers: b.offers,
        source,
        requirements: requirements(b.requirements),
        endpoint: Endpoint {
            protocol: b.protocol.unwrap_or_default(),
            addresses: b.addresses,
        },
        metadata,
        ttl: b.ttl_secs.map(std::time::Duration::from_secs),
        visibility,
    };
    Ok(Json(
        s.handle.content().publish(draft, content).await?.into_api(),
    ))
}

fn variant(v: cpns_api::VariantBody) -> Variant {
    let cpns_api::VariantBody {
        name,
        file,
        chunk_kib,
        needs,
    } = v;
    let cpns_api::VariantNeeds {
        min_battery_percent,
        mains_power,
        needs_screen,
        min_screen_width,
        min_free_memory_bytes,
        wan,
    } = needs;
    Variant {
        name,
        file,
        chunk_kib,
        needs: Needs {
            min_battery_percent,
            mains_power,
            needs_screen,
            min_screen_width,
            min_free_memory_bytes,
            wan,
        },
    }
}

async fn list(State(s): State<ApiState>) -> ApiResult<Vec<ServiceView>> {
    Ok(Json(s.handle.services()?.into_api()))
}

async fn unpublish(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Unpublished> {
    s.handle.unpublish(&id).await?;
    Ok(Json(Unpublished { ok: true, id }))
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<FoundView> {
    Ok(Json(s.handle.service(&id).await?.into_api()))
}

async fn find(
    State(s): State<ApiState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> Result<Response, ApiError> {
    // `keyword` may repeat: ?keyword=printer&keyword=colour&scope=public&match_capabilities=true
    // (&stream=true: newline-delimited JSON, see `find_stream`)
    let mut query = cpns_directory::Query::default();
    let mut match_caps = false;
    let mut stream = false;
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = url_decode(v);
        match k {
            "keyword" => query.keywords.push(v),
            "scope" => {
                query.scope = match v.as_str() {
                    "all" => Scope::All,
                    "public" => Scope::Public,
                    other => match other.parse::<Visibility>().map_err(bad)? {
                        Visibility::Public => Scope::Public,
                        Visibility::Pn(g) | Visibility::Group(g) => Scope::Group(g),
                    },
                }
            }
            "match_capabilities" => match_caps = v == "true" || v == "1",
            "stream" => stream = v == "true" || v == "1",
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    if query.keywords.is_empty() {
        return Err(bad("give at least one keyword"));
    }
    if match_caps {
        query.capabilities = Some(s.handle.capabilities());
    }
    if stream {
        return Ok(find_stream(s, query));
    }
    let d: DiscoveryView = s.handle.find(&query).await?.into_api();
    Ok(Json(d).into_response())
}

/// The streamed discovery: one [`FindEvent`] per line, each service as soon as it is verified
/// (`Handle::find_each`), then `done` with the whole result, or `error`. The discovery runs in
/// its own task and is dropped as soon as the client goes away.
fn find_stream(s: ApiState, query: cpns_directory::Query) -> Response {
    let (lines, out) = tokio::sync::mpsc::channel::<Vec<u8>>(16);
    tokio::spawn(async move {
        let line = |ev: &FindEvent| {
            let mut b = serde_json::to_vec(ev).unwrap_or_default();
            b.push(b'\n');
            b
        };
        let (each, mut found) = tokio::sync::mpsc::channel::<cpns_directory::Found>(16);
        let forward = async {
            while let Some(f) = found.recv().await {
                let f: FoundView = f.into_api();
                if lines
                    .send(line(&FindEvent::Found(Box::new(f))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        };
        let run = async { tokio::join!(s.handle.find_each(&query, each), forward).0 };
        let last = tokio::select! {
            () = lines.closed() => return,
            r = run => match r {
                Ok(d) => FindEvent::Done(d.into_api()),
                Err(e) => FindEvent::Error(cpns_api::ErrorDetail {
                    code: e.code().into(),
                    message: e.to_string(),
                }),
            },
        };
        let _ = lines.send(line(&last)).await;
    });
    let body = futures::stream::unfold(out, |mut rx| async move {
        rx.recv()
            .await
            .map(|b| (Ok::<_, std::convert::Infallible>(b), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

async fn watch(State(s): State<ApiState>, Body(b): Body<WatchBody>) -> ApiResult<Watching> {
    let subscriptions = s.handle.watch_services(&b.keyword).await?;
    Ok(Json(Watching {
        keyword: b.keyword,
        subscriptions,
    }))
}

async fn advertisements(State(s): State<ApiState>) -> ApiResult<Vec<ServiceView>> {
    Ok(Json(s.handle.advertisements().into_api()))
}

async fn fetch(State(s): State<ApiState>, Body(b): Body<FetchBody>) -> ApiResult<FetchOutcome> {
    let mode = super::content::mode(b.mode.as_deref())?;
    let _progress = s.web.fetching(&b.service_id);
    Ok(Json(s.handle.fetch(&b.service_id, mode).await?.into_api()))
}

async fn send(State(s): State<ApiState>, Body(b): Body<SendBody>) -> ApiResult<Sent> {
    let peer = b.peer.parse().map_err(bad)?;
    let bytes = s.handle.send_file(peer, &b.path).await?;
    Ok(Json(Sent {
        peer: b.peer,
        bytes,
    }))
}

async fn inbox(State(s): State<ApiState>) -> ApiResult<Vec<InboxEntry>> {
    Ok(Json(
        s.handle
            .inbox()
            .await
            .into_iter()
            .map(|(name, bytes)| InboxEntry { name, bytes })
            .collect(),
    ))
}

fn prefs(s: &ApiState) -> UsagePrefs {
    let (never_external, omit_capabilities) = s.handle.content().report_prefs();
    UsagePrefs {
        never_report: s.handle.usage_never_report(),
        never_external,
        omit_capabilities,
    }
}

async fn prefs_get(State(s): State<ApiState>) -> ApiResult<UsagePrefs> {
    Ok(Json(prefs(&s)))
}

async fn prefs_set(State(s): State<ApiState>, Body(p): Body<UsagePrefs>) -> ApiResult<UsagePrefs> {
    s.handle.set_usage_never_report(p.never_report).await?;
    s.handle
        .content()
        .set_report_prefs(p.never_external, p.omit_capabilities)
        .await?;
    Ok(Json(prefs(&s)))
}

async fn queued(State(s): State<ApiState>) -> ApiResult<Vec<QueuedReport>> {
    Ok(Json(s.handle.usage_queued().into_api()))
}
