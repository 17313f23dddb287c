//! The one byte encoding this crate signs and parses.
//!
//! Signatures must be over bytes that every implementation produces identically, so signed
//! objects are never encoded with a general-purpose serializer (whose output may change between
//! versions). Instead a tiny, explicit format:
//!
//! * a leading `u8` format version,
//! * integers as big-endian `u64`,
//! * variable-length fields as a big-endian `u16` length followed by the bytes, counts as `u32`,
//! * fixed-size fields (keys, signatures) as raw bytes.
//!
//! The [`Reader`] checks every length against the remaining input *and* a per-field maximum
//! before touching the bytes, and returns [`DecodeError`] instead of panicking, so it can be
//! fed anything a remote peer sends.

use std::fmt;

/// Why a canonical encoding could not be decoded. Converted by callers into their own
/// operation's error (`CredentialError::Malformed`, `AeadError::Malformed`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The input ended in the middle of a field.
    Truncated {
        field: &'static str,
        need: usize,
        have: usize,
    },
    /// A length prefix exceeds the field's maximum.
    TooLong {
        field: &'static str,
        len: usize,
        max: usize,
    },
    /// The leading version byte is not one we understand.
    BadVersion { found: u8, expected: u8 },
    /// A text field is not UTF-8.
    BadUtf8 { field: &'static str },
    /// Bytes are left over after the last field.
    TrailingBytes { count: usize },
    /// A field decoded but its value is invalid (e.g. unknown mode bits, bad PeerId).
    Invalid { field: &'static str, reason: String },
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DecodeError::Truncated { field, need, have } => {
                write!(f, "truncated {field}: need {need} bytes, have {have}")
            }
            DecodeError::TooLong { field, len, max } => {
                write!(f, "{field} too long: {len} > {max}")
            }
            DecodeError::BadVersion { found, expected } => {
                write!(f, "unknown version {found} (expected {expected})")
            }
            DecodeError::BadUtf8 { field } => write!(f, "{field} is not utf-8"),
            DecodeError::TrailingBytes { count } => write!(f, "{count} trailing bytes"),
            DecodeError::Invalid { field, reason } => write!(f, "invalid {field}: {reason}"),
        }
    }
}

/// Appends canonical fields to a buffer.
///
/// Length prefixes saturate instead of panicking when a field is longer than the prefix can
/// express. Such an encoding is never ambiguous with a valid one, because every reader caps the
/// field far below the prefix's maximum and so rejects it (and signers check the same limits
/// before verifying).
#[derive(Debug)]
pub(crate) struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    /// Starts an encoding with its format version byte; `capacity` avoids regrowing.
    pub(crate) fn with_capacity(version: u8, capacity: usize) -> Self {
        let mut buf = Vec::with_capacity(capacity);
        buf.push(version);
        Writer { buf }
    }

    /// Starts an encoding with raw bytes (a domain tag) before the version byte.
    pub(crate) fn with_prefix(prefix: &[u8], version: u8) -> Self {
        let mut buf = Vec::with_capacity(prefix.len() + 64);
        buf.extend_from_slice(prefix);
        buf.push(version);
        Writer { buf }
    }

    pub(crate) fn u8(&mut self, v: u8) -> &mut Self {
        self.buf.push(v);
        self
    }

    pub(crate) fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    pub(crate) fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_be_bytes());
        self
    }

    /// Raw bytes of a size both sides know (keys, signatures, nonces).
    pub(crate) fn fixed(&mut self, bytes: &[u8]) -> &mut Self {
        self.buf.extend_from_slice(bytes);
        self
    }

    /// A `u16`-length-prefixed field (names, PeerIds).
    pub(crate) fn bytes16(&mut self, bytes: &[u8]) -> &mut Self {
        let len = u16::try_from(bytes.len()).unwrap_or(u16::MAX);
        self.buf.extend_from_slice(&len.to_be_bytes());
        self.buf.extend_from_slice(bytes);
        self
    }

    pub(crate) fn finish(self) -> Vec<u8> {
        self.buf
    }
}

/// Reads canonical fields from untrusted input, never panicking.
#[derive(Debug)]
pub(crate) struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    /// Starts reading and checks the leading version byte.
    pub(crate) fn new(input: &'a [u8], version: u8) -> Result<Self, DecodeError> {
        let mut r = Reader { rest: input };
        let found = r.u8("version")?;
        if found != version {
            return Err(DecodeError::BadVersion {
                found,
                expected: version,
            });
        }
        Ok(r)
    }

    fn take(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], DecodeError> {
        if self.rest.len() < n {
            return Err(DecodeError::Truncated {
                field,
                need: n,
                have: self.rest.len(),
            });
        }
        let (head, tail) = self.rest.split_at(n);
        self.rest = tail;
        Ok(head)
    }

    pub(crate) fn u8(&mut self, field: &'static str) -> Result<u8, DecodeError> {
        Ok(self.fixed::<1>(field)?[0])
    }

    pub(crate) fn u64(&mut self, field: &'static str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.fixed(field)?))
    }

    pub(crate) fn fixed<const N: usize>(
        &mut self,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        let bytes = self.take(field, N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    /// A `u16`-length-prefixed field of at most `max` bytes.
    pub(crate) fn bytes16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        let len = usize::from(u16::from_be_bytes(self.fixed(field)?));
        self.bounded(field, len, max)
    }

    fn bounded(
        &mut self,
        field: &'static str,
        len: usize,
        max: usize,
    ) -> Result<&'a [u8], DecodeError> {
        if len > max {
            return Err(DecodeError::TooLong { field, len, max });
        }
        self.take(field, len)
    }

    /// A `u16`-length-prefixed UTF-8 string of at most `max` bytes.
    pub(crate) fn str16(
        &mut self,
        field: &'static str,
        max: usize,
    ) -> Result<&'a str, DecodeError> {
        let bytes = self.bytes16(field, max)?;
        std::str::from_utf8(bytes).map_err(|_| DecodeError::BadUtf8 { field })
    }

    /// Ends decoding; trailing bytes are an error so that one object has exactly one encoding.
    pub(crate) fn finish(self) -> Result<(), DecodeError> {
        if self.rest.is_empty() {
            Ok(())
        } else {
            Err(DecodeError::TrailingBytes {
                count: self.rest.len(),
            })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::Rng;

    fn sample() -> Vec<u8> {
        let mut w = Writer::with_capacity(1, 64);
        w.u8(7)
            .u64(u64::MAX)
            .fixed(&[1, 2, 3])
            .bytes16(b"hello")
            .bytes16(b"world!");
        w.finish()
    }

    type Decoded = (u8, u64, [u8; 3], String, Vec<u8>);

    fn decode(b: &[u8]) -> Result<Decoded, DecodeError> {
        let mut r = Reader::new(b, 1)?;
        let a = r.u8("a")?;
        let c = r.u64("c")?;
        let d = r.fixed::<3>("d")?;
        let e = r.str16("e", 16)?.to_owned();
        let f = r.bytes16("f", 16)?.to_vec();
        r.finish()?;
        Ok((a, c, d, e, f))
    }

    #[test]
    fn round_trip() {
        let (a, c, d, e, f) = decode(&sample()).unwrap();
        assert_eq!((a, c, d), (7, u64::MAX, [1, 2, 3]));
        assert_eq!(e, "hello");
        assert_eq!(f, b"world!");
    }

    #[test]
    fn every_prefix_is_an_error() {
        let full = sample();
        for len in 0..full.len() {
            let err = decode(&full[..len]).unwrap_err();
            assert!(
                matches!(err, DecodeError::Truncated { .. }),
                "len {len}: {err:?}"
            );
        }
    }

    #[test]
    fn trailing_bytes_and_version_and_limits() {
        let mut b = sample();
        b.push(0);
        assert_eq!(
            decode(&b).unwrap_err(),
            DecodeError::TrailingBytes { count: 1 }
        );

        let mut b = sample();
        b[0] = 2;
        assert_eq!(
            decode(&b).unwrap_err(),
            DecodeError::BadVersion {
                found: 2,
                expected: 1
            }
        );

        let mut w = Writer::with_capacity(1, 64);
        w.bytes16(&[b'x'; 17]);
        let b = w.finish();
        let mut r = Reader::new(&b, 1).unwrap();
        assert_eq!(
            r.str16("name", 16).unwrap_err(),
            DecodeError::TooLong {
                field: "name",
                len: 17,
                max: 16
            }
        );

        let mut w = Writer::with_capacity(1, 64);
        w.bytes16(&[0xff, 0xfe]);
        let b = w.finish();
        let mut r = Reader::new(&b, 1).unwrap();
        assert_eq!(
            r.str16("name", 16).unwrap_err(),
            DecodeError::BadUtf8 { field: "name" }
        );
    }

    #[test]
    fn huge_length_prefix_is_rejected_before_reading() {
        let mut b = vec![1u8];
        b.extend_from_slice(&u16::MAX.to_be_bytes());
        let mut r = Reader::new(&b, 1).unwrap();
        assert_eq!(
            r.bytes16("f", 4096).unwrap_err(),
            DecodeError::TooLong {
                field: "f",
                len: 65535,
                max: 4096
            }
        );
    }

    #[test]
    fn random_garbage_never_panics() {
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(1);
        for _ in 0..1000 {
            let len = usize::from(rng.next_u32() as u8);
            let mut b = vec![0u8; len];
            rng.fill_bytes(&mut b);
            // Random bytes are overwhelmingly malformed; all that matters is no panic.
            let _ = decode(&b);
        }
    }
}
