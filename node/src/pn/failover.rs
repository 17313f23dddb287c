//! Switching a PN's gateway (5.6.9 "switch current PN GW to other PN GW"): a member takes
//! the gateway role over, by its owner's request (`cpns mode set gateway` on a PNE) or because
//! the gateway fell silent, and every other member re-joins the PN through the new gateway.
//!
//! `cpns-auth` is the one place that decides who the gateway is: a take-over is a gateway set-up
//! (B.1 steps 8-17) that claims the PN with `take_over`, and members believe a
//! [`PnMessage::GatewayChanged`] only after the server's PN record confirms it. A gateway
//! that comes back after its PN moved on claims it without `take_over`; the server then names
//! the new gateway and the old one joins it as a PNE.
//!
//! Failover, at a PNE whose heartbeats have gone unanswered for
//! `status.gateway_failover_after_secs`: the members that `cpns-auth` lists (the silent gateway
//! left out) are ranked by PeerId; the member of rank `r` waits `r` heartbeat intervals, asking
//! the server each time whether someone else took over, and then takes over if it may be a
//! gateway (its credential allows it, its preference is not `never`). So one member takes over
//! and the others follow it, without a vote. Without `cpns-auth` no one takes over: members
//! keep talking to each other directly until the gateway or the server is back.

use std::sync::Arc;
use std::time::Duration;

use cpns_keys::Mode;
use cpns_overlay::{
    AuthMessage, GatewayPreference, KadMode, Message, NodeMode, PnMessage, Protocol,
};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, info, warn};

use super::{gateway, member};
use crate::config::ModeSetting;
use crate::error::OpError;
use crate::shared::{Shared, now};
use crate::trace::flow::GW_SWITCH;

/// Most rounds a failover waits for lower-ranked members before it gives up (the watchdog
/// starts a new one while the gateway stays silent).
const MAX_ROUNDS: usize = 16;

/// Whether this node may act as a gateway: its credential allows it and its owner did not
/// say `never`.
pub(crate) fn may_be_gateway(shared: &Shared) -> bool {
    let allowed = shared
        .enrolment()
        .is_ok_and(|e| e.credential.body.modes.contains(Mode::Gateway));
    let s = shared.state();
    allowed
        && s.mode_setting != ModeSetting::Pne
        && s.caps.gateway_preference != GatewayPreference::Never
}

/// The gateway of record of this node's PN, from `cpns-auth`.
async fn gateway_of_record(
    shared: &Arc<Shared>,
    pn_id: &str,
) -> Result<(PeerId, Vec<PeerId>), OpError> {
    match crate::auth_link::request(
        shared,
        AuthMessage::PnInfoRequest {
            pn_id: pn_id.to_owned(),
        },
    )
    .await?
    {
        AuthMessage::PnInfo(info) => Ok((info.gateway, info.members)),
        other => Err(OpError::Refused(format!(
            "unexpected answer {}",
            other.name()
        ))),
    }
}

/// This PNE takes its PN's gateway role over: B.1 steps 6 and 8-17 with a take-over claim,
/// then every member hears of it. Returns the PN id.
pub(crate) async fn take_over(shared: &Arc<Shared>) -> Result<String, OpError> {
    let (pn_id, old) = {
        let s = shared.state();
        let pn =
            s.pn.as_ref()
                .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        (pn.membership.pn_id.clone(), pn.membership.gateway)
    };
    if old == shared.peer_id {
        return Ok(pn_id);
    }
    if !may_be_gateway(shared) {
        return Err(OpError::Refused(
            "this node may not be a gateway (its credential or its preference)".into(),
        ));
    }
    info!(pn = %pn_id, old_gateway = %old, "taking the PN's gateway role over");
    let me = shared.peer_id;
    shared.trace(
        GW_SWITCH,
        2,
        &me,
        &me,
        "TakeGatewayRoleOver",
        format!("from {old}"),
    );
    shared.state().taking_over = true;
    gateway::take_gateway_role(shared).await;
    let result = gateway::establish(shared).await;
    shared.state().taking_over = false;
    if let Err(e) = result {
        step_down(shared).await;
        return Err(e);
    }
    announce(shared, &pn_id, old).await;
    Ok(pn_id)
}

/// Tells every member (the previous gateway too, in case it is alive) that this node is the
/// gateway now.
async fn announce(shared: &Arc<Shared>, pn_id: &str, old: PeerId) {
    let me = shared.peer_id;
    let mut members: Vec<PeerId> = shared
        .state()
        .pn
        .as_ref()
        .map(|p| p.members.keys().copied().filter(|m| *m != me).collect())
        .unwrap_or_default();
    if !members.contains(&old) {
        members.push(old);
    }
    let addrs = shared.client.listen_addrs().await.unwrap_or_default();
    let sends = members.into_iter().map(|m| {
        let msg = Message::Pn(PnMessage::GatewayChanged {
            pn_id: pn_id.to_owned(),
            addrs: addrs.clone(),
        });
        shared.trace(GW_SWITCH, 3, &me, &m, "PnGatewayChanged", pn_id.to_owned());
        let client = shared.client.clone();
        async move {
            if let Err(e) = client.request(m, Protocol::Cpns, msg).await {
                debug!(member = %m, "gateway change not delivered (it will find out): {e}");
            }
        }
    });
    futures::future::join_all(sends).await;
}

/// Back to PNE mode after a failed take-over or when another node is the gateway now.
async fn step_down(shared: &Arc<Shared>) {
    {
        let mut s = shared.state();
        if s.mode_setting == ModeSetting::Gateway {
            s.mode_setting = ModeSetting::Auto;
        }
        s.mode = NodeMode::Pne;
        s.caps.mode = NodeMode::Pne;
    }
    let _ = shared.client.set_kad_mode(KadMode::Client).await;
}

/// A member hears that `peer` is its PN's gateway now: checked with `cpns-auth`, then this node
/// re-joins through it (in the background; the answer does not wait for it).
pub(crate) async fn on_gateway_changed(
    shared: &Arc<Shared>,
    peer: PeerId,
    pn_id: String,
    addrs: Vec<Multiaddr>,
) -> Message {
    let current = shared
        .state()
        .pn
        .as_ref()
        .filter(|p| p.membership.pn_id == pn_id)
        .map(|p| p.membership.gateway);
    match current {
        None => {
            return Message::error(cpns_overlay::ErrorCode::NotFound, "not a member of that PN");
        }
        Some(gw) if gw == peer => return Message::Ack,
        Some(_) => {}
    }
    let me = shared.peer_id;
    shared.trace(GW_SWITCH, 3, &peer, &me, "PnGatewayChanged", pn_id.clone());
    let s = shared.clone();
    tokio::spawn(async move {
        match gateway_of_record(&s, &pn_id).await {
            Ok((gw, _)) if gw == peer => {
                if let Err(e) = rehome(&s, peer, addrs).await {
                    warn!(gateway = %peer, "re-joining the PN through its new gateway failed: {e}");
                }
            }
            Ok((gw, _)) => {
                warn!(claimed = %peer, of_record = %gw, "a gateway change the server does not confirm; ignored")
            }
            Err(e) => warn!("cannot check a gateway change with cpns-auth: {e}"),
        }
    });
    Message::Ack
}

/// Leaves the PN's old gateway behind and joins the PN through `gateway` (B.1 steps 18-26).
/// The PN key stays; on failure the old membership is kept.
pub(crate) async fn rehome(
    shared: &Arc<Shared>,
    gateway: PeerId,
    mut addrs: Vec<Multiaddr>,
) -> Result<String, OpError> {
    // One re-join at a time: a failover and a gateway's announcement may both lead here.
    let (was_gateway, old) = {
        let mut s = shared.state();
        if s.pn
            .as_ref()
            .is_some_and(|p| p.membership.gateway == gateway)
        {
            return Ok(s
                .pn
                .as_ref()
                .map(|p| p.membership.pn_id.clone())
                .unwrap_or_default());
        }
        if s.joining.is_some() {
            return Err(OpError::Conflict("a join is already under way".into()));
        }
        s.joining = Some(gateway);
        let was =
            s.pn.as_ref()
                .is_some_and(|p| p.membership.gateway == shared.peer_id);
        (was, s.pn.take())
    };
    if was_gateway {
        info!(%gateway, "the PN has another gateway now; this node becomes one of its PNEs");
        step_down(shared).await;
    }
    if addrs.is_empty()
        && let Some(m) = old.as_ref().and_then(|p| p.members.get(&gateway))
    {
        addrs = m.listen_addrs.clone();
    }
    if addrs.is_empty() {
        addrs = super::inventory::load(&shared.db)
            .into_iter()
            .find(|e| e.info.peer_id == gateway)
            .map(|e| e.info.listen_addrs)
            .unwrap_or_default();
    }
    let me = shared.peer_id;
    shared.trace(GW_SWITCH, 4, &me, &gateway, "RejoinThroughNewGateway", "");
    match member::join(shared, gateway, addrs).await {
        Ok(pn_id) => {
            shared.state().gateway_heard = now();
            Ok(pn_id)
        }
        Err(e) => {
            let mut s = shared.state();
            s.joining = None;
            if s.pn.is_none() {
                s.pn = old;
            }
            Err(e)
        }
    }
}

/// At a gateway, once per `status.gateway_failover_after_secs`: whether `cpns-auth` still names
/// it its PN's gateway. A gateway cut off from some members (but not from the server) may have
/// been replaced by one of them without hearing `PnGatewayChanged`; it then joins the new one.
pub(crate) async fn check_still_gateway(shared: &Arc<Shared>) {
    let period = Duration::from_secs(shared.config.status.gateway_failover_after_secs);
    if period.is_zero() {
        return;
    }
    let pn_id = {
        let mut s = shared.state();
        let Some(pn_id) =
            s.pn.as_ref()
                .filter(|p| p.membership.gateway == shared.peer_id)
                .map(|p| p.membership.pn_id.clone())
        else {
            return;
        };
        match s.gateway_checked {
            Some(at) if at.elapsed() < period => return,
            None => {
                // The first check waits a whole period after the PN is up.
                s.gateway_checked = Some(std::time::Instant::now());
                return;
            }
            Some(_) => s.gateway_checked = Some(std::time::Instant::now()),
        }
        pn_id
    };
    match gateway_of_record(shared, &pn_id).await {
        Ok((gw, _)) if gw != shared.peer_id => {
            warn!(gateway = %gw, "cpns-auth names another gateway of this PN; joining it as a PNE");
            if let Err(e) = rehome(shared, gw, Vec::new()).await {
                warn!(gateway = %gw, "joining the PN's new gateway failed: {e}");
            }
        }
        Ok(_) => {}
        Err(e) => debug!("cannot check the PN's gateway of record now: {e}"),
    }
}

/// Called after each heartbeat to the gateway: starts a failover once the gateway has been
/// silent for `status.gateway_failover_after_secs` (0: never).
pub(crate) fn watch(shared: &Arc<Shared>, answered: bool) {
    let limit = shared.config.status.gateway_failover_after_secs;
    let t = now();
    let start = {
        let mut s = shared.state();
        if answered {
            s.gateway_heard = t;
            return;
        }
        if s.gateway_heard == 0 {
            s.gateway_heard = t;
        }
        let silent = t.saturating_sub(s.gateway_heard) >= limit;
        let run = limit > 0 && silent && !s.failover_running;
        if run {
            s.failover_running = true;
        }
        run
    };
    if start {
        let s = shared.clone();
        tokio::spawn(async move {
            if let Err(e) = fail_over(&s).await {
                warn!("gateway failover: {e}");
            }
            let mut st = s.state();
            st.failover_running = false;
            // Wait a whole period again before the next attempt.
            st.gateway_heard = now();
        });
    }
}

/// The failover itself (see the module's documentation).
async fn fail_over(shared: &Arc<Shared>) -> Result<(), OpError> {
    let (pn_id, silent) = {
        let s = shared.state();
        match &s.pn {
            Some(p) if p.membership.gateway != shared.peer_id => {
                (p.membership.pn_id.clone(), p.membership.gateway)
            }
            _ => return Ok(()),
        }
    };
    warn!(gateway = %silent, pn = %pn_id, "the PN's gateway is silent; failing over");
    let me = shared.peer_id;
    shared.trace(GW_SWITCH, 1, &silent, &me, "GatewaySilent", pn_id.clone());
    let step = Duration::from_secs(shared.config.status.heartbeat_secs.max(1));
    for round in 0..MAX_ROUNDS {
        if shared.cancel.is_cancelled() {
            return Ok(());
        }
        let (gw, members) = gateway_of_record(shared, &pn_id).await?;
        if gw == shared.peer_id {
            return Ok(());
        }
        if gw != silent {
            info!(gateway = %gw, "another member took the gateway role over; re-joining through it");
            return match rehome(shared, gw, Vec::new()).await {
                Ok(_) | Err(OpError::Conflict(_)) => Ok(()),
                Err(e) => Err(e),
            };
        }
        // Heard from the gateway again meanwhile?
        let answered = tokio::time::timeout(
            Duration::from_secs(2),
            crate::status::heartbeat(shared, silent, None),
        )
        .await
        .unwrap_or(false);
        if answered {
            info!(gateway = %silent, "the gateway answers again; no failover");
            return Ok(());
        }
        let mut ranked: Vec<PeerId> = members.into_iter().filter(|m| *m != silent).collect();
        ranked.sort_by_key(|p| p.to_bytes());
        let rank = ranked
            .iter()
            .position(|p| *p == shared.peer_id)
            .ok_or_else(|| OpError::Conflict("no longer a member of the PN".into()))?;
        if round >= rank && may_be_gateway(shared) {
            take_over(shared).await?;
            return Ok(());
        }
        tokio::select! {
            _ = shared.cancel.cancelled() => return Ok(()),
            _ = tokio::time::sleep(step) => {}
        }
    }
    Err(OpError::Unavailable(
        "no member took the gateway role over in time".into(),
    ))
}
