//! The content of a proxied device's item (5.6.10, the Non-CPNS proxy's Service/Content
//! Delivery): when a PNE fetches an item the gateway publishes for a UPnP/DLNA MediaServer
//! (`Origin::Device`), the gateway asks the device for it over HTTP at that moment and seals
//! its body into the delivery stream chunk by chunk as it arrives: nothing is downloaded
//! first, nothing kept on disk, and a file changed on the device is sent as it is now.
//!
//! Unlike an external server's content ([`super::external`], fetched once into a cache for
//! many consumers), a device on the gateway's LAN is asked once per delivery.
//!
//! The device is hostile input like everything the proxy reads: no redirect is followed, the
//! connection and every wait for more bytes are bounded, and it must send exactly the length
//! the invocation announced (the item's size at publication, at most `proxy.max_item_bytes`):
//! the invocation asks it with a HEAD first ([`check`], a refusal the PNE reads), and during
//! the stream a Content-Length that differs, a body that ends early or goes on fails the
//! delivery with an error that says so. A resume by offset (5.6.9 `Continue`) asks the device for an HTTP
//! byte range; a device that does not serve ranges makes the resume fail, clearly.

use std::io;
use std::time::Duration;

use crate::error::OpError;

/// Bound on connecting to the device and on its answer's head.
const ANSWER_WAIT: Duration = Duration::from_secs(15);
/// Bound on each wait for more of the body (a paused delivery does not wait: it does not
/// read).
const BODY_IDLE: Duration = Duration::from_secs(30);

/// The HTTP client of the Non-CPNS proxy's rules: no redirect followed (a device's word does
/// not send the gateway elsewhere), no HTTP proxy, a bounded connection; `total` bounds a
/// whole exchange (none for deliveries, which may be paused for long).
pub(crate) fn http_client(total: Option<Duration>) -> Result<reqwest::Client, OpError> {
    let mut b = reqwest::Client::builder()
        .connect_timeout(ANSWER_WAIT)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(t) = total {
        b = b.timeout(t);
    }
    b.build()
        .map_err(|e| OpError::Internal(format!("no HTTP client: {e}")))
}

/// A device's item body being read, as a blocking reader for the sender's sealing thread
/// ([`super::stream::stream_file`]): each read waits on the runtime for the next bytes.
pub(super) struct DeviceBody {
    rt: tokio::runtime::Handle,
    resp: reqwest::Response,
    /// The last piece read, from `at` on still to hand out.
    pending: Vec<u8>,
    at: usize,
    /// Bytes still to come.
    left: u64,
    url: String,
}

/// Asks the device at `url` for its item from byte `offset` on, `length` bytes in all
/// (what the invocation announced).
pub(super) async fn open(
    client: &reqwest::Client,
    url: &str,
    offset: u64,
    length: u64,
) -> Result<DeviceBody, OpError> {
    let unavailable = |why: String| OpError::Unavailable(format!("the proxied device: {why}"));
    if offset > length {
        return Err(OpError::BadRequest(format!(
            "offset {offset} is beyond the item's {length} bytes"
        )));
    }
    let mut req = client.get(url);
    if offset > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={offset}-"));
    }
    let resp = tokio::time::timeout(ANSWER_WAIT, req.send())
        .await
        .map_err(|_| unavailable(format!("{url} did not answer within {ANSWER_WAIT:?}")))?
        .map_err(|e| unavailable(format!("{url}: {e}")))?;
    let status = resp.status();
    let expected = length - offset;
    if offset > 0 {
        let range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if status != reqwest::StatusCode::PARTIAL_CONTENT
            || !range.starts_with(&format!("bytes {offset}-"))
        {
            return Err(OpError::Refused(format!(
                "the proxied device does not serve {url} from byte {offset} \
                 (answered {status}, Content-Range {range:?}): cannot resume by offset"
            )));
        }
    } else if status != reqwest::StatusCode::OK {
        return Err(unavailable(format!("{url} answered {status}")));
    }
    if let Some(n) = resp.content_length()
        && n != expected
    {
        return Err(OpError::Conflict(format!(
            "the proxied device now sends {n} bytes for {url}, its item was published with \
             {length} (from byte {offset}: {expected}); it changed since"
        )));
    }
    Ok(DeviceBody {
        rt: tokio::runtime::Handle::current(),
        resp,
        pending: Vec::new(),
        at: 0,
        left: expected,
        url: url.to_string(),
    })
}

/// Whether the device still has the item as it was published, asked with a HEAD when a PNE
/// invokes it, so that a changed or missing item is a refusal the consumer reads (once the
/// stream is open, a failure can only cut it). A device that does not answer HEAD (any status
/// but a success or a 404) is not refused here: the GET checks the length again.
pub(super) async fn check(client: &reqwest::Client, url: &str, length: u64) -> Result<(), String> {
    let resp = tokio::time::timeout(ANSWER_WAIT, client.head(url).send())
        .await
        .map_err(|_| format!("the proxied device did not answer within {ANSWER_WAIT:?}"))?
        .map_err(|e| format!("the proxied device: {e}"))?;
    if resp.status() == reqwest::StatusCode::NOT_FOUND {
        return Err(format!("the proxied device no longer has {url}"));
    }
    let announced = resp
        .headers()
        .get(reqwest::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    match announced {
        Some(n) if resp.status().is_success() && n != length => Err(format!(
            "the proxied device's item changed since it was published ({n} bytes, not {length})"
        )),
        _ => Ok(()),
    }
}

impl DeviceBody {
    /// The next piece of the body, `None` at its end.
    fn next_piece(&mut self) -> io::Result<Option<Vec<u8>>> {
        let url = &self.url;
        let resp = &mut self.resp;
        self.rt.block_on(async {
            match tokio::time::timeout(BODY_IDLE, resp.chunk()).await {
                Err(_) => Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("the proxied device sent nothing for {BODY_IDLE:?} ({url})"),
                )),
                Ok(Err(e)) => Err(io::Error::other(format!("the proxied device: {url}: {e}"))),
                Ok(Ok(piece)) => Ok(piece.map(|b| b.to_vec())),
            }
        })
    }

    fn too_long(&self) -> io::Error {
        io::Error::other(format!(
            "the proxied device sent more bytes than its item's announced length ({})",
            self.url
        ))
    }
}

impl io::Read for DeviceBody {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() || self.left == 0 {
            return Ok(0);
        }
        while self.at >= self.pending.len() {
            match self.next_piece()? {
                Some(piece) => {
                    self.pending = piece;
                    self.at = 0;
                }
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the proxied device's body ended {} bytes short of the item's \
                             announced length ({})",
                            self.left, self.url
                        ),
                    ));
                }
            }
        }
        let n = buf.len().min(self.pending.len() - self.at);
        if n as u64 > self.left {
            return Err(self.too_long());
        }
        buf[..n].copy_from_slice(&self.pending[self.at..self.at + n]);
        self.at += n;
        self.left -= n as u64;
        if self.left == 0 {
            // Every announced byte is here: the device must have nothing more to say.
            if self.at < self.pending.len() {
                return Err(self.too_long());
            }
            while let Some(piece) = self.next_piece()? {
                if !piece.is_empty() {
                    return Err(self.too_long());
                }
            }
        }
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Read;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// A device on loopback that answers every request with `answer` (its head and body as
    /// raw bytes), then closes; returns the item's URL and the requests it got.
    async fn device(answer: Vec<u8>) -> (String, tokio::task::JoinHandle<Vec<String>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/MediaItems/1.wav", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let mut heads = Vec::new();
            let Ok((mut conn, _)) = listener.accept().await else {
                return heads;
            };
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && conn.read_exact(&mut byte).await.is_ok() {
                head.push(byte[0]);
            }
            heads.push(String::from_utf8_lossy(&head).into_owned());
            let _ = conn.write_all(&answer).await;
            let _ = conn.shutdown().await;
            heads
        });
        (url, task)
    }

    fn answer(head: &str, body: &[u8]) -> Vec<u8> {
        let mut a = format!("{head}\r\nConnection: close\r\n\r\n").into_bytes();
        a.extend_from_slice(body);
        a
    }

    fn chunked(body: &[u8]) -> Vec<u8> {
        let mut a =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
        for piece in body.chunks(7) {
            a.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
            a.extend_from_slice(piece);
            a.extend_from_slice(b"\r\n");
        }
        a.extend_from_slice(b"0\r\n\r\n");
        a
    }

    /// Reads `length` bytes from `offset` as the sealing thread does (a blocking thread).
    async fn read(url: &str, offset: u64, length: u64) -> Result<Vec<u8>, String> {
        let client = http_client(None).unwrap();
        let mut body = open(&client, url, offset, length)
            .await
            .map_err(|e| e.to_string())?;
        let want = (length - offset) as usize;
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            body.read_exact(&mut buf).map_err(|e| e.to_string())?;
            Ok(buf)
        })
        .await
        .unwrap()
    }

    /// The device must send exactly the announced length: its whole body is read as it comes
    /// (also without a Content-Length), and a Content-Length that differs, a body that ends
    /// short or one that goes on fail with an error that says which.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_must_send_exactly_the_announced_length() {
        let item: Vec<u8> = (0..100u8).collect();

        let (url, _) = device(answer("HTTP/1.1 200 OK\r\nContent-Length: 100", &item)).await;
        assert_eq!(read(&url, 0, 100).await.unwrap(), item);

        let (url, _) = device(chunked(&item)).await;
        assert_eq!(read(&url, 0, 100).await.unwrap(), item);

        let (url, _) = device(answer("HTTP/1.1 200 OK\r\nContent-Length: 100", &item)).await;
        let e = read(&url, 0, 90).await.unwrap_err();
        assert!(
            e.contains("now sends 100 bytes") && e.contains("published with 90"),
            "{e}"
        );

        let (url, _) = device(chunked(&item)).await;
        let e = read(&url, 0, 90).await.unwrap_err();
        assert!(e.contains("more bytes than"), "{e}");
        // The announced end falls between two pieces (7 bytes each): the next one is too many.
        let (url, _) = device(chunked(&item)).await;
        let e = read(&url, 0, 98).await.unwrap_err();
        assert!(e.contains("more bytes than"), "{e}");

        let (url, _) = device(chunked(&item)).await;
        let e = read(&url, 0, 120).await.unwrap_err();
        assert!(e.contains("20 bytes short"), "{e}");

        // Asked when a PNE invokes the item: a changed size or a missing item is refused.
        let client = http_client(None).unwrap();
        let (url, _) = device(answer("HTTP/1.1 200 OK\r\nContent-Length: 100", &[])).await;
        assert!(check(&client, &url, 100).await.is_ok());
        let (url, _) = device(answer("HTTP/1.1 200 OK\r\nContent-Length: 100", &[])).await;
        let e = check(&client, &url, 90).await.unwrap_err();
        assert!(e.contains("changed since it was published"), "{e}");
        let (url, _) = device(answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0", &[])).await;
        assert!(check(&client, &url, 100).await.is_err());

        let (url, _) = device(answer("HTTP/1.1 404 Not Found\r\nContent-Length: 0", &[])).await;
        let e = read(&url, 0, 100).await.unwrap_err();
        assert!(e.contains("404"), "{e}");

        let (url, _) = device(answer(
            "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/\r\nContent-Length: 0",
            &[],
        ))
        .await;
        let e = read(&url, 0, 100).await.unwrap_err();
        assert!(e.contains("302"), "a redirect is not followed: {e}");
    }

    /// A resume by offset asks for a byte range: a `206` from that byte is read; a device
    /// that ignores the range (`200`, the whole item) is refused, not sent from byte 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resume_asks_the_device_for_a_range() {
        let item: Vec<u8> = (0..100u8).collect();
        let (url, asked) = device(answer(
            "HTTP/1.1 206 Partial Content\r\nContent-Range: bytes 40-99/100\r\nContent-Length: 60",
            &item[40..],
        ))
        .await;
        assert_eq!(read(&url, 40, 100).await.unwrap(), &item[40..]);
        let heads = asked.await.unwrap();
        assert!(
            heads[0].to_ascii_lowercase().contains("range: bytes=40-"),
            "{heads:?}"
        );

        let (url, _) = device(answer("HTTP/1.1 200 OK\r\nContent-Length: 100", &item)).await;
        let e = read(&url, 40, 100).await.unwrap_err();
        assert!(e.contains("cannot resume by offset"), "{e}");
    }
}
