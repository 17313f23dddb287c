//! The event loop: the only owner of the libp2p [`Swarm`]. It turns [`Command`]s from
//! [`crate::Client`]s into swarm calls, and swarm events into replies and [`Event`]s.
//!
//! One task, no locks: every piece of state below is touched only here. Every map that grows
//! with outstanding work is capped by [`Config::max_pending`]; the admitted-peer set by
//! [`Config::max_admitted`]; the per-peer maps are cleared when the last connection closes.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use libp2p::kad::{self, store::RecordStore};
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::swarm::{ConnectionId, SwarmEvent};
use libp2p::{Multiaddr, PeerId, Swarm, identify, mdns, multiaddr, ping, request_response};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, trace, warn};

use crate::behaviour::{Behaviour, BehaviourEvent, KAD_PROTOCOL, to_kad_mode};
use crate::client::{
    Command, FoundRecord, GetProvidersOutput, GetRecordOutput, PeerInfo, Protocol, ProvidersQuery,
    QueryFigures, Reply, ResponseChannel,
};
use crate::codec::io_error_reason;
use crate::config::{Config, KadMode};
use crate::error::Error;
use crate::event::Event;
use crate::protocol::{Envelope, ErrorCode, Message};
use crate::stats::Stats;

mod addresses;
mod answers;
mod credentials;
mod kad_events;
mod nat;
mod routing;
mod verdicts;

use credentials::CredentialState;

use addresses::AddressBook;

/// Most peers whose addresses the [`AddressBook`] remembers.
const MAX_ADDRESS_BOOK_PEERS: usize = 8192;

/// Most providers one lookup dials when asked to connect them ([`ProvidersQuery::connect`]).
const MAX_PROVIDER_DIALS: usize = 64;

enum PendingQuery {
    Put(Reply<QueryFigures>),
    Get {
        reply: Reply<GetRecordOutput>,
        first_only: bool,
        records: Vec<FoundRecord>,
    },
    Provide(Reply<QueryFigures>),
    Providers {
        reply: Reply<GetProvidersOutput>,
        query: ProvidersQuery,
        providers: HashSet<PeerId>,
        /// Answers naming providers that count toward the early stop (see `answers`).
        answers: usize,
        /// Senders of answers that count once their credential verifies (at most
        /// [`answers::MAX_AWAITED_ANSWERS`]).
        awaited: Vec<PeerId>,
        /// Whether a home server answered (or none is set): needed for an early stop.
        home_heard: bool,
    },
    Bootstrap(Reply<QueryFigures>),
}

/// What the loop remembers of a connected peer.
#[derive(Default)]
struct PeerState {
    address: Option<Multiaddr>,
    outbound: bool,
    rtt_us: Option<u64>,
    dht_server: bool,
    agent: Option<String>,
    /// Where the peer listens, from identify (at most [`addresses::MAX_ADDRS_PER_PEER`]).
    listen_addrs: Vec<Multiaddr>,
    /// Keys this peer announced itself as provider of before identify told us where it
    /// listens (at most [`MAX_ADDRESSLESS_PROVIDED`]); their records get the addresses
    /// once identify arrives.
    addressless_provided: Vec<kad::RecordKey>,
    /// Its credential, from the credential exchange.
    credential: CredentialState,
    /// The address kad dialed it on when it confirmed the DHT protocol (`RoutablePeer`).
    kad_addr: Option<Multiaddr>,
    /// Its provider announcements waiting for that exchange (see `credentials`).
    held_providers: Vec<kad::ProviderRecord>,
    /// Every established connection: id, remote address, whether we dialed.
    connections: Vec<(ConnectionId, Multiaddr, bool)>,
}

impl PeerState {
    /// Whether every connection goes through a relay.
    fn relayed(&self) -> bool {
        !self.connections.is_empty()
            && self
                .connections
                .iter()
                .all(|(_, a, _)| crate::nat::is_relayed(a))
    }

    /// The address of a direct connection we dialed, if any.
    fn direct_outbound_addr(&self) -> Option<Multiaddr> {
        self.connections
            .iter()
            .find(|(_, a, out)| *out && !crate::nat::is_relayed(a))
            .map(|(_, a, _)| a.clone())
    }
}

/// How often reservations and relayed connections are looked after (only while there is
/// something to do: see `nat_work_pending`).
const NAT_TICK: Duration = Duration::from_millis(500);

/// Most provider records per peer waiting for that peer's addresses.
const MAX_ADDRESSLESS_PROVIDED: usize = 64;

/// Drives the swarm. Spawn [`EventLoop::run`] on the runtime; it returns when the token is
/// cancelled or every [`crate::Client`] is dropped.
pub struct EventLoop {
    swarm: Swarm<Behaviour>,
    config: Config,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    stats: Arc<Stats>,
    pending_dials: HashMap<ConnectionId, (Option<PeerId>, Reply<PeerId>)>,
    /// Keyed by protocol too: each request-response behaviour numbers its requests from 1.
    pending_requests: HashMap<(Protocol, request_response::OutboundRequestId), Reply<Envelope>>,
    pending_queries: HashMap<kad::QueryId, PendingQuery>,
    peers: HashMap<PeerId, PeerState>,
    /// Admitted peers and when their admission ends (Unix seconds).
    admitted: HashMap<PeerId, u64>,
    /// Peers the application refused for good (revoked, expelled), with the code every one of
    /// their requests gets (at most [`Config::max_admitted`]).
    refused: HashMap<PeerId, ErrorCode>,
    listen_addrs: Vec<Multiaddr>,
    nat: nat::NatState,
    /// Every address passed to the swarm and the routing table, bounded per peer.
    addresses: AddressBook,
    /// This node's encoded credential, sent in the credential exchange.
    credential: Option<Vec<u8>>,
    /// Callers waiting for credential verdicts (see `verdicts`).
    verdict_waiters: Vec<verdicts::Waiter>,
    /// Providers a lookup is dialling, whose verdict is therefore still to come.
    provider_dials: HashSet<PeerId>,
    /// This node's home DHT servers (see [`crate::Client::set_home_servers`]).
    home_servers: Vec<PeerId>,
}

impl EventLoop {
    pub(crate) fn new(
        swarm: Swarm<Behaviour>,
        config: Config,
        commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        stats: Arc<Stats>,
        listen_addrs: Vec<Multiaddr>,
    ) -> Self {
        Self {
            swarm,
            commands,
            events,
            stats,
            pending_dials: HashMap::new(),
            pending_requests: HashMap::new(),
            pending_queries: HashMap::new(),
            peers: HashMap::new(),
            admitted: HashMap::new(),
            refused: HashMap::new(),
            listen_addrs,
            nat: nat::NatState::default(),
            addresses: AddressBook::new(MAX_ADDRESS_BOOK_PEERS),
            credential: config.credential.clone(),
            verdict_waiters: Vec::new(),
            provider_dials: HashSet::new(),
            home_servers: Vec::new(),
            config,
        }
    }

    /// Runs until `cancel` fires or all clients are gone. On exit every pending reply is
    /// dropped, so waiting callers wake with [`Error::Shutdown`].
    pub async fn run(mut self, cancel: CancellationToken) {
        self.start_bootstrap();
        // Configured external addresses are confirmed before the loop runs.
        self.update_relay_role();
        let every = self
            .config
            .bootstrap_interval
            .max(Duration::from_millis(10));
        let mut refresh = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        refresh.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut nat_tick = tokio::time::interval(NAT_TICK);
        nat_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let period = self
            .config
            .purge_interval
            .max(std::time::Duration::from_millis(10));
        let mut purge = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        purge.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let nat_due = self.nat_work_pending();
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.handle_command(cmd),
                    None => break,
                },
                _ = purge.tick() => {
                    let n = self
                        .swarm
                        .behaviour_mut()
                        .kad
                        .store_mut()
                        .purge_expired(std::time::Instant::now());
                    if n > 0 {
                        debug!(purged = n, "expired records of others dropped");
                    }
                    self.unroute_expired();
                }
                event = self.swarm.select_next_some() => self.handle_swarm_event(event),
                _ = refresh.tick() => self.refresh_routing_table(),
                _ = nat_tick.tick(), if nat_due => self.nat_tick(),
            }
        }
        debug!(peer = %self.swarm.local_peer_id(), "overlay event loop stopped");
    }

    fn start_bootstrap(&mut self) {
        let mut any = false;
        for addr in self.config.bootstrap.clone() {
            match peer_of(&addr) {
                Some(peer) => {
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .add_address(&peer, addr.clone());
                    self.swarm.add_peer_address(peer, addr.clone());
                    any = true;
                    let opts = DialOpts::peer_id(peer)
                        .addresses(vec![addr])
                        .condition(PeerCondition::DisconnectedAndNotDialing)
                        .build();
                    if let Err(e) = self.swarm.dial(opts) {
                        warn!(%peer, "bootstrap dial failed: {e}");
                    }
                }
                None => warn!(%addr, "bootstrap address without /p2p/PEERID ignored"),
            }
        }
        if any && let Err(e) = self.swarm.behaviour_mut().kad.bootstrap() {
            debug!("bootstrap not started: {e}");
        }
    }

    /// Whether `peer` is admitted now (an admission ends with the credential it was for).
    fn is_admitted(&self, peer: &PeerId) -> bool {
        self.admitted.get(peer).is_some_and(|u| *u > unix_now())
    }

    /// The periodic Kademlia bootstrap, run only when the routing table holds a peer: with
    /// none (a gateway whose PNEs are all Kademlia clients) there is nobody to ask, and that is
    /// the normal home case, not a fault.
    fn refresh_routing_table(&mut self) {
        let kad = &mut self.swarm.behaviour_mut().kad;
        let known: usize = kad.kbuckets().map(|b| b.num_entries()).sum();
        if known == 0 {
            debug!("routing table refresh skipped: no DHT server known");
            return;
        }
        if let Err(e) = kad.bootstrap() {
            debug!("routing table refresh not started: {e}");
        }
    }

    fn full(&self, len: usize) -> bool {
        len >= self.config.max_pending
    }

    fn handle_command(&mut self, cmd: Command) {
        match cmd {
            Command::Dial { addr, reply } => self.dial(addr, reply),
            Command::AddAddress { peer, addr } => {
                // At most MAX_ADDRS_PER_PEER per peer reach the swarm and kad, so a flood of
                // addresses costs constant work each (see `addresses`).
                if self.addresses.add(peer, &addr) {
                    self.swarm.add_peer_address(peer, addr.clone());
                    // Where routing-table places need a credential, what others say of a
                    // peer's addresses puts nobody there (see `routing`).
                    let routable = match self.peers.get(&peer) {
                        Some(p) => p.dht_server && self.may_route(p),
                        None => !self.gates_routing(),
                    };
                    if routable {
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                }
            }
            Command::PeerAddresses { peer, reply } => {
                let mut addrs = self.addresses.get(&peer).to_vec();
                if let Some(bucket) = self.swarm.behaviour_mut().kad.kbucket(peer) {
                    for e in bucket.iter() {
                        if e.node.key.preimage() == &peer {
                            for a in e.node.value.iter() {
                                // kad keeps them with `/p2p/PEER` appended.
                                let mut a = a.clone();
                                if matches!(a.iter().last(), Some(multiaddr::Protocol::P2p(_))) {
                                    a.pop();
                                }
                                if !addrs.contains(&a) {
                                    addrs.push(a);
                                }
                            }
                        }
                    }
                }
                let _ = reply.send(Ok(addrs));
            }
            Command::Disconnect { peer } => {
                let _ = self.swarm.disconnect_peer_id(peer);
            }
            Command::Request {
                peer,
                protocol,
                envelope,
                reply,
            } => {
                if self.full(self.pending_requests.len()) {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                let b = self.swarm.behaviour_mut();
                let id = match protocol {
                    Protocol::Cpns => b.cpns.send_request(&peer, envelope),
                    Protocol::Auth => b.auth.send_request(&peer, envelope),
                };
                Stats::inc(&self.stats.requests_sent);
                self.pending_requests.insert((protocol, id), reply);
                self.request_started(peer);
            }
            Command::Respond { channel, body } => {
                let env = Envelope::new(channel.id, body);
                let b = self.swarm.behaviour_mut();
                let sent = match channel.protocol {
                    Protocol::Cpns => b.cpns.send_response(channel.inner, env),
                    Protocol::Auth => b.auth.send_response(channel.inner, env),
                };
                if sent.is_err() {
                    debug!("response dropped: the requester is gone or timed out");
                }
            }
            Command::PutRecord {
                record,
                quorum,
                reply,
            } => {
                if self.full(self.pending_queries.len()) {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                match self.swarm.behaviour_mut().kad.put_record(record, quorum) {
                    Ok(id) => {
                        Stats::inc(&self.stats.queries);
                        self.pending_queries.insert(id, PendingQuery::Put(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dht(format!("local store refused: {e}"))));
                    }
                }
            }
            Command::PutRecordTo {
                record,
                mut peers,
                quorum,
                reply,
            } => {
                if self.full(self.pending_queries.len()) {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                let local = *self.swarm.local_peer_id();
                peers.retain(|p| *p != local);
                peers.dedup();
                peers.truncate(crate::client::MAX_PUT_TO);
                if peers.is_empty() {
                    let _ = reply.send(Err(Error::Dht("no DHT server to store at".into())));
                    return;
                }
                let id =
                    self.swarm
                        .behaviour_mut()
                        .kad
                        .put_record_to(record, peers.into_iter(), quorum);
                Stats::inc(&self.stats.queries);
                self.pending_queries.insert(id, PendingQuery::Put(reply));
            }
            Command::GetRecord {
                key,
                first_only,
                reply,
            } => {
                if self.full(self.pending_queries.len()) {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_record(key);
                Stats::inc(&self.stats.queries);
                self.pending_queries.insert(
                    id,
                    PendingQuery::Get {
                        reply,
                        first_only,
                        records: Vec::new(),
                    },
                );
            }
            Command::LocalRecord { key, reply } => {
                let rec = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .store_mut()
                    .get(&key)
                    .map(|r| r.into_owned());
                let _ = reply.send(Ok(rec));
            }
            Command::RemoveRecord { key } => {
                // Not kad's remove_record, which keeps records that others published.
                self.swarm.behaviour_mut().kad.store_mut().remove(&key);
            }
            Command::StartProviding { key, reply } => {
                if self.full(self.pending_queries.len()) {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                match self.swarm.behaviour_mut().kad.start_providing(key) {
                    Ok(id) => {
                        Stats::inc(&self.stats.queries);
                        self.pending_queries
                            .insert(id, PendingQuery::Provide(reply));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(Error::Dht(format!("local store refused: {e}"))));
                    }
                }
            }
            Command::StopProviding { key } => {
                self.swarm.behaviour_mut().kad.stop_providing(&key);
            }
            Command::GetProviders { key, query, reply } => {
                if self.full(self.pending_queries.len()) {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                let id = self.swarm.behaviour_mut().kad.get_providers(key);
                Stats::inc(&self.stats.queries);
                self.pending_queries.insert(
                    id,
                    PendingQuery::Providers {
                        reply,
                        query,
                        providers: HashSet::new(),
                        answers: 0,
                        awaited: Vec::new(),
                        home_heard: self.home_servers.is_empty(),
                    },
                );
            }
            Command::Bootstrap { reply } => {
                if self.full(self.pending_queries.len()) {
                    let _ = reply.send(Err(Error::Busy));
                    return;
                }
                match self.swarm.behaviour_mut().kad.bootstrap() {
                    Ok(id) => {
                        self.pending_queries
                            .insert(id, PendingQuery::Bootstrap(reply));
                    }
                    Err(_) => {
                        let _ = reply.send(Err(Error::NoKnownPeers));
                    }
                }
            }
            Command::SetKadMode { mode } => {
                self.swarm
                    .behaviour_mut()
                    .kad
                    .set_mode(Some(to_kad_mode(mode)));
                self.update_relay_role();
            }
            Command::KadMode { reply } => {
                let mode = match self.swarm.behaviour().kad.mode() {
                    kad::Mode::Server => KadMode::Server,
                    kad::Mode::Client => KadMode::Client,
                };
                let _ = reply.send(Ok(mode));
            }
            Command::Peers { reply } => {
                let peers = self
                    .peers
                    .iter()
                    .map(|(peer, s)| PeerInfo {
                        peer_id: *peer,
                        address: s.address.clone().unwrap_or_else(Multiaddr::empty),
                        outbound: s.outbound,
                        rtt_us: s.rtt_us,
                        dht_server: s.dht_server,
                        agent: s.agent.clone(),
                        relayed: s.relayed(),
                    })
                    .collect();
                let _ = reply.send(Ok(peers));
            }
            Command::ListenAddrs { reply } => {
                let _ = reply.send(Ok(self.listen_addrs.clone()));
            }
            Command::SetHomeServers { mut peers } => {
                peers.truncate(crate::client::MAX_PUT_TO);
                self.home_servers = peers;
            }
            Command::CredentialVerdicts { peers, wait, reply } => {
                self.await_verdicts(peers, wait, reply);
            }
            Command::RoutingTableSize { reply } => {
                let n = self
                    .swarm
                    .behaviour_mut()
                    .kad
                    .kbuckets()
                    .map(|b| b.num_entries())
                    .sum();
                let _ = reply.send(Ok(n));
            }
            Command::Admit {
                peer,
                until,
                refusal,
            } => match until {
                None => {
                    self.admitted.remove(&peer);
                    if refusal == Some(ErrorCode::Revoked) {
                        self.revoked(peer);
                    }
                    if let Some(code) = refusal {
                        if self.refused.len() >= self.config.max_admitted
                            && let Some(any) = self.refused.keys().next().copied()
                        {
                            self.refused.remove(&any);
                        }
                        self.refused.insert(peer, code);
                    }
                }
                Some(until) => {
                    self.refused.remove(&peer);
                    if !self.admitted.contains_key(&peer)
                        && self.admitted.len() >= self.config.max_admitted
                    {
                        // Make room from admissions that have ended before refusing.
                        let now = unix_now();
                        self.admitted.retain(|_, u| *u > now);
                    }
                    if self.admitted.contains_key(&peer)
                        || self.admitted.len() < self.config.max_admitted
                    {
                        self.admitted.insert(peer, until);
                    } else {
                        warn!(%peer, "admitted-peer set is full; peer not admitted");
                    }
                }
            },
            Command::ForgetDhtPeer { peer } => {
                self.swarm.behaviour_mut().kad.remove_peer(&peer);
                if let Some(state) = self.peers.get_mut(&peer) {
                    state.dht_server = false;
                }
            }
            Command::AddDhtServer { peer, addrs } => {
                if peer != *self.swarm.local_peer_id() {
                    for addr in addrs.into_iter().take(crate::MAX_LISTEN_ADDRS) {
                        self.addresses.add(peer, &addr);
                        self.swarm.add_peer_address(peer, addr.clone());
                        self.swarm.behaviour_mut().kad.add_address(&peer, addr);
                    }
                    if let Some(state) = self.peers.get_mut(&peer) {
                        state.dht_server = true;
                    }
                }
            }
            Command::SetCredential { credential } => {
                self.credential = credential;
                self.announce_credential();
            }
            Command::StoreUsage { reply } => {
                let _ = reply.send(Ok(self.swarm.behaviour_mut().kad.store_mut().usage()));
            }
            Command::IsAdmitted { peer, reply } => {
                let _ = reply.send(Ok(self.is_admitted(&peer)));
            }
            Command::NatStatus { reply } => {
                let _ = reply.send(Ok(self.nat_status()));
            }
            Command::DialPeer { peer, addrs, reply } => self.dial_peer(peer, addrs, reply),
            Command::AddExternalAddress { addr } => {
                self.swarm.add_external_address(addr);
                self.nat_external_changed();
            }
        }
    }

    fn dial(&mut self, addr: Multiaddr, reply: Reply<PeerId>) {
        let peer = peer_of(&addr);
        if let Some(p) = peer
            && self.swarm.is_connected(&p)
        {
            let _ = reply.send(Ok(p));
            return;
        }
        if self.full(self.pending_dials.len()) {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let opts = match peer {
            Some(p) => DialOpts::peer_id(p)
                .addresses(vec![addr])
                .condition(PeerCondition::Always)
                .build(),
            None => DialOpts::unknown_peer_id().address(addr).build(),
        };
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, (peer, reply));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dial(e.to_string())));
            }
        }
    }

    /// Dials `peer` on all of `addrs` at once (the swarm tries them concurrently and keeps
    /// the first that answers): a pairing code names LAN, public and relayed addresses, and
    /// only some of them work from where the dialer is.
    fn dial_peer(&mut self, peer: PeerId, addrs: Vec<Multiaddr>, reply: Reply<PeerId>) {
        if self.swarm.is_connected(&peer) {
            let _ = reply.send(Ok(peer));
            return;
        }
        if self.full(self.pending_dials.len()) {
            let _ = reply.send(Err(Error::Busy));
            return;
        }
        let opts = DialOpts::peer_id(peer)
            .addresses(addrs)
            .condition(PeerCondition::Always)
            .build();
        let id = opts.connection_id();
        match self.swarm.dial(opts) {
            Ok(()) => {
                self.pending_dials.insert(id, (Some(peer), reply));
            }
            Err(e) => {
                let _ = reply.send(Err(Error::Dial(e.to_string())));
            }
        }
    }

    fn emit(&mut self, event: Event) {
        if let Err(e) = self.events.try_send(event) {
            Stats::inc(&self.stats.events_dropped);
            trace!("event dropped: {e}");
        }
    }

    fn handle_swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::Behaviour(BehaviourEvent::Kad(e)) => self.handle_kad(e),
            SwarmEvent::Behaviour(BehaviourEvent::Cpns(e)) => self.handle_rr(Protocol::Cpns, e),
            SwarmEvent::Behaviour(BehaviourEvent::Auth(e)) => self.handle_rr(Protocol::Auth, e),
            SwarmEvent::Behaviour(BehaviourEvent::Cred(e)) => self.handle_cred(e),
            SwarmEvent::Behaviour(BehaviourEvent::Identify(identify::Event::Received {
                peer_id,
                info,
                ..
            })) => {
                let dht_server = info.protocols.contains(&KAD_PROTOCOL);
                self.nat_identified(peer_id, &info.protocols);
                // The peer's own list replaces what we knew; only its first few addresses
                // are looked at.
                let changes = self.addresses.replace(peer_id, &info.listen_addrs);
                let gated = self.gates_routing();
                let credential = self.peers.get(&peer_id).map(|s| {
                    (
                        self.may_route(s),
                        matches!(
                            s.credential,
                            CredentialState::None | CredentialState::Failed
                        ),
                    )
                });
                let kad = &mut self.swarm.behaviour_mut().kad;
                match credential {
                    _ if !dht_server => {
                        // A client-mode peer must not linger in our routing table.
                        kad.remove_peer(&peer_id);
                    }
                    Some((true, _)) => {
                        if !gated {
                            for addr in &changes.added {
                                kad.add_address(&peer_id, addr.clone());
                            }
                        }
                        for addr in &changes.removed {
                            kad.remove_address(&peer_id, addr);
                        }
                    }
                    // Known to have no valid credential: out (a configured bootstrap peer).
                    Some((false, true)) => {
                        kad.remove_peer(&peer_id);
                    }
                    // Its verdict is still to come; `route` puts it in then.
                    Some((false, false)) | None => {}
                }
                for addr in changes.added {
                    self.swarm.add_peer_address(peer_id, addr);
                }
                let listen_addrs = self.addresses.get(&peer_id).to_vec();
                if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.dht_server = dht_server;
                    state.agent = Some(info.agent_version.clone());
                    state.listen_addrs = listen_addrs.clone();
                    let keys = std::mem::take(&mut state.addressless_provided);
                    self.fill_provider_addresses(peer_id, keys, listen_addrs.clone());
                }
                if dht_server {
                    self.route(peer_id);
                }
                self.emit(Event::Identified {
                    peer: peer_id,
                    listen_addrs,
                    agent: info.agent_version,
                    dht_server,
                });
            }
            SwarmEvent::Behaviour(BehaviourEvent::Identify(_)) => {}
            SwarmEvent::Behaviour(BehaviourEvent::Ping(ping::Event { peer, result, .. })) => {
                if let (Ok(rtt), Some(state)) = (result, self.peers.get_mut(&peer)) {
                    state.rtt_us = Some(rtt.as_micros() as u64);
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Discovered(list))) => {
                let mut by_peer: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
                for (peer, addr) in list {
                    self.swarm.add_peer_address(peer, addr.clone());
                    by_peer.entry(peer).or_default().push(addr);
                }
                for (peer, addrs) in by_peer {
                    self.emit(Event::MdnsDiscovered { peer, addrs });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Mdns(mdns::Event::Expired(list))) => {
                let peers: HashSet<PeerId> = list.into_iter().map(|(p, _)| p).collect();
                for peer in peers {
                    self.emit(Event::MdnsExpired { peer });
                }
            }
            SwarmEvent::Behaviour(BehaviourEvent::Limits(never)) => match never {},
            SwarmEvent::Behaviour(BehaviourEvent::Stream(())) => {}
            SwarmEvent::Behaviour(BehaviourEvent::RelayClient(e)) => self.handle_relay_client(e),
            SwarmEvent::Behaviour(BehaviourEvent::Relay(e)) => self.handle_relay_server(e),
            SwarmEvent::Behaviour(BehaviourEvent::Dcutr(e)) => self.handle_dcutr(e),
            SwarmEvent::Behaviour(BehaviourEvent::Autonat(e)) => self.handle_autonat(e),
            SwarmEvent::Behaviour(BehaviourEvent::AutonatServer(e)) => {
                trace!(client = %e.client, addr = %e.tested_addr, ok = e.result.is_ok(), "AutoNAT probe served");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Upnp(e)) => self.handle_upnp(e),
            SwarmEvent::ExternalAddrConfirmed { address } => {
                debug!(%address, "external address confirmed");
                self.nat_external_changed();
            }
            SwarmEvent::ExternalAddrExpired { address } => {
                debug!(%address, "external address expired");
                self.nat_external_changed();
            }
            SwarmEvent::ListenerClosed {
                listener_id,
                reason,
                ..
            } => {
                let reason = match &reason {
                    Ok(()) => "closed".to_string(),
                    Err(e) => crate::error_chain(e),
                };
                self.nat_listener_closed(listener_id, &reason);
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                connection_id,
                endpoint,
                num_established,
                ..
            } => {
                if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Ok(peer_id));
                }
                let outbound = endpoint.is_dialer();
                let address = crate::nat::connection_addr(&endpoint, peer_id);
                let state = self.peers.entry(peer_id).or_default();
                // Show a direct connection rather than a relayed one.
                if state
                    .address
                    .as_ref()
                    .is_none_or(|a| crate::nat::is_relayed(a) && !crate::nat::is_relayed(&address))
                {
                    state.address = Some(address.clone());
                    state.outbound = outbound;
                }
                state
                    .connections
                    .push((connection_id, address.clone(), outbound));
                self.nat_connection(&address, true);
                if num_established.get() == 1 {
                    self.start_credential_exchange(peer_id);
                }
                // Still pending (the exchange follows), so no waiter is answered here.
                self.provider_dials.remove(&peer_id);
                self.emit(Event::ConnectionEstablished {
                    peer: peer_id,
                    address,
                    outbound,
                    num_established: num_established.get(),
                });
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                connection_id,
                num_established,
                endpoint,
                ..
            } => {
                self.nat_connection(&crate::nat::connection_addr(&endpoint, peer_id), false);
                if num_established == 0 {
                    self.peers.remove(&peer_id);
                    self.nat_peer_gone(&peer_id);
                    self.verdicts_changed();
                    self.emit(Event::ConnectionClosed { peer: peer_id });
                } else if let Some(state) = self.peers.get_mut(&peer_id) {
                    state.connections.retain(|(c, _, _)| *c != connection_id);
                    if let Some((_, a, out)) = state.connections.first() {
                        state.address = Some(a.clone());
                        state.outbound = *out;
                    }
                }
            }
            SwarmEvent::OutgoingConnectionError {
                connection_id,
                peer_id,
                error,
            } => {
                if let Some((_, reply)) = self.pending_dials.remove(&connection_id) {
                    let _ = reply.send(Err(Error::Dial(error.to_string())));
                }
                self.provider_dial_ended(peer_id);
                debug!(?peer_id, "outgoing connection failed: {error}");
            }
            SwarmEvent::NewListenAddr { address, .. } => {
                if !self.listen_addrs.contains(&address) {
                    self.listen_addrs.push(address.clone());
                }
                self.emit(Event::NewListenAddr(address));
            }
            SwarmEvent::ExpiredListenAddr { address, .. } => {
                self.listen_addrs.retain(|a| a != &address);
            }
            other => trace!(?other, "unhandled swarm event"),
        }
    }

    fn handle_rr(
        &mut self,
        protocol: Protocol,
        event: request_response::Event<Envelope, Envelope>,
    ) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                self.request_started(peer);
                let channel = ResponseChannel {
                    inner: channel,
                    protocol,
                    id: request.id,
                };
                if protocol == Protocol::Cpns
                    && self.config.gate_requests
                    && let Some(code) = self.refused.get(&peer).copied()
                {
                    self.stats.reject_message(code.as_str());
                    self.reply_error(channel, code, "refused by this node");
                    return;
                }
                if protocol == Protocol::Cpns
                    && self.config.gate_requests
                    && !request.body.is_open()
                    && !self.is_admitted(&peer)
                {
                    self.stats.reject_message("not_registered");
                    self.reply_error(
                        channel,
                        ErrorCode::NotRegistered,
                        "register first (Entity Registration and Discovery)",
                    );
                    return;
                }
                Stats::inc(&self.stats.requests_received);
                let event = Event::InboundRequest {
                    peer,
                    message: request.body,
                    channel,
                };
                if let Err(e) = self.events.try_send(event) {
                    self.stats.reject_message("busy");
                    let (mpsc::error::TrySendError::Full(ev)
                    | mpsc::error::TrySendError::Closed(ev)) = e;
                    if let Event::InboundRequest { channel, .. } = ev {
                        self.reply_error(channel, ErrorCode::Busy, "node overloaded");
                    }
                }
            }
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Response {
                        request_id,
                        response,
                    },
                ..
            } => {
                self.request_ended(peer);
                if let Some(reply) = self.pending_requests.remove(&(protocol, request_id)) {
                    let _ = reply.send(Ok(response));
                } else {
                    trace!(%peer, "late response dropped");
                }
            }
            request_response::Event::OutboundFailure {
                peer,
                request_id,
                error,
                ..
            } => {
                self.request_ended(peer);
                if let Some(reply) = self.pending_requests.remove(&(protocol, request_id)) {
                    let _ = reply.send(Err(Error::Request {
                        peer,
                        reason: error.to_string(),
                    }));
                }
            }
            request_response::Event::InboundFailure { peer, error, .. } => {
                self.request_ended(peer);
                let reason = match &error {
                    request_response::InboundFailure::Io(e) => io_error_reason(e),
                    request_response::InboundFailure::Timeout => "timeout",
                    request_response::InboundFailure::ConnectionClosed => "connection_closed",
                    request_response::InboundFailure::UnsupportedProtocols => "unsupported",
                    request_response::InboundFailure::ResponseOmission => "response_omission",
                };
                if reason != "response_omission" && reason != "connection_closed" {
                    debug!(%peer, "inbound {protocol:?} request rejected: {error}");
                    self.stats.reject_message(reason);
                    self.emit(Event::InboundRejected { peer, reason });
                }
            }
            request_response::Event::ResponseSent { peer, .. } => self.request_ended(peer),
        }
    }

    fn reply_error(&mut self, channel: ResponseChannel, code: ErrorCode, text: &str) {
        let env = Envelope::new(channel.id, Message::error(code, text));
        let b = self.swarm.behaviour_mut();
        let _ = match channel.protocol {
            Protocol::Cpns => b.cpns.send_response(channel.inner, env),
            Protocol::Auth => b.auth.send_response(channel.inner, env),
        };
    }
}

/// Seconds since the Unix epoch.
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// The PeerId a multiaddr leads to: its last `/p2p/` component, if any (a relayed address
/// `…/p2p/RELAY/p2p-circuit/p2p/PEER` names the relay first and the peer last).
pub fn peer_of(addr: &Multiaddr) -> Option<PeerId> {
    addr.iter()
        .filter_map(|p| match p {
            multiaddr::Protocol::P2p(peer) => Some(peer),
            _ => None,
        })
        .last()
}
