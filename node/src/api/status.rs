//! Status Management endpoints (5.6.2): set this node's status, ask for a peer's, subscribe,
//! read notifications.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_api::{Notification, PeerStatus, SetStatusBody, SubscribeBody, Subscribed};
use cpns_overlay::{Status, StatusPolicy};

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;
use crate::views::{IntoApi, busy_reason};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/status/set", post(set))
        .route("/v1/status/of/{peer}", get(of))
        .route("/v1/status/subscribe", post(subscribe))
        .route("/v1/status/notifications", get(notifications))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(OpError::BadRequest(e.to_string()))
}

/// A status named in the API (`online`, `busy`, `offline`) as the overlay's.
pub(super) fn parse_status(status: &str, reason: Option<String>) -> Result<Status, ApiError> {
    match status {
        "online" => Ok(Status::Online),
        "offline" => Ok(Status::Offline),
        "busy" => Ok(Status::Busy {
            reason: reason.unwrap_or_default(),
        }),
        other => Err(bad(format!(
            "unknown status {other:?} (online, busy, offline)"
        ))),
    }
}

async fn set(State(s): State<ApiState>, Body(b): Body<SetStatusBody>) -> ApiResult<PeerStatus> {
    let status = parse_status(&b.status, b.reason.clone())?;
    s.handle.set_status(status.clone()).await?;
    let me = s.handle.peer_id().to_string();
    Ok(Json(PeerStatus {
        peer_id: me.clone(),
        status: status.as_str().into(),
        reason: b.reason,
        battery_percent: None,
        answered_by: me,
    }))
}

async fn of(State(s): State<ApiState>, Path(peer): Path<String>) -> ApiResult<PeerStatus> {
    let peer_id = peer.parse().map_err(bad)?;
    let (status, battery, at) = s.handle.status_of(peer_id).await?;
    Ok(Json(PeerStatus {
        peer_id: peer,
        status: status.as_str().into(),
        reason: busy_reason(&status),
        battery_percent: battery,
        answered_by: at.to_string(),
    }))
}

async fn subscribe(
    State(s): State<ApiState>,
    Body(b): Body<SubscribeBody>,
) -> ApiResult<Subscribed> {
    let peer = b.peer.parse().map_err(bad)?;
    let at = s
        .handle
        .subscribe_status(
            peer,
            StatusPolicy {
                on_change: b.on_change,
                battery_below: b.battery_below,
                free_memory_below: b.free_memory_below,
            },
        )
        .await?;
    Ok(Json(Subscribed {
        peer_id: b.peer,
        at: at.to_string(),
    }))
}

async fn notifications(State(s): State<ApiState>) -> ApiResult<Vec<Notification>> {
    Ok(Json(s.handle.notifications().into_api()))
}
