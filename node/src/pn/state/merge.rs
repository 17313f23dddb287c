//! Merging PNs and splitting a PN (5.6.9), at the node: an admin's consent to a merge and its
//! request to split, and every member's move to the PN `cpns-auth` says it is in now.
//!
//! `cpns-auth` decides both operations in one durable step (`auth-server/src/pn_merge.rs`);
//! nodes only follow. A member learns of its move three ways, so that a gateway killed half-way
//! leaves nobody behind: the server's push (`PnMoved`, to every moved member with a session),
//! its old gateway's release (`Leave`: the gateway of a merged PN releases its members, a gateway
//! releases the members split off; then it asks the server where its PN went), and
//! any later lookup of its PN's record (a failover, a gateway's periodic check, a gateway's
//! step 17 after a restart) that names another PN, after which it asks the same. It then
//! joins the new PN's gateway by B.1 18-26, where the server admits it as a member already; the
//! member elected gateway of a PN split off sets that PN up (steps 6, 8-17) instead.
//!
//! Trace (flow "5.6.9"): 30 PnMergeConsent (admin to server), 31 PnMergeConsentStored or
//! PnsMerged (the server's answer), 32 PnMovedToAnotherPn (server to a moved member), 33
//! JoinPnAfterMove (member to the new gateway), 34 PnSplitRequest (admin to server), 35
//! PnSplitDone (the server's answer), 36 SetUpPnSplitOff (the new PN's gateway), 37
//! PnMoveLookup (member to server); then, in `crate::services`, 38 RescopeServicesAfterMove
//! (the member's services follow it into the new PN) and 39 WithdrawReleasedPnSummary (the
//! former gateway of a PN merged away withdraws its DHT summary).

use std::collections::BTreeMap;
use std::sync::Arc;

use cpns_overlay::{AuthMessage, Candidacy, ErrorCode, Message, PnInvitationInfo, PnRecordInfo};
use libp2p::PeerId;

use super::super::effect::{Done, Effect, Fx, Job, WaiterId};
use super::super::{Membership, PnView, Reply};
use super::{MAX_MEMBERS, Purpose, State, unexpected};
use crate::error::OpError;
use crate::trace::flow::GW_SWITCH;

fn strings(peers: &[PeerId]) -> Vec<String> {
    peers.iter().map(ToString::to_string).collect()
}

impl State {
    /// `cpns pn merge --with PN_ID`: this node's consent, as an admin of its PN.
    pub(super) fn merge_op(&mut self, with: String, waiter: WaiterId, fx: &mut Fx) {
        let Some(pn_id) = self.pn_id() else {
            return fx.resolve(
                waiter,
                Reply::Merge(Err(OpError::Conflict("not in a PN".into()))),
            );
        };
        if with == pn_id || with.is_empty() || with.len() > 128 {
            return fx.resolve(
                waiter,
                Reply::Merge(Err(OpError::BadRequest(
                    "name another PN's id to merge with".into(),
                ))),
            );
        }
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(GW_SWITCH, 30, &me, &server, "PnMergeConsent", with.clone());
        self.spawn(
            Purpose::Merge { waiter },
            Job::Auth(AuthMessage::PnMergeRequest { pn_id, with }),
            fx,
        );
    }

    pub(super) fn merge_answered(&mut self, waiter: WaiterId, done: Done, fx: &mut Fx) {
        let (merged, pn, addrs) = match done {
            Done::Auth(Ok(AuthMessage::PnMergeAnswer {
                merged,
                pn,
                gateway_addrs,
            })) => (merged, pn, gateway_addrs),
            Done::Auth(Err(e)) => return fx.resolve(waiter, Reply::Merge(Err(e))),
            other => return fx.resolve(waiter, Reply::Merge(Err(unexpected(&other)))),
        };
        let me = self.me();
        let server = self.server().unwrap_or(me);
        let step = if merged {
            "PnsMerged"
        } else {
            "PnMergeConsentStored"
        };
        self.trace(GW_SWITCH, 31, &server, &me, step, pn.pn_id.clone());
        let view = cpns_api::MergeView {
            merged,
            pn_id: pn.pn_id.clone(),
            gateway: pn.gateway.to_string(),
            members: strings(&pn.members),
            epoch: pn.epoch,
        };
        let from = self.pn_id().filter(|p| *p != pn.pn_id);
        if merged
            && let Some(from) = from
            && self.moving.as_ref().is_none_or(|(m, _)| *m != from)
        {
            // The second consent merges this node's PN into the other: it moves at once (the
            // server's push to the other members says the same; when it came first, this
            // node is moving already).
            self.move_to(&from, invitation_of(&pn, addrs), fx);
        }
        fx.resolve(waiter, Reply::Merge(Ok(view)));
    }

    /// `cpns pn split PEER…`: the named members form a new PN; its gateway is the one of them
    /// the election's rule ranks first, from the candidacies in this node's member table.
    pub(super) fn split_op(&mut self, members: Vec<PeerId>, waiter: WaiterId, fx: &mut Fx) {
        let err = |e: OpError| Reply::Split(Err(e));
        let Some(pn) = self.pn.clone() else {
            return fx.resolve(waiter, err(OpError::Conflict("not in a PN".into())));
        };
        if members.is_empty() || members.len() > MAX_MEMBERS {
            return fx.resolve(
                waiter,
                err(OpError::BadRequest("name the members to split off".into())),
            );
        }
        let me = self.me();
        let mut candidates: Vec<(PeerId, Candidacy)> = Vec::new();
        for m in &members {
            let Some(member) = pn.members.get(m) else {
                return fx.resolve(
                    waiter,
                    err(OpError::NotFound(format!("{m} is not a member"))),
                );
            };
            let candidacy = if *m == me {
                Some(self.own_candidacy(&self.caps))
            } else {
                member.info.candidacy.clone()
            };
            if let Some(c) = candidacy {
                candidates.push((*m, c));
            }
        }
        let Some(gateway) = super::super::election::rank(&candidates).first().copied() else {
            return fx.resolve(
                waiter,
                err(OpError::Conflict(
                    "none of those members may be a gateway (credential or preference)".into(),
                )),
            );
        };
        let server = self.server().unwrap_or(me);
        self.trace(
            GW_SWITCH,
            34,
            &me,
            &server,
            "PnSplitRequest",
            format!("{} members, gateway {gateway}", members.len()),
        );
        self.spawn(
            Purpose::Split { waiter },
            Job::Auth(AuthMessage::PnSplitRequest {
                pn_id: pn.membership.pn_id.clone(),
                members,
                gateway,
            }),
            fx,
        );
    }

    pub(super) fn split_answered(&mut self, waiter: WaiterId, done: Done, fx: &mut Fx) {
        let (stays, new) = match done {
            Done::Auth(Ok(AuthMessage::PnSplitAnswer { stays, new })) => (stays, new),
            Done::Auth(Err(e)) => return fx.resolve(waiter, Reply::Split(Err(e))),
            other => return fx.resolve(waiter, Reply::Split(Err(unexpected(&other)))),
        };
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(
            GW_SWITCH,
            35,
            &server,
            &me,
            "PnSplitDone",
            new.pn_id.clone(),
        );
        let view = cpns_api::SplitView {
            pn_id: stays.pn_id.clone(),
            epoch: stays.epoch,
            members: strings(&stays.members),
            new_pn_id: new.pn_id.clone(),
            new_gateway: new.gateway.to_string(),
            new_members: strings(&new.members),
        };
        if new.members.contains(&me) {
            // An admin that split itself off moves too (no address needed to reach itself;
            // another gateway's addresses come with the server's push).
            let from = stays.pn_id.clone();
            self.move_to(&from, invitation_of(&new, Vec::new()), fx);
        }
        fx.resolve(waiter, Reply::Split(Ok(view)));
    }

    /// `cpns-auth` says this node's PN `from` is now `to` (a merge or a split).
    pub(super) fn on_moved(&mut self, from: String, to: PnInvitationInfo, fx: &mut Fx) -> Message {
        let mine = self.pn_id();
        if mine.as_deref() == Some(to.pn_id.as_str()) {
            return Message::Ack;
        }
        let free = mine.is_none() && self.joining.is_none() && self.establishing.is_none();
        if mine.as_deref() != Some(from.as_str()) && !free {
            return Message::error(ErrorCode::NotFound, "not a member of that PN");
        }
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(
            GW_SWITCH,
            32,
            &server,
            &me,
            "PnMovedToAnotherPn",
            format!("{from} -> {}", to.pn_id),
        );
        self.move_to(&from, to, fx);
        Message::Ack
    }

    /// After a lookup of this node's PN named another PN (or its gateway released it): asks
    /// `cpns-auth` where it went (one lookup at a time).
    pub(super) fn look_up_move(&mut self, from: String, fx: &mut Fx) {
        if self.jobs.values().any(|p| matches!(p, Purpose::MoveLookup)) {
            return;
        }
        let me = self.me();
        let server = self.server().unwrap_or(me);
        self.trace(GW_SWITCH, 37, &me, &server, "PnMoveLookup", from.clone());
        self.spawn(
            Purpose::MoveLookup,
            Job::Auth(AuthMessage::PnMoveLookup { pn_id: from }),
            fx,
        );
    }

    /// Whether the server's record `info` of this node's PN names another PN (this node's PN
    /// was merged away, or it was split off): then it asks where it went.
    pub(super) fn moved_away(&mut self, info: &PnRecordInfo, fx: &mut Fx) -> bool {
        let Some(mine) = self.pn_id() else {
            return false;
        };
        if info.pn_id == mine {
            return false;
        }
        tracing::info!(from = %mine, to = %info.pn_id, "cpns-auth names another PN for this node's; following it");
        self.look_up_move(mine, fx);
        true
    }

    pub(super) fn move_looked_up(&mut self, done: Done, fx: &mut Fx) {
        match done {
            Done::Auth(Ok(AuthMessage::PnMoved { from, to })) => {
                let _ = self.on_moved(from, to, fx);
            }
            Done::Auth(Err(e)) => {
                if matches!(e, OpError::Refused(_)) {
                    // The server knows of no move (any more): nothing to retry.
                    self.moving = None;
                }
                tracing::debug!("no PN move for this node: {e}")
            }
            other => tracing::debug!("PN move lookup: {}", unexpected(&other)),
        }
    }

    /// On the tick: while this node is not yet in the PN it moved to (its join failed: the
    /// new gateway was not up yet, or was killed), asks `cpns-auth` again where that PN is.
    pub(super) fn retry_move(&mut self, fx: &mut Fx) {
        let Some((from, at)) = self.moving.clone() else {
            return;
        };
        let here = self.pn_id();
        if here.as_deref().is_some_and(|p| p != from) {
            // In another PN now: the move is done.
            self.moving = None;
            return;
        }
        if fx.now < at || self.joining.is_some() || self.establishing.is_some() {
            return;
        }
        self.moving = Some((from.clone(), fx.now + self.move_retry_secs()));
        self.look_up_move(from, fx);
    }

    fn move_retry_secs(&self) -> u64 {
        2 * self.env.config.status.heartbeat_secs.max(1)
    }

    /// Joins `to` through its gateway, or sets it up when this node is its gateway.
    fn move_to(&mut self, from: &str, to: PnInvitationInfo, fx: &mut Fx) {
        self.moving = Some((from.to_owned(), fx.now + self.move_retry_secs()));
        let moved = (from.to_owned(), to.pn_id.clone());
        if let Ok(b) = crate::store::encode(&moved) {
            fx.push(Effect::Persist(crate::store::PnWrite::LastMove(b)));
        }
        self.last_move = Some(Arc::new(moved));
        let me = self.me();
        if to.gateway == me {
            return self.set_up_split_off(to, fx);
        }
        if self.is_pn_gateway() && self.pn_id().as_deref() == Some(from) {
            // Members that missed the server's push learn from the release that they should
            // ask where their PN went.
            self.tell_members_released(from, fx);
        }
        self.trace(
            GW_SWITCH,
            33,
            &me,
            &to.gateway,
            "JoinPnAfterMove",
            to.pn_id.clone(),
        );
        // What the gateway said of its PN at its registration (steps 1-2) may be older than
        // the move (it registered as a member of the PN this node leaves); the join names the
        // PN the server says it runs.
        if let Some(p) = Arc::make_mut(&mut self.peers).get_mut(&to.gateway) {
            p.pn_id = Some(to.pn_id.clone());
            p.gateway = Some(to.gateway);
        }
        let addrs: Vec<_> = to
            .gateway_addrs
            .into_iter()
            .take(cpns_overlay::MAX_LISTEN_ADDRS)
            .collect();
        if self.pn.is_some() {
            self.rehome(to.gateway, addrs, fx);
        } else if let Err(e) = self.start_join(to.gateway, addrs, true, Vec::new(), None, fx) {
            tracing::warn!(gateway = %to.gateway, "joining the PN this node moved to failed: {e}");
        }
    }

    /// This node is the gateway the split's election chose: it sets the new PN up with
    /// `cpns-auth` (steps 6, 8-17 claiming the new PN); its members join it once told.
    fn set_up_split_off(&mut self, to: PnInvitationInfo, fx: &mut Fx) {
        if self.establishing.is_some() || self.joining.is_some() {
            tracing::debug!("a PN set-up or join is under way; the split-off PN waits");
            return;
        }
        let me = self.me();
        self.trace(GW_SWITCH, 36, &me, &me, "SetUpPnSplitOff", to.pn_id.clone());
        if let Some(old) = self.pn.take() {
            fx.push(super::super::effect::Effect::RemoveKeys(super::pn_group(
                &old.membership.pn_id,
            )));
        }
        self.pn = Some(Arc::new(PnView {
            membership: Membership {
                pn_id: to.pn_id,
                gateway: me,
                gateway_addrs: self.listen_addrs.clone(),
                owner: to.owner,
                epoch: 0,
            },
            members: BTreeMap::new(),
        }));
        self.persist_membership(fx);
        fx.changed();
        self.start_establish(None, Vec::new(), fx);
    }
}

/// What a member needs to join `pn` through its gateway.
fn invitation_of(
    pn: &PnRecordInfo,
    gateway_addrs: Vec<cpns_overlay::Multiaddr>,
) -> PnInvitationInfo {
    PnInvitationInfo {
        pn_id: pn.pn_id.clone(),
        owner: pn.owner.clone(),
        gateway: pn.gateway,
        gateway_addrs,
        entity: true,
    }
}
