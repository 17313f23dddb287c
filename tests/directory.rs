//! Integration tests: the Metadata Directory over real overlay nodes on loopback (5.6.4,
//! Appendix E). Every node runs a `cpns_directory::Directory` with its `Validator` installed
//! in the overlay, and answers directory messages as a node does.
#![allow(clippy::unwrap_used)]

use std::collections::HashSet;
use std::time::Duration;

use cpns_directory::test_utils::{Mesh, MeshNode, NodeOptions, node_identity};
use cpns_directory::{
    Config, Found, PublishError, Query, Requirements, Scope, ServiceDraft, Visibility,
};
use cpns_keys::{GroupId, GroupKey};
use cpns_overlay::{
    Capabilities, DirectoryMessage, Message, NodeMode, PnInventorySummary, Protocol, Quorum,
    Record, RecordKey,
};

use crate::util::{WAIT, init_tracing};

/// Overlay settings of the test meshes: loopback, no mDNS, and directory lookups answered
/// without Entity Registration first (the gated case has its own test).
fn overlay() -> cpns_overlay::Config {
    cpns_overlay::Config {
        gate_requests: false,
        ..cpns_overlay::Config::default()
    }
}

async fn mesh(n: usize) -> Mesh {
    Mesh::start(n, overlay(), Config::default(), WAIT)
        .await
        .unwrap()
}

fn public(name: &str, keywords: &[&str]) -> ServiceDraft {
    ServiceDraft::new(name, keywords.iter().copied(), Visibility::Public)
}

fn ids(found: &[Found]) -> HashSet<String> {
    found.iter().map(|f| f.description.id.clone()).collect()
}

/// Polls `f` every 50 ms until it returns true or `WAIT` passes.
pub async fn eventually<F, Fut>(mut f: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until `dir` finds service `id` by `keywords`. Provider announcements are
/// one-way Kademlia messages, so a discovery racing a publish by a few milliseconds may miss
/// it; tests call this once before asserting what every node sees.
async fn settled(dir: &cpns_directory::Directory, keywords: &[&str], id: &str) {
    let q = Query::keywords(keywords.iter().copied());
    let ok = eventually(|| {
        let q = q.clone();
        async move {
            dir.find(&q)
                .await
                .is_ok_and(|d| d.services.iter().any(|f| f.description.id == id))
        }
    })
    .await;
    assert!(ok, "{id} never found by {keywords:?}");
}

/// The issue's main scenario: in a 32-node mesh one node publishes and every other one finds
/// the service by keyword, with figures, and by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_node_of_32_finds_a_published_service() {
    init_tracing();
    let mesh = mesh(32).await;
    let publisher = &mesh.nodes[5];
    let mut draft = public("Jazz radio", &["Jazz", "  Internet   Radio "]);
    draft.offers = "live jazz, 24/7".into();
    let desc = publisher.directory.publish(draft).await.unwrap();
    assert_eq!(desc.keywords, vec!["jazz", "internet radio"]);
    assert_eq!(desc.publisher, publisher.peer);
    settled(&mesh.nodes[0].directory, &["jazz"], &desc.id).await;

    let mut requests = Vec::new();
    for (i, node) in mesh.nodes.iter().enumerate() {
        if i == 5 {
            continue;
        }
        let found = node
            .directory
            .find(&Query::keywords(["JAZZ"]))
            .await
            .unwrap();
        assert_eq!(
            ids(&found.services),
            HashSet::from([desc.id.clone()]),
            "node {i}"
        );
        assert_eq!(found.services[0].description, desc);
        assert_eq!(found.services[0].from_peer, Some(publisher.peer));
        assert!(found.figures.requests >= 1 && found.figures.lookups >= 1);
        requests.push(found.figures.requests);
        let by_id = node.directory.get(&desc.id).await.unwrap().unwrap();
        assert_eq!(by_id.description, desc);
    }
    assert_eq!(requests.len(), 31);
    let own = publisher
        .directory
        .find(&Query::keywords(["internet radio"]))
        .await
        .unwrap();
    assert_eq!(own.services[0].from_peer, None);
    mesh.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_keywords_must_all_match_and_capabilities_filter() {
    init_tracing();
    let mesh = mesh(10).await;
    let n = &mesh.nodes;
    let a = n[1]
        .directory
        .publish(public("A", &["jazz", "radio"]))
        .await
        .unwrap();
    let mut b = public("B", &["jazz", "tv"]);
    b.requirements = Requirements {
        needs_screen: true,
        ..Requirements::default()
    };
    let b = n[2].directory.publish(b).await.unwrap();
    let c = n[1]
        .directory
        .publish(public("C", &["radio", "news"]))
        .await
        .unwrap();
    let d = n[3]
        .directory
        .publish(public("D", &["jazz", "radio", "news"]))
        .await
        .unwrap();
    let finder = &n[7].directory;
    // Provider announcements are one-way Kademlia messages: a discovery racing the last
    // publish by a few milliseconds may not see it yet, so wait (bounded) for the full set.
    let expect = |k: &'static [&'static str], want: HashSet<String>| async move {
        let mut got = HashSet::new();
        let ok = eventually(|| {
            let want = want.clone();
            async move {
                let found = finder
                    .find(&Query::keywords(k.iter().copied()))
                    .await
                    .unwrap();
                ids(&found.services) == want
            }
        })
        .await;
        if !ok {
            got = ids(&finder
                .find(&Query::keywords(k.iter().copied()))
                .await
                .unwrap()
                .services);
        }
        assert!(ok, "{k:?}: found {got:?}, want {want:?}");
    };
    expect(
        &["jazz", "radio"],
        HashSet::from([a.id.clone(), d.id.clone()]),
    )
    .await;
    expect(
        &["jazz"],
        HashSet::from([a.id.clone(), b.id.clone(), d.id.clone()]),
    )
    .await;
    expect(
        &["radio", "news"],
        HashSet::from([c.id.clone(), d.id.clone()]),
    )
    .await;
    expect(&["jazz", "radio", "news"], HashSet::from([d.id.clone()])).await;
    assert!(
        finder
            .find(&Query::keywords(["opera"]))
            .await
            .unwrap()
            .services
            .is_empty()
    );

    // Without a screen, B is filtered out.
    let caps = Capabilities {
        mode: NodeMode::Pne,
        ..Capabilities::default()
    };
    let q = Query {
        capabilities: Some(caps),
        ..Query::keywords(["jazz"])
    };
    assert_eq!(
        ids(&finder.find(&q).await.unwrap().services),
        HashSet::from([a.id.clone(), d.id.clone()])
    );
    mesh.shutdown().await;
}

/// A record with a valid shape but a bad signature, and a record of a revoked entity, are
/// stored by no node and found by nobody; the validators count them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_and_revoked_records_are_stored_by_no_node() {
    init_tracing();
    let mesh = mesh(12).await;
    let n = &mesh.nodes;
    let honest = n[2]
        .directory
        .publish(public("Honest", &["honest"]))
        .await
        .unwrap();
    let key = n[2].directory.service_record_key(&honest).unwrap();
    let good = n[2]
        .client
        .local_record(RecordKey::new(&key))
        .await
        .unwrap()
        .unwrap()
        .value;

    // Forge: the same record with one signature bit flipped, put by another node under the
    // honest key.
    let mut forged = good.clone();
    let len = forged.len();
    forged[len - 1] ^= 0x01;
    let attacker = &n[9];
    let forged_key = RecordKey::new(&key);
    // Kademlia acknowledges every PUT_VALUE (the validator runs after the answer), so the put
    // itself "succeeds"; what matters is what the peers stored.
    let _ = attacker
        .client
        .put_record(Record::new(forged_key.clone(), forged.clone()), Quorum::One)
        .await;
    for (i, node) in n.iter().enumerate() {
        if i == 9 {
            continue;
        }
        let stored = node.client.local_record(forged_key.clone()).await.unwrap();
        assert!(
            stored.is_none_or(|r| r.value != forged),
            "node {i} stored the forgery"
        );
    }
    let rejected: u64 = n
        .iter()
        .map(|m| {
            m.validator
                .rejected()
                .get("bad_signature")
                .copied()
                .unwrap_or(0)
        })
        .sum();
    assert!(rejected >= 1);

    // Revoke node 4 (serial 5) everywhere (as the PN gossip does), then let it publish.
    let list = mesh.ca.revoke(1, &[5]);
    for node in n {
        assert!(node.trust.update_revocations(list.clone()));
    }
    let _ = n[4]
        .directory
        .publish(public("Revoked", &["revoked-svc"]))
        .await;
    let desc = n[4].directory.local_services().pop().unwrap();
    let rkey = RecordKey::new(&n[4].directory.service_record_key(&desc).unwrap());
    for (i, node) in n.iter().enumerate() {
        if i != 4 {
            assert!(
                node.client
                    .local_record(rkey.clone())
                    .await
                    .unwrap()
                    .is_none()
            );
        }
    }
    let revoked_count: u64 = n
        .iter()
        .map(|m| m.validator.rejected().get("revoked").copied().unwrap_or(0))
        .sum();
    assert!(revoked_count >= 1);
    let found = n[0]
        .directory
        .find(&Query::keywords(["revoked-svc"]))
        .await
        .unwrap();
    assert!(found.services.is_empty());
    assert!(n[0].directory.get(&desc.id).await.unwrap().is_none());
    // The honest service is still there.
    assert_eq!(
        ids(&n[0]
            .directory
            .find(&Query::keywords(["honest"]))
            .await
            .unwrap()
            .services),
        HashSet::from([honest.id])
    );
    mesh.shutdown().await;
}

/// The record is replicated: with the peers closest to its key gone, it is still found, by
/// keyword and by id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_survives_the_loss_of_its_closest_peers() {
    init_tracing();
    let o = cpns_overlay::Config {
        replication_factor: 6,
        ..overlay()
    };
    let mesh = Mesh::start(16, o, Config::default(), WAIT).await.unwrap();
    let Mesh { ca, nodes } = mesh;
    let desc = nodes[0]
        .directory
        .publish(public("Printer", &["printer"]))
        .await
        .unwrap();
    let key = nodes[0].directory.service_record_key(&desc).unwrap();
    let target = libp2p::kad::KBucketKey::new(key.clone());
    settled(&nodes[1].directory, &["printer"], &desc.id).await;
    // The peers holding a replica, closest to the key first.
    let mut holders = Vec::new();
    for m in nodes.iter().skip(1) {
        if m.client
            .local_record(RecordKey::new(&key))
            .await
            .unwrap()
            .is_some()
        {
            let d = target.distance(&libp2p::kad::KBucketKey::from(m.peer));
            holders.push((m.peer, d));
        }
    }
    holders.sort_by_key(|(_, d)| *d);
    assert!(holders.len() >= 4, "replicated to {} peers", holders.len());
    // Stop the three closest replicas.
    let gone: HashSet<cpns_keys::PeerId> = holders.iter().take(3).map(|(p, _)| *p).collect();
    let (stopped, rest): (Vec<MeshNode>, Vec<MeshNode>) =
        nodes.into_iter().partition(|m| gone.contains(&m.peer));
    let nodes = rest;
    for s in stopped {
        s.shutdown().await;
    }
    // A finder that holds no replica itself.
    let mut finder = None;
    for (i, m) in nodes.iter().enumerate().skip(1) {
        if m.client
            .local_record(RecordKey::new(&key))
            .await
            .unwrap()
            .is_none()
        {
            finder = Some(i);
        }
    }
    let finder = &nodes[finder.expect("most of 16 nodes hold no replica with k = 6")];
    let found = finder.directory.get(&desc.id).await.unwrap().unwrap();
    assert_eq!(found.description, desc);
    assert!(found.from_peer.is_some());
    let by_kw = finder
        .directory
        .find(&Query::keywords(["printer"]))
        .await
        .unwrap();
    assert_eq!(ids(&by_kw.services), HashSet::from([desc.id.clone()]));
    Mesh { ca, nodes }.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unpublish_and_expiry_make_a_service_disappear() {
    init_tracing();
    let mesh = mesh(8).await;
    let n = &mesh.nodes;
    let desc = n[1]
        .directory
        .publish(public("Scanner", &["scanner"]))
        .await
        .unwrap();
    let finder = &n[6].directory;
    settled(finder, &["scanner"], &desc.id).await;
    assert_eq!(
        finder
            .find(&Query::keywords(["scanner"]))
            .await
            .unwrap()
            .services
            .len(),
        1
    );
    assert!(finder.get(&desc.id).await.unwrap().is_some());

    n[1].directory.unpublish(&desc.id).await.unwrap();
    assert!(n[1].directory.local_services().is_empty());
    assert!(
        finder
            .find(&Query::keywords(["scanner"]))
            .await
            .unwrap()
            .services
            .is_empty()
    );
    assert!(
        finder.get(&desc.id).await.unwrap().is_none(),
        "the tombstone replaced it"
    );
    assert!(matches!(
        n[1].directory.unpublish(&desc.id).await,
        Err(PublishError::NotFound(_))
    ));

    // A service offered for two seconds.
    let mut draft = public("Flash sale", &["flash"]);
    draft.ttl = Some(Duration::from_secs(2));
    let flash = n[2].directory.publish(draft).await.unwrap();
    assert!(flash.expires <= flash.published + 2);
    settled(finder, &["flash"], &flash.id).await;
    assert_eq!(
        finder
            .find(&Query::keywords(["flash"]))
            .await
            .unwrap()
            .services
            .len(),
        1
    );
    assert!(
        eventually(|| async {
            finder
                .find(&Query::keywords(["flash"]))
                .await
                .unwrap()
                .services
                .is_empty()
                && finder.get(&flash.id).await.unwrap().is_none()
        })
        .await,
        "an expired service is still found"
    );
    // Its publisher drops it at the next republish.
    assert_eq!(n[2].directory.republish_all().await.unwrap(), 0);
    assert!(n[2].directory.local_services().is_empty());
    mesh.shutdown().await;
}

/// A node's services live in its sled database: published while the node was alone (so not
/// replicated), they reach the DHT when the restarted node republishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_node_republishes_its_services() {
    init_tracing();
    let dir = tempfile::tempdir().unwrap();
    let ca = cpns_directory::test_utils::Ca::new(0xca);
    let identity = node_identity(1000);
    let mut opts = NodeOptions::new(overlay(), Config::default());
    opts.db_path = Some(dir.path().join("db"));
    opts.serial = 1000;
    let lonely = MeshNode::spawn(&ca, identity.clone(), opts.clone())
        .await
        .unwrap();
    let result = lonely
        .directory
        .publish(public("Photo frame", &["photos"]))
        .await;
    assert!(matches!(result, Err(PublishError::NotReplicated(_))));
    let desc = lonely.directory.local_services().pop().unwrap();
    lonely.shutdown().await;

    let mesh = mesh(8).await;
    assert!(
        mesh.nodes[3]
            .directory
            .find(&Query::keywords(["photos"]))
            .await
            .unwrap()
            .services
            .is_empty()
    );
    opts.overlay.bootstrap = vec![mesh.nodes[0].addr.clone()];
    let restarted = MeshNode::spawn(&ca, identity, opts).await.unwrap();
    assert_eq!(restarted.directory.local_services(), vec![desc.clone()]);
    restarted.client.wait_routing_table(4, WAIT).await.unwrap();
    // The directory's background task republishes at once when it starts.
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(restarted.directory.clone().run(cancel.clone()));
    settled(&mesh.nodes[3].directory, &["photos"], &desc.id).await;
    cancel.cancel();
    task.await.unwrap();
    let found = mesh.nodes[3]
        .directory
        .find(&Query::keywords(["photos"]))
        .await
        .unwrap();
    assert_eq!(ids(&found.services), HashSet::from([desc.id.clone()]));
    assert!(found.services[0].description.expires >= desc.expires);
    restarted.shutdown().await;
    mesh.shutdown().await;
}

/// A Kademlia client (a PNE) whose routing table holds nobody (right after the PN formed,
/// before identify and the credential exchange put its gateway there) publishes through its
/// home server, its PN gateway, directly: the put needs no lookup. The same publish without
/// the home server fails the quorum (issue 16 item 0: "saved locally but not replicated").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kademlia_client_publishes_through_its_home_server_with_an_empty_routing_table() {
    init_tracing();
    let mesh = mesh(1).await;
    let gateway = &mesh.nodes[0];
    let mut opts = NodeOptions::new(
        cpns_overlay::Config {
            kad_mode: cpns_overlay::KadMode::Client,
            ..overlay()
        },
        Config::default(),
    );
    opts.serial = 500;
    let pne = MeshNode::spawn(&mesh.ca, node_identity(500), opts)
        .await
        .unwrap();
    pne.client.dial(gateway.addr.clone()).await.unwrap();
    assert_eq!(pne.client.wait_routing_table(1, WAIT).await.unwrap(), 1);
    // The state a PNE can be in at its first publish: connected, nobody in the table.
    pne.client.forget_dht_peer(gateway.peer).await.unwrap();
    assert_eq!(pne.client.routing_table_size().await.unwrap(), 0);
    let without = pne
        .directory
        .publish(public("Thermostat", &["heating"]))
        .await;
    assert!(
        matches!(without, Err(PublishError::NotReplicated(_))),
        "{without:?}"
    );
    pne.directory.set_home_servers(vec![gateway.peer]).await;
    let desc = pne
        .directory
        .publish(public("Radiator", &["radiator"]))
        .await
        .unwrap();
    // The gateway holds the record: it finds the service by id from its own store.
    let found = gateway.directory.get(&desc.id).await.unwrap();
    assert_eq!(found.map(|f| f.description.id), Some(desc.id.clone()));
    pne.shutdown().await;
    mesh.shutdown().await;
}

/// PN visibility: a member finds the PN's service; a node of another household stores and
/// routes the sealed record but can neither read it nor find it by keyword.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pn_services_are_sealed_from_other_households() {
    init_tracing();
    let mesh = mesh(8).await;
    let n = &mesh.nodes;
    let pn = GroupId("pn:1f3a".into());
    let key = GroupKey::generate(pn.clone(), 0);
    for member in [&n[1], &n[2]] {
        member.keys.insert(key.clone());
    }
    let other_pn = GroupKey::generate(GroupId("pn:9999".into()), 0);
    n[5].keys.insert(other_pn);

    let mut draft = ServiceDraft::new(
        "Grandma's photos",
        ["holiday pictures", "family"],
        Visibility::Pn(pn.clone()),
    );
    draft.offers = "the family album".into();
    let desc = n[1].directory.publish(draft).await.unwrap();

    // A member finds it, in every scope that includes the PN.
    settled(&n[2].directory, &["holiday pictures"], &desc.id).await;
    for scope in [Scope::All, Scope::Group(pn.clone())] {
        let q = Query {
            scope,
            ..Query::keywords(["Holiday Pictures"])
        };
        let found = n[2].directory.find(&q).await.unwrap();
        assert_eq!(ids(&found.services), HashSet::from([desc.id.clone()]));
        assert_eq!(
            found.services[0].description.visibility,
            Visibility::Pn(pn.clone())
        );
    }
    assert_eq!(
        n[2].directory
            .get(&desc.id)
            .await
            .unwrap()
            .unwrap()
            .description,
        desc
    );
    let public_only = Query {
        scope: Scope::Public,
        ..Query::keywords(["holiday pictures"])
    };
    assert!(
        n[2].directory
            .find(&public_only)
            .await
            .unwrap()
            .services
            .is_empty()
    );

    // Another household: nothing.
    for stranger in [&n[5], &n[6]] {
        let found = stranger
            .directory
            .find(&Query::keywords(["holiday pictures"]))
            .await
            .unwrap();
        assert!(found.services.is_empty());
        assert!(stranger.directory.get(&desc.id).await.unwrap().is_none());
    }
    // ...though strangers store the sealed record, which holds none of it in clear.
    let rkey = RecordKey::new(&n[1].directory.service_record_key(&desc).unwrap());
    let mut stored_by_strangers = 0;
    for stranger in [&n[0], &n[3], &n[4], &n[5], &n[6], &n[7]] {
        if let Some(r) = stranger.client.local_record(rkey.clone()).await.unwrap() {
            stored_by_strangers += 1;
            for needle in [
                "Grandma",
                "holiday",
                "pictures",
                "family",
                "album",
                desc.id.as_str(),
            ] {
                assert!(
                    !r.value
                        .windows(needle.len())
                        .any(|w| w == needle.as_bytes()),
                    "{needle:?} in clear in a stored sealed record"
                );
            }
        }
    }
    assert!(
        stored_by_strangers >= 1,
        "strangers store and route sealed records"
    );
    let sealed = n[1].directory.advertisement(&desc).unwrap();
    let DirectoryMessage::Advertise { record } = sealed else {
        panic!("an advertisement")
    };
    assert!(n[5].directory.open_advertisement(&record).is_err());
    assert_eq!(n[2].directory.open_advertisement(&record).unwrap(), desc);
    mesh.shutdown().await;
}

/// After a key rotation, members find a service under the previous epoch until the publisher
/// republishes it under the new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_rotation_republishes_under_the_new_epoch() {
    init_tracing();
    let mesh = mesh(8).await;
    let n = &mesh.nodes;
    let pn = GroupId("pn:77".into());
    let k0 = GroupKey::generate(pn.clone(), 0);
    for m in [&n[1], &n[2]] {
        m.keys.insert(k0.clone());
    }
    let desc = n[1]
        .directory
        .publish(ServiceDraft::new(
            "NAS",
            ["storage"],
            Visibility::Pn(pn.clone()),
        ))
        .await
        .unwrap();
    settled(&n[2].directory, &["storage"], &desc.id).await;
    let k1 = k0.rotate();
    for m in [&n[1], &n[2]] {
        m.keys.insert(k1.clone());
    }
    let q = Query::keywords(["storage"]);
    assert_eq!(
        ids(&n[2].directory.find(&q).await.unwrap().services),
        HashSet::from([desc.id.clone()])
    );
    assert_eq!(n[1].directory.republish_all().await.unwrap(), 1);
    // Only epoch 1 known now: still found, under the new epoch's keys.
    n[2].keys.remove(&pn);
    n[2].keys.insert(k1);
    settled(&n[2].directory, &["storage"], &desc.id).await;
    let found = n[2].directory.find(&q).await.unwrap();
    assert_eq!(ids(&found.services), HashSet::from([desc.id.clone()]));
    mesh.shutdown().await;
}

/// Advertise (5.6.4.2): a subscriber hears of a new matching PN service through its gateway,
/// without polling.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscribers_hear_of_new_services_through_the_gateway() {
    init_tracing();
    let mesh = mesh(4).await;
    let n = &mesh.nodes;
    let (gateway, subscriber, publisher) = (&n[0], &n[1], &n[2]);
    let pn = GroupId("pn:ad".into());
    let key = GroupKey::generate(pn.clone(), 0);
    for m in [gateway, subscriber, publisher] {
        m.keys.insert(key.clone());
    }
    let mut heard = subscriber.directory.subscribe_local();
    let subs = subscriber.directory.subscription("Movies", &Scope::All);
    assert_eq!(subs.len(), 2, "public and PN keyword keys");
    for s in subs {
        let answer = subscriber
            .client
            .request(gateway.peer, Protocol::Cpns, Message::Directory(s))
            .await
            .unwrap();
        assert_eq!(answer, Message::Ack);
    }
    let desc = publisher
        .directory
        .publish(ServiceDraft::new(
            "Film night",
            ["movies"],
            Visibility::Pn(pn.clone()),
        ))
        .await
        .unwrap();
    let advert = publisher.directory.advertisement(&desc).unwrap();
    let answer = publisher
        .client
        .request(gateway.peer, Protocol::Cpns, Message::Directory(advert))
        .await
        .unwrap();
    assert_eq!(answer, Message::Ack);
    let got = tokio::time::timeout(WAIT, heard.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, desc);

    // Garbage is refused with an error reply, never a panic.
    for junk in [vec![], vec![0xff; 10], vec![1; 100_000]] {
        let reply = gateway.directory.handle(
            subscriber.peer,
            DirectoryMessage::Advertise { record: junk },
        );
        assert!(matches!(reply, Message::Error(_)));
    }
    let reply = gateway.directory.handle(
        subscriber.peer,
        DirectoryMessage::Subscribe {
            keyword: vec![1; 3],
        },
    );
    assert!(matches!(reply, Message::Error(_)));
    mesh.shutdown().await;
}

/// A publisher that went offline cannot be asked directly; its services are still found,
/// until they expire, through its publisher index in the DHT (written shortly after the
/// publish) and the replicas of their records.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_offline_publishers_services_are_found_through_its_index() {
    init_tracing();
    let o = cpns_overlay::Config {
        replication_factor: 4,
        ..overlay()
    };
    let mesh = Mesh::start(10, o, Config::default(), WAIT).await.unwrap();
    let Mesh { ca, mut nodes } = mesh;
    let a = nodes[1]
        .directory
        .publish(public("Lamp", &["light"]))
        .await
        .unwrap();
    let b = nodes[1]
        .directory
        .publish(public("Other", &["heating"]))
        .await
        .unwrap();
    // Wait until the (coalesced) index is stored by other nodes, then switch the publisher
    // off.
    let index = RecordKey::new(&cpns_directory::test_utils::public_index_key(
        &nodes[1].peer,
    ));
    let others: Vec<cpns_overlay::Client> = nodes
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 1)
        .map(|(_, m)| m.client.clone())
        .collect();
    assert!(
        eventually(|| {
            let (others, index) = (others.clone(), index.clone());
            async move {
                let mut holders = 0;
                for c in &others {
                    if c.local_record(index.clone()).await.unwrap().is_some() {
                        holders += 1;
                    }
                }
                holders >= 2
            }
        })
        .await
    );
    let publisher = nodes.remove(1);
    publisher.shutdown().await;

    // A finder holding no replica of the record, so that it comes from another node.
    let key = RecordKey::new(&cpns_directory::test_utils::public_service_key(&a.id));
    let mut finder = None;
    for m in nodes.iter().skip(1) {
        if m.client.local_record(key.clone()).await.unwrap().is_none() {
            finder = Some(m);
        }
    }
    let finder = finder.expect("with k = 4, most nodes hold no replica");
    let found = finder
        .directory
        .find(&Query::keywords(["light"]))
        .await
        .unwrap();
    assert_eq!(
        ids(&found.services),
        HashSet::from([a.id.clone()]),
        "{:?}",
        found.figures
    );
    assert!(
        found.figures.lookups >= 3,
        "providers, index and record lookups: {:?}",
        found.figures
    );
    assert!(found.services[0].from_peer.is_some());
    assert!(!ids(&found.services).contains(&b.id));
    Mesh { ca, nodes }.shutdown().await;
}

/// The other signed records: the CA's revocation list and a gateway's PN summary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_lists_and_pn_summaries_travel_through_the_dht() {
    init_tracing();
    let mesh = mesh(6).await;
    let n = &mesh.nodes;
    let list = mesh.ca.revoke(4, &[42, 43]);
    n[0].directory.publish_revocations(&list).await.unwrap();
    let fetched = n[4].directory.fetch_revocations().await.unwrap().unwrap();
    assert_eq!(fetched, list);
    // Nodes that stored it took it into their trust.
    assert!(
        n.iter()
            .filter(|m| m.trust.revocations_version() == 4)
            .count()
            >= 2
    );
    // A list not signed by the CA is refused.
    let rogue = cpns_directory::test_utils::Ca::new(0x66).revoke(9, &[1]);
    assert!(n[0].directory.publish_revocations(&rogue).await.is_err());

    let summary = PnInventorySummary {
        pn_id: "pn-00000000000000aa".into(),
        owner: "user-2".into(),
        gateway: n[1].peer,
        epoch: 0,
        members: vec![],
        services: vec!["svc-1".into()],
        updated: 1,
        details: vec![],
        admins: vec![],
    };
    n[1].directory.publish_pn_summary(&summary).await.unwrap();
    let got = n[5]
        .directory
        .fetch_pn_summary("pn-00000000000000aa")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, summary);
    assert!(
        n[5].directory
            .fetch_pn_summary("pn-none")
            .await
            .unwrap()
            .is_none()
    );
    // Only the owner's gateway may sign it.
    let mut stolen = summary.clone();
    stolen.gateway = n[2].peer;
    assert!(matches!(
        n[2].directory.publish_pn_summary(&stolen).await,
        Err(PublishError::Forbidden(_))
    ));
    mesh.shutdown().await;
}

/// A plain libp2p Kademlia client (not a CPNS overlay, so it knows nothing of the credential
/// exchange) with a fresh identity, announcing itself as provider of `keys` through `target`.
/// Returns once every announcement went out and a last lookup was answered by `target`; the
/// returned task keeps the client's connections open (abort it to stop the client).
async fn plain_kad_announce(
    target: &libp2p::Multiaddr,
    keys: Vec<Vec<u8>>,
) -> tokio::task::JoinHandle<()> {
    use futures::StreamExt;
    use libp2p::kad;
    use libp2p::swarm::SwarmEvent;
    let key = libp2p::identity::Keypair::generate_ed25519();
    let local = key.public().to_peer_id();
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            libp2p::tcp::Config::default(),
            libp2p::noise::Config::new,
            libp2p::yamux::Config::default,
        )
        .unwrap()
        .with_behaviour(|_| {
            let store = kad::store::MemoryStore::with_config(
                local,
                kad::store::MemoryStoreConfig {
                    max_provided_keys: 1 << 20,
                    ..Default::default()
                },
            );
            kad::Behaviour::with_config(local, store, kad::Config::new(cpns_overlay::KAD_PROTOCOL))
        })
        .unwrap()
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(300)))
        .build();
    swarm.behaviour_mut().set_mode(Some(kad::Mode::Client));
    let peer = cpns_overlay::peer_of(target).unwrap();
    swarm.behaviour_mut().add_address(&peer, target.clone());
    for k in &keys {
        swarm
            .behaviour_mut()
            .start_providing(RecordKey::new(k))
            .unwrap();
    }
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        let mut left = keys.len();
        let mut done = Some(done_tx);
        let mut last = None;
        loop {
            let event = swarm.select_next_some().await;
            if let SwarmEvent::Behaviour(kad::Event::OutboundQueryProgressed {
                id,
                result,
                step,
                ..
            }) = event
            {
                match result {
                    kad::QueryResult::StartProviding(_) if step.last => {
                        left -= 1;
                        if left == 0 {
                            // A last round trip: the announcements are on the wire before it.
                            last = Some(swarm.behaviour_mut().get_closest_peers(local));
                        }
                    }
                    kad::QueryResult::GetClosestPeers(_) if Some(id) == last => {
                        if let Some(tx) = done.take() {
                            let _ = tx.send(());
                        }
                    }
                    _ => {}
                }
            }
        }
    });
    tokio::time::timeout(WAIT, done_rx)
        .await
        .expect("plain kad client: announcements never finished")
        .unwrap();
    task
}

/// Waits (bounded) until `client` has served no new DHT request for three polls in a row:
/// every announcement sent to it has been handled.
async fn quiesce(client: &cpns_overlay::Client) {
    let deadline = tokio::time::Instant::now() + WAIT;
    let served = || {
        client
            .stats()
            .dht_requests_served
            .load(std::sync::atomic::Ordering::Relaxed)
    };
    let (mut last, mut calm) = (served(), 0);
    while calm < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = served();
        calm = if now == last { calm + 1 } else { 0 };
        last = now;
    }
}

fn random_keys(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|_| cpns_keys::EuKey::generate().to_bytes().to_vec())
        .collect()
}

/// Issue 14, provider store fill: fresh identities from a plain libp2p Kademlia client
/// announce random keys and crowd a public keyword; enrolled-but-hostile nodes do the same
/// with valid credentials. Afterwards the attacked gateway's own publish succeeds and every
/// honest service is found by keyword. The bounds are scaled down (256 own keys, 8 providers
/// per key, 256 remote provider records) so that the attack is small; at the defaults it is
/// the same with 16 times the numbers. Before the fix, 3 fresh identities with 100 keys each
/// filled the store (one bound for everyone, the node's own included): the gateway's publish
/// failed with "local store refused", and 10 fresh identities took every slot of the keyword.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_flood_neither_blocks_the_gateway_nor_hides_honest_services() {
    init_tracing();
    let o = cpns_overlay::Config {
        max_provided_keys: 256,
        max_providers_per_key: 8,
        max_provider_records: 256,
        max_provider_records_per_peer: 128,
        ..overlay()
    };
    let mesh = Mesh::start(4, o, Config::default(), WAIT).await.unwrap();
    let gw = &mesh.nodes[0];
    let keyword = cpns_directory::test_utils::public_keyword_key("printer");

    // Never enrolled: 3 identities x 100 random keys, then 10 on the keyword.
    let mut attackers = Vec::new();
    for _ in 0..3 {
        attackers.push(plain_kad_announce(&gw.addr, random_keys(100)).await);
    }
    for _ in 0..10 {
        attackers.push(plain_kad_announce(&gw.addr, vec![keyword.clone()]).await);
    }
    quiesce(&gw.client).await;
    let usage = gw.client.store_usage().await.unwrap();
    assert_eq!(
        usage.remote_provider_records, 0,
        "announcements without a credential were stored: {usage:?}"
    );

    // Enrolled but hostile: 3 overlay nodes with valid credentials, 150 keys each and the
    // keyword.
    let mut hostile = Vec::new();
    for i in 0..3u8 {
        let id = cpns_keys::Identity::from_secret_bytes([0xe0 + i; 32]);
        let cred = mesh.ca.issue(&id, 100 + i as u64, cpns_keys::Modes::ALL);
        let cfg = cpns_overlay::Config {
            bootstrap: vec![gw.addr.clone()],
            credential: Some(cred.to_bytes()),
            ..overlay()
        };
        let node = cpns_overlay::test_utils::TestNode::spawn_with(cfg, id)
            .await
            .unwrap();
        node.client.bootstrap().await.unwrap();
        let mut keys = random_keys(150);
        keys.push(keyword.clone());
        futures::future::join_all(keys.chunks(64).map(|chunk| {
            let c = node.client.clone();
            async move {
                for k in chunk {
                    let _ = c.start_providing(RecordKey::new(k)).await;
                }
            }
        }))
        .await;
        hostile.push(node);
    }
    quiesce(&gw.client).await;
    let usage = gw.client.store_usage().await.unwrap();
    assert!(
        usage.remote_provider_records <= 256 && usage.remote_providers <= 3 + 3,
        "{usage:?}"
    );
    assert!(usage.remote_provider_records >= 250, "{usage:?}");

    // The gateway's own publish succeeds, and so do the members'.
    let mut ids_published = HashSet::new();
    let own = gw
        .directory
        .publish(public("Gateway printer", &["printer"]))
        .await
        .unwrap();
    ids_published.insert(own.id);
    for (i, n) in mesh.nodes[1..].iter().enumerate() {
        let d = n
            .directory
            .publish(public(&format!("Printer {i}"), &["printer"]))
            .await
            .unwrap();
        ids_published.insert(d.id);
    }
    // Every honest service is found by keyword, from every node (the hostile providers of
    // the keyword never answer, so each lookup also waits for them: run them together).
    let found = futures::future::join_all(mesh.nodes.iter().map(|n| {
        let want = ids_published.clone();
        async move {
            let q = Query::keywords(["printer"]);
            eventually(|| {
                let q = q.clone();
                let want = want.clone();
                async move {
                    n.directory
                        .find(&q)
                        .await
                        .is_ok_and(|f| ids(&f.services) == want)
                }
            })
            .await
        }
    }))
    .await;
    assert!(
        found.iter().all(|ok| *ok),
        "not every node finds all {} services: {found:?}",
        ids_published.len()
    );
    for a in attackers {
        a.abort();
    }
    for h in hostile {
        h.shutdown().await;
    }
    mesh.shutdown().await;
}

/// Issue 14, service shadowing: another publisher using the same service id cannot take the
/// service over. Before the fix `find` kept one result per id (the highest version), so the
/// later publisher's record replaced the first one's in every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_publisher_cannot_shadow_a_service_by_its_id() {
    init_tracing();
    let mesh = mesh(4).await;
    let (honest, squatter) = (&mesh.nodes[1], &mesh.nodes[2]);
    let mut draft = public("Family photos", &["photos"]);
    draft.id = Some("svc-photos".into());
    let desc = honest.directory.publish(draft).await.unwrap();
    settled(&mesh.nodes[0].directory, &["photos"], &desc.id).await;
    let mut fake = public("Family photos (better)", &["photos"]);
    fake.id = Some("svc-photos".into());
    // Its put under the id's key is refused where the honest record lives; its provider
    // announcement and its own store still answer lookups.
    let _ = squatter.directory.publish(fake).await;
    let q = Query::keywords(["photos"]);
    let first = &mesh.nodes[0];
    let both = eventually(|| {
        let q = q.clone();
        async move {
            first
                .directory
                .find(&q)
                .await
                .is_ok_and(|f| f.services.len() == 2)
        }
    })
    .await;
    let found = mesh.nodes[0].directory.find(&q).await.unwrap();
    assert!(both, "{:?}", found.services);
    assert!(
        found
            .services
            .iter()
            .any(|f| f.description.publisher == honest.peer && f.description == desc),
        "the honest service is hidden: {:?}",
        found.services
    );
    mesh.shutdown().await;
}
