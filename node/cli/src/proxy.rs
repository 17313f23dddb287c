//! `cpns proxy …`: the UPnP/DLNA devices the gateway's Non-CPNS proxy speaks for (5.6.10).

use clap::Subcommand;
use cpns_api::ProxiedDeviceView;

use super::client::{ApiClient, CliError};
use super::commands::print_json;
use super::table::render;

/// `cpns proxy` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum ProxyAction {
    /// The proxied devices: id, name, UPnP type, CPNS functions, services published.
    Devices,
    /// One proxied device with the services published for it.
    Show {
        /// Its id (`upnp-…`) or UDN.
        id: String,
    },
    /// Plays a PN service on a MediaRenderer of the gateway's LAN (the gateway's owner must
    /// allow it: `proxy.expose`).
    Play {
        /// The renderer's id (`upnp-…`) or UDN.
        device: String,
        /// The PN service to play.
        service_id: String,
    },
}

pub(super) async fn run(
    api: &ApiClient,
    json_out: bool,
    action: &ProxyAction,
) -> Result<(), CliError> {
    match action {
        ProxyAction::Devices => {
            let list: Vec<ProxiedDeviceView> = api.get("/v1/proxy/devices").await?;
            if json_out {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|d| {
                    vec![
                        d.id.clone(),
                        d.name.clone(),
                        d.device_type.clone(),
                        d.functions.join(","),
                        d.services.len().to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            crate::output::out!(
                "{}",
                render(&["DEVICE", "NAME", "TYPE", "FUNCTIONS", "SERVICES"], &rows)
            );
            Ok(())
        }
        ProxyAction::Play { device, service_id } => {
            let p: cpns_api::PlayView = api
                .post(
                    "/v1/proxy/play",
                    &cpns_api::PlayBody {
                        device: device.clone(),
                        service_id: service_id.clone(),
                    },
                )
                .await?;
            if json_out {
                return print_json(&p);
            }
            crate::output::outln!("{} on {}: {} ({})", p.service_id, p.device, p.state, p.url);
            Ok(())
        }
        ProxyAction::Show { id } => {
            let d: ProxiedDeviceView = api.get(&format!("/v1/proxy/devices/{id}")).await?;
            if json_out {
                return print_json(&d);
            }
            crate::output::outln!("{} \"{}\" ({})", d.id, d.name, d.device_type);
            crate::output::outln!("  udn        {}", d.udn);
            crate::output::outln!("  model      {} {}", d.manufacturer, d.model);
            crate::output::outln!("  location   {}", d.location);
            crate::output::outln!("  functions  {}", d.functions.join(", "));
            for s in &d.upnp_services {
                crate::output::outln!("  upnp       {s}");
            }
            for s in &d.services {
                crate::output::outln!(
                    "  service    {}  \"{}\" {} ({} bytes)",
                    s.service_id,
                    s.title,
                    s.mime,
                    s.bytes
                );
            }
            if let Some(p) = &d.playing {
                crate::output::outln!(
                    "  playing    {} ({}, {} bytes read)",
                    p.service_id,
                    p.state,
                    p.served_bytes
                );
            }
            if d.skipped > 0 {
                crate::output::outln!("  skipped    {} items", d.skipped);
            }
            Ok(())
        }
    }
}
