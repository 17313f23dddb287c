//! The external usage collector (5.6.3 "reporting to ... external entities according to the
//! user preferences"): every use the preferences let out is POSTed as JSON
//! ([`cpns_api::CollectedUsage`]) to `usage.collector_url`. A collector that is away gets the
//! records later: they wait in a bounded queue (the oldest go first beyond it), retried by the
//! delivery task while the node runs. The records for `cpns-auth` have their own, durable
//! outbox ([`crate::usage`]); the collector is best effort.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::time::Duration;

use cpns_api::CollectedUsage;
use tracing::debug;

/// Most records waiting for the collector.
const MAX_QUEUED: usize = 256;
/// How long one POST may take.
const POST_TIMEOUT: Duration = Duration::from_secs(10);

/// The collector, if one is configured.
pub(super) struct Collector {
    url: String,
    http: reqwest::Client,
    queue: Mutex<VecDeque<CollectedUsage>>,
    /// One flush at a time, so records leave in order.
    flushing: tokio::sync::Mutex<()>,
}

impl Collector {
    pub(super) fn new(url: &str) -> Option<Collector> {
        if url.is_empty() {
            return None;
        }
        let http = reqwest::Client::builder()
            .timeout(POST_TIMEOUT)
            .build()
            .ok()?;
        Some(Collector {
            url: url.to_string(),
            http,
            queue: Mutex::new(VecDeque::new()),
            flushing: tokio::sync::Mutex::new(()),
        })
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<CollectedUsage>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a record and sends what is queued: `sent` if this one reached the collector,
    /// else `queued`.
    pub(super) async fn post(&self, record: CollectedUsage) -> &'static str {
        {
            let mut q = self.queue();
            while q.len() >= MAX_QUEUED {
                q.pop_front();
            }
            q.push_back(record);
        }
        if self.flush().await && self.queue().is_empty() {
            "sent"
        } else {
            "queued"
        }
    }

    /// Sends queued records in order until one fails; true if none failed.
    pub(super) async fn flush(&self) -> bool {
        let _one = self.flushing.lock().await;
        loop {
            let Some(next) = self.queue().front().cloned() else {
                return true;
            };
            match self.http.post(&self.url).json(&next).send().await {
                Ok(r) if r.status().is_success() => {
                    self.queue().pop_front();
                }
                Ok(r) if r.status().is_client_error() => {
                    // It will never take this one: drop it rather than block the rest.
                    tracing::warn!(status = %r.status(), "the usage collector refused a record; dropped");
                    self.queue().pop_front();
                }
                Ok(r) => {
                    debug!(status = %r.status(), "the usage collector failed; records kept");
                    return false;
                }
                Err(e) => {
                    debug!("the usage collector is unreachable; records kept: {e}");
                    return false;
                }
            }
        }
    }
}
