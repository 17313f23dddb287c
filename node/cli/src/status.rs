//! `cpns status set|of|watch|notifications` (Status Management, 5.6.2).

use std::time::Duration;

use clap::Subcommand;
use serde_json::{Value, json};

use super::client::{ApiClient, CliError};
use super::commands::print_json;
use super::table::{render, short};
use cpns_api::Notification;

/// Status Management actions.
#[derive(Debug, Subcommand)]
pub(crate) enum StatusAction {
    /// Set this node's status: online, busy or offline.
    Set {
        /// online, busy or offline.
        status: String,
        /// Why (for busy).
        #[arg(long)]
        reason: Option<String>,
    },
    /// Ask for a peer's status (at the peer, or at its gateway).
    Of {
        /// The peer's PeerId.
        peer: String,
    },
    /// Subscribe to a peer's status and print notifications as they arrive (Ctrl-C to stop,
    /// or --for SECONDS).
    Watch {
        /// The peer's PeerId.
        peer: String,
        /// Also notify when its battery falls below this percentage.
        #[arg(long)]
        battery_below: Option<u8>,
        /// Stop after this many seconds.
        #[arg(long = "for")]
        duration: Option<u64>,
    },
    /// Notifications this node received.
    Notifications,
}

fn print_notes(notes: &[Notification]) {
    let rows = notes
        .iter()
        .map(|n| {
            vec![
                crate::output::local_time(n.time),
                short(&n.target),
                match &n.reason {
                    Some(r) if !r.is_empty() => format!("{} ({r})", n.status),
                    _ => n.status.clone(),
                },
                n.trigger.clone(),
                n.battery_percent
                    .map(|b| format!("{b}%"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect::<Vec<_>>();
    crate::output::out!(
        "{}",
        render(&["TIME", "TARGET", "STATUS", "TRIGGER", "BATTERY"], &rows)
    );
}

pub(super) async fn run(
    api: &ApiClient,
    json_out: bool,
    action: &StatusAction,
) -> Result<(), CliError> {
    match action {
        StatusAction::Set { status, reason } => {
            let v: Value = api
                .post(
                    "/v1/status/set",
                    &json!({ "status": status, "reason": reason }),
                )
                .await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!("status set to {status}");
            Ok(())
        }
        StatusAction::Of { peer } => {
            let v: Value = api.get(&format!("/v1/status/of/{peer}")).await?;
            if json_out {
                return print_json(&v);
            }
            crate::output::outln!(
                "{} is {}{} (answered by {})",
                peer,
                v["status"].as_str().unwrap_or("?"),
                v["reason"]
                    .as_str()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default(),
                v["answered_by"].as_str().unwrap_or("?")
            );
            Ok(())
        }
        StatusAction::Watch {
            peer,
            battery_below,
            duration,
        } => {
            let v: Value = api
                .post(
                    "/v1/status/subscribe",
                    &json!({ "peer": peer, "on_change": true, "battery_below": battery_below }),
                )
                .await?;
            if !json_out {
                crate::output::outln!(
                    "subscribed to {peer} at {}",
                    v["at"].as_str().unwrap_or("?")
                );
            }
            let deadline = duration.map(|d| tokio::time::Instant::now() + Duration::from_secs(d));
            let mut seen = api
                .get::<Vec<Notification>>("/v1/status/notifications")
                .await?
                .len();
            loop {
                if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
                    return Ok(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                let notes: Vec<Notification> = api.get("/v1/status/notifications").await?;
                let fresh: Vec<Notification> = notes
                    .into_iter()
                    .skip(seen)
                    .filter(|n| &n.target == peer)
                    .collect();
                seen += fresh.len();
                if json_out {
                    for n in &fresh {
                        crate::output::outln!("{}", serde_json::to_string(n).unwrap_or_default());
                    }
                } else if !fresh.is_empty() {
                    print_notes(&fresh);
                }
            }
        }
        StatusAction::Notifications => {
            let notes: Vec<Notification> = api.get("/v1/status/notifications").await?;
            if json_out {
                return print_json(&notes);
            }
            print_notes(&notes);
            Ok(())
        }
    }
}
