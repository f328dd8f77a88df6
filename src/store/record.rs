//! How a record is written to and read from `rec:{id}`.
//!
//! Memory decides how many days of pushes one Redis holds, so a stored record leaves
//! out what can be restored on reading: standard message fields that are empty,
//! outcome fields still at their defaults, and the parts of the route decision that
//! repeat the message (the token, title and body of a plain send). Every read goes
//! through [`decode`], every write of a whole record through [`encode`], so nothing
//! outside this file sees the compact form.

use serde_json::{Map, Value};

use super::StoreError;
use crate::push::fields::STANDARD_FIELDS;

/// Outcome fields and the value they have until the first send.
const DEFAULTS: &[(&str, DefaultValue)] = &[
    ("attempts", DefaultValue::Zero),
    ("fcm_send_yn", DefaultValue::Text("N")),
    ("fcm_send_time", DefaultValue::Text("")),
    ("result", DefaultValue::Text("")),
];

#[derive(Clone, Copy)]
enum DefaultValue {
    Zero,
    Text(&'static str),
}

impl DefaultValue {
    fn value(self) -> Value {
        match self {
            DefaultValue::Zero => Value::from(0),
            DefaultValue::Text(t) => Value::from(t),
        }
    }
}

/// Parts of `decision.push` that may repeat a message field: (push path, message field).
const SAME_AS_MESSAGE: &[(&str, &str)] = &[
    ("token", "device_id"),
    ("title", "msg_title"),
    ("body", "msg_contents"),
];

/// Parse a stored record and restore what [`encode`] left out.
pub fn decode(text: &str) -> Result<Value, StoreError> {
    let mut record: Value = serde_json::from_str(text)
        .map_err(|e| StoreError::Protocol(format!("record is not JSON: {e}")))?;
    if let Some(map) = record.as_object_mut() {
        expand(map);
    }
    Ok(record)
}

/// Serialise a whole record in its compact form.
/// Serialised straight from the record (no copy of it): only the decision, when there
/// is one, is copied to be compacted.
pub fn encode(record: &Value) -> String {
    struct Compact<'a>(&'a Map<String, Value>);
    impl serde::Serialize for Compact<'_> {
        fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            use serde::ser::SerializeMap;
            let mut out = s.serialize_map(None)?;
            for (name, value) in self.0 {
                let default = DEFAULTS
                    .iter()
                    .any(|(n, d)| n == name && *value == d.value());
                if default || omit_field(name, value) {
                    continue;
                }
                if name == "decision" {
                    out.serialize_entry(name, &compact_decision(value.clone(), self.0))?;
                } else {
                    out.serialize_entry(name, value)?;
                }
            }
            out.end()
        }
    }
    match record.as_object() {
        Some(map) => serde_json::to_string(&Compact(map)).unwrap_or_default(),
        None => record.to_string(),
    }
}

/// The message as it arrived: a record without the fields pushgate added.
pub fn message_fields(record: &Value) -> Map<String, Value> {
    let mut fields = record.as_object().cloned().unwrap_or_default();
    for name in crate::push::fields::RESERVED_FIELDS {
        fields.remove(*name);
    }
    fields
}

/// Whether a message field may be left out of the stored record.
pub fn omit_field(name: &str, value: &Value) -> bool {
    value.as_str() == Some("") && STANDARD_FIELDS.contains(&name)
}

/// The route decision as stored: a plain send's token, title and body that equal the
/// message's are named in `same` instead of repeated.
pub fn compact_decision(mut decision: Value, fields: &Map<String, Value>) -> Value {
    let Some(push) = decision.get_mut("push").and_then(Value::as_object_mut) else {
        return decision;
    };
    let mut same = Vec::new();
    for (part, field) in SAME_AS_MESSAGE {
        let Some(message_value) = fields
            .get(*field)
            .filter(|v| v.as_str().is_some_and(|s| !s.is_empty()))
        else {
            continue;
        };
        let stored = if *part == "token" {
            push.get("target").and_then(|t| t.get("token"))
        } else {
            push.get(*part)
        };
        if stored == Some(message_value) {
            if *part == "token" {
                push.remove("target");
            } else {
                push.remove(*part);
            }
            same.push(Value::from(*part));
        }
    }
    if !same.is_empty() {
        push.insert("same".into(), Value::Array(same));
    }
    decision
}

fn expand(map: &mut Map<String, Value>) {
    for name in STANDARD_FIELDS {
        map.entry(name).or_insert_with(|| Value::from(""));
    }
    for (name, default) in DEFAULTS {
        map.entry(*name).or_insert_with(|| default.value());
    }
    let restored: Vec<(&str, Value)> = map
        .get("decision")
        .and_then(|d| d.get("push"))
        .and_then(|p| p.get("same"))
        .and_then(Value::as_array)
        .map(|same| {
            same.iter()
                .filter_map(Value::as_str)
                .filter_map(|part| {
                    let (part, field) = SAME_AS_MESSAGE.iter().find(|(p, _)| *p == part)?;
                    Some((*part, map.get(*field)?.clone()))
                })
                .collect()
        })
        .unwrap_or_default();
    if let Some(push) = map
        .get_mut("decision")
        .and_then(|d| d.get_mut("push"))
        .and_then(Value::as_object_mut)
    {
        push.remove("same");
        for (part, value) in restored {
            if part == "token" {
                push.insert("target".into(), serde_json::json!({ "token": value }));
            } else {
                push.insert(part.into(), value);
            }
        }
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

    #[test]
    fn a_record_round_trips_through_its_compact_form() {
        let record = full();
        let stored = encode(&record);
        assert_eq!(decode(&stored).unwrap(), record);
        assert!(stored.len() + 100 < record.to_string().len(), "{stored}");
    }

    #[test]
    fn the_compact_form_leaves_out_only_what_can_be_restored() {
        let stored: Value = serde_json::from_str(&encode(&full())).unwrap();
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
        let mut record = full();
        record["attempts"] = json!(1);
        record["fcm_send_yn"] = json!("Y");
        let stored: Value = serde_json::from_str(&encode(&record)).unwrap();
        assert_eq!(
            (stored["attempts"].clone(), stored["fcm_send_yn"].clone()),
            (json!(1), json!("Y"))
        );
        assert_eq!(decode(&encode(&record)).unwrap(), record);
    }

    #[test]
    fn a_topic_send_keeps_its_target() {
        let mut record = full();
        record["decision"]["push"]["target"] = json!({"topic": "news"});
        let stored: Value = serde_json::from_str(&encode(&record)).unwrap();
        assert_eq!(
            stored["decision"]["push"]["target"],
            json!({"topic": "news"})
        );
        assert_eq!(decode(&encode(&record)).unwrap(), record);
    }
}
