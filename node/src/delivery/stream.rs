//! The wire format of a delivery stream: one [`Hello`] frame from the opener, then, from the
//! content's sender, an [`Opening`] frame and the chunks. Every frame is `u32 BE length ||
//! body`; a chunk's body is `flags || sealed bytes`, sealed with the stream id, the chunk index
//! and the last flag bound in, so that a reordered, dropped or truncated stream fails to open.
//!
//! Between chunks the sender may put control frames (flags only, no bytes): paused, resumed,
//! stopped — so that the receiver knows a silence is a pause (and waits longer than its idle
//! bound) and that an end is a stop (and reports what it got), whichever side asked.

use std::sync::Arc;
use std::time::Duration;

use cpns_directory::KeyRing as _;
use cpns_keys::{GroupId, GroupKey};
use cpns_overlay::codec;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::e2e::{self, PeerSealed};
use super::session::{Control, Party, RunState};
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
    /// A push offered to this node (`cpns content push`); the receiver answers with a
    /// [`Decision`] frame, then (if it accepted) the content follows.
    Offer(Offer),
    /// A receiver whose owner accepted an offer from the inbox collects its content.
    Collect { push_id: u64 },
    /// A receiver whose owner declined an offer says so.
    Declined { push_id: u64 },
    /// A member asks its gateway to relay this stream to another member (no direct path);
    /// the gateway answers with a [`Relayed`] frame, then copies bytes both ways.
    Forward { to: PeerId },
    /// The gateway opens a relayed stream: what follows comes from `from`.
    Forwarded { from: PeerId },
    /// 5.6.9 switching PNE: the new PNE fetches from the old one what the old one received
    /// of a session it handed over; the old PNE sends it sealed end to end.
    Handed { session: u64 },
}

/// What a push offers.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Offer {
    /// The sender's id of this push.
    pub(super) push_id: u64,
    /// The file's name.
    pub(super) name: String,
    /// Its length in bytes.
    pub(super) length: u64,
    /// The Service Group it is pushed to, if any (the content is sealed under its key).
    pub(super) group: Option<GroupId>,
}

/// A receiver's answer to an [`Offer`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Decision {
    /// Send it now.
    Accept,
    /// It waits in the receiver's inbox for its owner.
    Inbox,
    /// Not wanted.
    Decline(String),
}

/// A gateway's answer to [`Hello::Forward`].
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Relayed {
    /// The other member's stream is open; what follows is relayed.
    Open,
    /// Not relayed, and why.
    Refused(String),
}

/// The receiver's last word on a pushed file: stored, with its SHA-256 (hex).
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) sha256: String,
}

/// How the chunks of a stream are sealed.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Sealing {
    /// Not sealed: public content, under the noise channel's encryption only.
    None,
    /// Under a PN or Service Group key of this epoch.
    Group { group: GroupId, epoch: u64 },
    /// Under a stream key sealed to the receiver, signed by the sender (end to end).
    Peer(PeerSealed),
}

/// What the content sender says before the chunks.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Opening {
    /// How the chunks are sealed.
    pub(super) sealing: Sealing,
    /// Random per stream, bound into every chunk's nonce and AAD.
    pub(super) stream_id: u64,
    /// Total content length in bytes.
    pub(super) length: u64,
}

/// How a sender seals one stream: the opening to send and the key to seal chunks with.
pub(super) struct Seal {
    sealing: Sealing,
    key: Option<GroupKey>,
    stream_id: u64,
}

impl Seal {
    /// Public content: not sealed.
    pub(super) fn public() -> Seal {
        Seal {
            sealing: Sealing::None,
            key: None,
            stream_id: rand::random(),
        }
    }

    /// Under a group key.
    pub(super) fn group(key: GroupKey) -> Seal {
        Seal {
            sealing: Sealing::Group {
                group: key.group().clone(),
                epoch: key.epoch(),
            },
            key: Some(key),
            stream_id: rand::random(),
        }
    }

    /// End to end to `to`, for `length` bytes.
    pub(super) fn to_peer(ctx: &Context, to: &PeerId, length: u64) -> Result<Seal, OpError> {
        let stream_id = rand::random();
        let (key, sealed) = e2e::seal_for(&ctx.identity, to, stream_id, length)?;
        Ok(Seal {
            sealing: Sealing::Peer(sealed),
            key: Some(key),
            stream_id,
        })
    }

    /// `group`'s current key.
    pub(super) fn current(ctx: &Context, group: &GroupId) -> Result<Seal, OpError> {
        ctx.keyring
            .current(group)
            .map(Seal::group)
            .ok_or_else(|| OpError::Conflict(format!("this node holds no key of {group}")))
    }
}

/// What a receiver accepts as the sealing of a stream.
#[derive(Clone, Copy, Debug)]
pub(super) enum Want<'a> {
    /// Anything: a public service (sealed or not).
    Any,
    /// A group service's content: sealed under that group's key only.
    Group(&'a GroupId),
    /// A push: sealed under a group key this node holds, or end to end to it.
    Sealed,
    /// A relayed stream: end to end to this node only (the relay holds the PN key).
    EndToEnd,
}

/// Chunk frame flags.
const LAST: u8 = 1;
const STOP: u8 = 2;
const PAUSE: u8 = 4;
const RESUME: u8 = 8;
/// With [`STOP`] or [`PAUSE`]: the consumer asked for it.
const BY_CONSUMER: u8 = 16;
const CONTROL: u8 = STOP | PAUSE | RESUME;

/// Chunks in flight between the sealing (or opening) thread and the network task: enough to
/// keep both busy, few enough to bound memory (`PIPELINE * CHUNK`).
const PIPELINE: usize = 4;
/// Chunk buffers kept for reuse on each side of a stream: every one in flight (`PIPELINE`
/// queued, one being sealed or opened, one being written or read) comes back instead of a new
/// allocation that is zeroed before it is filled (the profile of `delivery_bench` showed that
/// zeroing as 10 % of the delivery's CPU).
const POOL: usize = PIPELINE + 2;

/// Makes `buf` `len` bytes long for a read that fills all of it: a recycled buffer is only
/// shortened (its old bytes are overwritten), a fresh one is zeroed once.
fn fit(buf: &mut Vec<u8>, len: usize) {
    if buf.len() >= len {
        buf.truncate(len);
    } else {
        buf.resize(len, 0);
    }
}

/// How long a receiver waits for the next bytes of a stream before it gives up.
#[cfg(not(test))]
const IDLE: Duration = Duration::from_secs(30);
/// Shorter in this module's unit tests, which wait for it (the integration tests use 30 s).
#[cfg(test)]
const IDLE: Duration = Duration::from_millis(500);
/// How long a session may stay paused; then the side that waits stops it.
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(600);

/// How a stream's content ended, at either side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Ended {
    /// Every byte.
    Completed,
    /// One side stopped it early.
    Stopped(Party),
}

impl Ended {
    pub(super) fn label(self) -> String {
        match self {
            Ended::Completed => "completed".into(),
            Ended::Stopped(p) => format!("stopped by the {}", p.name()),
        }
    }
}

fn io_error(e: std::io::Error) -> OpError {
    OpError::Unavailable(format!("delivery stream: {e}"))
}

async fn write_flags<W: AsyncWrite + Unpin>(out: &mut W, flags: u8) -> Result<(), OpError> {
    let mut head = [0u8; 5];
    head[..4].copy_from_slice(&1u32.to_be_bytes());
    head[4] = flags;
    out.write_all(&head).await.map_err(io_error)?;
    out.flush().await.map_err(io_error)
}

/// What the sender's loop does besides sending: obey a session's switch, take turns with the
/// other deliveries to the same consumer.
#[derive(Default)]
pub(super) struct SendOpts {
    /// The chunk size (at most [`CHUNK`]).
    pub(super) chunk: usize,
    /// The session's switch, if the delivery is a session.
    pub(super) control: Option<Arc<Control>>,
    /// The consumer's share of this node's uplink (see [`super::fair`]).
    pub(super) turn: Option<Arc<tokio::sync::Mutex<()>>>,
}

/// The sender's side of a content stream: the opening, then `length` bytes of `input` (a
/// file, or a proxied device's HTTP body as it arrives) in chunks. Reading and sealing run on
/// a blocking thread, a few chunks ahead of the network writes, so that the AEAD and the
/// transport work in parallel. An input that fails or ends early fails the stream, which then
/// ends without its last chunk (the receiver refuses it). Returns how it ended and the bytes
/// sent.
pub(super) async fn stream_file<W: AsyncWrite + Unpin, R: std::io::Read + Send + 'static>(
    ctx: &Context,
    out: &mut W,
    seal: Seal,
    mut input: R,
    length: u64,
    opts: SendOpts,
) -> Result<(Ended, u64), OpError> {
    let Seal {
        sealing,
        key,
        stream_id,
    } = seal;
    write_frame(
        out,
        &Opening {
            sealing,
            stream_id,
            length,
        },
    )
    .await?;
    let chunk = opts.chunk.clamp(1, CHUNK);
    let tag = if key.is_some() { 16 } else { 0 };
    let sender = ctx.peer_id;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<(bool, Vec<u8>), OpError>>(PIPELINE);
    let (recycle, mut recycled) = tokio::sync::mpsc::channel::<Vec<u8>>(POOL);
    let producer = tokio::task::spawn_blocking(move || {
        let mut sent = 0u64;
        let mut index = 0u64;
        loop {
            let want = ((length - sent) as usize).min(chunk);
            let mut buf = recycled
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(chunk + 16));
            fit(&mut buf, want);
            if let Err(e) = input.read_exact(&mut buf) {
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
    let mut states = opts.control.as_ref().map(|c| c.subscribe());
    let mut sent = 0u64;
    let result = async {
        let mut paused = false;
        while let Some(item) = rx.recv().await {
            if let (Some(c), Some(states)) = (&opts.control, states.as_mut()) {
                loop {
                    match c.state() {
                        RunState::Running => {
                            if paused {
                                write_flags(out, RESUME).await?;
                                paused = false;
                            }
                            break;
                        }
                        RunState::Paused(by) => {
                            if !paused {
                                write_flags(out, PAUSE | by_flag(by)).await?;
                                paused = true;
                            }
                            if tokio::time::timeout(MAX_PAUSE, states.changed())
                                .await
                                .is_err()
                            {
                                c.stop(Party::Offerer);
                            }
                        }
                        RunState::Stopped(by) => {
                            write_flags(out, STOP | by_flag(by)).await?;
                            let _ = out.close().await;
                            return Ok(Ended::Stopped(by));
                        }
                    }
                }
            }
            let (last, body) = item?;
            let frame_len = u32::try_from(body.len() + 1)
                .map_err(|_| OpError::Internal("chunk too large".into()))?;
            let mut head = [0u8; 5];
            head[..4].copy_from_slice(&frame_len.to_be_bytes());
            head[4] = if last { LAST } else { 0 };
            {
                // One chunk per turn: deliveries to the same consumer alternate.
                let _turn = match &opts.turn {
                    Some(t) => Some(t.lock().await),
                    None => None,
                };
                out.write_all(&head).await.map_err(io_error)?;
                out.write_all(&body).await.map_err(io_error)?;
            }
            let plain = (body.len() - tag) as u64;
            // Back to the reading thread, which fills it again instead of allocating and
            // zeroing a new one (a full pool drops it).
            let _ = recycle.try_send(body);
            sent += plain;
            if let Some(c) = &opts.control {
                c.add(plain);
            }
            ctx.metrics.bytes_delivered.inc_by(plain);
            if last {
                out.close().await.map_err(io_error)?;
                return Ok(Ended::Completed);
            }
        }
        Err(OpError::Internal("the content ended early".into()))
    }
    .await;
    drop(rx);
    let _ = producer.await;
    result.map(|ended| (ended, sent))
}

/// What a receiver got.
pub(super) struct Received {
    /// Bytes opened and written.
    pub(super) bytes: u64,
    /// SHA-256 of them, hex.
    pub(super) sha256: String,
    /// Whether that is all of it.
    pub(super) ended: Ended,
}

/// Whether a receiver that wants `want` accepts content sealed as `sealing`.
fn check_want(sealing: &Sealing, want: Want<'_>) -> Result<(), OpError> {
    let refuse = |why: &str| Err(OpError::Refused(why.to_string()));
    match (sealing, want) {
        (Sealing::Group { group, .. }, Want::Group(g)) if group != g => {
            refuse("the content of a group's service came sealed under another key")
        }
        (Sealing::None | Sealing::Peer(_), Want::Group(_)) => {
            refuse("the content of a group's service came without its seal")
        }
        (Sealing::None, Want::Sealed | Want::EndToEnd) => refuse("pushed content must be sealed"),
        (Sealing::Group { .. }, Want::EndToEnd) => {
            refuse("relayed content must be sealed end to end")
        }
        _ => Ok(()),
    }
}

/// Resolves the key a stream's opening names, if the receiver accepts that sealing.
fn opening_key(
    ctx: &Context,
    origin: &PeerId,
    opening: &Opening,
    want: Want<'_>,
) -> Result<Option<GroupKey>, OpError> {
    check_want(&opening.sealing, want)?;
    match &opening.sealing {
        Sealing::None => Ok(None),
        Sealing::Group { group, epoch } => ctx
            .keyring
            .by_epoch(group, *epoch)
            .map(Some)
            .ok_or_else(|| {
                OpError::Refused(format!("no key of {group} epoch {epoch}: not a member?"))
            }),
        Sealing::Peer(sealed) => e2e::open(
            &ctx.identity,
            origin,
            opening.stream_id,
            opening.length,
            sealed,
        )
        .map(Some),
    }
}

/// What the 5-byte head of a frame after the opening announces.
#[derive(Debug, PartialEq, Eq)]
enum Head {
    /// The sender stopped; the stream ends here.
    Stop(Party),
    /// The session was paused, by this party.
    Pause(Party),
    /// The session was resumed.
    Resume,
    /// A chunk of `len` sealed bytes follows.
    Chunk { len: usize, last: bool },
}

/// The flag that says who caused a stop or a pause.
fn by_flag(by: Party) -> u8 {
    if by == Party::Consumer {
        BY_CONSUMER
    } else {
        0
    }
}

/// Checks a frame head (`u32 BE length || flags`) the way every receiver does: a control
/// frame has no bytes, a chunk at least one and at most `max_frame - 1`.
fn check_head(head: [u8; 5], max_frame: usize) -> Result<Head, OpError> {
    let len = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let flags = head[4];
    if flags & CONTROL != 0 {
        if len != 1 {
            return Err(OpError::Refused("bad control frame".into()));
        }
        let by = if flags & BY_CONSUMER != 0 {
            Party::Consumer
        } else {
            Party::Offerer
        };
        return Ok(if flags & STOP != 0 {
            Head::Stop(by)
        } else if flags & PAUSE != 0 {
            Head::Pause(by)
        } else {
            Head::Resume
        });
    }
    // Length 1: an empty chunk (the content of an empty public file).
    if len == 0 || len > max_frame {
        return Err(OpError::Refused(format!("bad chunk frame of {len} bytes")));
    }
    Ok(Head::Chunk {
        len: len - 1,
        last: flags & LAST == LAST,
    })
}

/// Resolves when the session's switch says stopped.
pub(super) async fn stopped(states: Option<watch::Receiver<RunState>>) -> Party {
    let Some(mut states) = states else {
        return std::future::pending().await;
    };
    loop {
        if let RunState::Stopped(by) = *states.borrow_and_update() {
            return by;
        }
        if states.changed().await.is_err() {
            return std::future::pending().await;
        }
    }
}

/// The receiver's side: reads the opening and the chunks; opening, hashing and writing to
/// `path` run on a blocking thread while the next chunks arrive. `origin` is who sealed the
/// content (the peer, or the member a gateway relays for). With a `control`, the session can
/// be stopped locally, and the sender's pause frames are shown in it.
pub(super) async fn receive_to_file<R: AsyncRead + Unpin>(
    ctx: &Context,
    origin: &PeerId,
    input: &mut R,
    path: &std::path::Path,
    max_len: u64,
    want: Want<'_>,
    control: Option<Arc<Control>>,
) -> Result<Received, OpError> {
    receive_into(ctx, origin, input, path, false, max_len, want, control).await
}

/// [`receive_to_file`], appending to `path` when `append` (the rest of a content resumed by
/// offset, after the part already there). The hash and byte count are of this stream only.
#[allow(clippy::too_many_arguments)]
pub(super) async fn receive_into<R: AsyncRead + Unpin>(
    ctx: &Context,
    origin: &PeerId,
    input: &mut R,
    path: &std::path::Path,
    append: bool,
    max_len: u64,
    want: Want<'_>,
    control: Option<Arc<Control>>,
) -> Result<Received, OpError> {
    let opening: Opening = timed(read_frame(input), IDLE).await?;
    if opening.length > max_len {
        return Err(OpError::Refused(format!(
            "content of {} bytes is over the limit of {max_len}",
            opening.length
        )));
    }
    let key = opening_key(ctx, origin, &opening, want)?;
    let file = if append {
        std::fs::OpenOptions::new().append(true).open(path)
    } else {
        std::fs::File::create(path)
    }
    .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(bool, Vec<u8>)>(PIPELINE);
    let (recycle, mut recycled) = tokio::sync::mpsc::channel::<Vec<u8>>(POOL);
    let sender = *origin;
    let length = opening.length;
    let stream_id = opening.stream_id;
    let progress = control.clone();
    let consumer = tokio::task::spawn_blocking(move || -> Result<(u64, String, bool), OpError> {
        use std::io::Write;
        // Chunks are written as they are (up to `CHUNK` each, large enough for the kernel):
        // a buffered writer would only copy every byte once more.
        let mut file = file;
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
            if let Some(c) = &progress {
                c.add(buf.len() as u64);
            }
            let _ = recycle.try_send(buf);
            index += 1;
            if last {
                file.flush()
                    .map_err(|e| OpError::Internal(format!("writing the content: {e}")))?;
                if got != length {
                    return Err(OpError::Refused(format!(
                        "stream ended after {got} of {length} bytes"
                    )));
                }
                return Ok((got, hex::encode(hasher.finalize()), true));
            }
        }
        // The reader stopped early: what was opened so far, not complete.
        let _ = file.flush();
        Ok((got, hex::encode(hasher.finalize()), false))
    });
    let max_frame = CHUNK + 64;
    let local_stop = stopped(control.as_ref().map(|c| c.subscribe()));
    tokio::pin!(local_stop);
    let reading: Result<Ended, OpError> = async {
        let mut paused = false;
        loop {
            let idle = if paused { MAX_PAUSE } else { IDLE };
            let mut head = [0u8; 5];
            tokio::select! {
                by = &mut local_stop => return Ok(Ended::Stopped(by)),
                r = timed(input.read_exact(&mut head), idle) => r.map_err(io_error)?,
            }
            let (len, last) = match check_head(head, max_frame)? {
                Head::Stop(by) => {
                    if let Some(c) = &control {
                        c.stop(by);
                    }
                    return Ok(Ended::Stopped(by));
                }
                Head::Pause(by) => {
                    paused = true;
                    if let Some(c) = &control {
                        c.pause(by);
                    }
                    continue;
                }
                Head::Resume => {
                    paused = false;
                    if let Some(c) = &control {
                        c.resume();
                    }
                    continue;
                }
                Head::Chunk { len, last } => (len, last),
            };
            let mut body = recycled.try_recv().unwrap_or_default();
            fit(&mut body, len);
            tokio::select! {
                by = &mut local_stop => return Ok(Ended::Stopped(by)),
                r = timed(input.read_exact(&mut body), IDLE) => r.map_err(io_error)?,
            }
            ctx.metrics.bytes_received.inc_by(body.len() as u64);
            if tx.send((last, body)).await.is_err() || last {
                // The opener stopped (its error is the answer) or the content is complete.
                return Ok(Ended::Completed);
            }
        }
    }
    .await;
    drop(tx);
    let consumed = consumer
        .await
        .map_err(|e| OpError::Internal(format!("the receiving thread failed: {e}")))?;
    match (reading, consumed) {
        (Ok(Ended::Stopped(by)), Ok((bytes, sha256, _))) => Ok(Received {
            bytes,
            sha256,
            ended: Ended::Stopped(by),
        }),
        (_, Ok((bytes, sha256, true))) => Ok(Received {
            bytes,
            sha256,
            ended: Ended::Completed,
        }),
        (Err(e), _) => Err(e),
        (Ok(_), Err(e)) => Err(e),
        (Ok(_), Ok((got, _, false))) => Err(OpError::Refused(format!(
            "stream ended after {got} of {length} bytes"
        ))),
    }
}

/// A read that fails (as a timeout) after `limit` without progress.
pub(super) async fn timed<T, E: From<std::io::Error>>(
    read: impl std::future::Future<Output = Result<T, E>>,
    limit: Duration,
) -> Result<T, E> {
    match tokio::time::timeout(limit, read).await {
        Ok(r) => r,
        Err(_) => Err(E::from(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no data for {} s", limit.as_secs()),
        ))),
    }
}

impl From<std::io::Error> for OpError {
    fn from(e: std::io::Error) -> Self {
        io_error(e)
    }
}

/// Decodes a whole delivery stream from untrusted bytes the way a receiver does: a [`Hello`]
/// frame, an [`Opening`], then frames checked by the receiver's own [`check_head`], chunks
/// opened with `key` when the opening says they are sealed under a group key and `key` is
/// given (an end-to-end sealing needs the receiver's identity: its chunks are read, not
/// opened). Returns the content bytes read. For the fuzz targets and their regression tests
/// (`fuzz/`); never panics on any input.
pub fn decode_stream(bytes: &[u8], key: Option<&GroupKey>, sender: &PeerId) -> Result<u64, String> {
    futures::executor::block_on(async {
        let mut input = futures::io::Cursor::new(bytes);
        let _hello: Hello = read_frame(&mut input).await.map_err(|e| e.to_string())?;
        let opening: Opening = read_frame(&mut input).await.map_err(|e| e.to_string())?;
        let key = key.filter(|_| matches!(opening.sealing, Sealing::Group { .. }));
        let mut got = 0u64;
        let mut index = 0u64;
        loop {
            let mut head = [0u8; 5];
            input
                .read_exact(&mut head)
                .await
                .map_err(|e| e.to_string())?;
            let (len, last) = match check_head(head, CHUNK + 64).map_err(|e| e.to_string())? {
                Head::Stop(_) => return Ok(got),
                Head::Pause(_) | Head::Resume => continue,
                Head::Chunk { len, last } => (len, last),
            };
            let mut body = vec![0u8; len];
            input
                .read_exact(&mut body)
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
            index += 1;
        }
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
    let sealing = match key {
        Some(k) => Sealing::Group {
            group: k.group().clone(),
            epoch: k.epoch(),
        },
        None => Sealing::None,
    };
    let opening = Opening {
        sealing,
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
        let mut f = vec![if last { LAST } else { 0 }];
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

/// [`read_frame`] within the idle bound.
pub(super) async fn read_frame_timed<R: AsyncRead + Unpin, T: serde::de::DeserializeOwned>(
    input: &mut R,
) -> Result<T, OpError> {
    timed(read_frame(input), IDLE).await
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn receivers_accept_only_the_sealing_they_want() {
        let pn = GroupId("pn-1".into());
        let other = GroupId("sg-2".into());
        let group = |g: &GroupId| Sealing::Group {
            group: g.clone(),
            epoch: 0,
        };
        let id = cpns_keys::Identity::generate();
        let to = cpns_keys::Identity::generate().peer_id();
        let (_, sealed) = e2e::seal_for(&id, &to, 1, 10).unwrap();
        let peer = Sealing::Peer(sealed);
        // A group's service: under that group's key only.
        assert!(check_want(&group(&pn), Want::Group(&pn)).is_ok());
        assert!(check_want(&group(&other), Want::Group(&pn)).is_err());
        assert!(check_want(&Sealing::None, Want::Group(&pn)).is_err());
        assert!(check_want(&peer, Want::Group(&pn)).is_err());
        // A push: sealed, one way or the other.
        assert!(check_want(&Sealing::None, Want::Sealed).is_err());
        assert!(check_want(&group(&pn), Want::Sealed).is_ok());
        assert!(check_want(&peer, Want::Sealed).is_ok());
        // Relayed by the gateway, which holds the PN key: end to end only.
        assert!(check_want(&group(&pn), Want::EndToEnd).is_err());
        assert!(check_want(&Sealing::None, Want::EndToEnd).is_err());
        assert!(check_want(&peer, Want::EndToEnd).is_ok());
        // Public services: anything.
        assert!(check_want(&Sealing::None, Want::Any).is_ok());
    }

    /// A node's context over a temporary directory (its overlay is not driven: the receiver
    /// under test only reads the stream handed to it).
    async fn context(dir: &std::path::Path) -> Context {
        let identity = cpns_keys::Identity::generate();
        let (client, _events, _event_loop) =
            cpns_overlay::new(cpns_overlay::Config::default(), &identity)
                .await
                .unwrap();
        let store = crate::store::Store::open(&dir.join("db")).unwrap();
        let keyring = Arc::new(crate::keyring::KeyRing::open(&store).unwrap());
        Context::new(crate::context::Inner {
            config: Arc::new(crate::config::Config::default()),
            peer_id: identity.peer_id(),
            identity,
            client,
            trace: Arc::new(crate::trace::Trace::new(16)),
            metrics: Arc::default(),
            cancel: tokio_util::sync::CancellationToken::new(),
            started: std::time::Instant::now(),
            store,
            keyring,
            credentials: watch::channel(None).1,
        })
    }

    /// The bytes of an opening frame followed by `rest`.
    async fn opening(sealing: Sealing, length: u64, rest: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        write_frame(
            &mut out,
            &Opening {
                sealing,
                stream_id: 7,
                length,
            },
        )
        .await
        .unwrap();
        out.extend_from_slice(rest);
        out
    }

    /// The 5-byte head of a chunk of `n` bytes (its length counts the flags byte).
    fn write_chunk_head(out: &mut Vec<u8>, n: u32, last: bool) {
        out.extend_from_slice(&(n + 1).to_be_bytes());
        out.push(if last { LAST } else { 0 });
    }

    /// Bytes, then silence without an end (an offerer that stops sending and holds on).
    struct ThenSilent(futures::io::Cursor<Vec<u8>>);

    impl AsyncRead for ThenSilent {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
            buf: &mut [u8],
        ) -> std::task::Poll<std::io::Result<usize>> {
            match std::pin::Pin::new(&mut self.0).poll_read(cx, buf) {
                std::task::Poll::Ready(Ok(0)) => std::task::Poll::Pending,
                other => other,
            }
        }
    }

    /// Issue 14, a consumer's fetch is unbounded: the consumer takes no more than the offerer
    /// announced (before the fix it passed `u64::MAX`), takes a group service's content only
    /// sealed under that group's key, and gives up on an offerer that goes silent after
    /// [`IDLE`] (30 s; half a second in these tests), where the chunk loop had no timeout.
    #[tokio::test]
    async fn a_consumer_takes_the_announced_length_sealed_content_and_no_silence() {
        let dir = tempfile::tempdir().unwrap();
        let ctx = context(dir.path()).await;
        let origin = cpns_keys::Identity::generate().peer_id();
        let part = dir.path().join("content.part");
        let receive = |bytes: Vec<u8>, max_len: u64, group: Option<GroupId>| {
            let (ctx, part) = (ctx.clone(), part.clone());
            async move {
                let want = match &group {
                    Some(g) => Want::Group(g),
                    None => Want::Any,
                };
                let mut input = ThenSilent(futures::io::Cursor::new(bytes));
                let started = tokio::time::Instant::now();
                let r = tokio::time::timeout(
                    Duration::from_secs(20),
                    receive_to_file(&ctx, &origin, &mut input, &part, max_len, want, None),
                )
                .await
                .expect("the receiver still waits after 20 s");
                (r, started.elapsed())
            }
        };

        // More than the invocation's answer announced: refused before anything is written.
        let (r, _) = receive(opening(Sealing::None, 1 << 40, &[]).await, 1000, None).await;
        let e = r.err().expect("refused").to_string();
        assert!(e.contains("over the limit of 1000"), "{e}");

        // Within it, but more chunk bytes than the opening said: refused.
        let mut chunk = Vec::new();
        write_chunk_head(&mut chunk, 20, true);
        chunk.extend_from_slice(&[1u8; 20]);
        let (r, _) = receive(opening(Sealing::None, 10, &chunk).await, 1000, None).await;
        let e = r.err().expect("refused").to_string();
        assert!(e.contains("more content than announced"), "{e}");

        // A group's service, its content unsealed: refused.
        let pn = GroupId("pn-1".into());
        let (r, _) = receive(opening(Sealing::None, 10, &[]).await, 1000, Some(pn)).await;
        assert!(r.is_err(), "unsealed content taken for a group's service");

        // Silent before the opening, and after a first chunk: given up after IDLE each time.
        let (r, waited) = receive(Vec::new(), 1000, None).await;
        assert!(r.is_err() && waited >= IDLE, "{waited:?}");
        let mut first = Vec::new();
        write_chunk_head(&mut first, 4, false);
        first.extend_from_slice(&[2u8; 4]);
        let (r, waited) = receive(opening(Sealing::None, 100, &first).await, 1000, None).await;
        assert!(r.is_err() && waited >= IDLE, "{waited:?}");
    }
}
