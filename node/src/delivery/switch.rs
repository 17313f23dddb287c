//! Switching the current PNE to another PNE (5.6.9 "switch current PNE to other PNE"): a
//! running service session moves from the PNE that receives it to another PNE of the same
//! user in the same PN, for example a film that goes on on the television after it started on
//! the phone.
//!
//! 1. The old PNE asks the offerer to move the session ([`DeliveryMessage::Switch`]). The
//!    offerer opens the session again for the new PNE and stops its stream to the old one (a
//!    stop by the consumer: every chunk sent before the stop reaches the old PNE).
//! 2. The old PNE hands the session to the new one ([`DeliveryMessage::HandOver`]) with the
//!    bytes it received (the offset). The new PNE checks that the old one is a PNE of its own
//!    user in its PN, fetches those bytes from it ([`Hello::Handed`], sealed end to end) and
//!    confirms them by their SHA-256.
//! 3. The new PNE asks the offerer to continue from the offset
//!    ([`DeliveryMessage::Continue`], resume by offset) and pulls the rest, appended to what
//!    it has. It ends with the whole content.
//! 4. Usage is reported once: by the new PNE, with the total bytes of the session, once it
//!    holds the old PNE's part; by the old PNE (with what it received) only if the hand-over
//!    failed before that.
//!
//! Trace (flow "5.6.9"): 50 SwitchSession (old PNE to offerer), 51 HandOverSession (old PNE
//! to new PNE), 52 HandOverReceivedContent (old PNE to new PNE: the first bytes), 53
//! ContinueFromOffset (new PNE to offerer), 54 ContentContinued (offerer to new PNE: the
//! rest).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpns_directory::ServiceDescription;
use cpns_overlay::{
    DELIVERY_PROTOCOL, DeliveryMessage, DeliveryMode, ErrorCode, Message, NodeMode, Protocol,
    SessionHandOver, UsageRecord,
};
use libp2p::{PeerId, Stream};
use tokio::sync::oneshot;
use tracing::{debug, warn};

use super::files::sanitise;
use super::session::{Control, Invoked, Live, Party, Role, session_text};
use super::stream::{
    Ended, Hello, Received, Seal, SendOpts, Stored, Want, read_frame_timed, receive_into,
    receive_to_file, stream_file, write_frame,
};
use super::{CHUNK, Delivery, MAX_SESSIONS, Task, answer_error};
use crate::error::OpError;
use crate::pn::{SenderClass, View};
use crate::trace::flow::GW_SWITCH;

/// How long the old PNE waits for the new one to take what it received.
const HAND_OVER_WAIT: Duration = Duration::from_secs(300);
/// How long a request of the switch waits for its answer.
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// How long an offerer keeps a switched session for the new PNE: the new PNE first fetches
/// the old PNE's part, which takes longer than an invocation's start.
pub(super) const SWITCHED_TTL: Duration = Duration::from_secs(600);
/// Longest service id a hand-over may name.
const MAX_SERVICE_ID: usize = 256;

/// One session moved (the switch's answer, per session).
pub(super) type SwitchedSession = cpns_api::SwitchedSession;

/// A session this node (its consumer) is moving away, and who waits for the outcome.
struct Switching {
    to: PeerId,
    done: oneshot::Sender<Result<SwitchedSession, OpError>>,
}

/// What an old PNE keeps for the new one: the part it received.
struct Handing {
    to: PeerId,
    part: PathBuf,
    bytes: u64,
    sha256: String,
    done: oneshot::Sender<Result<(), OpError>>,
}

/// The switches under way at this node (owned by the delivery module, bounded by its
/// sessions: one entry per session of this node at most).
#[derive(Default)]
pub(super) struct Switches {
    switching: Mutex<HashMap<u64, Switching>>,
    handing: Mutex<HashMap<u64, Handing>>,
}

impl Switches {
    fn switching(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Switching>> {
        self.switching.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn handing(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handing>> {
        self.handing.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Whether `other` is another PNE of this node's user in this node's PN: the only PNE a
/// session may move to (or come from). The error says why not.
pub(crate) fn same_user_pne(view: &View, other: &PeerId) -> Result<(), String> {
    if *other == view.me {
        return Err(format!("{other} is this node"));
    }
    let Some(pn) = view.pn.as_ref() else {
        return Err("this node is in no PN".into());
    };
    let Some(member) = pn.members.get(other) else {
        return Err(format!(
            "{other} is not a member of this PN ({})",
            pn.membership.pn_id
        ));
    };
    let Some(me) = view.enrolment.as_ref() else {
        return Err("this node is not enrolled".into());
    };
    let my_user = &me.credential.body.user;
    if &member.info.user != my_user {
        return Err(format!(
            "{other} is a device of user {}, not of {my_user}: a session moves only between \
             PNEs of one user",
            member.info.user
        ));
    }
    if member.info.mode == NodeMode::Gateway {
        return Err(format!("{other} is gateway-only: it consumes no services"));
    }
    Ok(())
}

impl Delivery {
    /// `cpns pn switch --to PEER [--session ID]` at the old PNE: moves one session this node
    /// receives (or every one) to `to`. Returns once the new PNE holds what this node
    /// received and continues from there.
    pub(crate) async fn switch_pne(
        &self,
        to: PeerId,
        session: Option<u64>,
    ) -> Result<cpns_api::SwitchView, OpError> {
        let view = self.inner.pn.view();
        if view.mode == NodeMode::Gateway {
            return Err(OpError::Conflict(
                "a gateway-only node receives no sessions".into(),
            ));
        }
        same_user_pne(&view, &to).map_err(OpError::Refused)?;
        let moving: Vec<(u64, Live)> = {
            let s = self.sessions();
            s.live
                .iter()
                .filter(|((role, id), _)| {
                    *role == Role::Consumer && session.is_none_or(|want| want == *id)
                })
                .map(|((_, id), l)| (*id, l.clone()))
                .collect()
        };
        if moving.is_empty() {
            return Err(OpError::NotFound(match session {
                Some(id) => format!("no session {} received by this node", session_text(id)),
                None => "no running session received by this node".into(),
            }));
        }
        if let Some((id, _)) = moving.iter().find(|(_, l)| l.peer == to) {
            return Err(OpError::Conflict(format!(
                "{to} offers session {} itself: it has the content",
                session_text(*id)
            )));
        }
        let mut sessions = Vec::with_capacity(moving.len());
        for (id, live) in moving {
            sessions.push(self.switch_one(id, live, to).await?);
        }
        Ok(cpns_api::SwitchView {
            to: to.to_string(),
            sessions,
        })
    }

    async fn switch_one(
        &self,
        session: u64,
        live: Live,
        to: PeerId,
    ) -> Result<SwitchedSession, OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let (tx, rx) = oneshot::channel();
        self.inner
            .switches
            .switching()
            .insert(session, Switching { to, done: tx });
        // A fetch that ended meanwhile would never take the switch: checked after it is set,
        // since a fetch leaves its sessions before it looks for a switch.
        if !self
            .sessions()
            .live
            .contains_key(&(Role::Consumer, session))
        {
            self.inner.switches.switching().remove(&session);
            return Err(OpError::Conflict(format!(
                "session {} ended before it could be switched",
                session_text(session)
            )));
        }
        ctx.trace(
            GW_SWITCH,
            50,
            &me,
            &live.peer,
            "SwitchSession",
            format!("{} to {to}", session_text(session)),
        );
        let answer = tokio::time::timeout(
            ANSWER_WAIT,
            ctx.client.request(
                live.peer,
                Protocol::Cpns,
                Message::Delivery(DeliveryMessage::Switch { session, to }),
            ),
        )
        .await;
        let refused = match answer {
            Ok(Ok(Message::Ack)) => None,
            Ok(Ok(other)) => Some(answer_error(other)),
            Ok(Err(e)) => Some(e.into()),
            Err(_) => Some(OpError::Unavailable("the offerer did not answer".into())),
        };
        if let Some(e) = refused {
            self.inner.switches.switching().remove(&session);
            return Err(e);
        }
        // The offerer stopped its stream to this node: the fetch hands the session over.
        match tokio::time::timeout(HAND_OVER_WAIT + ANSWER_WAIT, rx).await {
            Ok(Ok(r)) => r,
            _ => Err(OpError::Unavailable("the hand-over did not finish".into())),
        }
    }

    /// At the old PNE, when a fetch's stream ended: the switch that waits for this session,
    /// if any.
    pub(super) fn take_switching(&self, session: u64) -> Option<(PeerId, SwitchDone)> {
        self.inner
            .switches
            .switching()
            .remove(&session)
            .map(|s| (s.to, SwitchDone(s.done)))
    }

    /// At the old PNE, step 2: hands the session to `to` and waits until `to` took the part
    /// received (`received` bytes of `part`, with their SHA-256).
    pub(super) async fn hand_over(
        &self,
        to: PeerId,
        h: SessionHandOver,
        part: &Path,
        received: &Received,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let session = h.session;
        let (tx, rx) = oneshot::channel();
        self.inner.switches.handing().insert(
            session,
            Handing {
                to,
                part: part.to_owned(),
                bytes: received.bytes,
                sha256: received.sha256.clone(),
                done: tx,
            },
        );
        ctx.trace(
            GW_SWITCH,
            51,
            &me,
            &to,
            "HandOverSession",
            format!(
                "{} of {}: {} of {} bytes received",
                session_text(session),
                h.service_id,
                h.offset,
                h.total
            ),
        );
        let answer = tokio::time::timeout(
            ANSWER_WAIT,
            ctx.client.request(
                to,
                Protocol::Cpns,
                Message::Delivery(DeliveryMessage::HandOver(h)),
            ),
        )
        .await;
        let result = match answer {
            Ok(Ok(Message::Ack)) => match tokio::time::timeout(HAND_OVER_WAIT, rx).await {
                Ok(Ok(r)) => r,
                _ => Err(OpError::Unavailable(format!(
                    "{to} did not take what this node received"
                ))),
            },
            Ok(Ok(other)) => Err(answer_error(other)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(OpError::Unavailable(format!("{to} did not answer"))),
        };
        self.inner.switches.handing().remove(&session);
        result
    }

    /// At the old PNE, step 2's content: the new PNE fetches the part this node received,
    /// sealed end to end to it, and confirms it by its SHA-256.
    pub(super) async fn serve_handed(
        &self,
        peer: PeerId,
        session: u64,
        mut out: Stream,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        let handing = {
            let mut h = self.inner.switches.handing();
            match h.get(&session) {
                Some(x) if x.to == peer => h.remove(&session),
                _ => None,
            }
        };
        let Some(h) = handing else {
            return Err(OpError::NotFound(
                "no session handed over to this peer".into(),
            ));
        };
        let result = async {
            let file = std::fs::File::open(&h.part)
                .map_err(|e| OpError::Internal(format!("{}: {e}", h.part.display())))?;
            let seal = Seal::to_peer(ctx, &peer, h.bytes)?;
            let opts = SendOpts {
                chunk: CHUNK,
                ..SendOpts::default()
            };
            ctx.trace(
                GW_SWITCH,
                52,
                &ctx.peer_id,
                &peer,
                "HandOverReceivedContent",
                format!("{} bytes of {}", h.bytes, session_text(session)),
            );
            stream_file(ctx, &mut out, seal, file, h.bytes, opts).await?;
            let stored: Stored = read_frame_timed(&mut out).await?;
            if stored.sha256 != h.sha256 {
                return Err(OpError::Refused(
                    "the new PNE stored other bytes than this node received".into(),
                ));
            }
            Ok(())
        }
        .await;
        let _ = h.done.send(result.clone_error());
        result
    }

    /// At the offerer, step 1: the session's consumer moves it to `to`. The session is opened
    /// again for `to` (to be continued from an offset) and the stream to the consumer stops.
    pub(super) fn on_switch(&self, peer: PeerId, session: u64, to: PeerId) -> Message {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        if to == peer {
            return Message::error(
                ErrorCode::BadRequest,
                "a session moves to another PNE than its consumer",
            );
        }
        let view = self.inner.pn.view();
        let control = {
            let mut s = self.sessions();
            let live = s
                .live
                .get(&(Role::Offerer, session))
                .filter(|l| l.peer == peer)
                .cloned();
            let Some(live) = live else {
                if s.invoked.get(&session).is_some_and(|i| i.consumer == peer) {
                    return Message::error(
                        ErrorCode::Conflict,
                        "the session has not started yet: nothing to move",
                    );
                }
                return Message::error(
                    ErrorCode::NotFound,
                    "no running session of yours with that id",
                );
            };
            let Some(served) = live.served.clone() else {
                return Message::error(ErrorCode::Internal, "the session has no content");
            };
            // A PN's service stays with the PN's members.
            if let Some(g) = &served.group
                && view.pn_id() == Some(g.0.as_str())
                && !view.is_member(&to)
            {
                return Message::error(
                    ErrorCode::Forbidden,
                    format!("{to} is not a member of the PN this service is for"),
                );
            }
            if s.invoked.len() + s.live.len() >= MAX_SESSIONS {
                return Message::error(
                    ErrorCode::Busy,
                    "too many delivery sessions; try again later",
                );
            }
            s.invoked.insert(
                session,
                Invoked {
                    service_id: live.service_id.clone(),
                    consumer: to,
                    mode: DeliveryMode::Pull,
                    body: served.body.clone(),
                    length: served.length,
                    group: served.group.clone(),
                    chunk: served.chunk,
                    variant: live.variant.clone(),
                    created: std::time::Instant::now(),
                    ttl: SWITCHED_TTL,
                    control: Control::new(served.length),
                    offset: 0,
                },
            );
            live.control
        };
        ctx.trace(
            GW_SWITCH,
            50,
            &peer,
            &me,
            "SwitchSession",
            format!(
                "{} to {to} after {} bytes",
                session_text(session),
                control.bytes()
            ),
        );
        // The stop frame ends the old consumer's stream after every chunk sent so far.
        control.stop(Party::Consumer);
        Message::Ack
    }

    /// At the offerer, resume by offset (step 3): the session's consumer has the first
    /// `offset` bytes and asks for the rest. An offset beyond the content is refused, and
    /// so is one for a session whose content flows already.
    pub(super) fn on_continue(&self, peer: PeerId, session: u64, offset: u64) -> Message {
        let ctx = self.ctx();
        let mut s = self.sessions();
        let (length, running) =
            if let Some(i) = s.invoked.get(&session).filter(|i| i.consumer == peer) {
                (i.length, false)
            } else if let Some(l) = s
                .live
                .get(&(Role::Offerer, session))
                .filter(|l| l.peer == peer)
            {
                (l.control.total(), true)
            } else {
                return Message::error(ErrorCode::NotFound, "no session of yours with that id");
            };
        if offset > length {
            return Message::error(
                ErrorCode::BadRequest,
                format!(
                    "offset {offset} is beyond the content of session {} ({length} bytes)",
                    session_text(session)
                ),
            );
        }
        if running {
            return Message::error(
                ErrorCode::Conflict,
                "the session's content flows already: an offset applies before it starts \
                 (or after a switch)",
            );
        }
        if let Some(i) = s.invoked.get_mut(&session) {
            i.offset = offset;
        }
        drop(s);
        ctx.trace(
            GW_SWITCH,
            53,
            &peer,
            &ctx.peer_id,
            "ContinueFromOffset",
            format!("{} from byte {offset} of {length}", session_text(session)),
        );
        Message::Ack
    }

    /// At the consumer: asks the offerer to send session `session` from `offset` on (resume
    /// by offset; `cpns content continue ID OFFSET`). Valid before the content flows.
    pub(crate) async fn continue_at(&self, session: u64, offset: u64) -> Result<(), OpError> {
        let peer = self
            .sessions()
            .live
            .get(&(Role::Consumer, session))
            .map(|l| l.peer)
            .ok_or_else(|| OpError::NotFound("no such session received by this node".into()))?;
        self.ask_continue(peer, session, offset).await
    }

    async fn ask_continue(
        &self,
        offerer: PeerId,
        session: u64,
        offset: u64,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        ctx.trace(
            GW_SWITCH,
            53,
            &ctx.peer_id,
            &offerer,
            "ContinueFromOffset",
            format!("{} from byte {offset}", session_text(session)),
        );
        let answer = tokio::time::timeout(
            ANSWER_WAIT,
            ctx.client.request(
                offerer,
                Protocol::Cpns,
                Message::Delivery(DeliveryMessage::Continue { session, offset }),
            ),
        )
        .await;
        match answer {
            Ok(Ok(Message::Ack)) => Ok(()),
            Ok(Ok(other)) => Err(answer_error(other)),
            Ok(Err(e)) => Err(e.into()),
            Err(_) => Err(OpError::Unavailable("the offerer did not answer".into())),
        }
    }

    /// At the new PNE, step 2: a PNE of this node's user hands it a session. Checked, then
    /// continued by the module's task.
    pub(super) async fn on_hand_over(
        &self,
        peer: PeerId,
        class: SenderClass,
        h: SessionHandOver,
    ) -> Message {
        let view = self.inner.pn.view();
        if !matches!(class, SenderClass::Member | SenderClass::Gateway) {
            return Message::error(ErrorCode::Forbidden, "sessions move within a PN");
        }
        if let Err(why) = same_user_pne(&view, &peer) {
            return Message::error(ErrorCode::Forbidden, why);
        }
        if view.mode == NodeMode::Gateway {
            return Message::error(
                ErrorCode::Conflict,
                "this node is gateway-only: it consumes no services",
            );
        }
        if h.service_id.is_empty() || h.service_id.len() > MAX_SERVICE_ID {
            return Message::error(ErrorCode::BadRequest, "bad service id");
        }
        if h.offset > h.total {
            return Message::error(
                ErrorCode::BadRequest,
                format!(
                    "offset {} is beyond the content ({} bytes)",
                    h.offset, h.total
                ),
            );
        }
        let (offerer, desc) = match self.offerer_of(&h.service_id).await {
            Ok(x) => x,
            Err(e) => return Message::error(ErrorCode::NotFound, e.to_string()),
        };
        if offerer == view.me {
            return Message::error(ErrorCode::Conflict, "this node offers that service itself");
        }
        if offerer != h.offerer {
            return Message::error(
                ErrorCode::BadRequest,
                format!(
                    "{} is offered by {offerer}, not {}",
                    h.service_id, h.offerer
                ),
            );
        }
        let control = Control::new(h.total);
        {
            let mut s = self.sessions();
            if s.live.contains_key(&(Role::Consumer, h.session)) {
                return Message::error(ErrorCode::Conflict, "this node receives that session");
            }
            if s.invoked.len() + s.live.len() >= MAX_SESSIONS {
                return Message::error(ErrorCode::Busy, "too many delivery sessions");
            }
            s.live.insert(
                (Role::Consumer, h.session),
                Live {
                    service_id: h.service_id.clone(),
                    peer: offerer,
                    mode: DeliveryMode::Pull,
                    variant: h.variant.clone(),
                    control: control.clone(),
                    served: None,
                },
            );
        }
        let session = h.session;
        let task = Task::Continue(Box::new(Continuation {
            from: peer,
            handed: h,
            desc,
            control,
        }));
        if self.inner.tasks.try_send(task).is_err() {
            self.sessions().live.remove(&(Role::Consumer, session));
            return Message::error(ErrorCode::Busy, "too many deliveries; try again");
        }
        Message::Ack
    }

    /// At the new PNE, steps 2-4 (the module's task runs it).
    pub(super) async fn continue_handed(&self, c: Continuation) {
        let session = c.handed.session;
        let r = self.continue_inner(&c).await;
        self.sessions().live.remove(&(Role::Consumer, session));
        if let Err(e) = r {
            warn!(
                session = %session_text(session),
                "a session handed over by {} did not continue: {e}",
                c.from
            );
        }
    }

    async fn continue_inner(&self, c: &Continuation) -> Result<(), OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let h = &c.handed;
        let dir = ctx.config.data_dir.join("downloads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let path = dir.join(sanitise(&h.service_id));
        let part = dir.join(format!("{}.part", sanitise(&h.service_id)));
        // The old PNE's part, sealed end to end; confirmed to it by its hash.
        let fetched = async {
            let mut streams = ctx.client.stream_control();
            let mut stream = streams
                .open_stream(c.from, DELIVERY_PROTOCOL)
                .await
                .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
            write_frame(&mut stream, &Hello::Handed { session: h.session }).await?;
            let got = receive_to_file(
                ctx,
                &c.from,
                &mut stream,
                &part,
                h.offset,
                Want::EndToEnd,
                None,
            )
            .await?;
            if got.ended != Ended::Completed || got.bytes != h.offset {
                return Err(OpError::Refused(format!(
                    "the old PNE sent {} of {} bytes",
                    got.bytes, h.offset
                )));
            }
            write_frame(&mut stream, &Stored { sha256: got.sha256 }).await?;
            let _ = futures::AsyncWriteExt::close(&mut stream).await;
            Ok::<_, OpError>(())
        }
        .await;
        if let Err(e) = fetched {
            // The old PNE reports the use then.
            let _ = tokio::fs::remove_file(&part).await;
            return Err(e);
        }
        c.control.add(h.offset);
        // From here this node reports the use, whatever becomes of the rest.
        let rest = self.continue_rest(c, &part).await;
        let (bytes, ended) = match &rest {
            Ok(r) => (h.offset + r.bytes, r.ended.label()),
            Err(e) => (c.control.bytes(), format!("failed: {e}")),
        };
        let complete = matches!(&rest, Ok(r) if r.ended == Ended::Completed);
        if complete {
            let len = tokio::fs::metadata(&part)
                .await
                .map_err(|e| OpError::Internal(e.to_string()))?
                .len();
            if len != h.total {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(OpError::Internal(format!(
                    "the content has {len} of {} bytes",
                    h.total
                )));
            }
            tokio::fs::rename(&part, &path)
                .await
                .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
        } else {
            let _ = tokio::fs::remove_file(&part).await;
        }
        ctx.trace(
            GW_SWITCH,
            54,
            &h.offerer,
            &me,
            "ContentContinued",
            format!("{bytes} of {} bytes, {ended}", h.total),
        );
        let view = self.inner.pn.view();
        let now = crate::now();
        let record = UsageRecord {
            service_id: h.service_id.clone(),
            service_name: c.desc.name.clone(),
            offerer: h.offerer,
            pn_id: view.pn_id().map(str::to_owned),
            started: h.started,
            duration_ms: now.saturating_sub(h.started).saturating_mul(1000),
            bytes,
            capabilities: view.caps.clone(),
            status: view.status.clone(),
            samples: Default::default(),
            variant: h.variant.clone(),
            ended,
        };
        let (usage, _) = self.report_use(record).await;
        debug!(session = %session_text(h.session), bytes, usage, "switched session ended");
        rest.map(|_| ())
    }

    /// Step 3 at the new PNE: the offerer continues from the offset; the rest is appended.
    async fn continue_rest(&self, c: &Continuation, part: &Path) -> Result<Received, OpError> {
        let ctx = self.ctx();
        let h = &c.handed;
        // An offerer outside the PN hears from this node after Entity Registration, as for
        // an invocation.
        self.inner.pn.register(h.offerer).await?;
        self.ask_continue(h.offerer, h.session, h.offset).await?;
        let want = match c.desc.visibility.group() {
            Some(g) => Want::Group(g),
            None => Want::Any,
        };
        let mut streams = ctx.client.stream_control();
        let mut stream = streams
            .open_stream(h.offerer, DELIVERY_PROTOCOL)
            .await
            .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
        write_frame(&mut stream, &Hello::Pull { session: h.session }).await?;
        receive_into(
            ctx,
            &h.offerer,
            &mut stream,
            part,
            true,
            h.total - h.offset,
            want,
            Some(c.control.clone()),
        )
        .await
    }
}

/// A session handed to this node, to continue (the module's task owns it).
pub(super) struct Continuation {
    from: PeerId,
    handed: SessionHandOver,
    desc: ServiceDescription,
    control: Arc<Control>,
}

/// The switch waiting for a session's hand-over.
pub(super) struct SwitchDone(oneshot::Sender<Result<SwitchedSession, OpError>>);

impl SwitchDone {
    pub(super) fn send(self, r: Result<SwitchedSession, OpError>) {
        let _ = self.0.send(r);
    }
}

/// An error's copy for a second listener (errors are not `Clone`).
trait CloneError {
    fn clone_error(&self) -> Self;
}

impl CloneError for Result<(), OpError> {
    fn clone_error(&self) -> Self {
        match self {
            Ok(()) => Ok(()),
            Err(e) => Err(OpError::Refused(e.to_string())),
        }
    }
}
