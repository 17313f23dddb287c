//! Switching a PN's gateway (5.6.9 "switch current PN GW to other PN GW"): a member takes
//! the role over, by its owner's request or because the gateway fell silent, and every other
//! member re-joins the PN through the new gateway.
//!
//! `cpns-auth` is the one place that decides who the gateway is: a take-over is a gateway
//! set-up (B.1 steps 8-17) claiming the PN with `take_over`, and a member believes
//! [`PnMessage::GatewayChanged`] only after the server's PN record confirms it (one lookup at a
//! time, whatever the number of such messages). A gateway that comes back after its PN moved
//! on is told the new gateway at step 17 and joins it as a PNE.
//!
//! Failover, at a PNE whose heartbeats have gone unanswered for
//! `status.gateway_failover_after_secs`: the members that `cpns-auth` lists (the silent
//! gateway left out) are ranked by the election's rule (capabilities; a member that may not
//! be a gateway is left out; `pn::election::rank`); the member of rank `r` waits `r` heartbeat
//! intervals, asking the server each time whether someone else took over, and then takes over
//! if it may be a gateway. Without `cpns-auth` no one takes over (the server decides).

use std::time::Duration;

use cpns_overlay::{AuthMessage, ErrorCode, KadMode, Message, Multiaddr, NodeMode, PnMessage};

use super::super::Reply;
use libp2p::PeerId;

use super::super::effect::{Done, Effect, Fx, Job};
use super::{Failover, Purpose, State, unexpected};
use crate::config::ModeSetting;
use crate::error::OpError;
use crate::trace::flow::GW_SWITCH;

/// Most rounds a failover waits for lower-ranked members before it gives up (a new one starts
/// while the gateway stays silent).
const MAX_ROUNDS: usize = 16;

impl State {
    /// This PNE takes its PN's gateway role over (B.1 steps 6 and 8-17 with a take-over
    /// claim); every member hears of it once the server agreed.
    pub(super) fn take_over(&mut self, waiters: Vec<u64>, fx: &mut Fx) -> Result<(), OpError> {
        let Some(pn) = self.pn.clone() else {
            return Err(OpError::Conflict("not in a PN".into()));
        };
        let old = pn.membership.gateway;
        if old == self.me() {
            Self::resolve_all(waiters, &Ok(pn.membership.pn_id.clone()), fx);
            return Ok(());
        }
        if !self.may_be_gateway() {
            return Err(OpError::Refused(
                "this node may not be a gateway (its credential or its preference)".into(),
            ));
        }
        tracing::info!(pn = %pn.membership.pn_id, old_gateway = %old, "taking the PN's gateway role over");
        let me = self.me();
        self.trace(
            GW_SWITCH,
            2,
            &me,
            &me,
            "TakeGatewayRoleOver",
            format!("from {old}"),
        );
        self.start_establish(Some(old), waiters, fx);
        Ok(())
    }

    /// Tells every member (the previous gateway too, in case it is alive) that this node is the
    /// gateway now.
    pub(super) fn announce(&mut self, old: PeerId, fx: &mut Fx) {
        let me = self.me();
        let Some(pn) = self.pn.clone() else { return };
        let mut members: Vec<PeerId> = pn.members.keys().copied().filter(|m| *m != me).collect();
        if !members.contains(&old) && old != me {
            members.push(old);
        }
        for m in members {
            self.trace(
                GW_SWITCH,
                3,
                &me,
                &m,
                "PnGatewayChanged",
                pn.membership.pn_id.clone(),
            );
            fx.send(
                m,
                Message::Pn(PnMessage::GatewayChanged {
                    pn_id: pn.membership.pn_id.clone(),
                    addrs: self.listen_addrs.clone(),
                }),
            );
        }
    }

    /// Back to PNE mode after a failed take-over, or when another node is the gateway now.
    pub(super) fn step_down(&mut self, fx: &mut Fx) {
        if self.mode_setting.is_gateway() {
            self.mode_setting = ModeSetting::Auto;
        }
        self.mode = NodeMode::Pne;
        self.caps.mode = NodeMode::Pne;
        self.caps.gateway_preference = self.preference();
        fx.push(Effect::KadMode(KadMode::Client));
        fx.changed();
    }

    /// A member hears that `peer` is its PN's gateway now: checked with `cpns-auth` before
    /// anything changes; the answer does not wait for the check.
    pub(super) fn on_gateway_changed(
        &mut self,
        peer: PeerId,
        pn_id: String,
        addrs: Vec<Multiaddr>,
        fx: &mut Fx,
    ) -> Message {
        let current = self
            .pn
            .as_ref()
            .filter(|p| p.membership.pn_id == pn_id)
            .map(|p| p.membership.gateway);
        match current {
            None => return Message::error(ErrorCode::NotFound, "not a member of that PN"),
            Some(gw) if gw == peer => return Message::Ack,
            Some(_) => {}
        }
        if self.gateway_lookup {
            // One server lookup at a time, however many such messages come.
            return Message::Ack;
        }
        let me = self.me();
        self.trace(GW_SWITCH, 3, &peer, &me, "PnGatewayChanged", pn_id.clone());
        self.gateway_lookup = true;
        let addrs = addrs
            .into_iter()
            .take(cpns_overlay::MAX_LISTEN_ADDRS)
            .collect();
        self.spawn(
            Purpose::GatewayChangeCheck {
                claimed: peer,
                addrs,
            },
            Job::Auth(AuthMessage::PnInfoRequest { pn_id }),
            fx,
        );
        Message::Ack
    }

    pub(super) fn gateway_change_checked(
        &mut self,
        claimed: PeerId,
        addrs: Vec<Multiaddr>,
        done: Done,
        fx: &mut Fx,
    ) {
        self.gateway_lookup = false;
        match done {
            Done::Auth(Ok(AuthMessage::PnInfo(info))) => {
                if self.moved_away(&info, fx) {
                    // Merged away or split off (5.6.9): followed once the server says where.
                } else if info.gateway == claimed {
                    self.rehome(claimed, addrs, fx)
                } else {
                    tracing::warn!(
                        %claimed, of_record = %info.gateway,
                        "a gateway change the server does not confirm; ignored"
                    )
                }
            }
            Done::Auth(Err(e)) => {
                tracing::warn!("cannot check a gateway change with cpns-auth: {e}")
            }
            other => tracing::debug!("gateway change check: {}", unexpected(&other)),
        }
    }

    /// At a gateway, once per `status.gateway_failover_after_secs`: whether `cpns-auth` still
    /// names it its PN's gateway. One cut off from some members (but not from the server) may
    /// have been replaced by one of them without hearing of it; it then joins the new one.
    pub(super) fn check_still_gateway(&mut self, fx: &mut Fx) {
        let period = self.env.config.status.gateway_failover_after_secs;
        if period == 0 || !self.is_pn_gateway() || self.gateway_lookup {
            return;
        }
        if self.establishing.is_some() || fx.now.saturating_sub(self.gateway_checked) < period {
            return;
        }
        self.gateway_checked = fx.now;
        let Some(pn_id) = self.pn_id() else { return };
        self.gateway_lookup = true;
        self.spawn(
            Purpose::StillGateway,
            Job::Auth(AuthMessage::PnInfoRequest { pn_id }),
            fx,
        );
    }

    pub(super) fn still_gateway(&mut self, done: Done, fx: &mut Fx) {
        self.gateway_lookup = false;
        match done {
            Done::Auth(Ok(AuthMessage::PnInfo(info))) => {
                if self.moved_away(&info, fx) {
                    // Merged away or split off (5.6.9): followed once the server says where.
                } else if info.gateway != self.me() {
                    tracing::warn!(gateway = %info.gateway, "cpns-auth names another gateway of this PN; joining it as a PNE");
                    self.rehome(info.gateway, Vec::new(), fx);
                }
            }
            Done::Auth(Err(e)) => {
                tracing::debug!("cannot check the PN's gateway of record now: {e}")
            }
            _ => {}
        }
    }

    /// After each heartbeat to the gateway: starts a failover once the gateway has been
    /// silent for `status.gateway_failover_after_secs` (0: never).
    pub(super) fn watch_gateway(&mut self, answered: bool, fx: &mut Fx) {
        let limit = self.env.config.status.gateway_failover_after_secs;
        if answered {
            self.gateway_heard = fx.now;
            return;
        }
        if self.gateway_heard == 0 {
            self.gateway_heard = fx.now;
        }
        let silent = fx.now.saturating_sub(self.gateway_heard) >= limit;
        if limit == 0 || !silent || self.failover.is_some() || self.joining.is_some() {
            return;
        }
        let Some(pn) = self.pn.clone() else { return };
        if pn.membership.gateway == self.me() {
            return;
        }
        let silent_gw = pn.membership.gateway;
        tracing::warn!(gateway = %silent_gw, pn = %pn.membership.pn_id, "the PN's gateway is silent; failing over");
        let me = self.me();
        self.trace(
            GW_SWITCH,
            1,
            &silent_gw,
            &me,
            "GatewaySilent",
            pn.membership.pn_id.clone(),
        );
        self.failover = Some(Failover {
            pn_id: pn.membership.pn_id.clone(),
            silent: silent_gw,
            round: 0,
        });
        self.failover_round(fx);
    }

    /// One round: ask the server who the gateway is.
    pub(super) fn failover_round(&mut self, fx: &mut Fx) {
        let Some(f) = &self.failover else { return };
        let pn_id = f.pn_id.clone();
        self.spawn(
            Purpose::FailoverInfo,
            Job::Auth(AuthMessage::PnInfoRequest { pn_id }),
            fx,
        );
    }

    fn failover_end(&mut self, fx: &mut Fx) {
        self.failover = None;
        // Wait a whole period again before the next attempt.
        self.gateway_heard = fx.now;
    }

    pub(super) fn failover_info(&mut self, done: Done, fx: &mut Fx) {
        let Some(silent) = self.failover.as_ref().map(|f| f.silent) else {
            return;
        };
        let info = match done {
            Done::Auth(Ok(AuthMessage::PnInfo(info))) => info,
            Done::Auth(Err(e)) => {
                tracing::warn!("gateway failover: {e}");
                return self.failover_end(fx);
            }
            other => {
                tracing::warn!("gateway failover: {}", unexpected(&other));
                return self.failover_end(fx);
            }
        };
        if self.moved_away(&info, fx) {
            // Merged away or split off (5.6.9) while the gateway was silent (perhaps as the
            // gateway of the PN split off).
            return self.failover_end(fx);
        }
        if info.gateway == self.me() {
            return self.failover_end(fx);
        }
        if info.gateway != silent {
            tracing::info!(gateway = %info.gateway, "another member took the gateway role over; re-joining through it");
            self.failover_end(fx);
            self.rehome(info.gateway, Vec::new(), fx);
            return;
        }
        // Heard from the gateway again meanwhile?
        let message = self.heartbeat_message(None);
        self.spawn(
            Purpose::FailoverProbe {
                members: info.members,
            },
            Job::Heartbeat {
                gateway: silent,
                message,
                within: Duration::from_secs(2),
            },
            fx,
        );
    }

    pub(super) fn failover_probe(&mut self, members: Vec<PeerId>, done: Done, fx: &mut Fx) {
        let Some(f) = &self.failover else { return };
        let (silent, round) = (f.silent, f.round);
        if matches!(done, Done::Heartbeat(true)) {
            tracing::info!(gateway = %silent, "the gateway answers again; no failover");
            return self.failover_end(fx);
        }
        // The members the server lists, ranked by the election's rule from the candidacies in
        // this node's member list (its own from its current capabilities); a member that may
        // not be a gateway, or whose candidacy is unknown here, is skipped.
        let me = self.me();
        if !members.contains(&me) {
            tracing::warn!("gateway failover: no longer a member of the PN");
            return self.failover_end(fx);
        }
        let candidates: Vec<(PeerId, cpns_overlay::Candidacy)> = members
            .iter()
            .filter(|m| **m != silent)
            .filter_map(|m| {
                if *m == me {
                    return Some((me, self.own_candidacy(&self.caps)));
                }
                let c = self.pn.as_ref()?.members.get(m)?.info.candidacy.clone()?;
                Some((*m, c))
            })
            .collect();
        let ranked = super::super::election::rank(&candidates);
        let Some(rank) = ranked.iter().position(|p| *p == me) else {
            // This node may not be the gateway: it waits for one of those that may.
            tracing::info!(
                "gateway failover: this node may not be a gateway; waiting for another member"
            );
            if round + 1 >= MAX_ROUNDS {
                return self.failover_end(fx);
            }
            if let Some(f) = self.failover.as_mut() {
                f.round += 1;
            }
            let step = Duration::from_secs(self.env.config.status.heartbeat_secs.max(1));
            self.spawn(Purpose::FailoverWait, Job::Sleep(step), fx);
            return;
        };
        if round >= rank && self.may_be_gateway() {
            self.failover_end(fx);
            if let Err(e) = self.take_over(Vec::new(), fx) {
                tracing::warn!("gateway failover: {e}");
            }
            return;
        }
        if round + 1 >= MAX_ROUNDS {
            tracing::warn!("gateway failover: no member took the gateway role over in time");
            return self.failover_end(fx);
        }
        if let Some(f) = self.failover.as_mut() {
            f.round += 1;
        }
        let step = Duration::from_secs(self.env.config.status.heartbeat_secs.max(1));
        self.spawn(Purpose::FailoverWait, Job::Sleep(step), fx);
    }
}

impl State {
    /// The gateway hands its role to `target` (5.6.9 "switch current PN GW to other PN GW",
    /// started by the gateway): the target takes the role over with the server's agreement
    /// (steps 6 and 8-17 with the take-over claim) and answers once it is the gateway of
    /// record; the members (this node too) then follow it, and the key epoch continues.
    pub(super) fn hand_off_op(&mut self, target: PeerId, waiter: u64, fx: &mut Fx) {
        let err = |m: &str| Reply::Done(Err(OpError::Conflict(m.into())));
        let Some(pn) = self.pn.clone() else {
            return fx.resolve(waiter, err("not in a PN"));
        };
        if pn.membership.gateway != self.me() {
            return fx.resolve(waiter, err("only the PN's gateway hands its role over"));
        }
        let Some(m) = pn.members.get(&target) else {
            return fx.resolve(
                waiter,
                Reply::Done(Err(OpError::NotFound(format!("{target} is not a member")))),
            );
        };
        if !m.info.candidacy.as_ref().is_some_and(|c| c.eligible()) {
            return fx.resolve(
                waiter,
                err("that member may not be a gateway (its credential or its preference)"),
            );
        }
        let me = self.me();
        self.trace(
            GW_SWITCH,
            5,
            &me,
            &target,
            "PnGatewayHandOff",
            pn.membership.pn_id.clone(),
        );
        self.spawn(
            Purpose::HandOff { waiter, target },
            Job::Request {
                peer: target,
                message: Message::Pn(PnMessage::HandOff {
                    pn_id: pn.membership.pn_id.clone(),
                }),
            },
            fx,
        );
    }

    /// The hand-off's answer: the target is the gateway of record now (its announcement makes
    /// this node re-join it), or it could not take over.
    pub(super) fn handed_off(&mut self, waiter: u64, target: PeerId, done: Done, fx: &mut Fx) {
        let r = match done {
            Done::Answer(Ok(_)) => {
                tracing::info!(%target, "the gateway role was handed over");
                Ok(())
            }
            Done::Answer(Err(e)) => Err(super::peer_error("hand-off", e)),
            other => Err(unexpected(&other)),
        };
        fx.resolve(waiter, Reply::Done(r));
    }

    /// A member asked by its gateway to take the role over.
    pub(super) fn on_hand_off(
        &mut self,
        peer: PeerId,
        pn_id: String,
        waiter: u64,
        fx: &mut Fx,
    ) -> Option<Message> {
        let ok = self
            .pn
            .as_ref()
            .is_some_and(|p| p.membership.gateway == peer && p.membership.pn_id == pn_id);
        if !ok {
            return Some(Message::error(
                ErrorCode::Forbidden,
                "not this node's gateway",
            ));
        }
        let me = self.me();
        self.trace(GW_SWITCH, 5, &peer, &me, "PnGatewayHandOff", pn_id);
        match self.take_over(vec![waiter], fx) {
            Ok(()) => None,
            Err(e) => Some(Message::error(ErrorCode::Conflict, e.to_string())),
        }
    }
}
