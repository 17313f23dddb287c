//! The Metadata Directory benchmark of `dht_bench`, with the nodes spread over several
//! processes (not a test).
//!
//! ```text
//! cargo run --release --example dht_procs -- --nodes 256 --procs 8
//! ```
//!
//! Real nodes run one per process. `dht_bench` keeps all of them in one process, where a
//! 256-node mesh cannot keep its connections open within the file-descriptor limit (20,000
//! here), so it closes idle connections after 2 s and nearly every request pays a handshake.
//! Here `--procs` child processes (this same binary, `--child I`) each run `nodes / procs`
//! nodes with the overlay's default idle timeout; the parent drives them over their standard
//! input and output, one line per operation, and every operation is timed inside the child
//! that runs it. Otherwise the same work as `dht_bench`: `--ops` sequential publishes of one
//! public ~200-byte service each from random nodes, then a discovery of each by its keyword from
//! another random node, then a get by id. Every operation is bounded (10 s), the run by
//! `--max-secs`, and the children exit when the parent goes.

mod common;

use std::io::{BufRead, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use common::{cpu_secs, percentile_ms, rss_mib};
use cpns_directory::test_utils::{Ca, MeshNode, NodeOptions, node_identity};
use cpns_directory::{Config, Query, ServiceDraft, Visibility};

#[derive(Parser, Debug, Clone)]
#[command(
    about = "Publish/discover benchmark of the CPNS Metadata Directory, one mesh over several processes"
)]
struct Args {
    /// Nodes in the mesh.
    #[arg(long, default_value_t = 256)]
    nodes: usize,
    /// Processes the nodes are spread over.
    #[arg(long, default_value_t = 8)]
    procs: usize,
    /// Services published (and discovered, and fetched by id).
    #[arg(long, default_value_t = 200)]
    ops: usize,
    /// Seed of the node choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Bound of the mesh's settling, in seconds.
    #[arg(long, default_value_t = 120)]
    settle_secs: u64,
    /// Bound of the whole run, in seconds.
    #[arg(long, default_value_t = 600)]
    max_secs: u64,
    /// Internal: run as child process I.
    #[arg(long, hide = true)]
    child: Option<usize>,
    /// Internal: the child's bootstrap address.
    #[arg(long, hide = true)]
    bootstrap: Option<String>,
}

/// Bound of one operation.
const OP_TIMEOUT: Duration = Duration::from_secs(10);

fn main() -> Result<()> {
    let args = Args::parse();
    match args.child {
        Some(i) => tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?
            .block_on(child(args.clone(), i)),
        None => parent(args),
    }
}

/// The nodes `[from, to)` of child `i`.
fn share(args: &Args, i: usize) -> (usize, usize) {
    let per = args.nodes.div_ceil(args.procs);
    ((i * per).min(args.nodes), ((i + 1) * per).min(args.nodes))
}

async fn child(args: Args, index: usize) -> Result<()> {
    let (from, to) = share(&args, index);
    let ca = Ca::new(0xca);
    let mut nodes: Vec<MeshNode> = Vec::new();
    let external: Vec<libp2p::Multiaddr> = match &args.bootstrap {
        Some(a) => vec![a.parse()?],
        None => Vec::new(),
    };
    for g in from..to {
        let mut opts = NodeOptions::new(cpns_overlay::Config::default(), Config::default());
        let mut boot = external.clone();
        if let Some(first) = nodes.first() {
            boot.push(first.addr.clone());
        }
        if let Some(last) = nodes.last() {
            boot.push(last.addr.clone());
        }
        opts.overlay.bootstrap = boot;
        opts.serial = g as u64 + 1;
        nodes.push(MeshNode::spawn(&ca, node_identity(g), opts).await?);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "READY {}",
        nodes
            .first()
            .map(|n| n.addr.to_string())
            .unwrap_or_default()
    )?;
    out.flush()?;
    drop(out);
    let payload = "x".repeat(200);
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    while let Some(Ok(line)) = lines.next() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let reply = match parts.as_slice() {
            ["settle"] => {
                use futures::StreamExt;
                let _ = tokio::time::timeout(
                    Duration::from_secs(args.settle_secs),
                    futures::stream::iter(nodes.iter().map(|m| m.client.bootstrap()))
                        .buffer_unordered(4)
                        .collect::<Vec<_>>(),
                )
                .await;
                let mut sizes = Vec::new();
                for m in &nodes {
                    sizes.push(m.client.routing_table_size().await.unwrap_or(0));
                }
                format!(
                    "OK {}",
                    sizes
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(",")
                )
            }
            ["publish", local, i] => {
                let n = &nodes[local.parse::<usize>()?];
                let mut draft = ServiceDraft::new(
                    format!("bench service {i}"),
                    [format!("procs-kw-{}-{i}", args.seed)],
                    Visibility::Public,
                );
                draft.offers = payload.clone();
                let start = Instant::now();
                match tokio::time::timeout(OP_TIMEOUT, n.directory.publish(draft)).await {
                    Ok(Ok(d)) => format!(
                        "OK {} {} {}",
                        start.elapsed().as_micros(),
                        d.id,
                        d.keywords[0]
                    ),
                    _ => "ERR".into(),
                }
            }
            ["find", local, keyword, id] => {
                let n = &nodes[local.parse::<usize>()?];
                let start = Instant::now();
                let r = tokio::time::timeout(
                    OP_TIMEOUT,
                    n.directory.find(&Query::keywords([keyword.to_string()])),
                )
                .await;
                let us = start.elapsed().as_micros();
                match r {
                    Ok(Ok(d)) => format!(
                        "OK {us} {} {}",
                        d.figures.requests,
                        u8::from(d.services.iter().any(|f| f.description.id == *id))
                    ),
                    _ => "ERR".into(),
                }
            }
            ["get", local, id] => {
                let n = &nodes[local.parse::<usize>()?];
                let start = Instant::now();
                let r = tokio::time::timeout(OP_TIMEOUT, n.directory.get(id)).await;
                let us = start.elapsed().as_micros();
                match r {
                    Ok(Ok(Some(_))) => format!("OK {us} 1"),
                    _ => "ERR".into(),
                }
            }
            ["stats"] => format!("OK {} {}", cpu_secs(), rss_mib()),
            ["quit"] => break,
            _ => "ERR unknown command".into(),
        };
        let mut out = std::io::stdout().lock();
        writeln!(out, "{reply}")?;
        out.flush()?;
    }
    for n in nodes {
        n.shutdown().await;
    }
    Ok(())
}

/// One child process and its pipes.
struct Kid {
    proc: Child,
    stdin: ChildStdin,
    stdout: std::io::BufReader<ChildStdout>,
}

impl Kid {
    fn spawn(args: &Args, index: usize, bootstrap: Option<&str>) -> Result<Kid> {
        let exe = std::env::current_exe()?;
        let mut cmd = Command::new(exe);
        cmd.args([
            "--nodes",
            &args.nodes.to_string(),
            "--procs",
            &args.procs.to_string(),
            "--seed",
            &args.seed.to_string(),
            "--settle-secs",
            &args.settle_secs.to_string(),
            "--child",
            &index.to_string(),
        ]);
        if let Some(b) = bootstrap {
            cmd.args(["--bootstrap", b]);
        }
        let mut proc = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()?;
        let stdin = proc.stdin.take().context("stdin")?;
        let stdout = std::io::BufReader::new(proc.stdout.take().context("stdout")?);
        Ok(Kid {
            proc,
            stdin,
            stdout,
        })
    }

    fn send(&mut self, line: &str) -> Result<()> {
        writeln!(self.stdin, "{line}")?;
        self.stdin.flush()?;
        Ok(())
    }

    fn recv(&mut self) -> Result<Vec<String>> {
        let mut line = String::new();
        if self.stdout.read_line(&mut line)? == 0 {
            bail!("a child process exited");
        }
        Ok(line.split_whitespace().map(str::to_owned).collect())
    }

    fn ask(&mut self, line: &str) -> Result<Vec<String>> {
        self.send(line)?;
        self.recv()
    }
}

impl Drop for Kid {
    fn drop(&mut self) {
        let _ = self.send("quit");
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.proc.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.proc.kill();
        let _ = self.proc.wait();
    }
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

fn row(name: &str, us: &[u64], ok: usize, total: usize, extra: &str) {
    println!(
        "| {name} | {:.2} | {:.2} | {:.2} | {extra} | {:.1} % |",
        percentile_ms(us, 50.0),
        percentile_ms(us, 90.0),
        percentile_ms(us, 99.0),
        100.0 * ok as f64 / total.max(1) as f64
    );
}

fn totals(kids: &mut [Kid]) -> Result<(f64, f64)> {
    let (mut cpu, mut rss) = (0.0, 0.0);
    for k in kids.iter_mut() {
        let r = k.ask("stats")?;
        cpu += r.get(1).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
        rss += r.get(2).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    }
    Ok((cpu, rss))
}

fn parent(args: Args) -> Result<()> {
    anyhow::ensure!(
        args.procs >= 1 && args.nodes >= 2 * args.procs,
        "at least two nodes per process"
    );
    let deadline = Instant::now() + Duration::from_secs(args.max_secs);
    println!(
        "dht_procs: {} nodes in {} processes, {} ops, overlay and directory defaults",
        args.nodes, args.procs, args.ops
    );
    let t = Instant::now();
    let mut kids = vec![Kid::spawn(&args, 0, None)?];
    let first = kids[0].recv()?;
    let boot = first.get(1).context("child 0 gave no address")?.clone();
    for i in 1..args.procs {
        kids.push(Kid::spawn(&args, i, Some(&boot))?);
    }
    for k in kids.iter_mut().skip(1) {
        k.recv()?;
    }
    // Every child bootstraps its nodes again once all exist, twice, so that the first
    // processes' nodes learn of the later ones.
    let mut sizes = Vec::new();
    for _ in 0..2 {
        sizes.clear();
        for k in kids.iter_mut() {
            k.send("settle")?;
        }
        for k in kids.iter_mut() {
            let r = k.recv()?;
            sizes.extend(
                r.get(1)
                    .map(|s| {
                        s.split(',')
                            .filter_map(|v| v.parse::<usize>().ok())
                            .collect::<Vec<_>>()
                    })
                    .unwrap_or_default(),
            );
        }
    }
    sizes.sort_unstable();
    println!(
        "mesh up in {:.1} s; routing table sizes min/median/max {}/{}/{}",
        t.elapsed().as_secs_f64(),
        sizes.first().copied().unwrap_or(0),
        sizes.get(sizes.len() / 2).copied().unwrap_or(0),
        sizes.last().copied().unwrap_or(0)
    );
    std::thread::sleep(Duration::from_secs(3));
    let (c0, t0) = (totals(&mut kids)?.0, Instant::now());
    std::thread::sleep(Duration::from_secs(3));
    let (c1, rss) = totals(&mut kids)?;
    println!(
        "idle: {:.2} cores busy, RSS {rss:.0} MiB over all processes ({:.2} MiB per node)",
        (c1 - c0) / t0.elapsed().as_secs_f64(),
        rss / args.nodes as f64
    );

    let per = args.nodes.div_ceil(args.procs);
    let locate = |g: usize| (g / per, g % per);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ args.seed.wrapping_mul(0x2545_f491_4f6c_dd1d));
    let (mut pub_us, mut published) = (Vec::new(), Vec::new());
    let (c0, t0) = (totals(&mut kids)?.0, Instant::now());
    for i in 0..args.ops {
        if Instant::now() >= deadline {
            break;
        }
        let at = rng.below(args.nodes);
        let (k, local) = locate(at);
        let r = kids[k].ask(&format!("publish {local} {i}"))?;
        if r.first().map(String::as_str) == Some("OK") && r.len() == 4 {
            pub_us.push(r[1].parse::<u64>().unwrap_or(0));
            published.push((at, r[2].clone(), r[3].clone()));
        }
    }
    let publish_cores = (totals(&mut kids)?.0 - c0) / t0.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_millis(1500));

    let (mut find_us, mut find_req, mut found) = (Vec::new(), Vec::new(), 0usize);
    let (mut get_us, mut got) = (Vec::new(), 0usize);
    let (c0, t0) = (totals(&mut kids)?.0, Instant::now());
    for (at, id, keyword) in &published {
        if Instant::now() >= deadline {
            break;
        }
        let mut by = rng.below(args.nodes - 1);
        if by >= *at {
            by += 1;
        }
        let (k, local) = locate(by);
        let r = kids[k].ask(&format!("find {local} {keyword} {id}"))?;
        if r.first().map(String::as_str) == Some("OK") && r.len() == 4 {
            find_req.push(r[2].parse::<u64>().unwrap_or(0));
            if r[3] == "1" {
                found += 1;
                find_us.push(r[1].parse::<u64>().unwrap_or(0));
            }
        }
    }
    let find_cores = (totals(&mut kids)?.0 - c0) / t0.elapsed().as_secs_f64();
    for (at, id, _) in &published {
        if Instant::now() >= deadline {
            break;
        }
        let mut by = rng.below(args.nodes - 1);
        if by >= *at {
            by += 1;
        }
        let (k, local) = locate(by);
        let r = kids[k].ask(&format!("get {local} {id}"))?;
        if r.first().map(String::as_str) == Some("OK") && r.len() == 3 {
            got += 1;
            get_us.push(r[1].parse::<u64>().unwrap_or(0));
        }
    }
    let mean_req = find_req.iter().sum::<u64>() as f64 / find_req.len().max(1) as f64;
    println!();
    println!("| operation | p50 ms | p90 ms | p99 ms | requests/query | success |");
    println!("| --- | --- | --- | --- | --- | --- |");
    row(
        "publish (sign, sled, DHT puts)",
        &pub_us,
        pub_us.len(),
        args.ops,
        "-",
    );
    row(
        "discover by keyword",
        &find_us,
        found,
        published.len(),
        &format!("{mean_req:.1}"),
    );
    row("get by id", &get_us, got, published.len(), "-");
    println!();
    println!(
        "CPU while publishing {publish_cores:.2} cores, while discovering {find_cores:.2} cores; \
         RSS at end {:.0} MiB over all processes",
        totals(&mut kids)?.1
    );
    drop(kids);
    Ok(())
}
