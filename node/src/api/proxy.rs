//! The Non-CPNS proxy's endpoints (5.6.10): the UPnP/DLNA devices the gateway speaks for.

use axum::extract::{Path, State};
use axum::routing::get;
use axum::{Json, Router};
use cpns_api::{PlayBody, PlayView, ProxiedDeviceView};

use super::{ApiResult, ApiState, Body};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/proxy/devices", get(list))
        .route("/v1/proxy/devices/{id}", get(show))
        .route("/v1/proxy/play", axum::routing::post(play))
}

async fn play(State(s): State<ApiState>, Body(b): Body<PlayBody>) -> ApiResult<PlayView> {
    Ok(Json(s.handle.proxy_play(&b.device, &b.service_id).await?))
}

async fn list(State(s): State<ApiState>) -> ApiResult<Vec<ProxiedDeviceView>> {
    Ok(Json(s.handle.proxy_devices()))
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<ProxiedDeviceView> {
    Ok(Json(s.handle.proxy_device(&id)?))
}
