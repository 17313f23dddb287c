//! Where overlay events go. Every inbound request is classified and checked against the one
//! authorisation table ([`crate::authz`]) before any handler sees it; a refusal is answered
//! with its typed error and counted. Allowed requests go to their owner: the PN actor (PN,
//! status, keys, the server's requests), the directory, delivery, usage.
//!
//! Handlers run as tasks in the router's own `JoinSet`, at most [`MAX_CONCURRENT`] at once
//! (the overlay's bounded event channel then pushes back on the network).

use std::sync::Arc;

use cpns_overlay::{Event, Message, PnMessage, Protocol};
use libp2p::PeerId;
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::{debug, trace, warn};

use crate::authz::{self, RequestKind};
use crate::context::Context;
use crate::delivery::Delivery;
use crate::lan::Lan;
use crate::pn::{self, Answer, SenderClass};
use crate::services::Services;
use crate::usage::Usage;

/// Most inbound requests handled at once.
const MAX_CONCURRENT: usize = 256;

/// The owners the router hands requests to.
#[derive(Clone)]
pub(crate) struct Router {
    pub(crate) ctx: Context,
    pub(crate) pn: pn::Handle,
    pub(crate) services: Services,
    pub(crate) delivery: Delivery,
    pub(crate) usage: Usage,
    pub(crate) lan: Lan,
    pub(crate) zone: crate::zone::Zone,
    pub(crate) proxy: crate::proxy::Proxy,
}

impl Router {
    /// Reads overlay events until the node stops.
    pub(crate) async fn run(self, mut events: mpsc::Receiver<Event>) {
        let permits = Arc::new(Semaphore::new(MAX_CONCURRENT));
        let mut running = JoinSet::new();
        let cancel = self.ctx.cancel.clone();
        loop {
            let event = tokio::select! {
                biased;
                _ = cancel.cancelled() => break,
                Some(res) = running.join_next(), if !running.is_empty() => {
                    if let Err(e) = res && e.is_panic() {
                        warn!("a request handler panicked: {e}");
                    }
                    continue;
                }
                ev = events.recv() => match ev {
                    Some(ev) => ev,
                    None => break,
                },
            };
            match event {
                Event::InboundRequest {
                    peer,
                    message,
                    channel,
                } => {
                    let class = match self.authorise(peer, &message, channel.protocol()) {
                        Ok(class) => class,
                        Err(refusal) => {
                            let _ = self.ctx.client.respond(channel, *refusal).await;
                            continue;
                        }
                    };
                    let Ok(permit) = permits.clone().acquire_owned().await else {
                        break;
                    };
                    let me = self.clone();
                    running.spawn(async move {
                        let answer = me.dispatch(peer, class, message).await;
                        if let Err(e) = me.ctx.client.respond(channel, answer.message).await {
                            debug!(%peer, "could not answer: {e}");
                        }
                        if let Some(sent) = answer.sent {
                            let _ = sent.send(());
                        }
                        drop(permit);
                    });
                }
                Event::ConnectionClosed { peer } => {
                    self.pn.event(pn::Event::Disconnected(peer));
                }
                Event::NewListenAddr(a) => self.pn.event(pn::Event::ListenAddr(a)),
                Event::MdnsDiscovered { peer, addrs } => self.lan.discovered(peer, addrs),
                Event::MdnsExpired { peer } => self.lan.expired(peer),
                other => trace!(?other, "overlay event"),
            }
        }
        running.abort_all();
        while running.join_next().await.is_some() {}
        debug!("router stopped");
    }

    /// The one check before any handler: the request's kind against the sender's class.
    /// A refusal is the error answer to send, and is counted.
    fn authorise(
        &self,
        peer: PeerId,
        message: &Message,
        protocol: Protocol,
    ) -> Result<SenderClass, Box<Message>> {
        let kind = RequestKind::of(protocol, message);
        let view = self.pn.view();
        let sender = authz::classify(&view, protocol, &peer, crate::now());
        authz::check(kind, sender).map_err(|(code, text)| {
            self.ctx
                .metrics
                .refused_request(&kind.to_string(), sender.label());
            debug!(%peer, %kind, sender = sender.label(), "refused: {text}");
            Box::new(Message::error(code, text))
        })
    }

    /// A member's `cpns proxy play` (5.6.10), at its gateway.
    async fn proxy_play(&self, device: &str, service_id: &str) -> Message {
        if !self.pn.view().is_pn_gateway() {
            return Message::error(cpns_overlay::ErrorCode::Conflict, "not this PN's gateway");
        }
        match self
            .proxy
            .play(&self.ctx, &self.delivery, device, service_id)
            .await
        {
            Ok(p) => Message::Proxy(cpns_overlay::ProxyMessage::Playing {
                device: p.device,
                service_id: p.service_id,
                url: p.url,
                state: p.state,
            }),
            Err(e) => {
                use crate::error::OpError as E;
                use cpns_overlay::ErrorCode as C;
                let code = match &e {
                    E::BadRequest(_) => C::BadRequest,
                    E::NotFound(_) => C::NotFound,
                    E::Conflict(_) => C::Conflict,
                    E::Refused(_) => C::Forbidden,
                    E::Unavailable(_) => C::Busy,
                    E::Internal(_) => C::Internal,
                };
                Message::error(code, e.to_string())
            }
        }
    }

    /// Hands an authorised request to its owner.
    async fn dispatch(&self, peer: PeerId, class: SenderClass, message: Message) -> Answer {
        let plain = |message| Answer {
            message,
            sent: None,
        };
        match message {
            Message::Auth(m) => self.pn.server(m).await,
            Message::Pn(PnMessage::Ping { nonce }) => plain(Message::Pn(PnMessage::Pong { nonce })),
            Message::Pn(PnMessage::UsageReport(report)) => {
                plain(self.usage.on_member_report(peer, report).await)
            }
            Message::Directory(m) => plain(self.services.handle(peer, class, m).await),
            Message::Delivery(m) => plain(self.delivery.handle(peer, class, m).await),
            Message::Zone(m) => plain(self.zone.handle(peer, m).await),
            Message::Proxy(cpns_overlay::ProxyMessage::Play { device, service_id }) => {
                plain(self.proxy_play(&device, &service_id).await)
            }
            Message::Proxy(cpns_overlay::ProxyMessage::Devices) => {
                plain(if self.pn.view().is_pn_gateway() {
                    Message::Proxy(cpns_overlay::ProxyMessage::DeviceList {
                        devices: self.proxy.proxied_pnes(),
                    })
                } else {
                    Message::error(cpns_overlay::ErrorCode::Conflict, "not this PN's gateway")
                })
            }
            m @ (Message::Pn(_) | Message::Status(_) | Message::Group(_)) => {
                self.pn.inbound(peer, class, m).await
            }
            other => plain(Message::error(
                cpns_overlay::ErrorCode::Unsupported,
                format!("{} is not handled here", other.name()),
            )),
        }
    }
}
