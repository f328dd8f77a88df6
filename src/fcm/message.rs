//! The body of `messages:send`: FCM HTTP v1's `message`, built from a route decision's
//! [`Push`] as typed structs that borrow from it.
//!
//! Fields are declared in alphabetical order on purpose: the body used to be a
//! `serde_json::Value`, whose map sorts its keys, and declaring them so keeps the bytes
//! on the wire the same.

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::Value;

use crate::push::{Push, Target};

/// The FCM HTTP v1 `message` for one push.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Message<'a> {
    /// FCM's `android` object as the script built it (with `ttl` from the push's own
    /// `ttl` when the script set none).
    #[serde(skip_serializing_if = "Option::is_none")]
    android: Option<Cow<'a, Value>>,
    /// FCM's `apns` object as the script built it (with the `apns-expiration` header
    /// from the push's `ttl` when the script set none).
    #[serde(skip_serializing_if = "Option::is_none")]
    apns: Option<Cow<'a, Value>>,
    /// A topic condition; one of `condition`, `token`, `topic` is set, never two.
    #[serde(skip_serializing_if = "Option::is_none")]
    condition: Option<&'a str>,
    /// String pairs for the app; left out when there are none.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    data: &'a BTreeMap<String, String>,
    /// What the device shows; left out when the push has no title, body or image.
    #[serde(skip_serializing_if = "Option::is_none")]
    notification: Option<Notification<'a>>,
    /// A registration token.
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<&'a str>,
    /// A bare topic name.
    #[serde(skip_serializing_if = "Option::is_none")]
    topic: Option<&'a str>,
}

/// FCM's `notification`: each part only when the push has it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
struct Notification<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    body: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    image: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    title: Option<&'a str>,
}

/// When a push with a `ttl` stops being worth delivering.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expiry {
    /// Seconds left (FCM's `android.ttl`), at least 1.
    pub remaining_secs: u64,
    /// The deadline as unix seconds (APNs' `apns-expiration`).
    pub at_secs: i64,
}

impl Expiry {
    /// The expiry of a deadline (unix ms) seen at `now_ms`.
    pub fn of(deadline_ms: i64, now_ms: i64) -> Expiry {
        Expiry {
            remaining_secs: ((deadline_ms - now_ms).max(1000) / 1000) as u64,
            at_secs: deadline_ms.div_euclid(1000),
        }
    }
}

/// `object` (or `{}`) with `value` at `path`, unless the script put something there
/// already or built something other than a map on the way: then as the script built it.
fn with_default<'a>(
    object: Option<&'a Value>,
    path: &[&str],
    value: Value,
) -> Option<Cow<'a, Value>> {
    let mut owned = object
        .cloned()
        .unwrap_or_else(|| Value::Object(Default::default()));
    let (last, parents) = path.split_last()?;
    let mut at = &mut owned;
    for key in parents {
        let Some(map) = at.as_object_mut() else {
            return object.map(Cow::Borrowed);
        };
        at = map
            .entry((*key).to_owned())
            .or_insert_with(|| Value::Object(Default::default()));
    }
    match at.as_object_mut() {
        Some(map) if !map.contains_key(*last) => {
            map.insert((*last).to_owned(), value);
        }
        _ => return object.map(Cow::Borrowed),
    }
    Some(Cow::Owned(owned))
}

impl<'a> Message<'a> {
    /// The message a push with a `ttl` sends: as [`Message::for_push`], with FCM's
    /// `android.ttl` and APNs' `apns-expiration` set from `expiry` where the script did
    /// not set them itself.
    pub fn expiring(push: &'a Push, expiry: Expiry) -> Message<'a> {
        let mut message = Message::for_push(push);
        message.android = with_default(
            push.android.as_ref(),
            &["ttl"],
            Value::from(format!("{}s", expiry.remaining_secs)),
        );
        message.apns = with_default(
            push.apns.as_ref(),
            &["headers", "apns-expiration"],
            Value::from(expiry.at_secs.to_string()),
        );
        message
    }

    /// The message a route decision's push sends: exactly one target, and only the parts
    /// the push has.
    pub fn for_push(push: &'a Push) -> Message<'a> {
        let (mut token, mut topic, mut condition) = (None, None, None);
        match &push.target {
            Target::Token(t) => token = Some(t.as_str()),
            Target::Topic(t) => topic = Some(t.as_str()),
            Target::Condition(c) => condition = Some(c.as_str()),
        }
        let notification = Notification {
            body: push.body.as_deref(),
            image: push.image.as_deref(),
            title: push.title.as_deref(),
        };
        let has_notification = notification.body.is_some()
            || notification.image.is_some()
            || notification.title.is_some();
        Message {
            android: push.android.as_ref().map(Cow::Borrowed),
            apns: push.apns.as_ref().map(Cow::Borrowed),
            condition,
            data: &push.data,
            notification: has_notification.then_some(notification),
            token,
            topic,
        }
    }
}

/// The whole `messages:send` body.
#[derive(Debug, Serialize)]
pub(super) struct SendRequest<'a> {
    pub(super) message: &'a Message<'a>,
    /// FCM checks the message and sends it to nobody (the sender's dry run).
    pub(super) validate_only: bool,
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_ttl_becomes_android_ttl_and_the_apns_expiration_unless_the_script_set_them() {
        let mut push = Push {
            ttl_secs: Some(60),
            ..Push::new(Target::Token("tok".into()))
        };
        let expiry = Expiry::of(1_000_060_000, 1_000_000_000);
        assert_eq!(
            serde_json::to_value(Message::expiring(&push, expiry)).unwrap(),
            json!({"token": "tok", "android": {"ttl": "60s"},
                   "apns": {"headers": {"apns-expiration": "1000060"}}})
        );
        push.android = Some(json!({"priority": "high", "ttl": "10s"}));
        push.apns = Some(json!({"headers": {"apns-priority": "5"}}));
        assert_eq!(
            serde_json::to_value(Message::expiring(&push, expiry)).unwrap(),
            json!({"token": "tok", "android": {"priority": "high", "ttl": "10s"},
                   "apns": {"headers": {"apns-priority": "5", "apns-expiration": "1000060"}}})
        );
        assert_eq!(Expiry::of(1_000, 5_000).remaining_secs, 1, "never 0s");
    }

    #[test]
    fn a_push_becomes_an_fcm_message_with_exactly_one_target() {
        let push = Push {
            title: Some("제목".into()),
            data: [("uniqueKey".to_owned(), "K1".to_owned())].into(),
            android: Some(json!({"priority": "high"})),
            ..Push::new(Target::Topic("news".into()))
        };
        assert_eq!(
            serde_json::to_value(Message::for_push(&push)).unwrap(),
            json!({"topic": "news", "notification": {"title": "제목"}, "data": {"uniqueKey": "K1"}, "android": {"priority": "high"}})
        );
        let bare = Push::new(Target::Token("tok".into()));
        assert_eq!(
            serde_json::to_value(Message::for_push(&bare)).unwrap(),
            json!({"token": "tok"})
        );
    }

    #[test]
    fn the_send_body_has_the_same_bytes_as_the_json_value_it_replaced() {
        let push = Push {
            title: Some("t".into()),
            body: Some("b".into()),
            image: Some("https://example.com/i.png".into()),
            data: [
                ("z".to_owned(), "1".to_owned()),
                ("a".to_owned(), "2".to_owned()),
            ]
            .into(),
            android: Some(json!({"priority": "high", "ttl": "60s"})),
            apns: Some(json!({"headers": {"apns-priority": "10"}})),
            ..Push::new(Target::Condition("'a' in topics".into()))
        };
        let message = Message::for_push(&push);
        let body = SendRequest {
            message: &message,
            validate_only: true,
        };
        let bytes = serde_json::to_string(&body).unwrap();
        // A Value's map sorts its keys: what `message_for` built and `send` sent before.
        let as_value = serde_json::to_value(&body).unwrap().to_string();
        assert_eq!(bytes, as_value);
        assert_eq!(
            bytes,
            concat!(
                r#"{"message":{"android":{"priority":"high","ttl":"60s"},"#,
                r#""apns":{"headers":{"apns-priority":"10"}},"condition":"'a' in topics","#,
                r#""data":{"a":"2","z":"1"},"#,
                r#""notification":{"body":"b","image":"https://example.com/i.png","title":"t"}},"#,
                r#""validate_only":true}"#
            )
        );
    }
}
