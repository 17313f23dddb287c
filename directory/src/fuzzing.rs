//! Entry points for the fuzz targets (`fuzz/`) and their stable regression tests: the
//! directory's decoders of untrusted bytes (record verify, peek, and the opening of sealed
//! descriptions) with a fixed trust anchor, configuration, group key and clock, and the real
//! records a seed corpus starts from. Every function takes any input and must never panic.

use cpns_keys::RevocationList;
use cpns_keys::{CredentialBody, EntityCredential, GroupId, GroupKey, Identity, Modes, UnixTime};

use crate::config::Config;
use crate::keyword::{self, KeyScope};
use crate::record::{self, Body, Checked, DhtRecord, Header, ServiceBody};
use crate::service::{Endpoint, Requirements, ServiceDescription, Source, Visibility};
use crate::trust::Trust;

/// The id of the seed descriptions.
const SEED_ID: &str = "svc-00112233445566ff";

/// The clock every decode here runs at.
pub const NOW: UnixTime = 1_800_000_000;

fn ca() -> Identity {
    Identity::from_secret_bytes([0xca; 32])
}

fn publisher() -> Identity {
    Identity::from_secret_bytes([0x11; 32])
}

/// The group key sealed descriptions are opened with.
pub fn group_key() -> GroupKey {
    GroupKey::from_parts(GroupId("pn-fuzz".into()), 3, [0x42; 32])
}

fn trust() -> Trust {
    Trust::new(ca().public(), RevocationList::empty_unsigned())
}

fn credential() -> EntityCredential {
    let node = publisher();
    EntityCredential::issue(
        &ca(),
        CredentialBody {
            entity: node.peer_id(),
            user: "alice".into(),
            device: "nas".into(),
            modes: Modes::ALL,
            serial: 1,
            issued: NOW - 60,
            expires: NOW + 86_400,
        },
    )
}

/// [`record::verify`] of `bytes` (under the key in their own header).
pub fn verify_record(bytes: &[u8]) -> Result<(), String> {
    record::verify(bytes, None, &trust(), &Config::default(), NOW)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// [`record::peek`] of `bytes` (what the validator does with a stored record).
pub fn peek_record(bytes: &[u8]) -> Result<(), String> {
    record::peek(bytes, &Config::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Verifies `bytes` and, if they hold a sealed description, opens it with [`group_key`].
pub fn open_sealed(bytes: &[u8]) -> Result<(), String> {
    let config = Config::default();
    let checked = record::verify(bytes, None, &trust(), &config, NOW).map_err(|e| e.to_string())?;
    let Checked::Signed { header } = checked else {
        return Err("not a signed record".into());
    };
    match &header.body {
        Body::Service(ServiceBody::Sealed(sealed)) => {
            record::open_sealed(&header, sealed, &group_key(), &config)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => Err("not a sealed description".into()),
    }
}

/// The same, skipping the signature: `bytes` is the encoded [`cpns_keys::GroupSealed`] of a
/// description, opened under a fixed header (so a fuzzer reaches the sealed content without
/// having to forge a signature).
pub fn open_sealed_body(bytes: &[u8]) -> Result<(), String> {
    let config = Config::default();
    let sealed: cpns_keys::GroupSealed =
        cpns_overlay::codec::decode(bytes, config.max_record_size).map_err(|e| e.to_string())?;
    let header = Header {
        key: KeyScope::Group(&group_key()).service(SEED_ID),
        publisher: publisher().peer_id(),
        version: 1,
        issued: NOW,
        expires: NOW + 3600,
        body: Body::Service(ServiceBody::Sealed(sealed.clone())),
    };
    record::open_sealed(&header, &sealed, &group_key(), &config)
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn description(visibility: Visibility) -> ServiceDescription {
    let p = publisher().peer_id();
    ServiceDescription {
        id: SEED_ID.into(),
        name: "Family photos".into(),
        keywords: vec!["photos".into(), "family".into()],
        offers: "the photo library".into(),
        source: Source::Entity(p),
        publisher: p,
        requirements: Requirements::default(),
        endpoint: Endpoint {
            protocol: "http".into(),
            addresses: vec!["http://127.0.0.1:8080".into()],
        },
        metadata: Default::default(),
        version: NOW * 1000,
        published: NOW,
        expires: NOW + 3600,
        visibility,
    }
}

/// Real records, as nodes put them in the DHT: a public service, a sealed one, a withdrawal,
/// a publisher index, a PN summary and a revocation list; and the sealed body alone.
pub fn seed_records() -> Vec<(&'static str, Vec<u8>)> {
    let node = publisher();
    let cred = credential();
    let gk = group_key();
    let mut out = Vec::new();
    let mut signed = |name: &'static str, key: Vec<u8>, body: Body| {
        let header = Header {
            key,
            publisher: node.peer_id(),
            version: NOW * 1000,
            issued: NOW,
            expires: NOW + 3600,
            body,
        };
        if let Ok(bytes) = record::sign(&node, &cred, &header) {
            out.push((name, bytes));
        }
    };
    let public = description(Visibility::Public);
    signed(
        "public_service",
        KeyScope::Public.service(&public.id),
        Body::Service(ServiceBody::Clear(Box::new(public))),
    );
    let private = description(Visibility::Pn(gk.group().clone()));
    let sealed = record::seal(&gk, &private).ok();
    if let Some(sealed) = &sealed {
        signed(
            "sealed_service",
            KeyScope::Group(&gk).service(&private.id),
            Body::Service(ServiceBody::Sealed(sealed.clone())),
        );
    }
    signed(
        "withdrawn",
        KeyScope::Public.service("svc-gone"),
        Body::Service(ServiceBody::Withdrawn),
    );
    signed(
        "index",
        KeyScope::Public.index(&node.peer_id()),
        Body::Index(vec![record::IndexEntry {
            record: KeyScope::Public.service(SEED_ID),
            keywords: vec![[1; 8], [2; 8]],
        }]),
    );
    signed(
        "pn_summary",
        keyword::pn_summary_key("pn-fuzz"),
        Body::PnSummary(Box::new(cpns_overlay::PnInventorySummary {
            pn_id: "pn-fuzz".into(),
            owner: "alice".into(),
            gateway: node.peer_id(),
            epoch: 3,
            members: vec![],
            services: vec![SEED_ID.into()],
            updated: NOW,
            details: Vec::new(),
            admins: Vec::new(),
        })),
    );
    if let Ok(list) = RevocationList::sign(&ca(), 2, NOW, [5, 9])
        && let Ok(bytes) = cpns_overlay::codec::encode(&DhtRecord::Revocations(list))
    {
        out.push(("revocations", bytes));
    }
    if let Some(sealed) = sealed
        && let Ok(bytes) = cpns_overlay::codec::encode(&sealed)
    {
        out.push(("sealed_body", bytes));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn seeds_decode() {
        let seeds = seed_records();
        assert_eq!(seeds.len(), 7);
        for (name, bytes) in &seeds {
            match *name {
                "sealed_body" => open_sealed_body(bytes).unwrap(),
                "sealed_service" => open_sealed(bytes).unwrap(),
                _ => verify_record(bytes).unwrap(),
            }
            if *name != "sealed_body" {
                peek_record(bytes).unwrap();
            }
        }
    }
}
