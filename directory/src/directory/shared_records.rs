//! The records every node keeps in the DHT for everyone, besides services: the CA-signed
//! revocation list and gateways' signed PN Inventory summaries.

use cpns_keys::{Mode, RevocationList, UnixTime};
use cpns_overlay::{PnInventorySummary, RecordKey};

use super::{Directory, Write};
use crate::error::{FindError, PublishError};
use crate::keyword;
use crate::record::{self, Body, Header};

impl Directory {
    /// Puts a CA-signed revocation list under its fixed key (any node may re-put it: the CA
    /// signature is the authentication).
    pub async fn publish_revocations(&self, list: &RevocationList) -> Result<(), PublishError> {
        list.verify(self.inner.trust.ca())
            .map_err(|e| PublishError::Forbidden(format!("revocation list: {e}")))?;
        let value =
            record::revocations_record(list).map_err(|e| PublishError::Codec(e.to_string()))?;
        if value.len() > self.inner.config.max_revocation_record_size {
            return Err(PublishError::Invalid(format!(
                "revocation list record of {} bytes exceeds {}",
                value.len(),
                self.inner.config.max_revocation_record_size
            )));
        }
        let now = crate::now();
        let expires = now.saturating_add(self.inner.config.max_record_ttl.as_secs());
        let key = keyword::revocations_key(self.inner.trust.ca());
        self.write_all(vec![Write::Put {
            key,
            value,
            expires,
        }])
        .await
        .map_err(PublishError::NotReplicated)
    }

    /// Fetches the newest CA-signed revocation list in the DHT (also taken into [`Trust`] by
    /// the validator when it passes through).
    pub async fn fetch_revocations(&self) -> Result<Option<RevocationList>, FindError> {
        let key = keyword::revocations_key(self.inner.trust.ca());
        let mut best: Option<RevocationList> = None;
        for value in self.fetch_all(&key).await? {
            if let Ok(record::Checked::Revocations(list)) = record::verify(
                &value,
                Some(&key),
                &self.inner.trust,
                &self.inner.config,
                crate::now(),
            ) && best.as_ref().is_none_or(|b| b.version < list.version)
            {
                best = Some(list);
            }
        }
        Ok(best)
    }

    /// Publishes the PN's inventory summary, signed by this gateway, under a key derived from
    /// the PN id. The credential must allow gateway mode and belong to the PN's owner.
    pub async fn publish_pn_summary(
        &self,
        summary: &PnInventorySummary,
    ) -> Result<(), PublishError> {
        if summary.gateway != self.inner.peer || summary.owner != self.credential().body.user {
            return Err(PublishError::Forbidden(
                "a summary names this node as gateway and its user as owner".into(),
            ));
        }
        self.put_pn_summary_record(&summary.pn_id, Body::PnSummary(Box::new(summary.clone())))
            .await
    }

    /// Withdraws the summary of a PN this gateway published that no longer exists (5.6.9: it
    /// was merged into another PN and released at `cpns-auth`): a newer record under the PN's
    /// summary key says so, which [`Directory::fetch_pn_summary`] reads as no PN. The DHT
    /// servers take it from the summary's publisher only (as any replacement of a summary),
    /// and only from a credential that allows gateway mode.
    pub async fn withdraw_pn_summary(&self, pn_id: &str) -> Result<(), PublishError> {
        self.put_pn_summary_record(pn_id, Body::PnSummaryWithdrawn(pn_id.to_owned()))
            .await
    }

    /// Signs `body` under `pn_id`'s summary key and puts it: what a summary and its withdrawal
    /// share, both only from a credential that allows gateway mode.
    async fn put_pn_summary_record(&self, pn_id: &str, body: Body) -> Result<(), PublishError> {
        if !self.credential().body.modes.contains(Mode::Gateway) {
            return Err(PublishError::Forbidden(
                "the credential does not allow gateway mode".into(),
            ));
        }
        let now = crate::now();
        let key = keyword::pn_summary_key(pn_id);
        let expires = now.saturating_add(self.inner.config.record_ttl.as_secs());
        let header = Header {
            key: key.clone(),
            publisher: self.inner.peer,
            version: self.next_version(now),
            issued: now,
            expires,
            body,
        };
        let value = self.sign(&header)?;
        self.write_all(vec![Write::Put {
            key,
            value,
            expires,
        }])
        .await
        .map_err(PublishError::NotReplicated)
    }

    /// Fetches a PN's inventory summary (the newest valid one found).
    pub async fn fetch_pn_summary(
        &self,
        pn_id: &str,
    ) -> Result<Option<PnInventorySummary>, FindError> {
        let key = keyword::pn_summary_key(pn_id);
        // The newest summary or withdrawal; a withdrawal (`None`) means the PN is gone.
        let mut best: Option<(u64, UnixTime, Option<Box<PnInventorySummary>>)> = None;
        for value in self.fetch_all(&key).await? {
            if let Ok(record::Checked::Signed { header }) = record::verify(
                &value,
                Some(&key),
                &self.inner.trust,
                &self.inner.config,
                crate::now(),
            ) && best
                .as_ref()
                .is_none_or(|(v, i, _)| (*v, *i) < (header.version, header.issued))
            {
                let order = (header.version, header.issued);
                match header.body {
                    Body::PnSummary(s) => best = Some((order.0, order.1, Some(s))),
                    Body::PnSummaryWithdrawn(_) => best = Some((order.0, order.1, None)),
                    _ => {}
                }
            }
        }
        Ok(best.and_then(|(_, _, s)| s).map(|s| *s))
    }

    // ---- internals ----

    /// Every valid value under a key (a full lookup: these records are rare and the newest
    /// one matters).
    async fn fetch_all(&self, key: &[u8]) -> Result<Vec<Vec<u8>>, FindError> {
        match self
            .inner
            .client
            .get_record(RecordKey::new(&key), false)
            .await
        {
            Ok(out) => Ok(out.records.into_iter().map(|r| r.record.value).collect()),
            Err(cpns_overlay::Error::NotFound) => Ok(Vec::new()),
            Err(e) => Err(FindError::Overlay(e)),
        }
    }
}
