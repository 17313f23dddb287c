//! The public face of Service/Content Delivery, for the local API and in-process users
//! ([`crate::Handle::content`]): one method per operation.

use std::collections::BTreeMap;

use cpns_directory::{ServiceDescription, ServiceDraft};
use cpns_overlay::{AggregatedFeed, DeliveryMode};
use libp2p::PeerId;

use super::session::parse_session;
use super::{
    Action, ContentSource, Delivery, FetchOutcome, PendingPush, PushOutcome, ReceivedFeed,
    Recipient, SessionInfo, Target,
};
use crate::error::OpError;

/// Service/Content Delivery at one node (cheap to clone).
#[derive(Clone)]
pub struct Content {
    delivery: Delivery,
}

impl Content {
    pub(super) fn new(delivery: Delivery) -> Self {
        Self { delivery }
    }

    /// Publishes a service (G.1 step 0) whose content this node delivers: a file, an external
    /// `http://` source fetched here, and/or variants for different devices.
    pub async fn publish(
        &self,
        draft: ServiceDraft,
        source: Option<ContentSource>,
    ) -> Result<ServiceDescription, OpError> {
        self.delivery.publish(draft, source).await
    }

    /// G.1 steps 5-8 for several services at once (one invocation per offerer).
    pub async fn fetch_many(
        &self,
        service_ids: &[String],
        mode: DeliveryMode,
    ) -> Result<Vec<(String, Result<FetchOutcome, OpError>)>, OpError> {
        self.delivery.fetch_many(service_ids, mode).await
    }

    /// Every delivery session at this node, either side.
    pub fn sessions(&self) -> Vec<SessionInfo> {
        self.delivery.session_infos()
    }

    /// Stops, pauses or resumes a session (`cpns content stop|pause|resume ID`), at this
    /// node and at the other side.
    pub async fn control(&self, session: &str, action: Action) -> Result<SessionInfo, OpError> {
        let id = parse_session(session)
            .ok_or_else(|| OpError::BadRequest(format!("{session:?} is not a session id")))?;
        self.delivery.control(id, action).await
    }

    /// Moves the sessions this node receives (or one) to another PNE of the same user in the
    /// same PN (`cpns pn switch --to PEER [--session ID]`, 5.6.9): the new PNE takes what this
    /// node received and the offerer continues to it from there.
    pub async fn switch_pne(
        &self,
        to: PeerId,
        session: Option<&str>,
    ) -> Result<cpns_api::SwitchView, OpError> {
        let id = match session {
            Some(s) => Some(
                parse_session(s)
                    .ok_or_else(|| OpError::BadRequest(format!("{s:?} is not a session id")))?,
            ),
            None => None,
        };
        self.delivery.switch_pne(to, id).await
    }

    /// Resume by offset (`cpns content continue ID OFFSET`): asks the offerer of a session
    /// this node receives to send its content from byte `offset` on. The offerer refuses an
    /// offset beyond the content, and a session whose content flows already.
    pub async fn continue_at(&self, session: &str, offset: u64) -> Result<(), OpError> {
        let id = parse_session(session)
            .ok_or_else(|| OpError::BadRequest(format!("{session:?} is not a session id")))?;
        self.delivery.continue_at(id, offset).await
    }

    /// Pushes a file to an entity, the PN or a Service Group.
    pub async fn push(
        &self,
        path: &std::path::Path,
        to: Target,
        via_gateway: bool,
    ) -> Result<PushOutcome, OpError> {
        self.delivery.push(path, to, via_gateway).await
    }

    /// Recent pushes from this node, with where each receiver stands.
    pub fn pushes(&self) -> Vec<PushOutcome> {
        self.delivery.recent_pushes()
    }

    /// Pushes waiting in the inbox for this node's owner.
    pub fn pending(&self) -> Vec<PendingPush> {
        self.delivery.pending_pushes()
    }

    /// Accepts a waiting push: its content is collected now.
    pub async fn accept(&self, id: &str) -> Result<cpns_api::AcceptedPush, OpError> {
        self.delivery.accept_push(id).await
    }

    /// Declines a waiting push.
    pub async fn decline(&self, id: &str) -> Result<(), OpError> {
        self.delivery.decline_push(id).await
    }

    /// Contributes this PNE's data to its gateway's aggregated feed.
    pub async fn contribute(
        &self,
        feed: &str,
        common: Vec<u8>,
        part: Vec<u8>,
    ) -> Result<(), OpError> {
        self.delivery.contribute(feed, common, part).await
    }

    /// The gateway's aggregated feed.
    pub async fn aggregate(&self, feed: &str) -> Result<AggregatedFeed, OpError> {
        self.delivery.aggregate(feed).await
    }

    /// At the gateway: distributes a feed, each PNE's part sealed to it.
    pub async fn distribute(
        &self,
        feed: &str,
        common: Vec<u8>,
        parts: BTreeMap<PeerId, Vec<u8>>,
    ) -> Result<(u64, Vec<Recipient>), OpError> {
        self.delivery.distribute(feed, common, parts).await
    }

    /// Feeds this PNE received.
    pub fn feeds(&self) -> Vec<ReceivedFeed> {
        self.delivery.received_feeds()
    }

    /// The reporting preferences beside the never-report list: services never sent to the
    /// external collector, and whether capabilities are left out of reports.
    pub fn report_prefs(&self) -> (Vec<String>, bool) {
        let p = self.delivery.inner.usage.report_prefs();
        (p.never_external, p.omit_capabilities)
    }

    /// Replaces them.
    pub async fn set_report_prefs(
        &self,
        never_external: Vec<String>,
        omit_capabilities: bool,
    ) -> Result<(), OpError> {
        self.delivery
            .inner
            .usage
            .set_report_prefs(crate::usage::ReportPrefs {
                never_external,
                omit_capabilities,
            })
            .await
    }
}

impl Delivery {
    /// G.1 step 0 for a service this node delivers (see [`Content::publish`]).
    pub(crate) async fn publish(
        &self,
        mut draft: ServiceDraft,
        source: Option<ContentSource>,
    ) -> Result<ServiceDescription, OpError> {
        let ctx = self.ctx();
        if let Some(source) = &source {
            if draft.endpoint.protocol.is_empty() {
                draft.endpoint.protocol = "cpns-delivery".into();
                draft.endpoint.addresses = ctx
                    .client
                    .listen_addrs()
                    .await?
                    .into_iter()
                    .map(|a| {
                        a.with(libp2p::multiaddr::Protocol::P2p(ctx.peer_id))
                            .to_string()
                    })
                    .collect();
            }
            if !source.variants.is_empty() {
                let names: Vec<&str> = source.variants.iter().map(|v| v.name.as_str()).collect();
                draft.metadata.insert("variants".into(), names.join(","));
            }
            let id = draft
                .id
                .get_or_insert_with(|| format!("svc-{}", hex::encode(rand::random::<[u8; 8]>())))
                .clone();
            self.register_source(&id, source.clone()).await?;
        }
        self.inner.services.publish(draft).await
    }
}
