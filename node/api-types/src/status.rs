//! Status Management (5.6.2): `/v1/status/set|of|subscribe|notifications`.

use serde::{Deserialize, Serialize};

/// `POST /v1/status/set`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SetStatusBody {
    /// `online`, `busy` or `offline`.
    pub status: String,
    /// Why (for busy).
    pub reason: Option<String>,
}

/// A peer's status: `POST /v1/status/set`, `GET /v1/status/of/{peer}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerStatus {
    /// Whose status.
    pub peer_id: String,
    /// `online`, `offline` or `busy`.
    pub status: String,
    /// Why busy.
    pub reason: Option<String>,
    /// Its battery, when known.
    pub battery_percent: Option<u8>,
    /// Who answered (the peer or its gateway).
    pub answered_by: String,
}

/// `POST /v1/status/subscribe`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SubscribeBody {
    /// The peer to watch.
    pub peer: String,
    /// Notify on every change (default true).
    #[serde(default = "yes")]
    pub on_change: bool,
    /// Notify when its battery falls below this percentage.
    pub battery_below: Option<u8>,
    /// Notify when its free memory falls below this many bytes.
    pub free_memory_below: Option<u64>,
}

fn yes() -> bool {
    true
}

/// `POST /v1/status/subscribe`: where the subscription was made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Subscribed {
    /// The watched peer.
    pub peer_id: String,
    /// Who holds the subscription (the peer or its gateway).
    pub at: String,
}

/// A status notification this node received (`GET /v1/status/notifications`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Whose status.
    pub target: String,
    /// `online`, `offline` or `busy`.
    pub status: String,
    /// Why busy, if busy.
    pub reason: Option<String>,
    /// Battery, when known.
    pub battery_percent: Option<u8>,
    /// Why it was sent (`change`, `battery_below`, `silence`, `disconnected`, ...).
    pub trigger: String,
    /// Who sent it.
    pub from: String,
    /// When it arrived (Unix seconds).
    pub time: u64,
}
