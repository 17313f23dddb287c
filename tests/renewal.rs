//! Credential renewal (DESIGN: "Credentials expire; nodes renew before expiry"): a node renews
//! by itself when its credential is due, on request (`cpns renew`), keeps the new credential
//! in its data dir, keeps its services findable, and a revocation names every serial.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use cpns_directory::ServiceDraft;
use cpns_node::ModeSetting;
use cpns_node::enrolment::Enrolment;

use crate::util::{Lab, WAIT, init_tracing};

/// A server whose credentials live one minute and may be renewed from `min_age` seconds of
/// age (ages are counted in whole seconds).
async fn short_lived_lab(min_age: u64) -> Result<Lab> {
    let lab = Lab::start_with(|c| {
        c.credential_lifetime = Duration::from_secs(60);
        c.credential_renewal_min_age = Duration::from_secs(min_age);
    })
    .await?;
    lab.user("alice").await?;
    Ok(lab)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_due_credential_is_renewed_by_the_node_and_services_stay_findable() -> Result<()> {
    init_tracing();
    let lab = short_lived_lab(1).await?;
    // Due once less than 97 % of its 60 s is left: about two seconds after enrolment.
    let gw = lab
        .node_configured("alice", "router", ModeSetting::Gateway, |c| {
            c.credential_renew_percent = 97;
        })
        .await?;
    gw.handle().wait_for_pn(WAIT).await.context("PN")?;
    let phone = lab.node("alice", "phone").await?;
    phone.handle().pair(gw.dial_addr().await?).await?;
    phone
        .handle()
        .wait_until(WAIT, |s| s.pn_id.is_some())
        .await?;
    let vis = gw.handle().default_visibility();
    let printer = gw
        .handle()
        .publish(ServiceDraft::new("Hall printer", ["printer"], vis), None)
        .await?;

    let before = gw
        .handle()
        .status()
        .await?
        .credential
        .context("no credential")?;
    let renewed = gw
        .handle()
        .wait_until(WAIT, move |s| {
            s.credential
                .as_ref()
                .is_some_and(|c| c.serial != before.serial)
        })
        .await
        .context("the node did not renew its credential by itself")?
        .credential
        .context("no credential")?;
    ensure!(
        renewed.expires > before.expires,
        "{renewed:?} vs {before:?}"
    );
    ensure!(renewed.issued >= before.issued);
    // Saved in the data dir, so that a restart keeps it.
    let saved = Enrolment::load(gw.data_dir())?.context("no enrolment on disk")?;
    ensure!(
        saved.credential.body.serial >= renewed.serial,
        "saved serial {} < {}",
        saved.credential.body.serial,
        renewed.serial
    );
    // The server knows both serials; the PN still works and the service is found.
    let entity = lab.admin().show_entity(&gw.peer_id().to_string()).await?;
    ensure!(
        entity.serials.contains(&before.serial) && entity.serials.contains(&renewed.serial),
        "{entity:?}"
    );
    crate::util::finds(&phone, "printer", &printer.id).await?;
    // A revocation names every serial the entity ever had.
    let revoked = lab.admin().revoke(&gw.peer_id().to_string()).await?;
    ensure!(
        revoked.serials.contains(&before.serial) && revoked.serials.contains(&renewed.serial),
        "{revoked:?}"
    );
    lab.shutdown(vec![gw, phone]).await;
    Ok(())
}

/// `cpns renew` (the handle's `renew_credential`): refused while the credential is younger
/// than the server's minimum age, then a new serial and a later expiry.
#[tokio::test]
async fn renewal_on_request_is_refused_when_too_young_then_granted() -> Result<()> {
    init_tracing();
    // Three seconds: the first request, made at once, is certainly too young.
    let lab = short_lived_lab(3).await?;
    let node = lab.node("alice", "laptop").await?;
    let first = node
        .handle()
        .status()
        .await?
        .credential
        .context("credential")?;
    ensure!(
        !first.renewal_due,
        "a fresh credential is not due: {first:?}"
    );
    let err = node
        .handle()
        .renew_credential()
        .await
        .expect_err("a credential younger than the minimum age is not renewed");
    ensure!(err.to_string().contains("renewed from"), "{err}");
    let deadline = tokio::time::Instant::now() + WAIT;
    let renewed = loop {
        match node.handle().renew_credential().await {
            Ok(c) => break c,
            Err(e) if tokio::time::Instant::now() < deadline => {
                tracing::debug!("not yet: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    ensure!(renewed.serial > first.serial, "{renewed:?} vs {first:?}");
    ensure!(renewed.expires > first.expires, "{renewed:?} vs {first:?}");
    let status = node.handle().status().await?;
    ensure!(status.credential.as_ref() == Some(&renewed), "{status:?}");
    lab.shutdown(vec![node]).await;
    Ok(())
}
