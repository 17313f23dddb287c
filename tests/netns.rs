//! Network-namespace tests: real LAN behaviour that loopback cannot show, on test hosts this
//! test builds itself (two namespaces joined by a veth pair). mDNS multicast stays inside the
//! pair. Needs root and `ip` (iproute2); without them each test says why and passes without
//! running (it cannot run here), so that `cargo test` works for unprivileged developers.
//!
//! * Two enrolled devices on one LAN find each other by mDNS and form a PN by themselves
//!   (5.6.5: "pairing is triggered by mDNS on the LAN"), with `cpns-auth` on the LAN too.
//! * A partition between a PNE and its gateway: the gateway marks the PNE Offline after the
//!   configured silence; when the link is back, the PNE is Online again.
//! * The gateway's Non-CPNS proxy (5.6.10) finds a real DLNA server (Debian's minidlna) by
//!   SSDP, publishes its files to the PN, a PNE fetches one through the gateway, and the device
//!   leaves when the server stops. SSDP stays inside the pair too.

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
    site_with(tag, net, &[], &[])
}

/// [`site`] with more environment for node `a` and node `b`.
fn site_with(tag: &str, net: u8, env_a: &[(&str, &str)], env_b: &[(&str, &str)]) -> Result<Site> {
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
    for (ns, host, name, extra) in [(&a, 1, "a", env_a), (&b, 2, "b", env_b)] {
        let env: Vec<(&str, &str)> = env.iter().chain(extra).copied().collect();
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

/// A WAV file of `frames` 16-bit mono samples, its bytes from a seeded generator (so each
/// file differs and a fetched copy can be compared byte for byte).
fn wav(frames: usize, seed: u64) -> Vec<u8> {
    let data_len = (frames * 2) as u32;
    let mut out = Vec::with_capacity(44 + frames * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&8000u32.to_le_bytes());
    out.extend_from_slice(&16000u32.to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    for _ in 0..frames {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.extend_from_slice(&((x >> 48) as u16).to_le_bytes());
    }
    out
}

fn cli_json(ns: &str, dir: &Path, args: &[&str]) -> Result<serde_json::Value> {
    let mut all = vec!["--data-dir", dir.to_str().context("path")?, "--json"];
    all.extend_from_slice(args);
    let out = output_in(ns, &util::bin("cpns"), &all)?;
    Ok(serde_json::from_str(&out)?)
}

/// Debian's minidlna in namespace b serving `files`, announcing itself every 10 s on the
/// namespaces' link.
fn start_minidlna(
    site: &Site,
    tag: &str,
    minidlna: &Path,
    files: &[(&str, Vec<u8>)],
) -> Result<std::process::Child> {
    let media = site.dir.path().join("media");
    let mdb = site.dir.path().join("minidlna");
    std::fs::create_dir_all(&media)?;
    std::fs::create_dir_all(&mdb)?;
    for (name, bytes) in files {
        std::fs::write(media.join(name), bytes)?;
    }
    let conf = site.dir.path().join("minidlna.conf");
    std::fs::write(
        &conf,
        format!(
            "media_dir=A,{}\ndb_dir={}\nlog_dir={}\nport=8200\nnetwork_interface=vb{tag}\n\
             friendly_name=CPNS Test DLNA\ninotify=no\nnotify_interval=10\n",
            media.display(),
            mdb.display(),
            mdb.display()
        ),
    )?;
    let conf_s = conf.to_str().context("path")?.to_string();
    let pid_s = mdb.join("pid").to_str().context("path")?.to_string();
    spawn_in(
        &site.b,
        minidlna,
        &["-f", &conf_s, "-P", &pid_s, "-S", "-R"],
        &[],
        &site.dir.path().join("minidlna.log"),
    )
}

/// Every file under `dir` (none if it does not exist).
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                found.push(p);
            }
        }
    }
    found
}

/// Debian's minidlna, if installed.
fn minidlna() -> Option<PathBuf> {
    ["/usr/sbin/minidlnad", "/usr/bin/minidlnad"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
}

/// The Non-CPNS proxy (5.6.10) against a real DLNA server: Debian's minidlna serves two WAV
/// files on the LAN (namespace b); the gateway (namespace a, proxy on) finds it by SSDP,
/// registers it as a proxied device with the CPNS functions of a MediaServer, and publishes
/// its items to the PN without downloading them (nothing under its `DATA_DIR/proxy/`); the PNE
/// finds them and fetches one through the gateway, which streams it from the server at that
/// moment (a file changed on the server after publication comes with its new bytes), byte
/// for byte, and refuses one whose size changed since publication, saying so; when the server
/// stops, the device and its services leave.
#[test]
fn proxy_publishes_a_real_dlna_servers_files_to_the_pn_and_withdraws_them() -> Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("skipping the Non-CPNS proxy test: {why}");
        return Ok(());
    }
    let Some(minidlna) = minidlna() else {
        eprintln!(
            "skipping the Non-CPNS proxy test: minidlna is not installed (apt-get install minidlna)"
        );
        return Ok(());
    };
    // Its own prefix: the other tests' tags are bare numbers from their own process ids,
    // which nextest runs side by side (two neighbouring pids once collided).
    let tag = format!("p{}", std::process::id() % 10_000);
    let t0 = Instant::now();
    let mut site = site_with(
        &tag,
        78,
        &[
            ("CPNS_MODE", "gateway"),
            ("CPNS_PROXY_ENABLED", "true"),
            ("CPNS_PROXY_SEARCH_SECS", "2"),
            ("CPNS_PROXY_EXPOSE", "true"),
            ("CPNS_LOG", "info,cpns_node::proxy=debug"),
        ],
        &[("CPNS_MODE", "pne")],
    )?;
    // SSDP's multicast goes out on the namespaces' own link only.
    for (ns, dev) in [(&site.a, format!("va{tag}")), (&site.b, format!("vb{tag}"))] {
        run(&["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", &dev])?;
    }
    let (da, db) = (site.dir.path().join("a"), site.dir.path().join("b"));

    // The DLNA server on the LAN, in namespace b.
    let files = [
        ("tone-a.wav", wav(12_000, 1)),
        ("tone-b.wav", wav(30_000, 2)),
    ];
    let server = start_minidlna(&site, &tag, &minidlna, &files)?;
    site.procs.0.push(server);
    let server_index = site.procs.0.len() - 1;
    // A MediaRenderer too, where Debian's gmediarender (with GStreamer's base plugins) is here.
    let renderer = PathBuf::from("/usr/bin/gmediarender");
    let plugins = Path::new("/usr/lib/x86_64-linux-gnu/gstreamer-1.0");
    let with_renderer = renderer.exists() && plugins.join("libgstplayback.so").exists();
    // Playing through the gateway needs the player's HTTP source and WAV parser (GStreamer's
    // good plugins); without them the renderer is only registered.
    let can_play = with_renderer
        && plugins.join("libgstsoup.so").exists()
        && plugins.join("libgstwavparse.so").exists();
    if with_renderer && !can_play {
        eprintln!(
            "no playing part: GStreamer's good plugins are not installed \
             (apt-get install gstreamer1.0-plugins-good)"
        );
    }
    if with_renderer {
        let dev = format!("vb{tag}");
        site.procs.0.push(spawn_in(
            &site.b,
            &renderer,
            &[
                "-I",
                &dev,
                "-f",
                "CPNS Test Renderer",
                "-u",
                "cpns-test-renderer",
                "-p",
                "49494",
                "--gstout-audiosink=fakesink",
                "--gstout-videosink=fakesink",
            ],
            &[],
            &site.dir.path().join("gmediarender.log"),
        )?);
    } else {
        eprintln!(
            "no renderer part: gmediarender or GStreamer's playbin is not installed \
             (apt-get install gmediarender gstreamer1.0-plugins-base)"
        );
    }

    wait_for(Duration::from_secs(90), "the PN to form", || {
        let sa = status(&site.a, &da)?;
        let sb = status(&site.b, &db)?;
        (sa["pn_id"].is_string()
            && sa["pn_id"] == sb["pn_id"]
            && sa["gateway"] == sa["peer_id"]
            && sa["members"].as_array()?.len() == 2)
            .then_some(())
    })
    .with_context(|| logs(site.dir.path()))?;
    eprintln!("PN formed after {:?}", t0.elapsed());

    // Registration, functions, publication at the gateway.
    let device = wait_for(
        Duration::from_secs(90),
        "the gateway to register the DLNA server and publish its files",
        || {
            let list = cli_json(&site.a, &da, &["proxy", "devices"]).ok()?;
            list.as_array()?
                .iter()
                .find(|d| {
                    d["name"] == "CPNS Test DLNA"
                        && d["services"].as_array().is_some_and(|s| s.len() == 2)
                })
                .cloned()
        },
    )
    .with_context(|| logs(site.dir.path()))?;
    eprintln!("device registered, 2 services, after {:?}", t0.elapsed());
    let functions = device["functions"].as_array().context("functions")?;
    ensure!(
        functions.iter().any(|f| f == "content-delivery"),
        "a MediaServer delivers content: {device}"
    );
    ensure!(
        device["device_type"]
            .as_str()
            .is_some_and(|t| t.contains("MediaServer")),
        "{device}"
    );
    let mut renderer_id = None;
    if with_renderer {
        let r = wait_for(
            Duration::from_secs(30),
            "the renderer's registration",
            || {
                let list = cli_json(&site.a, &da, &["proxy", "devices"]).ok()?;
                list.as_array()?
                    .iter()
                    .find(|d| d["name"] == "CPNS Test Renderer")
                    .cloned()
            },
        )
        .with_context(|| logs(site.dir.path()))?;
        ensure!(
            r["functions"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "rendering")),
            "a MediaRenderer renders: {r}"
        );
        ensure!(
            r["services"].as_array().is_some_and(Vec::is_empty),
            "a renderer publishes nothing: {r}"
        );
        eprintln!("renderer registered after {:?}", t0.elapsed());
        if can_play {
            renderer_id = r["id"].as_str().map(str::to_string);
        }
    }
    let id = device["id"].as_str().context("id")?;
    let shown = cli_json(&site.a, &da, &["proxy", "show", id])?;
    ensure!(shown["udn"] == device["udn"], "show {id}: {shown}");
    // A proxied PNE of the PN: in the gateway's status and in the PN Inventory a member reads
    // (through its gateway).
    let gw_status = cli_json(&site.a, &da, &["status"])?;
    ensure!(
        gw_status["proxied"]
            .as_array()
            .is_some_and(|l| l.iter().any(|d| d["id"] == id)),
        "the gateway's status lists the proxied device: {gw_status}"
    );
    let inventory = cli_json(&site.b, &db, &["pn", "inventory"])?;
    let listed = inventory["proxied"]
        .as_array()
        .and_then(|l| l.iter().find(|d| d["id"] == id).cloned())
        .with_context(|| format!("the member's PN Inventory lacks {id}: {inventory}"))?;
    ensure!(
        listed["gateway"] == gw_status["peer_id"]
            && listed["functions"]
                .as_array()
                .is_some_and(|f| f.iter().any(|f| f == "content-delivery")),
        "{listed}"
    );

    // On demand: publication downloaded nothing (the gateway keeps no copy of the items).
    let kept: Vec<PathBuf> = walk(&da.join("proxy"));
    ensure!(
        kept.is_empty(),
        "the gateway keeps no copy of the proxied items: {kept:?}"
    );
    // The server's file changes after publication (same size): the fetch brings it as it is
    // now, which a copy taken at publication would not.
    let changed = wav(30_000, 9);
    ensure!(changed.len() == files[1].1.len() && changed != files[1].1);
    std::fs::write(site.dir.path().join("media").join(files[1].0), &changed)?;
    let want = (files[1].0, changed);

    // Another PN member finds the items and fetches one through the gateway.
    let found = wait_for(Duration::from_secs(30), "the PNE to find the item", || {
        let v = cli_json(&site.b, &db, &["services", "find", "dlna", "proxied"]).ok()?;
        v["services"]
            .as_array()?
            .iter()
            .find(|s| s["description"]["name"] == "tone-b")
            .cloned()
    })
    .with_context(|| logs(site.dir.path()))?;
    let service_id = found["description"]["id"].as_str().context("service id")?;
    let fetched = cli_json(&site.b, &db, &["content", "fetch", service_id])
        .with_context(|| logs(site.dir.path()))?;
    let path = fetched["path"].as_str().context("fetched path")?;
    let got = std::fs::read(path)?;
    ensure!(
        got.len() == want.1.len(),
        "size {} != {}",
        got.len(),
        want.1.len()
    );
    ensure!(
        got == want.1,
        "the fetched file is byte-identical to the server's"
    );
    eprintln!("fetched {} bytes after {:?}", got.len(), t0.elapsed());
    // A file whose size changed on the server since publication: the device no longer sends
    // the published length, and the delivery fails rather than deliver other bytes.
    std::fs::write(
        site.dir.path().join("media").join(files[0].0),
        wav(12_500, 1),
    )?;
    let other = cli_json(&site.b, &db, &["services", "find", "dlna", "proxied"])?;
    let other_id = other["services"]
        .as_array()
        .and_then(|l| l.iter().find(|s| s["description"]["name"] == "tone-a"))
        .and_then(|s| s["description"]["id"].as_str())
        .with_context(|| format!("tone-a not found: {other}"))?
        .to_string();
    let refused = cli_json(&site.b, &db, &["content", "fetch", &other_id]);
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| format!("{e:#}").contains("changed since it was published")),
        "a resized item is refused, saying why: {refused:?}"
    );
    eprintln!(
        "the resized item's fetch failed: {:#}",
        refused.err().context("err")?
    );

    // The PNE plays its own PN service on the renderer, through the gateway (AVTransport
    // SetAVTransportURI then Play): the gateway's owner allowed it (proxy.expose), and the
    // renderer reads the whole file from the gateway.
    if let Some(rid) = &renderer_id {
        let song = site.dir.path().join("song.wav");
        let song_bytes = wav(20_000, 3);
        std::fs::write(&song, &song_bytes)?;
        let published = cli_json(
            &site.b,
            &db,
            &[
                "services",
                "publish",
                "--name",
                "song",
                "-k",
                "music",
                "--file",
                song.to_str().context("path")?,
            ],
        )?;
        let song_id = published["id"]
            .as_str()
            .with_context(|| format!("no id: {published}"))?
            .to_string();
        let played = cli_json(&site.b, &db, &["proxy", "play", rid, &song_id])
            .with_context(|| logs(site.dir.path()))?;
        eprintln!("played after {:?}: {played}", t0.elapsed());
        ensure!(
            played["state"] == "PLAYING" || played["state"] == "TRANSITIONING",
            "the renderer plays: {played}"
        );
        ensure!(
            played["url"]
                .as_str()
                .is_some_and(|u| u.starts_with("http://10.231.78.1:")),
            "served on the gateway's LAN address: {played}"
        );
        wait_for(
            Duration::from_secs(30),
            "the renderer to read the song from the gateway",
            || {
                let d = cli_json(&site.a, &da, &["proxy", "show", rid]).ok()?;
                (d["playing"]["served_bytes"].as_u64()? >= song_bytes.len() as u64
                    && d["playing"]["service_id"] == song_id.as_str())
                .then_some(())
            },
        )
        .with_context(|| logs(site.dir.path()))?;
        eprintln!("the renderer read the song after {:?}", t0.elapsed());
    }

    // The server stops: the device leaves the proxy and its services are withdrawn.
    let mut server = site.procs.0.remove(server_index);
    let _ = server.kill();
    let _ = server.wait();
    wait_for(Duration::from_secs(40), "the device to leave", || {
        let list = cli_json(&site.a, &da, &["proxy", "devices"]).ok()?;
        (!list.as_array()?.iter().any(|d| d["udn"] == device["udn"])).then_some(())
    })
    .with_context(|| logs(site.dir.path()))?;
    let own = cli_json(&site.a, &da, &["services", "list"])?;
    ensure!(
        own.as_array()
            .context("list")?
            .iter()
            .all(|s| s["name"] != "tone-a" && s["name"] != "tone-b"),
        "the proxied services are unpublished: {own}"
    );
    let trace = cli_json(&site.a, &da, &["trace", "--flow", "5.6.10"])?;
    let steps: Vec<u64> = trace
        .as_array()
        .context("trace")?
        .iter()
        .filter_map(|e| e["step"].as_u64())
        .collect();
    let last = if renderer_id.is_some() { 6 } else { 4 };
    for step in (1..=last).chain([7]) {
        ensure!(
            steps.contains(&step),
            "step {step} of 5.6.10 traced: {steps:?}"
        );
    }
    eprintln!("device withdrawn after {:?}", t0.elapsed());
    drop(site.procs);
    Ok(())
}

/// SSDP announcements (`proxy/notify.rs`): with searches 10 minutes apart (one at start,
/// before the server runs), the gateway registers minidlna only because it says `ssdp:alive`
/// when it starts, and lets it go only because it says `ssdp:byebye` when it stops (SIGTERM),
/// long before two search periods.
#[test]
fn proxy_registers_a_device_on_ssdp_alive_and_lets_it_go_on_byebye() -> Result<()> {
    if let Some(why) = unavailable() {
        eprintln!("skipping the SSDP announcement test: {why}");
        return Ok(());
    }
    let Some(minidlna) = minidlna() else {
        eprintln!(
            "skipping the SSDP announcement test: minidlna is not installed (apt-get install minidlna)"
        );
        return Ok(());
    };
    let tag = format!("s{}", std::process::id() % 10_000);
    let mut site = site_with(
        &tag,
        79,
        &[
            ("CPNS_MODE", "gateway"),
            ("CPNS_PROXY_ENABLED", "true"),
            ("CPNS_PROXY_SEARCH_SECS", "600"),
            ("CPNS_LOG", "info,cpns_node::proxy=debug"),
        ],
        &[("CPNS_MODE", "pne")],
    )?;
    for (ns, dev) in [(&site.a, format!("va{tag}")), (&site.b, format!("vb{tag}"))] {
        run(&["ip", "-n", ns, "route", "add", "224.0.0.0/4", "dev", &dev])?;
    }
    let da = site.dir.path().join("a");
    // The gateway's first search is over before the server starts: wait until it is
    // listening and has searched once (the next search is 10 minutes away).
    wait_for(Duration::from_secs(60), "the proxy's first search", || {
        let log = std::fs::read_to_string(site.dir.path().join("a.log")).ok()?;
        (log.contains("listening for SSDP announcements") && log.contains("SSDP search round done"))
            .then_some(())
    })
    .with_context(|| logs(site.dir.path()))?;
    ensure!(
        cli_json(&site.a, &da, &["proxy", "devices"])?
            .as_array()
            .is_some_and(Vec::is_empty),
        "no device before the server runs"
    );
    let t0 = Instant::now();
    let server = start_minidlna(&site, &tag, &minidlna, &[("tone.wav", wav(4_000, 3))])?;
    site.procs.0.push(server);
    let server_index = site.procs.0.len() - 1;
    let device = wait_for(
        Duration::from_secs(60),
        "registration on ssdp:alive",
        || {
            let list = cli_json(&site.a, &da, &["proxy", "devices"]).ok()?;
            list.as_array()?
                .iter()
                .find(|d| d["name"] == "CPNS Test DLNA")
                .cloned()
        },
    )
    .with_context(|| logs(site.dir.path()))?;
    eprintln!("registered {:?} after the server started", t0.elapsed());

    // SIGTERM: minidlna says goodbye on its way out.
    let mut server = site.procs.0.remove(server_index);
    let pid = nix::unistd::Pid::from_raw(server.id().cast_signed());
    let termed = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if termed.is_err() {
        let _ = server.kill();
    }
    let _ = server.wait();
    termed?;
    let t1 = Instant::now();
    wait_for(
        Duration::from_secs(30),
        "de-registration on ssdp:byebye",
        || {
            let list = cli_json(&site.a, &da, &["proxy", "devices"]).ok()?;
            (!list.as_array()?.iter().any(|d| d["udn"] == device["udn"])).then_some(())
        },
    )
    .with_context(|| logs(site.dir.path()))?;
    eprintln!("de-registered {:?} after SIGTERM", t1.elapsed());
    let trace = cli_json(&site.a, &da, &["trace", "--flow", "5.6.10"])?;
    ensure!(
        trace
            .as_array()
            .context("trace")?
            .iter()
            .any(|e| e["step"] == 4
                && e["detail"]
                    .as_str()
                    .is_some_and(|d| d.contains("ssdp:byebye"))),
        "step 4 says why: {trace}"
    );
    Ok(())
}
