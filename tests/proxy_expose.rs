//! The Non-CPNS proxy never offers a PN service to the LAN without the owner's choice
//! (`proxy.expose`, off by default): a member's `cpns proxy play` is refused by its gateway,
//! with the reason, before anything is fetched or any renderer is looked for. Real nodes and
//! a real cpns-auth on loopback; no SSDP (the proxy's searches stay off here; the playing
//! itself is in `tests/netns.rs` with a real gmediarender).

use anyhow::{Result, ensure};

use crate::util::{Lab, init_tracing};

#[tokio::test]
async fn playing_on_a_renderer_is_refused_unless_the_owner_exposes() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["laptop"]).await?;
    let laptop = &members[0];
    // Through the gateway, as a member asks.
    let asked = laptop
        .handle()
        .proxy_play("upnp-0000000000000000", "svc-any")
        .await;
    let err = match asked {
        Ok(p) => anyhow::bail!("played without proxy.expose: {p:?}"),
        Err(e) => e.to_string(),
    };
    ensure!(err.contains("proxy.expose is off"), "{err}");
    // At the gateway itself, the owner's own request: the same rule.
    let own = gw
        .handle()
        .proxy_play("upnp-0000000000000000", "svc-any")
        .await;
    ensure!(
        own.as_ref()
            .err()
            .is_some_and(|e| e.to_string().contains("proxy.expose is off")),
        "{own:?}"
    );
    // Nothing was served: the gateway's proxy shows no device playing anything.
    ensure!(gw.handle().proxy_devices().is_empty());
    Ok(())
}
