//! A route script's verdict on one push, and the message it sends: typed, already
//! checked against the provider's rules, stored with the record.

use std::collections::BTreeMap;

/// What to do with one push.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
pub enum Decision {
    /// Send now.
    Send { push: Push },
    /// Send at a reserved time (unix ms); a time already past means now.
    Later { at_ms: i64, push: Push },
    /// Never send; the reason is shown to operators.
    Drop { reason: String },
}

/// The FCM message a decision sends, already checked against FCM's rules.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Push {
    pub target: Target,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub title: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub body: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub image: Option<String>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty", default)]
    pub data: BTreeMap<String, String>,
    /// FCM's `android` object, passed through as the script built it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub android: Option<serde_json::Value>,
    /// FCM's `apns` object, passed through as the script built it.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub apns: Option<serde_json::Value>,
    /// How long the push is worth sending, in seconds from when it was due (the
    /// script's `ttl`): its deadline, FCM's `android.ttl` and the APNs expiration.
    #[serde(rename = "ttl", skip_serializing_if = "Option::is_none", default)]
    pub ttl_secs: Option<u64>,
}

/// FCM's exactly-one target.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// A registration token (the message's `device_id`).
    Token(String),
    /// A bare topic name (no `/topics/` prefix).
    Topic(String),
    /// A topic condition such as `'a' in topics && 'b' in topics`.
    Condition(String),
}
