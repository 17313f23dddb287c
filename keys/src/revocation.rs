//! The CA's signed list of revoked credential serials.
//!
//! The list travels by every path (server, DHT record, gossip in the PN), so a revoked device is
//! refused even by peers that never reach the server. Lists are versioned: a node keeps the
//! verified list with the highest `version` it has seen.

use serde::{Deserialize, Serialize};

use crate::UnixTime;
use crate::canonical::Writer;
use crate::credential::EntityCredential;
use crate::error::CredentialError;
use crate::identity::{Identity, PublicKey, Signature};

/// Domain tag signed before the list; distinct from the credential tag, and neither is a
/// prefix of the other, so a signature for one kind never verifies as the other.
pub(crate) const REVOCATION_TAG: &[u8] = b"cpns revocations v1";

/// Version byte of the signed encoding.
const REVOCATION_VERSION: u8 = 1;

/// Most serials one list may hold (800 KB of serials): bounds what a decoder must accept and
/// what every node keeps in memory.
pub const MAX_REVOCATIONS: usize = 100_000;

/// A CA-signed set of revoked credential serials.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevocationList {
    /// Monotonic list version: newer lists replace older ones, never the reverse.
    pub version: u64,
    /// When the CA signed it.
    pub issued: UnixTime,
    /// Revoked serials, strictly increasing (sorted, no duplicates) so lookups are a binary
    /// search and the signed encoding is unique.
    pub serials: Vec<u64>,
    /// The CA's signature over the domain tag and the canonical list.
    pub ca_signature: Signature,
}

impl RevocationList {
    /// Signs a list as the CA; `serials` may be in any order and contain duplicates.
    ///
    /// Returns [`CredentialError::TooLarge`] for more than [`MAX_REVOCATIONS`] distinct
    /// serials, because no node would accept such a list.
    pub fn sign(
        ca: &Identity,
        version: u64,
        issued: UnixTime,
        serials: impl IntoIterator<Item = u64>,
    ) -> Result<Self, CredentialError> {
        let mut serials: Vec<u64> = serials.into_iter().collect();
        serials.sort_unstable();
        serials.dedup();
        if serials.len() > MAX_REVOCATIONS {
            return Err(CredentialError::TooLarge {
                len: serials.len(),
                max: MAX_REVOCATIONS,
            });
        }
        let ca_signature = ca.sign(&signed_bytes(version, issued, &serials));
        Ok(RevocationList {
            version,
            issued,
            serials,
            ca_signature,
        })
    }

    /// The list a node holds before it has seen any signed one: version 0, nothing revoked,
    /// an all-zero signature. [`verify`](Self::verify) fails on it, so it can never be
    /// passed on as if the CA had issued it.
    pub fn empty_unsigned() -> Self {
        RevocationList {
            version: 0,
            issued: 0,
            serials: Vec::new(),
            ca_signature: Signature::from_bytes(&[0; 64]),
        }
    }

    /// Checks the size limit, the ordering invariant and the CA signature.
    pub fn verify(&self, ca: &PublicKey) -> Result<(), CredentialError> {
        if self.serials.len() > MAX_REVOCATIONS {
            return Err(CredentialError::TooLarge {
                len: self.serials.len(),
                max: MAX_REVOCATIONS,
            });
        }
        if self.serials.windows(2).any(|w| w[0] >= w[1]) {
            return Err(CredentialError::Malformed(
                "revoked serials are not strictly increasing".into(),
            ));
        }
        ca.verify(
            &signed_bytes(self.version, self.issued, &self.serials),
            &self.ca_signature,
        )
        .map_err(|_| CredentialError::BadSignature)
    }

    /// Whether `serial` is revoked. Relies on the sorted order that `sign` produces and
    /// `verify` checks.
    pub fn contains(&self, serial: u64) -> bool {
        self.serials.binary_search(&serial).is_ok()
    }

    /// `Err(Revoked)` if the credential's serial is listed. Verify the list once when it
    /// arrives; this check is then a cheap lookup per credential.
    pub fn check(&self, cred: &EntityCredential) -> Result<(), CredentialError> {
        let serial = cred.serial();
        if self.contains(serial) {
            return Err(CredentialError::Revoked { serial });
        }
        Ok(())
    }
}

fn signed_bytes(version: u64, issued: UnixTime, serials: &[u64]) -> Vec<u8> {
    let mut w = Writer::with_prefix(REVOCATION_TAG, REVOCATION_VERSION);
    w.u64(version)
        .u64(issued)
        .u32(u32::try_from(serials.len()).unwrap_or(u32::MAX));
    for s in serials {
        w.u64(*s);
    }
    w.finish()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::credential::CREDENTIAL_TAG;
    use crate::credential::tests::{NOW, body, ca};

    #[test]
    fn signed_list_verifies_and_is_sorted() {
        let list = RevocationList::sign(&ca(), 3, NOW, [9, 1, 5, 1]).unwrap();
        assert_eq!(list.serials, vec![1, 5, 9]);
        list.verify(&ca().public()).unwrap();
        assert!(list.contains(5) && !list.contains(4));
    }

    #[test]
    fn tampered_list_fails() {
        let ca_pub = ca().public();
        let list = RevocationList::sign(&ca(), 3, NOW, [1, 5, 9]).unwrap();
        let mut t = list.clone();
        t.serials.remove(1);
        assert_eq!(t.verify(&ca_pub), Err(CredentialError::BadSignature));
        let mut t = list.clone();
        t.version = 4;
        assert_eq!(t.verify(&ca_pub), Err(CredentialError::BadSignature));
        let mut t = list.clone();
        t.issued += 1;
        assert_eq!(t.verify(&ca_pub), Err(CredentialError::BadSignature));
        let mut t = list.clone();
        t.serials = vec![9, 5, 1];
        assert!(matches!(
            t.verify(&ca_pub),
            Err(CredentialError::Malformed(_))
        ));
        let other = Identity::from_secret_bytes([0xcb; 32]).public();
        assert_eq!(list.verify(&other), Err(CredentialError::BadSignature));
    }

    #[test]
    fn check_refuses_revoked_serial() {
        let entity = Identity::from_secret_bytes([1; 32]);
        let cred = EntityCredential::issue(&ca(), body(&entity));
        let list = RevocationList::sign(&ca(), 1, NOW, [cred.serial()]).unwrap();
        assert_eq!(
            list.check(&cred),
            Err(CredentialError::Revoked {
                serial: cred.serial()
            })
        );
        let list = RevocationList::sign(&ca(), 2, NOW, [cred.serial() + 1]).unwrap();
        list.check(&cred).unwrap();
    }

    #[test]
    fn empty_unsigned_fails_verify() {
        let list = RevocationList::empty_unsigned();
        assert_eq!(
            list.verify(&ca().public()),
            Err(CredentialError::BadSignature)
        );
        assert!(!list.contains(0));
    }

    #[test]
    fn too_many_serials() {
        let n = MAX_REVOCATIONS + 1;
        assert_eq!(
            RevocationList::sign(&ca(), 1, NOW, 0..n as u64),
            Err(CredentialError::TooLarge {
                len: n,
                max: MAX_REVOCATIONS
            })
        );
        let mut list = RevocationList::sign(&ca(), 1, NOW, 0..MAX_REVOCATIONS as u64).unwrap();
        list.verify(&ca().public()).unwrap();
        list.serials.push(u64::MAX);
        assert_eq!(
            list.verify(&ca().public()),
            Err(CredentialError::TooLarge {
                len: n,
                max: MAX_REVOCATIONS
            })
        );
    }

    #[test]
    fn domain_tags_are_distinct() {
        assert!(!CREDENTIAL_TAG.starts_with(REVOCATION_TAG));
        assert!(!REVOCATION_TAG.starts_with(CREDENTIAL_TAG));
    }
}
