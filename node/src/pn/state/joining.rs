//! The PNE's side of a PN: the connection setup that makes it a member (B.1 steps 18 and
//! 24-26), membership updates and key forwards from its gateway, leaving (G.1 step 9), and
//! reconnecting after a restart.
//!
//! A PNE joins only with proof: the step-26 confirmation counts only after a step-24 grant
//! that opens under this entity's EUKey for that PN — only `cpns-auth` can seal one — so a
//! peer that merely claims to be a gateway cannot make a device join its "PN".

use std::collections::BTreeMap;
use std::sync::Arc;

use cpns_keys::GroupKey;
use cpns_overlay::{
    ConnectionSetup, ErrorCode, GroupKeyGrant, KadMode, MAX_EXPELLED, MAX_LISTEN_ADDRS,
    MembershipGrant, Message, Multiaddr, NodeMode, PnMessage, Status, transcript,
};
use libp2p::PeerId;

use super::super::effect::{Done, Effect, Fx, Job, WaiterId};
use super::super::{Member, Membership, PnView, Reply};
use super::{Joining, MAX_MEMBERS, Purpose, State, clone_err, peer_error, pn_group, unexpected};
use crate::config::ModeSetting;
use crate::error::OpError;
use crate::trace::flow::{B1, G1, GW_SWITCH};

impl State {
    /// Starts joining `gateway`'s PN. `consented`: the owner accepted (or it is a re-join of
    /// the same PN through its new gateway); otherwise the gateway must be a device of this
    /// node's own user. `previous`: the PN to restore if a re-join fails.
    pub(super) fn start_join(
        &mut self,
        gateway: PeerId,
        addrs: Vec<Multiaddr>,
        consented: bool,
        waiters: Vec<WaiterId>,
        previous: Option<Arc<PnView>>,
        fx: &mut Fx,
    ) -> Result<(), OpError> {
        if self.joining.is_some() {
            return Err(OpError::Conflict("a join is already under way".into()));
        }
        if self.pn.is_some() {
            return Err(OpError::Conflict("already a member of a PN".into()));
        }
        self.enrolment()?;
        let addrs: Vec<Multiaddr> = addrs.into_iter().take(MAX_LISTEN_ADDRS).collect();
        if !addrs.is_empty() {
            fx.push(Effect::AddAddrs {
                peer: gateway,
                addrs: addrs.clone(),
            });
        }
        self.joining = Some(Joining {
            gateway,
            addrs,
            waiters,
            consented,
            grant: None,
            previous,
            setup_sent: false,
        });
        fx.changed();
        let registered = self.peers.get(&gateway).is_some_and(|p| p.expires > fx.now);
        if registered {
            self.send_setup(fx);
        } else {
            // A gateway met through another member has not registered with us yet: steps
            // 1-2 first (its credential says whose PN this is).
            let Some(reg) = self.own_registration() else {
                return Err(self.fail_join_now(OpError::Conflict("not enrolled".into()), fx));
            };
            self.trace(
                B1,
                1,
                &self.me(),
                &gateway,
                "EntityRegistrationAndDiscovery",
                "",
            );
            self.spawn(
                Purpose::JoinRegister,
                Job::Request {
                    peer: gateway,
                    message: Message::Pn(PnMessage::EntityRegistration(reg)),
                },
                fx,
            );
        }
        Ok(())
    }

    fn fail_join_now(&mut self, e: OpError, fx: &mut Fx) -> OpError {
        self.fail_join(clone_err(&e), fx);
        e
    }

    /// Steps 1-2 with the gateway came back: consent, then step 18.
    pub(super) fn join_registered(&mut self, done: Done, fx: &mut Fx) {
        let Some(gateway) = self.joining.as_ref().map(|j| j.gateway) else {
            return;
        };
        if let Err(e) = self.take_registration_answer(gateway, done, fx) {
            return self.fail_join(e, fx);
        }
        let mine = self
            .enrolment
            .as_ref()
            .map(|e| e.credential.body.user.clone());
        let consented = self.joining.as_ref().is_some_and(|j| j.consented);
        if let Some(p) = self.peers.get(&gateway).cloned()
            && !consented
            && Some(&p.user) != mine.as_ref()
        {
            let id = self.leave_invitation(gateway, p, fx);
            return self.fail_join(
                OpError::Refused(format!(
                    "the PN belongs to another user: accept invitation {id} to join it"
                )),
                fx,
            );
        }
        self.send_setup(fx);
    }

    /// B.1 step 18.
    fn send_setup(&mut self, fx: &mut Fx) {
        let Some(gateway) = self.joining.as_ref().map(|j| j.gateway) else {
            return;
        };
        let enrolment = match self.enrolment() {
            Ok(e) => e,
            Err(e) => return self.fail_join(e, fx),
        };
        let me = self.me();
        let pn_hint = self
            .peers
            .get(&gateway)
            .and_then(|p| p.pn_id.clone())
            .unwrap_or_default();
        let nonce: [u8; 16] = rand::random();
        let t = transcript::membership_request(&pn_hint, &gateway, &me, fx.now, &nonce);
        let setup = ConnectionSetup {
            credential: enrolment.credential.clone(),
            pn_id: pn_hint,
            time: fx.now,
            nonce,
            eukey_mac: enrolment.eukey.mac(&t),
            signature: self.env.identity.sign(&t),
            capabilities: self.caps.clone(),
        };
        if let Some(j) = self.joining.as_mut() {
            j.setup_sent = true;
        }
        self.trace(B1, 18, &me, &gateway, "ConnectionSetupRequest", "");
        self.spawn(
            Purpose::JoinSetup,
            Job::Request {
                peer: gateway,
                message: Message::Pn(PnMessage::ConnectionSetupRequest(setup)),
            },
            fx,
        );
    }

    /// Opens a key grant sealed for this node under its EUKey (only `cpns-auth` can seal
    /// one): the key, checked against its label.
    pub(super) fn open_grant(&self, grant: &GroupKeyGrant) -> Result<GroupKey, OpError> {
        crate::keyring::open_grant(&*self.enrolment()?, &self.env.me, grant)
    }

    /// Opens a grant and stores the key (durably, before the answer that depends on it).
    pub(super) fn install_grant(&self, grant: &GroupKeyGrant, fx: &mut Fx) -> Result<(), OpError> {
        let key = self.open_grant(grant)?;
        self.env.metrics.key_epochs_received.inc();
        fx.push(Effect::InstallKey(key));
        fx.changed();
        Ok(())
    }

    /// Step 24 at the PNE: the gateway hands over the PN key; step 25 confirms.
    pub(super) fn on_membership_with_key(
        &mut self,
        peer: PeerId,
        grant: MembershipGrant,
        fx: &mut Fx,
    ) -> Message {
        let pending = self
            .joining
            .as_ref()
            .is_some_and(|j| j.gateway == peer && j.setup_sent);
        if !pending {
            return Message::error(
                ErrorCode::Forbidden,
                "no connection setup pending with this gateway",
            );
        }
        let me = self.me();
        self.trace(
            B1,
            24,
            &peer,
            &me,
            "PnMembershipWithGroupKey",
            format!("epoch {}", grant.epoch),
        );
        let g = GroupKeyGrant {
            group: pn_group(&grant.pn_id),
            epoch: grant.epoch,
            sealed: grant.sealed_key,
        };
        if let Err(e) = self.install_grant(&g, fx) {
            return Message::error(ErrorCode::BadRequest, e.to_string());
        }
        if let Some(j) = self.joining.as_mut() {
            j.grant = Some((grant.pn_id.clone(), grant.epoch));
        }
        self.trace(
            B1,
            25,
            &me,
            &peer,
            "PnMembershipWithGroupKeyConfirmation",
            format!("epoch {}", grant.epoch),
        );
        Message::Pn(PnMessage::MembershipConfirmation {
            pn_id: grant.pn_id,
            epoch: grant.epoch,
        })
    }

    /// Step 26 came back (or the setup failed).
    pub(super) fn join_answered(&mut self, done: Done, fx: &mut Fx) {
        let Some(gateway) = self.joining.as_ref().map(|j| j.gateway) else {
            return;
        };
        let me = self.me();
        let summary = match done {
            Done::Answer(Ok(Message::Pn(PnMessage::ConnectionSetupConfirmation(s)))) => s,
            Done::Answer(Ok(other)) => {
                return self.fail_join(
                    OpError::Refused(format!("step 26: unexpected {}", other.name())),
                    fx,
                );
            }
            Done::Answer(Err(cpns_overlay::Error::Refused { reply, .. })) => {
                self.trace(
                    B1,
                    26,
                    &gateway,
                    &me,
                    "ConnectionSetupConfirmation",
                    format!("refused: {}", reply.code.as_str()),
                );
                return self.fail_join(
                    OpError::Refused(format!("the gateway refused: {reply}")),
                    fx,
                );
            }
            Done::Answer(Err(e)) => {
                return self.fail_join(OpError::Unavailable(format!("step 18: {e}")), fx);
            }
            other => return self.fail_join(unexpected(&other), fx),
        };
        let granted = self
            .joining
            .as_ref()
            .and_then(|j| j.grant.clone())
            .is_some_and(|(pn, epoch)| pn == summary.pn_id && epoch <= summary.epoch);
        if !granted || summary.gateway != gateway {
            self.trace(
                B1,
                26,
                &gateway,
                &me,
                "ConnectionSetupConfirmation",
                "refused: no key grant from cpns-auth for this PN",
            );
            return self.fail_join(
                OpError::Refused(format!(
                    "{gateway} confirmed a PN ({}) that no key grant from cpns-auth vouches for",
                    summary.pn_id
                )),
                fx,
            );
        }
        self.trace(
            B1,
            26,
            &gateway,
            &me,
            "ConnectionSetupConfirmation",
            summary.pn_id.clone(),
        );
        self.trace(G1, 3, &gateway, &me, "PnConnected", summary.pn_id.clone());
        let Some(joining) = self.joining.take() else {
            return;
        };
        let gateway_addrs = if joining.addrs.is_empty() {
            self.peers
                .get(&gateway)
                .map(|p| p.listen_addrs.clone())
                .unwrap_or_default()
        } else {
            joining.addrs.clone()
        };
        let membership = Membership {
            pn_id: summary.pn_id.clone(),
            gateway,
            gateway_addrs,
            owner: summary.owner.clone(),
            epoch: summary.epoch,
        };
        let members = members_from(&summary.members, joining.previous.as_deref());
        self.pn = Some(Arc::new(PnView {
            membership,
            members,
        }));
        self.persist_membership(fx);
        self.persist_inventory(fx);
        let infos = self.member_infos();
        self.admit_members(infos.iter(), fx);
        // A PNE-only member is a DHT client (DESIGN: gateways route, PNEs only ask).
        if matches!(self.mode_setting, ModeSetting::Auto | ModeSetting::Pne)
            && self.mode == NodeMode::Pne
        {
            fx.push(Effect::KadMode(KadMode::Client));
        }
        self.gateway_heard = fx.now;
        self.env.metrics.pn_established();
        tracing::info!(pn = %summary.pn_id, %gateway, epoch = summary.epoch, "member of the PN");
        fx.changed();
        // Tell the gateway what this node offers, for its PN Inventory.
        if !self.own_services.is_empty() {
            self.send_own_services(fx);
        }
        Self::resolve_all(joining.waiters, &Ok(summary.pn_id), fx);
    }

    /// A join failed: a re-join keeps the PN it had; the waiters hear why.
    pub(super) fn fail_join(&mut self, e: OpError, fx: &mut Fx) {
        let Some(j) = self.joining.take() else {
            return;
        };
        tracing::warn!(gateway = %j.gateway, "joining the PN failed: {e}");
        if self.pn.is_none()
            && let Some(prev) = j.previous
        {
            self.pn = Some(prev);
        }
        fx.changed();
        Self::resolve_all(j.waiters, &Err(e), fx);
    }

    /// A membership update from this node's gateway: a new key epoch, the member list, the
    /// entities expelled.
    pub(super) fn on_membership_update(
        &mut self,
        peer: PeerId,
        grant: MembershipGrant,
        fx: &mut Fx,
    ) -> Message {
        let ok = self
            .pn
            .as_ref()
            .is_some_and(|p| p.membership.gateway == peer && p.membership.pn_id == grant.pn_id);
        if !ok {
            return Message::error(ErrorCode::Forbidden, "not this node's gateway");
        }
        let g = GroupKeyGrant {
            group: pn_group(&grant.pn_id),
            epoch: grant.epoch,
            sealed: grant.sealed_key.clone(),
        };
        if let Err(e) = self.install_grant(&g, fx) {
            return Message::error(ErrorCode::BadRequest, e.to_string());
        }
        let current = self.pn.as_ref().map(|p| p.membership.epoch).unwrap_or(0);
        // Updates of concurrent joins can arrive out of order: only the newest epoch's list is
        // the current one (an older key is still kept, as the previous).
        if grant.epoch >= current {
            let old = self.pn.clone();
            let members = members_from(&grant.members, old.as_deref());
            if let Some(old) = &old {
                for gone in old.members.keys().filter(|p| !members.contains_key(p)) {
                    self.unadmit_former(gone, fx);
                }
            }
            if let Some(p) = self.pn_mut() {
                p.membership.epoch = grant.epoch;
                p.members = members;
            }
            let expelled: Vec<PeerId> = grant.expelled.iter().take(MAX_EXPELLED).copied().collect();
            for e in &expelled {
                fx.push(Effect::Refuse {
                    peer: *e,
                    code: ErrorCode::Forbidden,
                });
                Arc::make_mut(&mut self.peers).remove(e);
            }
            self.expelled = Arc::new(expelled.into_iter().collect());
            self.persist_expelled(fx);
            self.persist_membership(fx);
            self.persist_inventory(fx);
            let infos = self.member_infos();
            self.admit_members(infos.iter(), fx);
        }
        self.gateway_heard = fx.now;
        fx.changed();
        Message::Ack
    }

    /// The gateway's member list without a new key (candidacies, information, expulsions).
    pub(super) fn on_members_update(
        &mut self,
        peer: PeerId,
        pn_id: String,
        members: Vec<cpns_overlay::MemberInfo>,
        expelled: Vec<PeerId>,
        fx: &mut Fx,
    ) -> Message {
        let ok = self
            .pn
            .as_ref()
            .is_some_and(|p| p.membership.gateway == peer && p.membership.pn_id == pn_id);
        if !ok {
            return Message::error(ErrorCode::Forbidden, "not this node's gateway");
        }
        let old = self.pn.clone();
        let members = members_from(&members, old.as_deref());
        if let Some(old) = &old {
            for gone in old.members.keys().filter(|p| !members.contains_key(p)) {
                self.unadmit_former(gone, fx);
            }
        }
        if let Some(p) = self.pn_mut() {
            p.members = members;
        }
        let expelled: Vec<PeerId> = expelled.into_iter().take(MAX_EXPELLED).collect();
        for e in &expelled {
            if !self.expelled.contains(e) {
                fx.push(Effect::Refuse {
                    peer: *e,
                    code: ErrorCode::Forbidden,
                });
                Arc::make_mut(&mut self.peers).remove(e);
            }
        }
        self.expelled = Arc::new(expelled.into_iter().collect());
        self.persist_expelled(fx);
        self.persist_inventory(fx);
        let infos = self.member_infos();
        self.admit_members(infos.iter(), fx);
        self.gateway_heard = fx.now;
        fx.changed();
        Message::Ack
    }

    /// Keys forwarded by the gateway from `cpns-auth` (5.6.6 push).
    pub(super) fn on_key_forward(
        &mut self,
        _peer: PeerId,
        grants: Vec<GroupKeyGrant>,
        fx: &mut Fx,
    ) -> Message {
        let failed = grants
            .iter()
            .filter(|g| self.install_grant(g, fx).is_err())
            .count();
        if failed > 0 {
            return Message::error(
                ErrorCode::BadRequest,
                format!("{failed} grants did not open"),
            );
        }
        Message::Ack
    }

    /// Forgets the PN locally (after leaving, expulsion or release).
    pub(super) fn forget_pn(&mut self, fx: &mut Fx) {
        if let Some(pn) = self.pn.take() {
            fx.push(Effect::RemoveKeys(pn_group(&pn.membership.pn_id)));
            for peer in pn.members.keys().filter(|p| **p != self.env.me) {
                self.unadmit_former(peer, fx);
            }
        }
        self.expelled = Arc::default();
        self.persist_expelled(fx);
        self.persist_membership(fx);
        fx.push(Effect::Persist(crate::store::PnWrite::ClearInventory));
        fx.changed();
    }

    /// G.1 step 9 at the PNE: ask the gateway to de-register this node, then forget the PN.
    pub(super) fn leave_op(&mut self, waiter: WaiterId, fx: &mut Fx) {
        let Some(pn) = self.pn.clone() else {
            return fx.resolve(
                waiter,
                Reply::Done(Err(OpError::Conflict("not in a PN".into()))),
            );
        };
        let gateway = pn.membership.gateway;
        if gateway == self.me() {
            return fx.resolve(
                waiter,
                Reply::Done(Err(OpError::Conflict(
                    "this node is the PN's gateway: release the PN instead (`cpns pn release`)"
                        .into(),
                ))),
            );
        }
        let me = self.me();
        self.trace(
            G1,
            9,
            &me,
            &gateway,
            "DisconnectionRequest",
            pn.membership.pn_id.clone(),
        );
        self.spawn(
            Purpose::Leave { waiter },
            Job::Request {
                peer: gateway,
                message: Message::Pn(PnMessage::Leave {
                    pn_id: pn.membership.pn_id.clone(),
                }),
            },
            fx,
        );
    }

    pub(super) fn left(&mut self, waiter: WaiterId, done: Done, fx: &mut Fx) {
        match done {
            Done::Answer(Ok(_)) => {
                self.forget_pn(fx);
                fx.resolve(waiter, Reply::Done(Ok(())));
            }
            Done::Answer(Err(e)) => fx.resolve(waiter, Reply::Done(Err(peer_error("leave", e)))),
            other => fx.resolve(waiter, Reply::Done(Err(unexpected(&other)))),
        }
    }

    /// After a restart: reach the gateway, register again (steps 1-2), and take the current
    /// member list. The PN the node kept is served meanwhile (offline first).
    pub(super) fn resume(&mut self, fx: &mut Fx) {
        let Some(pn) = self.pn.clone() else { return };
        if matches!(self.mode_setting, ModeSetting::Auto | ModeSetting::Pne) {
            fx.push(Effect::KadMode(KadMode::Client));
        }
        let gateway = pn.membership.gateway;
        self.spawn(
            Purpose::ResumeDial,
            Job::DialAny {
                peer: gateway,
                addrs: pn.membership.gateway_addrs.clone(),
            },
            fx,
        );
    }

    pub(super) fn resume_dialed(&mut self, done: Done, fx: &mut Fx) {
        let Some(gateway) = self.pn.as_ref().map(|p| p.membership.gateway) else {
            return;
        };
        if let Done::Dialed(Err(e)) = &done {
            tracing::warn!(%gateway, "cannot reach the PN's gateway now: {e}");
            return;
        }
        let Some(reg) = self.own_registration() else {
            return;
        };
        self.trace(
            B1,
            1,
            &self.me(),
            &gateway,
            "EntityRegistrationAndDiscovery",
            "",
        );
        self.spawn(
            Purpose::ResumeRegister,
            Job::Request {
                peer: gateway,
                message: Message::Pn(PnMessage::EntityRegistration(reg)),
            },
            fx,
        );
    }

    pub(super) fn resume_registered(&mut self, done: Done, fx: &mut Fx) {
        let Some(pn) = self.pn.clone() else { return };
        let gateway = pn.membership.gateway;
        if let Err(e) = self.take_registration_answer(gateway, done, fx) {
            tracing::warn!(%gateway, "the gateway did not take this node's registration: {e}");
            return;
        }
        self.spawn(
            Purpose::ResumeInventory,
            Job::Request {
                peer: gateway,
                message: Message::Pn(PnMessage::InventoryRequest {
                    pn_id: pn.membership.pn_id.clone(),
                }),
            },
            fx,
        );
    }

    pub(super) fn resume_inventory(&mut self, done: Done, fx: &mut Fx) {
        let Done::Answer(Ok(Message::Pn(PnMessage::InventoryResponse(summary)))) = done else {
            return;
        };
        let ok = self.pn.as_ref().is_some_and(|p| {
            p.membership.pn_id == summary.pn_id && p.membership.gateway == summary.gateway
        });
        if !ok {
            return;
        }
        let old = self.pn.clone();
        let members = members_from(&summary.members, old.as_deref());
        if let Some(p) = self.pn_mut() {
            p.members = members;
        }
        self.persist_inventory(fx);
        let infos = self.member_infos();
        self.admit_members(infos.iter(), fx);
        self.gateway_heard = fx.now;
        fx.changed();
        if !self.own_services.is_empty() {
            self.send_own_services(fx);
        }
    }

    /// Re-joins the PN through `gateway` (5.6.9: the server names it the gateway now). The
    /// key stays; on failure the old membership is kept.
    pub(super) fn rehome(&mut self, gateway: PeerId, mut addrs: Vec<Multiaddr>, fx: &mut Fx) {
        if self.pn.as_ref().map(|p| p.membership.gateway) == Some(gateway) {
            return;
        }
        if self.joining.is_some() {
            tracing::debug!(%gateway, "a join is already under way");
            return;
        }
        let was_gateway = self.is_pn_gateway();
        if was_gateway {
            tracing::info!(%gateway, "the PN has another gateway now; this node becomes one of its PNEs");
            self.step_down(fx);
        }
        let old = self.pn.take();
        if addrs.is_empty()
            && let Some(m) = old.as_ref().and_then(|p| p.members.get(&gateway))
        {
            addrs = m.info.listen_addrs.clone();
        }
        let me = self.me();
        self.trace(GW_SWITCH, 4, &me, &gateway, "RejoinThroughNewGateway", "");
        if let Err(e) = self.start_join(gateway, addrs, true, Vec::new(), old.clone(), fx) {
            tracing::warn!(%gateway, "re-joining through the new gateway failed: {e}");
            if self.pn.is_none() {
                self.pn = old;
            }
        }
    }
}

/// A member table from a member list: capped, with what the old table knew of each member
/// (capabilities, services, liveness) kept.
pub(super) fn members_from(
    list: &[cpns_overlay::MemberInfo],
    old: Option<&PnView>,
) -> BTreeMap<PeerId, Member> {
    list.iter()
        .take(MAX_MEMBERS)
        .map(|info| {
            let mut info = info.clone();
            info.listen_addrs.truncate(MAX_LISTEN_ADDRS);
            let prev = old.and_then(|p| p.members.get(&info.peer_id));
            (
                info.peer_id,
                Member {
                    caps: prev.and_then(|m| m.caps.clone()),
                    services: prev.map(|m| m.services.clone()).unwrap_or_default(),
                    live: prev.map(|m| m.live.clone()).unwrap_or_default(),
                    info,
                },
            )
        })
        .collect()
}

/// A member that the server lists but nobody has heard from since.
pub(super) fn offline(mut info: cpns_overlay::MemberInfo) -> cpns_overlay::MemberInfo {
    info.status = Status::Offline;
    info
}
