//! Device Capabilities (spec 5.6.1) as they travel on the wire.
//!
//! The node fills these from the machine (and its config); here they are only data. The mode is
//! part of the capabilities because B.1 says so: "mode information has to be included in the
//! device capabilities", which is what lets two devices elect a gateway (steps 5-7).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The operational CPNS mode of a node (5.6.5: "the current operational CPNS Mode").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum NodeMode {
    /// A Personal Network Element only.
    #[default]
    Pne,
    /// A PN gateway only.
    Gateway,
    /// Both (B.2.2 "combined PNE & PN GW"): a gateway that also offers and consumes services.
    PneGateway,
}

impl NodeMode {
    /// Whether the node acts as a gateway.
    pub fn is_gateway(&self) -> bool {
        matches!(self, NodeMode::Gateway | NodeMode::PneGateway)
    }

    /// The mode as shown in the CLI and JSON: `pne`, `gateway` or `pne+gateway`.
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

impl FromStr for NodeMode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pne" => Ok(NodeMode::Pne),
            "gateway" => Ok(NodeMode::Gateway),
            "pne+gateway" => Ok(NodeMode::PneGateway),
            other => Err(format!(
                "unknown mode {other:?} (expected pne, gateway or pne+gateway)"
            )),
        }
    }
}

/// The owner's preference for the gateway role, used by the election (B.1 step 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum GatewayPreference {
    /// Let the election decide.
    #[default]
    Auto,
    /// Prefer this device whenever it takes part in an election.
    Always,
    /// Never make this device a gateway.
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

impl FromStr for GatewayPreference {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(Self::Auto),
            "always" => Ok(Self::Always),
            "never" => Ok(Self::Never),
            other => Err(format!(
                "unknown gateway preference {other:?} (expected auto, always or never)"
            )),
        }
    }
}

/// A screen, in pixels.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Screen {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

/// An installed application and its version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Application {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: String,
}

/// The kind of a network the device is attached to (5.6.1 "current networks").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum NetworkKind {
    /// Wired Ethernet.
    Ethernet,
    /// WiFi.
    Wifi,
    /// A cellular network (UMTS, LTE, ...).
    Cellular,
    /// Bluetooth PAN.
    Bluetooth,
    /// The loopback interface.
    Loopback,
    /// Anything else (bridges, veth, tunnels).
    Other,
}

/// One network interface that is up.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInterface {
    /// Interface name (`eth0`, `wlan0`).
    pub name: String,
    /// Its kind.
    pub kind: NetworkKind,
}

/// Where the device's power comes from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum PowerSource {
    /// Mains power (or no battery at all).
    #[default]
    Mains,
    /// Running on battery.
    Battery,
}

/// Static or rarely changing parameters (5.6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StaticCapabilities {
    /// Device type, e.g. `laptop`, `nas`, `settop-box`, `phone`.
    pub device_type: String,
    /// Operating system name and version.
    pub os: String,
    /// Screen size, if the device has one.
    pub screen: Option<Screen>,
    /// Battery design capacity in mWh, if the device has a battery.
    pub battery_capacity_mwh: Option<u32>,
    /// Processor brand string.
    pub cpu: String,
    /// Number of logical CPUs.
    pub cpu_cores: u16,
    /// Total memory in bytes.
    pub memory_bytes: u64,
    /// Chipsets (main, accelerator, network), as free text.
    pub chipsets: Vec<String>,
    /// Installed applications and versions (at least this CPNS node itself).
    pub applications: Vec<Application>,
}

/// Parameters that change while the device runs (5.6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DynamicCapabilities {
    /// Networks the device is currently attached to.
    pub networks: Vec<NetworkInterface>,
    /// Whether the device currently reaches a wide-area network.
    pub wan: bool,
    /// The current power source.
    pub power: PowerSource,
    /// Remaining battery charge in percent, if the device has a battery.
    pub battery_percent: Option<u8>,
    /// Currently available memory in bytes.
    pub free_memory_bytes: u64,
    /// Names of currently running applications of interest (bounded list).
    pub running_applications: Vec<String>,
}

/// A device's capabilities, including its current mode.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capabilities {
    /// Current operational mode.
    pub mode: NodeMode,
    /// The owner's gateway preference.
    pub gateway_preference: GatewayPreference,
    /// Static parameters.
    pub static_caps: StaticCapabilities,
    /// Dynamic parameters.
    pub dynamic: DynamicCapabilities,
    /// Increases with every change, so that a receiver keeps the newest.
    pub revision: u64,
}

/// What the gateway election (B.1 step 5) ranks a device by, in one small record: a member list
/// carries it for every member (so that a failover ranks the members by the same rule), and a
/// pairing derives it from the capabilities exchanged at steps 3-4.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Candidacy {
    /// The device's credential allows the gateway mode.
    pub allowed: bool,
    /// The owner's preference.
    pub preference: GatewayPreference,
    /// On mains power.
    pub mains: bool,
    /// Reaches a WAN.
    pub wan: bool,
    /// Remaining battery in percent (100 on mains).
    pub battery: u8,
    /// Total memory in 256 MiB steps.
    pub memory_steps: u64,
    /// Logical CPUs.
    pub cpu_cores: u16,
}

impl Candidacy {
    /// The candidacy of a device with `caps`, whose credential does (`allowed`) or does not allow
    /// the gateway mode.
    pub fn of(caps: &Capabilities, allowed: bool) -> Candidacy {
        let mains = caps.dynamic.power == PowerSource::Mains;
        Candidacy {
            allowed,
            preference: caps.gateway_preference,
            mains,
            wan: caps.dynamic.wan,
            battery: if mains {
                100
            } else {
                caps.dynamic.battery_percent.unwrap_or(0).min(100)
            },
            memory_steps: caps.static_caps.memory_bytes / (256 * 1024 * 1024),
            cpu_cores: caps.static_caps.cpu_cores,
        }
    }

    /// Whether the device may win an election at all.
    pub fn eligible(&self) -> bool {
        self.allowed && self.preference != GatewayPreference::Never
    }
}
