//! PN establishment end to end (the change request's B.1 steps 1-26): real nodes, a real
//! `cpns-auth`, real libp2p connections on loopback.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cpns_node::views::StatusView;
use cpns_overlay::{Invitee, Status, StatusPolicy};

use crate::util::{Lab, WAIT, init_tracing};

fn gateway_of(s: &StatusView) -> Option<&str> {
    s.gateway.as_deref()
}

/// Two fresh nodes with no gateway pair; exactly one becomes gateway, both agree on it, and
/// the gateway's trace holds steps 1-26 in order with the right senders.
#[tokio::test]
async fn two_fresh_nodes_elect_one_gateway_and_trace_steps_1_to_26() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let a = lab.node("alice", "a").await?;
    let b = lab.node("alice", "b").await?;

    a.handle().pair(b.dial_addr().await?).await?;
    let sa = a
        .handle()
        .wait_until(WAIT, |s| s.pn_id.is_some() && s.members.len() == 2)
        .await?;
    let sb = b
        .handle()
        .wait_until(WAIT, |s| s.pn_id.is_some() && s.members.len() == 2)
        .await?;
    ensure!(
        sa.pn_id.is_some() && sa.pn_id == sb.pn_id,
        "both in one PN: {sa:?} {sb:?}"
    );
    ensure!(
        gateway_of(&sa) == gateway_of(&sb),
        "both agree on the gateway"
    );
    let gateways = [&sa, &sb]
        .iter()
        .filter(|s| s.mode.contains("gateway"))
        .count();
    assert_eq!(
        gateways, 1,
        "exactly one gateway: {} / {}",
        sa.mode, sb.mode
    );

    let (gw, pne) = if sa.mode.contains("gateway") {
        (&a, &b)
    } else {
        (&b, &a)
    };
    let gw_id = gw.peer_id().to_string();
    let pne_id = pne.peer_id().to_string();
    let server = lab.server_peer().to_string();
    let trace: Vec<_> = gw
        .handle()
        .trace()
        .into_iter()
        .filter(|e| e.flow == "B.1")
        .collect();
    let steps: Vec<u32> = trace.iter().map(|e| e.step).collect();
    let expected: Vec<u32> = (1..=26).collect();
    assert_eq!(steps, expected, "gateway trace: {trace:#?}");
    // Senders, as in the change request.
    let from = |step: u32| {
        trace
            .iter()
            .find(|e| e.step == step)
            .map(|e| e.from.clone())
            .unwrap_or_default()
    };
    let to = |step: u32| {
        trace
            .iter()
            .find(|e| e.step == step)
            .map(|e| e.to.clone())
            .unwrap_or_default()
    };
    for step in [6, 7, 8, 10, 12, 15, 16, 19, 22, 24, 26] {
        assert_eq!(from(step), gw_id, "step {step} is sent by the gateway");
    }
    for step in [9, 11, 13, 14, 17, 21, 23] {
        assert_eq!(from(step), server, "step {step} is sent by cpns-auth");
        assert_eq!(to(step), gw_id, "step {step} goes to the gateway");
    }
    for step in [18, 25] {
        assert_eq!(from(step), pne_id, "step {step} is sent by the PNE");
    }
    assert_eq!(to(24), pne_id);
    // The PNE's own trace has its side: 18, 24, 25, 26.
    let pne_steps: Vec<u32> = pne
        .handle()
        .trace()
        .iter()
        .filter(|e| e.flow == "B.1")
        .map(|e| e.step)
        .collect();
    for s in [18, 24, 25, 26] {
        assert!(
            pne_steps.contains(&s),
            "PNE trace lacks step {s}: {pne_steps:?}"
        );
    }
    // Both hold the same PN key epoch.
    assert_eq!(a.handle().pn_epoch(), b.handle().pn_epoch());
    lab.shutdown(vec![a, b]).await;
    Ok(())
}

/// A third node joins the existing gateway (pairing with the PNE leads it to the gateway);
/// the three members share one key epoch and a message sealed by one opens on the others.
#[tokio::test]
async fn third_node_joins_and_three_members_share_one_epoch() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let a = lab.node("alice", "a").await?;
    let b = lab.node("alice", "b").await?;
    let c = lab.node("alice", "c").await?;
    a.handle().pair(b.dial_addr().await?).await?;
    a.handle()
        .wait_until(WAIT, |s| s.members.len() == 2)
        .await?;
    b.handle()
        .wait_until(WAIT, |s| s.members.len() == 2)
        .await?;
    let sa = a.handle().status().await?;
    let gw = gateway_of(&sa).context("gateway")?.to_string();
    let pne = if a.peer_id().to_string() == gw {
        &b
    } else {
        &a
    };

    // c meets the PNE, not the gateway: it is led to the gateway.
    let outcome = c.handle().pair(pne.dial_addr().await?).await?;
    assert_eq!(outcome.result, "joining", "{outcome:?}");
    let sc = c.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    assert_eq!(sc.gateway.as_deref(), Some(gw.as_str()));
    assert_eq!(sc.pn_id, sa.pn_id);

    // Everyone ends on the same epoch (the gateway rotated it when c joined and told b).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let epochs = [
            a.handle().pn_epoch(),
            b.handle().pn_epoch(),
            c.handle().pn_epoch(),
        ];
        if epochs[0].is_some() && epochs.iter().all(|e| *e == epochs[0]) {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("members did not converge on one epoch: {epochs:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for (sender, receivers) in [(&a, [&b, &c]), (&b, [&a, &c]), (&c, [&a, &b])] {
        let sealed = sender.handle().pn_seal(b"for the PN only")?;
        for r in receivers {
            assert_eq!(r.handle().pn_open(&sealed)?, b"for the PN only");
        }
    }
    lab.shutdown(vec![a, b, c]).await;
    Ok(())
}

/// A node of another user joins only once its owner accepted the invitation the pairing
/// left, and is then refused at step 20 until a PN admin invites that user.
#[tokio::test]
async fn another_users_node_is_refused_at_step_20_until_invited() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("bob").await?;
    let gw = lab.gateway_node("alice", "alice-nas").await?;
    gw.handle()
        .wait_for_pn(WAIT)
        .await
        .context("the gateway's PN")?;
    let bob = lab.node("bob", "bob-phone").await?;

    // Pairing alone does not join another user's PN: it leaves an invitation.
    let outcome = bob.handle().pair(gw.dial_addr().await?).await?;
    ensure!(outcome.result == "invitation", "{outcome:?}");
    let id = outcome.invitation.context("no invitation id")?;
    ensure!(
        bob.handle()
            .pn_invitations()
            .iter()
            .any(|i| i.id == id && i.user == "alice"),
        "{:?}",
        bob.handle().pn_invitations()
    );
    // Accepted, the join runs, and cpns-auth refuses it at step 20: bob is not invited.
    let refused = bob.handle().pn_accept(&id).await;
    ensure!(refused.is_err(), "{refused:?}");
    let step20 = wait_trace(&gw, |e| e.step == 20 && e.detail.starts_with("refused")).await;
    ensure!(step20, "no refusal at step 20: {:#?}", gw.handle().trace());
    ensure!(bob.handle().status().await?.pn_id.is_none());

    gw.handle().pn_invite(Invitee::User("bob".into())).await?;
    let outcome = bob.handle().pair(gw.dial_addr().await?).await?;
    let id = outcome.invitation.context("no invitation id")?;
    let pn = bob.handle().pn_accept(&id).await?;
    let s = bob.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    ensure!(
        s.pn_id.as_deref() == Some(pn.as_str()),
        "bob's device admitted after the invitation: {s:?}"
    );
    ensure!(bob.handle().pn_invitations().is_empty());
    lab.shutdown(vec![gw, bob]).await;
    Ok(())
}

/// A revoked node is refused at step 2 by a peer that learned the revocation list.
#[tokio::test]
async fn revoked_node_is_refused_at_step_2() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let gw = lab.gateway_node("alice", "nas").await?;
    gw.handle().wait_for_pn(WAIT).await.context("PN")?;
    let tv = lab.node("alice", "tv").await?;
    tv.handle().pair(gw.dial_addr().await?).await?;
    tv.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    let bad = lab.node("alice", "stolen-phone").await?;
    lab.admin().revoke(&bad.peer_id().to_string()).await?;
    // The server pushes the new list to its live gateway sessions.
    let deadline = tokio::time::Instant::now() + WAIT;
    let refused = loop {
        match bad.handle().pair(gw.dial_addr().await?).await {
            Err(e) if e.to_string().contains("revoked") => break e.to_string(),
            other => {
                if tokio::time::Instant::now() > deadline {
                    bail!("a revoked node was not refused: {other:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        refused.contains("step 1") || refused.contains("step 2"),
        "{refused}"
    );
    let trace = gw.handle().trace();
    assert!(
        trace
            .iter()
            .any(|e| e.step == 2 && e.detail.contains("revoked")),
        "the gateway traced the refusal at step 2"
    );
    // A PNE that never talked to the server learned the list from its gateway: it refuses
    // the revoked device too.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match bad.handle().pair(tv.dial_addr().await?).await {
            Err(e) if e.to_string().contains("revoked") => break,
            other => {
                if tokio::time::Instant::now() > deadline {
                    bail!("a PNE did not refuse the revoked node: {other:?}");
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    assert!(
        tv.handle()
            .trace()
            .iter()
            .any(|e| e.step == 2 && e.detail.contains("revoked")),
        "the PNE traced the refusal at step 2"
    );
    lab.shutdown(vec![gw, tv, bad]).await;
    Ok(())
}

/// A status subscription delivers a notification when a PNE goes Busy and when it
/// disappears (Offline).
#[tokio::test]
async fn status_subscription_notifies_busy_and_offline() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let gw = lab.gateway_node("alice", "nas").await?;
    gw.handle().wait_for_pn(WAIT).await.context("PN")?;
    let watcher = lab.node("alice", "watcher").await?;
    let phone = lab.node("alice", "phone").await?;
    for n in [&watcher, &phone] {
        n.handle().pair(gw.dial_addr().await?).await?;
        n.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    }
    let mut notes = watcher.handle().watch_notifications();
    watcher
        .handle()
        .subscribe_status(
            phone.peer_id(),
            StatusPolicy {
                on_change: true,
                ..Default::default()
            },
        )
        .await?;
    phone
        .handle()
        .set_status(Status::Busy {
            reason: "in a call".into(),
        })
        .await?;
    let n = tokio::time::timeout(WAIT, notes.recv()).await??;
    assert_eq!(n.target, phone.peer_id().to_string());
    assert_eq!(n.status, "busy");
    assert_eq!(n.reason.as_deref(), Some("in a call"));

    let phone_id = phone.peer_id().to_string();
    phone.shutdown().await;
    let n = tokio::time::timeout(WAIT, async {
        loop {
            let n = notes.recv().await?;
            if n.target == phone_id && n.status == "offline" {
                return Ok::<_, anyhow::Error>(n);
            }
        }
    })
    .await??;
    assert_eq!(n.status, "offline");
    lab.shutdown(vec![gw, watcher]).await;
    Ok(())
}

async fn wait_trace(
    node: &crate::util::LabNode,
    pred: impl Fn(&cpns_node::trace::TraceEvent) -> bool,
) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if node.handle().trace().iter().any(&pred) {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Two households' gateways share the community DHT: one asks for the other's PN Inventory,
/// answered by the gateway's signed summary record (5.6.9, remote PN).
#[tokio::test]
async fn a_remote_pn_inventory_comes_from_the_dht() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("bob").await?;
    let alice = lab.gateway_node("alice", "alice-router").await?;
    let alice_pn = alice
        .handle()
        .wait_for_pn(WAIT)
        .await
        .context("alice's PN")?;
    let bob = lab
        .node_bootstrapping(
            "bob",
            "bob-router",
            cpns_node::ModeSetting::Gateway,
            alice.dial_addr().await?,
        )
        .await?;
    bob.handle().wait_for_pn(WAIT).await.context("bob's PN")?;
    let deadline = tokio::time::Instant::now() + WAIT;
    let summary = loop {
        match bob.handle().pn_inventory(Some(alice_pn.clone())).await {
            Ok(s) => break s,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => bail!("alice's PN summary never reached bob: {e}"),
        }
    };
    assert_eq!(summary.pn_id, alice_pn);
    assert_eq!(summary.gateway, alice.peer_id());
    assert_eq!(summary.owner, "alice");
    lab.shutdown(vec![alice, bob]).await;
    Ok(())
}

/// An event-triggered report (5.6.2): a subscriber's policy asks to hear when a PNE's battery
/// falls below 20 %; the PNE's battery runs down (a capability override, as a lab would
/// simulate it) and the subscriber is notified once it crosses the threshold, not before.
#[tokio::test]
async fn battery_below_threshold_triggers_a_notification() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let gw = lab.gateway_node("alice", "nas").await?;
    gw.handle().wait_for_pn(WAIT).await.context("PN")?;
    let watcher = lab.node("alice", "watcher").await?;
    let phone = lab.node("alice", "phone").await?;
    let on_battery = |pct: u8| cpns_node::config::CapabilitiesConfig {
        power: Some("battery".into()),
        battery_percent: Some(pct),
        ..Default::default()
    };
    phone.handle().set_capabilities(on_battery(60)).await?;
    for n in [&watcher, &phone] {
        n.handle().pair(gw.dial_addr().await?).await?;
        n.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    }
    let mut notes = watcher.handle().watch_notifications();
    watcher
        .handle()
        .subscribe_status(
            phone.peer_id(),
            StatusPolicy {
                on_change: false,
                battery_below: Some(20),
                ..Default::default()
            },
        )
        .await?;
    // 60 % -> 45 %: a material change, reported, but above the threshold: no notification.
    phone.handle().set_capabilities(on_battery(45)).await?;
    // 45 % -> 15 %: crosses 20 %.
    phone.handle().set_capabilities(on_battery(15)).await?;
    let n = tokio::time::timeout(WAIT, notes.recv()).await??;
    assert_eq!(n.target, phone.peer_id().to_string());
    assert_eq!(n.trigger, "battery_below");
    assert_eq!(n.battery_percent, Some(15));
    assert!(
        watcher
            .handle()
            .notifications()
            .iter()
            .all(|n| n.battery_percent != Some(45)),
        "no notification above the threshold"
    );
    lab.shutdown(vec![gw, watcher, phone]).await;
    Ok(())
}

/// Waits (bounded) until `check` holds on `node`'s view of its PN Inventory.
async fn wait_inventory(
    node: &crate::util::LabNode,
    check: impl Fn(&cpns_overlay::PnInventorySummary) -> bool,
) -> Result<cpns_overlay::PnInventorySummary> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let inv = node.handle().pn_inventory(None).await?;
        if check(&inv) {
            return Ok(inv);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the inventory never got there: {inv:#?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// One PN Inventory (5.6.9): per member the mode, serial, user, device, addresses, current
/// capabilities (refreshed on every capabilities update, 5.6.1), status and the services it
/// offers — the gateway's, which every member reads, kept durably across a restart.
#[tokio::test]
async fn the_inventory_holds_capabilities_status_and_services() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["laptop"]).await?;
    let laptop = &members[0];
    let me = laptop.peer_id();
    let vis = laptop.handle().default_visibility();
    let svc = laptop
        .handle()
        .publish(
            cpns_directory::ServiceDraft::new("Laptop printer", ["printer"], vis),
            None,
        )
        .await?;
    laptop
        .handle()
        .set_capabilities(cpns_node::config::CapabilitiesConfig {
            power: Some("battery".into()),
            battery_percent: Some(41),
            ..Default::default()
        })
        .await?;
    let entry = |inv: &cpns_overlay::PnInventorySummary| {
        inv.details.iter().find(|d| d.peer_id == me).cloned()
    };
    let has_all = |inv: &cpns_overlay::PnInventorySummary| {
        entry(inv).is_some_and(|d| {
            d.services.contains(&svc.id)
                && d.capabilities
                    .as_ref()
                    .is_some_and(|c| c.dynamic.battery_percent == Some(41))
        }) && inv.services.contains(&svc.id)
    };
    let at_gateway = wait_inventory(&gw, has_all).await?;
    let m = at_gateway
        .members
        .iter()
        .find(|m| m.peer_id == me)
        .context("the laptop is listed")?;
    ensure!(m.user == "alice" && m.device == "laptop" && m.serial > 0 && m.expires > 0);
    ensure!(!m.listen_addrs.is_empty());
    // A member reads the same inventory from its gateway.
    wait_inventory(laptop, has_all).await?;
    // Busy shows in the inventory.
    laptop
        .handle()
        .set_status(cpns_overlay::Status::Busy {
            reason: "call".into(),
        })
        .await?;
    wait_inventory(&gw, |inv| {
        inv.members
            .iter()
            .any(|m| m.peer_id == me && matches!(m.status, cpns_overlay::Status::Busy { .. }))
    })
    .await?;
    // Durable: the gateway restarted has the same entry (capabilities, services).
    let gw = gw.stop().await.start().await?;
    let after = gw.handle().pn_inventory(None).await?;
    let d = entry(&after).context("the laptop after the restart")?;
    ensure!(d.services.contains(&svc.id), "{d:?}");
    ensure!(
        d.capabilities
            .as_ref()
            .is_some_and(|c| c.dynamic.battery_percent == Some(41)),
        "{d:?}"
    );
    lab.shutdown(members.into_iter().chain([gw]).collect())
        .await;
    Ok(())
}
