//! Service Group Management endpoints (5.6.8).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_keys::GroupId;
use cpns_overlay::GroupInfo;
use serde::Deserialize;

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/groups", get(list).post(create))
        .route("/v1/groups/keys/pull", post(pull))
        .route("/v1/groups/{id}", get(show).delete(delete))
        .route("/v1/groups/{id}/invite", post(invite))
        .route("/v1/groups/{id}/expel", post(expel))
        .route("/v1/groups/{id}/join", post(join))
        .route("/v1/groups/{id}/leave", post(leave))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(OpError::BadRequest(e.to_string()))
}

#[derive(Deserialize)]
struct CreateBody {
    name: String,
}

async fn create(State(s): State<ApiState>, Body(b): Body<CreateBody>) -> ApiResult<GroupInfo> {
    Ok(Json(s.handle.group_create(&b.name).await?))
}

async fn list(State(s): State<ApiState>) -> ApiResult<Vec<GroupInfo>> {
    Ok(Json(s.handle.groups().await?))
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<GroupInfo> {
    Ok(Json(s.handle.group(GroupId(id)).await?))
}

async fn delete(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<serde_json::Value> {
    s.handle.group_delete(GroupId(id.clone())).await?;
    Ok(Json(serde_json::json!({ "ok": true, "group": id })))
}

#[derive(Deserialize)]
struct PeerBody {
    peer: String,
}

async fn invite(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Body(b): Body<PeerBody>,
) -> ApiResult<GroupInfo> {
    let peer = b.peer.parse().map_err(bad)?;
    Ok(Json(s.handle.group_invite(GroupId(id), peer).await?))
}

async fn expel(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Body(b): Body<PeerBody>,
) -> ApiResult<GroupInfo> {
    let peer = b.peer.parse().map_err(bad)?;
    Ok(Json(s.handle.group_expel(GroupId(id), peer).await?))
}

async fn join(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<GroupInfo> {
    Ok(Json(s.handle.group_join(GroupId(id)).await?))
}

async fn leave(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<serde_json::Value> {
    s.handle.group_leave(GroupId(id.clone())).await?;
    Ok(Json(serde_json::json!({ "ok": true, "group": id })))
}

async fn pull(State(s): State<ApiState>) -> ApiResult<serde_json::Value> {
    let new = s.handle.pull_keys().await?;
    Ok(Json(serde_json::json!({ "new_keys": new })))
}
