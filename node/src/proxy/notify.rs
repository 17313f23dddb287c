//! SSDP announcements (UPnP Device Architecture 1.1, 1.2): a device says `ssdp:alive` when it
//! arrives (and every few minutes) and `ssdp:byebye` when it leaves, as a `NOTIFY` to
//! 239.255.255.250:1900. The proxy's searches alone would notice a departure only after
//! [`super::MISSES`] search periods; listening lets a device that says goodbye leave the PN
//! at once, and one that arrives be registered without waiting for the next search.
//!
//! ssdp-client (under rupnp) only searches, so this module listens itself, and parses each
//! datagram as the HTTP request it is with `httparse`. A datagram is any LAN host's word: it
//! is bounded in size, and a notice only makes the proxy look (a search, or a check of the
//! device's description), never change the inventory on its own.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

/// SSDP's multicast group and port.
const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 255, 250);
const PORT: u16 = 1900;
/// Largest datagram read (an SSDP message is a few hundred bytes).
const MAX_DATAGRAM: usize = 2048;
/// Most header lines parsed.
const MAX_HEADERS: usize = 32;
/// How often joining the group is tried again while the LAN is not up.
const RETRY: std::time::Duration = std::time::Duration::from_secs(2);
/// Longest UDN taken from a notice.
const MAX_UDN: usize = 256;

/// What a device announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Notice {
    /// `ssdp:alive` from the device with this UDN (`uuid:…`).
    Alive(String),
    /// `ssdp:byebye` from the device with this UDN.
    ByeBye(String),
}

/// Parses one datagram: a `NOTIFY * HTTP/1.1` with `NTS` alive or byebye and a `USN`; any other
/// message (searches, answers, garbage) is `None`.
pub(super) fn parse(datagram: &[u8]) -> Option<Notice> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(datagram) {
        Ok(httparse::Status::Complete(_)) => {}
        // Every SSDP message ends with an empty line; a partial one is not taken.
        _ => return None,
    }
    if !req.method?.eq_ignore_ascii_case("NOTIFY") {
        return None;
    }
    let header = |name: &str| {
        req.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .and_then(|h| std::str::from_utf8(h.value).ok())
            .map(str::trim)
    };
    // USN is `uuid:<device>` or `uuid:<device>::<type>`: the device's UDN comes first.
    let udn = header("USN")?.split("::").next()?.trim();
    if !udn.starts_with("uuid:") || udn.len() > MAX_UDN {
        return None;
    }
    match header("NTS")? {
        nts if nts.eq_ignore_ascii_case("ssdp:alive") => Some(Notice::Alive(udn.to_string())),
        nts if nts.eq_ignore_ascii_case("ssdp:byebye") => Some(Notice::ByeBye(udn.to_string())),
        _ => None,
    }
}

/// The listening socket: port 1900 shared with any other SSDP listener on this host
/// (`SO_REUSEADDR`/`SO_REUSEPORT`), in the group on the interface the route to it names.
fn socket() -> std::io::Result<std::net::UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    s.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

/// Listens until `cancel`, handing each notice to `out` (bounded: when the proxy is behind,
/// notices are dropped; its searches still see every device).
pub(super) async fn listen(out: mpsc::Sender<Notice>, cancel: CancellationToken) {
    // The LAN may come up after the node (no route to the group yet: "no such device"):
    // try again until it does.
    let mut said = false;
    let socket = loop {
        match socket().and_then(tokio::net::UdpSocket::from_std) {
            Ok(s) => break s,
            Err(e) => {
                if !said {
                    info!(
                        "Non-CPNS proxy: not listening for SSDP announcements yet ({e}); trying again every {} s",
                        RETRY.as_secs()
                    );
                    said = true;
                }
            }
        }
        tokio::select! {
            _ = cancel.cancelled() => return,
            _ = tokio::time::sleep(RETRY) => {}
        }
    };
    info!("Non-CPNS proxy: listening for SSDP announcements");
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        let got = tokio::select! {
            _ = cancel.cancelled() => return,
            r = socket.recv_from(&mut buf) => r,
        };
        match got {
            Ok((n, from)) => {
                if let Some(notice) = parse(&buf[..n]) {
                    debug!(%from, ?notice, "SSDP announcement");
                    let _ = out.try_send(notice);
                }
            }
            Err(e) => debug!("SSDP listen: {e}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn alive_and_byebye_are_read_and_everything_else_is_not() {
        let byebye = b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\
            NT: upnp:rootdevice\r\nNTS: ssdp:byebye\r\n\
            USN: uuid:4d696e69-444c-164e-9d41-001ec92f0378::upnp:rootdevice\r\n\r\n";
        assert_eq!(
            parse(byebye),
            Some(Notice::ByeBye(
                "uuid:4d696e69-444c-164e-9d41-001ec92f0378".into()
            ))
        );
        let alive = b"NOTIFY * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\
            CACHE-CONTROL: max-age=1810\r\nLOCATION: http://10.0.0.2:8200/rootDesc.xml\r\n\
            NT: uuid:abc\r\nnts: SSDP:ALIVE\r\nUSN: uuid:abc\r\n\r\n";
        assert_eq!(parse(alive), Some(Notice::Alive("uuid:abc".into())));
        // A search, an answer, a notice without USN or with a strange one, a partial one,
        // random bytes: nothing.
        let search = b"M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\
            MAN: \"ssdp:discover\"\r\nMX: 3\r\nST: ssdp:all\r\n\r\n";
        assert_eq!(parse(search), None);
        assert_eq!(
            parse(b"HTTP/1.1 200 OK\r\nUSN: uuid:abc\r\nST: upnp:rootdevice\r\n\r\n"),
            None
        );
        assert_eq!(
            parse(b"NOTIFY * HTTP/1.1\r\nNTS: ssdp:byebye\r\n\r\n"),
            None
        );
        assert_eq!(
            parse(b"NOTIFY * HTTP/1.1\r\nNTS: ssdp:byebye\r\nUSN: host:x\r\n\r\n"),
            None
        );
        assert_eq!(
            parse(b"NOTIFY * HTTP/1.1\r\nNTS: ssdp:byebye\r\nUSN: uuid:abc"),
            None
        );
        let long = format!(
            "NOTIFY * HTTP/1.1\r\nNTS: ssdp:byebye\r\nUSN: uuid:{}\r\n\r\n",
            "a".repeat(300)
        );
        assert_eq!(parse(long.as_bytes()), None);
        assert_eq!(parse(&[0xff; 64]), None);
    }
}
