//! The node itself: `/v1/status`, `/v1/peers`, `/v1/ping`, `/v1/trace`,
//! `/v1/credential/renew`, and the error body of every endpoint.

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
    /// The heartbeat period in force, seconds: an Adminee setting of a PN admin (5.6.9), else
    /// the node's `status.heartbeat_secs`.
    #[serde(default)]
    pub heartbeat_secs: u64,
    /// The PN key epoch this node holds.
    pub epoch: Option<u64>,
    /// The authentication server, when enrolled.
    pub auth_server: Option<AuthServerView>,
    /// This node's entity credential (serial, validity, whether renewal is due).
    pub credential: Option<CredentialView>,
    /// `server` or `client`.
    pub dht_mode: String,
    /// Peers in the DHT routing table.
    pub routing_table: usize,
    /// Connected peers.
    pub connected_peers: usize,
    /// Whether and how this node is reachable from outside its network.
    #[serde(default)]
    pub nat: NatView,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// The node's version.
    pub version: String,
    /// The non-CPNS devices this gateway speaks for (proxied PNEs, 5.6.10; empty elsewhere).
    #[serde(default)]
    pub proxied: Vec<crate::ProxiedPneView>,
}

/// Reachability across NAT routers (`cpns status`): AutoNAT's verdict, the addresses others
/// can use, the relays holding a slot for this node, its own relay role, UPnP.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NatView {
    /// `public` (a direct address was confirmed from outside), `private` (AutoNAT servers
    /// could not dial back: behind NAT) or `unknown`.
    pub reachability: String,
    /// Confirmed public addresses.
    pub public_addrs: Vec<String>,
    /// Relayed addresses this node can be reached at (`…/p2p-circuit/p2p/ME`).
    pub relayed_addrs: Vec<String>,
    /// Relays holding a reservation for this node.
    pub relays: Vec<String>,
    /// Whether this node relays for others now.
    pub relay_server: bool,
    /// UPnP port mapping: `off`, `searching`, `mapped`, `no gateway`, `gateway not public`,
    /// `expired`.
    pub upnp: String,
    /// Relayed connections this node upgraded to direct ones by hole punching.
    pub hole_punches_succeeded: u64,
    /// Hole punches that failed (the connection stayed relayed).
    pub hole_punches_failed: u64,
    /// Circuits passing through this node as a relay now.
    pub relay_circuits: u64,
    /// Reservations this node holds for others as a relay.
    pub relay_reservations: u64,
}

/// A PN member.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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

/// What `cpns renew` and the status show of the entity credential.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialView {
    /// Its serial.
    pub serial: u64,
    /// When it was issued (Unix seconds).
    pub issued: u64,
    /// When it expires (Unix seconds).
    pub expires: u64,
    /// Whether it is due for renewal.
    pub renewal_due: bool,
}

/// `GET /v1/peers`: one connected peer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerView {
    /// Its PeerId.
    pub peer_id: String,
    /// The remote address of the connection (a direct one when there is one).
    pub address: String,
    /// `direct`, or `relayed` while every connection to it goes through a relay.
    #[serde(default)]
    pub path: String,
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

/// A body naming one peer: `POST /v1/ping`, `/v1/pn/expel`, `/v1/groups/{id}/invite|expel`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerBody {
    /// The peer's PeerId.
    pub peer: String,
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
    /// `direct` or `relayed`.
    #[serde(default)]
    pub path: String,
    /// The address used.
    pub address: String,
}

/// `GET /v1/trace?flow=…` and `/v1/trace/mermaid?flow=…`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct TraceQuery {
    /// Only this flow (`B.1`, `G.1`, `5.6.9`).
    pub flow: Option<String>,
}

/// One traced protocol event (`GET /v1/trace`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TraceEvent {
    /// Order of recording on this node.
    pub seq: u64,
    /// `B.1`, `G.1` or `5.6.9`.
    pub flow: String,
    /// The step number in that flow.
    pub step: u32,
    /// Sender's PeerId (for a local step: the node itself).
    pub from: String,
    /// Receiver's PeerId (for a local step: the node itself).
    pub to: String,
    /// The message (or action) name.
    pub message: String,
    /// When, as RFC 3339 with milliseconds (UTC).
    pub time: String,
    /// When, in milliseconds since the Unix epoch.
    pub time_ms: u64,
    /// Optional detail for people (`admitted`, `epoch 3`, a refusal reason).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
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
    /// Stable code (see [`crate::codes`]).
    pub code: String,
    /// For people.
    pub message: String,
}

impl ErrorBody {
    /// An error body.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorDetail {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}
