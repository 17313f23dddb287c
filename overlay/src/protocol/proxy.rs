//! The Non-CPNS proxy (5.6.10) between a member and its gateway: a member asks the gateway to
//! play a PN service on a UPnP MediaRenderer the gateway's proxy speaks for (AVTransport
//! `SetAVTransportURI`, then `Play`).

use serde::{Deserialize, Serialize};

/// Longest device id or service id in a play request, in bytes.
pub const MAX_PLAY_ID: usize = 256;

/// Member ↔ gateway messages of the Non-CPNS proxy.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProxyMessage {
    /// Play a PN service on a renderer (answered by [`ProxyMessage::Playing`]).
    Play {
        /// The renderer: the proxy's id (`upnp-…`) or its UDN.
        device: String,
        /// The PN service to play.
        service_id: String,
    },
    /// The renderer took it.
    Playing {
        /// The renderer's proxy id.
        device: String,
        /// The service played.
        service_id: String,
        /// The URL the renderer was given (on the gateway's LAN address).
        url: String,
        /// The renderer's `CurrentTransportState` after `Play` (`PLAYING`, `TRANSITIONING`…).
        state: String,
    },
    /// A member asks its gateway for the non-CPNS devices it speaks for (answered by
    /// [`ProxyMessage::DeviceList`]), for the PN Inventory.
    Devices,
    /// The proxied PNEs of the gateway (at most [`MAX_PROXIED`]).
    DeviceList {
        /// The devices.
        devices: Vec<ProxiedPne>,
    },
}

/// Most proxied devices listed in one answer.
pub const MAX_PROXIED: usize = 64;

/// A non-CPNS device the gateway speaks for, as the PN Inventory lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProxiedPne {
    /// The proxy's id (`upnp-…`).
    pub id: String,
    /// Its friendly name.
    pub name: String,
    /// Its UPnP device type.
    pub device_type: String,
    /// Its CPNS functions (`content-publication`, `content-delivery`, `rendering`).
    pub functions: Vec<String>,
    /// How many PN services it offers through the gateway.
    pub services: u32,
}

impl ProxyMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            ProxyMessage::Play { .. } => "ProxyPlay",
            ProxyMessage::Playing { .. } => "ProxyPlaying",
            ProxyMessage::Devices => "ProxyDevices",
            ProxyMessage::DeviceList { .. } => "ProxyDeviceList",
        }
    }
}
