//! The node's one database: sled, opened once, with typed trees under versioned names. No other
//! module of the node opens a tree; each gets the typed tree it owns from here.
//!
//! Every value is encoded by the overlay's codec (bincode 2, size-limited on the way back), and
//! every write that answers a request is flushed before the answer leaves the node
//! ([`Typed::put`] and friends flush; [`Store::commit_pn`] writes the PN membership and the PN
//! Inventory in one transaction and then flushes).
//!
//! | tree | key | value | owner |
//! | --- | --- | --- | --- |
//! | `pn.v1` | `membership`, `expelled`, `admin`, `last_move` | [`Membership`], recently expelled PeerIds | the PN actor |
//! | `inventory.v2` | PeerId bytes | [`crate::pn::Member`] (the PN Inventory) | the PN actor |
//! | `invitations.v1` | invitation id | [`crate::pn::Invitation`] | the PN actor |
//! | `keys.v1` | group id, 0, epoch | a group key's secret | [`crate::keyring`] |
//! | `content.v1` | service id | where a service's content comes from (first format, read only) | [`crate::delivery`] |
//! | `content.v2` | service id | a service's content: a file or an external URL, and its variants | [`crate::delivery`] |
//! | `push.queue.v1` | time, push id, PeerId | a push waiting for an offline receiver | [`crate::delivery`] |
//! | `usage.outbox.v1` | sequence | a signed usage report waiting to be sent | [`crate::usage`] |
//! | `usage.v1` | `sequence`, `never_report` | the report counter, preferences | [`crate::usage`] |
//!
//! The directory crate keeps its own services in `directory.services.v1` through its own store
//! module ([`Store::directory_db`]).

use std::marker::PhantomData;
use std::path::Path;

use cpns_overlay::codec;
use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;

/// Why the database failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// sled failed (I/O, corruption).
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    /// A value could not be encoded.
    #[error("database: cannot encode a value of {tree}: {reason}")]
    Encode {
        /// The tree.
        tree: &'static str,
        /// Why.
        reason: String,
    },
    /// A transaction failed.
    #[error("database: transaction on {tree}: {reason}")]
    Transaction {
        /// The trees.
        tree: &'static str,
        /// Why.
        reason: String,
    },
}

/// Tree names, with their format version.
pub(crate) mod names {
    /// The node's PN membership.
    pub(crate) const PN: &str = "pn.v1";
    /// The PN Inventory (the member table).
    pub(crate) const INVENTORY: &str = "inventory.v2";
    /// Pending invitations (consent to join another user's PN).
    pub(crate) const INVITATIONS: &str = "invitations.v1";
    /// Group keys.
    pub(crate) const KEYS: &str = "keys.v1";
    /// Content sources of this node's services, first format (files only; read, not written).
    pub(crate) const CONTENT: &str = "content.v1";
    /// Content sources of this node's services: a file or an external URL, and variants.
    pub(crate) const CONTENT_V2: &str = "content.v2";
    /// Pushes waiting for receivers that are offline.
    pub(crate) const PUSH_QUEUE: &str = "push.queue.v1";
    /// Usage reports waiting to be sent.
    pub(crate) const USAGE_OUTBOX: &str = "usage.outbox.v1";
    /// Usage counter and preferences.
    pub(crate) const USAGE_META: &str = "usage.v1";
    /// The zone settings set through the API (Appendix F).
    pub(crate) const ZONE_SETTINGS: &str = "zone.settings.v1";
    /// Zones this PNE was found in, and what their gateways pushed.
    pub(crate) const ZONE_RECEIVED: &str = "zone.received.v1";
}

/// Largest value any tree gives back (larger ones are treated as unreadable).
const MAX_VALUE: usize = 1024 * 1024;

/// A tree whose values are all of type `V`.
pub(crate) struct Typed<V> {
    name: &'static str,
    tree: sled::Tree,
    _v: PhantomData<fn() -> V>,
}

impl<V> Clone for Typed<V> {
    fn clone(&self) -> Self {
        Self {
            name: self.name,
            tree: self.tree.clone(),
            _v: PhantomData,
        }
    }
}

impl<V: Serialize + DeserializeOwned> Typed<V> {
    fn encode(&self, v: &V) -> Result<Vec<u8>, StoreError> {
        codec::encode(v).map_err(|e| StoreError::Encode {
            tree: self.name,
            reason: e.to_string(),
        })
    }

    fn decode(&self, key: &[u8], bytes: &[u8]) -> Option<V> {
        match codec::decode(bytes, MAX_VALUE) {
            Ok(v) => Some(v),
            Err(e) => {
                tracing::warn!(tree = self.name, key = %hex::encode(key), "unreadable value skipped: {e}");
                None
            }
        }
    }

    /// The value under `key`, if any (an unreadable value counts as none, and is logged).
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<V>, StoreError> {
        Ok(self.tree.get(key)?.and_then(|b| self.decode(key, &b)))
    }

    /// Every readable (key, value), in key order.
    pub(crate) fn all(&self) -> Result<Vec<(Vec<u8>, V)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            if let Some(v) = self.decode(&k, &v) {
                out.push((k.to_vec(), v));
            }
        }
        Ok(out)
    }

    /// Writes `value` under `key` and flushes.
    pub(crate) async fn put(&self, key: &[u8], value: &V) -> Result<(), StoreError> {
        let bytes = self.encode(value)?;
        self.tree.insert(key, bytes)?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// Removes `key` and flushes.
    pub(crate) async fn remove(&self, key: &[u8]) -> Result<(), StoreError> {
        self.tree.remove(key)?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// Removes the smallest key (the oldest, for sequence-keyed trees), without flushing.
    pub(crate) fn pop_first(&self) -> Result<bool, StoreError> {
        Ok(self.tree.pop_min()?.is_some())
    }

    /// How many entries the tree holds.
    pub(crate) fn len(&self) -> usize {
        self.tree.len()
    }
}

/// A key and its value, as stored.
pub(crate) type Pair = (Vec<u8>, Vec<u8>);

/// A tree of raw bytes (the key ring keeps secrets in their own encoding).
#[derive(Clone)]
pub(crate) struct Raw {
    tree: sled::Tree,
}

impl Raw {
    /// Every (key, value).
    pub(crate) fn all(&self) -> Result<Vec<Pair>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree.iter() {
            let (k, v) = item?;
            out.push((k.to_vec(), v.to_vec()));
        }
        Ok(out)
    }

    /// The bytes under `key`.
    pub(crate) fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree.get(key)?.map(|v| v.to_vec()))
    }

    /// Writes `value` under `key` and flushes.
    pub(crate) async fn put(&self, key: &[u8], value: Vec<u8>) -> Result<(), StoreError> {
        self.tree.insert(key, value)?;
        self.tree.flush_async().await?;
        Ok(())
    }

    /// The keys that start with `prefix`, in order.
    pub(crate) fn keys_with_prefix(&self, prefix: &[u8]) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        for k in self.tree.scan_prefix(prefix).keys() {
            out.push(k?.to_vec());
        }
        Ok(out)
    }

    /// Applies inserts and removals in one batch, then flushes.
    pub(crate) async fn apply(
        &self,
        inserts: Vec<Pair>,
        removals: Vec<Vec<u8>>,
    ) -> Result<(), StoreError> {
        let mut batch = sled::Batch::default();
        for (k, v) in inserts {
            batch.insert(k, v);
        }
        for k in removals {
            batch.remove(k);
        }
        self.tree.apply_batch(batch)?;
        self.tree.flush_async().await?;
        Ok(())
    }
}

/// One write of the PN actor: the membership record, the expelled list, or a member of the PN
/// Inventory (`None` removes).
#[derive(Clone, Debug)]
pub(crate) enum PnWrite {
    /// The membership (`None`: the node left its PN).
    Membership(Option<Vec<u8>>),
    /// The recently expelled entities.
    Expelled(Vec<u8>),
    /// One member (`None`: removed).
    Member(Vec<u8>, Option<Vec<u8>>),
    /// The whole inventory goes (the PN was left or released).
    ClearInventory,
    /// One invitation (`None`: answered or expired).
    Invitation(Vec<u8>, Option<Vec<u8>>),
    /// The PN's admin information (5.6.9; `None`: the node left its PN).
    Admin(Option<Vec<u8>>),
    /// This node's last move to another PN (5.6.9 merge or split: from, to), kept so that
    /// its services follow it even when it restarts before they were re-scoped.
    LastMove(Vec<u8>),
}

/// Key of the membership record in [`names::PN`].
const MEMBERSHIP_KEY: &[u8] = b"membership";
/// Key of the expelled list in [`names::PN`].
const EXPELLED_KEY: &[u8] = b"expelled";
/// Key of the PN's admin information in [`names::PN`].
const ADMIN_KEY: &[u8] = b"admin";
/// Key of the node's last move in [`names::PN`].
const LAST_MOVE_KEY: &[u8] = b"last_move";

/// The node's database.
#[derive(Clone)]
pub(crate) struct Store {
    db: sled::Db,
    pn: sled::Tree,
    inventory: sled::Tree,
    invitations: sled::Tree,
}

/// How long [`Store::open`] waits for the database's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(3);

impl Store {
    /// Opens (or creates) the database under `dir`. A node's database is small (its PN, keys,
    /// services, outbox): a small cache keeps an idle node's memory low; sled's default would
    /// let it grow to 1 GiB.
    ///
    /// sled's file lock outlives a closed database by a moment (its background threads let go
    /// of the file last), so a node started right after another stopped on the same data dir
    /// (a restart) waits for the lock up to [`LOCK_WAIT`]; a second node still running on it
    /// is refused after that.
    pub(crate) fn open(dir: &Path) -> Result<Store, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        loop {
            let opened = sled::Config::new()
                .path(dir)
                .cache_capacity(4 * 1024 * 1024)
                .mode(sled::Mode::LowSpace)
                .open();
            match opened {
                Err(sled::Error::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                other => return Self::from_db(other?),
            }
        }
    }

    fn from_db(db: sled::Db) -> Result<Store, StoreError> {
        Ok(Store {
            pn: db.open_tree(names::PN)?,
            inventory: db.open_tree(names::INVENTORY)?,
            invitations: db.open_tree(names::INVITATIONS)?,
            db,
        })
    }

    /// A throw-away database (tests).
    #[cfg(test)]
    pub(crate) fn temporary() -> Result<Store, StoreError> {
        Self::from_db(sled::Config::new().temporary(true).open()?)
    }

    /// A typed tree by name.
    pub(crate) fn typed<V>(&self, name: &'static str) -> Result<Typed<V>, StoreError> {
        Ok(Typed {
            name,
            tree: self.db.open_tree(name)?,
            _v: PhantomData,
        })
    }

    /// A raw tree by name.
    pub(crate) fn raw(&self, name: &'static str) -> Result<Raw, StoreError> {
        Ok(Raw {
            tree: self.db.open_tree(name)?,
        })
    }

    /// The database for the directory crate, whose own store module keeps its tree.
    pub(crate) fn directory_db(&self) -> &sled::Db {
        &self.db
    }

    /// What the PN actor stored: the membership record, the expelled list, the inventory's
    /// members and the invitations, as bytes for it to decode.
    pub(crate) fn load_pn(&self) -> Result<PnStored, StoreError> {
        let mut members = Vec::new();
        for item in self.inventory.iter() {
            let (k, v) = item?;
            members.push((k.to_vec(), v.to_vec()));
        }
        let mut invitations = Vec::new();
        for item in self.invitations.iter() {
            let (k, v) = item?;
            invitations.push((k.to_vec(), v.to_vec()));
        }
        Ok(PnStored {
            membership: self.pn.get(MEMBERSHIP_KEY)?.map(|v| v.to_vec()),
            expelled: self.pn.get(EXPELLED_KEY)?.map(|v| v.to_vec()),
            admin: self.pn.get(ADMIN_KEY)?.map(|v| v.to_vec()),
            last_move: self.pn.get(LAST_MOVE_KEY)?.map(|v| v.to_vec()),
            members,
            invitations,
        })
    }

    /// Applies the PN actor's writes in one transaction over its trees, then flushes: what a
    /// transition changed is on disk, whole, before any answer about it leaves the node.
    pub(crate) async fn commit_pn(&self, writes: &[PnWrite]) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        let clear = writes.iter().any(|w| matches!(w, PnWrite::ClearInventory));
        if clear {
            // sled transactions cannot clear a tree; the clear comes first, then the rest.
            self.inventory.clear()?;
        }
        (&self.pn, &self.inventory, &self.invitations)
            .transaction(|(pn, inventory, invitations)| {
                for w in writes {
                    match w {
                        PnWrite::Membership(Some(v)) => {
                            pn.insert(MEMBERSHIP_KEY, v.as_slice())?;
                        }
                        PnWrite::Membership(None) => {
                            pn.remove(MEMBERSHIP_KEY)?;
                        }
                        PnWrite::Expelled(v) => {
                            pn.insert(EXPELLED_KEY, v.as_slice())?;
                        }
                        PnWrite::Member(k, Some(v)) => {
                            inventory.insert(k.as_slice(), v.as_slice())?;
                        }
                        PnWrite::Member(k, None) => {
                            inventory.remove(k.as_slice())?;
                        }
                        PnWrite::ClearInventory => {}
                        PnWrite::Invitation(k, Some(v)) => {
                            invitations.insert(k.as_slice(), v.as_slice())?;
                        }
                        PnWrite::Invitation(k, None) => {
                            invitations.remove(k.as_slice())?;
                        }
                        PnWrite::Admin(Some(v)) => {
                            pn.insert(ADMIN_KEY, v.as_slice())?;
                        }
                        PnWrite::Admin(None) => {
                            pn.remove(ADMIN_KEY)?;
                        }
                        PnWrite::LastMove(v) => {
                            pn.insert(LAST_MOVE_KEY, v.as_slice())?;
                        }
                    }
                }
                Ok(())
            })
            .map_err(
                |e: sled::transaction::TransactionError<()>| StoreError::Transaction {
                    tree: "pn.v1+inventory.v2+invitations.v1",
                    reason: format!("{e:?}"),
                },
            )?;
        self.db.flush_async().await?;
        Ok(())
    }

    /// Flushes everything (at shutdown).
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }
}

/// The PN actor's stored bytes (see [`Store::load_pn`]).
pub(crate) struct PnStored {
    pub(crate) membership: Option<Vec<u8>>,
    pub(crate) expelled: Option<Vec<u8>>,
    pub(crate) admin: Option<Vec<u8>>,
    pub(crate) last_move: Option<Vec<u8>>,
    pub(crate) members: Vec<Pair>,
    pub(crate) invitations: Vec<Pair>,
}

/// Decodes a stored value of the PN actor (size-limited, like everything read back).
pub(crate) fn decode<V: DeserializeOwned>(bytes: &[u8]) -> Option<V> {
    codec::decode(bytes, MAX_VALUE).ok()
}

/// Encodes a value for the PN actor's writes.
pub(crate) fn encode<V: Serialize>(v: &V) -> Result<Vec<u8>, StoreError> {
    codec::encode(v).map_err(|e| StoreError::Encode {
        tree: "pn",
        reason: e.to_string(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_pn_commit_is_all_or_nothing_and_reads_back() {
        let store = Store::temporary().unwrap();
        store
            .commit_pn(&[
                PnWrite::Membership(Some(b"m".to_vec())),
                PnWrite::Member(b"a".to_vec(), Some(b"1".to_vec())),
                PnWrite::Member(b"b".to_vec(), Some(b"2".to_vec())),
            ])
            .await
            .unwrap();
        store
            .commit_pn(&[
                PnWrite::Member(b"a".to_vec(), None),
                PnWrite::Invitation(b"i".to_vec(), Some(b"x".to_vec())),
            ])
            .await
            .unwrap();
        let s = store.load_pn().unwrap();
        assert_eq!(s.membership.as_deref(), Some(&b"m"[..]));
        assert_eq!(s.members, vec![(b"b".to_vec(), b"2".to_vec())]);
        assert_eq!(s.invitations.len(), 1);
        store
            .commit_pn(&[PnWrite::ClearInventory, PnWrite::Membership(None)])
            .await
            .unwrap();
        let s = store.load_pn().unwrap();
        assert!(s.membership.is_none() && s.members.is_empty());
    }

    #[tokio::test]
    async fn typed_trees_round_trip_and_skip_garbage() {
        let store = Store::temporary().unwrap();
        let t: Typed<Vec<String>> = store.typed(names::USAGE_META).unwrap();
        t.put(b"k", &vec!["x".to_string()]).await.unwrap();
        assert_eq!(t.get(b"k").unwrap(), Some(vec!["x".to_string()]));
        t.tree.insert(b"bad", vec![0xff; 3]).unwrap();
        assert_eq!(t.get(b"bad").unwrap(), None);
        assert_eq!(t.all().unwrap().len(), 1);
    }
}
