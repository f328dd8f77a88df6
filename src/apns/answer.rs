//! Apple's answer to one push, and the one place that maps Apple's reasons (apns.md's
//! answer table) to pushgate's error classes, the same classes FCM's errors map to.

use std::time::Duration;

use serde::Deserialize;
use serde_json::json;

use crate::fcm::{Answer, ErrorClass, QuotaScope};

/// The longest part of an answer's body kept on the record.
const KEPT_BODY_CHARS: usize = 2000;

/// An error answer's body: `{"reason": "...", "timestamp": ms}` (the timestamp only
/// with 410).
#[derive(Deserialize)]
struct ErrorBody {
    reason: Option<String>,
    timestamp: Option<i64>,
}

fn error_body(body: &str) -> Option<ErrorBody> {
    serde_json::from_str(body).ok()
}

/// The class of an error answer, from Apple's `reason` first and its HTTP status when
/// there is none (a proxy's page, an empty body). Only Apple's own reasons mark a token
/// dead: a bare 400 or 410 is not enough, so a misconfiguration cannot bury good tokens.
pub fn classify(http: u16, reason: Option<&str>) -> ErrorClass {
    let by_reason = reason.and_then(|reason| {
        Some(match reason {
            "BadDeviceToken" | "DeviceTokenNotForTopic" => ErrorClass::BadDeviceToken,
            "Unregistered" | "ExpiredToken" => ErrorClass::Unregistered,
            "BadTopic" | "MissingTopic" | "TopicDisallowed" => ErrorClass::BadTopic,
            "ExpiredProviderToken" | "InvalidProviderToken" | "MissingProviderToken" => {
                ErrorClass::InvalidProviderToken
            }
            "PayloadTooLarge" => ErrorClass::PayloadTooLarge,
            "TooManyRequests" | "TooManyProviderTokenUpdates" => ErrorClass::QuotaExceeded,
            "InternalServerError" => ErrorClass::Internal,
            "ServiceUnavailable" | "Shutdown" => ErrorClass::Unavailable,
            // Every other reason of a 400 says the request itself is wrong.
            _ if http == 400 => ErrorClass::InvalidArgument,
            _ => return None,
        })
    });
    by_reason.unwrap_or(match http {
        400 => ErrorClass::InvalidArgument,
        413 => ErrorClass::PayloadTooLarge,
        429 => ErrorClass::QuotaExceeded,
        500 => ErrorClass::Internal,
        502..=504 => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    })
}

/// Which quota a 429 names: TooManyRequests is one device's; TooManyProviderTokenUpdates
/// (or a 429 that says nothing) holds the whole app back.
pub fn quota_scope(reason: Option<&str>) -> QuotaScope {
    match reason {
        Some("TooManyRequests") => QuotaScope::Device,
        _ => QuotaScope::Project,
    }
}

/// When Apple says a 410's token stopped being valid (unix ms, the body's `timestamp`),
/// never later than `now_ms`; `None` for any other answer.
pub fn unregistered_at(body: &str, now_ms: i64) -> Option<i64> {
    let error = error_body(body)?;
    matches!(
        error.reason.as_deref(),
        Some("Unregistered" | "ExpiredToken")
    )
    .then_some(error.timestamp?)
    .map(|at| at.min(now_ms))
}

/// Apple's answer to one request as the sender reads it. 2xx is accepted, with the
/// `apns-id` (and the sandbox's `apns-unique-id`) kept as the record's answer.
pub fn read(
    http: u16,
    apns_id: Option<&str>,
    unique_id: Option<&str>,
    retry_after: Option<Duration>,
    body: &str,
) -> Answer {
    if (200..300).contains(&http) {
        let mut kept = json!({ "apns-id": apns_id.unwrap_or_default() });
        if let Some(unique) = unique_id {
            kept["apns-unique-id"] = json!(unique);
        }
        return Answer::Accepted {
            body: kept.to_string(),
        };
    }
    let reason = error_body(body).and_then(|b| b.reason);
    let class = classify(http, reason.as_deref());
    Answer::Refused {
        class,
        http,
        body: crate::fcm::truncate(body, KEPT_BODY_CHARS).to_owned(),
        retry_after,
        quota: (class == ErrorClass::QuotaExceeded).then(|| quota_scope(reason.as_deref())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fcm::Retry;

    fn refused(http: u16, reason: &str) -> Answer {
        read(
            http,
            None,
            None,
            None,
            &json!({ "reason": reason }).to_string(),
        )
    }

    /// Every row of apns.md's answer table: its class, what the sender does, and
    /// whether it buries the token or makes the app unhealthy.
    #[test]
    fn every_answer_of_apples_table_maps_to_its_class() {
        use crate::sender::health::makes_unhealthy;
        let cases: &[(u16, &str, ErrorClass, Retry)] = &[
            (
                400,
                "BadDeviceToken",
                ErrorClass::BadDeviceToken,
                Retry::Never,
            ),
            (
                400,
                "DeviceTokenNotForTopic",
                ErrorClass::BadDeviceToken,
                Retry::Never,
            ),
            (400, "BadTopic", ErrorClass::BadTopic, Retry::Never),
            (400, "MissingTopic", ErrorClass::BadTopic, Retry::Never),
            (400, "TopicDisallowed", ErrorClass::BadTopic, Retry::Never),
            (
                400,
                "BadPriority",
                ErrorClass::InvalidArgument,
                Retry::Never,
            ),
            (
                400,
                "InvalidPushType",
                ErrorClass::InvalidArgument,
                Retry::Never,
            ),
            (
                400,
                "BadExpirationDate",
                ErrorClass::InvalidArgument,
                Retry::Never,
            ),
            (
                400,
                "BadCollapseId",
                ErrorClass::InvalidArgument,
                Retry::Never,
            ),
            (
                400,
                "PayloadEmpty",
                ErrorClass::InvalidArgument,
                Retry::Never,
            ),
            (
                403,
                "ExpiredProviderToken",
                ErrorClass::InvalidProviderToken,
                Retry::Backoff,
            ),
            (
                403,
                "InvalidProviderToken",
                ErrorClass::InvalidProviderToken,
                Retry::Backoff,
            ),
            (
                403,
                "MissingProviderToken",
                ErrorClass::InvalidProviderToken,
                Retry::Backoff,
            ),
            (410, "Unregistered", ErrorClass::Unregistered, Retry::Never),
            (
                413,
                "PayloadTooLarge",
                ErrorClass::PayloadTooLarge,
                Retry::Never,
            ),
            (
                429,
                "TooManyRequests",
                ErrorClass::QuotaExceeded,
                Retry::Quota,
            ),
            (
                429,
                "TooManyProviderTokenUpdates",
                ErrorClass::QuotaExceeded,
                Retry::Quota,
            ),
            (
                500,
                "InternalServerError",
                ErrorClass::Internal,
                Retry::Backoff,
            ),
            (
                503,
                "ServiceUnavailable",
                ErrorClass::Unavailable,
                Retry::Backoff,
            ),
            (503, "Shutdown", ErrorClass::Unavailable, Retry::Backoff),
        ];
        for &(http, reason, class, retry) in cases {
            let Answer::Refused {
                class: got,
                http: kept_http,
                body,
                ..
            } = refused(http, reason)
            else {
                panic!("{http} {reason} is refused");
            };
            assert_eq!(got, class, "{http} {reason}");
            assert_eq!(got.retry(), retry, "{http} {reason}");
            assert_eq!(kept_http, http);
            assert!(body.contains(reason), "the reason is kept: {body}");
            let dead = matches!(
                reason,
                "BadDeviceToken" | "DeviceTokenNotForTopic" | "Unregistered"
            );
            assert_eq!(got.is_dead_token(), dead, "{reason}");
            let unhealthy = matches!(
                reason,
                "ExpiredProviderToken"
                    | "InvalidProviderToken"
                    | "MissingProviderToken"
                    | "BadTopic"
                    | "MissingTopic"
                    | "TopicDisallowed"
            );
            assert_eq!(makes_unhealthy(got), unhealthy, "{reason}");
        }
    }

    #[test]
    fn a_429_names_the_device_only_for_too_many_requests() {
        let quota = |answer: Answer| match answer {
            Answer::Refused { quota, .. } => quota,
            Answer::Accepted { .. } => panic!("refused"),
        };
        assert_eq!(
            quota(refused(429, "TooManyRequests")),
            Some(QuotaScope::Device)
        );
        assert_eq!(
            quota(refused(429, "TooManyProviderTokenUpdates")),
            Some(QuotaScope::Project),
            "a token refreshed too often holds the whole app back"
        );
        assert_eq!(
            quota(read(429, None, None, None, "")),
            Some(QuotaScope::Project)
        );
        assert_eq!(quota(refused(503, "ServiceUnavailable")), None);
    }

    #[test]
    fn success_keeps_the_apns_id_and_retry_after_is_passed_on() {
        assert_eq!(
            read(
                200,
                Some("7c5bb5b4-6a41-4d6d-a6cf-5a0f0b0e1a2b"),
                None,
                None,
                ""
            ),
            Answer::Accepted {
                body: r#"{"apns-id":"7c5bb5b4-6a41-4d6d-a6cf-5a0f0b0e1a2b"}"#.into()
            }
        );
        let Answer::Accepted { body } = read(200, Some("a"), Some("u"), None, "") else {
            panic!("accepted");
        };
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&body).unwrap(),
            json!({"apns-id": "a", "apns-unique-id": "u"})
        );
        let Answer::Refused { retry_after, .. } = read(
            503,
            None,
            None,
            Some(Duration::from_secs(7)),
            r#"{"reason":"ServiceUnavailable"}"#,
        ) else {
            panic!("refused");
        };
        assert_eq!(retry_after, Some(Duration::from_secs(7)));
    }

    #[test]
    fn without_apples_reason_the_status_decides_and_buries_no_token() {
        let cases = [
            (410, "", ErrorClass::Other),
            (410, "<html>gone</html>", ErrorClass::Other),
            (400, "", ErrorClass::InvalidArgument),
            (
                400,
                r#"{"reason":"SomethingNew"}"#,
                ErrorClass::InvalidArgument,
            ),
            (413, "", ErrorClass::PayloadTooLarge),
            (429, "", ErrorClass::QuotaExceeded),
            (500, "", ErrorClass::Internal),
            (502, "<html>bad gateway</html>", ErrorClass::Unavailable),
            (503, "", ErrorClass::Unavailable),
            (403, r#"{"reason":"Forbidden"}"#, ErrorClass::Other),
            (404, r#"{"reason":"BadPath"}"#, ErrorClass::Other),
        ];
        for (http, body, class) in cases {
            let Answer::Refused { class: got, .. } = read(http, None, None, None, body) else {
                panic!("{http} is refused");
            };
            assert_eq!(got, class, "{http} {body}");
            assert!(!got.is_dead_token(), "{http} {body}");
        }
    }

    #[test]
    fn an_unregistered_answer_says_since_when_and_never_in_the_future() {
        let now = 1_700_000_000_000;
        let body = r#"{"reason":"Unregistered","timestamp":1699990000000}"#;
        assert_eq!(unregistered_at(body, now), Some(1_699_990_000_000));
        let future = r#"{"reason":"Unregistered","timestamp":1800000000000}"#;
        assert_eq!(unregistered_at(future, now), Some(now));
        assert_eq!(unregistered_at(r#"{"reason":"Unregistered"}"#, now), None);
        assert_eq!(
            unregistered_at(r#"{"reason":"BadDeviceToken","timestamp":1}"#, now),
            None
        );
        assert_eq!(unregistered_at("not json", now), None);
    }
}
