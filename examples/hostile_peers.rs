//! Usage: `cargo run --release --example hostile_peers [-- --rounds N --fetches K --mib M
//! --only ATTACK[,ATTACK...] --shared-cores --explain]` (`--explain`: the five slowest finds
//! of each phase with their figures)
//!
//! The attack soak of issue 14: a small PN (a gateway `router`, members `nas` and `phone`,
//! a real `cpns-auth`) on loopback, measured twice in the same run — first alone (the
//! yardstick), then while hostile peers do everything the review found at once:
//!
//! * provider floods: 4 fresh, never-enrolled identities announcing 1,024 random keys each,
//!   16 more crowding each honest keyword, and an enrolled device doing both with a valid
//!   credential;
//! * registrations with huge address lists (60,000 addresses each) from the enrolled device;
//! * idle delivery streams: 8 fresh identities holding 5 streams each to the NAS and to the
//!   gateway;
//! * garbage and oversized frames on `/cpns/1.0.0` (random bytes, a 16 MiB length prefix, a
//!   frame 1 byte over the limit);
//! * usage floods at `cpns-auth`: reports of 1,000 records with random sequences;
//! * service shadowing: another user's node publishing the honest services' ids and keywords.
//!
//! Measured for the honest members in each phase: discovery success and latency p50/p90/p99
//! (the phone finds each of the NAS's public services by keyword, N rounds: the time until
//! the sought service is in hand, streamed by `find_each`, and beside it the time until the
//! whole find ended), delivery
//! throughput (K pull fetches of an M MiB PN service), and the peak RSS of this process (every
//! node, cpns-auth and the attackers run in it, so it bounds the gateway's from above). At the
//! end, cpns-auth must hold a charging record for every honest fetch. Bounded: every attacker
//! does a fixed number of things; the whole run has a 10-minute limit. `--only ATTACK[,ATTACK]`
//! runs only those attacks (to find which one costs what): `providers`, `keywords`,
//! `device-providers`, `registrations`, `usage`, `streams`, `frames` or `shadowing`.
//!
//! The honest PN runs on one half of the CPUs and the attackers with cpns-auth on the other
//! (both phases; see [`cores`] for why), unless `--shared-cores`.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use cpns_directory::{Query, ServiceDraft, Visibility};
use cpns_keys::{EuKey, Modes};
use cpns_node::{Config, ModeSetting, Node};
use cpns_overlay::test_utils::TestNode;
use cpns_overlay::{
    AuthMessage, CPNS_PROTOCOL, DELIVERY_PROTOCOL, DeliveryMode, EntityRegistration, Message,
    Multiaddr, NodeMode, PnMessage, Protocol, RecordKey, transcript,
};
use futures::AsyncWriteExt;

const WAIT: Duration = Duration::from_secs(30);
/// The whole run's limit.
const LIMIT: Duration = Duration::from_secs(600);
/// Peak RSS (MiB) of the whole soak process under attack that the run must stay under.
const RSS_BOUND_MIB: f64 = 1024.0;

struct Args {
    rounds: usize,
    fetches: usize,
    mib: usize,
    only: Option<String>,
    /// Honest PN and attackers on the same CPUs (see [`cores`]).
    shared_cores: bool,
    /// Print the slowest finds of each phase with their figures (where the time went).
    explain: bool,
}

/// The attacks `--only` names.
const ATTACKS: &[&str] = &[
    "providers",
    "keywords",
    "device-providers",
    "registrations",
    "usage",
    "streams",
    "frames",
    "shadowing",
];

impl Args {
    /// Whether this run does `attack`.
    fn does(&self, attack: &str) -> bool {
        self.only
            .as_deref()
            .is_none_or(|o| o.split(',').any(|x| x == attack))
    }
}

fn parse() -> Result<Args> {
    let mut a = Args {
        rounds: 25,
        fetches: 5,
        mib: 8,
        only: None,
        shared_cores: false,
        explain: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(x) = it.next() {
        match x.as_str() {
            "--rounds" => a.rounds = it.next().context("--rounds N")?.parse()?,
            "--fetches" => a.fetches = it.next().context("--fetches K")?.parse()?,
            "--mib" => a.mib = it.next().context("--mib M")?.parse()?,
            "--only" => {
                let name = it.next().context("--only ATTACK[,ATTACK...]")?;
                if !name.split(',').all(|x| ATTACKS.contains(&x)) {
                    bail!("--only takes a comma-separated list of {ATTACKS:?}");
                }
                a.only = Some(name);
            }
            "--shared-cores" => a.shared_cores = true,
            "--explain" => a.explain = true,
            "--bench" => {}
            other => bail!("unknown argument {other:?}"),
        }
    }
    if !(1..=1000).contains(&a.rounds) || !(1..=100).contains(&a.fetches) {
        bail!("--rounds 1..1000, --fetches 1..100");
    }
    if !(1..=256).contains(&a.mib) {
        bail!("--mib 1..256");
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

/// The honest side: the PN and what it offers.
struct Honest {
    gw: Node,
    nas: Node,
    phone: Node,
    /// (keyword, service id) of the NAS's public services.
    public: Vec<(String, String)>,
    /// The PN service with content.
    file: String,
    file_bytes: u64,
}

/// One phase's figures.
struct Figures {
    found: usize,
    finds: usize,
    /// Time until the sought service was in hand (streamed), per find.
    micros: Vec<u64>,
    /// Time until the find ended, per find.
    whole_micros: Vec<u64>,
    /// The slowest finds: (microseconds, the discovery's own figures).
    slowest: Vec<(u64, String)>,
    mb_per_s: Vec<f64>,
    /// Why fetches failed (none should).
    fetch_errors: Vec<String>,
    rss_peak_mib: f64,
}

/// Samples this process's RSS every 50 ms (bounded by `stop`), keeping the peak.
fn rss_sampler(peak: Arc<AtomicU64>, stop: tokio_util::sync::CancellationToken) {
    tokio::spawn(async move {
        while !stop.is_cancelled() {
            let kib = (common::rss_mib() * 1024.0) as u64;
            peak.fetch_max(kib, Ordering::Relaxed);
            tokio::select! {
                _ = stop.cancelled() => {}
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
            }
        }
    });
}

async fn measure(h: &Honest, a: &Args) -> Result<Figures> {
    let peak = Arc::new(AtomicU64::new(0));
    let stop = tokio_util::sync::CancellationToken::new();
    rss_sampler(peak.clone(), stop.clone());
    let nas = h.nas.peer_id();
    let (mut found, mut finds, mut micros, mut whole_micros) = (0, 0, Vec::new(), Vec::new());
    let mut slowest: Vec<(u64, String)> = Vec::new();
    for _ in 0..a.rounds {
        for (keyword, id) in &h.public {
            // The find streams its services as they are verified: the sought one's arrival is
            // the discovery's time (what a user waits for, like OpenDHT's first value), and the
            // find still runs to its end (its whole time is kept too) before the next begins.
            let t = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::channel(64);
            let query = Query::keywords([keyword.as_str()]);
            let phone = h.phone.handle();
            let find = phone.find_each(&query, tx);
            // Reads to the end (a full channel would hold the find back), noting the arrival.
            let sought = async {
                let mut arrived = None;
                while let Some(f) = rx.recv().await {
                    if arrived.is_none()
                        && f.description.publisher == nas
                        && &f.description.id == id
                    {
                        arrived = Some(t.elapsed().as_micros() as u64);
                    }
                }
                arrived
            };
            let (got, arrived) =
                match tokio::time::timeout(WAIT, async { tokio::join!(find, sought) }).await {
                    Ok((got, arrived)) => (Ok(got), arrived),
                    Err(e) => (Err(e), None),
                };
            let whole = t.elapsed().as_micros() as u64;
            whole_micros.push(whole);
            finds += 1;
            let complete = matches!(&got, Ok(Ok(d)) if d.services
                .iter()
                .any(|f| f.description.publisher == nas && &f.description.id == id));
            // Not in hand until the find ended (or never): the find's whole time counts.
            let us = arrived.filter(|_| complete).unwrap_or(whole);
            micros.push(us);
            if a.explain {
                let what = match &got {
                    Ok(Ok(d)) => format!("{:?}", d.figures),
                    Ok(Err(e)) => format!("error: {e}"),
                    Err(_) => "timed out".into(),
                };
                slowest.push((
                    us,
                    format!(
                        "{keyword} (whole find {:.1} ms): {what}",
                        whole as f64 / 1000.0
                    ),
                ));
                slowest.sort_by_key(|x| std::cmp::Reverse(x.0));
                slowest.truncate(5);
            }
            if complete && arrived.is_some() {
                found += 1;
            }
        }
    }
    let (mut mb_per_s, mut fetch_errors) = (Vec::new(), Vec::new());
    for _ in 0..a.fetches {
        let t = Instant::now();
        match tokio::time::timeout(WAIT, h.phone.handle().fetch(&h.file, DeliveryMode::Pull)).await
        {
            Ok(Ok(got)) => {
                ensure!(got.bytes == h.file_bytes, "fetched {} bytes", got.bytes);
                mb_per_s.push(got.bytes as f64 / t.elapsed().as_secs_f64() / 1e6);
                let _ = std::fs::remove_file(&got.path);
            }
            Ok(Err(e)) => fetch_errors.push(e.to_string()),
            Err(_) => fetch_errors.push("timed out".into()),
        }
    }
    stop.cancel();
    Ok(Figures {
        found,
        finds,
        micros,
        whole_micros,
        slowest,
        mb_per_s,
        fetch_errors,
        rss_peak_mib: peak.load(Ordering::Relaxed) as f64 / 1024.0,
    })
}

async fn enrolled_node(
    admin: &cpns_auth::Admin,
    dir: &std::path::Path,
    user: &str,
    name: &str,
    mode: ModeSetting,
) -> Result<Node> {
    let node = Node::start(config(dir, name, mode)).await?;
    let code = admin
        .create_code(user, Modes::ALL, Duration::from_secs(600), false)
        .await?;
    node.handle().up(&code).await?;
    Ok(node)
}

async fn same_epoch(nodes: &[&Node]) -> Result<()> {
    let deadline = Instant::now() + WAIT;
    loop {
        let e: Vec<_> = nodes.iter().map(|n| n.handle().pn_epoch()).collect();
        if e[0].is_some() && e.iter().all(|x| *x == e[0]) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the PN's members never reached one key epoch: {e:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn first_addr(n: &Node) -> Result<Multiaddr> {
    n.dial_addrs()
        .await
        .into_iter()
        .next()
        .context("a node without an address")
}

async fn honest(admin: &cpns_auth::Admin, dir: &std::path::Path, mib: usize) -> Result<Honest> {
    let gw = enrolled_node(admin, dir, "alice", "router", ModeSetting::Gateway).await?;
    gw.handle()
        .wait_for_pn(WAIT)
        .await
        .context("the gateway's PN")?;
    let gw_addr = first_addr(&gw).await?;
    let mut members = Vec::new();
    for name in ["nas", "phone"] {
        let n = enrolled_node(admin, dir, "alice", name, ModeSetting::Auto).await?;
        n.handle().pair(gw_addr.clone()).await?;
        n.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
        members.push(n);
    }
    let (phone, nas) = (members.remove(1), members.remove(0));
    same_epoch(&[&gw, &nas, &phone]).await?;
    let mut public = Vec::new();
    for i in 0..4 {
        let keyword = format!("soak-printer-{i}");
        let d = nas
            .handle()
            .publish(
                ServiceDraft::new(
                    format!("Printer {i}"),
                    [keyword.as_str()],
                    Visibility::Public,
                ),
                None,
            )
            .await?;
        public.push((keyword, d.id));
    }
    let path = dir.join("photos.tar");
    let content: Vec<u8> = (0..mib * 1024 * 1024).map(|i| (i % 251) as u8).collect();
    std::fs::write(&path, &content)?;
    let file = nas
        .handle()
        .publish(
            ServiceDraft::new("Photos", ["photos"], nas.handle().default_visibility()),
            Some(path),
        )
        .await?
        .id;
    Ok(Honest {
        gw,
        nas,
        phone,
        public,
        file,
        file_bytes: content.len() as u64,
    })
}

fn random32() -> [u8; 32] {
    EuKey::generate().to_bytes()
}

fn random_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|_| random32().to_vec()).collect()
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A fresh, never-enrolled overlay node (a DHT server, as an attacker would run) that knows
/// `bootstrap`, started on the attackers' cores.
async fn fresh(bootstrap: &Multiaddr) -> Result<TestNode> {
    let bootstrap = bootstrap.clone();
    cores::on_attackers(async move {
        let cfg = cpns_overlay::Config {
            gate_requests: false,
            ..cpns_overlay::Config::default()
        };
        let node = TestNode::spawn_with(cfg, cpns_keys::Identity::generate()).await?;
        node.client.dial(bootstrap).await?;
        let _ = node.client.bootstrap().await;
        Ok(node)
    })
    .await
}

/// `node` announces itself as a provider of every key (64 announcements at a time), from the
/// attackers' cores.
async fn announce(node: &TestNode, keys: Vec<Vec<u8>>) {
    let client = node.client.clone();
    cores::on_attackers(async move {
        futures::future::join_all(keys.chunks(64).map(|chunk| {
            let c = client.clone();
            async move {
                for k in chunk {
                    let _ = c.start_providing(RecordKey::new(k)).await;
                }
            }
        }))
        .await;
    })
    .await;
}

/// Everything the attackers hold until the end of the attacked phase.
struct Attack {
    /// The enrolled hostile device (shared with the tasks of its floods).
    device: Arc<Device>,
    nodes: Vec<TestNode>,
    streams: Vec<libp2p::Stream>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    mallory: Node,
    /// Usage reports cpns-auth refused or acknowledged without storing (the flood's fate).
    usage_refused: Arc<AtomicU64>,
}

/// An enrolled device without a node: an overlay identity with a real credential, EUKey and
/// a session at cpns-auth (B.1 steps 8-11), as a hostile device would hold.
struct Device {
    node: TestNode,
    enrolment: cpns_node::enrolment::Enrolment,
}

impl Device {
    async fn auth(&self) -> Result<()> {
        let server = self.enrolment.server;
        let ask = |m| {
            self.node
                .client
                .request(server, Protocol::Auth, Message::Auth(m))
        };
        let nonce = match ask(AuthMessage::ConnectionSetupRequest {
            credential: self.enrolment.credential.clone(),
            mode: NodeMode::Pne,
        })
        .await?
        {
            Message::Auth(AuthMessage::AuthChallenge { nonce, .. }) => nonce,
            other => bail!("step 9 expected, got {other:?}"),
        };
        let t = transcript::auth_response(
            &nonce,
            &server,
            &self.node.identity.peer_id(),
            self.enrolment.credential.serial(),
            NodeMode::Pne,
        );
        ask(AuthMessage::AuthResponse {
            nonce,
            eukey_mac: self.enrolment.eukey.mac(&t),
            signature: self.node.identity.sign(&t),
        })
        .await?;
        Ok(())
    }

    fn usage_report(&self, sequence: u64) -> cpns_overlay::UsageReport {
        let me = self.node.identity.peer_id();
        let records: Vec<cpns_overlay::UsageRecord> = (0..1000)
            .map(|i| cpns_overlay::UsageRecord {
                service_id: format!("svc-flood-{i}"),
                service_name: "flood".into(),
                offerer: me,
                pn_id: None,
                started: unix_now().saturating_sub(60),
                duration_ms: 1,
                bytes: 1,
                capabilities: cpns_overlay::Capabilities::default(),
                status: cpns_overlay::Status::Online,
                samples: Default::default(),
                variant: None,
                ended: "completed".into(),
            })
            .collect();
        let t = transcript::usage_report(&me, sequence, &records);
        cpns_overlay::UsageReport {
            entity: me,
            credential: self.enrolment.credential.clone(),
            sequence,
            records,
            signature: self.node.identity.sign(&t),
        }
    }
}

async fn attack(
    admin: &cpns_auth::Admin,
    dir: &std::path::Path,
    h: &Honest,
    a: &Args,
) -> Result<Attack> {
    let gw_addr = first_addr(&h.gw).await?;
    let nas_addr = first_addr(&h.nas).await?;
    let (gw, nas) = (h.gw.peer_id(), h.nas.peer_id());
    let mut nodes = Vec::new();
    let mut streams = Vec::new();
    let mut tasks = Vec::new();

    // Provider floods without a credential: 4 x 1,024 random keys, 16 on every keyword.
    for _ in 0..if a.does("providers") { 4 } else { 0 } {
        let n = fresh(&gw_addr).await?;
        announce(&n, random_keys(1024)).await;
        nodes.push(n);
    }
    let keywords: Vec<Vec<u8>> = h
        .public
        .iter()
        .map(|(k, _)| cpns_directory::test_utils::public_keyword_key(k))
        .collect();
    for _ in 0..if a.does("keywords") { 16 } else { 0 } {
        let n = fresh(&gw_addr).await?;
        announce(&n, keywords.clone()).await;
        nodes.push(n);
    }

    // An enrolled device of another user: provider flood with a valid credential, huge
    // registrations, usage floods.
    let code = admin
        .create_code("mallory", Modes::ALL, Duration::from_secs(600), false)
        .await?;
    let tv = fresh(&gw_addr).await?;
    let enrolment = cpns_node::enrolment::enrol(&tv.client, &tv.identity, &code, "tv").await?;
    tv.client
        .set_credential(Some(enrolment.credential.to_bytes()))
        .await?;
    let device = Arc::new(Device {
        node: tv,
        enrolment,
    });
    if a.does("device-providers") {
        let mut keys = random_keys(1024);
        keys.extend(keywords.iter().cloned());
        announce(&device.node, keys).await;
    }
    device
        .auth()
        .await
        .context("the hostile device's session")?;

    let d = device.clone();
    let registrations = if a.does("registrations") { 20 } else { 0 };
    tasks.push(cores::attackers().spawn(async move {
        let listen_addrs: Vec<Multiaddr> = (0..60_000u32)
            .map(|i| {
                format!(
                    "/ip4/10.{}.{}.{}/tcp/4001",
                    i >> 16,
                    (i >> 8) & 255,
                    i & 255
                )
                .parse()
                .unwrap_or(Multiaddr::empty())
            })
            .collect();
        let reg = EntityRegistration {
            mode: NodeMode::Pne,
            credential: d.enrolment.credential.clone(),
            pn_id: None,
            gateway: None,
            listen_addrs,
            revocation_version: 0,
            gateway_addrs: Vec::new(),
        };
        for _ in 0..registrations {
            let m = Message::Pn(PnMessage::EntityRegistration(reg.clone()));
            let _ = d.node.client.request(gw, Protocol::Cpns, m).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }));
    let usage_refused = Arc::new(AtomicU64::new(0));
    let (d, refused) = (device.clone(), usage_refused.clone());
    let reports = if a.does("usage") { 100 } else { 0 };
    tasks.push(cores::attackers().spawn(async move {
        let server = d.enrolment.server;
        for _ in 0..reports {
            let r = random32();
            let seq =
                u64::from_be_bytes([r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]]) % 200_000;
            let m = Message::Auth(AuthMessage::UsageReport(d.usage_report(seq)));
            match d.node.client.request(server, Protocol::Auth, m).await {
                Ok(Message::Auth(AuthMessage::UsageAck { accepted })) if accepted > 0 => {}
                _ => {
                    refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }));

    // Idle delivery streams: 8 fresh identities x 5 to the NAS and 5 to the gateway.
    for _ in 0..if a.does("streams") { 8 } else { 0 } {
        let n = fresh(&gw_addr).await?;
        n.client.dial(nas_addr.clone()).await?;
        let mut control = n.client.stream_control();
        for target in [nas, gw] {
            for _ in 0..5 {
                if let Ok(Ok(s)) =
                    tokio::time::timeout(WAIT, control.open_stream(target, DELIVERY_PROTOCOL)).await
                {
                    streams.push(s);
                }
            }
        }
        nodes.push(n);
    }

    // Garbage and oversized frames on /cpns/1.0.0 to the gateway: 4 identities x 50 streams.
    for _ in 0..if a.does("frames") { 4 } else { 0 } {
        let n = fresh(&gw_addr).await?;
        let mut control = n.client.stream_control();
        tasks.push(cores::attackers().spawn(async move {
            for i in 0..50u32 {
                let Ok(Ok(mut s)) =
                    tokio::time::timeout(WAIT, control.open_stream(gw, CPNS_PROTOCOL)).await
                else {
                    continue;
                };
                let bytes = match i % 3 {
                    0 => random32().repeat(128),
                    1 => (16u32 << 20).to_be_bytes().to_vec(),
                    _ => {
                        let mut v = ((1u32 << 20) + 1).to_be_bytes().to_vec();
                        v.resize(4 + (1 << 20) + 1, 0xaa);
                        v
                    }
                };
                let _ = s.write_all(&bytes).await;
                let _ = s.close().await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }));
        nodes.push(n);
    }

    // Shadowing: another user's node publishes the honest ids under the honest keywords.
    let mallory = {
        let (admin, dir) = (admin.clone(), dir.to_path_buf());
        cores::on_attackers_blocking(move || async move {
            enrolled_node(&admin, &dir, "mallory", "mallory-nas", ModeSetting::Auto).await
        })
        .await?
    };
    mallory.handle().pair(gw_addr.clone()).await.ok();
    for (keyword, id) in h.public.iter().filter(|_| a.does("shadowing")) {
        let mut draft =
            ServiceDraft::new("Printer (better)", [keyword.as_str()], Visibility::Public);
        draft.id = Some(id.clone());
        let _ = mallory.handle().publish(draft, None).await;
    }
    Ok(Attack {
        device,
        nodes,
        streams,
        tasks,
        mallory,
        usage_refused,
    })
}

fn print_phase(label: &str, f: &Figures) {
    let mut mb = f.mb_per_s.clone();
    mb.sort_by(|a, b| a.total_cmp(b));
    let median = mb.get(mb.len() / 2).copied().unwrap_or(f64::NAN);
    let min = mb.first().copied().unwrap_or(f64::NAN);
    println!(
        "  {label}: discovery {}/{} found ({:.1} %), p50 {:.1} ms  p90 {:.1} ms  p99 {:.1} ms (whole find p50 {:.1}  p90 {:.1}  p99 {:.1} ms); delivery p50 {:.0} MB/s (min {:.0}); peak RSS {:.0} MiB",
        f.found,
        f.finds,
        100.0 * f.found as f64 / f.finds.max(1) as f64,
        common::percentile_ms(&f.micros, 50.0),
        common::percentile_ms(&f.micros, 90.0),
        common::percentile_ms(&f.micros, 99.0),
        common::percentile_ms(&f.whole_micros, 50.0),
        common::percentile_ms(&f.whole_micros, 90.0),
        common::percentile_ms(&f.whole_micros, 99.0),
        median,
        min,
        f.rss_peak_mib,
    );
    for (us, what) in &f.slowest {
        println!("    slow find {:.1} ms: {what}", *us as f64 / 1000.0);
    }
    if !f.fetch_errors.is_empty() {
        println!(
            "  {label}: {} fetches failed, first: {}",
            f.fetch_errors.len(),
            f.fetch_errors[0]
        );
    }
}

async fn run(a: Args) -> Result<bool> {
    let dir = tempfile::tempdir()?;
    let auth_dir = dir.path().join("auth");
    let auth = cores::on_attackers(cpns_auth::Server::start(cpns_auth::Config::with_data_dir(
        auth_dir,
    )))
    .await?;
    let admin = auth.admin();
    admin.create_user("alice").await?;
    admin.create_user("mallory").await?;
    let h = honest(&admin, dir.path(), a.mib).await?;
    // Every public service is found before the yardstick starts.
    for (keyword, id) in &h.public {
        let deadline = Instant::now() + WAIT;
        loop {
            let d = h
                .phone
                .handle()
                .find(&Query::keywords([keyword.as_str()]))
                .await;
            if d.is_ok_and(|d| d.services.iter().any(|f| &f.description.id == id)) {
                break;
            }
            if Instant::now() > deadline {
                bail!("{keyword} never found before the attack");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    println!(
        "Attack soak: PN of 3 (gateway, NAS, phone) on loopback, {} public services x {} rounds of discovery, {} pull fetches of {} MiB",
        h.public.len(),
        a.rounds,
        a.fetches,
        a.mib
    );
    if let Some(only) = &a.only {
        println!("  only these attacks: {only}");
    }
    let base = measure(&h, &a).await?;
    print_phase("alone   ", &base);

    let t = Instant::now();
    let attack = attack(&admin, dir.path(), &h, &a).await?;
    println!(
        "  attackers: {} overlay identities, {} idle delivery streams, set up in {:.1} s",
        attack.nodes.len(),
        attack.streams.len(),
        t.elapsed().as_secs_f64()
    );
    let hit = measure(&h, &a).await?;
    print_phase("attacked", &hit);
    for task in attack.tasks {
        let _ = tokio::time::timeout(WAIT, task).await;
    }
    let metrics = h.gw.handle().metrics_text().await;
    for line in metrics.lines().filter(|l| {
        !l.starts_with('#') && (l.contains("provider") || l.contains("refus")) && !l.ends_with(" 0")
    }) {
        println!("  gateway: {line}");
    }
    println!(
        "  usage flood: {} of 100 reports of 1,000 records refused or stored nothing",
        attack.usage_refused.load(Ordering::Relaxed)
    );

    // cpns-auth lost nothing: a charging record for every honest fetch.
    let want = 2 * a.fetches - base.fetch_errors.len() - hit.fetch_errors.len();
    let deadline = Instant::now() + WAIT;
    let honest_records = loop {
        let n = admin
            .usage_records()
            .await?
            .iter()
            .filter(|r| r.service_id == h.file)
            .count();
        if n >= want || Instant::now() > deadline {
            break n;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    println!("  cpns-auth: {honest_records} of {want} honest fetches charged");

    let p99 = |f: &Figures| common::percentile_ms(&f.micros, 99.0);
    let ratio = p99(&hit) / p99(&base);
    let whole = |f: &Figures| common::percentile_ms(&f.whole_micros, 99.0);
    println!(
        "  p99 attacked / alone: {ratio:.2} (goal <= 2; whole finds {:.2}); peak RSS {:.0} MiB (bound {RSS_BOUND_MIB:.0} MiB)",
        whole(&hit) / whole(&base),
        hit.rss_peak_mib
    );
    let ok = hit.found == hit.finds
        && base.found == base.finds
        && hit.fetch_errors.is_empty()
        && base.fetch_errors.is_empty()
        && ratio <= 2.0
        && hit.rss_peak_mib < RSS_BOUND_MIB
        && honest_records == want;
    println!("  goal met: {}", if ok { "yes" } else { "NO" });

    drop(attack.streams);
    if let Ok(d) = Arc::try_unwrap(attack.device) {
        d.node.shutdown().await;
    }
    for n in attack.nodes {
        n.shutdown().await;
    }
    attack.mallory.shutdown().await;
    for n in [h.phone, h.nas, h.gw] {
        n.shutdown().await;
    }
    auth.shutdown().await;
    Ok(ok)
}

fn main() -> Result<()> {
    let a = parse()?;
    let honest = cores::runtimes(a.shared_cores)?;
    let ok = honest.block_on(async {
        tokio::time::timeout(LIMIT, run(a))
            .await
            .context("the soak ran past its 10-minute limit")
    })??;
    honest.shutdown_timeout(Duration::from_secs(5));
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

/// Where the two sides run. In a real attack the hostile peers and cpns-auth are other
/// machines: what the attack costs the household is the work its own nodes do for it, not
/// the CPU the attackers spend making it. On one machine the two would share its cores, and
/// the honest members' latency would measure the attackers' own work (generating keys,
/// encoding 60,000 addresses, signing reports). So the honest PN (gateway, NAS, phone and all
/// their threads) runs pinned to one half of this process's CPUs, and the attackers and
/// cpns-auth to the other half, in both phases. `--shared-cores` runs everything on every
/// CPU, as this soak did before.
mod cores {
    use std::future::Future;
    use std::sync::OnceLock;

    use anyhow::{Context, Result};
    use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
    use nix::unistd::Pid;

    static ATTACKERS: OnceLock<tokio::runtime::Runtime> = OnceLock::new();

    /// The attackers' (and cpns-auth's) runtime.
    pub(crate) fn attackers() -> &'static tokio::runtime::Handle {
        ATTACKERS
            .get()
            .expect("the attackers' runtime is made first")
            .handle()
    }

    /// Runs `f` on the attackers' runtime: everything it starts (swarms, tasks, sled's
    /// threads) lives on the attackers' CPUs.
    pub(crate) async fn on_attackers<F>(f: F) -> F::Output
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        attackers()
            .spawn(f)
            .await
            .expect("an attacker task panicked")
    }

    /// [`on_attackers`] for a future that is not `Send` (a node's start and enrolment): made
    /// and driven on one of the attackers' blocking threads; what it spawns goes to their
    /// workers.
    pub(crate) async fn on_attackers_blocking<F, Fut>(make: F) -> Fut::Output
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: Future,
        Fut::Output: Send + 'static,
    {
        let handle = attackers().clone();
        attackers()
            .spawn_blocking(move || handle.block_on(make()))
            .await
            .expect("an attacker task panicked")
    }

    /// Makes the attackers' runtime and returns the honest one; prints the split.
    pub(crate) fn runtimes(shared: bool) -> Result<tokio::runtime::Runtime> {
        let all = sched_getaffinity(Pid::from_raw(0)).context("sched_getaffinity")?;
        let cpus: Vec<usize> = (0..CpuSet::count())
            .filter(|&c| all.is_set(c).unwrap_or(false))
            .collect();
        let split = if shared || cpus.len() < 2 {
            if !shared {
                println!("one CPU only: the honest PN and the attackers share it");
            }
            None
        } else {
            let (honest, attackers) = cpus.split_at(cpus.len() / 2);
            println!(
                "CPUs: honest PN on {honest:?}; attackers and cpns-auth on {attackers:?} (--shared-cores to share them)"
            );
            Some((set(honest)?, set(attackers)?))
        };
        let build = |name: &'static str, on: Option<CpuSet>| {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            b.enable_all().worker_threads(2).thread_name(name);
            if let Some(on) = on {
                // Every thread of the runtime, the blocking pool's included.
                b.on_thread_start(move || {
                    let _ = sched_setaffinity(Pid::from_raw(0), &on);
                });
            }
            b.build()
        };
        let _ = ATTACKERS.set(build("attackers", split.map(|s| s.1))?);
        if let Some((honest, _)) = split {
            // The thread that drives the honest side, and the threads it starts.
            sched_setaffinity(Pid::from_raw(0), &honest).context("sched_setaffinity")?;
        }
        Ok(build("honest", split.map(|s| s.0))?)
    }

    fn set(cpus: &[usize]) -> Result<CpuSet> {
        let mut s = CpuSet::new();
        for &c in cpus {
            s.set(c)?;
        }
        Ok(s)
    }
}
