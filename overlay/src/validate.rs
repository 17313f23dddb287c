//! The hook through which every Kademlia write and read passes (`StoreInserts::FilterBoth`).
//!
//! The overlay knows nothing of what records mean; `cpns-directory` implements this trait to
//! check signatures, credentials, expiry, revocation and quotas. The event loop calls it
//! sequentially, so an implementation needs no locking of its own beyond `Sync`.

use libp2p::PeerId;
use libp2p::kad::{ProviderRecord, Record};

/// Why a record or provider announcement was refused. The reason is a short stable string used
/// as a metrics label (`bad_signature`, `expired`, `revoked`, `oversize`, `quota`, ...).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    /// Stable short reason.
    pub reason: &'static str,
    /// Detail for logs.
    pub detail: String,
}

impl Rejection {
    /// A rejection with a reason and detail.
    pub fn new(reason: &'static str, detail: impl Into<String>) -> Self {
        Self {
            reason,
            detail: detail.into(),
        }
    }
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.reason, self.detail)
    }
}

/// What a validator learnt from a peer's credential (`/cpns/cred/1.0.0`), kept by the
/// overlay for as long as the peer is connected and passed back with each of the peer's
/// provider announcements.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerCredential {
    /// The credential's serial (what revocation lists name).
    pub serial: u64,
    /// End of its validity, in Unix seconds.
    pub expires: u64,
}

/// Validates DHT records on store and on read.
pub trait RecordValidator: Send + Sync + 'static {
    /// A remote peer (`source`) asks this node to store `record`. `existing` is the record
    /// already stored under that key, if any. Return the record to store (the incoming one, or
    /// one merged with `existing`), or a rejection: then nothing is stored.
    fn validate_put(
        &self,
        source: &PeerId,
        record: Record,
        existing: Option<&Record>,
    ) -> Result<Record, Rejection>;

    /// A query returned `record` (from the local store or a remote peer); the caller only sees
    /// it if this accepts it.
    fn validate_get(&self, record: &Record) -> Result<(), Rejection>;

    /// A remote peer announces itself as a provider of a key. `credential` is what
    /// [`RecordValidator::validate_credential`] accepted from that peer on this connection, if
    /// anything.
    fn validate_provider(
        &self,
        source: &PeerId,
        record: &ProviderRecord,
        credential: Option<&PeerCredential>,
    ) -> Result<(), Rejection>;

    /// Whether provider announcements need the announcer's credential. When true, the
    /// overlay asks every new peer for its credential and holds the peer's announcements
    /// (bounded) until the answer is in. Default: false.
    fn wants_credentials(&self) -> bool {
        false
    }

    /// A peer presented `credential` (its bytes as sent). Accept it only if it certifies
    /// `peer` and is valid now. Default: refused (this validator does not know credentials).
    fn validate_credential(
        &self,
        peer: &PeerId,
        credential: &[u8],
    ) -> Result<PeerCredential, Rejection> {
        let _ = (peer, credential);
        Err(Rejection::new(
            "unsupported",
            "this validator checks no credentials",
        ))
    }
}

/// Accepts everything: the overlay's default, for plain DHT use and tests.
#[derive(Clone, Copy, Debug, Default)]
pub struct AcceptAll;

impl RecordValidator for AcceptAll {
    fn validate_put(
        &self,
        _: &PeerId,
        record: Record,
        _: Option<&Record>,
    ) -> Result<Record, Rejection> {
        Ok(record)
    }
    fn validate_get(&self, _: &Record) -> Result<(), Rejection> {
        Ok(())
    }
    fn validate_provider(
        &self,
        _: &PeerId,
        _: &ProviderRecord,
        _: Option<&PeerCredential>,
    ) -> Result<(), Rejection> {
        Ok(())
    }
}
