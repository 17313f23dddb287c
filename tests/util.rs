//! Shared test scaffolding.
#![allow(dead_code)]

use std::time::Duration;

/// Installs a tracing subscriber once (RUST_LOG controls it; quiet by default).
pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_test_writer()
        .try_init();
}

/// The bound every test waits for an event within.
pub const WAIT: Duration = Duration::from_secs(20);

/// The path of one of the workspace's binaries (`cpns-node`, `cpns`, `cpns-auth`), built on
/// first use with the same cargo and profile as this test, so that multi-process tests run the
/// real binaries and a plain `cargo test` / `cargo nextest run` needs no extra step.
pub fn bin(name: &str) -> std::path::PathBuf {
    use std::sync::OnceLock;
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let status = std::process::Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "cpns-node",
                "-p",
                "cpns-auth",
                "--bins",
            ])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .status()
            .map_err(|e| format!("cannot run cargo: {e}"))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!("cargo build of the binaries failed: {status}"))
        }
    });
    if let Err(e) = built {
        panic!("{e}");
    }
    // The test executable is target/<profile>/deps/tests-<hash>; binaries are in target/<profile>.
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
    let path = dir.join(name);
    assert!(path.exists(), "{} was not built", path.display());
    path
}
