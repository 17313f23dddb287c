//! The running server: the libp2p node on `/cpns/auth/1.0.0`, the request dispatcher, the
//! pusher that sends the server's own requests (B.1 steps 14 and 17, key pushes, revocation
//! lists), the admin endpoint and a periodic clean-up.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cpns_keys::{PeerId, PublicKey};
use cpns_overlay::{AuthMessage, Client, Event, KadMode, Message, Protocol};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol as MaProtocol;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::admin::{Admin, AdminFile};
use crate::config::Config;
use crate::core::{Core, Followup, unix_now};
use crate::error::StartError;
use crate::handler;
use crate::records::PnRecord;
use crate::store::{Batch, Table, meta};

/// Capacity of the queue of follow-up requests (pushes); when full, pushes are dropped and
/// members pull instead.
const FOLLOWUP_QUEUE: usize = 4096;
/// Most follow-up requests in flight at once.
const MAX_PUSHES_IN_FLIGHT: usize = 64;
/// How often expired sessions and challenges are forgotten.
const GC_INTERVAL: Duration = Duration::from_secs(10);
/// How many clean-up ticks apart `pn_moves.v1` is pruned (every ten minutes).
const PRUNE_EVERY: u64 = 60;
/// How long shutdown waits for requests in progress.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Starts servers; see [`Server::start`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// Starts a server on `config`: opens (or initialises) the data dir, starts the libp2p node
    /// and the admin endpoint, writes `admin.json`, and returns once everything listens.
    ///
    /// ```no_run
    /// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
    /// let server = cpns_auth::Server::start(cpns_auth::Config::with_data_dir("/tmp/auth")).await?;
    /// server.admin().create_user("alice").await?;
    /// let code = server
    ///     .admin()
    ///     .create_code("alice", cpns_keys::Modes::ALL, std::time::Duration::from_secs(3600), false)
    ///     .await?;
    /// println!("cpns-node enrol {code}");
    /// server.shutdown().await;
    /// # Ok(()) }
    /// ```
    pub async fn start(config: Config) -> Result<ServerHandle, StartError> {
        let (followup_tx, followup_rx) = mpsc::channel(FOLLOWUP_QUEUE);
        let core = tokio::task::spawn_blocking(move || Core::open(config, Some(followup_tx)))
            .await
            .map_err(|e| StartError::Admin(std::io::Error::other(e.to_string())))??;
        let core = Arc::new(core);
        let config = &core.config;

        let overlay_config = cpns_overlay::Config {
            listen: config.listen.clone(),
            kad_mode: KadMode::Client,
            mdns: false,
            gate_requests: false,
            max_frame: config.max_frame,
            request_timeout: config.request_timeout,
            event_capacity: 4096,
            agent: format!("cpns-auth/{}", env!("CARGO_PKG_VERSION")),
            nat: config.nat(),
            ..cpns_overlay::Config::default()
        };
        let (client, events, event_loop) = cpns_overlay::new(overlay_config, &core.server).await?;
        let cancel = CancellationToken::new();
        let mut tasks = JoinSet::new();
        tasks.spawn(event_loop.run(cancel.child_token()));

        let _ = core.overlay.set(client.clone());
        let listen_addrs = client.listen_addrs().await?;
        if config.relay {
            for addr in relay_addrs(&config.advertise, &listen_addrs) {
                info!(%addr, "relaying for devices behind NAT at");
                client.add_external_address(addr).await?;
            }
        }
        *core.listen_addrs.write().unwrap_or_else(|p| p.into_inner()) = listen_addrs.clone();
        let addrs = listen_addrs.clone();
        core.commit(|_| {
            let mut b = Batch::default();
            b.put(Table::Meta, meta::LISTEN_ADDRS, &addrs)?;
            Ok::<_, crate::store::StoreError>((b, ()))
        })
        .await?;

        // The admin endpoint, then admin.json (so the file never names a dead endpoint).
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", config.admin_port))
            .await
            .map_err(StartError::Admin)?;
        let admin_addr = listener.local_addr().map_err(StartError::Admin)?;
        *core.admin_addr.write().unwrap_or_else(|p| p.into_inner()) = Some(admin_addr);
        let mut token = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut token);
        let admin_file = AdminFile {
            addr: admin_addr.to_string(),
            token: hex::encode(token),
            pid: std::process::id(),
            peer_id: core.server_peer.to_string(),
        };
        let admin = Admin::new(core.clone(), true);
        let router =
            crate::admin::http::router(admin.clone(), admin_file.token.clone(), admin_addr.port());
        let http_cancel = cancel.child_token();
        tasks.spawn(async move {
            let shutdown = http_cancel.cancelled_owned();
            if let Err(e) = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown)
                .await
            {
                warn!("admin endpoint stopped: {e}");
            }
        });
        admin_file
            .write(&core.data_dir())
            .map_err(StartError::Admin)?;

        let permits = Arc::new(Semaphore::new(core.config.max_concurrent_requests));
        tasks.spawn(dispatch(
            core.clone(),
            client.clone(),
            events,
            permits.clone(),
            cancel.child_token(),
        ));
        tasks.spawn(pusher(
            core.clone(),
            client.clone(),
            followup_rx,
            cancel.child_token(),
        ));
        tasks.spawn(gc(core.clone(), cancel.child_token()));

        info!(
            peer = %core.server_peer,
            addrs = ?listen_addrs,
            admin = %admin_addr,
            "cpns-auth started"
        );
        Ok(ServerHandle {
            core,
            admin,
            client,
            listen_addrs,
            admin_addr,
            admin_file,
            permits,
            cancel,
            tasks,
        })
    }
}

/// A running server. Stop it with [`ServerHandle::shutdown`]; dropping it stops the tasks
/// without waiting and leaves `admin.json` behind.
pub struct ServerHandle {
    core: Arc<Core>,
    admin: Admin,
    client: Client,
    listen_addrs: Vec<Multiaddr>,
    admin_addr: SocketAddr,
    admin_file: AdminFile,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
    tasks: JoinSet<()>,
}

impl std::fmt::Debug for ServerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerHandle")
            .field("peer_id", &self.core.server_peer)
            .field("listen_addrs", &self.listen_addrs)
            .field("admin_addr", &self.admin_addr)
            .finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// The server's PeerId (its libp2p identity, `D/server.key`).
    pub fn peer_id(&self) -> PeerId {
        self.core.server_peer
    }

    /// The addresses the libp2p node listens on (without `/p2p/`).
    pub fn listen_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs.clone()
    }

    /// The listen addresses with `/p2p/PEERID` appended, ready to dial.
    pub fn dial_addrs(&self) -> Vec<Multiaddr> {
        self.listen_addrs
            .iter()
            .map(|a| a.clone().with(MaProtocol::P2p(self.core.server_peer)))
            .collect()
    }

    /// The admin endpoint's address (127.0.0.1).
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_addr
    }

    /// The admin endpoint's bearer token (also in `D/admin.json`).
    pub fn admin_token(&self) -> &str {
        &self.admin_file.token
    }

    /// The CA public key nodes pin (`D/ca.key`).
    pub fn ca_public(&self) -> PublicKey {
        self.core.ca.public()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.core.data_dir()
    }

    /// The in-process admin API (what the CLI does, without HTTP).
    pub fn admin(&self) -> Admin {
        self.admin.clone()
    }

    /// The server's overlay client (tests and tools that want to watch the server's peers).
    pub fn overlay(&self) -> &Client {
        &self.client
    }

    /// Stops the server: stops accepting requests, lets the ones in progress finish (up to
    /// 10 s), stops the node and the admin endpoint, flushes the database and removes
    /// `admin.json`.
    pub async fn shutdown(mut self) {
        self.cancel.cancel();
        let max = self.core.config.max_concurrent_requests;
        let drained = tokio::time::timeout(
            DRAIN_TIMEOUT,
            self.permits
                .acquire_many(u32::try_from(max).unwrap_or(u32::MAX)),
        )
        .await;
        if drained.is_err() {
            warn!("requests still in progress at shutdown");
        }
        while self.tasks.join_next().await.is_some() {}
        if let Err(e) = self.core.store.flush().await {
            warn!("final flush failed: {e}");
        }
        self.admin_file.remove_if_ours(&self.core.data_dir());
        info!(peer = %self.core.server_peer, "cpns-auth stopped");
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        self.cancel.cancel();
    }
}

/// Takes inbound requests off the overlay and handles each in its own task, at most
/// `max_concurrent_requests` at once; beyond that the answer is `Busy`.
async fn dispatch(
    core: Arc<Core>,
    client: Client,
    mut events: mpsc::Receiver<Event>,
    permits: Arc<Semaphore>,
    cancel: CancellationToken,
) {
    loop {
        let event = tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            event = events.recv() => match event {
                Some(e) => e,
                None => break,
            },
        };
        match event {
            Event::InboundRequest {
                peer,
                message,
                channel,
            } => match permits.clone().try_acquire_owned() {
                Ok(permit) => {
                    let core = core.clone();
                    let client = client.clone();
                    tokio::spawn(async move {
                        let handled = handler::handle(&core, peer, message).await;
                        if let Err(e) = client.respond(channel, handled.reply).await {
                            debug!(%peer, "answer not sent: {e}");
                        }
                        if let Some(after) = handled.after {
                            core.follow(after);
                        }
                        drop(permit);
                    });
                }
                Err(_) => {
                    core.metrics.rejected("busy");
                    let busy = Message::error(cpns_overlay::ErrorCode::Busy, "server busy");
                    let _ = client.respond(channel, busy).await;
                }
            },
            Event::InboundRejected { peer, reason } => {
                debug!(%peer, reason, "unreadable request");
                core.metrics.rejected(reason);
            }
            _ => {}
        }
    }
}

/// Sends the server's own requests, a bounded number at a time.
async fn pusher(
    core: Arc<Core>,
    client: Client,
    mut queue: mpsc::Receiver<Followup>,
    cancel: CancellationToken,
) {
    let mut in_flight = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(_) = in_flight.join_next(), if !in_flight.is_empty() => {}
            followup = queue.recv(), if in_flight.len() < MAX_PUSHES_IN_FLIGHT => match followup {
                Some(f) => {
                    in_flight.spawn(run_followup(core.clone(), client.clone(), f));
                }
                None => break,
            },
        }
    }
    in_flight.shutdown().await;
}

async fn run_followup(core: Arc<Core>, client: Client, followup: Followup) {
    match followup {
        Followup::StatusUpdate { gateway } => status_update(&core, &client, gateway).await,
        Followup::KeyPush { member, grants } => {
            let now = unix_now();
            let mut targets = Vec::new();
            if core.authn.session(&member, now).is_some() {
                targets.push(member);
            }
            match core.store.values::<PnRecord>(Table::Pns) {
                Ok(pns) => {
                    for pn in pns {
                        if pn.members.contains(&member)
                            && pn.gateway != member
                            && !targets.contains(&pn.gateway)
                            && core.authn.session(&pn.gateway, now).is_some()
                        {
                            targets.push(pn.gateway);
                        }
                    }
                }
                Err(e) => warn!("cannot list PNs for a key push: {e}"),
            }
            for to in targets {
                let msg = Message::Auth(AuthMessage::KeyPush {
                    member,
                    grants: grants.clone(),
                });
                send(&core, &client, to, msg, "key_push").await;
            }
        }
        Followup::PnChanged { pn_id } => match core.pn_changed(&pn_id) {
            Ok(Some((gateway, info, admin))) => {
                if core.authn.session(&gateway, unix_now()).is_some() {
                    let msg = Message::Auth(AuthMessage::PnChanged { info, admin });
                    send(&core, &client, gateway, msg, "pn_changed").await;
                } else {
                    // The gateway reads the record when it authenticates next.
                    core.metrics.push("pn_changed", "no_session");
                }
            }
            Ok(None) => {}
            Err(e) => warn!(pn = %pn_id, "cannot read a changed PN: {e}"),
        },
        Followup::PnReleased { pn_id, gateway } => {
            if core.authn.session(&gateway, unix_now()).is_some() {
                let msg = Message::Auth(AuthMessage::PnRelease { pn_id });
                send(&core, &client, gateway, msg, "pn_released").await;
            } else {
                core.metrics.push("pn_released", "no_session");
            }
        }
        Followup::PnMoved {
            from,
            into,
            members,
        } => match crate::pn::get_pn(&core.store, &into) {
            Ok(pn) => {
                let to = core.invitation_info(&pn, true).await;
                let now = unix_now();
                for m in members {
                    if core.authn.session(&m, now).is_none() {
                        // It finds its PN on its next contact (`PnInfoRequest`, step 17).
                        core.metrics.push("pn_moved", "no_session");
                        continue;
                    }
                    let msg = Message::Auth(AuthMessage::PnMoved {
                        from: from.clone(),
                        to: to.clone(),
                    });
                    send(&core, &client, m, msg, "pn_moved").await;
                }
            }
            Err(e) => warn!(pn = %into, "cannot tell the moved members: {e}"),
        },
        Followup::PnInvited { pn_id, invitee } => {
            let found = crate::pn::get_pn(&core.store, &pn_id)
                .and_then(|pn| Ok((core.invitees(&invitee, unix_now())?, pn)));
            match found {
                Ok((targets, pn)) => {
                    for (to, entity) in targets {
                        let info = core.invitation_info(&pn, entity).await;
                        let msg = Message::Auth(AuthMessage::PnInvitation(info));
                        send(&core, &client, to, msg, "pn_invitation").await;
                    }
                }
                Err(e) => warn!(pn = %pn_id, "cannot tell the invitees: {e}"),
            }
        }
        Followup::Revocations(list) => {
            for to in core.authn.gateway_sessions(unix_now()) {
                let msg = Message::Auth(AuthMessage::Revocations((*list).clone()));
                send(&core, &client, to, msg, "revocations").await;
            }
        }
    }
}

async fn send(core: &Core, client: &Client, to: PeerId, msg: Message, kind: &'static str) {
    match client.request(to, Protocol::Auth, msg).await {
        Ok(Message::Ack) => core.metrics.push(kind, "ok"),
        Ok(other) => {
            debug!(%to, kind, got = other.name(), "push answered with something else than Ack");
            core.metrics.push(kind, "unexpected");
        }
        Err(e) => {
            debug!(%to, kind, "push failed: {e}");
            core.metrics.push(kind, "failed");
        }
    }
}

/// B.1 steps 14-17 with a gateway that just updated its capabilities.
async fn status_update(core: &Core, client: &Client, gateway: PeerId) {
    let session_ok = core
        .authn
        .session(&gateway, unix_now())
        .is_some_and(|s| s.mode.is_gateway());
    if !session_ok {
        return;
    }
    let request = Message::Auth(AuthMessage::StatusUpdateRequest);
    let (pn_id, take_over) = match client.request(gateway, Protocol::Auth, request).await {
        Ok(Message::Auth(AuthMessage::StatusResponse {
            status,
            pn_id,
            take_over,
            ..
        })) => {
            debug!(%gateway, status = status.as_str(), ?pn_id, take_over, "status response (step 16)");
            core.metrics.push("status_update", "ok");
            (pn_id, take_over)
        }
        Ok(other) => {
            warn!(%gateway, got = other.name(), "step 14 answered with something else than a status response");
            core.metrics.push("status_update", "unexpected");
            return;
        }
        Err(e) => {
            warn!(%gateway, "step 14 failed: {e}");
            core.metrics.push("status_update", "failed");
            return;
        }
    };
    match core
        .establish_pn(gateway, pn_id, take_over, unix_now())
        .await
    {
        Ok((pn, key, created)) => {
            info!(%gateway, pn = %pn.pn_id, epoch = pn.epoch, created, "PN inventory (step 17)");
            let msg = Message::Auth(AuthMessage::PnInventoryCreated { pn, key });
            send(core, client, gateway, msg, "pn_inventory").await;
        }
        Err(e) => warn!(%gateway, "step 17 failed: {e}"),
    }
}

async fn gc(core: Arc<Core>, cancel: CancellationToken) {
    let mut tick = tokio::time::interval(GC_INTERVAL);
    let mut ticks: u64 = 0;
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            _ = tick.tick() => {
                let now = unix_now();
                core.authn.gc(Instant::now(), now);
                core.metrics.sessions.set(core.authn.session_count(now) as i64);
                // Old PN moves go every PRUNE_EVERY ticks (a scan under the write lock).
                if ticks.is_multiple_of(PRUNE_EVERY)
                    && let Err(e) = core.prune_pn_moves(now).await
                {
                    warn!("PN moves not pruned: {e}");
                }
                ticks = ticks.wrapping_add(1);
            }
        }
    }
}

/// The addresses the relay hands out: the advertised ones, or else the listen addresses that
/// are not loopback (all of them when only loopback is listened on: a developer's machine).
fn relay_addrs(advertise: &[Multiaddr], listen: &[Multiaddr]) -> Vec<Multiaddr> {
    if !advertise.is_empty() {
        return advertise.to_vec();
    }
    let is_loopback = |a: &Multiaddr| {
        matches!(
            a.iter().next(),
            Some(MaProtocol::Ip4(ip)) if ip.is_loopback()
        ) || matches!(a.iter().next(), Some(MaProtocol::Ip6(ip)) if ip.is_loopback())
    };
    let outside: Vec<Multiaddr> = listen.iter().filter(|a| !is_loopback(a)).cloned().collect();
    if outside.is_empty() {
        listen.to_vec()
    } else {
        outside
    }
}
