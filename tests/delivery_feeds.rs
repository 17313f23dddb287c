//! Aggregation and distribution for multiple PNEs through the gateway (5.6.7): sensors'
//! readings aggregated into one feed (common data once, one part per PNE), and a feed
//! distributed to every PNE with each PNE's specific part sealed so that no other PNE can
//! open it — not even holding the bytes and its own identity key.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use cpns_node::delivery::open_part;

use crate::util::{Lab, init_tracing};

#[tokio::test]
async fn the_gateway_aggregates_and_distributes_and_no_pne_opens_anothers_part() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab
        .pn("alice", "router", &["kitchen", "garden", "cellar"])
        .await?;
    let (kitchen, garden, cellar) = (&members[0], &members[1], &members[2]);

    // Aggregation: three sensors, two of them with the same common part.
    for (n, common, reading) in [
        (kitchen, "unit=C;every=60s", "21.5"),
        (garden, "unit=C;every=60s", "14.0"),
        (cellar, "unit=F;every=300s", "52"),
    ] {
        n.handle()
            .content()
            .contribute(
                "temps",
                common.as_bytes().to_vec(),
                reading.as_bytes().to_vec(),
            )
            .await?;
    }
    // A newer reading replaces the older one.
    kitchen
        .handle()
        .content()
        .contribute("temps", b"unit=C;every=60s".to_vec(), b"22.0".to_vec())
        .await?;
    let feed = garden.handle().content().aggregate("temps").await?;
    ensure!(feed.common.len() == 2, "{feed:?}");
    ensure!(feed.parts.len() == 3, "{feed:?}");
    let part_of = |n: &crate::util::LabNode| {
        feed.parts
            .iter()
            .find(|p| p.from == n.peer_id())
            .map(|p| (feed.common[p.common as usize].clone(), p.data.clone()))
    };
    ensure!(
        part_of(kitchen) == Some((b"unit=C;every=60s".to_vec(), b"22.0".to_vec())),
        "{feed:?}"
    );
    ensure!(
        part_of(cellar) == Some((b"unit=F;every=300s".to_vec(), b"52".to_vec())),
        "{feed:?}"
    );
    // The gateway sees the same feed.
    ensure!(gw.handle().content().aggregate("temps").await? == feed);

    // Distribution: common to all, a part for the kitchen and the garden only.
    let mut parts = BTreeMap::new();
    parts.insert(kitchen.peer_id(), b"offset=+0.2".to_vec());
    parts.insert(garden.peer_id(), b"offset=-0.4".to_vec());
    let (seq, recipients) = gw
        .handle()
        .content()
        .distribute("calibration", b"version=3".to_vec(), parts)
        .await?;
    ensure!(recipients.len() == 3, "{recipients:?}");
    ensure!(recipients.iter().all(|r| r.delivered), "{recipients:?}");
    for (n, want) in [
        (kitchen, Some(b"offset=+0.2".to_vec())),
        (garden, Some(b"offset=-0.4".to_vec())),
        (cellar, None),
    ] {
        let got = n.handle().content().feeds();
        let f = got
            .iter()
            .find(|f| f.feed == "calibration")
            .ok_or_else(|| anyhow::anyhow!("{} got no feed", n.peer_id()))?;
        ensure!(f.common == b"version=3" && f.seq == seq, "{f:?}");
        ensure!(f.part == want, "{f:?}");
        ensure!(f.from == gw.peer_id());
    }

    // The kitchen's part as it went on the wire: the garden's identity does not open it, nor
    // does the cellar's; the kitchen's does.
    let sealed = recipients
        .iter()
        .find(|r| r.peer == kitchen.peer_id())
        .and_then(|r| r.sealed_part.clone())
        .ok_or_else(|| anyhow::anyhow!("no sealed part for the kitchen"))?;
    let identity =
        |n: &crate::util::LabNode| cpns_keys::Identity::load(&n.data_dir().join("identity.key"));
    for other in [garden, cellar] {
        ensure!(
            open_part(&identity(other)?, "calibration", seq, &sealed).is_err(),
            "{} opened the kitchen's part",
            other.peer_id()
        );
    }
    let opened =
        open_part(&identity(kitchen)?, "calibration", seq, &sealed).map_err(anyhow::Error::msg)?;
    ensure!(opened == b"offset=+0.2");
    ensure!(
        !String::from_utf8_lossy(&sealed).contains("offset"),
        "the part travels in clear"
    );

    // Only the gateway distributes; feed names are checked.
    let e = kitchen
        .handle()
        .content()
        .distribute("calibration", b"x".to_vec(), BTreeMap::new())
        .await
        .err();
    ensure!(
        e.as_ref()
            .is_some_and(|e| e.to_string().contains("gateway")),
        "{e:?}"
    );
    let e = garden
        .handle()
        .content()
        .contribute("bad name!", Vec::new(), Vec::new())
        .await
        .err();
    ensure!(e.is_some(), "a bad feed name was taken");
    let traced = |n: &crate::util::LabNode, step: u32| {
        n.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.7" && e.step == step)
    };
    ensure!(
        traced(&gw, 5) && traced(&gw, 6) && traced(kitchen, 6),
        "not traced"
    );
    let mut all = members;
    all.push(gw);
    lab.shutdown(all).await;
    Ok(())
}
