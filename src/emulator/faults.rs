//! Failures injected on demand: random 503/429/500 answers (`Faults`), per-token forced error
//! codes and the unregistered prefix. The added latency is applied in `send`.

use rand::Rng as _;

use super::State;
use super::rejection::{ErrorCode, Rejection};

/// Parses `--fail-token PREFIX=ERRORCODE`, accepting only the codes of the FCM error table.
pub fn parse_fail_token(arg: &str) -> Result<(String, String), String> {
    let (prefix, code) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected PREFIX=ERRORCODE, got {arg:?}"))?;
    if prefix.is_empty() {
        return Err(format!("empty token prefix in {arg:?}"));
    }
    ErrorCode::parse(code)?;
    Ok((prefix.to_owned(), code.to_owned()))
}

impl State {
    pub(super) fn forced_error(&self, token: &str) -> Result<(), Rejection> {
        if let Some((prefix, code)) = self
            .fail_tokens
            .iter()
            .find(|(p, _)| token.starts_with(p.as_str()))
        {
            let msg = format!(
                "error {} forced for tokens starting with {prefix:?}",
                code.as_str()
            );
            return Err(Rejection::fcm(*code, msg));
        }
        match &self.unregistered_prefix {
            Some(prefix) if token.starts_with(prefix.as_str()) => Err(Rejection::fcm(
                ErrorCode::Unregistered,
                "Requested entity was not found.".into(),
            )),
            _ => Ok(()),
        }
    }
}

/// Randomly injected server-side failures, drawn once per send.
pub(super) struct Faults {
    pub(super) p503: f64,
    pub(super) p429: f64,
    pub(super) p500: f64,
    pub(super) retry_after: Option<u64>,
}

impl Faults {
    pub(super) fn draw(&self) -> Option<Rejection> {
        // One draw against stacked bands, so the three rates are exclusive and exact.
        let r: f64 = rand::rng().random();
        let (code, retry_after) = if r < self.p503 {
            (ErrorCode::Unavailable, self.retry_after)
        } else if r < self.p503 + self.p429 {
            (ErrorCode::QuotaExceeded, self.retry_after)
        } else if r < self.p503 + self.p429 + self.p500 {
            (ErrorCode::Internal, None)
        } else {
            return None;
        };
        let msg = format!("injected {} fault", code.as_str());
        Some(Rejection {
            retry_after,
            ..Rejection::fcm(code, msg)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Emulator;
    use crate::emulator::harness::*;
    use clap::Parser as _;
    use hyper::header::RETRY_AFTER;
    use serde_json::json;
    use std::time::{Duration, Instant};

    async fn assert_injected(
        extra: &[&str],
        http: u16,
        canonical: &str,
        code: &str,
        retry_after: Option<&str>,
    ) {
        let h = spawn(extra).await;
        let token = h.token().await;
        let response = h
            .post_send(
                "pushgate-emulator",
                Some(&token),
                &json!({"message": message("k")}),
            )
            .await;
        let header = response
            .headers()
            .get(RETRY_AFTER)
            .map(|v| v.to_str().expect("ASCII").to_owned());
        assert_eq!(header.as_deref(), retry_after);
        let (status, body) = read(response).await;
        assert_fcm_error(status, &body, http, canonical, Some(code));
        let stats = h.emulator.stats();
        assert_eq!((stats.accepted, stats.rejected.get(code)), (0, Some(&1)));
    }

    #[tokio::test]
    async fn injected_503_is_unavailable_with_retry_after() {
        assert_injected(
            &["--fail-503", "1", "--retry-after", "7"],
            503,
            "UNAVAILABLE",
            "UNAVAILABLE",
            Some("7"),
        )
        .await;
        assert_injected(
            &["--fail-503", "1"],
            503,
            "UNAVAILABLE",
            "UNAVAILABLE",
            None,
        )
        .await;
    }

    #[tokio::test]
    async fn injected_429_is_quota_exceeded_with_retry_after() {
        let args = ["--fail-429", "1", "--retry-after", "60"];
        assert_injected(
            &args,
            429,
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            Some("60"),
        )
        .await;
    }

    #[tokio::test]
    async fn injected_500_is_internal_without_retry_after() {
        assert_injected(
            &["--fail-500", "1", "--retry-after", "7"],
            500,
            "INTERNAL",
            "INTERNAL",
            None,
        )
        .await;
    }

    #[tokio::test]
    async fn faults_come_after_authentication_and_before_validation() {
        let h = spawn(&["--fail-503", "1"]).await;
        let (status, body) = read(
            h.post_send("pushgate-emulator", None, &json!({"message": message("k")}))
                .await,
        )
        .await;
        assert_fcm_error(status, &body, 401, "UNAUTHENTICATED", None);
        let (status, body) = h.send(json!({"topic": "/topics/bad"})).await;
        assert_fcm_error(status, &body, 503, "UNAVAILABLE", Some("UNAVAILABLE"));
    }

    #[tokio::test]
    async fn fail_token_forces_every_error_code() {
        let rules: Vec<String> = ErrorCode::ALL
            .iter()
            .map(|c| format!("bad-{0}-={0}", c.as_str()))
            .collect();
        let extra: Vec<&str> = rules
            .iter()
            .flat_map(|rule| ["--fail-token", rule.as_str()])
            .collect();
        let h = spawn(&extra).await;
        for code in ErrorCode::ALL {
            let (status, body) = h
                .send(json!({"token": format!("bad-{}-device", code.as_str())}))
                .await;
            let (http, canonical) = code.http();
            assert_fcm_error(status, &body, http.as_u16(), canonical, Some(code.as_str()));
            assert_eq!(h.emulator.stats().rejected.get(code.as_str()), Some(&1));
        }
        assert_eq!(h.send(json!({"token": "good-device"})).await.0, 200);
    }

    #[tokio::test]
    async fn unregistered_prefix_answers_unregistered() {
        let h = spawn(&["--unregistered-prefix", "dead-"]).await;
        let (status, body) = h.send(json!({"token": "dead-1234"})).await;
        assert_fcm_error(status, &body, 404, "NOT_FOUND", Some("UNREGISTERED"));
        assert_eq!(h.send(json!({"token": "alive-1234"})).await.0, 200);
        assert_eq!(
            h.send(json!({"topic": "dead-topic"})).await.0,
            200,
            "topics have no token verdicts"
        );
        assert_eq!(h.emulator.stats().rejected.get("UNREGISTERED"), Some(&1));
    }

    #[tokio::test]
    async fn latency_delays_every_send() {
        let h = spawn(&["--latency-ms", "300"]).await;
        let token = h.token().await;
        let started = Instant::now();
        let response = h
            .post_send(
                "pushgate-emulator",
                Some(&token),
                &json!({"message": message("k")}),
            )
            .await;
        assert_eq!(response.status().as_u16(), 200);
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[tokio::test]
    async fn bad_fault_arguments_are_refused() {
        assert!(parse_fail_token("dead-=UNREGISTERED").is_ok());
        assert!(parse_fail_token("dead-=NOT_A_CODE").is_err());
        assert!(parse_fail_token("=UNREGISTERED").is_err());
        assert!(Cli::try_parse_from(["emulator", "--fail-token", "x=BOGUS"]).is_err());
        let start = Emulator::start_with_key(
            args(&["--fail-503", "0.6", "--fail-429", "0.6"]),
            test_key(0),
        );
        assert_eq!(
            start.await.err().map(|e| e.kind()),
            Some(std::io::ErrorKind::InvalidInput)
        );
    }
}
