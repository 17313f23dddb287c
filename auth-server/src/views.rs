//! What the admin API returns: plain serde types, the same in-process ([`crate::Admin`]), on
//! the admin endpoint (JSON) and in the CLI's `--json` output. PeerIds are base58 strings,
//! times Unix seconds, modes `pne,gateway` strings.

use cpns_keys::UnixTime;
use serde::{Deserialize, Serialize};

/// A user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserView {
    /// The user's name.
    pub name: String,
    /// When it was created.
    pub created: UnixTime,
    /// How many entities are enrolled for it (revoked ones included).
    pub entities: usize,
}

/// What `users delete` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeletedUser {
    /// The user.
    pub name: String,
    /// Entities of the user that were revoked with it.
    pub revoked_entities: Vec<String>,
    /// Unused enrolment codes of the user that were deleted.
    pub deleted_codes: usize,
}

/// An enrolment code as listed (never with its secret, which the server does not keep).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeView {
    /// The public id.
    pub code_id: String,
    /// The user enrolled devices get.
    pub user: String,
    /// Modes the credentials allow.
    pub modes: String,
    /// Creation time.
    pub created: UnixTime,
    /// Expiry.
    pub expires: UnixTime,
    /// Whether it can be used more than once.
    pub reusable: bool,
    /// Enrolments made with it.
    pub uses: u64,
    /// The entities it enrolled (the last few).
    pub used_by: Vec<String>,
}

/// A fresh enrolment code: `code` is what the node needs (`cpns-node enrol CODE`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedCode {
    /// The code's text form (`cpns1-…`), secret included: hand it to the device's owner only.
    pub code: String,
    /// The public id.
    pub code_id: String,
    /// The user.
    pub user: String,
    /// Modes the credentials allow.
    pub modes: String,
    /// Expiry.
    pub expires: UnixTime,
    /// Whether it can be used more than once.
    pub reusable: bool,
    /// The server's PeerId, as carried in the code.
    pub server: String,
    /// The addresses carried in the code.
    pub addrs: Vec<String>,
    /// The CA fingerprint carried in the code.
    pub ca_fingerprint: String,
}

/// An enrolled entity.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityView {
    /// Its PeerId.
    pub peer_id: String,
    /// Its user.
    pub user: String,
    /// Its device name.
    pub device: String,
    /// Modes its credential allows.
    pub modes: String,
    /// Its current credential serial.
    pub serial: u64,
    /// Every serial issued to it.
    pub serials: Vec<u64>,
    /// First enrolment.
    pub enrolled: UnixTime,
    /// Expiry of the current credential.
    pub expires: UnixTime,
    /// When it was revoked.
    pub revoked: Option<UnixTime>,
    /// The mode in its last capabilities update, if any.
    pub mode: Option<String>,
    /// Whether it has a live session now (always false when the server is stopped).
    pub online: bool,
    /// PNs it belongs to.
    pub pns: Vec<String>,
    /// Service Groups it belongs to.
    pub groups: Vec<String>,
}

/// A Personal Network's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnView {
    /// The PN id (`pn-…`).
    pub pn_id: String,
    /// The owner user.
    pub owner: String,
    /// The gateway of record.
    pub gateway: String,
    /// Members (the gateway included).
    pub members: Vec<String>,
    /// Admins.
    pub admins: Vec<String>,
    /// Users invited besides the owner.
    pub invited_users: Vec<String>,
    /// Entities invited.
    pub invited_entities: Vec<String>,
    /// Entities expelled.
    pub expelled: Vec<String>,
    /// The PN key's epoch.
    pub epoch: u64,
    /// Creation time.
    pub created: UnixTime,
    /// Last change.
    pub updated: UnixTime,
    /// PNEs its gateway found in its zone and registered (Appendix F; `pns show` only).
    #[serde(default)]
    pub zone_members: Vec<String>,
}

/// A Service Group's record.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group id (`sg-…`).
    pub group: String,
    /// Its name.
    pub name: String,
    /// Its creator.
    pub owner: String,
    /// Its admins.
    pub admins: Vec<String>,
    /// Members.
    pub members: Vec<String>,
    /// Invited entities that have not joined.
    pub invited: Vec<String>,
    /// The group key's epoch.
    pub epoch: u64,
    /// Creation time.
    pub created: UnixTime,
    /// Last change.
    pub updated: UnixTime,
}

/// One charging record (5.5, 5.6.3): one usage record of one signed report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargingRecord {
    /// Increasing id, in the order received.
    pub id: u64,
    /// When the server stored it.
    pub received: UnixTime,
    /// The reporting (consuming) entity.
    pub entity: String,
    /// Its user: who is charged.
    pub user: String,
    /// Its device name.
    pub device: String,
    /// The report's sequence number.
    pub sequence: u64,
    /// The service id.
    pub service_id: String,
    /// The service name.
    pub service_name: String,
    /// The offering entity.
    pub offerer: String,
    /// The PN, or empty.
    pub pn_id: String,
    /// When use started.
    pub started: UnixTime,
    /// Duration in milliseconds.
    pub duration_ms: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// The consumer's capabilities during use, in one line.
    pub capabilities: String,
    /// The consumer's status during use.
    pub status: String,
}

/// What a revocation did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeOutcome {
    /// The entity.
    pub entity: String,
    /// Its serials, now all on the revocation list.
    pub serials: Vec<u64>,
    /// The revocation list's new version.
    pub revocation_version: u64,
    /// PNs it was removed from (their keys rotated).
    pub pns: Vec<String>,
    /// Service Groups it was removed from (their keys rotated).
    pub groups: Vec<String>,
    /// Whether it had already been revoked (nothing changed).
    pub already_revoked: bool,
}

/// The server as the admin API sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServerInfo {
    /// The server's PeerId.
    pub peer_id: String,
    /// Its listen addresses (the last known ones when stopped).
    pub listen_addrs: Vec<String>,
    /// The CA public key (hex).
    pub ca_public: String,
    /// Its fingerprint, as carried in codes.
    pub ca_fingerprint: String,
    /// The revocation list's version.
    pub revocation_version: u64,
    /// Whether this answer comes from the running server.
    pub running: bool,
    /// The admin endpoint's address, when running.
    pub admin_addr: Option<String>,
    /// Users.
    pub users: usize,
    /// Entities.
    pub entities: usize,
    /// PNs.
    pub pns: usize,
    /// Service Groups.
    pub groups: usize,
    /// Live sessions.
    pub sessions: usize,
}
