//! Authentication and authorisation of a connection (B.1 steps 8-11).
//!
//! 1. Step 8, [`Authenticator::setup`]: the node presents its credential and the mode it wants.
//!    The server checks the CA signature, the validity window, that the credential names the
//!    peer on the other end of the noise-authenticated connection, that it is not revoked and
//!    that it allows the mode (gateway needs `gateway`, PNE needs `pne`, combined needs both).
//! 2. Step 9: a fresh 32-byte nonce, valid for the challenge TTL.
//! 3. Step 10, [`Authenticator::answer`]: a MAC under the entity's EUKey and a signature by its
//!    identity key, both over [`cpns_overlay::transcript::auth_response`] (nonce, server, entity,
//!    serial, mode). A nonce is accepted once: a second answer is a [`AuthnError::Replay`],
//!    a late one [`AuthnError::ChallengeExpired`].
//! 4. Step 11: a [`Session`] for the peer, until the session TTL or the credential's expiry.
//!
//! The crypto runs outside the lock; the lock only guards the maps, which are all bounded.
//! Times come in as parameters (`now` in Unix seconds for credentials, `at` a monotonic
//! instant for challenge deadlines), so tests and benchmarks decide the clock.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use cpns_keys::{
    CredentialError, EntityCredential, EuKey, Mode, Modes, PublicKey, RevocationList, Signature,
    UnixTime,
};
use cpns_overlay::{ErrorCode, NodeMode, transcript};
use libp2p::PeerId;

/// The bounds and lifetimes of an [`Authenticator`] (from [`crate::Config`]).
#[derive(Clone, Debug)]
pub struct AuthnLimits {
    /// How long a challenge may be answered.
    pub challenge_ttl: Duration,
    /// How long a session lasts.
    pub session_ttl: Duration,
    /// Most outstanding challenges in total.
    pub max_challenges: usize,
    /// Most outstanding challenges per peer.
    pub max_challenges_per_peer: usize,
    /// Most live sessions.
    pub max_sessions: usize,
}

impl From<&crate::Config> for AuthnLimits {
    fn from(c: &crate::Config) -> Self {
        Self {
            challenge_ttl: c.challenge_ttl,
            session_ttl: c.session_ttl,
            max_challenges: c.max_challenges,
            max_challenges_per_peer: c.max_challenges_per_peer,
            max_sessions: c.max_sessions,
        }
    }
}

/// What the server knows of an enrolled entity, as authentication needs it.
#[derive(Clone, Debug)]
pub struct EntityKeys {
    /// The entity's user.
    pub user: String,
    /// Every serial issued to it.
    pub serials: Vec<u64>,
    /// Its EUKey.
    pub eukey: EuKey,
    /// Whether it has been revoked.
    pub revoked: bool,
    /// The credential the server issued it most recently. A presented credential equal to it
    /// byte for byte was signed by this server, so step 8 skips the CA signature check for it
    /// (one ed25519 verification less per authentication); any other credential is verified.
    pub issued: Option<EntityCredential>,
}

/// The challenge of B.1 step 9, as it goes on the wire.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Challenge {
    /// Fresh random nonce.
    pub nonce: [u8; 32],
    /// Issue time (Unix seconds).
    pub issued: UnixTime,
    /// Answer before this time (Unix seconds, rounded up).
    pub expires: UnixTime,
}

/// A live session (B.1 step 11): the peer proved its EUKey and identity key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The entity (the peer's PeerId).
    pub entity: PeerId,
    /// Its user.
    pub user: String,
    /// The credential serial it authenticated with.
    pub serial: u64,
    /// The mode it was authorised for.
    pub mode: NodeMode,
    /// The modes its credential allows.
    pub modes: Modes,
    /// When the session ends (Unix seconds).
    pub expires: UnixTime,
}

/// Why authentication failed. Each maps to one wire [`ErrorCode`] ([`AuthnError::code`]).
#[non_exhaustive]
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthnError {
    /// The credential's CA signature does not verify (forged, or another CA's).
    #[error("credential signature is not valid for this server's CA")]
    ForgedCredential,
    /// The credential names another entity than the connected peer.
    #[error("credential is for another entity than the connected peer")]
    WrongEntity,
    /// The credential is malformed or not yet valid.
    #[error("credential not acceptable: {0}")]
    BadCredential(String),
    /// The credential (or the session's) has expired.
    #[error("credential expired at {expires}")]
    Expired {
        /// Its expiry.
        expires: UnixTime,
    },
    /// The credential or entity is revoked.
    #[error("credential serial {serial} is revoked")]
    Revoked {
        /// The serial.
        serial: u64,
    },
    /// The credential does not allow the requested mode.
    #[error("mode {mode} needs a credential allowing it (allowed: {allowed})")]
    ModeNotAllowed {
        /// The requested mode.
        mode: NodeMode,
        /// What the credential allows.
        allowed: Modes,
    },
    /// The server has no record of this entity (or of this serial for it).
    #[error("entity is not enrolled with this server")]
    NotEnrolled,
    /// No outstanding challenge with this nonce for this peer.
    #[error("no outstanding challenge with this nonce for this peer")]
    UnknownChallenge,
    /// The nonce was already answered.
    #[error("challenge nonce already used")]
    Replay,
    /// The answer came after the challenge expired.
    #[error("challenge expired before the answer arrived")]
    ChallengeExpired,
    /// The EUKey MAC does not verify.
    #[error("eukey proof does not verify")]
    BadMac,
    /// The identity signature does not verify.
    #[error("identity signature does not verify")]
    BadSignature,
    /// Too many outstanding challenges or sessions.
    #[error("too many outstanding challenges or sessions; try again later")]
    Busy,
}

impl AuthnError {
    /// The wire code of this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthnError::ForgedCredential | AuthnError::BadMac | AuthnError::BadSignature => {
                ErrorCode::BadProof
            }
            AuthnError::WrongEntity | AuthnError::ModeNotAllowed { .. } => ErrorCode::Forbidden,
            AuthnError::BadCredential(_) | AuthnError::UnknownChallenge => ErrorCode::BadRequest,
            AuthnError::Expired { .. } => ErrorCode::Expired,
            AuthnError::Revoked { .. } => ErrorCode::Revoked,
            AuthnError::NotEnrolled => ErrorCode::NotRegistered,
            AuthnError::Replay => ErrorCode::Replay,
            AuthnError::ChallengeExpired => ErrorCode::ChallengeExpired,
            AuthnError::Busy => ErrorCode::Busy,
        }
    }

    /// A short stable label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthnError::ForgedCredential => "forged_credential",
            AuthnError::WrongEntity => "wrong_entity",
            AuthnError::BadCredential(_) => "bad_credential",
            AuthnError::Expired { .. } => "expired",
            AuthnError::Revoked { .. } => "revoked",
            AuthnError::ModeNotAllowed { .. } => "mode_not_allowed",
            AuthnError::NotEnrolled => "not_enrolled",
            AuthnError::UnknownChallenge => "unknown_challenge",
            AuthnError::Replay => "replay",
            AuthnError::ChallengeExpired => "challenge_expired",
            AuthnError::BadMac => "bad_mac",
            AuthnError::BadSignature => "bad_signature",
            AuthnError::Busy => "busy",
        }
    }
}

impl From<CredentialError> for AuthnError {
    fn from(e: CredentialError) -> Self {
        match e {
            CredentialError::BadSignature => AuthnError::ForgedCredential,
            CredentialError::Expired { expires, .. } => AuthnError::Expired { expires },
            CredentialError::WrongEntity { .. } => AuthnError::WrongEntity,
            CredentialError::Revoked { serial } => AuthnError::Revoked { serial },
            CredentialError::ModeNotAllowed { allowed, mode } => AuthnError::ModeNotAllowed {
                mode: match mode {
                    Mode::Pne => NodeMode::Pne,
                    Mode::Gateway => NodeMode::Gateway,
                },
                allowed,
            },
            other => AuthnError::BadCredential(other.to_string()),
        }
    }
}

/// The credential modes a node mode needs.
pub fn required_modes(mode: NodeMode) -> Modes {
    match mode {
        NodeMode::Pne => Modes::PNE,
        NodeMode::Gateway => Modes::GATEWAY,
        NodeMode::PneGateway => Modes::ALL,
    }
}

/// Whether `allowed` covers everything `mode` needs.
pub fn mode_allowed(allowed: Modes, mode: NodeMode) -> bool {
    let need = required_modes(mode);
    [Mode::Pne, Mode::Gateway]
        .into_iter()
        .all(|m| !need.contains(m) || allowed.contains(m))
}

/// Checks a credential presented by `peer` for `mode` (step 8, and the PNE credential inside a
/// membership request): CA signature, validity window, entity, revocation, mode.
pub fn check_credential(
    ca: &PublicKey,
    revocations: &RevocationList,
    peer: &PeerId,
    credential: &EntityCredential,
    mode: NodeMode,
    now: UnixTime,
) -> Result<(), AuthnError> {
    credential.verify_for(ca, peer, None, now)?;
    revocations.check(credential)?;
    if !mode_allowed(credential.body.modes, mode) {
        return Err(AuthnError::ModeNotAllowed {
            mode,
            allowed: credential.body.modes,
        });
    }
    Ok(())
}

/// [`check_credential`] without the signature, for a credential known to be the server's own.
fn check_known_credential(
    revocations: &RevocationList,
    peer: &PeerId,
    credential: &EntityCredential,
    mode: NodeMode,
    now: UnixTime,
) -> Result<(), AuthnError> {
    let body = &credential.body;
    if now < body.issued {
        return Err(AuthnError::BadCredential(format!(
            "credential not valid before {}",
            body.issued
        )));
    }
    if now >= body.expires {
        return Err(AuthnError::Expired {
            expires: body.expires,
        });
    }
    if body.entity != *peer {
        return Err(AuthnError::WrongEntity);
    }
    revocations.check(credential)?;
    if !mode_allowed(body.modes, mode) {
        return Err(AuthnError::ModeNotAllowed {
            mode,
            allowed: body.modes,
        });
    }
    Ok(())
}

struct Pending {
    nonce: [u8; 32],
    serial: u64,
    mode: NodeMode,
    modes: Modes,
    cred_expires: UnixTime,
    deadline: Instant,
}

#[derive(Default)]
struct State {
    /// Outstanding challenges by peer, oldest first.
    challenges: HashMap<PeerId, Vec<Pending>>,
    outstanding: usize,
    /// Answered nonces and until when they are remembered.
    used: HashMap<[u8; 32], Instant>,
    used_order: VecDeque<([u8; 32], Instant)>,
    sessions: HashMap<PeerId, Session>,
    /// Sessions whose gateway was already asked for its status (B.1 step 14).
    status_asked: std::collections::HashSet<PeerId>,
}

/// The server's authentication state: outstanding challenges, answered nonces and sessions.
/// `&self` methods, safe to share between request tasks.
pub struct Authenticator {
    limits: AuthnLimits,
    state: Mutex<State>,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// An authenticator with no challenges or sessions.
    pub fn new(limits: AuthnLimits) -> Self {
        Self {
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the maps inconsistent in a way that
        // matters (each operation is a few map edits), so a poisoned lock is still used.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How long expired challenges and used nonces are remembered after their deadline, so a
    /// late answer is told "expired" or "replay" rather than "unknown".
    fn grace(&self) -> Duration {
        self.limits.challenge_ttl.max(Duration::from_secs(30))
    }

    /// B.1 step 8 → 9: checks the credential and the entity, then issues a challenge.
    #[allow(clippy::too_many_arguments)]
    pub fn setup(
        &self,
        ca: &PublicKey,
        revocations: &RevocationList,
        peer: PeerId,
        credential: &EntityCredential,
        mode: NodeMode,
        entity: Option<&EntityKeys>,
        now: UnixTime,
        at: Instant,
    ) -> Result<Challenge, AuthnError> {
        let known = entity
            .and_then(|e| e.issued.as_ref())
            .is_some_and(|issued| issued == credential);
        if known {
            check_known_credential(revocations, &peer, credential, mode, now)?;
        } else {
            check_credential(ca, revocations, &peer, credential, mode, now)?;
        }
        let serial = credential.serial();
        let entity = entity.ok_or(AuthnError::NotEnrolled)?;
        if entity.revoked {
            return Err(AuthnError::Revoked { serial });
        }
        if !entity.serials.contains(&serial) {
            return Err(AuthnError::NotEnrolled);
        }
        let mut nonce = [0u8; 32];
        rand::Rng::fill_bytes(&mut rand::rng(), &mut nonce);
        let ttl = self.limits.challenge_ttl;
        let pending = Pending {
            nonce,
            serial,
            mode,
            modes: credential.body.modes,
            cred_expires: credential.body.expires,
            deadline: at + ttl,
        };
        let mut st = self.lock();
        if st.outstanding >= self.limits.max_challenges {
            Self::gc_locked(&mut st, at, now, self.grace());
            if st.outstanding >= self.limits.max_challenges {
                return Err(AuthnError::Busy);
            }
        }
        let list = st.challenges.entry(peer).or_default();
        let mut evicted = 0;
        while list.len() >= self.limits.max_challenges_per_peer {
            list.remove(0);
            evicted += 1;
        }
        list.push(pending);
        st.outstanding = st.outstanding + 1 - evicted;
        drop(st);
        Ok(Challenge {
            nonce,
            issued: now,
            expires: now + ttl.as_secs() + u64::from(ttl.subsec_nanos() > 0),
        })
    }

    /// B.1 step 10 → 11: checks the answer to a challenge and opens a session.
    ///
    /// The order of checks: the nonce (unknown, replayed, expired), the EUKey MAC, the
    /// identity signature, revocation, credential expiry. The challenge is consumed by any
    /// answer, good or bad: one answer per challenge.
    #[allow(clippy::too_many_arguments)]
    pub fn answer(
        &self,
        server: &PeerId,
        peer: PeerId,
        nonce: &[u8; 32],
        eukey_mac: &[u8; 32],
        signature: &Signature,
        entity: Option<&EntityKeys>,
        revocations: &RevocationList,
        now: UnixTime,
        at: Instant,
    ) -> Result<Session, AuthnError> {
        let pending = self.take(peer, nonce, at)?;
        let entity = entity.ok_or(AuthnError::NotEnrolled)?;
        let msg = transcript::auth_response(nonce, server, &peer, pending.serial, pending.mode);
        entity
            .eukey
            .verify_mac(&msg, eukey_mac)
            .map_err(|_| AuthnError::BadMac)?;
        PublicKey::from_peer_id(&peer)
            .map_err(|_| AuthnError::BadSignature)?
            .verify(&msg, signature)
            .map_err(|_| AuthnError::BadSignature)?;
        if entity.revoked || revocations.contains(pending.serial) {
            return Err(AuthnError::Revoked {
                serial: pending.serial,
            });
        }
        if now >= pending.cred_expires {
            return Err(AuthnError::Expired {
                expires: pending.cred_expires,
            });
        }
        let session = Session {
            entity: peer,
            user: entity.user.clone(),
            serial: pending.serial,
            mode: pending.mode,
            modes: pending.modes,
            expires: (now + self.limits.session_ttl.as_secs().max(1)).min(pending.cred_expires),
        };
        let mut st = self.lock();
        if st.sessions.len() >= self.limits.max_sessions && !st.sessions.contains_key(&peer) {
            Self::gc_locked(&mut st, at, now, self.grace());
            if st.sessions.len() >= self.limits.max_sessions {
                return Err(AuthnError::Busy);
            }
        }
        st.sessions.insert(peer, session.clone());
        st.status_asked.remove(&peer);
        Ok(session)
    }

    fn take(&self, peer: PeerId, nonce: &[u8; 32], at: Instant) -> Result<Pending, AuthnError> {
        let mut st = self.lock();
        let found = st.challenges.get_mut(&peer).and_then(|list| {
            let pos = list.iter().position(|p| &p.nonce == nonce)?;
            let pending = list.remove(pos);
            Some((pending, list.is_empty()))
        });
        let Some((pending, now_empty)) = found else {
            return Err(if st.used.contains_key(nonce) {
                AuthnError::Replay
            } else {
                AuthnError::UnknownChallenge
            });
        };
        if now_empty {
            st.challenges.remove(&peer);
        }
        st.outstanding = st.outstanding.saturating_sub(1);
        let keep_until = pending.deadline.max(at) + self.grace();
        while st.used.len() >= self.limits.max_challenges {
            match st.used_order.pop_front() {
                Some((n, _)) => {
                    st.used.remove(&n);
                }
                None => break,
            }
        }
        st.used.insert(*nonce, keep_until);
        st.used_order.push_back((*nonce, keep_until));
        drop(st);
        if at >= pending.deadline {
            return Err(AuthnError::ChallengeExpired);
        }
        Ok(pending)
    }

    /// The peer's live session, if any.
    pub fn session(&self, peer: &PeerId, now: UnixTime) -> Option<Session> {
        let st = self.lock();
        st.sessions.get(peer).filter(|s| s.expires > now).cloned()
    }

    /// Whether the server should now ask this gateway for its status (B.1 step 14): true once
    /// per session, at its first capabilities update (step 12); later updates (material
    /// changes, 5.6.1) are only stored.
    pub fn first_status_request(&self, peer: &PeerId, now: UnixTime) -> bool {
        let mut st = self.lock();
        let live = st
            .sessions
            .get(peer)
            .is_some_and(|s| s.expires > now && s.mode.is_gateway());
        live && st.status_asked.insert(*peer)
    }

    /// Ends the peer's session and drops its outstanding challenges (revocation).
    pub fn end(&self, peer: &PeerId) {
        let mut st = self.lock();
        st.sessions.remove(peer);
        st.status_asked.remove(peer);
        if let Some(list) = st.challenges.remove(peer) {
            st.outstanding = st.outstanding.saturating_sub(list.len());
        }
    }

    /// Peers with a live session in a gateway mode.
    pub fn gateway_sessions(&self, now: UnixTime) -> Vec<PeerId> {
        let st = self.lock();
        st.sessions
            .values()
            .filter(|s| s.expires > now && s.mode.is_gateway())
            .map(|s| s.entity)
            .collect()
    }

    /// Live sessions.
    pub fn session_count(&self, now: UnixTime) -> usize {
        self.lock()
            .sessions
            .values()
            .filter(|s| s.expires > now)
            .count()
    }

    /// Outstanding challenges.
    pub fn challenge_count(&self) -> usize {
        self.lock().outstanding
    }

    /// Forgets expired sessions, challenges long past their deadline and old used nonces.
    /// The server calls it periodically; the maps are bounded without it.
    pub fn gc(&self, at: Instant, now: UnixTime) {
        let grace = self.grace();
        let mut st = self.lock();
        Self::gc_locked(&mut st, at, now, grace);
    }

    fn gc_locked(st: &mut State, at: Instant, now: UnixTime, grace: Duration) {
        st.sessions.retain(|_, s| s.expires > now);
        let State {
            sessions,
            status_asked,
            ..
        } = st;
        status_asked.retain(|p| sessions.contains_key(p));
        let mut removed = 0;
        st.challenges.retain(|_, list| {
            let before = list.len();
            list.retain(|p| p.deadline + grace > at);
            removed += before - list.len();
            !list.is_empty()
        });
        st.outstanding = st.outstanding.saturating_sub(removed);
        while let Some((n, until)) = st.used_order.front().copied() {
            if until > at {
                break;
            }
            st.used_order.pop_front();
            if st.used.get(&n) == Some(&until) {
                st.used.remove(&n);
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
