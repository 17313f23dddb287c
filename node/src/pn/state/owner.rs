//! The owner's other operations, and what the node learns about trust: enrolment, renewed
//! credentials, revocation lists (which reach every peer and member, and the overlay's
//! admissions), the mode setting (5.6.9 "request to change its Mode"), invitations waiting for
//! consent, and this node's own services for the PN Inventory.
//!
//! The enrolment file has one writer, this actor: a new enrolment, a renewed credential or a
//! newer revocation list is saved in the data dir before it is used.

use std::sync::Arc;

use cpns_directory::Trust;
use cpns_keys::{EntityCredential, RevocationList};
use cpns_overlay::{KadMode, Message, NodeMode, PnMessage};
use libp2p::PeerId;

use super::super::Reply;
use super::super::effect::{Done, Effect, Fx, Job, WaiterId};
use super::gateway::bounded_services;
use super::{Purpose, State, unexpected};
use crate::config::ModeSetting;
use crate::enrolment::Enrolment;
use crate::error::OpError;
use crate::store::PnWrite;

impl State {
    /// The node was enrolled (`cpns up`): save, then use.
    pub(super) fn enrolled(&mut self, e: Enrolment, waiter: WaiterId, fx: &mut Fx) {
        let e = Arc::new(e);
        self.spawn(
            Purpose::SaveEnrolment {
                waiter: Some(waiter),
                then: Some(e.clone()),
            },
            Job::SaveEnrolment(e),
            fx,
        );
    }

    /// A renewed credential (verified by the renewal module): save, then use.
    pub(super) fn credential_renewed(
        &mut self,
        credential: EntityCredential,
        waiter: WaiterId,
        fx: &mut Fx,
    ) {
        let Some(current) = self.enrolment.clone() else {
            return fx.resolve(
                waiter,
                Reply::Done(Err(OpError::Conflict("not enrolled".into()))),
            );
        };
        let mut updated = (*current).clone();
        updated.credential = credential;
        let e = Arc::new(updated);
        self.spawn(
            Purpose::SaveEnrolment {
                waiter: Some(waiter),
                then: Some(e.clone()),
            },
            Job::SaveEnrolment(e),
            fx,
        );
    }

    pub(super) fn enrolment_saved(
        &mut self,
        waiter: Option<WaiterId>,
        then: Option<Arc<Enrolment>>,
        done: Done,
        fx: &mut Fx,
    ) {
        let r = match done {
            Done::Saved(r) => r,
            other => Err(unexpected(&other)),
        };
        if r.is_ok()
            && let Some(e) = then
        {
            let fresh = self.enrolment.is_none()
                || self
                    .enrolment
                    .as_ref()
                    .is_some_and(|old| old.ca != e.ca || old.server != e.server);
            if fresh {
                self.trust = Some(Arc::new(Trust::new(e.ca, e.revocations.clone())));
            }
            self.enrolment = Some(e);
            fx.changed();
        }
        if let Some(w) = waiter {
            fx.resolve(w, Reply::Done(r));
        }
    }

    /// A revocation list from anywhere: if it is CA-signed and newer, it is saved, every
    /// revoked peer and member loses its admission at once, a gateway de-registers its revoked
    /// members and gossips the list to its PN.
    pub(super) fn on_revocations(&mut self, list: RevocationList, fx: &mut Fx) {
        let Some(trust) = self.trust.clone() else {
            return;
        };
        if !trust.update_revocations(list.clone()) {
            return;
        }
        tracing::info!(
            version = list.version,
            revoked = list.serials.len(),
            "newer revocation list"
        );
        if let Some(e) = self.enrolment.clone() {
            let mut updated = (*e).clone();
            updated.revocations = list.clone();
            let updated = Arc::new(updated);
            self.enrolment = Some(updated.clone());
            self.spawn(
                Purpose::SaveEnrolment {
                    waiter: None,
                    then: None,
                },
                Job::SaveEnrolment(updated),
                fx,
            );
        }
        let revoked_peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| list.contains(p.serial))
            .map(|(p, _)| *p)
            .collect();
        for peer in revoked_peers {
            tracing::info!(%peer, "peer's credential revoked: refusing it from now on");
            Arc::make_mut(&mut self.peers).remove(&peer);
            fx.push(Effect::Refuse {
                peer,
                code: cpns_overlay::ErrorCode::Revoked,
            });
        }
        let me = self.me();
        let revoked_members: Vec<PeerId> = self
            .pn
            .as_ref()
            .map(|p| {
                p.members
                    .values()
                    .filter(|m| m.info.peer_id != me && list.contains(m.info.serial))
                    .map(|m| m.info.peer_id)
                    .collect()
            })
            .unwrap_or_default();
        for peer in revoked_members {
            tracing::info!(%peer, "member's credential revoked: refusing it from now on");
            fx.push(Effect::Refuse {
                peer,
                code: cpns_overlay::ErrorCode::Revoked,
            });
            self.forget_subscriber(&peer);
            self.deregister_revoked(peer, fx);
        }
        if self.is_pn_gateway() {
            let members: Vec<PeerId> = self
                .pn
                .as_ref()
                .map(|p| p.members.keys().copied().filter(|m| *m != me).collect())
                .unwrap_or_default();
            for m in members {
                fx.send(m, Message::Pn(PnMessage::Revocations(list.clone())));
            }
        }
        fx.changed();
    }

    /// Changes the mode setting at run time (5.6.9 "request to change its Mode"), from a PNE
    /// or from the gateway. Becoming a gateway sets a PN up with `cpns-auth`, or, on a PNE of a
    /// PN, takes that PN's gateway role over (a planned gateway switch). The gateway of a PN
    /// that becomes a PNE first hands its role to the member the election ranks first (the PN
    /// keeps running and its key epoch continues); with no member that may be a gateway, it
    /// stays the gateway. `gateway-only` and `gateway` switch between each other in place.
    pub(super) fn set_mode_op(&mut self, setting: ModeSetting, waiter: WaiterId, fx: &mut Fx) {
        let in_pn = self.pn.is_some();
        let gateway_of_pn = self.is_pn_gateway();
        match setting {
            s if s.is_gateway() && in_pn && gateway_of_pn => {
                // gateway <-> gateway-only: the same role, with or without the PNE part.
                self.mode_setting = setting;
                self.take_gateway_role(fx);
                let me = self.me();
                let mode = self.mode;
                if let Some(m) = self.pn_mut().and_then(|p| p.members.get_mut(&me)) {
                    m.info.mode = mode;
                }
                self.persist_member(&me, fx);
                self.send_members_update(fx);
                fx.resolve(waiter, Reply::Done(Ok(())));
            }
            ModeSetting::Pne | ModeSetting::Auto if gateway_of_pn => {
                let me = self.me();
                let candidates: Vec<(PeerId, cpns_overlay::Candidacy)> = self
                    .pn
                    .as_ref()
                    .map(|p| {
                        p.members
                            .values()
                            .filter(|m| m.info.peer_id != me)
                            .filter_map(|m| Some((m.info.peer_id, m.info.candidacy.clone()?)))
                            .collect()
                    })
                    .unwrap_or_default();
                if setting == ModeSetting::Auto {
                    self.mode_setting = setting;
                    return fx.resolve(waiter, Reply::Done(Ok(())));
                }
                match super::super::election::rank(&candidates).first() {
                    Some(best) => {
                        self.mode_setting = setting;
                        self.hand_off_op(*best, waiter, fx);
                    }
                    None => fx.resolve(
                        waiter,
                        Reply::Done(Err(OpError::Conflict(
                            "no other member may be the PN's gateway: this node stays one while the PN runs"
                                .into(),
                        ))),
                    ),
                }
            }
            s if s.is_gateway() && in_pn && !gateway_of_pn => {
                // A planned gateway switch: this member takes the role over, the others (the
                // old gateway too) re-join through it.
                // The waiter is resolved (with the PN id) when the take-over ends.
                self.mode_setting = setting;
                if let Err(e) = self.take_over(vec![waiter], fx) {
                    self.mode_setting = ModeSetting::Auto;
                    return fx.resolve(waiter, Reply::Done(Err(e)));
                }
            }
            ModeSetting::Gateway | ModeSetting::GatewayOnly => {
                self.mode_setting = setting;
                self.take_gateway_role(fx);
                if !in_pn && self.enrolment.is_some() {
                    self.start_establish(None, vec![waiter], fx);
                } else {
                    fx.resolve(waiter, Reply::Done(Ok(())));
                }
            }
            ModeSetting::Pne => {
                self.mode_setting = setting;
                self.mode = NodeMode::Pne;
                self.caps.mode = NodeMode::Pne;
                fx.push(Effect::KadMode(if in_pn {
                    KadMode::Client
                } else {
                    KadMode::Server
                }));
                fx.resolve(waiter, Reply::Done(Ok(())));
            }
            ModeSetting::Auto => {
                self.mode_setting = setting;
                fx.resolve(waiter, Reply::Done(Ok(())));
            }
        }
        self.caps.gateway_preference = self.preference();
        fx.changed();
    }

    /// The owner accepts an invitation: join that PN.
    pub(super) fn accept_op(&mut self, id: &str, waiter: WaiterId, fx: &mut Fx) {
        let Some(inv) = self.invitations.iter().find(|i| i.id == id).cloned() else {
            return fx.resolve(
                waiter,
                Reply::Pn(Err(OpError::NotFound(format!("no invitation {id}")))),
            );
        };
        let Ok(gateway) = inv.gateway.parse::<PeerId>() else {
            return fx.resolve(
                waiter,
                Reply::Pn(Err(OpError::Internal(
                    "a stored invitation is unreadable".into(),
                ))),
            );
        };
        let addrs = inv
            .gateway_addrs
            .iter()
            .filter_map(|a| a.parse().ok())
            .collect();
        self.drop_invitation(id, fx);
        if let Err(e) = self.start_join(gateway, addrs, true, vec![waiter], None, fx) {
            fx.resolve(waiter, Reply::Pn(Err(e)));
        }
    }

    /// The owner declines an invitation.
    pub(super) fn decline_op(&mut self, id: &str, waiter: WaiterId, fx: &mut Fx) {
        let inv = self.invitations.iter().find(|i| i.id == id).cloned();
        let r = match inv {
            // cpns-auth made it: dropped once cpns-auth forgot it too.
            Some(inv) if self.decline_at_server(&inv, waiter, fx) => return,
            Some(_) => {
                self.drop_invitation(id, fx);
                Ok(())
            }
            None => Err(OpError::NotFound(format!("no invitation {id}"))),
        };
        fx.resolve(waiter, Reply::Done(r));
    }

    pub(super) fn drop_invitation(&mut self, id: &str, fx: &mut Fx) -> bool {
        let list = Arc::make_mut(&mut self.invitations);
        let before = list.len();
        list.retain(|i| i.id != id);
        let dropped = list.len() != before;
        if dropped {
            fx.push(Effect::Persist(PnWrite::Invitation(
                id.as_bytes().to_vec(),
                None,
            )));
            fx.changed();
        }
        dropped
    }

    /// This node's own services changed: the PN Inventory lists them.
    pub(super) fn own_services_op(&mut self, ids: Vec<String>, waiter: WaiterId, fx: &mut Fx) {
        self.own_services = bounded_services(ids);
        self.send_own_services(fx);
        fx.resolve(waiter, Reply::Done(Ok(())));
    }
}
