//! Counters the event loop keeps for metrics: cheap atomics, read by the node's `/metrics`.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Overlay counters. Labelled counters use a small map behind a mutex: their label sets are
/// fixed strings chosen by this crate or the validator, so they cannot grow from remote input.
#[derive(Debug, Default)]
pub struct Stats {
    /// DHT queries started by this node.
    pub queries: AtomicU64,
    /// CPNS requests sent.
    pub requests_sent: AtomicU64,
    /// CPNS requests received and passed to the application.
    pub requests_received: AtomicU64,
    /// Events dropped because the application's event channel was full.
    pub events_dropped: AtomicU64,
    /// Records stored for other peers after validation.
    pub records_stored: AtomicU64,
    /// Kademlia requests this node answered for other peers (FIND_NODE, GET_PROVIDERS,
    /// ADD_PROVIDER, GET_VALUE, PUT_VALUE): how a lab sees which nodes a lookup went through.
    pub dht_requests_served: AtomicU64,
    rejected_records: Mutex<BTreeMap<&'static str, u64>>,
    rejected_messages: Mutex<BTreeMap<&'static str, u64>>,
}

impl Stats {
    pub(crate) fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn reject_record(&self, reason: &'static str) {
        if let Ok(mut m) = self.rejected_records.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    pub(crate) fn reject_message(&self, reason: &'static str) {
        if let Ok(mut m) = self.rejected_messages.lock() {
            *m.entry(reason).or_default() += 1;
        }
    }

    /// DHT records refused by the validator, by reason.
    pub fn rejected_records(&self) -> BTreeMap<&'static str, u64> {
        self.rejected_records
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Inbound CPNS messages refused (undecodable, oversize, unregistered sender...), by reason.
    pub fn rejected_messages(&self) -> BTreeMap<&'static str, u64> {
        self.rejected_messages
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default()
    }

    /// Reads an atomic counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
