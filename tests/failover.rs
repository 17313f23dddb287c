//! Switching a PN's gateway (5.6.9): a member takes the role over when the gateway falls
//! silent, or when its owner asks; the other members follow; a gateway that comes back after
//! its PN moved on joins it as a PNE.

use anyhow::{Context, Result, ensure};
use cpns_directory::ServiceDraft;
use cpns_node::ModeSetting;

use crate::util::{Lab, LabNode, WAIT, init_tracing, same_epoch};

/// Fast failover for tests: heartbeats every second, failover after 3 s of silence.
fn fast_failover(c: &mut cpns_node::Config) {
    c.status.gateway_failover_after_secs = 3;
}

/// Waits until every node names `gateway` as its PN's gateway.
async fn all_follow(nodes: &[&LabNode], gateway: &str) -> Result<()> {
    for n in nodes {
        let g = gateway.to_owned();
        n.handle()
            .wait_until(WAIT, move |s| s.gateway.as_deref() == Some(g.as_str()))
            .await
            .with_context(|| format!("{} never followed gateway {gateway}", n.peer_id()))?;
    }
    Ok(())
}

/// The gateway dies: within a bounded time one member (the first by the election's rule among
/// those `cpns-auth` lists; here all run on one machine and tie, so the greatest PeerId) takes
/// the role over, the other re-joins through it, both hold the same
/// PN key epoch, services are published and found again, and the switch is in the trace.
/// Then the old gateway comes back on its data dir and joins the PN as a PNE.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_gateway_is_replaced_and_comes_back_as_a_pne() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab
        .pn_configured("alice", "router", &["nas", "phone"], fast_failover)
        .await?;
    let old_gateway = gw.peer_id().to_string();
    let mut ranked: Vec<&LabNode> = members.iter().collect();
    ranked.sort_by_key(|n| std::cmp::Reverse(n.peer_id().to_bytes()));
    let (first, second) = (ranked[0], ranked[1]);
    let epoch_before = same_epoch(&[&gw, first, second]).await?;

    // The gateway stops; its data dir stays for its return.
    let stopped = gw.stop().await;

    let new_gateway = first.peer_id().to_string();
    all_follow(&[first, second], &new_gateway).await?;
    let s = first.handle().status().await?;
    ensure!(
        s.mode.contains("gateway") && s.dht_mode == "server",
        "{s:?}"
    );
    let epoch = same_epoch(&[first, second]).await?;
    ensure!(
        epoch >= epoch_before,
        "epoch went back: {epoch} < {epoch_before}"
    );
    let steps: Vec<(String, u32, String)> = second
        .handle()
        .trace()
        .into_iter()
        .filter(|e| e.flow == "5.6.9")
        .map(|e| (e.flow, e.step, e.message))
        .collect();
    ensure!(
        steps.iter().any(|(_, step, _)| *step == 4),
        "the re-join is traced: {steps:?}"
    );
    ensure!(
        first
            .handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.step == 2),
        "the take-over is traced"
    );

    // The PN works through its new gateway: a service published by one is found by the other.
    let vis = second.handle().default_visibility();
    let printer = second
        .handle()
        .publish(ServiceDraft::new("Hall printer", ["printer"], vis), None)
        .await?;
    crate::util::finds(first, "printer", &printer.id).await?;

    // The old gateway comes back: cpns-auth names the new gateway, and it joins as a PNE.
    let back = stopped.start().await?;
    back.handle()
        .wait_until(WAIT, {
            let g = new_gateway.clone();
            move |s| s.gateway.as_deref() == Some(g.as_str()) && s.mode == "pne"
        })
        .await
        .context("the old gateway did not join the new one")?;
    let s = back.handle().status().await?;
    ensure!(s.peer_id == old_gateway);
    ensure!(s.mode_setting == "auto", "{s:?}");
    first
        .handle()
        .wait_until(WAIT, {
            let old = old_gateway.clone();
            move |s| {
                s.members
                    .iter()
                    .any(|m| m.peer_id == old && m.status == "online")
            }
        })
        .await
        .context("the new gateway does not list the old one as an online member")?;
    same_epoch(&[first, second, &back]).await?;
    let mut all = members;
    all.push(back);
    lab.shutdown(all).await;
    Ok(())
}

/// A planned switch: the owner makes a PNE the gateway (`cpns mode set gateway`); the old
/// gateway, alive, becomes a PNE of the PN and every member follows the new gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mode_set_gateway_on_a_pne_switches_the_pns_gateway() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (nas, phone) = (&members[0], &members[1]);
    let pn_before = gw.handle().status().await?.pn_id;

    nas.handle().set_mode(ModeSetting::Gateway).await?;
    let new_gateway = nas.peer_id().to_string();
    all_follow(&[&gw, nas, phone], &new_gateway).await?;
    let old = gw.handle().status().await?;
    ensure!(old.mode == "pne", "the old gateway is a PNE now: {old:?}");
    ensure!(old.pn_id == pn_before, "same PN: {old:?}");
    ensure!(nas.handle().status().await?.pn_id == pn_before);
    same_epoch(&[&gw, nas, phone]).await?;
    let info = lab
        .admin()
        .show_pn(pn_before.as_deref().context("pn id")?)
        .await?;
    ensure!(info.gateway == new_gateway, "cpns-auth's record: {info:?}");

    let mut all = vec![gw];
    all.extend(members);
    lab.shutdown(all).await;
    Ok(())
}
