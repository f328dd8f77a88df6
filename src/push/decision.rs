//! A route script's verdict on one push, and the message it sends: typed, already
//! checked against the provider's rules, stored with the record.

use std::collections::BTreeMap;

use super::queue::{DEFAULT_APP, Lane, Queue};

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
    /// The app it is sent through (the script's `app`, else its port's or API key's);
    /// none on records from before apps, which belong to [`DEFAULT_APP`].
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub app: Option<String>,
    /// Its lane (the script's `lane`, else its port's or API key's); none = normal.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub lane: Option<Lane>,
    /// Advertising or informational (the script's `kind`, else its port's or API key's);
    /// none = informational. An ad passes the ad gate (consent, night window, labels).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub kind: Option<Kind>,
    /// Why the ad gate held it back (night without night consent), shown on its page.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub held: Option<String>,
    /// Its fallback ladder (the script's `fallback`): the `[[fallback]]` rungs tried in
    /// order when the push cannot reach the customer. Empty = no fallback.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub fallback: Vec<String>,
}

/// Whether a push advertises: Korean law (정보통신망법 §50) asks an ad for the customer's
/// consent, a separate consent at night, and "(광고)", the sender and an opt-out line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Transfer done, order filled, security alerts: no consent needed.
    #[default]
    Info,
    /// Anything that invites a purchase.
    Ad,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Info => "info",
            Kind::Ad => "ad",
        }
    }

    pub fn parse(text: &str) -> Option<Kind> {
        [Kind::Info, Kind::Ad]
            .into_iter()
            .find(|k| k.as_str() == text)
    }
}

impl Target {
    /// The registration token, for a token send.
    pub fn token(&self) -> Option<&str> {
        match self {
            Target::Token(token) => Some(token),
            _ => None,
        }
    }
}

impl Push {
    /// A push to `target` with nothing else said (no title, body, data, …).
    pub fn new(target: Target) -> Push {
        Push {
            target,
            title: None,
            body: None,
            image: None,
            data: BTreeMap::new(),
            android: None,
            apns: None,
            ttl_secs: None,
            app: None,
            lane: None,
            kind: None,
            held: None,
            fallback: Vec::new(),
        }
    }

    /// A push with no token to send to: allowed only with a fallback ladder, which the
    /// sender starts at once (the push ends `dropped`, reason `NO_TOKEN`).
    pub fn has_no_token(&self) -> bool {
        matches!(&self.target, Target::Token(t) if t.trim().is_empty())
    }

    /// The queue it waits in.
    pub fn queue(&self) -> Queue {
        Queue::new(
            self.app.as_deref().unwrap_or(DEFAULT_APP),
            self.lane.unwrap_or_default(),
        )
    }

    /// Fill in what the script left to its port or API key.
    pub fn default_to(&mut self, queue: &Queue) {
        self.app.get_or_insert_with(|| queue.app.clone());
        self.lane.get_or_insert(queue.lane);
    }

    /// Whether it advertises (its `kind` is `ad`).
    pub fn is_ad(&self) -> bool {
        self.kind == Some(Kind::Ad)
    }
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
