//! `cpns-auth`'s Service Groups (5.6.8) with bare overlay devices (see [`crate::auth`]).

use anyhow::{Result, bail, ensure};
use cpns_keys::Modes;
use cpns_overlay::{AuthMessage, ErrorCode, Message, NodeMode};

use crate::auth::{Device, expect_code, group_info, pull, start_server};
use crate::util::init_tracing;

/// Service Groups: create, invite, join (pushed keys), pull, expel, delete.
#[tokio::test]
async fn service_groups_rotate_push_and_pull() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    let mut a = Device::enrol_with(&admin, 21, "alice", Modes::PNE, "a").await?;
    let mut b = Device::enrol_with(&admin, 22, "alice", Modes::PNE, "b").await?;
    a.auth(NodeMode::Pne).await?;
    b.auth(NodeMode::Pne).await?;

    let g = group_info(
        a.request(AuthMessage::GroupCreate {
            name: "films".into(),
        })
        .await?,
    )?;
    ensure!(g.group.0.starts_with("sg-") && g.epoch == 1 && g.members == vec![a.peer()]);
    // The new key is pushed to its creator.
    let AuthMessage::KeyPush { member, grants } = a
        .next_push("key push (create)", |m| {
            matches!(m, AuthMessage::KeyPush { .. })
        })
        .await?
    else {
        unreachable!()
    };
    ensure!(member == a.peer() && grants.len() == 1 && a.open(&grants[0])?.epoch() == 1);

    // Only admins invite; only invitees join.
    expect_code(
        b.request(AuthMessage::GroupJoin {
            group: g.group.clone(),
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    expect_code(
        b.request(AuthMessage::GroupInvite {
            group: g.group.clone(),
            entity: b.peer(),
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    let invited = group_info(
        a.request(AuthMessage::GroupInvite {
            group: g.group.clone(),
            entity: b.peer(),
        })
        .await?,
    )?;
    ensure!(invited.invited == vec![b.peer()] && invited.epoch == 1);
    match b.request(AuthMessage::GroupList).await? {
        Message::Auth(AuthMessage::Groups(list)) => ensure!(list.len() == 1),
        other => bail!("Groups expected, got {other:?}"),
    }
    let joined = group_info(
        b.request(AuthMessage::GroupJoin {
            group: g.group.clone(),
        })
        .await?,
    )?;
    ensure!(joined.epoch == 2 && joined.members.len() == 2 && joined.invited.is_empty());
    // Both members get the new epoch pushed.
    for d in [&mut a, &mut b] {
        let peer = d.peer();
        let AuthMessage::KeyPush { grants, .. } = d
            .next_push("key push (join)", |m| {
                matches!(m, AuthMessage::KeyPush { grants, member } if *member == peer && grants.iter().any(|g| g.epoch == 2))
            })
            .await?
        else {
            unreachable!()
        };
        ensure!(d.open(&grants[0])?.epoch() == 2);
    }
    // Pull gives the same key to both.
    let ka = pull(&a).await?;
    let kb = pull(&b).await?;
    ensure!(ka.len() == 1 && kb.len() == 1);
    let key_b = b.open(&kb[0])?;
    ensure!(a.open(&ka[0])?.key_bytes() == key_b.key_bytes() && key_b.epoch() == 2);

    // Expel b: epoch 3; b cannot read the group or pull its key any more.
    let after = group_info(
        a.request(AuthMessage::GroupExpel {
            group: g.group.clone(),
            entity: b.peer(),
        })
        .await?,
    )?;
    ensure!(after.epoch == 3 && after.members == vec![a.peer()]);
    ensure!(pull(&b).await?.is_empty());
    expect_code(
        b.request(AuthMessage::GroupInfoRequest {
            group: g.group.clone(),
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    let new_key = a.open(&pull(&a).await?[0])?;
    let sealed = new_key.seal(&a.peer(), b"only for members");
    ensure!(key_b.open(&sealed).is_err());
    // The owner cannot leave; a non-admin cannot delete; the admin deletes (key gone).
    expect_code(
        a.request(AuthMessage::GroupLeave {
            group: g.group.clone(),
        })
        .await,
        ErrorCode::Conflict,
    )?;
    expect_code(
        b.request(AuthMessage::GroupDelete {
            group: g.group.clone(),
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    ensure!(admin.show_group(&g.group.0).await?.epoch == 3);
    ensure!(
        a.request(AuthMessage::GroupDelete {
            group: g.group.clone()
        })
        .await?
            == Message::Ack
    );
    ensure!(admin.list_groups().await?.is_empty());
    ensure!(pull(&a).await?.is_empty());

    a.shutdown().await;
    b.shutdown().await;
    server.shutdown().await;
    Ok(())
}
