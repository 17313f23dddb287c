//! Usage: `cargo run --example aggregation`
//!
//! Aggregation and distribution for multiple PNEs through the PN gateway (spec 5.6.7), in one
//! process: a `cpns-auth`, a gateway and three sensor PNEs of one household on loopback.
//!
//! 1. **Aggregation**: each sensor contributes its reading to the gateway's feed `temps`,
//!    with the data it shares with the others (units, period); the gateway serves one feed:
//!    the common data once, one part per sensor. A PNE reads it.
//! 2. **Distribution**: the gateway sends the feed `calibration` to every PNE: the common part
//!    sealed under the PN key, each sensor's own offset sealed to that sensor's identity key.
//!    Each sensor opens its own part; a sensor holding another's sealed part cannot open it.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cpns_node::{Config, ModeSetting, Node};

fn config(dir: &std::path::Path, name: &str, mode: ModeSetting) -> Config {
    Config {
        data_dir: dir.join(name),
        device_name: name.into(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        auto_pair: false,
        mode,
        log: "error".into(),
        ..Config::default()
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let auth =
        cpns_auth::Server::start(cpns_auth::Config::with_data_dir(dir.path().join("auth"))).await?;
    let admin = auth.admin();
    admin.create_user("alice").await?;
    let names = ["gateway", "kitchen", "garden", "cellar"];
    let mut nodes = Vec::new();
    for name in names {
        let mode = if name == "gateway" {
            ModeSetting::Gateway
        } else {
            ModeSetting::Auto
        };
        let node = Node::start(config(dir.path(), name, mode)).await?;
        let code = admin
            .create_code(
                "alice",
                cpns_keys::Modes::ALL,
                Duration::from_secs(600),
                false,
            )
            .await?;
        node.handle().up(&code).await?;
        nodes.push(node);
    }
    nodes[0]
        .handle()
        .wait_for_pn(Duration::from_secs(20))
        .await
        .context("the gateway's PN")?;
    let gw_addr = nodes[0].dial_addrs().await.remove(0);
    for node in &nodes[1..] {
        node.handle().pair(gw_addr.clone()).await?;
        node.handle()
            .wait_until(Duration::from_secs(20), |s| s.pn_id.is_some())
            .await?;
    }
    // Every member on the PN key the gateway distributes under.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while nodes
        .iter()
        .any(|n| n.handle().pn_epoch() != nodes[0].handle().pn_epoch())
    {
        if tokio::time::Instant::now() > deadline {
            bail!("members did not converge on one PN key epoch");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let short = |p: &libp2p::PeerId| {
        let s = p.to_string();
        names[nodes.iter().position(|n| n.peer_id() == *p).unwrap_or(0)].to_string()
            + " ("
            + &s[s.len() - 6..]
            + ")"
    };

    println!("1. aggregation: each sensor contributes to the gateway's feed \"temps\"");
    for (i, (common, reading)) in [
        ("unit=C;every=60s", "21.5"),
        ("unit=C;every=60s", "14.0"),
        ("unit=F;every=300s", "52"),
    ]
    .iter()
    .enumerate()
    {
        let n = &nodes[i + 1];
        n.handle()
            .content()
            .contribute(
                "temps",
                common.as_bytes().to_vec(),
                reading.as_bytes().to_vec(),
            )
            .await?;
        println!(
            "   {} -> common {common:?}, reading {reading:?}",
            names[i + 1]
        );
    }
    let feed = nodes[3].handle().content().aggregate("temps").await?;
    println!("   the aggregated feed, as the cellar reads it from the gateway:");
    for (i, c) in feed.common.iter().enumerate() {
        println!("     common[{i}] {:?}", String::from_utf8_lossy(c));
    }
    for p in &feed.parts {
        println!(
            "     part from {}: {:?} (common[{}])",
            short(&p.from),
            String::from_utf8_lossy(&p.data),
            p.common
        );
    }

    println!("2. distribution: the gateway sends \"calibration\" to every PNE");
    let mut parts = BTreeMap::new();
    for (i, offset) in ["offset=+0.2", "offset=-0.4", "offset=+1.1"]
        .iter()
        .enumerate()
    {
        parts.insert(nodes[i + 1].peer_id(), offset.as_bytes().to_vec());
    }
    let (seq, recipients) = nodes[0]
        .handle()
        .content()
        .distribute("calibration", b"version=3".to_vec(), parts)
        .await?;
    for n in &nodes[1..] {
        let f = n
            .handle()
            .content()
            .feeds()
            .into_iter()
            .find(|f| f.feed == "calibration")
            .context("no distribution arrived")?;
        println!(
            "   {} opened common {:?} and its own part {:?}",
            short(&n.peer_id()),
            String::from_utf8_lossy(&f.common),
            f.part.as_deref().map(String::from_utf8_lossy)
        );
    }
    let kitchen_part = recipients
        .iter()
        .find(|r| r.peer == nodes[1].peer_id())
        .and_then(|r| r.sealed_part.clone())
        .context("the kitchen's sealed part")?;
    let garden = cpns_keys::Identity::load(&dir.path().join("garden").join("identity.key"))?;
    match cpns_node::delivery::open_part(&garden, "calibration", seq, &kitchen_part) {
        Ok(p) => bail!("the garden opened the kitchen's part: {p:?}"),
        Err(e) => println!(
            "   the garden, holding the kitchen's sealed part ({} bytes), cannot open it: {e}",
            kitchen_part.len()
        ),
    }
    for node in nodes.into_iter().rev() {
        node.shutdown().await;
    }
    auth.shutdown().await;
    Ok(())
}
