//! Personal Network and Service Group keys (spec 5.6.6).
//!
//! One symmetric key per group, with an epoch: `cpns-auth` creates epoch 0 when the group is
//! established and [`GroupKey::rotate`]s on every membership change, so an expelled member
//! cannot open anything sealed after its expulsion. The key itself is never used directly:
//! each use (message sealing, chunk streams, keyed hashes) gets its own HKDF subkey.

use std::fmt;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::canonical::{DecodeError, Reader, Writer};
use crate::error::AeadError;
use crate::primitives::{self, NONCE_LEN, TAG_LEN};

const SEAL_AAD_TAG: &[u8] = b"cpns group v1";
const SEAL_KEY_INFO: &[u8] = b"cpns group seal v1";
/// v2: the chunk key is per sender (v1 was one key for every sender of an epoch).
const CHUNK_KEY_INFO: &[u8] = b"cpns group chunk v2";
const CHUNK_AAD_TAG: &[u8; 8] = b"cpnschnk";
const KEYED_HASH_INFO: &[u8] = b"cpns group keyed-hash v1";

/// Version byte of [`GroupKey::encode_secret`].
const SECRET_VERSION: u8 = 1;

/// Longest group id [`GroupKey::decode_secret`] accepts, in bytes.
pub const MAX_GROUP_ID_LEN: usize = 256;

/// Longest PeerId encoding carried in chunk AAD: a multihash code (u64) plus at most 64 digest
/// bytes, so the AAD fits a stack buffer and sealing a chunk allocates only its output.
const MAX_DIGEST_LEN: usize = 64;

/// Names a group: `pn:<hex>` for a Personal Network, `sg:<hex>` for a Service Group.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct GroupId(pub String);

impl fmt::Display for GroupId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The symmetric key of one group at one epoch. Key bytes are zeroized on drop; `Debug` shows
/// the group and epoch only.
///
/// The `Serialize` form contains the secret: only serialize it to the owner's own storage, and
/// send it to members sealed under their EUKey via [`encode_secret`](Self::encode_secret).
#[derive(Clone, Zeroize, ZeroizeOnDrop, Serialize, Deserialize)]
pub struct GroupKey {
    #[zeroize(skip)]
    group: GroupId,
    #[zeroize(skip)]
    epoch: u64,
    key: [u8; 32],
}

impl GroupKey {
    /// A fresh random key for `group` at `epoch`.
    pub fn generate(group: GroupId, epoch: u64) -> Self {
        GroupKey {
            group,
            epoch,
            key: primitives::random_array(),
        }
    }

    /// Rebuilds a key from its parts (storage, or a key received from the server).
    pub fn from_parts(group: GroupId, epoch: u64, key: [u8; 32]) -> Self {
        GroupKey { group, epoch, key }
    }

    /// The group this key belongs to.
    pub fn group(&self) -> &GroupId {
        &self.group
    }

    /// The key's epoch; it goes up by one at every rotation.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The raw key bytes, for storage by a member or the server.
    pub fn key_bytes(&self) -> [u8; 32] {
        self.key
    }

    /// The next epoch's key: epoch + 1 and fresh random bytes, unrelated to this key, so
    /// knowing an old key reveals nothing about the new one.
    pub fn rotate(&self) -> Self {
        GroupKey::generate(self.group.clone(), self.epoch.saturating_add(1))
    }

    fn seal_key(&self) -> Zeroizing<[u8; 32]> {
        primitives::hkdf32(None, &self.key, &[SEAL_KEY_INFO])
    }

    fn seal_aad(group: &GroupId, epoch: u64, sender: &PeerId) -> Vec<u8> {
        let mut aad = Vec::with_capacity(SEAL_AAD_TAG.len() + 2 + group.0.len() + 8 + 40);
        aad.extend_from_slice(SEAL_AAD_TAG);
        aad.extend_from_slice(
            &u16::try_from(group.0.len())
                .unwrap_or(u16::MAX)
                .to_be_bytes(),
        );
        aad.extend_from_slice(group.0.as_bytes());
        aad.extend_from_slice(&epoch.to_be_bytes());
        aad.extend_from_slice(&sender.to_bytes());
        aad
    }

    /// Seals a message for the group, from `sender`. The AAD binds group, epoch and sender, so
    /// a receiver knows which member (and which epoch) the content claims to come from.
    ///
    /// Any member can seal as any sender: the group key proves membership, not authorship.
    /// Sign the plaintext with the sender's [`crate::Identity`] where authorship matters.
    pub fn seal(&self, sender: &PeerId, plaintext: &[u8]) -> GroupSealed {
        let nonce = primitives::random_array();
        let aad = Self::seal_aad(&self.group, self.epoch, sender);
        let ciphertext = primitives::xchacha_seal(&self.seal_key(), &nonce, &aad, plaintext);
        GroupSealed {
            group: self.group.clone(),
            epoch: self.epoch,
            sender: *sender,
            nonce,
            ciphertext,
        }
    }

    /// Opens a [`GroupSealed`]. The group and epoch are compared first, so a caller holding
    /// several epochs learns which key to use ([`AeadError::WrongEpoch`]) without a crypto
    /// failure; then the tag is checked ([`AeadError::BadTag`] on any tampering).
    pub fn open(&self, sealed: &GroupSealed) -> Result<Vec<u8>, AeadError> {
        if sealed.group != self.group {
            return Err(AeadError::WrongGroup {
                expected: self.group.clone(),
                found: sealed.group.clone(),
            });
        }
        if sealed.epoch != self.epoch {
            return Err(AeadError::WrongEpoch {
                expected: self.epoch,
                found: sealed.epoch,
            });
        }
        let aad = Self::seal_aad(&sealed.group, sealed.epoch, &sealed.sender);
        primitives::xchacha_open(&self.seal_key(), &sealed.nonce, &aad, &sealed.ciphertext)
    }

    /// Chunk subkey: bound to group, epoch and *sender* through HKDF `info`, so chunks of one
    /// group or epoch never open under another's key, and two senders of one epoch never
    /// share a key: the nonces of one sender's streams cannot collide with another's, whatever
    /// stream ids either picks (issue 14).
    fn chunk_key(&self, sender: &PeerId) -> Zeroizing<[u8; 32]> {
        let group = self.group.0.as_bytes();
        let group_len = u32::try_from(group.len()).unwrap_or(u32::MAX).to_be_bytes();
        let epoch = self.epoch.to_be_bytes();
        let sender = sender.to_bytes();
        let sender_len = u32::try_from(sender.len())
            .unwrap_or(u32::MAX)
            .to_be_bytes();
        primitives::hkdf32(
            None,
            &self.key,
            &[
                CHUNK_KEY_INFO,
                &group_len,
                group,
                &epoch,
                &sender_len,
                &sender,
            ],
        )
    }

    /// Chunk nonce: unique as long as `(stream_id, index)` never repeats under one sender's
    /// key, which holds when each stream picks a random `stream_id` (a collision needs ~2^32
    /// streams of one sender per epoch) and numbers its chunks.
    fn chunk_nonce(stream_id: u64, index: u64) -> [u8; NONCE_LEN] {
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..8].copy_from_slice(CHUNK_AAD_TAG);
        nonce[8..16].copy_from_slice(&stream_id.to_be_bytes());
        nonce[16..].copy_from_slice(&index.to_be_bytes());
        nonce
    }

    /// Chunk AAD on the stack: tag, epoch, sender (multihash code, digest length, digest),
    /// stream id, index, last flag. Returns the buffer and the used length.
    fn chunk_aad(
        &self,
        sender: &PeerId,
        stream_id: u64,
        index: u64,
        last: bool,
    ) -> ([u8; 8 + 8 + 8 + 1 + MAX_DIGEST_LEN + 8 + 8 + 1], usize) {
        let mut aad = [0u8; 8 + 8 + 8 + 1 + MAX_DIGEST_LEN + 8 + 8 + 1];
        let mh = sender.as_ref();
        // A PeerId's multihash holds at most 64 digest bytes (libp2p's `Multihash<64>`).
        let digest = &mh.digest()[..mh.digest().len().min(MAX_DIGEST_LEN)];
        let mut at = 0;
        let mut put = |bytes: &[u8]| {
            aad[at..at + bytes.len()].copy_from_slice(bytes);
            at += bytes.len();
        };
        put(CHUNK_AAD_TAG);
        put(&self.epoch.to_be_bytes());
        put(&mh.code().to_be_bytes());
        put(&[u8::try_from(digest.len()).unwrap_or(u8::MAX)]);
        put(digest);
        put(&stream_id.to_be_bytes());
        put(&index.to_be_bytes());
        put(&[u8::from(last)]);
        (aad, at)
    }

    /// Seals chunk `index` of content stream `stream_id`, for bulk content delivery.
    ///
    /// The nonce is derived from `(stream_id, index)` and not sent: the output is just
    /// ciphertext and a 16-byte tag, and sealing allocates only that output. The AAD binds the
    /// epoch, sender, stream id, index and `last` (group via the subkey), so reordered,
    /// replayed-across-streams or cross-group chunks fail to open, and so does a stream cut
    /// short: the receiver must see a chunk that opens with `last = true` before accepting the
    /// content. Pick `stream_id` at random for every stream.
    pub fn seal_chunk(
        &self,
        sender: &PeerId,
        stream_id: u64,
        index: u64,
        last: bool,
        chunk: &[u8],
    ) -> Vec<u8> {
        let (aad, aad_len) = self.chunk_aad(sender, stream_id, index, last);
        let mut out = Vec::with_capacity(chunk.len() + TAG_LEN);
        out.extend_from_slice(chunk);
        primitives::xchacha_seal_in_place(
            &self.chunk_key(sender),
            &Self::chunk_nonce(stream_id, index),
            &aad[..aad_len],
            &mut out,
        );
        out
    }

    /// Opens a chunk sealed by [`seal_chunk`](Self::seal_chunk) with the same sender, stream
    /// id, index and `last` flag. The caller tracks the expected index and treats the stream
    /// as complete only after a chunk opened with `last = true`.
    pub fn open_chunk(
        &self,
        sender: &PeerId,
        stream_id: u64,
        index: u64,
        last: bool,
        sealed: &[u8],
    ) -> Result<Vec<u8>, AeadError> {
        let (aad, aad_len) = self.chunk_aad(sender, stream_id, index, last);
        primitives::xchacha_open_in_place(
            &self.chunk_key(sender),
            &Self::chunk_nonce(stream_id, index),
            &aad[..aad_len],
            sealed,
        )
    }

    /// [`seal_chunk`](Self::seal_chunk) without a copy: encrypts `buf` where it is and
    /// appends the tag. For bulk delivery, where the chunk was just read into `buf`.
    pub fn seal_chunk_in_place(
        &self,
        sender: &PeerId,
        stream_id: u64,
        index: u64,
        last: bool,
        buf: &mut Vec<u8>,
    ) {
        let (aad, aad_len) = self.chunk_aad(sender, stream_id, index, last);
        primitives::xchacha_seal_in_place(
            &self.chunk_key(sender),
            &Self::chunk_nonce(stream_id, index),
            &aad[..aad_len],
            buf,
        );
    }

    /// [`open_chunk`](Self::open_chunk) without a copy: on success `buf` holds the plaintext;
    /// on failure it is left empty.
    pub fn open_chunk_in_place(
        &self,
        sender: &PeerId,
        stream_id: u64,
        index: u64,
        last: bool,
        buf: &mut Vec<u8>,
    ) -> Result<(), AeadError> {
        let (aad, aad_len) = self.chunk_aad(sender, stream_id, index, last);
        primitives::xchacha_open_vec_in_place(
            &self.chunk_key(sender),
            &Self::chunk_nonce(stream_id, index),
            &aad[..aad_len],
            buf,
        )
    }

    /// HMAC-SHA256 of `data` under a subkey for `domain`: DHT keyword keys are published as
    /// keyed hashes so non-members can neither read nor enumerate a group's keywords.
    /// Different domains give unrelated hashes.
    pub fn keyed_hash(&self, domain: &str, data: &[u8]) -> [u8; 32] {
        use hmac::Mac;
        let subkey = primitives::hkdf32(None, &self.key, &[KEYED_HASH_INFO, domain.as_bytes()]);
        let mut mac = primitives::hmac_sha256(&subkey);
        mac.update(data);
        mac.finalize().into_bytes().into()
    }

    /// The key as canonical bytes (version, `u16`-prefixed group id, epoch, key), to travel
    /// sealed under a member's [`crate::EuKey`]. The result holds the secret: seal it at once.
    pub fn encode_secret(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(SECRET_VERSION, 1 + 2 + self.group.0.len() + 8 + 32);
        w.bytes16(self.group.0.as_bytes())
            .u64(self.epoch)
            .fixed(&self.key);
        w.finish()
    }

    /// Parses [`encode_secret`](Self::encode_secret) output; size-limited and never panics.
    pub fn decode_secret(b: &[u8]) -> Result<Self, AeadError> {
        let malformed = |e: DecodeError| AeadError::Malformed(e.to_string());
        let mut r = Reader::new(b, SECRET_VERSION).map_err(malformed)?;
        let group = r
            .str16("group id", MAX_GROUP_ID_LEN)
            .map_err(malformed)?
            .to_owned();
        let epoch = r.u64("epoch").map_err(malformed)?;
        let key = Zeroizing::new(r.fixed::<32>("key").map_err(malformed)?);
        r.finish().map_err(malformed)?;
        Ok(GroupKey::from_parts(GroupId(group), epoch, *key))
    }
}

impl fmt::Debug for GroupKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GroupKey")
            .field("group", &self.group)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

/// A message sealed under a [`GroupKey`]; the group, epoch and sender travel in clear (and are
/// authenticated as AAD) so receivers can pick the right key.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupSealed {
    /// The group whose key sealed it.
    pub group: GroupId,
    /// The key epoch it was sealed under.
    pub epoch: u64,
    /// The member that claims to have sealed it.
    pub sender: PeerId,
    /// The random XChaCha20 nonce.
    pub nonce: [u8; 24],
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use rand::Rng;

    fn pn() -> GroupId {
        GroupId("pn:1f3a".into())
    }

    fn alice() -> PeerId {
        Identity::from_secret_bytes([1; 32]).peer_id()
    }

    #[test]
    fn seal_open_round_trip() {
        let k = GroupKey::generate(pn(), 0);
        let s = k.seal(&alice(), b"hello group");
        assert_eq!((s.group.clone(), s.epoch, s.sender), (pn(), 0, alice()));
        assert_eq!(k.open(&s).unwrap(), b"hello group");
        let stored = GroupKey::from_parts(k.group().clone(), k.epoch(), k.key_bytes());
        assert_eq!(stored.open(&s).unwrap(), b"hello group");
    }

    #[test]
    fn wrong_key_is_bad_tag() {
        let s = GroupKey::generate(pn(), 0).seal(&alice(), b"x");
        assert_eq!(GroupKey::generate(pn(), 0).open(&s), Err(AeadError::BadTag));
    }

    #[test]
    fn wrong_group_and_epoch_are_reported_before_decrypting() {
        let k = GroupKey::generate(pn(), 3);
        let s = k.seal(&alice(), b"x");
        let other = GroupKey::from_parts(GroupId("sg:77".into()), 3, k.key_bytes());
        assert_eq!(
            other.open(&s),
            Err(AeadError::WrongGroup {
                expected: GroupId("sg:77".into()),
                found: pn()
            })
        );
        let next = GroupKey::from_parts(pn(), 4, k.key_bytes());
        assert_eq!(
            next.open(&s),
            Err(AeadError::WrongEpoch {
                expected: 4,
                found: 3
            })
        );
    }

    #[test]
    fn tampered_header_fields_fail() {
        let k = GroupKey::generate(pn(), 3);
        let s = k.seal(&alice(), b"x");
        let mut t = s.clone();
        t.sender = Identity::from_secret_bytes([2; 32]).peer_id();
        assert_eq!(k.open(&t), Err(AeadError::BadTag));
        // A key holder that relabels group or epoch still fails the AAD check.
        let relabeled = GroupKey::from_parts(GroupId("sg:77".into()), 3, k.key_bytes());
        let mut t = s.clone();
        t.group = GroupId("sg:77".into());
        assert_eq!(relabeled.open(&t), Err(AeadError::BadTag));
        let next = GroupKey::from_parts(pn(), 4, k.key_bytes());
        let mut t = s.clone();
        t.epoch = 4;
        assert_eq!(next.open(&t), Err(AeadError::BadTag));
        let mut t = s.clone();
        t.ciphertext[0] ^= 0x80;
        assert_eq!(k.open(&t), Err(AeadError::BadTag));
    }

    #[test]
    fn truncated_ciphertext() {
        let k = GroupKey::generate(pn(), 0);
        let s = k.seal(&alice(), b"hello");
        let mut t = s.clone();
        t.ciphertext.truncate(TAG_LEN - 1);
        assert_eq!(
            k.open(&t),
            Err(AeadError::Truncated {
                len: TAG_LEN - 1,
                min: TAG_LEN
            })
        );
        let mut t = s.clone();
        t.ciphertext.pop();
        assert_eq!(k.open(&t), Err(AeadError::BadTag));
    }

    #[test]
    fn rotate_bumps_epoch_and_cannot_open_old() {
        let k0 = GroupKey::generate(pn(), 0);
        let s = k0.seal(&alice(), b"before");
        let k1 = k0.rotate();
        assert_eq!(k1.epoch(), 1);
        assert_eq!(k1.group(), &pn());
        assert_ne!(k1.key_bytes(), k0.key_bytes());
        assert_eq!(
            k1.open(&s),
            Err(AeadError::WrongEpoch {
                expected: 1,
                found: 0
            })
        );
        // Even relabelled to the new epoch, the new key cannot open the old ciphertext.
        let mut relabeled = s.clone();
        relabeled.epoch = 1;
        assert_eq!(k1.open(&relabeled), Err(AeadError::BadTag));
        // And an expelled member holding k0 cannot open what k1 seals.
        let after = k1.seal(&alice(), b"after");
        let k0_as_1 = GroupKey::from_parts(pn(), 1, k0.key_bytes());
        assert_eq!(k0_as_1.open(&after), Err(AeadError::BadTag));
    }

    #[test]
    fn two_senders_never_share_a_chunk_keystream() {
        let k = GroupKey::generate(GroupId("g".into()), 1);
        let (a, b) = (PeerId::random(), PeerId::random());
        let data = [0u8; 64];
        // Same stream id and index (a collision, or a member copying another's stream id).
        let ca = k.seal_chunk(&a, 7, 0, false, &data);
        let cb = k.seal_chunk(&b, 7, 0, false, &data);
        assert_ne!(ca[..64], cb[..64], "one keystream for two senders");
        assert!(k.open_chunk(&b, 7, 0, false, &ca).is_err());
        assert_eq!(k.open_chunk(&a, 7, 0, false, &ca).unwrap(), data);
    }

    #[test]
    fn in_place_chunks_match_and_refuse_tampering() {
        let k = GroupKey::generate(pn(), 4);
        let sender = alice();
        let data = vec![7u8; 5000];
        let mut buf = data.clone();
        k.seal_chunk_in_place(&sender, 9, 3, true, &mut buf);
        assert_eq!(
            buf,
            k.seal_chunk(&sender, 9, 3, true, &data),
            "same bytes as the copying API"
        );
        let mut opened = buf.clone();
        k.open_chunk_in_place(&sender, 9, 3, true, &mut opened)
            .unwrap();
        assert_eq!(opened, data);
        let mut wrong_index = buf.clone();
        assert_eq!(
            k.open_chunk_in_place(&sender, 9, 4, true, &mut wrong_index),
            Err(AeadError::BadTag)
        );
        assert!(
            wrong_index.is_empty(),
            "no unauthenticated plaintext is left"
        );
        let mut flipped = buf.clone();
        flipped[10] ^= 1;
        assert_eq!(
            k.open_chunk_in_place(&sender, 9, 3, true, &mut flipped),
            Err(AeadError::BadTag)
        );
        let mut short = vec![1u8; 5];
        assert!(matches!(
            k.open_chunk_in_place(&sender, 9, 3, true, &mut short),
            Err(AeadError::Truncated { .. })
        ));
    }

    #[test]
    fn chunk_round_trip_and_binding() {
        let k = GroupKey::generate(pn(), 2);
        let sender = alice();
        let stream = rand::rng().next_u64();
        let chunks: Vec<Vec<u8>> = (0..3u8).map(|i| vec![i; 1000 + usize::from(i)]).collect();
        let sealed: Vec<Vec<u8>> = chunks
            .iter()
            .enumerate()
            .map(|(i, c)| k.seal_chunk(&sender, stream, i as u64, i == 2, c))
            .collect();
        for (i, s) in sealed.iter().enumerate() {
            assert_eq!(s.len(), chunks[i].len() + TAG_LEN);
            assert_eq!(
                k.open_chunk(&sender, stream, i as u64, i == 2, s).unwrap(),
                chunks[i]
            );
        }
        // Reordered: chunk 1 presented as index 0.
        assert_eq!(
            k.open_chunk(&sender, stream, 0, false, &sealed[1]),
            Err(AeadError::BadTag)
        );
        // Truncation: a middle chunk claimed to be the last one, and the last one claimed not.
        assert_eq!(
            k.open_chunk(&sender, stream, 1, true, &sealed[1]),
            Err(AeadError::BadTag)
        );
        assert_eq!(
            k.open_chunk(&sender, stream, 2, false, &sealed[2]),
            Err(AeadError::BadTag)
        );
        // Other stream, other sender, other epoch, other group.
        assert_eq!(
            k.open_chunk(&sender, stream ^ 1, 0, false, &sealed[0]),
            Err(AeadError::BadTag)
        );
        let bob = Identity::from_secret_bytes([2; 32]).peer_id();
        assert_eq!(
            k.open_chunk(&bob, stream, 0, false, &sealed[0]),
            Err(AeadError::BadTag)
        );
        let other_epoch = GroupKey::from_parts(pn(), 3, k.key_bytes());
        assert_eq!(
            other_epoch.open_chunk(&sender, stream, 0, false, &sealed[0]),
            Err(AeadError::BadTag)
        );
        let other_group = GroupKey::from_parts(GroupId("sg:1".into()), 2, k.key_bytes());
        assert_eq!(
            other_group.open_chunk(&sender, stream, 0, false, &sealed[0]),
            Err(AeadError::BadTag)
        );
        // Too short to hold a tag.
        assert_eq!(
            k.open_chunk(&sender, stream, 0, false, &sealed[0][..5]),
            Err(AeadError::Truncated {
                len: 5,
                min: TAG_LEN
            })
        );
        // Empty chunks work (e.g. an empty final marker).
        let empty = k.seal_chunk(&sender, stream, 3, true, b"");
        assert_eq!(k.open_chunk(&sender, stream, 3, true, &empty).unwrap(), b"");
    }

    #[test]
    fn keyed_hash_depends_on_key_domain_and_data() {
        let k = GroupKey::from_parts(pn(), 0, [5; 32]);
        let h = k.keyed_hash("keyword", b"printer");
        assert_eq!(h, k.keyed_hash("keyword", b"printer"));
        assert_ne!(h, k.keyed_hash("service", b"printer"));
        assert_ne!(h, k.keyed_hash("keyword", b"printers"));
        assert_ne!(
            h,
            GroupKey::from_parts(pn(), 0, [6; 32]).keyed_hash("keyword", b"printer")
        );
    }

    #[test]
    fn secret_encoding_round_trip_and_limits() {
        let k = GroupKey::generate(pn(), 9);
        let b = k.encode_secret();
        let back = GroupKey::decode_secret(&b).unwrap();
        assert_eq!(
            (back.group(), back.epoch(), back.key_bytes()),
            (k.group(), 9, k.key_bytes())
        );
        for len in 0..b.len() {
            assert!(
                matches!(
                    GroupKey::decode_secret(&b[..len]),
                    Err(AeadError::Malformed(_))
                ),
                "prefix {len}"
            );
        }
        let mut trailing = b.clone();
        trailing.push(1);
        assert!(matches!(
            GroupKey::decode_secret(&trailing),
            Err(AeadError::Malformed(_))
        ));
        let long = GroupKey::generate(GroupId("x".repeat(MAX_GROUP_ID_LEN + 1)), 0);
        assert!(matches!(
            GroupKey::decode_secret(&long.encode_secret()),
            Err(AeadError::Malformed(_))
        ));
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(3);
        for _ in 0..1000 {
            let mut g = vec![0u8; (rng.next_u32() % 80) as usize];
            rng.fill_bytes(&mut g);
            assert!(GroupKey::decode_secret(&g).is_err());
        }
        // Travels sealed under an EUKey.
        let eu = crate::EuKey::generate();
        let sealed = eu.seal(b"pn:1f3a/9", &k.encode_secret());
        let opened = GroupKey::decode_secret(&eu.open(b"pn:1f3a/9", &sealed).unwrap()).unwrap();
        assert_eq!(opened.key_bytes(), k.key_bytes());
    }

    #[test]
    fn debug_shows_no_key() {
        let k = GroupKey::from_parts(pn(), 7, [0xee; 32]);
        let dbg = format!("{k:?}");
        assert!(dbg.contains("pn:1f3a") && dbg.contains('7'));
        assert!(!dbg.contains("eeee") && !dbg.contains("238"));
    }
}
