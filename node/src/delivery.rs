//! Service/Content Delivery (spec 5.6.7, G.1 steps 5-7): invoking a service with the
//! consumer's capabilities, start/stop control, and the content itself streamed on
//! `/cpns/delivery/1.0.0`, sealed chunk by chunk under the PN or Service Group key (public
//! services travel under the noise channel's encryption only), in pull or push mode.
//!
//! A delivery stream starts with one frame from its opener ([`Hello`]); the content sender
//! then writes a [`Opening`] frame and the chunks. Every frame is `u32 BE length || body`;
//! a chunk body is `flags (bit 0: last) || sealed bytes`. The sealing binds the stream id, the
//! chunk index and the last flag, so a reordered, dropped or truncated stream fails to open.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpns_directory::{KeyRing as _, ServiceDescription, Source};
use cpns_keys::{GroupId, GroupKey};
use cpns_overlay::{
    Capabilities, DELIVERY_PROTOCOL, DeliveryMessage, DeliveryMode, ErrorCode, InvokeDecision,
    Message, PowerSource, Protocol, codec,
};
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::sync::{Semaphore, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::error::OpError;
use crate::shared::{Shared, now};
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

/// The first frame of a delivery stream.
#[derive(Debug, Serialize, Deserialize)]
enum Hello {
    /// Consumer to offerer: send me the content of this session.
    Pull { session: u64 },
    /// Offerer to consumer: here is the content of this session.
    Push { session: u64 },
    /// A member pushes a file to another (`cpns content send`).
    Send { name: String },
}

/// What the content sender says before the chunks.
#[derive(Debug, Serialize, Deserialize)]
struct Opening {
    /// The group key (and epoch) the chunks are sealed under; `None` for public content.
    sealed: Option<(GroupId, u64)>,
    /// Random per stream, bound into every chunk's nonce and AAD.
    stream_id: u64,
    /// Total content length in bytes.
    length: u64,
}

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
    let mut file = tokio::fs::File::open(&s.path)
        .await
        .map_err(|e| OpError::Internal(format!("{}: {e}", s.path.display())))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?
        .len();
    stream_bytes(
        shared,
        out,
        key.as_ref(),
        &mut file,
        length,
        s.chunk,
        &s.stop,
    )
    .await?;
    debug!(service = %s.service_id, bytes = length, "content delivered");
    Ok(())
}

/// The sender's side of a content stream: opening, then chunks read from `input`.
async fn stream_bytes<W: AsyncWrite + Unpin, R: tokio::io::AsyncRead + Unpin>(
    shared: &Shared,
    out: &mut W,
    key: Option<&GroupKey>,
    input: &mut R,
    length: u64,
    chunk: usize,
    stop: &CancellationToken,
) -> Result<(), OpError> {
    let stream_id: u64 = rand::random();
    let opening = Opening {
        sealed: key.map(|k| (k.group().clone(), k.epoch())),
        stream_id,
        length,
    };
    write_frame(out, &opening).await?;
    let io = |e: std::io::Error| OpError::Unavailable(format!("delivery stream: {e}"));
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    let mut index = 0u64;
    loop {
        if stop.is_cancelled() {
            return Err(OpError::Conflict("stopped by the consumer".into()));
        }
        let want = ((length - sent) as usize).min(chunk);
        input.read_exact(&mut buf[..want]).await.map_err(io)?;
        let last = sent + want as u64 == length;
        let body = match key {
            Some(k) => k.seal_chunk(&shared.peer_id, stream_id, index, last, &buf[..want]),
            None => buf[..want].to_vec(),
        };
        let frame_len = u32::try_from(body.len() + 1)
            .map_err(|_| OpError::Internal("chunk too large".into()))?;
        out.write_all(&frame_len.to_be_bytes()).await.map_err(io)?;
        out.write_all(&[u8::from(last)]).await.map_err(io)?;
        out.write_all(&body).await.map_err(io)?;
        sent += want as u64;
        index += 1;
        shared.metrics.bytes_delivered.inc_by(want as u64);
        if last {
            break;
        }
    }
    out.close().await.map_err(io)?;
    Ok(())
}

/// The receiver's side: reads the opening and the chunks, opens each, writes the content to
/// `sink`; returns the byte count and the SHA-256.
async fn receive_content<R: AsyncRead + Unpin>(
    shared: &Shared,
    sender: &PeerId,
    input: &mut R,
    sink: &mut tokio::fs::File,
    max_len: u64,
) -> Result<(u64, String), OpError> {
    let opening: Opening = read_frame(input).await?;
    if opening.length > max_len {
        return Err(OpError::Refused(format!(
            "content of {} bytes is over the limit",
            opening.length
        )));
    }
    let key = match &opening.sealed {
        Some((g, epoch)) => Some(shared.keyring.by_epoch(g, *epoch).ok_or_else(|| {
            OpError::Refused(format!("no key of {g} epoch {epoch}: not a member?"))
        })?),
        None => None,
    };
    let io = |e: std::io::Error| OpError::Unavailable(format!("delivery stream: {e}"));
    let max_frame = CHUNK + 64;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut index = 0u64;
    loop {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).await.map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > max_frame {
            return Err(OpError::Refused(format!("bad chunk frame of {len} bytes")));
        }
        let mut frame = vec![0u8; len];
        input.read_exact(&mut frame).await.map_err(io)?;
        let last = frame[0] & 1 == 1;
        let plain = match &key {
            Some(k) => k
                .open_chunk(sender, opening.stream_id, index, last, &frame[1..])
                .map_err(|e| OpError::Refused(format!("chunk {index} did not open: {e}")))?,
            None => frame[1..].to_vec(),
        };
        got += plain.len() as u64;
        if got > opening.length {
            return Err(OpError::Refused("more content than announced".into()));
        }
        hasher.update(&plain);
        sink.write_all(&plain).await.map_err(io)?;
        shared.metrics.bytes_received.inc_by(plain.len() as u64);
        index += 1;
        if last {
            break;
        }
    }
    if got != opening.length {
        return Err(OpError::Refused(format!(
            "stream ended after {got} of {} bytes",
            opening.length
        )));
    }
    sink.flush().await.map_err(io)?;
    Ok((got, hex::encode(hasher.finalize())))
}

async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    out: &mut W,
    v: &T,
) -> Result<(), OpError> {
    let bytes = codec::encode(v).map_err(|e| OpError::Internal(e.to_string()))?;
    codec::write_frame(out, &bytes)
        .await
        .map_err(|e| OpError::Unavailable(format!("delivery stream: {e}")))
}

async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    input: &mut R,
) -> Result<T, OpError> {
    let bytes = codec::read_frame(input, MAX_CONTROL_FRAME)
        .await
        .map_err(|e| OpError::Refused(format!("delivery stream: {e}")))?;
    codec::decode(&bytes, MAX_CONTROL_FRAME)
        .map_err(|e| OpError::Refused(format!("delivery stream: {e}")))
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
        Hello::Send { name } => receive_file(shared, peer, stream, &name).await,
    }
}

/// G.1 steps 5-7 at the consumer: invoke with capabilities, then pull the content or have it
/// pushed, into `DATA_DIR/downloads/<service id>`; then the usage report (step 8).
pub(crate) async fn fetch(
    shared: &Arc<Shared>,
    service_id: &str,
    mode: DeliveryMode,
) -> Result<FetchOutcome, OpError> {
    let me = shared.peer_id;
    let found = crate::services::get(shared, service_id).await?;
    let desc: ServiceDescription = found.description;
    let offerer = match &desc.source {
        Source::Entity(p) => *p,
        Source::External { name, .. } => {
            return Err(OpError::Conflict(format!(
                "{service_id} is offered by the external provider {name}: reach it at {}",
                desc.endpoint.addresses.join(", ")
            )));
        }
    };
    // A PN member is admitted through the gateway's member list; any other offerer (a public
    // service of another household) hears from us after Entity Registration (B.1 steps 1-2).
    let known = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.is_member(&offerer))
        || shared.peer_entry(&offerer).is_some();
    if !known && offerer != me {
        crate::pn::member::register_with(shared, offerer).await?;
    }
    let (caps, _) = shared.refresh_caps();
    let started_at = now();
    let started = Instant::now();
    shared.trace(
        G1,
        5,
        &me,
        &offerer,
        "InvokeService",
        service_id.to_string(),
    );
    shared.trace(
        G1,
        6,
        &me,
        &offerer,
        "ShareDeviceCapabilities",
        caps.static_caps.device_type.clone(),
    );
    let answer = shared
        .client
        .request(
            offerer,
            Protocol::Cpns,
            Message::Delivery(DeliveryMessage::Invoke {
                service_id: service_id.to_string(),
                mode,
                capabilities: caps.clone(),
            }),
        )
        .await?;
    let Message::Delivery(DeliveryMessage::Invoked {
        decision, session, ..
    }) = answer
    else {
        return Err(OpError::Refused(format!(
            "unexpected answer {}",
            answer.name()
        )));
    };
    let decision_text = match &decision {
        InvokeDecision::Accepted => "accepted".to_string(),
        InvokeDecision::Adapted(a) => format!("adapted: {a}"),
        InvokeDecision::Refused(r) => {
            return Err(OpError::Refused(format!("the offerer refused: {r}")));
        }
    };

    let dir = shared.config.data_dir.join("downloads");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?;
    let path = dir.join(sanitise(service_id));
    let mut sink = tokio::fs::File::create(&path)
        .await
        .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
    let (bytes, sha256) = match mode {
        DeliveryMode::Pull => {
            let mut control = shared.client.stream_control();
            let mut stream = control
                .open_stream(offerer, DELIVERY_PROTOCOL)
                .await
                .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
            write_frame(&mut stream, &Hello::Pull { session }).await?;
            receive_content(shared, &offerer, &mut stream, &mut sink, u64::MAX).await?
        }
        DeliveryMode::Push => {
            let (tx, rx) = oneshot::channel();
            shared
                .delivery
                .waiting_push
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .insert(session, tx);
            let start = shared
                .client
                .request(
                    offerer,
                    Protocol::Cpns,
                    Message::Delivery(DeliveryMessage::Start { session }),
                )
                .await;
            if let Err(e) = start {
                shared
                    .delivery
                    .waiting_push
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .remove(&session);
                return Err(e.into());
            }
            let mut stream = tokio::time::timeout(PUSH_WAIT, rx)
                .await
                .map_err(|_| OpError::Unavailable("the offerer did not push in time".into()))?
                .map_err(|_| OpError::Unavailable("push cancelled".into()))?;
            receive_content(shared, &offerer, &mut stream, &mut sink, u64::MAX).await?
        }
    };
    let duration = started.elapsed();
    shared.trace(
        G1,
        7,
        &offerer,
        &me,
        "DeliverContent",
        format!("{bytes} bytes, {}", mode_name(mode)),
    );
    let status = shared.state().status.clone();
    let pn_id = shared.pn_id();
    let usage = crate::usage::report(
        shared,
        cpns_overlay::UsageRecord {
            service_id: desc.id.clone(),
            service_name: desc.name.clone(),
            offerer,
            pn_id,
            started: started_at,
            duration_ms: duration.as_millis() as u64,
            bytes,
            capabilities: caps,
            status,
        },
    )
    .await;
    Ok(FetchOutcome {
        service_id: desc.id,
        offerer: offerer.to_string(),
        mode: mode_name(mode).into(),
        decision: decision_text,
        bytes,
        sha256,
        path: path.display().to_string(),
        duration_ms: duration.as_secs_f64() * 1000.0,
        usage: usage.to_string(),
    })
}

fn mode_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::Pull => "pull",
        DeliveryMode::Push => "push",
    }
}

/// A file name without path separators or leading dots.
fn sanitise(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() { "content".into() } else { s }
}

/// `cpns content send`: pushes a file to a member of this node's PN, sealed under the PN key.
pub(crate) async fn send_file(
    shared: &Arc<Shared>,
    peer: PeerId,
    path: &Path,
) -> Result<u64, OpError> {
    let pn_id = shared
        .pn_id()
        .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
    let is_member = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.is_member(&peer));
    if !is_member {
        return Err(OpError::BadRequest(format!(
            "{peer} is not a member of this PN"
        )));
    }
    let key = shared
        .keyring
        .current(&crate::auth_link::pn_group(&pn_id))
        .ok_or_else(|| OpError::Conflict("no PN key held".into()))?;
    let mut file = tokio::fs::File::open(path)
        .await
        .map_err(|e| OpError::BadRequest(format!("{}: {e}", path.display())))?;
    let length = file
        .metadata()
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?
        .len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let mut control = shared.client.stream_control();
    let mut stream = control
        .open_stream(peer, DELIVERY_PROTOCOL)
        .await
        .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
    write_frame(&mut stream, &Hello::Send { name }).await?;
    stream_bytes(
        shared,
        &mut stream,
        Some(&key),
        &mut file,
        length,
        CHUNK,
        &CancellationToken::new(),
    )
    .await?;
    // Wait for the receiver to close its side, so that "sent" means "stored".
    let mut ack = [0u8; 1];
    let _ = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut ack)).await;
    Ok(length)
}

async fn receive_file(
    shared: &Arc<Shared>,
    peer: PeerId,
    mut stream: Stream,
    name: &str,
) -> Result<(), OpError> {
    let is_member = shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.is_member(&peer));
    if !is_member {
        return Err(OpError::Refused(
            "files are accepted from PN members only".into(),
        ));
    }
    let dir = shared.config.data_dir.join("inbox");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| OpError::Internal(e.to_string()))?;
    let path = dir.join(sanitise(name));
    let mut sink = tokio::fs::File::create(&path)
        .await
        .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
    let result = receive_content(shared, &peer, &mut stream, &mut sink, MAX_INBOX_FILE).await;
    if result.is_err() {
        let _ = tokio::fs::remove_file(&path).await;
    }
    let _ = stream.close().await;
    result.map(|_| ())
}

/// Files received with `cpns content send`.
pub(crate) async fn inbox(shared: &Shared) -> Vec<(String, u64)> {
    let dir = shared.config.data_dir.join("inbox");
    let mut out = Vec::new();
    if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
        while let Ok(Some(e)) = rd.next_entry().await {
            if let Ok(m) = e.metadata().await {
                out.push((e.file_name().to_string_lossy().into_owned(), m.len()));
            }
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::sanitise;

    #[test]
    fn sanitised_names_stay_in_their_directory() {
        assert_eq!(sanitise("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitise(".."), "content");
        assert_eq!(sanitise("svc-01ab"), "svc-01ab");
    }
}
