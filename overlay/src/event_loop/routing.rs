//! Who enters the Kademlia routing table.
//!
//! Where provider announcements need a credential ([`crate::RecordValidator::wants_credentials`]),
//! so does a place in the routing table. A peer in it is handed to every lookup that passes
//! near its key and to every peer asking this node for the closest peers, and a lookup ends
//! once the closest peers it heard of have answered. Never-enrolled DHT servers (PeerIds cost
//! nothing) that took those places answered with nothing, or with themselves as the only
//! providers of a keyword, and honest discovery failed for everyone (issue 14's attack soak:
//! 18 of 100 honest services found). So kad runs with manual inserts
//! (`BucketInserts::Manual`, set in [`crate::behaviour`]) and this module inserts a peer only
//! once three things hold: it is connected, identify says it serves the DHT, and the
//! credential exchange verified its credential and that credential has not ended. It comes
//! out again when the verdict is that it has none, when its credential ends
//! (checked on every purge tick), or when the application refuses it as revoked.
//! Bootstrap peers from the configuration are put in before they are connected (somebody
//! has to be asked first) and are taken out the same way once their verdict is in.
//! Without a validator that wants credentials, kad inserts every connected DHT server itself,
//! as before.

use libp2p::{Multiaddr, PeerId};
use tracing::debug;

use super::{CredentialState, EventLoop, PeerState, unix_now};

impl EventLoop {
    /// Whether this node chooses routing-table entries itself (see the module docs).
    pub(super) fn gates_routing(&self) -> bool {
        self.config.validator.wants_credentials()
    }

    /// Whether a connected peer may be in the routing table (always, without the gate).
    pub(super) fn may_route(&self, state: &PeerState) -> bool {
        !self.gates_routing()
            || state
                .credential
                .verified()
                .is_some_and(|c| c.expires > unix_now())
    }

    /// Puts `peer` in the routing table with every address known of it, if it may be there
    /// now: connected, a DHT server, with a live verified credential.
    pub(super) fn route(&mut self, peer: PeerId) {
        if !self.gates_routing() {
            return;
        }
        let Some(state) = self.peers.get(&peer) else {
            return;
        };
        if !state.dht_server || !self.may_route(state) {
            return;
        }
        let mut addrs: Vec<Multiaddr> = self.addresses.get(&peer).to_vec();
        if let Some(a) = &state.kad_addr
            && !addrs.contains(a)
        {
            addrs.push(a.clone());
        }
        let kad = &mut self.swarm.behaviour_mut().kad;
        for a in addrs {
            kad.add_address(&peer, a);
        }
    }

    /// Takes `peer` out of the routing table (a no-op if it is not there).
    pub(super) fn unroute(&mut self, peer: PeerId, why: &'static str) {
        if self.swarm.behaviour_mut().kad.remove_peer(&peer).is_some() {
            debug!(%peer, why, "peer taken out of the routing table");
        }
    }

    /// Kad met a DHT server on a connection (`RoutablePeer`, with the address it dialed):
    /// remembered, and the peer routed if it may be.
    pub(super) fn kad_routable(&mut self, peer: PeerId, address: Multiaddr) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.kad_addr = Some(address);
        }
        self.route(peer);
    }

    /// Takes out peers whose verified credential has ended since; they stay connected, and
    /// come back when they present a renewed one.
    pub(super) fn unroute_expired(&mut self) {
        if !self.gates_routing() {
            return;
        }
        let now = unix_now();
        let ended: Vec<PeerId> = self
            .peers
            .iter_mut()
            .filter_map(|(peer, s)| match s.credential.verified() {
                Some(c) if c.expires <= now => {
                    s.credential = CredentialState::None;
                    Some(*peer)
                }
                _ => None,
            })
            .collect();
        for peer in ended {
            self.unroute(peer, "credential ended");
        }
    }

    /// The application refused `peer` as revoked: it loses its verified credential and its
    /// place in the routing table until it presents a valid one again.
    pub(super) fn revoked(&mut self, peer: PeerId) {
        if let Some(state) = self.peers.get_mut(&peer) {
            state.credential = CredentialState::None;
        }
        if self.gates_routing() {
            self.unroute(peer, "revoked");
        }
    }
}
