//! What this node knows of other peers' credentials, for a caller about to ask them.
//!
//! The directory asks every provider a lookup named for its records. A hostile DHT server
//! can name any PeerId as a provider; never-enrolled peers named that way took each asking
//! node a whole `lookup_timeout` the first time (issue 14's attack soak: p99 ~4 s against
//! ~50 ms alone). The lookup has already dialled every provider it heard of, and the
//! credential exchange follows every new connection, so a short wait tells the directory
//! which of them hold no valid credential: those cannot have published a record anyone
//! accepts, and are not asked. [`crate::Client::credential_verdicts`] waits (bounded by the
//! caller) until no peer asked about is still being dialled by a lookup or still exchanging.

use std::collections::HashMap;

use libp2p::PeerId;

use super::{CredentialState, EventLoop};
use crate::client::{PeerVerdict, Reply};

/// Most callers waiting for verdicts at once; past it a caller gets what is known now.
pub(super) const MAX_VERDICT_WAITERS: usize = 64;
/// Most peers one caller asks about.
pub(super) const MAX_VERDICT_PEERS: usize = 256;
/// Most provider dials remembered as under way.
pub(super) const MAX_PROVIDER_DIALS_TRACKED: usize = 1024;

/// A caller waiting for its peers' verdicts.
pub(super) struct Waiter {
    peers: Vec<PeerId>,
    reply: Reply<HashMap<PeerId, PeerVerdict>>,
}

impl EventLoop {
    /// What this node knows of `peer`'s credential now.
    pub(super) fn verdict(&self, peer: &PeerId) -> PeerVerdict {
        if !self.config.validator.wants_credentials() {
            return PeerVerdict::Unknown;
        }
        match self.peers.get(peer).map(|s| &s.credential) {
            Some(CredentialState::Verified(c)) if c.expires > super::unix_now() => {
                PeerVerdict::Verified
            }
            Some(CredentialState::Verified(_) | CredentialState::None) => PeerVerdict::Refused,
            Some(CredentialState::Pending) => PeerVerdict::Pending,
            Some(CredentialState::Failed) => PeerVerdict::Unknown,
            None if self.provider_dials.contains(peer) => PeerVerdict::Pending,
            None => PeerVerdict::Unknown,
        }
    }

    fn verdicts(&self, peers: &[PeerId]) -> HashMap<PeerId, PeerVerdict> {
        peers.iter().map(|p| (*p, self.verdict(p))).collect()
    }

    /// Answers at once if nothing is pending (or `wait` is false, or too many wait), else
    /// when the last pending verdict settles.
    pub(super) fn await_verdicts(
        &mut self,
        mut peers: Vec<PeerId>,
        wait: bool,
        reply: Reply<HashMap<PeerId, PeerVerdict>>,
    ) {
        peers.truncate(MAX_VERDICT_PEERS);
        let now = self.verdicts(&peers);
        let pending = now.values().any(|v| *v == PeerVerdict::Pending);
        if !wait || !pending || self.verdict_waiters.len() >= MAX_VERDICT_WAITERS {
            let _ = reply.send(Ok(now));
            return;
        }
        self.verdict_waiters.push(Waiter { peers, reply });
    }

    /// Something changed (a verdict, a connection, a dial): answers every waiter whose peers
    /// have all settled, and forgets those that gave up.
    pub(super) fn verdicts_changed(&mut self) {
        if self.verdict_waiters.is_empty() {
            return;
        }
        let waiters = std::mem::take(&mut self.verdict_waiters);
        for w in waiters {
            if w.reply.is_closed() {
                continue;
            }
            let now = self.verdicts(&w.peers);
            if now.values().any(|v| *v == PeerVerdict::Pending) {
                self.verdict_waiters.push(w);
            } else {
                let _ = w.reply.send(Ok(now));
            }
        }
    }

    /// A lookup started dialling `peer` (a provider it named).
    pub(super) fn provider_dial_started(&mut self, peer: PeerId) {
        if self.provider_dials.len() < MAX_PROVIDER_DIALS_TRACKED {
            self.provider_dials.insert(peer);
        }
    }

    /// A dial to `peer` ended (connected or failed).
    pub(super) fn provider_dial_ended(&mut self, peer: Option<PeerId>) {
        if let Some(p) = peer
            && self.provider_dials.remove(&p)
        {
            self.verdicts_changed();
        }
    }
}
