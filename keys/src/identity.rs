//! Ed25519 identities: the key a node is known by (its PeerId) and that the CA signs with.
//!
//! One key serves libp2p (noise handshakes, PeerId), CPNS signatures (credentials, DHT
//! records) and, converted to x25519, sealing to a peer ([`crate::seal_to`]). The libp2p and
//! dalek types are only ever converted through the 32 secret bytes, so both stacks always agree
//! on the PeerId.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use libp2p_identity::PeerId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

use crate::error::{KeyError, KeyFileError};

/// First line of an identity key file; a new format gets a new header so old code refuses it.
const FILE_HEADER: &str = "cpns-identity v1";

/// Multihash code of the identity "hash": the PeerId bytes *are* the protobuf-encoded key.
const MULTIHASH_IDENTITY: u64 = 0;

/// An entity's (or the CA's) secret ed25519 key.
///
/// `Clone` copies the secret; every copy is zeroized when dropped (the dalek `SigningKey` is
/// `ZeroizeOnDrop`). `Debug` prints only the PeerId, so identities can be logged safely.
#[derive(Clone)]
pub struct Identity {
    secret: SigningKey,
}

impl Identity {
    /// Generates a fresh identity from the thread-local CSPRNG (seeded by the OS).
    pub fn generate() -> Self {
        Identity {
            secret: SigningKey::generate(&mut rand::rng()),
        }
    }

    /// Builds an identity from its 32 secret bytes: deterministic identities for tests, and
    /// the only bridge from other key stores.
    pub fn from_secret_bytes(mut bytes: [u8; 32]) -> Self {
        let secret = SigningKey::from_bytes(&bytes);
        // Wipe this function's copy; the caller owns (and should wipe) theirs.
        bytes.zeroize();
        Identity { secret }
    }

    /// Loads an identity from a key file written by [`Identity::save`].
    ///
    /// Refuses files that group or others can access (`mode & 0o077 != 0`), because a secret
    /// key that others could have read must not be trusted silently.
    pub fn load(path: &Path) -> Result<Self, KeyFileError> {
        let io_err = |source| KeyFileError::Io {
            path: path.to_path_buf(),
            source,
        };
        let meta = fs::metadata(path).map_err(io_err)?;
        check_private(path, &meta)?;
        let text = Zeroizing::new(fs::read_to_string(path).map_err(io_err)?);
        Self::parse_file(path, &text)
    }

    fn parse_file(path: &Path, text: &str) -> Result<Self, KeyFileError> {
        let bad = |reason: &str| KeyFileError::BadEncoding {
            path: path.to_path_buf(),
            reason: reason.to_owned(),
        };
        let mut lines = text.lines();
        if lines.next() != Some(FILE_HEADER) {
            return Err(KeyFileError::BadHeader {
                path: path.to_path_buf(),
            });
        }
        let Some(secret_line) = lines.next() else {
            return Err(bad("missing secret line"));
        };
        if lines.any(|l| !l.is_empty()) {
            return Err(bad("unexpected extra lines after the secret"));
        }
        let secret_line = secret_line.trim();
        if secret_line.len() != 64 {
            return Err(bad(&format!(
                "secret must be 64 hex characters (32 bytes), found {}",
                secret_line.len()
            )));
        }
        let mut bytes = Zeroizing::new([0u8; 32]);
        hex::decode_to_slice(secret_line, bytes.as_mut_slice())
            .map_err(|e| bad(&format!("secret is not hex: {e}")))?;
        Ok(Identity::from_secret_bytes(*bytes))
    }

    /// Saves the identity so that a crash never leaves a half-written or world-readable key.
    ///
    /// Writes a temporary file (mode 0600) in the same directory, fsyncs it, renames it over
    /// `path` and fsyncs the directory. The parent directory is created (mode 0700) if missing.
    pub fn save(&self, path: &Path) -> Result<(), KeyFileError> {
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| KeyFileError::Io { path: p, source }
        };
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        create_private_dir(&dir).map_err(io_err(&dir))?;

        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| KeyFileError::Io {
                path: path.to_path_buf(),
                source: io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"),
            })?;
        let tmp = dir.join(format!(
            ".{file_name}.tmp.{}.{:016x}",
            std::process::id(),
            rand::random::<u64>()
        ));

        let contents = Zeroizing::new(format!(
            "{FILE_HEADER}\n{}\n",
            hex::encode(self.secret.as_bytes())
        ));
        let result = (|| {
            let mut f = open_private_new(&tmp)?;
            f.write_all(contents.as_bytes())?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, path)
        })();
        if let Err(source) = result {
            let _ = fs::remove_file(&tmp);
            return Err(KeyFileError::Io {
                path: path.to_path_buf(),
                source,
            });
        }
        // Make the rename itself durable; failure here is reported, the key file is in place.
        fs::File::open(&dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&dir))?;
        Ok(())
    }

    /// Loads the identity at `path`, or generates and saves a new one if the file does not
    /// exist. The flag is `true` when a new identity was created (first start of a node).
    pub fn load_or_generate(path: &Path) -> Result<(Self, bool), KeyFileError> {
        match Self::load(path) {
            Ok(id) => Ok((id, false)),
            Err(KeyFileError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                let id = Self::generate();
                id.save(path)?;
                Ok((id, true))
            }
            Err(e) => Err(e),
        }
    }

    /// The public half, which others use to verify this identity's signatures.
    pub fn public(&self) -> PublicKey {
        PublicKey(self.secret.verifying_key())
    }

    /// The libp2p PeerId of this identity (an identity multihash embedding the public key).
    pub fn peer_id(&self) -> PeerId {
        self.public().to_peer_id()
    }

    /// The same key as a libp2p keypair, for building the swarm (noise uses it to prove the
    /// PeerId), so `keypair.public().to_peer_id() == self.peer_id()`.
    pub fn to_libp2p_keypair(&self) -> libp2p_identity::Keypair {
        // `ed25519_from_bytes` zeroizes the buffer it is handed.
        let mut bytes = Zeroizing::new(self.secret.to_bytes());
        match libp2p_identity::Keypair::ed25519_from_bytes(bytes.as_mut_slice()) {
            Ok(kp) => kp,
            // Only fails on a length other than 32, which the array type rules out.
            Err(e) => unreachable!("32-byte ed25519 secret rejected by libp2p: {e}"),
        }
    }

    /// Signs `msg` with this identity. Callers prefix their own domain tag so a signature for
    /// one kind of object can never be replayed as another.
    pub fn sign(&self, msg: &[u8]) -> Signature {
        Signature(self.secret.sign(msg).to_bytes())
    }

    /// The 32 secret bytes, for converting to x25519 in [`crate::seal`].
    pub(crate) fn signing_key(&self) -> &SigningKey {
        &self.secret
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id())
            .finish_non_exhaustive()
    }
}

fn check_private(path: &Path, meta: &fs::Metadata) -> Result<(), KeyFileError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
    }
    #[cfg(not(unix))]
    let _ = (path, meta);
    Ok(())
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir)
}

fn open_private_new(path: &Path) -> io::Result<fs::File> {
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)
}

/// An ed25519 public key: what a PeerId embeds, what the CA is pinned as, what verifies
/// signatures.
///
/// Weak (small-order) keys are rejected when parsing, so a `PublicKey` always has a usable
/// x25519 conversion for [`crate::seal_to`]. Serialized as 32 raw bytes in binary formats
/// and as lowercase hex in human-readable ones (JSON, TOML).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PublicKey(VerifyingKey);

impl PublicKey {
    /// Parses 32 bytes, refusing encodings that are not a curve point or are of small order.
    pub fn from_bytes(b: &[u8; 32]) -> Result<Self, KeyError> {
        let vk = VerifyingKey::from_bytes(b)
            .map_err(|_| KeyError::Malformed("not an ed25519 curve point".into()))?;
        if vk.is_weak() {
            return Err(KeyError::Malformed("weak (small-order) ed25519 key".into()));
        }
        Ok(PublicKey(vk))
    }

    /// The 32-byte compressed point.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0.to_bytes()
    }

    /// Recovers the key from an ed25519 PeerId, which embeds it (identity multihash of the
    /// protobuf-encoded key), so peers can verify each other knowing only the PeerId.
    pub fn from_peer_id(peer: &PeerId) -> Result<Self, KeyError> {
        let mh = peer.as_ref();
        if mh.code() != MULTIHASH_IDENTITY {
            return Err(KeyError::NotEd25519);
        }
        let key = libp2p_identity::PublicKey::try_decode_protobuf(mh.digest())
            .map_err(|_| KeyError::NotEd25519)?;
        let ed = key.try_into_ed25519().map_err(|_| KeyError::NotEd25519)?;
        Self::from_bytes(&ed.to_bytes())
    }

    /// The libp2p PeerId for this key.
    pub fn to_peer_id(&self) -> PeerId {
        match libp2p_identity::ed25519::PublicKey::try_from_bytes(self.0.as_bytes()) {
            Ok(ed) => libp2p_identity::PublicKey::from(ed).to_peer_id(),
            // Both libraries decompress the same 32 bytes with the same curve crate.
            Err(e) => unreachable!("valid dalek key rejected by libp2p: {e}"),
        }
    }

    /// Checks `sig` over `msg` with strict verification (no malleable or weak-key signatures),
    /// so a signature has exactly one valid encoding.
    pub fn verify(&self, msg: &[u8], sig: &Signature) -> Result<(), KeyError> {
        let sig = ed25519_dalek::Signature::from_bytes(&sig.0);
        self.0
            .verify_strict(msg, &sig)
            .map_err(|_| KeyError::BadSignature)
    }

    /// The x25519 (Montgomery) form of this key, the recipient key for [`crate::seal_to`].
    pub(crate) fn to_montgomery(self) -> [u8; 32] {
        self.0.to_montgomery().to_bytes()
    }

    /// Lowercase hex of the first 16 bytes of SHA-256 of the key: short enough to type or put
    /// in a QR enrolment code, long enough (128 bits) that nobody can find a key to match it.
    pub fn fingerprint(&self) -> String {
        let digest = Sha256::digest(self.0.as_bytes());
        hex::encode(&digest[..16])
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.fingerprint())
    }
}

impl FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let mut b = [0u8; 32];
        hex::decode_to_slice(s.trim(), &mut b)
            .map_err(|e| KeyError::Malformed(format!("public key must be 64 hex chars: {e}")))?;
        Self::from_bytes(&b)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_str(self)
        } else {
            s.serialize_bytes(self.0.as_bytes())
        }
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            s.parse().map_err(serde::de::Error::custom)
        } else {
            let b: [u8; 32] = d.deserialize_bytes(serde_bytes::FixedBytes::<32>)?;
            PublicKey::from_bytes(&b).map_err(serde::de::Error::custom)
        }
    }
}

/// An ed25519 signature (64 bytes).
///
/// Kept as plain bytes: parsing into a curve point happens in [`PublicKey::verify`], so a
/// garbage signature is just one that fails to verify. Serialized like [`PublicKey`].
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Signature([u8; 64]);

impl Signature {
    /// Wraps 64 signature bytes.
    pub fn from_bytes(b: &[u8; 64]) -> Self {
        Signature(*b)
    }

    /// The 64 signature bytes.
    pub fn to_bytes(&self) -> [u8; 64] {
        self.0
    }
}

impl fmt::Debug for Signature {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Signature({}…)", hex::encode(&self.0[..8]))
    }
}

impl Serialize for Signature {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.serialize_str(&hex::encode(self.0))
        } else {
            s.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Signature {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
            let mut b = [0u8; 64];
            hex::decode_to_slice(s.as_ref(), &mut b).map_err(serde::de::Error::custom)?;
            Ok(Signature(b))
        } else {
            Ok(Signature(
                d.deserialize_bytes(serde_bytes::FixedBytes::<64>)?,
            ))
        }
    }
}

/// A serde visitor for fixed-size byte strings that also accepts a sequence of `N` bytes, so
/// formats without a native byte-string type still round-trip.
mod serde_bytes {
    use std::fmt;

    use serde::de::{Error, SeqAccess, Visitor};

    pub(super) struct FixedBytes<const N: usize>;

    impl<'de, const N: usize> Visitor<'de> for FixedBytes<N> {
        type Value = [u8; N];

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "{N} bytes")
        }

        fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Self::Value, E> {
            <[u8; N]>::try_from(v).map_err(|_| E::invalid_length(v.len(), &self))
        }

        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
            let mut out = [0u8; N];
            for (i, slot) in out.iter_mut().enumerate() {
                *slot = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(i, &self))?;
            }
            if seq.next_element::<u8>()?.is_some() {
                return Err(A::Error::invalid_length(N + 1, &self));
            }
            Ok(out)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[cfg(unix)]
    fn set_mode(path: &Path, mode: u32) {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn save_load_round_trip_keeps_peer_id() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/identity.key");
        let id = Identity::generate();
        id.save(&path).unwrap();
        let loaded = Identity::load(&path).unwrap();
        assert_eq!(loaded.peer_id(), id.peer_id());
        assert_eq!(loaded.public(), id.public());
        // Exactly the documented format.
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(
            text,
            format!("cpns-identity v1\n{}\n", hex::encode(id.secret.as_bytes()))
        );
        // No temp files left behind.
        assert_eq!(fs::read_dir(path.parent().unwrap()).unwrap().count(), 1);
    }

    #[cfg(unix)]
    #[test]
    fn saved_file_is_0600_and_overwrite_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        Identity::generate().save(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        let second = Identity::generate();
        second.save(&path).unwrap();
        assert_eq!(mode_of(&path), 0o600);
        assert_eq!(Identity::load(&path).unwrap().peer_id(), second.peer_id());
    }

    #[cfg(unix)]
    #[test]
    fn load_refuses_group_or_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        Identity::generate().save(&path).unwrap();
        set_mode(&path, 0o644);
        match Identity::load(&path) {
            Err(KeyFileError::Permissions { mode, path: p }) => {
                assert_eq!(mode, 0o644);
                assert_eq!(p, path);
            }
            other => panic!("expected Permissions, got {other:?}"),
        }
        set_mode(&path, 0o640);
        assert!(matches!(
            Identity::load(&path),
            Err(KeyFileError::Permissions { mode: 0o640, .. })
        ));
    }

    fn write_private(path: &Path, text: &str) {
        let mut f = open_private_new(path).unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn load_refuses_bad_header() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        write_private(&path, &format!("cpns-identity v2\n{}\n", "ab".repeat(32)));
        assert!(matches!(
            Identity::load(&path),
            Err(KeyFileError::BadHeader { .. })
        ));
    }

    #[test]
    fn load_refuses_bad_hex_and_wrong_length() {
        let dir = tempfile::tempdir().unwrap();
        let bad_hex = dir.path().join("hex.key");
        write_private(
            &bad_hex,
            &format!("cpns-identity v1\n{}zz\n", "ab".repeat(31)),
        );
        match Identity::load(&bad_hex) {
            Err(KeyFileError::BadEncoding { reason, .. }) => {
                assert!(reason.contains("hex"), "{reason}")
            }
            other => panic!("expected BadEncoding, got {other:?}"),
        }
        let short = dir.path().join("short.key");
        write_private(&short, &format!("cpns-identity v1\n{}\n", "ab".repeat(31)));
        match Identity::load(&short) {
            Err(KeyFileError::BadEncoding { reason, .. }) => {
                assert!(reason.contains("64"), "{reason}")
            }
            other => panic!("expected BadEncoding, got {other:?}"),
        }
        let missing = dir.path().join("missing.key");
        write_private(&missing, "cpns-identity v1\n");
        assert!(matches!(
            Identity::load(&missing),
            Err(KeyFileError::BadEncoding { .. })
        ));
    }

    #[test]
    fn load_or_generate_creates_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("id.key");
        let (a, created) = Identity::load_or_generate(&path).unwrap();
        assert!(created);
        let (b, created) = Identity::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(a.peer_id(), b.peer_id());
    }

    #[test]
    fn load_missing_file_is_io_not_found() {
        let dir = tempfile::tempdir().unwrap();
        match Identity::load(&dir.path().join("nope")) {
            Err(KeyFileError::Io { source, .. }) => {
                assert_eq!(source.kind(), io::ErrorKind::NotFound)
            }
            other => panic!("expected Io, got {other:?}"),
        }
    }

    #[test]
    fn libp2p_keypair_has_same_peer_id() {
        let id = Identity::from_secret_bytes([7; 32]);
        let kp = id.to_libp2p_keypair();
        assert_eq!(kp.public().to_peer_id(), id.peer_id());
        // A libp2p signature verifies with our key and vice versa.
        let sig = kp.sign(b"hello").unwrap();
        let sig = Signature::from_bytes(&sig.as_slice().try_into().unwrap());
        id.public().verify(b"hello", &sig).unwrap();
        assert!(kp.public().verify(b"hi", &id.sign(b"hi").to_bytes()));
    }

    #[test]
    fn public_key_from_peer_id_round_trip() {
        let id = Identity::generate();
        let pk = PublicKey::from_peer_id(&id.peer_id()).unwrap();
        assert_eq!(pk, id.public());
        assert_eq!(pk.to_peer_id(), id.peer_id());
    }

    #[test]
    fn public_key_from_non_ed25519_peer_id() {
        // A random identity-multihash PeerId does not decode as a protobuf key.
        assert!(matches!(
            PublicKey::from_peer_id(&PeerId::random()),
            Err(KeyError::NotEd25519)
        ));
        // A SHA-256 PeerId (as used for RSA keys) cannot embed a key at all.
        let mut bytes = vec![0x12, 0x20];
        bytes.extend_from_slice(&[9u8; 32]);
        let hashed = PeerId::from_bytes(&bytes).unwrap();
        assert!(matches!(
            PublicKey::from_peer_id(&hashed),
            Err(KeyError::NotEd25519)
        ));
    }

    #[test]
    fn sign_verify_and_bad_signature() {
        let id = Identity::generate();
        let sig = id.sign(b"msg");
        id.public().verify(b"msg", &sig).unwrap();
        assert!(matches!(
            id.public().verify(b"msG", &sig),
            Err(KeyError::BadSignature)
        ));
        let other = Identity::generate();
        assert!(matches!(
            other.public().verify(b"msg", &sig),
            Err(KeyError::BadSignature)
        ));
        assert!(matches!(
            id.public()
                .verify(b"msg", &Signature::from_bytes(&[0xff; 64])),
            Err(KeyError::BadSignature)
        ));
    }

    #[test]
    fn public_key_text_round_trip_and_fingerprint() {
        let pk = Identity::from_secret_bytes([1; 32]).public();
        let s = pk.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(s, s.to_lowercase());
        assert_eq!(s.parse::<PublicKey>().unwrap(), pk);
        assert_eq!(pk.fingerprint().len(), 32);
        assert_eq!(
            format!("{pk:?}"),
            format!("PublicKey({})", pk.fingerprint())
        );
        assert!(matches!(
            "zz".parse::<PublicKey>(),
            Err(KeyError::Malformed(_))
        ));
    }

    #[test]
    fn weak_public_keys_are_rejected() {
        // The identity point (y = 1) is of small order.
        let mut identity_point = [0u8; 32];
        identity_point[0] = 1;
        assert!(matches!(
            PublicKey::from_bytes(&identity_point),
            Err(KeyError::Malformed(_))
        ));
    }

    #[test]
    fn serde_json_uses_hex_and_round_trips() {
        let id = Identity::generate();
        let pk = id.public();
        let sig = id.sign(b"x");
        let json = serde_json::to_string(&(pk, sig)).unwrap();
        assert!(json.contains(&pk.to_string()));
        let (pk2, sig2): (PublicKey, Signature) = serde_json::from_str(&json).unwrap();
        assert_eq!((pk2, sig2), (pk, sig));
    }

    #[test]
    fn debug_output_has_no_secret() {
        let secret = [0x5a; 32];
        let id = Identity::from_secret_bytes(secret);
        let dbg = format!("{id:?}");
        assert!(dbg.contains(&id.peer_id().to_string()));
        assert!(!dbg.contains(&hex::encode(secret)));
        assert!(!dbg.contains("5a5a5a"));
        assert!(!dbg.contains("90, 90"));
    }
}
