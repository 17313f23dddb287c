//! # cpns-node: a CPNS device
//!
//! One `cpns-node` runs on each device of a household or community. It is a PNE, a PN gateway,
//! or both (OMA CPNS v1.1, Appendix B.3, peer-to-peer deployment): it pairs with other devices,
//! elects a gateway, joins a Personal Network through `cpns-auth`, publishes and finds services
//! in the Kademlia DHT, delivers content, and reports status and usage.
//!
//! The daemon (`cpns-node`) serves a local HTTP API on 127.0.0.1, guarded by a token written
//! into its data dir; the `cpns` CLI is a thin client of that API. [`Node`] is the same thing
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
mod caps;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod enrolment;
mod error;
pub mod fuzzing;
mod groups;
mod handle;
mod handlers;
mod keyring;
mod lan;
mod metrics;
mod node;
mod pn;
mod renewal;
mod services;
mod shared;
pub mod status;
pub mod trace;
pub mod usage;
pub mod views;

pub use api::{API_FILE, ApiFile};
pub use config::{Config, ConfigError, ModeSetting};
pub use error::{OpError, StartError};
pub use handle::Handle;
pub use node::{IDENTITY_FILE, Node};
pub use pn::pairing::PairOutcome;
pub use renewal::CredentialView;
