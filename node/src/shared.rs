//! What every part of the node shares: configuration, identity, the overlay client, the
//! database, the trace, and the mutable state behind one short-held mutex (never held across
//! an `.await`).

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cpns_keys::{Identity, UnixTime};
use cpns_overlay::{Capabilities, Client, NodeMode};
use libp2p::PeerId;
use tokio_util::sync::CancellationToken;

use crate::caps;
use crate::config::{Config, ModeSetting};
use crate::trace::Trace;

/// Shared by every task of the node.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) peer_id: PeerId,
    pub(crate) client: Client,
    pub(crate) db: sled::Db,
    pub(crate) trace: Trace,
    pub(crate) cancel: CancellationToken,
    pub(crate) started: Instant,
    state: Mutex<State>,
    caps_reader: Mutex<caps::Reader>,
}

/// The node's mutable state.
pub(crate) struct State {
    /// Current operational mode.
    pub(crate) mode: NodeMode,
    /// Current capabilities (with the mode).
    pub(crate) caps: Capabilities,
    /// Peers that registered with us (B.1 steps 1-2), keyed by PeerId.
    pub(crate) peers: HashMap<PeerId, PeerEntry>,
}

/// A registered peer.
#[derive(Clone, Debug)]
pub(crate) struct PeerEntry {
    pub(crate) mode: NodeMode,
    pub(crate) caps: Option<Capabilities>,
}

impl Shared {
    pub(crate) fn new(
        config: Config,
        identity: Identity,
        client: Client,
        db: sled::Db,
        cancel: CancellationToken,
    ) -> Self {
        let mode = match config.mode {
            ModeSetting::Gateway => NodeMode::PneGateway,
            ModeSetting::Auto | ModeSetting::Pne => NodeMode::Pne,
        };
        let mut reader = caps::Reader::new();
        let caps = reader.read(&config.capabilities, mode, config.gateway_preference(), 1);
        let peer_id = identity.peer_id();
        let trace = Trace::new(config.trace_capacity);
        Self {
            config,
            identity,
            peer_id,
            client,
            db,
            trace,
            cancel,
            started: Instant::now(),
            state: Mutex::new(State {
                mode,
                caps,
                peers: HashMap::new(),
            }),
            caps_reader: Mutex::new(reader),
        }
    }

    /// Anything to do once the overlay runs and before the API serves.
    pub(crate) async fn init_state(&self) {}

    /// Locks the state. The guard must not be held across an `.await`.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the state is still usable, and
        // refusing to go on would turn one bug into a dead node.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Re-reads the machine's capabilities with the current mode; returns them and whether
    /// they changed materially since last time (5.6.1).
    pub(crate) fn refresh_caps(&self) -> (Capabilities, bool) {
        let (mode, old) = {
            let s = self.state();
            (s.mode, s.caps.clone())
        };
        let mut new = self
            .caps_reader
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .read(
                &self.config.capabilities,
                mode,
                self.config.gateway_preference(),
                old.revision,
            );
        let changed = caps::materially_changed(&old, &new, self.config.status.battery_threshold);
        if changed {
            new.revision = old.revision + 1;
        }
        self.state().caps = new.clone();
        (new, changed)
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
