//! Service/Content Delivery control (spec 5.6.7, G.1 steps 5-7). The content itself flows on
//! `/cpns/delivery/1.0.0` streams; these messages invoke, start and stop it.

use serde::{Deserialize, Serialize};

use super::Capabilities;

/// How content is delivered (5.6.7: "Two Service/Content delivery modes: Push/Pull").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryMode {
    /// The consumer opens a delivery stream and pulls the content.
    #[default]
    Pull,
    /// The offerer opens a delivery stream to the consumer and pushes the content.
    Push,
}

/// The offerer's answer to an invocation (G.1 step 6: it "can refuse or adapt").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InvokeDecision {
    /// Accepted as asked.
    Accepted,
    /// Accepted with an adaptation (for example a lower bit rate), described for people.
    Adapted(String),
    /// Refused, with the reason.
    Refused(String),
}

/// Delivery control messages.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[allow(clippy::large_enum_variant)] // a message is encoded or decoded once
pub enum DeliveryMessage {
    /// G.1 step 5 and 6: invoke a service, sharing the consumer's capabilities.
    Invoke {
        /// The service id.
        service_id: String,
        /// Push or pull.
        mode: DeliveryMode,
        /// The consumer's capabilities (G.1 step 6).
        capabilities: Capabilities,
    },
    /// The offerer's answer to [`DeliveryMessage::Invoke`]: a session to start.
    Invoked {
        /// Accepted, adapted or refused.
        decision: InvokeDecision,
        /// The delivery session id (0 when refused).
        session: u64,
        /// The content length in bytes, when known.
        length: Option<u64>,
    },
    /// Control of service: start (or resume) a session.
    Start {
        /// The session.
        session: u64,
    },
    /// Control of service: stop a session.
    Stop {
        /// The session.
        session: u64,
    },
}

impl DeliveryMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            DeliveryMessage::Invoke { .. } => "InvokeService",
            DeliveryMessage::Invoked { .. } => "InvokeServiceResponse",
            DeliveryMessage::Start { .. } => "StartService",
            DeliveryMessage::Stop { .. } => "StopService",
        }
    }
}
