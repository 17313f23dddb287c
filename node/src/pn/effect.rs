//! What a transition asks the actor to do, in the order the actor does it: durable writes
//! (one transaction, flushed), key-ring writes, overlay commands, replies, then child jobs.
//!
//! A transition never awaits: it pushes effects into an [`Fx`] and returns. Slow work is a
//! [`Job`]; its outcome comes back to the state as a [`Done`] with the job's id, which the
//! state maps to what it was for (its purpose, kept in the state until the job reports).

use std::sync::Arc;
use std::time::Duration;

use cpns_keys::{GroupId, GroupKey, UnixTime};
use cpns_overlay::{AuthMessage, Capabilities, KadMode, Message, Multiaddr, SessionInfo};
use libp2p::PeerId;

use super::Reply;
use crate::caps;
use crate::config::CapabilitiesConfig;
use crate::enrolment::Enrolment;
use crate::error::OpError;
use crate::pn::Notification;
use crate::store::PnWrite;

/// Identifies a pending reply (an owner's operation, or a peer's request the state answers
/// later).
pub(crate) type WaiterId = u64;
/// Identifies a child job.
pub(crate) type JobId = u64;

/// One thing to do after a transition.
#[derive(Debug)]
pub(crate) enum Effect {
    /// A durable write of the PN actor's trees.
    Persist(PnWrite),
    /// Store a group key durably (and make it usable).
    InstallKey(GroupKey),
    /// Forget a group's keys.
    RemoveKeys(GroupId),
    /// Admit a peer's requests until its credential ends.
    Admit { peer: PeerId, until: UnixTime },
    /// Refuse a peer's requests from now on (it may register again).
    Unadmit(PeerId),
    /// Refuse every request of a peer with `code` (revoked, expelled) until it is admitted
    /// again.
    Refuse {
        peer: PeerId,
        code: cpns_overlay::ErrorCode,
    },
    /// Dial hints for a peer.
    AddAddrs { peer: PeerId, addrs: Vec<Multiaddr> },
    /// Switch the DHT mode.
    KadMode(KadMode),
    /// Drop a peer that will be a DHT client from the routing table.
    ForgetDhtPeer(PeerId),
    /// A request to a peer whose answer nobody waits for (logged if it fails).
    Send { peer: PeerId, message: Message },
    /// A notification for local listeners.
    Notify(Notification),
    /// Resolve a pending reply.
    Resolve(WaiterId, Reply),
    /// Start slow work; `after_reply` jobs wait until the current command's answer was sent.
    Job {
        id: JobId,
        job: Job,
        after_reply: bool,
    },
}

/// Slow work, run as a child task of the actor.
pub(crate) enum Job {
    /// Dial an address.
    Dial(Multiaddr),
    /// Dial the first address that works of a peer.
    DialAny { peer: PeerId, addrs: Vec<Multiaddr> },
    /// A request to a peer on `/cpns/1.0.0`.
    Request { peer: PeerId, message: Message },
    /// A heartbeat (a status report) to the gateway, bounded in time: silence is what starts a
    /// failover, so the answer's absence is the information.
    Heartbeat {
        gateway: PeerId,
        message: Message,
        within: Duration,
    },
    /// B.1 steps 8-11 with `cpns-auth` (traced when `trace`).
    Authenticate {
        trace: bool,
        mode: cpns_overlay::NodeMode,
    },
    /// A request to `cpns-auth` within a session (authenticating first if needed).
    Auth(AuthMessage),
    /// A request to `cpns-auth` only if a session is open (an update that is not worth an
    /// authentication of its own).
    AuthIfSession(AuthMessage),
    /// Read the machine's capabilities (the reader travels with the job and comes back).
    ReadCaps {
        reader: Box<caps::Reader>,
        overrides: Arc<CapabilitiesConfig>,
        mode: cpns_overlay::NodeMode,
        preference: cpns_overlay::GatewayPreference,
        revision: u64,
    },
    /// Save the enrolment file (credential, EUKey, revocation list).
    SaveEnrolment(Arc<Enrolment>),
    /// Wait.
    Sleep(Duration),
}

impl std::fmt::Debug for Job {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Job::Dial(a) => write!(f, "Dial({a})"),
            Job::DialAny { peer, .. } => write!(f, "DialAny({peer})"),
            Job::Request { peer, message } => write!(f, "Request({peer}, {})", message.name()),
            Job::Heartbeat { gateway, .. } => write!(f, "Heartbeat({gateway})"),
            Job::Authenticate { trace, .. } => write!(f, "Authenticate(trace: {trace})"),
            Job::Auth(m) | Job::AuthIfSession(m) => write!(f, "Auth({})", m.name()),
            Job::ReadCaps { .. } => f.write_str("ReadCaps"),
            Job::SaveEnrolment(_) => f.write_str("SaveEnrolment"),
            Job::Sleep(d) => write!(f, "Sleep({d:?})"),
        }
    }
}

/// What a job came back with.
pub(crate) enum Done {
    /// A dial: the peer reached.
    Dialed(Result<PeerId, OpError>),
    /// A peer's answer.
    Answer(Result<Message, cpns_overlay::Error>),
    /// Whether the gateway answered the heartbeat (an error answer counts: only silence does
    /// not).
    Heartbeat(bool),
    /// The session (B.1 step 11).
    Authenticated(Result<SessionInfo, OpError>),
    /// The server's answer.
    Auth(Result<AuthMessage, OpError>),
    /// The reader and what it read.
    Caps(Box<caps::Reader>, Box<Capabilities>),
    /// The enrolment file was written (or not).
    Saved(Result<(), OpError>),
    /// The wait is over.
    Slept,
}

impl std::fmt::Debug for Done {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Done::Dialed(r) => write!(f, "Dialed({r:?})"),
            Done::Answer(Ok(m)) => write!(f, "Answer({})", m.name()),
            Done::Answer(Err(e)) => write!(f, "Answer(error: {e})"),
            Done::Heartbeat(a) => write!(f, "Heartbeat(answered: {a})"),
            Done::Authenticated(r) => write!(f, "Authenticated(ok: {})", r.is_ok()),
            Done::Auth(Ok(m)) => write!(f, "Auth({})", m.name()),
            Done::Auth(Err(e)) => write!(f, "Auth(error: {e})"),
            Done::Caps(..) => f.write_str("Caps"),
            Done::Saved(r) => write!(f, "Saved({r:?})"),
            Done::Slept => f.write_str("Slept"),
        }
    }
}

/// The effects of one transition, and what it needs to know of the outside: the time.
pub(crate) struct Fx {
    /// Now, in Unix seconds.
    pub(crate) now: UnixTime,
    /// The effects, in order.
    pub(crate) effects: Vec<Effect>,
    /// Whether jobs started now must wait for the current answer to be sent.
    pub(crate) after_reply: bool,
    /// Whether the published view must be renewed.
    pub(crate) changed: bool,
}

impl Fx {
    /// Effects of a transition at `now`.
    pub(crate) fn new(now: UnixTime) -> Self {
        Self {
            now,
            effects: Vec::new(),
            after_reply: false,
            changed: false,
        }
    }

    /// Pushes an effect.
    pub(crate) fn push(&mut self, e: Effect) {
        self.effects.push(e);
    }

    /// Starts a job.
    pub(crate) fn job(&mut self, id: JobId, job: Job) {
        let after_reply = self.after_reply;
        self.effects.push(Effect::Job {
            id,
            job,
            after_reply,
        });
    }

    /// Resolves a waiter.
    pub(crate) fn resolve(&mut self, w: WaiterId, r: Reply) {
        self.effects.push(Effect::Resolve(w, r));
    }

    /// Sends a request whose answer does not matter.
    pub(crate) fn send(&mut self, peer: PeerId, message: Message) {
        self.effects.push(Effect::Send { peer, message });
    }

    /// Marks the view as changed.
    pub(crate) fn changed(&mut self) {
        self.changed = true;
    }

    /// The jobs started (tests).
    #[cfg(test)]
    pub(crate) fn jobs(&self) -> Vec<&Job> {
        self.effects
            .iter()
            .filter_map(|e| match e {
                Effect::Job { job, .. } => Some(job),
                _ => None,
            })
            .collect()
    }
}
