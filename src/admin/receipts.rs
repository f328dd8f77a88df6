//! `POST /api/v1/receipts`: the app's delivery receipts, relayed by its own server.
//!
//! A batch is a JSON array of up to [`MAX_RECEIPTS`] items
//! `{"uniqueKey": "...", "event": "delivered" | "opened", "at": <unix ms>}` in a body of
//! at most [`MAX_RECEIPTS_BODY`] bytes. Each item is checked and answered on its own
//! (`{uniqueKey, ok, error?}`): a bad item or an unknown key is that item's error, never
//! the batch's. A receipt is recorded whatever the push's status (the app may report
//! before the outcome is written); the first time of each event is kept and a repeat
//! is answered ok with `"repeated": true`.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::ingest::{MAX_UNIQUE_KEY_BYTES, json_kind};
use crate::push::ReceiptEvent;
use crate::store::receipts::{ReceiptIn, Recorded};

/// Most receipts in one request.
pub const MAX_RECEIPTS: usize = 1000;
/// Largest body the receipts API takes: 1,000 items of a long key each, with room.
pub const MAX_RECEIPTS_BODY: usize = 512 * 1024;
/// How far back a receipt's `at` may lie: a phone offline for weeks still reports.
pub const MAX_RECEIPT_AGE_MS: i64 = 30 * 86_400_000;
/// How far ahead of our clock a receipt's `at` may lie (the phone's clock is not ours).
pub const MAX_RECEIPT_AHEAD_MS: i64 = 5 * 60_000;

/// One item of a batch: checked, or why not (with its key, if it had a readable one).
pub type Checked = Result<ReceiptIn, (String, String)>;

/// An item as a well-formed batch holds it: the one form checked without building a
/// JSON tree (anything else is read as a `Value` for its exact error).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire<'a> {
    #[serde(rename = "uniqueKey", borrow)]
    unique_key: Cow<'a, str>,
    #[serde(borrow)]
    event: Cow<'a, str>,
    at: i64,
}

/// Check one item of a batch as sent (see [`check`]).
pub fn check_raw(item: &RawValue, now_ms: i64) -> Checked {
    // Only an object takes the fast path: serde fills a struct from an array too.
    let object = item.get().starts_with('{');
    match serde_json::from_str::<Wire>(item.get())
        .ok()
        .filter(|_| object)
    {
        Some(w) => check_fields(&w.unique_key, Some(&w.event), Some(w.at), None, now_ms),
        None => match serde_json::from_str::<Value>(item.get()) {
            Ok(value) => check(&value, now_ms),
            Err(e) => Err((String::new(), format!("not a JSON value: {e}"))),
        },
    }
}

/// Check one item against the bounds, with `now_ms` our clock.
pub fn check(item: &Value, now_ms: i64) -> Checked {
    let Value::Object(map) = item else {
        return Err((
            String::new(),
            format!(
                "each receipt must be a JSON object, got {}",
                json_kind(item)
            ),
        ));
    };
    let key = match map.get("uniqueKey") {
        Some(Value::String(k)) => k.as_str(),
        _ => "",
    };
    check_fields(
        key,
        map.get("event").and_then(Value::as_str),
        map.get("at").and_then(Value::as_i64),
        unknown_key(map),
        now_ms,
    )
}

/// The rules, on an item's fields: `uniqueKey` (blank = missing), `event`, `at` (none
/// when missing or not an integer) and the first field that is not a receipt's.
fn check_fields(
    key: &str,
    event: Option<&str>,
    at_ms: Option<i64>,
    unknown: Option<&str>,
    now_ms: i64,
) -> Checked {
    let key = key.trim();
    if key.is_empty() {
        return Err((String::new(), "uniqueKey is missing or not a string".into()));
    }
    let fail = |why: String| Err((key.to_owned(), why));
    if key.len() > MAX_UNIQUE_KEY_BYTES {
        return fail(format!(
            "uniqueKey is {} bytes, the limit is {MAX_UNIQUE_KEY_BYTES}",
            key.len()
        ));
    }
    if let Some(other) = unknown {
        return fail(format!(
            "{other:?} is not a receipt field (uniqueKey, event, at)"
        ));
    }
    let Some(event) = event.and_then(ReceiptEvent::parse) else {
        return fail("event must be \"delivered\" or \"opened\"".into());
    };
    let Some(at_ms) = at_ms else {
        return fail("at must be an integer, unix ms".into());
    };
    if at_ms < now_ms - MAX_RECEIPT_AGE_MS || at_ms > now_ms + MAX_RECEIPT_AHEAD_MS {
        return fail(format!(
            "at {at_ms} is not within the last 30 days or the next 5 minutes of {now_ms}"
        ));
    }
    Ok(ReceiptIn {
        unique_key: key.to_owned(),
        event,
        at_ms,
    })
}

fn unknown_key(map: &Map<String, Value>) -> Option<&str> {
    map.keys()
        .map(String::as_str)
        .find(|k| !matches!(*k, "uniqueKey" | "event" | "at"))
}

/// What one item is answered: `{"uniqueKey", "ok"}`, with `"repeated": true` for an
/// event recorded before, or `"error"` when it was refused.
#[derive(Debug, Serialize)]
pub struct Answer<'a> {
    #[serde(rename = "uniqueKey")]
    pub unique_key: &'a str,
    pub ok: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub repeated: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<&'a str>,
}

/// The answer of one recorded item.
pub fn answer(receipt: &ReceiptIn, recorded: Recorded) -> Answer<'_> {
    Answer {
        unique_key: &receipt.unique_key,
        ok: recorded != Recorded::UnknownKey,
        repeated: recorded == Recorded::Repeated,
        error: (recorded == Recorded::UnknownKey).then_some("no push with this uniqueKey"),
    }
}

/// The answer of an item refused before the store.
pub fn refusal<'a>(key: &'a str, why: &'a str) -> Answer<'a> {
    Answer {
        unique_key: key,
        ok: false,
        repeated: false,
        error: Some(why),
    }
}

/// The whole batch's answer.
#[derive(Debug, Serialize)]
pub struct BatchAnswer<'a> {
    pub recorded: usize,
    pub repeated: usize,
    pub refused: usize,
    pub results: Vec<Answer<'a>>,
}

impl<'a> BatchAnswer<'a> {
    pub fn new(results: Vec<Answer<'a>>) -> BatchAnswer<'a> {
        let repeated = results.iter().filter(|r| r.repeated).count();
        let refused = results.iter().filter(|r| !r.ok).count();
        BatchAnswer {
            recorded: results.len() - repeated - refused,
            repeated,
            refused,
            results,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: i64 = 1_780_000_000_000;

    #[test]
    fn a_well_formed_receipt_is_taken_with_its_key_trimmed() {
        let got = check(
            &json!({"uniqueKey": " K1 ", "event": "opened", "at": NOW - 1000}),
            NOW,
        );
        assert_eq!(
            got,
            Ok(ReceiptIn {
                unique_key: "K1".into(),
                event: ReceiptEvent::Opened,
                at_ms: NOW - 1000
            })
        );
        // The same read from the item's text, without a JSON tree; escapes decoded.
        let raw = format!(
            r#"{{"at":{},"event":"opened","uniqueKey":" K\u0031 "}}"#,
            NOW - 1000
        );
        let raw: Box<RawValue> = serde_json::from_str(&raw).unwrap();
        assert_eq!(check_raw(&raw, NOW), got);
    }

    #[test]
    fn each_bound_refuses_the_item_by_name() {
        let cases = [
            (json!(5), "JSON object"),
            (json!(["K", "opened", NOW]), "JSON object"),
            (json!({"event": "opened", "at": NOW}), "uniqueKey"),
            (
                json!({"uniqueKey": "K", "event": "read", "at": NOW}),
                "event must be",
            ),
            (
                json!({"uniqueKey": "K", "event": "opened", "at": "2026-01-01T00:00:00Z"}),
                "unix ms",
            ),
            (
                json!({"uniqueKey": "K", "event": "opened", "at": NOW + MAX_RECEIPT_AHEAD_MS + 1}),
                "next 5 minutes",
            ),
            (
                json!({"uniqueKey": "K", "event": "opened", "at": NOW - MAX_RECEIPT_AGE_MS - 1}),
                "last 30 days",
            ),
            (
                json!({"uniqueKey": "K", "event": "opened", "at": NOW, "phone": "010"}),
                "not a receipt field",
            ),
            (
                json!({"uniqueKey": "x".repeat(257), "event": "opened", "at": NOW}),
                "the limit is 256",
            ),
        ];
        for (item, why) in cases {
            let err = check(&item, NOW).expect_err(&item.to_string()).1;
            assert!(err.contains(why), "{item}: {err}");
            // An item read from its text is refused with the very same error.
            let raw: Box<RawValue> = serde_json::from_str(&item.to_string()).unwrap();
            assert_eq!(check_raw(&raw, NOW), check(&item, NOW), "{item}");
        }
        // A key given twice: the later one counts, as for a JSON tree.
        let raw: Box<RawValue> = serde_json::from_str(&format!(
            r#"{{"uniqueKey":"A","event":"opened","at":{NOW},"uniqueKey":"B"}}"#
        ))
        .unwrap();
        assert_eq!(check_raw(&raw, NOW).map(|r| r.unique_key), Ok("B".into()));
    }
}
