//! The few symmetric building blocks shared by [`crate::eukey`], [`crate::group`] and
//! [`crate::seal`]: HKDF-SHA256 to 32 bytes, HMAC-SHA256, XChaCha20-Poly1305 and randomness.
//! Kept in one place so every key in the crate is derived and used the same way.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use hmac::Hmac;
use rand::Rng;
use sha2::Sha256;
use zeroize::{Zeroize, Zeroizing};

use crate::error::AeadError;

/// Length of an XChaCha20-Poly1305 nonce. 24 random bytes never collide in practice, which is
/// why we use the X variant: no nonce bookkeeping across restarts.
pub(crate) const NONCE_LEN: usize = 24;
/// Length of the Poly1305 tag appended to every ciphertext.
pub(crate) const TAG_LEN: usize = 16;

/// HKDF-SHA256 (RFC 5869) with `info` given as parts, so callers can bind variable-length
/// context without allocating a concatenation.
pub(crate) fn hkdf32(salt: Option<&[u8]>, ikm: &[u8], info: &[&[u8]]) -> Zeroizing<[u8; 32]> {
    let hk = Hkdf::<Sha256>::new(salt, ikm);
    let mut okm = Zeroizing::new([0u8; 32]);
    if hk.expand_multi_info(info, okm.as_mut_slice()).is_err() {
        // HKDF-SHA256 can output up to 255 * 32 bytes; 32 is always within the limit.
        unreachable!("hkdf-sha256 refused a 32-byte output");
    }
    okm
}

/// An HMAC-SHA256 instance keyed with a 32-byte key.
///
/// The key is zero-padded to the 64-byte block size and passed to the infallible
/// `KeyInit::new`; RFC 2104 pads short keys with zeros, so this is exactly HMAC with the
/// 32-byte key (checked against `new_from_slice` in the tests).
pub(crate) fn hmac_sha256(key: &[u8; 32]) -> Hmac<Sha256> {
    let mut block = [0u8; 64];
    block[..32].copy_from_slice(key);
    let mac = <Hmac<Sha256> as KeyInit>::new(&block.into());
    block.zeroize();
    mac
}

/// Fresh random bytes from the thread-local CSPRNG.
pub(crate) fn random_array<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    rand::rng().fill_bytes(&mut out);
    out
}

fn cipher(key: &[u8; 32]) -> XChaCha20Poly1305 {
    XChaCha20Poly1305::new(&(*key).into())
}

/// Encrypts `plaintext`; the result is ciphertext followed by the 16-byte tag.
pub(crate) fn xchacha_seal(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    plaintext: &[u8],
) -> Vec<u8> {
    let mut buf = Vec::with_capacity(plaintext.len() + TAG_LEN);
    buf.extend_from_slice(plaintext);
    xchacha_seal_in_place(key, nonce, aad, &mut buf);
    buf
}

/// Encrypts `buf` in place and appends the tag, so callers that already own the bytes (chunked
/// streams) pay for exactly one buffer. Bulk content: computed by [`crate::bulk`] (the same
/// XChaCha20-Poly1305 bytes, at ring's speed).
pub(crate) fn xchacha_seal_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) {
    crate::bulk::seal_in_place(key, nonce, aad, buf);
}

/// Decrypts ciphertext-with-tag, mapping every authentication failure to [`AeadError::BadTag`].
pub(crate) fn xchacha_open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, AeadError> {
    check_tag_len(ciphertext)?;
    cipher(key)
        .decrypt(
            &XNonce::from(*nonce),
            Payload {
                msg: ciphertext,
                aad,
            },
        )
        .map_err(|_| AeadError::BadTag)
}

/// Decrypts ciphertext-with-tag into one new buffer (the plaintext), in place.
pub(crate) fn xchacha_open_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    ciphertext: &[u8],
) -> Result<Vec<u8>, AeadError> {
    check_tag_len(ciphertext)?;
    let mut buf = ciphertext.to_vec();
    crate::bulk::open_in_place(key, nonce, aad, &mut buf)?;
    Ok(buf)
}

/// Decrypts ciphertext-with-tag in `buf` itself (no copy): on success `buf` holds the
/// plaintext; on failure it is emptied (no unauthenticated plaintext is left around).
pub(crate) fn xchacha_open_vec_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), AeadError> {
    crate::bulk::open_in_place(key, nonce, aad, buf)
}

fn check_tag_len(ciphertext: &[u8]) -> Result<(), AeadError> {
    if ciphertext.len() < TAG_LEN {
        return Err(AeadError::Truncated {
            len: ciphertext.len(),
            min: TAG_LEN,
        });
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use hmac::Mac;

    #[test]
    fn padded_hmac_key_equals_standard_hmac() {
        let key = [0x42u8; 32];
        let mut a = hmac_sha256(&key);
        a.update(b"message");
        let mut b = <Hmac<Sha256> as KeyInit>::new_from_slice(&key).unwrap();
        b.update(b"message");
        assert_eq!(a.finalize().into_bytes(), b.finalize().into_bytes());
    }

    #[test]
    fn hkdf_parts_equal_concatenation() {
        let a = hkdf32(Some(b"salt"), b"ikm", &[b"ab", b"cd"]);
        let b = hkdf32(Some(b"salt"), b"ikm", &[b"abcd"]);
        assert_eq!(*a, *b);
    }

    #[test]
    fn in_place_and_allocating_agree() {
        let key = [1u8; 32];
        let nonce = [2u8; NONCE_LEN];
        let ct = xchacha_seal(&key, &nonce, b"aad", b"hello");
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(xchacha_open(&key, &nonce, b"aad", &ct).unwrap(), b"hello");
        assert_eq!(
            xchacha_open_in_place(&key, &nonce, b"aad", &ct).unwrap(),
            b"hello"
        );
        assert_eq!(
            xchacha_open_in_place(&key, &nonce, b"aaD", &ct),
            Err(AeadError::BadTag)
        );
        assert_eq!(
            xchacha_open_in_place(&key, &nonce, b"aad", &ct[..15]),
            Err(AeadError::Truncated {
                len: 15,
                min: TAG_LEN
            })
        );
    }
}
