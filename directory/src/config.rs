//! Directory configuration: lifetimes, every size limit and every cap.
//!
//! The same [`Config`] drives what a node publishes ([`crate::Directory`]) and what it accepts
//! from others ([`crate::Validator`]), so a node never publishes what its peers would refuse.

use std::time::Duration;

/// Directory configuration. [`Config::default`] suits a home or community deployment; tests
/// shorten the lifetimes.
#[derive(Clone, Debug)]
pub struct Config {
    /// How often a node re-signs and re-puts its own services (and provider records).
    /// Default: 1 h.
    pub republish_interval: Duration,
    /// Lifetime of a record in the DHT when the service itself has no end: every republish
    /// pushes the expiry to `now + record_ttl`. Default: 6 h, i.e. a node that is switched off
    /// stops being advertised within 6 h, while five missed republishes are tolerated.
    pub record_ttl: Duration,
    /// Longest lifetime a stored record may claim (`expires - now`); longer ones are refused so
    /// that a record cannot pin itself in other nodes' stores. Default: 7 days.
    pub max_record_ttl: Duration,
    /// How far in the future a record's signing time may lie (clock skew). Default: 5 min.
    pub max_clock_skew: Duration,
    /// Largest service, index or PN-summary record (the encoded DHT value). Default: 16 KiB.
    pub max_record_size: usize,
    /// Largest revocation-list record. Default: 64 KiB (about 8,000 serials), which must not
    /// exceed the overlay's `max_record_bytes`.
    pub max_revocation_record_size: usize,
    /// Most keywords per service. Default: 16.
    pub max_keywords: usize,
    /// Longest normalised keyword, in bytes. Default: 64.
    pub max_keyword_len: usize,
    /// Longest service name, in bytes. Default: 128.
    pub max_name_len: usize,
    /// Longest free text (`offers`, metadata values, endpoint addresses), in bytes.
    /// Default: 1024.
    pub max_text_len: usize,
    /// Most metadata entries, endpoint addresses or device types. Default: 32.
    pub max_list_len: usize,
    /// Most services a node publishes itself. Default: 256.
    pub max_local_services: usize,
    /// Most records from one publisher this node stores for others. Default: 256.
    pub max_records_per_peer: usize,
    /// Most keys one peer may announce itself as a provider of at this node. Default: 1024.
    pub max_provider_keys_per_peer: usize,
    /// Most publishers (and provider peers) whose quotas are tracked; beyond it, new peers
    /// are refused until old entries expire. Default: 4096.
    pub max_tracked_peers: usize,
    /// Assumed lifetime of a provider announcement, for the per-peer provider quota. Should
    /// match the overlay's provider TTL. Default: 48 h.
    pub provider_ttl: Duration,
    /// Delay before a changed publisher index is written (changes meanwhile are coalesced).
    /// Indexes are only the DHT fallback of direct lookups, so they stay off the publish path.
    /// Default: 1 s.
    pub index_delay: Duration,
    /// Puts succeed once this many remote peers stored the record. Default: 1.
    pub put_quorum: usize,
    /// A keyword lookup stops once this many peers answered with providers (the union of
    /// their answers is used), or when the lookup converges. Each of the k closest peers holds
    /// every provider of the keyword, so 1 is enough when all announcements arrived; 2 covers
    /// one replica that missed one. Default: 2.
    pub find_quorum: usize,
    /// Most providers contacted per keyword lookup. Default: 64.
    pub max_providers: usize,
    /// How long a direct lookup at a provider may take before falling back to the DHT index.
    /// Default: 2 s.
    pub lookup_timeout: Duration,
    /// Once one provider of a discovery has answered its direct lookup, how long the others
    /// are waited for (or 4 times the first answer's time, if longer) before their indexes
    /// are read from the DHT instead: one provider that never answers then costs a discovery
    /// this, not `lookup_timeout`. Default: 100 ms.
    pub straggler_grace: Duration,
    /// Most services returned by one discovery. Default: 256.
    pub max_results: usize,
    /// Most advertisement subscriptions held for other peers (a gateway's registry).
    /// Default: 4096.
    pub max_subscribers: usize,
    /// Most keyword subscriptions one peer may hold here. Default: 64.
    pub max_subscriptions_per_peer: usize,
    /// How long another peer's subscriptions live after its last Subscribe (each Subscribe
    /// renews all of its subscriptions); subscribers re-subscribe within it. Default: 24 h.
    pub subscription_ttl: Duration,
    /// Most local keyword subscriptions (`services watch`). Default: 256.
    pub max_local_subscriptions: usize,
    /// Capacity of the local advertisement broadcast channel. Default: 64.
    pub advertise_channel: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            republish_interval: Duration::from_secs(3600),
            record_ttl: Duration::from_secs(6 * 3600),
            max_record_ttl: Duration::from_secs(7 * 24 * 3600),
            max_clock_skew: Duration::from_secs(300),
            max_record_size: 16 * 1024,
            max_revocation_record_size: 64 * 1024,
            max_keywords: 16,
            max_keyword_len: 64,
            max_name_len: 128,
            max_text_len: 1024,
            max_list_len: 32,
            max_local_services: 256,
            max_records_per_peer: 256,
            max_provider_keys_per_peer: 1024,
            max_tracked_peers: 4096,
            provider_ttl: Duration::from_secs(48 * 3600),
            index_delay: Duration::from_secs(1),
            put_quorum: 1,
            find_quorum: 2,
            max_providers: 64,
            lookup_timeout: Duration::from_secs(2),
            straggler_grace: Duration::from_millis(100),
            max_results: 256,
            max_subscribers: 4096,
            max_subscriptions_per_peer: 64,
            subscription_ttl: Duration::from_secs(24 * 3600),
            max_local_subscriptions: 256,
            advertise_channel: 64,
        }
    }
}
