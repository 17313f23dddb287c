//! The group keys this node holds (its PN key and Service Group keys, current and previous
//! epoch), kept durably in sled so that a restarted node — or one whose server is unreachable —
//! still opens its PN's content (DESIGN: offline first).

use cpns_directory::MemoryKeyRing;
use cpns_keys::{GroupId, GroupKey, PeerId};
use cpns_overlay::{GroupKeyGrant, transcript};
use tracing::warn;

use crate::enrolment::Enrolment;
use crate::error::OpError;
use crate::store::{Raw, Store, StoreError, names};

/// Durable key ring; implements the directory's [`cpns_directory::KeyRing`].
pub(crate) struct KeyRing {
    tree: Raw,
    cache: MemoryKeyRing,
}

/// Opens a key grant sealed for `me` under its EUKey (only `cpns-auth` can seal one): the
/// key, checked against its label.
pub(crate) fn open_grant(
    enrolment: &Enrolment,
    me: &PeerId,
    grant: &GroupKeyGrant,
) -> Result<GroupKey, OpError> {
    let aad = transcript::group_key_aad(&grant.group, grant.epoch, me);
    let secret = enrolment.eukey.open(&aad, &grant.sealed).map_err(|e| {
        OpError::Refused(format!(
            "cannot open the key grant for {}: {e}",
            grant.group
        ))
    })?;
    let key = GroupKey::decode_secret(&secret)
        .map_err(|e| OpError::Refused(format!("bad key grant: {e}")))?;
    if key.group() != &grant.group || key.epoch() != grant.epoch {
        return Err(OpError::Refused(
            "key grant does not match its label".into(),
        ));
    }
    Ok(key)
}

impl KeyRing {
    /// Opens the ring and loads every stored key.
    pub(crate) fn open(store: &Store) -> Result<Self, StoreError> {
        let tree = store.raw(names::KEYS)?;
        let cache = MemoryKeyRing::new();
        for (_, value) in tree.all()? {
            match GroupKey::decode_secret(&value) {
                Ok(key) => cache.insert(key),
                Err(e) => warn!("skipping an unreadable stored key: {e}"),
            }
        }
        Ok(Self { tree, cache })
    }

    fn db_key(group: &GroupId, epoch: u64) -> Vec<u8> {
        let mut k = group.0.as_bytes().to_vec();
        k.push(0);
        k.extend_from_slice(&epoch.to_be_bytes());
        k
    }

    /// Stores a key durably (flushed before returning) and makes it usable. Only the two
    /// newest epochs of a group are kept, on disk as in memory.
    pub(crate) async fn insert(&self, key: GroupKey) -> Result<(), StoreError> {
        let new = Self::db_key(key.group(), key.epoch());
        let prefix = {
            let mut p = key.group().0.as_bytes().to_vec();
            p.push(0);
            p
        };
        let mut epochs = self.tree.keys_with_prefix(&prefix)?;
        if !epochs.contains(&new) {
            epochs.push(new.clone());
            epochs.sort();
        }
        let excess = epochs.len().saturating_sub(MemoryKeyRing::KEPT_EPOCHS);
        let removals: Vec<Vec<u8>> = epochs.into_iter().take(excess).collect();
        let inserts = if removals.contains(&new) {
            Vec::new()
        } else {
            vec![(new, key.encode_secret().to_vec())]
        };
        self.tree.apply(inserts, removals).await?;
        self.cache.insert(key);
        Ok(())
    }

    /// Forgets a group's keys (left, expelled, deleted).
    pub(crate) async fn remove(&self, group: &GroupId) -> Result<(), StoreError> {
        let mut prefix = group.0.as_bytes().to_vec();
        prefix.push(0);
        let keys = self.tree.keys_with_prefix(&prefix)?;
        self.tree.apply(Vec::new(), keys).await?;
        self.cache.remove(group);
        Ok(())
    }
}

impl cpns_directory::KeyRing for KeyRing {
    // Delegates to the in-memory cache, which the durable tree mirrors.
    fn current(&self, group: &GroupId) -> Option<GroupKey> {
        cpns_directory::KeyRing::current(&self.cache, group)
    }
    fn by_epoch(&self, group: &GroupId, epoch: u64) -> Option<GroupKey> {
        cpns_directory::KeyRing::by_epoch(&self.cache, group, epoch)
    }
    fn groups(&self) -> Vec<GroupId> {
        cpns_directory::KeyRing::groups(&self.cache)
    }
}
