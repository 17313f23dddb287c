//! XChaCha20-Poly1305 for bulk content (the chunks of a delivery stream), computed with ring's
//! ChaCha20-Poly1305 (BoringSSL's assembly) after an HChaCha20 key derivation.
//!
//! Why a second implementation: content delivery seals and opens every byte once on each
//! side, and RustCrypto's `chacha20poly1305` (the owner's choice, used for everything else in
//! this crate) runs at 0.76-1.4 GB/s on one core of the machines we measure on, while ring's
//! ChaCha20-Poly1305 runs at 1.75-3.7 GB/s, the rate of `openssl speed -evp
//! chacha20-poly1305` (docs/BENCHMARKS.md, "Encrypted content delivery"). ring is already in
//! every build (libp2p's noise uses it), so this adds no crate to the tree.
//!
//! The construction is exactly XChaCha20-Poly1305 (draft-irtf-cfrg-xchacha-03, section 2.3):
//! subkey = HChaCha20(key, nonce[0..16]), then IETF ChaCha20-Poly1305 under the subkey with the
//! 12-byte nonce `0u32 || nonce[16..24]`. So the bytes on the wire are identical to what
//! `chacha20poly1305::XChaCha20Poly1305` produces (checked by the tests below), and the chunk
//! format — nonce from stream id and index, AAD binding epoch, sender, stream id, index and
//! the last flag — does not change.

use chacha20::{R20, hchacha};
use ring::aead::{Aad, CHACHA20_POLY1305, LessSafeKey, Nonce, Tag, UnboundKey};
use zeroize::Zeroize;

use crate::error::AeadError;
use crate::primitives::{NONCE_LEN, TAG_LEN};

/// The ring key and 12-byte nonce that XChaCha20-Poly1305 uses for `(key, nonce)`.
fn subkey(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> (LessSafeKey, Nonce) {
    let mut head = [0u8; 16];
    head.copy_from_slice(&nonce[..16]);
    let mut sub = hchacha::<R20>(&(*key).into(), &head.into());
    let unbound = UnboundKey::new(&CHACHA20_POLY1305, sub.as_slice());
    sub.as_mut_slice().zeroize();
    let key = match unbound {
        Ok(k) => LessSafeKey::new(k),
        // ring refuses only a key of the wrong length; HChaCha20 always gives 32 bytes.
        Err(_) => unreachable!("ring refused a 32-byte chacha20-poly1305 key"),
    };
    let mut n12 = [0u8; 12];
    n12[4..].copy_from_slice(&nonce[16..]);
    (key, Nonce::assume_unique_for_key(n12))
}

/// Encrypts `buf` in place and appends the 16-byte tag.
pub(crate) fn seal_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) {
    let (key, nonce) = subkey(key, nonce);
    match key.seal_in_place_separate_tag(nonce, Aad::from(aad), buf.as_mut_slice()) {
        Ok(tag) => buf.extend_from_slice(tag.as_ref()),
        // ring refuses only inputs over 256 GiB, which no chunk comes near.
        Err(_) => unreachable!("chacha20-poly1305 refused to encrypt"),
    }
}

/// Decrypts ciphertext-with-tag in `buf`: on success `buf` holds the plaintext; on failure it
/// is zeroed and emptied, so no unauthenticated plaintext is left around.
pub(crate) fn open_in_place(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(), AeadError> {
    if buf.len() < TAG_LEN {
        return Err(AeadError::Truncated {
            len: buf.len(),
            min: TAG_LEN,
        });
    }
    let body_len = buf.len() - TAG_LEN;
    let mut tag = [0u8; TAG_LEN];
    tag.copy_from_slice(&buf[body_len..]);
    buf.truncate(body_len);
    let (key, nonce) = subkey(key, nonce);
    key.open_in_place_separate_tag(
        nonce,
        Aad::from(aad),
        Tag::from(tag),
        buf.as_mut_slice(),
        0..,
    )
    .map(|_| ())
    .map_err(|_| {
        buf.zeroize();
        buf.clear();
        AeadError::BadTag
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use chacha20poly1305::aead::{AeadInOut, KeyInit};
    use chacha20poly1305::{XChaCha20Poly1305, XNonce};
    use rand::Rng;

    fn reference_seal(key: &[u8; 32], nonce: &[u8; 24], aad: &[u8], msg: &[u8]) -> Vec<u8> {
        let mut buf = msg.to_vec();
        let tag = XChaCha20Poly1305::new(&(*key).into())
            .encrypt_inout_detached(&XNonce::from(*nonce), aad, buf.as_mut_slice().into())
            .unwrap();
        buf.extend_from_slice(tag.as_slice());
        buf
    }

    #[test]
    fn same_bytes_as_rustcrypto_xchacha20poly1305() {
        let mut rng = rand::rng();
        for len in [
            0usize,
            1,
            15,
            16,
            63,
            64,
            65,
            1000,
            4096,
            65_537,
            256 * 1024 + 3,
        ] {
            let mut key = [0u8; 32];
            let mut nonce = [0u8; 24];
            rng.fill_bytes(&mut key);
            rng.fill_bytes(&mut nonce);
            let mut msg = vec![0u8; len];
            rng.fill_bytes(&mut msg);
            let aad = b"cpnschnk aad";
            let reference = reference_seal(&key, &nonce, aad, &msg);
            let mut ours = msg.clone();
            seal_in_place(&key, &nonce, aad, &mut ours);
            assert_eq!(ours, reference, "sealed {len} bytes differ");
            open_in_place(&key, &nonce, aad, &mut ours).unwrap();
            assert_eq!(ours, msg, "opened {len} bytes differ");
        }
    }

    #[test]
    fn the_draft_test_vector() {
        // draft-irtf-cfrg-xchacha-03, A.3.1.
        let key: [u8; 32] =
            hex::decode("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f")
                .unwrap()
                .try_into()
                .unwrap();
        let nonce: [u8; 24] = hex::decode("404142434445464748494a4b4c4d4e4f5051525354555657")
            .unwrap()
            .try_into()
            .unwrap();
        let aad = hex::decode("50515253c0c1c2c3c4c5c6c7").unwrap();
        let msg = b"Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.";
        let mut buf = msg.to_vec();
        seal_in_place(&key, &nonce, &aad, &mut buf);
        let tag = &buf[buf.len() - 16..];
        assert_eq!(hex::encode(tag), "c0875924c1c7987947deafd8780acf49");
        assert_eq!(hex::encode(&buf[..16]), "bd6d179d3e83d43b9576579493c0e939");
    }

    #[test]
    fn tampering_fails_and_leaves_nothing() {
        let key = [9u8; 32];
        let nonce = [4u8; 24];
        let mut buf = b"chunk".to_vec();
        seal_in_place(&key, &nonce, b"a", &mut buf);
        let mut bad = buf.clone();
        bad[0] ^= 1;
        assert_eq!(
            open_in_place(&key, &nonce, b"a", &mut bad),
            Err(AeadError::BadTag)
        );
        assert!(bad.is_empty());
        let mut other_aad = buf.clone();
        assert_eq!(
            open_in_place(&key, &nonce, b"b", &mut other_aad),
            Err(AeadError::BadTag)
        );
        let mut short = vec![1u8; 5];
        assert_eq!(
            open_in_place(&key, &nonce, b"a", &mut short),
            Err(AeadError::Truncated { len: 5, min: 16 })
        );
    }
}
