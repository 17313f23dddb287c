//! `cpns-auth` as its operator runs it: the real `cpns-auth serve` binary and its admin CLI,
//! working while the server runs and after `kill -9`, and `--check-config`. The devices are the
//! bare overlay nodes of [`crate::auth`].

use std::process::Stdio;

use anyhow::{Context, Result, ensure};
use cpns_overlay::{AuthMessage, ErrorCode, MembershipDecision, Message, NodeMode, Protocol};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::sync::mpsc;

use crate::auth::{Device, establish, expect_code, group_info, membership, pn_key};
use crate::util::{WAIT, bin, init_tracing};

/// A `cpns-auth serve` process and its stdout lines.
struct ServeProcess {
    child: tokio::process::Child,
    addrs: Vec<String>,
}

async fn serve(data_dir: &std::path::Path) -> Result<ServeProcess> {
    let mut child = tokio::process::Command::new(bin("cpns-auth"))
        .args(["serve", "--listen", "/ip4/127.0.0.1/tcp/0", "--data-dir"])
        .arg(data_dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let mut addrs = Vec::new();
    let ready = tokio::time::timeout(WAIT, async {
        while let Some(line) = lines.next_line().await? {
            if let Some(a) = line.strip_prefix("listening on:") {
                addrs.push(a.trim().to_owned());
            }
            if line == "ready" {
                return Ok::<_, anyhow::Error>(true);
            }
        }
        Ok(false)
    })
    .await
    .context("waiting for `ready`")??;
    ensure!(ready && !addrs.is_empty(), "server did not start");
    // Keep draining stdout so the server never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(ServeProcess { child, addrs })
}

/// Runs the CLI on `data_dir`; returns stdout, failing on a non-zero exit.
async fn cli(data_dir: &std::path::Path, args: &[&str]) -> Result<String> {
    let out = tokio::time::timeout(
        WAIT,
        tokio::process::Command::new(bin("cpns-auth"))
            .arg("--data-dir")
            .arg(data_dir)
            .args(args)
            .output(),
    )
    .await
    .context("cli timed out")??;
    ensure!(
        out.status.success(),
        "cpns-auth {args:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

async fn cli_json(data_dir: &std::path::Path, args: &[&str]) -> Result<serde_json::Value> {
    let text = cli(data_dir, args).await?;
    serde_json::from_str(&text).with_context(|| format!("not JSON: {text}"))
}

fn strs(v: &serde_json::Value, key: &str) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.get(key).and_then(|s| s.as_str()).map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// Checks the state the multi-process test built, through the CLI (running or stopped).
async fn check_state(
    d: &std::path::Path,
    pn_id: &str,
    sg_joined: &str,
    acked: &[String],
    running: bool,
) -> Result<()> {
    let status = cli_json(d, &["status", "--json"]).await?;
    ensure!(status["running"] == running, "{status}");
    let users = strs(&cli_json(d, &["users", "list", "--json"]).await?, "name");
    ensure!(users == vec!["alice", "bob"], "{users:?}");
    let entities = cli_json(d, &["entities", "list", "--json"]).await?;
    ensure!(strs(&entities, "device").len() == 3, "{entities}");
    let revoked = entities
        .as_array()
        .map(|a| a.iter().filter(|e| !e["revoked"].is_null()).count());
    ensure!(revoked == Some(1), "{entities}");
    let pn = cli_json(d, &["pns", "show", pn_id, "--json"]).await?;
    ensure!(
        pn["epoch"] == 2 && pn["members"].as_array().map(Vec::len) == Some(2),
        "{pn}"
    );
    let groups = strs(&cli_json(d, &["groups", "list", "--json"]).await?, "group");
    for g in acked {
        ensure!(
            groups.contains(g),
            "acknowledged group {g} lost: {groups:?}"
        );
    }
    let sg = cli_json(d, &["groups", "show", sg_joined, "--json"]).await?;
    ensure!(
        sg["epoch"] == 2 && sg["members"].as_array().map(Vec::len) == Some(2),
        "{sg}"
    );
    // Human-readable output works too.
    let table = cli(d, &["entities", "list"]).await?;
    ensure!(
        table.contains("USER") && table.contains("alice-nas"),
        "{table}"
    );
    Ok(())
}

/// The real binary: the admin CLI works while the server runs and when it is stopped;
/// kill -9 mid-way (during a burst of group creations) and a restart lose no user, entity,
/// PN, Service Group or key epoch, nor any acknowledged change.
#[tokio::test]
async fn cli_and_kill_dash_nine_lose_nothing() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let d = dir.path().join("auth");
    let p = serve(&d).await?;
    ensure!(d.join("admin.json").exists() && d.join("ca.key").exists());

    cli(&d, &["users", "create", "alice"]).await?;
    cli(&d, &["users", "create", "bob"]).await?;
    let created = cli_json(&d, &["enrol", "create", "--user", "alice", "--json"]).await?;
    let code = created["code"].as_str().context("code")?.to_owned();
    ensure!(
        created["addrs"][0]
            .as_str()
            .is_some_and(|a| p.addrs[0].starts_with(a)),
        "{created}"
    );
    let code2 = cli(
        &d,
        &[
            "enrol", "create", "--user", "alice", "--modes", "pne", "--ttl", "10m",
        ],
    )
    .await?
    .trim()
    .to_owned();
    ensure!(code2.starts_with("cpns1-"), "{code2}");
    let qr = cli(&d, &["enrol", "create", "--user", "bob", "--qr"]).await?;
    ensure!(
        qr.contains('█') && qr.lines().last().is_some_and(|l| l.starts_with("cpns1-")),
        "{qr}"
    );

    let mut gw = Device::enrol(61, &code, "alice-nas").await?;
    let phone = Device::enrol(62, &code2, "alice-phone").await?;
    let bob_code = qr.lines().last().context("code line")?.trim().to_owned();
    let bob_tv = Device::enrol(63, &bob_code, "bob-tv").await?;
    // Users, codes and revocation through the CLI while the server runs.
    cli(&d, &["users", "create", "carol"]).await?;
    let deleted = cli_json(&d, &["users", "delete", "carol", "--json"]).await?;
    ensure!(deleted["name"] == "carol", "{deleted}");
    let codes = cli_json(&d, &["enrol", "list", "--json"]).await?;
    ensure!(codes.as_array().map(Vec::len) == Some(3), "{codes}");
    let revoked = cli_json(
        &d,
        &["entities", "revoke", &bob_tv.peer().to_string(), "--json"],
    )
    .await?;
    ensure!(revoked["already_revoked"] == false, "{revoked}");
    expect_code(
        bob_tv
            .request(AuthMessage::ConnectionSetupRequest {
                credential: bob_tv.enrolment.credential.clone(),
                mode: NodeMode::Pne,
            })
            .await,
        ErrorCode::Revoked,
    )?;
    let (pn, _) = establish(&mut gw).await?;
    let (decision, _) = membership(&gw, phone.setup(&pn.pn_id, gw.peer())).await?;
    ensure!(decision == MembershipDecision::Admitted);
    phone.auth(NodeMode::Pne).await?;
    let sg = group_info(
        gw.request(AuthMessage::GroupCreate {
            name: "photos".into(),
        })
        .await?,
    )?;
    group_info(
        gw.request(AuthMessage::GroupInvite {
            group: sg.group.clone(),
            entity: phone.peer(),
        })
        .await?,
    )?;
    ensure!(
        group_info(
            phone
                .request(AuthMessage::GroupJoin {
                    group: sg.group.clone()
                })
                .await?
        )?
        .epoch
            == 2
    );

    // The CLI while the server runs.
    let entities = cli_json(&d, &["entities", "list", "--json"]).await?;
    ensure!(entities.as_array().map(Vec::len) == Some(3), "{entities}");
    let show = cli_json(&d, &["entities", "show", &gw.peer().to_string(), "--json"]).await?;
    ensure!(
        show["online"] == true && show["pns"][0] == pn.pn_id.as_str(),
        "{show}"
    );

    // A burst of group creations; kill -9 once some are acknowledged.
    let (acked_tx, mut acked_rx) = mpsc::unbounded_channel::<String>();
    let client = gw.node.client.clone();
    let server_peer = gw.server;
    let mut burst = Vec::new();
    for i in 0..40 {
        let client = client.clone();
        let tx = acked_tx.clone();
        burst.push(tokio::spawn(async move {
            let m = AuthMessage::GroupCreate {
                name: format!("burst-{i}"),
            };
            if let Ok(Message::Auth(AuthMessage::GroupInfo(info))) = client
                .request(server_peer, Protocol::Auth, Message::Auth(m))
                .await
            {
                let _ = tx.send(info.group.0);
            }
        }));
    }
    drop(acked_tx);
    let mut acked = Vec::new();
    while acked.len() < 5 {
        let g = tokio::time::timeout(WAIT, acked_rx.recv())
            .await
            .context("no group acknowledged")?
            .context("burst ended")?;
        acked.push(g);
    }
    let pid = p.child.id().context("pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let mut child = p.child;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    ensure!(!status.success(), "killed server exited cleanly?");
    for t in burst {
        let _ = t.await;
    }
    while let Ok(g) = acked_rx.try_recv() {
        acked.push(g);
    }
    // admin.json is stale now; the CLI notices and opens the data dir directly.
    ensure!(d.join("admin.json").exists());
    check_state(&d, &pn.pn_id, &sg.group.0, &acked, false).await?;

    // Restart on the same data dir: same identity; the state is all there.
    let p2 = serve(&d).await?;
    check_state(&d, &pn.pn_id, &sg.group.0, &acked, true).await?;
    let status = cli_json(&d, &["status", "--json"]).await?;
    ensure!(
        status["peer_id"] == server_peer.to_string().as_str(),
        "{status}"
    );
    // Devices authenticate again (the server kept its CA and their EUKeys) and keep their keys.
    let _ = gw.node.client.disconnect(server_peer).await;
    for addr in &p2.addrs {
        let a: libp2p::Multiaddr = addr.parse()?;
        gw.node.client.add_address(server_peer, a).await?;
    }
    gw.node.client.dial(p2.addrs[0].parse()?).await?;
    gw.auth(NodeMode::Gateway).await?;
    let (epoch, grants) = pn_key(&gw, &pn.pn_id, phone.peer()).await?;
    ensure!(epoch == 2 && grants.len() == 2);

    // Clean stop: SIGTERM removes admin.json; the CLI works on the stopped server.
    let pid = p2.child.id().context("pid")?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let mut child = p2.child;
    let status = tokio::time::timeout(WAIT, child.wait()).await??;
    ensure!(status.success(), "clean shutdown: {status}");
    ensure!(!d.join("admin.json").exists(), "admin.json left behind");
    check_state(&d, &pn.pn_id, &sg.group.0, &acked, false).await?;
    // Codes made while the server is stopped carry its last addresses.
    let offline = cli_json(&d, &["enrol", "create", "--user", "bob", "--json"]).await?;
    ensure!(
        offline["addrs"][0]
            .as_str()
            .is_some_and(|a| p2.addrs[0].starts_with(a)),
        "{offline}"
    );
    let csv = cli(&d, &["usage", "export"]).await?;
    ensure!(csv.starts_with("id,received,entity"), "{csv}");
    // Usage errors exit with 2, failures with 1.
    let bad = tokio::process::Command::new(bin("cpns-auth"))
        .args(["users", "frobnicate"])
        .output()
        .await?;
    ensure!(bad.status.code() == Some(2));
    let missing = tokio::process::Command::new(bin("cpns-auth"))
        .arg("--data-dir")
        .arg(&d)
        .args(["pns", "show", "pn-0000000000000000"])
        .output()
        .await?;
    ensure!(missing.status.code() == Some(1));

    gw.shutdown().await;
    phone.shutdown().await;
    bob_tv.shutdown().await;
    Ok(())
}

/// `--check-config` names the bad key.
#[tokio::test]
async fn check_config_names_the_bad_key() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let good = dir.path().join("good.toml");
    std::fs::write(&good, "admin_port = 0\nchallenge_ttl = \"10s\"\n")?;
    let out = tokio::process::Command::new(bin("cpns-auth"))
        .arg("--check-config")
        .arg(&good)
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "admin_port = 0\nsesion_ttl = \"1h\"\n")?;
    let out = tokio::process::Command::new(bin("cpns-auth"))
        .arg("--check-config")
        .arg(&bad)
        .output()
        .await?;
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(
        out.status.code() == Some(1) && err.contains("sesion_ttl"),
        "{err}"
    );
    Ok(())
}
