//! `cpns-auth`: the CPNS authentication/authorisation server and its admin CLI.
//!
//! ```text
//! cpns-auth serve --data-dir D --listen /ip4/0.0.0.0/tcp/4100
//! cpns-auth --data-dir D users create alice
//! cpns-auth --data-dir D enrol create --user alice --qr
//! cpns-auth --data-dir D entities list
//! ```
//!
//! Admin commands use the running server's admin endpoint (found through `D/admin.json`), or
//! open the data dir directly when no server runs. See `docs/AUTH.md`.

mod cli;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    // Everything the server writes (keys, the database with EUKeys and group keys, the admin
    // file) is for its own user only.
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
    // On one CPU (a small box, or `taskset -c 0`), a single-threaded runtime saves the
    // work-stealing scheduler's thread wake-ups; otherwise one worker per CPU.
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cpns-auth: cannot start the runtime: {e} (internal)");
            return ExitCode::from(EXIT_FAILED);
        }
    };
    match runtime.block_on(cli::run(args)) {
        Ok(()) => ExitCode::from(EXIT_OK),
        Err(e) => {
            let (code, exit) = classify(&e);
            eprintln!("cpns-auth: {} ({code})", chain(&e));
            ExitCode::from(exit)
        }
    }
}

// The exit codes and the error line are those of `cpns` (README "The CLI at a glance"):
// `PROGRAM: MESSAGE (CODE)` on stderr, and 0 success, 1 the operation failed, 2 usage error
// (clap's own, and a request the server calls malformed), 3 the server holds its data dir but
// does not answer.
const EXIT_OK: u8 = 0;
const EXIT_FAILED: u8 = 1;
const EXIT_USAGE: u8 = 2;
const EXIT_NOT_RUNNING: u8 = 3;

/// The stable code of a failure and the exit code it maps to.
fn classify(e: &anyhow::Error) -> (String, u8) {
    let code = e
        .chain()
        .find_map(|c| {
            c.downcast_ref::<cli::Failure>()
                .map(|f| f.code.clone())
                .or_else(|| {
                    c.downcast_ref::<cpns_auth::AdminError>()
                        .map(|a| a.code().to_owned())
                })
        })
        .unwrap_or_else(|| "failed".into());
    let exit = match code.as_str() {
        "bad_request" => EXIT_USAGE,
        "not_running" => EXIT_NOT_RUNNING,
        _ => EXIT_FAILED,
    };
    (code, exit)
}

/// The error and its causes, skipping a cause whose text the message before already contains
/// (many errors print their source in their own message).
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    let mut last = out.clone();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !last.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        last = text;
    }
    out
}
