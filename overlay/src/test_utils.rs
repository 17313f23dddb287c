//! Helpers for tests: overlay nodes on loopback, spawned and connected.

use cpns_keys::Identity;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::{Client, Config, Error, Event};

/// A running overlay node for tests. Dropping it does not stop the loop; call
/// [`TestNode::shutdown`] or cancel the token.
pub struct TestNode {
    /// The node's client.
    pub client: Client,
    /// Its events.
    pub events: mpsc::Receiver<Event>,
    /// Cancels its event loop.
    pub cancel: CancellationToken,
    /// Its identity.
    pub identity: Identity,
    /// The event loop's task.
    pub task: tokio::task::JoinHandle<()>,
}

impl TestNode {
    /// Spawns a node with `config` and a seeded identity (`seed` fills the secret key bytes).
    pub async fn spawn(config: Config, seed: u8) -> Result<Self, Error> {
        Self::spawn_with(config, Identity::from_secret_bytes([seed; 32])).await
    }

    /// Spawns a node with `config` and `identity`.
    pub async fn spawn_with(config: Config, identity: Identity) -> Result<Self, Error> {
        let (client, events, event_loop) = crate::new(config, &identity).await?;
        let cancel = CancellationToken::new();
        let task = tokio::spawn(event_loop.run(cancel.clone()));
        Ok(Self {
            client,
            events,
            cancel,
            identity,
            task,
        })
    }

    /// The first listen address with `/p2p/PEERID` appended.
    pub async fn dial_addr(&self) -> Result<libp2p::Multiaddr, Error> {
        let addrs = self.client.listen_addrs().await?;
        let addr = addrs
            .into_iter()
            .next()
            .ok_or(Error::Listen("no address".into()))?;
        Ok(addr.with(libp2p::multiaddr::Protocol::P2p(
            self.client.local_peer_id(),
        )))
    }

    /// Stops the event loop and waits for it.
    pub async fn shutdown(self) {
        self.cancel.cancel();
        let _ = self.task.await;
    }
}
