//! What the console and the API show of sending: each app's state as this node's sender
//! sees it (health, pace against its rate, access token, last error) and every due
//! queue's depth. Built here once; the dashboard's cards, its live stream,
//! `GET /api/v1/apps`, `GET /api/v1/queues` and the queue gauges of `/metrics` all read
//! these views.
//!
//! Nothing here is personal except a provider's answer text, which goes through
//! [`view::text`] for the caller's sight like any other free text.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::view::{self, Sight};
use crate::config::Config;
use crate::push::Lane;
use crate::sender::Apps;
use crate::sender::health::SeenError;
use crate::store::{Store, StoreError};

/// An app's state, worst first: what the card's badge says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum AppState {
    /// Configured, but its sender did not start (its key file, say): see the log.
    NotRunning,
    /// An answer no retry can fix (THIRD_PARTY_AUTH_ERROR, SENDER_ID_MISMATCH) until a
    /// send is accepted again.
    Unhealthy,
    /// No access token yet: nothing can be sent.
    NoToken,
    /// A project quota answer holds the app back.
    Slowed,
    Ok,
}

impl AppState {
    pub fn as_str(self) -> &'static str {
        match self {
            AppState::NotRunning => "not running",
            AppState::Unhealthy => "unhealthy",
            AppState::NoToken => "no token",
            AppState::Slowed => "slowed",
            AppState::Ok => "ok",
        }
    }
}

/// One app as the console and `GET /api/v1/apps` show it.
#[derive(Debug, Clone, Serialize)]
pub struct AppView {
    pub name: String,
    pub provider: &'static str,
    /// The provider's project (FCM: the service account's `project_id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    pub state: AppState,
    /// What made it unhealthy.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unhealthy: Option<SeenError>,
    /// The app's cap in sends a second (every node together); none = no cap.
    pub rate: Option<u32>,
    pub burst: Option<u32>,
    /// This node's answers a second over the last ten seconds.
    pub sends_per_sec: f64,
    /// This node's errors over the last five minutes, by class.
    pub errors: BTreeMap<&'static str, u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<SeenError>,
    /// Until when a project quota answer holds the app back (unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slowed_until: Option<i64>,
    /// When the access token in use stops being used (unix ms); a fresh one is fetched
    /// before.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_expires_at: Option<i64>,
}

/// Every configured app (in the config's order, `default` first) and any app still
/// running that the config no longer names, as `sight` may see them.
pub fn app_views(apps: &Apps, config: &Config, sight: Sight) -> Vec<AppView> {
    let senders = apps.senders();
    let mut views = Vec::new();
    let mut shown = BTreeSet::new();
    for app in config.apps() {
        shown.insert(app.name.as_str());
        let provider = app.provider.as_str();
        match senders.iter().find(|s| s.app() == app.name) {
            Some(sender) => views.push(running(sender, provider, sight)),
            None => views.push(AppView {
                name: app.name.clone(),
                provider,
                project: None,
                state: AppState::NotRunning,
                unhealthy: None,
                rate: app.rate,
                burst: app.bucket().map(|b| b.burst),
                sends_per_sec: 0.0,
                errors: BTreeMap::new(),
                last_error: None,
                slowed_until: None,
                token_expires_at: None,
            }),
        }
    }
    for sender in &senders {
        if !shown.contains(sender.app()) {
            views.push(running(sender, sender.client().provider().as_str(), sight));
        }
    }
    views
}

/// A running app's view, from its sender.
fn running(sender: &crate::sender::Sender, provider: &'static str, sight: Sight) -> AppView {
    let health = sender.health();
    let client = sender.client();
    let token_expires_at = client.token_expires_at_ms();
    let state = if !health.healthy {
        AppState::Unhealthy
    } else if token_expires_at.is_none() {
        AppState::NoToken
    } else if health.slowed_until.is_some() {
        AppState::Slowed
    } else {
        AppState::Ok
    };
    let seen = |e: SeenError| SeenError {
        answer: view::text(&e.answer, sight),
        ..e
    };
    let bucket = sender.policy().bucket;
    AppView {
        name: sender.app().to_owned(),
        provider,
        project: Some(client.project()),
        state,
        unhealthy: health.unhealthy.map(seen),
        rate: bucket.map(|b| b.rate),
        burst: bucket.map(|b| b.burst),
        sends_per_sec: health.sends_per_sec,
        errors: health.errors,
        last_error: health.last_error.map(seen),
        slowed_until: health.slowed_until,
        token_expires_at,
    }
}

/// One due queue as the console and `GET /api/v1/queues` show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct QueueView {
    pub app: String,
    pub lane: Lane,
    /// Pushes due now.
    pub due: u64,
    /// Pushes due later (reserved times, retries).
    pub scheduled: u64,
    /// How long the oldest due push has waited (ms); 0 when none is due.
    pub oldest_ms: i64,
    /// Whether a configured app sends from it. A queue of an app removed from the config
    /// (or of `default` with no `[fcm]`) is sent by no one until the app returns.
    pub configured: bool,
}

/// Every lane of every configured app, and any other queue that holds pushes: one
/// round trip.
pub async fn queue_views(
    store: &Store,
    config: &Config,
    now_ms: i64,
) -> Result<Vec<QueueView>, StoreError> {
    let names: Vec<&str> = config.apps().map(|a| a.name.as_str()).collect();
    let depths = store.queues(&names, now_ms).await?;
    Ok(depths
        .into_iter()
        .map(|q| QueueView {
            configured: names.contains(&q.app.as_str()),
            app: q.app,
            lane: q.lane,
            due: q.due,
            scheduled: q.scheduled,
            oldest_ms: q.oldest_ms,
        })
        .filter(|q| q.configured || q.due + q.scheduled > 0)
        .collect())
}

/// A wait as people say it: "3 s", "2 min", "1 h 5 min", "2 d 3 h".
pub fn human_age(ms: i64) -> String {
    let secs = ms.max(0) / 1000;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min", secs / 60),
        3600..86_400 => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
        _ => format!("{} d {} h", secs / 86_400, secs % 86_400 / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_read_in_the_largest_sensible_unit() {
        assert_eq!(human_age(0), "0 s");
        assert_eq!(human_age(3_400), "3 s");
        assert_eq!(human_age(59_999), "59 s");
        assert_eq!(human_age(120_000), "2 min");
        assert_eq!(human_age(3_900_000), "1 h 5 min");
        assert_eq!(human_age(2 * 86_400_000 + 3 * 3_600_000), "2 d 3 h");
        assert_eq!(human_age(-5), "0 s", "a clock step back is no wait");
    }

    #[test]
    fn states_read_as_words_on_the_card_and_as_names_in_json() {
        assert_eq!(AppState::NoToken.as_str(), "no token");
        assert_eq!(
            serde_json::to_value(AppState::NotRunning).unwrap(),
            "not_running"
        );
    }
}
