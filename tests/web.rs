//! The web view (`cpns web`) in a real browser: a 3-node PN with a real `cpns-auth` on
//! loopback, the link from the real `cpns` binary, and headless Debian chromium driven by
//! playwright-core (`node/web/test/browser.mjs`). Screenshots land in
//! `target/web-screenshots/`. Skips, saying why, where chromium, node or the npm packages
//! (`npm ci --prefix node/web`) are missing; CI installs all three.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use cpns_node::ApiFile;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::util::{Lab, bin, init_tracing};

/// The browser script's bound (it bounds each of its own waits too).
const SCRIPT_LIMIT: Duration = Duration::from_secs(150);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Why the browser test cannot run here, if it cannot.
fn missing_tools() -> Option<String> {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Some(format!(
            "no chromium at {chromium} (apt-get install chromium)"
        ));
    }
    if std::process::Command::new("node")
        .arg("--version")
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        return Some("no node on PATH (apt-get install nodejs npm)".into());
    }
    let pw = repo().join("node/web/node_modules/playwright-core");
    if !pw.exists() {
        return Some(format!("no {} (npm ci --prefix node/web)", pw.display()));
    }
    None
}

/// `target/web-screenshots`, next to the test binary's profile dir.
fn screenshots_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let target = exe
        .ancestors()
        .find(|p| p.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| repo().join("target"));
    Ok(target.join("web-screenshots"))
}

/// Runs one of `node/web/test/*.mjs` (bounded) and returns its stdout lines; fails if it
/// fails.
async fn browser_script(script: &str, env: &[(&str, String)]) -> Result<Vec<String>> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(repo().join("node/web/test").join(script));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .context("starting node")?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut reader = BufReader::new(stdout).lines();
    let mut lines = Vec::new();
    let read = async {
        while let Some(line) = reader.next_line().await? {
            eprintln!("browser: {line}");
            lines.push(line);
        }
        child.wait().await
    };
    let status = tokio::time::timeout(SCRIPT_LIMIT, read)
        .await
        .context("the browser script did not finish in time")??;
    if !status.success() {
        bail!(
            "{script} failed ({status}); screenshots in {}",
            screenshots_dir()?.display()
        );
    }
    Ok(lines)
}

/// The page loads only from the one-time link, lists the PN's members, shows a member going
/// Busy without a reload, draws the trace as SVG, publishes a service that another node's
/// CLI then finds, and fetches another member's file with its progress bar.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_view_works_in_a_real_browser() -> Result<()> {
    if let Some(why) = missing_tools() {
        eprintln!("SKIPPED the_web_view_works_in_a_real_browser: {why}");
        return Ok(());
    }
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "gateway", &["laptop", "phone"]).await?;
    let cpns = bin("cpns");

    // The link, from the real CLI.
    let out = tokio::process::Command::new(&cpns)
        .arg("--data-dir")
        .arg(gw.data_dir())
        .arg("web")
        .output()
        .await?;
    ensure!(out.status.success(), "cpns web: {out:?}");
    let url = String::from_utf8(out.stdout)?.trim().to_string();
    ensure!(
        url.starts_with("http://127.0.0.1:") && url.contains("/web/login?token="),
        "{url}"
    );

    let mut ids: Vec<String> = vec![gw.peer_id().to_string()];
    ids.extend(members.iter().map(|m| m.peer_id().to_string()));
    let busy = &members[0];
    let busy_api = ApiFile::read(busy.data_dir())?;
    let shots = screenshots_dir()?;
    let keyword = "webprinter";
    // Another member serves a file through a service published with the real CLI (which
    // states its size); the page fetches it.
    let content = tempfile::NamedTempFile::new()?;
    let fetch_bytes: usize = 3 * 1024 * 1024 + 17;
    std::fs::write(
        content.path(),
        (0..fetch_bytes)
            .map(|i| (i % 251) as u8)
            .collect::<Vec<u8>>(),
    )?;
    let out = tokio::process::Command::new(&cpns)
        .arg("--data-dir")
        .arg(members[1].data_dir())
        .args([
            "services",
            "publish",
            "--name",
            "Holiday movie",
            "-k",
            "webmovie",
            "--file",
        ])
        .arg(content.path())
        .output()
        .await?;
    ensure!(
        out.status.success(),
        "cpns services publish --file: {out:?}"
    );
    let lines = browser_script(
        "browser.mjs",
        &[
            ("CPNS_WEB_URL", url),
            ("CPNS_MEMBERS", ids.join(",")),
            ("CPNS_BUSY_PEER", busy.peer_id().to_string()),
            ("CPNS_BUSY_API", format!("http://{}", busy_api.addr)),
            ("CPNS_BUSY_TOKEN", busy_api.token.clone()),
            ("CPNS_KEYWORD", keyword.to_string()),
            ("CPNS_FETCH_KEYWORD", "webmovie".to_string()),
            ("CPNS_FETCH_BYTES", fetch_bytes.to_string()),
            ("CPNS_SCREENSHOTS", shots.display().to_string()),
        ],
    )
    .await?;
    let id = lines
        .iter()
        .find_map(|l| l.strip_prefix("PUBLISHED "))
        .context("the script published nothing")?
        .to_string();

    // Another node's CLI finds the service published from the page.
    let other = &members[1];
    let deadline = tokio::time::Instant::now() + crate::util::WAIT;
    loop {
        let out = tokio::process::Command::new(&cpns)
            .arg("--data-dir")
            .arg(other.data_dir())
            .args(["--json", "services", "find", keyword])
            .output()
            .await?;
        let found: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
        let ids: Vec<&str> = found["services"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|f| f["description"]["id"].as_str())
                    .collect()
            })
            .unwrap_or_default();
        if ids.contains(&id.as_str()) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "{} did not find {id}: {found}",
            other.peer_id()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut all = vec![gw];
    all.extend(members);
    lab.shutdown(all).await;
    Ok(())
}

/// cpns-auth's operator page: refused without the link, lists users and entities, makes an
/// enrolment code with its QR code (which then enrols a device), shows every section.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_of_cpns_auth_works_in_a_real_browser() -> Result<()> {
    if let Some(why) = missing_tools() {
        eprintln!("SKIPPED the_operator_page_of_cpns_auth_works_in_a_real_browser: {why}");
        return Ok(());
    }
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "gateway", &["laptop"]).await?;
    let out = tokio::process::Command::new(bin("cpns-auth"))
        .arg("--data-dir")
        .arg(lab.server_data_dir())
        .arg("web")
        .output()
        .await?;
    ensure!(out.status.success(), "cpns-auth web: {out:?}");
    let url = String::from_utf8(out.stdout)?.trim().to_string();
    let entities = [gw.peer_id().to_string(), members[0].peer_id().to_string()];
    let lines = browser_script(
        "auth.mjs",
        &[
            ("CPNS_WEB_URL", url),
            ("CPNS_USER", "alice".to_string()),
            ("CPNS_ENTITIES", entities.join(",")),
            ("CPNS_SCREENSHOTS", screenshots_dir()?.display().to_string()),
        ],
    )
    .await?;
    let code = lines
        .iter()
        .find_map(|l| l.strip_prefix("CODE "))
        .context("no code made on the page")?
        .to_string();
    // The code made on the page enrols a real device.
    let dir = tempfile::tempdir()?;
    let phone = cpns_node::Node::start(Lab::config(
        dir.path(),
        "phone",
        cpns_node::ModeSetting::Auto,
    ))
    .await?;
    let s = phone
        .handle()
        .up(&code)
        .await
        .context("enrolling with the page's code")?;
    ensure!(s.enrolled && s.user.as_deref() == Some("alice"), "{s:?}");
    phone.shutdown().await;
    let mut all = vec![gw];
    all.extend(members);
    lab.shutdown(all).await;
    Ok(())
}

/// Without a browser: every request must name 127.0.0.1 in `Host` (DNS rebinding), no CORS
/// preflight is answered, the one-time link works once, and a request that changes something
/// on the strength of the cookie must come from the page's own origin.
#[tokio::test]
async fn the_web_view_refuses_rebinding_cross_origin_and_reused_links() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let node = cpns_node::Node::start(crate::node::test_config(dir.path())).await?;
    let api = ApiFile::read(dir.path())?;
    let base = format!("http://{}", api.addr);
    let http = reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;

    // DNS rebinding: the right token, a foreign Host.
    let r = http
        .get(format!("{base}/v1/status"))
        .bearer_auth(&api.token)
        .header("Host", "evil.example:80")
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    let r = http
        .get(format!("{base}/metrics"))
        .header("Host", "rebind.example")
        .send()
        .await?;
    assert_eq!(r.status(), 403, "metrics too");
    // No CORS: a preflight is refused and carries no Access-Control-* header.
    let r = http
        .request(reqwest::Method::OPTIONS, format!("{base}/v1/status"))
        .header("Origin", "http://evil.example")
        .header("Access-Control-Request-Method", "GET")
        .send()
        .await?;
    assert_eq!(r.status(), 403);
    assert!(
        r.headers()
            .keys()
            .all(|k| !k.as_str().starts_with("access-control")),
        "{:?}",
        r.headers()
    );

    // A link, then its token for a cookie, once.
    let link: cpns_api::WebLink = http
        .post(format!("{base}/v1/web/link"))
        .bearer_auth(&api.token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let r = http.post(format!("{base}/v1/web/link")).send().await?;
    assert_eq!(r.status(), 401, "a link needs the token");
    let r = http.get(&link.url).send().await?;
    assert_eq!(r.status(), 303);
    let cookie = r
        .headers()
        .get("set-cookie")
        .context("set-cookie")?
        .to_str()?
        .to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    let pair = cookie.split(';').next().context("cookie")?.to_string();
    assert_eq!(http.get(&link.url).send().await?.status(), 401, "used once");
    let r = http
        .get(format!("{base}/web/login?token=00"))
        .send()
        .await?;
    assert_eq!(r.status(), 401, "a forged token");

    // The cookie reads; it writes only from the page's own origin.
    let r = http
        .get(format!("{base}/v1/status"))
        .header("Cookie", &pair)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let set = |origin: Option<&str>| {
        let mut req = http
            .post(format!("{base}/v1/status/set"))
            .header("Cookie", &pair)
            .json(&serde_json::json!({ "status": "busy" }));
        if let Some(o) = origin {
            req = req.header("Origin", o);
        }
        req.send()
    };
    assert_eq!(set(None).await?.status(), 401, "no Origin");
    assert_eq!(
        set(Some("http://127.0.0.1:1")).await?.status(),
        401,
        "another local origin"
    );
    assert_eq!(set(Some(&base)).await?.status(), 200, "the page's origin");
    let r = http
        .get(format!("{base}/v1/status"))
        .header("Cookie", "cpns_node_1=forged")
        .send()
        .await?;
    assert_eq!(r.status(), 401, "a forged cookie");
    // The page and its assets carry a CSP that keeps scripts and connections local.
    let r = http
        .get(format!("{base}/web/"))
        .header("Cookie", &pair)
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    let csp = r
        .headers()
        .get("content-security-policy")
        .context("csp")?
        .to_str()?;
    assert!(csp.contains("script-src 'self'") && csp.contains("connect-src 'self'"));
    node.shutdown().await;
    Ok(())
}

/// An open page does not hold up the node's shutdown: its event stream ends cleanly (the
/// chunked body is terminated, not cut off when the node gives up waiting and aborts).
#[tokio::test]
async fn an_open_event_stream_ends_cleanly_at_shutdown() -> Result<()> {
    init_tracing();
    let dir = tempfile::tempdir()?;
    let node = cpns_node::Node::start(crate::node::test_config(dir.path())).await?;
    let api = ApiFile::read(dir.path())?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let mut events = http
        .get(format!("http://{}/web/events", api.addr))
        .bearer_auth(&api.token)
        .send()
        .await?
        .error_for_status()?;
    ensure!(
        events
            .headers()
            .get("content-type")
            .is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream")),
        "{:?}",
        events.headers()
    );
    let first = tokio::time::timeout(crate::util::WAIT, events.chunk())
        .await??
        .context("no first event")?;
    ensure!(
        String::from_utf8_lossy(&first).contains("event: status"),
        "{first:?}"
    );
    let stop = tokio::spawn(node.shutdown());
    let end = tokio::time::timeout(crate::util::WAIT, async {
        loop {
            match events.chunk().await {
                Ok(Some(_)) => continue,
                other => return other,
            }
        }
    })
    .await?;
    ensure!(matches!(end, Ok(None)), "the stream was cut off: {end:?}");
    stop.await?;
    Ok(())
}
