//! Delivery receipts: what the app reported of a push after it was sent.
//!
//! A receipt lives in the hash `receipts` (`{id}:delivered`, `{id}:opened` → unix ms),
//! not in `rec:{id}`: the sender writes a record whole when its outcome comes back, and
//! the app may report before that. Every read of a record overlays the hash
//! ([`Store::records`], [`Store::record_text`]), so a `push::Record` always carries its
//! receipt; the first time of each event wins, so the overlay never disagrees with a
//! copy a later whole-record write carried along.

use super::scripts::scripts;
use super::{Store, StoreError};
use crate::push::{Receipt, ReceiptEvent};

/// One receipt as posted: the push's `uniqueKey`, the event, and when (unix ms).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceiptIn {
    pub unique_key: String,
    pub event: ReceiptEvent,
    pub at_ms: i64,
}

/// What recording one receipt did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// The first receipt of this event for the push: its time is kept.
    New,
    /// That event was recorded before; the first time stays, this one is ignored.
    Repeated,
    /// No record has that `uniqueKey` (never stored, or removed by retention).
    UnknownKey,
}

impl Store {
    /// Record a batch of receipts in one round trip (each O(1)), counting them on the
    /// port each push arrived on in the minute `now_ms` falls in. `sources` are the ports
    /// and API key sources (`api-<name>`) a push may have come from: each is a bit test,
    /// and a push from none of them costs reading its record (see `receipts.lua`).
    pub async fn record_receipts(
        &self,
        receipts: &[ReceiptIn],
        sources: &[String],
        now_ms: i64,
    ) -> Result<Vec<Recorded>, StoreError> {
        if receipts.is_empty() {
            return Ok(Vec::new());
        }
        let mut invocation = scripts().receipts.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(self.stats_ttl_secs)
            .arg(now_ms.div_euclid(60_000))
            .arg(receipts.len())
            .arg(sources.len())
            .arg(sources);
        for r in receipts {
            invocation
                .arg(&r.unique_key)
                .arg(r.event.as_str())
                .arg(r.at_ms);
        }
        let answers: Vec<u8> = self.invoke(&invocation).await?;
        if answers.len() != receipts.len() {
            return Err(StoreError::Protocol(format!(
                "receipts.lua answered {} of {} receipts",
                answers.len(),
                receipts.len()
            )));
        }
        Ok(answers
            .into_iter()
            .map(|a| match a {
                1 => Recorded::New,
                2 => Recorded::Repeated,
                _ => Recorded::UnknownKey,
            })
            .collect())
    }

    /// The receipt of push `id`, if the app reported any (for the fallback sender:
    /// "no receipt within `[receipts] timeout_secs`").
    pub async fn receipt_of(&self, id: u64) -> Result<Option<Receipt>, StoreError> {
        Ok(self.receipts_of(&[id]).await?.pop().flatten())
    }

    /// The receipts of several pushes in one round trip (`HMGET`), in `ids` order.
    pub async fn receipts_of(&self, ids: &[u64]) -> Result<Vec<Option<Receipt>>, StoreError> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        self.query(&self.receipts_cmd(ids))
            .await
            .map(|times: Vec<Option<i64>>| receipts_from(&times))
    }

    /// `HMGET receipts` of both events of each id.
    pub(super) fn receipts_cmd(&self, ids: &[u64]) -> redis::Cmd {
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(self.key("receipts"));
        for id in ids {
            cmd.arg(format!("{id}:delivered"))
                .arg(format!("{id}:opened"));
        }
        cmd
    }
}

/// [`Store::receipts_cmd`]'s answer, two times per id, as one receipt per id.
pub(super) fn receipts_from(times: &[Option<i64>]) -> Vec<Option<Receipt>> {
    times
        .chunks(2)
        .map(|pair| {
            let receipt = Receipt {
                delivered_at: pair.first().copied().flatten(),
                opened_at: pair.get(1).copied().flatten(),
            };
            (!receipt.is_empty()).then_some(receipt)
        })
        .collect()
}

/// `record` with the receipt kept in the `receipts` hash laid over its own copy.
pub(super) fn overlay(record: &mut crate::push::Record, receipt: Option<Receipt>) {
    if let Some(receipt) = receipt {
        record.receipt = Some(receipt.or(record.receipt.unwrap_or_default()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_read_two_times_per_id() {
        let got = receipts_from(&[Some(5), None, None, None, None, Some(7)]);
        assert_eq!(
            got,
            [
                Some(Receipt {
                    delivered_at: Some(5),
                    opened_at: None
                }),
                None,
                Some(Receipt {
                    delivered_at: None,
                    opened_at: Some(7)
                }),
            ]
        );
    }
}
