//! `[store]`: group-commit batch size, counters' and records' lifetimes, and which
//! message field values earn a bitmap index.

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Most records written in one group-commit round trip.
    pub max_batch: usize,
    /// Per-minute counters live this long (hours).
    pub stats_ttl_hours: u64,
    /// Records older than this are removed (with their index entries); 0 = keep forever.
    pub retention_days: u64,
    /// A message field's value (`D_servicename`, `push_grp_id`) gets a bitmap index once
    /// this many records hold it (and at least highest id / 512); until then it sits in
    /// a sorted-set index, so a stranger's fresh values cost bytes, not id/8 each.
    pub bitmap_min_records: u64,
    /// Most bitmaps a message field's values may earn; beyond it a value stays in its
    /// sorted-set index (still found, only a status filter on it is bounded).
    pub bitmap_max_values: u64,
    /// Values with a bitmap from their first record (operators' known service codes),
    /// per message field: `{ D_servicename = ["TRF", "ORD"] }`. Not counted in the cap.
    pub bitmap_values: std::collections::BTreeMap<String, Vec<String>>,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_batch: 512,
            stats_ttl_hours: 48,
            retention_days: 30,
            bitmap_min_records: 1000,
            bitmap_max_values: 64,
            bitmap_values: Default::default(),
        }
    }
}

impl StoreConfig {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.max_batch == 0 {
            out.push("store.max_batch must be at least 1".into());
        }
        self.bitmap_problems(out);
    }

    /// What is wrong with the bitmap admission settings.
    fn bitmap_problems(&self, out: &mut Vec<String>) {
        if self.bitmap_min_records < 2 {
            out.push(
                "store.bitmap_min_records must be 2 or more (one record's value sits in a shared hash)"
                    .into(),
            );
        }
        for (field, values) in &self.bitmap_values {
            if !crate::push::fields::MESSAGE_BITMAP_FIELDS.contains(&field.as_str()) {
                out.push(format!(
                    "store.bitmap_values.{field}: only {} take listed values",
                    crate::push::fields::MESSAGE_BITMAP_FIELDS.join(", ")
                ));
            }
            for value in values {
                if value.is_empty() || value.trim() != value {
                    out.push(format!(
                        "store.bitmap_values.{field}: {value:?} must be non-empty without surrounding spaces (values are stored trimmed)"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PORT, parse};

    #[test]
    fn bitmap_admission_settings_are_checked() {
        let config = parse(PORT).expect("valid");
        assert_eq!(
            (
                config.store.bitmap_min_records,
                config.store.bitmap_max_values
            ),
            (1000, 64)
        );
        let listed = parse(&format!(
            "[store]\nbitmap_values = {{ D_servicename = [\"TRF\", \"ORD\"] }}\n{PORT}"
        ))
        .expect("valid");
        assert_eq!(listed.store.bitmap_values["D_servicename"], ["TRF", "ORD"]);
        let err = parse(&format!(
            "[store]\nbitmap_min_records = 1\nbitmap_values = {{ status = [\"sent\"], push_grp_id = [\" G1\"] }}\n{PORT}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("bitmap_min_records must be 2"), "{err}");
        assert!(err.contains("bitmap_values.status"), "{err}");
        assert!(err.contains("\" G1\" must be non-empty"), "{err}");
    }
}
