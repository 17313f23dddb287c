//! One-time links and the session cookies they become.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::{error_response, same_origin_or_safe};

/// How long a one-time link can be opened after it was made.
pub const LINK_TTL: Duration = Duration::from_secs(120);
/// How long a session cookie stays valid (the daemon forgets all of them when it stops).
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// Links not yet opened, at most: the oldest goes first.
pub const MAX_LINKS: usize = 32;
/// Live sessions, at most: the oldest goes first.
pub const MAX_SESSIONS: usize = 32;

/// The links and sessions of one daemon's page. In memory only: a restart logs every browser
/// out, as a restart also changes the API's bearer token.
#[derive(Debug)]
pub struct Sessions {
    cookie: String,
    links: Mutex<HashMap<String, Instant>>,
    sessions: Mutex<HashMap<String, Instant>>,
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// Drops expired entries, then the oldest until there is room for one more.
fn make_room(map: &mut HashMap<String, Instant>, ttl: Duration, max: usize) {
    map.retain(|_, made| made.elapsed() < ttl);
    while map.len() >= max {
        let Some(oldest) = map.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone()) else {
            break;
        };
        map.remove(&oldest);
    }
}

impl Sessions {
    /// Sessions of a daemon `kind` (`node`, `auth`) listening on `port`. Cookies of 127.0.0.1
    /// are shared by every port, so the cookie's name carries both.
    pub fn new(kind: &str, port: u16) -> Self {
        Self {
            cookie: format!("cpns_{kind}_{port}"),
            links: Mutex::new(HashMap::new()),
            sessions: Mutex::new(HashMap::new()),
        }
    }

    /// The cookie's name.
    pub fn cookie_name(&self) -> &str {
        &self.cookie
    }

    /// A fresh one-time token for `/web/login?token=…`, valid for [`LINK_TTL`].
    pub fn issue_link(&self) -> String {
        let token = random_token();
        let mut links = self.links.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut links, LINK_TTL, MAX_LINKS);
        links.insert(token.clone(), Instant::now());
        token
    }

    /// Exchanges a link's token (once) for a new session; returns the session id.
    pub fn redeem(&self, token: &str) -> Option<String> {
        let made = self
            .links
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(token)?;
        if made.elapsed() >= LINK_TTL {
            return None;
        }
        let id = random_token();
        let mut sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        make_room(&mut sessions, SESSION_TTL, MAX_SESSIONS);
        sessions.insert(id.clone(), Instant::now());
        Some(id)
    }

    /// Whether the request carries a live session cookie of this daemon.
    pub fn has_session(&self, headers: &HeaderMap) -> bool {
        let sessions = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .filter(|(name, _)| *name == self.cookie)
            .any(|(_, id)| {
                sessions
                    .get(id)
                    .is_some_and(|made| made.elapsed() < SESSION_TTL)
            })
    }

    /// Whether a request may act on the strength of its cookie: a live session and, for a
    /// request that changes something, the page's own origin.
    pub fn authorised(&self, method: &Method, headers: &HeaderMap) -> bool {
        self.has_session(headers) && same_origin_or_safe(method, headers)
    }

    /// The `Set-Cookie` value for a session.
    fn set_cookie(&self, id: &str) -> String {
        format!(
            "{}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
            self.cookie,
            SESSION_TTL.as_secs()
        )
    }
}

/// `GET /web/login?token=…`.
#[derive(serde::Deserialize)]
pub(crate) struct LoginQuery {
    token: Option<String>,
}

/// Exchanges the one-time token for the cookie and sends the browser on to the page.
pub(crate) async fn login(
    State(s): State<std::sync::Arc<Sessions>>,
    Query(q): Query<LoginQuery>,
) -> Response {
    let Some(id) = q.token.as_deref().and_then(|t| s.redeem(t)) else {
        return error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "this link was already used or has expired: ask for a new one (`cpns web`)",
        );
    };
    let mut resp = (StatusCode::SEE_OTHER, [(header::LOCATION, "/web/")]).into_response();
    if let Ok(v) = HeaderValue::from_str(&s.set_cookie(&id)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    for (k, v) in crate::page_headers() {
        resp.headers_mut().insert(k, v);
    }
    resp
}

/// Middleware: the page's routes need a live session cookie.
pub(crate) async fn require_session(
    State(s): State<std::sync::Arc<Sessions>>,
    req: Request,
    next: Next,
) -> Response {
    if s.authorised(req.method(), req.headers()) {
        next.run(req).await
    } else {
        error_response(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "open the page through a one-time link (`cpns web`)",
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn cookie(s: &Sessions, id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_str(&format!("other=1; {}={id}", s.cookie_name())).unwrap(),
        );
        h
    }

    #[test]
    fn a_link_works_once() {
        let s = Sessions::new("node", 1);
        let t = s.issue_link();
        let id = s.redeem(&t).unwrap();
        assert!(s.redeem(&t).is_none(), "a second use is refused");
        assert!(s.has_session(&cookie(&s, &id)));
        assert!(!s.has_session(&cookie(&s, "forged")));
        assert!(!s.has_session(&HeaderMap::new()));
        let other = Sessions::new("node", 2);
        assert!(
            !other.has_session(&cookie(&other, &id)),
            "another port's session"
        );
    }

    #[test]
    fn links_and_sessions_are_bounded() {
        let s = Sessions::new("auth", 1);
        let first = s.issue_link();
        for _ in 0..MAX_LINKS {
            s.issue_link();
        }
        assert!(s.redeem(&first).is_none(), "the oldest link was dropped");
        assert!(s.links.lock().unwrap().len() <= MAX_LINKS);
        let ids: Vec<String> = (0..MAX_SESSIONS + 3)
            .map(|_| s.redeem(&s.issue_link()).unwrap())
            .collect();
        assert!(s.sessions.lock().unwrap().len() <= MAX_SESSIONS);
        assert!(!s.has_session(&cookie(&s, &ids[0])));
        assert!(s.has_session(&cookie(&s, ids.last().unwrap())));
    }
}
