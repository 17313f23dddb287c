//! Content from an external Application/Content server (5.6.7: "between PN GW and external
//! entities"): a service whose source is an `http://` URL is fetched by this node (the
//! gateway, as the PN's door to the outside) into its data dir, then delivered to the PNEs
//! sealed like any other content. One fetch serves many consumers: invocations that arrive
//! while it runs wait for it, and later ones reuse the file for `delivery.external_cache_secs`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tracing::info;

use crate::context::Context;
use crate::error::OpError;
use crate::trace::flow::DELIVERY;

/// Most external sources remembered at once (the least recently fetched goes first).
const MAX_SOURCES: usize = 64;
/// How long one fetch may take.
const FETCH_TIMEOUT: Duration = Duration::from_secs(600);

/// A fetched source: where it is.
#[derive(Clone, Debug)]
pub(super) struct Fetched {
    pub(super) path: PathBuf,
}

type Slot = Arc<OnceCell<Result<Fetched, String>>>;

/// The fetches, by URL.
#[derive(Default)]
pub(super) struct Cache {
    slots: Mutex<HashMap<String, (Instant, Slot)>>,
}

impl Cache {
    /// The content of `url`: fetched now, or the fetch in progress, or a fresh enough copy.
    pub(super) async fn get(&self, ctx: &Context, url: &str) -> Result<Fetched, OpError> {
        let ttl = Duration::from_secs(ctx.config.delivery.external_cache_secs);
        let slot = {
            let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            let fresh = slots.get(url).filter(|(at, slot)| {
                // A failed fetch is not kept: the next consumer tries again.
                let failed = matches!(slot.get(), Some(Err(_)));
                !failed && (slot.get().is_none() || at.elapsed() < ttl)
            });
            match fresh {
                Some((_, slot)) => slot.clone(),
                None => {
                    if slots.len() >= MAX_SOURCES
                        && let Some(oldest) = slots
                            .iter()
                            .min_by_key(|(_, (at, _))| *at)
                            .map(|(k, _)| k.clone())
                    {
                        slots.remove(&oldest);
                    }
                    let slot: Slot = Arc::new(OnceCell::new());
                    slots.insert(url.to_string(), (Instant::now(), slot.clone()));
                    slot
                }
            }
        };
        slot.get_or_init(|| async {
            tokio::time::timeout(FETCH_TIMEOUT, fetch(ctx, url))
                .await
                .unwrap_or_else(|_| Err(format!("fetching {url} took too long")))
        })
        .await
        .clone()
        .map_err(OpError::Unavailable)
    }
}

/// Downloads `url` into `DATA_DIR/external/`, at most `delivery.max_external_bytes`.
async fn fetch(ctx: &Context, url: &str) -> Result<Fetched, String> {
    use tokio::io::AsyncWriteExt;
    let max = ctx.config.delivery.max_external_bytes;
    let dir = ctx.config.data_dir.join("external");
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let name = hex::encode(Sha256::digest(url.as_bytes()));
    // A new name per fetch: a consumer still reading the previous copy keeps its file.
    let path = dir.join(format!("{name}.{}", rand::random::<u32>()));
    let part = dir.join(format!("{name}.part"));
    let mut resp = reqwest::get(url)
        .await
        .map_err(|e| format!("fetching {url}: {e}"))?;
    if !resp.status().is_success() {
        return Err(format!("fetching {url}: HTTP {}", resp.status()));
    }
    if resp.content_length().is_some_and(|n| n > max) {
        return Err(format!("{url} is larger than {max} bytes"));
    }
    let mut file = tokio::fs::File::create(&part)
        .await
        .map_err(|e| format!("{}: {e}", part.display()))?;
    let mut length = 0u64;
    let result = async {
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|e| format!("fetching {url}: {e}"))?
        {
            length += chunk.len() as u64;
            if length > max {
                return Err(format!("{url} is larger than {max} bytes"));
            }
            file.write_all(&chunk)
                .await
                .map_err(|e| format!("writing {}: {e}", part.display()))?;
        }
        file.flush().await.map_err(|e| e.to_string())?;
        Ok(())
    }
    .await;
    if let Err(e) = result {
        let _ = tokio::fs::remove_file(&part).await;
        return Err(e);
    }
    drop(file);
    // Older copies of the same URL are left to the consumers still reading them; remove the
    // ones nobody can be reading (older than one cache period) now.
    remove_stale(&dir, &name, ctx.config.delivery.external_cache_secs).await;
    tokio::fs::rename(&part, &path)
        .await
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let me = ctx.peer_id;
    ctx.trace(
        DELIVERY,
        7,
        &me,
        &me,
        "FetchExternalContent",
        format!("{url}: {length} bytes"),
    );
    info!(url, length, "external content fetched");
    Ok(Fetched { path })
}

async fn remove_stale(dir: &std::path::Path, name: &str, cache_secs: u64) {
    let Ok(mut rd) = tokio::fs::read_dir(dir).await else {
        return;
    };
    let limit = Duration::from_secs(cache_secs.saturating_mul(2).max(60));
    while let Ok(Some(e)) = rd.next_entry().await {
        let file = e.file_name().to_string_lossy().into_owned();
        if !file.starts_with(name) || file.ends_with(".part") {
            continue;
        }
        let old = e
            .metadata()
            .await
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age > limit);
        if old {
            let _ = tokio::fs::remove_file(e.path()).await;
        }
    }
}
