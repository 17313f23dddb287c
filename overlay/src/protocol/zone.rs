//! Zone-based service (spec Appendix F): a Zone PN GW searches its zone's LAN every period,
//! registers the PNEs that answer (and are authorised at `cpns-auth`) in its zone PN's
//! inventory, checks each is available, and pushes the zone's service descriptions to it.
//!
//! Three kinds of bytes belong to this flow:
//! * [`ZoneSearch`] and [`ZoneAnswer`]: UDP datagrams on the zone LAN (the periodic search
//!   and an opted-in PNE's answer). They are untrusted hints only: whoever answers is then
//!   checked over an authenticated libp2p connection.
//! * [`ZoneMessage`]: the zone gateway's requests to a PNE on `/cpns/1.0.0` and their answers.
//! * The `Zone*` variants of [`super::AuthMessage`]: registration and de-registration in the
//!   zone PN's inventory at `cpns-auth`.

use cpns_keys::{EntityCredential, UnixTime};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};

use super::PnId;

/// Longest zone name, in bytes.
pub const MAX_ZONE_NAME: usize = 64;
/// Most service descriptions one push carries.
pub const MAX_ZONE_SERVICES: usize = 64;
/// Longest text field of a pushed service description, in bytes.
pub const MAX_ZONE_TEXT: usize = 256;
/// Most keywords of one pushed service description.
pub const MAX_ZONE_KEYWORDS: usize = 16;
/// Largest search or answer datagram accepted.
pub const MAX_ZONE_DATAGRAM: usize = 512;
/// Most zone members `cpns-auth` lists in one answer (and keeps per zone PN).
pub const MAX_ZONE_MEMBERS: usize = 1024;

/// F step 1, the periodic search: sent by the Zone PN GW to the zone LAN's multicast group.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneSearch {
    /// The zone's name.
    pub zone: String,
    /// The zone gateway (who an answer will hear from, over libp2p).
    pub gateway: PeerId,
    /// Fresh for each search, echoed by answers (a stale answer is ignored).
    pub nonce: u64,
}

/// F step 2: an opted-in PNE's answer to a search, sent back to the searcher's address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneAnswer {
    /// The search's nonce.
    pub nonce: u64,
    /// The PNE.
    pub peer: PeerId,
    /// The TCP ports its libp2p listeners use on the address the answer came from.
    pub tcp_ports: Vec<u16>,
}

/// One service description pushed to a PNE in the zone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneService {
    /// The service's id in the directory (fetch it with `cpns content fetch ID`).
    pub service_id: String,
    /// Its name.
    pub name: String,
    /// A description for people.
    pub description: String,
    /// Its keywords.
    pub keywords: Vec<String>,
    /// Who offers it.
    pub provider: PeerId,
}

impl ZoneService {
    /// Whether every field is within the limits.
    pub fn within_limits(&self) -> bool {
        self.service_id.len() <= MAX_ZONE_TEXT
            && self.name.len() <= MAX_ZONE_TEXT
            && self.description.len() <= MAX_ZONE_TEXT
            && self.keywords.len() <= MAX_ZONE_KEYWORDS
            && self.keywords.iter().all(|k| k.len() <= MAX_ZONE_TEXT)
    }
}

/// A PNE registered in a zone PN's inventory at `cpns-auth`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ZoneMember {
    /// The PNE.
    pub entity: PeerId,
    /// Its user.
    pub user: String,
    /// Its device name.
    pub device: String,
    /// When it was registered.
    pub since: UnixTime,
}

/// The zone gateway's requests to a PNE (on `/cpns/1.0.0`) and their answers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ZoneMessage {
    /// F step 3: the zone gateway presents itself to a PNE that answered its search. Carries
    /// its credential, so a PNE that has never met it can check it (the request is open);
    /// refused unless the PNE's user allows zone discovery.
    Discover {
        /// The zone's name.
        zone: String,
        /// The zone PN.
        pn_id: PnId,
        /// The gateway's credential.
        credential: EntityCredential,
    },
    /// The PNE's answer to [`ZoneMessage::Discover`]: its own credential.
    Present {
        /// The PNE's credential.
        credential: EntityCredential,
    },
    /// F step 5: the gateway checks that the PNE is available for a push.
    Check {
        /// The zone's name.
        zone: String,
    },
    /// The answer: whether it takes a push now.
    Available {
        /// Whether the PNE accepts a push now.
        accepts: bool,
    },
    /// F step 6: the zone's service descriptions (answered by `Ack`).
    Push {
        /// The zone's name.
        zone: String,
        /// The zone PN.
        pn_id: PnId,
        /// The descriptions (at most [`MAX_ZONE_SERVICES`]).
        services: Vec<ZoneService>,
    },
}

impl ZoneMessage {
    /// Stable message name for traces.
    pub fn name(&self) -> &'static str {
        match self {
            ZoneMessage::Discover { .. } => "ZoneEntityDiscovery",
            ZoneMessage::Present { .. } => "ZoneEntityPresent",
            ZoneMessage::Check { .. } => "ZoneAvailabilityCheck",
            ZoneMessage::Available { .. } => "ZoneAvailability",
            ZoneMessage::Push { .. } => "ZonePush",
        }
    }
}

/// F step 4: what the zone gateway sends `cpns-auth` to register a PNE.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ZoneRegistration {
    /// The zone PN (the gateway's PN).
    pub pn_id: PnId,
    /// The zone's name.
    pub zone: String,
    /// The PNE's credential, as it presented it over the authenticated connection.
    pub credential: EntityCredential,
}
