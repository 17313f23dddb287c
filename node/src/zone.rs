//! Zone-based service (spec Appendix F; docs/ZONES.md), flow "F" in the trace.
//!
//! Two roles, one owner task ([`run`]):
//! * **Zone PN GW** (a gateway with a zone name): every `search_secs` it searches its zone's
//!   LAN (F 1, a UDP multicast datagram). A PNE that answers (F 2) is met over libp2p (F 3,
//!   credentials both ways), registered in the zone PN's inventory at `cpns-auth` with no
//!   request from the PNE and no input from anyone (F 4; the server checks the PNE is
//!   enrolled, unrevoked and admitted by the zone PN's policy), checked for availability
//!   (F 5), then pushed the zone's service descriptions (F 6). A member that misses two
//!   searches in a row has left: it is de-registered at `cpns-auth` (F 7).
//! * **PNE**: answers searches only when its user allows zone discovery
//!   (`zone.discoverable`), checks a zone gateway's credential, and keeps what zones pushed.
//!   A PNE that did not opt in sends nothing and refuses every zone request: it is neither
//!   registered nor pushed to.
//!
//! Why its own module and not a second PN in the PN actor: the PN actor holds the one PN
//! this node is a member of (keys, status, failover). A zone PN membership shares none of
//! that: the zone gateway never hands this PNE the zone PN's key, it only registers it and
//! pushes descriptions. So a PNE is in its home PN (the PN actor) and in any number of zones
//! (here) at once, and a zone gateway is the gateway of its own PN (the zone PN) while PNEs
//! of many other PNs pass through its zone.

mod received;
mod search;
mod visit;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpns_overlay::{ErrorCode, Message, ZoneMessage};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::auth_link::AuthLink;
use crate::context::Context;
use crate::error::OpError;
use crate::store::{Typed, names};
use crate::trace::flow::ZONE;

/// Most PNEs registered in one zone at once.
const MAX_MEMBERS: usize = 256;
/// Most PNE visits (F 3-6) running at once.
const MAX_VISITS: usize = 8;
/// Most refusals remembered (shown, and not retried for a few periods).
const MAX_REFUSED: usize = 64;
/// A refused PNE is tried again after this many periods.
const RETRY_PERIODS: u32 = 4;
/// Commands waiting for the owner.
const COMMANDS: usize = 64;

/// The zone settings in force: the config file's `[zone]`, or what the owner set through the
/// API (kept in the database, so it survives a restart).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Settings {
    pub(crate) name: String,
    pub(crate) services: Vec<String>,
    pub(crate) search_secs: u64,
    pub(crate) discoverable: bool,
}

impl Settings {
    fn from_config(c: &crate::config::ZoneConfig) -> Self {
        Self {
            name: c.name.clone(),
            services: c.services.clone(),
            search_secs: c.search_secs,
            discoverable: c.discoverable,
        }
    }

    fn check(&self) -> Result<(), OpError> {
        if self.name.len() > cpns_overlay::MAX_ZONE_NAME || self.name.chars().any(char::is_control)
        {
            return Err(OpError::BadRequest(
                "a zone name is at most 64 bytes, without control characters".into(),
            ));
        }
        if !(1..=3600).contains(&self.search_secs) {
            return Err(OpError::BadRequest(
                "search_secs must be between 1 and 3600".into(),
            ));
        }
        if self.services.len() > cpns_overlay::MAX_ZONE_SERVICES
            || self
                .services
                .iter()
                .any(|s| s.len() > cpns_overlay::MAX_ZONE_TEXT)
        {
            return Err(OpError::BadRequest(
                "at most 64 services, ids of at most 256 bytes".into(),
            ));
        }
        Ok(())
    }
}

/// A PNE registered in this gateway's zone.
#[derive(Clone, Debug)]
pub(crate) struct Member {
    pub(crate) user: String,
    pub(crate) device: String,
    pub(crate) registered: u64,
    pub(crate) last_seen: u64,
    /// When it last answered, by the owner's clock (departures are counted in periods).
    seen: Instant,
    pub(crate) pushed: usize,
    /// The settings revision it was last pushed (a change of services pushes again).
    pushed_revision: u64,
}

/// A PNE that answered but was not registered.
#[derive(Clone, Debug)]
pub(crate) struct Refusal {
    pub(crate) reason: String,
    pub(crate) at: u64,
    until: Instant,
}

/// What the gateway side shows (`cpns zone show`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Found {
    pub(crate) searching: bool,
    pub(crate) idle_reason: Option<String>,
    pub(crate) pn_id: Option<String>,
    pub(crate) members: BTreeMap<PeerId, Member>,
    pub(crate) refused: BTreeMap<PeerId, Refusal>,
}

enum Command {
    Inbound {
        peer: PeerId,
        message: Box<ZoneMessage>,
        reply: oneshot::Sender<Message>,
    },
    Set {
        settings: Option<Settings>,
        reply: oneshot::Sender<Result<(), OpError>>,
    },
    View {
        reply: oneshot::Sender<cpns_api::ZoneView>,
    },
}

/// The handle: the router hands it zone requests, the API reads and changes the settings.
#[derive(Clone)]
pub(crate) struct Zone {
    commands: mpsc::Sender<Command>,
}

/// The owner's end of the handle.
pub(crate) struct Commands(mpsc::Receiver<Command>);

impl Zone {
    pub(crate) fn new() -> (Zone, Commands) {
        let (tx, rx) = mpsc::channel(COMMANDS);
        (Zone { commands: tx }, Commands(rx))
    }

    async fn call<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Option<T> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.ok()?;
        rx.await.ok()
    }

    /// A zone gateway's request (the router checked the table; the owner checks the rest).
    pub(crate) async fn handle(&self, peer: PeerId, message: ZoneMessage) -> Message {
        self.call(|reply| Command::Inbound {
            peer,
            message: Box::new(message),
            reply,
        })
        .await
        .unwrap_or_else(|| Message::error(ErrorCode::Busy, "the zone module has stopped"))
    }

    /// `cpns zone show`.
    pub(crate) async fn view(&self) -> Result<cpns_api::ZoneView, OpError> {
        self.call(|reply| Command::View { reply })
            .await
            .ok_or_else(|| OpError::Unavailable("the zone module has stopped".into()))
    }

    /// `cpns zone set` (`Some`) or `cpns zone reset` (`None`: back to the config file's).
    pub(crate) async fn set(&self, settings: Option<Settings>) -> Result<(), OpError> {
        if let Some(s) = &settings {
            s.check()?;
        }
        self.call(|reply| Command::Set { settings, reply })
            .await
            .ok_or_else(|| OpError::Unavailable("the zone module has stopped".into()))?
    }
}

/// What a finished job tells the owner.
pub(crate) enum Done {
    /// F 3-6 for one PNE.
    Visited {
        peer: PeerId,
        result: Result<visit::Visit, String>,
    },
    /// F 7 for one PNE (its de-registration at cpns-auth was tried).
    Left,
}

/// The owner's state.
struct Owner {
    ctx: Context,
    pn: crate::pn::Handle,
    handle: crate::Handle,
    auth: AuthLink,
    saved: Typed<Settings>,
    settings: Settings,
    revision: u64,
    found: Found,
    visiting: BTreeMap<PeerId, ()>,
    received: received::Received,
}

const SETTINGS_KEY: &[u8] = b"settings";

/// The zone module's task.
pub(crate) async fn run(
    ctx: Context,
    pn: crate::pn::Handle,
    handle: crate::Handle,
    auth: AuthLink,
    Commands(mut commands): Commands,
) {
    let opened = ctx
        .store
        .typed::<Settings>(names::ZONE_SETTINGS)
        .and_then(|saved| Ok((saved, received::Received::open(&ctx)?)));
    let (saved, received) = match opened {
        Ok(v) => v,
        Err(e) => {
            warn!("zone module not started: {e}");
            return;
        }
    };
    let settings = match saved.get(SETTINGS_KEY) {
        Ok(Some(s)) => s,
        _ => Settings::from_config(&ctx.config.zone),
    };
    let mut o = Owner {
        ctx: ctx.clone(),
        pn,
        handle,
        auth,
        saved,
        settings,
        revision: 1,
        found: Found::default(),
        visiting: BTreeMap::new(),
        received,
    };
    let mut sockets = search::Sockets::new(ctx.config.zone.port);
    let mut jobs: JoinSet<Done> = JoinSet::new();
    let mut tick = tokio::time::interval(Duration::from_secs(o.settings.search_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let cancel = ctx.cancel.clone();
    loop {
        tokio::select! {
            biased;
            _ = cancel.cancelled() => break,
            Some(done) = jobs.join_next(), if !jobs.is_empty() => match done {
                Ok(done) => o.on_done(done),
                Err(e) => warn!("a zone job failed: {e}"),
            },
            Some(cmd) = commands.recv() => match cmd {
                Command::Inbound { peer, message, reply } => {
                    let answer = o.on_inbound(peer, *message).await;
                    let _ = reply.send(answer);
                }
                Command::Set { settings, reply } => {
                    let before = o.settings.search_secs;
                    let _ = reply.send(o.on_set(settings).await);
                    sockets.responder(o.settings.discoverable, &ctx).await;
                    if o.settings.search_secs != before {
                        tick = tokio::time::interval(Duration::from_secs(o.settings.search_secs));
                        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    }
                }
                Command::View { reply } => {
                    let _ = reply.send(o.view());
                }
            },
            // The timer before the sockets: a flood of datagrams cannot starve the search.
            _ = tick.tick() => {
                sockets.responder(o.settings.discoverable, &ctx).await;
                o.search(&mut sockets, &mut jobs).await;
            }
            ev = sockets.next(&ctx) => {
                if let search::Event::Answer(a) = ev {
                    o.on_answer(a, &mut jobs);
                }
            }
        }
    }
    jobs.abort_all();
    debug!("zone module stopped");
}

impl Owner {
    fn me(&self) -> PeerId {
        self.ctx.peer_id
    }

    fn period(&self) -> Duration {
        Duration::from_secs(self.settings.search_secs)
    }

    async fn on_set(&mut self, settings: Option<Settings>) -> Result<(), OpError> {
        let next = match &settings {
            Some(s) => {
                self.saved.put(SETTINGS_KEY, s).await.map_err(internal)?;
                s.clone()
            }
            None => {
                self.saved.remove(SETTINGS_KEY).await.map_err(internal)?;
                Settings::from_config(&self.ctx.config.zone)
            }
        };
        if next != self.settings {
            info!(zone = %next.name, discoverable = next.discoverable, "zone settings changed");
            self.settings = next;
            self.revision += 1;
        }
        Ok(())
    }

    /// Why this node does not search now, if it does not.
    fn idle_reason(&self) -> Option<String> {
        if self.settings.name.is_empty() {
            return Some("no zone name (`cpns zone set --name NAME`)".into());
        }
        let view = self.pn.view();
        if !view.mode.is_gateway() {
            return Some("not in gateway mode".into());
        }
        if !view.is_pn_gateway() {
            return Some("no PN of its own yet (the zone PN)".into());
        }
        None
    }

    /// F 1, and the departures (F 7) of members that missed two searches.
    async fn search(&mut self, sockets: &mut search::Sockets, jobs: &mut JoinSet<Done>) {
        let idle = self.idle_reason();
        self.found.searching = idle.is_none();
        self.found.idle_reason = idle;
        if !self.found.searching {
            sockets.stop_searching();
            // No zone any more: its members are de-registered (F 7).
            let pn_id = self.found.pn_id.take().unwrap_or_default();
            for (peer, _) in std::mem::take(&mut self.found.members) {
                let auth = self.auth.clone();
                let pn_id = pn_id.clone();
                jobs.spawn(async move {
                    visit::leave(&auth, pn_id, peer).await;
                    Done::Left
                });
            }
            self.found.refused.clear();
            return;
        }
        self.found.pn_id = self.pn.view().pn_id().map(str::to_string);
        let now = Instant::now();
        // Two periods and a half without an answer: two searches missed.
        let limit = self.period() * 5 / 2;
        let gone: Vec<PeerId> = self
            .found
            .members
            .iter()
            .filter(|(_, m)| now.duration_since(m.seen) > limit)
            .map(|(p, _)| *p)
            .collect();
        let pn_id = self.found.pn_id.clone().unwrap_or_default();
        for peer in gone {
            self.found.members.remove(&peer);
            let me = self.me();
            self.ctx.trace(
                ZONE,
                7,
                &me,
                &self.auth_peer(),
                "ZonePnDeregistration",
                format!("{peer} left zone {}", self.settings.name),
            );
            info!(%peer, zone = %self.settings.name, "PNE left the zone");
            let (auth, pn_id) = (self.auth.clone(), pn_id.clone());
            jobs.spawn(async move {
                visit::leave(&auth, pn_id, peer).await;
                Done::Left
            });
        }
        self.found.refused.retain(|_, r| r.until > now);
        match sockets.search(&self.ctx, &self.settings.name).await {
            Ok(()) => {
                let me = self.me();
                self.ctx.trace(
                    ZONE,
                    1,
                    &me,
                    &me,
                    "ZonePeriodicSearch",
                    format!("zone {}", self.settings.name),
                );
            }
            Err(e) => debug!("zone search not sent: {e}"),
        }
    }

    fn auth_peer(&self) -> PeerId {
        self.ctx
            .enrolment()
            .map(|e| e.server)
            .unwrap_or(self.ctx.peer_id)
    }

    /// F 2 at the gateway: a PNE answered this period's search.
    fn on_answer(&mut self, a: search::Answer, jobs: &mut JoinSet<Done>) {
        if !self.found.searching || a.peer == self.me() {
            return;
        }
        let me = self.me();
        if let Some(m) = self.found.members.get_mut(&a.peer) {
            m.seen = Instant::now();
            m.last_seen = crate::now();
            if m.pushed_revision == self.revision {
                return;
            }
        } else if self.found.refused.contains_key(&a.peer) {
            return;
        } else if self.found.members.len() >= MAX_MEMBERS {
            debug!(peer = %a.peer, "zone full: answer ignored");
            return;
        }
        if self.visiting.contains_key(&a.peer) || self.visiting.len() >= MAX_VISITS {
            return;
        }
        self.ctx.trace(
            ZONE,
            2,
            &a.peer,
            &me,
            "ZoneSearchAnswer",
            format!("from {}", a.from),
        );
        let Some(pn_id) = self.found.pn_id.clone() else {
            return;
        };
        let services = self.services();
        let job = visit::Job {
            ctx: self.ctx.clone(),
            auth: self.auth.clone(),
            zone: self.settings.name.clone(),
            pn_id,
            revision: self.revision,
            register: !self.found.members.contains_key(&a.peer),
            services,
            answer: a,
        };
        self.visiting.insert(job.answer.peer, ());
        jobs.spawn(async move {
            let peer = job.answer.peer;
            Done::Visited {
                peer,
                result: job.run().await,
            }
        });
    }

    /// The descriptions of the zone's services (this node's own services named in the
    /// settings; one not published is skipped).
    fn services(&self) -> Vec<cpns_overlay::ZoneService> {
        let own = self.handle.services().unwrap_or_default();
        self.settings
            .services
            .iter()
            .filter_map(|id| own.iter().find(|d| d.id.as_str() == id.as_str()))
            .map(|d| {
                let cut = |s: &str| crate::trace::clean_text(s, cpns_overlay::MAX_ZONE_TEXT);
                cpns_overlay::ZoneService {
                    service_id: cut(d.id.as_str()),
                    name: cut(&d.name),
                    description: cut(&d.offers),
                    keywords: d
                        .keywords
                        .iter()
                        .take(cpns_overlay::MAX_ZONE_KEYWORDS)
                        .map(|k| cut(k))
                        .collect(),
                    provider: d.publisher,
                }
            })
            .collect()
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Left => {}
            Done::Visited { peer, result } => {
                self.visiting.remove(&peer);
                if !self.found.searching {
                    return;
                }
                match result {
                    Ok(v) => {
                        let now = crate::now();
                        let m = self.found.members.entry(peer).or_insert(Member {
                            user: v.user.clone(),
                            device: v.device.clone(),
                            registered: now,
                            last_seen: now,
                            seen: Instant::now(),
                            pushed: 0,
                            pushed_revision: 0,
                        });
                        m.seen = Instant::now();
                        m.last_seen = now;
                        if let Some(n) = v.pushed {
                            m.pushed = n;
                            m.pushed_revision = v.revision;
                        }
                    }
                    Err(reason) => {
                        // A member that cannot be reached now stays until it misses its
                        // searches; anyone else is not tried again for a few periods.
                        if self.found.members.contains_key(&peer) {
                            return;
                        }
                        if self.found.refused.len() >= MAX_REFUSED
                            && let Some(first) = self.found.refused.keys().next().copied()
                        {
                            self.found.refused.remove(&first);
                        }
                        self.found.refused.insert(
                            peer,
                            Refusal {
                                reason,
                                at: crate::now(),
                                until: Instant::now() + self.period() * RETRY_PERIODS,
                            },
                        );
                    }
                }
            }
        }
    }

    /// A zone gateway's request, at this PNE.
    async fn on_inbound(&mut self, peer: PeerId, message: ZoneMessage) -> Message {
        self.received
            .on_request(&self.ctx, self.settings.discoverable, peer, message)
            .await
    }

    fn view(&self) -> cpns_api::ZoneView {
        let s = &self.settings;
        cpns_api::ZoneView {
            settings: cpns_api::ZoneSettings {
                name: s.name.clone(),
                services: s.services.clone(),
                search_secs: s.search_secs,
                discoverable: s.discoverable,
            },
            searching: self.found.searching,
            idle_reason: if self.found.searching {
                None
            } else {
                self.idle_reason()
            },
            pn_id: self.found.pn_id.clone(),
            members: self
                .found
                .members
                .iter()
                .map(|(p, m)| cpns_api::ZoneMemberView {
                    peer_id: p.to_string(),
                    user: m.user.clone(),
                    device: m.device.clone(),
                    registered: m.registered,
                    last_seen: m.last_seen,
                    pushed: m.pushed,
                })
                .collect(),
            refused: self
                .found
                .refused
                .iter()
                .map(|(p, r)| cpns_api::ZoneRefusalView {
                    peer_id: p.to_string(),
                    reason: r.reason.clone(),
                    at: r.at,
                })
                .collect(),
            received: self.received.views(),
        }
    }
}

/// A database failure, as the API says it.
fn internal(e: crate::store::StoreError) -> OpError {
    OpError::Internal(e.to_string())
}

/// Converts the API's settings.
pub(crate) fn settings_of(s: cpns_api::ZoneSettings) -> Settings {
    Settings {
        name: s.name,
        services: s.services,
        search_secs: if s.search_secs == 0 {
            30
        } else {
            s.search_secs
        },
        discoverable: s.discoverable,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            name: "mall".into(),
            services: vec!["svc-1".into()],
            search_secs: 30,
            discoverable: false,
        }
    }

    #[test]
    fn settings_are_bounded() {
        assert!(settings().check().is_ok());
        let long = Settings {
            name: "x".repeat(65),
            ..settings()
        };
        assert!(matches!(long.check(), Err(OpError::BadRequest(_))));
        let control = Settings {
            name: "a\nb".into(),
            ..settings()
        };
        assert!(control.check().is_err());
        let never = Settings {
            search_secs: 0,
            ..settings()
        };
        assert!(never.check().is_err());
        let many = Settings {
            services: (0..65).map(|i| format!("svc-{i}")).collect(),
            ..settings()
        };
        assert!(many.check().is_err());
    }

    #[test]
    fn no_zone_and_no_consent_by_default() {
        let c = crate::config::ZoneConfig::default();
        let s = Settings::from_config(&c);
        assert!(s.name.is_empty(), "no zone unless the owner names one");
        assert!(
            !s.discoverable,
            "a PNE answers zone searches only when its user allows it"
        );
    }

    #[test]
    fn api_settings_without_a_period_take_the_default() {
        let s = settings_of(cpns_api::ZoneSettings {
            name: "m".into(),
            ..Default::default()
        });
        assert_eq!(s.search_secs, 30);
    }
}
