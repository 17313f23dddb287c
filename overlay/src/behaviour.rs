//! The libp2p network behaviour of a CPNS node and how it is built.

use std::num::NonZeroUsize;
use std::sync::Arc;

use libp2p::swarm::NetworkBehaviour;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::{
    StreamProtocol, autonat, connection_limits, dcutr, identify, identity, kad, mdns, ping, relay,
    request_response, upnp,
};

use crate::codec::{CpnsCodec, CredentialCodec, FrameBudget};
use crate::config::{Config, KadMode, RelayLimits, RelayServerMode};
use crate::nat::Screened;
use crate::stats::Stats;
use crate::store::{Store, StoreLimits};

/// Kademlia runs on its own protocol name, so that the CPNS DHT never mixes with the public
/// IPFS DHT even when the same machines run both.
pub const KAD_PROTOCOL: StreamProtocol = StreamProtocol::new("/cpns/kad/1.0.0");
/// CPNS messages between nodes.
pub const CPNS_PROTOCOL: StreamProtocol = StreamProtocol::new("/cpns/1.0.0");
/// CPNS messages between a node and `cpns-auth`.
pub const AUTH_PROTOCOL: StreamProtocol = StreamProtocol::new("/cpns/auth/1.0.0");
/// The credential exchange: each side sends its entity credential once per connection, so
/// that a DHT server stores provider announcements of credentialed peers only.
pub const CREDENTIAL_PROTOCOL: StreamProtocol = StreamProtocol::new("/cpns/cred/1.0.0");
/// Content delivery streams (5.6.7).
pub const DELIVERY_PROTOCOL: StreamProtocol = StreamProtocol::new("/cpns/delivery/1.0.0");
/// The identify protocol version string.
pub(crate) const IDENTIFY_PROTOCOL: &str = "/cpns/id/1.0.0";

/// Every protocol a CPNS node runs, composed.
#[derive(NetworkBehaviour)]
pub(crate) struct Behaviour {
    pub(crate) limits: connection_limits::Behaviour,
    pub(crate) kad: kad::Behaviour<Store>,
    pub(crate) cpns: request_response::Behaviour<CpnsCodec>,
    pub(crate) auth: request_response::Behaviour<CpnsCodec>,
    pub(crate) cred: request_response::Behaviour<CredentialCodec>,
    pub(crate) identify: identify::Behaviour,
    pub(crate) ping: ping::Behaviour,
    pub(crate) mdns: Toggle<mdns::tokio::Behaviour>,
    pub(crate) stream: libp2p_stream::Behaviour,
    /// Reservations on relays and connections through them (always on: dialing a relayed
    /// address needs it).
    pub(crate) relay_client: relay::client::Behaviour,
    /// The relay role ([`crate::NatConfig::relay_server`]); advertised only while allowed.
    pub(crate) relay: Toggle<relay::Behaviour>,
    pub(crate) dcutr: Toggle<dcutr::Behaviour>,
    pub(crate) autonat: Toggle<Screened<autonat::v2::client::Behaviour>>,
    pub(crate) autonat_server: Toggle<autonat::v2::server::Behaviour>,
    pub(crate) upnp: Toggle<upnp::tokio::Behaviour>,
}

pub(crate) fn to_kad_mode(mode: KadMode) -> kad::Mode {
    match mode {
        KadMode::Server => kad::Mode::Server,
        KadMode::Client => kad::Mode::Client,
    }
}

impl Behaviour {
    pub(crate) fn new(
        key: &identity::Keypair,
        relay_client: relay::client::Behaviour,
        config: &Config,
        stats: &Arc<Stats>,
    ) -> Result<Self, String> {
        let local = key.public().to_peer_id();

        let limits = connection_limits::Behaviour::new(
            connection_limits::ConnectionLimits::default()
                .with_max_established(Some(config.max_connections))
                .with_max_established_per_peer(Some(config.max_connections_per_peer))
                .with_max_pending_incoming(Some(config.max_connections / 4 + 16)),
        );

        let mut kad_cfg = kad::Config::new(KAD_PROTOCOL);
        kad_cfg
            .set_query_timeout(config.query_timeout)
            .set_record_filtering(kad::StoreInserts::FilterBoth)
            .set_record_ttl(config.record_ttl)
            .set_provider_record_ttl(config.record_ttl)
            .set_max_packet_size(config.max_record_bytes.saturating_mul(2).max(16 * 1024))
            // The event loop refreshes the table itself, and only when it holds a peer
            // (`Config::bootstrap_interval`).
            .set_periodic_bootstrap_interval(None);
        if config.validator.wants_credentials() {
            // Only peers with a verified credential enter the routing table; the event loop
            // inserts them (see `event_loop::routing`).
            kad_cfg.set_kbucket_inserts(kad::BucketInserts::Manual);
        }
        if let Some(k) = NonZeroUsize::new(config.replication_factor) {
            kad_cfg.set_replication_factor(k);
        }
        if let Some(a) = NonZeroUsize::new(config.parallelism) {
            kad_cfg.set_parallelism(a);
        }
        let store = Store::new(
            local,
            StoreLimits {
                max_records: config.max_records,
                max_value_bytes: config.max_record_bytes,
                max_remote_bytes: config.max_record_store_bytes,
                max_provided_keys: config.max_provided_keys,
                max_providers_per_key: config.max_providers_per_key,
                max_provider_records: config.max_provider_records,
                max_provider_records_per_peer: config.max_provider_records_per_peer,
            },
        );
        let mut kad = kad::Behaviour::with_config(local, store, kad_cfg);
        // Set explicitly: the default waits for a confirmed external address, which loopback
        // and home LANs never get.
        kad.set_mode(Some(to_kad_mode(config.kad_mode)));

        // Streams per connection and bytes being read across all of them are bounded (see
        // `FrameBudget` and docs/BUDGETS.md).
        let rr_cfg = request_response::Config::default()
            .with_request_timeout(config.request_timeout)
            .with_max_concurrent_streams(config.max_streams_per_connection);
        let budget = FrameBudget::new(config.frame_budget);
        let cpns = request_response::Behaviour::with_codec(
            CpnsCodec::new(config.max_frame)
                .with_stats(stats.clone())
                .with_budget(budget.clone()),
            [(CPNS_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr_cfg.clone(),
        );
        let auth = request_response::Behaviour::with_codec(
            CpnsCodec::new(config.max_frame)
                .with_stats(stats.clone())
                .with_budget(budget),
            [(AUTH_PROTOCOL, request_response::ProtocolSupport::Full)],
            rr_cfg,
        );
        let cred = request_response::Behaviour::with_codec(
            CredentialCodec,
            [(CREDENTIAL_PROTOCOL, request_response::ProtocolSupport::Full)],
            request_response::Config::default()
                .with_request_timeout(config.request_timeout)
                .with_max_concurrent_streams(4),
        );

        let identify = identify::Behaviour::new(
            identify::Config::new(IDENTIFY_PROTOCOL.to_string(), key.public())
                .with_agent_version(config.agent.clone())
                // Identify pushes on every listen change already; periodic re-identification
                // is only background noise on a quiet home network.
                .with_interval(std::time::Duration::from_secs(300)),
        );
        let ping = ping::Behaviour::new(ping::Config::new().with_interval(config.ping_interval));

        let mdns = if config.mdns {
            // Query every 30 s instead of every 5 min: a device switched on later is seen
            // within half a minute (queries are small and stay on the LAN).
            let mdns_config = mdns::Config {
                query_interval: std::time::Duration::from_secs(30),
                ..mdns::Config::default()
            };
            Some(mdns::tokio::Behaviour::new(mdns_config, local).map_err(|e| e.to_string())?)
        } else {
            None
        };

        let nat = &config.nat;
        let relay = (nat.relay_server != RelayServerMode::Off).then(|| {
            let mut relay = relay::Behaviour::new(local, relay_config(&nat.relay_limits));
            // Not advertised until the event loop says so (a gateway with a confirmed
            // external address, or `Always` with one).
            relay.set_status(Some(relay::Status::Disable));
            relay
        });
        let autonat = nat.autonat.then(|| {
            Screened::new(
                autonat::v2::client::Behaviour::new(
                    rand::make_rng(),
                    autonat::v2::client::Config::default(),
                ),
                nat.probe_private_addrs,
            )
        });
        let autonat_server = nat
            .autonat_server
            .then(autonat::v2::server::Behaviour::default);

        Ok(Self {
            limits,
            kad,
            cpns,
            auth,
            cred,
            identify,
            ping,
            mdns: mdns.into(),
            stream: libp2p_stream::Behaviour::new(),
            relay_client,
            relay: relay.into(),
            dcutr: nat
                .hole_punching
                .then(|| dcutr::Behaviour::new(local))
                .into(),
            autonat: autonat.into(),
            autonat_server: autonat_server.into(),
            upnp: nat.upnp.then(upnp::tokio::Behaviour::default).into(),
        })
    }
}

/// libp2p's relay configuration with CPNS limits, and its default rate limits (per peer and
/// per IP address, for reservations and for circuits).
fn relay_config(limits: &RelayLimits) -> relay::Config {
    relay::Config {
        max_reservations: limits.max_reservations,
        max_reservations_per_peer: limits.max_reservations_per_peer,
        reservation_duration: limits.reservation_duration,
        max_circuits: limits.max_circuits,
        max_circuits_per_peer: limits.max_circuits_per_peer,
        max_circuit_duration: limits.max_circuit_duration,
        max_circuit_bytes: limits.max_circuit_bytes,
        ..relay::Config::default()
    }
}
