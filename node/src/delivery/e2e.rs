//! Content sealed end to end between two entities, for streams that a third one relays (a
//! push forwarded through the gateway, which holds the PN key) or that go to a peer outside
//! the sender's PN: the sender picks a fresh stream key, seals it to the receiver's identity
//! key ([`cpns_keys::seal_to`]) and signs the opening with its own identity key. Only the
//! receiver opens the key; only the sender could have signed it; the chunks are then sealed
//! under that key exactly like group content (stream id, index, last flag and sender bound).

use cpns_keys::{GroupId, GroupKey, Identity, PublicKey, SealedBox, Signature, seal_to};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::OpError;

/// The group id of a stream key (never a real group's: those are `pn-…`/`sg-…`).
const E2E_GROUP: &str = "e2e";

/// What the sender puts in the opening of an end-to-end sealed stream.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct PeerSealed {
    /// The stream key, sealed to the receiver.
    pub(super) key_box: SealedBox,
    /// The sender's signature over [`transcript`].
    pub(super) signature: Signature,
}

fn key_aad(from: &PeerId, to: &PeerId, stream_id: u64) -> Vec<u8> {
    let mut aad = b"cpns e2e key v1".to_vec();
    aad.extend_from_slice(&from.to_bytes());
    aad.extend_from_slice(&to.to_bytes());
    aad.extend_from_slice(&stream_id.to_be_bytes());
    aad
}

/// The signed bytes: who to whom, which stream, how long, and the sealed key itself.
fn transcript(
    from: &PeerId,
    to: &PeerId,
    stream_id: u64,
    length: u64,
    key_box: &SealedBox,
) -> Vec<u8> {
    let mut t = b"cpns e2e opening v1".to_vec();
    for p in [from, to] {
        let b = p.to_bytes();
        t.extend_from_slice(&(b.len() as u16).to_be_bytes());
        t.extend_from_slice(&b);
    }
    t.extend_from_slice(&stream_id.to_be_bytes());
    t.extend_from_slice(&length.to_be_bytes());
    t.extend_from_slice(&key_box.ephemeral);
    t.extend_from_slice(&key_box.nonce);
    t.extend_from_slice(&key_box.ciphertext);
    t
}

/// A fresh stream key for `to`, and what tells `to` about it.
pub(super) fn seal_for(
    identity: &Identity,
    to: &PeerId,
    stream_id: u64,
    length: u64,
) -> Result<(GroupKey, PeerSealed), OpError> {
    let from = identity.peer_id();
    let recipient = PublicKey::from_peer_id(to)
        .map_err(|e| OpError::BadRequest(format!("cannot seal to {to}: {e}")))?;
    let key = GroupKey::generate(GroupId(E2E_GROUP.into()), 0);
    let key_box = seal_to(
        &recipient,
        &key_aad(&from, to, stream_id),
        &key.encode_secret(),
    );
    let signature = identity.sign(&transcript(&from, to, stream_id, length, &key_box));
    Ok((key, PeerSealed { key_box, signature }))
}

/// The stream key, if `sealed` was signed by `from` for this node and this stream.
pub(super) fn open(
    identity: &Identity,
    from: &PeerId,
    stream_id: u64,
    length: u64,
    sealed: &PeerSealed,
) -> Result<GroupKey, OpError> {
    let me = identity.peer_id();
    let refused = |what: String| OpError::Refused(format!("end-to-end opening: {what}"));
    PublicKey::from_peer_id(from)
        .map_err(|e| refused(e.to_string()))?
        .verify(
            &transcript(from, &me, stream_id, length, &sealed.key_box),
            &sealed.signature,
        )
        .map_err(|_| refused(format!("not signed by {from}")))?;
    let secret = identity
        .open_sealed(&key_aad(from, &me, stream_id), &sealed.key_box)
        .map_err(|e| refused(format!("the key is not for this node: {e}")))?;
    let key = GroupKey::decode_secret(&secret).map_err(|e| refused(e.to_string()))?;
    if key.group().0 != E2E_GROUP {
        return Err(refused("not a stream key".into()));
    }
    Ok(key)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn only_the_receiver_opens_and_only_the_sender_signs() {
        let (alice, bob, gw) = (
            Identity::generate(),
            Identity::generate(),
            Identity::generate(),
        );
        let (key, sealed) = seal_for(&alice, &bob.peer_id(), 7, 100).unwrap();
        let opened = open(&bob, &alice.peer_id(), 7, 100, &sealed).unwrap();
        assert_eq!(opened.key_bytes(), key.key_bytes());
        // The relaying gateway cannot open the key.
        assert!(open(&gw, &alice.peer_id(), 7, 100, &sealed).is_err());
        // Nor can it claim another sender, stream or length.
        assert!(open(&bob, &gw.peer_id(), 7, 100, &sealed).is_err());
        assert!(open(&bob, &alice.peer_id(), 8, 100, &sealed).is_err());
        assert!(open(&bob, &alice.peer_id(), 7, 101, &sealed).is_err());
        // A key box the gateway made for bob does not pass as alice's.
        let (_, forged) = seal_for(&gw, &bob.peer_id(), 7, 100).unwrap();
        let spliced = PeerSealed {
            key_box: forged.key_box,
            signature: sealed.signature,
        };
        assert!(open(&bob, &alice.peer_id(), 7, 100, &spliced).is_err());
    }
}
