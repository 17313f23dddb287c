//! The one authorisation rule of the node: every kind of CPNS request it accepts, and the
//! sender classes that may send it. The router checks it before any handler runs; a refusal
//! is a typed error answer, counted in `/metrics` (`cpns_node_requests_refused_total`).
//!
//! Sender classes, from what the node knows of the sender at that moment:
//!
//! | class | who |
//! | --- | --- |
//! | `not-enrolled` | no valid credential known (never registered, or forgotten) |
//! | `enrolled` | registered (B.1 steps 1-2) with a valid credential, no shared PN |
//! | `member` | a member of this node's PN (from the gateway's member list) |
//! | `gateway` | this node's PN gateway |
//! | `server` | the pinned `cpns-auth`, on `/cpns/auth/1.0.0` |
//!
//! A sender whose credential is revoked or expired, or whom this node's PN expelled, is
//! refused everything (`revoked`, `expired`, `forbidden`) from the moment the node learns it.
//! The table itself is [`TABLE`]; docs/ARCHITECTURE.md shows it, and
//! `tests/authz_table.rs` sends every kind from every class to a real node.

use std::fmt;

use cpns_overlay::{
    AuthMessage, DeliveryMessage, DirectoryMessage, ErrorCode, GroupMessage, Message, PnMessage,
    Protocol, ProxyMessage, StatusMessage, ZoneMessage,
};
use libp2p::PeerId;

pub use crate::pn::SenderClass;
use crate::pn::View;

macro_rules! kinds {
    ($($(#[$doc:meta])* $k:ident),* $(,)?) => {
        /// Every kind of request a node can receive (answers sent as requests included: they
        /// are refused).
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum RequestKind { $($(#[$doc])* $k),* }
        impl RequestKind {
            /// Every kind, in table order.
            pub const ALL: &'static [RequestKind] = &[$(RequestKind::$k),*];
        }
    };
}

kinds! {
    /// B.1 steps 1-2.
    EntityRegistration,
    /// B.1 steps 3-4.
    CapabilitiesExchange,
    /// B.1 step 7 and later capability changes (5.6.1).
    CapabilitiesUpdate,
    /// B.1 step 18.
    ConnectionSetupRequest,
    /// B.1 step 24.
    MembershipWithGroupKey,
    /// A new epoch and member list from the gateway.
    MembershipUpdate,
    /// G.1 step 9 (member to gateway), or the PN released (gateway to member).
    Leave,
    /// 5.6.9 the local PN's inventory.
    InventoryRequest,
    /// A CA-signed revocation list (self-authenticating).
    Revocations,
    /// `cpns ping`.
    Ping,
    /// G.1 step 8, member to gateway.
    UsageReport,
    /// 5.6.9 the gateway switched.
    GatewayChanged,
    /// A member's services, for the PN Inventory.
    ServicesUpdate,
    /// The member list without a new key (5.6.9).
    MembersUpdate,
    /// The gateway hands its role to a member (5.6.9).
    HandOff,
    /// The PN's admin information changed (5.6.9 PN Admin, Adminee settings).
    AdminChanged,
    /// 5.6.2 a status query.
    StatusQuery,
    /// 5.6.2 a status subscription.
    StatusSubscribe,
    /// 5.6.2 the end of one.
    StatusUnsubscribe,
    /// 5.6.2 a notification.
    StatusNotify,
    /// 5.6.2 a member's heartbeat to its gateway.
    Heartbeat,
    /// 5.6.4 a direct lookup at a publisher (signed, sealed answers).
    DirectoryLookup,
    /// 5.6.4.2 an advertisement subscription at the gateway.
    DirectorySubscribe,
    /// Its end.
    DirectoryUnsubscribe,
    /// 5.6.4.2 an advertisement.
    Advertise,
    /// 5.6.7 / G.1 5-6 invoking a service.
    Invoke,
    /// 5.6.7 start (push mode).
    DeliveryStart,
    /// 5.6.7 stop.
    DeliveryStop,
    /// 5.6.7 pause a running session.
    DeliveryPause,
    /// 5.6.7 resume it.
    DeliveryResume,
    /// 5.6.7 invoking several services at once.
    InvokeMany,
    /// 5.6.7 aggregation: a PNE's contribution to its gateway's feed.
    FeedContribute,
    /// 5.6.7 aggregation: the gateway's aggregated feed.
    FeedRequest,
    /// 5.6.7 distribution: a feed from the gateway.
    FeedDistribute,
    /// 5.6.6 keys forwarded by the gateway.
    KeyForward,
    /// B.1 step 14, from `cpns-auth`.
    ServerStatusRequest,
    /// B.1 step 17, from `cpns-auth`.
    ServerInventoryCreated,
    /// 5.6.6 a key push from `cpns-auth`.
    ServerKeyPush,
    /// A revocation list pushed by `cpns-auth`.
    ServerRevocations,
    /// 5.6.9 a PN's record or admin information changed at `cpns-auth`.
    ServerPnChanged,
    /// 5.6.9 an admin released this gateway's PN at `cpns-auth`.
    ServerPnReleased,
    /// 5.6.9 an admin invited this entity (or its user) into a PN.
    ServerPnInvitation,
    /// 5.6.9 this node's PN was merged into another, or it was split off into a new PN.
    ServerPnMoved,
    /// Appendix F step 3: a zone gateway presents itself to a PNE that answered its search.
    ZoneDiscover,
    /// Appendix F step 5: the zone gateway's availability check.
    ZoneCheck,
    /// Appendix F step 6: the zone's service descriptions pushed.
    ZonePush,
    /// 5.6.10: a member asks its gateway's proxy to play a PN service on a renderer.
    ProxyPlay,
    /// 5.6.10: a member asks its gateway for the proxied devices (the PN Inventory).
    ProxyDevices,
    /// 5.6.9 switching PNE: a session's consumer moves it to another PNE of its user.
    DeliverySwitch,
    /// 5.6.9 switching PNE: the old PNE hands the session to the new PNE.
    SessionHandOver,
    /// 5.6.7 resume by offset: a session's consumer asks for the content from an offset.
    DeliveryContinue,
    /// An answer sent as a request, or a message of the other protocol: never accepted.
    Answer,
}

/// Which classes may send a kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowed {
    /// No valid credential known.
    pub not_enrolled: bool,
    /// Registered, no shared PN.
    pub enrolled: bool,
    /// A member of this node's PN.
    pub member: bool,
    /// This node's gateway.
    pub gateway: bool,
    /// `cpns-auth`.
    pub server: bool,
}

const fn allow(n: bool, e: bool, m: bool, g: bool, s: bool) -> Allowed {
    Allowed {
        not_enrolled: n,
        enrolled: e,
        member: m,
        gateway: g,
        server: s,
    }
}

const ANYONE: Allowed = allow(true, true, true, true, false);
const ENROLLED: Allowed = allow(false, true, true, true, false);
const PN: Allowed = allow(false, false, true, true, false);
const MEMBERS: Allowed = allow(false, false, true, false, false);
const GATEWAY: Allowed = allow(false, false, false, true, false);
const SERVER: Allowed = allow(false, false, false, false, true);
const NOBODY: Allowed = allow(false, false, false, false, false);

/// The table: every kind and who may send it, with why.
pub const TABLE: &[(RequestKind, Allowed, &str)] = &[
    (
        RequestKind::EntityRegistration,
        ANYONE,
        "how a peer presents its credential; refused unless it verifies",
    ),
    (
        RequestKind::CapabilitiesExchange,
        ENROLLED,
        "after registration; a gateway claim must match the credential",
    ),
    (
        RequestKind::CapabilitiesUpdate,
        ENROLLED,
        "step 7 comes from a peer that just became a gateway",
    ),
    (
        RequestKind::ConnectionSetupRequest,
        allow(false, true, true, false, false),
        "a PNE asks to join (a member re-joins after a gateway switch)",
    ),
    (
        RequestKind::MembershipWithGroupKey,
        allow(false, true, true, true, false),
        "only from the gateway a join is pending with (checked by the handler)",
    ),
    (
        RequestKind::MembershipUpdate,
        GATEWAY,
        "only this node's gateway changes its PN",
    ),
    (
        RequestKind::Leave,
        PN,
        "a member leaves; the gateway releases",
    ),
    (
        RequestKind::InventoryRequest,
        PN,
        "the inventory lists members' addresses",
    ),
    (
        RequestKind::Revocations,
        ANYONE,
        "CA-signed and versioned: it authenticates itself",
    ),
    (
        RequestKind::Ping,
        ENROLLED,
        "a round trip for a registered peer",
    ),
    (
        RequestKind::UsageReport,
        MEMBERS,
        "the gateway forwards its members' reports",
    ),
    (
        RequestKind::GatewayChanged,
        PN,
        "checked with cpns-auth, one lookup at a time",
    ),
    (
        RequestKind::ServicesUpdate,
        MEMBERS,
        "what a member offers, for the PN Inventory",
    ),
    (
        RequestKind::MembersUpdate,
        GATEWAY,
        "only this node's gateway changes its PN",
    ),
    (
        RequestKind::HandOff,
        GATEWAY,
        "only the gateway hands its own role over",
    ),
    (
        RequestKind::AdminChanged,
        GATEWAY,
        "the gateway relays what cpns-auth decided",
    ),
    (
        RequestKind::StatusQuery,
        PN,
        "members' status stays in the PN",
    ),
    (
        RequestKind::StatusSubscribe,
        PN,
        "members' status stays in the PN",
    ),
    (
        RequestKind::StatusUnsubscribe,
        ENROLLED,
        "a former member may end its subscription",
    ),
    (
        RequestKind::StatusNotify,
        PN,
        "from the gateway, or a member about itself (checked by the handler)",
    ),
    (
        RequestKind::Heartbeat,
        MEMBERS,
        "members report to their gateway",
    ),
    (
        RequestKind::DirectoryLookup,
        ANYONE,
        "answers are signed records, sealed when not public",
    ),
    (
        RequestKind::DirectorySubscribe,
        MEMBERS,
        "advertisements are routed in the PN",
    ),
    (RequestKind::DirectoryUnsubscribe, ENROLLED, "ending one"),
    (
        RequestKind::Advertise,
        PN,
        "members to their gateway, the gateway to subscribers",
    ),
    (
        RequestKind::Invoke,
        ENROLLED,
        "public services for any registered peer; PN and group services by visibility",
    ),
    (
        RequestKind::DeliveryStart,
        ENROLLED,
        "the session's consumer only (checked by the handler)",
    ),
    (
        RequestKind::DeliveryStop,
        ENROLLED,
        "the session's other side only (checked by the handler)",
    ),
    (
        RequestKind::DeliveryPause,
        ENROLLED,
        "the session's other side only (checked by the handler)",
    ),
    (
        RequestKind::DeliveryResume,
        ENROLLED,
        "the session's other side only (checked by the handler)",
    ),
    (
        RequestKind::InvokeMany,
        ENROLLED,
        "as Invoke, for each service named",
    ),
    (
        RequestKind::FeedContribute,
        MEMBERS,
        "members to their gateway (the handler checks it is the gateway)",
    ),
    (
        RequestKind::FeedRequest,
        MEMBERS,
        "an aggregated feed stays in the PN",
    ),
    (
        RequestKind::FeedDistribute,
        GATEWAY,
        "feeds are distributed by the gateway",
    ),
    (
        RequestKind::KeyForward,
        GATEWAY,
        "keys come through the gateway",
    ),
    (RequestKind::ServerStatusRequest, SERVER, "B.1 step 14"),
    (RequestKind::ServerInventoryCreated, SERVER, "B.1 step 17"),
    (RequestKind::ServerKeyPush, SERVER, "5.6.6 push"),
    (
        RequestKind::ServerRevocations,
        SERVER,
        "the server's own push",
    ),
    (
        RequestKind::ServerPnChanged,
        SERVER,
        "5.6.9 the record of this node's PN (checked by the handler)",
    ),
    (
        RequestKind::ServerPnReleased,
        SERVER,
        "5.6.9 an admin released this node's PN (checked by the handler)",
    ),
    (
        RequestKind::ServerPnInvitation,
        SERVER,
        "5.6.9 an invitation into a PN, kept for the owner's consent",
    ),
    (
        RequestKind::ServerPnMoved,
        SERVER,
        "5.6.9 this node's PN was merged or it was split off (checked by the handler)",
    ),
    (
        RequestKind::ZoneDiscover,
        ANYONE,
        "carries the zone gateway's credential; refused unless the user allows zone discovery (checked by the handler)",
    ),
    (
        RequestKind::ZoneCheck,
        ANYONE,
        "only from a zone gateway this PNE answered (checked by the handler)",
    ),
    (
        RequestKind::ZonePush,
        ANYONE,
        "only from a zone gateway this PNE answered, bounded (checked by the handler)",
    ),
    (
        RequestKind::ProxyPlay,
        MEMBERS,
        "a member asks its gateway; the gateway's owner allows it (proxy.expose, checked by the handler)",
    ),
    (
        RequestKind::ProxyDevices,
        MEMBERS,
        "the proxied devices are part of the PN Inventory",
    ),
    (
        RequestKind::DeliverySwitch,
        ENROLLED,
        "the session's consumer only (checked by the handler)",
    ),
    (
        RequestKind::SessionHandOver,
        PN,
        "a PNE of the same user in the same PN only (checked by the handler)",
    ),
    (
        RequestKind::DeliveryContinue,
        ENROLLED,
        "the session's consumer only, at an offset within the content (checked by the handler)",
    ),
    (RequestKind::Answer, NOBODY, "an answer is never a request"),
];

impl RequestKind {
    /// The kind of a message received on `protocol`.
    pub fn of(protocol: Protocol, m: &Message) -> RequestKind {
        use RequestKind as K;
        if protocol == Protocol::Auth {
            return match m {
                Message::Auth(AuthMessage::StatusUpdateRequest) => K::ServerStatusRequest,
                Message::Auth(AuthMessage::PnInventoryCreated { .. }) => K::ServerInventoryCreated,
                Message::Auth(AuthMessage::KeyPush { .. }) => K::ServerKeyPush,
                Message::Auth(AuthMessage::Revocations(_)) => K::ServerRevocations,
                Message::Auth(AuthMessage::PnChanged { .. }) => K::ServerPnChanged,
                Message::Auth(AuthMessage::PnRelease { .. }) => K::ServerPnReleased,
                Message::Auth(AuthMessage::PnInvitation(_)) => K::ServerPnInvitation,
                Message::Auth(AuthMessage::PnMoved { .. }) => K::ServerPnMoved,
                _ => K::Answer,
            };
        }
        match m {
            Message::Pn(p) => match p {
                PnMessage::EntityRegistration(_) => K::EntityRegistration,
                PnMessage::CapabilitiesExchange(_) => K::CapabilitiesExchange,
                PnMessage::CapabilitiesUpdate(_) => K::CapabilitiesUpdate,
                PnMessage::ConnectionSetupRequest(_) => K::ConnectionSetupRequest,
                PnMessage::MembershipWithGroupKey(_) => K::MembershipWithGroupKey,
                PnMessage::MembershipUpdate(_) => K::MembershipUpdate,
                PnMessage::Leave { .. } => K::Leave,
                PnMessage::InventoryRequest { .. } => K::InventoryRequest,
                PnMessage::Revocations(_) => K::Revocations,
                PnMessage::Ping { .. } => K::Ping,
                PnMessage::UsageReport(_) => K::UsageReport,
                PnMessage::GatewayChanged { .. } => K::GatewayChanged,
                PnMessage::ServicesUpdate { .. } => K::ServicesUpdate,
                PnMessage::MembersUpdate { .. } => K::MembersUpdate,
                PnMessage::HandOff { .. } => K::HandOff,
                PnMessage::AdminChanged(_) => K::AdminChanged,
                PnMessage::MembershipConfirmation { .. }
                | PnMessage::ConnectionSetupConfirmation(_)
                | PnMessage::InventoryResponse(_)
                | PnMessage::Pong { .. } => K::Answer,
            },
            Message::Status(s) => match s {
                StatusMessage::Query { .. } => K::StatusQuery,
                StatusMessage::Subscribe { .. } => K::StatusSubscribe,
                StatusMessage::Unsubscribe { .. } => K::StatusUnsubscribe,
                StatusMessage::Notify { .. } => K::StatusNotify,
                StatusMessage::Heartbeat { .. } => K::Heartbeat,
                StatusMessage::Report { .. } => K::Answer,
            },
            Message::Directory(d) => match d {
                DirectoryMessage::Lookup { .. } => K::DirectoryLookup,
                DirectoryMessage::Subscribe { .. } => K::DirectorySubscribe,
                DirectoryMessage::Unsubscribe { .. } => K::DirectoryUnsubscribe,
                DirectoryMessage::Advertise { .. } => K::Advertise,
                DirectoryMessage::Records { .. } => K::Answer,
            },
            Message::Delivery(d) => match d {
                DeliveryMessage::Invoke { .. } => K::Invoke,
                DeliveryMessage::Start { .. } => K::DeliveryStart,
                DeliveryMessage::Stop { .. } => K::DeliveryStop,
                DeliveryMessage::Pause { .. } => K::DeliveryPause,
                DeliveryMessage::Resume { .. } => K::DeliveryResume,
                DeliveryMessage::InvokeMany { .. } => K::InvokeMany,
                DeliveryMessage::Contribute { .. } => K::FeedContribute,
                DeliveryMessage::FeedRequest { .. } => K::FeedRequest,
                DeliveryMessage::Distribute(_) => K::FeedDistribute,
                DeliveryMessage::Switch { .. } => K::DeliverySwitch,
                DeliveryMessage::HandOver(_) => K::SessionHandOver,
                DeliveryMessage::Continue { .. } => K::DeliveryContinue,
                DeliveryMessage::Invoked { .. }
                | DeliveryMessage::InvokedMany { .. }
                | DeliveryMessage::Feed(_) => K::Answer,
            },
            Message::Group(GroupMessage::KeyForward { .. }) => K::KeyForward,
            Message::Zone(z) => match z {
                ZoneMessage::Discover { .. } => K::ZoneDiscover,
                ZoneMessage::Check { .. } => K::ZoneCheck,
                ZoneMessage::Push { .. } => K::ZonePush,
                ZoneMessage::Present { .. } | ZoneMessage::Available { .. } => K::Answer,
            },
            Message::Proxy(ProxyMessage::Play { .. }) => K::ProxyPlay,
            Message::Proxy(ProxyMessage::Devices) => K::ProxyDevices,
            Message::Proxy(ProxyMessage::Playing { .. } | ProxyMessage::DeviceList { .. }) => {
                K::Answer
            }
            Message::Auth(_) | Message::Ack | Message::Error(_) => K::Answer,
        }
    }

    /// Who may send this kind.
    pub fn allowed(self) -> Allowed {
        TABLE
            .iter()
            .find(|(k, _, _)| *k == self)
            .map(|(_, a, _)| *a)
            .unwrap_or(NOBODY)
    }
}

impl fmt::Display for RequestKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// What the node knows of a sender.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sender {
    /// One of the five classes.
    Class(SenderClass),
    /// Its credential is revoked.
    Revoked,
    /// Its credential expired.
    Expired,
    /// This node's PN expelled it.
    Expelled,
}

impl Sender {
    /// The label used in metrics and errors.
    pub fn label(&self) -> &'static str {
        match self {
            Sender::Class(SenderClass::NotEnrolled) => "not-enrolled",
            Sender::Class(SenderClass::Enrolled) => "enrolled",
            Sender::Class(SenderClass::Member) => "member",
            Sender::Class(SenderClass::Gateway) => "gateway",
            Sender::Class(SenderClass::Server) => "server",
            Sender::Revoked => "revoked",
            Sender::Expired => "expired",
            Sender::Expelled => "expelled",
        }
    }
}

/// Classifies `peer` from the PN actor's latest view (and the revocation list in it).
pub(crate) fn classify(view: &View, protocol: Protocol, peer: &PeerId, now: u64) -> Sender {
    let server = view.enrolment.as_ref().map(|e| e.server);
    if protocol == Protocol::Auth {
        return if server.as_ref() == Some(peer) {
            Sender::Class(SenderClass::Server)
        } else {
            Sender::Class(SenderClass::NotEnrolled)
        };
    }
    if view.expelled.contains(peer) {
        return Sender::Expelled;
    }
    let revoked = |serial: u64| {
        view.enrolment
            .as_ref()
            .is_some_and(|e| e.revocations.contains(serial))
    };
    let check = |serial: u64, expires: u64, class: SenderClass| {
        if revoked(serial) {
            Sender::Revoked
        } else if expires != 0 && expires <= now {
            Sender::Expired
        } else {
            Sender::Class(class)
        }
    };
    let gateway = view.my_gateway();
    if let Some(m) = view.pn.as_ref().and_then(|p| p.members.get(peer)) {
        let class = if gateway.as_ref() == Some(peer) {
            SenderClass::Gateway
        } else {
            SenderClass::Member
        };
        return check(m.info.serial, m.info.expires, class);
    }
    if let Some(p) = view.peers.get(peer) {
        let class = if gateway.as_ref() == Some(peer) {
            SenderClass::Gateway
        } else {
            SenderClass::Enrolled
        };
        return check(p.serial, p.expires, class);
    }
    Sender::Class(SenderClass::NotEnrolled)
}

/// The refusal of a request, if it is refused: the code and the text of the error answer.
pub(crate) fn check(kind: RequestKind, sender: Sender) -> Result<SenderClass, (ErrorCode, String)> {
    let class = match sender {
        Sender::Revoked => {
            return Err((
                ErrorCode::Revoked,
                "the sender's credential is revoked".into(),
            ));
        }
        Sender::Expired => {
            return Err((ErrorCode::Expired, "the sender's credential expired".into()));
        }
        Sender::Expelled => {
            return Err((
                ErrorCode::Forbidden,
                "the sender was expelled from this PN".into(),
            ));
        }
        Sender::Class(c) => c,
    };
    if class == SenderClass::NotEnrolled && !kind.allowed().not_enrolled {
        // The same answer the overlay's pre-filter gives.
        return Err((
            ErrorCode::NotRegistered,
            "register first (Entity Registration and Discovery)".into(),
        ));
    }
    let a = kind.allowed();
    let ok = match class {
        SenderClass::NotEnrolled => a.not_enrolled,
        SenderClass::Enrolled => a.enrolled,
        SenderClass::Member => a.member,
        SenderClass::Gateway => a.gateway,
        SenderClass::Server => a.server,
    };
    if ok {
        return Ok(class);
    }
    Err(if kind == RequestKind::Answer {
        (ErrorCode::BadRequest, "an answer, not a request".into())
    } else {
        (
            ErrorCode::Forbidden,
            format!("{kind} is not for a sender that is {}", sender.label()),
        )
    })
}

/// One sample message of every kind received on `/cpns/1.0.0` (tests).
#[cfg(test)]
pub(crate) fn samples() -> Vec<(RequestKind, Message)> {
    use cpns_overlay::{DeliveryMode, Status, StatusPolicy};
    let peer = PeerId::random();
    let mut out = vec![
        (
            RequestKind::InventoryRequest,
            Message::Pn(PnMessage::InventoryRequest { pn_id: "pn".into() }),
        ),
        (
            RequestKind::Leave,
            Message::Pn(PnMessage::Leave { pn_id: "pn".into() }),
        ),
        (RequestKind::Ping, Message::Pn(PnMessage::Ping { nonce: 1 })),
        (
            RequestKind::GatewayChanged,
            Message::Pn(PnMessage::GatewayChanged {
                pn_id: "pn".into(),
                addrs: Vec::new(),
            }),
        ),
        (
            RequestKind::ServicesUpdate,
            Message::Pn(PnMessage::ServicesUpdate {
                pn_id: "pn".into(),
                services: Vec::new(),
            }),
        ),
        (
            RequestKind::MembersUpdate,
            Message::Pn(PnMessage::MembersUpdate {
                pn_id: "pn".into(),
                members: Vec::new(),
                expelled: Vec::new(),
            }),
        ),
        (
            RequestKind::HandOff,
            Message::Pn(PnMessage::HandOff { pn_id: "pn".into() }),
        ),
        (
            RequestKind::AdminChanged,
            Message::Pn(PnMessage::AdminChanged(Default::default())),
        ),
        (
            RequestKind::StatusQuery,
            Message::Status(StatusMessage::Query { target: peer }),
        ),
        (
            RequestKind::StatusSubscribe,
            Message::Status(StatusMessage::Subscribe {
                target: peer,
                policy: StatusPolicy::default(),
            }),
        ),
        (
            RequestKind::StatusUnsubscribe,
            Message::Status(StatusMessage::Unsubscribe { target: peer }),
        ),
        (
            RequestKind::StatusNotify,
            Message::Status(StatusMessage::Notify {
                target: peer,
                status: Status::Online,
                battery_percent: None,
                free_memory_bytes: None,
                trigger: "t".into(),
            }),
        ),
        (
            RequestKind::Heartbeat,
            Message::Status(StatusMessage::Heartbeat {
                status: Status::Online,
                battery_percent: None,
                free_memory_bytes: None,
            }),
        ),
        (
            RequestKind::DirectoryLookup,
            Message::Directory(DirectoryMessage::Lookup {
                keyword: b"k".to_vec(),
            }),
        ),
        (
            RequestKind::DirectorySubscribe,
            Message::Directory(DirectoryMessage::Subscribe {
                keyword: b"k".to_vec(),
            }),
        ),
        (
            RequestKind::DirectoryUnsubscribe,
            Message::Directory(DirectoryMessage::Unsubscribe {
                keyword: b"k".to_vec(),
            }),
        ),
        (
            RequestKind::Advertise,
            Message::Directory(DirectoryMessage::Advertise { record: Vec::new() }),
        ),
        (
            RequestKind::Invoke,
            Message::Delivery(DeliveryMessage::Invoke {
                service_id: "s".into(),
                mode: DeliveryMode::Pull,
                capabilities: Default::default(),
            }),
        ),
        (
            RequestKind::DeliveryStart,
            Message::Delivery(DeliveryMessage::Start { session: 1 }),
        ),
        (
            RequestKind::DeliveryStop,
            Message::Delivery(DeliveryMessage::Stop { session: 1 }),
        ),
        (
            RequestKind::DeliveryPause,
            Message::Delivery(DeliveryMessage::Pause { session: 1 }),
        ),
        (
            RequestKind::DeliveryResume,
            Message::Delivery(DeliveryMessage::Resume { session: 1 }),
        ),
        (
            RequestKind::InvokeMany,
            Message::Delivery(DeliveryMessage::InvokeMany {
                service_ids: vec!["s".into()],
                mode: DeliveryMode::Pull,
                capabilities: Default::default(),
            }),
        ),
        (
            RequestKind::FeedContribute,
            Message::Delivery(DeliveryMessage::Contribute {
                feed: "f".into(),
                common: Vec::new(),
                part: Vec::new(),
            }),
        ),
        (
            RequestKind::FeedRequest,
            Message::Delivery(DeliveryMessage::FeedRequest { feed: "f".into() }),
        ),
        (
            RequestKind::KeyForward,
            Message::Group(GroupMessage::KeyForward { grants: Vec::new() }),
        ),
        (RequestKind::Answer, Message::Ack),
        (
            RequestKind::CapabilitiesExchange,
            Message::Pn(PnMessage::CapabilitiesExchange(Default::default())),
        ),
        (
            RequestKind::CapabilitiesUpdate,
            Message::Pn(PnMessage::CapabilitiesUpdate(Default::default())),
        ),
    ];
    let ca = cpns_keys::Identity::generate();
    let credential = cpns_keys::EntityCredential::issue(
        &ca,
        cpns_keys::CredentialBody {
            entity: peer,
            user: "u".into(),
            device: "d".into(),
            modes: cpns_keys::Modes::ALL,
            serial: 1,
            issued: 0,
            expires: u64::MAX,
        },
    );
    out.push((
        RequestKind::ZoneDiscover,
        Message::Zone(ZoneMessage::Discover {
            zone: "z".into(),
            pn_id: "pn-x".into(),
            credential: credential.clone(),
        }),
    ));
    out.push((
        RequestKind::ProxyPlay,
        Message::Proxy(ProxyMessage::Play {
            device: "upnp-0".into(),
            service_id: "s".into(),
        }),
    ));
    out.push((
        RequestKind::ProxyDevices,
        Message::Proxy(ProxyMessage::Devices),
    ));
    out.push((
        RequestKind::DeliverySwitch,
        Message::Delivery(DeliveryMessage::Switch {
            session: 1,
            to: PeerId::random(),
        }),
    ));
    out.push((
        RequestKind::SessionHandOver,
        Message::Delivery(DeliveryMessage::HandOver(cpns_overlay::SessionHandOver {
            session: 1,
            offerer: PeerId::random(),
            service_id: "s".into(),
            offset: 0,
            total: 1,
            started: 0,
            variant: None,
        })),
    ));
    out.push((
        RequestKind::DeliveryContinue,
        Message::Delivery(DeliveryMessage::Continue {
            session: 1,
            offset: 0,
        }),
    ));
    out.push((
        RequestKind::ZoneCheck,
        Message::Zone(ZoneMessage::Check { zone: "z".into() }),
    ));
    out.push((
        RequestKind::ZonePush,
        Message::Zone(ZoneMessage::Push {
            zone: "z".into(),
            pn_id: "pn-x".into(),
            services: Vec::new(),
        }),
    ));
    out.push((
        RequestKind::EntityRegistration,
        Message::Pn(PnMessage::EntityRegistration(
            cpns_overlay::EntityRegistration {
                mode: cpns_overlay::NodeMode::Pne,
                credential,
                pn_id: None,
                gateway: None,
                listen_addrs: Vec::new(),
                revocation_version: 0,
                gateway_addrs: Vec::new(),
            },
        )),
    ));
    out.push((
        RequestKind::Revocations,
        Message::Pn(PnMessage::Revocations(
            cpns_keys::RevocationList::empty_unsigned(),
        )),
    ));
    out.push((
        RequestKind::FeedDistribute,
        Message::Delivery(DeliveryMessage::Distribute(cpns_overlay::Distribution {
            feed: "f".into(),
            seq: 1,
            common: cpns_keys::GroupKey::generate(cpns_keys::GroupId("pn-x".into()), 0)
                .seal(&peer, b"x"),
            part: None,
        })),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_exactly_one_entry() {
        for k in RequestKind::ALL {
            let n = TABLE.iter().filter(|(t, _, _)| t == k).count();
            assert_eq!(n, 1, "{k} has {n} table entries");
        }
        assert_eq!(TABLE.len(), RequestKind::ALL.len());
    }

    #[test]
    fn the_overlays_pre_filter_agrees_with_the_table() {
        // The overlay refuses non-open requests of peers it has not admitted before they reach
        // the node: its "open" set must be exactly the not-enrolled column.
        let samples = crate::authz::samples();
        for (kind, m) in &samples {
            assert_eq!(
                m.is_open(),
                kind.allowed().not_enrolled,
                "{kind}: Message::is_open disagrees with the table"
            );
            assert_eq!(RequestKind::of(Protocol::Cpns, m), *kind, "{kind}");
        }
    }

    #[test]
    fn revoked_expired_and_expelled_get_nothing() {
        for k in RequestKind::ALL {
            for s in [Sender::Revoked, Sender::Expired, Sender::Expelled] {
                assert!(check(*k, s).is_err(), "{k} from {s:?}");
            }
        }
    }
}
