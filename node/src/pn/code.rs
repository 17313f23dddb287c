//! Pairing codes: a node's PeerId and addresses in one line (`cpnspair1-…`, lowercase
//! base32 of their encoding), to pair "from a code" (5.6.5) — shown by `cpns pairing-code`,
//! as text or a terminal QR code, and accepted by `cpns pair` wherever an address is.

use cpns_overlay::{Multiaddr, codec};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use crate::error::OpError;

/// The text in front of every pairing code.
pub(crate) const PREFIX: &str = "cpnspair1-";
/// Longest pairing code accepted.
const MAX_TEXT: usize = 4096;
/// Most addresses put in a code.
const MAX_ADDRS: usize = 8;

#[derive(Serialize, Deserialize)]
struct PairingCode {
    peer: PeerId,
    addrs: Vec<Multiaddr>,
}

/// The pairing code of a node.
pub(crate) fn encode(peer: PeerId, addrs: &[Multiaddr]) -> Result<String, OpError> {
    let code = PairingCode {
        peer,
        addrs: addrs.iter().take(MAX_ADDRS).cloned().collect(),
    };
    let bytes = codec::encode(&code).map_err(|e| OpError::Internal(e.to_string()))?;
    Ok(format!(
        "{PREFIX}{}",
        data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase()
    ))
}

/// What to dial for `target`: a multiaddr with `/p2p/PEERID`, or a pairing code (its first
/// address, with the PeerId).
pub(crate) fn resolve(target: &str) -> Result<Vec<Multiaddr>, OpError> {
    let target = target.trim();
    if target.len() > MAX_TEXT {
        return Err(OpError::BadRequest("pairing code too long".into()));
    }
    if let Some(body) = target.to_ascii_lowercase().strip_prefix(PREFIX) {
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|e| OpError::BadRequest(format!("not a pairing code: {e}")))?;
        let code: PairingCode = codec::decode(&bytes, MAX_TEXT)
            .map_err(|e| OpError::BadRequest(format!("not a pairing code: {e}")))?;
        if code.addrs.is_empty() {
            return Err(OpError::BadRequest(
                "the pairing code names no address".into(),
            ));
        }
        return Ok(code
            .addrs
            .into_iter()
            .map(|a| {
                if cpns_overlay::peer_of(&a).is_some() {
                    a
                } else {
                    a.with(libp2p::multiaddr::Protocol::P2p(code.peer))
                }
            })
            .collect());
    }
    let addr: Multiaddr = target
        .parse()
        .map_err(|e| OpError::BadRequest(format!("neither an address nor a pairing code: {e}")))?;
    if cpns_overlay::peer_of(&addr).is_none() {
        return Err(OpError::BadRequest(format!("{addr} lacks /p2p/PEERID")));
    }
    Ok(vec![addr])
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn codes_round_trip_and_garbage_is_refused() {
        let peer = PeerId::random();
        let addrs: Vec<Multiaddr> = vec!["/ip4/192.168.1.7/tcp/7400".parse().unwrap()];
        let code = encode(peer, &addrs).unwrap();
        assert!(code.starts_with(PREFIX));
        let back = resolve(&code.to_ascii_uppercase()).unwrap();
        assert_eq!(
            back[0],
            addrs[0]
                .clone()
                .with(libp2p::multiaddr::Protocol::P2p(peer))
        );
        assert!(resolve("cpnspair1-zzzz").is_err());
        assert!(resolve("cpnspair1-").is_err());
        assert!(
            resolve("/ip4/1.2.3.4/tcp/1").is_err(),
            "an address needs /p2p/"
        );
        let plain = format!("/ip4/1.2.3.4/tcp/1/p2p/{peer}");
        assert_eq!(resolve(&plain).unwrap().len(), 1);
    }
}
