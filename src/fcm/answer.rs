//! FCM's answer to one send, and the one place that maps FCM's errors to retry classes.

use std::time::Duration;

use serde_json::Value;

/// How pushgate treats an FCM error (fcm-v1.md's table, in one place).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorClass {
    InvalidArgument,
    Unregistered,
    SenderIdMismatch,
    ThirdPartyAuthError,
    QuotaExceeded,
    Unavailable,
    Internal,
    /// 401 without an FCM error code: our access token was refused.
    Unauthenticated,
    /// Timeout, refused or reset connection: treated as UNAVAILABLE.
    Transport,
    /// Any other answer (e.g. 403 PERMISSION_DENIED for a wrong project).
    Other,
}

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The message itself is wrong, or the token is dead: fail now.
    Never,
    /// Back off exponentially with jitter (honouring Retry-After).
    Backoff,
    /// Project quota: slow the whole sender down, starting at a minute.
    Quota,
}

impl ErrorClass {
    pub fn retry(self) -> Retry {
        match self {
            ErrorClass::InvalidArgument
            | ErrorClass::Unregistered
            | ErrorClass::SenderIdMismatch
            | ErrorClass::ThirdPartyAuthError
            | ErrorClass::Other => Retry::Never,
            ErrorClass::QuotaExceeded => Retry::Quota,
            ErrorClass::Unavailable
            | ErrorClass::Internal
            | ErrorClass::Unauthenticated
            | ErrorClass::Transport => Retry::Backoff,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            ErrorClass::InvalidArgument => "INVALID_ARGUMENT",
            ErrorClass::Unregistered => "UNREGISTERED",
            ErrorClass::SenderIdMismatch => "SENDER_ID_MISMATCH",
            ErrorClass::ThirdPartyAuthError => "THIRD_PARTY_AUTH_ERROR",
            ErrorClass::QuotaExceeded => "QUOTA_EXCEEDED",
            ErrorClass::Unavailable => "UNAVAILABLE",
            ErrorClass::Internal => "INTERNAL",
            ErrorClass::Unauthenticated => "UNAUTHENTICATED",
            ErrorClass::Transport => "TRANSPORT",
            ErrorClass::Other => "OTHER",
        }
    }
}

/// Classify an error answer: the FcmError detail first, then `error.status`, then HTTP.
/// Only FCM's own UNREGISTERED detail marks a token dead: a bare 404 (a wrong endpoint
/// path, a proxy's page) is `Other`, so a misconfiguration cannot bury good tokens.
pub fn classify(http_status: u16, body: &str) -> ErrorClass {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let error = parsed.as_ref().map(|v| &v["error"]);
    let detail = error
        .and_then(|e| e["details"].as_array())
        .and_then(|details| {
            details.iter().find_map(|d| {
                let is_fcm = d["@type"]
                    .as_str()
                    .is_some_and(|t| t.ends_with("google.firebase.fcm.v1.FcmError"));
                is_fcm.then(|| d["errorCode"].as_str()).flatten()
            })
        });
    let by_code = |code: &str| match code {
        "INVALID_ARGUMENT" => Some(ErrorClass::InvalidArgument),
        "UNREGISTERED" => Some(ErrorClass::Unregistered),
        "SENDER_ID_MISMATCH" => Some(ErrorClass::SenderIdMismatch),
        "THIRD_PARTY_AUTH_ERROR" => Some(ErrorClass::ThirdPartyAuthError),
        "QUOTA_EXCEEDED" => Some(ErrorClass::QuotaExceeded),
        "UNAVAILABLE" => Some(ErrorClass::Unavailable),
        "INTERNAL" => Some(ErrorClass::Internal),
        _ => None,
    };
    if let Some(class) = detail.and_then(by_code) {
        return class;
    }
    let status = error.and_then(|e| e["status"].as_str());
    let by_status = match status {
        Some("INVALID_ARGUMENT") => Some(ErrorClass::InvalidArgument),

        Some("UNAUTHENTICATED") => Some(ErrorClass::Unauthenticated),
        Some("RESOURCE_EXHAUSTED") => Some(ErrorClass::QuotaExceeded),
        Some("UNAVAILABLE") => Some(ErrorClass::Unavailable),
        Some("INTERNAL") => Some(ErrorClass::Internal),
        _ => None,
    };
    if let Some(class) = by_status {
        return class;
    }
    match http_status {
        400 => ErrorClass::InvalidArgument,
        401 => ErrorClass::Unauthenticated,
        429 => ErrorClass::QuotaExceeded,
        500 => ErrorClass::Internal,
        502..=504 => ErrorClass::Unavailable,
        _ => ErrorClass::Other,
    }
}

/// FCM's answer to one send.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Accepted {
        /// FCM's answer (`{"name": "projects/{project}/messages/{id}"}`), kept on the record.
        body: String,
    },
    Refused {
        class: ErrorClass,
        /// HTTP status, 0 when no answer came.
        http: u16,
        body: String,
        retry_after: Option<Duration>,
    },
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn envelope(http: u16, status: &str, code: Option<&str>) -> String {
        let details = code
            .map(|c| json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}]))
            .unwrap_or(json!([]));
        json!({"error": {"code": http, "message": "m", "status": status, "details": details}})
            .to_string()
    }

    #[test]
    fn every_error_of_the_table_maps_to_its_class_and_retry_policy() {
        let cases = [
            (
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                ErrorClass::InvalidArgument,
                Retry::Never,
            ),
            (
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                ErrorClass::Unregistered,
                Retry::Never,
            ),
            (
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                ErrorClass::SenderIdMismatch,
                Retry::Never,
            ),
            (
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                ErrorClass::ThirdPartyAuthError,
                Retry::Never,
            ),
            (
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                ErrorClass::QuotaExceeded,
                Retry::Quota,
            ),
            (
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                ErrorClass::Unavailable,
                Retry::Backoff,
            ),
            (
                500,
                "INTERNAL",
                Some("INTERNAL"),
                ErrorClass::Internal,
                Retry::Backoff,
            ),
            (
                401,
                "UNAUTHENTICATED",
                None,
                ErrorClass::Unauthenticated,
                Retry::Backoff,
            ),
            (
                403,
                "PERMISSION_DENIED",
                None,
                ErrorClass::Other,
                Retry::Never,
            ),
        ];
        for (http, status, code, class, retry) in cases {
            let got = classify(http, &envelope(http, status, code));
            assert_eq!(got, class, "{http} {status} {code:?}");
            assert_eq!(got.retry(), retry, "{class:?}");
        }
    }

    #[test]
    fn the_fcm_detail_wins_over_status_and_status_over_http() {
        // A 400 whose detail says UNREGISTERED is UNREGISTERED.
        assert_eq!(
            classify(
                400,
                &envelope(400, "INVALID_ARGUMENT", Some("UNREGISTERED"))
            ),
            ErrorClass::Unregistered
        );
        // No detail: the canonical status decides.
        assert_eq!(
            classify(500, &envelope(500, "UNAVAILABLE", None)),
            ErrorClass::Unavailable
        );
        // Not JSON at all (a proxy's HTML page): the HTTP status decides.
        assert_eq!(
            classify(502, "<html>bad gateway</html>"),
            ErrorClass::Unavailable
        );
        assert_eq!(classify(429, ""), ErrorClass::QuotaExceeded);
        assert_eq!(classify(418, ""), ErrorClass::Other);
        assert_eq!(
            classify(404, "<html>not found</html>"),
            ErrorClass::Other,
            "a bare 404 kills no token"
        );
        assert_eq!(
            classify(404, &envelope(404, "NOT_FOUND", None)),
            ErrorClass::Other
        );
    }
}
