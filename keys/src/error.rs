//! One error enum per kind of operation, so callers can match on what went wrong without
//! parsing strings. Every enum is `#[non_exhaustive]`: new failure modes can be added without
//! breaking downstream `match`es.

use std::path::PathBuf;

use libp2p_identity::PeerId;

use crate::{GroupId, Mode, Modes, UnixTime};

/// Failures of public-key operations: signature checks and key parsing.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum KeyError {
    /// The signature does not verify under this key for this message.
    #[error("bad signature")]
    BadSignature,
    /// The PeerId does not embed an ed25519 key (e.g. an RSA PeerId, which is a SHA-256 hash
    /// of the key), so no CPNS public key can be recovered from it.
    #[error("peer id does not embed an ed25519 key")]
    NotEd25519,
    /// The bytes or text are not a valid key or signature encoding.
    #[error("malformed key: {0}")]
    Malformed(String),
}

/// Failures loading or saving an identity key file.
#[non_exhaustive]
#[derive(thiserror::Error, Debug)]
pub enum KeyFileError {
    /// The file or its directory could not be read, written, synced or renamed.
    #[error("key file {}: {source}", path.display())]
    Io {
        /// The file (or directory) the operation was about.
        path: PathBuf,
        /// The underlying OS error.
        source: std::io::Error,
    },
    /// The file is readable by group or others; a secret key must be private to its owner,
    /// so we refuse to use it rather than silently trusting a possibly leaked key.
    #[error("key file {} has mode {mode:o}; it must not be accessible by group or others (chmod 600)", path.display())]
    Permissions {
        /// The offending file.
        path: PathBuf,
        /// Its permission bits (`mode & 0o777`).
        mode: u32,
    },
    /// The first line is not `cpns-identity v1`: not a CPNS identity file, or a newer format.
    #[error("key file {} does not start with \"cpns-identity v1\"", path.display())]
    BadHeader {
        /// The offending file.
        path: PathBuf,
    },
    /// The secret line is not 32 bytes of hex.
    #[error("key file {}: {reason}", path.display())]
    BadEncoding {
        /// The offending file.
        path: PathBuf,
        /// What is wrong with the secret line (bad hex, wrong length, extra lines).
        reason: String,
    },
}

/// Failures checking entity credentials and revocation lists.
#[non_exhaustive]
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum CredentialError {
    /// The CA signature does not verify: tampered, or issued by another CA.
    #[error("bad credential signature")]
    BadSignature,
    /// `now` is at or past the credential's expiry.
    #[error("credential expired at {expires} (now {now})")]
    Expired {
        /// When the credential stopped being valid.
        expires: UnixTime,
        /// The time it was checked at.
        now: UnixTime,
    },
    /// `now` is before the credential's issue time (a clock is off, or it is post-dated).
    #[error("credential not valid before {issued} (now {now})")]
    NotYetValid {
        /// When the credential becomes valid.
        issued: UnixTime,
        /// The time it was checked at.
        now: UnixTime,
    },
    /// The credential does not allow the requested mode.
    #[error("credential does not allow mode {mode} (allowed: {allowed})")]
    ModeNotAllowed {
        /// The mode that was asked for.
        mode: Mode,
        /// The modes the credential allows.
        allowed: Modes,
    },
    /// The credential certifies another entity than the peer presenting it.
    ///
    /// The PeerIds are boxed because a `PeerId` is ~80 bytes and would otherwise make every
    /// `Result<_, CredentialError>` that large.
    #[error("credential is for {found}, not {expected}")]
    WrongEntity {
        /// The peer that presented the credential.
        expected: Box<PeerId>,
        /// The entity named in the credential.
        found: Box<PeerId>,
    },
    /// The encoding is truncated, has trailing bytes, an unknown version, or a field out of range.
    #[error("malformed credential: {0}")]
    Malformed(String),
    /// The input (or a revocation list) is larger than this crate accepts.
    #[error("credential data too large: {len} > {max}")]
    TooLarge {
        /// The size found (bytes, or number of revoked serials).
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The credential's serial is on the CA's revocation list.
    #[error("credential serial {serial} is revoked")]
    Revoked {
        /// The revoked serial.
        serial: u64,
    },
}

/// Failures of symmetric authentication and encryption (EUKeys, group keys, sealed boxes).
#[non_exhaustive]
#[derive(thiserror::Error, Debug, PartialEq, Eq)]
pub enum AeadError {
    /// The AEAD tag does not verify: wrong key, wrong AAD, or tampered ciphertext.
    #[error("decryption failed: bad tag")]
    BadTag,
    /// The MAC does not verify.
    #[error("bad mac")]
    BadMac,
    /// The ciphertext was sealed for another group than this key's.
    #[error("sealed for group {found}, this key is for {expected}")]
    WrongGroup {
        /// This key's group.
        expected: GroupId,
        /// The group named in the sealed message.
        found: GroupId,
    },
    /// The ciphertext was sealed under another epoch of the group key (before or after a
    /// rotation), so the caller should fetch the matching key rather than retry.
    #[error("sealed under epoch {found}, this key is epoch {expected}")]
    WrongEpoch {
        /// This key's epoch.
        expected: u64,
        /// The epoch named in the sealed message.
        found: u64,
    },
    /// The input is too short to hold a nonce and a tag.
    #[error("sealed data truncated: {len} bytes, need at least {min}")]
    Truncated {
        /// The length found.
        len: usize,
        /// The minimum length.
        min: usize,
    },
    /// The key agreement produced an all-zero secret: the peer sent a low-order point.
    #[error("bad key: key agreement with a low-order point")]
    BadKey,
    /// An encoded key or box is malformed.
    #[error("malformed sealed data: {0}")]
    Malformed(String),
}
