//! Device Capabilities (5.6.1), read from the machine where the OS tells them (sysinfo for CPU,
//! memory, networks and processes; starship-battery for the battery), overridden by the
//! `[capabilities]` section of the config for devices that cannot report themselves and for
//! tests.

use cpns_overlay::{
    Application, Capabilities, DynamicCapabilities, GatewayPreference, NetworkInterface,
    NetworkKind, NodeMode, PowerSource, Screen, StaticCapabilities,
};
use sysinfo::{Networks, ProcessRefreshKind, ProcessesToUpdate, System};

use crate::config::{CapabilitiesConfig, parse_screen};

/// Most running applications reported: the dynamic list is a hint, not an inventory.
const MAX_RUNNING_APPS: usize = 16;

/// What the battery says, if there is one.
struct BatteryReading {
    percent: u8,
    capacity_mwh: u32,
    discharging: bool,
}

fn read_battery() -> Option<BatteryReading> {
    use starship_battery::units::energy::watt_hour;
    use starship_battery::units::ratio::percent;
    let manager = starship_battery::Manager::new().ok()?;
    let battery = manager.batteries().ok()?.flatten().next()?;
    Some(BatteryReading {
        percent: battery.state_of_charge().get::<percent>().clamp(0.0, 100.0) as u8,
        capacity_mwh: (battery.energy_full_design().get::<watt_hour>() * 1000.0) as u32,
        discharging: battery.state() == starship_battery::State::Discharging,
    })
}

fn network_kind(name: &str) -> NetworkKind {
    if name == "lo" {
        NetworkKind::Loopback
    } else if name.starts_with("wl") {
        NetworkKind::Wifi
    } else if name.starts_with("en") || name.starts_with("eth") {
        NetworkKind::Ethernet
    } else if name.starts_with("ww") || name.starts_with("rmnet") {
        NetworkKind::Cellular
    } else if name.starts_with("bn") || name.starts_with("bt") {
        NetworkKind::Bluetooth
    } else {
        NetworkKind::Other
    }
}

/// Reads the machine. Costly (processes, battery): call it at start and on the refresh timer,
/// not per message.
pub(crate) struct Reader {
    system: System,
    networks: Networks,
}

impl Default for Reader {
    fn default() -> Self {
        Self::new()
    }
}

impl Reader {
    /// A reader with nothing read yet.
    pub(crate) fn new() -> Self {
        Self {
            system: System::new(),
            networks: Networks::new_with_refreshed_list(),
        }
    }

    /// Reads the capabilities now, applying `overrides`.
    pub(crate) fn read(
        &mut self,
        overrides: &CapabilitiesConfig,
        mode: NodeMode,
        preference: GatewayPreference,
        revision: u64,
    ) -> Capabilities {
        self.system.refresh_memory();
        self.system.refresh_cpu_all();
        self.networks.refresh(true);
        self.system.refresh_processes_specifics(
            ProcessesToUpdate::All,
            true,
            ProcessRefreshKind::nothing(),
        );
        let battery = read_battery();

        let mut networks: Vec<NetworkInterface> = self
            .networks
            .keys()
            .map(|name| NetworkInterface {
                name: name.clone(),
                kind: network_kind(name),
            })
            .collect();
        networks.sort_by(|a, b| a.name.cmp(&b.name));
        let wan = networks
            .iter()
            .any(|n| !matches!(n.kind, NetworkKind::Loopback | NetworkKind::Other));

        let mut running: Vec<String> = self
            .system
            .processes()
            .values()
            .map(|p| p.name().to_string_lossy().into_owned())
            .collect();
        running.sort();
        running.dedup();
        running.truncate(MAX_RUNNING_APPS);

        let cpu = self
            .system
            .cpus()
            .first()
            .map(|c| c.brand().trim().to_string())
            .unwrap_or_default();
        let screen = match overrides.screen.as_deref() {
            Some("none") | None => None,
            Some(s) => parse_screen(s).map(|(width, height)| Screen { width, height }),
        };
        let power = match overrides.power.as_deref() {
            Some("battery") => PowerSource::Battery,
            Some(_) => PowerSource::Mains,
            None if battery.as_ref().is_some_and(|b| b.discharging) => PowerSource::Battery,
            None => PowerSource::Mains,
        };

        let caps = Capabilities {
            mode,
            gateway_preference: preference,
            static_caps: StaticCapabilities {
                device_type: overrides.device_type.clone().unwrap_or_else(|| {
                    if battery.is_some() {
                        "laptop"
                    } else {
                        "computer"
                    }
                    .to_string()
                }),
                os: System::long_os_version().unwrap_or_default(),
                screen,
                battery_capacity_mwh: overrides
                    .battery_capacity_mwh
                    .or(battery.as_ref().map(|b| b.capacity_mwh)),
                cpu,
                cpu_cores: overrides
                    .cpu_cores
                    .unwrap_or(self.system.cpus().len().min(u16::MAX as usize) as u16),
                memory_bytes: overrides.memory_bytes.unwrap_or(self.system.total_memory()),
                chipsets: overrides.chipsets.clone().unwrap_or_default(),
                applications: vec![Application {
                    name: "cpns-node".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                }],
            },
            dynamic: DynamicCapabilities {
                networks,
                wan: overrides.wan.unwrap_or(wan),
                power,
                battery_percent: overrides
                    .battery_percent
                    .or(battery.as_ref().map(|b| b.percent)),
                free_memory_bytes: overrides
                    .free_memory_bytes
                    .unwrap_or(self.system.available_memory()),
                running_applications: running,
            },
            revision,
        };
        // The process table is only needed for the names above: drop it rather than keep
        // every process of the machine in memory between reads.
        self.system = System::new();
        caps
    }
}

/// Whether `new` differs from `old` enough to be re-sent to the gateway and the PN (5.6.1:
/// dynamic values change all the time; only material changes travel): mode, power source,
/// WAN, networks, battery by 10 points or across the threshold, free memory by a quarter.
pub(crate) fn materially_changed(
    old: &Capabilities,
    new: &Capabilities,
    battery_threshold: u8,
) -> bool {
    if old.mode != new.mode
        || old.gateway_preference != new.gateway_preference
        || old.static_caps != new.static_caps
        || old.dynamic.power != new.dynamic.power
        || old.dynamic.wan != new.dynamic.wan
        || old.dynamic.networks != new.dynamic.networks
    {
        return true;
    }
    match (old.dynamic.battery_percent, new.dynamic.battery_percent) {
        (Some(a), Some(b)) => {
            if a.abs_diff(b) >= 10 || ((a < battery_threshold) != (b < battery_threshold)) {
                return true;
            }
        }
        (None, None) => {}
        _ => return true,
    }
    let (a, b) = (old.dynamic.free_memory_bytes, new.dynamic.free_memory_bytes);
    a.abs_diff(b) > a.max(b) / 4
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_win_over_the_machine() {
        let overrides = CapabilitiesConfig {
            device_type: Some("nas".into()),
            power: Some("battery".into()),
            battery_percent: Some(42),
            screen: Some("1920x1080".into()),
            memory_bytes: Some(1 << 30),
            ..Default::default()
        };
        let caps = Reader::new().read(&overrides, NodeMode::Pne, GatewayPreference::Auto, 3);
        assert_eq!(caps.static_caps.device_type, "nas");
        assert_eq!(caps.dynamic.power, PowerSource::Battery);
        assert_eq!(caps.dynamic.battery_percent, Some(42));
        assert_eq!(
            caps.static_caps.screen,
            Some(Screen {
                width: 1920,
                height: 1080
            })
        );
        assert_eq!(caps.static_caps.memory_bytes, 1 << 30);
        assert_eq!(caps.revision, 3);
        assert!(caps.static_caps.cpu_cores >= 1, "read from the machine");
    }

    #[test]
    fn material_change_rules() {
        let mut r = Reader::new();
        let a = r.read(
            &CapabilitiesConfig {
                battery_percent: Some(50),
                free_memory_bytes: Some(1000),
                ..Default::default()
            },
            NodeMode::Pne,
            GatewayPreference::Auto,
            1,
        );
        let mut b = a.clone();
        b.dynamic.battery_percent = Some(45);
        assert!(!materially_changed(&a, &b, 20));
        b.dynamic.battery_percent = Some(39);
        assert!(materially_changed(&a, &b, 20));
        let mut c = a.clone();
        c.mode = NodeMode::PneGateway;
        assert!(materially_changed(&a, &c, 20));
    }
}
