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
    /// B.1 18-26).
    pub const GW_SWITCH: &str = "5.6.9";
    /// Service/Content Delivery beyond G.1's steps 5-7 (5.6.7): 1 control of a session
    /// (pause, resume, stop), 2 a push offered, 3 the receiver's decision, 4 a stream relayed
    /// by the gateway, 5 a contribution aggregated, 6 a feed distributed, 7 content fetched
    /// from an external server.
    pub const DELIVERY: &str = "5.6.7";
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

/// The bounded trace buffer.
#[derive(Debug)]
pub struct Trace {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    events: VecDeque<TraceEvent>,
    capacity: usize,
    next_seq: u64,
}

impl Trace {
    /// A trace keeping at most `capacity` events (the oldest go first).
    pub fn new(capacity: usize) -> Self {
        Self {
            inner: Mutex::new(Inner {
                events: VecDeque::with_capacity(capacity.min(1024)),
                capacity: capacity.max(1),
                next_seq: 0,
            }),
        }
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
        if inner.events.len() >= inner.capacity {
            inner.events.pop_front();
        }
        inner.events.push_back(TraceEvent {
            seq,
            flow: flow.to_string(),
            step,
            from: from.to_string(),
            to: to.to_string(),
            message: message.to_string(),
            time,
            time_ms,
            detail: detail.into(),
        });
        tracing::debug!(flow, step, %from, %to, message, "trace");
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
            Some(l) => format!("{l} …{short}"),
            None => format!("…{short}"),
        };
        out.push_str(&format!("    participant {} as {}\n", alias(p), label));
    }
    for e in events {
        let text = if e.detail.is_empty() {
            format!("{} {}. {}", e.flow, e.step, e.message)
        } else {
            format!("{} {}. {} ({})", e.flow, e.step, e.message, e.detail)
        };
        let text = text.replace([';', '#'], ",");
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
