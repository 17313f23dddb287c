//! The typical flow of Appendix G.1, steps 0-9, for real: a PNE publishes content, another
//! PNE discovers it, invokes it with its capabilities, gets it sealed under the PN key in pull
//! and push mode, reports usage through the gateway to `cpns-auth` (or not, by preference),
//! and leaves the PN.

use anyhow::{Context, Result, ensure};
use cpns_directory::{Query, ServiceDraft};
use cpns_overlay::DeliveryMode;
use sha2::{Digest, Sha256};
use std::collections::BTreeSet;

use crate::util::{Lab, WAIT, init_tracing};

fn content(len: usize, seed: u8) -> Vec<u8> {
    let mut x = u64::from(seed) * 0x9E37_79B9 + 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

#[tokio::test]
async fn typical_flow_g1_steps_0_to_9() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));

    // Step 0: the NAS publishes family photos (PN visibility, the default) and an IPTV stream.
    let dir = tempfile::tempdir()?;
    let photos_bytes = content(3 * 1024 * 1024 + 17, 1);
    let photos_path = dir.path().join("photos.tar");
    std::fs::write(&photos_path, &photos_bytes)?;
    let iptv_path = dir.path().join("iptv.ts");
    std::fs::write(&iptv_path, content(100_000, 2))?;
    let vis = nas.handle().default_visibility();
    let photos = nas
        .handle()
        .publish(
            ServiceDraft::new("Family photos", ["photos", "family"], vis.clone()),
            Some(photos_path),
        )
        .await?;
    let iptv = nas
        .handle()
        .publish(
            ServiceDraft::new("IPTV channel 1", ["tv", "iptv"], vis),
            Some(iptv_path),
        )
        .await?;

    // Step 4: the phone discovers it by keyword (two keywords, both must match).
    let found = phone
        .handle()
        .find(&Query::keywords(["photos", "family"]))
        .await?;
    let hit = found
        .services
        .iter()
        .find(|f| f.description.id == photos.id)
        .with_context(|| format!("the phone did not find the photos: {found:?}"))?;
    assert_eq!(hit.description.name, "Family photos");
    assert!(found.figures.requests >= 1, "figures: {:?}", found.figures);

    // Steps 5-8, pull mode: delivered bytes equal the offered bytes; usage reported.
    let pulled = phone.handle().fetch(&photos.id, DeliveryMode::Pull).await?;
    assert_eq!(pulled.bytes, photos_bytes.len() as u64);
    assert_eq!(pulled.sha256, hex::encode(Sha256::digest(&photos_bytes)));
    assert_eq!(std::fs::read(&pulled.path)?, photos_bytes);
    assert_eq!(pulled.usage, "reported", "{pulled:?}");
    // Push mode too.
    let pushed = phone.handle().fetch(&photos.id, DeliveryMode::Push).await?;
    assert_eq!(pushed.sha256, pulled.sha256);
    // A preference suppresses the IPTV report.
    phone
        .handle()
        .set_usage_never_report(vec![iptv.id.clone()])
        .await?;
    let tv = phone.handle().fetch(&iptv.id, DeliveryMode::Pull).await?;
    assert_eq!(tv.usage, "suppressed");

    // The charging records are in cpns-auth: the photos twice, the IPTV never.
    let csv = lab
        .admin()
        .export_usage(cpns_auth::UsageFormat::Csv)
        .await?;
    assert_eq!(
        csv.matches(photos.id.as_str()).count(),
        2,
        "charging records:\n{csv}"
    );
    assert!(
        !csv.contains(iptv.id.as_str()),
        "a suppressed report reached the server:\n{csv}"
    );

    // Step 9: the phone leaves; the gateway de-registers it and the epoch moves on.
    let epoch_before = gw.handle().pn_epoch().context("epoch")?;
    phone.handle().down().await?;
    let s = gw
        .handle()
        .wait_until(WAIT, |s| s.members.len() == 2)
        .await?;
    assert_eq!(
        s.members.len(),
        2,
        "the phone is gone from the PN Inventory"
    );
    assert!(gw.handle().pn_epoch().context("epoch")? > epoch_before);

    // Every step 0-9 is in the trace of the node that took part in it.
    let mut steps = BTreeSet::new();
    for n in [&gw, &nas, &phone] {
        for e in n.handle().trace() {
            if e.flow == "G.1" {
                steps.insert(e.step);
            }
        }
    }
    let all: BTreeSet<u32> = (0..=9).collect();
    ensure!(steps == all, "G.1 steps traced: {steps:?}");
    let phone_steps: Vec<u32> = phone
        .handle()
        .trace()
        .iter()
        .filter(|e| e.flow == "G.1")
        .map(|e| e.step)
        .collect();
    for s in [3, 4, 5, 6, 7, 8, 9] {
        assert!(
            phone_steps.contains(&s),
            "the consumer's trace lacks G.1 step {s}: {phone_steps:?}"
        );
    }
    lab.shutdown(vec![gw, nas, phone]).await;
    Ok(())
}

/// "Advertise service description" (5.6.4.2, G.1 step 4 as an advertisement): a PNE that
/// watches a keyword hears of a new matching service published by another member, through the
/// gateway, without polling; a service without that keyword is not advertised to it.
#[tokio::test]
async fn a_watcher_hears_of_new_matching_services_without_polling() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let subscriptions = phone.handle().watch_services("printer").await?;
    assert!(subscriptions >= 1);

    let vis = nas.handle().default_visibility();
    nas.handle()
        .publish(ServiceDraft::new("Scanner", ["scanner"], vis.clone()), None)
        .await?;
    let printer = nas
        .handle()
        .publish(
            ServiceDraft::new("Hall printer", ["printer", "colour"], vis),
            None,
        )
        .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let heard = phone.handle().advertisements();
        if heard.iter().any(|d| d.id == printer.id) {
            assert!(
                heard.iter().all(|d| d.name != "Scanner"),
                "a non-matching service was advertised"
            );
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the advertisement never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let traced = phone
        .handle()
        .trace()
        .iter()
        .any(|e| e.flow == "G.1" && e.step == 4 && e.message == "AdvertiseServiceDescription");
    assert!(traced, "the advertisement is traced as G.1 step 4");
    lab.shutdown(vec![gw, nas, phone]).await;
    Ok(())
}

/// A household whose gateway is its only DHT server (its PNEs are Kademlia clients and no
/// other household is bootstrapped): a service the gateway publishes is accepted, not refused
/// for want of a second server, and its PNE finds it.
#[tokio::test]
async fn a_lone_gateway_publishes_and_its_pne_finds_the_service() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["phone"]).await?;
    let phone = members.remove(0);
    let vis = gw.handle().default_visibility();
    let printer = gw
        .handle()
        .publish(ServiceDraft::new("Hall printer", ["printer"], vis), None)
        .await
        .context("the lone gateway's publish")?;
    crate::util::finds(&phone, "printer", &printer.id).await?;
    lab.shutdown(vec![gw, phone]).await;
    Ok(())
}
