//! Entry points for the fuzz targets (`fuzz/`) and their stable regression tests: the node's
//! decoders of untrusted bytes, reachable without a running node. Each takes any input and
//! must never panic.

use libp2p::{Multiaddr, PeerId};

pub use crate::delivery::{decode_stream, encode_stream};

/// Parses a pairing code (or a multiaddr) the way `cpns pair` does, into the addresses to
/// dial.
pub fn parse_pairing_target(text: &str) -> Result<Vec<Multiaddr>, String> {
    crate::pn::code::resolve(text).map_err(|e| e.to_string())
}

/// A pairing code for `peer` at `addrs` (seed corpora).
pub fn pairing_code(peer: PeerId, addrs: &[Multiaddr]) -> Result<String, String> {
    crate::pn::code::encode(peer, addrs).map_err(|e| e.to_string())
}
