//! Usage statistics and charging (5.5, 5.6.3): signed usage reports in, charging records out.
//!
//! A report is signed by the consuming entity over [`cpns_overlay::transcript::usage_report`]
//! and sent by that entity, or forwarded by the gateway of a PN it belongs to (reports queue
//! at nodes while the server is away). The credential must verify and not be revoked. A report
//! is stored once per `(entity, sequence)`: a replay is acknowledged with `accepted = 0`, so a
//! node that lost our acknowledgement can resend safely. Each usage record becomes one
//! [`ChargingRecord`], exported as CSV or JSON for billing.
//!
//! What one entity can make the server store is bounded (issue 14, a disk filled by reports):
//! - **quota**: at most `max_usage_records_per_day` records per entity per UTC day, a report
//!   counting at least one; past it reports are refused `RateLimited` (they stay queued at the
//!   node and go through the next day);
//! - **sequence sanity**: a report's sequence may lie at most [`MAX_SEQUENCE_GAP`] above the
//!   highest one stored for the entity; sequences [`REPLAY_WINDOW`] or more below it are taken
//!   as replays (acknowledged with nothing stored), so the replay set per entity is bounded
//!   and its older entries are pruned as the window moves;
//! - **retention**: charging records older than `usage_retention` are deleted, a bounded
//!   number with each report.

use cpns_keys::{PublicKey, UnixTime};
use cpns_overlay::{Capabilities, PowerSource, UsageReport, transcript};

use crate::authn::{AuthnError, Session};
use crate::core::Core;
use crate::error::{AdminError, RequestError, forbidden};
use crate::records::{EntityRecord, PnRecord};
use crate::store::{Batch, Table, meta};
use crate::views::ChargingRecord;

/// Most records in one report.
pub(crate) const MAX_RECORDS_PER_REPORT: usize = 1000;

/// Furthest a report's sequence may lie above the highest stored for its entity (a node
/// numbers its reports 1, 2, 3...; a gap means reports lost on the way).
pub(crate) const MAX_SEQUENCE_GAP: u64 = 65_536;

/// How far below the highest stored sequence a report is still checked against the replay
/// set; anything older is acknowledged as a replay.
pub(crate) const REPLAY_WINDOW: u64 = 65_536;

/// Most replay-set entries and expired charging records deleted with one report.
const PRUNE_PER_REPORT: usize = 256;

/// What the server keeps per entity to bound its usage reports.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct UsageState {
    /// Highest sequence stored.
    pub(crate) high: u64,
    /// The UTC day (`unix time / 86400`) that `today` counts.
    pub(crate) day: u64,
    /// Records stored on that day.
    pub(crate) today: u64,
}

fn seen_key(entity: &[u8], sequence: u64) -> Vec<u8> {
    let mut k = entity.to_vec();
    k.extend_from_slice(&sequence.to_be_bytes());
    k
}

/// The format of `usage export`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum UsageFormat {
    /// Comma-separated, with a header row.
    #[default]
    Csv,
    /// A JSON array of [`ChargingRecord`]s.
    Json,
}

impl std::str::FromStr for UsageFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "csv" => Ok(Self::Csv),
            "json" => Ok(Self::Json),
            other => Err(format!("unknown format {other:?} (expected csv or json)")),
        }
    }
}

/// One line describing the device during use: what a charging record keeps of 5.6.3's
/// "device capabilities applied when the services are consumed".
fn capability_summary(c: &Capabilities) -> String {
    let mut s = format!("mode={}", c.mode);
    if !c.static_caps.device_type.is_empty() {
        s.push_str(&format!(" type={}", c.static_caps.device_type));
    }
    s.push_str(match c.dynamic.power {
        PowerSource::Mains => " power=mains",
        PowerSource::Battery => " power=battery",
    });
    if let Some(b) = c.dynamic.battery_percent {
        s.push_str(&format!(" battery={b}%"));
    }
    s.push_str(&format!(
        " free_mem_mb={}",
        c.dynamic.free_memory_bytes / (1024 * 1024)
    ));
    if let Some(screen) = c.static_caps.screen {
        s.push_str(&format!(" screen={}x{}", screen.width, screen.height));
    }
    s
}

impl Core {
    /// Checks and stores a usage report; returns how many records were stored.
    pub(crate) async fn usage_report(
        &self,
        by: &Session,
        report: &UsageReport,
        now: UnixTime,
    ) -> Result<u32, RequestError> {
        if report.records.len() > MAX_RECORDS_PER_REPORT {
            return Err(RequestError::BadRequest(format!(
                "at most {MAX_RECORDS_PER_REPORT} records per report"
            )));
        }
        let entity_id = report.entity;
        if report.credential.entity() != &entity_id {
            return Err(RequestError::Authn(AuthnError::WrongEntity));
        }
        report
            .credential
            .verify_for(&self.ca.public(), &entity_id, None, now)
            .map_err(AuthnError::from)?;
        self.revocations()
            .check(&report.credential)
            .map_err(AuthnError::from)?;
        let entity: EntityRecord = self
            .entity(&entity_id)?
            .ok_or(RequestError::Authn(AuthnError::NotEnrolled))?;
        if entity.revoked.is_some() {
            return Err(RequestError::Authn(AuthnError::Revoked {
                serial: report.credential.serial(),
            }));
        }
        let msg = transcript::usage_report(&entity_id, report.sequence, &report.records);
        PublicKey::from_peer_id(&entity_id)
            .and_then(|k| k.verify(&msg, &report.signature))
            .map_err(|_| RequestError::Authn(AuthnError::BadSignature))?;
        if by.entity != entity_id {
            let forwarded_by_its_gateway = by.mode.is_gateway()
                && self
                    .store
                    .values::<PnRecord>(Table::Pns)?
                    .iter()
                    .any(|pn| pn.gateway == by.entity && pn.members.contains(&entity_id));
            if !forwarded_by_its_gateway {
                return Err(forbidden(
                    "only the entity or the gateway of its PN may send its usage reports",
                ));
            }
        }
        let entity_key = entity_id.to_bytes();
        let seen = seen_key(&entity_key, report.sequence);
        let quota = self.config.max_usage_records_per_day;
        let cutoff = now.saturating_sub(self.config.usage_retention.as_secs());
        let accepted = self
            .commit(|store| {
                let mut state: UsageState = store
                    .get(Table::UsageEntities, &entity_key)?
                    .unwrap_or_default();
                if report.sequence > state.high.saturating_add(MAX_SEQUENCE_GAP) {
                    return Err(RequestError::BadRequest(format!(
                        "usage report sequence {} is more than {MAX_SEQUENCE_GAP} above the \
                         last one stored ({})",
                        report.sequence, state.high
                    )));
                }
                if report.sequence.saturating_add(REPLAY_WINDOW) <= state.high
                    || store.contains(Table::UsageSeen, &seen)?
                {
                    return Ok::<_, RequestError>((Batch::default(), 0u32));
                }
                let day = now / 86_400;
                if state.day != day {
                    state.day = day;
                    state.today = 0;
                }
                let cost = (report.records.len() as u64).max(1);
                if state.today.saturating_add(cost) > quota {
                    return Err(RequestError::Quota(format!(
                        "usage quota of {quota} records per entity per day reached; \
                         the report stays queued and goes through tomorrow"
                    )));
                }
                state.today += cost;
                state.high = state.high.max(report.sequence);
                let mut next: u64 = store.get(Table::Meta, meta::NEXT_USAGE_ID)?.unwrap_or(1);
                let mut b = Batch::default();
                for r in &report.records {
                    let record = ChargingRecord {
                        id: next,
                        received: now,
                        entity: entity_id.to_string(),
                        user: entity.user.clone(),
                        device: entity.device.clone(),
                        sequence: report.sequence,
                        service_id: r.service_id.clone(),
                        service_name: r.service_name.clone(),
                        offerer: r.offerer.to_string(),
                        pn_id: r.pn_id.clone().unwrap_or_default(),
                        started: r.started,
                        duration_ms: r.duration_ms,
                        bytes: r.bytes,
                        capabilities: capability_summary(&r.capabilities),
                        status: r.status.as_str().to_owned(),
                    };
                    b.put(Table::Usage, next.to_be_bytes(), &record)?;
                    next += 1;
                }
                b.put(Table::Meta, meta::NEXT_USAGE_ID, &next)?;
                b.put(Table::UsageSeen, &seen, &())?;
                b.put(Table::UsageEntities, &entity_key, &state)?;
                // The replay set below the window and charging records past retention go,
                // a bounded number at a time.
                let floor = state.high.saturating_sub(REPLAY_WINDOW - 1);
                for k in store.keys_between(
                    Table::UsageSeen,
                    &seen_key(&entity_key, 0),
                    &seen_key(&entity_key, floor),
                    PRUNE_PER_REPORT,
                )? {
                    b.delete(Table::UsageSeen, k);
                }
                for (k, old) in store.first::<ChargingRecord>(Table::Usage, PRUNE_PER_REPORT)? {
                    if old.received >= cutoff {
                        break;
                    }
                    b.delete(Table::Usage, k);
                }
                Ok((b, report.records.len() as u32))
            })
            .await?;
        self.metrics
            .usage_report(if accepted == 0 { "replay" } else { "ok" });
        Ok(accepted)
    }

    /// Every charging record, in the order received.
    pub(crate) fn charging_records(&self) -> Result<Vec<ChargingRecord>, AdminError> {
        Ok(self.store.values(Table::Usage)?)
    }
}

/// Renders charging records.
pub(crate) fn export(
    records: &[ChargingRecord],
    format: UsageFormat,
) -> Result<String, AdminError> {
    match format {
        UsageFormat::Json => serde_json::to_string_pretty(records)
            .map_err(|e| AdminError::Invalid(format!("json: {e}"))),
        UsageFormat::Csv => {
            let mut w = csv::Writer::from_writer(Vec::new());
            if records.is_empty() {
                // The csv crate writes the header with the first record; write it ourselves so
                // an empty export still names its columns.
                w.write_record([
                    "id",
                    "received",
                    "entity",
                    "user",
                    "device",
                    "sequence",
                    "service_id",
                    "service_name",
                    "offerer",
                    "pn_id",
                    "started",
                    "duration_ms",
                    "bytes",
                    "capabilities",
                    "status",
                ])
                .map_err(|e| AdminError::Invalid(format!("csv: {e}")))?;
            }
            for r in records {
                w.serialize(r)
                    .map_err(|e| AdminError::Invalid(format!("csv: {e}")))?;
            }
            let bytes = w
                .into_inner()
                .map_err(|e| AdminError::Invalid(format!("csv: {e}")))?;
            String::from_utf8(bytes).map_err(|e| AdminError::Invalid(format!("csv: {e}")))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn csv_has_a_header_even_when_empty() {
        let text = export(&[], UsageFormat::Csv).unwrap();
        assert!(text.starts_with("id,received,entity,user"), "{text}");
        let r = ChargingRecord {
            id: 1,
            received: 2,
            entity: "e".into(),
            user: "alice".into(),
            device: "tv, living room".into(),
            sequence: 3,
            service_id: "s".into(),
            service_name: "Films".into(),
            offerer: "o".into(),
            pn_id: String::new(),
            started: 4,
            duration_ms: 5,
            bytes: 6,
            capabilities: "mode=pne".into(),
            status: "online".into(),
        };
        let text = export(std::slice::from_ref(&r), UsageFormat::Csv).unwrap();
        let mut lines = text.lines();
        assert!(lines.next().unwrap().starts_with("id,received,entity"));
        assert!(lines.next().unwrap().contains("\"tv, living room\""));
        let json = export(std::slice::from_ref(&r), UsageFormat::Json).unwrap();
        let back: Vec<ChargingRecord> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, vec![r]);
    }
}
