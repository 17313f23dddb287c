//! Crash safety of merge and split (5.6.9) with the real binaries: a gateway is killed with
//! SIGKILL in the middle of the operation, just after `cpns-auth` recorded it. Afterwards
//! every device is in exactly one PN (its own status and `cpns-auth`'s records agree) and
//! holds a key that opens what that PN's members seal now.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::cli::{
    Daemons, WAIT, auth_cli, command, cpns, run, run_json, start_auth_with_alice, wait_for,
};

/// A crash-test node: `cpns-node` on loopback, mDNS off, fast heartbeats and failover.
fn start(daemons: &mut Daemons, root: &Path, name: &str, extra: &[&str]) -> Result<PathBuf> {
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
        .args(extra)
        .env("CPNS_STATUS_HEARTBEAT_SECS", "1")
        .env("CPNS_STATUS_OFFLINE_AFTER_SECS", "3")
        .env("CPNS_STATUS_GATEWAY_FAILOVER_AFTER_SECS", "3");
    daemons.start(name, cmd, &root.join(format!("{name}.log")))?;
    Ok(dir)
}

/// A node's status through the CLI once its API answers (`None` while it does not).
fn status(dir: &Path) -> Result<Option<Value>> {
    if !dir.join(cpns_node::API_FILE).exists() {
        return Ok(None);
    }
    let out = run(cpns(dir, &["status"]), WAIT)?;
    Ok(out
        .status
        .success()
        .then(|| serde_json::from_slice(&out.stdout).ok())
        .flatten())
}

fn code(auth: &Path, user: &str) -> Result<String> {
    let v = run_json(auth_cli(
        auth,
        &["enrol", "create", "--user", user, "--json"],
    ))?;
    v["code"].as_str().map(str::to_owned).context("no code")
}

/// Two enrolled auto-mode devices of `user` paired into one PN (the election picks its
/// gateway): their data dirs, and the PN id and gateway once both agree.
fn pn_of_two(
    daemons: &mut Daemons,
    root: &Path,
    auth: &Path,
    user: &str,
) -> Result<([PathBuf; 2], String, String)> {
    let first = format!("{user}-1");
    let second = format!("{user}-2");
    let a = start(daemons, root, &first, &["--code", &code(auth, user)?])?;
    wait_for(daemons, WAIT, "the first node to enrol", || {
        Ok(status(&a)?.filter(|s| s["enrolled"] == true))
    })?;
    let pairing = run_json(cpns(&a, &["pairing-code"]))?;
    let pairing = pairing["code"].as_str().context("pairing code")?.to_owned();
    let b = start(
        daemons,
        root,
        &second,
        &["--code", &code(auth, user)?, "--pair", &pairing],
    )?;
    let (pn, gateway) = wait_for(daemons, WAIT, "the PN of two", || {
        let (Some(sa), Some(sb)) = (status(&a)?, status(&b)?) else {
            return Ok(None);
        };
        let two = sa["members"].as_array().map(Vec::len) == Some(2);
        Ok((two
            && sa["pn_id"].is_string()
            && sa["pn_id"] == sb["pn_id"]
            && sa["gateway"] == sb["gateway"])
            .then(|| {
                (
                    sa["pn_id"].as_str().unwrap_or_default().to_owned(),
                    sa["gateway"].as_str().unwrap_or_default().to_owned(),
                )
            }))
    })?;
    Ok(([a, b], pn, gateway))
}

/// Which of `dirs` is the node `peer`.
fn named(dirs: &[PathBuf], peer: &str) -> Result<PathBuf> {
    for d in dirs {
        if status(d)?.is_some_and(|s| s["peer_id"] == peer) {
            return Ok(d.clone());
        }
    }
    anyhow::bail!("no node is {peer}")
}

/// Waits until every node in `dirs` is in `pn` through `gateway`.
fn all_in(daemons: &mut Daemons, dirs: &[&PathBuf], pn: &str, gateway: &str) -> Result<()> {
    for d in dirs {
        wait_for(daemons, WAIT, &format!("{} in {pn}", d.display()), || {
            Ok(status(d)?
                .filter(|s| s["pn_id"] == pn && s["gateway"] == gateway)
                .map(|_| ()))
        })?;
    }
    Ok(())
}

/// Exactly one PN record at `cpns-auth` holds each of `peers`, and it is `pn`.
fn one_pn_each(auth: &Path, peers: &[String], pn: &str) -> Result<()> {
    let pns = run_json(auth_cli(auth, &["pns", "list", "--json"]))?;
    let pns = pns.as_array().context("pns list")?;
    for p in peers {
        let holding: Vec<&str> = pns
            .iter()
            .filter(|r| {
                r["members"]
                    .as_array()
                    .is_some_and(|m| m.iter().any(|x| x == p.as_str()))
            })
            .filter_map(|r| r["pn_id"].as_str())
            .collect();
        ensure!(
            holding == [pn],
            "{p} is in {holding:?} at cpns-auth, not just {pn}"
        );
    }
    Ok(())
}

/// What `sealer` seals under its PN key now, every one of `openers` opens (bounded retries:
/// a key rotation may still be on its way to a member).
fn everyone_opens(daemons: &mut Daemons, sealer: &Path, openers: &[&PathBuf]) -> Result<()> {
    let sealed = run_json(cpns(sealer, &["pn", "seal", "after the crash"]))?;
    let sealed = sealed.to_string();
    for d in openers {
        wait_for(
            daemons,
            WAIT,
            &format!("{} to open it", d.display()),
            || {
                let out = run(cpns(d, &["pn", "open", &sealed]), WAIT)?;
                Ok(out
                    .status
                    .success()
                    .then(|| serde_json::from_slice::<Value>(&out.stdout).ok())
                    .flatten()
                    .filter(|v| v["text"] == "after the crash")
                    .map(|_| ()))
            },
        )?;
    }
    Ok(())
}

/// `r`, with the end of every daemon's log (warnings and above) when it failed.
fn with_logs(root: &Path, r: Result<()>) -> Result<()> {
    let Err(e) = r else { return Ok(()) };
    let mut logs = String::new();
    for entry in std::fs::read_dir(root)?.flatten() {
        let path = entry.path();
        if path.extension().is_some_and(|x| x == "log") {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let lines: Vec<&str> = text
                .lines()
                .filter(|l| l.contains(" WARN ") || l.contains(" ERROR ") || l.contains(" INFO "))
                .collect();
            let tail = &lines[lines.len().saturating_sub(25)..];
            logs.push_str(&format!("\n--- {}\n{}", path.display(), tail.join("\n")));
        }
    }
    Err(e.context(logs))
}

fn peer_of(dir: &Path) -> Result<String> {
    let s = status(dir)?.context("status")?;
    Ok(s["peer_id"].as_str().context("peer_id")?.to_owned())
}

/// Merge, then SIGKILL: bob's gateway gives the second consent, `cpns-auth` merges, and the
/// gateway is killed at once (before or while it moves, and before its PNE heard of it from
/// it). Bob's other device finds the merged PN (the server's push, or its failover's lookup);
/// the killed gateway, restarted on its data dir, finds it at its step 17. All four devices
/// end in alice's PN through alice's gateway and open what one of them seals.
#[test]
fn kill9_of_a_gateway_in_the_middle_of_a_merge() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut daemons = Daemons::default();
    let r = merge_then_kill(&mut daemons, root);
    drop(daemons);
    with_logs(root, r)
}

fn merge_then_kill(daemons: &mut Daemons, root: &Path) -> Result<()> {
    let auth = start_auth_with_alice(daemons, root)?;
    run_json(auth_cli(&auth, &["users", "create", "bob", "--json"]))?;
    let (alice, x, gx) = pn_of_two(daemons, root, &auth, "alice")?;
    let (bob, y, gy) = pn_of_two(daemons, root, &auth, "bob")?;
    let gx_dir = named(&alice, &gx)?;
    let gy_dir = named(&bob, &gy)?;
    let gy_name = gy_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("name")?
        .to_owned();
    let other_bob = bob
        .iter()
        .find(|d| **d != gy_dir)
        .context("bob's PNE")?
        .clone();

    let pending = run_json(cpns(&gx_dir, &["pn", "merge", "--with", &y]))?;
    ensure!(pending["merged"] == false, "{pending}");
    let merged = run_json(cpns(&gy_dir, &["pn", "merge", "--with", &x]))?;
    ensure!(
        merged["merged"] == true && merged["pn_id"] == x.as_str(),
        "{merged}"
    );
    daemons.kill9(&gy_name)?;

    all_in(daemons, &[&alice[0], &alice[1], &other_bob], &x, &gx)?;
    // The killed gateway comes back on its data dir.
    start(daemons, root, &gy_name, &[])?;
    all_in(daemons, &[&gy_dir], &x, &gx)?;
    let peers = [&alice[0], &alice[1], &bob[0], &bob[1]]
        .iter()
        .map(|d| peer_of(d))
        .collect::<Result<Vec<_>>>()?;
    one_pn_each(&auth, &peers, &x)?;
    everyone_opens(daemons, &other_bob, &[&alice[0], &alice[1], &gy_dir])?;
    everyone_opens(daemons, &gx_dir, &[&bob[0], &bob[1]])?;
    Ok(())
}

/// Split, then SIGKILL: an admin that is a PNE splits two of alice's devices off, and the
/// PN's gateway is killed at once. The devices split off are told by `cpns-auth` and form
/// their PN with the gateway the rule elected; the one that stayed fails over and becomes its
/// PN's gateway; the killed gateway, restarted, joins the PN it stayed in. Each side opens
/// what its own side seals now, and not what the other side seals.
#[test]
fn kill9_of_a_gateway_in_the_middle_of_a_split() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut daemons = Daemons::default();
    let r = split_then_kill(&mut daemons, root);
    drop(daemons);
    with_logs(root, r)
}

fn split_then_kill(daemons: &mut Daemons, root: &Path) -> Result<()> {
    let auth = start_auth_with_alice(daemons, root)?;
    let (pair, x, gx) = pn_of_two(daemons, root, &auth, "alice")?;
    let gx_dir = named(&pair, &gx)?;
    let gx_name = gx_dir
        .file_name()
        .and_then(|n| n.to_str())
        .context("name")?
        .to_owned();
    let admin = pair
        .iter()
        .find(|d| **d != gx_dir)
        .context("a PNE")?
        .clone();
    // Two more of alice's devices join through the gateway.
    let pairing = run_json(cpns(&gx_dir, &["pairing-code"]))?;
    let pairing = pairing["code"].as_str().context("pairing code")?.to_owned();
    let mut leaving = Vec::new();
    for name in ["alice-3", "alice-4"] {
        let d = start(
            daemons,
            root,
            name,
            &["--code", &code(&auth, "alice")?, "--pair", &pairing],
        )?;
        all_in(daemons, &[&d], &x, &gx)?;
        leaving.push(d);
    }
    let leaving_peers = leaving
        .iter()
        .map(|d| peer_of(d))
        .collect::<Result<Vec<_>>>()?;
    // The admin's member table must know both candidacies before it elects.
    wait_for(daemons, WAIT, "the admin to list four members", || {
        Ok(status(&admin)?
            .filter(|s| s["members"].as_array().map(Vec::len) == Some(4))
            .map(|_| ()))
    })?;
    let mut args = vec!["pn", "split"];
    args.extend(leaving_peers.iter().map(String::as_str));
    let split = run_json(cpns(&admin, &args))?;
    daemons.kill9(&gx_name)?;
    let z = split["new_pn_id"].as_str().context("new pn")?.to_owned();
    let gz = split["new_gateway"]
        .as_str()
        .context("new gateway")?
        .to_owned();
    ensure!(leaving_peers.contains(&gz), "{split}");

    all_in(daemons, &[&leaving[0], &leaving[1]], &z, &gz)?;
    // The PNE that stayed takes its PN's gateway role over; the killed gateway comes back
    // and joins it.
    let admin_peer = peer_of(&admin)?;
    all_in(daemons, &[&admin], &x, &admin_peer)?;
    start(daemons, root, &gx_name, &[])?;
    all_in(daemons, &[&gx_dir], &x, &admin_peer)?;

    let stayers = [peer_of(&admin)?, peer_of(&gx_dir)?];
    one_pn_each(&auth, &stayers, &x)?;
    one_pn_each(&auth, &leaving_peers, &z)?;
    everyone_opens(daemons, &admin, &[&gx_dir])?;
    everyone_opens(daemons, &leaving[0], &[&leaving[1]])?;
    // Across the split, nobody opens the other side's new content.
    for (sealer, other) in [(&admin, &leaving[0]), (&leaving[1], &gx_dir)] {
        let sealed = run_json(cpns(sealer, &["pn", "seal", "one side"]))?.to_string();
        let out = run(cpns(other, &["pn", "open", &sealed]), WAIT)?;
        ensure!(
            !out.status.success(),
            "{} opened the other side's content: {}",
            other.display(),
            String::from_utf8_lossy(&out.stdout)
        );
    }
    Ok(())
}
