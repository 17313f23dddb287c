//! Which answers may end a provider lookup early ([`crate::ProvidersQuery::stop_after_answers`]).
//!
//! Stopping after the first answers that name providers is what makes discovery fast (every
//! one of the k closest peers holds all of a key's providers). But a lookup also asks the
//! peers that the answers name as closer, whoever they are: an enrolled hostile DHT server
//! named never-enrolled ones, which answered at once with made-up providers, and two such
//! answers ended the lookup before any honest server was heard (issue 14's attack soak: 68 of
//! 100 honest services found). So where routing needs a credential
//! ([`EventLoop::gates_routing`]), an answer counts only if it comes from this node's own
//! store or from a peer whose credential it verified. An answer from a peer whose exchange is
//! still under way (it was dialled by this very lookup) is remembered and counts once the
//! credential verifies; answers from peers without one never count. Their providers are
//! still kept: nothing is lost, the lookup only runs on until honest servers answered or it
//! converges.
//!
//! A node with home DHT servers (a PNE: its PN gateway, [`crate::Client::set_home_servers`])
//! also stops early only once one of them has answered: the gateway holds every provider
//! record of its household, other servers perhaps only some.

use libp2p::PeerId;

use super::{EventLoop, PendingQuery};
use crate::client::PeerVerdict;

/// Most answers of one lookup waiting for their sender's credential.
pub(super) const MAX_AWAITED_ANSWERS: usize = 16;

/// How an answer naming providers counts toward a lookup's early stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Answer {
    /// It counts now.
    Counts,
    /// Its sender's credential is still being exchanged: it counts once it verifies.
    Awaited(PeerId),
    /// Its sender has no verified credential: it never counts.
    Ignored,
}

impl EventLoop {
    /// How an answer from `source` (`None`: the local store) counts.
    pub(super) fn judge_answer(&self, source: Option<PeerId>) -> Answer {
        let Some(peer) = source else {
            return Answer::Counts;
        };
        if !self.gates_routing() {
            return Answer::Counts;
        }
        // The same classification the directory gets from `credential_verdicts`.
        match self.verdict(&peer) {
            PeerVerdict::Verified => Answer::Counts,
            PeerVerdict::Pending => Answer::Awaited(peer),
            PeerVerdict::Refused | PeerVerdict::Unknown => Answer::Ignored,
        }
    }

    /// `peer`'s credential verified: its awaited answers count now, and the lookups they
    /// complete are finished (kad then reports their last step, which sends the reply).
    pub(super) fn answerer_verified(&mut self, peer: PeerId) {
        let mut done = Vec::new();
        for (id, pending) in &mut self.pending_queries {
            if let PendingQuery::Providers {
                query,
                providers,
                answers,
                awaited,
                home_heard,
                ..
            } = pending
                && let Some(i) = awaited.iter().position(|p| *p == peer)
            {
                awaited.swap_remove(i);
                *answers += 1;
                if *home_heard && enough(query, providers.len(), *answers) {
                    done.push(*id);
                }
            }
        }
        for id in done {
            if let Some(mut q) = self.swarm.behaviour_mut().kad.query_mut(&id) {
                q.finish();
            }
        }
    }
}

/// Whether a provider lookup has what it asked for.
pub(super) fn enough(query: &crate::ProvidersQuery, providers: usize, answers: usize) -> bool {
    query.stop_after_providers.is_some_and(|n| providers >= n)
        || query.stop_after_answers.is_some_and(|n| answers >= n)
}
