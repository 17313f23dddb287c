//! The wire format of a delivery stream: one [`Hello`] frame from the opener, then, from the
//! content's sender, an [`Opening`] frame and the chunks. Every frame is `u32 BE length ||
//! body`; a chunk's body is `flags (bit 0: last) || sealed bytes`, sealed under the group key
//! with the stream id, the chunk index and the last flag bound in, so that a reordered,
//! dropped or truncated stream fails to open.

use cpns_directory::KeyRing as _;
use cpns_keys::{GroupId, GroupKey};
use cpns_overlay::codec;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;

use super::{CHUNK, MAX_CONTROL_FRAME};
use crate::error::OpError;
use crate::shared::Shared;

/// The first frame of a delivery stream.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Hello {
    /// Consumer to offerer: send me the content of this session.
    Pull { session: u64 },
    /// Offerer to consumer: here is the content of this session.
    Push { session: u64 },
    /// A member pushes a file to another (`cpns content send`).
    Send { name: String },
}

/// What the content sender says before the chunks.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Opening {
    /// The group key (and epoch) the chunks are sealed under; `None` for public content.
    pub(super) sealed: Option<(GroupId, u64)>,
    /// Random per stream, bound into every chunk's nonce and AAD.
    pub(super) stream_id: u64,
    /// Total content length in bytes.
    pub(super) length: u64,
}

/// The sender's side of a content stream: opening, then chunks read from `input`.
pub(super) async fn stream_bytes<W: AsyncWrite + Unpin, R: tokio::io::AsyncRead + Unpin>(
    shared: &Shared,
    out: &mut W,
    key: Option<&GroupKey>,
    input: &mut R,
    length: u64,
    chunk: usize,
    stop: &CancellationToken,
) -> Result<(), OpError> {
    let stream_id: u64 = rand::random();
    let opening = Opening {
        sealed: key.map(|k| (k.group().clone(), k.epoch())),
        stream_id,
        length,
    };
    write_frame(out, &opening).await?;
    let io = |e: std::io::Error| OpError::Unavailable(format!("delivery stream: {e}"));
    let mut buf = vec![0u8; chunk];
    let mut sent = 0u64;
    let mut index = 0u64;
    loop {
        if stop.is_cancelled() {
            return Err(OpError::Conflict("stopped by the consumer".into()));
        }
        let want = ((length - sent) as usize).min(chunk);
        input.read_exact(&mut buf[..want]).await.map_err(io)?;
        let last = sent + want as u64 == length;
        let body = match key {
            Some(k) => k.seal_chunk(&shared.peer_id, stream_id, index, last, &buf[..want]),
            None => buf[..want].to_vec(),
        };
        let frame_len = u32::try_from(body.len() + 1)
            .map_err(|_| OpError::Internal("chunk too large".into()))?;
        out.write_all(&frame_len.to_be_bytes()).await.map_err(io)?;
        out.write_all(&[u8::from(last)]).await.map_err(io)?;
        out.write_all(&body).await.map_err(io)?;
        sent += want as u64;
        index += 1;
        shared.metrics.bytes_delivered.inc_by(want as u64);
        if last {
            break;
        }
    }
    out.close().await.map_err(io)?;
    Ok(())
}

/// The receiver's side: reads the opening and the chunks, opens each, writes the content to
/// `sink`; returns the byte count and the SHA-256.
pub(super) async fn receive_content<R: AsyncRead + Unpin>(
    shared: &Shared,
    sender: &PeerId,
    input: &mut R,
    sink: &mut tokio::fs::File,
    max_len: u64,
) -> Result<(u64, String), OpError> {
    let opening: Opening = read_frame(input).await?;
    if opening.length > max_len {
        return Err(OpError::Refused(format!(
            "content of {} bytes is over the limit",
            opening.length
        )));
    }
    let key = match &opening.sealed {
        Some((g, epoch)) => Some(shared.keyring.by_epoch(g, *epoch).ok_or_else(|| {
            OpError::Refused(format!("no key of {g} epoch {epoch}: not a member?"))
        })?),
        None => None,
    };
    let io = |e: std::io::Error| OpError::Unavailable(format!("delivery stream: {e}"));
    let max_frame = CHUNK + 64;
    let mut hasher = Sha256::new();
    let mut got = 0u64;
    let mut index = 0u64;
    loop {
        let mut len = [0u8; 4];
        input.read_exact(&mut len).await.map_err(io)?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > max_frame {
            return Err(OpError::Refused(format!("bad chunk frame of {len} bytes")));
        }
        let mut frame = vec![0u8; len];
        input.read_exact(&mut frame).await.map_err(io)?;
        let last = frame[0] & 1 == 1;
        let plain = match &key {
            Some(k) => k
                .open_chunk(sender, opening.stream_id, index, last, &frame[1..])
                .map_err(|e| OpError::Refused(format!("chunk {index} did not open: {e}")))?,
            None => frame[1..].to_vec(),
        };
        got += plain.len() as u64;
        if got > opening.length {
            return Err(OpError::Refused("more content than announced".into()));
        }
        hasher.update(&plain);
        sink.write_all(&plain).await.map_err(io)?;
        shared.metrics.bytes_received.inc_by(plain.len() as u64);
        index += 1;
        if last {
            break;
        }
    }
    if got != opening.length {
        return Err(OpError::Refused(format!(
            "stream ended after {got} of {} bytes",
            opening.length
        )));
    }
    sink.flush().await.map_err(io)?;
    Ok((got, hex::encode(hasher.finalize())))
}

pub(super) async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(
    out: &mut W,
    v: &T,
) -> Result<(), OpError> {
    let bytes = codec::encode(v).map_err(|e| OpError::Internal(e.to_string()))?;
    codec::write_frame(out, &bytes)
        .await
        .map_err(|e| OpError::Unavailable(format!("delivery stream: {e}")))
}

pub(super) async fn read_frame<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    input: &mut R,
) -> Result<T, OpError> {
    let bytes = codec::read_frame(input, MAX_CONTROL_FRAME)
        .await
        .map_err(|e| OpError::Refused(format!("delivery stream: {e}")))?;
    codec::decode(&bytes, MAX_CONTROL_FRAME)
        .map_err(|e| OpError::Refused(format!("delivery stream: {e}")))
}
