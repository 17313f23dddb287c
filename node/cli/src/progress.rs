//! Progress of long fetches and sends (indicatif, on stderr, only on a terminal).
//!
//! A fetch counts the bytes the node has received so far (`GET /v1/content/progress/{id}`)
//! up to the size the publisher stated (`size` in the service's metadata); without a size it
//! shows a spinner with the bytes so far. A send shows a spinner with the file's size and the
//! elapsed time: the node reports a push only when it is done.

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use cpns_api::{ContentProgress, FoundView};
use indicatif::{ProgressBar, ProgressStyle};

use crate::client::{ApiClient, CliError};

/// How often the node is asked how far a fetch got.
const POLL: Duration = Duration::from_millis(150);

fn styled(bar: ProgressBar, template: &str) -> ProgressBar {
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

/// Runs `fetch` while drawing how far it got.
pub(crate) async fn fetch<T>(
    api: &ApiClient,
    service_id: &str,
    fetch: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    let size = api
        .get::<FoundView>(&format!("/v1/services/{service_id}"))
        .await
        .ok()
        .and_then(|f| f.description.metadata.get("size")?.parse::<u64>().ok());
    let bar = match size {
        Some(total) => styled(
            ProgressBar::new(total),
            "{spinner} [{elapsed}] {wide_bar} {bytes}/{total_bytes} {bytes_per_sec}",
        ),
        None => styled(
            ProgressBar::no_length(),
            "{spinner} [{elapsed}] {bytes} received {bytes_per_sec}",
        ),
    };
    let path = format!("/v1/content/progress/{service_id}");
    let mut tick = tokio::time::interval(POLL);
    tokio::pin!(fetch);
    let result = loop {
        tokio::select! {
            r = &mut fetch => break r,
            _ = tick.tick() => {
                if let Ok(p) = api.get::<ContentProgress>(&path).await
                    && p.active
                {
                    bar.set_position(p.bytes);
                }
            }
        }
    };
    bar.finish_and_clear();
    result
}

/// Runs `send` with a spinner naming the file and its size.
pub(crate) async fn send<T>(
    file: &Path,
    send: impl Future<Output = Result<T, CliError>>,
) -> Result<T, CliError> {
    let size = std::fs::metadata(file).map(|m| m.len()).unwrap_or(0);
    let bar = styled(
        ProgressBar::new(size),
        "{spinner} [{elapsed}] sending {msg} ({total_bytes})",
    );
    bar.set_message(
        file.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    );
    let r = send.await;
    bar.finish_and_clear();
    r
}
