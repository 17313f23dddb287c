//! The zone gateway's visit of one PNE that answered its search: F 3 (credentials both
//! ways over libp2p), F 4 (registration in the zone PN's inventory at `cpns-auth`), F 5 (the
//! availability check), F 6 (the push of the zone's service descriptions). A PNE already
//! registered whose push is out of date (the zone's services changed) gets F 5-6 only.
//! And F 7: the de-registration of a PNE that left.

use std::time::Duration;

use cpns_keys::Mode;
use cpns_overlay::{AuthMessage, Message, Protocol, ZoneMessage, ZoneRegistration, ZoneService};
use libp2p::PeerId;
use tracing::{debug, info};

use super::search::Answer;
use crate::auth_link::AuthLink;
use crate::context::Context;
use crate::trace::flow::ZONE;

/// How long one visit may take, dial included.
const VISIT_LIMIT: Duration = Duration::from_secs(20);

/// One visit's inputs.
pub(crate) struct Job {
    pub(crate) ctx: Context,
    pub(crate) auth: AuthLink,
    pub(crate) zone: String,
    pub(crate) pn_id: String,
    pub(crate) revision: u64,
    /// F 3-4 first (a new PNE), or only F 5-6 (a member whose push is out of date).
    pub(crate) register: bool,
    pub(crate) services: Vec<ZoneService>,
    pub(crate) answer: Answer,
}

/// What a visit achieved.
pub(crate) struct Visit {
    pub(crate) user: String,
    pub(crate) device: String,
    /// How many descriptions were pushed (None: the PNE was not available for a push).
    pub(crate) pushed: Option<usize>,
    pub(crate) revision: u64,
}

impl Job {
    pub(crate) async fn run(self) -> Result<Visit, String> {
        match tokio::time::timeout(VISIT_LIMIT, self.steps()).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {VISIT_LIMIT:?}")),
        }
    }

    fn trace(&self, step: u32, from: &PeerId, to: &PeerId, message: &str, detail: String) {
        self.ctx.trace(ZONE, step, from, to, message, detail);
    }

    async fn steps(&self) -> Result<Visit, String> {
        let ctx = &self.ctx;
        let me = ctx.peer_id;
        let peer = self.answer.peer;
        let addrs = self.answer.addrs();
        if addrs.is_empty() {
            return Err("its answer names no TCP port".into());
        }
        ctx.client
            .dial_peer(peer, addrs)
            .await
            .map_err(|e| format!("unreachable: {e}"))?;
        let enrolment = ctx.enrolment().map_err(|e| e.to_string())?;
        let trust = ctx.trust().map_err(|e| e.to_string())?;
        // F 3: each side checks the other's credential.
        self.trace(
            3,
            &me,
            &peer,
            "ZoneEntityDiscovery",
            format!("zone {}", self.zone),
        );
        let credential = match self
            .request(ZoneMessage::Discover {
                zone: self.zone.clone(),
                pn_id: self.pn_id.clone(),
                credential: enrolment.credential.clone(),
            })
            .await?
        {
            ZoneMessage::Present { credential } => credential,
            other => return Err(format!("unexpected answer {}", other.name())),
        };
        trust
            .check_credential_mode(&credential, &peer, Some(Mode::Pne), crate::now())
            .map_err(|e| format!("credential refused: {e}"))?;
        let (user, device) = (credential.body.user.clone(), credential.body.device.clone());
        self.trace(
            3,
            &peer,
            &me,
            "ZoneEntityPresent",
            format!("{user}/{device}"),
        );
        if self.register {
            // F 4: registered at cpns-auth without any request from the PNE.
            let server = enrolment.server;
            self.trace(
                4,
                &me,
                &server,
                "ZonePnRegistration",
                format!("{peer} in {}", self.pn_id),
            );
            let answer = self
                .auth
                .request(AuthMessage::ZoneRegister(ZoneRegistration {
                    pn_id: self.pn_id.clone(),
                    zone: self.zone.clone(),
                    credential,
                }))
                .await;
            match answer {
                Ok(AuthMessage::ZoneMembers { members, .. }) => {
                    self.trace(
                        4,
                        &server,
                        &me,
                        "ZonePnMembers",
                        format!("{} in the zone PN's inventory", members.len()),
                    );
                    info!(%peer, zone = %self.zone, "PNE registered in the zone PN");
                }
                Ok(other) => return Err(format!("unexpected answer {}", other.name())),
                Err(e) => {
                    self.trace(4, &server, &me, "ZonePnMembers", format!("refused: {e}"));
                    return Err(format!("cpns-auth: {e}"));
                }
            }
        }
        // F 5: available for a push?
        self.trace(
            5,
            &me,
            &peer,
            "ZoneAvailabilityCheck",
            format!("zone {}", self.zone),
        );
        let accepts = match self
            .request(ZoneMessage::Check {
                zone: self.zone.clone(),
            })
            .await?
        {
            ZoneMessage::Available { accepts } => accepts,
            other => return Err(format!("unexpected answer {}", other.name())),
        };
        self.trace(
            5,
            &peer,
            &me,
            "ZoneAvailability",
            if accepts { "available" } else { "busy" }.into(),
        );
        let mut visit = Visit {
            user,
            device,
            pushed: None,
            revision: self.revision,
        };
        if !accepts {
            return Ok(visit);
        }
        // F 6: the push.
        let n = self.services.len();
        self.trace(
            6,
            &me,
            &peer,
            "ZonePush",
            format!("{n} service descriptions"),
        );
        match ctx
            .client
            .request(
                peer,
                Protocol::Cpns,
                Message::Zone(ZoneMessage::Push {
                    zone: self.zone.clone(),
                    pn_id: self.pn_id.clone(),
                    services: self.services.clone(),
                }),
            )
            .await
        {
            Ok(Message::Ack) => {
                visit.pushed = Some(n);
                Ok(visit)
            }
            Ok(other) => Err(format!("unexpected answer {}", other.name())),
            Err(e) => Err(format!("push refused: {e}")),
        }
    }

    async fn request(&self, m: ZoneMessage) -> Result<ZoneMessage, String> {
        let name = m.name();
        match self
            .ctx
            .client
            .request(self.answer.peer, Protocol::Cpns, Message::Zone(m))
            .await
        {
            Ok(Message::Zone(z)) => Ok(z),
            Ok(other) => Err(format!("{name}: unexpected answer {}", other.name())),
            Err(e) => Err(format!("{name}: {e}")),
        }
    }
}

/// F 7: removes a PNE that left the zone from the zone PN's inventory at `cpns-auth`.
pub(crate) async fn leave(auth: &AuthLink, pn_id: String, entity: PeerId) {
    match auth
        .request(AuthMessage::ZoneDeregister { pn_id, entity })
        .await
    {
        Ok(_) => {}
        Err(e) => debug!(%entity, "zone de-registration at cpns-auth failed: {e}"),
    }
}
