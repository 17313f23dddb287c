//! Helpers for tests, examples and benchmarks: a CA, and meshes of overlay nodes on loopback
//! each running a [`Directory`] with its [`Validator`], answering directory messages the way a
//! node does (including a gateway's advertisement fan-out).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cpns_keys::{CredentialBody, EntityCredential, Identity, Modes, PeerId, RevocationList};
use cpns_overlay::{
    Client, DirectoryMessage, ErrorCode, Event, Message, Multiaddr, Protocol, ResponseChannel,
};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::{Config, Directory, MemoryKeyRing, Trust, Validator};

/// Failures building a test mesh.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum MeshError {
    /// The overlay failed.
    #[error("overlay: {0}")]
    Overlay(#[from] cpns_overlay::Error),
    /// The directory could not be opened.
    #[error("directory: {0}")]
    Directory(#[from] crate::DirectoryError),
    /// sled failed.
    #[error("sled: {0}")]
    Sled(#[from] sled::Error),
}

/// A certification authority for tests (what `cpns-auth` is in a deployment).
#[derive(Clone, Debug)]
pub struct Ca {
    /// The CA's key.
    pub identity: Identity,
}

impl Ca {
    /// A CA with a seeded key.
    pub fn new(seed: u8) -> Self {
        Self {
            identity: Identity::from_secret_bytes([seed; 32]),
        }
    }

    /// A credential for `node`, valid from a minute ago for a day.
    pub fn issue(&self, node: &Identity, serial: u64, modes: Modes) -> EntityCredential {
        let now = crate::now();
        EntityCredential::issue(
            &self.identity,
            CredentialBody {
                entity: node.peer_id(),
                user: format!("user-{serial}"),
                device: format!("device-{serial}"),
                modes,
                serial,
                issued: now.saturating_sub(60),
                expires: now + 86_400,
            },
        )
    }

    /// A signed revocation list.
    pub fn revoke(&self, version: u64, serials: &[u64]) -> RevocationList {
        match RevocationList::sign(
            &self.identity,
            version,
            crate::now(),
            serials.iter().copied(),
        ) {
            Ok(l) => l,
            Err(e) => unreachable!("a test revocation list is small: {e}"),
        }
    }

    /// A fresh trust anchor in this CA.
    pub fn trust(&self) -> Arc<Trust> {
        Arc::new(Trust::new(
            self.identity.public(),
            RevocationList::empty_unsigned(),
        ))
    }
}

/// The deterministic identity of mesh node `index` (distinct for every `index` below 2^32).
pub fn node_identity(index: usize) -> Identity {
    let mut b = [0x5au8; 32];
    b[..8].copy_from_slice(&(index as u64).to_be_bytes());
    Identity::from_secret_bytes(b)
}

/// The provider key of a public keyword (for diagnostics).
pub fn public_keyword_key(keyword: &str) -> Vec<u8> {
    crate::keyword::KeyScope::Public.keyword(keyword)
}

/// The record key of a publisher's index of its public services (for tests and diagnostics).
pub fn public_index_key(publisher: &PeerId) -> Vec<u8> {
    crate::keyword::KeyScope::Public.index(publisher)
}

/// The record key of a public service (for tests and diagnostics).
pub fn public_service_key(id: &str) -> Vec<u8> {
    crate::keyword::KeyScope::Public.service(id)
}

/// How to start one mesh node.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    /// Overlay configuration (the validator is replaced by the node's own).
    pub overlay: cpns_overlay::Config,
    /// Directory configuration.
    pub directory: Config,
    /// Where the node's sled database lives; `None`: a temporary database.
    pub db_path: Option<PathBuf>,
    /// The credential serial (also the credential's user and device names).
    pub serial: u64,
    /// The modes the credential allows.
    pub modes: Modes,
}

impl NodeOptions {
    /// Options for a node with default configurations.
    pub fn new(overlay: cpns_overlay::Config, directory: Config) -> Self {
        Self {
            overlay,
            directory,
            db_path: None,
            serial: 1,
            modes: Modes::ALL,
        }
    }
}

/// One running node: overlay, directory, and the task answering directory messages.
pub struct MeshNode {
    /// The overlay client.
    pub client: Client,
    /// The node's identity.
    pub identity: Identity,
    /// Its PeerId.
    pub peer: PeerId,
    /// The node's directory.
    pub directory: Directory,
    /// Its group keys.
    pub keys: Arc<MemoryKeyRing>,
    /// Its trust anchor and revocation list.
    pub trust: Arc<Trust>,
    /// Its record validator.
    pub validator: Arc<Validator>,
    /// Its dialable address (`.../p2p/PEERID`).
    pub addr: Multiaddr,
    /// Its database.
    pub db: sled::Db,
    cancel: CancellationToken,
    tasks: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for MeshNode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MeshNode")
            .field("peer", &self.peer)
            .finish_non_exhaustive()
    }
}

impl MeshNode {
    /// Starts a node with `identity`, certified by `ca`.
    pub async fn spawn(ca: &Ca, identity: Identity, opts: NodeOptions) -> Result<Self, MeshError> {
        let trust = ca.trust();
        let validator = Arc::new(Validator::new(trust.clone(), &opts.directory));
        let mut overlay = opts.overlay.clone();
        overlay.validator = validator.clone();
        let (client, events, event_loop) = cpns_overlay::new(overlay, &identity).await?;
        let cancel = CancellationToken::new();
        let mut tasks = vec![tokio::spawn(event_loop.run(cancel.clone()))];
        let sled_config = sled::Config::new()
            .cache_capacity(1 << 20)
            .flush_every_ms(None);
        let db = match &opts.db_path {
            Some(p) => sled_config.path(p).open()?,
            None => sled_config.temporary(true).open()?,
        };
        let keys = Arc::new(MemoryKeyRing::new());
        let credential = ca.issue(&identity, opts.serial, opts.modes);
        let directory = Directory::open(
            opts.directory.clone(),
            client.clone(),
            identity.clone(),
            credential,
            trust.clone(),
            keys.clone(),
            &db,
        )?;
        tasks.push(tokio::spawn(serve(
            client.clone(),
            directory.clone(),
            events,
            cancel.clone(),
        )));
        let peer = identity.peer_id();
        let addr = client
            .listen_addrs()
            .await?
            .into_iter()
            .next()
            .ok_or_else(|| cpns_overlay::Error::Listen("no listen address".into()))?
            .with(libp2p::multiaddr::Protocol::P2p(peer));
        Ok(Self {
            client,
            identity,
            peer,
            directory,
            keys,
            trust,
            validator,
            addr,
            db,
            cancel,
            tasks,
        })
    }

    /// Stops the node and waits for its tasks; its database is flushed and closed.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.db.flush_async().await;
    }
}

/// Answers inbound requests as a node would: directory messages through
/// [`Directory::handle`], and, acting as a gateway, forwards a verified advertisement to the
/// peers subscribed to one of its keyword keys.
async fn serve(
    client: Client,
    directory: Directory,
    mut events: mpsc::Receiver<Event>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => return,
            e = events.recv() => match e { Some(e) => e, None => return },
        };
        let Event::InboundRequest {
            peer,
            message,
            channel,
        } = event
        else {
            continue;
        };
        answer(&client, &directory, peer, message, channel).await;
    }
}

async fn answer(
    client: &Client,
    directory: &Directory,
    peer: PeerId,
    message: Message,
    channel: ResponseChannel,
) {
    let Message::Directory(msg) = message else {
        let _ = client
            .respond(channel, Message::error(ErrorCode::Unsupported, "not here"))
            .await;
        return;
    };
    let forward = match &msg {
        DirectoryMessage::Advertise { record } => Some(record.clone()),
        _ => None,
    };
    let reply = directory.handle(peer, msg);
    let accepted = matches!(reply, Message::Ack);
    let _ = client.respond(channel, reply).await;
    if let (Some(record), true) = (forward, accepted)
        && let Ok(desc) = directory.open_advertisement(&record)
    {
        let mut targets: Vec<PeerId> = directory
            .keyword_keys(&desc)
            .iter()
            .flat_map(|k| directory.subscribers(k))
            .filter(|p| *p != peer && *p != desc.publisher)
            .collect();
        targets.sort();
        targets.dedup();
        for t in targets {
            let client = client.clone();
            let record = record.clone();
            tokio::spawn(async move {
                let msg = Message::Directory(DirectoryMessage::Advertise { record });
                let _ = client.request(t, Protocol::Cpns, msg).await;
            });
        }
    }
}

/// A mesh of directory nodes on loopback.
pub struct Mesh {
    /// The CA that certified every node.
    pub ca: Ca,
    /// The nodes, in start order.
    pub nodes: Vec<MeshNode>,
}

impl std::fmt::Debug for Mesh {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mesh")
            .field("nodes", &self.nodes.len())
            .finish_non_exhaustive()
    }
}

impl Mesh {
    /// Starts `n` nodes with the given configurations: node 0 first, every later node
    /// bootstrapping from up to three earlier ones; then every node refreshes its routing
    /// table with one more bootstrap, and the mesh waits (at most `wait`) until every routing
    /// table holds at least `min(n - 1, 8)` peers. Credentials get serials 1..=n.
    pub async fn start(
        n: usize,
        overlay: cpns_overlay::Config,
        directory: Config,
        wait: Duration,
    ) -> Result<Mesh, MeshError> {
        Self::start_with(n, wait, |_| {
            NodeOptions::new(overlay.clone(), directory.clone())
        })
        .await
    }

    /// [`Mesh::start`] with per-node options (`options(i)`; bootstrap peers and serial are
    /// filled in).
    pub async fn start_with(
        n: usize,
        wait: Duration,
        mut options: impl FnMut(usize) -> NodeOptions,
    ) -> Result<Mesh, MeshError> {
        let ca = Ca::new(0xca);
        let mut nodes: Vec<MeshNode> = Vec::with_capacity(n);
        for i in 0..n {
            let mut opts = options(i);
            opts.overlay.bootstrap = bootstrap_peers(&nodes, i);
            opts.serial = i as u64 + 1;
            nodes.push(MeshNode::spawn(&ca, node_identity(i), opts).await?);
        }
        let mesh = Mesh { ca, nodes };
        mesh.settle(wait).await;
        Ok(mesh)
    }

    /// Runs one bootstrap on every node (a few at a time) and waits until routing tables are
    /// reasonably full or `wait` has passed.
    pub async fn settle(&self, wait: Duration) {
        use futures::StreamExt;
        let deadline = tokio::time::Instant::now() + wait;
        let n = self.nodes.len();
        let _ = tokio::time::timeout_at(
            deadline,
            futures::stream::iter(self.nodes.iter().map(|m| m.client.bootstrap()))
                .buffer_unordered(8)
                .collect::<Vec<_>>(),
        )
        .await;
        let want = n.saturating_sub(1).min(8);
        for m in &self.nodes {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let _ = m.client.wait_routing_table(want, left).await;
        }
    }

    /// Stops every node.
    pub async fn shutdown(self) {
        for m in self.nodes {
            m.shutdown().await;
        }
    }
}

/// Bootstrap addresses for node `i`: up to three earlier nodes, spread over the mesh.
pub fn bootstrap_peers(nodes: &[MeshNode], i: usize) -> Vec<Multiaddr> {
    if nodes.is_empty() {
        return Vec::new();
    }
    let mut picks = vec![0, i / 2, i.saturating_sub(1)];
    picks.sort_unstable();
    picks.dedup();
    picks
        .into_iter()
        .filter_map(|j| nodes.get(j))
        .map(|m| m.addr.clone())
        .collect()
}
