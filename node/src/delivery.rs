//! Service/Content Delivery (spec 5.6.7, G.1 steps 5-7): invoking one or several services with
//! the consumer's capabilities (accept, adapt, choose a variant, refuse), control of a running
//! delivery from either side (start, pause, resume, stop), and the content itself streamed on
//! `/cpns/delivery/1.0.0`, sealed chunk by chunk under the PN or Service Group key (public
//! services travel under the noise channel's encryption only), pulled by the consumer or
//! pushed by the offerer; pushes started by the offerer; forwarding through the gateway;
//! aggregation and distribution of feeds; content from external HTTP servers; usage sampled
//! during use and reported.
//!
//! * this file: the [`Delivery`] handle, content sources, the offerer's side of an invocation
//!   (sessions, decisions, variants, sending) and the module's one task, which accepts delivery
//!   streams and runs pushes and retries;
//! * [`session`]: sessions and their control; [`stream`]: the wire format of a delivery
//!   stream; [`fair`]: deliveries to one consumer take turns;
//! * [`fetch`]: the consumer's side, with [`samples`] (usage during use) and [`collector`]
//!   (the external usage collector);
//! * [`push`]: offerer-initiated pushes, the receiver's policy and inbox, the offline queue;
//!   [`forward`]: streams relayed by the gateway; [`e2e`]: end-to-end sealing for them;
//! * [`feeds`]: aggregation and distribution; [`external`]: external content servers;
//! * [`variants`]: capability-based invocation; [`content`]: the public face of all this.
//!
//! Who may invoke what: the router lets registered peers (and members) invoke; a service
//! visible to a PN only is invoked by that PN's members only. A delivery stream is accepted
//! from a registered peer or a member only, at most [`MAX_STREAMS_PER_PEER`] at once, and its
//! first frame must come within [`FIRST_FRAME`].

mod collector;
mod content;
mod device;
mod e2e;
mod external;
mod fair;
mod feeds;
mod fetch;
mod files;
mod forward;
mod push;
mod samples;
mod session;
mod stream;
mod switch;
mod variants;

pub use stream::{decode_stream, encode_stream};

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cpns_directory::{KeyRing as _, ServiceDescription, Visibility};
use cpns_overlay::{
    Capabilities, DELIVERY_PROTOCOL, DeliveryMessage, DeliveryMode, ErrorCode, InvokeAnswer,
    InvokeDecision, MAX_INVOKE_SERVICES, Message, PowerSource, Protocol,
};
use futures::StreamExt;
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, warn};

pub use content::Content;
pub(crate) use device::http_client;
pub use feeds::{ReceivedFeed, Recipient, open_part};
pub use fetch::FetchOutcome;
pub use push::{PendingPush, PushOutcome, PushTarget, Target};
pub use session::SessionInfo;
pub use variants::{Needs, Variant};

use session::{Body, Control, Invoked, Live, Party, Role, Sessions};
use stream::{Decision, Hello, Seal, SendOpts, read_frame, stream_file, write_frame};

use crate::auth_link::AuthLink;
use crate::authz;
use crate::context::Context;
use crate::error::OpError;
use crate::pn::{self, SenderClass};
use crate::services::Services;
use crate::store::{Typed, names};
use crate::trace::flow::{DELIVERY, G1, PROXY};
use crate::usage::Usage;

/// Chunk size for content; large enough to amortise framing, small enough to stream. Also the
/// largest a variant may ask for.
const CHUNK: usize = 256 * 1024;
/// Chunk size when the consumer is short of battery or memory (the offerer's adaptation for
/// services without variants).
const SMALL_CHUNK: usize = 32 * 1024;
/// Largest control frame (hello, opening, decisions).
const MAX_CONTROL_FRAME: usize = 16 * 1024;
/// Most sessions at a node (invoked, live, either side).
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
/// How long a relayed stream from a member this node does not know yet waits for the
/// gateway's member table update.
const MEMBER_LAG: Duration = Duration::from_secs(5);
/// How long a consumer waits for a pushed stream.
const PUSH_WAIT: Duration = Duration::from_secs(15);
/// How often the external usage collector's queue is retried.
const COLLECTOR_RETRY: Duration = Duration::from_secs(30);

/// Where a service's content comes from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Origin {
    /// A file of this node.
    File(PathBuf),
    /// An external Application/Content server: fetched by this node (once for many
    /// consumers) and delivered sealed.
    Http(String),
    /// A proxied UPnP/DLNA device's item (5.6.10): fetched from the device over HTTP each
    /// time it is delivered, streamed sealed as it arrives ([`device`]); `length` is its size
    /// when it was published, which the device must still send.
    Device {
        /// The item's `res` URL, on the device that described it.
        url: String,
        /// Its size in bytes at publication.
        length: u64,
    },
}

/// A service's content at its offerer (`content.v2`): where it comes from, and its variants.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContentSource {
    /// The content (and the variants' default).
    pub origin: Origin,
    /// Variants for different devices, best first; empty: one content for all.
    pub variants: Vec<Variant>,
}

/// The first format (`content.v1`): a file only. Read when no v2 entry exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct LegacySource {
    path: PathBuf,
}

/// Work for the module's task.
enum Task {
    /// Push a session's content to its consumer (after `Start`).
    PushSession(PeerId, u64),
    /// Continue a session another PNE of this user handed over (5.6.9).
    Continue(Box<switch::Continuation>),
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
    auth: AuthLink,
    content: Typed<ContentSource>,
    legacy_content: Typed<LegacySource>,
    sessions: Mutex<Sessions>,
    waiting_push: Mutex<HashMap<u64, oneshot::Sender<Stream>>>,
    fair: fair::Shares,
    pushes: push::Pushes,
    feeds: feeds::Feeds,
    external: external::Cache,
    /// The client for proxied devices' items.
    device_http: reqwest::Client,
    collector: Option<collector::Collector>,
    /// Sessions moving to or from another PNE of this user (5.6.9).
    switches: switch::Switches,
    /// Relayed streams this node (a gateway) carries now.
    relays: Arc<tokio::sync::Semaphore>,
    /// Work to start, handed to the module's task (which owns its tasks).
    tasks: mpsc::Sender<Task>,
    tasks_rx: Mutex<Option<mpsc::Receiver<Task>>>,
}

/// The error an unexpected answer stands for.
pub(crate) fn answer_error(m: Message) -> OpError {
    match m {
        Message::Error(e) => OpError::Refused(e.to_string()),
        other => OpError::Refused(format!("unexpected answer {}", other.name())),
    }
}

impl Delivery {
    /// The delivery side of a node.
    pub(crate) fn new(
        ctx: Context,
        pn: pn::Handle,
        services: Services,
        usage: Usage,
        auth: AuthLink,
    ) -> Result<Self, OpError> {
        let internal = |e: crate::store::StoreError| OpError::Internal(e.to_string());
        let content = ctx.store.typed(names::CONTENT_V2).map_err(internal)?;
        let legacy_content = ctx.store.typed(names::CONTENT).map_err(internal)?;
        let pushes = push::Pushes::open(&ctx).map_err(internal)?;
        let collector = collector::Collector::new(&ctx.config.usage.collector_url);
        let (tasks, rx) = mpsc::channel(MAX_STREAMS);
        let device_http = device::http_client(None)?;
        Ok(Self {
            inner: Arc::new(Inner {
                ctx,
                pn,
                services,
                usage,
                auth,
                content,
                legacy_content,
                sessions: Mutex::new(Sessions::default()),
                waiting_push: Mutex::new(HashMap::new()),
                fair: fair::Shares::default(),
                pushes,
                feeds: feeds::Feeds::default(),
                external: external::Cache::default(),
                device_http,
                collector,
                switches: switch::Switches::default(),
                relays: Arc::new(tokio::sync::Semaphore::new(forward::MAX_RELAYS)),
                tasks,
                tasks_rx: Mutex::new(Some(rx)),
            }),
        })
    }

    fn ctx(&self) -> &Context {
        &self.inner.ctx
    }

    /// The public face (API, tests).
    pub(crate) fn content(&self) -> Content {
        Content::new(self.clone())
    }

    /// Registers a service's content source, checking its files and variants.
    pub(crate) async fn register_source(
        &self,
        service_id: &str,
        mut source: ContentSource,
    ) -> Result<(), OpError> {
        if let Origin::File(path) = &mut source.origin {
            *path = checked_file(path).await?;
        }
        if let Origin::Http(url) | Origin::Device { url, .. } = &source.origin
            && !url.starts_with("http://")
        {
            return Err(OpError::BadRequest(format!(
                "{url}: an external source is an http:// URL"
            )));
        }
        if source.variants.len() > variants::MAX_VARIANTS {
            return Err(OpError::BadRequest(format!(
                "at most {} variants",
                variants::MAX_VARIANTS
            )));
        }
        for v in &mut source.variants {
            variants::validate(v).map_err(OpError::BadRequest)?;
            if let Some(f) = &mut v.file {
                *f = checked_file(f).await?;
            }
        }
        self.inner
            .content
            .put(service_id.as_bytes(), &source)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))
    }

    /// Forgets a service's content source.
    pub(crate) async fn forget_content(&self, service_id: &str) {
        for r in [
            self.inner.content.remove(service_id.as_bytes()).await,
            self.inner
                .legacy_content
                .remove(service_id.as_bytes())
                .await,
        ] {
            if let Err(e) = r {
                debug!("content source not removed: {e}");
            }
        }
    }

    fn content_source(&self, service_id: &str) -> Option<ContentSource> {
        if let Some(s) = self.inner.content.get(service_id.as_bytes()).ok().flatten() {
            return Some(s);
        }
        self.inner
            .legacy_content
            .get(service_id.as_bytes())
            .ok()
            .flatten()
            .map(|l| ContentSource {
                origin: Origin::File(l.path),
                variants: Vec::new(),
            })
    }

    fn sessions(&self) -> std::sync::MutexGuard<'_, Sessions> {
        self.inner
            .sessions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Handles a delivery control request (the router authorised its kind for the sender).
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
                let a = self
                    .invoke_one(peer, class, service_id, mode, &capabilities)
                    .await;
                match a {
                    Ok(a) => Message::Delivery(DeliveryMessage::Invoked {
                        decision: a.decision,
                        session: a.session,
                        length: a.length,
                    }),
                    Err(e) => e,
                }
            }
            DeliveryMessage::InvokeMany {
                service_ids,
                mode,
                capabilities,
            } => {
                if service_ids.is_empty() || service_ids.len() > MAX_INVOKE_SERVICES {
                    return Message::error(
                        ErrorCode::BadRequest,
                        format!("name 1 to {MAX_INVOKE_SERVICES} services"),
                    );
                }
                let mut answers = Vec::with_capacity(service_ids.len());
                for id in service_ids {
                    match self
                        .invoke_one(peer, class, id.clone(), mode, &capabilities)
                        .await
                    {
                        Ok(a) => answers.push(a),
                        Err(Message::Error(e)) => answers.push(InvokeAnswer {
                            service_id: id,
                            decision: InvokeDecision::Refused(e.message),
                            session: 0,
                            length: None,
                            variant: None,
                        }),
                        Err(other) => return other,
                    }
                }
                Message::Delivery(DeliveryMessage::InvokedMany { answers })
            }
            DeliveryMessage::Start { session } => {
                let ok = self
                    .sessions()
                    .invoked
                    .get(&session)
                    .is_some_and(|s| s.consumer == peer && s.mode == DeliveryMode::Push);
                if !ok {
                    return Message::error(
                        ErrorCode::NotFound,
                        "no push session of yours with that id",
                    );
                }
                if self
                    .inner
                    .tasks
                    .try_send(Task::PushSession(peer, session))
                    .is_err()
                {
                    return Message::error(ErrorCode::Busy, "too many deliveries; try again");
                }
                Message::Ack
            }
            DeliveryMessage::Stop { session } => self.on_control(peer, session, Action::Stop),
            DeliveryMessage::Pause { session } => self.on_control(peer, session, Action::Pause),
            DeliveryMessage::Resume { session } => self.on_control(peer, session, Action::Resume),
            DeliveryMessage::Contribute { feed, common, part } => {
                self.on_contribute(peer, feed, common, part)
            }
            DeliveryMessage::FeedRequest { feed } => self.on_feed_request(peer, feed),
            DeliveryMessage::Distribute(d) => self.on_distribute(peer, d),
            DeliveryMessage::Switch { session, to } => self.on_switch(peer, session, to),
            DeliveryMessage::HandOver(h) => self.on_hand_over(peer, class, h).await,
            DeliveryMessage::Continue { session, offset } => {
                self.on_continue(peer, session, offset)
            }
            DeliveryMessage::Invoked { .. }
            | DeliveryMessage::InvokedMany { .. }
            | DeliveryMessage::Feed(_) => {
                Message::error(ErrorCode::BadRequest, "an answer, not a request")
            }
        }
    }

    /// A control request from the other side of a session.
    fn on_control(&self, peer: PeerId, session: u64, action: Action) -> Message {
        let me = self.ctx().peer_id;
        let found = {
            let mut s = self.sessions();
            if let Some(l) = s
                .live
                .get(&(Role::Offerer, session))
                .filter(|l| l.peer == peer)
            {
                Some((l.control.clone(), Party::Consumer))
            } else if let Some(l) = s
                .live
                .get(&(Role::Consumer, session))
                .filter(|l| l.peer == peer)
            {
                Some((l.control.clone(), Party::Offerer))
            } else if let Some(i) = s.invoked.get(&session).filter(|i| i.consumer == peer) {
                if action == Action::Stop {
                    s.invoked.remove(&session);
                    self.ctx().trace(
                        DELIVERY,
                        1,
                        &peer,
                        &me,
                        "StopService",
                        format!("{} (not started)", session::session_text(session)),
                    );
                    return Message::Ack;
                }
                Some((i.control.clone(), Party::Consumer))
            } else {
                None
            }
        };
        let Some((control, by)) = found else {
            return Message::error(ErrorCode::NotFound, "no session of yours with that id");
        };
        self.ctx().trace(
            DELIVERY,
            1,
            &peer,
            &me,
            action.message(),
            session::session_text(session),
        );
        action.apply(&control, by);
        Message::Ack
    }

    /// Control of a session at this node (`cpns content stop|pause|resume ID`): applied here,
    /// and told to the other side.
    pub(crate) async fn control(
        &self,
        session: u64,
        action: Action,
    ) -> Result<SessionInfo, OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let found = {
            let mut s = self.sessions();
            let live = [Role::Consumer, Role::Offerer]
                .into_iter()
                .find_map(|role| s.live.get(&(role, session)).map(|l| (role, l.clone())));
            match live {
                Some(l) => Some(l),
                None if action != Action::Stop => s.invoked.get(&session).map(|i| {
                    let live = Live {
                        service_id: i.service_id.clone(),
                        peer: i.consumer,
                        mode: i.mode,
                        variant: i.variant.clone(),
                        control: i.control.clone(),
                        served: None,
                    };
                    (Role::Offerer, live)
                }),
                None => match s.invoked.remove(&session) {
                    // Invoked, never started: dropped here; its consumer finds it gone.
                    Some(i) => {
                        return Ok(SessionInfo {
                            id: session::session_text(session),
                            role: "offerer",
                            service_id: i.service_id,
                            peer: i.consumer.to_string(),
                            mode: fetch::mode_name(i.mode),
                            state: session::RunState::Stopped(Party::Offerer).label(),
                            bytes: 0,
                            total: i.length,
                            variant: i.variant,
                        });
                    }
                    None => None,
                },
            }
        };
        let (role, live) =
            found.ok_or_else(|| OpError::NotFound("no such session at this node".into()))?;
        let (peer, control) = (live.peer, live.control.clone());
        let by = match role {
            Role::Consumer => Party::Consumer,
            Role::Offerer => Party::Offerer,
        };
        ctx.trace(
            DELIVERY,
            1,
            &me,
            &peer,
            action.message(),
            session::session_text(session),
        );
        // The consumer tells the offerer, whose stream then carries the change to both loops;
        // the offerer's own change reaches the consumer in the stream.
        if role == Role::Consumer {
            let msg = match action {
                Action::Stop => DeliveryMessage::Stop { session },
                Action::Pause => DeliveryMessage::Pause { session },
                Action::Resume => DeliveryMessage::Resume { session },
            };
            let told = tokio::time::timeout(
                Duration::from_secs(10),
                ctx.client
                    .request(peer, Protocol::Cpns, Message::Delivery(msg)),
            )
            .await;
            match told {
                Ok(Ok(_)) => {}
                // A stop happens here whatever the offerer says.
                _ if action == Action::Stop => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(_) => return Err(OpError::Unavailable("the offerer did not answer".into())),
            }
        }
        // A pause frame of the offerer that came first says who paused (the consumer), so
        // this finds the session paused by the consumer already.
        action.apply(&control, by);
        Ok(live.info(role, session))
    }

    /// Every session at this node.
    pub(crate) fn session_infos(&self) -> Vec<SessionInfo> {
        self.sessions().infos()
    }

    /// G.1 steps 5-6 at the offerer, for one service: check the service, who may invoke it,
    /// the consumer's capabilities against its requirements and variants, decide (accept,
    /// adapt, refuse) and open a session. An `Err` is the error answer to send.
    async fn invoke_one(
        &self,
        peer: PeerId,
        class: SenderClass,
        service_id: String,
        mode: DeliveryMode,
        caps: &Capabilities,
    ) -> Result<InvokeAnswer, Message> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        ctx.trace(G1, 5, &peer, &me, "InvokeService", service_id.clone());
        let Ok(directory) = self.inner.services.directory() else {
            return Err(Message::error(
                ErrorCode::NotRegistered,
                "this node is not enrolled",
            ));
        };
        let Some(desc) = directory
            .local_services()
            .into_iter()
            .find(|d| d.id == service_id)
        else {
            return Err(Message::error(
                ErrorCode::NotFound,
                format!("this node does not offer {service_id}"),
            ));
        };
        // A PN's services are for its members.
        if let Visibility::Pn(group) = &desc.visibility {
            let member = matches!(class, SenderClass::Member | SenderClass::Gateway)
                && self.inner.pn.view().pn_id() == Some(group.0.as_str());
            if !member {
                return Err(Message::error(
                    ErrorCode::Forbidden,
                    "this service is for the members of its PN",
                ));
            }
        }
        let Some(source) = self.content_source(&service_id) else {
            return Err(Message::error(
                ErrorCode::NotFound,
                format!("{service_id} has no content at this node"),
            ));
        };
        let refused = |reason: String| {
            ctx.trace(
                G1,
                6,
                &peer,
                &me,
                "ShareDeviceCapabilities",
                format!("refused: {reason}"),
            );
            InvokeAnswer {
                service_id: service_id.clone(),
                decision: InvokeDecision::Refused(reason),
                session: 0,
                length: None,
                variant: None,
            }
        };
        let chosen = match self.choose(&desc, &source, caps).await {
            Ok(c) => c,
            Err(reason) => return Ok(refused(reason)),
        };
        let length = match &chosen.body {
            Body::File(path) => match tokio::fs::metadata(path).await {
                Ok(m) => m.len(),
                Err(e) => return Ok(refused(format!("content unavailable: {e}"))),
            },
            Body::Device(url) => {
                if let Err(why) = device::check(&self.inner.device_http, url, chosen.length).await {
                    return Ok(refused(why));
                }
                chosen.length
            }
        };
        let session = rand::random::<u64>() | 1;
        {
            let mut sessions = self.sessions();
            sessions.invoked.retain(|_, s| s.created.elapsed() < s.ttl);
            if sessions.invoked.len() + sessions.live.len() >= MAX_SESSIONS {
                return Err(Message::error(
                    ErrorCode::Busy,
                    "too many delivery sessions; try again later",
                ));
            }
            sessions.invoked.insert(
                session,
                Invoked {
                    service_id: service_id.clone(),
                    consumer: peer,
                    mode,
                    body: chosen.body,
                    length,
                    group: desc.visibility.group().cloned(),
                    chunk: chosen.chunk,
                    variant: chosen.variant.clone(),
                    created: Instant::now(),
                    ttl: SESSION_TTL,
                    control: Control::new(length),
                    offset: 0,
                },
            );
        }
        let detail = match &chosen.decision {
            InvokeDecision::Accepted => "accepted".to_string(),
            InvokeDecision::Adapted(a) => format!("adapted: {a}"),
            InvokeDecision::Refused(r) => format!("refused: {r}"),
        };
        ctx.trace(G1, 6, &peer, &me, "ShareDeviceCapabilities", detail);
        Ok(InvokeAnswer {
            service_id,
            decision: chosen.decision,
            session,
            length: Some(length),
            variant: chosen.variant,
        })
    }

    /// What to send this consumer: the variant for its capabilities (or the adaptation of a
    /// service without variants), resolved to a file.
    async fn choose(
        &self,
        desc: &ServiceDescription,
        source: &ContentSource,
        caps: &Capabilities,
    ) -> Result<Chosen, String> {
        let ctx = self.ctx();
        desc.requirements.check(caps).map_err(|u| u.to_string())?;
        if let Some(g) = desc.visibility.group()
            && ctx.keyring.current(g).is_none()
        {
            return Err(format!("this node no longer holds the key of {g}"));
        }
        let (file, chunk, decision, variant) = if source.variants.is_empty() {
            let low_power = caps.dynamic.power == PowerSource::Battery
                && caps
                    .dynamic
                    .battery_percent
                    .is_some_and(|b| b < ctx.config.status.battery_threshold);
            if low_power {
                let why = "consumer on low battery: content sent in small chunks";
                (None, SMALL_CHUNK, InvokeDecision::Adapted(why.into()), None)
            } else {
                (None, CHUNK, InvokeDecision::Accepted, None)
            }
        } else {
            let (v, passed) = variants::choose(&source.variants, caps)?;
            let chunk = v.chunk_kib.map_or(CHUNK, |k| k as usize * 1024);
            let why = if passed.is_empty() {
                format!("variant {} for this device", v.name)
            } else {
                format!("variant {} for this device ({})", v.name, passed.join("; "))
            };
            (
                v.file.clone(),
                chunk,
                InvokeDecision::Adapted(why),
                Some(v.name.clone()),
            )
        };
        let (body, length) = match (file, &source.origin) {
            (Some(f), _) => (Body::File(f), 0),
            (None, Origin::File(p)) => (Body::File(p.clone()), 0),
            (None, Origin::Http(url)) => {
                let fetched = self
                    .inner
                    .external
                    .get(ctx, url)
                    .await
                    .map_err(|e| e.to_string())?;
                (Body::File(fetched.path), 0)
            }
            (None, Origin::Device { url, length }) => (Body::Device(url.clone()), *length),
        };
        Ok(Chosen {
            body,
            length,
            chunk,
            decision,
            variant,
        })
    }

    fn take_invoked(&self, session: u64, consumer: &PeerId, mode: DeliveryMode) -> Option<Invoked> {
        let mut sessions = self.sessions();
        match sessions.invoked.get(&session) {
            Some(s) if &s.consumer == consumer && s.mode == mode => {
                sessions.invoked.remove(&session)
            }
            _ => None,
        }
    }

    /// Push mode at the offerer: open a stream to the consumer and send the session's content.
    async fn push_session(&self, consumer: PeerId, session: u64) -> Result<(), OpError> {
        let s = self
            .take_invoked(session, &consumer, DeliveryMode::Push)
            .ok_or_else(|| OpError::NotFound("session gone".into()))?;
        let mut control = self.ctx().client.stream_control();
        let mut stream = control
            .open_stream(consumer, DELIVERY_PROTOCOL)
            .await
            .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
        stream::write_frame(&mut stream, &Hello::Push { session }).await?;
        self.serve(&mut stream, session, s).await
    }

    /// Sends a started session's content, as a live session others can control.
    async fn serve(&self, out: &mut Stream, session: u64, s: Invoked) -> Result<(), OpError> {
        let ctx = self.ctx();
        let seal = match &s.group {
            Some(g) => Seal::current(ctx, g)?,
            None => Seal::public(),
        };
        let control = s.control.clone();
        // Resume by offset: the consumer has the first `offset` bytes already (checked
        // against the length when it asked).
        let offset = s.offset.min(control.total());
        let (input, length): (Box<dyn std::io::Read + Send>, u64) = match &s.body {
            Body::File(path) => {
                let mut file = std::fs::File::open(path)
                    .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
                let length = file
                    .metadata()
                    .map_err(|e| OpError::Internal(e.to_string()))?
                    .len();
                if length != control.total() {
                    return Err(OpError::Conflict(
                        "the content changed since it was invoked".into(),
                    ));
                }
                if offset > 0 {
                    use std::io::Seek;
                    file.seek(std::io::SeekFrom::Start(offset))
                        .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
                }
                (Box::new(file), length)
            }
            Body::Device(url) => {
                let length = control.total();
                let me = ctx.peer_id;
                ctx.trace(
                    PROXY,
                    7,
                    &me,
                    &s.consumer,
                    "Service/Content Delivery (proxied)",
                    format!(
                        "{} for {}: {length} bytes from the device{}",
                        s.service_id,
                        session::session_text(session),
                        if offset > 0 {
                            format!(" from byte {offset}")
                        } else {
                            String::new()
                        }
                    ),
                );
                let body = device::open(&self.inner.device_http, url, offset, length)
                    .await
                    .inspect_err(|e| {
                        warn!(service = %s.service_id, "proxied item not delivered: {e}");
                    })?;
                (Box::new(body), length)
            }
        };
        if offset > 0 {
            control.add(offset);
        }
        self.sessions().live.insert(
            (Role::Offerer, session),
            Live {
                service_id: s.service_id.clone(),
                peer: s.consumer,
                mode: s.mode,
                variant: s.variant.clone(),
                control: control.clone(),
                served: Some(Arc::new(session::Served {
                    body: s.body.clone(),
                    length,
                    group: s.group.clone(),
                    chunk: s.chunk,
                })),
            },
        );
        let opts = SendOpts {
            chunk: s.chunk,
            control: Some(control.clone()),
            turn: Some(self.inner.fair.turn(s.consumer)),
        };
        let result = stream_file(ctx, out, seal, input, length - offset, opts).await;
        {
            // A switch (5.6.9) may have opened the session again for another consumer: only
            // this delivery's entry is removed.
            let mut sessions = self.sessions();
            let key = (Role::Offerer, session);
            if sessions
                .live
                .get(&key)
                .is_some_and(|l| Arc::ptr_eq(&l.control, &control))
            {
                sessions.live.remove(&key);
            }
        }
        let (ended, bytes) = result?;
        debug!(service = %s.service_id, bytes, ended = %ended.label(), "content sent");
        Ok(())
    }

    /// The module's task: accepts delivery streams and runs pushes and retries, each as a
    /// child in its own `JoinSet` (at most [`MAX_STREAMS`] at once), until the node stops.
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
        let Some(mut tasks) = self
            .inner
            .tasks_rx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        else {
            return;
        };
        let mut running: JoinSet<()> = JoinSet::new();
        let mut per_peer: HashMap<PeerId, usize> = HashMap::new();
        let mut streams: HashMap<tokio::task::Id, PeerId> = HashMap::new();
        let mut retry =
            tokio::time::interval(Duration::from_secs(ctx.config.delivery.push_retry_secs));
        retry.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut collector_tick = tokio::time::interval(COLLECTOR_RETRY);
        collector_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut views = self.inner.pn.watch();
        let mut retrying: Option<tokio::task::Id> = None;
        let mut online = push::OnlineWatch::default();
        loop {
            let retry_now = tokio::select! {
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
                    if retrying == Some(id) {
                        retrying = None;
                    }
                    if let Some(peer) = streams.remove(&id)
                        && let Some(n) = per_peer.get_mut(&peer)
                    {
                        *n -= 1;
                        if *n == 0 {
                            per_peer.remove(&peer);
                        }
                    }
                    false
                }
                t = tasks.recv() => {
                    let d = self.clone();
                    match t {
                        None => break,
                        Some(Task::PushSession(peer, session)) => {
                            running.spawn(async move {
                                if let Err(e) = d.push_session(peer, session).await {
                                    warn!(%peer, session, "push delivery failed: {e}");
                                }
                            });
                        }
                        Some(Task::Continue(c)) => {
                            running.spawn(async move { d.continue_handed(*c).await });
                        }
                    }
                    false
                }
                _ = retry.tick() => true,
                changed = views.changed() => {
                    if changed.is_err() {
                        break;
                    }
                    let view = views.borrow_and_update().clone();
                    // A member that came back online gets what waits for it at once.
                    online.came_online(&view)
                }
                _ = collector_tick.tick() => {
                    if let Some(c) = &self.inner.collector {
                        c.flush().await;
                    }
                    false
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
                    });
                    streams.insert(task.id(), peer);
                    false
                }
            };
            if retry_now && retrying.is_none() && self.inner.pushes.has_queued() {
                let d = self.clone();
                retrying = Some(running.spawn(async move { d.retry_queued().await }).id());
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
                    .take_invoked(session, &peer, DeliveryMode::Pull)
                    .ok_or_else(|| {
                        OpError::NotFound("no such pull session for this peer".into())
                    })?;
                self.serve(&mut stream, session, s).await
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
            Hello::Forward { to } => self.relay(peer, to, stream).await,
            Hello::Handed { session } => self.serve_handed(peer, session, stream).await,
            Hello::Forwarded { from } => {
                // The gateway checked that `from` is a member, but a member table reaches the
                // PNEs only after the gateway changed it: a member that has just joined is
                // waited for (briefly) rather than refused. A refusal is said to the sender
                // (through the relay) instead of cutting the stream.
                let refusal = if self.inner.pn.view().my_gateway() != Some(peer) {
                    Some("relayed streams come from this PN's gateway")
                } else if !self.member_soon(&from).await {
                    Some("relayed streams are for members of this PN")
                } else {
                    None
                };
                let inner: Hello = tokio::time::timeout(FIRST_FRAME, read_frame(&mut stream))
                    .await
                    .map_err(|_| OpError::Refused("no relayed frame in time".into()))??;
                if let Some(why) = refusal {
                    if matches!(inner, Hello::Offer(_)) {
                        write_frame(&mut stream, &Decision::Decline(why.into())).await?;
                    }
                    return Err(OpError::Refused(why.into()));
                }
                self.on_push_stream(from, true, stream, inner).await
            }
            other => self.on_push_stream(peer, false, stream, other).await,
        }
    }
}

impl Delivery {
    /// Whether `peer` is (or within [`MEMBER_LAG`] becomes) a member of this node's PN: the
    /// gateway's member table update may still be on its way when the gateway relays a
    /// stream from a member that has just joined.
    async fn member_soon(&self, peer: &PeerId) -> bool {
        let mut watch = self.inner.pn.watch();
        let known = tokio::time::timeout(MEMBER_LAG, async {
            loop {
                let view = watch.borrow_and_update().clone();
                if view.is_member(peer) {
                    return true;
                }
                if view.expelled.contains(peer) || watch.changed().await.is_err() {
                    return false;
                }
            }
        })
        .await;
        known.unwrap_or(false)
    }
}

/// What the offerer sends one consumer.
struct Chosen {
    body: Body,
    /// The length of a device's item (a file's is read when it is invoked).
    length: u64,
    chunk: usize,
    decision: InvokeDecision,
    variant: Option<String>,
}

/// Control of a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Stop it: it ends on both sides.
    Stop,
    /// Pause it.
    Pause,
    /// Resume it.
    Resume,
}

impl Action {
    fn message(self) -> &'static str {
        match self {
            Action::Stop => "StopService",
            Action::Pause => "PauseService",
            Action::Resume => "ResumeService",
        }
    }

    fn apply(self, control: &Control, by: Party) {
        match self {
            Action::Stop => {
                control.stop(by);
            }
            Action::Pause => {
                control.pause(by);
            }
            Action::Resume => {
                control.resume();
            }
        }
    }
}

/// A file that exists, canonicalised.
async fn checked_file(path: &Path) -> Result<PathBuf, OpError> {
    let meta = tokio::fs::metadata(path)
        .await
        .map_err(|e| OpError::BadRequest(format!("{}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(OpError::BadRequest(format!(
            "{} is not a file",
            path.display()
        )));
    }
    tokio::fs::canonicalize(path)
        .await
        .map_err(|e| OpError::BadRequest(format!("{}: {e}", path.display())))
}
