//! What every part of the node reads and nobody changes: the configuration, the identity, the
//! overlay client, the trace, the metrics, the database handle and the cancellation token, and
//! a read-only view of the node's credentials (their one writer is the PN actor).
//!
//! A module depends on the context and on the handles of the owners it talks to (the PN
//! actor's [`crate::pn::Handle`], the [`crate::auth_link::AuthLink`]), never on another
//! module's state.

use std::ops::Deref;
use std::sync::Arc;
use std::time::Instant;

use cpns_directory::Trust;
use cpns_keys::Identity;
use cpns_overlay::{Client, NodeMode};
use libp2p::PeerId;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::enrolment::Enrolment;
use crate::error::OpError;
use crate::keyring::KeyRing;
use crate::metrics::Metrics;
use crate::store::Store;
use crate::trace::Trace;

/// The node's credentials as the PN actor last published them.
#[derive(Clone, Debug)]
pub(crate) struct Credentials {
    /// The enrolment: credential, EUKey, pinned CA, server.
    pub(crate) enrolment: Arc<Enrolment>,
    /// The pinned CA and the newest revocation list.
    pub(crate) trust: Arc<Trust>,
    /// The mode the node authenticates with.
    pub(crate) mode: NodeMode,
}

/// The read-only context (cheap to clone).
#[derive(Clone)]
pub(crate) struct Context(Arc<Inner>);

/// What the context holds.
pub(crate) struct Inner {
    /// The configuration the node started with.
    pub(crate) config: Arc<Config>,
    /// The node's identity key.
    pub(crate) identity: Identity,
    /// Its PeerId.
    pub(crate) peer_id: PeerId,
    /// The overlay.
    pub(crate) client: Client,
    /// The protocol trace.
    pub(crate) trace: Arc<Trace>,
    /// The node's counters.
    pub(crate) metrics: Arc<Metrics>,
    /// Cancelled when the node stops.
    pub(crate) cancel: CancellationToken,
    /// When the node started.
    pub(crate) started: Instant,
    /// The database.
    pub(crate) store: Store,
    /// The group keys held.
    pub(crate) keyring: Arc<KeyRing>,
    /// The credentials, as the PN actor publishes them.
    pub(crate) credentials: watch::Receiver<Option<Credentials>>,
}

impl Deref for Context {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl Context {
    /// A context around its parts.
    pub(crate) fn new(inner: Inner) -> Context {
        Context(Arc::new(inner))
    }

    /// The credentials, or a clear error if the node has none yet.
    pub(crate) fn credentials(&self) -> Result<Credentials, OpError> {
        self.credentials.borrow().clone().ok_or_else(|| {
            OpError::Conflict("this node is not enrolled: run `cpns up --code CODE` (codes come from `cpns-auth enrol create`)".into())
        })
    }

    /// The enrolment, or a clear error.
    pub(crate) fn enrolment(&self) -> Result<Arc<Enrolment>, OpError> {
        self.credentials().map(|c| c.enrolment)
    }

    /// The trust anchor, or a clear error.
    pub(crate) fn trust(&self) -> Result<Arc<Trust>, OpError> {
        self.credentials().map(|c| c.trust)
    }

    /// Whether the node is enrolled.
    pub(crate) fn is_enrolled(&self) -> bool {
        self.credentials.borrow().is_some()
    }

    /// Records a protocol step in the trace (and counts it).
    pub(crate) fn trace(
        &self,
        flow: &str,
        step: u32,
        from: &PeerId,
        to: &PeerId,
        message: &str,
        detail: impl Into<String>,
    ) {
        self.trace.record(flow, step, from, to, message, detail);
        self.metrics.traced(flow);
    }
}
