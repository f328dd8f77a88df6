//! Where a record stands in its life.

/// Where a record stands. Stored as its snake_case name and indexed by bitmap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Received,
    Queued,
    Scheduled,
    Dropped,
    ScriptError,
    Sending,
    Retrying,
    Sent,
    Failed,
    /// Its deadline (the push's `ttl`, else `[fcm] max_age_secs`) passed before the
    /// provider accepted it: distinct from `failed`, which the provider refused.
    Expired,
}

impl Status {
    /// The statuses a record rests in (not the passing `received` and `sending`), in the
    /// order the log's status filter offers them.
    pub const RESTING: [Status; 8] = [
        Status::Queued,
        Status::Scheduled,
        Status::Retrying,
        Status::Sent,
        Status::Failed,
        Status::Expired,
        Status::Dropped,
        Status::ScriptError,
    ];

    /// The resting status with this name.
    pub fn resting(name: &str) -> Option<Status> {
        Status::RESTING.into_iter().find(|s| s.as_str() == name)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Received => "received",
            Status::Queued => "queued",
            Status::Scheduled => "scheduled",
            Status::Dropped => "dropped",
            Status::ScriptError => "script_error",
            Status::Sending => "sending",
            Status::Retrying => "retrying",
            Status::Sent => "sent",
            Status::Failed => "failed",
            Status::Expired => "expired",
        }
    }
}
