//! Fair sharing of the link to one consumer (5.6.7 "supporting single/multiple services"):
//! deliveries from this node to the same consumer take turns, one chunk each. A turn is a
//! FIFO lock (tokio's `Mutex` grants waiters in order), so with two deliveries under way
//! neither can write two chunks while the other waits; each gets half of what the link
//! carries, whatever its chunk source's speed beyond that.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use libp2p::PeerId;

/// The turns, one per consumer with a delivery under way (entries go when their last
/// delivery ends).
#[derive(Default)]
pub(super) struct Shares {
    per_consumer: Mutex<HashMap<PeerId, Weak<tokio::sync::Mutex<()>>>>,
}

impl Shares {
    /// The turn of deliveries to `consumer` (held by each while it runs).
    pub(super) fn turn(&self, consumer: PeerId) -> Arc<tokio::sync::Mutex<()>> {
        let mut map = self.per_consumer.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        if let Some(t) = map.get(&consumer).and_then(Weak::upgrade) {
            return t;
        }
        let t = Arc::new(tokio::sync::Mutex::new(()));
        map.insert(consumer, Arc::downgrade(&t));
        t
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn two_writers_alternate() {
        let shares = Shares::default();
        let peer = PeerId::random();
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        for who in 0..2u8 {
            let turn = shares.turn(peer);
            let log = log.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..50 {
                    let _t = turn.lock().await;
                    log.lock().unwrap().push(who);
                    tokio::task::yield_now().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap();
        // After both started, no writer takes two turns in a row while the other waits.
        let first_b = log.iter().position(|w| *w != log[0]).unwrap();
        let end = log
            .iter()
            .rposition(|w| *w == 0)
            .unwrap()
            .min(log.iter().rposition(|w| *w == 1).unwrap());
        let both = &log[first_b..=end];
        let runs = both.windows(2).filter(|w| w[0] == w[1]).count();
        assert!(runs <= 1, "turns not alternating: {log:?}");
        assert_eq!(shares.per_consumer.lock().unwrap().len(), 1);
    }
}
