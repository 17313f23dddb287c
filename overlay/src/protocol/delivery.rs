//! Service/Content Delivery control (spec 5.6.7, G.1 steps 5-7). The content itself flows on
//! `/cpns/delivery/1.0.0` streams; these messages invoke it (one or several services at
//! once), control it (start, pause, resume, stop), and carry the small feeds a gateway
//! aggregates from its PNEs and distributes to them.

use cpns_keys::{GroupSealed, PeerId, SealedBox, UnixTime};
use serde::{Deserialize, Serialize};

use super::Capabilities;

/// Most services one [`DeliveryMessage::InvokeMany`] may name.
pub const MAX_INVOKE_SERVICES: usize = 16;
/// Longest feed name, in bytes.
pub const MAX_FEED_NAME: usize = 64;
/// Largest common part of a feed (from one contributor, or distributed), in bytes.
pub const MAX_FEED_COMMON: usize = 16 * 1024;
/// Largest specific part of a feed (one PNE's), in bytes.
pub const MAX_FEED_PART: usize = 16 * 1024;
/// Most contributors (and so specific parts) of one aggregated feed: with the limits above an
/// aggregate stays well within one frame of the codec.
pub const MAX_FEED_PARTS: usize = 24;

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
    /// Control of service: stop a session. Sent by either party; the content stream then
    /// ends on both sides.
    Stop {
        /// The session.
        session: u64,
    },
    /// Control of service: pause a running session (either party).
    Pause {
        /// The session.
        session: u64,
    },
    /// Control of service: resume a paused session (either party).
    Resume {
        /// The session.
        session: u64,
    },
    /// Invoke one or several services of one offerer at once (5.6.7 "single/multiple
    /// services"), sharing the consumer's capabilities; at most [`MAX_INVOKE_SERVICES`].
    InvokeMany {
        /// The service ids.
        service_ids: Vec<String>,
        /// Push or pull, for all of them.
        mode: DeliveryMode,
        /// The consumer's capabilities now.
        capabilities: Capabilities,
    },
    /// The answer to [`DeliveryMessage::InvokeMany`]: one per service, in order.
    InvokedMany {
        /// The answers.
        answers: Vec<InvokeAnswer>,
    },
    /// A PNE's data for one of its gateway's aggregated feeds (5.6.7 "aggregation of common
    /// and specific data for multiple PNEs"): replaces the PNE's previous contribution.
    Contribute {
        /// The feed's name (at most [`MAX_FEED_NAME`] bytes).
        feed: String,
        /// What the PNE shares with the others (a schema, units, a header), at most
        /// [`MAX_FEED_COMMON`] bytes; identical common parts are kept once.
        common: Vec<u8>,
        /// The PNE's own data (a reading), at most [`MAX_FEED_PART`] bytes.
        part: Vec<u8>,
    },
    /// Ask the gateway for an aggregated feed.
    FeedRequest {
        /// The feed's name.
        feed: String,
    },
    /// The gateway's aggregated feed: common parts once, then one part per PNE.
    Feed(AggregatedFeed),
    /// The gateway distributes a feed to one PNE (5.6.7 "distribution of common and specific
    /// data to the respective PNE(s)"): the common part sealed under the PN key, and this
    /// PNE's own part sealed to its identity key, so that no other PNE can open it.
    Distribute(Distribution),
    /// 5.6.9 "switch current PNE to other PNE": the consumer of a running session asks its
    /// offerer to move it to `to`, another PNE of the consumer's user. The offerer stops the
    /// stream to the consumer (as a stop by the consumer) and keeps the session for `to`,
    /// which continues it from an offset ([`DeliveryMessage::Continue`]).
    Switch {
        /// The session.
        session: u64,
        /// The PNE the session moves to.
        to: PeerId,
    },
    /// 5.6.9: the old PNE hands a switched session to the new PNE, which then fetches the
    /// first `offset` bytes from the old PNE and the rest from the offerer.
    HandOver(SessionHandOver),
    /// Resume by offset: the session's (new) consumer asks its offerer to send the content
    /// from byte `offset` on (at most the content's length), before the content starts.
    Continue {
        /// The session.
        session: u64,
        /// The first byte to send.
        offset: u64,
    },
}

/// What the old PNE tells the new one of a session it hands over (5.6.9 switching PNE).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionHandOver {
    /// The session (the offerer's id).
    pub session: u64,
    /// Who offers the content.
    pub offerer: PeerId,
    /// The service.
    pub service_id: String,
    /// The bytes the old PNE received: the new PNE fetches them from it.
    pub offset: u64,
    /// The content's length.
    pub total: u64,
    /// When the old PNE invoked the service (Unix seconds): the use started then.
    pub started: UnixTime,
    /// The variant the offerer chose, if any.
    pub variant: Option<String>,
}

/// The offerer's answer for one service of an [`DeliveryMessage::InvokeMany`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InvokeAnswer {
    /// The service.
    pub service_id: String,
    /// Accepted, adapted or refused.
    pub decision: InvokeDecision,
    /// The delivery session (0 when refused).
    pub session: u64,
    /// The content length in bytes, when known.
    pub length: Option<u64>,
    /// The variant the offerer chose for the consumer's capabilities, if the service has
    /// variants (capability-based invocation).
    pub variant: Option<String>,
}

/// One PNE's part of an aggregated feed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedPart {
    /// The contributing PNE.
    pub from: PeerId,
    /// Index of its common part in [`AggregatedFeed::common`].
    pub common: u32,
    /// Its specific data.
    pub data: Vec<u8>,
    /// When the gateway received it.
    pub at: UnixTime,
}

/// An aggregated feed: the common data once, plus one part per contributing PNE.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AggregatedFeed {
    /// Its name.
    pub feed: String,
    /// The distinct common parts, in order of first contribution.
    pub common: Vec<Vec<u8>>,
    /// One part per PNE, ordered by PeerId.
    pub parts: Vec<FeedPart>,
}

/// A feed distributed to one PNE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Distribution {
    /// The feed's name.
    pub feed: String,
    /// Increases with every distribution of this feed by the gateway.
    pub seq: u64,
    /// The common part, for every PNE, sealed under the PN key.
    pub common: GroupSealed,
    /// This PNE's own part, sealed to its identity key (none if the feed has none for it).
    pub part: Option<SealedBox>,
}

impl DeliveryMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            DeliveryMessage::Invoke { .. } => "InvokeService",
            DeliveryMessage::Invoked { .. } => "InvokeServiceResponse",
            DeliveryMessage::Start { .. } => "StartService",
            DeliveryMessage::Stop { .. } => "StopService",
            DeliveryMessage::Pause { .. } => "PauseService",
            DeliveryMessage::Resume { .. } => "ResumeService",
            DeliveryMessage::InvokeMany { .. } => "InvokeServices",
            DeliveryMessage::InvokedMany { .. } => "InvokeServicesResponse",
            DeliveryMessage::Contribute { .. } => "ContributeFeed",
            DeliveryMessage::FeedRequest { .. } => "FeedRequest",
            DeliveryMessage::Feed(_) => "Feed",
            DeliveryMessage::Distribute(_) => "DistributeFeed",
            DeliveryMessage::Switch { .. } => "SwitchSession",
            DeliveryMessage::HandOver(_) => "HandOverSession",
            DeliveryMessage::Continue { .. } => "ContinueFromOffset",
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::codec;

    /// The switch's messages came last: a message of before keeps its encoding (bincode's
    /// variant index leads), and the new ones round trip.
    #[test]
    fn the_switch_messages_are_appended_and_round_trip() {
        let index = |m: &DeliveryMessage| codec::encode(m).unwrap()[0];
        assert_eq!(index(&DeliveryMessage::Stop { session: 7 }), 3);
        assert_eq!(index(&DeliveryMessage::Resume { session: 7 }), 5);
        let peer = PeerId::random();
        let new = [
            DeliveryMessage::Switch {
                session: 7,
                to: peer,
            },
            DeliveryMessage::HandOver(SessionHandOver {
                session: 7,
                offerer: peer,
                service_id: "svc-1".into(),
                offset: 1 << 20,
                total: 24 << 20,
                started: 1_700_000_000,
                variant: Some("hd".into()),
            }),
            DeliveryMessage::Continue {
                session: 7,
                offset: 1 << 20,
            },
        ];
        for (i, m) in new.into_iter().enumerate() {
            let bytes = codec::encode(&m).unwrap();
            assert_eq!(bytes[0] as usize, 12 + i, "{}", m.name());
            let back: DeliveryMessage = codec::decode(&bytes, 1 << 16).unwrap();
            assert_eq!(back, m);
        }
    }
}
