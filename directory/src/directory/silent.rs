//! Providers that keep discovery waiting.
//!
//! A keyword's providers are asked at once and a discovery ends when the last one has answered
//! or given up, so one provider that never answers a direct lookup costs every discovery of
//! its keywords the whole `lookup_timeout` (2 s), and then a read of its publisher index. Any
//! enrolled device can be such a provider (issue 14's attack soak: the hostile device provided
//! every honest keyword, and each find took 2.3 s). This remembers, for a while
//! ([`PAUSE`]), the providers that let a direct lookup time out, which are then read from the
//! DHT at once instead of being asked again, and the publisher indexes that were not found in
//! the DHT, whose providers then have nothing to be read, so they are passed over. An honest
//! provider that was only slow loses nothing (its index has its services); one that answers
//! again is asked directly after the pause. Both sets are bounded ([`MAX_REMEMBERED`]).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpns_keys::PeerId;

/// How long a provider that timed out is not asked directly, and an index found missing is
/// not looked for again.
pub(super) const PAUSE: Duration = Duration::from_secs(120);

/// Most providers, and most indexes, remembered.
pub(super) const MAX_REMEMBERED: usize = 1024;

/// Entries until their end, bounded in number.
struct Until<K> {
    map: HashMap<K, Instant>,
}

impl<K: Eq + Hash> Until<K> {
    fn holds(&mut self, key: &K, now: Instant) -> bool {
        match self.map.get(key) {
            Some(end) if *end > now => true,
            Some(_) => {
                self.map.remove(key);
                false
            }
            None => false,
        }
    }

    fn insert(&mut self, key: K, now: Instant) {
        if self.map.len() >= MAX_REMEMBERED {
            self.map.retain(|_, end| *end > now);
        }
        if self.map.len() < MAX_REMEMBERED {
            self.map.insert(key, now + PAUSE);
        }
    }
}

/// See the module docs.
pub(super) struct Silent {
    inner: Mutex<(Until<PeerId>, Until<Vec<u8>>)>,
}

impl Silent {
    pub(super) fn new() -> Self {
        Self {
            inner: Mutex::new((
                Until {
                    map: HashMap::new(),
                },
                Until {
                    map: HashMap::new(),
                },
            )),
        }
    }

    fn with<T>(&self, f: impl FnOnce(&mut (Until<PeerId>, Until<Vec<u8>>)) -> T) -> T {
        f(&mut self.inner.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// Whether `provider` let a direct lookup time out within the pause.
    pub(super) fn is_silent(&self, provider: &PeerId) -> bool {
        self.with(|(p, _)| p.holds(provider, Instant::now()))
    }

    /// `provider` let a direct lookup time out.
    pub(super) fn timed_out(&self, provider: PeerId) {
        self.with(|(p, _)| p.insert(provider, Instant::now()));
    }

    /// `provider` answered a direct lookup.
    pub(super) fn answered(&self, provider: &PeerId) {
        self.with(|(p, _)| p.map.remove(provider));
    }

    /// Whether the publisher index under `key` was found missing within the pause.
    pub(super) fn is_missing(&self, key: &[u8]) -> bool {
        self.with(|(_, i)| i.holds(&key.to_vec(), Instant::now()))
    }

    /// The publisher index under `key` is not in the DHT.
    pub(super) fn missing(&self, key: &[u8]) {
        self.with(|(_, i)| i.insert(key.to_vec(), Instant::now()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembered_for_the_pause_and_bounded() {
        let s = Silent::new();
        let p = cpns_keys::Identity::from_secret_bytes([1; 32]).peer_id();
        assert!(!s.is_silent(&p));
        s.timed_out(p);
        assert!(s.is_silent(&p));
        s.answered(&p);
        assert!(!s.is_silent(&p));
        for i in 0..(MAX_REMEMBERED + 10) {
            s.missing(&(i as u64).to_be_bytes());
        }
        assert!(s.is_missing(&0u64.to_be_bytes()));
        assert!(!s.is_missing(&((MAX_REMEMBERED + 5) as u64).to_be_bytes()));
        s.with(|(_, i)| {
            assert_eq!(i.map.len(), MAX_REMEMBERED);
            // Past its end, an entry no longer holds, and is dropped.
            let now = Instant::now() + PAUSE + Duration::from_secs(1);
            assert!(!i.holds(&0u64.to_be_bytes().to_vec(), now));
            assert_eq!(i.map.len(), MAX_REMEMBERED - 1);
        });
    }
}
