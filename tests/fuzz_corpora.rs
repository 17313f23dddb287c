//! Every fuzz target's corpus and every crash file ever found, replayed on stable through the
//! same functions the cargo-fuzz targets call (`cpns::fuzzing::run`): a decoder that panics
//! on one of them fails here, without nightly. Corpora: `fuzz/corpus/<target>/` (the seeds of
//! `cargo run --example fuzz_seeds` and what fuzzing added); crashes: `fuzz/artifacts/<target>/`
//! (kept after the fix as regression inputs).

use std::path::Path;

use anyhow::{Result, ensure};

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    out.retain(|p| p.is_file());
    out.sort();
    out
}

/// Every target has a seed corpus, and every corpus and crash file decodes without a panic.
#[test]
fn every_corpus_and_crash_file_is_decoded_without_a_panic() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut total = 0;
    for target in cpns::fuzzing::TARGETS {
        let corpus = files(&root.join("corpus").join(target));
        ensure!(
            corpus.iter().any(|p| p
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))),
            "{target} has no seed corpus (run `cargo run --example fuzz_seeds`)"
        );
        let crashes = files(&root.join("artifacts").join(target));
        for path in corpus.iter().chain(&crashes) {
            let data = std::fs::read(path)?;
            cpns::fuzzing::run(target, &data);
            total += 1;
        }
        // The seeds as they are made now decode too (a changed format shows up here).
        for (_, seed) in cpns::fuzzing::seeds(target) {
            cpns::fuzzing::run(target, &seed);
        }
    }
    ensure!(total >= cpns::fuzzing::TARGETS.len());
    Ok(())
}

/// The seeds are real messages: each is accepted by its decoder, not just survived.
#[test]
fn seeds_are_valid_messages() -> Result<()> {
    use cpns_overlay::codec;
    for (name, b) in cpns::fuzzing::seeds("cpns_envelope") {
        ensure!(
            codec::decode_envelope(&b, codec::DEFAULT_MAX_FRAME).is_ok(),
            "{name}"
        );
    }
    for (name, b) in cpns::fuzzing::seeds("record_verify") {
        if name != "sealed_body" {
            ensure!(cpns_directory::fuzzing::verify_record(&b).is_ok(), "{name}");
        }
    }
    for (name, b) in cpns::fuzzing::seeds("pairing_code") {
        let text = String::from_utf8(b)?;
        ensure!(
            cpns_node::fuzzing::parse_pairing_target(&text).is_ok(),
            "{name}"
        );
    }
    for (name, b) in cpns::fuzzing::seeds("delivery_stream") {
        let sender = cpns_keys::Identity::from_secret_bytes([0x11; 32]).peer_id();
        let key =
            cpns_keys::GroupKey::from_parts(cpns_keys::GroupId("pn-fuzz".into()), 3, [0x42; 32]);
        let got = cpns_node::fuzzing::decode_stream(&b, Some(&key), &sender);
        ensure!(got.is_ok(), "{name}: {got:?}");
    }
    for (name, b) in cpns::fuzzing::seeds("enrolment_code") {
        ensure!(
            cpns_overlay::EnrolmentCode::from_text(&String::from_utf8(b)?).is_ok(),
            "{name}"
        );
    }
    Ok(())
}
