//! The periodic search on the zone's LAN (F 1) and its answers (F 2): UDP datagrams to the
//! multicast group [`GROUP`] on `zone.port`, one hop (TTL 1), encoded by the one codec and
//! decoded with [`cpns_overlay::MAX_ZONE_DATAGRAM`] as the limit.
//!
//! Nothing in a datagram is trusted: an answer only tells the gateway whom to dial, and the
//! libp2p connection (noise, the PeerId's key) and the credentials exchanged on it (F 3) say
//! who it really is. A searcher's address is not trusted either: a PNE answers at most
//! [`MAX_ANSWERS_PER_SEC`] times a second, to the address the search came from.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::Instant;

use cpns_overlay::{MAX_ZONE_DATAGRAM, Multiaddr, ZoneAnswer, ZoneSearch, codec};
use libp2p::PeerId;
use libp2p::multiaddr::Protocol;
use tokio::net::UdpSocket;
use tracing::{debug, info};

use crate::context::Context;
use crate::trace::flow::ZONE;

/// The zone search's multicast group (administratively scoped, RFC 2365).
pub(crate) const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 67, 78);
/// Most answers a PNE sends in one second, whoever asks.
const MAX_ANSWERS_PER_SEC: u32 = 4;
/// Most listen ports an answer names.
const MAX_PORTS: usize = 4;

/// An answer to this gateway's search.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) peer: PeerId,
    pub(crate) from: Ipv4Addr,
    pub(crate) tcp_ports: Vec<u16>,
}

impl Answer {
    /// Where to dial the PNE: the address the answer came from, on its libp2p TCP ports.
    pub(crate) fn addrs(&self) -> Vec<Multiaddr> {
        self.tcp_ports
            .iter()
            .map(|p| {
                Multiaddr::empty()
                    .with(Protocol::Ip4(self.from))
                    .with(Protocol::Tcp(*p))
            })
            .collect()
    }
}

/// What a socket read gave.
pub(crate) enum Event {
    /// A PNE answered this gateway's search.
    Answer(Answer),
    /// Nothing for the owner (a search answered, garbage dropped…).
    Nothing,
}

/// The two sockets: the gateway's searcher (sends searches, reads answers) and the PNE's
/// responder (reads searches, answers them).
pub(crate) struct Sockets {
    port: u16,
    searcher: Option<UdpSocket>,
    nonces: [u64; 2],
    responder: Option<UdpSocket>,
    tcp_ports: Vec<u16>,
    window: (Instant, u32),
    search_buf: Vec<u8>,
    answer_buf: Vec<u8>,
}

impl Sockets {
    pub(crate) fn new(port: u16) -> Self {
        Self {
            port,
            searcher: None,
            nonces: [0; 2],
            responder: None,
            tcp_ports: Vec::new(),
            window: (Instant::now(), 0),
            search_buf: vec![0; MAX_ZONE_DATAGRAM + 1],
            answer_buf: vec![0; MAX_ZONE_DATAGRAM + 1],
        }
    }

    /// Sends one search (F 1). Answers to this one or the one before are taken.
    pub(crate) async fn search(&mut self, ctx: &Context, zone: &str) -> std::io::Result<()> {
        if self.searcher.is_none() {
            let s = UdpSocket::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).await?;
            s.set_multicast_ttl_v4(1)?;
            s.set_multicast_loop_v4(true)?;
            self.searcher = Some(s);
        }
        let nonce: u64 = rand::random();
        self.nonces = [nonce, self.nonces[0]];
        let bytes = codec::encode(&ZoneSearch {
            zone: zone.to_string(),
            gateway: ctx.peer_id,
            nonce,
        })
        .map_err(std::io::Error::other)?;
        let Some(s) = &self.searcher else {
            return Ok(());
        };
        s.send_to(&bytes, SocketAddrV4::new(GROUP, self.port))
            .await?;
        Ok(())
    }

    /// Not a zone gateway (any more): no searcher.
    pub(crate) fn stop_searching(&mut self) {
        self.searcher = None;
    }

    /// Opens or closes the responder as the user allows zone discovery or not, and notes the
    /// node's listen ports for the answers. Called every period, so a join that failed (no
    /// multicast route yet) is tried again.
    pub(crate) async fn responder(&mut self, discoverable: bool, ctx: &Context) {
        if !discoverable {
            if self.responder.take().is_some() {
                info!("zone discovery off: no longer answering zone searches");
            }
            return;
        }
        self.tcp_ports = ctx
            .client
            .listen_addrs()
            .await
            .unwrap_or_default()
            .iter()
            .filter_map(tcp_port)
            .take(MAX_PORTS)
            .collect();
        if self.responder.is_none() {
            match open_responder(self.port) {
                Ok(s) => {
                    info!(
                        port = self.port,
                        "answering zone searches (zone.discoverable)"
                    );
                    self.responder = Some(s);
                }
                Err(e) => debug!("cannot listen for zone searches yet: {e}"),
            }
        }
    }

    /// The next datagram on either socket (cancel-safe: only `recv_from` is awaited).
    pub(crate) async fn next(&mut self, ctx: &Context) -> Event {
        enum Got {
            Answer(std::io::Result<(usize, SocketAddr)>),
            Search(std::io::Result<(usize, SocketAddr)>),
        }
        let got = {
            let Sockets {
                searcher,
                responder,
                answer_buf,
                search_buf,
                ..
            } = self;
            let searcher = async {
                match searcher {
                    Some(s) => s.recv_from(answer_buf).await,
                    None => std::future::pending().await,
                }
            };
            let responder = async {
                match responder {
                    Some(s) => s.recv_from(search_buf).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = searcher => Got::Answer(r),
                r = responder => Got::Search(r),
            }
        };
        match got {
            Got::Answer(Ok((n, from))) => self.on_answer(n, from),
            Got::Answer(Err(e)) => {
                debug!("zone searcher: {e}");
                self.searcher = None;
                Event::Nothing
            }
            Got::Search(Ok((n, from))) => {
                self.on_search(ctx, n, from).await;
                Event::Nothing
            }
            Got::Search(Err(e)) => {
                debug!("zone responder: {e}");
                self.responder = None;
                Event::Nothing
            }
        }
    }

    fn on_answer(&self, n: usize, from: SocketAddr) -> Event {
        let SocketAddr::V4(from) = from else {
            return Event::Nothing;
        };
        if n > MAX_ZONE_DATAGRAM {
            return Event::Nothing;
        }
        let Ok(a) = codec::decode::<ZoneAnswer>(&self.answer_buf[..n], MAX_ZONE_DATAGRAM) else {
            debug!(%from, "not a zone answer: dropped");
            return Event::Nothing;
        };
        if !self.nonces.contains(&a.nonce) || a.nonce == 0 {
            return Event::Nothing;
        }
        Event::Answer(Answer {
            peer: a.peer,
            from: *from.ip(),
            tcp_ports: a
                .tcp_ports
                .into_iter()
                .filter(|p| *p != 0)
                .take(MAX_PORTS)
                .collect(),
        })
    }

    /// F 2 at the PNE: answers a search (the user allows it, or the responder would not be
    /// open), within the rate bound.
    async fn on_search(&mut self, ctx: &Context, n: usize, from: SocketAddr) {
        if n > MAX_ZONE_DATAGRAM || self.tcp_ports.is_empty() {
            return;
        }
        let Ok(search) = codec::decode::<ZoneSearch>(&self.search_buf[..n], MAX_ZONE_DATAGRAM)
        else {
            debug!(%from, "not a zone search: dropped");
            return;
        };
        if search.gateway == ctx.peer_id {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.window.0).as_secs() >= 1 {
            self.window = (now, 0);
        }
        if self.window.1 >= MAX_ANSWERS_PER_SEC {
            return;
        }
        self.window.1 += 1;
        let Ok(bytes) = codec::encode(&ZoneAnswer {
            nonce: search.nonce,
            peer: ctx.peer_id,
            tcp_ports: self.tcp_ports.clone(),
        }) else {
            return;
        };
        let Some(s) = &self.responder else {
            return;
        };
        if s.send_to(&bytes, from).await.is_ok() {
            ctx.trace(
                ZONE,
                2,
                &ctx.peer_id,
                &search.gateway,
                "ZoneSearchAnswer",
                format!(
                    "zone {}",
                    crate::trace::clean_text(&search.zone, cpns_overlay::MAX_ZONE_NAME)
                ),
            );
        }
    }
}

fn tcp_port(a: &Multiaddr) -> Option<u16> {
    let mut it = a.iter();
    match (it.next(), it.next()) {
        (Some(Protocol::Ip4(ip)), Some(Protocol::Tcp(p))) if !ip.is_loopback() => Some(p),
        _ => None,
    }
}

/// The responder's socket: `zone.port` on every address, shared with other nodes of the
/// host (SO_REUSEADDR/SO_REUSEPORT), in the search's group.
fn open_responder(port: u16) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port).into())?;
    s.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sockets() -> Sockets {
        let mut s = Sockets::new(1902);
        s.nonces = [7, 0];
        s
    }

    fn answer_bytes(nonce: u64, ports: Vec<u16>) -> Vec<u8> {
        codec::encode(&ZoneAnswer {
            nonce,
            peer: PeerId::random(),
            tcp_ports: ports,
        })
        .expect("encodes")
    }

    fn from() -> SocketAddr {
        SocketAddr::from(([10, 0, 0, 9], 40000))
    }

    #[test]
    fn an_answer_to_this_search_names_whom_to_dial() {
        let mut s = sockets();
        let b = answer_bytes(7, vec![4001, 0, 4002, 4003, 4004, 4005]);
        s.answer_buf[..b.len()].copy_from_slice(&b);
        let Event::Answer(a) = s.on_answer(b.len(), from()) else {
            panic!("not taken");
        };
        assert_eq!(
            a.tcp_ports,
            vec![4001, 4002, 4003, 4004],
            "port 0 dropped, at most 4"
        );
        assert_eq!(a.addrs()[0].to_string(), "/ip4/10.0.0.9/tcp/4001");
    }

    #[test]
    fn stale_garbage_and_oversized_answers_are_dropped() {
        let mut s = sockets();
        let stale = answer_bytes(8, vec![4001]);
        s.answer_buf[..stale.len()].copy_from_slice(&stale);
        assert!(matches!(s.on_answer(stale.len(), from()), Event::Nothing));
        s.answer_buf[..5].copy_from_slice(&[0xff; 5]);
        assert!(matches!(s.on_answer(5, from()), Event::Nothing));
        assert!(matches!(
            s.on_answer(MAX_ZONE_DATAGRAM + 1, from()),
            Event::Nothing
        ));
        // A search with no nonce yet (0) never matches an answer of 0.
        let mut fresh = Sockets::new(1902);
        let zero = answer_bytes(0, vec![4001]);
        fresh.answer_buf[..zero.len()].copy_from_slice(&zero);
        assert!(matches!(
            fresh.on_answer(zero.len(), from()),
            Event::Nothing
        ));
    }
}
