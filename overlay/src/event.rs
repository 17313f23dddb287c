//! What the overlay tells the application.

use libp2p::{Multiaddr, PeerId};

use crate::client::ResponseChannel;
use crate::protocol::Message;

/// Events from the overlay, delivered on a bounded channel. When the application falls behind,
/// informational events are dropped (and counted); inbound requests are answered with
/// [`crate::ErrorCode::Busy`] instead of being dropped silently.
#[derive(Debug)]
#[non_exhaustive]
#[allow(clippy::large_enum_variant)] // moved once per event; boxing would only add noise
pub enum Event {
    /// A CPNS request from a peer (after the codec's size check and, on `/cpns/1.0.0`, the
    /// admission check). Answer it with [`crate::Client::respond`].
    InboundRequest {
        /// The sender, authenticated by the noise handshake.
        peer: PeerId,
        /// The request.
        message: Message,
        /// Where the answer goes.
        channel: ResponseChannel,
    },
    /// A first (or further) connection to a peer.
    ConnectionEstablished {
        /// The peer.
        peer: PeerId,
        /// Its remote address.
        address: Multiaddr,
        /// Whether we dialed.
        outbound: bool,
        /// Connections to this peer now.
        num_established: u32,
    },
    /// The last connection to a peer closed.
    ConnectionClosed {
        /// The peer.
        peer: PeerId,
    },
    /// A peer identified itself.
    Identified {
        /// The peer.
        peer: PeerId,
        /// Where it listens (its first 8 addresses at most).
        listen_addrs: Vec<Multiaddr>,
        /// Its agent string.
        agent: String,
        /// Whether it serves the CPNS DHT.
        dht_server: bool,
    },
    /// mDNS saw a peer on the LAN.
    MdnsDiscovered {
        /// The peer.
        peer: PeerId,
        /// Its addresses.
        addrs: Vec<Multiaddr>,
    },
    /// mDNS lost a peer.
    MdnsExpired {
        /// The peer.
        peer: PeerId,
    },
    /// We listen on a new address.
    NewListenAddr(Multiaddr),
    /// A DHT record or provider announcement was refused by the validator.
    RecordRejected {
        /// Who sent or returned it.
        source: Option<PeerId>,
        /// Stable reason.
        reason: &'static str,
        /// Detail.
        detail: String,
    },
    /// An inbound request could not be read (garbage, truncated, oversize, unknown version).
    InboundRejected {
        /// The sender.
        peer: PeerId,
        /// Stable reason.
        reason: &'static str,
    },
}
