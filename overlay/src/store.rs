//! The node's Kademlia record store: this node's own records and provider records, counted
//! apart from what it keeps for other peers, and everything kept for others bounded.
//!
//! kad's `MemoryStore` counts every provider key against one limit and refuses new keys once
//! it is full, the node's own `start_providing` included; expired records of others are only
//! dropped when someone looks their key up. So a few peers announcing random keys filled a
//! gateway, and then its own services could no longer be found by keyword. Here:
//!
//! - **Own** records and provider records (those kad stores through `put` and
//!   `start_providing`) have their own bounds ([`StoreLimits::max_records`],
//!   [`StoreLimits::max_provided_keys`]); nothing a remote peer sends displaces or refuses them.
//! - **Remote** records (validated puts, [`Store::put_remote`]) are bounded in number and in
//!   bytes; a remote put never replaces this node's own record under the same key.
//! - **Remote provider records** ([`Store::add_remote_provider`]) are bounded per key, per
//!   provider and in total. Per key, the providers already stored keep their slots until they
//!   expire or leave (a crowd arriving later cannot push an honest provider out; refreshing an
//!   announcement keeps its slot). In total, *fair share*: when the store is full, a provider
//!   holding fewer records than the largest holder takes the newest record of that holder's
//!   place, so a few heavy announcers can never lock out a light honest one.
//! - [`Store::purge_expired`] drops expired remote records and provider records; the event
//!   loop runs it periodically, so keys that are never looked up again (group keyword keys of
//!   past epochs) do not fill the store.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, hash_map};
use std::iter;
use std::time::Instant;

use libp2p::PeerId;
use libp2p::kad::store::{Error, RecordStore, Result};
use libp2p::kad::{ProviderRecord, Record, RecordKey};

/// The bounds of a [`Store`] (from [`crate::Config`]).
#[derive(Clone, Debug)]
pub struct StoreLimits {
    /// Most records kept for others, and, counted apart, most own records.
    pub max_records: usize,
    /// Largest record value (bytes, exclusive, as kad's `MemoryStore`).
    pub max_value_bytes: usize,
    /// Most bytes (keys and values) of records kept for others.
    pub max_remote_bytes: usize,
    /// Most keys this node provides itself.
    pub max_provided_keys: usize,
    /// Most remote providers kept per key.
    pub max_providers_per_key: usize,
    /// Most remote provider records in total.
    pub max_provider_records: usize,
    /// Most provider records kept for one remote provider.
    pub max_provider_records_per_peer: usize,
}

/// Why a remote provider record was not stored (a stable metrics label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProviderRefusal {
    /// The key already has its full number of providers.
    KeyFull,
    /// This provider already has its full number of records here.
    PeerQuota,
    /// The store is full and this provider holds at least its fair share.
    StoreFull,
}

impl ProviderRefusal {
    /// The metrics label.
    pub fn reason(self) -> &'static str {
        match self {
            ProviderRefusal::KeyFull => "providers_per_key",
            ProviderRefusal::PeerQuota => "providers_per_peer",
            ProviderRefusal::StoreFull => "provider_store_full",
        }
    }
}

/// A record as the store holds it (opaque outside this module).
pub struct Stored {
    record: Record,
    own: bool,
}

fn record_bytes(r: &Record) -> usize {
    r.key.as_ref().len() + r.value.len()
}

struct Remote {
    record: ProviderRecord,
    /// Insertion order: the age of the announcement (a refresh keeps it).
    seq: u64,
}

/// See the module docs.
pub struct Store {
    local: PeerId,
    limits: StoreLimits,
    records: HashMap<RecordKey, Stored>,
    own_records: usize,
    remote_records: usize,
    remote_bytes: usize,
    /// This node's own provider records.
    provided: HashMap<RecordKey, ProviderRecord>,
    /// Remote provider records by key.
    providers: HashMap<RecordKey, Vec<Remote>>,
    /// Each remote provider's records, oldest first (`seq` to key).
    by_peer: HashMap<PeerId, BTreeMap<u64, RecordKey>>,
    /// `(records held, provider)`, to find the largest holder.
    holders: BTreeSet<(usize, PeerId)>,
    remote_providers: usize,
    next_seq: u64,
}

impl Store {
    /// An empty store for the node `local`.
    pub fn new(local: PeerId, limits: StoreLimits) -> Self {
        Self {
            local,
            limits,
            records: HashMap::new(),
            own_records: 0,
            remote_records: 0,
            remote_bytes: 0,
            provided: HashMap::new(),
            providers: HashMap::new(),
            by_peer: HashMap::new(),
            holders: BTreeSet::new(),
            remote_providers: 0,
            next_seq: 0,
        }
    }

    /// Figures for metrics and tests.
    pub fn usage(&self) -> StoreUsage {
        StoreUsage {
            own_records: self.own_records,
            remote_records: self.remote_records,
            remote_record_bytes: self.remote_bytes,
            own_provider_keys: self.provided.len(),
            remote_provider_records: self.remote_providers,
            remote_providers: self.by_peer.len(),
        }
    }

    fn unaccount(&mut self, s: &Stored) {
        if s.own {
            self.own_records -= 1;
        } else {
            self.remote_records -= 1;
            self.remote_bytes -= record_bytes(&s.record);
        }
    }

    /// Stores a record another peer put here (already validated). A record of this node's
    /// own under the same key stays; the remote one is dropped silently.
    pub fn put_remote(&mut self, r: Record) -> Result<()> {
        if r.value.len() >= self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge);
        }
        let (is_new, old) = match self.records.get(&r.key) {
            Some(s) if s.own => return Ok(()),
            Some(s) => (false, record_bytes(&s.record)),
            None => {
                if self.remote_records >= self.limits.max_records {
                    return Err(Error::MaxRecords);
                }
                (true, 0)
            }
        };
        let bytes = self.remote_bytes - old + record_bytes(&r);
        if bytes > self.limits.max_remote_bytes {
            return Err(Error::MaxRecords);
        }
        if is_new {
            self.remote_records += 1;
        }
        self.remote_bytes = bytes;
        self.records.insert(
            r.key.clone(),
            Stored {
                record: r,
                own: false,
            },
        );
        Ok(())
    }

    /// Stores (or refreshes) a remote provider record (already validated), as the module docs
    /// describe.
    pub fn add_remote_provider(
        &mut self,
        record: ProviderRecord,
    ) -> std::result::Result<(), ProviderRefusal> {
        let peer = record.provider;
        if let Some(list) = self.providers.get_mut(&record.key)
            && let Some(p) = list.iter_mut().find(|p| p.record.provider == peer)
        {
            p.record = record;
            return Ok(());
        }
        let key_len = self.providers.get(&record.key).map_or(0, Vec::len);
        if key_len >= self.limits.max_providers_per_key {
            return Err(ProviderRefusal::KeyFull);
        }
        let held = self.by_peer.get(&peer).map_or(0, BTreeMap::len);
        if held >= self.limits.max_provider_records_per_peer {
            return Err(ProviderRefusal::PeerQuota);
        }
        if self.remote_providers >= self.limits.max_provider_records {
            let largest = self.holders.last().copied();
            match largest {
                Some((count, victim)) if count > held + 1 && victim != peer => {
                    self.evict_newest(victim);
                }
                _ => return Err(ProviderRefusal::StoreFull),
            }
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        self.set_held(peer, held, held + 1);
        self.by_peer
            .entry(peer)
            .or_default()
            .insert(seq, record.key.clone());
        self.providers
            .entry(record.key.clone())
            .or_default()
            .push(Remote { record, seq });
        self.remote_providers += 1;
        Ok(())
    }

    fn set_held(&mut self, peer: PeerId, old: usize, new: usize) {
        if old > 0 {
            self.holders.remove(&(old, peer));
        }
        if new > 0 {
            self.holders.insert((new, peer));
        }
    }

    fn evict_newest(&mut self, victim: PeerId) {
        let newest = self
            .by_peer
            .get(&victim)
            .and_then(|m| m.last_key_value())
            .map(|(_, k)| k.clone());
        if let Some(key) = newest {
            self.remove_remote_provider(&key, &victim);
        }
    }

    fn remove_remote_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        let hash_map::Entry::Occupied(mut e) = self.providers.entry(key.clone()) else {
            return;
        };
        let Some(i) = e.get().iter().position(|p| &p.record.provider == provider) else {
            return;
        };
        let removed = e.get_mut().swap_remove(i);
        if e.get().is_empty() {
            e.remove();
        }
        self.remote_providers -= 1;
        let held = match self.by_peer.get_mut(provider) {
            Some(m) => {
                m.remove(&removed.seq);
                m.len()
            }
            None => 0,
        };
        if held == 0 {
            self.by_peer.remove(provider);
        }
        self.set_held(*provider, held + 1, held);
    }

    /// Drops every expired remote record and remote provider record; returns how many.
    pub fn purge_expired(&mut self, now: Instant) -> usize {
        let expired_records: Vec<RecordKey> = self
            .records
            .iter()
            .filter(|(_, s)| !s.own && s.record.is_expired(now))
            .map(|(k, _)| k.clone())
            .collect();
        let expired_providers: Vec<(RecordKey, PeerId)> = self
            .providers
            .iter()
            .flat_map(|(k, list)| {
                list.iter()
                    .filter(|p| p.record.is_expired(now))
                    .map(move |p| (k.clone(), p.record.provider))
            })
            .collect();
        let n = expired_records.len() + expired_providers.len();
        for k in expired_records {
            self.remove(&k);
        }
        for (k, p) in expired_providers {
            self.remove_remote_provider(&k, &p);
        }
        n
    }
}

/// What a [`Store`] holds (for metrics and tests).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StoreUsage {
    /// This node's own records.
    pub own_records: usize,
    /// Records kept for others.
    pub remote_records: usize,
    /// Their bytes (keys and values).
    pub remote_record_bytes: usize,
    /// Keys this node provides.
    pub own_provider_keys: usize,
    /// Provider records kept for others.
    pub remote_provider_records: usize,
    /// Distinct remote providers among them.
    pub remote_providers: usize,
}

type RecordsIter<'a> =
    iter::Map<hash_map::Values<'a, RecordKey, Stored>, fn(&'a Stored) -> Cow<'a, Record>>;
type ProvidedIter<'a> = iter::Map<
    hash_map::Values<'a, RecordKey, ProviderRecord>,
    fn(&'a ProviderRecord) -> Cow<'a, ProviderRecord>,
>;

impl RecordStore for Store {
    type RecordsIter<'a> = RecordsIter<'a>;
    type ProvidedIter<'a> = ProvidedIter<'a>;

    fn get(&self, k: &RecordKey) -> Option<Cow<'_, Record>> {
        self.records.get(k).map(|s| Cow::Borrowed(&s.record))
    }

    /// kad calls this for the node's own puts only (inbound puts are filtered and stored
    /// with [`Store::put_remote`]).
    fn put(&mut self, r: Record) -> Result<()> {
        if r.value.len() >= self.limits.max_value_bytes {
            return Err(Error::ValueTooLarge);
        }
        match self.records.get(&r.key) {
            Some(s) if s.own => {}
            _ if self.own_records >= self.limits.max_records => return Err(Error::MaxRecords),
            _ => {}
        }
        let new = Stored {
            record: r,
            own: true,
        };
        if let Some(old) = self.records.insert(new.record.key.clone(), new) {
            self.unaccount(&old);
        }
        self.own_records += 1;
        Ok(())
    }

    fn remove(&mut self, k: &RecordKey) {
        if let Some(old) = self.records.remove(k) {
            self.unaccount(&old);
        }
    }

    fn records(&self) -> Self::RecordsIter<'_> {
        self.records.values().map(|s| Cow::Borrowed(&s.record))
    }

    /// The node's own provider records (kad's `start_providing`) go to their own table;
    /// anyone else's are stored as [`Store::add_remote_provider`] does.
    fn add_provider(&mut self, record: ProviderRecord) -> Result<()> {
        if record.provider != self.local {
            return self
                .add_remote_provider(record)
                .map_err(|_| Error::MaxProvidedKeys);
        }
        if !self.provided.contains_key(&record.key)
            && self.provided.len() >= self.limits.max_provided_keys
        {
            return Err(Error::MaxProvidedKeys);
        }
        self.provided.insert(record.key.clone(), record);
        Ok(())
    }

    fn providers(&self, key: &RecordKey) -> Vec<ProviderRecord> {
        let own = self.provided.get(key).cloned();
        let remote = self
            .providers
            .get(key)
            .into_iter()
            .flatten()
            .map(|p| p.record.clone());
        own.into_iter().chain(remote).collect()
    }

    fn provided(&self) -> Self::ProvidedIter<'_> {
        self.provided.values().map(Cow::Borrowed)
    }

    fn remove_provider(&mut self, key: &RecordKey, provider: &PeerId) {
        if *provider == self.local {
            self.provided.remove(key);
        } else {
            self.remove_remote_provider(key, provider);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn limits() -> StoreLimits {
        StoreLimits {
            max_records: 4,
            max_value_bytes: 100,
            max_remote_bytes: 200,
            max_provided_keys: 3,
            max_providers_per_key: 3,
            max_provider_records: 10,
            max_provider_records_per_peer: 6,
        }
    }

    fn key(i: u32) -> RecordKey {
        RecordKey::new(&i.to_be_bytes())
    }

    fn pr(k: u32, p: PeerId) -> ProviderRecord {
        ProviderRecord::new(key(k), p, vec![])
    }

    #[test]
    fn own_provider_records_are_counted_apart_and_never_displaced() {
        let me = PeerId::random();
        let mut s = Store::new(me, limits());
        // Others fill every remote bound.
        for i in 0..100 {
            let _ = s.add_provider(pr(i, PeerId::random()));
        }
        assert_eq!(s.usage().remote_provider_records, 10);
        // Our own still go in, up to our own bound, and are listed first.
        for i in 0..3 {
            s.add_provider(pr(i, me)).unwrap();
        }
        assert!(s.add_provider(pr(50, me)).is_err(), "own bound");
        assert_eq!(s.providers(&key(0))[0].provider, me);
        assert_eq!(s.provided().count(), 3);
        // A remote record under our key does not touch ours.
        s.remove_provider(&key(0), &PeerId::random());
        assert_eq!(s.provided().count(), 3);
    }

    #[test]
    fn a_crowd_cannot_push_an_earlier_provider_out_of_a_key() {
        let mut s = Store::new(PeerId::random(), limits());
        let honest = PeerId::random();
        s.add_remote_provider(pr(7, honest)).unwrap();
        for _ in 0..20 {
            let _ = s.add_remote_provider(pr(7, PeerId::random()));
        }
        let held = s.providers(&key(7));
        assert_eq!(held.len(), 3);
        assert!(held.iter().any(|p| p.provider == honest));
        // A refresh keeps the slot.
        s.add_remote_provider(pr(7, honest)).unwrap();
        assert_eq!(
            s.add_remote_provider(pr(7, PeerId::random())),
            Err(ProviderRefusal::KeyFull)
        );
    }

    #[test]
    fn fair_share_when_full_and_per_peer_quota() {
        let mut s = Store::new(PeerId::random(), limits());
        let heavy = PeerId::random();
        for i in 0..6 {
            s.add_remote_provider(pr(i, heavy)).unwrap();
        }
        assert_eq!(
            s.add_remote_provider(pr(99, heavy)),
            Err(ProviderRefusal::PeerQuota)
        );
        let other = PeerId::random();
        for i in 100..104 {
            s.add_remote_provider(pr(i, other)).unwrap();
        }
        assert_eq!(s.usage().remote_provider_records, 10);
        // Full: a light provider takes the heavy one's newest place.
        let light = PeerId::random();
        s.add_remote_provider(pr(200, light)).unwrap();
        assert_eq!(s.usage().remote_provider_records, 10);
        assert!(s.providers(&key(5)).is_empty(), "heavy's newest evicted");
        assert!(!s.providers(&key(0)).is_empty(), "heavy's oldest kept");
        // Once shares are even, the store refuses instead of churning.
        let mut refused = false;
        for i in 300..320 {
            if s.add_remote_provider(pr(i, light)) == Err(ProviderRefusal::StoreFull) {
                refused = true;
                break;
            }
        }
        assert!(refused);
        let counts: Vec<usize> = s.holders.iter().map(|(c, _)| *c).collect();
        assert!(counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1);
    }

    #[test]
    fn expired_records_are_purged_without_a_lookup() {
        let mut s = Store::new(PeerId::random(), limits());
        let now = Instant::now();
        for i in 0..10 {
            let mut r = pr(i, PeerId::random());
            r.expires = Some(now + Duration::from_secs(if i < 8 { 1 } else { 100 }));
            s.add_remote_provider(r).unwrap();
        }
        let mut rec = Record::new(key(1), vec![1; 10]);
        rec.expires = Some(now + Duration::from_secs(1));
        s.put_remote(rec).unwrap();
        assert_eq!(s.purge_expired(now + Duration::from_secs(2)), 9);
        let u = s.usage();
        assert_eq!((u.remote_provider_records, u.remote_records), (2, 0));
        assert_eq!(u.remote_providers, 2);
        assert_eq!(s.holders.len(), 2);
    }

    #[test]
    fn remote_records_are_bounded_in_bytes_and_never_replace_own() {
        let me = PeerId::random();
        let mut s = Store::new(me, limits());
        s.put(Record::new(key(0), vec![0; 50])).unwrap();
        s.put_remote(Record::new(key(0), vec![9; 10])).unwrap();
        assert_eq!(s.get(&key(0)).unwrap().value, vec![0; 50]);
        s.put_remote(Record::new(key(1), vec![1; 90])).unwrap();
        s.put_remote(Record::new(key(2), vec![1; 90])).unwrap();
        assert!(
            s.put_remote(Record::new(key(3), vec![1; 90])).is_err(),
            "bytes"
        );
        // Replacing a remote record with a smaller one fits.
        s.put_remote(Record::new(key(2), vec![1; 10])).unwrap();
        s.put_remote(Record::new(key(3), vec![1; 60])).unwrap();
        assert!(
            s.put_remote(Record::new(key(9), vec![1; 100])).is_err(),
            "too large"
        );
        // Our own put still goes in with the remote bytes full.
        s.put(Record::new(key(4), vec![4; 90])).unwrap();
        s.remove(&key(1));
        let u = s.usage();
        assert_eq!((u.own_records, u.remote_records), (2, 2));
        assert_eq!(u.remote_record_bytes, 4 + 10 + 4 + 60);
    }
}
