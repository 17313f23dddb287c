//! Entity Registration and Discovery (B.1 steps 1-2), the Device Capabilities exchange (3-4),
//! and pairing (B.1.1.1): what happens when two devices meet.
//!
//! A registration is accepted only with a credential that verifies against the pinned CA,
//! names the connection's PeerId, is unexpired and unrevoked, and allows the mode claimed:
//! a device whose credential allows only the PNE mode cannot pose as a gateway. Its
//! addresses are dial hints, cut at [`cpns_overlay::MAX_LISTEN_ADDRS`].
//!
//! After steps 1-4 both sides look at the same facts and act:
//! * one side is a gateway with a PN and the other is in no PN: the other joins it (18-26) —
//!   at once if the gateway's user is its own, otherwise only once its owner accepts the
//!   invitation the pairing left (`cpns pn invitations`, `cpns pn accept ID`);
//! * neither is a gateway or in a PN: both run the election (step 5) on the capabilities of
//!   steps 3-4 and reach the same winner, which takes the gateway role (6), tells the other
//!   (7) and sets the PN up with `cpns-auth` (8-17); the other joins once told;
//! * otherwise the registration is all there is.

use std::sync::Arc;

use cpns_keys::{CredentialError, Mode};
use cpns_overlay::{
    Capabilities, EntityRegistration, ErrorCode, MAX_LISTEN_ADDRS, Message, Multiaddr, NodeMode,
    PnMessage,
};
use libp2p::PeerId;

use super::super::effect::{Done, Effect, Fx, Job, WaiterId};
use super::super::election::{Candidate, elect};
use super::super::{Invitation, PairOutcome, Peer, Reply, SenderClass};
use super::{MAX_INVITATIONS, MAX_PEERS, Purpose, State, peer_error, unexpected};
use crate::error::OpError;
use crate::store::{self, PnWrite};
use crate::trace::flow::{B1, G1};

/// What a pairing decided (its `result`, and the invitation it left, if any).
struct Decision {
    result: &'static str,
    invitation: Option<String>,
}

impl Decision {
    fn plain(result: &'static str) -> Self {
        Self {
            result,
            invitation: None,
        }
    }
}

impl State {
    /// This node's registration (steps 1-2).
    pub(super) fn own_registration(&self) -> Option<EntityRegistration> {
        let e = self.enrolment.as_ref()?;
        let trust = self.trust.as_ref()?;
        let pn = self.pn.as_ref();
        Some(EntityRegistration {
            mode: self.mode,
            credential: e.credential.clone(),
            pn_id: pn.map(|p| p.membership.pn_id.clone()),
            gateway: pn.map(|p| p.membership.gateway),
            listen_addrs: self.listen_addrs.clone(),
            revocation_version: trust.revocations_version(),
            gateway_addrs: pn
                .map(|p| {
                    p.membership
                        .gateway_addrs
                        .iter()
                        .take(MAX_LISTEN_ADDRS)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default(),
        })
    }

    /// What a peer not verified yet is told in step 1: this node's registration without its
    /// PN's id, gateway and gateway addresses (issue 14: whoever answered a dial learnt them
    /// before its own registration was checked). Whether details were withheld comes with
    /// it; [`State::register_fully`] sends them once the peer's answer is verified.
    pub(super) fn first_registration(&self) -> Option<(EntityRegistration, bool)> {
        let mut reg = self.own_registration()?;
        let withheld =
            reg.pn_id.is_some() || reg.gateway.is_some() || !reg.gateway_addrs.is_empty();
        reg.pn_id = None;
        reg.gateway = None;
        reg.gateway_addrs.clear();
        Some((reg, withheld))
    }

    /// Steps 1-2 again with the PN details, to a peer whose registration was just verified.
    /// False if there is nothing more to tell (then the caller goes on at once).
    fn register_fully(&mut self, purpose: Purpose, peer: PeerId, fx: &mut Fx) -> bool {
        let Some(reg) = self.own_registration() else {
            return false;
        };
        let me = self.me();
        self.trace(
            B1,
            1,
            &me,
            &peer,
            "EntityRegistrationAndDiscovery",
            "with the PN details",
        );
        self.spawn(
            purpose,
            Job::Request {
                peer,
                message: Message::Pn(PnMessage::EntityRegistration(reg)),
            },
            fx,
        );
        true
    }

    /// Checks a peer's registration: credential, mode claim, expulsion. On success the peer
    /// is remembered and admitted until its credential ends, and, if it holds an older
    /// revocation list, is sent ours. The error is the code and text to answer with.
    pub(super) fn verify_registration(
        &mut self,
        peer: PeerId,
        reg: &EntityRegistration,
        fx: &mut Fx,
    ) -> Result<(), (ErrorCode, String)> {
        let trust = self.trust.clone().ok_or_else(|| {
            (
                ErrorCode::NotRegistered,
                "this node is not enrolled".to_string(),
            )
        })?;
        let refuse = |s: &mut State, fx: &mut Fx, code: ErrorCode, text: String| {
            s.env.metrics.refused_registration(code.as_str());
            // A peer admitted before (and now revoked, or lying) loses its admission.
            if Arc::make_mut(&mut s.peers).remove(&peer).is_some() {
                fx.changed();
            }
            if code == ErrorCode::Revoked {
                fx.push(Effect::Refuse { peer, code });
            } else if !s.is_member(&peer) {
                fx.push(Effect::Unadmit(peer));
            }
            Err((code, text))
        };
        if let Err(e) = trust.check_credential(&reg.credential, &peer, fx.now) {
            let code = match e {
                CredentialError::Revoked { .. } => ErrorCode::Revoked,
                CredentialError::Expired { .. } => ErrorCode::Expired,
                _ => ErrorCode::NotRegistered,
            };
            return refuse(self, fx, code, format!("credential refused: {e}"));
        }
        let body = &reg.credential.body;
        if reg.mode.is_gateway() && !body.modes.contains(Mode::Gateway) {
            return refuse(
                self,
                fx,
                ErrorCode::BadRequest,
                format!(
                    "claims the {} mode, but its credential does not allow the gateway mode",
                    reg.mode
                ),
            );
        }
        if self.expelled.contains(&peer) {
            return refuse(
                self,
                fx,
                ErrorCode::Forbidden,
                "expelled from this PN".into(),
            );
        }
        let listen_addrs: Vec<Multiaddr> = reg
            .listen_addrs
            .iter()
            .take(MAX_LISTEN_ADDRS)
            .cloned()
            .collect();
        let entry = Peer {
            mode: reg.mode,
            caps: None,
            user: body.user.clone(),
            device: body.device.clone(),
            serial: reg.credential.serial(),
            expires: body.expires,
            may_be_gateway: body.modes.contains(Mode::Gateway),
            pn_id: reg.pn_id.clone(),
            gateway: reg.gateway,
            listen_addrs: listen_addrs.clone(),
            gateway_addrs: reg
                .gateway_addrs
                .iter()
                .take(MAX_LISTEN_ADDRS)
                .cloned()
                .collect(),
            seq: 0,
        };
        self.remember_peer(peer, entry, fx);
        if !listen_addrs.is_empty() {
            fx.push(Effect::AddAddrs {
                peer,
                addrs: listen_addrs,
            });
        }
        fx.push(Effect::Admit {
            peer,
            until: body.expires,
        });
        self.env.metrics.accepted_registration();
        // The side with the newer revocation list shares it (DESIGN: revocation reaches
        // everyone).
        if reg.revocation_version < trust.revocations_version() {
            let list = (*trust.revocations()).clone();
            fx.send(peer, Message::Pn(PnMessage::Revocations(list)));
        }
        Ok(())
    }

    /// Remembers a registered peer; when full, the oldest non-member goes (and loses its
    /// admission with it).
    fn remember_peer(&mut self, peer: PeerId, mut entry: Peer, fx: &mut Fx) {
        self.peer_seq += 1;
        entry.seq = self.peer_seq;
        let victim = if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            self.peers
                .iter()
                .filter(|(p, _)| !self.is_member(p))
                .min_by_key(|(_, e)| e.seq)
                .map(|(p, _)| *p)
        } else {
            None
        };
        let peers = Arc::make_mut(&mut self.peers);
        if let Some(v) = victim {
            peers.remove(&v);
            fx.push(Effect::Unadmit(v));
        }
        // Keep what a re-registration does not carry.
        if let Some(old) = peers.get(&peer) {
            entry.caps = entry.caps.or_else(|| old.caps.clone());
        }
        peers.insert(peer, entry);
        fx.changed();
    }

    /// Pairing, initiator: dials first (steps 1-4 follow as the dial and each answer come
    /// back).
    pub(super) fn pair(&mut self, addr: Multiaddr, waiter: WaiterId, fx: &mut Fx) {
        if let Err(e) = self.enrolment() {
            fx.resolve(waiter, Reply::Pair(Err(e)));
            return;
        }
        self.spawn(Purpose::PairDial { waiter }, Job::Dial(addr), fx);
    }

    pub(super) fn pair_dialed(&mut self, waiter: WaiterId, done: Done, fx: &mut Fx) {
        let peer = match done {
            Done::Dialed(Ok(p)) => p,
            Done::Dialed(Err(e)) => return fx.resolve(waiter, Reply::Pair(Err(e))),
            other => return fx.resolve(waiter, Reply::Pair(Err(unexpected(&other)))),
        };
        if peer == self.me() {
            fx.resolve(
                waiter,
                Reply::Pair(Err(OpError::BadRequest("cannot pair with itself".into()))),
            );
            return;
        }
        let Some((reg, withheld)) = self.first_registration() else {
            return fx.resolve(waiter, Reply::Pair(Err(self.not_enrolled())));
        };
        self.trace(
            B1,
            1,
            &self.me(),
            &peer,
            "EntityRegistrationAndDiscovery",
            "",
        );
        self.spawn(
            Purpose::PairRegister {
                waiter,
                peer,
                full: !withheld,
            },
            Job::Request {
                peer,
                message: Message::Pn(PnMessage::EntityRegistration(reg)),
            },
            fx,
        );
    }

    fn not_enrolled(&self) -> OpError {
        OpError::Conflict("this node is not enrolled".into())
    }

    /// Step 2 came back: check it, then (once the PN details went too) steps 3-4.
    pub(super) fn pair_registered(
        &mut self,
        waiter: WaiterId,
        peer: PeerId,
        full: bool,
        done: Done,
        fx: &mut Fx,
    ) {
        if let Err(e) = self.take_registration_answer(peer, done, fx) {
            return fx.resolve(waiter, Reply::Pair(Err(e)));
        }
        let again = Purpose::PairRegister {
            waiter,
            peer,
            full: true,
        };
        if !full && self.register_fully(again, peer, fx) {
            return;
        }
        let me = self.me();
        self.trace(B1, 3, &me, &peer, "DeviceCapabilitiesExchange", "");
        let caps = self.caps.clone();
        self.spawn(
            Purpose::PairCaps { waiter, peer },
            Job::Request {
                peer,
                message: Message::Pn(PnMessage::CapabilitiesExchange(caps)),
            },
            fx,
        );
    }

    /// Checks a registration answer (step 2) and takes the peer on.
    pub(super) fn take_registration_answer(
        &mut self,
        peer: PeerId,
        done: Done,
        fx: &mut Fx,
    ) -> Result<(), OpError> {
        let me = self.me();
        let theirs = match done {
            Done::Answer(Ok(Message::Pn(PnMessage::EntityRegistration(r)))) => r,
            Done::Answer(Ok(other)) => {
                return Err(OpError::Refused(format!(
                    "step 2: unexpected {}",
                    other.name()
                )));
            }
            Done::Answer(Err(e)) => return Err(peer_error("step 1", e)),
            other => return Err(unexpected(&other)),
        };
        self.trace(
            B1,
            2,
            &peer,
            &me,
            "EntityRegistrationAndDiscovery",
            theirs.mode.as_str(),
        );
        self.verify_registration(peer, &theirs, fx)
            .map_err(|(code, text)| {
                OpError::Refused(format!("step 2 ({}): {text}", code.as_str()))
            })?;
        self.trace(
            G1,
            2,
            &me,
            &peer,
            "CpnsEntityDiscovery",
            theirs.mode.as_str(),
        );
        Ok(())
    }

    /// Step 4 came back: decide, and tell the owner what was started.
    pub(super) fn pair_exchanged(
        &mut self,
        waiter: WaiterId,
        peer: PeerId,
        done: Done,
        fx: &mut Fx,
    ) {
        let their_caps = match done {
            Done::Answer(Ok(Message::Pn(PnMessage::CapabilitiesExchange(c)))) => c,
            Done::Answer(Ok(other)) => {
                return fx.resolve(
                    waiter,
                    Reply::Pair(Err(OpError::Refused(format!(
                        "step 4: unexpected {}",
                        other.name()
                    )))),
                );
            }
            Done::Answer(Err(e)) => {
                return fx.resolve(waiter, Reply::Pair(Err(peer_error("step 3", e))));
            }
            other => return fx.resolve(waiter, Reply::Pair(Err(unexpected(&other)))),
        };
        let me = self.me();
        self.trace(
            B1,
            4,
            &peer,
            &me,
            "DeviceCapabilitiesExchange",
            their_caps.mode.as_str(),
        );
        if let Err(e) = self.check_caps_claim(&peer, &their_caps) {
            return fx.resolve(waiter, Reply::Pair(Err(OpError::Refused(e))));
        }
        self.set_peer_caps(&peer, their_caps.clone(), fx);
        let my_caps = self.caps.clone();
        let d = self.decide(peer, &my_caps, &their_caps, fx);
        fx.resolve(
            waiter,
            Reply::Pair(Ok(PairOutcome {
                peer_id: peer.to_string(),
                peer_mode: their_caps.mode.to_string(),
                mode: self.mode.to_string(),
                result: d.result.to_string(),
                pn_id: self.pn_id(),
                invitation: d.invitation,
            })),
        );
    }

    /// A capabilities claim of the gateway mode must be backed by the registered credential.
    fn check_caps_claim(&self, peer: &PeerId, caps: &Capabilities) -> Result<(), String> {
        let allowed = self.peers.get(peer).is_some_and(|p| p.may_be_gateway)
            || self
                .pn
                .as_ref()
                .is_some_and(|p| p.membership.gateway == *peer);
        if caps.mode.is_gateway() && !allowed {
            return Err(format!(
                "{peer} claims the {} mode, but its credential does not allow the gateway mode",
                caps.mode
            ));
        }
        Ok(())
    }

    fn set_peer_caps(&mut self, peer: &PeerId, caps: Capabilities, fx: &mut Fx) {
        if let Some(p) = Arc::make_mut(&mut self.peers).get_mut(peer) {
            p.mode = caps.mode;
            p.caps = Some(caps);
            fx.changed();
        }
    }

    /// After steps 1-4, on either side: join, elect, or nothing.
    fn decide(
        &mut self,
        peer: PeerId,
        my_caps: &Capabilities,
        their_caps: &Capabilities,
        fx: &mut Fx,
    ) -> Decision {
        if self.pn.is_some() {
            return Decision::plain(if self.mode.is_gateway() {
                "gateway"
            } else {
                "registered"
            });
        }
        let Some(theirs) = self.peers.get(&peer).cloned() else {
            return Decision::plain("registered");
        };
        if theirs.mode.is_gateway() || their_caps.mode.is_gateway() {
            return self.want_join(peer, theirs.listen_addrs.clone(), Vec::new(), fx);
        }
        if theirs.pn_id.is_some() {
            // A PNE of an existing PN: join that PN's gateway.
            if let Some(gw) = theirs.gateway
                && gw != self.me()
                && !theirs.gateway_addrs.is_empty()
            {
                return self.want_join(gw, theirs.gateway_addrs.clone(), Vec::new(), fx);
            }
            return Decision::plain("registered");
        }
        if self.mode.is_gateway() {
            // A configured gateway without its PN yet: it sets it up; the peer joins when told.
            return Decision::plain("gateway");
        }
        // Step 5: the election, on the capabilities of steps 3-4 and both credentials.
        let me = self.me();
        let mine = self.own_candidacy(my_caps);
        let theirs_c = cpns_overlay::Candidacy::of(their_caps, theirs.may_be_gateway);
        let winner = elect(
            Candidate {
                peer: &me,
                candidacy: &mine,
            },
            Candidate {
                peer: &peer,
                candidacy: &theirs_c,
            },
        )
        .copied();
        let step5 = |s: &State, detail: &str| {
            s.trace(
                B1,
                5,
                &me,
                &me,
                "CheckCapabilitiesForGatewaySuitability",
                detail,
            )
        };
        match winner {
            None => {
                step5(self, "no device may be the gateway");
                Decision::plain("no_gateway")
            }
            Some(w) if w == me => {
                step5(self, "this device wins");
                self.become_gateway_and_announce(peer, fx);
                Decision::plain("gateway")
            }
            Some(_) => {
                step5(self, "the peer wins");
                Decision::plain("waiting_for_gateway")
            }
        }
    }

    /// Steps 6-7, then 8-17.
    fn become_gateway_and_announce(&mut self, peer: PeerId, fx: &mut Fx) {
        let me = self.me();
        self.take_gateway_role(fx);
        self.trace(B1, 6, &me, &me, "TakeGatewayRole", "");
        self.trace(
            B1,
            7,
            &me,
            &peer,
            "DeviceCapabilitiesUpdate",
            self.caps.mode.as_str(),
        );
        let caps = self.caps.clone();
        self.spawn(
            Purpose::Ignore,
            Job::Request {
                peer,
                message: Message::Pn(PnMessage::CapabilitiesUpdate(caps)),
            },
            fx,
        );
        self.start_establish(None, Vec::new(), fx);
    }

    /// This node wants to join the PN of `gateway`: at once if consent is given (the gateway
    /// is a device of its own user, or an invitation was accepted); otherwise the pairing
    /// leaves an invitation for the owner.
    fn want_join(
        &mut self,
        gateway: PeerId,
        addrs: Vec<Multiaddr>,
        waiters: Vec<WaiterId>,
        fx: &mut Fx,
    ) -> Decision {
        let mine = self
            .enrolment
            .as_ref()
            .map(|e| e.credential.body.user.clone());
        match self.peers.get(&gateway) {
            Some(p) if Some(&p.user) != mine.as_ref() => {
                let id = self.leave_invitation(gateway, p.clone(), fx);
                Decision {
                    result: "invitation",
                    invitation: Some(id),
                }
            }
            _ => match self.start_join(gateway, addrs, false, waiters, None, fx) {
                Ok(()) => Decision::plain("joining"),
                Err(e) => {
                    tracing::warn!(%gateway, "not joining: {e}");
                    Decision::plain("registered")
                }
            },
        }
    }

    /// Keeps an invitation to join `gateway`'s PN until the owner answers it.
    pub(super) fn leave_invitation(&mut self, gateway: PeerId, p: Peer, fx: &mut Fx) -> String {
        let gw = gateway.to_string();
        if let Some(existing) = self.invitations.iter().find(|i| i.gateway == gw) {
            return existing.id.clone();
        }
        let id = format!("inv-{}", hex::encode(rand::random::<[u8; 6]>()));
        let inv = Invitation {
            id: id.clone(),
            pn_id: p.pn_id.clone(),
            gateway: gw,
            gateway_addrs: p.listen_addrs.iter().map(|a| a.to_string()).collect(),
            user: p.user.clone(),
            device: p.device.clone(),
            source: "pairing".into(),
            received: fx.now,
        };
        self.keep_invitation(inv, fx);
        tracing::info!(%gateway, invitation = %id, user = %p.user, "a PN of another user: its invitation waits for the owner (`cpns pn accept`)");
        id
    }

    /// Keeps `inv` durably for the owner (the oldest goes beyond [`MAX_INVITATIONS`]).
    pub(super) fn keep_invitation(&mut self, inv: Invitation, fx: &mut Fx) {
        let list = Arc::make_mut(&mut self.invitations);
        if list.len() >= MAX_INVITATIONS {
            let old = list.remove(0);
            fx.push(Effect::Persist(PnWrite::Invitation(
                old.id.into_bytes(),
                None,
            )));
        }
        if let Ok(b) = store::encode(&inv) {
            fx.push(Effect::Persist(PnWrite::Invitation(
                inv.id.clone().into_bytes(),
                Some(b),
            )));
        }
        list.push(inv);
        fx.changed();
    }

    /// The responder's side of step 1 (answered by step 2).
    pub(super) fn on_registration(
        &mut self,
        peer: PeerId,
        reg: EntityRegistration,
        fx: &mut Fx,
    ) -> Message {
        let me = self.me();
        self.trace(
            B1,
            1,
            &peer,
            &me,
            "EntityRegistrationAndDiscovery",
            reg.mode.as_str(),
        );
        if let Err((code, text)) = self.verify_registration(peer, &reg, fx) {
            self.trace(
                B1,
                2,
                &me,
                &peer,
                "EntityRegistrationAndDiscovery",
                format!("refused: {}", code.as_str()),
            );
            return Message::error(code, text);
        }
        match self.own_registration() {
            Some(mine) => {
                self.trace(
                    B1,
                    2,
                    &me,
                    &peer,
                    "EntityRegistrationAndDiscovery",
                    mine.mode.as_str(),
                );
                self.trace(G1, 2, &peer, &me, "CpnsEntityDiscovery", reg.mode.as_str());
                Message::Pn(PnMessage::EntityRegistration(mine))
            }
            None => Message::error(ErrorCode::NotRegistered, "this node is not enrolled"),
        }
    }

    /// The responder's side of step 3 (answered by step 4); the same decision as the
    /// initiator's follows once the answer is on its way.
    pub(super) fn on_caps_exchange(
        &mut self,
        peer: PeerId,
        their_caps: Capabilities,
        fx: &mut Fx,
    ) -> Message {
        let me = self.me();
        self.trace(
            B1,
            3,
            &peer,
            &me,
            "DeviceCapabilitiesExchange",
            their_caps.mode.as_str(),
        );
        if let Err(e) = self.check_caps_claim(&peer, &their_caps) {
            return Message::error(ErrorCode::BadRequest, e);
        }
        self.set_peer_caps(&peer, their_caps.clone(), fx);
        let my_caps = self.caps.clone();
        self.trace(
            B1,
            4,
            &me,
            &peer,
            "DeviceCapabilitiesExchange",
            my_caps.mode.as_str(),
        );
        fx.after_reply = true;
        self.decide(peer, &my_caps, &their_caps, fx);
        fx.after_reply = false;
        Message::Pn(PnMessage::CapabilitiesExchange(my_caps))
    }

    /// Step 7 (or any later capabilities update): a member's capabilities go into the PN
    /// Inventory; a peer that became a gateway while this node is in no PN is joined.
    pub(super) fn on_caps_update(
        &mut self,
        peer: PeerId,
        class: SenderClass,
        caps: Capabilities,
        fx: &mut Fx,
    ) -> Message {
        if let Err(e) = self.check_caps_claim(&peer, &caps) {
            return Message::error(ErrorCode::BadRequest, e);
        }
        if class == SenderClass::Member && self.is_pn_gateway() {
            self.member_caps(peer, caps.clone(), fx);
        }
        let became_gateway = caps.mode.is_gateway()
            && self.peers.get(&peer).is_some_and(|p| {
                !p.mode.is_gateway() || p.caps.as_ref().is_none_or(|c| !c.mode.is_gateway())
            });
        let pairing_step = became_gateway && self.pn.is_none();
        if pairing_step {
            let me = self.me();
            self.trace(
                B1,
                7,
                &peer,
                &me,
                "DeviceCapabilitiesUpdate",
                caps.mode.as_str(),
            );
        }
        self.set_peer_caps(&peer, caps, fx);
        if pairing_step {
            let addrs = self
                .peers
                .get(&peer)
                .map(|p| p.listen_addrs.clone())
                .unwrap_or_default();
            fx.after_reply = true;
            self.want_join(peer, addrs, Vec::new(), fx);
            fx.after_reply = false;
        }
        Message::Ack
    }

    /// Steps 1-2 for the owner (unless the peer is known with a live credential).
    pub(super) fn register_op(&mut self, peer: PeerId, waiter: WaiterId, fx: &mut Fx) {
        let known = self.is_member(&peer)
            || self
                .peers
                .get(&peer)
                .is_some_and(|p| p.expires > fx.now && !self.revoked(p.serial));
        if known || peer == self.me() {
            return fx.resolve(waiter, Reply::Done(Ok(())));
        }
        let Some((reg, withheld)) = self.first_registration() else {
            return fx.resolve(waiter, Reply::Done(Err(self.not_enrolled())));
        };
        self.trace(
            B1,
            1,
            &self.me(),
            &peer,
            "EntityRegistrationAndDiscovery",
            "",
        );
        self.spawn(
            Purpose::RegisterOp {
                waiter,
                peer,
                full: !withheld,
            },
            Job::Request {
                peer,
                message: Message::Pn(PnMessage::EntityRegistration(reg)),
            },
            fx,
        );
    }

    pub(super) fn registered_op(
        &mut self,
        waiter: WaiterId,
        peer: PeerId,
        full: bool,
        done: Done,
        fx: &mut Fx,
    ) {
        let r = self.take_registration_answer(peer, done, fx);
        let again = Purpose::RegisterOp {
            waiter,
            peer,
            full: true,
        };
        if r.is_ok() && !full && self.register_fully(again, peer, fx) {
            return;
        }
        fx.resolve(waiter, Reply::Done(r));
    }

    /// This node's candidacy (the election's facts) with `caps`.
    pub(super) fn own_candidacy(&self, caps: &Capabilities) -> cpns_overlay::Candidacy {
        let allowed = self
            .enrolment
            .as_ref()
            .is_some_and(|e| e.credential.body.modes.contains(Mode::Gateway))
            && self.mode_setting != crate::config::ModeSetting::Pne
            && self.admin_allows_gateway(&self.me());
        cpns_overlay::Candidacy::of(caps, allowed)
    }

    /// Whether this node may act as a gateway: its credential allows it and its owner did
    /// not say `never`.
    pub(super) fn may_be_gateway(&self) -> bool {
        let allowed = self
            .enrolment
            .as_ref()
            .is_some_and(|e| e.credential.body.modes.contains(Mode::Gateway));
        allowed
            && self.mode_setting != crate::config::ModeSetting::Pne
            && self.caps.gateway_preference != cpns_overlay::GatewayPreference::Never
            && self.admin_allows_gateway(&self.me())
    }

    /// Step 6 (and a take-over): gateway mode, a DHT server.
    pub(super) fn take_gateway_role(&mut self, fx: &mut Fx) {
        self.mode = super::gateway_mode(self.mode_setting).unwrap_or(NodeMode::PneGateway);
        self.caps.mode = self.mode;
        self.caps.gateway_preference = self.preference();
        fx.push(Effect::KadMode(cpns_overlay::KadMode::Server));
        fx.changed();
    }
}
