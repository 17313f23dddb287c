//! The protocol trace: every spec step this node takes part in, with its number, sender,
//! receiver, message name and time, kept in a bounded ring buffer so that a lab can lay the
//! run beside the spec's figures (`cpns trace`, `cpns trace --mermaid`, `GET /v1/trace`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// The flows whose steps are traced.
pub mod flow {
    /// PN establishment, the change request's steps 1-26.
    pub const B1: &str = "B.1";
    /// The typical flow of Appendix G.1, steps 0-9.
    pub const G1: &str = "G.1";
    /// Switching a PN's gateway (5.6.9): 1 the gateway fell silent, 2 a member claims the
    /// role (then B.1 8-17), 3 the new gateway tells a member, 4 the member re-joins (then
    /// B.1 18-26); PN management: 10-17 admins and Adminees (see `pn::state::admin`), 18 an
    /// invitation from `cpns-auth` reached this node, 19 its owner declined it; 30-37 merge
    /// and split (see `pn::state::merge`), 38 a moved member's services re-scoped to its new
    /// PN, 39 a released PN's DHT summary withdrawn (`services`); switching the current PNE
    /// (see `delivery::switch`): 50 SwitchSession, 51 HandOverSession, 52
    /// HandOverReceivedContent, 53 ContinueFromOffset, 54 ContentContinued.
    pub const GW_SWITCH: &str = "5.6.9";
    /// The gateway's Non-CPNS proxy (5.6.10): 1 a UPnP device registered, 2 its CPNS functions
    /// identified, 3 one of its items published, 4 the device de-registered, 5 a PN service
    /// handed to a renderer (`SetAVTransportURI`), 6 `Play`, 7 a proxied item delivered to a
    /// PNE, streamed from its device.
    pub const PROXY: &str = "5.6.10";
    /// Service/Content Delivery beyond G.1's steps 5-7 (5.6.7): 1 control of a session
    /// (pause, resume, stop), 2 a push offered, 3 the receiver's decision, 4 a stream relayed
    /// by the gateway, 5 a contribution aggregated, 6 a feed distributed, 7 content fetched
    /// from an external server.
    pub const DELIVERY: &str = "5.6.7";
    /// Zone-based service (Appendix F): 1 the zone gateway's periodic search, 2 an opted-in
    /// PNE's answer, 3 credentials both ways, 4 the PNE registered in the zone PN's inventory
    /// at cpns-auth, 5 the availability check, 6 the push of the zone's service
    /// descriptions, 7 the PNE de-registered after it left.
    pub const ZONE: &str = "F";
}

/// One traced protocol event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Order of recording on this node.
    pub seq: u64,
    /// `B.1` or `G.1`.
    pub flow: String,
    /// The step number in that flow.
    pub step: u32,
    /// Sender's PeerId (for a local step: the node itself).
    pub from: String,
    /// Receiver's PeerId (for a local step: the node itself).
    pub to: String,
    /// The message (or action) name.
    pub message: String,
    /// When, as RFC 3339 with milliseconds (UTC).
    pub time: String,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Optional detail for people (`admitted`, `epoch 3`, a refusal reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

/// Longest message name kept in a trace event, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 128;
/// Longest detail kept in a trace event, in bytes. Details may carry text a peer chose (a
/// service id, a refusal reason), so they are cut and cleaned.
pub const MAX_DETAIL_BYTES: usize = 256;
/// What the trace budgets per event: a bound on [`TraceEvent::size`] after truncation.
pub const MAX_EVENT_BYTES: usize = 1024;

/// `text` cut to at most `max` bytes (on a character boundary, with `…` when cut) and with
/// every control character (newlines included) replaced by a space, so that peer-supplied
/// text can neither grow the trace nor inject lines into its Mermaid rendering.
pub fn clean_text(text: &str, max: usize) -> String {
    let cleaned = |t: &str| -> String {
        t.chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect()
    };
    if text.len() <= max {
        return cleaned(text);
    }
    let room = max.saturating_sub('…'.len_utf8());
    let mut end = room.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let mut out = cleaned(&text[..end]);
    out.push('…');
    out
}

impl TraceEvent {
    /// Bytes this event holds (its strings plus a fixed overhead).
    pub fn size(&self) -> usize {
        64 + self.flow.len()
            + self.from.len()
            + self.to.len()
            + self.message.len()
            + self.time.len()
            + self.detail.len()
    }
}

/// The bounded trace buffer: at most `capacity` events and `capacity * MAX_EVENT_BYTES` bytes.
#[derive(Debug)]
pub struct Trace {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    events: VecDeque<TraceEvent>,
    capacity: usize,
    bytes: usize,
    max_bytes: usize,
    next_seq: u64,
}

impl Trace {
    /// A trace keeping at most `capacity` events (the oldest go first).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self::with_max_bytes(capacity, capacity.saturating_mul(MAX_EVENT_BYTES))
    }

    /// A trace keeping at most `capacity` events and `max_bytes` bytes of them.
    pub fn with_max_bytes(capacity: usize, max_bytes: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity.min(1024)),
                capacity: capacity.max(1),
                bytes: 0,
                max_bytes: max_bytes.max(MAX_EVENT_BYTES),
                next_seq: 0,
            }),
        }
    }

    /// Bytes held now.
    pub fn bytes(&self) -> usize {
        self.inner.lock().map(|i| i.bytes).unwrap_or(0)
    }

    /// Records a step.
    pub fn record(
        &self,
        flow: &str,
        step: u32,
        from: &PeerId,
        to: &PeerId,
        message: &str,
        detail: impl Into<String>,
    ) {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let time_ms = now.as_millis() as u64;
        let time = humantime::format_rfc3339_millis(SystemTime::UNIX_EPOCH + now).to_string();
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let event = TraceEvent {
            seq,
            flow: clean_text(flow, 16),
            step,
            from: from.to_string(),
            to: to.to_string(),
            message: clean_text(message, MAX_MESSAGE_BYTES),
            time,
            time_ms,
            detail: clean_text(&detail.into(), MAX_DETAIL_BYTES),
        };
        let size = event.size();
        while inner.events.len() >= inner.capacity || inner.bytes + size > inner.max_bytes {
            let Some(old) = inner.events.pop_front() else {
                break;
            };
            inner.bytes -= old.size();
        }
        inner.bytes += size;
        tracing::debug!(flow, step, %from, %to, message = %event.message, "trace");
        inner.events.push_back(event);
    }

    /// All events, oldest first.
    pub fn events(&self) -> Vec<TraceEvent> {
        self.inner
            .lock()
            .map(|i| i.events.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Forgets every event.
    pub fn clear(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.events.clear();
            i.bytes = 0;
        }
    }
}

/// Renders events as a Mermaid sequence diagram. `labels` names known PeerIds
/// (`cpns-auth`, `gateway`, ...); others are shown by the last 6 characters of their PeerId.
pub fn mermaid(events: &[TraceEvent], labels: &BTreeMap<String, String>) -> String {
    let mut participants: Vec<&str> = Vec::new();
    for e in events {
        for p in [e.from.as_str(), e.to.as_str()] {
            if !participants.contains(&p) {
                participants.push(p);
            }
        }
    }
    let alias = |p: &str| -> String {
        let i = participants.iter().position(|x| *x == p).unwrap_or(0);
        format!("P{i}")
    };
    let mut out = String::from("sequenceDiagram\n");
    for p in &participants {
        let short = &p[p.len().saturating_sub(6)..];
        let label = match labels.get(*p) {
            Some(l) => format!("{} …{short}", clean_text(l, 64)),
            None => format!("…{short}"),
        };
        let label = label.replace([';', '#'], ",");
        out.push_str(&format!("    participant {} as {}\n", alias(p), label));
    }
    for e in events {
        let text = if e.detail.is_empty() {
            format!("{} {}. {}", e.flow, e.step, e.message)
        } else {
            format!("{} {}. {} ({})", e.flow, e.step, e.message, e.detail)
        };
        // Events are cleaned when recorded; clean again, as events may come from elsewhere
        // (a saved trace): one event, one line.
        let text = clean_text(&text, MAX_EVENT_BYTES).replace([';', '#'], ",");
        if e.from == e.to {
            out.push_str(&format!("    Note over {}: {}\n", alias(&e.from), text));
        } else {
            out.push_str(&format!(
                "    {}->>{}: {}\n",
                alias(&e.from),
                alias(&e.to),
                text
            ));
        }
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_ordered() {
        let t = Trace::new(3);
        let (a, b) = (PeerId::random(), PeerId::random());
        for step in 1..=5 {
            t.record(flow::B1, step, &a, &b, "M", "");
        }
        let ev = t.events();
        assert_eq!(ev.iter().map(|e| e.step).collect::<Vec<_>>(), vec![3, 4, 5]);
        assert_eq!(ev[0].seq, 2);
    }

    #[test]
    fn peer_text_is_cut_cleaned_and_bytes_are_bounded() {
        let t = Trace::with_max_bytes(1000, 8 * MAX_EVENT_BYTES);
        let (a, b) = (PeerId::random(), PeerId::random());
        // A peer's 1 MiB service id with a line break that would start a Mermaid line.
        let hostile = format!("svc\n    P0->>P1: forged step{}", "x".repeat(1 << 20));
        for _ in 0..100 {
            t.record(flow::G1, 5, &a, &b, &hostile, hostile.clone());
        }
        let ev = t.events();
        assert!(t.bytes() <= 8 * MAX_EVENT_BYTES, "{}", t.bytes());
        assert!(!ev.is_empty() && ev.len() < 100);
        for e in &ev {
            assert!(e.message.len() <= MAX_MESSAGE_BYTES && e.detail.len() <= MAX_DETAIL_BYTES);
            assert!(e.size() <= MAX_EVENT_BYTES);
            assert!(!e.message.contains('\n') && !e.detail.contains('\n'));
        }
        let m = mermaid(&ev, &BTreeMap::new());
        // One header, two participants, one line per event: nothing injected.
        assert_eq!(m.lines().count(), 3 + ev.len());
        assert!(
            !m.lines()
                .any(|l| l.trim_start().starts_with("P0->>P1: forged"))
        );
        assert_eq!(clean_text("é".repeat(10).as_str(), 5).len(), 5);
        assert_eq!(clean_text("ok", 5), "ok");
    }

    #[test]
    fn mermaid_has_arrows_and_notes() {
        let t = Trace::new(10);
        let (a, b) = (PeerId::random(), PeerId::random());
        t.record(flow::B1, 1, &a, &b, "EntityRegistrationAndDiscovery", "");
        t.record(flow::B1, 15, &b, &b, "StatusManagementLookup", "no change");
        let mut labels = BTreeMap::new();
        labels.insert(b.to_string(), "gateway".to_string());
        let m = mermaid(&t.events(), &labels);
        assert!(m.starts_with("sequenceDiagram"));
        assert!(m.contains("P0->>P1: B.1 1. EntityRegistrationAndDiscovery"));
        assert!(m.contains("Note over P1: B.1 15. StatusManagementLookup (no change)"));
        assert!(m.contains("as gateway"));
    }
}
