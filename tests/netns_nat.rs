//! Homes behind NAT routers, in network namespaces this test builds itself: two home LANs,
//! each behind its own router namespace doing nftables masquerade, and a public segment with
//! one reachable host (`cpns-auth`, also the community's relay). Real processes (`cpns-auth`,
//! two `cpns-node`s, the `cpns` CLI), real TCP and QUIC through real Linux NAT.
//!
//! * Port-preserving masquerade (what a home router does): the gateway in home 1 and the PNE
//!   in home 2, devices of one user, learn that they are not reachable (AutoNAT), hold a slot
//!   on the relay, pair through it by a pairing code and form one PN; DCUtR then punches a
//!   hole and the path becomes direct (the time until it did is printed). A service published
//!   in home 1 is found and its content fetched from home 2.
//! * A NAT that maps every connection to a new port (`masquerade fully-random`, symmetric):
//!   hole punching cannot work; the PN forms and delivers content through the relay, and both
//!   sides see the path relayed.
//! * Home 2 behind carrier-grade NAT (its router's WAN in 100.64.0.0/10 behind a carrier
//!   namespace that masquerades too): the household joins through the relay and punches
//!   through both NAT layers.
//! * Measured on demand (ignored by default): hole punching with the whole community on TCP
//!   only against QUIC only, alternately in one run (docs/BENCHMARKS.md).
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); without them each test says why it skips
//! and passes. netem is not used (not every kernel has it); the NAT is the only impairment.

#![allow(unreachable_pub)] // shared test helpers are `pub` for the other test binary

#[path = "util.rs"]
mod util;

#[path = "netns_util.rs"]
mod netns_util;

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use netns_util::{Lan, Procs, nat_router, output_in, run, spawn_in, status, unavailable, wait_for};

/// Why these tests cannot run here, if they cannot: the namespace requirements, and nftables
/// with NAT support in a namespace.
fn nat_unavailable() -> Option<String> {
    if let Some(why) = unavailable() {
        return Some(why);
    }
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`nft --version` fails: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("no `nft` command (install nftables): {e}")),
    }
}

/// How the home routers map connections.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Nat {
    /// Keeps the source port where it can (Linux masquerade): hole punching can work.
    PortPreserving,
    /// A new random port for every connection (symmetric): only the relay works.
    Symmetric,
    /// Port-preserving home routers, and home 2's router behind a carrier-grade NAT: its WAN
    /// is in the shared range 100.64.0.0/10 of a carrier namespace that masquerades again (two
    /// NAT layers, no public address for that household, no port forward possible).
    Cgnat,
}

/// The namespaces: `public` (10.99.1.1 and 10.99.2.1, routing between the two homes' WAN
/// links), router `r1` (WAN 10.99.1.2, LAN 10.231.1.1) with host `h1` (10.231.1.2), and
/// router `r2` / host `h2` likewise on 10.99.2.0/24 and 10.231.2.0/24. Nothing routes to a
/// home LAN from outside: only the routers' NAT lets answers in. Like a home router, a router
/// drops what arrives unasked on its WAN side (no RST, no ICMP): the first hole-punch packet
/// that arrives before the other side's has opened the mapping is lost and retried, as on the
/// Internet. (libp2p's own hole-punch tests use the same masquerade and forward rules, with
/// netem delay on the links; netem is not available everywhere, the silent drop is.)
/// With [`Nat::Cgnat`], home 2's router has its WAN (100.64.2.2) on a carrier namespace `c2`
/// (100.64.2.1, WAN 10.99.2.2) that is a NAT router the same way.
struct Internet {
    _lan: Lan,
    public: String,
    homes: [String; 2],
}

fn internet(tag: &str, nat: Nat) -> Result<Internet> {
    let ns = |n: &str| format!("cpns-{tag}-{n}");
    let (public, r1, h1, r2, h2) = (ns("pub"), ns("r1"), ns("h1"), ns("r2"), ns("h2"));
    let mut lan = Lan {
        names: vec![
            public.clone(),
            r1.clone(),
            h1.clone(),
            r2.clone(),
            h2.clone(),
        ],
    };
    for n in &lan.names {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", n])?;
        run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    // One veth pair from `a` (address `ip_a`) to `b` (address `ip_b`), both /24.
    let link = |a: &str, dev_a: &str, ip_a: &str, b: &str, dev_b: &str, ip_b: &str| {
        run(&[
            "ip", "link", "add", dev_a, "type", "veth", "peer", "name", dev_b,
        ])?;
        for (ns, dev, ip) in [(a, dev_a, ip_a), (b, dev_b, ip_b)] {
            run(&["ip", "link", "set", dev, "netns", ns])?;
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("{ip}/24"),
                "dev",
                dev,
            ])?;
            run(&["ip", "-n", ns, "link", "set", dev, "up"])?;
        }
        anyhow::Ok(())
    };
    let carrier = ns("c2");
    if nat == Nat::Cgnat {
        lan.names.push(carrier.clone());
        let _ = Command::new("ip")
            .args(["netns", "del", &carrier])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", &carrier])?;
        run(&["ip", "-n", &carrier, "link", "set", "lo", "up"])?;
    }
    for (i, r, h) in [(1, &r1, &h1), (2, &r2, &h2)] {
        let wan = format!("u{i}{tag}");
        let behind_carrier = nat == Nat::Cgnat && i == 2;
        if behind_carrier {
            // public --(10.99.2.0/24)-- carrier --(100.64.2.0/24)-- home router
            let carrier_wan = format!("k{i}{tag}");
            link(
                &public,
                &format!("w{i}{tag}"),
                &format!("10.99.{i}.1"),
                &carrier,
                &carrier_wan,
                &format!("10.99.{i}.2"),
            )?;
            link(
                &carrier,
                &format!("c{i}{tag}"),
                &format!("100.64.{i}.1"),
                r,
                &wan,
                &format!("100.64.{i}.2"),
            )?;
            run(&[
                "ip",
                "-n",
                &carrier,
                "route",
                "add",
                "default",
                "via",
                &format!("10.99.{i}.1"),
            ])?;
            run(&[
                "ip",
                "-n",
                r,
                "route",
                "add",
                "default",
                "via",
                &format!("100.64.{i}.1"),
            ])?;
            nat_router(&carrier, &carrier_wan, "masquerade", false)?;
        } else {
            link(
                &public,
                &format!("w{i}{tag}"),
                &format!("10.99.{i}.1"),
                r,
                &wan,
                &format!("10.99.{i}.2"),
            )?;
            run(&[
                "ip",
                "-n",
                r,
                "route",
                "add",
                "default",
                "via",
                &format!("10.99.{i}.1"),
            ])?;
        }
        link(
            r,
            &format!("l{i}{tag}"),
            &format!("10.231.{i}.1"),
            h,
            &format!("h{i}{tag}"),
            &format!("10.231.{i}.2"),
        )?;
        run(&[
            "ip",
            "-n",
            h,
            "route",
            "add",
            "default",
            "via",
            &format!("10.231.{i}.1"),
        ])?;
        let masquerade = match nat {
            Nat::PortPreserving | Nat::Cgnat => "masquerade",
            Nat::Symmetric => "masquerade fully-random",
        };
        nat_router(r, &wan, masquerade, false)?;
    }
    run(&[
        "ip",
        "netns",
        "exec",
        &public,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])?;
    Ok(Internet {
        _lan: lan,
        public,
        homes: [h1, h2],
    })
}

/// `cpns-auth` (with `--relay`) on the public segment, the gateway in home 1 and the PNE in
/// home 2, both enrolled for alice.
struct Community {
    net: Internet,
    procs: Procs,
    dir: tempfile::TempDir,
}

impl Community {
    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(["a", "b"][i])
    }

    fn status(&self, i: usize) -> Option<Value> {
        status(&self.net.homes[i], &self.node_dir(i))
    }

    fn cpns(&self, i: usize, args: &[&str]) -> Result<Value> {
        let dir = self.node_dir(i);
        let mut all = vec!["--data-dir", dir.to_str().context("path")?, "--json"];
        all.extend_from_slice(args);
        let out = output_in(&self.net.homes[i], &util::bin("cpns"), &all)?;
        serde_json::from_str(&out).with_context(|| format!("cpns {args:?}: {out}"))
    }

    fn logs(&self) -> String {
        ["auth", "a", "b"]
            .iter()
            .map(|n| {
                let p: PathBuf = self.dir.path().join(format!("{n}.log"));
                let text = std::fs::read_to_string(p).unwrap_or_default();
                // The end is what explains a failure; keep the report readable.
                let tail: Vec<&str> = text.lines().rev().take(60).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("--- {n}.log (last lines)\n{}\n", tail.join("\n"))
            })
            .collect()
    }
}

/// Which transports every host listens on (and so can dial and punch holes with).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Transports {
    Both,
    Tcp,
    Quic,
}

impl Transports {
    /// The `--listen` arguments for `host`.
    fn listen(self, host: &str) -> Vec<String> {
        let tcp = format!("/ip4/{host}/tcp/0");
        let quic = format!("/ip4/{host}/udp/0/quic-v1");
        let addrs = match self {
            Self::Both => vec![tcp, quic],
            Self::Tcp => vec![tcp],
            Self::Quic => vec![quic],
        };
        addrs
            .into_iter()
            .flat_map(|a| ["--listen".to_string(), a])
            .collect()
    }
}

fn community(tag: &str, nat: Nat) -> Result<Community> {
    community_on(tag, nat, Transports::Both)
}

fn community_on(tag: &str, nat: Nat, transports: Transports) -> Result<Community> {
    let net = internet(tag, nat)?;
    let dir = tempfile::tempdir()?;
    let mut procs = Procs::default();
    let auth_dir = dir.path().join("auth");
    let auth_dir_s = auth_dir.to_str().context("path")?.to_string();
    let mut serve = vec!["serve".to_string(), "--data-dir".into(), auth_dir_s.clone()];
    // Its two public addresses by name: with a wildcard listener the overlay reports loopback
    // first, and a TCP-only `cpns-auth` handed out enrolment codes naming only 127.0.0.1.
    serve.extend(transports.listen("10.99.1.1"));
    serve.extend(transports.listen("10.99.2.1"));
    serve.push("--relay".into());
    let serve: Vec<&str> = serve.iter().map(String::as_str).collect();
    procs.0.push(spawn_in(
        &net.public,
        &util::bin("cpns-auth"),
        &serve,
        &[],
        &dir.path().join("auth.log"),
    )?);
    wait_for(
        Duration::from_secs(20),
        "cpns-auth's admin endpoint",
        || auth_dir.join("admin.json").exists().then_some(()),
    )?;
    output_in(
        &net.public,
        &util::bin("cpns-auth"),
        &["--data-dir", &auth_dir_s, "users", "create", "alice"],
    )?;
    // The lab's "Internet" is a private range: let AutoNAT test it.
    let env = [
        ("CPNS_NAT_PROBE_PRIVATE_ADDRS", "true"),
        ("CPNS_STATUS_HEARTBEAT_SECS", "2"),
        ("CPNS_LOG", "info,cpns_overlay=debug"),
    ];
    for (i, (name, mode)) in [("a", "gateway"), ("b", "pne")].into_iter().enumerate() {
        let code_json = output_in(
            &net.public,
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
        let code: Value = serde_json::from_str(&code_json)?;
        let code = code["code"].as_str().context("enrolment code")?;
        let host = format!("10.231.{}.2", i + 1);
        let d = dir.path().join(name);
        let mut args = vec!["--data-dir".to_string(), d.to_str().context("path")?.into()];
        args.extend(transports.listen(&host));
        let mut args: Vec<&str> = args.iter().map(String::as_str).collect();
        args.extend_from_slice(&[
            "--mdns",
            "off",
            "--upnp",
            "off",
            "--mode",
            mode,
            "--device-name",
            name,
            "--code",
            code,
        ]);
        procs.0.push(spawn_in(
            &net.homes[i],
            &util::bin("cpns-node"),
            &args,
            &env,
            &dir.path().join(format!("{name}.log")),
        )?);
    }
    Ok(Community { net, procs, dir })
}

/// The NAT part of a node's status, once it holds a relay slot and knows it is not
/// reachable from outside.
fn behind_nat(c: &Community, i: usize) -> Option<Value> {
    let s = c.status(i)?;
    let nat = &s["nat"];
    (s["enrolled"] == true
        && nat["reachability"] == "private"
        && !nat["relayed_addrs"].as_array()?.is_empty())
    .then(|| nat.clone())
}

/// The path `cpns peers` shows to `peer` (`direct` or `relayed`).
fn path_to(c: &Community, i: usize, peer: &str) -> Option<String> {
    let peers = c.cpns(i, &["peers"]).ok()?;
    let list = peers.as_array().or_else(|| peers["peers"].as_array())?;
    list.iter()
        .find(|p| p["peer_id"] == peer)
        .and_then(|p| p["path"].as_str().map(str::to_owned))
}

/// Runs the scenario up to a formed PN: both homes behind NAT with relay slots, the PNE
/// paired with the gateway by its pairing code. Returns the peers' ids and when pairing began.
fn form_pn(c: &Community) -> Result<(String, String, Instant)> {
    let t0 = Instant::now();
    let nats = wait_for(
        Duration::from_secs(60),
        "both homes to learn they are behind NAT and hold a relay slot",
        || Some((behind_nat(c, 0)?, behind_nat(c, 1)?)),
    )
    .with_context(|| c.logs())?;
    eprintln!(
        "behind NAT with relay slots after {:?}: {} / {}",
        t0.elapsed(),
        nats.0,
        nats.1
    );
    let gw = c.status(0).context("gateway status")?;
    let pne = c.status(1).context("PNE status")?;
    let gw_id = gw["peer_id"].as_str().context("peer_id")?.to_owned();
    let pne_id = pne["peer_id"].as_str().context("peer_id")?.to_owned();
    let code = c.cpns(0, &["pairing-code"])?;
    let code = code["code"].as_str().context("pairing code")?.to_owned();
    let paired = Instant::now();
    c.cpns(1, &["pair", &code])
        .with_context(|| format!("cpns pair through the relay\n{}", c.logs()))?;
    wait_for(
        Duration::from_secs(60),
        "the PN to form across NATs",
        || {
            let a = c.status(0)?;
            let b = c.status(1)?;
            (a["pn_id"].is_string()
                && a["pn_id"] == b["pn_id"]
                && b["gateway"] == gw_id.as_str()
                && a["members"].as_array()?.len() == 2)
                .then_some(())
        },
    )
    .with_context(|| c.logs())?;
    eprintln!("PN formed {:?} after pairing began", paired.elapsed());
    Ok((gw_id, pne_id, paired))
}

/// A service published in home 1 is found from home 2 and its content fetched there, intact.
fn deliver(c: &Community, label: &str) -> Result<()> {
    let content: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    let file = c.dir.path().join(format!("{label}.bin"));
    std::fs::write(&file, &content)?;
    let published = c.cpns(
        0,
        &[
            "services",
            "publish",
            "--name",
            &format!("Family photos {label}"),
            "-k",
            label,
            "--file",
            file.to_str().context("path")?,
        ],
    )?;
    let id = published["id"].as_str().context("service id")?.to_owned();
    wait_for(
        Duration::from_secs(30),
        "the service to be found from the other home",
        || {
            let found = c.cpns(1, &["services", "find", label]).ok()?;
            found["services"]
                .as_array()?
                .iter()
                .any(|f| f["description"]["id"] == id.as_str())
                .then_some(())
        },
    )
    .with_context(|| c.logs())?;
    let fetched = c
        .cpns(1, &["content", "fetch", &id])
        .with_context(|| c.logs())?;
    ensure!(
        fetched["bytes"] == content.len() as u64,
        "fetched {fetched}"
    );
    let got = std::fs::read(fetched["path"].as_str().context("path")?)?;
    ensure!(got == content, "the fetched content differs");
    Ok(())
}

fn tag(variant: u32) -> String {
    format!("{}", (std::process::id() * 4 + variant) % 10_000)
}

/// Behind port-preserving NAT in both homes: relay first, then a direct path by hole punching.
#[test]
fn two_homes_behind_nat_pair_through_the_relay_then_punch_a_hole() -> Result<()> {
    if let Some(why) = nat_unavailable() {
        eprintln!("skipping the NAT network-namespace test: {why}");
        return Ok(());
    }
    let c = community(&tag(0), Nat::PortPreserving)?;
    let (gw_id, pne_id, paired) = form_pn(&c)?;
    let direct = wait_for(
        Duration::from_secs(60),
        "a direct path by hole punching",
        || {
            (path_to(&c, 1, &gw_id)? == "direct" && path_to(&c, 0, &pne_id)? == "direct")
                .then(|| paired.elapsed())
        },
    )
    .with_context(|| c.logs())?;
    eprintln!("MEASURED: path direct {direct:?} after pairing began (relayed until then)");
    let ping = c.cpns(1, &["ping", &gw_id])?;
    ensure!(ping["path"] == "direct", "cpns ping: {ping}");
    let punched = wait_for(Duration::from_secs(10), "a hole punch counted", || {
        let n = |i| -> Option<u64> { c.status(i)?["nat"]["hole_punches_succeeded"].as_u64() };
        (n(0)? + n(1)? > 0).then_some(())
    });
    ensure!(punched.is_ok(), "no hole punch counted\n{}", c.logs());
    deliver(&c, "direct")?;
    ensure!(
        path_to(&c, 1, &gw_id).as_deref() == Some("direct"),
        "still direct after delivery"
    );
    drop(c.procs);
    Ok(())
}

/// Behind symmetric NAT (every connection a new port) hole punching fails; the PN forms and
/// delivers content through the relay.
#[test]
fn behind_a_symmetric_nat_the_pn_works_through_the_relay() -> Result<()> {
    if let Some(why) = nat_unavailable() {
        eprintln!("skipping the NAT network-namespace test: {why}");
        return Ok(());
    }
    let c = community(&tag(1), Nat::Symmetric)?;
    let (gw_id, pne_id, _) = form_pn(&c)?;
    // DCUtR tries and gives up: every port it was told of is wrong for the next connection.
    wait_for(Duration::from_secs(60), "the hole punch to fail", || {
        let n = |i| -> Option<u64> { c.status(i)?["nat"]["hole_punches_failed"].as_u64() };
        (n(0)? + n(1)? > 0).then_some(())
    })
    .with_context(|| c.logs())?;
    // Both sides see the path relayed. (The gateway accepted the PNE's relayed connection;
    // libp2p gives such a connection only `/p2p/PNE` as its remote address, and the overlay
    // once took that for a direct connection: the gateway showed `direct`, and retired its
    // own relayed connection as if a direct one existed.)
    for (i, peer) in [(1, &gw_id), (0, &pne_id)] {
        ensure!(
            path_to(&c, i, peer).as_deref() == Some("relayed"),
            "home {} reaches the other through the relay: {:?}\n{}",
            i + 1,
            c.cpns(i, &["peers"]),
            c.logs()
        );
    }
    deliver(&c, "relayed")?;
    let ping = c.cpns(1, &["ping", &gw_id])?;
    ensure!(ping["path"] == "relayed", "cpns ping: {ping}");
    let relay = c.status(0).context("gateway status")?;
    ensure!(
        relay["nat"]["hole_punches_succeeded"] == 0,
        "no hole punched through a symmetric NAT: {}",
        relay["nat"]
    );
    drop(c.procs);
    Ok(())
}

/// A household behind carrier-grade NAT (its router's WAN is itself behind the carrier's
/// masquerade: two NAT layers, no public address, nothing to forward) joins the PN of a
/// household behind an ordinary home router: pairing and the PN go through the relay, the
/// service is found and its content fetched. Both NAT layers keep the source port (Linux
/// masquerade does where it can, and a carrier NAT maps endpoint-independently, RFC 6888), so
/// the address the relay observes for home 2 is the carrier's, with a port that leads back
/// through both layers to the device once the device has sent to the peer: DCUtR's
/// simultaneous dial opens both NATs and the path becomes direct, as behind one NAT.
#[test]
fn a_household_behind_cgnat_joins_through_the_relay_and_punches_through_both_nats() -> Result<()> {
    if let Some(why) = nat_unavailable() {
        eprintln!("skipping the NAT network-namespace test: {why}");
        return Ok(());
    }
    let c = community(&tag(2), Nat::Cgnat)?;
    let (gw_id, pne_id, paired) = form_pn(&c)?;
    let pne = c.status(1).context("PNE status")?;
    ensure!(
        pne["nat"]["public_addrs"] == serde_json::json!([]),
        "no public address behind CGNAT: {}",
        pne["nat"]
    );
    let direct = wait_for(
        Duration::from_secs(60),
        "a direct path through both NAT layers",
        || {
            (path_to(&c, 1, &gw_id)? == "direct" && path_to(&c, 0, &pne_id)? == "direct")
                .then(|| paired.elapsed())
        },
    )
    .with_context(|| c.logs())?;
    eprintln!("MEASURED: behind CGNAT, path direct {direct:?} after pairing began");
    let punched = wait_for(Duration::from_secs(10), "a hole punch counted", || {
        let n = |i| -> Option<u64> { c.status(i)?["nat"]["hole_punches_succeeded"].as_u64() };
        (n(0)? + n(1)? > 0).then_some(())
    });
    ensure!(punched.is_ok(), "no hole punch counted\n{}", c.logs());
    deliver(&c, "cgnat")?;
    let ping = c.cpns(1, &["ping", &gw_id])?;
    ensure!(ping["path"] == "direct", "cpns ping: {ping}");
    drop(c.procs);
    Ok(())
}

/// Hole punching over TCP against QUIC, measured (not asserted: the network rule allows no
/// timed assertions). Behind port-preserving NAT in both homes, the whole community listens on
/// TCP only, then on QUIC only, alternately, `CPNS_NAT_BENCH_RUNS` times each (5 by default,
/// at most 20): for each run, the time from pairing through the relay until a node logs its
/// first hole punch (from the nodes' logs) and until both sides see the path direct (polled;
/// 60 s at most, a run that stays relayed counts as failed), and the hole punches counted.
/// Prints p50/p90/max per transport and the ratio of the medians, QUIC to TCP, from the same
/// run. Run:
/// `CPNS_NAT_BENCH_RUNS=8 cargo test --test netns_nat -- --ignored over_tcp_against_quic --nocapture`
/// (`cargo test`: nextest's 3-minute bound is for tests, not for this).
#[test]
#[ignore = "a measurement that prints figures; run on demand (docs/BENCHMARKS.md)"]
fn hole_punching_over_tcp_against_quic() -> Result<()> {
    if let Some(why) = nat_unavailable() {
        eprintln!("skipping the NAT network-namespace measurement: {why}");
        return Ok(());
    }
    let runs: usize = std::env::var("CPNS_NAT_BENCH_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5)
        .clamp(1, 20);
    // Per transport: pairing to the first hole punch a node logged (the log's timestamps:
    // exact), and pairing to both sides showing the path direct (polled through the CLI, so it
    // includes the PN's forming and a poll's latency).
    let mut punched: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut direct: [Vec<Duration>; 2] = [Vec::new(), Vec::new()];
    let mut punches = [(0u64, 0u64); 2];
    for run in 0..runs {
        for (k, transports) in [Transports::Tcp, Transports::Quic].into_iter().enumerate() {
            let c = community_on(&tag(3), Nat::PortPreserving, transports)?;
            let (gw_id, pne_id, paired) = form_pn(&c)?;
            let paired_at = std::time::SystemTime::now() - paired.elapsed();
            let both = wait_for(Duration::from_secs(60), "a direct path", || {
                (path_to(&c, 1, &gw_id)? == "direct" && path_to(&c, 0, &pne_id)? == "direct")
                    .then(|| paired.elapsed())
            });
            let first_punch = ["a", "b"]
                .iter()
                .filter_map(|n| {
                    logged_at(
                        &c.dir.path().join(format!("{n}.log")),
                        "hole punched: direct connection",
                    )
                })
                .filter_map(|t| t.duration_since(paired_at).ok())
                .min();
            let counts = |i| -> (u64, u64) {
                let s = c.status(i).unwrap_or_default();
                let n = |k: &str| s["nat"][k].as_u64().unwrap_or(0);
                (n("hole_punches_succeeded"), n("hole_punches_failed"))
            };
            let (a, b) = (counts(0), counts(1));
            punches[k].0 += a.0 + b.0;
            punches[k].1 += a.1 + b.1;
            eprintln!(
                "run {run} {transports:?}: first hole punch {first_punch:?}, both sides direct {:?}",
                both.as_ref().ok()
            );
            if let Some(t) = first_punch {
                punched[k].push(t);
            }
            if let Ok(t) = both {
                direct[k].push(t);
            }
            drop(c.procs);
        }
    }
    let pct = |v: &[Duration], p: f64| -> Duration {
        if v.is_empty() {
            return Duration::ZERO;
        }
        v[((v.len() - 1) as f64 * p).round() as usize]
    };
    let mut medians = [(Duration::ZERO, Duration::ZERO); 2];
    for (k, name) in ["tcp ", "quic"].into_iter().enumerate() {
        punched[k].sort();
        direct[k].sort();
        medians[k] = (pct(&punched[k], 0.5), pct(&direct[k], 0.5));
        eprintln!(
            "MEASURED {name}: hole punched in {}/{runs} runs, pairing to the first punch p50={:?} p90={:?} max={:?}; both sides direct in {}/{runs}, p50={:?} p90={:?}; punches counted (both nodes) succeeded {} failed {}",
            punched[k].len(),
            medians[k].0,
            pct(&punched[k], 0.9),
            punched[k].last().copied().unwrap_or_default(),
            direct[k].len(),
            medians[k].1,
            pct(&direct[k], 0.9),
            punches[k].0,
            punches[k].1,
        );
    }
    let ratio = |q: Duration, t: Duration| {
        if t.is_zero() {
            f64::NAN
        } else {
            q.as_secs_f64() / t.as_secs_f64()
        }
    };
    eprintln!(
        "MEASURED ratio quic/tcp of the medians: first punch {:.2}, both sides direct {:.2}",
        ratio(medians[1].0, medians[0].0),
        ratio(medians[1].1, medians[0].1)
    );
    Ok(())
}

/// When the first line of the log `file` containing `what` was written (its tracing
/// timestamp, `…THH:MM:SS.ffffffZ`, read as today's UTC time).
fn logged_at(file: &std::path::Path, what: &str) -> Option<std::time::SystemTime> {
    let text = std::fs::read_to_string(file).ok()?;
    let line = text.lines().find(|l| l.contains(what))?;
    let b = line.as_bytes();
    let at = (0..b.len().saturating_sub(9))
        .find(|&i| b[i] == b'T' && b[i + 3] == b':' && b[i + 6] == b':')?;
    let end = line[at..].find('Z')? + at;
    let clock = &line[at + 1..end];
    let mut parts = clock.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let sec: f64 = parts.next()?.parse().ok()?;
    let of_day = h * 3600.0 + m * 60.0 + sec;
    let now = std::time::SystemTime::now();
    let since_epoch = now
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .as_secs_f64();
    let midnight = since_epoch - since_epoch.rem_euclid(86_400.0);
    Some(std::time::UNIX_EPOCH + Duration::from_secs_f64(midnight + of_day))
}
