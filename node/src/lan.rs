//! LAN discovery (5.6.5): a device seen by mDNS on the LAN starts pairing (B.1 steps 1-2) by
//! itself when `auto_pair` is on. Only the side with the smaller PeerId initiates, so that two
//! devices that see each other at the same moment pair once, not twice.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info};

use crate::shared::Shared;

/// A peer seen again within this time is not paired with again.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Most peers remembered for [`RETRY_AFTER`].
const MAX_REMEMBERED: usize = 1024;

fn attempts() -> &'static Mutex<HashMap<PeerId, Instant>> {
    static A: OnceLock<Mutex<HashMap<PeerId, Instant>>> = OnceLock::new();
    A.get_or_init(Default::default)
}

/// mDNS saw `peer` at `addrs`.
pub(crate) async fn on_discovered(shared: &Arc<Shared>, peer: PeerId, addrs: Vec<Multiaddr>) {
    if !shared.config.auto_pair || !shared.is_enrolled() || peer <= shared.peer_id {
        return;
    }
    if shared.peer_entry(&peer).is_some() {
        return;
    }
    {
        let mut a = attempts().lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        a.retain(|_, t| now.duration_since(*t) < RETRY_AFTER);
        if a.contains_key(&peer) || a.len() >= MAX_REMEMBERED {
            return;
        }
        a.insert(peer, now);
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
