//! Services, content and usage (5.6.4, 5.6.7, 5.6.3): `/v1/services…`, `/v1/content/…`,
//! `/v1/usage/…`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::NodeMode;

/// What a service needs from the consuming device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Requirements {
    /// Least total memory in bytes.
    pub min_memory_bytes: Option<u64>,
    /// Least battery charge on battery power.
    pub min_battery_percent: Option<u8>,
    /// Needs a screen.
    pub needs_screen: bool,
    /// Needs mains power.
    pub mains_power: bool,
    /// Device types allowed; empty: any.
    pub device_types: Vec<String>,
    /// Modes allowed; empty: any.
    pub modes: Vec<NodeMode>,
}

/// Where a service comes from: `{"Entity": PEER_ID}` or `{"External": {"name", "url"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SourceView {
    /// A CPNS entity.
    Entity(String),
    /// An external provider the publishing node speaks for.
    External {
        /// Its name.
        name: String,
        /// Its URL.
        url: Option<String>,
    },
}

/// How to reach a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `cpns-delivery` or any other protocol name.
    pub protocol: String,
    /// Multiaddrs or URLs.
    pub addresses: Vec<String>,
}

/// A service description (5.6.4.2).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceView {
    /// Service id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Normalised keywords.
    pub keywords: Vec<String>,
    /// What it offers.
    pub offers: String,
    /// Where it comes from.
    pub source: SourceView,
    /// The entity that published and signed it.
    pub publisher: String,
    /// Requirements on the consumer.
    pub requirements: Requirements,
    /// How to reach it.
    pub endpoint: Endpoint,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Goes up with every change.
    pub version: u64,
    /// When this version was published (Unix seconds).
    pub published: u64,
    /// When it stops being valid unless republished (Unix seconds).
    pub expires: u64,
    /// `public`, `pn:<id>` or `group:<id>`.
    pub visibility: String,
}

/// A service found (`GET /v1/services/{id}`, and in a discovery).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FoundView {
    /// The verified description.
    pub description: ServiceView,
    /// The peer it came from (`null`: this node's own store).
    pub from_peer: Option<String>,
}

/// What a discovery cost, to compare with Appendix E.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FiguresView {
    /// Requests sent.
    pub requests: u32,
    /// Peers that answered or failed.
    pub peers_contacted: u32,
    /// Duration in microseconds.
    pub duration_us: u64,
    /// DHT lookups run.
    pub lookups: u32,
}

/// `GET /v1/services/find`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiscoveryView {
    /// Matching services.
    pub services: Vec<FoundView>,
    /// What it cost.
    pub figures: FiguresView,
}

/// One line of `GET /v1/services/find?stream=true` (newline-delimited JSON): each service as
/// it is verified, then the whole discovery (or the error that ended it). A service appears
/// again only as a newer version.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FindEvent {
    /// A matching service, the moment its provider's answer was verified.
    Found(Box<FoundView>),
    /// The discovery ended: every service, newest version of each, and what it cost.
    Done(DiscoveryView),
    /// The discovery failed after it had begun.
    Error(crate::ErrorDetail),
}

/// `POST /v1/services`: a service to publish (G.1 step 0). Only `name` is needed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct PublishBody {
    /// An own service's id, to update it.
    pub id: Option<String>,
    /// Its name.
    pub name: String,
    /// Keywords.
    pub keywords: Vec<String>,
    /// What it offers.
    pub offers: String,
    /// `public`, `pn` (this node's PN, the default), or `group:<id>`.
    pub visibility: Option<String>,
    /// The external provider this service speaks for (else this node).
    pub external: Option<String>,
    /// The external provider's URL.
    pub external_url: Option<String>,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Requirements on the consumer.
    pub requirements: Requirements,
    /// The endpoint's protocol.
    pub protocol: Option<String>,
    /// The endpoint's addresses.
    pub addresses: Vec<String>,
    /// A file this node serves as the service's content.
    pub file: Option<PathBuf>,
    /// An `http://` URL this node fetches the content from (once for many consumers) and
    /// delivers sealed, as a gateway does for an external Application/Content server.
    pub source_url: Option<String>,
    /// Variants of the content for different devices, best first (capability-based
    /// invocation).
    pub variants: Vec<crate::VariantBody>,
    /// Lifetime in seconds.
    pub ttl_secs: Option<u64>,
}

/// `DELETE /v1/services/{id}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Unpublished {
    /// Always true.
    pub ok: bool,
    /// The service.
    pub id: String,
}

/// `POST /v1/services/watch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WatchBody {
    /// The keyword.
    pub keyword: String,
}

/// `POST /v1/services/watch`: subscriptions made.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Watching {
    /// The keyword.
    pub keyword: String,
    /// How many subscriptions were made.
    pub subscriptions: usize,
}

/// `POST /v1/content/fetch`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchBody {
    /// The service.
    pub service_id: String,
    /// `pull` (default) or `push`.
    #[serde(default)]
    pub mode: Option<String>,
}

/// What a fetch delivered (`POST /v1/content/fetch`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchOutcome {
    /// The service.
    pub service_id: String,
    /// The offerer.
    pub offerer: String,
    /// `pull` or `push`.
    pub mode: String,
    /// The offerer's decision (`accepted`, or the adaptation).
    pub decision: String,
    /// Bytes delivered.
    pub bytes: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Where the content was written.
    pub path: String,
    /// Milliseconds from invocation to the last byte.
    pub duration_ms: f64,
    /// What became of the usage report: `reported`, `queued` or `suppressed`.
    pub usage: String,
    /// The delivery session's id.
    #[serde(default)]
    pub session: String,
    /// `completed`, `stopped by the consumer` or `stopped by the offerer` (then `path` is
    /// empty: no partial file is kept).
    #[serde(default)]
    pub ended: String,
    /// The variant the offerer chose, if the service has variants.
    #[serde(default)]
    pub variant: Option<String>,
    /// What became of the record at the external collector: `sent`, `queued`, `suppressed`
    /// or `none` (no collector configured).
    #[serde(default)]
    pub collector: String,
}

/// `POST /v1/content/send`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendBody {
    /// A PN member's PeerId.
    pub peer: String,
    /// The file (a path on the node's machine).
    pub path: PathBuf,
}

/// `POST /v1/content/send`: what was sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sent {
    /// The peer.
    pub peer: String,
    /// Bytes sent.
    pub bytes: u64,
}

/// `GET /v1/content/inbox`: one file a peer pushed here.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InboxEntry {
    /// Its name in `DATA_DIR/inbox/`.
    pub name: String,
    /// Its size.
    pub bytes: u64,
}

/// `GET, POST /v1/usage/prefs`.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct UsagePrefs {
    /// Service names or ids never reported (to anyone).
    pub never_report: Vec<String>,
    /// Service names or ids never sent to the external collector (`*`: none is).
    #[serde(default)]
    pub never_external: Vec<String>,
    /// Report uses without the device's capabilities and samples.
    #[serde(default)]
    pub omit_capabilities: bool,
}

/// The capabilities and status sampled during one service use (5.6.3), summarised.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct UsageSamplesView {
    /// Samples taken.
    pub count: u32,
    /// When the first was taken (Unix seconds).
    pub first: u64,
    /// When the last was taken.
    pub last: u64,
    /// Lowest battery charge seen.
    pub battery_min: Option<u8>,
    /// Highest battery charge seen.
    pub battery_max: Option<u8>,
    /// Whether the device ran on battery at some sample.
    pub on_battery: bool,
    /// Lowest free memory seen, bytes.
    pub free_memory_min: u64,
    /// Highest free memory seen, bytes.
    pub free_memory_max: u64,
    /// Statuses seen: `online`, `busy`, `offline`.
    pub statuses: Vec<String>,
    /// Whether the device reached a WAN at every sample.
    pub wan: bool,
}

/// One service use in a queued report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct UsageRecordView {
    /// The service id.
    pub service_id: String,
    /// The service name.
    pub service_name: String,
    /// The offering entity.
    pub offerer: String,
    /// The PN the consumer was in.
    pub pn_id: Option<String>,
    /// When use started (Unix seconds).
    pub started: u64,
    /// How long, in milliseconds.
    pub duration_ms: u64,
    /// Bytes delivered.
    pub bytes: u64,
    /// The consumer's status during use: `online`, `busy`, `offline`.
    pub status: String,
    /// The capabilities and status sampled during use.
    #[serde(default)]
    pub samples: UsageSamplesView,
    /// The variant the offerer chose, if any.
    #[serde(default)]
    pub variant: Option<String>,
    /// `completed`, `stopped by the consumer`, `stopped by the offerer`.
    #[serde(default)]
    pub ended: String,
}

/// `GET /v1/usage/queued`: a signed usage report waiting for `cpns-auth`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct QueuedReport {
    /// The reporting entity.
    pub entity: String,
    /// Its credential's serial.
    pub credential_serial: u64,
    /// Per-entity sequence number.
    pub sequence: u64,
    /// The records.
    pub records: Vec<UsageRecordView>,
}
