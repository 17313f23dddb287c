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
//! the invocation announced (the item's size at publication, at most `proxy.max_item_bytes`)
//! — a Content-Length that differs, a body that ends early or goes on fails the delivery with
//! an error that says so. A resume by offset (5.6.9 `Continue`) asks the device for an HTTP
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
