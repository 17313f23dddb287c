//! `cpns-auth` end to end: a real server (in-process, or the real binary for the multi-process
//! tests) on loopback, real overlay nodes enrolled through the real `EnrolRequest` path
//! (`cpns_node::enrolment::enrol`), real sled files in temp dirs.
//!
//! The devices here are bare overlay nodes driven message by message, so that each step of
//! B.1 (8-11, 14-17, 19-23) and each refusal can be checked on its own; a small responder
//! plays the node's side of the server's own requests (steps 14 and 17, key pushes,
//! revocation lists), like a gateway would.

use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail, ensure};
use cpns_auth::{Config, ServerHandle};
use cpns_keys::{EuKey, GroupKey, Modes, PeerId};
use cpns_node::enrolment::{EnrolError, Enrolment, enrol};
use cpns_overlay::test_utils::TestNode;
use cpns_overlay::{
    AuthMessage, Capabilities, ConnectionSetup, ErrorCode, Event, GroupInfo, GroupKeyGrant,
    Invitee, MemberGrant, MembershipDecision, Message, NodeMode, PnRecordInfo, Protocol,
    SessionInfo, Status, transcript,
};
use tokio::sync::mpsc;

use crate::util::{WAIT, init_tracing};

pub(crate) fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

fn random16() -> [u8; 16] {
    let k = EuKey::generate().to_bytes();
    let mut out = [0u8; 16];
    out.copy_from_slice(&k[..16]);
    out
}

/// The error code of a refused request, if it was refused.
fn code_of(r: &Result<Message, cpns_overlay::Error>) -> Option<ErrorCode> {
    match r {
        Err(cpns_overlay::Error::Refused { reply, .. }) => Some(reply.code),
        _ => None,
    }
}

pub(crate) fn expect_code(r: Result<Message, cpns_overlay::Error>, want: ErrorCode) -> Result<()> {
    match code_of(&r) {
        Some(c) if c == want => Ok(()),
        _ => bail!("expected {want:?}, got {r:?}"),
    }
}

pub(crate) async fn start_server(dir: &std::path::Path) -> Result<ServerHandle> {
    Ok(cpns_auth::Server::start(Config::with_data_dir(dir.join("auth"))).await?)
}

/// A device: an overlay node enrolled with the server, and the requests the server sent it.
pub(crate) struct Device {
    pub(crate) node: TestNode,
    pub(crate) enrolment: Enrolment,
    pub(crate) server: PeerId,
    /// Server-to-node requests received (steps 14 and 17, key pushes, revocation lists).
    pushed: mpsc::Receiver<AuthMessage>,
}

impl Device {
    /// Starts an overlay node with a seeded identity and enrols it with `code`.
    pub(crate) async fn enrol(seed: u8, code: &str, device: &str) -> Result<Device> {
        let (node, pushed) = spawn_node(seed).await?;
        let enrolment = enrol(&node.client, &node.identity, code, device).await?;
        Ok(Device {
            server: enrolment.server,
            node,
            enrolment,
            pushed,
        })
    }

    /// Enrols a device of `user` with a fresh one-hour, one-time code allowing `modes`.
    pub(crate) async fn enrol_with(
        admin: &cpns_auth::Admin,
        seed: u8,
        user: &str,
        modes: Modes,
        device: &str,
    ) -> Result<Device> {
        let code = admin
            .create_code(user, modes, Duration::from_secs(3600), false)
            .await?;
        Self::enrol(seed, &code, device).await
    }

    pub(crate) fn peer(&self) -> PeerId {
        self.node.identity.peer_id()
    }

    pub(crate) async fn request(&self, m: AuthMessage) -> Result<Message, cpns_overlay::Error> {
        self.node
            .client
            .request(self.server, Protocol::Auth, Message::Auth(m))
            .await
    }

    /// B.1 steps 8-11.
    pub(crate) async fn auth(&self, mode: NodeMode) -> Result<SessionInfo> {
        let nonce = self.challenge(mode).await?;
        let (mac, sig) = self.proof(&nonce, mode);
        match self
            .request(AuthMessage::AuthResponse {
                nonce,
                eukey_mac: mac,
                signature: sig,
            })
            .await?
        {
            Message::Auth(AuthMessage::ConnectionSetupConfirmation(info)) => Ok(info),
            other => bail!("step 11 expected, got {other:?}"),
        }
    }

    /// Step 8 → the nonce of step 9.
    pub(crate) async fn challenge(&self, mode: NodeMode) -> Result<[u8; 32]> {
        match self
            .request(AuthMessage::ConnectionSetupRequest {
                credential: self.enrolment.credential.clone(),
                mode,
            })
            .await?
        {
            Message::Auth(AuthMessage::AuthChallenge {
                nonce,
                issued,
                expires,
            }) => {
                ensure!(expires >= issued, "challenge window");
                Ok(nonce)
            }
            other => bail!("step 9 expected, got {other:?}"),
        }
    }

    pub(crate) fn proof(
        &self,
        nonce: &[u8; 32],
        mode: NodeMode,
    ) -> ([u8; 32], cpns_keys::Signature) {
        let t = transcript::auth_response(
            nonce,
            &self.server,
            &self.peer(),
            self.enrolment.credential.serial(),
            mode,
        );
        (self.enrolment.eukey.mac(&t), self.node.identity.sign(&t))
    }

    /// A PNE's signed request to join `pn_id` through `gateway` (B.1 step 18).
    pub(crate) fn setup(&self, pn_id: &str, gateway: PeerId) -> ConnectionSetup {
        let time = now();
        let nonce = random16();
        let t = transcript::membership_request(pn_id, &gateway, &self.peer(), time, &nonce);
        ConnectionSetup {
            credential: self.enrolment.credential.clone(),
            pn_id: pn_id.to_owned(),
            time,
            nonce,
            eukey_mac: self.enrolment.eukey.mac(&t),
            signature: self.node.identity.sign(&t),
            capabilities: Capabilities::default(),
        }
    }

    /// Opens a key grant sealed for this device.
    pub(crate) fn open(&self, grant: &GroupKeyGrant) -> Result<GroupKey> {
        let aad = transcript::group_key_aad(&grant.group, grant.epoch, &self.peer());
        let secret = self.enrolment.eukey.open(&aad, &grant.sealed)?;
        Ok(GroupKey::decode_secret(&secret)?)
    }

    pub(crate) fn open_member(&self, grants: &[MemberGrant]) -> Result<GroupKey> {
        let g = grants
            .iter()
            .find(|g| g.member == self.peer())
            .ok_or_else(|| anyhow!("no grant for {}", self.peer()))?;
        self.open(&g.grant)
    }

    /// Waits for a server-to-node request matching `pred`.
    pub(crate) async fn next_push(
        &mut self,
        what: &str,
        pred: impl Fn(&AuthMessage) -> bool,
    ) -> Result<AuthMessage> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let m = tokio::time::timeout_at(deadline, self.pushed.recv())
                .await
                .with_context(|| format!("waiting for {what}"))?
                .ok_or_else(|| anyhow!("responder stopped"))?;
            if pred(&m) {
                return Ok(m);
            }
        }
    }

    pub(crate) async fn shutdown(self) {
        self.node.shutdown().await;
    }
}

type Spawned = (TestNode, mpsc::Receiver<AuthMessage>);

/// An overlay node whose events go to a responder that answers the server's requests like a
/// fresh gateway would: the step-14 status request with "online, no PN yet", everything else
/// with Ack; every such request is also passed to the test.
async fn spawn_node(seed: u8) -> Result<Spawned> {
    let config = cpns_overlay::Config {
        kad_mode: cpns_overlay::KadMode::Client,
        ..cpns_overlay::Config::default()
    };
    let mut node = TestNode::spawn(config, seed).await?;
    let (tx, rx) = mpsc::channel(256);
    let client = node.client.clone();
    let (_, dummy) = mpsc::channel(1);
    let mut events = std::mem::replace(&mut node.events, dummy);
    tokio::spawn(async move {
        while let Some(ev) = events.recv().await {
            if let Event::InboundRequest {
                message, channel, ..
            } = ev
            {
                let reply = match &message {
                    Message::Auth(AuthMessage::StatusUpdateRequest) => {
                        Message::Auth(AuthMessage::StatusResponse {
                            status: Status::Online,
                            pn_id: None,
                            members: vec![],
                            take_over: false,
                        })
                    }
                    _ => Message::Ack,
                };
                let _ = client.respond(channel, reply).await;
                if let Message::Auth(m) = message {
                    let _ = tx.try_send(m);
                }
            }
        }
    });
    Ok((node, rx))
}

/// A gateway establishes its PN (B.1 steps 8-17); returns the PN record and its key.
pub(crate) async fn establish(gw: &mut Device) -> Result<(PnRecordInfo, GroupKey)> {
    gw.auth(NodeMode::Gateway).await?;
    let caps = Capabilities {
        mode: NodeMode::Gateway,
        revision: 3,
        ..Capabilities::default()
    };
    match gw.request(AuthMessage::CapabilitiesUpdate(caps)).await? {
        Message::Auth(AuthMessage::CapabilitiesConfirmation { revision }) => {
            ensure!(revision == 3, "step 13 revision")
        }
        other => bail!("step 13 expected, got {other:?}"),
    }
    gw.next_push("step 14", |m| matches!(m, AuthMessage::StatusUpdateRequest))
        .await?;
    let AuthMessage::PnInventoryCreated { pn, key } = gw
        .next_push("step 17", |m| {
            matches!(m, AuthMessage::PnInventoryCreated { .. })
        })
        .await?
    else {
        unreachable!()
    };
    let key = gw.open(&key)?;
    Ok((pn, key))
}

pub(crate) async fn membership(
    gw: &Device,
    setup: ConnectionSetup,
) -> Result<(MembershipDecision, PnRecordInfo)> {
    match gw.request(AuthMessage::MembershipRequest { setup }).await? {
        Message::Auth(AuthMessage::MembershipListTransfer { decision, pn }) => Ok((decision, pn)),
        other => bail!("step 21 expected, got {other:?}"),
    }
}

pub(crate) async fn pn_key(
    gw: &Device,
    pn_id: &str,
    member: PeerId,
) -> Result<(u64, Vec<MemberGrant>)> {
    match gw
        .request(AuthMessage::PnKeyRequest {
            pn_id: pn_id.to_owned(),
            member,
        })
        .await?
    {
        Message::Auth(AuthMessage::PnKeyResponse { epoch, grants, .. }) => Ok((epoch, grants)),
        other => bail!("step 23 expected, got {other:?}"),
    }
}

pub(crate) async fn pull(d: &Device) -> Result<Vec<GroupKeyGrant>> {
    match d.request(AuthMessage::KeysPull).await? {
        Message::Auth(AuthMessage::Keys(keys)) => Ok(keys),
        other => bail!("Keys expected, got {other:?}"),
    }
}

pub(crate) fn group_info(m: Message) -> Result<GroupInfo> {
    match m {
        Message::Auth(AuthMessage::GroupInfo(info)) => Ok(info),
        other => bail!("GroupInfo expected, got {other:?}"),
    }
}

/// Two devices of alice and one of bob: alice's gateway establishes the PN (8-17), alice's
/// second device is admitted (19-21) and opens its key (22-23), bob's device is refused until
/// an admin invites bob; after an expel, bob's device cannot open what is sealed under the new
/// epoch, cannot pull the new key, and is refused if it asks again.
#[tokio::test]
async fn membership_policy_keys_and_expel() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    admin.create_user("bob").await?;
    let hour = Duration::from_secs(3600);
    let code = |u: &'static str| {
        let admin = admin.clone();
        async move { admin.create_code(u, Modes::ALL, hour, false).await }
    };
    let mut gw = Device::enrol(11, &code("alice").await?, "alice-nas").await?;
    let phone = Device::enrol(12, &code("alice").await?, "alice-phone").await?;
    let tv = Device::enrol(13, &code("bob").await?, "bob-tv").await?;

    let entities = admin.list_entities().await?;
    ensure!(entities.len() == 3, "{entities:?}");
    let users: Vec<_> = entities
        .iter()
        .map(|e| (e.user.as_str(), e.device.as_str()))
        .collect();
    ensure!(users.contains(&("alice", "alice-phone")) && users.contains(&("bob", "bob-tv")));
    ensure!(
        tv.enrolment.credential.body.user == "bob" && tv.enrolment.ca == server.ca_public(),
        "credential"
    );

    // Steps 8-17.
    let (pn, gw_key) = establish(&mut gw).await?;
    ensure!(pn.owner == "alice" && pn.gateway == gw.peer() && pn.members == vec![gw.peer()]);
    ensure!(pn.epoch == 1 && gw_key.epoch() == 1 && gw_key.group().0 == pn.pn_id);
    ensure!(
        pn.pn_id.starts_with("pn-") && pn.pn_id.len() == 19,
        "{}",
        pn.pn_id
    );

    // Steps 19-23 for alice's phone: admitted, the key rotates, the phone opens its grant.
    let (decision, after) = membership(&gw, phone.setup(&pn.pn_id, gw.peer())).await?;
    ensure!(decision == MembershipDecision::Admitted, "{decision:?}");
    ensure!(after.epoch == 2 && after.members.len() == 2);
    let (epoch, grants) = pn_key(&gw, &pn.pn_id, phone.peer()).await?;
    ensure!(epoch == 2 && grants.len() == 2);
    let phone_key = phone.open_member(&grants)?;
    let gw_key2 = gw.open_member(&grants)?;
    ensure!(phone_key.epoch() == 2 && phone_key.key_bytes() == gw_key2.key_bytes());
    // A grant is for its member only.
    ensure!(tv.open_member(&grants).is_err());
    let phone_grant = grants
        .iter()
        .find(|g| g.member == phone.peer())
        .map(|g| g.grant.clone());
    ensure!(
        tv.open(&phone_grant.context("grant")?).is_err(),
        "bob opened alice's grant"
    );

    // Bob's TV: refused by policy; a replayed request is refused as a replay.
    let tv_setup = tv.setup(&pn.pn_id, gw.peer());
    let (decision, same) = membership(&gw, tv_setup.clone()).await?;
    ensure!(
        matches!(decision, MembershipDecision::Refused(_)),
        "{decision:?}"
    );
    ensure!(same.epoch == 2 && same.members.len() == 2);
    expect_code(
        gw.request(AuthMessage::MembershipRequest { setup: tv_setup })
            .await,
        ErrorCode::Replay,
    )?;
    // A forged PNE proof (the gateway cannot forge the PNE's MAC) is refused.
    let mut forged = tv.setup(&pn.pn_id, gw.peer());
    forged.eukey_mac[0] ^= 1;
    expect_code(
        gw.request(AuthMessage::MembershipRequest { setup: forged })
            .await,
        ErrorCode::BadProof,
    )?;
    // Only the PN's gateway forwards membership requests.
    phone.auth(NodeMode::Pne).await?;
    expect_code(
        phone
            .request(AuthMessage::MembershipRequest {
                setup: tv.setup(&pn.pn_id, phone.peer()),
            })
            .await,
        ErrorCode::Forbidden,
    )?;
    // Bob's device is not an admin; alice's phone is (a device of the owner user).
    tv.auth(NodeMode::Pne).await?;
    expect_code(
        tv.request(AuthMessage::PnInvite {
            pn_id: pn.pn_id.clone(),
            invitee: Invitee::User("bob".into()),
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    match phone
        .request(AuthMessage::PnInvite {
            pn_id: pn.pn_id.clone(),
            invitee: Invitee::User("bob".into()),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnInfo(info)) => {
            ensure!(info.policy.invited_users == vec!["bob".to_string()])
        }
        other => bail!("PnInfo expected, got {other:?}"),
    }
    let (decision, after) = membership(&gw, tv.setup(&pn.pn_id, gw.peer())).await?;
    ensure!(decision == MembershipDecision::Admitted, "{decision:?}");
    ensure!(after.epoch == 3 && after.members.len() == 3);
    let (_, grants) = pn_key(&gw, &pn.pn_id, tv.peer()).await?;
    let tv_old_key = tv.open_member(&grants)?;
    ensure!(tv_old_key.epoch() == 3);
    // Bob's TV may pull its own grant now.
    match tv
        .request(AuthMessage::PnKeyPull {
            pn_id: pn.pn_id.clone(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnKeyResponse { epoch, grants, .. }) => {
            ensure!(epoch == 3 && grants.len() == 1 && tv.open_member(&grants)?.epoch() == 3)
        }
        other => bail!("PnKeyResponse expected, got {other:?}"),
    }

    // Expel: the key rotates; the TV's old key cannot open content of the new epoch.
    let (epoch, grants) = match gw
        .request(AuthMessage::PnExpel {
            pn_id: pn.pn_id.clone(),
            member: tv.peer(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnKeyResponse { epoch, grants, .. }) => (epoch, grants),
        other => bail!("PnKeyResponse expected, got {other:?}"),
    };
    ensure!(epoch == 4 && grants.len() == 2);
    ensure!(grants.iter().all(|g| g.member != tv.peer()));
    let phone_key = phone.open_member(&grants)?;
    let sealed = phone_key.seal(&phone.peer(), b"new films for alice");
    ensure!(phone_key.open(&sealed)? == b"new films for alice");
    ensure!(
        tv_old_key.open(&sealed).is_err(),
        "old key opened new content"
    );
    // Even relabelled as epoch 4, the old key bytes do not open it.
    let relabelled = GroupKey::from_parts(tv_old_key.group().clone(), 4, tv_old_key.key_bytes());
    ensure!(
        relabelled.open(&sealed).is_err(),
        "old key bytes opened new content"
    );
    // It cannot pull the new key, by either pull.
    expect_code(
        tv.request(AuthMessage::PnKeyPull {
            pn_id: pn.pn_id.clone(),
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    match tv.request(AuthMessage::KeysPull).await? {
        Message::Auth(AuthMessage::Keys(keys)) => {
            ensure!(
                keys.iter().all(|k| k.group.0 != pn.pn_id),
                "expelled device got a PN key"
            )
        }
        other => bail!("Keys expected, got {other:?}"),
    }
    // And asking again is refused (expelled), although bob is still invited.
    let (decision, _) = membership(&gw, tv.setup(&pn.pn_id, gw.peer())).await?;
    ensure!(
        matches!(decision, MembershipDecision::Refused(ref r) if r.contains("expelled")),
        "{decision:?}"
    );

    let view = admin.show_pn(&pn.pn_id).await?;
    ensure!(view.epoch == 4 && view.members.len() == 2);
    ensure!(view.expelled == vec![tv.peer().to_string()]);
    let e = admin.show_entity(&phone.peer().to_string()).await?;
    ensure!(e.pns == vec![pn.pn_id.clone()] && e.online);

    // The gateway de-registers the phone (G.1 step 9): one member left, epoch 5.
    match gw
        .request(AuthMessage::PnDeregister {
            pn_id: pn.pn_id.clone(),
            member: phone.peer(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnKeyResponse { epoch, grants, .. }) => {
            ensure!(epoch == 5 && grants.len() == 1)
        }
        other => bail!("PnKeyResponse expected, got {other:?}"),
    }
    // Release deletes the PN and its key.
    ensure!(
        gw.request(AuthMessage::PnRelease {
            pn_id: pn.pn_id.clone()
        })
        .await?
            == Message::Ack
    );
    ensure!(admin.list_pns().await?.is_empty());
    expect_code(
        gw.request(AuthMessage::PnKeyPull {
            pn_id: pn.pn_id.clone(),
        })
        .await,
        ErrorCode::NotFound,
    )?;

    for d in [gw, phone, tv] {
        d.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

/// An expelled device of the PN owner's own user loses every right at once (issue 14): it can
/// neither invite itself back (as an entity or through its user), nor expel, nor release the
/// PN, nor read it, nor pull the key; so it never gets the new epoch key. A remaining admin
/// may still invite it again, and nobody can invite itself.
#[tokio::test]
async fn an_expelled_owner_device_has_no_admin_rights() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    let mut gw = Device::enrol_with(&admin, 21, "alice", Modes::ALL, "alice-nas").await?;
    let phone = Device::enrol_with(&admin, 22, "alice", Modes::ALL, "alice-phone").await?;
    let laptop = Device::enrol_with(&admin, 23, "alice", Modes::ALL, "alice-laptop").await?;
    let (pn, _) = establish(&mut gw).await?;
    for d in [&phone, &laptop] {
        let (decision, _) = membership(&gw, d.setup(&pn.pn_id, gw.peer())).await?;
        ensure!(decision == MembershipDecision::Admitted, "{decision:?}");
    }
    phone.auth(NodeMode::Pne).await?;
    laptop.auth(NodeMode::Pne).await?;
    // A member of the owner user is an admin, but cannot invite itself.
    expect_code(
        laptop
            .request(AuthMessage::PnInvite {
                pn_id: pn.pn_id.clone(),
                invitee: Invitee::Entity(laptop.peer()),
            })
            .await,
        ErrorCode::Forbidden,
    )?;
    // The laptop expels the phone.
    match laptop
        .request(AuthMessage::PnExpel {
            pn_id: pn.pn_id.clone(),
            member: phone.peer(),
        })
        .await?
    {
        Message::Auth(AuthMessage::PnKeyResponse { epoch, .. }) => ensure!(epoch == 4),
        other => bail!("PnKeyResponse expected, got {other:?}"),
    }
    // The expelled phone, still a device of the owner user, has no rights left.
    let pn_id = pn.pn_id.clone();
    let attempts = [
        AuthMessage::PnInvite {
            pn_id: pn_id.clone(),
            invitee: Invitee::Entity(phone.peer()),
        },
        AuthMessage::PnInvite {
            pn_id: pn_id.clone(),
            invitee: Invitee::User("alice".into()),
        },
        AuthMessage::PnExpel {
            pn_id: pn_id.clone(),
            member: laptop.peer(),
        },
        AuthMessage::PnKeyPull {
            pn_id: pn_id.clone(),
        },
        AuthMessage::PnInfoRequest {
            pn_id: pn_id.clone(),
        },
        AuthMessage::PnRelease {
            pn_id: pn_id.clone(),
        },
    ];
    for m in attempts {
        let what = format!("{m:?}");
        expect_code(phone.request(m).await, ErrorCode::Forbidden).context(what)?;
    }
    // Nothing changed: still expelled, refused when it asks to join, the PN still there.
    let view = admin.show_pn(&pn_id).await?;
    ensure!(view.expelled == vec![phone.peer().to_string()], "{view:?}");
    ensure!(view.epoch == 4 && view.members.len() == 2, "{view:?}");
    let (decision, _) = membership(&gw, phone.setup(&pn_id, gw.peer())).await?;
    ensure!(
        matches!(decision, MembershipDecision::Refused(ref r) if r.contains("expelled")),
        "{decision:?}"
    );
    match phone.request(AuthMessage::KeysPull).await? {
        Message::Auth(AuthMessage::Keys(keys)) => {
            ensure!(
                keys.iter().all(|k| k.group.0 != pn_id),
                "expelled device got a PN key"
            )
        }
        other => bail!("Keys expected, got {other:?}"),
    }
    // A remaining admin may invite it back.
    laptop
        .request(AuthMessage::PnInvite {
            pn_id: pn_id.clone(),
            invitee: Invitee::Entity(phone.peer()),
        })
        .await?;
    let (decision, _) = membership(&gw, phone.setup(&pn_id, gw.peer())).await?;
    ensure!(decision == MembershipDecision::Admitted, "{decision:?}");

    for d in [gw, phone, laptop] {
        d.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

/// A membership request (B.1 step 19) cannot be replayed, also not after the server restarts
/// (issue 14: the nonce cache was in memory only, so a captured join re-admitted a device
/// that had left).
#[tokio::test]
async fn a_membership_request_cannot_be_replayed_after_a_restart() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let config = Config::with_data_dir(dir.path().join("auth"));
    let server = cpns_auth::Server::start(config.clone()).await?;
    let addr = server
        .listen_addrs()
        .first()
        .cloned()
        .context("listen address")?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    let mut gw = Device::enrol_with(&admin, 31, "alice", Modes::ALL, "alice-nas").await?;
    let phone = Device::enrol_with(&admin, 32, "alice", Modes::ALL, "alice-phone").await?;
    let (pn, _) = establish(&mut gw).await?;
    let setup = phone.setup(&pn.pn_id, gw.peer());
    let (decision, _) = membership(&gw, setup.clone()).await?;
    ensure!(decision == MembershipDecision::Admitted, "{decision:?}");
    // The phone leaves (de-registered by the gateway, G.1 step 9).
    gw.request(AuthMessage::PnDeregister {
        pn_id: pn.pn_id.clone(),
        member: phone.peer(),
    })
    .await?;
    let replay = || AuthMessage::MembershipRequest {
        setup: setup.clone(),
    };
    expect_code(gw.request(replay()).await, ErrorCode::Replay)?;

    drop(admin);
    server.shutdown().await;
    // The old server's last tasks may hold the database for a moment after shutdown.
    let restarted = Config {
        listen: vec![addr],
        ..config
    };
    let deadline = tokio::time::Instant::now() + WAIT;
    let server = loop {
        match cpns_auth::Server::start(restarted.clone()).await {
            Ok(s) => break s,
            Err(e)
                if tokio::time::Instant::now() < deadline && e.to_string().contains("in use") =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => return Err(e.into()),
        }
    };
    gw.auth(NodeMode::Gateway).await?;
    expect_code(gw.request(replay()).await, ErrorCode::Replay)?;
    let view = server.admin().show_pn(&pn.pn_id).await?;
    ensure!(
        view.members.len() == 1,
        "the replay re-admitted the phone: {view:?}"
    );

    for d in [gw, phone] {
        d.shutdown().await;
    }
    server.shutdown().await;
    Ok(())
}

/// cpns-auth keeps its data dir 0700 and every file in it 0600, also a data dir (and a
/// database) that already existed with laxer modes (issue 14: it kept whatever mode the dir
/// had, and sled wrote the EUKeys and group keys with the default umask).
#[tokio::test]
async fn the_data_dir_and_its_database_are_private() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    init_tracing();
    let dir = tempfile::tempdir()?;
    let data = dir.path().join("auth");
    std::fs::create_dir_all(&data)?;
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755))?;
    let server = cpns_auth::Server::start(Config::with_data_dir(&data)).await?;
    server.admin().create_user("alice").await?;
    server.shutdown().await;
    // Loosen everything, as an old version or a careless copy would have left it (but the
    // key files: a readable key is refused at start, by design).
    fn walk(p: &std::path::Path, out: &mut Vec<std::path::PathBuf>) -> std::io::Result<()> {
        out.push(p.to_path_buf());
        if p.is_dir() {
            for e in std::fs::read_dir(p)? {
                walk(&e?.path(), out)?;
            }
        }
        Ok(())
    }
    let mut all = Vec::new();
    walk(&data, &mut all)?;
    for p in all
        .iter()
        .filter(|p| p.extension().is_none_or(|e| e != "key"))
    {
        let mode = if p.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode))?;
    }
    let server = cpns_auth::Server::start(Config::with_data_dir(&data)).await?;
    let mut all = Vec::new();
    walk(&data, &mut all)?;
    ensure!(all.iter().any(|p| p.ends_with("db")), "{all:?}");
    for p in &all {
        let mode = std::fs::metadata(p)?.permissions().mode() & 0o777;
        let want = if p.is_dir() { 0o700 } else { 0o600 };
        ensure!(mode == want, "{} has mode {mode:o}", p.display());
    }
    server.shutdown().await;
    Ok(())
}

/// Authentication refusals, each with its own code: replay, forged MAC, PNE-only credential
/// asking for gateway mode, unauthenticated requests, revoked devices (and the revocation list
/// reaching a gateway's session), expired challenges.
#[tokio::test]
async fn authentication_refusals() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    let hour = Duration::from_secs(3600);
    let pne = Device::enrol_with(&admin, 31, "alice", Modes::PNE, "pne").await?;
    let mut gw = Device::enrol_with(&admin, 32, "alice", Modes::ALL, "gw").await?;
    let other = Device::enrol_with(&admin, 33, "alice", Modes::ALL, "other").await?;

    // Not yet authenticated.
    expect_code(
        pne.request(AuthMessage::KeysPull).await,
        ErrorCode::NotAuthenticated,
    )?;
    // PNE-only credential asking for gateway (or combined) mode.
    expect_code(
        pne.request(AuthMessage::ConnectionSetupRequest {
            credential: pne.enrolment.credential.clone(),
            mode: NodeMode::Gateway,
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    expect_code(
        pne.request(AuthMessage::ConnectionSetupRequest {
            credential: pne.enrolment.credential.clone(),
            mode: NodeMode::PneGateway,
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    // Someone else's credential.
    expect_code(
        pne.request(AuthMessage::ConnectionSetupRequest {
            credential: other.enrolment.credential.clone(),
            mode: NodeMode::Pne,
        })
        .await,
        ErrorCode::Forbidden,
    )?;
    // A forged credential (modes widened).
    let mut forged = pne.enrolment.credential.clone();
    forged.body.modes = Modes::ALL;
    expect_code(
        pne.request(AuthMessage::ConnectionSetupRequest {
            credential: forged,
            mode: NodeMode::Gateway,
        })
        .await,
        ErrorCode::BadProof,
    )?;
    // Forged MAC.
    let nonce = pne.challenge(NodeMode::Pne).await?;
    let (mut mac, sig) = pne.proof(&nonce, NodeMode::Pne);
    mac[5] ^= 0x40;
    expect_code(
        pne.request(AuthMessage::AuthResponse {
            nonce,
            eukey_mac: mac,
            signature: sig,
        })
        .await,
        ErrorCode::BadProof,
    )?;
    // Good answer, then the same answer replayed.
    let nonce = pne.challenge(NodeMode::Pne).await?;
    let (mac, sig) = pne.proof(&nonce, NodeMode::Pne);
    let answer = AuthMessage::AuthResponse {
        nonce,
        eukey_mac: mac,
        signature: sig,
    };
    match pne.request(answer.clone()).await? {
        Message::Auth(AuthMessage::ConnectionSetupConfirmation(info)) => {
            ensure!(
                info.modes == Modes::PNE && info.expires > now() && info.revocations.version >= 1
            )
        }
        other => bail!("step 11 expected, got {other:?}"),
    }
    expect_code(pne.request(answer).await, ErrorCode::Replay)?;
    // A nonce nobody issued.
    expect_code(
        pne.request(AuthMessage::AuthResponse {
            nonce: [7; 32],
            eukey_mac: mac,
            signature: sig,
        })
        .await,
        ErrorCode::BadRequest,
    )?;
    // Answers to the server's own requests are not requests.
    expect_code(
        pne.request(AuthMessage::Keys(vec![])).await,
        ErrorCode::BadRequest,
    )?;
    expect_code(
        pne.request(AuthMessage::AuthChallenge {
            nonce: [0; 32],
            issued: 0,
            expires: 0,
        })
        .await,
        ErrorCode::BadRequest,
    )?;
    expect_code(
        pne.node
            .client
            .request(
                pne.server,
                Protocol::Auth,
                Message::Pn(cpns_overlay::PnMessage::Ping { nonce: 1 }),
            )
            .await,
        ErrorCode::Unsupported,
    )?;

    // A gateway session receives the new revocation list when a device is revoked.
    gw.auth(NodeMode::PneGateway).await?;
    let out = admin.revoke(&pne.peer().to_string()).await?;
    ensure!(!out.already_revoked && out.serials == vec![pne.enrolment.credential.serial()]);
    let AuthMessage::Revocations(list) = gw
        .next_push("revocation list", |m| {
            matches!(m, AuthMessage::Revocations(_))
        })
        .await?
    else {
        unreachable!()
    };
    list.verify(&server.ca_public())?;
    ensure!(
        list.contains(pne.enrolment.credential.serial()) && list.version == out.revocation_version
    );
    // The revoked device's session ended, and it cannot authenticate again.
    expect_code(
        pne.request(AuthMessage::KeysPull).await,
        ErrorCode::NotAuthenticated,
    )?;
    expect_code(
        pne.request(AuthMessage::ConnectionSetupRequest {
            credential: pne.enrolment.credential.clone(),
            mode: NodeMode::Pne,
        })
        .await,
        ErrorCode::Revoked,
    )?;
    // Anyone may fetch the list.
    match pne
        .request(AuthMessage::RevocationsRequest { known_version: 0 })
        .await?
    {
        Message::Auth(AuthMessage::Revocations(l)) => ensure!(l == list),
        other => bail!("Revocations expected, got {other:?}"),
    }
    // Revoking by serial works too, and twice is harmless.
    let serial = other.enrolment.credential.serial().to_string();
    ensure!(!admin.revoke(&serial).await?.already_revoked);
    ensure!(
        admin
            .revoke(&other.peer().to_string())
            .await?
            .already_revoked
    );
    ensure!(admin.show_entity(&serial).await?.revoked.is_some());

    pne.shutdown().await;
    gw.shutdown().await;
    other.shutdown().await;
    server.shutdown().await;

    // Expired challenge: a server with a 1 ms challenge TTL; the answer comes later.
    let dir2 = tempfile::tempdir()?;
    let config = Config {
        challenge_ttl: Duration::from_millis(1),
        ..Config::with_data_dir(dir2.path().join("auth"))
    };
    let server = cpns_auth::Server::start(config).await?;
    server.admin().create_user("alice").await?;
    let code = server
        .admin()
        .create_code("alice", Modes::ALL, hour, false)
        .await?;
    let d = Device::enrol(34, &code, "slow").await?;
    let nonce = d.challenge(NodeMode::Pne).await?;
    let (mac, sig) = d.proof(&nonce, NodeMode::Pne);
    // Not synchronisation: the answer must simply be older than the 1 ms TTL.
    tokio::time::sleep(Duration::from_millis(20)).await;
    expect_code(
        d.request(AuthMessage::AuthResponse {
            nonce,
            eukey_mac: mac,
            signature: sig,
        })
        .await,
        ErrorCode::ChallengeExpired,
    )?;
    let metrics = server.admin().metrics_text();
    ensure!(metrics.contains("challenge_expired"), "{metrics}");
    d.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// Enrolment codes: one-time codes cannot be reused (but a node may retry its own), wrong
/// secrets and unknown codes fail, a burst of bad attempts at one code hits its rate limit
/// whatever identities make them, reusable
/// codes enrol several devices, a deleted user's code is dead and its devices revoked.
#[tokio::test]
async fn enrolment_codes() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    admin.create_user("carol").await?;
    let hour = Duration::from_secs(3600);
    let code = admin.create_code("alice", Modes::ALL, hour, false).await?;

    let first = Device::enrol(41, &code, "laptop").await?;
    // The same node retrying the code it used gets its credential again (lost answer).
    let again = enrol(&first.node.client, &first.node.identity, &code, "laptop").await?;
    ensure!(again.credential == first.enrolment.credential);
    ensure!(again.eukey.to_bytes() == first.enrolment.eukey.to_bytes());
    // Another device cannot reuse it.
    let (n2, _) = spawn_node(42).await?;
    match enrol(&n2.client, &n2.identity, &code, "thief").await {
        Err(EnrolError::Refused { code, .. }) => ensure!(code == ErrorCode::Conflict),
        other => bail!("reused code: {other:?}"),
    }
    // A wrong secret.
    let mut parsed = cpns_overlay::EnrolmentCode::from_text(
        &admin.create_code("alice", Modes::ALL, hour, false).await?,
    )?;
    parsed.secret[0] ^= 1;
    match enrol(&n2.client, &n2.identity, &parsed.to_text(), "thief").await {
        Err(EnrolError::Refused { code, .. }) => ensure!(code == ErrorCode::BadProof),
        other => bail!("wrong secret: {other:?}"),
    }
    // An unknown code id.
    parsed.code_id = "0000000000000000".into();
    match enrol(&n2.client, &n2.identity, &parsed.to_text(), "thief").await {
        Err(EnrolError::Refused { code, .. }) => ensure!(code == ErrorCode::NotFound),
        other => bail!("unknown code: {other:?}"),
    }
    // Garbage is refused locally.
    ensure!(matches!(
        enrol(&n2.client, &n2.identity, "cpns1-notacode", "x").await,
        Err(EnrolError::BadCode(_))
    ));
    // Six bad attempts at one code, each from a fresh identity (PeerIds cost nothing): the
    // sixth is rate-limited (issue 14: the limit was per peer, so this never was).
    parsed.code_id = "1111111111111111".into();
    let mut codes = Vec::new();
    for seed in 0..6u8 {
        let (n3, _) = spawn_node(150 + seed).await?;
        match enrol(&n3.client, &n3.identity, &parsed.to_text(), "brute").await {
            Err(EnrolError::Refused { code, .. }) => codes.push(code),
            other => bail!("brute force attempt: {other:?}"),
        }
        n3.shutdown().await;
    }
    ensure!(
        codes[..5].iter().all(|c| *c == ErrorCode::NotFound),
        "{codes:?}"
    );
    ensure!(codes[5] == ErrorCode::RateLimited, "{codes:?}");
    // Another code is not affected.
    let good = admin.create_code("alice", Modes::ALL, hour, false).await?;
    let (n3, _) = spawn_node(43).await?;
    enrol(&n3.client, &n3.identity, &good, "honest").await?;
    // A reusable code enrols two devices, with distinct serials.
    let reusable = admin.create_code("alice", Modes::PNE, hour, true).await?;
    let r1 = enrol(&n2.client, &n2.identity, &reusable, "tv").await?;
    let (n4, _) = spawn_node(44).await?;
    let r2 = enrol(&n4.client, &n4.identity, &reusable, "radio").await?;
    ensure!(r1.credential.serial() != r2.credential.serial());
    ensure!(r1.credential.body.modes == Modes::PNE);
    // Re-enrolling with a new code gives a new serial; the old one stays listed.
    let r1b = enrol(
        &n2.client,
        &n2.identity,
        &admin.create_code("alice", Modes::ALL, hour, false).await?,
        "tv",
    )
    .await?;
    ensure!(r1b.credential.serial() > r1.credential.serial());
    let view = admin
        .show_entity(&n2.identity.peer_id().to_string())
        .await?;
    ensure!(
        view.serials == vec![r1.credential.serial(), r1b.credential.serial()]
            && view.modes == "pne,gateway"
    );

    // A code of a deleted user is dead; the user's devices are revoked with it.
    let carol_code = admin.create_code("carol", Modes::ALL, hour, false).await?;
    let (n5, _) = spawn_node(45).await?;
    let carol_dev = enrol(&n5.client, &n5.identity, &carol_code, "carol-pc").await?;
    let carol_code2 = admin.create_code("carol", Modes::ALL, hour, false).await?;
    let deleted = admin.delete_user("carol").await?;
    ensure!(deleted.revoked_entities == vec![n5.identity.peer_id().to_string()]);
    ensure!(deleted.deleted_codes == 2, "{deleted:?}");
    let (n6, _) = spawn_node(46).await?;
    match enrol(&n6.client, &n6.identity, &carol_code2, "late").await {
        Err(EnrolError::Refused { code, .. }) => ensure!(code == ErrorCode::NotFound),
        other => bail!("deleted user's code: {other:?}"),
    }
    // A revoked device cannot enrol again, even with a fresh code.
    admin.create_user("carol").await?;
    let fresh = admin.create_code("carol", Modes::ALL, hour, false).await?;
    match enrol(&n5.client, &n5.identity, &fresh, "carol-pc").await {
        Err(EnrolError::Refused { code, .. }) => ensure!(code == ErrorCode::Revoked),
        other => bail!("revoked device re-enrolled: {other:?} {carol_dev:?}"),
    }
    // Enrolment survives in the node's data dir.
    let node_dir = dir.path().join("node");
    first.enrolment.save(&node_dir)?;
    let loaded = Enrolment::load(&node_dir)?.context("saved enrolment")?;
    ensure!(loaded.credential == first.enrolment.credential && loaded.server == server.peer_id());

    let m = admin.metrics_text();
    ensure!(
        m.contains("rate_limited") && m.contains("already_used"),
        "{m}"
    );
    for n in [n2, n3, n4, n5, n6] {
        n.shutdown().await;
    }
    first.shutdown().await;
    server.shutdown().await;
    Ok(())
}

/// Oversize, garbage and wrong-version frames, and oversized fields, do not kill the server:
/// it answers the next valid request.
#[tokio::test]
async fn bad_frames_do_not_kill_the_server() -> Result<()> {
    use futures::{AsyncReadExt, AsyncWriteExt};
    init_tracing();
    let dir = tempfile::tempdir()?;
    let server = start_server(dir.path()).await?;
    let admin = server.admin();
    admin.create_user("alice").await?;
    let code = admin
        .create_code("alice", Modes::ALL, Duration::from_secs(3600), false)
        .await?;
    let d = Device::enrol(51, &code, "d").await?;
    let mut control = d.node.client.stream_control();
    let frames: Vec<Vec<u8>> = vec![
        // Announces 64 MiB: refused before reading.
        (64u32 * 1024 * 1024).to_be_bytes().to_vec(),
        // Garbage body.
        [&10u32.to_be_bytes()[..], &[0xff; 10]].concat(),
        // Unknown wire version.
        [&6u32.to_be_bytes()[..], &[0x00, 0x63, 1, 2, 3, 4]].concat(),
        // Truncated: announces 100 bytes, sends 3.
        [&100u32.to_be_bytes()[..], &[1, 2, 3]].concat(),
    ];
    for frame in frames {
        let mut stream = control
            .open_stream(d.server, cpns_overlay::AUTH_PROTOCOL)
            .await
            .map_err(|e| anyhow!("open stream: {e}"))?;
        stream.write_all(&frame).await?;
        let _ = stream.close().await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut answer)).await;
        ensure!(answer.is_empty(), "the server answered a bad frame");
    }
    // A valid but absurd request: a 600 KB group name.
    d.auth(NodeMode::Pne).await?;
    expect_code(
        d.request(AuthMessage::GroupCreate {
            name: "x".repeat(600 * 1024),
        })
        .await,
        ErrorCode::BadRequest,
    )?;
    // The server still answers.
    match d
        .request(AuthMessage::RevocationsRequest { known_version: 0 })
        .await?
    {
        Message::Auth(AuthMessage::Revocations(list)) => list.verify(&server.ca_public())?,
        other => bail!("Revocations expected, got {other:?}"),
    }
    ensure!(
        group_info(
            d.request(AuthMessage::GroupCreate { name: "ok".into() })
                .await?
        )?
        .epoch
            == 1
    );
    d.shutdown().await;
    server.shutdown().await;
    Ok(())
}
