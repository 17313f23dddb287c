//! Invitations with consent (5.6.9), at the invitee: an admin's invite at `cpns-auth` reaches
//! this node (pushed while it has a session, or found by asking on a period), waits in the
//! invitation list beside those a pairing left, and takes effect only when the owner accepts
//! it (joining through the PN's gateway, B.1 18-26) — or is declined, which `cpns-auth` is
//! told so that nobody joins on it.

use cpns_overlay::{AuthMessage, Message, PnInvitationInfo};

use super::super::{Invitation, Reply};
use super::{Purpose, State, WaiterId};
use crate::error::OpError;
use crate::pn::effect::{Done, Fx, Job};
use crate::trace::flow::GW_SWITCH;

/// Where an invitation from `cpns-auth` came from, in [`Invitation::source`].
pub(super) const FROM_SERVER: &str = "server";

impl State {
    /// `cpns-auth` pushed an invitation.
    pub(super) fn on_server_invitation(&mut self, info: PnInvitationInfo, fx: &mut Fx) -> Message {
        self.keep_server_invitation(info, fx);
        Message::Ack
    }

    /// On the tick: ask `cpns-auth` for the invitations waiting for this entity, once per
    /// `invitation_poll_secs` (0: never; the push alone then tells a node with a session).
    pub(super) fn poll_invitations(&mut self, fx: &mut Fx) {
        let period = self.env.config.invitation_poll_secs;
        if period == 0 || self.enrolment.is_none() || fx.now < self.invitations_polled {
            return;
        }
        self.invitations_polled = fx.now + period;
        self.spawn(
            Purpose::Invitations,
            Job::Auth(AuthMessage::PnInvitationsRequest),
            fx,
        );
    }

    /// The server's list came back: new ones are kept; server invitations it no longer
    /// lists (withdrawn, or answered from another device of the user) are dropped.
    pub(super) fn invitations_answered(&mut self, done: Done, fx: &mut Fx) {
        let list = match done {
            Done::Auth(Ok(AuthMessage::PnInvitations(list))) => list,
            Done::Auth(Err(e)) => {
                tracing::debug!("invitations not asked: {e}");
                return;
            }
            _ => return,
        };
        let listed: Vec<&str> = list.iter().map(|i| i.pn_id.as_str()).collect();
        let gone: Vec<String> = self
            .invitations
            .iter()
            .filter(|i| {
                i.source == FROM_SERVER && !i.pn_id.as_deref().is_some_and(|p| listed.contains(&p))
            })
            .map(|i| i.id.clone())
            .collect();
        for id in gone {
            self.drop_invitation(&id, fx);
        }
        for info in list.into_iter().take(cpns_overlay::MAX_INVITATIONS) {
            self.keep_server_invitation(info, fx);
        }
    }

    /// Keeps an invitation of `cpns-auth` (once per PN) unless this node is already in it.
    fn keep_server_invitation(&mut self, info: PnInvitationInfo, fx: &mut Fx) {
        if self.pn_id().as_deref() == Some(info.pn_id.as_str())
            || self
                .invitations
                .iter()
                .any(|i| i.pn_id.as_deref() == Some(info.pn_id.as_str()))
        {
            return;
        }
        let id = format!("inv-{}", hex::encode(rand::random::<[u8; 6]>()));
        let inv = Invitation {
            id: id.clone(),
            pn_id: Some(info.pn_id.clone()),
            gateway: info.gateway.to_string(),
            gateway_addrs: info
                .gateway_addrs
                .iter()
                .take(cpns_overlay::MAX_LISTEN_ADDRS)
                .map(|a| a.to_string())
                .collect(),
            user: info.owner.clone(),
            device: String::new(),
            source: FROM_SERVER.into(),
            received: fx.now,
        };
        self.keep_invitation(inv, fx);
        let me = self.env.me;
        let server = self.server().unwrap_or(me);
        let whom = if info.entity {
            "this device"
        } else {
            "its user"
        };
        self.trace(
            GW_SWITCH,
            18,
            &server,
            &me,
            "PnInvitation",
            format!("{} of {} invites {whom}", info.pn_id, info.owner),
        );
        tracing::info!(pn = %info.pn_id, owner = %info.owner, invitation = %id, "invited into a PN: it waits for the owner (`cpns pn accept`)");
    }

    /// The owner declines `inv`: one `cpns-auth` made is declined there first (durably
    /// before the answer); `false` for one it did not make.
    pub(super) fn decline_at_server(
        &mut self,
        inv: &Invitation,
        waiter: WaiterId,
        fx: &mut Fx,
    ) -> bool {
        let (Some(pn_id), true) = (inv.pn_id.clone(), inv.source == FROM_SERVER) else {
            return false;
        };
        let me = self.env.me;
        let server = self.server().unwrap_or(me);
        self.trace(
            GW_SWITCH,
            19,
            &me,
            &server,
            "PnInvitationDecline",
            pn_id.clone(),
        );
        self.spawn(
            Purpose::Decline {
                waiter,
                id: inv.id.clone(),
            },
            Job::AuthCommand(AuthMessage::PnInvitationDecline { pn_id }),
            fx,
        );
        true
    }

    /// `cpns-auth` answered a decline: the invitation goes here too.
    pub(super) fn decline_answered(&mut self, waiter: WaiterId, id: &str, done: Done, fx: &mut Fx) {
        let r = match done {
            Done::Acked(Ok(())) => {
                self.drop_invitation(id, fx);
                Ok(())
            }
            Done::Acked(Err(e)) => Err(e),
            other => Err(OpError::Internal(format!("unexpected {other:?}"))),
        };
        fx.resolve(waiter, Reply::Done(r));
    }
}
