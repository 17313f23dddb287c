//! The spec's Entity-User Key (3.2, 5.4): 32 secret bytes shared by one entity and `cpns-auth`.
//!
//! It authenticates the entity to the server ([`EuKey::mac`]) and wraps what the server sends
//! it, above all group keys ([`EuKey::seal`]). The two uses get separate subkeys derived with
//! HKDF, so a MAC can never be confused with a ciphertext.

use std::fmt;

use hmac::Mac;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::AeadError;
use crate::primitives::{self, NONCE_LEN, TAG_LEN};

const MAC_INFO: &[u8] = b"cpns eukey mac v1";
const SEAL_INFO: &[u8] = b"cpns eukey seal v1";

/// An Entity-User Key. Zeroized on drop; `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct EuKey([u8; 32]);

impl EuKey {
    /// A fresh random key, as the server creates at enrolment.
    pub fn generate() -> Self {
        EuKey(primitives::random_array())
    }

    /// Rebuilds a key from storage or from the enrolment exchange.
    pub fn from_bytes(b: [u8; 32]) -> Self {
        EuKey(b)
    }

    /// The raw key, for its owner to store (the entity's data dir, the server's database).
    /// Never send it anywhere unsealed.
    pub fn to_bytes(&self) -> [u8; 32] {
        self.0
    }

    fn subkey(&self, info: &[u8]) -> zeroize::Zeroizing<[u8; 32]> {
        primitives::hkdf32(None, &self.0, &[info])
    }

    /// HMAC-SHA256 of `msg` under the EUKey's MAC subkey: the entity's answer to a server
    /// challenge (include the nonce and both parties' ids in `msg`).
    pub fn mac(&self, msg: &[u8]) -> [u8; 32] {
        let mut mac = primitives::hmac_sha256(&self.subkey(MAC_INFO));
        mac.update(msg);
        mac.finalize().into_bytes().into()
    }

    /// Checks a MAC in constant time.
    pub fn verify_mac(&self, msg: &[u8], tag: &[u8]) -> Result<(), AeadError> {
        let mut mac = primitives::hmac_sha256(&self.subkey(MAC_INFO));
        mac.update(msg);
        mac.verify_slice(tag).map_err(|_| AeadError::BadMac)
    }

    /// Encrypts and authenticates `plaintext`, binding `aad` (e.g. the group id and epoch of a
    /// wrapped group key, so it cannot be replayed as another). Random nonce.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Sealed {
        let nonce = primitives::random_array();
        let ciphertext = primitives::xchacha_seal(&self.subkey(SEAL_INFO), &nonce, aad, plaintext);
        Sealed { nonce, ciphertext }
    }

    /// Decrypts what [`seal`](Self::seal) produced with the same key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &Sealed) -> Result<Vec<u8>, AeadError> {
        primitives::xchacha_open(
            &self.subkey(SEAL_INFO),
            &sealed.nonce,
            aad,
            &sealed.ciphertext,
        )
    }
}

impl fmt::Debug for EuKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("EuKey(..)")
    }
}

/// A message sealed under an [`EuKey`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sealed {
    /// The random XChaCha20 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext followed by the 16-byte Poly1305 tag.
    pub ciphertext: Vec<u8>,
}

impl Sealed {
    /// Smallest valid encoding: a nonce and a tag around an empty plaintext.
    const MIN_LEN: usize = NONCE_LEN + TAG_LEN;

    /// `nonce || ciphertext`: a compact form for places that carry raw bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(NONCE_LEN + self.ciphertext.len());
        out.extend_from_slice(&self.nonce);
        out.extend_from_slice(&self.ciphertext);
        out
    }

    /// Splits [`to_bytes`](Self::to_bytes) output; [`AeadError::Truncated`] if it cannot hold
    /// a nonce and a tag.
    pub fn from_bytes(b: &[u8]) -> Result<Sealed, AeadError> {
        if b.len() < Self::MIN_LEN {
            return Err(AeadError::Truncated {
                len: b.len(),
                min: Self::MIN_LEN,
            });
        }
        let (nonce, ciphertext) = b.split_at(NONCE_LEN);
        let nonce = nonce
            .try_into()
            .map_err(|_| AeadError::Malformed("nonce length".into()))?;
        Ok(Sealed {
            nonce,
            ciphertext: ciphertext.to_vec(),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip() {
        let k = EuKey::generate();
        let s = k.seal(b"aad", b"group key bytes");
        assert_eq!(s.ciphertext.len(), 15 + TAG_LEN);
        assert_eq!(k.open(b"aad", &s).unwrap(), b"group key bytes");
        let back = Sealed::from_bytes(&s.to_bytes()).unwrap();
        assert_eq!(back, s);
        assert_eq!(k.open(b"aad", &back).unwrap(), b"group key bytes");
        // Same key bytes rebuilt from storage.
        let k2 = EuKey::from_bytes(k.to_bytes());
        assert_eq!(k2.open(b"aad", &s).unwrap(), b"group key bytes");
    }

    #[test]
    fn wrong_key_or_aad_is_bad_tag() {
        let k = EuKey::generate();
        let s = k.seal(b"aad", b"secret");
        assert_eq!(EuKey::generate().open(b"aad", &s), Err(AeadError::BadTag));
        assert_eq!(k.open(b"other", &s), Err(AeadError::BadTag));
        let mut t = s.clone();
        t.ciphertext[0] ^= 1;
        assert_eq!(k.open(b"aad", &t), Err(AeadError::BadTag));
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert_eq!(k.open(b"aad", &t), Err(AeadError::BadTag));
    }

    #[test]
    fn truncated() {
        let k = EuKey::generate();
        let s = k.seal(b"", b"secret");
        let bytes = s.to_bytes();
        assert_eq!(
            Sealed::from_bytes(&bytes[..39]),
            Err(AeadError::Truncated { len: 39, min: 40 })
        );
        // Long enough to parse but missing plaintext bytes: the tag fails.
        let cut = Sealed::from_bytes(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(k.open(b"", &cut), Err(AeadError::BadTag));
        let short = Sealed {
            nonce: s.nonce,
            ciphertext: s.ciphertext[..10].to_vec(),
        };
        assert_eq!(
            k.open(b"", &short),
            Err(AeadError::Truncated {
                len: 10,
                min: TAG_LEN
            })
        );
    }

    #[test]
    fn mac_verify_and_flipped_bit() {
        let k = EuKey::from_bytes([9; 32]);
        let tag = k.mac(b"challenge");
        k.verify_mac(b"challenge", &tag).unwrap();
        let mut bad = tag;
        bad[31] ^= 0x01;
        assert_eq!(k.verify_mac(b"challenge", &bad), Err(AeadError::BadMac));
        assert_eq!(k.verify_mac(b"challengE", &tag), Err(AeadError::BadMac));
        assert_eq!(
            k.verify_mac(b"challenge", &tag[..16]),
            Err(AeadError::BadMac)
        );
        assert_eq!(
            EuKey::from_bytes([8; 32]).verify_mac(b"challenge", &tag),
            Err(AeadError::BadMac)
        );
        // The MAC key is a derived subkey, not the EUKey itself.
        let mut raw = primitives::hmac_sha256(&[9; 32]);
        raw.update(b"challenge");
        assert_ne!(<[u8; 32]>::from(raw.finalize().into_bytes()), tag);
    }

    #[test]
    fn debug_has_no_secret() {
        let k = EuKey::from_bytes([0xab; 32]);
        let dbg = format!("{k:?}");
        assert_eq!(dbg, "EuKey(..)");
        assert!(!dbg.contains("abab") && !dbg.contains("171"));
    }
}
