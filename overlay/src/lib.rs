//! # cpns-overlay: the CPNS overlay on libp2p
//!
//! One [`EventLoop`] per node owns the libp2p swarm: TCP + noise + yamux, identify, ping,
//! Kademlia on `/cpns/kad/1.0.0` (server mode for gateways, client mode for PNE-only nodes),
//! optional mDNS, request-response on `/cpns/1.0.0` (node to node) and `/cpns/auth/1.0.0`
//! (node to `cpns-auth`), and raw streams on `/cpns/delivery/1.0.0`. The rest of the program
//! talks to it through a cloneable [`Client`] and receives [`Event`]s on a bounded channel.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use cpns_overlay::{Config, Message, PnMessage, Protocol};
//! let identity = cpns_keys::Identity::generate();
//! let (client, mut events, event_loop) = cpns_overlay::new(Config::default(), &identity).await?;
//! let cancel = tokio_util::sync::CancellationToken::new();
//! tokio::spawn(event_loop.run(cancel.clone()));
//! println!("listening on {:?}", client.listen_addrs().await?);
//! # let other: libp2p::Multiaddr = "/ip4/127.0.0.1/tcp/4001/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA".parse()?;
//! let peer = client.dial(other).await?;
//! let answer = client.request(peer, Protocol::Cpns, Message::Pn(PnMessage::Ping { nonce: 1 })).await?;
//! cancel.cancel();
//! # Ok(()) }
//! ```
//!
//! Every DHT write from another peer and every record a query returns passes through the
//! [`RecordValidator`] in the [`Config`] (`StoreInserts::FilterBoth`); `cpns-directory`
//! implements it. Every frame is decoded by [`codec`] with a size limit.
//!
//! Beware: mDNS multicasts out of the machine's real interface. It is off in
//! [`Config::default`]; turn it on only for real LAN use or inside a network namespace.

mod behaviour;
mod client;
pub mod codec;
mod config;
mod error;
mod event;
mod event_loop;
mod nat;
pub mod protocol;
mod stats;
pub mod store;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
pub mod transcript;
mod validate;

use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use futures::StreamExt;
use libp2p::swarm::SwarmEvent;
use libp2p::{noise, tcp, yamux};
use tokio::sync::mpsc;

pub use behaviour::{
    AUTH_PROTOCOL, CPNS_PROTOCOL, CREDENTIAL_PROTOCOL, DELIVERY_PROTOCOL, KAD_PROTOCOL,
};
pub use client::{
    Client, FoundRecord, GetProvidersOutput, GetRecordOutput, MAX_PUT_TO, PeerInfo, PeerVerdict,
    Protocol, ProvidersQuery, QueryFigures, ResponseChannel,
};
pub use codec::CodecError;
pub use config::{Config, KadMode, NatConfig, RelayLimits, RelayServerMode, loopback_any};
pub use error::Error;
pub use event::Event;
pub use event_loop::{EventLoop, peer_of};
pub use libp2p::kad::{Quorum, Record, RecordKey};
pub use libp2p::{Multiaddr, PeerId, StreamProtocol};
pub use nat::{NatStatus, Reachability, is_global, is_relayed};
pub use protocol::*;
pub use stats::Stats;
pub use store::StoreUsage;
pub use validate::{AcceptAll, PeerCredential, RecordValidator, Rejection};

/// An error and its sources on one line (libp2p's transport errors keep the reason, such as
/// "address in use", in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !text.is_empty() && !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
        source = s.source();
    }
    if out.is_empty() {
        format!("{e:?}")
    } else {
        out
    }
}

/// How long [`new`] waits for its listeners to report their addresses.
const LISTEN_WAIT: Duration = Duration::from_secs(5);

/// Builds the swarm for `identity`, starts listening, and returns the client, the event stream
/// and the event loop to spawn. Returns once every listener has reported an address, so that
/// [`Client::listen_addrs`] is complete from the start.
pub async fn new(
    config: Config,
    identity: &cpns_keys::Identity,
) -> Result<(Client, mpsc::Receiver<Event>, EventLoop), Error> {
    let key = identity.to_libp2p_keypair();
    let local = key.public().to_peer_id();
    let behaviour_config = config.clone();
    let stats = Arc::new(Stats::default());
    let behaviour_stats = stats.clone();
    // The transports: TCP (+ noise + yamux) and QUIC, DNS names resolved by the system's
    // resolver, and circuit relay v2 under them all.
    macro_rules! swarm {
        ($transports:expr) => {
            $transports
                .with_relay_client(noise::Config::new, yamux::Config::default)
                .map_err(|e| Error::Build(e.to_string()))?
                .with_behaviour(|key, relay_client| {
                    behaviour::Behaviour::new(
                        key,
                        relay_client,
                        &behaviour_config,
                        &behaviour_stats,
                    )
                    .map_err(Box::<dyn std::error::Error + Send + Sync>::from)
                })
                .map_err(|e| Error::Build(e.to_string()))?
                .with_swarm_config(|c| {
                    let c = c.with_idle_connection_timeout(config.idle_timeout);
                    if config.lazy_negotiation {
                        c.with_substream_upgrade_protocol_override(
                            libp2p::core::upgrade::Version::V1Lazy,
                        )
                    } else {
                        c
                    }
                })
                .with_connection_timeout(config.connection_timeout)
                .build()
        };
    }
    macro_rules! ip_transports {
        () => {
            libp2p::SwarmBuilder::with_existing_identity(key.clone())
                .with_tokio()
                .with_tcp(
                    tcp::Config::default().nodelay(true),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .map_err(|e| Error::Build(e.to_string()))?
                .with_quic()
        };
    }
    let mut swarm = match ip_transports!().with_dns() {
        Ok(with_dns) => swarm!(with_dns),
        Err(e) => {
            // A machine without /etc/resolv.conf still runs; it cannot dial /dns addresses.
            tracing::warn!("no DNS resolver configured ({e}); /dns addresses cannot be dialed");
            swarm!(ip_transports!())
        }
    };
    for addr in &config.nat.external_addrs {
        swarm.add_external_address(addr.clone());
    }

    let mut listeners = Vec::new();
    for addr in &config.listen {
        let id = swarm
            .listen_on(addr.clone())
            .map_err(|e| Error::Listen(format!("{addr}: {}", error_chain(&e))))?;
        listeners.push(id);
    }
    let mut listen_addrs = Vec::new();
    let mut waiting: std::collections::HashSet<_> = listeners.into_iter().collect();
    let deadline = tokio::time::Instant::now() + LISTEN_WAIT;
    while !waiting.is_empty() {
        let event = tokio::time::timeout_at(deadline, swarm.select_next_some())
            .await
            .map_err(|_| Error::Listen("no listen address reported in time".into()))?;
        match event {
            SwarmEvent::NewListenAddr {
                listener_id,
                address,
            } => {
                waiting.remove(&listener_id);
                listen_addrs.push(address);
            }
            SwarmEvent::ListenerError { error, .. } => {
                return Err(Error::Listen(error_chain(&error)));
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                return Err(Error::Listen(format!("listener closed: {reason:?}")));
            }
            _ => {}
        }
    }

    let (cmd_tx, cmd_rx) = mpsc::channel(config.command_capacity.max(1));
    let (ev_tx, ev_rx) = mpsc::channel(config.event_capacity.max(1));
    let stream = swarm.behaviour().stream.new_control();
    let client = Client {
        commands: cmd_tx,
        local,
        next_id: Arc::new(AtomicU64::new(rand::random::<u32>() as u64)),
        stream,
        stats: stats.clone(),
    };
    let event_loop = event_loop::EventLoop::new(swarm, config, cmd_rx, ev_tx, stats, listen_addrs);
    Ok((client, ev_rx, event_loop))
}
