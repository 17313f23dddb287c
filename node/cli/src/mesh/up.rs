//! `cpns mesh up`: start `cpns-auth` and N nodes on 127.0.0.1, enrol every node, pair every
//! other node with node 0 (the gateway), and wait until all of them are in node 0's PN.
//!
//! The order is the manual session's: the server, a `mesh` user, node 0 in gateway mode
//! (`cpns up` makes it set its PN up with `cpns-auth`, B.1 steps 8-17), then the other nodes
//! bootstrapping from node 0, each enrolled with its own one-time code and paired with node 0
//! (B.1 steps 1-4 and 18-26). A mesh dir that already holds enrolled nodes (after a `cpns mesh
//! down` without `--clean`) is started again as it was: enrolled nodes are not enrolled again
//! and members are not paired again, and `cpns-auth` listens on the port it had (the nodes
//! hold that address from their enrolment).

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;
use tokio::time::Instant;

use super::super::client::{ApiClient, CliError};
use super::super::commands::print_json;
use super::down;
use super::record::{MeshFile, ProcessRecord, Role, Settings};
use super::spawn::{self, Binaries};
use super::view;
use cpns_api::PairOutcome;
use cpns_api::StatusView;

/// The user every node of a mesh is enrolled for.
pub(super) const USER: &str = "mesh";

/// How many nodes are enrolled and paired at once. One: concurrent admissions at the gateway
/// cross-wire its requests to `cpns-auth` with its requests to members (both request-response
/// behaviours of the overlay number their requests from 1 and the event loop keeps one map of
/// pending requests), which loses members. Raise it once that is fixed.
const PARALLEL_JOINS: usize = 1;

/// What `cpns mesh up` was asked.
pub(super) struct UpRequest {
    /// The mesh dir.
    pub(super) dir: PathBuf,
    /// Number of nodes.
    pub(super) nodes: u16,
    /// First port of the fixed port plan.
    pub(super) base_port: Option<u16>,
    /// The bound of the whole operation.
    pub(super) timeout: Duration,
    /// Print JSON, no progress bar.
    pub(super) json: bool,
}

/// The ports of one process: libp2p and the local API (or `cpns-auth`'s admin endpoint).
/// Process k (0 = cpns-auth, 1 + i = node i) gets `P + 2k` and `P + 2k + 1`; 0 = any free port.
fn ports(base: Option<u16>, k: u16) -> (u16, u16) {
    match base {
        Some(p) => (p + 2 * k, p + 2 * k + 1),
        None => (0, 0),
    }
}

/// `cpns mesh up`.
pub(super) async fn run(req: UpRequest) -> Result<(), CliError> {
    if let Some(p) = req.base_port {
        let last = u32::from(p) + 2 * (u32::from(req.nodes) + 1) - 1;
        if p == 0 || last > u32::from(u16::MAX) {
            return Err(usage(format!(
                "--base-port {p} with {} nodes needs ports {p}..={last}, beyond 65535 (or 0)",
                req.nodes
            )));
        }
    }
    std::fs::create_dir_all(&req.dir)
        .map_err(|e| CliError::Other(format!("cannot create {}: {e}", req.dir.display())))?;
    let dir = req
        .dir
        .canonicalize()
        .map_err(|e| CliError::Other(format!("cannot resolve {}: {e}", req.dir.display())))?;
    if let Some(old) = MeshFile::read(&dir)? {
        let running = old.running();
        if !running.is_empty() {
            let list = running
                .iter()
                .map(|p| format!("{} (PID {})", p.name, p.pid))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(CliError::Other(format!(
                "a mesh already runs in {}: {list}; stop it with `cpns mesh down --dir {}`",
                dir.display(),
                dir.display()
            )));
        }
        // Left by a mesh whose processes all died (a reboot, a crash): nothing to keep.
        MeshFile::remove(&dir)?;
    }
    let bins = Binaries::find()?;
    let settings = Settings {
        nodes: req.nodes,
        base_port: req.base_port,
        user: USER.into(),
        mdns: false,
        timeout_secs: req.timeout.as_secs(),
    };
    let bar = progress_bar(req.json, req.nodes);
    let started = Instant::now();
    let deadline = started + req.timeout;
    let result = tokio::select! {
        r = bring_up(&dir, &bins, settings, &bar, deadline) => r,
        _ = tokio::signal::ctrl_c() => Err(CliError::Other("interrupted".into())),
    };
    bar.finish_and_clear();
    if let Err(e) = result {
        return Err(tear_down(&dir, e).await);
    }
    let Some(file) = MeshFile::read(&dir)? else {
        return Err(CliError::Other(format!(
            "{} disappeared while the mesh started",
            MeshFile::path(&dir).display()
        )));
    };
    let view = view::collect(&file).await;
    if req.json {
        return print_json(&view);
    }
    crate::output::outln!(
        "mesh of {} node{} up in {:.1} s: PN {} with gateway node-0, in {}",
        req.nodes,
        if req.nodes == 1 { "" } else { "s" },
        started.elapsed().as_secs_f64(),
        view.pn_id.as_deref().unwrap_or("-"),
        dir.display()
    );
    crate::output::out!("{}", view::render_table(&view));
    crate::output::outln!();
    crate::output::outln!(
        "talk to a node:  cpns --data-dir {} status",
        dir.join("node-0").display()
    );
    crate::output::outln!("see the mesh:    cpns mesh status --dir {}", dir.display());
    crate::output::outln!(
        "stop it:         cpns mesh down --dir {} [--clean]",
        dir.display()
    );
    Ok(())
}

/// A usage error (exit code 2).
fn usage(message: String) -> CliError {
    CliError::Api {
        status: 400,
        code: "usage".into(),
        message,
    }
}

fn progress_bar(hidden: bool, nodes: u16) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    // Steps: the server, the user, then per node: started, enrolled, in the PN.
    let bar = ProgressBar::new(2 + 3 * u64::from(nodes));
    if let Ok(style) =
        ProgressStyle::with_template("{spinner} [{elapsed}] {wide_bar} {pos}/{len} {msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// After a failure: stop whatever the record names, forget it, keep the logs.
async fn tear_down(dir: &Path, error: CliError) -> CliError {
    let Ok(Some(file)) = MeshFile::read(dir) else {
        return error;
    };
    let report = down::stop(&file).await;
    if report.survived.is_empty() {
        let _ = MeshFile::remove(dir);
    }
    CliError::Other(format!(
        "{error}\n(the mesh's processes were stopped; their logs are in {})",
        dir.display()
    ))
}

/// Records a started process (before anything waits on it, so that a failure or Ctrl-C can
/// always stop it); if the record cannot be written, the process is killed at once.
fn record(
    file: &mut MeshFile,
    mut child: Child,
    rec: ProcessRecord,
) -> Result<(Child, ProcessRecord), CliError> {
    file.processes.push(rec.clone());
    if let Err(e) = file.write() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(e);
    }
    Ok((child, rec))
}

/// A node of the mesh being started.
struct Started {
    child: Child,
    rec: ProcessRecord,
}

async fn bring_up(
    dir: &Path,
    bins: &Binaries,
    settings: Settings,
    bar: &ProgressBar,
    deadline: Instant,
) -> Result<(), CliError> {
    let n = settings.nodes;
    let base = settings.base_port;
    let mut file = MeshFile::new(dir, settings);
    file.write()?;

    // The server.
    bar.set_message("starting cpns-auth");
    let auth_dir = dir.join("auth");
    let (mut p2p, admin) = ports(base, 0);
    if base.is_none() && auth_dir.exists() {
        // A mesh started again: its nodes were enrolled with the server's old address.
        p2p = previous_auth_port(&bins.auth, &auth_dir).await.unwrap_or(0);
    }
    let (child, rec) = spawn::spawn(
        dir,
        "auth",
        Role::Auth,
        &bins.auth,
        vec![
            "serve".into(),
            "--data-dir".into(),
            auth_dir.display().to_string(),
            "--listen".into(),
            format!("/ip4/127.0.0.1/tcp/{p2p}"),
            "--admin-port".into(),
            admin.to_string(),
        ],
        auth_dir.clone(),
    )?;
    let (mut auth_child, auth_rec) = record(&mut file, child, rec)?;
    spawn::wait_auth_ready(&bins.auth, &mut auth_child, &auth_rec, deadline).await?;
    bar.inc(1);

    bar.set_message(format!("creating user {USER}"));
    let users = spawn::auth_cli(&bins.auth, &auth_dir, &["users", "list", "--json"]).await?;
    let exists = users
        .as_array()
        .is_some_and(|list| list.iter().any(|u| u["name"] == USER));
    if !exists {
        spawn::auth_cli(&bins.auth, &auth_dir, &["users", "create", USER, "--json"]).await?;
    }
    bar.inc(1);

    // Node 0: the gateway, and everyone's bootstrap peer.
    bar.set_message("starting node-0 (gateway)");
    let mut gateway = start_node(dir, bins, &mut file, 0, base, None)?;
    let (api0, status0) =
        spawn::wait_node_ready(&mut gateway.child, &gateway.rec, deadline).await?;
    bar.inc(1);
    let peer0 = status0.peer_id.clone();
    let addr0 = status0
        .listen_addrs
        .first()
        .map(|a| format!("{a}/p2p/{peer0}"))
        .ok_or_else(|| CliError::Other("node-0 listens on no address".into()))?;
    bar.set_message("enrolling node-0; it sets its PN up");
    if !status0.enrolled {
        let code = enrolment_code(bins, &auth_dir).await?;
        let _: StatusView = api0
            .post("/v1/up", &json!({ "code": code }))
            .await
            .map_err(|e| {
                CliError::Other(format!("enrolling node-0 (and setting its PN up): {e}"))
            })?;
    }
    bar.inc(1);

    // The other nodes: start them all, then enrol and pair them (`PARALLEL_JOINS` at a time).
    let mut others = Vec::new();
    for i in 1..n {
        bar.set_message(format!("starting node-{i}"));
        others.push(start_node(dir, bins, &mut file, i, base, Some(&addr0))?);
    }
    let mut apis = Vec::new();
    for node in &mut others {
        let (api, status) = spawn::wait_node_ready(&mut node.child, &node.rec, deadline).await?;
        bar.inc(1);
        apis.push((node.rec.name.clone(), api, status));
    }
    bar.set_message("enrolling and pairing the nodes with node-0");
    let mut joins = futures::stream::iter(apis.iter())
        .map(|(name, api, status)| join(bins, &auth_dir, name, api, status, &addr0))
        .buffer_unordered(PARALLEL_JOINS);
    loop {
        match tokio::time::timeout_at(deadline, joins.next()).await {
            Ok(Some(r)) => {
                r?;
                bar.inc(1);
            }
            Ok(None) => break,
            Err(_) => {
                return Err(CliError::Other(
                    "enrolling and pairing the nodes did not finish in time".into(),
                ));
            }
        }
    }
    drop(joins);

    // Everyone in node 0's PN, node 0 its gateway and holding every member.
    bar.set_message("waiting for every node to be in node-0's PN");
    let mut children: Vec<&mut Started> = std::iter::once(&mut gateway)
        .chain(others.iter_mut())
        .collect();
    wait_converged(
        &mut children,
        &peer0,
        &mut auth_child,
        &auth_rec,
        bar,
        deadline,
    )
    .await
}

/// The TCP port a stopped `cpns-auth` last listened on (its status read from the data dir).
async fn previous_auth_port(auth_bin: &Path, auth_dir: &Path) -> Option<u16> {
    let info = spawn::auth_cli(auth_bin, auth_dir, &["status", "--json"])
        .await
        .ok()?;
    info["listen_addrs"]
        .as_array()?
        .iter()
        .find_map(|a| tcp_port(a.as_str()?))
}

/// The non-zero port of a multiaddr's `/tcp/PORT` part, read from its text form (the CLI does
/// not link libp2p).
fn tcp_port(multiaddr: &str) -> Option<u16> {
    let mut parts = multiaddr.split('/');
    while let Some(p) = parts.next() {
        if p == "tcp" {
            return parts.next()?.parse().ok().filter(|port| *port != 0);
        }
    }
    None
}

/// Starts node `i` (node 0 in gateway mode, the others in auto mode bootstrapping from it).
fn start_node(
    dir: &Path,
    bins: &Binaries,
    file: &mut MeshFile,
    i: u16,
    base: Option<u16>,
    bootstrap: Option<&str>,
) -> Result<Started, CliError> {
    let name = format!("node-{i}");
    let data_dir = dir.join(&name);
    let (p2p, api) = ports(base, 1 + i);
    let mut args = vec![
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--listen".into(),
        format!("/ip4/127.0.0.1/tcp/{p2p}"),
        "--api-port".into(),
        api.to_string(),
        // Mandatory: no multicast may leave this machine.
        "--mdns".into(),
        "off".into(),
        "--device-name".into(),
        name.clone(),
        "--mode".into(),
    ];
    match bootstrap {
        None => args.push("gateway".into()),
        Some(addr) => {
            args.push("auto".into());
            args.push("--bootstrap".into());
            args.push(addr.into());
        }
    }
    let role = if i == 0 { Role::Gateway } else { Role::Node };
    let (child, rec) = spawn::spawn(dir, &name, role, &bins.node, args, data_dir)?;
    let (child, rec) = record(file, child, rec)?;
    Ok(Started { child, rec })
}

/// A one-time code for the mesh's user.
async fn enrolment_code(bins: &Binaries, auth_dir: &Path) -> Result<String, CliError> {
    let created = spawn::auth_cli(
        &bins.auth,
        auth_dir,
        &["enrol", "create", "--user", USER, "--json"],
    )
    .await?;
    created["code"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CliError::Other("`cpns-auth enrol create` printed no code".into()))
}

/// Enrols a node (unless it already is) and pairs it with node 0 (unless it is in a PN).
async fn join(
    bins: &Binaries,
    auth_dir: &Path,
    name: &str,
    api: &ApiClient,
    status: &StatusView,
    addr0: &str,
) -> Result<(), CliError> {
    let in_pn = if status.enrolled {
        status.pn_id.is_some()
    } else {
        let code = enrolment_code(bins, auth_dir).await?;
        let s: StatusView = api
            .post("/v1/up", &json!({ "code": code }))
            .await
            .map_err(|e| CliError::Other(format!("enrolling {name}: {e}")))?;
        s.pn_id.is_some()
    };
    if !in_pn {
        let _: PairOutcome = api
            .post("/v1/pair", &json!({ "addr": addr0 }))
            .await
            .map_err(|e| CliError::Other(format!("pairing {name} with node-0: {e}")))?;
    }
    Ok(())
}

/// Waits until every node names node 0's PN and node 0 as its gateway, and node 0 lists
/// every node as a member.
async fn wait_converged(
    nodes: &mut [&mut Started],
    peer0: &str,
    auth_child: &mut Child,
    auth_rec: &ProcessRecord,
    bar: &ProgressBar,
    deadline: Instant,
) -> Result<(), CliError> {
    let mut done = vec![false; nodes.len()];
    let mut last: Vec<Option<StatusView>> = vec![None; nodes.len()];
    let mut peers: Vec<Option<String>> = vec![None; nodes.len()];
    loop {
        spawn::check_alive(auth_child, auth_rec)?;
        let mut pn0 = None;
        for (k, node) in nodes.iter_mut().enumerate() {
            spawn::check_alive(&mut node.child, &node.rec)?;
            if let Ok((_, s)) = view::node_status(&node.rec).await {
                peers[k] = Some(s.peer_id.clone());
                if k == 0 {
                    pn0 = s.pn_id.clone();
                }
                last[k] = Some(s);
            }
        }
        for k in 0..nodes.len() {
            let Some(s) = &last[k] else { continue };
            let mut ok = pn0.is_some() && s.pn_id == pn0 && s.gateway.as_deref() == Some(peer0);
            if k == 0 {
                ok = ok
                    && peers.iter().all(|p| {
                        p.as_ref()
                            .is_some_and(|p| s.members.iter().any(|m| &m.peer_id == p))
                    });
            }
            if ok && !done[k] {
                done[k] = true;
                bar.inc(1);
            }
        }
        if done.iter().all(|d| *d) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let k = done.iter().position(|d| !d).unwrap_or(0);
            let rec = &nodes[k].rec;
            let seen = match &last[k] {
                None => "its API never answered".to_string(),
                Some(s) => format!(
                    "its status shows PN {}, gateway {}, {} members",
                    s.pn_id.as_deref().unwrap_or("none"),
                    s.gateway.as_deref().unwrap_or("none"),
                    s.members.len()
                ),
            };
            let wanted = if k == 0 {
                format!("list all {} nodes as members of its PN", nodes.len())
            } else {
                format!(
                    "join node-0's PN {}",
                    pn0.as_deref().unwrap_or("(node-0 has none)")
                )
            };
            return Err(CliError::Other(format!(
                "{} ({}) did not {wanted} in time: {seen}; see {}:\n{}",
                rec.name,
                peers[k].as_deref().unwrap_or("PeerId unknown"),
                rec.log.display(),
                spawn::log_tail(&rec.log)
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tcp_ports_of_multiaddrs() {
        assert_eq!(super::tcp_port("/ip4/127.0.0.1/tcp/7400"), Some(7400));
        assert_eq!(
            super::tcp_port("/ip4/127.0.0.1/tcp/7400/p2p/12D3KooW"),
            Some(7400)
        );
        assert_eq!(super::tcp_port("/ip4/127.0.0.1/tcp/0"), None);
        assert_eq!(super::tcp_port("/ip4/127.0.0.1/udp/9/quic-v1"), None);
        assert_eq!(super::tcp_port("/ip4/127.0.0.1/tcp/x"), None);
    }
}
