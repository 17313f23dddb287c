//! The DHT record format: one envelope type, a kind tag, a signature over a domain tag and the
//! codec bytes, the publisher's credential embedded.
//!
//! ```text
//! DhtRecord = Signed { signed: codec(Header), credential: EntityCredential bytes, signature }
//!           | Revocations(RevocationList)            -- self-authenticating: CA-signed
//! Header    = { key, publisher, version, issued, expires, body }
//! Body      = Service(Clear(ServiceDescription) | Sealed(GroupSealed) | Withdrawn)
//!           | Index([{ record key, 8-byte keyword keys }])
//!           | PnSummary(PnInventorySummary)
//!           | PnSummaryWithdrawn(pn id)              -- the PN was merged away (5.6.9)
//! signature = ed25519(publisher, "cpns directory record v1\0" || signed)
//! ```
//!
//! The signature covers the exact `signed` bytes (never a re-encoding), and those bytes carry
//! the DHT key the record belongs under, its kind (the `Body` tag), its publisher, version and
//! lifetime. So a record can neither be moved to another key nor passed off as another kind,
//! and a node that cannot read a sealed body can still check everything else: who signed it,
//! that the CA vouches for the signer, that the signer is not revoked, and that it is alive.

use cpns_keys::{
    CredentialError, EntityCredential, GroupKey, GroupSealed, Identity, Mode, PeerId, PublicKey,
    RevocationList, Signature, UnixTime,
};
use cpns_overlay::{PnInventorySummary, codec};
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::keyword::{self, KeyScope};
use crate::service::{ServiceDescription, Source, Visibility};
use crate::trust::Trust;

/// Domain tag in front of the signed bytes.
const RECORD_TAG: &[u8] = b"cpns directory record v1\0";

/// Most entries in a publisher index record.
pub(crate) const MAX_INDEX_ENTRIES: usize = 128;

/// Most members listed in a PN summary record.
const MAX_SUMMARY_MEMBERS: usize = 256;

/// Longest service id, in bytes.
pub(crate) const MAX_ID_LEN: usize = 64;

/// What is stored as the value of a DHT record.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) enum DhtRecord {
    /// Signed by an entity holding a CA credential.
    Signed(SignedEnvelope),
    /// The CA's revocation list; the CA signature inside is its authentication.
    Revocations(RevocationList),
}

/// A record signed by its publisher.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct SignedEnvelope {
    /// `codec(Header)`: the bytes the signature covers (after [`RECORD_TAG`]).
    pub(crate) signed: Vec<u8>,
    /// The publisher's [`EntityCredential`] in its canonical encoding.
    pub(crate) credential: Vec<u8>,
    /// The publisher's signature.
    pub(crate) signature: Signature,
}

/// The signed part of a record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Header {
    /// The DHT key the record belongs under.
    pub(crate) key: Vec<u8>,
    /// Who signed it.
    pub(crate) publisher: PeerId,
    /// Goes up with each change; with `issued`, decides which of two records is newer.
    pub(crate) version: u64,
    /// When it was signed.
    pub(crate) issued: UnixTime,
    /// When it stops being valid.
    pub(crate) expires: UnixTime,
    /// The content.
    pub(crate) body: Body,
}

impl Header {
    /// `(version, issued)`: the order in which records under one key replace each other.
    pub(crate) fn order(&self) -> (u64, UnixTime) {
        (self.version, self.issued)
    }
}

/// What a record holds; the variant is the record's kind.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Body {
    /// A service description.
    Service(ServiceBody),
    /// A publisher's index of its services in one scope: the DHT fallback when the publisher
    /// cannot be asked directly.
    Index(Vec<IndexEntry>),
    /// A gateway's summary of its PN Inventory.
    PnSummary(Box<PnInventorySummary>),
    /// The gateway of a PN that no longer exists (5.6.9: merged into another, released at
    /// `cpns-auth`) withdraws its summary: replaces the summary under the PN's key.
    PnSummaryWithdrawn(String),
}

/// A service description, readable by all, sealed for a group, or withdrawn.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum ServiceBody {
    /// A public description.
    Clear(Box<ServiceDescription>),
    /// `codec(ServiceDescription)` sealed under a PN or Service Group key.
    Sealed(GroupSealed),
    /// A tombstone: the publisher unpublished the service; replaces earlier versions.
    Withdrawn,
}

/// One service in a publisher index.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct IndexEntry {
    /// The service's record key.
    pub(crate) record: Vec<u8>,
    /// The first 8 bytes of each of its keyword keys (in the index's scope).
    pub(crate) keywords: Vec<[u8; 8]>,
}

/// Why a record was refused. [`RecordError::reason`] is the metrics label.
#[non_exhaustive]
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Larger than the limit for its kind.
    #[error("record of {len} bytes exceeds the limit of {max}")]
    Oversize {
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Not a valid encoding.
    #[error("malformed record: {0}")]
    Malformed(String),
    /// Stored under another key than the one it was signed for.
    #[error("record signed for another key")]
    WrongKey,
    /// The publisher's (or the CA's) signature does not verify.
    #[error("bad record signature")]
    BadSignature,
    /// The embedded credential is not valid for the publisher.
    #[error("bad credential: {0}")]
    BadCredential(CredentialError),
    /// The publisher's credential is revoked.
    #[error("publisher credential serial {0} is revoked")]
    Revoked(u64),
    /// Past its expiry.
    #[error("record expired at {expires} (now {now})")]
    Expired {
        /// Its expiry.
        expires: UnixTime,
        /// The time checked.
        now: UnixTime,
    },
    /// Signed in the future (beyond the allowed clock skew).
    #[error("record signed in the future ({issued}, now {now})")]
    Future {
        /// Its signing time.
        issued: UnixTime,
        /// The time checked.
        now: UnixTime,
    },
    /// Claims a lifetime longer than allowed.
    #[error("record lifetime too long")]
    TtlTooLong,
    /// Its content breaks a rule (limits, publisher mismatch...).
    #[error("invalid record content: {0}")]
    Invalid(String),
    /// A record of another publisher is alive under this key.
    #[error("another publisher's record is alive under this key")]
    Conflict,
    /// Older than the record already stored.
    #[error("older than the stored record")]
    Stale,
    /// A quota (records or providers per peer) is exhausted.
    #[error("quota exhausted: {0}")]
    Quota(&'static str),
    /// A provider announcement from a peer that presented no valid credential.
    #[error("the provider presented no valid credential")]
    NoCredential,
}

impl RecordError {
    /// A short stable label, for metrics and the overlay's rejection counters.
    pub fn reason(&self) -> &'static str {
        match self {
            RecordError::Oversize { .. } => "oversize",
            RecordError::Malformed(_) => "malformed",
            RecordError::WrongKey => "wrong_key",
            RecordError::BadSignature => "bad_signature",
            RecordError::BadCredential(_) => "bad_credential",
            RecordError::Revoked(_) => "revoked",
            RecordError::Expired { .. } => "expired",
            RecordError::Future { .. } => "future",
            RecordError::TtlTooLong => "ttl_too_long",
            RecordError::Invalid(_) => "invalid",
            RecordError::Conflict => "conflict",
            RecordError::Stale => "stale",
            RecordError::Quota(_) => "quota",
            RecordError::NoCredential => "no_credential",
        }
    }
}

/// A record whose signature, credential and lifetime have been checked.
#[derive(Clone, Debug)]
pub(crate) enum Checked {
    /// An entity-signed record.
    Signed { header: Box<Header> },
    /// A CA-verified revocation list.
    Revocations(RevocationList),
}

/// Decodes a record without checking anything but its size and shape; used to compare a new
/// record with the one already stored (which was checked when it was stored).
pub(crate) fn peek(bytes: &[u8], config: &Config) -> Result<Peeked, RecordError> {
    let max = config
        .max_record_size
        .max(config.max_revocation_record_size);
    let record: DhtRecord =
        codec::decode(bytes, max).map_err(|e| RecordError::Malformed(e.to_string()))?;
    match record {
        DhtRecord::Signed(env) => {
            let header: Header = codec::decode(&env.signed, config.max_record_size)
                .map_err(|e| RecordError::Malformed(e.to_string()))?;
            Ok(Peeked::Signed(Box::new(header)))
        }
        DhtRecord::Revocations(list) => Ok(Peeked::Revocations {
            version: list.version,
        }),
    }
}

/// The shape of a stored record, unchecked.
#[derive(Debug)]
pub(crate) enum Peeked {
    Signed(Box<Header>),
    Revocations { version: u64 },
}

/// Fully checks a record from an untrusted source: size, encoding, the key it is stored
/// under (if known), signature, credential chain to the pinned CA, revocation, lifetime, and
/// every content rule that can be checked without a group key. Pure CPU work, bounded by the
/// size limits: two ed25519 verifications at most.
pub(crate) fn verify(
    bytes: &[u8],
    key: Option<&[u8]>,
    trust: &Trust,
    config: &Config,
    now: UnixTime,
) -> Result<Checked, RecordError> {
    let max = config
        .max_record_size
        .max(config.max_revocation_record_size);
    if bytes.len() > max {
        return Err(RecordError::Oversize {
            len: bytes.len(),
            max,
        });
    }
    let record: DhtRecord =
        codec::decode(bytes, max).map_err(|e| RecordError::Malformed(e.to_string()))?;
    match record {
        DhtRecord::Revocations(list) => {
            if bytes.len() > config.max_revocation_record_size {
                return Err(RecordError::Oversize {
                    len: bytes.len(),
                    max: config.max_revocation_record_size,
                });
            }
            if let Some(k) = key
                && k != keyword::revocations_key(trust.ca())
            {
                return Err(RecordError::WrongKey);
            }
            list.verify(trust.ca()).map_err(|e| match e {
                CredentialError::BadSignature => RecordError::BadSignature,
                other => RecordError::Invalid(other.to_string()),
            })?;
            Ok(Checked::Revocations(list))
        }
        DhtRecord::Signed(env) => verify_signed(env, bytes.len(), key, trust, config, now),
    }
}

fn verify_signed(
    env: SignedEnvelope,
    len: usize,
    key: Option<&[u8]>,
    trust: &Trust,
    config: &Config,
    now: UnixTime,
) -> Result<Checked, RecordError> {
    if len > config.max_record_size {
        return Err(RecordError::Oversize {
            len,
            max: config.max_record_size,
        });
    }
    let header: Header = codec::decode(&env.signed, config.max_record_size)
        .map_err(|e| RecordError::Malformed(e.to_string()))?;
    if let Some(k) = key
        && k != header.key.as_slice()
    {
        return Err(RecordError::WrongKey);
    }
    check_lifetime(&header, config, now)?;
    let credential = EntityCredential::from_bytes(&env.credential)
        .map_err(|e| RecordError::Malformed(format!("credential: {e}")))?;
    check_body(&header, &credential, config)?;
    // The expensive checks last: the publisher's signature, then the CA's.
    let publisher = PublicKey::from_peer_id(&header.publisher)
        .map_err(|e| RecordError::Malformed(format!("publisher: {e}")))?;
    publisher
        .verify(&signed_bytes(&env.signed), &env.signature)
        .map_err(|_| RecordError::BadSignature)?;
    let mode = matches!(
        header.body,
        Body::PnSummary(_) | Body::PnSummaryWithdrawn(_)
    )
    .then_some(Mode::Gateway);
    trust
        .check_credential_mode(&credential, &header.publisher, mode, now)
        .map_err(|e| match e {
            CredentialError::Revoked { serial } => RecordError::Revoked(serial),
            other => RecordError::BadCredential(other),
        })?;
    Ok(Checked::Signed {
        header: Box::new(header),
    })
}

/// Headroom of a version above `(now + clock skew) * 1000`: publishers number versions from
/// their clock in milliseconds ([`crate::Directory`]) and go one up per change within the
/// same millisecond, so a larger version is a jump meant to outrank every future one (issue
/// 14: `u64::MAX` took a service over).
pub(crate) const MAX_VERSION_HEADROOM: u64 = 1_000_000;

fn check_lifetime(header: &Header, config: &Config, now: UnixTime) -> Result<(), RecordError> {
    let latest = now
        .saturating_add(config.max_clock_skew.as_secs())
        .saturating_mul(1000)
        .saturating_add(MAX_VERSION_HEADROOM);
    if header.version > latest {
        return Err(RecordError::Invalid(format!(
            "version {} is beyond the publisher clock's ({latest})",
            header.version
        )));
    }
    if header.issued > now.saturating_add(config.max_clock_skew.as_secs()) {
        return Err(RecordError::Future {
            issued: header.issued,
            now,
        });
    }
    if now >= header.expires {
        return Err(RecordError::Expired {
            expires: header.expires,
            now,
        });
    }
    if header.expires - now
        > config
            .max_record_ttl
            .as_secs()
            .saturating_add(config.max_clock_skew.as_secs())
    {
        return Err(RecordError::TtlTooLong);
    }
    Ok(())
}

/// Content rules a node without group keys can check.
fn check_body(
    header: &Header,
    credential: &EntityCredential,
    config: &Config,
) -> Result<(), RecordError> {
    let invalid = |s: String| Err(RecordError::Invalid(s));
    if header.key.len() != 32 {
        return invalid(format!("key of {} bytes", header.key.len()));
    }
    match &header.body {
        Body::Service(ServiceBody::Clear(desc)) => {
            check_description(desc, config).map_err(RecordError::Invalid)?;
            if desc.publisher != header.publisher {
                return invalid("description names another publisher".into());
            }
            if desc.visibility != Visibility::Public {
                return invalid("a non-public description in clear".into());
            }
            if desc.expires != header.expires {
                return invalid("description expiry differs from the record's".into());
            }
            if header.key != KeyScope::Public.service(&desc.id) {
                return Err(RecordError::WrongKey);
            }
        }
        Body::Service(ServiceBody::Sealed(sealed)) => {
            if sealed.sender != header.publisher {
                return invalid("sealed by another sender than the publisher".into());
            }
            if sealed.group.0.is_empty() || sealed.group.0.len() > cpns_keys::MAX_GROUP_ID_LEN {
                return invalid("bad group id".into());
            }
        }
        Body::Service(ServiceBody::Withdrawn) => {}
        Body::Index(entries) => {
            if entries.len() > MAX_INDEX_ENTRIES {
                return invalid(format!("index of {} entries", entries.len()));
            }
            if entries
                .iter()
                .any(|e| e.record.len() != 32 || e.keywords.len() > config.max_keywords)
            {
                return invalid("bad index entry".into());
            }
        }
        Body::PnSummary(s) => {
            if s.gateway != header.publisher {
                return invalid("summary names another gateway".into());
            }
            if s.owner != credential.body.user {
                return invalid("summary of a PN the publisher's user does not own".into());
            }
            if s.members.len() > MAX_SUMMARY_MEMBERS {
                return invalid("too many members".into());
            }
            if header.key != keyword::pn_summary_key(&s.pn_id) {
                return Err(RecordError::WrongKey);
            }
        }
        Body::PnSummaryWithdrawn(pn_id) => {
            if pn_id.is_empty() || pn_id.len() > cpns_keys::MAX_GROUP_ID_LEN {
                return invalid("bad PN id".into());
            }
            if header.key != keyword::pn_summary_key(pn_id) {
                return Err(RecordError::WrongKey);
            }
        }
    }
    Ok(())
}

/// The limits every description obeys, checked on publish and on every read.
pub(crate) fn check_description(d: &ServiceDescription, c: &Config) -> Result<(), String> {
    let text = |what: &str, s: &str, max: usize| {
        if s.len() > max {
            Err(format!("{what} of {} bytes exceeds {max}", s.len()))
        } else {
            Ok(())
        }
    };
    if d.id.is_empty() || d.id.len() > MAX_ID_LEN || d.id.chars().any(char::is_control) {
        return Err("bad service id".into());
    }
    if d.name.trim().is_empty() {
        return Err("empty name".into());
    }
    text("name", &d.name, c.max_name_len)?;
    text("offers", &d.offers, c.max_text_len)?;
    if d.keywords.is_empty() || d.keywords.len() > c.max_keywords {
        return Err(format!(
            "{} keywords (1 to {} allowed)",
            d.keywords.len(),
            c.max_keywords
        ));
    }
    for k in &d.keywords {
        match keyword::normalise_keyword(k, c.max_keyword_len) {
            Ok(n) if &n == k => {}
            _ => return Err(format!("keyword {k:?} is not normalised")),
        }
    }
    if let Source::External { name, url } = &d.source {
        text("source name", name, c.max_name_len)?;
        text("source url", url.as_deref().unwrap_or(""), c.max_text_len)?;
    }
    let r = &d.requirements;
    if r.device_types.len() > c.max_list_len || r.modes.len() > c.max_list_len {
        return Err("too many device types or modes".into());
    }
    for t in &r.device_types {
        text("device type", t, c.max_name_len)?;
    }
    text("protocol", &d.endpoint.protocol, c.max_name_len)?;
    if d.endpoint.addresses.len() > c.max_list_len {
        return Err("too many addresses".into());
    }
    for a in &d.endpoint.addresses {
        text("address", a, c.max_text_len)?;
    }
    if d.metadata.len() > c.max_list_len {
        return Err("too many metadata entries".into());
    }
    for (k, v) in &d.metadata {
        text("metadata key", k, c.max_name_len)?;
        text("metadata value", v, c.max_text_len)?;
    }
    Ok(())
}

fn signed_bytes(signed: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RECORD_TAG.len() + signed.len());
    out.extend_from_slice(RECORD_TAG);
    out.extend_from_slice(signed);
    out
}

/// Signs a header as `identity` and encodes the record.
pub(crate) fn sign(
    identity: &Identity,
    credential: &EntityCredential,
    header: &Header,
) -> Result<Vec<u8>, codec::CodecError> {
    let signed = codec::encode(header)?;
    let signature = identity.sign(&signed_bytes(&signed));
    codec::encode(&DhtRecord::Signed(SignedEnvelope {
        signed,
        credential: credential.to_bytes(),
        signature,
    }))
}

/// Encodes a CA-signed revocation list as a record.
pub(crate) fn revocations_record(list: &RevocationList) -> Result<Vec<u8>, codec::CodecError> {
    codec::encode(&DhtRecord::Revocations(list.clone()))
}

/// Seals a description for its group.
pub(crate) fn seal(
    key: &GroupKey,
    desc: &ServiceDescription,
) -> Result<GroupSealed, codec::CodecError> {
    Ok(key.seal(&desc.publisher, &codec::encode(desc)?))
}

/// Why a sealed description could not be opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OpenError {
    /// No key of that group and epoch is held.
    #[error("no key for {0} epoch {1}")]
    NoKey(String, u64),
    /// The content is bad (tampered, or inconsistent with its envelope).
    #[error("{0}")]
    Bad(String),
}

/// Opens a sealed description with `key` and checks it against its envelope: same publisher,
/// same group, stored under the keyed hash of its id, same expiry, and within the limits.
pub(crate) fn open_sealed(
    header: &Header,
    sealed: &GroupSealed,
    key: &GroupKey,
    config: &Config,
) -> Result<ServiceDescription, OpenError> {
    let plain = key
        .open(sealed)
        .map_err(|e| OpenError::Bad(format!("cannot open: {e}")))?;
    let desc: ServiceDescription = codec::decode(&plain, config.max_record_size)
        .map_err(|e| OpenError::Bad(format!("sealed content: {e}")))?;
    check_description(&desc, config).map_err(OpenError::Bad)?;
    if desc.publisher != header.publisher {
        return Err(OpenError::Bad("description names another publisher".into()));
    }
    if desc.visibility.group() != Some(&sealed.group) {
        return Err(OpenError::Bad(
            "sealed for another group than it names".into(),
        ));
    }
    if desc.expires != header.expires {
        return Err(OpenError::Bad("expiry differs from the record's".into()));
    }
    if header.key != KeyScope::Group(key).service(&desc.id) {
        return Err(OpenError::Bad(
            "stored under another key than its id's".into(),
        ));
    }
    Ok(desc)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use crate::service::{Endpoint, Requirements};
    use cpns_keys::{CredentialBody, GroupId, Modes};

    pub(crate) const NOW: UnixTime = 1_700_000_000;

    pub(crate) struct Fixture {
        pub(crate) ca: Identity,
        pub(crate) node: Identity,
        pub(crate) cred: EntityCredential,
        pub(crate) trust: Trust,
        pub(crate) config: Config,
    }

    pub(crate) fn fixture() -> Fixture {
        let ca = Identity::from_secret_bytes([9; 32]);
        let node = Identity::from_secret_bytes([1; 32]);
        let cred = credential(&ca, &node, 1, Modes::ALL);
        let trust = Trust::new(ca.public(), RevocationList::empty_unsigned());
        Fixture {
            ca,
            node,
            cred,
            trust,
            config: Config::default(),
        }
    }

    pub(crate) fn credential(
        ca: &Identity,
        node: &Identity,
        serial: u64,
        modes: Modes,
    ) -> EntityCredential {
        EntityCredential::issue(
            ca,
            CredentialBody {
                entity: node.peer_id(),
                user: "alice".into(),
                device: "laptop".into(),
                modes,
                serial,
                issued: NOW - 10,
                expires: NOW + 86_400,
            },
        )
    }

    pub(crate) fn description(publisher: PeerId, visibility: Visibility) -> ServiceDescription {
        ServiceDescription {
            id: "svc-0123456789abcdef".into(),
            name: "Jazz radio".into(),
            keywords: vec!["jazz".into(), "radio".into()],
            offers: "a radio".into(),
            source: Source::Entity(publisher),
            publisher,
            requirements: Requirements::default(),
            endpoint: Endpoint {
                protocol: "http".into(),
                addresses: vec!["http://127.0.0.1:8000".into()],
            },
            metadata: Default::default(),
            version: 1,
            published: NOW,
            expires: NOW + 3600,
            visibility,
        }
    }

    pub(crate) fn public_record(f: &Fixture) -> (Vec<u8>, Vec<u8>) {
        let desc = description(f.node.peer_id(), Visibility::Public);
        let key = KeyScope::Public.service(&desc.id);
        let header = Header {
            key: key.clone(),
            publisher: f.node.peer_id(),
            version: 1,
            issued: NOW,
            expires: desc.expires,
            body: Body::Service(ServiceBody::Clear(Box::new(desc))),
        };
        (key, sign(&f.node, &f.cred, &header).unwrap())
    }

    #[test]
    fn public_record_verifies() {
        let f = fixture();
        let (key, bytes) = public_record(&f);
        let checked = verify(&bytes, Some(&key), &f.trust, &f.config, NOW).unwrap();
        assert!(matches!(checked, Checked::Signed { .. }));
        assert_eq!(
            verify(&bytes, Some(&[0; 32]), &f.trust, &f.config, NOW).unwrap_err(),
            RecordError::WrongKey
        );
        assert!(matches!(
            verify(&bytes, Some(&key), &f.trust, &f.config, NOW + 3600),
            Err(RecordError::Expired { .. })
        ));
        assert!(matches!(
            verify(&bytes, Some(&key), &f.trust, &f.config, NOW - 3600),
            Err(RecordError::Future { .. })
        ));
    }

    #[test]
    fn forged_and_revoked_records_fail() {
        let f = fixture();
        let (key, bytes) = public_record(&f);
        let DhtRecord::Signed(mut env) = codec::decode::<DhtRecord>(&bytes, 1 << 20).unwrap()
        else {
            panic!("signed")
        };
        // Valid shape, bad signature: another node's signature over the same bytes.
        env.signature = Identity::generate().sign(&signed_bytes(&env.signed));
        let forged = codec::encode(&DhtRecord::Signed(env.clone())).unwrap();
        assert_eq!(
            verify(&forged, Some(&key), &f.trust, &f.config, NOW).unwrap_err(),
            RecordError::BadSignature
        );
        // Tampered content.
        let mut header: Header = codec::decode(&env.signed, 1 << 20).unwrap();
        header.version = 99;
        env.signed = codec::encode(&header).unwrap();
        let tampered = codec::encode(&DhtRecord::Signed(env)).unwrap();
        assert_eq!(
            verify(&tampered, Some(&key), &f.trust, &f.config, NOW).unwrap_err(),
            RecordError::BadSignature
        );
        // Credential from another CA.
        let rogue = credential(&Identity::generate(), &f.node, 1, Modes::ALL);
        let desc = description(f.node.peer_id(), Visibility::Public);
        let header = Header {
            key: key.clone(),
            publisher: f.node.peer_id(),
            version: 1,
            issued: NOW,
            expires: desc.expires,
            body: Body::Service(ServiceBody::Clear(Box::new(desc))),
        };
        let rogue_rec = sign(&f.node, &rogue, &header).unwrap();
        assert!(matches!(
            verify(&rogue_rec, Some(&key), &f.trust, &f.config, NOW),
            Err(RecordError::BadCredential(_))
        ));
        // Revoked publisher.
        assert!(
            f.trust
                .update_revocations(RevocationList::sign(&f.ca, 1, NOW, [1]).unwrap())
        );
        assert_eq!(
            verify(&bytes, Some(&key), &f.trust, &f.config, NOW).unwrap_err(),
            RecordError::Revoked(1)
        );
    }

    #[test]
    fn sealed_record_round_trip() {
        let f = fixture();
        let gk = GroupKey::generate(GroupId("pn:1".into()), 3);
        let desc = description(f.node.peer_id(), Visibility::Pn(GroupId("pn:1".into())));
        let key = KeyScope::Group(&gk).service(&desc.id);
        let sealed = seal(&gk, &desc).unwrap();
        let header = Header {
            key: key.clone(),
            publisher: f.node.peer_id(),
            version: 1,
            issued: NOW,
            expires: desc.expires,
            body: Body::Service(ServiceBody::Sealed(sealed.clone())),
        };
        let bytes = sign(&f.node, &f.cred, &header).unwrap();
        for needle in [b"Jazz".as_slice(), b"jazz", b"radio", desc.id.as_bytes()] {
            assert!(!bytes.windows(needle.len()).any(|w| w == needle));
        }
        let Checked::Signed { header, .. } =
            verify(&bytes, Some(&key), &f.trust, &f.config, NOW).unwrap()
        else {
            panic!("signed")
        };
        assert_eq!(open_sealed(&header, &sealed, &gk, &f.config).unwrap(), desc);
        let other = GroupKey::generate(GroupId("pn:1".into()), 3);
        assert!(open_sealed(&header, &sealed, &other, &f.config).is_err());
    }

    #[test]
    fn oversized_records_are_refused() {
        let f = fixture();
        // A well-formed, correctly signed index larger than the 16 KiB limit.
        let entries = (0..MAX_INDEX_ENTRIES)
            .map(|i| IndexEntry {
                record: vec![i as u8; 32],
                keywords: vec![[i as u8; 8]; 16],
            })
            .collect();
        let key = KeyScope::Public.index(&f.node.peer_id());
        let header = Header {
            key: key.clone(),
            publisher: f.node.peer_id(),
            version: 1,
            issued: NOW,
            expires: NOW + 60,
            body: Body::Index(entries),
        };
        let bytes = sign(&f.node, &f.cred, &header).unwrap();
        assert!(bytes.len() > f.config.max_record_size);
        assert!(matches!(
            verify(&bytes, Some(&key), &f.trust, &f.config, NOW),
            Err(RecordError::Oversize { .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let f = fixture();
        let (key, bytes) = public_record(&f);
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        for cut in 0..bytes.len() {
            assert!(verify(&bytes[..cut], Some(&key), &f.trust, &f.config, NOW).is_err());
        }
        for _ in 0..2000 {
            let mut b = bytes.clone();
            let flips = 1 + (next() % 4) as usize;
            for _ in 0..flips {
                let i = (next() as usize) % b.len();
                b[i] ^= (next() as u8) | 1;
            }
            let _ = verify(&b, Some(&key), &f.trust, &f.config, NOW);
            let _ = peek(&b, &f.config);
        }
        for len in [0usize, 1, 7, 100, 5000] {
            let b: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            assert!(verify(&b, None, &f.trust, &f.config, NOW).is_err());
        }
        let huge = vec![0u8; f.config.max_revocation_record_size + 1];
        assert!(matches!(
            verify(&huge, None, &f.trust, &f.config, NOW),
            Err(RecordError::Oversize { .. })
        ));
    }
}
