//! Usage: `cargo run --release --example delivery_bench [-- --mib M --runs N]`
//!
//! Benchmark of encrypted content delivery between two nodes of one PN on loopback (5.6.7,
//! G.1 step 7): a PNE publishes an M MiB file (default 256) as a PN service; another member
//! invokes it and receives it sealed chunk by chunk under the PN key (XChaCha20-Poly1305),
//! N times in pull mode and N times in push mode (default 5). Prints throughput p50/p90/p99
//! in MB/s, next to the one-core AEAD rate measured here with the same key and chunk size.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cpns_directory::ServiceDraft;
use cpns_node::{Config, ModeSetting, Node};
use cpns_overlay::DeliveryMode;

struct Args {
    mib: usize,
    runs: usize,
}

fn parse() -> Result<Args> {
    let mut a = Args { mib: 256, runs: 5 };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--mib" => a.mib = it.next().context("--mib N")?.parse()?,
            "--runs" => a.runs = it.next().context("--runs N")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !(1..=4096).contains(&a.mib) || !(1..=100).contains(&a.runs) {
        bail!("--mib 1..4096, --runs 1..100");
    }
    Ok(a)
}

fn config(dir: &std::path::Path, name: &str, mode: ModeSetting) -> Config {
    Config {
        data_dir: dir.join(name),
        device_name: name.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        auto_pair: false,
        mode,
        log: "error".into(),
        ..Config::default()
    }
}

fn stats(label: &str, bytes: usize, mut secs: Vec<f64>) {
    secs.sort_by(|a, b| a.total_cmp(b));
    let p = |q: f64| secs[((secs.len() as f64 - 1.0) * q).round() as usize];
    let rate = |t: f64| bytes as f64 / t / 1e6;
    println!(
        "  {label}: transfer p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms  -> {:.0} MB/s at p50 ({:.0} MB/s best, {:.0} MB/s worst)",
        p(0.5) * 1e3,
        p(0.9) * 1e3,
        p(0.99) * 1e3,
        rate(p(0.5)),
        rate(secs[0]),
        rate(secs[secs.len() - 1])
    );
}

/// The one-core AEAD rate with the same primitive and chunk size as delivery.
fn aead_rate(bytes: usize) -> f64 {
    let key = cpns_keys::GroupKey::generate(cpns_keys::GroupId("bench".into()), 1);
    let sender = cpns_keys::Identity::generate().peer_id();
    let chunk = vec![7u8; 256 * 1024];
    let n = bytes / chunk.len();
    let t = Instant::now();
    let mut sink = 0usize;
    for i in 0..n {
        sink += key
            .seal_chunk(&sender, 1, i as u64, i + 1 == n, &chunk)
            .len();
    }
    let secs = t.elapsed().as_secs_f64();
    std::hint::black_box(sink);
    (n * chunk.len()) as f64 / secs / 1e6
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse()?;
    let dir = tempfile::tempdir()?;
    let auth =
        cpns_auth::Server::start(cpns_auth::Config::with_data_dir(dir.path().join("auth"))).await?;
    let admin = auth.admin();
    admin.create_user("bench").await?;
    let mut nodes = Vec::new();
    for (name, mode) in [
        ("gateway", ModeSetting::Gateway),
        ("offerer", ModeSetting::Auto),
        ("consumer", ModeSetting::Auto),
    ] {
        let node = Node::start(config(dir.path(), name, mode)).await?;
        let code = admin
            .create_code(
                "bench",
                cpns_keys::Modes::ALL,
                Duration::from_secs(600),
                false,
            )
            .await?;
        node.handle().up(&code).await?;
        nodes.push(node);
    }
    nodes[0]
        .handle()
        .wait_for_pn(Duration::from_secs(20))
        .await
        .context("gateway PN")?;
    let gw_addr = nodes[0].dial_addrs().await.remove(0);
    for node in &nodes[1..] {
        node.handle().pair(gw_addr.clone()).await?;
        node.handle()
            .wait_until(Duration::from_secs(20), |s| s.pn_id.is_some())
            .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while nodes
        .iter()
        .any(|n| n.handle().pn_epoch() != nodes[0].handle().pn_epoch())
    {
        if Instant::now() > deadline {
            bail!("members did not converge on one key epoch");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let bytes = args.mib * 1024 * 1024;
    let file = dir.path().join("content.bin");
    let data: Vec<u8> = (0..bytes)
        .map(|i| (i as u32).wrapping_mul(2654435761).to_be_bytes()[0])
        .collect();
    std::fs::write(&file, &data)?;
    drop(data);
    let vis = nodes[1].handle().default_visibility();
    let desc = nodes[1]
        .handle()
        .publish(
            ServiceDraft::new("bench content", ["bench"], vis),
            Some(file),
        )
        .await?;
    let consumer = nodes[2].handle();
    println!(
        "encrypted content delivery, {} MiB, sealed under the PN key, 2 nodes on loopback",
        args.mib
    );
    for (label, mode) in [("pull", DeliveryMode::Pull), ("push", DeliveryMode::Push)] {
        let mut secs = Vec::new();
        let cpu0 = common::cpu_secs();
        let wall0 = Instant::now();
        for _ in 0..args.runs {
            let t = Instant::now();
            let out = consumer.fetch(&desc.id, mode).await?;
            if out.bytes != bytes as u64 {
                bail!("delivered {} of {bytes} bytes", out.bytes);
            }
            secs.push(t.elapsed().as_secs_f64());
            let _ = std::fs::remove_file(&out.path);
        }
        let (cpu, wall) = (common::cpu_secs() - cpu0, wall0.elapsed().as_secs_f64());
        stats(label, bytes, secs);
        println!(
            "        both nodes in this process used {:.0} % CPU (of 200 % on 2 cores), {:.2} CPU-ns per byte",
            100.0 * cpu / wall,
            cpu * 1e9 / (bytes as f64 * args.runs as f64)
        );
    }
    let aead = aead_rate(256 * 1024 * 1024);
    println!("  one-core seal_chunk rate here: {aead:.0} MB/s (sealing only)");
    for node in nodes {
        node.shutdown().await;
    }
    auth.shutdown().await;
    Ok(())
}
