//! Service/Content Delivery (5.6.7) as a user drives it, with the real binaries: two
//! `cpns-node` processes of one user form a PN; through `cpns` alone one fetches a service of
//! the other, pauses and stops it mid-transfer (`content sessions|pause|stop`), the offerer
//! pushes a file to the PN (`content push --to pn`, `content pushes`) that lands in the other's
//! inbox (`content inbox`), and both contribute to the gateway's aggregated feed
//! (`content contribute|aggregate`). The README's tour, step 5.

use std::path::Path;
use std::process::{Child, Stdio};

use anyhow::{Context, Result, ensure};
use serde_json::Value;

use crate::cli::{Daemons, WAIT, cpns, pn_of_two, run, run_json, wait_for};
use crate::node::wait_timeout;

/// A `cpns` process left running in the background (a long fetch); killed if the test fails.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The consumer's session of `service` through `cpns content sessions`, once `pred` holds.
fn session_where(
    daemons: &mut Daemons,
    dir: &Path,
    service: &str,
    what: &str,
    pred: impl Fn(&Value) -> bool,
) -> Result<Value> {
    wait_for(daemons, WAIT, what, || {
        let list = run_json(cpns(dir, &["content", "sessions"]))?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["service_id"] == service && pred(s))
            .cloned())
    })
}

#[test]
fn fetch_pause_stop_push_and_aggregate_through_the_cli() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let root = tmp.path();
    let mut daemons = Daemons::default();
    let (nas, laptop, _, _) = pn_of_two(&mut daemons, root, "nas", "laptop")?;

    // A long film (sparse: no disk until received), fetched by the laptop in the background.
    let film = root.join("film.ts");
    std::fs::File::create(&film)?.set_len(4 << 30)?;
    let published = run_json(cpns(
        &nas,
        &[
            "services",
            "publish",
            "--name",
            "Film",
            "-k",
            "film",
            "--file",
            film.to_str().context("path")?,
        ],
    ))?;
    let id = published["id"].as_str().context("service id")?.to_owned();
    let out_path = root.join("fetch.json");
    let fetch = Background(
        cpns(&laptop, &["content", "fetch", &id])
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(Stdio::null())
            .spawn()?,
    );
    let running = session_where(&mut daemons, &laptop, &id, "bytes flowing", |s| {
        s["role"] == "consumer" && s["bytes"].as_u64().unwrap_or(0) > 0
    })?;
    let session = running["id"].as_str().context("session id")?.to_owned();

    // The consumer pauses it; the offerer sees who did.
    let paused = run_json(cpns(&laptop, &["content", "pause", &session]))?;
    ensure!(paused["state"] == "paused by the consumer", "{paused}");
    session_where(&mut daemons, &nas, &id, "the pause at the offerer", |s| {
        s["role"] == "offerer" && s["state"] == "paused by the consumer"
    })?;
    // Then stops it: the fetch ends with what it got, and no file that looks complete.
    let stopped = run_json(cpns(&laptop, &["content", "stop", &session]))?;
    ensure!(stopped["state"] == "stopped by the consumer", "{stopped}");
    let mut fetch = fetch;
    let status = wait_timeout(&mut fetch.0, WAIT)?.context("the fetch did not end")?;
    ensure!(status.success(), "the stopped fetch failed: {status}");
    let outcome: Value = serde_json::from_slice(&std::fs::read(&out_path)?)?;
    ensure!(outcome["ended"] == "stopped by the consumer", "{outcome}");
    ensure!(outcome["path"] == "", "{outcome}");
    let got = outcome["bytes"].as_u64().unwrap_or(0);
    ensure!(got > 0 && got < 4 << 30, "{outcome}");
    let left: Vec<_> = std::fs::read_dir(laptop.join("downloads"))
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.file_name()).collect())
        .unwrap_or_default();
    ensure!(left.is_empty(), "a stopped fetch left {left:?}");
    wait_for(&mut daemons, WAIT, "the offerer's session to end", || {
        let list = run_json(cpns(&nas, &["content", "sessions"]))?;
        let gone = list
            .as_array()
            .into_iter()
            .flatten()
            .all(|s| s["service_id"] != id.as_str());
        Ok(gone.then_some(()))
    })?;
    // An unknown session is a clear error, not a success.
    let out = run(
        cpns(&laptop, &["content", "stop", "00000000deadbeef"]),
        WAIT,
    )?;
    ensure!(!out.status.success(), "stopping no session succeeded");
    let err = String::from_utf8_lossy(&out.stderr);
    ensure!(err.contains("no such session"), "{err}");

    // The NAS pushes photos to the whole PN; the laptop (same user) takes them at once.
    let photos = root.join("photos.tar");
    let bytes: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&photos, &bytes)?;
    let pushed = run_json(cpns(
        &nas,
        &[
            "content",
            "push",
            photos.to_str().context("path")?,
            "--to",
            "pn",
        ],
    ))?;
    let targets = pushed["targets"].as_array().context("targets")?;
    ensure!(
        targets.len() == 1 && targets[0]["state"] == "delivered",
        "{pushed}"
    );
    let pushes = run_json(cpns(&nas, &["content", "pushes"]))?;
    ensure!(pushes[0]["push_id"] == pushed["push_id"], "{pushes}");
    let inbox = run_json(cpns(&laptop, &["content", "inbox"]))?;
    let file = inbox["files"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|f| f["name"] == "photos.tar")
        .with_context(|| format!("not in the inbox: {inbox}"))?;
    ensure!(file["bytes"] == 300_000, "{inbox}");
    ensure!(std::fs::read(laptop.join("inbox/photos.tar"))? == bytes);

    // Both contribute to one feed; the gateway aggregates it, any member reads it.
    for (dir, reading) in [(&nas, "19.0"), (&laptop, "21.5")] {
        run_json(cpns(
            dir,
            &[
                "content",
                "contribute",
                "temps",
                "--common",
                "unit=C",
                "--part",
                reading,
            ],
        ))?;
    }
    let feed = run_json(cpns(&laptop, &["content", "aggregate", "temps"]))?;
    ensure!(feed["common"] == serde_json::json!(["unit=C"]), "{feed}");
    let mut parts: Vec<&str> = feed["parts"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|p| p["data"].as_str())
        .collect();
    parts.sort_unstable();
    ensure!(parts == ["19.0", "21.5"], "{feed}");
    Ok(())
}
