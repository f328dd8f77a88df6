//! A frame's message: its body decoded (JSON or fixed-width telegram) and checked.
//! The checks are the same for every way a message arrives (a port or the HTTP API).

use serde_json::{Map, Value};

use super::fixed;
use crate::config::{Payload, PortConfig};
use crate::push::fields::RESERVED_FIELDS;

pub const MAX_UNIQUE_KEY_BYTES: usize = 256;

/// A frame's decoded message, or why it was refused (with its key when known).
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    pub unique_key: String,
    pub fields: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub key: Option<String>,
    pub error: String,
    /// A short fixed name for metrics (`json`, `charset`, `unique_key`, …).
    pub reason: &'static str,
}

fn refusal(key: Option<String>, reason: &'static str, error: String) -> Refusal {
    Refusal { key, error, reason }
}

/// Decode a frame body and check it: a JSON object (or fixed-width telegram) with a
/// `uniqueKey`, the port's required fields, no reserved field, a valid reserved time.
pub fn parse_message(
    port: &PortConfig,
    zone: chrono_tz::Tz,
    body: &[u8],
) -> Result<Message, Refusal> {
    let fields = match port.payload {
        Payload::Json => {
            let text = port
                .encoding
                .decode(body)
                .map_err(|e| refusal(None, "charset", e.to_string()))?;
            match serde_json::from_str::<Value>(&text) {
                Ok(Value::Object(map)) => map,
                Ok(other) => {
                    return Err(refusal(
                        None,
                        "json",
                        format!("frame is JSON {} but must be an object", json_kind(&other)),
                    ));
                }
                Err(e) => {
                    return Err(refusal(
                        None,
                        "json",
                        format!("frame is not valid JSON: {e}"),
                    ));
                }
            }
        }
        Payload::Fixed => fixed::decode_fixed(&port.fields, body, port.encoding)
            .map_err(|e| refusal(None, "fixed", e.to_string()))?,
    };
    check_message(fields, &port.required, zone)
}

/// The checks every message passes, whatever carried it (a port or the HTTP API).
pub fn check_message(
    mut fields: Map<String, Value>,
    required: &[String],
    zone: chrono_tz::Tz,
) -> Result<Message, Refusal> {
    // Numbers sent in the standard fields are kept as text, and the values pushgate
    // looks records up by (uniqueKey, the indexed fields) are kept trimmed: the record,
    // its index entries and retention's removal of them all see one spelling.
    for name in crate::push::fields::STANDARD_FIELDS {
        let keyed = name == "uniqueKey"
            || crate::push::fields::ZSET_FIELDS.contains(&name)
            || crate::push::fields::BITMAP_FIELDS.contains(&name);
        match fields.get_mut(name) {
            Some(v @ (Value::Number(_) | Value::Bool(_))) => *v = Value::String(v.to_string()),
            Some(Value::String(s)) if keyed && s.trim().len() != s.len() => {
                *s = s.trim().to_owned();
            }
            _ => {}
        }
    }
    let key = match fields.get("uniqueKey") {
        Some(Value::String(s)) if !s.trim().is_empty() => s.trim().to_owned(),
        Some(Value::String(_)) | None => {
            return Err(refusal(
                None,
                "unique_key",
                "uniqueKey is missing or empty".into(),
            ));
        }
        Some(other) => {
            return Err(refusal(
                None,
                "unique_key",
                format!("uniqueKey must be a string, got {}", json_kind(other)),
            ));
        }
    };
    if key.len() > MAX_UNIQUE_KEY_BYTES {
        return Err(refusal(
            None,
            "unique_key",
            format!(
                "uniqueKey is {} bytes, the limit is {MAX_UNIQUE_KEY_BYTES}",
                key.len()
            ),
        ));
    }
    let some_key = || Some(key.clone());
    if let Some(name) = RESERVED_FIELDS.iter().find(|f| fields.contains_key(**f)) {
        return Err(refusal(
            some_key(),
            "reserved_field",
            format!("field {name:?} is reserved for pushgate's own record fields"),
        ));
    }
    for name in required {
        let present = fields
            .get(name)
            .and_then(crate::store::scalar_text)
            .is_some_and(|t| !t.is_empty());
        if !present {
            return Err(refusal(
                some_key(),
                "required_field",
                format!("required field {name:?} is missing or empty"),
            ));
        }
    }
    if let Some(Value::String(reserved)) = fields.get("sndn_rsev_hour") {
        crate::script::parse_reserved_time(reserved, zone)
            .map_err(|e| refusal(some_key(), "reserved_time", e))?;
    }
    Ok(Message {
        unique_key: key,
        fields,
    })
}

/// "a string", "an array", … for messages about a JSON value.
pub fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn port(extra: &str) -> PortConfig {
        let text = format!(
            "[[port]]\nname = \"p\"\naddr = \"127.0.0.1:0\"\nscript = \"s.rhai\"\n{extra}\n"
        );
        crate::config::Config::parse(&text, std::path::Path::new("t.toml"), ".".into())
            .expect("valid")
            .ports
            .remove(0)
    }

    #[test]
    fn message_checks_refuse_with_a_precise_reason_and_the_key_when_known() {
        let zone = chrono_tz::Asia::Seoul;
        let json = port("required = [\"device_id\"]");
        let cases: &[(&[u8], Option<&str>, &str)] = &[
            (b"{\"uniqueKey\": 5", None, "not valid JSON"),
            (b"\"text\"", None, "JSON a string but must be an object"),
            (b"{\"uniqueKey\": \"  \"}", None, "uniqueKey is missing or empty"),
            (b"{\"uniqueKey\": [1]}", None, "uniqueKey must be a string"),
            (b"{\"uniqueKey\": \"A\"}", Some("A"), "required field \"device_id\""),
            (b"{\"uniqueKey\": \"A\", \"device_id\": \"t\", \"result\": 1}", Some("A"), "\"result\" is reserved"),
            (b"{\"uniqueKey\": \"A\", \"device_id\": \"t\", \"sndn_rsev_hour\": \"20261399000000\"}", Some("A"), "sndn_rsev_hour"),
        ];
        for (body, key, why) in cases {
            let refusal = parse_message(&json, zone, body).expect_err(why);
            assert_eq!(refusal.key.as_deref(), *key, "{why}");
            assert!(refusal.error.contains(why), "{why}: {}", refusal.error);
        }
        let long = format!(
            "{{\"uniqueKey\": \"{}\", \"device_id\": \"t\"}}",
            "k".repeat(300)
        );
        assert!(
            parse_message(&json, zone, long.as_bytes())
                .unwrap_err()
                .error
                .contains("limit is 256")
        );
    }

    #[test]
    fn numeric_standard_fields_become_text_and_other_fields_are_kept() {
        let json = port("");
        let body = br#"{"uniqueKey": 12345, "csno": 77, "amount": 10000, "vip": true}"#;
        let m = parse_message(&json, chrono_tz::Asia::Seoul, body).expect("valid");
        assert_eq!(m.unique_key, "12345");
        assert_eq!(m.fields["csno"], "77");
        assert_eq!(m.fields["amount"], 10000);
        assert_eq!(m.fields["vip"], true);
    }

    #[test]
    fn keyed_fields_are_stored_trimmed_and_text_is_left_as_sent() {
        let json = port("");
        let body = br#"{"uniqueKey": " k1 ", "csno": " 123", "D_servicename": "TRF ", "msg_title": " hi "}"#;
        let m = parse_message(&json, chrono_tz::Asia::Seoul, body).expect("valid");
        assert_eq!(m.unique_key, "k1");
        // What retention reads back to remove index entries is what ingest indexed.
        assert_eq!(m.fields["uniqueKey"], "k1");
        assert_eq!(m.fields["csno"], "123");
        assert_eq!(m.fields["D_servicename"], "TRF");
        assert_eq!(m.fields["msg_title"], " hi ");
    }
}
