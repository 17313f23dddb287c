//! # cpns-directory: the CPNS Metadata Directory over the DHT
//!
//! Service Publication & Discovery (spec 5.6.4, Appendix E) for the peer-to-peer deployment:
//! the metadata directory is spread over the overlay's Kademlia DHT, every node is a publisher
//! and a discoverer, and gateways route.
//!
//! * **Publish** ([`Directory::publish`]): a [`ServiceDescription`] is signed by the
//!   publisher's identity key, carries its CA credential, and is stored under its service key;
//!   the publisher announces itself as a provider of every normalised keyword, and updates
//!   its publisher index (the DHT fallback of direct lookups). Own services are kept in sled
//!   and republished at start and every hour ([`Directory::run`]).
//! * **Visibility** ([`Visibility`]): public, a PN (the default of a node) or a Service
//!   Group. A non-public description is sealed under the group key and all its DHT keys are
//!   keyed hashes under that key: other households' nodes store and route it but can neither
//!   read it nor learn its keywords or id.
//! * **Discover** ([`Directory::find`], [`Directory::get`]): by one or several keywords (all
//!   must match) or by id, filtered on the consumer's capabilities, with the query's
//!   [`Figures`] (requests, peers contacted, duration) to compare with Appendix E.
//! * **Advertise** ([`Directory::advertisement`], [`Directory::subscription`],
//!   [`Directory::handle`]): subscribers to a keyword hear of new services in their PN
//!   without polling; the node routes the messages.
//! * **Validation** ([`Validator`], installed as the overlay's record validator): signature,
//!   credential chain to the pinned CA, unrevoked, unexpired, size limits, quotas per peer.
//!   Forged, oversized or revoked records are stored by nobody.
//!
//! The record format, keys and limits are described in `docs/DIRECTORY.md`.
//!
//! ```no_run
//! # async fn demo(
//! #     client: cpns_overlay::Client,
//! #     identity: cpns_keys::Identity,
//! #     credential: cpns_keys::EntityCredential,
//! #     ca: cpns_keys::PublicKey,
//! # ) -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use cpns_directory::{Config, Directory, MemoryKeyRing, Query, ServiceDraft, Trust, Visibility};
//!
//! // The validator goes into the overlay's config before the overlay starts:
//! // overlay_config.validator = Arc::new(Validator::new(trust.clone(), &Config::default()));
//! let trust = Arc::new(Trust::new(ca, cpns_keys::RevocationList::empty_unsigned()));
//! let db = sled::Config::new().temporary(true).open()?;
//! let dir = Directory::open(Config::default(), client, identity, credential, trust,
//!     Arc::new(MemoryKeyRing::new()), &db)?;
//! dir.publish(ServiceDraft::new("Jazz radio", ["jazz", "radio"], Visibility::Public)).await?;
//! let found = dir.find(&Query::keywords(["jazz"])).await?;
//! println!("{} found with {} requests", found.services.len(), found.figures.requests);
//! # Ok(()) }
//! ```

mod config;
mod directory;
mod error;
pub mod fuzzing;
#[cfg(test)]
mod hostile_tests;
mod keyring;
mod keyword;
mod record;
mod service;
pub mod store;
#[cfg(any(test, feature = "test-utils"))]
pub mod test_utils;
mod trust;
mod validate;

pub use config::Config;
pub use directory::Directory;
pub use error::{DirectoryError, FindError, PublishError};
pub use keyring::{KeyRing, MemoryKeyRing};
pub use keyword::{KeywordError, normalise_keyword};
pub use record::RecordError;
pub use service::{
    Discovery, Endpoint, Figures, Found, Query, Requirements, Scope, ServiceDescription,
    ServiceDraft, ServiceId, Source, Unmet, Visibility,
};
pub use trust::Trust;
pub use validate::Validator;

/// Now, in seconds since the Unix epoch: the one place this crate reads the clock.
pub(crate) fn now() -> cpns_keys::UnixTime {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
