//! Zone-based service (spec Appendix F) on network namespaces this test makes: a Zone PN GW
//! (with `cpns-auth` beside it) on a bridge, and three PNEs each on its own veth into that
//! bridge, all real processes. Root only; without root (or `ip`) it says why and passes
//! without running. The zone search's multicast stays on the test's bridge.
//!
//! * `visitor` (user bob, invited into the zone PN, `zone.discoverable`): its link comes up
//!   in the zone LAN → registered at cpns-auth in the zone PN's inventory and pushed the
//!   zone's service descriptions within two searches, with no request of its own and no
//!   input from anyone; its link goes down → removed (gateway and cpns-auth) after two missed
//!   searches. Meanwhile it stays in its own home PN (it is that PN's gateway).
//! * `stranger` (user carol, discoverable, not authorised for the zone PN): answers, but
//!   cpns-auth refuses it: neither registered nor pushed.
//! * `shy` (user bob, authorised, but its user does not allow zone discovery): never answers;
//!   nothing registered, nothing pushed.

#![allow(unreachable_pub)] // shared test helpers are `pub` for the other test binaries

#[path = "util.rs"]
mod util;

#[path = "netns_util.rs"]
mod netns_util;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use netns_util::{Lan, Procs, output_in, run, spawn_in, status, unavailable, wait_for};

/// Seconds between two zone searches in this test.
const PERIOD: u64 = 2;

struct Host {
    ns: String,
    /// The veth end in the gateway's namespace (on the bridge): the PNE's link to the zone.
    bridge_end: String,
    dir: PathBuf,
}

fn cpns(ns: &str, dir: &Path, args: &[&str]) -> Result<String> {
    let mut all = vec!["--data-dir", dir.to_str().context("path")?];
    all.extend_from_slice(args);
    output_in(ns, &util::bin("cpns"), &all)
}

fn json(ns: &str, dir: &Path, args: &[&str]) -> Result<Value> {
    let text = cpns(ns, dir, args)?;
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

fn zone(ns: &str, dir: &Path) -> Option<Value> {
    json(ns, dir, &["zone", "show", "--json"]).ok()
}

fn member_of(z: &Value, peer: &str) -> Option<Value> {
    z["members"]
        .as_array()?
        .iter()
        .find(|m| m["peer_id"] == peer)
        .cloned()
}

fn logs(dir: &Path) -> String {
    ["auth", "gw", "visitor", "stranger", "shy"]
        .iter()
        .map(|n| {
            let p: PathBuf = dir.join(format!("{n}.log"));
            let text = std::fs::read_to_string(p).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(60).collect();
            format!(
                "--- {n}.log (last lines)\n{}\n",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            )
        })
        .collect()
}

/// cpns-auth's record of a PN (`cpns-auth pns show ID --json`).
fn json_auth(ns: &str, auth_dir: &str, pn: &str) -> Result<Value> {
    let text = output_in(
        ns,
        &util::bin("cpns-auth"),
        &["--data-dir", auth_dir, "pns", "show", pn, "--json"],
    )?;
    Ok(serde_json::from_str(&text)?)
}

/// The zone members cpns-auth holds for a PN, as text (None while it cannot answer).
fn auth_pn(ns: &str, auth_dir: &str, pn: &str) -> Option<String> {
    Some(json_auth(ns, auth_dir, pn).ok()?["zone_members"].to_string())
}

/// The F-flow trace events of a node.
fn trace_f(ns: &str, dir: &Path) -> Vec<Value> {
    json(ns, dir, &["trace", "--flow", "F", "--json"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
}

#[test]
fn zone_gateway_registers_and_pushes_to_an_opted_in_pne_and_removes_it_when_it_leaves() -> Result<()>
{
    if let Some(why) = unavailable() {
        eprintln!("skipping the zone namespace test: {why}");
        return Ok(());
    }
    let t0 = Instant::now();
    let tag = format!("{}", std::process::id() % 10_000);
    let net = 236u8;
    let gw_ns = format!("cpns-z{tag}-g");
    let names = ["visitor", "stranger", "shy"];
    let mut lan = Lan {
        names: vec![gw_ns.clone()],
    };
    for n in &names {
        lan.names.push(format!("cpns-z{tag}-{n}"));
    }
    for n in &lan.names {
        let _ = Command::new("ip").args(["netns", "del", n]).status();
        run(&["ip", "netns", "add", n])?;
        run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    let br = "zbr0";
    run(&["ip", "-n", &gw_ns, "link", "add", br, "type", "bridge"])?;
    run(&[
        "ip",
        "-n",
        &gw_ns,
        "addr",
        "add",
        &format!("10.{net}.0.1/24"),
        "dev",
        br,
    ])?;
    run(&["ip", "-n", &gw_ns, "link", "set", br, "up"])?;
    // The zone search's multicast goes out on the bridge only.
    run(&["ip", "-n", &gw_ns, "route", "add", "224.0.0.0/4", "dev", br])?;
    let dir = tempfile::tempdir()?;
    let mut hosts = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let ns = format!("cpns-z{tag}-{n}");
        let (inner, outer) = (format!("zi{i}{tag}"), format!("zo{i}{tag}"));
        run(&[
            "ip", "link", "add", &inner, "type", "veth", "peer", "name", &outer,
        ])?;
        run(&["ip", "link", "set", &inner, "netns", &ns])?;
        run(&["ip", "link", "set", &outer, "netns", &gw_ns])?;
        run(&["ip", "-n", &gw_ns, "link", "set", &outer, "master", br])?;
        run(&["ip", "-n", &gw_ns, "link", "set", &outer, "up"])?;
        run(&[
            "ip",
            "-n",
            &ns,
            "addr",
            "add",
            &format!("10.{net}.0.{}/24", 10 + i),
            "dev",
            &inner,
        ])?;
        run(&["ip", "-n", &ns, "link", "set", &inner, "up"])?;
        run(&[
            "ip",
            "-n",
            &ns,
            "route",
            "add",
            "224.0.0.0/4",
            "dev",
            &inner,
        ])?;
        hosts.push(Host {
            ns,
            bridge_end: outer,
            dir: dir.path().join(n),
        });
    }
    eprintln!("namespaces after {:?}", t0.elapsed());

    let mut procs = Procs::default();
    let auth_dir = dir.path().join("auth");
    let auth_s = auth_dir.to_str().context("path")?.to_string();
    procs.0.push(spawn_in(
        &gw_ns,
        &util::bin("cpns-auth"),
        &[
            "serve",
            "--data-dir",
            &auth_s,
            "--listen",
            &format!("/ip4/10.{net}.0.1/tcp/0"),
        ],
        &[],
        &dir.path().join("auth.log"),
    )?);
    wait_for(Duration::from_secs(20), "cpns-auth", || {
        auth_dir.join("admin.json").exists().then_some(())
    })?;
    for user in ["alice", "bob", "carol"] {
        output_in(
            &gw_ns,
            &util::bin("cpns-auth"),
            &["--data-dir", &auth_s, "users", "create", user],
        )?;
    }
    let period = PERIOD.to_string();
    let gw_dir = dir.path().join("gw");
    // (namespace, data dir, name, user, mode, discoverable)
    let mut nodes: Vec<(String, PathBuf, &str, &str, &str, bool)> = vec![(
        gw_ns.clone(),
        gw_dir.clone(),
        "gw",
        "alice",
        "gateway",
        false,
    )];
    for (h, (name, user, discoverable)) in hosts.iter().zip([
        ("visitor", "bob", true),
        ("stranger", "carol", true),
        ("shy", "bob", false),
    ]) {
        // The visitor runs its own home PN (it is its gateway): it is in its home PN and in
        // the zone PN at once.
        let mode = if name == "visitor" { "gateway" } else { "pne" };
        nodes.push((h.ns.clone(), h.dir.clone(), name, user, mode, discoverable));
    }
    for (i, (ns, data, name, _, mode, discoverable)) in nodes.iter().enumerate() {
        let listen = format!("/ip4/10.{net}.0.{}/tcp/0", if i == 0 { 1 } else { 9 + i });
        let env = [
            ("CPNS_LOG", "info,cpns_node::zone=debug"),
            ("CPNS_ZONE_SEARCH_SECS", period.as_str()),
            (
                "CPNS_ZONE_DISCOVERABLE",
                if *discoverable { "true" } else { "false" },
            ),
        ];
        procs.0.push(spawn_in(
            ns,
            &util::bin("cpns-node"),
            &[
                "--data-dir",
                data.to_str().context("path")?,
                "--listen",
                &listen,
                "--mdns",
                "off",
                "--mode",
                mode,
                "--device-name",
                name,
            ],
            &env,
            &dir.path().join(format!("{name}.log")),
        )?);
    }
    for (ns, data, name, user, _, _) in &nodes {
        wait_for(Duration::from_secs(30), "the node's API", || {
            data.join("api.json").exists().then_some(())
        })
        .with_context(|| logs(dir.path()))?;
        let code: Value = serde_json::from_str(&output_in(
            &gw_ns,
            &util::bin("cpns-auth"),
            &[
                "--data-dir",
                &auth_s,
                "enrol",
                "create",
                "--user",
                user,
                "--json",
            ],
        )?)?;
        let code = code["code"].as_str().context("code")?;
        cpns(ns, data, &["up", "--code", code]).with_context(|| format!("{name} up"))?;
    }
    eprintln!("enrolled after {:?}", t0.elapsed());
    let peer = |ns: &str, d: &Path| -> Result<String> {
        Ok(status(ns, d).context("status")?["peer_id"]
            .as_str()
            .context("peer_id")?
            .to_string())
    };
    let [visitor, stranger, shy] = [&hosts[0], &hosts[1], &hosts[2]];
    let visitor_id = peer(&visitor.ns, &visitor.dir)?;
    let stranger_id = peer(&stranger.ns, &stranger.dir)?;
    let shy_id = peer(&shy.ns, &shy.dir)?;
    let zone_pn = wait_for(Duration::from_secs(30), "the zone PN", || {
        status(&gw_ns, &gw_dir)?["pn_id"]
            .as_str()
            .map(str::to_string)
    })
    .with_context(|| logs(dir.path()))?;
    let home_pn = wait_for(Duration::from_secs(30), "the visitor's home PN", || {
        status(&visitor.ns, &visitor.dir)?["pn_id"]
            .as_str()
            .map(str::to_string)
    })
    .with_context(|| logs(dir.path()))?;
    ensure!(home_pn != zone_pn);

    // The zone PN admits bob's devices (the F.2 precondition "subscribed and authorised");
    // carol's are not.
    cpns(&gw_ns, &gw_dir, &["pn", "invite", "--user", "bob"])?;
    let published = json(
        &gw_ns,
        &gw_dir,
        &[
            "services",
            "publish",
            "--name",
            "mall map",
            "-k",
            "zone",
            "-k",
            "map",
            "--offers",
            "the map of the mall",
            "--visibility",
            "public",
            "--json",
        ],
    )?;
    let service_id = published["id"]
        .as_str()
        .or_else(|| published["service_id"].as_str())
        .with_context(|| format!("no id in {published}"))?
        .to_string();

    // The visitor is not in the zone yet: its link to the zone's LAN is down.
    run(&[
        "ip",
        "-n",
        &gw_ns,
        "link",
        "set",
        &visitor.bridge_end,
        "down",
    ])?;
    let set = json(
        &gw_ns,
        &gw_dir,
        &[
            "zone",
            "set",
            "--name",
            "mall",
            "--service",
            &service_id,
            "--json",
        ],
    )?;
    ensure!(set["settings"]["name"] == "mall", "{set}");
    wait_for(Duration::from_secs(20), "the gateway searching", || {
        zone(&gw_ns, &gw_dir)?["searching"].as_bool()?.then_some(())
    })
    .with_context(|| logs(dir.path()))?;

    // The stranger answers and is refused by cpns-auth (not authorised for the zone PN).
    let refused = wait_for(
        Duration::from_secs(10 * PERIOD + 20),
        "the stranger refused",
        || {
            let z = zone(&gw_ns, &gw_dir)?;
            z["refused"]
                .as_array()?
                .iter()
                .find(|r| r["peer_id"] == stranger_id.as_str())
                .cloned()
        },
    )
    .with_context(|| logs(dir.path()))?;
    eprintln!(
        "stranger refused after {:?}: {}",
        t0.elapsed(),
        refused["reason"]
    );
    ensure!(
        refused["reason"]
            .as_str()
            .is_some_and(|r| r.contains("not authorised")),
        "{refused}"
    );

    // The link comes up: registered and pushed within two searches.
    let mark = trace_f(&gw_ns, &gw_dir)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    run(&["ip", "-n", &gw_ns, "link", "set", &visitor.bridge_end, "up"])?;
    let up_at = Instant::now();
    let m = wait_for(
        Duration::from_secs(10 * PERIOD + 30),
        "the visitor registered and pushed",
        || {
            let z = zone(&gw_ns, &gw_dir)?;
            member_of(&z, &visitor_id).filter(|m| m["pushed"] == 1)
        },
    )
    .with_context(|| logs(dir.path()))?;
    eprintln!(
        "visitor registered and pushed {:?} after its link came up",
        up_at.elapsed()
    );
    ensure!(m["user"] == "bob" && m["device"] == "visitor", "{m}");
    // In the zone PN's inventory at cpns-auth, without being a member of the zone PN.
    let pn = json_auth(&gw_ns, &auth_s, &zone_pn)?;
    ensure!(
        pn["zone_members"]
            .as_array()
            .is_some_and(|z| z.iter().any(|p| p == visitor_id.as_str())),
        "{pn}"
    );
    ensure!(
        !pn["members"]
            .as_array()
            .is_some_and(|z| z.iter().any(|p| p == visitor_id.as_str())),
        "{pn}"
    );
    // Counted in searches, not in seconds: the push (F 6) came before the gateway's third
    // search after the link came up.
    let events = trace_f(&gw_ns, &gw_dir);
    let after: Vec<&Value> = events
        .iter()
        .filter(|e| e["seq"].as_u64().is_some_and(|s| s > mark))
        .collect();
    let pushed_seq = after
        .iter()
        .find(|e| e["step"] == 6 && e["to"] == visitor_id.as_str())
        .and_then(|e| e["seq"].as_u64())
        .context("no F 6 push to the visitor in the gateway's trace")?;
    let searches_before = after
        .iter()
        .filter(|e| e["step"] == 1 && e["seq"].as_u64().is_some_and(|s| s < pushed_seq))
        .count();
    ensure!(
        searches_before <= 2,
        "pushed only after {searches_before} searches"
    );
    // Every step of F is in the gateway's trace for the visitor.
    for step in [2, 3, 4, 5, 6] {
        ensure!(
            after.iter().any(|e| e["step"] == step),
            "no F step {step} in the gateway's trace"
        );
    }
    // The PNE has the zone's descriptions, with no request of its own.
    let pv = zone(&visitor.ns, &visitor.dir).context("visitor zone")?;
    let got = pv["received"]
        .as_array()
        .and_then(|r| r.iter().find(|z| z["zone"] == "mall").cloned())
        .with_context(|| format!("no zone mall at the visitor: {pv}"))?;
    ensure!(got["pn_id"] == zone_pn.as_str(), "{got}");
    ensure!(
        got["services"][0]["service_id"] == service_id.as_str()
            && got["services"][0]["name"] == "mall map",
        "{got}"
    );
    let pt = trace_f(&visitor.ns, &visitor.dir);
    for step in [2, 3, 5, 6] {
        ensure!(
            pt.iter().any(|e| e["step"] == step),
            "no F step {step} in the visitor's trace"
        );
    }
    // Still in its home PN.
    let vs = status(&visitor.ns, &visitor.dir).context("visitor status")?;
    ensure!(vs["pn_id"] == home_pn.as_str(), "{vs}");

    // No opt-in, nothing: neither the stranger nor the shy PNE is registered or pushed to.
    let z = zone(&gw_ns, &gw_dir).context("zone")?;
    ensure!(member_of(&z, &stranger_id).is_none(), "{z}");
    ensure!(member_of(&z, &shy_id).is_none(), "{z}");
    ensure!(
        !z["refused"]
            .as_array()
            .is_some_and(|r| r.iter().any(|x| x["peer_id"] == shy_id.as_str())),
        "the shy PNE answered a search: {z}"
    );
    for h in [stranger, shy] {
        // The stranger met the zone gateway (F 3, credentials checked both ways) but was
        // refused at cpns-auth: nothing was pushed to it. The shy PNE never met it.
        let pz = zone(&h.ns, &h.dir).context("zone")?;
        ensure!(
            pz["received"].as_array().is_some_and(|r| r.iter().all(
                |z| z["pushed_at"] == 0 && z["services"].as_array().is_some_and(Vec::is_empty)
            )),
            "{pz}"
        );
    }
    ensure!(
        trace_f(&shy.ns, &shy.dir).is_empty(),
        "the shy PNE took part in the flow"
    );
    let shy_zone = zone(&shy.ns, &shy.dir).context("zone")?;
    ensure!(
        shy_zone["received"].as_array().is_some_and(Vec::is_empty),
        "{shy_zone}"
    );

    // The link goes down: removed after two missed searches, at the gateway and at cpns-auth.
    run(&[
        "ip",
        "-n",
        &gw_ns,
        "link",
        "set",
        &visitor.bridge_end,
        "down",
    ])?;
    let down_mark = trace_f(&gw_ns, &gw_dir)
        .iter()
        .filter_map(|e| e["seq"].as_u64())
        .max()
        .unwrap_or(0);
    wait_for(
        Duration::from_secs(10 * PERIOD + 30),
        "the visitor removed",
        || {
            let z = zone(&gw_ns, &gw_dir)?;
            member_of(&z, &visitor_id).is_none().then_some(())
        },
    )
    .with_context(|| logs(dir.path()))?;
    let left = trace_f(&gw_ns, &gw_dir);
    let f7 = left
        .iter()
        .find(|e| {
            e["step"] == 7
                && e["seq"].as_u64().is_some_and(|s| s > down_mark)
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains(&visitor_id))
        })
        .context("no F 7 for the visitor")?;
    let searches = left
        .iter()
        .filter(|e| {
            e["step"] == 1
                && e["seq"]
                    .as_u64()
                    .is_some_and(|s| s > down_mark && Some(s) < f7["seq"].as_u64())
        })
        .count();
    ensure!(
        (2..=4).contains(&searches),
        "removed after {searches} searches"
    );
    eprintln!("visitor removed after {:?}", t0.elapsed());
    let at_auth = wait_for(
        Duration::from_secs(20),
        "cpns-auth to forget the visitor",
        || {
            let p = auth_pn(&gw_ns, &auth_s, &zone_pn)?;
            (!p.contains(&visitor_id)).then_some(p)
        },
    )
    .with_context(|| logs(dir.path()))?;
    ensure!(!at_auth.contains(&stranger_id) && !at_auth.contains(&shy_id));
    drop(procs);
    drop(lan);
    Ok(())
}
