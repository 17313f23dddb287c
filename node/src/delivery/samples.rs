//! Usage statistics during use (5.6.3: "the device capabilities and status during the service
//! usage"): a consumer samples its own capabilities and status when a delivery starts, every
//! `usage.sample_secs`, at every change the PN actor publishes, and when it ends; the usage
//! record carries the summary. A summary has a fixed size, so a long use costs what a short
//! one does.

use std::time::Duration;

use cpns_overlay::{PowerSource, Status, UsageSamples};

use crate::pn;

/// Longest Busy reason kept in a summary.
const MAX_REASON: usize = 64;

/// Folds samples into a [`UsageSamples`].
#[derive(Default)]
pub(super) struct Sampler {
    summary: UsageSamples,
}

impl Sampler {
    /// A sampler with the first sample taken.
    pub(super) fn start(view: &pn::View) -> Sampler {
        let mut s = Sampler::default();
        s.sample(view);
        s
    }

    /// One sample of the node's capabilities and status now.
    pub(super) fn sample(&mut self, view: &pn::View) {
        let m = &mut self.summary;
        let now = crate::now();
        let d = &view.caps.dynamic;
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
        let status = match &view.status {
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
/// of the PN actor's view (status, capabilities); then once more at the end.
pub(super) async fn sampled<T>(
    pn: &pn::Handle,
    sampler: &mut Sampler,
    every: Duration,
    work: impl std::future::Future<Output = T>,
) -> T {
    tokio::pin!(work);
    let mut views = pn.watch();
    views.borrow_and_update();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = tick.tick() => sampler.sample(&pn.view()),
            changed = views.changed() => {
                if changed.is_err() {
                    break (&mut work).await;
                }
                let view = views.borrow_and_update().clone();
                sampler.sample(&view);
            }
        }
    };
    sampler.sample(&pn.view());
    out
}
