//! The node's own services, kept in sled so that a restarted node republishes them.
//!
//! One tree, `directory.services.v1`: service id -> `codec(LocalService)`. Every write is
//! flushed before the caller is told it happened.

use cpns_keys::UnixTime;
use cpns_overlay::codec;
use serde::{Deserialize, Serialize};
use tracing::warn;

use crate::error::DirectoryError;
use crate::service::ServiceDescription;

/// The tree holding this node's published services.
pub const SERVICES_TREE: &str = "directory.services.v1";

/// Largest stored value decoded (well above any valid description).
const MAX_VALUE: usize = 256 * 1024;

/// One of this node's services as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct LocalService {
    /// The description as last published (its `expires` is the current record's).
    pub(crate) description: ServiceDescription,
    /// The end the publisher asked for (`published + ttl`), if any; republish never extends
    /// the description beyond it.
    pub(crate) until: Option<UnixTime>,
}

/// Sled-backed storage of local services.
#[derive(Clone, Debug)]
pub(crate) struct Store {
    services: sled::Tree,
}

impl Store {
    pub(crate) fn open(db: &sled::Db) -> Result<Self, DirectoryError> {
        Ok(Self {
            services: db.open_tree(SERVICES_TREE)?,
        })
    }

    /// Writes a service and waits until it is on disk.
    pub(crate) async fn put(&self, s: &LocalService) -> Result<(), DirectoryError> {
        let value = codec::encode(s).map_err(|e| DirectoryError::Codec(e.to_string()))?;
        self.services.insert(s.description.id.as_bytes(), value)?;
        self.services.flush_async().await?;
        Ok(())
    }

    /// Removes a service and waits until the removal is on disk. Returns what was removed.
    pub(crate) async fn remove(&self, id: &str) -> Result<Option<LocalService>, DirectoryError> {
        let old = self.services.remove(id.as_bytes())?;
        self.services.flush_async().await?;
        Ok(old.and_then(|v| decode(id, &v)))
    }

    pub(crate) fn get(&self, id: &str) -> Result<Option<LocalService>, DirectoryError> {
        Ok(self
            .services
            .get(id.as_bytes())?
            .and_then(|v| decode(id, &v)))
    }

    pub(crate) fn len(&self) -> usize {
        self.services.len()
    }

    /// Every stored service; undecodable entries are logged and skipped.
    pub(crate) fn all(&self) -> Vec<LocalService> {
        self.services
            .iter()
            .filter_map(|entry| match entry {
                Ok((k, v)) => decode(&String::from_utf8_lossy(&k), &v),
                Err(e) => {
                    warn!("reading local services: {e}");
                    None
                }
            })
            .collect()
    }
}

fn decode(id: &str, v: &[u8]) -> Option<LocalService> {
    match codec::decode(v, MAX_VALUE) {
        Ok(s) => Some(s),
        Err(e) => {
            warn!(%id, "skipping undecodable local service: {e}");
            None
        }
    }
}
