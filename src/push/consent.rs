//! A customer's advertising consents, as the ad gate reads them: whether they agreed to
//! ads at all, and to ads at night, each with when and through which channel. A
//! withdrawal is a grant with `given = false`: it is kept, with its date and channel.

use serde::{Deserialize, Serialize};

/// Longest customer number (`csno`) the registry keeps, in bytes.
pub const MAX_CSNO: usize = 32;
/// Longest channel name (`app`, `web`, `branch`, …), in bytes.
pub const MAX_CHANNEL: usize = 16;

/// One customer's ad consents. `None` = never asked (treated as no consent).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Consent {
    /// Consent to receive ads at all.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ad: Option<Grant>,
    /// Consent to receive ads in the night window (21:00–08:00 by default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub night: Option<Grant>,
}

/// One consent given or withdrawn.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Agreed (true) or withdrew (false).
    pub given: bool,
    /// When, in unix ms (the same unit as every other time pushgate keeps).
    pub at_ms: i64,
    /// Where the customer said so: 1 to [`MAX_CHANNEL`] of `a-z 0-9 _ -`.
    pub channel: String,
}

impl Consent {
    /// `other`'s grants over this one's: a change that names only `night` keeps `ad`.
    pub fn merged(&self, other: &Consent) -> Consent {
        Consent {
            ad: other.ad.clone().or_else(|| self.ad.clone()),
            night: other.night.clone().or_else(|| self.night.clone()),
        }
    }
}

/// Whether `csno` may name a customer in the registry: 1 to [`MAX_CSNO`] printable ASCII
/// bytes without spaces (it becomes a hash field and a zset member).
pub fn is_csno(csno: &str) -> bool {
    !csno.is_empty() && csno.len() <= MAX_CSNO && csno.bytes().all(|b| b.is_ascii_graphic())
}

/// Whether `channel` may name a channel.
pub fn is_channel(channel: &str) -> bool {
    !channel.is_empty()
        && channel.len() <= MAX_CHANNEL
        && channel
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

impl Grant {
    /// What is wrong with it, naming `what` (`ad`, `night`).
    pub fn problem(&self, what: &str) -> Option<String> {
        if !is_channel(&self.channel) {
            return Some(format!(
                "{what}.channel must be 1 to {MAX_CHANNEL} of a-z, 0-9, _ and -, got {:?}",
                self.channel.chars().take(40).collect::<String>()
            ));
        }
        if self.at_ms <= 0 {
            return Some(format!("{what}.at_ms must be unix milliseconds above 0"));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant(given: bool, at_ms: i64) -> Grant {
        Grant {
            given,
            at_ms,
            channel: "app".into(),
        }
    }

    #[test]
    fn a_change_naming_only_night_keeps_the_ad_consent() {
        let old = Consent {
            ad: Some(grant(true, 1)),
            night: None,
        };
        let change = Consent {
            ad: None,
            night: Some(grant(false, 2)),
        };
        let merged = old.merged(&change);
        assert_eq!(merged.ad, Some(grant(true, 1)));
        assert_eq!(merged.night, Some(grant(false, 2)));
    }

    #[test]
    fn customer_numbers_and_channels_are_bounded() {
        assert!(is_csno("1234567890"));
        assert!(!is_csno(""));
        assert!(!is_csno(&"9".repeat(MAX_CSNO + 1)));
        assert!(!is_csno("12 34"));
        assert!(is_channel("branch"));
        assert!(!is_channel("Branch"));
        assert!(!is_channel(&"a".repeat(MAX_CHANNEL + 1)));
        assert!(grant(true, 1).problem("ad").is_none());
        assert!(grant(true, 0).problem("ad").is_some());
    }
}
