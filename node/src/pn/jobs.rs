//! The network side of the PN actor's child jobs: each runs one piece of slow work and
//! returns what came back, which the actor hands to the state.

use std::sync::Arc;

use cpns_overlay::Protocol;
use tracing::debug;

use super::effect::{Done, Job};
use crate::auth_link::AuthLink;
use crate::context::Context;
use crate::error::OpError;

/// Runs a job to its end (cancel-safe: dropping it loses nothing the state depends on, since
/// the state hears of a lost job and fails its flow).
pub(super) async fn run(ctx: Context, auth: AuthLink, job: Job) -> Done {
    match job {
        Job::Dial(addr) => Done::Dialed(ctx.client.dial(addr).await.map_err(OpError::from)),
        Job::DialAny { peer, addrs } => {
            let mut last = None;
            for a in addrs {
                let a = if cpns_overlay::peer_of(&a).is_some() {
                    a
                } else {
                    a.with(libp2p::multiaddr::Protocol::P2p(peer))
                };
                match ctx.client.dial(a).await {
                    Ok(p) => return Done::Dialed(Ok(p)),
                    Err(e) => last = Some(e),
                }
            }
            Done::Dialed(Err(match last {
                Some(e) => OpError::Unavailable(format!("{peer} unreachable: {e}")),
                None => OpError::Unavailable(format!("no address known for {peer}")),
            }))
        }
        Job::Request { peer, message } => {
            Done::Answer(ctx.client.request(peer, Protocol::Cpns, message).await)
        }
        Job::Heartbeat {
            gateway,
            message,
            within,
        } => {
            let answered =
                tokio::time::timeout(within, ctx.client.request(gateway, Protocol::Cpns, message))
                    .await;
            // An error answer counts as alive: only silence starts a failover.
            Done::Heartbeat(match answered {
                Ok(Ok(_)) => true,
                Ok(Err(e @ cpns_overlay::Error::Refused { .. })) => {
                    debug!(%gateway, "heartbeat refused: {e}");
                    true
                }
                Ok(Err(e)) => {
                    debug!(%gateway, "heartbeat not delivered: {e}");
                    false
                }
                Err(_) => false,
            })
        }
        Job::Authenticate { trace, mode } => {
            Done::Authenticated(auth.authenticate(trace, mode).await)
        }
        Job::Auth(m) => Done::Auth(auth.request(m).await),
        Job::AuthIfSession(m) => {
            if auth.has_session() {
                Done::Auth(auth.request(m).await)
            } else {
                Done::Auth(Err(OpError::Unavailable("no session".into())))
            }
        }
        Job::ReadCaps {
            mut reader,
            overrides,
            mode,
            preference,
            revision,
        } => {
            let read = tokio::task::spawn_blocking(move || {
                let caps = reader.read(&overrides, mode, preference, revision);
                (reader, caps)
            })
            .await;
            match read {
                Ok((reader, caps)) => Done::Caps(reader, Box::new(caps)),
                Err(e) => {
                    debug!("capabilities read failed: {e}");
                    Done::Saved(Err(OpError::Internal("capabilities read failed".into())))
                }
            }
        }
        Job::SaveEnrolment(e) => {
            let dir = ctx.config.data_dir.clone();
            let saved = tokio::task::spawn_blocking(move || {
                let e: Arc<crate::enrolment::Enrolment> = e;
                e.save(&dir)
            })
            .await;
            Done::Saved(match saved {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(OpError::Internal(format!("saving the enrolment: {e}"))),
                Err(e) => Err(OpError::Internal(format!("saving the enrolment: {e}"))),
            })
        }
        Job::Sleep(d) => {
            tokio::time::sleep(d).await;
            Done::Slept
        }
    }
}
