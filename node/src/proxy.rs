//! The Non-CPNS proxy of the gateway (5.6.10, B.2.3): it "makes the devices look like PNEs
//! when viewed from the CPNS Enabler". UPnP/DLNA devices on the gateway's LAN are found by
//! SSDP search (rupnp / ssdp-client), their descriptions read, their CPNS functions detected
//! from their UPnP services, and a MediaServer's ContentDirectory items published to the PN as
//! services whose content this gateway delivers over `/cpns/delivery`, sealed under the PN
//! key. docs/PROXY.md has the mapping and what the proxy does not do.
//!
//! Off by default (`proxy.enabled`): SSDP is multicast on the LAN, so it is the owner's
//! choice, like mDNS. The proxy offers nothing of the PN to the LAN, except, with the owner's
//! `proxy.expose`, an item a member asked a MediaRenderer to play (`proxy/render.rs`).
//!
//! A device is registered when it first answers a search (a search is also made at once when
//! an unknown device announces itself with `ssdp:alive`) and de-registered (its services
//! unpublished) when it says `ssdp:byebye` and its description no
//! longer answers, or once it misses [`MISSES`] searches in a row: a device that left without
//! a byebye (power cut) leaves the PN too (`proxy/notify.rs`). Publication downloads
//! nothing: an item's content source is the device's item (`Origin::Device`, its URL and
//! size), and when a PNE fetches it the gateway asks the device for it over HTTP and streams
//! the body sealed as it arrives (`delivery/device.rs`): no copy on disk, a file changed on
//! the device is sent as it is now, and a large library costs nothing until it is used.
//!
//! Everything a device says is hostile input: every network step has a timeout, the listing
//! is bounded, an item's URL must point at the device that described it (no fetch of other
//! addresses on the device's word), and a delivery takes exactly the item's size (at most
//! `proxy.max_item_bytes`).
//!
//! The module's task owns the tracked devices; [`Proxy`] reads the latest snapshot.

mod didl;
mod notify;
mod render;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use cpns_api::{ProxiedDeviceView, ProxiedItemView};
use cpns_directory::ServiceDraft;
use futures::StreamExt;
use rupnp::ssdp::{SearchTarget, URN};
use sha2::Digest;
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::Handle;
use crate::context::Context;
use crate::error::OpError;
use crate::trace::flow::PROXY as FLOW;

/// A device missing from this many searches in a row is de-registered.
const MISSES: u32 = 2;
/// How long a search waits for answers (ssdp-client asks with MX 3: answers come within 3 s).
const SEARCH_WAIT: Duration = Duration::from_secs(4);
/// Bound on one round's description fetches, on top of [`SEARCH_WAIT`].
const DESCRIBE_WAIT: Duration = Duration::from_secs(20);
/// Bound on one SOAP action.
const ACTION_WAIT: Duration = Duration::from_secs(15);
/// Bound on one HTTP exchange of the search rounds (a description, an item's HEAD).
const HTTP_WAIT: Duration = Duration::from_secs(30);
/// Most devices tracked.
const MAX_DEVICES: usize = 64;
/// Most containers looked into per device.
const MAX_CONTAINERS: usize = 128;
/// Entries asked for per `Browse`.
const PAGE: u32 = 100;
/// A MediaServer's listing is read again every this many rounds (and every round while it
/// offers nothing: a server that has just started may still be scanning its files).
const REBROWSE_ROUNDS: u32 = 10;

const CONTENT_DIRECTORY: URN = URN::service("schemas-upnp-org", "ContentDirectory", 1);

/// The renderers the proxy speaks for: proxy id → the device (its AVTransport inside).
type Renderers = Arc<BTreeMap<String, rupnp::Device>>;

/// The proxy's read side (cheap to clone): the devices it speaks for now, and the items
/// handed to renderers.
#[derive(Clone)]
pub(crate) struct Proxy {
    devices: watch::Receiver<Arc<Vec<ProxiedDeviceView>>>,
    renderers: watch::Receiver<Renderers>,
    exposed: Arc<render::Exposed>,
}

/// The writing end of [`Proxy`], for [`run`].
pub(crate) struct Devices {
    views: watch::Sender<Arc<Vec<ProxiedDeviceView>>>,
    renderers: watch::Sender<Renderers>,
    exposed: Arc<render::Exposed>,
}

impl Proxy {
    /// The read side and the writing end for [`run`].
    pub(crate) fn new() -> (Proxy, Devices) {
        let (tx, rx) = watch::channel(Arc::new(Vec::new()));
        let (rtx, rrx) = watch::channel(Arc::new(BTreeMap::new()));
        let exposed = Arc::new(render::Exposed::default());
        (
            Proxy {
                devices: rx,
                renderers: rrx,
                exposed: exposed.clone(),
            },
            Devices {
                views: tx,
                renderers: rtx,
                exposed,
            },
        )
    }

    fn with_playing(&self, mut d: ProxiedDeviceView) -> ProxiedDeviceView {
        d.playing = self.exposed.playing(&d.id);
        d
    }

    /// The proxied devices, by id.
    pub(crate) fn devices(&self) -> Vec<ProxiedDeviceView> {
        let list = self.devices.borrow().as_ref().clone();
        list.into_iter().map(|d| self.with_playing(d)).collect()
    }

    /// One proxied device, by its id or UDN.
    pub(crate) fn device(&self, id: &str) -> Result<ProxiedDeviceView, OpError> {
        let found = self
            .devices
            .borrow()
            .iter()
            .find(|d| d.id == id || d.udn == id)
            .cloned();
        found
            .map(|d| self.with_playing(d))
            .ok_or_else(|| OpError::NotFound(format!("no proxied device {id}")))
    }

    /// The devices as the PN Inventory lists them (proxied PNEs).
    pub(crate) fn proxied_pnes(&self) -> Vec<cpns_overlay::ProxiedPne> {
        self.devices
            .borrow()
            .iter()
            .take(cpns_overlay::MAX_PROXIED)
            .map(|d| cpns_overlay::ProxiedPne {
                id: d.id.clone(),
                name: d.name.clone(),
                device_type: d.device_type.clone(),
                functions: d.functions.clone(),
                services: u32::try_from(d.services.len()).unwrap_or(u32::MAX),
            })
            .collect()
    }

    /// A renderer by proxy id or UDN: its id and device.
    fn renderer(&self, device: &str) -> Result<(String, rupnp::Device), OpError> {
        let renderers = self.renderers.borrow().clone();
        renderers
            .iter()
            .find(|(id, d)| id.as_str() == device || d.udn() == device)
            .map(|(id, d)| (id.clone(), d.clone()))
            .ok_or_else(|| {
                OpError::NotFound(format!("no MediaRenderer {device} on this gateway's LAN"))
            })
    }

    /// `cpns proxy play DEVICE SERVICE` at the gateway (the owner's, or a member's through
    /// [`cpns_overlay::ProxyMessage::Play`]): checks the owner allows it, gets the content as
    /// any consumer would, and hands it to the renderer.
    pub(crate) async fn play(
        &self,
        ctx: &Context,
        delivery: &crate::delivery::Delivery,
        device: &str,
        service_id: &str,
    ) -> Result<cpns_api::PlayView, OpError> {
        let config = &ctx.config.proxy;
        if !config.expose {
            return Err(OpError::Refused(
                "this gateway's owner does not let PN services out to the LAN (proxy.expose is off)"
                    .into(),
            ));
        }
        if !config.enabled {
            return Err(OpError::Conflict(
                "this gateway's Non-CPNS proxy is off (proxy.enabled)".into(),
            ));
        }
        if device.len() > cpns_overlay::MAX_PLAY_ID || service_id.len() > cpns_overlay::MAX_PLAY_ID
        {
            return Err(OpError::BadRequest("ids of at most 256 bytes".into()));
        }
        self.renderer(device)?;
        let outcome = delivery
            .fetch(service_id, cpns_overlay::DeliveryMode::Pull)
            .await?;
        if outcome.path.is_empty() {
            return Err(OpError::Unavailable(format!(
                "{service_id}: the delivery ended without content ({})",
                outcome.ended
            )));
        }
        render::play(self, ctx, device, service_id, PathBuf::from(outcome.path)).await
    }
}

/// A device the task tracks.
struct Tracked {
    view: ProxiedDeviceView,
    device: rupnp::Device,
    misses: u32,
    /// The ContentDirectory was listed and every item tried.
    browsed: bool,
    /// Rounds since the listing was last read.
    since_browse: u32,
    /// Items published: ObjectID → view.
    items: BTreeMap<String, ProxiedItemView>,
}

/// The module's task: a search every `proxy.search_secs`, while the node runs.
pub(crate) async fn run(ctx: Context, handle: Handle, out: Devices) {
    let config = ctx.config.proxy.clone();
    if !config.enabled {
        return;
    }
    if config.expose {
        tokio::join!(
            search_loop(ctx.clone(), handle, &out),
            render::serve(ctx.clone(), out.exposed.clone())
        );
    } else {
        search_loop(ctx, handle, &out).await;
    }
}

/// The searches, one every `proxy.search_secs`, while the node runs.
async fn search_loop(ctx: Context, handle: Handle, out: &Devices) {
    let config = ctx.config.proxy.clone();
    info!(every = config.search_secs, "Non-CPNS proxy: SSDP search on");
    let http = match crate::delivery::http_client(Some(HTTP_WAIT)) {
        Ok(c) => c,
        Err(e) => {
            warn!("Non-CPNS proxy off: no HTTP client: {e}");
            return;
        }
    };
    // The item cache of older versions, which downloaded every item when they published it.
    let _ = tokio::fs::remove_dir_all(ctx.config.data_dir.join("proxy")).await;
    let mut tracked: HashMap<String, Tracked> = HashMap::new();
    let mut tick = tokio::time::interval(Duration::from_secs(config.search_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let proxy = Round {
        ctx: &ctx,
        handle: &handle,
        http: &http,
    };
    let (notices_tx, mut notices) = tokio::sync::mpsc::channel(NOTICES);
    let listener = tokio::spawn(notify::listen(notices_tx, ctx.cancel.child_token()));
    let mut last_round: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            _ = tick.tick() => {}
            Some(notice) = notices.recv() => match notice {
                notify::Notice::Alive(udn) => {
                    // A device we do not speak for yet: search now rather than at the next
                    // period (at most one extra search per `ALIVE_SEARCH_GAP`).
                    let recent = last_round.is_some_and(|t| t.elapsed() < ALIVE_SEARCH_GAP);
                    if tracked.contains_key(&udn) || recent {
                        continue;
                    }
                    debug!(%udn, "ssdp:alive from an unknown device: searching now");
                }
                notify::Notice::ByeBye(udn) => {
                    let Some(t) = tracked.get(&udn) else { continue };
                    let location = t.device.url().clone();
                    if proxy.still_there(&location).await {
                        info!(%udn, "Non-CPNS proxy: ssdp:byebye not believed, its description still answers");
                        continue;
                    }
                    if let Some(t) = tracked.remove(&udn) {
                        proxy.deregister(t, "said ssdp:byebye").await;
                    }
                    publish_views(out, &tracked);
                    continue;
                }
            },
        }
        tokio::select! {
            _ = ctx.cancel.cancelled() => break,
            () = proxy.round(&mut tracked) => {}
        }
        last_round = Some(tokio::time::Instant::now());
        debug!(devices = tracked.len(), "SSDP search round done");
        publish_views(out, &tracked);
    }
    listener.abort();
}

/// Notices waiting for the proxy's task (more are dropped: the searches still see every
/// device).
const NOTICES: usize = 64;
/// Shortest time between a search and one made because an unknown device said `ssdp:alive`
/// (a LAN host repeating announcements cannot make the proxy search without pause).
const ALIVE_SEARCH_GAP: Duration = Duration::from_secs(5);
/// How a byebye is checked: the device's description is asked this many times, this far
/// apart; one failure and the byebye is believed (a device that has left cannot answer, and
/// any LAN host can send a byebye in another device's name).
const BYEBYE_CHECKS: u32 = 3;
const BYEBYE_CHECK_GAP: Duration = Duration::from_secs(1);

/// Sends the tracked devices to the read side.
fn publish_views(out: &Devices, tracked: &HashMap<String, Tracked>) {
    let mut views: Vec<ProxiedDeviceView> = tracked.values().map(Tracked::snapshot).collect();
    views.sort_by(|a, b| a.id.cmp(&b.id));
    out.views.send_replace(Arc::new(views));
    let renderers: BTreeMap<String, rupnp::Device> = tracked
        .values()
        .filter(|t| t.view.functions.iter().any(|f| f == "rendering"))
        .map(|t| (t.view.id.clone(), t.device.clone()))
        .collect();
    out.renderers.send_replace(Arc::new(renderers));
}

impl Tracked {
    fn snapshot(&self) -> ProxiedDeviceView {
        let mut v = self.view.clone();
        v.services = self.items.values().cloned().collect();
        v
    }
}

/// One search round's borrowed parts.
struct Round<'a> {
    ctx: &'a Context,
    handle: &'a Handle,
    http: &'a reqwest::Client,
}

impl Round<'_> {
    async fn round(&self, tracked: &mut HashMap<String, Tracked>) {
        let found = search().await;
        let now = crate::now();
        let mut seen = Vec::new();
        for device in found {
            let udn = device.udn().to_string();
            seen.push(udn.clone());
            if let Some(t) = tracked.get_mut(&udn) {
                t.misses = 0;
                t.view.last_seen = now;
                continue;
            }
            if tracked.len() >= MAX_DEVICES {
                continue;
            }
            let view = describe(&device, now);
            let me = self.ctx.peer_id;
            self.ctx.trace(
                FLOW,
                1,
                &me,
                &me,
                "Non-CPNS Device registration",
                format!("{} \"{}\" ({})", view.id, view.name, view.device_type),
            );
            self.ctx.trace(
                FLOW,
                2,
                &me,
                &me,
                "CPNS functions identified",
                format!("{}: {}", view.id, view.functions.join(", ")),
            );
            info!(id = %view.id, name = %view.name, "Non-CPNS proxy: device registered");
            tracked.insert(
                udn,
                Tracked {
                    view,
                    device,
                    misses: 0,
                    browsed: false,
                    since_browse: 0,
                    items: BTreeMap::new(),
                },
            );
        }
        let gone: Vec<String> = tracked
            .iter_mut()
            .filter(|(udn, _)| !seen.contains(udn))
            .filter_map(|(udn, t)| {
                t.misses += 1;
                (t.misses >= MISSES).then(|| udn.clone())
            })
            .collect();
        for udn in gone {
            if let Some(t) = tracked.remove(&udn) {
                self.deregister(t, "missed its searches").await;
            }
        }
        for t in tracked.values_mut() {
            t.since_browse += 1;
            let due = !t.browsed || t.items.is_empty() || t.since_browse >= REBROWSE_ROUNDS;
            if due && t.device.find_service(&CONTENT_DIRECTORY).is_some() {
                t.since_browse = 0;
                self.publish_items(t).await;
            }
        }
    }

    /// Lists a MediaServer's items, publishes those not yet published and withdraws those no
    /// longer listed; marks the device browsed once every item was tried (a failed
    /// publication, e.g. before the PN exists, is tried again next round).
    async fn publish_items(&self, t: &mut Tracked) {
        let items = match list_items(&t.device, self.ctx.config.proxy.max_items).await {
            Ok(items) => items,
            Err(e) => {
                warn!(id = %t.view.id, "Non-CPNS proxy: Browse failed: {e}");
                return;
            }
        };
        let listed: Vec<&str> = items.iter().map(|i| i.id.as_str()).collect();
        let vanished: Vec<String> = t
            .items
            .keys()
            .filter(|k| !listed.contains(&k.as_str()))
            .cloned()
            .collect();
        for key in vanished {
            if let Some(item) = t.items.remove(&key)
                && let Err(e) = self.handle.unpublish(&item.service_id).await
            {
                debug!(service = %item.service_id, "not unpublished: {e}");
            }
        }
        debug!(id = %t.view.id, listed = listed.len(), "ContentDirectory listed");
        let max_bytes = self.ctx.config.proxy.max_item_bytes;
        let mut skipped = 0u32;
        let mut complete = true;
        for item in items {
            if t.items.contains_key(&item.id) {
                continue;
            }
            let (url, bytes) = match self.size_of(&t.device, &item, max_bytes).await {
                Ok(found) => found,
                Err(e) => {
                    warn!(id = %t.view.id, item = %item.id, "Non-CPNS proxy: item not published: {e}");
                    skipped += 1;
                    continue;
                }
            };
            let draft = draft_for(&t.view, &item, self.handle.default_visibility());
            // No download: the item's bytes are asked of the device when a PNE fetches it
            // (`delivery/device.rs`).
            let source = crate::delivery::ContentSource {
                origin: crate::delivery::Origin::Device {
                    url: url.to_string(),
                    length: bytes,
                },
                variants: Vec::new(),
            };
            match self.handle.content().publish(draft, Some(source)).await {
                Ok(desc) => {
                    let me = self.ctx.peer_id;
                    self.ctx.trace(
                        FLOW,
                        3,
                        &me,
                        &me,
                        "Service Publication (proxied)",
                        format!("{} {} \"{}\"", t.view.id, desc.id, item.title),
                    );
                    t.items.insert(
                        item.id.clone(),
                        ProxiedItemView {
                            service_id: desc.id,
                            title: crate::trace::clean_text(&item.title, 128),
                            mime: crate::trace::clean_text(&item.mime, 128),
                            bytes,
                        },
                    );
                }
                Err(e) => {
                    info!(id = %t.view.id, "Non-CPNS proxy: publication failed, tried again next round: {e}");
                    complete = false;
                    break;
                }
            }
        }
        t.view.skipped = skipped;
        t.browsed = complete;
    }

    /// The item's URL (checked by [`fetchable`]) and size: the DIDL's `size`, or else the
    /// Content-Length the device answers a HEAD with. An item of unknown size, or over `max`
    /// bytes, is not published (a delivery announces its length before the first byte).
    async fn size_of(
        &self,
        device: &rupnp::Device,
        item: &didl::Item,
        max: u64,
    ) -> Result<(reqwest::Url, u64), String> {
        let url = fetchable(device.url(), &item.url)?;
        let size = match item.size {
            Some(n) => n,
            None => {
                let resp = self
                    .http
                    .head(url.clone())
                    .send()
                    .await
                    .and_then(|r| r.error_for_status())
                    .map_err(|e| e.to_string())?;
                resp.headers()
                    .get(reqwest::header::CONTENT_LENGTH)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok())
                    .ok_or("size unknown (no DIDL size, no Content-Length)")?
            }
        };
        if size > max {
            return Err(format!("{size} bytes, over {max}"));
        }
        Ok((url, size))
    }

    /// Whether the device whose description is at `location` still answers (see
    /// [`BYEBYE_CHECKS`]).
    async fn still_there(&self, location: &rupnp::http::Uri) -> bool {
        for i in 0..BYEBYE_CHECKS {
            tokio::time::sleep(BYEBYE_CHECK_GAP).await;
            let asked =
                tokio::time::timeout(BYEBYE_CHECK_GAP, self.http.get(location.to_string()).send())
                    .await;
            match asked {
                Ok(Ok(r)) if r.status().is_success() => {
                    debug!(%location, check = i, "the description still answers");
                }
                _ => return false,
            }
        }
        true
    }

    /// De-registration: unpublishes the device's services.
    async fn deregister(&self, t: Tracked, why: &str) {
        for item in t.items.values() {
            if let Err(e) = self.handle.unpublish(&item.service_id).await {
                debug!(service = %item.service_id, "not unpublished: {e}");
            }
        }
        let me = self.ctx.peer_id;
        self.ctx.trace(
            FLOW,
            4,
            &me,
            &me,
            "Non-CPNS Device de-registration",
            format!(
                "{} \"{}\" {why}: {} services withdrawn",
                t.view.id,
                t.view.name,
                t.items.len()
            ),
        );
        info!(id = %t.view.id, why, "Non-CPNS proxy: device de-registered");
    }
}

/// One SSDP search for root devices, and their descriptions (bounded in time and count).
async fn search() -> Vec<rupnp::Device> {
    let mut found: Vec<rupnp::Device> = Vec::new();
    let collect = async {
        let stream = match rupnp::discover(&SearchTarget::RootDevice, SEARCH_WAIT, None).await {
            Ok(s) => s,
            Err(e) => {
                debug!("SSDP search failed: {e}");
                return;
            }
        };
        let mut stream = std::pin::pin!(stream);
        while let Some(r) = stream.next().await {
            match r {
                Ok(d) if !found.iter().any(|f| f.udn() == d.udn()) => found.push(d),
                Ok(_) => {}
                Err(e) => debug!("a device's description: {e}"),
            }
            if found.len() >= MAX_DEVICES {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(SEARCH_WAIT + DESCRIBE_WAIT, collect).await;
    found
}

/// The inventory's view of a newly found device, with its CPNS functions.
fn describe(device: &rupnp::Device, now: u64) -> ProxiedDeviceView {
    let upnp_services: Vec<String> = device
        .services_iter()
        .map(|s| s.service_type().to_string())
        .collect();
    ProxiedDeviceView {
        id: format!("upnp-{}", &hex_id(device.udn())[..16]),
        udn: device.udn().to_string(),
        name: crate::trace::clean_text(device.friendly_name(), 128),
        device_type: device.device_type().to_string(),
        manufacturer: crate::trace::clean_text(device.manufacturer(), 128),
        model: crate::trace::clean_text(device.model_name(), 128),
        location: device.url().to_string(),
        functions: functions_of(&upnp_services),
        upnp_services,
        services: Vec::new(),
        skipped: 0,
        first_seen: now,
        last_seen: now,
        playing: None,
    }
}

/// 5.6.10 "identify the available CPNS functionalities": UPnP services → CPNS functions.
fn functions_of(upnp_services: &[String]) -> Vec<String> {
    let has = |typ: &str| {
        upnp_services
            .iter()
            .any(|s| s.contains(&format!(":service:{typ}:")))
    };
    let mut f = Vec::new();
    if has("ContentDirectory") {
        f.push("content-publication".to_string());
        f.push("content-delivery".to_string());
    }
    if has("AVTransport") && has("RenderingControl") {
        f.push("rendering".to_string());
    }
    f
}

/// The service description of one proxied item.
fn draft_for(
    device: &ProxiedDeviceView,
    item: &didl::Item,
    visibility: cpns_directory::Visibility,
) -> ServiceDraft {
    let kind = item.mime.split('/').next().unwrap_or("media").to_string();
    let mut draft = ServiceDraft::new(
        crate::trace::clean_text(&item.title, 128),
        ["dlna".to_string(), "proxied".to_string(), kind],
        visibility,
    );
    draft.id = Some(format!(
        "{}-{}",
        device.id,
        &hex_id(&format!("{}\n{}", device.udn, item.id))[..16]
    ));
    draft.offers = format!("{} from {}", item.mime, device.name);
    // The source stays this gateway (`None`): it is the entity that delivers the content (an
    // `External` source tells consumers to go to the provider themselves).
    let meta = [
        ("proxy.device_name", device.name.clone()),
        ("proxy.device", device.id.clone()),
        ("proxy.udn", device.udn.clone()),
        ("upnp.class", item.class.clone()),
        ("mime", item.mime.clone()),
    ];
    for (k, v) in meta {
        draft
            .metadata
            .insert(k.to_string(), crate::trace::clean_text(&v, 256));
    }
    draft
}

/// Every item of a MediaServer, breadth first from the root container, once per resource
/// URL, at most `max`.
async fn list_items(device: &rupnp::Device, max: usize) -> Result<Vec<didl::Item>, String> {
    let service = device
        .find_service(&CONTENT_DIRECTORY)
        .ok_or("no ContentDirectory")?;
    let mut queue = VecDeque::from(["0".to_string()]);
    let mut visited = 0usize;
    let mut items = Vec::new();
    while let Some(container) = queue.pop_front() {
        visited += 1;
        if visited > MAX_CONTAINERS {
            break;
        }
        let mut start = 0u32;
        loop {
            let args = didl::browse_args(&container, start, PAGE);
            let answer =
                tokio::time::timeout(ACTION_WAIT, service.action(device.url(), "Browse", &args))
                    .await
                    .map_err(|_| "Browse timed out".to_string())?
                    .map_err(|e| format!("Browse: {e}"))?;
            let listing = didl::parse(answer.get("Result").map_or("", String::as_str))?;
            let returned: u32 = answer
                .get("NumberReturned")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            let total: u32 = answer
                .get("TotalMatches")
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            queue.extend(listing.containers);
            for item in listing.items {
                // One file appears under several containers (by folder, artist, album...).
                if items.iter().any(|i: &didl::Item| i.url == item.url) {
                    continue;
                }
                if items.len() >= max {
                    return Ok(items);
                }
                items.push(item);
            }
            start = start.saturating_add(returned);
            if returned == 0 || start >= total {
                break;
            }
        }
    }
    Ok(items)
}

/// The item's URL, if it is `http` on the host that served the device's description: a
/// device's word does not make the gateway fetch other addresses (its own loopback API, other
/// hosts).
fn fetchable(description: &rupnp::http::Uri, item_url: &str) -> Result<reqwest::Url, String> {
    let url = reqwest::Url::parse(item_url).map_err(|e| format!("{item_url}: {e}"))?;
    let host = description.host().unwrap_or_default();
    if url.scheme() != "http" || host.is_empty() || url.host_str() != Some(host) {
        return Err(format!(
            "{item_url} is not on the device that described it ({host})"
        ));
    }
    Ok(url)
}

fn hex_id(s: &str) -> String {
    hex::encode(sha2::Sha256::digest(s.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_urls_on_the_describing_device_are_fetched() {
        let desc: rupnp::http::Uri = "http://10.231.78.2:8200/rootDesc.xml".parse().expect("uri");
        assert!(fetchable(&desc, "http://10.231.78.2:8200/MediaItems/1.wav").is_ok());
        for bad in [
            "http://127.0.0.1:8080/v1/status",
            "http://10.231.78.3:8200/MediaItems/1.wav",
            "https://10.231.78.2/x",
            "file:///etc/passwd",
            "not a url",
        ] {
            assert!(fetchable(&desc, bad).is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn the_proxy_is_off_by_default() {
        assert!(!crate::config::Config::default().proxy.enabled);
    }

    #[test]
    fn functions_follow_the_upnp_services() {
        let server = vec![
            "urn:schemas-upnp-org:service:ContentDirectory:1".to_string(),
            "urn:schemas-upnp-org:service:ConnectionManager:1".to_string(),
        ];
        assert_eq!(
            functions_of(&server),
            vec!["content-publication", "content-delivery"]
        );
        let renderer = vec![
            "urn:schemas-upnp-org:service:AVTransport:1".to_string(),
            "urn:schemas-upnp-org:service:RenderingControl:1".to_string(),
        ];
        assert_eq!(functions_of(&renderer), vec!["rendering"]);
        assert!(functions_of(&[]).is_empty());
    }
}
