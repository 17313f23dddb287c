//! The web view's bodies: the one-time link (`POST /v1/web/link`) and the events it pushes
//! (`GET /web/events`, server-sent events).

use serde::{Deserialize, Serialize};

use crate::{CapabilitiesView, Notification, StatusView};

/// `POST /v1/web/link`: a one-time URL that opens the web view (`cpns web`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct WebLink {
    /// `http://127.0.0.1:PORT/web/login?token=…`; the token works once, within
    /// `expires_in_secs`, and becomes an HttpOnly session cookie.
    pub url: String,
    /// How long the link stays valid.
    pub expires_in_secs: u64,
}

/// One server-sent event of the web view (`event:` is the variant name in snake case,
/// `data:` this JSON).
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PnEvent {
    /// The node's status changed (PN, members, their status, gateway, epoch): the whole of
    /// `GET /v1/status`.
    Status(Box<StatusView>),
    /// This node's Device Capabilities (sent with every status).
    Capabilities(Box<CapabilitiesView>),
    /// A status notification arrived.
    Notification(Notification),
}

/// `GET /v1/content/progress/{id}`: how far a running fetch of a service's content got.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ContentProgress {
    /// The service.
    pub service_id: String,
    /// Whether a fetch of it runs now.
    pub active: bool,
    /// Bytes received so far by the running fetch (0 when none runs).
    pub bytes: u64,
}
