//! The JSON shapes of the local API. They live in the `cpns-api` crate (serde only), which the
//! `cpns` CLI shares; this module re-exports them under their old paths and converts the
//! daemon's own types (overlay, directory, keys) into them, so that what goes on the wire is
//! only ever a `cpns-api` type. Field names are part of the API's contract (docs/API.md).
//!
//! The conversions destructure their source, so a field added to a wire type of the overlay or
//! the directory fails to compile here until the API says whether to show it.

pub use cpns_api::{
    AuthServerView, CredentialView, ErrorBody, ErrorDetail, MemberView, NatView, PeerView,
    PingView, PnInventoryView, StatusView,
};

use cpns_api as api;
use cpns_overlay as ov;

/// The API types the daemon uses as they are.
macro_rules! as_is {
    ($($t:ty),*) => { $( impl IntoApi for $t { type Api = $t; fn into_api(self) -> $t { self } } )* };
}
as_is!(api::PairOutcome, api::Notification, api::InvitationView);

/// A daemon type's shape in the API.
pub(crate) trait IntoApi {
    /// The `cpns-api` type.
    type Api;
    /// Converts.
    fn into_api(self) -> Self::Api;
}

impl<T: IntoApi> IntoApi for Vec<T> {
    type Api = Vec<T::Api>;
    fn into_api(self) -> Self::Api {
        self.into_iter().map(IntoApi::into_api).collect()
    }
}

impl IntoApi for ov::NatStatus {
    type Api = NatView;
    fn into_api(self) -> NatView {
        let ov::NatStatus {
            reachability,
            public_addrs,
            relayed_addrs,
            relays,
            relay_server,
            upnp,
            hole_punches_succeeded,
            hole_punches_failed,
            probes_failed: _,
            relay_reservations_served,
            relay_circuits_served,
        } = self;
        let strings = |v: Vec<ov::Multiaddr>| v.iter().map(|a| a.to_string()).collect();
        NatView {
            reachability: reachability.to_string(),
            public_addrs: strings(public_addrs),
            relayed_addrs: strings(relayed_addrs),
            relays: relays.iter().map(|p| p.to_string()).collect(),
            relay_server,
            upnp,
            hole_punches_succeeded,
            hole_punches_failed,
            relay_circuits: relay_circuits_served,
            relay_reservations: relay_reservations_served,
        }
    }
}

/// A PN member as `/v1/status` and `/v1/pn` show it.
pub(crate) fn member(m: &ov::MemberInfo) -> MemberView {
    MemberView {
        peer_id: m.peer_id.to_string(),
        mode: m.mode.to_string(),
        status: m.status.as_str().into(),
        reason: busy_reason(&m.status),
        user: m.user.clone(),
        device: m.device.clone(),
    }
}

/// Why a status is busy, if it is.
pub(crate) fn busy_reason(s: &ov::Status) -> Option<String> {
    match s {
        ov::Status::Busy { reason } => Some(reason.clone()),
        _ => None,
    }
}

impl IntoApi for ov::PnInventorySummary {
    type Api = PnInventoryView;
    fn into_api(self) -> PnInventoryView {
        let ov::PnInventorySummary {
            pn_id,
            owner,
            gateway,
            epoch,
            members,
            services,
            updated,
            details,
            admins: _,
        } = self;
        let details = details
            .into_iter()
            .map(|d| {
                let ov::MemberDetail {
                    peer_id,
                    capabilities,
                    services,
                    last_seen,
                } = d;
                let m = members.iter().find(|m| m.peer_id == peer_id);
                api::MemberDetailView {
                    peer_id: peer_id.to_string(),
                    serial: m.map(|m| m.serial).unwrap_or(0),
                    expires: m.map(|m| m.expires).unwrap_or(0),
                    listen_addrs: m
                        .map(|m| m.listen_addrs.iter().map(|a| a.to_string()).collect())
                        .unwrap_or_default(),
                    capabilities: capabilities.map(IntoApi::into_api),
                    services,
                    last_seen,
                }
            })
            .collect();
        PnInventoryView {
            pn_id,
            owner,
            gateway: gateway.to_string(),
            epoch,
            members: members.iter().map(member).collect(),
            services,
            updated,
            details,
            admin: None,
            proxied: Vec::new(),
        }
    }
}

impl IntoApi for ov::AdmineeSettings {
    type Api = api::AdmineeSettingsView;
    fn into_api(self) -> api::AdmineeSettingsView {
        let ov::AdmineeSettings {
            label,
            may_be_gateway,
            mode,
            services_shown,
            heartbeat_secs,
            offline_after_secs,
        } = self;
        api::AdmineeSettingsView {
            label,
            may_be_gateway,
            mode,
            services_shown,
            heartbeat_secs,
            offline_after_secs,
        }
    }
}

/// The settings an API body asks for, in the protocol's shape.
pub(crate) fn adminee_settings(v: api::AdmineeSettingsView) -> ov::AdmineeSettings {
    let api::AdmineeSettingsView {
        label,
        may_be_gateway,
        mode,
        services_shown,
        heartbeat_secs,
        offline_after_secs,
    } = v;
    ov::AdmineeSettings {
        label,
        may_be_gateway,
        mode,
        services_shown,
        heartbeat_secs,
        offline_after_secs,
    }
}

impl IntoApi for ov::PnAdminInfo {
    type Api = api::PnAdminsView;
    fn into_api(self) -> api::PnAdminsView {
        let ov::PnAdminInfo {
            pn_id,
            admins,
            pending,
            adminees,
        } = self;
        api::PnAdminsView {
            pn_id,
            admins: admins.iter().map(ToString::to_string).collect(),
            pending: pending.iter().map(ToString::to_string).collect(),
            adminees: adminees
                .into_iter()
                .map(|a| api::AdmineeView {
                    peer_id: a.member.to_string(),
                    settings: a.settings.into_api(),
                })
                .collect(),
        }
    }
}

impl IntoApi for ov::NodeMode {
    type Api = api::NodeMode;
    fn into_api(self) -> api::NodeMode {
        match self {
            ov::NodeMode::Pne => api::NodeMode::Pne,
            ov::NodeMode::Gateway => api::NodeMode::Gateway,
            ov::NodeMode::PneGateway => api::NodeMode::PneGateway,
        }
    }
}

/// An API mode back into the overlay's (publish requirements).
pub(crate) fn node_mode(m: api::NodeMode) -> ov::NodeMode {
    match m {
        api::NodeMode::Pne => ov::NodeMode::Pne,
        api::NodeMode::Gateway => ov::NodeMode::Gateway,
        api::NodeMode::PneGateway => ov::NodeMode::PneGateway,
    }
}

impl IntoApi for ov::Capabilities {
    type Api = api::CapabilitiesView;
    fn into_api(self) -> api::CapabilitiesView {
        let ov::Capabilities {
            mode,
            gateway_preference,
            static_caps,
            dynamic,
            revision,
        } = self;
        let ov::StaticCapabilities {
            device_type,
            os,
            screen,
            battery_capacity_mwh,
            cpu,
            cpu_cores,
            memory_bytes,
            chipsets,
            applications,
        } = static_caps;
        let ov::DynamicCapabilities {
            networks,
            wan,
            power,
            battery_percent,
            free_memory_bytes,
            running_applications,
        } = dynamic;
        api::CapabilitiesView {
            mode: mode.into_api(),
            gateway_preference: match gateway_preference {
                ov::GatewayPreference::Auto => api::GatewayPreference::Auto,
                ov::GatewayPreference::Always => api::GatewayPreference::Always,
                ov::GatewayPreference::Never => api::GatewayPreference::Never,
            },
            static_caps: api::StaticCapabilities {
                device_type,
                os,
                screen: screen.map(|s| api::Screen {
                    width: s.width,
                    height: s.height,
                }),
                battery_capacity_mwh,
                cpu,
                cpu_cores,
                memory_bytes,
                chipsets,
                applications: applications
                    .into_iter()
                    .map(|a| api::Application {
                        name: a.name,
                        version: a.version,
                    })
                    .collect(),
            },
            dynamic: api::DynamicCapabilities {
                networks: networks
                    .into_iter()
                    .map(|n| api::NetworkInterface {
                        name: n.name,
                        kind: match n.kind {
                            ov::NetworkKind::Ethernet => api::NetworkKind::Ethernet,
                            ov::NetworkKind::Wifi => api::NetworkKind::Wifi,
                            ov::NetworkKind::Cellular => api::NetworkKind::Cellular,
                            ov::NetworkKind::Bluetooth => api::NetworkKind::Bluetooth,
                            ov::NetworkKind::Loopback => api::NetworkKind::Loopback,
                            ov::NetworkKind::Other => api::NetworkKind::Other,
                        },
                    })
                    .collect(),
                wan,
                power: match power {
                    ov::PowerSource::Mains => api::PowerSource::Mains,
                    ov::PowerSource::Battery => api::PowerSource::Battery,
                },
                battery_percent,
                free_memory_bytes,
                running_applications,
            },
            revision,
        }
    }
}

/// A capabilities patch of the API as the config's overrides.
pub(crate) fn capabilities_patch(p: api::CapabilitiesPatch) -> crate::config::CapabilitiesConfig {
    let api::CapabilitiesPatch {
        device_type,
        screen,
        battery_capacity_mwh,
        power,
        battery_percent,
        wan,
        memory_bytes,
        free_memory_bytes,
        cpu_cores,
        chipsets,
    } = p;
    crate::config::CapabilitiesConfig {
        device_type,
        screen,
        battery_capacity_mwh,
        power,
        battery_percent,
        wan,
        memory_bytes,
        free_memory_bytes,
        cpu_cores,
        chipsets,
    }
}

impl IntoApi for ov::GroupInfo {
    type Api = api::GroupView;
    fn into_api(self) -> api::GroupView {
        let ids = |v: Vec<libp2p::PeerId>| v.iter().map(ToString::to_string).collect();
        api::GroupView {
            group: self.group.0,
            name: self.name,
            owner: self.owner.to_string(),
            members: ids(self.members),
            invited: ids(self.invited),
            epoch: self.epoch,
        }
    }
}

impl IntoApi for cpns_keys::GroupSealed {
    type Api = api::SealedView;
    fn into_api(self) -> api::SealedView {
        api::SealedView {
            group: self.group.0,
            epoch: self.epoch,
            sender: self.sender.to_string(),
            nonce: self.nonce.to_vec(),
            ciphertext: self.ciphertext,
        }
    }
}

/// A sealed body of the API back into the keys' type; `Err` names the bad field.
pub(crate) fn sealed(s: api::SealedView) -> Result<cpns_keys::GroupSealed, String> {
    Ok(cpns_keys::GroupSealed {
        group: cpns_keys::GroupId(s.group),
        epoch: s.epoch,
        sender: s.sender.parse().map_err(|e| format!("sender: {e}"))?,
        nonce: s
            .nonce
            .try_into()
            .map_err(|_| "nonce: not 24 bytes".to_string())?,
        ciphertext: s.ciphertext,
    })
}

impl IntoApi for ov::UsageReport {
    type Api = api::QueuedReport;
    fn into_api(self) -> api::QueuedReport {
        api::QueuedReport {
            entity: self.entity.to_string(),
            credential_serial: self.credential.body.serial,
            sequence: self.sequence,
            records: self
                .records
                .into_iter()
                .map(crate::usage::record_view)
                .collect(),
        }
    }
}

impl IntoApi for cpns_directory::Requirements {
    type Api = api::Requirements;
    fn into_api(self) -> api::Requirements {
        let cpns_directory::Requirements {
            min_memory_bytes,
            min_battery_percent,
            needs_screen,
            mains_power,
            device_types,
            modes,
        } = self;
        api::Requirements {
            min_memory_bytes,
            min_battery_percent,
            needs_screen,
            mains_power,
            device_types,
            modes: modes.into_iter().map(IntoApi::into_api).collect(),
        }
    }
}

/// API requirements into the directory's (publish).
pub(crate) fn requirements(r: api::Requirements) -> cpns_directory::Requirements {
    let api::Requirements {
        min_memory_bytes,
        min_battery_percent,
        needs_screen,
        mains_power,
        device_types,
        modes,
    } = r;
    cpns_directory::Requirements {
        min_memory_bytes,
        min_battery_percent,
        needs_screen,
        mains_power,
        device_types,
        modes: modes.into_iter().map(node_mode).collect(),
    }
}

impl IntoApi for cpns_directory::ServiceDescription {
    type Api = api::ServiceView;
    fn into_api(self) -> api::ServiceView {
        let cpns_directory::ServiceDescription {
            id,
            name,
            keywords,
            offers,
            source,
            publisher,
            requirements,
            endpoint,
            metadata,
            version,
            published,
            expires,
            visibility,
        } = self;
        api::ServiceView {
            id,
            name,
            keywords,
            offers,
            source: match source {
                cpns_directory::Source::Entity(p) => api::SourceView::Entity(p.to_string()),
                cpns_directory::Source::External { name, url } => {
                    api::SourceView::External { name, url }
                }
            },
            publisher: publisher.to_string(),
            requirements: requirements.into_api(),
            endpoint: api::Endpoint {
                protocol: endpoint.protocol,
                addresses: endpoint.addresses,
            },
            metadata,
            version,
            published,
            expires,
            visibility: visibility.to_string(),
        }
    }
}

impl IntoApi for cpns_directory::Found {
    type Api = api::FoundView;
    fn into_api(self) -> api::FoundView {
        api::FoundView {
            description: self.description.into_api(),
            from_peer: self.from_peer.map(|p| p.to_string()),
        }
    }
}

impl IntoApi for cpns_directory::Discovery {
    type Api = api::DiscoveryView;
    fn into_api(self) -> api::DiscoveryView {
        let f = self.figures;
        api::DiscoveryView {
            services: self.services.into_api(),
            figures: api::FiguresView {
                requests: f.requests,
                peers_contacted: f.peers_contacted,
                duration_us: f.duration_us,
                lookups: f.lookups,
            },
        }
    }
}

impl IntoApi for crate::trace::TraceEvent {
    type Api = api::TraceEvent;
    fn into_api(self) -> api::TraceEvent {
        let crate::trace::TraceEvent {
            seq,
            flow,
            step,
            from,
            to,
            message,
            time,
            time_ms,
            detail,
        } = self;
        api::TraceEvent {
            seq,
            flow,
            step,
            from,
            to,
            message,
            time,
            time_ms,
            detail,
        }
    }
}

impl IntoApi for crate::delivery::FetchOutcome {
    type Api = api::FetchOutcome;
    fn into_api(self) -> api::FetchOutcome {
        let crate::delivery::FetchOutcome {
            service_id,
            offerer,
            mode,
            decision,
            bytes,
            sha256,
            path,
            duration_ms,
            usage,
            session,
            ended,
            variant,
            collector,
        } = self;
        api::FetchOutcome {
            service_id,
            offerer,
            mode,
            decision,
            bytes,
            sha256,
            path,
            duration_ms,
            usage,
            session,
            ended,
            variant,
            collector,
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// The API's mirror of Device Capabilities serializes exactly as the overlay's own type
    /// did when the daemon sent it as is (the wire stays the same).
    #[test]
    fn capabilities_json_unchanged() {
        let mut c = ov::Capabilities {
            mode: ov::NodeMode::PneGateway,
            revision: 7,
            ..Default::default()
        };
        c.static_caps.device_type = "laptop".into();
        c.static_caps.screen = Some(ov::Screen {
            width: 1920,
            height: 1080,
        });
        c.static_caps.applications.push(ov::Application {
            name: "cpns-node".into(),
            version: "0.1.0".into(),
        });
        c.dynamic.power = ov::PowerSource::Battery;
        c.dynamic.battery_percent = Some(40);
        c.dynamic.networks.push(ov::NetworkInterface {
            name: "wlan0".into(),
            kind: ov::NetworkKind::Wifi,
        });
        let old = serde_json::to_value(&c).unwrap();
        assert_eq!(serde_json::to_value(c.into_api()).unwrap(), old);
    }

    /// The same for a service description, with an entity source, requirements and modes.
    #[test]
    fn service_json_unchanged() {
        let peer = cpns_keys::Identity::from_secret_bytes([5; 32]).peer_id();
        let mut d = cpns_directory::ServiceDescription {
            id: "svc-1".into(),
            name: "Printer".into(),
            keywords: vec!["printer".into()],
            offers: "A4".into(),
            source: cpns_directory::Source::Entity(peer),
            publisher: peer,
            requirements: cpns_directory::Requirements {
                modes: vec![ov::NodeMode::Pne],
                min_memory_bytes: Some(5),
                ..Default::default()
            },
            endpoint: cpns_directory::Endpoint {
                protocol: "ipp".into(),
                addresses: vec!["ipp://x".into()],
            },
            metadata: [("room".to_string(), "kitchen".to_string())].into(),
            version: 3,
            published: 10,
            expires: 20,
            visibility: cpns_directory::Visibility::Pn(cpns_keys::GroupId("pn-1".into())),
        };
        let found = cpns_directory::Found {
            description: d.clone(),
            from_peer: Some(peer),
        };
        let old = serde_json::to_value(&found).unwrap();
        assert_eq!(serde_json::to_value(found.into_api()).unwrap(), old);
        d.source = cpns_directory::Source::External {
            name: "radio".into(),
            url: None,
        };
        let old = serde_json::to_value(&d).unwrap();
        assert_eq!(serde_json::to_value(d.into_api()).unwrap(), old);
    }

    /// Group records and sealed bodies too; a sealed body round-trips through the API.
    #[test]
    fn groups_and_sealed_json_unchanged() {
        let peer = cpns_keys::Identity::from_secret_bytes([6; 32]).peer_id();
        let g = ov::GroupInfo {
            group: cpns_keys::GroupId("sg-1".into()),
            name: "photos".into(),
            owner: peer,
            members: vec![peer],
            invited: vec![],
            epoch: 2,
        };
        let old = serde_json::to_value(&g).unwrap();
        assert_eq!(serde_json::to_value(g.into_api()).unwrap(), old);
        let s = cpns_keys::GroupSealed {
            group: cpns_keys::GroupId("pn-1".into()),
            epoch: 3,
            sender: peer,
            nonce: [9; 24],
            ciphertext: vec![1, 2, 3],
        };
        let old = serde_json::to_value(&s).unwrap();
        let view = s.clone().into_api();
        assert_eq!(serde_json::to_value(&view).unwrap(), old);
        assert_eq!(sealed(view).unwrap(), s);
    }
}
