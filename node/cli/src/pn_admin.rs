//! `cpns pn admin …`: PN Admin and Adminee settings (5.6.9, 3.2).

use clap::Subcommand;
use serde_json::json;

use super::client::{ApiClient, CliError};
use super::commands::print_json;
use cpns_api::{AdmineeSettingsView, PnAdminsView};

/// `cpns pn admin` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum AdminAction {
    /// Ask cpns-auth to make this node a PN admin: granted at once for a device of the PN's
    /// owner user, else pending until an admin approves.
    Request,
    /// Approve a member's pending admin request (PN admins only).
    Approve {
        /// The member's PeerId.
        peer: String,
    },
    /// Change an Adminee's settings (PN admins only). Keys: label, may_be_gateway (true or
    /// false), mode (auto, pne, gateway, gateway-only), services (comma-separated service
    /// ids it shows the PN; empty: none), heartbeat_secs, offline_after_secs.
    Set {
        /// The member's PeerId.
        peer: String,
        /// KEY=VALUE pairs.
        #[arg(required = true, value_name = "KEY=VALUE")]
        settings: Vec<String>,
    },
    /// The PN's admins, pending admin requests and Adminee settings.
    List,
}

/// Parses `KEY=VALUE` pairs into settings; the error names the bad pair.
pub(crate) fn parse_settings(pairs: &[String]) -> Result<AdmineeSettingsView, String> {
    let mut s = AdmineeSettingsView::default();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?}: expected KEY=VALUE"))?;
        let number = |v: &str| {
            v.parse::<u32>()
                .map_err(|_| format!("{key}: {v:?} is not a number of seconds"))
        };
        match key {
            "label" => s.label = Some(value.to_owned()),
            "may_be_gateway" => {
                s.may_be_gateway = Some(match value {
                    "true" | "yes" => true,
                    "false" | "no" => false,
                    v => return Err(format!("may_be_gateway: {v:?} is not true or false")),
                })
            }
            "mode" => s.mode = Some(value.to_owned()),
            "services" | "services_shown" => {
                s.services_shown = Some(
                    value
                        .split(',')
                        .map(str::trim)
                        .filter(|v| !v.is_empty())
                        .map(str::to_owned)
                        .collect(),
                )
            }
            "heartbeat_secs" => s.heartbeat_secs = Some(number(value)?),
            "offline_after_secs" => s.offline_after_secs = Some(number(value)?),
            other => {
                return Err(format!(
                    "unknown key {other:?}: use label, may_be_gateway, mode, services, heartbeat_secs or offline_after_secs"
                ));
            }
        }
    }
    Ok(s)
}

pub(super) async fn run(
    api: &ApiClient,
    json_out: bool,
    action: &AdminAction,
) -> Result<(), CliError> {
    let view: PnAdminsView = match action {
        AdminAction::Request => api.post("/v1/pn/admin/request", &json!({})).await?,
        AdminAction::Approve { peer } => {
            api.post("/v1/pn/admin/approve", &json!({ "peer": peer }))
                .await?
        }
        AdminAction::Set { peer, settings } => {
            let settings = parse_settings(settings).map_err(CliError::Other)?;
            api.post(
                "/v1/pn/admin/set",
                &json!({ "peer": peer, "settings": settings }),
            )
            .await?
        }
        AdminAction::List => api.get("/v1/pn/admins").await?,
    };
    if json_out {
        return print_json(&view);
    }
    crate::output::outln!("PN {}", view.pn_id);
    crate::output::outln!("admins: {}", list(&view.admins));
    crate::output::outln!("pending admin requests: {}", list(&view.pending));
    for a in &view.adminees {
        crate::output::outln!("adminee {}: {}", a.peer_id, describe(&a.settings));
    }
    Ok(())
}

fn list(v: &[String]) -> String {
    if v.is_empty() {
        "none".into()
    } else {
        v.join(", ")
    }
}

fn describe(s: &AdmineeSettingsView) -> String {
    let mut parts = Vec::new();
    if let Some(l) = &s.label {
        parts.push(format!("label={l}"));
    }
    if let Some(g) = s.may_be_gateway {
        parts.push(format!("may_be_gateway={g}"));
    }
    if let Some(m) = &s.mode {
        parts.push(format!("mode={m}"));
    }
    if let Some(v) = &s.services_shown {
        parts.push(format!("services={}", v.join(",")));
    }
    if let Some(h) = s.heartbeat_secs {
        parts.push(format!("heartbeat_secs={h}"));
    }
    if let Some(o) = s.offline_after_secs {
        parts.push(format!("offline_after_secs={o}"));
    }
    parts.join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn pairs_parse_and_bad_ones_are_named() {
        let s = parse_settings(&[
            "label=Hall TV".into(),
            "may_be_gateway=false".into(),
            "services=a,b".into(),
            "heartbeat_secs=3".into(),
        ])
        .unwrap();
        assert_eq!(s.label.as_deref(), Some("Hall TV"));
        assert_eq!(s.may_be_gateway, Some(false));
        assert_eq!(s.services_shown, Some(vec!["a".into(), "b".into()]));
        assert_eq!(s.heartbeat_secs, Some(3));
        assert!(
            parse_settings(&["colour=red".into()])
                .unwrap_err()
                .contains("colour")
        );
        assert!(parse_settings(&["heartbeat_secs=x".into()]).is_err());
        assert!(parse_settings(&["label".into()]).is_err());
    }
}
