//! `[receipts]`: delivery receipts the app reports (`POST /api/v1/receipts`), and how
//! long a sent push may wait for one before the fallback ladder may act on it.

use serde::Deserialize;

/// Longest `timeout_secs`: receipts older than a day say nothing about a fallback.
pub const MAX_RECEIPT_TIMEOUT_SECS: u64 = 86_400;

/// `[receipts]`. Absent = receipts are still recorded when posted, but nothing waits
/// for them (no fallback is triggered by their absence).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiptsConfig {
    /// A push sent this long ago (seconds) without a receipt (delivered or opened) counts
    /// as not received: the signal the fallback sender acts on.
    pub timeout_secs: u64,
}

impl ReceiptsConfig {
    /// The wait as unix ms, for comparing with a record's send time.
    pub fn timeout_ms(&self) -> i64 {
        (self.timeout_secs as i64).saturating_mul(1000)
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.timeout_secs == 0 || self.timeout_secs > MAX_RECEIPT_TIMEOUT_SECS {
            out.push(format!(
                "receipts.timeout_secs must be 1..={MAX_RECEIPT_TIMEOUT_SECS}"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PORT, parse};

    #[test]
    fn receipts_are_off_unless_configured() {
        assert_eq!(parse(PORT).expect("valid").receipts, None);
        let config = parse(&format!("[receipts]\ntimeout_secs = 30\n{PORT}")).expect("valid");
        assert_eq!(config.receipts.map(|r| r.timeout_ms()), Some(30_000));
    }

    #[test]
    fn a_zero_or_huge_timeout_is_refused_by_name() {
        for secs in [0, 86_401] {
            let err = parse(&format!("[receipts]\ntimeout_secs = {secs}\n{PORT}")).unwrap_err();
            assert!(err.to_string().contains("receipts.timeout_secs"), "{err}");
        }
    }
}
