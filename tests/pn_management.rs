//! PN Management (5.6.9) beyond establishment: the gateway hands its role to a named member;
//! the gateway's owner turns it into a PNE (the role goes to the member the election ranks
//! first); a gateway-only node serves its PN but offers and consumes no services; the
//! election honours what each credential allows; capability matching at the gateway.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cpns_directory::{Requirements, ServiceDraft};
use cpns_keys::Modes;
use cpns_node::ModeSetting;

use crate::util::{Lab, LabNode, WAIT, init_tracing, same_epoch};

/// Waits until every node names `gateway` as its PN's gateway.
async fn all_follow(nodes: &[&LabNode], gateway: &str) -> Result<()> {
    for n in nodes {
        let g = gateway.to_owned();
        let s = n
            .handle()
            .wait_until(WAIT, move |s| s.gateway.as_deref() == Some(g.as_str()))
            .await?;
        ensure!(
            s.gateway.as_deref() == Some(gateway),
            "{} never followed gateway {gateway}: {s:?}",
            n.peer_id()
        );
    }
    Ok(())
}

/// `cpns pn handoff PEER`: the gateway hands its role to a named PNE; cpns-auth names it the
/// gateway, every member (the old gateway too, now a PNE) follows it, and the key epoch
/// continues (no rotation: nobody joined or left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gateway_hands_its_role_to_a_named_member() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (nas, phone) = (&members[0], &members[1]);
    let pn = gw.handle().status().await?.pn_id.context("PN")?;
    let epoch = same_epoch(&[&gw, nas, phone]).await?;

    gw.handle().pn_hand_off(nas.peer_id()).await?;
    let new_gateway = nas.peer_id().to_string();
    all_follow(&[&gw, nas, phone], &new_gateway).await?;
    ensure!(lab.admin().show_pn(&pn).await?.gateway == new_gateway);
    let old = gw.handle().status().await?;
    ensure!(
        old.mode == "pne" && old.pn_id.as_deref() == Some(pn.as_str()),
        "{old:?}"
    );
    ensure!(
        same_epoch(&[&gw, nas, phone]).await? == epoch,
        "the key epoch continues"
    );
    ensure!(
        nas.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "PnGatewayHandOff"),
        "the hand-off is traced"
    );
    // A PNE cannot hand off a role it does not hold.
    ensure!(phone.handle().pn_hand_off(gw.peer_id()).await.is_err());
    lab.shutdown(members.into_iter().chain([gw]).collect())
        .await;
    Ok(())
}

/// The gateway's owner sets it to `pne` while the PN runs: the role goes to the member the
/// election ranks first (here the one on mains power; the other runs on battery), and the
/// old gateway carries on as a PNE of the same PN.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_set_to_pne_hands_the_pn_to_the_best_member() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (nas, phone) = (&members[0], &members[1]);
    phone
        .handle()
        .set_capabilities(cpns_node::config::CapabilitiesConfig {
            power: Some("battery".into()),
            battery_percent: Some(70),
            ..Default::default()
        })
        .await?;
    // The gateway's member list shows the phone on battery before the switch.
    let phone_id = phone.peer_id();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let inv = gw.handle().pn_inventory(None).await?;
        let on_battery = inv.details.iter().any(|d| {
            d.peer_id == phone_id
                && d.capabilities
                    .as_ref()
                    .is_some_and(|c| c.dynamic.battery_percent == Some(70))
        });
        if on_battery {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the phone's battery never reached the inventory");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.handle().set_mode(ModeSetting::Pne).await?;
    all_follow(&[&gw, nas, phone], &nas.peer_id().to_string()).await?;
    let old = gw.handle().status().await?;
    ensure!(old.mode == "pne" && old.mode_setting == "pne", "{old:?}");
    lab.shutdown(members.into_iter().chain([gw]).collect())
        .await;
    Ok(())
}

/// A gateway-only node (`--mode gateway-only`): it sets its PN up and admits PNEs, which
/// publish and find services through it, but it offers and consumes none itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_only_node_serves_its_pn_but_offers_no_service() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let gw = lab
        .node_with("alice", "router", ModeSetting::GatewayOnly)
        .await?;
    gw.handle().wait_for_pn(WAIT).await.context("PN")?;
    let s = gw.handle().status().await?;
    ensure!(
        s.mode == "gateway" && s.mode_setting == "gateway-only",
        "{s:?}"
    );
    let laptop = lab.node("alice", "laptop").await?;
    laptop.handle().pair(gw.dial_addr().await?).await?;
    laptop
        .handle()
        .wait_until(WAIT, |s| s.pn_id.is_some())
        .await?;
    let vis = laptop.handle().default_visibility();
    let svc = laptop
        .handle()
        .publish(
            ServiceDraft::new("Laptop printer", ["printer"], vis.clone()),
            None,
        )
        .await?;
    crate::util::finds(&laptop, "printer", &svc.id).await?;
    let refused = gw
        .handle()
        .publish(ServiceDraft::new("Router printer", ["printer"], vis), None)
        .await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("gateway-only")),
        "{refused:?}"
    );
    let fetch = gw
        .handle()
        .fetch(&svc.id, cpns_overlay::DeliveryMode::Pull)
        .await;
    ensure!(fetch.is_err(), "{fetch:?}");
    // Back to pne+gateway at run time, in place.
    gw.handle().set_mode(ModeSetting::Gateway).await?;
    ensure!(gw.handle().status().await?.mode == "pne+gateway");
    lab.shutdown(vec![laptop, gw]).await;
    Ok(())
}

/// The election honours each credential: two fresh devices pair; the stronger one (always
/// prefers the role, on mains) holds a PNE-only credential, so the other becomes the gateway
/// and the PN forms (before, the PNE-only device won and was refused at step 8).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_election_honours_what_each_credential_allows() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let dir = tempfile::tempdir()?;
    let mut config = Lab::config(dir.path(), "big-nas", ModeSetting::Auto);
    config.gateway_preference = "always".into();
    let strong = cpns_node::Node::start(config).await?;
    let code = lab
        .admin()
        .create_code("alice", Modes::PNE, Duration::from_secs(3600), false)
        .await?;
    strong.handle().up(&code).await?;
    let weak = lab.node("alice", "old-laptop").await?;
    weak.handle()
        .set_capabilities(cpns_node::config::CapabilitiesConfig {
            power: Some("battery".into()),
            battery_percent: Some(30),
            ..Default::default()
        })
        .await?;
    let addr = strong
        .dial_addrs()
        .await
        .into_iter()
        .next()
        .context("address")?;
    weak.handle().pair(addr).await?;
    let s = weak
        .handle()
        .wait_until(WAIT, |s| s.pn_id.is_some())
        .await?;
    ensure!(
        s.gateway.as_deref() == Some(weak.peer_id().to_string().as_str()),
        "the device whose credential allows the gateway mode is the gateway: {s:?}"
    );
    let t = strong
        .handle()
        .wait_until(WAIT, |s| s.pn_id.is_some())
        .await?;
    ensure!(t.pn_id == s.pn_id && t.mode == "pne", "{t:?}");
    strong.shutdown().await;
    lab.shutdown(vec![weak]).await;
    Ok(())
}

/// Capability matching at the gateway (5.6.9): a service that needs a screen and 40 % of
/// battery; the members that can consume it now, those that cannot (and why), and the
/// member best placed to offer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capability_matching_names_consumers_and_the_best_offerer() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["tv", "phone"]).await?;
    let (tv, phone) = (&members[0], &members[1]);
    tv.handle()
        .set_capabilities(cpns_node::config::CapabilitiesConfig {
            screen: Some("1920x1080".into()),
            ..Default::default()
        })
        .await?;
    phone
        .handle()
        .set_capabilities(cpns_node::config::CapabilitiesConfig {
            screen: Some("1080x2400".into()),
            power: Some("battery".into()),
            battery_percent: Some(15),
            ..Default::default()
        })
        .await?;
    let mut draft = ServiceDraft::new("Holiday film", ["film"], tv.handle().default_visibility());
    draft.requirements = Requirements {
        needs_screen: true,
        min_battery_percent: Some(40),
        ..Requirements::default()
    };
    let svc = tv.handle().publish(draft, None).await?;
    let (tv_id, phone_id) = (tv.peer_id().to_string(), phone.peer_id().to_string());
    let deadline = tokio::time::Instant::now() + WAIT;
    let m = loop {
        let m = gw.handle().pn_match(&svc.id).await?;
        let ready = m.consumers.contains(&tv_id)
            && m.unable.iter().any(|u| u.peer_id == phone_id)
            && m.best_offerer.as_deref() == Some(tv_id.as_str());
        if ready {
            break m;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the match never settled: {m:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let why = &m
        .unable
        .iter()
        .find(|u| u.peer_id == phone_id)
        .context("phone")?
        .reason;
    ensure!(why.contains("battery"), "{why}");
    ensure!(
        m.unable
            .iter()
            .any(|u| u.peer_id == gw.peer_id().to_string() && u.reason.contains("screen")),
        "{m:?}"
    );
    // A member reads the same from its gateway's inventory.
    let from_phone = phone.handle().pn_match(&svc.id).await?;
    ensure!(from_phone.best_offerer == m.best_offerer);
    lab.shutdown(members.into_iter().chain([gw]).collect())
        .await;
    Ok(())
}
