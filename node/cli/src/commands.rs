//! The commands of `cpns`.

use std::path::PathBuf;

use clap::{CommandFactory, Parser, Subcommand};
use serde::Serialize;

use super::client::{ApiClient, CliError};
use super::table::{render, short};
use cpns_api::{CredentialView, PeerView, PingView, StatusView, TraceEvent, WebLink};

/// `cpns`: control a running cpns-node.
#[derive(Debug, Parser)]
#[command(
    name = "cpns",
    version,
    about = "Control a running CPNS node (PNE / PN gateway)"
)]
pub struct Cli {
    /// The node's data dir (where it wrote api.json).
    #[arg(long, global = true, env = "CPNS_DATA_DIR", default_value_os_t = cpns_api::default_data_dir())]
    pub data_dir: PathBuf,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
// Parsed once per run and never moved around: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
enum Command {
    /// This node: PeerId, mode, PN, gateway, members and their status, auth server; or, with
    /// a subcommand, Status Management (set, of, watch, notifications).
    Status {
        #[command(subcommand)]
        action: Option<super::status::StatusAction>,
    },
    /// Enrol this node with a code from `cpns-auth enrol create` (and, in gateway mode, set
    /// its PN up).
    Up {
        /// The enrolment code (`cpns1-…`).
        #[arg(long)]
        code: String,
    },
    /// Leave the PN: the gateway de-registers this node with cpns-auth (G.1 step 9).
    Down,
    /// Pair with a device: registration, capabilities, gateway election or joining (B.1).
    Pair {
        /// The device's address with /p2p/PEERID, or its pairing code (`cpnspair1-…`).
        addr: String,
    },
    /// This node's pairing code, for another device's `cpns pair CODE`.
    PairingCode {
        /// Also print it as a QR code in the terminal.
        #[arg(long)]
        qr: bool,
    },
    /// PN management: inventory, invite, expel, seal/open with the PN key.
    Pn {
        #[command(subcommand)]
        action: super::pn::PnAction,
    },
    /// Service Publication & Discovery: publish, unpublish, find, show, list, watch.
    Services {
        #[command(subcommand)]
        action: super::services::ServicesAction,
    },
    /// Service/Content Delivery: fetch, control, push, the inbox, aggregated and distributed feeds.
    Content {
        #[command(subcommand)]
        action: super::services::ContentAction,
    },
    /// Service Groups: create, list, show, delete, invite, expel, join, leave, pull-keys.
    Groups {
        #[command(subcommand)]
        action: super::groups::GroupsAction,
    },
    /// The gateway's Non-CPNS proxy: the UPnP/DLNA devices it speaks for (5.6.10).
    Proxy {
        #[command(subcommand)]
        action: super::proxy::ProxyAction,
    },
    /// Zone-based service (Appendix F): the zone a gateway pushes to, or this device's consent.
    Zone {
        #[command(subcommand)]
        action: super::zone::ZoneAction,
    },
    /// Usage reporting: preferences, queued reports.
    Usage {
        #[command(subcommand)]
        action: super::services::UsageAction,
    },
    /// A whole local mesh for developers: cpns-auth and N nodes on loopback.
    Mesh {
        #[command(subcommand)]
        action: super::mesh::MeshAction,
    },
    /// Device Capabilities: show them, or override some at run time.
    Caps {
        #[command(subcommand)]
        action: Option<super::caps::CapsAction>,
    },
    /// The node's mode: get, or set pne|gateway|auto.
    Mode {
        #[command(subcommand)]
        action: super::pn::ModeAction,
    },
    /// Renew this node's entity credential with cpns-auth now (it also renews by itself once
    /// a third of its lifetime is left).
    Renew,
    /// Connected peers.
    Peers,
    /// Round-trip time of a CPNS request to a peer, and whether the path is direct.
    Ping {
        /// The peer's PeerId.
        peer: String,
    },
    /// The web view of this node's PN: prints a one-time URL on 127.0.0.1 (valid for two
    /// minutes, for one browser) that opens the page.
    Web {
        /// Also open it in the desktop's browser (xdg-open, or $BROWSER).
        #[arg(long)]
        open: bool,
    },
    /// Shell completions for cpns, generated from its command definitions; e.g.
    /// `cpns completions bash > /etc/bash_completion.d/cpns`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// The manual page of cpns (roff), generated from its command definitions; e.g.
    /// `cpns man | man -l -`.
    Man,
    /// The protocol trace: every spec step this node took part in.
    Trace {
        /// Render as a Mermaid sequence diagram.
        #[arg(long, conflicts_with = "json")]
        mermaid: bool,
        /// Only this flow (`B.1` or `G.1`).
        #[arg(long)]
        flow: Option<String>,
    },
}

pub(super) fn print_json<T: Serialize>(v: &T) -> Result<(), CliError> {
    let text = serde_json::to_string_pretty(v).map_err(|e| CliError::Other(e.to_string()))?;
    crate::output::outln!("{text}");
    Ok(())
}

/// One value as one compact JSON line (for streamed answers under `--json`).
pub(super) fn print_json_line<T: Serialize>(v: &T) -> Result<(), CliError> {
    let text = serde_json::to_string(v).map_err(|e| CliError::Other(e.to_string()))?;
    crate::output::outln!("{text}");
    Ok(())
}

/// Runs the CLI; returns the process exit code.
pub async fn run(cli: Cli) -> u8 {
    match dispatch(&cli).await {
        Ok(()) => super::EXIT_OK,
        Err(e) => {
            crate::output::errln!("{}", e.line());
            e.exit_code()
        }
    }
}

async fn dispatch(cli: &Cli) -> Result<(), CliError> {
    // `cpns mesh` manages processes, not one node: it needs no running node.
    match &cli.command {
        Command::Mesh { action } => return super::mesh::run(action, cli.json).await,
        Command::Completions { shell } => {
            let mut text = Vec::new();
            clap_complete::generate(*shell, &mut Cli::command(), "cpns", &mut text);
            crate::output::out!("{}", String::from_utf8_lossy(&text));
            return Ok(());
        }
        Command::Man => {
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut text)
                .map_err(|e| CliError::Other(format!("rendering the man page: {e}")))?;
            crate::output::out!("{}", String::from_utf8_lossy(&text));
            return Ok(());
        }
        _ => {}
    }
    let api = ApiClient::from_data_dir(&cli.data_dir)?;
    match &cli.command {
        Command::Status {
            action: Some(action),
        } => super::status::run(&api, cli.json, action).await,
        Command::Up { code } => {
            let s: StatusView = api
                .post("/v1/up", &serde_json::json!({ "code": code }))
                .await?;
            if cli.json {
                return print_json(&s);
            }
            crate::output::outln!(
                "enrolled as {} of user {} ({})",
                s.device,
                s.user.as_deref().unwrap_or("?"),
                s.peer_id
            );
            if let Some(pn) = &s.pn_id {
                crate::output::outln!("PN {pn} set up; this node is its gateway");
            }
            Ok(())
        }
        Command::Down => {
            let _: serde_json::Value = api.post("/v1/down", &serde_json::json!({})).await?;
            if !cli.json {
                crate::output::outln!("left the PN");
            } else {
                crate::output::outln!("{{\"ok\": true}}");
            }
            Ok(())
        }
        Command::Pair { addr } => super::pn::pair(&api, cli.json, addr).await,
        Command::PairingCode { qr } => super::pn::pairing_code(&api, cli.json, *qr).await,
        Command::Pn { action } => super::pn::run(&api, cli.json, action).await,
        Command::Mode { action } => super::pn::mode(&api, cli.json, action).await,
        Command::Mesh { .. } | Command::Completions { .. } | Command::Man => Ok(()),
        Command::Services { action } => super::services::services(&api, cli.json, action).await,
        Command::Content { action } => super::services::content(&api, cli.json, action).await,
        Command::Usage { action } => super::services::usage(&api, cli.json, action).await,
        Command::Groups { action } => super::groups::run(&api, cli.json, action).await,
        Command::Proxy { action } => super::proxy::run(&api, cli.json, action).await,
        Command::Zone { action } => super::zone::run(&api, cli.json, action).await,
        Command::Caps { action } => super::caps::run(&api, cli.json, action).await,
        Command::Web { open } => web(&api, cli.json, *open).await,
        Command::Status { action: None } => {
            let s: StatusView = api.get("/v1/status").await?;
            if cli.json {
                return print_json(&s);
            }
            crate::output::outln!("peer id:   {}", s.peer_id);
            crate::output::outln!("mode:      {} (setting: {})", s.mode, s.mode_setting);
            crate::output::outln!(
                "status:    {} (heartbeat every {} s)",
                s.status,
                s.heartbeat_secs
            );
            crate::output::outln!(
                "device:    {}{}",
                s.device,
                s.user
                    .as_ref()
                    .map(|u| format!(" (user {u})"))
                    .unwrap_or_default()
            );
            crate::output::outln!("enrolled:  {}", if s.enrolled { "yes" } else { "no" });
            if let Some(c) = &s.credential {
                crate::output::outln!(
                    "credential: serial {}, valid until {}{}",
                    c.serial,
                    crate::output::local_time(c.expires),
                    if c.renewal_due { ", renewal due" } else { "" }
                );
            }
            crate::output::outln!("pn:        {}", s.pn_id.as_deref().unwrap_or("-"));
            crate::output::outln!("gateway:   {}", s.gateway.as_deref().unwrap_or("-"));
            if let Some(e) = s.epoch {
                crate::output::outln!("key epoch: {e}");
            }
            if let Some(a) = &s.auth_server {
                crate::output::outln!(
                    "auth:      {} ({}{})",
                    short(&a.peer_id),
                    if a.connected {
                        "reachable"
                    } else {
                        "not connected"
                    },
                    if a.authenticated {
                        ", authenticated"
                    } else {
                        ""
                    }
                );
            }
            crate::output::outln!(
                "dht:       {} mode, {} peers in routing table, {} connected",
                s.dht_mode,
                s.routing_table,
                s.connected_peers
            );
            for a in &s.listen_addrs {
                crate::output::outln!("listen:    {a}");
            }
            for d in &s.proxied {
                crate::output::outln!(
                    "proxied:   {} \"{}\" ({})",
                    d.id,
                    d.name,
                    d.functions.join(", ")
                );
            }
            let n = &s.nat;
            crate::output::outln!(
                "reach:     {}{}{}",
                n.reachability,
                if n.relays.is_empty() {
                    String::new()
                } else {
                    format!(
                        ", relayed by {}",
                        n.relays
                            .iter()
                            .map(|r| short(r))
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                },
                if n.hole_punches_succeeded + n.hole_punches_failed > 0 {
                    format!(
                        "; hole punches {} ok, {} failed",
                        n.hole_punches_succeeded, n.hole_punches_failed
                    )
                } else {
                    String::new()
                }
            );
            for a in &n.public_addrs {
                crate::output::outln!("public:    {a}");
            }
            for a in &n.relayed_addrs {
                crate::output::outln!("relayed:   {a}");
            }
            if n.relay_server {
                crate::output::outln!(
                    "relay:     serving ({} reservations, {} circuits)",
                    n.relay_reservations,
                    n.relay_circuits
                );
            }
            crate::output::outln!("upnp:      {}", n.upnp);
            if !s.members.is_empty() {
                crate::output::outln!();
                crate::output::out!("{}", super::table::members(&s.members));
            }
            Ok(())
        }
        Command::Peers => {
            let peers: Vec<PeerView> = api.get("/v1/peers").await?;
            if cli.json {
                return print_json(&peers);
            }
            let rows = peers
                .iter()
                .map(|p| {
                    vec![
                        p.peer_id.clone(),
                        p.mode.clone().unwrap_or_else(|| "-".into()),
                        if p.registered { "yes" } else { "no" }.into(),
                        p.rtt_ms
                            .map(|r| format!("{r:.2} ms"))
                            .unwrap_or_else(|| "-".into()),
                        p.path.clone(),
                        p.address.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            crate::output::out!(
                "{}",
                render(
                    &["PEER", "MODE", "REGISTERED", "RTT", "PATH", "ADDRESS"],
                    &rows
                )
            );
            Ok(())
        }
        Command::Renew => {
            let c: CredentialView = api
                .post("/v1/credential/renew", &serde_json::json!({}))
                .await?;
            if cli.json {
                return print_json(&c);
            }
            crate::output::outln!(
                "credential renewed: serial {}, valid until {}",
                c.serial,
                crate::output::local_time(c.expires)
            );
            Ok(())
        }
        Command::Ping { peer } => {
            let p: PingView = api
                .post("/v1/ping", &serde_json::json!({ "peer": peer }))
                .await?;
            if cli.json {
                return print_json(&p);
            }
            crate::output::outln!(
                "pong from {} in {:.3} ms via {} ({})",
                short(&p.peer_id),
                p.rtt_ms,
                p.address,
                if p.path.is_empty() {
                    if p.direct { "direct" } else { "relayed" }
                } else {
                    p.path.as_str()
                }
            );
            Ok(())
        }
        Command::Trace {
            mermaid: as_mermaid,
            flow,
        } => {
            let path = match flow {
                Some(f) => format!("/v1/trace?flow={f}"),
                None => "/v1/trace".into(),
            };
            let events: Vec<TraceEvent> = api.get(&path).await?;
            if cli.json {
                return print_json(&events);
            }
            if *as_mermaid {
                let path = match flow {
                    Some(f) => format!("/v1/trace/mermaid?flow={f}"),
                    None => "/v1/trace/mermaid".into(),
                };
                crate::output::out!("{}", api.get_text(&path).await?);
                return Ok(());
            }
            let rows = events
                .iter()
                .map(|e| {
                    vec![
                        crate::output::local_time_ms(e.time_ms),
                        format!("{} {}", e.flow, e.step),
                        short(&e.from),
                        short(&e.to),
                        e.message.clone(),
                        e.detail.clone(),
                    ]
                })
                .collect::<Vec<_>>();
            crate::output::out!(
                "{}",
                render(&["TIME", "STEP", "FROM", "TO", "MESSAGE", "DETAIL"], &rows)
            );
            Ok(())
        }
    }
}

/// `cpns web [--open]`.
async fn web(api: &ApiClient, json: bool, open: bool) -> Result<(), CliError> {
    let link: WebLink = api.post("/v1/web/link", &serde_json::json!({})).await?;
    if json {
        print_json(&link)?;
    } else {
        crate::output::outln!("{}", link.url);
        crate::output::errln!(
            "open it within {} s; it works once (then the browser holds a session cookie)",
            link.expires_in_secs
        );
    }
    if open {
        let browser = std::env::var_os("BROWSER").unwrap_or_else(|| "xdg-open".into());
        std::process::Command::new(&browser)
            .arg(&link.url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .map_err(|e| {
                CliError::Other(format!(
                    "cannot start {}: {e}; open the URL yourself",
                    browser.to_string_lossy()
                ))
            })?;
    }
    Ok(())
}
