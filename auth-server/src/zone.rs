//! Zone-based service (spec Appendix F) at `cpns-auth`: the zone PN's inventory of the PNEs
//! its gateway found in its zone (F 4 and F 7).
//!
//! "The PNE is discovered by the PN GW and registered in the PN inventory of the CPNS server
//! without receiving the request from PNE or input from the user": the zone PN's gateway
//! sends the PNE's credential (which the PNE presented over an authenticated connection),
//! and the server checks the preconditions of F.2 itself: the PNE is enrolled here (it
//! subscribed), not revoked, and authorised for the zone PN by that PN's membership policy
//! (a device of the owner, of an invited user, or an invited device; never an expelled one).
//! A zone registration is not a PN membership: the PN key does not rotate and the PNE gets no
//! key; its own home PN is untouched. Kept in its own table beside the PN record, at most
//! [`MAX_ZONE_MEMBERS`] per zone PN.

use cpns_keys::PeerId;
use cpns_overlay::{
    AuthMessage, MAX_ZONE_MEMBERS, MAX_ZONE_NAME, NodeMode, ZoneMember, ZoneRegistration,
};
use serde::{Deserialize, Serialize};

use crate::authn::{AuthnError, Session, check_credential};
use crate::core::Core;
use crate::error::RequestError;
use crate::pn::{PnAction, admit, authorise, get_pn};
use crate::store::{Batch, Store, Table};

/// One zone registration as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(crate) struct ZoneRecord {
    pub(crate) member: ZoneMember,
    pub(crate) zone: String,
}

fn key(pn_id: &str, entity: &PeerId) -> Vec<u8> {
    let mut k = prefix(pn_id);
    k.extend_from_slice(&entity.to_bytes());
    k
}

fn prefix(pn_id: &str) -> Vec<u8> {
    let mut k = pn_id.as_bytes().to_vec();
    k.push(0);
    k
}

/// The zone PN's zone members, in key order.
fn members(store: &Store, pn_id: &str) -> Result<Vec<ZoneMember>, RequestError> {
    let from = prefix(pn_id);
    let mut to = from.clone();
    if let Some(last) = to.last_mut() {
        *last = 1;
    }
    let mut out = Vec::new();
    for k in store.keys_between(Table::ZoneMembers, &from, &to, MAX_ZONE_MEMBERS)? {
        if let Some(r) = store.get::<ZoneRecord>(Table::ZoneMembers, &k)? {
            out.push(r.member);
        }
    }
    Ok(out)
}

/// The zone members' PeerIds, for the admin's `cpns-auth pns show` (empty if unreadable).
pub(crate) fn member_ids(store: &Store, pn_id: &str) -> Vec<String> {
    members(store, pn_id)
        .map(|l| l.iter().map(|m| m.entity.to_string()).collect())
        .unwrap_or_default()
}

/// F 4: the zone gateway registers a PNE it found.
pub(crate) async fn register(
    core: &Core,
    s: &Session,
    reg: &ZoneRegistration,
    now: u64,
) -> Result<AuthMessage, RequestError> {
    if !s.mode.is_gateway() {
        return Err(RequestError::Forbidden(
            "only a gateway registers PNEs in its zone".into(),
        ));
    }
    if reg.zone.len() > MAX_ZONE_NAME || reg.pn_id.len() > MAX_ZONE_NAME {
        return Err(RequestError::BadRequest(
            "zone name or PN id too long".into(),
        ));
    }
    let pne = *reg.credential.entity();
    if pne == s.entity {
        return Err(RequestError::BadRequest(
            "a gateway is not a PNE of its own zone".into(),
        ));
    }
    check_credential(
        &core.ca.public(),
        &core.revocations(),
        &pne,
        &reg.credential,
        NodeMode::Pne,
        now,
    )?;
    let entity = core
        .entity(&pne)?
        .ok_or(RequestError::Authn(AuthnError::NotEnrolled))?;
    if entity.revoked.is_some() {
        return Err(RequestError::Authn(AuthnError::Revoked {
            serial: reg.credential.serial(),
        }));
    }
    if !entity.serials.contains(&reg.credential.serial()) {
        return Err(RequestError::Authn(AuthnError::NotEnrolled));
    }
    let pn_id = reg.pn_id.clone();
    let members = core
        .commit(|store| -> Result<_, RequestError> {
            let pn = get_pn(store, &pn_id)?;
            authorise(&pn, s, PnAction::Gateway)?;
            admit(&pn, &entity.user, &pne).map_err(|why| {
                RequestError::Forbidden(format!("not authorised for the zone PN: {why}"))
            })?;
            let k = key(&pn_id, &pne);
            let mut list = members(store, &pn_id)?;
            if store.contains(Table::ZoneMembers, &k)? {
                return Ok((Batch::default(), list));
            }
            if list.len() >= MAX_ZONE_MEMBERS {
                return Err(RequestError::Quota(format!(
                    "the zone holds {MAX_ZONE_MEMBERS} PNEs already"
                )));
            }
            let member = ZoneMember {
                entity: pne,
                user: entity.user.clone(),
                device: entity.device.clone(),
                since: now,
            };
            let mut b = Batch::default();
            b.put(
                Table::ZoneMembers,
                &k,
                &ZoneRecord {
                    member: member.clone(),
                    zone: reg.zone.clone(),
                },
            )?;
            list.push(member);
            Ok((b, list))
        })
        .await?;
    tracing::info!(%pne, pn = %pn_id, zone = %reg.zone, "PNE registered in a zone PN");
    Ok(AuthMessage::ZoneMembers { pn_id, members })
}

/// F 7: the zone gateway removes a PNE that left.
pub(crate) async fn deregister(
    core: &Core,
    s: &Session,
    pn_id: &str,
    entity: &PeerId,
) -> Result<AuthMessage, RequestError> {
    let members = core
        .commit(|store| -> Result<_, RequestError> {
            let pn = get_pn(store, pn_id)?;
            authorise(&pn, s, PnAction::Gateway)?;
            let k = key(pn_id, entity);
            let mut b = Batch::default();
            if store.contains(Table::ZoneMembers, &k)? {
                b.delete(Table::ZoneMembers, &k);
            }
            let list = members(store, pn_id)?
                .into_iter()
                .filter(|m| m.entity != *entity)
                .collect();
            Ok((b, list))
        })
        .await?;
    tracing::info!(%entity, pn = %pn_id, "PNE left a zone PN");
    Ok(AuthMessage::ZoneMembers {
        pn_id: pn_id.to_string(),
        members,
    })
}
