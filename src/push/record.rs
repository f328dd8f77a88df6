//! The record kept of one push: the message as it arrived, what its route decided, and
//! every attempt since. This is the domain's central object: the sender, the console,
//! the API and the store read and change it through these fields, never by JSON path.
//!
//! Its serde form is the record's full JSON (what the API returns); the store keeps a
//! compact form of it (`store::record`).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::fields::RESERVED_FIELDS;
use super::{Decision, Push, Receipt, Status, Target};

/// Attempts a record's history keeps (the oldest are dropped).
pub const HISTORY_KEPT: usize = 20;

/// One push as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Dense, growing with arrival: id order is arrival order.
    pub id: u64,
    /// The port (or `api-<key>`) it arrived on.
    pub worker: String,
    pub status: Status,
    /// Unix ms when it was stored.
    pub received_at: i64,
    /// Send attempts so far.
    #[serde(default)]
    pub attempts: u32,
    /// `Y` once the provider accepted it (never for a dry run).
    #[serde(default = "not_sent")]
    pub fcm_send_yn: String,
    /// Local time of the last attempt that reached the provider, `YYYYMMDDHHMMSS`.
    #[serde(default)]
    pub fcm_send_time: String,
    /// The provider's last answer (JSON text).
    #[serde(default)]
    pub result: String,
    /// What the route script decided; none for a `script_error`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decision: Option<Decision>,
    /// When it is next due (unix ms): its send time, reserved time or retry time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<i64>,
    /// Why the script failed (`file:line:column: message`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The last [`HISTORY_KEPT`] attempts, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Attempt>,
    /// The last attempt was a provider dry run (`validate_only`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub dry_run: bool,
    /// Retention keeps it.
    #[serde(default, skip_serializing_if = "is_false")]
    pub legal_hold: bool,
    /// When an operator last queued it again (resend, route again): it ages from then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requeued_at: Option<i64>,
    /// What the app reported after the send (`POST /api/v1/receipts`); none until it
    /// reports anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub receipt: Option<Receipt>,
    /// Its fallback ladder as climbed so far: one entry per rung attempt, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback: Vec<RungAttempt>,
    /// The message's own fields: `uniqueKey`, the standard ones, and any other its
    /// sender added, as they arrived.
    #[serde(flatten)]
    pub message: Map<String, Value>,
}

/// One send attempt as the record's history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// Unix ms.
    pub at: i64,
    pub attempt: u32,
    /// The provider's HTTP status; 0 when it was not asked.
    pub http: u16,
    /// `ACCEPTED`, or the error class.
    pub outcome: String,
    /// The provider's answer for a failure (a success's is in `result`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub answer: Option<String>,
}

/// One attempt on one rung of a push's fallback ladder (`[[fallback]]`), as the record
/// and the push page show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RungAttempt {
    /// The rung's name (`alimtalk`, `sms`).
    pub rung: String,
    /// Unix ms.
    pub at: i64,
    /// 1 for the rung's first attempt.
    pub attempt: u32,
    /// The gateway's HTTP status; 0 when it was not asked (deadline passed, no address).
    pub http: u16,
    /// Where the rung stands after this attempt.
    pub outcome: RungOutcome,
    /// The gateway's answer (JSON text), or why it was not asked.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub answer: String,
}

/// Where one rung of a fallback ladder stands; `failed` and `expired` pass the push to
/// the next rung. Indexed by bitmap (`bit:fallback:{rung}:{outcome}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RungOutcome {
    /// The gateway accepted the message: the ladder ends here.
    Sent,
    /// A transient failure: tried again with backoff until the rung's deadline.
    Retrying,
    /// The gateway refused it for good.
    Failed,
    /// The rung's deadline (`max_age_secs`) passed before the gateway accepted it.
    Expired,
}

impl RungOutcome {
    /// Every outcome, in the order the log's fallback filter offers them.
    pub const ALL: [RungOutcome; 4] = [
        RungOutcome::Sent,
        RungOutcome::Retrying,
        RungOutcome::Failed,
        RungOutcome::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            RungOutcome::Sent => "sent",
            RungOutcome::Retrying => "retrying",
            RungOutcome::Failed => "failed",
            RungOutcome::Expired => "expired",
        }
    }

    /// The outcome with this name.
    pub fn parse(name: &str) -> Option<RungOutcome> {
        RungOutcome::ALL.into_iter().find(|o| o.as_str() == name)
    }

    /// Whether the ladder goes on to its next rung.
    pub fn falls_through(self) -> bool {
        matches!(self, RungOutcome::Failed | RungOutcome::Expired)
    }
}

fn not_sent() -> String {
    "N".into()
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Record {
    /// The idempotency key it arrived with.
    pub fn unique_key(&self) -> &str {
        self.text("uniqueKey")
    }

    /// A message field as text (`""` when absent or not text).
    pub fn text(&self, field: &str) -> &str {
        self.message
            .get(field)
            .and_then(Value::as_str)
            .unwrap_or_default()
    }

    /// The push its route decided to send, if it decided to send one.
    pub fn push(&self) -> Option<&Push> {
        match &self.decision {
            Some(Decision::Send { push } | Decision::Later { push, .. }) => Some(push),
            _ => None,
        }
    }

    /// The queue it waits in when due: its push's, else the default one (queue.lua's rule).
    pub fn queue(&self) -> super::Queue {
        self.push().map(|p| p.queue()).unwrap_or_default()
    }

    /// The registration token it is sent to, for a token send.
    pub fn token(&self) -> Option<&str> {
        match &self.push()?.target {
            Target::Token(token) => Some(token),
            _ => None,
        }
    }

    /// When it started to age: its reserved time for a `Later` decision, else arrival,
    /// or when an operator queued it again if that is later.
    pub fn age_from(&self) -> i64 {
        let due = match &self.decision {
            Some(Decision::Later { at_ms, .. }) => self.received_at.max(*at_ms),
            _ => self.received_at,
        };
        due.max(self.requeued_at.unwrap_or(0))
    }

    /// When it stops being worth sending (unix ms): from when it started to age, its
    /// push's `ttl`, else `max_age_ms`.
    pub fn deadline(&self, max_age_ms: i64) -> i64 {
        let ttl_ms = self
            .push()
            .and_then(|p| p.ttl_secs)
            .map_or(max_age_ms, |secs| secs as i64 * 1000);
        self.age_from().saturating_add(ttl_ms)
    }

    /// The message as it arrived, for routing it again or trying a script on it.
    pub fn message_fields(&self) -> Map<String, Value> {
        let mut fields = self.message.clone();
        for name in RESERVED_FIELDS {
            fields.remove(*name);
        }
        fields
    }

    /// A message or outcome field as the log shows it in a column.
    pub fn column(&self, name: &str) -> String {
        match name {
            "fcm_send_yn" => self.fcm_send_yn.clone(),
            "fcm_send_time" => self.fcm_send_time.clone(),
            "result" => self.result.clone(),
            "status" => self.status.as_str().to_owned(),
            "worker" => self.worker.clone(),
            _ => match self.message.get(name) {
                None | Some(Value::Null) => String::new(),
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
            },
        }
    }

    /// The whole record as JSON (what the API and the console's views start from).
    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The rung of its ladder after `rung` (the first rung when `rung` is `None`), if any.
    pub fn next_rung(&self, rung: Option<&str>) -> Option<&str> {
        let ladder = &self.push()?.fallback;
        let at = match rung {
            None => 0,
            Some(rung) => ladder.iter().position(|r| r == rung)? + 1,
        };
        ladder.get(at).map(String::as_str)
    }

    /// Add a rung attempt, keeping only the last [`HISTORY_KEPT`].
    pub fn remember_rung(&mut self, attempt: RungAttempt) {
        self.fallback.push(attempt);
        let excess = self.fallback.len().saturating_sub(HISTORY_KEPT);
        self.fallback.drain(..excess);
    }

    /// `current` (the record as stored now) with this send attempt's part applied: what
    /// the sender owns (status, attempts, the send flag and time, the answer, dry run,
    /// when it is due, the attempt history) from `self`, everything else — a legal hold,
    /// the fallback ladder's attempts, the receipt — as stored.
    pub fn attempt_over(&self, mut current: Record) -> Record {
        current.status = self.status;
        current.attempts = self.attempts;
        current.fcm_send_yn = self.fcm_send_yn.clone();
        current.fcm_send_time = self.fcm_send_time.clone();
        current.result = self.result.clone();
        current.dry_run = self.dry_run;
        current.due_at = self.due_at;
        current.history = self.history.clone();
        current
    }

    /// Add an attempt, keeping only the last [`HISTORY_KEPT`].
    pub fn remember(&mut self, attempt: Attempt) {
        self.history.push(attempt);
        let excess = self.history.len().saturating_sub(HISTORY_KEPT);
        self.history.drain(..excess);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> Value {
        json!({
            "id": 7, "uniqueKey": "K", "csno": "123", "device_id": "tok",
            "msg_title": "이체", "extra": "x", "worker": "p", "status": "retrying",
            "received_at": 1000, "attempts": 2, "fcm_send_yn": "N", "fcm_send_time": "",
            "result": "{}", "due_at": 5000,
            "decision": {"action": "later", "at_ms": 3000,
                "push": {"target": {"token": "tok"}, "title": "이체"}},
            "history": [{"at": 2000, "attempt": 1, "http": 503, "outcome": "UNAVAILABLE", "answer": "{}"},
                        {"at": 2500, "attempt": 2, "http": 200, "outcome": "ACCEPTED"}]
        })
    }

    #[test]
    fn a_records_json_round_trips_through_the_type() {
        let record: Record = serde_json::from_value(stored()).unwrap();
        assert_eq!(record.to_json(), stored());
        assert_eq!(record.unique_key(), "K");
        assert_eq!(record.token(), Some("tok"));
        assert_eq!(
            record.age_from(),
            3000,
            "a reserved push ages from its time"
        );
        assert_eq!(record.status, Status::Retrying);
        assert_eq!(record.history[1].answer, None);
    }

    #[test]
    fn the_message_fields_are_the_record_without_pushgates_own() {
        let record: Record = serde_json::from_value(stored()).unwrap();
        let fields = record.message_fields();
        assert_eq!(
            fields.keys().collect::<Vec<_>>(),
            ["csno", "device_id", "extra", "msg_title", "uniqueKey"]
        );
    }

    #[test]
    fn history_keeps_the_last_twenty() {
        let mut record: Record = serde_json::from_value(stored()).unwrap();
        for n in 3..=30 {
            record.remember(Attempt {
                at: n,
                attempt: n as u32,
                http: 503,
                outcome: "UNAVAILABLE".into(),
                answer: None,
            });
        }
        assert_eq!(record.history.len(), HISTORY_KEPT);
        assert_eq!(record.history[0].attempt, 11);
    }
}
