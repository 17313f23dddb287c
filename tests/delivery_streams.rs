//! Delivery streams opened at once (several services in one invocation, two consumers of one
//! external source, a push to the whole PN) all reach the acceptor: libp2p-stream 0.5.0-alpha
//! dropped every inbound stream beyond one waiting for the acceptor ("Channel is full,
//! dropping inbound stream"); `vendor/libp2p-stream` keeps up to 64 waiting.

use anyhow::{Result, ensure};
use cpns_overlay::DELIVERY_PROTOCOL;
use cpns_overlay::test_utils::TestNode;
use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};

use crate::util::{WAIT, init_tracing};

#[tokio::test]
async fn streams_opened_at_once_all_reach_the_acceptor() -> Result<()> {
    init_tracing();
    let config = || cpns_overlay::Config {
        gate_requests: false,
        ..cpns_overlay::Config::default()
    };
    let a = TestNode::spawn(config(), 61).await?;
    let b = TestNode::spawn(config(), 62).await?;
    let mut incoming = b.client.stream_control().accept(DELIVERY_PROTOCOL)?;
    // The acceptor answers each stream, one at a time, as a busy node would.
    let echo = tokio::spawn(async move {
        while let Some((_, mut s)) = incoming.next().await {
            let mut byte = [0u8; 1];
            if s.read_exact(&mut byte).await.is_ok() {
                let _ = s.write_all(&byte).await;
                let _ = s.close().await;
            }
        }
    });
    a.client.dial(b.dial_addr().await?).await?;
    let peer = b.identity.peer_id();
    let opens = (0..16u8).map(|i| {
        let mut control = a.client.stream_control();
        async move {
            let mut s = control.open_stream(peer, DELIVERY_PROTOCOL).await.ok()?;
            s.write_all(&[i]).await.ok()?;
            let mut back = [0u8; 1];
            s.read_exact(&mut back).await.ok()?;
            (back[0] == i).then_some(())
        }
    });
    let answered = tokio::time::timeout(WAIT, futures::future::join_all(opens)).await?;
    let ok = answered.iter().filter(|r| r.is_some()).count();
    ensure!(
        ok == 16,
        "{ok} of 16 streams opened at once reached the acceptor"
    );
    echo.abort();
    a.shutdown().await;
    b.shutdown().await;
    Ok(())
}
