//! `cpns-node`: the CPNS node daemon (PNE and/or PN gateway).
//!
//! Parses flags, loads the config in layers (defaults, `--config` file, `CPNS_*` environment,
//! flags), starts the node, and waits for SIGINT or SIGTERM to shut it down cleanly.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use cpns_node::{Config, ModeSetting, Node};

#[derive(Debug, Parser)]
#[command(
    name = "cpns-node",
    version,
    about = "CPNS node daemon: a PNE and/or PN gateway"
)]
struct Args {
    /// TOML config file (every key documented in node/deploy/cpns-node.toml).
    #[arg(long, env = "CPNS_CONFIG")]
    config: Option<PathBuf>,
    /// Data dir (identity, enrolment, database, API token).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Listen address (repeatable), e.g. /ip4/0.0.0.0/tcp/7400.
    #[arg(long)]
    listen: Vec<String>,
    /// Bootstrap peer with /p2p/PEERID (repeatable).
    #[arg(long)]
    bootstrap: Vec<String>,
    /// auto, pne or gateway.
    #[arg(long)]
    mode: Option<ModeSetting>,
    /// LAN discovery with mDNS: on or off.
    #[arg(long, value_parser = parse_on_off)]
    mdns: Option<bool>,
    /// UPnP port mapping on the home router: auto (as mDNS), on or off.
    #[arg(long)]
    upnp: Option<cpns_node::config::Switch>,
    /// A relay to hold a slot on while not publicly reachable, with /p2p/PEERID (repeatable).
    #[arg(long)]
    relay: Vec<String>,
    /// Log filter (info, debug, cpns_node=debug,...).
    #[arg(long)]
    log: Option<String>,
    /// Port of the local API on 127.0.0.1 (0 = any).
    #[arg(long)]
    api_port: Option<u16>,
    /// The device's name.
    #[arg(long)]
    device_name: Option<String>,
    /// Enrol at start with this code from `cpns-auth enrol create`, unless already enrolled.
    #[arg(long, env = "CPNS_CODE")]
    code: Option<String>,
    /// Pair at start with this device (address with /p2p/PEERID, or pairing code); repeatable.
    #[arg(long)]
    pair: Vec<String>,
    /// Validate the configuration (this FILE, or `--config` with the environment and flags) and
    /// exit: 0 if valid, 1 with the bad key named.
    #[arg(long, value_name = "FILE", num_args = 0..=1)]
    check_config: Option<Option<PathBuf>>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon (the default).
    Run,
    /// Enrol this device with a code from `cpns-auth enrol create` and exit (0 once enrolled).
    /// The node must not be running; for a running node use `cpns up --code CODE`.
    Enrol {
        /// The enrolment code (`cpns1-…`).
        code: String,
    },
}

fn parse_on_off(s: &str) -> Result<bool, String> {
    match s {
        "on" | "true" | "1" | "yes" => Ok(true),
        "off" | "false" | "0" | "no" => Ok(false),
        other => Err(format!("expected on or off, got {other:?}")),
    }
}

fn load_config(args: &Args) -> anyhow::Result<Config> {
    let env: std::collections::BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("CPNS_"))
        .collect();
    // `--check-config FILE` checks that file; plain `--check-config` checks `--config`.
    let file = match &args.check_config {
        Some(Some(f)) => Some(f.as_path()),
        _ => args.config.as_deref(),
    };
    let mut config = Config::load(file, &env)?;
    if let Some(d) = &args.data_dir {
        config.data_dir = d.clone();
    }
    if !args.listen.is_empty() {
        config.listen = args.listen.clone();
    }
    if !args.bootstrap.is_empty() {
        config.bootstrap = args.bootstrap.clone();
    }
    if let Some(m) = args.mode {
        config.mode = m;
    }
    if let Some(m) = args.mdns {
        config.mdns = m;
    }
    if let Some(u) = args.upnp {
        config.nat.upnp = u;
    }
    if !args.relay.is_empty() {
        config.nat.relays = args.relay.clone();
    }
    if let Some(l) = &args.log {
        config.log = l.clone();
    }
    if let Some(p) = args.api_port {
        config.api_port = p;
    }
    if let Some(n) = &args.device_name {
        config.device_name = n.clone();
    }
    config.validate()?;
    Ok(config)
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(filter));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// What to do once the daemon runs: enrol, pair.
struct Startup {
    code: Option<String>,
    pair: Vec<String>,
}

async fn run(config: Config, start: Startup) -> anyhow::Result<()> {
    // Installed before the node starts: from the moment its API file exists a supervisor (or
    // a test) may send SIGTERM, and one arriving before the handlers would kill the daemon
    // without its clean shutdown (no flush, the API file left behind).
    let signals = Signals::install()?;
    let node = Node::start(config).await.context("starting the node")?;
    for addr in node.dial_addrs().await {
        println!("listening on {addr}");
    }
    println!("peer id {}", node.peer_id());
    println!("api on {}", node.api_addr());
    let handle = node.handle();
    if let Some(code) = start.code {
        if handle.status().await.map(|s| s.enrolled).unwrap_or(false) {
            println!("already enrolled: --code ignored");
        } else {
            match handle.up(&code).await {
                Ok(s) => println!(
                    "enrolled as {} of user {}",
                    s.device,
                    s.user.unwrap_or_default()
                ),
                Err(e) => eprintln!("cpns-node: enrolment failed: {e}"),
            }
        }
    }
    if let Ok(code) = handle.pairing_code().await {
        println!("pairing code {code}");
    }
    for target in start.pair {
        match handle.pair_with(&target).await {
            Ok(o) => println!("paired with {} ({})", o.peer_id, o.result),
            Err(e) => eprintln!("cpns-node: pairing with {target} failed: {e}"),
        }
    }
    signals.wait().await;
    node.shutdown().await;
    Ok(())
}

/// Enrols without running the daemon: a short-lived overlay node reaches the server named
/// in the code, and the credential and EUKey are saved in the data dir.
async fn enrol(config: Config, code: &str) -> anyhow::Result<()> {
    if cpns_node::ApiFile::read(&config.data_dir).is_ok() {
        anyhow::bail!(
            "a node is running on {}: use `cpns --data-dir {} up --code CODE`",
            config.data_dir.display(),
            config.data_dir.display()
        );
    }
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating {}", config.data_dir.display()))?;
    let (identity, _) =
        cpns_keys::Identity::load_or_generate(&config.data_dir.join(cpns_node::IDENTITY_FILE))?;
    let overlay = cpns_overlay::Config {
        listen: vec![cpns_overlay::loopback_any()],
        kad_mode: cpns_overlay::KadMode::Client,
        mdns: false,
        ..cpns_overlay::Config::default()
    };
    let (client, _events, event_loop) = cpns_overlay::new(overlay, &identity).await?;
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(event_loop.run(cancel.clone()));
    let result = tokio::time::timeout(
        std::time::Duration::from_secs(30),
        cpns_node::enrolment::enrol(&client, &identity, code, &config.device_name),
    )
    .await;
    cancel.cancel();
    let _ = task.await;
    let enrolment = result.context("cpns-auth did not answer within 30 s")??;
    enrolment.save(&config.data_dir)?;
    println!(
        "enrolled {} as {} of user {} (credential serial {})",
        identity.peer_id(),
        enrolment.device,
        enrolment.credential.body.user,
        enrolment.credential.serial()
    );
    Ok(())
}

/// The daemon's SIGTERM and SIGINT handlers.
struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing SIGINT handler")?,
        })
    }

    /// Until the first of them arrives (also one that arrived before this was called).
    async fn wait(mut self) {
        tokio::select! {
            _ = self.term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = self.int.recv() => tracing::info!("SIGINT: shutting down"),
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = match load_config(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("cpns-node: invalid configuration: {e:#}");
            return ExitCode::from(1);
        }
    };
    if args.check_config.is_some() {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    init_logging(&config.log);
    let start = Startup {
        code: args.code.clone(),
        pair: args.pair.clone(),
    };
    let result = match args.command.unwrap_or(Command::Run) {
        Command::Run => run(config, start).await,
        Command::Enrol { code } => enrol(config, &code).await,
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("cpns-node: {e:#}");
            ExitCode::from(1)
        }
    }
}
