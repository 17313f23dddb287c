//! Service/Content Delivery (spec 5.6.7, G.1 steps 5-7): invoking a service with the
//! consumer's capabilities, start/stop control, and the content itself streamed on
//! `/cpns/delivery/1.0.0`, sealed chunk by chunk under the PN or Service Group key (public
//! services travel under the noise channel's encryption only), in pull or push mode.
//!
//! * this file: the [`Delivery`] handle, the offerer's side (sessions, decisions, sending) and
//!   the stream acceptor, the module's one task;
//! * [`stream`]: the wire format of a delivery stream;
//! * [`fetch`]: the consumer's side;
//! * [`files`]: `cpns content send` between members.
//!
//! Who may invoke what: the router lets registered peers (and members) invoke; a service
//! visible to a PN only is invoked by that PN's members only. A delivery stream is accepted
//! from a registered peer or a member only, and its first frame must come within
//! [`FIRST_FRAME`].

mod fetch;
mod files;
mod stream;

pub use stream::{decode_stream, encode_stream};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpns_directory::{KeyRing as _, Visibility};
use cpns_keys::GroupId;
use cpns_overlay::{
    Capabilities, DELIVERY_PROTOCOL, DeliveryMessage, DeliveryMode, ErrorCode, InvokeDecision,
    Message, PowerSource, Protocol,
};
use futures::{AsyncWrite, StreamExt};
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

pub(crate) use fetch::FetchOutcome;
use stream::{Hello, read_frame, stream_file, write_frame};

use crate::authz;
use crate::context::Context;
use crate::error::OpError;
use crate::pn::{self, SenderClass};
use crate::services::Services;
use crate::store::{Typed, names};
use crate::trace::flow::G1;
use crate::usage::Usage;

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
/// Most delivery streams and pushes handled at once.
const MAX_STREAMS: usize = 32;
/// Most delivery streams one peer has open at once: a peer cannot take every slot (and the
/// only peers let in are registered ones, whose identities cost an enrolment).
const MAX_STREAMS_PER_PEER: usize = 4;
/// How long an opened delivery stream may take to send its first frame.
const FIRST_FRAME: Duration = Duration::from_secs(10);
/// Largest file accepted by `cpns content send`.
const MAX_INBOX_FILE: u64 = 1 << 30;
/// How long a consumer waits for a pushed stream.
const PUSH_WAIT: Duration = Duration::from_secs(15);

/// Where a service's content comes from, at its offerer (`content.v1`).
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

/// The delivery handle (cheap to clone).
#[derive(Clone)]
pub(crate) struct Delivery {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Context,
    pn: pn::Handle,
    services: Services,
    usage: Usage,
    content: Typed<ContentSource>,
    sessions: Mutex<HashMap<u64, Session>>,
    waiting_push: Mutex<HashMap<u64, oneshot::Sender<Stream>>>,
    /// Pushes to start, handed to the module's task (which owns their tasks).
    pushes: mpsc::Sender<(PeerId, u64)>,
    pushes_rx: Mutex<Option<mpsc::Receiver<(PeerId, u64)>>>,
}

impl Delivery {
    /// The delivery side of a node.
    pub(crate) fn new(
        ctx: Context,
        pn: pn::Handle,
        services: Services,
        usage: Usage,
    ) -> Result<Self, OpError> {
        let content = ctx
            .store
            .typed(names::CONTENT)
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let (pushes, rx) = mpsc::channel(MAX_STREAMS);
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                pn,
                services,
                usage,
                content,
                sessions: Mutex::new(HashMap::new()),
                waiting_push: Mutex::new(HashMap::new()),
                pushes,
                pushes_rx: Mutex::new(Some(rx)),
            }),
        })
    }

    fn ctx(&self) -> &Context {
        &self.inner.ctx
    }

    /// Registers the content of one of this node's services (a file it serves).
    pub(crate) async fn register_content(
        &self,
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
        self.inner
            .content
            .put(service_id.as_bytes(), &ContentSource { path })
            .await
            .map_err(|e| OpError::Internal(e.to_string()))
    }

    /// Forgets a service's content source.
    pub(crate) async fn forget_content(&self, service_id: &str) {
        if let Err(e) = self.inner.content.remove(service_id.as_bytes()).await {
            debug!("content source not removed: {e}");
        }
    }

    fn content_source(&self, service_id: &str) -> Option<ContentSource> {
        self.inner.content.get(service_id.as_bytes()).ok().flatten()
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Session>> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Handles a delivery control request (at the offerer), authorised by the router.
    pub(crate) async fn handle(
        &self,
        peer: PeerId,
        class: SenderClass,
        msg: DeliveryMessage,
    ) -> Message {
        match msg {
            DeliveryMessage::Invoke {
                service_id,
                mode,
                capabilities,
            } => {
                self.on_invoke(peer, class, service_id, mode, capabilities)
                    .await
            }
            DeliveryMessage::Start { session } => {
                let ok = self
                    .sessions()
                    .get(&session)
                    .is_some_and(|s| s.consumer == peer && s.mode == DeliveryMode::Push);
                if !ok {
                    return Message::error(
                        ErrorCode::NotFound,
                        "no push session of yours with that id",
                    );
                }
                if self.inner.pushes.try_send((peer, session)).is_err() {
                    return Message::error(ErrorCode::Busy, "too many deliveries; try again");
                }
                Message::Ack
            }
            DeliveryMessage::Stop { session } => {
                let removed = {
                    let mut sessions = self.sessions();
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

    /// G.1 steps 5-6 at the offerer: check the service, who may invoke it, the consumer's
    /// capabilities against its requirements, decide (accept, adapt, refuse) and open a
    /// session.
    async fn on_invoke(
        &self,
        peer: PeerId,
        class: SenderClass,
        service_id: String,
        mode: DeliveryMode,
        caps: Capabilities,
    ) -> Message {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        ctx.trace(G1, 5, &peer, &me, "InvokeService", service_id.clone());
        let Ok(directory) = self.inner.services.directory() else {
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
        // A PN's services are for its members.
        if let Visibility::Pn(group) = &desc.visibility {
            let member = matches!(class, SenderClass::Member | SenderClass::Gateway)
                && self.inner.pn.view().pn_id() == Some(group.0.as_str());
            if !member {
                return Message::error(
                    ErrorCode::Forbidden,
                    "this service is for the members of its PN",
                );
            }
        }
        let Some(source) = self.content_source(&service_id) else {
            return Message::error(
                ErrorCode::NotFound,
                format!("{service_id} has no content at this node"),
            );
        };
        let refuse = |reason: String| {
            ctx.trace(
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
            && ctx.keyring.current(g).is_none()
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
                .is_some_and(|b| b < ctx.config.status.battery_threshold);
        let (decision, chunk) = if low_power {
            (
                InvokeDecision::Adapted(
                    "consumer on low battery: content sent in small chunks".into(),
                ),
                SMALL_CHUNK,
            )
        } else {
            (InvokeDecision::Accepted, CHUNK)
        };
        let session = rand::random::<u64>() | 1;
        {
            let mut sessions = self.sessions();
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
        ctx.trace(G1, 6, &peer, &me, "ShareDeviceCapabilities", detail);
        Message::Delivery(DeliveryMessage::Invoked {
            decision,
            session,
            length: Some(length),
        })
    }

    fn take_session(&self, session: u64, consumer: &PeerId, mode: DeliveryMode) -> Option<Session> {
        let mut sessions = self.sessions();
        match sessions.get(&session) {
            Some(s) if &s.consumer == consumer && s.mode == mode => sessions.remove(&session),
            _ => None,
        }
    }

    /// Push mode at the offerer: open a stream to the consumer and send the session's content.
    async fn push(&self, consumer: PeerId, session: u64) -> Result<(), OpError> {
        let s = self
            .take_session(session, &consumer, DeliveryMode::Push)
            .ok_or_else(|| OpError::NotFound("session gone".into()))?;
        let mut control = self.ctx().client.stream_control();
        let mut stream = control
            .open_stream(consumer, DELIVERY_PROTOCOL)
            .await
            .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
        write_frame(&mut stream, &Hello::Push { session }).await?;
        self.send_content(&mut stream, &s).await
    }

    /// Writes the opening and the sealed chunks of a session's content.
    async fn send_content<W: AsyncWrite + Unpin>(
        &self,
        out: &mut W,
        s: &Session,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        let key = match &s.group {
            Some(g) => Some(
                ctx.keyring
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
        stream_file(ctx, out, key, file, length, s.chunk, &s.stop).await?;
        debug!(service = %s.service_id, bytes = length, "content delivered");
        Ok(())
    }

    /// The module's task: accepts delivery streams and runs pushes, each as a child in its
    /// own `JoinSet` (at most [`MAX_STREAMS`] at once), until the node stops.
    pub(crate) async fn run(self) {
        let ctx = self.ctx().clone();
        let mut control = ctx.client.stream_control();
        let mut incoming = match control.accept(DELIVERY_PROTOCOL) {
            Ok(i) => i,
            Err(e) => {
                warn!("cannot accept delivery streams: {e}");
                return;
            }
        };
        let Some(mut pushes) = self
            .inner
            .pushes_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let mut running: JoinSet<Option<PeerId>> = JoinSet::new();
        let mut per_peer: HashMap<PeerId, usize> = HashMap::new();
        let mut streams: HashMap<tokio::task::Id, PeerId> = HashMap::new();
        loop {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => break,
                Some(res) = running.join_next_with_id(), if !running.is_empty() => {
                    let id = match &res {
                        Ok((id, _)) => *id,
                        Err(e) => {
                            if e.is_panic() {
                                warn!("a delivery task panicked: {e}");
                            }
                            e.id()
                        }
                    };
                    if let Some(peer) = streams.remove(&id)
                        && let Some(n) = per_peer.get_mut(&peer)
                    {
                        *n -= 1;
                        if *n == 0 {
                            per_peer.remove(&peer);
                        }
                    }
                }
                p = pushes.recv() => {
                    let Some((peer, session)) = p else { break };
                    let d = self.clone();
                    running.spawn(async move {
                        if let Err(e) = d.push(peer, session).await {
                            warn!(%peer, session, "push delivery failed: {e}");
                        }
                        None
                    });
                }
                n = incoming.next() => {
                    let Some((peer, stream)) = n else { break };
                    if running.len() >= MAX_STREAMS {
                        debug!(%peer, "too many delivery streams: dropping one");
                        continue;
                    }
                    // Only registered peers and members open delivery streams.
                    let view = self.inner.pn.view();
                    let sender = authz::classify(&view, Protocol::Cpns, &peer, crate::now());
                    if !matches!(
                        sender,
                        authz::Sender::Class(
                            SenderClass::Enrolled | SenderClass::Member | SenderClass::Gateway
                        )
                    ) {
                        debug!(%peer, sender = sender.label(), "delivery stream refused");
                        continue;
                    }
                    let open = per_peer.entry(peer).or_default();
                    if *open >= MAX_STREAMS_PER_PEER {
                        debug!(%peer, "too many delivery streams from one peer: dropping one");
                        continue;
                    }
                    *open += 1;
                    let d = self.clone();
                    let task = running.spawn(async move {
                        if let Err(e) = d.on_stream(peer, stream).await {
                            debug!(%peer, "delivery stream failed: {e}");
                        }
                        Some(peer)
                    });
                    streams.insert(task.id(), peer);
                }
            }
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
    }

    async fn on_stream(&self, peer: PeerId, mut stream: Stream) -> Result<(), OpError> {
        let hello: Hello = tokio::time::timeout(FIRST_FRAME, read_frame(&mut stream))
            .await
            .map_err(|_| OpError::Refused("no first frame in time".into()))??;
        match hello {
            Hello::Pull { session } => {
                let s = self
                    .take_session(session, &peer, DeliveryMode::Pull)
                    .ok_or_else(|| {
                        OpError::NotFound("no such pull session for this peer".into())
                    })?;
                self.send_content(&mut stream, &s).await
            }
            Hello::Push { session } => {
                let waiter = self
                    .inner
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
            Hello::Send { name } => self.receive_file(peer, stream, &name).await,
        }
    }
}
