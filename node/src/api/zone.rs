//! Zone-based service (Appendix F): the zone settings, the zone's members, the zones met.

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use cpns_api::{ZoneSettings, ZoneView};

use super::{ApiResult, ApiState, Body};

pub(super) fn routes() -> Router<ApiState> {
    Router::new().route("/v1/zone", get(show).post(set).delete(reset))
}

async fn show(State(s): State<ApiState>) -> ApiResult<ZoneView> {
    Ok(Json(s.handle.zone().await?))
}

async fn set(State(s): State<ApiState>, Body(b): Body<ZoneSettings>) -> ApiResult<ZoneView> {
    s.handle.set_zone(Some(b)).await?;
    Ok(Json(s.handle.zone().await?))
}

async fn reset(State(s): State<ApiState>) -> ApiResult<ZoneView> {
    s.handle.set_zone(None).await?;
    Ok(Json(s.handle.zone().await?))
}
