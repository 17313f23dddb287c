//! Device Capabilities (5.6.1): `GET, POST /v1/capabilities`. The shapes mirror the overlay's
//! wire types field for field, enums with their Rust variant names, so the JSON is what the
//! node has always sent.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The operational CPNS mode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeMode {
    /// A PNE only.
    #[default]
    Pne,
    /// A PN gateway only.
    Gateway,
    /// Both (B.2.2 "combined PNE & PN GW").
    PneGateway,
}

impl NodeMode {
    /// `pne`, `gateway` or `pne+gateway`, as `/v1/status` shows modes.
    pub fn as_str(&self) -> &'static str {
        match self {
            NodeMode::Pne => "pne",
            NodeMode::Gateway => "gateway",
            NodeMode::PneGateway => "pne+gateway",
        }
    }
}

impl fmt::Display for NodeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The owner's preference for the gateway role.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GatewayPreference {
    /// Let the election decide.
    #[default]
    Auto,
    /// Prefer this device.
    Always,
    /// Never this device.
    Never,
}

impl fmt::Display for GatewayPreference {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            GatewayPreference::Auto => "auto",
            GatewayPreference::Always => "always",
            GatewayPreference::Never => "never",
        })
    }
}

/// A screen, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screen {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
}

/// An installed application.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// The kind of a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkKind {
    /// Wired Ethernet.
    Ethernet,
    /// WiFi.
    Wifi,
    /// Cellular.
    Cellular,
    /// Bluetooth PAN.
    Bluetooth,
    /// Loopback.
    Loopback,
    /// Anything else.
    Other,
}

/// A network interface that is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// `eth0`, `wlan0`.
    pub name: String,
    /// Its kind.
    pub kind: NetworkKind,
}

/// Where the power comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerSource {
    /// Mains (or no battery).
    #[default]
    Mains,
    /// Battery.
    Battery,
}

/// Static parameters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticCapabilities {
    /// `laptop`, `nas`, `phone`…
    pub device_type: String,
    /// Operating system.
    pub os: String,
    /// Screen, if any.
    pub screen: Option<Screen>,
    /// Battery design capacity in mWh.
    pub battery_capacity_mwh: Option<u32>,
    /// Processor brand.
    pub cpu: String,
    /// Logical CPUs.
    pub cpu_cores: u16,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Chipsets, free text.
    pub chipsets: Vec<String>,
    /// Installed applications.
    pub applications: Vec<Application>,
}

/// Parameters that change while the device runs.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicCapabilities {
    /// Networks attached.
    pub networks: Vec<NetworkInterface>,
    /// Whether a WAN is reachable.
    pub wan: bool,
    /// Power source.
    pub power: PowerSource,
    /// Battery charge in percent.
    pub battery_percent: Option<u8>,
    /// Free memory in bytes.
    pub free_memory_bytes: u64,
    /// Running applications of interest.
    pub running_applications: Vec<String>,
}

/// A device's capabilities, including its current mode (`GET /v1/capabilities`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapabilitiesView {
    /// Current mode.
    pub mode: NodeMode,
    /// Gateway preference.
    pub gateway_preference: GatewayPreference,
    /// Static parameters.
    pub static_caps: StaticCapabilities,
    /// Dynamic parameters.
    pub dynamic: DynamicCapabilities,
    /// Goes up with every change.
    pub revision: u64,
}

/// `POST /v1/capabilities`: run-time overrides; unset keys stay as they are. The keys of
/// the config file's `[capabilities]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CapabilitiesPatch {
    /// Device type.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device_type: Option<String>,
    /// `WIDTHxHEIGHT` or `none`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub screen: Option<String>,
    /// Battery design capacity in mWh.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_capacity_mwh: Option<u32>,
    /// `mains` or `battery`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub power: Option<String>,
    /// Battery in percent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub battery_percent: Option<u8>,
    /// Whether a WAN is reachable.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wan: Option<bool>,
    /// Total memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
    /// Free memory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub free_memory_bytes: Option<u64>,
    /// CPUs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_cores: Option<u16>,
    /// Chipsets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub chipsets: Option<Vec<String>>,
}
