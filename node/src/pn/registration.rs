//! Entity Registration and Discovery (B.1 steps 1-2, spec 5.6.5): each side tells the other its
//! mode and presents its entity credential. A DHT neighbour is not a PN member: only a peer
//! whose credential verifies against the pinned CA, is unexpired and unrevoked gets further
//! (the overlay's admission gate refuses its other requests until then).

use std::sync::Arc;

use cpns_keys::CredentialError;
use cpns_overlay::{EntityRegistration, ErrorCode, Message, PnMessage, Protocol};
use libp2p::PeerId;
use tracing::debug;

use crate::error::OpError;
use crate::shared::{PeerEntry, Shared, now};
use crate::trace::flow::{B1, G1};

/// This node's registration: mode, credential, PN, gateway, addresses, revocation version.
pub(crate) async fn own_registration(shared: &Shared) -> Result<EntityRegistration, OpError> {
    let enrolment = shared.enrolment()?;
    let trust = shared.trust()?;
    let listen_addrs = shared.client.listen_addrs().await?;
    let (mode, pn_id, gateway, gateway_addrs) = {
        let s = shared.state();
        (
            s.mode,
            s.pn.as_ref().map(|p| p.membership.pn_id.clone()),
            s.pn.as_ref().map(|p| p.membership.gateway),
            s.pn.as_ref()
                .map(|p| p.membership.gateway_addrs.clone())
                .unwrap_or_default(),
        )
    };
    Ok(EntityRegistration {
        mode,
        credential: enrolment.credential.clone(),
        pn_id,
        gateway,
        listen_addrs,
        revocation_version: trust.revocations_version(),
        gateway_addrs,
    })
}

/// Checks a peer's registration and, if its credential is good, admits and records it.
/// The error is the code and text to answer the peer with.
pub(crate) async fn verify_and_admit(
    shared: &Arc<Shared>,
    peer: PeerId,
    reg: &EntityRegistration,
) -> Result<(), (ErrorCode, String)> {
    let trust = shared.trust().map_err(|e| {
        (
            ErrorCode::NotRegistered,
            format!("this node is not enrolled: {e}"),
        )
    })?;
    if let Err(e) = trust.check_credential(&reg.credential, &peer, now()) {
        let code = match e {
            CredentialError::Revoked { .. } => ErrorCode::Revoked,
            CredentialError::Expired { .. } => ErrorCode::Expired,
            _ => ErrorCode::NotRegistered,
        };
        shared.metrics.refused_registration(code.as_str());
        // A peer that was admitted before (and is now revoked) loses its admission.
        let _ = shared.client.admit_peer(peer, false).await;
        shared.state().peers.remove(&peer);
        return Err((code, format!("credential refused: {e}")));
    }
    shared.remember_peer(
        peer,
        PeerEntry {
            mode: reg.mode,
            caps: None,
            user: reg.credential.body.user.clone(),
            device: reg.credential.body.device.clone(),
            serial: reg.credential.serial(),
            pn_id: reg.pn_id.clone(),
            gateway: reg.gateway,
            listen_addrs: reg.listen_addrs.clone(),
            gateway_addrs: reg.gateway_addrs.clone(),
        },
    );
    for addr in &reg.listen_addrs {
        let _ = shared.client.add_address(peer, addr.clone()).await;
    }
    shared
        .client
        .admit_peer(peer, true)
        .await
        .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
    shared.metrics.accepted_registration();
    // The side with the newer revocation list shares it (DESIGN: revocation reaches everyone).
    if reg.revocation_version < trust.revocations_version() {
        let list = (*trust.revocations()).clone();
        let client = shared.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client
                .request(
                    peer,
                    Protocol::Cpns,
                    Message::Pn(PnMessage::Revocations(list)),
                )
                .await
            {
                debug!(%peer, "could not share the revocation list: {e}");
            }
        });
    }
    Ok(())
}

/// Steps 1-2 from the initiator's side: this node registers with `peer` (step 1), takes the
/// peer's registration in answer (step 2) and admits the peer if its credential is good.
pub(crate) async fn register(shared: &Arc<Shared>, peer: PeerId) -> Result<(), OpError> {
    let me = shared.peer_id;
    let reg = own_registration(shared).await?;
    shared.trace(B1, 1, &me, &peer, "EntityRegistrationAndDiscovery", "");
    let answer = shared
        .client
        .request(
            peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::EntityRegistration(reg)),
        )
        .await
        .map_err(|e| OpError::Refused(format!("step 1 refused: {e}")))?;
    let Message::Pn(PnMessage::EntityRegistration(theirs)) = answer else {
        return Err(OpError::Refused(format!(
            "step 2: unexpected {}",
            answer.name()
        )));
    };
    shared.trace(
        B1,
        2,
        &peer,
        &me,
        "EntityRegistrationAndDiscovery",
        theirs.mode.as_str(),
    );
    verify_and_admit(shared, peer, &theirs)
        .await
        .map_err(|(code, text)| OpError::Refused(format!("step 2 ({}): {text}", code.as_str())))?;
    shared.trace(
        G1,
        2,
        &me,
        &peer,
        "CpnsEntityDiscovery",
        theirs.mode.as_str(),
    );
    Ok(())
}
