//! `[ads]`: what the ad gate adds to an advertising push (the sender's name, the free
//! opt-out line) and the night window in which an ad needs the customer's night-time
//! consent. The window is read in the top-level `zone`.

use chrono::NaiveTime;
use serde::Deserialize;

/// Longest `sender` and `opt_out`, in characters: they are appended to every ad's body.
pub const MAX_AD_LINE: usize = 100;

/// `[ads]`. With no `[ads]` section, no push may be an ad.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdsConfig {
    /// Who advertises, appended to an ad's body (the law asks the sender be named).
    pub sender: String,
    /// How to opt out free of charge, appended after the sender
    /// (e.g. "무료수신거부 080-123-4567").
    pub opt_out: String,
    /// Local time (`HH:MM`) the night window opens: from then an ad needs night consent.
    #[serde(default = "default_night_start")]
    pub night_start: String,
    /// Local time (`HH:MM`) the night window closes; ads held overnight are due then.
    #[serde(default = "default_night_end")]
    pub night_end: String,
}

fn default_night_start() -> String {
    "21:00".into()
}
fn default_night_end() -> String {
    "08:00".into()
}

impl AdsConfig {
    /// The night window's opening and closing local times (checked at load).
    pub fn night(&self) -> (NaiveTime, NaiveTime) {
        let parse = |t: &str, fallback: u32| {
            NaiveTime::parse_from_str(t, "%H:%M")
                .unwrap_or_else(|_| NaiveTime::from_hms_opt(fallback, 0, 0).unwrap_or_default())
        };
        (parse(&self.night_start, 21), parse(&self.night_end, 8))
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        for (key, text) in [("sender", &self.sender), ("opt_out", &self.opt_out)] {
            let n = text.chars().count();
            if text.trim().is_empty() || n > MAX_AD_LINE || text.chars().any(char::is_control) {
                out.push(format!(
                    "ads.{key} must be 1 to {MAX_AD_LINE} characters without control characters"
                ));
            }
        }
        for (key, text) in [
            ("night_start", &self.night_start),
            ("night_end", &self.night_end),
        ] {
            if NaiveTime::parse_from_str(text, "%H:%M").is_err() {
                out.push(format!(
                    "ads.{key} = {text:?} is not a local time HH:MM (e.g. \"21:00\")"
                ));
            }
        }
        if self.night_start == self.night_end {
            out.push("ads.night_start and ads.night_end must differ".into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ads(toml_text: &str) -> AdsConfig {
        toml::from_str(toml_text).expect("ads section")
    }

    #[test]
    fn the_night_window_defaults_to_21_to_08() {
        let a = ads("sender = \"pushgate 은행\"\nopt_out = \"무료수신거부 080-000-0000\"");
        let (start, end) = a.night();
        assert_eq!(start, NaiveTime::from_hms_opt(21, 0, 0).unwrap());
        assert_eq!(end, NaiveTime::from_hms_opt(8, 0, 0).unwrap());
        let mut out = Vec::new();
        a.problems(&mut out);
        assert!(out.is_empty(), "{out:?}");
    }

    #[test]
    fn a_bad_time_or_an_empty_line_names_its_key() {
        let a = ads("sender = \"\"\nopt_out = \"x\"\nnight_start = \"9pm\"");
        let mut out = Vec::new();
        a.problems(&mut out);
        assert!(out.iter().any(|p| p.contains("ads.sender")), "{out:?}");
        assert!(out.iter().any(|p| p.contains("ads.night_start")), "{out:?}");
    }
}
