//! PN Admin and Adminees (5.6.9, 3.2) at a node: asking to be admin, approving, changing an
//! Adminee's settings (all decided by `cpns-auth`), and what follows when the server tells
//! the gateway that the PN changed: the gateway reconciles its PN Inventory (a member an
//! admin elsewhere expelled is removed, told, and refused) and relays the admin information to
//! every member; each member shows it, and an Adminee applies its own settings (mode, whether
//! it may be gateway, the services it shows the PN, its heartbeat) while the gateway applies
//! the offline threshold.
//!
//! Trace (flow "5.6.9"): 10 PnAdminRequest, 11 PnAdminApproval, 12 PnAdmineeChange (node to
//! server), 13 PnChanged (server to gateway), 14 MemberRemovedByAdmin (gateway), 15
//! PnAdminChanged (gateway to member), 16 AdmineeSettingsApplied (at the Adminee).

use std::sync::Arc;
use std::time::Duration;

use cpns_overlay::{
    AdmineeSettings, AuthMessage, ErrorCode, Message, PnAdminInfo, PnMessage, PnRecordInfo,
};
use libp2p::PeerId;

use super::{Purpose, State, unexpected};
use crate::config::ModeSetting;
use crate::error::OpError;
use crate::pn::effect::{Done, Effect, Fx, Job, WaiterId};
use crate::pn::{AdminOp, Reply};
use crate::store::{self, PnWrite};
use crate::trace::flow::GW_SWITCH;

impl State {
    /// An owner's PN Admin operation: a request to `cpns-auth` within a session.
    pub(super) fn admin_op(&mut self, op: AdminOp, waiter: WaiterId, fx: &mut Fx) {
        let Some(pn_id) = self.pn_id() else {
            return fx.resolve(
                waiter,
                Reply::Admin(Err(OpError::Conflict("not in a PN".into()))),
            );
        };
        let me = self.me();
        let server = self.server().unwrap_or(me);
        let message = match op {
            AdminOp::Request => {
                self.trace(GW_SWITCH, 10, &me, &server, "PnAdminRequest", pn_id.clone());
                AuthMessage::PnAdminRequest { pn_id }
            }
            AdminOp::Approve(entity) => {
                self.trace(
                    GW_SWITCH,
                    11,
                    &me,
                    &server,
                    "PnAdminApproval",
                    entity.to_string(),
                );
                AuthMessage::PnAdminApprove { pn_id, entity }
            }
            AdminOp::Set(member, settings) => {
                if let Err(e) = settings.check() {
                    return fx.resolve(waiter, Reply::Admin(Err(OpError::BadRequest(e))));
                }
                self.trace(
                    GW_SWITCH,
                    12,
                    &me,
                    &server,
                    "PnAdmineeChange",
                    member.to_string(),
                );
                AuthMessage::PnAdmineeSet {
                    pn_id,
                    member,
                    settings: *settings,
                }
            }
            AdminOp::List => AuthMessage::PnAdminsRequest { pn_id },
        };
        self.spawn(Purpose::Admin { waiter }, Job::Auth(message), fx);
    }

    pub(super) fn admin_answered(&mut self, waiter: WaiterId, done: Done, fx: &mut Fx) {
        let r = match done {
            Done::Auth(Ok(AuthMessage::PnAdmins(info))) => {
                // The server's answer is the newest there is; the push that follows confirms.
                if self.pn_id().as_deref() == Some(info.pn_id.as_str()) {
                    self.take_admin(info.clone(), fx);
                }
                Ok(info)
            }
            Done::Auth(Ok(other)) => Err(OpError::Refused(format!(
                "unexpected answer {}",
                other.name()
            ))),
            Done::Auth(Err(e)) => Err(e),
            other => Err(unexpected(&other)),
        };
        fx.resolve(waiter, Reply::Admin(r));
    }

    /// `cpns-auth` says this gateway's PN changed. Members the record no longer lists are
    /// removed (the key already rotated at the server; the gateway fetches every member's
    /// grant and hands them out as after its own expulsion); the admin information is kept
    /// and relayed to every member.
    pub(super) fn on_pn_changed(
        &mut self,
        info: PnRecordInfo,
        admin: PnAdminInfo,
        fx: &mut Fx,
    ) -> Message {
        let me = self.me();
        if !self.is_pn_gateway() || self.pn_id().as_deref() != Some(info.pn_id.as_str()) {
            return Message::error(ErrorCode::NotFound, "not this PN's gateway");
        }
        if admin.pn_id != info.pn_id || info.gateway != me {
            return Message::error(
                ErrorCode::BadRequest,
                "the record names another PN or gateway",
            );
        }
        let server = self.server().unwrap_or(me);
        self.trace(GW_SWITCH, 13, &server, &me, "PnChanged", info.pn_id.clone());
        let removed: Vec<(PeerId, bool)> = self
            .pn
            .as_ref()
            .map(|p| {
                p.members
                    .keys()
                    .filter(|m| **m != me && !info.members.contains(m))
                    .map(|m| (*m, info.policy.expelled.contains(m)))
                    .collect()
            })
            .unwrap_or_default();
        if !removed.is_empty() {
            self.spawn(
                Purpose::Reconcile { removed },
                Job::Auth(AuthMessage::PnKeyRequest {
                    pn_id: info.pn_id.clone(),
                    member: me,
                }),
                fx,
            );
        }
        self.take_admin(admin, fx);
        self.relay_admin(fx);
        Message::Ack
    }

    /// The grants after a removal decided elsewhere came: remove each member as after an
    /// expulsion by this gateway (told, refused, the others get the new epoch).
    pub(super) fn reconciled(&mut self, removed: Vec<(PeerId, bool)>, done: Done, fx: &mut Fx) {
        match done {
            Done::Auth(Ok(AuthMessage::PnKeyResponse { epoch, grants, .. })) => {
                let me = self.me();
                for (peer, expelled) in removed {
                    if !self.is_member(&peer) {
                        continue;
                    }
                    self.trace(
                        GW_SWITCH,
                        14,
                        &me,
                        &peer,
                        "MemberRemovedByAdmin",
                        if expelled { "expelled" } else { "removed" },
                    );
                    self.remove_member(peer, epoch, &grants, expelled, fx);
                    if !expelled && let Some(pn_id) = self.pn_id() {
                        // Removed by cpns-auth without an expulsion: split off into a new PN
                        // (5.6.9). Told like an expelled member, it asks the server where its
                        // PN is now (a PNE has no session the server could push to).
                        fx.send(peer, Message::Pn(PnMessage::Leave { pn_id }));
                    }
                }
            }
            other => tracing::warn!(
                "members removed at cpns-auth stay in the inventory until the next change: {}",
                match other {
                    Done::Auth(Err(e)) => e.to_string(),
                    o => unexpected(&o).to_string(),
                }
            ),
        }
    }

    /// The gateway relays the PN's admin information (5.6.9 step 15).
    pub(super) fn on_admin_changed(
        &mut self,
        peer: PeerId,
        info: PnAdminInfo,
        fx: &mut Fx,
    ) -> Message {
        if self.pn_id().as_deref() != Some(info.pn_id.as_str())
            || self.pn.as_ref().map(|p| p.membership.gateway) != Some(peer)
        {
            return Message::error(ErrorCode::NotFound, "not this node's PN or gateway");
        }
        let me = self.me();
        self.trace(
            GW_SWITCH,
            15,
            &peer,
            &me,
            "PnAdminChanged",
            info.pn_id.clone(),
        );
        self.take_admin(bounded(info), fx);
        Message::Ack
    }

    /// Sends the admin information to every member (the gateway).
    fn relay_admin(&self, fx: &mut Fx) {
        let Some(admin) = self.admin.clone() else {
            return;
        };
        let me = self.me();
        let Some(pn) = self.pn.as_ref() else { return };
        for m in pn.members.keys().filter(|m| **m != me) {
            fx.send(*m, Message::Pn(PnMessage::AdminChanged((*admin).clone())));
        }
    }

    /// Keeps (durably) the admin information, and applies what it sets for this node — and,
    /// at the gateway, for the members (whether they may be gateway).
    pub(super) fn take_admin(&mut self, info: PnAdminInfo, fx: &mut Fx) {
        if self.admin.as_deref() == Some(&info) {
            return;
        }
        let old = self.own_settings();
        if let Ok(b) = store::encode(&info) {
            fx.push(Effect::Persist(PnWrite::Admin(Some(b))));
        }
        self.admin = Some(Arc::new(info));
        fx.changed();
        if self.is_pn_gateway() {
            self.apply_candidacies(fx);
        }
        let new = self.own_settings();
        if new != old {
            self.apply_own_settings(&new, fx);
        }
    }

    /// Forgets the admin information (the node left its PN).
    pub(super) fn forget_admin(&mut self, fx: &mut Fx) {
        if self.admin.take().is_some() {
            fx.push(Effect::Persist(PnWrite::Admin(None)));
        }
    }

    /// What an admin set for `member` (empty when nothing).
    pub(super) fn settings_of(&self, member: &PeerId) -> AdmineeSettings {
        self.admin
            .as_ref()
            .map(|a| a.settings_of(member))
            .unwrap_or_default()
    }

    /// What an admin set for this node.
    pub(super) fn own_settings(&self) -> AdmineeSettings {
        self.settings_of(&self.me())
    }

    /// Whether an admin allowed `member` to be the PN's gateway (allowed unless said no).
    pub(super) fn admin_allows_gateway(&self, member: &PeerId) -> bool {
        let s = self.settings_of(member);
        s.may_be_gateway != Some(false) && s.mode.as_deref() != Some("pne")
    }

    /// The heartbeat period in force: the Adminee setting, else the node's configuration.
    pub(crate) fn heartbeat_period(&self) -> Duration {
        let secs = self
            .own_settings()
            .heartbeat_secs
            .map(u64::from)
            .unwrap_or(self.env.config.status.heartbeat_secs);
        Duration::from_secs(secs.max(1))
    }

    /// The services this node shows the PN: its own, cut to what an admin allowed.
    pub(super) fn shown_services(&self) -> Vec<String> {
        match self.own_settings().services_shown {
            Some(allowed) => self
                .own_services
                .iter()
                .filter(|s| allowed.contains(s))
                .cloned()
                .collect(),
            None => self.own_services.clone(),
        }
    }

    /// At the gateway: members an admin barred from the role stand for no election or
    /// failover; the member lists follow.
    fn apply_candidacies(&mut self, fx: &mut Fx) {
        // A member an admin bars is no candidate; one an admin allows again is, if its
        // credential allows the gateway mode (known from its registration).
        let wanted: Vec<(PeerId, bool)> = self
            .pn
            .as_ref()
            .map(|p| {
                p.members
                    .keys()
                    .map(|m| {
                        let credential = self.peers.get(m).is_some_and(|p| p.may_be_gateway);
                        (*m, self.admin_allows_gateway(m), credential)
                    })
                    .filter_map(|(m, admin, credential)| {
                        if !admin {
                            Some((m, false))
                        } else if credential {
                            Some((m, true))
                        } else {
                            None
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        let mut changed = Vec::new();
        if let Some(p) = self.pn_mut() {
            for (m, allowed) in &wanted {
                if let Some(member) = p.members.get_mut(m)
                    && let Some(c) = member.info.candidacy.as_mut()
                    && c.allowed != *allowed
                {
                    c.allowed = *allowed;
                    changed.push(*m);
                }
            }
        }
        for m in &changed {
            self.persist_member(m, fx);
        }
        if !changed.is_empty() {
            fx.changed();
            self.send_members_update(fx);
        }
    }

    /// At the Adminee: the mode an admin set (a device that may not be gateway is a PNE when
    /// its own setting was `auto`), and the services it shows. The heartbeat period is read
    /// by the actor after every command.
    fn apply_own_settings(&mut self, s: &AdmineeSettings, fx: &mut Fx) {
        let me = self.me();
        let wanted = match s.mode.as_deref() {
            Some(m) => m.parse::<ModeSetting>().ok(),
            None if s.may_be_gateway == Some(false) && self.mode_setting == ModeSetting::Auto => {
                Some(ModeSetting::Pne)
            }
            None => None,
        };
        if let Some(setting) = wanted
            && setting != self.mode_setting
        {
            // A waiter nobody waits for: the outcome shows in the status.
            let waiter = self.id();
            self.set_mode_op(setting, waiter, fx);
        }
        self.send_own_services(fx);
        self.trace(
            GW_SWITCH,
            16,
            &me,
            &me,
            "AdmineeSettingsApplied",
            describe(s),
        );
    }
}

/// After how long without a heartbeat the gateway marks `member` Offline: what an admin set,
/// else `default` (the node's configuration).
pub(super) fn offline_after(admin: Option<&PnAdminInfo>, member: &PeerId, default: u64) -> u64 {
    admin
        .and_then(|a| a.adminees.iter().find(|e| e.member == *member))
        .and_then(|e| e.settings.offline_after_secs)
        .map_or(default, u64::from)
}

/// The settings in one line, for the trace.
fn describe(s: &AdmineeSettings) -> String {
    let mut parts = Vec::new();
    if let Some(l) = &s.label {
        parts.push(format!("label={l}"));
    }
    if let Some(g) = s.may_be_gateway {
        parts.push(format!("may_be_gateway={g}"));
    }
    if let Some(m) = &s.mode {
        parts.push(format!("mode={m}"));
    }
    if let Some(v) = &s.services_shown {
        parts.push(format!("services_shown={}", v.len()));
    }
    if let Some(h) = s.heartbeat_secs {
        parts.push(format!("heartbeat_secs={h}"));
    }
    if let Some(o) = s.offline_after_secs {
        parts.push(format!("offline_after_secs={o}"));
    }
    parts.join(" ")
}

/// A relayed admin information, cut to sane sizes (the gateway is trusted for its own PN,
/// but its bytes still come off the network).
fn bounded(mut info: PnAdminInfo) -> PnAdminInfo {
    let max = super::MAX_MEMBERS;
    info.admins.truncate(max);
    info.pending.truncate(max);
    info.adminees.truncate(max);
    info.adminees.retain(|a| a.settings.check().is_ok());
    info
}
