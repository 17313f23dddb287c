//! LAN discovery (5.6.5): a device seen by mDNS on the LAN starts pairing (B.1 steps 1-2) by
//! itself when `auto_pair` is on.
//!
//! Two devices that see each other at the same moment should pair once, not twice: the side
//! with the smaller PeerId pairs at once, the other waits [`YIELD`] and pairs only if nothing
//! happened meanwhile (mDNS discovery can be one-sided: a device that answered another's query
//! has not necessarily seen it). Devices seen before this node was enrolled are remembered and
//! paired with once it is.
//!
//! Pairing with a device of another user does not make this node join that user's PN: the PN
//! actor leaves an invitation for the owner instead (`cpns pn invitations`).
//!
//! The module's task owns what it saw; the router hands it mDNS events on a bounded channel.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use libp2p::{Multiaddr, PeerId};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{debug, info};

use crate::context::Context;
use crate::pn;

/// A peer is not paired with again within this time.
const RETRY_AFTER: Duration = Duration::from_secs(60);
/// How long the side with the greater PeerId leaves the other to start.
const YIELD: Duration = Duration::from_secs(3);
/// Most peers remembered, and most pairings in flight.
const MAX_REMEMBERED: usize = 256;

enum LanEvent {
    Discovered(PeerId, Vec<Multiaddr>),
    Expired(PeerId),
}

/// The handle the router uses.
#[derive(Clone)]
pub(crate) struct Lan {
    events: mpsc::Sender<LanEvent>,
}

impl Lan {
    /// The handle and the receiver for [`run`].
    pub(crate) fn new() -> (Lan, LanEvents) {
        let (events, rx) = mpsc::channel(MAX_REMEMBERED);
        (Lan { events }, LanEvents(rx))
    }

    /// mDNS saw `peer` at `addrs` (dropped when the task is behind: mDNS repeats itself).
    pub(crate) fn discovered(&self, peer: PeerId, addrs: Vec<Multiaddr>) {
        let _ = self.events.try_send(LanEvent::Discovered(peer, addrs));
    }

    /// mDNS lost `peer`.
    pub(crate) fn expired(&self, peer: PeerId) {
        let _ = self.events.try_send(LanEvent::Expired(peer));
    }
}

/// The receiving end of [`Lan`].
pub(crate) struct LanEvents(mpsc::Receiver<LanEvent>);

/// The module's task.
pub(crate) async fn run(ctx: Context, pn: pn::Handle, events: LanEvents) {
    let mut events = events.0;
    let mut seen: HashMap<PeerId, Vec<Multiaddr>> = HashMap::new();
    let mut attempts: HashMap<PeerId, Instant> = HashMap::new();
    let mut pairing: JoinSet<()> = JoinSet::new();
    let mut creds = ctx.credentials.clone();
    let mut was_enrolled = ctx.is_enrolled();
    loop {
        let consider: Vec<(PeerId, Vec<Multiaddr>)> = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => break,
            Some(_) = pairing.join_next(), if !pairing.is_empty() => continue,
            r = creds.changed() => {
                if r.is_err() { break; }
                let now_enrolled = creds.borrow_and_update().is_some();
                let newly = now_enrolled && !was_enrolled;
                was_enrolled = now_enrolled;
                if !newly { continue; }
                // Just enrolled: pair with the devices already seen.
                seen.iter().map(|(p, a)| (*p, a.clone())).collect()
            }
            ev = events.recv() => match ev {
                Some(LanEvent::Discovered(peer, addrs)) => {
                    if seen.len() < MAX_REMEMBERED || seen.contains_key(&peer) {
                        seen.insert(peer, addrs.clone());
                    }
                    vec![(peer, addrs)]
                }
                Some(LanEvent::Expired(peer)) => {
                    seen.remove(&peer);
                    continue;
                }
                None => break,
            },
        };
        if !ctx.config.auto_pair || !ctx.is_enrolled() {
            continue;
        }
        for (peer, addrs) in consider {
            if peer == ctx.peer_id || pn.view().peers.contains_key(&peer) {
                continue;
            }
            let now = Instant::now();
            attempts.retain(|_, t| now.duration_since(*t) < RETRY_AFTER);
            if attempts.contains_key(&peer)
                || attempts.len() >= MAX_REMEMBERED
                || pairing.len() >= MAX_REMEMBERED
            {
                continue;
            }
            let Some(addr) = addrs.into_iter().next() else {
                continue;
            };
            attempts.insert(peer, now);
            let addr = addr.with(libp2p::multiaddr::Protocol::P2p(peer));
            let wait = peer < ctx.peer_id;
            let pn = pn.clone();
            pairing.spawn(async move {
                if wait {
                    // The other side starts; step in only if it did not.
                    tokio::time::sleep(YIELD).await;
                    if pn.view().peers.contains_key(&peer) {
                        return;
                    }
                }
                info!(%peer, "LAN discovery: pairing");
                if let Err(e) = pn.pair(addr).await {
                    debug!(%peer, "pairing after LAN discovery failed: {e}");
                }
            });
        }
    }
    pairing.abort_all();
    while pairing.join_next().await.is_some() {}
}
