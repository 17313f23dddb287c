//! Usage: `cargo run --release --example local_mesh [-- --nodes N]`
//!
//! The main demo. In one process, on 127.0.0.1 only (mDNS off): a `cpns-auth` server and N
//! CPNS nodes (default 8). A user is created, every node enrolled with its own one-time code,
//! the first node pairs with the second and they elect a gateway (B.1 steps 1-26), the others
//! join the PN, and then the typical flow of Appendix G.1 runs: a node publishes a content
//! service (step 0), another discovers it by keyword (4), invokes it with its capabilities
//! (5-6), receives the content sealed under the PN key (7), reports usage through the gateway
//! to `cpns-auth` (8), and leaves the PN (9). It prints what happened and the gateway's trace
//! as a Mermaid sequence diagram.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cpns_directory::{Query, ServiceDraft};
use cpns_node::{Config, ModeSetting, Node};
use cpns_overlay::DeliveryMode;
use sha2::{Digest, Sha256};

fn parse_nodes() -> Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut nodes = 8;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" | "-n" => nodes = args.next().context("--nodes needs a number")?.parse()?,
            other => bail!("unknown argument {other:?} (usage: local_mesh [--nodes N])"),
        }
    }
    if !(3..=64).contains(&nodes) {
        bail!("--nodes must be between 3 and 64");
    }
    Ok(nodes)
}

fn node_config(dir: &std::path::Path, name: &str, bootstrap: Option<String>) -> Config {
    let mut c = Config {
        data_dir: dir.join(name),
        device_name: name.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        bootstrap: bootstrap.into_iter().collect(),
        mdns: false,
        auto_pair: false,
        mode: ModeSetting::Auto,
        log: "warn".into(),
        ..Config::default()
    };
    c.status.heartbeat_secs = 2;
    c.status.offline_after_secs = 6;
    c
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = parse_nodes()?;
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;

    // The authentication/authorisation server of Appendix B.3.
    let auth =
        cpns_auth::Server::start(cpns_auth::Config::with_data_dir(dir.path().join("auth"))).await?;
    let admin = auth.admin();
    admin.create_user("alice").await?;
    println!("cpns-auth {} on {:?}", auth.peer_id(), auth.listen_addrs());

    // N nodes, each enrolled with its own one-time code.
    let mut nodes: Vec<Node> = Vec::new();
    let mut boot = None;
    for i in 0..n {
        let node = Node::start(node_config(
            dir.path(),
            &format!("device-{i}"),
            boot.clone(),
        ))
        .await?;
        let code = admin
            .create_code(
                "alice",
                cpns_keys::Modes::ALL,
                Duration::from_secs(600),
                false,
            )
            .await?;
        node.handle().up(&code).await?;
        if boot.is_none() {
            boot = node.dial_addrs().await.first().map(|a| a.to_string());
        }
        nodes.push(node);
    }
    println!("{n} nodes started and enrolled in {:.0} ms", ms(started));

    // B.1: the first two devices pair and elect a gateway; the others join it.
    let t = Instant::now();
    let second = nodes[1].dial_addrs().await.remove(0);
    nodes[0].handle().pair(second).await?;
    let s0 = nodes[0]
        .handle()
        .wait_until(Duration::from_secs(20), |s| s.members.len() == 2)
        .await?;
    let gw_id = s0.gateway.clone().context("no gateway elected")?;
    let gw = nodes
        .iter()
        .position(|x| x.peer_id().to_string() == gw_id)
        .context("gateway")?;
    println!(
        "PN {} formed in {:.1} ms; the election made device-{gw} its gateway",
        s0.pn_id.clone().unwrap_or_default(),
        ms(t)
    );
    let gw_addr = nodes[gw].dial_addrs().await.remove(0);
    for (i, node) in nodes.iter().enumerate().skip(2) {
        let t = Instant::now();
        node.handle().pair(gw_addr.clone()).await?;
        node.handle()
            .wait_until(Duration::from_secs(20), |s| s.pn_id.is_some())
            .await?;
        println!("device-{i} joined in {:.1} ms", ms(t));
    }
    let gw_status = nodes[gw]
        .handle()
        .wait_until(Duration::from_secs(20), |s| s.members.len() == n)
        .await?;
    println!(
        "members: {} (key epoch {})",
        gw_status.members.len(),
        gw_status.epoch.unwrap_or(0)
    );
    // Everyone on the same key epoch before publishing under it.
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes
        .iter()
        .any(|x| x.handle().pn_epoch() != gw_status.epoch)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // G.1 step 0: a non-gateway node publishes content for the PN.
    let offerer = if gw == n - 1 { n - 2 } else { n - 1 };
    let consumer = if gw == 1 { 2 } else { 1 };
    let content: Vec<u8> = (0..2_000_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    let file = dir.path().join("holiday-photos.tar");
    std::fs::write(&file, &content)?;
    let vis = nodes[offerer].handle().default_visibility();
    let desc = nodes[offerer]
        .handle()
        .publish(
            ServiceDraft::new("Holiday photos", ["photos", "holiday"], vis),
            Some(file),
        )
        .await?;
    println!(
        "device-{offerer} published {} \"{}\" ({})",
        desc.id, desc.name, desc.visibility
    );

    // G.1 step 4: every other node finds it by keyword in the DHT.
    let mut hit = None;
    let mut finders = 0;
    for (i, node) in nodes.iter().enumerate() {
        if i == offerer {
            continue;
        }
        let found = node
            .handle()
            .find(&Query::keywords(["photos", "holiday"]))
            .await?;
        match found.services.iter().find(|f| f.description.id == desc.id) {
            Some(f) => {
                finders += 1;
                println!(
                    "device-{i} found \"{}\" in {:.2} ms: {} requests, {} peers contacted",
                    f.description.name,
                    found.figures.duration_us as f64 / 1000.0,
                    found.figures.requests,
                    found.figures.peers_contacted
                );
                if i == consumer {
                    hit = Some(f.clone());
                }
            }
            None => println!("device-{i} did not find it"),
        }
    }
    println!("{finders} of {} nodes found the service", n - 1);
    let hit = hit.context("the consumer did not find the service")?;

    // G.1 steps 5-8.
    let got = nodes[consumer]
        .handle()
        .fetch(&hit.description.id, DeliveryMode::Pull)
        .await?;
    let ok = got.sha256 == hex::encode(Sha256::digest(&content));
    println!(
        "device-{consumer} received {} bytes in {:.1} ms, sealed under the PN key; content {} ; usage {}",
        got.bytes,
        got.duration_ms,
        if ok { "identical" } else { "DIFFERENT" },
        got.usage
    );
    if !ok {
        bail!("the delivered content differs from the offered content");
    }
    let charging = admin.usage_records().await?;
    println!("cpns-auth holds {} charging record(s)", charging.len());

    // G.1 step 9.
    nodes[consumer].handle().down().await?;
    let after = nodes[gw]
        .handle()
        .wait_until(Duration::from_secs(20), |s| s.members.len() == n - 1)
        .await?;
    println!(
        "device-{consumer} left; the PN has {} members, key epoch {}",
        after.members.len(),
        after.epoch.unwrap_or(0)
    );

    // The gateway's view of B.1 and G.1.
    let handle = nodes[gw].handle();
    let events = handle.trace();
    let b1: Vec<u32> = events
        .iter()
        .filter(|e| e.flow == "B.1")
        .map(|e| e.step)
        .collect();
    println!(
        "\nthe gateway traced B.1 steps {:?} (first pairing: 1-26)",
        dedup(&b1)
    );
    let mut g1: Vec<u32> = Vec::new();
    for node in &nodes {
        g1.extend(
            node.handle()
                .trace()
                .iter()
                .filter(|e| e.flow == "G.1")
                .map(|e| e.step),
        );
    }
    g1.sort_unstable();
    g1.dedup();
    println!("G.1 steps traced across the nodes: {g1:?}");
    let first_pn: Vec<_> = events
        .into_iter()
        .filter(|e| e.flow == "B.1")
        .take(26)
        .collect();
    println!(
        "\n```mermaid\n{}```",
        cpns_node::trace::mermaid(&first_pn, &handle.trace_labels())
    );
    println!("done in {:.0} ms", ms(started));

    for node in nodes {
        node.shutdown().await;
    }
    auth.shutdown().await;
    Ok(())
}

fn dedup(v: &[u32]) -> Vec<u32> {
    let mut out: Vec<u32> = Vec::new();
    for s in v {
        if out.last() != Some(s) {
            out.push(*s);
        }
    }
    out
}
