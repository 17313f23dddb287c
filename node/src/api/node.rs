//! Endpoints about the node itself: status, peers, ping, trace, credential renewal.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_api::{
    CapabilitiesPatch, CapabilitiesView, CredentialView, PeerBody, PeerView, PingView, StatusView,
    TraceEvent, TraceQuery,
};

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;
use crate::views::{IntoApi, capabilities_patch};

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

async fn renew_credential(State(s): State<ApiState>) -> ApiResult<CredentialView> {
    Ok(Json(s.handle.renew_credential().await?))
}

async fn status(State(s): State<ApiState>) -> ApiResult<StatusView> {
    Ok(Json(s.handle.status().await?))
}

async fn peers(State(s): State<ApiState>) -> ApiResult<Vec<PeerView>> {
    Ok(Json(s.handle.peers().await?))
}

async fn ping(State(s): State<ApiState>, Body(body): Body<PeerBody>) -> ApiResult<PingView> {
    let peer = body
        .peer
        .parse()
        .map_err(|e| ApiError::from(OpError::BadRequest(format!("bad peer id: {e}"))))?;
    Ok(Json(s.handle.ping(peer).await?))
}

/// The trace of one flow (or all), as the daemon records it.
pub(super) fn trace_events(s: &ApiState, flow: Option<&str>) -> Vec<crate::trace::TraceEvent> {
    let mut events = s.handle.trace();
    if let Some(flow) = flow {
        events.retain(|e| e.flow == flow);
    }
    events
}

async fn trace(
    State(s): State<ApiState>,
    Query(q): Query<TraceQuery>,
) -> ApiResult<Vec<TraceEvent>> {
    Ok(Json(trace_events(&s, q.flow.as_deref()).into_api()))
}

async fn trace_mermaid(State(s): State<ApiState>, Query(q): Query<TraceQuery>) -> String {
    let events = trace_events(&s, q.flow.as_deref());
    crate::trace::mermaid(&events, &s.handle.trace_labels())
}

async fn capabilities(State(s): State<ApiState>) -> ApiResult<CapabilitiesView> {
    Ok(Json(s.handle.capabilities().into_api()))
}

async fn set_capabilities(
    State(s): State<ApiState>,
    Body(patch): Body<CapabilitiesPatch>,
) -> ApiResult<CapabilitiesView> {
    Ok(Json(
        s.handle
            .set_capabilities(capabilities_patch(patch))
            .await?
            .into_api(),
    ))
}
