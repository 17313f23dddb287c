//! The PN actor's state and its transitions. Nothing here awaits or touches the network: each
//! transition changes the state and pushes [`Effect`]s; slow work is a [`Job`] whose outcome
//! comes back through [`State::on_done`] with what it was for (its [`Purpose`]).
//!
//! The transitions are grouped by flow, one file each: [`registration`] (B.1 steps 1-7 and
//! pairing), [`joining`] (the PNE's side: 18, 24-26, updates, leaving), [`gateway`] (the
//! gateway's side: 6, 8-17, admitting PNEs 18-26, removing members, release), [`status`]
//! (5.6.2: heartbeats, queries, subscriptions, the periodic tick), [`switch`] (5.6.9:
//! failover, take-over, gateway changes), [`owner`] (the owner's other operations: enrolment,
//! renewal, revocations, modes, invitations, services).

mod admin;
mod gateway;
mod invitations;
mod joining;
mod merge;
mod owner;
mod registration;
mod status;
mod switch;

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;

use cpns_directory::Trust;
use cpns_keys::{GroupId, Identity, UnixTime};
use cpns_overlay::{
    AuthMessage, Capabilities, ConnectionSetup, ErrorCode, GatewayPreference, Message, Multiaddr,
    NodeMode, PnMessage, Status, StatusMessage, StatusPolicy,
};
use libp2p::PeerId;

use super::effect::{Done, Effect, Fx, Job, JobId, WaiterId};
use super::{
    Event as PnEvent, Invitation, Member, Membership, Op, PnView, Reply, SenderClass, View,
};
use crate::caps;
use crate::config::{CapabilitiesConfig, Config, ModeSetting};
use crate::enrolment::Enrolment;
use crate::error::OpError;
use crate::metrics::Metrics;
use crate::pn::Notification;
use crate::store::{self, PnStored, PnWrite};
use crate::trace::Trace;

pub(crate) use gateway::summary_of;

/// Most registered peers remembered; the oldest non-members go first (and are un-admitted).
pub(crate) const MAX_PEERS: usize = 4096;
/// Most members a PN's member table holds (what a gateway sends is cut there).
pub(crate) const MAX_MEMBERS: usize = 1024;
/// Most admissions (B.1 18-26) a gateway runs at once.
const MAX_ADMISSIONS: usize = 64;
/// Most subscribers per target, and most targets with subscribers.
const MAX_SUBSCRIBERS_PER_TARGET: usize = 64;
const MAX_SUBSCRIBED_TARGETS: usize = 1024;
/// Notifications kept for the local user.
const MAX_NOTIFICATIONS: usize = 256;
/// Invitations kept waiting for the owner.
const MAX_INVITATIONS: usize = 32;

/// What the state needs of the node that never changes: who it is, its settings, and where
/// it records steps and counts.
#[derive(Clone)]
pub(crate) struct Env {
    pub(crate) me: PeerId,
    pub(crate) identity: Identity,
    pub(crate) config: Arc<Config>,
    pub(crate) trace: Arc<Trace>,
    pub(crate) metrics: Arc<Metrics>,
}

/// The group id of a PN's key.
pub(crate) fn pn_group(pn_id: &str) -> GroupId {
    GroupId(pn_id.to_string())
}

/// The gateway mode a setting asks for, if it asks for one.
pub(crate) fn gateway_mode(setting: ModeSetting) -> Option<NodeMode> {
    match setting {
        ModeSetting::Gateway => Some(NodeMode::PneGateway),
        ModeSetting::GatewayOnly => Some(NodeMode::Gateway),
        ModeSetting::Auto | ModeSetting::Pne => None,
    }
}

/// The owner's gateway preference under a mode setting.
pub(crate) fn preference_of(config: &Config, setting: ModeSetting) -> GatewayPreference {
    match setting {
        ModeSetting::Pne => GatewayPreference::Never,
        ModeSetting::Gateway | ModeSetting::GatewayOnly => GatewayPreference::Always,
        ModeSetting::Auto => config.gateway_preference.parse().unwrap_or_default(),
    }
}

/// What a job was for.
#[derive(Debug)]
pub(super) enum Purpose {
    /// Pairing, initiator: the dial, then steps 1-2, then 3-4.
    PairDial {
        waiter: WaiterId,
    },
    /// `full`: the registration sent carried this node's PN details (see
    /// `State::first_registration`).
    PairRegister {
        waiter: WaiterId,
        peer: PeerId,
        full: bool,
    },
    PairCaps {
        waiter: WaiterId,
        peer: PeerId,
    },
    /// Steps 1-2 for the owner (before talking to an offerer of another household).
    RegisterOp {
        waiter: WaiterId,
        peer: PeerId,
        full: bool,
    },
    /// Joining: steps 1-2 with the gateway, then the step-18 request.
    JoinRegister,
    JoinSetup,
    /// After a restart: reach the gateway, register, ask for the inventory.
    ResumeDial,
    ResumeRegister,
    ResumeInventory,
    /// Setting the PN up with `cpns-auth` (steps 8-11, 12-13), and its time limit.
    EstablishAuth,
    EstablishCaps,
    EstablishTimeout {
        generation: u64,
    },
    /// Admitting a PNE: steps 19-21, 22-23, 24-25.
    AdmitMembership {
        flow: u64,
    },
    AdmitKey {
        flow: u64,
    },
    AdmitGrant {
        flow: u64,
    },
    /// Leaving (a PNE), a member leaving or revoked (the gateway), release, expel, invite.
    Leave {
        waiter: WaiterId,
    },
    Deregister {
        peer: PeerId,
        waiter: Option<WaiterId>,
    },
    Release {
        waiter: WaiterId,
        pn_id: String,
    },
    Expel {
        waiter: WaiterId,
        member: PeerId,
    },
    /// A PN Admin request to `cpns-auth` (5.6.9).
    Admin {
        waiter: WaiterId,
    },
    /// 5.6.9: a merge consent, a split, and where this node's PN went after one.
    Merge {
        waiter: WaiterId,
    },
    Split {
        waiter: WaiterId,
    },
    MoveLookup,
    /// The grants after members were removed at `cpns-auth` by another admin, and who
    /// (with whether expelled).
    Reconcile {
        removed: Vec<(PeerId, bool)>,
    },
    Invite {
        waiter: WaiterId,
    },
    /// A key push for a member, forwarded (5.6.6).
    /// 5.6.9: the gateway hands its role to a member.
    HandOff {
        waiter: WaiterId,
        target: PeerId,
    },
    ForwardKeys {
        waiter: WaiterId,
    },
    /// The periodic heartbeat to the gateway.
    Heartbeat,
    /// A capabilities read, and what it was for.
    ReadCaps(CapsThen),
    /// 5.6.9: whether a claimed gateway change is the server's word.
    GatewayChangeCheck {
        claimed: PeerId,
        addrs: Vec<Multiaddr>,
    },
    /// 5.6.9: whether the server still names this node the gateway.
    StillGateway,
    /// 5.6.9 failover: the server's PN record, a last probe of the gateway, a wait.
    FailoverInfo,
    FailoverProbe {
        members: Vec<PeerId>,
    },
    FailoverWait,
    /// The enrolment file was written; then resolve, and use the new enrolment.
    SaveEnrolment {
        waiter: Option<WaiterId>,
        then: Option<Arc<Enrolment>>,
    },
    /// The invitations waiting at `cpns-auth` (5.6.9), and declining one of them.
    Invitations,
    Decline {
        waiter: WaiterId,
        id: String,
    },
    /// Nobody waits for the outcome.
    Ignore,
}

/// What a capabilities read was for.
#[derive(Debug)]
pub(super) enum CapsThen {
    /// The periodic tick: report, heartbeat, checks.
    Tick,
    /// New overrides: report at once, then answer the owner.
    Overrides(WaiterId),
}

/// A join in progress (one at a time).
#[derive(Debug)]
pub(super) struct Joining {
    gateway: PeerId,
    addrs: Vec<Multiaddr>,
    waiters: Vec<WaiterId>,
    /// The owner agreed (the gateway is of another user, and an invitation was accepted).
    consented: bool,
    /// The key grant cpns-auth issued this entity for the PN (step 24): without it, a step 26
    /// proves nothing.
    grant: Option<(String, u64)>,
    /// The PN this node was in before (a re-join through a new gateway): restored on failure.
    previous: Option<Arc<PnView>>,
    setup_sent: bool,
}

/// Stages of setting a PN up.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum EstablishStage {
    Authenticating,
    CapabilitiesSent,
    AwaitingInventory,
}

/// Setting the PN up with `cpns-auth` (one at a time).
#[derive(Debug)]
pub(super) struct Establishing {
    stage: EstablishStage,
    /// The gateway this node takes the role over from (5.6.9), if it does.
    take_over: Option<PeerId>,
    waiters: Vec<WaiterId>,
    /// A step-14 request that arrived before step 13's answer: answered in protocol order.
    deferred_status: Option<WaiterId>,
    /// PNEs' connection setups waiting for the PN to exist.
    queued: Vec<(WaiterId, PeerId, Box<ConnectionSetup>)>,
    generation: u64,
}

/// A PNE being admitted (B.1 19-25 at the gateway).
#[derive(Debug)]
pub(super) struct Admission {
    peer: PeerId,
    waiter: WaiterId,
    pn_id: String,
    setup: Box<ConnectionSetup>,
    epoch: u64,
    grants: Vec<cpns_overlay::MemberGrant>,
    member: Option<cpns_overlay::MemberInfo>,
    /// The members the step-24 list named: another admission confirmed meanwhile makes it
    /// stale, and the new member is then sent the list again.
    listed: Vec<PeerId>,
}

/// A failover in progress (5.6.9).
#[derive(Debug)]
pub(super) struct Failover {
    pn_id: String,
    silent: PeerId,
    round: usize,
}

/// The PN actor's state.
pub(crate) struct State {
    env: Env,
    enrolment: Option<Arc<Enrolment>>,
    trust: Option<Arc<Trust>>,
    mode: NodeMode,
    mode_setting: ModeSetting,
    status: Status,
    caps: Capabilities,
    overrides: Arc<CapabilitiesConfig>,
    reader: Option<Box<caps::Reader>>,
    /// Reads asked for while the reader was out.
    caps_waiting: Vec<CapsThen>,
    listen_addrs: Vec<Multiaddr>,
    peers: Arc<BTreeMap<PeerId, super::Peer>>,
    peer_seq: u64,
    pn: Option<Arc<PnView>>,
    expelled: Arc<BTreeSet<PeerId>>,
    invitations: Arc<Vec<Invitation>>,
    notifications: Arc<VecDeque<Notification>>,
    subscriptions: HashMap<PeerId, Vec<(PeerId, StatusPolicy)>>,
    own_services: Vec<String>,
    next: u64,
    jobs: HashMap<JobId, Purpose>,
    joining: Option<Joining>,
    establishing: Option<Establishing>,
    admissions: HashMap<u64, Admission>,
    failover: Option<Failover>,
    /// When this PNE last heard from its gateway (0: not yet).
    gateway_heard: UnixTime,
    /// When this gateway last asked whether it still is the gateway of record.
    gateway_checked: UnixTime,
    /// Whether a server lookup about the gateway (a change claimed, or still ours) runs.
    gateway_lookup: bool,
    /// The PN's admin information (5.6.9), as `cpns-auth` last said.
    admin: Option<Arc<cpns_overlay::PnAdminInfo>>,
    /// At a gateway: how many more heartbeats of each member are answered with the member
    /// list again (see `status::on_heartbeat`). Only members have entries.
    relist: BTreeMap<PeerId, u8>,
    /// When to ask `cpns-auth` for invitations next (0: at the first tick).
    invitations_polled: UnixTime,
    /// 5.6.9: the PN this node moved from (a merge or a split) until it is in the PN it moved
    /// to, and when to ask `cpns-auth` again where that is (a join that failed is retried).
    moving: Option<(String, UnixTime)>,
    /// 5.6.9: this node's last move, the PN it left and the PN it moved to (readers re-scope
    /// the node's services and withdraw a released PN's summary from it).
    last_move: Option<Arc<(String, String)>>,
    version: u64,
}

impl State {
    /// The state at start: the enrolment (if any), what the store kept, where the overlay
    /// listens, and the first capabilities read.
    pub(crate) fn new(
        env: Env,
        enrolment: Option<Enrolment>,
        stored: PnStored,
        listen_addrs: Vec<Multiaddr>,
        caps: Capabilities,
        reader: Box<caps::Reader>,
    ) -> State {
        let mode_setting = env.config.mode;
        let mut mode = gateway_mode(mode_setting).unwrap_or(NodeMode::Pne);
        let trust = enrolment
            .as_ref()
            .map(|e| Arc::new(Trust::new(e.ca, e.revocations.clone())));
        let membership: Option<Membership> = stored.membership.as_deref().and_then(store::decode);
        let mut members = BTreeMap::new();
        for (_, bytes) in &stored.members {
            if let Some(m) = store::decode::<Member>(bytes) {
                members.insert(m.info.peer_id, m);
            }
        }
        let pn = membership.map(|membership| {
            if membership.gateway == env.me && mode == NodeMode::Pne {
                mode = NodeMode::PneGateway;
            }
            Arc::new(PnView {
                membership,
                members,
            })
        });
        let expelled: BTreeSet<PeerId> = stored
            .expelled
            .as_deref()
            .and_then(store::decode::<Vec<PeerId>>)
            .unwrap_or_default()
            .into_iter()
            .collect();
        let invitations: Vec<Invitation> = stored
            .invitations
            .iter()
            .filter_map(|(_, b)| store::decode(b))
            .collect();
        let admin = stored
            .admin
            .as_deref()
            .and_then(store::decode::<cpns_overlay::PnAdminInfo>)
            .filter(|a| pn.as_ref().is_some_and(|p| p.membership.pn_id == a.pn_id))
            .map(Arc::new);
        let overrides = Arc::new(env.config.capabilities.clone());
        let mut caps = caps;
        caps.mode = mode;
        State {
            enrolment: enrolment.map(Arc::new),
            trust,
            mode,
            mode_setting,
            status: Status::Online,
            caps,
            overrides,
            reader: Some(reader),
            caps_waiting: Vec::new(),
            listen_addrs,
            peers: Arc::default(),
            peer_seq: 0,
            pn,
            expelled: Arc::new(expelled),
            invitations: Arc::new(invitations),
            notifications: Arc::default(),
            subscriptions: HashMap::new(),
            own_services: Vec::new(),
            next: 1,
            jobs: HashMap::new(),
            joining: None,
            establishing: None,
            admissions: HashMap::new(),
            failover: None,
            gateway_heard: 0,
            gateway_checked: 0,
            gateway_lookup: false,
            admin,
            invitations_polled: 0,
            moving: None,
            last_move: stored
                .last_move
                .as_deref()
                .and_then(store::decode::<(String, String)>)
                .map(Arc::new),
            relist: BTreeMap::new(),
            version: 0,
            env,
        }
    }

    /// What the node does right after start: admit the members it knows (offline first),
    /// then a gateway sets its PN up with `cpns-auth` again (steps 8-17; the server updates the
    /// PN it has), and a PNE reconnects to its gateway.
    pub(crate) fn on_start(&mut self, fx: &mut Fx) {
        if self.enrolment.is_none() {
            return;
        }
        if let Some(pn) = self.pn.clone() {
            self.admit_members(pn.members.values().map(|m| &m.info), fx);
        }
        let is_gateway = self.pn.as_ref().map(|p| p.membership.gateway) == Some(self.env.me)
            || (self.pn.is_none() && self.mode_setting.is_gateway());
        if is_gateway {
            self.start_establish(None, Vec::new(), fx);
        } else if self.pn.is_some() {
            self.resume(fx);
        }
    }

    /// The snapshot readers see.
    pub(crate) fn view(&self) -> View {
        View {
            version: self.version,
            me: self.env.me,
            enrolment: self.enrolment.clone(),
            mode: self.mode,
            mode_setting: self.mode_setting,
            status: self.status.clone(),
            caps: self.caps.clone(),
            pn: self.pn.clone(),
            peers: self.peers.clone(),
            expelled: self.expelled.clone(),
            invitations: self.invitations.clone(),
            notifications: self.notifications.clone(),
            overrides: self.overrides.clone(),
            admin: self.admin.clone(),
            heartbeat: self.heartbeat_period(),
            last_move: self.last_move.clone(),
        }
    }

    /// The trace's events (tests).
    #[cfg(test)]
    pub(crate) fn trace_events(&self) -> Vec<crate::trace::TraceEvent> {
        self.env.trace.events()
    }

    /// Counts a published change.
    pub(crate) fn bump(&mut self) {
        self.version += 1;
    }

    /// The trust anchor, once enrolled.
    pub(crate) fn trust(&self) -> Option<Arc<Trust>> {
        self.trust.clone()
    }

    /// An owner's operation.
    pub(crate) fn on_op(&mut self, op: Op, waiter: WaiterId, fx: &mut Fx) {
        match op {
            Op::Pair(addr) => self.pair(addr, waiter, fx),
            Op::Register(peer) => self.register_op(peer, waiter, fx),
            Op::Enrolled(e) => self.enrolled(*e, waiter, fx),
            Op::Establish => self.establish_op(waiter, fx),
            Op::Leave => self.leave_op(waiter, fx),
            Op::Release => self.release_op(waiter, fx),
            Op::Expel(m) => self.expel_op(m, waiter, fx),
            Op::Invite(i) => self.invite_op(i, waiter, fx),
            Op::SetMode(s) => self.set_mode_op(s, waiter, fx),
            Op::SetStatus(s) => self.set_status_op(s, waiter, fx),
            Op::SetOverrides(o) => self.set_overrides_op(*o, waiter, fx),
            Op::SubscribeLocal(target, policy) => {
                let r = self.add_subscriber(target, self.env.me, policy);
                fx.resolve(waiter, Reply::Done(r));
            }
            Op::Accept(id) => self.accept_op(&id, waiter, fx),
            Op::Decline(id) => self.decline_op(&id, waiter, fx),
            Op::CredentialRenewed(c) => self.credential_renewed(*c, waiter, fx),
            Op::OwnServices(ids) => self.own_services_op(ids, waiter, fx),
            Op::HandOff(target) => self.hand_off_op(target, waiter, fx),
            Op::Admin(op) => self.admin_op(op, waiter, fx),
            Op::Merge(with) => self.merge_op(with, waiter, fx),
            Op::Split(members) => self.split_op(members, waiter, fx),
        }
    }

    /// A peer's request on `/cpns/1.0.0`, already authorised for `class`. `None`: the answer
    /// comes later (through the waiter).
    pub(crate) fn on_inbound(
        &mut self,
        peer: PeerId,
        class: SenderClass,
        message: Message,
        waiter: WaiterId,
        fx: &mut Fx,
    ) -> Option<Message> {
        match message {
            Message::Pn(m) => self.on_pn(peer, class, m, waiter, fx),
            Message::Status(m) => Some(self.on_status(peer, class, m, fx)),
            Message::Group(cpns_overlay::GroupMessage::KeyForward { grants }) => {
                Some(self.on_key_forward(peer, grants, fx))
            }
            other => Some(Message::error(
                ErrorCode::Unsupported,
                format!("{} is not handled by the PN", other.name()),
            )),
        }
    }

    fn on_pn(
        &mut self,
        peer: PeerId,
        class: SenderClass,
        m: PnMessage,
        waiter: WaiterId,
        fx: &mut Fx,
    ) -> Option<Message> {
        Some(match m {
            PnMessage::EntityRegistration(reg) => self.on_registration(peer, reg, fx),
            PnMessage::CapabilitiesExchange(caps) => self.on_caps_exchange(peer, caps, fx),
            PnMessage::CapabilitiesUpdate(caps) => self.on_caps_update(peer, class, caps, fx),
            PnMessage::ConnectionSetupRequest(setup) => {
                return self.on_connection_setup(peer, Box::new(setup), waiter, fx);
            }
            PnMessage::MembershipWithGroupKey(grant) => {
                self.on_membership_with_key(peer, grant, fx)
            }
            PnMessage::MembershipUpdate(grant) => self.on_membership_update(peer, grant, fx),
            PnMessage::Leave { pn_id } => return self.on_leave(peer, pn_id, waiter, fx),
            PnMessage::InventoryRequest { pn_id } => self.on_inventory_request(&pn_id),
            PnMessage::Revocations(list) => {
                self.on_revocations(list, fx);
                Message::Ack
            }
            PnMessage::GatewayChanged { pn_id, addrs } => {
                self.on_gateway_changed(peer, pn_id, addrs, fx)
            }
            PnMessage::ServicesUpdate { pn_id, services } => {
                self.on_services_update(peer, &pn_id, services, fx)
            }
            PnMessage::MembersUpdate {
                pn_id,
                members,
                expelled,
            } => self.on_members_update(peer, pn_id, members, expelled, fx),
            PnMessage::HandOff { pn_id } => return self.on_hand_off(peer, pn_id, waiter, fx),
            PnMessage::AdminChanged(info) => self.on_admin_changed(peer, info, fx),
            other => Message::error(
                ErrorCode::Unsupported,
                format!("{} is not handled by the PN", other.name()),
            ),
        })
    }

    fn on_status(
        &mut self,
        peer: PeerId,
        class: SenderClass,
        m: StatusMessage,
        fx: &mut Fx,
    ) -> Message {
        match m {
            StatusMessage::Query { target } => self.on_query(target),
            StatusMessage::Subscribe { target, policy } => {
                if target != self.env.me && !self.is_member(&target) {
                    return Message::error(
                        ErrorCode::NotFound,
                        "subscribe at the target or at its gateway",
                    );
                }
                match self.add_subscriber(target, peer, policy) {
                    Ok(()) => Message::Ack,
                    Err(e) => Message::error(ErrorCode::Busy, e.to_string()),
                }
            }
            StatusMessage::Unsubscribe { target } => {
                self.remove_subscriber(&target, &peer);
                Message::Ack
            }
            StatusMessage::Notify {
                target,
                status,
                battery_percent,
                trigger,
                ..
            } => self.on_notify(peer, class, target, status, battery_percent, trigger, fx),
            StatusMessage::Heartbeat {
                status,
                battery_percent,
                free_memory_bytes,
            } => self.on_heartbeat(peer, status, battery_percent, free_memory_bytes, fx),
            StatusMessage::Report { .. } => {
                Message::error(ErrorCode::BadRequest, "a report answers a query")
            }
        }
    }

    /// A request of `cpns-auth`. `None`: answered later.
    pub(crate) fn on_server(
        &mut self,
        m: AuthMessage,
        waiter: WaiterId,
        fx: &mut Fx,
    ) -> Option<Message> {
        match m {
            AuthMessage::StatusUpdateRequest => self.on_status_update_request(waiter, fx),
            AuthMessage::PnInventoryCreated { pn, key } => {
                Some(self.on_inventory_created(&pn, &key, fx))
            }
            AuthMessage::KeyPush { member, grants } => self.on_key_push(member, grants, waiter, fx),
            AuthMessage::Revocations(list) => {
                self.on_revocations(list, fx);
                Some(Message::Ack)
            }
            AuthMessage::PnChanged { info, admin } => Some(self.on_pn_changed(info, admin, fx)),
            AuthMessage::PnRelease { pn_id } => Some(self.on_released_by_admin(pn_id, fx)),
            AuthMessage::PnInvitation(info) => Some(self.on_server_invitation(info, fx)),
            AuthMessage::PnMoved { from, to } => Some(self.on_moved(from, to, fx)),
            other => Some(Message::error(
                ErrorCode::Unsupported,
                format!("{} is not a server-to-node request", other.name()),
            )),
        }
    }

    /// Something the node saw.
    pub(crate) fn on_event(&mut self, e: PnEvent, fx: &mut Fx) {
        match e {
            PnEvent::Disconnected(peer) => self.on_disconnected(peer, fx),
            PnEvent::ListenAddr(a) => {
                if !self.listen_addrs.contains(&a)
                    && self.listen_addrs.len() < cpns_overlay::MAX_LISTEN_ADDRS
                {
                    self.listen_addrs.push(a);
                }
            }
            PnEvent::Revocations(list) => self.on_revocations(*list, fx),
        }
    }

    /// A job came back.
    pub(crate) fn on_done(&mut self, id: JobId, done: Done, fx: &mut Fx) {
        let Some(purpose) = self.jobs.remove(&id) else {
            return;
        };
        match purpose {
            Purpose::PairDial { waiter } => self.pair_dialed(waiter, done, fx),
            Purpose::PairRegister { waiter, peer, full } => {
                self.pair_registered(waiter, peer, full, done, fx)
            }
            Purpose::PairCaps { waiter, peer } => self.pair_exchanged(waiter, peer, done, fx),
            Purpose::RegisterOp { waiter, peer, full } => {
                self.registered_op(waiter, peer, full, done, fx)
            }
            Purpose::JoinRegister => self.join_registered(done, fx),
            Purpose::JoinSetup => self.join_answered(done, fx),
            Purpose::ResumeDial => self.resume_dialed(done, fx),
            Purpose::ResumeRegister => self.resume_registered(done, fx),
            Purpose::ResumeInventory => self.resume_inventory(done, fx),
            Purpose::EstablishAuth => self.establish_authenticated(done, fx),
            Purpose::EstablishCaps => self.establish_caps(done, fx),
            Purpose::EstablishTimeout { generation } => self.establish_timeout(generation, fx),
            Purpose::AdmitMembership { flow } => self.admit_membership(flow, done, fx),
            Purpose::AdmitKey { flow } => self.admit_key(flow, done, fx),
            Purpose::AdmitGrant { flow } => self.admit_grant(flow, done, fx),
            Purpose::Leave { waiter } => self.left(waiter, done, fx),
            Purpose::Deregister { peer, waiter } => self.deregistered(peer, waiter, done, fx),
            Purpose::Release { waiter, pn_id } => self.released(waiter, pn_id, done, fx),
            Purpose::Expel { waiter, member } => self.expelled(waiter, member, done, fx),
            Purpose::Invite { waiter } => {
                let r = match done {
                    Done::Auth(Ok(_)) => Ok(()),
                    Done::Auth(Err(e)) => Err(e),
                    other => Err(unexpected(&other)),
                };
                fx.resolve(waiter, Reply::Done(r));
            }
            Purpose::ForwardKeys { waiter } => {
                let m = match done {
                    Done::Answer(Ok(_)) => Message::Ack,
                    Done::Answer(Err(e)) => {
                        Message::error(ErrorCode::Busy, format!("member unreachable: {e}"))
                    }
                    other => Message::error(ErrorCode::Internal, unexpected(&other).to_string()),
                };
                fx.resolve(waiter, Reply::Message(m));
            }
            Purpose::HandOff { waiter, target } => self.handed_off(waiter, target, done, fx),
            Purpose::Admin { waiter } => self.admin_answered(waiter, done, fx),
            Purpose::Merge { waiter } => self.merge_answered(waiter, done, fx),
            Purpose::Split { waiter } => self.split_answered(waiter, done, fx),
            Purpose::MoveLookup => self.move_looked_up(done, fx),
            Purpose::Reconcile { removed } => self.reconciled(removed, done, fx),
            Purpose::Heartbeat => {
                let answered = matches!(done, Done::Heartbeat(true));
                self.watch_gateway(answered, fx);
            }
            Purpose::ReadCaps(then) => self.caps_read(then, done, fx),
            Purpose::GatewayChangeCheck { claimed, addrs } => {
                self.gateway_change_checked(claimed, addrs, done, fx)
            }
            Purpose::StillGateway => self.still_gateway(done, fx),
            Purpose::FailoverInfo => self.failover_info(done, fx),
            Purpose::FailoverProbe { members } => self.failover_probe(members, done, fx),
            Purpose::FailoverWait => self.failover_round(fx),
            Purpose::SaveEnrolment { waiter, then } => self.enrolment_saved(waiter, then, done, fx),
            Purpose::Invitations => self.invitations_answered(done, fx),
            Purpose::Decline { waiter, id } => self.decline_answered(waiter, &id, done, fx),
            Purpose::Ignore => {
                if let Done::Auth(Err(e)) | Done::Dialed(Err(e)) | Done::Saved(Err(e)) = &done {
                    tracing::debug!("background request failed: {e}");
                }
            }
        }
    }

    /// A job ended without reporting (it panicked or was cancelled): its flow must not wait
    /// for ever, so it fails as if the network had.
    pub(crate) fn on_lost(&mut self, id: JobId, fx: &mut Fx) {
        if self.jobs.contains_key(&id) {
            let lost = OpError::Internal("a background job of the PN failed".into());
            let done = match self.jobs.get(&id) {
                Some(Purpose::ReadCaps(_)) => {
                    // The reader went with the job: read without one from now on.
                    self.reader = Some(Box::default());
                    self.jobs.remove(&id);
                    return;
                }
                Some(Purpose::Heartbeat | Purpose::FailoverProbe { .. }) => Done::Heartbeat(false),
                Some(Purpose::FailoverWait | Purpose::EstablishTimeout { .. }) => Done::Slept,
                Some(Purpose::PairDial { .. } | Purpose::ResumeDial) => Done::Dialed(Err(lost)),
                Some(Purpose::SaveEnrolment { .. }) => Done::Saved(Err(lost)),
                Some(
                    Purpose::EstablishAuth
                    | Purpose::EstablishCaps
                    | Purpose::AdmitMembership { .. }
                    | Purpose::AdmitKey { .. }
                    | Purpose::Deregister { .. }
                    | Purpose::Release { .. }
                    | Purpose::Expel { .. }
                    | Purpose::Invite { .. }
                    | Purpose::Admin { .. }
                    | Purpose::Merge { .. }
                    | Purpose::Split { .. }
                    | Purpose::MoveLookup
                    | Purpose::Reconcile { .. }
                    | Purpose::GatewayChangeCheck { .. }
                    | Purpose::StillGateway
                    | Purpose::FailoverInfo,
                ) => {
                    if matches!(self.jobs.get(&id), Some(Purpose::EstablishAuth)) {
                        Done::Authenticated(Err(lost))
                    } else {
                        Done::Auth(Err(lost))
                    }
                }
                _ => Done::Answer(Err(cpns_overlay::Error::Shutdown)),
            };
            self.on_done(id, done, fx);
        }
    }

    // ---- shared helpers -------------------------------------------------------------------

    fn id(&mut self) -> u64 {
        let id = self.next;
        self.next += 1;
        id
    }

    /// Starts a job for `purpose`.
    fn spawn(&mut self, purpose: Purpose, job: Job, fx: &mut Fx) {
        let id = self.id();
        self.jobs.insert(id, purpose);
        fx.job(id, job);
    }

    /// Records a step in the trace and counts it.
    fn trace(
        &self,
        flow: &str,
        step: u32,
        from: &PeerId,
        to: &PeerId,
        message: &str,
        detail: impl Into<String>,
    ) {
        self.env.trace.record(flow, step, from, to, message, detail);
        self.env.metrics.traced(flow);
    }

    fn me(&self) -> PeerId {
        self.env.me
    }

    fn server(&self) -> Option<PeerId> {
        self.enrolment.as_ref().map(|e| e.server)
    }

    fn enrolment(&self) -> Result<Arc<Enrolment>, OpError> {
        self.enrolment.clone().ok_or_else(|| {
            OpError::Conflict("this node is not enrolled: run `cpns up --code CODE` (codes come from `cpns-auth enrol create`)".into())
        })
    }

    fn is_member(&self, peer: &PeerId) -> bool {
        self.pn.as_ref().is_some_and(|p| p.is_member(peer))
    }

    fn pn_id(&self) -> Option<String> {
        self.pn.as_ref().map(|p| p.membership.pn_id.clone())
    }

    fn is_pn_gateway(&self) -> bool {
        self.pn
            .as_ref()
            .is_some_and(|p| p.membership.gateway == self.env.me)
    }

    /// The PN, to change (copied first if a published view still shares it).
    fn pn_mut(&mut self) -> Option<&mut PnView> {
        self.pn.as_mut().map(Arc::make_mut)
    }

    fn preference(&self) -> GatewayPreference {
        preference_of(&self.env.config, self.mode_setting)
    }

    /// Writes the membership record (or its removal).
    fn persist_membership(&self, fx: &mut Fx) {
        let bytes = match &self.pn {
            Some(p) => match store::encode(&p.membership) {
                Ok(b) => Some(b),
                Err(e) => {
                    tracing::warn!("membership not encoded: {e}");
                    return;
                }
            },
            None => None,
        };
        fx.push(Effect::Persist(PnWrite::Membership(bytes)));
    }

    /// Writes one member of the inventory (or its removal).
    fn persist_member(&self, peer: &PeerId, fx: &mut Fx) {
        let value = self
            .pn
            .as_ref()
            .and_then(|p| p.members.get(peer))
            .and_then(|m| store::encode(m).ok());
        fx.push(Effect::Persist(PnWrite::Member(peer.to_bytes(), value)));
    }

    /// Rewrites the whole inventory (after a join or a PN set-up).
    fn persist_inventory(&self, fx: &mut Fx) {
        fx.push(Effect::Persist(PnWrite::ClearInventory));
        if let Some(pn) = &self.pn {
            for peer in pn.members.keys() {
                self.persist_member(peer, fx);
            }
        }
    }

    fn persist_expelled(&self, fx: &mut Fx) {
        let list: Vec<PeerId> = self.expelled.iter().copied().collect();
        if let Ok(b) = store::encode(&list) {
            fx.push(Effect::Persist(PnWrite::Expelled(b)));
        }
    }

    /// Admits the members of a member list (B.1: PN members talk to each other without
    /// registering pairwise; the list comes from the gateway, which cpns-auth vouched for),
    /// until each one's credential ends.
    fn admit_members<'a>(
        &self,
        members: impl Iterator<Item = &'a cpns_overlay::MemberInfo>,
        fx: &mut Fx,
    ) {
        for m in members {
            if m.peer_id == self.env.me
                || self.expelled.contains(&m.peer_id)
                || self.revoked(m.serial)
            {
                continue;
            }
            if !m.listen_addrs.is_empty() {
                fx.push(Effect::AddAddrs {
                    peer: m.peer_id,
                    addrs: m
                        .listen_addrs
                        .iter()
                        .take(cpns_overlay::MAX_LISTEN_ADDRS)
                        .cloned()
                        .collect(),
                });
            }
            let until = if m.expires == 0 {
                UnixTime::MAX
            } else {
                m.expires
            };
            fx.push(Effect::Admit {
                peer: m.peer_id,
                until,
            });
        }
    }

    /// Un-admits a former member unless it registered with this node itself.
    fn unadmit_former(&self, peer: &PeerId, fx: &mut Fx) {
        let registered = self.peers.contains_key(peer) && !self.expelled.contains(peer);
        if !registered {
            fx.push(Effect::Unadmit(*peer));
        }
    }

    /// Whether a credential serial is revoked.
    fn revoked(&self, serial: u64) -> bool {
        self.trust
            .as_ref()
            .is_some_and(|t| t.revocations().contains(serial))
    }

    /// The PN's member infos (for lists sent to members).
    fn member_infos(&self) -> Vec<cpns_overlay::MemberInfo> {
        self.pn
            .as_ref()
            .map(|p| p.members.values().map(|m| m.info.clone()).collect())
            .unwrap_or_default()
    }

    /// Waits (resolves) a list of waiters with the same result.
    fn resolve_all(waiters: Vec<WaiterId>, r: &Result<String, OpError>, fx: &mut Fx) {
        for w in waiters {
            let r = match r {
                Ok(id) => Ok(id.clone()),
                Err(e) => Err(clone_err(e)),
            };
            fx.resolve(w, Reply::Pn(r));
        }
    }
}

/// An error for an unexpected job outcome.
fn unexpected(done: &Done) -> OpError {
    OpError::Internal(format!("unexpected outcome {done:?}"))
}

/// Copies an error (`OpError` holds only strings).
pub(super) fn clone_err(e: &OpError) -> OpError {
    match e {
        OpError::BadRequest(s) => OpError::BadRequest(s.clone()),
        OpError::NotFound(s) => OpError::NotFound(s.clone()),
        OpError::Conflict(s) => OpError::Conflict(s.clone()),
        OpError::Refused(s) => OpError::Refused(s.clone()),
        OpError::Unavailable(s) => OpError::Unavailable(s.clone()),
        other => OpError::Internal(other.to_string()),
    }
}

/// The answer of a server request that went wrong, as an operation error.
fn auth_error(step: &str, e: OpError) -> OpError {
    match e {
        OpError::Refused(t) => OpError::Refused(format!("{step}: {t}")),
        other => OpError::Unavailable(format!("{step}: {other}")),
    }
}

/// A peer's answer, as an operation error.
fn peer_error(step: &str, e: cpns_overlay::Error) -> OpError {
    match e {
        cpns_overlay::Error::Refused { reply, .. } => {
            OpError::Refused(format!("{step} refused: {reply}"))
        }
        other => OpError::Unavailable(format!("{step}: {other}")),
    }
}
