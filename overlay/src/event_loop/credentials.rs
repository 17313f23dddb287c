//! The credential exchange (`/cpns/cred/1.0.0`) and what it gates: provider announcements.
//!
//! Provider announcements carry no signature, and PeerIds cost nothing, so a DHT server that
//! stored every `ADD_PROVIDER` could be filled by fresh identities (issue 14). Instead, on each
//! new connection a node sends its entity credential (or nothing, if it has none) and answers
//! the other side's request with its own; the [`crate::RecordValidator`] checks what arrives
//! (`validate_credential`) and the overlay keeps the result for as long as the peer stays
//! connected. Announcements of a peer without a verified credential are held (at most
//! [`MAX_HELD_PROVIDERS`] per peer, dropped with its last connection) and judged once a
//! credential of it is accepted, because the announcement and the credential travel on
//! separate substreams and may arrive in either order (a node that gets its credential after
//! connecting presents it then). The validator sees the credential with every announcement
//! (`validate_provider`) and refuses those without one; announcements of a peer that never
//! presents one are never stored.
//! Other households' gateways are enrolled with the same CA, so they are credentialed and
//! still route and store for each other.

use libp2p::kad::ProviderRecord;
use libp2p::{PeerId, request_response};
use tracing::{debug, trace};

use super::EventLoop;
use crate::event::Event;
use crate::validate::PeerCredential;

/// Most provider announcements of one peer held while its credential is awaited.
pub(super) const MAX_HELD_PROVIDERS: usize = 32;

/// What this node knows of a connected peer's credential.
#[derive(Debug, Default)]
pub(super) enum CredentialState {
    /// Nothing yet: the exchange is under way (or nobody asked).
    #[default]
    Pending,
    /// The validator accepted its credential.
    Verified(PeerCredential),
    /// It presented none, or one the validator refused.
    None,
    /// The exchange itself failed (timed out, the connection went, the peer does not speak
    /// the protocol): nothing is known. Routed like `None`, but not taken as proof that the
    /// peer holds no credential (see `verdicts`).
    Failed,
}

impl CredentialState {
    pub(super) fn verified(&self) -> Option<&PeerCredential> {
        match self {
            CredentialState::Verified(c) => Some(c),
            _ => None,
        }
    }
}

impl EventLoop {
    fn own_credential(&self) -> Vec<u8> {
        self.credential.clone().unwrap_or_default()
    }

    /// Starts the exchange with a newly connected peer, if either side may need it.
    pub(super) fn start_credential_exchange(&mut self, peer: PeerId) {
        if self.credential.is_none() && !self.config.validator.wants_credentials() {
            return;
        }
        let mine = self.own_credential();
        self.swarm.behaviour_mut().cred.send_request(&peer, mine);
    }

    /// Sends this node's (new) credential to every connected peer.
    pub(super) fn announce_credential(&mut self) {
        let peers: Vec<PeerId> = self.peers.keys().copied().collect();
        for peer in peers {
            self.start_credential_exchange(peer);
        }
    }

    pub(super) fn handle_cred(&mut self, event: request_response::Event<Vec<u8>, Vec<u8>>) {
        match event {
            request_response::Event::Message {
                peer,
                message:
                    request_response::Message::Request {
                        request, channel, ..
                    },
                ..
            } => {
                let mine = self.own_credential();
                if self
                    .swarm
                    .behaviour_mut()
                    .cred
                    .send_response(channel, mine)
                    .is_err()
                {
                    trace!(%peer, "credential answer dropped");
                }
                self.credential_received(peer, &request);
            }
            request_response::Event::Message {
                peer,
                message: request_response::Message::Response { response, .. },
                ..
            } => self.credential_received(peer, &response),
            request_response::Event::OutboundFailure { peer, error, .. } => {
                debug!(%peer, "credential exchange failed: {error}");
                if let Some(state) = self.peers.get_mut(&peer)
                    && matches!(state.credential, CredentialState::Pending)
                {
                    state.credential = CredentialState::Failed;
                    if self.gates_routing() {
                        self.unroute(peer, "no credential");
                    }
                    self.verdicts_changed();
                }
            }
            request_response::Event::InboundFailure { .. }
            | request_response::Event::ResponseSent { .. } => {}
        }
    }

    fn credential_received(&mut self, peer: PeerId, bytes: &[u8]) {
        let verdict = if bytes.is_empty() || !self.config.validator.wants_credentials() {
            None
        } else {
            match self.config.validator.validate_credential(&peer, bytes) {
                Ok(c) => Some(c),
                Err(rejection) => {
                    self.stats.reject_message("bad_credential");
                    debug!(%peer, "credential refused: {rejection}");
                    self.emit(Event::RecordRejected {
                        source: Some(peer),
                        reason: rejection.reason,
                        detail: rejection.detail,
                    });
                    None
                }
            }
        };
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        match verdict {
            Some(c) => {
                state.credential = CredentialState::Verified(c);
                self.release_held_providers(peer);
                self.route(peer);
                self.answerer_verified(peer);
                self.verdicts_changed();
            }
            // A bad or empty one never replaces a good one received before.
            None if state.credential.verified().is_none() => {
                state.credential = CredentialState::None;
                if self.gates_routing() {
                    self.unroute(peer, "no credential");
                }
                self.verdicts_changed();
            }
            None => {}
        }
    }

    /// Holds an announcement of a connected peer without a verified credential. False if it
    /// is to be judged now (credentials are not wanted, the peer has one, or it is not
    /// connected); true if it was held, or dropped and counted because the peer already has
    /// [`MAX_HELD_PROVIDERS`] waiting.
    pub(super) fn hold_provider(&mut self, record: &ProviderRecord) -> bool {
        if !self.config.validator.wants_credentials() {
            return false;
        }
        let Some(state) = self.peers.get_mut(&record.provider) else {
            return false;
        };
        if state.credential.verified().is_some() {
            return false;
        }
        if state.held_providers.iter().any(|r| r.key == record.key) {
            return true;
        }
        if state.held_providers.len() >= MAX_HELD_PROVIDERS {
            self.stats.reject_record("no_credential");
            return true;
        }
        state.held_providers.push(record.clone());
        true
    }

    fn release_held_providers(&mut self, peer: PeerId) {
        let held = match self.peers.get_mut(&peer) {
            Some(s) => std::mem::take(&mut s.held_providers),
            None => return,
        };
        for record in held {
            self.provider_announced(record);
        }
    }
}
