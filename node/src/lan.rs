//! LAN discovery (5.6.5): a device seen by mDNS on the LAN starts pairing (B.1 steps 1-2) by
//! itself when `auto_pair` is on.
//!
//! Two devices that see each other at the same moment should pair once, not twice: the side
//! with the smaller PeerId pairs at once, the other waits [`YIELD`] and pairs only if nothing
//! happened meanwhile (mDNS discovery can be one-sided: a device that answered another's query
//! has not necessarily seen it). Devices seen before this node was enrolled are remembered and
//! paired with once it is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info};

use crate::shared::Shared;

/// A peer is not paired with again within this time.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long the side with the greater PeerId leaves the other to start.
const YIELD: Duration = Duration::from_secs(3);
/// Most peers remembered.
const MAX_REMEMBERED: usize = 256;

/// What the node saw on its LAN.
#[derive(Default)]
pub(crate) struct Lan {
    seen: Mutex<HashMap<PeerId, Vec<Multiaddr>>>,
    attempts: Mutex<HashMap<PeerId, Instant>>,
}

impl Lan {
    fn remember(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        if seen.len() >= MAX_REMEMBERED && !seen.contains_key(&peer) {
            return;
        }
        seen.insert(peer, addrs);
    }

    fn forget(&self, peer: &PeerId) {
        self.seen
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(peer);
    }

    /// Whether a pairing attempt with `peer` may start now (and records it).
    fn may_try(&self, peer: PeerId) -> bool {
        let mut a = self.attempts.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        a.retain(|_, t| now.duration_since(*t) < RETRY_AFTER);
        if a.contains_key(&peer) || a.len() >= MAX_REMEMBERED {
            return false;
        }
        a.insert(peer, now);
        true
    }
}

/// mDNS saw `peer` at `addrs`.
pub(crate) async fn on_discovered(shared: &Arc<Shared>, peer: PeerId, addrs: Vec<Multiaddr>) {
    shared.lan.remember(peer, addrs.clone());
    consider(shared, peer, addrs).await;
}

/// mDNS lost `peer`.
pub(crate) fn on_expired(shared: &Shared, peer: &PeerId) {
    shared.lan.forget(peer);
}

/// The node was just enrolled: pair with the devices already seen.
pub(crate) fn on_enrolled(shared: &Arc<Shared>) {
    let seen: Vec<(PeerId, Vec<Multiaddr>)> = shared
        .lan
        .seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .map(|(p, a)| (*p, a.clone()))
        .collect();
    for (peer, addrs) in seen {
        let s = shared.clone();
        tokio::spawn(async move { consider(&s, peer, addrs).await });
    }
}

async fn consider(shared: &Arc<Shared>, peer: PeerId, addrs: Vec<Multiaddr>) {
    if !shared.config.auto_pair || !shared.is_enrolled() || peer == shared.peer_id {
        return;
    }
    if shared.peer_entry(&peer).is_some() {
        return;
    }
    if peer < shared.peer_id {
        // The other side starts; step in only if it did not.
        tokio::time::sleep(YIELD).await;
        if shared.peer_entry(&peer).is_some() {
            return;
        }
    }
    if !shared.lan.may_try(peer) {
        return;
    }
    let Some(addr) = addrs.into_iter().next() else {
        return;
    };
    let addr = addr.with(libp2p::multiaddr::Protocol::P2p(peer));
    info!(%peer, "LAN discovery: pairing");
    if let Err(e) = crate::pn::pairing::pair(shared, addr).await {
        debug!(%peer, "pairing after LAN discovery failed: {e}");
    }
}
