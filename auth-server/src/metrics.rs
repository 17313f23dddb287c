//! Prometheus metrics, served as text at `/metrics` on the admin endpoint (no token; the
//! endpoint listens on loopback only).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, &'static str)>;

/// The server's counters and gauges.
pub(crate) struct Metrics {
    registry: Registry,
    enrolments: Family<Labels, Counter>,
    authentications: Family<Labels, Counter>,
    rotations: Family<Labels, Counter>,
    revocations: Counter,
    usage_reports: Family<Labels, Counter>,
    rejected: Family<Labels, Counter>,
    pushes: Family<Labels, Counter>,
    capabilities: Family<Labels, Counter>,
    pub(crate) sessions: Gauge,
    pub(crate) pns: Gauge,
    pub(crate) groups: Gauge,
    pub(crate) entities: Gauge,
}

impl Metrics {
    pub(crate) fn new() -> Self {
        let mut registry = Registry::with_prefix("cpns_auth");
        let enrolments = Family::<Labels, Counter>::default();
        registry.register(
            "enrolments",
            "Enrolment attempts by result (ok or the refusal reason)",
            enrolments.clone(),
        );
        let authentications = Family::<Labels, Counter>::default();
        registry.register(
            "authentications",
            "Authentication answers (B.1 step 10) and setups (step 8) by result",
            authentications.clone(),
        );
        let rotations = Family::<Labels, Counter>::default();
        registry.register(
            "key_rotations",
            "Group key rotations and creations by kind (pn, sg)",
            rotations.clone(),
        );
        let revocations = Counter::default();
        registry.register("revocations", "Entities revoked", revocations.clone());
        let usage_reports = Family::<Labels, Counter>::default();
        registry.register(
            "usage_reports",
            "Usage reports by result",
            usage_reports.clone(),
        );
        let rejected = Family::<Labels, Counter>::default();
        registry.register(
            "rejected_requests",
            "Requests answered with an error, by error code",
            rejected.clone(),
        );
        let pushes = Family::<Labels, Counter>::default();
        registry.register(
            "pushes",
            "Requests the server sent to nodes (key pushes, revocations, status updates) by result",
            pushes.clone(),
        );
        let capabilities = Family::<Labels, Counter>::default();
        registry.register(
            "capabilities_updates",
            "Capabilities updates by result (stored, or unchanged and not written)",
            capabilities.clone(),
        );
        let sessions = Gauge::default();
        registry.register("sessions", "Live authenticated sessions", sessions.clone());
        let pns = Gauge::default();
        registry.register("pns", "Personal Networks", pns.clone());
        let groups = Gauge::default();
        registry.register("service_groups", "Service Groups", groups.clone());
        let entities = Gauge::default();
        registry.register("entities", "Enrolled entities", entities.clone());
        Self {
            registry,
            enrolments,
            authentications,
            rotations,
            revocations,
            usage_reports,
            rejected,
            pushes,
            capabilities,
            sessions,
            pns,
            groups,
            entities,
        }
    }

    pub(crate) fn enrolment(&self, result: &'static str) {
        self.enrolments
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub(crate) fn authentication(&self, result: &'static str) {
        self.authentications
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub(crate) fn rotation(&self, kind: &'static str) {
        self.rotations.get_or_create(&vec![("kind", kind)]).inc();
    }

    pub(crate) fn revocation(&self) {
        self.revocations.inc();
    }

    pub(crate) fn usage_report(&self, result: &'static str) {
        self.usage_reports
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    pub(crate) fn rejected(&self, code: &'static str) {
        self.rejected.get_or_create(&vec![("code", code)]).inc();
    }

    pub(crate) fn push(&self, kind: &'static str, result: &'static str) {
        self.pushes
            .get_or_create(&vec![("kind", kind), ("result", result)])
            .inc();
    }

    pub(crate) fn capabilities_update(&self, result: &'static str) {
        self.capabilities
            .get_or_create(&vec![("result", result)])
            .inc();
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}
