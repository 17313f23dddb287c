//! Personal Networks (5.6.9) and their keys (5.6.6): creation by a gateway (B.1 step 17),
//! membership requests and the policy lookup (steps 19-21), the PN key (steps 22-23),
//! invitations, expulsion, de-registration, release.
//!
//! Policy (step 20): devices of the PN owner's user are admitted; devices of other users only
//! if an admin invited the user or the device; an expelled device is refused until an admin
//! invites it again. Who may do what to a PN is decided in one place, [`authorise`]: admins
//! are the *current members* that are in `admins` (the gateway at first) or belong to the
//! owner user. Being the owner's device is not enough on its own: an expelled device (no
//! longer a member) has no rights at all, so it can neither invite itself back nor release
//! the PN, and no admin may invite itself. Every membership change rotates the PN key (epoch + 1) and is
//! durable before the answer. Rotations the gateway asked for are answered with every member's
//! grant (the gateway hands them out, steps 24-25); rotations anyone else caused are also
//! pushed to the members and their gateway.

use cpns_keys::{GroupId, GroupKey, PeerId, PublicKey, UnixTime};
use cpns_overlay::{
    ConnectionSetup, GroupKeyGrant, Invitee, MemberGrant, MembershipDecision, NodeMode,
    PnRecordInfo, transcript,
};

use crate::authn::{AuthnError, Session, check_credential};
use crate::core::{Core, Followup, grant, random_id};
use crate::error::{RequestError, forbidden, not_found};
use crate::records::{EntityRecord, PnRecord, UserRecord};
use crate::store::{Batch, Store, Table};

/// Most expired nonce entries deleted with one membership request.
const NONCE_PRUNE: usize = 256;

/// The key of a membership-request nonce in [`Table::Nonces`]: when it may be forgotten
/// (u64 BE, so that expired entries sort first), the PNE and the nonce. The expiry follows
/// from the signed request time, so a replay maps to the same key.
fn nonce_key(keep_until: UnixTime, pne: &PeerId, nonce: &[u8; 16]) -> Vec<u8> {
    let mut k = keep_until.to_be_bytes().to_vec();
    k.extend_from_slice(&pne.to_bytes());
    k.extend_from_slice(nonce);
    k
}

/// What an authenticated entity asks to do to a PN, for [`authorise`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum PnAction<'a> {
    /// Invite a user or an entity (`Some(peer)` when the invitee is an entity).
    Invite(Option<&'a PeerId>),
    /// Expel a member.
    Expel,
    /// De-register a member that left (G.1 step 9).
    Deregister,
    /// Release the whole PN.
    Release,
    /// Read the PN's record.
    Info,
    /// Pull one's own grant of the current key.
    PullKey,
    /// Forward a membership request or ask for the members' grants (steps 19-23).
    Gateway,
}

/// Whether `by` is an admin of `pn`: a current member that is listed in `admins` or is a
/// device of the owner user. Membership comes first, so an expelled device (removed from
/// `members`) stops being an admin at once, whatever its user.
pub(crate) fn is_admin(pn: &PnRecord, by: &Session) -> bool {
    pn.members.contains(&by.entity) && (pn.admins.contains(&by.entity) || by.user == pn.owner)
}

/// The one authorisation rule of cpns-auth for PNs (the PN-Admin work builds on it):
/// - the gateway of record alone forwards membership requests, asks for grants and
///   de-registers members;
/// - admins ([`is_admin`]) invite and expel; the gateway or an admin releases;
/// - nobody invites itself (an admin is a member already; anyone else would be readmitting
///   itself), and nobody expels the gateway (it releases or hands over instead);
/// - members (and so admins) read the record and pull their own grant.
///
/// Anything else is refused with `Forbidden`.
pub(crate) fn authorise(
    pn: &PnRecord,
    by: &Session,
    action: PnAction<'_>,
) -> Result<(), RequestError> {
    let gateway = pn.gateway == by.entity;
    let member = pn.members.contains(&by.entity);
    let allowed = match action {
        PnAction::Gateway | PnAction::Deregister => gateway,
        PnAction::Invite(Some(peer)) if *peer == by.entity => {
            return Err(forbidden("an entity cannot invite itself"));
        }
        PnAction::Invite(_) | PnAction::Expel => is_admin(pn, by),
        PnAction::Release => gateway || is_admin(pn, by),
        PnAction::Info | PnAction::PullKey => member,
    };
    if allowed {
        return Ok(());
    }
    Err(forbidden(match action {
        PnAction::Gateway => "only the PN's gateway may do this".to_string(),
        PnAction::Deregister => "only the PN's gateway may de-register members".to_string(),
        PnAction::Invite(_) => "only a PN admin (a current member) may invite".to_string(),
        PnAction::Expel => "only a PN admin (a current member) may expel".to_string(),
        PnAction::Release => "only the PN's gateway or an admin may release it".to_string(),
        PnAction::Info | PnAction::PullKey => format!("not a member of {}", pn.pn_id),
    }))
}

/// The policy lookup of B.1 step 20.
pub(crate) fn admit(pn: &PnRecord, user: &str, pne: &PeerId) -> Result<(), String> {
    if pn.policy.expelled.contains(pne) {
        return Err("this device was expelled from the PN; an admin must invite it again".into());
    }
    if user == pn.owner
        || pn.policy.invited_users.iter().any(|u| u == user)
        || pn.policy.invited_entities.contains(pne)
    {
        return Ok(());
    }
    Err(format!(
        "user {user:?} is not the PN owner ({:?}) and was not invited",
        pn.owner
    ))
}

pub(crate) fn get_pn(store: &Store, pn_id: &str) -> Result<PnRecord, RequestError> {
    store
        .get(Table::Pns, pn_id)?
        .ok_or_else(|| not_found(format!("no PN {pn_id}")))
}

fn pn_of_gateway(store: &Store, gateway: &PeerId) -> Result<PnRecord, RequestError> {
    store
        .values::<PnRecord>(Table::Pns)?
        .into_iter()
        .find(|pn| &pn.gateway == gateway)
        .ok_or_else(|| not_found(format!("no PN has {gateway} as its gateway")))
}

fn rotate(pn: &mut PnRecord, now: UnixTime) {
    pn.key = pn.key.rotate();
    pn.updated = now;
}

impl Core {
    /// B.1 step 17: creates the gateway's PN, or updates the one it already runs (named by
    /// `claimed`, or found by gateway of record). A member of the owner user (or an admin) that
    /// claims a PN with `take_over` becomes its gateway (a failover or planned switch, 5.6.9);
    /// membership and key stay. The same claim without `take_over` from a member that is not
    /// the gateway of record (a gateway back after the PN moved on) changes nothing: the
    /// answer names the current gateway, which the claimant joins as a PNE.
    /// Returns the record and the claimant's grant of the current key.
    pub(crate) async fn establish_pn(
        &self,
        gateway: PeerId,
        claimed: Option<String>,
        take_over: bool,
        now: UnixTime,
    ) -> Result<(PnRecordInfo, GroupKeyGrant, bool), RequestError> {
        let (pn, gw, created) = self
            .commit(|store| {
                let gw: EntityRecord = store
                    .get(Table::Entities, gateway.to_bytes())?
                    .ok_or_else(|| not_found("gateway is not enrolled"))?;
                if gw.revoked.is_some() {
                    return Err(RequestError::Authn(AuthnError::Revoked {
                        serial: gw.serial(),
                    }));
                }
                // A PN merged away, or one this gateway was split off from, leads to the PN it
                // is in now (5.6.9): it joins that PN's gateway as a PNE, or runs its own.
                let claimed_pn = match &claimed {
                    Some(id) => match crate::pn_merge::resolve(store, id, &gateway) {
                        Ok(pn) => Some(pn),
                        Err(RequestError::NotFound(_)) => None,
                        Err(e) => return Err(e),
                    }
                    .filter(|pn| {
                        pn.gateway == gateway
                            || (pn.members.contains(&gateway)
                                && (gw.user == pn.owner || pn.admins.contains(&gateway)))
                    }),
                    None => None,
                };
                if let Some(pn) = &claimed_pn
                    && pn.gateway != gateway
                    && !take_over
                {
                    return Ok((Batch::default(), (pn.clone(), gw, false)));
                }
                let existing = match claimed_pn {
                    Some(pn) => Some(pn),
                    None => store
                        .values::<PnRecord>(Table::Pns)?
                        .into_iter()
                        .find(|pn| pn.gateway == gateway),
                };
                let mut b = Batch::default();
                match existing {
                    Some(mut pn) => {
                        if pn.gateway != gateway {
                            pn.gateway = gateway;
                            if !pn.admins.contains(&gateway) {
                                pn.admins.push(gateway);
                            }
                            pn.updated = now;
                            b.put(Table::Pns, &pn.pn_id, &pn)?;
                        }
                        Ok((b, (pn, gw, false)))
                    }
                    None => {
                        let pn_id = random_id("pn-");
                        let pn = PnRecord {
                            key: GroupKey::generate(GroupId(pn_id.clone()), 1),
                            pn_id,
                            owner: gw.user.clone(),
                            gateway,
                            members: vec![gateway],
                            admins: vec![gateway],
                            policy: Default::default(),
                            created: now,
                            updated: now,
                        };
                        b.put(Table::Pns, &pn.pn_id, &pn)?;
                        Ok((b, (pn, gw, true)))
                    }
                }
            })
            .await?;
        if created {
            self.metrics.rotation("pn");
            self.metrics.pns.set(self.store.len(Table::Pns) as i64);
        }
        let g = grant(&gw.eukey(), &pn.key, &gateway);
        Ok((pn.info(), g, created))
    }

    /// B.1 steps 19-21: checks the PNE's signed request as forwarded by the PN's gateway,
    /// looks the policy up and, when admitted, adds the member and rotates the key durably.
    pub(crate) async fn membership_request(
        &self,
        gateway: &Session,
        setup: &ConnectionSetup,
        now: UnixTime,
    ) -> Result<(MembershipDecision, PnRecordInfo), RequestError> {
        let pne = *setup.credential.entity();
        let revocations = self.revocations();
        check_credential(
            &self.ca.public(),
            &revocations,
            &pne,
            &setup.credential,
            NodeMode::Pne,
            now,
        )?;
        let skew = now.abs_diff(setup.time);
        let max_skew = self.config.membership_clock_skew.as_secs();
        if skew > max_skew {
            return Err(RequestError::Stale { skew });
        }
        let entity = self
            .entity(&pne)?
            .ok_or(RequestError::Authn(AuthnError::NotEnrolled))?;
        if entity.revoked.is_some() {
            return Err(RequestError::Authn(AuthnError::Revoked {
                serial: setup.credential.serial(),
            }));
        }
        if !entity.serials.contains(&setup.credential.serial()) {
            return Err(RequestError::Authn(AuthnError::NotEnrolled));
        }
        let msg = transcript::membership_request(
            &setup.pn_id,
            &gateway.entity,
            &pne,
            setup.time,
            &setup.nonce,
        );
        entity
            .eukey()
            .verify_mac(&msg, &setup.eukey_mac)
            .map_err(|_| RequestError::Authn(AuthnError::BadMac))?;
        PublicKey::from_peer_id(&pne)
            .and_then(|k| k.verify(&msg, &setup.signature))
            .map_err(|_| RequestError::Authn(AuthnError::BadSignature))?;
        // Durable, so that a join cannot be replayed after a restart; kept for as long as the
        // request's time is acceptable, then pruned.
        let key = nonce_key(setup.time + max_skew + 1, &pne, &setup.nonce);
        self.commit(|store| {
            if store.contains(Table::Nonces, &key)? {
                return Err(RequestError::Replay);
            }
            let mut b = Batch::default();
            b.put(Table::Nonces, &key, &())?;
            for old in store.keys_between(Table::Nonces, &[], &now.to_be_bytes(), NONCE_PRUNE)? {
                b.delete(Table::Nonces, old);
            }
            Ok((b, ()))
        })
        .await?;
        let max_members = self.config.max_group_members;
        let (decision, info, rotated) = self
            .commit(|store| -> Result<_, RequestError> {
                // An empty PN id means "the PN of the gateway I asked": a PNE that met its
                // gateway before the gateway's PN existed (B.1 step 7 precedes step 17) cannot
                // know the id; its proof still binds the gateway's PeerId.
                let mut pn = if setup.pn_id.is_empty() {
                    pn_of_gateway(store, &gateway.entity)?
                } else {
                    get_pn(store, &setup.pn_id)?
                };
                authorise(&pn, gateway, PnAction::Gateway)?;
                if pn.members.contains(&pne) {
                    return Ok((
                        Batch::default(),
                        (MembershipDecision::Admitted, pn.info(), false),
                    ));
                }
                if let Err(reason) = admit(&pn, &entity.user, &pne) {
                    return Ok((
                        Batch::default(),
                        (MembershipDecision::Refused(reason), pn.info(), false),
                    ));
                }
                if pn.members.len() >= max_members {
                    return Ok((
                        Batch::default(),
                        (
                            MembershipDecision::Refused(format!(
                                "the PN is full ({max_members} members)"
                            )),
                            pn.info(),
                            false,
                        ),
                    ));
                }
                pn.members.push(pne);
                rotate(&mut pn, now);
                let mut b = Batch::default();
                b.put(Table::Pns, &pn.pn_id, &pn)?;
                Ok((b, (MembershipDecision::Admitted, pn.info(), true)))
            })
            .await?;
        if rotated {
            self.metrics.rotation("pn");
        }
        Ok((decision, info))
    }

    /// B.1 steps 22-23: the current PN key for every member, each under its own EUKey.
    pub(crate) async fn pn_key_request(
        &self,
        gateway: &Session,
        pn_id: &str,
        member: &PeerId,
    ) -> Result<(u64, Vec<MemberGrant>), RequestError> {
        self.read(|store| {
            let pn = get_pn(store, pn_id)?;
            authorise(&pn, gateway, PnAction::Gateway)?;
            if !pn.members.contains(member) {
                return Err(not_found(format!("{member} is not a member of {pn_id}")));
            }
            Ok((pn.epoch(), self.grants(&pn.key, &pn.members)?))
        })
        .await
    }

    /// An admin invites a user or an entity.
    pub(crate) async fn pn_invite(
        &self,
        by: &Session,
        pn_id: &str,
        invitee: &Invitee,
        now: UnixTime,
    ) -> Result<PnRecordInfo, RequestError> {
        let cap = self.config.max_group_members;
        self.commit(|store| {
            let mut pn = get_pn(store, pn_id)?;
            let peer = match invitee {
                Invitee::Entity(peer) => Some(peer),
                Invitee::User(_) => None,
            };
            authorise(&pn, by, PnAction::Invite(peer))?;
            match invitee {
                Invitee::User(user) => {
                    if store.get::<UserRecord>(Table::Users, user)?.is_none() {
                        return Err(not_found(format!("no user named {user:?}")));
                    }
                    if !pn.policy.invited_users.contains(user) {
                        if pn.policy.invited_users.len() >= cap {
                            return Err(RequestError::Conflict("too many invited users".into()));
                        }
                        pn.policy.invited_users.push(user.clone());
                    }
                }
                Invitee::Entity(peer) => {
                    let known = store
                        .get::<EntityRecord>(Table::Entities, peer.to_bytes())?
                        .is_some_and(|e| e.revoked.is_none());
                    if !known {
                        return Err(not_found(format!("{peer} is not an enrolled entity")));
                    }
                    pn.policy.expelled.retain(|p| p != peer);
                    if !pn.policy.invited_entities.contains(peer) {
                        if pn.policy.invited_entities.len() >= cap {
                            return Err(RequestError::Conflict("too many invited entities".into()));
                        }
                        pn.policy.invited_entities.push(*peer);
                    }
                }
            }
            pn.updated = now;
            let mut b = Batch::default();
            b.put(Table::Pns, &pn.pn_id, &pn)?;
            Ok((b, pn.info()))
        })
        .await
    }

    /// An admin expels a member (`expel = true`), or the gateway de-registers one that left
    /// (G.1 step 9). The key rotates; the answer holds the remaining members' grants.
    pub(crate) async fn pn_remove(
        &self,
        by: &Session,
        pn_id: &str,
        member: &PeerId,
        expel: bool,
        now: UnixTime,
    ) -> Result<(u64, Vec<MemberGrant>), RequestError> {
        let cap = self.config.max_group_members;
        let pn = self
            .commit(|store| {
                let mut pn = get_pn(store, pn_id)?;
                let action = if expel {
                    PnAction::Expel
                } else {
                    PnAction::Deregister
                };
                authorise(&pn, by, action)?;
                if *member == pn.gateway {
                    return Err(RequestError::Conflict(
                        "the gateway cannot leave its own PN; release the PN or switch gateways"
                            .into(),
                    ));
                }
                if !pn.members.contains(member) {
                    return Err(not_found(format!("{member} is not a member of {pn_id}")));
                }
                pn.members.retain(|p| p != member);
                pn.admins.retain(|p| p != member);
                if expel {
                    pn.policy.invited_entities.retain(|p| p != member);
                    if !pn.policy.expelled.contains(member) {
                        if pn.policy.expelled.len() >= cap {
                            pn.policy.expelled.remove(0);
                        }
                        pn.policy.expelled.push(*member);
                    }
                }
                rotate(&mut pn, now);
                let mut b = Batch::default();
                b.put(Table::Pns, &pn.pn_id, &pn)?;
                crate::pn_admin::forget_member(store, pn_id, member, &mut b)?;
                Ok((b, pn))
            })
            .await?;
        self.metrics.rotation("pn");
        if by.entity != pn.gateway {
            // The gateway did not ask: it learns of the removal (and drops the member from
            // its PN Inventory) through the record; the members get the new key directly.
            self.push_keys(&pn.key, &pn.members);
            self.push_pn_changed(pn_id);
        }
        Ok((pn.epoch(), self.grants(&pn.key, &pn.members)?))
    }

    /// The gateway (or an admin) releases the PN: its record and key are deleted.
    pub(crate) async fn pn_release(&self, by: &Session, pn_id: &str) -> Result<(), RequestError> {
        let gateway = self
            .commit(|store| -> Result<_, RequestError> {
                let pn = get_pn(store, pn_id)?;
                authorise(&pn, by, PnAction::Release)?;
                let mut b = Batch::default();
                b.delete(Table::Pns, pn_id);
                b.delete(Table::PnAdmin, pn_id);
                Ok((b, pn.gateway))
            })
            .await?;
        self.metrics.pns.set(self.store.len(Table::Pns) as i64);
        if gateway != by.entity {
            self.follow(Followup::PnReleased {
                pn_id: pn_id.to_owned(),
                gateway,
            });
        }
        Ok(())
    }

    /// A member pulls its own grant of the current PN key.
    pub(crate) async fn pn_key_pull(
        &self,
        by: &Session,
        pn_id: &str,
    ) -> Result<(u64, Vec<MemberGrant>), RequestError> {
        self.read(|store| {
            let pn = get_pn(store, pn_id)?;
            authorise(&pn, by, PnAction::PullKey)?;
            Ok((pn.epoch(), self.grants(&pn.key, &[by.entity])?))
        })
        .await
    }

    /// A PN's record, for its members and admins.
    pub(crate) async fn pn_info(
        &self,
        by: &Session,
        pn_id: &str,
    ) -> Result<PnRecordInfo, RequestError> {
        self.read(|store| {
            // A member of a PN merged away, or split off, is led to the PN it is in now.
            let pn = crate::pn_merge::resolve(store, pn_id, &by.entity)?;
            authorise(&pn, by, PnAction::Info)?;
            Ok(pn.info())
        })
        .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn nonce_keys_sort_by_expiry() {
        let p = PeerId::random();
        assert!(nonce_key(5, &p, &[9; 16]) < nonce_key(6, &p, &[0; 16]));
        assert!(nonce_key(5, &p, &[9; 16]).as_slice() < 6u64.to_be_bytes().as_slice());
    }
}
