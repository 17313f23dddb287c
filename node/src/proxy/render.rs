//! Playing a PN service on a UPnP MediaRenderer of the gateway's LAN (5.6.10 "Service/
//! Content Delivery" towards a non-CPNS device): a member asks its gateway, the gateway gets
//! the content (the ordinary delivery, as any consumer), serves it over HTTP on its LAN
//! address at an unguessable URL, and tells the renderer `SetAVTransportURI` then `Play`.
//!
//! Only with the owner's choice (`proxy.expose`, off by default): it is the one thing the
//! proxy offers to the LAN. Only the items handed to a renderer are served, each under a
//! fresh 128-bit token, at most [`MAX_EXPOSED`] at once (a new play on the same renderer
//! replaces its item); nothing else answers on that port.

use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use cpns_api::PlayView;
use futures::StreamExt;
use rupnp::ssdp::URN;
use tracing::{info, warn};

use super::{ACTION_WAIT, Proxy};
use crate::context::Context;
use crate::error::OpError;
use crate::trace::flow::PROXY as FLOW;

/// Most items served to renderers at once.
const MAX_EXPOSED: usize = 8;

const AV_TRANSPORT: URN = URN::service("schemas-upnp-org", "AVTransport", 1);

/// One item handed to a renderer.
struct Item {
    token: String,
    path: PathBuf,
    mime: String,
    view: PlayView,
    served: Arc<AtomicU64>,
}

/// The items served to renderers, and the port they are served on (0: not serving).
#[derive(Default)]
pub(crate) struct Exposed {
    port: AtomicU16,
    items: Mutex<VecDeque<Item>>,
}

impl Exposed {
    fn items(&self) -> std::sync::MutexGuard<'_, VecDeque<Item>> {
        self.items.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a renderer was last given, with the bytes it read so far.
    pub(crate) fn playing(&self, device: &str) -> Option<PlayView> {
        self.items()
            .iter()
            .find(|i| i.view.device == device)
            .map(|i| PlayView {
                served_bytes: i.served.load(Ordering::Relaxed),
                ..i.view.clone()
            })
    }

    fn add(&self, item: Item) {
        let mut items = self.items();
        items.retain(|i| i.view.device != item.view.device);
        while items.len() >= MAX_EXPOSED {
            items.pop_front();
        }
        items.push_back(item);
    }

    fn lookup(&self, token: &str) -> Option<(PathBuf, String, Arc<AtomicU64>)> {
        self.items()
            .iter()
            .find(|i| i.token == token)
            .map(|i| (i.path.clone(), i.mime.clone(), i.served.clone()))
    }
}

/// The HTTP server renderers read from, while the node runs (only with `proxy.expose`).
pub(crate) async fn serve(ctx: Context, exposed: Arc<Exposed>) {
    let port = ctx.config.proxy.expose_port;
    let listener = match tokio::net::TcpListener::bind(SocketAddr::from((
        Ipv4Addr::UNSPECIFIED,
        port,
    )))
    .await
    {
        Ok(l) => l,
        Err(e) => {
            warn!("proxy.expose: cannot listen on port {port}: {e}");
            return;
        }
    };
    let bound = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    exposed.port.store(bound, Ordering::Relaxed);
    info!(
        port = bound,
        "proxy.expose: serving the items played on renderers"
    );
    let app = axum::Router::new()
        .route("/cpns/play/{token}", axum::routing::get(item))
        .with_state(exposed);
    let cancel = ctx.cancel.clone();
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(async move { cancel.cancelled().await })
        .await
    {
        warn!("proxy.expose server: {e}");
    }
}

async fn item(State(exposed): State<Arc<Exposed>>, Path(token): Path<String>) -> Response {
    let Some((path, mime, served)) = exposed.lookup(&token) else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let Ok(file) = tokio::fs::File::open(&path).await else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
    let body = tokio_util::io::ReaderStream::new(file).map(move |chunk| {
        if let Ok(c) = &chunk {
            served.fetch_add(c.len() as u64, Ordering::Relaxed);
        }
        chunk
    });
    (
        [
            (header::CONTENT_TYPE, mime),
            (header::CONTENT_LENGTH, len.to_string()),
        ],
        axum::body::Body::from_stream(body),
    )
        .into_response()
}

/// A MIME type from a file name (renderers look at the bytes too).
fn mime_of(name: &str) -> &'static str {
    let ext = name.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match ext.as_str() {
        "wav" => "audio/x-wav",
        "mp3" => "audio/mpeg",
        "ogg" | "oga" => "audio/ogg",
        "flac" => "audio/flac",
        "m4a" => "audio/mp4",
        "mp4" | "m4v" => "video/mp4",
        "mkv" => "video/x-matroska",
        "webm" => "video/webm",
        "jpg" | "jpeg" => "image/jpeg",
        "png" => "image/png",
        _ => "application/octet-stream",
    }
}

/// The local address this host uses towards `peer` (a routing lookup: nothing is sent).
fn local_ip_towards(peer: IpAddr) -> Result<IpAddr, OpError> {
    let s = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
        .map_err(|e| OpError::Internal(e.to_string()))?;
    s.connect(SocketAddr::new(peer, 9))
        .map_err(|e| OpError::Unavailable(format!("no route to the renderer: {e}")))?;
    s.local_addr()
        .map(|a| a.ip())
        .map_err(|e| OpError::Internal(e.to_string()))
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The gateway's side of `cpns proxy play`: the content at `path` (already delivered to this
/// gateway) handed to the renderer `device`.
pub(crate) async fn play(
    proxy: &Proxy,
    ctx: &Context,
    device: &str,
    service_id: &str,
    path: PathBuf,
) -> Result<PlayView, OpError> {
    let (id, renderer) = proxy.renderer(device)?;
    let av = renderer.find_service(&AV_TRANSPORT).ok_or_else(|| {
        OpError::Conflict(format!("{id} has no AVTransport: not a MediaRenderer"))
    })?;
    let port = proxy.exposed.port.load(Ordering::Relaxed);
    if port == 0 {
        return Err(OpError::Unavailable(
            "the gateway's server for renderers is not listening".into(),
        ));
    }
    let host: IpAddr = renderer
        .url()
        .host()
        .and_then(|h| h.trim_matches(['[', ']']).parse().ok())
        .ok_or_else(|| OpError::Conflict(format!("{id}: its location has no IP address")))?;
    let local = local_ip_towards(host)?;
    let token = hex::encode(rand::random::<[u8; 16]>());
    let url = match local {
        IpAddr::V4(ip) => format!("http://{ip}:{port}/cpns/play/{token}"),
        IpAddr::V6(ip) => format!("http://[{ip}]:{port}/cpns/play/{token}"),
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut view = PlayView {
        device: id.clone(),
        service_id: service_id.to_string(),
        url: url.clone(),
        state: String::new(),
        served_bytes: 0,
    };
    proxy.exposed.add(Item {
        token,
        path,
        mime: mime_of(&name).to_string(),
        view: view.clone(),
        served: Arc::new(AtomicU64::new(0)),
    });
    let me = ctx.peer_id;
    let soap = |action: &'static str, args: String| {
        let av = av.clone();
        let at = renderer.url().clone();
        async move {
            tokio::time::timeout(ACTION_WAIT, av.action(&at, action, &args))
                .await
                .map_err(|_| {
                    OpError::Unavailable(format!("{action}: no answer from the renderer"))
                })?
                .map_err(|e| OpError::Refused(format!("{action}: {e}")))
        }
    };
    ctx.trace(
        FLOW,
        5,
        &me,
        &me,
        "SetAVTransportURI",
        format!("{id}: {service_id}"),
    );
    soap(
        "SetAVTransportURI",
        format!(
            "<InstanceID>0</InstanceID><CurrentURI>{}</CurrentURI><CurrentURIMetaData></CurrentURIMetaData>",
            xml_escape(&url)
        ),
    )
    .await?;
    ctx.trace(FLOW, 6, &me, &me, "Play", id.clone());
    soap("Play", "<InstanceID>0</InstanceID><Speed>1</Speed>".into()).await?;
    let info = soap("GetTransportInfo", "<InstanceID>0</InstanceID>".into()).await?;
    view.state = info
        .get("CurrentTransportState")
        .map(|s| crate::trace::clean_text(s, 32))
        .unwrap_or_default();
    info!(device = %id, service = %service_id, state = %view.state, "playing on a renderer");
    Ok(view)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mime_types_from_names() {
        assert_eq!(mime_of("tone.WAV"), "audio/x-wav");
        assert_eq!(mime_of("x"), "application/octet-stream");
    }

    #[test]
    fn a_new_play_on_a_renderer_replaces_its_item_and_the_table_is_bounded() {
        let e = Exposed::default();
        let item = |device: &str, token: &str| Item {
            token: token.into(),
            path: PathBuf::from("/nonexistent"),
            mime: "audio/x-wav".into(),
            view: PlayView {
                device: device.into(),
                service_id: "s".into(),
                url: String::new(),
                state: String::new(),
                served_bytes: 0,
            },
            served: Arc::new(AtomicU64::new(0)),
        };
        e.add(item("r1", "a"));
        e.add(item("r1", "b"));
        assert!(e.lookup("a").is_none(), "the old item is no longer served");
        assert!(e.lookup("b").is_some());
        for i in 0..20 {
            e.add(item(&format!("d{i}"), &format!("t{i}")));
        }
        assert_eq!(e.items().len(), MAX_EXPOSED);
        assert!(e.lookup("t0").is_none() && e.lookup("t19").is_some());
    }
}
