//! The node's link to `cpns-auth`: connection setup and authentication (B.1 steps 8-11), and
//! requests within the session.
//!
//! [`AuthLink`] owns the session (when it ends) and runs one authentication at a time, so that
//! two callers that both find no session do not both authenticate. Revocation lists the server
//! sends with a session go to the PN actor on a bounded channel (the actor is the one that
//! applies them; this module stays below it).

use std::sync::{Arc, Mutex};

use cpns_keys::{RevocationList, UnixTime};
use cpns_overlay::{AuthMessage, ErrorCode, Message, NodeMode, Protocol, SessionInfo, transcript};
use libp2p::PeerId;
use tokio::sync::mpsc;
use tracing::debug;

use crate::context::Context;
use crate::error::OpError;
use crate::trace::flow::{B1, G1};

/// Margin before a session's expiry at which the node authenticates again.
const SESSION_MARGIN_SECS: u64 = 30;

/// The handle to the link (cheap to clone).
#[derive(Clone)]
pub(crate) struct AuthLink {
    ctx: Context,
    inner: Arc<Inner>,
}

struct Inner {
    /// When the current session ends (B.1 step 11), if there is one.
    session: Mutex<Option<UnixTime>>,
    /// One authentication at a time.
    authenticating: tokio::sync::Mutex<()>,
    /// Where the revocation lists of sessions go (the PN actor).
    revocations: mpsc::Sender<RevocationList>,
}

impl AuthLink {
    /// A link for the node of `ctx`; revocation lists of sessions are sent to `revocations`.
    pub(crate) fn new(ctx: Context, revocations: mpsc::Sender<RevocationList>) -> Self {
        Self {
            ctx,
            inner: Arc::new(Inner {
                session: Mutex::new(None),
                authenticating: tokio::sync::Mutex::new(()),
                revocations,
            }),
        }
    }

    /// Dials the server (any of its addresses) unless already connected.
    pub(crate) async fn connect(&self) -> Result<PeerId, OpError> {
        let enrolment = self.ctx.enrolment()?;
        let server = enrolment.server;
        let connected = self
            .ctx
            .client
            .peers()
            .await?
            .iter()
            .any(|p| p.peer_id == server);
        if connected {
            return Ok(server);
        }
        let mut last = None;
        for addr in enrolment.server_dial_addrs() {
            match self.ctx.client.dial(addr).await {
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

    /// B.1 steps 8-11: connection setup, challenge, proof of the EUKey and the identity key,
    /// confirmation. With `trace`, each step goes into the trace (the gateway's B.1 flow, and
    /// G.1 step 1 once authenticated).
    pub(crate) async fn authenticate(
        &self,
        trace: bool,
        mode: NodeMode,
    ) -> Result<SessionInfo, OpError> {
        let _one = self.inner.authenticating.lock().await;
        let ctx = &self.ctx;
        let enrolment = ctx.enrolment()?;
        let server = self.connect().await?;
        let me = ctx.peer_id;
        let step = |n: u32, from: &PeerId, to: &PeerId, msg: &str, detail: &str| {
            if trace {
                ctx.trace(B1, n, from, to, msg, detail);
            }
        };
        step(8, &me, &server, "ConnectionSetupRequest", mode.as_str());
        let answer = ctx
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
        let t =
            transcript::auth_response(&nonce, &server, &me, enrolment.credential.serial(), mode);
        let eukey_mac = enrolment.eukey.mac(&t);
        let signature = ctx.identity.sign(&t);
        step(
            10,
            &me,
            &server,
            "AuthenticationAndAuthorizationResponse",
            "",
        );
        let answer = ctx
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
            ctx.trace(G1, 1, &server, &me, "GatewayAuthenticated", "");
        }
        *self.inner.session.lock().unwrap_or_else(|p| p.into_inner()) = Some(info.expires);
        if self
            .inner
            .revocations
            .try_send(info.revocations.clone())
            .is_err()
        {
            debug!("revocation list of the session not passed on (the PN actor is busy)");
        }
        Ok(info)
    }

    /// Whether the node holds a live session.
    pub(crate) fn has_session(&self) -> bool {
        self.inner
            .session
            .lock()
            .map(|s| s.is_some_and(|e| e > crate::now() + SESSION_MARGIN_SECS))
            .unwrap_or(false)
    }

    fn forget_session(&self) {
        *self.inner.session.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }

    /// The mode to authenticate with (the PN actor's last word).
    fn mode(&self) -> NodeMode {
        self.ctx
            .credentials
            .borrow()
            .as_ref()
            .map(|c| c.mode)
            .unwrap_or_default()
    }

    /// Sends a request within a session, authenticating first if needed (untraced: these are
    /// not the gateway's B.1 steps). A `NotAuthenticated` refusal (the server restarted) leads
    /// to one new authentication and one retry.
    async fn exchange(&self, msg: AuthMessage) -> Result<Message, OpError> {
        if !self.has_session() {
            self.authenticate(false, self.mode()).await?;
        }
        let server = self.connect().await?;
        let client = &self.ctx.client;
        let first = client
            .request(server, Protocol::Auth, Message::Auth(msg.clone()))
            .await;
        match first {
            Err(cpns_overlay::Error::Refused { reply, .. })
                if reply.code == ErrorCode::NotAuthenticated =>
            {
                debug!("session lost (server restarted?): authenticating again");
                self.forget_session();
                self.authenticate(false, self.mode()).await?;
                client
                    .request(server, Protocol::Auth, Message::Auth(msg))
                    .await
                    .map_err(|e| refused("request", e))
            }
            other => other.map_err(|e| refused("request", e)),
        }
    }

    /// A request whose answer is an [`AuthMessage`].
    pub(crate) async fn request(&self, msg: AuthMessage) -> Result<AuthMessage, OpError> {
        match self.exchange(msg).await? {
            Message::Auth(m) => Ok(m),
            other => Err(OpError::Refused(format!(
                "unexpected answer {}",
                other.name()
            ))),
        }
    }

    /// A request the server answers with a plain acknowledgement.
    pub(crate) async fn command(&self, msg: AuthMessage) -> Result<(), OpError> {
        match self.exchange(msg).await? {
            Message::Ack => Ok(()),
            other => Err(OpError::Refused(format!(
                "unexpected answer {}",
                other.name()
            ))),
        }
    }
}

fn refused(step: &str, e: cpns_overlay::Error) -> OpError {
    match e {
        cpns_overlay::Error::Refused { reply, .. } => OpError::Refused(format!("{step}: {reply}")),
        other => OpError::Unavailable(format!("{step}: {other}")),
    }
}
