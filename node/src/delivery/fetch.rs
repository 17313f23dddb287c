//! The consumer's side (G.1 steps 5-8): invoke one or several services (one invocation per
//! offerer), receive each as a session that either side can pause, resume or stop, sample the
//! device during use, report the use once.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use cpns_directory::{ServiceDescription, Source};
use cpns_overlay::{
    Capabilities, DELIVERY_PROTOCOL, DeliveryMessage, DeliveryMode, InvokeAnswer, InvokeDecision,
    MAX_INVOKE_SERVICES, Message, Protocol, SessionHandOver, UsageRecord,
};
use libp2p::PeerId;
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

use super::files::sanitise;
use super::samples::{Sampler, sampled};
use super::session::{Control, Live, Party, Role, RunState, session_text};
use super::stream::{Ended, Hello, Received, Want, receive_to_file, stopped, write_frame};
use super::{Delivery, PUSH_WAIT, answer_error};
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
    /// Where the content was written (empty when it was stopped: no partial file is kept).
    pub path: String,
    /// Milliseconds from invocation to the last byte.
    pub duration_ms: f64,
    /// What became of the usage report: `reported`, `queued` or `suppressed`.
    pub usage: String,
    /// The session's id.
    pub session: String,
    /// `completed`, `stopped by the consumer`, `stopped by the offerer`.
    pub ended: String,
    /// The variant the offerer chose, if any.
    pub variant: Option<String>,
    /// What became of the record at the external collector.
    pub collector: String,
}

/// A service to receive, once its offerer answered.
struct Invocation {
    desc: ServiceDescription,
    offerer: PeerId,
    answer: InvokeAnswer,
    caps: Capabilities,
    started_at: u64,
    started: Instant,
}

impl Delivery {
    /// G.1 steps 5-8 for one service: see [`Delivery::fetch_many`].
    pub(crate) async fn fetch(
        &self,
        service_id: &str,
        mode: DeliveryMode,
    ) -> Result<FetchOutcome, OpError> {
        let mut all = self.fetch_many(&[service_id.to_string()], mode).await?;
        all.pop()
            .map(|(_, r)| r)
            .unwrap_or_else(|| Err(OpError::Internal("no outcome".into())))
    }

    /// G.1 steps 5-7 at the consumer, for several services in one invocation per offerer:
    /// invoke with capabilities, then pull the contents or have them pushed, all at once,
    /// into `DATA_DIR/downloads/<service id>`; then a usage report for each (step 8). The
    /// offerer's deliveries to this node take turns, so they share the link fairly.
    pub(crate) async fn fetch_many(
        &self,
        service_ids: &[String],
        mode: DeliveryMode,
    ) -> Result<Vec<(String, Result<FetchOutcome, OpError>)>, OpError> {
        if self.inner.pn.view().mode == cpns_overlay::NodeMode::Gateway {
            return Err(OpError::Conflict(
                "a gateway-only node consumes no services (`cpns mode set gateway` to do so)"
                    .into(),
            ));
        }
        if service_ids.is_empty() || service_ids.len() > MAX_INVOKE_SERVICES {
            return Err(OpError::BadRequest(format!(
                "name 1 to {MAX_INVOKE_SERVICES} services"
            )));
        }
        let mut ids: Vec<String> = Vec::new();
        for id in service_ids {
            if !ids.contains(id) {
                ids.push(id.clone());
            }
        }
        let mut results: BTreeMap<String, Result<FetchOutcome, OpError>> = BTreeMap::new();
        let mut by_offerer: BTreeMap<PeerId, Vec<ServiceDescription>> = BTreeMap::new();
        for id in &ids {
            match self.offerer_of(id).await {
                Ok((offerer, desc)) => by_offerer.entry(offerer).or_default().push(desc),
                Err(e) => {
                    results.insert(id.clone(), Err(e));
                }
            }
        }
        let invocations = futures::future::join_all(
            by_offerer
                .into_iter()
                .map(|(offerer, descs)| self.invoke(offerer, descs, mode)),
        )
        .await;
        let mut deliveries = Vec::new();
        for per_offerer in invocations {
            for (id, inv) in per_offerer {
                match inv {
                    Ok(inv) => deliveries.push(self.deliver(inv, mode)),
                    Err(e) => {
                        results.insert(id, Err(e));
                    }
                }
            }
        }
        for (id, r) in futures::future::join_all(deliveries).await {
            results.insert(id, r);
        }
        Ok(ids
            .into_iter()
            .map(|id| {
                let r = results
                    .remove(&id)
                    .unwrap_or_else(|| Err(OpError::Internal("no outcome".into())));
                (id, r)
            })
            .collect())
    }

    /// The service and who delivers it: its entity, or the node that speaks for an external
    /// provider and delivers its content (`cpns-delivery` endpoint).
    pub(super) async fn offerer_of(
        &self,
        service_id: &str,
    ) -> Result<(PeerId, ServiceDescription), OpError> {
        let desc = self.inner.services.get(service_id).await?.description;
        match &desc.source {
            Source::Entity(p) => Ok((*p, desc)),
            Source::External { .. } if desc.endpoint.protocol == "cpns-delivery" => {
                Ok((desc.publisher, desc))
            }
            Source::External { name, .. } => Err(OpError::Conflict(format!(
                "{service_id} is offered by the external provider {name}: reach it at {}",
                desc.endpoint.addresses.join(", ")
            ))),
        }
    }

    /// G.1 steps 5-6 with one offerer for its services.
    async fn invoke(
        &self,
        offerer: PeerId,
        descs: Vec<ServiceDescription>,
        mode: DeliveryMode,
    ) -> Vec<(String, Result<Invocation, OpError>)> {
        let fail = |descs: &[ServiceDescription], e: &OpError| {
            descs
                .iter()
                .map(|d| (d.id.clone(), Err(OpError::Refused(e.to_string()))))
                .collect::<Vec<_>>()
        };
        let ctx = self.ctx();
        let me = ctx.peer_id;
        // A PN member is admitted through the gateway's member list; any other offerer (a
        // public service of another household) hears from us after Entity Registration
        // (B.1 steps 1-2).
        if offerer != me
            && let Err(e) = self.inner.pn.register(offerer).await
        {
            return fail(&descs, &e);
        }
        let caps = self.inner.pn.view().caps.clone();
        let ids: Vec<String> = descs.iter().map(|d| d.id.clone()).collect();
        let started_at = now();
        let started = Instant::now();
        ctx.trace(G1, 5, &me, &offerer, "InvokeService", ids.join(", "));
        ctx.trace(
            G1,
            6,
            &me,
            &offerer,
            "ShareDeviceCapabilities",
            caps.static_caps.device_type.clone(),
        );
        let answer = ctx
            .client
            .request(
                offerer,
                Protocol::Cpns,
                Message::Delivery(DeliveryMessage::InvokeMany {
                    service_ids: ids,
                    mode,
                    capabilities: caps.clone(),
                }),
            )
            .await;
        let answers = match answer {
            Ok(Message::Delivery(DeliveryMessage::InvokedMany { answers }))
                if answers.len() == descs.len() =>
            {
                answers
            }
            Ok(other) => return fail(&descs, &answer_error(other)),
            Err(e) => return fail(&descs, &e.into()),
        };
        descs
            .into_iter()
            .zip(answers)
            .map(|(desc, answer)| {
                let id = desc.id.clone();
                if answer.service_id != id {
                    return (id, Err(OpError::Refused("answers out of order".into())));
                }
                if let InvokeDecision::Refused(r) = &answer.decision {
                    return (
                        id,
                        Err(OpError::Refused(format!("the offerer refused: {r}"))),
                    );
                }
                let inv = Invocation {
                    desc,
                    offerer,
                    answer,
                    caps: caps.clone(),
                    started_at,
                    started,
                };
                (id, Ok(inv))
            })
            .collect()
    }

    /// G.1 step 7 for one invoked service, then step 8.
    async fn deliver(
        &self,
        inv: Invocation,
        mode: DeliveryMode,
    ) -> (String, Result<FetchOutcome, OpError>) {
        let id = inv.desc.id.clone();
        let r = self.deliver_one(inv, mode).await;
        (id, r)
    }

    async fn deliver_one(
        &self,
        inv: Invocation,
        mode: DeliveryMode,
    ) -> Result<FetchOutcome, OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let Invocation {
            desc,
            offerer,
            answer,
            caps,
            started_at,
            started,
        } = inv;
        let session = answer.session;
        let dir = ctx.config.data_dir.join("downloads");
        tokio::fs::create_dir_all(&dir)
            .await
            .map_err(|e| OpError::Internal(e.to_string()))?;
        let path = dir.join(sanitise(&desc.id));
        // Written under a temporary name, renamed once whole and checked: a transfer that fails
        // or is stopped never leaves a file that looks complete.
        let part = dir.join(format!("{}.part", sanitise(&desc.id)));
        let max_len = answer.length.unwrap_or(0);
        let control = Control::new(max_len);
        self.sessions().live.insert(
            (Role::Consumer, session),
            Live {
                service_id: desc.id.clone(),
                peer: offerer,
                mode,
                variant: answer.variant.clone(),
                control: control.clone(),
                served: None,
            },
        );
        let mut sampler = Sampler::start(&self.inner.pn.view());
        let every = Duration::from_secs(ctx.config.usage.sample_secs);
        let received = sampled(
            self.inner.pn.watch(),
            &mut sampler,
            every,
            self.receive(
                &desc,
                offerer,
                session,
                mode,
                &part,
                max_len,
                control.clone(),
            ),
        )
        .await;
        self.sessions().live.remove(&(Role::Consumer, session));
        let received = match (received, control.state()) {
            (Ok(r), _) => r,
            // Stopped before the content flowed (the offerer dropped the session): what was
            // delivered is nothing, and it is reported as such.
            (Err(_), RunState::Stopped(by)) => Received {
                bytes: control.bytes(),
                sha256: String::new(),
                ended: Ended::Stopped(by),
            },
            (Err(e), _) => {
                let _ = tokio::fs::remove_file(&part).await;
                return Err(e);
            }
        };
        // 5.6.9 switching PNE: the offerer stopped this stream for the switch; the new PNE
        // takes what arrived and reports the use (this node does only if the hand-over
        // fails).
        if let Some((to, done)) = self.take_switching(session) {
            if received.ended == Ended::Stopped(Party::Consumer) {
                let h = SessionHandOver {
                    session,
                    offerer,
                    service_id: desc.id.clone(),
                    offset: received.bytes,
                    total: max_len,
                    started: started_at,
                    variant: answer.variant.clone(),
                };
                match self.hand_over(to, h, &part, &received).await {
                    Ok(()) => {
                        let _ = tokio::fs::remove_file(&part).await;
                        done.send(Ok(crate::delivery::switch::SwitchedSession {
                            id: session_text(session),
                            service_id: desc.id.clone(),
                            offerer: offerer.to_string(),
                            offset: received.bytes,
                            total: max_len,
                        }));
                        return Ok(FetchOutcome {
                            service_id: desc.id,
                            offerer: offerer.to_string(),
                            mode: mode_name(mode).into(),
                            decision: decision_text(&answer.decision),
                            bytes: received.bytes,
                            sha256: received.sha256,
                            path: String::new(),
                            duration_ms: started.elapsed().as_secs_f64() * 1000.0,
                            usage: format!("handed over to {to}"),
                            session: session_text(session),
                            ended: format!("switched to {to}"),
                            variant: answer.variant,
                            collector: "none".into(),
                        });
                    }
                    Err(e) => done.send(Err(e)),
                }
            } else {
                done.send(Err(OpError::Conflict(format!(
                    "the session ended ({}) before it could be switched",
                    received.ended.label()
                ))));
            }
        }
        let shown_path = if received.ended == Ended::Completed {
            tokio::fs::rename(&part, &path)
                .await
                .map_err(|e| OpError::Internal(format!("{}: {e}", path.display())))?;
            path.display().to_string()
        } else {
            let _ = tokio::fs::remove_file(&part).await;
            String::new()
        };
        let duration = started.elapsed();
        let ended = received.ended.label();
        ctx.trace(
            G1,
            7,
            &offerer,
            &me,
            "DeliverContent",
            format!("{} bytes, {}, {ended}", received.bytes, mode_name(mode)),
        );
        let view = self.inner.pn.view();
        let record = UsageRecord {
            service_id: desc.id.clone(),
            service_name: desc.name.clone(),
            offerer,
            pn_id: view.pn_id().map(str::to_owned),
            started: started_at,
            duration_ms: duration.as_millis() as u64,
            bytes: received.bytes,
            capabilities: caps,
            status: view.status.clone(),
            samples: sampler.summary(),
            variant: answer.variant.clone(),
            ended: ended.clone(),
        };
        let (usage, collector) = self.report_use(record).await;
        let decision = decision_text(&answer.decision);
        let Received { bytes, sha256, .. } = received;
        Ok(FetchOutcome {
            service_id: desc.id,
            offerer: offerer.to_string(),
            mode: mode_name(mode).into(),
            decision,
            bytes,
            sha256,
            path: shown_path,
            duration_ms: duration.as_secs_f64() * 1000.0,
            usage,
            session: session_text(session),
            ended,
            variant: answer.variant,
            collector,
        })
    }

    /// The content of one session, pulled or pushed.
    #[allow(clippy::too_many_arguments)]
    async fn receive(
        &self,
        desc: &ServiceDescription,
        offerer: PeerId,
        session: u64,
        mode: DeliveryMode,
        part: &std::path::Path,
        max_len: u64,
        control: std::sync::Arc<Control>,
    ) -> Result<Received, OpError> {
        let ctx = self.ctx();
        let want = match desc.visibility.group() {
            Some(g) => Want::Group(g),
            None => Want::Any,
        };
        let mut stream = match mode {
            DeliveryMode::Pull => {
                let mut streams = ctx.client.stream_control();
                let mut stream = streams
                    .open_stream(offerer, DELIVERY_PROTOCOL)
                    .await
                    .map_err(|e| {
                        OpError::Unavailable(format!("opening the delivery stream: {e}"))
                    })?;
                write_frame(&mut stream, &Hello::Pull { session }).await?;
                stream
            }
            DeliveryMode::Push => {
                let (tx, rx) = oneshot::channel();
                self.inner
                    .waiting_push
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(session, tx);
                let start = ctx
                    .client
                    .request(
                        offerer,
                        Protocol::Cpns,
                        Message::Delivery(DeliveryMessage::Start { session }),
                    )
                    .await;
                let waited = match start {
                    Ok(_) => tokio::select! {
                        w = tokio::time::timeout(PUSH_WAIT, rx) => w,
                        by = stopped(Some(control.subscribe())) => {
                            self.forget_waiting(session);
                            return Ok(Received {
                                bytes: 0,
                                sha256: String::new(),
                                ended: Ended::Stopped(by),
                            });
                        }
                    },
                    Err(e) => {
                        self.forget_waiting(session);
                        return Err(e.into());
                    }
                };
                self.forget_waiting(session);
                waited
                    .map_err(|_| OpError::Unavailable("the offerer did not push in time".into()))?
                    .map_err(|_| OpError::Unavailable("push cancelled".into()))?
            }
        };
        receive_to_file(
            ctx,
            &offerer,
            &mut stream,
            part,
            max_len,
            want,
            Some(control),
        )
        .await
    }

    fn forget_waiting(&self, session: u64) {
        self.inner
            .waiting_push
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&session);
    }

    /// G.1 step 8 after a use: to `cpns-auth` (through the gateway) and to the external
    /// collector, as the user's preferences allow. Returns what became of each.
    pub(super) async fn report_use(&self, mut record: UsageRecord) -> (String, String) {
        let usage = &self.inner.usage;
        let prefs = usage.report_prefs();
        if prefs.omit_capabilities {
            record.capabilities = Capabilities {
                mode: record.capabilities.mode,
                ..Capabilities::default()
            };
            record.samples = Default::default();
        }
        let outcome = usage.report(record.clone()).await;
        let collector = match &self.inner.collector {
            None => "none",
            Some(_) if outcome == crate::usage::UsageOutcome::Suppressed => "suppressed",
            Some(_) if !prefs.external_allowed(&record.service_id, &record.service_name) => {
                "suppressed"
            }
            Some(c) => {
                let ctx = self.ctx();
                let (user, device) = match ctx.enrolment() {
                    Ok(e) => (
                        e.credential.body.user.clone(),
                        e.credential.body.device.clone(),
                    ),
                    Err(_) => (String::new(), ctx.config.device_name.clone()),
                };
                c.post(cpns_api::CollectedUsage {
                    entity: ctx.peer_id.to_string(),
                    user,
                    device,
                    record: crate::usage::record_view(record),
                })
                .await
            }
        };
        (outcome.to_string(), collector.to_string())
    }
}

fn decision_text(d: &InvokeDecision) -> String {
    match d {
        InvokeDecision::Accepted => "accepted".to_string(),
        InvokeDecision::Adapted(a) => format!("adapted: {a}"),
        InvokeDecision::Refused(r) => format!("refused: {r}"),
    }
}

pub(super) fn mode_name(mode: DeliveryMode) -> &'static str {
    match mode {
        DeliveryMode::Pull => "pull",
        DeliveryMode::Push => "push",
    }
}
