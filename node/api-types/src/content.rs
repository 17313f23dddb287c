//! Service/Content Delivery beyond one fetch (5.6.7): several services at once, sessions and
//! their control, offerer-initiated pushes and the receiver's inbox, the feeds a gateway
//! aggregates and distributes, and what an external usage collector receives (5.6.3):
//! `/v1/content/…`, `/v1/feeds/…`.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::services::{FetchOutcome, UsageRecordView};

/// `POST /v1/content/fetch-many`: one invocation naming several services.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchManyBody {
    /// The services (at most 16).
    pub service_ids: Vec<String>,
    /// `pull` (default) or `push`, for all of them.
    #[serde(default)]
    pub mode: Option<String>,
}

/// One service of a `fetch-many`: its outcome or why it failed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchResult {
    /// The service.
    pub service_id: String,
    /// What was delivered, if it was.
    pub outcome: Option<FetchOutcome>,
    /// Why not, if it was not.
    pub error: Option<String>,
}

/// `GET /v1/content/sessions`: one delivery session at this node.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionView {
    /// The session id (16 hex digits), the same at both sides.
    pub id: String,
    /// This node's side: `offerer` or `consumer`.
    pub role: String,
    /// The service.
    pub service_id: String,
    /// The other side.
    pub peer: String,
    /// `pull` or `push`.
    pub mode: String,
    /// `invoked`, `running`, `paused by the consumer`, `stopped by the offerer`...
    pub state: String,
    /// Bytes sent (offerer) or received (consumer) so far.
    pub bytes: u64,
    /// The content's length.
    pub total: u64,
    /// The variant the offerer chose, if the service has variants.
    pub variant: Option<String>,
}

/// `POST /v1/content/push`: push a file (5.6.7 push mode, started by the offerer).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushBody {
    /// The file (a path on the node's machine).
    pub path: PathBuf,
    /// A PeerId, `pn` (every other member of this node's PN) or `group:<id>` (every other
    /// member of a Service Group).
    pub to: String,
    /// Send through the PN gateway even when a direct path exists (the content is then sealed
    /// end to end to each receiver).
    #[serde(default)]
    pub via_gateway: bool,
}

/// One receiver of a push.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushTargetView {
    /// The receiver.
    pub peer: String,
    /// `delivered`, `inbox` (waiting for its owner), `declined`, `queued` (offline; sent
    /// when it returns) or `failed`.
    pub state: String,
    /// Details: the receiver's reason, the error.
    pub detail: String,
    /// Whether it went through the gateway.
    pub via_gateway: bool,
}

/// `POST /v1/content/push`, `GET /v1/content/pushes`: a push and where it stands.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PushView {
    /// The push's id.
    pub push_id: String,
    /// The file's name.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// When it was pushed (Unix seconds).
    pub created: u64,
    /// Every receiver.
    pub targets: Vec<PushTargetView>,
}

/// `GET /v1/content/inbox/pending`: a push waiting for this node's owner.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PendingPushView {
    /// Its id here (`cpns content accept ID`).
    pub id: String,
    /// The sender.
    pub from: String,
    /// The sender's user.
    pub user: String,
    /// The file's name.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// The Service Group it was pushed to, if any.
    pub group: Option<String>,
    /// When it was offered (Unix seconds).
    pub received: u64,
}

/// `POST /v1/content/inbox/{id}/accept`: where the accepted file went.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AcceptedPush {
    /// The file in `DATA_DIR/inbox/`.
    pub path: String,
    /// Its size.
    pub bytes: u64,
    /// SHA-256, hex.
    pub sha256: String,
}

/// `POST /v1/feeds/{feed}/contribute`: this PNE's data for its gateway's aggregated feed.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct ContributeBody {
    /// What it shares with the other contributors (a schema, units, a header), UTF-8.
    pub common: String,
    /// Its own data (a reading), UTF-8.
    pub part: String,
}

/// One PNE's part of an aggregated feed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FeedPartView {
    /// The contributing PNE.
    pub from: String,
    /// Index of its common part in [`AggregateView::common`].
    pub common: u32,
    /// Its data.
    pub data: String,
    /// When the gateway received it (Unix seconds).
    pub at: u64,
}

/// `GET /v1/feeds/{feed}/aggregate`: the gateway's aggregated feed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct AggregateView {
    /// The feed.
    pub feed: String,
    /// The distinct common parts, once each.
    pub common: Vec<String>,
    /// One part per PNE.
    pub parts: Vec<FeedPartView>,
}

/// `POST /v1/feeds/{feed}/distribute` (at the gateway): a feed for the PN's PNEs.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct DistributeBody {
    /// What every PNE receives, UTF-8.
    pub common: String,
    /// Each PNE's own part, by PeerId, UTF-8: only that PNE can open it.
    pub parts: BTreeMap<String, String>,
}

/// One PNE a feed was distributed to.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RecipientView {
    /// The PNE.
    pub peer: String,
    /// Whether it acknowledged.
    pub delivered: bool,
    /// Why not.
    pub error: Option<String>,
    /// Its part as sent: sealed to its identity key (hex of the sealed box).
    pub sealed_part: Option<String>,
}

/// `POST /v1/feeds/{feed}/distribute`: what was sent.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DistributionView {
    /// The feed.
    pub feed: String,
    /// Its sequence number.
    pub seq: u64,
    /// Every PNE.
    pub recipients: Vec<RecipientView>,
}

/// `GET /v1/feeds`: a feed this PNE received from its gateway.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ReceivedFeedView {
    /// The feed.
    pub feed: String,
    /// The gateway.
    pub from: String,
    /// Its sequence number.
    pub seq: u64,
    /// The common part.
    pub common: String,
    /// This PNE's own part, if it had one.
    pub part: Option<String>,
    /// When it arrived (Unix seconds).
    pub received: u64,
}

/// What an external usage collector (`usage.collector_url`) receives, as a JSON POST, for
/// each service use the user's preferences let out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CollectedUsage {
    /// The consuming entity.
    pub entity: String,
    /// Its user.
    pub user: String,
    /// Its device name.
    pub device: String,
    /// The use.
    pub record: UsageRecordView,
}

/// What a variant of a service needs of the consumer's device.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VariantNeeds {
    /// At least this much battery, when on battery.
    pub min_battery_percent: Option<u8>,
    /// Mains power.
    pub mains_power: bool,
    /// A screen.
    pub needs_screen: bool,
    /// A screen at least this wide, in pixels.
    pub min_screen_width: Option<u32>,
    /// At least this much free memory, in bytes.
    pub min_free_memory_bytes: Option<u64>,
    /// A WAN connection.
    pub wan: bool,
}

/// A variant of a service's content (capability-based invocation): the offerer picks the
/// first one, in the publisher's order, whose needs the consumer meets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VariantBody {
    /// Its name (`hd`, `sd`...).
    pub name: String,
    /// Its content, when not the service's file.
    #[serde(default)]
    pub file: Option<PathBuf>,
    /// The chunk size it is sent in, KiB (1-256).
    #[serde(default)]
    pub chunk_kib: Option<u32>,
    /// What it needs.
    #[serde(default)]
    pub needs: VariantNeeds,
}
