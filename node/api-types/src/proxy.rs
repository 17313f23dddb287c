//! The Non-CPNS proxy (5.6.10): `/v1/proxy/devices…`.

use serde::{Deserialize, Serialize};

/// A UPnP/DLNA device the gateway's proxy found on its LAN and speaks for (a proxied PNE).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedDeviceView {
    /// The proxy's id for it: `upnp-` and 16 hex digits of a hash of its UDN.
    pub id: String,
    /// Its UPnP Unique Device Name (`uuid:…`).
    pub udn: String,
    /// Its friendly name.
    pub name: String,
    /// Its UPnP device type (`urn:schemas-upnp-org:device:MediaServer:1`).
    pub device_type: String,
    /// Manufacturer and model, as its description says.
    pub manufacturer: String,
    /// Model name.
    pub model: String,
    /// Where its description lives (on the LAN).
    pub location: String,
    /// The CPNS functions detected from its UPnP services (docs/PROXY.md has the mapping):
    /// `content-publication`, `content-delivery`, `rendering`.
    pub functions: Vec<String>,
    /// Its UPnP services (`urn:schemas-upnp-org:service:ContentDirectory:1`, …).
    pub upnp_services: Vec<String>,
    /// The services the proxy published to the PN for it.
    pub services: Vec<ProxiedItemView>,
    /// Items it offers that were not published (over a limit, or not fetchable).
    pub skipped: u32,
    /// When first seen (Unix seconds).
    pub first_seen: u64,
    /// When last answering a search (Unix seconds).
    pub last_seen: u64,
    /// What a renderer was last given to play through the gateway (`cpns proxy play`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub playing: Option<PlayView>,
}

/// A non-CPNS device a PN's gateway speaks for, as the PN Inventory and `cpns status` list it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedPneView {
    /// The proxy's id (`upnp-…`).
    pub id: String,
    /// Its friendly name.
    pub name: String,
    /// Its UPnP device type.
    pub device_type: String,
    /// Its CPNS functions.
    pub functions: Vec<String>,
    /// How many PN services it offers through the gateway.
    pub services: u32,
    /// The gateway that speaks for it.
    pub gateway: String,
}

/// `POST /v1/proxy/play` (`cpns proxy play DEVICE SERVICE`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayBody {
    /// The renderer: the proxy's id (`upnp-…`) or its UDN.
    pub device: String,
    /// The PN service to play.
    pub service_id: String,
}

/// A PN service played on a renderer through the gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlayView {
    /// The renderer's proxy id.
    pub device: String,
    /// The service.
    pub service_id: String,
    /// The URL the renderer was given (the gateway's LAN address).
    pub url: String,
    /// The renderer's transport state after `Play` (`PLAYING`, `TRANSITIONING`…).
    pub state: String,
    /// Bytes the renderer has read from that URL so far (at the gateway).
    pub served_bytes: u64,
}

/// One of a proxied device's items, published as a PN service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedItemView {
    /// The published service's id.
    pub service_id: String,
    /// The item's title.
    pub title: String,
    /// Its MIME type.
    pub mime: String,
    /// Its size in bytes.
    pub bytes: u64,
}
