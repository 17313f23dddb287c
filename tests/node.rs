//! The node daemon as a whole: identity persistence, the local API's token, the status JSON,
//! and the real binaries' start and clean shutdown.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use cpns_node::{ApiFile, Config, Node};

use crate::util::{bin, init_tracing};

/// A loopback-only, mDNS-free config in `dir`.
pub fn test_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_owned(),
        listen: vec!["/ip4/127.0.0.1/tcp/0".into()],
        mdns: false,
        auto_pair: false,
        device_name: "test-device".into(),
        ..Config::default()
    }
}

/// A node restarted on the same data dir keeps its PeerId; its identity file is private.
#[tokio::test]
async fn restarted_node_keeps_its_peer_id() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let node = Node::start(test_config(dir.path())).await?;
    let first = node.peer_id();
    node.shutdown().await;
    let node = Node::start(test_config(dir.path())).await?;
    assert_eq!(node.peer_id(), first);
    node.shutdown().await;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(cpns_node::IDENTITY_FILE))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    Ok(())
}

/// A wait for a status the node never reaches fails when its limit passes, saying what it
/// saw; one it has reached succeeds. Before, the wait returned the last status as if it had
/// succeeded, so the tests' `wait_until(..)?` could not fail.
#[tokio::test]
async fn a_wait_for_a_status_never_reached_fails_at_its_limit() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let node = Node::start(test_config(dir.path())).await?;
    let h = node.handle();
    let waited = h
        .wait_until(Duration::from_millis(500), |s| s.pn_id.is_some())
        .await;
    let err = waited.expect_err("a node that is in no PN reached pn_id");
    assert_eq!(err.code(), "unavailable");
    assert!(err.to_string().contains("PN none"), "{err}");
    let s = h
        .wait_until(Duration::from_secs(5), |s| s.pn_id.is_none())
        .await?;
    assert!(s.pn_id.is_none());
    node.shutdown().await;
    Ok(())
}

/// The API refuses requests without the token or with a wrong one, and answers with it; the
/// status JSON has the documented fields.
#[tokio::test]
async fn api_requires_the_token_and_status_has_the_fields() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let node = Node::start(test_config(dir.path())).await?;
    let api = ApiFile::read(dir.path())?;
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(dir.path().join(cpns_node::API_FILE))?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "api.json must be private");
    let http = reqwest::Client::builder().no_proxy().build()?;
    let url = format!("http://{}/v1/status", api.addr);

    let r = http.get(&url).send().await?;
    assert_eq!(r.status(), 401);
    let body: serde_json::Value = r.json().await?;
    assert_eq!(body["error"]["code"], "unauthorized");
    let r = http.get(&url).bearer_auth("not-the-token").send().await?;
    assert_eq!(r.status(), 401);

    let r = http.get(&url).bearer_auth(&api.token).send().await?;
    assert_eq!(r.status(), 200);
    let s: serde_json::Value = r.json().await?;
    assert_eq!(s["peer_id"], node.peer_id().to_string());
    assert!(s["listen_addrs"].as_array().is_some_and(|a| !a.is_empty()));
    assert_eq!(s["mode"], "pne");
    assert!(s["pn_id"].is_null());
    assert!(s["gateway"].is_null());
    assert!(s["members"].as_array().is_some());

    let r = http
        .get(format!("http://{}/v1/nothing-here", api.addr))
        .bearer_auth(&api.token)
        .send()
        .await?;
    assert_eq!(r.status(), 404);
    node.shutdown().await;
    assert!(
        !dir.path().join(cpns_node::API_FILE).exists(),
        "api.json removed on shutdown"
    );
    Ok(())
}

/// Runs the real `cpns-node` binary, reads its status with the real `cpns` binary, and stops
/// it with SIGTERM: it exits 0 and removes its API file.
#[test]
fn daemon_binary_serves_the_cli_and_stops_on_sigterm() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let mut child = Command::new(bin("cpns-node"))
        .args(["--data-dir"])
        .arg(dir.path())
        .args([
            "--listen",
            "/ip4/127.0.0.1/tcp/0",
            "--mdns",
            "off",
            "--log",
            "warn",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let api_file = dir.path().join(cpns_node::API_FILE);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if api_file.exists() {
            let out = Command::new(bin("cpns"))
                .arg("--data-dir")
                .arg(dir.path())
                .args(["status", "--json"])
                .output()?;
            if out.status.success() {
                break serde_json::from_slice::<serde_json::Value>(&out.stdout)?;
            }
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            bail!("the daemon did not answer in time");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status["mode"], "pne");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let code = wait_timeout(&mut child, Duration::from_secs(10))?.context("daemon did not stop")?;
    assert!(code.success(), "exit status {code}");
    assert!(!api_file.exists());
    let out = Command::new(bin("cpns"))
        .arg("--data-dir")
        .arg(dir.path())
        .arg("status")
        .output()?;
    assert_eq!(out.status.code(), Some(3), "not running -> exit code 3");
    Ok(())
}

/// Waits for a child process with a bound.
pub fn wait_timeout(
    child: &mut std::process::Child,
    limit: Duration,
) -> Result<Option<std::process::ExitStatus>> {
    let deadline = std::time::Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait()? {
            return Ok(Some(s));
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `cpns-node --data-dir D enrol CODE` (the real binary) exits 0 once enrolled, against a real
/// `cpns-auth serve` process, and the server lists the device; the same code cannot enrol a
/// second device (one-time), and the daemon then starts enrolled.
#[test]
fn enrol_subcommand_enrols_against_a_running_server() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let auth_dir = dir.path().join("auth");
    let mut server = Command::new(bin("cpns-auth"))
        .args(["serve", "--data-dir"])
        .arg(&auth_dir)
        .args(["--listen", "/ip4/127.0.0.1/tcp/0"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let result = (|| -> Result<()> {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while !auth_dir.join("admin.json").exists() {
            if std::time::Instant::now() > deadline {
                bail!("cpns-auth did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let admin = |args: &[&str]| -> Result<String> {
            let out = Command::new(bin("cpns-auth"))
                .arg("--data-dir")
                .arg(&auth_dir)
                .args(args)
                .output()?;
            if !out.status.success() {
                bail!(
                    "cpns-auth {args:?}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        admin(&["users", "create", "carol"])?;
        let code: serde_json::Value =
            serde_json::from_str(&admin(&["enrol", "create", "--user", "carol", "--json"])?)?;
        let code = code["code"].as_str().context("code")?.to_string();
        let node_dir = dir.path().join("node");
        let out = Command::new(bin("cpns-node"))
            .arg("--data-dir")
            .arg(&node_dir)
            .args(["--device-name", "carols-laptop", "enrol", &code])
            .output()?;
        assert!(
            out.status.success(),
            "enrol failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(node_dir.join(cpns_node::enrolment::ENROLMENT_FILE).exists());
        let entities: serde_json::Value =
            serde_json::from_str(&admin(&["entities", "list", "--json"])?)?;
        let listed = entities.to_string();
        assert!(listed.contains("carols-laptop"), "{listed}");
        // One-time: a second device cannot use the same code.
        let out = Command::new(bin("cpns-node"))
            .arg("--data-dir")
            .arg(dir.path().join("node2"))
            .args(["enrol", &code])
            .output()?;
        assert!(!out.status.success(), "a one-time code enrolled twice");
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    result
}
