//! `POST /3/device/<token>`: the headers and the payload checked rule by rule, in a fixed
//! order (topic, push type, priority, expiration, collapse id, apns-id, device token, topic
//! for the push type, payload), each violation answered with Apple's reason. Where Apple is
//! lenient the emulator is not: `apns-push-type` is required (Apple only recommends it), a
//! background push without `apns-priority: 5` is refused (Apple's default is 10), and the
//! `aps` members a gateway sends must have Apple's types.

use hyper::body::Bytes;
use hyper::header::HeaderMap;
use serde_json::{Map, Value};

use super::reason::{Reason, Refusal};

/// Payload limit (bytes) of every push type but VoIP.
pub const MAX_PAYLOAD: usize = 4096;
/// Payload limit (bytes) of VoIP pushes.
pub const MAX_VOIP_PAYLOAD: usize = 5120;
/// `apns-collapse-id` limit, bytes.
const MAX_COLLAPSE_ID: usize = 64;
/// Device tokens are 32 bytes today; Apple says they may grow, so up to 100 bytes of hex.
const MAX_DEVICE_TOKEN_HEX: usize = 200;

/// The headers a request may give at most once (DuplicateHeaders otherwise).
pub(super) const SINGLE_HEADERS: [&str; 7] = [
    "authorization",
    "apns-topic",
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-id",
];

/// `apns-push-type`, Apple's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    Alert,
    Background,
    Location,
    Voip,
    Complication,
    Fileprovider,
    Mdm,
    Liveactivity,
    Pushtotalk,
}

impl PushType {
    pub const ALL: [PushType; 9] = [
        Self::Alert,
        Self::Background,
        Self::Location,
        Self::Voip,
        Self::Complication,
        Self::Fileprovider,
        Self::Mdm,
        Self::Liveactivity,
        Self::Pushtotalk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Alert => "alert",
            Self::Background => "background",
            Self::Location => "location",
            Self::Voip => "voip",
            Self::Complication => "complication",
            Self::Fileprovider => "fileprovider",
            Self::Mdm => "mdm",
            Self::Liveactivity => "liveactivity",
            Self::Pushtotalk => "pushtotalk",
        }
    }

    fn parse(value: &str) -> Option<PushType> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }

    /// What Apple appends to the bundle id in `apns-topic` for this type. (`mdm` uses the
    /// MDM certificate's topic, which token auth cannot reach; the emulator takes the bundle
    /// id for it.)
    pub fn topic_suffix(self) -> &'static str {
        match self {
            Self::Voip => ".voip",
            Self::Complication => ".complication",
            Self::Fileprovider => ".pushkit.fileprovider",
            Self::Location => ".location-query",
            Self::Liveactivity => ".push-type.liveactivity",
            Self::Pushtotalk => ".voip-ptt",
            Self::Alert | Self::Background | Self::Mdm => "",
        }
    }

    pub fn max_payload(self) -> usize {
        if self == Self::Voip {
            MAX_VOIP_PAYLOAD
        } else {
            MAX_PAYLOAD
        }
    }
}

/// A request that passed every check.
#[derive(Debug)]
pub(super) struct Notification {
    pub(super) device_token: String,
    pub(super) topic: String,
    pub(super) push_type: PushType,
    /// 10 when the header is absent, as Apple.
    pub(super) priority: u8,
    pub(super) expiration: Option<i64>,
    pub(super) collapse_id: Option<String>,
    pub(super) payload: Map<String, Value>,
}

impl Notification {
    /// Checks a request to `device_token` for the app whose bundle id is `bundle_id`.
    pub(super) fn parse(
        device_token: &str,
        headers: &HeaderMap,
        body: &Bytes,
        bundle_id: &str,
    ) -> Result<Notification, Refusal> {
        let refuse = |reason, detail: String| Err(Refusal::new(reason, detail));
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"));

        let Some(topic) = header("apns-topic") else {
            return refuse(Reason::MissingTopic, "no apns-topic header".into());
        };
        if topic.is_empty() || !topic.bytes().all(|b| b.is_ascii_graphic()) {
            return refuse(
                Reason::BadTopic,
                format!("apns-topic {topic:?} is no bundle id"),
            );
        }
        let push_type = match header("apns-push-type") {
            None => {
                return refuse(
                    Reason::InvalidPushType,
                    "no apns-push-type header (the emulator requires it; Apple recommends it)"
                        .into(),
                );
            }
            Some(value) => PushType::parse(value).ok_or_else(|| {
                let known: Vec<&str> = PushType::ALL.iter().map(|t| t.as_str()).collect();
                Refusal::new(
                    Reason::InvalidPushType,
                    format!("apns-push-type {value:?} is none of {}", known.join(", ")),
                )
            })?,
        };
        let priority = match header("apns-priority") {
            None => 10,
            Some("10") => 10,
            Some("5") => 5,
            Some("1") => 1,
            Some(other) => {
                return refuse(
                    Reason::BadPriority,
                    format!("apns-priority {other:?} is none of 10, 5, 1"),
                );
            }
        };
        if push_type == PushType::Background && priority != 5 {
            return refuse(
                Reason::BadPriority,
                format!("a background push must have apns-priority 5, got {priority}"),
            );
        }
        let expiration = match header("apns-expiration") {
            None => None,
            Some(value) => Some(
                (value.parse::<i64>().ok())
                    .filter(|e| *e >= 0 && value.bytes().all(|b| b.is_ascii_digit()))
                    .ok_or_else(|| {
                        Refusal::new(
                            Reason::BadExpirationDate,
                            format!("apns-expiration {value:?} is not UNIX seconds"),
                        )
                    })?,
            ),
        };
        let collapse_id = match header("apns-collapse-id") {
            Some(id) if id.is_empty() || id.len() > MAX_COLLAPSE_ID => {
                return refuse(
                    Reason::BadCollapseId,
                    format!(
                        "apns-collapse-id is {} bytes, must be 1 to {MAX_COLLAPSE_ID}",
                        id.len()
                    ),
                );
            }
            id => id.map(str::to_owned),
        };
        if let Some(id) = header("apns-id")
            && !is_uuid(id)
        {
            return refuse(
                Reason::BadMessageId,
                format!("apns-id {id:?} is not a UUID (8-4-4-4-12 hex digits)"),
            );
        }
        if device_token.len() > MAX_DEVICE_TOKEN_HEX
            || !device_token.bytes().all(|b| b.is_ascii_hexdigit())
        {
            return refuse(
                Reason::BadDeviceToken,
                format!(
                    "device token {device_token:?} is not hex of at most {MAX_DEVICE_TOKEN_HEX} \
                     digits"
                ),
            );
        }
        let expected_topic = format!("{bundle_id}{}", push_type.topic_suffix());
        if topic != expected_topic {
            return refuse(
                Reason::DeviceTokenNotForTopic,
                format!(
                    "the device's app is {expected_topic:?} for a {} push, apns-topic is \
                     {topic:?}",
                    push_type.as_str()
                ),
            );
        }
        let payload = parse_payload(body, push_type)?;
        Ok(Notification {
            device_token: device_token.to_owned(),
            topic: topic.to_owned(),
            push_type,
            priority,
            expiration,
            collapse_id,
            payload,
        })
    }

    /// The payload's custom key `uniqueKey` (the shipped scripts put it in the push's data).
    pub(super) fn unique_key(&self) -> Option<&str> {
        self.payload.get("uniqueKey").and_then(Value::as_str)
    }
}

/// Empty → PayloadEmpty, over the type's limit → 413, not an object with a well-typed `aps`
/// dictionary → BadPayload.
fn parse_payload(body: &Bytes, push_type: PushType) -> Result<Map<String, Value>, Refusal> {
    let bad = |detail: String| Refusal::new(Reason::BadPayload, detail);
    if body.is_empty() {
        return Err(Refusal::new(Reason::PayloadEmpty, "the body is empty"));
    }
    let limit = push_type.max_payload();
    if body.len() > limit {
        return Err(Refusal::new(
            Reason::PayloadTooLarge,
            format!(
                "the payload is {} bytes, over the {limit}-byte limit of a {} push",
                body.len(),
                push_type.as_str()
            ),
        ));
    }
    let payload: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("the body is not JSON: {e}")))?;
    let Value::Object(payload) = payload else {
        return Err(bad("the payload must be a JSON object".into()));
    };
    let aps = match payload.get("aps") {
        Some(Value::Object(aps)) => aps,
        Some(other) => return Err(bad(format!("aps must be a dictionary, got {other}"))),
        None => return Err(bad("the payload has no aps dictionary".into())),
    };
    check_aps(aps).map_err(bad)?;
    Ok(payload)
}

/// The types Apple gives the `aps` members a gateway sets; members it does not know pass.
fn check_aps(aps: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in aps {
        let ok = match key.as_str() {
            "alert" => match value {
                Value::String(_) => true,
                Value::Object(alert) => ["title", "subtitle", "body"]
                    .iter()
                    .all(|k| alert.get(*k).is_none_or(Value::is_string)),
                _ => false,
            },
            "badge" => value.as_u64().is_some(),
            "sound" => value.is_string() || value.is_object(),
            "content-available" | "mutable-content" => matches!(value.as_u64(), Some(0 | 1)),
            "thread-id" | "category" | "target-content-id" => value.is_string(),
            "interruption-level" => matches!(
                value.as_str(),
                Some("passive" | "active" | "time-sensitive" | "critical")
            ),
            "relevance-score" => value.is_number(),
            _ => true,
        };
        if !ok {
            return Err(format!("aps.{key} has the wrong type or value: {value}"));
        }
    }
    Ok(())
}

/// A UUID in its canonical text form (either case).
pub(super) fn is_uuid(id: &str) -> bool {
    let groups: Vec<&str> = id.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(group, len)| group.len() == len && group.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A fresh random (version 4) UUID, upper case as Apple writes `apns-id`.
pub(super) fn new_uuid() -> String {
    let mut bytes: [u8; 16] = rand::random();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::emulator::apns::harness::*;
    use serde_json::json;

    #[test]
    fn uuids_are_canonical_and_fresh_ones_are_version_4() {
        assert!(is_uuid("123e4567-e89b-12d3-a456-426614174000"));
        assert!(is_uuid("123E4567-E89B-12D3-A456-426614174000"));
        assert!(!is_uuid("123e4567e89b12d3a456426614174000"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400"));
        assert!(!is_uuid("123e4567-e89b-12d3-a456-42661417400g"));
        let (a, b) = (new_uuid(), new_uuid());
        assert!(is_uuid(&a) && a != b, "{a} {b}");
        assert_eq!(&a[14..15], "4");
    }

    #[tokio::test]
    async fn a_device_token_that_is_not_hex_is_bad_device_token() {
        let h = spawn(&[]).await;
        for token in ["not-hex", "fcm:APA91bH", &"ab".repeat(101)] {
            h.assert_refused(h.push().to(token), 400, "BadDeviceToken")
                .await;
        }
        h.send(h.push().to(&"AB".repeat(100)))
            .await
            .assert_accepted();
        h.send(h.push().to("0a1b")).await.assert_accepted();
    }

    #[tokio::test]
    async fn a_missing_topic_is_missing_topic_and_an_empty_one_bad_topic() {
        let h = spawn(&[]).await;
        h.assert_refused(h.push().without("apns-topic"), 400, "MissingTopic")
            .await;
        h.assert_refused(h.push().header("apns-topic", ""), 400, "BadTopic")
            .await;
    }

    #[tokio::test]
    async fn another_apps_topic_is_device_token_not_for_topic() {
        let h = spawn(&[]).await;
        let push = h.push().header("apns-topic", "kr.example.other");
        let answer = h.assert_refused(push, 400, "DeviceTokenNotForTopic").await;
        assert!(
            answer.detail().contains("kr.example.other"),
            "{}",
            answer.detail()
        );
    }

    #[tokio::test]
    async fn each_push_type_is_accepted_with_its_topic_suffix_and_refused_without() {
        let h = spawn(&["--token-min-age", "0"]).await;
        let bundle = h.emulator.topic().to_owned();
        for push_type in PushType::ALL {
            let topic = format!("{bundle}{}", push_type.topic_suffix());
            let priority = if push_type == PushType::Background {
                "5"
            } else {
                "10"
            };
            let push = || {
                (h.push())
                    .header("apns-push-type", push_type.as_str())
                    .header("apns-priority", priority)
            };
            h.send(push().header("apns-topic", &topic))
                .await
                .assert_accepted();
            if !push_type.topic_suffix().is_empty() {
                h.assert_refused(
                    push().header("apns-topic", &bundle),
                    400,
                    "DeviceTokenNotForTopic",
                )
                .await;
            }
        }
        assert_eq!(PushType::Voip.topic_suffix(), ".voip");
        assert_eq!(PushType::Complication.topic_suffix(), ".complication");
    }

    #[tokio::test]
    async fn an_unknown_or_missing_push_type_is_invalid_push_type() {
        let h = spawn(&[]).await;
        for push_type in ["Alert", "notification", ""] {
            let push = h.push().header("apns-push-type", push_type);
            h.assert_refused(push, 400, "InvalidPushType").await;
        }
        h.assert_refused(h.push().without("apns-push-type"), 400, "InvalidPushType")
            .await;
    }

    #[tokio::test]
    async fn priority_must_be_10_5_or_1() {
        let h = spawn(&[]).await;
        for priority in ["10", "5", "1"] {
            h.send(h.push().header("apns-priority", priority))
                .await
                .assert_accepted();
        }
        h.send(h.push().without("apns-priority"))
            .await
            .assert_accepted();
        for priority in ["7", "high", "010", ""] {
            let push = h.push().header("apns-priority", priority);
            h.assert_refused(push, 400, "BadPriority").await;
        }
        let notifications = h.emulator.notifications();
        let priorities: Vec<u8> = notifications.iter().map(|n| n.priority).collect();
        assert_eq!(priorities, [10, 5, 1, 10], "absent is 10, as Apple");
    }

    #[tokio::test]
    async fn a_background_push_must_have_priority_5() {
        let h = spawn(&[]).await;
        let background = || {
            let body = json!({"aps": {"content-available": 1}, "uniqueKey": "bg"});
            (h.push())
                .header("apns-push-type", "background")
                .body(body.to_string())
        };
        for priority in ["10", "1"] {
            let push = background().header("apns-priority", priority);
            let answer = h.assert_refused(push, 400, "BadPriority").await;
            assert!(
                answer.detail().contains("background"),
                "{}",
                answer.detail()
            );
        }
        h.assert_refused(background().without("apns-priority"), 400, "BadPriority")
            .await;
        h.send(background().header("apns-priority", "5"))
            .await
            .assert_accepted();
    }

    #[tokio::test]
    async fn expiration_must_be_unix_seconds() {
        let h = spawn(&[]).await;
        for expiration in ["0", "1900000000"] {
            h.send(h.push().header("apns-expiration", expiration))
                .await
                .assert_accepted();
        }
        for expiration in ["soon", "-1", "1.5", "+5", ""] {
            let push = h.push().header("apns-expiration", expiration);
            h.assert_refused(push, 400, "BadExpirationDate").await;
        }
    }

    #[tokio::test]
    async fn a_collapse_id_must_be_1_to_64_bytes() {
        let h = spawn(&[]).await;
        let at_limit = "c".repeat(64);
        h.send(h.push().header("apns-collapse-id", &at_limit))
            .await
            .assert_accepted();
        for collapse_id in ["c".repeat(65), String::new()] {
            let push = h.push().header("apns-collapse-id", &collapse_id);
            h.assert_refused(push, 400, "BadCollapseId").await;
        }
    }

    #[tokio::test]
    async fn a_header_given_twice_is_duplicate_headers() {
        let h = spawn(&[]).await;
        for name in ["apns-topic", "apns-priority", "authorization"] {
            let value = (h.push().headers.iter())
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .expect("a default header");
            let answer = h
                .assert_refused(h.push().also(name, &value), 400, "DuplicateHeaders")
                .await;
            assert!(answer.detail().contains(name), "{}", answer.detail());
        }
    }

    #[tokio::test]
    async fn an_empty_body_is_payload_empty() {
        let h = spawn(&[]).await;
        h.assert_refused(h.push().body(""), 400, "PayloadEmpty")
            .await;
    }

    /// A payload with an alert of `size` bytes exactly.
    fn sized(size: usize) -> String {
        let bare = json!({"aps": {"alert": ""}}).to_string();
        let body = json!({"aps": {"alert": "x".repeat(size - bare.len())}}).to_string();
        assert_eq!(body.len(), size);
        body
    }

    #[tokio::test]
    async fn a_payload_over_4096_bytes_is_payload_too_large_and_voip_over_5120() {
        let h = spawn(&["--token-min-age", "0"]).await;
        h.send(h.push().body(sized(MAX_PAYLOAD)))
            .await
            .assert_accepted();
        let answer = h
            .assert_refused(
                h.push().body(sized(MAX_PAYLOAD + 1)),
                413,
                "PayloadTooLarge",
            )
            .await;
        assert!(
            answer.detail().contains("4097 bytes"),
            "{}",
            answer.detail()
        );
        let voip = || {
            let topic = format!("{}.voip", h.emulator.topic());
            (h.push())
                .header("apns-push-type", "voip")
                .header("apns-topic", &topic)
        };
        h.send(voip().body(sized(MAX_VOIP_PAYLOAD)))
            .await
            .assert_accepted();
        h.assert_refused(
            voip().body(sized(MAX_VOIP_PAYLOAD + 1)),
            413,
            "PayloadTooLarge",
        )
        .await;
        let huge = "x".repeat(2 << 20);
        h.assert_refused(h.push().body(huge), 413, "PayloadTooLarge")
            .await;
    }

    #[tokio::test]
    async fn a_body_that_is_no_object_with_an_aps_dictionary_is_bad_payload() {
        let h = spawn(&[]).await;
        for (body, needle) in [
            ("{\"aps\":", "not JSON"),
            ("[{\"aps\": {}}]", "JSON object"),
            ("{\"data\": {\"uniqueKey\": \"k\"}}", "no aps"),
            ("{\"aps\": \"alert\"}", "dictionary"),
        ] {
            let answer = h
                .assert_refused(h.push().body(body), 400, "BadPayload")
                .await;
            assert!(
                answer.detail().contains(needle),
                "{body}: {}",
                answer.detail()
            );
        }
    }

    #[tokio::test]
    async fn aps_members_must_have_apples_types() {
        let h = spawn(&[]).await;
        for aps in [
            json!({"badge": "3"}),
            json!({"badge": -1}),
            json!({"mutable-content": true}),
            json!({"content-available": 2}),
            json!({"alert": {"title": 5}}),
            json!({"alert": ["x"]}),
            json!({"sound": 1}),
            json!({"thread-id": 7}),
            json!({"interruption-level": "urgent"}),
        ] {
            let body = json!({"aps": aps}).to_string();
            let member = aps.as_object().and_then(|m| m.keys().next().cloned());
            let answer = h
                .assert_refused(h.push().body(body), 400, "BadPayload")
                .await;
            let member = member.expect("one member");
            assert!(answer.detail().contains(&member), "{}", answer.detail());
        }
        let fine = json!({"aps": {
            "alert": "plain text", "badge": 0, "sound": {"critical": 1, "name": "a.caf"},
            "content-available": 1, "thread-id": "t", "category": "c",
            "interruption-level": "time-sensitive", "relevance-score": 0.5, "new-key": [1],
        }});
        h.send(h.push().body(fine.to_string()))
            .await
            .assert_accepted();
    }

    #[tokio::test]
    async fn checks_come_in_apples_order_auth_then_faults_then_the_request() {
        let h = spawn(&["--fail-503", "1"]).await;
        let unsigned = bad_headers(&h).without("authorization");
        h.assert_refused(unsigned, 403, "MissingProviderToken")
            .await;
        h.assert_refused(bad_headers(&h), 503, "ServiceUnavailable")
            .await;
        let h = spawn(&[]).await;
        h.assert_refused(bad_headers(&h), 400, "BadTopic").await;
    }

    /// A push wrong in its topic and device token: the topic is checked first.
    fn bad_headers(h: &Harness) -> Push {
        h.push().header("apns-topic", "").to("zz")
    }
}
