//! What every part of the node shares: configuration, identity, the overlay client, the
//! database, the trace, and the mutable state behind one short-held mutex (never held across
//! an `.await`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use cpns_directory::Trust;
use cpns_keys::{Identity, RevocationList, UnixTime};
use cpns_overlay::{
    Capabilities, Client, Message, Multiaddr, NodeMode, PnInventorySummary, PnMessage, Protocol,
    Status,
};
use libp2p::PeerId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::caps;
use crate::config::{Config, ModeSetting};
use crate::enrolment::Enrolment;
use crate::error::OpError;
use crate::keyring::KeyRing;
use crate::metrics::Metrics;
use crate::pn::{self, PnState};
use crate::trace::Trace;

/// Most registered peers remembered (B.1 steps 1-2); the oldest non-members go first.
const MAX_PEERS: usize = 4096;

/// Shared by every task of the node.
pub(crate) struct Shared {
    pub(crate) config: Config,
    pub(crate) identity: Identity,
    pub(crate) peer_id: PeerId,
    pub(crate) client: Client,
    pub(crate) db: sled::Db,
    pub(crate) trace: Trace,
    pub(crate) metrics: Metrics,
    pub(crate) status: crate::status::Book,
    pub(crate) validator: Arc<crate::services::NodeValidator>,
    pub(crate) services: crate::services::Services,
    pub(crate) delivery: crate::delivery::Delivery,
    pub(crate) lan: crate::lan::Lan,
    pub(crate) keyring: Arc<KeyRing>,
    pub(crate) cancel: CancellationToken,
    pub(crate) started: Instant,
    /// The PN id once this node is in a PN (set at step 17 on a gateway, 26 on a PNE).
    pub(crate) pn_ready: watch::Sender<Option<String>>,
    /// The last B.1 step the gateway side completed, to keep server-driven steps in order.
    pub(crate) gateway_progress: watch::Sender<u32>,
    /// Bumped on every PN change (members, epoch, joined, left), for waiters.
    pub(crate) pn_changed: watch::Sender<u64>,
    enrolment: RwLock<Option<Arc<Enrolment>>>,
    trust: RwLock<Option<Arc<Trust>>>,
    state: Mutex<State>,
    caps_reader: Mutex<caps::Reader>,
    /// The capability overrides in force: the config's, changed at run time through
    /// `POST /v1/capabilities` (devices that cannot report themselves, labs).
    caps_overrides: RwLock<crate::config::CapabilitiesConfig>,
}

/// The node's mutable state.
pub(crate) struct State {
    /// Current operational mode.
    pub(crate) mode: NodeMode,
    /// What the owner asked for (`--mode`, changeable with `cpns mode set`).
    pub(crate) mode_setting: ModeSetting,
    /// This node's own status (5.6.2).
    pub(crate) status: Status,
    /// Current capabilities (with the mode).
    pub(crate) caps: Capabilities,
    /// Peers that registered with us (B.1 steps 1-2), keyed by PeerId.
    pub(crate) peers: HashMap<PeerId, PeerEntry>,
    /// The PN, once joined or created.
    pub(crate) pn: Option<PnState>,
    /// When the session with `cpns-auth` ends (B.1 step 11).
    pub(crate) session_expires: Option<UnixTime>,
    /// The gateway a connection setup (step 18) is pending with.
    pub(crate) joining: Option<PeerId>,
    /// Set while this PNE claims its PN's gateway role (step 16 says `take_over`).
    pub(crate) taking_over: bool,
    /// When this PNE last heard from its gateway (unix seconds; 0: not yet).
    pub(crate) gateway_heard: UnixTime,
    /// Whether a gateway failover is under way.
    pub(crate) failover_running: bool,
    /// When an automatic credential renewal was last tried and failed.
    pub(crate) renewal_tried: Option<std::time::Instant>,
    /// When this gateway last checked with `cpns-auth` that it still is its PN's gateway.
    pub(crate) gateway_checked: Option<std::time::Instant>,
}

/// A registered peer.
#[derive(Clone, Debug)]
pub(crate) struct PeerEntry {
    pub(crate) mode: NodeMode,
    pub(crate) caps: Option<Capabilities>,
    pub(crate) user: String,
    pub(crate) device: String,
    pub(crate) serial: u64,
    pub(crate) pn_id: Option<String>,
    pub(crate) gateway: Option<PeerId>,
    pub(crate) listen_addrs: Vec<Multiaddr>,
    pub(crate) gateway_addrs: Vec<Multiaddr>,
}

impl Shared {
    #[allow(clippy::too_many_arguments)] // each is one owned part of the node, moved in once
    pub(crate) fn new(
        config: Config,
        identity: Identity,
        client: Client,
        db: sled::Db,
        keyring: Arc<KeyRing>,
        validator: Arc<crate::services::NodeValidator>,
        enrolment: Option<Enrolment>,
        cancel: CancellationToken,
    ) -> Self {
        let mode = match config.mode {
            ModeSetting::Gateway => NodeMode::PneGateway,
            ModeSetting::Auto | ModeSetting::Pne => NodeMode::Pne,
        };
        let mut reader = caps::Reader::new();
        let caps = reader.read(
            &config.capabilities,
            mode,
            preference_of(&config, config.mode),
            1,
        );
        let peer_id = identity.peer_id();
        let mode_setting = config.mode;
        let caps_overrides = config.capabilities.clone();
        let trace = Trace::new(config.trace_capacity);
        let trust = enrolment
            .as_ref()
            .map(|e| Arc::new(Trust::new(e.ca, e.revocations.clone())));
        Self {
            config,
            identity,
            peer_id,
            client,
            db,
            trace,
            metrics: Metrics::default(),
            status: crate::status::Book::new(),
            validator,
            services: Default::default(),
            delivery: Default::default(),
            lan: Default::default(),
            keyring,
            cancel,
            started: Instant::now(),
            pn_ready: watch::channel(None).0,
            gateway_progress: watch::channel(0).0,
            pn_changed: watch::channel(0).0,
            enrolment: RwLock::new(enrolment.map(Arc::new)),
            trust: RwLock::new(trust),
            state: Mutex::new(State {
                mode,
                mode_setting,
                status: Status::Online,
                caps,
                peers: HashMap::new(),
                pn: None,
                session_expires: None,
                joining: None,
                taking_over: false,
                gateway_heard: 0,
                failover_running: false,
                renewal_tried: None,
                gateway_checked: None,
            }),
            caps_reader: Mutex::new(reader),
            caps_overrides: RwLock::new(caps_overrides),
        }
    }

    /// Locks the state. The guard must not be held across an `.await`.
    pub(crate) fn state(&self) -> MutexGuard<'_, State> {
        // A poisoned lock means a panic while holding it; the state is still usable, and
        // refusing to go on would turn one bug into a dead node.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The enrolment, or a clear error if the node has none yet.
    pub(crate) fn enrolment(&self) -> Result<Arc<Enrolment>, OpError> {
        self.enrolment
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| OpError::Conflict("this node is not enrolled: run `cpns up --code CODE` (codes come from `cpns-auth enrol create`)".into()))
    }

    /// Whether the node is enrolled.
    pub(crate) fn is_enrolled(&self) -> bool {
        self.enrolment.read().map(|e| e.is_some()).unwrap_or(false)
    }

    /// Installs a (new) enrolment: the credential, EUKey and pinned CA.
    pub(crate) fn set_enrolment(&self, enrolment: Enrolment) {
        let trust = Arc::new(Trust::new(enrolment.ca, enrolment.revocations.clone()));
        *self.trust.write().unwrap_or_else(|p| p.into_inner()) = Some(trust);
        *self.enrolment.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(enrolment));
    }

    /// The trust anchor (pinned CA and revocation list), once enrolled.
    pub(crate) fn trust(&self) -> Result<Arc<Trust>, OpError> {
        self.trust
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| OpError::Conflict("this node is not enrolled".into()))
    }

    /// Records a protocol step in the trace (and counts it).
    pub(crate) fn trace(
        &self,
        flow: &str,
        step: u32,
        from: &PeerId,
        to: &PeerId,
        message: &str,
        detail: impl Into<String>,
    ) {
        self.trace.record(flow, step, from, to, message, detail);
        self.metrics.traced(flow);
    }

    /// The owner's gateway preference under the current mode setting.
    pub(crate) fn gateway_preference(&self) -> cpns_overlay::GatewayPreference {
        let setting = self.state().mode_setting;
        preference_of(&self.config, setting)
    }

    /// The PN id, if in a PN.
    pub(crate) fn pn_id(&self) -> Option<String> {
        self.state().pn.as_ref().map(|p| p.membership.pn_id.clone())
    }

    /// Remembers a registered peer, evicting the oldest non-member when full.
    pub(crate) fn remember_peer(&self, peer: PeerId, entry: PeerEntry) {
        let mut s = self.state();
        if !s.peers.contains_key(&peer) && s.peers.len() >= MAX_PEERS {
            let victim = s
                .peers
                .keys()
                .find(|p| !s.pn.as_ref().is_some_and(|pn| pn.is_member(p)))
                .copied();
            if let Some(v) = victim {
                s.peers.remove(&v);
            }
        }
        s.peers.insert(peer, entry);
    }

    /// A registered peer's entry.
    pub(crate) fn peer_entry(&self, peer: &PeerId) -> Option<PeerEntry> {
        self.state().peers.get(peer).cloned()
    }

    /// Stores a peer's capabilities (steps 3-4, 7).
    pub(crate) fn set_peer_caps(&self, peer: &PeerId, caps: Capabilities) {
        if let Some(p) = self.state().peers.get_mut(peer) {
            p.mode = caps.mode;
            p.caps = Some(caps);
        }
    }

    /// Stores a peer's mode.
    pub(crate) fn set_peer_mode(&self, peer: &PeerId, mode: NodeMode) {
        if let Some(p) = self.state().peers.get_mut(peer) {
            p.mode = mode;
        }
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
                &self
                    .caps_overrides
                    .read()
                    .unwrap_or_else(|p| p.into_inner()),
                mode,
                self.gateway_preference(),
                old.revision,
            );
        let changed = caps::materially_changed(&old, &new, self.config.status.battery_threshold);
        if changed {
            new.revision = old.revision + 1;
        }
        self.state().caps = new.clone();
        (new, changed)
    }

    /// The capability overrides in force.
    pub(crate) fn capability_overrides(&self) -> crate::config::CapabilitiesConfig {
        self.caps_overrides
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Replaces the capability overrides (validated by the caller).
    pub(crate) fn set_capability_overrides(&self, o: crate::config::CapabilitiesConfig) {
        *self
            .caps_overrides
            .write()
            .unwrap_or_else(|p| p.into_inner()) = o;
    }

    /// Takes a revocation list if it is CA-signed and newer: stores it with the enrolment,
    /// drops revoked peers, and (on a gateway) passes it on to the PN's members.
    pub(crate) async fn take_revocations(self: &Arc<Self>, list: RevocationList) {
        let Ok(trust) = self.trust() else { return };
        if !trust.update_revocations(list.clone()) {
            return;
        }
        info!(
            version = list.version,
            revoked = list.serials.len(),
            "newer revocation list"
        );
        if let Ok(enrolment) = self.enrolment() {
            let mut updated = (*enrolment).clone();
            updated.revocations = list.clone();
            if let Err(e) = updated.save(&self.config.data_dir) {
                warn!("revocation list not saved: {e}");
            }
            *self.enrolment.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(updated));
        }
        let revoked: Vec<PeerId> = {
            let s = self.state();
            s.peers
                .iter()
                .filter(|(_, e)| list.contains(e.serial))
                .map(|(p, _)| *p)
                .collect()
        };
        for peer in revoked {
            info!(%peer, "peer's credential revoked: refusing it from now on");
            let _ = self.client.admit_peer(peer, false).await;
            self.state().peers.remove(&peer);
        }
        // A gateway gossips the list to its PN.
        let members: Vec<PeerId> = {
            let s = self.state();
            match &s.pn {
                Some(pn) if pn.membership.gateway == self.peer_id => pn
                    .members
                    .keys()
                    .filter(|p| **p != self.peer_id)
                    .copied()
                    .collect(),
                _ => Vec::new(),
            }
        };
        for m in members {
            let client = self.client.clone();
            let msg = Message::Pn(PnMessage::Revocations(list.clone()));
            tokio::spawn(async move {
                if let Err(e) = client.request(m, Protocol::Cpns, msg).await {
                    debug!(member = %m, "revocation list not delivered: {e}");
                }
            });
        }
    }

    /// The PN Inventory summary this node can give (the gateway's view).
    pub(crate) fn inventory_summary(&self) -> Option<PnInventorySummary> {
        let s = self.state();
        let pn = s.pn.as_ref()?;
        Some(PnInventorySummary {
            pn_id: pn.membership.pn_id.clone(),
            owner: pn.membership.owner.clone(),
            gateway: pn.membership.gateway,
            epoch: pn.membership.epoch,
            members: pn.members.values().cloned().collect(),
            services: Vec::new(),
            updated: now(),
        })
    }

    /// Called after any change of the PN (members, epoch, joined, left): lets waiters know.
    pub(crate) fn after_pn_change(&self) {
        self.pn_changed.send_modify(|n| *n += 1);
    }
}

impl Shared {
    /// Restores the PN membership kept in the database (after a restart).
    pub(crate) fn restore_pn(&self) {
        let Some(membership) = pn::load_membership(&self.db) else {
            return;
        };
        let mut members = std::collections::BTreeMap::new();
        if membership.gateway == self.peer_id {
            for entry in pn::inventory::load(&self.db) {
                members.insert(entry.info.peer_id, entry.info);
            }
        }
        let id = membership.pn_id.clone();
        let mut s = self.state();
        if membership.gateway == self.peer_id {
            s.mode = match s.mode {
                NodeMode::Pne => NodeMode::PneGateway,
                m => m,
            };
        }
        s.pn = Some(PnState {
            membership,
            members,
        });
        drop(s);
        self.pn_ready.send_replace(Some(id));
    }
}

fn preference_of(config: &Config, setting: ModeSetting) -> cpns_overlay::GatewayPreference {
    match setting {
        ModeSetting::Pne => cpns_overlay::GatewayPreference::Never,
        ModeSetting::Gateway => cpns_overlay::GatewayPreference::Always,
        ModeSetting::Auto => config.gateway_preference.parse().unwrap_or_default(),
    }
}

/// Seconds since the Unix epoch.
pub(crate) fn now() -> UnixTime {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
