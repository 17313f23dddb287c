//! Usage: `cargo run --release --example local_mesh [-- --nodes N]`
//!
//! Starts N overlay nodes (default 8) in one process on 127.0.0.1, lets them find each other
//! through the first one (the bootstrap node), puts one record into the Kademlia DHT from one
//! node and gets it from every other, printing what each found and how many requests its
//! query took. Everything stays on loopback; mDNS is off.

use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use cpns_keys::Identity;
use cpns_overlay::{Client, Config, Quorum, Record, RecordKey};
use tokio_util::sync::CancellationToken;

fn parse_nodes() -> Result<usize> {
    let mut args = std::env::args().skip(1);
    let mut nodes = 8;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--nodes" | "-n" => {
                nodes = args.next().context("--nodes needs a number")?.parse()?;
            }
            other => bail!("unknown argument {other:?} (usage: local_mesh [--nodes N])"),
        }
    }
    if !(2..=256).contains(&nodes) {
        bail!("--nodes must be between 2 and 256");
    }
    Ok(nodes)
}

#[tokio::main]
async fn main() -> Result<()> {
    let n = parse_nodes()?;
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let mut clients: Vec<Client> = Vec::with_capacity(n);
    let mut boot = None;
    for i in 0..n {
        let config = Config {
            bootstrap: boot.iter().cloned().collect(),
            gate_requests: false,
            ..Config::default()
        };
        let identity = Identity::generate();
        let (client, _events, event_loop) = cpns_overlay::new(config, &identity).await?;
        tokio::spawn(event_loop.run(cancel.clone()));
        if i == 0 {
            let addr = client.listen_addrs().await?.remove(0);
            boot = Some(addr.with(libp2p::multiaddr::Protocol::P2p(client.local_peer_id())));
            println!(
                "bootstrap node {} at {}",
                client.local_peer_id(),
                boot.as_ref().context("address")?
            );
        }
        clients.push(client);
    }
    for c in &clients[1..] {
        c.bootstrap().await.context("bootstrap")?;
    }
    for c in &clients {
        c.wait_routing_table(n - 1, Duration::from_secs(10)).await?;
    }
    println!(
        "{n} nodes up and routing in {:.0} ms",
        started.elapsed().as_secs_f64() * 1000.0
    );

    let key = RecordKey::new(&"/cpns/demo/hello");
    let value = format!("hello from {}", clients[0].local_peer_id());
    let put = clients[0]
        .put_record(
            Record::new(key.clone(), value.clone().into_bytes()),
            Quorum::One,
        )
        .await?;
    println!(
        "node 0 put {:?} ({} requests, {} stored)",
        value, put.requests, put.successes
    );

    let mut found = 0;
    for (i, c) in clients.iter().enumerate().skip(1) {
        c.remove_record(key.clone()).await?; // make the answer come over the network
        let t = Instant::now();
        match c.get_record(key.clone(), true).await {
            Ok(out) => {
                let rec = &out.records[0];
                found += 1;
                println!(
                    "node {i:>3} found {:?} from {} in {:.2} ms, {} requests",
                    String::from_utf8_lossy(&rec.record.value),
                    rec.peer
                        .map(|p| p.to_string())
                        .unwrap_or_else(|| "local store".into()),
                    t.elapsed().as_secs_f64() * 1000.0,
                    out.figures.requests
                );
            }
            Err(e) => println!("node {i:>3} did not find the record: {e}"),
        }
    }
    println!("{found} of {} nodes found the record", n - 1);
    cancel.cancel();
    if found != n - 1 {
        bail!("some nodes did not find the record");
    }
    Ok(())
}
