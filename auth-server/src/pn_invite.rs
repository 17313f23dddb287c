//! Invitations with consent (5.6.9): an admin's invite (`PnInvite`, [`crate::pn`]) puts an
//! entity or a user on the PN's list; this module makes the invitation reach the invitee and
//! lets its owner decline it.
//!
//! The invitee learns of it two ways: pushed at once when it has a live session
//! ([`Followup::PnInvited`]), and otherwise when it next asks (`PnInvitationsRequest`, which
//! every node sends on a period and at start). An invitation names the PN's gateway and where
//! the server last saw it listen, so that accepting (the node's `cpns pn accept`) joins
//! through that gateway by B.1 18-26 like any join: the invitation itself admits nothing the
//! list did not already admit. Declining takes the entity (and its user) off the list, so
//! nobody joins on an invitation its owner refused.

use cpns_keys::{PeerId, UnixTime};
use cpns_overlay::{Invitee, MAX_INVITATIONS, MAX_LISTEN_ADDRS, PnInvitationInfo};

use crate::authn::Session;
use crate::core::{Core, Followup};
use crate::error::RequestError;
use crate::pn::get_pn;
use crate::records::{EntityRecord, PnRecord};
use crate::store::{Batch, Table};

/// Whether `pn` waits for `entity` of `user` to answer an invitation, and whether the entity
/// itself (not only its user) was invited.
fn invites(pn: &PnRecord, entity: &PeerId, user: &str) -> Option<bool> {
    if pn.members.contains(entity) || pn.policy.expelled.contains(entity) {
        return None;
    }
    if pn.policy.invited_entities.contains(entity) {
        return Some(true);
    }
    pn.policy
        .invited_users
        .iter()
        .any(|u| u == user)
        .then_some(false)
}

impl Core {
    /// What tells the invitee of `pn`: where its gateway listens, as the server last saw it.
    pub(crate) async fn invitation_info(&self, pn: &PnRecord, entity: bool) -> PnInvitationInfo {
        let mut gateway_addrs = match self.overlay.get() {
            Some(client) => client.peer_addresses(pn.gateway).await.unwrap_or_default(),
            None => Vec::new(),
        };
        gateway_addrs.truncate(MAX_LISTEN_ADDRS);
        PnInvitationInfo {
            pn_id: pn.pn_id.clone(),
            owner: pn.owner.clone(),
            gateway: pn.gateway,
            gateway_addrs,
            entity,
        }
    }

    /// The invitations waiting for the session's entity (at most [`MAX_INVITATIONS`]).
    pub(crate) async fn pn_invitations(
        &self,
        s: &Session,
    ) -> Result<Vec<PnInvitationInfo>, RequestError> {
        let pns = self.store.values::<PnRecord>(Table::Pns)?;
        let mut out = Vec::new();
        for pn in pns {
            if out.len() >= MAX_INVITATIONS {
                break;
            }
            if let Some(entity) = invites(&pn, &s.entity, &s.user) {
                out.push(self.invitation_info(&pn, entity).await);
            }
        }
        Ok(out)
    }

    /// The invitee's owner declined: the entity and its user leave the PN's list, durably
    /// before the answer.
    pub(crate) async fn pn_invitation_decline(
        &self,
        s: &Session,
        pn_id: &str,
        now: UnixTime,
    ) -> Result<(), RequestError> {
        self.commit(|store| {
            let mut pn = get_pn(store, pn_id)?;
            let before = (
                pn.policy.invited_entities.len(),
                pn.policy.invited_users.len(),
            );
            pn.policy.invited_entities.retain(|p| *p != s.entity);
            pn.policy.invited_users.retain(|u| *u != s.user);
            let mut b = Batch::default();
            if before
                != (
                    pn.policy.invited_entities.len(),
                    pn.policy.invited_users.len(),
                )
            {
                pn.updated = now;
                b.put(Table::Pns, &pn.pn_id, &pn)?;
            }
            Ok::<_, RequestError>((b, ()))
        })
        .await?;
        tracing::info!(pn = %pn_id, entity = %s.entity, "a PN invitation was declined");
        Ok(())
    }

    /// After an invite was stored: the invitee's devices that have a live session are told
    /// at once.
    pub(crate) fn invited(&self, pn_id: &str, invitee: &Invitee) {
        self.follow(Followup::PnInvited {
            pn_id: pn_id.to_string(),
            invitee: invitee.clone(),
        });
    }

    /// The entities a [`Followup::PnInvited`] goes to: the invited entity, or every device of
    /// the invited user, with a live session, and whether the entity itself was invited.
    pub(crate) fn invitees(
        &self,
        invitee: &Invitee,
        now: UnixTime,
    ) -> Result<Vec<(PeerId, bool)>, RequestError> {
        let live = |p: &PeerId| self.authn.session(p, now).is_some();
        Ok(match invitee {
            Invitee::Entity(p) => live(p).then_some((*p, true)).into_iter().collect(),
            Invitee::User(user) => self
                .store
                .values::<EntityRecord>(Table::Entities)?
                .into_iter()
                .filter(|e| e.user == *user && e.revoked.is_none() && live(&e.peer_id))
                .map(|e| (e.peer_id, false))
                .take(MAX_INVITATIONS)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pn() -> PnRecord {
        let gw = PeerId::random();
        PnRecord {
            pn_id: "pn-1".into(),
            owner: "alice".into(),
            gateway: gw,
            members: vec![gw],
            admins: vec![gw],
            policy: Default::default(),
            created: 1,
            updated: 1,
            key: cpns_keys::GroupKey::generate(cpns_keys::GroupId("pn-1".into()), 1),
        }
    }

    #[test]
    fn only_invitees_that_have_not_joined_and_are_not_expelled_are_told() {
        let mut pn = pn();
        let (bob_phone, carol) = (PeerId::random(), PeerId::random());
        assert_eq!(invites(&pn, &bob_phone, "bob"), None);
        pn.policy.invited_users.push("bob".into());
        assert_eq!(invites(&pn, &bob_phone, "bob"), Some(false));
        pn.policy.invited_entities.push(carol);
        assert_eq!(invites(&pn, &carol, "carol"), Some(true));
        pn.members.push(carol);
        assert_eq!(invites(&pn, &carol, "carol"), None, "a member");
        pn.policy.expelled.push(bob_phone);
        assert_eq!(invites(&pn, &bob_phone, "bob"), None, "expelled");
    }
}
