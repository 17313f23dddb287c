//! Appendix E of the CPNS architecture, run: an 8-node DHT where one node publishes a service
//! description and another discovers it, with the peers each step contacted and the request
//! counts printed next to the spec's 3-hop example.
//!
//! Usage:
//! ```text
//! cargo run --example appendix_e
//! ```
//!
//! The spec's figure is a Chord-like ring (node 100's fingers are 200, 300 and 500; a message
//! from 100 reaches the directory node 800 in 3 hops, each node forwarding it). The CPNS
//! overlay is Kademlia, which is *iterative*: the discoverer itself asks the peers closest to
//! the key it knows, they answer with closer peers, and so on; nothing is forwarded. So the
//! comparable figures are the number of requests the discoverer sends and the nodes that
//! answer them. The eight nodes are labelled 100..800 as in the figure.

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result};
use cpns_directory::test_utils::Mesh;
use cpns_directory::{Config, Query, ServiceDraft, Visibility};
use cpns_overlay::RecordKey;

fn label(i: usize) -> String {
    format!("node {}", (i + 1) * 100)
}

/// Requests each node has served so far (Kademlia and direct directory requests).
fn served(mesh: &Mesh) -> Vec<u64> {
    mesh.nodes
        .iter()
        .map(|m| {
            let s = m.client.stats();
            s.dht_requests_served.load(Ordering::Relaxed)
                + s.requests_received.load(Ordering::Relaxed)
        })
        .collect()
}

fn diff(before: &[u64], after: &[u64]) -> Vec<(usize, u64)> {
    before
        .iter()
        .zip(after)
        .enumerate()
        .filter(|(_, (b, a))| a > b)
        .map(|(i, (b, a))| (i, a - b))
        .collect()
}

fn show(asked: &[(usize, u64)]) -> String {
    asked
        .iter()
        .map(|(i, n)| format!("{} ({n})", label(*i)))
        .collect::<Vec<_>>()
        .join(", ")
}

#[tokio::main]
async fn main() -> Result<()> {
    let overlay = cpns_overlay::Config {
        gate_requests: false,
        ..cpns_overlay::Config::default()
    };
    let mesh = Mesh::start(8, overlay, Config::default(), Duration::from_secs(20))
        .await
        .context("starting 8 nodes")?;
    // Let the start-up bootstraps finish so that the counters below see only our requests.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    println!("8-node DHT on loopback (Kademlia server mode, every node a PN GW that routes):");
    for (i, m) in mesh.nodes.iter().enumerate() {
        println!(
            "  {}  {}  routing table: {} peers",
            label(i),
            m.peer,
            m.client.routing_table_size().await?
        );
    }

    // Node 500 offers the service; node 100 is the consumer, as in the figure.
    let (offerer, consumer) = (4usize, 0usize);
    let before = served(&mesh);
    let mut draft = ServiceDraft::new("Jazz radio", ["jazz", "radio"], Visibility::Public);
    draft.offers = "live jazz around the clock".into();
    let desc = mesh.nodes[offerer].directory.publish(draft).await?;
    // Let the stores still in flight and the publisher's index write (1 s later) finish, so
    // that the discovery below is seen alone.
    let index_delay = mesh.nodes[offerer].directory.config().index_delay;
    tokio::time::sleep(index_delay + Duration::from_millis(500)).await;
    let asked = diff(&before, &served(&mesh));
    let key = mesh.nodes[offerer]
        .directory
        .service_record_key(&desc)
        .context("public key")?;
    let mut holders = Vec::new();
    for (i, m) in mesh.nodes.iter().enumerate() {
        if m.client.local_record(RecordKey::new(&key)).await?.is_some() {
            holders.push(label(i));
        }
    }
    println!();
    println!(
        "Publish by {} of {:?} (id {}):",
        label(offerer),
        desc.name,
        desc.id
    );
    println!(
        "  one record + one provider record per keyword (+ the publisher index a second later), \
         each an iterative lookup of the k closest nodes then a store at them"
    );
    println!("  nodes that answered (requests served): {}", show(&asked));
    println!("  record stored at: {}", holders.join(", "));

    for round in ["first", "second"] {
        let before = served(&mesh);
        let found = mesh.nodes[consumer]
            .directory
            .find(&Query::keywords(["jazz"]))
            .await?;
        let asked = diff(&before, &served(&mesh));
        let f = found.figures;
        println!();
        println!(
            "Discovery by {} of \"jazz\" ({round} time): {} service(s) found: {}",
            label(consumer),
            found.services.len(),
            found
                .services
                .iter()
                .map(|s| format!("{:?} from {}", s.description.name, s.description.publisher))
                .collect::<Vec<_>>()
                .join("; ")
        );
        println!(
            "  figures: {} requests sent, {} peers contacted, {} DHT lookup(s), {:.2} ms",
            f.requests,
            f.peers_contacted,
            f.lookups,
            f.duration_us as f64 / 1000.0
        );
        println!("  nodes that answered (requests served): {}", show(&asked));
    }
    println!();
    println!(
        "Spec, Appendix E: 3 hops from node 100 to the directory node 800 (100's fingers: \
         200, 300, 500), each node forwarding the message."
    );
    println!(
        "Here: the consumer sends every request itself (Kademlia is iterative): the provider \
         lookup ends as soon as {} of the nodes closest to the keyword answer with the \
         provider, then one direct request fetches the signed description from the offerer.",
        mesh.nodes[consumer].directory.config().find_quorum
    );
    mesh.shutdown().await;
    Ok(())
}
