//! Liveness traffic between overlay nodes: libp2p pings and the routing table's refresh.
//!
//! * Two pings at once on one connection: libp2p-ping's handler kept one inbound ping
//!   stream and replaced it with the next, resetting a ping in flight on the first. Another
//!   implementation that pings on a second stream (the spec lets a listener expect up to two)
//!   then saw failures and could drop the node from its routing table. The vendored
//!   `vendor/libp2p-ping` answers up to two streams per connection.
//! * A gateway whose only peers are Kademlia clients has an empty routing table; libp2p's own
//!   periodic bootstrap logged "Failed to trigger bootstrap: No known peers" as a warning
//!   every 5 minutes for that normal home case. The event loop now refreshes only a non-empty
//!   table, and says so at debug level.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cpns_overlay::Config;
use cpns_overlay::test_utils::TestNode;
use futures::{AsyncReadExt, AsyncWriteExt};
use libp2p::StreamProtocol;
use tokio::time::timeout;

use crate::util::WAIT;

const PING: StreamProtocol = StreamProtocol::new("/ipfs/ping/1.0.0");

/// One ping on an open `/ipfs/ping/1.0.0` stream: 32 bytes out, the same 32 back.
async fn ping_once(stream: &mut libp2p::Stream, seed: u8) -> Result<()> {
    let payload: Vec<u8> = (0..32u8)
        .map(|i| i.wrapping_mul(seed).wrapping_add(7))
        .collect();
    stream.write_all(&payload).await?;
    stream.flush().await?;
    let mut back = [0u8; 32];
    timeout(WAIT, stream.read_exact(&mut back)).await??;
    ensure!(back[..] == payload[..], "the pong differs from the ping");
    Ok(())
}

/// A node answers pings on two streams of one connection at once; a third stream replaces
/// the oldest (the number stays bounded).
#[tokio::test]
async fn two_ping_streams_on_one_connection_are_both_answered() -> Result<()> {
    crate::util::init_tracing();
    let pinger = TestNode::spawn(Config::default(), 61).await?;
    let target = TestNode::spawn(Config::default(), 62).await?;
    let peer = target.client.local_peer_id();
    pinger.client.dial(target.dial_addr().await?).await?;
    // The pinger's own ping behaviour holds one inbound stream at the target too: wait until
    // it has pinged (its stream then idles until the next interval, 15 s away), so that the
    // order of the target's inbound streams is known.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !pinger
        .client
        .peers()
        .await?
        .iter()
        .any(|p| p.peer_id == peer && p.rtt_us.is_some())
    {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the behaviour's first ping never came"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let control = pinger.client.stream_control();
    let open = |mut c: libp2p_stream::Control| async move {
        c.open_stream(peer, PING)
            .await
            .map_err(|e| anyhow::anyhow!("open ping stream: {e}"))
    };
    // Inbound streams at the target: [behaviour's, first], then [first, second].
    let mut first = open(control.clone()).await?;
    ping_once(&mut first, 3).await.context("first stream")?;
    let mut second = open(control.clone()).await?;
    ping_once(&mut second, 5).await.context("second stream")?;
    // Before the fix, opening the second stream reset the first.
    ping_once(&mut first, 7)
        .await
        .context("first stream, after the second opened")?;
    ping_once(&mut second, 9)
        .await
        .context("second stream again")?;
    // A third one: the oldest goes, the two newest are answered.
    let mut third = open(control.clone()).await?;
    ping_once(&mut third, 11).await.context("third stream")?;
    ping_once(&mut second, 13)
        .await
        .context("second stream, after the third")?;
    ensure!(
        ping_once(&mut first, 15).await.is_err(),
        "at most two inbound ping streams per connection"
    );
    pinger.shutdown().await;
    target.shutdown().await;
    Ok(())
}

/// Records log events (level and message) for one thread's subscriber.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<(tracing::Level, String)>>>);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for Captured {
    fn on_event(&self, event: &tracing::Event<'_>, _: tracing_subscriber::layer::Context<'_, S>) {
        struct Message(String);
        impl tracing::field::Visit for Message {
            fn record_debug(&mut self, field: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                if field.name() == "message" {
                    self.0 = format!("{v:?}");
                }
            }
        }
        let mut m = Message(String::new());
        event.record(&mut m);
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((*event.metadata().level(), m.0));
    }
}

impl Captured {
    fn count(&self, f: impl Fn(&(tracing::Level, String)) -> bool) -> usize {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|e| f(e))
            .count()
    }
}

/// A node with an empty routing table (a gateway whose PNEs are all Kademlia clients) logs
/// no warning about bootstrapping, however often its refresh comes round.
#[tokio::test(flavor = "current_thread")]
async fn an_empty_routing_table_is_not_a_warning() -> Result<()> {
    use tracing_subscriber::layer::SubscriberExt;
    let captured = Captured::default();
    // current_thread: the event loop runs on this thread, under this subscriber.
    let _guard = tracing::subscriber::set_default(
        tracing_subscriber::registry()
            .with(tracing_subscriber::filter::LevelFilter::DEBUG)
            .with(captured.clone()),
    );
    let config = Config {
        bootstrap_interval: Duration::from_millis(20),
        ..Config::default()
    };
    let node = TestNode::spawn(config, 63).await?;
    // Each refresh attempt logs once: ours at debug, libp2p's (before the fix) as a warning.
    let refreshes = |c: &Captured| {
        c.count(|(_, m)| {
            m.contains("routing table refresh skipped") || m.contains("Failed to trigger bootstrap")
        })
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    while refreshes(&captured) < 5 {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the refresh never came round"
        );
        // Wakes with the node's own timer; the count is what is awaited.
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let warnings = captured.count(|(level, m)| {
        *level <= tracing::Level::WARN && m.to_lowercase().contains("bootstrap")
    });
    assert_eq!(
        warnings, 0,
        "no bootstrap warning for an empty routing table"
    );
    node.shutdown().await;
    Ok(())
}
