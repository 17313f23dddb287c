//! Usage: `cargo run --example fuzz_seeds`
//!
//! Writes the seed corpus of every fuzz target (`cpns::fuzzing::TARGETS`) to
//! `fuzz/corpus/<target>/seed-<name>`: real messages, records, credentials, keys, codes and
//! delivery streams as the project makes them. Run it again after a wire format changes and
//! commit the result; `tests/fuzz_corpora.rs` replays every corpus file on stable.

use anyhow::{Context, Result};

fn main() -> Result<()> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for target in cpns::fuzzing::TARGETS {
        let dir = root.join(target);
        std::fs::create_dir_all(&dir).with_context(|| dir.display().to_string())?;
        let seeds = cpns::fuzzing::seeds(target);
        anyhow::ensure!(!seeds.is_empty(), "no seeds for {target}");
        for (name, bytes) in seeds {
            let path = dir.join(format!("seed-{name}"));
            std::fs::write(&path, &bytes).with_context(|| path.display().to_string())?;
        }
        println!("{target}: {} seeds", cpns::fuzzing::seeds(target).len());
    }
    Ok(())
}
