//! The running node: its overlay, its state, its tasks, and their orderly shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use cpns_keys::Identity;
use cpns_overlay::{Event, KadMode};
use libp2p::{Multiaddr, PeerId};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::api;
use crate::config::{Config, ModeSetting};
use crate::enrolment::Enrolment;
use crate::error::{OpError, StartError};
use crate::handlers;
use crate::keyring::KeyRing;
use crate::pn;
use crate::shared::Shared;

/// Most inbound requests handled at once; further ones wait (the overlay's bounded event
/// channel then pushes back on the network).
const MAX_CONCURRENT_HANDLERS: usize = 256;

/// File name of the node's identity in the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// A running CPNS node.
pub struct Node {
    shared: Arc<Shared>,
    tasks: JoinSet<()>,
    api_addr: std::net::SocketAddr,
}

impl Node {
    /// Starts a node: loads (or creates) its identity in the data dir, starts the overlay,
    /// the local HTTP API and the background tasks.
    pub async fn start(config: Config) -> Result<Node, StartError> {
        config.validate()?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::DataDir {
            path: config.data_dir.clone(),
            source: e,
        })?;
        restrict_dir(&config.data_dir);
        let (identity, created) = Identity::load_or_generate(&config.data_dir.join(IDENTITY_FILE))?;
        if created {
            info!(peer = %identity.peer_id(), "generated a new identity");
        }
        // A node's database is small (its PN, keys, services, outbox): a small cache keeps an
        // idle node's memory low; sled's default would let it grow to 1 GiB.
        let db = sled::Config::new()
            .path(config.data_dir.join("db"))
            .cache_capacity(4 * 1024 * 1024)
            .mode(sled::Mode::LowSpace)
            .open()
            .map_err(|e| StartError::Database(e.to_string()))?;

        let validator = Arc::new(crate::services::NodeValidator::default());
        let overlay_config = cpns_overlay::Config {
            validator: validator.clone(),
            // A connection setup (B.1 step 18) waits for steps 19-25; allow for a slow server.
            request_timeout: Duration::from_secs(30),
            listen: config.listen_addrs(),
            bootstrap: config.bootstrap_addrs(),
            kad_mode: KadMode::Server,
            replication_factor: config.dht_replication,
            mdns: config.mdns,
            agent: format!("cpns-node/{}", env!("CARGO_PKG_VERSION")),
            ..cpns_overlay::Config::default()
        };
        check_ports_free(&overlay_config.listen)?;
        let (client, events, event_loop) = cpns_overlay::new(overlay_config, &identity).await?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(event_loop.run(cancel.clone()));

        let keyring =
            Arc::new(KeyRing::open(&db).map_err(|e| StartError::Database(e.to_string()))?);
        let enrolment =
            Enrolment::load(&config.data_dir).map_err(|e| StartError::Enrolment(e.to_string()))?;
        let shared = Arc::new(Shared::new(
            config,
            identity,
            client,
            db,
            keyring,
            validator,
            enrolment,
            cancel.clone(),
        ));
        shared.restore_pn();

        let (api_addr, api_task) = api::serve(shared.clone()).await?;
        tasks.spawn(api_task);
        tasks.spawn(dispatch(shared.clone(), events));
        handlers::spawn_background(&shared, &mut tasks);
        if shared.is_enrolled()
            && let Err(e) = crate::services::start(&shared)
        {
            warn!("the service directory did not start: {e}");
        }
        tasks.spawn(resume(shared.clone()));

        info!(
            peer = %shared.peer_id,
            addrs = ?shared.client.listen_addrs().await.unwrap_or_default(),
            api = %api_addr,
            "cpns-node started"
        );
        Ok(Node {
            shared,
            tasks,
            api_addr,
        })
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The local HTTP API's address.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr
    }

    /// The addresses the node listens on, with `/p2p/PEERID`.
    pub async fn dial_addrs(&self) -> Vec<Multiaddr> {
        self.shared
            .client
            .listen_addrs()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(self.shared.peer_id)))
            .collect()
    }

    /// The in-process handle for tests and embedders: the same operations as the HTTP API.
    pub fn handle(&self) -> crate::Handle {
        crate::Handle::new(self.shared.clone())
    }

    /// Stops everything: tells the PN (G.1 step 9 when asked to leave, or just Offline), stops
    /// the API, the tasks and the overlay, and flushes the database.
    pub async fn shutdown(mut self) {
        handlers::on_shutdown(&self.shared).await;
        self.shared.cancel.cancel();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while let Ok(Some(res)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
            if let Err(e) = res
                && e.is_panic()
            {
                warn!("a node task panicked: {e}");
            }
        }
        self.tasks.abort_all();
        api::remove_api_file(&self.shared.config.data_dir);
        if let Err(e) = self.shared.db.flush_async().await {
            warn!("final database flush failed: {e}");
        }
        info!(peer = %self.shared.peer_id, "cpns-node stopped");
    }
}

/// libp2p listens with SO_REUSEPORT, so a second node on a fixed port would silently share it
/// with the first and get half of its connections. Probe each fixed TCP port with a plain
/// socket first, which the kernel refuses while another socket holds the port.
fn check_ports_free(listen: &[Multiaddr]) -> Result<(), StartError> {
    use libp2p::multiaddr::Protocol;
    for addr in listen {
        let mut ip = None;
        let mut port = None;
        for p in addr.iter() {
            match p {
                Protocol::Ip4(a) => ip = Some(std::net::IpAddr::V4(a)),
                Protocol::Ip6(a) => ip = Some(std::net::IpAddr::V6(a)),
                Protocol::Tcp(p) => port = Some(p),
                _ => {}
            }
        }
        if let (Some(ip), Some(port)) = (ip, port)
            && port != 0
            && let Err(e) = std::net::TcpListener::bind((ip, port))
        {
            return Err(StartError::Overlay(cpns_overlay::Error::Listen(format!(
                "{addr}: {e}"
            ))));
        }
    }
    Ok(())
}

/// Makes the data dir private to its owner (identity, keys and the API token live there).
fn restrict_dir(dir: &Path) {
    use std::os::unix::fs::PermissionsExt;
    if let Err(e) = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)) {
        warn!(dir = %dir.display(), "cannot restrict the data dir to its owner: {e}");
    }
}

/// Reads overlay events and hands each to a handler task (at most
/// [`MAX_CONCURRENT_HANDLERS`] at once).
async fn dispatch(shared: Arc<Shared>, mut events: tokio::sync::mpsc::Receiver<Event>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_HANDLERS));
    let mut running = JoinSet::new();
    loop {
        let event = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => break,
            Some(res) = running.join_next(), if !running.is_empty() => {
                if let Err(e) = res && e.is_panic() {
                    warn!("a request handler panicked: {e}");
                }
                continue;
            }
            ev = events.recv() => match ev {
                Some(ev) => ev,
                None => break,
            },
        };
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        running.spawn(async move {
            handlers::handle_event(&shared, event).await;
            drop(permit);
        });
    }
    running.abort_all();
    debug!("event dispatch stopped");
}

/// After a restart (or at first start of a configured gateway): a gateway sets its PN up with
/// `cpns-auth` again (steps 8-17; the server updates the PN it already has), a PNE reconnects
/// to its gateway. Failures are logged: the node keeps serving what it has (offline first).
async fn resume(shared: Arc<Shared>) {
    if !shared.is_enrolled() {
        return;
    }
    let (gateway, in_pn) = {
        let s = shared.state();
        (s.pn.as_ref().map(|p| p.membership.gateway), s.pn.is_some())
    };
    let is_gateway =
        gateway == Some(shared.peer_id) || (!in_pn && shared.config.mode == ModeSetting::Gateway);
    if is_gateway {
        pn::gateway::take_gateway_role(&shared).await;
        match pn::gateway::establish(&shared).await {
            Ok(_) => {}
            // The PN moved to another gateway while this one was away: it re-joins as a PNE.
            Err(OpError::Conflict(e)) => info!("{e}"),
            Err(e) => warn!(
                "cannot set the PN up with cpns-auth now (serving existing members offline): {e}"
            ),
        }
    } else if in_pn && let Err(e) = pn::member::resume(&shared).await {
        warn!("cannot reach the PN's gateway now: {e}");
    }
}
