//! Delivery sessions and their control (5.6.7 "Control of Service (e.g. start, stop)"): what
//! an offerer and a consumer know of each running delivery, and the one switch both sides'
//! loops obey — running, paused, stopped (and by whom).
//!
//! An offerer's session is *invoked* (G.1 steps 5-6) until its content starts to flow, then
//! *live* until the content ends; a consumer's session is live while it receives. The same
//! session id (chosen by the offerer) names it on both sides, so `cpns content stop ID` works
//! on either node.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use cpns_keys::GroupId;
use cpns_overlay::DeliveryMode;
use libp2p::PeerId;
use tokio::sync::watch;

/// Who did something to a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Party {
    /// The side receiving the content.
    Consumer,
    /// The side sending it.
    Offerer,
}

impl Party {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Party::Consumer => "consumer",
            Party::Offerer => "offerer",
        }
    }
}

/// Where a running delivery stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum RunState {
    /// Content flows.
    Running,
    /// Held by one side; nothing flows until it is resumed (or stopped).
    Paused(Party),
    /// Ended early by one side.
    Stopped(Party),
}

impl RunState {
    pub(crate) fn label(self) -> String {
        match self {
            RunState::Running => "running".into(),
            RunState::Paused(p) => format!("paused by the {}", p.name()),
            RunState::Stopped(p) => format!("stopped by the {}", p.name()),
        }
    }
}

/// The switch of one running delivery, shared by its loop and whoever controls it, and its
/// progress.
pub(crate) struct Control {
    state: watch::Sender<RunState>,
    bytes: AtomicU64,
    total: u64,
}

impl Control {
    pub(crate) fn new(total: u64) -> Arc<Control> {
        Arc::new(Control {
            state: watch::Sender::new(RunState::Running),
            bytes: AtomicU64::new(0),
            total,
        })
    }

    pub(crate) fn state(&self) -> RunState {
        *self.state.borrow()
    }

    /// A receiver that wakes on every change of state.
    pub(crate) fn subscribe(&self) -> watch::Receiver<RunState> {
        self.state.subscribe()
    }

    /// Pauses a running session; false if it was not running.
    pub(crate) fn pause(&self, by: Party) -> bool {
        self.state.send_if_modified(|s| {
            if *s == RunState::Running {
                *s = RunState::Paused(by);
                true
            } else {
                false
            }
        })
    }

    /// Resumes a paused session; false if it was not paused.
    pub(crate) fn resume(&self) -> bool {
        self.state.send_if_modified(|s| {
            if matches!(s, RunState::Paused(_)) {
                *s = RunState::Running;
                true
            } else {
                false
            }
        })
    }

    /// Stops the session (once; the first stop wins). False if it was stopped already.
    pub(crate) fn stop(&self, by: Party) -> bool {
        self.state.send_if_modified(|s| {
            if matches!(s, RunState::Stopped(_)) {
                false
            } else {
                *s = RunState::Stopped(by);
                true
            }
        })
    }

    pub(crate) fn add(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn total(&self) -> u64 {
        self.total
    }
}

/// An offerer's session invoked but not started: what to send, to whom.
pub(crate) struct Invoked {
    pub(crate) service_id: String,
    pub(crate) consumer: PeerId,
    pub(crate) mode: DeliveryMode,
    pub(crate) body: Body,
    pub(crate) length: u64,
    pub(crate) group: Option<GroupId>,
    pub(crate) chunk: usize,
    pub(crate) variant: Option<String>,
    pub(crate) created: Instant,
    /// How long it waits for its content to start (longer for a switched session).
    pub(crate) ttl: std::time::Duration,
    /// Its switch, already: a pause that comes before the content starts holds it.
    pub(crate) control: Arc<Control>,
    /// The first byte to send (resume by offset, [`cpns_overlay::DeliveryMessage::Continue`]);
    /// 0 unless the consumer asked for another.
    pub(crate) offset: u64,
}

/// Where the bytes of an offerer's session come from.
#[derive(Clone, Debug)]
pub(crate) enum Body {
    /// A file of this node.
    File(PathBuf),
    /// A proxied device's item (`Origin::Device`): fetched over HTTP from the device while it
    /// is sent, never kept (see [`super::device`]).
    Device(String),
}

/// What an offerer serves in a live session, kept so that a switch of the consumer's PNE
/// (5.6.9) can open the same session again for the new PNE.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) body: Body,
    pub(crate) length: u64,
    pub(crate) group: Option<GroupId>,
    pub(crate) chunk: usize,
}

/// Which side of a live session this node is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Role {
    Offerer,
    Consumer,
}

/// A session whose content flows (or is paused).
#[derive(Clone)]
pub(crate) struct Live {
    pub(crate) service_id: String,
    /// The other side.
    pub(crate) peer: PeerId,
    pub(crate) mode: DeliveryMode,
    pub(crate) variant: Option<String>,
    pub(crate) control: Arc<Control>,
    /// At the offerer, what it serves (none at the consumer).
    pub(crate) served: Option<Arc<Served>>,
}

impl Live {
    /// What the API shows of it now.
    pub(crate) fn info(&self, role: Role, id: u64) -> SessionInfo {
        SessionInfo {
            id: session_text(id),
            role: match role {
                Role::Offerer => "offerer",
                Role::Consumer => "consumer",
            },
            service_id: self.service_id.clone(),
            peer: self.peer.to_string(),
            mode: super::fetch::mode_name(self.mode),
            state: self.control.state().label(),
            bytes: self.control.bytes(),
            total: self.control.total(),
            variant: self.variant.clone(),
        }
    }
}

/// What the API shows of a session.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The session id, hex.
    pub id: String,
    /// `offerer` or `consumer`: this node's side.
    pub role: &'static str,
    /// The service.
    pub service_id: String,
    /// The other side.
    pub peer: String,
    /// `pull` or `push`.
    pub mode: &'static str,
    /// `invoked`, `running`, `paused by the consumer`...
    pub state: String,
    /// Bytes sent (offerer) or received and opened (consumer) so far.
    pub bytes: u64,
    /// The content length.
    pub total: u64,
    /// The variant chosen, if any.
    pub variant: Option<String>,
}

/// Every session a node has, on both sides. Bounded by its owner ([`super::MAX_SESSIONS`]).
#[derive(Default)]
pub(crate) struct Sessions {
    pub(crate) invoked: HashMap<u64, Invoked>,
    pub(crate) live: HashMap<(Role, u64), Live>,
}

/// A session id as people type it.
pub(crate) fn session_text(id: u64) -> String {
    format!("{id:016x}")
}

/// Parses [`session_text`] (or the id in decimal).
pub(crate) fn parse_session(s: &str) -> Option<u64> {
    let s = s.trim();
    u64::from_str_radix(s, 16)
        .ok()
        .filter(|_| s.len() == 16)
        .or_else(|| s.parse().ok())
}

impl Sessions {
    pub(crate) fn infos(&self) -> Vec<SessionInfo> {
        let mode = |m: DeliveryMode| super::fetch::mode_name(m);
        let mut out: Vec<SessionInfo> = self
            .invoked
            .iter()
            .map(|(id, s)| SessionInfo {
                id: session_text(*id),
                role: "offerer",
                service_id: s.service_id.clone(),
                peer: s.consumer.to_string(),
                mode: mode(s.mode),
                state: match s.control.state() {
                    RunState::Running => "invoked".into(),
                    other => other.label(),
                },
                bytes: 0,
                total: s.length,
                variant: s.variant.clone(),
            })
            .collect();
        out.extend(self.live.iter().map(|((role, id), s)| s.info(*role, *id)));
        out.sort_by(|a, b| (a.role, &a.id).cmp(&(b.role, &b.id)));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_stop_wins_and_pause_needs_running() {
        let c = Control::new(10);
        assert!(c.pause(Party::Consumer));
        assert!(!c.pause(Party::Offerer), "already paused");
        assert_eq!(c.state(), RunState::Paused(Party::Consumer));
        assert!(c.resume());
        assert!(!c.resume());
        assert!(c.stop(Party::Offerer));
        assert!(!c.stop(Party::Consumer));
        assert_eq!(c.state(), RunState::Stopped(Party::Offerer));
        assert!(!c.pause(Party::Consumer), "a stopped session stays stopped");
        assert!(!c.resume());
    }

    #[test]
    fn session_ids_round_trip() {
        let id = 0x00ab_cdef_0123_4567;
        assert_eq!(parse_session(&session_text(id)), Some(id));
        assert_eq!(parse_session("42"), Some(42));
        assert_eq!(parse_session("zz"), None);
    }
}
