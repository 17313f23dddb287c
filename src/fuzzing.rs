//! The fuzz targets of `fuzz/` as plain functions: one per decoder of untrusted bytes, each
//! feeding its input to the same code a node, a directory or `cpns-auth` runs on a peer's
//! bytes. `fuzz/fuzz_targets/*.rs` call [`run`]; the stable test `tests/fuzz_corpora.rs` feeds
//! every file of `fuzz/corpus/<target>/` and `fuzz/artifacts/<target>/` through it, so each
//! corpus and every crash ever found is a regression test without nightly. [`seeds`] makes
//! the seed corpora from real messages (`cargo run --example fuzz_seeds`).
//!
//! A target passes when it returns: errors are the expected outcome for most inputs; a panic,
//! an abort or a hang is the bug.

use cpns_keys::{
    CredentialBody, EntityCredential, EuKey, GroupId, GroupKey, Identity, Modes, RevocationList,
};
use cpns_overlay::codec::{self, DEFAULT_MAX_FRAME};
use cpns_overlay::{
    AuthMessage, Capabilities, DirectoryMessage, EnrolmentCode, Envelope, Message, PnMessage,
};

/// Every target, by name (the file names in `fuzz/fuzz_targets/`).
pub const TARGETS: &[&str] = &[
    "cpns_frame",
    "cpns_envelope",
    "record_verify",
    "record_peek",
    "record_open_sealed",
    "entity_credential",
    "group_key_secret",
    "eukey_sealed",
    "revocation_list",
    "enrolment_code",
    "pairing_code",
    "delivery_stream",
];

fn ca() -> Identity {
    Identity::from_secret_bytes([0xca; 32])
}

fn node() -> Identity {
    Identity::from_secret_bytes([0x11; 32])
}

/// Feeds `data` to `target`'s decoder. Unknown targets do nothing.
pub fn run(target: &str, data: &[u8]) {
    match target {
        // A frame on /cpns/1.0.0 or /cpns/auth/1.0.0 as the stream brings it: length prefix,
        // version, envelope (both protocols share the codec).
        "cpns_frame" => futures::executor::block_on(async {
            let mut input = futures::io::Cursor::new(data);
            if let Ok(frame) = codec::read_frame(&mut input, DEFAULT_MAX_FRAME).await {
                let _ = codec::decode_envelope(&frame, DEFAULT_MAX_FRAME);
            }
        }),
        "cpns_envelope" => {
            if let Ok(env) = codec::decode_envelope(data, DEFAULT_MAX_FRAME) {
                // What the node does first with a request: its name and whether it is open.
                let _ = (env.body.is_open(), format!("{:?}", env.body).len());
            }
        }
        "record_verify" => {
            let _ = cpns_directory::fuzzing::verify_record(data);
        }
        "record_peek" => {
            let _ = cpns_directory::fuzzing::peek_record(data);
        }
        "record_open_sealed" => {
            let _ = cpns_directory::fuzzing::open_sealed(data);
            let _ = cpns_directory::fuzzing::open_sealed_body(data);
        }
        "entity_credential" => {
            if let Ok(c) = EntityCredential::from_bytes(data) {
                let _ = c.verify_for(
                    &ca().public(),
                    c.entity(),
                    None,
                    cpns_directory::fuzzing::NOW,
                );
            }
        }
        "group_key_secret" => {
            let _ = GroupKey::decode_secret(data);
        }
        "eukey_sealed" => {
            if let Ok(s) = cpns_keys::Sealed::from_bytes(data) {
                let _ = EuKey::from_bytes([7; 32]).open(b"aad", &s);
            }
        }
        "revocation_list" => {
            if let Ok(list) = codec::decode::<RevocationList>(data, 64 * 1024) {
                let _ = list.verify(&ca().public());
                let _ = list.contains(1);
            }
        }
        "enrolment_code" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = EnrolmentCode::from_text(text);
            }
        }
        "pairing_code" => {
            if let Ok(text) = std::str::from_utf8(data) {
                let _ = cpns_node::fuzzing::parse_pairing_target(text);
            }
        }
        "delivery_stream" => {
            let sender = node().peer_id();
            let _ = cpns_node::fuzzing::decode_stream(data, None, &sender);
            let _ = cpns_node::fuzzing::decode_stream(data, Some(&group_key()), &sender);
        }
        _ => {}
    }
}

fn group_key() -> GroupKey {
    GroupKey::from_parts(GroupId("pn-fuzz".into()), 3, [0x42; 32])
}

fn credential() -> EntityCredential {
    let now = cpns_directory::fuzzing::NOW;
    EntityCredential::issue(
        &ca(),
        CredentialBody {
            entity: node().peer_id(),
            user: "alice".into(),
            device: "nas".into(),
            modes: Modes::ALL,
            serial: 1,
            issued: now - 60,
            expires: now + 86_400,
        },
    )
}

fn frame(body: &[u8]) -> Vec<u8> {
    let mut out = (body.len() as u32).to_be_bytes().to_vec();
    out.extend_from_slice(body);
    out
}

/// Real messages for `target`'s seed corpus, each with a file name.
pub fn seeds(target: &str) -> Vec<(String, Vec<u8>)> {
    let named = |v: Vec<(&str, Vec<u8>)>| -> Vec<(String, Vec<u8>)> {
        v.into_iter().map(|(n, b)| (n.to_string(), b)).collect()
    };
    let envelopes = || -> Vec<(&'static str, Vec<u8>)> {
        let record = cpns_directory::fuzzing::seed_records()
            .into_iter()
            .next()
            .map(|(_, b)| b)
            .unwrap_or_default();
        let messages = [
            ("ping", Message::Pn(PnMessage::Ping { nonce: 42 })),
            ("ack", Message::Ack),
            (
                "error",
                Message::error(cpns_overlay::ErrorCode::Busy, "node overloaded"),
            ),
            (
                "lookup",
                Message::Directory(DirectoryMessage::Lookup {
                    keyword: vec![3; 32],
                }),
            ),
            (
                "advertise",
                Message::Directory(DirectoryMessage::Advertise { record }),
            ),
            ("keys_pull", Message::Auth(AuthMessage::KeysPull)),
            (
                "capabilities",
                Message::Auth(AuthMessage::CapabilitiesUpdate(Capabilities::default())),
            ),
        ];
        messages
            .into_iter()
            .filter_map(|(n, m)| {
                codec::encode_envelope(&Envelope::new(9, m))
                    .ok()
                    .map(|b| (n, b))
            })
            .collect()
    };
    match target {
        "cpns_frame" => named(
            envelopes()
                .into_iter()
                .map(|(n, b)| (n, frame(&b)))
                .collect(),
        ),
        "cpns_envelope" => named(envelopes()),
        "record_verify" | "record_peek" | "record_open_sealed" => named(
            cpns_directory::fuzzing::seed_records()
                .into_iter()
                .collect(),
        ),
        "entity_credential" => named(vec![("credential", credential().to_bytes())]),
        "group_key_secret" => named(vec![("group_key", group_key().encode_secret())]),
        "eukey_sealed" => named(vec![(
            "sealed",
            EuKey::from_bytes([7; 32])
                .seal(b"aad", b"a PN key grant")
                .to_bytes(),
        )]),
        "revocation_list" => {
            let now = cpns_directory::fuzzing::NOW;
            let mut out = Vec::new();
            for (n, serials) in [("empty", vec![]), ("three", vec![1u64, 5, 9])] {
                if let Ok(list) = RevocationList::sign(&ca(), 2, now, serials)
                    && let Ok(b) = codec::encode(&list)
                {
                    out.push((n, b));
                }
            }
            named(out)
        }
        "enrolment_code" => {
            let code = EnrolmentCode {
                server: node().peer_id(),
                addrs: vec![
                    "/ip4/127.0.0.1/tcp/4100"
                        .parse()
                        .unwrap_or(libp2p::Multiaddr::empty()),
                ],
                ca_fingerprint: "sha256:00112233".into(),
                code_id: "0123456789abcdef".into(),
                secret: [5; 32],
            };
            named(vec![("code", code.to_text().into_bytes())])
        }
        "pairing_code" => {
            let addrs = vec![
                "/ip4/127.0.0.1/tcp/4001"
                    .parse()
                    .unwrap_or(libp2p::Multiaddr::empty()),
            ];
            let mut out = vec![(
                "multiaddr",
                format!("/ip4/127.0.0.1/tcp/4001/p2p/{}", node().peer_id()).into_bytes(),
            )];
            if let Ok(code) = cpns_node::fuzzing::pairing_code(node().peer_id(), &addrs) {
                out.push(("code", code.into_bytes()));
            }
            named(out)
        }
        "delivery_stream" => {
            let sender = node().peer_id();
            let content: Vec<u8> = (0..3000u32).map(|i| i as u8).collect();
            named(vec![
                (
                    "public",
                    cpns_node::fuzzing::encode_stream(1, None, &sender, &content, 1024),
                ),
                (
                    "sealed",
                    cpns_node::fuzzing::encode_stream(
                        2,
                        Some(&group_key()),
                        &sender,
                        &content,
                        1024,
                    ),
                ),
                (
                    "empty",
                    cpns_node::fuzzing::encode_stream(3, None, &sender, &[], 1024),
                ),
            ])
        }
        _ => Vec::new(),
    }
}
