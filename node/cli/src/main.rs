//! `cpns`: the command-line client of a running `cpns-node`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cpns_cli::Cli::parse();
    ExitCode::from(cpns_cli::run(cli).await)
}
