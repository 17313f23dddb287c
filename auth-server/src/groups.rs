//! Service Groups (5.6.8) and their keys (5.6.6): create, delete, invite, expel, join, leave.
//!
//! The creator is the group's owner and admin; only admins invite, expel and delete. A member
//! joins only after an invitation. Every membership change rotates the key (epoch + 1), durably
//! before the answer, and pushes the new key to the members (and their gateways); members can
//! always pull ([`Core::keys_pull`]). Deleting a group deletes its key.

use cpns_keys::{GroupId, GroupKey, PeerId, UnixTime};
use cpns_overlay::{GroupInfo, GroupKeyGrant};

use crate::authn::Session;
use crate::core::{Core, grant, random_id};
use crate::error::{RequestError, forbidden, not_found};
use crate::records::{EntityRecord, GroupRecord, PnRecord};
use crate::store::{Batch, Store, Table};

/// Longest Service Group name, in bytes.
pub(crate) const MAX_GROUP_NAME: usize = 128;

fn get_group(store: &Store, group: &GroupId) -> Result<GroupRecord, RequestError> {
    if group.0.len() > 64 {
        return Err(not_found("no such Service Group"));
    }
    store
        .get(Table::Groups, &group.0)?
        .ok_or_else(|| not_found(format!("no Service Group {group}")))
}

fn require_admin(g: &GroupRecord, by: &Session) -> Result<(), RequestError> {
    if g.admins.contains(&by.entity) {
        Ok(())
    } else {
        Err(forbidden("only a Service Group admin may do this"))
    }
}

/// What a membership change does to a group.
enum Change {
    Invite(PeerId),
    Expel(PeerId),
    Join,
    Leave,
}

impl Core {
    /// Creates a Service Group with the caller as owner, admin and first member.
    pub(crate) async fn group_create(
        &self,
        by: &Session,
        name: &str,
        now: UnixTime,
    ) -> Result<GroupInfo, RequestError> {
        crate::enrol::check_name("group", name, MAX_GROUP_NAME)
            .map_err(RequestError::BadRequest)?;
        let max_owned = self.config.max_groups_per_entity;
        let g = self
            .commit(|store| {
                let owned = store
                    .values::<GroupRecord>(Table::Groups)?
                    .iter()
                    .filter(|g| g.owner == by.entity)
                    .count();
                if owned >= max_owned {
                    return Err(RequestError::Conflict(format!(
                        "an entity may own at most {max_owned} Service Groups"
                    )));
                }
                let id = random_id("sg-");
                let g = GroupRecord {
                    key: GroupKey::generate(GroupId(id.clone()), 1),
                    group: GroupId(id),
                    name: name.to_owned(),
                    owner: by.entity,
                    admins: vec![by.entity],
                    members: vec![by.entity],
                    invited: Vec::new(),
                    created: now,
                    updated: now,
                };
                let mut b = Batch::default();
                b.put(Table::Groups, &g.group.0, &g)?;
                Ok((b, g))
            })
            .await?;
        self.metrics.rotation("sg");
        self.metrics
            .groups
            .set(self.store.len(Table::Groups) as i64);
        self.push_keys(&g.key, &g.members);
        Ok(g.info())
    }

    /// Deletes a group and its key (admins only).
    pub(crate) async fn group_delete(
        &self,
        by: &Session,
        group: &GroupId,
    ) -> Result<(), RequestError> {
        self.commit(|store| {
            let g = get_group(store, group)?;
            require_admin(&g, by)?;
            let mut b = Batch::default();
            b.delete(Table::Groups, &group.0);
            Ok::<_, RequestError>((b, ()))
        })
        .await?;
        self.metrics
            .groups
            .set(self.store.len(Table::Groups) as i64);
        Ok(())
    }

    /// Invites, expels, joins or leaves; rotates the key when the members change.
    async fn group_change(
        &self,
        by: &Session,
        group: &GroupId,
        change: Change,
        now: UnixTime,
    ) -> Result<GroupInfo, RequestError> {
        let cap = self.config.max_group_members;
        let (g, rotated) = self
            .commit(|store| {
                let mut g = get_group(store, group)?;
                let rotated = match change {
                    Change::Invite(peer) => {
                        require_admin(&g, by)?;
                        let known = store
                            .get::<EntityRecord>(Table::Entities, peer.to_bytes())?
                            .is_some_and(|e| e.revoked.is_none());
                        if !known {
                            return Err(not_found(format!("{peer} is not an enrolled entity")));
                        }
                        if g.members.contains(&peer) {
                            return Err(RequestError::Conflict(format!(
                                "{peer} is already a member"
                            )));
                        }
                        if !g.invited.contains(&peer) {
                            if g.invited.len() >= cap {
                                return Err(RequestError::Conflict("too many invitations".into()));
                            }
                            g.invited.push(peer);
                        }
                        false
                    }
                    Change::Expel(peer) => {
                        require_admin(&g, by)?;
                        if peer == g.owner {
                            return Err(RequestError::Conflict(
                                "the owner cannot be expelled; delete the group instead".into(),
                            ));
                        }
                        if g.members.contains(&peer) {
                            g.members.retain(|p| *p != peer);
                            g.admins.retain(|p| *p != peer);
                            true
                        } else if g.invited.contains(&peer) {
                            g.invited.retain(|p| *p != peer);
                            false
                        } else {
                            return Err(not_found(format!("{peer} is not a member")));
                        }
                    }
                    Change::Join => {
                        if g.members.contains(&by.entity) {
                            return Err(RequestError::Conflict("already a member".into()));
                        }
                        if !g.invited.contains(&by.entity) {
                            return Err(forbidden("not invited to this Service Group"));
                        }
                        if g.members.len() >= cap {
                            return Err(RequestError::Conflict("the group is full".into()));
                        }
                        g.invited.retain(|p| *p != by.entity);
                        g.members.push(by.entity);
                        true
                    }
                    Change::Leave => {
                        if !g.members.contains(&by.entity) {
                            return Err(not_found("not a member of this Service Group"));
                        }
                        if by.entity == g.owner {
                            return Err(RequestError::Conflict(
                                "the owner cannot leave; delete the group instead".into(),
                            ));
                        }
                        g.members.retain(|p| *p != by.entity);
                        g.admins.retain(|p| *p != by.entity);
                        true
                    }
                };
                if rotated {
                    g.key = g.key.rotate();
                }
                g.updated = now;
                let mut b = Batch::default();
                b.put(Table::Groups, &g.group.0, &g)?;
                Ok((b, (g, rotated)))
            })
            .await?;
        if rotated {
            self.metrics.rotation("sg");
            self.push_keys(&g.key, &g.members);
        }
        Ok(g.info())
    }

    pub(crate) async fn group_invite(
        &self,
        by: &Session,
        group: &GroupId,
        entity: PeerId,
        now: UnixTime,
    ) -> Result<GroupInfo, RequestError> {
        self.group_change(by, group, Change::Invite(entity), now)
            .await
    }

    pub(crate) async fn group_expel(
        &self,
        by: &Session,
        group: &GroupId,
        entity: PeerId,
        now: UnixTime,
    ) -> Result<GroupInfo, RequestError> {
        self.group_change(by, group, Change::Expel(entity), now)
            .await
    }

    pub(crate) async fn group_join(
        &self,
        by: &Session,
        group: &GroupId,
        now: UnixTime,
    ) -> Result<GroupInfo, RequestError> {
        self.group_change(by, group, Change::Join, now).await
    }

    pub(crate) async fn group_leave(
        &self,
        by: &Session,
        group: &GroupId,
        now: UnixTime,
    ) -> Result<GroupInfo, RequestError> {
        self.group_change(by, group, Change::Leave, now).await
    }

    /// A group's record, for its members, invitees and admins.
    pub(crate) async fn group_info(
        &self,
        by: &Session,
        group: &GroupId,
    ) -> Result<GroupInfo, RequestError> {
        self.read(|store| {
            let g = get_group(store, group)?;
            if !g.members.contains(&by.entity) && !g.invited.contains(&by.entity) {
                return Err(forbidden("not a member of this Service Group"));
            }
            Ok(g.info())
        })
        .await
    }

    /// Groups the caller belongs to or is invited to.
    pub(crate) async fn group_list(&self, by: &Session) -> Result<Vec<GroupInfo>, RequestError> {
        self.read(|store| {
            Ok(store
                .values::<GroupRecord>(Table::Groups)?
                .iter()
                .filter(|g| g.members.contains(&by.entity) || g.invited.contains(&by.entity))
                .map(GroupRecord::info)
                .collect())
        })
        .await
    }

    /// The caller's grants of the current key of every PN and Service Group it belongs to.
    pub(crate) async fn keys_pull(&self, by: &Session) -> Result<Vec<GroupKeyGrant>, RequestError> {
        self.read(|store| {
            let entity: EntityRecord = store
                .get(Table::Entities, by.entity.to_bytes())?
                .ok_or_else(|| not_found("not enrolled"))?;
            let eukey = entity.eukey();
            let mut out = Vec::new();
            for pn in store.values::<PnRecord>(Table::Pns)? {
                if pn.members.contains(&by.entity) {
                    out.push(grant(&eukey, &pn.key, &by.entity));
                }
            }
            for g in store.values::<GroupRecord>(Table::Groups)? {
                if g.members.contains(&by.entity) {
                    out.push(grant(&eukey, &g.key, &by.entity));
                }
            }
            Ok(out)
        })
        .await
    }
}
