//! What the server stores, one type per tree (see [`crate::store::Table`]).
//!
//! Adding a field to a stored type changes its encoding: bump the tree's version suffix and
//! migrate, rather than reading old bytes as the new type.

use cpns_keys::{EntityCredential, GroupId, GroupKey, Modes, UnixTime};
use cpns_overlay::{Capabilities, MembershipPolicy, PnRecordInfo};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use zeroize::Zeroize;

/// A user: the person (or household member) devices are enrolled for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserRecord {
    pub(crate) name: String,
    pub(crate) created: UnixTime,
}

/// An enrolment code. Only the SHA-256 of its secret is kept, so a copy of the database does
/// not let anyone enrol.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CodeRecord {
    pub(crate) code_id: String,
    pub(crate) user: String,
    pub(crate) modes: Modes,
    pub(crate) created: UnixTime,
    pub(crate) expires: UnixTime,
    pub(crate) reusable: bool,
    pub(crate) secret_hash: [u8; 32],
    /// How many enrolments used it.
    pub(crate) uses: u64,
    /// The entities it enrolled and the serials issued (the last
    /// [`crate::enrol::MAX_CODE_USES_KEPT`]), so a node that lost our answer can retry.
    pub(crate) used_by: Vec<(PeerId, u64)>,
}

/// An enrolled entity (a device's PeerId).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct EntityRecord {
    pub(crate) peer_id: PeerId,
    pub(crate) user: String,
    pub(crate) device: String,
    pub(crate) modes: Modes,
    /// The current credential (the last enrolment's).
    pub(crate) credential: EntityCredential,
    /// Every serial ever issued to this entity; earlier ones stay valid until they expire,
    /// unless the entity is revoked (which revokes them all).
    pub(crate) serials: Vec<u64>,
    /// The Entity-User Key shared with the entity.
    pub(crate) eukey: [u8; 32],
    pub(crate) enrolled: UnixTime,
    pub(crate) code_id: String,
    /// When it was revoked; a revoked entity never authenticates or enrols again.
    pub(crate) revoked: Option<UnixTime>,
    /// The last capabilities it sent (B.1 step 12).
    pub(crate) capabilities: Option<Capabilities>,
}

impl Drop for EntityRecord {
    fn drop(&mut self) {
        self.eukey.zeroize();
    }
}

impl EntityRecord {
    pub(crate) fn serial(&self) -> u64 {
        self.credential.serial()
    }

    pub(crate) fn eukey(&self) -> cpns_keys::EuKey {
        cpns_keys::EuKey::from_bytes(self.eukey)
    }
}

/// A Personal Network as `cpns-auth` keeps it: the record of 5.6.9 and the current PN key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PnRecord {
    pub(crate) pn_id: String,
    pub(crate) owner: String,
    pub(crate) gateway: PeerId,
    pub(crate) members: Vec<PeerId>,
    pub(crate) admins: Vec<PeerId>,
    pub(crate) policy: MembershipPolicy,
    pub(crate) created: UnixTime,
    pub(crate) updated: UnixTime,
    /// The current key; its epoch is the PN's epoch.
    pub(crate) key: GroupKey,
}

impl PnRecord {
    pub(crate) fn epoch(&self) -> u64 {
        self.key.epoch()
    }

    pub(crate) fn info(&self) -> PnRecordInfo {
        PnRecordInfo {
            pn_id: self.pn_id.clone(),
            owner: self.owner.clone(),
            gateway: self.gateway,
            members: self.members.clone(),
            admins: self.admins.clone(),
            policy: self.policy.clone(),
            epoch: self.epoch(),
        }
    }
}

/// A PN's admin state beyond its record (5.6.9 "PN Admin", 3.2 "Adminee"): who asked to be
/// admin and waits for an approval, and what admins set for each member. Removed members
/// leave both lists.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PnAdminRecord {
    pub(crate) pending: Vec<PeerId>,
    pub(crate) adminees: Vec<cpns_overlay::AdmineeEntry>,
}

/// An admin's consent to merge its PN with another (5.6.9), kept until an admin of the other
/// PN consents too (or it expires).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct MergeConsent {
    /// The PN to merge with.
    pub(crate) with: String,
    /// The admin that consented.
    pub(crate) by: PeerId,
    /// When.
    pub(crate) at: UnixTime,
}

/// Where members of a former PN (merged into another) or members split off a PN went: each
/// move names the PN and the members that went there, newest last.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub(crate) struct PnMoves {
    pub(crate) moves: Vec<PnMove>,
}

/// One move of [`PnMoves`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct PnMove {
    /// The PN they are members of now.
    pub(crate) into: String,
    /// Who moved.
    pub(crate) members: Vec<PeerId>,
    /// When.
    pub(crate) at: UnixTime,
}

/// A Service Group (5.6.8) and its current key.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct GroupRecord {
    pub(crate) group: GroupId,
    pub(crate) name: String,
    pub(crate) owner: PeerId,
    pub(crate) admins: Vec<PeerId>,
    pub(crate) members: Vec<PeerId>,
    pub(crate) invited: Vec<PeerId>,
    pub(crate) created: UnixTime,
    pub(crate) updated: UnixTime,
    pub(crate) key: GroupKey,
}

impl GroupRecord {
    pub(crate) fn info(&self) -> cpns_overlay::GroupInfo {
        cpns_overlay::GroupInfo {
            group: self.group.clone(),
            name: self.name.clone(),
            owner: self.owner,
            members: self.members.clone(),
            invited: self.invited.clone(),
            epoch: self.key.epoch(),
        }
    }
}
