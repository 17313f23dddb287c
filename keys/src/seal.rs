//! Sealing to a recipient's public key (ECIES-like), e.g. the EUKey the server delivers at
//! enrolment, which must reach only the enrolling entity.
//!
//! The recipient needs no extra key: its ed25519 identity key is converted to x25519
//! (`VerifyingKey::to_montgomery` / `SigningKey::to_scalar_bytes`). The sender uses a fresh
//! ephemeral x25519 key per box, so a box reveals nothing linking it to the sender, and
//! compromising the sender later does not open old boxes.

use serde::{Deserialize, Serialize};
use x25519_dalek::{EphemeralSecret, PublicKey as X25519Public, StaticSecret};

use crate::error::AeadError;
use crate::identity::{Identity, PublicKey};
use crate::primitives;

const SEAL_INFO: &[u8] = b"cpns seal v1";

/// A message sealed to one recipient's public key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedBox {
    /// The sender's ephemeral x25519 public key.
    pub ephemeral: [u8; 32],
    /// The random XChaCha20 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Key = HKDF-SHA256(salt = ephemeral_pub || recipient_pub, ikm = shared secret): binding both
/// public keys means a box cannot be re-targeted or have its ephemeral key swapped.
fn box_key(
    ephemeral: &[u8; 32],
    recipient: &[u8; 32],
    shared: &[u8; 32],
) -> zeroize::Zeroizing<[u8; 32]> {
    let mut salt = [0u8; 64];
    salt[..32].copy_from_slice(ephemeral);
    salt[32..].copy_from_slice(recipient);
    primitives::hkdf32(Some(&salt), shared, &[SEAL_INFO])
}

/// Seals `plaintext` (and authenticates `aad`) so that only the holder of `recipient`'s
/// identity can open it, with [`Identity::open_sealed`].
pub fn seal_to(recipient: &PublicKey, aad: &[u8], plaintext: &[u8]) -> SealedBox {
    let recipient_x = recipient.to_montgomery();
    let secret = EphemeralSecret::random_from_rng(&mut rand::rng());
    let ephemeral = X25519Public::from(&secret).to_bytes();
    // `PublicKey` rejects small-order keys, so this agreement is always contributory.
    let shared = secret.diffie_hellman(&X25519Public::from(recipient_x));
    let key = box_key(&ephemeral, &recipient_x, shared.as_bytes());
    let nonce = primitives::random_array();
    let ciphertext = primitives::xchacha_seal(&key, &nonce, aad, plaintext);
    SealedBox {
        ephemeral,
        nonce,
        ciphertext,
    }
}

impl Identity {
    /// Opens a box sealed to this identity's public key with [`seal_to`].
    ///
    /// [`AeadError::BadKey`] if the ephemeral key is a low-order point (the shared secret would
    /// be all zeros, known to everyone); [`AeadError::BadTag`] for another recipient, another
    /// `aad` or any tampering.
    pub fn open_sealed(&self, aad: &[u8], sealed: &SealedBox) -> Result<Vec<u8>, AeadError> {
        let static_secret = StaticSecret::from(self.signing_key().to_scalar_bytes());
        let recipient_x = X25519Public::from(&static_secret).to_bytes();
        let shared = static_secret.diffie_hellman(&X25519Public::from(sealed.ephemeral));
        if !shared.was_contributory() {
            return Err(AeadError::BadKey);
        }
        let key = box_key(&sealed.ephemeral, &recipient_x, shared.as_bytes());
        primitives::xchacha_open(&key, &sealed.nonce, aad, &sealed.ciphertext)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let bob = Identity::generate();
        let b = seal_to(&bob.public(), b"enrolment", b"eukey bytes");
        assert_eq!(bob.open_sealed(b"enrolment", &b).unwrap(), b"eukey bytes");
    }

    #[test]
    fn converted_keys_agree() {
        // The x25519 public key derived from the ed25519 public key matches the one derived
        // from the secret: what makes sealing to a PeerId work.
        let id = Identity::from_secret_bytes([3; 32]);
        let from_secret =
            X25519Public::from(&StaticSecret::from(id.signing_key().to_scalar_bytes())).to_bytes();
        assert_eq!(from_secret, id.public().to_montgomery());
    }

    #[test]
    fn other_identity_cannot_open() {
        let bob = Identity::generate();
        let b = seal_to(&bob.public(), b"", b"secret");
        assert_eq!(
            Identity::generate().open_sealed(b"", &b),
            Err(AeadError::BadTag)
        );
    }

    #[test]
    fn wrong_aad_and_tampering_fail() {
        let bob = Identity::generate();
        let b = seal_to(&bob.public(), b"aad", b"secret");
        assert_eq!(bob.open_sealed(b"aaD", &b), Err(AeadError::BadTag));
        let mut t = b.clone();
        t.ephemeral[5] ^= 1;
        let r = bob.open_sealed(b"aad", &t);
        assert!(
            matches!(r, Err(AeadError::BadTag) | Err(AeadError::BadKey)),
            "{r:?}"
        );
        let mut t = b.clone();
        t.ephemeral =
            X25519Public::from(&EphemeralSecret::random_from_rng(&mut rand::rng())).to_bytes();
        assert_eq!(bob.open_sealed(b"aad", &t), Err(AeadError::BadTag));
        let mut t = b.clone();
        t.nonce[0] ^= 1;
        assert_eq!(bob.open_sealed(b"aad", &t), Err(AeadError::BadTag));
        let mut t = b.clone();
        t.ciphertext.truncate(3);
        assert_eq!(
            bob.open_sealed(b"aad", &t),
            Err(AeadError::Truncated { len: 3, min: 16 })
        );
    }

    #[test]
    fn low_order_ephemeral_is_bad_key() {
        let bob = Identity::generate();
        let mut b = seal_to(&bob.public(), b"", b"secret");
        b.ephemeral = [0; 32]; // u = 0 is a small-order point
        assert_eq!(bob.open_sealed(b"", &b), Err(AeadError::BadKey));
        b.ephemeral = [0; 32];
        b.ephemeral[0] = 1; // u = 1 too
        assert_eq!(bob.open_sealed(b"", &b), Err(AeadError::BadKey));
    }
}
