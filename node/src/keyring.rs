//! The group keys this node holds (its PN key and Service Group keys, current and previous
//! epoch), kept durably in sled so that a restarted node — or one whose server is unreachable —
//! still opens its PN's content (DESIGN: offline first).

use cpns_directory::MemoryKeyRing;
use cpns_keys::{GroupId, GroupKey};
use tracing::warn;

/// Sled tree of the keys.
const TREE: &str = "keys.v1";

/// Durable key ring; implements the directory's [`cpns_directory::KeyRing`].
pub(crate) struct KeyRing {
    tree: sled::Tree,
    cache: MemoryKeyRing,
}

impl KeyRing {
    /// Opens the ring and loads every stored key.
    pub(crate) fn open(db: &sled::Db) -> Result<Self, sled::Error> {
        let tree = db.open_tree(TREE)?;
        let cache = MemoryKeyRing::new();
        for item in tree.iter() {
            let (_, value) = item?;
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

    /// Stores a key durably (flushed before returning) and makes it usable.
    pub(crate) async fn insert(&self, key: GroupKey) -> Result<(), sled::Error> {
        self.tree
            .insert(Self::db_key(key.group(), key.epoch()), key.encode_secret())?;
        // Keep the two newest epochs on disk too, like the cache.
        let prefix = {
            let mut p = key.group().0.as_bytes().to_vec();
            p.push(0);
            p
        };
        let epochs: Vec<_> = self
            .tree
            .scan_prefix(&prefix)
            .keys()
            .collect::<Result<_, _>>()?;
        let excess = epochs.len().saturating_sub(MemoryKeyRing::KEPT_EPOCHS);
        for k in epochs.into_iter().take(excess) {
            self.tree.remove(k)?;
        }
        self.tree.flush_async().await?;
        self.cache.insert(key);
        Ok(())
    }

    /// Forgets a group's keys (left, expelled, deleted).
    pub(crate) async fn remove(&self, group: &GroupId) -> Result<(), sled::Error> {
        let mut prefix = group.0.as_bytes().to_vec();
        prefix.push(0);
        for k in self.tree.scan_prefix(&prefix).keys() {
            self.tree.remove(k?)?;
        }
        self.tree.flush_async().await?;
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
