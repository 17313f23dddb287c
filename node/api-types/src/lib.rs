//! # cpns-api: the bodies of a node's local HTTP API
//!
//! Every request and response body of `cpns-node`'s local API (`/v1/…`, docs/API.md), as plain
//! serde types, and the API file (`DATA_DIR/api.json`) that says where the API listens. The
//! daemon converts its own types into these before it answers; the `cpns` CLI reads them. So
//! the CLI links serde and nothing of the daemon (no libp2p, no sled), and one crate holds the
//! wire contract: a field renamed here is renamed for both sides at once.
//!
//! Conventions (docs/API.md "Conventions"): PeerIds and multiaddrs are strings; times are
//! Unix seconds (UTC) unless the field says otherwise (`…_ms`, `time` in RFC 3339); enums of
//! Device Capabilities keep the Rust variant names the node has always sent (`"Pne"`,
//! `"Battery"`).
//!
//! ```
//! let body = r#"{"peer_id":"12D3KooW…","mode":"pne","status":"busy","reason":"call",
//!                "user":"alice","device":"phone"}"#;
//! let m: cpns_api::MemberView = serde_json::from_str(body).unwrap();
//! assert_eq!(m.reason.as_deref(), Some("call"));
//! ```

mod caps;
mod content;
mod file;
mod groups;
mod node;
mod pn;
mod proxy;
mod services;
mod status;
mod web;
mod zone;

pub use caps::{
    Application, CapabilitiesPatch, CapabilitiesView, DynamicCapabilities, GatewayPreference,
    NetworkInterface, NetworkKind, NodeMode, PowerSource, Screen, StaticCapabilities,
};
pub use content::{
    AcceptedPush, AggregateView, CollectedUsage, ContributeBody, DistributeBody, DistributionView,
    FeedPartView, FetchManyBody, FetchResult, PendingPushView, PushBody, PushTargetView, PushView,
    ReceivedFeedView, RecipientView, SessionView, VariantBody, VariantNeeds,
};
pub use file::{API_FILE, ApiFile, default_data_dir};
pub use groups::{CreateGroupBody, GroupDone, GroupView, KeysPulled};
pub use node::{
    AuthServerView, CredentialView, ErrorBody, ErrorDetail, MemberView, NatView, PeerBody,
    PeerView, PingView, StatusView, TraceEvent, TraceQuery,
};
pub use pn::{
    AdminApproveBody, AdmineeSetBody, AdmineeSettingsView, AdmineeView, Done, EpochView, ExpelBody,
    HandOffBody, InventoryQuery, InvitationBody, InvitationView, InviteBody, MatchQuery, MatchView,
    MemberDetailView, MergeBody, MergeView, ModeBody, ModeView, Opened, PairBody, PairOutcome,
    PairingCodeView, PnAdminsView, PnInventoryView, Released, SealBody, SealedView, SplitBody,
    SplitView, SwitchBody, SwitchView, SwitchedSession, UnableView, UpBody,
};
pub use proxy::{PlayBody, PlayView, ProxiedDeviceView, ProxiedItemView, ProxiedPneView};
pub use services::{
    DiscoveryView, Endpoint, FetchBody, FetchOutcome, FiguresView, FindEvent, FoundView,
    InboxEntry, PublishBody, QueuedReport, Requirements, SendBody, Sent, ServiceView, SourceView,
    Unpublished, UsagePrefs, UsageRecordView, UsageSamplesView, WatchBody, Watching,
};
pub use status::{Notification, PeerStatus, SetStatusBody, SubscribeBody, Subscribed};
pub use web::{ContentProgress, PnEvent, WebLink};
pub use zone::{
    ZoneMemberView, ZoneReceivedView, ZoneRefusalView, ZoneServiceView, ZoneSettings, ZoneView,
};

/// Error codes of [`ErrorDetail::code`], with the HTTP status each goes with.
pub mod codes {
    /// 400: the request is malformed.
    pub const BAD_REQUEST: &str = "bad_request";
    /// 401: no or a wrong token (or session cookie).
    pub const UNAUTHORIZED: &str = "unauthorized";
    /// 403: a peer or `cpns-auth` refused.
    pub const REFUSED: &str = "refused";
    /// 404: no such thing.
    pub const NOT_FOUND: &str = "not_found";
    /// 409: the node is not in a state to do it.
    pub const CONFLICT: &str = "conflict";
    /// 503: the network failed or timed out.
    pub const UNAVAILABLE: &str = "unavailable";
    /// 500: something failed inside the node.
    pub const INTERNAL: &str = "internal";
}
