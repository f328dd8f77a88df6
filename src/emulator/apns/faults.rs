//! Failures injected on demand: random 503/429/500 answers (`Faults`), and per-device-token
//! verdicts (`--fail-token PREFIX=REASON`, `--unregistered-prefix`). The added latency is
//! applied by the caller. Prefixes must be hex, since no valid device token has another
//! character: a prefix that could never match is refused at start, not silently unused.

use rand::Rng as _;

use super::reason::{Reason, Refusal};

/// Parses `--fail-token PREFIX=REASON`: a hex prefix and one of Apple's reasons.
pub fn parse_fail_token(arg: &str) -> Result<(String, String), String> {
    let (prefix, reason) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected PREFIX=REASON, got {arg:?}"))?;
    check_prefix(prefix)?;
    Reason::parse_apple(reason)?;
    Ok((prefix.to_ascii_lowercase(), reason.to_owned()))
}

/// A device-token prefix: non-empty hex.
pub(super) fn check_prefix(prefix: &str) -> Result<(), String> {
    if prefix.is_empty() || !prefix.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "device-token prefix {prefix:?} must be hex digits, as device tokens are"
        ));
    }
    Ok(())
}

/// The per-token verdicts.
pub(super) struct TokenVerdicts {
    /// (lower-case prefix, reason), first match wins.
    pub(super) forced: Vec<(String, Reason)>,
    /// Lower case.
    pub(super) unregistered_prefix: Option<String>,
    /// `Retry-After` for forced 429/503.
    pub(super) retry_after: Option<u64>,
}

impl TokenVerdicts {
    /// What a valid request to `token` is answered instead of 200, at `now_ms` (unix ms).
    pub(super) fn verdict(&self, token: &str, now_ms: i64) -> Option<Refusal> {
        let token = token.to_ascii_lowercase();
        if let Some((prefix, reason)) = self.forced.iter().find(|(p, _)| token.starts_with(p)) {
            let detail = format!(
                "{} forced for tokens starting with {prefix:?}",
                reason.as_str()
            );
            let refusal = match reason {
                Reason::Unregistered => Refusal::unregistered(now_ms, detail),
                Reason::TooManyRequests | Reason::ServiceUnavailable | Reason::Shutdown => {
                    Refusal {
                        retry_after: self.retry_after,
                        ..Refusal::new(*reason, detail)
                    }
                }
                _ => Refusal::new(*reason, detail),
            };
            return Some(refusal);
        }
        match &self.unregistered_prefix {
            Some(prefix) if token.starts_with(prefix.as_str()) => Some(Refusal::unregistered(
                now_ms,
                format!("tokens starting with {prefix:?} are unregistered"),
            )),
            _ => None,
        }
    }
}

/// Randomly injected server-side failures, drawn once per request.
pub(super) struct Faults {
    pub(super) p503: f64,
    pub(super) p429: f64,
    pub(super) p500: f64,
    /// `Retry-After` seconds on injected 503 and 429.
    pub(super) retry_after: Option<u64>,
}

impl Faults {
    /// One request's fate.
    pub(super) fn draw(&self) -> Option<Refusal> {
        // One draw against stacked bands, so the three rates are exclusive and exact.
        let r: f64 = rand::rng().random();
        let (reason, retry_after) = if r < self.p503 {
            (Reason::ServiceUnavailable, self.retry_after)
        } else if r < self.p503 + self.p429 {
            (Reason::TooManyRequests, self.retry_after)
        } else if r < self.p503 + self.p429 + self.p500 {
            (Reason::InternalServerError, None)
        } else {
            return None;
        };
        Some(Refusal {
            retry_after,
            ..Refusal::new(reason, format!("injected {}", reason.as_str()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::apns::harness::*;
    use std::time::{Duration, Instant};

    #[tokio::test]
    async fn injected_503_and_429_carry_retry_after_and_500_does_not() {
        for (rate, status, reason, retry_after) in [
            ("--fail-503", 503, "ServiceUnavailable", Some("7")),
            ("--fail-429", 429, "TooManyRequests", Some("7")),
            ("--fail-500", 500, "InternalServerError", None),
        ] {
            let h = spawn(&[rate, "1", "--retry-after", "7"]).await;
            let answer = h.assert_refused(h.push(), status, reason).await;
            assert_eq!(answer.header("retry-after"), retry_after, "{reason}");
            assert_eq!(h.emulator.stats().rejected.get(reason), Some(&1));
            assert_eq!(h.emulator.stats().accepted, 0);
        }
    }

    #[tokio::test]
    async fn fault_rates_are_drawn_per_request() {
        let h = spawn(&["--fail-503", "0.5"]).await;
        let mut statuses = std::collections::BTreeMap::<u16, u32>::new();
        for _ in 0..200 {
            *statuses.entry(h.send(h.push()).await.status).or_default() += 1;
        }
        // 200 draws at one half: both outcomes, each far from all or nothing.
        assert_eq!(statuses.keys().copied().collect::<Vec<_>>(), [200, 503]);
        assert!(
            statuses.values().all(|n| (50..150).contains(n)),
            "{statuses:?}"
        );
    }

    #[tokio::test]
    async fn unregistered_prefix_answers_410_with_the_time_in_unix_ms() {
        let h = spawn(&["--unregistered-prefix", "DEAD"]).await;
        let before = crate::clock::now_ms();
        let answer = h
            .assert_refused(h.push().to("dead0001"), 410, "Unregistered")
            .await;
        let timestamp = answer.json()["timestamp"].as_i64().expect("timestamp");
        assert!(
            (before..=crate::clock::now_ms()).contains(&timestamp),
            "{timestamp} is not now in ms"
        );
        h.send(h.push().to("beef0001")).await.assert_accepted();
        assert_eq!(h.emulator.stats().rejected.get("Unregistered"), Some(&1));
    }

    #[tokio::test]
    async fn fail_token_forces_every_apple_reason_with_its_status() {
        // One hex prefix per reason: "f" and the reason's index, two digits.
        let rules: Vec<String> = (Reason::APPLE.iter().enumerate())
            .map(|(i, r)| format!("f{i:02}={}", r.as_str()))
            .collect();
        let mut flags: Vec<&str> = rules.iter().flat_map(|r| ["--fail-token", r]).collect();
        flags.extend(["--retry-after", "3"]);
        let h = spawn(&flags).await;
        for (i, reason) in Reason::APPLE.iter().enumerate() {
            let token = format!("f{i:02}0123456789abcdef");
            let answer = h
                .assert_refused(
                    h.push().to(&token),
                    reason.status().as_u16(),
                    reason.as_str(),
                )
                .await;
            let retry_after = matches!(
                reason,
                Reason::TooManyRequests | Reason::ServiceUnavailable | Reason::Shutdown
            )
            .then_some("3");
            assert_eq!(answer.header("retry-after"), retry_after, "{reason:?}");
            assert_eq!(h.emulator.stats().rejected.get(reason.as_str()), Some(&1));
        }
        h.send(h.push().to("e0")).await.assert_accepted();
    }

    #[tokio::test]
    async fn a_forced_verdict_comes_after_the_request_checks() {
        let h = spawn(&["--fail-token", "ab=Unregistered"]).await;
        let push = h.push().to("ab01").header("apns-priority", "3");
        h.assert_refused(push, 400, "BadPriority").await;
        h.assert_refused(h.push().to("AB01"), 410, "Unregistered")
            .await;
    }

    #[tokio::test]
    async fn latency_delays_every_request() {
        let h = spawn(&["--latency-ms", "300"]).await;
        let started = Instant::now();
        h.send(h.push()).await.assert_accepted();
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn fail_token_takes_a_hex_prefix_and_one_of_apples_reasons() {
        assert_eq!(
            parse_fail_token("DEAD=Unregistered"),
            Ok(("dead".to_owned(), "Unregistered".to_owned()))
        );
        assert!(parse_fail_token("dead=Gone").is_err());
        assert!(parse_fail_token("dead=BadPayload").is_err(), "not Apple's");
        assert!(parse_fail_token("gone-=Unregistered").is_err());
        assert!(parse_fail_token("=Unregistered").is_err());
        assert!(parse_fail_token("dead").is_err());
    }
}
