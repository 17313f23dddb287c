//! Enrolment and the PN: `/v1/up`, `/v1/down`, `/v1/pair`, `/v1/pn/…`, `/v1/mode`.

use serde::{Deserialize, Serialize};

use crate::MemberView;

/// `POST /v1/up`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UpBody {
    /// The enrolment code (`cpns1-…`).
    pub code: String,
}

/// `{"ok": true}`: `POST /v1/down`, `/v1/pn/invite`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Done {
    /// Always true (a failure is an error body).
    pub ok: bool,
}

/// `POST /v1/pair`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairBody {
    /// A multiaddr with /p2p/PEERID, or a pairing code (`cpnspair1-…`).
    pub addr: String,
}

/// What a pairing led to (`POST /v1/pair`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairOutcome {
    /// The peer paired with.
    pub peer_id: String,
    /// Its mode after pairing.
    pub peer_mode: String,
    /// This node's mode after pairing.
    pub mode: String,
    /// What happens next: `joining`, `gateway`, `waiting_for_gateway`, `no_gateway`,
    /// `registered`, or `invitation` (the peer's PN belongs to another user: its invitation
    /// waits in `GET /v1/pn/invitations`).
    pub result: String,
    /// The PN, once known.
    pub pn_id: Option<String>,
    /// The invitation left for the owner, when `result` is `invitation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invitation: Option<String>,
}

/// `GET /v1/pn/invitations`: an invitation to join a PN, waiting for the owner's answer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvitationView {
    /// Its id (`inv-…`), for `POST /v1/pn/accept`.
    pub id: String,
    /// The PN, when known.
    pub pn_id: Option<String>,
    /// The PN's gateway (the device to join through).
    pub gateway: String,
    /// Where that gateway listens.
    pub gateway_addrs: Vec<String>,
    /// The gateway's user (from its credential).
    pub user: String,
    /// The gateway's device name.
    pub device: String,
    /// How it came: `pairing`.
    pub source: String,
    /// When it came (Unix seconds).
    pub received: u64,
}

/// `POST /v1/pn/accept`, `POST /v1/pn/decline`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvitationBody {
    /// The invitation's id.
    pub id: String,
}

/// One member's entry in the PN Inventory (`GET /v1/pn`, `details`).
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
    /// Its current Device Capabilities (5.6.1).
    pub capabilities: Option<crate::CapabilitiesView>,
    /// Ids of the services it offers.
    pub services: Vec<String>,
    /// When the gateway last heard from it (Unix seconds; 0: not since the gateway started).
    pub last_seen: u64,
}

/// `GET /v1/pair/code`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PairingCodeView {
    /// The pairing code (`cpnspair1-…`).
    pub code: String,
}

/// `GET /v1/pn?pn_id=…`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InventoryQuery {
    /// Another PN than this node's.
    pub pn_id: Option<String>,
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
    /// The PN's admins and Adminee settings (5.6.9), for this node's own PN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<PnAdminsView>,
    /// The non-CPNS devices the gateway speaks for (proxied PNEs, 5.6.10), for this node's
    /// own PN.
    #[serde(default)]
    pub proxied: Vec<crate::ProxiedPneView>,
}

/// `POST /v1/pn/invite`: exactly one of the two.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct InviteBody {
    /// A user name: all that user's devices.
    pub user: Option<String>,
    /// One entity's PeerId.
    pub entity: Option<String>,
}

/// `POST /v1/pn/expel`.
pub type ExpelBody = crate::PeerBody;

/// `POST /v1/pn/expel`: the PN key epoch after the expulsion.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochView {
    /// The new epoch.
    pub epoch: u64,
}

/// `POST /v1/pn/release`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Released {
    /// The PN released.
    pub pn_id: String,
}

/// `POST /v1/pn/seal`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SealBody {
    /// Text to seal (UTF-8).
    pub text: String,
}

/// Something sealed under a group key: the answer of `POST /v1/pn/seal`, the body of
/// `POST /v1/pn/open`. Bytes are JSON arrays of numbers, as the node has always sent them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedView {
    /// The group whose key sealed it.
    pub group: String,
    /// The key epoch.
    pub epoch: u64,
    /// The member that sealed it.
    pub sender: String,
    /// The 24-byte nonce.
    pub nonce: Vec<u8>,
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

/// `POST /v1/pn/open`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Opened {
    /// The text (lossy UTF-8).
    pub text: String,
}

/// `GET, POST /v1/mode`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModeView {
    /// Current mode: `pne`, `gateway`, `pne+gateway`.
    pub mode: String,
    /// The setting: `auto`, `pne`, `gateway`.
    pub setting: String,
}

/// `POST /v1/mode`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ModeBody {
    /// `auto`, `pne` or `gateway`.
    pub mode: String,
}

/// What a PN admin may set for an Adminee (5.6.9, 3.2): every field is optional, `None`
/// leaves it as it was (and, never set, means the device's own setting).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmineeSettingsView {
    /// The device's label for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Whether it may be the PN's gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub may_be_gateway: Option<bool>,
    /// Its mode preference: `auto`, `pne`, `gateway` or `gateway-only`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<String>,
    /// The ids of its services it shows the PN (empty: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub services_shown: Option<Vec<String>>,
    /// Its heartbeat period to the gateway, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_secs: Option<u32>,
    /// After how long without a heartbeat the gateway marks it Offline, seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_after_secs: Option<u32>,
}

/// One Adminee's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmineeView {
    /// The member's PeerId.
    pub peer_id: String,
    /// What an admin set for it.
    pub settings: AdmineeSettingsView,
}

/// `GET /v1/pn/admins` and the answer of the PN Admin operations: the PN's admins, pending
/// admin requests and Adminee settings, as `cpns-auth` keeps them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnAdminsView {
    /// The PN.
    pub pn_id: String,
    /// Its admins (members listed as admins or devices of the owner user).
    pub admins: Vec<String>,
    /// Members of another user waiting for an admin's approval.
    pub pending: Vec<String>,
    /// Adminee settings.
    pub adminees: Vec<AdmineeView>,
}

/// `POST /v1/pn/admin/approve`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdminApproveBody {
    /// The member whose request is approved.
    pub peer: String,
}

/// `POST /v1/pn/admin/set`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AdmineeSetBody {
    /// The Adminee (a member's PeerId).
    pub peer: String,
    /// The settings to change.
    pub settings: AdmineeSettingsView,
}

/// `POST /v1/pn/handoff`: the gateway hands its role to a member.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HandOffBody {
    /// The member's PeerId.
    pub peer: String,
}

/// `POST /v1/pn/switch`: this PNE's running sessions (or one) move to another PNE of the
/// same user in the same PN (5.6.9 "switch current PNE to other PNE").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SwitchBody {
    /// The new PNE's PeerId.
    pub to: String,
    /// The session to move (hex id, as `cpns content sessions` shows it); none: every
    /// session this node receives.
    #[serde(default)]
    pub session: Option<String>,
}

/// The answer of `POST /v1/pn/switch`: the sessions the new PNE continues.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchView {
    /// The new PNE.
    pub to: String,
    /// The sessions moved.
    pub sessions: Vec<SwitchedSession>,
}

/// One session moved to another PNE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SwitchedSession {
    /// The session id, hex.
    pub id: String,
    /// The service.
    pub service_id: String,
    /// Its offerer.
    pub offerer: String,
    /// The bytes this node had received: the new PNE got them from it, and the offerer
    /// continues from there.
    pub offset: u64,
    /// The content's length.
    pub total: u64,
}

/// `POST /v1/pn/merge`: this PN's admin consents to merging it with another PN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MergeBody {
    /// The other PN's id.
    pub with: String,
}

/// What `cpns-auth` decided on a merge consent.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MergeView {
    /// `false`: the consent is stored and waits for an admin of the other PN; `true`: the
    /// two PNs are one now.
    pub merged: bool,
    /// The caller's PN (pending), or the merged PN.
    pub pn_id: String,
    /// That PN's gateway.
    pub gateway: String,
    /// Its members.
    pub members: Vec<String>,
    /// Its key epoch.
    pub epoch: u64,
}

/// `POST /v1/pn/split`: an admin splits members off into a new PN.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SplitBody {
    /// The members (PeerIds) that form the new PN.
    pub peers: Vec<String>,
}

/// The two PNs after a split.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SplitView {
    /// The PN that stays.
    pub pn_id: String,
    /// Its new key epoch.
    pub epoch: u64,
    /// Its members.
    pub members: Vec<String>,
    /// The new PN.
    pub new_pn_id: String,
    /// The new PN's gateway (elected among the members split off).
    pub new_gateway: String,
    /// The new PN's members.
    pub new_members: Vec<String>,
}

/// `GET /v1/pn/match?service=ID`: capability matching at the gateway (5.6.9 "match PNE and PN
/// capabilities in order to facilitate the delivery of services").
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MatchView {
    /// The service.
    pub service_id: String,
    /// Members whose current capabilities meet the service's requirements.
    pub consumers: Vec<String>,
    /// Members that do not, each with why (or `capabilities unknown`).
    pub unable: Vec<UnableView>,
    /// Members that offer the service.
    pub offerers: Vec<String>,
    /// The offerer best placed to deliver it now (mains power, WAN, battery, memory, CPUs).
    pub best_offerer: Option<String>,
}

/// A member that cannot consume a service, and why.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UnableView {
    /// The member.
    pub peer_id: String,
    /// Why.
    pub reason: String,
}

/// `GET /v1/pn/match` query.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct MatchQuery {
    /// The service id.
    pub service: String,
}
