//! Service Publication & Discovery messages between nodes (spec 5.6.4): advertisement of new
//! service descriptions to subscribers, and direct lookups at a publisher.
//!
//! Service descriptions travel as opaque signed records (`cpns-directory` encodes and checks
//! them), so that this crate does not depend on the directory's types.

use serde::{Deserialize, Serialize};

/// Directory messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum DirectoryMessage {
    /// "Advertise service description" (5.6.4.2): a signed (and, for non-public services,
    /// sealed) description record pushed to a subscriber.
    Advertise {
        /// The record bytes as stored in the DHT.
        record: Vec<u8>,
    },
    /// Subscribe to advertisements of services matching a keyword (a normalised keyword, or its
    /// keyed hash for a PN or Service Group).
    Subscribe {
        /// The keyword key.
        keyword: Vec<u8>,
    },
    /// Ends a subscription.
    Unsubscribe {
        /// The keyword key.
        keyword: Vec<u8>,
    },
    /// Asks a publisher for its records under a keyword key.
    Lookup {
        /// The keyword key.
        keyword: Vec<u8>,
    },
    /// Records answering a lookup.
    Records {
        /// Record bytes.
        records: Vec<Vec<u8>>,
    },
}

impl DirectoryMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            DirectoryMessage::Advertise { .. } => "AdvertiseServiceDescription",
            DirectoryMessage::Subscribe { .. } => "DirectorySubscribe",
            DirectoryMessage::Unsubscribe { .. } => "DirectoryUnsubscribe",
            DirectoryMessage::Lookup { .. } => "DirectoryLookup",
            DirectoryMessage::Records { .. } => "DirectoryRecords",
        }
    }
}
