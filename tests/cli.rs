//! The binaries as a user runs them: `cpns-auth`, `cpns-node` and `cpns` as real processes on
//! 127.0.0.1 with temp dirs (enrol, pair, status), `cpns mesh up|status|down`, `--check-config`
//! of both daemons, the deployment examples in `node/deploy` and `auth-server/deploy`, and the
//! CLI's exit code when no node runs.
//!
//! Every process a test starts is owned by a guard that kills it on drop, so a failing
//! assertion never leaves a daemon behind; every wait is bounded.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use serde_json::Value;

use crate::node::wait_timeout;
use crate::util::bin;

/// The bound of every wait for a process to answer.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// A command for one of the workspace's binaries, with a clean environment: no `CPNS_*`
/// variable of the developer's shell reaches it, and logs have no colour codes.
pub(crate) fn command(name: &str) -> Command {
    let mut cmd = Command::new(bin(name));
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CPNS_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1").stdin(Stdio::null());
    cmd
}

/// Runs a command to completion within `limit`; stdout and stderr go through files (no pipe
/// can fill up and block the child).
pub(crate) fn run(mut cmd: Command, limit: Duration) -> Result<Output> {
    let dir = tempfile::tempdir()?;
    let out_path = dir.path().join("stdout");
    let err_path = dir.path().join("stderr");
    let mut child = cmd
        .stdout(std::fs::File::create(&out_path)?)
        .stderr(std::fs::File::create(&err_path)?)
        .spawn()
        .with_context(|| format!("starting {cmd:?}"))?;
    let status = wait_timeout(&mut child, limit)?
        .with_context(|| format!("{cmd:?} did not finish within {limit:?}"))?;
    Ok(Output {
        status,
        stdout: std::fs::read(&out_path)?,
        stderr: std::fs::read(&err_path)?,
    })
}

/// Runs a command that must succeed and print JSON.
pub(crate) fn run_json(cmd: Command) -> Result<Value> {
    let what = format!("{cmd:?}");
    let out = run(cmd, WAIT)?;
    ensure!(
        out.status.success(),
        "{what} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{what} printed no JSON: {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// Daemons started by a test: each is killed (and reaped) when the guard drops, on every path.
#[derive(Default)]
pub(crate) struct Daemons {
    children: Vec<(String, Child, PathBuf)>,
}

impl Daemons {
    /// Starts a daemon whose stdout and stderr go to `log`.
    pub(crate) fn start(&mut self, name: &str, mut cmd: Command, log: &Path) -> Result<()> {
        let file = std::fs::File::create(log)?;
        let child = cmd
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("starting {name}"))?;
        self.children.push((name.into(), child, log.to_owned()));
        Ok(())
    }

    /// Kills the daemon `name` with SIGKILL (no clean-up of any kind) and reaps it.
    pub(crate) fn kill9(&mut self, name: &str) -> Result<()> {
        let i = self
            .children
            .iter()
            .position(|(n, _, _)| n == name)
            .with_context(|| format!("no daemon {name}"))?;
        let (_, mut child, _) = self.children.remove(i);
        child.kill()?;
        child.wait()?;
        Ok(())
    }

    /// Fails, with the end of its log, if a daemon has exited.
    fn check(&mut self) -> Result<()> {
        for (name, child, log) in &mut self.children {
            if let Some(status) = child.try_wait()? {
                bail!(
                    "{name} exited ({status}):\n{}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
        }
        Ok(())
    }
}

impl Drop for Daemons {
    fn drop(&mut self) {
        for (_, child, _) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Polls `f` every 50 ms until it returns `Some`, for at most `limit`; `daemons` are checked
/// on every round so that a crash fails at once with its log.
pub(crate) fn wait_for<T>(
    daemons: &mut Daemons,
    limit: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        daemons.check()?;
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `cpns --data-dir DIR ARGS... --json`.
pub(crate) fn cpns(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = command("cpns");
    cmd.arg("--data-dir").arg(dir).args(args).arg("--json");
    cmd
}

/// `cpns-auth --data-dir DIR ARGS...`.
pub(crate) fn auth_cli(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = command("cpns-auth");
    cmd.arg("--data-dir").arg(dir).args(args);
    cmd
}

/// A node's status through the CLI, once its API answers.
fn node_status(daemons: &mut Daemons, dir: &Path) -> Result<Value> {
    wait_for(daemons, WAIT, "the node's API", || {
        if !dir.join(cpns_node::API_FILE).exists() {
            return Ok(None);
        }
        let out = run(cpns(dir, &["status"]), WAIT)?;
        Ok(out
            .status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten())
    })
}

/// Starts `cpns-node` on loopback with mDNS off.
fn start_node(daemons: &mut Daemons, root: &Path, name: &str, extra: &[&str]) -> Result<PathBuf> {
    let dir = root.join(name);
    let mut cmd = command("cpns-node");
    cmd.arg("--data-dir")
        .arg(&dir)
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--mdns",
            "off",
            "--device-name",
            name,
        ])
        .args(extra);
    daemons.start(name, cmd, &root.join(format!("{name}.log")))?;
    Ok(dir)
}

/// Starts `cpns-auth serve` on loopback with its data dir in `root/auth`, waits for its admin
/// endpoint, and creates the user `alice`. Returns the data dir.
pub(crate) fn start_auth_with_alice(daemons: &mut Daemons, root: &Path) -> Result<PathBuf> {
    let auth = root.join("auth");
    let mut serve = command("cpns-auth");
    serve
        .arg("serve")
        .arg("--data-dir")
        .arg(&auth)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"]);
    daemons.start("cpns-auth", serve, &root.join("auth.log"))?;
    wait_for(daemons, WAIT, "cpns-auth's admin endpoint", || {
        if !auth.join("admin.json").exists() {
            return Ok(None);
        }
        let out = run(auth_cli(&auth, &["status", "--json"]), WAIT)?;
        Ok(out.status.success().then_some(()))
    })?;
    run_json(auth_cli(&auth, &["users", "create", "alice", "--json"]))?;
    Ok(auth)
}

/// `cpns-auth` with the user alice, and two of her nodes, one command each: `first` enrols
/// at start and prints its pairing code, `second` enrols and pairs with it by that code; once
/// both are in one PN, their data dirs and the status each first showed (`first` enrolled,
/// `second` in the PN of two).
pub(crate) fn pn_of_two(
    daemons: &mut Daemons,
    root: &Path,
    first: &str,
    second: &str,
) -> Result<(PathBuf, PathBuf, Value, Value)> {
    let auth = start_auth_with_alice(daemons, root)?;
    let code = || -> Result<String> {
        let v = run_json(auth_cli(
            &auth,
            &["enrol", "create", "--user", "alice", "--json"],
        ))?;
        v["code"].as_str().map(str::to_owned).context("no code")
    };
    let a = start_node(daemons, root, first, &["--code", &code()?])?;
    let sa = wait_for(daemons, WAIT, "the first node to enrol", || {
        let s = node_status(&mut Daemons::default(), &a)?;
        Ok((s["enrolled"] == true).then_some(s))
    })?;
    let pairing = run_json(cpns(&a, &["pairing-code"]))?;
    let pairing = pairing["code"].as_str().context("pairing code")?.to_owned();
    assert!(pairing.starts_with("cpnspair1-"), "{pairing}");
    let b = start_node(
        daemons,
        root,
        second,
        &["--code", &code()?, "--pair", &pairing],
    )?;
    let sb = wait_for(daemons, WAIT, "the PN to form", || {
        let s = node_status(&mut Daemons::default(), &b)?;
        Ok(
            (s["pn_id"].is_string() && s["members"].as_array().map(Vec::len) == Some(2))
                .then_some(s),
        )
    })?;
    Ok((a, b, sa, sb))
}

/// The manual session of the README with the real binaries: `cpns-auth serve`, a user, two
/// codes; node 0 in gateway mode runs `cpns up` (and sets its PN up), node 1 bootstraps from
/// it, runs `cpns up` and `cpns pair`; both then show the same PN with node 0 as gateway,
/// and `cpns-auth pns list` agrees.
#[test]
fn two_nodes_enrol_and_pair_through_the_cli() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut daemons = Daemons::default();
    let auth = start_auth_with_alice(&mut daemons, root)?;
    let code = || -> Result<String> {
        let v = run_json(auth_cli(
            &auth,
            &["enrol", "create", "--user", "alice", "--json"],
        ))?;
        v["code"]
            .as_str()
            .map(str::to_owned)
            .context("no code in enrol create --json")
    };

    let n0 = start_node(&mut daemons, root, "n0", &["--mode", "gateway"])?;
    let s0 = node_status(&mut daemons, &n0)?;
    let peer0 = s0["peer_id"].as_str().context("peer_id")?.to_owned();
    let addr0 = format!(
        "{}/p2p/{peer0}",
        s0["listen_addrs"][0].as_str().context("listen_addrs")?
    );
    let up0 = run_json(cpns(&n0, &["up", "--code", &code()?]))?;
    let pn = up0["pn_id"]
        .as_str()
        .context("a gateway-mode node sets its PN up at `cpns up`")?
        .to_owned();
    assert_eq!(up0["gateway"], peer0);
    assert_eq!(up0["enrolled"], true);

    let n1 = start_node(&mut daemons, root, "n1", &["--bootstrap", &addr0])?;
    node_status(&mut daemons, &n1)?;
    let up1 = run_json(cpns(&n1, &["up", "--code", &code()?]))?;
    assert_eq!(up1["user"], "alice");
    assert!(up1["pn_id"].is_null(), "not in a PN before pairing");
    let paired = run_json(cpns(&n1, &["pair", &addr0]))?;
    assert_eq!(paired["peer_id"], peer0);
    assert_eq!(paired["result"], "joining");

    let s1 = wait_for(&mut daemons, WAIT, "n1 to join n0's PN", || {
        let s = run_json(cpns(&n1, &["status"]))?;
        Ok((s["pn_id"] == pn.as_str()).then_some(s))
    })?;
    assert_eq!(s1["gateway"], peer0);
    assert_eq!(s1["mode"], "pne");
    let peer1 = s1["peer_id"].as_str().context("peer_id")?.to_owned();
    let s0 = wait_for(&mut daemons, WAIT, "n0 to list n1", || {
        let s = run_json(cpns(&n0, &["status"]))?;
        let members: BTreeSet<String> = s["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["peer_id"].as_str().map(str::to_owned))
            .collect();
        Ok(members.contains(&peer1).then_some(s))
    })?;
    assert_eq!(s0["pn_id"], pn.as_str());
    assert_eq!(s0["mode"], "pne+gateway");

    let pns = run_json(auth_cli(&auth, &["pns", "list", "--json"]))?;
    let record = pns
        .as_array()
        .and_then(|l| l.iter().find(|p| p["pn_id"] == pn.as_str()))
        .context("cpns-auth knows the PN")?;
    assert_eq!(record["gateway"], peer0);
    assert_eq!(record["members"].as_array().map(Vec::len), Some(2));
    Ok(())
}

/// Consent across users from the CLI: pairing with another user's gateway leaves an
/// invitation (`cpns pn invitations`); `cpns pn accept ID` joins once an admin invited the
/// user (`cpns pn invite --user`); `cpns pn decline ID` drops one.
#[test]
fn another_users_invitation_is_listed_and_accepted_through_the_cli() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut daemons = Daemons::default();
    let auth = start_auth_with_alice(&mut daemons, root)?;
    run_json(auth_cli(&auth, &["users", "create", "bob", "--json"]))?;
    let code = |user: &str| -> Result<String> {
        let v = run_json(auth_cli(
            &auth,
            &["enrol", "create", "--user", user, "--json"],
        ))?;
        v["code"]
            .as_str()
            .map(str::to_owned)
            .context("no code in enrol create --json")
    };
    let n0 = start_node(&mut daemons, root, "n0", &["--mode", "gateway"])?;
    let s0 = node_status(&mut daemons, &n0)?;
    let addr0 = format!(
        "{}/p2p/{}",
        s0["listen_addrs"][0].as_str().context("listen_addrs")?,
        s0["peer_id"].as_str().context("peer_id")?
    );
    let pn = run_json(cpns(&n0, &["up", "--code", &code("alice")?]))?["pn_id"]
        .as_str()
        .context("the gateway's PN")?
        .to_owned();
    run_json(cpns(&n0, &["pn", "invite", "--user", "bob"]))?;
    let n1 = start_node(&mut daemons, root, "n1", &[])?;
    node_status(&mut daemons, &n1)?;
    run_json(cpns(&n1, &["up", "--code", &code("bob")?]))?;

    let paired = run_json(cpns(&n1, &["pair", &addr0]))?;
    assert_eq!(paired["result"], "invitation", "{paired}");
    let listed = run_json(cpns(&n1, &["pn", "invitations"]))?;
    let id = listed[0]["id"]
        .as_str()
        .context("an invitation")?
        .to_owned();
    assert_eq!(listed[0]["user"], "alice");
    assert!(run_json(cpns(&n1, &["status"]))?["pn_id"].is_null());
    let joined = run_json(cpns(&n1, &["pn", "accept", &id]))?;
    assert_eq!(joined["pn_id"], pn.as_str());
    assert_eq!(run_json(cpns(&n1, &["status"]))?["pn_id"], pn.as_str());
    assert_eq!(
        run_json(cpns(&n1, &["pn", "invitations"]))?,
        serde_json::json!([])
    );
    // An unknown invitation is a clear error with the failure exit code.
    let out = run(cpns(&n1, &["pn", "decline", "inv-000000000000"]), WAIT)?;
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    Ok(())
}

/// Kills, on drop, whatever a `mesh.json` still names (a failing mesh test must not leave
/// daemons behind). A PID is killed only if its command line mentions the mesh dir, so a
/// recycled PID is never touched.
struct MeshGuard(PathBuf);

impl MeshGuard {
    fn pids(&self) -> Vec<i32> {
        let Ok(text) = std::fs::read_to_string(self.0.join("mesh.json")) else {
            return Vec::new();
        };
        let Ok(v) = serde_json::from_str::<Value>(&text) else {
            return Vec::new();
        };
        v["processes"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|p| p["pid"].as_i64().and_then(|p| i32::try_from(p).ok()))
            .collect()
    }
}

impl Drop for MeshGuard {
    fn drop(&mut self) {
        let dir = self.0.to_string_lossy().into_owned();
        for pid in self.pids() {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(&dir) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
        }
    }
}

/// Whether a process is gone: no such PID, or an exited process its new parent has not
/// reaped yet (the mesh's daemons outlive `cpns mesh up`, so init adopts and reaps them).
fn gone(pid: i32) -> bool {
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Err(nix::errno::Errno::ESRCH) => true,
        _ => std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit_once(')')
                    .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true),
    }
}

/// `cpns mesh up --nodes 5` brings cpns-auth and five nodes up in one PN under node 0;
/// `cpns mesh status` agrees; a second `up` on the same dir is refused; `cpns mesh down
/// --clean` stops every recorded process and removes the dir.
#[test]
fn mesh_up_status_down() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path().join("mesh");
    let guard = MeshGuard(dir.clone());
    let mut up = command("cpns");
    up.args([
        "mesh",
        "up",
        "--nodes",
        "5",
        "--timeout",
        "45",
        "--json",
        "--dir",
    ])
    .arg(&dir);
    let view = run_json(up)?;
    let check = |view: &Value| -> Result<()> {
        let procs = view["processes"].as_array().context("processes")?;
        ensure!(procs.len() == 6, "cpns-auth and 5 nodes: {view:#}");
        let nodes: Vec<&Value> = procs.iter().filter(|p| p["role"] != "auth").collect();
        ensure!(nodes.len() == 5, "5 nodes: {view:#}");
        let pn = view["pn_id"].as_str().context("one PN")?;
        let gateway = nodes[0]["peer_id"].as_str().context("node-0's PeerId")?;
        ensure!(nodes[0]["role"] == "gateway" && nodes[0]["mode"] == "pne+gateway");
        for n in &nodes {
            ensure!(n["alive"] == true, "{n:#}");
            ensure!(n["pn_id"] == pn, "{} is in {pn}: {n:#}", n["name"]);
            ensure!(n["gateway"] == gateway, "{n:#}");
        }
        ensure!(
            nodes[0]["members"] == 5,
            "the gateway lists 5 members: {view:#}"
        );
        ensure!(view["healthy"] == true, "{view:#}");
        ensure!(view["settings"]["mdns"] == false);
        Ok(())
    };
    check(&view)?;

    let mut status = command("cpns");
    status.args(["mesh", "status", "--json", "--dir"]).arg(&dir);
    check(&run_json(status)?)?;

    let mut again = command("cpns");
    again
        .args(["mesh", "up", "--nodes", "2", "--dir"])
        .arg(&dir);
    let out = run(again, WAIT)?;
    assert_eq!(
        out.status.code(),
        Some(1),
        "a running mesh is not started twice"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("already runs"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let pids = guard.pids();
    assert_eq!(pids.len(), 6, "mesh.json records every process");
    let mut down = command("cpns");
    down.args(["mesh", "down", "--clean", "--dir"]).arg(&dir);
    let out = run(down, WAIT)?;
    ensure!(
        out.status.success(),
        "mesh down: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let deadline = Instant::now() + WAIT;
    while !pids.iter().all(|p| gone(*p)) {
        ensure!(
            Instant::now() < deadline,
            "still running after mesh down: {:?}",
            pids.iter().filter(|p| !gone(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(!dir.exists(), "--clean removes the mesh dir");
    Ok(())
}

/// Runs `--check-config` on a file with the given content; returns (exit code, stderr).
fn check_config(binary: &str, text: &str) -> Result<(Option<i32>, String)> {
    let tmp = tempfile::tempdir()?;
    let file = tmp.path().join("bad.toml");
    std::fs::write(&file, text)?;
    let mut cmd = command(binary);
    if binary == "cpns-node" {
        cmd.arg("--config").arg(&file).arg("--check-config");
    } else {
        cmd.arg("--check-config").arg(&file);
    }
    let out = run(cmd, WAIT)?;
    Ok((
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

/// A bad config file makes `--check-config` exit 1 with a message naming the key: an
/// unknown key, a value of the wrong kind, an out-of-range value.
#[test]
fn check_config_names_the_bad_key() -> Result<()> {
    for (binary, text, key) in [
        ("cpns-node", "moed = \"pne\"\n", "moed"),
        ("cpns-node", "mode = \"boss\"\n", "mode"),
        (
            "cpns-node",
            "[status]\noffline_after_secs = 0\n",
            "status.offline_after_secs",
        ),
        ("cpns-node", "dht_replication = 0\n", "dht_replication"),
        ("cpns-auth", "admin_prot = 1\n", "admin_prot"),
        ("cpns-auth", "max_sessions = 0\n", "max_sessions"),
        ("cpns-auth", "challenge_ttl = \"soon\"\n", "challenge_ttl"),
    ] {
        let (code, stderr) = check_config(binary, text)?;
        assert_eq!(code, Some(1), "{binary} on {text:?}: {stderr}");
        assert!(
            stderr.contains(key),
            "{binary} on {text:?} names {key}: {stderr}"
        );
    }
    for binary in ["cpns-node", "cpns-auth"] {
        let (code, stderr) = check_config(binary, "")?;
        assert_eq!(
            code,
            Some(0),
            "{binary}: an empty file is the defaults: {stderr}"
        );
    }
    Ok(())
}

/// `(section, key)` of every key of a config's JSON form (`""` for top-level keys).
fn config_keys(v: &Value) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    for (k, v) in v.as_object().into_iter().flatten() {
        match v.as_object() {
            Some(table) => keys.extend(table.keys().map(|sub| (k.clone(), sub.clone()))),
            None => keys.push((String::new(), k.clone())),
        }
    }
    keys
}

/// `(section, key)` of every `key = …` line of a TOML file, commented out (`# key = …`) or not.
fn documented_keys(text: &str) -> BTreeSet<(String, String)> {
    let mut section = String::new();
    let mut keys = BTreeSet::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(name) = t.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
            section = name.trim().to_owned();
            continue;
        }
        let t = t.strip_prefix('#').unwrap_or(t).trim_start();
        if let Some((key, _)) = t.split_once('=') {
            let key = key.trim();
            if !key.is_empty() && key.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
                keys.insert((section.clone(), key.to_owned()));
            }
        }
    }
    keys
}

/// The file with every `# key = value` example line uncommented.
fn uncommented(text: &str) -> String {
    text.lines()
        .map(|l| match l.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                }) =>
            {
                rest.to_owned()
            }
            _ => l.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The example config files in `node/deploy` and `auth-server/deploy` pass `--check-config`
/// with the real binaries (also with every commented example uncommented); they name every
/// key of the configs' defaults, in the right section, with its environment variable; and
/// every value they set equals the built-in default except the keys a system service changes.
#[test]
fn deploy_examples_are_valid_and_document_every_key() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let node_file = root.join("node/deploy/cpns-node.toml");
    let auth_file = root.join("auth-server/deploy/cpns-auth.toml");
    let tmp = tempfile::tempdir()?;
    for (binary, file) in [("cpns-node", &node_file), ("cpns-auth", &auth_file)] {
        let text = std::fs::read_to_string(file)?;
        let all = tmp.path().join(format!("{binary}-uncommented.toml"));
        std::fs::write(&all, uncommented(&text))?;
        for f in [file.as_path(), all.as_path()] {
            let mut cmd = command(binary);
            if binary == "cpns-node" {
                cmd.arg("--config").arg(f).arg("--check-config");
            } else {
                cmd.arg("--check-config").arg(f);
            }
            let out = run(cmd, WAIT)?;
            ensure!(
                out.status.success(),
                "{binary} --check-config {}: {}",
                f.display(),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    let service_keys = ["data_dir", "listen"];
    let node_text = std::fs::read_to_string(&node_file)?;
    let node_default = serde_json::to_value(cpns_node::Config::default())?;
    let node_loaded = serde_json::to_value(cpns_node::Config::load(
        Some(&node_file),
        &Default::default(),
    )?)?;
    let auth_text = std::fs::read_to_string(&auth_file)?;
    let auth_default = serde_json::to_value(cpns_auth::Config::default())?;
    let auth_loaded = serde_json::to_value(cpns_auth::Config::load(
        Some(&auth_file),
        Vec::<(String, String)>::new(),
    )?)?;
    for (what, text, default, loaded, prefix) in [
        ("node", &node_text, &node_default, &node_loaded, "CPNS_"),
        (
            "auth",
            &auth_text,
            &auth_default,
            &auth_loaded,
            "CPNS_AUTH_",
        ),
    ] {
        let documented = documented_keys(text);
        for (section, key) in config_keys(default) {
            ensure!(
                documented.contains(&(section.clone(), key.clone())),
                "{what} example lacks `{key}` in section [{section}]"
            );
            let var = if section.is_empty() {
                format!("{prefix}{}", key.to_uppercase())
            } else {
                format!("{prefix}{}_{}", section.to_uppercase(), key.to_uppercase())
            };
            ensure!(
                text.contains(&var),
                "{what} example does not name {var} for `{key}`"
            );
            let (d, l) = if section.is_empty() {
                (&default[&key], &loaded[&key])
            } else {
                (&default[&section][&key], &loaded[&section][&key])
            };
            ensure!(
                d == l || service_keys.contains(&key.as_str()),
                "{what} example sets `{key}` to {l}, but its default is {d}"
            );
        }
    }
    Ok(())
}

/// `cpns` exits 3 when no node runs for its data dir: no `api.json`, or an `api.json` whose
/// address nobody answers at.
#[test]
fn cli_without_a_node_exits_3() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    for args in [
        &["status"][..],
        &["peers"],
        &["pair", "/ip4/127.0.0.1/tcp/1"],
    ] {
        let mut cmd = command("cpns");
        cmd.arg("--data-dir").arg(tmp.path()).args(args);
        let out = run(cmd, WAIT)?;
        assert_eq!(out.status.code(), Some(3), "cpns {args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("no node is running"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A stale api.json (the node was killed): the port no longer answers.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    std::fs::write(
        tmp.path().join(cpns_node::API_FILE),
        serde_json::json!({ "addr": closed, "token": "x", "peer_id": "x", "pid": 1 }).to_string(),
    )?;
    let mut cmd = command("cpns");
    cmd.arg("--data-dir").arg(tmp.path()).arg("status");
    let out = run(cmd, WAIT)?;
    assert_eq!(out.status.code(), Some(3), "stale api.json");
    Ok(())
}

/// The README's "two nodes, one command each": both daemons enrol at start (`--code`), the
/// second pairs with the first by its pairing code (`--pair cpnspair1-…`); they elect a gateway
/// and form a PN. Then a service published with `cpns services publish` on one is found with
/// `cpns services find` on the other, and `cpns trace --mermaid` draws B.1.
#[test]
fn two_nodes_one_command_each_form_a_pn_and_find_a_service() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut daemons = Daemons::default();
    let (a, b, sa, sb) = pn_of_two(&mut daemons, root, "a", "b")?;
    let gateway = sb["gateway"].as_str().context("gateway")?.to_owned();
    let peer_a = sa["peer_id"].as_str().context("peer")?;
    let gateway_dir = if gateway == peer_a { &a } else { &b };

    let published = run_json(cpns(
        &a,
        &[
            "services",
            "publish",
            "--name",
            "Hall printer",
            "-k",
            "printer",
        ],
    ))?;
    let id = published["id"].as_str().context("service id")?.to_owned();
    let found = wait_for(&mut daemons, WAIT, "the service to be found", || {
        let d = run_json(cpns(&b, &["services", "find", "printer"]))?;
        let hit = d["services"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|f| f["description"]["id"] == id.as_str());
        Ok(hit.then_some(d))
    })?;
    assert!(found["figures"]["requests"].as_u64().is_some());

    // Streamed: one JSON event per line, the service as `found` first, then `done` with the
    // whole discovery; and the same for people, a line per service and the summary.
    let out = run(cpns(&b, &["services", "find", "printer", "--stream"]), WAIT)?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let events: Vec<Value> = text
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .with_context(|| format!("not one JSON event per line: {text}"))?;
    let first_found = events
        .iter()
        .position(|e| e["found"]["description"]["id"] == id.as_str())
        .with_context(|| format!("the service was not streamed: {text}"))?;
    let done = events.last().context("no events")?;
    assert!(
        first_found < events.len() - 1
            && done["done"]["services"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|f| f["description"]["id"] == id.as_str()),
        "{text}"
    );
    let mut people = command("cpns");
    people
        .arg("--data-dir")
        .arg(&b)
        .args(["services", "find", "printer", "--stream"]);
    let out = run(people, WAIT)?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&id) && text.contains("Hall printer") && text.contains(" found in "),
        "{text}"
    );

    let mut mermaid = command("cpns");
    mermaid
        .arg("--data-dir")
        .arg(gateway_dir)
        .args(["trace", "--mermaid"]);
    let out = run(mermaid, WAIT)?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("sequenceDiagram"), "{text}");
    assert!(
        text.contains("B.1 26. ConnectionSetupConfirmation"),
        "{text}"
    );
    Ok(())
}

/// A closed pipe (`cpns status --json | head -c0`) ends `cpns` quietly with exit code 0, not
/// with the panic of `println!` ("failed printing to stdout: Broken pipe", exit 101).
#[tokio::test]
async fn a_closed_pipe_is_not_a_panic() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let node = cpns_node::Node::start(crate::node::test_config(tmp.path())).await?;
    for args in [
        &["--json", "status"][..],
        &["status"],
        &["completions", "bash"],
    ] {
        let mut cmd = command("cpns");
        cmd.arg("--data-dir")
            .arg(tmp.path())
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn()?;
        // The reader goes away before cpns writes anything.
        drop(child.stdout.take());
        let out = tokio::task::spawn_blocking(move || child.wait_with_output()).await??;
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "cpns {args:?}: {err}");
        assert_eq!(out.status.code(), Some(0), "cpns {args:?}: {err}");
    }
    node.shutdown().await;
    Ok(())
}

/// Completions and the man page come from the clap definitions: they know every command.
#[test]
fn completions_and_man_page_are_generated() -> Result<()> {
    for (args, needle) in [
        (&["completions", "bash"][..], "complete -F _cpns"),
        (&["completions", "zsh"], "#compdef cpns"),
        (&["completions", "fish"], "complete -c cpns"),
        (&["man"], ".TH cpns 1"),
    ] {
        let mut cmd = command("cpns");
        cmd.args(args);
        let out = run(cmd, WAIT)?;
        ensure!(out.status.success(), "cpns {args:?}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(text.contains(needle), "cpns {args:?} lacks {needle:?}");
        for command in ["services", "mesh", "web"] {
            ensure!(text.contains(command), "cpns {args:?} lacks {command}");
        }
    }
    Ok(())
}

/// `cpns` and `cpns-auth` fail the same way: `PROGRAM: MESSAGE (CODE)` on stderr, exit 1 for
/// a failed operation, 2 for a malformed request, 3 when the daemon does not answer.
#[test]
fn cpns_and_cpns_auth_share_the_error_format_and_exit_codes() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let check = |program: &str, args: &[&str], exit: i32, code: &str| -> Result<()> {
        let mut cmd = command(program);
        cmd.arg("--data-dir").arg(tmp.path()).args(args);
        let out = run(cmd, WAIT)?;
        let err = String::from_utf8_lossy(&out.stderr);
        let line = err.lines().last().unwrap_or("");
        ensure!(
            out.status.code() == Some(exit)
                && line.starts_with(&format!("{program}: "))
                && line.ends_with(&format!("({code})")),
            "{program} {args:?}: exit {:?}, stderr {err:?}; want exit {exit} and ({code})",
            out.status.code()
        );
        Ok(())
    };
    check("cpns", &["status"], 3, "not_running")?;
    check("cpns-auth", &["pns", "list"], 1, "failed")?;
    // Through a running server's admin endpoint.
    let mut daemons = Daemons::default();
    let auth = start_auth_with_alice(&mut daemons, tmp.path())?;
    let check_running = |args: &[&str], exit: i32, code: &str| -> Result<()> {
        let mut cmd = auth_cli(&auth, args);
        cmd.stdout(Stdio::null());
        let out = run(cmd, WAIT)?;
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(
            out.status.code() == Some(exit) && err.trim_end().ends_with(&format!("({code})")),
            "cpns-auth {args:?} (server running): exit {:?}, {err:?}",
            out.status.code()
        );
        Ok(())
    };
    check_running(&["users", "create", "bad name!"], 2, "bad_request")?;
    check_running(&["pns", "show", "pn-0000000000000000"], 1, "not_found")?;
    Ok(())
}

/// `cpns` links the API's types and no daemon crate: no libp2p, no sled, no cpns-node
/// (issue 16: the CLI depends only on the API's request and response types).
#[test]
fn the_cli_links_neither_libp2p_nor_sled() -> Result<()> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "cpns-cli",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--offline",
        ])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?;
    ensure!(out.status.success(), "cargo tree: {out:?}");
    let tree = String::from_utf8(out.stdout)?;
    ensure!(tree.contains("cpns-api"), "{tree}");
    for banned in [
        "libp2p",
        "sled",
        "cpns-node",
        "cpns-overlay",
        "cpns-directory",
        "cpns-keys",
    ] {
        ensure!(
            !tree.lines().any(|l| l.starts_with(&format!("{banned} "))),
            "cpns-cli depends on {banned}:\n{tree}"
        );
    }
    Ok(())
}
