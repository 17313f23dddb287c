//! `cpns pair`, `cpns pn …`, `cpns mode …`.

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{ApiClient, CliError};
use super::commands::print_json;
use cpns_api::PairOutcome;

/// `cpns pn` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum PnAction {
    /// The PN Inventory (members, status, epoch) of this node's PN, or of PN_ID.
    Inventory {
        /// A PN id (default: this node's PN).
        pn_id: Option<String>,
    },
    /// Invite a user's devices or one entity into the PN (PN admins only).
    Invite {
        /// A user name.
        #[arg(long, conflicts_with = "entity")]
        user: Option<String>,
        /// An entity's PeerId.
        #[arg(long)]
        entity: Option<String>,
    },
    /// Expel a member (PN admins only); the PN key moves to a new epoch.
    Expel {
        /// The member's PeerId.
        peer: String,
    },
    /// Release the PN (its gateway or a PN admin): cpns-auth deletes it and its key.
    Release,
    /// PN Admin: ask to be admin, approve a request, change an Adminee, list (5.6.9).
    Admin {
        #[command(subcommand)]
        action: super::pn_admin::AdminAction,
    },
    /// Hand the gateway role to a member (the gateway only): it takes the role over with
    /// cpns-auth's agreement; the members follow and the key epoch continues.
    Handoff {
        /// The member's PeerId.
        peer: String,
    },
    /// Switch this PNE to another PNE of the same user in the same PN: the sessions this
    /// node receives (or one) move there, and the offerer continues from where it stopped.
    Switch {
        /// The new PNE's PeerId.
        #[arg(long, value_name = "PEER")]
        to: String,
        /// The session to move (as `cpns content sessions` shows it; default: every one).
        #[arg(long, value_name = "ID")]
        session: Option<String>,
    },
    /// Merge this PN with another (an admin): an admin of each PN must run it, naming the
    /// other PN; the PN whose admin ran it first stays, the other's members join its gateway,
    /// and its key rotates once.
    Merge {
        /// The other PN's id.
        #[arg(long = "with", value_name = "PN_ID")]
        with: String,
    },
    /// Split members off into a new PN (an admin): the new PN's gateway is elected among them
    /// by the election's rule, and both PNs get a new key.
    Split {
        /// The members' PeerIds.
        #[arg(required = true)]
        peers: Vec<String>,
    },
    /// Capability matching: which members can consume SERVICE now, and which member best
    /// offers it.
    Match {
        /// The service's id.
        service: String,
    },
    /// Seal TEXT under the PN key (prints JSON that `cpns pn open` accepts).
    Seal {
        /// The text.
        text: String,
    },
    /// Open JSON sealed by a member (from `cpns pn seal`), read from the argument.
    Open {
        /// The sealed JSON.
        sealed: String,
    },
    /// Invitations to join a PN of another user, waiting for this owner's answer.
    Invitations,
    /// Accept an invitation: this node joins that PN.
    Accept {
        /// The invitation's id (`inv-…`).
        id: String,
    },
    /// Decline an invitation.
    Decline {
        /// The invitation's id (`inv-…`).
        id: String,
    },
}

/// `cpns mode` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum ModeAction {
    /// Print the current mode and the setting.
    Get,
    /// Change the setting: pne, gateway or auto.
    Set {
        /// pne, gateway or auto.
        mode: String,
    },
}

pub(super) async fn pair(api: &ApiClient, json_out: bool, addr: &str) -> Result<(), CliError> {
    let o: PairOutcome = api.post("/v1/pair", &json!({ "addr": addr })).await?;
    if json_out {
        return print_json(&o);
    }
    let what = match o.result.as_str() {
        "joining" => "joining its PN".to_string(),
        "gateway" => "this node is the gateway; the peer joins its PN".to_string(),
        "waiting_for_gateway" => {
            "the peer won the election; it sets the PN up and this node joins".to_string()
        }
        "no_gateway" => "neither device may be a gateway: no PN".to_string(),
        "invitation" => format!(
            "its PN belongs to another user: join it with `cpns pn accept {}`",
            o.invitation.as_deref().unwrap_or("?")
        ),
        other => other.to_string(),
    };
    crate::output::outln!("paired with {} ({}): {what}", o.peer_id, o.peer_mode);
    Ok(())
}

pub(super) async fn pairing_code(
    api: &ApiClient,
    json_out: bool,
    qr: bool,
) -> Result<(), CliError> {
    let v: Value = api.get("/v1/pair/code").await?;
    if json_out {
        return print_json(&v);
    }
    let code = v["code"].as_str().unwrap_or_default();
    if qr {
        use qrcode::render::unicode::Dense1x2;
        // Upper case puts the code in QR's alphanumeric mode; parsing ignores case.
        let symbol = qrcode::QrCode::new(code.to_ascii_uppercase().as_bytes())
            .map_err(|e| CliError::Other(format!("cannot make a QR code: {e}")))?;
        crate::output::outln!(
            "{}",
            symbol
                .render::<Dense1x2>()
                .dark_color(Dense1x2::Light)
                .light_color(Dense1x2::Dark)
                .quiet_zone(true)
                .build()
        );
    }
    crate::output::outln!("{code}");
    Ok(())
}

pub(super) async fn run(
    api: &ApiClient,
    json_out: bool,
    action: &PnAction,
) -> Result<(), CliError> {
    match action {
        PnAction::Admin { action } => super::pn_admin::run(api, json_out, action).await,
        PnAction::Inventory { pn_id } => {
            let path = match pn_id {
                Some(id) => format!("/v1/pn?pn_id={id}"),
                None => "/v1/pn".into(),
            };
            let inv: cpns_api::PnInventoryView = api.get(&path).await?;
            if json_out {
                return print_json(&inv);
            }
            crate::output::outln!(
                "PN {} of {} (gateway {}, key epoch {})",
                inv.pn_id,
                inv.owner,
                inv.gateway,
                inv.epoch
            );
            crate::output::out!("{}", super::table::members(&inv.members));
            if !inv.services.is_empty() {
                crate::output::outln!("services: {}", inv.services.join(", "));
            }
            for d in &inv.proxied {
                crate::output::outln!(
                    "proxied {} \"{}\" ({}; {} services, via the gateway)",
                    d.id,
                    d.name,
                    d.functions.join(", "),
                    d.services
                );
            }
            if let Some(admin) = &inv.admin {
                crate::output::outln!("admins: {}", admin.admins.join(", "));
                for a in &admin.adminees {
                    if let Some(label) = &a.settings.label {
                        crate::output::outln!("label of {}: {label}", a.peer_id);
                    }
                }
            }
            Ok(())
        }
        PnAction::Invitations => {
            let list: Vec<cpns_api::InvitationView> = api.get("/v1/pn/invitations").await?;
            if json_out {
                return print_json(&list);
            }
            if list.is_empty() {
                crate::output::outln!("no invitation waits");
            }
            for i in &list {
                crate::output::outln!(
                    "{}  PN {} of {} via {} ({}, {})",
                    i.id,
                    i.pn_id.as_deref().unwrap_or("?"),
                    i.user,
                    i.device,
                    i.gateway,
                    i.source
                );
            }
            Ok(())
        }
        PnAction::Accept { id } => {
            let v: Value = api.post("/v1/pn/accept", &json!({ "id": id })).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("joined {}", v["pn_id"].as_str().unwrap_or("?"));
            Ok(())
        }
        PnAction::Decline { id } => {
            let v: Value = api.post("/v1/pn/decline", &json!({ "id": id })).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("declined {id}");
            Ok(())
        }
        PnAction::Invite { user, entity } => {
            let body = json!({ "user": user, "entity": entity });
            let v: Value = api.post("/v1/pn/invite", &body).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!(
                "invited {}",
                user.as_deref().or(entity.as_deref()).unwrap_or("?")
            );
            Ok(())
        }
        PnAction::Expel { peer } => {
            let v: Value = api.post("/v1/pn/expel", &json!({ "peer": peer })).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("expelled {peer}; PN key epoch now {}", v["epoch"]);
            Ok(())
        }
        PnAction::Handoff { peer } => {
            let v: Value = api.post("/v1/pn/handoff", &json!({ "peer": peer })).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("handed the gateway role to {peer}");
            Ok(())
        }
        PnAction::Switch { to, session } => {
            let v: cpns_api::SwitchView = api
                .post("/v1/pn/switch", &json!({ "to": to, "session": session }))
                .await?;
            if json_out {
                return print_json(&v);
            }
            for s in &v.sessions {
                crate::output::outln!(
                    "session {} ({}) moved to {}: it had {} of {} bytes, the offerer continues \
                     from there",
                    s.id,
                    s.service_id,
                    v.to,
                    s.offset,
                    s.total
                );
            }
            Ok(())
        }
        PnAction::Merge { with } => {
            let m: cpns_api::MergeView = api.post("/v1/pn/merge", &json!({ "with": with })).await?;
            if json_out {
                return print_json(&m);
            }
            if m.merged {
                crate::output::outln!(
                    "merged into {} (gateway {}, {} members, key epoch {})",
                    m.pn_id,
                    m.gateway,
                    m.members.len(),
                    m.epoch
                );
            } else {
                crate::output::outln!(
                    "consent stored: {} merges with {with} once an admin of {with} consents too",
                    m.pn_id
                );
            }
            Ok(())
        }
        PnAction::Split { peers } => {
            let s: cpns_api::SplitView =
                api.post("/v1/pn/split", &json!({ "peers": peers })).await?;
            if json_out {
                return print_json(&s);
            }
            crate::output::outln!(
                "split {} members off into {} (gateway {}); {} keeps {} members at key epoch {}",
                s.new_members.len(),
                s.new_pn_id,
                s.new_gateway,
                s.pn_id,
                s.members.len(),
                s.epoch
            );
            Ok(())
        }
        PnAction::Match { service } => {
            let m: cpns_api::MatchView =
                api.get(&format!("/v1/pn/match?service={service}")).await?;
            if json_out {
                return print_json(&m);
            }
            crate::output::outln!("{}: consumers {}", m.service_id, m.consumers.join(", "));
            for u in &m.unable {
                crate::output::outln!("  not {}: {}", u.peer_id, u.reason);
            }
            crate::output::outln!(
                "offered by {} (best now: {})",
                m.offerers.join(", "),
                m.best_offerer.as_deref().unwrap_or("nobody")
            );
            Ok(())
        }
        PnAction::Release => {
            let v: Value = api.post("/v1/pn/release", &json!({})).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("released {}", v["pn_id"].as_str().unwrap_or("?"));
            Ok(())
        }
        PnAction::Seal { text } => {
            let v: Value = api.post("/v1/pn/seal", &json!({ "text": text })).await?;
            print_json(&v)
        }
        PnAction::Open { sealed } => {
            let body: Value = serde_json::from_str(sealed)
                .map_err(|e| CliError::Other(format!("not sealed JSON: {e}")))?;
            let v: Value = api.post("/v1/pn/open", &body).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("{}", v["text"].as_str().unwrap_or_default());
            Ok(())
        }
    }
}

pub(super) async fn mode(
    api: &ApiClient,
    json_out: bool,
    action: &ModeAction,
) -> Result<(), CliError> {
    let v: Value = match action {
        ModeAction::Get => api.get("/v1/mode").await?,
        ModeAction::Set { mode } => api.post("/v1/mode", &json!({ "mode": mode })).await?,
    };
    if json_out {
        return print_json(&v);
    }
    crate::output::outln!(
        "mode {} (setting {})",
        v["mode"].as_str().unwrap_or("?"),
        v["setting"].as_str().unwrap_or("?")
    );
    Ok(())
}
