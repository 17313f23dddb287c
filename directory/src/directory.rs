//! The [`Directory`] handle: publish, unpublish, republish, and the other signed records a
//! node keeps in the DHT. Discovery is in `find`, advertisements in `advertise`.

mod advertise;
mod find;
mod shared_records;
mod silent;
mod stragglers;

use std::collections::{BTreeMap, BTreeSet};
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use cpns_keys::{EntityCredential, GroupId, GroupKey, Identity, PeerId, UnixTime};
use cpns_overlay::{Client, Quorum, Record, RecordKey};
use futures::StreamExt;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::config::Config;
use crate::error::{DirectoryError, PublishError};
use crate::keyring::KeyRing;
use crate::keyword::{self, KeyScope};
use crate::record::{self, Body, Header, IndexEntry, ServiceBody};
use crate::service::{ServiceDescription, ServiceDraft, Source, Visibility};
use crate::store::{LocalService, Store};
use crate::trust::Trust;

/// How many DHT writes of one republish run at once.
const REPUBLISH_CONCURRENCY: usize = 16;

/// How often own services past their end are removed.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// First retry delay of a republish that could not reach the DHT (doubles up to the
/// republish interval).
const RETRY_FIRST: Duration = Duration::from_secs(5);

/// The Metadata Directory of one node (Appendix E): its publisher and discoverer, over the
/// overlay's DHT. Cheap to clone; every clone is the same directory.
#[derive(Clone)]
pub struct Directory {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Directory {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Directory")
            .field("peer", &self.inner.peer)
            .field("services", &self.published_len())
            .finish_non_exhaustive()
    }
}

struct Inner {
    config: Config,
    client: Client,
    identity: Identity,
    peer: PeerId,
    /// This node's credential, replaced when it is renewed.
    credential: RwLock<EntityCredential>,
    trust: Arc<Trust>,
    keys: Arc<dyn KeyRing>,
    store: Store,
    /// The signed records of our own services as last published: answers direct lookups and
    /// advertisements without signing again.
    published: RwLock<BTreeMap<String, Published>>,
    /// Serialises publish, unpublish and republish, so that index versions and the cache
    /// follow the store.
    writes: tokio::sync::Mutex<()>,
    /// Last version handed out (unix milliseconds, strictly increasing).
    last_version: AtomicU64,
    /// Scopes whose publisher index must be rewritten.
    index_pending: std::sync::Mutex<BTreeSet<ScopeId>>,
    /// Whether a task writing pending indexes is scheduled.
    index_task: std::sync::atomic::AtomicBool,
    adverts: advertise::Registry,
    local_tx: broadcast::Sender<ServiceDescription>,
    /// Woken when a publish or unpublish could not reach the DHT, so that [`Directory::run`]
    /// retries within [`RETRY_FIRST`] instead of at the next regular republish.
    retry_soon: tokio::sync::Notify,
    /// Providers that let direct lookups time out (see `silent`).
    silent: silent::Silent,
    /// The DHT servers this node stores at first, directly (a PNE's PN gateway): see
    /// [`Directory::set_home_servers`].
    home_servers: RwLock<Vec<PeerId>>,
}

/// Which key a record is published under: public, or a group at one epoch.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ScopeId {
    Public,
    Group(GroupId, u64),
}

/// One of our services, signed and ready to put.
#[derive(Clone, Debug)]
struct Published {
    description: ServiceDescription,
    scope: ScopeId,
    record_key: Vec<u8>,
    record: Vec<u8>,
    keyword_keys: Vec<Vec<u8>>,
}

/// One DHT write.
enum Write {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
        expires: UnixTime,
    },
    Provide(Vec<u8>),
    StopProviding(Vec<u8>),
}

impl Directory {
    /// Opens the directory of a node: its own services come from `db` (tree
    /// [`crate::store::SERVICES_TREE`]); nothing is put in the DHT until
    /// [`Directory::republish_all`] or [`Directory::run`].
    pub fn open(
        config: Config,
        client: Client,
        identity: Identity,
        credential: EntityCredential,
        trust: Arc<Trust>,
        keys: Arc<dyn KeyRing>,
        db: &sled::Db,
    ) -> Result<Directory, DirectoryError> {
        let store = Store::open(db)?;
        // DHT servers store our provider announcements only once they hold our credential:
        // present it before anything is announced (commands run in order).
        if let Err(e) = client.set_credential_now(Some(credential.to_bytes())) {
            tracing::warn!("credential not given to the overlay: {e}");
        }
        let (local_tx, _) = broadcast::channel(config.advertise_channel.max(1));
        let peer = identity.peer_id();
        let dir = Directory {
            inner: Arc::new(Inner {
                adverts: advertise::Registry::new(&config),
                config,
                client,
                identity,
                peer,
                credential: RwLock::new(credential),
                trust,
                keys,
                store,
                published: RwLock::new(BTreeMap::new()),
                writes: tokio::sync::Mutex::new(()),
                last_version: AtomicU64::new(0),
                index_pending: std::sync::Mutex::new(BTreeSet::new()),
                index_task: std::sync::atomic::AtomicBool::new(false),
                local_tx,
                retry_soon: tokio::sync::Notify::new(),
                silent: silent::Silent::new(),
                home_servers: RwLock::new(Vec::new()),
            }),
        };
        // Fill the cache from the store so that direct lookups are answered from the start.
        let now = crate::now();
        let mut cache = BTreeMap::new();
        for local in dir.inner.store.all() {
            if local.description.expires <= now {
                continue;
            }
            match dir.build(&local.description, now) {
                Ok(p) => {
                    cache.insert(local.description.id.clone(), p);
                }
                Err(e) => debug!(id = %local.description.id, "not published yet: {e}"),
            }
        }
        dir.set_cache(cache);
        Ok(dir)
    }

    /// This node's PeerId (the publisher of its services).
    pub fn peer_id(&self) -> PeerId {
        self.inner.peer
    }

    /// The DHT key a description is stored under: the public hash of its id, or the keyed hash
    /// under the current key of its group (`None` if that key is not held). For tools and
    /// tests that inspect DHT stores.
    pub fn service_record_key(&self, desc: &ServiceDescription) -> Option<Vec<u8>> {
        match desc.visibility.group() {
            None => Some(KeyScope::Public.service(&desc.id)),
            Some(g) => self
                .inner
                .keys
                .current(g)
                .map(|k| KeyScope::Group(&k).service(&desc.id)),
        }
    }

    /// The directory's configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The trust anchor and revocation list in use.
    pub fn trust(&self) -> &Arc<Trust> {
        &self.inner.trust
    }

    /// Publishes a service (5.6.4.2 "publish service description"): saved durably in sled
    /// first, then signed (and sealed for a PN or Service Group), stored in the DHT under its
    /// service key, this node announced as a provider of each keyword, and its publisher
    /// index updated, all at once. Returns once every DHT write is done.
    ///
    /// [`PublishError::NotReplicated`] means the service is saved and will be put again by the
    /// next republish (e.g. the node has no peers yet).
    pub async fn publish(&self, draft: ServiceDraft) -> Result<ServiceDescription, PublishError> {
        match self.publish_saved(draft).await? {
            (desc, None) => Ok(desc),
            (_, Some(e)) => Err(PublishError::NotReplicated(e)),
        }
    }

    /// [`Directory::publish`] for a caller that can use a saved but unreplicated service: once
    /// the description is durable and in this node's own record store, it is returned with the
    /// DHT write error, if any (the directory retries soon). A DHT server serves it from there.
    pub async fn publish_saved(
        &self,
        draft: ServiceDraft,
    ) -> Result<(ServiceDescription, Option<cpns_overlay::Error>), PublishError> {
        let guard = self.inner.writes.lock().await;
        let now = crate::now();
        let local = self.describe(draft, now)?;
        let published = self.build(&local.description, now)?;
        self.inner.store.put(&local).await?;
        let mut writes = record_writes(&published);
        let old = self.cache_insert(published.clone());
        if let Some(old) = &old {
            writes.extend(self.stop_unused(&old.keyword_keys));
            if old.record_key != published.record_key {
                // Visibility changed: withdraw the old record.
                writes.push(self.tombstone(old, now)?);
            }
            if old.scope != published.scope {
                self.schedule_index(old.scope.clone());
            }
        }
        self.schedule_index(published.scope.clone());
        drop(guard);
        self.notify_local(&published.description);
        match self.write_all(writes).await {
            Ok(()) => Ok((local.description, None)),
            Err(e) => {
                self.inner.retry_soon.notify_one();
                Ok((local.description, Some(e)))
            }
        }
    }

    /// Withdraws one of this node's services: removed from sled, a signed tombstone replaces
    /// its record in the DHT, the publisher index drops it, and this node stops providing the
    /// keywords no other of its services has. Direct lookups stop returning it at once.
    pub async fn unpublish(&self, id: &str) -> Result<(), PublishError> {
        let guard = self.inner.writes.lock().await;
        let now = crate::now();
        let Some(_local) = self.inner.store.get(id).map_err(PublishError::Storage)? else {
            return Err(PublishError::NotFound(id.to_owned()));
        };
        let cached = self.cache_remove(id);
        self.inner.store.remove(id).await?;
        let mut writes = Vec::new();
        if let Some(old) = &cached {
            writes.push(self.tombstone(old, now)?);
            writes.extend(self.stop_unused(&old.keyword_keys));
            self.schedule_index(old.scope.clone());
        }
        drop(guard);
        self.write_all(writes).await.map_err(|e| {
            self.inner.retry_soon.notify_one();
            PublishError::NotReplicated(e)
        })
    }

    /// This node's own services, as stored.
    pub fn local_services(&self) -> Vec<ServiceDescription> {
        self.inner
            .store
            .all()
            .into_iter()
            .map(|l| l.description)
            .collect()
    }

    /// Re-signs and re-puts every own service (pushing its expiry forward, re-sealing it under
    /// the current group key epoch), its provider records and publisher indexes; drops the
    /// services whose end has passed. Called at start, periodically by [`Directory::run`], and
    /// by the node after a group key rotation. Returns how many services were republished.
    pub async fn republish_all(&self) -> Result<usize, PublishError> {
        let guard = self.inner.writes.lock().await;
        let now = crate::now();
        let old_cache = self.cache_snapshot();
        let mut cache = BTreeMap::new();
        let mut writes = Vec::new();
        for mut local in self.inner.store.all() {
            let id = local.description.id.clone();
            if local.until.is_some_and(|u| u <= now) {
                self.inner.store.remove(&id).await?;
                continue;
            }
            local.description.expires = self.expiry(local.until, now);
            match self.build(&local.description, now) {
                Ok(p) => {
                    self.inner.store.put(&local).await?;
                    writes.extend(record_writes(&p));
                    cache.insert(id, p);
                }
                Err(e) => warn!(%id, "service not republished: {e}"),
            }
        }
        let count = cache.len();
        let old_keys: BTreeSet<Vec<u8>> = old_cache
            .values()
            .flat_map(|p| p.keyword_keys.iter().cloned())
            .collect();
        let scopes: BTreeSet<ScopeId> = old_cache
            .values()
            .chain(cache.values())
            .map(|p| p.scope.clone())
            .collect();
        self.set_cache(cache);
        let new_keys = self.provided_keys();
        for k in old_keys.difference(&new_keys) {
            writes.push(Write::StopProviding(k.clone()));
        }
        for scope in &scopes {
            writes.extend(self.index_write(scope, now)?);
        }
        drop(guard);
        self.write_all(writes)
            .await
            .map_err(PublishError::NotReplicated)?;
        Ok(count)
    }

    /// Moves every own service scoped to the PN `from` to the PN `to` (5.6.9: this node's PN
    /// was merged into another, or it was split off): each is re-sealed under `to`'s current
    /// key with a new version, its record under `from`'s key is replaced by a tombstone, the
    /// keyword keys of `from` are no longer provided and both scopes' indexes are rewritten.
    /// The same writes as a publish that changes a service's visibility; what is left
    /// unreplicated is put again by the next republish. Returns how many services moved
    /// (none when none was scoped to `from`, so calling it again does nothing).
    pub async fn rescope_pn(&self, from: &GroupId, to: &GroupId) -> Result<usize, PublishError> {
        if from == to {
            return Ok(0);
        }
        // Without `to`'s key nothing moves (the caller tries again once it holds it).
        self.scope_key(&Visibility::Pn(to.clone()))?;
        let guard = self.inner.writes.lock().await;
        let now = crate::now();
        let mut moved = Vec::new();
        for mut local in self.inner.store.all() {
            if local.description.visibility != Visibility::Pn(from.clone()) {
                continue;
            }
            local.description.visibility = Visibility::Pn(to.clone());
            local.description.version = self.next_version(now);
            local.description.expires = self.expiry(local.until, now);
            let published = self.build(&local.description, now)?;
            self.inner.store.put(&local).await?;
            let old = self.cache_insert(published.clone());
            moved.push((published, old));
        }
        let mut writes = Vec::new();
        for (published, old) in &moved {
            writes.extend(record_writes(published));
            if let Some(old) = old {
                writes.push(self.tombstone(old, now)?);
                writes.extend(self.stop_unused(&old.keyword_keys));
                self.schedule_index(old.scope.clone());
            }
            self.schedule_index(published.scope.clone());
        }
        drop(guard);
        for (published, _) in &moved {
            self.notify_local(&published.description);
        }
        if moved.is_empty() {
            return Ok(0);
        }
        self.write_all(writes).await.map_err(|e| {
            self.inner.retry_soon.notify_one();
            PublishError::NotReplicated(e)
        })?;
        Ok(moved.len())
    }

    /// Runs the directory's background work until `cancel` fires: republishes at once (then
    /// every [`Config::republish_interval`], retrying sooner while the DHT cannot be reached)
    /// and removes own services whose end has passed. Cancel-safe.
    pub async fn run(self, cancel: CancellationToken) {
        let mut next = tokio::time::Instant::now();
        let mut retry = RETRY_FIRST;
        let mut sweep = tokio::time::interval(SWEEP_INTERVAL);
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => return,
                _ = sweep.tick() => self.expire_own().await,
                _ = self.inner.retry_soon.notified() => {
                    next = next.min(tokio::time::Instant::now() + RETRY_FIRST);
                }
                _ = tokio::time::sleep_until(next) => {
                    let result = tokio::select! {
                        biased;
                        _ = cancel.cancelled() => return,
                        r = self.republish_all() => r,
                    };
                    let interval = self.inner.config.republish_interval;
                    match result {
                        Ok(n) => {
                            debug!(services = n, "republished");
                            retry = RETRY_FIRST;
                            next = tokio::time::Instant::now() + interval;
                        }
                        Err(PublishError::NotReplicated(e)) => {
                            debug!("republish incomplete ({e}); retrying in {retry:?}");
                            next = tokio::time::Instant::now() + retry;
                            retry = (retry * 2).min(interval);
                        }
                        Err(e) => {
                            warn!("republish failed: {e}");
                            next = tokio::time::Instant::now() + interval;
                        }
                    }
                }
            }
        }
    }

    /// Sets the DHT servers every record write goes to first, directly (at most
    /// [`cpns_overlay::MAX_PUT_TO`]; empty: none). A PNE is a Kademlia client whose PN gateway
    /// serves the DHT for its household: a put there needs no lookup, so it does not depend
    /// on what the routing table holds right after the PN formed (a lookup through an empty
    /// or not yet verified table failed the quorum). Its acknowledgement is the write's; the
    /// usual put through a lookup still follows, for replication at the key's closest
    /// servers, and its failure is only logged (the background republish retries it).
    ///
    /// The overlay is told too: a provider lookup then ends early only once a home server
    /// has answered ([`cpns_overlay::Client::set_home_servers`]).
    pub async fn set_home_servers(&self, mut peers: Vec<PeerId>) {
        peers.truncate(cpns_overlay::MAX_PUT_TO);
        if self.home_servers() == peers {
            return;
        }
        match self.inner.home_servers.write() {
            Ok(mut h) => *h = peers.clone(),
            Err(p) => *p.into_inner() = peers.clone(),
        }
        if let Err(e) = self.inner.client.set_home_servers(peers).await {
            debug!("the overlay did not take the home servers: {e}");
        }
    }

    fn home_servers(&self) -> Vec<PeerId> {
        match self.inner.home_servers.read() {
            Ok(h) => h.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The credential records are signed with.
    pub fn credential(&self) -> EntityCredential {
        match self.inner.credential.read() {
            Ok(c) => c.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }

    /// Replaces this node's credential (after a renewal) and re-publishes every own service
    /// with it, so that no record outlives the old credential's expiry. Returns how many
    /// services were re-published.
    pub async fn renew_credential(
        &self,
        credential: EntityCredential,
    ) -> Result<usize, PublishError> {
        let bytes = credential.to_bytes();
        match self.inner.credential.write() {
            Ok(mut c) => *c = credential,
            Err(p) => *p.into_inner() = credential,
        }
        if let Err(e) = self.inner.client.set_credential(Some(bytes)).await {
            tracing::warn!("renewed credential not given to the overlay: {e}");
        }
        self.republish_all().await
    }

    fn next_version(&self, now: UnixTime) -> u64 {
        let candidate = now.saturating_mul(1000);
        let mut last = self.inner.last_version.load(Ordering::Relaxed);
        loop {
            let v = candidate.max(last.saturating_add(1));
            match self.inner.last_version.compare_exchange(
                last,
                v,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return v,
                Err(actual) => last = actual,
            }
        }
    }

    fn expiry(&self, until: Option<UnixTime>, now: UnixTime) -> UnixTime {
        let renewed = now.saturating_add(self.inner.config.record_ttl.as_secs().max(1));
        until.map_or(renewed, |u| u.min(renewed))
    }

    /// Turns a draft into the description to store (normalised, checked, versioned).
    fn describe(&self, draft: ServiceDraft, now: UnixTime) -> Result<LocalService, PublishError> {
        let c = &self.inner.config;
        let keywords = keyword::normalise_all(&draft.keywords, c.max_keyword_len)?;
        let id = match draft.id {
            Some(id) => id,
            None => format!("svc-{}", hex::encode(rand::random::<[u8; 8]>())),
        };
        if id.is_empty() || id.len() > record::MAX_ID_LEN {
            return Err(PublishError::Invalid(format!(
                "service id must be 1 to {} bytes",
                record::MAX_ID_LEN
            )));
        }
        let previous = self.inner.store.get(&id).map_err(PublishError::Storage)?;
        if previous.is_none() && self.inner.store.len() >= c.max_local_services {
            return Err(PublishError::TooManyServices(c.max_local_services));
        }
        if let Some(g) = draft.visibility.group()
            && self.inner.keys.current(g).is_none()
        {
            return Err(PublishError::NoGroupKey(g.clone()));
        }
        let until = draft.ttl.map(|t| now.saturating_add(t.as_secs().max(1)));
        let description = ServiceDescription {
            id,
            name: draft.name,
            keywords,
            offers: draft.offers,
            source: draft.source.unwrap_or(Source::Entity(self.inner.peer)),
            publisher: self.inner.peer,
            requirements: draft.requirements,
            endpoint: draft.endpoint,
            metadata: draft.metadata,
            version: self.next_version(now),
            published: now,
            expires: self.expiry(until, now),
            visibility: draft.visibility,
        };
        record::check_description(&description, c).map_err(PublishError::Invalid)?;
        Ok(LocalService { description, until })
    }

    fn sign(&self, header: &Header) -> Result<Vec<u8>, PublishError> {
        let value = record::sign(&self.inner.identity, &self.credential(), header)
            .map_err(|e| PublishError::Codec(e.to_string()))?;
        if value.len() > self.inner.config.max_record_size {
            return Err(PublishError::Invalid(format!(
                "record of {} bytes exceeds {}",
                value.len(),
                self.inner.config.max_record_size
            )));
        }
        Ok(value)
    }

    /// The group key a visibility is sealed under, now.
    fn scope_key(&self, visibility: &Visibility) -> Result<Option<GroupKey>, PublishError> {
        match visibility.group() {
            None => Ok(None),
            Some(g) => self
                .inner
                .keys
                .current(g)
                .map(Some)
                .ok_or_else(|| PublishError::NoGroupKey(g.clone())),
        }
    }

    /// Signs (and seals) a description into the records to publish.
    fn build(&self, desc: &ServiceDescription, now: UnixTime) -> Result<Published, PublishError> {
        let key = self.scope_key(&desc.visibility)?;
        let scope = key.as_ref().map_or(KeyScope::Public, KeyScope::Group);
        let record_key = scope.service(&desc.id);
        let keyword_keys = desc.keywords.iter().map(|k| scope.keyword(k)).collect();
        let body = match &key {
            None => ServiceBody::Clear(Box::new(desc.clone())),
            Some(k) => ServiceBody::Sealed(
                record::seal(k, desc).map_err(|e| PublishError::Codec(e.to_string()))?,
            ),
        };
        let header = Header {
            key: record_key.clone(),
            publisher: self.inner.peer,
            version: desc.version,
            issued: now,
            expires: desc.expires,
            body: Body::Service(body),
        };
        Ok(Published {
            description: desc.clone(),
            scope: match &key {
                None => ScopeId::Public,
                Some(k) => ScopeId::Group(k.group().clone(), k.epoch()),
            },
            record_key,
            record: self.sign(&header)?,
            keyword_keys,
        })
    }

    /// A signed tombstone replacing a published record.
    fn tombstone(&self, old: &Published, now: UnixTime) -> Result<Write, PublishError> {
        let max = now.saturating_add(self.inner.config.max_record_ttl.as_secs());
        let expires = old.description.expires.max(now + 60).min(max);
        let header = Header {
            key: old.record_key.clone(),
            publisher: self.inner.peer,
            version: old.description.version.max(self.next_version(now)),
            issued: now,
            expires,
            body: Body::Service(ServiceBody::Withdrawn),
        };
        Ok(Write::Put {
            key: old.record_key.clone(),
            value: self.sign(&header)?,
            expires,
        })
    }

    /// The publisher index of one scope, from the cache; `None` if the scope's key is no
    /// longer the current one (its records expire on their own).
    fn index_write(&self, scope: &ScopeId, now: UnixTime) -> Result<Option<Write>, PublishError> {
        let key = match scope {
            ScopeId::Public => None,
            ScopeId::Group(g, epoch) => match self.inner.keys.current(g) {
                Some(k) if k.epoch() == *epoch => Some(k),
                _ => return Ok(None),
            },
        };
        let ks = key.as_ref().map_or(KeyScope::Public, KeyScope::Group);
        let budget = self.inner.config.max_record_size.saturating_sub(2048);
        let mut used = 0usize;
        let mut entries = Vec::new();
        self.with_cache(|cache| {
            for p in cache.values() {
                if &p.scope != scope {
                    continue;
                }
                let size = 40 + 9 * p.keyword_keys.len();
                if entries.len() >= record::MAX_INDEX_ENTRIES || used + size > budget {
                    warn!("publisher index full; further services are found by direct lookup only");
                    break;
                }
                used += size;
                entries.push(IndexEntry {
                    record: p.record_key.clone(),
                    keywords: p.keyword_keys.iter().map(|k| keyword::short(k)).collect(),
                });
            }
        });
        let index_key = ks.index(&self.inner.peer);
        let expires = now.saturating_add(self.inner.config.record_ttl.as_secs());
        let header = Header {
            key: index_key.clone(),
            publisher: self.inner.peer,
            version: self.next_version(now),
            issued: now,
            expires,
            body: Body::Index(entries),
        };
        Ok(Some(Write::Put {
            key: index_key,
            value: self.sign(&header)?,
            expires,
        }))
    }

    /// StopProviding writes for the keys in `keys` that no cached service uses any more.
    fn stop_unused(&self, keys: &[Vec<u8>]) -> Vec<Write> {
        let used = self.provided_keys();
        keys.iter()
            .filter(|k| !used.contains(*k))
            .map(|k| Write::StopProviding(k.clone()))
            .collect()
    }

    fn provided_keys(&self) -> BTreeSet<Vec<u8>> {
        self.with_cache(|cache| {
            cache
                .values()
                .flat_map(|p| p.keyword_keys.iter().cloned())
                .collect()
        })
    }

    /// Removes own services whose end has passed.
    async fn expire_own(&self) {
        let now = crate::now();
        let expired: Vec<String> = self
            .inner
            .store
            .all()
            .into_iter()
            .filter(|l| l.until.is_some_and(|u| u <= now))
            .map(|l| l.description.id)
            .collect();
        if expired.is_empty() {
            return;
        }
        let guard = self.inner.writes.lock().await;
        let mut writes = Vec::new();
        let mut scopes = BTreeSet::new();
        for id in &expired {
            if let Err(e) = self.inner.store.remove(id).await {
                warn!(%id, "cannot remove expired service: {e}");
            }
            if let Some(p) = self.cache_remove(id) {
                writes.extend(self.stop_unused(&p.keyword_keys));
                scopes.insert(p.scope);
            }
        }
        for s in &scopes {
            if let Ok(Some(w)) = self.index_write(s, now) {
                writes.push(w);
            }
        }
        drop(guard);
        if let Err(e) = self.write_all(writes).await {
            debug!("expiry writes incomplete: {e}");
        }
    }

    /// Marks a scope's publisher index for rewriting. Indexes are the DHT fallback of direct
    /// lookups, so they are written off the publish path: [`Config::index_delay`] after the
    /// first change, coalescing every change made meanwhile into one write per scope.
    fn schedule_index(&self, scope: ScopeId) {
        if let Ok(mut p) = self.inner.index_pending.lock() {
            p.insert(scope);
        }
        if self.inner.index_task.swap(true, Ordering::AcqRel) {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            self.inner.index_task.store(false, Ordering::Release);
            return;
        };
        // A weak handle: a scheduled index write must not keep a closed directory (and its
        // sled database) alive.
        let weak = Arc::downgrade(&self.inner);
        let delay = self.inner.config.index_delay;
        runtime.spawn(async move {
            tokio::time::sleep(delay).await;
            let Some(inner) = weak.upgrade() else {
                return;
            };
            let dir = Directory { inner };
            loop {
                let scopes = dir
                    .inner
                    .index_pending
                    .lock()
                    .map(|mut p| std::mem::take(&mut *p))
                    .unwrap_or_default();
                if scopes.is_empty() {
                    dir.inner.index_task.store(false, Ordering::Release);
                    // A change may have slipped in between the take and the store.
                    let more = dir.inner.index_pending.lock().is_ok_and(|p| !p.is_empty());
                    if !more || dir.inner.index_task.swap(true, Ordering::AcqRel) {
                        return;
                    }
                    continue;
                }
                let now = crate::now();
                let writes: Vec<Write> = scopes
                    .iter()
                    .filter_map(|s| match dir.index_write(s, now) {
                        Ok(w) => w,
                        Err(e) => {
                            warn!("publisher index not written: {e}");
                            None
                        }
                    })
                    .collect();
                if let Err(e) = dir.write_all(writes).await {
                    debug!("publisher index not replicated ({e}); the next republish retries");
                }
            }
        });
    }

    /// Runs DHT writes concurrently; the first error is returned after all were tried.
    async fn write_all(&self, writes: Vec<Write>) -> Result<(), cpns_overlay::Error> {
        let client = &self.inner.client;
        let quorum = match NonZeroUsize::new(self.inner.config.put_quorum) {
            Some(n) if n.get() > 1 => Quorum::N(n),
            _ => Quorum::One,
        };
        let home = self.home_servers();
        let home = &home;
        let results: Vec<Result<(), cpns_overlay::Error>> =
            futures::stream::iter(writes.into_iter().map(|w| async move {
                match w {
                    Write::Put {
                        key,
                        value,
                        expires,
                    } => {
                        let left = expires.saturating_sub(crate::now());
                        let record = Record {
                            key: RecordKey::new(&key),
                            value,
                            publisher: None,
                            expires: Some(Instant::now() + Duration::from_secs(left)),
                        };
                        if !home.is_empty() {
                            // Both at once: the home server's acknowledgement decides, the
                            // replication through a lookup costs no extra latency.
                            let (at_home, replicated) = futures::join!(
                                client.put_record_to(record.clone(), home.clone(), Quorum::One),
                                client.put_record(record, quorum)
                            );
                            return match (at_home, replicated) {
                                (Ok(_), Ok(_)) => Ok(()),
                                (Ok(_), Err(e)) => {
                                    debug!("record stored at the home server, not replicated further yet: {e}");
                                    Ok(())
                                }
                                (Err(e), Ok(_)) => {
                                    debug!("record replicated, but not stored at the home server: {e}");
                                    Ok(())
                                }
                                (Err(e), Err(_)) => Err(e),
                            };
                        }
                        match client.put_record(record, quorum).await {
                            Ok(_) => Ok(()),
                            // A DHT server that knows no other server (a household's lone
                            // gateway) holds the record itself: that is the whole DHT its
                            // PNEs can reach, and Kademlia replicates it when servers appear.
                            Err(e) if sole_server_of_its_peers(client).await => {
                                debug!("record kept on this node only: {e}");
                                Ok(())
                            }
                            Err(e) => Err(e),
                        }
                    }
                    Write::Provide(key) => client
                        .start_providing(RecordKey::new(&key))
                        .await
                        .map(|_| ()),
                    Write::StopProviding(key) => client.stop_providing(RecordKey::new(&key)).await,
                }
            }))
            .buffer_unordered(REPUBLISH_CONCURRENCY)
            .collect()
            .await;
        results.into_iter().collect()
    }

    fn cache_snapshot(&self) -> BTreeMap<String, Published> {
        self.with_cache(BTreeMap::clone)
    }

    /// Runs `f` on the cache of published records under its read lock (no copy).
    fn with_cache<T>(&self, f: impl FnOnce(&BTreeMap<String, Published>) -> T) -> T {
        match self.inner.published.read() {
            Ok(m) => f(&m),
            Err(p) => f(&p.into_inner()),
        }
    }

    fn published_len(&self) -> usize {
        self.inner.published.read().map(|m| m.len()).unwrap_or(0)
    }

    fn set_cache(&self, cache: BTreeMap<String, Published>) {
        match self.inner.published.write() {
            Ok(mut m) => *m = cache,
            Err(p) => *p.into_inner() = cache,
        }
    }

    fn cache_insert(&self, p: Published) -> Option<Published> {
        match self.inner.published.write() {
            Ok(mut m) => m.insert(p.description.id.clone(), p),
            Err(p2) => p2.into_inner().insert(p.description.id.clone(), p),
        }
    }

    fn cache_remove(&self, id: &str) -> Option<Published> {
        match self.inner.published.write() {
            Ok(mut m) => m.remove(id),
            Err(p) => p.into_inner().remove(id),
        }
    }
}

/// The writes that publish one service: its record and its keyword provider records.
fn record_writes(p: &Published) -> Vec<Write> {
    let mut w = vec![Write::Put {
        key: p.record_key.clone(),
        value: p.record.clone(),
        expires: p.description.expires,
    }];
    w.extend(p.keyword_keys.iter().cloned().map(Write::Provide));
    w
}

/// Whether this node is the only DHT server its connected peers can use: in Kademlia server
/// mode, no other server in its routing table, but connected to someone (its PNEs) who asks
/// it. A node with no connection at all has reached nobody and stays "not replicated".
async fn sole_server_of_its_peers(client: &Client) -> bool {
    matches!(client.kad_mode().await, Ok(cpns_overlay::KadMode::Server))
        && matches!(client.routing_table_size().await, Ok(0))
        && client.peers().await.is_ok_and(|p| !p.is_empty())
}
