//! Status Management (spec 5.6.2) between nodes: query, subscribe, notify, event-triggered
//! reports.

use libp2p::PeerId;
use serde::{Deserialize, Serialize};

/// The status of a PNE or gateway (5.6.2: "Online, Offline, Busy, etc").
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Status {
    /// Reachable and available.
    #[default]
    Online,
    /// Not reachable (declared by itself on shutdown, or by its gateway after silence).
    Offline,
    /// Reachable but busy, with the reason given by the device or its user.
    Busy {
        /// Why.
        reason: String,
    },
}

impl Status {
    /// `online`, `offline` or `busy`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Status::Online => "online",
            Status::Offline => "offline",
            Status::Busy { .. } => "busy",
        }
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Status::Busy { reason } if !reason.is_empty() => write!(f, "busy ({reason})"),
            s => f.write_str(s.as_str()),
        }
    }
}

/// A subscriber's policy for event-triggered reports (5.6.2: "status information is reported to
/// the CPNS entity who requests the policy based status information report").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusPolicy {
    /// Notify on every change of Online/Offline/Busy.
    pub on_change: bool,
    /// Notify when the battery falls below this percentage.
    pub battery_below: Option<u8>,
    /// Notify when free memory falls below this many bytes.
    pub free_memory_below: Option<u64>,
}

/// Status Management messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum StatusMessage {
    /// Asks for the status of `target` (the receiver itself, or a member its gateway tracks).
    Query {
        /// Whose status.
        target: PeerId,
    },
    /// The answer to a query, and the body of notifications.
    Report {
        /// Whose status.
        target: PeerId,
        /// The status.
        status: Status,
        /// Battery percent, when known.
        battery_percent: Option<u8>,
        /// Free memory in bytes, when known.
        free_memory_bytes: Option<u64>,
        /// Why this report was sent (`query`, `change`, `battery_below`, `silence`, ...).
        trigger: String,
    },
    /// Subscribe to the status of `target` under a policy. The gateway accepts subscriptions
    /// for every member of its PN; a PNE for itself.
    Subscribe {
        /// Whose status.
        target: PeerId,
        /// When to notify.
        policy: StatusPolicy,
    },
    /// Ends a subscription.
    Unsubscribe {
        /// Whose status.
        target: PeerId,
    },
    /// A notification to a subscriber (same shape as a report).
    Notify {
        /// Whose status.
        target: PeerId,
        /// The status.
        status: Status,
        /// Battery percent, when known.
        battery_percent: Option<u8>,
        /// Free memory in bytes, when known.
        free_memory_bytes: Option<u64>,
        /// Why it was sent.
        trigger: String,
    },
    /// A PNE's periodic or event-triggered report to its gateway (also the gateway's liveness
    /// signal: a PNE silent for longer than the gateway's bound is marked Offline).
    Heartbeat {
        /// The sender's status.
        status: Status,
        /// Battery percent, when known.
        battery_percent: Option<u8>,
        /// Free memory in bytes, when known.
        free_memory_bytes: Option<u64>,
    },
}

impl StatusMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            StatusMessage::Query { .. } => "StatusQuery",
            StatusMessage::Report { .. } => "StatusReport",
            StatusMessage::Subscribe { .. } => "StatusSubscribe",
            StatusMessage::Unsubscribe { .. } => "StatusUnsubscribe",
            StatusMessage::Notify { .. } => "StatusNotify",
            StatusMessage::Heartbeat { .. } => "StatusHeartbeat",
        }
    }
}
