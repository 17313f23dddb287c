//! The admin endpoint: the [`Admin`] API as JSON on 127.0.0.1, for the CLI while the server
//! runs (sled's lock keeps the CLI from opening the database itself).
//!
//! Every `/v1/…` request needs `Authorization: Bearer TOKEN` with the token from `admin.json`,
//! which only the data dir's owner can read. `/metrics` (Prometheus text) needs no token: it
//! reveals counts, not secrets, and the endpoint only listens on loopback.
//!
//! | method | path | body / query | answer |
//! | --- | --- | --- | --- |
//! | GET | /v1/status | | [`crate::ServerInfo`] |
//! | GET, POST | /v1/users | POST `{"name"}` | [`crate::UserView`] list / one |
//! | DELETE | /v1/users/{name} | | [`crate::DeletedUser`] |
//! | GET, POST | /v1/codes | POST `CodeRequest` | [`crate::CodeView`] list / [`crate::CreatedCode`] |
//! | GET | /v1/entities, /v1/entities/{id} | | [`crate::EntityView`] |
//! | POST | /v1/entities/{id}/revoke | | [`crate::RevokeOutcome`] |
//! | GET | /v1/pns, /v1/pns/{id} | | [`crate::PnView`] |
//! | GET | /v1/groups, /v1/groups/{id} | | [`crate::GroupView`] |
//! | GET | /v1/usage | `?format=csv\|json` | CSV text or JSON |
//! | POST | /v1/web/link | | a one-time URL of the operator's page (`cpns-auth web`) |
//! | POST | /v1/codes/qr | `{"code"}` | the enrolment code as a QR code (SVG) |
//! | GET | /web/login, /web/, /web/assets/… | | the page (`cpns_web`), behind its cookie |
//!
//! Errors are `{ "error": { "code": "not_found", "message": "…" } }` with a matching status.

use axum::extract::{Path, Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use super::{Admin, CodeOptions};
use crate::error::AdminError;
use crate::usage::UsageFormat;

/// The body of `POST /v1/codes`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct CodeRequest {
    /// The user.
    pub(crate) user: String,
    /// Modes, `pne,gateway` style; default both.
    #[serde(default)]
    pub(crate) modes: Option<String>,
    /// Lifetime, humantime style (`1h`); default the configured `code_ttl`.
    #[serde(default)]
    pub(crate) ttl: Option<String>,
    /// Reusable until it expires.
    #[serde(default)]
    pub(crate) reusable: bool,
    /// Addresses to put in the code instead of the server's.
    #[serde(default)]
    pub(crate) addrs: Vec<String>,
}

/// The body of `POST /v1/users`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct UserRequest {
    /// The new user's name.
    pub(crate) name: String,
}

/// A JSON error body.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ErrorBody {
    /// The error.
    pub(crate) error: ErrorDetail,
}

/// The error inside [`ErrorBody`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ErrorDetail {
    /// Stable code: `not_found`, `conflict`, `bad_request`, `unauthorized`, `internal`
    /// (those of the node's API).
    pub(crate) code: String,
    /// For people.
    pub(crate) message: String,
}

struct ApiError(StatusCode, String, String);

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        let status = match &e {
            AdminError::NotFound(_) => StatusCode::NOT_FOUND,
            AdminError::Conflict(_) => StatusCode::CONFLICT,
            AdminError::Invalid(_) => StatusCode::BAD_REQUEST,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.code().to_owned(), e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.0,
            Json(ErrorBody {
                error: ErrorDetail {
                    code: self.1,
                    message: self.2,
                },
            }),
        )
            .into_response()
    }
}

fn invalid(msg: impl Into<String>) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, "bad_request".into(), msg.into())
}

type ApiResult<T> = Result<Json<T>, ApiError>;

#[derive(Clone)]
struct AppState {
    admin: Admin,
    token: String,
    /// The operator's web page: one-time links and the session cookies they become.
    web: Arc<cpns_web::Sessions>,
    /// This endpoint's port, for the links.
    port: u16,
}

/// Compares the bearer token in constant time.
fn token_ok(headers: &HeaderMap, token: &str) -> bool {
    let Some(given) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
    else {
        return false;
    };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// The bearer token from `admin.json`, or the web page's session cookie (obtained through a
/// one-time link that only the token's holder can make).
async fn require_token(State(st): State<AppState>, req: Request, next: Next) -> Response {
    if token_ok(req.headers(), &st.token) || st.web.authorised(req.method(), req.headers()) {
        next.run(req).await
    } else {
        ApiError(
            StatusCode::UNAUTHORIZED,
            "unauthorized".into(),
            "missing or wrong bearer token (see admin.json in the data dir)".into(),
        )
        .into_response()
    }
}

/// The router: `/v1/…` behind the token (or the web page's cookie), the web page
/// (`/web/…`, `cpns-auth web`), `/metrics` open; every request must name 127.0.0.1 in `Host`.
pub(crate) fn router(admin: Admin, token: String, port: u16) -> Router {
    let web = Arc::new(cpns_web::Sessions::new("auth", port));
    let st = AppState {
        admin,
        token,
        web: web.clone(),
        port,
    };
    let v1 = Router::new()
        .route("/v1/status", get(status))
        .route("/v1/users", get(list_users).post(create_user))
        .route("/v1/users/{name}", axum::routing::delete(delete_user))
        .route("/v1/codes", get(list_codes).post(create_code))
        .route("/v1/entities", get(list_entities))
        .route("/v1/entities/{id}", get(show_entity))
        .route("/v1/entities/{id}/revoke", post(revoke))
        .route("/v1/pns", get(list_pns))
        .route("/v1/pns/{id}", get(show_pn))
        .route("/v1/groups", get(list_groups))
        .route("/v1/groups/{id}", get(show_group))
        .route("/v1/usage", get(usage))
        .route("/v1/web/link", post(web_link))
        .route("/v1/codes/qr", post(code_qr))
        .route_layer(middleware::from_fn_with_state(st.clone(), require_token));
    Router::new()
        .merge(v1)
        .merge(cpns_web::assets::routes(web, cpns_web::Page::Auth))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn(cpns_web::loopback_only))
        .with_state(st)
}

/// `POST /v1/web/link`: a one-time URL for the operator's page (`cpns-auth web`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct WebLink {
    /// `http://127.0.0.1:PORT/web/login?token=…`, valid once.
    pub(crate) url: String,
    /// How long the link stays valid.
    pub(crate) expires_in_secs: u64,
}

async fn web_link(State(st): State<AppState>) -> ApiResult<WebLink> {
    let token = st.web.issue_link();
    Ok(Json(WebLink {
        url: format!("http://127.0.0.1:{}/web/login?token={token}", st.port),
        expires_in_secs: cpns_web::LINK_TTL.as_secs(),
    }))
}

/// The body of `POST /v1/codes/qr`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct QrRequest {
    /// An enrolment code (`cpns1-…`).
    pub(crate) code: String,
}

/// `POST /v1/codes/qr`: an enrolment code as a QR code (SVG), for the page to show to a
/// device's camera. Upper case puts the code in QR's alphanumeric mode; nodes ignore case.
async fn code_qr(Json(req): Json<QrRequest>) -> Result<Response, ApiError> {
    if !req.code.starts_with("cpns1-") || req.code.len() > 2048 {
        return Err(invalid("not an enrolment code"));
    }
    let symbol = qrcode::QrCode::new(req.code.to_ascii_uppercase().as_bytes())
        .map_err(|e| invalid(format!("cannot make a QR code: {e}")))?;
    let svg = symbol
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .quiet_zone(true)
        .build();
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn status(State(st): State<AppState>) -> ApiResult<crate::ServerInfo> {
    Ok(Json(st.admin.server_info().await?))
}

async fn list_users(State(st): State<AppState>) -> ApiResult<Vec<crate::UserView>> {
    Ok(Json(st.admin.list_users().await?))
}

async fn create_user(
    State(st): State<AppState>,
    Json(req): Json<UserRequest>,
) -> ApiResult<crate::UserView> {
    Ok(Json(st.admin.create_user(&req.name).await?))
}

async fn delete_user(
    State(st): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<crate::DeletedUser> {
    Ok(Json(st.admin.delete_user(&name).await?))
}

async fn list_codes(State(st): State<AppState>) -> ApiResult<Vec<crate::CodeView>> {
    Ok(Json(st.admin.list_codes().await?))
}

async fn create_code(
    State(st): State<AppState>,
    Json(req): Json<CodeRequest>,
) -> ApiResult<crate::CreatedCode> {
    let mut opts = CodeOptions::new(req.user);
    if let Some(m) = req.modes {
        opts.modes = m.parse().map_err(|e| invalid(format!("modes: {e}")))?;
    }
    if let Some(t) = req.ttl {
        opts.ttl =
            Some(humantime::parse_duration(&t).map_err(|e| invalid(format!("ttl {t:?}: {e}")))?);
    }
    opts.reusable = req.reusable;
    for a in req.addrs {
        opts.addrs.push(
            a.parse::<Multiaddr>()
                .map_err(|e| invalid(format!("address {a:?}: {e}")))?,
        );
    }
    Ok(Json(st.admin.create_code_with(&opts).await?))
}

async fn list_entities(State(st): State<AppState>) -> ApiResult<Vec<crate::EntityView>> {
    Ok(Json(st.admin.list_entities().await?))
}

async fn show_entity(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<crate::EntityView> {
    Ok(Json(st.admin.show_entity(&id).await?))
}

async fn revoke(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<crate::RevokeOutcome> {
    Ok(Json(st.admin.revoke(&id).await?))
}

async fn list_pns(State(st): State<AppState>) -> ApiResult<Vec<crate::PnView>> {
    Ok(Json(st.admin.list_pns().await?))
}

async fn show_pn(State(st): State<AppState>, Path(id): Path<String>) -> ApiResult<crate::PnView> {
    Ok(Json(st.admin.show_pn(&id).await?))
}

async fn list_groups(State(st): State<AppState>) -> ApiResult<Vec<crate::GroupView>> {
    Ok(Json(st.admin.list_groups().await?))
}

async fn show_group(
    State(st): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<crate::GroupView> {
    Ok(Json(st.admin.show_group(&id).await?))
}

#[derive(Deserialize)]
struct UsageQuery {
    #[serde(default)]
    format: Option<String>,
}

async fn usage(
    State(st): State<AppState>,
    Query(q): Query<UsageQuery>,
) -> Result<Response, ApiError> {
    let format: UsageFormat = q
        .format
        .as_deref()
        .unwrap_or("csv")
        .parse()
        .map_err(invalid)?;
    let text = st.admin.export_usage(format).await?;
    let ctype = match format {
        UsageFormat::Csv => "text/csv; charset=utf-8",
        UsageFormat::Json => "application/json",
    };
    Ok(([(header::CONTENT_TYPE, ctype)], text).into_response())
}

/// OpenMetrics for a scraper that asks for it, else Prometheus text 0.0.4 (`cpns_web::metrics`).
async fn metrics(State(st): State<AppState>, headers: HeaderMap) -> Response {
    cpns_web::metrics::response(st.admin.metrics_text(), &headers)
}
