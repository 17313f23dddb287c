//! The JSON shapes of the local API, shared by the daemon (which serializes them) and the
//! `cpns` CLI (which reads them). Field names are part of the API's contract (docs/API.md).

use serde::{Deserialize, Serialize};

/// `GET /v1/status`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StatusView {
    /// This node's PeerId.
    pub peer_id: String,
    /// Where it listens.
    pub listen_addrs: Vec<String>,
    /// Current mode: `pne`, `gateway` or `pne+gateway`.
    pub mode: String,
    /// The configured mode: `auto`, `pne` or `gateway`.
    pub mode_setting: String,
    /// The PN this node belongs to, if any.
    pub pn_id: Option<String>,
    /// The PN's gateway, if any.
    pub gateway: Option<String>,
    /// The PN's members as this node knows them.
    pub members: Vec<MemberView>,
    /// Whether the node holds an entity credential.
    pub enrolled: bool,
    /// The user it is enrolled for.
    pub user: Option<String>,
    /// The device name.
    pub device: String,
    /// The node's own status (`online`, `busy`...).
    pub status: String,
    /// The PN key epoch this node holds.
    pub epoch: Option<u64>,
    /// The authentication server, when enrolled.
    pub auth_server: Option<AuthServerView>,
    /// This node's entity credential (serial, validity, whether renewal is due).
    pub credential: Option<crate::renewal::CredentialView>,
    /// `server` or `client`.
    pub dht_mode: String,
    /// Peers in the DHT routing table.
    pub routing_table: usize,
    /// Connected peers.
    pub connected_peers: usize,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The node's version.
    pub version: String,
}

/// A PN member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberView {
    /// Its PeerId.
    pub peer_id: String,
    /// Its mode.
    pub mode: String,
    /// Its status: `online`, `offline` or `busy`.
    pub status: String,
    /// Why it is busy, if it is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Its user.
    pub user: String,
    /// Its device name.
    pub device: String,
}

/// The authentication server as the node sees it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AuthServerView {
    /// Its PeerId.
    pub peer_id: String,
    /// Its addresses.
    pub addrs: Vec<String>,
    /// Whether a connection to it is open.
    pub connected: bool,
    /// Whether this node holds a live session (B.1 steps 8-11 done).
    pub authenticated: bool,
}

/// `GET /v1/peers`: one connected peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerView {
    /// Its PeerId.
    pub peer_id: String,
    /// The remote address of the connection.
    pub address: String,
    /// Whether we dialed it.
    pub outbound: bool,
    /// Last ping round trip in milliseconds.
    pub rtt_ms: Option<f64>,
    /// Whether it serves the DHT.
    pub dht_server: bool,
    /// Its agent string.
    pub agent: Option<String>,
    /// Whether it registered with us with a valid credential (B.1 steps 1-2).
    pub registered: bool,
    /// Its CPNS mode, once registered.
    pub mode: Option<String>,
}

/// `POST /v1/ping`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PingView {
    /// The peer.
    pub peer_id: String,
    /// Round trip of a CPNS ping request in milliseconds.
    pub rtt_ms: f64,
    /// Whether the connection is direct (not relayed).
    pub direct: bool,
    /// The address used.
    pub address: String,
}

/// The JSON error body of every failed API request.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorDetail,
}

/// A stable code and a message.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ErrorDetail {
    /// Stable code (`unauthorized`, `bad_request`, `not_found`, `conflict`, `refused`,
    /// `unavailable`, `internal`).
    pub code: String,
    /// For people.
    pub message: String,
}

/// `GET /v1/pn`: a PN Inventory summary (this node's PN from its gateway, or a remote PN's
/// signed summary from the DHT).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PnInventoryView {
    /// The PN.
    pub pn_id: String,
    /// Its owner user.
    pub owner: String,
    /// Its gateway.
    pub gateway: String,
    /// Its PN key epoch.
    pub epoch: u64,
    /// Its members.
    pub members: Vec<MemberView>,
    /// Ids of the services its members offer (as the gateway knows them).
    pub services: Vec<String>,
    /// When the summary was made (Unix seconds).
    pub updated: u64,
    /// Per member, what the PN Inventory holds beyond the member list (given to members;
    /// empty for a remote PN's public summary).
    #[serde(default)]
    pub details: Vec<MemberDetailView>,
}

/// One member's entry in the PN Inventory.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MemberDetailView {
    /// Its PeerId.
    pub peer_id: String,
    /// Its credential's serial.
    pub serial: u64,
    /// When its credential expires (Unix seconds).
    pub expires: u64,
    /// Where it listens.
    pub listen_addrs: Vec<String>,
    /// Its current Device Capabilities (5.6.1), as JSON.
    pub capabilities: Option<serde_json::Value>,
    /// Ids of the services it offers.
    pub services: Vec<String>,
    /// When the gateway last heard from it (Unix seconds; 0: not since the gateway started).
    pub last_seen: u64,
}

impl From<cpns_overlay::PnInventorySummary> for PnInventoryView {
    fn from(s: cpns_overlay::PnInventorySummary) -> Self {
        let details = s
            .details
            .iter()
            .map(|d| {
                let m = s.members.iter().find(|m| m.peer_id == d.peer_id);
                MemberDetailView {
                    peer_id: d.peer_id.to_string(),
                    serial: m.map(|m| m.serial).unwrap_or(0),
                    expires: m.map(|m| m.expires).unwrap_or(0),
                    listen_addrs: m
                        .map(|m| m.listen_addrs.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    capabilities: d
                        .capabilities
                        .as_ref()
                        .and_then(|c| serde_json::to_value(c).ok()),
                    services: d.services.clone(),
                    last_seen: d.last_seen,
                }
            })
            .collect();
        Self {
            pn_id: s.pn_id,
            owner: s.owner,
            gateway: s.gateway.to_string(),
            epoch: s.epoch,
            members: s.members.iter().map(MemberView::from).collect(),
            services: s.services,
            updated: s.updated,
            details,
        }
    }
}

impl From<&cpns_overlay::MemberInfo> for MemberView {
    fn from(m: &cpns_overlay::MemberInfo) -> Self {
        Self {
            peer_id: m.peer_id.to_string(),
            mode: m.mode.to_string(),
            status: m.status.as_str().into(),
            reason: match &m.status {
                cpns_overlay::Status::Busy { reason } => Some(reason.clone()),
                _ => None,
            },
            user: m.user.clone(),
            device: m.device.clone(),
        }
    }
}
