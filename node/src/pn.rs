//! Personal Network establishment and membership (the change request's B.1 steps 1-26, spec
//! 5.6.5 and 5.6.9): who is in this node's PN, how a PN comes to be, and how it is kept.
//!
//! * [`registration`]: Entity Registration and Discovery (steps 1-2), both ways, with credentials.
//! * [`pairing`]: the pairing driver (steps 1-7) and the responder's side of it.
//! * [`code`]: pairing codes (`cpnspair1-…`), to pair from a code instead of an address.
//! * [`election`]: the gateway election rule (step 5).
//! * [`gateway`]: the gateway's side: to `cpns-auth` (steps 8-17) and admitting PNEs (18-26).
//! * [`member`]: the PNE's side of joining (18, 24-26) and of membership updates.
//! * [`failover`]: switching the gateway (5.6.9), by request or when it falls silent.
//! * [`inventory`]: the gateway's local PN Inventory in sled.

pub(crate) mod code;
pub(crate) mod election;
pub(crate) mod failover;
pub(crate) mod gateway;
pub(crate) mod inventory;
pub(crate) mod member;
pub(crate) mod pairing;
pub(crate) mod registration;

use std::collections::BTreeMap;

use cpns_overlay::{MemberInfo, PnId, codec};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use crate::shared::Shared;

/// Sled tree of the node's PN membership.
const TREE: &str = "pn.v1";
/// Key of the membership record in [`TREE`].
const MEMBERSHIP_KEY: &[u8] = b"membership";

/// What a node remembers of its PN across restarts.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct Membership {
    /// The PN.
    pub(crate) pn_id: PnId,
    /// Its gateway (this node when it is the gateway).
    pub(crate) gateway: PeerId,
    /// Where the gateway listens.
    pub(crate) gateway_addrs: Vec<Multiaddr>,
    /// The PN's owner user.
    pub(crate) owner: String,
    /// The PN key epoch held.
    pub(crate) epoch: u64,
}

/// The PN as the running node knows it.
#[derive(Clone, Debug)]
pub(crate) struct PnState {
    /// Durable part.
    pub(crate) membership: Membership,
    /// Members as last known (the gateway's own inventory, or the gateway's last update).
    pub(crate) members: BTreeMap<PeerId, MemberInfo>,
}

impl PnState {
    /// Whether `peer` is a member.
    pub(crate) fn is_member(&self, peer: &PeerId) -> bool {
        self.members.contains_key(peer)
    }
}

/// Loads the stored membership, if any.
pub(crate) fn load_membership(db: &sled::Db) -> Option<Membership> {
    let tree = db.open_tree(TREE).ok()?;
    let bytes = tree.get(MEMBERSHIP_KEY).ok()??;
    codec::decode(&bytes, 64 * 1024).ok()
}

/// Stores the membership durably.
pub(crate) async fn save_membership(shared: &Shared, m: &Membership) -> Result<(), String> {
    let tree = shared.db.open_tree(TREE).map_err(|e| e.to_string())?;
    let bytes = codec::encode(m).map_err(|e| e.to_string())?;
    tree.insert(MEMBERSHIP_KEY, bytes)
        .map_err(|e| e.to_string())?;
    tree.flush_async().await.map_err(|e| e.to_string())?;
    Ok(())
}

/// Forgets the membership (left or released).
pub(crate) async fn clear_membership(shared: &Shared) -> Result<(), String> {
    let tree = shared.db.open_tree(TREE).map_err(|e| e.to_string())?;
    tree.remove(MEMBERSHIP_KEY).map_err(|e| e.to_string())?;
    tree.flush_async().await.map_err(|e| e.to_string())?;
    Ok(())
}
