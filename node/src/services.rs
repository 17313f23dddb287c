//! Service Publication & Discovery in the node (spec 5.6.4, G.1 steps 0 and 4): the node's
//! [`Directory`], the DHT validation hook, advertisements routed through the gateway, and the
//! DHT copies of the revocation list and the PN summary.
//!
//! Advertisement routing: a node subscribes to a keyword at its PN's gateway; whoever
//! publishes sends the signed (sealed, for PN services) record to its gateway, and the gateway
//! passes it to every subscriber of the description's keyword keys. The gateway can match
//! sealed records because it holds the PN key too; other households' nodes never see them.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use cpns_directory::{
    Directory, Discovery, Found, Query, ServiceDescription, ServiceDraft, Validator, Visibility,
};
use cpns_overlay::{DirectoryMessage, KadMode, Message, Protocol, RecordValidator, Rejection};
use libp2p::PeerId;
use libp2p::kad::{ProviderRecord, Record};
use tracing::{debug, info, warn};

use crate::auth_link::pn_group;
use crate::error::OpError;
use crate::shared::Shared;
use crate::trace::flow::G1;

/// Advertisements kept for the local user.
const MAX_ADVERTISEMENTS: usize = 256;
/// How often the revocation list is refreshed from the DHT.
const REVOCATION_REFRESH: Duration = Duration::from_secs(300);

/// Longest a publish on a PNE waits for a DHT server (its gateway) in its routing table.
const PUBLISH_WAIT_FOR_PEERS: Duration = Duration::from_secs(5);

/// The node's DHT validation hook. Until the node is enrolled (no pinned CA yet), it stores
/// nothing for anyone; afterwards it is the directory's [`Validator`].
#[derive(Default)]
pub(crate) struct NodeValidator {
    inner: RwLock<Option<Arc<Validator>>>,
}

impl NodeValidator {
    pub(crate) fn install(&self, v: Arc<Validator>) {
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

/// The node's directory side: the [`Directory`] once enrolled, and advertisements received.
#[derive(Default)]
pub(crate) struct Services {
    directory: RwLock<Option<Directory>>,
    advertisements: Mutex<VecDeque<ServiceDescription>>,
}

impl Services {
    pub(crate) fn directory(&self) -> Result<Directory, OpError> {
        self.directory
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                OpError::Conflict(
                    "this node is not enrolled: run `cpns up --code CODE` first".into(),
                )
            })
    }

    fn record_advertisement(&self, d: ServiceDescription) {
        let mut a = self
            .advertisements
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if a.len() >= MAX_ADVERTISEMENTS {
            a.pop_front();
        }
        a.push_back(d);
    }

    /// Advertisements received, oldest first.
    pub(crate) fn advertisements(&self) -> Vec<ServiceDescription> {
        self.advertisements
            .lock()
            .map(|a| a.iter().cloned().collect())
            .unwrap_or_default()
    }
}

/// Opens the directory once the node is enrolled, installs the validator, and starts the
/// directory's republish loop and the node's DHT housekeeping. Idempotent.
pub(crate) fn start(shared: &Arc<Shared>) -> Result<(), OpError> {
    if shared
        .services
        .directory
        .read()
        .map(|d| d.is_some())
        .unwrap_or(false)
    {
        return Ok(());
    }
    let enrolment = shared.enrolment()?;
    let trust = shared.trust()?;
    let config = cpns_directory::Config::default();
    shared
        .validator
        .install(Arc::new(Validator::new(trust.clone(), &config)));
    let directory = Directory::open(
        config,
        shared.client.clone(),
        shared.identity.clone(),
        enrolment.credential.clone(),
        trust,
        shared.keyring.clone(),
        &shared.db,
    )
    .map_err(|e| OpError::Internal(format!("opening the directory: {e}")))?;
    *shared
        .services
        .directory
        .write()
        .unwrap_or_else(|p| p.into_inner()) = Some(directory.clone());
    tokio::spawn(directory.clone().run(shared.cancel.clone()));
    tokio::spawn(housekeeping(shared.clone(), directory.clone()));
    tokio::spawn(forward_local_advertisements(shared.clone(), directory));
    Ok(())
}

/// Keeps the DHT copies current: the revocation list (fetched, and re-put when newer) and,
/// on a gateway, the PN summary; and re-publishes this node's services under a new PN key
/// epoch.
async fn housekeeping(shared: Arc<Shared>, directory: Directory) {
    let mut changes = shared.pn_changed.subscribe();
    let mut refresh = tokio::time::interval(REVOCATION_REFRESH);
    let mut last_epoch = None;
    let mut published_revocations = 0;
    loop {
        tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            _ = refresh.tick() => {
                if let Ok(Some(list)) = directory.fetch_revocations().await {
                    shared.take_revocations(list).await;
                }
            }
            r = changes.changed() => {
                if r.is_err() { return; }
                // Let a burst of changes settle.
                tokio::time::sleep(Duration::from_millis(200)).await;
                changes.borrow_and_update();
            }
        }
        if let Ok(trust) = shared.trust() {
            let list = trust.revocations();
            if list.version > published_revocations && list.verify(trust.ca()).is_ok() {
                match directory.publish_revocations(&list).await {
                    Ok(()) => published_revocations = list.version,
                    Err(e) => debug!("revocation list not put in the DHT: {e}"),
                }
            }
        }
        let epoch = crate::Handle::new(shared.clone()).pn_epoch();
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
        let summary = {
            let s = shared.state();
            s.pn.as_ref()
                .filter(|p| p.membership.gateway == shared.peer_id)
                .map(|_| ())
        };
        if summary.is_some()
            && let Some(mut summary) = shared.inventory_summary()
        {
            summary.services = directory
                .local_services()
                .into_iter()
                .map(|d| d.id)
                .collect();
            if let Err(e) = directory.publish_pn_summary(&summary).await {
                debug!("PN summary not put in the DHT: {e}");
            }
        }
    }
}

/// Advertisements the directory accepted locally are kept for the user (`cpns services
/// watch`) and traced as G.1 step 4 (the node advertises the description to the PNE).
async fn forward_local_advertisements(shared: Arc<Shared>, directory: Directory) {
    let mut rx = directory.subscribe_local();
    loop {
        let d = tokio::select! {
            biased;
            _ = shared.cancel.cancelled() => return,
            r = rx.recv() => match r {
                Ok(d) => d,
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                Err(_) => return,
            },
        };
        let me = shared.peer_id;
        shared.trace(
            G1,
            4,
            &d.publisher,
            &me,
            "AdvertiseServiceDescription",
            d.id.clone(),
        );
        shared.services.record_advertisement(d);
    }
}

/// G.1 step 0: publishes a service description (for an external program using the API, or
/// the node's own content), then advertises it through the gateway.
pub(crate) async fn publish(
    shared: &Arc<Shared>,
    draft: ServiceDraft,
) -> Result<ServiceDescription, OpError> {
    let directory = shared.services.directory()?;
    // A PNE (Kademlia client) stores through DHT servers, its gateway first: right after the
    // PN forms, identify may not yet have told it that the gateway serves the DHT.
    if matches!(shared.client.kad_mode().await, Ok(KadMode::Client)) {
        let _ = shared
            .client
            .wait_routing_table(1, PUBLISH_WAIT_FOR_PEERS)
            .await;
    }
    let desc = directory
        .publish(draft)
        .await
        .map_err(|e| OpError::BadRequest(format!("publish: {e}")))?;
    shared.metrics.services_published.inc();
    let me = shared.peer_id;
    shared.trace(
        G1,
        0,
        &me,
        &me,
        "PublishServiceDescription",
        format!("{} ({})", desc.id, desc.visibility),
    );
    advertise(shared, &directory, &desc).await;
    Ok(desc)
}

/// Sends the advertisement of `desc` to the gateway (a PNE) or straight to the subscribers
/// (the gateway itself).
async fn advertise(shared: &Arc<Shared>, directory: &Directory, desc: &ServiceDescription) {
    let Ok(msg) = directory.advertisement(desc) else {
        return;
    };
    let gateway = shared.state().pn.as_ref().map(|p| p.membership.gateway);
    match gateway {
        Some(gw) if gw != shared.peer_id => {
            if let Err(e) = shared
                .client
                .request(gw, Protocol::Cpns, Message::Directory(msg))
                .await
            {
                debug!("advertisement not delivered to the gateway: {e}");
            }
        }
        Some(_) => fan_out(shared, directory, desc, msg, None).await,
        None => {}
    }
}

/// The gateway passes an advertisement to every subscriber of the description's keyword keys
/// (except the publisher).
async fn fan_out(
    shared: &Arc<Shared>,
    directory: &Directory,
    desc: &ServiceDescription,
    msg: DirectoryMessage,
    except: Option<PeerId>,
) {
    let mut targets: Vec<PeerId> = directory
        .keyword_keys(desc)
        .iter()
        .flat_map(|k| directory.subscribers(k))
        .filter(|p| Some(*p) != except && *p != shared.peer_id)
        .collect();
    targets.sort();
    targets.dedup();
    for peer in targets {
        let client = shared.client.clone();
        let m = Message::Directory(msg.clone());
        let me = shared.peer_id;
        shared.trace(
            G1,
            4,
            &me,
            &peer,
            "AdvertiseServiceDescription",
            desc.id.clone(),
        );
        tokio::spawn(async move {
            if let Err(e) = client.request(peer, Protocol::Cpns, m).await {
                debug!(%peer, "advertisement not delivered: {e}");
            }
        });
    }
}

/// An inbound directory message: lookups and subscriptions are the directory's; an
/// advertisement reaching the gateway is also passed on to the subscribers.
pub(crate) async fn handle(shared: &Arc<Shared>, peer: PeerId, msg: DirectoryMessage) -> Message {
    let directory = match shared.services.directory() {
        Ok(d) => d,
        Err(e) => return Message::error(cpns_overlay::ErrorCode::NotRegistered, e.to_string()),
    };
    let relay = match &msg {
        DirectoryMessage::Advertise { record } if shared.state().mode.is_gateway() => directory
            .open_advertisement(record)
            .ok()
            .map(|d| (d, msg.clone())),
        _ => None,
    };
    let answer = directory.handle(peer, msg);
    if let Some((desc, msg)) = relay {
        fan_out(shared, &directory, &desc, msg, Some(peer)).await;
    }
    answer
}

/// G.1 step 4: discovery by keywords.
pub(crate) async fn find(shared: &Arc<Shared>, query: &Query) -> Result<Discovery, OpError> {
    let directory = shared.services.directory()?;
    let found = directory
        .find(query)
        .await
        .map_err(|e| OpError::Unavailable(format!("discovery: {e}")))?;
    shared.metrics.discoveries.inc();
    let me = shared.peer_id;
    for f in &found.services {
        let from = f.from_peer.unwrap_or(f.description.publisher);
        shared.trace(
            G1,
            4,
            &from,
            &me,
            "DiscoverServiceDescription",
            f.description.id.clone(),
        );
    }
    Ok(found)
}

/// Looks a service up by id.
pub(crate) async fn get(shared: &Arc<Shared>, id: &str) -> Result<Found, OpError> {
    let directory = shared.services.directory()?;
    directory
        .get(id)
        .await
        .map_err(|e| OpError::Unavailable(format!("lookup: {e}")))?
        .ok_or_else(|| OpError::NotFound(format!("no service {id} found")))
}

/// Subscribes to advertisements for `keyword` in this node's PN (at its gateway).
pub(crate) async fn watch(shared: &Arc<Shared>, keyword: &str) -> Result<usize, OpError> {
    let directory = shared.services.directory()?;
    let (gateway, pn_id) = {
        let s = shared.state();
        let pn = s.pn.as_ref().ok_or_else(|| {
            OpError::Conflict("advertisements travel in a PN: join one first".into())
        })?;
        (pn.membership.gateway, pn.membership.pn_id.clone())
    };
    let mut sent = 0;
    for scope in [
        cpns_directory::Scope::Public,
        cpns_directory::Scope::Group(pn_group(&pn_id)),
    ] {
        for msg in directory.subscription(keyword, &scope) {
            // `subscription` registered the keyword locally; a gateway needs nothing more.
            if gateway != shared.peer_id {
                shared
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
pub(crate) fn default_visibility(shared: &Shared) -> Visibility {
    match shared.pn_id() {
        Some(pn) => Visibility::Pn(pn_group(&pn)),
        None => Visibility::Public,
    }
}
