//! `cpns zone …`: zone-based service (Appendix F): a Zone PN GW's zone, its members, and the
//! zones this device was found in.

use clap::Subcommand;
use cpns_api::ZoneView;

use super::client::{ApiClient, CliError};
use super::commands::print_json;
use super::table::render;

/// `cpns zone` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum ZoneAction {
    /// The settings, the PNEs registered in the zone (gateway), the zones met (PNE).
    Show,
    /// Changes the settings (only those given); they replace the config file's `[zone]`.
    Set {
        /// The zone's name (a gateway with a name searches its LAN); "" for none.
        #[arg(long)]
        name: Option<String>,
        /// A service of this node pushed to PNEs in the zone (repeat; replaces the list).
        #[arg(long = "service")]
        services: Vec<String>,
        /// Push no services.
        #[arg(long, conflicts_with = "services")]
        no_services: bool,
        /// Seconds between two searches of the zone's LAN.
        #[arg(long)]
        search_secs: Option<u64>,
        /// Whether this device answers zone gateways' searches (its user's consent).
        #[arg(long)]
        discoverable: Option<bool>,
    },
    /// Forgets the settings made with `set`: the config file's `[zone]` again.
    Reset,
}

pub(super) async fn run(
    api: &ApiClient,
    json_out: bool,
    action: &ZoneAction,
) -> Result<(), CliError> {
    let view: ZoneView = match action {
        ZoneAction::Show => api.get("/v1/zone").await?,
        ZoneAction::Set {
            name,
            services,
            no_services,
            search_secs,
            discoverable,
        } => {
            let current: ZoneView = api.get("/v1/zone").await?;
            let mut s = current.settings;
            if let Some(n) = name {
                s.name = n.clone();
            }
            if !services.is_empty() {
                s.services = services.clone();
            }
            if *no_services {
                s.services.clear();
            }
            if let Some(v) = search_secs {
                s.search_secs = *v;
            }
            if let Some(d) = discoverable {
                s.discoverable = *d;
            }
            api.post("/v1/zone", &s).await?
        }
        ZoneAction::Reset => api.delete("/v1/zone").await?,
    };
    if json_out {
        return print_json(&view);
    }
    print(&view);
    Ok(())
}

fn print(v: &ZoneView) {
    let s = &v.settings;
    let name = if s.name.is_empty() { "-" } else { &s.name };
    crate::output::outln!("zone          {name}");
    crate::output::outln!(
        "searching     {}",
        match (&v.searching, &v.idle_reason) {
            (true, _) => format!(
                "every {} s, zone PN {}",
                s.search_secs,
                v.pn_id.as_deref().unwrap_or("-")
            ),
            (false, Some(why)) => format!("no: {why}"),
            (false, None) => "no".into(),
        }
    );
    crate::output::outln!(
        "pushes        {}",
        if s.services.is_empty() {
            "-".into()
        } else {
            s.services.join(", ")
        }
    );
    crate::output::outln!(
        "discoverable  {}",
        if s.discoverable {
            "yes (answers zone searches)"
        } else {
            "no"
        }
    );
    if !v.members.is_empty() {
        let rows = v
            .members
            .iter()
            .map(|m| {
                vec![
                    m.peer_id.clone(),
                    format!("{}/{}", m.user, m.device),
                    m.pushed.to_string(),
                ]
            })
            .collect::<Vec<_>>();
        crate::output::out!("{}", render(&["MEMBER", "USER/DEVICE", "PUSHED"], &rows));
    }
    for r in &v.refused {
        crate::output::outln!("not registered {}: {}", r.peer_id, r.reason);
    }
    for z in &v.received {
        crate::output::outln!(
            "found in zone {} (PN {}, gateway {})",
            z.zone,
            z.pn_id,
            z.gateway
        );
        for s in &z.services {
            crate::output::outln!(
                "  service  {}  \"{}\" {}",
                s.service_id,
                s.name,
                s.keywords.join(",")
            );
        }
    }
}
