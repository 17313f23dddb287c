//! The admin API: everything the operator (the CLI, tests, the local mesh) can do.
//!
//! [`Admin`] is the in-process form: from a running server ([`crate::ServerHandle::admin`]) or
//! opened directly on a stopped server's data dir ([`Admin::open`]). The running server also
//! serves it as JSON on its admin endpoint ([`http`]), reachable on 127.0.0.1 with the bearer
//! token that only the data dir's owner can read from `admin.json` ([`AdminFile`]).

pub(crate) mod http;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use cpns_keys::{Modes, PeerId};
use libp2p::Multiaddr;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::core::{Core, unix_now};
use crate::error::{AdminError, StartError};
use crate::records::{EntityRecord, GroupRecord, PnRecord, UserRecord};
use crate::revocation::resolve_entity;
use crate::store::{Batch, Table};
use crate::usage::{UsageFormat, export};
use crate::views::{
    ChargingRecord, CodeView, CreatedCode, DeletedUser, EntityView, GroupView, PnView,
    RevokeOutcome, ServerInfo, UserView,
};

/// File name of the admin endpoint's address and token in the data dir.
pub const ADMIN_FILE: &str = "admin.json";

/// Longest user name, in bytes.
const MAX_USER_NAME: usize = 64;

/// What a running server writes to `D/admin.json` (mode 0600): where its admin endpoint
/// listens and the bearer token it wants. Removed on clean shutdown; a stale file after a
/// crash is harmless (its endpoint no longer answers).
#[derive(Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AdminFile {
    /// `127.0.0.1:PORT` of the admin endpoint.
    pub addr: String,
    /// The bearer token (64 hex digits).
    pub token: String,
    /// The server's process id.
    pub pid: u32,
    /// The server's PeerId.
    pub peer_id: String,
}

impl std::fmt::Debug for AdminFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminFile")
            .field("addr", &self.addr)
            .field("pid", &self.pid)
            .finish_non_exhaustive()
    }
}

impl AdminFile {
    /// The file's path in a data dir.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(ADMIN_FILE)
    }

    /// Reads `D/admin.json`; `Ok(None)` if there is none.
    pub fn read(data_dir: &Path) -> std::io::Result<Option<Self>> {
        match std::fs::read(Self::path(data_dir)) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Writes the file atomically with mode 0600 (temp file, fsync, rename).
    pub(crate) fn write(&self, data_dir: &Path) -> std::io::Result<()> {
        let path = Self::path(data_dir);
        let tmp = data_dir.join(format!(".{ADMIN_FILE}.{}.tmp", std::process::id()));
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(0o600);
        }
        let result = (|| {
            let mut f = opts.open(&tmp)?;
            f.write_all(&serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)
        })();
        if result.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        result
    }

    /// Removes the file if it is still ours (same token).
    pub(crate) fn remove_if_ours(&self, data_dir: &Path) {
        if let Ok(Some(current)) = Self::read(data_dir)
            && current.token == self.token
        {
            let _ = std::fs::remove_file(Self::path(data_dir));
        }
    }
}

/// Options of [`Admin::create_code_with`].
#[derive(Clone, Debug)]
pub struct CodeOptions {
    /// The user devices enrolled with the code belong to.
    pub user: String,
    /// Modes their credentials allow. Default in the CLI: `pne,gateway`.
    pub modes: Modes,
    /// Lifetime; `None`: the configured `code_ttl` (1 h by default).
    pub ttl: Option<Duration>,
    /// Whether the code can be used more than once (until it expires).
    pub reusable: bool,
    /// Addresses to put in the code instead of the server's own.
    pub addrs: Vec<Multiaddr>,
}

impl CodeOptions {
    /// A one-time code for `user`, both modes, default lifetime.
    pub fn new(user: impl Into<String>) -> Self {
        Self {
            user: user.into(),
            modes: Modes::ALL,
            ttl: None,
            reusable: false,
            addrs: Vec::new(),
        }
    }
}

/// The admin API. Cheap to clone; every method is async and cancel-safe in the sense that a
/// change, once started, completes (and is durable) even if the caller stops waiting.
#[derive(Clone)]
pub struct Admin {
    core: Arc<Core>,
    running: bool,
}

impl std::fmt::Debug for Admin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Admin")
            .field("server", &self.core.server_peer)
            .field("running", &self.running)
            .finish()
    }
}

fn check_user_name(name: &str) -> Result<(), AdminError> {
    crate::enrol::check_name("user", name, MAX_USER_NAME).map_err(AdminError::Invalid)?;
    if !name
        .chars()
        .all(|c| c.is_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
    {
        return Err(AdminError::Invalid(format!(
            "user name {name:?} may contain only letters, digits and . _ - @"
        )));
    }
    Ok(())
}

fn peers(list: &[PeerId]) -> Vec<String> {
    list.iter().map(ToString::to_string).collect()
}

fn pn_view(pn: &PnRecord) -> PnView {
    PnView {
        pn_id: pn.pn_id.clone(),
        owner: pn.owner.clone(),
        gateway: pn.gateway.to_string(),
        members: peers(&pn.members),
        admins: peers(&pn.admins),
        invited_users: pn.policy.invited_users.clone(),
        invited_entities: peers(&pn.policy.invited_entities),
        expelled: peers(&pn.policy.expelled),
        epoch: pn.epoch(),
        created: pn.created,
        updated: pn.updated,
        zone_members: Vec::new(),
    }
}

fn group_view(g: &GroupRecord) -> GroupView {
    GroupView {
        group: g.group.0.clone(),
        name: g.name.clone(),
        owner: g.owner.to_string(),
        admins: peers(&g.admins),
        members: peers(&g.members),
        invited: peers(&g.invited),
        epoch: g.key.epoch(),
        created: g.created,
        updated: g.updated,
    }
}

impl Admin {
    pub(crate) fn new(core: Arc<Core>, running: bool) -> Self {
        Self { core, running }
    }

    /// Opens a stopped server's data dir directly (the CLI when no server runs). Refuses a
    /// directory that was never initialised (no `ca.key`): a typo in `--data-dir` must not
    /// create a new CA. [`crate::StoreError::Locked`] (inside [`StartError::Store`]) means a
    /// server holds the database.
    pub fn open(config: Config) -> Result<Self, StartError> {
        if !Core::is_initialised(&config.data_dir) {
            return Err(StartError::DataDir {
                path: config.data_dir.clone(),
                source: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not a cpns-auth data dir (no ca.key); start `cpns-auth serve --data-dir` \
                     on it first, or check the path",
                ),
            });
        }
        Ok(Self::new(Arc::new(Core::open(config, None)?), false))
    }

    /// Creates a user.
    pub async fn create_user(&self, name: &str) -> Result<UserView, AdminError> {
        check_user_name(name)?;
        let now = unix_now();
        self.core
            .commit(|store| {
                if store.contains(Table::Users, name)? {
                    return Err(AdminError::Conflict(format!(
                        "user {name:?} already exists"
                    )));
                }
                let mut b = Batch::default();
                b.put(
                    Table::Users,
                    name,
                    &UserRecord {
                        name: name.to_owned(),
                        created: now,
                    },
                )?;
                Ok((b, ()))
            })
            .await?;
        Ok(UserView {
            name: name.to_owned(),
            created: now,
            entities: 0,
        })
    }

    /// Deletes a user: its unused codes are deleted, every one of its entities is revoked (so
    /// none of its devices stays in), and PN invitations naming it are withdrawn (so a future
    /// user of the same name inherits nothing).
    pub async fn delete_user(&self, name: &str) -> Result<DeletedUser, AdminError> {
        let now = unix_now();
        let (entities, deleted_codes) = self
            .core
            .commit(|store| {
                if !store.contains(Table::Users, name)? {
                    return Err(AdminError::NotFound(format!("no user named {name:?}")));
                }
                let mut b = Batch::default();
                b.delete(Table::Users, name);
                let mut deleted = 0;
                for code in store.values::<crate::records::CodeRecord>(Table::Codes)? {
                    if code.user == name {
                        b.delete(Table::Codes, &code.code_id);
                        deleted += 1;
                    }
                }
                for mut pn in store.values::<PnRecord>(Table::Pns)? {
                    if pn.policy.invited_users.iter().any(|u| u == name) {
                        pn.policy.invited_users.retain(|u| u != name);
                        pn.updated = now;
                        b.put(Table::Pns, &pn.pn_id, &pn)?;
                    }
                }
                let entities: Vec<PeerId> = store
                    .values::<EntityRecord>(Table::Entities)?
                    .iter()
                    .filter(|e| e.user == name && e.revoked.is_none())
                    .map(|e| e.peer_id)
                    .collect();
                Ok((b, (entities, deleted)))
            })
            .await?;
        let mut revoked = Vec::new();
        for peer in entities {
            let out = self.core.revoke(&peer.to_string(), now).await?;
            revoked.push(out.entity);
        }
        Ok(DeletedUser {
            name: name.to_owned(),
            revoked_entities: revoked,
            deleted_codes,
        })
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<UserView>, AdminError> {
        let users: Vec<UserRecord> = self.core.store.values(Table::Users)?;
        let entities: Vec<EntityRecord> = self.core.store.values(Table::Entities)?;
        Ok(users
            .into_iter()
            .map(|u| UserView {
                entities: entities.iter().filter(|e| e.user == u.name).count(),
                name: u.name,
                created: u.created,
            })
            .collect())
    }

    /// Creates an enrolment code and returns its text (`cpns1-…`).
    pub async fn create_code(
        &self,
        user: &str,
        modes: Modes,
        ttl: Duration,
        reusable: bool,
    ) -> Result<String, AdminError> {
        let opts = CodeOptions {
            user: user.to_owned(),
            modes,
            ttl: Some(ttl),
            reusable,
            addrs: Vec::new(),
        };
        Ok(self.create_code_with(&opts).await?.code)
    }

    /// Creates an enrolment code, with everything the CLI prints about it.
    pub async fn create_code_with(&self, opts: &CodeOptions) -> Result<CreatedCode, AdminError> {
        self.core
            .create_code(
                &opts.user,
                opts.modes,
                opts.ttl.unwrap_or(self.core.config.code_ttl),
                opts.reusable,
                &opts.addrs,
            )
            .await
    }

    /// Every enrolment code (without secrets), newest first.
    pub async fn list_codes(&self) -> Result<Vec<CodeView>, AdminError> {
        self.core.list_codes()
    }

    fn entity_view(
        &self,
        e: &EntityRecord,
        pns: &[PnRecord],
        groups: &[GroupRecord],
        now: u64,
    ) -> EntityView {
        EntityView {
            peer_id: e.peer_id.to_string(),
            user: e.user.clone(),
            device: e.device.clone(),
            modes: e.modes.to_string(),
            serial: e.serial(),
            serials: e.serials.clone(),
            enrolled: e.enrolled,
            expires: e.credential.body.expires,
            revoked: e.revoked,
            mode: e.capabilities.as_ref().map(|c| c.mode.to_string()),
            online: self.running && self.core.authn.session(&e.peer_id, now).is_some(),
            pns: pns
                .iter()
                .filter(|p| p.members.contains(&e.peer_id))
                .map(|p| p.pn_id.clone())
                .collect(),
            groups: groups
                .iter()
                .filter(|g| g.members.contains(&e.peer_id))
                .map(|g| g.group.0.clone())
                .collect(),
        }
    }

    /// Every entity, by user then device.
    pub async fn list_entities(&self) -> Result<Vec<EntityView>, AdminError> {
        let store = &self.core.store;
        let pns: Vec<PnRecord> = store.values(Table::Pns)?;
        let groups: Vec<GroupRecord> = store.values(Table::Groups)?;
        let now = unix_now();
        let mut out: Vec<EntityView> = store
            .values::<EntityRecord>(Table::Entities)?
            .iter()
            .map(|e| self.entity_view(e, &pns, &groups, now))
            .collect();
        out.sort_by(|a, b| (&a.user, &a.device, &a.peer_id).cmp(&(&b.user, &b.device, &b.peer_id)));
        Ok(out)
    }

    /// One entity, by PeerId or by any of its serials.
    pub async fn show_entity(&self, id: &str) -> Result<EntityView, AdminError> {
        let store = &self.core.store;
        let e = resolve_entity(store, id)?;
        let pns: Vec<PnRecord> = store.values(Table::Pns)?;
        let groups: Vec<GroupRecord> = store.values(Table::Groups)?;
        Ok(self.entity_view(&e, &pns, &groups, unix_now()))
    }

    /// Revokes an entity, by PeerId or by any of its serials (which revokes the entity and all
    /// its serials): its serials join the CA-signed revocation list (version + 1), it is
    /// removed from every PN and Service Group (their keys rotate and are pushed), its session
    /// ends, and the new list is pushed to every gateway with a session. Durable before it
    /// returns. Revoking a revoked entity changes nothing (`already_revoked`).
    pub async fn revoke(&self, id: &str) -> Result<RevokeOutcome, AdminError> {
        self.core.revoke(id, unix_now()).await
    }

    /// Every PN.
    pub async fn list_pns(&self) -> Result<Vec<PnView>, AdminError> {
        Ok(self
            .core
            .store
            .values::<PnRecord>(Table::Pns)?
            .iter()
            .map(pn_view)
            .collect())
    }

    /// One PN.
    pub async fn show_pn(&self, pn_id: &str) -> Result<PnView, AdminError> {
        self.core
            .store
            .get::<PnRecord>(Table::Pns, pn_id.trim())?
            .map(|pn| PnView {
                zone_members: crate::zone::member_ids(&self.core.store, &pn.pn_id),
                ..pn_view(&pn)
            })
            .ok_or_else(|| AdminError::NotFound(format!("no PN {pn_id}")))
    }

    /// Every Service Group.
    pub async fn list_groups(&self) -> Result<Vec<GroupView>, AdminError> {
        Ok(self
            .core
            .store
            .values::<GroupRecord>(Table::Groups)?
            .iter()
            .map(group_view)
            .collect())
    }

    /// One Service Group.
    pub async fn show_group(&self, group: &str) -> Result<GroupView, AdminError> {
        self.core
            .store
            .get::<GroupRecord>(Table::Groups, group.trim())?
            .map(|g| group_view(&g))
            .ok_or_else(|| AdminError::NotFound(format!("no Service Group {group}")))
    }

    /// Every charging record, in the order received.
    pub async fn usage_records(&self) -> Result<Vec<ChargingRecord>, AdminError> {
        self.core.charging_records()
    }

    /// Charging records rendered as CSV (with a header row) or JSON.
    pub async fn export_usage(&self, format: UsageFormat) -> Result<String, AdminError> {
        export(&self.core.charging_records()?, format)
    }

    /// The server's identity, addresses and counts.
    pub async fn server_info(&self) -> Result<ServerInfo, AdminError> {
        let core = &self.core;
        let addrs = core
            .listen_addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let admin_addr = *core.admin_addr.read().unwrap_or_else(|p| p.into_inner());
        Ok(ServerInfo {
            peer_id: core.server_peer.to_string(),
            listen_addrs: addrs.iter().map(ToString::to_string).collect(),
            ca_public: core.ca.public().to_string(),
            ca_fingerprint: core.ca.public().fingerprint(),
            revocation_version: core.revocations().version,
            running: self.running,
            admin_addr: admin_addr.map(|a| a.to_string()),
            users: core.store.len(Table::Users),
            entities: core.store.len(Table::Entities),
            pns: core.store.len(Table::Pns),
            groups: core.store.len(Table::Groups),
            sessions: core.authn.session_count(unix_now()),
        })
    }

    /// The Prometheus text exposition of the server's metrics.
    pub fn metrics_text(&self) -> String {
        let core = &self.core;
        core.metrics
            .sessions
            .set(core.authn.session_count(unix_now()) as i64);
        core.metrics.render()
    }

    /// Flushes the database (the offline CLI calls it before exiting).
    pub fn flush(&self) -> Result<(), AdminError> {
        Ok(self.core.store.flush_blocking()?)
    }
}
