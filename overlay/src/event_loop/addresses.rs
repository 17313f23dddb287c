//! Where peers listen, as far as this node passes it on to the swarm and the DHT routing table.
//!
//! Every address handed to Kademlia is inserted into a list that kad scans on each insert and
//! copies into an event, so an unbounded list (a registration's `listen_addrs`, an identify
//! message) would cost quadratic time and unbounded memory. This book keeps at most
//! [`MAX_ADDRS_PER_PEER`] addresses per peer and at most `max_peers` peers; the event loop
//! passes an address on only when the book takes it, and takes it out of the routing table
//! when the book drops it, so the work per address is constant.

use std::collections::{HashMap, VecDeque};

use libp2p::{Multiaddr, PeerId};

/// Most addresses remembered (and given to the swarm and the routing table) per peer.
pub(crate) const MAX_ADDRS_PER_PEER: usize = 8;

/// What [`AddressBook::replace`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Changes {
    /// Addresses new to the book, to pass on.
    pub(super) added: Vec<Multiaddr>,
    /// Addresses the book forgot, to take out of the routing table.
    pub(super) removed: Vec<Multiaddr>,
}

/// Bounded addresses per peer (see the module docs).
pub(super) struct AddressBook {
    peers: HashMap<PeerId, Vec<Multiaddr>>,
    /// Peers in the order they were first seen; the oldest is forgotten when the book is full.
    order: VecDeque<PeerId>,
    max_peers: usize,
}

impl AddressBook {
    pub(super) fn new(max_peers: usize) -> Self {
        Self {
            peers: HashMap::new(),
            order: VecDeque::new(),
            max_peers: max_peers.max(1),
        }
    }

    fn entry(&mut self, peer: PeerId) -> &mut Vec<Multiaddr> {
        if !self.peers.contains_key(&peer) {
            while self.peers.len() >= self.max_peers {
                let Some(old) = self.order.pop_front() else {
                    break;
                };
                self.peers.remove(&old);
            }
            self.order.push_back(peer);
        }
        self.peers.entry(peer).or_default()
    }

    /// Adds one address someone told us of (a registration, a member list). True if it is
    /// new and the peer had room for it; a full peer keeps the addresses it has (the peer's
    /// own identify replaces them, see [`AddressBook::replace`]).
    pub(super) fn add(&mut self, peer: PeerId, addr: &Multiaddr) -> bool {
        let known = self.entry(peer);
        if known.len() >= MAX_ADDRS_PER_PEER || known.contains(addr) {
            return false;
        }
        known.push(addr.clone());
        true
    }

    /// Sets a peer's addresses to the first [`MAX_ADDRS_PER_PEER`] of `addrs` (what the peer
    /// itself reports through identify); at most that many are looked at.
    pub(super) fn replace(&mut self, peer: PeerId, addrs: &[Multiaddr]) -> Changes {
        let mut fresh: Vec<Multiaddr> = Vec::with_capacity(MAX_ADDRS_PER_PEER);
        for a in addrs.iter().take(MAX_ADDRS_PER_PEER) {
            if !fresh.contains(a) {
                fresh.push(a.clone());
            }
        }
        let known = self.entry(peer);
        let changes = Changes {
            added: fresh
                .iter()
                .filter(|a| !known.contains(a))
                .cloned()
                .collect(),
            removed: known
                .iter()
                .filter(|a| !fresh.contains(a))
                .cloned()
                .collect(),
        };
        *known = fresh;
        changes
    }

    /// The addresses remembered for `peer`.
    pub(super) fn get(&self, peer: &PeerId) -> &[Multiaddr] {
        self.peers.get(peer).map(Vec::as_slice).unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn addr(port: u16) -> Multiaddr {
        format!("/ip4/127.0.0.1/tcp/{port}").parse().unwrap()
    }

    #[test]
    fn bounded_per_peer_and_in_peers() {
        let mut book = AddressBook::new(2);
        let p = PeerId::random();
        for port in 0..1000 {
            book.add(p, &addr(port));
        }
        assert_eq!(book.get(&p).len(), MAX_ADDRS_PER_PEER);
        assert!(!book.add(p, &addr(1)), "known address");
        // Identify replaces, looking at the first few only.
        let reported: Vec<_> = (5000..60_000).map(addr).collect();
        let c = book.replace(p, &reported);
        assert_eq!(c.added.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(c.removed.len(), MAX_ADDRS_PER_PEER);
        assert_eq!(book.get(&p), &reported[..MAX_ADDRS_PER_PEER]);
        let c = book.replace(p, &reported[1..3]);
        assert!(c.added.is_empty() && c.removed.len() == MAX_ADDRS_PER_PEER - 2);
        // At most two peers: the oldest is forgotten.
        let (q, r) = (PeerId::random(), PeerId::random());
        assert!(book.add(q, &addr(1)) && book.add(r, &addr(1)));
        assert!(book.get(&p).is_empty() && book.get(&r).len() == 1);
    }
}
