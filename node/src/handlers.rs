//! Where overlay events go: inbound requests by functional module, connection events, and the
//! node's background tasks.

use std::sync::Arc;

use cpns_overlay::{ErrorCode, Event, Message, PnMessage};
use tokio::task::JoinSet;
use tracing::{debug, trace};

use crate::shared::Shared;

/// Handles one overlay event.
pub(crate) async fn handle_event(shared: &Arc<Shared>, event: Event) {
    match event {
        Event::InboundRequest {
            peer,
            message,
            channel,
        } => {
            let answer = answer_request(shared, peer, message).await;
            if let Err(e) = shared.client.respond(channel, answer).await {
                debug!(%peer, "could not answer: {e}");
            }
        }
        other => trace!(?other, "overlay event"),
    }
}

/// Computes the answer to an inbound request.
async fn answer_request(_shared: &Arc<Shared>, _peer: libp2p::PeerId, message: Message) -> Message {
    match message {
        Message::Pn(PnMessage::Ping { nonce }) => Message::Pn(PnMessage::Pong { nonce }),
        other => Message::error(
            ErrorCode::Unsupported,
            format!("{} is not handled by this node", other.name()),
        ),
    }
}

/// Starts the node's periodic tasks.
pub(crate) fn spawn_background(_shared: &Arc<Shared>, _tasks: &mut JoinSet<()>) {}

/// Called once before the node stops.
pub(crate) async fn on_shutdown(_shared: &Arc<Shared>) {}
