//! Service/Content Delivery beyond one fetch (5.6.7): several services at once, sessions and
//! their control, pushes and the inbox (`/v1/content/…`), and the feeds a gateway aggregates
//! and distributes (`/v1/feeds/…`). docs/API.md has an example of each.

use std::collections::BTreeMap;

use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_api::{
    AcceptedPush, AggregateView, ContributeBody, DistributeBody, DistributionView, Done,
    FeedPartView, FetchManyBody, FetchResult, PendingPushView, PushBody, PushTargetView, PushView,
    ReceivedFeedView, RecipientView, SessionView,
};
use cpns_overlay::DeliveryMode;
use libp2p::PeerId;

use super::{ApiError, ApiResult, ApiState, Body};
use crate::delivery::{
    Action, PendingPush, PushOutcome, PushTarget, ReceivedFeed, Recipient, SessionInfo, Target,
};
use crate::error::OpError;
use crate::views::IntoApi;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/content/fetch-many", post(fetch_many))
        .route("/v1/content/sessions", get(sessions))
        .route("/v1/content/sessions/{id}/{action}", post(control))
        .route(
            "/v1/content/sessions/{id}/continue/{offset}",
            post(continue_at),
        )
        .route("/v1/content/push", post(push))
        .route("/v1/content/pushes", get(pushes))
        .route("/v1/content/inbox/pending", get(pending))
        .route("/v1/content/inbox/{id}/accept", post(accept))
        .route("/v1/content/inbox/{id}/decline", post(decline))
        .route("/v1/feeds", get(feeds))
        .route("/v1/feeds/{feed}/contribute", post(contribute))
        .route("/v1/feeds/{feed}/aggregate", get(aggregate))
        .route("/v1/feeds/{feed}/distribute", post(distribute))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(OpError::BadRequest(e.to_string()))
}

pub(super) fn mode(m: Option<&str>) -> Result<DeliveryMode, ApiError> {
    match m {
        None | Some("pull") => Ok(DeliveryMode::Pull),
        Some("push") => Ok(DeliveryMode::Push),
        Some(other) => Err(bad(format!("unknown mode {other:?} (pull or push)"))),
    }
}

async fn fetch_many(
    State(s): State<ApiState>,
    Body(b): Body<FetchManyBody>,
) -> ApiResult<Vec<FetchResult>> {
    let mode = mode(b.mode.as_deref())?;
    let _progress: Vec<_> = b.service_ids.iter().map(|id| s.web.fetching(id)).collect();
    let all = s.handle.content().fetch_many(&b.service_ids, mode).await?;
    Ok(Json(
        all.into_iter()
            .map(|(service_id, r)| match r {
                Ok(o) => FetchResult {
                    service_id,
                    outcome: Some(o.into_api()),
                    error: None,
                },
                Err(e) => FetchResult {
                    service_id,
                    outcome: None,
                    error: Some(e.to_string()),
                },
            })
            .collect(),
    ))
}

fn session_view(i: SessionInfo) -> SessionView {
    let SessionInfo {
        id,
        role,
        service_id,
        peer,
        mode,
        state,
        bytes,
        total,
        variant,
    } = i;
    SessionView {
        id,
        role: role.into(),
        service_id,
        peer,
        mode: mode.into(),
        state,
        bytes,
        total,
        variant,
    }
}

async fn sessions(State(s): State<ApiState>) -> ApiResult<Vec<SessionView>> {
    Ok(Json(
        s.handle
            .content()
            .sessions()
            .into_iter()
            .map(session_view)
            .collect(),
    ))
}

async fn control(
    State(s): State<ApiState>,
    Path((id, action)): Path<(String, String)>,
) -> ApiResult<SessionView> {
    let action = match action.as_str() {
        "stop" => Action::Stop,
        "pause" => Action::Pause,
        "resume" => Action::Resume,
        other => {
            return Err(bad(format!(
                "unknown action {other:?} (stop, pause, resume)"
            )));
        }
    };
    Ok(Json(session_view(
        s.handle.content().control(&id, action).await?,
    )))
}

/// Resume by offset: the offerer sends the session's content from byte `offset` on.
async fn continue_at(
    State(s): State<ApiState>,
    Path((id, offset)): Path<(String, u64)>,
) -> ApiResult<Done> {
    s.handle.content().continue_at(&id, offset).await?;
    Ok(Json(Done { ok: true }))
}

fn push_view(o: PushOutcome) -> PushView {
    let PushOutcome {
        push_id,
        name,
        bytes,
        created,
        targets,
    } = o;
    PushView {
        push_id: format!("{push_id:016x}"),
        name,
        bytes,
        created,
        targets: targets
            .into_iter()
            .map(|t| {
                let PushTarget {
                    peer,
                    state,
                    detail,
                    via_gateway,
                } = t;
                PushTargetView {
                    peer: peer.to_string(),
                    state,
                    detail,
                    via_gateway,
                }
            })
            .collect(),
    }
}

async fn push(State(s): State<ApiState>, Body(b): Body<PushBody>) -> ApiResult<PushView> {
    let to: Target = b.to.parse().map_err(bad)?;
    let outcome = s.handle.content().push(&b.path, to, b.via_gateway).await?;
    Ok(Json(push_view(outcome)))
}

async fn pushes(State(s): State<ApiState>) -> ApiResult<Vec<PushView>> {
    Ok(Json(
        s.handle
            .content()
            .pushes()
            .into_iter()
            .map(push_view)
            .collect(),
    ))
}

async fn pending(State(s): State<ApiState>) -> ApiResult<Vec<PendingPushView>> {
    Ok(Json(
        s.handle
            .content()
            .pending()
            .into_iter()
            .map(|p: PendingPush| PendingPushView {
                id: p.id,
                from: p.from.to_string(),
                user: p.user,
                name: p.name,
                bytes: p.bytes,
                group: p.group.map(|g| g.0),
                received: p.received,
            })
            .collect(),
    ))
}

async fn accept(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<AcceptedPush> {
    Ok(Json(s.handle.content().accept(&id).await?))
}

async fn decline(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Done> {
    s.handle.content().decline(&id).await?;
    Ok(Json(Done { ok: true }))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

async fn feeds(State(s): State<ApiState>) -> ApiResult<Vec<ReceivedFeedView>> {
    Ok(Json(
        s.handle
            .content()
            .feeds()
            .into_iter()
            .map(|f: ReceivedFeed| ReceivedFeedView {
                feed: f.feed,
                from: f.from.to_string(),
                seq: f.seq,
                common: text(&f.common),
                part: f.part.as_deref().map(text),
                received: f.received,
            })
            .collect(),
    ))
}

async fn contribute(
    State(s): State<ApiState>,
    Path(feed): Path<String>,
    Body(b): Body<ContributeBody>,
) -> ApiResult<Done> {
    s.handle
        .content()
        .contribute(&feed, b.common.into_bytes(), b.part.into_bytes())
        .await?;
    Ok(Json(Done { ok: true }))
}

async fn aggregate(
    State(s): State<ApiState>,
    Path(feed): Path<String>,
) -> ApiResult<AggregateView> {
    let f = s.handle.content().aggregate(&feed).await?;
    Ok(Json(AggregateView {
        feed: f.feed,
        common: f.common.iter().map(|c| text(c)).collect(),
        parts: f
            .parts
            .into_iter()
            .map(|p| FeedPartView {
                from: p.from.to_string(),
                common: p.common,
                data: text(&p.data),
                at: p.at,
            })
            .collect(),
    }))
}

async fn distribute(
    State(s): State<ApiState>,
    Path(feed): Path<String>,
    Body(b): Body<DistributeBody>,
) -> ApiResult<DistributionView> {
    let mut parts = BTreeMap::new();
    for (peer, part) in b.parts {
        let peer: PeerId = peer.parse().map_err(|e| bad(format!("{peer}: {e}")))?;
        parts.insert(peer, part.into_bytes());
    }
    let (seq, recipients) = s
        .handle
        .content()
        .distribute(&feed, b.common.into_bytes(), parts)
        .await?;
    Ok(Json(DistributionView {
        feed,
        seq,
        recipients: recipients
            .into_iter()
            .map(|r: Recipient| RecipientView {
                peer: r.peer.to_string(),
                delivered: r.delivered,
                error: r.error,
                sealed_part: r.sealed_part.map(hex::encode),
            })
            .collect(),
    }))
}
