//! The vendored `futures-timer` (vendor/README.md) wakes its helper thread only for a timer due
//! before the thread's next wake-up. These check that no timer is late because of it: libp2p's
//! request, substream and idle timeouts all run on it.

use std::time::{Duration, Instant};

use futures_timer::Delay;

/// Generous bound for a timer to fire after its deadline on a loaded 2-core machine.
const SLACK: Duration = Duration::from_millis(500);

#[tokio::test]
async fn an_earlier_timer_made_after_a_later_one_fires_on_time() {
    // The helper thread goes to sleep until the 30 s timer...
    let _far = Delay::new(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(20)).await;
    // ...and must be woken for this one.
    let start = Instant::now();
    tokio::time::timeout(
        Duration::from_secs(5),
        Delay::new(Duration::from_millis(50)),
    )
    .await
    .expect("the earlier timer never fired");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(50), "fired early: {took:?}");
    assert!(
        took < Duration::from_millis(50) + SLACK,
        "fired late: {took:?}"
    );
}

#[tokio::test]
async fn a_timer_reset_to_earlier_fires_on_time() {
    let mut d = Delay::new(Duration::from_secs(30));
    tokio::time::sleep(Duration::from_millis(20)).await;
    let start = Instant::now();
    d.reset(Duration::from_millis(40));
    tokio::time::timeout(Duration::from_secs(5), &mut d)
        .await
        .expect("the reset timer never fired");
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(40), "fired early: {took:?}");
    assert!(
        took < Duration::from_millis(40) + SLACK,
        "fired late: {took:?}"
    );
}

#[tokio::test]
async fn many_timers_made_and_dropped_leave_the_others_on_time() {
    // Cancelled timers are taken off the heap lazily; they must not delay a live one.
    for i in 0..2_000u64 {
        drop(Delay::new(Duration::from_millis(1 + i % 50)));
    }
    let start = Instant::now();
    let mut later: Vec<Delay> = (1..=20u64)
        .map(|i| Delay::new(Duration::from_millis(i * 5)))
        .collect();
    for (i, d) in later.iter_mut().enumerate() {
        tokio::time::timeout(Duration::from_secs(5), d)
            .await
            .expect("a timer never fired");
        let due = Duration::from_millis((i as u64 + 1) * 5);
        let took = start.elapsed();
        assert!(took >= due, "timer {i} fired early: {took:?}");
        assert!(took < due + SLACK, "timer {i} fired late: {took:?}");
    }
}
