//! Errors of the node's operations.

use std::path::PathBuf;

/// Why a node could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The data dir could not be created.
    #[error("cannot create data dir {path}: {source}")]
    DataDir {
        /// The dir.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The identity file could not be loaded or created.
    #[error(transparent)]
    Identity(#[from] cpns_keys::KeyFileError),
    /// The database could not be opened (another node on the same data dir?).
    #[error("cannot open the database: {0}")]
    Database(String),
    /// The overlay could not start (a listen address in use?).
    #[error(transparent)]
    Overlay(#[from] cpns_overlay::Error),
    /// The stored enrolment could not be read.
    #[error("cannot read the enrolment: {0}")]
    Enrolment(String),
    /// The local API could not start.
    #[error("cannot start the local API: {0}")]
    Api(String),
}

/// Why an operation requested through the API (or the in-process handle) failed. Each variant
/// maps to a stable code in the API's JSON errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpError {
    /// The request is invalid.
    #[error("{0}")]
    BadRequest(String),
    /// The thing named does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The node is not in a state to do this (not enrolled, not in a PN...).
    #[error("{0}")]
    Conflict(String),
    /// A peer or the server refused.
    #[error("{0}")]
    Refused(String),
    /// The network failed or timed out.
    #[error("{0}")]
    Unavailable(String),
    /// Something failed inside the node.
    #[error("{0}")]
    Internal(String),
}

impl OpError {
    /// The stable code used in API errors.
    pub fn code(&self) -> &'static str {
        match self {
            OpError::BadRequest(_) => "bad_request",
            OpError::NotFound(_) => "not_found",
            OpError::Conflict(_) => "conflict",
            OpError::Refused(_) => "refused",
            OpError::Unavailable(_) => "unavailable",
            OpError::Internal(_) => "internal",
        }
    }
}

impl From<cpns_overlay::Error> for OpError {
    fn from(e: cpns_overlay::Error) -> Self {
        match e {
            cpns_overlay::Error::Refused { .. } => OpError::Refused(e.to_string()),
            cpns_overlay::Error::NotFound => OpError::NotFound(e.to_string()),
            cpns_overlay::Error::BadAddress(_) => OpError::BadRequest(e.to_string()),
            cpns_overlay::Error::Shutdown => OpError::Unavailable(e.to_string()),
            _ => OpError::Unavailable(e.to_string()),
        }
    }
}
