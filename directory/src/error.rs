//! One error enum per kind of operation.

use cpns_keys::GroupId;

use crate::keyword::KeywordError;
use crate::record::RecordError;

/// Failures opening the directory.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    /// The sled database failed.
    #[error("storage: {0}")]
    Storage(#[from] sled::Error),
    /// A value could not be encoded.
    #[error("encoding: {0}")]
    Codec(String),
}

/// Failures of publish, unpublish and republish.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The draft breaks a rule (empty name, too long a field, too many entries...).
    #[error("invalid service: {0}")]
    Invalid(String),
    /// A keyword is empty, too long or has control characters.
    #[error("bad keyword: {0}")]
    Keyword(#[from] KeywordError),
    /// This node holds no key of the group the service is for.
    #[error("no key held for group {0}")]
    NoGroupKey(GroupId),
    /// This node already publishes as many services as allowed.
    #[error("too many local services (limit {0})")]
    TooManyServices(usize),
    /// No local service has this id.
    #[error("no local service {0:?}")]
    NotFound(String),
    /// The credential does not allow what is asked (a PN summary needs gateway mode).
    #[error("credential does not allow this: {0}")]
    Forbidden(String),
    /// The local store failed; nothing was published.
    #[error(transparent)]
    Storage(#[from] DirectoryError),
    /// The record could not be encoded (a field too large for the codec).
    #[error("encoding: {0}")]
    Codec(String),
    /// Saved locally but not (fully) stored in the DHT, e.g. no peers yet. The service is kept
    /// and put again by the next republish.
    #[error("saved locally but not replicated: {0}")]
    NotReplicated(cpns_overlay::Error),
}

/// Failures of discovery and record fetches.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum FindError {
    /// No keyword given.
    #[error("no keyword given")]
    NoKeywords,
    /// More keywords than a service can have.
    #[error("too many keywords ({0})")]
    TooManyKeywords(usize),
    /// A keyword is empty, too long or has control characters.
    #[error("bad keyword: {0}")]
    Keyword(#[from] KeywordError),
    /// The scope names a group whose key this node does not hold.
    #[error("no key held for group {0}")]
    NoGroupKey(GroupId),
    /// The record (an advertisement, a fetched record) is not valid.
    #[error("invalid record: {0}")]
    Record(#[from] RecordError),
    /// A sealed record could not be opened with the keys held.
    #[error("cannot open sealed record: {0}")]
    Sealed(String),
    /// The record is of another kind than expected.
    #[error("unexpected record kind")]
    WrongKind,
    /// The overlay failed (shut down, overloaded).
    #[error("overlay: {0}")]
    Overlay(#[from] cpns_overlay::Error),
}
