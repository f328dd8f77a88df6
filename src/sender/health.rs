//! What an app's sender has seen lately, for the dashboard's app card and `/readyz`:
//! sends a second, error classes over the last minutes, the last error, and whether the
//! app is healthy. An app is unhealthy from an answer that no retry can fix because the
//! app itself is misconfigured (THIRD_PARTY_AUTH_ERROR: its APNs credentials in Firebase;
//! SENDER_ID_MISMATCH: tokens of another project; for an APNs app, INVALID_PROVIDER_TOKEN:
//! its key, key id or team id, and BAD_TOPIC: its bundle id) until a send is accepted again.
//!
//! Each node keeps its own view (its own sends); counters shared across nodes are the
//! per-port ones in Redis.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;

use crate::clock::now_ms;
use crate::fcm::ErrorClass;

/// Seconds of sends the rate is averaged over.
const RATE_WINDOW_SECS: i64 = 10;
/// Minutes of error classes kept.
const ERROR_MINUTES: i64 = 5;

/// The error classes that say the app, not the push, is wrong.
pub fn makes_unhealthy(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::ThirdPartyAuthError
            | ErrorClass::SenderIdMismatch
            | ErrorClass::InvalidProviderToken
            | ErrorClass::BadTopic
    )
}

/// One error as the app card shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SeenError {
    pub class: &'static str,
    /// Unix ms.
    pub at: i64,
    /// The provider's answer, shortened.
    pub answer: String,
}

/// An app's state as the console and `/readyz` show it.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct HealthView {
    pub healthy: bool,
    /// Why it is unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<SeenError>,
    /// Answers a second (accepted or refused), over the last ten seconds.
    pub sends_per_sec: f64,
    /// Error classes over the last five minutes, with counts.
    pub errors: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SeenError>,
    /// Set while a project quota answer holds the app back (unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowed_until: Option<i64>,
}

#[derive(Default)]
struct Seen {
    /// (unix second, answers) for the last seconds.
    seconds: VecDeque<(i64, u64)>,
    /// (unix minute, errors by class) for the last minutes.
    minutes: VecDeque<(i64, BTreeMap<&'static str, u64>)>,
    last_error: Option<SeenError>,
    unhealthy: Option<SeenError>,
    slowed_until: Option<i64>,
}

/// What one app's sender has seen; cheap to note into from every send.
#[derive(Default)]
pub struct Health {
    seen: Mutex<Seen>,
}

impl Health {
    /// Note one answer: accepted (`None`) or refused with its class and answer.
    pub fn note(&self, refused: Option<(ErrorClass, &str)>) {
        let now = now_ms();
        let Ok(mut seen) = self.seen.lock() else {
            return;
        };
        let second = now.div_euclid(1000);
        match seen.seconds.back_mut() {
            Some((s, n)) if *s == second => *n += 1,
            _ => seen.seconds.push_back((second, 1)),
        }
        while seen
            .seconds
            .front()
            .is_some_and(|(s, _)| *s <= second - RATE_WINDOW_SECS)
        {
            seen.seconds.pop_front();
        }
        let Some((class, answer)) = refused else {
            seen.unhealthy = None;
            return;
        };
        let minute = now.div_euclid(60_000);
        match seen.minutes.back_mut() {
            Some((m, _)) if *m == minute => {}
            _ => seen.minutes.push_back((minute, BTreeMap::new())),
        }
        while seen
            .minutes
            .front()
            .is_some_and(|(m, _)| *m <= minute - ERROR_MINUTES)
        {
            seen.minutes.pop_front();
        }
        if let Some((_, classes)) = seen.minutes.back_mut() {
            *classes.entry(class.name()).or_default() += 1;
        }
        let error = SeenError {
            class: class.name(),
            at: now,
            answer: answer.chars().take(300).collect(),
        };
        if makes_unhealthy(class) {
            if seen.unhealthy.is_none() {
                tracing::error!(
                    class = class.name(),
                    "the app is misconfigured: marking it unhealthy until a send is accepted"
                );
            }
            seen.unhealthy = Some(error.clone());
        }
        seen.last_error = Some(error);
    }

    /// A project quota answer holds the app back until `until_ms`.
    pub fn slowed(&self, until_ms: i64) {
        if let Ok(mut seen) = self.seen.lock() {
            seen.slowed_until = Some(until_ms);
        }
    }

    pub fn view(&self) -> HealthView {
        let now = now_ms();
        let Ok(seen) = self.seen.lock() else {
            return HealthView {
                healthy: true,
                unhealthy: None,
                sends_per_sec: 0.0,
                errors: BTreeMap::new(),
                last_error: None,
                slowed_until: None,
            };
        };
        let second = now.div_euclid(1000);
        let minute = now.div_euclid(60_000);
        let answers: u64 = seen
            .seconds
            .iter()
            .filter(|(s, _)| *s > second - RATE_WINDOW_SECS && *s < second)
            .map(|(_, n)| n)
            .sum();
        let mut errors = BTreeMap::new();
        for (_, classes) in seen
            .minutes
            .iter()
            .filter(|(m, _)| *m > minute - ERROR_MINUTES)
        {
            for (class, n) in classes {
                *errors.entry(*class).or_default() += n;
            }
        }
        HealthView {
            healthy: seen.unhealthy.is_none(),
            unhealthy: seen.unhealthy.clone(),
            sends_per_sec: answers as f64 / (RATE_WINDOW_SECS - 1) as f64,
            errors,
            last_error: seen.last_error.clone(),
            slowed_until: seen.slowed_until.filter(|u| *u > now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn misconfiguration_marks_the_app_unhealthy_until_a_send_is_accepted() {
        let health = Health::default();
        assert!(health.view().healthy);
        health.note(Some((ErrorClass::Unavailable, "{}")));
        assert!(
            health.view().healthy,
            "a transient error is not the app's fault"
        );
        health.note(Some((
            ErrorClass::ThirdPartyAuthError,
            "{\"error\":\"apns\"}",
        )));
        let view = health.view();
        assert!(!view.healthy);
        assert_eq!(
            view.unhealthy.as_ref().map(|e| e.class),
            Some("THIRD_PARTY_AUTH_ERROR")
        );
        assert_eq!(view.errors.get("UNAVAILABLE"), Some(&1));
        assert_eq!(
            view.last_error.map(|e| e.class),
            Some("THIRD_PARTY_AUTH_ERROR")
        );
        health.note(None);
        assert!(health.view().healthy);
        assert_eq!(health.view().errors.len(), 2, "the error counts stay");
    }

    #[test]
    fn a_slowdown_shows_until_it_ends() {
        let health = Health::default();
        health.slowed(now_ms() + 60_000);
        assert!(health.view().slowed_until.is_some());
        health.slowed(now_ms() - 1);
        assert!(health.view().slowed_until.is_none());
    }
}
