//! The gateway's local PN Inventory (5.6.9: "Manage a local PN Inventory"): the members of its
//! PN with their capabilities, status and services, in sled so that it survives restarts.

use cpns_keys::UnixTime;
use cpns_overlay::{Capabilities, MemberInfo, codec};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// Sled tree of the inventory.
const TREE: &str = "inventory.v1";
/// Largest stored entry accepted back.
const MAX_ENTRY: usize = 256 * 1024;

/// One member in the inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Entry {
    /// Who, mode, status, addresses.
    pub(crate) info: MemberInfo,
    /// Its last capabilities.
    pub(crate) caps: Option<Capabilities>,
    /// When it was last heard from.
    pub(crate) last_seen: UnixTime,
    /// Ids of services it offers.
    pub(crate) services: Vec<String>,
}

/// Loads every entry.
pub(crate) fn load(db: &sled::Db) -> Vec<Entry> {
    let Ok(tree) = db.open_tree(TREE) else {
        return Vec::new();
    };
    tree.iter()
        .values()
        .filter_map(|v| v.ok())
        .filter_map(|v| codec::decode(&v, MAX_ENTRY).ok())
        .collect()
}

/// Stores (or replaces) an entry durably.
pub(crate) async fn put(db: &sled::Db, entry: &Entry) -> Result<(), String> {
    let tree = db.open_tree(TREE).map_err(|e| e.to_string())?;
    let bytes = codec::encode(entry).map_err(|e| e.to_string())?;
    tree.insert(entry.info.peer_id.to_bytes(), bytes)
        .map_err(|e| e.to_string())?;
    tree.flush_async().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Removes a member durably.
pub(crate) async fn remove(db: &sled::Db, peer: &PeerId) -> Result<(), String> {
    let tree = db.open_tree(TREE).map_err(|e| e.to_string())?;
    tree.remove(peer.to_bytes()).map_err(|e| e.to_string())?;
    tree.flush_async().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Empties the inventory (the PN was released).
pub(crate) async fn clear(db: &sled::Db) -> Result<(), String> {
    let tree = db.open_tree(TREE).map_err(|e| e.to_string())?;
    tree.clear().map_err(|e| e.to_string())?;
    tree.flush_async().await.map_err(|e| e.to_string())?;
    Ok(())
}
