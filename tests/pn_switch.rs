//! Switching the current PNE to another PNE (5.6.9): a delivery in progress moves from one PNE
//! to another of the same user; the offerer continues from where it stopped (resume by
//! offset), the content arrives whole at the new PNE, and usage is reported once. The contents
//! are large enough (64 MiB; 256 MiB, mostly sparse, for the CLI) that a pause as soon as bytes
//! flow always lands part-way; the tests check that it did.

use anyhow::{Context as _, Result, ensure};
use cpns_directory::ServiceDraft;
use cpns_node::delivery::Action;
use cpns_overlay::DeliveryMode;

use crate::delivery_control::session_where;
use crate::pn_admin::invited;
use crate::util::{Lab, LabNode, WAIT, init_tracing, same_epoch, wait_for};

/// The files in a node's downloads directory.
fn downloads(node: &LabNode) -> Vec<String> {
    std::fs::read_dir(node.data_dir().join("downloads"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Content that shows a misplaced byte: no two 4 KiB blocks alike.
fn content(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// The phone receives a film from the NAS, paused part-way; it switches the session to the
/// television (another PNE of alice). The television ends with the whole film, byte for byte;
/// the phone's session is gone and it keeps no file; cpns-auth holds one usage record for
/// the session, with every byte. A switch to bob's device in the same PN is refused, and so
/// is an offset past the end of the content.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_delivery_moves_to_another_pne_of_the_user_and_arrives_whole() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("bob").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone", "tv"]).await?;
    let (tv, phone, nas) = (members.remove(2), members.remove(1), members.remove(0));
    let bob = invited(&lab, &gw, "bob", "bob-tablet").await?;
    same_epoch(&[&gw, &nas, &phone, &tv, &bob]).await?;

    let dir = tempfile::tempdir()?;
    let total = 64usize << 20;
    let film = content(total);
    let film_path = dir.path().join("film.ts");
    std::fs::write(&film_path, &film)?;
    let vis = nas.handle().default_visibility();
    let svc = nas
        .handle()
        .publish(ServiceDraft::new("Film", ["film"], vis), Some(film_path))
        .await?;

    // The phone pulls it and pauses it part-way.
    let fetch = tokio::spawn({
        let h = phone.handle();
        let id = svc.id.clone();
        async move { h.fetch(&id, DeliveryMode::Pull).await }
    });
    let running = session_where(&phone, &svc.id, "consumer", "bytes flowing", |s| {
        s.bytes > 0
    })
    .await?;
    phone
        .handle()
        .content()
        .control(&running.id, Action::Pause)
        .await?;
    let held = session_where(&nas, &svc.id, "offerer", "the pause at the offerer", |s| {
        s.state == "paused by the consumer"
    })
    .await?;
    ensure!(
        held.bytes > 0 && held.bytes < total as u64,
        "not paused part-way: {held:?}"
    );

    // Resume by offset: an offset past the end is refused, with a clear error.
    let e = phone
        .handle()
        .content()
        .continue_at(&running.id, total as u64 + 1)
        .await
        .err()
        .context("an offset past the end was taken")?
        .to_string();
    ensure!(e.contains("beyond the content"), "{e}");

    // Another user's device, even in the same PN, is no PNE to switch to.
    let e = phone
        .handle()
        .pn_switch(bob.peer_id(), Some(&running.id))
        .await
        .err()
        .context("a switch to bob's device was taken")?
        .to_string();
    ensure!(e.contains("a device of user bob"), "{e}");

    // The switch to the television.
    let switched = phone
        .handle()
        .pn_switch(tv.peer_id(), Some(&running.id))
        .await?;
    ensure!(switched.sessions.len() == 1, "{switched:?}");
    let moved = &switched.sessions[0];
    ensure!(
        moved.id == running.id && moved.total == total as u64,
        "{switched:?}"
    );
    ensure!(
        moved.offset > 0 && moved.offset < total as u64,
        "not switched mid-content: {moved:?}"
    );
    let out = fetch.await??;
    ensure!(
        out.ended == format!("switched to {}", tv.peer_id()),
        "{out:?}"
    );
    ensure!(out.path.is_empty() && out.bytes == moved.offset, "{out:?}");
    ensure!(
        downloads(&phone).is_empty(),
        "the old PNE kept {:?}",
        downloads(&phone)
    );

    // The television ends with the whole film.
    let file = tv.data_dir().join("downloads").join(&svc.id);
    wait_for(WAIT, "the film at the television", || {
        let done = tv
            .handle()
            .content()
            .sessions()
            .iter()
            .all(|s| s.service_id != svc.id);
        (done && file.exists()).then_some(())
    })
    .await?;
    let got = std::fs::read(&file)?;
    ensure!(got.len() == total, "{} of {total} bytes", got.len());
    ensure!(got == film, "the television's film differs from the source");
    ensure!(
        downloads(&tv) == vec![svc.id.clone()],
        "{:?}",
        downloads(&tv)
    );
    // The phone's session is gone, and so are the offerer's.
    ensure!(
        phone
            .handle()
            .content()
            .sessions()
            .iter()
            .all(|s| s.service_id != svc.id),
        "the old PNE still has the session"
    );
    wait_for(WAIT, "the offerer's sessions to end", || {
        let left = nas.handle().content().sessions();
        left.iter().all(|s| s.service_id != svc.id).then_some(())
    })
    .await?;

    // Usage is reported once, with every byte of the session.
    let deadline = tokio::time::Instant::now() + WAIT;
    let line = loop {
        let csv = lab
            .admin()
            .export_usage(cpns_auth::UsageFormat::Csv)
            .await?;
        let lines: Vec<String> = csv
            .lines()
            .filter(|l| l.contains(svc.id.as_str()))
            .map(str::to_owned)
            .collect();
        ensure!(lines.len() <= 1, "more than one usage record:\n{csv}");
        if let Some(l) = lines.into_iter().next() {
            break l;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no usage record:\n{csv}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    ensure!(line.contains(&format!(",{total},")), "{line}");
    ensure!(line.contains("ended=completed"), "{line}");

    // Traced as flow 5.6.9.
    let steps = |n: &LabNode| -> Vec<(u32, String)> {
        n.handle()
            .trace()
            .iter()
            .filter(|e| e.flow == "5.6.9" && e.step >= 50)
            .map(|e| (e.step, e.message.clone()))
            .collect()
    };
    let at_phone = steps(&phone);
    for (step, msg) in [
        (50, "SwitchSession"),
        (51, "HandOverSession"),
        (52, "HandOverReceivedContent"),
    ] {
        ensure!(
            at_phone.iter().any(|(s, m)| *s == step && m == msg),
            "{msg} not traced at the old PNE: {at_phone:?}"
        );
    }
    let at_tv = steps(&tv);
    for (step, msg) in [(53, "ContinueFromOffset"), (54, "ContentContinued")] {
        ensure!(
            at_tv.iter().any(|(s, m)| *s == step && m == msg),
            "{msg} not traced at the new PNE: {at_tv:?}"
        );
    }
    lab.shutdown(vec![gw, nas, phone, tv, bob]).await;
    Ok(())
}

mod cli {
    //! `cpns pn switch` with the real binaries: three `cpns-node` processes of alice form a PN;
    //! a fetch by the laptop, paused part-way, moves to the television, which ends with the
    //! whole film.

    use std::path::{Path, PathBuf};
    use std::process::{Child, Stdio};

    use anyhow::{Context as _, Result, ensure};
    use serde_json::Value;

    use crate::cli::{
        Daemons, WAIT, auth_cli, command, cpns, run, run_json, start_auth_with_alice, wait_for,
    };
    use crate::node::wait_timeout;

    /// A `cpns` process left running (the fetch); killed if the test fails.
    struct Background(Child);

    impl Drop for Background {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn start_node(
        daemons: &mut Daemons,
        root: &Path,
        name: &str,
        extra: &[&str],
    ) -> Result<PathBuf> {
        let dir = root.join(name);
        let mut cmd = command("cpns-node");
        cmd.arg("--data-dir")
            .arg(&dir)
            .args([
                "--listen",
                "/ip4/127.0.0.1/tcp/0",
                "--mdns",
                "off",
                "--device-name",
                name,
            ])
            .args(extra);
        daemons.start(name, cmd, &root.join(format!("{name}.log")))?;
        Ok(dir)
    }

    /// Whether two files hold the same bytes (read a block at a time).
    fn same_bytes(a: &Path, b: &Path) -> Result<bool> {
        use std::io::Read;
        let (mut a, mut b) = (std::fs::File::open(a)?, std::fs::File::open(b)?);
        if a.metadata()?.len() != b.metadata()?.len() {
            return Ok(false);
        }
        let (mut x, mut y) = (vec![0u8; 1 << 20], vec![0u8; 1 << 20]);
        loop {
            let n = a.read(&mut x)?;
            if n == 0 {
                return Ok(true);
            }
            b.read_exact(&mut y[..n])?;
            if x[..n] != y[..n] {
                return Ok(false);
            }
        }
    }

    /// `cpns status` once the node answers and `pred` holds.
    fn status_where(
        daemons: &mut Daemons,
        dir: &Path,
        what: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        wait_for(daemons, WAIT, what, || {
            if !dir.join(cpns_node::API_FILE).exists() {
                return Ok(None);
            }
            let out = run(cpns(dir, &["status"]), WAIT)?;
            let s: Option<Value> = out
                .status
                .success()
                .then(|| serde_json::from_slice(&out.stdout).ok())
                .flatten();
            Ok(s.filter(|s| pred(s)))
        })
    }

    #[test]
    fn pn_switch_moves_a_paused_fetch_to_another_pne_through_the_cli() -> Result<()> {
        let tmp = tempfile::tempdir()?;
        let root = tmp.path();
        let mut daemons = Daemons::default();
        let auth = start_auth_with_alice(&mut daemons, root)?;
        let code = || -> Result<String> {
            let v = run_json(auth_cli(
                &auth,
                &["enrol", "create", "--user", "alice", "--json"],
            ))?;
            v["code"].as_str().map(str::to_owned).context("no code")
        };
        let nas = start_node(&mut daemons, root, "nas", &["--code", &code()?])?;
        status_where(&mut daemons, &nas, "the NAS enrolled", |s| {
            s["enrolled"] == true
        })?;
        let pairing = run_json(cpns(&nas, &["pairing-code"]))?;
        let pairing = pairing["code"].as_str().context("pairing code")?.to_owned();
        let laptop = start_node(
            &mut daemons,
            root,
            "laptop",
            &["--code", &code()?, "--pair", &pairing],
        )?;
        status_where(&mut daemons, &laptop, "the PN of two", |s| {
            s["pn_id"].is_string() && s["members"].as_array().map(Vec::len) == Some(2)
        })?;
        let pairing = run_json(cpns(&nas, &["pairing-code"]))?;
        let pairing = pairing["code"].as_str().context("pairing code")?.to_owned();
        let tv = start_node(
            &mut daemons,
            root,
            "tv",
            &["--code", &code()?, "--pair", &pairing],
        )?;
        let three =
            |s: &Value| s["pn_id"].is_string() && s["members"].as_array().map(Vec::len) == Some(3);
        status_where(
            &mut daemons,
            &laptop,
            "the laptop in the PN of three",
            three,
        )?;
        let tv_status = status_where(&mut daemons, &tv, "the TV in the PN of three", three)?;
        let tv_id = tv_status["peer_id"].as_str().context("peer id")?.to_owned();

        // Long enough that the CLI's polling catches it part-way: patterned at both ends,
        // sparse between (no disk until received).
        let total = 256usize << 20;
        let film_path = root.join("film.ts");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(&film_path)?;
            f.write_all(&super::content(8 << 20))?;
            f.seek(SeekFrom::Start((total - (1 << 20)) as u64))?;
            f.write_all(&super::content(1 << 20))?;
        }
        let published = run_json(cpns(
            &nas,
            &[
                "services",
                "publish",
                "--name",
                "Film",
                "-k",
                "film",
                "--file",
                film_path.to_str().context("path")?,
            ],
        ))?;
        let id = published["id"].as_str().context("service id")?.to_owned();
        let out_path = root.join("fetch.json");
        let mut fetch = Background(
            cpns(&laptop, &["content", "fetch", &id])
                .stdout(std::fs::File::create(&out_path)?)
                .stderr(Stdio::null())
                .spawn()?,
        );
        let running = wait_for(&mut daemons, WAIT, "bytes flowing", || {
            let list = run_json(cpns(&laptop, &["content", "sessions"]))?;
            Ok(list
                .as_array()
                .into_iter()
                .flatten()
                .find(|s| {
                    s["service_id"] == id.as_str()
                        && s["role"] == "consumer"
                        && s["bytes"].as_u64().unwrap_or(0) > 0
                })
                .cloned())
        })?;
        let session = running["id"].as_str().context("session id")?.to_owned();
        let paused = run_json(cpns(&laptop, &["content", "pause", &session]))?;
        ensure!(paused["state"] == "paused by the consumer", "{paused}");

        // A peer that is no member of the PN: refused, clearly.
        let stranger = libp2p::PeerId::random().to_string();
        let out = run(cpns(&laptop, &["pn", "switch", "--to", &stranger]), WAIT)?;
        ensure!(!out.status.success(), "a switch to a stranger succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        ensure!(err.contains("is not a member of this PN"), "{err}");

        // The switch to the television.
        let switched = run_json(cpns(
            &laptop,
            &["pn", "switch", "--to", &tv_id, "--session", &session],
        ))?;
        let moved = &switched["sessions"][0];
        ensure!(moved["id"] == session.as_str(), "{switched}");
        let offset = moved["offset"].as_u64().unwrap_or(0);
        ensure!(offset > 0 && offset < total as u64, "{switched}");
        let status = wait_timeout(&mut fetch.0, WAIT)?.context("the fetch did not end")?;
        ensure!(status.success(), "the switched fetch failed: {status}");
        let outcome: Value = serde_json::from_slice(&std::fs::read(&out_path)?)?;
        ensure!(
            outcome["ended"] == format!("switched to {tv_id}").as_str(),
            "{outcome}"
        );
        let file = tv.join("downloads").join(&id);
        wait_for(&mut daemons, WAIT, "the film at the TV", || {
            let list = run_json(cpns(&tv, &["content", "sessions"]))?;
            let done = list
                .as_array()
                .into_iter()
                .flatten()
                .all(|s| s["service_id"] != id.as_str());
            Ok((done && file.exists()).then_some(()))
        })?;
        ensure!(
            same_bytes(&file, &film_path)?,
            "the TV's film differs from the source"
        );
        Ok(())
    }
}
