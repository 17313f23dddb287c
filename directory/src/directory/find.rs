//! Discovery (5.6.4.2 "discover and retrieve service description").
//!
//! By keyword: for each scope searched (public, and each group whose key is held), the
//! providers of every keyword key are looked up at once; a service having all the keywords is
//! published by a peer providing all of them, so only the intersection is asked. Each of those
//! publishers is asked directly for its records under the first keyword key
//! ([`DirectoryMessage::Lookup`]): the provider lookup has already dialled it, so that is one
//! round trip. If it cannot be asked (gone, refusing, too slow), its publisher index is read
//! from the DHT instead and the matching service records fetched from there. Every record is
//! verified (signature, credential, revocation, expiry) and unsealed here, whoever sent it.
//!
//! By id: the service key of every scope is looked up at once; the first valid record wins.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;
use std::time::Instant;

use cpns_keys::{GroupKey, PeerId};
use cpns_overlay::Capabilities;
use cpns_overlay::{DirectoryMessage, Message, PeerVerdict, Protocol, ProvidersQuery, RecordKey};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc;
use tracing::debug;

use super::stragglers::Stragglers;
use super::{Directory, ScopeId};
use crate::error::FindError;
use crate::keyword::{self, KeyScope};
use crate::record::{self, Body, Checked, OpenError, ServiceBody};
use crate::service::{Discovery, Figures, Found, Query, Scope, ServiceDescription};

/// Largest Records answer taken from one provider.
const MAX_RECORDS_PER_ANSWER: usize = 256;
/// Longest wait for the credential verdicts of the providers a lookup named (they follow the
/// lookup's own dials by one round trip).
const VERDICT_WAIT: std::time::Duration = std::time::Duration::from_millis(500);

/// Where one discovery's services go as they are verified ([`Directory::find_each`]).
struct Sink<'a> {
    each: Option<mpsc::Sender<Found>>,
    capabilities: Option<&'a Capabilities>,
    /// The version last sent of each (publisher, id): a service goes out again only newer.
    sent: Mutex<HashMap<(PeerId, String), u64>>,
}

impl Sink<'_> {
    /// Whether the query's capabilities (if any) meet the service's requirements.
    fn wanted(&self, item: &Found) -> bool {
        self.capabilities
            .is_none_or(|caps| item.description.requirements.check(caps).is_ok())
    }

    /// Sends `item` on if it is wanted and newer than what was sent of it. A receiver that is
    /// gone stops nothing (the discovery's own result still has every service); a slow one
    /// holds back only the provider whose services wait for it.
    async fn send(&self, item: &Found) {
        let Some(tx) = &self.each else { return };
        if !self.wanted(item) {
            return;
        }
        let d = &item.description;
        let newer = {
            let mut sent = self.sent.lock().unwrap_or_else(|p| p.into_inner());
            let slot = (d.publisher, d.id.clone());
            let newer = sent.get(&slot).is_none_or(|v| *v < d.version);
            if newer {
                sent.insert(slot, d.version);
            }
            newer
        };
        if newer {
            let _ = tx.send(item.clone()).await;
        }
    }
}

impl Directory {
    /// Finds services having every keyword of `query`, in its scope, optionally only those
    /// whose requirements the given capabilities meet. Returns the newest version of each
    /// service and the discovery's figures. Cancel-safe (dropping it abandons the lookups).
    pub async fn find(&self, query: &Query) -> Result<Discovery, FindError> {
        self.find_each(query, None).await
    }

    /// [`Self::find`], also sending each matching service to `each` the moment it is verified,
    /// so that a caller looking for one service has it as soon as its provider answered, however
    /// long the slowest provider of the same keywords (another household's, perhaps hostile)
    /// takes; OpenDHT's `get` hands values to a callback the same way. A service is sent again
    /// only as a newer version (of the same publisher and id). Dropping the receiver does not
    /// end the discovery; dropping this future does.
    pub async fn find_each(
        &self,
        query: &Query,
        each: Option<mpsc::Sender<Found>>,
    ) -> Result<Discovery, FindError> {
        let start = Instant::now();
        let c = &self.inner.config;
        if query.keywords.is_empty() {
            return Err(FindError::NoKeywords);
        }
        let keywords = keyword::normalise_all(&query.keywords, c.max_keyword_len)?;
        if keywords.len() > c.max_keywords {
            return Err(FindError::TooManyKeywords(keywords.len()));
        }
        let scopes = self.search_scopes(&query.scope)?;
        let sink = Sink {
            each,
            capabilities: query.capabilities.as_ref(),
            sent: Mutex::new(HashMap::new()),
        };
        let results = futures::future::join_all(
            scopes
                .iter()
                .map(|epochs| self.find_in_scope(epochs, &keywords, &sink)),
        )
        .await;
        let mut figures = Figures::default();
        // A service is its publisher's: keyed by (publisher, id), so that another publisher
        // using the same id (with any version) shows up beside it and never replaces it.
        let mut best: BTreeMap<(PeerId, String), Found> = BTreeMap::new();
        for (found, f) in results {
            figures.requests += f.requests;
            figures.peers_contacted += f.peers_contacted;
            figures.lookups += f.lookups;
            for item in found {
                if !sink.wanted(&item) {
                    continue;
                }
                let slot = (item.description.publisher, item.description.id.clone());
                let keep = best
                    .get(&slot)
                    .is_none_or(|b| b.description.version < item.description.version);
                if keep {
                    best.insert(slot, item);
                }
            }
        }
        let mut services: Vec<Found> = best.into_values().collect();
        services.truncate(c.max_results);
        figures.duration_us = start.elapsed().as_micros() as u64;
        Ok(Discovery { services, figures })
    }

    /// Fetches a service by id, in any visibility whose key this node holds (own services
    /// come from the local store). `None` if it is not found or was withdrawn.
    pub async fn get(&self, id: &str) -> Result<Option<Found>, FindError> {
        let own = self.with_cache(|cache| cache.get(id).map(|p| p.description.clone()));
        if let Some(description) = own {
            return Ok(Some(Found {
                description,
                from_peer: None,
            }));
        }
        let mut keys: Vec<Option<GroupKey>> = vec![None];
        for g in self.inner.keys.groups() {
            if let Some(k) = self.inner.keys.current(&g) {
                if let Some(prev) = k
                    .epoch()
                    .checked_sub(1)
                    .and_then(|e| self.inner.keys.by_epoch(&g, e))
                {
                    keys.push(Some(prev));
                }
                keys.push(Some(k));
            }
        }
        let mut lookups: FuturesUnordered<_> = keys
            .iter()
            .map(|k| {
                let key = k
                    .as_ref()
                    .map_or(KeyScope::Public, KeyScope::Group)
                    .service(id);
                let client = self.inner.client.clone();
                async move { client.get_record(RecordKey::new(&key), true).await }
            })
            .collect();
        let mut error = None;
        while let Some(result) = lookups.next().await {
            match result {
                Ok(out) => {
                    for r in out.records {
                        match self.open_record(&r.record.value, None) {
                            Ok(desc) if desc.id == id => {
                                return Ok(Some(Found {
                                    description: desc,
                                    from_peer: r.peer,
                                }));
                            }
                            Ok(_) => {}
                            Err(e) => debug!(%id, "record not taken: {e}"),
                        }
                    }
                }
                Err(cpns_overlay::Error::NotFound) => {}
                Err(e) => error = Some(e),
            }
        }
        match error {
            Some(e) if keys.len() == 1 => Err(FindError::Overlay(e)),
            _ => Ok(None),
        }
    }

    /// The scopes a query searches, each as the keys to try in order (current epoch, then the
    /// previous one for groups).
    fn search_scopes(&self, scope: &Scope) -> Result<Vec<Vec<Option<GroupKey>>>, FindError> {
        let keys = &self.inner.keys;
        let group = |g: &cpns_keys::GroupId| -> Option<Vec<Option<GroupKey>>> {
            let cur = keys.current(g)?;
            let mut v = vec![Some(cur.clone())];
            if let Some(prev) = cur.epoch().checked_sub(1).and_then(|e| keys.by_epoch(g, e)) {
                v.push(Some(prev));
            }
            Some(v)
        };
        Ok(match scope {
            Scope::Public => vec![vec![None]],
            Scope::Group(g) => vec![group(g).ok_or_else(|| FindError::NoGroupKey(g.clone()))?],
            Scope::All => {
                let mut v = vec![vec![None]];
                v.extend(keys.groups().iter().filter_map(group));
                v
            }
        })
    }

    /// Searches one scope: the current key first, the previous epoch's only if the current
    /// one found nothing (records not yet republished after a rotation).
    async fn find_in_scope(
        &self,
        epochs: &[Option<GroupKey>],
        keywords: &[String],
        sink: &Sink<'_>,
    ) -> (Vec<Found>, Figures) {
        let mut figures = Figures::default();
        for key in epochs {
            let (found, f) = self.find_with(key.as_ref(), keywords, sink).await;
            figures.requests += f.requests;
            figures.peers_contacted += f.peers_contacted;
            figures.lookups += f.lookups;
            if !found.is_empty() {
                return (found, figures);
            }
        }
        (Vec::new(), figures)
    }

    async fn find_with(
        &self,
        key: Option<&GroupKey>,
        keywords: &[String],
        sink: &Sink<'_>,
    ) -> (Vec<Found>, Figures) {
        let c = &self.inner.config;
        let scope = key.map_or(KeyScope::Public, KeyScope::Group);
        let kw_keys: Vec<Vec<u8>> = keywords.iter().map(|k| scope.keyword(k)).collect();
        let mut figures = Figures::default();

        let query = ProvidersQuery {
            stop_after_answers: Some(c.find_quorum.max(1)),
            connect: true,
            ..ProvidersQuery::default()
        };
        let answers = futures::future::join_all(
            kw_keys
                .iter()
                .map(|k| self.inner.client.find_providers(RecordKey::new(k), query)),
        )
        .await;
        let mut common: Option<HashSet<PeerId>> = None;
        for a in answers {
            let set = match a {
                Ok(out) => {
                    figures.add_query(&out.figures);
                    out.providers
                }
                Err(e) => {
                    figures.lookups += 1;
                    debug!("provider lookup failed: {e}");
                    HashSet::new()
                }
            };
            common = Some(match common {
                None => set,
                Some(c) => c.intersection(&set).copied().collect(),
            });
        }
        let providers = self
            .credentialed(common.unwrap_or_default().into_iter().collect())
            .await;
        let providers: Vec<PeerId> = providers.into_iter().take(c.max_providers).collect();

        let mut found = Vec::new();
        let stragglers = Stragglers::new(c.straggler_grace);
        // Each provider's services are passed on as soon as it has answered, not when the
        // slowest has.
        let mut asks: FuturesUnordered<_> = providers
            .iter()
            .map(|p| self.ask_provider(*p, key, &kw_keys, keywords, &stragglers))
            .collect();
        while let Some((items, f)) = asks.next().await {
            figures.requests += f.requests;
            figures.peers_contacted += f.peers_contacted;
            figures.lookups += f.lookups;
            for item in &items {
                sink.send(item).await;
            }
            found.extend(items);
        }
        (found, figures)
    }

    /// The providers worth asking: those the overlay found without a valid credential are
    /// dropped (they cannot have published a record this node accepts; a hostile DHT server
    /// names such PeerIds as providers, and each would cost a `lookup_timeout`). The lookup
    /// dialled every provider it heard of, so their verdicts follow within a round trip;
    /// the wait is bounded by [`VERDICT_WAIT`], after which those still unknown are asked
    /// as before. Verified providers come first, so that the `max_providers` cut keeps them.
    async fn credentialed(&self, providers: Vec<PeerId>) -> Vec<PeerId> {
        let others: Vec<PeerId> = providers
            .iter()
            .copied()
            .filter(|p| *p != self.inner.peer)
            .collect();
        if others.is_empty() {
            return providers;
        }
        let wait = VERDICT_WAIT.min(self.inner.config.lookup_timeout);
        let verdicts = match self.inner.client.credential_verdicts(others, wait).await {
            Ok(v) => v,
            Err(e) => {
                debug!("credential verdicts unavailable: {e}");
                return providers;
            }
        };
        let rank = |p: &PeerId| match verdicts.get(p) {
            None => 0, // this node itself
            Some(PeerVerdict::Verified) => 1,
            Some(_) => 2,
        };
        let mut kept: Vec<PeerId> = providers
            .into_iter()
            .filter(|p| {
                let refused = verdicts.get(p) == Some(&PeerVerdict::Refused);
                if refused {
                    debug!(provider = %p, "named as a provider without a valid credential: not asked");
                }
                !refused
            })
            .collect();
        kept.sort_by_key(rank);
        kept
    }

    /// Gets the matching records of one provider: from our own cache, by asking it, or from
    /// its publisher index in the DHT (when it is silent, or slower than the grace the other
    /// providers' first answer gave it: see [`super::stragglers`]).
    async fn ask_provider(
        &self,
        provider: PeerId,
        key: Option<&GroupKey>,
        kw_keys: &[Vec<u8>],
        keywords: &[String],
        stragglers: &Stragglers,
    ) -> (Vec<Found>, Figures) {
        let mut figures = Figures::default();
        if provider == self.inner.peer {
            let scope = match key {
                None => ScopeId::Public,
                Some(k) => ScopeId::Group(k.group().clone(), k.epoch()),
            };
            let found = self.with_cache(|cache| {
                cache
                    .values()
                    .filter(|p| {
                        p.scope == scope && kw_keys.iter().all(|k| p.keyword_keys.contains(k))
                    })
                    .map(|p| Found {
                        description: p.description.clone(),
                        from_peer: None,
                    })
                    .collect()
            });
            return (found, figures);
        }
        let Some(first) = kw_keys.first() else {
            return (Vec::new(), figures);
        };
        let silent = &self.inner.silent;
        if silent.is_silent(&provider) {
            debug!(%provider, "timed out lately; reading its index");
        } else {
            let request = self.inner.client.request(
                provider,
                Protocol::Cpns,
                Message::Directory(DirectoryMessage::Lookup {
                    keyword: first.clone(),
                }),
            );
            figures.add_direct();
            let answer = tokio::select! {
                answer = tokio::time::timeout(self.inner.config.lookup_timeout, request) => Some(answer),
                () = stragglers.cut() => None,
            };
            match answer {
                Some(Ok(Ok(Message::Directory(DirectoryMessage::Records { records })))) => {
                    silent.answered(&provider);
                    stragglers.answered();
                    let found = records
                        .iter()
                        .take(MAX_RECORDS_PER_ANSWER)
                        .filter_map(|r| self.accept(r, key, provider, Some(provider), keywords))
                        .collect();
                    return (found, figures);
                }
                Some(Ok(other)) => {
                    debug!(%provider, ok = other.is_ok(), "direct lookup failed; reading its index");
                }
                Some(Err(_)) => {
                    debug!(%provider, "direct lookup timed out; reading its index");
                    silent.timed_out(provider);
                }
                None => {
                    debug!(%provider, "slower than the grace after the first answer; reading its index");
                    silent.timed_out(provider);
                }
            }
        }
        let (found, f) = self.lookup_index(provider, key, kw_keys, keywords).await;
        figures.requests += f.requests;
        figures.peers_contacted += f.peers_contacted;
        figures.lookups += f.lookups;
        (found, figures)
    }

    /// The DHT fallback: the provider's publisher index, then the records it lists under all
    /// the keyword keys.
    async fn lookup_index(
        &self,
        provider: PeerId,
        key: Option<&GroupKey>,
        kw_keys: &[Vec<u8>],
        keywords: &[String],
    ) -> (Vec<Found>, Figures) {
        let mut figures = Figures::default();
        let scope = key.map_or(KeyScope::Public, KeyScope::Group);
        let index_key = scope.index(&provider);
        let silent = &self.inner.silent;
        if silent.is_missing(&index_key) {
            return (Vec::new(), figures);
        }
        let client = &self.inner.client;
        let out = match client.get_record(RecordKey::new(&index_key), true).await {
            Ok(out) => out,
            Err(e) => {
                if matches!(e, cpns_overlay::Error::NotFound) && silent.is_silent(&provider) {
                    // Neither answers nor has published an index: nothing to read of it.
                    silent.missing(&index_key);
                }
                figures.lookups += 1;
                return (Vec::new(), figures);
            }
        };
        figures.add_query(&out.figures);
        let shorts: Vec<[u8; 8]> = kw_keys.iter().map(|k| keyword::short(k)).collect();
        let mut wanted = Vec::new();
        for r in &out.records {
            if let Ok(Checked::Signed { header }) = record::verify(
                &r.record.value,
                Some(&index_key),
                &self.inner.trust,
                &self.inner.config,
                crate::now(),
            ) && header.publisher == provider
                && let Body::Index(entries) = header.body
            {
                wanted.extend(
                    entries
                        .into_iter()
                        .filter(|e| shorts.iter().all(|s| e.keywords.contains(s)))
                        .map(|e| e.record),
                );
            }
        }
        let fetched = futures::future::join_all(
            wanted
                .iter()
                .map(|k| client.get_record(RecordKey::new(k), true)),
        )
        .await;
        let mut found = Vec::new();
        for r in fetched {
            match r {
                Ok(out) => {
                    figures.add_query(&out.figures);
                    found.extend(out.records.iter().filter_map(|fr| {
                        self.accept(&fr.record.value, key, provider, fr.peer, keywords)
                    }));
                }
                Err(_) => figures.lookups += 1,
            }
        }
        (found, figures)
    }

    /// Verifies and opens a record received for a keyword search in one scope; keeps it if it
    /// is a live description of that scope, published by `publisher`, having every keyword.
    /// `from` is the peer that sent it (the publisher itself, or a DHT node holding a replica).
    fn accept(
        &self,
        bytes: &[u8],
        key: Option<&GroupKey>,
        publisher: PeerId,
        from: Option<PeerId>,
        keywords: &[String],
    ) -> Option<Found> {
        let desc = match self.open_record(bytes, Some(key)) {
            Ok(d) => d,
            Err(e) => {
                debug!(?from, "record not taken: {e}");
                return None;
            }
        };
        if desc.publisher != publisher {
            return None;
        }
        if !keywords.iter().all(|k| desc.keywords.contains(k)) {
            return None;
        }
        Some(Found {
            description: desc,
            from_peer: from,
        })
    }

    /// Verifies a service record (signature, credential chain, revocation, lifetime) and
    /// opens it. With `scope = Some(k)`, the record must be of that scope: public when `k` is
    /// `None`, sealed for `k`'s group otherwise.
    pub(crate) fn open_record(
        &self,
        bytes: &[u8],
        scope: Option<Option<&GroupKey>>,
    ) -> Result<ServiceDescription, FindError> {
        let checked = record::verify(
            bytes,
            None,
            &self.inner.trust,
            &self.inner.config,
            crate::now(),
        )?;
        let Checked::Signed { header } = checked else {
            return Err(FindError::WrongKind);
        };
        let Body::Service(body) = &header.body else {
            return Err(FindError::WrongKind);
        };
        match body {
            ServiceBody::Clear(desc) => {
                if matches!(scope, Some(Some(_))) {
                    return Err(FindError::WrongKind);
                }
                Ok((**desc).clone())
            }
            ServiceBody::Sealed(sealed) => {
                if let Some(want) = scope {
                    match want {
                        Some(k) if k.group() == &sealed.group => {}
                        _ => return Err(FindError::WrongKind),
                    }
                }
                let key = self
                    .inner
                    .keys
                    .by_epoch(&sealed.group, sealed.epoch)
                    .ok_or_else(|| {
                        FindError::Sealed(
                            OpenError::NoKey(sealed.group.0.clone(), sealed.epoch).to_string(),
                        )
                    })?;
                record::open_sealed(&header, sealed, &key, &self.inner.config)
                    .map_err(|e| FindError::Sealed(e.to_string()))
            }
            ServiceBody::Withdrawn => Err(FindError::WrongKind),
        }
    }
}
