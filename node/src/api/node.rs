//! Endpoints about the node itself: status, peers, ping, trace, credential renewal.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;
use crate::trace::TraceEvent;
use crate::views::{PeerView, PingView, StatusView};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/status", get(status))
        .route("/v1/peers", get(peers))
        .route("/v1/ping", post(ping))
        .route("/v1/capabilities", get(capabilities).post(set_capabilities))
        .route("/v1/trace", get(trace))
        .route("/v1/trace/mermaid", get(trace_mermaid))
        .route("/v1/credential/renew", post(renew_credential))
}

async fn renew_credential(State(s): State<ApiState>) -> ApiResult<crate::renewal::CredentialView> {
    Ok(Json(s.handle.renew_credential().await?))
}

async fn status(State(s): State<ApiState>) -> ApiResult<StatusView> {
    Ok(Json(s.handle.status().await?))
}

async fn peers(State(s): State<ApiState>) -> ApiResult<Vec<PeerView>> {
    Ok(Json(s.handle.peers().await?))
}

#[derive(Deserialize)]
struct PingBody {
    peer: String,
}

async fn ping(State(s): State<ApiState>, Body(body): Body<PingBody>) -> ApiResult<PingView> {
    let peer = body
        .peer
        .parse()
        .map_err(|e| ApiError::from(OpError::BadRequest(format!("bad peer id: {e}"))))?;
    Ok(Json(s.handle.ping(peer).await?))
}

#[derive(Deserialize)]
struct TraceQuery {
    flow: Option<String>,
}

async fn trace(
    State(s): State<ApiState>,
    Query(q): Query<TraceQuery>,
) -> ApiResult<Vec<TraceEvent>> {
    let mut events = s.handle.trace();
    if let Some(flow) = q.flow {
        events.retain(|e| e.flow == flow);
    }
    Ok(Json(events))
}

async fn trace_mermaid(State(s): State<ApiState>, Query(q): Query<TraceQuery>) -> String {
    let mut events = s.handle.trace();
    if let Some(flow) = q.flow {
        events.retain(|e| e.flow == flow);
    }
    crate::trace::mermaid(&events, &s.handle.trace_labels())
}

async fn capabilities(State(s): State<ApiState>) -> ApiResult<cpns_overlay::Capabilities> {
    Ok(Json(s.handle.capabilities()))
}

async fn set_capabilities(
    State(s): State<ApiState>,
    Body(patch): Body<crate::config::CapabilitiesConfig>,
) -> ApiResult<cpns_overlay::Capabilities> {
    Ok(Json(s.handle.set_capabilities(patch).await?))
}
