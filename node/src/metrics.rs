//! Prometheus metrics of the node (`GET /metrics`, text format, on the API's loopback port):
//! peers, PN members, DHT records and queries, rejected records and messages by reason,
//! registrations refused, key rotations, content bytes delivered, usage reports.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabel {
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StepLabel {
    flow: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct RefusalLabel {
    request: String,
    class: String,
}

/// The node's own counters (the overlay keeps its own in [`cpns_overlay::Stats`]).
#[derive(Default)]
pub(crate) struct Metrics {
    registrations_refused: Family<ReasonLabel, Counter>,
    registrations_accepted: Counter,
    pub(crate) key_epochs_received: Counter,
    pub(crate) bytes_delivered: Counter<u64, AtomicU64>,
    pub(crate) bytes_received: Counter<u64, AtomicU64>,
    pub(crate) services_published: Counter,
    pub(crate) discoveries: Counter,
    pub(crate) usage_reports: Counter,
    pub(crate) usage_suppressed: Counter,
    pub(crate) status_notifications: Counter,
    pub(crate) trace_events: Family<StepLabel, Counter>,
    pn_established: Counter,
    requests_refused: Family<RefusalLabel, Counter>,
}

impl Metrics {
    pub(crate) fn refused_registration(&self, reason: &str) {
        self.registrations_refused
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc();
    }

    pub(crate) fn accepted_registration(&self) {
        self.registrations_accepted.inc();
    }

    /// A request the authorisation table refused, by kind and sender class.
    pub(crate) fn refused_request(&self, kind: &str, class: &str) {
        self.requests_refused
            .get_or_create(&RefusalLabel {
                request: kind.to_string(),
                class: class.to_string(),
            })
            .inc();
    }

    pub(crate) fn pn_established(&self) {
        self.pn_established.inc();
    }

    pub(crate) fn traced(&self, flow: &str) {
        self.trace_events
            .get_or_create(&StepLabel {
                flow: flow.to_string(),
            })
            .inc();
    }
}

/// Renders every metric in Prometheus text format: the node's counters `m`, the overlay's
/// (through `client`), and `members`, the PN's size.
pub(crate) async fn render(m: &Metrics, client: &cpns_overlay::Client, members: usize) -> String {
    let mut registry = Registry::with_prefix("cpns_node");
    registry.register(
        "registrations_refused",
        "Entity registrations (B.1 steps 1-2) refused, by reason",
        m.registrations_refused.clone(),
    );
    registry.register(
        "registrations_accepted",
        "Entity registrations (B.1 steps 1-2) accepted",
        m.registrations_accepted.clone(),
    );
    registry.register(
        "key_epochs_received",
        "PN and Service Group key epochs received",
        m.key_epochs_received.clone(),
    );
    registry.register(
        "bytes_delivered",
        "Content bytes sent to consumers",
        m.bytes_delivered.clone(),
    );
    registry.register(
        "bytes_received",
        "Content bytes received from offerers",
        m.bytes_received.clone(),
    );
    registry.register(
        "services_published",
        "Service descriptions published",
        m.services_published.clone(),
    );
    registry.register(
        "discoveries",
        "Service discoveries run",
        m.discoveries.clone(),
    );
    registry.register(
        "usage_reports",
        "Usage records reported",
        m.usage_reports.clone(),
    );
    registry.register(
        "usage_suppressed",
        "Usage records suppressed by the user's preferences",
        m.usage_suppressed.clone(),
    );
    registry.register(
        "status_notifications",
        "Status notifications received",
        m.status_notifications.clone(),
    );
    registry.register(
        "trace_events",
        "Protocol steps traced, by flow",
        m.trace_events.clone(),
    );
    registry.register(
        "pn_established",
        "PN connection setups completed (B.1 step 26)",
        m.pn_established.clone(),
    );
    registry.register(
        "requests_refused",
        "Inbound CPNS requests refused by the authorisation table, by request and sender class",
        m.requests_refused.clone(),
    );

    let peers: Gauge = Gauge::default();
    peers.set(client.peers().await.map(|p| p.len()).unwrap_or(0) as i64);
    registry.register("peers", "Connected peers", peers);
    let routing: Gauge = Gauge::default();
    routing.set(client.routing_table_size().await.unwrap_or(0) as i64);
    registry.register(
        "dht_routing_table",
        "Peers in the DHT routing table",
        routing,
    );
    let member_gauge: Gauge = Gauge::default();
    member_gauge.set(members as i64);
    registry.register("pn_members", "Members of this node's PN", member_gauge);

    let stats = client.stats();
    let queries: Counter = Counter::default();
    queries.inc_by(cpns_overlay::Stats::get(&stats.queries));
    registry.register("dht_queries", "DHT queries started", queries);
    let stored: Counter = Counter::default();
    stored.inc_by(cpns_overlay::Stats::get(&stats.records_stored));
    registry.register(
        "dht_records_stored",
        "DHT records stored for other peers after validation",
        stored,
    );
    let rejected_records: Family<ReasonLabel, Counter> = Family::default();
    for (reason, n) in stats.rejected_records() {
        rejected_records
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }
    registry.register(
        "dht_records_rejected",
        "DHT records refused by validation, by reason",
        rejected_records,
    );
    let rejected_messages: Family<ReasonLabel, Counter> = Family::default();
    for (reason, n) in stats.rejected_messages() {
        rejected_messages
            .get_or_create(&ReasonLabel {
                reason: reason.to_string(),
            })
            .inc_by(n);
    }
    registry.register(
        "messages_rejected",
        "Inbound CPNS messages refused, by reason",
        rejected_messages,
    );
    let received: Counter = Counter::default();
    received.inc_by(cpns_overlay::Stats::get(&stats.requests_received));
    registry.register("requests_received", "CPNS requests received", received);
    let sent: Counter = Counter::default();
    sent.inc_by(cpns_overlay::Stats::get(&stats.requests_sent));
    registry.register("requests_sent", "CPNS requests sent", sent);

    let mut out = String::new();
    if encode(&mut out, &registry).is_err() {
        out.clear();
    }
    out
}
