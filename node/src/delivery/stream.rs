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
use tokio_util::sync::CancellationToken;

use super::{CHUNK, MAX_CONTROL_FRAME};
use crate::context::Context;
use crate::error::OpError;

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

/// Chunks in flight between the sealing (or opening) thread and the network task: enough to
/// keep both busy, few enough to bound memory (`PIPELINE * CHUNK`).
const PIPELINE: usize = 4;

fn io_error(e: std::io::Error) -> OpError {
    OpError::Unavailable(format!("delivery stream: {e}"))
}

/// The sender's side of a content stream: the opening, then `length` bytes of `file` in
/// chunks. Reading and sealing run on a blocking thread, a few chunks ahead of the network
/// writes, so that the AEAD and the transport work in parallel.
pub(super) async fn stream_file<W: AsyncWrite + Unpin>(
    shared: &Context,
    out: &mut W,
    key: Option<GroupKey>,
    mut file: std::fs::File,
    length: u64,
    chunk: usize,
    stop: &CancellationToken,
) -> Result<(), OpError> {
    let stream_id: u64 = rand::random();
    let opening = Opening {
        sealed: key.as_ref().map(|k| (k.group().clone(), k.epoch())),
        stream_id,
        length,
    };
    write_frame(out, &opening).await?;
    let tag = if key.is_some() { 16 } else { 0 };
    let sender = shared.peer_id;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(bool, Vec<u8>), OpError>>(PIPELINE);
    let producer = tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut sent = 0u64;
        let mut index = 0u64;
        loop {
            let want = ((length - sent) as usize).min(chunk);
            let mut buf = Vec::with_capacity(want + 16);
            buf.resize(want, 0);
            if let Err(e) = file.read_exact(&mut buf) {
                let _ =
                    tx.blocking_send(Err(OpError::Internal(format!("reading the content: {e}"))));
                return;
            }
            sent += want as u64;
            let last = sent == length;
            if let Some(k) = &key {
                k.seal_chunk_in_place(&sender, stream_id, index, last, &mut buf);
            }
            if tx.blocking_send(Ok((last, buf))).is_err() || last {
                return;
            }
            index += 1;
        }
    });
    let result = async {
        while let Some(item) = rx.recv().await {
            if stop.is_cancelled() {
                return Err(OpError::Conflict("stopped by the consumer".into()));
            }
            let (last, body) = item?;
            let frame_len = u32::try_from(body.len() + 1)
                .map_err(|_| OpError::Internal("chunk too large".into()))?;
            let mut head = [0u8; 5];
            head[..4].copy_from_slice(&frame_len.to_be_bytes());
            head[4] = u8::from(last);
            out.write_all(&head).await.map_err(io_error)?;
            out.write_all(&body).await.map_err(io_error)?;
            shared
                .metrics
                .bytes_delivered
                .inc_by((body.len() - tag) as u64);
            if last {
                return out.close().await.map_err(io_error);
            }
        }
        Err(OpError::Internal("the content ended early".into()))
    }
    .await;
    drop(rx);
    let _ = producer.await;
    result
}

/// The receiver's side: reads the opening and the chunks; opening, hashing and writing to
/// `path` run on a blocking thread while the next chunks arrive. Returns the byte count and
/// the SHA-256 of the content.
pub(super) async fn receive_to_file<R: AsyncRead + Unpin>(
    shared: &Context,
    sender: &PeerId,
    input: &mut R,
    path: &std::path::Path,
    max_len: u64,
    sealed_by: Option<&GroupId>,
) -> Result<(u64, String), OpError> {
    let opening: Opening = timed(read_frame(input)).await?;
    if opening.length > max_len {
        return Err(OpError::Refused(format!(
            "content of {} bytes is over the limit of {max_len}",
            opening.length
        )));
    }
    // A service sealed under a group key is accepted sealed under that group's key only.
    if let Some(g) = sealed_by
        && opening.sealed.as_ref().is_none_or(|(got, _)| got != g)
    {
        return Err(OpError::Refused(format!(
            "the content of a service of {g} came without its seal"
        )));
    }
    let key = match &opening.sealed {
        Some((g, epoch)) => Some(shared.keyring.by_epoch(g, *epoch).ok_or_else(|| {
            OpError::Refused(format!("no key of {g} epoch {epoch}: not a member?"))
        })?),
        None => None,
    };
    let file = std::fs::File::create(path)
        .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(bool, Vec<u8>)>(PIPELINE);
    let sender = *sender;
    let length = opening.length;
    let stream_id = opening.stream_id;
    let consumer = tokio::task::spawn_blocking(move || -> Result<(u64, String), OpError> {
        use std::io::Write;
        let mut file = std::io::BufWriter::with_capacity(1 << 20, file);
        let mut hasher = Sha256::new();
        let mut got = 0u64;
        let mut index = 0u64;
        while let Some((last, mut buf)) = rx.blocking_recv() {
            if let Some(k) = &key {
                k.open_chunk_in_place(&sender, stream_id, index, last, &mut buf)
                    .map_err(|e| OpError::Refused(format!("chunk {index} did not open: {e}")))?;
            }
            got += buf.len() as u64;
            if got > length {
                return Err(OpError::Refused("more content than announced".into()));
            }
            hasher.update(&buf);
            file.write_all(&buf)
                .map_err(|e| OpError::Internal(format!("writing the content: {e}")))?;
            index += 1;
            if last {
                file.flush()
                    .map_err(|e| OpError::Internal(format!("writing the content: {e}")))?;
                if got != length {
                    return Err(OpError::Refused(format!(
                        "stream ended after {got} of {length} bytes"
                    )));
                }
                return Ok((got, hex::encode(hasher.finalize())));
            }
        }
        Err(OpError::Refused(format!(
            "stream ended after {got} of {length} bytes"
        )))
    });
    let max_frame = CHUNK + 64;
    let reading = async {
        loop {
            // A whole frame within the idle bound: a stalled sender cannot hold the stream.
            let (last, body) = timed(read_chunk_frame(input, max_frame)).await?;
            shared.metrics.bytes_received.inc_by(body.len() as u64);
            if tx.send((last, body)).await.is_err() || last {
                // The consumer stopped (its error is the answer) or the content is complete.
                return Ok(());
            }
        }
    }
    .await;
    drop(tx);
    let consumed = consumer
        .await
        .map_err(|e| OpError::Internal(format!("the receiving thread failed: {e}")))?;
    match (reading, consumed) {
        (_, Ok(done)) => Ok(done),
        (Err(e), Err(_)) => Err(e),
        (Ok(()), Err(e)) => Err(e),
    }
}

/// How long a receiver waits for the next bytes of a stream before it gives up.
const IDLE: std::time::Duration = std::time::Duration::from_secs(30);

/// A read that fails (as a timeout) after [`IDLE`] without progress.
async fn timed<T, E: From<std::io::Error>>(
    read: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(IDLE, read).await {
        Ok(r) => r,
        Err(_) => Err(E::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "no data for 30 s",
        ))),
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        io_error(e)
    }
}

/// Reads one chunk frame: `u32 BE length || flags || sealed bytes`, the length at most
/// `max_frame`.
async fn read_chunk_frame<R: AsyncRead + Unpin>(
    input: &mut R,
    max_frame: usize,
) -> Result<(bool, Vec<u8>), OpError> {
    let mut len = [0u8; 4];
    input.read_exact(&mut len).await.map_err(io_error)?;
    let len = u32::from_be_bytes(len) as usize;
    if len == 0 || len > max_frame {
        return Err(OpError::Refused(format!("bad chunk frame of {len} bytes")));
    }
    let mut flags = [0u8; 1];
    input.read_exact(&mut flags).await.map_err(io_error)?;
    let mut body = vec![0u8; len - 1];
    input.read_exact(&mut body).await.map_err(io_error)?;
    Ok((flags[0] & 1 == 1, body))
}

/// Decodes a whole delivery stream from untrusted bytes the way a receiver does: a [`Hello`]
/// frame, an [`Opening`], then chunks, opened with `key` when the opening says they are
/// sealed and `key` is given. Returns the content bytes read. For the fuzz targets and their
/// regression tests (`fuzz/`); never panics on any input.
pub fn decode_stream(bytes: &[u8], key: Option<&GroupKey>, sender: &PeerId) -> Result<u64, String> {
    futures::executor::block_on(async {
        let mut input = futures::io::Cursor::new(bytes);
        let _hello: Hello = read_frame(&mut input).await.map_err(|e| e.to_string())?;
        let opening: Opening = read_frame(&mut input).await.map_err(|e| e.to_string())?;
        let key = key.filter(|_| opening.sealed.is_some());
        let mut got = 0u64;
        for index in 0u64.. {
            let (last, mut body) = read_chunk_frame(&mut input, CHUNK + 64)
                .await
                .map_err(|e| e.to_string())?;
            if let Some(k) = key {
                k.open_chunk_in_place(sender, opening.stream_id, index, last, &mut body)
                    .map_err(|e| e.to_string())?;
            }
            got += body.len() as u64;
            if got > opening.length {
                return Err("more content than announced".into());
            }
            if last {
                return Ok(got);
            }
        }
        Ok(got)
    })
}

/// Encodes a delivery stream as [`decode_stream`] reads it (seed corpora of the fuzz targets).
pub fn encode_stream(
    pull_session: u64,
    key: Option<&GroupKey>,
    sender: &PeerId,
    content: &[u8],
    chunk: usize,
) -> Vec<u8> {
    let mut out = Vec::new();
    let mut frame = |bytes: Vec<u8>| {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(&bytes);
    };
    let stream_id = 7;
    let hello = codec::encode(&Hello::Pull {
        session: pull_session,
    })
    .unwrap_or_default();
    frame(hello);
    let opening = Opening {
        sealed: key.map(|k| (k.group().clone(), k.epoch())),
        stream_id,
        length: content.len() as u64,
    };
    frame(codec::encode(&opening).unwrap_or_default());
    let mut pieces: Vec<&[u8]> = content.chunks(chunk.max(1)).collect();
    if pieces.is_empty() {
        pieces.push(&[]);
    }
    let n = pieces.len();
    for (index, piece) in pieces.into_iter().enumerate() {
        let last = index + 1 == n;
        let mut body = piece.to_vec();
        if let Some(k) = key {
            k.seal_chunk_in_place(sender, stream_id, index as u64, last, &mut body);
        }
        let mut f = vec![u8::from(last)];
        f.extend_from_slice(&body);
        frame(f);
    }
    out
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
