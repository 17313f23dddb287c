//! # cpns-node: a CPNS device
//!
//! One `cpns-node` runs on each device of a household or community. It is a PNE, a PN gateway,
//! or both (OMA CPNS v1.1, Appendix B.3, peer-to-peer deployment): it pairs with other devices,
//! elects a gateway, joins a Personal Network through `cpns-auth`, publishes and finds services
//! in the Kademlia DHT, delivers content, and reports status and usage.
//!
//! The daemon (`cpns-node`) serves a local HTTP API on 127.0.0.1, guarded by a token written
//! into its data dir; its bodies are the `cpns-api` crate's types, and the `cpns` CLI
//! (package `cpns-cli`) is a thin client of that API that links nothing of this crate. [`Node`] is the same thing
//! in-process, for tests and embedders:
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! let mut config = cpns_node::Config::default();
//! config.data_dir = "/tmp/cpns-a".into();
//! config.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
//! config.mdns = false;
//! let node = cpns_node::Node::start(config).await?;
//! println!("{}", serde_json::to_string_pretty(&node.handle().status().await?)?);
//! node.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod auth_link;
pub mod authz;
mod caps;
pub mod config;
mod context;
pub mod delivery;
pub mod enrolment;
mod error;
pub mod fuzzing;
mod groups;
mod handle;
mod keyring;
mod lan;
mod metrics;
mod node;
mod pn;
mod proxy;
mod renewal;
mod router;
mod services;
pub mod status;
mod store;
pub mod trace;
pub mod usage;
pub mod views;
mod zone;

pub use api::{API_FILE, ApiFile};
pub use config::{Config, ConfigError, ModeSetting};
pub use error::{OpError, StartError};
pub use handle::Handle;
pub use node::{IDENTITY_FILE, Node};
pub use pn::{Invitation, PairOutcome};
pub use renewal::CredentialView;
pub use store::StoreError;

/// Seconds since the Unix epoch.
pub(crate) fn now() -> cpns_keys::UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
