//! `cpns groups …`: Service Group Management (5.6.8).

use clap::Subcommand;
use cpns_api::GroupView;
use serde_json::{Value, json};

use super::client::{ApiClient, CliError};
use super::commands::print_json;
use super::table::{render, short};

/// `cpns groups` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum GroupsAction {
    /// Create a Service Group (this node becomes its first member and admin).
    Create {
        /// A name for people.
        name: String,
    },
    /// The groups this node belongs to or is invited to.
    List,
    /// One group's record.
    Show {
        /// The group id (`sg-…`).
        id: String,
    },
    /// Delete a group and its key (admins only).
    Delete {
        /// The group id.
        id: String,
    },
    /// Invite an entity (admins only).
    Invite {
        /// The group id.
        id: String,
        /// The entity's PeerId.
        peer: String,
    },
    /// Expel a member (admins only); the key moves to a new epoch.
    Expel {
        /// The group id.
        id: String,
        /// The member's PeerId.
        peer: String,
    },
    /// Join a group this node was invited to.
    Join {
        /// The group id.
        id: String,
    },
    /// Leave a group.
    Leave {
        /// The group id.
        id: String,
    },
    /// Pull this node's current group keys from cpns-auth.
    PullKeys,
}

fn print_group(g: &GroupView) {
    crate::output::outln!(
        "{} \"{}\" (key epoch {}, owner {})",
        g.group,
        g.name,
        g.epoch,
        short(&g.owner.to_string())
    );
    for m in &g.members {
        crate::output::outln!("  member  {m}");
    }
    for m in &g.invited {
        crate::output::outln!("  invited {m}");
    }
}

pub(super) async fn run(
    api: &ApiClient,
    json_out: bool,
    action: &GroupsAction,
) -> Result<(), CliError> {
    match action {
        GroupsAction::Create { name } => {
            let g: GroupView = api.post("/v1/groups", &json!({ "name": name })).await?;
            if json_out {
                return print_json(&g);
            }
            print_group(&g);
            Ok(())
        }
        GroupsAction::List => {
            let list: Vec<GroupView> = api.get("/v1/groups").await?;
            if json_out {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|g| {
                    vec![
                        g.group.to_string(),
                        g.name.clone(),
                        g.members.len().to_string(),
                        g.invited.len().to_string(),
                        g.epoch.to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            crate::output::out!(
                "{}",
                render(&["GROUP", "NAME", "MEMBERS", "INVITED", "EPOCH"], &rows)
            );
            Ok(())
        }
        GroupsAction::Show { id } => {
            let g: GroupView = api.get(&format!("/v1/groups/{id}")).await?;
            if json_out {
                return print_json(&g);
            }
            print_group(&g);
            Ok(())
        }
        GroupsAction::Delete { id } | GroupsAction::Leave { id } => {
            let (path, what) = match action {
                GroupsAction::Delete { .. } => (format!("/v1/groups/{id}"), "deleted"),
                _ => (format!("/v1/groups/{id}/leave"), "left"),
            };
            let v: Value = if what == "deleted" {
                api.delete(&path).await?
            } else {
                api.post(&path, &json!({})).await?
            };
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("{what} {id}");
            Ok(())
        }
        GroupsAction::Invite { id, peer } | GroupsAction::Expel { id, peer } => {
            let verb = if matches!(action, GroupsAction::Invite { .. }) {
                "invite"
            } else {
                "expel"
            };
            let g: GroupView = api
                .post(&format!("/v1/groups/{id}/{verb}"), &json!({ "peer": peer }))
                .await?;
            if json_out {
                return print_json(&g);
            }
            print_group(&g);
            Ok(())
        }
        GroupsAction::Join { id } => {
            let g: GroupView = api
                .post(&format!("/v1/groups/{id}/join"), &json!({}))
                .await?;
            if json_out {
                return print_json(&g);
            }
            print_group(&g);
            Ok(())
        }
        GroupsAction::PullKeys => {
            let v: Value = api.post("/v1/groups/keys/pull", &json!({})).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("{} new keys", v["new_keys"]);
            Ok(())
        }
    }
}
