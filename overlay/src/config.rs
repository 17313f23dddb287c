//! Overlay configuration: what the swarm listens on, whom it bootstraps from, and every bound.

use std::sync::Arc;
use std::time::Duration;

use libp2p::Multiaddr;

use crate::codec::DEFAULT_MAX_FRAME;
use crate::validate::{AcceptAll, RecordValidator};

/// The Kademlia mode of a node (DESIGN: gateways are DHT servers, PNE-only nodes clients).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KadMode {
    /// Answers DHT requests and stores records (gateways, and nodes of Appendix E's overlay).
    Server,
    /// Only asks (PNE-only nodes; they cost the DHT nothing).
    Client,
}

/// Overlay configuration. `Config::default()` is what a test or a developer wants on loopback:
/// listen on `127.0.0.1:0`, no mDNS, Kademlia server mode.
#[derive(Clone)]
pub struct Config {
    /// Addresses to listen on. Default: `/ip4/127.0.0.1/tcp/0`.
    pub listen: Vec<Multiaddr>,
    /// Bootstrap peers, each with `/p2p/PEERID`. Default: none.
    pub bootstrap: Vec<Multiaddr>,
    /// Kademlia mode at start (switchable at run time). Default: server.
    pub kad_mode: KadMode,
    /// Kademlia replication factor (k): how many peers store each record and provider
    /// record, and how many closest peers a lookup must hear from before it converges.
    /// Default: 8, as in OpenDHT and the BitTorrent DHT. Measured on a 64-node mesh, k = 20
    /// (the Kademlia paper's value) made a service publish 50 % slower (13.2 ms against
    /// 8.6 ms p50) for no gain in a network of households that republish every hour; large
    /// public networks with heavy churn may want 20.
    pub replication_factor: usize,
    /// Kademlia query timeout. Default: 10 s.
    pub query_timeout: Duration,
    /// Parallelism of iterative queries (alpha). Default: 3.
    pub parallelism: usize,
    /// Whether mDNS LAN discovery runs. Default: **off**, because it multicasts out of the
    /// machine's real interface; the node turns it on for users at home.
    pub mdns: bool,
    /// Largest CPNS frame accepted or sent. Default: 1 MiB.
    pub max_frame: usize,
    /// Most request-response streams open at once on one connection, per protocol (the rest
    /// wait or are refused by the stream layer). Default: 64.
    pub max_streams_per_connection: usize,
    /// Bytes of inbound CPNS frames being read at once, over every connection and both
    /// request-response protocols; a frame that finds no room is refused and its stream
    /// dropped. Default: 64 MiB.
    pub frame_budget: usize,
    /// Timeout of one request-response exchange. Default: 10 s.
    pub request_timeout: Duration,
    /// How long an idle connection is kept. Default: 60 s.
    pub idle_timeout: Duration,
    /// Longest time to set one connection up (transport, security, multiplexing), after
    /// which the dial fails. Default: 8 s: below AutoNAT v2's 10 s request limit, so that a
    /// dial-back into a NAT that drops unasked packets silently (most home routers) fails in
    /// time and the device learns it is not reachable; with libp2p's 10 s the probe timed out
    /// unanswered and was retried forever (reachability stayed `unknown`).
    pub connection_timeout: Duration,
    /// Ping interval (liveness and RTT). Default: 15 s.
    pub ping_interval: Duration,
    /// How often the routing table is refreshed with a Kademlia bootstrap, when it holds any
    /// peer. An empty table is the normal state of a household gateway whose only peers are
    /// Kademlia-client PNEs, so then nothing runs and nothing is logged above debug (libp2p's
    /// own periodic bootstrap warned "No known peers" every 5 minutes). Default: 5 min.
    pub bootstrap_interval: Duration,
    /// Capacity of the command channel from clients to the event loop. Default: 1024.
    pub command_capacity: usize,
    /// Capacity of the event channel from the event loop to the application. Default: 1024.
    pub event_capacity: usize,
    /// Most outstanding operations of each kind (queries, requests, dials) before new ones are
    /// refused with [`crate::Error::Busy`]. Default: 4096.
    pub max_pending: usize,
    /// Most established connections. Default: 1024.
    pub max_connections: u32,
    /// Most established connections per peer. Default: 4.
    pub max_connections_per_peer: u32,
    /// Most records the local DHT store keeps for other peers; this node's own records are
    /// counted apart against the same number. Default: 65,536.
    pub max_records: usize,
    /// Largest DHT record value. Default: 64 KiB.
    pub max_record_bytes: usize,
    /// Most bytes (keys and values) of the records kept for other peers. Default: 32 MiB.
    pub max_record_store_bytes: usize,
    /// Most keys this node provides itself (counted apart from others' provider records,
    /// which never displace them). Default: 4096.
    pub max_provided_keys: usize,
    /// Most remote providers kept per key; those stored first keep their slots until they
    /// expire. Default: 64.
    pub max_providers_per_key: usize,
    /// Most provider records kept for other peers in total (fair share between providers
    /// when full, see `store`). Default: 16,384.
    pub max_provider_records: usize,
    /// Most provider records kept for one other peer. Default: 1024.
    pub max_provider_records_per_peer: usize,
    /// How often expired records and provider records of others are purged (they are also
    /// dropped when their key is looked up). Default: 60 s.
    pub purge_interval: Duration,
    /// This node's entity credential (its encoded bytes), sent to every peer on the credential
    /// exchange (`/cpns/cred/1.0.0`) so that they store its provider announcements; replace
    /// it at run time with [`crate::Client::set_credential`]. Default: none.
    pub credential: Option<Vec<u8>>,
    /// Lifetime of records this node puts (None: kad's default of 48 h). Default: 48 h.
    pub record_ttl: Option<Duration>,
    /// Validation of every record other peers want to store here and every record a query
    /// returns. Default: accept everything (the directory installs its own).
    pub validator: Arc<dyn RecordValidator>,
    /// Whether requests on `/cpns/1.0.0` from peers not admitted with
    /// [`crate::Client::admit_peer`] are refused (except [`crate::Message::is_open`] ones).
    /// Default: true. `cpns-auth` and plain DHT tests turn it off.
    pub gate_requests: bool,
    /// Most admitted peers remembered. Default: 16,384.
    pub max_admitted: usize,
    /// Agent version sent in identify.
    pub agent: String,
    /// Whether this node, opening a substream, sends its request together with the protocol
    /// proposal instead of waiting for the remote's confirmation first (multistream-select
    /// `V1Lazy`: the same bytes on the wire, one round trip less per request, since every
    /// CPNS substream offers exactly one protocol). Default: true.
    pub lazy_negotiation: bool,
    /// Reaching and being reached across NAT routers: AutoNAT, relays, hole punching, UPnP.
    /// Default: [`NatConfig::default`] (passive: nothing probes, maps or reserves).
    pub nat: NatConfig,
}

/// Whether this node serves as a circuit relay (v2) for NATed peers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RelayServerMode {
    /// Never.
    #[default]
    Off,
    /// While this node is a Kademlia server (a gateway) and publicly reachable (a confirmed
    /// external address: AutoNAT, UPnP or [`NatConfig::external_addrs`]).
    Auto,
    /// Whenever this node has a confirmed external address, whatever its mode (the
    /// `cpns-auth` host configured as the community's relay).
    Always,
}

/// What a relay grants, and to how many (libp2p's `relay::Config`, with CPNS defaults).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RelayLimits {
    /// Most reservations held at once. Default: 128.
    pub max_reservations: usize,
    /// Most reservations per peer. Default: 2.
    pub max_reservations_per_peer: usize,
    /// How long a reservation lasts before the peer must renew it. Default: 1 h.
    pub reservation_duration: Duration,
    /// Most relayed connections (circuits) at once. Default: 64.
    pub max_circuits: usize,
    /// Most circuits per peer (as source or destination). Default: 8.
    pub max_circuits_per_peer: usize,
    /// Longest life of one circuit. Default: 30 min. libp2p's 2 min would cut a PN's
    /// heartbeats every two minutes where hole punching cannot succeed.
    pub max_circuit_duration: Duration,
    /// Most bytes one circuit carries (both directions) before it is closed. Default: 64 MiB.
    /// libp2p's 128 KiB ends a circuit in the middle of a photo; a household behind a
    /// symmetric NAT has nothing but the relay.
    pub max_circuit_bytes: u64,
}

impl Default for RelayLimits {
    fn default() -> Self {
        Self {
            max_reservations: 128,
            max_reservations_per_peer: 2,
            reservation_duration: Duration::from_secs(3600),
            max_circuits: 64,
            max_circuits_per_peer: 8,
            max_circuit_duration: Duration::from_secs(30 * 60),
            max_circuit_bytes: 64 << 20,
        }
    }
}

/// NAT traversal settings. The default is passive, right for tests and loopback meshes: no
/// probing, no port mapping, no relay role, no reservations; a relayed connection someone
/// else opens is still accepted and upgraded by hole punching. [`NatConfig::home`] is what a
/// device at home wants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatConfig {
    /// AutoNAT v2 client: asks peers it dialed to dial back its address candidates, to learn
    /// whether it is reachable from outside. Default: false.
    pub autonat: bool,
    /// AutoNAT v2 server: dials back other peers' candidates (from a new port, so a
    /// hole-punched mapping cannot fake success). Default: false.
    pub autonat_server: bool,
    /// Also test private, loopback and CGNAT addresses (a lab whose "Internet" is a private
    /// range). Off, a device on a home LAN would take its LAN address, dialed back by a
    /// neighbour, for a public one. Default: false.
    pub probe_private_addrs: bool,
    /// This node's circuit relay role. Default: off.
    pub relay_server: RelayServerMode,
    /// What this node grants as a relay.
    pub relay_limits: RelayLimits,
    /// Relays (`/ip4/…/tcp/…/p2p/RELAY`) this node reserves a slot on while it is not known
    /// to be publicly reachable, advertising `…/p2p/RELAY/p2p-circuit/p2p/ME`. Default: none.
    pub relays: Vec<Multiaddr>,
    /// Also reserve on peers this node dialed that offer relaying (a public gateway, the
    /// `cpns-auth` host). Default: false.
    pub auto_relay: bool,
    /// Most relays holding a reservation for this node at once. Default: 2.
    pub max_relays: usize,
    /// DCUtR: upgrade relayed connections to direct ones by hole punching. Default: true.
    pub hole_punching: bool,
    /// How long a relayed connection lives on beside a direct one to the same peer, for
    /// requests already on it; then it is closed, so that traffic leaves the relay. Default:
    /// 2 s.
    pub retire_relayed_after: Duration,
    /// UPnP IGD port mapping on the home router. Sends SSDP multicast on the LAN: off in
    /// tests. Default: false.
    pub upnp: bool,
    /// Addresses this node is known to be reachable at (a server with a public address or a
    /// port forward); announced as confirmed without probing. Default: none.
    pub external_addrs: Vec<Multiaddr>,
}

impl Default for NatConfig {
    fn default() -> Self {
        Self {
            autonat: false,
            autonat_server: false,
            probe_private_addrs: false,
            relay_server: RelayServerMode::Off,
            relay_limits: RelayLimits::default(),
            relays: Vec::new(),
            auto_relay: false,
            max_relays: 2,
            hole_punching: true,
            retire_relayed_after: Duration::from_secs(2),
            upnp: false,
            external_addrs: Vec::new(),
        }
    }
}

impl NatConfig {
    /// A device at home: learns its reachability, reserves on relays while not reachable,
    /// punches holes, relays for others when it is a public gateway. UPnP stays as given
    /// (the node's config switches it).
    pub fn home() -> Self {
        Self {
            autonat: true,
            autonat_server: true,
            relay_server: RelayServerMode::Auto,
            auto_relay: true,
            ..Self::default()
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: vec![loopback_any()],
            bootstrap: Vec::new(),
            kad_mode: KadMode::Server,
            replication_factor: 8,
            query_timeout: Duration::from_secs(10),
            parallelism: 3,
            mdns: false,
            max_frame: DEFAULT_MAX_FRAME,
            max_streams_per_connection: 64,
            frame_budget: crate::codec::DEFAULT_FRAME_BUDGET,
            request_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(60),
            connection_timeout: Duration::from_secs(8),
            ping_interval: Duration::from_secs(15),
            bootstrap_interval: Duration::from_secs(300),
            command_capacity: 1024,
            event_capacity: 1024,
            max_pending: 4096,
            max_connections: 1024,
            max_connections_per_peer: 4,
            max_records: 65_536,
            max_record_bytes: 64 * 1024,
            max_record_store_bytes: 32 * 1024 * 1024,
            max_provided_keys: 4096,
            max_providers_per_key: 64,
            max_provider_records: 16_384,
            max_provider_records_per_peer: 1024,
            purge_interval: Duration::from_secs(60),
            credential: None,
            record_ttl: Some(Duration::from_secs(48 * 3600)),
            validator: Arc::new(AcceptAll),
            gate_requests: true,
            max_admitted: 16_384,
            agent: format!("cpns/{}", env!("CARGO_PKG_VERSION")),
            lazy_negotiation: true,
            nat: NatConfig::default(),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("bootstrap", &self.bootstrap)
            .field("kad_mode", &self.kad_mode)
            .field("replication_factor", &self.replication_factor)
            .field("mdns", &self.mdns)
            .field("max_frame", &self.max_frame)
            .field("gate_requests", &self.gate_requests)
            .field("nat", &self.nat)
            .finish_non_exhaustive()
    }
}

/// `/ip4/127.0.0.1/tcp/0`: any free port on loopback.
pub fn loopback_any() -> Multiaddr {
    Multiaddr::from(std::net::Ipv4Addr::LOCALHOST).with(libp2p::multiaddr::Protocol::Tcp(0))
}
