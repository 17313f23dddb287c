//! The overlay through real libp2p connections on loopback: bootstrap, DHT put/get, the CPNS
//! request-response protocol, the validation hook, and hostile frames.

use anyhow::{Context, Result, bail};
use cpns_overlay::test_utils::TestNode;
use cpns_overlay::{
    CPNS_PROTOCOL, Config, Event, Message, PnMessage, Protocol, Quorum, Record, RecordKey,
    RecordValidator, Rejection,
};
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use libp2p::PeerId;
use libp2p::kad::ProviderRecord;
use std::sync::Arc;
use tokio::time::timeout;

use crate::util::{WAIT, init_tracing};

/// A DHT-only config: no admission gate (these nodes have no credentials).
fn open_config() -> Config {
    Config {
        gate_requests: false,
        ..Config::default()
    }
}

/// Spawns `n` nodes; every node after the first bootstraps from the first.
async fn mesh(n: usize, config: Config) -> Result<Vec<TestNode>> {
    let first = TestNode::spawn(config.clone(), 1).await?;
    let boot = first.dial_addr().await?;
    let mut nodes = vec![first];
    for i in 1..n {
        let cfg = Config {
            bootstrap: vec![boot.clone()],
            ..config.clone()
        };
        nodes.push(TestNode::spawn(cfg, (i + 1) as u8).await?);
    }
    for node in &nodes[1..] {
        node.client.bootstrap().await.context("bootstrap")?;
    }
    // A node that bootstrapped before the first node had identified a later one has not heard
    // of it: it bootstraps again (bounded) until it knows every peer.
    let deadline = tokio::time::Instant::now() + WAIT;
    for node in &nodes {
        loop {
            let size = node
                .client
                .wait_routing_table(n - 1, std::time::Duration::from_secs(2))
                .await
                .context("routing table")?;
            if size >= n - 1 {
                break;
            }
            if tokio::time::Instant::now() >= deadline {
                bail!(
                    "routing table of {} has {size} of {} peers",
                    node.client.local_peer_id(),
                    n - 1
                );
            }
            let _ = node.client.bootstrap().await;
        }
    }
    Ok(nodes)
}

async fn shutdown(nodes: Vec<TestNode>) {
    for n in nodes {
        n.shutdown().await;
    }
}

/// Three nodes bootstrap from one and each ends with the other two in its routing table.
#[tokio::test]
async fn three_nodes_bootstrap_and_see_each_other() -> Result<()> {
    init_tracing();
    let nodes = mesh(3, open_config()).await?;
    for node in &nodes {
        assert_eq!(node.client.routing_table_size().await?, 2);
    }
    shutdown(nodes).await;
    Ok(())
}

/// A record put on one node is read on every other, over the network (each reader's own copy
/// is removed first, so the answer must come from a peer).
#[tokio::test]
async fn record_put_on_one_is_read_on_the_others() -> Result<()> {
    init_tracing();
    let nodes = mesh(3, open_config()).await?;
    let key = RecordKey::new(&"/cpns/test/greeting");
    nodes[0]
        .client
        .put_record(
            Record::new(key.clone(), b"hello".to_vec()),
            Quorum::N(2.try_into()?),
        )
        .await?;
    for node in &nodes[1..] {
        node.client.remove_record(key.clone()).await?;
        let found = node.client.get_record(key.clone(), true).await?;
        assert_eq!(found.records[0].record.value, b"hello");
        assert!(
            found.records[0].peer.is_some(),
            "answer came from the local store: {found:?} {:?}",
            node.client.local_record(key.clone()).await?
        );
        assert!(found.figures.requests >= 1);
    }
    shutdown(nodes).await;
    Ok(())
}

/// A CPNS request and its response travel over `/cpns/1.0.0`, with the request's id echoed.
#[tokio::test]
async fn request_response_round_trip() -> Result<()> {
    init_tracing();
    let a = TestNode::spawn(open_config(), 11).await?;
    let mut b = TestNode::spawn(open_config(), 12).await?;
    a.client.dial(b.dial_addr().await?).await?;
    let b_peer = b.client.local_peer_id();
    let b_client = b.client.clone();
    let server = tokio::spawn(async move {
        loop {
            match b.events.recv().await {
                Some(Event::InboundRequest {
                    message: Message::Pn(PnMessage::Ping { nonce }),
                    channel,
                    ..
                }) => {
                    b_client
                        .respond(channel, Message::Pn(PnMessage::Pong { nonce }))
                        .await?;
                    return Ok::<_, anyhow::Error>(b);
                }
                Some(_) => continue,
                None => bail!("event stream ended"),
            }
        }
    });
    let answer = timeout(
        WAIT,
        a.client.request(
            b_peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::Ping { nonce: 77 }),
        ),
    )
    .await??;
    assert_eq!(answer, Message::Pn(PnMessage::Pong { nonce: 77 }));
    let b = timeout(WAIT, server).await???;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// A gated node answers requests of an unregistered peer with `NotRegistered`, and the same
/// request once the peer is admitted.
#[tokio::test]
async fn gate_refuses_unregistered_peers() -> Result<()> {
    init_tracing();
    let a = TestNode::spawn(open_config(), 21).await?;
    let mut b = TestNode::spawn(Config::default(), 22).await?;
    a.client.dial(b.dial_addr().await?).await?;
    let b_peer = b.client.local_peer_id();
    let refused = a
        .client
        .request(
            b_peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::Ping { nonce: 1 }),
        )
        .await;
    match refused {
        Err(cpns_overlay::Error::Refused { reply, .. }) => {
            assert_eq!(reply.code, cpns_overlay::ErrorCode::NotRegistered)
        }
        other => bail!("expected NotRegistered, got {other:?}"),
    }
    b.client.admit_peer(a.client.local_peer_id(), true).await?;
    let b_client = b.client.clone();
    let server = tokio::spawn(async move {
        while let Some(ev) = b.events.recv().await {
            if let Event::InboundRequest { channel, .. } = ev {
                b_client.respond(channel, Message::Ack).await?;
                return Ok::<_, anyhow::Error>(b);
            }
        }
        bail!("event stream ended")
    });
    let answer = a
        .client
        .request(
            b_peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::Ping { nonce: 2 }),
        )
        .await?;
    assert_eq!(answer, Message::Ack);
    let b = timeout(WAIT, server).await???;
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// Refuses every record whose value starts with `bad`.
struct RefuseBad;

impl RecordValidator for RefuseBad {
    fn validate_put(
        &self,
        _: &PeerId,
        record: Record,
        _: Option<&Record>,
    ) -> Result<Record, Rejection> {
        if record.value.starts_with(b"bad") {
            Err(Rejection::new("test_bad", "value starts with bad"))
        } else {
            Ok(record)
        }
    }
    fn validate_get(&self, record: &Record) -> Result<(), Rejection> {
        if record.value.starts_with(b"bad") {
            Err(Rejection::new("test_bad", "value starts with bad"))
        } else {
            Ok(())
        }
    }
    fn validate_provider(
        &self,
        _: &PeerId,
        _: &ProviderRecord,
        _: Option<&cpns_overlay::PeerCredential>,
    ) -> Result<(), Rejection> {
        Ok(())
    }
}

/// A record the validation hook refuses is stored by no other node, counted as rejected, and
/// a good record under the same configuration is stored.
#[tokio::test]
async fn refused_record_is_stored_nowhere() -> Result<()> {
    init_tracing();
    let config = Config {
        validator: Arc::new(RefuseBad),
        ..open_config()
    };
    let nodes = mesh(4, config).await?;
    let bad = RecordKey::new(&"/cpns/test/bad");
    let good = RecordKey::new(&"/cpns/test/good");
    // The writer's own store is not filtered (it is its own record); every remote put is.
    let _ = nodes[0]
        .client
        .put_record(Record::new(bad.clone(), b"bad value".to_vec()), Quorum::One)
        .await;
    nodes[0]
        .client
        .put_record(
            Record::new(good.clone(), b"good value".to_vec()),
            Quorum::N(3.try_into()?),
        )
        .await?;
    let mut rejected = 0;
    for node in &nodes[1..] {
        assert!(node.client.local_record(bad.clone()).await?.is_none());
        assert!(node.client.local_record(good.clone()).await?.is_some());
        rejected += node
            .client
            .stats()
            .rejected_records()
            .get("test_bad")
            .copied()
            .unwrap_or(0);
        // Reading it back: the writer's copy is refused on read too, so nobody finds it.
        match node.client.get_record(bad.clone(), false).await {
            Err(cpns_overlay::Error::NotFound) => {}
            other => bail!("refused record was found: {other:?}"),
        }
    }
    assert!(
        rejected >= 3,
        "each remote node should have refused the put, got {rejected}"
    );
    shutdown(nodes).await;
    Ok(())
}

/// Opens a raw `/cpns/1.0.0` stream to `peer`, writes `bytes`, and returns what came back
/// before the other side closed (nothing, for a refused frame).
async fn raw_exchange(
    control: &mut libp2p_stream::Control,
    peer: PeerId,
    bytes: &[u8],
) -> Result<Vec<u8>> {
    let mut stream = control
        .open_stream(peer, CPNS_PROTOCOL)
        .await
        .map_err(|e| anyhow::anyhow!("open stream: {e}"))?;
    // The write may fail half-way when the receiver refuses early: that is the point.
    let _ = stream.write_all(bytes).await;
    let _ = stream.close().await;
    let mut back = Vec::new();
    let _ = timeout(WAIT, stream.read_to_end(&mut back)).await?;
    Ok(back)
}

/// Garbage, truncated, oversized and wrong-version frames on `/cpns/1.0.0` are refused and
/// counted; the node does not panic and keeps answering proper requests.
#[tokio::test]
async fn hostile_frames_are_refused_and_the_node_keeps_serving() -> Result<()> {
    init_tracing();
    let attacker = TestNode::spawn(open_config(), 31).await?;
    let mut victim = TestNode::spawn(open_config(), 32).await?;
    let victim_peer = victim.client.local_peer_id();
    attacker.client.dial(victim.dial_addr().await?).await?;
    let mut control = attacker.client.stream_control();

    let mut garbage = 40u32.to_be_bytes().to_vec();
    garbage.extend_from_slice(&[0, 1]);
    garbage.extend((0..38u8).map(|i| i.wrapping_mul(37).wrapping_add(200)));
    let mut truncated = 1000u32.to_be_bytes().to_vec();
    truncated.extend_from_slice(&[0, 1, 5, 5, 5]);
    let mut oversized = (64u32 * 1024 * 1024).to_be_bytes().to_vec();
    oversized.extend_from_slice(&[0u8; 4096]);
    let mut wrong_version = 4u32.to_be_bytes().to_vec();
    wrong_version.extend_from_slice(&[0x7F, 0x7F, 0, 0]);

    for (name, frame) in [
        ("garbage", &garbage),
        ("truncated", &truncated),
        ("oversized", &oversized),
        ("wrong version", &wrong_version),
    ] {
        let back = raw_exchange(&mut control, victim_peer, frame).await?;
        assert!(back.is_empty(), "{name} frame got an answer: {back:?}");
    }

    // The victim still serves a proper request.
    let victim_client = victim.client.clone();
    let server = tokio::spawn(async move {
        while let Some(ev) = victim.events.recv().await {
            if let Event::InboundRequest {
                message, channel, ..
            } = ev
            {
                let Message::Pn(PnMessage::Ping { nonce }) = message else {
                    continue;
                };
                victim_client
                    .respond(channel, Message::Pn(PnMessage::Pong { nonce }))
                    .await?;
                return Ok::<_, anyhow::Error>(victim);
            }
        }
        bail!("event stream ended")
    });
    let answer = attacker
        .client
        .request(
            victim_peer,
            Protocol::Cpns,
            Message::Pn(PnMessage::Ping { nonce: 5 }),
        )
        .await?;
    assert_eq!(answer, Message::Pn(PnMessage::Pong { nonce: 5 }));
    let victim = timeout(WAIT, server).await???;

    let rejected = victim.client.stats().rejected_messages();
    let total: u64 = rejected.values().sum();
    assert!(
        total >= 4,
        "expected 4 rejected frames, counted {rejected:?}"
    );
    assert!(rejected.contains_key("oversize"), "{rejected:?}");
    assert!(rejected.contains_key("unknown_version"), "{rejected:?}");
    attacker.shutdown().await;
    victim.shutdown().await;
    Ok(())
}

/// A client-mode node provides a key through a server; another client-mode node finds it.
#[tokio::test]
async fn client_mode_nodes_provide_and_find_through_a_server() -> Result<()> {
    init_tracing();
    let server = TestNode::spawn(open_config(), 41).await?;
    let boot = server.dial_addr().await?;
    let client_cfg = Config {
        bootstrap: vec![boot],
        kad_mode: cpns_overlay::KadMode::Client,
        ..open_config()
    };
    let a = TestNode::spawn(client_cfg.clone(), 42).await?;
    let b = TestNode::spawn(client_cfg, 43).await?;
    a.client.wait_routing_table(1, WAIT).await?;
    b.client.wait_routing_table(1, WAIT).await?;
    let key = RecordKey::new(&"/cpns/test/provided");
    a.client.start_providing(key.clone()).await?;
    // The announcement is one-way: the server may store it just after `start_providing`
    // returns. Ask again, within a bound, until it is there.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let found = b.client.get_providers(key.clone(), None).await?;
        if found.providers.contains(&a.client.local_peer_id()) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the client-mode provider was never found: {found:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for n in [server, a, b] {
        n.shutdown().await;
    }
    Ok(())
}

/// Requests on `/cpns/1.0.0` and `/cpns/auth/1.0.0` in flight at once each get their own
/// answer (the two request-response behaviours number their requests independently).
#[tokio::test]
async fn concurrent_requests_on_both_protocols_get_their_own_answers() -> Result<()> {
    init_tracing();
    let a = TestNode::spawn(open_config(), 51).await?;
    let mut b = TestNode::spawn(open_config(), 52).await?;
    a.client.dial(b.dial_addr().await?).await?;
    let b_peer = b.client.local_peer_id();
    let b_client = b.client.clone();
    let server = tokio::spawn(async move {
        while let Some(ev) = b.events.recv().await {
            if let Event::InboundRequest {
                message, channel, ..
            } = ev
            {
                let answer = match message {
                    Message::Pn(PnMessage::Ping { nonce }) => {
                        Message::Pn(PnMessage::Pong { nonce })
                    }
                    Message::Auth(cpns_overlay::AuthMessage::RevocationsRequest {
                        known_version,
                    }) => Message::Auth(cpns_overlay::AuthMessage::UsageAck {
                        accepted: known_version as u32,
                    }),
                    _ => Message::Ack,
                };
                let _ = b_client.respond(channel, answer).await;
            }
        }
        b
    });
    let mut calls = Vec::new();
    for i in 0..20u64 {
        let c = a.client.clone();
        calls.push(tokio::spawn(async move {
            let pong = c
                .request(
                    b_peer,
                    Protocol::Cpns,
                    Message::Pn(PnMessage::Ping { nonce: i }),
                )
                .await?;
            anyhow::ensure!(
                pong == Message::Pn(PnMessage::Pong { nonce: i }),
                "ping {i} got {pong:?}"
            );
            Ok(())
        }));
        let c = a.client.clone();
        calls.push(tokio::spawn(async move {
            let ack = c
                .request(
                    b_peer,
                    Protocol::Auth,
                    Message::Auth(cpns_overlay::AuthMessage::RevocationsRequest {
                        known_version: 1000 + i,
                    }),
                )
                .await?;
            let want = Message::Auth(cpns_overlay::AuthMessage::UsageAck {
                accepted: 1000 + i as u32,
            });
            anyhow::ensure!(ack == want, "auth request {i} got {ack:?}");
            Ok(())
        }));
    }
    for c in calls {
        timeout(WAIT, c).await???;
    }
    a.shutdown().await;
    server.abort();
    Ok(())
}

/// A flood of addresses for one peer (a registration's `listen_addrs`: about 170,000 fit in
/// one frame) leaves at most 8 of them in the swarm and the routing table, and the node goes
/// on answering (issue 14). Before the fix every address went into kad's list of the peer,
/// each insert scanning that list.
#[tokio::test]
async fn an_address_flood_keeps_eight_addresses_per_peer() -> Result<()> {
    init_tracing();
    let nodes = mesh(2, open_config()).await?;
    let victim = &nodes[0].client;
    let peer = nodes[1].client.local_peer_id();
    for port in 0..20_000u32 {
        let addr: libp2p::Multiaddr = format!("/ip4/127.0.0.1/tcp/{}", 1024 + port).parse()?;
        victim.add_address(peer, addr).await?;
    }
    let known = timeout(WAIT, victim.peer_addresses(peer)).await??;
    // Eight remembered, plus the one the connection came from and identify's own.
    assert!(known.len() <= 8 + 2, "{} addresses kept", known.len());
    // Still serving: a DHT round trip between the two works.
    let key = RecordKey::new(&"/cpns/test/after-flood");
    nodes[1]
        .client
        .put_record(Record::new(key.clone(), b"ok".to_vec()), Quorum::One)
        .await?;
    assert_eq!(
        timeout(WAIT, victim.local_record(key))
            .await??
            .map(|r| r.value),
        Some(b"ok".to_vec())
    );
    shutdown(nodes).await;
    Ok(())
}

/// A burst of honest streams a few milliseconds apart is handed to the application whole,
/// even when the application starts taking them only after the burst (issue 14: the stream
/// layer's hand-off held one stream and dropped the rest with "Channel is full").
#[tokio::test]
async fn a_burst_of_streams_reaches_the_acceptor() -> Result<()> {
    init_tracing();
    const BURST: usize = 32;
    let proto = libp2p::StreamProtocol::new("/cpns/test/burst/1.0.0");
    let a = TestNode::spawn(open_config(), 41).await?;
    let b = TestNode::spawn(open_config(), 42).await?;
    let mut incoming = a.client.stream_control().accept(proto.clone())?;
    let peer = b.client.dial(a.dial_addr().await?).await?;
    b.client.wait_routing_table(1, WAIT).await?;
    let mut control = b.client.stream_control();
    let mut opened = Vec::new();
    for i in 0..BURST {
        let mut s = timeout(WAIT, control.open_stream(peer, proto.clone())).await??;
        s.write_all(&[i as u8]).await?;
        s.flush().await?;
        opened.push(s);
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
    // Wait until the last one reached A's stream layer: A's swarm handles streams in order,
    // so once a probe on another protocol is answered, every stream above was handed off.
    let _ = b
        .client
        .get_record(RecordKey::new(&"/cpns/test/probe"), true)
        .await;
    // Only now does A take them (and echo each byte).
    let echo = tokio::spawn(async move {
        let mut n = 0;
        while n < BURST {
            let Ok(Some((_, mut s))) = timeout(WAIT, incoming.next()).await else {
                break;
            };
            let mut byte = [0u8; 1];
            if s.read_exact(&mut byte).await.is_ok() {
                let _ = s.write_all(&byte).await;
                let _ = s.close().await;
            }
            n += 1;
        }
        n
    });
    let mut echoed = 0;
    for (i, mut s) in opened.into_iter().enumerate() {
        let mut byte = [0u8; 1];
        if timeout(WAIT, s.read_exact(&mut byte))
            .await
            .is_ok_and(|r| r.is_ok())
            && byte[0] == i as u8
        {
            echoed += 1;
        }
    }
    assert_eq!(echoed, BURST, "streams of the burst answered");
    assert_eq!(echo.await?, BURST);
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}

/// Issue 14: expired provider records of others are purged periodically, not only when their
/// key is looked up (group keyword keys change every epoch and are never looked up again).
/// The node's own provider records are counted apart.
#[tokio::test]
async fn expired_provider_records_of_others_are_purged_without_a_lookup() -> Result<()> {
    init_tracing();
    let cfg = Config {
        record_ttl: Some(std::time::Duration::from_secs(2)),
        purge_interval: std::time::Duration::from_millis(100),
        ..open_config()
    };
    let nodes = mesh(2, cfg).await?;
    let (store, announcer) = (&nodes[0].client, &nodes[1].client);
    for i in 0..10u8 {
        announcer.start_providing(RecordKey::new(&[i; 32])).await?;
    }
    store.start_providing(RecordKey::new(&[99; 32])).await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seen = 0;
    loop {
        let u = store.store_usage().await?;
        seen = seen.max(u.remote_provider_records);
        if seen == 10 && u.remote_provider_records == 0 {
            assert_eq!(u.own_provider_keys, 1, "{u:?}");
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("remote provider records never purged: {u:?}, {seen} seen");
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    shutdown(nodes).await;
    Ok(())
}
