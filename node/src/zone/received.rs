//! The PNE's side of zone-based service: a zone gateway's requests (F 3, 5, 6), answered
//! only when the user allows zone discovery, and the zones met with what they pushed (kept
//! in the database, at most [`MAX_ZONES`]).

use std::collections::BTreeMap;

use cpns_keys::Mode;
use cpns_overlay::{
    ErrorCode, MAX_ZONE_NAME, MAX_ZONE_SERVICES, Message, ZoneMessage, ZoneService,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::internal;
use crate::context::Context;
use crate::error::OpError;
use crate::store::{Typed, names};
use crate::trace::flow::ZONE;

/// Most zones (zone gateways) remembered; the one pushed to longest ago goes first.
const MAX_ZONES: usize = 16;

/// A zone met, and what its gateway pushed.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct Met {
    zone: String,
    pn_id: String,
    met_at: u64,
    pushed_at: u64,
    services: Vec<ZoneService>,
}

/// The zones met (the owner's part).
pub(crate) struct Received {
    tree: Typed<Met>,
    met: BTreeMap<PeerId, Met>,
}

impl Received {
    pub(crate) fn open(ctx: &Context) -> Result<Self, crate::store::StoreError> {
        let tree = ctx.store.typed::<Met>(names::ZONE_RECEIVED)?;
        let met = tree
            .all()?
            .into_iter()
            .filter_map(|(k, v)| Some((PeerId::from_bytes(&k).ok()?, v)))
            .collect();
        Ok(Self { tree, met })
    }

    pub(crate) fn views(&self) -> Vec<cpns_api::ZoneReceivedView> {
        self.met
            .iter()
            .map(|(gw, m)| cpns_api::ZoneReceivedView {
                zone: m.zone.clone(),
                pn_id: m.pn_id.clone(),
                gateway: gw.to_string(),
                pushed_at: m.pushed_at,
                services: m
                    .services
                    .iter()
                    .map(|s| cpns_api::ZoneServiceView {
                        service_id: s.service_id.clone(),
                        name: s.name.clone(),
                        description: s.description.clone(),
                        keywords: s.keywords.clone(),
                        provider: s.provider.to_string(),
                    })
                    .collect(),
            })
            .collect()
    }

    async fn save(&mut self, gateway: PeerId, m: Met) -> Result<(), OpError> {
        if !self.met.contains_key(&gateway)
            && self.met.len() >= MAX_ZONES
            && let Some(oldest) = self
                .met
                .iter()
                .min_by_key(|(_, m)| m.pushed_at.max(m.met_at))
                .map(|(p, _)| *p)
        {
            self.tree
                .remove(&oldest.to_bytes())
                .await
                .map_err(internal)?;
            self.met.remove(&oldest);
        }
        self.tree
            .put(&gateway.to_bytes(), &m)
            .await
            .map_err(internal)?;
        self.met.insert(gateway, m);
        Ok(())
    }

    /// One zone request from `peer`.
    pub(crate) async fn on_request(
        &mut self,
        ctx: &Context,
        discoverable: bool,
        peer: PeerId,
        message: ZoneMessage,
    ) -> Message {
        let me = ctx.peer_id;
        if !discoverable {
            // No opt-in, nothing: not even the zone gateway's credential is looked at.
            return Message::error(
                ErrorCode::Forbidden,
                "this device's user does not allow zone discovery",
            );
        }
        match message {
            ZoneMessage::Discover {
                zone,
                pn_id,
                credential,
            } => {
                if zone.len() > MAX_ZONE_NAME || pn_id.len() > MAX_ZONE_NAME {
                    return Message::error(ErrorCode::BadRequest, "zone name or PN id too long");
                }
                let zone = crate::trace::clean_text(&zone, MAX_ZONE_NAME);
                ctx.trace(
                    ZONE,
                    3,
                    &peer,
                    &me,
                    "ZoneEntityDiscovery",
                    format!("zone {zone}"),
                );
                let checked = ctx.trust().map_err(|e| e.to_string()).and_then(|t| {
                    t.check_credential_mode(&credential, &peer, Some(Mode::Gateway), crate::now())
                        .map_err(|e| format!("the zone gateway's credential is refused: {e}"))
                });
                if let Err(e) = checked {
                    return Message::error(ErrorCode::NotRegistered, e);
                }
                let Ok(mine) = ctx.enrolment() else {
                    return Message::error(ErrorCode::NotRegistered, "this node is not enrolled");
                };
                let now = crate::now();
                let known = self.met.get(&peer).filter(|m| m.zone == zone);
                let m = Met {
                    zone: zone.clone(),
                    pn_id,
                    met_at: now,
                    pushed_at: known.map(|m| m.pushed_at).unwrap_or(0),
                    services: known.map(|m| m.services.clone()).unwrap_or_default(),
                };
                if let Err(e) = self.save(peer, m).await {
                    warn!("zone not saved: {e}");
                    return Message::error(ErrorCode::Internal, "not saved");
                }
                info!(gateway = %peer, %zone, "found by a zone gateway");
                ctx.trace(
                    ZONE,
                    3,
                    &me,
                    &peer,
                    "ZoneEntityPresent",
                    format!(
                        "{}/{}",
                        mine.credential.body.user, mine.credential.body.device
                    ),
                );
                Message::Zone(ZoneMessage::Present {
                    credential: mine.credential.clone(),
                })
            }
            ZoneMessage::Check { zone } => {
                if self.met.get(&peer).is_none_or(|m| m.zone != zone) {
                    return Message::error(ErrorCode::Forbidden, "no zone of yours met");
                }
                ctx.trace(ZONE, 5, &peer, &me, "ZoneAvailabilityCheck", "");
                ctx.trace(ZONE, 5, &me, &peer, "ZoneAvailability", "available");
                Message::Zone(ZoneMessage::Available { accepts: true })
            }
            ZoneMessage::Push {
                zone,
                pn_id,
                services,
            } => {
                let Some(known) = self.met.get(&peer).filter(|m| m.zone == zone) else {
                    return Message::error(ErrorCode::Forbidden, "no zone of yours met");
                };
                if services.len() > MAX_ZONE_SERVICES
                    || !services.iter().all(ZoneService::within_limits)
                    || pn_id != known.pn_id
                {
                    return Message::error(
                        ErrorCode::BadRequest,
                        "a push of at most 64 bounded descriptions, for the zone PN met",
                    );
                }
                let n = services.len();
                let m = Met {
                    pushed_at: crate::now(),
                    services,
                    ..known.clone()
                };
                if let Err(e) = self.save(peer, m).await {
                    warn!("zone push not saved: {e}");
                    return Message::error(ErrorCode::Internal, "not saved");
                }
                ctx.trace(
                    ZONE,
                    6,
                    &peer,
                    &me,
                    "ZonePush",
                    format!("{n} service descriptions stored"),
                );
                info!(gateway = %peer, %zone, services = n, "zone push stored");
                Message::Ack
            }
            other => Message::error(
                ErrorCode::BadRequest,
                format!("{} is an answer, not a request", other.name()),
            ),
        }
    }
}
