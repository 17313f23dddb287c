//! The node's operations, callable in-process (tests, embedders) and behind the local HTTP
//! API. Each method is one API endpoint.

use std::time::{Duration, Instant};

use cpns_keys::GroupSealed;
use cpns_overlay::{
    Invitee, KadMode, Message, Multiaddr, PnMessage, Protocol, Status, StatusPolicy,
};
use libp2p::PeerId;

use crate::auth_link::AuthLink;
use crate::context::Context;
use crate::delivery::Delivery;
use crate::error::OpError;
use crate::groups::Groups;
use crate::pn::{self, Invitation, PairOutcome, pn_group};
use crate::renewal::Renewal;
use crate::services::Services;
use crate::status::{self, Notification};
use crate::trace::TraceEvent;
use crate::usage::Usage;
use crate::views::{AuthServerView, PeerView, PingView, StatusView};

/// A cheap, cloneable handle to a running node: the owner's operations. Each method sends
/// the owner of what it touches a command (the PN actor, the directory, delivery...) or reads
/// the PN actor's latest view.
#[derive(Clone)]
pub struct Handle {
    ctx: Context,
    pn: pn::Handle,
    auth: AuthLink,
    services: Services,
    delivery: Delivery,
    usage: Usage,
    groups: Groups,
    renewal: Renewal,
    proxy: crate::proxy::Proxy,
    zone: crate::zone::Zone,
}

/// The node's parts a [`Handle`] is made of.
pub(crate) struct Parts {
    pub(crate) ctx: Context,
    pub(crate) pn: pn::Handle,
    pub(crate) auth: AuthLink,
    pub(crate) services: Services,
    pub(crate) delivery: Delivery,
    pub(crate) usage: Usage,
    pub(crate) groups: Groups,
    pub(crate) renewal: Renewal,
    pub(crate) proxy: crate::proxy::Proxy,
    pub(crate) zone: crate::zone::Zone,
}

impl Handle {
    pub(crate) fn new(p: Parts) -> Self {
        Self {
            ctx: p.ctx,
            pn: p.pn,
            auth: p.auth,
            services: p.services,
            delivery: p.delivery,
            usage: p.usage,
            groups: p.groups,
            renewal: p.renewal,
            proxy: p.proxy,
            zone: p.zone,
        }
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.ctx.peer_id
    }

    /// A receiver that changes with every change of the node's PN state (members, status,
    /// mode, epoch, invitations...): wait on it, then read [`Handle::status`].
    pub fn pn_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pn.versions()
    }

    /// The node's status (`cpns status`).
    pub async fn status(&self) -> Result<StatusView, OpError> {
        let ctx = &self.ctx;
        let listen_addrs = ctx.client.listen_addrs().await?;
        let routing_table = ctx.client.routing_table_size().await?;
        let peers = ctx.client.peers().await?;
        let nat = ctx.client.nat_status().await?;
        let dht_mode = match ctx.client.kad_mode().await? {
            KadMode::Server => "server",
            KadMode::Client => "client",
        };
        let view = self.pn.view();
        let enrolment = view.enrolment.clone();
        let auth_server = enrolment.as_ref().map(|e| AuthServerView {
            peer_id: e.server.to_string(),
            addrs: e.server_addrs.iter().map(|a| a.to_string()).collect(),
            connected: peers.iter().any(|p| p.peer_id == e.server),
            authenticated: self.auth.has_session(),
        });
        let (pn_id, gateway, epoch, members) = match &view.pn {
            Some(pn) => (
                Some(pn.membership.pn_id.clone()),
                Some(pn.membership.gateway.to_string()),
                Some(pn.membership.epoch),
                pn.members
                    .values()
                    .map(|m| crate::views::member(&m.info))
                    .collect(),
            ),
            None => (None, None, None, Vec::new()),
        };
        Ok(StatusView {
            peer_id: ctx.peer_id.to_string(),
            listen_addrs: listen_addrs.iter().map(|a| a.to_string()).collect(),
            mode: view.mode.to_string(),
            mode_setting: view.mode_setting.to_string(),
            pn_id,
            gateway,
            members,
            enrolled: enrolment.is_some(),
            user: enrolment.as_ref().map(|e| e.credential.body.user.clone()),
            device: enrolment
                .as_ref()
                .map(|e| e.credential.body.device.clone())
                .unwrap_or_else(|| ctx.config.device_name.clone()),
            status: view.status.to_string(),
            heartbeat_secs: view.heartbeat.as_secs(),
            epoch,
            auth_server,
            credential: crate::renewal::view(ctx),
            dht_mode: dht_mode.into(),
            routing_table,
            connected_peers: peers.len(),
            nat: crate::views::IntoApi::into_api(nat),
            uptime_secs: ctx.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
            proxied: proxied_views(self.proxy.proxied_pnes(), &ctx.peer_id),
        })
    }

    /// The connected peers (`cpns peers`).
    pub async fn peers(&self) -> Result<Vec<PeerView>, OpError> {
        let view = self.pn.view();
        let mut peers: Vec<PeerView> = self
            .ctx
            .client
            .peers()
            .await?
            .into_iter()
            .map(|p| {
                let entry = view.peers.get(&p.peer_id);
                PeerView {
                    peer_id: p.peer_id.to_string(),
                    address: p.address.to_string(),
                    path: path_name(p.relayed).into(),
                    outbound: p.outbound,
                    rtt_ms: p.rtt_us.map(|us| us as f64 / 1000.0),
                    dht_server: p.dht_server,
                    agent: p.agent,
                    registered: entry.is_some(),
                    mode: entry.map(|e| e.mode.to_string()),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.peer_id.cmp(&b.peer_id));
        Ok(peers)
    }

    /// Measures the round trip of a CPNS ping to a peer (`cpns ping PEER`).
    pub async fn ping(&self, peer: PeerId) -> Result<PingView, OpError> {
        let client = &self.ctx.client;
        let nonce = rand::random();
        let start = Instant::now();
        let answer = client
            .request(peer, Protocol::Cpns, Message::Pn(PnMessage::Ping { nonce }))
            .await?;
        let rtt = start.elapsed();
        if answer != Message::Pn(PnMessage::Pong { nonce }) {
            return Err(OpError::Refused(format!(
                "unexpected answer {}",
                answer.name()
            )));
        }
        let (address, relayed) = client
            .peers()
            .await?
            .into_iter()
            .find(|p| p.peer_id == peer)
            .map(|p| (p.address, p.relayed))
            .unwrap_or_else(|| (Multiaddr::empty(), false));
        Ok(PingView {
            peer_id: peer.to_string(),
            rtt_ms: rtt.as_secs_f64() * 1000.0,
            direct: !relayed,
            path: path_name(relayed).into(),
            address: address.to_string(),
        })
    }

    /// The trace (`cpns trace`).
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.ctx.trace.events()
    }

    /// Short labels for the trace's participants (this node, its gateway, `cpns-auth`).
    pub fn trace_labels(&self) -> std::collections::BTreeMap<String, String> {
        let view = self.pn.view();
        let mut labels = std::collections::BTreeMap::new();
        if let Some(e) = &view.enrolment {
            labels.insert(e.server.to_string(), "cpns-auth".to_string());
        }
        let me_label = if view.mode.is_gateway() {
            "this node (gateway)"
        } else {
            "this node (PNE)"
        };
        if let Some(gw) = view.my_gateway() {
            labels.insert(gw.to_string(), "gateway".to_string());
        }
        for (peer, entry) in view.peers.iter() {
            labels
                .entry(peer.to_string())
                .or_insert_with(|| format!("{} of {} ({})", entry.device, entry.user, entry.mode));
        }
        labels.insert(self.ctx.peer_id.to_string(), me_label.to_string());
        labels
    }

    /// Enrols this node with a code from `cpns-auth enrol create` (`cpns up --code`), stores
    /// the credential and EUKey in the data dir, and, for a gateway, sets its PN up.
    pub async fn up(&self, code: &str) -> Result<StatusView, OpError> {
        let ctx = &self.ctx;
        let enrolment =
            crate::enrolment::enrol(&ctx.client, &ctx.identity, code, &ctx.config.device_name)
                .await
                .map_err(|e| OpError::Refused(format!("enrolment failed: {e}")))?;
        self.pn.enrolled(enrolment).await?;
        let view = self.pn.view();
        if view.mode_setting.is_gateway() && view.pn.is_none() {
            self.pn.establish().await?;
        }
        self.status().await
    }

    /// Leaves the PN (G.1 step 9: the gateway de-registers this node) (`cpns down`).
    pub async fn down(&self) -> Result<(), OpError> {
        self.pn.leave().await
    }

    /// Pairs with a device (B.1 steps 1-7, then 18-26 or 8-17) (`cpns pair ADDR`).
    pub async fn pair(&self, addr: Multiaddr) -> Result<PairOutcome, OpError> {
        self.pn.pair(addr).await
    }

    /// Pairs with a device named by an address (`…/p2p/PEERID`) or a pairing code
    /// (`cpnspair1-…`); tries the code's addresses in turn.
    pub async fn pair_with(&self, target: &str) -> Result<PairOutcome, OpError> {
        let addrs = crate::pn::code::resolve(target)?;
        // A code names LAN, public and relayed addresses; from another household only some
        // answer, and a LAN address of another network may take the whole dial timeout to
        // fail. Dial them all at once first; pairing then finds the connection up.
        if let Some(peer) = addrs.first().and_then(cpns_overlay::peer_of) {
            let _ = self.ctx.client.dial_peer(peer, addrs.clone()).await;
        }
        let mut last = None;
        for addr in addrs {
            match self.pn.pair(addr).await {
                Ok(o) => return Ok(o),
                Err(e @ OpError::Unavailable(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| OpError::BadRequest("nothing to dial".into())))
    }

    /// This node's pairing code (`cpns pairing-code`): its PeerId, then its confirmed public
    /// addresses, its relayed ones and its listen addresses (a device in another household
    /// can use only the first two kinds).
    pub async fn pairing_code(&self) -> Result<String, OpError> {
        let nat = self.ctx.client.nat_status().await?;
        let mut addrs = nat.public_addrs;
        addrs.extend(nat.relayed_addrs);
        for a in self.ctx.client.listen_addrs().await? {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        crate::pn::code::encode(self.ctx.peer_id, &addrs)
    }

    /// Invitations to join a PN that wait for the owner's answer (`cpns pn invitations`).
    pub fn pn_invitations(&self) -> Vec<Invitation> {
        self.pn.view().invitations.to_vec()
    }

    /// Accepts an invitation: joins that PN (`cpns pn accept ID`); returns the PN id.
    pub async fn pn_accept(&self, id: &str) -> Result<String, OpError> {
        self.pn.accept(id).await
    }

    /// Declines an invitation (`cpns pn decline ID`).
    pub async fn pn_decline(&self, id: &str) -> Result<(), OpError> {
        self.pn.decline(id).await
    }

    /// Waits until this node is in a PN; returns its id, or `None` after `limit`.
    pub async fn wait_for_pn(&self, limit: Duration) -> Option<String> {
        let mut views = self.pn.watch();
        let waited = tokio::time::timeout(limit, views.wait_for(|v| v.pn.is_some())).await;
        match waited {
            Ok(Ok(v)) => v.pn_id().map(str::to_owned),
            _ => None,
        }
    }

    /// Waits until `check` holds on the status view, re-checking on every PN change, for at
    /// most `limit`. Returns the status that met it, or `Unavailable` naming the last status
    /// seen when `limit` passed (or the node stopped) first: before, it returned that last
    /// status as if the wait had succeeded, so a caller's `wait_until(..)?` could not fail.
    pub async fn wait_until(
        &self,
        limit: Duration,
        check: impl Fn(&StatusView) -> bool,
    ) -> Result<StatusView, OpError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.pn.versions();
        loop {
            let s = self.status().await?;
            if check(&s) {
                return Ok(s);
            }
            let wait = tokio::time::timeout_at(deadline, changes.changed());
            // Also re-check every 200 ms: some facts (connections) change without a PN event.
            let stopped = match tokio::time::timeout(Duration::from_millis(200), wait).await {
                Ok(Ok(Ok(()))) | Err(_) => false,
                Ok(Ok(Err(_))) => true,
                Ok(Err(_)) => false,
            };
            if stopped || tokio::time::Instant::now() >= deadline {
                let s = self.status().await?;
                if check(&s) {
                    return Ok(s);
                }
                return Err(OpError::Unavailable(format!(
                    "the node's status did not get there within {limit:?}{}: PN {}, gateway {}, {} members, mode {}",
                    if stopped { " (the node stopped)" } else { "" },
                    s.pn_id.as_deref().unwrap_or("none"),
                    s.gateway.as_deref().unwrap_or("none"),
                    s.members.len(),
                    s.mode,
                )));
            }
        }
    }

    /// Sets this node's own status (`cpns status set online|busy|offline`); reported to the
    /// gateway and to subscribers at once.
    pub async fn set_status(&self, status: Status) -> Result<(), OpError> {
        self.pn.set_status(status).await
    }

    /// Asks for a peer's status (`cpns status of PEER`).
    pub async fn status_of(&self, peer: PeerId) -> Result<(Status, Option<u8>, PeerId), OpError> {
        status::query(&self.ctx, &self.pn, peer).await
    }

    /// Subscribes to a peer's status (`cpns status watch PEER`); notifications arrive in
    /// [`Handle::notifications`]. Returns where the subscription was made.
    pub async fn subscribe_status(
        &self,
        peer: PeerId,
        policy: StatusPolicy,
    ) -> Result<PeerId, OpError> {
        status::subscribe(&self.ctx, &self.pn, peer, policy).await
    }

    /// Status notifications received, oldest first.
    pub fn notifications(&self) -> Vec<Notification> {
        self.pn.view().notifications.iter().cloned().collect()
    }

    /// A stream of status notifications as they arrive.
    pub fn watch_notifications(&self) -> tokio::sync::broadcast::Receiver<Notification> {
        self.pn.notifications()
    }

    /// Seals bytes under the current PN key (for members: what another member can open).
    pub fn pn_seal(&self, plaintext: &[u8]) -> Result<GroupSealed, OpError> {
        use cpns_directory::KeyRing as _;
        let view = self.pn.view();
        let pn_id = view
            .pn_id()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        let key = self
            .ctx
            .keyring
            .current(&pn_group(pn_id))
            .ok_or_else(|| OpError::Conflict("no PN key held".into()))?;
        Ok(key.seal(&self.ctx.peer_id, plaintext))
    }

    /// Opens bytes sealed under the PN key (of its epoch, if still held).
    pub fn pn_open(&self, sealed: &GroupSealed) -> Result<Vec<u8>, OpError> {
        use cpns_directory::KeyRing as _;
        let key = self
            .ctx
            .keyring
            .by_epoch(&sealed.group, sealed.epoch)
            .ok_or_else(|| {
                OpError::Refused(format!("no key of {} epoch {}", sealed.group, sealed.epoch))
            })?;
        key.open(sealed)
            .map_err(|e| OpError::Refused(e.to_string()))
    }

    /// The PN key epoch this node holds.
    pub fn pn_epoch(&self) -> Option<u64> {
        use cpns_directory::KeyRing as _;
        let view = self.pn.view();
        let pn_id = view.pn_id()?;
        self.ctx
            .keyring
            .current(&pn_group(pn_id))
            .map(|k| k.epoch())
    }

    /// A PN admin invites a user or an entity into the PN (`cpns pn invite`).
    pub async fn pn_invite(&self, invitee: Invitee) -> Result<(), OpError> {
        self.pn.invite(invitee).await
    }

    /// A PN admin expels a member (`cpns pn expel PEER`); the PN key moves to a new epoch.
    pub async fn pn_expel(&self, member: PeerId) -> Result<u64, OpError> {
        self.pn.expel(member).await
    }

    /// Asks `cpns-auth` to make this node an admin of its PN (`cpns pn admin request`): granted
    /// at once to a device of the owner user, else pending an admin's approval.
    pub async fn pn_admin_request(&self) -> Result<cpns_overlay::PnAdminInfo, OpError> {
        self.pn.admin(crate::pn::AdminOp::Request).await
    }

    /// An admin approves a member's admin request (`cpns pn admin approve PEER`).
    pub async fn pn_admin_approve(
        &self,
        member: PeerId,
    ) -> Result<cpns_overlay::PnAdminInfo, OpError> {
        self.pn.admin(crate::pn::AdminOp::Approve(member)).await
    }

    /// An admin changes an Adminee's settings (`cpns pn admin set PEER KEY=VALUE…`).
    pub async fn pn_admin_set(
        &self,
        member: PeerId,
        settings: cpns_overlay::AdmineeSettings,
    ) -> Result<cpns_overlay::PnAdminInfo, OpError> {
        self.pn
            .admin(crate::pn::AdminOp::Set(member, Box::new(settings)))
            .await
    }

    /// The PN's admins, pending requests and Adminee settings, from `cpns-auth`
    /// (`cpns pn admin list`).
    pub async fn pn_admins(&self) -> Result<cpns_overlay::PnAdminInfo, OpError> {
        self.pn.admin(crate::pn::AdminOp::List).await
    }

    /// The PN's admin information as this node last heard it (no server round trip).
    pub fn pn_admin_known(&self) -> Option<cpns_overlay::PnAdminInfo> {
        self.pn.view().admin.as_deref().cloned()
    }

    /// Releases this gateway's PN (`cpns pn release`).
    pub async fn pn_release(&self) -> Result<String, OpError> {
        self.pn.release().await
    }

    /// The PN Inventory of this node's PN (from its gateway), or of a remote PN by id.
    pub async fn pn_inventory(
        &self,
        pn_id: Option<String>,
    ) -> Result<cpns_overlay::PnInventorySummary, OpError> {
        let view = self.pn.view();
        let mine = view.pn_id().map(str::to_owned);
        let wanted = pn_id
            .or(mine.clone())
            .ok_or_else(|| OpError::BadRequest("not in a PN: name one".into()))?;
        if Some(&wanted) == mine.as_ref()
            && let Some(pn) = &view.pn
        {
            if view.is_pn_gateway() {
                return Ok(crate::pn::summary_of(pn, true, crate::now()));
            }
            let answer = self
                .ctx
                .client
                .request(
                    pn.membership.gateway,
                    Protocol::Cpns,
                    Message::Pn(PnMessage::InventoryRequest {
                        pn_id: wanted.clone(),
                    }),
                )
                .await?;
            if let Message::Pn(PnMessage::InventoryResponse(summary)) = answer {
                return Ok(summary);
            }
        }
        // A remote PN: its gateway's signed summary in the DHT (5.6.9 "PN Inventory of ...
        // remote PN").
        let directory = self.services.directory()?;
        directory
            .fetch_pn_summary(&wanted)
            .await
            .map_err(|e| OpError::Unavailable(format!("looking the PN up: {e}")))?
            .ok_or_else(|| OpError::NotFound(format!("no inventory known for {wanted}")))
    }

    /// The gateway hands its role to a member (`cpns pn handoff PEER`, 5.6.9): the member takes
    /// it over with the server's agreement, every member follows, the key epoch continues.
    pub async fn pn_hand_off(&self, member: PeerId) -> Result<(), OpError> {
        self.pn.hand_off(member).await
    }

    /// Switches the current PNE to another PNE (`cpns pn switch --to PEER [--session ID]`,
    /// 5.6.9): the sessions this node receives (or one) move to `to`, another PNE of the same
    /// user in the same PN, which continues them from where they stopped.
    pub async fn pn_switch(
        &self,
        to: PeerId,
        session: Option<&str>,
    ) -> Result<cpns_api::SwitchView, OpError> {
        self.delivery.content().switch_pne(to, session).await
    }

    /// An admin consents to merging this PN with `with` (`cpns pn merge --with PN_ID`, 5.6.9):
    /// once an admin of the other PN consented too, cpns-auth merges them and the members of
    /// the PN that consented last join the other's gateway.
    pub async fn pn_merge(&self, with: &str) -> Result<cpns_api::MergeView, OpError> {
        self.pn.merge(with.to_owned()).await
    }

    /// An admin splits `members` off into a new PN (`cpns pn split PEER…`, 5.6.9) with its
    /// own gateway, elected among them by the rule, and its own key; this PN's key rotates.
    pub async fn pn_split(&self, members: Vec<PeerId>) -> Result<cpns_api::SplitView, OpError> {
        self.pn.split(members).await
    }

    /// Capability matching (`cpns pn match SERVICE`, 5.6.9): which members can consume the
    /// service with their current capabilities, and which member best offers it, from the PN
    /// Inventory (a PNE reads its gateway's).
    pub async fn pn_match(&self, service_id: &str) -> Result<cpns_api::MatchView, OpError> {
        let inventory = self.pn_inventory(None).await?;
        let service = self.services.get(service_id).await?.description;
        let mut consumers = Vec::new();
        let mut unable = Vec::new();
        let mut offerers = Vec::new();
        for m in &inventory.members {
            let detail = inventory.details.iter().find(|d| d.peer_id == m.peer_id);
            if detail.is_some_and(|d| d.services.iter().any(|s| s == service_id)) {
                offerers.push(m.peer_id);
            }
            match detail.and_then(|d| d.capabilities.as_ref()) {
                Some(caps) => match service.requirements.check(caps) {
                    Ok(()) => consumers.push(m.peer_id.to_string()),
                    Err(e) => unable.push(cpns_api::UnableView {
                        peer_id: m.peer_id.to_string(),
                        reason: e.to_string(),
                    }),
                },
                None => unable.push(cpns_api::UnableView {
                    peer_id: m.peer_id.to_string(),
                    reason: "capabilities unknown".into(),
                }),
            }
        }
        // Best placed to deliver: the election's facts without the owner's preference or the
        // credential (any member may offer a service).
        let best_offerer = offerers
            .iter()
            .filter_map(|p| {
                let caps = inventory
                    .details
                    .iter()
                    .find(|d| d.peer_id == *p)?
                    .capabilities
                    .as_ref()?;
                let mut c = cpns_overlay::Candidacy::of(caps, true);
                c.preference = cpns_overlay::GatewayPreference::Auto;
                Some((*p, c))
            })
            .collect::<Vec<_>>();
        let best_offerer = crate::pn::election::rank(&best_offerer)
            .first()
            .map(|p| p.to_string());
        Ok(cpns_api::MatchView {
            service_id: service_id.to_string(),
            consumers,
            unable,
            offerers: offerers.iter().map(|p| p.to_string()).collect(),
            best_offerer,
        })
    }

    /// Renews this node's entity credential with `cpns-auth` now (`cpns renew`).
    pub async fn renew_credential(&self) -> Result<crate::renewal::CredentialView, OpError> {
        self.renewal.renew().await
    }

    /// The current mode and the mode setting (`cpns mode get`).
    pub fn mode(&self) -> (String, String) {
        let v = self.pn.view();
        (v.mode.to_string(), v.mode_setting.to_string())
    }

    /// Changes the mode setting at run time (`cpns mode set pne|gateway|auto`, 5.6.9
    /// "request to change its Mode"). Becoming a gateway sets a PN up with `cpns-auth`, or,
    /// on a PNE of a PN, takes that PN's gateway role over (a planned gateway switch); a
    /// gateway that runs a PN cannot become a plain PNE until the PN is released.
    pub async fn set_mode(&self, setting: crate::config::ModeSetting) -> Result<(), OpError> {
        self.pn.set_mode(setting).await
    }

    /// The node's metrics in Prometheus text format.
    pub async fn metrics_text(&self) -> String {
        let members = self
            .pn
            .view()
            .pn
            .as_ref()
            .map(|p| p.members.len())
            .unwrap_or(0);
        crate::metrics::render(&self.ctx.metrics, &self.ctx.client, members).await
    }

    /// Changes capability overrides at run time (`cpns caps set`): for devices that cannot
    /// report a value themselves, and for labs that simulate a battery running down. A
    /// material change is reported at once (to the gateway, to subscribers).
    pub async fn set_capabilities(
        &self,
        patch: crate::config::CapabilitiesConfig,
    ) -> Result<cpns_overlay::Capabilities, OpError> {
        let mut merged = (*self.pn.view().overrides).clone();
        macro_rules! take {
            ($($f:ident),*) => { $( if patch.$f.is_some() { merged.$f = patch.$f.clone(); } )* };
        }
        take!(
            device_type,
            screen,
            battery_capacity_mwh,
            power,
            battery_percent,
            wan,
            memory_bytes,
            free_memory_bytes,
            cpu_cores,
            chipsets
        );
        let mut check = (*self.ctx.config).clone();
        check.capabilities = merged.clone();
        check
            .validate()
            .map_err(|e| OpError::BadRequest(e.to_string()))?;
        self.pn.set_overrides(merged).await?;
        Ok(self.pn.view().caps.clone())
    }

    /// This node's current Device Capabilities (5.6.1), as last read.
    pub fn capabilities(&self) -> cpns_overlay::Capabilities {
        self.pn.view().caps.clone()
    }

    /// G.1 step 0: publishes a service description (`cpns services publish`). With `content`,
    /// this node serves that file as the service's content (`cpns-delivery` endpoint).
    pub async fn publish(
        &self,
        draft: cpns_directory::ServiceDraft,
        content: Option<std::path::PathBuf>,
    ) -> Result<cpns_directory::ServiceDescription, OpError> {
        let source = content.map(|path| crate::delivery::ContentSource {
            origin: crate::delivery::Origin::File(path),
            variants: Vec::new(),
        });
        self.delivery.publish(draft, source).await
    }

    /// Removes one of this node's services (`cpns services unpublish ID`).
    pub async fn unpublish(&self, id: &str) -> Result<(), OpError> {
        self.services.unpublish(id).await?;
        self.delivery.forget_content(id).await;
        Ok(())
    }

    /// This node's own services (`cpns services list`).
    pub fn services(&self) -> Result<Vec<cpns_directory::ServiceDescription>, OpError> {
        Ok(self.services.directory()?.local_services())
    }

    /// G.1 step 4: discovery by keywords (`cpns services find K [K2…]`).
    pub async fn find(
        &self,
        query: &cpns_directory::Query,
    ) -> Result<cpns_directory::Discovery, OpError> {
        self.services.find(query).await
    }

    /// [`Self::find`], also sending each service to `each` as soon as it is verified, so that
    /// the first results are in hand before the slowest provider has answered
    /// (`cpns services find --stream`, `GET /v1/services/find?stream=true`).
    pub async fn find_each(
        &self,
        query: &cpns_directory::Query,
        each: tokio::sync::mpsc::Sender<cpns_directory::Found>,
    ) -> Result<cpns_directory::Discovery, OpError> {
        self.services.find_each(query, Some(each)).await
    }

    /// A service by id (`cpns services show ID`).
    pub async fn service(&self, id: &str) -> Result<cpns_directory::Found, OpError> {
        self.services.get(id).await
    }

    /// Subscribes to advertisements of services with `keyword` in this node's PN.
    pub async fn watch_services(&self, keyword: &str) -> Result<usize, OpError> {
        self.services.watch(keyword).await
    }

    /// Advertisements received so far.
    pub fn advertisements(&self) -> Vec<cpns_directory::ServiceDescription> {
        self.services.advertisements()
    }

    /// The visibility a service gets when none is asked for: this node's PN, else public.
    pub fn default_visibility(&self) -> cpns_directory::Visibility {
        self.services.default_visibility()
    }

    /// G.1 steps 5-8: invoke a service, get its content (pull or push), report usage
    /// (`cpns content fetch ID`).
    pub async fn fetch(
        &self,
        service_id: &str,
        mode: cpns_overlay::DeliveryMode,
    ) -> Result<crate::delivery::FetchOutcome, OpError> {
        self.delivery.fetch(service_id, mode).await
    }

    /// Service/Content Delivery beyond one fetch (5.6.7): several services, sessions and their
    /// control, pushes and the inbox, feeds (`cpns content …`).
    pub fn content(&self) -> crate::delivery::Content {
        self.delivery.content()
    }

    /// Pushes a file to an entity (`cpns content send PEER FILE`); returns the bytes sent.
    pub async fn send_file(&self, peer: PeerId, path: &std::path::Path) -> Result<u64, OpError> {
        self.delivery.send_file(peer, path).await
    }

    /// Files received from PN members, with their sizes.
    pub async fn inbox(&self) -> Vec<(String, u64)> {
        self.delivery.inbox().await
    }

    /// Services or names never to report (`cpns usage prefs`).
    pub fn usage_never_report(&self) -> Vec<String> {
        self.usage.never_report().into_iter().collect()
    }

    /// Replaces the stored "never report" list (the config file's entries always apply).
    pub async fn set_usage_never_report(&self, list: Vec<String>) -> Result<(), OpError> {
        self.usage.set_never_report(list).await
    }

    /// Usage reports waiting to be sent.
    pub fn usage_queued(&self) -> Vec<cpns_overlay::UsageReport> {
        self.usage.queued()
    }

    /// Sends queued usage reports now; returns how many were acknowledged.
    pub async fn flush_usage(&self) -> usize {
        self.usage.flush().await
    }

    /// Creates a Service Group (`cpns groups create`).
    pub async fn group_create(&self, name: &str) -> Result<cpns_overlay::GroupInfo, OpError> {
        self.groups.create(name).await
    }

    /// The groups this node belongs to or is invited to.
    pub async fn groups(&self) -> Result<Vec<cpns_overlay::GroupInfo>, OpError> {
        self.groups.list().await
    }

    /// One group's record.
    pub async fn group(
        &self,
        group: cpns_keys::GroupId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        self.groups.show(group).await
    }

    /// Deletes a group (admins only).
    pub async fn group_delete(&self, group: cpns_keys::GroupId) -> Result<(), OpError> {
        self.groups.delete(group).await
    }

    /// Invites an entity into a group (admins only).
    pub async fn group_invite(
        &self,
        group: cpns_keys::GroupId,
        peer: PeerId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        self.groups.invite(group, peer).await
    }

    /// Expels a member from a group (admins only).
    pub async fn group_expel(
        &self,
        group: cpns_keys::GroupId,
        peer: PeerId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        self.groups.expel(group, peer).await
    }

    /// Joins a group this node was invited to.
    pub async fn group_join(
        &self,
        group: cpns_keys::GroupId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        self.groups.join(group).await
    }

    /// Leaves a group.
    pub async fn group_leave(&self, group: cpns_keys::GroupId) -> Result<(), OpError> {
        self.groups.leave(group).await
    }

    /// Pulls this node's current keys; returns how many were new.
    pub async fn pull_keys(&self) -> Result<usize, OpError> {
        self.groups.pull_keys().await
    }

    /// The current epoch of a group key this node holds.
    pub fn group_epoch(&self, group: &cpns_keys::GroupId) -> Option<u64> {
        use cpns_directory::KeyRing as _;
        self.ctx.keyring.current(group).map(|k| k.epoch())
    }

    /// Sends a raw CPNS request from this node (tests of the authorisation table: a real
    /// member's identity sending any request).
    #[cfg(feature = "test-utils")]
    pub async fn raw_request(
        &self,
        peer: PeerId,
        message: Message,
    ) -> Result<Message, cpns_overlay::Error> {
        self.ctx.client.request(peer, Protocol::Cpns, message).await
    }

    /// Tells the gateway this node goes Offline (before shutdown).
    pub(crate) async fn announce_offline(&self) {
        status::announce_offline(&self.ctx, &self.pn).await;
    }

    /// The UPnP/DLNA devices this gateway's proxy speaks for (`cpns proxy devices`, 5.6.10).
    pub fn proxy_devices(&self) -> Vec<cpns_api::ProxiedDeviceView> {
        self.proxy.devices()
    }

    /// Zone-based service (Appendix F): the settings, the zone's members, the zones met
    /// (`cpns zone show`).
    pub async fn zone(&self) -> Result<cpns_api::ZoneView, OpError> {
        self.zone.view().await
    }

    /// Sets the zone settings (`cpns zone set`), or goes back to the config file's (`None`).
    pub async fn set_zone(&self, settings: Option<cpns_api::ZoneSettings>) -> Result<(), OpError> {
        self.zone.set(settings.map(crate::zone::settings_of)).await
    }

    /// Plays a PN service on a MediaRenderer of the gateway's LAN (`cpns proxy play`): at the
    /// gateway itself, or asked of this PNE's gateway.
    pub async fn proxy_play(
        &self,
        device: &str,
        service_id: &str,
    ) -> Result<cpns_api::PlayView, OpError> {
        let view = self.pn.view();
        if view.is_pn_gateway() {
            return self
                .proxy
                .play(&self.ctx, &self.delivery, device, service_id)
                .await;
        }
        let gateway = view
            .my_gateway()
            .ok_or_else(|| OpError::Conflict("not in a PN: no gateway to play through".into()))?;
        let answer = self
            .ctx
            .client
            .request(
                gateway,
                Protocol::Cpns,
                Message::Proxy(cpns_overlay::ProxyMessage::Play {
                    device: device.to_string(),
                    service_id: service_id.to_string(),
                }),
            )
            .await?;
        match answer {
            Message::Proxy(cpns_overlay::ProxyMessage::Playing {
                device,
                service_id,
                url,
                state,
            }) => Ok(cpns_api::PlayView {
                device,
                service_id,
                url,
                state,
                served_bytes: 0,
            }),
            other => Err(OpError::Refused(format!(
                "unexpected answer {}",
                other.name()
            ))),
        }
    }

    /// The non-CPNS devices this node's PN's gateway speaks for (the PN Inventory's proxied
    /// PNEs): this gateway's own, or asked of the gateway (none for another PN).
    pub async fn proxied_in_pn(
        &self,
        pn_id: &str,
    ) -> Result<Vec<cpns_api::ProxiedPneView>, OpError> {
        let view = self.pn.view();
        if view.pn_id() != Some(pn_id) {
            return Ok(Vec::new());
        }
        if view.is_pn_gateway() {
            return Ok(proxied_views(self.proxy.proxied_pnes(), &self.ctx.peer_id));
        }
        let Some(gateway) = view.my_gateway() else {
            return Ok(Vec::new());
        };
        match self
            .ctx
            .client
            .request(
                gateway,
                Protocol::Cpns,
                Message::Proxy(cpns_overlay::ProxyMessage::Devices),
            )
            .await?
        {
            Message::Proxy(cpns_overlay::ProxyMessage::DeviceList { devices }) => {
                Ok(proxied_views(
                    devices
                        .into_iter()
                        .take(cpns_overlay::MAX_PROXIED)
                        .collect(),
                    &gateway,
                ))
            }
            other => Err(OpError::Refused(format!(
                "unexpected answer {}",
                other.name()
            ))),
        }
    }

    /// One proxied device by id or UDN (`cpns proxy show ID`).
    pub fn proxy_device(&self, id: &str) -> Result<cpns_api::ProxiedDeviceView, OpError> {
        self.proxy.device(id)
    }
}

/// How `cpns peers` and `cpns ping` name a peer's path.
fn path_name(relayed: bool) -> &'static str {
    if relayed { "relayed" } else { "direct" }
}

/// The API's view of proxied PNEs, with the gateway that speaks for them.
fn proxied_views(
    devices: Vec<cpns_overlay::ProxiedPne>,
    gateway: &PeerId,
) -> Vec<cpns_api::ProxiedPneView> {
    devices
        .into_iter()
        .map(|d| cpns_api::ProxiedPneView {
            id: crate::trace::clean_text(&d.id, 64),
            name: crate::trace::clean_text(&d.name, 128),
            device_type: crate::trace::clean_text(&d.device_type, 128),
            functions: d
                .functions
                .iter()
                .take(8)
                .map(|f| crate::trace::clean_text(f, 32))
                .collect(),
            services: d.services,
            gateway: gateway.to_string(),
        })
        .collect()
}
