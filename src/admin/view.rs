//! What a caller may see of a stored record. One function, [`record`], decides it, and
//! every route that shows a record (log page, push page, CSV, JSON API) goes through it:
//! masking is a rule of the data as a role sees it, not of one template.
//!
//! A masked caller (a viewer, or an API key without the `personal` scope) sees
//! - the masked fields ([`MASKED_FIELDS`]) in their masked form;
//! - everywhere else in the record (other fields, the route decision, FCM's answers,
//!   error text, history), every number that contains a masked value's digits, however
//!   it is written (`010-1234-5678`, `+82 10 1234 5678`, `821012345678`), replaced by
//!   that value's masked form;
//! - in free text that a script or a provider wrote (anything but the unmasked
//!   standard fields and pushgate's own bookkeeping),
//!   every other run of seven digits or more starred out, so a number a script
//!   rewrote in a form not recognised above still does not show.
//!
//! Searching a masked field is refused to a masked caller (see [`may_search`]): a match
//! count is an oracle that finds a number from its masked form in 10^4 tries.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::push::Record;
use crate::push::fields::{MASKED_FIELDS, STANDARD_FIELDS};
use crate::script::{mask, mask_phone};

/// pushgate's own text fields a masked caller sees as stored (but for masked values
/// within), besides the standard message fields that are not masked.
const OWN_PLAIN_FIELDS: &[&str] = &["fcm_send_yn", "fcm_send_time", "status", "worker"];

/// Whether a masked caller sees a field's text as stored (but for masked values within),
/// rather than with every long number starred.
fn plain(field: &str) -> bool {
    (STANDARD_FIELDS.contains(&field) && !MASKED_FIELDS.contains(&field))
        || OWN_PLAIN_FIELDS.contains(&field)
}

/// Digits a number needs before it is starred out of free text.
const LONG_NUMBER: usize = 7;
/// Digits a substring search term may hold in one number for a masked caller.
const SEARCH_DIGITS: usize = 5;

/// How much of a record the caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// Operators, admins, API keys with the `personal` scope.
    Full,
    /// Viewers, API keys with `read` only.
    Masked,
}

/// The record as `sight` may see it (borrowed as it is for a full sight).
pub fn record(record: &Record, sight: Sight) -> Cow<'_, Record> {
    if sight == Sight::Full {
        return Cow::Borrowed(record);
    }
    // Masking changes text only, so the masked JSON is still a record; were it not,
    // nothing free-form is shown rather than anything unmasked.
    Cow::Owned(
        serde_json::from_value(seen(record.to_json(), sight)).unwrap_or_else(|_| Record {
            message: Map::new(),
            decision: None,
            result: String::new(),
            error: None,
            history: Vec::new(),
            ..record.clone()
        }),
    )
}

/// A record's JSON as `sight` may see it.
fn seen(record: Value, sight: Sight) -> Value {
    let Sight::Masked = sight else {
        return record;
    };
    let Some(map) = record.as_object() else {
        return record;
    };
    let secrets = Secrets::of(map);
    let masked = map
        .iter()
        .map(|(key, value)| {
            let shown = match (masked_form(key, value), plain(key)) {
                (Some(form), _) => Value::String(form),
                (None, plain) => walk(value, &secrets, !plain),
            };
            (key.clone(), shown)
        })
        .collect::<Map<_, _>>();
    Value::Object(masked)
}

/// Free text that may carry numbers from any record (a port's last error): every long
/// number starred out for a masked caller.
pub fn text(text: &str, sight: Sight) -> String {
    match sight {
        Sight::Full => text.to_owned(),
        Sight::Masked => mask_numbers(text, &Secrets::default(), true),
    }
}

/// Why a masked caller may not run this search, if it may not.
pub fn may_search(field: &str, value: &str, sight: Sight) -> Result<(), String> {
    if sight == Sight::Full || value.trim().is_empty() {
        return Ok(());
    }
    if MASKED_FIELDS.contains(&field) {
        return Err(format!(
            "searching by {field} needs the operator role (or an API key with the personal \
             scope): it is masked for you, and a match count would reveal it"
        ));
    }
    if numbers(value).any(|(_, digits)| digits.len() >= SEARCH_DIGITS) {
        return Err(format!(
            "a search term with a number of {SEARCH_DIGITS} digits or more needs the operator \
             role: it could find a masked phone or customer number"
        ));
    }
    Ok(())
}

/// A customer number as a masked caller sees it (audit entries, the consent page).
pub fn mask_csno(csno: &str) -> String {
    masked_form("csno", &Value::String(csno.to_owned())).unwrap_or_default()
}

fn masked_form(field: &str, value: &Value) -> Option<String> {
    let text = value.as_str()?;
    match field {
        "cust_telno" => Some(mask_phone(text)),
        "csno" => Some(mask(text, 2, 2)),
        _ => None,
    }
}

/// The record's own masked values, as the digits that identify them.
#[derive(Default)]
struct Secrets {
    /// (digits that identify the value wherever it is written, its masked form)
    numbers: Vec<(String, String)>,
    /// (the value verbatim, its masked form), for values that are not numbers
    words: Vec<(String, String)>,
}

impl Secrets {
    fn of(map: &Map<String, Value>) -> Secrets {
        let mut secrets = Secrets::default();
        for field in MASKED_FIELDS {
            let Some(raw) = map.get(*field).and_then(Value::as_str).map(str::trim) else {
                continue;
            };
            let Some(form) = masked_form(field, &Value::String(raw.to_owned())) else {
                continue;
            };
            let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
            // A national number is written abroad without its leading 0 (+82 10 …).
            let core = digits.trim_start_matches('0');
            if core.len() >= 4 {
                secrets.numbers.push((core.to_owned(), form.clone()));
            }
            if raw.chars().count() >= 4 && digits.len() < raw.len() {
                secrets.words.push((raw.to_owned(), form));
            }
        }
        secrets
    }
}

/// Every string in `value`, masked; keys stay as they are.
fn walk(value: &Value, secrets: &Secrets, free_text: bool) -> Value {
    match value {
        Value::String(s) => Value::String(mask_numbers(s, secrets, free_text)),
        Value::Array(items) => {
            Value::Array(items.iter().map(|v| walk(v, secrets, free_text)).collect())
        }
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), walk(v, secrets, free_text)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Characters that may stand between the digits of one number as people write it.
fn joins(c: char) -> bool {
    matches!(c, '-' | ' ' | '.' | '(' | ')' | '+' | '/')
}

/// The numbers in `text`: each one's byte range (from its first to its last digit, a
/// leading `+` included) and its digits.
fn numbers(text: &str) -> impl Iterator<Item = (std::ops::Range<usize>, String)> + '_ {
    let chars: Vec<(usize, char)> = text.char_indices().collect();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < chars.len() && !chars[i].1.is_ascii_digit() {
            i += 1;
        }
        if i >= chars.len() {
            return None;
        }
        let mut start = chars[i].0;
        if i > 0 && chars[i - 1].1 == '+' {
            start = chars[i - 1].0;
        }
        let mut digits = String::new();
        let mut end = start;
        while i < chars.len() && (chars[i].1.is_ascii_digit() || joins(chars[i].1)) {
            if chars[i].1.is_ascii_digit() {
                digits.push(chars[i].1);
                end = chars[i].0 + 1;
            }
            i += 1;
        }
        Some((start..end, digits))
    })
}

fn mask_numbers(text: &str, secrets: &Secrets, free_text: bool) -> String {
    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    for (range, digits) in numbers(text) {
        let known = secrets
            .numbers
            .iter()
            .find(|(core, _)| digits.contains(core.as_str()));
        let replacement = match known {
            Some((_, form)) => form.clone(),
            None if free_text && digits.len() >= LONG_NUMBER => text[range.clone()]
                .chars()
                .map(|c| if c.is_ascii_digit() { '*' } else { c })
                .collect(),
            None => continue,
        };
        out.push_str(&text[last..range.start]);
        out.push_str(&replacement);
        last = range.end;
    }
    out.push_str(&text[last..]);
    for (word, form) in &secrets.words {
        if out.contains(word.as_str()) {
            out = out.replace(word.as_str(), form);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn stored() -> Value {
        json!({
            "id": 7,
            "uniqueKey": "K-1",
            "cust_telno": "01012345678",
            "csno": "1234567890",
            "msg_title": "이체 완료",
            "msg_contents": "문의 010-1234-5678, 잔액 10,000원",
            "error": "invalid telno 01012345678 for 1234567890",
            "result": "{\"error\":\"phone +82 10-1234-5678 rejected\"}",
            "decision": {"push": {"data": {"to": "+821012345678", "acct": "110-234-567890"}}},
            "history": [{"answer": "sent to 821012345678", "attempt": 1}],
            "fallback": [{"rung": "sms", "attempt": 1, "answer": "{\"to\":\"01012345678\"}"}],
            "received_at": 1764000000000i64,
            "sndn_rsev_hour": "20261126093000",
            "branch": "acct 3333012345678"
        })
    }

    #[test]
    fn full_sight_sees_the_record_as_stored() {
        assert_eq!(seen(stored(), Sight::Full), stored());
    }

    #[test]
    fn masked_sight_never_sees_the_phone_or_customer_number_in_any_form() {
        let seen = super::seen(stored(), Sight::Masked);
        let text = seen.to_string();
        for secret in [
            "01012345678",
            "1012345678",
            "1234567890",
            "1234-5678",
            "10 1234",
        ] {
            assert!(!text.contains(secret), "{secret} leaked in {text}");
        }
        assert_eq!(seen["cust_telno"], "010-****-5678");
        assert_eq!(seen["csno"], "12******90");
        assert_eq!(seen["error"], "invalid telno 010-****-5678 for 12******90");
        assert_eq!(seen["decision"]["push"]["data"]["to"], "010-****-5678");
        assert_eq!(seen["history"][0]["answer"], "sent to 010-****-5678");
        assert_eq!(seen["history"][0]["attempt"], 1);
        // A messaging gateway's answer echoing the number is masked like FCM's.
        assert_eq!(seen["fallback"][0]["answer"], "{\"to\":\"010-****-5678\"}");
        assert_eq!(seen["fallback"][0]["rung"], "sms");
        assert_eq!(seen["msg_contents"], "문의 010-****-5678, 잔액 10,000원");
    }

    #[test]
    fn masked_sight_stars_long_numbers_in_free_text_but_not_in_plain_fields() {
        let seen = super::seen(stored(), Sight::Masked);
        assert_eq!(seen["decision"]["push"]["data"]["acct"], "***-***-******");
        assert_eq!(seen["branch"], "acct *************");
        assert_eq!(seen["sndn_rsev_hour"], "20261126093000");
        assert_eq!(seen["received_at"], 1764000000000i64);
        assert_eq!(seen["id"], 7);
    }

    #[test]
    fn a_customer_number_that_is_not_a_number_is_replaced_verbatim() {
        let seen = super::seen(
            json!({"csno": "AB-778", "error": "no customer AB-778"}),
            Sight::Masked,
        );
        assert_eq!(seen["error"], "no customer AB**78");
    }

    #[test]
    fn masked_callers_may_not_search_masked_fields_or_long_numbers() {
        assert!(may_search("cust_telno", "01012345678", Sight::Masked).is_err());
        assert!(may_search("csno", "1", Sight::Masked).is_err());
        assert!(may_search("msg_contents", "010-1234-5", Sight::Masked).is_err());
        assert!(may_search("msg_contents", "10,000원", Sight::Masked).is_ok());
        assert!(may_search("D_servicename", "TRF", Sight::Masked).is_ok());
        assert!(may_search("cust_telno", "01012345678", Sight::Full).is_ok());
        assert!(may_search("cust_telno", "", Sight::Masked).is_ok());
    }

    #[test]
    fn text_stars_long_numbers_for_masked_callers_only() {
        assert_eq!(
            text("bad telno 01099998888 from 10.1.2.3", Sight::Masked),
            "bad telno *********** from 10.1.2.3"
        );
        assert_eq!(text("x 01099998888", Sight::Full), "x 01099998888");
    }
}
