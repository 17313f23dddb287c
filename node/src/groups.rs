//! Service Group Management (spec 5.6.8) from the node's side: create, delete, invite, expel,
//! join, leave, list — requests to `cpns-auth` — and the group keys that follow (pulled after
//! every change, pushed by the server through the gateway otherwise). A Service Group's key
//! seals its services' descriptions and content (visibility `group:<id>`).

use cpns_directory::KeyRing as _;
use cpns_keys::GroupId;
use cpns_overlay::{AuthMessage, GroupInfo};
use libp2p::PeerId;
use tracing::warn;

use crate::auth_link::AuthLink;
use crate::context::Context;
use crate::error::OpError;

/// The Service Group side of a node (cheap to clone).
#[derive(Clone)]
pub(crate) struct Groups {
    ctx: Context,
    auth: AuthLink,
}

fn group_info(answer: AuthMessage) -> Result<GroupInfo, OpError> {
    match answer {
        AuthMessage::GroupInfo(info) => Ok(info),
        other => Err(OpError::Refused(format!(
            "unexpected answer {}",
            other.name()
        ))),
    }
}

impl Groups {
    /// The Service Group side of a node.
    pub(crate) fn new(ctx: Context, auth: AuthLink) -> Self {
        Self { ctx, auth }
    }

    /// Pulls this node's current keys (every PN and Service Group it belongs to) and installs the
    /// ones it does not hold yet. Returns how many were new.
    pub(crate) async fn pull_keys(&self) -> Result<usize, OpError> {
        let answer = self.auth.request(AuthMessage::KeysPull).await?;
        let AuthMessage::Keys(grants) = answer else {
            return Err(OpError::Refused(format!(
                "unexpected answer {}",
                answer.name()
            )));
        };
        let enrolment = self.ctx.enrolment()?;
        let mut new = 0;
        for g in &grants {
            if self.ctx.keyring.by_epoch(&g.group, g.epoch).is_some() {
                continue;
            }
            let key = match crate::keyring::open_grant(&enrolment, &self.ctx.peer_id, g) {
                Ok(k) => k,
                Err(e) => {
                    warn!(group = %g.group, "a pulled key did not open: {e}");
                    continue;
                }
            };
            self.ctx
                .keyring
                .insert(key)
                .await
                .map_err(|e| OpError::Internal(format!("storing the key: {e}")))?;
            self.ctx.metrics.key_epochs_received.inc();
            new += 1;
        }
        Ok(new)
    }

    /// Creates a Service Group; this node is its first member and admin.
    pub(crate) async fn create(&self, name: &str) -> Result<GroupInfo, OpError> {
        let info = group_info(
            self.auth
                .request(AuthMessage::GroupCreate {
                    name: name.to_string(),
                })
                .await?,
        )?;
        self.pull_keys().await?;
        Ok(info)
    }

    /// Deletes a Service Group (admins only); its key is deleted too.
    pub(crate) async fn delete(&self, group: GroupId) -> Result<(), OpError> {
        self.auth
            .command(AuthMessage::GroupDelete {
                group: group.clone(),
            })
            .await?;
        self.forget(&group).await;
        Ok(())
    }

    /// Invites an entity (admins only).
    pub(crate) async fn invite(
        &self,
        group: GroupId,
        entity: PeerId,
    ) -> Result<GroupInfo, OpError> {
        group_info(
            self.auth
                .request(AuthMessage::GroupInvite { group, entity })
                .await?,
        )
    }

    /// Expels a member (admins only); the group key moves to a new epoch.
    pub(crate) async fn expel(&self, group: GroupId, entity: PeerId) -> Result<GroupInfo, OpError> {
        let info = group_info(
            self.auth
                .request(AuthMessage::GroupExpel { group, entity })
                .await?,
        )?;
        self.pull_keys().await?;
        Ok(info)
    }

    /// Joins a group this node was invited to, and takes its key.
    pub(crate) async fn join(&self, group: GroupId) -> Result<GroupInfo, OpError> {
        let info = group_info(self.auth.request(AuthMessage::GroupJoin { group }).await?)?;
        self.pull_keys().await?;
        Ok(info)
    }

    /// Leaves a group and forgets its key.
    pub(crate) async fn leave(&self, group: GroupId) -> Result<(), OpError> {
        self.auth
            .request(AuthMessage::GroupLeave {
                group: group.clone(),
            })
            .await?;
        self.forget(&group).await;
        Ok(())
    }

    /// The groups this node belongs to or is invited to.
    pub(crate) async fn list(&self) -> Result<Vec<GroupInfo>, OpError> {
        match self.auth.request(AuthMessage::GroupList).await? {
            AuthMessage::Groups(list) => Ok(list),
            other => Err(OpError::Refused(format!(
                "unexpected answer {}",
                other.name()
            ))),
        }
    }

    /// One group's record.
    pub(crate) async fn show(&self, group: GroupId) -> Result<GroupInfo, OpError> {
        group_info(
            self.auth
                .request(AuthMessage::GroupInfoRequest { group })
                .await?,
        )
    }

    async fn forget(&self, group: &GroupId) {
        if let Err(e) = self.ctx.keyring.remove(group).await {
            warn!(%group, "group key not removed: {e}");
        }
    }
}
