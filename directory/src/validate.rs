//! The overlay's record validator: what this node agrees to store for others and to believe
//! when a query returns it.
//!
//! It runs inside the overlay's event loop, sequentially, so it does no I/O and bounded work
//! per record: a size check, one decode, two ed25519 verifications at most, a few map
//! operations. Quotas live in bounded maps; the keys of those maps are SipHash values of the
//! DHT keys under a per-process random key, so a peer cannot craft keys that share a quota
//! slot.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpns_keys::{EntityCredential, PeerId, UnixTime};
use cpns_overlay::{PeerCredential, Record, RecordValidator, Rejection};
use libp2p::kad::ProviderRecord;

use crate::config::Config;
use crate::record::{self, Checked, Peeked, RecordError};
use crate::trust::Trust;

/// How often a full quota sweep may run when the tracked-peer map is full.
const SWEEP_EVERY: u64 = 60;

/// Validates every DHT record and provider announcement for the overlay
/// (`cpns_overlay::Config::validator`), and counts what it accepted and refused.
///
/// Accepted: signed service, index and PN-summary records whose publisher's credential chains
/// to the pinned CA, is unrevoked and unexpired, within size and lifetime limits, and the
/// CA-signed revocation list; provider announcements only from peers that presented such a
/// credential in the overlay's credential exchange. Nothing else. A valid revocation list newer than the one in
/// [`Trust`] also updates it, which is how a revocation reaches nodes that never talk to the
/// server.
pub struct Validator {
    trust: Arc<Trust>,
    config: Config,
    quotas: Mutex<Quotas>,
    accepted: AtomicU64,
    rejected: Mutex<BTreeMap<&'static str, u64>>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("accepted", &self.accepted())
            .field("rejected", &self.rejected())
            .finish_non_exhaustive()
    }
}

impl Validator {
    /// A validator trusting `trust`, with the limits of `config`.
    pub fn new(trust: Arc<Trust>, config: &Config) -> Self {
        Self {
            trust,
            quotas: Mutex::new(Quotas::new(config)),
            config: config.clone(),
            accepted: AtomicU64::new(0),
            rejected: Mutex::new(BTreeMap::new()),
        }
    }

    /// Records and provider announcements accepted so far.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Records and provider announcements refused so far, by reason (`bad_signature`,
    /// `revoked`, `expired`, `oversize`, `quota`, ...).
    pub fn rejected(&self) -> BTreeMap<&'static str, u64> {
        self.rejected.lock().map(|m| m.clone()).unwrap_or_default()
    }

    fn count<T>(&self, r: Result<T, RecordError>) -> Result<T, Rejection> {
        match r {
            Ok(v) => {
                self.accepted.fetch_add(1, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                if let Ok(mut m) = self.rejected.lock() {
                    *m.entry(e.reason()).or_default() += 1;
                }
                Err(Rejection::new(e.reason(), e.to_string()))
            }
        }
    }

    pub(crate) fn put_at(
        &self,
        record: Record,
        existing: Option<&Record>,
        now: UnixTime,
    ) -> Result<Record, RecordError> {
        let mut record = record;
        let checked = record::verify(
            &record.value,
            Some(record.key.as_ref()),
            &self.trust,
            &self.config,
            now,
        )?;
        let old = existing
            .filter(|e| e.expires.is_none_or(|t| t > Instant::now()))
            .and_then(|e| record::peek(&e.value, &self.config).ok());
        match checked {
            Checked::Revocations(list) => {
                if let Some(Peeked::Revocations { version }) = old
                    && version > list.version
                {
                    return Err(RecordError::Stale);
                }
                self.trust.update_revocations(list);
            }
            Checked::Signed { header } => {
                if let Some(Peeked::Signed(old)) = old
                    && old.expires > now
                {
                    if old.publisher != header.publisher && !is_handover(&old, &header) {
                        return Err(RecordError::Conflict);
                    }
                    if header.order() < old.order() {
                        return Err(RecordError::Stale);
                    }
                }
                self.quotas
                    .lock()
                    .map_err(|_| RecordError::Quota("poisoned"))?
                    .charge_record(&header.publisher, record.key.as_ref(), header.expires, now)?;
                // Let the store drop it on time, whatever lifetime the sender's kad gave it.
                // (kad may have shortened it already for a node far from the key: keep the
                // shorter of the two).
                let left = Duration::from_secs(header.expires.saturating_sub(now));
                let ours = Instant::now() + left;
                record.expires = Some(record.expires.map_or(ours, |t| t.min(ours)));
            }
        }
        Ok(record)
    }

    pub(crate) fn get_at(&self, record: &Record, now: UnixTime) -> Result<(), RecordError> {
        let checked = record::verify(
            &record.value,
            Some(record.key.as_ref()),
            &self.trust,
            &self.config,
            now,
        )?;
        if let Checked::Revocations(list) = checked {
            self.trust.update_revocations(list);
        }
        Ok(())
    }

    pub(crate) fn credential_at(
        &self,
        peer: &PeerId,
        bytes: &[u8],
        now: UnixTime,
    ) -> Result<PeerCredential, RecordError> {
        let cred = EntityCredential::from_bytes(bytes).map_err(RecordError::BadCredential)?;
        self.trust
            .check_credential(&cred, peer, now)
            .map_err(|e| match e {
                cpns_keys::CredentialError::Revoked { serial } => RecordError::Revoked(serial),
                other => RecordError::BadCredential(other),
            })?;
        Ok(PeerCredential {
            serial: cred.serial(),
            expires: cred.body.expires,
        })
    }

    pub(crate) fn provider_at(
        &self,
        source: &PeerId,
        record: &ProviderRecord,
        credential: Option<&PeerCredential>,
        now: UnixTime,
    ) -> Result<(), RecordError> {
        // Only an enrolled, unrevoked, unexpired entity of our CA may announce (issue 14:
        // fresh PeerIds filled the provider store).
        let credential = credential.ok_or(RecordError::NoCredential)?;
        if credential.expires <= now {
            return Err(RecordError::NoCredential);
        }
        if self.trust.revocations().contains(credential.serial) {
            return Err(RecordError::Revoked(credential.serial));
        }
        if record.key.as_ref().len() != 32 {
            return Err(RecordError::Invalid("provider key is not 32 bytes".into()));
        }
        if record.addresses.len() > self.config.max_list_len {
            return Err(RecordError::Invalid("too many provider addresses".into()));
        }
        let expires = now.saturating_add(self.config.provider_ttl.as_secs());
        self.quotas
            .lock()
            .map_err(|_| RecordError::Quota("poisoned"))?
            .charge_provider(source, record.key.as_ref(), expires, now)
    }
}

/// Whether `new` takes a PN summary over from `old` legitimately: a gateway switch (5.6.9),
/// where the stored summary, signed by the gateway of record, lists the new gateway as a
/// member, and the new one keeps the old gateway as a member. The chain of signed summaries
/// is what makes a gateway one of record: any other gateway credential of the owner user (an
/// expelled device, say) cannot replace a live summary (issue 14).
fn is_handover(old: &record::Header, new: &record::Header) -> bool {
    match (&old.body, &new.body) {
        (record::Body::PnSummary(o), record::Body::PnSummary(n)) => {
            o.pn_id == n.pn_id
                && o.members.iter().any(|m| m.peer_id == new.publisher)
                && n.members.iter().any(|m| m.peer_id == old.publisher)
        }
        _ => false,
    }
}

impl RecordValidator for Validator {
    fn validate_put(
        &self,
        _source: &PeerId,
        record: Record,
        existing: Option<&Record>,
    ) -> Result<Record, Rejection> {
        self.count(self.put_at(record, existing, crate::now()))
    }

    fn validate_get(&self, record: &Record) -> Result<(), Rejection> {
        self.count(self.get_at(record, crate::now()))
    }

    fn validate_provider(
        &self,
        source: &PeerId,
        record: &ProviderRecord,
        credential: Option<&PeerCredential>,
    ) -> Result<(), Rejection> {
        self.count(self.provider_at(source, record, credential, crate::now()))
    }

    fn wants_credentials(&self) -> bool {
        true
    }

    fn validate_credential(
        &self,
        peer: &PeerId,
        credential: &[u8],
    ) -> Result<PeerCredential, Rejection> {
        self.credential_at(peer, credential, crate::now())
            .map_err(|e| Rejection::new(e.reason(), e.to_string()))
    }
}

/// Per-peer quotas: which keys each publisher has records under here, and which keys each
/// peer provides, with their expiry. Bounded in peers, in keys per peer and in total entries.
struct Quotas {
    hasher: RandomState,
    records: QuotaMap,
    providers: QuotaMap,
    max_peers: usize,
    max_entries: usize,
    records_per_peer: usize,
    providers_per_peer: usize,
    last_sweep: UnixTime,
}

type QuotaMap = HashMap<PeerId, HashMap<u64, UnixTime>>;

impl Quotas {
    fn new(c: &Config) -> Self {
        Self {
            hasher: RandomState::new(),
            records: HashMap::new(),
            providers: HashMap::new(),
            max_peers: c.max_tracked_peers,
            max_entries: c
                .max_tracked_peers
                .saturating_mul(16)
                .max(c.max_records_per_peer)
                .max(c.max_provider_keys_per_peer),
            records_per_peer: c.max_records_per_peer,
            providers_per_peer: c.max_provider_keys_per_peer,
            last_sweep: 0,
        }
    }

    fn entries(&self) -> usize {
        self.records
            .values()
            .chain(self.providers.values())
            .map(HashMap::len)
            .sum()
    }

    fn sweep(&mut self, now: UnixTime) {
        for map in [&mut self.records, &mut self.providers] {
            map.retain(|_, keys| {
                keys.retain(|_, exp| *exp > now);
                !keys.is_empty()
            });
        }
        self.last_sweep = now;
    }

    fn charge_record(
        &mut self,
        peer: &PeerId,
        key: &[u8],
        expires: UnixTime,
        now: UnixTime,
    ) -> Result<(), RecordError> {
        let cap = self.records_per_peer;
        self.charge(true, peer, key, expires, now, cap)
    }

    fn charge_provider(
        &mut self,
        peer: &PeerId,
        key: &[u8],
        expires: UnixTime,
        now: UnixTime,
    ) -> Result<(), RecordError> {
        let cap = self.providers_per_peer;
        self.charge(false, peer, key, expires, now, cap)
    }

    fn charge(
        &mut self,
        records: bool,
        peer: &PeerId,
        key: &[u8],
        expires: UnixTime,
        now: UnixTime,
        cap: usize,
    ) -> Result<(), RecordError> {
        let h = self.hasher.hash_one(key);
        let known_peer = if records {
            self.records.contains_key(peer)
        } else {
            self.providers.contains_key(peer)
        };
        let peers = self.records.len().max(self.providers.len());
        let full = (!known_peer && peers >= self.max_peers) || self.entries() >= self.max_entries;
        if full && now.saturating_sub(self.last_sweep) >= SWEEP_EVERY {
            self.sweep(now);
        }
        let entries = self.entries();
        let map = if records {
            &mut self.records
        } else {
            &mut self.providers
        };
        if !map.contains_key(peer) && map.len() >= self.max_peers {
            return Err(RecordError::Quota("too many peers tracked"));
        }
        let keys = map.entry(*peer).or_default();
        if let Some(e) = keys.get_mut(&h) {
            *e = (*e).max(expires);
            return Ok(());
        }
        if keys.len() >= cap {
            keys.retain(|_, e| *e > now);
            if keys.len() >= cap {
                return Err(RecordError::Quota(if records {
                    "records per peer"
                } else {
                    "provider keys per peer"
                }));
            }
        }
        if entries >= self.max_entries {
            return Err(RecordError::Quota("tracked entries"));
        }
        keys.insert(h, expires);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::keyword::KeyScope;
    use crate::record::tests::{NOW, credential, description, fixture, public_record};
    use crate::record::{Body, Header, ServiceBody, sign};
    use crate::service::Visibility;
    use cpns_keys::{Identity, Modes, RevocationList};
    use cpns_overlay::RecordKey;

    fn rec(key: &[u8], value: Vec<u8>) -> Record {
        Record::new(RecordKey::new(&key), value)
    }

    #[test]
    fn accepts_valid_refuses_conflict_and_stale() {
        let f = fixture();
        let v = Validator::new(Arc::new(fixture().trust), &f.config);
        let (key, bytes) = public_record(&f);
        let stored = v.put_at(rec(&key, bytes.clone()), None, NOW).unwrap();
        assert!(stored.expires.is_some());
        v.get_at(&stored, NOW).unwrap();

        // Same key, another (valid) publisher: refused while the first is alive.
        let other = Identity::from_secret_bytes([2; 32]);
        let cred = credential(&f.ca, &other, 2, Modes::ALL);
        let mut desc = description(other.peer_id(), Visibility::Public);
        desc.publisher = other.peer_id();
        let header = Header {
            key: key.clone(),
            publisher: other.peer_id(),
            version: 5,
            issued: NOW,
            expires: desc.expires,
            body: Body::Service(ServiceBody::Clear(Box::new(desc))),
        };
        let squat = sign(&other, &cred, &header).unwrap();
        assert_eq!(
            v.put_at(rec(&key, squat), Some(&stored), NOW).unwrap_err(),
            RecordError::Conflict
        );

        // Same publisher, older version: stale.
        let mut desc = description(f.node.peer_id(), Visibility::Public);
        desc.version = 0;
        let header = Header {
            key: KeyScope::Public.service(&desc.id),
            publisher: f.node.peer_id(),
            version: 0,
            issued: NOW,
            expires: desc.expires,
            body: Body::Service(ServiceBody::Clear(Box::new(desc))),
        };
        let old = sign(&f.node, &f.cred, &header).unwrap();
        assert_eq!(
            v.put_at(rec(&key, old), Some(&stored), NOW).unwrap_err(),
            RecordError::Stale
        );
        // A tombstone (newer) replaces it.
        let header = Header {
            key: key.clone(),
            publisher: f.node.peer_id(),
            version: 2,
            issued: NOW,
            expires: NOW + 10,
            body: Body::Service(ServiceBody::Withdrawn),
        };
        let tomb = sign(&f.node, &f.cred, &header).unwrap();
        v.put_at(rec(&key, tomb), Some(&stored), NOW).unwrap();
        assert!(v.count::<()>(Err(RecordError::Stale)).is_err());
        assert!(v.count(Ok(())).is_ok());
        assert_eq!(v.rejected().get("stale"), Some(&1));
        assert_eq!(v.accepted(), 1);
    }

    #[test]
    fn revocation_record_updates_trust() {
        let f = fixture();
        let ca = Identity::from_secret_bytes([9; 32]);
        let trust = Arc::new(Trust::new(ca.public(), RevocationList::empty_unsigned()));
        let v = Validator::new(trust.clone(), &f.config);
        let list = RevocationList::sign(&ca, 3, NOW, [1]).unwrap();
        let key = crate::keyword::revocations_key(&ca.public());
        let bytes = record::revocations_record(&list).unwrap();
        v.put_at(rec(&key, bytes.clone()), None, NOW).unwrap();
        assert_eq!(trust.revocations_version(), 3);
        // Refused under another key, and an older one is stale.
        assert_eq!(
            v.put_at(rec(&[1; 32], bytes.clone()), None, NOW)
                .unwrap_err(),
            RecordError::WrongKey
        );
        let older =
            record::revocations_record(&RevocationList::sign(&ca, 2, NOW, []).unwrap()).unwrap();
        let stored = rec(&key, bytes);
        assert_eq!(
            v.put_at(rec(&key, older), Some(&stored), NOW).unwrap_err(),
            RecordError::Stale
        );
        // The publisher of the fixture is serial 1: now revoked.
        let (key, svc) = public_record(&f);
        assert_eq!(
            v.put_at(rec(&key, svc), None, NOW).unwrap_err(),
            RecordError::Revoked(1)
        );
    }

    #[test]
    fn provider_quota() {
        let f = fixture();
        let config = Config {
            max_provider_keys_per_peer: 3,
            max_tracked_peers: 2,
            ..f.config.clone()
        };
        let v = Validator::new(Arc::new(f.trust), &config);
        let peer = Identity::from_secret_bytes([3; 32]).peer_id();
        let pr = |k: u8, p: PeerId| ProviderRecord::new(RecordKey::new(&[k; 32]), p, vec![]);
        let c = PeerCredential {
            serial: 7,
            expires: u64::MAX,
        };
        let cred = Some(&c);
        for k in 0..3 {
            v.provider_at(&peer, &pr(k, peer), cred, NOW).unwrap();
        }
        // Re-announcing a known key is free; a fourth key is not.
        v.provider_at(&peer, &pr(1, peer), cred, NOW).unwrap();
        assert!(matches!(
            v.provider_at(&peer, &pr(9, peer), cred, NOW),
            Err(RecordError::Quota(_))
        ));
        // After the announcements expire, room again.
        let later = NOW + config.provider_ttl.as_secs() + 1;
        v.provider_at(&peer, &pr(9, peer), cred, later).unwrap();
        // Bounded peers.
        let p2 = Identity::from_secret_bytes([4; 32]).peer_id();
        let p3 = Identity::from_secret_bytes([5; 32]).peer_id();
        v.provider_at(&p2, &pr(1, p2), cred, later).unwrap();
        assert!(v.provider_at(&p3, &pr(1, p3), cred, later).is_err());
        assert!(
            v.provider_at(
                &peer,
                &ProviderRecord::new(RecordKey::new(&[1u8; 5]), peer, vec![]),
                cred,
                later
            )
            .is_err()
        );
    }

    #[test]
    fn version_jumps_are_refused() {
        let f = fixture();
        let v = Validator::new(Arc::new(fixture().trust), &f.config);
        let mut desc = description(f.node.peer_id(), Visibility::Public);
        desc.version = u64::MAX;
        let key = KeyScope::Public.service(&desc.id);
        let header = Header {
            key: key.clone(),
            publisher: f.node.peer_id(),
            version: u64::MAX,
            issued: NOW,
            expires: desc.expires,
            body: Body::Service(ServiceBody::Clear(Box::new(desc))),
        };
        let bytes = sign(&f.node, &f.cred, &header).unwrap();
        assert!(matches!(
            v.put_at(rec(&key, bytes), None, NOW),
            Err(RecordError::Invalid(_))
        ));
    }

    fn summary(gw: &Identity, members: &[PeerId]) -> cpns_overlay::PnInventorySummary {
        cpns_overlay::PnInventorySummary {
            pn_id: "pn-0123456789abcdef".into(),
            owner: "alice".into(),
            gateway: gw.peer_id(),
            epoch: 1,
            members: members
                .iter()
                .map(|p| cpns_overlay::MemberInfo {
                    peer_id: *p,
                    user: "alice".into(),
                    device: "d".into(),
                    mode: cpns_overlay::NodeMode::Pne,
                    status: cpns_overlay::Status::Online,
                    listen_addrs: vec![],
                    serial: 1,
                    expires: NOW + 1000,
                    candidacy: None,
                })
                .collect(),
            services: vec![],
            updated: NOW,
            details: vec![],
            admins: vec![],
        }
    }

    #[test]
    fn only_the_gateway_of_record_replaces_a_pn_summary() {
        let f = fixture();
        let v = Validator::new(Arc::new(fixture().trust), &f.config);
        // Three gateway-capable devices of the same (owner) user.
        let gw = &f.node;
        let member = Identity::from_secret_bytes([4; 32]);
        let stranger = Identity::from_secret_bytes([5; 32]);
        let cred_of = |id: &Identity, serial| credential(&f.ca, id, serial, Modes::ALL);
        let put =
            |id: &Identity, cred: &EntityCredential, s, version, existing: Option<&Record>| {
                let key = crate::keyword::pn_summary_key("pn-0123456789abcdef");
                let header = Header {
                    key: key.clone(),
                    publisher: id.peer_id(),
                    version,
                    issued: NOW,
                    expires: NOW + 3600,
                    body: Body::PnSummary(Box::new(s)),
                };
                let bytes = sign(id, cred, &header).unwrap();
                v.put_at(rec(&key, bytes), existing, NOW)
            };
        let honest = put(
            gw,
            &f.cred,
            summary(gw, &[gw.peer_id(), member.peer_id()]),
            NOW * 1000,
            None,
        )
        .unwrap();
        // Another gateway of the owner user, not a member: refused.
        let sc = cred_of(&stranger, 5);
        assert_eq!(
            put(
                &stranger,
                &sc,
                summary(&stranger, &[stranger.peer_id(), gw.peer_id()]),
                NOW * 1000 + 5,
                Some(&honest),
            )
            .unwrap_err(),
            RecordError::Conflict
        );
        // A member taking over (failover) with the old gateway still listed: accepted.
        let mc = cred_of(&member, 4);
        put(
            &member,
            &mc,
            summary(&member, &[member.peer_id(), gw.peer_id()]),
            NOW * 1000 + 9,
            Some(&honest),
        )
        .unwrap();
    }

    #[test]
    fn providers_need_a_valid_credential() {
        let f = fixture();
        let v = Validator::new(Arc::new(fixture().trust), &f.config);
        let peer = f.node.peer_id();
        let pc = v.credential_at(&peer, &f.cred.to_bytes(), NOW).unwrap();
        assert_eq!(pc.serial, f.cred.serial());
        // Presented by another peer, garbage, or from another CA: refused.
        let other = Identity::from_secret_bytes([3; 32]);
        assert!(
            v.credential_at(&other.peer_id(), &f.cred.to_bytes(), NOW)
                .is_err()
        );
        assert!(v.credential_at(&peer, b"garbage", NOW).is_err());
        let rogue_ca = Identity::from_secret_bytes([8; 32]);
        let rogue = credential(&rogue_ca, &other, 5, Modes::ALL);
        assert!(
            v.credential_at(&other.peer_id(), &rogue.to_bytes(), NOW)
                .is_err()
        );
        let rec = ProviderRecord::new(RecordKey::new(&[1; 32]), peer, vec![]);
        assert_eq!(
            v.provider_at(&peer, &rec, None, NOW),
            Err(RecordError::NoCredential)
        );
        v.provider_at(&peer, &rec, Some(&pc), NOW).unwrap();
        let lapsed = PeerCredential { expires: NOW, ..pc };
        assert!(v.provider_at(&peer, &rec, Some(&lapsed), NOW).is_err());
    }

    #[test]
    fn record_quota_per_publisher() {
        let f = fixture();
        let config = Config {
            max_records_per_peer: 2,
            ..f.config.clone()
        };
        let v = Validator::new(Arc::new(fixture().trust), &config);
        for (i, ok) in [(0u8, true), (1, true), (2, false)] {
            let mut desc = description(f.node.peer_id(), Visibility::Public);
            desc.id = format!("svc-{i}");
            let key = KeyScope::Public.service(&desc.id);
            let header = Header {
                key: key.clone(),
                publisher: f.node.peer_id(),
                version: 1,
                issued: NOW,
                expires: desc.expires,
                body: Body::Service(ServiceBody::Clear(Box::new(desc))),
            };
            let bytes = sign(&f.node, &f.cred, &header).unwrap();
            assert_eq!(v.put_at(rec(&key, bytes), None, NOW).is_ok(), ok);
        }
    }
}
