//! A moved member's services follow it (5.6.9, merge and split), at the directory: over real
//! overlay nodes on loopback, `Directory::rescope_pn` re-seals a PN's services under the
//! PN the publisher moved to and withdraws them under the PN it left, also from the DHT (a
//! finder that cannot ask the publisher reads the tombstone, not the old record).
#![allow(clippy::unwrap_used)]

use cpns_directory::test_utils::Mesh;
use cpns_directory::{Config, Query, ServiceDraft, Visibility};
use cpns_keys::{GroupId, GroupKey};

use crate::directory::eventually;
use crate::util::{WAIT, init_tracing};

async fn finds(dir: &cpns_directory::Directory, keyword: &str, id: &str) -> bool {
    dir.find(&Query::keywords([keyword]))
        .await
        .is_ok_and(|d| d.services.iter().any(|f| f.description.id == id))
}

/// The publisher (node 1) moves from PN A to PN B: a member of B only (node 3) finds its
/// service by keyword afterwards, a member of A only (node 2) no longer does, neither while
/// the publisher is online (asked directly) nor once it is offline (read from the DHT), and a
/// second call moves nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_moved_publishers_pn_services_are_rescoped_and_withdrawn_from_the_old_pn() {
    init_tracing();
    let o = cpns_overlay::Config {
        gate_requests: false,
        replication_factor: 4,
        ..cpns_overlay::Config::default()
    };
    let Mesh { ca, mut nodes } = Mesh::start(8, o, Config::default(), WAIT).await.unwrap();
    let (a, b) = (GroupId("pn-a".into()), GroupId("pn-b".into()));
    let (ka, kb) = (
        GroupKey::generate(a.clone(), 1),
        GroupKey::generate(b.clone(), 4),
    );
    nodes[1].keys.insert(ka.clone());
    nodes[2].keys.insert(ka);
    nodes[3].keys.insert(kb.clone());
    let desc = nodes[1]
        .directory
        .publish(ServiceDraft::new(
            "Bob's turntable",
            ["turntable"],
            Visibility::Pn(a.clone()),
        ))
        .await
        .unwrap();
    assert!(
        eventually(|| finds(&nodes[2].directory, "turntable", &desc.id)).await,
        "A's member never found it before the move"
    );

    // The move: the publisher is given B's key (its join) and re-scopes.
    nodes[1].keys.insert(kb);
    let moved = nodes[1].directory.rescope_pn(&a, &b).await.unwrap();
    assert_eq!(moved, 1);
    assert_eq!(nodes[1].directory.rescope_pn(&a, &b).await.unwrap(), 0);
    let local = nodes[1].directory.local_services();
    assert_eq!(local[0].visibility, Visibility::Pn(b.clone()));
    assert!(local[0].version > desc.version);
    assert!(
        eventually(|| finds(&nodes[3].directory, "turntable", &desc.id)).await,
        "B's member never found the re-scoped service"
    );
    assert!(!finds(&nodes[2].directory, "turntable", &desc.id).await);

    // Offline publisher: what the DHT holds under A's key is the tombstone.
    let publisher = nodes.remove(1);
    publisher.shutdown().await;
    let found = nodes[1] // node 2 before the removal
        .directory
        .find(&Query::keywords(["turntable"]))
        .await
        .unwrap();
    assert!(
        found.services.is_empty(),
        "A's member found the withdrawn service in the DHT: {found:?}"
    );
    assert!(nodes[1].directory.get(&desc.id).await.unwrap().is_none());
    Mesh { ca, nodes }.shutdown().await;
}

/// A released PN's summary withdrawn (5.6.9): after its gateway's withdrawal a lookup finds no
/// PN, and another node's withdrawal changes nothing (the DHT servers take the replacement of
/// a summary from its publisher only).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_its_gateway_withdraws_a_released_pns_summary() {
    init_tracing();
    let mesh = Mesh::start(
        6,
        cpns_overlay::Config {
            gate_requests: false,
            ..cpns_overlay::Config::default()
        },
        Config::default(),
        WAIT,
    )
    .await
    .unwrap();
    let n = &mesh.nodes;
    let pn_id = "pn-00000000000000bb";
    let summary = cpns_overlay::PnInventorySummary {
        pn_id: pn_id.into(),
        owner: "user-2".into(),
        gateway: n[1].peer,
        epoch: 3,
        members: vec![],
        services: vec![],
        updated: 1,
        details: vec![],
        admins: vec![],
    };
    n[1].directory.publish_pn_summary(&summary).await.unwrap();
    let fetch = |i: usize| {
        let d = n[i].directory.clone();
        async move { d.fetch_pn_summary(pn_id).await.unwrap() }
    };
    assert_eq!(fetch(5).await, Some(summary.clone()));
    // Not its gateway: refused wherever it is stored; the summary stays.
    let _ = n[2].directory.withdraw_pn_summary(pn_id).await;
    assert_eq!(fetch(5).await, Some(summary.clone()));
    n[1].directory.withdraw_pn_summary(pn_id).await.unwrap();
    for i in [0, 3, 5] {
        assert_eq!(fetch(i).await, None, "node {i} still reads the summary");
    }
    mesh.shutdown().await;
}
