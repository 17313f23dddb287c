//! Usage Statistics Collection and Reporting (spec 5.6.3, G.1 step 8): a consumer reports each
//! service use — service, duration, bytes, its capabilities and status during use — signed,
//! through its gateway to `cpns-auth`, unless the user's preferences say never to report that
//! service ("IPTV viewing is not allowed to be reported, but game play is").
//!
//! Reports are written to a durable outbox before they are sent and removed once `cpns-auth`
//! acknowledged them, so that they survive the server (or the gateway) being away: a periodic
//! task retries (DESIGN: offline first).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cpns_overlay::{
    AuthMessage, ErrorCode, Message, PnMessage, Protocol, UsageRecord, UsageReport, codec,
    transcript,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::error::OpError;
use crate::shared::Shared;
use crate::trace::flow::G1;

const OUTBOX: &str = "usage.outbox.v1";
const META: &str = "usage.v1";
const SEQ_KEY: &[u8] = b"sequence";
const PREFS_KEY: &[u8] = b"never_report";
/// How often queued reports are retried.
const RETRY: Duration = Duration::from_secs(30);
/// Most reports kept in the outbox (the oldest go first beyond this).
const MAX_OUTBOX: usize = 10_000;
/// Largest stored report.
const MAX_REPORT: usize = 256 * 1024;

/// What became of a usage record.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum UsageOutcome {
    /// Stored by `cpns-auth`.
    Reported,
    /// Kept in the outbox; it will be sent when the gateway and the server are reachable.
    Queued,
    /// Not reported: the user's preferences forbid it.
    Suppressed,
}

impl std::fmt::Display for UsageOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            UsageOutcome::Reported => "reported",
            UsageOutcome::Queued => "queued",
            UsageOutcome::Suppressed => "suppressed",
        })
    }
}

/// The user's reporting preferences: service ids or names never to report.
pub(crate) fn never_report(shared: &Shared) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = shared.config.usage.never_report.iter().cloned().collect();
    if let Ok(tree) = shared.db.open_tree(META)
        && let Ok(Some(bytes)) = tree.get(PREFS_KEY)
        && let Ok(stored) = codec::decode::<Vec<String>>(&bytes, MAX_REPORT)
    {
        set.extend(stored);
    }
    set
}

/// Replaces the stored preferences (the config file's list always applies too).
pub(crate) async fn set_never_report(shared: &Shared, list: Vec<String>) -> Result<(), OpError> {
    let tree = shared
        .db
        .open_tree(META)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    let bytes = codec::encode(&list).map_err(|e| OpError::Internal(e.to_string()))?;
    tree.insert(PREFS_KEY, bytes)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    tree.flush_async()
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?;
    Ok(())
}

async fn next_sequence(shared: &Shared) -> Result<u64, OpError> {
    let tree = shared
        .db
        .open_tree(META)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    let next = tree
        .update_and_fetch(SEQ_KEY, |old| {
            let n = old
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })
        .map_err(|e| OpError::Internal(e.to_string()))?
        .and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok())
        .map(u64::from_be_bytes)
        .unwrap_or(1);
    tree.flush_async()
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?;
    Ok(next)
}

/// G.1 step 8: reports one service use (or suppresses it by preference).
pub(crate) async fn report(shared: &Arc<Shared>, record: UsageRecord) -> UsageOutcome {
    let me = shared.peer_id;
    let prefs = never_report(shared);
    if prefs.contains(&record.service_id) || prefs.contains(&record.service_name) {
        shared.metrics.usage_suppressed.inc();
        shared.trace(
            G1,
            8,
            &me,
            &me,
            "UsageReportSuppressed",
            format!("{} (user preference)", record.service_id),
        );
        return UsageOutcome::Suppressed;
    }
    match queue(shared, record).await {
        Ok(()) => {}
        Err(e) => {
            debug!("usage report not queued: {e}");
            return UsageOutcome::Queued;
        }
    }
    if flush(shared).await > 0 {
        UsageOutcome::Reported
    } else {
        UsageOutcome::Queued
    }
}

async fn queue(shared: &Shared, record: UsageRecord) -> Result<(), OpError> {
    let enrolment = shared.enrolment()?;
    let me = shared.peer_id;
    let sequence = next_sequence(shared).await?;
    let records = vec![record];
    let signature = shared
        .identity
        .sign(&transcript::usage_report(&me, sequence, &records));
    let report = UsageReport {
        entity: me,
        credential: enrolment.credential.clone(),
        sequence,
        records,
        signature,
    };
    let tree = shared
        .db
        .open_tree(OUTBOX)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    while tree.len() >= MAX_OUTBOX {
        match tree.pop_min() {
            Ok(Some(_)) => {}
            _ => break,
        }
    }
    let bytes = codec::encode(&report).map_err(|e| OpError::Internal(e.to_string()))?;
    tree.insert(sequence.to_be_bytes(), bytes)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    tree.flush_async()
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?;
    Ok(())
}

/// Sends every queued report; returns how many `cpns-auth` acknowledged.
pub(crate) async fn flush(shared: &Arc<Shared>) -> usize {
    let Ok(tree) = shared.db.open_tree(OUTBOX) else {
        return 0;
    };
    let mut done = 0;
    for item in tree.iter() {
        let Ok((key, bytes)) = item else { continue };
        let Ok(report) = codec::decode::<UsageReport>(&bytes, MAX_REPORT) else {
            let _ = tree.remove(key);
            continue;
        };
        match send(shared, report).await {
            Ok(()) => {
                let _ = tree.remove(key);
                done += 1;
            }
            Err(e) => {
                debug!("usage report stays queued: {e}");
                break;
            }
        }
    }
    if done > 0 {
        let _ = tree.flush_async().await;
        shared.metrics.usage_reports.inc_by(done as u64);
    }
    done
}

/// One report to the gateway (a PNE) or to `cpns-auth` (the gateway).
async fn send(shared: &Arc<Shared>, report: UsageReport) -> Result<(), OpError> {
    let me = shared.peer_id;
    let gateway = shared.state().pn.as_ref().map(|p| p.membership.gateway);
    let detail = report
        .records
        .iter()
        .map(|r| format!("{} {} bytes", r.service_id, r.bytes))
        .collect::<Vec<_>>()
        .join(", ");
    match gateway {
        Some(gw) if gw != me => {
            shared.trace(G1, 8, &me, &gw, "UsageReport", detail);
            let answer = shared
                .client
                .request(
                    gw,
                    Protocol::Cpns,
                    Message::Pn(PnMessage::UsageReport(report)),
                )
                .await?;
            match answer {
                Message::Ack => Ok(()),
                other => Err(OpError::Refused(format!(
                    "unexpected answer {}",
                    other.name()
                ))),
            }
        }
        _ => {
            let server = shared.enrolment()?.server;
            shared.trace(G1, 8, &me, &server, "UsageReport", detail);
            crate::auth_link::request(shared, AuthMessage::UsageReport(report)).await?;
            Ok(())
        }
    }
}

/// At the gateway: a member's usage report, forwarded to `cpns-auth`.
pub(crate) async fn on_member_report(
    shared: &Arc<Shared>,
    peer: PeerId,
    report: UsageReport,
) -> Message {
    let member = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.is_member(&peer));
    if !member || report.entity != peer || !shared.state().mode.is_gateway() {
        return Message::error(
            ErrorCode::Forbidden,
            "the gateway forwards its own members' reports only",
        );
    }
    let me = shared.peer_id;
    let server = match shared.enrolment() {
        Ok(e) => e.server,
        Err(e) => return Message::error(ErrorCode::Internal, e.to_string()),
    };
    shared.trace(G1, 8, &me, &server, "UsageReport", format!("for {peer}"));
    match crate::auth_link::request(shared, AuthMessage::UsageReport(report)).await {
        Ok(AuthMessage::UsageAck { accepted }) => {
            info!(%peer, accepted, "usage report forwarded");
            Message::Ack
        }
        Ok(other) => Message::error(
            ErrorCode::Internal,
            format!("unexpected answer {}", other.name()),
        ),
        Err(e) => Message::error(
            ErrorCode::Busy,
            format!("cpns-auth unreachable, keep it queued: {e}"),
        ),
    }
}

/// Reports still queued.
pub(crate) fn queued(shared: &Shared) -> Vec<UsageReport> {
    let Ok(tree) = shared.db.open_tree(OUTBOX) else {
        return Vec::new();
    };
    tree.iter()
        .values()
        .filter_map(|v| v.ok())
        .filter_map(|v| codec::decode(&v, MAX_REPORT).ok())
        .collect()
}

/// Retries queued reports periodically.
pub(crate) fn spawn(shared: &Arc<Shared>, tasks: &mut tokio::task::JoinSet<()>) {
    let s = shared.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(RETRY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = s.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if s.is_enrolled() {
                flush(&s).await;
            }
        }
    });
}
