//! `cpns caps [set KEY=VALUE…]`: Device Capabilities (5.6.1).

use clap::Subcommand;
use cpns_api::CapabilitiesView;
use serde_json::{Map, Value};

use super::client::{ApiClient, CliError};
use super::commands::print_json;

/// `cpns caps` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum CapsAction {
    /// Override capabilities at run time, e.g. `battery_percent=15 power=battery`. Keys:
    /// device_type, screen (WxH or none), battery_capacity_mwh, power (mains|battery),
    /// battery_percent, wan (true|false), memory_bytes, free_memory_bytes, cpu_cores.
    Set {
        /// KEY=VALUE pairs.
        #[arg(required = true)]
        pairs: Vec<String>,
    },
}

fn value(key: &str, raw: &str) -> Result<Value, CliError> {
    let bad = |what: &str| CliError::Other(format!("{key}: {raw:?} is not {what}"));
    Ok(match key {
        "device_type" | "screen" | "power" => Value::String(raw.to_string()),
        "wan" => Value::Bool(raw.parse().map_err(|_| bad("true or false"))?),
        "battery_percent"
        | "battery_capacity_mwh"
        | "memory_bytes"
        | "free_memory_bytes"
        | "cpu_cores" => Value::Number(raw.parse::<u64>().map_err(|_| bad("a number"))?.into()),
        other => return Err(CliError::Other(format!("unknown capability {other:?}"))),
    })
}

fn show(c: &CapabilitiesView) {
    let s = &c.static_caps;
    let d = &c.dynamic;
    crate::output::outln!(
        "mode:        {} (gateway preference {})",
        c.mode,
        c.gateway_preference
    );
    crate::output::outln!("device:      {} — {}", s.device_type, s.os);
    crate::output::outln!("cpu:         {} ({} cores)", s.cpu, s.cpu_cores);
    crate::output::outln!(
        "memory:      {} MiB, {} MiB free",
        s.memory_bytes >> 20,
        d.free_memory_bytes >> 20
    );
    match s.screen {
        Some(sc) => crate::output::outln!("screen:      {}x{}", sc.width, sc.height),
        None => crate::output::outln!("screen:      none"),
    }
    crate::output::outln!(
        "power:       {:?}{}",
        d.power,
        d.battery_percent
            .map(|b| format!(", battery {b} %"))
            .unwrap_or_default()
    );
    crate::output::outln!(
        "networks:    {} (WAN {})",
        d.networks
            .iter()
            .map(|n| n.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        if d.wan { "yes" } else { "no" }
    );
    crate::output::outln!("revision:    {}", c.revision);
}

pub(super) async fn run(
    api: &ApiClient,
    json_out: bool,
    action: &Option<CapsAction>,
) -> Result<(), CliError> {
    let caps: CapabilitiesView = match action {
        None => api.get("/v1/capabilities").await?,
        Some(CapsAction::Set { pairs }) => {
            let mut body = Map::new();
            for p in pairs {
                let (k, v) = p
                    .split_once('=')
                    .ok_or_else(|| CliError::Other(format!("expected KEY=VALUE, got {p:?}")))?;
                body.insert(k.to_string(), value(k, v)?);
            }
            api.post("/v1/capabilities", &Value::Object(body)).await?
        }
    };
    if json_out {
        return print_json(&caps);
    }
    show(&caps);
    Ok(())
}
