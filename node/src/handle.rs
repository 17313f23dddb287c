//! The node's operations, callable in-process (tests, embedders) and behind the local HTTP
//! API. Each method is one API endpoint.

use std::sync::Arc;
use std::time::Instant;

use cpns_overlay::{KadMode, Message, PnMessage, Protocol};
use libp2p::PeerId;

use crate::error::OpError;
use crate::shared::Shared;
use crate::trace::TraceEvent;
use crate::views::{PeerView, PingView, StatusView};

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The node's status (`cpns status`).
    pub async fn status(&self) -> Result<StatusView, OpError> {
        let s = &self.shared;
        let listen_addrs = s.client.listen_addrs().await?;
        let routing_table = s.client.routing_table_size().await?;
        let connected_peers = s.client.peers().await?.len();
        let dht_mode = match s.client.kad_mode().await? {
            KadMode::Server => "server",
            KadMode::Client => "client",
        };
        let mode = s.state().mode;
        Ok(StatusView {
            peer_id: s.peer_id.to_string(),
            listen_addrs: listen_addrs.iter().map(|a| a.to_string()).collect(),
            mode: mode.to_string(),
            mode_setting: s.config.mode.to_string(),
            pn_id: None,
            gateway: None,
            members: Vec::new(),
            enrolled: false,
            user: None,
            device: s.config.device_name.clone(),
            status: "online".into(),
            epoch: None,
            auth_server: None,
            dht_mode: dht_mode.into(),
            routing_table,
            connected_peers,
            uptime_secs: s.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    /// The connected peers (`cpns peers`).
    pub async fn peers(&self) -> Result<Vec<PeerView>, OpError> {
        let s = &self.shared;
        let mut peers: Vec<PeerView> = s
            .client
            .peers()
            .await?
            .into_iter()
            .map(|p| {
                let entry = s.state().peers.get(&p.peer_id).cloned();
                PeerView {
                    peer_id: p.peer_id.to_string(),
                    address: p.address.to_string(),
                    outbound: p.outbound,
                    rtt_ms: p.rtt_us.map(|us| us as f64 / 1000.0),
                    dht_server: p.dht_server,
                    agent: p.agent,
                    registered: entry.is_some(),
                    mode: entry.map(|e| e.mode.to_string()),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Ok(peers)
    }

    /// Measures the round trip of a CPNS ping to a peer (`cpns ping PEER`).
    pub async fn ping(&self, peer: PeerId) -> Result<PingView, OpError> {
        let s = &self.shared;
        let nonce = rand::random();
        let start = Instant::now();
        let answer = s
            .client
            .request(peer, Protocol::Cpns, Message::Pn(PnMessage::Ping { nonce }))
            .await?;
        let rtt = start.elapsed();
        if answer != Message::Pn(PnMessage::Pong { nonce }) {
            return Err(OpError::Refused(format!(
                "unexpected answer {}",
                answer.name()
            )));
        }
        let address = s
            .client
            .peers()
            .await?
            .into_iter()
            .find(|p| p.peer_id == peer)
            .map(|p| p.address)
            .unwrap_or_else(libp2p::Multiaddr::empty);
        let direct = !address
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit));
        Ok(PingView {
            peer_id: peer.to_string(),
            rtt_ms: rtt.as_secs_f64() * 1000.0,
            direct,
            address: address.to_string(),
        })
    }

    /// The trace (`cpns trace`).
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.shared.trace.events()
    }
}
