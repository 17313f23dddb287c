//! One request from a node in, exactly one answer out.
//!
//! Open to any peer: [`AuthMessage::EnrolRequest`], [`AuthMessage::RevocationsRequest`] and
//! the authentication exchange itself (B.1 steps 8 and 10). Everything else needs a live
//! session of the requesting PeerId (the noise-authenticated connection's), and gateway-only
//! requests a session in a gateway mode. Typed errors become [`ErrorCode`]s here, and nothing
//! a peer sends can make this panic: every input is checked, every map bounded.

use std::time::Instant;

use cpns_keys::PeerId;
use cpns_overlay::{AuthMessage, Capabilities, ErrorCode, Message, SessionInfo};
use tracing::debug;

use crate::authn::Session;
use crate::core::{Core, Followup, unix_now};
use crate::error::{EnrolmentError, RequestError, forbidden};
use crate::records::EntityRecord;
use crate::store::{Batch, Table};

/// Largest capabilities record kept per entity (encoded). A device's capabilities are a few
/// hundred bytes; the frame limit (1 MiB) is far too much to rewrite on every update.
pub(crate) const MAX_CAPABILITIES_BYTES: usize = 16 * 1024;

/// An answer and what the server does after sending it.
pub(crate) struct Handled {
    pub(crate) reply: Message,
    pub(crate) after: Option<Followup>,
}

impl Handled {
    fn reply(reply: Message) -> Self {
        Self { reply, after: None }
    }
}

fn auth(m: AuthMessage) -> Result<Handled, RequestError> {
    Ok(Handled::reply(Message::Auth(m)))
}

fn require_gateway(s: &Session) -> Result<(), RequestError> {
    if s.mode.is_gateway() {
        Ok(())
    } else {
        Err(forbidden(
            "this request needs a session in gateway mode (authenticate as a gateway)",
        ))
    }
}

/// Handles one request from `peer`.
pub(crate) async fn handle(core: &Core, peer: PeerId, message: Message) -> Handled {
    let name = message.name();
    let Message::Auth(message) = message else {
        return refuse(
            core,
            ErrorCode::Unsupported,
            format!("cpns-auth answers /cpns/auth/1.0.0 messages only, not {name}"),
        );
    };
    let now = unix_now();
    let at = Instant::now();
    let result = match message {
        AuthMessage::EnrolRequest(req) => match core.enrol(peer, &req, now, at).await {
            Ok(resp) => {
                core.metrics.enrolment("ok");
                tracing::info!(%peer, device = %req.device, "entity enrolled");
                return Handled::reply(Message::Auth(AuthMessage::EnrolResponse(resp)));
            }
            Err(e) => {
                core.metrics.enrolment(e.reason());
                if let EnrolmentError::Store(err) = &e {
                    tracing::error!("enrolment failed: {err}");
                }
                return refuse(core, e.code(), e.to_string());
            }
        },
        AuthMessage::RevocationsRequest { .. } => {
            auth(AuthMessage::Revocations((*core.revocation_list()).clone()))
        }
        AuthMessage::ConnectionSetupRequest { credential, mode } => {
            let result = core
                .entity_keys(&peer)
                .map_err(RequestError::from)
                .and_then(|keys| {
                    core.authn
                        .setup(
                            &core.ca.public(),
                            &core.revocations(),
                            peer,
                            &credential,
                            mode,
                            keys.as_ref(),
                            now,
                            at,
                        )
                        .map_err(RequestError::from)
                });
            match result {
                Ok(ch) => auth(AuthMessage::AuthChallenge {
                    nonce: ch.nonce,
                    issued: ch.issued,
                    expires: ch.expires,
                }),
                Err(e) => {
                    if let RequestError::Authn(a) = &e {
                        core.metrics.authentication(a.reason());
                    }
                    Err(e)
                }
            }
        }
        AuthMessage::AuthResponse {
            nonce,
            eukey_mac,
            signature,
        } => {
            let revocations = core.revocations();
            let result = core
                .entity_keys(&peer)
                .map_err(RequestError::from)
                .and_then(|keys| {
                    core.authn
                        .answer(
                            &core.server_peer,
                            peer,
                            &nonce,
                            &eukey_mac,
                            &signature,
                            keys.as_ref(),
                            &revocations,
                            now,
                            at,
                        )
                        .map_err(RequestError::from)
                });
            match result {
                Ok(session) => {
                    core.metrics.authentication("ok");
                    debug!(%peer, mode = %session.mode, "authenticated");
                    auth(AuthMessage::ConnectionSetupConfirmation(SessionInfo {
                        expires: session.expires,
                        server_time: now,
                        revocations: (*revocations).clone(),
                        modes: session.modes,
                    }))
                }
                Err(e) => {
                    if let RequestError::Authn(a) = &e {
                        core.metrics.authentication(a.reason());
                    }
                    Err(e)
                }
            }
        }
        other => match core.authn.session(&peer, now) {
            None => Err(RequestError::NotAuthenticated),
            Some(session) => with_session(core, &session, other, now).await,
        },
    };
    match result {
        Ok(h) => h,
        Err(e) => {
            if let RequestError::Store(err) = &e {
                tracing::error!(%peer, "request failed: {err}");
            }
            refuse(core, e.code(), e.to_string())
        }
    }
}

fn refuse(core: &Core, code: ErrorCode, message: String) -> Handled {
    core.metrics.rejected(code.as_str());
    Handled::reply(Message::error(code, message))
}

async fn with_session(
    core: &Core,
    s: &Session,
    message: AuthMessage,
    now: u64,
) -> Result<Handled, RequestError> {
    match message {
        AuthMessage::CapabilitiesUpdate(caps) => {
            let revision = caps.revision;
            let peer = s.entity;
            // Stored with the entity, so bounded, and written only when it changed: a
            // capabilities update costs a disk write and a flush (issue 14).
            let size = cpns_overlay::codec::encode(&caps)
                .map(|b| b.len())
                .unwrap_or(usize::MAX);
            if size > MAX_CAPABILITIES_BYTES {
                return Err(RequestError::BadRequest(format!(
                    "capabilities of {size} bytes exceed the limit of {MAX_CAPABILITIES_BYTES}"
                )));
            }
            core.commit(|store| {
                let mut e: EntityRecord = store
                    .get(Table::Entities, peer.to_bytes())?
                    .ok_or(RequestError::NotAuthenticated)?;
                let unchanged = e.capabilities.as_ref().is_some_and(|old| {
                    Capabilities {
                        revision: old.revision,
                        ..caps.clone()
                    } == *old
                });
                if unchanged {
                    return Ok::<_, RequestError>((Batch::default(), "unchanged"));
                }
                e.capabilities = Some(caps);
                let mut b = Batch::default();
                b.put(Table::Entities, peer.to_bytes(), &e)?;
                Ok::<_, RequestError>((b, "stored"))
            })
            .await
            .map(|result| core.metrics.capabilities_update(result))?;
            Ok(Handled {
                reply: Message::Auth(AuthMessage::CapabilitiesConfirmation { revision }),
                // B.1 step 14 follows step 13 for a gateway, once per connection setup.
                after: core
                    .authn
                    .first_status_request(&peer, now)
                    .then_some(Followup::StatusUpdate { gateway: peer }),
            })
        }
        AuthMessage::MembershipRequest { setup } => {
            require_gateway(s)?;
            let (decision, pn) = core.membership_request(s, &setup, now).await?;
            auth(AuthMessage::MembershipListTransfer { decision, pn })
        }
        AuthMessage::PnKeyRequest { pn_id, member } => {
            require_gateway(s)?;
            let (epoch, grants) = core.pn_key_request(s, &pn_id, &member).await?;
            auth(AuthMessage::PnKeyResponse {
                pn_id,
                epoch,
                grants,
            })
        }
        AuthMessage::PnInvite { pn_id, invitee } => {
            let pn = core.pn_invite(s, &pn_id, &invitee, now).await?;
            core.invited(&pn_id, &invitee);
            auth(AuthMessage::PnInfo(pn))
        }
        AuthMessage::PnInvitationsRequest => {
            auth(AuthMessage::PnInvitations(core.pn_invitations(s).await?))
        }
        AuthMessage::PnInvitationDecline { pn_id } => {
            core.pn_invitation_decline(s, &pn_id, now).await?;
            Ok(Handled::reply(Message::Ack))
        }
        AuthMessage::PnExpel { pn_id, member } => {
            let (epoch, grants) = core.pn_remove(s, &pn_id, &member, true, now).await?;
            auth(AuthMessage::PnKeyResponse {
                pn_id,
                epoch,
                grants,
            })
        }
        AuthMessage::PnDeregister { pn_id, member } => {
            require_gateway(s)?;
            let (epoch, grants) = core.pn_remove(s, &pn_id, &member, false, now).await?;
            auth(AuthMessage::PnKeyResponse {
                pn_id,
                epoch,
                grants,
            })
        }
        AuthMessage::PnRelease { pn_id } => {
            core.pn_release(s, &pn_id).await?;
            Ok(Handled::reply(Message::Ack))
        }
        AuthMessage::PnKeyPull { pn_id } => {
            let (epoch, grants) = core.pn_key_pull(s, &pn_id).await?;
            auth(AuthMessage::PnKeyResponse {
                pn_id,
                epoch,
                grants,
            })
        }
        AuthMessage::PnAdminRequest { pn_id } => {
            let info = core.pn_admin_request(s, &pn_id, now).await?;
            auth(AuthMessage::PnAdmins(info))
        }
        AuthMessage::PnAdminApprove { pn_id, entity } => {
            let info = core.pn_admin_approve(s, &pn_id, &entity, now).await?;
            auth(AuthMessage::PnAdmins(info))
        }
        AuthMessage::PnAdmineeSet {
            pn_id,
            member,
            settings,
        } => {
            let info = core.pn_adminee_set(s, &pn_id, &member, &settings).await?;
            auth(AuthMessage::PnAdmins(info))
        }
        AuthMessage::PnAdminsRequest { pn_id } => {
            let info = core.pn_admins(s, &pn_id).await?;
            auth(AuthMessage::PnAdmins(info))
        }
        AuthMessage::PnMergeRequest { pn_id, with } => {
            let (merged, pn, gateway_addrs) = match core.pn_merge(s, &pn_id, &with, now).await? {
                crate::pn_merge::MergeOutcome::Pending(pn) => (false, pn.info(), Vec::new()),
                crate::pn_merge::MergeOutcome::Merged(pn) => {
                    let to = core.invitation_info(&pn, true).await;
                    (true, pn.info(), to.gateway_addrs)
                }
            };
            auth(AuthMessage::PnMergeAnswer {
                merged,
                pn,
                gateway_addrs,
            })
        }
        AuthMessage::PnMoveLookup { pn_id } => {
            let (from, pn) = core.pn_move_lookup(s, &pn_id).await?;
            let to = core.invitation_info(&pn, true).await;
            auth(AuthMessage::PnMoved { from, to })
        }
        AuthMessage::PnSplitRequest {
            pn_id,
            members,
            gateway,
        } => {
            let (stays, new) = core.pn_split(s, &pn_id, &members, gateway, now).await?;
            auth(AuthMessage::PnSplitAnswer { stays, new })
        }
        AuthMessage::PnInfoRequest { pn_id } => {
            let pn = core.pn_info(s, &pn_id).await?;
            auth(AuthMessage::PnInfo(pn))
        }
        AuthMessage::RenewCredential => {
            let credential = core.renew_credential(s.entity, now).await?;
            auth(AuthMessage::CredentialRenewed(credential))
        }
        AuthMessage::GroupCreate { name } => {
            let info = core.group_create(s, &name, now).await?;
            auth(AuthMessage::GroupInfo(info))
        }
        AuthMessage::GroupDelete { group } => {
            core.group_delete(s, &group).await?;
            Ok(Handled::reply(Message::Ack))
        }
        AuthMessage::GroupInvite { group, entity } => {
            let info = core.group_invite(s, &group, entity, now).await?;
            auth(AuthMessage::GroupInfo(info))
        }
        AuthMessage::GroupExpel { group, entity } => {
            let info = core.group_expel(s, &group, entity, now).await?;
            auth(AuthMessage::GroupInfo(info))
        }
        AuthMessage::GroupJoin { group } => {
            let info = core.group_join(s, &group, now).await?;
            auth(AuthMessage::GroupInfo(info))
        }
        AuthMessage::GroupLeave { group } => {
            let info = core.group_leave(s, &group, now).await?;
            auth(AuthMessage::GroupInfo(info))
        }
        AuthMessage::GroupInfoRequest { group } => {
            let info = core.group_info(s, &group).await?;
            auth(AuthMessage::GroupInfo(info))
        }
        AuthMessage::GroupList => auth(AuthMessage::Groups(core.group_list(s).await?)),
        AuthMessage::KeysPull => auth(AuthMessage::Keys(core.keys_pull(s).await?)),
        AuthMessage::UsageReport(report) => {
            let accepted = match core.usage_report(s, &report, now).await {
                Ok(n) => n,
                Err(e) => {
                    core.metrics.usage_report("refused");
                    return Err(e);
                }
            };
            auth(AuthMessage::UsageAck { accepted })
        }
        AuthMessage::ZoneRegister(reg) => auth(crate::zone::register(core, s, &reg, now).await?),
        AuthMessage::ZoneDeregister { pn_id, entity } => {
            auth(crate::zone::deregister(core, s, &pn_id, &entity).await?)
        }
        other => Err(RequestError::BadRequest(format!(
            "{} is not a request cpns-auth answers",
            other.name()
        ))),
    }
}
