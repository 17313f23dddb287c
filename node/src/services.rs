//! Service Publication & Discovery in the node (spec 5.6.4, G.1 steps 0 and 4): the node's
//! [`Directory`], the DHT validation hook, advertisements routed through the gateway, and the
//! DHT copies of the revocation list and the PN summary.
//!
//! Advertisement routing: a node subscribes to a keyword at its PN's gateway; whoever
//! publishes sends the signed (sealed, for PN services) record to its gateway, and the gateway
//! passes it to every subscriber of the description's keyword keys. The gateway can match
//! sealed records because it holds the PN key too; other households' nodes never see them.
//!
//! [`Services::run`] is the module's one task: it waits until the node is enrolled, opens the
//! directory, and then runs the directory's republish loop, the housekeeping of the shared
//! records and the forwarding of local advertisements, until the node stops.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use cpns_directory::{
    Directory, Discovery, Found, Query, ServiceDescription, ServiceDraft, Validator, Visibility,
};
use cpns_overlay::{DirectoryMessage, KadMode, Message, Protocol, RecordValidator, Rejection};
use libp2p::PeerId;
use libp2p::kad::{ProviderRecord, Record};
use tracing::{debug, info, warn};

use crate::context::Context;
use crate::error::OpError;
use crate::pn::{self, SenderClass, pn_group};
use crate::trace::flow::{G1, GW_SWITCH};

/// What a published PN summary said: its PN, epoch, members and services (re-put on change).
type SummaryKey = (String, u64, Vec<cpns_overlay::MemberInfo>, Vec<String>);

/// Advertisements kept for the local user.
const MAX_ADVERTISEMENTS: usize = 256;
/// How often the revocation list is refreshed from the DHT.
const REVOCATION_REFRESH: Duration = Duration::from_secs(300);
/// Longest a publish on a PNE waits for a DHT server (its gateway) in its routing table.
const PUBLISH_WAIT_FOR_PEERS: Duration = Duration::from_secs(5);
/// Retries of a client's first put that no DHT server took, and the pause before each.
const PUBLISH_RETRIES: u32 = 6;
const PUBLISH_RETRY_PAUSE: Duration = Duration::from_millis(500);
const PUBLISH_RETRY_PAUSE_MAX: Duration = Duration::from_secs(4);
/// How soon the services and summary of a move are tried again (5.6.9, see
/// `Services::follow_move`).
const MOVE_RETRY: Duration = Duration::from_secs(1);
/// Longest the gateway's fan-out of one advertisement takes.
const FAN_OUT_WAIT: Duration = Duration::from_secs(2);

/// The node's DHT validation hook. Until the node is enrolled (no pinned CA yet), it stores
/// nothing for anyone; afterwards it is the directory's [`Validator`].
#[derive(Default)]
pub(crate) struct NodeValidator {
    inner: RwLock<Option<Arc<Validator>>>,
}

impl NodeValidator {
    fn install(&self, v: Arc<Validator>) {
        *self.inner.write().unwrap_or_else(|p| p.into_inner()) = Some(v);
    }

    fn get(&self) -> Result<Arc<Validator>, Rejection> {
        self.inner
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Rejection::new("not_enrolled", "this node has no pinned CA yet"))
    }
}

impl RecordValidator for NodeValidator {
    fn validate_put(
        &self,
        source: &PeerId,
        record: Record,
        existing: Option<&Record>,
    ) -> Result<Record, Rejection> {
        self.get()?.validate_put(source, record, existing)
    }
    fn validate_get(&self, record: &Record) -> Result<(), Rejection> {
        self.get()?.validate_get(record)
    }
    fn validate_provider(
        &self,
        source: &PeerId,
        record: &ProviderRecord,
        credential: Option<&cpns_overlay::PeerCredential>,
    ) -> Result<(), Rejection> {
        self.get()?.validate_provider(source, record, credential)
    }
    // Provider announcements need a credential (issue 14), also before the directory is
    // installed: then nothing is stored for others at all.
    fn wants_credentials(&self) -> bool {
        true
    }
    fn validate_credential(
        &self,
        peer: &PeerId,
        credential: &[u8],
    ) -> Result<cpns_overlay::PeerCredential, Rejection> {
        self.get()?.validate_credential(peer, credential)
    }
}

/// The handle to the node's directory side (cheap to clone).
#[derive(Clone)]
pub(crate) struct Services {
    inner: Arc<Inner>,
}

struct Inner {
    ctx: Context,
    pn: pn::Handle,
    validator: Arc<NodeValidator>,
    directory: OnceLock<Directory>,
    advertisements: Mutex<VecDeque<ServiceDescription>>,
}

impl Services {
    /// The directory side of a node.
    pub(crate) fn new(ctx: Context, pn: pn::Handle, validator: Arc<NodeValidator>) -> Self {
        Self {
            inner: Arc::new(Inner {
                ctx,
                pn,
                validator,
                directory: OnceLock::new(),
                advertisements: Mutex::new(VecDeque::new()),
            }),
        }
    }

    /// The directory, once the node is enrolled.
    pub(crate) fn directory(&self) -> Result<Directory, OpError> {
        self.inner.directory.get().cloned().ok_or_else(|| {
            OpError::Conflict("this node is not enrolled: run `cpns up --code CODE` first".into())
        })
    }

    /// The module's task (see the module's documentation).
    pub(crate) async fn run(self) {
        let ctx = self.inner.ctx.clone();
        let mut creds = ctx.credentials.clone();
        let credentials = tokio::select! {
            biased;
            _ = ctx.cancel.cancelled() => return,
            c = creds.wait_for(|c| c.is_some()) => match c {
                Ok(c) => c.clone(),
                Err(_) => return,
            },
        };
        let Some(credentials) = credentials else {
            return;
        };
        let config = cpns_directory::Config::default();
        self.inner
            .validator
            .install(Arc::new(Validator::new(credentials.trust.clone(), &config)));
        let directory = match Directory::open(
            config,
            ctx.client.clone(),
            ctx.identity.clone(),
            credentials.enrolment.credential.clone(),
            credentials.trust.clone(),
            ctx.keyring.clone(),
            ctx.store.directory_db(),
        ) {
            Ok(d) => d,
            Err(e) => {
                warn!("the service directory did not start: {e}");
                return;
            }
        };
        let _ = self.inner.directory.set(directory.clone());
        let own: Vec<String> = directory
            .local_services()
            .into_iter()
            .map(|d| d.id)
            .collect();
        if !own.is_empty() {
            let _ = self.inner.pn.own_services(own).await;
        }
        tokio::join!(
            directory.clone().run(ctx.cancel.clone()),
            self.housekeeping(directory.clone()),
            self.forward_local_advertisements(directory),
        );
    }

    /// Keeps the DHT copies current: the revocation list (fetched, and re-put when newer) and,
    /// on a gateway, the PN summary; and re-publishes this node's services under a new PN key
    /// epoch.
    async fn housekeeping(&self, directory: Directory) {
        let ctx = &self.inner.ctx;
        let mut changes = self.inner.pn.watch();
        let mut refresh = tokio::time::interval(REVOCATION_REFRESH);
        let mut last_epoch = None;
        let mut published_revocations = 0;
        let mut last_summary = None;
        let mut rescoped = None;
        let mut move_pending = false;
        loop {
            tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return,
                _ = tokio::time::sleep(MOVE_RETRY), if move_pending => {}
                _ = refresh.tick() => {
                    if let Ok(Some(list)) = directory.fetch_revocations().await {
                        self.inner.pn.offer_revocations(list).await;
                    }
                }
                r = changes.changed() => {
                    if r.is_err() { return; }
                    // Let a burst of changes settle.
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    changes.borrow_and_update();
                }
            }
            if let Ok(trust) = ctx.trust() {
                let list = trust.revocations();
                if list.version > published_revocations && list.verify(trust.ca()).is_ok() {
                    match directory.publish_revocations(&list).await {
                        Ok(()) => published_revocations = list.version,
                        Err(e) => debug!("revocation list not put in the DHT: {e}"),
                    }
                }
            }
            let view = self.inner.pn.view();
            // A member's gateway is its home DHT server (see `Directory::set_home_servers`);
            // a gateway, or a node in no PN, has none.
            let home = view.my_gateway().filter(|gw| *gw != ctx.peer_id);
            directory.set_home_servers(home.into_iter().collect()).await;
            move_pending = self
                .follow_move(&directory, &view, &mut rescoped, &mut last_summary)
                .await;
            let epoch = view.pn_id().and_then(|pn| {
                use cpns_directory::KeyRing as _;
                ctx.keyring.current(&pn_group(pn)).map(|k| k.epoch())
            });
            if epoch.is_some() && epoch != last_epoch {
                if last_epoch.is_some() {
                    match directory.republish_all().await {
                        Ok(n) => info!(
                            services = n,
                            ?epoch,
                            "services re-published under the new PN key epoch"
                        ),
                        Err(e) => warn!("re-publishing after a key rotation failed: {e}"),
                    }
                }
                last_epoch = epoch;
            }
            // The DHT summary is derived from the PN Inventory; addresses stay out of it (it
            // is public: 5.6.9 "PN Inventory of a remote PN").
            if let Some(pn) = view.pn.as_ref().filter(|_| view.is_pn_gateway()) {
                let mut summary = crate::pn::summary_of(pn, false, crate::now());
                for m in &mut summary.members {
                    m.listen_addrs.clear();
                }
                let key = (
                    summary.pn_id.clone(),
                    summary.epoch,
                    summary.members.clone(),
                    summary.services.clone(),
                );
                if last_summary.as_ref() != Some(&key) {
                    match directory.publish_pn_summary(&summary).await {
                        Ok(()) => last_summary = Some(key),
                        Err(e) => debug!("PN summary not put in the DHT: {e}"),
                    }
                }
            }
        }
    }

    /// After this node moved to another PN (5.6.9, a merge or a split), once it is in that
    /// PN and holds its key: its services scoped to the PN it left are re-published under the
    /// new PN's key and withdrawn under the old one (members of the PN it is in now find them
    /// by keyword; the old key is no one's any more), and, if it was the gateway of the PN it
    /// left (merged away, released at `cpns-auth`), that PN's DHT summary is withdrawn.
    /// `done` is the move whose services were re-scoped. Returns whether something is left
    /// to do (the new key is not held yet, or the DHT took no write): the caller comes back
    /// after [`MOVE_RETRY`].
    async fn follow_move(
        &self,
        directory: &Directory,
        view: &pn::View,
        done: &mut Option<Arc<(String, String)>>,
        last_summary: &mut Option<SummaryKey>,
    ) -> bool {
        let Some(moved) = view.last_move.clone() else {
            return false;
        };
        let (from, into) = (&moved.0, &moved.1);
        if view.pn_id() != Some(into.as_str()) {
            return false;
        }
        let ctx = &self.inner.ctx;
        let me = ctx.peer_id;
        let mut pending = false;
        if done.as_ref() != Some(&moved) {
            match directory.rescope_pn(&pn_group(from), &pn_group(into)).await {
                Ok(n) => {
                    info!(services = n, %from, %into, "services re-scoped to the PN this node moved to");
                    ctx.trace(
                        GW_SWITCH,
                        38,
                        &me,
                        &me,
                        "RescopeServicesAfterMove",
                        format!("{n} services {from} -> {into}"),
                    );
                    *done = Some(moved.clone());
                }
                // Saved and cached under the new PN: the directory puts them again soon.
                Err(cpns_directory::PublishError::NotReplicated(e)) => {
                    debug!("re-scoped services not yet replicated: {e}");
                    ctx.trace(
                        GW_SWITCH,
                        38,
                        &me,
                        &me,
                        "RescopeServicesAfterMove",
                        format!("{from} -> {into} (not yet replicated)"),
                    );
                    *done = Some(moved.clone());
                }
                Err(e) => {
                    debug!("services not re-scoped yet: {e}");
                    pending = true;
                }
            }
        }
        // The summary this node last put as gateway is of the PN it left: withdrawn, until
        // the DHT takes it.
        if last_summary.as_ref().is_some_and(|k| k.0 == *from) {
            match directory.withdraw_pn_summary(from).await {
                Ok(()) => {
                    *last_summary = None;
                    ctx.trace(
                        GW_SWITCH,
                        39,
                        &me,
                        &me,
                        "WithdrawReleasedPnSummary",
                        from.clone(),
                    );
                }
                Err(cpns_directory::PublishError::NotReplicated(e)) => {
                    debug!("the released PN's summary not withdrawn yet: {e}");
                    pending = true;
                }
                // Not this node's to withdraw (any more): it expires with its record.
                Err(e) => {
                    warn!(pn = %from, "the released PN's summary cannot be withdrawn: {e}");
                    *last_summary = None;
                }
            }
        }
        pending
    }

    /// Advertisements the directory accepted locally are kept for the user (`cpns services
    /// watch`) and traced as G.1 step 4.
    async fn forward_local_advertisements(&self, directory: Directory) {
        let ctx = &self.inner.ctx;
        let mut rx = directory.subscribe_local();
        loop {
            let d = tokio::select! {
                biased;
                _ = ctx.cancel.cancelled() => return,
                r = rx.recv() => match r {
                    Ok(d) => d,
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(_) => return,
                },
            };
            ctx.trace(
                G1,
                4,
                &d.publisher,
                &ctx.peer_id,
                "AdvertiseServiceDescription",
                d.id.clone(),
            );
            let mut a = self
                .inner
                .advertisements
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if a.len() >= MAX_ADVERTISEMENTS {
                a.pop_front();
            }
            a.push_back(d);
        }
    }

    /// Advertisements received, oldest first.
    pub(crate) fn advertisements(&self) -> Vec<ServiceDescription> {
        self.inner
            .advertisements
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// G.1 step 0: publishes a service description, then advertises it through the gateway
    /// and lists it in the PN Inventory.
    pub(crate) async fn publish(&self, draft: ServiceDraft) -> Result<ServiceDescription, OpError> {
        let ctx = &self.inner.ctx;
        let directory = self.directory()?;
        if self.inner.pn.view().mode == cpns_overlay::NodeMode::Gateway {
            return Err(OpError::Conflict(
                "a gateway-only node offers no services (`cpns mode set gateway` to offer some)"
                    .into(),
            ));
        }
        // A PNE (Kademlia client) stores through DHT servers, its gateway first: right after
        // the PN forms, identify may not yet have told it that the gateway serves the DHT.
        let client_mode = matches!(ctx.client.kad_mode().await, Ok(KadMode::Client));
        if client_mode {
            self.gateway_as_dht_server().await;
            let _ = ctx
                .client
                .wait_routing_table(1, PUBLISH_WAIT_FOR_PEERS)
                .await;
        }
        let desc = match directory.publish_saved(draft).await {
            Ok((desc, None)) => desc,
            // A DHT server keeps the record in its own store and answers lookups for it, so
            // the service is published even when no other server is known yet (a home
            // gateway whose members are all PNEs, or a PN cut off from the Internet); the
            // directory puts it again as DHT servers appear. A Kademlia client with no
            // server to store it has published nothing anyone can find.
            Ok((desc, Some(e))) if !client_mode => {
                warn!(id = %desc.id, "service saved and served by this node, not yet replicated: {e}");
                desc
            }
            Ok((desc, Some(first))) => {
                self.retry_replication(&directory, first).await?;
                desc
            }
            Err(e) => return Err(OpError::BadRequest(format!("publish: {e}"))),
        };
        ctx.metrics.services_published.inc();
        let me = ctx.peer_id;
        ctx.trace(
            G1,
            0,
            &me,
            &me,
            "PublishServiceDescription",
            format!("{} ({})", desc.id, desc.visibility),
        );
        self.advertise(&directory, &desc).await;
        self.own_services_changed(&directory).await;
        Ok(desc)
    }

    /// Removes one of this node's services.
    pub(crate) async fn unpublish(&self, id: &str) -> Result<(), OpError> {
        let directory = self.directory()?;
        directory
            .unpublish(id)
            .await
            .map_err(|e| OpError::NotFound(format!("unpublish: {e}")))?;
        self.own_services_changed(&directory).await;
        Ok(())
    }

    async fn own_services_changed(&self, directory: &Directory) {
        let ids = directory
            .local_services()
            .into_iter()
            .map(|d| d.id)
            .collect();
        if let Err(e) = self.inner.pn.own_services(ids).await {
            debug!("the PN Inventory did not take this node's services: {e}");
        }
    }

    /// Sends the advertisement of `desc` to the gateway (a PNE) or straight to the
    /// subscribers (the gateway itself).
    async fn advertise(&self, directory: &Directory, desc: &ServiceDescription) {
        let Ok(msg) = directory.advertisement(desc) else {
            return;
        };
        let view = self.inner.pn.view();
        match view.gateway() {
            Some(gw) if gw != view.me => {
                if let Err(e) = self
                    .inner
                    .ctx
                    .client
                    .request(gw, Protocol::Cpns, Message::Directory(msg))
                    .await
                {
                    debug!("advertisement not delivered to the gateway: {e}");
                }
            }
            Some(_) => self.fan_out(directory, desc, msg, None).await,
            None => {}
        }
    }

    /// The gateway passes an advertisement to every subscriber of the description's keyword
    /// keys (except the publisher), at most [`FAN_OUT_WAIT`] for all of them.
    async fn fan_out(
        &self,
        directory: &Directory,
        desc: &ServiceDescription,
        msg: DirectoryMessage,
        except: Option<PeerId>,
    ) {
        let ctx = &self.inner.ctx;
        let me = ctx.peer_id;
        let mut targets: Vec<PeerId> = directory
            .keyword_keys(desc)
            .iter()
            .flat_map(|k| directory.subscribers(k))
            .filter(|p| Some(*p) != except && *p != me)
            .collect();
        targets.sort();
        targets.dedup();
        let sends = targets.into_iter().map(|peer| {
            ctx.trace(
                G1,
                4,
                &me,
                &peer,
                "AdvertiseServiceDescription",
                desc.id.clone(),
            );
            let m = Message::Directory(msg.clone());
            async move {
                if let Err(e) = ctx.client.request(peer, Protocol::Cpns, m).await {
                    debug!(%peer, "advertisement not delivered: {e}");
                }
            }
        });
        let _ = tokio::time::timeout(FAN_OUT_WAIT, futures::future::join_all(sends)).await;
    }

    /// An inbound directory message (authorised by the router): lookups and subscriptions
    /// are the directory's; an advertisement reaching the gateway is also passed on.
    pub(crate) async fn handle(
        &self,
        peer: PeerId,
        _class: SenderClass,
        msg: DirectoryMessage,
    ) -> Message {
        let directory = match self.directory() {
            Ok(d) => d,
            Err(e) => return Message::error(cpns_overlay::ErrorCode::NotRegistered, e.to_string()),
        };
        let relay = match &msg {
            DirectoryMessage::Advertise { record } if self.inner.pn.view().is_pn_gateway() => {
                directory
                    .open_advertisement(record)
                    .ok()
                    .map(|d| (d, msg.clone()))
            }
            _ => None,
        };
        let answer = directory.handle(peer, msg);
        if let Some((desc, msg)) = relay {
            self.fan_out(&directory, &desc, msg, Some(peer)).await;
        }
        answer
    }

    /// G.1 step 4: discovery by keywords.
    pub(crate) async fn find(&self, query: &Query) -> Result<Discovery, OpError> {
        self.find_each(query, None).await
    }

    /// G.1 step 4, each service also sent to `each` as soon as it is verified
    /// ([`cpns_directory::Directory::find_each`]). The trace records the discovery's result
    /// once it is complete.
    pub(crate) async fn find_each(
        &self,
        query: &Query,
        each: Option<tokio::sync::mpsc::Sender<Found>>,
    ) -> Result<Discovery, OpError> {
        let ctx = &self.inner.ctx;
        let directory = self.directory()?;
        let found = directory
            .find_each(query, each)
            .await
            .map_err(|e| OpError::Unavailable(format!("discovery: {e}")))?;
        ctx.metrics.discoveries.inc();
        for f in &found.services {
            let from = f.from_peer.unwrap_or(f.description.publisher);
            ctx.trace(
                G1,
                4,
                &from,
                &ctx.peer_id,
                "DiscoverServiceDescription",
                f.description.id.clone(),
            );
        }
        Ok(found)
    }

    /// Looks a service up by id.
    pub(crate) async fn get(&self, id: &str) -> Result<Found, OpError> {
        let directory = self.directory()?;
        directory
            .get(id)
            .await
            .map_err(|e| OpError::Unavailable(format!("lookup: {e}")))?
            .ok_or_else(|| OpError::NotFound(format!("no service {id} found")))
    }

    /// Subscribes to advertisements for `keyword` in this node's PN (at its gateway).
    pub(crate) async fn watch(&self, keyword: &str) -> Result<usize, OpError> {
        let directory = self.directory()?;
        let view = self.inner.pn.view();
        let (gateway, pn_id) = match &view.pn {
            Some(pn) => (pn.membership.gateway, pn.membership.pn_id.clone()),
            None => {
                return Err(OpError::Conflict(
                    "advertisements travel in a PN: join one first".into(),
                ));
            }
        };
        let mut sent = 0;
        for scope in [
            cpns_directory::Scope::Public,
            cpns_directory::Scope::Group(pn_group(&pn_id)),
        ] {
            for msg in directory.subscription(keyword, &scope) {
                // `subscription` registered the keyword locally; a gateway needs nothing more.
                if gateway != view.me {
                    self.inner
                        .ctx
                        .client
                        .request(gateway, Protocol::Cpns, Message::Directory(msg))
                        .await?;
                }
                sent += 1;
            }
        }
        Ok(sent)
    }

    /// The default visibility of a node's service: its PN, if it is in one, else public.
    pub(crate) fn default_visibility(&self) -> Visibility {
        match self.inner.pn.view().pn_id() {
            Some(pn) => Visibility::Pn(pn_group(pn)),
            None => Visibility::Public,
        }
    }
}

impl Services {
    /// A PNE's gateway serves the DHT (the PN says so): it becomes the directory's home
    /// server (every record is put there directly first), and it is put in the routing table
    /// at the addresses the PN Inventory names, whatever identify said so far (an exchange made
    /// before the gateway became a DHT server, or one still on its way, would otherwise leave
    /// a Kademlia client with nobody to store its records).
    async fn gateway_as_dht_server(&self) {
        let view = self.inner.pn.view();
        let home = view.my_gateway().filter(|gw| *gw != self.inner.ctx.peer_id);
        if let Ok(directory) = self.directory() {
            // Records go to the gateway directly first (no lookup): see
            // `Directory::set_home_servers`.
            directory.set_home_servers(home.into_iter().collect()).await;
        }
        let Some(gw) = home else { return };
        let mut addrs: Vec<libp2p::Multiaddr> = view
            .pn
            .as_ref()
            .and_then(|p| p.members.get(&gw))
            .map(|m| m.info.listen_addrs.clone())
            .unwrap_or_default();
        if let Some(p) = view.peers.get(&gw) {
            addrs.extend(p.listen_addrs.iter().cloned());
        }
        if addrs.is_empty() {
            return;
        }
        if let Err(e) = self.inner.ctx.client.add_dht_server(gw, addrs).await {
            debug!("the gateway not added as a DHT server: {e}");
        }
    }

    /// A Kademlia client right after joining may reach its gateway before the gateway answers
    /// puts (it is still busy admitting it): bounded retries, with the gateway put in the
    /// routing table again before each, before the user hears that no DHT server stored the
    /// service (the directory keeps retrying in the background after that).
    async fn retry_replication(
        &self,
        directory: &cpns_directory::Directory,
        first: cpns_overlay::Error,
    ) -> Result<(), OpError> {
        let mut last = first.to_string();
        let mut pause = PUBLISH_RETRY_PAUSE;
        for attempt in 1..=PUBLISH_RETRIES {
            debug!(attempt, "publish not replicated yet ({last}): retrying");
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(PUBLISH_RETRY_PAUSE_MAX);
            self.gateway_as_dht_server().await;
            match directory.republish_all().await {
                Ok(_) => return Ok(()),
                Err(e) => last = e.to_string(),
            }
        }
        Err(OpError::Unavailable(format!(
            "publish: saved locally but not replicated: {last} (it is put again once a DHT server is reachable)"
        )))
    }
}
