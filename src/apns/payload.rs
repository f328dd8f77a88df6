//! The request one push makes to Apple: `POST /3/device/<token>`, its `apns-*` headers and
//! its JSON payload, built from a route decision's [`Push`] as typed structs that borrow
//! from it.
//!
//! A script writes one push for both providers: title, body, image and data as for FCM,
//! and `apns` in FCM's shape (`{headers: {...}, payload: {aps: {...}, ...}, fcm_options:
//! {image}}`), which FCM forwards to Apple and this client reads the same way. So the
//! payload Apple receives is the same either way: the script's `aps` fields over the
//! push's title and body, its other payload keys and the push's data as custom keys.
//!
//! Invariant: whatever [`check`] accepts when the script decides, [`Request::for_push`]
//! builds at send time (only a device token that is not hex is refused then, because
//! only an APNs app needs one).

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::push::{Push, Target};

/// Apple's limit on a payload, in bytes.
pub const MAX_PAYLOAD: usize = 4096;
/// Apple's limit on a VoIP payload, in bytes.
pub const MAX_VOIP_PAYLOAD: usize = 5120;
/// Apple's limit on `apns-collapse-id`, in bytes.
pub const MAX_COLLAPSE_ID: usize = 64;

/// The headers a script may set in `apns.headers`.
const HEADERS: [&str; 6] = [
    "apns-push-type",
    "apns-priority",
    "apns-expiration",
    "apns-collapse-id",
    "apns-topic",
    "apns-id",
];
/// The keys of FCM's `apns` object.
const APNS_KEYS: [&str; 4] = ["headers", "payload", "fcm_options", "live_activity_token"];

/// `apns-push-type`: what the notification does on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushType {
    Alert,
    Background,
    Location,
    Voip,
    Complication,
    FileProvider,
    Mdm,
    LiveActivity,
    PushToTalk,
}

impl PushType {
    const ALL: [PushType; 9] = [
        PushType::Alert,
        PushType::Background,
        PushType::Location,
        PushType::Voip,
        PushType::Complication,
        PushType::FileProvider,
        PushType::Mdm,
        PushType::LiveActivity,
        PushType::PushToTalk,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            PushType::Alert => "alert",
            PushType::Background => "background",
            PushType::Location => "location",
            PushType::Voip => "voip",
            PushType::Complication => "complication",
            PushType::FileProvider => "fileprovider",
            PushType::Mdm => "mdm",
            PushType::LiveActivity => "liveactivity",
            PushType::PushToTalk => "pushtotalk",
        }
    }

    fn parse(text: &str) -> Option<PushType> {
        PushType::ALL.into_iter().find(|t| t.as_str() == text)
    }

    /// What Apple wants appended to the bundle id in `apns-topic` for this type.
    fn topic_suffix(self) -> &'static str {
        match self {
            PushType::Voip => ".voip",
            PushType::Complication => ".complication",
            PushType::FileProvider => ".pushkit.fileprovider",
            PushType::Location => ".location-query",
            PushType::LiveActivity => ".push-type.liveactivity",
            PushType::PushToTalk => ".voip-ptt",
            PushType::Alert | PushType::Background | PushType::Mdm => "",
        }
    }

    /// The largest payload Apple takes for this type.
    pub fn max_payload(self) -> usize {
        match self {
            PushType::Voip => MAX_VOIP_PAYLOAD,
            _ => MAX_PAYLOAD,
        }
    }
}

/// One request to Apple, ready to send.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `/3/device/<token>`.
    pub path: String,
    /// `apns-topic`: the bundle id (with the push type's suffix), or the script's.
    pub topic: String,
    pub push_type: PushType,
    /// `apns-priority`: 10, 5 or 1.
    pub priority: u8,
    /// `apns-expiration` (unix seconds): the script's, else the push's deadline.
    pub expiration: Option<i64>,
    pub collapse_id: Option<String>,
    /// `apns-id`: the script's UUID for this notification, echoed back by Apple.
    pub id: Option<String>,
    /// The JSON payload.
    pub body: Vec<u8>,
}

impl Request {
    /// The request a push to a device token makes, for the app whose bundle id is
    /// `topic`; `expiration` is the push's deadline (unix seconds), if it has one.
    pub fn for_push(push: &Push, topic: &str, expiration: Option<i64>) -> Result<Request, String> {
        let Target::Token(token) = &push.target else {
            return Err(
                "APNs sends to a device token; a topic or condition needs an FCM app".into(),
            );
        };
        if token.is_empty() || !token.bytes().all(|b| b.is_ascii_hexdigit()) {
            let start: String = token.chars().take(12).collect();
            return Err(format!(
                "APNs sends to a device token of hex digits, and {start:?}… is not one (an FCM token sent to an APNs app?)"
            ));
        }
        let built = Built::of(push)?;
        let headers = &built.options.headers;
        let topic = match headers.topic {
            Some(topic) => topic.to_owned(),
            None => format!("{topic}{}", built.push_type.topic_suffix()),
        };
        Ok(Request {
            path: format!("/3/device/{token}"),
            topic,
            push_type: built.push_type,
            priority: built.priority,
            expiration: headers.expiration.or(expiration),
            collapse_id: headers.collapse_id.map(str::to_owned),
            id: headers.id.map(str::to_owned),
            body: built.body,
        })
    }

    /// The `apns-*` headers, by name (without `authorization`).
    pub fn headers(&self) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            ("apns-topic", self.topic.clone()),
            ("apns-push-type", self.push_type.as_str().to_owned()),
            ("apns-priority", self.priority.to_string()),
        ];
        if let Some(expiration) = self.expiration {
            headers.push(("apns-expiration", expiration.to_string()));
        }
        if let Some(collapse_id) = &self.collapse_id {
            headers.push(("apns-collapse-id", collapse_id.clone()));
        }
        if let Some(id) = &self.id {
            headers.push(("apns-id", id.clone()));
        }
        headers
    }
}

/// Check, when the script decides, what Apple would refuse of a push to a device token:
/// the `apns` object's shape and headers, the collapse id's length and the payload's
/// size. FCM forwards the same `apns` object to Apple and limits messages to 4 KB too,
/// so the check holds whichever provider the push's app uses.
pub fn check(push: &Push) -> Result<(), String> {
    Built::of(push).map(|_| ())
}

/// What a push's headers and payload come to.
struct Built<'a> {
    options: Options<'a>,
    push_type: PushType,
    priority: u8,
    body: Vec<u8>,
}

impl<'a> Built<'a> {
    fn of(push: &'a Push) -> Result<Built<'a>, String> {
        if push.data.contains_key("aps") {
            return Err(
                "data key \"aps\" is Apple's own dictionary; set apns.payload.aps instead".into(),
            );
        }
        let options = Options::read(push.apns.as_ref())?;
        let mut payload = Payload::of(push, &options);
        let push_type = options
            .headers
            .push_type
            .unwrap_or(if payload.aps.shows_something() {
                PushType::Alert
            } else {
                PushType::Background
            });
        if push_type == PushType::Background {
            // A background push wakes the app only with content-available.
            payload.aps.content_available = Some(1);
        }
        let priority = match push_type {
            // Apple refuses any other priority for a background push.
            PushType::Background => 5,
            _ => options.headers.priority.unwrap_or(10),
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| format!("the APNs payload cannot be written: {e}"))?;
        let max = push_type.max_payload();
        if body.len() > max {
            return Err(format!(
                "the APNs payload would be {} bytes; Apple takes at most {}{}",
                grouped(body.len()),
                grouped(max),
                if push_type == PushType::Voip {
                    " for a VoIP push"
                } else {
                    ""
                }
            ));
        }
        Ok(Built {
            options,
            push_type,
            priority,
            body,
        })
    }
}

/// `n` with thousands separated by commas, as messages to operators write sizes.
fn grouped(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// The script's `apns` object, read and checked.
#[derive(Default)]
struct Options<'a> {
    headers: Headers<'a>,
    /// `payload.aps`.
    aps: Option<&'a Map<String, Value>>,
    /// `payload`'s other keys: custom keys beside `aps`.
    custom: Vec<(&'a str, &'a Value)>,
    /// `fcm_options.image`.
    image: Option<&'a str>,
}

/// `apns.headers`, each checked against Apple's rule.
#[derive(Default)]
struct Headers<'a> {
    push_type: Option<PushType>,
    priority: Option<u8>,
    expiration: Option<i64>,
    collapse_id: Option<&'a str>,
    topic: Option<&'a str>,
    id: Option<&'a str>,
}

fn object<'a>(value: &'a Value, name: &str) -> Result<&'a Map<String, Value>, String> {
    value
        .as_object()
        .ok_or_else(|| format!("{name} must be a map, got {}", kind(value)))
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "()",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "int",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "map",
    }
}

impl<'a> Options<'a> {
    fn read(apns: Option<&'a Value>) -> Result<Options<'a>, String> {
        let Some(apns) = apns else {
            return Ok(Options::default());
        };
        let apns = object(apns, "`apns`")?;
        if let Some(key) = apns.keys().find(|k| !APNS_KEYS.contains(&k.as_str())) {
            return Err(format!(
                "unknown key `{key}` in apns (FCM's apns object has {})",
                APNS_KEYS.join(", ")
            ));
        }
        let mut options = Options {
            headers: match apns.get("headers") {
                Some(headers) => Headers::read(object(headers, "apns.headers")?)?,
                None => Headers::default(),
            },
            ..Options::default()
        };
        if let Some(payload) = apns.get("payload") {
            for (key, value) in object(payload, "apns.payload")? {
                if key == "aps" {
                    let aps = object(value, "apns.payload.aps")?;
                    check_aps(aps)?;
                    options.aps = Some(aps);
                } else {
                    options.custom.push((key, value));
                }
            }
        }
        if let Some(fcm_options) = apns.get("fcm_options") {
            let image = object(fcm_options, "apns.fcm_options")?.get("image");
            options.image = match image {
                None => None,
                Some(Value::String(url)) => Some(url),
                Some(other) => {
                    return Err(format!(
                        "apns.fcm_options.image must be a string, got {}",
                        kind(other)
                    ));
                }
            };
        }
        Ok(options)
    }
}

impl<'a> Headers<'a> {
    fn read(headers: &'a Map<String, Value>) -> Result<Headers<'a>, String> {
        let mut read = Headers::default();
        for (name, value) in headers {
            let at = format!("apns.headers[{name:?}]");
            // FCM's apns headers are a map of strings: a script stays valid for both.
            let Value::String(text) = value else {
                return Err(format!(
                    "{at} must be a string (as in FCM's apns object), got {}",
                    kind(value)
                ));
            };
            match name.as_str() {
                "apns-push-type" => {
                    read.push_type = Some(PushType::parse(text).ok_or_else(|| {
                        let all: Vec<&str> = PushType::ALL.iter().map(|t| t.as_str()).collect();
                        format!("{at} must be one of {}, got {text:?}", all.join(", "))
                    })?);
                }
                "apns-priority" => {
                    read.priority = Some(match text.as_str() {
                        "10" => 10,
                        "5" => 5,
                        "1" => 1,
                        _ => {
                            return Err(format!(
                                "{at} must be \"10\", \"5\" or \"1\", got {text:?}"
                            ));
                        }
                    });
                }
                "apns-expiration" => {
                    read.expiration = Some(
                        text.parse::<i64>()
                            .ok()
                            .filter(|secs| *secs >= 0)
                            .ok_or_else(|| {
                                format!("{at} must be unix seconds (or \"0\": deliver once or never), got {text:?}")
                            })?,
                    );
                }
                "apns-collapse-id" => {
                    if text.is_empty() || text.len() > MAX_COLLAPSE_ID {
                        return Err(format!(
                            "{at} must be 1 to {MAX_COLLAPSE_ID} bytes, got {} bytes",
                            text.len()
                        ));
                    }
                    read.collapse_id = Some(text);
                }
                "apns-topic" => {
                    if text.is_empty() || text.bytes().any(|b| !b.is_ascii_graphic()) {
                        return Err(format!("{at} must be a bundle id, got {text:?}"));
                    }
                    read.topic = Some(text);
                }
                "apns-id" => {
                    if !is_uuid(text) {
                        return Err(format!(
                            "{at} must be a UUID (8-4-4-4-12 hex digits), got {text:?}"
                        ));
                    }
                    read.id = Some(text);
                }
                _ => {
                    return Err(format!(
                        "{at} is not an APNs header pushgate sends (allowed: {})",
                        HEADERS.join(", ")
                    ));
                }
            }
        }
        Ok(read)
    }
}

fn is_uuid(text: &str) -> bool {
    text.len() == 36
        && text.char_indices().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => c == '-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// The `aps` fields whose type Apple fixes; any other key passes as the script wrote it.
fn check_aps(aps: &Map<String, Value>) -> Result<(), String> {
    for (key, value) in aps {
        let at = format!("apns.payload.aps[{key:?}]");
        let ok = match key.as_str() {
            "alert" => match value {
                Value::String(_) => true,
                Value::Object(alert) => {
                    for part in ["title", "subtitle", "body"] {
                        if let Some(text) = alert.get(part).filter(|v| !v.is_string()) {
                            return Err(format!(
                                "{at}.{part} must be a string, got {}",
                                kind(text)
                            ));
                        }
                    }
                    true
                }
                _ => false,
            },
            "badge" => value.as_u64().is_some(),
            "sound" => value.is_string() || value.is_object(),
            "content-available" | "mutable-content" => value.as_u64() == Some(1),
            "thread-id" | "category" | "interruption-level" | "target-content-id" => {
                value.is_string()
            }
            _ => true,
        };
        if !ok {
            let wanted = match key.as_str() {
                "alert" => "a string or a map of title, subtitle and body",
                "badge" => "a whole number of 0 or more",
                "sound" => "a sound name or a map",
                "content-available" | "mutable-content" => "1 (leave it out otherwise)",
                _ => "a string",
            };
            return Err(format!("{at} must be {wanted}, got {value}"));
        }
    }
    Ok(())
}

/// The payload Apple receives: `aps` and the custom keys beside it.
#[derive(Debug, Serialize)]
struct Payload<'a> {
    aps: Aps<'a>,
    #[serde(flatten)]
    custom: BTreeMap<&'a str, Custom<'a>>,
}

/// Apple's dictionary: the alert pushgate builds, the two flags it may set, and the
/// script's other `aps` fields as written.
#[derive(Debug, Serialize)]
struct Aps<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    alert: Option<Alert<'a>>,
    /// 1: wake the app in the background (the only value Apple knows).
    #[serde(rename = "content-available", skip_serializing_if = "Option::is_none")]
    content_available: Option<u8>,
    /// 1: let the app's notification service extension change the notification.
    #[serde(rename = "mutable-content", skip_serializing_if = "Option::is_none")]
    mutable_content: Option<u8>,
    #[serde(flatten)]
    other: BTreeMap<&'a str, &'a Value>,
}

impl Aps<'_> {
    /// An alert, a sound or a badge: something the user notices (else it is a
    /// background push).
    fn shows_something(&self) -> bool {
        self.alert.is_some() || self.other.contains_key("sound") || self.other.contains_key("badge")
    }
}

/// `aps.alert`: the push's title and body unless the script's `aps.alert` has its own.
#[derive(Debug, Serialize)]
struct Alert<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    /// The script's other alert keys (subtitle, localisation keys).
    #[serde(flatten)]
    other: BTreeMap<&'a str, &'a Value>,
}

/// A custom key's value: the push's data (strings), the script's payload keys (any
/// JSON), or the image as FCM delivers it.
#[derive(Debug, Serialize)]
#[serde(untagged)]
enum Custom<'a> {
    Text(&'a str),
    Json(&'a Value),
    Image { image: &'a str },
}

impl<'a> Payload<'a> {
    fn of(push: &'a Push, options: &Options<'a>) -> Payload<'a> {
        let mut aps = Aps {
            alert: None,
            content_available: None,
            mutable_content: None,
            other: BTreeMap::new(),
        };
        let mut alert = Alert {
            title: push.title.as_deref(),
            body: push.body.as_deref(),
            other: BTreeMap::new(),
        };
        for (key, value) in options.aps.into_iter().flatten() {
            match (key.as_str(), value) {
                ("alert", Value::String(body)) => alert.body = Some(body),
                ("alert", Value::Object(fields)) => {
                    for (part, value) in fields {
                        match (part.as_str(), value) {
                            ("title", Value::String(text)) => alert.title = Some(text),
                            ("body", Value::String(text)) => alert.body = Some(text),
                            _ => {
                                alert.other.insert(part, value);
                            }
                        }
                    }
                }
                // check_aps let only 1 through.
                ("content-available", _) => aps.content_available = Some(1),
                ("mutable-content", _) => aps.mutable_content = Some(1),
                _ => {
                    aps.other.insert(key, value);
                }
            }
        }
        let has_alert = alert.title.is_some() || alert.body.is_some() || !alert.other.is_empty();
        aps.alert = has_alert.then_some(alert);

        let mut custom: BTreeMap<&str, Custom> = push
            .data
            .iter()
            .map(|(k, v)| (k.as_str(), Custom::Text(v)))
            .collect();
        for (key, value) in &options.custom {
            custom.insert(key, Custom::Json(value));
        }
        // The image as FCM delivers it to an iOS app (`fcm_options.image`, with
        // mutable-content), so a notification service extension written for FCM shows it.
        if let Some(image) = options.image.or(push.image.as_deref())
            && !custom.contains_key("fcm_options")
        {
            custom.insert("fcm_options", Custom::Image { image });
            aps.mutable_content = Some(1);
        }
        Payload { aps, custom }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const TOKEN: &str = "7a3f0c2e9b5d41e8a6c03f9d2e1b7a4c5d6e7f8091a2b3c4d5e6f708192a3b4c";

    fn push(apns: Option<Value>) -> Push {
        Push {
            title: Some("이체 완료".into()),
            body: Some("50,000원이 입금되었습니다".into()),
            data: [("uniqueKey".to_owned(), "K1".to_owned())].into(),
            apns,
            ..Push::new(Target::Token(TOKEN.into()))
        }
    }

    fn request(push: &Push) -> Request {
        Request::for_push(push, "kr.example.bank", Some(1_700_003_600)).expect("a request")
    }

    fn body(request: &Request) -> Value {
        serde_json::from_slice(&request.body).expect("JSON")
    }

    fn header(request: &Request, name: &str) -> Option<String> {
        request
            .headers()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v)
    }

    #[test]
    fn a_push_becomes_an_alert_to_its_device_with_the_data_as_custom_keys() {
        let request = request(&push(None));
        assert_eq!(request.path, format!("/3/device/{TOKEN}"));
        assert_eq!(
            request.headers(),
            [
                ("apns-topic", "kr.example.bank".to_owned()),
                ("apns-push-type", "alert".to_owned()),
                ("apns-priority", "10".to_owned()),
                ("apns-expiration", "1700003600".to_owned()),
            ]
        );
        assert_eq!(
            body(&request),
            json!({"aps": {"alert": {"title": "이체 완료", "body": "50,000원이 입금되었습니다"}},
                   "uniqueKey": "K1"})
        );
        let no_deadline = Request::for_push(&push(None), "kr.example.bank", None).unwrap();
        assert_eq!(header(&no_deadline, "apns-expiration"), None);
    }

    #[test]
    fn the_scripts_apns_object_sets_headers_and_merges_into_aps() {
        let apns = json!({
            "headers": {"apns-priority": "5", "apns-collapse-id": "balance",
                        "apns-expiration": "0", "apns-id": "7C5BB5B4-6A41-4D6D-A6CF-5A0F0B0E1A2B"},
            "payload": {"aps": {"alert": {"title": "입금", "subtitle": "KB"}, "sound": "default",
                                "badge": 3, "mutable-content": 1, "thread-id": "acct-1"},
                        "uniqueKey": "K2", "deeplink": {"screen": "history"}},
        });
        let request = request(&push(Some(apns)));
        assert_eq!(request.priority, 5);
        assert_eq!(request.expiration, Some(0), "the script's expiration wins");
        assert_eq!(request.collapse_id.as_deref(), Some("balance"));
        assert_eq!(
            header(&request, "apns-id").as_deref(),
            Some("7C5BB5B4-6A41-4D6D-A6CF-5A0F0B0E1A2B")
        );
        assert_eq!(
            body(&request),
            json!({
                "aps": {"alert": {"title": "입금", "subtitle": "KB", "body": "50,000원이 입금되었습니다"},
                        "sound": "default", "badge": 3, "mutable-content": 1, "thread-id": "acct-1"},
                "uniqueKey": "K2",
                "deeplink": {"screen": "history"},
            })
        );
        // A string alert is the body.
        let apns = json!({"payload": {"aps": {"alert": "본문"}}});
        assert_eq!(
            body(&request_of(apns))["aps"]["alert"],
            json!({"title": "이체 완료", "body": "본문"})
        );
    }

    fn request_of(apns: Value) -> Request {
        request(&push(Some(apns)))
    }

    #[test]
    fn background_pushes_go_at_priority_5_with_content_available() {
        let forced =
            request_of(json!({"headers": {"apns-push-type": "background", "apns-priority": "10"}}));
        assert_eq!(
            (forced.push_type, forced.priority),
            (PushType::Background, 5)
        );
        assert_eq!(body(&forced)["aps"]["content-available"], 1);
        // Nothing to show: a data push wakes the app in the background.
        let mut quiet = push(None);
        (quiet.title, quiet.body) = (None, None);
        let data_only = request(&quiet);
        assert_eq!(
            header(&data_only, "apns-push-type").as_deref(),
            Some("background")
        );
        assert_eq!(header(&data_only, "apns-priority").as_deref(), Some("5"));
        assert_eq!(
            body(&data_only),
            json!({"aps": {"content-available": 1}, "uniqueKey": "K1"})
        );
        // A badge alone is something the user sees.
        quiet.apns = Some(json!({"payload": {"aps": {"badge": 0}}}));
        assert_eq!(request(&quiet).push_type, PushType::Alert);
    }

    #[test]
    fn the_topic_gets_the_suffix_apple_wants_for_its_push_type() {
        let voip = request_of(json!({"headers": {"apns-push-type": "voip"}}));
        assert_eq!(voip.topic, "kr.example.bank.voip");
        assert_eq!(voip.priority, 10);
        let own = request_of(json!({"headers": {"apns-topic": "kr.example.card"}}));
        assert_eq!(
            own.topic, "kr.example.card",
            "the script's topic as written"
        );
    }

    #[test]
    fn an_image_reaches_the_app_as_fcm_delivers_it() {
        let mut with_image = push(None);
        with_image.image = Some("https://img.example.com/a.png".into());
        let sent = body(&request(&with_image));
        assert_eq!(
            sent["fcm_options"],
            json!({"image": "https://img.example.com/a.png"})
        );
        assert_eq!(sent["aps"]["mutable-content"], 1);
        let apns = json!({"fcm_options": {"image": "https://img.example.com/b.png"}});
        with_image.apns = Some(apns);
        assert_eq!(
            body(&request(&with_image))["fcm_options"]["image"],
            "https://img.example.com/b.png"
        );
    }

    #[test]
    fn only_a_hex_device_token_is_sent_to_apple() {
        let mut to_topic = push(None);
        to_topic.target = Target::Topic("news".into());
        let err = Request::for_push(&to_topic, "kr.example.bank", None).unwrap_err();
        assert!(err.starts_with("APNs sends to a device token"), "{err}");
        assert!(check(&to_topic).is_ok(), "check reads the apns object only");
        let mut fcm_token = push(None);
        fcm_token.target = Target::Token("dGVzdA:APA91bH-x/y?z".into());
        let err = Request::for_push(&fcm_token, "kr.example.bank", None).unwrap_err();
        assert!(err.contains("hex digits"), "{err}");
        assert!(check(&fcm_token).is_ok(), "an FCM app takes it");
    }

    #[test]
    fn check_refuses_what_apple_would() {
        let cases = [
            (
                json!({"headers": {"apns-collapse-id": "x".repeat(65)}}),
                "must be 1 to 64 bytes, got 65 bytes",
            ),
            (
                json!({"headers": {"apns-priority": 10}}),
                "must be a string (as in FCM's apns object), got int",
            ),
            (
                json!({"headers": {"apns-priority": "7"}}),
                "must be \"10\", \"5\" or \"1\"",
            ),
            (
                json!({"headers": {"apns-push-type": "silent"}}),
                "must be one of alert, background",
            ),
            (
                json!({"headers": {"apns-expiration": "tomorrow"}}),
                "must be unix seconds",
            ),
            (json!({"headers": {"apns-id": "42"}}), "must be a UUID"),
            (
                json!({"headers": {"authorization": "bearer x"}}),
                "not an APNs header pushgate sends",
            ),
            (
                json!({"payload": {"aps": {"badge": "3"}}}),
                "aps[\"badge\"] must be a whole number",
            ),
            (
                json!({"payload": {"aps": {"content-available": true}}}),
                "must be 1",
            ),
            (
                json!({"payload": {"aps": {"alert": {"title": 5}}}}),
                "alert\"].title must be a string",
            ),
            (
                json!({"payload": {"aps": "hello"}}),
                "apns.payload.aps must be a map",
            ),
            (json!({"payload": []}), "apns.payload must be a map"),
            (json!({"heders": {}}), "unknown key `heders` in apns"),
        ];
        for (apns, expected) in cases {
            let err = check(&push(Some(apns.clone()))).expect_err(&apns.to_string());
            assert!(err.contains(expected), "{apns}: {err}");
        }
        let mut aps_in_data = push(None);
        aps_in_data.data.insert("aps".into(), "x".into());
        assert!(
            check(&aps_in_data)
                .unwrap_err()
                .contains("data key \"aps\"")
        );
        assert!(
            check(&push(Some(
                json!({"headers": {"apns-collapse-id": "x".repeat(64)}})
            )))
            .is_ok()
        );
    }

    #[test]
    fn a_payload_over_4_kb_is_refused_with_its_size() {
        let mut big = push(None);
        // 4.5 KB of data.
        big.data.insert("detail".into(), "가".repeat(1500));
        let size = request_size(&big);
        assert!((4500..5120).contains(&size), "{size}");
        assert_eq!(
            check(&big).unwrap_err(),
            format!(
                "the APNs payload would be {} bytes; Apple takes at most 4,096",
                grouped(size)
            )
        );
        // Just inside: exactly 4,096 bytes passes.
        let mut edge = push(None);
        let base = request_size(&edge) + r#","pad":"""#.len();
        edge.data.insert("pad".into(), "x".repeat(4096 - base));
        assert_eq!(request_size(&edge), 4096);
        assert!(check(&edge).is_ok());
        edge.data.insert("pad".into(), "x".repeat(4097 - base));
        assert!(check(&edge).is_err());
        // A VoIP push may be 5 KB.
        big.apns = Some(json!({"headers": {"apns-push-type": "voip"}}));
        assert!(check(&big).is_ok());
    }

    /// The payload's size, built without any check.
    fn request_size(push: &Push) -> usize {
        let options = Options::read(push.apns.as_ref()).unwrap();
        serde_json::to_vec(&Payload::of(push, &options))
            .unwrap()
            .len()
    }

    #[test]
    fn sizes_are_written_with_thousands_separated() {
        assert_eq!(grouped(0), "0");
        assert_eq!(grouped(999), "999");
        assert_eq!(grouped(4096), "4,096");
        assert_eq!(grouped(1_234_567), "1,234,567");
    }
}
