//! PN Admin and Adminees (5.6.9, 3.2): who administers a PN beside its gateway, and what the
//! admins set for each member.
//!
//! Policy: a member that is a device of the PN's owner user is an admin as soon as it asks
//! (it already may invite and expel, see [`crate::pn`]'s `is_admin`; asking makes it listed).
//! A member of another user waits, listed as pending, until an existing admin approves it.
//! Admins change an Adminee's settings (label, whether it may be gateway, its mode preference,
//! the services it shows the PN, its status policy); a non-admin's change is refused.
//!
//! Every change is durable before the answer, and then pushed to the PN's gateway as
//! [`AuthMessage::PnChanged`] (with the PN's record, so that an expulsion by another admin
//! reaches the gateway's member list too); the gateway tells every member.

use cpns_keys::{PeerId, UnixTime};
use cpns_overlay::{AdmineeEntry, AdmineeSettings, PnAdminInfo};

use crate::authn::Session;
use crate::core::{Core, Followup};
use crate::error::{RequestError, forbidden, not_found};
use crate::pn::{get_pn, is_admin};
use crate::records::{EntityRecord, PnAdminRecord, PnRecord};
use crate::store::{Batch, Store, Table};

fn get_admin(store: &Store, pn_id: &str) -> Result<PnAdminRecord, RequestError> {
    Ok(store.get(Table::PnAdmin, pn_id)?.unwrap_or_default())
}

pub(crate) fn user_of(store: &Store, peer: &PeerId) -> Result<Option<String>, RequestError> {
    Ok(store
        .get::<EntityRecord>(Table::Entities, peer.to_bytes())?
        .map(|e| e.user.clone()))
}

/// The admin information of `pn` as members see it: its admins are the members that are
/// listed or belong to the owner user (the rule of [`crate::pn`]), in member order.
pub(crate) fn admin_info(
    store: &Store,
    pn: &PnRecord,
    admin: &PnAdminRecord,
) -> Result<PnAdminInfo, RequestError> {
    let mut admins = Vec::new();
    for m in &pn.members {
        if pn.admins.contains(m) || user_of(store, m)?.as_deref() == Some(pn.owner.as_str()) {
            admins.push(*m);
        }
    }
    Ok(PnAdminInfo {
        pn_id: pn.pn_id.clone(),
        admins,
        pending: admin
            .pending
            .iter()
            .filter(|p| pn.members.contains(p))
            .copied()
            .collect(),
        adminees: admin
            .adminees
            .iter()
            .filter(|a| pn.members.contains(&a.member))
            .cloned()
            .collect(),
    })
}

/// Drops what a removed member left in the admin record (called with the PN's removal).
pub(crate) fn forget_member(
    store: &Store,
    pn_id: &str,
    member: &PeerId,
    b: &mut Batch,
) -> Result<(), RequestError> {
    let mut admin = get_admin(store, pn_id)?;
    let before = (admin.pending.len(), admin.adminees.len());
    admin.pending.retain(|p| p != member);
    admin.adminees.retain(|a| a.member != *member);
    if before != (admin.pending.len(), admin.adminees.len()) {
        b.put(Table::PnAdmin, pn_id, &admin)?;
    }
    Ok(())
}

impl Core {
    /// A member asks to be PN Admin: granted at once for a device of the owner user, else
    /// pending until an admin approves.
    pub(crate) async fn pn_admin_request(
        &self,
        by: &Session,
        pn_id: &str,
        now: UnixTime,
    ) -> Result<PnAdminInfo, RequestError> {
        let cap = self.config.max_group_members;
        let info = self
            .commit(|store| {
                let mut pn = get_pn(store, pn_id)?;
                if !pn.members.contains(&by.entity) {
                    return Err(forbidden(format!("not a member of {pn_id}")));
                }
                let mut admin = get_admin(store, pn_id)?;
                let mut b = Batch::default();
                if by.user == pn.owner || pn.admins.contains(&by.entity) {
                    if !pn.admins.contains(&by.entity) {
                        pn.admins.push(by.entity);
                        pn.updated = now;
                        b.put(Table::Pns, pn_id, &pn)?;
                    }
                } else if !admin.pending.contains(&by.entity) {
                    if admin.pending.len() >= cap {
                        return Err(RequestError::Conflict(
                            "too many pending admin requests".into(),
                        ));
                    }
                    admin.pending.push(by.entity);
                    b.put(Table::PnAdmin, pn_id, &admin)?;
                }
                let info = admin_info(store, &pn, &admin)?;
                Ok((b, info))
            })
            .await?;
        self.push_pn_changed(pn_id);
        Ok(info)
    }

    /// An admin approves a member's pending admin request.
    pub(crate) async fn pn_admin_approve(
        &self,
        by: &Session,
        pn_id: &str,
        entity: &PeerId,
        now: UnixTime,
    ) -> Result<PnAdminInfo, RequestError> {
        let info = self
            .commit(|store| {
                let mut pn = get_pn(store, pn_id)?;
                if !is_admin(&pn, by) {
                    return Err(forbidden("only a PN admin may approve an admin request"));
                }
                let mut admin = get_admin(store, pn_id)?;
                if !admin.pending.contains(entity) {
                    return Err(not_found(format!(
                        "{entity} has not asked to be admin of {pn_id}"
                    )));
                }
                if !pn.members.contains(entity) {
                    return Err(not_found(format!("{entity} is not a member of {pn_id}")));
                }
                admin.pending.retain(|p| p != entity);
                pn.admins.push(*entity);
                pn.updated = now;
                let mut b = Batch::default();
                b.put(Table::Pns, pn_id, &pn)?;
                b.put(Table::PnAdmin, pn_id, &admin)?;
                let info = admin_info(store, &pn, &admin)?;
                Ok((b, info))
            })
            .await?;
        self.push_pn_changed(pn_id);
        Ok(info)
    }

    /// An admin changes an Adminee's settings (laid over what was set before).
    pub(crate) async fn pn_adminee_set(
        &self,
        by: &Session,
        pn_id: &str,
        member: &PeerId,
        settings: &AdmineeSettings,
    ) -> Result<PnAdminInfo, RequestError> {
        let info = self
            .commit(|store| {
                let pn = get_pn(store, pn_id)?;
                if !is_admin(&pn, by) {
                    return Err(forbidden("only a PN admin may change an Adminee"));
                }
                if !pn.members.contains(member) {
                    return Err(not_found(format!("{member} is not a member of {pn_id}")));
                }
                let mut admin = get_admin(store, pn_id)?;
                let old = admin
                    .adminees
                    .iter()
                    .find(|a| a.member == *member)
                    .map(|a| a.settings.clone())
                    .unwrap_or_default();
                let merged = old.merged(settings);
                merged.check().map_err(RequestError::BadRequest)?;
                if *member == pn.gateway
                    && (merged.may_be_gateway == Some(false)
                        || matches!(merged.mode.as_deref(), Some("pne")))
                {
                    return Err(RequestError::Conflict(
                        "the gateway keeps its role while it is gateway: hand it over first (`cpns pn handoff`)".into(),
                    ));
                }
                admin.adminees.retain(|a| a.member != *member);
                admin.adminees.push(AdmineeEntry {
                    member: *member,
                    settings: merged,
                });
                let mut b = Batch::default();
                b.put(Table::PnAdmin, pn_id, &admin)?;
                let info = admin_info(store, &pn, &admin)?;
                Ok((b, info))
            })
            .await?;
        self.push_pn_changed(pn_id);
        Ok(info)
    }

    /// A PN's admin information, for its members.
    pub(crate) async fn pn_admins(
        &self,
        by: &Session,
        pn_id: &str,
    ) -> Result<PnAdminInfo, RequestError> {
        self.read(|store| {
            let pn = get_pn(store, pn_id)?;
            if !pn.members.contains(&by.entity) {
                return Err(forbidden(format!("not a member of {pn_id}")));
            }
            let admin = get_admin(store, pn_id)?;
            admin_info(store, &pn, &admin)
        })
        .await
    }

    /// Queues the PN's record and admin information for its gateway.
    pub(crate) fn push_pn_changed(&self, pn_id: &str) {
        self.follow(Followup::PnChanged {
            pn_id: pn_id.to_owned(),
        });
    }

    /// What [`Followup::PnChanged`] sends: the PN's gateway, its record and admin information.
    pub(crate) fn pn_changed(
        &self,
        pn_id: &str,
    ) -> Result<Option<(PeerId, cpns_overlay::PnRecordInfo, PnAdminInfo)>, RequestError> {
        let Some(pn) = self.store.get::<PnRecord>(Table::Pns, pn_id)? else {
            return Ok(None);
        };
        let admin = get_admin(&self.store, pn_id)?;
        let info = admin_info(&self.store, &pn, &admin)?;
        Ok(Some((pn.gateway, pn.info(), info)))
    }
}
