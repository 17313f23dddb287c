//! Error types. Library operations return typed errors; the request handler maps them to the
//! wire's [`ErrorCode`]s, and the admin endpoint to JSON `{ "error": { "code", "message" } }`.

use std::path::PathBuf;

use cpns_overlay::ErrorCode;

use crate::authn::AuthnError;
use crate::config::ConfigError;
use crate::store::StoreError;

/// Why the server could not start.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The data directory could not be created or used.
    #[error("data dir {}: {source}", path.display())]
    DataDir {
        /// The directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The CA or server key could not be loaded or created.
    #[error(transparent)]
    Key(#[from] cpns_keys::KeyFileError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The libp2p node could not start.
    #[error("overlay: {0}")]
    Overlay(#[from] cpns_overlay::Error),
    /// The admin endpoint could not start or `admin.json` could not be written.
    #[error("admin endpoint: {0}")]
    Admin(std::io::Error),
}

/// Failures of admin operations ([`crate::Admin`], the admin endpoint, the CLI).
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The user, entity, code, PN or group does not exist.
    #[error("{0}")]
    NotFound(String),
    /// It already exists, or the change conflicts with the current state.
    #[error("{0}")]
    Conflict(String),
    /// An argument is not valid.
    #[error("{0}")]
    Invalid(String),
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    /// A stable `snake_case` code, as in the admin endpoint's JSON errors.
    pub fn code(&self) -> &'static str {
        match self {
            AdminError::NotFound(_) => "not_found",
            AdminError::Conflict(_) => "conflict",
            AdminError::Invalid(_) => "bad_request",
            AdminError::Store(_) => "internal",
        }
    }
}

/// Why an enrolment was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum EnrolmentError {
    #[error("too many enrolment attempts from this peer; try again in a minute")]
    RateLimited,
    #[error("unknown enrolment code")]
    UnknownCode,
    #[error("wrong enrolment code secret")]
    WrongSecret,
    #[error("enrolment code expired")]
    Expired,
    #[error("enrolment code already used")]
    AlreadyUsed,
    #[error("the code's user no longer exists")]
    UserGone,
    #[error("this device was revoked; it must enrol with a new identity")]
    Revoked,
    #[error("bad device name: {0}")]
    BadDevice(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl EnrolmentError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            EnrolmentError::RateLimited => ErrorCode::RateLimited,
            EnrolmentError::UnknownCode | EnrolmentError::UserGone => ErrorCode::NotFound,
            EnrolmentError::WrongSecret => ErrorCode::BadProof,
            EnrolmentError::Expired => ErrorCode::ChallengeExpired,
            EnrolmentError::AlreadyUsed => ErrorCode::Conflict,
            EnrolmentError::Revoked => ErrorCode::Revoked,
            EnrolmentError::BadDevice(_) => ErrorCode::BadRequest,
            EnrolmentError::Store(_) => ErrorCode::Internal,
        }
    }

    pub(crate) fn reason(&self) -> &'static str {
        match self {
            EnrolmentError::RateLimited => "rate_limited",
            EnrolmentError::UnknownCode => "unknown_code",
            EnrolmentError::WrongSecret => "wrong_secret",
            EnrolmentError::Expired => "expired",
            EnrolmentError::AlreadyUsed => "already_used",
            EnrolmentError::UserGone => "user_gone",
            EnrolmentError::Revoked => "revoked",
            EnrolmentError::BadDevice(_) => "bad_device",
            EnrolmentError::Store(_) => "internal",
        }
    }
}

/// Why a PN, Service Group, key or usage request was refused.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestError {
    #[error("authenticate first (B.1 steps 8-11)")]
    NotAuthenticated,
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("request time is {skew}s away from the server's clock")]
    Stale { skew: u64 },
    #[error("membership request nonce already used")]
    Replay,
    #[error("{0}")]
    Quota(String),
    #[error(transparent)]
    Authn(#[from] AuthnError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl RequestError {
    pub(crate) fn code(&self) -> ErrorCode {
        match self {
            RequestError::NotAuthenticated => ErrorCode::NotAuthenticated,
            RequestError::NotFound(_) => ErrorCode::NotFound,
            RequestError::Forbidden(_) => ErrorCode::Forbidden,
            RequestError::Conflict(_) => ErrorCode::Conflict,
            RequestError::BadRequest(_) => ErrorCode::BadRequest,
            RequestError::Stale { .. } => ErrorCode::ChallengeExpired,
            RequestError::Replay => ErrorCode::Replay,
            RequestError::Quota(_) => ErrorCode::RateLimited,
            RequestError::Authn(e) => e.code(),
            RequestError::Store(_) => ErrorCode::Internal,
        }
    }
}

pub(crate) fn forbidden(msg: impl Into<String>) -> RequestError {
    RequestError::Forbidden(msg.into())
}

pub(crate) fn not_found(msg: impl Into<String>) -> RequestError {
    RequestError::NotFound(msg.into())
}
