//! Offerer-initiated push (5.6.7 push mode, `cpns content push FILE --to PEER|pn|group:G`):
//! the sender — a PNE or the gateway — offers a file to a named entity, to every other member
//! of its PN, or to every other member of a Service Group, sealed under that PN's or group's
//! key (end to end when it goes through the gateway or to an entity outside the PN).
//!
//! * **The receiver's policy**: a push from a device of the receiver's own user is accepted at
//!   once; one from another user's device that shares the receiver's PN or the Service Group
//!   pushed to waits in the inbox for the owner (`cpns content inbox`, `accept ID`,
//!   `decline ID`; or is declined, with `delivery.push_from_others = "decline"`); one from
//!   anyone else (another household) is declined.
//! * **Offline receivers**: a member that is offline (or cannot be reached) gets the push when
//!   it returns: the sender keeps it in a bounded, durable queue (`push.queue.v1`), retried
//!   when the member is seen online again and every `delivery.push_retry_secs`.
//!
//! On the stream: `Offer` → the receiver's `Decision` → (accepted) the opening and chunks →
//! the receiver's `Stored`. An offer left in the inbox is collected later by the receiver
//! (`Collect`), or declined (`Declined`).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpns_keys::GroupId;
use cpns_overlay::{AuthMessage, Status};
use futures::{AsyncWriteExt, StreamExt};
use libp2p::{PeerId, Stream};
use serde::{Deserialize, Serialize};
use tracing::{debug, info};

use super::files::free_name;
use super::stream::{
    Decision, Ended, Hello, Offer, Seal, SendOpts, Stored, Want, read_frame_timed, receive_to_file,
    stream_file, write_frame,
};
use super::{CHUNK, Delivery};
use crate::context::Context;
use crate::error::OpError;
use crate::pn::{View, pn_group};
use crate::store::{StoreError, Typed, names};
use crate::trace::flow::DELIVERY;

/// Largest file a push may carry.
const MAX_PUSH_FILE: u64 = 1 << 30;
/// Most offers waiting in a receiver's inbox.
const MAX_PENDING: usize = 32;
/// Most offers a sender keeps for receivers to collect, and how long.
const MAX_OFFERED: usize = 64;
const OFFER_TTL: Duration = Duration::from_secs(24 * 3600);
/// Most recent pushes a sender shows (`cpns content pushes`).
const MAX_RECENT: usize = 64;
/// Receivers one push sends to at once.
const PARALLEL: usize = 4;
/// How long a receiver may take to decide, and to confirm it stored a file.
const ANSWER_WAIT: Duration = Duration::from_secs(30);

/// Where a push goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// One entity.
    Peer(PeerId),
    /// Every other member of this node's PN.
    Pn,
    /// Every other member of a Service Group.
    Group(GroupId),
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "pn" => Ok(Target::Pn),
            _ => match s.strip_prefix("group:") {
                Some(g) if !g.is_empty() => Ok(Target::Group(GroupId(g.to_string()))),
                _ => s
                    .parse()
                    .map(Target::Peer)
                    .map_err(|_| format!("{s:?}: expected a PeerId, pn or group:<id>")),
            },
        }
    }
}

/// How a push to one receiver is sealed when it goes directly (a relayed one is always
/// sealed end to end).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Scope {
    /// Under the PN key.
    Pn,
    /// Under the Service Group's key.
    Group(GroupId),
    /// End to end (a receiver outside the PN).
    Peer,
}

/// One receiver of a push, and where it stands.
#[derive(Clone, Debug)]
pub struct PushTarget {
    /// The receiver.
    pub peer: PeerId,
    /// `delivered`, `inbox`, `declined`, `queued` or `failed`.
    pub state: String,
    /// The receiver's reason, the error, the stored file's SHA-256.
    pub detail: String,
    /// Whether it went through the gateway.
    pub via_gateway: bool,
}

/// A push and its receivers.
#[derive(Clone, Debug)]
pub struct PushOutcome {
    /// The push's id.
    pub push_id: u64,
    /// The file's name.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// When it was pushed.
    pub created: u64,
    /// Its receivers.
    pub targets: Vec<PushTarget>,
}

/// A push waiting in this node's inbox for its owner.
#[derive(Clone, Debug)]
pub struct PendingPush {
    /// Its id here.
    pub id: String,
    /// The sender.
    pub from: PeerId,
    /// The sender's user.
    pub user: String,
    /// The file's name.
    pub name: String,
    /// Its size.
    pub bytes: u64,
    /// The Service Group it was pushed to.
    pub group: Option<GroupId>,
    /// When it was offered.
    pub received: u64,
    push_id: u64,
    via_gateway: bool,
}

/// What a sender keeps of an offer left in a receiver's inbox.
struct Offered {
    path: PathBuf,
    length: u64,
    scope: Scope,
    created: Instant,
}

/// A push waiting for an offline receiver (`push.queue.v1`, keyed by the time it was queued,
/// the push id and the receiver).
#[derive(Clone, Debug, Serialize, Deserialize)]
struct Queued {
    push_id: u64,
    to: PeerId,
    path: PathBuf,
    name: String,
    scope: Scope,
    via_gateway: bool,
    queued_at: u64,
}

/// The push state of a node.
pub(super) struct Pushes {
    recent: Mutex<VecDeque<PushOutcome>>,
    offered: Mutex<HashMap<(u64, PeerId), Offered>>,
    pending: Mutex<Vec<PendingPush>>,
    queue: Typed<Queued>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Pushes {
    pub(super) fn open(ctx: &Context) -> Result<Pushes, StoreError> {
        Ok(Pushes {
            recent: Mutex::default(),
            offered: Mutex::default(),
            pending: Mutex::default(),
            queue: ctx.store.typed(names::PUSH_QUEUE)?,
        })
    }

    pub(super) fn has_queued(&self) -> bool {
        self.queue.len() > 0
    }

    fn record(&self, outcome: PushOutcome) {
        let mut r = lock(&self.recent);
        if let Some(old) = r.iter_mut().find(|o| o.push_id == outcome.push_id) {
            *old = outcome;
            return;
        }
        while r.len() >= MAX_RECENT {
            r.pop_front();
        }
        r.push_back(outcome);
    }

    /// A receiver's state changed after the push returned (collected, declined, dequeued).
    fn update(&self, push_id: u64, peer: PeerId, state: &str, detail: String) {
        let mut r = lock(&self.recent);
        if let Some(t) = r
            .iter_mut()
            .filter(|o| o.push_id == push_id)
            .flat_map(|o| o.targets.iter_mut())
            .find(|t| t.peer == peer)
        {
            t.state = state.to_string();
            t.detail = detail;
        }
    }
}

fn target(peer: PeerId, state: &str, detail: impl Into<String>, via: bool) -> PushTarget {
    PushTarget {
        peer,
        state: state.to_string(),
        detail: detail.into(),
        via_gateway: via,
    }
}

/// Tells when a member of the PN comes (back) online.
#[derive(Default)]
pub(super) struct OnlineWatch {
    online: HashMap<PeerId, bool>,
}

impl OnlineWatch {
    /// Whether some member is online now that was not at the last view.
    pub(super) fn came_online(&mut self, view: &View) -> bool {
        let Some(pn) = &view.pn else {
            return false;
        };
        let mut came = false;
        let mut now = HashMap::with_capacity(pn.members.len());
        for (peer, m) in &pn.members {
            let on = m.info.status != Status::Offline;
            if on && self.online.get(peer) == Some(&false) {
                came = true;
            }
            now.insert(*peer, on);
        }
        self.online = now;
        came
    }
}

/// The user of a peer this node knows (a member, or a registered peer).
fn user_of(view: &View, peer: &PeerId) -> Option<String> {
    if let Some(m) = view.pn.as_ref().and_then(|p| p.members.get(peer)) {
        return Some(m.info.user.clone());
    }
    view.peers.get(peer).map(|p| p.user.clone())
}

fn is_offline(view: &View, peer: &PeerId) -> bool {
    view.pn
        .as_ref()
        .and_then(|p| p.members.get(peer))
        .is_some_and(|m| m.info.status == Status::Offline)
}

impl Delivery {
    /// Pushes a file to `to` (see the module docs). Returns once every receiver answered,
    /// was queued or failed.
    pub(crate) async fn push(
        &self,
        path: &std::path::Path,
        to: Target,
        via_gateway: bool,
    ) -> Result<PushOutcome, OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let path = super::checked_file(path).await?;
        let length = tokio::fs::metadata(&path)
            .await
            .map_err(|e| OpError::BadRequest(e.to_string()))?
            .len();
        if length > MAX_PUSH_FILE {
            return Err(OpError::BadRequest(format!(
                "a push carries at most {MAX_PUSH_FILE} bytes"
            )));
        }
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let view = self.inner.pn.view();
        let (peers, scope) = match &to {
            Target::Peer(p) if *p == me => {
                return Err(OpError::BadRequest("a push goes to another entity".into()));
            }
            Target::Peer(p) => {
                let scope = if view.is_member(p) {
                    Scope::Pn
                } else {
                    Scope::Peer
                };
                (vec![*p], scope)
            }
            Target::Pn => {
                let members: Vec<PeerId> = view
                    .pn
                    .as_ref()
                    .ok_or_else(|| OpError::Conflict("not in a PN".into()))?
                    .members
                    .keys()
                    .copied()
                    .filter(|p| *p != me)
                    .collect();
                (members, Scope::Pn)
            }
            Target::Group(g) => (self.group_members(g).await?, Scope::Group(g.clone())),
        };
        if peers.is_empty() {
            return Err(OpError::Conflict("nobody else to push to".into()));
        }
        if scope == Scope::Pn && view.pn_id().is_none() {
            return Err(OpError::Conflict("not in a PN".into()));
        }
        let push_id: u64 = rand::random();
        let created = crate::now();
        let sends = peers.into_iter().map(|peer| {
            let (path, name, scope) = (path.clone(), name.clone(), scope.clone());
            async move {
                self.offer_to(
                    push_id,
                    peer,
                    &path,
                    &name,
                    length,
                    &scope,
                    via_gateway,
                    created,
                )
                .await
            }
        });
        let targets: Vec<PushTarget> = futures::stream::iter(sends)
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let outcome = PushOutcome {
            push_id,
            name,
            bytes: length,
            created,
            targets,
        };
        self.inner.pushes.record(outcome.clone());
        Ok(outcome)
    }

    /// `cpns content send PEER FILE`: a push to one entity that must be delivered now.
    pub(crate) async fn send_file(
        &self,
        peer: PeerId,
        path: &std::path::Path,
    ) -> Result<u64, OpError> {
        let outcome = self.push(path, Target::Peer(peer), false).await?;
        match outcome.targets.first() {
            Some(t) if t.state == "delivered" => Ok(outcome.bytes),
            Some(t) => Err(OpError::Refused(format!("{}: {}", t.state, t.detail))),
            None => Err(OpError::Internal("no receiver".into())),
        }
    }

    /// The other members of a Service Group this node belongs to (from `cpns-auth`).
    async fn group_members(&self, g: &GroupId) -> Result<Vec<PeerId>, OpError> {
        use cpns_directory::KeyRing as _;
        let ctx = self.ctx();
        if ctx.keyring.current(g).is_none() {
            return Err(OpError::Conflict(format!(
                "this node holds no key of {g}: not a member?"
            )));
        }
        match self
            .inner
            .auth
            .request(AuthMessage::GroupInfoRequest { group: g.clone() })
            .await?
        {
            AuthMessage::GroupInfo(info) => Ok(info
                .members
                .into_iter()
                .filter(|p| *p != ctx.peer_id)
                .collect()),
            other => Err(OpError::Refused(format!(
                "unexpected answer {}",
                other.name()
            ))),
        }
    }

    /// Offers the push to one receiver, and sends it if accepted. Never fails: the outcome
    /// says what happened.
    #[allow(clippy::too_many_arguments)]
    async fn offer_to(
        &self,
        push_id: u64,
        peer: PeerId,
        path: &std::path::Path,
        name: &str,
        length: u64,
        scope: &Scope,
        via_gateway: bool,
        created: u64,
    ) -> PushTarget {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let view = self.inner.pn.view();
        let queue = |why: String| {
            let q = Queued {
                push_id,
                to: peer,
                path: path.to_owned(),
                name: name.to_string(),
                scope: scope.clone(),
                via_gateway,
                queued_at: created,
            };
            async move {
                match self.enqueue(q).await {
                    Ok(()) => target(peer, "queued", why, via_gateway),
                    Err(e) => target(
                        peer,
                        "failed",
                        format!("{why}; not queued: {e}"),
                        via_gateway,
                    ),
                }
            }
        };
        // Members (of the PN or the group) that are away get it when they return.
        let queueable = *scope != Scope::Peer;
        if queueable && is_offline(&view, &peer) {
            return queue("the receiver is offline".into()).await;
        }
        if !view.is_member(&peer)
            && let Err(e) = self.inner.pn.register(peer).await
        {
            return if queueable {
                queue(format!("unreachable: {e}")).await
            } else {
                target(peer, "failed", e.to_string(), false)
            };
        }
        let (mut stream, via) = match self.open_to(peer, via_gateway).await {
            Ok(s) => s,
            Err(e) if queueable => return queue(format!("unreachable: {e}")).await,
            Err(e) => return target(peer, "failed", e.to_string(), via_gateway),
        };
        ctx.trace(
            DELIVERY,
            2,
            &me,
            &peer,
            "PushOffer",
            format!("{name}, {length} bytes"),
        );
        let offer = Offer {
            push_id,
            name: name.to_string(),
            length,
            group: match scope {
                Scope::Group(g) => Some(g.clone()),
                _ => None,
            },
        };
        let decided = async {
            write_frame(&mut stream, &Hello::Offer(offer)).await?;
            tokio::time::timeout(ANSWER_WAIT, read_frame_timed::<_, Decision>(&mut stream))
                .await
                .map_err(|_| OpError::Unavailable("the receiver did not answer".into()))?
        }
        .await;
        match decided {
            Err(e) => target(peer, "failed", e.to_string(), via),
            Ok(Decision::Decline(why)) => target(peer, "declined", why, via),
            Ok(Decision::Inbox) => {
                let mut offered = lock(&self.inner.pushes.offered);
                offered.retain(|_, o| o.created.elapsed() < OFFER_TTL);
                if offered.len() >= MAX_OFFERED
                    && let Some(oldest) = offered
                        .iter()
                        .min_by_key(|(_, o)| o.created)
                        .map(|(k, _)| *k)
                {
                    offered.remove(&oldest);
                }
                offered.insert(
                    (push_id, peer),
                    Offered {
                        path: path.to_owned(),
                        length,
                        scope: scope.clone(),
                        created: Instant::now(),
                    },
                );
                target(peer, "inbox", "waiting for the receiver's owner", via)
            }
            Ok(Decision::Accept) => {
                match self
                    .send_pushed(&mut stream, peer, path, length, scope, via)
                    .await
                {
                    Ok(sha) => target(peer, "delivered", sha, via),
                    Err(e) => target(peer, "failed", e.to_string(), via),
                }
            }
        }
    }

    /// Sends an accepted push's content and waits for the receiver to say it stored it;
    /// returns the SHA-256 it stored.
    async fn send_pushed(
        &self,
        stream: &mut Stream,
        peer: PeerId,
        path: &std::path::Path,
        length: u64,
        scope: &Scope,
        via: bool,
    ) -> Result<String, OpError> {
        let ctx = self.ctx();
        let seal = match (via, scope) {
            // The relaying gateway holds the PN key: relayed content is sealed end to end.
            (true, _) | (false, Scope::Peer) => Seal::to_peer(ctx, &peer, length)?,
            (false, Scope::Pn) => {
                let pn_id = self
                    .inner
                    .pn
                    .view()
                    .pn_id()
                    .map(str::to_owned)
                    .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
                Seal::current(ctx, &pn_group(&pn_id))?
            }
            (false, Scope::Group(g)) => Seal::current(ctx, g)?,
        };
        let file = std::fs::File::open(path)
            .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
        let opts = SendOpts {
            chunk: CHUNK,
            control: None,
            turn: Some(self.inner.fair.turn(peer)),
        };
        let (ended, _) = stream_file(ctx, stream, seal, file, length, opts).await?;
        if ended != Ended::Completed {
            return Err(OpError::Internal("the push did not complete".into()));
        }
        let stored: Stored = tokio::time::timeout(ANSWER_WAIT, read_frame_timed(stream))
            .await
            .map_err(|_| OpError::Unavailable("the receiver did not confirm".into()))??;
        Ok(stored.sha256)
    }

    async fn enqueue(&self, q: Queued) -> Result<(), OpError> {
        let queue = &self.inner.pushes.queue;
        let internal = |e: StoreError| OpError::Internal(e.to_string());
        // Keyed by the time of queueing (nanoseconds), so the first key is the oldest.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        let mut key = nanos.to_be_bytes().to_vec();
        key.extend_from_slice(&q.push_id.to_be_bytes());
        key.extend_from_slice(&q.to.to_bytes());
        while queue.len() >= self.ctx().config.delivery.push_queue {
            // The oldest goes first.
            if let Some((_, old)) = queue.all().map_err(internal)?.into_iter().next() {
                self.inner.pushes.update(
                    old.push_id,
                    old.to,
                    "failed",
                    "dropped from a full queue".into(),
                );
            }
            if !queue.pop_first().map_err(internal)? {
                break;
            }
        }
        queue.put(&key, &q).await.map_err(internal)
    }

    /// Offers every queued push again; those that got an answer leave the queue.
    pub(super) async fn retry_queued(&self) {
        let queue = &self.inner.pushes.queue;
        let Ok(all) = queue.all() else {
            return;
        };
        for (key, q) in all {
            let Ok(length) = tokio::fs::metadata(&q.path).await.map(|m| m.len()) else {
                self.inner
                    .pushes
                    .update(q.push_id, q.to, "failed", "the file is gone".into());
                let _ = queue.remove(&key).await;
                continue;
            };
            // Offered as it was, but without queueing it twice.
            let t = self.offer_queued(&q, length).await;
            if t.state != "queued" {
                info!(peer = %q.to, state = %t.state, "a queued push got its answer");
                self.inner
                    .pushes
                    .update(q.push_id, q.to, &t.state, t.detail);
                if let Err(e) = queue.remove(&key).await {
                    debug!("a sent push stays queued: {e}");
                }
            }
        }
    }

    async fn offer_queued(&self, q: &Queued, length: u64) -> PushTarget {
        let view = self.inner.pn.view();
        if is_offline(&view, &q.to) {
            return target(q.to, "queued", "still offline", q.via_gateway);
        }
        let (mut stream, via) = match self.open_to(q.to, q.via_gateway).await {
            Ok(s) => s,
            Err(e) => return target(q.to, "queued", e.to_string(), q.via_gateway),
        };
        let me = self.ctx().peer_id;
        self.ctx().trace(
            DELIVERY,
            2,
            &me,
            &q.to,
            "PushOffer",
            format!("{}, {length} bytes (queued)", q.name),
        );
        let offer = Offer {
            push_id: q.push_id,
            name: q.name.clone(),
            length,
            group: match &q.scope {
                Scope::Group(g) => Some(g.clone()),
                _ => None,
            },
        };
        let decided = async {
            write_frame(&mut stream, &Hello::Offer(offer)).await?;
            read_frame_timed::<_, Decision>(&mut stream).await
        }
        .await;
        match decided {
            Err(e) => target(q.to, "queued", e.to_string(), via),
            Ok(Decision::Decline(why)) => target(q.to, "declined", why, via),
            Ok(Decision::Inbox) => {
                lock(&self.inner.pushes.offered).insert(
                    (q.push_id, q.to),
                    Offered {
                        path: q.path.clone(),
                        length,
                        scope: q.scope.clone(),
                        created: Instant::now(),
                    },
                );
                target(q.to, "inbox", "waiting for the receiver's owner", via)
            }
            Ok(Decision::Accept) => match self
                .send_pushed(&mut stream, q.to, &q.path, length, &q.scope, via)
                .await
            {
                Ok(sha) => target(q.to, "delivered", sha, via),
                Err(e) => target(q.to, "failed", e.to_string(), via),
            },
        }
    }

    /// A push stream at the receiver (or a collection/decline at the sender). `origin` is
    /// who the stream is from: the peer, or the member the gateway relays for (`via`).
    pub(super) async fn on_push_stream(
        &self,
        origin: PeerId,
        via: bool,
        mut stream: Stream,
        hello: Hello,
    ) -> Result<(), OpError> {
        match hello {
            Hello::Offer(offer) => self.on_offer(origin, via, stream, offer).await,
            Hello::Collect { push_id } => {
                let offered = lock(&self.inner.pushes.offered).remove(&(push_id, origin));
                let Some(o) = offered.filter(|o| o.created.elapsed() < OFFER_TTL) else {
                    return Err(OpError::NotFound("no such push for this receiver".into()));
                };
                let me = self.ctx().peer_id;
                self.ctx().trace(
                    DELIVERY,
                    3,
                    &origin,
                    &me,
                    "PushCollected",
                    format!("{push_id:016x}"),
                );
                let r = self
                    .send_pushed(&mut stream, origin, &o.path, o.length, &o.scope, via)
                    .await;
                let (state, detail) = match &r {
                    Ok(sha) => ("delivered", sha.clone()),
                    Err(e) => ("failed", e.to_string()),
                };
                self.inner.pushes.update(push_id, origin, state, detail);
                r.map(|_| ())
            }
            Hello::Declined { push_id } => {
                let gone = lock(&self.inner.pushes.offered).remove(&(push_id, origin));
                if gone.is_some() {
                    let me = self.ctx().peer_id;
                    self.ctx().trace(
                        DELIVERY,
                        3,
                        &origin,
                        &me,
                        "PushDeclined",
                        format!("{push_id:016x}"),
                    );
                    self.inner.pushes.update(
                        push_id,
                        origin,
                        "declined",
                        "declined by the receiver's owner".into(),
                    );
                }
                let _ = stream.close().await;
                Ok(())
            }
            _ => Err(OpError::Refused("not a stream to relay".into())),
        }
    }

    /// The receiver's policy (module docs).
    fn decide(&self, origin: &PeerId, via: bool, offer: &Offer) -> Decision {
        use cpns_directory::KeyRing as _;
        let ctx = self.ctx();
        let view = self.inner.pn.view();
        let mine = view
            .enrolment
            .as_ref()
            .map(|e| e.credential.body.user.clone());
        let theirs = user_of(&view, origin);
        if mine.is_some() && theirs == mine {
            return Decision::Accept;
        }
        let shares = view.is_member(origin)
            || offer
                .group
                .as_ref()
                .is_some_and(|g| ctx.keyring.current(g).is_some());
        if !shares {
            return Decision::Decline(
                "pushes from outside this PN and its Service Groups are declined".into(),
            );
        }
        if ctx.config.delivery.push_from_others == "decline" {
            return Decision::Decline("this device declines pushes from other users".into());
        }
        let mut pending = lock(&self.inner.pushes.pending);
        if pending.len() >= MAX_PENDING {
            return Decision::Decline("the inbox is full".into());
        }
        pending.push(PendingPush {
            id: format!("{:08x}", rand::random::<u32>()),
            from: *origin,
            user: theirs.unwrap_or_default(),
            name: offer.name.clone(),
            bytes: offer.length,
            group: offer.group.clone(),
            received: crate::now(),
            push_id: offer.push_id,
            // Collected later the way it came.
            via_gateway: via,
        });
        Decision::Inbox
    }

    async fn on_offer(
        &self,
        origin: PeerId,
        via: bool,
        mut stream: Stream,
        offer: Offer,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        ctx.trace(
            DELIVERY,
            2,
            &origin,
            &me,
            "PushOffer",
            format!(
                "{}, {} bytes{}",
                offer.name,
                offer.length,
                if via { ", relayed" } else { "" }
            ),
        );
        let decision = if offer.length > MAX_PUSH_FILE {
            Decision::Decline(format!("pushes are at most {MAX_PUSH_FILE} bytes"))
        } else {
            self.decide(&origin, via, &offer)
        };
        let label = match &decision {
            Decision::Accept => "accepted".to_string(),
            Decision::Inbox => "in the inbox, for the owner".to_string(),
            Decision::Decline(why) => format!("declined: {why}"),
        };
        ctx.trace(DELIVERY, 3, &me, &origin, "PushDecision", label);
        let accepted = matches!(decision, Decision::Accept);
        write_frame(&mut stream, &decision).await?;
        if !accepted {
            let _ = stream.close().await;
            return Ok(());
        }
        self.receive_pushed(
            origin,
            via,
            &mut stream,
            &offer.name,
            offer.length,
            offer.group.as_ref(),
        )
        .await
        .map(|_| ())
    }

    /// Receives a push's content into `DATA_DIR/inbox`, confirms it to the sender.
    async fn receive_pushed(
        &self,
        origin: PeerId,
        via: bool,
        stream: &mut Stream,
        name: &str,
        length: u64,
        group: Option<&GroupId>,
    ) -> Result<cpns_api::AcceptedPush, OpError> {
        let ctx = self.ctx();
        let dir = ctx.config.data_dir.join("inbox");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let part = dir.join(format!(".{:016x}.part", rand::random::<u64>()));
        let want = match (via, group) {
            (true, _) => Want::EndToEnd,
            (false, Some(g)) => Want::Group(g),
            (false, None) => Want::Sealed,
        };
        let received = receive_to_file(ctx, &origin, stream, &part, length, want, None).await;
        let received = match received {
            Ok(r) if r.ended == Ended::Completed && r.bytes == length => r,
            Ok(r) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(OpError::Refused(format!(
                    "the push ended after {} of {length} bytes",
                    r.bytes
                )));
            }
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        let path = free_name(&dir, name);
        tokio::fs::rename(&part, &path)
            .await
            .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
        write_frame(
            stream,
            &Stored {
                sha256: received.sha256.clone(),
            },
        )
        .await?;
        let _ = stream.close().await;
        let me = ctx.peer_id;
        ctx.trace(
            DELIVERY,
            3,
            &origin,
            &me,
            "PushStored",
            format!("{} bytes -> {}", received.bytes, path.display()),
        );
        Ok(cpns_api::AcceptedPush {
            path: path.display().to_string(),
            bytes: received.bytes,
            sha256: received.sha256,
        })
    }

    /// Pushes waiting for this node's owner.
    pub(crate) fn pending_pushes(&self) -> Vec<PendingPush> {
        lock(&self.inner.pushes.pending).clone()
    }

    fn take_pending(&self, id: &str) -> Result<PendingPush, OpError> {
        let mut pending = lock(&self.inner.pushes.pending);
        let i = pending
            .iter()
            .position(|p| p.id == id)
            .ok_or_else(|| OpError::NotFound(format!("no push {id} in the inbox")))?;
        Ok(pending.remove(i))
    }

    /// The owner accepts a push from the inbox: its content is collected from the sender.
    pub(crate) async fn accept_push(&self, id: &str) -> Result<cpns_api::AcceptedPush, OpError> {
        let p = self.take_pending(id)?;
        let me = self.ctx().peer_id;
        self.ctx().trace(
            DELIVERY,
            3,
            &me,
            &p.from,
            "PushDecision",
            "accepted by the owner",
        );
        let (mut stream, via) = self.open_to(p.from, p.via_gateway).await?;
        write_frame(&mut stream, &Hello::Collect { push_id: p.push_id }).await?;
        self.receive_pushed(p.from, via, &mut stream, &p.name, p.bytes, p.group.as_ref())
            .await
    }

    /// The owner declines a push from the inbox (the sender is told if it can be reached).
    pub(crate) async fn decline_push(&self, id: &str) -> Result<(), OpError> {
        let p = self.take_pending(id)?;
        let me = self.ctx().peer_id;
        self.ctx().trace(
            DELIVERY,
            3,
            &me,
            &p.from,
            "PushDecision",
            "declined by the owner",
        );
        match self.open_to(p.from, p.via_gateway).await {
            Ok((mut stream, _)) => {
                write_frame(&mut stream, &Hello::Declined { push_id: p.push_id }).await?;
                let _ = stream.close().await;
            }
            Err(e) => debug!(from = %p.from, "the sender of a declined push is away: {e}"),
        }
        Ok(())
    }

    /// Recent pushes from this node.
    pub(crate) fn recent_pushes(&self) -> Vec<PushOutcome> {
        lock(&self.inner.pushes.recent).iter().cloned().collect()
    }
}
