//! Usage statistics during use (5.6.3: "the device capabilities and status during the service
//! usage"): a consumer samples its own capabilities and status when a delivery starts, every
//! `usage.sample_secs`, at every change the PN actor publishes, and when it ends; the usage
//! record carries the summary. A summary has a fixed size, so a long use costs what a short
//! one does.

use std::sync::Arc;
use std::time::Duration;

use cpns_overlay::{Capabilities, PowerSource, Status, UsageSamples};
use tokio::sync::watch;

use crate::pn;

/// What a sample reads: the device's capabilities and status now (the PN actor's view).
pub(super) trait Observed {
    fn caps(&self) -> &Capabilities;
    fn status(&self) -> &Status;
}

impl Observed for pn::View {
    fn caps(&self) -> &Capabilities {
        &self.caps
    }
    fn status(&self) -> &Status {
        &self.status
    }
}

impl<T: Observed> Observed for Arc<T> {
    fn caps(&self) -> &Capabilities {
        (**self).caps()
    }
    fn status(&self) -> &Status {
        (**self).status()
    }
}

/// Longest Busy reason kept in a summary.
const MAX_REASON: usize = 64;

/// Folds samples into a [`UsageSamples`].
#[derive(Default)]
pub(super) struct Sampler {
    summary: UsageSamples,
}

impl Sampler {
    /// A sampler with the first sample taken.
    pub(super) fn start(view: &impl Observed) -> Sampler {
        let mut s = Sampler::default();
        s.sample(view);
        s
    }

    /// One sample of the node's capabilities and status now.
    pub(super) fn sample(&mut self, view: &impl Observed) {
        let m = &mut self.summary;
        let now = crate::now();
        let d = &view.caps().dynamic;
        if m.count == 0 {
            m.first = now;
            m.free_memory_min = d.free_memory_bytes;
            m.free_memory_max = d.free_memory_bytes;
            m.wan = d.wan;
        }
        m.count = m.count.saturating_add(1);
        m.last = now;
        if let Some(b) = d.battery_percent {
            m.battery_min = Some(m.battery_min.map_or(b, |x| x.min(b)));
            m.battery_max = Some(m.battery_max.map_or(b, |x| x.max(b)));
        }
        m.on_battery |= d.power == PowerSource::Battery;
        m.free_memory_min = m.free_memory_min.min(d.free_memory_bytes);
        m.free_memory_max = m.free_memory_max.max(d.free_memory_bytes);
        m.wan &= d.wan;
        let status = match view.status() {
            Status::Busy { reason } => Status::Busy {
                reason: reason.chars().take(MAX_REASON).collect(),
            },
            other => other.clone(),
        };
        // Three kinds of status at most: the list stays as small as that.
        if !m.statuses.iter().any(|s| s.as_str() == status.as_str()) {
            m.statuses.push(status);
        }
    }

    /// The summary so far.
    pub(super) fn summary(&self) -> UsageSamples {
        self.summary.clone()
    }
}

/// Runs `work` while sampling the node into `sampler`: every `every`, and at every change
/// of the PN actor's view (status, capabilities) that `views` receives; then once more at the
/// end.
pub(super) async fn sampled<V: Observed + Clone, T>(
    mut views: watch::Receiver<V>,
    sampler: &mut Sampler,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    views.borrow_and_update();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => {
                let view = views.borrow().clone();
                sampler.sample(&view);
            }
            changed = views.changed() => {
                if changed.is_err() {
                    break (&mut work).await;
                }
                let view = views.borrow_and_update().clone();
                sampler.sample(&view);
            }
        }
    };
    let view = views.borrow().clone();
    sampler.sample(&view);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Device {
        caps: Capabilities,
        status: Status,
    }

    impl Observed for Device {
        fn caps(&self) -> &Capabilities {
            &self.caps
        }
        fn status(&self) -> &Status {
            &self.status
        }
    }

    fn on_battery(percent: u8, free: u64) -> Device {
        let mut d = Device::default();
        d.caps.dynamic.power = PowerSource::Battery;
        d.caps.dynamic.battery_percent = Some(percent);
        d.caps.dynamic.free_memory_bytes = free;
        d
    }

    /// 5.6.3 "the device capabilities and status during the service usage": sampled at the
    /// start, every period, at each change, and at the end. The period is short against the
    /// use (50 ms in 1 s), so at least one periodic sample falls within it however loaded the
    /// machine; the other samples are exact.
    #[tokio::test]
    async fn a_use_is_sampled_at_start_periodically_at_changes_and_at_the_end() {
        let (tx, rx) = watch::channel(on_battery(80, 4 << 30));
        let mut sampler = Sampler::start(&*rx.borrow());
        let every = Duration::from_millis(50);
        let work = async {
            // Half a second of use, then the device gets busy and its battery drops; half a
            // second more.
            tokio::time::sleep(Duration::from_millis(500)).await;
            let mut d = on_battery(41, 1 << 30);
            d.status = Status::Busy {
                reason: "a call".into(),
            };
            tx.send(d).unwrap();
            tokio::time::sleep(Duration::from_millis(500)).await;
            7
        };
        let out = sampled(rx.clone(), &mut sampler, every, work).await;
        assert_eq!(out, 7);
        let s = sampler.summary();
        // Start, the change, the end, and at least one tick (about 20 on a quiet machine).
        assert!(s.count >= 4, "{s:?}");
        assert_eq!((s.battery_min, s.battery_max), (Some(41), Some(80)));
        assert_eq!((s.free_memory_min, s.free_memory_max), (1 << 30, 4 << 30));
        assert!(s.on_battery);
        let statuses: Vec<&str> = s.statuses.iter().map(|x| x.as_str()).collect();
        assert_eq!(statuses, ["online", "busy"]);
    }

    /// A long use costs what a short one does: the summary keeps its size.
    #[test]
    fn a_summary_stays_small_however_long_the_use() {
        let mut sampler = Sampler::start(&on_battery(50, 1));
        for i in 0..10_000u32 {
            let mut d = on_battery((i % 100) as u8, u64::from(i));
            d.status = Status::Busy {
                reason: format!("reason {i} {}", "x".repeat(500)),
            };
            sampler.sample(&d);
        }
        let s = sampler.summary();
        assert_eq!(s.count, 10_001);
        assert_eq!(s.statuses.len(), 2, "{:?}", s.statuses);
        assert!(
            s.statuses
                .iter()
                .all(|x| !matches!(x, Status::Busy { reason } if reason.len() > MAX_REASON))
        );
    }
}
