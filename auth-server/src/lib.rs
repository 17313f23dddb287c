//! # cpns-auth: the CPNS authentication and authorisation server
//!
//! The AUC/AUZ part of the CPNS Server, on one small dedicated machine (spec Appendix B.3):
//! households and communities run it to enrol their devices, authenticate them (B.1 steps
//! 8-11), keep their Personal Networks' membership lists and policies (steps 17, 19-23, 5.6.9),
//! hand out and rotate PN and Service Group keys (5.6.6, 5.6.8), revoke devices, and collect
//! usage reports for charging (5.5, 5.6.3).
//!
//! It is a libp2p node speaking `/cpns/auth/1.0.0` (the overlay's request-response codec), with
//! its state in sled and its keys in the data dir:
//!
//! ```text
//! D/ca.key       the CA identity (0600): signs credentials and revocation lists
//! D/server.key   the server's libp2p identity (0600): its PeerId
//! D/db/          sled: users, codes, entities, PNs, Service Groups, usage, revocations
//! D/admin.json   while running (0600): the admin endpoint's address and bearer token
//! ```
//!
//! Start one in-process (tests, the local mesh) and drive it through [`Admin`]:
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! let dir = std::env::temp_dir().join("cpns-auth-demo");
//! let server = cpns_auth::Server::start(cpns_auth::Config::with_data_dir(&dir)).await?;
//! println!("{} on {:?}", server.peer_id(), server.listen_addrs());
//! let admin = server.admin();
//! admin.create_user("alice").await?;
//! let code = admin
//!     .create_code("alice", cpns_keys::Modes::ALL, Duration::from_secs(3600), false)
//!     .await?;
//! // A node enrols with `code` (cpns-node enrol CODE), then:
//! for entity in admin.list_entities().await? {
//!     println!("{} {} {}", entity.user, entity.device, entity.peer_id);
//! }
//! server.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! Every change a node or the operator makes is durable (sled flushed) before it is answered.
//! Requests from peers are size-limited by the overlay's codec, answered exactly once, and
//! never panic the server; every per-peer map is bounded. See `docs/AUTH.md` for the operator
//! guide and the security decisions.

mod admin;
pub mod authn;
mod config;
mod core;
mod enrol;
mod error;
mod groups;
mod handler;
mod metrics;
mod pn;
mod pn_admin;
mod pn_invite;
mod pn_merge;
mod records;
mod revocation;
mod server;
mod store;
mod usage;
mod views;
mod zone;

pub use admin::{ADMIN_FILE, Admin, AdminFile, CodeOptions};
pub use config::{Config, ConfigError, ENV_PREFIX};
pub use error::{AdminError, StartError};
pub use server::{Server, ServerHandle};
pub use store::StoreError;
pub use usage::UsageFormat;
pub use views::{
    ChargingRecord, CodeView, CreatedCode, DeletedUser, EntityView, GroupView, PnView,
    RevokeOutcome, ServerInfo, UserView,
};

/// File names in the data dir.
pub mod files {
    /// The CA identity.
    pub const CA_KEY: &str = crate::core::CA_KEY_FILE;
    /// The server's libp2p identity.
    pub const SERVER_KEY: &str = crate::core::SERVER_KEY_FILE;
    /// The sled database directory.
    pub const DB: &str = crate::core::DB_DIR;
    /// The admin endpoint's address and token (while running).
    pub const ADMIN: &str = crate::admin::ADMIN_FILE;
}
