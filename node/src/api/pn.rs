//! Endpoints of PN establishment and management: enrol (`up`), leave (`down`), pair, the PN
//! Inventory, invitations and expulsions, the mode, and sealing with the PN key.

use axum::extract::{Query, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use cpns_api::{
    Done, EpochView, ExpelBody, InventoryQuery, InviteBody, ModeBody, ModeView, Opened, PairBody,
    PairOutcome, PairingCodeView, PnInventoryView, Released, SealBody, SealedView, StatusView,
    UpBody,
};
use cpns_overlay::Invitee;

use super::{ApiError, ApiResult, ApiState, Body};
use crate::error::OpError;
use crate::views::{IntoApi, sealed};

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/up", post(up))
        .route("/v1/down", post(down))
        .route("/v1/pair", post(pair))
        .route("/v1/pair/code", get(pairing_code))
        .route("/v1/pn", get(inventory))
        .route("/v1/pn/invite", post(invite))
        .route("/v1/pn/expel", post(expel))
        .route("/v1/pn/release", post(release))
        .route("/v1/pn/invitations", get(invitations))
        .route("/v1/pn/accept", post(accept))
        .route("/v1/pn/decline", post(decline))
        .route("/v1/pn/handoff", post(hand_off))
        .route("/v1/pn/switch", post(switch))
        .route("/v1/pn/merge", post(merge))
        .route("/v1/pn/split", post(split))
        .route("/v1/pn/admins", get(admins))
        .route("/v1/pn/admin/request", post(admin_request))
        .route("/v1/pn/admin/approve", post(admin_approve))
        .route("/v1/pn/admin/set", post(admin_set))
        .route("/v1/pn/match", get(capability_match))
        .route("/v1/pn/seal", post(seal))
        .route("/v1/pn/open", post(open))
        .route("/v1/mode", get(mode_get).post(mode_set))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(OpError::BadRequest(e.to_string()))
}

async fn up(State(s): State<ApiState>, Body(b): Body<UpBody>) -> ApiResult<StatusView> {
    Ok(Json(s.handle.up(&b.code).await?))
}

async fn down(State(s): State<ApiState>) -> ApiResult<Done> {
    s.handle.down().await?;
    Ok(Json(Done { ok: true }))
}

async fn pair(State(s): State<ApiState>, Body(b): Body<PairBody>) -> ApiResult<PairOutcome> {
    // `addr` is a multiaddr with /p2p/PEERID or a pairing code.
    Ok(Json(s.handle.pair_with(&b.addr).await?.into_api()))
}

async fn pairing_code(State(s): State<ApiState>) -> ApiResult<PairingCodeView> {
    Ok(Json(PairingCodeView {
        code: s.handle.pairing_code().await?,
    }))
}

async fn inventory(
    State(s): State<ApiState>,
    Query(q): Query<InventoryQuery>,
) -> ApiResult<PnInventoryView> {
    let mut view = s.handle.pn_inventory(q.pn_id).await?.into_api();
    // This node's own PN: the admin information it last heard (a remote PN's is not known).
    view.admin = s
        .handle
        .pn_admin_known()
        .filter(|a| a.pn_id == view.pn_id)
        .map(IntoApi::into_api);
    // The gateway's proxied PNEs (5.6.10), for this node's own PN.
    view.proxied = s
        .handle
        .proxied_in_pn(&view.pn_id)
        .await
        .unwrap_or_default();
    Ok(Json(view))
}

async fn admins(State(s): State<ApiState>) -> ApiResult<cpns_api::PnAdminsView> {
    Ok(Json(s.handle.pn_admins().await?.into_api()))
}

async fn admin_request(State(s): State<ApiState>) -> ApiResult<cpns_api::PnAdminsView> {
    Ok(Json(s.handle.pn_admin_request().await?.into_api()))
}

async fn admin_approve(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::AdminApproveBody>,
) -> ApiResult<cpns_api::PnAdminsView> {
    let peer = b.peer.parse().map_err(bad)?;
    Ok(Json(s.handle.pn_admin_approve(peer).await?.into_api()))
}

async fn admin_set(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::AdmineeSetBody>,
) -> ApiResult<cpns_api::PnAdminsView> {
    let peer = b.peer.parse().map_err(bad)?;
    let settings = crate::views::adminee_settings(b.settings);
    Ok(Json(
        s.handle.pn_admin_set(peer, settings).await?.into_api(),
    ))
}

async fn invite(State(s): State<ApiState>, Body(b): Body<InviteBody>) -> ApiResult<Done> {
    let invitee = match (b.user, b.entity) {
        (Some(u), None) => Invitee::User(u),
        (None, Some(e)) => Invitee::Entity(e.parse().map_err(bad)?),
        _ => return Err(bad("give exactly one of user or entity")),
    };
    s.handle.pn_invite(invitee).await?;
    Ok(Json(Done { ok: true }))
}

async fn expel(State(s): State<ApiState>, Body(b): Body<ExpelBody>) -> ApiResult<EpochView> {
    let peer = b.peer.parse().map_err(bad)?;
    Ok(Json(EpochView {
        epoch: s.handle.pn_expel(peer).await?,
    }))
}

async fn seal(State(s): State<ApiState>, Body(b): Body<SealBody>) -> ApiResult<SealedView> {
    Ok(Json(s.handle.pn_seal(b.text.as_bytes())?.into_api()))
}

async fn open(State(s): State<ApiState>, Body(b): Body<SealedView>) -> ApiResult<Opened> {
    let bytes = s.handle.pn_open(&sealed(b).map_err(bad)?)?;
    Ok(Json(Opened {
        text: String::from_utf8_lossy(&bytes).into_owned(),
    }))
}

async fn mode_get(State(s): State<ApiState>) -> ApiResult<ModeView> {
    let (mode, setting) = s.handle.mode();
    Ok(Json(ModeView { mode, setting }))
}

async fn mode_set(State(s): State<ApiState>, Body(b): Body<ModeBody>) -> ApiResult<ModeView> {
    let setting = b.mode.parse().map_err(bad)?;
    s.handle.set_mode(setting).await?;
    let (mode, setting) = s.handle.mode();
    Ok(Json(ModeView { mode, setting }))
}

async fn release(State(s): State<ApiState>) -> ApiResult<Released> {
    Ok(Json(Released {
        pn_id: s.handle.pn_release().await?,
    }))
}

async fn invitations(State(s): State<ApiState>) -> ApiResult<Vec<cpns_api::InvitationView>> {
    Ok(Json(s.handle.pn_invitations()))
}

async fn accept(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::InvitationBody>,
) -> ApiResult<Released> {
    Ok(Json(Released {
        pn_id: s.handle.pn_accept(&b.id).await?,
    }))
}

async fn decline(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::InvitationBody>,
) -> ApiResult<Done> {
    s.handle.pn_decline(&b.id).await?;
    Ok(Json(Done { ok: true }))
}

async fn hand_off(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::HandOffBody>,
) -> ApiResult<Done> {
    let peer = b.peer.parse().map_err(bad)?;
    s.handle.pn_hand_off(peer).await?;
    Ok(Json(Done { ok: true }))
}

async fn switch(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::SwitchBody>,
) -> ApiResult<cpns_api::SwitchView> {
    let to = b.to.parse().map_err(bad)?;
    Ok(Json(s.handle.pn_switch(to, b.session.as_deref()).await?))
}

async fn merge(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::MergeBody>,
) -> ApiResult<cpns_api::MergeView> {
    Ok(Json(s.handle.pn_merge(&b.with).await?))
}

async fn split(
    State(s): State<ApiState>,
    Body(b): Body<cpns_api::SplitBody>,
) -> ApiResult<cpns_api::SplitView> {
    let peers = b
        .peers
        .iter()
        .map(|p| p.parse())
        .collect::<Result<Vec<libp2p::PeerId>, _>>()
        .map_err(bad)?;
    Ok(Json(s.handle.pn_split(peers).await?))
}

async fn capability_match(
    State(s): State<ApiState>,
    axum::extract::Query(q): axum::extract::Query<cpns_api::MatchQuery>,
) -> ApiResult<cpns_api::MatchView> {
    Ok(Json(s.handle.pn_match(&q.service).await?))
}
