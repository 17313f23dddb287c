//! The cloneable handle through which the rest of the program uses the overlay.
//!
//! Every method sends one command to the [`crate::EventLoop`] (the only owner of the swarm) and
//! waits for its oneshot reply. If the loop has stopped, methods return [`Error::Shutdown`].
//! All methods are cancel-safe in the sense that dropping the future only drops the reply; the
//! operation itself may still complete in the loop.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use libp2p::kad::{self, Quorum, Record, RecordKey};
use libp2p::{Multiaddr, PeerId, request_response};
use tokio::sync::{mpsc, oneshot};

use crate::config::KadMode;
use crate::error::Error;
use crate::protocol::{Envelope, ErrorCode, Message, MessageId};
use crate::stats::Stats;

/// Which request-response protocol a request travels on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `/cpns/1.0.0`, node to node.
    Cpns,
    /// `/cpns/auth/1.0.0`, node to `cpns-auth` (and the server's requests to gateways).
    Auth,
}

/// A pending answer to an inbound request; pass it to [`Client::respond`] exactly once.
/// Dropping it without answering makes the requester see a failure.
#[derive(Debug)]
pub struct ResponseChannel {
    pub(crate) inner: request_response::ResponseChannel<Envelope>,
    pub(crate) protocol: Protocol,
    pub(crate) id: MessageId,
}

impl ResponseChannel {
    /// The id of the request this answers.
    pub fn id(&self) -> MessageId {
        self.id
    }
    /// The protocol of the request.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }
}

/// Figures of one DHT query, returned with every lookup so that hop counts can be compared with
/// Appendix E's example (3 hops in an 8-node DHT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueryFigures {
    /// Requests sent to other peers.
    pub requests: u32,
    /// Requests that got an answer.
    pub successes: u32,
    /// Requests that failed.
    pub failures: u32,
    /// Duration of the query in microseconds.
    pub duration_us: u64,
}

impl QueryFigures {
    pub(crate) fn from_stats(s: &kad::QueryStats) -> Self {
        Self {
            requests: s.num_requests(),
            successes: s.num_successes(),
            failures: s.num_failures(),
            duration_us: s.duration().map(|d| d.as_micros() as u64).unwrap_or(0),
        }
    }
}

/// A record found by [`Client::get_record`].
#[derive(Clone, Debug)]
pub struct FoundRecord {
    /// The record (already accepted by the validator).
    pub record: Record,
    /// The peer that returned it (`None`: the local store).
    pub peer: Option<PeerId>,
}

/// The outcome of [`Client::get_record`].
#[derive(Clone, Debug)]
pub struct GetRecordOutput {
    /// Valid records found (at most one when `first_only`).
    pub records: Vec<FoundRecord>,
    /// The query's figures.
    pub figures: QueryFigures,
}

/// The outcome of [`Client::get_providers`].
#[derive(Clone, Debug)]
pub struct GetProvidersOutput {
    /// Providers found (the local node included if it provides the key).
    pub providers: HashSet<PeerId>,
    /// The query's figures.
    pub figures: QueryFigures,
}

/// How a provider lookup ([`Client::find_providers`]) ends, and whether the providers it
/// finds are connected at once.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ProvidersQuery {
    /// Stop once this many distinct providers are known.
    pub stop_after_providers: Option<usize>,
    /// Stop once this many answers carrying at least one provider arrived (the local store
    /// counts as one answer). Every one of the k peers closest to a key holds all of its
    /// providers, so the first answers are usually complete, and waiting for the lookup to
    /// converge only costs time.
    pub stop_after_answers: Option<usize>,
    /// Dial each provider as soon as an answer names it, with the addresses that answer
    /// carried, so that a request to it right after the lookup needs no dial and no address
    /// lookup of its own (kad forgets those addresses when the lookup ends).
    pub connect: bool,
}

/// A connected peer.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PeerInfo {
    /// The peer.
    pub peer_id: PeerId,
    /// The remote address of one established connection.
    pub address: Multiaddr,
    /// Whether we dialed it.
    pub outbound: bool,
    /// Last ping round-trip time, if measured.
    pub rtt_us: Option<u64>,
    /// Whether the peer speaks the CPNS Kademlia protocol in server mode.
    pub dht_server: bool,
    /// The peer's agent version, once identified.
    pub agent: Option<String>,
    /// Whether every connection to it goes through a relay (no direct path yet).
    pub relayed: bool,
}

/// What this node knows of a peer's credential ([`Client::credential_verdicts`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PeerVerdict {
    /// Connected, and its credential verified and has not ended.
    Verified,
    /// Connected, and the exchange ended without a valid credential (none, refused, ended).
    Refused,
    /// Being dialled by a lookup, or connected with the exchange under way.
    Pending,
    /// Not connected (or this node does not check credentials): nothing is known.
    Unknown,
}

/// Most peers one [`Client::put_record_to`] stores at (Kademlia's replication factor).
pub const MAX_PUT_TO: usize = 20;

pub(crate) type Reply<T> = oneshot::Sender<Result<T, Error>>;

pub(crate) enum Command {
    Dial {
        addr: Multiaddr,
        reply: Reply<PeerId>,
    },
    AddAddress {
        peer: PeerId,
        addr: Multiaddr,
    },
    PeerAddresses {
        peer: PeerId,
        reply: Reply<Vec<Multiaddr>>,
    },
    PutRecordTo {
        record: Record,
        peers: Vec<PeerId>,
        quorum: Quorum,
        reply: Reply<QueryFigures>,
    },
    Disconnect {
        peer: PeerId,
    },
    Request {
        peer: PeerId,
        protocol: Protocol,
        envelope: Envelope,
        reply: Reply<Envelope>,
    },
    Respond {
        channel: ResponseChannel,
        body: Message,
    },
    PutRecord {
        record: Record,
        quorum: Quorum,
        reply: Reply<QueryFigures>,
    },
    GetRecord {
        key: RecordKey,
        first_only: bool,
        reply: Reply<GetRecordOutput>,
    },
    LocalRecord {
        key: RecordKey,
        reply: Reply<Option<Record>>,
    },
    RemoveRecord {
        key: RecordKey,
    },
    StartProviding {
        key: RecordKey,
        reply: Reply<QueryFigures>,
    },
    StopProviding {
        key: RecordKey,
    },
    GetProviders {
        key: RecordKey,
        query: ProvidersQuery,
        reply: Reply<GetProvidersOutput>,
    },
    Bootstrap {
        reply: Reply<QueryFigures>,
    },
    SetKadMode {
        mode: KadMode,
    },
    KadMode {
        reply: Reply<KadMode>,
    },
    Peers {
        reply: Reply<Vec<PeerInfo>>,
    },
    ListenAddrs {
        reply: Reply<Vec<Multiaddr>>,
    },
    RoutingTableSize {
        reply: Reply<usize>,
    },
    SetHomeServers {
        peers: Vec<PeerId>,
    },
    CredentialVerdicts {
        peers: Vec<PeerId>,
        wait: bool,
        reply: Reply<std::collections::HashMap<PeerId, PeerVerdict>>,
    },
    Admit {
        peer: PeerId,
        /// `None`: un-admit. `Some(until)`: admitted until that Unix time (the end of the
        /// credential that was checked), after which the peer is refused again.
        until: Option<u64>,
        /// With an un-admission: the code its requests are refused with from now on.
        refusal: Option<ErrorCode>,
    },
    IsAdmitted {
        peer: PeerId,
        reply: Reply<bool>,
    },
    ForgetDhtPeer {
        peer: PeerId,
    },
    AddDhtServer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
    },
    NatStatus {
        reply: Reply<crate::nat::NatStatus>,
    },
    DialPeer {
        peer: PeerId,
        addrs: Vec<Multiaddr>,
        reply: Reply<PeerId>,
    },
    AddExternalAddress {
        addr: Multiaddr,
    },
    SetCredential {
        credential: Option<Vec<u8>>,
    },
    StoreUsage {
        reply: Reply<crate::store::StoreUsage>,
    },
}

/// The handle to a running overlay node. Cheap to clone.
#[derive(Clone)]
pub struct Client {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) local: PeerId,
    pub(crate) next_id: Arc<AtomicU64>,
    pub(crate) stream: libp2p_stream::Control,
    pub(crate) stats: Arc<Stats>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("local", &self.local)
            .finish()
    }
}

impl Client {
    async fn call<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<T, Error> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(make(tx))
            .await
            .map_err(|_| Error::Shutdown)?;
        rx.await.map_err(|_| Error::Shutdown)?
    }

    async fn tell(&self, cmd: Command) -> Result<(), Error> {
        self.commands.send(cmd).await.map_err(|_| Error::Shutdown)
    }

    /// This node's PeerId.
    pub fn local_peer_id(&self) -> PeerId {
        self.local
    }

    /// Counters for metrics (rejected records and messages by reason, ...).
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// A control for opening and accepting raw streams (content delivery).
    pub fn stream_control(&self) -> libp2p_stream::Control {
        self.stream.clone()
    }

    /// A fresh message id.
    pub fn next_message_id(&self) -> MessageId {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Dials an address (with or without `/p2p/PEERID`) and waits until the connection is
    /// established; returns the remote PeerId. Returns at once if already connected to the
    /// named peer.
    pub async fn dial(&self, addr: Multiaddr) -> Result<PeerId, Error> {
        self.call(|reply| Command::Dial { addr, reply }).await
    }

    /// Dials `peer` on all of `addrs` at once and waits for the first connection (the others
    /// are abandoned); returns at once if already connected.
    pub async fn dial_peer(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<PeerId, Error> {
        self.call(|reply| Command::DialPeer { peer, addrs, reply })
            .await
    }

    /// What this node knows of its reachability: AutoNAT's verdict, confirmed public
    /// addresses, relayed addresses and relays, the relay role, UPnP, hole punches.
    pub async fn nat_status(&self) -> Result<crate::nat::NatStatus, Error> {
        self.call(|reply| Command::NatStatus { reply }).await
    }

    /// Announces an address this node is known to be reachable at (a server's public
    /// address), as confirmed: others may dial it and, as a relay, this node hands it out.
    pub async fn add_external_address(&self, addr: Multiaddr) -> Result<(), Error> {
        self.tell(Command::AddExternalAddress { addr }).await
    }

    /// Teaches the swarm and the DHT routing table an address of a peer. At most 8 addresses
    /// per peer are kept (the peer's own identify replaces them); more are ignored.
    pub async fn add_address(&self, peer: PeerId, addr: Multiaddr) -> Result<(), Error> {
        self.tell(Command::AddAddress { peer, addr }).await
    }

    /// The addresses this node knows for `peer` (those it remembers, at most 8, and those in
    /// its DHT routing table entry).
    pub async fn peer_addresses(&self, peer: PeerId) -> Result<Vec<Multiaddr>, Error> {
        self.call(|reply| Command::PeerAddresses { peer, reply })
            .await
    }

    /// Closes every connection to a peer.
    pub async fn disconnect(&self, peer: PeerId) -> Result<(), Error> {
        self.tell(Command::Disconnect { peer }).await
    }

    /// Sends a request and waits for the answer. An [`Message::Error`] answer becomes
    /// [`Error::Refused`]. Dials the peer if needed (with addresses the swarm knows).
    pub async fn request(
        &self,
        peer: PeerId,
        protocol: Protocol,
        body: Message,
    ) -> Result<Message, Error> {
        let envelope = Envelope::new(self.next_message_id(), body);
        let answer = self
            .call(|reply| Command::Request {
                peer,
                protocol,
                envelope,
                reply,
            })
            .await?;
        match answer.body {
            Message::Error(reply) => Err(Error::Refused { peer, reply }),
            other => Ok(other),
        }
    }

    /// Answers an inbound request.
    pub async fn respond(&self, channel: ResponseChannel, body: Message) -> Result<(), Error> {
        self.tell(Command::Respond { channel, body }).await
    }

    /// Stores a record in the DHT (locally and at the k closest peers); returns once `quorum`
    /// peers stored it.
    pub async fn put_record(&self, record: Record, quorum: Quorum) -> Result<QueryFigures, Error> {
        self.call(|reply| Command::PutRecord {
            record,
            quorum,
            reply,
        })
        .await
    }

    /// Stores a record at the given DHT servers only (at most [`MAX_PUT_TO`]), with no lookup
    /// first and not in the local store; returns once `quorum` of them acknowledged it. A
    /// Kademlia client stores through its PN gateway this way: the gateway serves the DHT for
    /// its household, so the put does not depend on what the routing table holds just after
    /// the PN formed.
    pub async fn put_record_to(
        &self,
        record: Record,
        peers: Vec<PeerId>,
        quorum: Quorum,
    ) -> Result<QueryFigures, Error> {
        self.call(|reply| Command::PutRecordTo {
            record,
            peers,
            quorum,
            reply,
        })
        .await
    }

    /// Looks a record up. With `first_only` the query stops at the first valid record (the
    /// fast path); otherwise it collects every valid record it meets. Records the validator
    /// refuses are dropped and counted. [`Error::NotFound`] if none was found.
    pub async fn get_record(
        &self,
        key: RecordKey,
        first_only: bool,
    ) -> Result<GetRecordOutput, Error> {
        self.call(|reply| Command::GetRecord {
            key,
            first_only,
            reply,
        })
        .await
    }

    /// The record stored under `key` in this node's own DHT store, if any.
    pub async fn local_record(&self, key: RecordKey) -> Result<Option<Record>, Error> {
        self.call(|reply| Command::LocalRecord { key, reply }).await
    }

    /// Removes a record from this node's own store, whoever published it; if we published it,
    /// it is no longer republished (other replicas expire by TTL).
    pub async fn remove_record(&self, key: RecordKey) -> Result<(), Error> {
        self.tell(Command::RemoveRecord { key }).await
    }

    /// Announces this node as a provider of `key` to the k closest peers.
    pub async fn start_providing(&self, key: RecordKey) -> Result<QueryFigures, Error> {
        self.call(|reply| Command::StartProviding { key, reply })
            .await
    }

    /// Stops providing `key` (remote provider records expire by TTL).
    pub async fn stop_providing(&self, key: RecordKey) -> Result<(), Error> {
        self.tell(Command::StopProviding { key }).await
    }

    /// Finds the providers of `key`; with `stop_after = Some(n)` the query stops once `n`
    /// providers are known.
    pub async fn get_providers(
        &self,
        key: RecordKey,
        stop_after: Option<usize>,
    ) -> Result<GetProvidersOutput, Error> {
        self.find_providers(
            key,
            ProvidersQuery {
                stop_after_providers: stop_after,
                ..ProvidersQuery::default()
            },
        )
        .await
    }

    /// Finds the providers of `key`, ending as `query` says (see [`ProvidersQuery`]).
    pub async fn find_providers(
        &self,
        key: RecordKey,
        query: ProvidersQuery,
    ) -> Result<GetProvidersOutput, Error> {
        self.call(|reply| Command::GetProviders { key, query, reply })
            .await
    }

    /// Runs a Kademlia bootstrap (a lookup of our own id) and waits for it to finish.
    pub async fn bootstrap(&self) -> Result<QueryFigures, Error> {
        self.call(|reply| Command::Bootstrap { reply }).await
    }

    /// Switches the Kademlia mode (gateway: server, PNE: client).
    pub async fn set_kad_mode(&self, mode: KadMode) -> Result<(), Error> {
        self.tell(Command::SetKadMode { mode }).await
    }

    /// The current Kademlia mode.
    pub async fn kad_mode(&self) -> Result<KadMode, Error> {
        self.call(|reply| Command::KadMode { reply }).await
    }

    /// The peers we are connected to.
    pub async fn peers(&self) -> Result<Vec<PeerInfo>, Error> {
        self.call(|reply| Command::Peers { reply }).await
    }

    /// The addresses we listen on.
    pub async fn listen_addrs(&self) -> Result<Vec<Multiaddr>, Error> {
        self.call(|reply| Command::ListenAddrs { reply }).await
    }

    /// The number of peers in the DHT routing table.
    pub async fn routing_table_size(&self) -> Result<usize, Error> {
        self.call(|reply| Command::RoutingTableSize { reply }).await
    }

    /// Admits (or, with `false`, un-admits) a peer without an end: its requests on
    /// `/cpns/1.0.0` reach the application. Prefer [`Client::admit_until`], which ends the
    /// admission with the credential that was checked.
    pub async fn admit_peer(&self, peer: PeerId, admitted: bool) -> Result<(), Error> {
        let until = admitted.then_some(u64::MAX);
        self.tell(Command::Admit {
            peer,
            until,
            refusal: None,
        })
        .await
    }

    /// Admits a peer until the Unix time `until` (its credential's expiry): the node admits a
    /// peer after checking its credential (B.1 steps 1-2), and the admission must not outlive
    /// that credential.
    pub async fn admit_until(&self, peer: PeerId, until: u64) -> Result<(), Error> {
        self.tell(Command::Admit {
            peer,
            until: Some(until),
            refusal: None,
        })
        .await
    }

    /// Un-admits a peer (forgotten, or gone from the PN): its requests are refused from now
    /// on as from any peer that did not register.
    pub async fn unadmit(&self, peer: PeerId) -> Result<(), Error> {
        self.tell(Command::Admit {
            peer,
            until: None,
            refusal: None,
        })
        .await
    }

    /// Un-admits a peer that must not come back by registering again (revoked, expelled):
    /// its requests are refused with `code`, whatever they are, until it is admitted again.
    pub async fn refuse_peer(&self, peer: PeerId, code: ErrorCode) -> Result<(), Error> {
        self.tell(Command::Admit {
            peer,
            until: None,
            refusal: Some(code),
        })
        .await
    }

    /// Drops `peer` from the Kademlia routing table until identify says again that it serves
    /// the DHT. A gateway calls it when it admits a PNE that will be a DHT client: identify
    /// tells of the switch only later, and meanwhile every put would count the member as a
    /// server that never answers (a failed quorum on a household's only DHT server).
    pub async fn forget_dht_peer(&self, peer: PeerId) -> Result<(), Error> {
        self.tell(Command::ForgetDhtPeer { peer }).await
    }

    /// Puts `peer` in the Kademlia routing table as a DHT server at `addrs` (at most
    /// [`crate::MAX_LISTEN_ADDRS`] are taken). A PNE calls it for its gateway, which it knows
    /// serves the DHT from the PN itself: an identify exchange that happened while the gateway
    /// was not yet a server (or one still on its way) must not leave the PNE with nobody to
    /// store its records.
    pub async fn add_dht_server(&self, peer: PeerId, addrs: Vec<Multiaddr>) -> Result<(), Error> {
        self.tell(Command::AddDhtServer { peer, addrs }).await
    }

    /// Sets (or, with `None`, clears) the encoded entity credential this node presents in the
    /// credential exchange, and presents it to every connected peer at once (after enrolment
    /// or a renewal). DHT servers store this node's provider announcements only once they
    /// hold a valid credential of it.
    pub async fn set_credential(&self, credential: Option<Vec<u8>>) -> Result<(), Error> {
        self.tell(Command::SetCredential { credential }).await
    }

    /// [`Client::set_credential`] without waiting: the command is queued at once (before any
    /// command sent after it), for callers that cannot await. [`Error::Busy`] if the command
    /// queue is full.
    pub fn set_credential_now(&self, credential: Option<Vec<u8>>) -> Result<(), Error> {
        self.commands
            .try_send(Command::SetCredential { credential })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => Error::Busy,
                mpsc::error::TrySendError::Closed(_) => Error::Shutdown,
            })
    }

    /// What the local DHT store holds: own and remote records, bytes, provider records.
    pub async fn store_usage(&self) -> Result<crate::store::StoreUsage, Error> {
        self.call(|reply| Command::StoreUsage { reply }).await
    }

    /// Whether a peer is admitted.
    pub async fn is_admitted(&self, peer: PeerId) -> Result<bool, Error> {
        self.call(|reply| Command::IsAdmitted { peer, reply }).await
    }

    /// Sets this node's home DHT servers (a PNE's PN gateway; at most [`MAX_PUT_TO`]): a
    /// provider lookup then stops early ([`ProvidersQuery::stop_after_answers`]) only once one
    /// of them has answered. The gateway holds every provider record of its household, while
    /// other servers, even honest ones, may hold only some (those that joined after a member
    /// announced, or another user's node announcing the same keywords): two of their answers
    /// ended lookups without the household's own providers (issue 14's soak, shadowing).
    pub async fn set_home_servers(&self, peers: Vec<PeerId>) -> Result<(), Error> {
        self.tell(Command::SetHomeServers { peers }).await
    }

    /// What this node knows of each peer's credential, waiting at most `wait` for those
    /// still pending (a provider lookup dialled them; the credential exchange follows every
    /// new connection). The directory skips providers found [`PeerVerdict::Refused`]: they
    /// cannot have published a record it would accept, and asking them costs a timeout.
    pub async fn credential_verdicts(
        &self,
        peers: Vec<PeerId>,
        wait: Duration,
    ) -> Result<std::collections::HashMap<PeerId, PeerVerdict>, Error> {
        let ask = |wait| {
            let peers = peers.clone();
            self.call(move |reply| Command::CredentialVerdicts { peers, wait, reply })
        };
        match tokio::time::timeout(wait, ask(true)).await {
            Ok(r) => r,
            Err(_) => ask(false).await,
        }
    }

    /// Waits until the routing table holds at least `n` peers, polling every 10 ms, for at
    /// most `timeout`. Returns the size reached.
    pub async fn wait_routing_table(&self, n: usize, timeout: Duration) -> Result<usize, Error> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let size = self.routing_table_size().await?;
            if size >= n || tokio::time::Instant::now() >= deadline {
                return Ok(size);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
