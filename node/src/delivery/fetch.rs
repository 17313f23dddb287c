//! The consumer's side (G.1 steps 5-8): invoke, receive, report usage.

use std::time::Instant;

use cpns_directory::{ServiceDescription, Source};
use cpns_overlay::{
    DELIVERY_PROTOCOL, DeliveryMessage, DeliveryMode, InvokeDecision, Message, Protocol,
};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::files::sanitise;
use super::stream::{Hello, receive_to_file, write_frame};
use super::{Delivery, PUSH_WAIT};
use crate::error::OpError;
use crate::now;
use crate::trace::flow::G1;

/// What a fetch delivered.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FetchOutcome {
    /// The service.
    pub service_id: String,
    /// The offerer.
    pub offerer: String,
    /// `pull` or `push`.
    pub mode: String,
    /// The offerer's decision (`accepted`, or the adaptation).
    pub decision: String,
    /// Bytes delivered.
    pub bytes: u64,
    /// SHA-256 of the content, hex.
    pub sha256: String,
    /// Where the content was written.
    pub path: String,
    /// Milliseconds from invocation to the last byte.
    pub duration_ms: f64,
    /// What became of the usage report: `reported`, `queued` or `suppressed`.
    pub usage: String,
}

impl Delivery {
    /// G.1 steps 5-7 at the consumer: invoke with capabilities, then pull the content or have it
    /// pushed, into `DATA_DIR/downloads/<service id>`; then the usage report (step 8).
    pub(crate) async fn fetch(
        &self,
        service_id: &str,
        mode: DeliveryMode,
    ) -> Result<FetchOutcome, OpError> {
        let shared = self.ctx();
        let me = shared.peer_id;
        if self.inner.pn.view().mode == cpns_overlay::NodeMode::Gateway {
            return Err(OpError::Conflict(
                "a gateway-only node consumes no services (`cpns mode set gateway` to do so)"
                    .into(),
            ));
        }
        let found = self.inner.services.get(service_id).await?;
        let desc: ServiceDescription = found.description;
        let offerer = match &desc.source {
            Source::Entity(p) => *p,
            Source::External { name, .. } => {
                return Err(OpError::Conflict(format!(
                    "{service_id} is offered by the external provider {name}: reach it at {}",
                    desc.endpoint.addresses.join(", ")
                )));
            }
        };
        // A PN member is admitted through the gateway's member list; any other offerer (a public
        // service of another household) hears from us after Entity Registration (B.1 steps 1-2).
        if offerer != me {
            self.inner.pn.register(offerer).await?;
        }
        let caps = self.inner.pn.view().caps.clone();
        let started_at = now();
        let started = Instant::now();
        shared.trace(
            G1,
            5,
            &me,
            &offerer,
            "InvokeService",
            service_id.to_string(),
        );
        shared.trace(
            G1,
            6,
            &me,
            &offerer,
            "ShareDeviceCapabilities",
            caps.static_caps.device_type.clone(),
        );
        let answer = shared
            .client
            .request(
                offerer,
                Protocol::Cpns,
                Message::Delivery(DeliveryMessage::Invoke {
                    service_id: service_id.to_string(),
                    mode,
                    capabilities: caps.clone(),
                }),
            )
            .await?;
        let Message::Delivery(DeliveryMessage::Invoked {
            decision,
            session,
            length,
        }) = answer
        else {
            return Err(OpError::Refused(format!(
                "unexpected answer {}",
                answer.name()
            )));
        };
        let decision_text = match &decision {
            InvokeDecision::Accepted => "accepted".to_string(),
            InvokeDecision::Adapted(a) => format!("adapted: {a}"),
            InvokeDecision::Refused(r) => {
                return Err(OpError::Refused(format!("the offerer refused: {r}")));
            }
        };

        let dir = shared.config.data_dir.join("downloads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let path = dir.join(sanitise(service_id));
        // Written under a temporary name, renamed once whole and checked: a transfer that fails
        // or is stopped never leaves a file that looks complete.
        let part = dir.join(format!("{}.part", sanitise(service_id)));
        let max_len = length.unwrap_or(0);
        let sealed_by = desc.visibility.group().cloned();
        let received = match mode {
            DeliveryMode::Pull => {
                let mut control = shared.client.stream_control();
                let mut stream = control
                    .open_stream(offerer, DELIVERY_PROTOCOL)
                    .await
                    .map_err(|e| {
                        OpError::Unavailable(format!("opening the delivery stream: {e}"))
                    })?;
                write_frame(&mut stream, &Hello::Pull { session }).await?;
                receive_to_file(
                    shared,
                    &offerer,
                    &mut stream,
                    &part,
                    max_len,
                    sealed_by.as_ref(),
                )
                .await
            }
            DeliveryMode::Push => {
                let (tx, rx) = oneshot::channel();
                self.inner
                    .waiting_push
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(session, tx);
                let start = shared
                    .client
                    .request(
                        offerer,
                        Protocol::Cpns,
                        Message::Delivery(DeliveryMessage::Start { session }),
                    )
                    .await;
                if let Err(e) = start {
                    self.inner
                        .waiting_push
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .remove(&session);
                    return Err(e.into());
                }
                let mut stream = tokio::time::timeout(PUSH_WAIT, rx)
                    .await
                    .map_err(|_| OpError::Unavailable("the offerer did not push in time".into()))?
                    .map_err(|_| OpError::Unavailable("push cancelled".into()))?;
                receive_to_file(
                    shared,
                    &offerer,
                    &mut stream,
                    &part,
                    max_len,
                    sealed_by.as_ref(),
                )
                .await
            }
        };
        let (bytes, sha256) = match received {
            Ok(r) => r,
            Err(e) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        tokio::fs::rename(&part, &path)
            .await
            .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
        let duration = started.elapsed();
        shared.trace(
            G1,
            7,
            &offerer,
            &me,
            "DeliverContent",
            format!("{bytes} bytes, {}", mode_name(mode)),
        );
        let view = self.inner.pn.view();
        let status = view.status.clone();
        let pn_id = view.pn_id().map(str::to_owned);
        let usage = self
            .inner
            .usage
            .report(cpns_overlay::UsageRecord {
                service_id: desc.id.clone(),
                service_name: desc.name.clone(),
                offerer,
                pn_id,
                started: started_at,
                duration_ms: duration.as_millis() as u64,
                bytes,
                capabilities: caps,
                status,
            })
            .await;
        Ok(FetchOutcome {
            service_id: desc.id,
            offerer: offerer.to_string(),
            mode: mode_name(mode).into(),
            decision: decision_text,
            bytes,
            sha256,
            path: path.display().to_string(),
            duration_ms: duration.as_secs_f64() * 1000.0,
            usage: usage.to_string(),
        })
    }
}

pub(super) fn mode_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::Pull => "pull",
        DeliveryMode::Push => "push",
    }
}
