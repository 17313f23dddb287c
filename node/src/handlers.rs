//! Where overlay events go: inbound requests by functional module, connection events, and the
//! node's background tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use cpns_overlay::{ErrorCode, Event, GroupMessage, Message, PnMessage};
use libp2p::PeerId;
use tokio::task::JoinSet;
use tracing::{debug, trace};

use crate::pn::{gateway, member, pairing};
use crate::shared::Shared;
use crate::status;

/// Work to do after an answer has been sent (so that the peer sees steps in protocol order).
pub(crate) type Then = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Handles one overlay event.
pub(crate) async fn handle_event(shared: &Arc<Shared>, event: Event) {
    match event {
        Event::InboundRequest {
            peer,
            message,
            channel,
        } => {
            let is_auth = channel.protocol() == cpns_overlay::Protocol::Auth;
            let (answer, then) = if is_auth {
                match message {
                    Message::Auth(m) => (gateway::on_server_request(shared, peer, m).await, None),
                    other => (unsupported(&other), None),
                }
            } else {
                answer_request(shared, peer, message).await
            };
            if let Err(e) = shared.client.respond(channel, answer).await {
                debug!(%peer, "could not answer: {e}");
            }
            if let Some(then) = then {
                then.await;
            }
        }
        Event::ConnectionClosed { peer } => status::on_disconnected(shared, peer).await,
        Event::MdnsDiscovered { peer, addrs } => {
            crate::lan::on_discovered(shared, peer, addrs).await
        }
        Event::MdnsExpired { peer } => crate::lan::on_expired(shared, &peer),
        other => trace!(?other, "overlay event"),
    }
}

fn unsupported(m: &Message) -> Message {
    Message::error(
        ErrorCode::Unsupported,
        format!("{} is not handled here", m.name()),
    )
}

/// Computes the answer to an inbound request on `/cpns/1.0.0` (the overlay has already
/// checked that the sender registered, except for the registration itself).
async fn answer_request(
    shared: &Arc<Shared>,
    peer: PeerId,
    message: Message,
) -> (Message, Option<Then>) {
    let plain = |m: Message| (m, None);
    match message {
        Message::Pn(pn) => match pn {
            PnMessage::EntityRegistration(reg) => {
                plain(pairing::on_registration(shared, peer, reg).await)
            }
            PnMessage::CapabilitiesExchange(caps) => {
                pairing::on_capabilities_exchange(shared, peer, caps)
            }
            PnMessage::CapabilitiesUpdate(caps) => {
                let (answer, then) = pairing::on_capabilities_update(shared, peer, caps.clone());
                status::on_capabilities(shared, peer, caps).await;
                (answer, then)
            }
            PnMessage::ConnectionSetupRequest(setup) => {
                plain(gateway::on_connection_setup(shared, peer, setup).await)
            }
            PnMessage::MembershipWithGroupKey(grant) => {
                plain(member::on_membership_with_key(shared, peer, grant).await)
            }
            PnMessage::MembershipUpdate(grant) => {
                plain(member::on_membership_update(shared, peer, grant).await)
            }
            PnMessage::Leave { pn_id } => plain(gateway::on_leave(shared, peer, pn_id).await),
            PnMessage::InventoryRequest { pn_id } => {
                plain(gateway::on_inventory_request(shared, peer, pn_id))
            }
            PnMessage::Revocations(list) => {
                shared.take_revocations(list).await;
                plain(Message::Ack)
            }
            PnMessage::Ping { nonce } => plain(Message::Pn(PnMessage::Pong { nonce })),
            PnMessage::UsageReport(report) => {
                plain(crate::usage::on_member_report(shared, peer, report).await)
            }
            PnMessage::GatewayChanged { pn_id, addrs } => {
                plain(crate::pn::failover::on_gateway_changed(shared, peer, pn_id, addrs).await)
            }
            other @ (PnMessage::MembershipConfirmation { .. }
            | PnMessage::ConnectionSetupConfirmation(_)
            | PnMessage::InventoryResponse(_)
            | PnMessage::Pong { .. }) => plain(Message::error(
                ErrorCode::BadRequest,
                format!("{} is an answer, not a request", other.name()),
            )),
        },
        Message::Status(m) => plain(status::handle(shared, peer, m).await),
        Message::Directory(m) => plain(crate::services::handle(shared, peer, m).await),
        Message::Delivery(m) => plain(crate::delivery::handle(shared, peer, m).await),
        Message::Group(GroupMessage::KeyForward { grants }) => {
            plain(member::on_key_forward(shared, peer, grants).await)
        }
        other => plain(unsupported(&other)),
    }
}

/// Starts the node's periodic tasks.
pub(crate) fn spawn_background(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) {
    status::spawn(shared, tasks);
    crate::usage::spawn(shared, tasks);
    crate::delivery::spawn_acceptor(shared, tasks);
}

/// Called once before the node stops: tells the gateway this node goes Offline.
pub(crate) async fn on_shutdown(shared: &Arc<Shared>) {
    status::announce_offline(shared).await;
}
