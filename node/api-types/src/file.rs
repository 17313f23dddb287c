//! `DATA_DIR/api.json`: where a node's API listens and its token.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// File in the data dir that tells clients where the API is and its token.
pub const API_FILE: &str = "api.json";

/// The content of [`API_FILE`] (mode 0600: reading it is what authorises a program).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ApiFile {
    /// `127.0.0.1:PORT`.
    pub addr: SocketAddr,
    /// The bearer token.
    pub token: String,
    /// The node's PeerId.
    pub peer_id: String,
    /// The daemon's process id.
    pub pid: u32,
}

impl ApiFile {
    /// Reads the API file of a data dir.
    pub fn read(data_dir: &Path) -> std::io::Result<ApiFile> {
        let text = std::fs::read_to_string(data_dir.join(API_FILE))?;
        serde_json::from_str(&text)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
    }
}

/// The data dir a node and the CLI use when none is given: `$XDG_DATA_HOME/cpns`, else
/// `~/.local/share/cpns`, else `./cpns-data`. Here so that both sides agree on it.
pub fn default_data_dir() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        return PathBuf::from(x).join("cpns");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/cpns");
    }
    PathBuf::from("cpns-data")
}
