//! Status Management (spec 5.6.2) and the periodic tick: each node's Online/Offline/Busy
//! status, status queries and subscriptions (within the PN), notifications, heartbeats, and
//! the capabilities re-read (5.6.1) at every tick.
//!
//! A PNE reports to its gateway with a heartbeat every `status.heartbeat_secs` and at once when
//! its status changes or its battery crosses the threshold; the gateway tracks every member in
//! the PN Inventory and marks one Offline when it disconnects or stays silent for
//! `status.offline_after_secs`. Liveness (last heard, battery, free memory) stays in memory;
//! a status change is written to the inventory.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use cpns_overlay::{
    AuthMessage, Capabilities, ErrorCode, Message, PnMessage, PowerSource, Status, StatusMessage,
    StatusPolicy,
};
use libp2p::PeerId;

use super::super::effect::{Done, Effect, Fx, Job, WaiterId};
use super::super::{Reply, SenderClass};
use super::{
    CapsThen, MAX_NOTIFICATIONS, MAX_SUBSCRIBED_TARGETS, MAX_SUBSCRIBERS_PER_TARGET, Purpose, State,
};
use crate::caps;
use crate::config::CapabilitiesConfig;
use crate::error::OpError;
use crate::pn::Notification;

impl State {
    /// A member's heartbeat (at the gateway).
    pub(super) fn on_heartbeat(
        &mut self,
        peer: PeerId,
        status: Status,
        battery: Option<u8>,
        free_memory: Option<u64>,
        fx: &mut Fx,
    ) -> Message {
        if !self.is_pn_gateway() || !self.is_member(&peer) {
            return Message::error(ErrorCode::Forbidden, "heartbeats go to the PN's gateway");
        }
        self.member_reported(peer, status, battery, free_memory, "change", fx);
        self.relist_at_heartbeat(peer, fx);
        Message::Ack
    }

    /// A member's report reached the gateway: liveness, status, subscribers.
    pub(super) fn member_reported(
        &mut self,
        peer: PeerId,
        status: Status,
        battery: Option<u8>,
        free_memory: Option<u64>,
        trigger: &str,
        fx: &mut Fx,
    ) {
        let now = fx.now;
        let previous_battery = match self.pn_mut().and_then(|p| p.members.get_mut(&peer)) {
            Some(m) => {
                let prev = m.live.battery;
                m.live.last_seen = now;
                m.live.battery = battery;
                m.live.free_memory = free_memory;
                prev
            }
            None => return,
        };
        let changed = self.set_member_status(&peer, status.clone(), fx);
        self.notify(
            peer,
            &status,
            battery,
            free_memory,
            previous_battery,
            changed,
            trigger,
            fx,
        );
    }

    /// Sets a member's status in the inventory; returns whether it changed.
    pub(super) fn set_member_status(&mut self, peer: &PeerId, status: Status, fx: &mut Fx) -> bool {
        let changed = match self.pn_mut().and_then(|p| p.members.get_mut(peer)) {
            Some(m) if m.info.status != status => {
                m.info.status = status;
                true
            }
            _ => false,
        };
        if changed {
            self.persist_member(peer, fx);
            fx.changed();
        }
        changed
    }

    /// Notifies `target`'s subscribers under their policies.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn notify(
        &mut self,
        target: PeerId,
        status: &Status,
        battery: Option<u8>,
        free_memory: Option<u64>,
        previous_battery: Option<u8>,
        changed: bool,
        trigger: &str,
        fx: &mut Fx,
    ) {
        let Some(subs) = self.subscriptions.get(&target).cloned() else {
            return;
        };
        for (subscriber, policy) in &subs {
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
            let message = Message::Status(StatusMessage::Notify {
                target,
                status: status.clone(),
                battery_percent: battery,
                free_memory_bytes: free_memory,
                trigger: why.into(),
            });
            if *subscriber == self.env.me {
                let me = self.env.me;
                self.record_notification(target, status, battery, why, me, fx);
            } else {
                fx.send(*subscriber, message);
            }
        }
    }

    /// Keeps a notification for the local user (bounded) and tells local listeners.
    fn record_notification(
        &mut self,
        target: PeerId,
        status: &Status,
        battery: Option<u8>,
        trigger: &str,
        from: PeerId,
        fx: &mut Fx,
    ) {
        self.env.metrics.status_notifications.inc();
        let n = Notification {
            target: target.to_string(),
            status: status.as_str().into(),
            reason: match status {
                Status::Busy { reason } => Some(clip(reason)),
                _ => None,
            },
            battery_percent: battery,
            trigger: clip(trigger),
            from: from.to_string(),
            time: fx.now,
        };
        let list: &mut VecDeque<Notification> = Arc::make_mut(&mut self.notifications);
        if list.len() >= MAX_NOTIFICATIONS {
            list.pop_front();
        }
        list.push_back(n.clone());
        fx.push(Effect::Notify(n));
        fx.changed();
    }

    /// A status query: this node's own, or a member's that this gateway tracks.
    pub(super) fn on_query(&self, target: PeerId) -> Message {
        match self.current_status(&target) {
            Some((status, battery, free)) => Message::Status(StatusMessage::Report {
                target,
                status,
                battery_percent: battery,
                free_memory_bytes: free,
                trigger: "query".into(),
            }),
            None => Message::error(ErrorCode::NotFound, "no status known for that entity here"),
        }
    }

    /// The status of `target` as this node knows it.
    pub(crate) fn current_status(
        &self,
        target: &PeerId,
    ) -> Option<(Status, Option<u8>, Option<u64>)> {
        if *target == self.env.me {
            return Some((
                self.status.clone(),
                self.caps.dynamic.battery_percent,
                Some(self.caps.dynamic.free_memory_bytes),
            ));
        }
        let m = self.pn.as_ref()?.members.get(target)?;
        Some((m.info.status.clone(), m.live.battery, m.live.free_memory))
    }

    /// Adds a subscriber (bounded per target and in targets).
    pub(super) fn add_subscriber(
        &mut self,
        target: PeerId,
        subscriber: PeerId,
        policy: StatusPolicy,
    ) -> Result<(), OpError> {
        if !self.subscriptions.contains_key(&target)
            && self.subscriptions.len() >= MAX_SUBSCRIBED_TARGETS
        {
            return Err(OpError::Conflict(
                "too many subscriptions on this node".into(),
            ));
        }
        let list = self.subscriptions.entry(target).or_default();
        list.retain(|(s, _)| *s != subscriber);
        if list.len() >= MAX_SUBSCRIBERS_PER_TARGET {
            return Err(OpError::Conflict(
                "too many subscribers for this target".into(),
            ));
        }
        list.push((subscriber, policy));
        Ok(())
    }

    pub(super) fn remove_subscriber(&mut self, target: &PeerId, subscriber: &PeerId) {
        if let Some(list) = self.subscriptions.get_mut(target) {
            list.retain(|(s, _)| s != subscriber);
            if list.is_empty() {
                self.subscriptions.remove(target);
            }
        }
    }

    /// Forgets every subscription of a peer that left the PN.
    pub(super) fn forget_subscriber(&mut self, subscriber: &PeerId) {
        self.subscriptions.retain(|_, list| {
            list.retain(|(s, _)| s != subscriber);
            !list.is_empty()
        });
    }

    /// A notification arrived: from the PN's gateway, or from the member it is about.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn on_notify(
        &mut self,
        peer: PeerId,
        class: SenderClass,
        target: PeerId,
        status: Status,
        battery: Option<u8>,
        trigger: String,
        fx: &mut Fx,
    ) -> Message {
        if class != SenderClass::Gateway && target != peer {
            return Message::error(
                ErrorCode::Forbidden,
                "a member notifies its own status only; others' come from the gateway",
            );
        }
        self.record_notification(target, &status, battery, &trigger, peer, fx);
        Message::Ack
    }

    /// The last connection to a peer closed: a member tracked by this gateway goes Offline.
    pub(super) fn on_disconnected(&mut self, peer: PeerId, fx: &mut Fx) {
        if peer == self.env.me || !self.is_pn_gateway() || !self.is_member(&peer) {
            return;
        }
        if self.set_member_status(&peer, Status::Offline, fx) {
            self.notify(
                peer,
                &Status::Offline,
                None,
                None,
                None,
                true,
                "disconnected",
                fx,
            );
        }
    }

    /// The owner sets this node's status: reported at once (an event-triggered report).
    pub(super) fn set_status_op(&mut self, status: Status, waiter: WaiterId, fx: &mut Fx) {
        self.status = status.clone();
        fx.changed();
        self.heartbeat(fx);
        let battery = self.caps.dynamic.battery_percent;
        let free = Some(self.caps.dynamic.free_memory_bytes);
        let me = self.env.me;
        self.notify(me, &status, battery, free, battery, true, "change", fx);
        if self.is_pn_gateway() {
            self.set_member_status(&me, status, fx);
        }
        fx.resolve(waiter, Reply::Done(Ok(())));
    }

    /// Sends this PNE's heartbeat to its gateway (nothing on a gateway).
    pub(super) fn heartbeat(&mut self, fx: &mut Fx) {
        let Some(gateway) = self.pn.as_ref().map(|p| p.membership.gateway) else {
            return;
        };
        if gateway == self.env.me {
            return;
        }
        let message = self.heartbeat_message(None);
        let within = Duration::from_secs(self.env.config.status.heartbeat_secs.max(1) * 2);
        self.spawn(
            Purpose::Heartbeat,
            Job::Heartbeat {
                gateway,
                message,
                within,
            },
            fx,
        );
    }

    /// A heartbeat: `status`, or this node's own, with its battery and free memory.
    pub(super) fn heartbeat_message(&self, status: Option<Status>) -> Message {
        Message::Status(StatusMessage::Heartbeat {
            status: status.unwrap_or_else(|| self.status.clone()),
            battery_percent: self.caps.dynamic.battery_percent,
            free_memory_bytes: Some(self.caps.dynamic.free_memory_bytes),
        })
    }

    /// The heartbeat timer: re-read the capabilities, then report and check.
    pub(crate) fn on_tick(&mut self, fx: &mut Fx) {
        self.read_caps(CapsThen::Tick, fx);
        self.poll_invitations(fx);
        self.retry_move(fx);
    }

    /// Starts a capabilities read (or queues it while the reader is out).
    pub(super) fn read_caps(&mut self, then: CapsThen, fx: &mut Fx) {
        let Some(reader) = self.reader.take() else {
            if self.caps_waiting.len() < 16 {
                self.caps_waiting.push(then);
            }
            return;
        };
        let job = Job::ReadCaps {
            reader,
            overrides: self.overrides.clone(),
            mode: self.mode,
            preference: self.preference(),
            revision: self.caps.revision,
        };
        self.spawn(Purpose::ReadCaps(then), job, fx);
    }

    /// A capabilities read came back.
    pub(super) fn caps_read(&mut self, then: CapsThen, done: Done, fx: &mut Fx) {
        let Done::Caps(reader, new) = done else {
            self.reader = Some(Box::default());
            return;
        };
        self.reader = Some(reader);
        let mut new = *new;
        new.mode = self.mode;
        let changed =
            caps::materially_changed(&self.caps, &new, self.env.config.status.battery_threshold);
        new.revision = if changed {
            self.caps.revision + 1
        } else {
            self.caps.revision
        };
        self.caps = new;
        fx.changed();
        match then {
            CapsThen::Tick => {
                self.report_capabilities(changed, fx);
            }
            CapsThen::Overrides(w) => {
                self.report_capabilities(changed, fx);
                fx.resolve(w, Reply::Done(Ok(())));
            }
        }
        let waiting = std::mem::take(&mut self.caps_waiting);
        if let Some(next) = waiting.into_iter().next() {
            self.read_caps(next, fx);
        }
    }

    /// After a capabilities read: a PNE re-sends a material change to its gateway and sends
    /// its heartbeat; a gateway checks its members' silence, whether it still is the gateway,
    /// and updates `cpns-auth`; a battery below the threshold is reported to this node's own
    /// subscribers (5.6.2 event-triggered report).
    pub(super) fn report_capabilities(&mut self, changed: bool, fx: &mut Fx) {
        let caps: Capabilities = self.caps.clone();
        match self.pn.as_ref().map(|p| p.membership.gateway) {
            Some(gw) if gw != self.env.me => {
                if changed {
                    // 5.6.1: a material change is re-sent to the gateway.
                    fx.send(gw, Message::Pn(PnMessage::CapabilitiesUpdate(caps.clone())));
                }
                self.heartbeat(fx);
            }
            Some(_) => {
                let me = self.env.me;
                if changed && let Some(m) = self.pn_mut().and_then(|p| p.members.get_mut(&me)) {
                    m.caps = Some(caps.clone());
                    m.info.mode = caps.mode;
                }
                if changed {
                    self.persist_member(&me, fx);
                }
                self.check_silence(fx);
                self.check_still_gateway(fx);
                if changed {
                    self.spawn(
                        Purpose::Ignore,
                        Job::AuthIfSession(AuthMessage::CapabilitiesUpdate(caps.clone())),
                        fx,
                    );
                }
            }
            None => {}
        }
        let battery_low = caps.dynamic.power == PowerSource::Battery
            && caps
                .dynamic
                .battery_percent
                .is_some_and(|b| b < self.env.config.status.battery_threshold);
        if changed && battery_low {
            let me = self.env.me;
            let status = self.status.clone();
            self.notify(
                me,
                &status,
                caps.dynamic.battery_percent,
                Some(caps.dynamic.free_memory_bytes),
                None,
                false,
                "battery_below",
                fx,
            );
        }
    }

    /// The gateway marks members silent for too long Offline.
    fn check_silence(&mut self, fx: &mut Fx) {
        let now = fx.now;
        let me = self.env.me;
        let mut silent = Vec::new();
        // The admin information is shared, not borrowed from `self`, while the members change.
        let admin = self.admin.clone();
        let default = self.env.config.status.offline_after_secs;
        if let Some(p) = self.pn_mut() {
            for m in p.members.values_mut() {
                let limit = super::admin::offline_after(admin.as_deref(), &m.info.peer_id, default);
                if m.info.peer_id == me || m.info.status == Status::Offline {
                    continue;
                }
                if m.live.last_seen == 0 {
                    m.live.last_seen = now;
                }
                if now.saturating_sub(m.live.last_seen) > limit {
                    silent.push(m.info.peer_id);
                }
            }
        }
        for m in silent {
            if self.set_member_status(&m, Status::Offline, fx) {
                self.notify(m, &Status::Offline, None, None, None, true, "silence", fx);
            }
        }
    }

    /// New capability overrides: read, report, answer.
    pub(super) fn set_overrides_op(
        &mut self,
        o: CapabilitiesConfig,
        waiter: WaiterId,
        fx: &mut Fx,
    ) {
        self.overrides = Arc::new(o);
        fx.changed();
        self.read_caps(CapsThen::Overrides(waiter), fx);
    }
}

/// Peer-supplied text as kept for the local user: one line, at most 256 characters.
fn clip(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(256)
        .collect()
}
