//! Which queue a push waits in: its app (the provider project it is sent through) and its
//! lane (how urgently). Every due queue is one zset per app and lane, so a claim reads
//! only the queues of its own app, urgent first, in O(log N).

use serde::{Deserialize, Serialize};

/// The app a push goes to when nothing names one: `[fcm]` is this app.
pub const DEFAULT_APP: &str = "default";

/// The longest app name: it becomes part of Redis keys and metric labels.
pub const MAX_APP_NAME: usize = 32;

/// How urgently a push is sent. The sender never lets an urgent push wait behind a normal
/// or bulk one; between normal and bulk it gives normal [`NORMAL_SHARE`] of every
/// [`SHARE_ROUND`] sends while both have pushes due, so bulk is never starved.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Lane {
    /// Transfer done, order filled, a login from a new device: never waits behind others.
    Urgent,
    #[default]
    Normal,
    /// Campaigns and notices to many customers.
    Bulk,
}

/// Of every [`SHARE_ROUND`] non-urgent sends while both lanes have pushes due, this many
/// are normal and the rest bulk.
pub const NORMAL_SHARE: u32 = 4;
pub const SHARE_ROUND: u32 = 5;

impl Lane {
    pub const ALL: [Lane; 3] = [Lane::Urgent, Lane::Normal, Lane::Bulk];

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Urgent => "urgent",
            Lane::Normal => "normal",
            Lane::Bulk => "bulk",
        }
    }

    pub fn parse(text: &str) -> Option<Lane> {
        Lane::ALL.into_iter().find(|l| l.as_str() == text)
    }
}

impl std::fmt::Display for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Whether `name` may name an app: 1 to [`MAX_APP_NAME`] of `a-z 0-9 _ -`, so that it
/// is safe in Redis keys, metric labels and URLs.
pub fn is_app_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_APP_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// An app and a lane: where a push waits to be sent.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Queue {
    pub app: String,
    pub lane: Lane,
}

impl Queue {
    pub fn new(app: &str, lane: Lane) -> Queue {
        Queue {
            app: app.to_owned(),
            lane,
        }
    }

    /// The due zset's key under the prefix: `due:{app}:{lane}`.
    pub fn due_key(&self) -> String {
        due_key(&self.app, self.lane)
    }
}

impl Default for Queue {
    fn default() -> Queue {
        Queue::new(DEFAULT_APP, Lane::Normal)
    }
}

/// `due:{app}:{lane}`; claim.lua and prune.lua build the same name.
pub fn due_key(app: &str, lane: Lane) -> String {
    format!("due:{app}:{}", lane.as_str())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lanes_read_and_print_as_configured() {
        for lane in Lane::ALL {
            assert_eq!(Lane::parse(lane.as_str()), Some(lane));
        }
        assert_eq!(Lane::parse("URGENT"), None);
        assert_eq!(Lane::default(), Lane::Normal);
        assert_eq!(Queue::new("card", Lane::Bulk).due_key(), "due:card:bulk");
    }

    #[test]
    fn app_names_are_safe_in_keys_and_labels() {
        for good in ["default", "mts", "card-app", "bank_2"] {
            assert!(is_app_name(good), "{good}");
        }
        for bad in ["", "Card", "a:b", "a b", "앱", &"x".repeat(33)] {
            assert!(!is_app_name(bad), "{bad}");
        }
    }
}
