//! Service/Content Delivery of 5.6.7 beyond one fetch, with real nodes, a real `cpns-auth` and
//! real HTTP servers on loopback: several services in one invocation sharing the link fairly,
//! invocation based on device capability (variants), an external Application/Content server
//! fetched once by the gateway for many consumers, and usage reported to an external
//! collector as the user's preferences allow (5.6.3).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use cpns_directory::{Requirements, ServiceDraft};
use cpns_node::config::CapabilitiesConfig;
use cpns_node::delivery::{ContentSource, Needs, Origin, Variant};
use cpns_overlay::DeliveryMode;
use sha2::{Digest, Sha256};

use crate::delivery_control::sparse;
use crate::util::{Lab, WAIT, init_tracing, wait_for};

/// A real HTTP server on 127.0.0.1: `GET /film.bin` (counted), `GET /missing` (404),
/// `POST /usage` (bodies kept). Stops when dropped.
struct Http {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    posts: Arc<Mutex<Vec<serde_json::Value>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Http {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Http {
    async fn start(film: Vec<u8>) -> Result<Http> {
        use axum::routing::{get, post};
        let hits = Arc::new(AtomicUsize::new(0));
        let posts = Arc::new(Mutex::new(Vec::new()));
        let film = Arc::new(film);
        let app = axum::Router::new()
            .route(
                "/film.bin",
                get({
                    let hits = hits.clone();
                    move || {
                        let film = film.clone();
                        hits.fetch_add(1, Ordering::SeqCst);
                        async move { film.as_ref().clone() }
                    }
                }),
            )
            .route(
                "/missing",
                get(|| async { (axum::http::StatusCode::NOT_FOUND, "no such film") }),
            )
            .route(
                "/usage",
                post({
                    let posts = posts.clone();
                    move |axum::Json(v): axum::Json<serde_json::Value>| {
                        posts.lock().expect("posts").push(v);
                        async { "ok" }
                    }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Http {
            addr,
            hits,
            posts,
            task,
        })
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed) * 0x9E37_79B9 + 7;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Several services in one invocation (5.6.7 "supporting single/multiple services"): one
/// request to the offerer names them all, a refused one does not hold up the others, and the
/// two deliveries under way at once get equal shares of the link (measured on the consumer's
/// progress while both run).
#[tokio::test]
async fn several_services_in_one_invocation_share_the_link_fairly() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "tv"]).await?;
    let (tv, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let total = 128u64 << 20;
    let vis = nas.handle().default_visibility();
    let mut ids = Vec::new();
    for name in ["news", "sport"] {
        let file = sparse(dir.path(), &format!("{name}.ts"), total)?;
        let d = nas
            .handle()
            .publish(ServiceDraft::new(name, [name], vis.clone()), Some(file))
            .await?;
        ids.push(d.id);
    }
    let mut big = ServiceDraft::new("8K film", ["film"], vis);
    big.requirements = Requirements {
        min_memory_bytes: Some(u64::MAX),
        ..Requirements::default()
    };
    let film = sparse(dir.path(), "film.ts", 1024)?;
    let refused = nas.handle().publish(big, Some(film)).await?;
    let mut asked = ids.clone();
    asked.push(refused.id.clone());

    let fetch = tokio::spawn({
        let h = tv.handle();
        async move { h.content().fetch_many(&asked, DeliveryMode::Pull).await }
    });
    // The consumer's progress on both, sampled while both run.
    let mut samples: Vec<(u64, u64)> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !fetch.is_finished() && tokio::time::Instant::now() < deadline {
        let s = tv.handle().content().sessions();
        let of = |id: &str| {
            s.iter()
                .find(|x| x.service_id == id && x.role == "consumer")
                .map(|x| x.bytes)
        };
        if let (Some(a), Some(b)) = (of(&ids[0]), of(&ids[1])) {
            samples.push((a, b));
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let all = fetch.await??;
    ensure!(all.len() == 3, "{all:?}");
    let zeros = hex::encode(Sha256::digest(vec![0u8; total as usize]));
    for (id, r) in &all[..2] {
        let o = r.as_ref().map_err(|e| anyhow::anyhow!("{id}: {e}"))?;
        ensure!(o.bytes == total && o.sha256 == zeros, "{o:?}");
    }
    let e = all[2]
        .1
        .as_ref()
        .err()
        .context("the 8K film was delivered")?;
    ensure!(e.to_string().contains("refused"), "{e}");
    // One invocation for the three.
    let invokes = tv
        .handle()
        .trace()
        .into_iter()
        .filter(|e| e.flow == "G.1" && e.step == 5)
        .count();
    ensure!(invokes == 1, "{invokes} invocations");

    // Fair shares while both ran: from the first sample where both had bytes to the last
    // where neither was done.
    let both: Vec<&(u64, u64)> = samples
        .iter()
        .filter(|(a, b)| *a > 0 && *b > 0 && *a < total && *b < total)
        .collect();
    ensure!(
        both.len() >= 2,
        "too few samples while both ran: {samples:?}"
    );
    let (first, last) = (both[0], both[both.len() - 1]);
    let (da, db) = ((last.0 - first.0) as f64, (last.1 - first.1) as f64);
    let jain = (da + db).powi(2) / (2.0 * (da * da + db * db));
    eprintln!(
        "two deliveries at once: {:.1} MB and {:.1} MB while both ran, Jain index {jain:.3}",
        da / 1e6,
        db / 1e6
    );
    ensure!(
        da.min(db) >= 0.6 * da.max(db),
        "unfair shares: {da} and {db} bytes while both ran"
    );
    lab.shutdown(vec![gw, nas, tv]).await;
    Ok(())
}

fn variant(name: &str, file: Option<std::path::PathBuf>, needs: Needs) -> Variant {
    Variant {
        name: name.into(),
        file,
        chunk_kib: None,
        needs,
    }
}

/// Invocation based on device capability: the offerer picks the variant that fits the
/// consumer's capabilities now (screen, battery, memory), traces its choice and the usage
/// record carries it; a device that fits none is refused, with the reasons.
#[tokio::test]
async fn the_offerer_picks_the_variant_that_fits_the_device() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "tv"]).await?;
    let (tv, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let (hd, sd, audio) = (content(300_000, 1), content(100_000, 2), content(20_000, 3));
    for (name, bytes) in [("hd.ts", &hd), ("sd.ts", &sd), ("audio.aac", &audio)] {
        std::fs::write(dir.path().join(name), bytes)?;
    }
    let source = ContentSource {
        origin: Origin::File(dir.path().join("audio.aac")),
        variants: vec![
            variant(
                "hd",
                Some(dir.path().join("hd.ts")),
                Needs {
                    min_screen_width: Some(1280),
                    min_battery_percent: Some(30),
                    ..Needs::default()
                },
            ),
            variant(
                "sd",
                Some(dir.path().join("sd.ts")),
                Needs {
                    needs_screen: true,
                    ..Needs::default()
                },
            ),
            variant("audio", None, Needs::default()),
        ],
    };
    let vis = nas.handle().default_visibility();
    let svc = nas
        .handle()
        .content()
        .publish(
            ServiceDraft::new("Concert", ["concert"], vis.clone()),
            Some(source),
        )
        .await?;
    ensure!(
        svc.metadata.get("variants").map(String::as_str) == Some("hd,sd,audio"),
        "{:?}",
        svc.metadata
    );
    let caps = |screen: &str, battery: Option<u8>| CapabilitiesConfig {
        screen: Some(screen.into()),
        power: Some(
            if battery.is_some() {
                "battery"
            } else {
                "mains"
            }
            .into(),
        ),
        battery_percent: battery,
        ..CapabilitiesConfig::default()
    };
    for (patch, want, bytes) in [
        (caps("1920x1080", None), "hd", &hd),
        (caps("1920x1080", Some(12)), "sd", &sd),
        (caps("800x480", None), "sd", &sd),
        (caps("none", None), "audio", &audio),
    ] {
        tv.handle().set_capabilities(patch).await?;
        let got = tv.handle().fetch(&svc.id, DeliveryMode::Pull).await?;
        ensure!(
            got.variant.as_deref() == Some(want),
            "wanted {want}: {got:?}"
        );
        ensure!(got.sha256 == hex::encode(Sha256::digest(bytes)), "{got:?}");
        ensure!(got.decision.contains(&format!("variant {want}")), "{got:?}");
    }
    // The choice, with why the better variants were passed over, is in the offerer's trace.
    let trace = nas.handle().trace();
    ensure!(
        trace.iter().any(|e| e.flow == "G.1"
            && e.step == 6
            && e.detail.contains("variant sd")
            && e.detail.contains("hd needs 30 % battery")),
        "the variant chosen is not traced"
    );
    // And in the usage records.
    let csv = lab
        .admin()
        .export_usage(cpns_auth::UsageFormat::Csv)
        .await?;
    for v in ["variant=hd", "variant=sd", "variant=audio"] {
        ensure!(
            csv.contains(v),
            "{v} missing from the charging records:\n{csv}"
        );
    }

    // A service whose every variant needs mains power refuses a device on battery.
    let picky = ContentSource {
        origin: Origin::File(dir.path().join("hd.ts")),
        variants: vec![variant(
            "hd",
            None,
            Needs {
                mains_power: true,
                ..Needs::default()
            },
        )],
    };
    let picky = nas
        .handle()
        .content()
        .publish(ServiceDraft::new("Picky", ["picky"], vis), Some(picky))
        .await?;
    tv.handle()
        .set_capabilities(caps("1920x1080", Some(80)))
        .await?;
    let e = tv
        .handle()
        .fetch(&picky.id, DeliveryMode::Pull)
        .await
        .err()
        .context("a device on battery got a mains-only service")?;
    ensure!(
        e.to_string()
            .contains("no variant fits this device: hd needs mains power"),
        "{e}"
    );
    lab.shutdown(vec![gw, nas, tv]).await;
    Ok(())
}

/// An external Application/Content server (5.6.7 "between PN GW and external entities"): the
/// gateway publishes a service whose source is an HTTP URL, fetches it once for two
/// consumers, delivers it sealed under the PN key, and both uses are reported; a source that
/// fails refuses the invocation with its reason.
#[tokio::test]
async fn an_external_http_source_is_fetched_once_for_many_consumers() -> Result<()> {
    init_tracing();
    let film = content(3 * 1024 * 1024 + 5, 9);
    let http = Http::start(film.clone()).await?;
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["tv", "tablet"]).await?;
    let vis = gw.handle().default_visibility();
    let mut draft = ServiceDraft::new("Film from the shop", ["shop"], vis.clone());
    draft.source = Some(cpns_directory::Source::External {
        name: "The film shop".into(),
        url: Some(http.url("/film.bin")),
    });
    let source = ContentSource {
        origin: Origin::Http(http.url("/film.bin")),
        variants: Vec::new(),
    };
    let svc = gw.handle().content().publish(draft, Some(source)).await?;

    let fetches = members.iter().map(|m| {
        let h = m.handle();
        let id = svc.id.clone();
        async move { h.fetch(&id, DeliveryMode::Pull).await }
    });
    let outcomes = futures::future::join_all(fetches).await;
    let want = hex::encode(Sha256::digest(&film));
    for o in &outcomes {
        let o = o.as_ref().map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(o.sha256 == want && o.bytes == film.len() as u64, "{o:?}");
        ensure!(o.offerer == gw.peer_id().to_string(), "{o:?}");
        ensure!(o.usage == "reported", "{o:?}");
    }
    // Once more, later: still the one fetch.
    members[0]
        .handle()
        .fetch(&svc.id, DeliveryMode::Push)
        .await?;
    ensure!(
        http.hits.load(Ordering::SeqCst) == 1,
        "the external server was asked {} times",
        http.hits.load(Ordering::SeqCst)
    );
    ensure!(
        gw.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.7" && e.step == 7 && e.message == "FetchExternalContent"),
        "the external fetch is traced"
    );
    let csv = lab
        .admin()
        .export_usage(cpns_auth::UsageFormat::Csv)
        .await?;
    ensure!(csv.matches(svc.id.as_str()).count() == 3, "{csv}");

    // A source that answers 404: the invocation is refused with the reason.
    let mut draft = ServiceDraft::new("Gone film", ["gone"], vis);
    draft.source = Some(cpns_directory::Source::External {
        name: "The film shop".into(),
        url: None,
    });
    let gone = gw
        .handle()
        .content()
        .publish(
            draft,
            Some(ContentSource {
                origin: Origin::Http(http.url("/missing")),
                variants: Vec::new(),
            }),
        )
        .await?;
    let e = members[1]
        .handle()
        .fetch(&gone.id, DeliveryMode::Pull)
        .await
        .err()
        .context("a missing external source was delivered")?;
    ensure!(e.to_string().contains("404"), "{e}");
    let mut all = members;
    all.push(gw);
    lab.shutdown(all).await;
    drop(http);
    Ok(())
}

/// Usage statistics during use go to `cpns-auth` and to an external collector (a real HTTP
/// receiver), as the user's preferences allow: a service never to be reported externally is
/// reported to `cpns-auth` only, and with `omit_capabilities` the samples stay home.
#[tokio::test]
async fn usage_goes_to_an_external_collector_as_the_preferences_allow() -> Result<()> {
    init_tracing();
    let http = Http::start(Vec::new()).await?;
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let collector = http.url("/usage");
    let (gw, mut members) = lab
        .pn_configured("alice", "router", &["nas", "tv"], |c| {
            c.usage.collector_url = collector.clone();
            c.usage.sample_secs = 1;
        })
        .await?;
    let (tv, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let vis = nas.handle().default_visibility();
    let mut ids = Vec::new();
    for name in ["radio", "iptv"] {
        let f = dir.path().join(name);
        std::fs::write(&f, content(200_000, 4))?;
        let d = nas
            .handle()
            .publish(ServiceDraft::new(name, [name], vis.clone()), Some(f))
            .await?;
        ids.push(d.id);
    }
    let radio = tv.handle().fetch(&ids[0], DeliveryMode::Pull).await?;
    ensure!(
        radio.collector == "sent" && radio.usage == "reported",
        "{radio:?}"
    );
    let posted = wait_for(WAIT, "the collector's record", || {
        http.posts.lock().ok()?.first().cloned()
    })
    .await?;
    ensure!(posted["entity"] == tv.peer_id().to_string(), "{posted}");
    ensure!(posted["user"] == "alice", "{posted}");
    let record = &posted["record"];
    ensure!(record["service_id"] == ids[0].as_str(), "{posted}");
    ensure!(record["bytes"] == 200_000, "{posted}");
    ensure!(record["ended"] == "completed", "{posted}");
    ensure!(
        record["samples"]["count"].as_u64().unwrap_or(0) >= 2,
        "start and end are sampled: {posted}"
    );

    // Preferences: IPTV never leaves for the collector; capabilities are left out.
    tv.handle()
        .content()
        .set_report_prefs(vec![ids[1].clone()], true)
        .await?;
    let iptv = tv.handle().fetch(&ids[1], DeliveryMode::Pull).await?;
    ensure!(
        iptv.collector == "suppressed" && iptv.usage == "reported",
        "{iptv:?}"
    );
    let again = tv.handle().fetch(&ids[0], DeliveryMode::Pull).await?;
    ensure!(again.collector == "sent", "{again:?}");
    let posts = wait_for(WAIT, "the second record", || {
        let p = http.posts.lock().ok()?;
        (p.len() >= 2).then(|| p.clone())
    })
    .await?;
    ensure!(posts.len() == 2, "{posts:?}");
    ensure!(
        posts
            .iter()
            .all(|p| p["record"]["service_id"] != ids[1].as_str()),
        "a service never to be reported externally reached the collector"
    );
    ensure!(
        posts[1]["record"]["samples"]["count"] == 0,
        "omitted capabilities were sent: {}",
        posts[1]
    );
    let csv = lab
        .admin()
        .export_usage(cpns_auth::UsageFormat::Csv)
        .await?;
    ensure!(
        csv.contains(ids[1].as_str()),
        "cpns-auth has the IPTV use: {csv}"
    );
    lab.shutdown(vec![gw, nas, tv]).await;
    drop(http);
    Ok(())
}
