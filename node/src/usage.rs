//! Usage Statistics Collection and Reporting (spec 5.6.3, G.1 step 8): a consumer reports each
//! service use — service, duration, bytes, its capabilities and status during use — signed,
//! through its gateway to `cpns-auth`, unless the user's preferences say never to report that
//! service ("IPTV viewing is not allowed to be reported, but game play is").
//!
//! Reports are written to a durable outbox before they are sent and removed once `cpns-auth`
//! acknowledged them, so that they survive the server (or the gateway) being away: the
//! module's task retries them (DESIGN: offline first).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cpns_overlay::{
    AuthMessage, ErrorCode, Message, PnMessage, Protocol, UsageRecord, UsageReport, transcript,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use crate::auth_link::AuthLink;
use crate::context::Context;
use crate::error::OpError;
use crate::pn;
use crate::store::{Raw, Typed, names};
use crate::trace::flow::G1;

const SEQ_KEY: &[u8] = b"sequence";
const PREFS_KEY: &[u8] = b"never_report";
const REPORT_PREFS_KEY: &[u8] = b"report_prefs";
/// How often queued reports are retried.
const RETRY: Duration = Duration::from_secs(30);
/// Most reports kept in the outbox (the oldest go first beyond this).
const MAX_OUTBOX: usize = 10_000;

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

/// The user's other reporting preferences (5.6.3 "reporting to the CPNS server(s) and external
/// entities according to the user preferences"), beside the never-report list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReportPrefs {
    /// Services (ids or names) never sent to the external collector; `*`: none is.
    pub(crate) never_external: Vec<String>,
    /// Report uses without the device's capabilities and samples.
    pub(crate) omit_capabilities: bool,
}

impl ReportPrefs {
    /// Whether a use of this service may go to the external collector.
    pub(crate) fn external_allowed(&self, service_id: &str, service_name: &str) -> bool {
        !self
            .never_external
            .iter()
            .any(|s| s == "*" || s == service_id || s == service_name)
    }
}

/// The usage handle (cheap to clone).
#[derive(Clone)]
pub(crate) struct Usage {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Context,
    pn: pn::Handle,
    auth: AuthLink,
    outbox: Typed<UsageReport>,
    meta: Raw,
    prefs: Typed<Vec<String>>,
    report_prefs: Typed<ReportPrefs>,
    /// One report is numbered and queued at a time; one flush runs at a time.
    queueing: tokio::sync::Mutex<()>,
}

impl Usage {
    /// The usage side of a node.
    pub(crate) fn new(ctx: Context, pn: pn::Handle, auth: AuthLink) -> Result<Self, OpError> {
        let internal = |e: crate::store::StoreError| OpError::Internal(e.to_string());
        Ok(Self {
            inner: Arc::new(Inner {
                outbox: ctx.store.typed(names::USAGE_OUTBOX).map_err(internal)?,
                meta: ctx.store.raw(names::USAGE_META).map_err(internal)?,
                prefs: ctx.store.typed(names::USAGE_META).map_err(internal)?,
                report_prefs: ctx.store.typed(names::USAGE_META).map_err(internal)?,
                queueing: tokio::sync::Mutex::new(()),
                ctx,
                pn,
                auth,
            }),
        })
    }

    /// The user's reporting preferences: service ids or names never to report.
    pub(crate) fn never_report(&self) -> BTreeSet<String> {
        let mut set: BTreeSet<String> = self
            .inner
            .ctx
            .config
            .usage
            .never_report
            .iter()
            .cloned()
            .collect();
        if let Ok(Some(stored)) = self.inner.prefs.get(PREFS_KEY) {
            set.extend(stored);
        }
        set
    }

    /// Replaces the stored preferences (the config file's list always applies too).
    pub(crate) async fn set_never_report(&self, list: Vec<String>) -> Result<(), OpError> {
        self.inner
            .prefs
            .put(PREFS_KEY, &list)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))
    }

    /// The other reporting preferences.
    pub(crate) fn report_prefs(&self) -> ReportPrefs {
        self.inner
            .report_prefs
            .get(REPORT_PREFS_KEY)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    /// Replaces them.
    pub(crate) async fn set_report_prefs(&self, prefs: ReportPrefs) -> Result<(), OpError> {
        self.inner
            .report_prefs
            .put(REPORT_PREFS_KEY, &prefs)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))
    }

    async fn next_sequence(&self) -> Result<u64, OpError> {
        let internal = |e: crate::store::StoreError| OpError::Internal(e.to_string());
        let old = self
            .inner
            .meta
            .get(SEQ_KEY)
            .map_err(internal)?
            .and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok())
            .map(u64::from_be_bytes)
            .unwrap_or(0);
        let next = old + 1;
        self.inner
            .meta
            .put(SEQ_KEY, next.to_be_bytes().to_vec())
            .await
            .map_err(internal)?;
        Ok(next)
    }

    /// G.1 step 8: reports one service use (or suppresses it by preference).
    pub(crate) async fn report(&self, record: UsageRecord) -> UsageOutcome {
        let ctx = &self.inner.ctx;
        let me = ctx.peer_id;
        let prefs = self.never_report();
        if prefs.contains(&record.service_id) || prefs.contains(&record.service_name) {
            ctx.metrics.usage_suppressed.inc();
            ctx.trace(
                G1,
                8,
                &me,
                &me,
                "UsageReportSuppressed",
                format!("{} (user preference)", record.service_id),
            );
            return UsageOutcome::Suppressed;
        }
        if let Err(e) = self.queue(record).await {
            debug!("usage report not queued: {e}");
            return UsageOutcome::Queued;
        }
        if self.flush().await > 0 {
            UsageOutcome::Reported
        } else {
            UsageOutcome::Queued
        }
    }

    async fn queue(&self, record: UsageRecord) -> Result<(), OpError> {
        let _one = self.inner.queueing.lock().await;
        let ctx = &self.inner.ctx;
        let enrolment = ctx.enrolment()?;
        let me = ctx.peer_id;
        let sequence = self.next_sequence().await?;
        let records = vec![record];
        let signature = ctx
            .identity
            .sign(&transcript::usage_report(&me, sequence, &records));
        let report = UsageReport {
            entity: me,
            credential: enrolment.credential.clone(),
            sequence,
            records,
            signature,
        };
        let outbox = &self.inner.outbox;
        let internal = |e: crate::store::StoreError| OpError::Internal(e.to_string());
        while outbox.len() >= MAX_OUTBOX {
            if !outbox.pop_first().map_err(internal)? {
                break;
            }
        }
        outbox
            .put(&sequence.to_be_bytes(), &report)
            .await
            .map_err(internal)
    }

    /// Sends every queued report; returns how many `cpns-auth` acknowledged.
    pub(crate) async fn flush(&self) -> usize {
        let outbox = &self.inner.outbox;
        let Ok(all) = outbox.all() else {
            return 0;
        };
        let mut done = 0;
        for (key, report) in all {
            match self.send(report).await {
                Ok(()) => {
                    if let Err(e) = outbox.remove(&key).await {
                        debug!("a sent usage report stays in the outbox: {e}");
                    }
                    done += 1;
                }
                Err(e) => {
                    debug!("usage report stays queued: {e}");
                    break;
                }
            }
        }
        if done > 0 {
            self.inner.ctx.metrics.usage_reports.inc_by(done as u64);
        }
        done
    }

    /// One report to the gateway (a PNE) or to `cpns-auth` (the gateway).
    async fn send(&self, report: UsageReport) -> Result<(), OpError> {
        let ctx = &self.inner.ctx;
        let me = ctx.peer_id;
        let detail = report
            .records
            .iter()
            .map(|r| format!("{} {} bytes", r.service_id, r.bytes))
            .collect::<Vec<_>>()
            .join(", ");
        match self.inner.pn.view().my_gateway() {
            Some(gw) => {
                ctx.trace(G1, 8, &me, &gw, "UsageReport", detail);
                let answer = ctx
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
            None => {
                let server = ctx.enrolment()?.server;
                ctx.trace(G1, 8, &me, &server, "UsageReport", detail);
                self.inner
                    .auth
                    .request(AuthMessage::UsageReport(report))
                    .await?;
                Ok(())
            }
        }
    }

    /// At the gateway: a member's usage report, forwarded to `cpns-auth` (the router let only
    /// members through; the report must be the sender's own).
    pub(crate) async fn on_member_report(&self, peer: PeerId, report: UsageReport) -> Message {
        let ctx = &self.inner.ctx;
        if report.entity != peer || !self.inner.pn.view().is_pn_gateway() {
            return Message::error(
                ErrorCode::Forbidden,
                "the gateway forwards its own members' reports only",
            );
        }
        let me = ctx.peer_id;
        let server = match ctx.enrolment() {
            Ok(e) => e.server,
            Err(e) => return Message::error(ErrorCode::Internal, e.to_string()),
        };
        ctx.trace(G1, 8, &me, &server, "UsageReport", format!("for {peer}"));
        match self
            .inner
            .auth
            .request(AuthMessage::UsageReport(report))
            .await
        {
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
    pub(crate) fn queued(&self) -> Vec<UsageReport> {
        self.inner
            .outbox
            .all()
            .map(|v| v.into_iter().map(|(_, r)| r).collect())
            .unwrap_or_default()
    }

    /// The module's task: retries queued reports until the node stops.
    pub(crate) async fn run(self) {
        let ctx = self.inner.ctx.clone();
        let mut tick = tokio::time::interval(RETRY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            if ctx.is_enrolled() {
                self.flush().await;
            }
        }
    }
}

/// A usage record as the API and the external collector show it.
pub(crate) fn record_view(r: UsageRecord) -> cpns_api::UsageRecordView {
    let UsageRecord {
        service_id,
        service_name,
        offerer,
        pn_id,
        started,
        duration_ms,
        bytes,
        capabilities: _,
        status,
        samples,
        variant,
        ended,
    } = r;
    let cpns_overlay::UsageSamples {
        count,
        first,
        last,
        battery_min,
        battery_max,
        on_battery,
        free_memory_min,
        free_memory_max,
        statuses,
        wan,
    } = samples;
    cpns_api::UsageRecordView {
        service_id,
        service_name,
        offerer: offerer.to_string(),
        pn_id,
        started,
        duration_ms,
        bytes,
        status: status.as_str().into(),
        samples: cpns_api::UsageSamplesView {
            count,
            first,
            last,
            battery_min,
            battery_max,
            on_battery,
            free_memory_min,
            free_memory_max,
            statuses: statuses.iter().map(|s| s.as_str().to_string()).collect(),
            wan,
        },
        variant,
        ended,
    }
}
