//! `DIR/mesh.json`: what `cpns mesh up` started (name, PID, data dir, log, exact command line
//! of every process) and the mesh's settings, so that `cpns mesh status` and `cpns mesh down`
//! act on exactly those processes and never on a stranger that happens to reuse a PID.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::super::client::CliError;

/// The file's name inside the mesh dir.
pub(super) const MESH_FILE: &str = "mesh.json";

/// The format version written into the file; a reader refuses other versions rather than guess.
const VERSION: u32 = 1;

/// What a process of the mesh is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum Role {
    /// `cpns-auth serve`.
    Auth,
    /// Node 0: `cpns-node --mode gateway`, the PN's gateway and everyone's bootstrap peer.
    Gateway,
    /// Nodes 1..N: `cpns-node --mode auto`, PNEs of node 0's PN.
    Node,
}

/// The settings a mesh was started with.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Settings {
    /// Number of nodes.
    pub(super) nodes: u16,
    /// First port of the fixed port plan, or none for "any free port".
    pub(super) base_port: Option<u16>,
    /// The `cpns-auth` user every node is enrolled for.
    pub(super) user: String,
    /// Always false: a mesh never sends multicast off this machine.
    pub(super) mdns: bool,
    /// Bound of `cpns mesh up`, in seconds.
    pub(super) timeout_secs: u64,
}

/// One process `cpns mesh up` started.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct ProcessRecord {
    /// `auth`, `node-0`, `node-1`...
    pub(super) name: String,
    /// What it is.
    pub(super) role: Role,
    /// Its process id.
    pub(super) pid: u32,
    /// Its data dir.
    pub(super) data_dir: PathBuf,
    /// Where its stdout and stderr go.
    pub(super) log: PathBuf,
    /// The exact argv it was started with: compared with `/proc/PID/cmdline` before any signal,
    /// so that a PID the kernel recycled for another program is never touched.
    pub(super) command: Vec<String>,
}

impl ProcessRecord {
    /// Whether the recorded process still runs: the PID exists and runs the recorded command
    /// line. A zombie (exited, not yet reaped) has an empty command line, so it counts as gone.
    pub(super) fn is_running(&self) -> bool {
        cmdline(self.pid).is_some_and(|c| c == self.command)
    }
}

/// The content of `mesh.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct MeshFile {
    /// Format version.
    pub(super) version: u32,
    /// The mesh dir (absolute).
    pub(super) dir: PathBuf,
    /// When `cpns mesh up` started, seconds since the Unix epoch.
    pub(super) created: u64,
    /// How the mesh was started.
    pub(super) settings: Settings,
    /// Every process started, in start order (auth, node-0, node-1...).
    pub(super) processes: Vec<ProcessRecord>,
}

impl MeshFile {
    /// A new record with no process yet.
    pub(super) fn new(dir: &Path, settings: Settings) -> Self {
        let created = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Self {
            version: VERSION,
            dir: dir.to_owned(),
            created,
            settings,
            processes: Vec::new(),
        }
    }

    /// `DIR/mesh.json`.
    pub(super) fn path(dir: &Path) -> PathBuf {
        dir.join(MESH_FILE)
    }

    /// Reads the record of `dir`; `None` when there is none.
    pub(super) fn read(dir: &Path) -> Result<Option<MeshFile>, CliError> {
        let path = Self::path(dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(CliError::Other(format!(
                    "cannot read {}: {e}",
                    path.display()
                )));
            }
        };
        let file: MeshFile = serde_json::from_str(&text).map_err(|e| {
            CliError::Other(format!(
                "{} is not a mesh record ({e}); if no mesh runs there, remove it",
                path.display()
            ))
        })?;
        if file.version != VERSION {
            return Err(CliError::Other(format!(
                "{} has format version {} (this cpns reads {VERSION})",
                path.display(),
                file.version
            )));
        }
        Ok(Some(file))
    }

    /// Writes the record atomically (temporary file, then rename).
    pub(super) fn write(&self) -> Result<(), CliError> {
        let path = Self::path(&self.dir);
        let tmp = self.dir.join(format!("{MESH_FILE}.tmp"));
        let text =
            serde_json::to_string_pretty(self).map_err(|e| CliError::Other(e.to_string()))?;
        std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, &path))
            .map_err(|e| CliError::Other(format!("cannot write {}: {e}", path.display())))
    }

    /// Removes the record of `dir` (nothing runs any more).
    pub(super) fn remove(dir: &Path) -> Result<(), CliError> {
        match std::fs::remove_file(Self::path(dir)) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(CliError::Other(format!(
                "cannot remove {}: {e}",
                Self::path(dir).display()
            ))),
        }
    }

    /// The recorded processes that still run.
    pub(super) fn running(&self) -> Vec<&ProcessRecord> {
        self.processes.iter().filter(|p| p.is_running()).collect()
    }
}

/// The argv of a running process, from `/proc/PID/cmdline` (NUL-separated); `None` if there is
/// no such process.
fn cmdline(pid: u32) -> Option<Vec<String>> {
    let bytes = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(split_cmdline(&bytes))
}

/// Splits a `/proc/PID/cmdline` buffer into arguments.
fn split_cmdline(bytes: &[u8]) -> Vec<String> {
    let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_splits_on_nul() {
        assert_eq!(split_cmdline(b"a\0b c\0\0d\0"), vec!["a", "b c", "", "d"]);
        assert!(split_cmdline(b"").is_empty());
    }

    #[test]
    fn own_process_is_recognised_and_a_different_command_is_not() {
        let me = cmdline(std::process::id()).unwrap();
        let mut record = ProcessRecord {
            name: "me".into(),
            role: Role::Node,
            pid: std::process::id(),
            data_dir: PathBuf::new(),
            log: PathBuf::new(),
            command: me,
        };
        assert!(record.is_running());
        record.command.push("--something-else".into());
        assert!(!record.is_running(), "a different command line is not ours");
    }

    #[test]
    fn record_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        assert!(MeshFile::read(dir.path()).unwrap().is_none());
        let mut f = MeshFile::new(
            dir.path(),
            Settings {
                nodes: 3,
                base_port: None,
                user: "mesh".into(),
                mdns: false,
                timeout_secs: 60,
            },
        );
        f.processes.push(ProcessRecord {
            name: "auth".into(),
            role: Role::Auth,
            pid: u32::MAX,
            data_dir: dir.path().join("auth"),
            log: dir.path().join("auth.log"),
            command: vec!["cpns-auth".into(), "serve".into()],
        });
        f.write().unwrap();
        let back = MeshFile::read(dir.path()).unwrap().unwrap();
        assert_eq!(back.processes.len(), 1);
        assert!(back.running().is_empty(), "no such PID");
        MeshFile::remove(dir.path()).unwrap();
        assert!(MeshFile::read(dir.path()).unwrap().is_none());
    }
}
