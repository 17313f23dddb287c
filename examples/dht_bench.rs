//! Benchmark of the Metadata Directory on an in-process mesh (not a test).
//!
//! Usage:
//! ```text
//! cargo run --release --example dht_bench -- --nodes 64
//! cargo run --release --example dht_bench -- --nodes 256 --ops 200
//! cargo run --release --example dht_bench -- --nodes 8 --k 20 --ping-secs 15   # overlay defaults
//! ```
//!
//! Mirrors the OpenDHT yardstick of DESIGN.md: `--ops` sequential publishes of one public
//! service each (a ~200-byte description, one unique keyword) from random nodes, then a
//! discovery of each by its keyword from another random node (keyword to verified description
//! in hand), then a fetch of each by id. Prints p50/p90/p99, requests per query, success rate,
//! the process RSS and the CPU the idle mesh burns. Every loop is bounded in count and every
//! operation in time; `--max-secs` bounds the whole run.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use common::{cpu_secs, fd_limit, open_files, rss_mib};
use cpns_directory::test_utils::{Mesh, NodeOptions};
use cpns_directory::{Config, Query, ServiceDraft, Visibility};

#[derive(Parser, Debug)]
#[command(about = "Publish/discover benchmark of the CPNS Metadata Directory")]
struct Args {
    /// Nodes in the mesh.
    #[arg(long, default_value_t = 64)]
    nodes: usize,
    /// Services published (and discovered, and fetched by id).
    #[arg(long, default_value_t = 200)]
    ops: usize,
    /// Seed of the node choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Kademlia replication factor (overlay default: 20).
    #[arg(long)]
    k: Option<usize>,
    /// Kademlia parallelism (overlay default: 3).
    #[arg(long)]
    alpha: Option<usize>,
    /// Ping interval in seconds (overlay default: 15).
    #[arg(long)]
    ping_secs: Option<u64>,
    /// Seconds an idle connection is kept (overlay default: 60).
    #[arg(long)]
    idle_timeout_secs: Option<u64>,
    /// Most connections per node (overlay default: 1024). With 256 nodes in one process the
    /// file-descriptor limit (20,000 here) caps the mesh at about 70 connected peers per node.
    #[arg(long)]
    max_conns: Option<u32>,
    /// Wait for the remote's protocol confirmation before sending a request (multistream
    /// `V1`, libp2p's default) instead of the overlay's `V1Lazy`.
    #[arg(long)]
    eager_negotiation: bool,
    /// Provider answers a discovery waits for (directory default: 2).
    #[arg(long)]
    find_quorum: Option<usize>,
    /// Keep each node's sled database on disk (a temp dir) instead of tmpfs.
    #[arg(long)]
    disk: bool,
    /// Refuse direct lookups (requests gated), so discovery goes through publisher indexes.
    #[arg(long)]
    gated: bool,
    /// Seconds the idle mesh is watched for its CPU use.
    #[arg(long, default_value_t = 3)]
    idle_secs: u64,
    /// Raw overlay operations timed after the directory ones (0: none).
    #[arg(long, default_value_t = 50)]
    breakdown: usize,
    /// Runtime worker threads shared by all nodes (1: a single-threaded runtime).
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Bound of the mesh's settling (one bootstrap per node, then routing tables filled).
    #[arg(long, default_value_t = 60)]
    settle_secs: u64,
    /// Bound of the whole run, in seconds. Below the 900 s that side_by_side.sh gives a run;
    /// 300 s (the old default) cut the operations short at 256 nodes on a loaded machine,
    /// whose mesh took 250 s to come up.
    #[arg(long, default_value_t = 840)]
    max_secs: u64,
    /// Transport: `tcp` (TCP + noise + yamux), `quic` (`/udp/0/quic-v1`), or `auto`: TCP
    /// when a full mesh of connections fits the file-descriptor limit, QUIC otherwise (one UDP
    /// socket per node whatever its connections, so they are all kept; over TCP they would
    /// have to close after 2 s idle and nearly every request would pay a new handshake).
    /// Default `tcp`: at 256 nodes on a loaded machine QUIC was slower still (publish p50
    /// 0.86 s with 16 % timed out, against 0.70 s over TCP; docs/BENCHMARKS.md).
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Also write the figures to this file as JSON (p50/p90/p99 in ms, success in %, RSS in
    /// MiB, requests per query, the CPU figures), for scripts comparing runs.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum Transport {
    Auto,
    Tcp,
    Quic,
}

/// Bound of one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[derive(Default)]
struct Series {
    micros: Vec<u64>,
    requests: Vec<u64>,
    peers: Vec<u64>,
    ok: usize,
    total: usize,
}

impl Series {
    fn pct(&self, p: f64) -> f64 {
        common::percentile_ms(&self.micros, p)
    }
    fn mean(v: &[u64]) -> f64 {
        if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<u64>() as f64 / v.len() as f64
        }
    }
    fn json(&self) -> serde_json::Value {
        let opt = |v: &[u64]| (!v.is_empty()).then(|| Self::mean(v));
        let ms = |p| {
            let v = self.pct(p);
            v.is_finite().then_some(v)
        };
        serde_json::json!({
            "p50": ms(50.0),
            "p90": ms(90.0),
            "p99": ms(99.0),
            "ok": self.ok,
            "total": self.total,
            "success_pct": 100.0 * self.ok as f64 / self.total.max(1) as f64,
            "requests_per_query": opt(&self.requests),
            "peers_per_query": opt(&self.peers),
        })
    }
    fn row(&self, name: &str) -> String {
        format!(
            "| {name} | {:.2} | {:.2} | {:.2} | {} | {} | {:.1} % |",
            self.pct(50.0),
            self.pct(90.0),
            self.pct(99.0),
            if self.requests.is_empty() {
                "-".into()
            } else {
                format!("{:.1}", Self::mean(&self.requests))
            },
            if self.peers.is_empty() {
                "-".into()
            } else {
                format!("{:.1}", Self::mean(&self.peers))
            },
            100.0 * self.ok as f64 / self.total.max(1) as f64,
        )
    }
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> Result<()> {
    anyhow::ensure!(args.nodes >= 2, "at least two nodes");
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);

    let mut overlay = cpns_overlay::Config {
        gate_requests: args.gated,
        ..cpns_overlay::Config::default()
    };
    if let Some(k) = args.k {
        overlay.replication_factor = k;
    }
    if let Some(a) = args.alpha {
        overlay.parallelism = a;
    }
    if args.eager_negotiation {
        overlay.lazy_negotiation = false;
    }
    // Over TCP every connection costs a file descriptor at each end, and all ends are in this
    // one process; over QUIC a node has one UDP socket whatever its connections.
    let limit = fd_limit();
    let full_mesh = args.nodes * args.nodes.saturating_sub(1) + 32 * args.nodes;
    let quic = match args.transport {
        Transport::Quic => true,
        Transport::Tcp => false,
        Transport::Auto => full_mesh > limit,
    };
    if quic {
        overlay.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse()?];
        if args.transport == Transport::Auto {
            println!(
                "note: a full TCP mesh of {} nodes needs ~{full_mesh} file descriptors, the limit \
                 is {limit}: QUIC (one UDP socket per node, connections kept)",
                args.nodes
            );
        }
    }
    if let Some(t) = args.idle_timeout_secs {
        overlay.idle_timeout = Duration::from_secs(t);
    } else if !quic && full_mesh > limit {
        // When a full TCP mesh would not fit the limit, close idle connections sooner (real
        // nodes, one per process, have no such constraint). 2 s measured better than 5 s at
        // 256 nodes (130 against 227 ms publish p50).
        overlay.idle_timeout = Duration::from_secs(2);
        println!(
            "note: a full TCP mesh of {} nodes needs ~{full_mesh} file descriptors, the limit is \
             {limit}: idle connections close after 2 s",
            args.nodes
        );
    }
    if let Some(c) = args.max_conns {
        overlay.max_connections = c;
    }
    if let Some(p) = args.ping_secs {
        overlay.ping_interval = Duration::from_secs(p);
    }
    let mut directory = Config::default();
    if let Some(q) = args.find_quorum {
        directory.find_quorum = q;
    }
    let disk = if args.disk {
        Some(tempfile::tempdir()?)
    } else {
        None
    };

    println!(
        "dht_bench: {} nodes, {} ops, {}, k={}, alpha={}, idle timeout {:?}, lazy negotiation \
         {}, find_quorum={}, sled on {}{}",
        args.nodes,
        args.ops,
        if quic { "QUIC" } else { "TCP + noise + yamux" },
        overlay.replication_factor,
        overlay.parallelism,
        overlay.idle_timeout,
        overlay.lazy_negotiation,
        directory.find_quorum,
        if args.disk { "disk" } else { "tmpfs" },
        if args.gated {
            ", direct lookups refused"
        } else {
            ""
        },
    );
    let t = Instant::now();
    let disk_path = disk.as_ref().map(|d| d.path().to_path_buf());
    let mesh = Mesh::start_with(args.nodes, Duration::from_secs(args.settle_secs), |i| {
        let mut o = NodeOptions::new(overlay.clone(), directory.clone());
        o.db_path = disk_path.as_ref().map(|p| p.join(format!("node-{i}")));
        o
    })
    .await
    .context("starting the mesh")?;
    let mut tables = Vec::new();
    for m in &mesh.nodes {
        tables.push(m.client.routing_table_size().await?);
    }
    tables.sort_unstable();
    let mesh_up_secs = t.elapsed().as_secs_f64();
    println!(
        "mesh up in {:.1} s; routing table sizes min/median/max {}/{}/{}",
        t.elapsed().as_secs_f64(),
        tables[0],
        tables[tables.len() / 2],
        tables[tables.len() - 1]
    );

    // The mesh at rest: wait (bounded) until the start-up bootstraps have died down.
    let served = |mesh: &Mesh| -> u64 {
        mesh.nodes
            .iter()
            .map(|m| {
                m.client
                    .stats()
                    .dht_requests_served
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .sum()
    };
    let quiet_by = Instant::now() + Duration::from_secs(args.settle_secs);
    let mut last = served(&mesh);
    loop {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let now = served(&mesh);
        if now - last <= args.nodes as u64 / 8 || Instant::now() >= quiet_by {
            break;
        }
        last = now;
    }
    let (c0, t0) = (cpu_secs(), Instant::now());
    tokio::time::sleep(Duration::from_secs(args.idle_secs)).await;
    let idle_cores = (cpu_secs() - c0) / t0.elapsed().as_secs_f64();
    let served_idle = served(&mesh);
    let rss_idle = rss_mib();
    let mut connections = 0usize;
    for m in &mesh.nodes {
        connections += m.client.peers().await?.len();
    }
    println!(
        "idle: {idle_cores:.2} cores busy, RSS {rss_idle:.0} MiB ({:.2} MiB per node), \
         {:.1} connected peers per node, {} open files, {} DHT requests served so far",
        rss_idle / args.nodes as f64,
        connections as f64 / args.nodes as f64,
        open_files(),
        served_idle
    );

    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ args.seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let payload: String = "x".repeat(200);
    let mut published = Vec::new();
    let mut publish = Series::default();
    let (pc0, pt0) = (cpu_secs(), Instant::now());
    for i in 0..args.ops {
        if Instant::now() >= deadline {
            break;
        }
        let at = rng.below(args.nodes);
        let mut draft = ServiceDraft::new(
            format!("bench service {i}"),
            [format!("bench-kw-{}-{i}", args.seed)],
            Visibility::Public,
        );
        draft.offers = payload.clone();
        publish.total += 1;
        let start = Instant::now();
        let r = tokio::time::timeout(OP_TIMEOUT, mesh.nodes[at].directory.publish(draft)).await;
        let us = start.elapsed().as_micros() as u64;
        if let Ok(Ok(desc)) = r {
            publish.ok += 1;
            publish.micros.push(us);
            published.push((at, desc));
        }
    }
    let publish_cores = (cpu_secs() - pc0) / pt0.elapsed().as_secs_f64();

    // Let the publishers' coalesced index writes (and any other tail work) finish, so that
    // discoveries are measured on a quiet mesh, as OpenDHT's gets were.
    tokio::time::sleep(directory.index_delay + Duration::from_millis(200)).await;
    let quiet_by = Instant::now() + Duration::from_secs(10);
    let mut last = served(&mesh);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let now = served(&mesh);
        if now - last <= args.nodes as u64 / 16 || Instant::now() >= quiet_by {
            break;
        }
        last = now;
    }

    if let Ok(secs) = std::env::var("CPNS_BENCH_PAUSE") {
        // For attaching a profiler to the discovery phase.
        eprintln!(
            "pausing {secs} s before discovering (pid {})",
            std::process::id()
        );
        tokio::time::sleep(Duration::from_secs(secs.parse().unwrap_or(5))).await;
    }
    let mut find = Series::default();
    let mut get = Series::default();
    let (fc0, ft0) = (cpu_secs(), Instant::now());
    let served_before = served(&mesh);
    for (at, desc) in &published {
        if Instant::now() >= deadline {
            break;
        }
        let mut by = rng.below(args.nodes - 1);
        if by >= *at {
            by += 1;
        }
        let dir = &mesh.nodes[by].directory;
        find.total += 1;
        let q = Query::keywords([desc.keywords[0].clone()]);
        let start = Instant::now();
        let r = tokio::time::timeout(OP_TIMEOUT, dir.find(&q)).await;
        let us = start.elapsed().as_micros() as u64;
        if let Ok(Ok(d)) = r {
            find.requests.push(d.figures.requests as u64);
            find.peers.push(d.figures.peers_contacted as u64);
            if d.services.iter().any(|f| f.description.id == desc.id) {
                find.ok += 1;
                find.micros.push(us);
            } else if std::env::var("CPNS_DEBUG_MISS").is_ok() {
                let raw = mesh.nodes[by]
                    .client
                    .get_providers(
                        cpns_overlay::RecordKey::new(
                            &cpns_directory::test_utils::public_keyword_key(&desc.keywords[0]),
                        ),
                        None,
                    )
                    .await;
                let direct = mesh.nodes[by]
                    .client
                    .request(
                        mesh.nodes[*at].peer,
                        cpns_overlay::Protocol::Cpns,
                        cpns_overlay::Message::Directory(cpns_overlay::DirectoryMessage::Lookup {
                            keyword: cpns_directory::test_utils::public_keyword_key(
                                &desc.keywords[0],
                            ),
                        }),
                    )
                    .await
                    .map(|m| m.name());
                let rec = mesh.nodes[by]
                    .client
                    .get_record(
                        cpns_overlay::RecordKey::new(
                            &mesh.nodes[*at]
                                .directory
                                .service_record_key(desc)
                                .unwrap_or_default(),
                        ),
                        true,
                    )
                    .await
                    .map(|o| o.records.len());
                let again = mesh.nodes[by]
                    .directory
                    .find(&q)
                    .await
                    .map(|d| d.services.len());
                eprintln!(
                    "MISS {} at {by} (publisher {at}): {:?} {} us; full provider lookup: {:?}; \
                     direct: {direct:?}; record: {rec:?}; again: {again:?}",
                    desc.id,
                    d.figures,
                    us,
                    raw.map(|o| (o.providers.len(), o.figures))
                );
            }
        }
    }
    let find_cores = (cpu_secs() - fc0) / ft0.elapsed().as_secs_f64();
    let served_per_find = (served(&mesh) - served_before) as f64 / find.total.max(1) as f64;
    for (at, desc) in &published {
        if Instant::now() >= deadline {
            break;
        }
        let mut by = rng.below(args.nodes - 1);
        if by >= *at {
            by += 1;
        }
        get.total += 1;
        let start = Instant::now();
        let r = tokio::time::timeout(OP_TIMEOUT, mesh.nodes[by].directory.get(&desc.id)).await;
        let us = start.elapsed().as_micros() as u64;
        if let Ok(Ok(Some(f))) = r
            && f.description.id == desc.id
        {
            get.ok += 1;
            get.micros.push(us);
        }
    }
    // The raw DHT operations a publish is made of, for the breakdown.
    let mut raw_put = Series::default();
    let mut raw_provide = Series::default();
    let mut raw_providers = Series::default();
    for i in 0..args.breakdown.min(args.ops) {
        if Instant::now() >= deadline {
            break;
        }
        let at = rng.below(args.nodes);
        let client = &mesh.nodes[at].client;
        let mut kb = [0u8; 32];
        kb[..8].copy_from_slice(&rng.next().to_be_bytes());
        kb[8..16].copy_from_slice(&(i as u64).to_be_bytes());
        let key = cpns_overlay::RecordKey::new(&kb);
        raw_put.total += 1;
        let start = Instant::now();
        // Any value: the validators refuse it, which costs what a valid one costs minus the
        // signature checks; the put's latency is what is measured.
        let r = client
            .put_record(
                cpns_overlay::Record::new(key.clone(), vec![0u8; 600]),
                cpns_overlay::Quorum::One,
            )
            .await;
        if r.is_ok() {
            raw_put.ok += 1;
            raw_put.micros.push(start.elapsed().as_micros() as u64);
        }
        raw_provide.total += 1;
        let start = Instant::now();
        if let Ok(f) = client.start_providing(key.clone()).await {
            raw_provide.ok += 1;
            raw_provide.micros.push(start.elapsed().as_micros() as u64);
            raw_provide.requests.push(f.requests as u64);
        }
        let mut by = rng.below(args.nodes - 1);
        if by >= at {
            by += 1;
        }
        raw_providers.total += 1;
        let start = Instant::now();
        let q = cpns_overlay::ProvidersQuery {
            stop_after_answers: Some(2),
            connect: true,
            ..Default::default()
        };
        if let Ok(out) = mesh.nodes[by].client.find_providers(key, q).await
            && !out.providers.is_empty()
        {
            raw_providers.ok += 1;
            raw_providers
                .micros
                .push(start.elapsed().as_micros() as u64);
            raw_providers.requests.push(out.figures.requests as u64);
        }
    }
    let rss_end = rss_mib();

    println!();
    println!("| operation | p50 ms | p90 ms | p99 ms | requests/query | peers/query | success |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    println!("{}", publish.row("publish (sign, sled, DHT puts)"));
    println!("{}", find.row("discover by keyword"));
    println!("{}", get.row("get by id"));
    if raw_put.total > 0 {
        println!("{}", raw_put.row("raw kad put_record (600 B, quorum 1)"));
        println!("{}", raw_provide.row("raw kad start_providing"));
        println!("{}", raw_providers.row("raw provider lookup (2 answers)"));
    }
    println!();
    println!(
        "CPU while publishing {publish_cores:.2} cores, while discovering {find_cores:.2} cores \
         ({served_per_find:.1} DHT requests served mesh-wide per discovery); RSS at rest \
         {rss_idle:.0} MiB, at end {rss_end:.0} MiB"
    );
    if let Some(path) = &args.json {
        let figures = serde_json::json!({
            "nodes": args.nodes,
            "ops": args.ops,
            "seed": args.seed,
            "log2_nodes": (args.nodes as f64).log2(),
            "k": overlay.replication_factor,
            "alpha": overlay.parallelism,
            "idle_timeout_secs": overlay.idle_timeout.as_secs_f64(),
            "quic": quic,
            "find_quorum": directory.find_quorum,
            "mesh_up_secs": mesh_up_secs,
            "routing_table_median": tables[tables.len() / 2],
            "connected_peers_per_node": connections as f64 / args.nodes as f64,
            "idle_cores": idle_cores,
            "rss_idle_mib": rss_idle,
            "rss_idle_mib_per_node": rss_idle / args.nodes as f64,
            "rss_end_mib": rss_end,
            "publish_cores": publish_cores,
            "discover_cores": find_cores,
            "dht_requests_served_per_discovery": served_per_find,
            "publish": publish.json(),
            "discover": find.json(),
            "get": get.json(),
            "raw_put_record": raw_put.json(),
            "raw_start_providing": raw_provide.json(),
            "raw_provider_lookup": raw_providers.json(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&figures)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let mut rejected = std::collections::BTreeMap::<&str, u64>::new();
    for m in &mesh.nodes {
        for (k, v) in m.validator.rejected() {
            *rejected.entry(k).or_default() += v;
        }
    }
    println!("records refused by validators (raw puts of the breakdown included): {rejected:?}");
    let t = Instant::now();
    mesh.shutdown().await;
    println!("mesh down in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}
