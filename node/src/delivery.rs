//! Service/Content Delivery (spec 5.6.7, G.1 steps 5-7): invoking a service with the
//! consumer's capabilities, start/stop control, and the content itself streamed on
//! `/cpns/delivery/1.0.0`, sealed chunk by chunk under the PN or Service Group key (public
//! services travel under the noise channel's encryption only), in pull or push mode.
//!
//! * this file: the offerer's side (sessions, decisions, sending) and the stream acceptor;
//! * [`stream`]: the wire format of a delivery stream;
//! * [`fetch`]: the consumer's side;
//! * [`files`]: `cpns content send` between members.

mod fetch;
mod files;
mod stream;

pub use stream::{decode_stream, encode_stream};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpns_directory::KeyRing as _;
use cpns_keys::GroupId;
use cpns_overlay::{
    Capabilities, DELIVERY_PROTOCOL, DeliveryMessage, DeliveryMode, ErrorCode, InvokeDecision,
    Message, PowerSource, codec,
};
use futures::{AsyncWrite, StreamExt};
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub(crate) use fetch::fetch;
pub(crate) use files::{inbox, send_file};
use stream::{Hello, read_frame, stream_file, write_frame};

use crate::error::OpError;
use crate::shared::Shared;
use crate::trace::flow::G1;

/// Chunk size for content; large enough to amortise framing, small enough to stream.
const CHUNK: usize = 256 * 1024;
/// Chunk size when the consumer is short of battery or memory (the offerer's adaptation).
const SMALL_CHUNK: usize = 32 * 1024;
/// Largest control frame (hello, opening).
const MAX_CONTROL_FRAME: usize = 16 * 1024;
/// Most open sessions at an offerer.
const MAX_SESSIONS: usize = 256;
/// An invoked session not started within this time is dropped.
const SESSION_TTL: Duration = Duration::from_secs(60);
/// Most delivery streams handled at once.
const MAX_STREAMS: usize = 32;
/// Largest file accepted by `cpns content send`.
const MAX_INBOX_FILE: u64 = 1 << 30;
/// How long a consumer waits for a pushed stream.
const PUSH_WAIT: Duration = Duration::from_secs(15);
/// Sled tree of the content sources of this node's services.
const CONTENT_TREE: &str = "content.v1";

/// Where a service's content comes from, at its offerer.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ContentSource {
    pub(crate) path: PathBuf,
}

/// An invoked session at the offerer.
struct Session {
    service_id: String,
    consumer: PeerId,
    mode: DeliveryMode,
    path: PathBuf,
    group: Option<GroupId>,
    chunk: usize,
    created: Instant,
    stop: CancellationToken,
}

/// Delivery state of a node.
#[derive(Default)]
pub(crate) struct Delivery {
    sessions: Mutex<HashMap<u64, Session>>,
    waiting_push: Mutex<HashMap<u64, oneshot::Sender<Stream>>>,
}

/// What a fetch delivered.
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
}

/// Registers the content of one of this node's services (a file it serves).
pub(crate) async fn register_content(
    shared: &Shared,
    service_id: &str,
    path: &Path,
) -> Result<(), OpError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| OpError::BadRequest(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(OpError::BadRequest(format!(
            "{} is not a file",
            path.display()
        )));
    }
    let path = tokio::fs::canonicalize(path)
        .await
        .map_err(|e| OpError::BadRequest(format!("{}: {e}", path.display())))?;
    let tree = shared
        .db
        .open_tree(CONTENT_TREE)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    let bytes =
        codec::encode(&ContentSource { path }).map_err(|e| OpError::Internal(e.to_string()))?;
    tree.insert(service_id.as_bytes(), bytes)
        .map_err(|e| OpError::Internal(e.to_string()))?;
    tree.flush_async()
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?;
    Ok(())
}

/// Forgets a service's content source.
pub(crate) async fn forget_content(shared: &Shared, service_id: &str) {
    if let Ok(tree) = shared.db.open_tree(CONTENT_TREE) {
        let _ = tree.remove(service_id.as_bytes());
        let _ = tree.flush_async().await;
    }
}

fn content_source(shared: &Shared, service_id: &str) -> Option<ContentSource> {
    let tree = shared.db.open_tree(CONTENT_TREE).ok()?;
    let bytes = tree.get(service_id.as_bytes()).ok()??;
    codec::decode(&bytes, 64 * 1024).ok()
}

/// Handles a delivery control request (at the offerer).
pub(crate) async fn handle(shared: &Arc<Shared>, peer: PeerId, msg: DeliveryMessage) -> Message {
    match msg {
        DeliveryMessage::Invoke {
            service_id,
            mode,
            capabilities,
        } => on_invoke(shared, peer, service_id, mode, capabilities).await,
        DeliveryMessage::Start { session } => {
            let ok = {
                let sessions = shared
                    .delivery
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                sessions
                    .get(&session)
                    .is_some_and(|s| s.consumer == peer && s.mode == DeliveryMode::Push)
            };
            if !ok {
                return Message::error(
                    ErrorCode::NotFound,
                    "no push session of yours with that id",
                );
            }
            let s = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = push(&s, peer, session).await {
                    warn!(%peer, session, "push delivery failed: {e}");
                }
            });
            Message::Ack
        }
        DeliveryMessage::Stop { session } => {
            let removed = {
                let mut sessions = shared
                    .delivery
                    .sessions
                    .lock()
                    .unwrap_or_else(|p| p.into_inner());
                match sessions.get(&session) {
                    Some(s) if s.consumer == peer => sessions.remove(&session),
                    _ => None,
                }
            };
            match removed {
                Some(s) => {
                    s.stop.cancel();
                    Message::Ack
                }
                None => Message::error(ErrorCode::NotFound, "no session of yours with that id"),
            }
        }
        DeliveryMessage::Invoked { .. } => {
            Message::error(ErrorCode::BadRequest, "Invoked is an answer")
        }
    }
}

/// G.1 steps 5-6 at the offerer: check the service, the consumer's capabilities against its
/// requirements, decide (accept, adapt, refuse) and open a session.
async fn on_invoke(
    shared: &Arc<Shared>,
    peer: PeerId,
    service_id: String,
    mode: DeliveryMode,
    caps: Capabilities,
) -> Message {
    let me = shared.peer_id;
    shared.trace(G1, 5, &peer, &me, "InvokeService", service_id.clone());
    let Ok(directory) = shared.services.directory() else {
        return Message::error(ErrorCode::NotRegistered, "this node is not enrolled");
    };
    let Some(desc) = directory
        .local_services()
        .into_iter()
        .find(|d| d.id == service_id)
    else {
        return Message::error(
            ErrorCode::NotFound,
            format!("this node does not offer {service_id}"),
        );
    };
    let Some(source) = content_source(shared, &service_id) else {
        return Message::error(
            ErrorCode::NotFound,
            format!("{service_id} has no content at this node"),
        );
    };
    let refuse = |reason: String| {
        shared.trace(
            G1,
            6,
            &peer,
            &me,
            "ShareDeviceCapabilities",
            format!("refused: {reason}"),
        );
        Message::Delivery(DeliveryMessage::Invoked {
            decision: InvokeDecision::Refused(reason),
            session: 0,
            length: None,
        })
    };
    if let Err(unmet) = desc.requirements.check(&caps) {
        return refuse(format!("{unmet}"));
    }
    let group = desc.visibility.group().cloned();
    if let Some(g) = &group
        && shared.keyring.current(g).is_none()
    {
        return refuse(format!("this node no longer holds the key of {g}"));
    }
    let length = match tokio::fs::metadata(&source.path).await {
        Ok(m) => m.len(),
        Err(e) => return refuse(format!("content unavailable: {e}")),
    };
    let low_power = caps.dynamic.power == PowerSource::Battery
        && caps
            .dynamic
            .battery_percent
            .is_some_and(|b| b < shared.config.status.battery_threshold);
    let (decision, chunk) = if low_power {
        (
            InvokeDecision::Adapted("consumer on low battery: content sent in small chunks".into()),
            SMALL_CHUNK,
        )
    } else {
        (InvokeDecision::Accepted, CHUNK)
    };
    let session = rand::random::<u64>() | 1;
    {
        let mut sessions = shared
            .delivery
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        sessions.retain(|_, s| s.created.elapsed() < SESSION_TTL);
        if sessions.len() >= MAX_SESSIONS {
            return Message::error(
                ErrorCode::Busy,
                "too many delivery sessions; try again later",
            );
        }
        sessions.insert(
            session,
            Session {
                service_id: service_id.clone(),
                consumer: peer,
                mode,
                path: source.path,
                group,
                chunk,
                created: Instant::now(),
                stop: CancellationToken::new(),
            },
        );
    }
    let detail = match &decision {
        InvokeDecision::Accepted => "accepted".to_string(),
        InvokeDecision::Adapted(a) => format!("adapted: {a}"),
        InvokeDecision::Refused(r) => format!("refused: {r}"),
    };
    shared.trace(G1, 6, &peer, &me, "ShareDeviceCapabilities", detail);
    Message::Delivery(DeliveryMessage::Invoked {
        decision,
        session,
        length: Some(length),
    })
}

fn take_session(
    shared: &Shared,
    session: u64,
    consumer: &PeerId,
    mode: DeliveryMode,
) -> Option<Session> {
    let mut sessions = shared
        .delivery
        .sessions
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match sessions.get(&session) {
        Some(s) if &s.consumer == consumer && s.mode == mode => sessions.remove(&session),
        _ => None,
    }
}

/// Push mode at the offerer: open a stream to the consumer and send the session's content.
async fn push(shared: &Arc<Shared>, consumer: PeerId, session: u64) -> Result<(), OpError> {
    let s = take_session(shared, session, &consumer, DeliveryMode::Push)
        .ok_or_else(|| OpError::NotFound("session gone".into()))?;
    let mut control = shared.client.stream_control();
    let mut stream = control
        .open_stream(consumer, DELIVERY_PROTOCOL)
        .await
        .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
    write_frame(&mut stream, &Hello::Push { session }).await?;
    send_content(shared, &mut stream, &s).await
}

/// Writes the opening and the sealed chunks of a session's content.
async fn send_content<W: AsyncWrite + Unpin>(
    shared: &Shared,
    out: &mut W,
    s: &Session,
) -> Result<(), OpError> {
    let key = match &s.group {
        Some(g) => Some(
            shared
                .keyring
                .current(g)
                .ok_or_else(|| OpError::Conflict(format!("no key of {g}")))?,
        ),
        None => None,
    };
    let file = std::fs::File::open(&s.path)
        .map_err(|e| OpError::Internal(format!("{}: {e}", s.path.display())))?;
    let length = file
        .metadata()
        .map_err(|e| OpError::Internal(e.to_string()))?
        .len();
    stream_file(shared, out, key, file, length, s.chunk, &s.stop).await?;
    debug!(service = %s.service_id, bytes = length, "content delivered");
    Ok(())
}

/// Accepts delivery streams for the node's lifetime.
pub(crate) fn spawn_acceptor(shared: &Arc<Shared>, tasks: &mut tokio::task::JoinSet<()>) {
    let mut control = shared.client.stream_control();
    let mut incoming = match control.accept(DELIVERY_PROTOCOL) {
        Ok(i) => i,
        Err(e) => {
            warn!("cannot accept delivery streams: {e}");
            return;
        }
    };
    let shared = shared.clone();
    tasks.spawn(async move {
        let permits = Arc::new(Semaphore::new(MAX_STREAMS));
        loop {
            let next = tokio::select! {
                biased;
                _ = shared.cancel.cancelled() => return,
                n = incoming.next() => n,
            };
            let Some((peer, stream)) = next else { return };
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                debug!(%peer, "too many delivery streams: dropping one");
                continue;
            };
            let s = shared.clone();
            tokio::spawn(async move {
                if let Err(e) = on_stream(&s, peer, stream).await {
                    debug!(%peer, "delivery stream failed: {e}");
                }
                drop(permit);
            });
        }
    });
}

async fn on_stream(shared: &Arc<Shared>, peer: PeerId, mut stream: Stream) -> Result<(), OpError> {
    let hello: Hello = read_frame(&mut stream).await?;
    match hello {
        Hello::Pull { session } => {
            let s = take_session(shared, session, &peer, DeliveryMode::Pull)
                .ok_or_else(|| OpError::NotFound("no such pull session for this peer".into()))?;
            send_content(shared, &mut stream, &s).await
        }
        Hello::Push { session } => {
            let waiter = shared
                .delivery
                .waiting_push
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&session);
            match waiter {
                Some(tx) => tx
                    .send(stream)
                    .map_err(|_| OpError::Conflict("the fetch gave up".into())),
                None => Err(OpError::NotFound("no fetch waits for this push".into())),
            }
        }
        Hello::Send { name } => files::receive_file(shared, peer, stream, &name).await,
    }
}
