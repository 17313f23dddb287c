//! Forwarding PNE to PNE through the gateway when the two PNEs have no direct path (5.6.7
//! "content forwarding from one serviced PNE to another PNE"), on hosts this test builds
//! itself: three network namespaces, the gateway's joined to each PNE's by its own veth pair
//! and no routing between them, so each PNE reaches only the gateway. Real processes
//! (`cpns-auth`, three `cpns-node`), driven with the `cpns` CLI. Needs root and `ip`
//! (iproute2); without them the test says why and passes without running.
//!
//! A push from one PNE to the other cannot open a direct stream (no route), goes through the
//! gateway sealed end to end (a relayed stream is accepted only so), and arrives whole. The
//! test prints the relayed push's throughput beside a direct push over one link of the same
//! kind (PNE to gateway); debug builds make these figures indicative only
//! (`examples/delivery_bench.rs` measures relayed against direct in release, docs/BENCHMARKS.md).

#![allow(unreachable_pub)] // shared test helpers are `pub` for the other test binaries

#[path = "util.rs"]
mod util;

#[path = "netns_util.rs"]
mod netns_util;

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use netns_util::{Lan, Procs, output_in, run, spawn_in, unavailable, wait_for};
use sha2::{Digest, Sha256};

/// Namespaces `g` (the gateway's), `a` and `b`; `g`–`a` on 10.233.1.0/24 and `g`–`b` on
/// 10.233.2.0/24, with the gateway at .1 and the PNE at .2 of each.
fn three_hosts(tag: &str) -> Result<(Lan, [String; 3])> {
    let names = [
        format!("cpns-fw{tag}-g"),
        format!("cpns-fw{tag}-a"),
        format!("cpns-fw{tag}-b"),
    ];
    let lan = Lan {
        names: names.to_vec(),
    };
    for n in &names {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", n])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", n])?;
        run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    for (i, pne) in [(1, &names[1]), (2, &names[2])] {
        let (vg, vp) = (format!("fg{i}{tag}"), format!("fp{i}{tag}"));
        run(&[
            "ip", "link", "add", &vg, "type", "veth", "peer", "name", &vp,
        ])?;
        run(&["ip", "link", "set", &vg, "netns", &names[0]])?;
        run(&["ip", "link", "set", &vp, "netns", pne])?;
        for (ns, dev, host) in [(&names[0], &vg, 1), (pne, &vp, 2)] {
            let addr = format!("10.233.{i}.{host}/24");
            run(&["ip", "-n", ns, "addr", "add", &addr, "dev", dev])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
    }
    // A new namespace does not forward (net.ipv4.ip_forward is 0): a and b reach only the
    // gateway, which the test checks below.
    Ok((lan, names))
}

fn cli(ns: &str, dir: &Path, args: &[&str]) -> Result<String> {
    let mut all = vec!["--data-dir", dir.to_str().context("path")?];
    all.extend_from_slice(args);
    output_in(ns, &util::bin("cpns"), &all)
}

fn status(ns: &str, dir: &Path) -> Option<serde_json::Value> {
    serde_json::from_str(&cli(ns, dir, &["status", "--json"]).ok()?).ok()
}

fn logs(dir: &Path) -> String {
    ["auth", "g", "a", "b"]
        .iter()
        .map(|n| {
            format!(
                "--- {n}.log\n{}",
                std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default()
            )
        })
        .collect()
}

/// A push from `from` to `to`; returns the push view and the seconds it took.
fn push(ns: &str, dir: &Path, file: &Path, to: &str) -> Result<(serde_json::Value, f64)> {
    let t = Instant::now();
    let out = cli(
        ns,
        dir,
        &[
            "--json",
            "content",
            "push",
            file.to_str().context("path")?,
            "--to",
            to,
        ],
    )?;
    Ok((serde_json::from_str(&out)?, t.elapsed().as_secs_f64()))
}

#[test]
fn a_push_between_pnes_with_no_direct_path_is_relayed_by_the_gateway() -> Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("skipping the network-namespace forwarding test: {why}");
        return Ok(());
    }
    let tag = format!("{}", std::process::id() % 1000);
    let t0 = Instant::now();
    let (lan, [g, a, b]) = three_hosts(&tag)?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let mut procs = Procs::default();
    let auth_dir = d.join("auth");
    let auth_s = auth_dir.to_str().context("path")?.to_string();
    procs.0.push(spawn_in(
        &g,
        &util::bin("cpns-auth"),
        &[
            "serve",
            "--data-dir",
            &auth_s,
            "--listen",
            "/ip4/10.233.1.1/tcp/0",
            "--listen",
            "/ip4/10.233.2.1/tcp/0",
        ],
        &[],
        &d.join("auth.log"),
    )?);
    wait_for(Duration::from_secs(20), "cpns-auth", || {
        auth_dir.join("admin.json").exists().then_some(())
    })?;
    output_in(
        &g,
        &util::bin("cpns-auth"),
        &["--data-dir", &auth_s, "users", "create", "alice"],
    )?;
    let env = [
        ("CPNS_STATUS_HEARTBEAT_SECS", "1"),
        ("CPNS_STATUS_OFFLINE_AFTER_SECS", "5"),
        ("CPNS_LOG", "info"),
    ];
    let nodes = [
        (
            &g,
            "g",
            vec!["/ip4/10.233.1.1/tcp/0", "/ip4/10.233.2.1/tcp/0"],
            "gateway",
        ),
        (&a, "a", vec!["/ip4/10.233.1.2/tcp/0"], "auto"),
        (&b, "b", vec!["/ip4/10.233.2.2/tcp/0"], "auto"),
    ];
    for (ns, name, listen, mode) in &nodes {
        let data = d.join(name);
        let mut args = vec![
            "--data-dir".to_string(),
            data.to_str().context("path")?.to_string(),
            "--mdns".into(),
            "off".into(),
            "--mode".into(),
            mode.to_string(),
            "--device-name".into(),
            name.to_string(),
        ];
        for l in listen {
            args.push("--listen".into());
            args.push(l.to_string());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        procs.0.push(spawn_in(
            ns,
            &util::bin("cpns-node"),
            &args,
            &env,
            &d.join(format!("{name}.log")),
        )?);
    }
    for (ns, name, _, _) in &nodes {
        let data = d.join(name);
        wait_for(Duration::from_secs(20), "the node's API", || {
            data.join("api.json").exists().then_some(())
        })?;
        let code: serde_json::Value = serde_json::from_str(&output_in(
            &g,
            &util::bin("cpns-auth"),
            &[
                "--data-dir",
                &auth_s,
                "enrol",
                "create",
                "--user",
                "alice",
                "--json",
            ],
        )?)?;
        let code = code["code"].as_str().context("code")?;
        cli(ns, &data, &["up", "--code", code]).with_context(|| logs(d))?;
    }
    eprintln!("  enrolled after {:?}", t0.elapsed());
    let (dg, da, db) = (d.join("g"), d.join("a"), d.join("b"));
    let gw = wait_for(Duration::from_secs(30), "the gateway's PN", || {
        let s = status(&g, &dg)?;
        s["pn_id"].is_string().then_some(s)
    })
    .with_context(|| logs(d))?;
    let gw_id = gw["peer_id"].as_str().context("peer id")?.to_string();
    // Each PNE pairs with the gateway at the address it can reach.
    for (ns, data, net) in [(&a, &da, 1), (&b, &db, 2)] {
        let addr = gw["listen_addrs"]
            .as_array()
            .context("addrs")?
            .iter()
            .filter_map(|v| v.as_str())
            .find(|s| s.starts_with(&format!("/ip4/10.233.{net}.1/")))
            .context("the gateway's address on this link")?
            .to_string();
        cli(ns, data, &["pair", &format!("{addr}/p2p/{gw_id}")]).with_context(|| logs(d))?;
    }
    // Every node's own member list, not only the gateway's: the lists reach the PNEs after
    // the gateway changed its own (two admissions may overlap).
    let three = |s: &serde_json::Value| {
        s["pn_id"] == gw["pn_id"] && s["members"].as_array().map(Vec::len) == Some(3)
    };
    let sa = wait_for(
        Duration::from_secs(30),
        "every node to list the PN of three",
        || {
            let s = status(&g, &dg)?;
            (s["members"].as_array()?.len() == 3).then_some(())?;
            status(&b, &db).filter(three)?;
            status(&a, &da).filter(three)
        },
    )
    .with_context(|| {
        // What each node lists, to tell which one lagged.
        let lists: Vec<String> = [(&g, &dg, "g"), (&a, &da, "a"), (&b, &db, "b")]
            .iter()
            .map(|(ns, data, name)| {
                let s = status(ns, data).unwrap_or_default();
                format!("{name}: pn {} members {}", s["pn_id"], s["members"])
            })
            .collect();
        format!("{}\n{}", lists.join("\n"), logs(d))
    })?;
    ensure!(sa["members"].as_array().map(Vec::len) == Some(3));
    eprintln!("  PN of three after {:?}", t0.elapsed());
    let sb = status(&b, &db).context("b's status")?;
    let b_id = sb["peer_id"].as_str().context("b")?.to_string();
    // No direct path: a cannot reach b's address.
    let b_reachable = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &a,
            "ping",
            "-c",
            "1",
            "-W",
            "1",
            "10.233.2.2",
        ])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    ensure!(
        !b_reachable,
        "a reaches b directly: the test's topology is wrong"
    );

    let len = 32 * 1024 * 1024;
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u32).wrapping_mul(2654435761) as u8)
        .collect();
    let file = d.join("film.ts");
    std::fs::write(&file, &bytes)?;
    let sha = hex::encode(Sha256::digest(&bytes));
    drop(bytes);
    eprintln!("  pushing after {:?}", t0.elapsed());
    let (relayed, relayed_secs) = push(&a, &da, &file, &b_id).with_context(|| logs(d))?;
    let t = &relayed["targets"][0];
    ensure!(t["state"] == "delivered", "{relayed}\n{}", logs(d));
    ensure!(t["via_gateway"] == true, "not relayed: {relayed}");
    ensure!(
        t["detail"] == sha.as_str(),
        "b stored other bytes: {relayed}"
    );
    let stored = std::fs::read(db.join("inbox").join("film.ts"))?;
    ensure!(hex::encode(Sha256::digest(&stored)) == sha, "b's inbox");
    let trace = cli(&g, &dg, &["--json", "trace"])?;
    ensure!(
        trace.contains("ForwardContent"),
        "the gateway's trace lacks the relay"
    );

    // Beside it, a direct push over one link of the same kind (a to the gateway).
    let (direct, direct_secs) = push(&a, &da, &file, &gw_id)?;
    ensure!(
        direct["targets"][0]["state"] == "delivered"
            && direct["targets"][0]["via_gateway"] == false,
        "{direct}"
    );
    let mb = len as f64 / 1e6;
    eprintln!(
        "32 MiB push a -> b relayed by the gateway: {:.0} MB/s; a -> gateway direct: {:.0} MB/s; \
         relayed / direct = {:.2} (debug build: indicative only)",
        mb / relayed_secs,
        mb / direct_secs,
        direct_secs / relayed_secs
    );
    drop(procs);
    drop(lan);
    Ok(())
}
