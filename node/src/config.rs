//! The node's configuration, built in layers: built-in defaults, then the TOML file
//! (`--config F`), then `CPNS_*` environment variables, then command-line flags.
//!
//! Every key of the file can be overridden from the environment: the variable's name is
//! `CPNS_` followed by the key's path in upper case joined by `_`, for example `CPNS_MODE`,
//! `CPNS_API_PORT`, `CPNS_STATUS_HEARTBEAT_SECS`, `CPNS_CAPABILITIES_BATTERY_PERCENT`. Lists
//! (`listen`, `bootstrap`) take comma-separated values. [`Config::validate`] names the bad key
//! in its error, which is what `cpns-node --check-config` prints.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use cpns_overlay::{GatewayPreference, Multiaddr};
use serde::{Deserialize, Serialize};

/// The mode the owner asks for (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ModeSetting {
    /// Start as a PNE; become the gateway if the election (B.1 step 5) picks this device.
    #[default]
    Auto,
    /// Always a PNE, never a gateway; a Kademlia client.
    Pne,
    /// Always a gateway (and a PNE too: B.2.2's combined entity); a Kademlia server.
    Gateway,
    /// A gateway only (B.2.2's PN GW without a PNE): it routes the DHT and serves its PN —
    /// admissions, the PN Inventory, status, keys — but offers and consumes no services.
    GatewayOnly,
}

impl ModeSetting {
    /// Whether this setting makes the node a gateway whatever the election says.
    pub fn is_gateway(&self) -> bool {
        matches!(self, Self::Gateway | Self::GatewayOnly)
    }
}

impl FromStr for ModeSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "pne" => Ok(Self::Pne),
            "gateway" => Ok(Self::Gateway),
            "gateway-only" => Ok(Self::GatewayOnly),
            other => Err(format!(
                "unknown mode {other:?} (expected auto, pne, gateway or gateway-only)"
            )),
        }
    }
}

impl std::fmt::Display for ModeSetting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::Pne => "pne",
            Self::Gateway => "gateway",
            Self::GatewayOnly => "gateway-only",
        })
    }
}

/// Status Management settings (5.6.2).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StatusConfig {
    /// How often a PNE reports to its gateway, in seconds. Default: 5.
    pub heartbeat_secs: u64,
    /// After how many seconds of silence the gateway marks a PNE Offline. Default: 15.
    pub offline_after_secs: u64,
    /// Report to subscribers when the battery falls below this percentage. Default: 20.
    pub battery_threshold: u8,
    /// After how many seconds without an answer from its gateway a PNE starts a gateway
    /// failover (5.6.9; see the `pn::failover` module). 0: never. Default: 60.
    pub gateway_failover_after_secs: u64,
}

impl Default for StatusConfig {
    fn default() -> Self {
        Self {
            heartbeat_secs: 5,
            offline_after_secs: 15,
            battery_threshold: 20,
            gateway_failover_after_secs: 60,
        }
    }
}

/// Overrides of Device Capabilities (5.6.1), for devices that cannot report themselves and
/// for tests. Unset keys are read from the machine.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapabilitiesConfig {
    /// Device type (`laptop`, `nas`, `phone`, `settop-box`...). Default: guessed.
    pub device_type: Option<String>,
    /// Screen as `WIDTHxHEIGHT`, or `none`.
    pub screen: Option<String>,
    /// Battery design capacity in mWh.
    pub battery_capacity_mwh: Option<u32>,
    /// Power source: `mains` or `battery`.
    pub power: Option<String>,
    /// Remaining battery in percent.
    pub battery_percent: Option<u8>,
    /// Whether the device reaches a WAN.
    pub wan: Option<bool>,
    /// Total memory in bytes.
    pub memory_bytes: Option<u64>,
    /// Free memory in bytes.
    pub free_memory_bytes: Option<u64>,
    /// Number of CPUs.
    pub cpu_cores: Option<u16>,
    /// Chipsets, free text.
    pub chipsets: Option<Vec<String>>,
}

/// On, off, or decided by the node (`auto`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// The node decides (see the key's documentation).
    #[default]
    Auto,
    /// On.
    On,
    /// Off.
    Off,
}

impl FromStr for Switch {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "on" | "true" => Ok(Self::On),
            "off" | "false" => Ok(Self::Off),
            other => Err(format!("expected auto, on or off, got {other:?}")),
        }
    }
}

/// When this node relays for others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayRole {
    /// While it is a gateway (a DHT server) with a confirmed public address.
    #[default]
    Auto,
    /// Whenever it has a confirmed public address, also as a PNE.
    Always,
    /// Never.
    Never,
}

/// What this node grants as a relay (5.6.7 traffic of households that cannot reach each
/// other directly passes through it).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RelayLimitsConfig {
    /// Most reservations held for other nodes. Default: 128.
    pub max_reservations: usize,
    /// Most reservations per node. Default: 2.
    pub max_reservations_per_peer: usize,
    /// Most relayed connections at once. Default: 64.
    pub max_circuits: usize,
    /// Most relayed connections per node. Default: 8.
    pub max_circuits_per_peer: usize,
    /// Longest life of one relayed connection, in seconds (then the nodes open a new one).
    /// Default: 1800.
    pub max_circuit_secs: u64,
    /// Most bytes one relayed connection carries, both directions, in MiB. Default: 64.
    pub max_circuit_mib: u64,
}

impl Default for RelayLimitsConfig {
    fn default() -> Self {
        let l = cpns_overlay::RelayLimits::default();
        Self {
            max_reservations: l.max_reservations,
            max_reservations_per_peer: l.max_reservations_per_peer,
            max_circuits: l.max_circuits,
            max_circuits_per_peer: l.max_circuits_per_peer,
            max_circuit_secs: l.max_circuit_duration.as_secs(),
            max_circuit_mib: l.max_circuit_bytes >> 20,
        }
    }
}

impl RelayLimitsConfig {
    /// The overlay's limits.
    pub fn to_overlay(&self) -> cpns_overlay::RelayLimits {
        cpns_overlay::RelayLimits {
            max_reservations: self.max_reservations,
            max_reservations_per_peer: self.max_reservations_per_peer,
            max_circuits: self.max_circuits,
            max_circuits_per_peer: self.max_circuits_per_peer,
            max_circuit_duration: std::time::Duration::from_secs(self.max_circuit_secs),
            max_circuit_bytes: self.max_circuit_mib << 20,
            ..cpns_overlay::RelayLimits::default()
        }
    }

    /// Checks the limits; the error names the key under `prefix`.
    pub fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.max_circuit_secs == 0 || self.max_circuit_secs > u64::from(u32::MAX) {
            return Err(invalid(
                &format!("{prefix}.max_circuit_secs"),
                "must be between 1 and 4294967295",
            ));
        }
        if self.max_circuit_mib == 0 || self.max_circuit_mib > 1 << 20 {
            return Err(invalid(
                &format!("{prefix}.max_circuit_mib"),
                "must be between 1 and 1048576",
            ));
        }
        if self.max_reservations_per_peer == 0 || self.max_circuits_per_peer == 0 {
            return Err(invalid(
                &format!("{prefix}.max_reservations_per_peer"),
                "per-peer limits must be at least 1",
            ));
        }
        Ok(())
    }
}

/// Reaching and being reached across home routers (NAT): AutoNAT, circuit relays, hole
/// punching, UPnP port mapping.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatSection {
    /// Learn whether this node is reachable from outside (AutoNAT v2: peers it dialed try to
    /// dial its addresses back), and answer others' probes. Default: true.
    pub autonat: bool,
    /// UPnP IGD port mapping on the home router: `on`, `off`, or `auto` (on when `mdns` is on:
    /// both multicast on the LAN, and `--mdns off` is how tests and `cpns mesh` keep multicast
    /// off the network). Default: auto.
    pub upnp: Switch,
    /// Relays to hold a slot on while this node is not publicly reachable
    /// (`/ip4/…/tcp/…/p2p/PEERID` or `/dns4/…`). Default: none.
    pub relays: Vec<String>,
    /// Also use `cpns-auth`'s host as a relay when it offers relaying, and any public gateway
    /// this node dialed that does. Default: true.
    pub auto_relay: bool,
    /// Most relays holding a slot for this node at once. Default: 2.
    pub max_relays: usize,
    /// Upgrade relayed connections to direct ones by hole punching (DCUtR). Default: true.
    pub hole_punching: bool,
    /// When this node relays for others: `auto` (as a gateway with a confirmed public
    /// address), `always`, `never`. Default: auto.
    pub relay: RelayRole,
    /// Addresses this node is reachable at without probing (a port forward on the router, a
    /// public server); announced as confirmed. Default: none.
    pub external_addrs: Vec<String>,
    /// Probe private and CGNAT addresses too (a lab whose "Internet" is a private range).
    /// Default: false.
    pub probe_private_addrs: bool,
    /// What this node grants as a relay.
    pub relay_limits: RelayLimitsConfig,
}

impl Default for NatSection {
    fn default() -> Self {
        Self {
            autonat: true,
            upnp: Switch::Auto,
            relays: Vec::new(),
            auto_relay: true,
            max_relays: 2,
            hole_punching: true,
            relay: RelayRole::Auto,
            external_addrs: Vec::new(),
            probe_private_addrs: false,
            relay_limits: RelayLimitsConfig::default(),
        }
    }
}

/// Usage reporting preferences (5.6.3).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct UsageConfig {
    /// Service names or ids never to report ("IPTV viewing is not allowed to be reported").
    pub never_report: Vec<String>,
    /// An external collector of usage records (5.6.3 "external entities"): an `http://` URL
    /// that each record is POSTed to as JSON, where the user's preferences allow; empty: none.
    /// Default: empty.
    pub collector_url: String,
    /// How often the device's capabilities and status are sampled during a service use, in
    /// seconds (besides at the start, at the end and at every change). Default: 10.
    pub sample_secs: u64,
}

impl Default for UsageConfig {
    fn default() -> Self {
        Self {
            never_report: Vec::new(),
            collector_url: String::new(),
            sample_secs: 10,
        }
    }
}

/// Service/Content Delivery (5.6.7): pushes, their receivers' policy, external sources.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// What a push from another user's device that shares this node's PN or a Service Group
    /// gets: `ask` (it waits in `cpns content inbox` for the owner) or `decline`. Pushes from
    /// the owner's own devices are always accepted, and pushes from anyone else (another
    /// household) always declined. Default: ask.
    pub push_from_others: String,
    /// Most pushes this node keeps for receivers that are offline, until they return (the
    /// oldest is dropped beyond this). Default: 64.
    pub push_queue: usize,
    /// How often queued pushes are retried, in seconds (also whenever a member comes back
    /// online). Default: 30.
    pub push_retry_secs: u64,
    /// How long content fetched from an external HTTP source is kept and served to further
    /// consumers before it is fetched again, in seconds. Default: 300.
    pub external_cache_secs: u64,
    /// Largest content fetched from an external HTTP source, in bytes. Default: 1073741824.
    pub max_external_bytes: u64,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            push_from_others: "ask".into(),
            push_queue: 64,
            push_retry_secs: 30,
            external_cache_secs: 300,
            max_external_bytes: 1 << 30,
        }
    }
}

/// The gateway's Non-CPNS proxy for UPnP/DLNA devices on its LAN (5.6.10; docs/PROXY.md).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxyConfig {
    /// Search the LAN for UPnP devices by SSDP (multicast) and speak for them in the PN.
    /// Default: false (SSDP leaves the machine: the owner turns it on).
    pub enabled: bool,
    /// Seconds between two SSDP searches; a device missing from two in a row leaves the PN.
    /// Default: 30.
    pub search_secs: u64,
    /// Most items of one MediaServer published. Default: 64.
    pub max_items: usize,
    /// Largest item fetched from a device, in bytes. Default: 64 MiB.
    pub max_item_bytes: u64,
    /// Let members play PN services on the LAN's MediaRenderers: the gateway then serves the
    /// one item played over HTTP on the LAN, at an unguessable URL, to the renderer. Default:
    /// false (nothing of the PN is offered to the LAN without the owner's choice).
    pub expose: bool,
    /// TCP port of that HTTP server (0: any free port). Default: 0.
    pub expose_port: u16,
}

impl Default for ProxyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            search_secs: 30,
            max_items: 64,
            max_item_bytes: 64 << 20,
            expose: false,
            expose_port: 0,
        }
    }
}

/// Zone-based service (Appendix F; docs/ZONES.md): a Zone PN GW's zone, and whether this
/// node answers zone gateways' searches.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZoneConfig {
    /// The zone's name: a gateway with a name searches its LAN every `search_secs` and pushes
    /// `services` to the PNEs it registers. Default: empty (no zone).
    pub name: String,
    /// Ids of this node's own services whose descriptions are pushed. Default: none.
    pub services: Vec<String>,
    /// Seconds between two searches; a PNE missing from two in a row has left. Default: 30.
    pub search_secs: u64,
    /// Answer zone gateways' searches, so that they register this PNE in their zone PN and
    /// push to it (the user's consent of Appendix F). Default: false.
    pub discoverable: bool,
    /// UDP port of the searches (multicast group 239.255.67.78). Default: 1902.
    pub port: u16,
}

impl Default for ZoneConfig {
    fn default() -> Self {
        Self {
            name: String::new(),
            services: Vec::new(),
            search_secs: 30,
            discoverable: false,
            port: 1902,
        }
    }
}

/// The node's configuration file, with every key documented in `node/deploy/cpns-node.toml`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the identity, enrolment, database and API token live. Default:
    /// `$XDG_DATA_HOME/cpns` or `~/.local/share/cpns`.
    pub data_dir: PathBuf,
    /// The device's name for people. Default: the host name.
    pub device_name: String,
    /// Listen addresses. Default: `/ip4/0.0.0.0/tcp/0` (any free port on every interface).
    pub listen: Vec<String>,
    /// Bootstrap peers (`/ip4/…/tcp/…/p2p/PEERID`). Default: none.
    pub bootstrap: Vec<String>,
    /// `auto`, `pne` or `gateway`. Default: auto.
    pub mode: ModeSetting,
    /// The owner's gateway preference for the election: `auto`, `always`, `never`.
    pub gateway_preference: String,
    /// LAN discovery with mDNS. Default: true (turn it off on machines whose multicast must
    /// not leave, and in tests).
    pub mdns: bool,
    /// Whether a LAN discovery starts pairing (B.1 steps 1-2) by itself. Default: true.
    pub auto_pair: bool,
    /// Log filter (`info`, `debug`, `cpns_node=debug,info`...). Default: info.
    pub log: String,
    /// Port of the local HTTP API on 127.0.0.1 (0: any free port; the address is written to
    /// `DATA_DIR/api.json`). Default: 0.
    pub api_port: u16,
    /// A separate listener that serves only `/metrics`, without a token, for Prometheus
    /// (`127.0.0.1:9464`); empty: none. The API port's `/metrics` needs the API's token like
    /// every other path. Default: empty.
    pub metrics_listen: String,
    /// Kademlia replication factor: how many gateways store each DHT record. Default: 8 (the
    /// DHT is made of a community's gateways; 8 replicas survive the loss of several while
    /// keeping publication fast — docs/BENCHMARKS.md measures 20 against 8).
    pub dht_replication: usize,
    /// Most trace events kept. Default: 4096.
    pub trace_capacity: usize,
    /// Renew the entity credential with `cpns-auth` once less than this percentage of its
    /// lifetime is left (1-100). Default: 33.
    pub credential_renew_percent: u8,
    /// How often the node asks `cpns-auth` for PN invitations waiting for it (5.6.9), in
    /// seconds; 0: never (a node with a session is still told at once). Default: 300.
    pub invitation_poll_secs: u64,
    /// Status management.
    pub status: StatusConfig,
    /// Capability overrides.
    pub capabilities: CapabilitiesConfig,
    /// Usage reporting preferences.
    pub usage: UsageConfig,
    /// The Non-CPNS proxy (gateway).
    pub proxy: ProxyConfig,
    /// Zone-based service.
    pub zone: ZoneConfig,
    /// Service/Content Delivery.
    pub delivery: DeliveryConfig,
    /// NAT traversal.
    pub nat: NatSection,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            data_dir: default_data_dir(),
            device_name: hostname(),
            listen: vec!["/ip4/0.0.0.0/tcp/0".into()],
            bootstrap: Vec::new(),
            mode: ModeSetting::Auto,
            gateway_preference: "auto".into(),
            mdns: true,
            auto_pair: true,
            log: "info".into(),
            api_port: 0,
            metrics_listen: String::new(),
            dht_replication: 8,
            trace_capacity: 4096,
            credential_renew_percent: 33,
            invitation_poll_secs: 300,
            status: StatusConfig::default(),
            capabilities: CapabilitiesConfig::default(),
            usage: UsageConfig::default(),
            proxy: ProxyConfig::default(),
            zone: ZoneConfig::default(),
            delivery: DeliveryConfig::default(),
            nat: NatSection::default(),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has an unknown key or a wrong type.
    #[error("config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message (it names the key).
        message: String,
    },
    /// A key has an invalid value.
    #[error("invalid value for `{key}`: {message}")]
    Invalid {
        /// The key, as in the file.
        key: String,
        /// What is wrong.
        message: String,
    },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        message: message.into(),
    }
}

impl Config {
    /// Loads the file (if any) over the defaults, then applies `CPNS_*` variables from `env`.
    pub fn load(file: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let mut value =
            toml::Value::try_from(Config::default()).map_err(|e| invalid("", e.to_string()))?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
            // Parse into the typed struct first: that names unknown keys and wrong types.
            let parsed: Config = toml::from_str(&text).map_err(|e| ConfigError::Parse {
                path: path.to_owned(),
                message: e.to_string(),
            })?;
            value = toml::Value::try_from(parsed).map_err(|e| invalid("", e.to_string()))?;
        }
        apply_env(&mut value, &mut Vec::new(), env)?;
        let config: Config = value
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse {
                path: PathBuf::from("<environment>"),
                message: e.to_string(),
            })?;
        Ok(config)
    }

    /// Checks every value; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty"));
        }
        if self.device_name.trim().is_empty() || self.device_name.len() > 256 {
            return Err(invalid("device_name", "must be 1 to 256 bytes"));
        }
        if self.listen.is_empty() {
            return Err(invalid("listen", "at least one address is needed"));
        }
        for a in &self.listen {
            Multiaddr::from_str(a).map_err(|e| invalid("listen", format!("{a:?}: {e}")))?;
        }
        for a in &self.bootstrap {
            let addr =
                Multiaddr::from_str(a).map_err(|e| invalid("bootstrap", format!("{a:?}: {e}")))?;
            if cpns_overlay::peer_of(&addr).is_none() {
                return Err(invalid("bootstrap", format!("{a:?} lacks /p2p/PEERID")));
            }
        }
        GatewayPreference::from_str(&self.gateway_preference)
            .map_err(|e| invalid("gateway_preference", e))?;
        tracing_subscriber::EnvFilter::try_new(&self.log)
            .map_err(|e| invalid("log", e.to_string()))?;
        if !self.metrics_listen.is_empty()
            && self.metrics_listen.parse::<std::net::SocketAddr>().is_err()
        {
            return Err(invalid(
                "metrics_listen",
                "must be an address with a port, like 127.0.0.1:9464",
            ));
        }
        if self.dht_replication == 0 || self.dht_replication > 64 {
            return Err(invalid("dht_replication", "must be between 1 and 64"));
        }
        if self.trace_capacity == 0 || self.trace_capacity > 1_000_000 {
            return Err(invalid("trace_capacity", "must be between 1 and 1000000"));
        }
        if !(1..=100).contains(&self.credential_renew_percent) {
            return Err(invalid(
                "credential_renew_percent",
                "must be between 1 and 100",
            ));
        }
        if self.status.heartbeat_secs == 0 {
            return Err(invalid("status.heartbeat_secs", "must be at least 1"));
        }
        if self.status.offline_after_secs <= self.status.heartbeat_secs {
            return Err(invalid(
                "status.offline_after_secs",
                "must be longer than status.heartbeat_secs",
            ));
        }
        let failover = self.status.gateway_failover_after_secs;
        if failover != 0 && failover <= self.status.heartbeat_secs {
            return Err(invalid(
                "status.gateway_failover_after_secs",
                "must be 0 (never) or longer than status.heartbeat_secs",
            ));
        }
        if !(1..=3600).contains(&self.proxy.search_secs) {
            return Err(invalid("proxy.search_secs", "must be between 1 and 3600"));
        }
        if !(1..=3600).contains(&self.zone.search_secs) {
            return Err(invalid("zone.search_secs", "must be between 1 and 3600"));
        }
        if self.zone.name.len() > cpns_overlay::MAX_ZONE_NAME {
            return Err(invalid("zone.name", "must be at most 64 bytes"));
        }
        if self.zone.services.len() > cpns_overlay::MAX_ZONE_SERVICES {
            return Err(invalid("zone.services", "at most 64 services"));
        }
        if self.zone.port == 0 {
            return Err(invalid("zone.port", "must not be 0"));
        }
        if self.proxy.max_items > 4096 {
            return Err(invalid("proxy.max_items", "must be at most 4096"));
        }
        for a in &self.nat.relays {
            let addr =
                Multiaddr::from_str(a).map_err(|e| invalid("nat.relays", format!("{a:?}: {e}")))?;
            if cpns_overlay::peer_of(&addr).is_none() {
                return Err(invalid("nat.relays", format!("{a:?} lacks /p2p/PEERID")));
            }
        }
        for a in &self.nat.external_addrs {
            Multiaddr::from_str(a)
                .map_err(|e| invalid("nat.external_addrs", format!("{a:?}: {e}")))?;
        }
        if self.nat.max_relays > 8 {
            return Err(invalid("nat.max_relays", "must be at most 8"));
        }
        self.nat.relay_limits.validate("nat.relay_limits")?;
        if self.status.battery_threshold > 100 {
            return Err(invalid("status.battery_threshold", "must be a percentage"));
        }
        let caps = &self.capabilities;
        if let Some(s) = &caps.screen
            && s != "none"
            && parse_screen(s).is_none()
        {
            return Err(invalid(
                "capabilities.screen",
                "expected WIDTHxHEIGHT or none",
            ));
        }
        if let Some(p) = &caps.power
            && p != "mains"
            && p != "battery"
        {
            return Err(invalid("capabilities.power", "expected mains or battery"));
        }
        if caps.battery_percent.is_some_and(|b| b > 100) {
            return Err(invalid(
                "capabilities.battery_percent",
                "must be a percentage",
            ));
        }
        let url = &self.usage.collector_url;
        if !url.is_empty() && !url.starts_with("http://") {
            return Err(invalid(
                "usage.collector_url",
                "must be empty or an http:// URL",
            ));
        }
        if self.usage.sample_secs == 0 {
            return Err(invalid("usage.sample_secs", "must be at least 1"));
        }
        let d = &self.delivery;
        if d.push_from_others != "ask" && d.push_from_others != "decline" {
            return Err(invalid(
                "delivery.push_from_others",
                "expected ask or decline",
            ));
        }
        if d.push_queue == 0 || d.push_queue > 10_000 {
            return Err(invalid(
                "delivery.push_queue",
                "must be between 1 and 10000",
            ));
        }
        if d.push_retry_secs == 0 {
            return Err(invalid("delivery.push_retry_secs", "must be at least 1"));
        }
        if d.max_external_bytes == 0 {
            return Err(invalid("delivery.max_external_bytes", "must be at least 1"));
        }
        Ok(())
    }

    /// The listen addresses, parsed (call [`Config::validate`] first).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen.iter().filter_map(|a| a.parse().ok()).collect()
    }

    /// The bootstrap addresses, parsed.
    pub fn bootstrap_addrs(&self) -> Vec<Multiaddr> {
        self.bootstrap
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect()
    }

    /// Whether UPnP port mapping runs (`nat.upnp`; `auto` follows `mdns`).
    pub fn upnp(&self) -> bool {
        match self.nat.upnp {
            Switch::On => true,
            Switch::Off => false,
            Switch::Auto => self.mdns,
        }
    }

    /// The overlay's NAT settings; `auth_server` (the enrolment's `cpns-auth` addresses) is
    /// tried as a relay with `nat.auto_relay`.
    pub fn nat_overlay(&self, auth_server: &[Multiaddr]) -> cpns_overlay::NatConfig {
        let nat = &self.nat;
        let parse =
            |v: &[String]| -> Vec<Multiaddr> { v.iter().filter_map(|a| a.parse().ok()).collect() };
        let mut relays = parse(&nat.relays);
        if nat.auto_relay {
            for a in auth_server {
                if cpns_overlay::peer_of(a).is_some() && !relays.contains(a) {
                    relays.push(a.clone());
                }
            }
        }
        cpns_overlay::NatConfig {
            autonat: nat.autonat,
            autonat_server: nat.autonat,
            probe_private_addrs: nat.probe_private_addrs,
            relay_server: match nat.relay {
                RelayRole::Auto => cpns_overlay::RelayServerMode::Auto,
                RelayRole::Always => cpns_overlay::RelayServerMode::Always,
                RelayRole::Never => cpns_overlay::RelayServerMode::Off,
            },
            relay_limits: nat.relay_limits.to_overlay(),
            relays,
            auto_relay: nat.auto_relay,
            max_relays: nat.max_relays,
            hole_punching: nat.hole_punching,
            upnp: self.upnp(),
            external_addrs: parse(&nat.external_addrs),
            ..cpns_overlay::NatConfig::default()
        }
    }

    /// The gateway preference, parsed.
    pub fn gateway_preference(&self) -> GatewayPreference {
        match self.mode {
            ModeSetting::Pne => GatewayPreference::Never,
            ModeSetting::Gateway | ModeSetting::GatewayOnly => GatewayPreference::Always,
            ModeSetting::Auto => self.gateway_preference.parse().unwrap_or_default(),
        }
    }
}

/// Parses `WIDTHxHEIGHT`.
pub fn parse_screen(s: &str) -> Option<(u32, u32)> {
    let (w, h) = s.split_once('x')?;
    Some((w.trim().parse().ok()?, h.trim().parse().ok()?))
}

/// Applies `CPNS_<PATH>` variables over every key present in `value` (the defaults or the
/// file), converting each to the key's type.
fn apply_env(
    value: &mut toml::Value,
    path: &mut Vec<String>,
    env: &BTreeMap<String, String>,
) -> Result<(), ConfigError> {
    let toml::Value::Table(table) = value else {
        return Ok(());
    };
    for (key, v) in table.iter_mut() {
        path.push(key.clone());
        if let toml::Value::Table(_) = v {
            apply_env(v, path, env)?;
        } else {
            let var = format!("CPNS_{}", path.join("_").to_uppercase());
            if let Some(raw) = env.get(&var) {
                *v = convert(v, raw)
                    .map_err(|m| invalid(&format!("{} (from {var})", path.join(".")), m))?;
            }
        }
        path.pop();
    }
    // Optional keys are absent from the serialized defaults; accept their variables too.
    for (section, keys) in OPTIONAL_KEYS {
        if path.last().map(String::as_str) != Some(*section) {
            continue;
        }
        for (key, kind) in *keys {
            let mut full = path.clone();
            full.push((*key).to_string());
            let var = format!("CPNS_{}", full.join("_").to_uppercase());
            if let Some(raw) = env.get(&var) {
                let template = match kind {
                    Kind::Str => toml::Value::String(String::new()),
                    Kind::Int => toml::Value::Integer(0),
                    Kind::Bool => toml::Value::Boolean(false),
                    Kind::List => toml::Value::Array(Vec::new()),
                };
                let v = convert(&template, raw).map_err(|m| invalid(&full.join("."), m))?;
                table.insert((*key).to_string(), v);
            }
        }
    }
    Ok(())
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Keys that are `Option` (absent from the defaults), by section.
const OPTIONAL_KEYS: &[(&str, &[(&str, Kind)])] = &[(
    "capabilities",
    &[
        ("device_type", Kind::Str),
        ("screen", Kind::Str),
        ("battery_capacity_mwh", Kind::Int),
        ("power", Kind::Str),
        ("battery_percent", Kind::Int),
        ("wan", Kind::Bool),
        ("memory_bytes", Kind::Int),
        ("free_memory_bytes", Kind::Int),
        ("cpu_cores", Kind::Int),
        ("chipsets", Kind::List),
    ],
)];

fn convert(template: &toml::Value, raw: &str) -> Result<toml::Value, String> {
    Ok(match template {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => toml::Value::Integer(
            raw.trim()
                .parse()
                .map_err(|e| format!("{raw:?} is not an integer: {e}"))?,
        ),
        toml::Value::Boolean(_) => toml::Value::Boolean(match raw.trim() {
            "1" | "true" | "on" | "yes" => true,
            "0" | "false" | "off" | "no" => false,
            other => return Err(format!("{other:?} is not a boolean (true/false/on/off)")),
        }),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
        other => {
            return Err(format!(
                "cannot set a {} from the environment",
                other.type_str()
            ));
        }
    })
}

pub use cpns_api::default_data_dir;

fn hostname() -> String {
    sysinfo::System::host_name().unwrap_or_else(|| "cpns-device".into())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_validate() {
        Config::default().validate().unwrap();
    }

    #[test]
    fn env_overrides_file_and_nested_keys() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "mode = \"pne\"\napi_port = 9000\n[status]\nheartbeat_secs = 2\n",
        )
        .unwrap();
        let c = Config::load(
            Some(&f),
            &env(&[
                ("CPNS_MODE", "gateway"),
                ("CPNS_STATUS_OFFLINE_AFTER_SECS", "30"),
                ("CPNS_LISTEN", "/ip4/127.0.0.1/tcp/0, /ip4/127.0.0.1/tcp/1"),
                ("CPNS_CAPABILITIES_BATTERY_PERCENT", "55"),
                ("CPNS_MDNS", "off"),
            ]),
        )
        .unwrap();
        assert_eq!(c.mode, ModeSetting::Gateway);
        assert_eq!(c.api_port, 9000);
        assert_eq!(c.status.heartbeat_secs, 2);
        assert_eq!(c.status.offline_after_secs, 30);
        assert_eq!(c.listen.len(), 2);
        assert_eq!(c.capabilities.battery_percent, Some(55));
        assert!(!c.mdns);
    }

    #[test]
    fn unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "moed = \"pne\"\n").unwrap();
        let e = Config::load(Some(&f), &BTreeMap::new())
            .unwrap_err()
            .to_string();
        assert!(e.contains("moed"), "{e}");
    }

    #[test]
    fn bad_values_name_their_key() {
        let c = Config {
            bootstrap: vec!["/ip4/127.0.0.1/tcp/1".into()],
            ..Config::default()
        };
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("`bootstrap`")
        );
        let mut c = Config::default();
        c.status.offline_after_secs = 1;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("status.offline_after_secs")
        );
        let e = Config::load(None, &env(&[("CPNS_API_PORT", "many")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("api_port"), "{e}");
    }
}
