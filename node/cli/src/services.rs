//! `cpns services …`, `cpns content …`, `cpns usage …`: the typical flow (G.1) from the
//! command line.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::Subcommand;
use cpns_api::{DiscoveryView, FindEvent, FoundView, ServiceView};
use serde_json::{Value, json};

use super::client::{ApiClient, CliError};
use super::commands::{print_json, print_json_line};
use super::table::{render, short};
use cpns_api::{
    AcceptedPush, AggregateView, DistributionView, FetchOutcome, FetchResult, InboxEntry,
    PendingPushView, PushView, ReceivedFeedView, SessionView, UsagePrefs,
};

/// `cpns services` actions.
#[derive(Debug, Subcommand)]
// Parsed once per run and never moved around: boxing the large variant buys nothing.
#[allow(clippy::large_enum_variant)]
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
        /// An http:// URL this node fetches the content from (once for many consumers) and
        /// delivers sealed: an external Application/Content server's content.
        #[arg(long, conflicts_with = "file")]
        source_url: Option<String>,
        /// A variant for some devices, best first (repeatable):
        /// `name=hd,file=F,screen_width=1280,free_memory=BYTES,battery=30,mains,screen,wan,chunk_kib=64`.
        #[arg(long = "variant")]
        variants: Vec<String>,
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
        /// Print each service the moment it is verified, not only when the slowest provider
        /// has answered (with --json: one JSON event per line).
        #[arg(long)]
        stream: bool,
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
    /// Invoke one or several services and get their contents (G.1 steps 5-8).
    Fetch {
        /// The service ids (several: one invocation per offerer, delivered at once).
        #[arg(required = true)]
        ids: Vec<String>,
        /// Have the offerer push it instead of pulling it.
        #[arg(long)]
        push: bool,
    },
    /// Delivery sessions at this node, either side.
    Sessions,
    /// Stop a delivery session (it ends on both sides).
    Stop {
        /// The session id (`cpns content sessions`).
        session: String,
    },
    /// Pause a delivery session.
    Pause {
        /// The session id.
        session: String,
    },
    /// Resume a paused delivery session.
    Resume {
        /// The session id.
        session: String,
    },
    /// Resume by offset: ask the offerer to send a session's content from byte OFFSET on
    /// (before its content flows; refused beyond the content's end).
    Continue {
        /// The session id.
        session: String,
        /// The first byte to receive.
        offset: u64,
    },
    /// Push a file to an entity, every member of this PN, or a Service Group.
    Push {
        /// The file.
        file: PathBuf,
        /// A PeerId, `pn`, or `group:<id>`.
        #[arg(long)]
        to: String,
        /// Through the PN gateway (sealed end to end), even with a direct path.
        #[arg(long)]
        via_gateway: bool,
    },
    /// Recent pushes from this node and where each receiver stands.
    Pushes,
    /// Push a file to an entity now (it must accept it).
    Send {
        /// The PeerId.
        peer: String,
        /// The file.
        file: PathBuf,
    },
    /// Files pushed to this node, and pushes waiting for your answer.
    Inbox,
    /// Accept a waiting push (`cpns content inbox`).
    Accept {
        /// Its id.
        id: String,
    },
    /// Decline a waiting push.
    Decline {
        /// Its id.
        id: String,
    },
    /// Contribute to the gateway's aggregated feed FEED.
    Contribute {
        /// The feed.
        feed: String,
        /// What this PNE shares with the others (units, schema).
        #[arg(long, default_value = "")]
        common: String,
        /// This PNE's own data.
        #[arg(long, default_value = "")]
        part: String,
    },
    /// The gateway's aggregated feed FEED.
    Aggregate {
        /// The feed.
        feed: String,
    },
    /// At the gateway: distribute FEED to every PNE, each its own part.
    Distribute {
        /// The feed.
        feed: String,
        /// What every PNE receives.
        #[arg(long, default_value = "")]
        common: String,
        /// A PNE's own part, `PEERID=TEXT` (repeatable): only that PNE can open it.
        #[arg(long = "part")]
        parts: Vec<String>,
    },
    /// Feeds this PNE received from its gateway.
    Feeds,
}

/// `cpns usage` actions.
#[derive(Debug, Subcommand)]
pub(crate) enum UsageAction {
    /// Show or set the reporting preferences (5.6.3 user preferences).
    Prefs {
        /// A service id or name never to report (repeatable; replaces the stored list).
        #[arg(long = "never")]
        never: Vec<String>,
        /// Clear the stored list.
        #[arg(long, conflicts_with = "never")]
        clear: bool,
        /// A service id or name never sent to the external collector, `*` for all
        /// (repeatable; replaces that list).
        #[arg(long = "never-external")]
        never_external: Vec<String>,
        /// Send every service's uses to the external collector again.
        #[arg(long, conflicts_with = "never_external")]
        clear_external: bool,
        /// Leave the device's capabilities and samples out of reports (true or false).
        #[arg(long)]
        omit_capabilities: Option<bool>,
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
            source_url,
            variants,
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
                "source_url": source_url,
                "variants": variants.iter().map(|v| parse_variant(v)).collect::<Result<Vec<_>, _>>()?,
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
            stream,
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
            if *stream {
                q.push("stream=true".into());
                let start = std::time::Instant::now();
                let mut outcome = Ok(());
                api.get_lines(&format!("/v1/services/find?{}", q.join("&")), |line| {
                    let ev: FindEvent = serde_json::from_slice(line)
                        .map_err(|e| CliError::Other(format!("bad answer from the node: {e}")))?;
                    if json_out {
                        return print_json_line(&ev);
                    }
                    match ev {
                        FindEvent::Found(f) => crate::output::outln!(
                            "{:>8.2} ms  {}  {}  from {}",
                            start.elapsed().as_secs_f64() * 1000.0,
                            f.description.id,
                            f.description.name,
                            short(&f.description.publisher)
                        ),
                        FindEvent::Done(d) => crate::output::outln!(
                            "{} found in {:.2} ms: {} requests, {} peers contacted, {} lookups",
                            d.services.len(),
                            d.figures.duration_us as f64 / 1000.0,
                            d.figures.requests,
                            d.figures.peers_contacted,
                            d.figures.lookups
                        ),
                        FindEvent::Error(e) => {
                            outcome = Err(CliError::Api {
                                status: 503,
                                code: e.code,
                                message: e.message,
                            })
                        }
                    }
                    Ok(())
                })
                .await?;
                return outcome;
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

/// A `--variant` spec: `name=hd,file=F,screen_width=1280,free_memory=N,battery=30,mains,screen,wan,chunk_kib=64`.
fn parse_variant(spec: &str) -> Result<cpns_api::VariantBody, CliError> {
    let mut v = cpns_api::VariantBody {
        name: String::new(),
        file: None,
        chunk_kib: None,
        needs: cpns_api::VariantNeeds::default(),
    };
    let bad = |m: String| CliError::Other(format!("--variant {spec:?}: {m}"));
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, val) = part.split_once('=').unwrap_or((part, ""));
        let num = || -> Result<u64, CliError> {
            val.parse()
                .map_err(|_| bad(format!("{k}: {val:?} is not a number")))
        };
        match k {
            "name" => v.name = val.to_string(),
            "file" => {
                v.file = Some(std::fs::canonicalize(val).map_err(|e| bad(format!("{val}: {e}")))?)
            }
            "chunk_kib" => v.chunk_kib = Some(num()? as u32),
            "battery" => v.needs.min_battery_percent = Some(num()?.min(100) as u8),
            "screen_width" => v.needs.min_screen_width = Some(num()? as u32),
            "free_memory" => v.needs.min_free_memory_bytes = Some(num()?),
            "mains" => v.needs.mains_power = true,
            "screen" => v.needs.needs_screen = true,
            "wan" => v.needs.wan = true,
            other => return Err(bad(format!("unknown key {other:?}"))),
        }
    }
    if v.name.is_empty() {
        return Err(bad("a variant needs name=…".into()));
    }
    Ok(v)
}

fn print_fetch(o: &FetchOutcome) {
    if o.path.is_empty() {
        crate::output::outln!(
            "{} bytes of {} from {} ({}, {}), {} after {:.1} ms: nothing kept",
            o.bytes,
            o.service_id,
            short(&o.offerer),
            o.mode,
            o.decision,
            o.ended,
            o.duration_ms
        );
    } else {
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
    }
}

fn print_sessions(list: &[SessionView]) {
    let rows = list
        .iter()
        .map(|s| {
            vec![
                s.id.clone(),
                s.role.clone(),
                s.service_id.clone(),
                short(&s.peer),
                s.mode.clone(),
                s.state.clone(),
                format!("{}/{}", s.bytes, s.total),
                s.variant.clone().unwrap_or_default(),
            ]
        })
        .collect::<Vec<_>>();
    crate::output::out!(
        "{}",
        render(
            &[
                "SESSION", "ROLE", "SERVICE", "PEER", "MODE", "STATE", "BYTES", "VARIANT"
            ],
            &rows
        )
    );
}

fn print_push(p: &PushView) {
    crate::output::outln!("push {} of {} ({} bytes)", p.push_id, p.name, p.bytes);
    let rows = p
        .targets
        .iter()
        .map(|t| {
            vec![
                short(&t.peer),
                t.state.clone(),
                if t.via_gateway { "gateway" } else { "direct" }.to_string(),
                t.detail.clone(),
            ]
        })
        .collect::<Vec<_>>();
    crate::output::out!(
        "{}",
        render(&["RECEIVER", "STATE", "PATH", "DETAIL"], &rows)
    );
}

pub(super) async fn content(
    api: &ApiClient,
    json_out: bool,
    action: &ContentAction,
) -> Result<(), CliError> {
    match action {
        ContentAction::Fetch { ids, push } => {
            let mode = if *push { "push" } else { "pull" };
            if let [id] = ids.as_slice() {
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
                print_fetch(&o);
                return Ok(());
            }
            let body = json!({ "service_ids": ids, "mode": mode });
            let all: Vec<FetchResult> = api.post("/v1/content/fetch-many", &body).await?;
            if json_out {
                return print_json(&all);
            }
            for r in &all {
                match (&r.outcome, &r.error) {
                    (Some(o), _) => print_fetch(o),
                    (None, e) => crate::output::outln!(
                        "{}: {}",
                        r.service_id,
                        e.as_deref().unwrap_or("failed")
                    ),
                }
            }
            Ok(())
        }
        ContentAction::Sessions => {
            let list: Vec<SessionView> = api.get("/v1/content/sessions").await?;
            if json_out {
                return print_json(&list);
            }
            print_sessions(&list);
            Ok(())
        }
        ContentAction::Stop { session }
        | ContentAction::Pause { session }
        | ContentAction::Resume { session } => {
            let verb = match action {
                ContentAction::Stop { .. } => "stop",
                ContentAction::Pause { .. } => "pause",
                _ => "resume",
            };
            let s: SessionView = api
                .post(
                    &format!("/v1/content/sessions/{}/{verb}", encode(session)),
                    &json!({}),
                )
                .await?;
            if json_out {
                return print_json(&s);
            }
            crate::output::outln!(
                "session {} of {}: {} ({} of {} bytes)",
                s.id,
                s.service_id,
                s.state,
                s.bytes,
                s.total
            );
            Ok(())
        }
        ContentAction::Continue { session, offset } => {
            let v: Value = api
                .post(
                    &format!("/v1/content/sessions/{}/continue/{offset}", encode(session)),
                    &json!({}),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("session {session}: the offerer continues from byte {offset}");
            Ok(())
        }
        ContentAction::Push {
            file,
            to,
            via_gateway,
        } => {
            let path = std::fs::canonicalize(file)
                .map_err(|e| CliError::Other(format!("{}: {e}", file.display())))?;
            let body = json!({ "path": path, "to": to, "via_gateway": via_gateway });
            let push = api.post::<_, PushView>("/v1/content/push", &body);
            let p = if crate::output::progress_on(json_out) {
                crate::progress::send(&path, push).await?
            } else {
                push.await?
            };
            if json_out {
                return print_json(&p);
            }
            print_push(&p);
            Ok(())
        }
        ContentAction::Pushes => {
            let list: Vec<PushView> = api.get("/v1/content/pushes").await?;
            if json_out {
                return print_json(&list);
            }
            for p in &list {
                print_push(p);
            }
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
            let files: Vec<InboxEntry> = api.get("/v1/content/inbox").await?;
            let pending: Vec<PendingPushView> = api.get("/v1/content/inbox/pending").await?;
            if json_out {
                return print_json(&json!({ "files": files, "pending": pending }));
            }
            let rows = files
                .iter()
                .map(|e| vec![e.name.clone(), e.bytes.to_string()])
                .collect::<Vec<_>>();
            crate::output::out!("{}", render(&["FILE", "BYTES"], &rows));
            if !pending.is_empty() {
                crate::output::outln!("waiting for your answer (cpns content accept|decline ID):");
                let rows = pending
                    .iter()
                    .map(|p| {
                        vec![
                            p.id.clone(),
                            p.name.clone(),
                            p.bytes.to_string(),
                            format!("{} ({})", p.user, short(&p.from)),
                            p.group.clone().unwrap_or_default(),
                        ]
                    })
                    .collect::<Vec<_>>();
                crate::output::out!(
                    "{}",
                    render(&["ID", "FILE", "BYTES", "FROM", "GROUP"], &rows)
                );
            }
            Ok(())
        }
        ContentAction::Accept { id } => {
            let a: AcceptedPush = api
                .post(
                    &format!("/v1/content/inbox/{}/accept", encode(id)),
                    &json!({}),
                )
                .await?;
            if json_out {
                return print_json(&a);
            }
            crate::output::outln!("{} bytes -> {} (sha256 {})", a.bytes, a.path, a.sha256);
            Ok(())
        }
        ContentAction::Decline { id } => {
            let v: Value = api
                .post(
                    &format!("/v1/content/inbox/{}/decline", encode(id)),
                    &json!({}),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("declined {id}");
            Ok(())
        }
        ContentAction::Contribute { feed, common, part } => {
            let v: Value = api
                .post(
                    &format!("/v1/feeds/{}/contribute", encode(feed)),
                    &json!({ "common": common, "part": part }),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("contributed to {feed}");
            Ok(())
        }
        ContentAction::Aggregate { feed } => {
            let f: AggregateView = api
                .get(&format!("/v1/feeds/{}/aggregate", encode(feed)))
                .await?;
            if json_out {
                return print_json(&f);
            }
            for (i, c) in f.common.iter().enumerate() {
                crate::output::outln!("common[{i}] {c}");
            }
            let rows = f
                .parts
                .iter()
                .map(|p| vec![short(&p.from), p.common.to_string(), p.data.clone()])
                .collect::<Vec<_>>();
            crate::output::out!("{}", render(&["FROM", "COMMON", "DATA"], &rows));
            Ok(())
        }
        ContentAction::Distribute {
            feed,
            common,
            parts,
        } => {
            let mut map = BTreeMap::new();
            for p in parts {
                let (peer, text) = p.split_once('=').ok_or_else(|| {
                    CliError::Other(format!("--part takes PEERID=TEXT, got {p:?}"))
                })?;
                map.insert(peer.to_string(), text.to_string());
            }
            let d: DistributionView = api
                .post(
                    &format!("/v1/feeds/{}/distribute", encode(feed)),
                    &json!({ "common": common, "parts": map }),
                )
                .await?;
            if json_out {
                return print_json(&d);
            }
            let rows = d
                .recipients
                .iter()
                .map(|r| {
                    vec![
                        short(&r.peer),
                        if r.delivered { "delivered" } else { "failed" }.to_string(),
                        if r.sealed_part.is_some() {
                            "own part"
                        } else {
                            ""
                        }
                        .to_string(),
                        r.error.clone().unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            crate::output::outln!("{} #{}", d.feed, d.seq);
            crate::output::out!("{}", render(&["PNE", "STATE", "PART", "ERROR"], &rows));
            Ok(())
        }
        ContentAction::Feeds => {
            let list: Vec<ReceivedFeedView> = api.get("/v1/feeds").await?;
            if json_out {
                return print_json(&list);
            }
            let rows = list
                .iter()
                .map(|f| {
                    vec![
                        f.feed.clone(),
                        f.seq.to_string(),
                        f.common.clone(),
                        f.part.clone().unwrap_or_default(),
                    ]
                })
                .collect::<Vec<_>>();
            crate::output::out!("{}", render(&["FEED", "SEQ", "COMMON", "OWN PART"], &rows));
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
        UsageAction::Prefs {
            never,
            clear,
            never_external,
            clear_external,
            omit_capabilities,
        } => {
            let mut prefs: UsagePrefs = api.get("/v1/usage/prefs").await?;
            let change = *clear
                || !never.is_empty()
                || *clear_external
                || !never_external.is_empty()
                || omit_capabilities.is_some();
            if *clear || !never.is_empty() {
                prefs.never_report = never.clone();
            }
            if *clear_external || !never_external.is_empty() {
                prefs.never_external = never_external.clone();
            }
            if let Some(o) = omit_capabilities {
                prefs.omit_capabilities = *o;
            }
            if change {
                prefs = api.post("/v1/usage/prefs", &prefs).await?;
            }
            if json_out {
                return print_json(&prefs);
            }
            if prefs.never_report.is_empty() {
                crate::output::outln!("every service use is reported");
            } else {
                crate::output::outln!("never reported: {}", prefs.never_report.join(", "));
            }
            if !prefs.never_external.is_empty() {
                crate::output::outln!(
                    "never sent to the external collector: {}",
                    prefs.never_external.join(", ")
                );
            }
            if prefs.omit_capabilities {
                crate::output::outln!("reports leave the device's capabilities out");
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
