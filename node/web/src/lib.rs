//! # cpns-web: what the daemons serve on their loopback HTTP port besides JSON
//!
//! The pages for their owner's browser (below), and `/metrics` in the format the scraper
//! asks for ([`metrics`]).
//!
//! `cpns-node` shows its PN and `cpns-auth` its operator's view on the same loopback port as
//! their JSON API. Everything a page needs is embedded in the binary ([`assets`]): no CDN, no
//! request leaves the machine. The JavaScript dependency (Mermaid, for sequence diagrams and
//! the topology) comes from the npm registry and is committed under `node/web/assets/vendor/`
//! (`npm ci && npm run build` in `node/web/` refreshes it), so `cargo build` needs no npm.
//!
//! Access works as in Jupyter:
//! 1. A client that holds the API's bearer token (read from the data dir) asks for a one-time
//!    link ([`Sessions::issue_link`]): `http://127.0.0.1:PORT/web/login?token=…`.
//! 2. The browser opens it once, within [`LINK_TTL`]; the token is exchanged for an HttpOnly,
//!    `SameSite=Strict` session cookie and the browser is sent on to `/web/`, so the token
//!    leaves the address bar.
//! 3. Every other request of the page carries the cookie ([`Sessions::authorised`]); without it
//!    the daemon answers 401.
//!
//! Guards on every request of the port ([`loopback_only`]): the `Host` header must name the
//! loopback address (a DNS-rebinding page's `Host` is its own domain), no CORS header is ever
//! sent, and a request that changes something on the strength of the cookie must come from
//! the page's own origin (`Origin` equal to `http://HOST`), which stops other local pages
//! (another port of 127.0.0.1 is the same site, so `SameSite` alone would not).

pub mod assets;
pub mod metrics;
mod sessions;

pub use assets::Page;
pub use sessions::{LINK_TTL, MAX_LINKS, MAX_SESSIONS, SESSION_TTL, Sessions};

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Whether a `Host` header names this machine's loopback address: `127.0.0.1`, `[::1]` or
/// `localhost`, with or without a port.
pub fn is_loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((name, port)) if port.is_empty() || port.starts_with(':') => name,
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            Some(_) => return false,
            None => host,
        }
    };
    name == "127.0.0.1" || name == "::1" || name.eq_ignore_ascii_case("localhost")
}

/// A JSON error in the API's shape (`{"error":{"code","message"}}`); `message` is escaped.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let mut escaped = String::with_capacity(message.len());
    for c in message.chars() {
        match c {
            '"' => escaped.push_str("\\\""),
            '\\' => escaped.push_str("\\\\"),
            c if (c as u32) < 0x20 => escaped.push_str(&format!("\\u{:04x}", c as u32)),
            c => escaped.push(c),
        }
    }
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!(r#"{{"error":{{"code":"{code}","message":"{escaped}"}}}}"#),
    )
        .into_response()
}

/// Middleware for every route of a daemon's loopback port: refuses a request whose `Host` is
/// not the loopback address (DNS rebinding) and answers CORS preflights with 403 and no
/// `Access-Control-*` header.
pub async fn loopback_only(req: Request, next: Next) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("");
    if !is_loopback_host(host) {
        return error_response(
            StatusCode::FORBIDDEN,
            "refused",
            "this port answers only requests addressed to 127.0.0.1 (Host header)",
        );
    }
    if req.method() == Method::OPTIONS {
        return error_response(
            StatusCode::FORBIDDEN,
            "refused",
            "no cross-origin requests (CORS is not offered)",
        );
    }
    next.run(req).await
}

/// Whether a request authenticated by its session cookie may do what it asks: reads (`GET`,
/// `HEAD`) always (no CORS header lets another origin read the answer); anything else only
/// with an `Origin` header equal to `http://HOST` of this request.
pub fn same_origin_or_safe(method: &Method, headers: &HeaderMap) -> bool {
    if method == Method::GET || method == Method::HEAD {
        return true;
    }
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok());
    let origin = headers.get(header::ORIGIN).and_then(|h| h.to_str().ok());
    match (host, origin) {
        (Some(host), Some(origin)) => origin == format!("http://{host}"),
        _ => false,
    }
}

/// Headers for every page and asset: a strict CSP (scripts and connections only from this
/// origin; Mermaid needs inline styles in its SVG), no framing, no referrer (the login URL
/// holds a token), no caching.
pub fn page_headers() -> [(header::HeaderName, HeaderValue); 5] {
    [
        (
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(
                "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
                 img-src 'self' data:; font-src 'self' data:; connect-src 'self'; \
                 frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
            ),
        ),
        (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
        (
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8080",
            "localhost:1",
            "LOCALHOST",
            "[::1]:99",
            "[::1]",
        ] {
            assert!(is_loopback_host(ok), "{ok}");
        }
        for bad in [
            "",
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "127.0.0.2:80",
            "localhost.evil:80",
            "[::1]x",
            "127.0.0.1:80x",
            "0.0.0.0:80",
        ] {
            assert!(!is_loopback_host(bad), "{bad}");
        }
    }

    #[test]
    fn unsafe_methods_need_the_own_origin() {
        let mut h = HeaderMap::new();
        h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:9"));
        assert!(same_origin_or_safe(&Method::GET, &h));
        assert!(!same_origin_or_safe(&Method::POST, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:10"),
        );
        assert!(!same_origin_or_safe(&Method::POST, &h));
        h.insert(
            header::ORIGIN,
            HeaderValue::from_static("http://127.0.0.1:9"),
        );
        assert!(same_origin_or_safe(&Method::POST, &h));
        assert!(same_origin_or_safe(&Method::DELETE, &h));
    }

    #[test]
    fn error_bodies_escape() {
        let r = error_response(StatusCode::FORBIDDEN, "refused", "a \"b\"\n");
        assert_eq!(r.status(), StatusCode::FORBIDDEN);
    }
}
