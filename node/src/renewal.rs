//! Credential renewal (DESIGN: "Credentials expire; nodes renew before expiry and warn when
//! they cannot").
//!
//! A node asks `cpns-auth` for a fresh credential (`AuthMessage::RenewCredential`, over an
//! authenticated session) once less than `credential_renew_percent` of its credential's
//! lifetime is left, checked at every heartbeat tick and at most once a minute while it keeps
//! failing; `cpns renew` (`POST /v1/credential/renew`) does it at once. The new credential is
//! saved in the data dir before it is used, the node's service records are re-signed with it,
//! and every failure while renewal is due is logged as a warning with the time left.

use std::time::Duration;

use cpns_keys::EntityCredential;
use cpns_overlay::AuthMessage;
use tracing::{info, warn};

use crate::auth_link::AuthLink;
use crate::context::Context;
use crate::error::OpError;
use crate::now;
use crate::pn;
use crate::services::Services;

/// Least time between two automatic attempts that failed.
const RETRY_AFTER: Duration = Duration::from_secs(60);

pub use cpns_api::CredentialView;

/// Whether less than `percent` % of the credential's lifetime is left at `now`.
pub(crate) fn due(credential: &EntityCredential, now: u64, percent: u8) -> bool {
    let body = &credential.body;
    let lifetime = body.expires.saturating_sub(body.issued);
    let left = body.expires.saturating_sub(now);
    u128::from(left) * 100 < u128::from(lifetime) * u128::from(percent)
}

/// The node's credential as shown to its owner.
pub(crate) fn view(ctx: &Context) -> Option<CredentialView> {
    let e = ctx.enrolment().ok()?;
    let body = &e.credential.body;
    Some(CredentialView {
        serial: body.serial,
        issued: body.issued,
        expires: body.expires,
        renewal_due: due(&e.credential, now(), ctx.config.credential_renew_percent),
    })
}

/// Renewal: the owner's `cpns renew`, and the module's task that renews when due.
#[derive(Clone)]
pub(crate) struct Renewal {
    ctx: Context,
    auth: AuthLink,
    pn: pn::Handle,
    services: Services,
}

impl Renewal {
    /// The renewal side of a node.
    pub(crate) fn new(ctx: Context, auth: AuthLink, pn: pn::Handle, services: Services) -> Self {
        Self {
            ctx,
            auth,
            pn,
            services,
        }
    }

    /// Renews now: asks `cpns-auth`, has the PN actor save the new credential durably, then
    /// re-signs this node's services with it.
    pub(crate) async fn renew(&self) -> Result<CredentialView, OpError> {
        let ctx = &self.ctx;
        let old = ctx.enrolment()?;
        let answer = self.auth.request(AuthMessage::RenewCredential).await?;
        let AuthMessage::CredentialRenewed(credential) = answer else {
            return Err(OpError::Refused(format!(
                "unexpected answer {}",
                answer.name()
            )));
        };
        let trust = ctx.trust()?;
        credential.verify(trust.ca(), now()).map_err(|e| {
            OpError::Refused(format!("the renewed credential does not verify: {e}"))
        })?;
        if credential.entity() != &ctx.peer_id
            || credential.body.user != old.credential.body.user
            || credential.body.modes != old.credential.body.modes
        {
            return Err(OpError::Refused(
                "the renewed credential is not this node's".into(),
            ));
        }
        self.pn.credential_renewed(credential.clone()).await?;
        info!(
            serial = credential.body.serial,
            expires = credential.body.expires,
            "entity credential renewed"
        );
        if let Ok(directory) = self.services.directory()
            && let Err(e) = directory.renew_credential(credential).await
        {
            warn!("services not re-published with the renewed credential: {e}");
        }
        view(ctx).ok_or_else(|| OpError::Internal("no enrolment after renewal".into()))
    }

    /// The module's task: at every heartbeat tick, renews when due, and warns (at most once
    /// per [`RETRY_AFTER`]) when it cannot.
    pub(crate) async fn run(self) {
        let period = Duration::from_secs(self.ctx.config.status.heartbeat_secs.max(1));
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut tried: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                biased;
                _ = self.ctx.cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            let Ok(e) = self.ctx.enrolment() else {
                continue;
            };
            let t = now();
            if !due(&e.credential, t, self.ctx.config.credential_renew_percent) {
                continue;
            }
            if tried.is_some_and(|at| at.elapsed() < RETRY_AFTER) {
                continue;
            }
            tried = Some(std::time::Instant::now());
            match self.renew().await {
                Ok(_) => tried = None,
                Err(err) => warn!(
                    left_secs = e.credential.body.expires.saturating_sub(t),
                    "the entity credential is due for renewal and could not be renewed: {err}"
                ),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cpns_keys::{CredentialBody, Identity, Modes};

    fn credential(issued: u64, expires: u64) -> EntityCredential {
        let ca = Identity::generate();
        EntityCredential::issue(
            &ca,
            CredentialBody {
                entity: Identity::generate().peer_id(),
                user: "alice".into(),
                device: "nas".into(),
                modes: Modes::ALL,
                serial: 1,
                issued,
                expires,
            },
        )
    }

    #[test]
    fn due_when_less_than_the_share_is_left() {
        let c = credential(1_000, 1_300);
        assert!(!due(&c, 1_000, 33));
        assert!(!due(&c, 1_200, 33));
        assert!(due(&c, 1_202, 33));
        assert!(due(&c, 1_300, 33));
        assert!(due(&c, 5_000, 33));
        assert!(due(&c, 1_001, 100));
    }
}
