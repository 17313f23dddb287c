//! `cpns-auth`'s usage statistics and charging (5.6.3, 5.5) with bare overlay devices (see
//! [`crate::auth`]).

use anyhow::{Result, bail, ensure};
use cpns_keys::Modes;
use cpns_overlay::{
    AuthMessage, Capabilities, ErrorCode, MembershipDecision, Message, NodeMode, Status, transcript,
};

use crate::auth::{Device, establish, expect_code, membership, now, start_server};
use crate::util::init_tracing;

fn usage_report(d: &Device, sequence: u64, pn_id: Option<String>) -> cpns_overlay::UsageReport {
    let records: Vec<cpns_overlay::UsageRecord> = (0..2)
        .map(|i| cpns_overlay::UsageRecord {
            service_id: format!("svc-{i}"),
            service_name: format!("Films, part {i}"),
            offerer: d.server,
            pn_id: pn_id.clone(),
            started: now() - 60,
            duration_ms: 1500 + i,
            bytes: 1 << 20,
            capabilities: Capabilities {
                mode: NodeMode::Pne,
                ..Capabilities::default()
            },
            status: Status::Online,
        })
        .collect();
    let t = transcript::usage_report(&d.peer(), sequence, &records);
    cpns_overlay::UsageReport {
        entity: d.peer(),
        credential: d.enrolment.credential.clone(),
        sequence,
        records,
        signature: d.node.identity.sign(&t),
    }
}

async fn send_usage(from: &Device, report: cpns_overlay::UsageReport) -> Result<u32> {
    match from.request(AuthMessage::UsageReport(report)).await? {
        Message::Auth(AuthMessage::UsageAck { accepted }) => Ok(accepted),
        other => bail!("UsageAck expected, got {other:?}"),
    }
}

/// Usage reports (5.6.3): signed by the entity, sent by it or forwarded by its PN's gateway,
/// stored once per sequence number, exported as charging records (5.5).
#[tokio::test]
async fn usage_reports_become_charging_records() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    let mut gw = Device::enrol_with(&admin, 71, "alice", Modes::ALL, "nas").await?;
    let tv = Device::enrol_with(&admin, 72, "alice", Modes::PNE, "tv").await?;
    let other = Device::enrol_with(&admin, 73, "alice", Modes::PNE, "radio").await?;
    let (pn, _) = establish(&mut gw).await?;
    let (decision, _) = membership(&gw, tv.setup(&pn.pn_id, gw.peer())).await?;
    ensure!(decision == MembershipDecision::Admitted);

    // Needs a session.
    expect_code(
        tv.request(AuthMessage::UsageReport(usage_report(&tv, 1, None)))
            .await,
        ErrorCode::NotAuthenticated,
    )?;
    tv.auth(NodeMode::Pne).await?;
    other.auth(NodeMode::Pne).await?;
    ensure!(send_usage(&tv, usage_report(&tv, 1, Some(pn.pn_id.clone()))).await? == 2);
    // The same sequence again is stored once.
    ensure!(send_usage(&tv, usage_report(&tv, 1, Some(pn.pn_id.clone()))).await? == 0);
    // A tampered report fails its signature.
    let mut forged = usage_report(&tv, 2, None);
    forged.records[0].bytes = 1;
    expect_code(
        tv.request(AuthMessage::UsageReport(forged)).await,
        ErrorCode::BadProof,
    )?;
    // The PN's gateway may forward the TV's report; another device may not.
    ensure!(send_usage(&gw, usage_report(&tv, 3, None)).await? == 2);
    expect_code(
        other
            .request(AuthMessage::UsageReport(usage_report(&tv, 4, None)))
            .await,
        ErrorCode::Forbidden,
    )?;

    let records = admin.usage_records().await?;
    ensure!(records.len() == 4, "{records:?}");
    ensure!(
        records
            .iter()
            .all(|r| r.user == "alice" && r.device == "tv")
    );
    ensure!(records[0].pn_id == pn.pn_id && records[0].capabilities.starts_with("mode=pne"));
    let csv = admin.export_usage(cpns_auth::UsageFormat::Csv).await?;
    ensure!(
        csv.lines().count() == 5 && csv.contains("\"Films, part 0\""),
        "{csv}"
    );
    let json: Vec<cpns_auth::ChargingRecord> =
        serde_json::from_str(&admin.export_usage(cpns_auth::UsageFormat::Json).await?)?;
    ensure!(json == records);

    for d in [gw, tv, other] {
        d.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

/// Issue 14, cpns-auth's disk filled: an enrolled device cannot make the server store without
/// bound. Usage records have a per-entity per-day quota (past it: `RateLimited`, the report
/// stays queued at the node), a report's sequence cannot jump far ahead (before the fix any
/// sequence was taken, so every random one stored a new report), and capabilities are
/// size-capped and written only when they change.
#[tokio::test]
async fn usage_and_capabilities_from_one_device_are_bounded() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let config = cpns_auth::Config {
        max_usage_records_per_day: 10,
        ..cpns_auth::Config::with_data_dir(dir.path().join("auth"))
    };
    let server = cpns_auth::Server::start(config).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    let tv = Device::enrol_with(&admin, 81, "alice", Modes::PNE, "tv").await?;
    tv.auth(NodeMode::Pne).await?;

    // A sequence far beyond the last one stored is refused.
    expect_code(
        tv.request(AuthMessage::UsageReport(usage_report(&tv, 1 << 40, None)))
            .await,
        ErrorCode::BadRequest,
    )?;
    // Five reports of two records: the day's quota of ten.
    for seq in 1..=5 {
        ensure!(send_usage(&tv, usage_report(&tv, seq, None)).await? == 2);
    }
    expect_code(
        tv.request(AuthMessage::UsageReport(usage_report(&tv, 6, None)))
            .await,
        ErrorCode::RateLimited,
    )?;
    // A replay is still acknowledged (nothing stored), and nothing was lost.
    ensure!(send_usage(&tv, usage_report(&tv, 3, None)).await? == 0);
    ensure!(admin.usage_records().await?.len() == 10);

    // Capabilities: too large is refused; the same again is not rewritten.
    let mut big = Capabilities::default();
    big.static_caps.device_type = "x".repeat(64 * 1024);
    expect_code(
        tv.request(AuthMessage::CapabilitiesUpdate(big)).await,
        ErrorCode::BadRequest,
    )?;
    let caps = Capabilities {
        mode: NodeMode::Pne,
        ..Capabilities::default()
    };
    for revision in 1..=3 {
        let update = Capabilities {
            revision,
            ..caps.clone()
        };
        tv.request(AuthMessage::CapabilitiesUpdate(update)).await?;
    }
    let metrics = admin.metrics_text();
    ensure!(
        metrics.contains("cpns_auth_capabilities_updates_total{result=\"stored\"} 1")
            && metrics.contains("cpns_auth_capabilities_updates_total{result=\"unchanged\"} 2"),
        "{metrics}"
    );
    tv.shutdown().await;
    server.shutdown().await;
    Ok(())
}
