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
            samples: Default::default(),
            variant: None,
            ended: "completed".into(),
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
