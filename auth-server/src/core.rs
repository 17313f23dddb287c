//! The server's shared state and the helpers every area uses: durable commits, key grants,
//! follow-up requests to nodes. The area modules (`enrol`, `pn`, `groups`, `revocation`,
//! `usage`) add their operations in their own `impl Core` blocks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use cpns_keys::{EuKey, GroupKey, Identity, PeerId, RevocationList, UnixTime};
use cpns_overlay::{GroupKeyGrant, MemberGrant, transcript};
use libp2p::Multiaddr;
use tokio::sync::mpsc;
use tracing::warn;
use zeroize::Zeroizing;

use crate::authn::{Authenticator, AuthnLimits, EntityKeys};
use crate::config::Config;
use crate::enrol::EnrolLimits;
use crate::error::StartError;
use crate::metrics::Metrics;
use crate::records::EntityRecord;
use crate::store::{Batch, Store, StoreError, Table, meta};

/// File name of the CA identity in the data dir.
pub(crate) const CA_KEY_FILE: &str = "ca.key";
/// File name of the server's libp2p identity in the data dir.
pub(crate) const SERVER_KEY_FILE: &str = "server.key";
/// Directory of the sled database in the data dir.
pub(crate) const DB_DIR: &str = "db";

/// Seconds since the Unix epoch, from the system clock: the one place the server reads it.
pub(crate) fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A request the server sends to a node after answering (B.1 step 14, key pushes, revocation
/// lists). Executed by the server's pusher task; failures are logged, never fatal.
#[derive(Debug)]
pub(crate) enum Followup {
    /// B.1 steps 14-17 with this gateway.
    StatusUpdate { gateway: PeerId },
    /// New keys for a member, to the member and its gateways.
    KeyPush {
        member: PeerId,
        grants: Vec<GroupKeyGrant>,
    },
    /// The new revocation list, to every gateway with a session.
    Revocations(Arc<RevocationList>),
    /// A PN's record or admin information changed: to its gateway (5.6.9).
    PnChanged { pn_id: String },
    /// An admin that is not the gateway released the PN: to its (former) gateway, which
    /// tells the members.
    PnReleased { pn_id: String, gateway: PeerId },
    /// Members of `from` are members of `into` now (a merge or a split, 5.6.9): to each of
    /// them with a live session.
    PnMoved {
        from: String,
        into: String,
        members: Vec<PeerId>,
    },
    /// An admin invited an entity or a user: to the invitee's devices with a live session.
    PnInvited {
        pn_id: String,
        invitee: cpns_overlay::Invitee,
    },
}

/// Everything the request handler, the admin API and the CLI share.
pub(crate) struct Core {
    pub(crate) config: Config,
    pub(crate) ca: Identity,
    /// The server's libp2p identity (separate from the CA key, so the CA key never touches
    /// the network stack).
    pub(crate) server: Identity,
    pub(crate) server_peer: PeerId,
    pub(crate) store: Store,
    /// Serialises read-modify-write changes, and reads that hand out key material, so nothing
    /// is seen before it is durable.
    write: tokio::sync::Mutex<()>,
    pub(crate) authn: Authenticator,
    revocations: RwLock<Arc<RevocationList>>,
    pub(crate) rate: Mutex<EnrolLimits>,
    pub(crate) metrics: Metrics,
    followups: Option<mpsc::Sender<Followup>>,
    pub(crate) listen_addrs: RwLock<Vec<Multiaddr>>,
    pub(crate) admin_addr: RwLock<Option<std::net::SocketAddr>>,
    /// The server's overlay, once started: where it saw a peer listen (an invitation names
    /// the PN's gateway's addresses).
    pub(crate) overlay: std::sync::OnceLock<cpns_overlay::Client>,
}

impl std::fmt::Debug for Core {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Core")
            .field("server_peer", &self.server_peer)
            .finish_non_exhaustive()
    }
}

/// Creates `dir` with mode 0700, and tightens it to 0700 if it already existed with laxer
/// bits (an existing data dir kept whatever mode it was made with: issue 14).
pub(crate) fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Makes everything under `dir` private to the server's user: directories 0700, files
/// 0600. The database (EUKeys, PN and Service Group keys) is written by sled with the
/// process umask, so it is tightened after opening; the binary also sets umask 077, so
/// files sled creates later are private too.
pub(crate) fn restrict_tree(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mut stack = vec![dir.to_path_buf()];
        // Bounded: the data dir holds a handful of files and sled's few directories.
        let mut left = 10_000usize;
        while let Some(d) = stack.pop() {
            std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700))?;
            for entry in std::fs::read_dir(&d)? {
                let entry = entry?;
                let kind = entry.file_type()?;
                left = left.saturating_sub(1);
                if left == 0 {
                    return Ok(());
                }
                if kind.is_dir() {
                    stack.push(entry.path());
                } else if kind.is_file() {
                    std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))?;
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

impl Core {
    /// Opens the data dir: creates it (0700), the CA key and the server key on first use, opens
    /// the database and signs the first (empty) revocation list.
    pub(crate) fn open(
        config: Config,
        followups: Option<mpsc::Sender<Followup>>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let dir = config.data_dir.clone();
        create_private_dir(&dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let (ca, _) = Identity::load_or_generate(&dir.join(CA_KEY_FILE))?;
        let (server, _) = Identity::load_or_generate(&dir.join(SERVER_KEY_FILE))?;
        let store = Store::open(&dir.join(DB_DIR))?;
        restrict_tree(&dir).map_err(|source| StartError::DataDir {
            path: dir.clone(),
            source,
        })?;
        let revocations = match store.get::<RevocationList>(Table::Meta, meta::REVOCATIONS)? {
            Some(list) => list,
            None => {
                let list = RevocationList::sign(&ca, 1, unix_now(), [])
                    .map_err(|e| StoreError::Encode(e.to_string()))?;
                let mut b = Batch::default();
                b.put(Table::Meta, meta::REVOCATIONS, &list)?;
                store.apply(&b)?;
                store.flush_blocking()?;
                list
            }
        };
        let listen_addrs = store
            .get::<Vec<Multiaddr>>(Table::Meta, meta::LISTEN_ADDRS)?
            .unwrap_or_default();
        let metrics = Metrics::new();
        metrics.pns.set(store.len(Table::Pns) as i64);
        metrics.groups.set(store.len(Table::Groups) as i64);
        metrics.entities.set(store.len(Table::Entities) as i64);
        Ok(Self {
            authn: Authenticator::new(AuthnLimits::from(&config)),
            rate: Mutex::new(EnrolLimits::new(
                config.enrol_attempts_per_minute,
                config.enrol_attempts_global_per_minute,
                config.max_rate_limited_peers,
            )),
            server_peer: server.peer_id(),
            server,
            config,
            ca,
            store,
            write: tokio::sync::Mutex::new(()),
            revocations: RwLock::new(Arc::new(revocations)),
            metrics,
            followups,
            listen_addrs: RwLock::new(listen_addrs),
            admin_addr: RwLock::new(None),
            overlay: std::sync::OnceLock::new(),
        })
    }

    /// Whether `dir` holds an initialised data dir (a CA key).
    pub(crate) fn is_initialised(dir: &Path) -> bool {
        dir.join(CA_KEY_FILE).exists()
    }

    pub(crate) fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// The current signed revocation list.
    pub(crate) fn revocations(&self) -> Arc<RevocationList> {
        self.revocations
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_revocations(&self, list: RevocationList) {
        *self.revocations.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(list);
    }

    /// Runs `change` under the write lock, commits its batch atomically and waits until it is
    /// durable. The closure reads the current state from the store and returns the batch to
    /// write and its result; it must not block.
    pub(crate) async fn commit<T, E>(
        &self,
        change: impl FnOnce(&Store) -> Result<(Batch, T), E>,
    ) -> Result<T, E>
    where
        E: From<StoreError>,
    {
        let _guard = self.write.lock().await;
        let (batch, out) = change(&self.store)?;
        if !batch.is_empty() {
            self.store.apply(&batch)?;
            self.store.flush().await?;
        }
        Ok(out)
    }

    /// Runs a read that hands out state (keys, records) under the write lock, so that it never
    /// shows a change before that change is durable.
    pub(crate) async fn read<T>(&self, read: impl FnOnce(&Store) -> T) -> T {
        let _guard = self.write.lock().await;
        read(&self.store)
    }

    /// An entity's record.
    pub(crate) fn entity(&self, peer: &PeerId) -> Result<Option<EntityRecord>, StoreError> {
        self.store.get(Table::Entities, peer.to_bytes())
    }

    /// What authentication needs of an entity.
    pub(crate) fn entity_keys(&self, peer: &PeerId) -> Result<Option<EntityKeys>, StoreError> {
        Ok(self.entity(peer)?.map(|e| EntityKeys {
            user: e.user.clone(),
            serials: e.serials.clone(),
            eukey: e.eukey(),
            revoked: e.revoked.is_some(),
            issued: Some(e.credential.clone()),
        }))
    }

    /// Queues a follow-up request; dropped (and logged) if the queue is full or the server is
    /// not running: members can always pull.
    pub(crate) fn follow(&self, followup: Followup) {
        if let Some(tx) = &self.followups
            && let Err(e) = tx.try_send(followup)
        {
            warn!("follow-up request dropped: {e}");
            self.metrics.push("queue", "dropped");
        }
    }

    /// Queues key pushes for every member of a rotated group.
    pub(crate) fn push_keys(&self, key: &GroupKey, members: &[PeerId]) {
        if !self.config.push_keys || self.followups.is_none() {
            return;
        }
        for member in members {
            match self.entity(member) {
                Ok(Some(e)) if e.revoked.is_none() => self.follow(Followup::KeyPush {
                    member: *member,
                    grants: vec![grant(&e.eukey(), key, member)],
                }),
                Ok(_) => {}
                Err(e) => warn!(%member, "cannot push keys: {e}"),
            }
        }
    }

    /// A grant of `key` for each member (members without a record are skipped).
    pub(crate) fn grants(
        &self,
        key: &GroupKey,
        members: &[PeerId],
    ) -> Result<Vec<MemberGrant>, StoreError> {
        let mut out = Vec::with_capacity(members.len());
        for member in members {
            if let Some(e) = self.entity(member)?
                && e.revoked.is_none()
            {
                out.push(MemberGrant {
                    member: *member,
                    grant: grant(&e.eukey(), key, member),
                });
            }
        }
        Ok(out)
    }
}

/// `key` sealed under a member's EUKey, bound to group, epoch and member by the AAD.
pub(crate) fn grant(eukey: &EuKey, key: &GroupKey, member: &PeerId) -> GroupKeyGrant {
    let aad = transcript::group_key_aad(key.group(), key.epoch(), member);
    let secret = Zeroizing::new(key.encode_secret());
    GroupKeyGrant {
        group: key.group().clone(),
        epoch: key.epoch(),
        sealed: eukey.seal(&aad, &secret),
    }
}

/// A random id: `prefix` and 16 hex digits.
pub(crate) fn random_id(prefix: &str) -> String {
    let mut b = [0u8; 8];
    rand::Rng::fill_bytes(&mut rand::rng(), &mut b);
    format!("{prefix}{}", hex::encode(b))
}
