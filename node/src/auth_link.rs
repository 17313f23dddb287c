//! The node's link to `cpns-auth`: connection setup and authentication (B.1 steps 8-11), and
//! requests within the session.

use std::sync::Arc;

use cpns_keys::GroupId;
use cpns_overlay::{AuthMessage, ErrorCode, GroupKeyGrant, Message, Protocol, transcript};
use libp2p::PeerId;
use tracing::debug;

use crate::error::OpError;
use crate::shared::{Shared, now};
use crate::trace::flow::{B1, G1};

/// Margin before a session's expiry at which the node authenticates again.
const SESSION_MARGIN_SECS: u64 = 30;

/// Dials the server (any of its addresses) unless already connected.
pub(crate) async fn connect(shared: &Shared) -> Result<PeerId, OpError> {
    let enrolment = shared.enrolment()?;
    let server = enrolment.server;
    let connected = shared
        .client
        .peers()
        .await?
        .iter()
        .any(|p| p.peer_id == server);
    if connected {
        return Ok(server);
    }
    let mut last = None;
    for addr in &enrolment.server_addrs {
        let addr = if cpns_overlay::peer_of(addr).is_some() {
            addr.clone()
        } else {
            addr.clone().with(libp2p::multiaddr::Protocol::P2p(server))
        };
        match shared.client.dial(addr).await {
            Ok(_) => return Ok(server),
            Err(e) => last = Some(e),
        }
    }
    Err(OpError::Unavailable(format!(
        "cannot reach cpns-auth {server}: {}",
        last.map(|e| e.to_string())
            .unwrap_or_else(|| "no address known".into())
    )))
}

/// B.1 steps 8-11: connection setup, challenge, proof of the EUKey and identity key,
/// confirmation. With `trace`, each step goes into the trace (the gateway's B.1 flow, and G.1
/// step 1 once authenticated).
pub(crate) async fn authenticate(shared: &Arc<Shared>, trace: bool) -> Result<(), OpError> {
    let enrolment = shared.enrolment()?;
    let server = connect(shared).await?;
    let me = shared.peer_id;
    let mode = shared.state().mode;
    let step = |n: u32, from: &PeerId, to: &PeerId, msg: &str, detail: &str| {
        if trace {
            shared.trace(B1, n, from, to, msg, detail);
        }
    };

    step(8, &me, &server, "ConnectionSetupRequest", mode.as_str());
    let answer = shared
        .client
        .request(
            server,
            Protocol::Auth,
            Message::Auth(AuthMessage::ConnectionSetupRequest {
                credential: enrolment.credential.clone(),
                mode,
            }),
        )
        .await
        .map_err(|e| {
            step(
                9,
                &server,
                &me,
                "AuthenticationAndAuthorizationRequest",
                "refused",
            );
            refused("step 8", e)
        })?;
    let Message::Auth(AuthMessage::AuthChallenge { nonce, .. }) = answer else {
        return Err(OpError::Refused(format!(
            "step 9: unexpected {}",
            answer.name()
        )));
    };
    step(9, &server, &me, "AuthenticationAndAuthorizationRequest", "");

    let t = transcript::auth_response(&nonce, &server, &me, enrolment.credential.serial(), mode);
    let eukey_mac = enrolment.eukey.mac(&t);
    let signature = shared.identity.sign(&t);
    step(
        10,
        &me,
        &server,
        "AuthenticationAndAuthorizationResponse",
        "",
    );
    let answer = shared
        .client
        .request(
            server,
            Protocol::Auth,
            Message::Auth(AuthMessage::AuthResponse {
                nonce,
                eukey_mac,
                signature,
            }),
        )
        .await
        .map_err(|e| {
            step(11, &server, &me, "ConnectionSetupConfirmation", "refused");
            refused("step 10", e)
        })?;
    let Message::Auth(AuthMessage::ConnectionSetupConfirmation(info)) = answer else {
        return Err(OpError::Refused(format!(
            "step 11: unexpected {}",
            answer.name()
        )));
    };
    step(11, &server, &me, "ConnectionSetupConfirmation", "");
    if trace && mode.is_gateway() {
        shared.trace(G1, 1, &server, &me, "GatewayAuthenticated", "");
    }
    shared.state().session_expires = Some(info.expires);
    shared.take_revocations(info.revocations).await;
    Ok(())
}

fn refused(step: &str, e: cpns_overlay::Error) -> OpError {
    match e {
        cpns_overlay::Error::Refused { reply, .. } => OpError::Refused(format!("{step}: {reply}")),
        other => OpError::Unavailable(format!("{step}: {other}")),
    }
}

/// Whether the node holds a live session.
pub(crate) fn has_session(shared: &Shared) -> bool {
    shared
        .state()
        .session_expires
        .is_some_and(|e| e > now() + SESSION_MARGIN_SECS)
}

/// Sends a request to the server within a session, authenticating first if needed (without
/// tracing: these are not the B.1 gateway steps), and returns the server's answer. A
/// `NotAuthenticated` refusal (the server restarted) leads to one new authentication and one
/// retry.
async fn exchange(shared: &Arc<Shared>, msg: AuthMessage) -> Result<Message, OpError> {
    if !has_session(shared) {
        authenticate(shared, false).await?;
    }
    let server = connect(shared).await?;
    let first = shared
        .client
        .request(server, Protocol::Auth, Message::Auth(msg.clone()))
        .await;
    match first {
        Err(cpns_overlay::Error::Refused { reply, .. })
            if reply.code == ErrorCode::NotAuthenticated =>
        {
            debug!("session lost (server restarted?): authenticating again");
            shared.state().session_expires = None;
            authenticate(shared, false).await?;
            shared
                .client
                .request(server, Protocol::Auth, Message::Auth(msg))
                .await
                .map_err(|e| refused("request", e))
        }
        other => other.map_err(|e| refused("request", e)),
    }
}

/// A request whose answer is an [`AuthMessage`].
pub(crate) async fn request(
    shared: &Arc<Shared>,
    msg: AuthMessage,
) -> Result<AuthMessage, OpError> {
    match exchange(shared, msg).await? {
        Message::Auth(m) => Ok(m),
        other => Err(OpError::Refused(format!(
            "unexpected answer {}",
            other.name()
        ))),
    }
}

/// A request the server answers with a plain acknowledgement.
pub(crate) async fn command(shared: &Arc<Shared>, msg: AuthMessage) -> Result<(), OpError> {
    match exchange(shared, msg).await? {
        Message::Ack => Ok(()),
        other => Err(OpError::Refused(format!(
            "unexpected answer {}",
            other.name()
        ))),
    }
}

/// Opens a key grant sealed for this node under its EUKey and stores the key.
pub(crate) async fn install_grant(
    shared: &Shared,
    grant: &GroupKeyGrant,
) -> Result<cpns_keys::GroupKey, OpError> {
    let enrolment = shared.enrolment()?;
    let aad = transcript::group_key_aad(&grant.group, grant.epoch, &shared.peer_id);
    let secret = enrolment.eukey.open(&aad, &grant.sealed).map_err(|e| {
        OpError::Refused(format!(
            "cannot open the key grant for {}: {e}",
            grant.group
        ))
    })?;
    let key = cpns_keys::GroupKey::decode_secret(&secret)
        .map_err(|e| OpError::Refused(format!("bad key grant: {e}")))?;
    if key.group() != &grant.group || key.epoch() != grant.epoch {
        return Err(OpError::Refused(
            "key grant does not match its label".into(),
        ));
    }
    shared
        .keyring
        .insert(key.clone())
        .await
        .map_err(|e| OpError::Internal(format!("storing the key: {e}")))?;
    shared.metrics.key_epochs_received.inc();
    Ok(key)
}

/// The group id of a PN's key.
pub(crate) fn pn_group(pn_id: &str) -> GroupId {
    GroupId(pn_id.to_string())
}
