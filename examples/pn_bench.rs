//! Usage: `cargo run --release --example pn_bench [-- --runs N]`
//!
//! Benchmark of PN establishment, the change request's B.1 steps 1-26, end to end on
//! loopback: for each run, two fresh enrolled nodes (auto mode, neither a gateway) pair; the
//! clock runs from the pairing request (step 1) until both nodes report the PN with both
//! members (the PNE has step 26, the gateway its inventory entry), through the election, the gateway's authentication with
//! `cpns-auth`, the PN Inventory's creation, the membership decision and the key delivery —
//! every durable write included. Prints p50/p90/p99, min/max and throughput, and beside them
//! the yardstick measured in the same run (one CPNS request round trip between two overlay
//! nodes on loopback) with the ratio. Bounded: at most N runs (default 50), each with a 20 s
//! limit.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cpns_node::{Config, ModeSetting, Node};

fn parse_runs() -> Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut runs = 50;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--runs" => runs = args.next().context("--runs needs a number")?.parse()?,
            "--bench" => {}
            other => bail!("unknown argument {other:?} (usage: pn_bench [--runs N])"),
        }
    }
    if !(1..=10_000).contains(&runs) {
        bail!("--runs must be between 1 and 10000");
    }
    Ok(runs)
}

fn config(dir: &std::path::Path, name: &str) -> Config {
    Config {
        data_dir: dir.join(name),
        device_name: name.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        auto_pair: false,
        mode: ModeSetting::Auto,
        log: "error".into(),
        ..Config::default()
    }
}

/// The yardstick, measured in this run: one CPNS request round trip between two overlay
/// nodes on loopback (TCP, noise, yamux, the codec), p50 in milliseconds over `n` requests on
/// one connection. B.1 is a chain of such exchanges (with cpns-auth and between the nodes),
/// so establishment p50 divided by it says how many round trips' worth the flow costs.
async fn request_rtt_ms(n: usize) -> Result<f64> {
    use cpns_overlay::test_utils::TestNode;
    use cpns_overlay::{DirectoryMessage, Event, Message, Protocol};
    let cfg = || cpns_overlay::Config {
        gate_requests: false,
        ..cpns_overlay::Config::default()
    };
    let a = TestNode::spawn(cfg(), 0xa1).await?;
    let mut b = TestNode::spawn(cfg(), 0xb2).await?;
    let b_peer = b.client.local_peer_id();
    let b_client = b.client.clone();
    let mut events = std::mem::replace(&mut b.events, tokio::sync::mpsc::channel(1).1);
    let answer = tokio::spawn(async move {
        while let Some(e) = events.recv().await {
            if let Event::InboundRequest { channel, .. } = e {
                let records = Vec::new();
                let _ = b_client
                    .respond(
                        channel,
                        Message::Directory(DirectoryMessage::Records { records }),
                    )
                    .await;
            }
        }
    });
    a.client.dial(b.dial_addr().await?).await?;
    let ask = || {
        a.client.request(
            b_peer,
            Protocol::Cpns,
            Message::Directory(DirectoryMessage::Lookup {
                keyword: vec![1; 32],
            }),
        )
    };
    for _ in 0..20 {
        ask().await?;
    }
    let mut ms = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        ask().await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    answer.abort();
    a.shutdown().await;
    b.shutdown().await;
    ms.sort_by(|x, y| x.total_cmp(y));
    Ok(percentile(&ms, 0.5))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() -> Result<()> {
    let runs = parse_runs()?;
    let rtt_before = request_rtt_ms(500).await?;
    let dir = tempfile::tempdir()?;
    let auth = {
        // Every run enrols two fresh nodes: more than the default 60 enrolments a minute.
        let mut config = cpns_auth::Config::with_data_dir(dir.path().join("auth"));
        config.enrol_attempts_global_per_minute = 100_000;
        config.enrol_attempts_per_minute = 100_000;
        cpns_auth::Server::start(config)
    }
    .await?;
    let admin = auth.admin();
    admin.create_user("bench").await?;
    let mut times = Vec::with_capacity(runs);
    let started = Instant::now();
    for run in 0..runs {
        let mut pair = Vec::new();
        for side in ["a", "b"] {
            let node = Node::start(config(dir.path(), &format!("{run}-{side}"))).await?;
            let code = admin
                .create_code(
                    "bench",
                    cpns_keys::Modes::ALL,
                    Duration::from_secs(600),
                    false,
                )
                .await?;
            node.handle().up(&code).await?;
            pair.push(node);
        }
        let addr = pair[1].dial_addrs().await.remove(0);
        let (a, b) = (pair[0].handle(), pair[1].handle());
        let t = Instant::now();
        a.pair(addr).await?;
        // Both sides in the PN: the PNE has step 26, the gateway has admitted it.
        let limit = Duration::from_secs(20);
        let (sa, sb) = tokio::join!(
            a.wait_until(limit, |s| s.pn_id.is_some() && s.members.len() == 2),
            b.wait_until(limit, |s| s.pn_id.is_some() && s.members.len() == 2)
        );
        let elapsed = t.elapsed();
        let (sa, sb) = (sa?, sb?);
        if sa.pn_id.is_none() || sa.pn_id != sb.pn_id {
            bail!("run {run}: the PN did not form within {limit:?}");
        }
        times.push(elapsed.as_secs_f64() * 1000.0);
        for node in pair {
            node.shutdown().await;
        }
    }
    let total = started.elapsed();
    auth.shutdown().await;

    let mut sorted = times.clone();
    sorted.sort_by(|a, b| a.total_cmp(b));
    println!("PN establishment, B.1 steps 1-26, two fresh nodes on loopback, {runs} runs");
    println!(
        "  p50 {:.2} ms   p90 {:.2} ms   p99 {:.2} ms   min {:.2} ms   max {:.2} ms",
        percentile(&sorted, 0.50),
        percentile(&sorted, 0.90),
        percentile(&sorted, 0.99),
        sorted[0],
        sorted[sorted.len() - 1]
    );
    println!(
        "  {:.1} establishments per second of flow time; {:.1} s wall time including node start-up",
        runs as f64 / (times.iter().sum::<f64>() / 1000.0),
        total.as_secs_f64()
    );
    println!("  success: {runs}/{runs}");
    // Before and after, the better of the two: a machine that got busier in between shows.
    let rtt = rtt_before.min(request_rtt_ms(500).await?);
    println!(
        "  yardstick, this run: one CPNS request round trip on loopback p50 {rtt:.3} ms; \
         establishment p50 = {:.0} round trips' worth",
        percentile(&sorted, 0.50) / rtt
    );
    Ok(())
}
