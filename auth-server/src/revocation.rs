//! Revocation: the CA-signed list of revoked serials, and what revoking an entity does.
//!
//! Revoking an entity (by PeerId, or by any of its serials: revoking one serial revokes the
//! entity and all its serials) durably, in one transaction: adds its serials to the list
//! (version + 1), marks it revoked, removes it from every PN and Service Group (rotating their
//! keys). Then it ends the entity's session, pushes the new keys to the remaining members and
//! the new list to every gateway with a session. A revoked entity never authenticates or
//! enrols again; the device needs a new identity and a new code.

use std::sync::Arc;

use cpns_keys::{PeerId, RevocationList, UnixTime};

use crate::core::{Core, Followup};
use crate::error::AdminError;
use crate::records::{EntityRecord, GroupRecord, PnRecord};
use crate::store::{Batch, Store, StoreError, Table, meta};
use crate::views::RevokeOutcome;

/// Finds an entity by PeerId or by serial.
pub(crate) fn resolve_entity(store: &Store, id: &str) -> Result<EntityRecord, AdminError> {
    let id = id.trim();
    let peer = if let Ok(peer) = id.parse::<PeerId>() {
        peer
    } else if let Ok(serial) = id.parse::<u64>() {
        let bytes: Vec<u8> = store
            .get(Table::Serials, serial.to_be_bytes())?
            .ok_or_else(|| AdminError::NotFound(format!("no credential with serial {serial}")))?;
        PeerId::from_bytes(&bytes).map_err(|e| {
            AdminError::Store(StoreError::Corrupt {
                table: "serials.v1",
                reason: e.to_string(),
            })
        })?
    } else {
        return Err(AdminError::Invalid(format!(
            "{id:?} is neither a PeerId nor a serial number"
        )));
    };
    store
        .get(Table::Entities, peer.to_bytes())?
        .ok_or_else(|| AdminError::NotFound(format!("no entity {peer}")))
}

struct Revoked {
    outcome: RevokeOutcome,
    list: Option<RevocationList>,
    pns: Vec<PnRecord>,
    groups: Vec<GroupRecord>,
    peer: PeerId,
}

impl Core {
    /// Revokes an entity (admin). See the module docs.
    pub(crate) async fn revoke(
        &self,
        id: &str,
        now: UnixTime,
    ) -> Result<RevokeOutcome, AdminError> {
        let r = self
            .commit(|store| {
                let mut entity = resolve_entity(store, id)?;
                let peer = entity.peer_id;
                let current: RevocationList = store
                    .get(Table::Meta, meta::REVOCATIONS)?
                    .unwrap_or_else(|| (*self.revocations()).clone());
                if entity.revoked.is_some() {
                    return Ok::<_, AdminError>((
                        Batch::default(),
                        Revoked {
                            outcome: RevokeOutcome {
                                entity: peer.to_string(),
                                serials: entity.serials.clone(),
                                revocation_version: current.version,
                                pns: vec![],
                                groups: vec![],
                                already_revoked: true,
                            },
                            list: None,
                            pns: vec![],
                            groups: vec![],
                            peer,
                        },
                    ));
                }
                let list = RevocationList::sign(
                    &self.ca,
                    current.version + 1,
                    now,
                    current.serials.iter().chain(&entity.serials).copied(),
                )
                .map_err(|e| AdminError::Conflict(format!("revocation list: {e}")))?;
                entity.revoked = Some(now);
                let mut b = Batch::default();
                b.put(Table::Meta, meta::REVOCATIONS, &list)?;
                b.put(Table::Entities, peer.to_bytes(), &entity)?;
                let mut pns = Vec::new();
                for mut pn in store.values::<PnRecord>(Table::Pns)? {
                    let member = pn.members.contains(&peer);
                    let mentioned = member
                        || pn.admins.contains(&peer)
                        || pn.policy.invited_entities.contains(&peer);
                    if !mentioned {
                        continue;
                    }
                    pn.members.retain(|p| *p != peer);
                    pn.admins.retain(|p| *p != peer);
                    pn.policy.invited_entities.retain(|p| *p != peer);
                    pn.updated = now;
                    if member {
                        pn.key = pn.key.rotate();
                    }
                    b.put(Table::Pns, &pn.pn_id, &pn)?;
                    if member {
                        pns.push(pn);
                    }
                }
                let mut groups = Vec::new();
                for mut g in store.values::<GroupRecord>(Table::Groups)? {
                    let member = g.members.contains(&peer);
                    if !member && !g.invited.contains(&peer) {
                        continue;
                    }
                    g.members.retain(|p| *p != peer);
                    g.admins.retain(|p| *p != peer);
                    g.invited.retain(|p| *p != peer);
                    g.updated = now;
                    if g.owner == peer {
                        // The owner is gone: the first remaining member takes over; a group
                        // nobody is left in is deleted with its key.
                        match g.members.first().copied() {
                            Some(next) => {
                                g.owner = next;
                                if !g.admins.contains(&next) {
                                    g.admins.push(next);
                                }
                            }
                            None => {
                                b.delete(Table::Groups, &g.group.0);
                                continue;
                            }
                        }
                    }
                    if member {
                        g.key = g.key.rotate();
                    }
                    b.put(Table::Groups, &g.group.0, &g)?;
                    if member {
                        groups.push(g);
                    }
                }
                Ok((
                    b,
                    Revoked {
                        outcome: RevokeOutcome {
                            entity: peer.to_string(),
                            serials: entity.serials.clone(),
                            revocation_version: list.version,
                            pns: pns.iter().map(|p| p.pn_id.clone()).collect(),
                            groups: groups.iter().map(|g| g.group.0.clone()).collect(),
                            already_revoked: false,
                        },
                        list: Some(list),
                        pns,
                        groups,
                        peer,
                    },
                ))
            })
            .await?;
        if let Some(list) = r.list {
            tracing::info!(entity = %r.peer, version = list.version, "entity revoked");
            self.set_revocations(list);
            self.authn.end(&r.peer);
            self.metrics.revocation();
            for pn in &r.pns {
                self.metrics.rotation("pn");
                self.push_keys(&pn.key, &pn.members);
            }
            for g in &r.groups {
                self.metrics.rotation("sg");
                self.push_keys(&g.key, &g.members);
            }
            self.metrics
                .groups
                .set(self.store.len(Table::Groups) as i64);
            self.follow(Followup::Revocations(self.revocations()));
        }
        Ok(r.outcome)
    }

    /// The current list, for anyone who asks.
    pub(crate) fn revocation_list(&self) -> Arc<RevocationList> {
        self.revocations()
    }
}
