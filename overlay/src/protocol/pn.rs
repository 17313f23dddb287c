//! PN establishment between nodes (B.1 steps 1-7, 18, 24-26) and PN management afterwards
//! (5.6.5, 5.6.9).

use cpns_keys::{EntityCredential, GroupSealed, RevocationList, Sealed, Signature, UnixTime};
use libp2p::{Multiaddr, PeerId};
use serde::{Deserialize, Serialize};

use super::{Capabilities, NodeMode, PnId, Status};

/// Messages between nodes about the PN itself.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // a message is encoded or decoded once
pub enum PnMessage {
    /// B.1 steps 1-2: Entity Registration and Discovery, sent both ways (the answer to step 1
    /// is step 2). Carries the sender's mode and credential; a peer without a valid,
    /// unrevoked credential gets no further.
    EntityRegistration(EntityRegistration),
    /// B.1 steps 3-4: Device Capabilities Exchange (the answer to step 3 is step 4).
    CapabilitiesExchange(Capabilities),
    /// B.1 step 7 (the new gateway updates its peer) and any later material change.
    CapabilitiesUpdate(Capabilities),
    /// B.1 step 18: a PNE asks the gateway to set up its connection to the PN. Answered by
    /// step 26 ([`PnMessage::ConnectionSetupConfirmation`]) once steps 19-25 are done.
    ConnectionSetupRequest(ConnectionSetup),
    /// B.1 step 24: PN Membership with group key, gateway to PNE. Answered by step 25.
    MembershipWithGroupKey(MembershipGrant),
    /// B.1 step 25: the PNE confirms it holds the PN key of this epoch.
    MembershipConfirmation {
        /// The PN.
        pn_id: PnId,
        /// The epoch the PNE now holds.
        epoch: u64,
    },
    /// B.1 step 26: the gateway confirms the connection setup.
    ConnectionSetupConfirmation(PnInventorySummary),
    /// The gateway tells members about a membership change or a new key epoch (5.6.9).
    MembershipUpdate(MembershipGrant),
    /// A member leaves the PN (G.1 step 9); the gateway de-registers it with the server.
    Leave {
        /// The PN being left.
        pn_id: PnId,
    },
    /// Asks a gateway for the PN Inventory of its PN (5.6.9 "PN Inventory of local PN or remote
    /// PN").
    InventoryRequest {
        /// The PN asked about.
        pn_id: PnId,
    },
    /// The answer to [`PnMessage::InventoryRequest`].
    InventoryResponse(PnInventorySummary),
    /// A newer CA-signed revocation list, gossiped to PN members.
    Revocations(RevocationList),
    /// A simple round trip to measure latency (`cpns ping`).
    Ping {
        /// Echoed back in [`PnMessage::Pong`].
        nonce: u64,
    },
    /// The answer to [`PnMessage::Ping`].
    Pong {
        /// The ping's nonce.
        nonce: u64,
    },
    /// G.1 step 8: a PNE's usage report (signed by the PNE), for its gateway to forward to
    /// `cpns-auth`.
    UsageReport(super::UsageReport),
    /// The PN's gateway switched (5.6.9 "switch current PN GW to other PN GW"): the sender is
    /// now the gateway of record at `cpns-auth`, which each receiver checks before it re-joins
    /// the PN through the sender.
    GatewayChanged {
        /// The PN.
        pn_id: PnId,
        /// Where the new gateway listens.
        addrs: Vec<Multiaddr>,
    },
    /// A member tells its gateway which services it offers the PN (their ids), so that the
    /// PN Inventory lists them (5.6.9 "PN Inventory"). Sent after each publish or unpublish.
    ServicesUpdate {
        /// The PN.
        pn_id: PnId,
        /// Ids of the member's services (at most [`MAX_MEMBER_SERVICES`]).
        services: Vec<String>,
    },
    /// The gateway's member list changed without a new key epoch (a member's candidacy or
    /// information changed, a member was expelled by another admin): every member's view.
    MembersUpdate {
        /// The PN.
        pn_id: PnId,
        /// The members.
        members: Vec<MemberInfo>,
        /// Entities the PN expelled recently.
        expelled: Vec<PeerId>,
    },
    /// The gateway hands its role to this member (5.6.9 "switch current PN GW to other PN
    /// GW"): the receiver takes the role over (B.1 6, 8-17 with the take-over claim) and
    /// answers once it is the gateway of record.
    HandOff {
        /// The PN.
        pn_id: PnId,
    },
}

/// Most services one member may list in the PN Inventory.
pub const MAX_MEMBER_SERVICES: usize = 256;
/// Longest service id listed in the PN Inventory.
pub const MAX_SERVICE_ID: usize = 128;
/// Most listen addresses kept for one entity (a registration, a member).
pub const MAX_LISTEN_ADDRS: usize = 8;

impl PnMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            PnMessage::EntityRegistration(_) => "EntityRegistrationAndDiscovery",
            PnMessage::CapabilitiesExchange(_) => "DeviceCapabilitiesExchange",
            PnMessage::CapabilitiesUpdate(_) => "DeviceCapabilitiesUpdate",
            PnMessage::ConnectionSetupRequest(_) => "ConnectionSetupRequest",
            PnMessage::MembershipWithGroupKey(_) => "PnMembershipWithGroupKey",
            PnMessage::MembershipConfirmation { .. } => "PnMembershipWithGroupKeyConfirmation",
            PnMessage::ConnectionSetupConfirmation(_) => "ConnectionSetupConfirmation",
            PnMessage::MembershipUpdate(_) => "PnMembershipUpdate",
            PnMessage::Leave { .. } => "PnLeave",
            PnMessage::InventoryRequest { .. } => "PnInventoryRequest",
            PnMessage::InventoryResponse(_) => "PnInventoryResponse",
            PnMessage::Revocations(_) => "RevocationList",
            PnMessage::Ping { .. } => "Ping",
            PnMessage::Pong { .. } => "Pong",
            PnMessage::UsageReport(_) => "UsageReport",
            PnMessage::GatewayChanged { .. } => "PnGatewayChanged",
            PnMessage::ServicesUpdate { .. } => "PnServicesUpdate",
            PnMessage::MembersUpdate { .. } => "PnMembersUpdate",
            PnMessage::HandOff { .. } => "PnGatewayHandOff",
        }
    }
}

/// Entity Registration and Discovery (B.1 steps 1-2, spec 5.6.5).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EntityRegistration {
    /// The sender's current mode.
    pub mode: NodeMode,
    /// The sender's entity credential, signed by `cpns-auth`.
    pub credential: EntityCredential,
    /// The PN the sender belongs to, if any.
    pub pn_id: Option<PnId>,
    /// The sender's gateway, if it has one (itself when it is the gateway).
    pub gateway: Option<PeerId>,
    /// Addresses where the sender listens.
    pub listen_addrs: Vec<Multiaddr>,
    /// The version of the newest revocation list the sender holds, so that the side with the
    /// newer list shares it.
    pub revocation_version: u64,
    /// Where the sender's gateway listens (when the sender is a PNE of a PN), so that a new
    /// device pairing with any member can reach the PN's gateway.
    pub gateway_addrs: Vec<Multiaddr>,
}

/// A PNE's connection setup request (B.1 step 18).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ConnectionSetup {
    /// The PNE's credential.
    pub credential: EntityCredential,
    /// The PN the PNE wants to join (the one the gateway announced at step 2).
    pub pn_id: PnId,
    /// When the PNE made this request.
    pub time: UnixTime,
    /// A fresh random value.
    pub nonce: [u8; 16],
    /// The PNE's EUKey MAC over the membership-request transcript
    /// ([`crate::transcript::membership_request`]), so that `cpns-auth` knows the PNE itself
    /// asked to join this PN through this gateway; the gateway cannot forge it.
    pub eukey_mac: [u8; 32],
    /// The PNE's identity signature over the same transcript.
    pub signature: Signature,
    /// The PNE's capabilities, for the gateway's PN Inventory.
    pub capabilities: Capabilities,
}

/// A PN membership with the group key (B.1 step 24 and later updates).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MembershipGrant {
    /// The PN.
    pub pn_id: PnId,
    /// The PN's gateway.
    pub gateway: PeerId,
    /// The key epoch.
    pub epoch: u64,
    /// The PN group key, sealed by `cpns-auth` under the receiving member's EUKey; only that
    /// member can open it (the gateway forwards it without being able to read it).
    pub sealed_key: Sealed,
    /// The members as the server admitted them.
    pub members: Vec<MemberInfo>,
    /// Entities the PN expelled recently (at most [`MAX_EXPELLED`]): members refuse them
    /// everywhere from the moment this reaches them, not only the gateway.
    pub expelled: Vec<PeerId>,
}

/// Most expelled entities a membership update carries.
pub const MAX_EXPELLED: usize = 256;

/// A PN member as seen in membership lists and the PN Inventory.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberInfo {
    /// The member's PeerId.
    pub peer_id: PeerId,
    /// Its user.
    pub user: String,
    /// Its device name.
    pub device: String,
    /// Its mode.
    pub mode: NodeMode,
    /// Its status.
    pub status: Status,
    /// Addresses where it listens, as its gateway knows them (at most [`MAX_LISTEN_ADDRS`]).
    pub listen_addrs: Vec<Multiaddr>,
    /// The serial of its entity credential, so that every member can refuse it once the
    /// credential is revoked, also members that never saw the credential itself.
    pub serial: u64,
    /// When its credential expires (Unix seconds): admissions end then.
    pub expires: UnixTime,
    /// What a failover ranks it by (the election's rule), as the gateway last knew it.
    pub candidacy: Option<super::Candidacy>,
}

/// What the PN Inventory holds of a member beyond [`MemberInfo`] (5.6.9): its current
/// capabilities, the services it offers, and when it was last heard from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct MemberDetail {
    /// The member.
    pub peer_id: PeerId,
    /// Its current Device Capabilities (refreshed on every capabilities update, 5.6.1).
    pub capabilities: Option<Capabilities>,
    /// Ids of the services it offers the PN.
    pub services: Vec<String>,
    /// When the gateway last heard from it (Unix seconds; 0: not since the gateway started).
    pub last_seen: UnixTime,
}

/// A summary of a PN's Inventory, as the gateway shares it (B.1 step 26, 5.6.9 inventory
/// requests, and signed into the PN's DHT record).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PnInventorySummary {
    /// The PN.
    pub pn_id: PnId,
    /// Its owner user.
    pub owner: String,
    /// Its gateway.
    pub gateway: PeerId,
    /// Current key epoch.
    pub epoch: u64,
    /// Members and their status.
    pub members: Vec<MemberInfo>,
    /// Ids of the services the members offer.
    pub services: Vec<String>,
    /// When this summary was made.
    pub updated: UnixTime,
    /// Per member: capabilities, services, last heard from. Given to members that ask for
    /// the inventory; empty in step 26 and in the DHT summary record.
    pub details: Vec<MemberDetail>,
    /// The PN's admins as the gateway knows them.
    pub admins: Vec<PeerId>,
}

/// Content sealed under the PN key, carried between members (used by `cpns content send`).
pub type PnSealed = GroupSealed;
