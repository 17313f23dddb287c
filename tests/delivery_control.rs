//! Control of a running service (5.6.7 "Control of Service (e.g. start, stop)"): either side
//! pauses, resumes and stops a delivery; a stopped delivery ends on both sides, leaves no
//! partial file that looks complete, and its usage is reported once with the bytes actually
//! delivered — with the device's status and capabilities sampled during the use (5.6.3).

use anyhow::{Result, ensure};
use cpns_directory::ServiceDraft;
use cpns_node::delivery::{Action, SessionInfo};
use cpns_overlay::{DeliveryMode, Status};
use sha2::{Digest, Sha256};

use crate::util::{Lab, LabNode, WAIT, init_tracing, wait_for};

/// A file of `len` zero bytes that takes no disk space.
pub fn sparse(dir: &std::path::Path, name: &str, len: u64) -> Result<std::path::PathBuf> {
    let path = dir.join(name);
    std::fs::File::create(&path)?.set_len(len)?;
    Ok(path)
}

/// The session of `service` at `node` on `role`'s side, once `pred` holds for it.
pub async fn session_where(
    node: &LabNode,
    service: &str,
    role: &str,
    what: &str,
    pred: impl Fn(&SessionInfo) -> bool,
) -> Result<SessionInfo> {
    wait_for(WAIT, what, || {
        node.handle()
            .content()
            .sessions()
            .into_iter()
            .find(|s| s.service_id == service && s.role == role && pred(s))
    })
    .await
}

fn downloads(node: &LabNode) -> Vec<String> {
    std::fs::read_dir(node.data_dir().join("downloads"))
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_stop_by_the_consumer_ends_both_sides_keeps_no_file_and_reports_once() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let total = 1u64 << 30;
    let film = sparse(dir.path(), "film.ts", total)?;
    let vis = nas.handle().default_visibility();
    let svc = nas
        .handle()
        .publish(ServiceDraft::new("Film", ["film"], vis), Some(film))
        .await?;

    let fetch = tokio::spawn({
        let h = phone.handle();
        let id = svc.id.clone();
        async move { h.fetch(&id, DeliveryMode::Pull).await }
    });
    let running = session_where(&phone, &svc.id, "consumer", "bytes flowing", |s| {
        s.bytes > 0
    })
    .await?;
    // The offerer pauses; the consumer learns it from the stream.
    nas.handle()
        .content()
        .control(&running.id, Action::Pause)
        .await?;
    session_where(
        &phone,
        &svc.id,
        "consumer",
        "the pause at the consumer",
        |s| s.state == "paused by the offerer",
    )
    .await?;
    // The device's status changes during the use: the usage record samples it.
    phone
        .handle()
        .set_status(Status::Busy {
            reason: "a call".into(),
        })
        .await?;
    let stopped = phone
        .handle()
        .content()
        .control(&running.id, Action::Stop)
        .await?;
    ensure!(stopped.state == "stopped by the consumer", "{stopped:?}");
    let out = fetch.await??;
    ensure!(out.ended == "stopped by the consumer", "{out:?}");
    ensure!(out.path.is_empty(), "a stopped fetch names a file: {out:?}");
    ensure!(out.bytes > 0 && out.bytes < total, "{out:?}");
    ensure!(
        downloads(&phone).is_empty(),
        "a stopped fetch left files: {:?}",
        downloads(&phone)
    );
    // It ended at the offerer too.
    wait_for(WAIT, "the offerer's session to end", || {
        let left = nas.handle().content().sessions();
        left.iter().all(|s| s.service_id != svc.id).then_some(())
    })
    .await?;
    ensure!(out.usage == "reported", "{out:?}");

    // Reported once, with the bytes actually delivered and what was sampled during use.
    let csv = lab
        .admin()
        .export_usage(cpns_auth::UsageFormat::Csv)
        .await?;
    let lines: Vec<&str> = csv
        .lines()
        .filter(|l| l.contains(svc.id.as_str()))
        .collect();
    ensure!(lines.len() == 1, "charging records:\n{csv}");
    let line = lines[0];
    ensure!(line.contains(&format!(",{},", out.bytes)), "{line}");
    ensure!(line.contains("ended=stopped by the consumer"), "{line}");
    ensure!(line.contains("status=online,busy"), "{line}");
    let trace = nas.handle().trace();
    ensure!(
        trace
            .iter()
            .any(|e| e.flow == "5.6.7" && e.step == 1 && e.message == "StopService"),
        "the stop is traced at the offerer"
    );
    lab.shutdown(vec![gw, nas, phone]).await;
    Ok(())
}

#[tokio::test]
async fn either_side_pauses_and_resumes_and_the_offerer_stops() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let total = 96u64 << 20;
    let clip = sparse(dir.path(), "clip.ts", total)?;
    let vis = nas.handle().default_visibility();
    let svc = nas
        .handle()
        .publish(ServiceDraft::new("Clip", ["clip"], vis.clone()), Some(clip))
        .await?;

    // Paused by the consumer at once, resumed by the offerer: the content arrives whole.
    let fetch = tokio::spawn({
        let h = phone.handle();
        let id = svc.id.clone();
        async move { h.fetch(&id, DeliveryMode::Push).await }
    });
    let s = session_where(&phone, &svc.id, "consumer", "the session", |_| true).await?;
    phone
        .handle()
        .content()
        .control(&s.id, Action::Pause)
        .await?;
    let held = session_where(&nas, &svc.id, "offerer", "the pause at the offerer", |s| {
        s.state == "paused by the consumer"
    })
    .await?;
    ensure!(held.bytes < total, "{held:?}");
    nas.handle()
        .content()
        .control(&s.id, Action::Resume)
        .await?;
    let out = fetch.await??;
    ensure!(out.ended == "completed" && out.bytes == total, "{out:?}");
    let zeros = Sha256::digest(vec![0u8; total as usize]);
    ensure!(out.sha256 == hex::encode(zeros), "{out:?}");
    ensure!(std::fs::metadata(&out.path)?.len() == total);

    // Stopped by the offerer while it flows: the consumer reports what it got.
    let film = sparse(dir.path(), "film.ts", 1 << 30)?;
    let big = nas
        .handle()
        .publish(ServiceDraft::new("Film", ["film"], vis), Some(film))
        .await?;
    let fetch = tokio::spawn({
        let h = phone.handle();
        let id = big.id.clone();
        async move { h.fetch(&id, DeliveryMode::Pull).await }
    });
    let s = session_where(&nas, &big.id, "offerer", "bytes flowing", |s| s.bytes > 0).await?;
    nas.handle().content().control(&s.id, Action::Stop).await?;
    let out = fetch.await??;
    ensure!(out.ended == "stopped by the offerer", "{out:?}");
    ensure!(out.path.is_empty() && out.bytes < 1 << 30, "{out:?}");
    ensure!(
        !phone.data_dir().join("downloads").join(&big.id).exists()
            && !phone
                .data_dir()
                .join("downloads")
                .join(format!("{}.part", big.id))
                .exists(),
        "a stopped fetch left a file"
    );
    // A session that is gone cannot be controlled.
    match phone
        .handle()
        .content()
        .control(&s.id, Action::Resume)
        .await
    {
        Ok(s) => anyhow::bail!("an ended session was resumed: {s:?}"),
        Err(e) => ensure!(e.to_string().contains("no such session"), "{e}"),
    }
    lab.shutdown(vec![gw, nas, phone]).await;
    Ok(())
}
