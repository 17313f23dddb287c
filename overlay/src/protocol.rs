//! The CPNS wire protocol: a versioned [`Envelope`] around a [`Message`].
//!
//! Every CPNS request and response on `/cpns/1.0.0` (node to node) and `/cpns/auth/1.0.0`
//! (node to `cpns-auth`) is one envelope. The envelope carries a message id that the response
//! echoes, so that a reply can always be matched with its request, also in traces and logs.
//!
//! [`Message`] is split by functional module of the spec (section 5.6): each area has its own
//! enum in its own file, so that adding a message to one area touches one file. New variants are
//! only ever appended at the end of an enum: the codec encodes the variant index, so appending
//! keeps older peers able to decode what they know. A change that is not an append bumps
//! [`WIRE_VERSION`].

mod auth;
mod caps;
mod delivery;
mod directory;
mod group;
mod pn;
mod proxy;
mod status;
mod zone;

use serde::{Deserialize, Serialize};

pub use auth::{
    AdmineeEntry, AdmineeSettings, AuthMessage, EnrolRequest, EnrolResponse, EnrolmentCode,
    GroupInfo, GroupKeyGrant, Invitee, MAX_INVITATIONS, MAX_LABEL_LEN, MAX_SERVICES_SHOWN,
    MemberGrant, MembershipDecision, MembershipPolicy, PnAdminInfo, PnInfo, PnInvitationInfo,
    PnRecordInfo, STATUS_POLICY_SECS, SessionInfo, UsageRecord, UsageReport, UsageSamples,
};
pub use caps::{
    Application, Candidacy, Capabilities, DynamicCapabilities, GatewayPreference, NetworkInterface,
    NetworkKind, NodeMode, PowerSource, Screen, StaticCapabilities,
};
pub use delivery::{
    AggregatedFeed, DeliveryMessage, DeliveryMode, Distribution, FeedPart, InvokeAnswer,
    InvokeDecision, MAX_FEED_COMMON, MAX_FEED_NAME, MAX_FEED_PART, MAX_FEED_PARTS,
    MAX_INVOKE_SERVICES, SessionHandOver,
};
pub use directory::DirectoryMessage;
pub use group::GroupMessage;
pub use pn::{
    ConnectionSetup, EntityRegistration, MAX_EXPELLED, MAX_LISTEN_ADDRS, MAX_MEMBER_SERVICES,
    MAX_SERVICE_ID, MemberDetail, MemberInfo, MembershipGrant, PnInventorySummary, PnMessage,
    PnSealed,
};
pub use proxy::{MAX_PLAY_ID, MAX_PROXIED, ProxiedPne, ProxyMessage};
pub use status::{Status, StatusMessage, StatusPolicy};
pub use zone::{
    MAX_ZONE_DATAGRAM, MAX_ZONE_KEYWORDS, MAX_ZONE_MEMBERS, MAX_ZONE_NAME, MAX_ZONE_SERVICES,
    MAX_ZONE_TEXT, ZoneAnswer, ZoneMember, ZoneMessage, ZoneRegistration, ZoneSearch, ZoneService,
};

/// The version of the envelope format, written in front of every frame.
///
/// A peer that receives another version answers nothing and closes the stream: the codec
/// reports [`crate::CodecError::UnknownVersion`].
pub const WIRE_VERSION: u16 = 3;

/// A message id, unique per sender for the sender's lifetime (random start, then increasing).
pub type MessageId = u64;

/// Identifies a Personal Network. Assigned by `cpns-auth` when the PN Inventory is created
/// (B.1 step 17); printed as `pn-` followed by 16 hex digits.
pub type PnId = String;

/// One CPNS protocol message with its id.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Envelope {
    /// The request's id; a response carries the id of the request it answers.
    pub id: MessageId,
    /// The message itself.
    pub body: Message,
}

impl Envelope {
    /// Wraps a message.
    pub fn new(id: MessageId, body: Message) -> Self {
        Self { id, body }
    }
}

/// Every CPNS message, grouped by the spec's functional modules.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Message {
    /// CPNS Entity Discovery and PN Registration, Device Capabilities and PN Management
    /// between nodes: the PN establishment flow (B.1 steps 1-7, 18, 24-26) and what follows it.
    Pn(PnMessage),
    /// Between a node and `cpns-auth`: enrolment, authentication/authorisation (B.1 steps
    /// 8-11), capabilities and status towards the server (12-17), membership and keys (19-23),
    /// Service Groups, revocation, usage reports.
    Auth(AuthMessage),
    /// Status Management (5.6.2) between nodes.
    Status(StatusMessage),
    /// Service Publication & Discovery (5.6.4) between nodes: advertisements, lookups.
    Directory(DirectoryMessage),
    /// Service/Content Delivery control (5.6.7): invoke, start, stop.
    Delivery(DeliveryMessage),
    /// Service Group Management (5.6.8) between nodes (key forwarding by the gateway).
    Group(GroupMessage),
    /// A generic acknowledgement.
    Ack,
    /// A refusal or failure, answering any request.
    Error(ErrorReply),
    /// Zone-based service (Appendix F): the zone gateway's requests to a PNE.
    Zone(ZoneMessage),
    /// The Non-CPNS proxy (5.6.10): a member's requests to its gateway's proxy.
    Proxy(ProxyMessage),
}

impl Message {
    /// Whether a peer that has not yet presented a valid credential may send this message.
    ///
    /// Only Entity Registration and Discovery (B.1 steps 1-2), directory lookups and
    /// revocation lists (CA-signed, so they authenticate themselves) are open: everything else
    /// on `/cpns/1.0.0` needs a registered peer, which is how a DHT neighbour from another
    /// household is kept out of this PN. The node's authorisation table
    /// (`cpns_node`'s `authz`) has the same not-enrolled column, checked by a test.
    pub fn is_open(&self) -> bool {
        matches!(
            self,
            Message::Pn(PnMessage::EntityRegistration(_))
                | Message::Pn(PnMessage::Revocations(_))
                // Answers are signed (and, for PN and Service Group services, sealed) records
                // that anyone may read from the DHT anyway: a discovery by another household
                // must not need a registration first.
                | Message::Directory(DirectoryMessage::Lookup { .. })
                // A zone gateway meets PNEs it never registered with (Appendix F: "without
                // receiving the request from PNE"): its first request carries its
                // credential, and the PNE's zone module checks every later one against it.
                | Message::Zone(
                    ZoneMessage::Discover { .. }
                        | ZoneMessage::Check { .. }
                        | ZoneMessage::Push { .. }
                )
        )
    }

    /// A short, stable name of the message, used in traces, logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Message::Pn(m) => m.name(),
            Message::Auth(m) => m.name(),
            Message::Status(m) => m.name(),
            Message::Directory(m) => m.name(),
            Message::Delivery(m) => m.name(),
            Message::Group(m) => m.name(),
            Message::Zone(m) => m.name(),
            Message::Proxy(m) => m.name(),
            Message::Ack => "Ack",
            Message::Error(_) => "Error",
        }
    }

    /// Builds an error reply.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Message::Error(ErrorReply {
            code,
            message: message.into(),
        })
    }
}

/// A refusal or failure, with a stable code that programs can match and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReply {
    /// What went wrong, stable across versions.
    pub code: ErrorCode,
    /// Human-readable detail.
    pub message: String,
}

impl std::fmt::Display for ErrorReply {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.message)
    }
}

/// Stable error codes carried in [`ErrorReply`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ErrorCode {
    /// The request could not be decoded or is not valid in this state.
    BadRequest,
    /// The sender has not registered (B.1 steps 1-2) or its credential is not valid.
    NotRegistered,
    /// The sender is not authenticated with the server (B.1 steps 8-11).
    NotAuthenticated,
    /// The sender's credential has been revoked.
    Revoked,
    /// The sender's credential has expired.
    Expired,
    /// The sender is authenticated but not allowed to do this.
    Forbidden,
    /// The thing named does not exist.
    NotFound,
    /// The thing already exists.
    Conflict,
    /// An authentication answer failed (bad MAC or signature).
    BadProof,
    /// An authentication answer reused a nonce.
    Replay,
    /// An authentication answer or code came too late.
    ChallengeExpired,
    /// Too many requests; try again later.
    RateLimited,
    /// The receiver is overloaded; try again later.
    Busy,
    /// The request is not supported by this receiver.
    Unsupported,
    /// The receiver failed internally.
    Internal,
    /// Membership refused by policy (B.1 step 20).
    MembershipRefused,
    /// The consumer's capabilities do not meet the service's requirements (G.1 step 6).
    CapabilitiesRefused,
}

impl ErrorCode {
    /// The code as a `snake_case` string, as used in JSON and logs.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::BadRequest => "bad_request",
            ErrorCode::NotRegistered => "not_registered",
            ErrorCode::NotAuthenticated => "not_authenticated",
            ErrorCode::Revoked => "revoked",
            ErrorCode::Expired => "expired",
            ErrorCode::Forbidden => "forbidden",
            ErrorCode::NotFound => "not_found",
            ErrorCode::Conflict => "conflict",
            ErrorCode::BadProof => "bad_proof",
            ErrorCode::Replay => "replay",
            ErrorCode::ChallengeExpired => "challenge_expired",
            ErrorCode::RateLimited => "rate_limited",
            ErrorCode::Busy => "busy",
            ErrorCode::Unsupported => "unsupported",
            ErrorCode::Internal => "internal",
            ErrorCode::MembershipRefused => "membership_refused",
            ErrorCode::CapabilitiesRefused => "capabilities_refused",
        }
    }
}
