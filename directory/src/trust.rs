//! What a node trusts: the pinned CA key and the newest CA-signed revocation list it has seen.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use cpns_keys::{
    CredentialError, EntityCredential, Mode, PeerId, PublicKey, RevocationList, UnixTime,
};
use sha2::{Digest, Sha256};

/// Credentials whose CA signature was checked, remembered (by digest) so that the records of
/// one publisher cost one signature check each instead of two. Cleared when full.
const VERIFIED_CACHE: usize = 4096;

/// The pinned CA public key and the current revocation list, shared by the [`crate::Validator`]
/// (inside the overlay's event loop) and the [`crate::Directory`].
///
/// The list only ever moves forward: [`Trust::update_revocations`] accepts a list only if the
/// CA signed it and its version is higher, whichever path it came by (server, DHT record,
/// gossip in the PN).
#[derive(Debug)]
pub struct Trust {
    ca: PublicKey,
    revocations: RwLock<Arc<RevocationList>>,
    verified: Mutex<HashSet<[u8; 32]>>,
}

impl Trust {
    /// Trust in `ca`, starting from `revocations` (use [`RevocationList::empty_unsigned`] if
    /// none has been seen yet; it is not checked here because it may be the unsigned empty
    /// list).
    pub fn new(ca: PublicKey, revocations: RevocationList) -> Self {
        Self {
            ca,
            revocations: RwLock::new(Arc::new(revocations)),
            verified: Mutex::new(HashSet::new()),
        }
    }

    /// The pinned CA key.
    pub fn ca(&self) -> &PublicKey {
        &self.ca
    }

    /// Replaces the revocation list if `list` is signed by the CA and newer than the current
    /// one. Returns whether it was taken.
    pub fn update_revocations(&self, list: RevocationList) -> bool {
        if list.verify(&self.ca).is_err() {
            return false;
        }
        let Ok(mut current) = self.revocations.write() else {
            return false;
        };
        if list.version <= current.version {
            return false;
        }
        *current = Arc::new(list);
        true
    }

    /// The current revocation list.
    pub fn revocations(&self) -> Arc<RevocationList> {
        match self.revocations.read() {
            Ok(r) => r.clone(),
            // A poisoned lock means a panic elsewhere while writing; the value is still a
            // complete list (writes are a single pointer swap).
            Err(p) => p.into_inner().clone(),
        }
    }

    /// The version of the current revocation list.
    pub fn revocations_version(&self) -> u64 {
        self.revocations().version
    }

    /// Checks that `cred` is CA-signed, valid at `now`, names `peer`, and is not revoked.
    pub fn check_credential(
        &self,
        cred: &EntityCredential,
        peer: &PeerId,
        now: UnixTime,
    ) -> Result<(), CredentialError> {
        self.check_credential_mode(cred, peer, None, now)
    }

    /// [`Trust::check_credential`], and that the credential allows `mode`.
    pub fn check_credential_mode(
        &self,
        cred: &EntityCredential,
        peer: &PeerId,
        mode: Option<Mode>,
        now: UnixTime,
    ) -> Result<(), CredentialError> {
        let digest: [u8; 32] = Sha256::digest(cred.to_bytes()).into();
        let known = self
            .verified
            .lock()
            .map(|s| s.contains(&digest))
            .unwrap_or(false);
        if known {
            // The CA signature over exactly these bytes was checked before; the rest of
            // `verify_for` depends on `now`, `peer` and `mode`, so it runs every time.
            let b = &cred.body;
            if now < b.issued {
                return Err(CredentialError::NotYetValid {
                    issued: b.issued,
                    now,
                });
            }
            if now >= b.expires {
                return Err(CredentialError::Expired {
                    expires: b.expires,
                    now,
                });
            }
            if b.entity != *peer {
                return Err(CredentialError::WrongEntity {
                    expected: Box::new(*peer),
                    found: Box::new(b.entity),
                });
            }
            if let Some(mode) = mode
                && !b.modes.contains(mode)
            {
                return Err(CredentialError::ModeNotAllowed {
                    mode,
                    allowed: b.modes,
                });
            }
        } else {
            cred.verify_for(&self.ca, peer, mode, now)?;
            if let Ok(mut s) = self.verified.lock() {
                if s.len() >= VERIFIED_CACHE {
                    s.clear();
                }
                s.insert(digest);
            }
        }
        self.revocations().check(cred)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cpns_keys::{CredentialBody, Identity, Modes};

    #[test]
    fn revocations_only_move_forward() {
        let ca = Identity::generate();
        let other = Identity::generate();
        let trust = Trust::new(ca.public(), RevocationList::empty_unsigned());
        let dev = Identity::generate();
        let cred = EntityCredential::issue(
            &ca,
            CredentialBody {
                entity: dev.peer_id(),
                user: "u".into(),
                device: "d".into(),
                modes: Modes::PNE,
                serial: 7,
                issued: 10,
                expires: 100,
            },
        );
        trust.check_credential(&cred, &dev.peer_id(), 50).unwrap();
        // Second time from the cache: time, entity and mode are still checked.
        trust.check_credential(&cred, &dev.peer_id(), 50).unwrap();
        assert!(trust.check_credential(&cred, &other.peer_id(), 50).is_err());
        assert!(trust.check_credential(&cred, &dev.peer_id(), 100).is_err());
        assert!(trust.check_credential(&cred, &dev.peer_id(), 5).is_err());
        assert!(
            trust
                .check_credential_mode(&cred, &dev.peer_id(), Some(Mode::Gateway), 50)
                .is_err()
        );
        let mut forged = cred.clone();
        forged.body.serial = 8;
        assert!(trust.check_credential(&forged, &dev.peer_id(), 50).is_err());
        assert!(!trust.update_revocations(RevocationList::sign(&other, 5, 1, [7]).unwrap()));
        assert!(trust.update_revocations(RevocationList::sign(&ca, 2, 1, [7]).unwrap()));
        assert_eq!(
            trust.check_credential(&cred, &dev.peer_id(), 50),
            Err(CredentialError::Revoked { serial: 7 })
        );
        assert!(!trust.update_revocations(RevocationList::sign(&ca, 1, 1, []).unwrap()));
        assert_eq!(trust.revocations_version(), 2);
    }
}
