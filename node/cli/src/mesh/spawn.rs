//! Starting the mesh's daemons detached from the terminal, waiting until each answers, and
//! running `cpns-auth` admin commands.

use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::time::Duration;

use tokio::time::Instant;

use super::super::client::{ApiClient, CliError};
use super::record::{ProcessRecord, Role};
use cpns_api::StatusView;

/// How often a waiting loop looks again.
const POLL: Duration = Duration::from_millis(50);

/// How many lines of a log an error quotes.
const LOG_TAIL_LINES: usize = 8;

/// The two daemons' executables.
pub(super) struct Binaries {
    /// `cpns-auth`.
    pub(super) auth: PathBuf,
    /// `cpns-node`.
    pub(super) node: PathBuf,
}

impl Binaries {
    /// The binaries next to the running `cpns` (a build's `target/debug`, or an install dir),
    /// else the first ones on `PATH`.
    pub(super) fn find() -> Result<Self, CliError> {
        Ok(Self {
            auth: find_binary("cpns-auth")?,
            node: find_binary("cpns-node")?,
        })
    }
}

fn find_binary(name: &str) -> Result<PathBuf, CliError> {
    let exe = std::env::current_exe().ok();
    if let Some(dir) = exe.as_deref().and_then(Path::parent) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join(name);
        if p.is_file() {
            return Ok(p);
        }
    }
    Err(CliError::Other(format!(
        "cannot find {name}: it is neither next to {} nor on PATH (build it with `cargo build --bins`)",
        exe.map(|e| e.display().to_string())
            .unwrap_or_else(|| "this cpns".into())
    )))
}

/// Removes every `CPNS_*` variable (including `CPNS_AUTH_*`) from a child's environment: the
/// mesh's settings come from its flags alone, so that a `CPNS_MDNS=on` or `CPNS_CONFIG` in the
/// developer's shell can neither turn multicast on nor change the mesh.
fn scrub_env(cmd: &mut std::process::Command) {
    for (key, _) in std::env::vars_os() {
        if key.to_string_lossy().starts_with("CPNS_") {
            cmd.env_remove(key);
        }
    }
}

/// Starts `program args` detached from the terminal: its own process group (Ctrl-C in the
/// terminal does not reach it), stdin from /dev/null, stdout and stderr appended to
/// `DIR/NAME.log`. Returns the child (to notice an early exit) and its record.
pub(super) fn spawn(
    dir: &Path,
    name: &str,
    role: Role,
    program: &Path,
    args: Vec<String>,
    data_dir: PathBuf,
) -> Result<(Child, ProcessRecord), CliError> {
    use std::io::Write;
    use std::os::unix::process::CommandExt;
    let log = dir.join(format!("{name}.log"));
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .map_err(|e| CliError::Other(format!("cannot open {}: {e}", log.display())))?;
    let _ = writeln!(
        file,
        "--- cpns mesh up: {name} starting at {} ---",
        humantime::format_rfc3339_seconds(std::time::SystemTime::now())
    );
    let stderr = file
        .try_clone()
        .map_err(|e| CliError::Other(format!("cannot open {}: {e}", log.display())))?;
    let mut command = vec![program.to_string_lossy().into_owned()];
    command.extend(args.iter().cloned());
    let mut cmd = std::process::Command::new(program);
    cmd.args(&args)
        .stdin(Stdio::null())
        .stdout(Stdio::from(file))
        .stderr(Stdio::from(stderr))
        .process_group(0)
        // Plain text logs: they go to a file, not a terminal.
        .env("NO_COLOR", "1");
    scrub_env(&mut cmd);
    let child = cmd.spawn().map_err(|e| {
        CliError::Other(format!("cannot start {name} ({}): {e}", program.display()))
    })?;
    let record = ProcessRecord {
        name: name.into(),
        role,
        pid: child.id(),
        data_dir,
        log,
        command,
    };
    Ok((child, record))
}

/// The last lines of a log, indented, for an error message.
pub(super) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(LOG_TAIL_LINES);
    lines[from..]
        .iter()
        .map(|l| format!("    {l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// An error for a daemon that exited while we waited on it.
fn exited(record: &ProcessRecord, status: std::process::ExitStatus) -> CliError {
    CliError::Other(format!(
        "{} exited during start ({status}); the end of {}:\n{}",
        record.name,
        record.log.display(),
        log_tail(&record.log)
    ))
}

/// Fails if our child has exited.
pub(super) fn check_alive(child: &mut Child, record: &ProcessRecord) -> Result<(), CliError> {
    match child.try_wait() {
        Ok(Some(status)) => Err(exited(record, status)),
        _ => Ok(()),
    }
}

/// Waits until `cpns-auth serve` wrote its `admin.json` (with its own PID) and its admin
/// endpoint answers.
pub(super) async fn wait_auth_ready(
    auth_bin: &Path,
    child: &mut Child,
    record: &ProcessRecord,
    deadline: Instant,
) -> Result<(), CliError> {
    let admin_file = record.data_dir.join("admin.json");
    loop {
        check_alive(child, record)?;
        let pid = std::fs::read_to_string(&admin_file)
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| v["pid"].as_u64());
        if pid == Some(u64::from(record.pid))
            && auth_cli(auth_bin, &record.data_dir, &["status", "--json"])
                .await
                .is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CliError::Other(format!(
                "cpns-auth did not become ready in time; the end of {}:\n{}",
                record.log.display(),
                log_tail(&record.log)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until a node wrote its `api.json` (with its own PID) and its API answers; returns a
/// client of that API and the node's first status.
pub(super) async fn wait_node_ready(
    child: &mut Child,
    record: &ProcessRecord,
    deadline: Instant,
) -> Result<(ApiClient, StatusView), CliError> {
    loop {
        check_alive(child, record)?;
        let ours = cpns_api::ApiFile::read(&record.data_dir).is_ok_and(|f| f.pid == record.pid);
        if ours && let Ok(api) = ApiClient::from_data_dir(&record.data_dir) {
            let answer =
                tokio::time::timeout(Duration::from_secs(5), api.get::<StatusView>("/v1/status"))
                    .await;
            if let Ok(Ok(status)) = answer {
                return Ok((api, status));
            }
        }
        if Instant::now() >= deadline {
            return Err(CliError::Other(format!(
                "{} did not start its API in time; the end of {}:\n{}",
                record.name,
                record.log.display(),
                log_tail(&record.log)
            )));
        }
        tokio::time::sleep(POLL).await;
    }
}

/// Runs `cpns-auth --data-dir DATA_DIR ARGS...` (an admin command: it reaches the running
/// server through `DATA_DIR/admin.json`) and parses its JSON output.
pub(super) async fn auth_cli(
    auth_bin: &Path,
    data_dir: &Path,
    args: &[&str],
) -> Result<serde_json::Value, CliError> {
    let mut cmd = std::process::Command::new(auth_bin);
    cmd.arg("--data-dir").arg(data_dir).args(args);
    scrub_env(&mut cmd);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.stdin(Stdio::null()).kill_on_drop(true);
    let what = format!("cpns-auth {}", args.join(" "));
    let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
        .await
        .map_err(|_| CliError::Other(format!("`{what}` did not finish in 30 s")))?
        .map_err(|e| CliError::Other(format!("cannot run `{what}`: {e}")))?;
    if !out.status.success() {
        return Err(CliError::Other(format!(
            "`{what}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    serde_json::from_slice(&out.stdout)
        .map_err(|e| CliError::Other(format!("`{what}` printed no JSON: {e}")))
}
