//! The NAT side of the event loop: reachability from AutoNAT and UPnP, reservations on relays
//! while this node is not reachable, the relay role switched with the node's Kademlia mode
//! and reachability, hole-punch outcomes, and the retirement of relayed connections once a
//! direct one to the same peer exists.
//!
//! Every map here is bounded: reservations by [`crate::NatConfig::max_relays`], relay
//! candidates and back-offs by [`MAX_RELAY_CANDIDATES`], per-peer entries by the connected
//! peers (cleared with them).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::ConnectionId;
use libp2p::{Multiaddr, PeerId, autonat, dcutr, kad, relay, upnp};
use tracing::{debug, info, warn};

use super::EventLoop;
use crate::config::RelayServerMode;
use crate::nat::{NatStatus, Reachability, is_relayed};

/// Most relay candidates (connected peers offering relaying) and back-offs remembered.
const MAX_RELAY_CANDIDATES: usize = 64;
/// First wait before a relay that failed is tried again; doubles up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(10);
const MAX_BACKOFF: Duration = Duration::from_secs(600);
/// How long a relayed connection waits beside a direct one for requests still in flight on
/// either side, after [`crate::NatConfig::retire_relayed_after`], before it is closed anyway.
const RETIRE_AT_MOST: Duration = Duration::from_secs(20);

struct Reservation {
    relay: PeerId,
    accepted: bool,
}

/// NAT state of one event loop.
#[derive(Default)]
pub(super) struct NatState {
    reservations: HashMap<ListenerId, Reservation>,
    /// Relays that failed: not tried before the instant; the next wait.
    backoff: HashMap<PeerId, (Instant, Duration)>,
    /// Connected peers that offer relaying (identify lists the hop protocol).
    relay_peers: HashSet<PeerId>,
    /// Requests in flight per peer, both directions (a relayed connection is closed only
    /// when none is left, or after [`RETIRE_AT_MOST`]).
    in_flight: HashMap<PeerId, u32>,
    /// Peers with a direct and a relayed connection at once, since when.
    mixed_since: HashMap<PeerId, Instant>,
    probes_failed: u64,
    punched: u64,
    punch_failed: u64,
    upnp: &'static str,
    serving: bool,
    /// Reservations and circuits this node serves as a relay.
    served_reservations: u64,
    served_circuits: u64,
    /// Relayed connections open now.
    relayed_conns: usize,
}

impl EventLoop {
    /// The current reachability.
    fn reachability(&self) -> Reachability {
        if self.swarm.external_addresses().any(|a| !is_relayed(a)) {
            Reachability::Public
        } else if self.nat.probes_failed > 0 || self.nat.upnp == "gateway not public" {
            Reachability::Private
        } else {
            Reachability::Unknown
        }
    }

    pub(super) fn nat_status(&self) -> NatStatus {
        let external: Vec<Multiaddr> = self.swarm.external_addresses().cloned().collect();
        NatStatus {
            reachability: self.reachability(),
            public_addrs: external
                .iter()
                .filter(|a| !is_relayed(a))
                .cloned()
                .collect(),
            relayed_addrs: self
                .listen_addrs
                .iter()
                .filter(|a| is_relayed(a))
                .cloned()
                .collect(),
            relays: self
                .nat
                .reservations
                .values()
                .filter(|r| r.accepted)
                .map(|r| r.relay)
                .collect(),
            relay_server: self.nat.serving,
            upnp: if self.config.nat.upnp {
                if self.nat.upnp.is_empty() {
                    "searching"
                } else {
                    self.nat.upnp
                }
            } else {
                "off"
            }
            .to_string(),
            hole_punches_succeeded: self.nat.punched,
            hole_punches_failed: self.nat.punch_failed,
            probes_failed: self.nat.probes_failed,
            relay_reservations_served: self.nat.served_reservations,
            relay_circuits_served: self.nat.served_circuits,
        }
    }

    /// Turns the relay role on or off as the mode, the reachability and the configuration
    /// allow.
    pub(super) fn update_relay_role(&mut self) {
        let reachable = self.reachability() == Reachability::Public;
        let serve = reachable
            && match self.config.nat.relay_server {
                RelayServerMode::Off => false,
                RelayServerMode::Auto => self.swarm.behaviour().kad.mode() == kad::Mode::Server,
                RelayServerMode::Always => true,
            };
        if serve == self.nat.serving {
            return;
        }
        if let Some(relay) = self.swarm.behaviour_mut().relay.as_mut() {
            relay.set_status(Some(if serve {
                relay::Status::Enable
            } else {
                relay::Status::Disable
            }));
            self.nat.serving = serve;
            info!(serving = serve, "relay role changed");
        }
    }

    /// Whether the periodic NAT work has anything to do: relayed connections to look after,
    /// or reservations wanted (so that an idle node on loopback never wakes for it).
    pub(super) fn nat_work_pending(&self) -> bool {
        let nat = &self.config.nat;
        self.nat.relayed_conns > 0
            || ((!nat.relays.is_empty() || (nat.auto_relay && !self.nat.relay_peers.is_empty()))
                && self.nat.reservations.len() < nat.max_relays
                && self.reachability() != Reachability::Public)
    }

    /// A connection opened or closed.
    pub(super) fn nat_connection(&mut self, remote: &Multiaddr, opened: bool) {
        if is_relayed(remote) {
            if opened {
                self.nat.relayed_conns += 1;
            } else {
                self.nat.relayed_conns = self.nat.relayed_conns.saturating_sub(1);
            }
        }
    }

    /// A request to or from `peer` started.
    pub(super) fn request_started(&mut self, peer: PeerId) {
        *self.nat.in_flight.entry(peer).or_default() += 1;
    }

    /// A request to or from `peer` ended (answered, failed or dropped).
    pub(super) fn request_ended(&mut self, peer: PeerId) {
        if let Some(n) = self.nat.in_flight.get_mut(&peer) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.nat.in_flight.remove(&peer);
            }
        }
    }

    /// The last connection to `peer` closed.
    pub(super) fn nat_peer_gone(&mut self, peer: &PeerId) {
        self.nat.relay_peers.remove(peer);
        self.nat.mixed_since.remove(peer);
        self.nat.in_flight.remove(peer);
    }

    /// Identify told which protocols `peer` runs.
    pub(super) fn nat_identified(&mut self, peer: PeerId, protocols: &[libp2p::StreamProtocol]) {
        let offers = protocols.contains(&relay::HOP_PROTOCOL_NAME);
        if offers && self.nat.relay_peers.len() < MAX_RELAY_CANDIDATES {
            self.nat.relay_peers.insert(peer);
        } else if !offers {
            self.nat.relay_peers.remove(&peer);
        }
    }

    pub(super) fn nat_external_changed(&mut self) {
        self.update_relay_role();
        if self.reachability() == Reachability::Public && !self.nat.reservations.is_empty() {
            // Reachable directly: give the relay its slots back.
            for id in self.nat.reservations.keys().copied().collect::<Vec<_>>() {
                self.swarm.remove_listener(id);
            }
            info!("publicly reachable: relay reservations released");
        }
    }

    /// A listener closed; if it was a reservation, the relay is tried again after a while.
    pub(super) fn nat_listener_closed(&mut self, id: ListenerId, reason: &str) {
        let Some(r) = self.nat.reservations.remove(&id) else {
            return;
        };
        debug!(relay = %r.relay, "relay reservation ended: {reason}");
        self.back_off(r.relay);
    }

    fn back_off(&mut self, relay: PeerId) {
        let next = self
            .nat
            .backoff
            .get(&relay)
            .map(|(_, d)| (*d * 2).min(MAX_BACKOFF))
            .unwrap_or(FIRST_BACKOFF);
        if self.nat.backoff.len() >= MAX_RELAY_CANDIDATES && !self.nat.backoff.contains_key(&relay)
        {
            let now = Instant::now();
            self.nat.backoff.retain(|_, (until, _)| *until > now);
            if self.nat.backoff.len() >= MAX_RELAY_CANDIDATES {
                return;
            }
        }
        self.nat
            .backoff
            .insert(relay, (Instant::now() + next, next));
    }

    pub(super) fn handle_relay_client(&mut self, event: relay::client::Event) {
        match event {
            relay::client::Event::ReservationReqAccepted {
                relay_peer_id,
                renewal,
                ..
            } => {
                if !renewal {
                    info!(relay = %relay_peer_id, "relay reservation accepted");
                }
                for r in self.nat.reservations.values_mut() {
                    if r.relay == relay_peer_id {
                        r.accepted = true;
                    }
                }
                self.nat.backoff.remove(&relay_peer_id);
            }
            other => debug!(?other, "relay client"),
        }
    }

    #[allow(deprecated)] // the deprecated `*Failed` variants are only logged
    pub(super) fn handle_relay_server(&mut self, event: relay::Event) {
        match event {
            relay::Event::ReservationReqAccepted {
                src_peer_id,
                renewed,
            } => {
                if !renewed {
                    self.nat.served_reservations += 1;
                }
                debug!(peer = %src_peer_id, renewed, "relay: reservation accepted");
            }
            relay::Event::ReservationClosed { .. } | relay::Event::ReservationTimedOut { .. } => {
                self.nat.served_reservations = self.nat.served_reservations.saturating_sub(1);
            }
            relay::Event::CircuitReqAccepted {
                src_peer_id,
                dst_peer_id,
            } => {
                self.nat.served_circuits += 1;
                debug!(%src_peer_id, %dst_peer_id, "relay: circuit opened");
            }
            relay::Event::CircuitClosed { .. } => {
                self.nat.served_circuits = self.nat.served_circuits.saturating_sub(1);
            }
            other => debug!(?other, "relay server"),
        }
    }

    pub(super) fn handle_dcutr(&mut self, event: dcutr::Event) {
        match event.result {
            Ok(_) => {
                self.nat.punched += 1;
                info!(peer = %event.remote_peer_id, "hole punched: direct connection");
            }
            Err(e) => {
                self.nat.punch_failed += 1;
                info!(peer = %event.remote_peer_id, "hole punching failed: {e}");
            }
        }
    }

    pub(super) fn handle_autonat(&mut self, event: autonat::v2::client::Event) {
        match event.result {
            Ok(()) => info!(addr = %event.tested_addr, server = %event.server, "reachable"),
            Err(e) => {
                self.nat.probes_failed += 1;
                info!(addr = %event.tested_addr, server = %event.server, "not reachable: {e}");
                self.update_relay_role();
            }
        }
    }

    pub(super) fn handle_upnp(&mut self, event: upnp::Event) {
        self.nat.upnp = match event {
            upnp::Event::NewExternalAddr { external_addr, .. } => {
                info!(%external_addr, "UPnP port mapping");
                "mapped"
            }
            upnp::Event::ExpiredExternalAddr { external_addr, .. } => {
                warn!(%external_addr, "UPnP port mapping expired");
                "expired"
            }
            upnp::Event::GatewayNotFound => "no gateway",
            upnp::Event::NonRoutableGateway => "gateway not public",
        };
    }

    /// Periodic work: reservations while not reachable, and relayed connections retired.
    pub(super) fn nat_tick(&mut self) {
        self.reserve_if_needed();
        self.retire_relayed();
    }

    /// While not publicly reachable, holds reservations on up to `max_relays` relays:
    /// configured ones first, then peers this node dialed that offer relaying. One new
    /// attempt per tick.
    fn reserve_if_needed(&mut self) {
        let nat = &self.config.nat;
        if (nat.relays.is_empty() && !nat.auto_relay)
            || self.nat.reservations.len() >= nat.max_relays
            || self.reachability() == Reachability::Public
        {
            return;
        }
        let now = Instant::now();
        let local = *self.swarm.local_peer_id();
        let busy: HashSet<PeerId> = self.nat.reservations.values().map(|r| r.relay).collect();
        let usable = |peer: &PeerId| {
            *peer != local
                && !busy.contains(peer)
                && self
                    .nat
                    .backoff
                    .get(peer)
                    .is_none_or(|(until, _)| *until <= now)
        };
        // A configured relay may be named by several addresses (the `cpns-auth` host's LAN,
        // loopback and public ones): take the one this node is connected on, else a global
        // one, else the first.
        let configured = nat
            .relays
            .iter()
            .filter_map(super::peer_of)
            .find(|p| usable(p))
            .map(|relay| {
                let named: Vec<&Multiaddr> = nat
                    .relays
                    .iter()
                    .filter(|a| super::peer_of(a) == Some(relay))
                    .collect();
                let addr = self
                    .peers
                    .get(&relay)
                    .and_then(|s| s.direct_outbound_addr())
                    .or_else(|| {
                        named
                            .iter()
                            .find(|a| crate::nat::is_global(a))
                            .map(|a| (*a).clone())
                    })
                    .unwrap_or_else(|| named[0].clone());
                (relay, addr)
            });
        let candidate = configured.or_else(|| {
            if !nat.auto_relay {
                return None;
            }
            self.nat
                .relay_peers
                .iter()
                .filter(|p| usable(p))
                .find_map(|p| {
                    let addr = self.peers.get(p)?.direct_outbound_addr()?;
                    Some((*p, addr))
                })
        });
        let Some((relay, addr)) = candidate else {
            return;
        };
        let mut circuit = addr;
        if super::peer_of(&circuit).is_none() {
            circuit.push(Protocol::P2p(relay));
        }
        circuit.push(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(id) => {
                debug!(%circuit, "reserving a relay slot");
                self.nat.reservations.insert(
                    id,
                    Reservation {
                        relay,
                        accepted: false,
                    },
                );
            }
            Err(e) => {
                debug!(%circuit, "relay reservation not started: {e}");
                self.back_off(relay);
            }
        }
    }

    /// Closes the relayed connections of peers that also have a direct one, once no request
    /// is in flight with them (or after [`RETIRE_AT_MOST`]): both would otherwise share the
    /// traffic (libp2p spreads requests over a peer's connections), and the relay's circuit
    /// limits would cut whatever is on the relayed one.
    fn retire_relayed(&mut self) {
        let now = Instant::now();
        let grace = self.config.nat.retire_relayed_after;
        let mut to_close: Vec<(PeerId, ConnectionId)> = Vec::new();
        let mut mixed: HashSet<PeerId> = HashSet::new();
        for (peer, state) in &self.peers {
            let relayed: Vec<ConnectionId> = state
                .connections
                .iter()
                .filter(|(_, a, _)| is_relayed(a))
                .map(|(c, _, _)| *c)
                .collect();
            let direct = state.connections.iter().any(|(_, a, _)| !is_relayed(a));
            if relayed.is_empty() || !direct {
                continue;
            }
            mixed.insert(*peer);
            let since = *self.nat.mixed_since.entry(*peer).or_insert(now);
            let waited = now.saturating_duration_since(since);
            let idle = !self.nat.in_flight.contains_key(peer);
            if (waited >= grace && idle) || waited >= grace + RETIRE_AT_MOST {
                to_close.extend(relayed.into_iter().map(|c| (*peer, c)));
            }
        }
        self.nat.mixed_since.retain(|p, _| mixed.contains(p));
        for (peer, conn) in to_close {
            debug!(%peer, "direct connection up: relayed connection closed");
            self.nat.mixed_since.remove(&peer);
            self.swarm.close_connection(conn);
        }
    }
}
