//! Service Group Management endpoints (5.6.8).

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_api::{CreateGroupBody, GroupDone, GroupView, KeysPulled, PeerBody};
use cpns_keys::GroupId;

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;
use crate::views::IntoApi;

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

async fn create(State(s): State<ApiState>, Body(b): Body<CreateGroupBody>) -> ApiResult<GroupView> {
    Ok(Json(s.handle.group_create(&b.name).await?.into_api()))
}

async fn list(State(s): State<ApiState>) -> ApiResult<Vec<GroupView>> {
    Ok(Json(s.handle.groups().await?.into_api()))
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<GroupView> {
    Ok(Json(s.handle.group(GroupId(id)).await?.into_api()))
}

async fn delete(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<GroupDone> {
    s.handle.group_delete(GroupId(id.clone())).await?;
    Ok(Json(GroupDone {
        ok: true,
        group: id,
    }))
}

async fn invite(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Body(b): Body<PeerBody>,
) -> ApiResult<GroupView> {
    let peer = b.peer.parse().map_err(bad)?;
    Ok(Json(
        s.handle.group_invite(GroupId(id), peer).await?.into_api(),
    ))
}

async fn expel(
    State(s): State<ApiState>,
    Path(id): Path<String>,
    Body(b): Body<PeerBody>,
) -> ApiResult<GroupView> {
    let peer = b.peer.parse().map_err(bad)?;
    Ok(Json(
        s.handle.group_expel(GroupId(id), peer).await?.into_api(),
    ))
}

async fn join(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<GroupView> {
    Ok(Json(s.handle.group_join(GroupId(id)).await?.into_api()))
}

async fn leave(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<GroupDone> {
    s.handle.group_leave(GroupId(id.clone())).await?;
    Ok(Json(GroupDone {
        ok: true,
        group: id,
    }))
}

async fn pull(State(s): State<ApiState>) -> ApiResult<KeysPulled> {
    Ok(Json(KeysPulled {
        new_keys: s.handle.pull_keys().await?,
    }))
}
