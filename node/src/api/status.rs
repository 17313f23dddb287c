//! Status Management endpoints (5.6.2): set this node's status, ask for a peer's, subscribe,
//! read notifications.

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_overlay::{Status, StatusPolicy};
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;
use crate::status::Notification;

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

#[derive(Deserialize)]
struct SetBody {
    status: String,
    reason: Option<String>,
}

#[derive(Serialize)]
struct PeerStatus {
    peer_id: String,
    status: String,
    reason: Option<String>,
    battery_percent: Option<u8>,
    answered_by: String,
}

async fn set(State(s): State<ApiState>, Body(b): Body<SetBody>) -> ApiResult<PeerStatus> {
    let status = match b.status.as_str() {
        "online" => Status::Online,
        "offline" => Status::Offline,
        "busy" => Status::Busy {
            reason: b.reason.clone().unwrap_or_default(),
        },
        other => {
            return Err(bad(format!(
                "unknown status {other:?} (online, busy, offline)"
            )));
        }
    };
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
        reason: match status {
            Status::Busy { reason } => Some(reason),
            _ => None,
        },
        battery_percent: battery,
        answered_by: at.to_string(),
    }))
}

#[derive(Deserialize)]
struct SubscribeBody {
    peer: String,
    #[serde(default = "yes")]
    on_change: bool,
    battery_below: Option<u8>,
    free_memory_below: Option<u64>,
}

fn yes() -> bool {
    true
}

#[derive(Serialize)]
struct Subscribed {
    peer_id: String,
    at: String,
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
    Ok(Json(s.handle.notifications()))
}
