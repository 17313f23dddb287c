//! The node's authorisation holes, tried the way an enrolled but hostile peer would: capture
//! into a fake PN, revoked and expelled members that stay admitted, outsiders that reach
//! member-only requests, and mode claims the credential does not back. Each test drives a real
//! node (real libp2p, real cpns-auth) from a bare overlay "intruder" with a real credential.

use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cpns_keys::{Modes, PeerId};
use cpns_node::enrolment::{Enrolment, enrol};
use cpns_overlay::test_utils::TestNode;
use cpns_overlay::{
    Capabilities, EntityRegistration, ErrorCode, Event, MemberInfo, Message, NodeMode,
    PnInventorySummary, PnMessage, Protocol, Status, StatusMessage,
};
use tokio::sync::mpsc;

use crate::util::{Lab, LabNode, WAIT, init_tracing};

/// What an intruder answers to a request, given who sent it.
type Script = Box<dyn Fn(&Intruder, PeerId, &Message) -> Message + Send + Sync>;

/// A bare overlay node with a real credential, driven by the test.
pub(crate) struct Intruder {
    pub(crate) node: TestNode,
    pub(crate) enrolment: Enrolment,
    addrs: Vec<libp2p::Multiaddr>,
}

impl Intruder {
    /// Enrols a bare overlay node of `user`, allowing `modes`.
    pub(crate) async fn enrol(lab: &Lab, seed: u8, user: &str, modes: Modes) -> Result<Intruder> {
        let config = cpns_overlay::Config {
            gate_requests: false,
            ..cpns_overlay::Config::default()
        };
        let node = TestNode::spawn(config, seed).await?;
        let code = lab
            .admin()
            .create_code(user, modes, Duration::from_secs(3600), false)
            .await?;
        let enrolment = enrol(&node.client, &node.identity, &code, "intruder").await?;
        let addrs = node.client.listen_addrs().await?;
        Ok(Intruder {
            node,
            enrolment,
            addrs,
        })
    }

    pub(crate) fn peer(&self) -> PeerId {
        self.node.identity.peer_id()
    }

    pub(crate) async fn dial_addr(&self) -> Result<libp2p::Multiaddr> {
        Ok(self.node.dial_addr().await?)
    }

    /// Its registration (B.1 steps 1-2), claiming `mode` and, optionally, a PN it runs.
    pub(crate) fn registration(&self, mode: NodeMode, pn: Option<&str>) -> EntityRegistration {
        EntityRegistration {
            mode,
            credential: self.enrolment.credential.clone(),
            pn_id: pn.map(str::to_owned),
            gateway: pn.map(|_| self.peer()),
            listen_addrs: self.addrs.clone(),
            revocation_version: 0,
            gateway_addrs: if pn.is_some() {
                self.addrs.clone()
            } else {
                Vec::new()
            },
        }
    }

    /// Registers with `peer` (B.1 step 1) as a PNE in no PN.
    pub(crate) async fn register_with(&self, peer: PeerId, addr: libp2p::Multiaddr) -> Result<()> {
        self.node.client.dial(addr).await?;
        let answer = self
            .request(
                peer,
                Message::Pn(PnMessage::EntityRegistration(
                    self.registration(NodeMode::Pne, None),
                )),
            )
            .await?;
        ensure!(
            matches!(answer, Message::Pn(PnMessage::EntityRegistration(_))),
            "registration not answered: {answer:?}"
        );
        Ok(())
    }

    pub(crate) async fn request(
        &self,
        peer: PeerId,
        m: Message,
    ) -> Result<Message, cpns_overlay::Error> {
        self.node.client.request(peer, Protocol::Cpns, m).await
    }

    /// Answers every inbound request with `script` and reports each request on the channel.
    pub(crate) fn serve(mut self, script: Script) -> mpsc::Receiver<(PeerId, Message)> {
        let (tx, rx) = mpsc::channel(256);
        let (_, dummy) = mpsc::channel(1);
        let mut events = std::mem::replace(&mut self.node.events, dummy);
        tokio::spawn(async move {
            while let Some(ev) = events.recv().await {
                if let Event::InboundRequest {
                    peer,
                    message,
                    channel,
                } = ev
                {
                    let reply = script(&self, peer, &message);
                    let _ = self.node.client.respond(channel, reply).await;
                    let _ = tx.try_send((peer, message));
                }
            }
        });
        rx
    }
}

/// Capabilities that claim the gateway role.
fn gateway_caps() -> Capabilities {
    Capabilities {
        mode: NodeMode::PneGateway,
        ..Capabilities::default()
    }
}

/// An intruder that plays a gateway with a PN of its own making: it claims the gateway mode at
/// steps 2 and 4, and answers a connection setup (step 18) with a confirmation (step 26) for
/// that PN, listing PeerIds of its choice, without any key grant from cpns-auth (step 24).
fn fake_gateway_script(fake_members: Vec<PeerId>) -> Script {
    Box::new(move |me: &Intruder, _peer, m| match m {
        Message::Pn(PnMessage::EntityRegistration(_)) => Message::Pn(
            PnMessage::EntityRegistration(me.registration(NodeMode::PneGateway, Some("pn-fake"))),
        ),
        Message::Pn(PnMessage::CapabilitiesExchange(_)) => {
            Message::Pn(PnMessage::CapabilitiesExchange(gateway_caps()))
        }
        Message::Pn(PnMessage::ConnectionSetupRequest(_)) => {
            let member = |p: PeerId| MemberInfo {
                peer_id: p,
                user: "alice".into(),
                device: "planted".into(),
                mode: NodeMode::Pne,
                status: Status::Online,
                listen_addrs: Vec::new(),
                serial: 1,
                expires: u64::MAX,
                candidacy: None,
            };
            let mut members = vec![member(me.peer())];
            members.extend(fake_members.iter().copied().map(member));
            Message::Pn(PnMessage::ConnectionSetupConfirmation(PnInventorySummary {
                pn_id: "pn-fake".into(),
                owner: "alice".into(),
                gateway: me.peer(),
                epoch: 1,
                members,
                services: Vec::new(),
                updated: 0,
                details: Vec::new(),
                admins: Vec::new(),
            }))
        }
        _ => Message::Ack,
    })
}

/// Waits (bounded) until the node's trace holds a B.1 step-26 event.
async fn wait_step_26(node: &LabNode) -> bool {
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::time::Instant::now() < deadline {
        if node.handle().trace().iter().any(|e| e.step == 26) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

/// Hole 1: a fresh device pairs with an enrolled device of its own user that claims to be a
/// gateway and confirms the connection setup (step 26) without a key grant that cpns-auth
/// issued (step 24). The device must not join that PN, admit its members, or turn into a DHT
/// client.
#[tokio::test]
async fn a_gateway_without_a_key_grant_cannot_capture_a_device() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let victim = lab.node("alice", "fresh-tablet").await?;
    let intruder = Intruder::enrol(&lab, 201, "alice", Modes::ALL).await?;
    let addr = intruder.dial_addr().await?;
    let mut seen = intruder.serve(fake_gateway_script(vec![PeerId::random()]));

    let outcome = victim.handle().pair(addr).await;
    tracing::info!(?outcome, "pairing with the fake gateway");
    if outcome.is_ok() {
        // Whatever the node decided, the connection setup (if it sent one) has an outcome.
        let sent_setup = tokio::time::timeout(WAIT, async {
            while let Some((_, m)) = seen.recv().await {
                if matches!(m, Message::Pn(PnMessage::ConnectionSetupRequest(_))) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        if sent_setup {
            ensure!(wait_step_26(&victim).await, "no step 26 outcome traced");
        }
    }
    let status = victim.handle().status().await?;
    ensure!(
        status.pn_id.is_none(),
        "the device joined a PN no key grant vouches for: {status:?}"
    );
    ensure!(status.dht_mode == "server", "{status:?}");
    lab.shutdown(vec![victim]).await;
    Ok(())
}

/// Hole 4: a device whose credential allows only the PNE mode claims the gateway mode. The
/// claim is refused at registration, and nobody joins it.
#[tokio::test]
async fn a_gateway_claim_the_credential_does_not_allow_is_refused() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let victim = lab.node("alice", "fresh-phone").await?;
    let intruder = Intruder::enrol(&lab, 202, "alice", Modes::PNE).await?;
    let addr = intruder.dial_addr().await?;
    let mut seen = intruder.serve(fake_gateway_script(Vec::new()));

    match victim.handle().pair(addr).await {
        Err(e) => ensure!(
            e.to_string().contains("gateway"),
            "refused, but not for the mode claim: {e}"
        ),
        Ok(o) => bail!("pairing with a PNE-only device claiming the gateway went on: {o:?}"),
    }
    while let Ok(Some((_, m))) = tokio::time::timeout(Duration::from_millis(1), seen.recv()).await {
        ensure!(
            !matches!(m, Message::Pn(PnMessage::ConnectionSetupRequest(_))),
            "the device tried to join a PNE-only device"
        );
    }
    ensure!(victim.handle().status().await?.pn_id.is_none());
    lab.shutdown(vec![victim]).await;
    Ok(())
}

/// Consent: a device does not join another user's PN by pairing alone (mDNS pairs by itself);
/// the pairing leaves an invitation its owner may accept.
#[tokio::test]
async fn pairing_with_another_users_gateway_asks_first() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    lab.user("mallory").await?;
    let victim = lab.node("alice", "fresh-laptop").await?;
    let intruder = Intruder::enrol(&lab, 203, "mallory", Modes::ALL).await?;
    let addr = intruder.dial_addr().await?;
    let _seen = intruder.serve(fake_gateway_script(Vec::new()));

    let outcome = victim.handle().pair(addr).await?;
    ensure!(
        outcome.result != "joining",
        "the device went on to join another user's PN: {outcome:?}"
    );
    ensure!(victim.handle().status().await?.pn_id.is_none());
    lab.shutdown(vec![victim]).await;
    Ok(())
}

/// Waits (bounded) until `from`'s CPNS ping to `to` is refused.
async fn wait_refused(from: &LabNode, to: &LabNode) -> Result<String> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match from.handle().ping(to.peer_id()).await {
            Err(e) => return Ok(e.to_string()),
            Ok(_) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Ok(p) => bail!("still answered after {WAIT:?}: {p:?}"),
        }
    }
}

/// Hole 2: a member expelled by the PN's gateway is refused by the other members too, not
/// only by the gateway.
#[tokio::test]
async fn an_expelled_member_is_refused_by_the_other_members() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["laptop", "tablet"]).await?;
    let tablet = members.pop().context("tablet")?;
    let laptop = members.pop().context("laptop")?;
    tablet.handle().ping(laptop.peer_id()).await?;

    gw.handle().pn_expel(tablet.peer_id()).await?;
    let refusal = wait_refused(&tablet, &laptop).await?;
    tracing::info!(%refusal, "the expelled tablet is refused by the laptop");
    lab.shutdown(vec![gw, laptop, tablet]).await;
    Ok(())
}

/// Hole 2: a revoked member is refused by every member once the revocation list reaches it,
/// including members it never registered with (admitted from the gateway's member list).
#[tokio::test]
async fn a_revoked_member_is_refused_by_the_other_members() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, mut members) = lab.pn("alice", "router", &["laptop", "tablet"]).await?;
    let tablet = members.pop().context("tablet")?;
    let laptop = members.pop().context("laptop")?;
    tablet.handle().ping(laptop.peer_id()).await?;

    lab.admin().revoke(&tablet.peer_id().to_string()).await?;
    let refusal = wait_refused(&tablet, &laptop).await?;
    ensure!(
        refusal.contains("revoked") || refusal.contains("forbidden"),
        "{refusal}"
    );
    lab.shutdown(vec![gw, laptop, tablet]).await;
    Ok(())
}

/// The error code of a refused request, if it was refused.
pub(crate) fn code_of(r: &Result<Message, cpns_overlay::Error>) -> Option<ErrorCode> {
    match r {
        Err(cpns_overlay::Error::Refused { reply, .. }) => Some(reply.code),
        _ => None,
    }
}

/// Hole 3: an enrolled device that registered with a PN's gateway, but is no member of its
/// PN, gets nothing of the PN: no member's status, no subscription, no inventory, no injected
/// notification, no gateway change (each would start a server lookup).
#[tokio::test]
async fn a_registered_outsider_gets_nothing_of_the_pn() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["laptop"]).await?;
    let laptop = &members[0];
    let pn_id = gw.handle().status().await?.pn_id.context("PN")?;
    let outsider = Intruder::enrol(&lab, 204, "alice", Modes::ALL).await?;
    outsider
        .register_with(gw.peer_id(), gw.dial_addr().await?)
        .await?;

    let gw_peer = gw.peer_id();
    let target = laptop.peer_id();
    let requests = vec![
        Message::Status(StatusMessage::Query { target }),
        Message::Status(StatusMessage::Subscribe {
            target,
            policy: Default::default(),
        }),
        Message::Pn(PnMessage::InventoryRequest {
            pn_id: pn_id.clone(),
        }),
        Message::Status(StatusMessage::Notify {
            target,
            status: Status::Offline,
            battery_percent: None,
            free_memory_bytes: None,
            trigger: "forged".into(),
        }),
        Message::Pn(PnMessage::GatewayChanged {
            pn_id: pn_id.clone(),
            addrs: Vec::new(),
        }),
    ];
    for m in requests {
        let name = m.name();
        let r = outsider.request(gw_peer, m).await;
        ensure!(
            code_of(&r) == Some(ErrorCode::Forbidden),
            "{name} from a registered outsider: {r:?}"
        );
    }
    lab.shutdown(vec![gw, members.into_iter().next().context("laptop")?])
        .await;
    Ok(())
}
