//! Shared test scaffolding.
#![allow(dead_code)]

use std::time::Duration;

/// Installs a tracing subscriber once (RUST_LOG controls it; quiet by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The bound every test waits for an event within.
pub const WAIT: Duration = Duration::from_secs(20);

/// The path of one of the workspace's binaries (`cpns-node`, `cpns`, `cpns-auth`), built on
/// first use with the same cargo and profile as this test, so that multi-process tests run the
/// real binaries and a plain `cargo test` / `cargo nextest run` needs no extra step.
pub fn bin(name: &str) -> std::path::PathBuf {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let mut cargo = std::process::Command::new(env!("CARGO"));
        // Cargo gives the test its package's variables (CARGO_PKG_NAME, CARGO_MANIFEST_DIR,
        // …). ring's build script tracks some of them, so a child cargo that inherits them
        // sees them "changed" against the top-level build and rebuilds ring and everything
        // above it (QUIC, TLS, noise, the workspace): minutes inside a test, under the cargo
        // lock every other such test waits on, and the next top-level build rebuilds back.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            if [
                "CARGO_PKG_",
                "CARGO_MANIFEST_",
                "CARGO_CRATE_",
                "CARGO_BIN_",
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .iter()
            .any(|p| key.starts_with(p))
            {
                cargo.env_remove(&key);
            }
        }
        let status = cargo
            // Exactly what `.ci/run` builds first, so that there this is a no-op.
            .args(["build", "--quiet", "--workspace", "--bins"])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build of the binaries failed: {status}"))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    // The test executable is target/<profile>/deps/tests-<hash>; binaries are in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}

/// A lab: one real `cpns-auth` in-process (its own data dir), and nodes enrolled with it.
pub struct Lab {
    server: Option<cpns_auth::ServerHandle>,
    /// Where the server listened, so that a restart comes back at the same address.
    listen: Vec<libp2p::Multiaddr>,
    dir: tempfile::TempDir,
}

/// A node of a [`Lab`], with its own data dir.
pub struct LabNode {
    node: cpns_node::Node,
    config: cpns_node::Config,
    _dir: tempfile::TempDir,
}

impl LabNode {
    /// The in-process handle (the same operations as the HTTP API).
    pub fn handle(&self) -> cpns_node::Handle {
        self.node.handle()
    }
    /// The PeerId.
    pub fn peer_id(&self) -> libp2p::PeerId {
        self.node.peer_id()
    }
    /// An address with /p2p/ to pair with.
    pub async fn dial_addr(&self) -> anyhow::Result<libp2p::Multiaddr> {
        self.node
            .dial_addrs()
            .await
            .into_iter()
            .next()
            .ok_or_else(|| anyhow::anyhow!("node has no address"))
    }
    /// The node's data dir.
    pub fn data_dir(&self) -> &std::path::Path {
        self._dir.path()
    }
    /// Stops the node.
    pub async fn shutdown(self) {
        self.node.shutdown().await;
    }
    /// Stops the node, keeping its data dir and config for [`StoppedNode::start`].
    pub async fn stop(self) -> StoppedNode {
        self.node.shutdown().await;
        StoppedNode {
            config: self.config,
            dir: self._dir,
        }
    }
}

/// Fails unless `node` finds the service `id` by `keyword` (one discovery).
pub async fn finds(node: &LabNode, keyword: &str, id: &str) -> anyhow::Result<()> {
    let found = node
        .handle()
        .find(&cpns_directory::Query::keywords([keyword]))
        .await?;
    anyhow::ensure!(
        found.services.iter().any(|f| f.description.id == id),
        "{} did not find {id} by {keyword:?}: {found:?}",
        node.peer_id()
    );
    Ok(())
}

/// A [`LabNode`] that was stopped: its data dir and config.
pub struct StoppedNode {
    config: cpns_node::Config,
    dir: tempfile::TempDir,
}

impl StoppedNode {
    /// Starts the node again on its data dir and config (new ports).
    pub async fn start(self) -> anyhow::Result<LabNode> {
        let node = cpns_node::Node::start(self.config.clone()).await?;
        Ok(LabNode {
            node,
            config: self.config,
            _dir: self.dir,
        })
    }
}

impl Lab {
    /// Starts the server on 127.0.0.1 with a fresh data dir.
    pub async fn start() -> anyhow::Result<Lab> {
        Self::start_with(|_| {}).await
    }

    /// [`Lab::start`] with the server's config changed by `edit`.
    pub async fn start_with(edit: impl FnOnce(&mut cpns_auth::Config)) -> anyhow::Result<Lab> {
        let dir = tempfile::tempdir()?;
        let mut config = cpns_auth::Config::with_data_dir(dir.path().join("auth"));
        edit(&mut config);
        let server = cpns_auth::Server::start(config).await?;
        let listen = server.listen_addrs();
        Ok(Lab {
            server: Some(server),
            listen,
            dir,
        })
    }

    fn server(&self) -> &cpns_auth::ServerHandle {
        self.server.as_ref().expect("the lab's server is stopped")
    }

    /// The server's data dir (for `cpns-auth --data-dir`).
    pub fn server_data_dir(&self) -> std::path::PathBuf {
        self.server().data_dir()
    }

    /// The server's admin endpoint and its bearer token.
    pub fn admin_endpoint(&self) -> (std::net::SocketAddr, String) {
        (
            self.server().admin_addr(),
            self.server().admin_token().to_string(),
        )
    }

    /// Stops the server (the nodes keep running).
    pub async fn stop_server(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await;
        }
    }

    /// Starts the server again on the same data dir and address.
    pub async fn restart_server(&mut self) -> anyhow::Result<()> {
        let mut config = cpns_auth::Config::with_data_dir(self.dir.path().join("auth"));
        config.listen = self.listen.clone();
        self.server = Some(cpns_auth::Server::start(config).await?);
        Ok(())
    }

    /// The admin API of the server.
    pub fn admin(&self) -> cpns_auth::Admin {
        self.server().admin()
    }

    /// The server's PeerId.
    pub fn server_peer(&self) -> libp2p::PeerId {
        self.server().peer_id()
    }

    /// Creates a user.
    pub async fn user(&self, name: &str) -> anyhow::Result<()> {
        self.admin().create_user(name).await?;
        Ok(())
    }

    /// A one-time code for `user` allowing both modes.
    pub async fn code(&self, user: &str) -> anyhow::Result<String> {
        Ok(self
            .admin()
            .create_code(
                user,
                cpns_keys::Modes::ALL,
                Duration::from_secs(3600),
                false,
            )
            .await?)
    }

    /// A node config on loopback, mDNS off, fast heartbeats.
    pub fn config(
        dir: &std::path::Path,
        device: &str,
        mode: cpns_node::ModeSetting,
    ) -> cpns_node::Config {
        let mut c = cpns_node::Config {
            data_dir: dir.to_owned(),
            listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
            mdns: false,
            auto_pair: false,
            device_name: device.into(),
            mode,
            ..cpns_node::Config::default()
        };
        c.status.heartbeat_secs = 1;
        c.status.offline_after_secs = 3;
        c
    }

    /// Starts an auto-mode node for `user` and enrols it.
    pub async fn node(&self, user: &str, device: &str) -> anyhow::Result<LabNode> {
        self.node_with(user, device, cpns_node::ModeSetting::Auto)
            .await
    }

    /// Starts a gateway-mode node for `user`, enrols it; it sets its PN up by itself.
    pub async fn gateway_node(&self, user: &str, device: &str) -> anyhow::Result<LabNode> {
        self.node_with(user, device, cpns_node::ModeSetting::Gateway)
            .await
    }

    /// Starts a node that bootstraps its DHT from `boot`, and enrols it.
    pub async fn node_bootstrapping(
        &self,
        user: &str,
        device: &str,
        mode: cpns_node::ModeSetting,
        boot: libp2p::Multiaddr,
    ) -> anyhow::Result<LabNode> {
        self.node_configured(user, device, mode, |c| c.bootstrap = vec![boot.to_string()])
            .await
    }

    /// Starts a node with a mode setting and enrols it.
    pub async fn node_with(
        &self,
        user: &str,
        device: &str,
        mode: cpns_node::ModeSetting,
    ) -> anyhow::Result<LabNode> {
        self.node_configured(user, device, mode, |_| {}).await
    }

    /// Starts a node with a mode setting and [`Lab::config`] changed by `edit`, and enrols it.
    pub async fn node_configured(
        &self,
        user: &str,
        device: &str,
        mode: cpns_node::ModeSetting,
        edit: impl FnOnce(&mut cpns_node::Config),
    ) -> anyhow::Result<LabNode> {
        let dir = tempfile::tempdir()?;
        let mut config = Self::config(dir.path(), device, mode);
        edit(&mut config);
        let node = cpns_node::Node::start(config.clone()).await?;
        let code = self.code(user).await?;
        node.handle().up(&code).await?;
        Ok(LabNode {
            node,
            config,
            _dir: dir,
        })
    }

    /// A PN ready to use: a gateway-mode node `gateway` of `user` with its PN set up, and one
    /// auto-mode node per name in `members`, each paired with the gateway and in its PN, all on
    /// the same key epoch.
    pub async fn pn(
        &self,
        user: &str,
        gateway: &str,
        members: &[&str],
    ) -> anyhow::Result<(LabNode, Vec<LabNode>)> {
        self.pn_configured(user, gateway, members, |_| {}).await
    }

    /// [`Lab::pn`] with every node's config changed by `edit`.
    pub async fn pn_configured(
        &self,
        user: &str,
        gateway: &str,
        members: &[&str],
        edit: impl Fn(&mut cpns_node::Config),
    ) -> anyhow::Result<(LabNode, Vec<LabNode>)> {
        use anyhow::Context as _;
        let gw = self
            .node_configured(user, gateway, cpns_node::ModeSetting::Gateway, &edit)
            .await?;
        gw.handle()
            .wait_for_pn(WAIT)
            .await
            .context("the gateway's PN")?;
        let mut nodes = Vec::new();
        for name in members {
            let n = self
                .node_configured(user, name, cpns_node::ModeSetting::Auto, &edit)
                .await?;
            n.handle().pair(gw.dial_addr().await?).await?;
            n.handle().wait_until(WAIT, |s| s.pn_id.is_some()).await?;
            nodes.push(n);
        }
        let mut all: Vec<&LabNode> = vec![&gw];
        all.extend(nodes.iter());
        same_epoch(&all).await?;
        Ok((gw, nodes))
    }

    /// Stops the nodes, then the server.
    pub async fn shutdown(self, nodes: Vec<LabNode>) {
        for n in nodes {
            n.shutdown().await;
        }
        if let Some(s) = self.server {
            s.shutdown().await;
        }
        drop(self.dir);
    }
}

/// Waits (bounded) until every node holds the same PN key epoch; returns it.
pub async fn same_epoch(nodes: &[&LabNode]) -> anyhow::Result<u64> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let epochs: Vec<Option<u64>> = nodes.iter().map(|n| n.handle().pn_epoch()).collect();
        if let Some(Some(first)) = epochs.first()
            && epochs.iter().all(|e| *e == Some(*first))
        {
            return Ok(*first);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("members did not converge on one PN key epoch: {epochs:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls `check` (every 10 ms, at most `limit`) until it gives a value.
pub async fn wait_for<T>(
    limit: Duration,
    what: &str,
    mut check: impl FnMut() -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            anyhow::bail!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
