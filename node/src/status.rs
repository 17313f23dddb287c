//! Status Management (spec 5.6.2): each node's Online/Offline/Busy status, status queries,
//! subscriptions with a policy, notifications, and event-triggered reports.
//!
//! A PNE reports to its gateway with a heartbeat every `status.heartbeat_secs` and at once when
//! its status changes or its battery crosses the threshold; the gateway tracks every member and
//! marks one Offline when it disconnects or stays silent for `status.offline_after_secs`.
//! Subscribers (any registered peer, for a member of the gateway's PN or for the node itself)
//! are notified on change under their policy.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cpns_overlay::{
    Capabilities, ErrorCode, Message, PowerSource, Protocol, Status, StatusMessage, StatusPolicy,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tracing::debug;

use crate::error::OpError;
use crate::pn::inventory;
use crate::shared::{Shared, now};

/// Most subscribers per target.
const MAX_SUBSCRIBERS_PER_TARGET: usize = 64;
/// Most targets with subscribers.
const MAX_TARGETS: usize = 1024;
/// Notifications kept for the local user.
const MAX_NOTIFICATIONS: usize = 256;

/// A notification this node received (shown by `cpns status notifications`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    /// Whose status.
    pub target: String,
    /// `online`, `offline` or `busy`.
    pub status: String,
    /// Why busy, if busy.
    pub reason: Option<String>,
    /// Battery, when known.
    pub battery_percent: Option<u8>,
    /// Why it was sent (`change`, `battery_below`, `silence`, `disconnected`, ...).
    pub trigger: String,
    /// Who sent it.
    pub from: String,
    /// When it arrived (Unix seconds).
    pub time: u64,
}

/// What the gateway knows of a member's liveness.
#[derive(Clone, Debug, Default)]
struct Liveness {
    last_seen: u64,
    battery: Option<u8>,
    free_memory: Option<u64>,
}

/// The status book of a node: subscriptions it serves, liveness of members (gateway), and
/// notifications it received.
#[derive(Default)]
pub(crate) struct Book {
    subscribers: Mutex<HashMap<PeerId, Vec<(PeerId, StatusPolicy)>>>,
    liveness: Mutex<HashMap<PeerId, Liveness>>,
    received: Mutex<VecDeque<Notification>>,
    events: Option<broadcast::Sender<Notification>>,
}

impl Book {
    pub(crate) fn new() -> Self {
        Self {
            events: Some(broadcast::channel(256).0),
            ..Default::default()
        }
    }

    /// Local listeners of notifications received.
    pub(crate) fn watch(&self) -> broadcast::Receiver<Notification> {
        match &self.events {
            Some(tx) => tx.subscribe(),
            None => broadcast::channel(1).1,
        }
    }

    /// Notifications received, oldest first.
    pub(crate) fn received(&self) -> Vec<Notification> {
        self.received
            .lock()
            .map(|r| r.iter().cloned().collect())
            .unwrap_or_default()
    }

    fn add_subscriber(
        &self,
        target: PeerId,
        subscriber: PeerId,
        policy: StatusPolicy,
    ) -> Result<(), String> {
        let mut subs = self
            .subscribers
            .lock()
            .map_err(|_| "status book poisoned".to_string())?;
        if !subs.contains_key(&target) && subs.len() >= MAX_TARGETS {
            return Err("too many subscriptions on this node".into());
        }
        let list = subs.entry(target).or_default();
        list.retain(|(s, _)| *s != subscriber);
        if list.len() >= MAX_SUBSCRIBERS_PER_TARGET {
            return Err("too many subscribers for this target".into());
        }
        list.push((subscriber, policy));
        Ok(())
    }

    fn remove_subscriber(&self, target: &PeerId, subscriber: &PeerId) {
        if let Ok(mut subs) = self.subscribers.lock()
            && let Some(list) = subs.get_mut(target)
        {
            list.retain(|(s, _)| s != subscriber);
            if list.is_empty() {
                subs.remove(target);
            }
        }
    }

    fn subscribers_of(&self, target: &PeerId) -> Vec<(PeerId, StatusPolicy)> {
        self.subscribers
            .lock()
            .ok()
            .and_then(|s| s.get(target).cloned())
            .unwrap_or_default()
    }

    fn record_received(&self, n: Notification) {
        if let Ok(mut r) = self.received.lock() {
            if r.len() >= MAX_NOTIFICATIONS {
                r.pop_front();
            }
            r.push_back(n.clone());
        }
        if let Some(tx) = &self.events {
            let _ = tx.send(n);
        }
    }
}

/// Answers a Status Management request.
pub(crate) async fn handle(shared: &Arc<Shared>, peer: PeerId, msg: StatusMessage) -> Message {
    let me = shared.peer_id;
    match msg {
        StatusMessage::Query { target } => match current(shared, &target) {
            Some((status, battery, free)) => Message::Status(StatusMessage::Report {
                target,
                status,
                battery_percent: battery,
                free_memory_bytes: free,
                trigger: "query".into(),
            }),
            None => Message::error(ErrorCode::NotFound, "no status known for that entity here"),
        },
        StatusMessage::Subscribe { target, policy } => {
            if target != me && !is_member(shared, &target) {
                return Message::error(
                    ErrorCode::NotFound,
                    "subscribe at the target or at its gateway",
                );
            }
            match shared.status.add_subscriber(target, peer, policy) {
                Ok(()) => Message::Ack,
                Err(e) => Message::error(ErrorCode::Busy, e),
            }
        }
        StatusMessage::Unsubscribe { target } => {
            shared.status.remove_subscriber(&target, &peer);
            Message::Ack
        }
        StatusMessage::Notify {
            target,
            status,
            battery_percent,
            trigger,
            ..
        } => {
            shared.metrics.status_notifications.inc();
            shared.status.record_received(Notification {
                target: target.to_string(),
                status: status.as_str().into(),
                reason: match &status {
                    Status::Busy { reason } => Some(reason.clone()),
                    _ => None,
                },
                battery_percent,
                trigger,
                from: peer.to_string(),
                time: now(),
            });
            Message::Ack
        }
        StatusMessage::Heartbeat {
            status,
            battery_percent,
            free_memory_bytes,
        } => {
            if !is_member(shared, &peer) || !shared.state().mode.is_gateway() {
                return Message::error(ErrorCode::Forbidden, "heartbeats go to the PN's gateway");
            }
            member_reported(
                shared,
                peer,
                status,
                battery_percent,
                free_memory_bytes,
                "change",
            )
            .await;
            Message::Ack
        }
        StatusMessage::Report { .. } => {
            Message::error(ErrorCode::BadRequest, "a report answers a query")
        }
    }
}

fn is_member(shared: &Shared, peer: &PeerId) -> bool {
    shared
        .state()
        .pn
        .as_ref()
        .is_some_and(|p| p.is_member(peer))
}

/// The status of `target` as this node knows it: itself, or a member it tracks as gateway.
fn current(shared: &Shared, target: &PeerId) -> Option<(Status, Option<u8>, Option<u64>)> {
    let s = shared.state();
    if *target == shared.peer_id {
        return Some((
            s.status.clone(),
            s.caps.dynamic.battery_percent,
            Some(s.caps.dynamic.free_memory_bytes),
        ));
    }
    let member = s.pn.as_ref()?.members.get(target)?;
    let live = shared
        .status
        .liveness
        .lock()
        .ok()
        .and_then(|l| l.get(target).cloned())
        .unwrap_or_default();
    Some((member.status.clone(), live.battery, live.free_memory))
}

/// A member's report reached the gateway: update its status, and notify subscribers under
/// their policy.
async fn member_reported(
    shared: &Arc<Shared>,
    peer: PeerId,
    status: Status,
    battery: Option<u8>,
    free_memory: Option<u64>,
    trigger: &str,
) {
    let previous_battery = {
        let mut l = shared
            .status
            .liveness
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let entry = l.entry(peer).or_default();
        let prev = entry.battery;
        entry.last_seen = now();
        entry.battery = battery;
        entry.free_memory = free_memory;
        prev
    };
    let changed = set_member_status(shared, &peer, status.clone()).await;
    notify(
        shared,
        peer,
        &status,
        battery,
        free_memory,
        previous_battery,
        changed,
        trigger,
    )
    .await;
}

/// Sets a member's status in the PN state and the inventory; returns whether it changed.
async fn set_member_status(shared: &Arc<Shared>, peer: &PeerId, status: Status) -> bool {
    let changed = {
        let mut s = shared.state();
        match s.pn.as_mut().and_then(|p| p.members.get_mut(peer)) {
            Some(m) if m.status != status => {
                m.status = status.clone();
                true
            }
            _ => false,
        }
    };
    if changed && shared.state().mode.is_gateway() {
        let entry = inventory::load(&shared.db)
            .into_iter()
            .find(|e| &e.info.peer_id == peer);
        if let Some(mut e) = entry {
            e.info.status = status;
            e.last_seen = now();
            if let Err(err) = inventory::put(&shared.db, &e).await {
                debug!("inventory status not saved: {err}");
            }
        }
        shared.after_pn_change();
    }
    changed
}

#[allow(clippy::too_many_arguments)]
async fn notify(
    shared: &Arc<Shared>,
    target: PeerId,
    status: &Status,
    battery: Option<u8>,
    free_memory: Option<u64>,
    previous_battery: Option<u8>,
    changed: bool,
    trigger: &str,
) {
    for (subscriber, policy) in shared.status.subscribers_of(&target) {
        let battery_hit = match (policy.battery_below, battery) {
            (Some(limit), Some(b)) => b < limit && previous_battery.is_none_or(|p| p >= limit),
            _ => false,
        };
        let memory_hit =
            matches!((policy.free_memory_below, free_memory), (Some(l), Some(f)) if f < l);
        let why = if changed && policy.on_change {
            trigger
        } else if battery_hit {
            "battery_below"
        } else if memory_hit {
            "free_memory_below"
        } else {
            continue;
        };
        let msg = Message::Status(StatusMessage::Notify {
            target,
            status: status.clone(),
            battery_percent: battery,
            free_memory_bytes: free_memory,
            trigger: why.into(),
        });
        let client = shared.client.clone();
        tokio::spawn(async move {
            if let Err(e) = client.request(subscriber, Protocol::Cpns, msg).await {
                debug!(%subscriber, "status notification not delivered: {e}");
            }
        });
    }
}

/// The last connection to a peer closed: a member tracked by this gateway goes Offline.
pub(crate) async fn on_disconnected(shared: &Arc<Shared>, peer: PeerId) {
    if peer == shared.peer_id || !shared.state().mode.is_gateway() || !is_member(shared, &peer) {
        return;
    }
    let changed = set_member_status(shared, &peer, Status::Offline).await;
    if changed {
        notify(
            shared,
            peer,
            &Status::Offline,
            None,
            None,
            None,
            true,
            "disconnected",
        )
        .await;
    }
}

/// A member's capabilities update (also a sign of life).
pub(crate) async fn on_capabilities(shared: &Arc<Shared>, peer: PeerId, caps: Capabilities) {
    if is_member(shared, &peer) && shared.state().mode.is_gateway() {
        let status = shared
            .state()
            .pn
            .as_ref()
            .and_then(|p| p.members.get(&peer).map(|m| m.status.clone()))
            .unwrap_or_default();
        let status = if status == Status::Offline {
            Status::Online
        } else {
            status
        };
        member_reported(
            shared,
            peer,
            status,
            caps.dynamic.battery_percent,
            Some(caps.dynamic.free_memory_bytes),
            "capabilities",
        )
        .await;
    }
}

/// Sets this node's own status and reports it at once (an event-triggered report).
pub(crate) async fn set_own(shared: &Arc<Shared>, status: Status) -> Result<(), OpError> {
    shared.state().status = status.clone();
    report_to_gateway(shared).await;
    let (battery, free) = {
        let s = shared.state();
        (
            s.caps.dynamic.battery_percent,
            Some(s.caps.dynamic.free_memory_bytes),
        )
    };
    notify(
        shared,
        shared.peer_id,
        &status,
        battery,
        free,
        battery,
        true,
        "change",
    )
    .await;
    // The gateway also tracks itself as a member.
    if shared.state().mode.is_gateway() {
        let me = shared.peer_id;
        set_member_status(shared, &me, status).await;
    }
    Ok(())
}

/// Sends this node's heartbeat to its gateway (a PNE only).
async fn report_to_gateway(shared: &Arc<Shared>) {
    let gateway = my_gateway(shared);
    if let Some(gateway) = gateway {
        let answered = heartbeat(shared, gateway, None).await;
        crate::pn::failover::watch(shared, answered);
    }
}

/// This PNE's gateway (none for a gateway or outside a PN).
fn my_gateway(shared: &Shared) -> Option<PeerId> {
    shared
        .state()
        .pn
        .as_ref()
        .map(|p| p.membership.gateway)
        .filter(|g| *g != shared.peer_id)
}

/// Sends one heartbeat (a status report, 5.6.2) to `gateway`: `status`, or this node's own,
/// with its battery and free memory. Whether the gateway is there: an error answer counts,
/// only silence does not (silence is what starts a gateway failover).
pub(crate) async fn heartbeat(
    shared: &Arc<Shared>,
    gateway: PeerId,
    status: Option<Status>,
) -> bool {
    let msg = {
        let s = shared.state();
        Message::Status(StatusMessage::Heartbeat {
            status: status.unwrap_or_else(|| s.status.clone()),
            battery_percent: s.caps.dynamic.battery_percent,
            free_memory_bytes: Some(s.caps.dynamic.free_memory_bytes),
        })
    };
    match shared.client.request(gateway, Protocol::Cpns, msg).await {
        Ok(_) => true,
        Err(e @ cpns_overlay::Error::Refused { .. }) => {
            debug!(%gateway, "heartbeat refused: {e}");
            true
        }
        Err(e) => {
            debug!(%gateway, "heartbeat not delivered: {e}");
            false
        }
    }
}

/// Before shutdown: tell the gateway this node goes Offline.
pub(crate) async fn announce_offline(shared: &Arc<Shared>) {
    if let Some(gateway) = my_gateway(shared) {
        let _ = tokio::time::timeout(
            Duration::from_secs(2),
            heartbeat(shared, gateway, Some(Status::Offline)),
        )
        .await;
    }
}

/// Subscribes this node to `target`'s status (at the target's gateway when the target is a
/// member of our PN and not us or the gateway, else at the target).
pub(crate) async fn subscribe(
    shared: &Arc<Shared>,
    target: PeerId,
    policy: StatusPolicy,
) -> Result<PeerId, OpError> {
    let mut last = None;
    for at in where_to_ask(shared, target) {
        if at == shared.peer_id {
            shared
                .status
                .add_subscriber(target, shared.peer_id, policy)
                .map_err(OpError::Conflict)?;
            return Ok(at);
        }
        let answer = shared
            .client
            .request(
                at,
                Protocol::Cpns,
                Message::Status(StatusMessage::Subscribe {
                    target,
                    policy: policy.clone(),
                }),
            )
            .await?;
        match answer {
            Message::Ack => return Ok(at),
            other => last = Some(other),
        }
    }
    Err(refused(last))
}

/// Where to ask about `target`'s status, in order. A PNE asks its gateway, which tracks its
/// members; when the target is not (yet) a member it knows of, the gateway may know more (a
/// member that joined a moment ago), and the target itself comes next. Anyone else asks the
/// target.
fn where_to_ask(shared: &Arc<Shared>, target: PeerId) -> Vec<PeerId> {
    let s = shared.state();
    match &s.pn {
        Some(pn) if target != shared.peer_id && pn.membership.gateway != shared.peer_id => {
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

/// Asks for `target`'s status (at the target, or at our gateway for a member).
pub(crate) async fn query(
    shared: &Arc<Shared>,
    target: PeerId,
) -> Result<(Status, Option<u8>, PeerId), OpError> {
    if let Some((status, battery, _)) = current(shared, &target)
        && (target == shared.peer_id || shared.state().mode.is_gateway())
    {
        return Ok((status, battery, shared.peer_id));
    }
    let mut last = None;
    for at in where_to_ask(shared, target) {
        let answer = shared
            .client
            .request(
                at,
                Protocol::Cpns,
                Message::Status(StatusMessage::Query { target }),
            )
            .await?;
        match answer {
            Message::Status(StatusMessage::Report {
                status,
                battery_percent,
                ..
            }) => return Ok((status, battery_percent, at)),
            other => last = Some(other),
        }
    }
    Err(refused(last))
}

/// Starts the heartbeat / capability refresh task and the gateway's silence check.
pub(crate) fn spawn(shared: &Arc<Shared>, tasks: &mut JoinSet<()>) {
    let s = shared.clone();
    tasks.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(s.config.status.heartbeat_secs));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = s.cancel.cancelled() => break,
                _ = tick.tick() => {}
            }
            periodic(&s).await;
        }
    });
}

async fn periodic(shared: &Arc<Shared>) {
    let (caps, changed) = shared.refresh_caps();
    report_capabilities(shared, &caps, changed).await;
    crate::renewal::check(shared).await;
}

/// After a capabilities refresh: a PNE re-sends a material change to its gateway and reports
/// its status (the heartbeat); a gateway checks its members' silence and updates `cpns-auth`;
/// a battery below the threshold is reported to this node's own subscribers (5.6.2
/// event-triggered report).
pub(crate) async fn report_capabilities(
    shared: &Arc<Shared>,
    caps: &cpns_overlay::Capabilities,
    changed: bool,
) {
    let (gateway, is_gateway) = {
        let s = shared.state();
        (
            s.pn.as_ref().map(|p| p.membership.gateway),
            s.mode.is_gateway(),
        )
    };
    match gateway {
        Some(gw) if gw != shared.peer_id => {
            if changed {
                // 5.6.1: a material change is re-sent to the gateway.
                let msg = Message::Pn(cpns_overlay::PnMessage::CapabilitiesUpdate(caps.clone()));
                if let Err(e) = shared.client.request(gw, Protocol::Cpns, msg).await {
                    debug!("capabilities update not delivered: {e}");
                }
            }
            report_to_gateway(shared).await;
        }
        _ => {}
    }
    if is_gateway {
        check_silence(shared).await;
        crate::pn::failover::check_still_gateway(shared).await;
        if changed && crate::auth_link::has_session(shared) {
            let _ = crate::auth_link::request(
                shared,
                cpns_overlay::AuthMessage::CapabilitiesUpdate(caps.clone()),
            )
            .await;
        }
    }
    let battery_low = caps.dynamic.power == PowerSource::Battery
        && caps
            .dynamic
            .battery_percent
            .is_some_and(|b| b < shared.config.status.battery_threshold);
    if changed && battery_low {
        // Event-triggered report to our own subscribers.
        let status = shared.state().status.clone();
        notify(
            shared,
            shared.peer_id,
            &status,
            caps.dynamic.battery_percent,
            Some(caps.dynamic.free_memory_bytes),
            None,
            false,
            "battery_below",
        )
        .await;
    }
}

/// The gateway marks members silent for too long Offline.
async fn check_silence(shared: &Arc<Shared>) {
    let limit = shared.config.status.offline_after_secs;
    let t = now();
    let members: Vec<PeerId> = {
        let s = shared.state();
        s.pn.as_ref()
            .map(|p| {
                p.members
                    .values()
                    .filter(|m| m.peer_id != shared.peer_id && m.status != Status::Offline)
                    .map(|m| m.peer_id)
                    .collect()
            })
            .unwrap_or_default()
    };
    for m in members {
        let last = {
            let mut l = shared
                .status
                .liveness
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            l.entry(m)
                .or_insert_with(|| Liveness {
                    last_seen: t,
                    ..Default::default()
                })
                .last_seen
        };
        if t.saturating_sub(last) > limit && set_member_status(shared, &m, Status::Offline).await {
            notify(
                shared,
                m,
                &Status::Offline,
                None,
                None,
                None,
                true,
                "silence",
            )
            .await;
        }
    }
}
