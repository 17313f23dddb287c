//! Service Groups (5.6.8): `/v1/groups…`.

use serde::{Deserialize, Serialize};

/// A Service Group as `cpns-auth` records it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// The group id (`sg-…`).
    pub group: String,
    /// Its name.
    pub name: String,
    /// Who created it (its first admin).
    pub owner: String,
    /// Members.
    pub members: Vec<String>,
    /// Invited entities that have not joined yet.
    pub invited: Vec<String>,
    /// The current key epoch.
    pub epoch: u64,
}

/// `POST /v1/groups`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreateGroupBody {
    /// A name for people.
    pub name: String,
}

/// `DELETE /v1/groups/{id}`, `POST /v1/groups/{id}/leave`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GroupDone {
    /// Always true.
    pub ok: bool,
    /// The group.
    pub group: String,
}

/// `POST /v1/groups/keys/pull`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct KeysPulled {
    /// Keys this node did not hold before.
    pub new_keys: usize,
}
