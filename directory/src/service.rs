//! Service descriptions (spec 5.6.4.2) and the shapes of publish and discover calls.
//!
//! 5.6.4.2 says a description tells "what services are available" and "the source of the
//! service (i.e. CPNS entity identification, service identification, service requirement or
//! capability of device hosting the service)". Here: [`ServiceDescription::offers`], its
//! [`Source`], its id, its [`Requirements`] on the consuming device, and an [`Endpoint`] saying
//! how to reach it.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use cpns_keys::{GroupId, PeerId, UnixTime};
use cpns_overlay::{Capabilities, NodeMode, PowerSource};
use serde::{Deserialize, Serialize};

/// A service id: `svc-` followed by 16 hex digits when generated, or any non-empty string up
/// to 64 bytes chosen by the publisher.
pub type ServiceId = String;

/// Who may find and read a service description.
///
/// Displayed (and serialized) as `public`, `pn:<group id>` or `group:<group id>`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Visibility {
    /// Every node of the community DHT can find and read it.
    Public,
    /// Only members of this Personal Network (the default for a node's services): the record
    /// is sealed under the PN key and its keyword keys are keyed hashes under it.
    Pn(GroupId),
    /// Only members of this Service Group (5.6.8), sealed under the group's key.
    Group(GroupId),
}

impl Visibility {
    /// The group whose key seals the description, if any.
    pub fn group(&self) -> Option<&GroupId> {
        match self {
            Visibility::Public => None,
            Visibility::Pn(g) | Visibility::Group(g) => Some(g),
        }
    }
}

impl fmt::Display for Visibility {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Visibility::Public => f.write_str("public"),
            Visibility::Pn(g) => write!(f, "pn:{g}"),
            Visibility::Group(g) => write!(f, "group:{g}"),
        }
    }
}

impl FromStr for Visibility {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == "public" {
            return Ok(Visibility::Public);
        }
        let (kind, id) = s
            .split_once(':')
            .ok_or_else(|| format!("bad visibility {s:?} (public, pn:<id> or group:<id>)"))?;
        if id.is_empty() || id.len() > cpns_keys::MAX_GROUP_ID_LEN {
            return Err(format!("bad group id in visibility {s:?}"));
        }
        match kind {
            "pn" => Ok(Visibility::Pn(GroupId(id.to_owned()))),
            "group" => Ok(Visibility::Group(GroupId(id.to_owned()))),
            _ => Err(format!(
                "bad visibility {s:?} (public, pn:<id> or group:<id>)"
            )),
        }
    }
}

impl From<Visibility> for String {
    fn from(v: Visibility) -> String {
        v.to_string()
    }
}

impl TryFrom<String> for Visibility {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

/// Where a service comes from (5.6.4.2 "source of the service").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Source {
    /// Offered by a CPNS entity (a PNE or gateway), named by its PeerId.
    Entity(PeerId),
    /// Offered by an external Application/Content server that the publishing node speaks for.
    External {
        /// The provider's name.
        name: String,
        /// Where the provider lives, if it has a URL.
        url: Option<String>,
    },
}

/// What a service needs from the consuming device (5.6.4.2 "service requirement"), checked
/// against the consumer's Device Capabilities (5.6.1).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Requirements {
    /// Least total memory of the consuming device, in bytes.
    pub min_memory_bytes: Option<u64>,
    /// Least battery charge when the device runs on battery (ignored on mains power).
    pub min_battery_percent: Option<u8>,
    /// Whether the device must have a screen.
    pub needs_screen: bool,
    /// Whether the device must be on mains power.
    pub mains_power: bool,
    /// Device types allowed (`laptop`, `settop-box`...); empty: any. Compared ignoring case.
    pub device_types: Vec<String>,
    /// CPNS modes allowed; empty: any.
    pub modes: Vec<NodeMode>,
}

/// Why a device does not meet a service's [`Requirements`].
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Unmet {
    /// Not enough memory.
    #[error("needs {need} bytes of memory, device has {have}")]
    Memory {
        /// Required.
        need: u64,
        /// Available.
        have: u64,
    },
    /// Battery too low.
    #[error("needs {need} % battery, device has {have} %")]
    Battery {
        /// Required.
        need: u8,
        /// Available.
        have: u8,
    },
    /// No screen.
    #[error("needs a screen")]
    Screen,
    /// Not on mains power.
    #[error("needs mains power")]
    MainsPower,
    /// Device type not allowed.
    #[error("device type {0:?} is not allowed")]
    DeviceType(String),
    /// Mode not allowed.
    #[error("mode {0} is not allowed")]
    Mode(NodeMode),
}

impl Requirements {
    /// Checks the consumer's capabilities. Memory is the device's total memory; the battery
    /// is checked only when the device currently runs on battery and reports a level.
    pub fn check(&self, caps: &Capabilities) -> Result<(), Unmet> {
        if let Some(need) = self.min_memory_bytes {
            let have = caps.static_caps.memory_bytes;
            if have < need {
                return Err(Unmet::Memory { need, have });
            }
        }
        if let (Some(need), PowerSource::Battery, Some(have)) = (
            self.min_battery_percent,
            caps.dynamic.power,
            caps.dynamic.battery_percent,
        ) && have < need
        {
            return Err(Unmet::Battery { need, have });
        }
        if self.needs_screen && caps.static_caps.screen.is_none() {
            return Err(Unmet::Screen);
        }
        if self.mains_power && caps.dynamic.power != PowerSource::Mains {
            return Err(Unmet::MainsPower);
        }
        let device = &caps.static_caps.device_type;
        if !self.device_types.is_empty()
            && !self
                .device_types
                .iter()
                .any(|t| t.eq_ignore_ascii_case(device))
        {
            return Err(Unmet::DeviceType(device.clone()));
        }
        if !self.modes.is_empty() && !self.modes.contains(&caps.mode) {
            return Err(Unmet::Mode(caps.mode));
        }
        Ok(())
    }
}

/// How to reach a service.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// `cpns-delivery` for content served by the publishing node on `/cpns/delivery/1.0.0`,
    /// or any other protocol name (`http`, `rtsp`...).
    pub protocol: String,
    /// Addresses (multiaddrs or URLs).
    pub addresses: Vec<String>,
}

/// What a publisher hands to [`crate::Directory::publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceDraft {
    /// The id to publish under; `None` makes a fresh `svc-` id. Publishing an id again
    /// replaces the earlier description (its version goes up).
    pub id: Option<ServiceId>,
    /// A short human-readable name.
    pub name: String,
    /// Keywords it is found by; normalised on publish (see [`crate::normalise_keyword`]).
    pub keywords: Vec<String>,
    /// What the service offers, in free text.
    pub offers: String,
    /// Where it comes from; `None`: the publishing entity itself.
    pub source: Option<Source>,
    /// What it needs from a consuming device.
    pub requirements: Requirements,
    /// How to reach it.
    pub endpoint: Endpoint,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// How long the service is offered; `None`: until unpublished (kept alive by republish).
    pub ttl: Option<Duration>,
    /// Who may find it.
    pub visibility: Visibility,
}

impl ServiceDraft {
    /// A draft with a name, keywords and visibility; everything else empty.
    pub fn new(
        name: impl Into<String>,
        keywords: impl IntoIterator<Item = impl Into<String>>,
        visibility: Visibility,
    ) -> Self {
        Self {
            id: None,
            name: name.into(),
            keywords: keywords.into_iter().map(Into::into).collect(),
            offers: String::new(),
            source: None,
            requirements: Requirements::default(),
            endpoint: Endpoint::default(),
            metadata: BTreeMap::new(),
            ttl: None,
            visibility,
        }
    }
}

/// A published service description (5.6.4.2), as stored, found and shown (JSON in the API).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceDescription {
    /// Service identification.
    pub id: ServiceId,
    /// Human-readable name.
    pub name: String,
    /// Normalised keywords.
    pub keywords: Vec<String>,
    /// What the service offers.
    pub offers: String,
    /// Where it comes from.
    pub source: Source,
    /// The entity that published (and signed) it.
    pub publisher: PeerId,
    /// What it needs from a consuming device.
    pub requirements: Requirements,
    /// How to reach it.
    pub endpoint: Endpoint,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Goes up each time the publisher changes the description.
    pub version: u64,
    /// When this version was first published.
    pub published: UnixTime,
    /// When the description stops being valid unless republished.
    pub expires: UnixTime,
    /// Who may find it.
    pub visibility: Visibility,
}

/// A service found by a discovery.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Found {
    /// The verified (and unsealed) description.
    pub description: ServiceDescription,
    /// The peer it came from (`None`: this node's own store).
    pub from_peer: Option<PeerId>,
}

/// Figures of one discovery, to compare with Appendix E's example (3 hops in an 8-node DHT).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Figures {
    /// Requests sent: DHT requests of every lookup plus direct lookups at providers.
    pub requests: u32,
    /// Peers that answered or failed, summed over the lookups (a peer asked by two lookups
    /// counts twice).
    pub peers_contacted: u32,
    /// Wall-clock duration of the whole discovery, in microseconds.
    pub duration_us: u64,
    /// DHT lookups run (provider, record and index lookups).
    pub lookups: u32,
}

impl Figures {
    pub(crate) fn add_query(&mut self, q: &cpns_overlay::QueryFigures) {
        self.requests = self.requests.saturating_add(q.requests);
        self.peers_contacted = self
            .peers_contacted
            .saturating_add(q.successes.saturating_add(q.failures));
        self.lookups = self.lookups.saturating_add(1);
    }

    pub(crate) fn add_direct(&mut self) {
        self.requests = self.requests.saturating_add(1);
        self.peers_contacted = self.peers_contacted.saturating_add(1);
    }
}

/// The outcome of a discovery.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Matching services, newest version of each id.
    pub services: Vec<Found>,
    /// What the discovery cost.
    pub figures: Figures,
}

/// Which visibilities a discovery searches.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// Public services and those of every group whose key this node holds.
    #[default]
    All,
    /// Public services only.
    Public,
    /// Services of one PN or Service Group (this node must hold its key).
    Group(GroupId),
}

/// A discovery request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Query {
    /// Keywords; a service matches when it has every one of them (after normalisation).
    pub keywords: Vec<String>,
    /// If given, only services whose requirements these capabilities meet.
    pub capabilities: Option<Capabilities>,
    /// Which visibilities to search.
    pub scope: Scope,
}

impl Query {
    /// A query for services having all these keywords, in every scope.
    pub fn keywords(keywords: impl IntoIterator<Item = impl Into<String>>) -> Self {
        Self {
            keywords: keywords.into_iter().map(Into::into).collect(),
            capabilities: None,
            scope: Scope::All,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use cpns_overlay::Screen;

    #[test]
    fn visibility_text_round_trip() {
        for v in [
            Visibility::Public,
            Visibility::Pn(GroupId("pn:1f3a".into())),
            Visibility::Group(GroupId("sg:77".into())),
        ] {
            assert_eq!(v.to_string().parse::<Visibility>().unwrap(), v);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<Visibility>(&json).unwrap(), v);
        }
        assert_eq!(Visibility::Pn(GroupId("1".into())).to_string(), "pn:1");
        assert!("private".parse::<Visibility>().is_err());
        assert!("pn:".parse::<Visibility>().is_err());
        let bytes = cpns_overlay::codec::encode(&Visibility::Public).unwrap();
        let back: Visibility = cpns_overlay::codec::decode(&bytes, 100).unwrap();
        assert_eq!(back, Visibility::Public);
    }

    #[test]
    fn requirements_check() {
        let mut caps = Capabilities::default();
        caps.static_caps.memory_bytes = 1 << 30;
        caps.static_caps.device_type = "Laptop".into();
        caps.dynamic.power = PowerSource::Battery;
        caps.dynamic.battery_percent = Some(30);
        let ok = Requirements::default();
        assert_eq!(ok.check(&caps), Ok(()));
        let r = Requirements {
            min_memory_bytes: Some(2 << 30),
            ..Default::default()
        };
        assert!(matches!(r.check(&caps), Err(Unmet::Memory { .. })));
        let r = Requirements {
            min_battery_percent: Some(50),
            ..Default::default()
        };
        assert_eq!(r.check(&caps), Err(Unmet::Battery { need: 50, have: 30 }));
        let r = Requirements {
            mains_power: true,
            ..Default::default()
        };
        assert_eq!(r.check(&caps), Err(Unmet::MainsPower));
        let r = Requirements {
            needs_screen: true,
            ..Default::default()
        };
        assert_eq!(r.check(&caps), Err(Unmet::Screen));
        caps.static_caps.screen = Some(Screen {
            width: 1,
            height: 1,
        });
        assert_eq!(r.check(&caps), Ok(()));
        let r = Requirements {
            device_types: vec!["laptop".into()],
            modes: vec![NodeMode::Pne],
            ..Default::default()
        };
        assert_eq!(r.check(&caps), Ok(()));
        caps.mode = NodeMode::Gateway;
        assert_eq!(r.check(&caps), Err(Unmet::Mode(NodeMode::Gateway)));
    }
}
