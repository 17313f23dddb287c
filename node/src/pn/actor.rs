//! The PN actor's task: the one owner of the PN state.
//!
//! It `select!`s, biased in this order, over: cancellation; finished child jobs (their
//! results are transitions too); commands (from the API handle, the router's inbound requests,
//! the node's events); revocation lists from the auth link; the heartbeat timer. Each input is
//! applied as one transition of [`State`], and its effects run in a fixed order:
//!
//! 1. the PN actor's durable writes, in one sled transaction, flushed;
//! 2. key-ring writes (flushed);
//! 3. overlay commands (admissions, addresses, DHT mode);
//! 4. the new [`View`], if anything changed;
//! 5. local notifications, then replies — so nothing is answered before it is on disk, and
//!    whoever is answered reads a view that has the change;
//! 6. requests whose answer nobody waits for, and child jobs (in the actor's `JoinSet`).
//!
//! If a durable write fails, the replies of that transition become errors: nothing is
//! acknowledged that is not stored.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use cpns_keys::RevocationList;
use cpns_overlay::{ErrorCode, Message};
use tokio::sync::{broadcast, mpsc, oneshot, watch};
use tokio::task::JoinSet;
use tracing::{debug, warn};

use super::effect::{Done, Effect, Fx, JobId, WaiterId};
use super::state::State;
use super::{Answer, COMMANDS, Command, Handle, Reply, View};
use crate::auth_link::AuthLink;
use crate::context::{Context, Credentials};
use crate::error::OpError;
use crate::pn::Notification;
use crate::store::PnWrite;

/// Most fire-and-forget requests and child jobs running at once; beyond it, new ones wait for
/// a running one to end (the command channel then pushes back on the callers).
const MAX_JOBS: usize = 512;
/// How long a job that must follow an answer waits for the answer to be sent.
const AFTER_REPLY_WAIT: Duration = Duration::from_secs(5);
/// Job id of requests whose outcome nobody waits for.
const NOBODY: JobId = 0;

/// What a job that follows an answer waits for: the answer sent (or a time limit).
type Gate = futures::future::Shared<futures::future::BoxFuture<'static, ()>>;

/// Who waits for a reply.
enum Waiter {
    Op(oneshot::Sender<Reply>),
    Answer(oneshot::Sender<Answer>),
}

/// The actor.
struct Actor {
    ctx: Context,
    auth: AuthLink,
    state: State,
    commands: mpsc::Receiver<Command>,
    revocations: mpsc::Receiver<RevocationList>,
    view: watch::Sender<Arc<View>>,
    versions: watch::Sender<u64>,
    credentials: watch::Sender<Option<Credentials>>,
    notifications: broadcast::Sender<Notification>,
    waiters: HashMap<WaiterId, Waiter>,
    next_waiter: WaiterId,
    jobs: JoinSet<(JobId, Done)>,
    job_ids: HashMap<tokio::task::Id, JobId>,
}

/// Starts the actor in `tasks`; returns its handle.
pub(crate) fn spawn(
    ctx: Context,
    auth: AuthLink,
    state: State,
    credentials: watch::Sender<Option<Credentials>>,
    revocations: mpsc::Receiver<RevocationList>,
    tasks: &mut JoinSet<()>,
) -> Handle {
    let (tx, rx) = mpsc::channel(COMMANDS);
    let (view, view_rx) = watch::channel(Arc::new(state.view()));
    let (versions, versions_rx) = watch::channel(0);
    let notifications = broadcast::channel(256).0;
    let handle = Handle {
        commands: tx,
        view: view_rx,
        versions: versions_rx,
        notifications: notifications.clone(),
    };
    let actor = Actor {
        ctx,
        auth,
        state,
        commands: rx,
        revocations,
        view,
        versions,
        credentials,
        notifications,
        waiters: HashMap::new(),
        next_waiter: 1,
        jobs: JoinSet::new(),
        job_ids: HashMap::new(),
    };
    actor.publish_credentials();
    tasks.spawn(actor.run());
    handle
}

impl Actor {
    async fn run(mut self) {
        let mut fx = Fx::new(crate::now());
        self.state.on_start(&mut fx);
        self.execute(fx, None).await;
        // The tick is the heartbeat period, which an admin may change (Adminee settings).
        let mut period = self.state.heartbeat_period();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let cancel = self.ctx.cancel.clone();
        loop {
            tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(res) = self.jobs.join_next_with_id(), if !self.jobs.is_empty() => {
                    let mut fx = Fx::new(crate::now());
                    match res {
                        Ok((task, (id, done))) => {
                            self.job_ids.remove(&task);
                            if id != NOBODY {
                                self.state.on_done(id, done, &mut fx);
                            } else if let Done::Answer(Err(e)) = done {
                                debug!("request not delivered: {e}");
                            }
                        }
                        Err(e) => {
                            if e.is_panic() {
                                warn!("a PN job panicked: {e}");
                            }
                            if let Some(id) = self.job_ids.remove(&e.id()) {
                                self.state.on_lost(id, &mut fx);
                            }
                        }
                    }
                    self.execute(fx, None).await;
                }
                cmd = self.commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                Some(list) = self.revocations.recv() => {
                    let mut fx = Fx::new(crate::now());
                    self.state.on_event(super::Event::Revocations(Box::new(list)), &mut fx);
                    self.execute(fx, None).await;
                }
                _ = tick.tick() => {
                    let mut fx = Fx::new(crate::now());
                    self.state.on_tick(&mut fx);
                    self.execute(fx, None).await;
                }
            }
            let wanted = self.state.heartbeat_period();
            if wanted != period {
                period = wanted;
                tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            }
        }
        // Children must not outlive the node: they are stopped, and whoever waits hears "the
        // node is stopping" when its sender is dropped.
        self.jobs.abort_all();
        while self.jobs.join_next().await.is_some() {}
        debug!("PN actor stopped");
    }

    fn waiter(&mut self, w: Waiter) -> WaiterId {
        let id = self.next_waiter;
        self.next_waiter += 1;
        self.waiters.insert(id, w);
        id
    }

    async fn command(&mut self, cmd: Command) {
        let mut fx = Fx::new(crate::now());
        match cmd {
            Command::Inbound {
                peer,
                class,
                message,
                reply,
            } => {
                let w = self.waiter(Waiter::Answer(reply));
                if let Some(m) = self.state.on_inbound(peer, class, message, w, &mut fx) {
                    fx.resolve(w, Reply::Message(m));
                }
                self.execute(fx, Some(w)).await;
            }
            Command::Server { message, reply } => {
                let w = self.waiter(Waiter::Answer(reply));
                if let Some(m) = self.state.on_server(message, w, &mut fx) {
                    fx.resolve(w, Reply::Message(m));
                }
                self.execute(fx, Some(w)).await;
            }
            Command::Op(op, reply) => {
                let w = self.waiter(Waiter::Op(reply));
                self.state.on_op(op, w, &mut fx);
                self.execute(fx, Some(w)).await;
            }
            Command::Event(e) => {
                self.state.on_event(e, &mut fx);
                self.execute(fx, None).await;
            }
        }
    }

    /// Runs a transition's effects (see the module's documentation for the order).
    async fn execute(&mut self, fx: Fx, current: Option<WaiterId>) {
        let changed = fx.changed;
        let mut writes: Vec<PnWrite> = Vec::new();
        let mut keys = Vec::new();
        let mut overlay = Vec::new();
        let mut notes = Vec::new();
        let mut replies = Vec::new();
        let mut sends = Vec::new();
        let mut jobs = Vec::new();
        for e in fx.effects {
            match e {
                Effect::Persist(w) => writes.push(w),
                e @ (Effect::InstallKey(_) | Effect::RemoveKeys(_)) => keys.push(e),
                e @ (Effect::Admit { .. }
                | Effect::Unadmit(_)
                | Effect::Refuse { .. }
                | Effect::AddAddrs { .. }
                | Effect::KadMode(_)
                | Effect::ForgetDhtPeer(_)) => overlay.push(e),
                Effect::Notify(n) => notes.push(n),
                Effect::Resolve(w, r) => replies.push((w, r)),
                Effect::Send { peer, message } => sends.push((peer, message)),
                Effect::Job {
                    id,
                    job,
                    after_reply,
                } => jobs.push((id, job, after_reply)),
            }
        }
        let mut failed: Option<String> = None;
        if let Err(e) = self.ctx.store.commit_pn(&writes).await {
            warn!("the PN state was not stored: {e}");
            failed = Some(e.to_string());
        }
        for k in keys {
            let r = match k {
                Effect::InstallKey(key) => self.ctx.keyring.insert(key).await,
                Effect::RemoveKeys(group) => self.ctx.keyring.remove(&group).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                warn!("a group key was not stored: {e}");
                failed = Some(e.to_string());
            }
        }
        let client = &self.ctx.client;
        for o in overlay {
            let r = match o {
                Effect::Admit { peer, until } => client.admit_until(peer, until).await,
                Effect::Unadmit(peer) => client.unadmit(peer).await,
                Effect::Refuse { peer, code } => client.refuse_peer(peer, code).await,
                Effect::AddAddrs { peer, addrs } => {
                    let mut r = Ok(());
                    for a in addrs {
                        r = r.and(client.add_address(peer, a).await);
                    }
                    r
                }
                Effect::KadMode(m) => client.set_kad_mode(m).await,
                Effect::ForgetDhtPeer(peer) => client.forget_dht_peer(peer).await,
                _ => Ok(()),
            };
            if let Err(e) = r {
                debug!("overlay command not taken: {e}");
            }
        }
        // The new view before any reply: whoever is answered reads a view that has the change.
        if changed {
            self.state.bump();
            let view = Arc::new(self.state.view());
            let version = view.version;
            self.view.send_replace(view);
            self.versions.send_replace(version);
            self.publish_credentials();
        }
        for n in notes {
            let _ = self.notifications.send(n);
        }
        let needs_signal = jobs.iter().any(|(_, _, after)| *after);
        let (sent_tx, sent_rx) = if needs_signal {
            let (t, r) = oneshot::channel();
            (Some(t), Some(r))
        } else {
            (None, None)
        };
        let mut sent_tx = sent_tx;
        for (w, r) in replies {
            let r = match &failed {
                Some(e) => storage_failed(r, e),
                None => r,
            };
            let sent = if Some(w) == current {
                sent_tx.take()
            } else {
                None
            };
            self.reply(w, r, sent);
        }
        // A signal nobody will fire (the answer went elsewhere) must not hold the jobs back.
        drop(sent_tx);
        let sent_rx: Option<Gate> = sent_rx.map(|r| {
            let wait: futures::future::BoxFuture<'static, ()> = Box::pin(async move {
                let _ = tokio::time::timeout(AFTER_REPLY_WAIT, r).await;
            });
            futures::FutureExt::shared(wait)
        });
        for (peer, message) in sends {
            self.start(NOBODY, super::effect::Job::Request { peer, message }, None);
        }
        for (id, job, after) in jobs {
            let gate = if after { sent_rx.clone() } else { None };
            self.start(id, job, gate);
        }
    }

    fn start(&mut self, id: JobId, job: super::effect::Job, gate: Option<Gate>) {
        if self.jobs.len() >= MAX_JOBS && id == NOBODY {
            debug!("too many requests in flight: one dropped");
            return;
        }
        let (ctx, auth) = (self.ctx.clone(), self.auth.clone());
        let handle = self.jobs.spawn(async move {
            if let Some(g) = gate {
                g.await;
            }
            (id, super::jobs::run(ctx, auth, job).await)
        });
        self.job_ids.insert(handle.id(), id);
    }

    fn reply(&mut self, w: WaiterId, r: Reply, sent: Option<oneshot::Sender<()>>) {
        match (self.waiters.remove(&w), r) {
            (Some(Waiter::Answer(tx)), Reply::Message(message)) => {
                let _ = tx.send(Answer { message, sent });
            }
            // A peer's request that waited for a flow (a hand-off's take-over): its end.
            (Some(Waiter::Answer(tx)), Reply::Pn(r)) => {
                let message = match r {
                    Ok(_) => Message::Ack,
                    Err(e) => Message::error(ErrorCode::Conflict, e.to_string()),
                };
                let _ = tx.send(Answer { message, sent });
            }
            (Some(Waiter::Answer(tx)), other) => {
                let _ = tx.send(Answer {
                    message: Message::error(ErrorCode::Internal, format!("{other:?}")),
                    sent,
                });
            }
            (Some(Waiter::Op(tx)), r) => {
                let _ = tx.send(r);
            }
            (None, _) => {}
        }
    }

    fn publish_credentials(&self) {
        let v = self.view.borrow().clone();
        let creds = match (&v.enrolment, self.state.trust()) {
            (Some(e), Some(t)) => Some(Credentials {
                enrolment: e.clone(),
                trust: t,
                mode: v.mode,
            }),
            _ => None,
        };
        let same = match (&*self.credentials.borrow(), &creds) {
            (Some(a), Some(b)) => {
                Arc::ptr_eq(&a.enrolment, &b.enrolment)
                    && Arc::ptr_eq(&a.trust, &b.trust)
                    && a.mode == b.mode
            }
            (None, None) => true,
            _ => false,
        };
        if !same {
            self.credentials.send_replace(creds);
        }
    }
}

/// A reply of a transition whose writes did not reach the disk.
fn storage_failed(r: Reply, e: &str) -> Reply {
    let err = || OpError::Internal(format!("not stored: {e}"));
    match r {
        Reply::Message(_) => Reply::Message(Message::error(
            ErrorCode::Internal,
            format!("not stored: {e}"),
        )),
        Reply::Pair(_) => Reply::Pair(Err(err())),
        Reply::Pn(_) => Reply::Pn(Err(err())),
        Reply::Epoch(_) => Reply::Epoch(Err(err())),
        Reply::Done(_) => Reply::Done(Err(err())),
        Reply::Admin(_) => Reply::Admin(Err(err())),
        Reply::Merge(_) => Reply::Merge(Err(err())),
        Reply::Split(_) => Reply::Split(Err(err())),
    }
}
