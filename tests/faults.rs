//! Faults on loopback: the PN keeps working with `cpns-auth` gone (DESIGN: offline first), and
//! what needed the server catches up when it is back.

use std::time::Duration;

use anyhow::{Result, ensure};
use cpns_directory::{Query, ServiceDraft};
use cpns_overlay::DeliveryMode;

use crate::util::{Lab, WAIT, init_tracing};

/// With the server down, members still find services, get content sealed under the PN key
/// and keep their usage reports queued; once the server is back, the reports arrive.
#[tokio::test]
async fn pn_keeps_working_without_the_server_and_catches_up() -> Result<()> {
    init_tracing();
    let mut lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("song.flac");
    std::fs::write(&file, vec![42u8; 300_000])?;
    let vis = nas.handle().default_visibility();
    let song = nas
        .handle()
        .publish(ServiceDraft::new("Song", ["music"], vis), Some(file))
        .await?;

    // The server goes away.
    lab.stop_server().await;

    let found = phone.handle().find(&Query::keywords(["music"])).await?;
    ensure!(
        found.services.iter().any(|f| f.description.id == song.id),
        "not found offline"
    );
    let got = phone.handle().fetch(&song.id, DeliveryMode::Pull).await?;
    assert_eq!(got.bytes, 300_000);
    assert_eq!(got.usage, "queued", "the report waits for the server");
    assert_eq!(phone.handle().usage_queued().len(), 1);
    // Status still flows inside the PN.
    phone
        .handle()
        .set_status(cpns_overlay::Status::Busy {
            reason: "offline test".into(),
        })
        .await?;
    let s = gw
        .handle()
        .wait_until(WAIT, |s| s.members.iter().any(|m| m.status == "busy"))
        .await?;
    ensure!(
        s.members.iter().any(|m| m.status == "busy"),
        "status did not reach the gateway"
    );

    // The server comes back on the same address and data dir.
    lab.restart_server().await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while phone.handle().flush_usage().await == 0 && !phone.handle().usage_queued().is_empty() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "queued report never delivered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(phone.handle().usage_queued().is_empty());
    let records = lab.admin().usage_records().await?;
    ensure!(
        records.iter().any(|r| r.service_id == song.id),
        "charging record missing after the server came back"
    );
    lab.shutdown(vec![gw, nas, phone]).await;
    Ok(())
}
