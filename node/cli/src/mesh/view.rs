//! What `cpns mesh up` and `cpns mesh status` print: every recorded process, whether it runs,
//! and what each node's API says about it (PeerId, mode, PN, members).

use std::time::Duration;

use serde::Serialize;

use super::super::client::ApiClient;
use super::super::table::render;
use super::record::{MeshFile, ProcessRecord, Role, Settings};
use cpns_api::StatusView;

/// How long one process may take to answer a status question.
const ASK_BOUND: Duration = Duration::from_secs(5);

/// The mesh as a whole (`--json`).
#[derive(Debug, Serialize)]
pub(super) struct MeshView {
    /// The mesh dir.
    pub(super) dir: String,
    /// How it was started.
    pub(super) settings: Settings,
    /// The PN every node is in, when they all agree.
    pub(super) pn_id: Option<String>,
    /// The gateway (node 0's PeerId) when every node names it.
    pub(super) gateway: Option<String>,
    /// Whether every recorded process runs and every node is in the same PN under node 0.
    pub(super) healthy: bool,
    /// Every process, in start order.
    pub(super) processes: Vec<ProcessView>,
}

/// One process of the mesh.
#[derive(Debug, Serialize)]
pub(super) struct ProcessView {
    /// `auth`, `node-0`...
    pub(super) name: String,
    /// `auth`, `gateway` or `node`.
    pub(super) role: Role,
    /// Its PID.
    pub(super) pid: u32,
    /// Whether it still runs (its PID runs the recorded command line).
    pub(super) alive: bool,
    /// Its PeerId.
    pub(super) peer_id: Option<String>,
    /// Its current mode (`pne`, `pne+gateway`; `auth` for the server).
    pub(super) mode: Option<String>,
    /// Its local API (nodes) or admin endpoint (auth), `127.0.0.1:PORT`.
    pub(super) api: Option<String>,
    /// The PN it is in.
    pub(super) pn_id: Option<String>,
    /// Its PN's gateway.
    pub(super) gateway: Option<String>,
    /// How many members its PN has, as it knows them.
    pub(super) members: Option<usize>,
    /// Its own status (`online`, `busy`...; `running` for the server).
    pub(super) status: Option<String>,
    /// Its data dir.
    pub(super) data_dir: String,
    /// Its log file.
    pub(super) log: String,
    /// Why it could not be asked, if it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) error: Option<String>,
}

impl ProcessView {
    fn bare(p: &ProcessRecord) -> Self {
        Self {
            name: p.name.clone(),
            role: p.role,
            pid: p.pid,
            alive: p.is_running(),
            peer_id: None,
            mode: None,
            api: None,
            pn_id: None,
            gateway: None,
            members: None,
            status: None,
            data_dir: p.data_dir.display().to_string(),
            log: p.log.display().to_string(),
            error: None,
        }
    }
}

/// Asks a node's API for its status.
pub(super) async fn node_status(p: &ProcessRecord) -> Result<(String, StatusView), String> {
    let file = cpns_api::ApiFile::read(&p.data_dir).map_err(|e| format!("no api.json: {e}"))?;
    if file.pid != p.pid {
        return Err(format!(
            "api.json belongs to PID {}, not {}",
            file.pid, p.pid
        ));
    }
    let api = ApiClient::from_data_dir(&p.data_dir).map_err(|e| e.to_string())?;
    let status = tokio::time::timeout(ASK_BOUND, api.get::<StatusView>("/v1/status"))
        .await
        .map_err(|_| "its API did not answer in time".to_string())?
        .map_err(|e| e.to_string())?;
    Ok((file.addr.to_string(), status))
}

/// Asks `cpns-auth`'s admin endpoint (found through its `admin.json`) for its status.
async fn auth_status(p: &ProcessRecord) -> Result<(String, serde_json::Value), String> {
    let text = std::fs::read_to_string(p.data_dir.join("admin.json"))
        .map_err(|e| format!("no admin.json: {e}"))?;
    let file: serde_json::Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    let (Some(addr), Some(token)) = (file["addr"].as_str(), file["token"].as_str()) else {
        return Err("admin.json lacks addr or token".into());
    };
    let http = reqwest::Client::builder()
        .timeout(ASK_BOUND)
        .no_proxy()
        .build()
        .map_err(|e| e.to_string())?;
    let info: serde_json::Value = http
        .get(format!("http://{addr}/v1/status"))
        .bearer_auth(token)
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    Ok((addr.to_string(), info))
}

/// Looks at every recorded process.
pub(super) async fn collect(file: &MeshFile) -> MeshView {
    let mut processes = Vec::with_capacity(file.processes.len());
    for p in &file.processes {
        let mut v = ProcessView::bare(p);
        if !v.alive {
            processes.push(v);
            continue;
        }
        match p.role {
            Role::Auth => match auth_status(p).await {
                Ok((addr, info)) => {
                    v.api = Some(addr);
                    v.peer_id = info["peer_id"].as_str().map(str::to_owned);
                    v.mode = Some("auth".into());
                    v.status = Some("running".into());
                    v.members = info["entities"].as_u64().map(|n| n as usize);
                }
                Err(e) => v.error = Some(e),
            },
            Role::Gateway | Role::Node => match node_status(p).await {
                Ok((addr, s)) => {
                    v.api = Some(addr);
                    v.peer_id = Some(s.peer_id);
                    v.mode = Some(s.mode);
                    v.pn_id = s.pn_id;
                    v.gateway = s.gateway;
                    v.members = Some(s.members.len());
                    v.status = Some(s.status);
                }
                Err(e) => v.error = Some(e),
            },
        }
        processes.push(v);
    }
    let gateway_peer = processes
        .iter()
        .find(|p| p.role == Role::Gateway)
        .and_then(|p| p.peer_id.clone());
    let nodes: Vec<&ProcessView> = processes.iter().filter(|p| p.role != Role::Auth).collect();
    let first_pn = nodes.first().and_then(|n| n.pn_id.clone());
    let in_one_pn = !nodes.is_empty()
        && first_pn.is_some()
        && gateway_peer.is_some()
        && nodes
            .iter()
            .all(|n| n.pn_id == first_pn && n.gateway == gateway_peer);
    let healthy = in_one_pn && processes.iter().all(|p| p.alive && p.error.is_none());
    MeshView {
        dir: file.dir.display().to_string(),
        settings: file.settings.clone(),
        pn_id: if in_one_pn { first_pn } else { None },
        gateway: if in_one_pn { gateway_peer } else { None },
        healthy,
        processes,
    }
}

/// The table for people.
pub(super) fn render_table(view: &MeshView) -> String {
    let dash = || "-".to_string();
    let rows = view
        .processes
        .iter()
        .map(|p| {
            vec![
                p.name.clone(),
                p.pid.to_string(),
                p.peer_id.clone().unwrap_or_else(dash),
                p.mode.clone().unwrap_or_else(dash),
                p.api
                    .as_deref()
                    .and_then(|a| a.rsplit(':').next())
                    .map(str::to_owned)
                    .unwrap_or_else(dash),
                p.pn_id.clone().unwrap_or_else(dash),
                match (p.role, p.members) {
                    (Role::Auth, Some(n)) => format!("{n} enrolled"),
                    (_, Some(n)) => n.to_string(),
                    _ => dash(),
                },
                if !p.alive {
                    "not running".to_string()
                } else if let Some(e) = &p.error {
                    format!("running, not answering: {e}")
                } else {
                    p.status.clone().unwrap_or_else(dash)
                },
            ]
        })
        .collect::<Vec<_>>();
    render(
        &[
            "NODE", "PID", "PEER ID", "MODE", "API PORT", "PN", "MEMBERS", "STATUS",
        ],
        &rows,
    )
}
