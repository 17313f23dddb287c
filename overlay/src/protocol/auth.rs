//! Messages between a node and `cpns-auth`, the dedicated authentication/authorisation server
//! of the peer-to-peer deployment (Appendix B.3), on `/cpns/auth/1.0.0`.
//!
//! Most are requests from a node; [`AuthMessage::StatusUpdateRequest`] (B.1 step 14),
//! [`AuthMessage::PnInventoryCreated`] (step 17) and [`AuthMessage::KeyPush`] are requests from
//! the server to a gateway over the connection the gateway set up (step 8).

use cpns_keys::{
    EntityCredential, GroupId, Modes, PublicKey, RevocationList, Sealed, SealedBox, Signature,
    UnixTime,
};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{Capabilities, ConnectionSetup, NodeMode, PnId, Status};

/// Messages on `/cpns/auth/1.0.0`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AuthMessage {
    /// Enrolment: a node presents an enrolment code's secret (answered by
    /// [`AuthMessage::EnrolResponse`]).
    EnrolRequest(EnrolRequest),
    /// Enrolment succeeded: the credential and the EUKey sealed to the node.
    EnrolResponse(EnrolResponse),

    /// B.1 step 8: connection setup request (Connection Management).
    ConnectionSetupRequest {
        /// The node's credential.
        credential: EntityCredential,
        /// The mode the node wants to act in (authorisation checks it against the credential).
        mode: NodeMode,
    },
    /// B.1 step 9: authentication and authorisation request, a fresh challenge.
    AuthChallenge {
        /// Fresh random nonce; answers must carry it and it is accepted once.
        nonce: [u8; 32],
        /// When the server issued it.
        issued: UnixTime,
        /// The answer must arrive before this time.
        expires: UnixTime,
    },
    /// B.1 step 10: authentication and authorisation response: proof of the EUKey (MAC) and of
    /// the identity key (signature) over [`crate::transcript::auth_response`].
    AuthResponse {
        /// The challenge's nonce.
        nonce: [u8; 32],
        /// MAC under the node's EUKey over the transcript.
        eukey_mac: [u8; 32],
        /// Signature by the node's identity key over the transcript.
        signature: Signature,
    },
    /// B.1 step 11: connection setup confirmation.
    ConnectionSetupConfirmation(SessionInfo),

    /// B.1 step 12: the gateway's device capabilities update.
    CapabilitiesUpdate(Capabilities),
    /// B.1 step 13: device capabilities confirmation.
    CapabilitiesConfirmation {
        /// The revision the server stored.
        revision: u64,
    },
    /// B.1 step 14: status management update request, server to gateway.
    StatusUpdateRequest,
    /// B.1 step 16: status management response, gateway to server (after the lookup of
    /// step 15).
    StatusResponse {
        /// The gateway's own status.
        status: Status,
        /// The PN the gateway already runs, if any (after a restart).
        pn_id: Option<PnId>,
        /// Status of the members the gateway tracks.
        members: Vec<(PeerId, Status)>,
        /// Whether a member claims `pn_id`'s gateway role from the gateway of record (a
        /// failover or a planned switch, 5.6.9). Without it, a claim from a node that is no
        /// longer the gateway of record (a gateway back after the PN moved on) changes nothing.
        take_over: bool,
    },
    /// B.1 step 17: the server created or updated the PN Inventory and tells the gateway,
    /// with the gateway's own grant of the PN key.
    PnInventoryCreated {
        /// The PN record.
        pn: PnRecordInfo,
        /// The current PN key for the gateway, sealed under its EUKey.
        key: GroupKeyGrant,
    },

    /// B.1 step 19: PN membership request, gateway to server, for a PNE that asked at step 18.
    MembershipRequest {
        /// The PNE's signed request, as the gateway received it.
        setup: ConnectionSetup,
    },
    /// B.1 step 21: PN membership list or policy transfer.
    MembershipListTransfer {
        /// Admitted or refused, and why.
        decision: MembershipDecision,
        /// The PN record after the decision.
        pn: PnRecordInfo,
    },
    /// B.1 step 22: PN key request, gateway to server, for an admitted member.
    PnKeyRequest {
        /// The PN.
        pn_id: PnId,
        /// The member the key is for.
        member: PeerId,
    },
    /// B.1 step 23: PN key response: the current PN key sealed for every member, each under
    /// its own EUKey, so that the gateway can hand the new member its key (step 24) and give
    /// the other members the new epoch. Also the answer to [`AuthMessage::PnExpel`],
    /// [`AuthMessage::PnDeregister`] and (with only the caller's grant) [`AuthMessage::PnKeyPull`].
    PnKeyResponse {
        /// The PN.
        pn_id: PnId,
        /// The key's epoch.
        epoch: u64,
        /// One grant per member.
        grants: Vec<MemberGrant>,
    },

    /// PN management (5.6.9): a PN admin invites a user or an entity.
    PnInvite {
        /// The PN.
        pn_id: PnId,
        /// Who is invited.
        invitee: Invitee,
    },
    /// PN management: an admin expels a member (the PN key rotates).
    PnExpel {
        /// The PN.
        pn_id: PnId,
        /// The member to expel.
        member: PeerId,
    },
    /// G.1 step 9: the gateway de-registers a member that left (the PN key rotates).
    PnDeregister {
        /// The PN.
        pn_id: PnId,
        /// The member that left.
        member: PeerId,
    },
    /// PN management: the gateway releases the PN (its key is deleted).
    PnRelease {
        /// The PN.
        pn_id: PnId,
    },
    /// A member pulls the current PN key (answered by [`AuthMessage::PnKeyResponse`] with the
    /// caller's grant only).
    PnKeyPull {
        /// The PN.
        pn_id: PnId,
    },
    /// Asks for a PN's record (answered by [`AuthMessage::PnInfo`]).
    PnInfoRequest {
        /// The PN.
        pn_id: PnId,
    },
    /// A PN's record.
    PnInfo(PnRecordInfo),

    /// An authenticated entity asks for a fresh credential before its own expires (same
    /// PeerId, user, device and modes; a new serial and expiry). Answered by
    /// [`AuthMessage::CredentialRenewed`], or refused while the current one is too young.
    RenewCredential,
    /// The renewed credential.
    CredentialRenewed(EntityCredential),
    /// Service Group Management (5.6.8): create a group; the creator is its first member and
    /// admin (answered by [`AuthMessage::GroupInfo`]).
    GroupCreate {
        /// A name for people.
        name: String,
    },
    /// Delete a group and its key.
    GroupDelete {
        /// The group.
        group: GroupId,
    },
    /// Invite an entity (an admin's request); the invitee then joins.
    GroupInvite {
        /// The group.
        group: GroupId,
        /// Who is invited.
        entity: PeerId,
    },
    /// Expel a member (the group key rotates).
    GroupExpel {
        /// The group.
        group: GroupId,
        /// Who is expelled.
        entity: PeerId,
    },
    /// Join a group the caller was invited to (the group key rotates).
    GroupJoin {
        /// The group.
        group: GroupId,
    },
    /// Leave a group (the group key rotates).
    GroupLeave {
        /// The group.
        group: GroupId,
    },
    /// Asks for a group's record.
    GroupInfoRequest {
        /// The group.
        group: GroupId,
    },
    /// A group's record.
    GroupInfo(GroupInfo),
    /// Lists the groups the caller belongs to or is invited to.
    GroupList,
    /// The answer to [`AuthMessage::GroupList`].
    Groups(Vec<GroupInfo>),
    /// Pull the current keys of every group (and PN) the caller belongs to.
    KeysPull,
    /// The caller's current group keys, each sealed under its EUKey.
    Keys(Vec<GroupKeyGrant>),
    /// Server to a member's gateway: new keys for a member, to forward to it. Also sent to a
    /// member that is itself connected.
    KeyPush {
        /// The member the keys are for.
        member: PeerId,
        /// The keys, sealed under the member's EUKey.
        grants: Vec<GroupKeyGrant>,
    },

    /// Ask for the current revocation list.
    RevocationsRequest {
        /// The version the caller already has.
        known_version: u64,
    },
    /// The current CA-signed revocation list.
    Revocations(RevocationList),

    /// Usage statistics (5.6.3), signed by the reporting entity; a gateway may forward reports
    /// of its PNEs.
    UsageReport(UsageReport),
    /// The server stored the report (durably) as charging records.
    UsageAck {
        /// How many records were stored.
        accepted: u32,
    },

    /// PN Admin (5.6.9, 3.2): a member asks to be an admin of its PN. Granted at once to a
    /// device of the PN's owner user; another user's device waits for an admin's
    /// [`AuthMessage::PnAdminApprove`]. Answered by [`AuthMessage::PnAdmins`].
    PnAdminRequest {
        /// The PN.
        pn_id: PnId,
    },
    /// An admin approves a pending admin request.
    PnAdminApprove {
        /// The PN.
        pn_id: PnId,
        /// The member whose request is approved.
        entity: PeerId,
    },
    /// An admin changes an Adminee's information in the PN Inventory (3.2 "Adminee").
    PnAdmineeSet {
        /// The PN.
        pn_id: PnId,
        /// The Adminee (a member).
        member: PeerId,
        /// The settings; each `None` leaves that setting as it was.
        settings: AdmineeSettings,
    },
    /// Asks for a PN's admin information (members only).
    PnAdminsRequest {
        /// The PN.
        pn_id: PnId,
    },
    /// A PN's admins, pending admin requests and Adminee settings.
    PnAdmins(PnAdminInfo),
    /// `cpns-auth` to a PN's gateway: the PN's record or its admin information changed at
    /// the server (an admin that is not the gateway expelled a member, or changed an
    /// Adminee). The gateway reconciles its PN Inventory and tells every member.
    PnChanged {
        /// The PN's record.
        info: PnRecordInfo,
        /// Its admin information.
        admin: PnAdminInfo,
    },
    /// Invitations with consent (5.6.9): an entity asks which PNs invited it (or its user)
    /// and wait for its owner's answer. Answered by [`AuthMessage::PnInvitations`].
    PnInvitationsRequest,
    /// The invitations waiting for the asking entity (at most [`MAX_INVITATIONS`]).
    PnInvitations(Vec<PnInvitationInfo>),
    /// `cpns-auth` to an invited entity with a live session: an admin just invited it (or its
    /// user). Answered by Ack; the invitation waits in the node for its owner.
    PnInvitation(PnInvitationInfo),
    /// The invitee's owner declined: `cpns-auth` forgets the invitation (the entity, and its
    /// user's, on that PN's list), so it cannot join on it. Answered by Ack.
    PnInvitationDecline {
        /// The PN.
        pn_id: PnId,
    },
    /// Appendix F: a zone PN's gateway registers a PNE it found in its zone in the zone PN's
    /// inventory (answered by [`AuthMessage::ZoneMembers`]); refused unless the PNE is
    /// enrolled, unrevoked and admitted by the zone PN's membership policy.
    ZoneRegister(super::zone::ZoneRegistration),
    /// Appendix F: the zone gateway removes a PNE that left its zone (answered by
    /// [`AuthMessage::ZoneMembers`]).
    ZoneDeregister {
        /// The zone PN.
        pn_id: PnId,
        /// The PNE.
        entity: PeerId,
    },
    /// The zone PN's zone members as `cpns-auth` now holds them.
    ZoneMembers {
        /// The zone PN.
        pn_id: PnId,
        /// Its members found in the zone.
        members: Vec<super::zone::ZoneMember>,
    },
    /// PN merge (5.6.9): an admin of `pn_id` consents to merging it with `with`. Once an
    /// admin of each PN consented, `cpns-auth` merges them in one durable change: the PN
    /// whose admin consented first stays, the other's members become its members (its key
    /// rotates once), and the other PN is released. Answered by [`AuthMessage::PnMergeAnswer`].
    PnMergeRequest {
        /// The caller's PN.
        pn_id: PnId,
        /// The PN to merge with.
        with: PnId,
    },
    /// The answer to [`AuthMessage::PnMergeRequest`].
    PnMergeAnswer {
        /// `false`: the consent is stored and waits for an admin of the other PN (`pn` is the
        /// caller's PN); `true`: the PNs are one now (`pn` is the merged PN).
        merged: bool,
        /// A PN record, see `merged`.
        pn: PnRecordInfo,
        /// Where the merged PN's gateway listens, as the server last saw it (empty while
        /// pending).
        gateway_addrs: Vec<Multiaddr>,
    },
    /// PN split (5.6.9): an admin of `pn_id` names members that form a new PN with
    /// `gateway` (one of them) as its gateway. `cpns-auth` makes the change in one durable
    /// step: the named members leave `pn_id`, whose key rotates, and become the new PN's
    /// members under a key of their own. Answered by [`AuthMessage::PnSplitAnswer`].
    PnSplitRequest {
        /// The PN.
        pn_id: PnId,
        /// The members that leave it for the new PN (the gateway among them).
        members: Vec<PeerId>,
        /// The new PN's gateway (elected by the caller by the election rule).
        gateway: PeerId,
    },
    /// The answer to [`AuthMessage::PnSplitRequest`]: both PNs' records.
    PnSplitAnswer {
        /// The PN that stays (its key rotated).
        stays: PnRecordInfo,
        /// The new PN.
        new: PnRecordInfo,
    },
    /// A member whose PN lookup led to another PN (its PN was merged away, or it was split
    /// off) asks where that PN's gateway listens. Answered by [`AuthMessage::PnMoved`], or
    /// not found when the member did not move.
    PnMoveLookup {
        /// The PN it was in.
        pn_id: PnId,
    },
    /// `cpns-auth` to a member whose PN was merged into another or that was split off into a
    /// new PN: its PN is `to` now; it joins through that PN's gateway (B.1 18-26, where the
    /// server admits it as a member already). Answered by Ack.
    PnMoved {
        /// The PN it was in.
        from: PnId,
        /// The PN it is in now, and where its gateway listens.
        to: PnInvitationInfo,
    },
}

/// Most invitations one entity is told of at once.
pub const MAX_INVITATIONS: usize = 16;

/// An invitation into a PN, as `cpns-auth` tells the invitee.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnInvitationInfo {
    /// The PN.
    pub pn_id: PnId,
    /// Its owner user.
    pub owner: String,
    /// Its gateway (the device to join through).
    pub gateway: PeerId,
    /// Where the server last saw the gateway listen (at most [`super::MAX_LISTEN_ADDRS`]).
    pub gateway_addrs: Vec<Multiaddr>,
    /// Whether the entity itself was invited (`false`: its user was).
    pub entity: bool,
}

/// Longest Adminee label, in bytes.
pub const MAX_LABEL_LEN: usize = 64;
/// Most service ids an Adminee setting may list.
pub const MAX_SERVICES_SHOWN: usize = 64;
/// Bounds of an Adminee's status policy (seconds).
pub const STATUS_POLICY_SECS: std::ops::RangeInclusive<u32> = 1..=3600;

/// What a PN admin may set for an Adminee (a member), kept by `cpns-auth` and shown in every
/// member's PN Inventory. Every field is optional: `None` means "the device's own setting".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmineeSettings {
    /// The device's label for people (at most [`MAX_LABEL_LEN`] bytes).
    pub label: Option<String>,
    /// Whether the device may be the PN's gateway (`false`: it never stands for election).
    pub may_be_gateway: Option<bool>,
    /// Its mode preference: `auto`, `pne`, `gateway` or `gateway-only`.
    pub mode: Option<String>,
    /// The ids of its services it shows the PN (`Some(vec![])`: none); others stay local.
    pub services_shown: Option<Vec<String>>,
    /// Its heartbeat period to the gateway (5.6.2), seconds.
    pub heartbeat_secs: Option<u32>,
    /// After how long without a heartbeat the gateway marks it Offline, seconds.
    pub offline_after_secs: Option<u32>,
}

impl AdmineeSettings {
    /// The settings of `self` with those `other` sets laid over them.
    pub fn merged(&self, other: &AdmineeSettings) -> AdmineeSettings {
        AdmineeSettings {
            label: other.label.clone().or_else(|| self.label.clone()),
            may_be_gateway: other.may_be_gateway.or(self.may_be_gateway),
            mode: other.mode.clone().or_else(|| self.mode.clone()),
            services_shown: other
                .services_shown
                .clone()
                .or_else(|| self.services_shown.clone()),
            heartbeat_secs: other.heartbeat_secs.or(self.heartbeat_secs),
            offline_after_secs: other.offline_after_secs.or(self.offline_after_secs),
        }
    }

    /// Checks the bounds and the combinations that cannot work; the reason otherwise.
    pub fn check(&self) -> Result<(), String> {
        if let Some(l) = &self.label
            && (l.len() > MAX_LABEL_LEN || l.chars().any(char::is_control))
        {
            return Err(format!(
                "label: at most {MAX_LABEL_LEN} bytes, no control characters"
            ));
        }
        if let Some(m) = &self.mode
            && !["auto", "pne", "gateway", "gateway-only"].contains(&m.as_str())
        {
            return Err(format!(
                "mode: {m:?} is not one of auto, pne, gateway, gateway-only"
            ));
        }
        if self.may_be_gateway == Some(false)
            && matches!(self.mode.as_deref(), Some("gateway" | "gateway-only"))
        {
            return Err("mode: a device that may not be gateway cannot be set to gateway".into());
        }
        if let Some(s) = &self.services_shown
            && (s.len() > MAX_SERVICES_SHOWN
                || s.iter()
                    .any(|id| id.is_empty() || id.len() > super::pn::MAX_SERVICE_ID))
        {
            return Err(format!(
                "services_shown: at most {MAX_SERVICES_SHOWN} ids of 1-{} bytes",
                super::pn::MAX_SERVICE_ID
            ));
        }
        for (name, v) in [
            ("heartbeat_secs", self.heartbeat_secs),
            ("offline_after_secs", self.offline_after_secs),
        ] {
            if let Some(v) = v
                && !STATUS_POLICY_SECS.contains(&v)
            {
                return Err(format!(
                    "{name}: {v} is outside {}..={}",
                    STATUS_POLICY_SECS.start(),
                    STATUS_POLICY_SECS.end()
                ));
            }
        }
        if let (Some(h), Some(o)) = (self.heartbeat_secs, self.offline_after_secs)
            && o <= h
        {
            return Err("offline_after_secs must be longer than heartbeat_secs".into());
        }
        Ok(())
    }

    /// Whether nothing is set.
    pub fn is_empty(&self) -> bool {
        *self == AdmineeSettings::default()
    }
}

/// One Adminee's settings.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AdmineeEntry {
    /// The member.
    pub member: PeerId,
    /// What an admin set for it.
    pub settings: AdmineeSettings,
}

/// A PN's admin information, as `cpns-auth` keeps it (5.6.9 "PN Admin").
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PnAdminInfo {
    /// The PN.
    pub pn_id: PnId,
    /// Its admins: current members that are listed admins or devices of the owner user.
    pub admins: Vec<PeerId>,
    /// Members of another user that asked to be admin and wait for an admin's approval.
    pub pending: Vec<PeerId>,
    /// Adminee settings, one entry per member an admin set something for.
    pub adminees: Vec<AdmineeEntry>,
}

impl PnAdminInfo {
    /// The settings an admin set for `member` (empty when none).
    pub fn settings_of(&self, member: &PeerId) -> AdmineeSettings {
        self.adminees
            .iter()
            .find(|a| a.member == *member)
            .map(|a| a.settings.clone())
            .unwrap_or_default()
    }
}

impl AuthMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            AuthMessage::EnrolRequest(_) => "EnrolRequest",
            AuthMessage::EnrolResponse(_) => "EnrolResponse",
            AuthMessage::ConnectionSetupRequest { .. } => "ConnectionSetupRequest",
            AuthMessage::AuthChallenge { .. } => "AuthenticationAndAuthorizationRequest",
            AuthMessage::AuthResponse { .. } => "AuthenticationAndAuthorizationResponse",
            AuthMessage::ConnectionSetupConfirmation(_) => "ConnectionSetupConfirmation",
            AuthMessage::CapabilitiesUpdate(_) => "DeviceCapabilitiesUpdate",
            AuthMessage::CapabilitiesConfirmation { .. } => "DeviceCapabilitiesConfirmation",
            AuthMessage::StatusUpdateRequest => "StatusManagementUpdateRequest",
            AuthMessage::StatusResponse { .. } => "StatusManagementResponse",
            AuthMessage::PnInventoryCreated { .. } => "PnInventoryCreated",
            AuthMessage::MembershipRequest { .. } => "PnMembershipRequest",
            AuthMessage::MembershipListTransfer { .. } => "PnMembershipListOrPolicyTransfer",
            AuthMessage::PnKeyRequest { .. } => "PnKeyRequest",
            AuthMessage::PnKeyResponse { .. } => "PnKeyResponse",
            AuthMessage::PnInvite { .. } => "PnInvite",
            AuthMessage::PnExpel { .. } => "PnExpel",
            AuthMessage::PnDeregister { .. } => "PnDeregister",
            AuthMessage::PnRelease { .. } => "PnRelease",
            AuthMessage::PnKeyPull { .. } => "PnKeyPull",
            AuthMessage::PnInfoRequest { .. } => "PnInfoRequest",
            AuthMessage::PnInfo(_) => "PnInfo",
            AuthMessage::RenewCredential => "CredentialRenewalRequest",
            AuthMessage::CredentialRenewed(_) => "CredentialRenewed",
            AuthMessage::GroupCreate { .. } => "GroupCreate",
            AuthMessage::GroupDelete { .. } => "GroupDelete",
            AuthMessage::GroupInvite { .. } => "GroupInvite",
            AuthMessage::GroupExpel { .. } => "GroupExpel",
            AuthMessage::GroupJoin { .. } => "GroupJoin",
            AuthMessage::GroupLeave { .. } => "GroupLeave",
            AuthMessage::GroupInfoRequest { .. } => "GroupInfoRequest",
            AuthMessage::GroupInfo(_) => "GroupInfo",
            AuthMessage::GroupList => "GroupList",
            AuthMessage::Groups(_) => "Groups",
            AuthMessage::KeysPull => "KeysPull",
            AuthMessage::Keys(_) => "Keys",
            AuthMessage::KeyPush { .. } => "KeyPush",
            AuthMessage::RevocationsRequest { .. } => "RevocationsRequest",
            AuthMessage::Revocations(_) => "Revocations",
            AuthMessage::UsageReport(_) => "UsageReport",
            AuthMessage::UsageAck { .. } => "UsageAck",
            AuthMessage::PnAdminRequest { .. } => "PnAdminRequest",
            AuthMessage::PnAdminApprove { .. } => "PnAdminApproval",
            AuthMessage::PnAdmineeSet { .. } => "PnAdmineeChange",
            AuthMessage::PnAdminsRequest { .. } => "PnAdminsRequest",
            AuthMessage::PnAdmins(_) => "PnAdmins",
            AuthMessage::PnChanged { .. } => "PnChanged",
            AuthMessage::PnInvitationsRequest => "PnInvitationsRequest",
            AuthMessage::PnInvitations(_) => "PnInvitations",
            AuthMessage::PnInvitation(_) => "PnInvitation",
            AuthMessage::PnInvitationDecline { .. } => "PnInvitationDecline",
            AuthMessage::ZoneRegister(_) => "ZonePnRegistration",
            AuthMessage::ZoneDeregister { .. } => "ZonePnDeregistration",
            AuthMessage::ZoneMembers { .. } => "ZonePnMembers",
            AuthMessage::PnMergeRequest { .. } => "PnMergeConsent",
            AuthMessage::PnMergeAnswer { .. } => "PnMergeAnswer",
            AuthMessage::PnSplitRequest { .. } => "PnSplitRequest",
            AuthMessage::PnSplitAnswer { .. } => "PnSplitAnswer",
            AuthMessage::PnMoveLookup { .. } => "PnMoveLookup",
            AuthMessage::PnMoved { .. } => "PnMovedToAnotherPn",
        }
    }
}

/// An enrolment request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolRequest {
    /// The code's id (public part), to find it.
    pub code_id: String,
    /// The code's secret.
    pub secret: [u8; 32],
    /// The device's name, for people (`laptop`, `living-room-tv`).
    pub device: String,
}

/// An enrolment answer.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnrolResponse {
    /// The entity credential for the node's PeerId.
    pub credential: EntityCredential,
    /// The EUKey sealed to the node's identity key (AAD: the node's PeerId bytes).
    pub sealed_eukey: SealedBox,
    /// The CA public key (the node checks it against the fingerprint in the code).
    pub ca: PublicKey,
    /// The current revocation list.
    pub revocations: RevocationList,
}

/// What the server says at B.1 step 11.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SessionInfo {
    /// The session lasts until then; the node authenticates again afterwards.
    pub expires: UnixTime,
    /// The server's clock, for the node's information.
    pub server_time: UnixTime,
    /// The current revocation list.
    pub revocations: RevocationList,
    /// The allowed modes the server authorised.
    pub modes: Modes,
}

/// Who a PN admin invites.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Invitee {
    /// Every device of a user.
    User(String),
    /// One entity.
    Entity(PeerId),
}

/// A PN's membership policy (5.6.9), as kept by `cpns-auth`.
///
/// Lookup order (B.1 step 20): an entity in `expelled` is refused; otherwise devices of the
/// owner user, of an invited user, and invited entities are admitted; everyone else is refused.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MembershipPolicy {
    /// Users whose devices are admitted besides the owner's.
    pub invited_users: Vec<String>,
    /// Entities admitted besides the owner's devices.
    pub invited_entities: Vec<PeerId>,
    /// Entities an admin expelled: refused even if their user is the owner or invited, until
    /// an admin invites the entity again ([`Invitee::Entity`]). Without this list an expelled
    /// device of the owner would be re-admitted by the default policy at its next request.
    pub expelled: Vec<PeerId>,
}

/// A PN's record as `cpns-auth` keeps it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PnRecordInfo {
    /// The PN.
    pub pn_id: PnId,
    /// The owner user (the gateway's user at creation).
    pub owner: String,
    /// The current gateway.
    pub gateway: PeerId,
    /// Members, the gateway included.
    pub members: Vec<PeerId>,
    /// Admins (the gateway and the owner's devices at first).
    pub admins: Vec<PeerId>,
    /// The membership policy.
    pub policy: MembershipPolicy,
    /// The current PN key epoch.
    pub epoch: u64,
}

/// Compatibility alias: the PN record is also what a member learns of its PN.
pub type PnInfo = PnRecordInfo;

/// The answer to a membership request (B.1 step 20's outcome).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MembershipDecision {
    /// Admitted.
    Admitted,
    /// Refused, with the reason.
    Refused(String),
}

/// A Service Group's record.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupInfo {
    /// The group id (`sg-…`).
    pub group: GroupId,
    /// Its name.
    pub name: String,
    /// Who created it (its first admin).
    pub owner: PeerId,
    /// Members.
    pub members: Vec<PeerId>,
    /// Invited entities that have not joined yet.
    pub invited: Vec<PeerId>,
    /// The current key epoch.
    pub epoch: u64,
}

/// A key grant for one named member.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberGrant {
    /// The member.
    pub member: PeerId,
    /// Its grant.
    pub grant: GroupKeyGrant,
}

/// What an enrolment code carries (`cpns-auth enrol create`): what a node needs to reach and
/// trust the server, and the one-time secret. Its text form ([`EnrolmentCode::to_text`],
/// [`EnrolmentCode::from_text`]) is `cpns1-` followed by the base32 (RFC 4648, no padding,
/// lowercase) of its [`crate::codec::encode`] encoding: one word, safe to paste in a shell;
/// uppercased (which [`EnrolmentCode::from_text`] accepts) it fits QR's compact alphanumeric
/// mode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnrolmentCode {
    /// The server's PeerId.
    pub server: PeerId,
    /// Addresses where the server listens.
    pub addrs: Vec<libp2p::Multiaddr>,
    /// [`PublicKey::fingerprint`] of the CA key the node must pin.
    pub ca_fingerprint: String,
    /// The code's id (public).
    pub code_id: String,
    /// The code's secret.
    pub secret: [u8; 32],
}

impl EnrolmentCode {
    /// The prefix of the text form; the digit is the format version.
    pub const PREFIX: &'static str = "cpns1-";

    /// Longest text accepted by [`EnrolmentCode::from_text`], in characters: a code with a
    /// dozen addresses is well under 1,000, so anything longer is not a code.
    pub const MAX_TEXT_LEN: usize = 4096;

    /// The text form: `cpns1-` + lowercase unpadded base32 of the encoding.
    pub fn to_text(&self) -> String {
        // Encoding a struct of a PeerId, addresses and short strings cannot hit the codec's
        // limit; an empty body would fail `from_text`, never silently succeed.
        let bytes = crate::codec::encode(self).unwrap_or_default();
        let mut text = String::with_capacity(Self::PREFIX.len() + bytes.len() * 8 / 5 + 1);
        text.push_str(Self::PREFIX);
        text.push_str(
            &data_encoding::BASE32_NOPAD
                .encode(&bytes)
                .to_ascii_lowercase(),
        );
        text
    }

    /// Parses the text form. Surrounding whitespace is ignored and the base32 part is
    /// case-insensitive (QR scanners and people uppercase things). Never panics; the input is
    /// size-limited before decoding.
    pub fn from_text(text: &str) -> Result<Self, crate::codec::CodecError> {
        use crate::codec::CodecError;
        let text = text.trim();
        if text.len() > Self::MAX_TEXT_LEN {
            return Err(CodecError::Oversize {
                len: text.len(),
                max: Self::MAX_TEXT_LEN,
            });
        }
        let body = text
            .get(..Self::PREFIX.len())
            .filter(|p| p.eq_ignore_ascii_case(Self::PREFIX))
            .and_then(|_| text.get(Self::PREFIX.len()..))
            .ok_or_else(|| {
                CodecError::Garbage(format!("an enrolment code starts with {}", Self::PREFIX))
            })?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|e| CodecError::Garbage(format!("enrolment code is not base32: {e}")))?;
        crate::codec::decode(&bytes, Self::MAX_TEXT_LEN)
    }
}

/// A group (or PN) key for one member, sealed under that member's EUKey with AAD
/// [`crate::transcript::group_key_aad`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GroupKeyGrant {
    /// The group (`pn-…` for a PN key, `sg-…` for a Service Group).
    pub group: GroupId,
    /// The epoch.
    pub epoch: u64,
    /// `GroupKey::encode_secret` sealed under the member's EUKey.
    pub sealed: Sealed,
}

/// One usage record (5.6.3): what was used, how long, how much, on what device state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageRecord {
    /// The service id.
    pub service_id: String,
    /// The service name.
    pub service_name: String,
    /// The offering entity.
    pub offerer: PeerId,
    /// The PN the consumer was in.
    pub pn_id: Option<PnId>,
    /// When use started.
    pub started: UnixTime,
    /// How long, in milliseconds.
    pub duration_ms: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// The consumer's capabilities during use (mode, power, battery, memory).
    pub capabilities: Capabilities,
    /// The consumer's status during use.
    pub status: Status,
    /// 5.6.3 "the device capabilities and status during the service usage": what the
    /// consumer sampled at the start, periodically and at the end, summarised.
    pub samples: UsageSamples,
    /// The variant the offerer chose for the consumer's capabilities, if the service has
    /// variants.
    pub variant: Option<String>,
    /// How the use ended: `completed`, `stopped by the consumer`, `stopped by the offerer`.
    pub ended: String,
}

/// The consumer's capabilities and status sampled during one service use (5.6.3), kept as a
/// summary so that a long use costs no more than a short one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageSamples {
    /// Samples taken (the start and the end included).
    pub count: u32,
    /// When the first and the last were taken (Unix seconds).
    pub first: UnixTime,
    /// See `first`.
    pub last: UnixTime,
    /// Lowest and highest battery charge seen (percent), if the device has a battery.
    pub battery_min: Option<u8>,
    /// See `battery_min`.
    pub battery_max: Option<u8>,
    /// Whether the device ran on battery at some sample.
    pub on_battery: bool,
    /// Lowest and highest free memory seen, in bytes.
    pub free_memory_min: u64,
    /// See `free_memory_min`.
    pub free_memory_max: u64,
    /// The statuses seen, in order of first appearance.
    pub statuses: Vec<Status>,
    /// Whether the device reached a WAN at every sample.
    pub wan: bool,
}

/// A usage report signed by the reporting entity.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct UsageReport {
    /// The reporting entity.
    pub entity: PeerId,
    /// Its credential (the server checks it and that it is not revoked).
    pub credential: EntityCredential,
    /// A per-entity sequence number, so that a replayed report is stored once.
    pub sequence: u64,
    /// The records.
    pub records: Vec<UsageRecord>,
    /// Identity signature over [`crate::transcript::usage_report`].
    pub signature: Signature,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn code() -> EnrolmentCode {
        EnrolmentCode {
            server: cpns_keys::Identity::from_secret_bytes([3; 32]).peer_id(),
            addrs: vec!["/ip4/127.0.0.1/tcp/4100".parse().unwrap()],
            ca_fingerprint: "00112233445566778899aabbccddeeff".into(),
            code_id: "0123456789abcdef".into(),
            secret: [7; 32],
        }
    }

    #[test]
    fn enrolment_code_text_round_trip() {
        let c = code();
        let text = c.to_text();
        assert!(text.starts_with("cpns1-"));
        assert_eq!(text, text.to_ascii_lowercase());
        assert!(!text.contains('='));
        assert_eq!(EnrolmentCode::from_text(&text).unwrap(), c);
        // Whitespace around and an uppercased copy (QR scanners) parse too.
        assert_eq!(EnrolmentCode::from_text(&format!("  {text}\n")).unwrap(), c);
        assert_eq!(
            EnrolmentCode::from_text(&text.to_ascii_uppercase()).unwrap(),
            c
        );
    }

    #[test]
    fn enrolment_code_garbage_is_an_error() {
        let text = code().to_text();
        for bad in [
            "",
            "cpns1-",
            "cpns2-abc",
            "hello",
            "cpns1-!!!!",
            &text[..text.len() - 3],
            &format!("{text}aa"),
        ] {
            assert!(EnrolmentCode::from_text(bad).is_err(), "{bad:?} parsed");
        }
        let long = format!("cpns1-{}", "a".repeat(5000));
        assert!(matches!(
            EnrolmentCode::from_text(&long),
            Err(crate::codec::CodecError::Oversize { .. })
        ));
        // Multi-byte characters at the prefix boundary must not panic.
        assert!(EnrolmentCode::from_text("cpns\u{e9}-abc").is_err());
    }
}
