//! The gate itself: pure, given the consent and the time.

use chrono::{Months, NaiveTime, TimeZone};
use chrono_tz::Tz;

use crate::config::AdsConfig;
use crate::push::{Consent, Decision, Push};

/// What an ad's title starts with.
pub const AD_LABEL: &str = "(광고)";
/// Ad consent lapses this many years after it was given unless re-confirmed.
pub const CONSENT_YEARS: u32 = 2;
/// A consent is listed as due for re-confirmation this many days before it lapses.
pub const DUE_NOTICE_DAYS: u64 = 30;

/// What the gate makes of an ad at a given time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Send it (as labelled).
    Pass,
    /// Not before `until_ms` (the night window's end); check again then.
    Hold { until_ms: i64, reason: String },
    /// Never send it.
    Drop { reason: String },
}

/// The gate for one configuration: `[ads]` and the zone its night window is read in.
#[derive(Debug, Clone)]
pub struct AdGate {
    ads: AdsConfig,
    zone: Tz,
    night: (NaiveTime, NaiveTime),
}

impl AdGate {
    pub fn new(ads: AdsConfig, zone: Tz) -> AdGate {
        let night = ads.night();
        AdGate { ads, zone, night }
    }

    /// The gate a config asks for; none without `[ads]`.
    pub fn from_config(config: &crate::config::Config) -> Option<AdGate> {
        config
            .ads
            .clone()
            .map(|ads| AdGate::new(ads, config.zone()))
    }

    /// Whether an ad for a customer with `consent` may go out at `send_ms`, judged at
    /// `now_ms` (consent is judged now; the night window at the time it would be sent).
    pub fn check(&self, consent: Option<&Consent>, now_ms: i64, send_ms: i64) -> Verdict {
        let ad = consent.and_then(|c| c.ad.as_ref());
        match ad {
            Some(grant) if grant.given => {
                if lapsed(grant.at_ms, now_ms, self.zone) {
                    return Verdict::Drop {
                        reason: format!(
                            "ad consent from {} is over two years old",
                            self.date(grant.at_ms)
                        ),
                    };
                }
            }
            _ => {
                return Verdict::Drop {
                    reason: "no ad consent for this customer".into(),
                };
            }
        }
        let night_ok = consent
            .and_then(|c| c.night.as_ref())
            .is_some_and(|g| g.given && !lapsed(g.at_ms, now_ms, self.zone));
        if night_ok {
            return Verdict::Pass;
        }
        match self.night_end_after(send_ms) {
            Some(until_ms) => Verdict::Hold {
                until_ms,
                reason: format!(
                    "held: an ad in the night window ({}–{}) without night consent waits until {}",
                    self.ads.night_start,
                    self.ads.night_end,
                    crate::script::format_local(until_ms, self.zone, "%Y-%m-%d %H:%M")
                ),
            },
            None => Verdict::Pass,
        }
    }

    /// The gate applied to a route's decision at `now_ms`: a dropped ad becomes a drop,
    /// a held one a later send at the window's end (with the reason on the push), and
    /// every ad that may still go out is labelled. Anything but an ad is returned as is.
    pub fn apply(&self, decision: Decision, consent: Option<&Consent>, now_ms: i64) -> Decision {
        let (mut push, send_ms) = match decision {
            Decision::Send { push } if push.is_ad() => (push, now_ms),
            Decision::Later { at_ms, push } if push.is_ad() => (push, at_ms.max(now_ms)),
            other => return other,
        };
        match self.check(consent, now_ms, send_ms) {
            Verdict::Drop { reason } => Decision::Drop { reason },
            Verdict::Hold { until_ms, reason } => {
                self.label(&mut push);
                push.held = Some(reason);
                Decision::Later {
                    at_ms: until_ms,
                    push,
                }
            }
            Verdict::Pass => {
                self.label(&mut push);
                if send_ms > now_ms {
                    Decision::Later {
                        at_ms: send_ms,
                        push,
                    }
                } else {
                    Decision::Send { push }
                }
            }
        }
    }

    /// "(광고)" in front of the title and the sender and opt-out line after the body, each
    /// only once (a held ad is labelled when routed and not again when it comes due).
    pub fn label(&self, push: &mut Push) {
        let title = push.title.take().unwrap_or_default();
        push.title = Some(if title.starts_with(AD_LABEL) {
            title
        } else if title.is_empty() {
            AD_LABEL.to_owned()
        } else {
            format!("{AD_LABEL} {title}")
        });
        let footer = format!("{} {}", self.ads.sender, self.ads.opt_out);
        let body = push.body.take().unwrap_or_default();
        push.body = Some(if body.ends_with(&footer) {
            body
        } else if body.is_empty() {
            footer
        } else {
            format!("{body}\n{footer}")
        });
    }

    /// The zone the night window and dates are read in.
    pub fn zone(&self) -> Tz {
        self.zone
    }

    /// When the night window holding `at_ms` closes; none when `at_ms` is outside it.
    fn night_end_after(&self, at_ms: i64) -> Option<i64> {
        let local = self.zone.timestamp_millis_opt(at_ms).single()?;
        let (start, end) = self.night;
        let t = local.time();
        let inside = if start > end {
            t >= start || t < end
        } else {
            start <= t && t < end
        };
        if !inside {
            return None;
        }
        let mut day = local.date_naive();
        if t >= end {
            day = day.succ_opt()?;
        }
        let end_local = day.and_time(end);
        self.zone
            .from_local_datetime(&end_local)
            .earliest()
            .map(|d| d.timestamp_millis())
    }

    fn date(&self, ms: i64) -> String {
        crate::script::format_local(ms, self.zone, "%Y-%m-%d")
    }
}

/// Whether a consent given at `given_ms` has lapsed at `now_ms` ([`CONSENT_YEARS`] later,
/// by the calendar in `zone`).
pub fn lapsed(given_ms: i64, now_ms: i64, zone: Tz) -> bool {
    lapses_at(given_ms, zone).is_some_and(|at| now_ms >= at)
}

/// When a consent given at `given_ms` lapses.
pub fn lapses_at(given_ms: i64, zone: Tz) -> Option<i64> {
    let given = zone.timestamp_millis_opt(given_ms).single()?;
    given
        .checked_add_months(Months::new(12 * CONSENT_YEARS))
        .map(|d| d.timestamp_millis())
}

/// Consents given at or before this are due for re-confirmation at `now_ms`: lapsed,
/// or lapsing within [`DUE_NOTICE_DAYS`].
pub fn due_cutoff(now_ms: i64, zone: Tz) -> i64 {
    let Some(now) = zone.timestamp_millis_opt(now_ms).single() else {
        return now_ms;
    };
    let soon = now + chrono::Duration::days(DUE_NOTICE_DAYS as i64);
    soon.checked_sub_months(Months::new(12 * CONSENT_YEARS))
        .map_or(now_ms, |d| d.timestamp_millis())
        .min(now_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::{Grant, Kind, Target};

    fn gate() -> AdGate {
        AdGate::new(
            toml::from_str("sender = \"pushgate은행\"\nopt_out = \"무료수신거부 080-000-0000\"")
                .expect("ads"),
            chrono_tz::Asia::Seoul,
        )
    }

    /// Unix ms of a local Seoul time.
    fn seoul(y: i32, m: u32, d: u32, h: u32, min: u32) -> i64 {
        chrono_tz::Asia::Seoul
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .single()
            .expect("a Seoul time")
            .timestamp_millis()
    }

    fn grant(given: bool, at_ms: i64) -> Option<Grant> {
        Some(Grant {
            given,
            at_ms,
            channel: "app".into(),
        })
    }

    fn ad() -> Push {
        Push {
            title: Some("특판 예금".into()),
            body: Some("연 5%".into()),
            kind: Some(Kind::Ad),
            ..Push::new(Target::Token("t".into()))
        }
    }

    #[test]
    fn an_ad_without_consent_or_with_a_withdrawn_one_is_dropped() {
        let noon = seoul(2026, 3, 2, 12, 0);
        let send = Decision::Send { push: ad() };
        let dropped = Decision::Drop {
            reason: "no ad consent for this customer".into(),
        };
        assert_eq!(gate().apply(send.clone(), None, noon), dropped);
        let withdrawn = Consent {
            ad: grant(false, noon - 1000),
            night: grant(true, noon - 1000),
        };
        assert_eq!(gate().apply(send, Some(&withdrawn), noon), dropped);
    }

    #[test]
    fn consent_over_two_years_old_is_absent_and_names_its_date() {
        let now = seoul(2026, 3, 2, 12, 0);
        let old = Consent {
            ad: grant(true, seoul(2024, 3, 1, 9, 0)),
            night: None,
        };
        assert_eq!(
            gate().apply(Decision::Send { push: ad() }, Some(&old), now),
            Decision::Drop {
                reason: "ad consent from 2024-03-01 is over two years old".into()
            }
        );
        let recent = Consent {
            ad: grant(true, seoul(2024, 3, 3, 9, 0)),
            night: None,
        };
        assert!(matches!(
            gate().apply(Decision::Send { push: ad() }, Some(&recent), now),
            Decision::Send { .. }
        ));
    }

    #[test]
    fn an_ad_at_22_without_night_consent_is_held_to_08_and_labelled() {
        let at_22 = seoul(2026, 3, 2, 22, 0);
        let consent = Consent {
            ad: grant(true, seoul(2026, 1, 1, 9, 0)),
            night: None,
        };
        let Decision::Later { at_ms, push } =
            gate().apply(Decision::Send { push: ad() }, Some(&consent), at_22)
        else {
            panic!("held");
        };
        assert_eq!(at_ms, seoul(2026, 3, 3, 8, 0));
        assert!(
            push.held
                .as_deref()
                .is_some_and(|h| h.contains("2026-03-03 08:00"))
        );
        assert_eq!(push.title.as_deref(), Some("(광고) 특판 예금"));
        // After midnight the window ends the same morning; at 08:00 it has ended.
        let at_3 = seoul(2026, 3, 3, 3, 0);
        assert_eq!(
            gate().check(Some(&consent), at_3, at_3),
            Verdict::Hold {
                until_ms: seoul(2026, 3, 3, 8, 0),
                reason: "held: an ad in the night window (21:00–08:00) without night consent waits until 2026-03-03 08:00".into()
            }
        );
        let at_8 = seoul(2026, 3, 3, 8, 0);
        assert_eq!(gate().check(Some(&consent), at_8, at_8), Verdict::Pass);
    }

    #[test]
    fn with_both_consents_an_ad_goes_at_once_labelled_once() {
        let at_22 = seoul(2026, 3, 2, 22, 0);
        let consent = Consent {
            ad: grant(true, seoul(2026, 1, 1, 9, 0)),
            night: grant(true, seoul(2026, 1, 1, 9, 0)),
        };
        let Decision::Send { mut push } =
            gate().apply(Decision::Send { push: ad() }, Some(&consent), at_22)
        else {
            panic!("sent");
        };
        assert_eq!(push.title.as_deref(), Some("(광고) 특판 예금"));
        assert_eq!(
            push.body.as_deref(),
            Some("연 5%\npushgate은행 무료수신거부 080-000-0000")
        );
        let once = push.clone();
        gate().label(&mut push);
        assert_eq!(push, once);
    }

    #[test]
    fn a_reserved_ad_is_judged_at_its_reserved_time_and_info_pushes_pass_untouched() {
        let noon = seoul(2026, 3, 2, 12, 0);
        let consent = Consent {
            ad: grant(true, seoul(2026, 1, 1, 9, 0)),
            night: None,
        };
        let later = Decision::Later {
            at_ms: seoul(2026, 3, 2, 23, 0),
            push: ad(),
        };
        assert!(matches!(
            gate().apply(later, Some(&consent), noon),
            Decision::Later { at_ms, .. } if at_ms == seoul(2026, 3, 3, 8, 0)
        ));
        let info = Decision::Send {
            push: Push { kind: None, ..ad() },
        };
        assert_eq!(gate().apply(info.clone(), None, noon), info);
    }

    #[test]
    fn consents_are_due_from_30_days_before_they_lapse() {
        let now = seoul(2026, 3, 2, 12, 0);
        let cutoff = due_cutoff(now, chrono_tz::Asia::Seoul);
        assert_eq!(cutoff, seoul(2024, 4, 1, 12, 0));
        assert!(lapsed(
            seoul(2024, 3, 2, 11, 0),
            now,
            chrono_tz::Asia::Seoul
        ));
        assert!(!lapsed(
            seoul(2024, 3, 2, 13, 0),
            now,
            chrono_tz::Asia::Seoul
        ));
    }
}
