//! Keys and the cryptography of CPNS: who a node is, what the CA vouches for, and how group
//! content is kept to group members.
//!
//! Everything here is synchronous and side-effect free except [`Identity::load`] and
//! [`Identity::save`]. Every check that depends on time takes `now: UnixTime`, so tests (and
//! offline nodes) decide what "now" is.
//!
//! # The pieces
//!
//! * [`Identity`] — an ed25519 secret key. Its [`PublicKey`] *is* the libp2p [`PeerId`]
//!   (the same key drives noise handshakes, see [`Identity::to_libp2p_keypair`]).
//! * [`EntityCredential`] — the CA's signature over `{entity, user, device, modes, serial,
//!   issued, expires}`. Peers check it offline against the pinned CA [`PublicKey`] with
//!   [`EntityCredential::verify_for`], then against the CA's [`RevocationList`].
//! * [`EuKey`] — the symmetric Entity-User Key shared by an entity and `cpns-auth`: MACs for
//!   challenge-response, sealing for what the server sends the entity.
//! * [`GroupKey`] — one per PN or Service Group, with an epoch that goes up on every
//!   membership change. Seals group messages ([`GroupKey::seal`]), content streams
//!   ([`GroupKey::seal_chunk`]) and hides DHT keywords ([`GroupKey::keyed_hash`]).
//! * [`seal_to`] — encrypt to a peer knowing only its public key (e.g. its PeerId).
//!
//! Signed bytes never come from serde: credentials and revocation lists are signed over a
//! small canonical encoding preceded by a domain tag, so one kind of signature can never pass
//! as another and the bytes are identical on every build. The serde impls exist so other
//! crates can embed these types in their own messages.
//!
//! # Example
//!
//! ```
//! use cpns_keys::{
//!     CredentialBody, EntityCredential, EuKey, GroupId, GroupKey, Identity, Mode, Modes,
//!     RevocationList, seal_to,
//! };
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let now = 1_700_000_000;
//! let ca = Identity::generate(); // held by cpns-auth; nodes pin ca.public()
//! let phone = Identity::generate(); // a device's identity, its PeerId
//!
//! // Enrolment: the CA certifies the device and hands it an EUKey sealed to its key.
//! let cred = EntityCredential::issue(&ca, CredentialBody {
//!     entity: phone.peer_id(),
//!     user: "alice".into(),
//!     device: "phone".into(),
//!     modes: Modes::PNE,
//!     serial: 1,
//!     issued: now,
//!     expires: now + 86_400,
//! });
//! let eukey = EuKey::generate();
//! let boxed = seal_to(&phone.public(), b"eukey", &eukey.to_bytes());
//! let received = EuKey::from_bytes(phone.open_sealed(b"eukey", &boxed)?.as_slice().try_into()?);
//!
//! // Any peer, offline: check the credential the phone presents over its connection.
//! let cred = EntityCredential::from_bytes(&cred.to_bytes())?;
//! cred.verify_for(&ca.public(), &phone.peer_id(), Some(Mode::Pne), now)?;
//! RevocationList::sign(&ca, 1, now, [])?.check(&cred)?;
//!
//! // The server wraps the PN key under the EUKey; members seal content with it.
//! let pn_key = GroupKey::generate(GroupId("pn:1f3a".into()), 0);
//! let wrapped = eukey.seal(b"pn:1f3a", &pn_key.encode_secret());
//! let pn_key = GroupKey::decode_secret(&received.open(b"pn:1f3a", &wrapped)?)?;
//! let msg = pn_key.seal(&phone.peer_id(), b"hello PN");
//! assert_eq!(pn_key.open(&msg)?, b"hello PN");
//! # Ok(())
//! # }
//! ```

mod bulk;
mod canonical;
mod credential;
mod error;
mod eukey;
mod group;
mod identity;
mod primitives;
mod revocation;
mod seal;

pub use credential::{
    CredentialBody, EntityCredential, MAX_CREDENTIAL_LEN, MAX_NAME_LEN, Mode, Modes, ParseModeError,
};
pub use error::{AeadError, CredentialError, KeyError, KeyFileError};
pub use eukey::{EuKey, Sealed};
pub use group::{GroupId, GroupKey, GroupSealed, MAX_GROUP_ID_LEN};
pub use identity::{Identity, PublicKey, Signature};
pub use revocation::{MAX_REVOCATIONS, RevocationList};
pub use seal::{SealedBox, seal_to};

/// The libp2p peer identifier, re-exported so users of this crate name the same type.
pub use libp2p_identity::PeerId;

/// Seconds since the Unix epoch. All verification takes it as a parameter so tests are
/// deterministic and callers choose their clock.
pub type UnixTime = u64;
