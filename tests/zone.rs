//! Zone requests at a PNE whose user did not allow zone discovery (`zone.discoverable` off,
//! the default): refused before anything in them is looked at, even from a real gateway with
//! a valid credential that dials it directly (not answering searches is not the only guard).
//! Real nodes and cpns-auth on loopback; no zone search runs (no zone name, no consent).

use anyhow::{Context, Result, ensure};
use cpns_overlay::{ErrorCode, Message, ZoneMessage};

use crate::util::{Lab, init_tracing};

#[tokio::test]
async fn a_pne_that_did_not_opt_in_refuses_every_zone_request() -> Result<()> {
    init_tracing();
    let lab = Lab::start().await?;
    lab.user("alice").await?;
    let (gw, members) = lab.pn("alice", "router", &["laptop"]).await?;
    let laptop = &members[0];
    let pn_id = gw.handle().status().await?.pn_id.context("PN")?;
    let credential = cpns_node::enrolment::Enrolment::load(gw.data_dir())?
        .context("the gateway's enrolment")?
        .credential;
    let to = laptop.peer_id();
    for m in [
        ZoneMessage::Discover {
            zone: "mall".into(),
            pn_id: pn_id.clone(),
            credential,
        },
        ZoneMessage::Check {
            zone: "mall".into(),
        },
        ZoneMessage::Push {
            zone: "mall".into(),
            pn_id: pn_id.clone(),
            services: Vec::new(),
        },
    ] {
        let name = m.name();
        let r = gw.handle().raw_request(to, Message::Zone(m)).await;
        ensure!(
            matches!(&r, Err(cpns_overlay::Error::Refused { reply, .. })
                if reply.code == ErrorCode::Forbidden
                    && reply.message.contains("does not allow zone discovery")),
            "{name}: {r:?}"
        );
    }
    let z = laptop.handle().zone().await?;
    ensure!(z.received.is_empty(), "{z:?}");
    ensure!(
        laptop.handle().trace().iter().all(|e| e.flow != "F"),
        "no step of the zone flow at a PNE that did not opt in"
    );
    Ok(())
}
