//! The command line: `serve`, and admin commands shaped like headscale's.
//!
//! Admin commands talk to the running server's admin endpoint when `D/admin.json` names one
//! that answers; otherwise they open the data dir directly (possible only while no server
//! holds the database's lock). Read commands print tables, or JSON with `--json`.

use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use clap::{Args, Parser, Subcommand};
use cpns_auth::{
    Admin, AdminFile, CodeOptions, CodeView, Config, CreatedCode, DeletedUser, EntityView,
    GroupView, PnView, RevokeOutcome, Server, ServerInfo, StartError, StoreError, UsageFormat,
    UserView,
};
use cpns_keys::Modes;
use libp2p::Multiaddr;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// `cpns-auth`: the CPNS authentication and authorisation server (AUC/AUZ, Appendix B.3).
#[derive(Debug, Parser)]
#[command(name = "cpns-auth", version, about, long_about = None)]
pub(crate) struct Cli {
    /// Validate a TOML config file (and CPNS_AUTH_* variables) and exit, naming the bad key.
    #[arg(long, value_name = "FILE")]
    check_config: Option<PathBuf>,
    /// The data dir (CA key, server key, database, admin.json).
    #[arg(long, global = true, env = "CPNS_AUTH_DATA_DIR", value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// A TOML config file; CPNS_AUTH_<KEY> variables and flags override it.
    #[arg(long, global = true, env = "CPNS_AUTH_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server.
    Serve(ServeArgs),
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCmd),
    /// Manage enrolment codes.
    #[command(subcommand)]
    Enrol(EnrolCmd),
    /// Enrolled entities (devices).
    #[command(subcommand)]
    Entities(EntitiesCmd),
    /// Personal Networks.
    #[command(subcommand)]
    Pns(PnsCmd),
    /// Service Groups.
    #[command(subcommand)]
    Groups(GroupsCmd),
    /// Usage statistics and charging records.
    #[command(subcommand)]
    Usage(UsageCmd),
    /// The server's identity, addresses and counts.
    Status(JsonFlag),
    /// The operator's web page (users, entities, PNs, groups, codes with QR, revocations,
    /// usage): prints a one-time URL on 127.0.0.1 of the running server's admin endpoint.
    Web {
        /// Also open it in the desktop's browser (xdg-open, or $BROWSER).
        #[arg(long)]
        open: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Debug, Args)]
struct JsonFlag {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/4100.
    #[arg(long, value_name = "MULTIADDR")]
    listen: Vec<Multiaddr>,
    /// Address to put in enrolment codes instead of the listen addresses (repeatable).
    #[arg(long, value_name = "MULTIADDR")]
    advertise: Vec<Multiaddr>,
    /// Port of the admin endpoint on 127.0.0.1 (0: any free port).
    #[arg(long, value_name = "PORT")]
    admin_port: Option<u16>,
    /// Relay for devices behind NAT (circuit relay v2), as `relay = true` in the config.
    #[arg(long)]
    relay: bool,
}

#[derive(Debug, Subcommand)]
enum UsersCmd {
    /// Create a user.
    Create {
        /// The user's name (letters, digits, . _ - @).
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List users.
    List(JsonFlag),
    /// Delete a user: revokes its entities and deletes its unused codes.
    Delete {
        /// The user's name.
        name: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum EnrolCmd {
    /// Create an enrolment code (one-time and expiring by default).
    Create {
        /// The user the device will belong to.
        #[arg(long)]
        user: String,
        /// Modes the device's credential allows.
        #[arg(long, default_value = "pne,gateway")]
        modes: Modes,
        /// Lifetime of the code (e.g. 10m, 1h, 2days); default the config's code_ttl (1h).
        #[arg(long, value_parser = humantime::parse_duration)]
        ttl: Option<Duration>,
        /// Allow the code to enrol several devices until it expires.
        #[arg(long)]
        reusable: bool,
        /// Also print the code as a QR code in the terminal.
        #[arg(long)]
        qr: bool,
        /// Address to put in the code instead of the server's own (repeatable).
        #[arg(long, value_name = "MULTIADDR")]
        addr: Vec<Multiaddr>,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// List enrolment codes (never their secrets).
    List(JsonFlag),
}

#[derive(Debug, Subcommand)]
enum EntitiesCmd {
    /// List enrolled entities.
    List(JsonFlag),
    /// Show one entity (by PeerId or serial).
    Show {
        /// PeerId or credential serial.
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
    /// Revoke an entity (by PeerId or serial): it can no longer authenticate, leaves its PNs
    /// and Service Groups (their keys rotate), and its serials join the revocation list.
    Revoke {
        /// PeerId or credential serial.
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum PnsCmd {
    /// List Personal Networks.
    List(JsonFlag),
    /// Show one PN.
    Show {
        /// The PN id (pn-…).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum GroupsCmd {
    /// List Service Groups.
    List(JsonFlag),
    /// Show one Service Group.
    Show {
        /// The group id (sg-…).
        id: String,
        #[command(flatten)]
        json: JsonFlag,
    },
}

#[derive(Debug, Subcommand)]
enum UsageCmd {
    /// Export charging records.
    Export {
        /// csv (with a header row) or json.
        #[arg(long, default_value = "csv")]
        format: UsageFormat,
    },
}

/// Runs the command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<()> {
    if let Some(file) = &cli.check_config {
        let config = Config::load(Some(file), std::env::vars())?;
        println!(
            "{}: valid (data_dir {}, listen {})",
            file.display(),
            config.data_dir.display(),
            config
                .listen
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        return Ok(());
    }
    let Some(command) = cli.command else {
        bail!("no command given; try `cpns-auth --help`");
    };
    let mut config = Config::load(cli.config.as_deref(), std::env::vars())?;
    if let Some(dir) = cli.data_dir {
        config.data_dir = dir;
    }
    match command {
        Command::Serve(args) => serve(config, args).await,
        other => {
            let backend = Backend::connect(&config).await?;
            let result = admin_command(&backend, other).await;
            backend.close();
            result
        }
    }
}

async fn serve(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,libp2p_kad=error")),
        )
        .with_writer(std::io::stderr)
        .try_init();
    if !args.listen.is_empty() {
        config.listen = args.listen;
    }
    if !args.advertise.is_empty() {
        config.advertise = args.advertise;
    }
    if let Some(port) = args.admin_port {
        config.admin_port = port;
    }
    if args.relay {
        config.relay = true;
    }
    config.validate()?;
    // Watched before the server starts: once its admin file exists a supervisor (or a test)
    // may stop it, and a signal before the handlers would skip the clean shutdown.
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("cannot watch SIGTERM")?;
    let mut int = signal(SignalKind::interrupt()).context("cannot watch SIGINT")?;
    let server = Server::start(config)
        .await
        .context("cannot start the server")?;
    println!("cpns-auth {}", env!("CARGO_PKG_VERSION"));
    println!("peer id:        {}", server.peer_id());
    for addr in server.dial_addrs() {
        println!("listening on:   {addr}");
    }
    println!("ca fingerprint: {}", server.ca_public().fingerprint());
    println!(
        "admin endpoint: http://{} (token in {})",
        server.admin_addr(),
        AdminFile::path(&server.data_dir()).display()
    );
    println!("metrics:        http://{}/metrics", server.admin_addr());
    println!("ready");
    use std::io::Write;
    let _ = std::io::stdout().flush();

    tokio::select! {
        _ = int.recv() => {}
        _ = term.recv() => {}
    }
    eprintln!("shutting down");
    server.shutdown().await;
    Ok(())
}

/// A failed admin command as the running server's admin endpoint reported it (its stable
/// `code`), or a server that holds the database but does not answer (`not_running`).
/// `main` prints it as `cpns-auth: MESSAGE (CODE)` and picks the exit code from the code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct Failure {
    /// Stable code (`not_found`, `conflict`, `bad_request`, `not_running`, ...).
    pub(crate) code: String,
    /// For people.
    pub(crate) message: String,
}

/// Where admin commands go.
enum Backend {
    Remote {
        http: reqwest::Client,
        base: String,
        token: String,
    },
    Local(Admin),
}

impl Backend {
    async fn connect(config: &Config) -> anyhow::Result<Self> {
        let dir = &config.data_dir;
        let file = AdminFile::read(dir)
            .with_context(|| format!("cannot read {}", AdminFile::path(dir).display()))?;
        let mut endpoint_error = None;
        if let Some(file) = &file {
            let http = reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .no_proxy()
                .build()
                .context("http client")?;
            let base = format!("http://{}", file.addr);
            match http
                .get(format!("{base}/v1/status"))
                .bearer_auth(&file.token)
                .send()
                .await
            {
                Ok(r) if r.status().is_success() => {
                    return Ok(Backend::Remote {
                        http,
                        base,
                        token: file.token.clone(),
                    });
                }
                Ok(r) => bail!(
                    "the admin endpoint at {} refused us ({}); is {} from another server?",
                    file.addr,
                    r.status(),
                    AdminFile::path(dir).display()
                ),
                Err(e) => endpoint_error = Some(e.to_string()),
            }
        }
        match Admin::open(config.clone()) {
            Ok(admin) => Ok(Backend::Local(admin)),
            Err(StartError::Store(StoreError::Locked { .. })) => {
                let detail = match (&file, endpoint_error) {
                    (Some(f), Some(e)) => {
                        format!("its admin endpoint at {} does not answer: {e}", f.addr)
                    }
                    _ => format!(
                        "there is no {} to find its admin endpoint",
                        AdminFile::path(dir).display()
                    ),
                };
                Err(Failure {
                    code: "not_running".into(),
                    message: format!(
                        "the database in {} is locked by another process (a running \
                         `cpns-auth serve`?), but {detail}",
                        dir.display()
                    ),
                }
                .into())
            }
            Err(e) => Err(e).with_context(|| format!("cannot open the data dir {}", dir.display())),
        }
    }

    fn close(&self) {
        if let Backend::Local(admin) = self
            && let Err(e) = admin.flush()
        {
            eprintln!("warning: final flush failed: {e}");
        }
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<T> {
        let text = self.call_text(method, path, body).await?;
        serde_json::from_str(&text)
            .with_context(|| format!("bad answer from the admin endpoint: {text}"))
    }

    async fn call_text(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> anyhow::Result<String> {
        let Backend::Remote { http, base, token } = self else {
            bail!("not connected to an admin endpoint");
        };
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(token);
        if let Some(body) = body {
            req = req.json(&body);
        }
        let resp = req.send().await.context("admin endpoint request failed")?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .context("reading the admin endpoint's answer")?;
        if status.is_success() {
            return Ok(text);
        }
        let detail: Option<(String, String)> = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                let e = v.get("error")?;
                Some((
                    e.get("code")?.as_str()?.to_owned(),
                    e.get("message")?.as_str()?.to_owned(),
                ))
            });
        match detail {
            Some((code, message)) => Err(Failure { code, message }.into()),
            None => Err(anyhow!("admin endpoint answered {status}: {text}")),
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        self.call(reqwest::Method::GET, path, None).await
    }
}

fn seg(s: &str) -> String {
    // Path segments are PeerIds, serials, ids and user names: percent-encode anything else.
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn print_json<T: Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn when(t: u64) -> String {
    if t == 0 {
        return "-".into();
    }
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(t)).to_string()
}

fn until(t: u64) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    if t <= now {
        format!("{} (expired)", when(t))
    } else {
        format!(
            "{} (in {})",
            when(t),
            humantime::format_duration(Duration::from_secs(t - now))
        )
    }
}

/// Prints rows as an aligned table.
fn table(header: &[&str], rows: Vec<Vec<String>>) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  "));
            }
        }
        println!("{}", out.trim_end());
    };
    line(header.iter().map(|s| s.to_string()).collect());
    if rows.is_empty() {
        println!("(none)");
    }
    for row in rows {
        line(row);
    }
}

fn qr(text: &str) -> anyhow::Result<String> {
    use qrcode::render::unicode::Dense1x2;
    // Upper case puts the code in QR's alphanumeric mode: a smaller symbol; parsing ignores case.
    let code = qrcode::QrCode::new(text.to_ascii_uppercase().as_bytes())
        .map_err(|e| anyhow!("cannot make a QR code: {e}"))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

async fn admin_command(b: &Backend, command: Command) -> anyhow::Result<()> {
    use reqwest::Method;
    match command {
        Command::Serve(_) => unreachable!("serve is handled by run"),
        Command::Web { open, json } => {
            if matches!(b, Backend::Local(_)) {
                return Err(Failure {
                    code: "not_running".into(),
                    message: "the web page is served by a running server: start `cpns-auth serve`"
                        .into(),
                }
                .into());
            }
            let link: serde_json::Value = b
                .call(Method::POST, "/v1/web/link", Some(serde_json::json!({})))
                .await?;
            let url = link["url"].as_str().unwrap_or_default().to_string();
            if json {
                return print_json(&link);
            }
            println!("{url}");
            eprintln!(
                "open it within {} s; it works once",
                link["expires_in_secs"]
            );
            if open {
                let browser = std::env::var_os("BROWSER").unwrap_or_else(|| "xdg-open".into());
                std::process::Command::new(&browser)
                    .arg(&url)
                    .stdin(std::process::Stdio::null())
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::null())
                    .spawn()
                    .with_context(|| format!("cannot start {}", browser.to_string_lossy()))?;
            }
        }
        Command::Status(JsonFlag { json }) => {
            let info: ServerInfo = match b {
                Backend::Local(a) => a.server_info().await?,
                Backend::Remote { .. } => b.get("/v1/status").await?,
            };
            if json {
                return print_json(&info);
            }
            println!("peer id:          {}", info.peer_id);
            println!(
                "running:          {}",
                if info.running {
                    "yes"
                } else {
                    "no (data dir opened directly)"
                }
            );
            for a in &info.listen_addrs {
                println!("listen address:   {a}");
            }
            if let Some(a) = &info.admin_addr {
                println!("admin endpoint:   http://{a}");
            }
            println!("ca fingerprint:   {}", info.ca_fingerprint);
            println!("revocation list:  version {}", info.revocation_version);
            println!(
                "counts:           {} users, {} entities, {} PNs, {} Service Groups, {} sessions",
                info.users, info.entities, info.pns, info.groups, info.sessions
            );
        }
        Command::Users(UsersCmd::Create { name, json }) => {
            let user: UserView = match b {
                Backend::Local(a) => a.create_user(&name).await?,
                Backend::Remote { .. } => {
                    b.call(
                        Method::POST,
                        "/v1/users",
                        Some(serde_json::json!({ "name": name })),
                    )
                    .await?
                }
            };
            if json.json {
                return print_json(&user);
            }
            println!("user {} created", user.name);
        }
        Command::Users(UsersCmd::List(JsonFlag { json })) => {
            let users: Vec<UserView> = match b {
                Backend::Local(a) => a.list_users().await?,
                Backend::Remote { .. } => b.get("/v1/users").await?,
            };
            if json {
                return print_json(&users);
            }
            table(
                &["NAME", "ENTITIES", "CREATED"],
                users
                    .into_iter()
                    .map(|u| vec![u.name, u.entities.to_string(), when(u.created)])
                    .collect(),
            );
        }
        Command::Users(UsersCmd::Delete { name, json }) => {
            let out: DeletedUser = match b {
                Backend::Local(a) => a.delete_user(&name).await?,
                Backend::Remote { .. } => {
                    b.call(Method::DELETE, &format!("/v1/users/{}", seg(&name)), None)
                        .await?
                }
            };
            if json.json {
                return print_json(&out);
            }
            println!(
                "user {} deleted ({} entities revoked, {} unused codes deleted)",
                out.name,
                out.revoked_entities.len(),
                out.deleted_codes
            );
        }
        Command::Enrol(EnrolCmd::Create {
            user,
            modes,
            ttl,
            reusable,
            qr: want_qr,
            addr,
            json,
        }) => {
            let created: CreatedCode = match b {
                Backend::Local(a) => {
                    a.create_code_with(&CodeOptions {
                        user,
                        modes,
                        ttl,
                        reusable,
                        addrs: addr,
                    })
                    .await?
                }
                Backend::Remote { .. } => {
                    let body = serde_json::json!({
                        "user": user,
                        "modes": modes.to_string(),
                        "ttl": ttl.map(|t| humantime::format_duration(t).to_string()),
                        "reusable": reusable,
                        "addrs": addr.iter().map(ToString::to_string).collect::<Vec<_>>(),
                    });
                    b.call(Method::POST, "/v1/codes", Some(body)).await?
                }
            };
            if json.json {
                return print_json(&created);
            }
            if want_qr {
                println!("{}", qr(&created.code)?);
            }
            println!("{}", created.code);
            eprintln!(
                "one{} code for user {} ({}), expires {}; enrol with: cpns-node --data-dir DIR enrol CODE",
                if created.reusable {
                    " reusable"
                } else {
                    "-time"
                },
                created.user,
                created.modes,
                until(created.expires)
            );
        }
        Command::Enrol(EnrolCmd::List(JsonFlag { json })) => {
            let codes: Vec<CodeView> = match b {
                Backend::Local(a) => a.list_codes().await?,
                Backend::Remote { .. } => b.get("/v1/codes").await?,
            };
            if json {
                return print_json(&codes);
            }
            table(
                &["CODE ID", "USER", "MODES", "REUSABLE", "USES", "EXPIRES"],
                codes
                    .into_iter()
                    .map(|c| {
                        vec![
                            c.code_id,
                            c.user,
                            c.modes,
                            if c.reusable { "yes" } else { "no" }.into(),
                            c.uses.to_string(),
                            until(c.expires),
                        ]
                    })
                    .collect(),
            );
        }
        Command::Entities(EntitiesCmd::List(JsonFlag { json })) => {
            let list: Vec<EntityView> = match b {
                Backend::Local(a) => a.list_entities().await?,
                Backend::Remote { .. } => b.get("/v1/entities").await?,
            };
            if json {
                return print_json(&list);
            }
            table(
                &[
                    "PEER ID", "USER", "DEVICE", "MODES", "SERIAL", "STATE", "PNS",
                ],
                list.into_iter()
                    .map(|e| {
                        let state = if e.revoked.is_some() {
                            "revoked"
                        } else if e.online {
                            "online"
                        } else {
                            "offline"
                        };
                        vec![
                            e.peer_id,
                            e.user,
                            e.device,
                            e.modes,
                            e.serial.to_string(),
                            state.into(),
                            e.pns.join(","),
                        ]
                    })
                    .collect(),
            );
        }
        Command::Entities(EntitiesCmd::Show { id, json }) => {
            let e: EntityView = match b {
                Backend::Local(a) => a.show_entity(&id).await?,
                Backend::Remote { .. } => b.get(&format!("/v1/entities/{}", seg(&id))).await?,
            };
            if json.json {
                return print_json(&e);
            }
            println!("peer id:   {}", e.peer_id);
            println!("user:      {}", e.user);
            println!("device:    {}", e.device);
            println!("modes:     {}", e.modes);
            println!(
                "serial:    {} (all: {})",
                e.serial,
                e.serials
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            );
            println!("enrolled:  {}", when(e.enrolled));
            println!("expires:   {}", until(e.expires));
            println!(
                "revoked:   {}",
                e.revoked.map(when).unwrap_or_else(|| "no".into())
            );
            println!("mode:      {}", e.mode.as_deref().unwrap_or("-"));
            println!("online:    {}", if e.online { "yes" } else { "no" });
            println!("pns:       {}", e.pns.join(", "));
            println!("groups:    {}", e.groups.join(", "));
        }
        Command::Entities(EntitiesCmd::Revoke { id, json }) => {
            let out: RevokeOutcome = match b {
                Backend::Local(a) => a.revoke(&id).await?,
                Backend::Remote { .. } => {
                    b.call(
                        Method::POST,
                        &format!("/v1/entities/{}/revoke", seg(&id)),
                        None,
                    )
                    .await?
                }
            };
            if json.json {
                return print_json(&out);
            }
            if out.already_revoked {
                println!("{} was already revoked", out.entity);
            } else {
                println!(
                    "revoked {} (serials {}); revocation list version {}",
                    out.entity,
                    out.serials
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", "),
                    out.revocation_version
                );
                if !out.pns.is_empty() || !out.groups.is_empty() {
                    println!(
                        "removed from {}; their keys were rotated",
                        out.pns
                            .iter()
                            .chain(&out.groups)
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                }
            }
        }
        Command::Pns(PnsCmd::List(JsonFlag { json })) => {
            let list: Vec<PnView> = match b {
                Backend::Local(a) => a.list_pns().await?,
                Backend::Remote { .. } => b.get("/v1/pns").await?,
            };
            if json {
                return print_json(&list);
            }
            table(
                &["PN", "OWNER", "GATEWAY", "MEMBERS", "EPOCH", "UPDATED"],
                list.into_iter()
                    .map(|p| {
                        vec![
                            p.pn_id,
                            p.owner,
                            p.gateway,
                            p.members.len().to_string(),
                            p.epoch.to_string(),
                            when(p.updated),
                        ]
                    })
                    .collect(),
            );
        }
        Command::Pns(PnsCmd::Show { id, json }) => {
            let p: PnView = match b {
                Backend::Local(a) => a.show_pn(&id).await?,
                Backend::Remote { .. } => b.get(&format!("/v1/pns/{}", seg(&id))).await?,
            };
            if json.json {
                return print_json(&p);
            }
            println!("pn:               {}", p.pn_id);
            println!("owner:            {}", p.owner);
            println!("gateway:          {}", p.gateway);
            println!("epoch:            {}", p.epoch);
            println!("members:          {}", p.members.join(", "));
            println!("admins:           {}", p.admins.join(", "));
            println!("invited users:    {}", p.invited_users.join(", "));
            println!("invited entities: {}", p.invited_entities.join(", "));
            println!("expelled:         {}", p.expelled.join(", "));
            println!("zone members:     {}", p.zone_members.join(", "));
            println!("created:          {}", when(p.created));
            println!("updated:          {}", when(p.updated));
        }
        Command::Groups(GroupsCmd::List(JsonFlag { json })) => {
            let list: Vec<GroupView> = match b {
                Backend::Local(a) => a.list_groups().await?,
                Backend::Remote { .. } => b.get("/v1/groups").await?,
            };
            if json {
                return print_json(&list);
            }
            table(
                &["GROUP", "NAME", "OWNER", "MEMBERS", "INVITED", "EPOCH"],
                list.into_iter()
                    .map(|g| {
                        vec![
                            g.group,
                            g.name,
                            g.owner,
                            g.members.len().to_string(),
                            g.invited.len().to_string(),
                            g.epoch.to_string(),
                        ]
                    })
                    .collect(),
            );
        }
        Command::Groups(GroupsCmd::Show { id, json }) => {
            let g: GroupView = match b {
                Backend::Local(a) => a.show_group(&id).await?,
                Backend::Remote { .. } => b.get(&format!("/v1/groups/{}", seg(&id))).await?,
            };
            if json.json {
                return print_json(&g);
            }
            println!("group:    {}", g.group);
            println!("name:     {}", g.name);
            println!("owner:    {}", g.owner);
            println!("epoch:    {}", g.epoch);
            println!("admins:   {}", g.admins.join(", "));
            println!("members:  {}", g.members.join(", "));
            println!("invited:  {}", g.invited.join(", "));
            println!("created:  {}", when(g.created));
            println!("updated:  {}", when(g.updated));
        }
        Command::Usage(UsageCmd::Export { format }) => {
            let text = match b {
                Backend::Local(a) => a.export_usage(format).await?,
                Backend::Remote { .. } => {
                    let f = match format {
                        UsageFormat::Csv => "csv",
                        UsageFormat::Json => "json",
                    };
                    b.call_text(Method::GET, &format!("/v1/usage?format={f}"), None)
                        .await?
                }
            };
            print!("{text}");
            if !text.ends_with('\n') {
                println!();
            }
        }
    }
    Ok(())
}
