//! Errors of overlay operations.

use libp2p::PeerId;

use crate::protocol::ErrorReply;

/// What can go wrong with an overlay operation.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The event loop has stopped (shutdown or crash); the client cannot be used any more.
    #[error("the overlay has shut down")]
    Shutdown,
    /// Too many operations of this kind are outstanding.
    #[error("too many outstanding operations; try again later")]
    Busy,
    /// Dialing failed.
    #[error("dial failed: {0}")]
    Dial(String),
    /// A multiaddr was not usable.
    #[error("bad address: {0}")]
    BadAddress(String),
    /// Listening failed.
    #[error("listen failed: {0}")]
    Listen(String),
    /// A request to a peer failed in transport (timeout, refused protocol, connection closed).
    #[error("request to {peer} failed: {reason}")]
    Request {
        /// The peer.
        peer: PeerId,
        /// What happened.
        reason: String,
    },
    /// The peer answered with an error reply.
    #[error("{peer} refused: {reply}")]
    Refused {
        /// The peer.
        peer: PeerId,
        /// Its reply.
        reply: ErrorReply,
    },
    /// The response was not the expected kind of message.
    #[error("unexpected response from {peer}: {got}")]
    Unexpected {
        /// The peer.
        peer: PeerId,
        /// The message name received.
        got: &'static str,
    },
    /// A DHT record was not found.
    #[error("record not found")]
    NotFound,
    /// A DHT operation failed.
    #[error("dht: {0}")]
    Dht(String),
    /// The DHT has no known peers yet.
    #[error("no known peers to bootstrap from")]
    NoKnownPeers,
    /// Encoding or decoding failed.
    #[error(transparent)]
    Codec(#[from] crate::codec::CodecError),
    /// The transport or swarm could not be built.
    #[error("building the swarm failed: {0}")]
    Build(String),
}
