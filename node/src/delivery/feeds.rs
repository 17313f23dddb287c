//! Aggregation and distribution for multiple PNEs (5.6.7), through the PN gateway.
//!
//! * **Aggregation**: each PNE contributes to a named feed its common data (a schema, units, a
//!   header it shares with the others) and its specific data (its reading); the gateway keeps
//!   the latest contribution of each PNE and serves the feed as the common data once plus one
//!   part per PNE. Members ask for it; it stays in the PN (PN members only, over the noise
//!   channel).
//! * **Distribution**: the gateway sends one feed to every PNE: the common part sealed under
//!   the PN key (every member opens it), and each PNE's specific part sealed to that PNE's
//!   identity key, so that no other PNE — not even one that got hold of the bytes — can open
//!   it.
//!
//! Feeds are small (parts of at most 16 KiB) and bounded in number; they live in memory.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use cpns_directory::KeyRing as _;
use cpns_keys::{SealedBox, seal_to};
use cpns_overlay::{
    AggregatedFeed, DeliveryMessage, Distribution, ErrorCode, FeedPart, MAX_FEED_COMMON,
    MAX_FEED_NAME, MAX_FEED_PART, MAX_FEED_PARTS, Message, Protocol, codec,
};
use libp2p::PeerId;

use super::Delivery;
use crate::error::OpError;
use crate::pn::pn_group;
use crate::trace::flow::DELIVERY;

/// Most feeds a gateway aggregates, and a PNE keeps distributions of.
const MAX_FEEDS: usize = 32;

struct Contribution {
    common: Vec<u8>,
    part: Vec<u8>,
    at: u64,
}

/// A distribution a PNE received and opened.
#[derive(Clone, Debug)]
pub struct ReceivedFeed {
    /// The feed.
    pub feed: String,
    /// The gateway that sent it.
    pub from: PeerId,
    /// Its sequence number.
    pub seq: u64,
    /// The common part.
    pub common: Vec<u8>,
    /// This PNE's own part.
    pub part: Option<Vec<u8>>,
    /// When it arrived.
    pub received: u64,
}

/// One PNE a feed went to.
#[derive(Clone, Debug)]
pub struct Recipient {
    /// The PNE.
    pub peer: PeerId,
    /// Whether it acknowledged.
    pub delivered: bool,
    /// Why not.
    pub error: Option<String>,
    /// Its part as sent (sealed to it), codec-encoded.
    pub sealed_part: Option<Vec<u8>>,
}

/// The feeds state of a node.
pub(super) struct Feeds {
    aggregates: Mutex<BTreeMap<String, BTreeMap<PeerId, Contribution>>>,
    received: Mutex<BTreeMap<String, ReceivedFeed>>,
    seq: AtomicU64,
}

impl Default for Feeds {
    fn default() -> Self {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(1);
        Feeds {
            aggregates: Mutex::default(),
            received: Mutex::default(),
            // Increasing across restarts of the gateway.
            seq: AtomicU64::new(now_ms),
        }
    }
}

/// A feed name: 1 to 64 letters, digits, `.`, `_` or `-`.
pub(super) fn check_name(feed: &str) -> Result<(), String> {
    let ok = !feed.is_empty()
        && feed.len() <= MAX_FEED_NAME
        && feed
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "a feed name is 1 to {MAX_FEED_NAME} letters, digits, '.', '_' or '-'"
        ))
    }
}

fn part_aad(feed: &str, seq: u64, to: &PeerId) -> Vec<u8> {
    let mut aad = b"cpns feed part v1".to_vec();
    aad.extend_from_slice(&(feed.len() as u16).to_be_bytes());
    aad.extend_from_slice(feed.as_bytes());
    aad.extend_from_slice(&seq.to_be_bytes());
    aad.extend_from_slice(&to.to_bytes());
    aad
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl Feeds {
    fn insert(
        &self,
        feed: &str,
        from: PeerId,
        common: Vec<u8>,
        part: Vec<u8>,
    ) -> Result<(), String> {
        check_name(feed)?;
        if common.len() > MAX_FEED_COMMON || part.len() > MAX_FEED_PART {
            return Err(format!(
                "a contribution's common part is at most {MAX_FEED_COMMON} bytes and its own \
                 part at most {MAX_FEED_PART}"
            ));
        }
        let mut all = lock(&self.aggregates);
        if !all.contains_key(feed) && all.len() >= MAX_FEEDS {
            return Err(format!("this gateway aggregates at most {MAX_FEEDS} feeds"));
        }
        let contributions = all.entry(feed.to_string()).or_default();
        if !contributions.contains_key(&from) && contributions.len() >= MAX_FEED_PARTS {
            return Err(format!("a feed has at most {MAX_FEED_PARTS} contributors"));
        }
        contributions.insert(
            from,
            Contribution {
                common,
                part,
                at: crate::now(),
            },
        );
        Ok(())
    }

    fn aggregate(&self, feed: &str) -> Option<AggregatedFeed> {
        let all = lock(&self.aggregates);
        let contributions = all.get(feed)?;
        let mut common: Vec<Vec<u8>> = Vec::new();
        let mut parts = Vec::new();
        for (from, c) in contributions {
            let index = match common.iter().position(|x| *x == c.common) {
                Some(i) => i,
                None => {
                    common.push(c.common.clone());
                    common.len() - 1
                }
            };
            parts.push(FeedPart {
                from: *from,
                common: index as u32,
                data: c.part.clone(),
                at: c.at,
            });
        }
        Some(AggregatedFeed {
            feed: feed.to_string(),
            common,
            parts,
        })
    }

    /// Members that left are dropped from every feed.
    fn retain_members(&self, is_member: impl Fn(&PeerId) -> bool) {
        for contributions in lock(&self.aggregates).values_mut() {
            contributions.retain(|p, _| is_member(p));
        }
    }
}

impl Delivery {
    /// At the gateway: a member's contribution (the router let members through).
    pub(super) fn on_contribute(
        &self,
        peer: PeerId,
        feed: String,
        common: Vec<u8>,
        part: Vec<u8>,
    ) -> Message {
        let view = self.inner.pn.view();
        if !view.is_pn_gateway() || !view.is_member(&peer) {
            return Message::error(
                ErrorCode::Forbidden,
                "feeds are aggregated by the PN's gateway for its members",
            );
        }
        self.inner.feeds.retain_members(|p| view.is_member(p));
        let me = self.ctx().peer_id;
        let detail = format!("{feed}: {} + {} bytes", common.len(), part.len());
        match self.inner.feeds.insert(&feed, peer, common, part) {
            Ok(()) => {
                self.ctx()
                    .trace(DELIVERY, 5, &peer, &me, "ContributeFeed", detail);
                Message::Ack
            }
            Err(e) => Message::error(ErrorCode::BadRequest, e),
        }
    }

    /// At the gateway: a member asks for an aggregated feed.
    pub(super) fn on_feed_request(&self, peer: PeerId, feed: String) -> Message {
        let view = self.inner.pn.view();
        if !view.is_pn_gateway() {
            return Message::error(ErrorCode::Forbidden, "this node is not the PN's gateway");
        }
        self.inner.feeds.retain_members(|p| view.is_member(p));
        match self.inner.feeds.aggregate(&feed) {
            Some(f) => {
                let me = self.ctx().peer_id;
                self.ctx().trace(
                    DELIVERY,
                    5,
                    &me,
                    &peer,
                    "AggregatedFeed",
                    format!("{feed}: {} parts", f.parts.len()),
                );
                Message::Delivery(DeliveryMessage::Feed(f))
            }
            None => Message::error(ErrorCode::NotFound, format!("no feed {feed:?} here")),
        }
    }

    /// At a PNE: a feed its gateway distributes (the router let only the gateway through).
    pub(super) fn on_distribute(&self, peer: PeerId, d: Distribution) -> Message {
        match self.open_distribution(peer, d) {
            Ok(()) => Message::Ack,
            Err(e) => Message::error(ErrorCode::Forbidden, e.to_string()),
        }
    }

    fn open_distribution(&self, peer: PeerId, d: Distribution) -> Result<(), OpError> {
        let ctx = self.ctx();
        let view = self.inner.pn.view();
        let pn_id = view
            .pn_id()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        if view.gateway() != Some(peer) {
            return Err(OpError::Refused("feeds come from this PN's gateway".into()));
        }
        check_name(&d.feed).map_err(OpError::BadRequest)?;
        let group = pn_group(pn_id);
        if d.common.group != group || d.common.sender != peer {
            return Err(OpError::Refused(
                "the common part is not the PN gateway's".into(),
            ));
        }
        let key = ctx
            .keyring
            .by_epoch(&group, d.common.epoch)
            .ok_or_else(|| OpError::Refused(format!("no PN key of epoch {}", d.common.epoch)))?;
        let plain = key
            .open(&d.common)
            .map_err(|e| OpError::Refused(format!("the common part did not open: {e}")))?;
        let (feed, seq, common): (String, u64, Vec<u8>) =
            codec::decode(&plain, MAX_FEED_COMMON + 256)
                .map_err(|e| OpError::Refused(format!("the common part: {e}")))?;
        if feed != d.feed || seq != d.seq {
            return Err(OpError::Refused("the common part is another feed's".into()));
        }
        let part = match &d.part {
            Some(b) => Some(
                ctx.identity
                    .open_sealed(&part_aad(&d.feed, d.seq, &ctx.peer_id), b)
                    .map_err(|e| OpError::Refused(format!("this PNE's part did not open: {e}")))?,
            ),
            None => None,
        };
        let mut received = lock(&self.inner.feeds.received);
        if received.get(&d.feed).is_some_and(|r| r.seq >= d.seq) {
            return Err(OpError::Conflict(
                "an older distribution of this feed".into(),
            ));
        }
        if !received.contains_key(&d.feed)
            && received.len() >= MAX_FEEDS
            && let Some(oldest) = received
                .values()
                .min_by_key(|r| r.received)
                .map(|r| r.feed.clone())
        {
            received.remove(&oldest);
        }
        let me = ctx.peer_id;
        ctx.trace(
            DELIVERY,
            6,
            &peer,
            &me,
            "DistributeFeed",
            format!(
                "{}: {} common bytes, own part {}",
                d.feed,
                common.len(),
                part.as_ref()
                    .map_or("none".to_string(), |p| format!("{} bytes", p.len()))
            ),
        );
        received.insert(
            d.feed.clone(),
            ReceivedFeed {
                feed: d.feed,
                from: peer,
                seq: d.seq,
                common,
                part,
                received: crate::now(),
            },
        );
        Ok(())
    }

    /// This PNE's contribution to its gateway's feed (the gateway's own goes in directly).
    pub(crate) async fn contribute(
        &self,
        feed: &str,
        common: Vec<u8>,
        part: Vec<u8>,
    ) -> Result<(), OpError> {
        check_name(feed).map_err(OpError::BadRequest)?;
        let ctx = self.ctx();
        let view = self.inner.pn.view();
        let gw = view
            .gateway()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        if gw == ctx.peer_id {
            return self
                .inner
                .feeds
                .insert(feed, gw, common, part)
                .map_err(OpError::BadRequest);
        }
        let me = ctx.peer_id;
        ctx.trace(DELIVERY, 5, &me, &gw, "ContributeFeed", feed.to_string());
        let answer = ctx
            .client
            .request(
                gw,
                Protocol::Cpns,
                Message::Delivery(DeliveryMessage::Contribute {
                    feed: feed.to_string(),
                    common,
                    part,
                }),
            )
            .await?;
        match answer {
            Message::Ack => Ok(()),
            other => Err(super::answer_error(other)),
        }
    }

    /// The gateway's aggregated feed.
    pub(crate) async fn aggregate(&self, feed: &str) -> Result<AggregatedFeed, OpError> {
        check_name(feed).map_err(OpError::BadRequest)?;
        let ctx = self.ctx();
        let view = self.inner.pn.view();
        let gw = view
            .gateway()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        if gw == ctx.peer_id {
            self.inner.feeds.retain_members(|p| view.is_member(p));
            return self
                .inner
                .feeds
                .aggregate(feed)
                .ok_or_else(|| OpError::NotFound(format!("no feed {feed:?} here")));
        }
        let answer = ctx
            .client
            .request(
                gw,
                Protocol::Cpns,
                Message::Delivery(DeliveryMessage::FeedRequest {
                    feed: feed.to_string(),
                }),
            )
            .await?;
        match answer {
            Message::Delivery(DeliveryMessage::Feed(f)) if f.feed == feed => Ok(f),
            other => Err(super::answer_error(other)),
        }
    }

    /// At the gateway: distributes a feed to every other member, each with its own part.
    pub(crate) async fn distribute(
        &self,
        feed: &str,
        common: Vec<u8>,
        parts: BTreeMap<PeerId, Vec<u8>>,
    ) -> Result<(u64, Vec<Recipient>), OpError> {
        check_name(feed).map_err(OpError::BadRequest)?;
        let ctx = self.ctx();
        let me = ctx.peer_id;
        let view = self.inner.pn.view();
        let pn_id = view
            .pn_id()
            .ok_or_else(|| OpError::Conflict("not in a PN".into()))?;
        if !view.is_pn_gateway() {
            return Err(OpError::Conflict(
                "feeds are distributed by the PN's gateway".into(),
            ));
        }
        if common.len() > MAX_FEED_COMMON {
            return Err(OpError::BadRequest(format!(
                "the common part is at most {MAX_FEED_COMMON} bytes"
            )));
        }
        for (peer, part) in &parts {
            if !view.is_member(peer) || *peer == me {
                return Err(OpError::BadRequest(format!(
                    "{peer} is not another member of this PN"
                )));
            }
            if part.len() > MAX_FEED_PART {
                return Err(OpError::BadRequest(format!(
                    "a part is at most {MAX_FEED_PART} bytes"
                )));
            }
        }
        let key = ctx
            .keyring
            .current(&pn_group(pn_id))
            .ok_or_else(|| OpError::Conflict("no PN key held".into()))?;
        let seq = self.inner.feeds.seq.fetch_add(1, Ordering::Relaxed);
        let plain =
            codec::encode(&(feed, seq, &common)).map_err(|e| OpError::Internal(e.to_string()))?;
        let sealed_common = key.seal(&me, &plain);
        let members: Vec<PeerId> = view
            .pn
            .as_ref()
            .map(|p| p.members.keys().copied().filter(|p| *p != me).collect())
            .unwrap_or_default();
        let sends = members.into_iter().map(|peer| {
            let part: Option<SealedBox> = parts.get(&peer).and_then(|data| {
                let public = cpns_keys::PublicKey::from_peer_id(&peer).ok()?;
                Some(seal_to(&public, &part_aad(feed, seq, &peer), data))
            });
            let message = Message::Delivery(DeliveryMessage::Distribute(Distribution {
                feed: feed.to_string(),
                seq,
                common: sealed_common.clone(),
                part: part.clone(),
            }));
            async move {
                ctx.trace(DELIVERY, 6, &me, &peer, "DistributeFeed", feed.to_string());
                let answer = ctx.client.request(peer, Protocol::Cpns, message).await;
                let error = match answer {
                    Ok(Message::Ack) => None,
                    Ok(other) => Some(super::answer_error(other).to_string()),
                    Err(e) => Some(e.to_string()),
                };
                Recipient {
                    peer,
                    delivered: error.is_none(),
                    error,
                    sealed_part: part.and_then(|p| codec::encode(&p).ok()),
                }
            }
        });
        Ok((seq, futures::future::join_all(sends).await))
    }

    /// Feeds this PNE received from its gateway.
    pub(crate) fn received_feeds(&self) -> Vec<ReceivedFeed> {
        lock(&self.inner.feeds.received).values().cloned().collect()
    }
}

/// Opens a part as a PNE would: with its identity key (what a test of "no PNE opens another
/// PNE's part" tries with the wrong identity).
pub fn open_part(
    identity: &cpns_keys::Identity,
    feed: &str,
    seq: u64,
    sealed_part: &[u8],
) -> Result<Vec<u8>, String> {
    let b: SealedBox =
        codec::decode(sealed_part, MAX_FEED_PART + 1024).map_err(|e| e.to_string())?;
    identity
        .open_sealed(&part_aad(feed, seq, &identity.peer_id()), &b)
        .map_err(|e| e.to_string())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn common_parts_are_kept_once_and_each_pne_has_one_part() {
        let f = Feeds::default();
        let (a, b, c) = (PeerId::random(), PeerId::random(), PeerId::random());
        f.insert("temps", a, b"unit=C".to_vec(), b"21.5".to_vec())
            .unwrap();
        f.insert("temps", b, b"unit=C".to_vec(), b"19.0".to_vec())
            .unwrap();
        f.insert("temps", c, b"unit=F".to_vec(), b"70".to_vec())
            .unwrap();
        f.insert("temps", a, b"unit=C".to_vec(), b"22.0".to_vec())
            .unwrap();
        let agg = f.aggregate("temps").unwrap();
        assert_eq!(agg.common.len(), 2);
        assert_eq!(agg.parts.len(), 3);
        let pa = agg.parts.iter().find(|p| p.from == a).unwrap();
        assert_eq!(pa.data, b"22.0");
        assert_eq!(agg.common[pa.common as usize], b"unit=C");
        f.retain_members(|p| *p != c);
        assert_eq!(f.aggregate("temps").unwrap().common.len(), 1);
        assert!(f.insert("bad name", a, vec![], vec![]).is_err());
        assert!(
            f.insert("x", a, vec![0; MAX_FEED_PART + 1], vec![])
                .is_err()
        );
    }

    #[test]
    fn a_part_opens_only_for_its_pne() {
        let (alice, bob) = (
            cpns_keys::Identity::generate(),
            cpns_keys::Identity::generate(),
        );
        let public = cpns_keys::PublicKey::from_peer_id(&alice.peer_id()).unwrap();
        let sealed = seal_to(&public, &part_aad("f", 9, &alice.peer_id()), b"alice only");
        let bytes = codec::encode(&sealed).unwrap();
        assert_eq!(open_part(&alice, "f", 9, &bytes).unwrap(), b"alice only");
        assert!(open_part(&bob, "f", 9, &bytes).is_err());
        assert!(
            open_part(&alice, "f", 10, &bytes).is_err(),
            "another distribution"
        );
    }
}
