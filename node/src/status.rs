//! Status Management (spec 5.6.2) as the owner uses it: asking for a peer's status and
//! subscribing to it, at the right place — a PNE asks its gateway, which tracks its members; a
//! member the gateway does not know yet is asked directly. The status itself (this node's,
//! its members' at a gateway, heartbeats, notifications) is the PN actor's.

use cpns_overlay::{ErrorCode, Message, Protocol, Status, StatusMessage, StatusPolicy};
use libp2p::PeerId;

pub use crate::pn::Notification;

use crate::context::Context;
use crate::error::OpError;
use crate::pn;

/// Where to ask about `target`'s status, in order.
fn where_to_ask(view: &pn::View, target: PeerId) -> Vec<PeerId> {
    match &view.pn {
        Some(pn) if target != view.me && pn.membership.gateway != view.me => {
            if pn.is_member(&target) || target == pn.membership.gateway {
                vec![pn.membership.gateway]
            } else {
                vec![pn.membership.gateway, target]
            }
        }
        _ => vec![target],
    }
}

/// The error for a status request nobody accepted, from the last answer.
fn refused(last: Option<Message>) -> OpError {
    match last {
        Some(Message::Error(e)) if e.code == ErrorCode::NotFound => OpError::NotFound(e.message),
        Some(Message::Error(e)) => OpError::Refused(e.message),
        Some(other) => OpError::Refused(format!("unexpected answer {}", other.name())),
        None => OpError::NotFound("no one to ask".into()),
    }
}

/// Subscribes this node to `target`'s status; returns where the subscription was made.
pub(crate) async fn subscribe(
    ctx: &Context,
    pn: &pn::Handle,
    target: PeerId,
    policy: StatusPolicy,
) -> Result<PeerId, OpError> {
    let view = pn.view();
    let mut last = None;
    for at in where_to_ask(&view, target) {
        if at == view.me {
            pn.subscribe_local(target, policy).await?;
            return Ok(at);
        }
        let answer = ctx
            .client
            .request(
                at,
                Protocol::Cpns,
                Message::Status(StatusMessage::Subscribe {
                    target,
                    policy: policy.clone(),
                }),
            )
            .await;
        match answer {
            Ok(Message::Ack) => return Ok(at),
            Ok(other) => last = Some(other),
            Err(cpns_overlay::Error::Refused { reply, .. }) => last = Some(Message::Error(reply)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(refused(last))
}

/// Asks for `target`'s status (this node's own, a member's at a gateway, else remotely).
pub(crate) async fn query(
    ctx: &Context,
    pn: &pn::Handle,
    target: PeerId,
) -> Result<(Status, Option<u8>, PeerId), OpError> {
    let view = pn.view();
    if target == view.me {
        return Ok((
            view.status.clone(),
            view.caps.dynamic.battery_percent,
            view.me,
        ));
    }
    if view.is_pn_gateway()
        && let Some(m) = view.pn.as_ref().and_then(|p| p.members.get(&target))
    {
        return Ok((m.info.status.clone(), m.live.battery, view.me));
    }
    let mut last = None;
    for at in where_to_ask(&view, target) {
        let answer = ctx
            .client
            .request(
                at,
                Protocol::Cpns,
                Message::Status(StatusMessage::Query { target }),
            )
            .await;
        match answer {
            Ok(Message::Status(StatusMessage::Report {
                status,
                battery_percent,
                ..
            })) => return Ok((status, battery_percent, at)),
            Ok(other) => last = Some(other),
            Err(cpns_overlay::Error::Refused { reply, .. }) => last = Some(Message::Error(reply)),
            Err(e) => return Err(e.into()),
        }
    }
    Err(refused(last))
}

/// Before shutdown: tell the gateway this node goes Offline (a PNE only; bounded).
pub(crate) async fn announce_offline(ctx: &Context, pn: &pn::Handle) {
    let view = pn.view();
    let Some(gateway) = view.my_gateway() else {
        return;
    };
    let msg = Message::Status(StatusMessage::Heartbeat {
        status: Status::Offline,
        battery_percent: view.caps.dynamic.battery_percent,
        free_memory_bytes: Some(view.caps.dynamic.free_memory_bytes),
    });
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(2),
        ctx.client.request(gateway, Protocol::Cpns, msg),
    )
    .await;
}
