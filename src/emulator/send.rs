//! `messages:send`: Google's order of checks (project, credentials, faults, message, token
//! verdicts, the device's quota) and the strict validation of the request body: shape, one target, topic names,
//! data keys, android options, sizes.

use std::sync::atomic::Ordering;
use std::time::Instant;

use hyper::StatusCode;
use hyper::body::Bytes;
use hyper::header::HeaderMap;
use serde_json::{Map, Value, json};

use super::rejection::{ErrorCode, Rejection};
use super::{State, media_type};

const MAX_MESSAGE: usize = 4096;
const MAX_TOPIC_MESSAGE: usize = 2048;

impl State {
    /// `messages:send`, checks in Google's order: project, credentials, then (after the
    /// injected latency and faults) the message itself, then per-token verdicts.
    pub(super) async fn send(
        &self,
        project: &str,
        headers: &HeaderMap,
        body: Result<Bytes, String>,
    ) -> Result<Value, Rejection> {
        if project != self.project {
            let msg = format!(
                "Requested entity was not found: project {project:?} (this emulator serves {:?})",
                self.project
            );
            return Err(Rejection::plain(StatusCode::NOT_FOUND, "NOT_FOUND", msg));
        }
        self.authenticate(headers)?;
        tokio::time::sleep(self.latency).await;
        if let Some(fault) = self.faults.draw(&self.project) {
            return Err(fault);
        }
        let request = body
            .and_then(|body| SendRequest::parse(media_type(headers).as_deref(), &body))
            .map_err(|msg| Rejection::fcm(ErrorCode::InvalidArgument, msg))?;
        if let Some(token) = &request.token {
            self.forced_error(token)?;
            // A dry run reaches no device, so it uses none of the device's quota.
            if !request.validate_only {
                self.device_quota(token)?;
            }
        }
        let mut stats = self.stats();
        if request.validate_only {
            stats.validated += 1;
            return Ok(
                json!({"name": format!("projects/{}/messages/fake_message_id", self.project)}),
            );
        }
        stats.accepted += 1;
        if let Ok(mut order) = self.accepted.lock() {
            if order.len() >= super::ACCEPTED_KEPT {
                order.pop_front();
            }
            let key = request.unique_key.clone().unwrap_or_default();
            order.push_back((key, crate::clock::now_ms()));
        }
        if let Some(key) = request.unique_key {
            *stats.by_key.entry(key).or_default() += 1;
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        Ok(json!({"name": format!("projects/{}/messages/{id}", self.project)}))
    }
}

impl State {
    /// Counts a message to `token` against its device quota; over it, the 429 naming the
    /// device with Retry-After (whole seconds, at least 1) until one more message fits.
    fn device_quota(&self, token: &str) -> Result<(), Rejection> {
        let Some(quota) = &self.device_quota else {
            return Ok(());
        };
        quota.admit(token, Instant::now()).map_err(|wait| {
            let seconds = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
            Rejection::device_quota(
                token,
                format!(
                    "more than {} messages a minute to this device",
                    quota.rate()
                ),
                Some(seconds.max(1)),
            )
        })
    }
}

/// A `messages:send` body that passed every check.
struct SendRequest {
    validate_only: bool,
    /// The registration token when the target is one (topics and conditions have no per-token
    /// verdicts).
    token: Option<String>,
    /// `message.data.uniqueKey`, counted in `Stats::by_key`.
    unique_key: Option<String>,
}

impl SendRequest {
    /// Validates a send body; `Err` is the INVALID_ARGUMENT message naming the problem.
    fn parse(media_type: Option<&str>, body: &[u8]) -> Result<SendRequest, String> {
        use Shape::{Bool, Object, Str, StringMap};
        if media_type != Some("application/json") {
            return Err(format!(
                "content-type must be application/json, got {media_type:?}"
            ));
        }
        let body: Value =
            serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let body = body
            .as_object()
            .ok_or("request body must be a JSON object")?;
        check_fields(
            body,
            "request body",
            &[("message", Object), ("validate_only", Bool)],
        )?;
        let validate_only = body
            .get("validate_only")
            .and_then(Value::as_bool)
            .unwrap_or(false);
        let message = body
            .get("message")
            .and_then(Value::as_object)
            .ok_or("message is required")?;
        let message_fields = [
            ("token", Str),
            ("topic", Str),
            ("condition", Str),
            ("notification", Object),
            ("data", StringMap),
            ("android", Object),
            ("apns", Object),
            ("webpush", Object),
            ("fcm_options", Object),
        ];
        check_fields(message, "message", &message_fields)?;

        let mut targets = ["token", "topic", "condition"]
            .into_iter()
            .filter(|k| message.contains_key(*k));
        let (Some(kind), None) = (targets.next(), targets.next()) else {
            return Err("message must have exactly one of token, topic, condition".into());
        };
        let target = (message.get(kind).and_then(Value::as_str))
            .filter(|v| !v.is_empty())
            .ok_or_else(|| format!("message.{kind} must be a non-empty string"))?;
        let is_topic = kind == "topic";
        if is_topic
            && !target
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.~%".contains(&b))
        {
            return Err(format!(
                "message.topic {target:?} must be a bare name matching [a-zA-Z0-9-_.~%]+"
            ));
        }

        let part = |key| message.get(key).and_then(Value::as_object);
        if let Some(notification) = part("notification") {
            let fields = [("title", Str), ("body", Str), ("image", Str)];
            check_fields(notification, "message.notification", &fields)?;
        }
        if let Some(key) =
            part("data").and_then(|data| data.keys().find(|k| is_reserved_data_key(k)))
        {
            return Err(format!(
                "message.data key {key:?} is reserved (from, message_type, google*, gcm*)"
            ));
        }
        if let Some(android) = part("android") {
            check_android(android)?;
        }
        if let Some(apns) = part("apns") {
            let fields = [
                ("headers", StringMap),
                ("payload", Object),
                ("fcm_options", Object),
            ];
            check_fields(apns, "message.apns", &fields)?;
        }
        if let Some(options) = part("fcm_options") {
            check_fields(options, "message.fcm_options", &[("analytics_label", Str)])?;
        }

        let limit = if is_topic {
            MAX_TOPIC_MESSAGE
        } else {
            MAX_MESSAGE
        };
        let size = serde_json::to_vec(message).map_or(usize::MAX, |v| v.len());
        if size > limit {
            return Err(format!(
                "message is {size} bytes, over the {limit}-byte limit for this target"
            ));
        }
        Ok(SendRequest {
            validate_only,
            token: (kind == "token").then(|| target.to_owned()),
            unique_key: part("data")
                .and_then(|d| d.get("uniqueKey")?.as_str())
                .map(str::to_owned),
        })
    }
}

fn check_android(android: &Map<String, Value>) -> Result<(), String> {
    use Shape::{Bool, Object, Str, StringMap};
    let fields = [
        ("priority", Str),
        ("ttl", Str),
        ("collapse_key", Str),
        ("restricted_package_name", Str),
        ("notification", Object),
        ("data", StringMap),
        ("fcm_options", Object),
        ("direct_boot_ok", Bool),
    ];
    check_fields(android, "message.android", &fields)?;
    let text = |key| android.get(key).and_then(Value::as_str);
    if let Some(priority) = text("priority")
        && !["normal", "high"]
            .iter()
            .any(|p| priority.eq_ignore_ascii_case(p))
    {
        return Err(format!(
            "message.android.priority must be \"normal\" or \"high\", got {priority:?}"
        ));
    }
    if let Some(ttl) = text("ttl")
        && !is_duration(ttl)
    {
        return Err(format!(
            "message.android.ttl must be a duration like \"3600s\" or \"3.5s\", got {ttl:?}"
        ));
    }
    Ok(())
}

/// The JSON type a message field must have: protobuf JSON is typed, so a number where a string
/// belongs is an error, not coerced.
#[derive(Clone, Copy)]
enum Shape {
    Str,
    Bool,
    Object,
    /// `map<string, string>`, as `data` and APNs headers.
    StringMap,
}

/// Checks that `map` has only the listed fields, each of its shape.
fn check_fields(
    map: &Map<String, Value>,
    what: &str,
    fields: &[(&str, Shape)],
) -> Result<(), String> {
    for (key, value) in map {
        let Some((_, shape)) = fields.iter().find(|(name, _)| name == key) else {
            let allowed: Vec<&str> = fields.iter().map(|(name, _)| *name).collect();
            return Err(format!(
                "unknown field {key:?} in {what} (allowed: {})",
                allowed.join(", ")
            ));
        };
        let expected = match shape {
            Shape::Str if !value.is_string() => "a string",
            Shape::Bool if !value.is_boolean() => "a bool",
            Shape::Object | Shape::StringMap if !value.is_object() => "a JSON object",
            Shape::StringMap => match value
                .as_object()
                .and_then(|m| m.iter().find(|(_, v)| !v.is_string()))
            {
                Some((k, v)) => return Err(format!("{what}.{key}.{k} must be a string, got {v}")),
                None => continue,
            },
            _ => continue,
        };
        return Err(format!("{what}.{key} must be {expected}, got {value}"));
    }
    Ok(())
}

fn is_reserved_data_key(key: &str) -> bool {
    key == "from" || key == "message_type" || key.starts_with("google") || key.starts_with("gcm")
}

/// A protobuf Duration in JSON: seconds with up to nine fractional digits and an `s`.
fn is_duration(s: &str) -> bool {
    let digits = |d: &str| !d.is_empty() && d.bytes().all(|b| b.is_ascii_digit());
    match s
        .strip_suffix('s')
        .map(|n| n.split_once('.').unwrap_or((n, "0")))
    {
        Some((whole, frac)) => digits(whole) && digits(frac) && frac.len() <= 9,
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::harness::*;
    use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};

    #[tokio::test]
    async fn send_to_another_project_is_not_found_without_fcm_detail() {
        let h = spawn(&[]).await;
        let token = h.token().await;
        let (status, body) = read(
            h.post_send(
                "other-project",
                Some(&token),
                &json!({"message": message("k")}),
            )
            .await,
        )
        .await;
        assert_fcm_error(status, &body, 404, "NOT_FOUND", None);
        assert_eq!(h.emulator.stats().accepted, 0);
    }

    #[tokio::test]
    async fn message_with_two_targets_is_invalid() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"token": "device-1", "topic": "news"}), "exactly one")
            .await;
    }

    #[tokio::test]
    async fn message_without_a_target_is_invalid() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"notification": {"title": "hi"}}), "exactly one")
            .await;
        h.assert_invalid(json!({"token": ""}), "non-empty").await;
    }

    #[tokio::test]
    async fn topic_must_be_a_bare_name() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"topic": "/topics/news"}), "message.topic")
            .await;
        assert_eq!(h.send(json!({"topic": "news-CH_de.~%20"})).await.0, 200);
    }

    #[tokio::test]
    async fn data_values_must_be_strings() {
        let h = spawn(&[]).await;
        h.assert_invalid(
            json!({"token": "t", "data": {"amount": 12}}),
            "message.data.amount",
        )
        .await;
        h.assert_invalid(
            json!({"token": "t", "data": {"urgent": true}}),
            "message.data.urgent",
        )
        .await;
    }

    #[tokio::test]
    async fn reserved_data_keys_are_invalid() {
        let h = spawn(&[]).await;
        for key in [
            "from",
            "message_type",
            "google.sent_time",
            "gcm.notification",
        ] {
            h.assert_invalid(json!({"token": "t", "data": {key: "x"}}), key)
                .await;
        }
    }

    #[tokio::test]
    async fn unknown_message_and_body_keys_are_invalid() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"token": "t", "priority": "high"}), "priority")
            .await;
        h.assert_invalid(
            json!({"token": "t", "notification": {"title": "x", "sound": "y"}}),
            "sound",
        )
        .await;
        let token = h.token().await;
        let body = json!({"message": {"token": "t"}, "dry_run": true});
        let (status, body) =
            read(h.post_send("pushgate-emulator", Some(&token), &body).await).await;
        assert_fcm_error(
            status,
            &body,
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("dry_run"),
            "{body}"
        );
    }

    #[tokio::test]
    async fn body_must_be_declared_json() {
        let h = spawn(&[]).await;
        let token = h.token().await;
        let request = (h
            .http
            .post(h.url("/v1/projects/pushgate-emulator/messages:send")))
        .bearer_auth(&token)
        .header(CONTENT_TYPE, "text/plain")
        .body(json!({"message": {"token": "t"}}).to_string());
        let (status, body) = read(request.send().await.expect("send")).await;
        assert_fcm_error(
            status,
            &body,
            400,
            "INVALID_ARGUMENT",
            Some("INVALID_ARGUMENT"),
        );
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("content-type"),
            "{body}"
        );
    }

    /// A message whose serialized form is exactly `size` bytes.
    fn sized(target: &str, name: &str, size: usize) -> Value {
        let mut message = json!({target: name, "data": {"pad": ""}});
        let missing = size - message.to_string().len();
        message["data"]["pad"] = json!("x".repeat(missing));
        assert_eq!(message.to_string().len(), size);
        message
    }

    #[tokio::test]
    async fn messages_over_4096_bytes_are_invalid() {
        let h = spawn(&[]).await;
        assert_eq!(h.send(sized("token", "t", 4096)).await.0, 200);
        h.assert_invalid(sized("token", "t", 4097), "4096-byte limit")
            .await;
    }

    #[tokio::test]
    async fn topic_messages_over_2048_bytes_are_invalid() {
        let h = spawn(&[]).await;
        assert_eq!(h.send(sized("topic", "news", 2048)).await.0, 200);
        h.assert_invalid(sized("topic", "news", 2049), "2048-byte limit")
            .await;
        assert_eq!(
            h.send(sized("condition", "'news' in topics", 3000)).await.0,
            200
        );
    }

    #[tokio::test]
    async fn android_priority_must_be_normal_or_high() {
        let h = spawn(&[]).await;
        h.assert_invalid(
            json!({"token": "t", "android": {"priority": "urgent"}}),
            "priority",
        )
        .await;
        assert_eq!(
            h.send(json!({"token": "t", "android": {"priority": "HIGH"}}))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn android_ttl_must_be_a_duration_and_keys_known() {
        let h = spawn(&[]).await;
        h.assert_invalid(json!({"token": "t", "android": {"ttl": 3600}}), "ttl")
            .await;
        h.assert_invalid(json!({"token": "t", "android": {"ttl": "1h"}}), "ttl")
            .await;
        h.assert_invalid(
            json!({"token": "t", "android": {"time_to_live": "3600s"}}),
            "time_to_live",
        )
        .await;
        assert_eq!(
            h.send(json!({"token": "t", "android": {"ttl": "3.5s"}}))
                .await
                .0,
            200
        );
    }

    #[tokio::test]
    async fn a_device_over_its_rate_gets_a_429_naming_it_with_retry_after() {
        let h = spawn(&["--device-rate", "3"]).await;
        let token = h.token().await;
        let send = |device: &str, validate_only: bool| {
            let body = json!({"message": {"token": device}, "validate_only": validate_only});
            let (h, token) = (&h, &token);
            async move { h.post_send("pushgate-emulator", Some(token), &body).await }
        };
        for n in 0..3 {
            assert_eq!(
                send("device-1", false).await.status().as_u16(),
                200,
                "message {n}"
            );
        }
        let response = send("device-1", false).await;
        // A minute / 3 after the first message, the next one fits (less the time the
        // three sends took; generous for a loaded machine).
        let retry_after: Option<u64> =
            (response.headers().get(RETRY_AFTER)).and_then(|v| v.to_str().ok()?.parse().ok());
        assert!(
            retry_after.is_some_and(|s| (15..=20).contains(&s)),
            "Retry-After {retry_after:?}"
        );
        let (status, body) = read(response).await;
        let description = assert_quota_answer(status, &body, "device:device-1");
        assert!(description.contains("3 messages a minute"), "{description}");
        // Other devices and dry runs are not held back by it.
        assert_eq!(send("device-2", false).await.status().as_u16(), 200);
        assert_eq!(send("device-1", true).await.status().as_u16(), 200);

        let stats = h.emulator.stats();
        assert_eq!((stats.accepted, stats.validated), (4, 1));
        assert_eq!(stats.rejected.get("QUOTA_EXCEEDED"), Some(&1));
        assert_eq!(stats.quota.get("device"), Some(&1));
    }

    #[tokio::test]
    async fn the_default_device_rate_is_fcms_240_a_minute_and_0_turns_it_off() {
        let h = spawn(&[]).await;
        let token = h.token().await;
        let body = json!({"message": {"token": "chatty-device"}});
        // The bucket refills one message every 250 ms while the burst goes out, so the
        // first refusal comes after at least 240 messages.
        let mut first_refusal = None;
        for n in 0..400 {
            let response = h.post_send("pushgate-emulator", Some(&token), &body).await;
            if response.status().as_u16() == 429 {
                first_refusal = Some((n, read(response).await.1));
                break;
            }
        }
        let (n, refusal) = first_refusal.expect("a burst of 400 to one device is refused");
        assert!(n >= 240, "refused after only {n} messages");
        assert!(
            quota_violation(&refusal)
                .1
                .contains("240 messages a minute"),
            "{refusal}"
        );

        let h = spawn(&["--device-rate", "0"]).await;
        let token = h.token().await;
        for _ in 0..400 {
            h.post_send("pushgate-emulator", Some(&token), &body).await;
        }
        let stats = h.emulator.stats();
        assert_eq!((stats.accepted, stats.quota.len()), (400, 0), "{stats:?}");
    }

    #[tokio::test]
    async fn validate_only_is_counted_as_validated_not_accepted() {
        let h = spawn(&[]).await;
        let token = h.token().await;
        let body = json!({"message": message("dry"), "validate_only": true});
        let (status, body) =
            read(h.post_send("pushgate-emulator", Some(&token), &body).await).await;
        assert_eq!(
            (status, &body["name"]),
            (
                200,
                &json!("projects/pushgate-emulator/messages/fake_message_id")
            )
        );
        let stats = h.emulator.stats();
        assert_eq!((stats.accepted, stats.validated), (0, 1));
        assert!(stats.by_key.is_empty(), "{stats:?}");
    }
}
