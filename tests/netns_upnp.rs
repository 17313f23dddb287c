//! UPnP IGD port mapping against a real IGD, in network namespaces this test builds itself: a
//! home router namespace running `miniupnpd` (Debian's package, its nftables backend), a
//! device behind it with UPnP switched on in its config file, and a public segment with
//! `cpns-auth` (no relay anywhere) and a second device of the same user.
//!
//! The device in the home finds the router by SSDP on the home LAN, maps its ports, and so
//! learns a public address without AutoNAT or a relay; the router's nftables shows the
//! mapping, `cpns status` the mapped address. The public device then pairs with it by its
//! pairing code: it dials the mapped address, the router's DNAT rule lets the connection in
//! (the router drops anything else unasked, and there is no relay), and the PN forms on that
//! direct connection.
//!
//! The "Internet" here uses 11.99.1.0/24: both libp2p's UPnP behaviour and miniupnpd refuse
//! a gateway whose external address is private or reserved (a NAT behind a NAT cannot map a
//! port for the outside world), so the lab's public segment needs globally routable-looking
//! addresses. They exist only inside the namespaces: nothing routes out of them. SSDP
//! (multicast to 239.255.255.250) stays on the home LAN link inside the namespaces too:
//! `miniupnpd` listens only on the router's LAN interface.
//!
//! Needs root, `ip`, `nft` and `/usr/sbin/miniupnpd` (package `miniupnpd-nftables`: the daemon
//! without the `miniupnpd` package's system service); without them the test says why it
//! skips and passes.

#![allow(unreachable_pub)] // shared test helpers are `pub` for the other test binaries

#[path = "util.rs"]
mod util;

#[path = "netns_util.rs"]
mod netns_util;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use netns_util::{
    Lan, Procs, nat_router, output_in, path_str, run, spawn_in, status, unavailable, wait_for,
};

const MINIUPNPD: &str = "/usr/sbin/miniupnpd";
/// The router's WAN address (the mapped addresses' IP) and the public segment's.
const ROUTER_WAN: &str = "11.99.1.2";
const PUBLIC: &str = "11.99.1.1";
const HOME: &str = "10.231.1.2";

fn upnp_unavailable() -> Option<String> {
    if let Some(why) = unavailable() {
        return Some(why);
    }
    if !matches!(Command::new("nft").arg("--version").output(), Ok(o) if o.status.success()) {
        return Some("no working `nft` command (install nftables)".into());
    }
    if !Path::new(MINIUPNPD).exists() {
        return Some(format!(
            "no {MINIUPNPD} (install miniupnpd-nftables, the IGD daemon without its service)"
        ));
    }
    None
}

/// The tables miniupnpd's nftables backend adds its rules to (it does not create them: Debian
/// ships `nft_init.sh` for that); the names are given in its config below.
const MINIUPNPD_TABLES: &str = "table inet miniupnpd {
  chain forward { type filter hook forward priority filter; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority dstnat; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority srcnat; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
";

struct Home {
    _lan: Lan,
    public: String,
    router: String,
    host: String,
    /// The router's LAN interface (miniupnpd's only listening interface).
    lan_if: String,
    wan_if: String,
}

/// `public` (11.99.1.1) -- router `r` (WAN 11.99.1.2, LAN 10.231.1.1) -- home host `h`
/// (10.231.1.2). The router masquerades and drops unasked packets from the WAN, except
/// those its DNAT rules (miniupnpd's mappings) send to the home.
fn home(tag: &str) -> Result<Home> {
    let ns = |n: &str| format!("cpns-{tag}-{n}");
    let (public, router, host) = (ns("pub"), ns("r"), ns("h"));
    let lan = Lan {
        names: vec![public.clone(), router.clone(), host.clone()],
    };
    for n in &lan.names {
        let _ = Command::new("ip")
            .args(["netns", "del", n])
            .stderr(std::process::Stdio::null())
            .status();
        run(&["ip", "netns", "add", n])?;
        run(&["ip", "-n", n, "link", "set", "lo", "up"])?;
    }
    let (wan_if, lan_if) = (format!("u{tag}"), format!("l{tag}"));
    for (a, dev_a, ip_a, b, dev_b, ip_b) in [
        (
            &public,
            format!("w{tag}"),
            PUBLIC,
            &router,
            wan_if.clone(),
            ROUTER_WAN,
        ),
        (
            &router,
            lan_if.clone(),
            "10.231.1.1",
            &host,
            format!("h{tag}"),
            HOME,
        ),
    ] {
        run(&[
            "ip", "link", "add", &dev_a, "type", "veth", "peer", "name", &dev_b,
        ])?;
        for (ns, dev, ip) in [(a, &dev_a, ip_a), (b, &dev_b, ip_b)] {
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
    }
    run(&[
        "ip", "-n", &router, "route", "add", "default", "via", PUBLIC,
    ])?;
    run(&[
        "ip",
        "-n",
        &host,
        "route",
        "add",
        "default",
        "via",
        "10.231.1.1",
    ])?;
    nat_router(&router, &wan_if, "masquerade", true)?;
    Ok(Home {
        _lan: lan,
        public,
        router,
        host,
        lan_if,
        wan_if,
    })
}

/// Starts miniupnpd on the router, listening on the LAN interface only, and waits until it
/// serves HTTP (so that the device's one SSDP search finds it).
fn start_igd(h: &Home, dir: &Path, procs: &mut Procs) -> Result<()> {
    let tables = dir.join("miniupnpd.nft");
    std::fs::write(&tables, MINIUPNPD_TABLES)?;
    run(&[
        "ip",
        "netns",
        "exec",
        &h.router,
        "nft",
        "-f",
        path_str(&tables)?,
    ])?;
    let conf = dir.join("miniupnpd.conf");
    std::fs::write(
        &conf,
        format!(
            "ext_ifname={wan}\n\
             listening_ip={lan}\n\
             port=0\n\
             enable_natpmp=no\n\
             secure_mode=yes\n\
             system_uptime=no\n\
             uuid=3f1c2a7e-0b6d-4c1e-9a55-c0ffee000001\n\
             upnp_table_name=miniupnpd\n\
             upnp_nat_table_name=miniupnpd\n\
             upnp_forward_chain=miniupnpd\n\
             upnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             allow 1024-65535 10.231.1.0/24 1024-65535\n\
             deny 0-65535 0.0.0.0/0 0-65535\n",
            wan = h.wan_if,
            lan = h.lan_if,
        ),
    )?;
    let log = dir.join("miniupnpd.log");
    procs.0.push(spawn_in(
        &h.router,
        Path::new(MINIUPNPD),
        &[
            "-d",
            "-f",
            path_str(&conf)?,
            "-P",
            path_str(&dir.join("miniupnpd.pid"))?,
        ],
        &[],
        &log,
    )?);
    wait_for(Duration::from_secs(10), "miniupnpd to serve HTTP", || {
        let text = std::fs::read_to_string(&log).ok()?;
        text.contains("HTTP listening on port").then_some(())
    })
    .with_context(|| std::fs::read_to_string(&log).unwrap_or_default())
}

fn cpns(ns: &str, dir: &Path, args: &[&str]) -> Result<Value> {
    let mut all = vec!["--data-dir", path_str(dir)?, "--json"];
    all.extend_from_slice(args);
    let out = output_in(ns, &util::bin("cpns"), &all)?;
    serde_json::from_str(&out).with_context(|| format!("cpns {args:?}: {out}"))
}

fn logs(dir: &Path) -> String {
    ["miniupnpd", "auth", "home", "public"]
        .iter()
        .map(|n| {
            let text = std::fs::read_to_string(dir.join(format!("{n}.log"))).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(40).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            format!("--- {n}.log (last lines)\n{}\n", tail.join("\n"))
        })
        .collect()
}

/// The packets the router let in through a DNAT (port-mapping) rule so far.
fn forwarded_in(router: &str) -> Result<u64> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", router, "nft", "list", "chain", "ip", "home", "wan_in",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find(|l| l.contains("ct status dnat"))
        .with_context(|| format!("no DNAT rule in {text}"))?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words
        .iter()
        .position(|w| *w == "packets")
        .context("no counter")?;
    Ok(words.get(at + 1).context("count")?.parse()?)
}

/// A device behind a router with a real UPnP IGD maps its port, reports the mapped address,
/// and a device on the public segment reaches it there directly: no relay exists.
#[test]
fn a_device_behind_a_upnp_router_maps_its_port_and_is_dialed_there() -> Result<()> {
    if let Some(why) = upnp_unavailable() {
        eprintln!("skipping the UPnP network-namespace test: {why}");
        return Ok(());
    }
    let tag = format!("{}", std::process::id() % 10_000);
    let h = home(&tag)?;
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let mut procs = Procs::default();
    start_igd(&h, d, &mut procs).with_context(|| logs(d))?;

    let auth_dir = d.join("auth");
    procs.0.push(spawn_in(
        &h.public,
        &util::bin("cpns-auth"),
        &[
            "serve",
            "--data-dir",
            path_str(&auth_dir)?,
            "--listen",
            &format!("/ip4/{PUBLIC}/tcp/0"),
        ],
        &[],
        &d.join("auth.log"),
    )?);
    wait_for(
        Duration::from_secs(20),
        "cpns-auth's admin endpoint",
        || auth_dir.join("admin.json").exists().then_some(()),
    )?;
    let auth = |args: &[&str]| -> Result<String> {
        let mut all = vec!["--data-dir", path_str(&auth_dir)?];
        all.extend_from_slice(args);
        output_in(&h.public, &util::bin("cpns-auth"), &all)
    };
    auth(&["users", "create", "alice"])?;
    let enrol_code = || -> Result<String> {
        let v: Value =
            serde_json::from_str(&auth(&["enrol", "create", "--user", "alice", "--json"])?)?;
        Ok(v["code"].as_str().context("enrolment code")?.to_owned())
    };

    // The home device: UPnP switched on in its config file (mDNS off: no multicast but the
    // IGD search, and that one only on the home LAN).
    let config = d.join("home.toml");
    std::fs::write(
        &config,
        format!(
            "listen = [\"/ip4/{HOME}/tcp/0\", \"/ip4/{HOME}/udp/0/quic-v1\"]\n\
             mdns = false\n\
             mode = \"gateway\"\n\
             \n\
             [nat]\n\
             upnp = \"on\"\n"
        ),
    )?;
    let env = [
        ("CPNS_STATUS_HEARTBEAT_SECS", "2"),
        ("CPNS_LOG", "info,cpns_overlay=debug,libp2p_upnp=debug"),
    ];
    let home_dir = d.join("home");
    let code = enrol_code()?;
    procs.0.push(spawn_in(
        &h.host,
        &util::bin("cpns-node"),
        &[
            "--config",
            path_str(&config)?,
            "--data-dir",
            path_str(&home_dir)?,
            "--device-name",
            "home",
            "--code",
            &code,
        ],
        &env,
        &d.join("home.log"),
    )?);

    // It maps its TCP port (external port = internal port) and says so.
    let (tcp_port, nat) = wait_for(
        Duration::from_secs(60),
        "the home device to map its port by UPnP",
        || {
            let s = status(&h.host, &home_dir)?;
            let port = s["listen_addrs"]
                .as_array()?
                .iter()
                .filter_map(Value::as_str)
                .find_map(|a| a.strip_prefix(&format!("/ip4/{HOME}/tcp/")))?
                .split('/')
                .next()?
                .to_owned();
            let mapped = format!("/ip4/{ROUTER_WAN}/tcp/{port}");
            let nat = &s["nat"];
            (nat["upnp"] == "mapped"
                && nat["reachability"] == "public"
                && nat["public_addrs"]
                    .as_array()?
                    .iter()
                    .any(|a| a.as_str() == Some(mapped.as_str())))
            .then(|| (port, nat.clone()))
        },
    )
    .with_context(|| logs(d))?;
    eprintln!("UPnP: mapped TCP port {tcp_port}: {nat}");
    ensure!(
        nat["relayed_addrs"] == serde_json::json!([]),
        "no relay slot (there is no relay): {nat}"
    );
    let rules = Command::new("ip")
        .args([
            "netns",
            "exec",
            &h.router,
            "nft",
            "list",
            "table",
            "inet",
            "miniupnpd",
        ])
        .output()?;
    let rules = String::from_utf8_lossy(&rules.stdout).into_owned();
    ensure!(
        rules.contains(&format!("dnat ip to {HOME}:{tcp_port}")),
        "the router maps the port: {rules}"
    );
    let before = forwarded_in(&h.router)?;

    // The public device pairs by the home device's pairing code: the code carries the mapped
    // address, the router lets that connection in.
    let public_dir = d.join("public");
    let code = enrol_code()?;
    procs.0.push(spawn_in(
        &h.public,
        &util::bin("cpns-node"),
        &[
            "--data-dir",
            path_str(&public_dir)?,
            "--listen",
            &format!("/ip4/{PUBLIC}/tcp/0"),
            "--mdns",
            "off",
            "--upnp",
            "off",
            "--mode",
            "pne",
            "--device-name",
            "public",
            "--code",
            &code,
        ],
        &env,
        &d.join("public.log"),
    )?);
    let home_id = status(&h.host, &home_dir)
        .and_then(|s| s["peer_id"].as_str().map(str::to_owned))
        .context("home peer id")?;
    wait_for(
        Duration::from_secs(30),
        "the public device to enrol",
        || (status(&h.public, &public_dir)?["enrolled"] == true).then_some(()),
    )
    .with_context(|| logs(d))?;
    let pairing = cpns(&h.host, &home_dir, &["pairing-code"])?;
    let pairing = pairing["code"].as_str().context("pairing code")?.to_owned();
    cpns(&h.public, &public_dir, &["pair", &pairing])
        .with_context(|| format!("cpns pair at the mapped address\n{}", logs(d)))?;
    wait_for(Duration::from_secs(60), "the PN to form", || {
        let a = status(&h.host, &home_dir)?;
        let b = status(&h.public, &public_dir)?;
        (a["pn_id"].is_string()
            && a["pn_id"] == b["pn_id"]
            && b["gateway"] == home_id.as_str()
            && a["members"].as_array()?.len() == 2)
            .then_some(())
    })
    .with_context(|| logs(d))?;

    let peers = cpns(&h.public, &public_dir, &["peers"])?;
    let list = peers
        .as_array()
        .or_else(|| peers["peers"].as_array())
        .context("peers")?;
    let to_home = list
        .iter()
        .find(|p| p["peer_id"] == home_id.as_str())
        .with_context(|| format!("the public device is connected to home: {peers}"))?;
    ensure!(
        to_home["path"] == "direct"
            && to_home["outbound"] == true
            && to_home["address"]
                .as_str()
                .is_some_and(|a| a.starts_with(&format!("/ip4/{ROUTER_WAN}/"))),
        "the public device dialed the mapped address directly: {to_home}"
    );
    let ping = cpns(&h.public, &public_dir, &["ping", &home_id])?;
    ensure!(ping["path"] == "direct", "cpns ping: {ping}");
    let after = forwarded_in(&h.router)?;
    ensure!(
        after > before,
        "the router let the connection in through its port mapping ({before} -> {after} packets)"
    );
    drop(procs);
    Ok(())
}
