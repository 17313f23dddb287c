//! # cpns: CPNS-P2P
//!
//! The root package of the workspace: it re-exports the crates so that examples and
//! integration tests can use one name, and owns `examples/` and `tests/`.
//!
//! * [`keys`]: identities, entity credentials, EUKeys, group keys.
//! * [`overlay`]: the libp2p overlay and the CPNS wire protocol.
//! * [`directory`]: the Metadata Directory over the DHT.
//! * [`auth`]: the `cpns-auth` server.
//! * [`node`]: the node daemon.
//! * [`fuzzing`]: the fuzz targets as plain functions, and their seed corpora.

pub use cpns_auth as auth;
pub use cpns_directory as directory;
pub use cpns_keys as keys;
pub use cpns_node as node;
pub use cpns_overlay as overlay;

pub mod fuzzing;
