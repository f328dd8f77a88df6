//! Bitmap indexes of message fields: which values get one, and removing those that
//! retention emptied.
//!
//! A bitmap `bit:{field}:{value}` costs (highest id)/8 bytes however few records it
//! holds, so a value that only a message controls (`D_servicename`, `push_grp_id`) must
//! not get one just by appearing: at id 8,000,000 that is 1 MB per fresh value. Such a
//! value is indexed like a high-cardinality one (`ix:` hash, then `idx:` zset) and moved
//! into a bitmap (in the ingest script, atomically) only when
//! - it is listed in `[store] bitmap_values` (from its first record; a value listed
//!   after its zset grew past twice the threshold below keeps the zset), or
//! - it has earned one: its zset holds `max(bitmap_min_records, id / 512)` records, where
//!   the bitmap costs no more than the zset it replaces, and the field has fewer than
//!   `bitmap_max_values` earned bitmaps (the set `bitvals:{field}` names them).
//!
//! A value that has a bitmap keeps it (first-stage data included) until retention
//! empties it; then the bitmap is deleted and the value starts over in the zset. A zset
//! found beside a bitmap (a first-stage node wrote the bitmap meanwhile) is merged into
//! it on the value's next record.
//! Readers take the bitmap when it exists, else the zset/`ix:` index.

use std::collections::{HashMap, HashSet};

use super::scripts::scripts;
use super::{Store, StoreError};
use crate::config::StoreConfig;
use crate::push::fields::MESSAGE_BITMAP_FIELDS;

/// A bitmap costs (highest id)/8 bytes and a zset entry at least 64 (about 100 on Redis 7
/// beyond 128 entries), so a value held by (highest id)/512 records or more costs no more
/// as a bitmap.
pub const IDS_PER_EARNED_RECORD: u64 = 512;

/// Most ids one promotion moves, as a multiple of the threshold: a value that grew far
/// beyond it while the cap was full stays in its zset rather than stall Redis for the
/// time of a huge move when a slot frees.
pub const MAX_MOVE_FACTOR: u64 = 2;

/// When a message field's value gets a bitmap of its own (see the module doc).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    /// A value earns its bitmap at this many records (and at least highest id / 512).
    pub min_records: u64,
    /// Most earned bitmaps per field; listed values are not counted.
    pub max_values: u64,
    /// Values with a bitmap from their first record, per field.
    pub listed: HashMap<String, HashSet<String>>,
}

impl Admission {
    pub fn from_config(store: &StoreConfig) -> Admission {
        Admission {
            min_records: store.bitmap_min_records,
            max_values: store.bitmap_max_values,
            listed: store
                .bitmap_values
                .iter()
                .map(|(field, values)| (field.clone(), values.iter().cloned().collect()))
                .collect(),
        }
    }

    pub fn is_listed(&self, field: &str, value: &str) -> bool {
        self.listed
            .get(field)
            .is_some_and(|values| values.contains(value))
    }
}

impl Default for Admission {
    fn default() -> Self {
        Admission::from_config(&StoreConfig::default())
    }
}

/// Is `field` one whose values need admission to a bitmap?
pub fn is_message_bitmap_field(field: &str) -> bool {
    MESSAGE_BITMAP_FIELDS.contains(&field)
}

impl Store {
    /// This store with bitmap admission from `[store]` (the default until called).
    pub fn with_admission(mut self, admission: Admission) -> Store {
        self.admission = std::sync::Arc::new(admission);
        self
    }

    /// Does `field == value` have a bitmap (rather than a zset/`ix:` index)?
    pub async fn has_bitmap(&self, field: &str, value: &str) -> Result<bool, StoreError> {
        self.query(redis::cmd("EXISTS").arg(self.key(&format!("bit:{field}:{value}"))))
            .await
    }

    /// Delete the bitmaps retention cleared bits in (the set `retention:touched`) that
    /// hold no bit any more, and unregister them. Returns how many were deleted.
    pub(super) async fn drop_emptied_bitmaps(&self) -> Result<u64, StoreError> {
        let mut dropped = 0;
        loop {
            let mut invocation = scripts().emptied_bitmaps.prepare_invoke();
            invocation.arg(&self.prefix).arg(EMPTIED_CHUNK);
            let (n, more): (u64, u8) = self.invoke(&invocation).await?;
            dropped += n;
            if more == 0 {
                return Ok(dropped);
            }
        }
    }

    /// Forget registered values whose bitmap is gone (a flush deletes keys in batches
    /// while records may arrive), so the cap counts only bitmaps that exist.
    pub(super) async fn reconcile_bitmap_registry(&self) -> Result<(), StoreError> {
        let mut invocation = scripts().bitmap_registry.prepare_invoke();
        invocation.arg(&self.prefix).arg(MESSAGE_BITMAP_FIELDS);
        let _: u64 = self.invoke(&invocation).await?;
        Ok(())
    }
}

/// Bitmaps looked at by one call of `lua/emptied_bitmaps.lua`: each check reads at most
/// the bitmap's zero bytes before its first set bit.
const EMPTIED_CHUNK: u64 = 200;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listed_values_are_per_field() {
        let mut config = StoreConfig::default();
        config
            .bitmap_values
            .insert("D_servicename".into(), vec!["TRF".into(), "ORD".into()]);
        let admission = Admission::from_config(&config);
        assert!(admission.is_listed("D_servicename", "TRF"));
        assert!(!admission.is_listed("push_grp_id", "TRF"));
        assert!(!admission.is_listed("D_servicename", "DEP"));
        assert_eq!(Admission::default().max_values, 64);
        assert_eq!(Admission::default().min_records, 1000);
    }

    #[test]
    fn only_message_fields_need_admission() {
        assert!(is_message_bitmap_field("D_servicename"));
        assert!(is_message_bitmap_field("push_grp_id"));
        for own in ["status", "fcm_send_yn", "worker"] {
            assert!(
                !is_message_bitmap_field(own),
                "{own} values are pushgate's own"
            );
        }
    }
}
