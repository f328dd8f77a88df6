//! Retention: records older than the cut-off leave Redis with every index entry that
//! points at them, in small batches (one short Lua call each), oldest first. A record
//! with `legal_hold: true` stays. A bitmap left without a set bit is deleted at the end
//! of the pass (its size is the highest id / 8 however empty it is).

use crate::push::Record;

use super::scripts::scripts;
use super::{Store, StoreError};
use crate::push::fields::{MESSAGE_BITMAP_FIELDS, OWN_BITMAP_FIELDS, ZSET_FIELDS};

/// What one pass removed.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pruned {
    pub removed: u64,
    pub held: u64,
    /// Bitmaps deleted because no record is left in them.
    pub emptied_bitmaps: u64,
}

impl Store {
    /// Remove records received before `cutoff_ms`, at most `batch` ids per round trip,
    /// until none is left. Ids below `retention:next` have been looked at already.
    pub async fn prune(&self, cutoff_ms: i64, batch: u64) -> Result<Pruned, StoreError> {
        let last_old = self.id_window(None, Some(cutoff_ms - 1)).await?.hi;
        let mut total = Pruned::default();
        loop {
            let mut invocation = scripts().prune.prepare_invoke();
            invocation
                .arg(&self.prefix)
                .arg(last_old)
                .arg(batch)
                .arg(ZSET_FIELDS.join(","))
                .arg(OWN_BITMAP_FIELDS.join(","))
                .arg(MESSAGE_BITMAP_FIELDS.join(","));
            let (removed, held, more): (u64, u64, u8) = self.invoke(&invocation).await?;
            total.removed += removed;
            total.held += held;
            if more == 0 {
                // Also finishes what an interrupted pass left in `retention:touched`.
                total.emptied_bitmaps = self.drop_emptied_bitmaps().await?;
                return Ok(total);
            }
        }
    }

    /// Set or clear `legal_hold` on a record (retrying while the sender changes it).
    /// Returns the record as stored, or None when there is no such record.
    pub async fn set_hold(&self, id: u64, hold: bool) -> Result<Option<Record>, StoreError> {
        for _ in 0..10 {
            let Some((text, mut record)) = self.record_text(id).await? else {
                return Ok(None);
            };
            record.legal_hold = hold;
            let mut invocation = scripts().swap.prepare_invoke();
            invocation
                .arg(self.key(&format!("rec:{id}")))
                .arg(&text)
                .arg(super::record::encode(&record));
            let applied: i64 = self.invoke(&invocation).await?;
            if applied == 1 {
                return Ok(Some(record));
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        Err(StoreError::Protocol(format!(
            "record {id} kept changing; try again"
        )))
    }
}
