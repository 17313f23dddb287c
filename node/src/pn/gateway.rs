//! The gateway's side of a PN: taking the role (B.1 step 6), setting the PN up with
//! `cpns-auth` (steps 8-17), admitting PNEs (18-26), and keeping members' keys current.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use cpns_overlay::GroupKeyGrant;
use cpns_overlay::{
    AuthMessage, ConnectionSetup, ErrorCode, KadMode, MemberGrant, MemberInfo, MembershipDecision,
    MembershipGrant, Message, NodeMode, PnInventorySummary, PnMessage, PnRecordInfo, Protocol,
    Status,
};
use libp2p::PeerId;
use tracing::{debug, info, warn};

use super::inventory::{self, Entry};
use super::{Membership, PnState, save_membership};
use crate::auth_link::{self, install_grant};
use crate::error::OpError;
use crate::shared::{Shared, now};
use crate::trace::flow::B1;

/// How long a PNE's connection setup (step 18) waits for the gateway's own PN to exist.
const READY_WAIT: Duration = Duration::from_secs(10);

/// Step 6: switch to gateway mode (a Kademlia server too).
pub(crate) async fn take_gateway_role(shared: &Shared) {
    {
        let mut s = shared.state();
        s.mode = match s.mode {
            NodeMode::Pne => NodeMode::PneGateway,
            other => other,
        };
    }
    if let Err(e) = shared.client.set_kad_mode(KadMode::Server).await {
        warn!("cannot switch the DHT to server mode: {e}");
    }
    shared.gateway_progress.send_replace(6);
}

/// Steps 8-13 with `cpns-auth`; steps 14-17 then arrive as the server's requests (see
/// [`on_server_request`]). Returns the PN id once the PN Inventory exists.
pub(crate) async fn establish(shared: &Arc<Shared>) -> Result<String, OpError> {
    let me = shared.peer_id;
    auth_link::authenticate(shared, true).await?;
    let server = shared.enrolment()?.server;
    let (caps, _) = shared.refresh_caps();
    shared.trace(
        B1,
        12,
        &me,
        &server,
        "DeviceCapabilitiesUpdate",
        caps.mode.as_str(),
    );
    let answer = shared
        .client
        .request(
            server,
            Protocol::Auth,
            Message::Auth(AuthMessage::CapabilitiesUpdate(caps)),
        )
        .await
        .map_err(|e| OpError::Refused(format!("step 12: {e}")))?;
    let Message::Auth(AuthMessage::CapabilitiesConfirmation { revision }) = answer else {
        return Err(OpError::Refused(format!(
            "step 13: unexpected {}",
            answer.name()
        )));
    };
    shared.trace(
        B1,
        13,
        &server,
        &me,
        "DeviceCapabilitiesConfirmation",
        format!("revision {revision}"),
    );
    shared.gateway_progress.send_replace(13);
    let mut progress = shared.gateway_progress.subscribe();
    let done = tokio::time::timeout(READY_WAIT, progress.wait_for(|p| *p >= 17)).await;
    if !matches!(done, Ok(Ok(_))) {
        return Err(OpError::Unavailable(
            "cpns-auth did not create the PN Inventory (steps 14-17) in time".into(),
        ));
    }
    let s = shared.state();
    match &s.pn {
        Some(pn) if pn.membership.gateway == me => Ok(pn.membership.pn_id.clone()),
        _ => Err(OpError::Conflict(
            "the PN has another gateway now; this node re-joins it as a PNE".into(),
        )),
    }
}

/// Waits until this node's PN exists; returns its id.
pub(crate) async fn wait_ready(shared: &Shared, limit: Duration) -> Option<String> {
    let mut rx = shared.pn_ready.subscribe();
    let waited = tokio::time::timeout(limit, rx.wait_for(|v| v.is_some())).await;
    match waited {
        Ok(Ok(v)) => v.clone(),
        _ => None,
    }
}

/// Requests `cpns-auth` sends to this node (on `/cpns/auth/1.0.0`): steps 14 and 17, key
/// pushes, revocation lists. Only the pinned server may send them.
pub(crate) async fn on_server_request(
    shared: &Arc<Shared>,
    peer: PeerId,
    msg: AuthMessage,
) -> Message {
    let Ok(enrolment) = shared.enrolment() else {
        return Message::error(ErrorCode::NotRegistered, "this node is not enrolled");
    };
    if peer != enrolment.server {
        return Message::error(
            ErrorCode::Forbidden,
            "only this node's cpns-auth may send that",
        );
    }
    let me = shared.peer_id;
    match msg {
        AuthMessage::StatusUpdateRequest => {
            // Keep the trace in protocol order: step 13's answer may still be on its way here.
            let mut rx = shared.gateway_progress.subscribe();
            let _ = tokio::time::timeout(Duration::from_secs(5), rx.wait_for(|p| *p >= 13)).await;
            shared.trace(B1, 14, &peer, &me, "StatusManagementUpdateRequest", "");
            let (pn_id, members, status, take_over) = {
                let s = shared.state();
                let take_over = s.taking_over;
                let pn_id =
                    s.pn.as_ref()
                        .filter(|p| p.membership.gateway == me || take_over)
                        .map(|p| p.membership.pn_id.clone());
                let members: Vec<(PeerId, Status)> =
                    s.pn.as_ref()
                        .map(|p| {
                            p.members
                                .values()
                                .map(|m| (m.peer_id, m.status.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                (pn_id, members, s.status.clone(), take_over)
            };
            let detail = if members.is_empty() {
                "no change".to_string()
            } else {
                format!("{} members", members.len())
            };
            shared.trace(B1, 15, &me, &me, "StatusManagementLookup", detail);
            shared.trace(
                B1,
                16,
                &me,
                &peer,
                "StatusManagementResponse",
                status.as_str(),
            );
            Message::Auth(AuthMessage::StatusResponse {
                status,
                pn_id,
                members,
                take_over,
            })
        }
        AuthMessage::PnInventoryCreated { pn, key } => {
            shared.trace(
                B1,
                17,
                &peer,
                &me,
                "CreateAndUpdatePnInventory",
                pn.pn_id.clone(),
            );
            match create_inventory(shared, &pn, &key).await {
                Ok(()) => Message::Ack,
                Err(e) => Message::error(ErrorCode::Internal, e.to_string()),
            }
        }
        AuthMessage::KeyPush { member, grants } => {
            if member == me {
                for g in &grants {
                    if let Err(e) = install_grant(shared, g).await {
                        warn!("pushed key not installed: {e}");
                    }
                }
                Message::Ack
            } else {
                forward_keys(shared, member, grants).await
            }
        }
        AuthMessage::Revocations(list) => {
            shared.take_revocations(list).await;
            Message::Ack
        }
        other => Message::error(
            ErrorCode::Unsupported,
            format!("{} is not a server-to-node request", other.name()),
        ),
    }
}

/// Step 17 at the gateway: the PN exists; keep its key, create the local PN Inventory.
async fn create_inventory(
    shared: &Arc<Shared>,
    pn: &PnRecordInfo,
    key: &GroupKeyGrant,
) -> Result<(), OpError> {
    let me = shared.peer_id;
    let key = install_grant(shared, key).await?;
    if pn.gateway != me {
        // The PN moved to another gateway while this one was away (5.6.9): join it.
        let (s, gw) = (shared.clone(), pn.gateway);
        tokio::spawn(async move {
            if let Err(e) = super::failover::rehome(&s, gw, Vec::new()).await {
                warn!(gateway = %gw, "joining the PN's new gateway failed: {e}");
            }
        });
        shared.gateway_progress.send_replace(17);
        return Ok(());
    }
    let enrolment = shared.enrolment()?;
    let listen_addrs = shared.client.listen_addrs().await?;
    let membership = Membership {
        pn_id: pn.pn_id.clone(),
        gateway: me,
        gateway_addrs: listen_addrs.clone(),
        owner: pn.owner.clone(),
        epoch: key.epoch(),
    };
    save_membership(shared, &membership)
        .await
        .map_err(OpError::Internal)?;
    let (mode, caps) = {
        let s = shared.state();
        (s.mode, s.caps.clone())
    };
    let own = Entry {
        info: MemberInfo {
            peer_id: me,
            user: enrolment.credential.body.user.clone(),
            device: enrolment.credential.body.device.clone(),
            mode,
            status: Status::Online,
            listen_addrs,
        },
        caps: Some(caps),
        last_seen: now(),
        services: Vec::new(),
    };
    inventory::put(&shared.db, &own)
        .await
        .map_err(OpError::Internal)?;
    let mut members = BTreeMap::new();
    // Members the server still lists (after a gateway restart, or known as a PNE before a
    // take-over) stay; their status is Offline until they are heard from again.
    let known: Vec<MemberInfo> = shared
        .state()
        .pn
        .as_ref()
        .map(|p| p.members.values().cloned().collect())
        .unwrap_or_default();
    for mut info in known {
        if info.peer_id != me && pn.members.contains(&info.peer_id) {
            info.status = Status::Offline;
            members.insert(info.peer_id, info);
        }
    }
    for entry in inventory::load(&shared.db) {
        if entry.info.peer_id == me || pn.members.contains(&entry.info.peer_id) {
            let mut info = entry.info;
            if info.peer_id != me {
                info.status = Status::Offline;
            }
            members.insert(info.peer_id, info);
        }
    }
    members.insert(me, own.info);
    shared.state().pn = Some(PnState {
        membership,
        members,
    });
    shared.gateway_progress.send_replace(17);
    shared.pn_ready.send_replace(Some(pn.pn_id.clone()));
    info!(pn = %pn.pn_id, epoch = key.epoch(), "PN Inventory created; this node is its gateway");
    shared.after_pn_change();
    Ok(())
}

/// A key push for a member of this gateway's PN: forward it (5.6.6 "push").
async fn forward_keys(shared: &Arc<Shared>, member: PeerId, grants: Vec<GroupKeyGrant>) -> Message {
    let is_member = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.is_member(&member));
    if !is_member {
        return Message::error(ErrorCode::NotFound, "not a member of this gateway's PN");
    }
    match shared
        .client
        .request(
            member,
            Protocol::Cpns,
            Message::Group(cpns_overlay::GroupMessage::KeyForward { grants }),
        )
        .await
    {
        Ok(_) => Message::Ack,
        Err(e) => Message::error(ErrorCode::Busy, format!("member unreachable: {e}")),
    }
}

/// Steps 18-26 at the gateway, for a PNE's connection setup request.
pub(crate) async fn on_connection_setup(
    shared: &Arc<Shared>,
    peer: PeerId,
    setup: ConnectionSetup,
) -> Message {
    let me = shared.peer_id;
    if setup.credential.entity() != &peer {
        return Message::error(ErrorCode::BadRequest, "the credential is not the sender's");
    }
    if !shared.state().mode.is_gateway() {
        return Message::error(ErrorCode::Forbidden, "this node is not a gateway");
    }
    let started = std::time::Instant::now();
    let Some(pn_id) = wait_ready(shared, READY_WAIT).await else {
        return Message::error(
            ErrorCode::Busy,
            "this gateway's PN is not set up yet; try again",
        );
    };
    if !setup.pn_id.is_empty() && setup.pn_id != pn_id {
        return Message::error(
            ErrorCode::BadRequest,
            format!("this gateway runs {pn_id}, not {}", setup.pn_id),
        );
    }
    let waited = started.elapsed().as_millis();
    shared.trace(
        B1,
        18,
        &peer,
        &me,
        "ConnectionSetupRequest",
        if waited > 1 {
            format!("held {waited} ms until the PN existed")
        } else {
            String::new()
        },
    );
    match admit(shared, peer, &pn_id, setup).await {
        Ok(summary) => {
            shared.trace(
                B1,
                26,
                &me,
                &peer,
                "ConnectionSetupConfirmation",
                format!("epoch {}", summary.epoch),
            );
            shared.metrics.pn_established();
            Message::Pn(PnMessage::ConnectionSetupConfirmation(summary))
        }
        Err((code, text)) => Message::error(code, text),
    }
}

async fn admit(
    shared: &Arc<Shared>,
    peer: PeerId,
    pn_id: &str,
    setup: ConnectionSetup,
) -> Result<PnInventorySummary, (ErrorCode, String)> {
    let me = shared.peer_id;
    let server = shared
        .enrolment()
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?
        .server;
    let unavailable = |step: &str, e: OpError| (ErrorCode::Busy, format!("{step}: {e}"));
    let caps = setup.capabilities.clone();
    let device = setup.credential.body.device.clone();
    let user = setup.credential.body.user.clone();

    // 19-21
    shared.trace(B1, 19, &me, &server, "PnMembershipRequest", "");
    let answer = auth_link::request(shared, AuthMessage::MembershipRequest { setup })
        .await
        .map_err(|e| {
            shared.trace(
                B1,
                21,
                &server,
                &me,
                "PnMembershipListOrPolicyTransfer",
                format!("failed: {e}"),
            );
            match e {
                OpError::Refused(t) => (ErrorCode::MembershipRefused, t),
                other => unavailable("step 19", other),
            }
        })?;
    let AuthMessage::MembershipListTransfer { decision, pn } = answer else {
        return Err((
            ErrorCode::Internal,
            format!("step 21: unexpected {}", answer.name()),
        ));
    };
    let verdict = match &decision {
        MembershipDecision::Admitted => "admitted".to_string(),
        MembershipDecision::Refused(r) => format!("refused: {r}"),
    };
    shared.trace(
        B1,
        20,
        &server,
        &server,
        "PnMembershipPolicyLookup",
        verdict.clone(),
    );
    shared.trace(
        B1,
        21,
        &server,
        &me,
        "PnMembershipListOrPolicyTransfer",
        verdict,
    );
    if let MembershipDecision::Refused(reason) = decision {
        return Err((ErrorCode::MembershipRefused, reason));
    }

    // 22-23
    shared.trace(B1, 22, &me, &server, "PnKeyRequest", "");
    let answer = auth_link::request(
        shared,
        AuthMessage::PnKeyRequest {
            pn_id: pn_id.to_string(),
            member: peer,
        },
    )
    .await
    .map_err(|e| unavailable("step 22", e))?;
    let AuthMessage::PnKeyResponse { epoch, grants, .. } = answer else {
        return Err((
            ErrorCode::Internal,
            format!("step 23: unexpected {}", answer.name()),
        ));
    };
    shared.trace(
        B1,
        23,
        &server,
        &me,
        "PnKeyResponse",
        format!("epoch {epoch}"),
    );
    let grant_for = |who: &PeerId| {
        grants
            .iter()
            .find(|g| &g.member == who)
            .map(|g| g.grant.clone())
    };
    if let Some(own) = grant_for(&me)
        && let Err(e) = install_grant(shared, &own).await
    {
        warn!("the gateway's own key grant did not open: {e}");
    }
    let Some(member_grant) = grant_for(&peer) else {
        return Err((
            ErrorCode::Internal,
            "the server sent no key for the new member".into(),
        ));
    };

    // 24-25
    let member_info = MemberInfo {
        peer_id: peer,
        user,
        device,
        mode: caps.mode,
        status: Status::Online,
        listen_addrs: shared
            .peer_entry(&peer)
            .map(|p| p.listen_addrs)
            .unwrap_or_default(),
    };
    let members = {
        let mut s = shared.state();
        if let Some(p) = s.pn.as_mut() {
            p.members.insert(peer, member_info.clone());
            p.membership.epoch = epoch;
            p.members.values().cloned().collect::<Vec<_>>()
        } else {
            Vec::new()
        }
    };
    shared.trace(
        B1,
        24,
        &me,
        &peer,
        "PnMembershipWithGroupKey",
        format!("epoch {epoch}"),
    );
    let answer = shared
        .client
        .request(
            peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::MembershipWithGroupKey(MembershipGrant {
                pn_id: pn_id.to_string(),
                gateway: me,
                epoch,
                sealed_key: member_grant.sealed,
                members: members.clone(),
            })),
        )
        .await
        .map_err(|e| (ErrorCode::Busy, format!("step 24: {e}")))?;
    let Message::Pn(PnMessage::MembershipConfirmation {
        epoch: confirmed, ..
    }) = answer
    else {
        return Err((
            ErrorCode::BadRequest,
            format!("step 25: unexpected {}", answer.name()),
        ));
    };
    shared.trace(
        B1,
        25,
        &peer,
        &me,
        "PnMembershipWithGroupKeyConfirmation",
        format!("epoch {confirmed}"),
    );

    let entry = Entry {
        info: member_info,
        caps: Some(caps),
        last_seen: now(),
        services: Vec::new(),
    };
    if let Err(e) = inventory::put(&shared.db, &entry).await {
        warn!("PN Inventory not updated: {e}");
    }
    persist_epoch(shared, epoch).await;
    // The other members get the new epoch.
    distribute(
        shared.clone(),
        pn_id.to_string(),
        epoch,
        grants,
        Some(peer),
        members,
        pn,
    );
    shared.after_pn_change();
    Ok(shared
        .inventory_summary()
        .unwrap_or_else(|| PnInventorySummary {
            pn_id: pn_id.to_string(),
            owner: String::new(),
            gateway: me,
            epoch,
            members: Vec::new(),
            services: Vec::new(),
            updated: now(),
        }))
}

/// Stores the gateway's current PN epoch.
pub(crate) async fn persist_epoch(shared: &Shared, epoch: u64) {
    let membership = {
        let mut s = shared.state();
        s.pn.as_mut().map(|p| {
            p.membership.epoch = epoch;
            p.membership.clone()
        })
    };
    if let Some(m) = membership
        && let Err(e) = save_membership(shared, &m).await
    {
        warn!("PN membership not saved: {e}");
    }
}

/// Sends every member (but `except`, who got step 24) its grant of the new epoch and the
/// member list, in the background.
pub(crate) fn distribute(
    shared: Arc<Shared>,
    pn_id: String,
    epoch: u64,
    grants: Vec<MemberGrant>,
    except: Option<PeerId>,
    members: Vec<MemberInfo>,
    _record: PnRecordInfo,
) {
    let me = shared.peer_id;
    tokio::spawn(async move {
        for g in grants {
            if g.member == me || Some(g.member) == except {
                continue;
            }
            let msg = Message::Pn(PnMessage::MembershipUpdate(MembershipGrant {
                pn_id: pn_id.clone(),
                gateway: me,
                epoch,
                sealed_key: g.grant.sealed.clone(),
                members: members.clone(),
            }));
            if let Err(e) = shared.client.request(g.member, Protocol::Cpns, msg).await {
                debug!(member = %g.member, "membership update not delivered (it will pull): {e}");
            }
        }
    });
}

/// G.1 step 9 at the gateway: a member leaves; the gateway de-registers it with `cpns-auth`
/// on its behalf, and the PN key moves to a new epoch for the others.
pub(crate) async fn on_leave(shared: &Arc<Shared>, peer: PeerId, pn_id: String) -> Message {
    let me = shared.peer_id;
    let (is_mine, is_member) = {
        let s = shared.state();
        match &s.pn {
            Some(pn) => (
                pn.membership.pn_id == pn_id && pn.membership.gateway == me,
                pn.is_member(&peer),
            ),
            None => (false, false),
        }
    };
    // From our own gateway, a Leave means the PN was released.
    let from_my_gateway = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.membership.gateway == peer && p.membership.pn_id == pn_id);
    if from_my_gateway {
        shared.trace(crate::trace::flow::G1, 9, &peer, &me, "PnReleased", pn_id);
        super::member::forget_pn(shared).await;
        return Message::Ack;
    }
    if !is_mine || !is_member {
        return Message::error(ErrorCode::NotFound, "not a member of this gateway's PN");
    }
    shared.trace(
        crate::trace::flow::G1,
        9,
        &peer,
        &me,
        "DisconnectionRequest",
        "",
    );
    match deregister(shared, peer, &pn_id).await {
        Ok(epoch) => {
            let server = shared.enrolment().map(|e| e.server).unwrap_or(me);
            shared.trace(
                crate::trace::flow::G1,
                9,
                &me,
                &server,
                "PnDeregister",
                format!("new epoch {epoch}"),
            );
            Message::Ack
        }
        Err(e) => Message::error(ErrorCode::Busy, e.to_string()),
    }
}

/// Removes a member: de-register at the server (new epoch), update the inventory and tell the
/// remaining members. Returns the new epoch.
pub(crate) async fn deregister(
    shared: &Arc<Shared>,
    peer: PeerId,
    pn_id: &str,
) -> Result<u64, OpError> {
    let answer = auth_link::request(
        shared,
        AuthMessage::PnDeregister {
            pn_id: pn_id.to_string(),
            member: peer,
        },
    )
    .await?;
    let AuthMessage::PnKeyResponse { epoch, grants, .. } = answer else {
        return Err(OpError::Refused(format!(
            "unexpected answer {}",
            answer.name()
        )));
    };
    remove_member(shared, peer, pn_id, epoch, grants).await;
    Ok(epoch)
}

/// Applies a member's removal (left, expelled, revoked) with the new epoch's grants.
pub(crate) async fn remove_member(
    shared: &Arc<Shared>,
    peer: PeerId,
    pn_id: &str,
    epoch: u64,
    grants: Vec<MemberGrant>,
) {
    let me = shared.peer_id;
    if let Some(own) = grants.iter().find(|g| g.member == me)
        && let Err(e) = install_grant(shared, &own.grant).await
    {
        warn!("the gateway's key of epoch {epoch} did not open: {e}");
    }
    let members = {
        let mut s = shared.state();
        s.pn.as_mut()
            .map(|p| {
                p.members.remove(&peer);
                p.members.values().cloned().collect::<Vec<_>>()
            })
            .unwrap_or_default()
    };
    if let Err(e) = inventory::remove(&shared.db, &peer).await {
        warn!("PN Inventory not updated: {e}");
    }
    persist_epoch(shared, epoch).await;
    let record = PnRecordInfo {
        pn_id: pn_id.to_string(),
        owner: String::new(),
        gateway: me,
        members: members.iter().map(|m| m.peer_id).collect(),
        admins: Vec::new(),
        policy: Default::default(),
        epoch,
    };
    distribute(
        shared.clone(),
        pn_id.to_string(),
        epoch,
        grants,
        Some(peer),
        members,
        record,
    );
    shared.after_pn_change();
}

/// A request for this gateway's PN Inventory (5.6.9).
pub(crate) fn on_inventory_request(shared: &Arc<Shared>, _peer: PeerId, pn_id: String) -> Message {
    match shared.inventory_summary() {
        Some(summary) if summary.pn_id == pn_id => {
            Message::Pn(PnMessage::InventoryResponse(summary))
        }
        _ => Message::error(
            ErrorCode::NotFound,
            format!("this node does not hold the inventory of {pn_id}"),
        ),
    }
}

/// Releases this gateway's PN (5.6.9 "release PN"): `cpns-auth` deletes the PN and its key,
/// members are told, the local inventory is emptied.
pub(crate) async fn release(shared: &Arc<Shared>) -> Result<String, OpError> {
    let me = shared.peer_id;
    let (pn_id, members) = {
        let s = shared.state();
        let pn =
            s.pn.as_ref()
                .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        if pn.membership.gateway != me {
            return Err(OpError::Conflict(
                "only the PN's gateway releases it".into(),
            ));
        }
        (
            pn.membership.pn_id.clone(),
            pn.members
                .keys()
                .filter(|p| **p != me)
                .copied()
                .collect::<Vec<_>>(),
        )
    };
    auth_link::command(
        shared,
        AuthMessage::PnRelease {
            pn_id: pn_id.clone(),
        },
    )
    .await?;
    for m in members {
        let msg = Message::Pn(PnMessage::Leave {
            pn_id: pn_id.clone(),
        });
        if let Err(e) = shared.client.request(m, Protocol::Cpns, msg).await {
            debug!(member = %m, "release not delivered: {e}");
        }
    }
    inventory::clear(&shared.db)
        .await
        .map_err(OpError::Internal)?;
    super::member::forget_pn(shared).await;
    Ok(pn_id)
}
