//! Durable state in sled: one tree per kind of record, with a version in its name
//! (`users.v1`), values encoded by [`cpns_overlay::codec`].
//!
//! Writers collect their changes in a [`Batch`], which [`Store::apply`] commits in one sled
//! transaction across all trees (so an enrolment that consumes a code and creates an entity is
//! all-or-nothing), and then call [`Store::flush`] before answering anyone: a state change is
//! on disk before it is acknowledged. sled's file lock makes the database usable by one process
//! at a time, which is why the admin CLI talks to a running server through its admin endpoint.

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError};

/// Largest stored value decoded, in bytes: far above any record we write, but a bound all the
/// same, so a corrupted length prefix cannot make the decoder allocate without limit.
const MAX_VALUE: usize = 8 * 1024 * 1024;

/// The trees. The discriminant is the index into [`Store::trees`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Table {
    /// Counters, the revocation list, last known listen addresses.
    Meta = 0,
    /// User name → [`crate::records::UserRecord`].
    Users,
    /// Code id → [`crate::records::CodeRecord`].
    Codes,
    /// PeerId bytes → [`crate::records::EntityRecord`].
    Entities,
    /// Serial (u64 BE) → PeerId bytes, to revoke or show by serial.
    Serials,
    /// PN id → [`crate::records::PnRecord`].
    Pns,
    /// Service Group id → [`crate::records::GroupRecord`].
    Groups,
    /// Record id (u64 BE) → [`crate::records::ChargingRecord`].
    Usage,
    /// PeerId bytes ‖ sequence (u64 BE) → `()`: usage reports already stored (only those in
    /// the replay window, see `usage`).
    UsageSeen,
    /// PeerId bytes → [`crate::usage::UsageState`]: highest sequence and today's count.
    UsageEntities,
    /// PeerId bytes ‖ nonce → expiry (u64): membership-request nonces, durable so that a join
    /// cannot be replayed after a restart.
    Nonces,
    /// PN id → [`crate::records::PnAdminRecord`]: pending admin requests and Adminee
    /// settings (5.6.9), beside the PN's record so that the PN record's format stays.
    PnAdmin,
    /// PN id ‖ 0 ‖ PeerId bytes → [`crate::zone::ZoneRecord`]: PNEs a zone PN's gateway
    /// found in its zone (Appendix F).
    ZoneMembers,
    /// PN id → [`crate::records::MergeConsent`]: an admin's consent to merge that PN with
    /// another, waiting for an admin of the other (5.6.9).
    PnMerges,
    /// Former PN id → [`crate::records::PnMoves`]: where the members of a merged PN, or those
    /// split off a PN, went, so that each finds its PN on its next contact (5.6.9).
    PnMoves,
}

impl Table {
    const ALL: [Table; 15] = [
        Table::Meta,
        Table::Users,
        Table::Codes,
        Table::Entities,
        Table::Serials,
        Table::Pns,
        Table::Groups,
        Table::Usage,
        Table::UsageSeen,
        Table::UsageEntities,
        Table::Nonces,
        Table::PnAdmin,
        Table::ZoneMembers,
        Table::PnMerges,
        Table::PnMoves,
    ];

    fn tree_name(self) -> &'static str {
        match self {
            Table::Meta => "meta.v1",
            Table::Users => "users.v1",
            Table::Codes => "codes.v1",
            Table::Entities => "entities.v1",
            Table::Serials => "serials.v1",
            Table::Pns => "pns.v1",
            Table::Groups => "groups.v1",
            Table::Usage => "usage.v1",
            Table::UsageSeen => "usage_seen.v1",
            Table::UsageEntities => "usage_entities.v1",
            Table::Nonces => "membership_nonces.v1",
            Table::PnAdmin => "pn_admin.v1",
            Table::ZoneMembers => "zone_members.v1",
            Table::PnMerges => "pn_merges.v1",
            Table::PnMoves => "pn_moves.v1",
        }
    }
}

/// Meta keys.
pub(crate) mod meta {
    /// The next credential serial (u64).
    pub(crate) const NEXT_SERIAL: &[u8] = b"next_serial";
    /// The current signed revocation list.
    pub(crate) const REVOCATIONS: &[u8] = b"revocations";
    /// The addresses the server listened on when it last started (for offline code creation).
    pub(crate) const LISTEN_ADDRS: &[u8] = b"listen_addrs";
    /// The next usage record id (u64).
    pub(crate) const NEXT_USAGE_ID: &[u8] = b"next_usage_id";
}

/// Failures of the database.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (normally the running server) holds the database's lock.
    #[error("the database at {path} is in use by another process (is `cpns-auth serve` running?)")]
    Locked {
        /// The database directory.
        path: String,
    },
    /// sled failed (I/O, corruption).
    #[error("database: {0}")]
    Sled(#[from] sled::Error),
    /// A stored value did not decode (corruption or a newer format).
    #[error("database value in {table} is unreadable: {reason}")]
    Corrupt {
        /// The tree.
        table: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// A value could not be encoded.
    #[error("encoding a value failed: {0}")]
    Encode(String),
}

/// A set of changes committed atomically by [`Store::apply`].
#[derive(Default, Debug)]
pub(crate) struct Batch {
    ops: Vec<(Table, Vec<u8>, Option<Vec<u8>>)>,
}

impl Batch {
    /// Sets `key` to `value`.
    pub(crate) fn put<T: Serialize>(
        &mut self,
        table: Table,
        key: impl AsRef<[u8]>,
        value: &T,
    ) -> Result<(), StoreError> {
        let bytes =
            cpns_overlay::codec::encode(value).map_err(|e| StoreError::Encode(e.to_string()))?;
        self.ops.push((table, key.as_ref().to_vec(), Some(bytes)));
        Ok(())
    }

    /// Removes `key`.
    pub(crate) fn delete(&mut self, table: Table, key: impl AsRef<[u8]>) {
        self.ops.push((table, key.as_ref().to_vec(), None));
    }

    /// Whether nothing is to be written.
    pub(crate) fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }
}

/// The database: sled plus its trees.
pub(crate) struct Store {
    db: sled::Db,
    trees: Vec<sled::Tree>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

/// How long [`Store::open`] waits for the database's lock.
const LOCK_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

impl Store {
    /// Opens (or creates) the database in `dir`. [`StoreError::Locked`] if another process has
    /// it open.
    ///
    /// sled's file lock outlives a closed database by a moment (its background threads let go
    /// of the file last): a server started right after another stopped on the same data dir
    /// waits for the lock up to [`LOCK_WAIT`] before it says [`StoreError::Locked`].
    pub(crate) fn open(dir: &Path) -> Result<Self, StoreError> {
        let deadline = std::time::Instant::now() + LOCK_WAIT;
        let db = loop {
            let opened = sled::Config::new()
                .path(dir)
                .mode(sled::Mode::HighThroughput)
                .open();
            match opened {
                Ok(db) => break db,
                Err(sled::Error::Io(io)) if io.to_string().contains("could not acquire lock") => {
                    if std::time::Instant::now() >= deadline {
                        return Err(StoreError::Locked {
                            path: dir.display().to_string(),
                        });
                    }
                    std::thread::sleep(std::time::Duration::from_millis(50));
                }
                Err(other) => return Err(StoreError::Sled(other)),
            }
        };
        let mut trees = Vec::with_capacity(Table::ALL.len());
        for t in Table::ALL {
            trees.push(db.open_tree(t.tree_name())?);
        }
        Ok(Self { db, trees })
    }

    fn tree(&self, t: Table) -> &sled::Tree {
        &self.trees[t as usize]
    }

    fn decode<T: DeserializeOwned>(table: Table, bytes: &[u8]) -> Result<T, StoreError> {
        cpns_overlay::codec::decode(bytes, MAX_VALUE).map_err(|e| StoreError::Corrupt {
            table: table.tree_name(),
            reason: e.to_string(),
        })
    }

    /// Reads one value.
    pub(crate) fn get<T: DeserializeOwned>(
        &self,
        table: Table,
        key: impl AsRef<[u8]>,
    ) -> Result<Option<T>, StoreError> {
        match self.tree(table).get(key)? {
            Some(v) => Ok(Some(Self::decode(table, &v)?)),
            None => Ok(None),
        }
    }

    /// Whether `key` exists.
    pub(crate) fn contains(&self, table: Table, key: impl AsRef<[u8]>) -> Result<bool, StoreError> {
        Ok(self.tree(table).contains_key(key)?)
    }

    /// Every value of a tree, in key order.
    pub(crate) fn values<T: DeserializeOwned>(&self, table: Table) -> Result<Vec<T>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(table).iter() {
            let (_, v) = item?;
            out.push(Self::decode(table, &v)?);
        }
        Ok(out)
    }

    /// The number of entries of a tree (a full scan: for metrics and listings).
    /// At most `limit` keys in `[from, to)`, in order.
    pub(crate) fn keys_between(
        &self,
        table: Table,
        from: &[u8],
        to: &[u8],
        limit: usize,
    ) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut out = Vec::new();
        if from >= to {
            return Ok(out);
        }
        for item in self.tree(table).range(from..to).take(limit) {
            let (k, _) = item?;
            out.push(k.to_vec());
        }
        Ok(out)
    }

    /// The first `limit` entries of a table, in key order.
    pub(crate) fn first<T: DeserializeOwned>(
        &self,
        table: Table,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let mut out = Vec::new();
        for item in self.tree(table).iter().take(limit) {
            let (k, v) = item?;
            out.push((k.to_vec(), Self::decode(table, &v)?));
        }
        Ok(out)
    }

    pub(crate) fn len(&self, table: Table) -> usize {
        self.tree(table).len()
    }

    /// Commits a batch atomically (one transaction across every tree). Not yet durable: call
    /// [`Store::flush`] before acknowledging.
    pub(crate) fn apply(&self, batch: &Batch) -> Result<(), StoreError> {
        if batch.is_empty() {
            return Ok(());
        }
        let result: Result<(), TransactionError<()>> = self.trees.as_slice().transaction(|views| {
            for (table, key, value) in &batch.ops {
                let view = &views[*table as usize];
                match value {
                    Some(v) => {
                        view.insert(key.as_slice(), v.as_slice())?;
                    }
                    None => {
                        view.remove(key.as_slice())?;
                    }
                }
            }
            Ok::<(), ConflictableTransactionError<()>>(())
        });
        match result {
            Ok(()) => Ok(()),
            Err(TransactionError::Storage(e)) => Err(StoreError::Sled(e)),
            Err(TransactionError::Abort(())) => {
                Err(StoreError::Encode("transaction aborted".into()))
            }
        }
    }

    /// Makes everything written so far durable (fsync). Concurrent callers share the work, so
    /// writers that flush after releasing the write lock commit in groups.
    pub(crate) async fn flush(&self) -> Result<(), StoreError> {
        self.db.flush_async().await?;
        Ok(())
    }

    /// Flushes synchronously (shutdown, offline CLI).
    pub(crate) fn flush_blocking(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn batch_is_atomic_and_durable_across_reopen() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let mut b = Batch::default();
            b.put(Table::Users, "alice", &42u64).unwrap();
            b.put(Table::Meta, meta::NEXT_SERIAL, &7u64).unwrap();
            store.apply(&b).unwrap();
            store.flush_blocking().unwrap();
            let mut b = Batch::default();
            b.delete(Table::Users, "alice");
            b.put(Table::Users, "bob", &1u64).unwrap();
            store.apply(&b).unwrap();
            store.flush_blocking().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.get::<u64>(Table::Users, "alice").unwrap(), None);
        assert_eq!(store.get::<u64>(Table::Users, "bob").unwrap(), Some(1));
        assert_eq!(
            store.get::<u64>(Table::Meta, meta::NEXT_SERIAL).unwrap(),
            Some(7)
        );
        assert_eq!(store.values::<u64>(Table::Users).unwrap(), vec![1]);
    }

    #[test]
    fn second_open_is_locked() {
        let dir = tempfile::tempdir().unwrap();
        let _store = Store::open(dir.path()).unwrap();
        // sled's lock is per process on some platforms (flock is per open file description,
        // so a second open in the same process conflicts too).
        match Store::open(dir.path()) {
            Err(StoreError::Locked { .. }) => {}
            other => panic!("expected Locked, got {other:?}"),
        }
    }

    #[test]
    fn corrupt_value_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        store
            .tree(Table::Users)
            .insert("x", &[0xff, 0xff, 0xff][..])
            .unwrap();
        assert!(matches!(
            store.get::<String>(Table::Users, "x"),
            Err(StoreError::Corrupt { .. })
        ));
    }
}
