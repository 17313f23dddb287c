//! The gateway's side of a PN: setting it up with `cpns-auth` (B.1 steps 6, 8-17), admitting
//! PNEs (18-26), removing members (left, expelled, revoked), releasing the PN, the PN
//! Inventory it serves, and key pushes it forwards.
//!
//! The server's requests (steps 14 and 17) arrive while this node's own requests (8-13) are
//! in flight; the state says how far the set-up got, so a step 14 that overtakes step 13's
//! answer is answered once 13 is recorded (protocol order in every trace), and a PNE's step 18
//! that arrives before the PN exists waits in the set-up's queue instead of being refused.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use cpns_overlay::{
    AuthMessage, ConnectionSetup, ErrorCode, GroupKeyGrant, MemberDetail, MemberGrant, MemberInfo,
    MembershipDecision, MembershipGrant, Message, PnInventorySummary, PnMessage, PnRecordInfo,
    Status,
};
use libp2p::PeerId;

use super::super::effect::{Done, Effect, Fx, Job, WaiterId};
use super::super::{Member, Membership, PnView, Reply};
use super::joining::{members_from, offline};
use super::{
    Admission, EstablishStage, Establishing, MAX_ADMISSIONS, Purpose, State, auth_error, clone_err,
    unexpected,
};
use crate::error::OpError;
use crate::trace::flow::{B1, G1};

/// How long a set-up waits for the server's steps 14-17 after step 13.
pub(crate) const READY_WAIT: Duration = Duration::from_secs(10);
/// Most PNE connection setups held while the PN is being set up.
const MAX_QUEUED_SETUPS: usize = 64;
/// How many heartbeats of each member are answered with the member list again after it
/// changed (see `State::relist_on_heartbeats`).
const RELIST_HEARTBEATS: u8 = 2;

impl State {
    /// `cpns up` as a gateway, `cpns mode set gateway`: set a PN up.
    pub(super) fn establish_op(&mut self, waiter: WaiterId, fx: &mut Fx) {
        if let Some(pn) = &self.pn
            && pn.membership.gateway == self.me()
            && self.establishing.is_none()
        {
            return fx.resolve(waiter, Reply::Pn(Ok(pn.membership.pn_id.clone())));
        }
        self.start_establish(None, vec![waiter], fx);
    }

    /// B.1 step 6 and steps 8-13; 14-17 arrive as the server's requests. `take_over`: the
    /// gateway this node takes the PN over from (5.6.9).
    pub(super) fn start_establish(
        &mut self,
        take_over: Option<PeerId>,
        waiters: Vec<WaiterId>,
        fx: &mut Fx,
    ) {
        if let Some(e) = self.establishing.as_mut() {
            e.waiters.extend(waiters);
            return;
        }
        if let Err(e) = self.enrolment() {
            return Self::resolve_all(waiters, &Err(e), fx);
        }
        self.take_gateway_role(fx);
        let generation = self.id();
        self.establishing = Some(Establishing {
            stage: EstablishStage::Authenticating,
            take_over,
            waiters,
            deferred_status: None,
            queued: Vec::new(),
            generation,
        });
        let mode = self.mode;
        self.spawn(
            Purpose::EstablishAuth,
            Job::Authenticate { trace: true, mode },
            fx,
        );
    }

    pub(super) fn establish_authenticated(&mut self, done: Done, fx: &mut Fx) {
        match done {
            Done::Authenticated(Ok(info)) => {
                if take_revocations_from(&info) {
                    self.on_revocations(info.revocations, fx);
                }
                let me = self.me();
                let server = self.server().unwrap_or(me);
                self.trace(
                    B1,
                    12,
                    &me,
                    &server,
                    "DeviceCapabilitiesUpdate",
                    self.caps.mode.as_str(),
                );
                if let Some(e) = self.establishing.as_mut() {
                    e.stage = EstablishStage::CapabilitiesSent;
                }
                let caps = self.caps.clone();
                self.spawn(
                    Purpose::EstablishCaps,
                    Job::Auth(AuthMessage::CapabilitiesUpdate(caps)),
                    fx,
                );
            }
            Done::Authenticated(Err(e)) => self.fail_establish(e, fx),
            other => self.fail_establish(unexpected(&other), fx),
        }
    }

    pub(super) fn establish_caps(&mut self, done: Done, fx: &mut Fx) {
        let revision = match done {
            Done::Auth(Ok(AuthMessage::CapabilitiesConfirmation { revision })) => revision,
            Done::Auth(Ok(other)) => {
                return self.fail_establish(
                    OpError::Refused(format!("step 13: unexpected {}", other.name())),
                    fx,
                );
            }
            Done::Auth(Err(e)) => return self.fail_establish(auth_error("step 12", e), fx),
            other => return self.fail_establish(unexpected(&other), fx),
        };
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(
            B1,
            13,
            &server,
            &me,
            "DeviceCapabilitiesConfirmation",
            format!("revision {revision}"),
        );
        let Some(e) = self.establishing.as_mut() else {
            return;
        };
        e.stage = EstablishStage::AwaitingInventory;
        let generation = e.generation;
        if let Some(w) = e.deferred_status.take() {
            let m = self.status_response();
            fx.resolve(w, Reply::Message(m));
        }
        self.spawn(
            Purpose::EstablishTimeout { generation },
            Job::Sleep(READY_WAIT),
            fx,
        );
    }

    pub(super) fn establish_timeout(&mut self, generation: u64, fx: &mut Fx) {
        if self
            .establishing
            .as_ref()
            .is_some_and(|e| e.generation == generation)
        {
            self.fail_establish(
                OpError::Unavailable(
                    "cpns-auth did not create the PN Inventory (steps 14-17) in time".into(),
                ),
                fx,
            );
        }
    }

    /// The set-up failed: a take-over steps down again; the waiting PNEs are told to retry.
    fn fail_establish(&mut self, e: OpError, fx: &mut Fx) {
        let Some(est) = self.establishing.take() else {
            return;
        };
        tracing::warn!("setting up the PN with cpns-auth failed: {e}");
        if est.take_over.is_some() || (self.pn.is_some() && !self.is_pn_gateway()) {
            self.step_down(fx);
        }
        if let Some(w) = est.deferred_status {
            let m = self.status_response();
            fx.resolve(w, Reply::Message(m));
        }
        for (w, _, _) in est.queued {
            fx.resolve(
                w,
                Reply::Message(Message::error(
                    ErrorCode::Busy,
                    "this gateway's PN is not set up yet; try again",
                )),
            );
        }
        Self::resolve_all(est.waiters, &Err(e), fx);
    }

    /// Step 14 (the server asks for the status); answered once step 13 is recorded.
    pub(super) fn on_status_update_request(
        &mut self,
        waiter: WaiterId,
        _fx: &mut Fx,
    ) -> Option<Message> {
        if let Some(e) = self.establishing.as_mut()
            && e.stage < EstablishStage::AwaitingInventory
        {
            e.deferred_status = Some(waiter);
            return None;
        }
        Some(self.status_response())
    }

    /// Steps 14-16: the status lookup and the answer, with the take-over claim.
    fn status_response(&self) -> Message {
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(B1, 14, &server, &me, "StatusManagementUpdateRequest", "");
        let take_over = self
            .establishing
            .as_ref()
            .is_some_and(|e| e.take_over.is_some());
        let pn_id = self
            .pn
            .as_ref()
            .filter(|p| p.membership.gateway == me || take_over)
            .map(|p| p.membership.pn_id.clone());
        let members: Vec<(PeerId, Status)> = self
            .pn
            .as_ref()
            .map(|p| {
                p.members
                    .values()
                    .map(|m| (m.info.peer_id, m.info.status.clone()))
                    .collect()
            })
            .unwrap_or_default();
        let detail = if members.is_empty() {
            "no change".to_string()
        } else {
            format!("{} members", members.len())
        };
        self.trace(B1, 15, &me, &me, "StatusManagementLookup", detail);
        self.trace(
            B1,
            16,
            &me,
            &server,
            "StatusManagementResponse",
            self.status.as_str(),
        );
        Message::Auth(AuthMessage::StatusResponse {
            status: self.status.clone(),
            pn_id,
            members,
            take_over,
        })
    }

    /// Step 17: the PN exists; keep its key, create the local PN Inventory.
    pub(super) fn on_inventory_created(
        &mut self,
        record: &PnRecordInfo,
        key: &GroupKeyGrant,
        fx: &mut Fx,
    ) -> Message {
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(
            B1,
            17,
            &server,
            &me,
            "CreateAndUpdatePnInventory",
            record.pn_id.clone(),
        );
        if let Err(e) = self.install_grant(key, fx) {
            self.fail_establish(clone_err(&e), fx);
            return Message::error(ErrorCode::BadRequest, e.to_string());
        }
        let Some(est) = self.establishing.take() else {
            // A step 17 nobody asked for (a late one after a time-out): keep the key only.
            return Message::Ack;
        };
        if record.gateway != me {
            // The PN moved to another gateway while this one was away (5.6.9): join it.
            let err = OpError::Conflict(
                "the PN has another gateway now; this node re-joins it as a PNE".into(),
            );
            tracing::info!("{err}");
            for (w, _, _) in est.queued {
                fx.resolve(
                    w,
                    Reply::Message(Message::error(
                        ErrorCode::Conflict,
                        "this node is not the PN's gateway",
                    )),
                );
            }
            Self::resolve_all(est.waiters, &Err(err), fx);
            self.step_down(fx);
            if self.moved_away(record, fx) {
                // Merged into another PN, or split off (5.6.9): joined once the server says
                // where that PN's gateway listens.
                return Message::Ack;
            }
            self.rehome(record.gateway, Vec::new(), fx);
            return Message::Ack;
        }
        let Some(enrolment) = self.enrolment.clone() else {
            return Message::error(ErrorCode::Internal, "not enrolled");
        };
        let membership = Membership {
            pn_id: record.pn_id.clone(),
            gateway: me,
            gateway_addrs: self.listen_addrs.clone(),
            owner: record.owner.clone(),
            epoch: key.epoch,
        };
        // Members the server still lists (after a restart, or known as a PNE before a
        // take-over) stay; their status is Offline until they are heard from again.
        let old = self.pn.clone();
        let mut members = match &old {
            Some(p) => members_from(
                &p.members
                    .values()
                    .filter(|m| m.info.peer_id != me && record.members.contains(&m.info.peer_id))
                    .map(|m| offline(m.info.clone()))
                    .collect::<Vec<_>>(),
                Some(p),
            ),
            None => Default::default(),
        };
        let own = MemberInfo {
            peer_id: me,
            user: enrolment.credential.body.user.clone(),
            device: enrolment.credential.body.device.clone(),
            mode: self.mode,
            status: self.status.clone(),
            listen_addrs: self.listen_addrs.clone(),
            serial: enrolment.credential.serial(),
            expires: enrolment.credential.body.expires,
            candidacy: Some(self.own_candidacy(&self.caps)),
        };
        members.insert(
            me,
            Member {
                info: own,
                caps: Some(self.caps.clone()),
                services: self.own_services.clone(),
                live: Default::default(),
            },
        );
        self.pn = Some(Arc::new(PnView {
            membership,
            members,
        }));
        self.persist_membership(fx);
        self.persist_inventory(fx);
        self.gateway_checked = fx.now;
        self.env.metrics.pn_established();
        tracing::info!(pn = %record.pn_id, epoch = key.epoch, "PN Inventory created; this node is its gateway");
        if let Some(old_gateway) = est.take_over {
            self.announce(old_gateway, fx);
        }
        fx.changed();
        Self::resolve_all(est.waiters, &Ok(record.pn_id.clone()), fx);
        for (w, peer, setup) in est.queued {
            if let Some(m) = self.on_connection_setup(peer, setup, w, fx) {
                fx.resolve(w, Reply::Message(m));
            }
        }
        Message::Ack
    }

    /// Step 18 at the gateway: a PNE asks to join (answered by 26 once 19-25 are done).
    pub(super) fn on_connection_setup(
        &mut self,
        peer: PeerId,
        setup: Box<ConnectionSetup>,
        waiter: WaiterId,
        fx: &mut Fx,
    ) -> Option<Message> {
        if setup.credential.entity() != &peer {
            return Some(Message::error(
                ErrorCode::BadRequest,
                "the credential is not the sender's",
            ));
        }
        if let Some(t) = &self.trust
            && let Err(e) = t.check_credential(&setup.credential, &peer, fx.now)
        {
            return Some(Message::error(
                ErrorCode::NotRegistered,
                format!("credential refused: {e}"),
            ));
        }
        if !self.mode.is_gateway() {
            return Some(Message::error(
                ErrorCode::Forbidden,
                "this node is not a gateway",
            ));
        }
        if !self.is_pn_gateway() || self.establishing.is_some() {
            if let Some(e) = self.establishing.as_mut()
                && e.queued.len() < MAX_QUEUED_SETUPS
            {
                e.queued.push((waiter, peer, setup));
                return None;
            }
            return Some(Message::error(
                ErrorCode::Busy,
                "this gateway's PN is not set up yet; try again",
            ));
        }
        let pn_id = self.pn_id().unwrap_or_default();
        if !setup.pn_id.is_empty() && setup.pn_id != pn_id {
            return Some(Message::error(
                ErrorCode::BadRequest,
                format!("this gateway runs {pn_id}, not {}", setup.pn_id),
            ));
        }
        if self.admissions.len() >= MAX_ADMISSIONS
            || self.admissions.values().any(|a| a.peer == peer)
        {
            return Some(Message::error(
                ErrorCode::Busy,
                "too many connection setups at once; try again",
            ));
        }
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(B1, 18, &peer, &me, "ConnectionSetupRequest", "");
        self.trace(B1, 19, &me, &server, "PnMembershipRequest", "");
        let flow = self.id();
        self.admissions.insert(
            flow,
            Admission {
                peer,
                waiter,
                pn_id,
                setup: setup.clone(),
                epoch: 0,
                grants: Vec::new(),
                member: None,
                listed: Vec::new(),
            },
        );
        self.spawn(
            Purpose::AdmitMembership { flow },
            Job::Auth(AuthMessage::MembershipRequest { setup: *setup }),
            fx,
        );
        None
    }

    fn admission_failed(&mut self, flow: u64, code: ErrorCode, text: String, fx: &mut Fx) {
        if let Some(a) = self.admissions.remove(&flow) {
            fx.resolve(a.waiter, Reply::Message(Message::error(code, text)));
        }
    }

    /// Steps 20-21 came back: refused, or on to 22.
    pub(super) fn admit_membership(&mut self, flow: u64, done: Done, fx: &mut Fx) {
        let me = self.me();
        let server = self.server().unwrap_or(me);
        let (decision, _pn) = match done {
            Done::Auth(Ok(AuthMessage::MembershipListTransfer { decision, pn })) => (decision, pn),
            Done::Auth(Ok(other)) => {
                return self.admission_failed(
                    flow,
                    ErrorCode::Internal,
                    format!("step 21: unexpected {}", other.name()),
                    fx,
                );
            }
            Done::Auth(Err(e)) => {
                self.trace(
                    B1,
                    21,
                    &server,
                    &me,
                    "PnMembershipListOrPolicyTransfer",
                    format!("failed: {e}"),
                );
                let (code, text) = match e {
                    OpError::Refused(t) => (ErrorCode::MembershipRefused, t),
                    other => (ErrorCode::Busy, format!("step 19: {other}")),
                };
                return self.admission_failed(flow, code, text, fx);
            }
            other => {
                return self.admission_failed(
                    flow,
                    ErrorCode::Internal,
                    unexpected(&other).to_string(),
                    fx,
                );
            }
        };
        let verdict = match &decision {
            MembershipDecision::Admitted => "admitted".to_string(),
            MembershipDecision::Refused(r) => format!("refused: {r}"),
        };
        self.trace(
            B1,
            20,
            &server,
            &server,
            "PnMembershipPolicyLookup",
            verdict.clone(),
        );
        self.trace(
            B1,
            21,
            &server,
            &me,
            "PnMembershipListOrPolicyTransfer",
            verdict,
        );
        if let MembershipDecision::Refused(reason) = decision {
            return self.admission_failed(flow, ErrorCode::MembershipRefused, reason, fx);
        }
        let Some(a) = self.admissions.get(&flow) else {
            return;
        };
        let (pn_id, member) = (a.pn_id.clone(), a.peer);
        self.trace(B1, 22, &me, &server, "PnKeyRequest", "");
        self.spawn(
            Purpose::AdmitKey { flow },
            Job::Auth(AuthMessage::PnKeyRequest { pn_id, member }),
            fx,
        );
    }

    /// Step 23 came back: hand the PNE its key (24).
    pub(super) fn admit_key(&mut self, flow: u64, done: Done, fx: &mut Fx) {
        let (epoch, grants) = match done {
            Done::Auth(Ok(AuthMessage::PnKeyResponse { epoch, grants, .. })) => (epoch, grants),
            Done::Auth(Ok(other)) => {
                return self.admission_failed(
                    flow,
                    ErrorCode::Internal,
                    format!("step 23: unexpected {}", other.name()),
                    fx,
                );
            }
            Done::Auth(Err(e)) => {
                return self.admission_failed(flow, ErrorCode::Busy, format!("step 22: {e}"), fx);
            }
            other => {
                return self.admission_failed(
                    flow,
                    ErrorCode::Internal,
                    unexpected(&other).to_string(),
                    fx,
                );
            }
        };
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(
            B1,
            23,
            &server,
            &me,
            "PnKeyResponse",
            format!("epoch {epoch}"),
        );
        if let Some(own) = grants.iter().find(|g| g.member == me)
            && let Err(e) = self.install_grant(&own.grant, fx)
        {
            tracing::warn!("the gateway's own key grant did not open: {e}");
        }
        let Some(a) = self.admissions.get(&flow) else {
            return;
        };
        let peer = a.peer;
        let Some(member_grant) = grants.iter().find(|g| g.member == peer).cloned() else {
            return self.admission_failed(
                flow,
                ErrorCode::Internal,
                "the server sent no key for the new member".into(),
                fx,
            );
        };
        let body = &a.setup.credential.body;
        let info = MemberInfo {
            peer_id: peer,
            user: body.user.clone(),
            device: body.device.clone(),
            mode: a.setup.capabilities.mode,
            status: Status::Online,
            // Where it listens: from its registration, else (a member re-joining after a
            // gateway switch) from the inventory.
            listen_addrs: self
                .peers
                .get(&peer)
                .map(|p| p.listen_addrs.clone())
                .filter(|a| !a.is_empty())
                .or_else(|| {
                    self.pn
                        .as_ref()
                        .and_then(|p| p.members.get(&peer))
                        .map(|m| m.info.listen_addrs.clone())
                })
                .unwrap_or_default(),
            serial: a.setup.credential.serial(),
            expires: body.expires,
            candidacy: Some(cpns_overlay::Candidacy::of(
                &a.setup.capabilities,
                body.modes.contains(cpns_keys::Mode::Gateway) && self.admin_allows_gateway(&peer),
            )),
        };
        let mut members = self.member_infos();
        members.retain(|m| m.peer_id != peer);
        members.push(info.clone());
        let pn_id = a.pn_id.clone();
        if let Some(a) = self.admissions.get_mut(&flow) {
            a.epoch = epoch;
            a.grants = grants;
            a.member = Some(info);
            a.listed = members.iter().map(|m| m.peer_id).collect();
        }
        self.trace(
            B1,
            24,
            &me,
            &peer,
            "PnMembershipWithGroupKey",
            format!("epoch {epoch}"),
        );
        let expelled = self.expelled.iter().copied().collect();
        self.spawn(
            Purpose::AdmitGrant { flow },
            Job::Request {
                peer,
                message: Message::Pn(PnMessage::MembershipWithGroupKey(MembershipGrant {
                    pn_id,
                    gateway: me,
                    epoch,
                    sealed_key: member_grant.grant.sealed,
                    members,
                    expelled,
                })),
            },
            fx,
        );
    }

    /// Step 25 came back: the PNE is a member; the others get the new epoch; step 26.
    pub(super) fn admit_grant(&mut self, flow: u64, done: Done, fx: &mut Fx) {
        let confirmed = match done {
            Done::Answer(Ok(Message::Pn(PnMessage::MembershipConfirmation { epoch, .. }))) => epoch,
            Done::Answer(Ok(other)) => {
                return self.admission_failed(
                    flow,
                    ErrorCode::BadRequest,
                    format!("step 25: unexpected {}", other.name()),
                    fx,
                );
            }
            Done::Answer(Err(e)) => {
                return self.admission_failed(flow, ErrorCode::Busy, format!("step 24: {e}"), fx);
            }
            other => {
                return self.admission_failed(
                    flow,
                    ErrorCode::Internal,
                    unexpected(&other).to_string(),
                    fx,
                );
            }
        };
        let Some(a) = self.admissions.remove(&flow) else {
            return;
        };
        let Some(info) = a.member.clone() else {
            return;
        };
        let me = self.me();
        let peer = a.peer;
        self.trace(
            B1,
            25,
            &peer,
            &me,
            "PnMembershipWithGroupKeyConfirmation",
            format!("epoch {confirmed}"),
        );
        let pne = !info.mode.is_gateway();
        let until = info.expires;
        let caps = a.setup.capabilities.clone();
        if let Some(p) = self.pn_mut() {
            let prev = p.members.remove(&peer);
            p.members.insert(
                peer,
                Member {
                    info,
                    caps: Some(caps),
                    services: prev.map(|m| m.services).unwrap_or_default(),
                    live: super::super::Liveness {
                        last_seen: fx.now,
                        ..Default::default()
                    },
                },
            );
            if a.epoch > p.membership.epoch {
                p.membership.epoch = a.epoch;
            }
        }
        if Arc::make_mut(&mut self.expelled).remove(&peer) {
            self.persist_expelled(fx);
        }
        self.persist_member(&peer, fx);
        self.persist_membership(fx);
        fx.push(Effect::Admit { peer, until });
        if pne {
            // It will be a DHT client: do not count it as a server meanwhile.
            fx.push(Effect::ForgetDhtPeer(peer));
        }
        self.distribute(a.epoch, &a.grants, Some(peer), fx);
        self.relist_missed(&a, fx);
        self.trace(
            B1,
            26,
            &me,
            &peer,
            "ConnectionSetupConfirmation",
            format!("epoch {}", a.epoch),
        );
        self.env.metrics.pn_established();
        fx.changed();
        let summary = self.summary(false);
        fx.resolve(
            a.waiter,
            Reply::Message(Message::Pn(PnMessage::ConnectionSetupConfirmation(summary))),
        );
    }

    /// The PN Inventory's summary (B.1 step 26, inventory requests, the DHT record).
    pub(crate) fn summary(&self, details: bool) -> PnInventorySummary {
        let Some(pn) = &self.pn else {
            return PnInventorySummary {
                pn_id: String::new(),
                owner: String::new(),
                gateway: self.env.me,
                epoch: 0,
                members: Vec::new(),
                services: Vec::new(),
                updated: 0,
                details: Vec::new(),
                admins: Vec::new(),
            };
        };
        summary_of(pn, details, crate::now())
    }

    /// After admission `a` was confirmed: sends the member list (no key) to whoever its
    /// grants did not reach. Admissions overlap: the server's grants name the members it knew
    /// at step 22, and the new member's step-24 list names those confirmed then, so a member
    /// confirmed in between would otherwise never hear of the other.
    fn relist_missed(&mut self, a: &Admission, fx: &mut Fx) {
        self.relist_on_heartbeats();
        let Some(pn_id) = self.pn_id() else { return };
        let me = self.me();
        let members = self.member_infos();
        let granted: BTreeSet<PeerId> = a.grants.iter().map(|g| g.member).collect();
        let listed: BTreeSet<PeerId> = a.listed.iter().copied().collect();
        let now: BTreeSet<PeerId> = members.iter().map(|m| m.peer_id).collect();
        let expelled: Vec<PeerId> = self.expelled.iter().copied().collect();
        for m in &now {
            let missed = if *m == a.peer {
                listed != now
            } else {
                !granted.contains(m)
            };
            if *m == me || !missed {
                continue;
            }
            fx.send(
                *m,
                Message::Pn(PnMessage::MembersUpdate {
                    pn_id: pn_id.clone(),
                    members: members.clone(),
                    expelled: expelled.clone(),
                }),
            );
        }
    }

    /// The member list changed: each member's next [`RELIST_HEARTBEATS`] heartbeats are
    /// answered with it again. The pushes of the list are one-way and can be lost (a request
    /// that timed out under load; a list reaching a PNE that is itself still finishing its
    /// admission, when two overlap), and nothing else would send it again until the next
    /// change: a member then kept a list without the newest member, and refused the
    /// gateway's relayed streams from it.
    pub(super) fn relist_on_heartbeats(&mut self) {
        let me = self.me();
        let members: Vec<PeerId> = self
            .member_infos()
            .iter()
            .map(|m| m.peer_id)
            .filter(|p| *p != me)
            .collect();
        self.relist.clear();
        for m in members {
            self.relist.insert(m, RELIST_HEARTBEATS);
        }
    }

    /// At a member's heartbeat: the member list again, while it is due one.
    pub(super) fn relist_at_heartbeat(&mut self, peer: PeerId, fx: &mut Fx) {
        let Some(left) = self.relist.get_mut(&peer) else {
            return;
        };
        *left = left.saturating_sub(1);
        if *left == 0 {
            self.relist.remove(&peer);
        }
        let Some(pn_id) = self.pn_id() else { return };
        fx.send(
            peer,
            Message::Pn(PnMessage::MembersUpdate {
                pn_id,
                members: self.member_infos(),
                expelled: self.expelled.iter().copied().collect(),
            }),
        );
    }

    /// Sends every member (but `except`) its grant of the new epoch and the member list.
    fn distribute(
        &mut self,
        epoch: u64,
        grants: &[MemberGrant],
        except: Option<PeerId>,
        fx: &mut Fx,
    ) {
        self.relist_on_heartbeats();
        let me = self.me();
        let Some(pn_id) = self.pn_id() else { return };
        let members = self.member_infos();
        let expelled: Vec<PeerId> = self.expelled.iter().copied().collect();
        for g in grants {
            if g.member == me || Some(g.member) == except {
                continue;
            }
            fx.send(
                g.member,
                Message::Pn(PnMessage::MembershipUpdate(MembershipGrant {
                    pn_id: pn_id.clone(),
                    gateway: me,
                    epoch,
                    sealed_key: g.grant.sealed.clone(),
                    members: members.clone(),
                    expelled: expelled.clone(),
                })),
            );
        }
    }

    /// Applies a member's removal with the new epoch's grants. An expelled (or revoked)
    /// member is refused from now on, here and — through the update — by every member.
    pub(super) fn remove_member(
        &mut self,
        peer: PeerId,
        epoch: u64,
        grants: &[MemberGrant],
        expelled: bool,
        fx: &mut Fx,
    ) {
        let me = self.me();
        if let Some(own) = grants.iter().find(|g| g.member == me)
            && let Err(e) = self.install_grant(&own.grant, fx)
        {
            tracing::warn!("the gateway's key of epoch {epoch} did not open: {e}");
        }
        if let Some(p) = self.pn_mut() {
            p.members.remove(&peer);
            if epoch > p.membership.epoch {
                p.membership.epoch = epoch;
            }
        }
        if expelled {
            // The expelled device is told, so that its own status shows no PN (it is refused
            // from now on, so it could not ask).
            if let Some(pn_id) = self.pn_id() {
                fx.send(peer, Message::Pn(PnMessage::Leave { pn_id }));
            }
            let list = Arc::make_mut(&mut self.expelled);
            if list.len() >= cpns_overlay::MAX_EXPELLED
                && let Some(first) = list.iter().next().copied()
            {
                list.remove(&first);
            }
            list.insert(peer);
            Arc::make_mut(&mut self.peers).remove(&peer);
            self.persist_expelled(fx);
            fx.push(Effect::Refuse {
                peer,
                code: ErrorCode::Forbidden,
            });
        } else {
            self.unadmit_former(&peer, fx);
        }
        self.persist_member(&peer, fx);
        self.persist_membership(fx);
        self.distribute(epoch, grants, Some(peer), fx);
        fx.changed();
    }

    /// G.1 step 9 at the gateway (a member leaves; de-registered with `cpns-auth` on its
    /// behalf), or at a PNE (its gateway released the PN).
    pub(super) fn on_leave(
        &mut self,
        peer: PeerId,
        pn_id: String,
        waiter: WaiterId,
        fx: &mut Fx,
    ) -> Option<Message> {
        let me = self.me();
        let Some(pn) = self.pn.clone() else {
            return Some(Message::error(ErrorCode::NotFound, "not in a PN"));
        };
        if pn.membership.pn_id != pn_id {
            return Some(Message::error(ErrorCode::NotFound, "not this node's PN"));
        }
        if pn.membership.gateway == peer {
            self.trace(G1, 9, &peer, &me, "PnReleased", pn_id.clone());
            self.forget_pn(fx);
            // Released, or merged into another PN or split (5.6.9): the server knows which.
            self.look_up_move(pn_id, fx);
            return Some(Message::Ack);
        }
        if pn.membership.gateway != me || !pn.is_member(&peer) {
            return Some(Message::error(
                ErrorCode::NotFound,
                "not a member of this gateway's PN",
            ));
        }
        self.trace(G1, 9, &peer, &me, "DisconnectionRequest", "");
        self.spawn(
            Purpose::Deregister {
                peer,
                waiter: Some(waiter),
            },
            Job::Auth(AuthMessage::PnDeregister {
                pn_id,
                member: peer,
            }),
            fx,
        );
        None
    }

    /// De-registers a member that is revoked (the gateway learned it from a revocation list).
    pub(super) fn deregister_revoked(&mut self, peer: PeerId, fx: &mut Fx) {
        let Some(pn_id) = self.pn_id() else { return };
        if !self.is_pn_gateway() {
            return;
        }
        self.spawn(
            Purpose::Deregister { peer, waiter: None },
            Job::Auth(AuthMessage::PnDeregister {
                pn_id,
                member: peer,
            }),
            fx,
        );
    }

    pub(super) fn deregistered(
        &mut self,
        peer: PeerId,
        waiter: Option<WaiterId>,
        done: Done,
        fx: &mut Fx,
    ) {
        let answer = match done {
            Done::Auth(Ok(AuthMessage::PnKeyResponse { epoch, grants, .. })) => {
                let me = self.me();
                let server = self.server().unwrap_or(me);
                self.trace(
                    G1,
                    9,
                    &me,
                    &server,
                    "PnDeregister",
                    format!("new epoch {epoch}"),
                );
                let revoked = waiter.is_none();
                self.remove_member(peer, epoch, &grants, revoked, fx);
                Message::Ack
            }
            Done::Auth(Ok(other)) => Message::error(
                ErrorCode::Internal,
                format!("unexpected answer {}", other.name()),
            ),
            Done::Auth(Err(e)) => Message::error(ErrorCode::Busy, e.to_string()),
            other => Message::error(ErrorCode::Internal, unexpected(&other).to_string()),
        };
        if let Some(w) = waiter {
            fx.resolve(w, Reply::Message(answer));
        }
    }

    /// A request for this gateway's PN Inventory (5.6.9), with every member's details.
    pub(super) fn on_inventory_request(&self, pn_id: &str) -> Message {
        match &self.pn {
            Some(pn) if pn.membership.pn_id == pn_id && pn.membership.gateway == self.env.me => {
                Message::Pn(PnMessage::InventoryResponse(summary_of(
                    pn,
                    true,
                    crate::now(),
                )))
            }
            _ => Message::error(
                ErrorCode::NotFound,
                format!("this node does not hold the inventory of {pn_id}"),
            ),
        }
    }

    /// Releases this gateway's PN (5.6.9 "release PN").
    pub(super) fn release_op(&mut self, waiter: WaiterId, fx: &mut Fx) {
        let Some(pn) = self.pn.clone() else {
            return fx.resolve(
                waiter,
                Reply::Pn(Err(OpError::Conflict("not in a PN".into()))),
            );
        };
        // The gateway, or any admin (cpns-auth checks; it then tells the gateway, which tells
        // the members).
        let pn_id = pn.membership.pn_id.clone();
        self.spawn(
            Purpose::Release {
                waiter,
                pn_id: pn_id.clone(),
            },
            Job::AuthCommand(AuthMessage::PnRelease { pn_id }),
            fx,
        );
    }

    pub(super) fn released(&mut self, waiter: WaiterId, pn_id: String, done: Done, fx: &mut Fx) {
        match done {
            Done::Acked(Ok(())) => {
                if self.is_pn_gateway() {
                    self.tell_members_released(&pn_id, fx);
                }
                self.forget_pn(fx);
                fx.resolve(waiter, Reply::Pn(Ok(pn_id)));
            }
            Done::Acked(Err(e)) | Done::Auth(Err(e)) => fx.resolve(waiter, Reply::Pn(Err(e))),
            other => fx.resolve(waiter, Reply::Pn(Err(unexpected(&other)))),
        }
    }

    /// Tells every member the PN is gone (G.1 step 9's `Leave` from the gateway).
    pub(super) fn tell_members_released(&self, pn_id: &str, fx: &mut Fx) {
        let me = self.me();
        let members: Vec<PeerId> = self
            .pn
            .as_ref()
            .map(|p| p.members.keys().copied().filter(|m| *m != me).collect())
            .unwrap_or_default();
        for m in members {
            fx.send(
                m,
                Message::Pn(PnMessage::Leave {
                    pn_id: pn_id.to_owned(),
                }),
            );
        }
    }

    /// `cpns-auth` says an admin released this gateway's PN: the members are told and the
    /// PN is forgotten here too.
    pub(super) fn on_released_by_admin(&mut self, pn_id: String, fx: &mut Fx) -> Message {
        if !self.is_pn_gateway() || self.pn_id().as_deref() != Some(pn_id.as_str()) {
            return Message::error(ErrorCode::NotFound, "not this PN's gateway");
        }
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(
            crate::trace::flow::GW_SWITCH,
            17,
            &server,
            &me,
            "PnReleasedByAdmin",
            pn_id.clone(),
        );
        self.tell_members_released(&pn_id, fx);
        self.forget_pn(fx);
        Message::Ack
    }

    /// A PN admin expels a member; the key moves to a new epoch.
    pub(super) fn expel_op(&mut self, member: PeerId, waiter: WaiterId, fx: &mut Fx) {
        let Some(pn_id) = self.pn_id() else {
            return fx.resolve(
                waiter,
                Reply::Epoch(Err(OpError::Conflict("not in a PN".into()))),
            );
        };
        self.spawn(
            Purpose::Expel { waiter, member },
            Job::Auth(AuthMessage::PnExpel { pn_id, member }),
            fx,
        );
    }

    pub(super) fn expelled(&mut self, waiter: WaiterId, member: PeerId, done: Done, fx: &mut Fx) {
        match done {
            Done::Auth(Ok(AuthMessage::PnKeyResponse { epoch, grants, .. })) => {
                if self.is_pn_gateway() {
                    self.remove_member(member, epoch, &grants, true, fx);
                } else {
                    let me = self.me();
                    if let Some(own) = grants.iter().find(|g| g.member == me)
                        && let Err(e) = self.install_grant(&own.grant, fx)
                    {
                        tracing::warn!("the key of epoch {epoch} did not open: {e}");
                    }
                    Arc::make_mut(&mut self.expelled).insert(member);
                    Arc::make_mut(&mut self.peers).remove(&member);
                    self.persist_expelled(fx);
                    fx.push(Effect::Refuse {
                        peer: member,
                        code: ErrorCode::Forbidden,
                    });
                    fx.changed();
                }
                fx.resolve(waiter, Reply::Epoch(Ok(epoch)));
            }
            Done::Auth(Ok(other)) => fx.resolve(
                waiter,
                Reply::Epoch(Err(OpError::Refused(format!(
                    "unexpected answer {}",
                    other.name()
                )))),
            ),
            Done::Auth(Err(e)) => fx.resolve(waiter, Reply::Epoch(Err(e))),
            other => fx.resolve(waiter, Reply::Epoch(Err(unexpected(&other)))),
        }
    }

    /// A PN admin invites a user or an entity.
    pub(super) fn invite_op(
        &mut self,
        invitee: cpns_overlay::Invitee,
        waiter: WaiterId,
        fx: &mut Fx,
    ) {
        let Some(pn_id) = self.pn_id() else {
            return fx.resolve(
                waiter,
                Reply::Done(Err(OpError::Conflict("not in a PN".into()))),
            );
        };
        // An entity invited again may come back: this node no longer refuses it.
        if let cpns_overlay::Invitee::Entity(peer) = &invitee
            && Arc::make_mut(&mut self.expelled).remove(peer)
        {
            self.persist_expelled(fx);
            fx.push(Effect::Unadmit(*peer));
            fx.changed();
        }
        self.spawn(
            Purpose::Invite { waiter },
            Job::Auth(AuthMessage::PnInvite { pn_id, invitee }),
            fx,
        );
    }

    /// A key push from `cpns-auth` (5.6.6): for this node, or for a member to forward to.
    pub(super) fn on_key_push(
        &mut self,
        member: PeerId,
        grants: Vec<GroupKeyGrant>,
        waiter: WaiterId,
        fx: &mut Fx,
    ) -> Option<Message> {
        if member == self.me() {
            for g in &grants {
                if let Err(e) = self.install_grant(g, fx) {
                    tracing::warn!("pushed key not installed: {e}");
                }
            }
            return Some(Message::Ack);
        }
        if !self.is_member(&member) {
            return Some(Message::error(
                ErrorCode::NotFound,
                "not a member of this gateway's PN",
            ));
        }
        self.spawn(
            Purpose::ForwardKeys { waiter },
            Job::Request {
                peer: member,
                message: Message::Group(cpns_overlay::GroupMessage::KeyForward { grants }),
            },
            fx,
        );
        None
    }

    /// A member's services (for the PN Inventory).
    pub(super) fn on_services_update(
        &mut self,
        peer: PeerId,
        pn_id: &str,
        services: Vec<String>,
        fx: &mut Fx,
    ) -> Message {
        if !self.is_pn_gateway() || self.pn_id().as_deref() != Some(pn_id) {
            return Message::error(ErrorCode::NotFound, "not this PN's gateway");
        }
        let services = bounded_services(services);
        let changed = match self.pn_mut().and_then(|p| p.members.get_mut(&peer)) {
            Some(m) if m.services != services => {
                m.services = services;
                true
            }
            Some(_) => false,
            None => return Message::error(ErrorCode::NotFound, "not a member"),
        };
        if changed {
            self.persist_member(&peer, fx);
            fx.changed();
        }
        Message::Ack
    }

    /// A member's capabilities update reached the gateway: the inventory keeps the newest.
    pub(super) fn member_caps(
        &mut self,
        peer: PeerId,
        caps: cpns_overlay::Capabilities,
        fx: &mut Fx,
    ) {
        let Some(p) = self.pn_mut() else { return };
        let Some(m) = p.members.get_mut(&peer) else {
            return;
        };
        if m.caps.as_ref().is_some_and(|c| c.revision > caps.revision) {
            return;
        }
        m.info.mode = caps.mode;
        m.caps = Some(caps.clone());
        let allowed = m.info.candidacy.as_ref().is_some_and(|c| c.allowed);
        let allowed = allowed && self.admin_allows_gateway(&peer);
        let Some(m) = self.pn_mut().and_then(|p| p.members.get_mut(&peer)) else {
            return;
        };
        let candidacy = Some(cpns_overlay::Candidacy::of(&caps, allowed));
        let candidacy_changed = m.info.candidacy != candidacy;
        m.info.candidacy = candidacy;
        self.persist_member(&peer, fx);
        fx.changed();
        if candidacy_changed {
            // Every member ranks the others by it in a failover: their lists follow.
            self.send_members_update(fx);
        }
        let status = self
            .pn
            .as_ref()
            .and_then(|p| p.members.get(&peer))
            .map(|m| m.info.status.clone())
            .unwrap_or_default();
        let status = if status == Status::Offline {
            Status::Online
        } else {
            status
        };
        self.member_reported(
            peer,
            status,
            caps.dynamic.battery_percent,
            Some(caps.dynamic.free_memory_bytes),
            "capabilities",
            fx,
        );
    }

    /// Sends every member the member list (no new key): a change of a member's candidacy or
    /// information, or of the expelled entities.
    pub(super) fn send_members_update(&self, fx: &mut Fx) {
        let Some(pn_id) = self.pn_id() else { return };
        if !self.is_pn_gateway() {
            return;
        }
        let me = self.me();
        let members = self.member_infos();
        let expelled: Vec<PeerId> = self.expelled.iter().copied().collect();
        for m in members.iter().filter(|m| m.peer_id != me) {
            fx.send(
                m.peer_id,
                Message::Pn(PnMessage::MembersUpdate {
                    pn_id: pn_id.clone(),
                    members: members.clone(),
                    expelled: expelled.clone(),
                }),
            );
        }
    }

    /// Tells the gateway this node's services (a PNE), or records them (the gateway).
    pub(super) fn send_own_services(&mut self, fx: &mut Fx) {
        let Some(pn) = self.pn.clone() else { return };
        let me = self.me();
        if pn.membership.gateway == me {
            let services = self.shown_services();
            if let Some(m) = self.pn_mut().and_then(|p| p.members.get_mut(&me)) {
                m.services = services;
            }
            self.persist_member(&me, fx);
            fx.changed();
        } else {
            fx.send(
                pn.membership.gateway,
                Message::Pn(PnMessage::ServicesUpdate {
                    pn_id: pn.membership.pn_id.clone(),
                    services: self.shown_services(),
                }),
            );
        }
    }
}

/// A summary of `pn` (with each member's details, for members that ask; without, for step 26
/// and the DHT record).
pub(crate) fn summary_of(pn: &PnView, details: bool, now: u64) -> PnInventorySummary {
    let mut services: Vec<String> = pn
        .members
        .values()
        .flat_map(|m| m.services.iter().cloned())
        .collect();
    services.sort();
    services.dedup();
    PnInventorySummary {
        pn_id: pn.membership.pn_id.clone(),
        owner: pn.membership.owner.clone(),
        gateway: pn.membership.gateway,
        epoch: pn.membership.epoch,
        members: pn.members.values().map(|m| m.info.clone()).collect(),
        services,
        updated: now,
        details: if details {
            pn.members
                .values()
                .map(|m| MemberDetail {
                    peer_id: m.info.peer_id,
                    capabilities: m.caps.clone(),
                    services: m.services.clone(),
                    last_seen: m.live.last_seen,
                })
                .collect()
        } else {
            Vec::new()
        },
        admins: Vec::new(),
    }
}

/// Service ids as the inventory keeps them: at most [`cpns_overlay::MAX_MEMBER_SERVICES`],
/// each at most [`cpns_overlay::MAX_SERVICE_ID`] bytes.
pub(super) fn bounded_services(mut ids: Vec<String>) -> Vec<String> {
    ids.retain(|s| !s.is_empty() && s.len() <= cpns_overlay::MAX_SERVICE_ID);
    ids.sort();
    ids.dedup();
    ids.truncate(cpns_overlay::MAX_MEMBER_SERVICES);
    ids
}

/// Whether a session's revocation list is worth offering (any signed one is; the state
/// decides whether it is newer).
fn take_revocations_from(info: &cpns_overlay::SessionInfo) -> bool {
    info.revocations.version > 0
}
