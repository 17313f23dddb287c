//! Network-namespace tests: real LAN behaviour that loopback cannot show, on test hosts this
//! test builds itself (two namespaces joined by a veth pair). mDNS multicast stays inside the
//! pair. Needs root and `ip` (iproute2); without them each test says why and passes without
//! running (it cannot run here), so that `cargo test` works for unprivileged developers.
//!
//! * Two enrolled devices on one LAN find each other by mDNS and form a PN by themselves
//!   (5.6.5: "pairing is triggered by mDNS on the LAN"), with `cpns-auth` on the LAN too.
//! * A partition between a PNE and its gateway: the gateway marks the PNE Offline after the
//!   configured silence; when the link is back, the PNE is Online again.

#![allow(unreachable_pub)] // shared test helpers are `pub` for the other test binary

#[path = "util.rs"]
mod util;

#[path = "netns_util.rs"]
mod netns_util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};

use netns_util::{Lan, Procs, output_in, run, spawn_in, status, unavailable, wait_for};

/// Two namespaces `a` and `b` on one /24, joined by a veth pair.
fn two_hosts(tag: &str, net: u8) -> Result<(Lan, String, String)> {
    let a = format!("cpns-{tag}-a");
    let b = format!("cpns-{tag}-b");
    let lan = Lan {
        names: vec![a.clone(), b.clone()],
    };
    for n in &lan.names {
        let _ = Command::new("ip").args(["netns", "del", n]).status();
        run(&["ip", "netns", "add", n])?;
    }
    let (va, vb) = (format!("va{tag}"), format!("vb{tag}"));
    run(&[
        "ip", "link", "add", &va, "type", "veth", "peer", "name", &vb,
    ])?;
    run(&["ip", "link", "set", &va, "netns", &a])?;
    run(&["ip", "link", "set", &vb, "netns", &b])?;
    for (ns, dev, host) in [(&a, &va, 1), (&b, &vb, 2)] {
        run(&[
            "ip",
            "-n",
            ns,
            "addr",
            "add",
            &format!("10.231.{net}.{host}/24"),
            "dev",
            dev,
        ])?;
        run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        run(&["ip", "-n", ns, "link", "set", "lo", "up"])?;
    }
    Ok((lan, a, b))
}

struct Site {
    _lan: Lan,
    procs: Procs,
    dir: tempfile::TempDir,
    a: String,
    b: String,
}

/// cpns-auth and node `a` in namespace a, node `b` in namespace b, both enrolled for one user,
/// mDNS on, auto-pairing on.
fn site(tag: &str, net: u8) -> Result<Site> {
    let t = Instant::now();
    let (lan, a, b) = two_hosts(tag, net)?;
    eprintln!("  namespaces {:?}", t.elapsed());
    let dir = tempfile::tempdir()?;
    let mut procs = Procs::default();
    let auth_dir = dir.path().join("auth");
    let auth_dir_s = auth_dir.to_str().context("path")?.to_string();
    let auth_listen = format!("/ip4/10.231.{net}.1/tcp/0");
    procs.0.push(spawn_in(
        &a,
        &util::bin("cpns-auth"),
        &["serve", "--data-dir", &auth_dir_s, "--listen", &auth_listen],
        &[],
        &dir.path().join("auth.log"),
    )?);
    wait_for(
        Duration::from_secs(20),
        "cpns-auth's admin endpoint",
        || auth_dir.join("admin.json").exists().then_some(()),
    )?;
    eprintln!("  auth up {:?}", t.elapsed());
    output_in(
        &a,
        &util::bin("cpns-auth"),
        &["--data-dir", &auth_dir_s, "users", "create", "alice"],
    )?;
    eprintln!("  user {:?}", t.elapsed());
    let env = [
        ("CPNS_STATUS_HEARTBEAT_SECS", "1"),
        ("CPNS_STATUS_OFFLINE_AFTER_SECS", "3"),
        ("CPNS_LOG", "info"),
    ];
    for (ns, host, name) in [(&a, 1, "a"), (&b, 2, "b")] {
        let d = dir.path().join(name);
        let listen = format!("/ip4/10.231.{net}.{host}/tcp/0");
        procs.0.push(spawn_in(
            ns,
            &util::bin("cpns-node"),
            &[
                "--data-dir",
                d.to_str().context("path")?,
                "--listen",
                &listen,
                "--mdns",
                "on",
                "--device-name",
                name,
            ],
            &env,
            &dir.path().join(format!("{name}.log")),
        )?);
    }
    for (ns, name) in [(&a, "a"), (&b, "b")] {
        let d = dir.path().join(name);
        wait_for(Duration::from_secs(20), "the node's API", || {
            d.join("api.json").exists().then_some(())
        })?;
        eprintln!("  {name} api {:?}", t.elapsed());
        let code_json = output_in(
            &a,
            &util::bin("cpns-auth"),
            &[
                "--data-dir",
                &auth_dir_s,
                "enrol",
                "create",
                "--user",
                "alice",
                "--json",
            ],
        )?;
        let code: serde_json::Value = serde_json::from_str(&code_json)?;
        let code = code["code"].as_str().context("code")?;
        output_in(
            ns,
            &util::bin("cpns"),
            &[
                "--data-dir",
                d.to_str().context("path")?,
                "up",
                "--code",
                code,
            ],
        )?;
    }
    Ok(Site {
        _lan: lan,
        procs,
        dir,
        a,
        b,
    })
}

fn logs(dir: &Path) -> String {
    ["auth", "a", "b"]
        .iter()
        .map(|n| {
            let p: PathBuf = dir.join(format!("{n}.log"));
            format!(
                "--- {n}.log\n{}",
                std::fs::read_to_string(p).unwrap_or_default()
            )
        })
        .collect()
}

/// Two devices on one LAN pair by mDNS alone and form a PN; a partition makes the gateway
/// mark the PNE Offline, and healing it brings the PNE back Online.
#[test]
fn lan_discovery_forms_a_pn_and_a_partition_marks_the_pne_offline() -> Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("skipping the network-namespace test: {why}");
        return Ok(());
    }
    let tag = format!("{}", std::process::id() % 10_000);
    let t0 = Instant::now();
    let site = site(&tag, 77)?;
    eprintln!("site up and enrolled after {:?}", t0.elapsed());
    let (da, db) = (site.dir.path().join("a"), site.dir.path().join("b"));
    let formed = wait_for(Duration::from_secs(60), "the PN to form by mDNS", || {
        let sa = status(&site.a, &da)?;
        let sb = status(&site.b, &db)?;
        let same = sa["pn_id"].is_string() && sa["pn_id"] == sb["pn_id"];
        (same && sa["members"].as_array()?.len() == 2).then_some((sa, sb))
    });
    let (sa, sb) = match formed {
        Ok(v) => v,
        Err(e) => bail!("{e}\n{}", logs(site.dir.path())),
    };
    eprintln!("PN formed by mDNS after {:?}", t0.elapsed());
    ensure!(sa["gateway"] == sb["gateway"], "both agree on the gateway");
    let gw_is_a = sa["gateway"] == sa["peer_id"];
    let (gw_ns, gw_dir, pne_ns, pne_id) = if gw_is_a {
        (&site.a, &da, &site.b, sb["peer_id"].clone())
    } else {
        (&site.b, &db, &site.a, sa["peer_id"].clone())
    };

    // Partition: the PNE's link goes down.
    let pne_dev = if gw_is_a {
        format!("vb{tag}")
    } else {
        format!("va{tag}")
    };
    run(&["ip", "-n", pne_ns, "link", "set", &pne_dev, "down"])?;
    let member_status = |want: &str| {
        let s = status(gw_ns, gw_dir)?;
        s["members"]
            .as_array()?
            .iter()
            .find(|m| m["peer_id"] == pne_id)
            .filter(|m| m["status"] == want)
            .map(|_| ())
    };
    wait_for(
        Duration::from_secs(20),
        "the gateway to mark the PNE offline",
        || member_status("offline"),
    )
    .with_context(|| logs(site.dir.path()))?;
    eprintln!("PNE offline after {:?}", t0.elapsed());
    // Healed: heartbeats resume.
    run(&["ip", "-n", pne_ns, "link", "set", &pne_dev, "up"])?;
    wait_for(Duration::from_secs(30), "the PNE back online", || {
        member_status("online")
    })
    .with_context(|| logs(site.dir.path()))?;
    eprintln!("PNE back online after {:?}", t0.elapsed());
    drop(site.procs);
    Ok(())
}
