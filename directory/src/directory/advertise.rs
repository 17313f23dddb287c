//! Advertisement (5.6.4.2 "advertise service description") and the answers to other nodes'
//! directory messages.
//!
//! The node routes; the directory does the bytes and the matching. A subscriber sends
//! [`DirectoryMessage::Subscribe`] with a keyword key (from [`Directory::subscription`]) to its
//! gateway, which keeps it in a bounded registry ([`Directory::handle`]). A publisher's node
//! sends [`Directory::advertisement`] to the gateway; the gateway checks it
//! ([`Directory::handle`] verifies it), takes [`Directory::keyword_keys`] of the description and
//! forwards the advertisement to [`Directory::subscribers`] of those keys; each subscriber's
//! directory verifies it again and, if it matches a local subscription, hands the description
//! to [`Directory::subscribe_local`] listeners. For a PN or Service Group the keyword keys are
//! keyed hashes under the group key and the record is sealed, so a gateway that is not a
//! member can route advertisements without reading them.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpns_keys::PeerId;
use cpns_overlay::{DirectoryMessage, ErrorCode, Message};
use tokio::sync::broadcast;

use super::Directory;
use crate::config::Config;
use crate::error::{FindError, PublishError};
use crate::keyword::{self, KeyScope};
use crate::service::{Scope, ServiceDescription};

/// Largest total size of records in one Lookup answer (the frame limit is 1 MiB).
const MAX_ANSWER_BYTES: usize = 512 * 1024;

/// Subscriptions: other peers' (a gateway's fan-out registry) and this node's own.
///
/// Other peers' subscriptions are leases (issue 14: they were never forgotten): a peer's
/// subscriptions expire `subscription_ttl` after its last Subscribe (any Subscribe renews all
/// of them), and when the registry is full the peer seen least recently loses its
/// subscriptions to make room, so stale subscribers can never lock new ones out.
pub(super) struct Registry {
    inner: Mutex<RegistryState>,
    max_total: usize,
    max_per_peer: usize,
    max_local: usize,
    ttl: Duration,
}

#[derive(Default)]
struct RegistryState {
    by_key: HashMap<Vec<u8>, HashSet<PeerId>>,
    by_peer: HashMap<PeerId, HashSet<Vec<u8>>>,
    /// When each subscribed peer last subscribed.
    seen: HashMap<PeerId, Instant>,
    total: usize,
    local: HashSet<Vec<u8>>,
}

impl RegistryState {
    fn drop_peer(&mut self, peer: &PeerId) {
        self.seen.remove(peer);
        if let Some(keys) = self.by_peer.remove(peer) {
            self.total = self.total.saturating_sub(keys.len());
            for key in keys {
                if let Some(peers) = self.by_key.get_mut(&key) {
                    peers.remove(peer);
                    if peers.is_empty() {
                        self.by_key.remove(&key);
                    }
                }
            }
        }
    }

    fn expire(&mut self, now: Instant, ttl: Duration) {
        let old: Vec<PeerId> = self
            .seen
            .iter()
            .filter(|(_, t)| now.saturating_duration_since(**t) >= ttl)
            .map(|(p, _)| *p)
            .collect();
        for p in old {
            self.drop_peer(&p);
        }
    }
}

impl Registry {
    pub(super) fn new(c: &Config) -> Self {
        Self {
            inner: Mutex::new(RegistryState::default()),
            max_total: c.max_subscribers,
            max_per_peer: c.max_subscriptions_per_peer,
            max_local: c.max_local_subscriptions,
            ttl: c.subscription_ttl,
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut RegistryState) -> T) -> T {
        match self.inner.lock() {
            Ok(mut g) => f(&mut g),
            Err(p) => f(&mut p.into_inner()),
        }
    }

    fn subscribe(&self, peer: PeerId, key: Vec<u8>) -> Result<(), &'static str> {
        self.subscribe_at(peer, key, Instant::now())
    }

    fn subscribe_at(&self, peer: PeerId, key: Vec<u8>, now: Instant) -> Result<(), &'static str> {
        let (max_total, max_per_peer, ttl) = (self.max_total, self.max_per_peer, self.ttl);
        self.with(|s| {
            if s.total >= max_total {
                s.expire(now, ttl);
            }
            s.seen.insert(peer, now);
            let mine = s.by_peer.get(&peer).map_or(0, HashSet::len);
            if s.by_peer.get(&peer).is_some_and(|k| k.contains(&key)) {
                return Ok(());
            }
            if mine >= max_per_peer {
                return Err("too many subscriptions from this peer");
            }
            while s.total >= max_total {
                let oldest = s
                    .seen
                    .iter()
                    .filter(|(p, _)| **p != peer)
                    .min_by_key(|(_, t)| **t)
                    .map(|(p, _)| *p);
                match oldest {
                    Some(p) => s.drop_peer(&p),
                    None => return Err("subscription registry full"),
                }
            }
            s.by_peer.entry(peer).or_default().insert(key.clone());
            s.by_key.entry(key).or_default().insert(peer);
            s.total += 1;
            Ok(())
        })
    }

    fn unsubscribe(&self, peer: &PeerId, key: &[u8]) {
        self.with(|s| {
            let removed = s.by_peer.get_mut(peer).is_some_and(|k| k.remove(key));
            if s.by_peer.get(peer).is_some_and(HashSet::is_empty) {
                s.by_peer.remove(peer);
                s.seen.remove(peer);
            }
            if removed {
                s.total = s.total.saturating_sub(1);
                if let Some(peers) = s.by_key.get_mut(key) {
                    peers.remove(peer);
                    if peers.is_empty() {
                        s.by_key.remove(key);
                    }
                }
            }
        })
    }

    fn forget(&self, peer: &PeerId) {
        self.with(|s| s.drop_peer(peer));
    }

    fn subscribers(&self, key: &[u8]) -> Vec<PeerId> {
        self.subscribers_at(key, Instant::now())
    }

    /// The live subscribers of `key` (expired leases are dropped on the way).
    fn subscribers_at(&self, key: &[u8], now: Instant) -> Vec<PeerId> {
        let ttl = self.ttl;
        self.with(|s| {
            let peers: Vec<PeerId> = s
                .by_key
                .get(key)
                .map(|p| p.iter().copied().collect())
                .unwrap_or_default();
            let (live, dead): (Vec<PeerId>, Vec<PeerId>) = peers.into_iter().partition(|p| {
                s.seen
                    .get(p)
                    .is_some_and(|t| now.saturating_duration_since(*t) < ttl)
            });
            for p in dead {
                s.drop_peer(&p);
            }
            live
        })
    }

    fn add_local(&self, keys: &[Vec<u8>]) -> bool {
        let max = self.max_local;
        self.with(|s| {
            let new = keys.iter().filter(|k| !s.local.contains(*k)).count();
            if s.local.len() + new > max {
                return false;
            }
            s.local.extend(keys.iter().cloned());
            true
        })
    }

    fn remove_local(&self, keys: &[Vec<u8>]) {
        self.with(|s| {
            for k in keys {
                s.local.remove(k);
            }
        })
    }

    fn matches_local(&self, keys: &[Vec<u8>]) -> bool {
        self.with(|s| keys.iter().any(|k| s.local.contains(k)))
    }
}

impl Directory {
    /// The advertisement of one of this node's services: its signed (and, if not public,
    /// sealed) record, as stored in the DHT.
    pub fn advertisement(
        &self,
        desc: &ServiceDescription,
    ) -> Result<DirectoryMessage, PublishError> {
        let record = self.with_cache(|cache| {
            cache
                .get(&desc.id)
                .filter(|p| p.description.publisher == desc.publisher)
                .map(|p| p.record.clone())
        });
        let record = record.ok_or_else(|| PublishError::NotFound(desc.id.clone()))?;
        Ok(DirectoryMessage::Advertise { record })
    }

    /// The Subscribe messages for a keyword in a scope (one keyword key per visibility
    /// searched), to send to the gateway. Also registers the keyword locally, so matching
    /// advertisements reach [`Directory::subscribe_local`]. Empty if the keyword is invalid,
    /// the scope's key is not held, or the local subscription limit is reached.
    pub fn subscription(&self, keyword: &str, scope: &Scope) -> Vec<DirectoryMessage> {
        let keys = self.scope_keyword_keys(keyword, scope);
        if keys.is_empty() || !self.inner.adverts.add_local(&keys) {
            return Vec::new();
        }
        keys.into_iter()
            .map(|keyword| DirectoryMessage::Subscribe { keyword })
            .collect()
    }

    /// The Unsubscribe messages matching [`Directory::subscription`]; also drops the local
    /// subscription.
    pub fn unsubscription(&self, keyword: &str, scope: &Scope) -> Vec<DirectoryMessage> {
        let keys = self.scope_keyword_keys(keyword, scope);
        self.inner.adverts.remove_local(&keys);
        keys.into_iter()
            .map(|keyword| DirectoryMessage::Unsubscribe { keyword })
            .collect()
    }

    fn scope_keyword_keys(&self, keyword: &str, scope: &Scope) -> Vec<Vec<u8>> {
        let Ok(k) = keyword::normalise_keyword(keyword, self.inner.config.max_keyword_len) else {
            return Vec::new();
        };
        let ring = &self.inner.keys;
        match scope {
            Scope::Public => vec![KeyScope::Public.keyword(&k)],
            Scope::Group(g) => ring
                .current(g)
                .map(|gk| vec![KeyScope::Group(&gk).keyword(&k)])
                .unwrap_or_default(),
            Scope::All => {
                let mut v = vec![KeyScope::Public.keyword(&k)];
                for g in ring.groups() {
                    if let Some(gk) = ring.current(&g) {
                        v.push(KeyScope::Group(&gk).keyword(&k));
                    }
                }
                v
            }
        }
    }

    /// Verifies (and, with the key, unseals) an inbound advertisement.
    pub fn open_advertisement(&self, record: &[u8]) -> Result<ServiceDescription, FindError> {
        self.open_record(record, None)
    }

    /// The keyword keys of a description in its visibility (current key epoch): the keys a
    /// subscriber would have subscribed with. Empty for a group whose key is not held.
    pub fn keyword_keys(&self, desc: &ServiceDescription) -> Vec<Vec<u8>> {
        match desc.visibility.group() {
            None => desc
                .keywords
                .iter()
                .map(|k| KeyScope::Public.keyword(k))
                .collect(),
            Some(g) => match self.inner.keys.current(g) {
                Some(gk) => desc
                    .keywords
                    .iter()
                    .map(|k| KeyScope::Group(&gk).keyword(k))
                    .collect(),
                None => Vec::new(),
            },
        }
    }

    /// A receiver of the descriptions advertised to this node (or published by it) that match
    /// one of its subscriptions. Slow receivers miss the oldest ones (broadcast semantics).
    pub fn subscribe_local(&self) -> broadcast::Receiver<ServiceDescription> {
        self.inner.local_tx.subscribe()
    }

    /// The peers subscribed here to a keyword key (a gateway fans advertisements out to them).
    pub fn subscribers(&self, keyword_key: &[u8]) -> Vec<PeerId> {
        self.inner.adverts.subscribers(keyword_key)
    }

    /// Drops every subscription of a peer (it left the PN or disconnected for good).
    pub fn forget_subscriber(&self, peer: &PeerId) {
        self.inner.adverts.forget(peer);
    }

    /// Answers a directory message from `peer`: a Lookup with this node's own records under
    /// the keyword key; an Advertise is verified and, if it matches a local subscription,
    /// passed to local listeners; Subscribe/Unsubscribe update the bounded registry. Never
    /// panics; bad input gets an error reply.
    pub fn handle(&self, peer: PeerId, msg: DirectoryMessage) -> Message {
        match msg {
            DirectoryMessage::Lookup { keyword } => {
                let mut size = 0usize;
                let records = self.with_cache(|cache| {
                    cache
                        .values()
                        .filter(|p| p.keyword_keys.contains(&keyword))
                        .take(self.inner.config.max_results)
                        .take_while(|p| {
                            size += p.record.len();
                            size <= MAX_ANSWER_BYTES
                        })
                        .map(|p| p.record.clone())
                        .collect()
                });
                Message::Directory(DirectoryMessage::Records { records })
            }
            DirectoryMessage::Advertise { record } => match self.open_advertisement(&record) {
                Ok(desc) => {
                    self.notify_local(&desc);
                    Message::Ack
                }
                Err(e) => Message::error(ErrorCode::BadRequest, e.to_string()),
            },
            DirectoryMessage::Subscribe { keyword } => {
                if keyword.len() != 32 {
                    return Message::error(ErrorCode::BadRequest, "a keyword key is 32 bytes");
                }
                match self.inner.adverts.subscribe(peer, keyword) {
                    Ok(()) => Message::Ack,
                    Err(why) => Message::error(ErrorCode::RateLimited, why),
                }
            }
            DirectoryMessage::Unsubscribe { keyword } => {
                self.inner.adverts.unsubscribe(&peer, &keyword);
                Message::Ack
            }
            DirectoryMessage::Records { .. } => {
                Message::error(ErrorCode::BadRequest, "Records is an answer, not a request")
            }
        }
    }

    /// Hands a description to local listeners if it matches a local subscription.
    pub(super) fn notify_local(&self, desc: &ServiceDescription) {
        if self.inner.adverts.matches_local(&self.keyword_keys(desc)) {
            // No receiver is not an error: nobody is watching right now.
            let _ = self.inner.local_tx.send(desc.clone());
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn subscriptions_expire_and_stale_ones_make_room() {
        let c = Config {
            max_subscribers: 4,
            max_subscriptions_per_peer: 2,
            subscription_ttl: Duration::from_secs(60),
            ..Config::default()
        };
        let r = Registry::new(&c);
        let t0 = Instant::now();
        let key = |i: u8| vec![i; 32];
        let (a, b, fresh) = (PeerId::random(), PeerId::random(), PeerId::random());
        r.subscribe_at(a, key(1), t0).unwrap();
        r.subscribe_at(a, key(2), t0).unwrap();
        assert!(r.subscribe_at(a, key(3), t0).is_err(), "per peer");
        r.subscribe_at(b, key(1), t0 + Duration::from_secs(10))
            .unwrap();
        r.subscribe_at(b, key(2), t0 + Duration::from_secs(10))
            .unwrap();
        // Full: a newcomer takes the place of the peer seen least recently (a).
        r.subscribe_at(fresh, key(1), t0 + Duration::from_secs(20))
            .unwrap();
        let subs = r.subscribers_at(&key(1), t0 + Duration::from_secs(20));
        assert!(subs.contains(&fresh) && subs.contains(&b) && !subs.contains(&a));
        // Leases run out without a renewal.
        let later = t0 + Duration::from_secs(75);
        assert_eq!(r.subscribers_at(&key(1), later), vec![fresh]);
        assert!(r.subscribers_at(&key(2), later).is_empty());
        assert_eq!(r.with(|s| s.total), 1);
    }
}
