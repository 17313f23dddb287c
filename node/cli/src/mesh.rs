//! `cpns mesh up|status|down`: a whole local mesh (one `cpns-auth` and N `cpns-node`s on
//! 127.0.0.1) for developers, with one command.
//!
//! * [`up`]: start the processes detached, enrol every node, pair them with node 0, wait for
//!   one PN, print a table.
//! * `status`: what each recorded process is doing ([`view`]).
//! * [`down`]: stop exactly the recorded processes, optionally remove the dir.
//!
//! Everything the mesh started is recorded in `DIR/mesh.json` ([`record`]); processes log to
//! `DIR/<name>.log` and keep data in `DIR/auth`, `DIR/node-0`… mDNS is always off: a mesh
//! sends no multicast off this machine. The daemons are found next to the running `cpns`
//! (else on `PATH`) ([`spawn`]).

mod down;
mod record;
mod spawn;
mod up;
mod view;

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};

use super::client::CliError;
use super::commands::print_json;
use record::MeshFile;

/// The default mesh dir, relative to the current directory.
const DEFAULT_DIR: &str = "cpns-mesh";

/// `cpns mesh` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum MeshAction {
    /// Start cpns-auth and N nodes on 127.0.0.1 (mDNS off), enrol them, pair them with node 0
    /// (the gateway) and wait until all are in its PN. The processes keep running after this
    /// command returns; `cpns mesh down` stops them.
    Up(UpArgs),
    /// Each process of the mesh: running?, PeerId, mode, PN, members.
    Status(DirArg),
    /// Stop the mesh's processes (SIGTERM, SIGKILL after 10 s) and forget them.
    Down(DownArgs),
}

/// Where the mesh lives.
#[derive(Debug, Args)]
pub(crate) struct DirArg {
    /// The mesh dir: mesh.json, the logs, and a data dir per process.
    #[arg(long, default_value = DEFAULT_DIR)]
    dir: PathBuf,
}

/// `cpns mesh up` arguments.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    /// Number of nodes (node 0 is the gateway).
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u16).range(1..=256))]
    nodes: u16,
    #[command(flatten)]
    dir: DirArg,
    /// Fixed ports instead of any free ones: cpns-auth gets P (libp2p) and P+1 (admin), node i
    /// gets P+2+2i (libp2p) and P+3+2i (local API).
    #[arg(long, value_name = "P")]
    base_port: Option<u16>,
    /// Give up (and stop what was started) after this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 60)]
    timeout: u64,
}

/// `cpns mesh down` arguments.
#[derive(Debug, Args)]
pub(crate) struct DownArgs {
    #[command(flatten)]
    dir: DirArg,
    /// Also remove the mesh dir (data dirs and logs), after checking it holds only what
    /// `cpns mesh up` creates.
    #[arg(long)]
    clean: bool,
}

pub(super) async fn run(action: &MeshAction, json: bool) -> Result<(), CliError> {
    match action {
        MeshAction::Up(a) => {
            up::run(up::UpRequest {
                dir: a.dir.dir.clone(),
                nodes: a.nodes,
                base_port: a.base_port,
                timeout: Duration::from_secs(a.timeout),
                json,
            })
            .await
        }
        MeshAction::Status(d) => status(&d.dir, json).await,
        MeshAction::Down(a) => down::run(&a.dir.dir, a.clean, json).await,
    }
}

/// `cpns mesh status`: prints every process; fails (exit 1) if one is not running or the
/// nodes are not all in node 0's PN.
async fn status(dir: &std::path::Path, json: bool) -> Result<(), CliError> {
    let Some(file) = MeshFile::read(dir)? else {
        return Err(CliError::Other(format!(
            "no mesh in {} (no {}); start one with `cpns mesh up --dir {}`",
            dir.display(),
            record::MESH_FILE,
            dir.display()
        )));
    };
    let view = view::collect(&file).await;
    if json {
        print_json(&view)?;
    } else {
        match &view.pn_id {
            Some(pn) => crate::output::outln!(
                "mesh of {} nodes in {}: PN {pn}",
                file.settings.nodes,
                file.dir.display()
            ),
            None => crate::output::outln!(
                "mesh of {} nodes in {}: not all in one PN",
                file.settings.nodes,
                file.dir.display()
            ),
        }
        crate::output::out!("{}", view::render_table(&view));
    }
    if view.healthy {
        return Ok(());
    }
    let problems = view
        .processes
        .iter()
        .filter_map(|p| {
            if !p.alive {
                Some(format!("{} is not running (see {})", p.name, p.log))
            } else {
                p.error
                    .as_ref()
                    .map(|e| format!("{} does not answer: {e}", p.name))
            }
        })
        .collect::<Vec<_>>();
    Err(CliError::Other(if problems.is_empty() {
        "the nodes are not all in node-0's PN".into()
    } else {
        problems.join("; ")
    }))
}
