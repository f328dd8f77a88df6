//! Failures injected on demand: random 503/429/500 answers (`Faults`), per-token forced error
//! codes and the unregistered prefix. The added latency is applied in `send`. Every
//! QUOTA_EXCEEDED says which quota: injected 429s and forced `QUOTA_EXCEEDED` name the
//! project, forced `QUOTA_EXCEEDED_DEVICE` names the device; all carry `--retry-after`.

use rand::Rng as _;

use super::State;
use super::rejection::{ErrorCode, Rejection};

/// The `--fail-token` verdict for a device-quota 429 (FCM itself says QUOTA_EXCEEDED).
const DEVICE_QUOTA: &str = "QUOTA_EXCEEDED_DEVICE";

/// What `--fail-token PREFIX=…` forces on the tokens starting with PREFIX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Forced {
    /// An error of FCM's table; QUOTA_EXCEEDED names the project's quota.
    Code(ErrorCode),
    /// QUOTA_EXCEEDED naming this device's quota.
    DeviceQuota,
}

impl Forced {
    pub(super) fn parse(code: &str) -> Result<Forced, String> {
        if code == DEVICE_QUOTA {
            return Ok(Forced::DeviceQuota);
        }
        ErrorCode::parse(code)
            .map(Forced::Code)
            .map_err(|e| format!("{e} (nor {DEVICE_QUOTA})"))
    }
}

/// Parses `--fail-token PREFIX=ERRORCODE`, accepting only the codes of the FCM error table
/// and QUOTA_EXCEEDED_DEVICE.
pub fn parse_fail_token(arg: &str) -> Result<(String, String), String> {
    let (prefix, code) = arg
        .split_once('=')
        .ok_or_else(|| format!("expected PREFIX=ERRORCODE, got {arg:?}"))?;
    if prefix.is_empty() {
        return Err(format!("empty token prefix in {arg:?}"));
    }
    Forced::parse(code)?;
    Ok((prefix.to_owned(), code.to_owned()))
}

impl State {
    pub(super) fn forced_error(&self, token: &str) -> Result<(), Rejection> {
        if let Some((prefix, forced)) = self
            .fail_tokens
            .iter()
            .find(|(p, _)| token.starts_with(p.as_str()))
        {
            let why = format!("forced for tokens starting with {prefix:?}");
            let retry_after = self.faults.retry_after;
            return Err(match *forced {
                Forced::Code(ErrorCode::QuotaExceeded) => Rejection::project_quota(
                    &self.project,
                    format!("error QUOTA_EXCEEDED {why}"),
                    retry_after,
                ),
                Forced::Code(code) => {
                    Rejection::fcm(code, format!("error {} {why}", code.as_str()))
                }
                Forced::DeviceQuota => Rejection::device_quota(token, why, retry_after),
            });
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
    /// One send's fate; a 429 names `project`'s quota.
    pub(super) fn draw(&self, project: &str) -> Option<Rejection> {
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
        Some(match code {
            ErrorCode::QuotaExceeded => Rejection::project_quota(project, msg, retry_after),
            _ => Rejection {
                retry_after,
                ..Rejection::fcm(code, msg)
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::Emulator;
    use crate::emulator::harness::*;
    use crate::fcm::{
        Answer, Credentials, ErrorClass, FcmClient, Message as FcmMessage, QuotaScope,
        ServiceAccount, quota_scope,
    };
    use crate::push::Push;
    use clap::Parser as _;
    use hyper::header::RETRY_AFTER;
    use serde_json::json;
    use std::collections::BTreeMap;
    use std::sync::Arc;
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
    async fn injected_429_is_a_project_quota_answer_with_retry_after() {
        let args = ["--fail-429", "1", "--retry-after", "60"];
        assert_injected(
            &args,
            429,
            "RESOURCE_EXHAUSTED",
            "QUOTA_EXCEEDED",
            Some("60"),
        )
        .await;
        let h = spawn(&["--fail-429", "1"]).await;
        let (status, body) = h.send(message("k")).await;
        let description = assert_quota_answer(status, &body, "project:pushgate-emulator");
        assert!(description.starts_with("Message rate exceeded"), "{body}");
        assert_eq!(quota_scope(&body.to_string()), QuotaScope::Project);
        let stats = h.emulator.stats();
        assert_eq!(stats.quota, BTreeMap::from([("project".to_owned(), 1)]));
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
    async fn fail_token_forces_a_quota_answer_naming_the_device_or_the_project() {
        let h = spawn(&[
            "--fail-token",
            "hot-=QUOTA_EXCEEDED_DEVICE",
            "--fail-token",
            "busy-=QUOTA_EXCEEDED",
            "--retry-after",
            "30",
        ])
        .await;
        let token = h.token().await;
        let send = |target: &'static str| {
            let body = json!({"message": {"token": target}});
            let (h, token) = (&h, &token);
            async move { h.post_send("pushgate-emulator", Some(token), &body).await }
        };

        let response = send("hot-device-7").await;
        assert_eq!(
            response.headers().get(RETRY_AFTER).map(|v| v.as_bytes()),
            Some(&b"30"[..])
        );
        let (status, body) = read(response).await;
        let description = assert_quota_answer(status, &body, "device:hot-device-7");
        assert!(
            description.starts_with("Device message rate exceeded"),
            "{body}"
        );
        assert_eq!(quota_scope(&body.to_string()), QuotaScope::Device);

        let (status, body) = read(send("busy-device-1").await).await;
        assert_quota_answer(status, &body, "project:pushgate-emulator");
        assert_eq!(quota_scope(&body.to_string()), QuotaScope::Project);

        assert_eq!(read(send("cool-device").await).await.0, 200);
        let stats = h.emulator.stats();
        assert_eq!(stats.rejected.get("QUOTA_EXCEEDED"), Some(&2));
        assert_eq!(
            stats.quota,
            BTreeMap::from([("device".to_owned(), 1), ("project".to_owned(), 1)])
        );
    }

    #[tokio::test]
    async fn app_level_errors_have_the_status_codes_of_fcm_v1() {
        // fcm-v1.md: THIRD_PARTY_AUTH_ERROR is 401, SENDER_ID_MISMATCH 403.
        let h = spawn(&[
            "--fail-token",
            "apns-=THIRD_PARTY_AUTH_ERROR",
            "--fail-token",
            "other-=SENDER_ID_MISMATCH",
        ])
        .await;
        let (status, body) = h.send(json!({"token": "apns-1"})).await;
        assert_fcm_error(
            status,
            &body,
            401,
            "UNAUTHENTICATED",
            Some("THIRD_PARTY_AUTH_ERROR"),
        );
        let (status, body) = h.send(json!({"token": "other-1"})).await;
        assert_fcm_error(
            status,
            &body,
            403,
            "PERMISSION_DENIED",
            Some("SENDER_ID_MISMATCH"),
        );
    }

    /// A push to `token` as the sender builds it.
    fn push_to(token: &str) -> Push {
        serde_json::from_value(json!({"target": {"token": token}, "data": {"uniqueKey": token}}))
            .expect("a push")
    }

    #[tokio::test]
    async fn the_client_reads_each_forced_answer_as_its_class_and_quota() {
        let h = spawn(&[
            "--fail-token",
            "apns-=THIRD_PARTY_AUTH_ERROR",
            "--fail-token",
            "other-=SENDER_ID_MISMATCH",
            "--fail-token",
            "hot-=QUOTA_EXCEEDED_DEVICE",
            "--fail-token",
            "busy-=QUOTA_EXCEEDED",
            "--retry-after",
            "5",
        ])
        .await;
        let account: ServiceAccount =
            serde_json::from_value(h.service_account.clone()).expect("service account");
        let http = client(true);
        let credentials = Arc::new(Credentials::new(account, http.clone()));
        let fcm = FcmClient::new(http, &h.url(""), credentials);
        let cases = [
            ("apns-1", ErrorClass::ThirdPartyAuthError, 401, None, None),
            ("other-1", ErrorClass::SenderIdMismatch, 403, None, None),
            (
                "hot-1",
                ErrorClass::QuotaExceeded,
                429,
                Some(QuotaScope::Device),
                Some(Duration::from_secs(5)),
            ),
            (
                "busy-1",
                ErrorClass::QuotaExceeded,
                429,
                Some(QuotaScope::Project),
                Some(Duration::from_secs(5)),
            ),
        ];
        for (token, class, http, quota, retry_after) in cases {
            let push = push_to(token);
            let answer = fcm.send(&FcmMessage::for_push(&push), false).await;
            let Answer::Refused {
                class: got_class,
                http: got_http,
                quota: got_quota,
                retry_after: got_retry_after,
                ..
            } = answer
            else {
                panic!("{token} was accepted");
            };
            assert_eq!(
                (got_class, got_http, got_quota, got_retry_after),
                (class, http, quota, retry_after),
                "{token}"
            );
        }
        // A 401 that is FCM's THIRD_PARTY_AUTH_ERROR is not our access token refused:
        // no token was bought again to resend it.
        assert_eq!(h.emulator.stats().tokens_issued, 1);
        let push = push_to("fine-1");
        assert!(matches!(
            fcm.send(&FcmMessage::for_push(&push), false).await,
            Answer::Accepted { .. }
        ));
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
        assert!(parse_fail_token("hot-=QUOTA_EXCEEDED_DEVICE").is_ok());
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
