//! The exact bytes that proofs sign or MAC, shared by nodes and `cpns-auth`.
//!
//! Each transcript starts with its own domain tag, so that a signature or MAC made for one
//! purpose can never be replayed for another, and binds every party it is about.

use cpns_keys::GroupId;
use libp2p::PeerId;

use crate::codec;
use crate::protocol::{NodeMode, UsageRecord};

fn tagged(tag: &str, body: Result<Vec<u8>, codec::CodecError>) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(tag.as_bytes());
    out.push(0);
    // Encoding these plain tuples cannot fail: no value is near the codec's limit.
    out.extend_from_slice(&body.unwrap_or_default());
    out
}

/// B.1 step 10: what a node proves with its EUKey and identity key when it answers the
/// server's challenge: the nonce, both parties, the credential serial and the requested mode.
pub fn auth_response(
    nonce: &[u8; 32],
    server: &PeerId,
    entity: &PeerId,
    serial: u64,
    mode: NodeMode,
) -> Vec<u8> {
    tagged(
        "cpns auth-response v1",
        codec::encode(&(nonce, server.to_bytes(), entity.to_bytes(), serial, mode)),
    )
}

/// B.1 step 18/19: what a PNE proves when it asks to join a PN through a gateway.
pub fn membership_request(
    pn_id: &str,
    gateway: &PeerId,
    pne: &PeerId,
    time: u64,
    nonce: &[u8; 16],
) -> Vec<u8> {
    tagged(
        "cpns membership-request v1",
        codec::encode(&(pn_id, gateway.to_bytes(), pne.to_bytes(), time, nonce)),
    )
}

/// The AAD of a group (or PN) key sealed under a member's EUKey: the group, the epoch and the
/// member, so that a grant for one member, group or epoch never opens as another.
pub fn group_key_aad(group: &GroupId, epoch: u64, member: &PeerId) -> Vec<u8> {
    tagged(
        "cpns group-key-grant v1",
        codec::encode(&(&group.0, epoch, member.to_bytes())),
    )
}

/// What an entity signs in a usage report.
pub fn usage_report(entity: &PeerId, sequence: u64, records: &[UsageRecord]) -> Vec<u8> {
    tagged(
        "cpns usage-report v1",
        codec::encode(&(entity.to_bytes(), sequence, records)),
    )
}

/// The AAD of the EUKey sealed to a node at enrolment.
pub fn enrol_aad(entity: &PeerId) -> Vec<u8> {
    tagged("cpns enrol v1", codec::encode(&entity.to_bytes()))
}
