//! Service Group Management (spec 5.6.8) from the node's side: create, delete, invite, expel,
//! join, leave, list — requests to `cpns-auth` — and the group keys that follow (pulled after
//! every change, pushed by the server through the gateway otherwise). A Service Group's key
//! seals its services' descriptions and content (visibility `group:<id>`).

use std::sync::Arc;

use cpns_directory::KeyRing as _;
use cpns_keys::GroupId;
use cpns_overlay::{AuthMessage, GroupInfo};
use libp2p::PeerId;
use tracing::warn;

use crate::auth_link::{self, install_grant};
use crate::error::OpError;
use crate::shared::Shared;

fn group_info(answer: AuthMessage) -> Result<GroupInfo, OpError> {
    match answer {
        AuthMessage::GroupInfo(info) => Ok(info),
        other => Err(OpError::Refused(format!(
            "unexpected answer {}",
            other.name()
        ))),
    }
}

/// Pulls this node's current keys (every PN and Service Group it belongs to) and installs the
/// ones it does not hold yet. Returns how many were new.
pub(crate) async fn pull_keys(shared: &Arc<Shared>) -> Result<usize, OpError> {
    let answer = auth_link::request(shared, AuthMessage::KeysPull).await?;
    let AuthMessage::Keys(grants) = answer else {
        return Err(OpError::Refused(format!(
            "unexpected answer {}",
            answer.name()
        )));
    };
    let mut new = 0;
    for g in &grants {
        if shared.keyring.by_epoch(&g.group, g.epoch).is_some() {
            continue;
        }
        match install_grant(shared, g).await {
            Ok(_) => new += 1,
            Err(e) => warn!(group = %g.group, "a pulled key did not open: {e}"),
        }
    }
    if new > 0 {
        shared.after_pn_change();
    }
    Ok(new)
}

/// Creates a Service Group; this node is its first member and admin.
pub(crate) async fn create(shared: &Arc<Shared>, name: &str) -> Result<GroupInfo, OpError> {
    let info = group_info(
        auth_link::request(
            shared,
            AuthMessage::GroupCreate {
                name: name.to_string(),
            },
        )
        .await?,
    )?;
    pull_keys(shared).await?;
    Ok(info)
}

/// Deletes a Service Group (admins only); its key is deleted too.
pub(crate) async fn delete(shared: &Arc<Shared>, group: GroupId) -> Result<(), OpError> {
    auth_link::command(
        shared,
        AuthMessage::GroupDelete {
            group: group.clone(),
        },
    )
    .await?;
    forget(shared, &group).await;
    Ok(())
}

/// Invites an entity (admins only).
pub(crate) async fn invite(
    shared: &Arc<Shared>,
    group: GroupId,
    entity: PeerId,
) -> Result<GroupInfo, OpError> {
    group_info(auth_link::request(shared, AuthMessage::GroupInvite { group, entity }).await?)
}

/// Expels a member (admins only); the group key moves to a new epoch.
pub(crate) async fn expel(
    shared: &Arc<Shared>,
    group: GroupId,
    entity: PeerId,
) -> Result<GroupInfo, OpError> {
    let info =
        group_info(auth_link::request(shared, AuthMessage::GroupExpel { group, entity }).await?)?;
    pull_keys(shared).await?;
    Ok(info)
}

/// Joins a group this node was invited to, and takes its key.
pub(crate) async fn join(shared: &Arc<Shared>, group: GroupId) -> Result<GroupInfo, OpError> {
    let info = group_info(auth_link::request(shared, AuthMessage::GroupJoin { group }).await?)?;
    pull_keys(shared).await?;
    Ok(info)
}

/// Leaves a group and forgets its key.
pub(crate) async fn leave(shared: &Arc<Shared>, group: GroupId) -> Result<(), OpError> {
    auth_link::request(
        shared,
        AuthMessage::GroupLeave {
            group: group.clone(),
        },
    )
    .await?;
    forget(shared, &group).await;
    Ok(())
}

/// The groups this node belongs to or is invited to.
pub(crate) async fn list(shared: &Arc<Shared>) -> Result<Vec<GroupInfo>, OpError> {
    match auth_link::request(shared, AuthMessage::GroupList).await? {
        AuthMessage::Groups(list) => Ok(list),
        other => Err(OpError::Refused(format!(
            "unexpected answer {}",
            other.name()
        ))),
    }
}

/// One group's record.
pub(crate) async fn show(shared: &Arc<Shared>, group: GroupId) -> Result<GroupInfo, OpError> {
    group_info(auth_link::request(shared, AuthMessage::GroupInfoRequest { group }).await?)
}

async fn forget(shared: &Arc<Shared>, group: &GroupId) {
    if let Err(e) = shared.keyring.remove(group).await {
        warn!(%group, "group key not removed: {e}");
    }
    shared.after_pn_change();
}
