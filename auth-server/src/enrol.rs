//! Enrolment: codes made by the admin, and the exchange by which a node presents one and gets
//! its entity credential and EUKey.
//!
//! A code is `cpns1-…` ([`EnrolmentCode::to_text`]): the server's PeerId and addresses, the CA
//! fingerprint the node must pin, a public code id and a 32-byte secret. The server keeps only
//! SHA-256 of the secret and compares in constant time. Codes are one-time unless created
//! reusable, expire (1 h by default), and belong to a user that must still exist when used.
//! Every attempt costs a token of the bucket of the code id it names and one of a global
//! bucket ([`EnrolLimits`]). PeerIds cost nothing to make, so a per-peer bucket stopped no
//! one (issue 14): an attacker guessing a code's secret gets `enrol_attempts_per_minute`
//! tries a minute at that code whatever identities it uses (the secret has 256 bits, so this
//! bounds work, not luck), and all attempts together, random code ids included, get
//! `enrol_attempts_global_per_minute`. A flood therefore delays enrolments (refused
//! `RateLimited`, the node retries) but cannot make the server work without bound.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use cpns_keys::{
    CredentialBody, EntityCredential, EuKey, Modes, PeerId, PublicKey, UnixTime, seal_to,
};
use cpns_overlay::{EnrolRequest, EnrolResponse, EnrolmentCode, transcript};
use libp2p::Multiaddr;
use libp2p::multiaddr::Protocol;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::authn::AuthnError;
use crate::core::{Core, unix_now};
use crate::error::{AdminError, EnrolmentError, RequestError, forbidden};
use crate::records::{CodeRecord, EntityRecord, UserRecord};
use crate::store::{Batch, Table, meta};
use crate::views::{CodeView, CreatedCode};

/// How many (entity, serial) uses a code remembers.
pub(crate) const MAX_CODE_USES_KEPT: usize = 16;

/// Longest device name, in bytes.
pub(crate) const MAX_DEVICE_NAME: usize = 64;

/// Longest code lifetime an admin may ask for.
pub(crate) const MAX_CODE_TTL: Duration = Duration::from_secs(30 * 86_400);

fn secret_hash(secret: &[u8; 32]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Equality that takes the same time wherever the inputs differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// Addresses as they go into a code: without `/p2p/` (the code names the server separately)
/// and without unspecified IPs, which no node can dial.
fn dialable(addrs: &[Multiaddr]) -> Vec<Multiaddr> {
    let mut out: Vec<Multiaddr> = Vec::new();
    for addr in addrs {
        let clean: Multiaddr = addr
            .iter()
            .filter(|p| !matches!(p, Protocol::P2p(_)))
            .collect();
        let unspecified = clean.iter().any(|p| match p {
            Protocol::Ip4(ip) => ip.is_unspecified(),
            Protocol::Ip6(ip) => ip.is_unspecified(),
            _ => false,
        });
        if !unspecified && !out.contains(&clean) {
            out.push(clean);
        }
    }
    out
}

/// Checks a user or device name: non-empty, printable, bounded.
pub(crate) fn check_name(kind: &str, name: &str, max: usize) -> Result<(), String> {
    if name.is_empty() {
        return Err(format!("{kind} name must not be empty"));
    }
    if name.len() > max {
        return Err(format!("{kind} name is longer than {max} bytes"));
    }
    if name.chars().any(|c| c.is_control()) {
        return Err(format!("{kind} name contains control characters"));
    }
    Ok(())
}

/// Token buckets for enrolment attempts, one per key: `per_minute` attempts in a burst,
/// refilled at `per_minute` a minute. Holds at most `cap` keys; when full, keys whose bucket
/// is full again are forgotten first, then the least recently seen.
pub(crate) struct RateLimiter<K> {
    per_minute: u32,
    cap: usize,
    buckets: HashMap<K, (f64, Instant)>,
}

impl<K: std::hash::Hash + Eq + Clone> RateLimiter<K> {
    pub(crate) fn new(per_minute: u32, cap: usize) -> Self {
        Self {
            per_minute: per_minute.max(1),
            cap: cap.max(1),
            buckets: HashMap::new(),
        }
    }

    fn refill(&self, tokens: f64, last: Instant, at: Instant) -> f64 {
        let burst = f64::from(self.per_minute);
        let rate = burst / 60.0;
        (tokens + at.saturating_duration_since(last).as_secs_f64() * rate).min(burst)
    }

    /// Takes a token for `key`; false when its bucket is empty.
    pub(crate) fn allow(&mut self, key: K, at: Instant) -> bool {
        let burst = f64::from(self.per_minute);
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.cap {
            let full: Vec<K> = self
                .buckets
                .iter()
                .filter(|(_, (t, last))| self.refill(*t, *last, at) >= burst)
                .map(|(k, _)| k.clone())
                .collect();
            for k in full {
                self.buckets.remove(&k);
            }
            if self.buckets.len() >= self.cap
                && let Some(oldest) = self
                    .buckets
                    .iter()
                    .min_by_key(|(_, (_, last))| *last)
                    .map(|(k, _)| k.clone())
            {
                self.buckets.remove(&oldest);
            }
        }
        let (tokens, last) = self.buckets.get(&key).copied().unwrap_or((burst, at));
        let tokens = self.refill(tokens, last, at);
        let (tokens, ok) = if tokens >= 1.0 {
            (tokens - 1.0, true)
        } else {
            (tokens, false)
        };
        self.buckets.insert(key, (tokens, at));
        ok
    }

    /// Keys remembered.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.buckets.len()
    }
}

/// The enrolment rate limits (see the module docs): per code id, and global.
pub(crate) struct EnrolLimits {
    per_code: RateLimiter<String>,
    global: RateLimiter<()>,
}

impl EnrolLimits {
    pub(crate) fn new(per_code_per_minute: u32, global_per_minute: u32, max_codes: usize) -> Self {
        Self {
            per_code: RateLimiter::new(per_code_per_minute, max_codes),
            global: RateLimiter::new(global_per_minute, 1),
        }
    }

    /// Takes a token of the code's bucket and of the global one; false if either is empty.
    pub(crate) fn allow(&mut self, code_id: &str, at: Instant) -> bool {
        // Truncated: a code id longer than any real one is refused later anyway.
        let key: String = code_id.chars().take(64).collect();
        self.global.allow((), at) && self.per_code.allow(key, at)
    }
}

enum Enrolled {
    New(Box<EntityRecord>),
    /// The same node retried a one-time code it had already used (our answer was lost).
    Retry(Box<EntityRecord>),
}

impl Core {
    /// Creates an enrolment code for `user` (admin).
    pub(crate) async fn create_code(
        &self,
        user: &str,
        modes: Modes,
        ttl: Duration,
        reusable: bool,
        addrs: &[Multiaddr],
    ) -> Result<CreatedCode, AdminError> {
        if modes.is_empty() {
            return Err(AdminError::Invalid("a code needs at least one mode".into()));
        }
        if ttl.is_zero() || ttl > MAX_CODE_TTL {
            return Err(AdminError::Invalid(format!(
                "code lifetime must be between 1s and {}",
                humantime::format_duration(MAX_CODE_TTL)
            )));
        }
        let addrs = if !addrs.is_empty() {
            dialable(addrs)
        } else if !self.config.advertise.is_empty() {
            dialable(&self.config.advertise)
        } else {
            dialable(&self.listen_addrs.read().unwrap_or_else(|p| p.into_inner()))
        };
        if addrs.is_empty() {
            return Err(AdminError::Invalid(
                "the server's addresses are unknown: start `cpns-auth serve` once, set \
                 `advertise` in the config, or pass --addr"
                    .into(),
            ));
        }
        let now = unix_now();
        let mut secret = Zeroizing::new([0u8; 32]);
        rand::Rng::fill_bytes(&mut rand::rng(), secret.as_mut_slice());
        let code_id = crate::core::random_id("");
        let record = CodeRecord {
            code_id: code_id.clone(),
            user: user.to_owned(),
            modes,
            created: now,
            expires: now.saturating_add(ttl.as_secs().max(1)),
            reusable,
            secret_hash: secret_hash(&secret),
            uses: 0,
            used_by: Vec::new(),
        };
        self.commit(|store| {
            if !store.contains(Table::Users, user)? {
                return Err(AdminError::NotFound(format!("no user named {user:?}")));
            }
            let mut b = Batch::default();
            b.put(Table::Codes, &code_id, &record)?;
            Ok((b, ()))
        })
        .await?;
        let code = EnrolmentCode {
            server: self.server_peer,
            addrs: addrs.clone(),
            ca_fingerprint: self.ca.public().fingerprint(),
            code_id: code_id.clone(),
            secret: *secret,
        };
        Ok(CreatedCode {
            code: code.to_text(),
            code_id,
            user: user.to_owned(),
            modes: modes.to_string(),
            expires: record.expires,
            reusable,
            server: self.server_peer.to_string(),
            addrs: addrs.iter().map(ToString::to_string).collect(),
            ca_fingerprint: code.ca_fingerprint,
        })
    }

    /// Every code, newest first.
    pub(crate) fn list_codes(&self) -> Result<Vec<CodeView>, AdminError> {
        let mut codes: Vec<CodeRecord> = self.store.values(Table::Codes)?;
        codes.sort_by(|a, b| b.created.cmp(&a.created).then(a.code_id.cmp(&b.code_id)));
        Ok(codes
            .into_iter()
            .map(|c| CodeView {
                code_id: c.code_id,
                user: c.user,
                modes: c.modes.to_string(),
                created: c.created,
                expires: c.expires,
                reusable: c.reusable,
                uses: c.uses,
                used_by: c.used_by.iter().map(|(p, _)| p.to_string()).collect(),
            })
            .collect())
    }

    /// The enrolment exchange: checks the code, binds the peer, issues its credential and
    /// EUKey, durably, then answers.
    pub(crate) async fn enrol(
        &self,
        peer: PeerId,
        req: &EnrolRequest,
        now: UnixTime,
        at: Instant,
    ) -> Result<EnrolResponse, EnrolmentError> {
        let allowed = self
            .rate
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .allow(&req.code_id, at);
        if !allowed {
            return Err(EnrolmentError::RateLimited);
        }
        check_name("device", &req.device, MAX_DEVICE_NAME).map_err(EnrolmentError::BadDevice)?;
        let node_key = PublicKey::from_peer_id(&peer).map_err(|_| {
            EnrolmentError::BadDevice("the node's PeerId must be an ed25519 key".into())
        })?;
        if req.code_id.len() > 64 {
            return Err(EnrolmentError::UnknownCode);
        }
        let eukey = EuKey::generate();
        let lifetime = self.config.credential_lifetime.as_secs();
        let enrolled = self
            .commit(|store| {
                let mut code: CodeRecord = store
                    .get(Table::Codes, &req.code_id)?
                    .ok_or(EnrolmentError::UnknownCode)?;
                if !constant_time_eq(&secret_hash(&req.secret), &code.secret_hash) {
                    return Err(EnrolmentError::WrongSecret);
                }
                if now >= code.expires {
                    return Err(EnrolmentError::Expired);
                }
                let existing: Option<EntityRecord> = store.get(Table::Entities, peer.to_bytes())?;
                if existing.as_ref().is_some_and(|e| e.revoked.is_some()) {
                    return Err(EnrolmentError::Revoked);
                }
                if !code.reusable && code.uses > 0 {
                    return match existing {
                        Some(e) if code.used_by.contains(&(peer, e.serial())) => {
                            Ok((Batch::default(), Enrolled::Retry(Box::new(e))))
                        }
                        _ => Err(EnrolmentError::AlreadyUsed),
                    };
                }
                if store.get::<UserRecord>(Table::Users, &code.user)?.is_none() {
                    return Err(EnrolmentError::UserGone);
                }
                let serial: u64 = store.get(Table::Meta, meta::NEXT_SERIAL)?.unwrap_or(1);
                let credential = EntityCredential::issue(
                    &self.ca,
                    CredentialBody {
                        entity: peer,
                        user: code.user.clone(),
                        device: req.device.clone(),
                        modes: code.modes,
                        serial,
                        issued: now,
                        expires: now.saturating_add(lifetime),
                    },
                );
                let mut serials = existing
                    .as_ref()
                    .map(|e| e.serials.clone())
                    .unwrap_or_default();
                serials.push(serial);
                let record = EntityRecord {
                    peer_id: peer,
                    user: code.user.clone(),
                    device: req.device.clone(),
                    modes: code.modes,
                    credential,
                    serials,
                    eukey: eukey.to_bytes(),
                    enrolled: existing.as_ref().map_or(now, |e| e.enrolled),
                    code_id: code.code_id.clone(),
                    revoked: None,
                    capabilities: existing.as_ref().and_then(|e| e.capabilities.clone()),
                };
                code.uses += 1;
                code.used_by.push((peer, serial));
                if code.used_by.len() > MAX_CODE_USES_KEPT {
                    code.used_by.remove(0);
                }
                let mut b = Batch::default();
                b.put(Table::Meta, meta::NEXT_SERIAL, &(serial + 1))?;
                b.put(Table::Codes, &code.code_id, &code)?;
                b.put(Table::Entities, peer.to_bytes(), &record)?;
                b.put(Table::Serials, serial.to_be_bytes(), &peer.to_bytes())?;
                Ok((b, Enrolled::New(Box::new(record))))
            })
            .await?;
        let record = match enrolled {
            Enrolled::New(r) => {
                self.metrics
                    .entities
                    .set(self.store.len(Table::Entities) as i64);
                r
            }
            Enrolled::Retry(r) => r,
        };
        let eukey_bytes = Zeroizing::new(record.eukey);
        Ok(EnrolResponse {
            credential: record.credential.clone(),
            sealed_eukey: seal_to(
                &node_key,
                &transcript::enrol_aad(&peer),
                eukey_bytes.as_slice(),
            ),
            ca: self.ca.public(),
            revocations: (*self.revocations()).clone(),
        })
    }

    /// Renews the credential of an authenticated entity (DESIGN: "nodes renew before
    /// expiry"): same PeerId, user, device and modes, a new serial and expiry, stored with the
    /// entity (whose serial list keeps every serial, so that a revocation names them all)
    /// before the answer. Refused for a revoked entity, a deleted user, or while the current
    /// credential is younger than `credential_renewal_min_age`.
    pub(crate) async fn renew_credential(
        &self,
        peer: PeerId,
        now: UnixTime,
    ) -> Result<EntityCredential, RequestError> {
        let lifetime = self.config.credential_lifetime.as_secs();
        let min_age = self.config.credential_renewal_min_age.as_secs();
        let credential = self
            .commit(|store| {
                let mut e: EntityRecord = store
                    .get(Table::Entities, peer.to_bytes())?
                    .ok_or(RequestError::NotAuthenticated)?;
                if e.revoked.is_some() {
                    return Err(RequestError::Authn(AuthnError::Revoked {
                        serial: e.serial(),
                    }));
                }
                if store.get::<UserRecord>(Table::Users, &e.user)?.is_none() {
                    return Err(forbidden(format!("user {} no longer exists", e.user)));
                }
                let age = now.saturating_sub(e.credential.body.issued);
                if age < min_age {
                    return Err(RequestError::Conflict(format!(
                        "the credential is {age}s old; it is renewed from {min_age}s"
                    )));
                }
                let serial: u64 = store.get(Table::Meta, meta::NEXT_SERIAL)?.unwrap_or(1);
                let credential = EntityCredential::issue(
                    &self.ca,
                    CredentialBody {
                        entity: peer,
                        user: e.user.clone(),
                        device: e.device.clone(),
                        modes: e.modes,
                        serial,
                        issued: now,
                        expires: now.saturating_add(lifetime),
                    },
                );
                e.serials.push(serial);
                e.credential = credential.clone();
                let mut b = Batch::default();
                b.put(Table::Meta, meta::NEXT_SERIAL, &(serial + 1))?;
                b.put(Table::Entities, peer.to_bytes(), &e)?;
                b.put(Table::Serials, serial.to_be_bytes(), &peer.to_bytes())?;
                Ok((b, credential))
            })
            .await?;
        self.metrics.rotation("credential");
        Ok(credential)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_a_burst_then_refills() {
        let mut rl = RateLimiter::new(5, 100);
        let peer = PeerId::random();
        let t0 = Instant::now();
        for _ in 0..5 {
            assert!(rl.allow(peer, t0));
        }
        assert!(!rl.allow(peer, t0));
        // One token every 12 s.
        assert!(!rl.allow(peer, t0 + Duration::from_secs(11)));
        assert!(rl.allow(peer, t0 + Duration::from_secs(24)));
        // Another peer is not affected.
        assert!(rl.allow(PeerId::random(), t0));
    }

    #[test]
    fn enrol_limits_are_per_code_and_global_not_per_peer() {
        let mut l = EnrolLimits::new(5, 8, 100);
        let t0 = Instant::now();
        // Fresh identities change nothing: five tries at one code, then refused.
        for _ in 0..5 {
            assert!(l.allow("code-a", t0));
        }
        assert!(!l.allow("code-a", t0));
        // Other codes still go, until the global bucket is empty.
        assert!(l.allow("code-b", t0));
        assert!(l.allow("code-c", t0));
        assert!(!l.allow("code-d", t0), "global bound");
        assert!(l.allow("code-d", t0 + Duration::from_secs(8)));
    }

    #[test]
    fn rate_limiter_is_bounded() {
        let mut rl = RateLimiter::new(5, 10);
        let t0 = Instant::now();
        for i in 0..100 {
            rl.allow(PeerId::random(), t0 + Duration::from_millis(i));
            assert!(rl.len() <= 10);
        }
    }

    #[test]
    fn dialable_strips_p2p_and_unspecified() {
        let a: Multiaddr =
            "/ip4/127.0.0.1/tcp/1/p2p/12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA"
                .parse()
                .unwrap();
        let b: Multiaddr = "/ip4/0.0.0.0/tcp/2".parse().unwrap();
        assert_eq!(
            dialable(&[a.clone(), b, a]),
            vec!["/ip4/127.0.0.1/tcp/1".parse::<Multiaddr>().unwrap()]
        );
    }

    #[test]
    fn constant_time_eq_works() {
        let a = [1u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] = 0;
        assert!(!constant_time_eq(&a, &b));
    }
}
