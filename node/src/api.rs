//! The local HTTP API: JSON under versioned paths (`/v1/…`), bound to 127.0.0.1 only, every
//! request authenticated with the bearer token the node writes, with the API's address, into
//! `DATA_DIR/api.json` (mode 0600). The `cpns` CLI is a thin client of it. docs/API.md lists
//! every endpoint with an example.

mod content;
mod groups;
mod node;
mod pn;
mod proxy;
mod services;
mod status;
mod web;
mod zone;

use std::future::IntoFuture;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use subtle_eq::constant_time_eq;

use crate::Handle;
use crate::context::Context;
use crate::error::{OpError, StartError};
use crate::views::ErrorBody;

pub use cpns_api::{API_FILE, ApiFile};

#[derive(Clone)]
pub(crate) struct ApiState {
    pub(crate) handle: Handle,
    pub(crate) token: Arc<String>,
    /// The web view: its sessions (a cookie stands for the token), fetches in flight.
    pub(crate) web: Arc<web::WebState>,
}

/// An error answer: status code plus the JSON body.
pub(crate) struct ApiError(pub(crate) StatusCode, pub(crate) String, pub(crate) String);

impl From<OpError> for ApiError {
    fn from(e: OpError) -> Self {
        let status = match e {
            OpError::BadRequest(_) => StatusCode::BAD_REQUEST,
            OpError::NotFound(_) => StatusCode::NOT_FOUND,
            OpError::Conflict(_) => StatusCode::CONFLICT,
            OpError::Refused(_) => StatusCode::FORBIDDEN,
            OpError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            OpError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.code().into(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(ErrorBody::new(self.1, self.2))).into_response()
    }
}

pub(crate) type ApiResult<T> = Result<axum::Json<T>, ApiError>;

/// A JSON request body whose rejection (bad JSON, wrong type, missing field) is an API error
/// in the API's JSON error format, like every other error.
pub(crate) struct Body<T>(pub(crate) T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    T: serde::de::DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Body(v)),
            Err(e) => Err(ApiError(
                StatusCode::BAD_REQUEST,
                "bad_request".into(),
                e.body_text(),
            )),
        }
    }
}

/// Every `/v1/…` request needs the bearer token, or the web view's session cookie (which the
/// token's holder obtained through a one-time link; see `api/web.rs`).
async fn require_token(State(state): State<ApiState>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| constant_time_eq(t.as_bytes(), state.token.as_bytes()))
        || state.web.sessions.authorised(req.method(), req.headers());
    if !ok {
        return ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized".into(),
            format!("missing or wrong bearer token (see {API_FILE} in the node's data dir)"),
        )
        .into_response();
    }
    next.run(req).await
}

/// `/metrics`: OpenMetrics for a scraper that asks for it, else Prometheus text 0.0.4.
async fn metrics(State(state): State<ApiState>, headers: axum::http::HeaderMap) -> Response {
    cpns_web::metrics::response(state.handle.metrics_text().await, &headers)
}

async fn not_found() -> ApiError {
    ApiError(
        StatusCode::NOT_FOUND,
        "not_found".into(),
        "no such endpoint".into(),
    )
}

/// Binds the API on 127.0.0.1, writes the API file, and returns the address and the server
/// task (which stops when the node's token is cancelled).
pub(crate) async fn serve(
    shared: &Context,
    handle: Handle,
) -> Result<
    (
        SocketAddr,
        impl std::future::Future<Output = ()> + Send + 'static,
    ),
    StartError,
> {
    let listener =
        tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, shared.config.api_port))
            .await
            .map_err(|e| {
                StartError::Api(format!("bind 127.0.0.1:{}: {e}", shared.config.api_port))
            })?;
    let addr = listener
        .local_addr()
        .map_err(|e| StartError::Api(e.to_string()))?;
    let token = hex::encode(rand::random::<[u8; 32]>());
    write_api_file(
        &shared.config.data_dir,
        &ApiFile {
            addr,
            token: token.clone(),
            peer_id: shared.peer_id.to_string(),
            pid: std::process::id(),
        },
    )
    .map_err(|e| StartError::Api(format!("writing {API_FILE}: {e}")))?;
    let state = ApiState {
        handle,
        token: Arc::new(token),
        web: Arc::new(web::WebState::new(
            addr.port(),
            &shared.config.data_dir,
            shared.cancel.clone(),
        )),
    };
    let metrics_only = metrics_listener(&shared.config.metrics_listen, state.clone()).await?;
    let app = Router::new()
        .merge(node::routes())
        .merge(pn::routes())
        .merge(status::routes())
        .merge(services::routes())
        .merge(content::routes())
        .merge(groups::routes())
        .merge(proxy::routes())
        .merge(zone::routes())
        .merge(web::routes())
        .route("/metrics", axum::routing::get(metrics))
        .fallback(not_found)
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .merge(cpns_web::assets::routes(
            state.web.sessions.clone(),
            cpns_web::Page::Node,
        ))
        // Every route: Host must be the loopback address (DNS rebinding), no CORS.
        .layer(middleware::from_fn(cpns_web::loopback_only))
        .with_state(state);
    let cancel = shared.cancel.clone();
    let task = async move {
        let api = axum::serve(listener, app)
            .with_graceful_shutdown({
                let cancel = cancel.clone();
                async move { cancel.cancelled().await }
            })
            .into_future();
        match metrics_only {
            Some((listener, router)) => {
                let metrics = axum::serve(listener, router)
                    .with_graceful_shutdown(async move { cancel.cancelled().await })
                    .into_future();
                let _ = tokio::join!(api, metrics);
            }
            None => {
                let _ = api.await;
            }
        }
    };
    Ok((addr, task))
}

/// The opt-in listener of `metrics_listen`: `/metrics` only, no token (for a Prometheus
/// scraper that cannot read the API file, whose token changes at every start).
async fn metrics_listener(
    listen: &str,
    state: ApiState,
) -> Result<Option<(tokio::net::TcpListener, Router)>, StartError> {
    if listen.is_empty() {
        return Ok(None);
    }
    let addr: SocketAddr = listen
        .parse()
        .map_err(|e| StartError::Api(format!("metrics_listen {listen:?}: {e}")))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| StartError::Api(format!("bind metrics_listen {addr}: {e}")))?;
    let router = Router::new()
        .route("/metrics", axum::routing::get(metrics))
        .fallback(not_found)
        .with_state(state);
    Ok(Some((listener, router)))
}

fn write_api_file(dir: &Path, file: &ApiFile) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{API_FILE}.tmp"));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(serde_json::to_string_pretty(file)?.as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, dir.join(API_FILE))
}

/// Removes the API file on shutdown, so that clients say "not running" instead of timing out.
pub(crate) fn remove_api_file(dir: &Path) {
    let _ = std::fs::remove_file(dir.join(API_FILE));
}

/// Constant-time comparison for the token.
mod subtle_eq {
    pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
        if a.len() != b.len() {
            return false;
        }
        a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}
