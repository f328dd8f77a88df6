//! The consent registry: each customer's ad and night-ad consent in one hash field of
//! `consent` (`csno` → `ad|night`, each part `given:at_ms:channel` or empty), and
//! `consent:ad` indexing the customers whose ad consent is given by when they gave it.
//!
//! *Invariant:* a batch of pushes reads its customers' consents in one `HMGET`; the
//! re-confirmation list is one `ZRANGEBYSCORE` page (O(log N + page)); only
//! `consent_set.lua` writes either key, so the index always matches the hash.

use super::scripts::scripts;
use super::{Store, StoreError};
use crate::push::{Consent, Grant};

/// One change to one customer's consents, and what they were before it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentChange {
    pub csno: String,
    pub before: Consent,
    /// After the change (the grants it did not name kept).
    pub after: Consent,
}

impl Store {
    /// Record consent changes (each naming the grants it changes) atomically, and return
    /// each customer's consents before and after.
    pub async fn set_consents(
        &self,
        changes: &[(String, Consent)],
    ) -> Result<Vec<ConsentChange>, StoreError> {
        if changes.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = scripts().consent_set.prepare_invoke();
        invocation
            .arg(self.key("consent"))
            .arg(self.key("consent:ad"));
        for (csno, consent) in changes {
            invocation
                .arg(csno)
                .arg(encode_grant(consent.ad.as_ref()))
                .arg(encode_grant(consent.night.as_ref()));
        }
        let before: Vec<String> = self.invoke(&invocation).await?;
        Ok(changes
            .iter()
            .zip(before)
            .map(|((csno, change), before)| {
                let before = decode(&before);
                ConsentChange {
                    csno: csno.clone(),
                    after: before.merged(change),
                    before,
                }
            })
            .collect())
    }

    /// The consents of each of `csnos` (none for a customer never recorded), in one round trip.
    pub async fn consents(&self, csnos: &[&str]) -> Result<Vec<Option<Consent>>, StoreError> {
        if csnos.is_empty() {
            return Ok(Vec::new());
        }
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key("consent"));
        for csno in csnos {
            cmd.arg(*csno);
        }
        let found: Vec<Option<String>> = self.query(&cmd).await?;
        Ok(found.into_iter().map(|v| v.map(|v| decode(&v))).collect())
    }

    /// A page of the customers whose ad consent was given at or before `given_by_ms`,
    /// oldest first, with their consents.
    pub async fn consents_given_by(
        &self,
        given_by_ms: i64,
        offset: usize,
        count: usize,
    ) -> Result<Vec<(String, Consent)>, StoreError> {
        let csnos: Vec<String> = self
            .query(
                redis::cmd("ZRANGEBYSCORE")
                    .arg(self.key("consent:ad"))
                    .arg("-inf")
                    .arg(given_by_ms)
                    .arg("LIMIT")
                    .arg(offset)
                    .arg(count),
            )
            .await?;
        let refs: Vec<&str> = csnos.iter().map(String::as_str).collect();
        let consents = self.consents(&refs).await?;
        Ok(csnos
            .into_iter()
            .zip(consents)
            .filter_map(|(csno, c)| Some((csno, c?)))
            .collect())
    }
}

/// A grant's stored part; none = "" (keep what is stored).
fn encode_grant(grant: Option<&Grant>) -> String {
    grant.map_or_else(String::new, |g| {
        format!("{}:{}:{}", u8::from(g.given), g.at_ms, g.channel)
    })
}

fn decode_grant(part: &str) -> Option<Grant> {
    let mut it = part.splitn(3, ':');
    let given = match it.next()? {
        "1" => true,
        "0" => false,
        _ => return None,
    };
    let at_ms = it.next()?.parse().ok()?;
    let channel = it.next()?.to_owned();
    Some(Grant {
        given,
        at_ms,
        channel,
    })
}

/// A stored value; anything unreadable reads as no consent (the gate then drops ads).
fn decode(value: &str) -> Consent {
    let (ad, night) = value.split_once('|').unwrap_or(("", ""));
    Consent {
        ad: decode_grant(ad),
        night: decode_grant(night),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stored_form_round_trips_and_garbage_is_no_consent() {
        let consent = Consent {
            ad: Some(Grant {
                given: true,
                at_ms: 1_767_225_600_000,
                channel: "app".into(),
            }),
            night: Some(Grant {
                given: false,
                at_ms: 1_767_225_600_001,
                channel: "branch".into(),
            }),
        };
        let stored = format!(
            "{}|{}",
            encode_grant(consent.ad.as_ref()),
            encode_grant(consent.night.as_ref())
        );
        assert_eq!(stored, "1:1767225600000:app|0:1767225600001:branch");
        assert_eq!(decode(&stored), consent);
        assert_eq!(decode("garbage"), Consent::default());
        assert_eq!(decode("|1:x:app"), Consent::default());
    }
}
