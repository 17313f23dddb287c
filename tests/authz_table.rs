//! The authorisation table, cell by cell: every kind of CPNS request a node accepts, sent
//! from every sender class to a real node (real libp2p connections, a real cpns-auth), and the
//! answer checked against `cpns_node::authz::TABLE`.
//!
//! The PN: a gateway `router` and members `laptop` and `tablet` of user alice. Senders:
//! not enrolled (a bare overlay node with a fresh identity), enrolled (a device of alice that
//! registered but is in no PN), member (a real member node's own identity, through its test
//! handle), gateway (the real gateway's identity, towards a member). The server column is
//! the PN set-up itself (steps 14 and 17 reached the gateway), and every other sender's
//! server-only requests are refused.
//!
//! Adding a request kind without a table entry fails `sample` (its match has no wildcard)
//! and the entry check.

use std::time::Duration;

use anyhow::{Result, bail, ensure};
use cpns_keys::Modes;
use cpns_node::authz::{RequestKind, TABLE};
use cpns_overlay::test_utils::TestNode;
use cpns_overlay::{
    AuthMessage, Capabilities, ConnectionSetup, DeliveryMessage, DeliveryMode, DirectoryMessage,
    ErrorCode, GroupMessage, Message, PnMessage, Protocol, Status, StatusMessage, StatusPolicy,
    ZoneMessage,
};
use libp2p::PeerId;

use crate::authz::Intruder;
use crate::util::{Lab, LabNode, init_tracing};

/// A sample of each kind, valid enough to pass the table and harmless to the PN (unknown PN
/// ids, someone else's credential, sessions that do not exist).
fn sample(kind: RequestKind, sender: PeerId, intruder: &Intruder) -> (Protocol, Message) {
    use RequestKind as K;
    let pn = || "pn-0000000000000000".to_string();
    let cpns = |m| (Protocol::Cpns, m);
    match kind {
        K::EntityRegistration => cpns(Message::Pn(PnMessage::EntityRegistration(
            intruder.registration(cpns_overlay::NodeMode::Pne, None),
        ))),
        K::CapabilitiesExchange => cpns(Message::Pn(PnMessage::CapabilitiesExchange(
            Capabilities::default(),
        ))),
        K::CapabilitiesUpdate => cpns(Message::Pn(PnMessage::CapabilitiesUpdate(
            Capabilities::default(),
        ))),
        K::ConnectionSetupRequest => cpns(Message::Pn(PnMessage::ConnectionSetupRequest(
            ConnectionSetup {
                // The intruder's credential: not the sender's (unless it is the intruder),
                // so the handler refuses it before asking the server anything.
                credential: intruder.enrolment.credential.clone(),
                pn_id: pn(),
                time: 0,
                nonce: [0; 16],
                eukey_mac: [0; 32],
                signature: intruder.node.identity.sign(b"-"),
                capabilities: Capabilities::default(),
            },
        ))),
        K::MembershipWithGroupKey | K::MembershipUpdate => {
            let grant = cpns_overlay::MembershipGrant {
                pn_id: pn(),
                gateway: sender,
                epoch: 1,
                sealed_key: cpns_keys::EuKey::generate().seal(b"x", b"y"),
                members: Vec::new(),
                expelled: Vec::new(),
            };
            cpns(Message::Pn(if kind == K::MembershipUpdate {
                PnMessage::MembershipUpdate(grant)
            } else {
                PnMessage::MembershipWithGroupKey(grant)
            }))
        }
        K::Leave => cpns(Message::Pn(PnMessage::Leave { pn_id: pn() })),
        K::InventoryRequest => cpns(Message::Pn(PnMessage::InventoryRequest { pn_id: pn() })),
        K::Revocations => cpns(Message::Pn(PnMessage::Revocations(
            intruder.enrolment.revocations.clone(),
        ))),
        K::Ping => cpns(Message::Pn(PnMessage::Ping { nonce: 7 })),
        K::UsageReport => cpns(Message::Pn(PnMessage::UsageReport(
            cpns_overlay::UsageReport {
                entity: intruder.peer(),
                credential: intruder.enrolment.credential.clone(),
                sequence: 1,
                records: Vec::new(),
                signature: intruder.node.identity.sign(b"-"),
            },
        ))),
        K::GatewayChanged => cpns(Message::Pn(PnMessage::GatewayChanged {
            pn_id: pn(),
            addrs: Vec::new(),
        })),
        K::ServicesUpdate => cpns(Message::Pn(PnMessage::ServicesUpdate {
            pn_id: pn(),
            services: Vec::new(),
        })),
        K::MembersUpdate => cpns(Message::Pn(PnMessage::MembersUpdate {
            pn_id: pn(),
            members: Vec::new(),
            expelled: Vec::new(),
        })),
        K::HandOff => cpns(Message::Pn(PnMessage::HandOff { pn_id: pn() })),
        K::AdminChanged => cpns(Message::Pn(PnMessage::AdminChanged(
            cpns_overlay::PnAdminInfo {
                pn_id: pn(),
                ..Default::default()
            },
        ))),
        K::StatusQuery => cpns(Message::Status(StatusMessage::Query { target: sender })),
        K::StatusSubscribe => cpns(Message::Status(StatusMessage::Subscribe {
            target: PeerId::random(),
            policy: StatusPolicy::default(),
        })),
        K::StatusUnsubscribe => cpns(Message::Status(StatusMessage::Unsubscribe {
            target: PeerId::random(),
        })),
        K::StatusNotify => cpns(Message::Status(StatusMessage::Notify {
            target: sender,
            status: Status::Online,
            battery_percent: None,
            free_memory_bytes: None,
            trigger: "table".into(),
        })),
        K::Heartbeat => cpns(Message::Status(StatusMessage::Heartbeat {
            status: Status::Online,
            battery_percent: None,
            free_memory_bytes: None,
        })),
        K::DirectoryLookup => cpns(Message::Directory(DirectoryMessage::Lookup {
            keyword: b"nothing".to_vec(),
        })),
        K::DirectorySubscribe => cpns(Message::Directory(DirectoryMessage::Subscribe {
            keyword: b"nothing".to_vec(),
        })),
        K::DirectoryUnsubscribe => cpns(Message::Directory(DirectoryMessage::Unsubscribe {
            keyword: b"nothing".to_vec(),
        })),
        K::Advertise => cpns(Message::Directory(DirectoryMessage::Advertise {
            record: vec![0; 4],
        })),
        K::Invoke => cpns(Message::Delivery(DeliveryMessage::Invoke {
            service_id: "svc-none".into(),
            mode: DeliveryMode::Pull,
            capabilities: Capabilities::default(),
        })),
        K::DeliveryStart => cpns(Message::Delivery(DeliveryMessage::Start { session: 3 })),
        K::DeliveryStop => cpns(Message::Delivery(DeliveryMessage::Stop { session: 3 })),
        K::DeliveryPause => cpns(Message::Delivery(DeliveryMessage::Pause { session: 3 })),
        K::DeliveryResume => cpns(Message::Delivery(DeliveryMessage::Resume { session: 3 })),
        K::InvokeMany => cpns(Message::Delivery(DeliveryMessage::InvokeMany {
            service_ids: vec!["svc-none".into()],
            mode: DeliveryMode::Pull,
            capabilities: Capabilities::default(),
        })),
        K::FeedContribute => cpns(Message::Delivery(DeliveryMessage::Contribute {
            feed: "temps".into(),
            common: b"unit=C".to_vec(),
            part: b"21".to_vec(),
        })),
        K::FeedRequest => cpns(Message::Delivery(DeliveryMessage::FeedRequest {
            feed: "temps".into(),
        })),
        K::FeedDistribute => cpns(Message::Delivery(DeliveryMessage::Distribute(
            cpns_overlay::Distribution {
                feed: "temps".into(),
                seq: 1,
                common: cpns_keys::GroupKey::generate(cpns_keys::GroupId("pn-x".into()), 0)
                    .seal(&sender, b"x"),
                part: None,
            },
        ))),
        K::KeyForward => cpns(Message::Group(GroupMessage::KeyForward {
            grants: Vec::new(),
        })),
        K::ServerStatusRequest => (
            Protocol::Auth,
            Message::Auth(AuthMessage::StatusUpdateRequest),
        ),
        K::ServerInventoryCreated => (
            Protocol::Auth,
            Message::Auth(AuthMessage::PnInventoryCreated {
                pn: cpns_overlay::PnRecordInfo {
                    pn_id: pn(),
                    owner: "alice".into(),
                    gateway: sender,
                    members: Vec::new(),
                    admins: Vec::new(),
                    policy: Default::default(),
                    epoch: 1,
                },
                key: cpns_overlay::GroupKeyGrant {
                    group: cpns_keys::GroupId(pn()),
                    epoch: 1,
                    sealed: cpns_keys::EuKey::generate().seal(b"x", b"y"),
                },
            }),
        ),
        K::ServerKeyPush => (
            Protocol::Auth,
            Message::Auth(AuthMessage::KeyPush {
                member: sender,
                grants: Vec::new(),
            }),
        ),
        K::ServerRevocations => (
            Protocol::Auth,
            Message::Auth(AuthMessage::Revocations(
                intruder.enrolment.revocations.clone(),
            )),
        ),
        K::ServerPnChanged => (
            Protocol::Auth,
            Message::Auth(AuthMessage::PnChanged {
                info: cpns_overlay::PnRecordInfo {
                    pn_id: pn(),
                    owner: "mallory".into(),
                    gateway: sender,
                    members: vec![sender],
                    admins: vec![sender],
                    policy: Default::default(),
                    epoch: 99,
                },
                admin: cpns_overlay::PnAdminInfo {
                    pn_id: pn(),
                    ..Default::default()
                },
            }),
        ),
        K::ServerPnReleased => (
            Protocol::Auth,
            Message::Auth(AuthMessage::PnRelease { pn_id: pn() }),
        ),
        K::ServerPnInvitation => (
            Protocol::Auth,
            Message::Auth(AuthMessage::PnInvitation(cpns_overlay::PnInvitationInfo {
                pn_id: pn(),
                owner: "mallory".into(),
                gateway: PeerId::random(),
                gateway_addrs: Vec::new(),
                entity: true,
            })),
        ),
        K::ServerPnMoved => (
            Protocol::Auth,
            Message::Auth(AuthMessage::PnMoved {
                from: pn(),
                to: cpns_overlay::PnInvitationInfo {
                    pn_id: "pn-elsewhere".into(),
                    owner: "mallory".into(),
                    gateway: PeerId::random(),
                    gateway_addrs: Vec::new(),
                    entity: true,
                },
            }),
        ),
        K::ZoneDiscover => cpns(Message::Zone(ZoneMessage::Discover {
            zone: "z".into(),
            pn_id: pn(),
            credential: intruder.enrolment.credential.clone(),
        })),
        K::ZoneCheck => cpns(Message::Zone(ZoneMessage::Check { zone: "z".into() })),
        K::ZonePush => cpns(Message::Zone(ZoneMessage::Push {
            zone: "z".into(),
            pn_id: pn(),
            services: Vec::new(),
        })),
        K::ProxyPlay => cpns(Message::Proxy(cpns_overlay::ProxyMessage::Play {
            device: "upnp-0000000000000000".into(),
            service_id: "svc-none".into(),
        })),
        K::ProxyDevices => cpns(Message::Proxy(cpns_overlay::ProxyMessage::Devices)),
        K::DeliverySwitch => cpns(Message::Delivery(DeliveryMessage::Switch {
            session: 3,
            to: libp2p::PeerId::random(),
        })),
        K::SessionHandOver => cpns(Message::Delivery(DeliveryMessage::HandOver(
            cpns_overlay::SessionHandOver {
                session: 3,
                offerer: libp2p::PeerId::random(),
                service_id: "svc-none".into(),
                offset: 0,
                total: 1,
                started: 0,
                variant: None,
            },
        ))),
        K::DeliveryContinue => cpns(Message::Delivery(DeliveryMessage::Continue {
            session: 3,
            offset: 0,
        })),
        K::Answer => cpns(Message::Ack),
    }
}

/// The table as reviewed: who may send each kind (n: not enrolled, e: enrolled, m: member,
/// g: gateway, s: server; `-`: no). A change of `TABLE` must be made here too, on purpose.
const EXPECTED: &[(RequestKind, &str)] = &[
    (RequestKind::EntityRegistration, "nemg-"),
    (RequestKind::CapabilitiesExchange, "-emg-"),
    (RequestKind::CapabilitiesUpdate, "-emg-"),
    (RequestKind::ConnectionSetupRequest, "-em--"),
    (RequestKind::MembershipWithGroupKey, "-emg-"),
    (RequestKind::MembershipUpdate, "---g-"),
    (RequestKind::Leave, "--mg-"),
    (RequestKind::InventoryRequest, "--mg-"),
    (RequestKind::Revocations, "nemg-"),
    (RequestKind::Ping, "-emg-"),
    (RequestKind::UsageReport, "--m--"),
    (RequestKind::GatewayChanged, "--mg-"),
    (RequestKind::ServicesUpdate, "--m--"),
    (RequestKind::MembersUpdate, "---g-"),
    (RequestKind::HandOff, "---g-"),
    (RequestKind::AdminChanged, "---g-"),
    (RequestKind::StatusQuery, "--mg-"),
    (RequestKind::StatusSubscribe, "--mg-"),
    (RequestKind::StatusUnsubscribe, "-emg-"),
    (RequestKind::StatusNotify, "--mg-"),
    (RequestKind::Heartbeat, "--m--"),
    (RequestKind::DirectoryLookup, "nemg-"),
    (RequestKind::DirectorySubscribe, "--m--"),
    (RequestKind::DirectoryUnsubscribe, "-emg-"),
    (RequestKind::Advertise, "--mg-"),
    (RequestKind::Invoke, "-emg-"),
    (RequestKind::DeliveryStart, "-emg-"),
    (RequestKind::DeliveryStop, "-emg-"),
    (RequestKind::DeliveryPause, "-emg-"),
    (RequestKind::DeliveryResume, "-emg-"),
    (RequestKind::InvokeMany, "-emg-"),
    (RequestKind::FeedContribute, "--m--"),
    (RequestKind::FeedRequest, "--m--"),
    (RequestKind::FeedDistribute, "---g-"),
    (RequestKind::KeyForward, "---g-"),
    (RequestKind::ServerStatusRequest, "----s"),
    (RequestKind::ServerInventoryCreated, "----s"),
    (RequestKind::ServerKeyPush, "----s"),
    (RequestKind::ServerRevocations, "----s"),
    (RequestKind::ServerPnChanged, "----s"),
    (RequestKind::ServerPnReleased, "----s"),
    (RequestKind::ServerPnInvitation, "----s"),
    (RequestKind::ServerPnMoved, "----s"),
    (RequestKind::ZoneDiscover, "nemg-"),
    (RequestKind::ZoneCheck, "nemg-"),
    (RequestKind::ZonePush, "nemg-"),
    (RequestKind::ProxyPlay, "--m--"),
    (RequestKind::ProxyDevices, "--m--"),
    (RequestKind::DeliverySwitch, "-emg-"),
    (RequestKind::SessionHandOver, "--mg-"),
    (RequestKind::DeliveryContinue, "-emg-"),
    (RequestKind::Answer, "-----"),
];

fn row(a: cpns_node::authz::Allowed) -> String {
    [
        (a.not_enrolled, 'n'),
        (a.enrolled, 'e'),
        (a.member, 'm'),
        (a.gateway, 'g'),
        (a.server, 's'),
    ]
    .iter()
    .map(|(on, c)| if *on { *c } else { '-' })
    .collect()
}

/// The sender classes of the table's columns, as seen by a target.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Class {
    NotEnrolled,
    Enrolled,
    Member,
    Gateway,
}

fn allowed(kind: RequestKind, class: Class) -> bool {
    let a = kind.allowed();
    match class {
        Class::NotEnrolled => a.not_enrolled,
        Class::Enrolled => a.enrolled,
        Class::Member => a.member,
        Class::Gateway => a.gateway,
    }
}

/// Whether an answer is the table's refusal (as opposed to a handler's).
fn table_refusal(r: &Result<Message, cpns_overlay::Error>) -> Option<ErrorCode> {
    match r {
        Err(cpns_overlay::Error::Refused { reply, .. })
            if reply.message.starts_with("register first")
                || reply.message.contains("is not for a sender that is")
                || reply.message == "an answer, not a request" =>
        {
            Some(reply.code)
        }
        _ => None,
    }
}

/// Sends one cell's request and checks the answer; returns a line for the failure report.
async fn cell(
    kind: RequestKind,
    class: Class,
    send: impl std::future::Future<Output = Result<Message, cpns_overlay::Error>>,
) -> Option<String> {
    let r = tokio::time::timeout(Duration::from_secs(20), send)
        .await
        .unwrap_or(Err(cpns_overlay::Error::Shutdown));
    let refused = table_refusal(&r);
    let want = allowed(kind, class);
    let ok = match (want, refused) {
        (true, None) => !matches!(r, Err(cpns_overlay::Error::Shutdown)),
        (true, Some(_)) => false,
        (false, Some(code)) => {
            let expected = if kind == RequestKind::Answer && class != Class::NotEnrolled {
                ErrorCode::BadRequest
            } else if class == Class::NotEnrolled {
                ErrorCode::NotRegistered
            } else {
                ErrorCode::Forbidden
            };
            code == expected
        }
        (false, None) => false,
    };
    (!ok).then(|| format!("{kind} from {class:?}: allowed={want}, got {r:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_kind_from_every_sender_class() -> Result<()> {
    init_tracing();
    // The table has one entry per kind, and it is the one reviewed.
    for k in RequestKind::ALL {
        ensure!(
            TABLE.iter().filter(|(t, _, _)| t == k).count() == 1,
            "{k} has no single table entry"
        );
        let expected = EXPECTED
            .iter()
            .find(|(e, _)| e == k)
            .map(|(_, r)| *r)
            .unwrap_or("missing from EXPECTED");
        ensure!(
            row(k.allowed()) == expected,
            "{k}: the table says {}, the review {expected}",
            row(k.allowed())
        );
    }
    // docs/ARCHITECTURE.md shows the same table.
    let doc = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md"),
    )?;
    for k in RequestKind::ALL {
        let spaced: String = row(k.allowed())
            .chars()
            .map(String::from)
            .collect::<Vec<_>>()
            .join(" ");
        let line = format!("| `{k}` | `{spaced}` |");
        ensure!(doc.contains(&line), "docs/ARCHITECTURE.md lacks {line}");
    }
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["laptop", "tablet"]).await?;
    let laptop: &LabNode = &members[0];
    let tablet: &LabNode = &members[1];
    // The server column: steps 14 and 17 reached the gateway when its PN was set up.
    let trace = gw.handle().trace();
    ensure!(
        trace.iter().any(|e| e.step == 14) && trace.iter().any(|e| e.step == 17),
        "the server's own requests were not taken"
    );

    let stranger = TestNode::spawn(
        cpns_overlay::Config {
            gate_requests: false,
            ..cpns_overlay::Config::default()
        },
        221,
    )
    .await?;
    let outsider = Intruder::enrol(&lab, 222, "alice", Modes::ALL).await?;
    for target in [&gw, laptop] {
        let addr = target.dial_addr().await?;
        stranger.client.dial(addr.clone()).await?;
        outsider.register_with(target.peer_id(), addr).await?;
    }

    let mut failures = Vec::new();
    // Towards the gateway: not enrolled, enrolled, member.
    // Towards a PNE (the laptop): not enrolled, enrolled, member (the tablet), gateway.
    for (target, peers) in [
        (
            &gw,
            vec![
                (Class::NotEnrolled, None),
                (Class::Enrolled, None),
                (Class::Member, Some(laptop)),
            ],
        ),
        (
            laptop,
            vec![
                (Class::NotEnrolled, None),
                (Class::Enrolled, None),
                (Class::Member, Some(tablet)),
                (Class::Gateway, Some(&gw)),
            ],
        ),
    ] {
        for kind in RequestKind::ALL.iter().copied() {
            let server_only = matches!(
                kind,
                RequestKind::ServerStatusRequest
                    | RequestKind::ServerInventoryCreated
                    | RequestKind::ServerKeyPush
                    | RequestKind::ServerRevocations
                    | RequestKind::ServerPnChanged
                    | RequestKind::ServerPnReleased
                    | RequestKind::ServerPnInvitation
                    | RequestKind::ServerPnMoved
            );
            for (class, node) in &peers {
                let to = target.peer_id();
                let failure = match (class, node) {
                    (Class::NotEnrolled, _) => {
                        let (protocol, m) = sample(kind, stranger.identity.peer_id(), &outsider);
                        if server_only {
                            // Any sender but the server: refused on the auth protocol.
                            let r = stranger.client.request(to, protocol, m).await;
                            (table_refusal(&r) != Some(ErrorCode::NotRegistered)).then(|| {
                                format!("{kind} from a stranger on the auth protocol: {r:?}")
                            })
                        } else {
                            cell(kind, *class, stranger.client.request(to, protocol, m)).await
                        }
                    }
                    (Class::Enrolled, _) => {
                        let (protocol, m) = sample(kind, outsider.peer(), &outsider);
                        if server_only {
                            let r = outsider.node.client.request(to, protocol, m).await;
                            (table_refusal(&r) != Some(ErrorCode::NotRegistered)).then(|| {
                                format!(
                                    "{kind} from an enrolled device on the auth protocol: {r:?}"
                                )
                            })
                        } else {
                            cell(kind, *class, outsider.node.client.request(to, protocol, m)).await
                        }
                    }
                    (_, Some(n)) => {
                        if server_only {
                            continue;
                        }
                        let (_, m) = sample(kind, n.peer_id(), &outsider);
                        cell(kind, *class, n.handle().raw_request(to, m)).await
                    }
                    (_, None) => bail!("no sender for {class:?}"),
                };
                failures.extend(failure);
            }
        }
    }
    ensure!(
        failures.is_empty(),
        "{} cells disagree with the table:\n{}",
        failures.len(),
        failures.join("\n")
    );
    // The refusals were counted.
    let metrics = gw.handle().metrics_text().await;
    ensure!(
        metrics.contains(
            "cpns_node_requests_refused_total{request=\"StatusQuery\",class=\"enrolled\"}"
        ),
        "refusals not counted: {}",
        metrics
            .lines()
            .filter(|l| l.contains("refused"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let _ = stranger;
    lab.shutdown(members.into_iter().chain([gw]).collect())
        .await;
    Ok(())
}
