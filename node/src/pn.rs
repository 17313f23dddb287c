//! The PN core: one task owns the node's PN state (spec 5.6.5 and 5.6.9, the change request's
//! B.1 steps 1-26), and everything else talks to it through a cloneable [`Handle`].
//!
//! What the owner holds: the mode and mode setting, the node's own status and capabilities,
//! the registered peers (B.1 steps 1-2), the PN and its member table — the PN Inventory, in
//! memory and in sled, written by this task alone — the status subscriptions it serves, the
//! invitations waiting for the owner's consent, and the progress of every flow (pairing,
//! joining, setting a PN up with `cpns-auth`, admitting PNEs, failover, taking over).
//!
//! * [`actor`]: the task: a biased `select!` over cancellation, commands, finished child jobs
//!   and the heartbeat timer. It applies each command as a plain state transition (no `.await`
//!   inside), then runs the transition's effects: durable writes first (one sled transaction,
//!   flushed), then overlay commands, then replies, then child jobs.
//! * [`state`]: the transitions, unit-tested without a network ([`tests`]).
//! * [`effect`]: what a transition asks for: writes, overlay commands, replies, and slow work
//!   (a dial, a request to a peer, a call to `cpns-auth`) that runs as a child job and posts
//!   its result back as another command.
//! * [`jobs`]: the child jobs' network side.
//! * [`election`]: the gateway election rule (B.1 step 5). [`code`]: pairing codes.
//!
//! Readers that need no change of state (the API's status, the router's authorisation check,
//! the directory's housekeeping) read the [`View`] the actor publishes after every change.

mod actor;
pub(crate) mod code;
pub(crate) mod effect;
pub(crate) mod election;
mod jobs;
pub(crate) mod state;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use cpns_keys::{RevocationList, UnixTime};
use cpns_overlay::{
    AuthMessage, Capabilities, MemberInfo, Message, Multiaddr, NodeMode, PnId, Status, StatusPolicy,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc, oneshot, watch};

pub(crate) use actor::spawn;
pub(crate) use state::{Env, State, gateway_mode, pn_group, preference_of, summary_of};

use crate::config::{CapabilitiesConfig, ModeSetting};
use crate::enrolment::Enrolment;
use crate::error::OpError;

/// A status notification this node received (shown by `cpns status notifications`).
pub use cpns_api::Notification;
/// What a pairing led to.
pub use cpns_api::PairOutcome;
/// An invitation to join a PN, waiting for the owner's answer (`cpns pn invitations`): a
/// device joins a PN of another user only once its owner accepted. Kept in `invitations.v1`.
pub type Invitation = cpns_api::InvitationView;

/// What a node remembers of its PN across restarts (`pn.v1`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Membership {
    /// The PN.
    pub(crate) pn_id: PnId,
    /// Its gateway (this node when it is the gateway).
    pub(crate) gateway: PeerId,
    /// Where the gateway listens.
    pub(crate) gateway_addrs: Vec<Multiaddr>,
    /// The PN's owner user.
    pub(crate) owner: String,
    /// The PN key epoch held.
    pub(crate) epoch: u64,
}

/// One member in the PN Inventory (`inventory.v2`): who it is, its status, its current
/// capabilities and the services it offers. The gateway's table is the PN's inventory; a PNE
/// keeps the gateway's last word, so that it knows its PN offline too.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Member {
    /// Who, mode, status, addresses, credential serial and expiry.
    pub(crate) info: MemberInfo,
    /// Its current capabilities (5.6.1), refreshed on every capabilities update.
    pub(crate) caps: Option<Capabilities>,
    /// Ids of the services it offers the PN.
    pub(crate) services: Vec<String>,
    /// Liveness, kept in memory only: a heartbeat must not cost a disk flush.
    #[serde(skip)]
    pub(crate) live: Liveness,
}

/// What the gateway knows of a member's liveness (volatile).
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Liveness {
    /// When it was last heard from (Unix seconds; 0: not since this node started).
    pub(crate) last_seen: UnixTime,
    /// Its battery at the last report.
    pub(crate) battery: Option<u8>,
    /// Its free memory at the last report.
    pub(crate) free_memory: Option<u64>,
}

/// A peer that registered with this node (B.1 steps 1-2) with a credential that checked out.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Peer {
    /// The mode it claims (checked against its credential).
    pub(crate) mode: NodeMode,
    /// Its capabilities (steps 3-4, 7).
    pub(crate) caps: Option<Capabilities>,
    /// Its user.
    pub(crate) user: String,
    /// Its device name.
    pub(crate) device: String,
    /// Its credential's serial.
    pub(crate) serial: u64,
    /// When its credential expires.
    pub(crate) expires: UnixTime,
    /// Whether its credential allows the gateway mode.
    pub(crate) may_be_gateway: bool,
    /// Its PN, if it said.
    pub(crate) pn_id: Option<String>,
    /// Its gateway, if it said.
    pub(crate) gateway: Option<PeerId>,
    /// Where it listens (at most [`cpns_overlay::MAX_LISTEN_ADDRS`]).
    pub(crate) listen_addrs: Vec<Multiaddr>,
    /// Where its gateway listens.
    pub(crate) gateway_addrs: Vec<Multiaddr>,
    /// Order of registration, for eviction.
    pub(crate) seq: u64,
}

/// The PN as the node knows it: its membership and its member table.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct PnView {
    /// The durable membership.
    pub(crate) membership: Membership,
    /// The PN Inventory's members (this node included).
    pub(crate) members: BTreeMap<PeerId, Member>,
}

impl PnView {
    /// Whether `peer` is a member.
    pub(crate) fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer)
    }
}

/// What the PN actor publishes after every change: a consistent snapshot for readers that
/// change nothing. Cheap to clone (shared parts are behind `Arc`).
#[derive(Clone, Debug)]
pub(crate) struct View {
    /// Increases with every published change.
    pub(crate) version: u64,
    /// This node.
    pub(crate) me: PeerId,
    /// The node's enrolment, once enrolled.
    pub(crate) enrolment: Option<Arc<Enrolment>>,
    /// Current mode.
    pub(crate) mode: NodeMode,
    /// What the owner asked for.
    pub(crate) mode_setting: ModeSetting,
    /// This node's own status (5.6.2).
    pub(crate) status: Status,
    /// This node's current capabilities.
    pub(crate) caps: Capabilities,
    /// The PN, once joined or created.
    pub(crate) pn: Option<Arc<PnView>>,
    /// Registered peers.
    pub(crate) peers: Arc<BTreeMap<PeerId, Peer>>,
    /// Entities this node's PN expelled (refused everywhere).
    pub(crate) expelled: Arc<BTreeSet<PeerId>>,
    /// Invitations waiting for the owner.
    pub(crate) invitations: Arc<Vec<Invitation>>,
    /// Status notifications received, oldest first.
    pub(crate) notifications: Arc<VecDeque<Notification>>,
    /// The capability overrides in force.
    pub(crate) overrides: Arc<CapabilitiesConfig>,
    /// The PN's admin information (5.6.9), as `cpns-auth` last said.
    pub(crate) admin: Option<Arc<cpns_overlay::PnAdminInfo>>,
    /// The heartbeat period in force (an Adminee setting, else the configuration).
    pub(crate) heartbeat: std::time::Duration,
    /// This node's last move by a merge or a split (5.6.9): the PN it left, the PN it moved
    /// to. Not kept across a restart.
    pub(crate) last_move: Option<Arc<(String, String)>>,
}

impl View {
    /// The PN id, if in a PN.
    pub(crate) fn pn_id(&self) -> Option<&str> {
        self.pn.as_ref().map(|p| p.membership.pn_id.as_str())
    }

    /// The PN's gateway, if in a PN.
    pub(crate) fn gateway(&self) -> Option<PeerId> {
        self.pn.as_ref().map(|p| p.membership.gateway)
    }

    /// Whether this node is its PN's gateway.
    pub(crate) fn is_pn_gateway(&self) -> bool {
        self.gateway() == Some(self.me)
    }

    /// This PNE's gateway (none for a gateway or outside a PN).
    pub(crate) fn my_gateway(&self) -> Option<PeerId> {
        self.gateway().filter(|g| *g != self.me)
    }

    /// Whether `peer` is a member of this node's PN.
    pub(crate) fn is_member(&self, peer: &PeerId) -> bool {
        self.pn.as_ref().is_some_and(|p| p.is_member(peer))
    }
}

/// An answer to a peer's request, and (for answers whose follow-up must reach the peer after
/// the answer) a signal to fire once it was handed to the overlay.
pub(crate) struct Answer {
    /// The answer.
    pub(crate) message: Message,
    /// Fired by the router after it sent `message`.
    pub(crate) sent: Option<oneshot::Sender<()>>,
}

/// What a command's reply carries (each [`Handle`] method expects one kind).
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // moved once, through a oneshot
pub(crate) enum Reply {
    /// An answer to a peer.
    Message(Message),
    /// A pairing's outcome.
    Pair(Result<PairOutcome, OpError>),
    /// A PN id (the PN set up or joined, or released).
    Pn(Result<String, OpError>),
    /// A key epoch (after an expulsion).
    Epoch(Result<u64, OpError>),
    /// Done, or why not.
    Done(Result<(), OpError>),
    /// A PN's admin information.
    Admin(Result<cpns_overlay::PnAdminInfo, OpError>),
    /// A merge consent's outcome.
    Merge(Result<cpns_api::MergeView, OpError>),
    /// A split's outcome.
    Split(Result<cpns_api::SplitView, OpError>),
}

/// Who sent an inbound request, as the router's authorisation check classified it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SenderClass {
    /// No valid credential known.
    NotEnrolled,
    /// A valid credential, no shared PN.
    Enrolled,
    /// A member of this node's PN.
    Member,
    /// This node's PN gateway.
    Gateway,
    /// The pinned `cpns-auth`.
    Server,
}

/// The commands the actor takes.
pub(crate) enum Command {
    /// A request from a peer on `/cpns/1.0.0`, already authorised by the router.
    Inbound {
        peer: PeerId,
        class: SenderClass,
        message: Message,
        reply: oneshot::Sender<Answer>,
    },
    /// A request from `cpns-auth` on `/cpns/auth/1.0.0`.
    Server {
        message: AuthMessage,
        reply: oneshot::Sender<Answer>,
    },
    /// An operation of the node's owner (API, CLI, in-process handle).
    Op(Op, oneshot::Sender<Reply>),
    /// Something the node saw that changes no answer.
    Event(Event),
}

/// The owner's operations.
pub(crate) enum Op {
    /// Pair with a device (B.1 steps 1-4, then 5-7 or 18).
    Pair(Multiaddr),
    /// Register with a peer (steps 1-2) before talking to it (a consumer and an offerer of
    /// another household).
    Register(PeerId),
    /// The node was enrolled: take the enrolment (and, in gateway mode, set a PN up).
    Enrolled(Box<Enrolment>),
    /// Set a PN up with `cpns-auth` as its gateway (B.1 6, 8-17).
    Establish,
    /// Leave the PN (G.1 step 9).
    Leave,
    /// Release this gateway's PN.
    Release,
    /// Expel a member (an admin).
    Expel(PeerId),
    /// Invite someone (an admin).
    Invite(cpns_overlay::Invitee),
    /// Change the mode setting.
    SetMode(ModeSetting),
    /// Set this node's status.
    SetStatus(Status),
    /// Replace the capability overrides (validated by the caller).
    SetOverrides(Box<CapabilitiesConfig>),
    /// Subscribe to a member's status here (at this gateway, or this node's own).
    SubscribeLocal(PeerId, StatusPolicy),
    /// Accept an invitation (consent to join that PN).
    Accept(String),
    /// Decline an invitation.
    Decline(String),
    /// A renewed credential (verified by the caller).
    CredentialRenewed(Box<cpns_keys::EntityCredential>),
    /// This node's own services changed (their ids), for the PN Inventory.
    OwnServices(Vec<String>),
    /// The gateway hands its role to a member (5.6.9).
    HandOff(PeerId),
    /// A PN Admin operation (5.6.9).
    Admin(AdminOp),
    /// An admin consents to merging this PN with another (5.6.9).
    Merge(String),
    /// An admin splits members off into a new PN (5.6.9).
    Split(Vec<PeerId>),
}

/// The PN Admin operations (5.6.9, 3.2), each decided by `cpns-auth`.
pub(crate) enum AdminOp {
    /// Ask to be PN Admin.
    Request,
    /// Approve a member's admin request (an admin).
    Approve(PeerId),
    /// Change an Adminee's settings (an admin).
    Set(PeerId, Box<cpns_overlay::AdmineeSettings>),
    /// The PN's admins, pending requests and Adminee settings.
    List,
}

/// What the node saw.
pub(crate) enum Event {
    /// The last connection to a peer closed.
    Disconnected(PeerId),
    /// The overlay listens on a new address.
    ListenAddr(Multiaddr),
    /// A revocation list from anywhere (server session, DHT, a peer's registration).
    Revocations(Box<RevocationList>),
}

/// Capacity of the actor's command channel: senders wait when it is full.
const COMMANDS: usize = 256;

/// A cheap, cloneable handle to the PN actor.
#[derive(Clone)]
pub(crate) struct Handle {
    commands: mpsc::Sender<Command>,
    view: watch::Receiver<Arc<View>>,
    versions: watch::Receiver<u64>,
    notifications: broadcast::Sender<Notification>,
}

fn gone() -> OpError {
    OpError::Unavailable("the node is stopping".into())
}

impl Handle {
    /// The latest snapshot.
    pub(crate) fn view(&self) -> Arc<View> {
        self.view.borrow().clone()
    }

    /// A receiver of every new snapshot.
    pub(crate) fn watch(&self) -> watch::Receiver<Arc<View>> {
        self.view.clone()
    }

    /// The version of every new snapshot.
    pub(crate) fn versions(&self) -> watch::Receiver<u64> {
        self.versions.clone()
    }

    /// Status notifications as they arrive.
    pub(crate) fn notifications(&self) -> broadcast::Receiver<Notification> {
        self.notifications.subscribe()
    }

    async fn op(&self, op: Op) -> Result<Reply, OpError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Op(op, tx))
            .await
            .map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }

    async fn done(&self, op: Op) -> Result<(), OpError> {
        match self.op(op).await? {
            Reply::Done(r) => r,
            // Operations that end when a PN is set up or joined answer with its id.
            Reply::Pn(r) => r.map(|_| ()),
            other => Err(unexpected(other)),
        }
    }

    async fn pn(&self, op: Op) -> Result<String, OpError> {
        match self.op(op).await? {
            Reply::Pn(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Pairs with the device at `addr`.
    pub(crate) async fn pair(&self, addr: Multiaddr) -> Result<PairOutcome, OpError> {
        match self.op(Op::Pair(addr)).await? {
            Reply::Pair(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Registers with `peer` (steps 1-2) unless it is known already.
    pub(crate) async fn register(&self, peer: PeerId) -> Result<(), OpError> {
        self.done(Op::Register(peer)).await
    }

    /// Takes a new enrolment; a node set to be a gateway then sets its PN up.
    pub(crate) async fn enrolled(&self, e: Enrolment) -> Result<(), OpError> {
        self.done(Op::Enrolled(Box::new(e))).await
    }

    /// Sets a PN up as its gateway; returns the PN id.
    pub(crate) async fn establish(&self) -> Result<String, OpError> {
        self.pn(Op::Establish).await
    }

    /// Leaves the PN.
    pub(crate) async fn leave(&self) -> Result<(), OpError> {
        self.done(Op::Leave).await
    }

    /// Releases this gateway's PN; returns its id.
    pub(crate) async fn release(&self) -> Result<String, OpError> {
        self.pn(Op::Release).await
    }

    /// Expels a member; returns the new key epoch.
    pub(crate) async fn expel(&self, member: PeerId) -> Result<u64, OpError> {
        match self.op(Op::Expel(member)).await? {
            Reply::Epoch(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// A PN Admin operation (5.6.9); returns the PN's admin information as `cpns-auth` now
    /// has it.
    pub(crate) async fn admin(&self, op: AdminOp) -> Result<cpns_overlay::PnAdminInfo, OpError> {
        match self.op(Op::Admin(op)).await? {
            Reply::Admin(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// Invites a user or an entity.
    pub(crate) async fn invite(&self, invitee: cpns_overlay::Invitee) -> Result<(), OpError> {
        self.done(Op::Invite(invitee)).await
    }

    /// Changes the mode setting.
    pub(crate) async fn set_mode(&self, setting: ModeSetting) -> Result<(), OpError> {
        self.done(Op::SetMode(setting)).await
    }

    /// Sets this node's own status.
    pub(crate) async fn set_status(&self, status: Status) -> Result<(), OpError> {
        self.done(Op::SetStatus(status)).await
    }

    /// Replaces the capability overrides; returns once the new capabilities are read.
    pub(crate) async fn set_overrides(&self, o: CapabilitiesConfig) -> Result<(), OpError> {
        self.done(Op::SetOverrides(Box::new(o))).await
    }

    /// Subscribes this node to a status it tracks itself.
    pub(crate) async fn subscribe_local(
        &self,
        target: PeerId,
        policy: StatusPolicy,
    ) -> Result<(), OpError> {
        self.done(Op::SubscribeLocal(target, policy)).await
    }

    /// Accepts an invitation: joins that PN; returns its id.
    pub(crate) async fn accept(&self, id: &str) -> Result<String, OpError> {
        self.pn(Op::Accept(id.to_owned())).await
    }

    /// Declines an invitation.
    pub(crate) async fn decline(&self, id: &str) -> Result<(), OpError> {
        self.done(Op::Decline(id.to_owned())).await
    }

    /// Takes a renewed credential (verified) and keeps it in the data dir.
    pub(crate) async fn credential_renewed(
        &self,
        c: cpns_keys::EntityCredential,
    ) -> Result<(), OpError> {
        self.done(Op::CredentialRenewed(Box::new(c))).await
    }

    /// An admin consents to merging this PN with `with`.
    pub(crate) async fn merge(&self, with: String) -> Result<cpns_api::MergeView, OpError> {
        match self.op(Op::Merge(with)).await? {
            Reply::Merge(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// An admin splits `members` off into a new PN.
    pub(crate) async fn split(&self, members: Vec<PeerId>) -> Result<cpns_api::SplitView, OpError> {
        match self.op(Op::Split(members)).await? {
            Reply::Split(r) => r,
            other => Err(unexpected(other)),
        }
    }

    /// The gateway hands its role to `target`.
    pub(crate) async fn hand_off(&self, target: PeerId) -> Result<(), OpError> {
        self.done(Op::HandOff(target)).await
    }

    /// This node's own services changed.
    pub(crate) async fn own_services(&self, ids: Vec<String>) -> Result<(), OpError> {
        self.done(Op::OwnServices(ids)).await
    }

    /// A peer's request (authorised by the router); returns the answer to send.
    pub(crate) async fn inbound(
        &self,
        peer: PeerId,
        class: SenderClass,
        message: Message,
    ) -> Answer {
        let (tx, rx) = oneshot::channel();
        let sent = self
            .commands
            .send(Command::Inbound {
                peer,
                class,
                message,
                reply: tx,
            })
            .await;
        match sent {
            Ok(()) => rx.await.unwrap_or_else(|_| stopping()),
            Err(_) => stopping(),
        }
    }

    /// A request of `cpns-auth`.
    pub(crate) async fn server(&self, message: AuthMessage) -> Answer {
        let (tx, rx) = oneshot::channel();
        match self
            .commands
            .send(Command::Server { message, reply: tx })
            .await
        {
            Ok(()) => rx.await.unwrap_or_else(|_| stopping()),
            Err(_) => stopping(),
        }
    }

    /// Tells the actor what the node saw (never waits when the actor is busy: an event that
    /// does not fit is dropped and logged, a revocation list is retried by its sender).
    pub(crate) fn event(&self, e: Event) {
        if let Err(e) = self.commands.try_send(Command::Event(e)) {
            tracing::debug!("PN actor busy: event dropped ({e})");
        }
    }

    /// Offers a revocation list (waits for room: revocations must not be dropped).
    pub(crate) async fn offer_revocations(&self, list: RevocationList) {
        let _ = self
            .commands
            .send(Command::Event(Event::Revocations(Box::new(list))))
            .await;
    }
}

fn stopping() -> Answer {
    Answer {
        message: Message::error(cpns_overlay::ErrorCode::Busy, "the node is stopping"),
        sent: None,
    }
}

fn unexpected(r: Reply) -> OpError {
    OpError::Internal(format!("the PN actor answered {r:?}"))
}
