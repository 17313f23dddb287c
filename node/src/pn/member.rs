//! The PNE's side of a PN: the connection setup that makes it a member (B.1 steps 18 and
//! 24-26), membership updates and key forwards from its gateway, and leaving (G.1 step 9).

use std::collections::BTreeMap;
use std::sync::Arc;

use cpns_keys::Sealed;
use cpns_overlay::GroupKeyGrant;
use cpns_overlay::{
    ConnectionSetup, ErrorCode, KadMode, MembershipGrant, Message, NodeMode, PnMessage, Protocol,
    transcript,
};
use libp2p::{Multiaddr, PeerId};
use tracing::{info, warn};

use super::{Membership, PnState, clear_membership, save_membership};
use crate::auth_link::{install_grant, pn_group};
use crate::config::ModeSetting;
use crate::error::OpError;
use crate::shared::{Shared, now};
use crate::trace::flow::{B1, G1};

/// Joins the PN of `gateway` (B.1 step 18, answered by 26 after 19-25). Returns the PN id.
pub(crate) async fn join(
    shared: &Arc<Shared>,
    gateway: PeerId,
    addrs: Vec<Multiaddr>,
) -> Result<String, OpError> {
    let me = shared.peer_id;
    if shared.state().pn.is_some() {
        return Err(OpError::Conflict("already a member of a PN".into()));
    }
    let enrolment = shared.enrolment()?;
    for a in &addrs {
        let _ = shared.client.add_address(gateway, a.clone()).await;
    }
    // A gateway met through another member has not registered with us yet: steps 1-2 first.
    if shared.peer_entry(&gateway).is_none() {
        super::registration::register(shared, gateway).await?;
    }
    let pn_hint = shared
        .peer_entry(&gateway)
        .and_then(|p| p.pn_id)
        .unwrap_or_default();
    let time = now();
    let nonce: [u8; 16] = rand::random();
    let t = transcript::membership_request(&pn_hint, &gateway, &me, time, &nonce);
    let (caps, _) = shared.refresh_caps();
    let setup = ConnectionSetup {
        credential: enrolment.credential.clone(),
        pn_id: pn_hint,
        time,
        nonce,
        eukey_mac: enrolment.eukey.mac(&t),
        signature: shared.identity.sign(&t),
        capabilities: caps,
    };
    shared.state().joining = Some(gateway);
    shared.trace(B1, 18, &me, &gateway, "ConnectionSetupRequest", "");
    let answer = shared
        .client
        .request(
            gateway,
            Protocol::Cpns,
            Message::Pn(PnMessage::ConnectionSetupRequest(setup)),
        )
        .await;
    shared.state().joining = None;
    let summary = match answer {
        Ok(Message::Pn(PnMessage::ConnectionSetupConfirmation(summary))) => summary,
        Ok(other) => {
            return Err(OpError::Refused(format!(
                "step 26: unexpected {}",
                other.name()
            )));
        }
        Err(cpns_overlay::Error::Refused { reply, .. }) => {
            shared.trace(
                B1,
                26,
                &gateway,
                &me,
                "ConnectionSetupConfirmation",
                format!("refused: {}", reply.code.as_str()),
            );
            return Err(OpError::Refused(format!("the gateway refused: {reply}")));
        }
        Err(e) => return Err(OpError::Unavailable(format!("step 18: {e}"))),
    };
    shared.trace(
        B1,
        26,
        &gateway,
        &me,
        "ConnectionSetupConfirmation",
        summary.pn_id.clone(),
    );
    shared.trace(G1, 3, &gateway, &me, "PnConnected", summary.pn_id.clone());
    let gateway_addrs = if addrs.is_empty() {
        shared
            .peer_entry(&gateway)
            .map(|p| p.listen_addrs)
            .unwrap_or_default()
    } else {
        addrs
    };
    let membership = Membership {
        pn_id: summary.pn_id.clone(),
        gateway,
        gateway_addrs,
        owner: summary.owner.clone(),
        epoch: summary.epoch,
    };
    save_membership(shared, &membership)
        .await
        .map_err(OpError::Internal)?;
    admit_members(shared, &summary.members).await;
    let members: BTreeMap<PeerId, _> = summary
        .members
        .iter()
        .map(|m| (m.peer_id, m.clone()))
        .collect();
    shared.state().pn = Some(PnState {
        membership,
        members,
    });
    // A PNE-only member is a DHT client (DESIGN: gateways route, PNEs only ask).
    if matches!(shared.config.mode, ModeSetting::Auto | ModeSetting::Pne)
        && shared.state().mode == NodeMode::Pne
    {
        let _ = shared.client.set_kad_mode(KadMode::Client).await;
    }
    shared.pn_ready.send_replace(Some(summary.pn_id.clone()));
    shared.metrics.pn_established();
    info!(pn = %summary.pn_id, %gateway, epoch = summary.epoch, "member of the PN");
    shared.after_pn_change();
    Ok(summary.pn_id)
}

/// Opens a PN key sealed for this node under its EUKey and keeps it.
async fn take_pn_key(
    shared: &Shared,
    pn_id: &str,
    epoch: u64,
    sealed: Sealed,
) -> Result<(), OpError> {
    install_grant(
        shared,
        &GroupKeyGrant {
            group: pn_group(pn_id),
            epoch,
            sealed,
        },
    )
    .await
    .map(|_| ())
}

/// Step 24 at the PNE: the gateway hands over the PN key; step 25 confirms.
pub(crate) async fn on_membership_with_key(
    shared: &Arc<Shared>,
    peer: PeerId,
    grant: MembershipGrant,
) -> Message {
    let me = shared.peer_id;
    if shared.state().joining != Some(peer) {
        return Message::error(
            ErrorCode::Forbidden,
            "no connection setup pending with this gateway",
        );
    }
    shared.trace(
        B1,
        24,
        &peer,
        &me,
        "PnMembershipWithGroupKey",
        format!("epoch {}", grant.epoch),
    );
    if let Err(e) = take_pn_key(shared, &grant.pn_id, grant.epoch, grant.sealed_key).await {
        return Message::error(ErrorCode::BadRequest, e.to_string());
    }
    shared.trace(
        B1,
        25,
        &me,
        &peer,
        "PnMembershipWithGroupKeyConfirmation",
        format!("epoch {}", grant.epoch),
    );
    Message::Pn(PnMessage::MembershipConfirmation {
        pn_id: grant.pn_id,
        epoch: grant.epoch,
    })
}

/// A membership update from this node's gateway: a new key epoch and the member list.
pub(crate) async fn on_membership_update(
    shared: &Arc<Shared>,
    peer: PeerId,
    grant: MembershipGrant,
) -> Message {
    let is_my_gateway = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.membership.gateway == peer && p.membership.pn_id == grant.pn_id);
    if !is_my_gateway {
        return Message::error(ErrorCode::Forbidden, "not this node's gateway");
    }
    if let Err(e) = take_pn_key(shared, &grant.pn_id, grant.epoch, grant.sealed_key).await {
        return Message::error(ErrorCode::BadRequest, e.to_string());
    }
    admit_members(shared, &grant.members).await;
    let membership = {
        let mut s = shared.state();
        s.pn.as_mut().map(|p| {
            // Updates of concurrent joins can arrive out of order: only the newest epoch's
            // member list is the current one (an older key is still kept, as the previous).
            if grant.epoch >= p.membership.epoch {
                p.membership.epoch = grant.epoch;
                p.members = grant
                    .members
                    .iter()
                    .map(|m| (m.peer_id, m.clone()))
                    .collect();
            }
            p.membership.clone()
        })
    };
    if let Some(m) = membership
        && let Err(e) = save_membership(shared, &m).await
    {
        warn!("membership not saved: {e}");
    }
    shared.after_pn_change();
    Message::Ack
}

/// Keys forwarded by the gateway from `cpns-auth` (5.6.6 push).
pub(crate) async fn on_key_forward(
    shared: &Arc<Shared>,
    peer: PeerId,
    grants: Vec<GroupKeyGrant>,
) -> Message {
    let from_gateway = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.membership.gateway == peer);
    if !from_gateway {
        return Message::error(
            ErrorCode::Forbidden,
            "keys are forwarded by this node's gateway only",
        );
    }
    let mut failed = 0;
    for g in &grants {
        if install_grant(shared, g).await.is_err() {
            failed += 1;
        }
    }
    if failed > 0 {
        return Message::error(
            ErrorCode::BadRequest,
            format!("{failed} grants did not open"),
        );
    }
    shared.after_pn_change();
    Message::Ack
}

/// Forgets the PN locally (after leaving, expulsion or release).
pub(crate) async fn forget_pn(shared: &Arc<Shared>) {
    let pn = shared.state().pn.take();
    if let Some(pn) = pn {
        let _ = shared.keyring.remove(&pn_group(&pn.membership.pn_id)).await;
    }
    if let Err(e) = clear_membership(shared).await {
        warn!("membership not cleared: {e}");
    }
    shared.pn_ready.send_replace(None);
    shared.after_pn_change();
}

/// After a restart: reconnect to the gateway and register again (steps 1-2), so that the
/// gateway's admission gate lets our heartbeats through.
pub(crate) async fn resume(shared: &Arc<Shared>) -> Result<(), OpError> {
    let (gateway, addrs) = {
        let s = shared.state();
        match &s.pn {
            Some(pn) => (pn.membership.gateway, pn.membership.gateway_addrs.clone()),
            None => return Ok(()),
        }
    };
    let pne_only = matches!(
        shared.state().mode_setting,
        ModeSetting::Auto | ModeSetting::Pne
    );
    if pne_only {
        let _ = shared.client.set_kad_mode(KadMode::Client).await;
    }
    let mut last = None;
    for a in addrs {
        let a = if cpns_overlay::peer_of(&a).is_some() {
            a
        } else {
            a.with(libp2p::multiaddr::Protocol::P2p(gateway))
        };
        match shared.client.dial(a).await {
            Ok(_) => {
                last = None;
                break;
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        return Err(OpError::Unavailable(format!("gateway unreachable: {e}")));
    }
    super::registration::register(shared, gateway).await?;
    // The member list is not kept across restarts: ask the gateway for the current one.
    let pn_id = shared.pn_id().unwrap_or_default();
    let answer = shared
        .client
        .request(
            gateway,
            Protocol::Cpns,
            Message::Pn(PnMessage::InventoryRequest { pn_id }),
        )
        .await?;
    if let Message::Pn(PnMessage::InventoryResponse(summary)) = answer {
        admit_members(shared, &summary.members).await;
        if let Some(p) = shared.state().pn.as_mut() {
            p.members = summary
                .members
                .iter()
                .map(|m| (m.peer_id, m.clone()))
                .collect();
        }
        shared.after_pn_change();
    }
    Ok(())
}

/// G.1 step 9 at the PNE: ask the gateway to de-register this node, then forget the PN.
pub(crate) async fn leave(shared: &Arc<Shared>) -> Result<(), OpError> {
    let me = shared.peer_id;
    let (pn_id, gateway) = {
        let s = shared.state();
        let pn =
            s.pn.as_ref()
                .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        (pn.membership.pn_id.clone(), pn.membership.gateway)
    };
    if gateway == me {
        return Err(OpError::Conflict(
            "this node is the PN's gateway: release the PN instead (`cpns pn release`)".into(),
        ));
    }
    shared.trace(G1, 9, &me, &gateway, "DisconnectionRequest", pn_id.clone());
    shared
        .client
        .request(
            gateway,
            Protocol::Cpns,
            Message::Pn(PnMessage::Leave { pn_id }),
        )
        .await?;
    forget_pn(shared).await;
    Ok(())
}

/// PN members talk to each other without registering pairwise: the gateway's member list
/// (admitted by `cpns-auth`) admits them, with the addresses the gateway knows.
pub(crate) async fn admit_members(shared: &Shared, members: &[cpns_overlay::MemberInfo]) {
    for m in members {
        if m.peer_id == shared.peer_id {
            continue;
        }
        for a in &m.listen_addrs {
            let _ = shared.client.add_address(m.peer_id, a.clone()).await;
        }
        let _ = shared.client.admit_peer(m.peer_id, true).await;
    }
}
