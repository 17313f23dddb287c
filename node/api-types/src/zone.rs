//! Zone-based service (spec Appendix F): a Zone PN GW's settings and what it found, and what
//! a PNE was pushed in the zones it visited.

use serde::{Deserialize, Serialize};

/// `GET /v1/zone` (`cpns zone show`): the zone settings, the zone members (gateway) and the
/// zones met and their pushes (PNE).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneView {
    /// The settings in force.
    pub settings: ZoneSettings,
    /// Whether this node acts as a Zone PN GW now (a zone name, gateway mode, a PN).
    pub searching: bool,
    /// Why not, when it does not.
    pub idle_reason: Option<String>,
    /// The zone PN (this gateway's PN), when searching.
    pub pn_id: Option<String>,
    /// PNEs found in the zone and registered in the zone PN's inventory at `cpns-auth`.
    pub members: Vec<ZoneMemberView>,
    /// PNEs that answered a search but were not registered (not authorised, unreachable…).
    pub refused: Vec<ZoneRefusalView>,
    /// Zones this node was found in, and what their gateways pushed to it.
    pub received: Vec<ZoneReceivedView>,
}

/// The zone settings (`PUT /v1/zone`, `cpns zone set`); they replace those of the config
/// file's `[zone]` until cleared (`DELETE /v1/zone`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ZoneSettings {
    /// The zone's name; empty: this node is no Zone PN GW.
    pub name: String,
    /// Ids of this node's own services whose descriptions are pushed to PNEs in the zone.
    pub services: Vec<String>,
    /// Seconds between two searches of the zone's LAN.
    pub search_secs: u64,
    /// Whether this node answers zone gateways' searches (its user allows zone discovery).
    pub discoverable: bool,
}

/// A PNE in the zone, registered at `cpns-auth`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneMemberView {
    /// The PNE.
    pub peer_id: String,
    /// Its user.
    pub user: String,
    /// Its device name.
    pub device: String,
    /// When it was registered (Unix seconds).
    pub registered: u64,
    /// When it last answered a search (Unix seconds).
    pub last_seen: u64,
    /// How many service descriptions it was pushed.
    pub pushed: usize,
}

/// A PNE that answered but was not registered or pushed to, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneRefusalView {
    /// The PNE.
    pub peer_id: String,
    /// Why (cpns-auth's refusal, an unreachable PNE…).
    pub reason: String,
    /// When (Unix seconds).
    pub at: u64,
}

/// A zone this node was found in.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneReceivedView {
    /// The zone's name.
    pub zone: String,
    /// The zone PN.
    pub pn_id: String,
    /// The zone gateway.
    pub gateway: String,
    /// When it was last pushed to (Unix seconds; 0: found, not pushed yet).
    pub pushed_at: u64,
    /// The pushed service descriptions.
    pub services: Vec<ZoneServiceView>,
}

/// One pushed service description.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneServiceView {
    /// The service id.
    pub service_id: String,
    /// Its name.
    pub name: String,
    /// Its description.
    pub description: String,
    /// Its keywords.
    pub keywords: Vec<String>,
    /// Who offers it.
    pub provider: String,
}
