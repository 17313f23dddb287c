//! `cpns content send`: a member pushes a file to another, sealed under the PN key; the
//! receiver keeps it in `DATA_DIR/inbox`.

use std::path::Path;
use std::time::Duration;

use cpns_directory::KeyRing as _;
use cpns_overlay::DELIVERY_PROTOCOL;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tokio_util::sync::CancellationToken;

use super::stream::{Hello, receive_to_file, stream_file, write_frame};
use super::{CHUNK, Delivery, MAX_INBOX_FILE};
use crate::error::OpError;

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

impl Delivery {
    /// `cpns content send`: pushes a file to a member of this node's PN, sealed under the PN key.
    pub(crate) async fn send_file(&self, peer: PeerId, path: &Path) -> Result<u64, OpError> {
        let shared = self.ctx();
        let view = self.inner.pn.view();
        let pn_id = view
            .pn_id()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        let is_member = view.is_member(&peer);
        if !is_member {
            return Err(OpError::BadRequest(format!(
                "{peer} is not a member of this PN"
            )));
        }
        let key = shared
            .keyring
            .current(&crate::pn::pn_group(pn_id))
            .ok_or_else(|| OpError::Conflict("no PN key held".into()))?;
        let file = std::fs::File::open(path)
            .map_err(|e| OpError::BadRequest(format!("{}: {e}", path.display())))?;
        let length = file
            .metadata()
            .map_err(|e| OpError::Internal(e.to_string()))?
            .len();
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "file".into());
        let mut control = shared.client.stream_control();
        let mut stream = control
            .open_stream(peer, DELIVERY_PROTOCOL)
            .await
            .map_err(|e| OpError::Unavailable(format!("opening the delivery stream: {e}")))?;
        write_frame(&mut stream, &Hello::Send { name }).await?;
        stream_file(
            shared,
            &mut stream,
            Some(key),
            file,
            length,
            CHUNK,
            &CancellationToken::new(),
        )
        .await?;
        // Wait for the receiver to close its side, so that "sent" means "stored".
        let mut ack = [0u8; 1];
        let _ = tokio::time::timeout(Duration::from_secs(30), stream.read(&mut ack)).await;
        Ok(length)
    }

    pub(super) async fn receive_file(
        &self,
        peer: PeerId,
        mut stream: Stream,
        name: &str,
    ) -> Result<(), OpError> {
        let shared = self.ctx();
        let is_member = self.inner.pn.view().is_member(&peer);
        if !is_member {
            return Err(OpError::Refused(
                "files are accepted from PN members only".into(),
            ));
        }
        let dir = shared.config.data_dir.join("inbox");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let path = dir.join(sanitise(name));
        let result = receive_to_file(shared, &peer, &mut stream, &path, MAX_INBOX_FILE, None).await;
        if result.is_err() {
            let _ = tokio::fs::remove_file(&path).await;
        }
        let _ = stream.close().await;
        result.map(|_| ())
    }

    /// Files received with `cpns content send`.
    pub(crate) async fn inbox(&self) -> Vec<(String, u64)> {
        let dir = self.ctx().config.data_dir.join("inbox");
        let mut out = Vec::new();
        if let Ok(mut rd) = tokio::fs::read_dir(&dir).await {
            while let Ok(Some(e)) = rd.next_entry().await {
                if let Ok(m) = e.metadata().await {
                    out.push((e.file_name().to_string_lossy().into_owned(), m.len()));
                }
            }
        }
        out.sort();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::sanitise;

    #[test]
    fn sanitised_names_stay_in_their_directory() {
        assert_eq!(sanitise("../../etc/passwd"), "_.._etc_passwd");
        assert_eq!(sanitise(".."), "content");
        assert_eq!(sanitise("svc-01ab"), "svc-01ab");
    }
}
