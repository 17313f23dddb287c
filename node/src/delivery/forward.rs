//! Forwarding PNE to PNE through the gateway (5.6.7: "content forwarding from one serviced PNE
//! to another PNE"), for two members with no direct path: the sender opens a delivery stream
//! to its gateway asking it to relay to the other member; the gateway opens one to that member
//! and copies bytes both ways. What it copies is sealed end to end ([`super::e2e`]), so the
//! gateway — which holds the PN key — cannot read it, and cannot pass off its own bytes as the
//! sender's.

use std::time::Duration;

use cpns_overlay::DELIVERY_PROTOCOL;
use futures::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use libp2p::{PeerId, Stream};
use tracing::debug;

use super::Delivery;
use super::stream::{Hello, Relayed, read_frame_timed, write_frame};
use crate::error::OpError;
use crate::trace::flow::DELIVERY;

/// How long opening a direct stream may take before the gateway is tried.
const DIRECT: Duration = Duration::from_secs(10);
/// Relayed streams a gateway carries at once.
pub(super) const MAX_RELAYS: usize = 8;
/// A relayed stream with no bytes either way for this long is cut.
const RELAY_IDLE: Duration = Duration::from_secs(60);
/// The relay's copy buffer.
const RELAY_BUF: usize = 256 * 1024;

impl Delivery {
    /// A delivery stream to `peer`: direct, or (when there is no direct path, or `via_gateway`)
    /// relayed by this node's gateway. Says whether it is relayed.
    pub(super) async fn open_to(
        &self,
        peer: PeerId,
        via_gateway: bool,
    ) -> Result<(Stream, bool), OpError> {
        let ctx = self.ctx();
        let mut control = ctx.client.stream_control();
        let gateway = self.inner.pn.view().my_gateway().filter(|g| *g != peer);
        let direct_error = if via_gateway && gateway.is_some() {
            "relayed on request".to_string()
        } else {
            match tokio::time::timeout(DIRECT, control.open_stream(peer, DELIVERY_PROTOCOL)).await {
                Ok(Ok(s)) => return Ok((s, false)),
                Ok(Err(e)) => e.to_string(),
                Err(_) => "timed out".to_string(),
            }
        };
        let Some(gw) = gateway else {
            return Err(OpError::Unavailable(format!(
                "no path to {peer}: {direct_error}"
            )));
        };
        debug!(%peer, %gw, "no direct path ({direct_error}): through the gateway");
        let mut s = tokio::time::timeout(DIRECT, control.open_stream(gw, DELIVERY_PROTOCOL))
            .await
            .map_err(|_| OpError::Unavailable("the gateway did not answer".into()))?
            .map_err(|e| {
                OpError::Unavailable(format!(
                    "no path to {peer} ({direct_error}), nor to the gateway: {e}"
                ))
            })?;
        write_frame(&mut s, &Hello::Forward { to: peer }).await?;
        match read_frame_timed(&mut s).await? {
            Relayed::Open => Ok((s, true)),
            Relayed::Refused(why) => Err(OpError::Refused(format!("the gateway: {why}"))),
        }
    }

    /// At the gateway: relays `from`'s stream to `to`, both members of its PN.
    pub(super) async fn relay(
        &self,
        from: PeerId,
        to: PeerId,
        mut a: Stream,
    ) -> Result<(), OpError> {
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let view = self.inner.pn.view();
        let refusal = if !view.is_pn_gateway() {
            Some("this node is not the PN's gateway".to_string())
        } else if !view.is_member(&from) || !view.is_member(&to) || to == from || to == me {
            Some("the gateway relays between two other members of its PN".to_string())
        } else {
            None
        };
        let permit = match refusal {
            Some(r) => Err(r),
            None => self
                .inner
                .relays
                .clone()
                .try_acquire_owned()
                .map_err(|_| format!("at most {MAX_RELAYS} relayed streams at once")),
        };
        let permit = match permit {
            Ok(p) => p,
            Err(why) => {
                write_frame(&mut a, &Relayed::Refused(why.clone())).await?;
                return Err(OpError::Refused(why));
            }
        };
        let mut control = ctx.client.stream_control();
        let b = tokio::time::timeout(DIRECT, control.open_stream(to, DELIVERY_PROTOCOL)).await;
        let mut b = match b {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let why = format!("{to} is unreachable: {e}");
                write_frame(&mut a, &Relayed::Refused(why.clone())).await?;
                return Err(OpError::Unavailable(why));
            }
            Err(_) => {
                let why = format!("{to} did not answer");
                write_frame(&mut a, &Relayed::Refused(why.clone())).await?;
                return Err(OpError::Unavailable(why));
            }
        };
        write_frame(&mut b, &Hello::Forwarded { from }).await?;
        write_frame(&mut a, &Relayed::Open).await?;
        ctx.trace(
            DELIVERY,
            4,
            &from,
            &to,
            "ForwardContent",
            "relayed, sealed end to end",
        );
        let (ar, aw) = a.split();
        let (br, bw) = b.split();
        let (up, down) = futures::join!(pipe(ar, bw), pipe(br, aw));
        drop(permit);
        debug!(%from, %to, ?up, ?down, "relay ended");
        up.map(|_| ())
            .map_err(|e| OpError::Unavailable(format!("relaying: {e}")))
    }
}

/// Copies `r` to `w` until `r` ends, then closes `w`; fails after [`RELAY_IDLE`] without
/// progress either way.
async fn pipe<R: AsyncRead + Unpin, W: AsyncWrite + Unpin>(
    mut r: R,
    mut w: W,
) -> std::io::Result<u64> {
    let idle = || std::io::Error::new(std::io::ErrorKind::TimedOut, "relay idle");
    let mut buf = vec![0u8; RELAY_BUF];
    let mut total = 0u64;
    loop {
        let n = tokio::time::timeout(RELAY_IDLE, r.read(&mut buf))
            .await
            .map_err(|_| idle())??;
        if n == 0 {
            break;
        }
        tokio::time::timeout(RELAY_IDLE, w.write_all(&buf[..n]))
            .await
            .map_err(|_| idle())??;
        total += n as u64;
    }
    let _ = w.close().await;
    Ok(total)
}
