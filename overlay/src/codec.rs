//! The one place where bytes become values: every encode and decode of the project goes
//! through here, so that the serializer (bincode 2.0.1, whose development has ended) can be
//! swapped in one file.
//!
//! Untrusted bytes are always decoded with a size limit. A frame on the wire is
//! `u32 BE length || u16 BE wire version || bincode(Envelope)`; the length covers the version
//! and the body.

use std::io;
use std::sync::Arc;

use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::StreamProtocol;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::protocol::{Envelope, WIRE_VERSION};
use crate::stats::Stats;

/// Default maximum size of a decoded frame or value: 1 MiB.
pub const DEFAULT_MAX_FRAME: usize = 1024 * 1024;

/// The hard upper bound of any limit.
const HARD_LIMIT: usize = 16 * 1024 * 1024;

/// The limit bincode itself applies while decoding: what length prefixes inside the input may
/// claim (it allocates a string or byte buffer for its claimed length before reading it).
/// bincode takes it as a constant, so a decode uses the smallest of these tiers that is at
/// least its own `max`: a 1 MiB frame can claim at most 1 MiB, not 16 MiB (issue 14).
const LIMIT_TIERS: [usize; 4] = [4 * 1024, 64 * 1024, DEFAULT_MAX_FRAME, HARD_LIMIT];

type Config<const L: usize> = bincode::config::Configuration<
    bincode::config::BigEndian,
    bincode::config::Varint,
    bincode::config::Limit<L>,
>;

fn config<const L: usize>() -> Config<L> {
    bincode::config::standard()
        .with_big_endian()
        .with_variable_int_encoding()
        .with_limit::<L>()
}

fn decode_limited<T: DeserializeOwned, const L: usize>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    bincode::serde::decode_from_slice(bytes, config::<L>())
}

/// The bincode limit used for a decode bounded by `max`.
pub fn inner_limit(max: usize) -> usize {
    LIMIT_TIERS
        .into_iter()
        .find(|t| *t >= max)
        .unwrap_or(HARD_LIMIT)
}

/// Why bytes could not be decoded.
#[non_exhaustive]
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum CodecError {
    /// The input is longer than the limit.
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    Oversize {
        /// The announced or actual length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The input ended early.
    #[error("truncated input: {0}")]
    Truncated(String),
    /// The input is not a valid encoding.
    #[error("malformed input: {0}")]
    Garbage(String),
    /// The frame's wire version is not one this build speaks.
    #[error("unknown wire version {found} (this node speaks {WIRE_VERSION})")]
    UnknownVersion {
        /// The version found.
        found: u16,
    },
    /// Bytes were left over after the value.
    #[error("{0} trailing bytes after the value")]
    TrailingBytes(usize),
    /// Encoding failed (a value too large for the limit).
    #[error("encoding failed: {0}")]
    Encode(String),
}

impl From<CodecError> for io::Error {
    fn from(e: CodecError) -> Self {
        io::Error::new(io::ErrorKind::InvalidData, e)
    }
}

/// Encodes a value.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, CodecError> {
    bincode::serde::encode_to_vec(value, config::<HARD_LIMIT>())
        .map_err(|e| CodecError::Encode(e.to_string()))
}

/// Decodes a value from untrusted bytes no longer than `max`; the whole input must be used.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], max: usize) -> Result<T, CodecError> {
    if bytes.len() > max.min(HARD_LIMIT) {
        return Err(CodecError::Oversize {
            len: bytes.len(),
            max: max.min(HARD_LIMIT),
        });
    }
    let limit = inner_limit(max);
    let decoded = match limit {
        l if l == LIMIT_TIERS[0] => decode_limited::<T, { LIMIT_TIERS[0] }>(bytes),
        l if l == LIMIT_TIERS[1] => decode_limited::<T, { LIMIT_TIERS[1] }>(bytes),
        l if l == LIMIT_TIERS[2] => decode_limited::<T, { LIMIT_TIERS[2] }>(bytes),
        _ => decode_limited::<T, HARD_LIMIT>(bytes),
    };
    let (value, used) = decoded.map_err(|e| match e {
        bincode::error::DecodeError::UnexpectedEnd { .. } => CodecError::Truncated(e.to_string()),
        bincode::error::DecodeError::LimitExceeded => CodecError::Oversize {
            len: bytes.len(),
            max: max.min(HARD_LIMIT),
        },
        other => CodecError::Garbage(other.to_string()),
    })?;
    if used != bytes.len() {
        return Err(CodecError::TrailingBytes(bytes.len() - used));
    }
    Ok(value)
}

/// Encodes an envelope as a frame body: the wire version, then the envelope.
pub fn encode_envelope(env: &Envelope) -> Result<Vec<u8>, CodecError> {
    let body = encode(env)?;
    let mut out = Vec::with_capacity(2 + body.len());
    out.extend_from_slice(&WIRE_VERSION.to_be_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// Decodes a frame body made by [`encode_envelope`].
pub fn decode_envelope(bytes: &[u8], max: usize) -> Result<Envelope, CodecError> {
    let Some((version, body)) = bytes.split_first_chunk::<2>() else {
        return Err(CodecError::Truncated(
            "frame shorter than its version".into(),
        ));
    };
    let found = u16::from_be_bytes(*version);
    if found != WIRE_VERSION {
        return Err(CodecError::UnknownVersion { found });
    }
    decode(body, max)
}

/// Bytes of inbound frames being read at once, shared by every connection of a node: what
/// streams that announce a frame and then dribble it (or never send it) can hold, whoever
/// sends them and whether or not they were admitted (issue 14: 256 streams x 1 MiB per
/// connection). A frame that finds no room is refused (`busy`) and its stream dropped.
#[derive(Clone, Debug)]
pub struct FrameBudget {
    left: Arc<std::sync::atomic::AtomicUsize>,
}

/// Bytes reserved from a [`FrameBudget`]; given back when dropped.
#[derive(Debug)]
pub struct FrameReservation {
    left: Arc<std::sync::atomic::AtomicUsize>,
    bytes: usize,
}

impl Drop for FrameReservation {
    fn drop(&mut self) {
        self.left
            .fetch_add(self.bytes, std::sync::atomic::Ordering::AcqRel);
    }
}

impl FrameBudget {
    /// A budget of `bytes`.
    pub fn new(bytes: usize) -> Self {
        Self {
            left: Arc::new(std::sync::atomic::AtomicUsize::new(bytes)),
        }
    }

    /// Reserves `bytes`, or `None` if that much is not left.
    pub fn reserve(&self, bytes: usize) -> Option<FrameReservation> {
        use std::sync::atomic::Ordering;
        self.left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .ok()
            .map(|_| FrameReservation {
                left: self.left.clone(),
                bytes,
            })
    }

    /// Bytes not reserved now.
    pub fn left(&self) -> usize {
        self.left.load(std::sync::atomic::Ordering::Acquire)
    }
}

/// The default [`FrameBudget`] of a node: 64 MiB.
pub const DEFAULT_FRAME_BUDGET: usize = 64 * 1024 * 1024;

/// Reads one length-prefixed frame, refusing lengths over `max` before reading them. The
/// buffer grows with the bytes that actually arrive, so a frame announced large but never
/// sent costs nothing.
pub async fn read_frame<R: AsyncRead + Unpin>(io: &mut R, max: usize) -> io::Result<Vec<u8>> {
    read_frame_within(io, max, None).await
}

/// [`read_frame`], reserving the frame's announced length from `budget` while it is read.
pub async fn read_frame_within<R: AsyncRead + Unpin>(
    io: &mut R,
    max: usize,
    budget: Option<&FrameBudget>,
) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await.map_err(|e| {
        if e.kind() == io::ErrorKind::UnexpectedEof {
            io::Error::from(CodecError::Truncated("frame length".into()))
        } else {
            e
        }
    })?;
    let len = u32::from_be_bytes(len) as usize;
    if len > max {
        return Err(CodecError::Oversize { len, max }.into());
    }
    let _reserved = match budget {
        Some(b) => Some(b.reserve(len).ok_or_else(|| {
            io::Error::new(io::ErrorKind::OutOfMemory, "inbound frame budget exhausted")
        })?),
        None => None,
    };
    let mut buf = Vec::with_capacity(len.min(64 * 1024));
    let read = (&mut *io).take(len as u64).read_to_end(&mut buf).await?;
    if read < len {
        return Err(CodecError::Truncated(format!("frame of {len} bytes")).into());
    }
    Ok(buf)
}

/// Writes one length-prefixed frame.
pub async fn write_frame<W: AsyncWrite + Unpin>(io: &mut W, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::from(CodecError::Encode("frame over 4 GiB".into())))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.flush().await
}

/// The request-response codec for `/cpns/1.0.0` and `/cpns/auth/1.0.0`: one envelope per
/// direction, each a frame, size-limited.
///
/// Inbound frames that cannot be read are counted in [`Stats`] by reason here, because
/// request-response drops such streams without telling the behaviour.
#[derive(Clone, Debug)]
pub struct CpnsCodec {
    max_frame: usize,
    stats: Option<Arc<Stats>>,
    budget: Option<FrameBudget>,
}

impl CpnsCodec {
    /// A codec that refuses frames over `max_frame` bytes.
    pub fn new(max_frame: usize) -> Self {
        Self {
            max_frame: max_frame.min(HARD_LIMIT),
            stats: None,
            budget: None,
        }
    }

    /// Reads every inbound frame within `budget` (shared by every clone of this codec).
    pub fn with_budget(mut self, budget: FrameBudget) -> Self {
        self.budget = Some(budget);
        self
    }

    /// Counts refused inbound frames in `stats`.
    pub fn with_stats(mut self, stats: Arc<Stats>) -> Self {
        self.stats = Some(stats);
        self
    }

    async fn read<T: AsyncRead + Unpin + Send>(&self, io: &mut T) -> io::Result<Envelope> {
        let result = async {
            let frame = read_frame_within(io, self.max_frame, self.budget.as_ref()).await?;
            Ok(decode_envelope(&frame, self.max_frame)?)
        }
        .await;
        if let (Err(e), Some(stats)) = (&result, &self.stats) {
            stats.reject_message(io_error_reason(e));
        }
        result
    }

    async fn write<T: AsyncWrite + Unpin + Send>(
        &self,
        io: &mut T,
        env: Envelope,
    ) -> io::Result<()> {
        let bytes = encode_envelope(&env)?;
        if bytes.len() > self.max_frame {
            return Err(CodecError::Oversize {
                len: bytes.len(),
                max: self.max_frame,
            }
            .into());
        }
        write_frame(io, &bytes).await?;
        io.close().await
    }
}

impl Default for CpnsCodec {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_FRAME)
    }
}

impl libp2p::request_response::Codec for CpnsCodec {
    type Protocol = StreamProtocol;
    type Request = Envelope;
    type Response = Envelope;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Envelope>
    where
        T: AsyncRead + Unpin + Send,
    {
        self.read(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Envelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write(io, req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Envelope,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        self.write(io, res).await
    }
}

/// Longest credential frame on `/cpns/cred/1.0.0` (an entity credential is about 200 bytes;
/// `cpns_keys` refuses more than 4 KiB).
pub const MAX_CREDENTIAL_FRAME: usize = 4096;

/// The codec of the credential exchange (`/cpns/cred/1.0.0`): one opaque byte string per
/// direction (the sender's encoded entity credential, or nothing), `u16 BE length || bytes`.
/// The overlay does not interpret it; the [`crate::RecordValidator`] does.
#[derive(Clone, Copy, Debug, Default)]
pub struct CredentialCodec;

async fn read_credential<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    io.read_exact(&mut len).await?;
    let len = u16::from_be_bytes(len) as usize;
    if len > MAX_CREDENTIAL_FRAME {
        return Err(CodecError::Oversize {
            len,
            max: MAX_CREDENTIAL_FRAME,
        }
        .into());
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_credential<T: AsyncWrite + Unpin + Send>(io: &mut T, b: &[u8]) -> io::Result<()> {
    if b.len() > MAX_CREDENTIAL_FRAME {
        return Err(CodecError::Oversize {
            len: b.len(),
            max: MAX_CREDENTIAL_FRAME,
        }
        .into());
    }
    io.write_all(&(b.len() as u16).to_be_bytes()).await?;
    io.write_all(b).await?;
    io.close().await
}

impl libp2p::request_response::Codec for CredentialCodec {
    type Protocol = StreamProtocol;
    type Request = Vec<u8>;
    type Response = Vec<u8>;

    async fn read_request<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_credential(io).await
    }

    async fn read_response<T>(&mut self, _: &StreamProtocol, io: &mut T) -> io::Result<Vec<u8>>
    where
        T: AsyncRead + Unpin + Send,
    {
        read_credential(io).await
    }

    async fn write_request<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_credential(io, &req).await
    }

    async fn write_response<T>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: Vec<u8>,
    ) -> io::Result<()>
    where
        T: AsyncWrite + Unpin + Send,
    {
        write_credential(io, &res).await
    }
}

/// Describes an I/O error from the codec for metrics: `oversize`, `truncated`, `garbage`,
/// `unknown_version`, or `io`.
pub fn io_error_reason(e: &io::Error) -> &'static str {
    match e
        .get_ref()
        .and_then(|inner| inner.downcast_ref::<CodecError>())
    {
        Some(CodecError::Oversize { .. }) => "oversize",
        Some(CodecError::Truncated(_)) => "truncated",
        Some(CodecError::Garbage(_)) | Some(CodecError::TrailingBytes(_)) => "garbage",
        Some(CodecError::UnknownVersion { .. }) => "unknown_version",
        Some(CodecError::Encode(_)) => "encode",
        None if e.kind() == io::ErrorKind::UnexpectedEof => "truncated",
        None if e.kind() == io::ErrorKind::OutOfMemory => "busy",
        None => "io",
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::protocol::{Message, PnMessage};

    fn ping() -> Envelope {
        Envelope::new(7, Message::Pn(PnMessage::Ping { nonce: 42 }))
    }

    #[test]
    fn envelope_round_trip() {
        let bytes = encode_envelope(&ping()).unwrap();
        assert_eq!(decode_envelope(&bytes, DEFAULT_MAX_FRAME).unwrap(), ping());
    }

    #[test]
    fn unknown_version_is_refused() {
        let mut bytes = encode_envelope(&ping()).unwrap();
        bytes[1] = 99;
        assert_eq!(
            decode_envelope(&bytes, DEFAULT_MAX_FRAME),
            Err(CodecError::UnknownVersion { found: 99 })
        );
    }

    #[test]
    fn every_truncation_is_an_error() {
        let bytes = encode_envelope(&ping()).unwrap();
        for n in 0..bytes.len() {
            let r = decode_envelope(&bytes[..n], DEFAULT_MAX_FRAME);
            assert!(r.is_err(), "prefix of {n} bytes decoded");
        }
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut bytes = encode_envelope(&ping()).unwrap();
        bytes.push(0);
        assert_eq!(
            decode_envelope(&bytes, DEFAULT_MAX_FRAME),
            Err(CodecError::TrailingBytes(1))
        );
    }

    #[test]
    fn oversize_is_refused_before_decoding() {
        let big = vec![0u8; 2048];
        assert!(matches!(
            decode::<Vec<u8>>(&big, 1024),
            Err(CodecError::Oversize {
                len: 2048,
                max: 1024
            })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        // A deterministic pseudo-random stream (xorshift), so that a failure reproduces.
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for len in 0..2000usize {
            let mut buf = Vec::with_capacity(len % 300);
            for _ in 0..(len % 300) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            if buf.len() >= 2 {
                buf[0] = 0;
                buf[1] = 1;
            }
            let _ = decode_envelope(&buf, DEFAULT_MAX_FRAME);
        }
    }

    #[test]
    fn a_length_prefix_cannot_claim_more_than_the_frame_limit() {
        // A string claiming 2 MiB inside a 1 MiB-limited decode: refused as oversize by the
        // inner limit, before any buffer of that size exists (it was 16 MiB: issue 14).
        let mut bytes = vec![0xFCu8];
        bytes.extend_from_slice(&(2u32 * 1024 * 1024).to_be_bytes());
        bytes.extend_from_slice(&[b'a'; 16]);
        assert!(matches!(
            decode::<String>(&bytes, DEFAULT_MAX_FRAME),
            Err(CodecError::Oversize { .. })
        ));
        assert_eq!(inner_limit(DEFAULT_MAX_FRAME), DEFAULT_MAX_FRAME);
        assert_eq!(inner_limit(100), 4096);
        assert_eq!(inner_limit(usize::MAX), HARD_LIMIT);
        // Within the limit it decodes.
        let ok = encode(&"x".repeat(5000)).unwrap();
        assert_eq!(decode::<String>(&ok, 64 * 1024).unwrap().len(), 5000);
        assert!(matches!(
            decode::<String>(&ok, 4096),
            Err(CodecError::Oversize { .. })
        ));
    }

    #[test]
    fn huge_length_prefix_inside_a_small_frame_is_refused() {
        // A varint length prefix claiming 2^32 bytes, followed by almost nothing.
        let bytes = [0xFC, 1, 0, 0, 0, 1, 2];
        assert!(decode::<Vec<u8>>(&bytes, DEFAULT_MAX_FRAME).is_err());
        assert!(decode::<String>(&bytes, DEFAULT_MAX_FRAME).is_err());
    }

    #[tokio::test]
    async fn frames_are_read_within_the_shared_budget() {
        let budget = FrameBudget::new(2 * 1024 * 1024);
        // A frame being read holds its announced length...
        let held = budget.reserve(1536 * 1024).unwrap();
        let mut frame = (1024u32 * 1024).to_be_bytes().to_vec();
        frame.extend(vec![7u8; 1024 * 1024]);
        let mut data: &[u8] = &frame;
        let e = read_frame_within(
            &mut futures::io::AllowStdIo::new(&mut data),
            DEFAULT_MAX_FRAME,
            Some(&budget),
        )
        .await
        .unwrap_err();
        assert_eq!(io_error_reason(&e), "busy");
        // ... and gives it back when done.
        drop(held);
        let mut data: &[u8] = &frame;
        let got = read_frame_within(
            &mut futures::io::AllowStdIo::new(&mut data),
            DEFAULT_MAX_FRAME,
            Some(&budget),
        )
        .await
        .unwrap();
        assert_eq!(got.len(), 1024 * 1024);
        assert_eq!(budget.left(), 2 * 1024 * 1024);
        // An announced length that never arrives is truncated, not a 1 MiB buffer.
        let mut short: &[u8] = &[0, 16, 0, 0, 1, 2, 3];
        let e = read_frame(
            &mut futures::io::AllowStdIo::new(&mut short),
            DEFAULT_MAX_FRAME,
        )
        .await
        .unwrap_err();
        assert_eq!(io_error_reason(&e), "truncated");
    }

    #[tokio::test]
    async fn frame_reader_refuses_announced_oversize() {
        let mut data: &[u8] = &[0xFF, 0xFF, 0xFF, 0xFF, 1, 2, 3];
        let e = read_frame(&mut futures::io::AllowStdIo::new(&mut data), 1024)
            .await
            .unwrap_err();
        assert_eq!(io_error_reason(&e), "oversize");
    }
}
