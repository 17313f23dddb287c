//! `cpns services …`, `cpns content …`, `cpns usage …`: the typical flow (G.1) from the
//! command line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use cpns_api::{DiscoveryView, FoundView, ServiceView};
use serde_json::{Value, json};

use super::client::{ApiClient, CliError};
use super::commands::print_json;
use super::table::{render, short};
use cpns_api::FetchOutcome;

/// `cpns services` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum ServicesAction {
    /// Publish a service description (G.1 step 0).
    Publish {
        /// The service's name.
        #[arg(long)]
        name: String,
        /// A keyword (repeatable).
        #[arg(long = "keyword", short = 'k', required = true)]
        keywords: Vec<String>,
        /// What it offers, for people.
        #[arg(long, default_value = "")]
        offers: String,
        /// Free-form metadata, `key=value` (repeatable).
        #[arg(long = "meta")]
        meta: Vec<String>,
        /// public, pn (this node's PN; the default) or group:<id>.
        #[arg(long)]
        visibility: Option<String>,
        /// A file this node serves as the service's content.
        #[arg(long)]
        file: Option<PathBuf>,
        /// Publish for an external provider of this name (its service, this node's record).
        #[arg(long)]
        external: Option<String>,
        /// How to reach the external provider (a URL).
        #[arg(long)]
        url: Option<String>,
        /// Lifetime, e.g. 1h, 30m (default: the directory's record TTL).
        #[arg(long)]
        ttl: Option<String>,
        /// Requirement: at least this much free memory, in bytes.
        #[arg(long)]
        min_memory: Option<u64>,
        /// Requirement: a screen.
        #[arg(long)]
        needs_screen: bool,
    },
    /// Withdraw one of this node's services.
    Unpublish {
        /// The service id.
        id: String,
    },
    /// Find services having every keyword (G.1 step 4).
    Find {
        /// Keywords (all must match).
        #[arg(required = true)]
        keywords: Vec<String>,
        /// all (default), public, or pn:<id> / group:<id>.
        #[arg(long)]
        scope: Option<String>,
        /// Only services whose requirements this device meets.
        #[arg(long)]
        match_capabilities: bool,
    },
    /// Show one service by id.
    Show {
        /// The service id.
        id: String,
    },
    /// This node's own services.
    List,
    /// Subscribe to advertisements of new services with KEYWORD in this PN.
    Watch {
        /// The keyword.
        keyword: String,
    },
    /// Advertisements received.
    Advertisements,
}

/// `cpns content` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum ContentAction {
    /// Invoke a service and get its content (G.1 steps 5-8).
    Fetch {
        /// The service id.
        id: String,
        /// Have the offerer push it instead of pulling it.
        #[arg(long)]
        push: bool,
    },
    /// Push a file to a member of this PN, sealed under the PN key.
    Send {
        /// The member's PeerId.
        peer: String,
        /// The file.
        file: PathBuf,
    },
    /// Files received from PN members.
    Inbox,
}

/// `cpns usage` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum UsageAction {
    /// Show or set the services never to report (5.6.3 user preferences).
    Prefs {
        /// A service id or name never to report (repeatable; replaces the stored list).
        #[arg(long = "never")]
        never: Vec<String>,
        /// Clear the stored list.
        #[arg(long, conflicts_with = "never")]
        clear: bool,
    },
    /// Usage reports waiting to be sent.
    Queued,
}

fn service_rows(services: &[ServiceView]) -> Vec<Vec<String>> {
    services
        .iter()
        .map(|d| {
            vec![
                d.id.clone(),
                d.name.clone(),
                d.keywords.join(","),
                d.visibility.to_string(),
                short(&d.publisher.to_string()),
            ]
        })
        .collect()
}

const SERVICE_HEADERS: [&str; 5] = ["ID", "NAME", "KEYWORDS", "VISIBILITY", "PUBLISHER"];

fn parse_meta(meta: &[String]) -> Result<BTreeMap<String, String>, CliError> {
    meta.iter()
        .map(|m| {
            m.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| CliError::Other(format!("--meta takes key=value, got {m:?}")))
        })
        .collect()
}

pub(super) async fn services(
    api: &ApiClient,
    json_out: bool,
    action: &ServicesAction,
) -> Result<(), CliError> {
    match action {
        ServicesAction::Publish {
            name,
            keywords,
            offers,
            meta,
            visibility,
            file,
            external,
            url,
            ttl,
            min_memory,
            needs_screen,
        } => {
            let ttl_secs = match ttl {
                Some(t) => Some(
                    humantime::parse_duration(t)
                        .map_err(|e| CliError::Other(format!("--ttl: {e}")))?
                        .as_secs(),
                ),
                None => None,
            };
            let file = match file {
                Some(f) => Some(
                    std::fs::canonicalize(f)
                        .map_err(|e| CliError::Other(format!("{}: {e}", f.display())))?,
                ),
                None => None,
            };
            let body = json!({
                "name": name,
                "keywords": keywords,
                "offers": offers,
                "metadata": parse_meta(meta)?,
                "visibility": visibility,
                "file": file,
                "external": external,
                "external_url": url,
                "ttl_secs": ttl_secs,
                "requirements": { "min_memory_bytes": min_memory, "needs_screen": needs_screen },
            });
            let d: ServiceView = api.post("/v1/services", &body).await?;
            if json_out {
                return print_json(&d);
            }
            crate::output::outln!(
                "published {} ({}), visible to {}",
                d.id,
                d.name,
                d.visibility
            );
            Ok(())
        }
        ServicesAction::Unpublish { id } => {
            let v: Value = api.delete(&format!("/v1/services/{id}")).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("unpublished {id}");
            Ok(())
        }
        ServicesAction::Find {
            keywords,
            scope,
            match_capabilities,
        } => {
            let mut q: Vec<String> = keywords
                .iter()
                .map(|k| format!("keyword={}", encode(k)))
                .collect();
            if let Some(s) = scope {
                q.push(format!("scope={}", encode(s)));
            }
            if *match_capabilities {
                q.push("match_capabilities=true".into());
            }
            let d: DiscoveryView = api
                .get(&format!("/v1/services/find?{}", q.join("&")))
                .await?;
            if json_out {
                return print_json(&d);
            }
            let services: Vec<ServiceView> =
                d.services.iter().map(|f| f.description.clone()).collect();
            crate::output::out!("{}", render(&SERVICE_HEADERS, &service_rows(&services)));
            crate::output::outln!(
                "{} found in {:.2} ms: {} requests, {} peers contacted, {} lookups",
                services.len(),
                d.figures.duration_us as f64 / 1000.0,
                d.figures.requests,
                d.figures.peers_contacted,
                d.figures.lookups
            );
            Ok(())
        }
        ServicesAction::Show { id } => {
            let f: FoundView = api.get(&format!("/v1/services/{id}")).await?;
            print_json(&f)
        }
        ServicesAction::List => {
            let list: Vec<ServiceView> = api.get("/v1/services").await?;
            if json_out {
                return print_json(&list);
            }
            crate::output::out!("{}", render(&SERVICE_HEADERS, &service_rows(&list)));
            Ok(())
        }
        ServicesAction::Watch { keyword } => {
            let v: Value = api
                .post("/v1/services/watch", &json!({ "keyword": keyword }))
                .await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!(
                "watching {keyword:?}; new services appear in `cpns services advertisements`"
            );
            Ok(())
        }
        ServicesAction::Advertisements => {
            let list: Vec<ServiceView> = api.get("/v1/services/advertisements").await?;
            if json_out {
                return print_json(&list);
            }
            crate::output::out!("{}", render(&SERVICE_HEADERS, &service_rows(&list)));
            Ok(())
        }
    }
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(super) async fn content(
    api: &ApiClient,
    json_out: bool,
    action: &ContentAction,
) -> Result<(), CliError> {
    match action {
        ContentAction::Fetch { id, push } => {
            let mode = if *push { "push" } else { "pull" };
            let body = json!({ "service_id": id, "mode": mode });
            let fetch = api.post::<_, FetchOutcome>("/v1/content/fetch", &body);
            let o = if crate::output::progress_on(json_out) {
                crate::progress::fetch(api, id, fetch).await?
            } else {
                fetch.await?
            };
            if json_out {
                return print_json(&o);
            }
            crate::output::outln!(
                "{} bytes of {} from {} ({}, {}) in {:.1} ms -> {}",
                o.bytes,
                o.service_id,
                short(&o.offerer),
                o.mode,
                o.decision,
                o.duration_ms,
                o.path
            );
            crate::output::outln!("sha256 {}; usage {}", o.sha256, o.usage);
            Ok(())
        }
        ContentAction::Send { peer, file } => {
            let path = std::fs::canonicalize(file)
                .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?;
            let body = json!({ "peer": peer, "path": path });
            let send = api.post::<_, Value>("/v1/content/send", &body);
            let v = if crate::output::progress_on(json_out) {
                crate::progress::send(&path, send).await?
            } else {
                send.await?
            };
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("sent {} bytes to {}", v["bytes"], short(peer));
            Ok(())
        }
        ContentAction::Inbox => {
            let v: Vec<Value> = api.get("/v1/content/inbox").await?;
            if json_out {
                return print_json(&v);
            }
            let rows = v
                .iter()
                .map(|e| {
                    vec![
                        e["name"].as_str().unwrap_or("").to_string(),
                        e["bytes"].to_string(),
                    ]
                })
                .collect::<Vec<_>>();
            crate::output::out!("{}", render(&["FILE", "BYTES"], &rows));
            Ok(())
        }
    }
}

pub(super) async fn usage(
    api: &ApiClient,
    json_out: bool,
    action: &UsageAction,
) -> Result<(), CliError> {
    match action {
        UsageAction::Prefs { never, clear } => {
            let v: Value = if *clear || !never.is_empty() {
                api.post("/v1/usage/prefs", &json!({ "never_report": never }))
                    .await?
            } else {
                api.get("/v1/usage/prefs").await?
            };
            if json_out {
                return print_json(&v);
            }
            let list: Vec<String> =
                serde_json::from_value(v["never_report"].clone()).unwrap_or_default();
            if list.is_empty() {
                crate::output::outln!("every service use is reported");
            } else {
                crate::output::outln!("never reported: {}", list.join(", "));
            }
            Ok(())
        }
        UsageAction::Queued => {
            let v: Value = api.get("/v1/usage/queued").await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!(
                "{} reports waiting",
                v.as_array().map(Vec::len).unwrap_or(0)
            );
            Ok(())
        }
    }
}
