//! Service Groups through real nodes (5.6.8): create, invite, join, a group-only service that
//! members find and non-members cannot, and an expulsion that locks the expelled member out of
//! the new epoch.

use anyhow::{Context, Result, ensure};
use cpns_directory::{Query, ServiceDraft, Visibility};
use cpns_overlay::DeliveryMode;

use crate::util::{Lab, WAIT, init_tracing, same_epoch};

#[tokio::test]
async fn service_group_members_find_its_services_and_an_expelled_member_is_locked_out() -> Result<()>
{
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let gw = lab.gateway_node("alice", "router").await?;
    gw.handle().wait_for_pn(WAIT).await.context("PN")?;
    let owner = lab.node("alice", "console").await?;
    let friend = lab.node("alice", "tablet").await?;
    let outsider = lab.node("alice", "fridge").await?;
    for n in [&owner, &friend, &outsider] {
        n.handle().pair(gw.dial_addr().await?).await?;
        n.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
    }
    same_epoch(&[&gw, &owner, &friend, &outsider]).await?;

    let group = owner.handle().group_create("gamers").await?;
    owner
        .handle()
        .group_invite(group.group.clone(), friend.peer_id())
        .await?;
    let joined = friend.handle().group_join(group.group.clone()).await?;
    ensure!(joined.members.contains(&friend.peer_id()), "{joined:?}");
    // The owner learns the new epoch (push through its gateway, or pull).
    owner.handle().pull_keys().await?;
    let epoch = owner
        .handle()
        .group_epoch(&group.group)
        .context("owner key")?;
    assert_eq!(friend.handle().group_epoch(&group.group), Some(epoch));
    assert_eq!(outsider.handle().group_epoch(&group.group), None);

    let dir = tempfile::tempdir()?;
    let file = dir.path().join("save.dat");
    std::fs::write(&file, vec![9u8; 50_000])?;
    let svc = owner
        .handle()
        .publish(
            ServiceDraft::new(
                "Game save sync",
                ["games"],
                Visibility::Group(group.group.clone()),
            ),
            Some(file),
        )
        .await?;
    let found = friend.handle().find(&Query::keywords(["games"])).await?;
    ensure!(
        found.services.iter().any(|f| f.description.id == svc.id),
        "a member did not find the group service"
    );
    let got = friend.handle().fetch(&svc.id, DeliveryMode::Pull).await?;
    assert_eq!(got.bytes, 50_000);
    let not_found = outsider.handle().find(&Query::keywords(["games"])).await?;
    ensure!(
        not_found
            .services
            .iter()
            .all(|f| f.description.id != svc.id),
        "a non-member found a group-only service"
    );

    // Expel the friend: the key moves on; what is sealed under the new epoch stays closed.
    let old = friend
        .handle()
        .group_epoch(&group.group)
        .context("friend key")?;
    owner
        .handle()
        .group_expel(group.group.clone(), friend.peer_id())
        .await?;
    let new = owner
        .handle()
        .group_epoch(&group.group)
        .context("owner key")?;
    ensure!(new > old, "the group key rotated");
    let _ = friend.handle().pull_keys().await;
    ensure!(
        friend
            .handle()
            .group_epoch(&group.group)
            .is_none_or(|e| e < new),
        "the expelled member holds the new key"
    );
    lab.shutdown(vec![gw, owner, friend, outsider]).await;
    Ok(())
}
