//! Keywords and the DHT keys derived from them and from service ids.
//!
//! A keyword is normalised before anything else touches it, so `" Jazz  Radio"` and
//! `"jazz radio"` are the same keyword everywhere. Every DHT key is a 32-byte hash:
//!
//! * public: `SHA-256(domain tag || 0 || data)`;
//! * PN or Service Group: the group key's keyed hash ([`GroupKey::keyed_hash`]) under the same
//!   domain, so a node without the key can neither read nor enumerate the group's keywords
//!   and service ids, and cannot even tell two groups' keys for the same keyword apart.
//!
//! Keys of sealed records depend on the key *epoch*: after a rotation a publisher republishes
//! under the new epoch and finders use the current epoch, then the previous one.

use cpns_keys::{GroupKey, PeerId};
use sha2::{Digest, Sha256};

const KEYWORD_DOMAIN: &str = "cpns keyword v1";
const SERVICE_DOMAIN: &str = "cpns service v1";
const INDEX_DOMAIN: &str = "cpns publisher-index v1";
const REVOCATIONS_DOMAIN: &str = "cpns revocations v1";
const PN_SUMMARY_DOMAIN: &str = "cpns pn-summary v1";

/// Why a keyword was refused.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum KeywordError {
    /// Nothing left after trimming.
    #[error("empty keyword")]
    Empty,
    /// Longer than the limit once normalised.
    #[error("keyword of {len} bytes exceeds the limit of {max}")]
    TooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Contains a control character.
    #[error("keyword contains a control character")]
    Control,
}

/// Normalises a keyword: Unicode lowercase, leading and trailing whitespace trimmed, inner runs
/// of whitespace collapsed to one space; at most `max_len` bytes afterwards, no control
/// characters. No Unicode normalisation form is applied (NFC input is expected, as typed).
pub fn normalise_keyword(raw: &str, max_len: usize) -> Result<String, KeywordError> {
    // Bound the work before lowercasing (which may grow the text).
    if raw.len() > max_len.saturating_mul(4).saturating_add(64) {
        return Err(KeywordError::TooLong {
            len: raw.len(),
            max: max_len,
        });
    }
    let mut out = String::with_capacity(raw.len());
    for word in raw.split_whitespace() {
        if !out.is_empty() {
            out.push(' ');
        }
        for c in word.chars() {
            if c.is_control() {
                return Err(KeywordError::Control);
            }
            out.extend(c.to_lowercase());
        }
    }
    if out.is_empty() {
        return Err(KeywordError::Empty);
    }
    if out.len() > max_len {
        return Err(KeywordError::TooLong {
            len: out.len(),
            max: max_len,
        });
    }
    Ok(out)
}

/// Normalises a list of keywords, dropping duplicates (first occurrence kept).
pub(crate) fn normalise_all(raw: &[String], max_len: usize) -> Result<Vec<String>, KeywordError> {
    let mut out: Vec<String> = Vec::with_capacity(raw.len());
    for k in raw {
        let k = normalise_keyword(k, max_len)?;
        if !out.contains(&k) {
            out.push(k);
        }
    }
    Ok(out)
}

/// Under which key a DHT key is derived: the public hash, or a group key's keyed hash.
#[derive(Clone, Copy, Debug)]
pub(crate) enum KeyScope<'a> {
    Public,
    Group(&'a GroupKey),
}

impl KeyScope<'_> {
    fn derive(&self, domain: &str, data: &[u8]) -> Vec<u8> {
        match self {
            KeyScope::Public => public_hash(domain, data).to_vec(),
            KeyScope::Group(k) => k.keyed_hash(domain, data).to_vec(),
        }
    }

    /// The provider key of a normalised keyword.
    pub(crate) fn keyword(&self, keyword: &str) -> Vec<u8> {
        self.derive(KEYWORD_DOMAIN, keyword.as_bytes())
    }

    /// The record key of a service description.
    pub(crate) fn service(&self, id: &str) -> Vec<u8> {
        self.derive(SERVICE_DOMAIN, id.as_bytes())
    }

    /// The record key of a publisher's index of its services in this scope.
    pub(crate) fn index(&self, publisher: &PeerId) -> Vec<u8> {
        self.derive(INDEX_DOMAIN, &publisher.to_bytes())
    }
}

fn public_hash(domain: &str, data: &[u8]) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain.as_bytes());
    h.update([0u8]);
    h.update(data);
    h.finalize().into()
}

/// The record key of the CA's revocation list.
pub(crate) fn revocations_key(ca: &cpns_keys::PublicKey) -> Vec<u8> {
    public_hash(REVOCATIONS_DOMAIN, &ca.to_bytes()).to_vec()
}

/// The record key of a PN's inventory summary.
pub(crate) fn pn_summary_key(pn_id: &str) -> Vec<u8> {
    public_hash(PN_SUMMARY_DOMAIN, pn_id.as_bytes()).to_vec()
}

/// The first 8 bytes of a keyword key: what a publisher index lists (a collision only costs a
/// fetch, which the full keyword check then filters out).
pub(crate) fn short(key: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (o, b) in out.iter_mut().zip(key) {
        *o = *b;
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cpns_keys::GroupId;

    #[test]
    fn normalisation() {
        assert_eq!(
            normalise_keyword("  Jazz \t Radio ", 64).unwrap(),
            "jazz radio"
        );
        assert_eq!(normalise_keyword("ÉTÉ", 64).unwrap(), "été");
        assert_eq!(normalise_keyword("  ", 64), Err(KeywordError::Empty));
        assert_eq!(normalise_keyword("a\u{7}b", 64), Err(KeywordError::Control));
        assert!(matches!(
            normalise_keyword(&"x".repeat(65), 64),
            Err(KeywordError::TooLong { .. })
        ));
        assert!(matches!(
            normalise_keyword(&"x".repeat(100_000), 64),
            Err(KeywordError::TooLong { .. })
        ));
        assert_eq!(
            normalise_all(&["A".into(), "a".into(), "b".into()], 8).unwrap(),
            vec!["a", "b"]
        );
    }

    #[test]
    fn keys_differ_by_scope_and_domain() {
        let k = GroupKey::generate(GroupId("pn:1".into()), 0);
        let other = GroupKey::generate(GroupId("pn:2".into()), 0);
        let public = KeyScope::Public.keyword("music");
        let sealed = KeyScope::Group(&k).keyword("music");
        assert_eq!(public.len(), 32);
        assert_ne!(public, sealed);
        assert_ne!(sealed, KeyScope::Group(&other).keyword("music"));
        assert_ne!(sealed, KeyScope::Group(&k.rotate()).keyword("music"));
        assert_ne!(KeyScope::Public.service("music"), public);
        assert_eq!(short(&public), public[..8]);
    }
}
