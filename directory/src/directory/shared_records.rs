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
        let cred = self.credential();
        if !cred.body.modes.contains(Mode::Gateway) {
            return Err(PublishError::Forbidden(
                "the credential does not allow gateway mode".into(),
            ));
        }
        if summary.gateway != self.inner.peer || summary.owner != cred.body.user {
            return Err(PublishError::Forbidden(
                "a summary names this node as gateway and its user as owner".into(),
            ));
        }
        let now = crate::now();
        let key = keyword::pn_summary_key(&summary.pn_id);
        let expires = now.saturating_add(self.inner.config.record_ttl.as_secs());
        let header = Header {
            key: key.clone(),
            publisher: self.inner.peer,
            version: self.next_version(now),
            issued: now,
            expires,
            body: Body::PnSummary(Box::new(summary.clone())),
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

    /// Withdraws the summary of a PN this gateway published that no longer exists (5.6.9: it
    /// was merged into another PN and released at `cpns-auth`): a newer summary of `pn_id` with
    /// no members replaces it, which [`Directory::fetch_pn_summary`] reads as no PN. A PN
    /// always has its gateway as a member, so an empty summary is never a PN's.
    pub async fn withdraw_pn_summary(&self, pn_id: &str) -> Result<(), PublishError> {
        let cred = self.credential();
        let summary = PnInventorySummary {
            pn_id: pn_id.to_owned(),
            owner: cred.body.user.clone(),
            gateway: self.inner.peer,
            epoch: 0,
            members: Vec::new(),
            services: Vec::new(),
            updated: crate::now(),
            details: Vec::new(),
            admins: Vec::new(),
        };
        self.publish_pn_summary(&summary).await
    }

    /// Fetches a PN's inventory summary (the newest valid one found).
    pub async fn fetch_pn_summary(
        &self,
        pn_id: &str,
    ) -> Result<Option<PnInventorySummary>, FindError> {
        let key = keyword::pn_summary_key(pn_id);
        let mut best: Option<(u64, UnixTime, Box<PnInventorySummary>)> = None;
        for value in self.fetch_all(&key).await? {
            if let Ok(record::Checked::Signed { header }) = record::verify(
                &value,
                Some(&key),
                &self.inner.trust,
                &self.inner.config,
                crate::now(),
            ) && let Body::PnSummary(s) = header.body
                && best
                    .as_ref()
                    .is_none_or(|(v, i, _)| (*v, *i) < (header.version, header.issued))
            {
                best = Some((header.version, header.issued, s));
            }
        }
        // The newest is a withdrawal: the PN is gone.
        Ok(best.map(|(_, _, s)| *s).filter(|s| !s.members.is_empty()))
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
