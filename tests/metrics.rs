//! `/metrics` of both daemons: the text matches its content type (OpenMetrics when asked for,
//! Prometheus 0.0.4 otherwise), `promtool check metrics` (Debian's prometheus package) accepts
//! both daemons' metrics, and the node's API port serves them only with its token; the
//! opt-in `metrics_listen` serves them without one, and nothing else.

use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, ensure};
use cpns_node::ApiFile;

use crate::util::{Lab, init_tracing};

/// Runs `promtool check metrics` on `text`; `None` when promtool is not installed.
fn promtool(text: &str) -> Result<Option<String>> {
    let Ok(mut child) = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    else {
        return Ok(None);
    };
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        out.status.success(),
        "promtool check metrics: {said}\n---\n{text}"
    );
    Ok(Some(said))
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    accept: Option<&str>,
) -> Result<(u16, String, String)> {
    let mut req = http.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(a) = accept {
        req = req.header("Accept", a);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    let ctype = r
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    Ok((status, ctype, r.text().await?))
}

#[tokio::test]
async fn both_daemons_serve_metrics_that_promtool_accepts() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let (gw, members) = lab
        .pn_configured("alice", "gateway", &["laptop"], |c| {
            if c.device_name == "gateway" {
                c.metrics_listen = format!("127.0.0.1:{port}");
            }
        })
        .await?;
    let http = reqwest::Client::builder().no_proxy().build()?;
    let api = ApiFile::read(gw.data_dir())?;
    let url = format!("http://{}/metrics", api.addr);

    let (status, _, _) = get(&http, &url, None, None).await?;
    assert_eq!(status, 401, "the API port's /metrics needs the token");
    let (status, ctype, text) = get(&http, &url, Some(&api.token), None).await?;
    assert_eq!(status, 200);
    assert_eq!(ctype, cpns_web::metrics::PROMETHEUS);
    assert!(!text.contains("# EOF"), "0.0.4 text has no EOF");
    assert!(
        text.contains("# HELP cpns_node_pn_established_total "),
        "{text}"
    );
    let checked = promtool(&text)?;
    let (_, ctype, om) = get(
        &http,
        &url,
        Some(&api.token),
        Some("application/openmetrics-text; version=1.0.0"),
    )
    .await?;
    assert_eq!(ctype, cpns_web::metrics::OPENMETRICS);
    assert!(om.trim_end().ends_with("# EOF"), "{om}");

    // The opt-in listener: /metrics without a token, nothing else.
    let open = format!("http://127.0.0.1:{port}");
    let (status, ctype, text) = get(&http, &format!("{open}/metrics"), None, None).await?;
    assert_eq!(
        (status, ctype.as_str()),
        (200, cpns_web::metrics::PROMETHEUS)
    );
    assert!(text.contains("cpns_node_pn_members"));
    let (status, _, _) = get(&http, &format!("{open}/v1/status"), None, None).await?;
    assert_eq!(status, 404, "only /metrics there");

    // cpns-auth's admin endpoint.
    let (addr, _) = lab.admin_endpoint();
    let (status, ctype, text) = get(&http, &format!("http://{addr}/metrics"), None, None).await?;
    assert_eq!(
        (status, ctype.as_str()),
        (200, cpns_web::metrics::PROMETHEUS)
    );
    let auth_checked = promtool(&text)?;
    match (checked, auth_checked) {
        (Some(_), Some(_)) => {}
        _ => eprintln!("promtool is not installed (apt-get install prometheus): not run"),
    }
    let mut all = vec![gw];
    all.extend(members);
    lab.shutdown(all).await;
    Ok(())
}
