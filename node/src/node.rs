//! The running node: its overlay, its state, its tasks, and their orderly shutdown.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpns_keys::Identity;
use cpns_overlay::KadMode;
use libp2p::{Multiaddr, PeerId};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::Handle;
use crate::api;
use crate::auth_link::AuthLink;
use crate::config::Config;
use crate::context::Context;
use crate::delivery::Delivery;
use crate::enrolment::Enrolment;
use crate::error::StartError;
use crate::groups::Groups;
use crate::keyring::KeyRing;
use crate::lan::Lan;
use crate::metrics::Metrics;
use crate::renewal::Renewal;
use crate::router::Router;
use crate::services::Services;
use crate::store::Store;
use crate::trace::Trace;
use crate::usage::Usage;

/// File name of the node's identity in the data dir.
pub const IDENTITY_FILE: &str = "identity.key";

/// How long shutdown waits for the node's tasks before it stops them.
const SHUTDOWN_WAIT: Duration = Duration::from_secs(5);

/// A running CPNS node.
pub struct Node {
    ctx: Context,
    handle: Handle,
    tasks: JoinSet<()>,
    api_addr: std::net::SocketAddr,
}

impl Node {
    /// Starts a node: loads (or creates) its identity in the data dir, opens its database,
    /// starts the overlay, the PN actor, the router, the local HTTP API and the modules' tasks,
    /// every one in the node's `JoinSet`.
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
        let db_dir = config.data_dir.join("db");
        // Off the runtime's threads: the open may wait for the lock (see `Store::open`).
        let store = tokio::task::spawn_blocking(move || Store::open(&db_dir))
            .await
            .map_err(|e| StartError::Database(e.to_string()))?
            .map_err(|e| StartError::Database(e.to_string()))?;

        let enrolment =
            Enrolment::load(&config.data_dir).map_err(|e| StartError::Enrolment(e.to_string()))?;
        let auth_server = enrolment
            .as_ref()
            .map(|e| e.server_dial_addrs())
            .unwrap_or_default();
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
            nat: config.nat_overlay(&auth_server),
            agent: format!("cpns-node/{}", env!("CARGO_PKG_VERSION")),
            ..cpns_overlay::Config::default()
        };
        check_ports_free(&overlay_config.listen)?;
        let (client, events, event_loop) = cpns_overlay::new(overlay_config, &identity).await?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(event_loop.run(cancel.clone()));

        let keyring =
            Arc::new(KeyRing::open(&store).map_err(|e| StartError::Database(e.to_string()))?);
        let stored = store
            .load_pn()
            .map_err(|e| StartError::Database(e.to_string()))?;
        let listen_addrs = client.listen_addrs().await.unwrap_or_default();
        let config = Arc::new(config);
        let (credentials_tx, credentials_rx) = tokio::sync::watch::channel(None);
        let trace = Arc::new(Trace::new(config.trace_capacity));
        let metrics = Arc::new(Metrics::default());
        let ctx = Context::new(crate::context::Inner {
            config: config.clone(),
            identity: identity.clone(),
            peer_id: identity.peer_id(),
            client,
            trace: trace.clone(),
            metrics: metrics.clone(),
            cancel: cancel.clone(),
            started: Instant::now(),
            store,
            keyring,
            credentials: credentials_rx,
        });
        let (revocations_tx, revocations_rx) = tokio::sync::mpsc::channel(8);
        let auth = AuthLink::new(ctx.clone(), revocations_tx);

        // The first capabilities read happens before the actor starts, off the runtime.
        let mode = crate::pn::gateway_mode(config.mode).unwrap_or(cpns_overlay::NodeMode::Pne);
        let preference = crate::pn::preference_of(&config, config.mode);
        let overrides = config.capabilities.clone();
        let (reader, caps) = tokio::task::spawn_blocking(move || {
            let mut reader: Box<crate::caps::Reader> = Box::default();
            let caps = reader.read(&overrides, mode, preference, 1);
            (reader, caps)
        })
        .await
        .map_err(|e| StartError::Api(format!("reading the capabilities: {e}")))?;
        let env = crate::pn::Env {
            me: identity.peer_id(),
            identity,
            config: config.clone(),
            trace,
            metrics,
        };
        let state = crate::pn::State::new(env, enrolment, stored, listen_addrs, caps, reader);
        let pn = crate::pn::spawn(
            ctx.clone(),
            auth.clone(),
            state,
            credentials_tx,
            revocations_rx,
            &mut tasks,
        );

        let services = Services::new(ctx.clone(), pn.clone(), validator);
        let usage = Usage::new(ctx.clone(), pn.clone(), auth.clone())
            .map_err(|e| StartError::Database(e.to_string()))?;
        let delivery = Delivery::new(
            ctx.clone(),
            pn.clone(),
            services.clone(),
            usage.clone(),
            auth.clone(),
        )
        .map_err(|e| StartError::Database(e.to_string()))?;
        let groups = Groups::new(ctx.clone(), auth.clone());
        let renewal = Renewal::new(ctx.clone(), auth.clone(), pn.clone(), services.clone());
        let (lan, lan_events) = Lan::new();
        let (proxy, proxied) = crate::proxy::Proxy::new();
        let (zone, zone_commands) = crate::zone::Zone::new();
        let router = Router {
            ctx: ctx.clone(),
            pn: pn.clone(),
            services: services.clone(),
            delivery: delivery.clone(),
            usage: usage.clone(),
            lan,
            zone: zone.clone(),
            proxy: proxy.clone(),
        };
        let handle = Handle::new(crate::handle::Parts {
            ctx: ctx.clone(),
            pn: pn.clone(),
            auth: auth.clone(),
            services: services.clone(),
            delivery: delivery.clone(),
            usage: usage.clone(),
            groups,
            renewal: renewal.clone(),
            proxy,
            zone,
        });

        let (api_addr, api_task) = api::serve(&ctx, handle.clone()).await?;
        tasks.spawn(api_task);
        tasks.spawn(router.run(events));
        tasks.spawn(services.run());
        tasks.spawn(delivery.run());
        tasks.spawn(usage.run());
        tasks.spawn(renewal.run());
        tasks.spawn(crate::zone::run(
            ctx.clone(),
            pn.clone(),
            handle.clone(),
            auth,
            zone_commands,
        ));
        tasks.spawn(crate::lan::run(ctx.clone(), pn, lan_events));
        tasks.spawn(crate::proxy::run(ctx.clone(), handle.clone(), proxied));

        info!(
            peer = %ctx.peer_id,
            addrs = ?ctx.client.listen_addrs().await.unwrap_or_default(),
            api = %api_addr,
            "cpns-node started"
        );
        Ok(Node {
            ctx,
            handle,
            tasks,
            api_addr,
        })
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.ctx.peer_id
    }

    /// The local HTTP API's address.
    pub fn api_addr(&self) -> std::net::SocketAddr {
        self.api_addr
    }

    /// The addresses the node listens on, with `/p2p/PEERID`.
    pub async fn dial_addrs(&self) -> Vec<Multiaddr> {
        self.ctx
            .client
            .listen_addrs()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|a| a.with(libp2p::multiaddr::Protocol::P2p(self.ctx.peer_id)))
            .collect()
    }

    /// The in-process handle for tests and embedders: the same operations as the HTTP API.
    pub fn handle(&self) -> crate::Handle {
        self.handle.clone()
    }

    /// Stops everything: tells the gateway this node goes Offline, cancels every task, waits
    /// for all of them (at most [`SHUTDOWN_WAIT`], then stops the rest), and flushes the
    /// database.
    pub async fn shutdown(mut self) {
        self.handle.announce_offline().await;
        self.ctx.cancel.cancel();
        let deadline = tokio::time::Instant::now() + SHUTDOWN_WAIT;
        while let Ok(Some(res)) = tokio::time::timeout_at(deadline, self.tasks.join_next()).await {
            if let Err(e) = res
                && e.is_panic()
            {
                warn!("a node task panicked: {e}");
            }
        }
        if !self.tasks.is_empty() {
            warn!(
                left = self.tasks.len(),
                "node tasks still running at shutdown: stopped"
            );
            self.tasks.abort_all();
            while self.tasks.join_next().await.is_some() {}
        }
        api::remove_api_file(&self.ctx.config.data_dir);
        if let Err(e) = self.ctx.store.flush().await {
            warn!("final database flush failed: {e}");
        }
        info!(peer = %self.ctx.peer_id, "cpns-node stopped");
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
