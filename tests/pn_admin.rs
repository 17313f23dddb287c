//! PN Admin and Adminees (5.6.9, 3.2) through real nodes and a real cpns-auth: who becomes
//! admin and how, an admin's change of an Adminee reaching every member and applied by the
//! Adminee, the refusal of a non-admin's change, and an expulsion by an admin that is not
//! the gateway removing the member everywhere.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cpns_directory::ServiceDraft;
use cpns_overlay::{AdmineeSettings, Invitee};

use crate::util::{Lab, LabNode, WAIT, init_tracing, same_epoch};

/// Polls `check` on a node until it holds (bounded by [`WAIT`]).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Another user's device, invited and accepted into `gw`'s PN.
pub async fn invited(lab: &Lab, gw: &LabNode, user: &str, device: &str) -> Result<LabNode> {
    gw.handle().pn_invite(Invitee::User(user.into())).await?;
    let n = lab.node(user, device).await?;
    let outcome = n.handle().pair(gw.dial_addr().await?).await?;
    let id = outcome.invitation.context("no invitation")?;
    n.handle().pn_accept(&id).await?;
    n.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    Ok(n)
}

/// A device of the owner user is admin as soon as it asks; another user's device waits for
/// an admin's approval and cannot change anything meanwhile. An admin's change of an
/// Adminee (label, may not be gateway, shows no services, its status policy) is stored at
/// cpns-auth, reaches every member's PN Inventory, and the Adminee applies it: it becomes a
/// PNE that stands for no election, its services leave the inventory, and it heartbeats at
/// the new period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admins_are_granted_by_policy_and_an_adminee_change_reaches_every_member() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("bob").await?;
    let (gw, members) = lab.pn("alice", "router", &["nas"]).await?;
    let nas = &members[0];
    let bob = invited(&lab, &gw, "bob", "bob-phone").await?;
    same_epoch(&[&gw, nas, &bob]).await?;

    let info = nas.handle().pn_admin_request().await?;
    ensure!(info.admins.contains(&nas.peer_id()), "{info:?}");
    let info = bob.handle().pn_admin_request().await?;
    ensure!(
        info.pending.contains(&bob.peer_id()) && !info.admins.contains(&bob.peer_id()),
        "another user's device waits: {info:?}"
    );
    let refused = bob
        .handle()
        .pn_admin_set(
            nas.peer_id(),
            AdmineeSettings {
                label: Some("mine now".into()),
                ..Default::default()
            },
        )
        .await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("only a PN admin")),
        "a non-admin's change is refused: {refused:?}"
    );
    let info = nas.handle().pn_admin_approve(bob.peer_id()).await?;
    ensure!(
        info.admins.contains(&bob.peer_id()) && info.pending.is_empty(),
        "{info:?}"
    );

    // Bob's device offers a service the PN sees.
    let vis = bob.handle().default_visibility();
    let svc = bob
        .handle()
        .publish(ServiceDraft::new("Bob's camera", ["camera"], vis), None)
        .await?;
    let bob_id = bob.peer_id();
    let offers = |gw: &LabNode| {
        let h = gw.handle();
        let id = svc.id.clone();
        async move {
            let inv = h.pn_inventory(None).await?;
            anyhow::Ok(
                inv.details
                    .iter()
                    .any(|d| d.peer_id == bob_id && d.services.contains(&id)),
            )
        }
    };
    eventually("bob's service in the inventory", async || offers(&gw).await).await?;

    let settings = AdmineeSettings {
        label: Some("Bob's phone".into()),
        may_be_gateway: Some(false),
        services_shown: Some(Vec::new()),
        heartbeat_secs: Some(2),
        offline_after_secs: Some(9),
        ..Default::default()
    };
    let info = nas.handle().pn_admin_set(bob_id, settings.clone()).await?;
    ensure!(info.settings_of(&bob_id) == settings, "{info:?}");
    // A bad value is refused before it reaches anyone.
    let bad = nas
        .handle()
        .pn_admin_set(
            bob_id,
            AdmineeSettings {
                heartbeat_secs: Some(0),
                ..Default::default()
            },
        )
        .await;
    ensure!(bad.is_err(), "{bad:?}");

    for n in [&gw, nas, &bob] {
        let h = n.handle();
        let want = settings.clone();
        eventually("the Adminee settings in every member's view", async || {
            Ok(h.pn_admin_known()
                .is_some_and(|a| a.settings_of(&bob_id) == want))
        })
        .await?;
    }
    // The Adminee applied them: a PNE, no longer a candidate, its services hidden.
    let h = bob.handle();
    eventually("the Adminee to be set to pne", async || {
        Ok(h.status().await?.mode_setting == "pne")
    })
    .await?;
    eventually("bob's service to leave the inventory", async || {
        Ok(!offers(&gw).await?)
    })
    .await?;
    ensure!(
        bob.handle().status().await?.heartbeat_secs == 2,
        "the Adminee heartbeats at the admin's period"
    );
    ensure!(
        bob.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "AdmineeSettingsApplied"),
        "the Adminee's step is traced"
    );
    ensure!(
        gw.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "PnChanged"),
        "the server's push to the gateway is traced"
    );
    // The settings are durable at cpns-auth: a fresh read from the server has them.
    let listed = gw.handle().pn_admins().await?;
    ensure!(listed.settings_of(&bob_id) == settings, "{listed:?}");
    lab.shutdown(members.into_iter().chain([gw, bob]).collect())
        .await;
    Ok(())
}

/// An admin that is not the gateway expels a member: cpns-auth rotates the key, the gateway
/// drops the member from its list and every member's, the expelled device is told (its own
/// status then shows no PN) and refused, and it cannot invite itself back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expulsion_by_an_admin_that_is_not_the_gateway_reaches_everyone() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["nas", "tv"]).await?;
    let (nas, tv) = (&members[0], &members[1]);
    let epoch = same_epoch(&[&gw, nas, tv]).await?;
    let tv_id = tv.peer_id();

    nas.handle().pn_admin_request().await?;
    let new_epoch = nas.handle().pn_expel(tv_id).await?;
    ensure!(new_epoch > epoch, "the key rotates");

    for n in [&gw, nas] {
        let h = n.handle();
        eventually("the expelled member to leave every list", async || {
            let s = h.status().await?;
            Ok(!s.members.iter().any(|m| m.peer_id == tv_id.to_string()))
        })
        .await?;
    }
    let h = tv.handle();
    eventually("the expelled device to show no PN", async || {
        Ok(h.status().await?.pn_id.is_none())
    })
    .await?;
    ensure!(same_epoch(&[&gw, nas]).await? == new_epoch);
    ensure!(
        gw.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "MemberRemovedByAdmin"),
        "the gateway's removal is traced"
    );
    // The expelled device cannot come back by itself.
    let pn = gw.handle().status().await?.pn_id.context("PN")?;
    let back = lab.admin().show_pn(&pn).await?;
    ensure!(!back.members.contains(&tv_id.to_string()), "{back:?}");
    let outcome = tv.handle().pair(gw.dial_addr().await?).await;
    ensure!(
        outcome.is_err() || tv.handle().status().await?.pn_id.is_none(),
        "an expelled device is refused: {outcome:?}"
    );
    lab.shutdown(members.into_iter().chain([gw]).collect())
        .await;
    Ok(())
}

/// An admin that is not the gateway releases the PN from its own node: cpns-auth deletes it
/// and tells the gateway, which tells every member; all of them then show no PN. A member
/// that is not an admin cannot.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_admin_releases_the_pn_from_a_member_that_is_not_the_gateway() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("bob").await?;
    let (gw, members) = lab.pn("alice", "router", &["nas", "tv"]).await?;
    let bob = invited(&lab, &gw, "bob", "bob-phone").await?;
    let pn = gw.handle().status().await?.pn_id.context("PN")?;

    let refused = bob.handle().pn_release().await;
    ensure!(
        refused
            .as_ref()
            .is_err_and(|e| e.to_string().contains("admin")),
        "a member of another user that is no admin cannot release: {refused:?}"
    );
    let released = members[0].handle().pn_release().await?;
    ensure!(released == pn);
    for n in members.iter().chain([&gw, &bob]) {
        let h = n.handle();
        eventually("every node to show no PN", async || {
            Ok(h.status().await?.pn_id.is_none())
        })
        .await?;
    }
    ensure!(
        lab.admin().show_pn(&pn).await.is_err(),
        "the PN is gone at cpns-auth"
    );
    ensure!(
        gw.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "PnReleasedByAdmin"),
        "traced at the gateway"
    );
    lab.shutdown(members.into_iter().chain([gw, bob]).collect())
        .await;
    Ok(())
}

/// Invitations with consent (5.6.9): an admin's invite at cpns-auth reaches the invited
/// device (it asks on its period) without any pairing; it joins only when its owner accepts.
/// An invitation declined is forgotten by cpns-auth too: the device's later join through the
/// same gateway is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_reaches_the_invitee_and_takes_effect_only_when_accepted() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    for u in ["alice", "bob", "carol"] {
        lab.user(u).await?;
    }
    let (gw, _) = lab.pn("alice", "router", &[]).await?;
    let pn_id = gw.handle().status().await?.pn_id.context("gw's PN")?;
    let asks = |c: &mut cpns_node::Config| c.invitation_poll_secs = 1;
    let mode = cpns_node::ModeSetting::Auto;
    let bob = lab.node_configured("bob", "bob-phone", mode, asks).await?;
    let carol = lab
        .node_configured("carol", "carol-tab", mode, asks)
        .await?;

    gw.handle()
        .pn_invite(Invitee::Entity(bob.peer_id()))
        .await?;
    gw.handle().pn_invite(Invitee::User("carol".into())).await?;
    let from_server = |n: &LabNode| {
        n.handle()
            .pn_invitations()
            .into_iter()
            .find(|i| i.source == "server" && i.pn_id.as_deref() == Some(pn_id.as_str()))
    };
    eventually("bob's invitation", async || Ok(from_server(&bob).is_some())).await?;
    let inv = from_server(&bob).context("bob's invitation")?;
    ensure!(inv.gateway == gw.peer_id().to_string(), "{inv:?}");
    ensure!(!inv.gateway_addrs.is_empty(), "no gateway address: {inv:?}");
    ensure!(
        bob.handle().status().await?.pn_id.is_none(),
        "an invitation alone joins nothing"
    );
    let joined = bob.handle().pn_accept(&inv.id).await?;
    ensure!(joined == pn_id, "bob joined {joined}");
    same_epoch(&[&gw, &bob]).await?;
    ensure!(bob.handle().pn_invitations().is_empty());

    eventually("carol's invitation", async || {
        Ok(from_server(&carol).is_some())
    })
    .await?;
    let inv = from_server(&carol).context("carol's invitation")?;
    carol.handle().pn_decline(&inv.id).await?;
    ensure!(from_server(&carol).is_none(), "declined, still listed");
    // cpns-auth forgot it: the invitation does not come back, and a join is refused.
    eventually("the decline reaching cpns-auth", async || {
        let info = lab.admin().show_pn(&pn_id).await?;
        Ok(!info.invited_users.iter().any(|u| u == "carol"))
    })
    .await?;
    let outcome = carol.handle().pair(gw.dial_addr().await?).await?;
    let id = outcome.invitation.context("pairing leaves an invitation")?;
    let refused = carol.handle().pn_accept(&id).await;
    ensure!(
        refused.is_err(),
        "carol joined after declining: {refused:?}"
    );
    ensure!(carol.handle().status().await?.pn_id.is_none());
    lab.shutdown(vec![gw, bob, carol]).await;
    Ok(())
}

/// The push of an invitation (5.6.9): a device that is online (it has a live session with
/// cpns-auth) and does not ask for its invitations again within the test (it asked once at
/// start; `invitation_poll_secs` is an hour) lists an admin's invitation once the server
/// pushed it. Accepted, the device is a member (its
/// status shows the PN, on the PN's key epoch); declined, it stays out and cpns-auth forgets
/// the invitation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_invitation_pushed_to_an_online_device_is_accepted_or_declined() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    for u in ["alice", "bob", "carol"] {
        lab.user(u).await?;
    }
    let (gw, _) = lab.pn("alice", "router", &[]).await?;
    let pn_id = gw.handle().status().await?.pn_id.context("gw's PN")?;
    // Asks once, at start (which opens its session with cpns-auth), then not for an hour:
    // an invitation made afterwards reaches it in time only by the server's push.
    let never_asks = |c: &mut cpns_node::Config| c.invitation_poll_secs = 3600;
    let mode = cpns_node::ModeSetting::Auto;
    let bob = lab
        .node_configured("bob", "bob-phone", mode, never_asks)
        .await?;
    let carol = lab
        .node_configured("carol", "carol-tab", mode, never_asks)
        .await?;
    // Both are online: cpns-auth holds a live session of each (what the push goes to).
    for n in [&bob, &carol] {
        let peer = n.peer_id().to_string();
        eventually("a live session at cpns-auth", async || {
            Ok(lab.admin().show_entity(&peer).await?.online)
        })
        .await?;
    }
    let from_server = |n: &LabNode| {
        n.handle()
            .pn_invitations()
            .into_iter()
            .find(|i| i.source == "server" && i.pn_id.as_deref() == Some(pn_id.as_str()))
    };
    let pushed = |n: &LabNode| {
        n.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "PnInvitation")
    };

    gw.handle()
        .pn_invite(Invitee::Entity(bob.peer_id()))
        .await?;
    eventually("the invitation pushed to bob", async || {
        Ok(from_server(&bob).is_some())
    })
    .await?;
    ensure!(
        pushed(&bob),
        "the pushed invitation is traced at bob's node"
    );
    let inv = from_server(&bob).context("bob's invitation")?;
    ensure!(inv.gateway == gw.peer_id().to_string(), "{inv:?}");
    ensure!(
        bob.handle().status().await?.pn_id.is_none(),
        "an invitation alone joins nothing"
    );
    let joined = bob.handle().pn_accept(&inv.id).await?;
    ensure!(joined == pn_id, "bob joined {joined}");
    let s = bob
        .handle()
        .wait_until(WAIT, |s| s.pn_id.as_deref() == Some(pn_id.as_str()))
        .await?;
    ensure!(
        s.pn_id.as_deref() == Some(pn_id.as_str()),
        "bob's status shows no PN: {s:?}"
    );
    same_epoch(&[&gw, &bob]).await?;
    ensure!(bob.handle().pn_invitations().is_empty());

    gw.handle()
        .pn_invite(Invitee::Entity(carol.peer_id()))
        .await?;
    eventually("the invitation pushed to carol", async || {
        Ok(from_server(&carol).is_some())
    })
    .await?;
    ensure!(pushed(&carol));
    let inv = from_server(&carol).context("carol's invitation")?;
    carol.handle().pn_decline(&inv.id).await?;
    ensure!(from_server(&carol).is_none(), "declined, still listed");
    let info = lab.admin().show_pn(&pn_id).await?;
    let carol_id = carol.peer_id().to_string();
    ensure!(
        !info.invited_entities.contains(&carol_id),
        "cpns-auth still invites carol after the decline: {info:?}"
    );
    ensure!(
        !info.members.contains(&carol_id),
        "carol is a member after declining: {info:?}"
    );
    ensure!(carol.handle().status().await?.pn_id.is_none());
    lab.shutdown(vec![gw, bob, carol]).await;
    Ok(())
}
