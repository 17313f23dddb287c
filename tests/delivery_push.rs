//! Offerer-initiated push (5.6.7 push mode, `cpns content push FILE --to PEER|pn|group:G`)
//! with real nodes of two and three households: the receivers' policy (own user's devices
//! accept, another user's device sharing a Service Group waits in the inbox for accept or
//! decline, a stranger is declined), a push to the whole PN, an offline member that gets the
//! push when it returns (within a bounded queue), and a push relayed by the gateway.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cpns_keys::GroupId;
use cpns_node::delivery::{PushOutcome, Target};
use sha2::{Digest, Sha256};

use crate::util::{Lab, LabNode, WAIT, init_tracing, same_epoch, wait_for};

fn file(
    dir: &std::path::Path,
    name: &str,
    len: usize,
    seed: u8,
) -> Result<(std::path::PathBuf, String)> {
    let bytes: Vec<u8> = (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect();
    let path = dir.join(name);
    std::fs::write(&path, &bytes)?;
    Ok((path, hex::encode(Sha256::digest(&bytes))))
}

fn state(o: &PushOutcome, peer: &LabNode) -> String {
    o.targets
        .iter()
        .find(|t| t.peer == peer.peer_id())
        .map(|t| format!("{}: {}", t.state, t.detail))
        .unwrap_or_else(|| "not a target".into())
}

/// The SHA-256 of `name` in `node`'s inbox, once it is there.
async fn in_inbox(node: &LabNode, name: &str) -> Result<String> {
    let path = node.data_dir().join("inbox").join(name);
    wait_for(WAIT, &format!("{name} in the inbox"), || {
        std::fs::read(&path).ok()
    })
    .await
    .map(|b| hex::encode(Sha256::digest(&b)))
}

/// Waits until `sender`'s push `id` shows `want` for `peer`.
async fn push_state(sender: &LabNode, id: u64, peer: &LabNode, want: &str) -> Result<PushOutcome> {
    let found = wait_for(WAIT, &format!("the push to show {want}"), || {
        sender
            .handle()
            .content()
            .pushes()
            .into_iter()
            .find(|o| o.push_id == id && state(o, peer).starts_with(want))
    })
    .await;
    found.with_context(|| {
        let now = sender.handle().content().pushes();
        let o = now.iter().find(|o| o.push_id == id);
        format!("now: {:?}", o.map(|o| state(o, peer)))
    })
}

#[tokio::test]
async fn receivers_follow_their_policy() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("bob").await?;
    lab.user("carol").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;

    // Alice's own devices: accepted at once.
    let (photo, photo_sha) = file(dir.path(), "photo.jpg", 300_000, 3)?;
    let sent = nas
        .handle()
        .content()
        .push(&photo, Target::Peer(phone.peer_id()), false)
        .await?;
    ensure!(state(&sent, &phone).starts_with("delivered"), "{sent:?}");
    ensure!(in_inbox(&phone, "photo.jpg").await? == photo_sha);
    // To the whole PN, from the gateway: every other member; sealed under the PN key.
    let (notice, notice_sha) = file(dir.path(), "notice.txt", 10_000, 5)?;
    let sent = gw
        .handle()
        .content()
        .push(&notice, Target::Pn, false)
        .await?;
    ensure!(sent.targets.len() == 2, "{sent:?}");
    for m in [&nas, &phone] {
        ensure!(state(&sent, m).starts_with("delivered"), "{sent:?}");
        ensure!(in_inbox(m, "notice.txt").await? == notice_sha);
    }
    // A second push of the same name does not overwrite the first.
    gw.handle()
        .content()
        .push(&notice, Target::Pn, false)
        .await?;
    ensure!(in_inbox(&phone, "notice.txt.1").await? == notice_sha);

    // Bob (another household) shares a Service Group with Alice's phone: his pushes to the
    // group wait in the phone's inbox for Alice.
    let phone_addr = phone.dial_addr().await?;
    let bob = lab
        .node_bootstrapping(
            "bob",
            "bob-laptop",
            cpns_node::ModeSetting::Gateway,
            phone_addr.clone(),
        )
        .await?;
    bob.handle().wait_for_pn(WAIT).await.context("bob's PN")?;
    let group = bob.handle().group_create("holiday").await?;
    bob.handle()
        .group_invite(group.group.clone(), phone.peer_id())
        .await?;
    phone.handle().group_join(group.group.clone()).await?;
    // Bob learns the group's new epoch (with the phone in it) by pulling.
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        bob.handle().pull_keys().await?;
        let b = bob.handle().group_epoch(&group.group);
        if b.is_some() && b == phone.handle().group_epoch(&group.group) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "no common group epoch"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (album, album_sha) = file(dir.path(), "album.zip", 200_000, 7)?;
    let to_group = Target::Group(GroupId(group.group.0.clone()));
    let sent = bob
        .handle()
        .content()
        .push(&album, to_group.clone(), false)
        .await?;
    ensure!(state(&sent, &phone).starts_with("inbox"), "{sent:?}");
    let pending = phone.handle().content().pending();
    ensure!(pending.len() == 1, "{pending:?}");
    ensure!(
        pending[0].user == "bob" && pending[0].name == "album.zip",
        "{pending:?}"
    );
    ensure!(
        !phone.data_dir().join("inbox").join("album.zip").exists(),
        "an offer waiting for the owner was stored"
    );
    let accepted = phone.handle().content().accept(&pending[0].id).await?;
    ensure!(accepted.sha256 == album_sha, "{accepted:?}");
    ensure!(in_inbox(&phone, "album.zip").await? == album_sha);
    push_state(&bob, sent.push_id, &phone, "delivered").await?;
    // Another one, declined by Alice: Bob learns it.
    let sent = bob.handle().content().push(&album, to_group, false).await?;
    let pending = phone.handle().content().pending();
    ensure!(pending.len() == 1, "{pending:?}");
    phone.handle().content().decline(&pending[0].id).await?;
    push_state(&bob, sent.push_id, &phone, "declined").await?;
    ensure!(phone.handle().content().pending().is_empty());
    ensure!(!phone.data_dir().join("inbox").join("album.zip.1").exists());

    // Carol (a third household, no PN or group in common): declined by policy.
    let carol = lab
        .node_bootstrapping(
            "carol",
            "carol-pc",
            cpns_node::ModeSetting::Gateway,
            phone_addr,
        )
        .await?;
    carol
        .handle()
        .wait_for_pn(WAIT)
        .await
        .context("carol's PN")?;
    let sent = carol
        .handle()
        .content()
        .push(&photo, Target::Peer(phone.peer_id()), false)
        .await?;
    ensure!(
        state(&sent, &phone).starts_with("declined: pushes from outside this PN"),
        "{sent:?}"
    );
    ensure!(phone.handle().content().pending().is_empty());
    let decisions: Vec<String> = phone
        .handle()
        .trace()
        .into_iter()
        .filter(|e| e.flow == "5.6.7" && e.message == "PushDecision")
        .map(|e| e.detail)
        .collect();
    ensure!(
        decisions
            .iter()
            .any(|d| d.starts_with("declined: pushes from outside")),
        "{decisions:?}"
    );
    lab.shutdown(vec![gw, nas, phone, bob, carol]).await;
    Ok(())
}

#[tokio::test]
async fn an_offline_member_gets_the_push_when_it_returns() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab
        .pn_configured("alice", "router", &["nas", "phone"], |c| {
            c.delivery.push_retry_secs = 1;
            c.delivery.push_queue = 2;
        })
        .await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let phone_id = phone.peer_id();
    let stopped = phone.stop().await;
    let mut pushes = Vec::new();
    for (i, name) in ["one.txt", "two.txt", "three.txt"].iter().enumerate() {
        let (path, sha) = file(dir.path(), name, 50_000, i as u8 + 1)?;
        let sent = nas
            .handle()
            .content()
            .push(&path, Target::Pn, false)
            .await?;
        ensure!(state(&sent, &gw).starts_with("delivered"), "{sent:?}");
        let queued = sent
            .targets
            .iter()
            .any(|t| t.peer == phone_id && t.state == "queued");
        ensure!(queued, "the offline phone's push is not queued: {sent:?}");
        pushes.push((sent, sha));
    }
    let phone = stopped.start().await?;
    phone
        .handle()
        .wait_until(WAIT, |s| s.pn_id.is_some())
        .await?;
    same_epoch(&[&gw, &nas, &phone]).await?;
    for (o, sha) in &pushes[1..] {
        push_state(&nas, o.push_id, &phone, "delivered").await?;
        let name = o.name.clone();
        ensure!(in_inbox(&phone, &name).await? == *sha, "{name}");
    }
    let first = push_state(&nas, pushes[0].0.push_id, &phone, "failed").await?;
    ensure!(state(&first, &phone).contains("full queue"), "{first:?}");
    ensure!(!phone.data_dir().join("inbox").join("one.txt").exists());
    lab.shutdown(vec![gw, nas, phone]).await;
    Ok(())
}

/// A push relayed by the gateway (as when two PNEs have no direct path; here asked for): it
/// arrives whole, sealed end to end, and the gateway's trace shows the relay.
#[tokio::test]
async fn a_push_relayed_by_the_gateway_arrives_whole() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let (film, sha) = file(dir.path(), "film.ts", 5 * 1024 * 1024 + 3, 11)?;
    let sent = nas
        .handle()
        .content()
        .push(&film, Target::Peer(phone.peer_id()), true)
        .await?;
    let t = &sent.targets[0];
    ensure!(t.state == "delivered" && t.via_gateway, "{sent:?}");
    ensure!(
        t.detail == sha,
        "the receiver stored another file: {sent:?}"
    );
    ensure!(in_inbox(&phone, "film.ts").await? == sha);
    ensure!(
        gw.handle()
            .trace()
            .iter()
            .any(|e| e.flow == "5.6.7" && e.step == 4 && e.message == "ForwardContent"),
        "the relay is traced at the gateway"
    );
    ensure!(
        phone
            .handle()
            .trace()
            .iter()
            .any(|e| e.message == "PushOffer" && e.detail.contains("relayed")),
        "the receiver saw a relayed offer"
    );
    // The gateway does not relay for a node outside its PN, nor to itself.
    let e = nas
        .handle()
        .content()
        .push(&film, Target::Peer(gw.peer_id()), true)
        .await?;
    ensure!(
        e.targets[0].state == "delivered",
        "a push to the gateway itself goes direct: {e:?}"
    );
    lab.shutdown(vec![gw, nas, phone]).await;
    Ok(())
}
