//! The `cpns` command-line interface: a thin client of a running node's local API, shaped like
//! `tailscale` and `ipfs`. Human-readable tables by default, `--json` on every read command.
//!
//! Exit codes that scripts can rely on: 0 success, 1 the operation failed (the node or a peer
//! refused, or the network failed), 2 usage error, 3 the node is not running (no API file, or
//! nothing answers at its address).

mod caps;
mod client;
mod commands;
mod groups;
mod mesh;
mod output;
mod pn;
mod pn_admin;
mod progress;
mod proxy;
mod services;
mod status;
mod table;
mod zone;

pub use client::{ApiClient, CliError};
pub use commands::{Cli, run};

/// Exit code: success.
pub const EXIT_OK: u8 = 0;
/// Exit code: the operation failed.
pub const EXIT_FAILED: u8 = 1;
/// Exit code: usage error (clap uses it too).
pub const EXIT_USAGE: u8 = 2;
/// Exit code: the node is not running.
pub const EXIT_NOT_RUNNING: u8 = 3;
