//! The group keys the directory may use: the node implements [`KeyRing`] from the PN and
//! Service Group keys it holds; [`MemoryKeyRing`] is a ready-made one (tests, tools).

use std::collections::BTreeMap;
use std::sync::RwLock;

use cpns_keys::{GroupId, GroupKey};

/// Where the directory gets group keys from. Called on every publish and discovery; keep it
/// cheap (no I/O).
pub trait KeyRing: Send + Sync + 'static {
    /// The current key of a group, if this node is a member.
    fn current(&self, group: &GroupId) -> Option<GroupKey>;
    /// A group's key of a given epoch, if still held (the previous epoch is used to find
    /// records not yet republished after a rotation).
    fn by_epoch(&self, group: &GroupId, epoch: u64) -> Option<GroupKey>;
    /// The groups whose current key this node holds.
    fn groups(&self) -> Vec<GroupId>;
}

/// A [`KeyRing`] in memory. Keeps, per group, the keys inserted (newest epoch is current), at
/// most [`MemoryKeyRing::KEPT_EPOCHS`] of them.
#[derive(Debug, Default)]
pub struct MemoryKeyRing {
    keys: RwLock<BTreeMap<GroupId, Vec<GroupKey>>>,
}

impl MemoryKeyRing {
    /// Epochs kept per group: the current one and the one before.
    pub const KEPT_EPOCHS: usize = 2;

    /// An empty key ring.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a key (a new group, or a new epoch of a known one).
    pub fn insert(&self, key: GroupKey) {
        if let Ok(mut m) = self.keys.write() {
            let list = m.entry(key.group().clone()).or_default();
            list.retain(|k| k.epoch() != key.epoch());
            list.push(key);
            list.sort_by_key(|k| k.epoch());
            let excess = list.len().saturating_sub(Self::KEPT_EPOCHS);
            list.drain(..excess);
        }
    }

    /// Forgets every key of a group (left or deleted).
    pub fn remove(&self, group: &GroupId) {
        if let Ok(mut m) = self.keys.write() {
            m.remove(group);
        }
    }
}

impl KeyRing for MemoryKeyRing {
    fn current(&self, group: &GroupId) -> Option<GroupKey> {
        self.keys.read().ok()?.get(group)?.last().cloned()
    }

    fn by_epoch(&self, group: &GroupId, epoch: u64) -> Option<GroupKey> {
        self.keys
            .read()
            .ok()?
            .get(group)?
            .iter()
            .find(|k| k.epoch() == epoch)
            .cloned()
    }

    fn groups(&self) -> Vec<GroupId> {
        self.keys
            .read()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn keeps_current_and_previous() {
        let ring = MemoryKeyRing::new();
        let g = GroupId("pn:1".into());
        let k0 = GroupKey::generate(g.clone(), 0);
        let k1 = k0.rotate();
        let k2 = k1.rotate();
        ring.insert(k0);
        ring.insert(k2.clone());
        ring.insert(k1);
        assert_eq!(ring.current(&g).unwrap().epoch(), 2);
        assert_eq!(ring.by_epoch(&g, 1).unwrap().epoch(), 1);
        assert!(ring.by_epoch(&g, 0).is_none());
        assert_eq!(ring.groups(), vec![g.clone()]);
        ring.remove(&g);
        assert!(ring.current(&g).is_none());
    }
}
