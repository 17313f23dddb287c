//! Entity credentials: the CA's signed statement that a PeerId belongs to a user's device and
//! may run in certain modes, until a given time.
//!
//! A credential verifies offline against the pinned CA key, which is what lets enrolled devices
//! keep admitting each other while `cpns-auth` is unreachable. Revocation is by
//! [`EntityCredential::serial`] (see [`crate::RevocationList`]), never by a hash of an encoding.

use std::fmt;
use std::str::FromStr;

use libp2p_identity::PeerId;
use serde::{Deserialize, Serialize};

use crate::UnixTime;
use crate::canonical::{DecodeError, Reader, Writer};
use crate::error::CredentialError;
use crate::identity::{Identity, PublicKey, Signature};

/// Domain tag signed before the body, so a CA signature over a credential can never be
/// mistaken for a signature over another kind of object (e.g. a revocation list).
pub(crate) const CREDENTIAL_TAG: &[u8] = b"cpns credential v1";

/// Version byte of the credential encoding.
const CREDENTIAL_VERSION: u8 = 1;

/// Largest encoded credential [`EntityCredential::from_bytes`] accepts. A real one is a few
/// hundred bytes; the cap bounds the work a remote peer can make us do.
pub const MAX_CREDENTIAL_LEN: usize = 4096;

/// Longest user or device name, in bytes of UTF-8.
pub const MAX_NAME_LEN: usize = 256;

/// Longest PeerId encoding (a multihash with at most 64 digest bytes plus its varint header).
const MAX_PEER_ID_LEN: usize = 80;

/// A mode an entity can run in (spec 5.1): an ordinary personal-network entity, or the PN's
/// gateway towards the network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Mode {
    /// Personal Network Entity: a device taking part in a PN.
    Pne,
    /// PN gateway: relays, holds the directory, talks to the operator side.
    Gateway,
}

impl Mode {
    fn bit(self) -> u8 {
        match self {
            Mode::Pne => 0b01,
            Mode::Gateway => 0b10,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Mode::Pne => "pne",
            Mode::Gateway => "gateway",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The text could not be parsed as a [`Mode`] or [`Modes`].
#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
#[error("invalid mode {0:?}: expected \"pne\", \"gateway\" or a comma list of them")]
pub struct ParseModeError(pub String);

impl FromStr for Mode {
    type Err = ParseModeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "pne" => Ok(Mode::Pne),
            "gateway" => Ok(Mode::Gateway),
            other => Err(ParseModeError(other.to_owned())),
        }
    }
}

/// A set of [`Mode`]s, as a credential allows them. A bit set: cheap to copy and to encode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct Modes(u8);

impl Modes {
    /// Only [`Mode::Pne`].
    pub const PNE: Modes = Modes(0b01);
    /// Only [`Mode::Gateway`].
    pub const GATEWAY: Modes = Modes(0b10);
    /// Every mode.
    pub const ALL: Modes = Modes(0b11);

    /// Whether `mode` is in the set.
    pub fn contains(&self, mode: Mode) -> bool {
        self.0 & mode.bit() != 0
    }

    /// Adds `mode` to the set.
    pub fn insert(&mut self, mode: Mode) {
        self.0 |= mode.bit();
    }

    /// Whether the set has no mode (such a credential allows nothing).
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }

    fn from_bits(bits: u8) -> Option<Modes> {
        (bits & !Modes::ALL.0 == 0).then_some(Modes(bits))
    }
}

impl From<Mode> for Modes {
    fn from(mode: Mode) -> Self {
        Modes(mode.bit())
    }
}

impl FromIterator<Mode> for Modes {
    fn from_iter<I: IntoIterator<Item = Mode>>(iter: I) -> Self {
        let mut modes = Modes::default();
        for m in iter {
            modes.insert(m);
        }
        modes
    }
}

impl TryFrom<u8> for Modes {
    type Error = ParseModeError;

    fn try_from(bits: u8) -> Result<Self, Self::Error> {
        Modes::from_bits(bits).ok_or_else(|| ParseModeError(format!("bits {bits:#04x}")))
    }
}

impl From<Modes> for u8 {
    fn from(m: Modes) -> u8 {
        m.0
    }
}

impl fmt::Display for Modes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for m in [Mode::Pne, Mode::Gateway] {
            if self.contains(m) {
                if !first {
                    f.write_str(",")?;
                }
                f.write_str(m.name())?;
                first = false;
            }
        }
        Ok(())
    }
}

impl FromStr for Modes {
    type Err = ParseModeError;

    /// Parses a comma list such as `pne,gateway`; order does not matter, unknown names and the
    /// empty string are errors (a credential with no mode is never what an operator meant).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim().is_empty() {
            return Err(ParseModeError(s.to_owned()));
        }
        s.split(',').map(str::parse::<Mode>).collect()
    }
}

/// What the CA certifies about an entity (spec 5.4 entity credential).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialBody {
    /// The entity's PeerId, i.e. its identity key.
    pub entity: PeerId,
    /// The user the device belongs to.
    pub user: String,
    /// The device's name, as shown to the user.
    pub device: String,
    /// Modes the entity may run in.
    pub modes: Modes,
    /// CA-assigned serial, unique per CA: what revocation lists name.
    pub serial: u64,
    /// Start of validity.
    pub issued: UnixTime,
    /// End of validity (exclusive).
    pub expires: UnixTime,
}

impl CredentialBody {
    /// The limits every decoder enforces, checked before signing bytes are even computed.
    fn check_limits(&self) -> Result<(), CredentialError> {
        for (field, value) in [("user", &self.user), ("device", &self.device)] {
            if value.len() > MAX_NAME_LEN {
                return Err(CredentialError::Malformed(format!(
                    "{field} too long: {} > {MAX_NAME_LEN}",
                    value.len()
                )));
            }
        }
        Ok(())
    }

    fn encode(&self, w: &mut Writer) {
        w.bytes16(&self.entity.to_bytes())
            .bytes16(self.user.as_bytes())
            .bytes16(self.device.as_bytes())
            .u8(self.modes.0)
            .u64(self.serial)
            .u64(self.issued)
            .u64(self.expires);
    }

    fn decode(r: &mut Reader<'_>) -> Result<Self, DecodeError> {
        let entity = r.bytes16("entity", MAX_PEER_ID_LEN)?;
        let entity = PeerId::from_bytes(entity).map_err(|e| DecodeError::Invalid {
            field: "entity",
            reason: e.to_string(),
        })?;
        let user = r.str16("user", MAX_NAME_LEN)?.to_owned();
        let device = r.str16("device", MAX_NAME_LEN)?.to_owned();
        let bits = r.u8("modes")?;
        let modes = Modes::from_bits(bits).ok_or_else(|| DecodeError::Invalid {
            field: "modes",
            reason: format!("unknown bits {bits:#04x}"),
        })?;
        Ok(CredentialBody {
            entity,
            user,
            device,
            modes,
            serial: r.u64("serial")?,
            issued: r.u64("issued")?,
            expires: r.u64("expires")?,
        })
    }
}

/// The bytes the CA signs: domain tag, then the versioned canonical body.
pub(crate) fn signed_bytes(body: &CredentialBody) -> Vec<u8> {
    let mut w = Writer::with_prefix(CREDENTIAL_TAG, CREDENTIAL_VERSION);
    body.encode(&mut w);
    w.finish()
}

/// A [`CredentialBody`] with the CA's signature: what an entity presents to its peers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntityCredential {
    /// The certified statement.
    pub body: CredentialBody,
    /// The CA's signature over the domain tag and the canonical body.
    pub ca_signature: Signature,
}

impl EntityCredential {
    /// Signs `body` as the CA. The caller picks a fresh serial and the validity window.
    pub fn issue(ca: &Identity, body: CredentialBody) -> Self {
        let ca_signature = ca.sign(&signed_bytes(&body));
        EntityCredential { body, ca_signature }
    }

    /// Checks the CA signature, then that `now` is within `[issued, expires)`.
    ///
    /// Does not consult revocations: pass the result through
    /// [`crate::RevocationList::check`] as well.
    pub fn verify(&self, ca: &PublicKey, now: UnixTime) -> Result<(), CredentialError> {
        self.body.check_limits()?;
        ca.verify(&signed_bytes(&self.body), &self.ca_signature)
            .map_err(|_| CredentialError::BadSignature)?;
        let CredentialBody {
            issued, expires, ..
        } = self.body;
        if now < issued {
            return Err(CredentialError::NotYetValid { issued, now });
        }
        if now >= expires {
            return Err(CredentialError::Expired { expires, now });
        }
        Ok(())
    }

    /// [`verify`](Self::verify), then that the credential names `entity` (the authenticated
    /// peer presenting it) and, if given, allows `mode`.
    pub fn verify_for(
        &self,
        ca: &PublicKey,
        entity: &PeerId,
        mode: Option<Mode>,
        now: UnixTime,
    ) -> Result<(), CredentialError> {
        self.verify(ca, now)?;
        if self.body.entity != *entity {
            return Err(CredentialError::WrongEntity {
                expected: Box::new(*entity),
                found: Box::new(self.body.entity),
            });
        }
        if let Some(mode) = mode
            && !self.body.modes.contains(mode)
        {
            return Err(CredentialError::ModeNotAllowed {
                mode,
                allowed: self.body.modes,
            });
        }
        Ok(())
    }

    /// The CA-assigned serial, the handle revocation uses.
    pub fn serial(&self) -> u64 {
        self.body.serial
    }

    /// The certified entity.
    pub fn entity(&self) -> &PeerId {
        &self.body.entity
    }

    /// The canonical, versioned encoding: the signed body (without the domain tag) followed by
    /// the 64-byte signature. Stable across releases, so it can be stored and sent as is.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut w = Writer::with_capacity(CREDENTIAL_VERSION, 128);
        self.body.encode(&mut w);
        w.fixed(&self.ca_signature.to_bytes());
        w.finish()
    }

    /// Parses [`to_bytes`](Self::to_bytes) output from untrusted input: size-limited, never
    /// panics. Does not verify; call [`verify_for`](Self::verify_for) next.
    pub fn from_bytes(b: &[u8]) -> Result<Self, CredentialError> {
        if b.len() > MAX_CREDENTIAL_LEN {
            return Err(CredentialError::TooLarge {
                len: b.len(),
                max: MAX_CREDENTIAL_LEN,
            });
        }
        let malformed = |e: DecodeError| CredentialError::Malformed(e.to_string());
        let mut r = Reader::new(b, CREDENTIAL_VERSION).map_err(malformed)?;
        let body = CredentialBody::decode(&mut r).map_err(malformed)?;
        let sig = r.fixed::<64>("signature").map_err(malformed)?;
        r.finish().map_err(malformed)?;
        Ok(EntityCredential {
            body,
            ca_signature: Signature::from_bytes(&sig),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
pub(crate) mod tests {
    use super::*;
    use rand::Rng;

    pub(crate) const NOW: UnixTime = 1_700_000_000;

    pub(crate) fn ca() -> Identity {
        Identity::from_secret_bytes([0xca; 32])
    }

    pub(crate) fn body(entity: &Identity) -> CredentialBody {
        CredentialBody {
            entity: entity.peer_id(),
            user: "alice".into(),
            device: "alice-phone".into(),
            modes: Modes::PNE,
            serial: 42,
            issued: NOW - 10,
            expires: NOW + 3600,
        }
    }

    fn issued() -> (Identity, EntityCredential) {
        let entity = Identity::from_secret_bytes([1; 32]);
        let cred = EntityCredential::issue(&ca(), body(&entity));
        (entity, cred)
    }

    #[test]
    fn issue_and_verify() {
        let (entity, cred) = issued();
        cred.verify(&ca().public(), NOW).unwrap();
        cred.verify_for(&ca().public(), &entity.peer_id(), Some(Mode::Pne), NOW)
            .unwrap();
        cred.verify_for(&ca().public(), &entity.peer_id(), None, NOW)
            .unwrap();
        assert_eq!(cred.serial(), 42);
        assert_eq!(cred.entity(), &entity.peer_id());
    }

    #[test]
    fn tampered_fields_fail_signature() {
        let (_, cred) = issued();
        let ca = ca().public();
        let tampers: Vec<fn(&mut CredentialBody)> = vec![
            |b| b.user.push('x'),
            |b| b.device = "mallory".into(),
            |b| b.modes = Modes::ALL,
            |b| b.serial += 1,
            |b| b.expires += 1,
            |b| b.issued -= 1,
            |b| b.entity = Identity::from_secret_bytes([2; 32]).peer_id(),
        ];
        for (i, tamper) in tampers.into_iter().enumerate() {
            let mut c = cred.clone();
            tamper(&mut c.body);
            assert_eq!(
                c.verify(&ca, NOW),
                Err(CredentialError::BadSignature),
                "tamper {i}"
            );
        }
    }

    #[test]
    fn wrong_ca_fails() {
        let (_, cred) = issued();
        let other = Identity::from_secret_bytes([0xcb; 32]).public();
        assert_eq!(cred.verify(&other, NOW), Err(CredentialError::BadSignature));
    }

    #[test]
    fn validity_window() {
        let (_, cred) = issued();
        let ca = ca().public();
        let expires = NOW + 3600;
        assert_eq!(
            cred.verify(&ca, expires),
            Err(CredentialError::Expired {
                expires,
                now: expires
            })
        );
        assert_eq!(
            cred.verify(&ca, expires + 5),
            Err(CredentialError::Expired {
                expires,
                now: expires + 5
            })
        );
        cred.verify(&ca, expires - 1).unwrap();
        let issued = NOW - 10;
        assert_eq!(
            cred.verify(&ca, issued - 1),
            Err(CredentialError::NotYetValid {
                issued,
                now: issued - 1
            })
        );
        cred.verify(&ca, issued).unwrap();
    }

    #[test]
    fn mode_not_allowed() {
        let (entity, cred) = issued();
        assert_eq!(
            cred.verify_for(&ca().public(), &entity.peer_id(), Some(Mode::Gateway), NOW),
            Err(CredentialError::ModeNotAllowed {
                mode: Mode::Gateway,
                allowed: Modes::PNE
            })
        );
    }

    #[test]
    fn wrong_entity() {
        let (entity, cred) = issued();
        let other = Identity::from_secret_bytes([3; 32]).peer_id();
        assert_eq!(
            cred.verify_for(&ca().public(), &other, Some(Mode::Pne), NOW),
            Err(CredentialError::WrongEntity {
                expected: Box::new(other),
                found: Box::new(entity.peer_id())
            })
        );
    }

    #[test]
    fn bytes_round_trip() {
        let (_, cred) = issued();
        let bytes = cred.to_bytes();
        assert_eq!(bytes[0], CREDENTIAL_VERSION);
        let back = EntityCredential::from_bytes(&bytes).unwrap();
        assert_eq!(back, cred);
        back.verify(&ca().public(), NOW).unwrap();
    }

    #[test]
    fn truncations_and_garbage_are_malformed() {
        let (_, cred) = issued();
        let bytes = cred.to_bytes();
        for len in 0..bytes.len() {
            assert!(
                matches!(
                    EntityCredential::from_bytes(&bytes[..len]),
                    Err(CredentialError::Malformed(_))
                ),
                "prefix {len}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(matches!(
            EntityCredential::from_bytes(&trailing),
            Err(CredentialError::Malformed(_))
        ));
        let mut bad_modes = bytes.clone();
        // modes byte sits after version, entity, user and device fields.
        let modes_at = 1 + 2 + cred.body.entity.to_bytes().len() + 2 + 5 + 2 + 11;
        assert_eq!(bad_modes[modes_at], Modes::PNE.0);
        bad_modes[modes_at] = 0x80;
        assert!(matches!(
            EntityCredential::from_bytes(&bad_modes),
            Err(CredentialError::Malformed(_))
        ));

        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(2);
        for i in 0..1000 {
            let len = (rng.next_u32() as usize) % 600;
            let mut b = vec![0u8; len];
            rng.fill_bytes(&mut b);
            if i % 2 == 0 && !b.is_empty() {
                b[0] = CREDENTIAL_VERSION; // get past the version check half of the time
            }
            match EntityCredential::from_bytes(&b) {
                Err(CredentialError::Malformed(_)) => {}
                other => panic!("garbage decoded as {other:?}"),
            }
        }
    }

    #[test]
    fn oversized_input_is_too_large() {
        let b = vec![CREDENTIAL_VERSION; MAX_CREDENTIAL_LEN + 1];
        assert_eq!(
            EntityCredential::from_bytes(&b),
            Err(CredentialError::TooLarge {
                len: MAX_CREDENTIAL_LEN + 1,
                max: MAX_CREDENTIAL_LEN
            })
        );
    }

    #[test]
    fn oversized_names_are_refused() {
        let entity = Identity::from_secret_bytes([1; 32]);
        let mut b = body(&entity);
        b.user = "u".repeat(MAX_NAME_LEN + 1);
        let cred = EntityCredential::issue(&ca(), b);
        assert!(matches!(
            cred.verify(&ca().public(), NOW),
            Err(CredentialError::Malformed(_))
        ));
        assert!(matches!(
            EntityCredential::from_bytes(&cred.to_bytes()),
            Err(CredentialError::Malformed(_))
        ));
        // The limit itself is fine.
        let mut b = body(&entity);
        b.device = "d".repeat(MAX_NAME_LEN);
        let cred = EntityCredential::issue(&ca(), b);
        let back = EntityCredential::from_bytes(&cred.to_bytes()).unwrap();
        back.verify(&ca().public(), NOW).unwrap();
    }

    #[test]
    fn modes_text() {
        assert_eq!(Modes::ALL.to_string(), "pne,gateway");
        assert_eq!(Modes::PNE.to_string(), "pne");
        assert_eq!(Modes::GATEWAY.to_string(), "gateway");
        assert_eq!(Modes::default().to_string(), "none");
        assert_eq!("pne,gateway".parse::<Modes>().unwrap(), Modes::ALL);
        assert_eq!("gateway,pne".parse::<Modes>().unwrap(), Modes::ALL);
        assert_eq!("pne".parse::<Modes>().unwrap(), Modes::PNE);
        assert_eq!(" gateway ".parse::<Modes>().unwrap(), Modes::GATEWAY);
        assert_eq!("".parse::<Modes>(), Err(ParseModeError(String::new())));
        assert_eq!(
            "pne,relay".parse::<Modes>(),
            Err(ParseModeError("relay".into()))
        );
        assert!("pne,".parse::<Modes>().is_err());
        assert_eq!(Mode::Gateway.to_string(), "gateway");
        assert_eq!("pne".parse::<Mode>().unwrap(), Mode::Pne);
        let mut m = Modes::default();
        assert!(m.is_empty());
        m.insert(Mode::Gateway);
        assert!(m.contains(Mode::Gateway) && !m.contains(Mode::Pne));
    }

    #[test]
    fn modes_serde_rejects_unknown_bits() {
        assert_eq!(serde_json::to_string(&Modes::ALL).unwrap(), "3");
        assert_eq!(serde_json::from_str::<Modes>("2").unwrap(), Modes::GATEWAY);
        assert!(serde_json::from_str::<Modes>("4").is_err());
    }
}
