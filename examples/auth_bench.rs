//! Usage:
//!
//! ```text
//! cargo build --release -p cpns-auth
//! taskset -c 1 cargo run --release --example auth_bench [-- --clients 16 --auths 1000 --rotations 300]
//! ```
//!
//! Measures `cpns-auth`:
//!
//! 1. **Server-side verification alone, one core**: the server's own authentication code
//!    ([`cpns_auth::authn::Authenticator`]: step 8's credential check and challenge, step 10's
//!    nonce, EUKey MAC and identity signature checks, the session) on this thread, no network,
//!    beside the yardstick measured in the same run: this core's ed25519 verify rate (each
//!    authentication checks one signature, so its rate is the ceiling), and the ratio.
//! 2. **Full B.1 steps 8-11 over libp2p**: the real `cpns-auth serve` binary, pinned to CPU 0
//!    with `taskset` when available, and `--clients` enrolled overlay nodes in this process,
//!    each authenticating `--auths` times in a loop over real TCP+noise+yamux connections on
//!    127.0.0.1. Reports latency percentiles, wall-clock throughput, and throughput per
//!    second of server CPU time (from `/proc/PID/stat`), which is the "per core" figure, also
//!    as a % of the ed25519 verify rate.
//! 3. **Durable PN key rotations**: gateways admit a PNE (B.1 19-21, epoch + 1) and
//!    de-register it (G.1 step 9, epoch + 1) in a loop; every rotation is flushed to disk
//!    before its answer. Once with one gateway, once with four at a time.
//!
//! Everything stays on loopback; mDNS is off.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cpns_auth::authn::{Authenticator, AuthnLimits, EntityKeys};
use cpns_keys::{CredentialBody, EntityCredential, EuKey, Identity, Modes, PeerId, RevocationList};
use cpns_node::enrolment::{Enrolment, enrol};
use cpns_overlay::{
    AuthMessage, Capabilities, Client, ConnectionSetup, Event, KadMode, MembershipDecision,
    Message, NodeMode, Protocol, Status, transcript,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

struct Args {
    clients: usize,
    auths: usize,
    verify: usize,
    rotations: usize,
}

fn parse_args() -> Result<Args> {
    let mut a = Args {
        clients: 16,
        auths: 1000,
        verify: 20_000,
        rotations: 300,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut num = || -> Result<usize> {
            Ok(it
                .next()
                .with_context(|| format!("{flag} needs a number"))?
                .parse()?)
        };
        match flag.as_str() {
            "--clients" => a.clients = num()?,
            "--auths" => a.auths = num()?,
            "--verify" => a.verify = num()?,
            "--rotations" => a.rotations = num()?,
            other => bail!(
                "unknown argument {other:?} (usage: auth_bench [--clients N] [--auths N] \
                 [--verify N] [--rotations N])"
            ),
        }
    }
    ensure!(a.clients >= 1 && a.auths >= 1 && a.rotations >= 1 && a.verify >= 1);
    Ok(a)
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Latency percentiles and throughput of a set of samples.
fn report(label: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort_unstable();
    let pct = |p: f64| {
        let i = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples[i.min(samples.len() - 1)]
    };
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{label:<44} n={:<6} p50={:>8.1}µs p90={:>8.1}µs p99={:>8.1}µs  {:>9.0}/s",
        samples.len(),
        us(pct(0.50)),
        us(pct(0.90)),
        us(pct(0.99)),
        samples.len() as f64 / wall.as_secs_f64()
    );
}

/// The yardstick: this core's rate of ed25519 signature checks (`PublicKey::verify`, the
/// strict check the server makes at step 10), in checks per second; the best of three passes
/// of `n` checks, measured in this run.
fn ed25519_verify_rate(n: usize) -> Result<f64> {
    let id = Identity::generate();
    let public = id.public();
    let msg = [7u8; 96];
    let sig = id.sign(&msg);
    let mut best = f64::INFINITY;
    for _ in 0..3 {
        let t = Instant::now();
        for _ in 0..n {
            public.verify(std::hint::black_box(&msg), &sig)?;
        }
        best = best.min(t.elapsed().as_secs_f64());
    }
    Ok(n as f64 / best)
}

/// Part 1: the server's authentication code alone, on this thread. Returns the rate of
/// steps 8+10 (authentications per second).
fn bench_verify(n: usize) -> Result<f64> {
    let ca = Identity::generate();
    let server = Identity::generate().peer_id();
    let now = unix_now();
    let revocations = RevocationList::sign(&ca, 1, now, [])?;
    let authn = Authenticator::new(AuthnLimits {
        challenge_ttl: Duration::from_secs(30),
        session_ttl: Duration::from_secs(3600),
        max_challenges: 1 << 20,
        max_challenges_per_peer: 4,
        max_sessions: 1 << 20,
    });
    struct Ent {
        id: Identity,
        cred: EntityCredential,
        keys: EntityKeys,
    }
    let ents: Vec<Ent> = (0..256u64)
        .map(|i| {
            let id = Identity::generate();
            let cred = EntityCredential::issue(
                &ca,
                CredentialBody {
                    entity: id.peer_id(),
                    user: "bench".into(),
                    device: format!("d{i}"),
                    modes: Modes::ALL,
                    serial: i + 1,
                    issued: now - 10,
                    expires: now + 86_400,
                },
            );
            let keys = EntityKeys {
                user: "bench".into(),
                serials: vec![i + 1],
                eukey: EuKey::generate(),
                revoked: false,
                // As in the server: the credential it issued, so step 8 needs no signature check.
                issued: Some(cred.clone()),
            };
            Ent { id, cred, keys }
        })
        .collect();
    let mut setup_t = Vec::with_capacity(n);
    let mut answer_t = Vec::with_capacity(n);
    let mut both = Vec::with_capacity(n);
    for i in 0..n {
        let e = &ents[i % ents.len()];
        let peer = e.id.peer_id();
        let t0 = Instant::now();
        let ch = authn.setup(
            &ca.public(),
            &revocations,
            peer,
            &e.cred,
            NodeMode::Gateway,
            Some(&e.keys),
            now,
            t0,
        )?;
        let t_setup = t0.elapsed();
        // The node's side (not timed).
        let t = transcript::auth_response(
            &ch.nonce,
            &server,
            &peer,
            e.cred.serial(),
            NodeMode::Gateway,
        );
        let mac = e.keys.eukey.mac(&t);
        let sig = e.id.sign(&t);
        let t1 = Instant::now();
        authn.answer(
            &server,
            peer,
            &ch.nonce,
            &mac,
            &sig,
            Some(&e.keys),
            &revocations,
            now,
            t1,
        )?;
        let t_answer = t1.elapsed();
        setup_t.push(t_setup);
        answer_t.push(t_answer);
        both.push(t_setup + t_answer);
    }
    let total: Duration = both.iter().sum();
    report(
        "verify: step 8 (credential, challenge)",
        setup_t.clone(),
        setup_t.iter().sum(),
    );
    report(
        "verify: step 10 (nonce, MAC, signature)",
        answer_t.clone(),
        answer_t.iter().sum(),
    );
    report("verify: steps 8+10, one core", both, total);
    Ok(n as f64 / total.as_secs_f64().max(1e-9))
}

/// The `cpns-auth` binary next to this example (target/release/cpns-auth).
fn server_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("cannot locate the target dir")?;
    let bin = dir.join("cpns-auth");
    ensure!(
        bin.exists(),
        "{} not found: run `cargo build --release -p cpns-auth` first",
        bin.display()
    );
    Ok(bin)
}

struct ServerProcess {
    child: tokio::process::Child,
    pid: u32,
    dial: cpns_overlay::Multiaddr,
    bin: PathBuf,
    data: PathBuf,
    pinned: bool,
}

async fn start_server(dir: &Path) -> Result<ServerProcess> {
    let bin = server_binary()?;
    let data = dir.join("auth");
    let pinned = std::process::Command::new("taskset")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    let mut cmd = if pinned {
        let mut c = tokio::process::Command::new("taskset");
        c.args(["-c", "0"]).arg(&bin);
        c
    } else {
        tokio::process::Command::new(&bin)
    };
    let mut child = cmd
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(&data)
        .env("RUST_LOG", "error")
        .env("CPNS_AUTH_MAX_CONCURRENT_REQUESTS", "4096")
        // The bench enrols its clients in a burst, from one address: past the default rate
        // limits (5 a minute per address, 60 in all), which are not what it measures.
        .env("CPNS_AUTH_ENROL_ATTEMPTS_PER_MINUTE", "100000")
        .env("CPNS_AUTH_ENROL_ATTEMPTS_GLOBAL_PER_MINUTE", "100000")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("server pid")?;
    let mut lines = BufReader::new(child.stdout.take().context("stdout")?).lines();
    let mut dial = None;
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.strip_prefix("listening on:") {
                dial.get_or_insert(a.trim().parse::<cpns_overlay::Multiaddr>()?);
            }
            if line == "ready" {
                return Ok::<_, anyhow::Error>(());
            }
        }
        bail!("server exited before `ready`")
    })
    .await
    .context("server start")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(ServerProcess {
        child,
        pid,
        dial: dial.context("no listen address")?,
        bin,
        data,
        pinned,
    })
}

impl ServerProcess {
    fn cli(&self, args: &[&str]) -> Result<String> {
        let out = std::process::Command::new(&self.bin)
            .arg("--data-dir")
            .arg(&self.data)
            .args(args)
            .output()?;
        ensure!(
            out.status.success(),
            "cpns-auth {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    /// The server's user + system CPU time so far (from /proc; USER_HZ is 100 on Linux).
    fn cpu_time(&self) -> Option<Duration> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).ok()?;
        let after = stat.rsplit_once(')')?.1;
        let fields: Vec<&str> = after.split_whitespace().collect();
        let utime: u64 = fields.get(11)?.parse().ok()?;
        let stime: u64 = fields.get(12)?.parse().ok()?;
        Some(Duration::from_millis((utime + stime) * 10))
    }
}

/// A client: an overlay node, its enrolment, and a responder for the server's requests.
struct Bench {
    client: Client,
    identity: Identity,
    enrolment: Enrolment,
    server: PeerId,
    /// PN ids from B.1 step 17 (PnInventoryCreated).
    inventory: tokio::sync::Mutex<mpsc::Receiver<String>>,
}

async fn client(seed: u64, code: &str, cancel: &CancellationToken) -> Result<Bench> {
    let config = cpns_overlay::Config {
        kad_mode: KadMode::Client,
        ..cpns_overlay::Config::default()
    };
    let mut secret = [0u8; 32];
    secret[..8].copy_from_slice(&seed.to_be_bytes());
    secret[8] = 0xbe;
    let identity = Identity::from_secret_bytes(secret);
    let (client, mut events, event_loop) = cpns_overlay::new(config, &identity).await?;
    tokio::spawn(event_loop.run(cancel.clone()));
    let (tx, inventory) = mpsc::channel(16);
    let responder = client.clone();
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::InboundRequest {
                message, channel, ..
            } = ev
            {
                let reply = match &message {
                    Message::Auth(AuthMessage::StatusUpdateRequest) => {
                        Message::Auth(AuthMessage::StatusResponse {
                            status: Status::Online,
                            pn_id: None,
                            members: vec![],
                            take_over: false,
                        })
                    }
                    Message::Auth(AuthMessage::PnInventoryCreated { pn, .. }) => {
                        let _ = tx.try_send(pn.pn_id.clone());
                        Message::Ack
                    }
                    _ => Message::Ack,
                };
                let _ = responder.respond(channel, reply).await;
            }
        }
    });
    let enrolment = enrol(&client, &identity, code, &format!("bench-{seed}")).await?;
    Ok(Bench {
        server: enrolment.server,
        client,
        identity,
        enrolment,
        inventory: tokio::sync::Mutex::new(inventory),
    })
}

impl Bench {
    async fn ask(&self, m: AuthMessage) -> Result<AuthMessage> {
        match self
            .client
            .request(self.server, Protocol::Auth, Message::Auth(m))
            .await?
        {
            Message::Auth(a) => Ok(a),
            other => bail!("unexpected {}", other.name()),
        }
    }

    /// One full B.1 steps 8-11 exchange.
    async fn authenticate(&self, mode: NodeMode) -> Result<()> {
        let AuthMessage::AuthChallenge { nonce, .. } = self
            .ask(AuthMessage::ConnectionSetupRequest {
                credential: self.enrolment.credential.clone(),
                mode,
            })
            .await?
        else {
            bail!("no challenge");
        };
        let me = self.identity.peer_id();
        let t = transcript::auth_response(
            &nonce,
            &self.server,
            &me,
            self.enrolment.credential.serial(),
            mode,
        );
        let answer = self
            .ask(AuthMessage::AuthResponse {
                nonce,
                eukey_mac: self.enrolment.eukey.mac(&t),
                signature: self.identity.sign(&t),
            })
            .await?;
        ensure!(
            matches!(answer, AuthMessage::ConnectionSetupConfirmation(_)),
            "no confirmation"
        );
        Ok(())
    }

    fn setup(&self, pn_id: &str, gateway: PeerId, n: u64) -> ConnectionSetup {
        let me = self.identity.peer_id();
        let time = unix_now();
        let mut nonce = [0u8; 16];
        nonce[..8].copy_from_slice(&n.to_be_bytes());
        nonce[8..].copy_from_slice(&EuKey::generate().to_bytes()[..8]);
        let t = transcript::membership_request(pn_id, &gateway, &me, time, &nonce);
        ConnectionSetup {
            credential: self.enrolment.credential.clone(),
            pn_id: pn_id.to_owned(),
            time,
            nonce,
            eukey_mac: self.enrolment.eukey.mac(&t),
            signature: self.identity.sign(&t),
            capabilities: Capabilities::default(),
        }
    }
}

/// Part 2: full exchanges from `clients` nodes at once.
async fn bench_auth(
    server: &ServerProcess,
    clients: &[Arc<Bench>],
    auths: usize,
    verify_rate: f64,
) -> Result<()> {
    // Warm up: connections, first sessions.
    for c in clients {
        for _ in 0..20 {
            c.authenticate(NodeMode::Pne).await?;
        }
    }
    let cpu0 = server.cpu_time();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in clients {
        let c = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(auths);
            for _ in 0..auths {
                let t = Instant::now();
                c.authenticate(NodeMode::Pne).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    let wall = start.elapsed();
    let n = all.len();
    report(
        &format!("auth 8-11 over libp2p, {} clients", clients.len()),
        all,
        wall,
    );
    if let (Some(a), Some(b)) = (cpu0, server.cpu_time()) {
        let cpu = b.saturating_sub(a);
        println!(
            "{:<44} server CPU {:.2}s for {n} auths in {:.2}s wall: {:.0} auths per server-CPU-second",
            "",
            cpu.as_secs_f64(),
            wall.as_secs_f64(),
            n as f64 / cpu.as_secs_f64().max(1e-9)
        );
        println!(
            "{:<44} = {:.0} % of the one-core ed25519 verify rate",
            "",
            100.0 * n as f64 / cpu.as_secs_f64().max(1e-9) / verify_rate
        );
    }
    Ok(())
}

/// Part 3: durable PN key rotations with `pairs` gateways at once.
async fn bench_rotations(
    pairs: &[(Arc<Bench>, Arc<Bench>, String)],
    rotations: usize,
) -> Result<()> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    let per = rotations.div_ceil(pairs.len()).div_ceil(2);
    for (gw, pne, pn_id) in pairs {
        let (gw, pne, pn_id) = (gw.clone(), pne.clone(), pn_id.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per * 2);
            let gw_peer = gw.identity.peer_id();
            for i in 0..per {
                let setup = pne.setup(&pn_id, gw_peer, i as u64);
                let t = Instant::now();
                let AuthMessage::MembershipListTransfer { decision, .. } =
                    gw.ask(AuthMessage::MembershipRequest { setup }).await?
                else {
                    bail!("no membership answer");
                };
                lat.push(t.elapsed());
                ensure!(decision == MembershipDecision::Admitted, "{decision:?}");
                let t = Instant::now();
                let answer = gw
                    .ask(AuthMessage::PnDeregister {
                        pn_id: pn_id.clone(),
                        member: pne.identity.peer_id(),
                    })
                    .await?;
                lat.push(t.elapsed());
                ensure!(matches!(answer, AuthMessage::PnKeyResponse { .. }));
            }
            Ok::<_, anyhow::Error>(lat)
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await??);
    }
    report(
        &format!("durable PN key rotation, {} gateway(s)", pairs.len()),
        all,
        start.elapsed(),
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = parse_args()?;
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_default();
    let machine_cpus = std::fs::read_to_string("/proc/cpuinfo")
        .map(|s| s.lines().filter(|l| l.starts_with("processor")).count())
        .unwrap_or(0);
    println!(
        "auth_bench: machine {machine_cpus} CPUs ({cpu}), this process may use {}; \
         clients={}, auths/client={}, rotations={}",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        args.clients,
        args.auths,
        args.rotations
    );

    let verify_rate = ed25519_verify_rate(args.verify.min(5000))?;
    let auth_rate = bench_verify(args.verify)?;
    let verify_after = ed25519_verify_rate(args.verify.min(5000))?;
    // Before and after, the better of the two: a machine that got busier in between shows.
    let verify_rate = verify_rate.max(verify_after);
    println!(
        "{:<44} {verify_rate:>9.0}/s   <- the yardstick (one core, this run)",
        "ed25519 verify (strict), one core"
    );
    println!(
        "{:<44} {:.0} % of the ed25519 verify rate (each authentication checks one signature, \
         so 100 % is the ceiling)",
        "verify: steps 8+10 against it",
        100.0 * auth_rate / verify_rate
    );

    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    println!(
        "server: {} (pid {}, {})",
        server.dial,
        server.pid,
        if server.pinned {
            "pinned to CPU 0 with taskset"
        } else {
            "not pinned: taskset not found"
        }
    );
    server.cli(&["users", "create", "bench"])?;
    let created: serde_json::Value = serde_json::from_str(&server.cli(&[
        "enrol",
        "create",
        "--user",
        "bench",
        "--reusable",
        "--json",
    ])?)?;
    let code = created["code"].as_str().context("code")?.to_owned();

    let cancel = CancellationToken::new();
    let mut clients = Vec::new();
    for i in 0..args.clients.max(8) {
        clients.push(Arc::new(client(i as u64, &code, &cancel).await?));
    }
    bench_auth(&server, &clients[..args.clients], args.auths, verify_rate).await?;
    if args.clients > 1 {
        bench_auth(&server, &clients[..1], args.auths.min(2000), verify_rate).await?;
    }

    // Gateways for the rotation runs: clients 0-3 are gateways, 4-7 their PNEs.
    let mut pairs = Vec::new();
    for i in 0..4 {
        let gw = clients[i].clone();
        gw.authenticate(NodeMode::Gateway).await?;
        let AuthMessage::CapabilitiesConfirmation { .. } = gw
            .ask(AuthMessage::CapabilitiesUpdate(Capabilities {
                mode: NodeMode::Gateway,
                ..Capabilities::default()
            }))
            .await?
        else {
            bail!("no capabilities confirmation");
        };
        pairs.push((gw, clients[i + 4].clone()));
    }
    let mut with_pn = Vec::new();
    for (gw, pne) in pairs {
        let pn_id = wait_inventory(&gw).await?;
        with_pn.push((gw, pne, pn_id));
    }
    bench_rotations(&with_pn[..1], args.rotations).await?;
    bench_rotations(&with_pn, args.rotations).await?;

    cancel.cancel();
    let mut child = server.child;
    let _ = child.kill().await;
    Ok(())
}

/// Waits for B.1 step 17 at a gateway and returns its PN id.
async fn wait_inventory(gw: &Arc<Bench>) -> Result<String> {
    let mut rx = gw.inventory.lock().await;
    tokio::time::timeout(Duration::from_secs(20), rx.recv())
        .await
        .context("waiting for step 17")?
        .context("responder stopped")
}
