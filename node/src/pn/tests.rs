//! The PN transitions, driven without a network: the test plays the overlay and `cpns-auth`
//! by reading the jobs a transition asks for and feeding back what a peer or the server would
//! answer (the way rust-libp2p tests its behaviours with a fake swarm around them). Each test
//! walks one part of B.1 and checks the effects: what is written, admitted, sent, answered.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use cpns_keys::{
    CredentialBody, EntityCredential, EuKey, GroupKey, Identity, Modes, PeerId, RevocationList,
};
use cpns_overlay::{
    AuthMessage, Capabilities, ConnectionSetup, EntityRegistration, ErrorCode, GroupKeyGrant,
    MemberGrant, MemberInfo, MembershipDecision, MembershipGrant, Message, NodeMode,
    PnInventorySummary, PnMessage, PnRecordInfo, SessionInfo, Status, transcript,
};

use super::effect::{Done, Effect, Fx, Job};
use super::state::{Env, State};
use super::{Op, Reply, SenderClass};
use crate::config::{Config, ModeSetting};
use crate::enrolment::Enrolment;
use crate::store::{PnStored, PnWrite};
use crate::trace::Trace;

const NOW: u64 = 1_000_000;

/// A CA, and devices it enrols: what cpns-auth would issue.
struct Ca {
    key: Identity,
    server: PeerId,
}

impl Ca {
    fn new() -> Ca {
        Ca {
            key: Identity::generate(),
            server: Identity::generate().peer_id(),
        }
    }

    fn credential(&self, id: &Identity, user: &str, modes: Modes, serial: u64) -> EntityCredential {
        EntityCredential::issue(
            &self.key,
            CredentialBody {
                entity: id.peer_id(),
                user: user.into(),
                device: format!("dev-{serial}"),
                modes,
                serial,
                issued: NOW - 10,
                expires: NOW + 100_000,
            },
        )
    }

    fn enrolment(&self, id: &Identity, user: &str, serial: u64) -> (Enrolment, EuKey) {
        let eukey = EuKey::generate();
        let e = Enrolment {
            credential: self.credential(id, user, Modes::ALL, serial),
            eukey: EuKey::from_bytes(eukey.to_bytes()),
            ca: self.key.public(),
            server: self.server,
            server_addrs: Vec::new(),
            revocations: RevocationList::sign(&self.key, 1, NOW - 5, []).unwrap(),
            device: format!("dev-{serial}"),
        };
        (e, eukey)
    }

    /// A key grant for `member`, sealed under its EUKey (only the server can make one).
    fn grant(&self, key: &GroupKey, member: &PeerId, eukey: &EuKey) -> GroupKeyGrant {
        let aad = transcript::group_key_aad(key.group(), key.epoch(), member);
        GroupKeyGrant {
            group: key.group().clone(),
            epoch: key.epoch(),
            sealed: eukey.seal(&aad, &key.encode_secret()),
        }
    }
}

/// A state for a node of `user`, and its identity and EUKey.
fn node(ca: &Ca, user: &str, serial: u64, mode: ModeSetting) -> (State, Identity, EuKey) {
    node_from(ca, user, serial, mode, None)
}

/// [`node`], started from what an earlier run stored of its last move (5.6.9).
fn node_from(
    ca: &Ca,
    user: &str,
    serial: u64,
    mode: ModeSetting,
    last_move: Option<Vec<u8>>,
) -> (State, Identity, EuKey) {
    let id = Identity::generate();
    let (enrolment, eukey) = ca.enrolment(&id, user, serial);
    let config = Config {
        mode,
        ..Config::default()
    };
    let env = Env {
        me: id.peer_id(),
        identity: id.clone(),
        config: Arc::new(config),
        trace: Arc::new(Trace::new(1024)),
        metrics: Arc::default(),
    };
    let stored = PnStored {
        membership: None,
        expelled: None,
        admin: None,
        last_move,
        members: Vec::new(),
        invitations: Vec::new(),
    };
    let caps = Capabilities::default();
    let state = State::new(
        env,
        Some(enrolment),
        stored,
        vec!["/ip4/127.0.0.1/tcp/1".parse().unwrap()],
        caps,
        Box::default(),
    );
    (state, id, eukey)
}

fn fx() -> Fx {
    Fx::new(NOW)
}

/// The only job a transition started, with its id.
fn one_job(fx: &Fx) -> (u64, &Job) {
    let jobs: Vec<(u64, &Job)> = fx
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Job { id, job, .. } => Some((*id, job)),
            _ => None,
        })
        .collect();
    assert_eq!(jobs.len(), 1, "jobs: {:?}", fx.jobs());
    jobs[0]
}

fn resolved(fx: &Fx, w: u64) -> Option<&Reply> {
    fx.effects.iter().find_map(|e| match e {
        Effect::Resolve(id, r) if *id == w => Some(r),
        _ => None,
    })
}

fn registration(
    ca: &Ca,
    id: &Identity,
    user: &str,
    modes: Modes,
    mode: NodeMode,
) -> EntityRegistration {
    EntityRegistration {
        mode,
        credential: ca.credential(id, user, modes, 77),
        pn_id: None,
        gateway: None,
        listen_addrs: vec!["/ip4/127.0.0.1/tcp/2".parse().unwrap(); 50],
        revocation_version: 1,
        gateway_addrs: Vec::new(),
    }
}

fn gateway_caps() -> Capabilities {
    Capabilities {
        mode: NodeMode::PneGateway,
        ..Capabilities::default()
    }
}

/// Steps 1-4 as the initiator against a gateway of the same user: the answers are checked,
/// the peer admitted until its credential ends, its addresses cut, and the join starts.
#[test]
fn pairing_with_a_gateway_registers_checks_and_starts_joining() {
    let ca = Ca::new();
    let (mut s, _, _) = node(&ca, "alice", 1, ModeSetting::Auto);
    let gw = Identity::generate();
    let mut f = fx();
    s.on_op(Op::Pair("/ip4/127.0.0.1/tcp/9".parse().unwrap()), 1, &mut f);
    let (dial, job) = one_job(&f);
    assert!(matches!(job, Job::Dial(_)));

    let mut f = fx();
    s.on_done(dial, Done::Dialed(Ok(gw.peer_id())), &mut f);
    let (step1, job) = one_job(&f);
    assert!(matches!(
        job,
        Job::Request {
            message: Message::Pn(PnMessage::EntityRegistration(_)),
            ..
        }
    ));

    let mut f = fx();
    let reg = registration(&ca, &gw, "alice", Modes::ALL, NodeMode::PneGateway);
    s.on_done(
        step1,
        Done::Answer(Ok(Message::Pn(PnMessage::EntityRegistration(reg)))),
        &mut f,
    );
    assert!(f.effects.iter().any(|e| matches!(e, Effect::Admit { peer, until } if *peer == gw.peer_id() && *until == NOW + 100_000)));
    assert!(f.effects.iter().any(|e| matches!(e, Effect::AddAddrs { addrs, .. } if addrs.len() == cpns_overlay::MAX_LISTEN_ADDRS)));
    let (step3, _) = one_job(&f);

    let mut f = fx();
    s.on_done(
        step3,
        Done::Answer(Ok(Message::Pn(PnMessage::CapabilitiesExchange(
            gateway_caps(),
        )))),
        &mut f,
    );
    match resolved(&f, 1) {
        Some(Reply::Pair(Ok(o))) => assert_eq!(o.result, "joining"),
        other => panic!("{other:?}"),
    }
    let (_, job) = one_job(&f);
    assert!(matches!(
        job,
        Job::Request {
            message: Message::Pn(PnMessage::ConnectionSetupRequest(_)),
            ..
        }
    ));
    let steps: Vec<u32> = s_trace(&s)
        .iter()
        .filter(|e| e.flow == "B.1")
        .map(|e| e.step)
        .collect();
    assert_eq!(steps, vec![1, 2, 3, 4, 18]);
}

fn s_trace(s: &State) -> Vec<crate::trace::TraceEvent> {
    s.trace_events()
}

/// A registration that claims the gateway mode with a PNE-only credential is refused.
#[test]
fn a_gateway_claim_without_the_credential_for_it_is_refused() {
    let ca = Ca::new();
    let (mut s, _, _) = node(&ca, "alice", 1, ModeSetting::Auto);
    let liar = Identity::generate();
    let mut f = fx();
    let reg = registration(&ca, &liar, "alice", Modes::PNE, NodeMode::PneGateway);
    let answer = s.on_inbound(
        liar.peer_id(),
        SenderClass::NotEnrolled,
        Message::Pn(PnMessage::EntityRegistration(reg)),
        1,
        &mut f,
    );
    match answer {
        Some(Message::Error(e)) => assert_eq!(e.code, ErrorCode::BadRequest),
        other => panic!("{other:?}"),
    }
    assert!(!s.view().peers.contains_key(&liar.peer_id()));
    assert!(!f.effects.iter().any(|e| matches!(e, Effect::Admit { .. })));
}

/// Drives a node to the point where its step 18 is out to `gw`.
fn joining(ca: &Ca) -> (State, Identity, EuKey, Identity, u64) {
    let (mut s, id, eukey) = node(ca, "alice", 1, ModeSetting::Auto);
    let gw = Identity::generate();
    let mut f = fx();
    let reg = registration(ca, &gw, "alice", Modes::ALL, NodeMode::PneGateway);
    s.on_inbound(
        gw.peer_id(),
        SenderClass::NotEnrolled,
        Message::Pn(PnMessage::EntityRegistration(reg)),
        1,
        &mut f,
    );
    let mut f = fx();
    s.on_inbound(
        gw.peer_id(),
        SenderClass::Enrolled,
        Message::Pn(PnMessage::CapabilitiesExchange(gateway_caps())),
        2,
        &mut f,
    );
    // The decision follows the step-4 answer: the join waits for it to be sent.
    let setup = f
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Job {
                id,
                job:
                    Job::Request {
                        message: Message::Pn(PnMessage::ConnectionSetupRequest(_)),
                        ..
                    },
                after_reply: true,
            } => Some(*id),
            _ => None,
        })
        .expect("step 18 after the step-4 answer");
    (s, id, eukey, gw, setup)
}

fn summary(pn: &str, gw: &Identity, members: Vec<MemberInfo>, epoch: u64) -> PnInventorySummary {
    PnInventorySummary {
        pn_id: pn.into(),
        owner: "alice".into(),
        gateway: gw.peer_id(),
        epoch,
        members,
        services: Vec::new(),
        updated: NOW,
        details: Vec::new(),
        admins: Vec::new(),
    }
}

fn member(id: &PeerId, serial: u64) -> MemberInfo {
    MemberInfo {
        peer_id: *id,
        user: "alice".into(),
        device: "d".into(),
        mode: NodeMode::Pne,
        status: Status::Online,
        listen_addrs: Vec::new(),
        serial,
        expires: NOW + 1000,
        candidacy: None,
    }
}

/// Hole 1: a step-26 confirmation without a step-24 grant from cpns-auth makes nobody a
/// member, admits nobody, and leaves the DHT mode alone.
#[test]
fn a_confirmation_without_a_key_grant_joins_nothing() {
    let ca = Ca::new();
    let (mut s, _, _, gw, setup) = joining(&ca);
    let planted = PeerId::random();
    let mut f = fx();
    s.on_done(
        setup,
        Done::Answer(Ok(Message::Pn(PnMessage::ConnectionSetupConfirmation(
            summary(
                "pn-fake",
                &gw,
                vec![member(&gw.peer_id(), 5), member(&planted, 6)],
                1,
            ),
        )))),
        &mut f,
    );
    assert!(s.view().pn.is_none());
    assert!(
        !f.effects
            .iter()
            .any(|e| matches!(e, Effect::Admit { peer, .. } if *peer == planted))
    );
    assert!(!f.effects.iter().any(|e| matches!(e, Effect::KadMode(_))));
    assert!(
        !f.effects
            .iter()
            .any(|e| matches!(e, Effect::Persist(PnWrite::Membership(Some(_)))))
    );
    assert!(
        s_trace(&s)
            .iter()
            .any(|e| e.step == 26 && e.detail.contains("no key grant"))
    );
}

/// B.1 24-26 at the PNE: the grant opens under the EUKey, is stored before the confirmation
/// leaves, and step 26 then makes the node a member: membership and inventory written, the
/// members admitted, the DHT in client mode.
#[test]
fn a_granted_join_is_stored_and_admits_the_members() {
    let ca = Ca::new();
    let (mut s, id, eukey, gw, setup) = joining(&ca);
    let key = GroupKey::generate(super::pn_group("pn-1"), 3);
    let mut f = fx();
    let answer = s.on_inbound(
        gw.peer_id(),
        SenderClass::Enrolled,
        Message::Pn(PnMessage::MembershipWithGroupKey(MembershipGrant {
            pn_id: "pn-1".into(),
            gateway: gw.peer_id(),
            epoch: 3,
            sealed_key: ca.grant(&key, &id.peer_id(), &eukey).sealed,
            members: Vec::new(),
            expelled: Vec::new(),
        })),
        3,
        &mut f,
    );
    assert!(matches!(
        answer,
        Some(Message::Pn(PnMessage::MembershipConfirmation {
            epoch: 3,
            ..
        }))
    ));
    assert!(matches!(f.effects.first(), Some(Effect::InstallKey(k)) if k.epoch() == 3));

    let other = PeerId::random();
    let mut f = fx();
    s.on_done(
        setup,
        Done::Answer(Ok(Message::Pn(PnMessage::ConnectionSetupConfirmation(
            summary(
                "pn-1",
                &gw,
                vec![
                    member(&gw.peer_id(), 5),
                    member(&id.peer_id(), 1),
                    member(&other, 6),
                ],
                3,
            ),
        )))),
        &mut f,
    );
    let view = s.view();
    assert_eq!(view.pn_id(), Some("pn-1"));
    assert_eq!(view.pn.as_ref().unwrap().members.len(), 3);
    assert!(
        f.effects
            .iter()
            .any(|e| matches!(e, Effect::Persist(PnWrite::Membership(Some(_)))))
    );
    assert!(f.effects.iter().any(
        |e| matches!(e, Effect::Persist(PnWrite::Member(k, Some(_))) if *k == other.to_bytes())
    ));
    assert!(
        f.effects
            .iter()
            .any(|e| matches!(e, Effect::Admit { peer, .. } if *peer == other))
    );
    assert!(
        f.effects
            .iter()
            .any(|e| matches!(e, Effect::KadMode(cpns_overlay::KadMode::Client)))
    );
}

/// A grant not sealed for this entity (a forger's) does not open: no key, no confirmation.
#[test]
fn a_forged_grant_is_refused() {
    let ca = Ca::new();
    let (mut s, id, _, gw, _) = joining(&ca);
    let key = GroupKey::generate(super::pn_group("pn-1"), 1);
    let mut f = fx();
    let answer = s.on_inbound(
        gw.peer_id(),
        SenderClass::Enrolled,
        Message::Pn(PnMessage::MembershipWithGroupKey(MembershipGrant {
            pn_id: "pn-1".into(),
            gateway: gw.peer_id(),
            epoch: 1,
            sealed_key: ca.grant(&key, &id.peer_id(), &EuKey::generate()).sealed,
            members: Vec::new(),
            expelled: Vec::new(),
        })),
        3,
        &mut f,
    );
    assert!(matches!(answer, Some(Message::Error(_))));
    assert!(!f.effects.iter().any(|e| matches!(e, Effect::InstallKey(_))));
}

/// Steps 8-17 at the gateway, with the server's step 14 overtaking step 13's answer: it is
/// answered once 13 is recorded; step 17 creates the inventory and resolves the owner.
#[test]
fn a_gateway_sets_its_pn_up_in_protocol_order() {
    let ca = Ca::new();
    let (mut s, id, eukey) = node(&ca, "alice", 1, ModeSetting::Gateway);
    let mut f = fx();
    s.on_op(Op::Establish, 1, &mut f);
    let (auth, job) = one_job(&f);
    assert!(matches!(job, Job::Authenticate { trace: true, .. }));
    let mut f = fx();
    s.on_done(
        auth,
        Done::Authenticated(Ok(SessionInfo {
            expires: NOW + 600,
            server_time: NOW,
            revocations: RevocationList::sign(&ca.key, 1, NOW, []).unwrap(),
            modes: Modes::ALL,
        })),
        &mut f,
    );
    let (caps, job) = one_job(&f);
    assert!(matches!(job, Job::Auth(AuthMessage::CapabilitiesUpdate(_))));
    // Step 14 arrives before step 13's answer: deferred.
    let mut f = fx();
    assert!(
        s.on_server(AuthMessage::StatusUpdateRequest, 2, &mut f)
            .is_none()
    );
    let mut f = fx();
    s.on_done(
        caps,
        Done::Auth(Ok(AuthMessage::CapabilitiesConfirmation { revision: 1 })),
        &mut f,
    );
    assert!(matches!(
        resolved(&f, 2),
        Some(Reply::Message(Message::Auth(
            AuthMessage::StatusResponse { .. }
        )))
    ));
    let steps: Vec<u32> = s_trace(&s)
        .iter()
        .filter(|e| e.flow == "B.1")
        .map(|e| e.step)
        .collect();
    assert_eq!(steps, vec![12, 13, 14, 15, 16]);

    let key = GroupKey::generate(super::pn_group("pn-9"), 1);
    let record = PnRecordInfo {
        pn_id: "pn-9".into(),
        owner: "alice".into(),
        gateway: id.peer_id(),
        members: vec![id.peer_id()],
        admins: vec![id.peer_id()],
        policy: Default::default(),
        epoch: 1,
    };
    let mut f = fx();
    let answer = s.on_server(
        AuthMessage::PnInventoryCreated {
            pn: record,
            key: ca.grant(&key, &id.peer_id(), &eukey),
        },
        3,
        &mut f,
    );
    assert_eq!(answer, Some(Message::Ack));
    assert!(matches!(resolved(&f, 1), Some(Reply::Pn(Ok(p))) if p == "pn-9"));
    assert!(s.view().is_pn_gateway());
}

/// B.1 18-26 at the gateway: the PNE becomes a member only once it confirmed its key; it is
/// written, the other members get the new epoch, and the answer (26) comes last.
#[test]
fn a_gateway_admits_a_pne_through_the_server() {
    let ca = Ca::new();
    let (mut s, gw_id, gw_eukey) = node(&ca, "alice", 1, ModeSetting::Gateway);
    // Set the PN up quickly.
    let mut f = fx();
    s.on_op(Op::Establish, 1, &mut f);
    let (auth, _) = one_job(&f);
    let mut f = fx();
    s.on_done(
        auth,
        Done::Authenticated(Err(crate::error::OpError::Unavailable("x".into()))),
        &mut f,
    );
    // Failed: try again and complete through step 17 straight away.
    let mut f = fx();
    s.on_op(Op::Establish, 2, &mut f);
    let key = GroupKey::generate(super::pn_group("pn-9"), 1);
    let old_member = PeerId::random();
    let record = PnRecordInfo {
        pn_id: "pn-9".into(),
        owner: "alice".into(),
        gateway: gw_id.peer_id(),
        members: vec![gw_id.peer_id()],
        admins: vec![],
        policy: Default::default(),
        epoch: 1,
    };
    let mut f = fx();
    s.on_server(
        AuthMessage::PnInventoryCreated {
            pn: record,
            key: ca.grant(&key, &gw_id.peer_id(), &gw_eukey),
        },
        3,
        &mut f,
    );
    assert!(s.view().is_pn_gateway());
    let _ = old_member;

    let pne = Identity::generate();
    let pne_cred = ca.credential(&pne, "alice", Modes::ALL, 9);
    let setup = ConnectionSetup {
        credential: pne_cred,
        pn_id: "pn-9".into(),
        time: NOW,
        nonce: [1; 16],
        eukey_mac: [0; 32],
        signature: pne.sign(b"x"),
        capabilities: Capabilities::default(),
    };
    let mut f = fx();
    let answer = s.on_inbound(
        pne.peer_id(),
        SenderClass::Enrolled,
        Message::Pn(PnMessage::ConnectionSetupRequest(setup)),
        10,
        &mut f,
    );
    assert!(answer.is_none(), "answered only after 19-25");
    let (j19, job) = one_job(&f);
    assert!(matches!(
        job,
        Job::Auth(AuthMessage::MembershipRequest { .. })
    ));
    let mut f = fx();
    s.on_done(
        j19,
        Done::Auth(Ok(AuthMessage::MembershipListTransfer {
            decision: MembershipDecision::Admitted,
            pn: PnRecordInfo {
                pn_id: "pn-9".into(),
                owner: "alice".into(),
                gateway: gw_id.peer_id(),
                members: vec![gw_id.peer_id(), pne.peer_id()],
                admins: vec![],
                policy: Default::default(),
                epoch: 1,
            },
        })),
        &mut f,
    );
    let (j22, job) = one_job(&f);
    assert!(matches!(job, Job::Auth(AuthMessage::PnKeyRequest { .. })));
    let key2 = GroupKey::generate(super::pn_group("pn-9"), 2);
    let pne_eukey = EuKey::generate();
    let mut f = fx();
    s.on_done(
        j22,
        Done::Auth(Ok(AuthMessage::PnKeyResponse {
            pn_id: "pn-9".into(),
            epoch: 2,
            grants: vec![
                MemberGrant {
                    member: gw_id.peer_id(),
                    grant: ca.grant(&key2, &gw_id.peer_id(), &gw_eukey),
                },
                MemberGrant {
                    member: pne.peer_id(),
                    grant: ca.grant(&key2, &pne.peer_id(), &pne_eukey),
                },
            ],
        })),
        &mut f,
    );
    assert!(
        s.view().pn.as_ref().unwrap().members.len() == 1,
        "not a member before step 25"
    );
    let (j24, job) = one_job(&f);
    assert!(matches!(
        job,
        Job::Request {
            message: Message::Pn(PnMessage::MembershipWithGroupKey(_)),
            ..
        }
    ));
    let mut f = fx();
    s.on_done(
        j24,
        Done::Answer(Ok(Message::Pn(PnMessage::MembershipConfirmation {
            pn_id: "pn-9".into(),
            epoch: 2,
        }))),
        &mut f,
    );
    assert_eq!(s.view().pn.as_ref().unwrap().members.len(), 2);
    assert_eq!(s.view().pn.as_ref().unwrap().membership.epoch, 2);
    let persisted = f
        .effects
        .iter()
        .position(|e| matches!(e, Effect::Persist(PnWrite::Member(k, Some(_))) if *k == pne.peer_id().to_bytes()))
        .expect("the member is written");
    let answered = f
        .effects
        .iter()
        .position(|e| {
            matches!(
                e,
                Effect::Resolve(
                    10,
                    Reply::Message(Message::Pn(PnMessage::ConnectionSetupConfirmation(_)))
                )
            )
        })
        .expect("step 26");
    assert!(persisted < answered);
    assert!(
        f.effects
            .iter()
            .any(|e| matches!(e, Effect::ForgetDhtPeer(p) if *p == pne.peer_id()))
    );
}

/// Hole 2: a member whose serial is revoked is refused with `revoked` from the moment the list
/// arrives, also when it never registered with this node.
#[test]
fn a_revoked_member_is_refused_at_once() {
    let ca = Ca::new();
    let (mut s, id, eukey, gw, setup) = joining(&ca);
    let key = GroupKey::generate(super::pn_group("pn-1"), 1);
    let mut f = fx();
    s.on_inbound(
        gw.peer_id(),
        SenderClass::Enrolled,
        Message::Pn(PnMessage::MembershipWithGroupKey(MembershipGrant {
            pn_id: "pn-1".into(),
            gateway: gw.peer_id(),
            epoch: 1,
            sealed_key: ca.grant(&key, &id.peer_id(), &eukey).sealed,
            members: Vec::new(),
            expelled: Vec::new(),
        })),
        3,
        &mut f,
    );
    let bad = PeerId::random();
    let mut f = fx();
    s.on_done(
        setup,
        Done::Answer(Ok(Message::Pn(PnMessage::ConnectionSetupConfirmation(
            summary(
                "pn-1",
                &gw,
                vec![
                    member(&gw.peer_id(), 5),
                    member(&id.peer_id(), 1),
                    member(&bad, 66),
                ],
                1,
            ),
        )))),
        &mut f,
    );
    let list = RevocationList::sign(&ca.key, 2, NOW, [66]).unwrap();
    let mut f = fx();
    s.on_event(super::Event::Revocations(Box::new(list)), &mut f);
    assert!(
        f.effects.iter().any(
            |e| matches!(e, Effect::Refuse { peer, code: ErrorCode::Revoked } if *peer == bad)
        )
    );
    // What the router classifies by: the member's serial, and the list in the view.
    let view = s.view();
    let serial = view.pn.as_ref().unwrap().members[&bad].info.serial;
    assert!(
        view.enrolment
            .as_ref()
            .unwrap()
            .revocations
            .contains(serial)
    );
}

/// A full peer table evicts the oldest non-member, and un-admits it.
#[test]
fn an_evicted_peer_loses_its_admission() {
    let ca = Ca::new();
    let (mut s, _, _) = node(&ca, "alice", 1, ModeSetting::Auto);
    let mut first = None;
    let mut last = Fx::new(NOW);
    for i in 0..=super::state::MAX_PEERS {
        let p = Identity::generate();
        if i == 0 {
            first = Some(p.peer_id());
        }
        let mut f = fx();
        let reg = registration(&ca, &p, "alice", Modes::ALL, NodeMode::Pne);
        s.on_inbound(
            p.peer_id(),
            SenderClass::NotEnrolled,
            Message::Pn(PnMessage::EntityRegistration(reg)),
            1,
            &mut f,
        );
        last = f;
    }
    let first = first.unwrap();
    assert!(
        last.effects
            .iter()
            .any(|e| matches!(e, Effect::Unadmit(p) if *p == first))
    );
    assert!(!s.view().peers.contains_key(&first));
    assert_eq!(s.view().peers.len(), super::state::MAX_PEERS);
}

/// A job lost (panicked, cancelled) fails its flow instead of leaving it pending for ever:
/// the owner hears, and a new join can start.
#[test]
fn a_lost_job_fails_its_flow() {
    let ca = Ca::new();
    let (mut s, _, _, gw, setup) = joining(&ca);
    let mut f = fx();
    s.on_lost(setup, &mut f);
    assert!(s.view().pn.is_none());
    let mut f = fx();
    s.on_op(
        Op::Pair(
            format!("/ip4/127.0.0.1/tcp/9/p2p/{}", gw.peer_id())
                .parse()
                .unwrap(),
        ),
        5,
        &mut f,
    );
    assert!(matches!(one_job(&f).1, Job::Dial(_)));
}

/// Consent: pairing with a gateway of another user leaves an invitation, and no step 18.
#[test]
fn another_users_gateway_leaves_an_invitation() {
    let ca = Ca::new();
    let (mut s, _, _) = node(&ca, "bob", 1, ModeSetting::Auto);
    let gw = Identity::generate();
    let mut f = fx();
    let reg = registration(&ca, &gw, "alice", Modes::ALL, NodeMode::PneGateway);
    s.on_inbound(
        gw.peer_id(),
        SenderClass::NotEnrolled,
        Message::Pn(PnMessage::EntityRegistration(reg)),
        1,
        &mut f,
    );
    let mut f = fx();
    s.on_inbound(
        gw.peer_id(),
        SenderClass::Enrolled,
        Message::Pn(PnMessage::CapabilitiesExchange(gateway_caps())),
        2,
        &mut f,
    );
    assert!(f.jobs().is_empty(), "no join: {:?}", f.jobs());
    let view = s.view();
    assert_eq!(view.invitations.len(), 1);
    assert_eq!(view.invitations[0].user, "alice");
    assert!(
        f.effects
            .iter()
            .any(|e| matches!(e, Effect::Persist(PnWrite::Invitation(_, Some(_)))))
    );
}

/// A gateway of PN "pn-9" (epoch 1) with no other member, and its identity and EUKey.
fn gateway_with_pn(ca: &Ca) -> (State, Identity, EuKey) {
    let (mut s, gw_id, gw_eukey) = node(ca, "alice", 1, ModeSetting::Gateway);
    let mut f = fx();
    s.on_op(Op::Establish, 1, &mut f);
    let key = GroupKey::generate(super::pn_group("pn-9"), 1);
    let record = PnRecordInfo {
        pn_id: "pn-9".into(),
        owner: "alice".into(),
        gateway: gw_id.peer_id(),
        members: vec![gw_id.peer_id()],
        admins: vec![],
        policy: Default::default(),
        epoch: 1,
    };
    let mut f = fx();
    s.on_server(
        AuthMessage::PnInventoryCreated {
            pn: record,
            key: ca.grant(&key, &gw_id.peer_id(), &gw_eukey),
        },
        3,
        &mut f,
    );
    assert!(s.view().is_pn_gateway());
    (s, gw_id, gw_eukey)
}

/// Drives one PNE's admission at the gateway through step 23 (the server's grants are for
/// `granted` at `epoch`); returns the PNE and the job id of its step 24.
fn admit_to_step_24(
    s: &mut State,
    ca: &Ca,
    gw: (&Identity, &EuKey),
    waiter: u64,
    epoch: u64,
    granted: &[PeerId],
    pne: &Identity,
) -> u64 {
    let setup = ConnectionSetup {
        credential: ca.credential(pne, "alice", Modes::ALL, 20 + waiter),
        pn_id: "pn-9".into(),
        time: NOW,
        nonce: [waiter as u8; 16],
        eukey_mac: [0; 32],
        signature: pne.sign(b"x"),
        capabilities: Capabilities::default(),
    };
    let mut f = fx();
    let answer = s.on_inbound(
        pne.peer_id(),
        SenderClass::Enrolled,
        Message::Pn(PnMessage::ConnectionSetupRequest(setup)),
        waiter,
        &mut f,
    );
    assert!(answer.is_none());
    let (j19, _) = one_job(&f);
    let mut f = fx();
    s.on_done(
        j19,
        Done::Auth(Ok(AuthMessage::MembershipListTransfer {
            decision: MembershipDecision::Admitted,
            pn: PnRecordInfo {
                pn_id: "pn-9".into(),
                owner: "alice".into(),
                gateway: gw.0.peer_id(),
                members: vec![gw.0.peer_id(), pne.peer_id()],
                admins: vec![],
                policy: Default::default(),
                epoch: 1,
            },
        })),
        &mut f,
    );
    let (j22, _) = one_job(&f);
    let key = GroupKey::generate(super::pn_group("pn-9"), epoch);
    let grants = granted
        .iter()
        .map(|m| MemberGrant {
            member: *m,
            grant: if *m == gw.0.peer_id() {
                ca.grant(&key, m, gw.1)
            } else {
                ca.grant(&key, m, &EuKey::generate())
            },
        })
        .collect();
    let mut f = fx();
    s.on_done(
        j22,
        Done::Auth(Ok(AuthMessage::PnKeyResponse {
            pn_id: "pn-9".into(),
            epoch,
            grants,
        })),
        &mut f,
    );
    one_job(&f).0
}

/// The member ids a member list sent to `to` in `f` names, if one was sent.
fn listed_to(f: &Fx, to: &PeerId) -> Option<Vec<PeerId>> {
    f.effects.iter().find_map(|e| match e {
        Effect::Send {
            peer,
            message:
                Message::Pn(
                    PnMessage::MembersUpdate { members, .. }
                    | PnMessage::MembershipUpdate(MembershipGrant { members, .. }),
                ),
        } if peer == to => Some(members.iter().map(|m| m.peer_id).collect()),
        _ => None,
    })
}

/// The PNE of admission job `job` confirms its key of `epoch` (step 25) to the gateway of
/// `pn-9`; the effects of that transition.
fn confirm(s: &mut State, job: super::effect::JobId, epoch: u64) -> Fx {
    let mut f = fx();
    s.on_done(
        job,
        Done::Answer(Ok(Message::Pn(PnMessage::MembershipConfirmation {
            pn_id: "pn-9".into(),
            epoch,
        }))),
        &mut f,
    );
    f
}

/// Two admissions that overlap: A gets its key (epoch 2, the server knew only A), then B
/// (epoch 3; B's step-24 list cannot name A, not yet confirmed), then A and B confirm. Each
/// must end up told of the other: A through B's epoch-3 grant, B through a member list sent
/// after its confirmation (before, B never heard of A and refused A's relayed pushes).
#[test]
fn overlapping_admissions_each_learn_of_the_other() {
    let ca = Ca::new();
    let (mut s, gw_id, gw_eukey) = gateway_with_pn(&ca);
    let gw = gw_id.peer_id();
    let (a, b) = (Identity::generate(), Identity::generate());
    let (pa, pb) = (a.peer_id(), b.peer_id());
    let ja = admit_to_step_24(&mut s, &ca, (&gw_id, &gw_eukey), 10, 2, &[gw, pa], &a);
    let jb = admit_to_step_24(&mut s, &ca, (&gw_id, &gw_eukey), 11, 3, &[gw, pa, pb], &b);
    confirm(&mut s, ja, 2);
    assert_eq!(s.view().pn.as_ref().unwrap().members.len(), 2);
    let f = confirm(&mut s, jb, 3);
    assert_eq!(s.view().pn.as_ref().unwrap().members.len(), 3);
    let to_a = listed_to(&f, &pa).expect("A is told of B");
    assert!(to_a.contains(&pb));
    let to_b = listed_to(&f, &pb).expect("B is told the list again");
    assert!(to_b.contains(&pa), "B's list: {to_b:?}");
}

/// After the overlapping admissions above, the pushes of the list may all have been lost (a
/// request timed out, or A was still finishing its own admission): each member's next two
/// heartbeats are answered with the member list again, then no more. Before, nothing sent it
/// again until the next change, and A kept refusing B's relayed streams (netns_forward, under
/// the full suite's load).
#[test]
fn the_member_list_follows_the_next_heartbeats_after_a_change() {
    let ca = Ca::new();
    let (mut s, gw_id, gw_eukey) = gateway_with_pn(&ca);
    let gw = gw_id.peer_id();
    let (a, b) = (Identity::generate(), Identity::generate());
    let (pa, pb) = (a.peer_id(), b.peer_id());
    let ja = admit_to_step_24(&mut s, &ca, (&gw_id, &gw_eukey), 10, 2, &[gw, pa], &a);
    let jb = admit_to_step_24(&mut s, &ca, (&gw_id, &gw_eukey), 11, 3, &[gw, pa, pb], &b);
    confirm(&mut s, ja, 2);
    confirm(&mut s, jb, 3);
    let heartbeat = || {
        Message::Status(cpns_overlay::StatusMessage::Heartbeat {
            status: Status::Online,
            battery_percent: None,
            free_memory_bytes: None,
        })
    };
    for round in 0..3 {
        let mut f = fx();
        let answer = s.on_inbound(pa, SenderClass::Member, heartbeat(), 20 + round, &mut f);
        assert!(matches!(answer, Some(Message::Ack)), "{answer:?}");
        let listed = listed_to(&f, &pa);
        if round < 2 {
            let listed = listed.expect("the list follows the heartbeat");
            assert!(listed.contains(&pb), "round {round}: {listed:?}");
        } else {
            assert_eq!(
                listed, None,
                "round {round}: the list is sent again only twice"
            );
        }
    }
}

/// The candidacy the gateway keeps for `member`.
fn candidacy_allowed(s: &State, member: &PeerId) -> Option<bool> {
    s.view()
        .pn
        .as_ref()?
        .members
        .get(member)?
        .info
        .candidacy
        .as_ref()
        .map(|c| c.allowed)
}

/// An admin bars a member from the gateway role, then allows it again: at the gateway its
/// candidacy follows both ways at once (before, an allowed-again member stood for election
/// only after its next join).
#[test]
fn an_admin_bars_and_allows_again_a_members_candidacy() {
    let ca = Ca::new();
    let (mut s, gw_id, gw_eukey) = gateway_with_pn(&ca);
    let gw = gw_id.peer_id();
    let pne = Identity::generate();
    let p = pne.peer_id();
    // It registered (steps 1-2) with a credential that allows the gateway mode.
    let mut f = fx();
    let answer = s.on_inbound(
        p,
        SenderClass::NotEnrolled,
        Message::Pn(PnMessage::EntityRegistration(registration(
            &ca,
            &pne,
            "alice",
            Modes::ALL,
            NodeMode::Pne,
        ))),
        9,
        &mut f,
    );
    assert!(
        matches!(answer, Some(Message::Pn(PnMessage::EntityRegistration(_)))),
        "{answer:?}"
    );
    let j = admit_to_step_24(&mut s, &ca, (&gw_id, &gw_eukey), 10, 2, &[gw, p], &pne);
    let mut f = fx();
    s.on_done(
        j,
        Done::Answer(Ok(Message::Pn(PnMessage::MembershipConfirmation {
            pn_id: "pn-9".into(),
            epoch: 2,
        }))),
        &mut f,
    );
    assert_eq!(candidacy_allowed(&s, &p), Some(true));
    let changed = |may_be_gateway: bool| AuthMessage::PnChanged {
        info: PnRecordInfo {
            pn_id: "pn-9".into(),
            owner: "alice".into(),
            gateway: gw,
            members: vec![gw, p],
            admins: vec![gw],
            policy: Default::default(),
            epoch: 2,
        },
        admin: cpns_overlay::PnAdminInfo {
            pn_id: "pn-9".into(),
            admins: vec![gw],
            pending: Vec::new(),
            adminees: vec![cpns_overlay::AdmineeEntry {
                member: p,
                settings: cpns_overlay::AdmineeSettings {
                    may_be_gateway: Some(may_be_gateway),
                    ..Default::default()
                },
            }],
        },
    };
    let mut f = fx();
    assert_eq!(s.on_server(changed(false), 20, &mut f), Some(Message::Ack));
    assert_eq!(candidacy_allowed(&s, &p), Some(false), "barred");
    assert!(listed_to(&f, &p).is_some(), "the member lists follow");
    let mut f = fx();
    assert_eq!(s.on_server(changed(true), 21, &mut f), Some(Message::Ack));
    assert_eq!(candidacy_allowed(&s, &p), Some(true), "allowed again");
    assert!(listed_to(&f, &p).is_some(), "the member lists follow");
}

/// The registration a job sends, if it is one.
fn sent_registration(job: &Job) -> Option<&EntityRegistration> {
    match job {
        Job::Request {
            message: Message::Pn(PnMessage::EntityRegistration(r)),
            ..
        } => Some(r),
        _ => None,
    }
}

/// Issue 14: a node in a PN pairing with a device it does not know yet tells it the PN's id,
/// gateway and gateway addresses only once the device's own registration (step 2) verified.
/// Before the fix the step-1 registration carried them to whoever answered the dial; a peer
/// whose answer does not verify now learns nothing of the PN.
#[test]
fn pn_details_go_only_to_a_peer_whose_registration_verified() {
    let ca = Ca::new();
    let (mut s, _, _) = gateway_with_pn(&ca);
    let peer = Identity::generate();
    let mut f = fx();
    s.on_op(Op::Pair("/ip4/127.0.0.1/tcp/9".parse().unwrap()), 7, &mut f);
    let (dial, _) = one_job(&f);
    let mut f = fx();
    s.on_done(dial, Done::Dialed(Ok(peer.peer_id())), &mut f);
    let (step1, job) = one_job(&f);
    let first = sent_registration(job).expect("step 1 is a registration");
    assert!(
        first.pn_id.is_none() && first.gateway.is_none() && first.gateway_addrs.is_empty(),
        "PN details before the peer was verified: {first:?}"
    );

    // The peer's answer verifies: the registration with the PN details follows, then 3-4.
    let reg = registration(&ca, &peer, "alice", Modes::ALL, NodeMode::Pne);
    let mut f = fx();
    s.on_done(
        step1,
        Done::Answer(Ok(Message::Pn(PnMessage::EntityRegistration(reg.clone())))),
        &mut f,
    );
    let (again, job) = one_job(&f);
    let full = sent_registration(job).expect("the registration with the PN details");
    assert_eq!(full.pn_id.as_deref(), Some("pn-9"));
    assert!(resolved(&f, 7).is_none());
    let mut f = fx();
    s.on_done(
        again,
        Done::Answer(Ok(Message::Pn(PnMessage::EntityRegistration(reg)))),
        &mut f,
    );
    let (_, job) = one_job(&f);
    assert!(matches!(
        job,
        Job::Request {
            message: Message::Pn(PnMessage::CapabilitiesExchange(_)),
            ..
        }
    ));

    // Another peer answers with a credential of another CA: the pairing fails, nothing more
    // is sent to it.
    let stranger = Identity::generate();
    let mut f = fx();
    s.on_op(
        Op::Pair("/ip4/127.0.0.1/tcp/10".parse().unwrap()),
        8,
        &mut f,
    );
    let (dial, _) = one_job(&f);
    let mut f = fx();
    s.on_done(dial, Done::Dialed(Ok(stranger.peer_id())), &mut f);
    let (step1, job) = one_job(&f);
    assert!(sent_registration(job).is_some_and(|r| r.pn_id.is_none()));
    let forged = registration(&Ca::new(), &stranger, "alice", Modes::ALL, NodeMode::Pne);
    let mut f = fx();
    s.on_done(
        step1,
        Done::Answer(Ok(Message::Pn(PnMessage::EntityRegistration(forged)))),
        &mut f,
    );
    assert!(
        f.jobs().is_empty(),
        "sent to an unverified peer: {:?}",
        f.jobs()
    );
    assert!(matches!(resolved(&f, 7 + 1), Some(Reply::Pair(Err(_)))));
}

/// A PNE joining "pn-1" whose step-24 grant (epoch `epoch`) came: its state, identity, the
/// gateway's identity and the job id of its step 18 (answered by step 26).
fn granted(ca: &Ca, epoch: u64) -> (State, Identity, Identity, u64) {
    let (mut s, id, eukey, gw, setup) = joining(ca);
    let key = GroupKey::generate(super::pn_group("pn-1"), epoch);
    let grant = MembershipGrant {
        pn_id: "pn-1".into(),
        gateway: gw.peer_id(),
        epoch,
        sealed_key: ca.grant(&key, &id.peer_id(), &eukey).sealed,
        members: Vec::new(),
        expelled: Vec::new(),
    };
    let message = Message::Pn(PnMessage::MembershipWithGroupKey(grant));
    s.on_inbound(gw.peer_id(), SenderClass::Enrolled, message, 3, &mut fx());
    (s, id, gw, setup)
}

/// Issue 14 (amplification): a member list's addresses are cut per member, in the member
/// table kept (and spread again) and in what reaches the overlay. A gateway sent 60,000
/// addresses per member; each became a Kademlia insert and a copy in every member's table.
#[test]
fn a_member_lists_addresses_are_cut_per_member() {
    let ca = Ca::new();
    let (mut s, id, gw, setup) = granted(&ca, 3);
    let other = PeerId::random();
    let mut flooding = member(&other, 6);
    flooding.listen_addrs = (0..5000u32)
        .map(|i| {
            format!("/ip4/10.0.{}.{}/tcp/4001", i >> 8, i & 255)
                .parse()
                .unwrap()
        })
        .collect();
    let members = vec![member(&gw.peer_id(), 5), member(&id.peer_id(), 1), flooding];
    let list = summary("pn-1", &gw, members, 3);
    let answer = Message::Pn(PnMessage::ConnectionSetupConfirmation(list));
    let mut f = fx();
    s.on_done(setup, Done::Answer(Ok(answer)), &mut f);
    let view = s.view();
    let kept = &view.pn.as_ref().unwrap().members[&other].info.listen_addrs;
    assert_eq!(kept.len(), cpns_overlay::MAX_LISTEN_ADDRS);
    let given: usize = f
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::AddAddrs { peer, addrs } if *peer == other => Some(addrs.len()),
            _ => None,
        })
        .sum();
    assert_eq!(given, cpns_overlay::MAX_LISTEN_ADDRS);
}

/// Issue 14 (low): a peer's notification text is kept as one line of at most 256
/// characters, so a notification neither holds a megabyte nor injects lines into the trace,
/// the CLI or the web view.
#[test]
fn a_notifications_text_is_clipped_to_one_short_line() {
    let ca = Ca::new();
    let (mut s, _, _) = node(&ca, "alice", 1, ModeSetting::Auto);
    let member = PeerId::random();
    let mut f = fx();
    let answer = s.on_inbound(
        member,
        SenderClass::Member,
        Message::Status(cpns_overlay::StatusMessage::Notify {
            target: member,
            status: Status::Busy {
                reason: "in a call\ninjected: line".repeat(10_000),
            },
            battery_percent: Some(50),
            free_memory_bytes: None,
            trigger: "change\r\n- injected".repeat(10_000),
        }),
        4,
        &mut f,
    );
    assert!(matches!(answer, Some(Message::Ack)), "{answer:?}");
    let n = f
        .effects
        .iter()
        .find_map(|e| match e {
            Effect::Notify(n) => Some(n.clone()),
            _ => None,
        })
        .expect("the notification is kept");
    let reason = n.reason.clone().unwrap();
    for text in [&n.trigger, &reason] {
        assert!(text.chars().count() <= 256, "{} characters", text.len());
        assert!(!text.contains(['\n', '\r']), "{text:?}");
    }
    assert!(n.trigger.starts_with("change"));
    let kept = s.view().notifications.back().cloned().unwrap();
    assert_eq!(kept.trigger, n.trigger);
}

/// 5.6.9 merge: `cpns-auth`'s word that this gateway's PN was merged into another makes it
/// step down, tell its members their PN was released (so that those the server could not
/// reach ask where it went), and register with the other PN's gateway (step 1 of its join); a
/// move of a PN it is not in changes nothing.
#[test]
fn a_gateway_whose_pn_was_merged_away_joins_the_other_pns_gateway() {
    let ca = Ca::new();
    let (mut s, _, _) = gateway_with_pn(&ca);
    let other_gw = Identity::generate().peer_id();
    let moved = |from: &str| AuthMessage::PnMoved {
        from: from.into(),
        to: cpns_overlay::PnInvitationInfo {
            pn_id: "pn-x".into(),
            owner: "bob".into(),
            gateway: other_gw,
            gateway_addrs: vec!["/ip4/127.0.0.1/tcp/7".parse().unwrap()],
            entity: true,
        },
    };
    let mut f = fx();
    let answer = s.on_server(moved("pn-elsewhere"), 30, &mut f);
    assert!(
        matches!(&answer, Some(Message::Error(e)) if e.code == ErrorCode::NotFound),
        "{answer:?}"
    );
    assert!(s.view().is_pn_gateway(), "nothing changed");

    let mut f = fx();
    assert_eq!(s.on_server(moved("pn-9"), 31, &mut f), Some(Message::Ack));
    assert!(!s.view().is_pn_gateway(), "stepped down");
    let (_, job) = one_job(&f);
    assert!(
        matches!(job, Job::Request { peer, message: Message::Pn(PnMessage::EntityRegistration(_)) } if *peer == other_gw),
        "{job:?}"
    );
    assert!(
        s_trace(&s)
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "PnMovedToAnotherPn")
    );
    // The move is stored with the transition, and a node started from what was stored knows
    // it (its services are then re-scoped even after a restart).
    let stored: Vec<Vec<u8>> = f
        .effects
        .iter()
        .filter_map(|e| match e {
            Effect::Persist(PnWrite::LastMove(b)) => Some(b.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(stored.len(), 1, "the move is persisted once");
    assert_eq!(
        s.view().last_move.as_deref(),
        Some(&("pn-9".into(), "pn-x".into()))
    );
    let (restarted, _, _) = node_from(&ca, "alice", 9, ModeSetting::Pne, stored.first().cloned());
    assert_eq!(
        restarted.view().last_move.as_deref(),
        Some(&("pn-9".to_string(), "pn-x".to_string()))
    );
}
