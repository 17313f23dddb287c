//! The Kademlia side of the event loop: inbound DHT requests through the validation hook,
//! query progress and results turned into replies, provider records completed with the
//! addresses identify reports.

use libp2p::kad::{self, store::RecordStore};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, trace, warn};

use super::answers::{Answer, MAX_AWAITED_ANSWERS, enough};
use super::{EventLoop, MAX_ADDRESSLESS_PROVIDED, MAX_PROVIDER_DIALS, PendingQuery};
use crate::client::{FoundRecord, GetProvidersOutput, GetRecordOutput, QueryFigures};
use crate::error::Error;
use crate::event::Event;
use crate::stats::Stats;

impl EventLoop {
    /// Gives the stored provider records of `peer` for `keys` that have no addresses the
    /// addresses identify just reported.
    pub(super) fn fill_provider_addresses(
        &mut self,
        peer: PeerId,
        keys: Vec<kad::RecordKey>,
        addrs: Vec<Multiaddr>,
    ) {
        if addrs.is_empty() {
            return;
        }
        let store = self.swarm.behaviour_mut().kad.store_mut();
        for key in keys {
            let stored = store
                .providers(&key)
                .into_iter()
                .find(|r| r.provider == peer && r.addresses.is_empty());
            if let Some(mut record) = stored {
                record.addresses = addrs.clone();
                if let Err(e) = store.add_provider(record) {
                    debug!("provider addresses not filled in: {e}");
                }
            }
        }
    }

    pub(super) fn handle_kad(&mut self, event: kad::Event) {
        match event {
            kad::Event::InboundRequest { request } => {
                Stats::inc(&self.stats.dht_requests_served);
                self.handle_kad_inbound(request)
            }
            kad::Event::OutboundQueryProgressed {
                id,
                result,
                stats,
                step,
            } => self.handle_query(id, result, &stats, step.last),
            // Only with manual inserts (or a full bucket): `routing` decides.
            kad::Event::RoutablePeer { peer, address }
            | kad::Event::PendingRoutablePeer { peer, address } => self.kad_routable(peer, address),
            other => trace!(?other, "kad event"),
        }
    }

    fn handle_kad_inbound(&mut self, request: kad::InboundRequest) {
        match request {
            kad::InboundRequest::PutRecord {
                source,
                record: Some(record),
                ..
            } => {
                let kad = &mut self.swarm.behaviour_mut().kad;
                let existing = kad.store_mut().get(&record.key).map(|r| r.into_owned());
                match self
                    .config
                    .validator
                    .validate_put(&source, record, existing.as_ref())
                {
                    Ok(record) => {
                        let key = record.key.clone();
                        match kad.store_mut().put_remote(record) {
                            Ok(()) => Stats::inc(&self.stats.records_stored),
                            Err(e) => {
                                self.stats.reject_record("store_full");
                                debug!(?key, "record not stored: {e}");
                            }
                        }
                    }
                    Err(rejection) => {
                        self.stats.reject_record(rejection.reason);
                        debug!(%source, "record refused: {rejection}");
                        self.emit(Event::RecordRejected {
                            source: Some(source),
                            reason: rejection.reason,
                            detail: rejection.detail,
                        });
                    }
                }
            }
            kad::InboundRequest::AddProvider {
                record: Some(record),
            } if !self.hold_provider(&record) => self.provider_announced(record),
            _ => {}
        }
    }

    /// Judges a provider announcement (with the announcer's credential, if it presented one)
    /// and stores it within the store's bounds.
    pub(super) fn provider_announced(&mut self, mut record: kad::ProviderRecord) {
        let source = record.provider;
        // A provider in Kademlia client mode announces no addresses (it has no confirmed
        // external one), and kad answers provider lookups only with addresses; without these
        // it would drop such providers from every answer.
        if record.addresses.is_empty()
            && let Some(state) = self.peers.get_mut(&source)
        {
            record.addresses = state.listen_addrs.clone();
            // Identify has not arrived yet: store the record now and fill its addresses in
            // when it does, or the provider stays unfindable.
            if record.addresses.is_empty()
                && state.addressless_provided.len() < MAX_ADDRESSLESS_PROVIDED
                && !state.addressless_provided.contains(&record.key)
            {
                state.addressless_provided.push(record.key.clone());
            }
        }
        let credential = self
            .peers
            .get(&source)
            .and_then(|s| s.credential.verified())
            .copied();
        match self
            .config
            .validator
            .validate_provider(&source, &record, credential.as_ref())
        {
            Ok(()) => {
                let store = self.swarm.behaviour_mut().kad.store_mut();
                if let Err(refusal) = store.add_remote_provider(record) {
                    self.stats.reject_record(refusal.reason());
                    debug!(%source, "provider not stored: {}", refusal.reason());
                }
            }
            Err(rejection) => {
                self.stats.reject_record(rejection.reason);
                self.emit(Event::RecordRejected {
                    source: Some(source),
                    reason: rejection.reason,
                    detail: rejection.detail,
                });
            }
        }
    }

    fn handle_query(
        &mut self,
        id: kad::QueryId,
        result: kad::QueryResult,
        stats: &kad::QueryStats,
        last: bool,
    ) {
        let Some(pending) = self.pending_queries.remove(&id) else {
            return;
        };
        let figures = QueryFigures::from_stats(stats);
        match (pending, result) {
            (PendingQuery::Put(reply), kad::QueryResult::PutRecord(r)) => {
                let _ = reply.send(r.map(|_| figures).map_err(|e| Error::Dht(e.to_string())));
            }
            (
                PendingQuery::Get {
                    reply,
                    first_only,
                    mut records,
                },
                kad::QueryResult::GetRecord(r),
            ) => match r {
                Ok(kad::GetRecordOk::FoundRecord(pr)) => {
                    match self.config.validator.validate_get(&pr.record) {
                        Ok(()) => records.push(FoundRecord {
                            record: pr.record,
                            peer: pr.peer,
                        }),
                        Err(rejection) => {
                            self.stats.reject_record(rejection.reason);
                            self.emit(Event::RecordRejected {
                                source: pr.peer,
                                reason: rejection.reason,
                                detail: rejection.detail,
                            });
                        }
                    }
                    if first_only && !records.is_empty() {
                        if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                            q.finish();
                        }
                        let _ = reply.send(Ok(GetRecordOutput { records, figures }));
                        return;
                    }
                    if !last {
                        self.pending_queries.insert(
                            id,
                            PendingQuery::Get {
                                reply,
                                first_only,
                                records,
                            },
                        );
                        return;
                    }
                    let _ = reply.send(finish_get(records, figures));
                }
                Ok(kad::GetRecordOk::FinishedWithNoAdditionalRecord { .. }) => {
                    let _ = reply.send(finish_get(records, figures));
                }
                Err(kad::GetRecordError::NotFound { .. }) => {
                    let _ = reply.send(finish_get(records, figures));
                }
                Err(e) => {
                    if records.is_empty() {
                        let _ = reply.send(Err(Error::Dht(e.to_string())));
                    } else {
                        let _ = reply.send(Ok(GetRecordOutput { records, figures }));
                    }
                }
            },
            (PendingQuery::Provide(reply), kad::QueryResult::StartProviding(r)) => {
                let _ = reply.send(r.map(|_| figures).map_err(|e| Error::Dht(e.to_string())));
            }
            (
                PendingQuery::Providers {
                    reply,
                    query,
                    mut providers,
                    mut answers,
                    mut awaited,
                    mut home_heard,
                },
                kad::QueryResult::GetProviders(r),
            ) => {
                match r {
                    Ok(kad::GetProvidersOk::FoundProviders {
                        providers: found,
                        source,
                        ..
                    }) => {
                        if source.is_some_and(|p| self.home_servers.contains(&p)) {
                            home_heard = true;
                        }
                        if !found.is_empty() {
                            match self.judge_answer(source) {
                                Answer::Counts => answers += 1,
                                Answer::Awaited(peer)
                                    if awaited.len() < MAX_AWAITED_ANSWERS
                                        && !awaited.contains(&peer) =>
                                {
                                    awaited.push(peer);
                                }
                                Answer::Awaited(_) | Answer::Ignored => {}
                            }
                        }
                        if query.connect {
                            // Dial now, while the lookup still holds the addresses the
                            // answer carried (kad offers them to the dial).
                            let local = *self.swarm.local_peer_id();
                            for p in found.iter().take(MAX_PROVIDER_DIALS) {
                                if *p != local
                                    && !providers.contains(p)
                                    && !self.swarm.is_connected(p)
                                {
                                    let opts = DialOpts::peer_id(*p)
                                        .condition(PeerCondition::DisconnectedAndNotDialing)
                                        .build();
                                    match self.swarm.dial(opts) {
                                        Ok(()) => self.provider_dial_started(*p),
                                        Err(e) => {
                                            trace!(peer = %p, "provider dial not started: {e}");
                                        }
                                    }
                                }
                            }
                        }
                        providers.extend(found);
                    }
                    Ok(kad::GetProvidersOk::FinishedWithNoAdditionalRecord { .. }) => {}
                    Err(e) => {
                        if providers.is_empty() {
                            let _ = reply.send(Err(Error::Dht(e.to_string())));
                            return;
                        }
                    }
                }
                let enough = home_heard && enough(&query, providers.len(), answers);
                if enough
                    && !last
                    && let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id)
                {
                    q.finish();
                }
                if enough || last {
                    let _ = reply.send(Ok(GetProvidersOutput { providers, figures }));
                } else {
                    self.pending_queries.insert(
                        id,
                        PendingQuery::Providers {
                            reply,
                            query,
                            providers,
                            answers,
                            awaited,
                            home_heard,
                        },
                    );
                }
            }
            (PendingQuery::Bootstrap(reply), kad::QueryResult::Bootstrap(r)) => match r {
                Ok(ok) if ok.num_remaining > 0 && !last => {
                    self.pending_queries
                        .insert(id, PendingQuery::Bootstrap(reply));
                }
                Ok(_) => {
                    let _ = reply.send(Ok(figures));
                }
                Err(e) => {
                    let _ = reply.send(Err(Error::Dht(e.to_string())));
                }
            },
            (pending, other) => {
                warn!(?other, "query result of an unexpected kind");
                drop(pending);
            }
        }
    }
}

fn finish_get(records: Vec<FoundRecord>, figures: QueryFigures) -> Result<GetRecordOutput, Error> {
    if records.is_empty() {
        Err(Error::NotFound)
    } else {
        Ok(GetRecordOutput { records, figures })
    }
}
