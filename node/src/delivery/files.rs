//! The files a node keeps: `DATA_DIR/downloads` (fetched content) and `DATA_DIR/inbox` (pushed
//! content), with names that stay in their directory.

use std::path::{Path, PathBuf};

use super::Delivery;

/// A file name without path separators or leading dots.
pub(super) fn sanitise(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .take(128)
        .collect();
    let s = s.trim_start_matches('.').to_string();
    if s.is_empty() { "content".into() } else { s }
}

/// A name in `dir` for `name` that no file has yet (`name`, `name.1`, `name.2`...): a push
/// never overwrites an earlier one.
pub(super) fn free_name(dir: &Path, name: &str) -> PathBuf {
    let base = sanitise(name);
    let first = dir.join(&base);
    if !first.exists() {
        return first;
    }
    (1..10_000)
        .map(|i| dir.join(format!("{base}.{i}")))
        .find(|p| !p.exists())
        .unwrap_or_else(|| dir.join(format!("{base}.{:08x}", rand::random::<u32>())))
}

impl Delivery {
    /// Files received by pushes, with their sizes (`.part` files, still arriving, are not
    /// listed).
    pub(crate) async fn inbox(&self) -> Vec<(String, u64)> {
        let dir = self.ctx().config.data_dir.join("inbox");
        let mut out = Vec::new();
        if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                let name = e.file_name().to_string_lossy().into_owned();
                if name.ends_with(".part") {
                    continue;
                }
                if let Ok(m) = e.metadata().await {
                    out.push((name, m.len()));
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitised_names_stay_in_their_directory() {
        assert_eq!(sanitise("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitise(".."), "content");
        assert_eq!(sanitise("svc-01ab"), "svc-01ab");
    }

    #[test]
    fn free_names_do_not_overwrite() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let a = free_name(dir.path(), "a.txt");
        std::fs::write(&a, b"1").unwrap_or_else(|e| panic!("{e}"));
        let b = free_name(dir.path(), "a.txt");
        assert_ne!(a, b);
        assert!(b.ends_with("a.txt.1"));
    }
}
