//! Merging two PNs and splitting one (5.6.9), decided here and nowhere else.
//!
//! `cpns-auth` is the durable authority of both operations: each is one sled transaction,
//! flushed before the answer, and what the gateways and members do afterwards only follows
//! it. A member that missed the server's push (its gateway was killed mid-way, it was
//! offline) finds its PN on its next contact: a PN id it names that was merged away, or that
//! it was split off from, leads to the PN it is in now ([`resolve`], used by `PnInfoRequest`
//! and by a gateway's step 17), recorded in [`Table::PnMoves`].
//!
//! Merge: an admin of each PN must consent (`PnMergeRequest` naming the other PN). The first
//! consent is stored (it lapses after [`CONSENT_SECS`]); the second, by an admin of the other
//! PN, merges: the PN whose admin consented first stays, the other's members and admins join
//! it, its key rotates once, and the other PN's record and key are deleted (released). No one
//! gives another PN's consent: only an admin of a PN ([`is_admin`]) consents for it.
//!
//! Split: an admin names members that leave for a new PN with one of them as its gateway.
//! The PN's own gateway stays (it hands its role over first to leave). The PN that stays and
//! the new PN each get a new key (the stayers' epoch rotates, the new PN starts its own), so
//! neither side can open what the other seals afterwards.

use cpns_keys::{GroupId, GroupKey, Mode, PeerId, UnixTime};
use cpns_overlay::PnRecordInfo;

use crate::authn::Session;
use crate::core::{Core, Followup, random_id};
use crate::error::{RequestError, forbidden, not_found};
use crate::pn::{get_pn, is_admin};
use crate::pn_admin::user_of;
use crate::records::{EntityRecord, MergeConsent, PnAdminRecord, PnMove, PnMoves, PnRecord};
use crate::store::{Batch, Store, Table};

/// How long a first admin's consent to a merge waits for the other PN's admin.
pub(crate) const CONSENT_SECS: u64 = 3600;
/// Most moves kept per former PN id (the oldest go first).
const MAX_MOVES: usize = 16;
/// Most hops [`resolve`] follows (a PN merged into one that was merged again…).
const MAX_HOPS: usize = 4;

/// What a merge request led to.
pub(crate) enum MergeOutcome {
    /// The consent is stored; the caller's PN.
    Pending(PnRecord),
    /// The PNs are one: the merged PN.
    Merged(PnRecord),
}

/// The PN `entity` is in, starting from the PN id it names: that PN while it is a member, else
/// the PN it moved to by a merge or a split (followed at most [`MAX_HOPS`] times); the named
/// PN's record otherwise (the caller's authorisation then decides), or not found.
pub(crate) fn resolve(
    store: &Store,
    pn_id: &str,
    entity: &PeerId,
) -> Result<PnRecord, RequestError> {
    let named: Option<PnRecord> = store.get(Table::Pns, pn_id)?;
    let mut id = pn_id.to_owned();
    for _ in 0..MAX_HOPS {
        if let Some(pn) = store.get::<PnRecord>(Table::Pns, &id)?
            && pn.members.contains(entity)
        {
            return Ok(pn);
        }
        let moves: PnMoves = store.get(Table::PnMoves, &id)?.unwrap_or_default();
        match moves
            .moves
            .iter()
            .rev()
            .find(|m| m.members.contains(entity))
        {
            Some(m) => id = m.into.clone(),
            None => break,
        }
    }
    named.ok_or_else(|| not_found(format!("no PN {pn_id}")))
}

/// Records that `members` of `from` are members of `into` now.
fn record_move(
    store: &Store,
    from: &str,
    into: &str,
    members: &[PeerId],
    now: UnixTime,
    b: &mut Batch,
) -> Result<(), RequestError> {
    let mut moves: PnMoves = store.get(Table::PnMoves, from)?.unwrap_or_default();
    moves.moves.push(PnMove {
        into: into.to_owned(),
        members: members.to_vec(),
        at: now,
    });
    if moves.moves.len() > MAX_MOVES {
        let extra = moves.moves.len() - MAX_MOVES;
        moves.moves.drain(..extra);
    }
    b.put(Table::PnMoves, from, &moves)?;
    Ok(())
}

/// Most former PN ids one pruning pass looks at (the rest wait for the next pass).
const PRUNE_SCAN: usize = 4096;

/// Deletes, into `b`, the moves recorded before `cutoff` (and a former PN's entry once none of
/// its moves is left). Returns how many moves go.
///
/// A move is needed while a member that moved may still name its former PN: that member's
/// credential at the time of the move lasts at most the credential lifetime the server
/// issues, and any contact it makes before then (a session, a lookup of its PN, a gateway's
/// step 17) leads it to its PN. The caller passes `now - credential_lifetime`.
fn prune_moves(store: &Store, cutoff: UnixTime, b: &mut Batch) -> Result<usize, RequestError> {
    let mut pruned = 0;
    for (key, mut moves) in store.first::<PnMoves>(Table::PnMoves, PRUNE_SCAN)? {
        let before = moves.moves.len();
        moves.moves.retain(|m| m.at >= cutoff);
        if moves.moves.len() == before {
            continue;
        }
        pruned += before - moves.moves.len();
        if moves.moves.is_empty() {
            b.delete(Table::PnMoves, &key);
        } else {
            b.put(Table::PnMoves, &key, &moves)?;
        }
    }
    Ok(pruned)
}

/// The members of `pn` that are its admins by [`is_admin`]'s rule (listed, or devices of the
/// owner user).
fn admins_of(store: &Store, pn: &PnRecord) -> Result<Vec<PeerId>, RequestError> {
    let mut out = Vec::new();
    for m in &pn.members {
        if pn.admins.contains(m) || user_of(store, m)?.as_deref() == Some(pn.owner.as_str()) {
            out.push(*m);
        }
    }
    Ok(out)
}

/// Moves `gone`'s members, admins and Adminee settings into `stays` (one rotation), and
/// releases `gone`; all into `b`.
fn merge_into(
    store: &Store,
    stays: &mut PnRecord,
    gone: &PnRecord,
    cap: usize,
    now: UnixTime,
    b: &mut Batch,
) -> Result<(), RequestError> {
    let joining: Vec<PeerId> = gone
        .members
        .iter()
        .filter(|m| !stays.members.contains(m))
        .copied()
        .collect();
    if stays.members.len() + joining.len() > cap {
        return Err(RequestError::Conflict(format!(
            "the merged PN would have more than {cap} members"
        )));
    }
    for a in admins_of(store, gone)? {
        if !stays.admins.contains(&a) {
            stays.admins.push(a);
        }
    }
    stays.members.extend(joining);
    stays.policy.expelled.retain(|p| !gone.members.contains(p));
    stays.key = stays.key.rotate();
    stays.updated = now;
    let mut admin: PnAdminRecord = store.get(Table::PnAdmin, &stays.pn_id)?.unwrap_or_default();
    let theirs: PnAdminRecord = store.get(Table::PnAdmin, &gone.pn_id)?.unwrap_or_default();
    for a in theirs.adminees {
        if !admin.adminees.iter().any(|x| x.member == a.member) {
            admin.adminees.push(a);
        }
    }
    b.put(Table::Pns, &stays.pn_id, &*stays)?;
    b.put(Table::PnAdmin, &stays.pn_id, &admin)?;
    b.delete(Table::Pns, &gone.pn_id);
    b.delete(Table::PnAdmin, &gone.pn_id);
    b.delete(Table::PnMerges, &gone.pn_id);
    b.delete(Table::PnMerges, &stays.pn_id);
    record_move(store, &gone.pn_id, &stays.pn_id, &gone.members, now, b)
}

impl Core {
    /// An admin of `pn_id` consents to merging it with `with`; the second PN's consent
    /// merges them (see the module's doc).
    pub(crate) async fn pn_merge(
        &self,
        by: &Session,
        pn_id: &str,
        with: &str,
        now: UnixTime,
    ) -> Result<MergeOutcome, RequestError> {
        if pn_id == with {
            return Err(RequestError::BadRequest(
                "a PN cannot be merged with itself".into(),
            ));
        }
        let cap = self.config.max_group_members;
        let (merged, pn, gone) = self
            .commit(|store| {
                let mine = get_pn(store, pn_id)?;
                if !is_admin(&mine, by) {
                    return Err(forbidden(format!(
                        "only an admin of {pn_id} may consent to its merge"
                    )));
                }
                let other = get_pn(store, with)?;
                // The other PN's consent counts while its admin still is one.
                let theirs: Option<MergeConsent> = store.get(Table::PnMerges, with)?;
                let other_admins = admins_of(store, &other)?;
                let agreed = theirs.is_some_and(|c| {
                    c.with == pn_id
                        && now.saturating_sub(c.at) <= CONSENT_SECS
                        && other_admins.contains(&c.by)
                });
                let mut b = Batch::default();
                if !agreed {
                    let consent = MergeConsent {
                        with: with.to_owned(),
                        by: by.entity,
                        at: now,
                    };
                    b.put(Table::PnMerges, pn_id, &consent)?;
                    return Ok((b, (false, mine, None)));
                }
                // The first to consent keeps its PN; this one's joins it.
                let mut stays = other;
                merge_into(store, &mut stays, &mine, cap, now, &mut b)?;
                Ok((b, (true, stays, Some(mine))))
            })
            .await?;
        let Some(gone) = gone.filter(|_| merged) else {
            tracing::info!(pn = %pn_id, %with, by = %by.entity, "a merge consent waits for the other PN's admin");
            return Ok(MergeOutcome::Pending(pn));
        };
        tracing::info!(stays = %pn.pn_id, released = %gone.pn_id, "two PNs merged");
        self.metrics.rotation("pn");
        self.metrics.pns.set(self.store.len(Table::Pns) as i64);
        self.push_keys(&pn.key, &pn.members);
        self.push_pn_changed(&pn.pn_id);
        self.follow(Followup::PnMoved {
            from: gone.pn_id.clone(),
            into: pn.pn_id.clone(),
            members: gone.members.clone(),
        });
        Ok(MergeOutcome::Merged(pn))
    }

    /// Prunes `pn_moves.v1` (see [`prune_moves`]), durably; run by the server's periodic
    /// clean-up. Returns how many moves went.
    pub(crate) async fn prune_pn_moves(&self, now: UnixTime) -> Result<usize, RequestError> {
        let cutoff = now.saturating_sub(self.config.credential_lifetime.as_secs());
        let pruned = self
            .commit(|store| {
                let mut b = Batch::default();
                let n = prune_moves(store, cutoff, &mut b)?;
                Ok::<_, RequestError>((b, n))
            })
            .await?;
        if pruned > 0 {
            tracing::info!(pruned, "old PN moves pruned");
        }
        Ok(pruned)
    }

    /// Where a member of `pn_id` that moved (by a merge or a split) is a member now.
    pub(crate) async fn pn_move_lookup(
        &self,
        by: &Session,
        pn_id: &str,
    ) -> Result<(String, PnRecord), RequestError> {
        self.read(|store| {
            let pn = resolve(store, pn_id, &by.entity)?;
            if pn.pn_id == pn_id || !pn.members.contains(&by.entity) {
                return Err(not_found(format!(
                    "{} did not move from {pn_id}",
                    by.entity
                )));
            }
            Ok((pn_id.to_owned(), pn))
        })
        .await
    }

    /// An admin splits `members` off `pn_id` into a new PN with `gateway` as its gateway.
    /// Returns the PN that stays and the new one.
    pub(crate) async fn pn_split(
        &self,
        by: &Session,
        pn_id: &str,
        members: &[PeerId],
        gateway: PeerId,
        now: UnixTime,
    ) -> Result<(PnRecordInfo, PnRecordInfo), RequestError> {
        let cap = self.config.max_group_members;
        let mut leaving: Vec<PeerId> = Vec::new();
        for m in members {
            if !leaving.contains(m) {
                leaving.push(*m);
            }
        }
        if leaving.is_empty() || leaving.len() > cap {
            return Err(RequestError::BadRequest(format!(
                "name between 1 and {cap} members to split off"
            )));
        }
        if !leaving.contains(&gateway) {
            return Err(RequestError::BadRequest(
                "the new PN's gateway must be one of the members split off".into(),
            ));
        }
        let (stays, new) = self
            .commit(|store| {
                let mut pn = get_pn(store, pn_id)?;
                if !is_admin(&pn, by) {
                    return Err(forbidden(format!("only an admin of {pn_id} may split it")));
                }
                if let Some(m) = leaving.iter().find(|m| !pn.members.contains(m)) {
                    return Err(not_found(format!("{m} is not a member of {pn_id}")));
                }
                if leaving.contains(&pn.gateway) {
                    return Err(RequestError::Conflict(
                        "the PN's gateway stays in it: hand its role over first (`cpns pn handoff`)"
                            .into(),
                    ));
                }
                let gw: EntityRecord = store
                    .get(Table::Entities, gateway.to_bytes())?
                    .ok_or_else(|| not_found(format!("{gateway} is not enrolled")))?;
                if gw.revoked.is_some() || !gw.modes.contains(Mode::Gateway) {
                    return Err(RequestError::Conflict(format!(
                        "{gateway} may not be a gateway (its credential)"
                    )));
                }
                let old_admins = admins_of(store, &pn)?;
                pn.members.retain(|m| !leaving.contains(m));
                pn.admins.retain(|m| !leaving.contains(m));
                pn.key = pn.key.rotate();
                pn.updated = now;
                let new_id = random_id("pn-");
                let mut admins = vec![gateway];
                admins.extend(
                    leaving
                        .iter()
                        .filter(|m| **m != gateway && old_admins.contains(m)),
                );
                let new = PnRecord {
                    key: GroupKey::generate(GroupId(new_id.clone()), 1),
                    pn_id: new_id,
                    owner: gw.user.clone(),
                    gateway,
                    members: leaving.clone(),
                    admins,
                    policy: cpns_overlay::MembershipPolicy {
                        expelled: pn.policy.expelled.clone(),
                        ..Default::default()
                    },
                    created: now,
                    updated: now,
                };
                let mut admin: PnAdminRecord =
                    store.get(Table::PnAdmin, pn_id)?.unwrap_or_default();
                let (moved, kept): (Vec<_>, Vec<_>) = admin
                    .adminees
                    .into_iter()
                    .partition(|a| leaving.contains(&a.member));
                admin.adminees = kept;
                admin.pending.retain(|p| !leaving.contains(p));
                let mut b = Batch::default();
                b.put(Table::Pns, &pn.pn_id, &pn)?;
                b.put(Table::PnAdmin, &pn.pn_id, &admin)?;
                b.put(Table::Pns, &new.pn_id, &new)?;
                b.put(
                    Table::PnAdmin,
                    &new.pn_id,
                    &PnAdminRecord {
                        pending: Vec::new(),
                        adminees: moved,
                    },
                )?;
                b.delete(Table::PnMerges, pn_id);
                record_move(store, pn_id, &new.pn_id, &leaving, now, &mut b)?;
                Ok((b, (pn, new)))
            })
            .await?;
        tracing::info!(pn = %pn_id, new = %new.pn_id, "a PN was split");
        self.metrics.rotation("pn");
        self.metrics.rotation("pn");
        self.metrics.pns.set(self.store.len(Table::Pns) as i64);
        self.push_keys(&stays.key, &stays.members);
        self.push_keys(&new.key, &new.members);
        self.push_pn_changed(&stays.pn_id);
        // The new PN's gateway first: it is setting the PN up when the others come to join.
        let mut told = new.members.clone();
        told.sort_by_key(|p| *p != new.gateway);
        self.follow(Followup::PnMoved {
            from: stays.pn_id.clone(),
            into: new.pn_id.clone(),
            members: told,
        });
        Ok((stays.info(), new.info()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pn(id: &str, members: &[PeerId]) -> PnRecord {
        PnRecord {
            pn_id: id.into(),
            owner: "alice".into(),
            gateway: members[0],
            members: members.to_vec(),
            admins: vec![members[0]],
            policy: Default::default(),
            created: 1,
            updated: 1,
            key: GroupKey::generate(GroupId(id.into()), 1),
        }
    }

    #[test]
    fn a_moved_member_is_led_to_its_pn_and_nobody_else_is() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let x = pn("pn-x", &[a, b]);
        let mut batch = Batch::default();
        batch.put(Table::Pns, "pn-x", &x).unwrap();
        record_move(&store, "pn-y", "pn-x", &[b], 5, &mut batch).unwrap();
        store.apply(&batch).unwrap();
        assert_eq!(resolve(&store, "pn-x", &a).unwrap().pn_id, "pn-x");
        assert_eq!(resolve(&store, "pn-y", &b).unwrap().pn_id, "pn-x");
        assert!(
            resolve(&store, "pn-y", &c).is_err(),
            "not one of the movers"
        );
        // A loop of moves ends after MAX_HOPS.
        let mut batch = Batch::default();
        record_move(&store, "pn-z", "pn-w", &[c], 5, &mut batch).unwrap();
        record_move(&store, "pn-w", "pn-z", &[c], 5, &mut batch).unwrap();
        store.apply(&batch).unwrap();
        assert!(resolve(&store, "pn-z", &c).is_err());
    }

    /// Moves older than the credential lifetime go, durably (after a reopen too), and a
    /// former PN's entry goes with its last move; newer moves stay and still lead their
    /// members to their PN.
    #[tokio::test]
    async fn moves_older_than_the_credential_lifetime_are_pruned_durably() {
        let dir = tempfile::tempdir().unwrap();
        let lifetime = 30 * 86_400;
        let config = crate::config::Config {
            data_dir: dir.path().to_path_buf(),
            credential_lifetime: std::time::Duration::from_secs(lifetime),
            ..Default::default()
        };
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        let now = 100_000_000;
        {
            let core = Core::open(config.clone(), None).unwrap();
            let mut batch = Batch::default();
            batch
                .put(Table::Pns, "pn-x", &pn("pn-x", &[a, b, c]))
                .unwrap();
            // pn-y: one old move only; pn-z: one old and one recent.
            record_move(
                &core.store,
                "pn-y",
                "pn-x",
                &[a],
                now - lifetime - 1,
                &mut batch,
            )
            .unwrap();
            core.store.apply(&batch).unwrap();
            let mut batch = Batch::default();
            record_move(
                &core.store,
                "pn-z",
                "pn-x",
                &[b],
                now - lifetime - 5,
                &mut batch,
            )
            .unwrap();
            core.store.apply(&batch).unwrap();
            let mut batch = Batch::default();
            record_move(&core.store, "pn-z", "pn-x", &[c], now - 10, &mut batch).unwrap();
            core.store.apply(&batch).unwrap();
            assert_eq!(core.prune_pn_moves(now).await.unwrap(), 2);
            assert_eq!(
                core.prune_pn_moves(now).await.unwrap(),
                0,
                "nothing left to prune"
            );
        }
        let core = Core::open(config, None).unwrap();
        let store = &core.store;
        assert!(
            store
                .get::<PnMoves>(Table::PnMoves, "pn-y")
                .unwrap()
                .is_none(),
            "a former PN with no move left is gone"
        );
        let z: PnMoves = store.get(Table::PnMoves, "pn-z").unwrap().unwrap();
        assert_eq!(z.moves.len(), 1);
        assert_eq!(z.moves[0].members, vec![c]);
        assert_eq!(resolve(store, "pn-z", &c).unwrap().pn_id, "pn-x");
        assert!(resolve(store, "pn-z", &b).is_err(), "its move was pruned");
    }
}
