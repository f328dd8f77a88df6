//! `POST /api/v1/receipts`: the app's delivery receipts, relayed by its own server.
//!
//! A batch is a JSON array of up to [`MAX_RECEIPTS`] items
//! `{"uniqueKey": "...", "event": "delivered" | "opened", "at": <unix ms>}` in a body of
//! at most [`MAX_RECEIPTS_BODY`] bytes. Each item is checked and answered on its own
//! (`{uniqueKey, ok, error?}`): a bad item or an unknown key is that item's error, never
//! the batch's. A receipt is recorded whatever the push's status (the app may report
//! before the outcome is written); the first time of each event is kept and a repeat
//! is answered ok with `"repeated": true`.

use serde_json::{Map, Value, json};

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
        Some(Value::String(k)) if !k.trim().is_empty() => k.trim().to_owned(),
        _ => return Err((String::new(), "uniqueKey is missing or not a string".into())),
    };
    let fail = |why: String| Err((key.clone(), why));
    if key.len() > MAX_UNIQUE_KEY_BYTES {
        return fail(format!(
            "uniqueKey is {} bytes, the limit is {MAX_UNIQUE_KEY_BYTES}",
            key.len()
        ));
    }
    if let Some(other) = unknown_key(map) {
        return fail(format!(
            "{other:?} is not a receipt field (uniqueKey, event, at)"
        ));
    }
    let Some(event) = map
        .get("event")
        .and_then(Value::as_str)
        .and_then(ReceiptEvent::parse)
    else {
        return fail("event must be \"delivered\" or \"opened\"".into());
    };
    let Some(at_ms) = map.get("at").and_then(Value::as_i64) else {
        return fail("at must be an integer, unix ms".into());
    };
    if at_ms < now_ms - MAX_RECEIPT_AGE_MS || at_ms > now_ms + MAX_RECEIPT_AHEAD_MS {
        return fail(format!(
            "at {at_ms} is not within the last 30 days or the next 5 minutes of {now_ms}"
        ));
    }
    Ok(ReceiptIn {
        unique_key: key,
        event,
        at_ms,
    })
}

fn unknown_key(map: &Map<String, Value>) -> Option<&str> {
    map.keys()
        .map(String::as_str)
        .find(|k| !matches!(*k, "uniqueKey" | "event" | "at"))
}

/// The answer of one recorded item.
pub fn answer(receipt: &ReceiptIn, recorded: Recorded) -> Value {
    match recorded {
        Recorded::New => json!({"uniqueKey": receipt.unique_key, "ok": true}),
        Recorded::Repeated => {
            json!({"uniqueKey": receipt.unique_key, "ok": true, "repeated": true})
        }
        Recorded::UnknownKey => json!({
            "uniqueKey": receipt.unique_key,
            "ok": false,
            "error": "no push with this uniqueKey",
        }),
    }
}

/// The answer of an item refused before the store.
pub fn refusal(key: &str, why: &str) -> Value {
    json!({"uniqueKey": key, "ok": false, "error": why})
}

#[cfg(test)]
mod tests {
    use super::*;

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
    }

    #[test]
    fn each_bound_refuses_the_item_by_name() {
        let cases = [
            (json!(5), "JSON object"),
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
        }
    }
}
