//! Entry points for the fuzz targets (`fuzz/`) and their stable regression tests, reachable
//! without a running node, each taking any input and never panicking:
//!
//! * the node's decoders of untrusted bytes (pairing codes, delivery stream frames);
//! * [`Harness`], the stateful target: the node's request handling — the authorisation check,
//!   then the PN actor's transitions — driven by arbitrary sequences of decoded messages from
//!   arbitrary senders and by arbitrary outcomes of the jobs the transitions start. No network,
//!   no disk: the transitions are sans-IO, and their effects are only collected. Whatever the
//!   bytes, every bound the state keeps (peers, invitations, notifications) stays a bound.

use std::sync::Arc;

use cpns_keys::{CredentialBody, EntityCredential, EuKey, Identity, Modes, RevocationList};
use cpns_overlay::{Message, Protocol, codec};
use libp2p::{Multiaddr, PeerId};

use crate::authz;
use crate::config::Config;
use crate::enrolment::Enrolment;
use crate::pn::effect::{Done, Effect, Fx};
use crate::pn::state::{Env, MAX_PEERS, State};
use crate::store::PnStored;
use crate::trace::Trace;

pub use crate::delivery::{decode_stream, encode_stream};

/// Parses a pairing code (or a multiaddr) the way `cpns pair` does, into the addresses to
/// dial.
pub fn parse_pairing_target(text: &str) -> Result<Vec<Multiaddr>, String> {
    crate::pn::code::resolve(text).map_err(|e| e.to_string())
}

/// A pairing code for `peer` at `addrs` (seed corpora).
pub fn pairing_code(peer: PeerId, addrs: &[Multiaddr]) -> Result<String, String> {
    crate::pn::code::encode(peer, addrs).map_err(|e| e.to_string())
}

/// Largest message decoded from the input (as the overlay's frame limit).
const MAX_MESSAGE: usize = 64 * 1024;

/// A node's state for fuzzing, and the peers that talk to it.
pub struct Harness {
    state: State,
    peers: Vec<PeerId>,
    pending: Vec<u64>,
    now: u64,
}

impl Default for Harness {
    fn default() -> Self {
        Self::new()
    }
}

impl Harness {
    /// An enrolled node in no PN, with a fixed identity, CA and server.
    pub fn new() -> Harness {
        let ca = Identity::from_secret_bytes([1; 32]);
        let me = Identity::from_secret_bytes([2; 32]);
        let server = Identity::from_secret_bytes([3; 32]).peer_id();
        let now = 1_000_000;
        let credential = EntityCredential::issue(
            &ca,
            CredentialBody {
                entity: me.peer_id(),
                user: "alice".into(),
                device: "fuzz".into(),
                modes: Modes::ALL,
                serial: 1,
                issued: now - 10,
                expires: now + 1_000_000,
            },
        );
        let enrolment = Enrolment {
            credential,
            eukey: EuKey::from_bytes([4; 32]),
            ca: ca.public(),
            server,
            server_addrs: Vec::new(),
            revocations: RevocationList::empty_unsigned(),
            device: "fuzz".into(),
        };
        let env = Env {
            me: me.peer_id(),
            identity: me,
            config: Arc::new(Config::default()),
            trace: Arc::new(Trace::new(256)),
            metrics: Arc::default(),
        };
        let stored = PnStored {
            membership: None,
            expelled: None,
            admin: None,
            last_move: None,
            members: Vec::new(),
            invitations: Vec::new(),
        };
        let state = State::new(
            env,
            Some(enrolment),
            stored,
            Vec::new(),
            Default::default(),
            Box::default(),
        );
        let peers = (10..18u8)
            .map(|i| Identity::from_secret_bytes([i; 32]).peer_id())
            .chain([server])
            .collect();
        Harness {
            state,
            peers,
            pending: Vec::new(),
            now,
        }
    }

    /// How many peers the node knows (seed checks: a registration is accepted).
    pub fn known_peers(&self) -> usize {
        self.state.view().peers.len()
    }

    /// Feeds one input: a sequence of records `[peer: u8][kind: u8][len: u16 BE][bytes]`. A
    /// record's bytes are a message (kind even: on `/cpns/1.0.0`; odd: on the auth protocol)
    /// or, with kind 0xff, the outcome of the oldest job in flight.
    pub fn feed(&mut self, mut data: &[u8]) {
        while data.len() >= 4 {
            let peer = self.peers[data[0] as usize % self.peers.len()];
            let kind = data[1];
            let len = (u16::from_be_bytes([data[2], data[3]]) as usize).min(data.len() - 4);
            let body = &data[4..4 + len];
            data = &data[4 + len..];
            self.now += 1;
            let mut fx = Fx::new(self.now);
            if kind == 0xff {
                if !self.pending.is_empty() {
                    let id = self.pending.remove(0);
                    let done = match codec::decode::<Message>(body, MAX_MESSAGE) {
                        Ok(m) => Done::Answer(Ok(m)),
                        Err(_) if body.first().is_some_and(|b| b & 1 == 1) => Done::Slept,
                        Err(_) => Done::Answer(Err(cpns_overlay::Error::Shutdown)),
                    };
                    self.state.on_done(id, done, &mut fx);
                }
            } else {
                let Ok(message) = codec::decode::<Message>(body, MAX_MESSAGE) else {
                    continue;
                };
                let protocol = if kind & 1 == 0 {
                    Protocol::Cpns
                } else {
                    Protocol::Auth
                };
                let view = self.state.view();
                let kind = authz::RequestKind::of(protocol, &message);
                let sender = authz::classify(&view, protocol, &peer, self.now);
                let Ok(class) = authz::check(kind, sender) else {
                    continue;
                };
                match message {
                    Message::Auth(m) => {
                        let _ = self.state.on_server(m, 1, &mut fx);
                    }
                    m => {
                        let _ = self.state.on_inbound(peer, class, m, 1, &mut fx);
                    }
                }
            }
            self.absorb(fx);
        }
    }

    /// Keeps track of the jobs a transition started (bounded), drops the rest.
    fn absorb(&mut self, fx: Fx) {
        if fx.changed {
            self.state.bump();
        }
        for e in fx.effects {
            if let Effect::Job { id, .. } = e
                && self.pending.len() < 1024
            {
                self.pending.push(id);
            }
        }
        let view = self.state.view();
        assert!(
            view.peers.len() <= MAX_PEERS,
            "the peer table outgrew its bound"
        );
        assert!(
            view.invitations.len() <= 32,
            "invitations outgrew their bound"
        );
        assert!(
            view.notifications.len() <= 256,
            "notifications outgrew their bound"
        );
    }
}

/// One record of a [`Harness`] input: `message` from the harness's peer `peer` (0..8; 8 is
/// `cpns-auth`), on `/cpns/1.0.0` or, with `auth`, on the auth protocol.
fn record(peer: u8, auth: bool, message: &Message) -> Vec<u8> {
    let body = codec::encode(message).unwrap_or_default();
    let mut out = vec![peer, u8::from(auth)];
    out.extend_from_slice(&(body.len() as u16).to_be_bytes());
    out.extend_from_slice(&body);
    out
}

/// The seed corpus of the stateful target: real messages a node receives from its peers —
/// registrations from devices of the same user (each with its CA-signed credential), then
/// capabilities, pings, inventory requests, a leave, a job's outcome — as [`Harness::feed`]
/// reads them.
pub fn harness_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use cpns_overlay::{Capabilities, EntityRegistration, NodeMode, PnMessage};
    let ca = Identity::from_secret_bytes([1; 32]);
    let now = 1_000_000;
    let registration = |i: u8, mode: NodeMode| {
        let id = Identity::from_secret_bytes([10 + i; 32]);
        let credential = EntityCredential::issue(
            &ca,
            CredentialBody {
                entity: id.peer_id(),
                user: "alice".into(),
                device: format!("device-{i}"),
                modes: Modes::ALL,
                serial: 100 + u64::from(i),
                issued: now - 10,
                expires: now + 1_000_000,
            },
        );
        Message::Pn(PnMessage::EntityRegistration(EntityRegistration {
            mode,
            credential,
            pn_id: None,
            gateway: None,
            listen_addrs: vec![
                "/ip4/127.0.0.1/tcp/4001"
                    .parse()
                    .unwrap_or(Multiaddr::empty()),
            ],
            revocation_version: 0,
            gateway_addrs: Vec::new(),
        }))
    };
    let caps = Message::Pn(PnMessage::CapabilitiesExchange(Capabilities::default()));
    let ping = Message::Pn(PnMessage::Ping { nonce: 7 });
    let inventory = Message::Pn(PnMessage::InventoryRequest {
        pn_id: "pn-fuzz".into(),
    });
    let leave = Message::Pn(PnMessage::Leave {
        pn_id: "pn-fuzz".into(),
    });
    let join = |parts: &[Vec<u8>]| parts.concat();
    vec![
        (
            "register",
            record(0, false, &registration(0, NodeMode::Pne)),
        ),
        (
            "register_caps_ping",
            join(&[
                record(1, false, &registration(1, NodeMode::PneGateway)),
                record(1, false, &caps),
                record(1, false, &ping),
            ]),
        ),
        (
            "two_devices",
            join(&[
                record(2, false, &registration(2, NodeMode::Pne)),
                record(3, false, &registration(3, NodeMode::Pne)),
                record(2, false, &inventory),
                record(3, false, &leave),
                // The outcome of the oldest job in flight: an answer.
                record(8, false, &Message::Ack)
                    .into_iter()
                    .enumerate()
                    .map(|(i, b)| if i == 1 { 0xff } else { b })
                    .collect(),
            ]),
        ),
    ]
}
