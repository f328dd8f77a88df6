//! How a record is written to and read from `rec:{id}`.
//!
//! Memory decides how many days of pushes one Redis holds, so a stored record leaves
//! out what can be restored on reading: standard message fields that are empty,
//! outcome fields still at their defaults, and the parts of the route decision that
//! repeat the message (the token, title and body of a plain send). Every read goes
//! through [`decode`], every write of a whole record through [`encode`], so nothing
//! outside this file sees the compact form.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::StoreError;
use crate::push::fields::STANDARD_FIELDS;
use crate::push::{Decision, Push, Record, Target};

/// Parts of `decision.push` that may repeat a message field: (push part, message field).
const SAME_AS_MESSAGE: &[(&str, &str)] = &[
    ("token", "device_id"),
    ("title", "msg_title"),
    ("body", "msg_contents"),
];

/// The (non-empty) message field a push part may repeat, by [`SAME_AS_MESSAGE`].
fn message_part<'f>(fields: &'f Map<String, Value>, part: &str) -> Option<&'f str> {
    let (_, name) = SAME_AS_MESSAGE.iter().find(|(p, _)| *p == part)?;
    fields
        .get(*name)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
}

/// Parse a stored record and restore what [`encode`] left out: straight from the text
/// into the typed record (no intermediate JSON tree), then the empty standard fields and
/// the decision's parts named in `same` put back.
pub fn decode(text: &str) -> Result<Record, StoreError> {
    let stored: StoredRecord = serde_json::from_str(text)
        .map_err(|e| StoreError::Protocol(format!("record is not a stored record: {e}")))?;
    let mut record = stored.record;
    record.decision = stored.decision.map(|d| d.restore(&record.message));
    for name in STANDARD_FIELDS {
        record
            .message
            .entry(name)
            .or_insert_with(|| Value::from(""));
    }
    Ok(record)
}

/// A record as stored: its decision may name parts in `same` instead of holding them.
#[derive(serde::Deserialize)]
struct StoredRecord {
    #[serde(default)]
    decision: Option<StoredDecision>,
    #[serde(flatten)]
    record: Record,
}

#[derive(serde::Deserialize)]
#[serde(tag = "action", rename_all = "snake_case")]
enum StoredDecision {
    Send { push: StoredPush },
    Later { at_ms: i64, push: StoredPush },
    Drop { reason: String },
}

#[derive(serde::Deserialize)]
struct StoredPush {
    #[serde(default)]
    target: Option<Target>,
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    body: Option<String>,
    #[serde(default)]
    image: Option<String>,
    #[serde(default)]
    data: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    android: Option<Value>,
    #[serde(default)]
    apns: Option<Value>,
    #[serde(default)]
    ttl: Option<u64>,
    #[serde(default)]
    app: Option<String>,
    #[serde(default)]
    lane: Option<crate::push::Lane>,
    #[serde(default)]
    kind: Option<crate::push::Kind>,
    #[serde(default)]
    held: Option<String>,
    #[serde(default)]
    fallback: Vec<String>,
    #[serde(default)]
    same: Vec<String>,
}

impl StoredDecision {
    fn restore(self, fields: &Map<String, Value>) -> Decision {
        match self {
            StoredDecision::Send { push } => Decision::Send {
                push: push.restore(fields),
            },
            StoredDecision::Later { at_ms, push } => Decision::Later {
                at_ms,
                push: push.restore(fields),
            },
            StoredDecision::Drop { reason } => Decision::Drop { reason },
        }
    }
}

impl StoredPush {
    fn restore(self, fields: &Map<String, Value>) -> Push {
        let field = |part: &str| message_part(fields, part).map(str::to_owned);
        let same = |part: &str| self.same.iter().any(|s| s == part);
        let target = match self.target {
            Some(target) => target,
            None => Target::Token(field("token").unwrap_or_default()),
        };
        Push {
            target,
            title: if same("title") {
                field("title")
            } else {
                self.title
            },
            body: if same("body") {
                field("body")
            } else {
                self.body
            },
            image: self.image,
            data: self.data,
            android: self.android,
            apns: self.apns,
            ttl_secs: self.ttl,
            app: self.app,
            lane: self.lane,
            kind: self.kind,
            held: self.held,
            fallback: self.fallback,
        }
    }
}

/// Serialise a whole record in its compact form, straight from the typed record.
pub fn encode(record: &Record) -> String {
    serde_json::to_string(&Compact(record)).unwrap_or_default()
}

/// Whether a message field may be left out of the stored record.
pub fn omit_field(name: &str, value: &Value) -> bool {
    value.as_str() == Some("") && STANDARD_FIELDS.contains(&name)
}

/// A message's fields as stored: empty standard fields left out.
pub struct CompactFields<'a>(pub &'a Map<String, Value>);

impl Serialize for CompactFields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        for (k, v) in self.0.iter().filter(|(k, v)| !omit_field(k, v)) {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

/// A route decision as stored: a send's token, title and body that equal the message's
/// fields are named in `same` instead of repeated.
pub struct CompactDecision<'a> {
    pub decision: &'a Decision,
    pub fields: &'a Map<String, Value>,
}

impl Serialize for CompactDecision<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(None)?;
        match self.decision {
            Decision::Send { push } => {
                map.serialize_entry("action", "send")?;
                map.serialize_entry("push", &self.push(push))?;
            }
            Decision::Later { at_ms, push } => {
                map.serialize_entry("action", "later")?;
                map.serialize_entry("at_ms", at_ms)?;
                map.serialize_entry("push", &self.push(push))?;
            }
            Decision::Drop { reason } => {
                map.serialize_entry("action", "drop")?;
                map.serialize_entry("reason", reason)?;
            }
        }
        map.end()
    }
}

impl<'a> CompactDecision<'a> {
    fn push(&self, push: &'a Push) -> CompactPush<'a> {
        let same = |part: &str, value: Option<&str>| {
            value.is_some() && value == message_part(self.fields, part)
        };
        let token = match &push.target {
            Target::Token(t) => Some(t.as_str()),
            _ => None,
        };
        CompactPush {
            push,
            same_token: same("token", token),
            same_title: same("title", push.title.as_deref()),
            same_body: same("body", push.body.as_deref()),
        }
    }
}

struct CompactPush<'a> {
    push: &'a Push,
    same_token: bool,
    same_title: bool,
    same_body: bool,
}

impl Serialize for CompactPush<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let p = self.push;
        let mut map = s.serialize_map(None)?;
        if !self.same_token {
            map.serialize_entry("target", &p.target)?;
        }
        if let (false, Some(title)) = (self.same_title, &p.title) {
            map.serialize_entry("title", title)?;
        }
        if let (false, Some(body)) = (self.same_body, &p.body) {
            map.serialize_entry("body", body)?;
        }
        if let Some(image) = &p.image {
            map.serialize_entry("image", image)?;
        }
        if !p.data.is_empty() {
            map.serialize_entry("data", &p.data)?;
        }
        if let Some(android) = &p.android {
            map.serialize_entry("android", android)?;
        }
        if let Some(apns) = &p.apns {
            map.serialize_entry("apns", apns)?;
        }
        if let Some(ttl) = p.ttl_secs {
            map.serialize_entry("ttl", &ttl)?;
        }
        // The default app and the normal lane are what an absent key reads as.
        let queue = p.queue();
        if queue.app != crate::push::DEFAULT_APP {
            map.serialize_entry("app", &queue.app)?;
        }
        if queue.lane != crate::push::Lane::Normal {
            map.serialize_entry("lane", &queue.lane)?;
        }
        // Informational is what an absent key reads as.
        if p.is_ad() {
            map.serialize_entry("kind", &crate::push::Kind::Ad)?;
        }
        if let Some(held) = &p.held {
            map.serialize_entry("held", held)?;
        }
        if !p.fallback.is_empty() {
            map.serialize_entry("fallback", &p.fallback)?;
        }
        let same: Vec<&str> = [
            (self.same_token, "token"),
            (self.same_title, "title"),
            (self.same_body, "body"),
        ]
        .into_iter()
        .filter_map(|(same, part)| same.then_some(part))
        .collect();
        if !same.is_empty() {
            map.serialize_entry("same", &same)?;
        }
        map.end()
    }
}

/// A whole record as stored: outcome fields at their defaults left out too.
struct Compact<'a>(&'a Record);

impl Serialize for Compact<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let r = self.0;
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("id", &r.id)?;
        for (k, v) in r.message.iter().filter(|(k, v)| !omit_field(k, v)) {
            map.serialize_entry(k, v)?;
        }
        map.serialize_entry("worker", &r.worker)?;
        map.serialize_entry("status", &r.status)?;
        map.serialize_entry("received_at", &r.received_at)?;
        if r.attempts != 0 {
            map.serialize_entry("attempts", &r.attempts)?;
        }
        if r.fcm_send_yn != "N" {
            map.serialize_entry("fcm_send_yn", &r.fcm_send_yn)?;
        }
        if !r.fcm_send_time.is_empty() {
            map.serialize_entry("fcm_send_time", &r.fcm_send_time)?;
        }
        if !r.result.is_empty() {
            map.serialize_entry("result", &r.result)?;
        }
        if let Some(decision) = &r.decision {
            let compact = CompactDecision {
                decision,
                fields: &r.message,
            };
            map.serialize_entry("decision", &compact)?;
        }
        if let Some(due_at) = r.due_at {
            map.serialize_entry("due_at", &due_at)?;
        }
        if let Some(error) = &r.error {
            map.serialize_entry("error", error)?;
        }
        if !r.history.is_empty() {
            map.serialize_entry("history", &r.history)?;
        }
        if r.dry_run {
            map.serialize_entry("dry_run", &true)?;
        }
        if r.legal_hold {
            map.serialize_entry("legal_hold", &true)?;
        }
        if !r.fallback.is_empty() {
            map.serialize_entry("fallback", &r.fallback)?;
        }
        if let Some(at) = r.requeued_at {
            map.serialize_entry("requeued_at", &at)?;
        }
        if let Some(receipt) = r.receipt.filter(|r| !r.is_empty()) {
            map.serialize_entry("receipt", &receipt)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn full() -> Value {
        json!({
            "id": 7, "uniqueKey": "K", "sndn_rsev_hour": "", "csno": "123", "uuid_id": "",
            "device_id": "tok-abc", "msg_title": "이체 완료", "msg_contents": "10,000원",
            "D_servicename": "TRF", "push_grp_id": "", "cust_telno": "01012345678",
            "extra": "", "worker": "p", "status": "queued", "received_at": 1, "attempts": 0,
            "fcm_send_yn": "N", "fcm_send_time": "", "result": "",
            "decision": {"action": "send", "push": {"target": {"token": "tok-abc"}, "title": "이체 완료",
                "body": "다른 본문", "data": {"uniqueKey": "K"}}}
        })
    }

    fn typed(value: Value) -> Record {
        serde_json::from_value(value).unwrap()
    }

    #[test]
    fn a_record_round_trips_through_its_compact_form() {
        let record = typed(full());
        let stored = encode(&record);
        assert_eq!(decode(&stored).unwrap(), record);
        assert_eq!(decode(&stored).unwrap().to_json(), full());
        assert!(stored.len() + 100 < full().to_string().len(), "{stored}");
    }

    #[test]
    fn the_compact_form_leaves_out_only_what_can_be_restored() {
        let stored: Value = serde_json::from_str(&encode(&typed(full()))).unwrap();
        for gone in [
            "sndn_rsev_hour",
            "uuid_id",
            "push_grp_id",
            "attempts",
            "fcm_send_yn",
            "fcm_send_time",
            "result",
        ] {
            assert!(stored.get(gone).is_none(), "{gone} left out");
        }
        assert_eq!(
            stored["extra"], "",
            "a non-standard empty field is the sender's data: kept"
        );
        let push = &stored["decision"]["push"];
        assert_eq!(push["same"], json!(["token", "title"]));
        assert!(push.get("target").is_none() && push.get("title").is_none());
        assert_eq!(push["body"], "다른 본문", "a body that differs is kept");
    }

    #[test]
    fn a_sent_record_keeps_its_outcome_fields() {
        let mut record = typed(full());
        record.attempts = 1;
        record.fcm_send_yn = "Y".into();
        let stored: Value = serde_json::from_str(&encode(&record)).unwrap();
        assert_eq!(
            (stored["attempts"].clone(), stored["fcm_send_yn"].clone()),
            (json!(1), json!("Y"))
        );
        assert_eq!(decode(&encode(&record)).unwrap(), record);
    }

    #[test]
    fn a_record_keeps_its_receipt_through_the_compact_form() {
        let mut record = typed(full());
        record.receipt = Some(crate::push::Receipt {
            delivered_at: Some(1_718_000_000_000),
            opened_at: None,
        });
        let stored: Value = serde_json::from_str(&encode(&record)).unwrap();
        assert_eq!(
            stored["receipt"],
            json!({"delivered_at": 1_718_000_000_000_i64})
        );
        assert_eq!(decode(&encode(&record)).unwrap(), record);
        record.receipt = None;
        assert!(!encode(&record).contains("receipt"), "no receipt, no key");
    }

    #[test]
    fn a_fallback_ladder_and_its_rung_attempts_round_trip() {
        let mut full = full();
        full["decision"]["push"]["fallback"] = json!(["alimtalk", "sms"]);
        full["fallback"] = json!([
            {"rung": "alimtalk", "at": 5, "attempt": 1, "http": 400, "outcome": "failed",
             "answer": "{\"code\":\"REJECTED\"}"},
            {"rung": "sms", "at": 6, "attempt": 1, "http": 200, "outcome": "sent"}
        ]);
        let record = typed(full.clone());
        assert_eq!(record.next_rung(None), Some("alimtalk"));
        assert_eq!(record.next_rung(Some("alimtalk")), Some("sms"));
        assert_eq!(record.next_rung(Some("sms")), None);
        let stored = encode(&record);
        assert_eq!(decode(&stored).unwrap(), record);
        assert_eq!(decode(&stored).unwrap().to_json(), full);
    }

    #[test]
    fn a_topic_send_keeps_its_target() {
        let mut full = full();
        full["decision"]["push"]["target"] = json!({"topic": "news"});
        let record = typed(full);
        let stored: Value = serde_json::from_str(&encode(&record)).unwrap();
        assert_eq!(
            stored["decision"]["push"]["target"],
            json!({"topic": "news"})
        );
        assert_eq!(decode(&encode(&record)).unwrap(), record);
    }

    #[test]
    fn an_ads_kind_and_hold_reason_round_trip_and_info_is_left_out() {
        let mut full = full();
        full["decision"]["push"]["kind"] = json!("ad");
        full["decision"]["push"]["held"] = json!("held: night");
        let record = typed(full);
        let stored: Value = serde_json::from_str(&encode(&record)).unwrap();
        assert_eq!(stored["decision"]["push"]["kind"], "ad");
        assert_eq!(decode(&encode(&record)).unwrap(), record);
        let mut info = self::full();
        info["decision"]["push"]["kind"] = json!("info");
        let stored: Value = serde_json::from_str(&encode(&typed(info))).unwrap();
        assert!(stored["decision"]["push"].get("kind").is_none());
    }
}
