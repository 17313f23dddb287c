//! Enrolment with `cpns-auth`, seen from the node: `cpns-node --data-dir D enrol CODE` and
//! `cpns up --code CODE`.
//!
//! The code (`cpns1-…`, made by `cpns-auth enrol create`) carries the server's PeerId and
//! addresses, the fingerprint of the CA key to pin, and a one-time secret. [`enrol`] dials the
//! server, presents the secret with the device name, and checks what comes back before
//! trusting any of it: the CA key must match the code's fingerprint, the credential must be
//! signed by that CA for this node's PeerId, the revocation list must be the CA's, and the
//! EUKey must open with this node's identity key. The caller then [`Enrolment::save`]s it.
//!
//! The file `D/enrolment.bin` (mode 0600, written atomically) holds the credential, the EUKey,
//! the pinned CA key, the server's PeerId and addresses, the revocation list and the device
//! name: everything a node needs to authenticate later and to verify peers offline.
//!
//! This module uses only the `cpns-keys` and `cpns-overlay` APIs (no `crate::` paths), so it
//! can be compiled and tested on its own.

use std::fmt;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use cpns_keys::{
    AeadError, CredentialError, EntityCredential, EuKey, Identity, PeerId, PublicKey,
    RevocationList, UnixTime,
};
use cpns_overlay::{
    AuthMessage, Client, CodecError, EnrolRequest, EnrolmentCode, ErrorCode, Message, Multiaddr,
    Protocol, codec, transcript,
};
use serde::{Deserialize, Serialize};

/// File name of the enrolment in the node's data dir.
pub const ENROLMENT_FILE: &str = "enrolment.bin";

/// First bytes of the file: a magic and the format version, so a future format is refused
/// rather than misread.
const MAGIC: &[u8; 8] = b"CPNSENR1";

/// Largest enrolment file read, in bytes (a revocation list of 100,000 serials fits).
const MAX_FILE: usize = 4 * 1024 * 1024;

/// Why enrolment, or loading or saving an enrolment, failed.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum EnrolError {
    /// The code is not a `cpns1-…` code.
    #[error("not a valid enrolment code: {0}")]
    BadCode(CodecError),
    /// The code carries no address to reach the server.
    #[error("the enrolment code carries no server address")]
    NoAddress,
    /// None of the code's addresses could be dialed.
    #[error("cannot reach the auth server: {0}")]
    Dial(String),
    /// The server refused (unknown, expired or used code, wrong secret, rate limit, ...).
    #[error("the auth server refused enrolment: {}: {message}", code.as_str())]
    Refused {
        /// The server's error code.
        code: ErrorCode,
        /// Its message.
        message: String,
    },
    /// The request failed in transport.
    #[error("enrolment request failed: {0}")]
    Transport(String),
    /// The server answered with an unexpected message.
    #[error("unexpected answer from the auth server: {0}")]
    Unexpected(&'static str),
    /// The server's CA key is not the one the code names: not the server the admin meant.
    #[error("the server's CA key (fingerprint {found}) is not the one in the code ({expected})")]
    CaMismatch {
        /// The fingerprint in the code.
        expected: String,
        /// The fingerprint of the key the server sent.
        found: String,
    },
    /// The credential does not verify for this node.
    #[error("the issued credential is not valid: {0}")]
    BadCredential(CredentialError),
    /// The revocation list does not verify.
    #[error("the revocation list is not valid: {0}")]
    BadRevocations(CredentialError),
    /// The sealed EUKey does not open with this node's key.
    #[error("the EUKey cannot be opened: {0}")]
    BadEukey(String),
    /// Reading or writing the file failed.
    #[error("enrolment file {}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
    /// The file is readable by group or others.
    #[error("enrolment file {} has mode {mode:o}; it must be private to its owner (chmod 600)", path.display())]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file is not an enrolment of this format.
    #[error("enrolment file {} is unreadable: {reason}", path.display())]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
}

/// What a node got at enrolment and keeps in its data dir.
#[derive(Clone)]
pub struct Enrolment {
    /// The entity credential (signed by the CA) for this node's PeerId.
    pub credential: EntityCredential,
    /// The Entity-User Key shared with the server.
    pub eukey: EuKey,
    /// The pinned CA public key.
    pub ca: PublicKey,
    /// The auth server's PeerId.
    pub server: PeerId,
    /// The auth server's addresses (without `/p2p/`).
    pub server_addrs: Vec<Multiaddr>,
    /// The newest revocation list seen (the one at enrolment, at first).
    pub revocations: RevocationList,
    /// The device name the node enrolled with.
    pub device: String,
}

impl fmt::Debug for Enrolment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Enrolment")
            .field("entity", self.credential.entity())
            .field("user", &self.credential.body.user)
            .field("device", &self.device)
            .field("serial", &self.credential.serial())
            .field("ca", &self.ca)
            .field("server", &self.server)
            .field("server_addrs", &self.server_addrs)
            .field("revocations", &self.revocations.version)
            .finish_non_exhaustive()
    }
}

/// The file's body (after the magic).
#[derive(Serialize, Deserialize)]
struct Stored {
    credential: EntityCredential,
    eukey: [u8; 32],
    ca: PublicKey,
    server: PeerId,
    server_addrs: Vec<Multiaddr>,
    revocations: RevocationList,
    device: String,
}

impl Drop for Stored {
    fn drop(&mut self) {
        // Best effort: do not leave the EUKey in freed memory.
        for b in self.eukey.iter_mut() {
            // Volatile-free zeroing is enough here; the copy in `EuKey` zeroizes itself.
            *b = 0;
        }
        std::hint::black_box(&self.eukey);
    }
}

impl Enrolment {
    /// The file's path in a data dir.
    pub fn path(data_dir: &Path) -> PathBuf {
        data_dir.join(ENROLMENT_FILE)
    }

    /// The server's addresses with `/p2p/SERVER` appended, ready to dial.
    pub fn server_dial_addrs(&self) -> Vec<Multiaddr> {
        self.server_addrs
            .iter()
            .map(|a| with_p2p(a, self.server))
            .collect()
    }

    /// Loads `D/enrolment.bin`; `Ok(None)` if the node has not enrolled.
    pub fn load(data_dir: &Path) -> Result<Option<Enrolment>, EnrolError> {
        let path = Self::path(data_dir);
        let io_err = |source| EnrolError::Io {
            path: path.clone(),
            source,
        };
        let meta = match std::fs::metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err(e)),
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(EnrolError::Permissions { path, mode });
            }
        }
        if meta.len() > MAX_FILE as u64 {
            return Err(EnrolError::Corrupt {
                path,
                reason: format!("larger than {MAX_FILE} bytes"),
            });
        }
        let bytes = std::fs::read(&path).map_err(io_err)?;
        let corrupt = |reason: String| EnrolError::Corrupt {
            path: path.clone(),
            reason,
        };
        let body = bytes
            .strip_prefix(MAGIC.as_slice())
            .ok_or_else(|| corrupt("not a cpns enrolment file of version 1".into()))?;
        let stored: Stored = codec::decode(body, MAX_FILE).map_err(|e| corrupt(e.to_string()))?;
        Ok(Some(Enrolment {
            credential: stored.credential.clone(),
            eukey: EuKey::from_bytes(stored.eukey),
            ca: stored.ca,
            server: stored.server,
            server_addrs: stored.server_addrs.clone(),
            revocations: stored.revocations.clone(),
            device: stored.device.clone(),
        }))
    }

    /// Saves to `D/enrolment.bin` so that a crash never leaves a partial or readable file:
    /// a temporary file (mode 0600) is written and fsynced, renamed over the old one, and the
    /// directory fsynced. The data dir is created (0700) if missing.
    pub fn save(&self, data_dir: &Path) -> Result<(), EnrolError> {
        let path = Self::path(data_dir);
        let io_err = |p: &Path| {
            let p = p.to_path_buf();
            move |source| EnrolError::Io { path: p, source }
        };
        let mut dir_builder = std::fs::DirBuilder::new();
        dir_builder.recursive(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            dir_builder.mode(0o700);
        }
        dir_builder.create(data_dir).map_err(io_err(data_dir))?;
        let stored = Stored {
            credential: self.credential.clone(),
            eukey: self.eukey.to_bytes(),
            ca: self.ca,
            server: self.server,
            server_addrs: self.server_addrs.clone(),
            revocations: self.revocations.clone(),
            device: self.device.clone(),
        };
        let body = codec::encode(&stored).map_err(|e| EnrolError::Corrupt {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        let mut bytes = Vec::with_capacity(MAGIC.len() + body.len());
        bytes.extend_from_slice(MAGIC);
        bytes.extend_from_slice(&body);
        let tmp = data_dir.join(format!(
            ".{ENROLMENT_FILE}.tmp.{}.{:016x}",
            std::process::id(),
            rand_u64()
        ));
        let result = (|| {
            let mut opts = std::fs::OpenOptions::new();
            opts.write(true).create_new(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                opts.mode(0o600);
            }
            let mut f = opts.open(&tmp)?;
            f.write_all(&bytes)?;
            f.sync_all()?;
            drop(f);
            std::fs::rename(&tmp, &path)
        })();
        // Wipe the serialized EUKey.
        bytes.iter_mut().for_each(|b| *b = 0);
        if let Err(source) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(EnrolError::Io { path, source });
        }
        std::fs::File::open(data_dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(data_dir))?;
        Ok(())
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    // Only makes temp file names unique; RandomState is seeded randomly per process.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    h.finish()
}

fn with_p2p(addr: &Multiaddr, peer: PeerId) -> Multiaddr {
    use libp2p::multiaddr::Protocol;
    let clean: Multiaddr = addr
        .iter()
        .filter(|p| !matches!(p, Protocol::P2p(_)))
        .collect();
    clean.with(Protocol::P2p(peer))
}

fn unix_now() -> UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Enrols this node (`identity`, running overlay `client`) with the server named in `code`,
/// under the name `device`. Checks everything the server sends (see the module docs) and
/// returns the enrolment; the caller saves it with [`Enrolment::save`].
pub async fn enrol(
    client: &Client,
    identity: &Identity,
    code: &str,
    device: &str,
) -> Result<Enrolment, EnrolError> {
    let code = EnrolmentCode::from_text(code).map_err(EnrolError::BadCode)?;
    if code.addrs.is_empty() {
        return Err(EnrolError::NoAddress);
    }
    let mut reached = false;
    let mut last_error = String::new();
    for addr in &code.addrs {
        let _ = client.add_address(code.server, addr.clone()).await;
        match client.dial(with_p2p(addr, code.server)).await {
            Ok(peer) if peer == code.server => {
                reached = true;
                break;
            }
            Ok(peer) => last_error = format!("{addr} answered as {peer}, not {}", code.server),
            Err(e) => last_error = format!("{addr}: {e}"),
        }
    }
    if !reached {
        return Err(EnrolError::Dial(last_error));
    }
    let request = Message::Auth(AuthMessage::EnrolRequest(EnrolRequest {
        code_id: code.code_id.clone(),
        secret: code.secret,
        device: device.to_owned(),
    }));
    let response = match client.request(code.server, Protocol::Auth, request).await {
        Ok(Message::Auth(AuthMessage::EnrolResponse(r))) => r,
        Ok(other) => return Err(EnrolError::Unexpected(other.name())),
        Err(cpns_overlay::Error::Refused { reply, .. }) => {
            return Err(EnrolError::Refused {
                code: reply.code,
                message: reply.message,
            });
        }
        Err(e) => return Err(EnrolError::Transport(e.to_string())),
    };
    let found = response.ca.fingerprint();
    if found != code.ca_fingerprint {
        return Err(EnrolError::CaMismatch {
            expected: code.ca_fingerprint,
            found,
        });
    }
    let me = identity.peer_id();
    response
        .credential
        .verify_for(&response.ca, &me, None, unix_now())
        .map_err(EnrolError::BadCredential)?;
    response
        .revocations
        .verify(&response.ca)
        .map_err(EnrolError::BadRevocations)?;
    response
        .revocations
        .check(&response.credential)
        .map_err(EnrolError::BadCredential)?;
    let opened = identity
        .open_sealed(&transcript::enrol_aad(&me), &response.sealed_eukey)
        .map_err(|e: AeadError| EnrolError::BadEukey(e.to_string()))?;
    let bytes: [u8; 32] = opened
        .as_slice()
        .try_into()
        .map_err(|_| EnrolError::BadEukey(format!("{} bytes, expected 32", opened.len())))?;
    Ok(Enrolment {
        credential: response.credential,
        eukey: EuKey::from_bytes(bytes),
        ca: response.ca,
        server: code.server,
        server_addrs: code.addrs,
        revocations: response.revocations,
        device: device.to_owned(),
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cpns_keys::{CredentialBody, Modes};

    fn sample() -> Enrolment {
        let ca = Identity::from_secret_bytes([1; 32]);
        let node = Identity::from_secret_bytes([2; 32]);
        Enrolment {
            credential: EntityCredential::issue(
                &ca,
                CredentialBody {
                    entity: node.peer_id(),
                    user: "alice".into(),
                    device: "laptop".into(),
                    modes: Modes::ALL,
                    serial: 1,
                    issued: 1,
                    expires: 2,
                },
            ),
            eukey: EuKey::from_bytes([0x5a; 32]),
            ca: ca.public(),
            server: Identity::from_secret_bytes([3; 32]).peer_id(),
            server_addrs: vec!["/ip4/127.0.0.1/tcp/4100".parse().unwrap()],
            revocations: RevocationList::sign(&ca, 1, 1, [7]).unwrap(),
            device: "laptop".into(),
        }
    }

    /// A fresh directory under the system temp dir (this crate has no tempfile dependency).
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> Self {
            let p = std::env::temp_dir().join(format!(
                "cpns-enrolment-{tag}-{}-{:016x}",
                std::process::id(),
                rand_u64()
            ));
            std::fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
        fn path(&self) -> &Path {
            &self.0
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn save_load_round_trip_private_file() {
        let dir = TempDir::new("rt");
        let d = dir.path().join("node");
        assert!(Enrolment::load(&d).unwrap().is_none());
        let e = sample();
        e.save(&d).unwrap();
        let back = Enrolment::load(&d).unwrap().unwrap();
        assert_eq!(back.credential, e.credential);
        assert_eq!(back.eukey.to_bytes(), e.eukey.to_bytes());
        assert_eq!(back.server_addrs, e.server_addrs);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(Enrolment::path(&d))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let dbg = format!("{back:?}");
        assert!(!dbg.contains("5a5a") && !dbg.contains("90, 90"), "{dbg}");
    }

    #[test]
    fn garbage_file_is_an_error() {
        let dir = TempDir::new("garbage");
        sample().save(dir.path()).unwrap();
        let path = Enrolment::path(dir.path());
        let mut bytes = std::fs::read(&path).unwrap();
        bytes.truncate(20);
        std::fs::write(&path, &bytes).unwrap();
        assert!(matches!(
            Enrolment::load(dir.path()),
            Err(EnrolError::Corrupt { .. })
        ));
    }
}
