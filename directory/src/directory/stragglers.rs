//! How long one discovery waits for its slowest providers.
//!
//! A discovery asks the providers of its keywords at once and, before this, waited until the
//! last had answered or its `lookup_timeout` (2 s) ran out. So the first discovery after an
//! enrolled device began announcing the household's keywords without ever answering took
//! 2 s, however fast the honest providers were (issue 14's attack soak: its p99 was that
//! one find, 2,004 ms against 4 ms alone). [`super::silent`] only helps the discoveries
//! after it. Now, once one provider has answered, the others get a grace period (the
//! configured `straggler_grace`, or [`FACTOR`] times the first answer's time if that is
//! longer, so that a slow network slows nobody out); one that misses it is treated as one
//! that timed out: its publisher index is read from the DHT instead (an honest provider
//! that was only slow loses nothing, its index has its services), and it is remembered as
//! silent for a while.

use std::time::{Duration, Instant};

use tokio::sync::watch;

/// A provider may take this many times as long as the first one did.
pub(super) const FACTOR: u32 = 4;

/// The first answer of one discovery's direct lookups, and the grace it starts.
pub(super) struct Stragglers {
    start: Instant,
    grace: Duration,
    first: watch::Sender<Option<Instant>>,
}

impl Stragglers {
    pub(super) fn new(grace: Duration) -> Self {
        Self {
            start: Instant::now(),
            grace,
            first: watch::Sender::new(None),
        }
    }

    /// A provider answered; the first call starts the others' grace.
    pub(super) fn answered(&self) {
        self.first.send_if_modified(|first| {
            let unset = first.is_none();
            if unset {
                *first = Some(Instant::now());
            }
            unset
        });
    }

    /// Completes when the providers still asked have had their grace after the first answer;
    /// never while no provider has answered.
    pub(super) async fn cut(&self) {
        let mut rx = self.first.subscribe();
        // Copied out at once: the borrow it comes in must not live across an await (it would
        // make every discovery's future not `Send`).
        let first: Option<Instant> = rx.wait_for(Option::is_some).await.ok().and_then(|f| *f);
        let Some(first) = first else {
            // Unreachable while `self` holds the sender; never cut.
            return std::future::pending().await;
        };
        let took = first.saturating_duration_since(self.start);
        let deadline = first + self.grace.max(took * FACTOR);
        tokio::time::sleep_until(deadline.into()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lower bounds are exact (a sleep never ends early); the upper ones only say that
    /// the cut comes at all.
    #[tokio::test]
    async fn no_cut_before_an_answer_then_the_grace_or_four_times_the_first() {
        let s = Stragglers::new(Duration::from_millis(50));
        // Nobody answered: no cut.
        assert!(
            tokio::time::timeout(Duration::from_millis(300), s.cut())
                .await
                .is_err()
        );
        // The first answer came after 300 ms: the others get 4 x 300 ms, not 50 ms.
        s.answered();
        let t = Instant::now();
        tokio::time::timeout(Duration::from_secs(30), s.cut())
            .await
            .expect("a cut after the first answer");
        assert!(
            t.elapsed() >= Duration::from_millis(1200),
            "{:?}",
            t.elapsed()
        );

        // A fast first answer: the configured grace; a second answer does not move it.
        let fast = Stragglers::new(Duration::from_millis(200));
        fast.answered();
        let t = Instant::now();
        fast.answered();
        tokio::time::timeout(Duration::from_secs(30), fast.cut())
            .await
            .expect("a cut after the first answer");
        assert!(
            t.elapsed() >= Duration::from_millis(190),
            "{:?}",
            t.elapsed()
        );
    }
}
