//! Hostile peers against the node's delivery (issue 14), tried as the review did: real nodes,
//! real cpns-auth, and bare overlay nodes as attackers.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cpns_directory::ServiceDraft;
use cpns_keys::Modes;
use cpns_node::enrolment::enrol;
use cpns_overlay::test_utils::TestNode;
use cpns_overlay::{DELIVERY_PROTOCOL, DeliveryMode};
use futures::{AsyncReadExt, AsyncWriteExt};
use tokio::time::timeout;

use crate::util::{Lab, WAIT, init_tracing};

/// How long a stream the node refused may take to be closed on the opener's side.
const CLOSED_WITHIN: Duration = Duration::from_secs(5);

/// True once `stream` is closed or reset by the other side (read returns end or an error)
/// within [`CLOSED_WITHIN`]; false while it stays open.
async fn closed_by_peer(stream: &mut libp2p::Stream) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        timeout(CLOSED_WITHIN, stream.read(&mut byte)).await,
        Ok(Ok(0) | Err(_))
    )
}

/// Issue 14, "delivery blocked for everyone": 40 idle delivery streams from 8 fresh,
/// never-enrolled identities (the review's reproduction) and 8 from one enrolled stranger
/// leave the provider's delivery open to its members. Before the fix the streams were taken
/// without an admission check or a first-frame timeout, 32 idle ones filled every slot, and
/// the member's fetch failed at once ("delivery stream: truncated input"). Now streams of
/// peers that are neither registered nor members are closed at once, an enrolled peer holds
/// at most 4, and the member's pull and push fetches both go through while the attackers
/// still hold what they opened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_delivery_streams_of_strangers_do_not_block_a_members_fetch() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("mallory").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["nas", "phone"]).await?;
    let (phone, nas) = (members.remove(1), members.remove(0));
    let dir = tempfile::tempdir()?;
    let bytes: Vec<u8> = (0..600_000u32).map(|i| (i % 251) as u8).collect();
    let path = dir.path().join("photos.tar");
    std::fs::write(&path, &bytes)?;
    let service = nas
        .handle()
        .publish(
            ServiceDraft::new("Photos", ["photos"], nas.handle().default_visibility()),
            Some(path),
        )
        .await?;
    let target = nas.peer_id();
    let addr = nas.dial_addr().await?;

    // Eight fresh identities, five idle delivery streams each.
    let mut strangers = Vec::new();
    let mut stranger_streams = Vec::new();
    for i in 0..8u8 {
        let node = TestNode::spawn(cpns_overlay::Config::default(), 0xd0 + i).await?;
        node.client.dial(addr.clone()).await?;
        let mut control = node.client.stream_control();
        for _ in 0..5 {
            let s = timeout(WAIT, control.open_stream(target, DELIVERY_PROTOCOL))
                .await
                .context("opening a delivery stream")??;
            stranger_streams.push(s);
        }
        strangers.push(node);
    }
    // One enrolled stranger (another user's device, registered with the NAS): eight.
    let config = cpns_overlay::Config {
        gate_requests: false,
        ..cpns_overlay::Config::default()
    };
    let enrolled = TestNode::spawn(config, 0xdf).await?;
    let code = lab
        .admin()
        .create_code("mallory", Modes::ALL, Duration::from_secs(600), false)
        .await?;
    let enrolment = enrol(&enrolled.client, &enrolled.identity, &code, "mallory-tv").await?;
    enrolled
        .client
        .set_credential(Some(enrolment.credential.to_bytes()))
        .await?;
    enrolled.client.dial(addr.clone()).await?;
    let registration = cpns_overlay::EntityRegistration {
        mode: cpns_overlay::NodeMode::Pne,
        credential: enrolment.credential.clone(),
        pn_id: None,
        gateway: None,
        listen_addrs: enrolled.client.listen_addrs().await?,
        revocation_version: 0,
        gateway_addrs: Vec::new(),
    };
    let answer = enrolled
        .client
        .request(
            target,
            cpns_overlay::Protocol::Cpns,
            cpns_overlay::Message::Pn(cpns_overlay::PnMessage::EntityRegistration(registration)),
        )
        .await?;
    ensure!(
        matches!(
            answer,
            cpns_overlay::Message::Pn(cpns_overlay::PnMessage::EntityRegistration(_))
        ),
        "the NAS did not take the stranger's registration: {answer:?}"
    );
    let mut control = enrolled.client.stream_control();
    let mut enrolled_streams = Vec::new();
    for _ in 0..8 {
        let mut s = timeout(WAIT, control.open_stream(target, DELIVERY_PROTOCOL)).await??;
        // A byte, so that the stream reaches the NAS now (it is not a valid first frame).
        let _ = s.write_all(&[0]).await;
        let _ = s.flush().await;
        enrolled_streams.push(s);
    }

    // Every stream of a never-enrolled identity is closed by the NAS.
    let closed = futures::future::join_all(stranger_streams.iter_mut().map(closed_by_peer))
        .await
        .into_iter()
        .filter(|c| *c)
        .count();
    ensure!(
        closed == stranger_streams.len(),
        "{closed} of {} streams of never-enrolled peers closed",
        stranger_streams.len()
    );
    // The enrolled stranger keeps at most four open (the others are closed at once).
    let open = futures::future::join_all(enrolled_streams.iter_mut().map(closed_by_peer))
        .await
        .into_iter()
        .filter(|c| !*c)
        .count();
    ensure!(open <= 4, "{open} streams of one enrolled peer held open");

    // Meanwhile the member's fetches, pull and push, deliver the whole content.
    for mode in [DeliveryMode::Pull, DeliveryMode::Push] {
        let got = timeout(WAIT, phone.handle().fetch(&service.id, mode))
            .await
            .with_context(|| format!("{mode:?} fetch timed out"))??;
        ensure!(got.bytes == bytes.len() as u64, "{mode:?}: {got:?}");
        ensure!(std::fs::read(&got.path)? == bytes, "{mode:?}: other bytes");
    }

    drop((stranger_streams, enrolled_streams));
    for n in strangers {
        n.shutdown().await;
    }
    enrolled.shutdown().await;
    lab.shutdown(vec![phone, nas, gw]).await;
    Ok(())
}
