//! Unit tests of the authenticator: B.1 steps 8-11 and their refusals, without a network.

use super::*;
use cpns_keys::{CredentialBody, Identity};

const NOW: UnixTime = 1_700_000_000;

struct Fixture {
    ca: Identity,
    node: Identity,
    server: PeerId,
    cred: EntityCredential,
    keys: EntityKeys,
    revs: RevocationList,
    authn: Authenticator,
}

fn fixture(modes: Modes) -> Fixture {
    let ca = Identity::from_secret_bytes([1; 32]);
    let node = Identity::from_secret_bytes([2; 32]);
    let cred = EntityCredential::issue(
        &ca,
        CredentialBody {
            entity: node.peer_id(),
            user: "alice".into(),
            device: "laptop".into(),
            modes,
            serial: 7,
            issued: NOW - 10,
            expires: NOW + 1000,
        },
    );
    let keys = EntityKeys {
        user: "alice".into(),
        serials: vec![7],
        eukey: EuKey::from_bytes([9; 32]),
        revoked: false,
        issued: None,
    };
    Fixture {
        revs: RevocationList::sign(&ca, 1, NOW, []).unwrap(),
        server: Identity::from_secret_bytes([3; 32]).peer_id(),
        ca,
        node,
        cred,
        keys,
        authn: Authenticator::new(AuthnLimits {
            challenge_ttl: Duration::from_secs(30),
            session_ttl: Duration::from_secs(3600),
            max_challenges: 8,
            max_challenges_per_peer: 2,
            max_sessions: 8,
        }),
    }
}

impl Fixture {
    fn setup(&self, mode: NodeMode, at: Instant) -> Result<Challenge, AuthnError> {
        self.authn.setup(
            &self.ca.public(),
            &self.revs,
            self.node.peer_id(),
            &self.cred,
            mode,
            Some(&self.keys),
            NOW,
            at,
        )
    }

    fn proof(&self, nonce: &[u8; 32], mode: NodeMode) -> ([u8; 32], Signature) {
        let msg = transcript::auth_response(nonce, &self.server, &self.node.peer_id(), 7, mode);
        (self.keys.eukey.mac(&msg), self.node.sign(&msg))
    }

    fn answer(
        &self,
        nonce: &[u8; 32],
        mac: &[u8; 32],
        sig: &Signature,
        at: Instant,
    ) -> Result<Session, AuthnError> {
        self.authn.answer(
            &self.server,
            self.node.peer_id(),
            nonce,
            mac,
            sig,
            Some(&self.keys),
            &self.revs,
            NOW,
            at,
        )
    }
}

#[test]
fn full_exchange_then_replay() {
    let f = fixture(Modes::ALL);
    let at = Instant::now();
    let ch = f.setup(NodeMode::PneGateway, at).unwrap();
    assert_eq!(ch.expires, NOW + 30);
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::PneGateway);
    let s = f.answer(&ch.nonce, &mac, &sig, at).unwrap();
    assert_eq!(s.mode, NodeMode::PneGateway);
    assert_eq!(s.expires, NOW + 1000); // capped by the credential
    assert_eq!(f.authn.session(&f.node.peer_id(), NOW), Some(s));
    assert_eq!(f.answer(&ch.nonce, &mac, &sig, at), Err(AuthnError::Replay));
    assert_eq!(f.authn.challenge_count(), 0);
}

#[test]
fn distinct_errors() {
    let f = fixture(Modes::PNE);
    let at = Instant::now();
    // PNE-only credential asking for a gateway mode.
    assert!(matches!(
        f.setup(NodeMode::Gateway, at),
        Err(AuthnError::ModeNotAllowed { .. })
    ));
    assert!(matches!(
        f.setup(NodeMode::PneGateway, at),
        Err(AuthnError::ModeNotAllowed { .. })
    ));
    // Forged MAC.
    let ch = f.setup(NodeMode::Pne, at).unwrap();
    let (mut mac, sig) = f.proof(&ch.nonce, NodeMode::Pne);
    mac[0] ^= 1;
    assert_eq!(f.answer(&ch.nonce, &mac, &sig, at), Err(AuthnError::BadMac));
    // Proof for another mode than the challenge's.
    let ch = f.setup(NodeMode::Pne, at).unwrap();
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::Gateway);
    assert_eq!(f.answer(&ch.nonce, &mac, &sig, at), Err(AuthnError::BadMac));
    // Bad signature with a good MAC.
    let ch = f.setup(NodeMode::Pne, at).unwrap();
    let (mac, _) = f.proof(&ch.nonce, NodeMode::Pne);
    let other = Identity::from_secret_bytes([5; 32]).sign(b"x");
    assert_eq!(
        f.answer(&ch.nonce, &mac, &other, at),
        Err(AuthnError::BadSignature)
    );
    // Expired challenge.
    let ch = f.setup(NodeMode::Pne, at).unwrap();
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::Pne);
    assert_eq!(
        f.answer(&ch.nonce, &mac, &sig, at + Duration::from_secs(31)),
        Err(AuthnError::ChallengeExpired)
    );
    // Unknown nonce.
    assert_eq!(
        f.answer(&[0; 32], &mac, &sig, at),
        Err(AuthnError::UnknownChallenge)
    );
    // Forged credential.
    let mut forged = f.cred.clone();
    forged.body.modes = Modes::ALL;
    assert_eq!(
        f.authn.setup(
            &f.ca.public(),
            &f.revs,
            f.node.peer_id(),
            &forged,
            NodeMode::Gateway,
            Some(&f.keys),
            NOW,
            at
        ),
        Err(AuthnError::ForgedCredential)
    );
    // Someone else's credential.
    assert_eq!(
        f.authn.setup(
            &f.ca.public(),
            &f.revs,
            Identity::from_secret_bytes([6; 32]).peer_id(),
            &f.cred,
            NodeMode::Pne,
            Some(&f.keys),
            NOW,
            at
        ),
        Err(AuthnError::WrongEntity)
    );
    // Expired credential.
    assert!(matches!(
        f.authn.setup(
            &f.ca.public(),
            &f.revs,
            f.node.peer_id(),
            &f.cred,
            NodeMode::Pne,
            Some(&f.keys),
            NOW + 1000,
            at
        ),
        Err(AuthnError::Expired { .. })
    ));
    // Not enrolled.
    assert_eq!(
        f.authn.setup(
            &f.ca.public(),
            &f.revs,
            f.node.peer_id(),
            &f.cred,
            NodeMode::Pne,
            None,
            NOW,
            at
        ),
        Err(AuthnError::NotEnrolled)
    );
}

#[test]
fn known_credential_skips_only_the_signature() {
    let mut f = fixture(Modes::PNE);
    f.keys.issued = Some(f.cred.clone());
    let at = Instant::now();
    f.setup(NodeMode::Pne, at).unwrap();
    // Every other check still applies to the known credential.
    assert!(matches!(
        f.setup(NodeMode::Gateway, at),
        Err(AuthnError::ModeNotAllowed { .. })
    ));
    assert!(matches!(
        f.authn.setup(
            &f.ca.public(),
            &f.revs,
            f.node.peer_id(),
            &f.cred,
            NodeMode::Pne,
            Some(&f.keys),
            NOW + 1000,
            at
        ),
        Err(AuthnError::Expired { .. })
    ));
    assert_eq!(
        f.authn.setup(
            &f.ca.public(),
            &f.revs,
            Identity::from_secret_bytes([6; 32]).peer_id(),
            &f.cred,
            NodeMode::Pne,
            Some(&f.keys),
            NOW,
            at
        ),
        Err(AuthnError::WrongEntity)
    );
    f.revs = RevocationList::sign(&f.ca, 2, NOW, [7]).unwrap();
    assert_eq!(
        f.setup(NodeMode::Pne, at),
        Err(AuthnError::Revoked { serial: 7 })
    );
    // A credential that differs from the issued one in any byte is verified in full.
    let mut forged = f.cred.clone();
    forged.body.device = "other".into();
    f.revs = RevocationList::sign(&f.ca, 3, NOW, []).unwrap();
    assert_eq!(
        f.authn.setup(
            &f.ca.public(),
            &f.revs,
            f.node.peer_id(),
            &forged,
            NodeMode::Pne,
            Some(&f.keys),
            NOW,
            at
        ),
        Err(AuthnError::ForgedCredential)
    );
}

#[test]
fn revocation_between_challenge_and_answer() {
    let mut f = fixture(Modes::PNE);
    let at = Instant::now();
    let ch = f.setup(NodeMode::Pne, at).unwrap();
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::Pne);
    f.revs = RevocationList::sign(&f.ca, 2, NOW, [7]).unwrap();
    assert_eq!(
        f.answer(&ch.nonce, &mac, &sig, at),
        Err(AuthnError::Revoked { serial: 7 })
    );
    assert_eq!(
        f.setup(NodeMode::Pne, at),
        Err(AuthnError::Revoked { serial: 7 })
    );
    f.revs = RevocationList::sign(&f.ca, 3, NOW, []).unwrap();
    f.keys.revoked = true;
    assert_eq!(
        f.setup(NodeMode::Pne, at),
        Err(AuthnError::Revoked { serial: 7 })
    );
}

#[test]
fn maps_stay_bounded() {
    let f = fixture(Modes::PNE);
    let at = Instant::now();
    let first = f.setup(NodeMode::Pne, at).unwrap();
    for _ in 0..10 {
        f.setup(NodeMode::Pne, at).unwrap();
    }
    // Two per peer: the first challenge was evicted.
    assert_eq!(f.authn.challenge_count(), 2);
    let (mac, sig) = f.proof(&first.nonce, NodeMode::Pne);
    assert_eq!(
        f.answer(&first.nonce, &mac, &sig, at),
        Err(AuthnError::UnknownChallenge)
    );
    // GC forgets challenges long past their deadline.
    f.authn.gc(at + Duration::from_secs(120), NOW);
    assert_eq!(f.authn.challenge_count(), 0);
}

#[test]
fn status_is_requested_once_per_gateway_session() {
    let f = fixture(Modes::ALL);
    let at = Instant::now();
    let peer = f.node.peer_id();
    assert!(!f.authn.first_status_request(&peer, NOW), "no session yet");
    let ch = f.setup(NodeMode::Gateway, at).unwrap();
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::Gateway);
    f.answer(&ch.nonce, &mac, &sig, at).unwrap();
    assert!(f.authn.first_status_request(&peer, NOW));
    assert!(!f.authn.first_status_request(&peer, NOW));
    // A new authentication is a new connection setup: steps 14-17 again.
    let ch = f.setup(NodeMode::Gateway, at).unwrap();
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::Gateway);
    f.answer(&ch.nonce, &mac, &sig, at).unwrap();
    assert!(f.authn.first_status_request(&peer, NOW));
    // A PNE session is never asked.
    let ch = f.setup(NodeMode::Pne, at).unwrap();
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::Pne);
    f.answer(&ch.nonce, &mac, &sig, at).unwrap();
    assert!(!f.authn.first_status_request(&peer, NOW));
}

#[test]
fn end_drops_session() {
    let f = fixture(Modes::PNE);
    let at = Instant::now();
    let ch = f.setup(NodeMode::Pne, at).unwrap();
    let (mac, sig) = f.proof(&ch.nonce, NodeMode::Pne);
    f.answer(&ch.nonce, &mac, &sig, at).unwrap();
    assert_eq!(f.authn.session_count(NOW), 1);
    assert!(f.authn.gateway_sessions(NOW).is_empty());
    f.authn.end(&f.node.peer_id());
    assert_eq!(f.authn.session(&f.node.peer_id(), NOW), None);
}
