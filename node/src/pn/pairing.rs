//! Pairing (B.1.1.1): what happens when two devices meet, by mDNS on the LAN or by
//! `cpns pair MULTIADDR`. The initiator drives steps 1-4; both sides then look at the same
//! facts and act:
//!
//! * one side is already a gateway with a PN and the other is in no PN: the other joins it
//!   (step 18 onwards);
//! * neither is a gateway and neither is in a PN: both run the election (step 5) on the
//!   capabilities exchanged at steps 3-4 and reach the same winner, which takes the gateway
//!   role (6), tells the other (7) and sets up its PN with `cpns-auth` (8-17); the other joins
//!   it once told (18);
//! * otherwise (both already in PNs) the registration is all there is.

use std::sync::Arc;

use cpns_overlay::{Capabilities, EntityRegistration, ErrorCode, Message, PnMessage, Protocol};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::election::{Candidate, elect};
use super::registration::{own_registration, verify_and_admit};
use super::{gateway, member};
use crate::error::OpError;
use crate::handlers::Then;
use crate::shared::{PeerEntry, Shared};
use crate::trace::flow::{B1, G1};

/// What a pairing led to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairOutcome {
    /// The peer paired with.
    pub peer_id: String,
    /// Its mode after pairing.
    pub peer_mode: String,
    /// This node's mode after pairing.
    pub mode: String,
    /// What happens next: `joining`, `gateway`, `waiting_for_gateway`, `registered`.
    pub result: String,
    /// The PN, once known.
    pub pn_id: Option<String>,
}

/// Pairs with the node at `addr` (B.1 steps 1-4, then 5-7 or 18 as the case may be). Returns
/// once the registration and capability exchange are done and the next steps have started;
/// [`crate::Handle::wait_for_pn`] waits for the PN.
pub(crate) async fn pair(shared: &Arc<Shared>, addr: Multiaddr) -> Result<PairOutcome, OpError> {
    shared.enrolment()?;
    let me = shared.peer_id;
    let peer = shared.client.dial(addr).await?;
    if peer == me {
        return Err(OpError::BadRequest("cannot pair with itself".into()));
    }

    // Steps 1-2.
    super::registration::register(shared, peer).await?;

    // Steps 3-4.
    let (my_caps, _) = shared.refresh_caps();
    shared.trace(B1, 3, &me, &peer, "DeviceCapabilitiesExchange", "");
    let answer = shared
        .client
        .request(
            peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::CapabilitiesExchange(my_caps.clone())),
        )
        .await
        .map_err(|e| OpError::Refused(format!("step 3 refused: {e}")))?;
    let Message::Pn(PnMessage::CapabilitiesExchange(their_caps)) = answer else {
        return Err(OpError::Refused(format!(
            "step 4: unexpected {}",
            answer.name()
        )));
    };
    shared.trace(
        B1,
        4,
        &peer,
        &me,
        "DeviceCapabilitiesExchange",
        their_caps.mode.as_str(),
    );
    shared.set_peer_caps(&peer, their_caps.clone());

    let entry = shared
        .peer_entry(&peer)
        .ok_or_else(|| OpError::Internal("the peer's registration was not kept".into()))?;
    let result = decide(shared, peer, &entry, &my_caps, &their_caps).await;
    let mode = shared.state().mode;
    Ok(PairOutcome {
        peer_id: peer.to_string(),
        peer_mode: their_caps.mode.to_string(),
        mode: mode.to_string(),
        result: result.to_string(),
        pn_id: shared.pn_id(),
    })
}

/// After steps 1-4, on either side: join, elect, or nothing. Returns what was started.
async fn decide(
    shared: &Arc<Shared>,
    peer: PeerId,
    theirs: &PeerEntry,
    my_caps: &Capabilities,
    their_caps: &Capabilities,
) -> &'static str {
    let (my_mode, in_pn) = {
        let s = shared.state();
        (s.mode, s.pn.is_some())
    };
    if in_pn {
        return if my_mode.is_gateway() {
            "gateway"
        } else {
            "registered"
        };
    }
    if theirs.mode.is_gateway() || their_caps.mode.is_gateway() {
        spawn_join(shared, peer, theirs.listen_addrs.clone());
        return "joining";
    }
    if theirs.pn_id.is_some() {
        // A PNE of an existing PN: join that PN's gateway.
        if let Some(gw) = theirs.gateway
            && !theirs.gateway_addrs.is_empty()
        {
            spawn_join(shared, gw, theirs.gateway_addrs.clone());
            return "joining";
        }
        return "registered";
    }
    if my_mode.is_gateway() {
        // A configured gateway without its PN yet: it sets it up; the peer joins when told.
        return "gateway";
    }
    // Step 5: the election, on the capabilities of steps 3-4.
    let me = shared.peer_id;
    let winner = elect(
        Candidate {
            peer: &me,
            caps: my_caps,
        },
        Candidate {
            peer: &peer,
            caps: their_caps,
        },
    )
    .copied();
    match winner {
        None => {
            shared.trace(
                B1,
                5,
                &me,
                &me,
                "CheckCapabilitiesForGatewaySuitability",
                "no device may be the gateway",
            );
            "no_gateway"
        }
        Some(w) if w == me => {
            shared.trace(
                B1,
                5,
                &me,
                &me,
                "CheckCapabilitiesForGatewaySuitability",
                "this device wins",
            );
            become_gateway_and_announce(shared, peer).await;
            "gateway"
        }
        Some(_) => {
            shared.trace(
                B1,
                5,
                &me,
                &me,
                "CheckCapabilitiesForGatewaySuitability",
                "the peer wins",
            );
            "waiting_for_gateway"
        }
    }
}

/// Steps 6-7, then 8-17 in the background.
async fn become_gateway_and_announce(shared: &Arc<Shared>, peer: PeerId) {
    let me = shared.peer_id;
    gateway::take_gateway_role(shared).await;
    shared.trace(B1, 6, &me, &me, "TakeGatewayRole", "");
    let (caps, _) = shared.refresh_caps();
    shared.trace(
        B1,
        7,
        &me,
        &peer,
        "DeviceCapabilitiesUpdate",
        caps.mode.as_str(),
    );
    if let Err(e) = shared
        .client
        .request(
            peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::CapabilitiesUpdate(caps)),
        )
        .await
    {
        warn!(%peer, "step 7 failed: {e}");
    }
    let s = shared.clone();
    tokio::spawn(async move {
        if let Err(e) = gateway::establish(&s).await {
            warn!("setting up the PN with cpns-auth failed: {e}");
        }
    });
}

fn spawn_join(shared: &Arc<Shared>, gateway: PeerId, addrs: Vec<Multiaddr>) {
    let s = shared.clone();
    tokio::spawn(async move {
        match member::join(&s, gateway, addrs).await {
            Ok(pn) => info!(%gateway, pn, "joined the PN"),
            Err(e) => warn!(%gateway, "joining the PN failed: {e}"),
        }
    });
}

/// The responder's side of step 1 (answered by step 2).
pub(crate) async fn on_registration(
    shared: &Arc<Shared>,
    peer: PeerId,
    reg: EntityRegistration,
) -> Message {
    let me = shared.peer_id;
    shared.trace(
        B1,
        1,
        &peer,
        &me,
        "EntityRegistrationAndDiscovery",
        reg.mode.as_str(),
    );
    if let Err((code, text)) = verify_and_admit(shared, peer, &reg).await {
        shared.trace(
            B1,
            2,
            &me,
            &peer,
            "EntityRegistrationAndDiscovery",
            format!("refused: {}", code.as_str()),
        );
        return Message::error(code, text);
    }
    match own_registration(shared).await {
        Ok(mine) => {
            shared.trace(
                B1,
                2,
                &me,
                &peer,
                "EntityRegistrationAndDiscovery",
                mine.mode.as_str(),
            );
            shared.trace(G1, 2, &peer, &me, "CpnsEntityDiscovery", reg.mode.as_str());
            Message::Pn(PnMessage::EntityRegistration(mine))
        }
        Err(e) => Message::error(ErrorCode::NotRegistered, e.to_string()),
    }
}

/// The responder's side of step 3 (answered by step 4); then the same decision as the
/// initiator's, after the answer is sent.
pub(crate) fn on_capabilities_exchange(
    shared: &Arc<Shared>,
    peer: PeerId,
    their_caps: Capabilities,
) -> (Message, Option<Then>) {
    let me = shared.peer_id;
    shared.trace(
        B1,
        3,
        &peer,
        &me,
        "DeviceCapabilitiesExchange",
        their_caps.mode.as_str(),
    );
    shared.set_peer_caps(&peer, their_caps.clone());
    let (my_caps, _) = shared.refresh_caps();
    shared.trace(
        B1,
        4,
        &me,
        &peer,
        "DeviceCapabilitiesExchange",
        my_caps.mode.as_str(),
    );
    let answer = Message::Pn(PnMessage::CapabilitiesExchange(my_caps.clone()));
    let registration = shared.peer_entry(&peer);
    let s = shared.clone();
    let then: Then = Box::pin(async move {
        if let Some(theirs) = registration {
            decide(&s, peer, &theirs, &my_caps, &their_caps).await;
        }
    });
    (answer, Some(then))
}

/// Step 7 (or any later capabilities update) from a peer: if it became a gateway and this node
/// is in no PN, join it.
pub(crate) fn on_capabilities_update(
    shared: &Arc<Shared>,
    peer: PeerId,
    caps: Capabilities,
) -> (Message, Option<Then>) {
    let me = shared.peer_id;
    let became_gateway = caps.mode.is_gateway()
        && shared.peer_entry(&peer).is_some_and(|p| {
            !p.mode.is_gateway() || p.caps.as_ref().is_none_or(|c| !c.mode.is_gateway())
        });
    let pairing_step = became_gateway && shared.state().pn.is_none();
    if pairing_step {
        shared.trace(
            B1,
            7,
            &peer,
            &me,
            "DeviceCapabilitiesUpdate",
            caps.mode.as_str(),
        );
    }
    shared.set_peer_caps(&peer, caps.clone());
    shared.set_peer_mode(&peer, caps.mode);
    let then: Option<Then> = if pairing_step {
        let s = shared.clone();
        let addrs = shared
            .peer_entry(&peer)
            .map(|p| p.listen_addrs)
            .unwrap_or_default();
        Some(Box::pin(async move {
            spawn_join(&s, peer, addrs);
        }))
    } else {
        None
    };
    (Message::Ack, then)
}
