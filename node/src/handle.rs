//! The node's operations, callable in-process (tests, embedders) and behind the local HTTP
//! API. Each method is one API endpoint.

use std::sync::Arc;
use std::time::{Duration, Instant};

use cpns_keys::GroupSealed;
use cpns_overlay::{
    AuthMessage, Invitee, KadMode, Message, Multiaddr, PnMessage, Protocol, Status, StatusPolicy,
};
use libp2p::PeerId;

use crate::auth_link::{self, pn_group};
use crate::error::OpError;
use crate::pn::{gateway, member, pairing};
use crate::shared::Shared;
use crate::status::{self, Notification};
use crate::trace::TraceEvent;
use crate::views::{AuthServerView, PeerView, PingView, StatusView};

/// A cheap, cloneable handle to a running node.
#[derive(Clone)]
pub struct Handle {
    shared: Arc<Shared>,
}

impl Handle {
    pub(crate) fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// This node's PeerId.
    pub fn peer_id(&self) -> PeerId {
        self.shared.peer_id
    }

    /// The node's status (`cpns status`).
    pub async fn status(&self) -> Result<StatusView, OpError> {
        let s = &self.shared;
        let listen_addrs = s.client.listen_addrs().await?;
        let routing_table = s.client.routing_table_size().await?;
        let peers = s.client.peers().await?;
        let dht_mode = match s.client.kad_mode().await? {
            KadMode::Server => "server",
            KadMode::Client => "client",
        };
        let enrolment = s.enrolment().ok();
        let auth_server = enrolment.as_ref().map(|e| AuthServerView {
            peer_id: e.server.to_string(),
            addrs: e.server_addrs.iter().map(|a| a.to_string()).collect(),
            connected: peers.iter().any(|p| p.peer_id == e.server),
            authenticated: auth_link::has_session(s),
        });
        let state = s.state();
        let (pn_id, gateway, epoch, members) = match &state.pn {
            Some(pn) => (
                Some(pn.membership.pn_id.clone()),
                Some(pn.membership.gateway.to_string()),
                Some(pn.membership.epoch),
                pn.members.values().map(crate::views::member).collect(),
            ),
            None => (None, None, None, Vec::new()),
        };
        Ok(StatusView {
            peer_id: s.peer_id.to_string(),
            listen_addrs: listen_addrs.iter().map(|a| a.to_string()).collect(),
            mode: state.mode.to_string(),
            mode_setting: state.mode_setting.to_string(),
            pn_id,
            gateway,
            members,
            enrolled: enrolment.is_some(),
            user: enrolment.as_ref().map(|e| e.credential.body.user.clone()),
            device: enrolment
                .as_ref()
                .map(|e| e.credential.body.device.clone())
                .unwrap_or_else(|| s.config.device_name.clone()),
            status: state.status.to_string(),
            epoch,
            auth_server,
            credential: crate::renewal::view(s),
            dht_mode: dht_mode.into(),
            routing_table,
            connected_peers: peers.len(),
            uptime_secs: s.started.elapsed().as_secs(),
            version: env!("CARGO_PKG_VERSION").into(),
        })
    }

    /// The connected peers (`cpns peers`).
    pub async fn peers(&self) -> Result<Vec<PeerView>, OpError> {
        let s = &self.shared;
        let mut peers: Vec<PeerView> = s
            .client
            .peers()
            .await?
            .into_iter()
            .map(|p| {
                let entry = s.peer_entry(&p.peer_id);
                PeerView {
                    peer_id: p.peer_id.to_string(),
                    address: p.address.to_string(),
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
        let s = &self.shared;
        let nonce = rand::random();
        let start = Instant::now();
        let answer = s
            .client
            .request(peer, Protocol::Cpns, Message::Pn(PnMessage::Ping { nonce }))
            .await?;
        let rtt = start.elapsed();
        if answer != Message::Pn(PnMessage::Pong { nonce }) {
            return Err(OpError::Refused(format!(
                "unexpected answer {}",
                answer.name()
            )));
        }
        let address = s
            .client
            .peers()
            .await?
            .into_iter()
            .find(|p| p.peer_id == peer)
            .map(|p| p.address)
            .unwrap_or_else(Multiaddr::empty);
        let direct = !address
            .iter()
            .any(|p| matches!(p, libp2p::multiaddr::Protocol::P2pCircuit));
        Ok(PingView {
            peer_id: peer.to_string(),
            rtt_ms: rtt.as_secs_f64() * 1000.0,
            direct,
            address: address.to_string(),
        })
    }

    /// The trace (`cpns trace`).
    pub fn trace(&self) -> Vec<TraceEvent> {
        self.shared.trace.events()
    }

    /// Short labels for the trace's participants (this node, its gateway, `cpns-auth`).
    pub fn trace_labels(&self) -> std::collections::BTreeMap<String, String> {
        let s = &self.shared;
        let mut labels = std::collections::BTreeMap::new();
        if let Ok(e) = s.enrolment() {
            labels.insert(e.server.to_string(), "cpns-auth".to_string());
        }
        let state = s.state();
        let me_label = if state.mode.is_gateway() {
            "this node (gateway)"
        } else {
            "this node (PNE)"
        };
        if let Some(pn) = &state.pn
            && pn.membership.gateway != s.peer_id
        {
            labels.insert(pn.membership.gateway.to_string(), "gateway".to_string());
        }
        for (peer, entry) in &state.peers {
            labels
                .entry(peer.to_string())
                .or_insert_with(|| format!("{} of {} ({})", entry.device, entry.user, entry.mode));
        }
        labels.insert(s.peer_id.to_string(), me_label.to_string());
        labels
    }

    /// Enrols this node with a code from `cpns-auth enrol create` (`cpns up --code`), stores
    /// the credential and EUKey in the data dir, and, for a gateway, sets its PN up.
    pub async fn up(&self, code: &str) -> Result<StatusView, OpError> {
        let s = &self.shared;
        let enrolment =
            crate::enrolment::enrol(&s.client, &s.identity, code, &s.config.device_name)
                .await
                .map_err(|e| OpError::Refused(format!("enrolment failed: {e}")))?;
        enrolment
            .save(&s.config.data_dir)
            .map_err(|e| OpError::Internal(format!("saving the enrolment: {e}")))?;
        s.set_enrolment(enrolment);
        crate::services::start(s)?;
        crate::lan::on_enrolled(s);
        let wants_gateway = s.state().mode_setting == crate::config::ModeSetting::Gateway;
        if wants_gateway && s.state().pn.is_none() {
            gateway::take_gateway_role(s).await;
            gateway::establish(s).await?;
        }
        self.status().await
    }

    /// Leaves the PN (G.1 step 9: the gateway de-registers this node) (`cpns down`).
    pub async fn down(&self) -> Result<(), OpError> {
        member::leave(&self.shared).await
    }

    /// Pairs with a device (B.1 steps 1-7, then 18-26 or 8-17) (`cpns pair ADDR`).
    pub async fn pair(&self, addr: Multiaddr) -> Result<pairing::PairOutcome, OpError> {
        pairing::pair(&self.shared, addr).await
    }

    /// Pairs with a device named by an address (`…/p2p/PEERID`) or a pairing code
    /// (`cpnspair1-…`); tries the code's addresses in turn.
    pub async fn pair_with(&self, target: &str) -> Result<pairing::PairOutcome, OpError> {
        let mut last = None;
        for addr in crate::pn::code::resolve(target)? {
            match pairing::pair(&self.shared, addr).await {
                Ok(o) => return Ok(o),
                Err(e @ OpError::Unavailable(_)) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| OpError::BadRequest("nothing to dial".into())))
    }

    /// This node's pairing code (`cpns pairing-code`): its PeerId and listen addresses.
    pub async fn pairing_code(&self) -> Result<String, OpError> {
        let addrs = self.shared.client.listen_addrs().await?;
        crate::pn::code::encode(self.shared.peer_id, &addrs)
    }

    /// Waits until this node is in a PN; returns its id, or `None` after `limit`.
    pub async fn wait_for_pn(&self, limit: Duration) -> Option<String> {
        gateway::wait_ready(&self.shared, limit).await
    }

    /// Waits until `check` holds on the status view, re-checking on every PN change, for at
    /// most `limit`. Returns the last status seen.
    pub async fn wait_until(
        &self,
        limit: Duration,
        check: impl Fn(&StatusView) -> bool,
    ) -> Result<StatusView, OpError> {
        let deadline = tokio::time::Instant::now() + limit;
        let mut changes = self.shared.pn_changed.subscribe();
        loop {
            let s = self.status().await?;
            if check(&s) {
                return Ok(s);
            }
            let wait = tokio::time::timeout_at(deadline, changes.changed());
            // Also re-check every 200 ms: some facts (connections) change without a PN event.
            match tokio::time::timeout(Duration::from_millis(200), wait).await {
                Ok(Ok(Ok(()))) | Err(_) => {}
                Ok(Ok(Err(_))) => return Ok(s),
                Ok(Err(_)) => return self.status().await,
            }
            if tokio::time::Instant::now() >= deadline {
                return self.status().await;
            }
        }
    }

    /// Sets this node's own status (`cpns status set online|busy|offline`); reported to the
    /// gateway and to subscribers at once.
    pub async fn set_status(&self, status: Status) -> Result<(), OpError> {
        status::set_own(&self.shared, status).await
    }

    /// Asks for a peer's status (`cpns status of PEER`).
    pub async fn status_of(&self, peer: PeerId) -> Result<(Status, Option<u8>, PeerId), OpError> {
        status::query(&self.shared, peer).await
    }

    /// Subscribes to a peer's status (`cpns status watch PEER`); notifications arrive in
    /// [`Handle::notifications`]. Returns where the subscription was made.
    pub async fn subscribe_status(
        &self,
        peer: PeerId,
        policy: StatusPolicy,
    ) -> Result<PeerId, OpError> {
        status::subscribe(&self.shared, peer, policy).await
    }

    /// Status notifications received, oldest first.
    pub fn notifications(&self) -> Vec<Notification> {
        self.shared.status.received()
    }

    /// Ticks (the value counts up) at every change of this node's PN: joined or left, members
    /// and their status, gateway, key epoch. The web view pushes its page on it.
    pub fn pn_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.pn_changed.subscribe()
    }

    /// A stream of status notifications as they arrive.
    pub fn watch_notifications(&self) -> tokio::sync::broadcast::Receiver<Notification> {
        self.shared.status.watch()
    }

    /// Seals bytes under the current PN key (for members: what another member can open).
    pub fn pn_seal(&self, plaintext: &[u8]) -> Result<GroupSealed, OpError> {
        use cpns_directory::KeyRing as _;
        let pn_id = self
            .shared
            .pn_id()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        let key = self
            .shared
            .keyring
            .current(&pn_group(&pn_id))
            .ok_or_else(|| OpError::Conflict("no PN key held".into()))?;
        Ok(key.seal(&self.shared.peer_id, plaintext))
    }

    /// Opens bytes sealed under the PN key (of its epoch, if still held).
    pub fn pn_open(&self, sealed: &GroupSealed) -> Result<Vec<u8>, OpError> {
        use cpns_directory::KeyRing as _;
        let key = self
            .shared
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
        let pn_id = self.shared.pn_id()?;
        self.shared
            .keyring
            .current(&pn_group(&pn_id))
            .map(|k| k.epoch())
    }

    /// A PN admin invites a user or an entity into the PN (`cpns pn invite`).
    pub async fn pn_invite(&self, invitee: Invitee) -> Result<(), OpError> {
        let pn_id = self
            .shared
            .pn_id()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        auth_link::request(&self.shared, AuthMessage::PnInvite { pn_id, invitee }).await?;
        Ok(())
    }

    /// A PN admin expels a member (`cpns pn expel PEER`); the PN key moves to a new epoch.
    pub async fn pn_expel(&self, member: PeerId) -> Result<u64, OpError> {
        let s = &self.shared;
        let pn_id = s
            .pn_id()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        let answer = auth_link::request(
            s,
            AuthMessage::PnExpel {
                pn_id: pn_id.clone(),
                member,
            },
        )
        .await?;
        let AuthMessage::PnKeyResponse { epoch, grants, .. } = answer else {
            return Err(OpError::Refused(format!(
                "unexpected answer {}",
                answer.name()
            )));
        };
        if s.state().mode.is_gateway() {
            gateway::remove_member(s, member, &pn_id, epoch, grants).await;
        }
        Ok(epoch)
    }

    /// Releases this gateway's PN (`cpns pn release`).
    pub async fn pn_release(&self) -> Result<String, OpError> {
        gateway::release(&self.shared).await
    }

    /// The PN Inventory of this node's PN (from its gateway), or of a remote PN by id.
    pub async fn pn_inventory(
        &self,
        pn_id: Option<String>,
    ) -> Result<cpns_overlay::PnInventorySummary, OpError> {
        let s = &self.shared;
        let (mine, gateway) = {
            let st = s.state();
            (
                st.pn.as_ref().map(|p| p.membership.pn_id.clone()),
                st.pn.as_ref().map(|p| p.membership.gateway),
            )
        };
        let wanted = pn_id
            .or(mine.clone())
            .ok_or_else(|| OpError::BadRequest("not in a PN: name one".into()))?;
        if Some(&wanted) == mine.as_ref() {
            if gateway == Some(s.peer_id) {
                return s
                    .inventory_summary()
                    .ok_or_else(|| OpError::NotFound("no inventory".into()));
            }
            if let Some(gw) = gateway {
                let answer = s
                    .client
                    .request(
                        gw,
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
        }
        // A remote PN: its gateway's signed summary in the DHT (5.6.9 "PN Inventory of ...
        // remote PN").
        let directory = s.services.directory()?;
        directory
            .fetch_pn_summary(&wanted)
            .await
            .map_err(|e| OpError::Unavailable(format!("looking the PN up: {e}")))?
            .ok_or_else(|| OpError::NotFound(format!("no inventory known for {wanted}")))
    }

    /// Renews this node's entity credential with `cpns-auth` now (`cpns renew`).
    pub async fn renew_credential(&self) -> Result<crate::renewal::CredentialView, OpError> {
        crate::renewal::renew(&self.shared).await
    }

    /// The current mode and the mode setting (`cpns mode get`).
    pub fn mode(&self) -> (String, String) {
        let s = self.shared.state();
        (s.mode.to_string(), s.mode_setting.to_string())
    }

    /// Changes the mode setting at run time (`cpns mode set pne|gateway|auto`, 5.6.9
    /// "request to change its Mode"). Becoming a gateway sets a PN up with `cpns-auth`, or,
    /// on a PNE of a PN, takes that PN's gateway role over (a planned gateway switch); a
    /// gateway that runs a PN cannot become a plain PNE until the PN is released.
    pub async fn set_mode(&self, setting: crate::config::ModeSetting) -> Result<(), OpError> {
        use crate::config::ModeSetting;
        let s = &self.shared;
        let (mode, in_pn, gateway_of_pn) = {
            let st = s.state();
            (
                st.mode,
                st.pn.is_some(),
                st.pn
                    .as_ref()
                    .is_some_and(|p| p.membership.gateway == s.peer_id),
            )
        };
        match setting {
            ModeSetting::Gateway => {
                if in_pn && !gateway_of_pn {
                    // A planned gateway switch (5.6.9): this member takes the role over and
                    // the others, the old gateway too, re-join through it.
                    crate::pn::failover::take_over(s).await?;
                    s.state().mode_setting = setting;
                    return Ok(());
                }
                s.state().mode_setting = setting;
                if !mode.is_gateway() {
                    gateway::take_gateway_role(s).await;
                }
                if !in_pn && s.is_enrolled() {
                    gateway::establish(s).await?;
                }
            }
            ModeSetting::Pne => {
                if gateway_of_pn {
                    return Err(OpError::Conflict(
                        "this node is the gateway of its PN: it stays one while the PN runs".into(),
                    ));
                }
                {
                    let mut st = s.state();
                    st.mode_setting = setting;
                    st.mode = cpns_overlay::NodeMode::Pne;
                }
                let _ = s
                    .client
                    .set_kad_mode(if in_pn {
                        KadMode::Client
                    } else {
                        KadMode::Server
                    })
                    .await;
            }
            ModeSetting::Auto => s.state().mode_setting = setting,
        }
        s.refresh_caps();
        Ok(())
    }

    /// The node's metrics in Prometheus text format.
    pub async fn metrics_text(&self) -> String {
        crate::metrics::render(&self.shared).await
    }

    /// Changes capability overrides at run time (`cpns caps set`): for devices that cannot
    /// report a value themselves, and for labs that simulate a battery running down. A
    /// material change is reported at once (to the gateway, to subscribers).
    pub async fn set_capabilities(
        &self,
        patch: crate::config::CapabilitiesConfig,
    ) -> Result<cpns_overlay::Capabilities, OpError> {
        let s = &self.shared;
        let mut merged = s.capability_overrides();
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
        let mut check = s.config.clone();
        check.capabilities = merged.clone();
        check
            .validate()
            .map_err(|e| OpError::BadRequest(e.to_string()))?;
        s.set_capability_overrides(merged);
        let (caps, changed) = s.refresh_caps();
        status::report_capabilities(s, &caps, changed).await;
        Ok(caps)
    }

    /// This node's current Device Capabilities (5.6.1).
    pub fn capabilities(&self) -> cpns_overlay::Capabilities {
        self.shared.refresh_caps().0
    }

    /// G.1 step 0: publishes a service description (`cpns services publish`). With `content`,
    /// this node serves that file as the service's content (`cpns-delivery` endpoint).
    pub async fn publish(
        &self,
        mut draft: cpns_directory::ServiceDraft,
        content: Option<std::path::PathBuf>,
    ) -> Result<cpns_directory::ServiceDescription, OpError> {
        let s = &self.shared;
        if content.is_some() && draft.endpoint.protocol.is_empty() {
            draft.endpoint.protocol = "cpns-delivery".into();
            draft.endpoint.addresses = s
                .client
                .listen_addrs()
                .await?
                .into_iter()
                .map(|a| {
                    a.with(libp2p::multiaddr::Protocol::P2p(s.peer_id))
                        .to_string()
                })
                .collect();
        }
        if draft.id.is_none() && content.is_some() {
            draft.id = Some(format!("svc-{}", hex::encode(rand::random::<[u8; 8]>())));
        }
        if let (Some(path), Some(id)) = (&content, &draft.id) {
            crate::delivery::register_content(s, id, path).await?;
        }
        crate::services::publish(s, draft).await
    }

    /// Removes one of this node's services (`cpns services unpublish ID`).
    pub async fn unpublish(&self, id: &str) -> Result<(), OpError> {
        let directory = self.shared.services.directory()?;
        directory
            .unpublish(id)
            .await
            .map_err(|e| OpError::NotFound(format!("unpublish: {e}")))?;
        crate::delivery::forget_content(&self.shared, id).await;
        Ok(())
    }

    /// This node's own services (`cpns services list`).
    pub fn services(&self) -> Result<Vec<cpns_directory::ServiceDescription>, OpError> {
        Ok(self.shared.services.directory()?.local_services())
    }

    /// G.1 step 4: discovery by keywords (`cpns services find K [K2…]`).
    pub async fn find(
        &self,
        query: &cpns_directory::Query,
    ) -> Result<cpns_directory::Discovery, OpError> {
        crate::services::find(&self.shared, query).await
    }

    /// A service by id (`cpns services show ID`).
    pub async fn service(&self, id: &str) -> Result<cpns_directory::Found, OpError> {
        crate::services::get(&self.shared, id).await
    }

    /// Subscribes to advertisements of services with `keyword` in this node's PN.
    pub async fn watch_services(&self, keyword: &str) -> Result<usize, OpError> {
        crate::services::watch(&self.shared, keyword).await
    }

    /// Advertisements received so far.
    pub fn advertisements(&self) -> Vec<cpns_directory::ServiceDescription> {
        self.shared.services.advertisements()
    }

    /// The visibility a service gets when none is asked for: this node's PN, else public.
    pub fn default_visibility(&self) -> cpns_directory::Visibility {
        crate::services::default_visibility(&self.shared)
    }

    /// G.1 steps 5-8: invoke a service, get its content (pull or push), report usage
    /// (`cpns content fetch ID`).
    pub async fn fetch(
        &self,
        service_id: &str,
        mode: cpns_overlay::DeliveryMode,
    ) -> Result<crate::delivery::FetchOutcome, OpError> {
        crate::delivery::fetch(&self.shared, service_id, mode).await
    }

    /// Pushes a file to a PN member (`cpns content send PEER FILE`); returns the bytes sent.
    pub async fn send_file(&self, peer: PeerId, path: &std::path::Path) -> Result<u64, OpError> {
        crate::delivery::send_file(&self.shared, peer, path).await
    }

    /// Files received from PN members, with their sizes.
    pub async fn inbox(&self) -> Vec<(String, u64)> {
        crate::delivery::inbox(&self.shared).await
    }

    /// Services or names never to report (`cpns usage prefs`).
    pub fn usage_never_report(&self) -> Vec<String> {
        crate::usage::never_report(&self.shared)
            .into_iter()
            .collect()
    }

    /// Replaces the stored "never report" list (the config file's entries always apply).
    pub async fn set_usage_never_report(&self, list: Vec<String>) -> Result<(), OpError> {
        crate::usage::set_never_report(&self.shared, list).await
    }

    /// Usage reports waiting to be sent.
    pub fn usage_queued(&self) -> Vec<cpns_overlay::UsageReport> {
        crate::usage::queued(&self.shared)
    }

    /// Sends queued usage reports now; returns how many were acknowledged.
    pub async fn flush_usage(&self) -> usize {
        crate::usage::flush(&self.shared).await
    }

    /// Creates a Service Group (`cpns groups create`).
    pub async fn group_create(&self, name: &str) -> Result<cpns_overlay::GroupInfo, OpError> {
        crate::groups::create(&self.shared, name).await
    }

    /// The groups this node belongs to or is invited to.
    pub async fn groups(&self) -> Result<Vec<cpns_overlay::GroupInfo>, OpError> {
        crate::groups::list(&self.shared).await
    }

    /// One group's record.
    pub async fn group(
        &self,
        group: cpns_keys::GroupId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        crate::groups::show(&self.shared, group).await
    }

    /// Deletes a group (admins only).
    pub async fn group_delete(&self, group: cpns_keys::GroupId) -> Result<(), OpError> {
        crate::groups::delete(&self.shared, group).await
    }

    /// Invites an entity into a group (admins only).
    pub async fn group_invite(
        &self,
        group: cpns_keys::GroupId,
        peer: PeerId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        crate::groups::invite(&self.shared, group, peer).await
    }

    /// Expels a member from a group (admins only).
    pub async fn group_expel(
        &self,
        group: cpns_keys::GroupId,
        peer: PeerId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        crate::groups::expel(&self.shared, group, peer).await
    }

    /// Joins a group this node was invited to.
    pub async fn group_join(
        &self,
        group: cpns_keys::GroupId,
    ) -> Result<cpns_overlay::GroupInfo, OpError> {
        crate::groups::join(&self.shared, group).await
    }

    /// Leaves a group.
    pub async fn group_leave(&self, group: cpns_keys::GroupId) -> Result<(), OpError> {
        crate::groups::leave(&self.shared, group).await
    }

    /// Pulls this node's current keys; returns how many were new.
    pub async fn pull_keys(&self) -> Result<usize, OpError> {
        crate::groups::pull_keys(&self.shared).await
    }

    /// The current epoch of a group key this node holds.
    pub fn group_epoch(&self, group: &cpns_keys::GroupId) -> Option<u64> {
        use cpns_directory::KeyRing as _;
        self.shared.keyring.current(group).map(|k| k.epoch())
    }
}
