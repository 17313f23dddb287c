//! Service Group Management (spec 5.6.8) between nodes: a gateway forwards keys that
//! `cpns-auth` pushed for one of its members.

use serde::{Deserialize, Serialize};

use super::GroupKeyGrant;

/// Service Group messages between nodes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum GroupMessage {
    /// Keys for the receiver, sealed under its EUKey by `cpns-auth`, forwarded by its gateway.
    KeyForward {
        /// The sealed keys.
        grants: Vec<GroupKeyGrant>,
    },
}

impl GroupMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            GroupMessage::KeyForward { .. } => "GroupKeyForward",
        }
    }
}
