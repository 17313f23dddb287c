//! Network-namespace scaffolding shared by the namespace test targets (`tests/netns.rs`,
//! `tests/netns_forward.rs`, `tests/netns_nat.rs`): namespaces deleted and processes killed on
//! drop, commands run inside a namespace, bounded waits.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use crate::util;

/// Namespaces and links made by one test; deleted on drop, whatever happened.
pub struct Lan {
    pub names: Vec<String>,
}

impl Drop for Lan {
    fn drop(&mut self) {
        for n in &self.names {
            let _ = Command::new("ip").args(["netns", "del", n]).status();
        }
    }
}

/// Processes started in the namespaces; killed on drop.
#[derive(Default)]
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub fn run(args: &[&str]) -> Result<()> {
    let out = Command::new(args[0]).args(&args[1..]).output()?;
    if !out.status.success() {
        bail!("{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(())
}

/// Whether this machine can run namespace tests; the reason if not.
pub fn unavailable() -> Option<String> {
    if !nix::unistd::Uid::effective().is_root() {
        return Some("not root".into());
    }
    match Command::new("ip").args(["netns", "list"]).output() {
        Ok(o) if o.status.success() => None,
        Ok(o) => Some(format!(
            "`ip netns` fails: {}",
            String::from_utf8_lossy(&o.stderr)
        )),
        Err(e) => Some(format!("no `ip` command: {e}")),
    }
}

pub fn spawn_in(
    ns: &str,
    bin: &Path,
    args: &[&str],
    env: &[(&str, &str)],
    log: &Path,
) -> Result<Child> {
    let log = std::fs::File::create(log)?;
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns]).arg(bin).args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    Ok(cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()?)
}

pub fn output_in(ns: &str, bin: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns])
        .arg(bin)
        .args(args)
        .output()?;
    if !out.status.success() {
        bail!(
            "{} {args:?}: {}",
            bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Waits (bounded) for `check` to return Some.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> Result<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check() {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

pub fn status(ns: &str, dir: &Path) -> Option<serde_json::Value> {
    let out = output_in(
        ns,
        &util::bin("cpns"),
        &["--data-dir", dir.to_str()?, "status", "--json"],
    )
    .ok()?;
    serde_json::from_str(&out).ok()
}

/// Makes `ns` a NAT router towards its WAN interface `wan`, the way a home router is: forwarding
/// on, `masquerade` (an nftables masquerade statement) out of the WAN, answers let in, and
/// anything unasked from the WAN dropped silently (no RST, no ICMP), forwarded or addressed to
/// the router itself. With `port_forwards`, connections the router's own DNAT rules (a UPnP
/// IGD's mappings) send inwards are let through too, and counted (`nft list chain ip home
/// wan_in` shows the counter).
pub fn nat_router(ns: &str, wan: &str, masquerade: &str, port_forwards: bool) -> Result<()> {
    run(&[
        "ip",
        "netns",
        "exec",
        ns,
        "sysctl",
        "-qw",
        "net.ipv4.ip_forward=1",
    ])?;
    let forwards = if port_forwards {
        "\t\tct status dnat counter accept\n"
    } else {
        ""
    };
    let rules = format!(
        "table ip home {{\n\
         \tchain wan_out {{ type nat hook postrouting priority srcnat; oifname \"{wan}\" {masquerade}; }}\n\
         \tchain wan_in {{ type filter hook forward priority filter; policy accept;\n\
         \t\tct state established,related accept\n\
         {forwards}\
         \t\tiifname \"{wan}\" drop\n\
         \t}}\n\
         \tchain wan_local {{ type filter hook input priority filter; policy accept;\n\
         \t\tiifname \"{wan}\" ct state new drop\n\
         \t}}\n\
         }}\n"
    );
    let file = std::env::temp_dir().join(format!("{ns}.nft"));
    std::fs::write(&file, rules)?;
    let loaded = run(&["ip", "netns", "exec", ns, "nft", "-f", path_str(&file)?]);
    let _ = std::fs::remove_file(&file);
    loaded
}

/// A path as `&str` (every path these tests make is UTF-8).
pub fn path_str(p: &Path) -> Result<&str> {
    p.to_str()
        .ok_or_else(|| anyhow::anyhow!("not UTF-8: {}", p.display()))
}
