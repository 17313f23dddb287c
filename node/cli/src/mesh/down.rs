//! `cpns mesh down`: stop exactly the recorded processes (PNEs first, then the gateway, then
//! `cpns-auth`, so that each sees the ones before it leave the way a real shutdown would),
//! SIGKILL what outlives the bound, forget the record, and with `--clean` remove the dir.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::Serialize;
use tokio::time::Instant;

use super::super::client::CliError;
use super::super::commands::print_json;
use super::record::{MESH_FILE, MeshFile, ProcessRecord, Role};

/// How long each group of processes has to exit after SIGTERM before it gets SIGKILL. A node
/// needs at most about 7 s (2 s to tell its gateway it goes Offline, 5 s for its tasks).
const TERM_BOUND: Duration = Duration::from_secs(10);

/// How long to wait for SIGKILLed processes to disappear.
const KILL_BOUND: Duration = Duration::from_secs(3);

/// What happened to each process.
#[derive(Debug, Default, Serialize)]
pub(super) struct StopReport {
    /// Exited after SIGTERM.
    pub(super) stopped: Vec<String>,
    /// Needed SIGKILL.
    pub(super) killed: Vec<String>,
    /// Were not running any more (or their PID now belongs to another program).
    pub(super) not_running: Vec<String>,
    /// Still there even after SIGKILL (should never happen).
    pub(super) survived: Vec<String>,
}

/// Sends `signal` to a recorded process if (and only if) it still runs its recorded command.
fn signal(p: &ProcessRecord, signal: Signal) -> bool {
    if !p.is_running() {
        return false;
    }
    let Ok(pid) = i32::try_from(p.pid) else {
        return false;
    };
    kill(Pid::from_raw(pid), signal).is_ok()
}

/// Waits until none of `group` runs, or the bound passes; returns those still running.
async fn wait_gone<'a>(group: &[&'a ProcessRecord], bound: Duration) -> Vec<&'a ProcessRecord> {
    let deadline = Instant::now() + bound;
    loop {
        let left: Vec<&ProcessRecord> = group.iter().copied().filter(|p| p.is_running()).collect();
        if left.is_empty() || Instant::now() >= deadline {
            return left;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Stops every recorded process, group by group.
pub(super) async fn stop(file: &MeshFile) -> StopReport {
    let mut report = StopReport::default();
    for role in [Role::Node, Role::Gateway, Role::Auth] {
        let mut group = Vec::new();
        for p in file.processes.iter().filter(|p| p.role == role) {
            if signal(p, Signal::SIGTERM) {
                group.push(p);
            } else {
                report.not_running.push(p.name.clone());
            }
        }
        let left = wait_gone(&group, TERM_BOUND).await;
        for p in &group {
            if !left.iter().any(|l| l.name == p.name) {
                report.stopped.push(p.name.clone());
            }
        }
        for p in &left {
            signal(p, Signal::SIGKILL);
        }
        for p in wait_gone(&left, KILL_BOUND).await {
            report.survived.push(p.name.clone());
        }
        for p in &left {
            if !report.survived.contains(&p.name) {
                report.killed.push(p.name.clone());
            }
        }
    }
    report
}

/// Removes a mesh dir after checking that it holds only what `cpns mesh up` creates, so that
/// a mistyped `--dir` (`~`, `/`) can never be wiped.
fn remove_mesh_dir(dir: &Path) -> Result<(), CliError> {
    let entries = std::fs::read_dir(dir)
        .map_err(|e| CliError::Other(format!("cannot read {}: {e}", dir.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| CliError::Other(e.to_string()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let ours = name == MESH_FILE
            || name == format!("{MESH_FILE}.tmp")
            || name == "auth"
            || name.ends_with(".log")
            || name
                .strip_prefix("node-")
                .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
        if !ours {
            return Err(CliError::Other(format!(
                "refusing to remove {}: it holds {name:?}, which cpns mesh did not create",
                dir.display()
            )));
        }
    }
    std::fs::remove_dir_all(dir)
        .map_err(|e| CliError::Other(format!("cannot remove {}: {e}", dir.display())))
}

#[derive(Serialize)]
struct DownView<'a> {
    dir: String,
    #[serde(flatten)]
    report: &'a StopReport,
    removed: bool,
}

/// `cpns mesh down [--dir D] [--clean]`.
pub(super) async fn run(dir: &Path, clean: bool, json: bool) -> Result<(), CliError> {
    let file = MeshFile::read(dir)?;
    let report = match &file {
        Some(f) => stop(f).await,
        None => {
            if !json {
                crate::output::errln!(
                    "no mesh recorded in {} (no {MESH_FILE}): nothing to stop",
                    dir.display()
                );
            }
            StopReport::default()
        }
    };
    if !report.survived.is_empty() {
        return Err(CliError::Other(format!(
            "{} survived SIGKILL; {} is kept",
            report.survived.join(", "),
            MeshFile::path(dir).display()
        )));
    }
    if file.is_some() {
        MeshFile::remove(dir)?;
    }
    let removed = clean && dir.exists();
    if removed {
        remove_mesh_dir(dir)?;
    }
    if json {
        return print_json(&DownView {
            dir: dir.display().to_string(),
            report: &report,
            removed,
        });
    }
    if file.is_some() {
        crate::output::outln!(
            "mesh in {} stopped: {} exited{}{}",
            dir.display(),
            report.stopped.len(),
            if report.killed.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} killed ({})",
                    report.killed.len(),
                    report.killed.join(", ")
                )
            },
            if report.not_running.is_empty() {
                String::new()
            } else {
                format!(
                    ", {} had already stopped ({})",
                    report.not_running.len(),
                    report.not_running.join(", ")
                )
            }
        );
    }
    if removed {
        crate::output::outln!("removed {}", dir.display());
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn clean_refuses_a_dir_with_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        let mesh = dir.path().join("m");
        std::fs::create_dir_all(mesh.join("node-0")).unwrap();
        std::fs::create_dir_all(mesh.join("auth")).unwrap();
        std::fs::write(mesh.join("node-0.log"), "x").unwrap();
        std::fs::write(mesh.join("notes.txt"), "mine").unwrap();
        let e = remove_mesh_dir(&mesh).unwrap_err().to_string();
        assert!(e.contains("notes.txt"), "{e}");
        assert!(mesh.join("notes.txt").exists());
        std::fs::remove_file(mesh.join("notes.txt")).unwrap();
        remove_mesh_dir(&mesh).unwrap();
        assert!(!mesh.exists());
    }
}
