//! The pages' files, embedded in the binary at build time, and the routes that serve them:
//! `/web/login` (the one-time link), `/web/` (the page) and `/web/assets/NAME`.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Request};
use axum::http::{StatusCode, header};
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::{Sessions, error_response, page_headers};

/// Which daemon's page.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Page {
    /// `cpns-node`: the PN seen from this device.
    Node,
    /// `cpns-auth`: the operator's view.
    Auth,
}

/// One embedded file.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
    /// Stored gzip-compressed (the Mermaid bundle: 5.5 MB, 1.6 MB compressed); served with
    /// `Content-Encoding: gzip`, which every browser accepts.
    gzip: bool,
}

const JS: &str = "text/javascript; charset=utf-8";

static ASSETS: &[Asset] = &[
    Asset {
        name: "common.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../assets/common.css"),
        gzip: false,
    },
    Asset {
        name: "common.js",
        content_type: JS,
        body: include_bytes!("../assets/common.js"),
        gzip: false,
    },
    Asset {
        name: "node.js",
        content_type: JS,
        body: include_bytes!("../assets/node.js"),
        gzip: false,
    },
    Asset {
        name: "auth.js",
        content_type: JS,
        body: include_bytes!("../assets/auth.js"),
        gzip: false,
    },
    Asset {
        name: "mermaid.min.js",
        content_type: JS,
        body: include_bytes!("../assets/vendor/mermaid.min.js.gz"),
        gzip: true,
    },
];

const NODE_HTML: &[u8] = include_bytes!("../assets/node.html");
const AUTH_HTML: &[u8] = include_bytes!("../assets/auth.html");

/// The page's routes: `/web/login` open (it checks its token), the rest behind the session
/// cookie. Merge them into the daemon's router, inside [`crate::loopback_only`].
pub fn routes<S: Clone + Send + Sync + 'static>(sessions: Arc<Sessions>, page: Page) -> Router<S> {
    let guarded = Router::new()
        .route("/web", get(move || async move { html(page) }))
        .route("/web/", get(move || async move { html(page) }))
        .route("/web/assets/{name}", get(asset))
        .route_layer(middleware::from_fn_with_state(
            sessions.clone(),
            crate::sessions::require_session,
        ));
    Router::new()
        .merge(guarded)
        .route("/web/login", get(crate::sessions::login))
        .with_state(sessions)
}

fn html(page: Page) -> Response {
    let body = match page {
        Page::Node => NODE_HTML,
        Page::Auth => AUTH_HTML,
    };
    let mut resp = ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], body).into_response();
    resp.headers_mut().extend(page_headers());
    resp
}

async fn asset(Path(name): Path<String>, req: Request) -> Response {
    let Some(a) = ASSETS.iter().find(|a| a.name == name) else {
        return error_response(StatusCode::NOT_FOUND, "not_found", "no such asset");
    };
    let mut resp = ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response();
    if a.gzip {
        let accepts = req
            .headers()
            .get_all(header::ACCEPT_ENCODING)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.contains("gzip"));
        if !accepts {
            return error_response(
                StatusCode::NOT_ACCEPTABLE,
                "bad_request",
                "this asset is served gzip-compressed only",
            );
        }
        resp.headers_mut().insert(
            header::CONTENT_ENCODING,
            header::HeaderValue::from_static("gzip"),
        );
    }
    resp.headers_mut().extend(page_headers());
    resp
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_mermaid_bundle_is_gzip() {
        let m = ASSETS.iter().find(|a| a.name == "mermaid.min.js").unwrap();
        assert_eq!(&m.body[..2], &[0x1f, 0x8b]);
        assert!(m.body.len() > 100_000);
    }

    #[test]
    fn pages_load_only_local_scripts() {
        for page in [NODE_HTML, AUTH_HTML] {
            let text = std::str::from_utf8(page).unwrap();
            assert!(!text.contains("http://") && !text.contains("https://"));
            for src in text.split("src=\"").skip(1) {
                assert!(src.starts_with("/web/assets/"), "{src}");
            }
        }
    }
}
