//! Reachability across NAT routers: what a node tells about itself ([`NatStatus`]), and the
//! screen in front of the AutoNAT client ([`Screened`]).
//!
//! Why the screen: libp2p's AutoNAT v2 client keeps every address candidate the swarm reports
//! (each peer's identify says where it sees us) in a map that never shrinks, and tests each
//! one once. A hostile peer could grow that map without bound, and a neighbour on the home
//! LAN that dials our LAN address back would make a device behind NAT believe it is public.
//! So only global addresses reach it (unless a lab asks otherwise), at most
//! [`MAX_CANDIDATES`] distinct ones.

use std::collections::HashSet;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::task::{Context, Poll};

use libp2p::PeerId;
use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint, Multiaddr};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::{
    ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, NewExternalAddrCandidate,
    THandler, THandlerInEvent, THandlerOutEvent, ToSwarm,
};
use serde::Serialize;

/// Most distinct address candidates handed to the AutoNAT client in a node's life.
pub(crate) const MAX_CANDIDATES: usize = 32;

/// Whether this node can be reached from outside its network.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reachability {
    /// Not known yet (no AutoNAT answer, no mapping, nothing configured).
    #[default]
    Unknown,
    /// At least one direct address was confirmed from outside (AutoNAT dial-back, a UPnP
    /// mapping, or configured as external).
    Public,
    /// AutoNAT servers could not dial back any address: behind NAT or a firewall.
    Private,
}

impl std::fmt::Display for Reachability {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Unknown => "unknown",
            Self::Public => "public",
            Self::Private => "private",
        })
    }
}

/// What a node knows about its own reachability ([`crate::Client::nat_status`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct NatStatus {
    /// Public, private or unknown.
    pub reachability: Reachability,
    /// Confirmed direct external addresses (what others can dial).
    pub public_addrs: Vec<Multiaddr>,
    /// Relayed addresses this node listens on (`…/p2p/RELAY/p2p-circuit`).
    pub relayed_addrs: Vec<Multiaddr>,
    /// Relays holding an accepted reservation for this node.
    pub relays: Vec<PeerId>,
    /// Whether this node serves as a relay now.
    pub relay_server: bool,
    /// UPnP state: `off`, `searching`, `mapped`, `no gateway`, `gateway not public`.
    pub upnp: String,
    /// Relayed connections upgraded to direct ones by hole punching.
    pub hole_punches_succeeded: u64,
    /// Hole punches that failed (the connection stayed relayed).
    pub hole_punches_failed: u64,
    /// AutoNAT probes of this node's candidates that a server could not dial back.
    pub probes_failed: u64,
    /// Reservations this node holds for others, as a relay.
    pub relay_reservations_served: u64,
    /// Relayed connections (circuits) passing through this node now.
    pub relay_circuits_served: u64,
}

/// Whether `addr` is a relayed (`/p2p-circuit`) address.
pub fn is_relayed(addr: &Multiaddr) -> bool {
    addr.iter().any(|p| matches!(p, Protocol::P2pCircuit))
}

/// The address a connection is shown and classified by (`cpns peers`, the path, the
/// retirement of relayed connections): its remote address, except for a relayed connection
/// this node accepted. libp2p-relay gives that one only `/p2p/SRC` as its remote address, which
/// looks direct; its path is the circuit it came in on (`…/p2p/RELAY/p2p-circuit`, the local
/// address), so that is what it is shown by, with `/p2p/SRC` after it. (Taking `/p2p/SRC` for
/// a direct connection made the accepting side report `direct` for a relayed peer and close
/// its own relayed connection as if a direct one existed.)
pub(crate) fn connection_addr(endpoint: &ConnectedPoint, peer: PeerId) -> Multiaddr {
    match endpoint {
        ConnectedPoint::Listener { local_addr, .. } if is_relayed(local_addr) => {
            let mut addr = local_addr.clone();
            if !matches!(addr.iter().last(), Some(Protocol::P2p(_))) {
                addr.push(Protocol::P2p(peer));
            }
            addr
        }
        other => other.get_remote_address().clone(),
    }
}

/// Whether `addr` starts with a globally routable IP address (not private, loopback,
/// link-local, CGNAT, documentation, benchmarking or reserved). DNS names count as global.
pub fn is_global(addr: &Multiaddr) -> bool {
    match addr.iter().next() {
        Some(Protocol::Ip4(ip)) => ipv4_global(ip),
        Some(Protocol::Ip6(ip)) => ipv6_global(ip),
        Some(Protocol::Dns(_) | Protocol::Dns4(_) | Protocol::Dns6(_)) => true,
        _ => false,
    }
}

fn ipv4_global(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    !(a == 0
        || ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_broadcast()
        || ip.is_documentation()
        || ip.is_multicast()
        // 100.64.0.0/10: carrier-grade NAT (shared address space)
        || (a == 100 && (b & 0xc0) == 0x40)
        // 192.0.0.0/24: IETF protocol assignments
        || (a == 192 && b == 0 && c == 0)
        // 198.18.0.0/15: benchmarking
        || (a == 198 && (b & 0xfe) == 18)
        // 240.0.0.0/4: reserved
        || a >= 240)
}

fn ipv6_global(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    !(ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        // fc00::/7 unique local, fe80::/10 link-local
        || (s[0] & 0xfe00) == 0xfc00
        || (s[0] & 0xffc0) == 0xfe80
        // 2001:db8::/32 documentation
        || (s[0] == 0x2001 && s[1] == 0x0db8)
        // ::ffff:0:0/96 IPv4-mapped
        || matches!(s, [0, 0, 0, 0, 0, 0xffff, _, _]))
}

/// A behaviour that sees only screened address candidates: global ones (or any, with
/// `allow_private`), never relayed ones, at most [`MAX_CANDIDATES`] distinct ones. Everything
/// else passes through unchanged.
pub(crate) struct Screened<B> {
    inner: B,
    allow_private: bool,
    seen: HashSet<Multiaddr>,
}

impl<B> Screened<B> {
    pub(crate) fn new(inner: B, allow_private: bool) -> Self {
        Self {
            inner,
            allow_private,
            seen: HashSet::new(),
        }
    }

    /// Whether the candidate passes; remembers it if so.
    fn admit(&mut self, addr: &Multiaddr) -> bool {
        if is_relayed(addr) || !(self.allow_private || is_global(addr)) {
            return false;
        }
        if self.seen.contains(addr) {
            return true;
        }
        if self.seen.len() >= MAX_CANDIDATES {
            return false;
        }
        self.seen.insert(addr.clone());
        true
    }
}

impl<B: NetworkBehaviour> NetworkBehaviour for Screened<B> {
    type ConnectionHandler = B::ConnectionHandler;
    type ToSwarm = B::ToSwarm;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        self.inner
            .handle_pending_inbound_connection(connection_id, local_addr, remote_addr)
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        local_addr: &Multiaddr,
        remote_addr: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_inbound_connection(
            connection_id,
            peer,
            local_addr,
            remote_addr,
        )
    }

    fn handle_pending_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        maybe_peer: Option<PeerId>,
        addresses: &[Multiaddr],
        effective_role: Endpoint,
    ) -> Result<Vec<Multiaddr>, ConnectionDenied> {
        self.inner.handle_pending_outbound_connection(
            connection_id,
            maybe_peer,
            addresses,
            effective_role,
        )
    }

    fn handle_established_outbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        addr: &Multiaddr,
        role_override: Endpoint,
        port_use: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        self.inner.handle_established_outbound_connection(
            connection_id,
            peer,
            addr,
            role_override,
            port_use,
        )
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        if let FromSwarm::NewExternalAddrCandidate(NewExternalAddrCandidate { addr }) = &event
            && !self.admit(addr)
        {
            return;
        }
        self.inner.on_swarm_event(event);
    }

    fn on_connection_handler_event(
        &mut self,
        peer_id: PeerId,
        connection_id: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        self.inner
            .on_connection_handler_event(peer_id, connection_id, event);
    }

    fn poll(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        self.inner.poll(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn ma(s: &str) -> Multiaddr {
        s.parse().unwrap()
    }

    #[test]
    fn global_addresses() {
        for a in [
            "/ip4/11.12.0.2/tcp/1",
            "/ip4/8.8.8.8/udp/1/quic-v1",
            "/ip6/2a01:4f8::1/tcp/1",
            "/dns4/relay.example.org/tcp/1",
        ] {
            assert!(is_global(&ma(a)), "{a}");
        }
        for a in [
            "/ip4/10.0.0.1/tcp/1",
            "/ip4/192.168.1.2/tcp/1",
            "/ip4/172.16.0.1/tcp/1",
            "/ip4/127.0.0.1/tcp/1",
            "/ip4/100.64.0.1/tcp/1",
            "/ip4/169.254.1.1/tcp/1",
            "/ip4/198.18.0.1/tcp/1",
            "/ip4/192.0.2.1/tcp/1",
            "/ip4/0.0.0.0/tcp/1",
            "/ip6/::1/tcp/1",
            "/ip6/fe80::1/tcp/1",
            "/ip6/fd00::1/tcp/1",
            "/ip6/2001:db8::1/tcp/1",
        ] {
            assert!(!is_global(&ma(a)), "{a}");
        }
    }

    #[test]
    fn an_accepted_relayed_connection_counts_as_relayed() {
        let relay = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";
        let src = PeerId::random();
        let circuit = ma(&format!("/ip4/11.0.0.1/tcp/4100/p2p/{relay}/p2p-circuit"));
        let accepted = ConnectedPoint::Listener {
            local_addr: circuit.clone(),
            send_back_addr: Multiaddr::empty().with(Protocol::P2p(src)),
        };
        let shown = connection_addr(&accepted, src);
        assert!(is_relayed(&shown), "{shown}");
        assert_eq!(shown, circuit.with(Protocol::P2p(src)));
        let direct = ConnectedPoint::Listener {
            local_addr: ma("/ip4/10.0.0.2/tcp/4001"),
            send_back_addr: ma("/ip4/10.0.0.3/tcp/5000"),
        };
        assert_eq!(connection_addr(&direct, src), ma("/ip4/10.0.0.3/tcp/5000"));
    }

    #[test]
    fn the_screen_drops_private_relayed_and_excess_candidates() {
        let mut s = Screened::new((), false);
        assert!(!s.admit(&ma("/ip4/192.168.1.2/tcp/4001")));
        assert!(!s.admit(&ma(
            "/ip4/11.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA/p2p-circuit"
        )));
        for port in 0..MAX_CANDIDATES as u16 {
            assert!(s.admit(&ma(&format!("/ip4/11.0.0.1/tcp/{port}"))));
        }
        assert!(!s.admit(&ma("/ip4/11.0.0.1/tcp/9999")), "over the bound");
        assert!(
            s.admit(&ma("/ip4/11.0.0.1/tcp/0")),
            "a known one still passes"
        );
        let mut lab = Screened::new((), true);
        assert!(lab.admit(&ma("/ip4/192.168.1.2/tcp/4001")));
    }
}
