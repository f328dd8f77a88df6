//! FCM's answer to one send, and the one place that maps FCM's errors to retry classes
//! and QUOTA_EXCEEDED answers to the quota they name.

use std::time::Duration;

use serde_json::Value;

/// How pushgate treats a provider's error (fcm-v1.md's table here, apns.md's in
/// `apns::answer`): one set of classes, so the sender retries both providers alike.
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
    /// (APNs) 400 BadDeviceToken or DeviceTokenNotForTopic: the token is no use to this
    /// app, as dead as an unregistered one.
    BadDeviceToken,
    /// (APNs) 403 ExpiredProviderToken, InvalidProviderToken or MissingProviderToken even
    /// after one new token: the key, key id, team id or clock is wrong.
    InvalidProviderToken,
    /// (APNs) 400 BadTopic, MissingTopic or TopicDisallowed: the app's `topic` (bundle
    /// id) is wrong for its key.
    BadTopic,
    /// (APNs) 413 PayloadTooLarge.
    PayloadTooLarge,
}

/// What to do after an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// The message itself is wrong, or the token is dead: fail now.
    Never,
    /// Back off exponentially with jitter (honouring Retry-After).
    Backoff,
    /// A quota was hit: the answer's [`QuotaScope`] says whether one device or the whole
    /// app must slow down; without Retry-After the backoff starts at a minute.
    Quota,
}

impl ErrorClass {
    pub fn retry(self) -> Retry {
        match self {
            ErrorClass::InvalidArgument
            | ErrorClass::Unregistered
            | ErrorClass::SenderIdMismatch
            | ErrorClass::ThirdPartyAuthError
            | ErrorClass::Other
            | ErrorClass::BadDeviceToken
            | ErrorClass::BadTopic
            | ErrorClass::PayloadTooLarge => Retry::Never,
            ErrorClass::QuotaExceeded => Retry::Quota,
            ErrorClass::Unavailable
            | ErrorClass::Internal
            | ErrorClass::Unauthenticated
            | ErrorClass::InvalidProviderToken
            | ErrorClass::Transport => Retry::Backoff,
        }
    }

    /// The answer says the token will never reach this app's device again: remember it
    /// dead and send it nothing more.
    pub fn is_dead_token(self) -> bool {
        matches!(self, ErrorClass::Unregistered | ErrorClass::BadDeviceToken)
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
            ErrorClass::BadDeviceToken => "BAD_DEVICE_TOKEN",
            ErrorClass::InvalidProviderToken => "INVALID_PROVIDER_TOKEN",
            ErrorClass::BadTopic => "BAD_TOPIC",
            ErrorClass::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
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

/// Which quota a QUOTA_EXCEEDED answer says was hit, and so what must slow down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QuotaScope {
    /// One device's limit (240 messages a minute, 5,000 an hour per Android device): only
    /// that device's pushes wait.
    Device,
    /// The project's limit (600,000 messages a minute), or an answer that does not say
    /// which: the whole app slows down, the safe reading.
    Project,
}

impl QuotaScope {
    /// The label for metrics, stats and the dashboard.
    pub fn name(self) -> &'static str {
        match self {
            QuotaScope::Device => "device",
            QuotaScope::Project => "project",
        }
    }
}

/// Which quota a QUOTA_EXCEEDED answer names, from its `google.rpc.QuotaFailure` detail.
///
/// What is known of real answers, and why the reading is this loose:
/// - FCM's ErrorCode reference (firebase.google.com/docs/reference/fcm/rest/v1/ErrorCode):
///   QUOTA_EXCEEDED is "Sending limit exceeded for the message target. An extension of
///   type google.rpc.QuotaFailure is returned to specify which quota was exceeded", in one
///   of three cases: message rate (the project), device message rate, topic message rate.
/// - `google.rpc.QuotaFailure` is `{"violations": [{"subject", "description"}]}`; the
///   proto's own examples of a subject are `"clientip:<ip address>"` and
///   `"project:<project id>"`. Newer violations also carry `quotaMetric`, `quotaId`,
///   `quotaDimensions`, `quotaValue` (camelCase in Google's JSON, as in Gemini's real 429s;
///   firebase-admin-go's `messaging_errors.go` reads them snake_case, so both are read).
/// - The one captured real FCM 429 found (firebase/firebase-admin-go#719, a project quota)
///   has no FcmError and no QuotaFailure: an ErrorInfo `RATE_LIMIT_EXCEEDED` with
///   `quota_limit: SendsPerMinutePerProject`. Such an answer reads as [`QuotaScope::Project`].
/// - No public capture of a device-quota body was found; rails/action_push_native#129
///   ("Surface FCM quota violations") reports FCM's violations as `subject` and
///   `description` and leaves their wording to the caller.
///
/// So a violation names the device when a device (or token) dimension, quota id or metric,
/// a `device:`/`token:` subject, or (failing those) a description says "device"; a
/// project quota id or `project:` subject names the project. The widest scope named wins,
/// and an answer that names nothing is [`QuotaScope::Project`]. A topic quota names no
/// device, so it too slows the app.
pub fn quota_scope(body: &str) -> QuotaScope {
    let Ok(parsed) = serde_json::from_str::<Value>(body) else {
        return QuotaScope::Project;
    };
    let violations = (parsed["error"]["details"].as_array().into_iter().flatten())
        .filter(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("google.rpc.QuotaFailure"))
        })
        .flat_map(|d| d["violations"].as_array().into_iter().flatten());
    let mut named_device = false;
    for violation in violations {
        match violation_scope(violation) {
            QuotaScope::Project => return QuotaScope::Project,
            QuotaScope::Device => named_device = true,
        }
    }
    if named_device {
        QuotaScope::Device
    } else {
        QuotaScope::Project
    }
}

/// The scope one QuotaFailure violation names; anything unclear is the project.
fn violation_scope(violation: &Value) -> QuotaScope {
    let field = |camel: &str, snake: &str| {
        (violation.get(camel).or_else(|| violation.get(snake)))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_ascii_lowercase()
    };
    let per_device = |name: &str| name.contains("device") || name.contains("token");
    let dimensions = violation
        .get("quotaDimensions")
        .or_else(|| violation.get("quota_dimensions"))
        .and_then(Value::as_object);
    if dimensions.is_some_and(|d| d.keys().any(|k| per_device(&k.to_ascii_lowercase()))) {
        return QuotaScope::Device;
    }
    let quota = format!(
        "{} {}",
        field("quotaId", "quota_id"),
        field("quotaMetric", "quota_metric")
    );
    if quota.contains("device") {
        return QuotaScope::Device;
    }
    if quota.contains("project") {
        return QuotaScope::Project;
    }
    match field("subject", "subject")
        .split_once(':')
        .map(|(kind, _)| kind)
    {
        Some("device" | "token" | "registration_token") => return QuotaScope::Device,
        Some("project" | "project_number" | "projects") => return QuotaScope::Project,
        _ => {}
    }
    if field("description", "description").contains("device") {
        QuotaScope::Device
    } else {
        QuotaScope::Project
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
        /// For QUOTA_EXCEEDED, the quota the answer named (see [`quota_scope`]); `None`
        /// for every other class.
        quota: Option<QuotaScope>,
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

    /// A QUOTA_EXCEEDED answer with an FcmError detail and a QuotaFailure of `violations`.
    fn quota_answer(violations: Value) -> String {
        json!({"error": {"code": 429, "message": "Quota exceeded.", "status": "RESOURCE_EXHAUSTED",
            "details": [
                {"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": "QUOTA_EXCEEDED"},
                {"@type": "type.googleapis.com/google.rpc.QuotaFailure", "violations": violations},
            ]}})
        .to_string()
    }

    #[test]
    fn a_quota_failure_naming_the_device_is_a_device_quota() {
        let body = quota_answer(json!([{
            "subject": "device:fcm-token-0001",
            "description": "Device message rate exceeded: more than 240 messages a minute to this device.",
        }]));
        assert_eq!(classify(429, &body), ErrorClass::QuotaExceeded);
        assert_eq!(quota_scope(&body), QuotaScope::Device);
        // As firebase-admin-go's test writes one: the consumer project as subject, the
        // device in the quota id and dimensions (snake_case).
        let body = quota_answer(json!([{
            "subject": "project:test-project",
            "description": "Device message rate exceeded",
            "api_service": "firebasecloudmessaging.googleapis.com",
            "quota_metric": "firebasecloudmessaging.googleapis.com/device_messages",
            "quota_id": "DeviceMessagesPerMinute",
            "quota_dimensions": {"device_token": "abc123"},
            "quota_value": 100,
        }]));
        assert_eq!(quota_scope(&body), QuotaScope::Device);
        // Google's JSON mapping spells the same fields camelCase.
        let body =
            quota_answer(json!([{"quotaId": "DeviceMessagesPerMinute", "quotaValue": "240"}]));
        assert_eq!(quota_scope(&body), QuotaScope::Device);
    }

    #[test]
    fn a_quota_failure_naming_the_project_or_nothing_is_a_project_quota() {
        let body = quota_answer(json!([{
            "subject": "project:pushgate-prod",
            "description": "Message rate exceeded: the project's 600000 messages a minute.",
        }]));
        assert_eq!(quota_scope(&body), QuotaScope::Project);
        // firebase/firebase-admin-go#719, a real project-quota 429: no FcmError, no
        // QuotaFailure, only ErrorInfo and Help.
        let real = r#"{"error": {"code": 429,
            "message": "Quota exceeded for quota metric 'Send requests' and limit 'Send requests per minute' of service 'fcm.googleapis.com' for consumer 'project_number:xxx'.",
            "status": "RESOURCE_EXHAUSTED",
            "details": [
              {"@type": "type.googleapis.com/google.rpc.ErrorInfo", "reason": "RATE_LIMIT_EXCEEDED",
               "domain": "googleapis.com",
               "metadata": {"quota_limit_value": "xxx", "consumer": "projects/xxx",
                 "quota_metric": "fcm.googleapis.com/send_requests", "quota_unit": "1/min/{project}",
                 "service": "fcm.googleapis.com", "quota_location": "global",
                 "quota_limit": "SendsPerMinutePerProject"}},
              {"@type": "type.googleapis.com/google.rpc.Help",
               "links": [{"description": "Request a higher quota limit.",
                 "url": "https://cloud.google.com/docs/quotas/help/request_increase"}]}]}}"#;
        assert_eq!(classify(429, real), ErrorClass::QuotaExceeded);
        assert_eq!(quota_scope(real), QuotaScope::Project);
        // A topic quota names no device: the app slows down.
        let topic = quota_answer(json!([{"subject": "topic:market-notice",
            "description": "Topic message rate exceeded."}]));
        assert_eq!(quota_scope(&topic), QuotaScope::Project);
        // A project subject outranks a description that mentions devices.
        let unclear = quota_answer(json!([{"subject": "project:p",
            "description": "Device message rate exceeded"}]));
        assert_eq!(quota_scope(&unclear), QuotaScope::Project);
        for nothing in [
            quota_answer(json!([])),
            quota_answer(json!([{}])),
            envelope(429, "RESOURCE_EXHAUSTED", Some("QUOTA_EXCEEDED")),
            String::new(),
            "<html>Too Many Requests</html>".into(),
        ] {
            assert_eq!(quota_scope(&nothing), QuotaScope::Project, "{nothing}");
        }
    }

    #[test]
    fn the_widest_quota_named_wins() {
        let both = quota_answer(json!([
            {"subject": "device:fcm-token-0001", "description": "Device message rate exceeded."},
            {"subject": "project:pushgate-prod", "description": "Message rate exceeded."},
        ]));
        assert_eq!(quota_scope(&both), QuotaScope::Project);
        let two_devices = quota_answer(json!([
            {"subject": "device:a", "description": "Device message rate exceeded."},
            {"subject": "token:b"},
        ]));
        assert_eq!(quota_scope(&two_devices), QuotaScope::Device);
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
