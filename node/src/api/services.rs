//! Service Publication & Discovery (5.6.4), Service/Content Delivery (5.6.7) and usage
//! reporting (5.6.3) endpoints: the typical flow of Appendix G.1 from an application's side.

use std::collections::BTreeMap;
use std::path::PathBuf;

use axum::extract::{Path, State};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use cpns_directory::{
    Discovery, Endpoint, Found, Requirements, Scope, ServiceDescription, ServiceDraft, Source,
    Visibility,
};
use cpns_overlay::DeliveryMode;
use serde::{Deserialize, Serialize};

use super::{ApiError, ApiResult, ApiState, Body};
use crate::delivery::FetchOutcome;
use crate::error::OpError;

pub(super) fn routes() -> Router<ApiState> {
    Router::new()
        .route("/v1/services", get(list).post(publish))
        .route("/v1/services/find", get(find))
        .route("/v1/services/watch", post(watch))
        .route("/v1/services/advertisements", get(advertisements))
        .route("/v1/services/{id}", get(show))
        .route("/v1/services/{id}", delete(unpublish))
        .route("/v1/content/fetch", post(fetch))
        .route("/v1/content/send", post(send))
        .route("/v1/content/inbox", get(inbox))
        .route("/v1/usage/prefs", get(prefs_get).post(prefs_set))
        .route("/v1/usage/queued", get(queued))
}

fn bad(e: impl std::fmt::Display) -> ApiError {
    ApiError::from(OpError::BadRequest(e.to_string()))
}

/// `POST /v1/services` body: a service description to publish (G.1 step 0).
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct PublishBody {
    id: Option<String>,
    name: String,
    keywords: Vec<String>,
    offers: String,
    /// `public`, `pn` (this node's PN, the default), or `group:<id>`.
    visibility: Option<String>,
    /// The external provider this service speaks for (else this node).
    external: Option<String>,
    external_url: Option<String>,
    metadata: BTreeMap<String, String>,
    requirements: Requirements,
    protocol: Option<String>,
    addresses: Vec<String>,
    /// A file this node serves as the service's content.
    file: Option<PathBuf>,
    ttl_secs: Option<u64>,
}

async fn publish(
    State(s): State<ApiState>,
    Body(b): Body<PublishBody>,
) -> ApiResult<ServiceDescription> {
    let visibility = match b.visibility.as_deref() {
        None | Some("pn") => s.handle.default_visibility(),
        Some(v) => v.parse().map_err(bad)?,
    };
    if b.name.trim().is_empty() {
        return Err(bad("a service needs a name"));
    }
    let source = b.external.map(|name| Source::External {
        name,
        url: b.external_url,
    });
    let draft = ServiceDraft {
        id: b.id,
        name: b.name,
        keywords: b.keywords,
        offers: b.offers,
        source,
        requirements: b.requirements,
        endpoint: Endpoint {
            protocol: b.protocol.unwrap_or_default(),
            addresses: b.addresses,
        },
        metadata: b.metadata,
        ttl: b.ttl_secs.map(std::time::Duration::from_secs),
        visibility,
    };
    Ok(Json(s.handle.publish(draft, b.file).await?))
}

async fn list(State(s): State<ApiState>) -> ApiResult<Vec<ServiceDescription>> {
    Ok(Json(s.handle.services()?))
}

async fn unpublish(
    State(s): State<ApiState>,
    Path(id): Path<String>,
) -> ApiResult<serde_json::Value> {
    s.handle.unpublish(&id).await?;
    Ok(Json(serde_json::json!({ "ok": true, "id": id })))
}

async fn show(State(s): State<ApiState>, Path(id): Path<String>) -> ApiResult<Found> {
    Ok(Json(s.handle.service(&id).await?))
}

async fn find(
    State(s): State<ApiState>,
    axum::extract::RawQuery(raw): axum::extract::RawQuery,
) -> ApiResult<Discovery> {
    // `keyword` may repeat: ?keyword=printer&keyword=colour&scope=public&match_capabilities=true
    let mut query = cpns_directory::Query::default();
    let mut match_caps = false;
    for pair in raw.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = url_decode(v);
        match k {
            "keyword" => query.keywords.push(v),
            "scope" => {
                query.scope = match v.as_str() {
                    "all" => Scope::All,
                    "public" => Scope::Public,
                    other => match other.parse::<Visibility>().map_err(bad)? {
                        Visibility::Public => Scope::Public,
                        Visibility::Pn(g) | Visibility::Group(g) => Scope::Group(g),
                    },
                }
            }
            "match_capabilities" => match_caps = v == "true" || v == "1",
            other => return Err(bad(format!("unknown parameter {other:?}"))),
        }
    }
    if query.keywords.is_empty() {
        return Err(bad("give at least one keyword"));
    }
    if match_caps {
        query.capabilities = Some(s.handle.capabilities());
    }
    Ok(Json(s.handle.find(&query).await?))
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 2;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
struct WatchBody {
    keyword: String,
}

async fn watch(
    State(s): State<ApiState>,
    Body(b): Body<WatchBody>,
) -> ApiResult<serde_json::Value> {
    let n = s.handle.watch_services(&b.keyword).await?;
    Ok(Json(
        serde_json::json!({ "keyword": b.keyword, "subscriptions": n }),
    ))
}

async fn advertisements(State(s): State<ApiState>) -> ApiResult<Vec<ServiceDescription>> {
    Ok(Json(s.handle.advertisements()))
}

#[derive(Deserialize)]
struct FetchBody {
    service_id: String,
    #[serde(default)]
    mode: Option<String>,
}

async fn fetch(State(s): State<ApiState>, Body(b): Body<FetchBody>) -> ApiResult<FetchOutcome> {
    let mode = match b.mode.as_deref() {
        None | Some("pull") => DeliveryMode::Pull,
        Some("push") => DeliveryMode::Push,
        Some(other) => return Err(bad(format!("unknown mode {other:?} (pull or push)"))),
    };
    Ok(Json(s.handle.fetch(&b.service_id, mode).await?))
}

#[derive(Deserialize)]
struct SendBody {
    peer: String,
    path: PathBuf,
}

async fn send(State(s): State<ApiState>, Body(b): Body<SendBody>) -> ApiResult<serde_json::Value> {
    let peer = b.peer.parse().map_err(bad)?;
    let bytes = s.handle.send_file(peer, &b.path).await?;
    Ok(Json(serde_json::json!({ "peer": b.peer, "bytes": bytes })))
}

#[derive(Serialize)]
struct InboxEntry {
    name: String,
    bytes: u64,
}

async fn inbox(State(s): State<ApiState>) -> ApiResult<Vec<InboxEntry>> {
    Ok(Json(
        s.handle
            .inbox()
            .await
            .into_iter()
            .map(|(name, bytes)| InboxEntry { name, bytes })
            .collect(),
    ))
}

#[derive(Serialize, Deserialize)]
struct Prefs {
    never_report: Vec<String>,
}

async fn prefs_get(State(s): State<ApiState>) -> ApiResult<Prefs> {
    Ok(Json(Prefs {
        never_report: s.handle.usage_never_report(),
    }))
}

async fn prefs_set(State(s): State<ApiState>, Body(p): Body<Prefs>) -> ApiResult<Prefs> {
    s.handle.set_usage_never_report(p.never_report).await?;
    Ok(Json(Prefs {
        never_report: s.handle.usage_never_report(),
    }))
}

async fn queued(State(s): State<ApiState>) -> ApiResult<Vec<cpns_overlay::UsageReport>> {
    Ok(Json(s.handle.usage_queued()))
}
