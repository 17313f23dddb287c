//! Merging PNs and splitting a PN (5.6.9): at cpns-auth with devices that speak the protocol
//! (consent of an admin of each PN, the refusals, one PN afterwards, the keys of both sides
//! after a split), and through real nodes (the members of the merged PN join the other's
//! gateway; a member split off cannot open what the PN it left seals afterwards).

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cpns_keys::{GroupKey, Modes};
use cpns_overlay::{AuthMessage, ErrorCode, Message, NodeMode, PnRecordInfo};

use crate::auth::{Device, establish, expect_code, membership, start_server};
use crate::util::{Lab, LabNode, WAIT, finds, init_tracing, same_epoch};

fn merge_answer(m: Message) -> Result<(bool, PnRecordInfo)> {
    match m {
        Message::Auth(AuthMessage::PnMergeAnswer { merged, pn, .. }) => Ok((merged, pn)),
        other => bail!("PnMergeAnswer expected, got {other:?}"),
    }
}

/// A member's own grant of its PN's current key.
async fn pulled_key(d: &Device, pn_id: &str) -> Result<GroupKey> {
    match d
        .request(AuthMessage::PnKeyPull {
            pn_id: pn_id.to_owned(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnKeyResponse { grants, .. }) => d.open_member(&grants),
        other => bail!("PnKeyResponse expected, got {other:?}"),
    }
}

/// A PN of a gateway device and one more member, both of `user`.
async fn pn_of_two(
    admin: &cpns_auth::Admin,
    seed: u8,
    user: &str,
) -> Result<(Device, Device, PnRecordInfo)> {
    let mut gw = Device::enrol_with(admin, seed, user, Modes::ALL, "gw").await?;
    let member = Device::enrol_with(admin, seed + 1, user, Modes::ALL, "member").await?;
    let (pn, _) = establish(&mut gw).await?;
    let (decision, _) = membership(&gw, member.setup(&pn.pn_id, gw.peer())).await?;
    ensure!(
        decision == cpns_overlay::MembershipDecision::Admitted,
        "{decision:?}"
    );
    member.auth(NodeMode::Pne).await?;
    let pn = match gw
        .request(AuthMessage::PnInfoRequest {
            pn_id: pn.pn_id.clone(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnInfo(info)) => info,
        other => bail!("PnInfo expected, got {other:?}"),
    };
    Ok((gw, member, pn))
}

/// Alice's PN and Bob's PN merge only once an admin of each consented: one consent alone
/// changes nothing, no admin of one PN can give the other's consent, and a member that is no
/// admin (Carol's tablet in Bob's PN) can give none. Then cpns-auth
/// holds one PN (the first to consent keeps its id; its key rotates once; the other PN is
/// released), and a member of the released PN is led to the merged one (its record, where
/// its gateway listens, its key). A split then puts bob's devices in a new PN with its own
/// key, the PN they left rotates, and neither side opens what the other seals.
#[tokio::test]
async fn a_merge_needs_both_admins_and_a_split_gives_each_side_its_own_key() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    admin.create_user("bob").await?;
    let (alice_gw, alice_phone, x) = pn_of_two(&admin, 161, "alice").await?;
    let (mut bob_gw, bob_phone, y) = pn_of_two(&admin, 163, "bob").await?;
    // Carol's tablet is a member of Bob's PN, not an admin of it.
    admin.create_user("carol").await?;
    let carol = Device::enrol_with(&admin, 165, "carol", Modes::ALL, "carol-tablet").await?;
    bob_gw
        .request(AuthMessage::PnInvite {
            pn_id: y.pn_id.clone(),
            invitee: cpns_overlay::Invitee::Entity(carol.peer()),
        })
        .await?;
    let (decision, y) = membership(&bob_gw, carol.setup(&y.pn_id, bob_gw.peer())).await?;
    ensure!(decision == cpns_overlay::MembershipDecision::Admitted);
    carol.auth(NodeMode::Pne).await?;
    let merge = |pn: &PnRecordInfo, with: &PnRecordInfo| AuthMessage::PnMergeRequest {
        pn_id: pn.pn_id.clone(),
        with: with.pn_id.clone(),
    };

    // Alice's admin consents: stored, nothing merged.
    let (merged, pn) = merge_answer(alice_gw.request(merge(&x, &y)).await?)?;
    ensure!(!merged && pn.pn_id == x.pn_id, "{pn:?}");
    // Alice's devices cannot give Bob's PN's consent, and asking again is no second PN's.
    expect_code(alice_gw.request(merge(&y, &x)).await, ErrorCode::Forbidden)?;
    expect_code(
        alice_phone.request(merge(&y, &x)).await,
        ErrorCode::Forbidden,
    )?;
    let (merged, _) = merge_answer(alice_phone.request(merge(&x, &y)).await?)?;
    ensure!(!merged, "a second consent of the same PN merges nothing");
    // A member of Bob's PN that is not its admin cannot consent for it.
    let refused = carol.request(merge(&y, &x)).await;
    expect_code(refused, ErrorCode::Forbidden)?;
    for (pn, members) in [(&x, 2), (&y, 3)] {
        let view = admin.show_pn(&pn.pn_id).await?;
        ensure!(
            view.members.len() == members && view.epoch == pn.epoch,
            "nothing changed without the other admin's consent: {view:?}"
        );
    }

    // Bob's admin consents: one PN.
    let (merged, pn) = merge_answer(bob_gw.request(merge(&y, &x)).await?)?;
    ensure!(merged && pn.pn_id == x.pn_id, "{pn:?}");
    ensure!(pn.epoch == x.epoch + 1, "one new key epoch: {pn:?}");
    for d in [&alice_gw, &alice_phone, &bob_gw, &bob_phone, &carol] {
        ensure!(
            pn.members.contains(&d.peer()),
            "{} missing: {pn:?}",
            d.peer()
        );
    }
    ensure!(
        admin.show_pn(&y.pn_id).await.is_err(),
        "the other PN is released"
    );
    ensure!(admin.list_pns().await?.len() == 1, "one PN at cpns-auth");
    // Bob's gateway was told where its PN went.
    let pushed = bob_gw
        .next_push("the move", |m| matches!(m, AuthMessage::PnMoved { .. }))
        .await?;
    let AuthMessage::PnMoved { from, to } = pushed else {
        unreachable!()
    };
    ensure!(from == y.pn_id && to.pn_id == x.pn_id && to.gateway == alice_gw.peer());
    // A member of the released PN that missed it is led to the merged PN.
    match bob_phone
        .request(AuthMessage::PnInfoRequest {
            pn_id: y.pn_id.clone(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnInfo(info)) => ensure!(info.pn_id == x.pn_id, "{info:?}"),
        other => bail!("PnInfo expected, got {other:?}"),
    }
    match bob_phone
        .request(AuthMessage::PnMoveLookup {
            pn_id: y.pn_id.clone(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnMoved { to, .. }) => {
            ensure!(to.pn_id == x.pn_id && to.gateway == alice_gw.peer())
        }
        other => bail!("PnMoved expected, got {other:?}"),
    }
    // Someone who did not move is not led anywhere.
    expect_code(
        alice_phone
            .request(AuthMessage::PnMoveLookup {
                pn_id: y.pn_id.clone(),
            })
            .await,
        ErrorCode::NotFound,
    )?;
    // One key for all four.
    let k_alice = pulled_key(&alice_phone, &x.pn_id).await?;
    let k_bob = pulled_key(&bob_phone, &x.pn_id).await?;
    let sealed = k_alice.seal(&alice_phone.peer(), b"holiday photos");
    ensure!(k_bob.open(&sealed)? == b"holiday photos");

    // Split: the gateway cannot be split off; an empty or foreign list is refused.
    let split = |members: Vec<_>, gateway| AuthMessage::PnSplitRequest {
        pn_id: x.pn_id.clone(),
        members,
        gateway,
    };
    expect_code(
        alice_phone
            .request(split(vec![alice_gw.peer()], alice_gw.peer()))
            .await,
        ErrorCode::Conflict,
    )?;
    expect_code(
        alice_phone
            .request(split(vec![bob_phone.peer()], bob_gw.peer()))
            .await,
        ErrorCode::BadRequest,
    )?;
    // Carol is no admin of the merged PN either.
    expect_code(
        carol.request(split(vec![carol.peer()], carol.peer())).await,
        ErrorCode::Forbidden,
    )?;
    let before = admin.show_pn(&x.pn_id).await?.epoch;
    let (stays, new) = match alice_phone
        .request(split(
            vec![bob_gw.peer(), bob_phone.peer(), carol.peer()],
            bob_gw.peer(),
        ))
        .await?
    {
        Message::Auth(AuthMessage::PnSplitAnswer { stays, new }) => (stays, new),
        other => bail!("PnSplitAnswer expected, got {other:?}"),
    };
    ensure!(
        stays.pn_id == x.pn_id && stays.epoch == before + 1,
        "{stays:?}"
    );
    ensure!(
        stays.members.len() == 2 && !stays.members.contains(&bob_phone.peer()),
        "{stays:?}"
    );
    ensure!(
        new.gateway == bob_gw.peer() && new.members.len() == 3 && new.pn_id != x.pn_id,
        "{new:?}"
    );
    // Each side's new key; neither opens the other's.
    let k_stays = pulled_key(&alice_phone, &x.pn_id).await?;
    let k_new = pulled_key(&bob_phone, &new.pn_id).await?;
    let theirs = k_stays.seal(&alice_phone.peer(), b"after the split");
    ensure!(
        k_new.open(&theirs).is_err(),
        "the new PN's key opens the old side's"
    );
    ensure!(
        k_bob.open(&theirs).is_err(),
        "the key before the split opens it"
    );
    let ours = k_new.seal(&bob_phone.peer(), b"ours");
    ensure!(k_stays.open(&ours).is_err());
    expect_code(
        bob_phone
            .request(AuthMessage::PnKeyPull {
                pn_id: x.pn_id.clone(),
            })
            .await,
        ErrorCode::Forbidden,
    )?;
    // The split-off members are led to their PN from the one they left.
    match bob_phone
        .request(AuthMessage::PnMoveLookup {
            pn_id: x.pn_id.clone(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnMoved { to, .. }) => {
            ensure!(to.pn_id == new.pn_id && to.gateway == bob_gw.peer())
        }
        other => bail!("PnMoved expected, got {other:?}"),
    }
    for d in [alice_gw, alice_phone, bob_gw, bob_phone, carol] {
        d.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

/// Polls `check` until it holds (bounded by [`WAIT`]).
async fn eventually(what: &str, mut check: impl AsyncFnMut() -> Result<bool>) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if check().await? {
            return Ok(());
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until `n` (in neither PN) reads `pn_id`'s summary in the DHT (`seen`), or no longer
/// does.
async fn summary_seen(n: &LabNode, pn_id: &str, seen: bool) -> Result<()> {
    let what = format!("{pn_id}'s summary {}", if seen { "found" } else { "gone" });
    eventually(&what, async || {
        Ok(
            match n.handle().pn_inventory(Some(pn_id.to_owned())).await {
                Ok(s) => seen && s.pn_id == pn_id && !s.members.is_empty(),
                Err(cpns_node::OpError::NotFound(_)) => !seen,
                // The DHT could not be asked: neither found nor gone.
                Err(e) => {
                    tracing::debug!("{what}: {e}");
                    false
                }
            },
        )
    })
    .await
}

/// The PN id and gateway of a node, once it has both.
async fn pn_of(n: &LabNode) -> Result<(String, String)> {
    let s = n.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    Ok((s.pn_id.context("pn id")?, s.gateway.context("gateway")?))
}

/// Waits until `n` is in `pn_id` with `gateway` as its gateway.
async fn in_pn(n: &LabNode, pn_id: &str, gateway: &str) -> Result<()> {
    let there = |s: &cpns_api::StatusView| {
        s.pn_id.as_deref() == Some(pn_id) && s.gateway.as_deref() == Some(gateway)
    };
    // `wait_until` gives the last status seen when time is up.
    let s = n.handle().wait_until(WAIT, there).await?;
    ensure!(
        there(&s),
        "{} never joined {pn_id} through {gateway}: in {:?} through {:?}",
        n.peer_id(),
        s.pn_id,
        s.gateway
    );
    Ok(())
}

/// Two households' PNs through real nodes: alice's gateway consents to merging with bob's PN,
/// which changes nothing until bob's gateway consents too; then every device is in alice's
/// PN through alice's gateway, on one new key epoch (what one seals, any other opens), the
/// gateway's inventory lists all four, cpns-auth holds one PN, and the steps are traced.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_pns_are_one_pn_at_every_node() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("bob").await?;
    let (agw, mut am) = lab.pn("alice", "alice-router", &["alice-nas"]).await?;
    // One community DHT: bob's household and carol's bootstrap from alice's gateway.
    let boot = agw.dial_addr().await?;
    let (bgw, mut bm) = lab
        .pn_configured("bob", "bob-router", &["bob-phone"], |c| {
            c.bootstrap = vec![boot.to_string()]
        })
        .await?;
    let (anas, bphone) = (am.remove(0), bm.remove(0));
    let (x, agw_id) = pn_of(&agw).await?;
    let (y, bgw_id) = pn_of(&bgw).await?;
    let x_epoch = same_epoch(&[&agw, &anas]).await?;
    // Carol's router is in neither PN (it runs carol's): an outsider in the community DHT.
    lab.user("carol").await?;
    let outsider = lab
        .node_bootstrapping(
            "carol",
            "carol-laptop",
            cpns_node::ModeSetting::Gateway,
            boot.clone(),
        )
        .await?;
    outsider
        .handle()
        .wait_for_pn(WAIT)
        .await
        .context("carol's own PN")?;
    // Bob's phone offers a service only its PN (Y) sees.
    let vis = bphone.handle().default_visibility();
    ensure!(
        vis == cpns_directory::Visibility::Pn(cpns_keys::GroupId(y.clone())),
        "{vis}"
    );
    let svc = bphone
        .handle()
        .publish(
            cpns_directory::ServiceDraft::new("Bob's turntable", ["turntable"], vis),
            None,
        )
        .await?;
    finds(&bgw, "turntable", &svc.id).await?;
    // X's summary is in the DHT (read from outside the PN), Y's too.
    for pn in [&x, &y] {
        summary_seen(&outsider, pn, true).await?;
    }

    let pending = agw.handle().pn_merge(&y).await?;
    ensure!(!pending.merged && pending.pn_id == x, "{pending:?}");
    // Without bob's admin nothing moved (carol's PN is the third).
    ensure!(lab.admin().list_pns().await?.len() == 3);
    in_pn(&bphone, &y, &bgw_id).await?;

    let done = bgw.handle().pn_merge(&x).await?;
    ensure!(
        done.merged && done.pn_id == x && done.gateway == agw_id,
        "{done:?}"
    );
    ensure!(done.epoch == x_epoch + 1, "one new epoch: {done:?}");
    let all = [&agw, &anas, &bgw, &bphone];
    for n in all {
        in_pn(n, &x, &agw_id).await?;
    }
    let epoch = same_epoch(&all).await?;
    ensure!(epoch == done.epoch, "{epoch} != {}", done.epoch);
    let sealed = bphone.handle().pn_seal(b"bob's playlist")?;
    for n in [&agw, &anas, &bgw] {
        ensure!(n.handle().pn_open(&sealed)? == b"bob's playlist");
    }
    let want: Vec<String> = all.iter().map(|n| n.peer_id().to_string()).collect();
    let h = agw.handle();
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let inv = h.pn_inventory(None).await?;
        if want
            .iter()
            .all(|p| inv.details.iter().any(|d| d.peer_id.to_string() == *p))
        {
            ensure!(inv.details.len() == 4, "{inv:?}");
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the gateway's inventory never listed all four: {inv:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let pns = lab.admin().list_pns().await?;
    ensure!(
        pns.len() == 2 && pns.iter().any(|p| p.pn_id == x) && !pns.iter().any(|p| p.pn_id == y),
        "{pns:?}"
    );
    ensure!(
        bphone
            .handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "JoinPnAfterMove"),
        "the move is traced"
    );
    // Services re-scoped: Bob's PN service is the merged PN's now. A member of X that was
    // never in Y finds it by keyword with X's key; the outsider does not.
    eventually("the merged PN's member finding Bob's service", async || {
        Ok(finds(&anas, "turntable", &svc.id).await.is_ok())
    })
    .await?;
    finds(&agw, "turntable", &svc.id).await?;
    let theirs = outsider
        .handle()
        .find(&cpns_directory::Query::keywords(["turntable"]))
        .await?;
    ensure!(
        theirs.services.is_empty(),
        "an outsider found a PN service: {theirs:?}"
    );
    ensure!(
        bphone
            .handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "RescopeServicesAfterMove"),
        "the re-scope is traced"
    );
    // One PN in the DHT too: the released PN's summary is withdrawn by its former gateway,
    // the merged PN's stays.
    summary_seen(&outsider, &y, false).await?;
    summary_seen(&outsider, &x, true).await?;
    ensure!(
        bgw.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.9" && e.message == "WithdrawReleasedPnSummary"),
        "the withdrawal is traced"
    );
    lab.shutdown(vec![agw, anas, bgw, bphone, outsider]).await;
    Ok(())
}

/// A split through real nodes: alice's admin splits two devices off; they form a new PN
/// whose gateway is the one of them the election's rule ranks first, the PN they left rotates
/// its key, and a device split off cannot open what the other side seals afterwards (nor the
/// other side what it seals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_member_split_off_cannot_open_the_other_sides_new_content() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["nas", "tv", "phone"]).await?;
    let (nas, tv, phone) = (&members[0], &members[1], &members[2]);
    let (x, gw_id) = pn_of(&gw).await?;
    let before = same_epoch(&[&gw, nas, tv, phone]).await?;
    let old_sealed = tv.handle().pn_seal(b"before")?;
    // The TV offers a PN service before the split.
    let vis = tv.handle().default_visibility();
    let svc = tv
        .handle()
        .publish(
            cpns_directory::ServiceDraft::new("The TV's recordings", ["recordings"], vis),
            None,
        )
        .await?;
    finds(nas, "recordings", &svc.id).await?;

    let split = nas
        .handle()
        .pn_split(vec![tv.peer_id(), phone.peer_id()])
        .await?;
    ensure!(split.pn_id == x && split.epoch == before + 1, "{split:?}");
    let mut ranked = [tv.peer_id(), phone.peer_id()];
    ranked.sort_by_key(|p| std::cmp::Reverse(p.to_bytes()));
    let new_gw = ranked[0].to_string();
    ensure!(
        split.new_gateway == new_gw,
        "the election's rule (a tie on one machine: the greater PeerId): {split:?}"
    );
    for n in [&gw, nas] {
        in_pn(n, &x, &gw_id).await?;
    }
    for n in [tv, phone] {
        in_pn(n, &split.new_pn_id, &new_gw).await?;
    }
    let stays = same_epoch(&[&gw, nas]).await?;
    ensure!(stays == split.epoch, "{stays} != {}", split.epoch);
    same_epoch(&[tv, phone]).await?;

    let theirs = nas.handle().pn_seal(b"after the split")?;
    for n in [tv, phone] {
        let r = n.handle().pn_open(&theirs);
        ensure!(
            r.is_err(),
            "{} opened the other side's new content",
            n.peer_id()
        );
    }
    let ours = tv.handle().pn_seal(b"ours")?;
    ensure!(phone.handle().pn_open(&ours)? == b"ours");
    for n in [&gw, nas] {
        let r = n.handle().pn_open(&ours);
        ensure!(
            r.is_err(),
            "{} (of the old side) opened the new PN's content ({} epoch {}): {r:?}",
            n.peer_id(),
            ours.group,
            ours.epoch
        );
    }
    // The TV's service went with it: the other device split off finds it with the new PN's
    // key; the side that stayed no longer does (withdrawn under its key).
    eventually("the new PN's member finding the TV's service", async || {
        Ok(finds(phone, "recordings", &svc.id).await.is_ok())
    })
    .await?;
    eventually("the TV's service withdrawn from the old side", async || {
        let found = nas
            .handle()
            .find(&cpns_directory::Query::keywords(["recordings"]))
            .await?;
        Ok(found.services.is_empty())
    })
    .await?;
    // What was sealed before the split is still readable by those who held that key.
    ensure!(nas.handle().pn_open(&old_sealed)? == b"before");
    let pns = lab.admin().list_pns().await?;
    ensure!(pns.len() == 2, "{pns:?}");
    let mut all = vec![gw];
    all.extend(members);
    lab.shutdown(all).await;
    Ok(())
}
