//! What the messaging gateway accepts: the body of one message per channel, checked
//! strictly (pure functions, tested without sockets).
//!
//! Every channel takes a flat JSON object of strings: no `null`, no field it does not
//! know, each required field present and non-blank, the phone number as Korean mobile
//! digits (`01012345678`, no hyphens), the texts within the channel's size.

use serde_json::{Map, Value};

/// A channel the gateway serves, by its path (`POST /{channel}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Channel {
    /// KakaoTalk Alimtalk: a reviewed template sent from a business profile.
    Alimtalk,
    /// SMS (up to 90 bytes) or LMS (up to 2,000 bytes, with a subject).
    Sms,
}

impl Channel {
    pub fn parse(path: &str) -> Option<Channel> {
        match path {
            "alimtalk" => Some(Channel::Alimtalk),
            "sms" => Some(Channel::Sms),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Alimtalk => "alimtalk",
            Channel::Sms => "sms",
        }
    }

    /// (field, required) for every field the channel knows.
    fn fields(self) -> &'static [(&'static str, bool)] {
        match self {
            Channel::Alimtalk => &[
                ("to", true),
                ("sender_key", true),
                ("template_code", true),
                ("text", true),
                ("ref", false),
            ],
            Channel::Sms => &[
                ("to", true),
                ("from", true),
                ("text", true),
                ("subject", false),
                ("ref", false),
            ],
        }
    }
}

/// Most bytes of an Alimtalk text (Kakao's limit is 1,000 characters).
const ALIMTALK_TEXT: usize = 1000;
/// Most bytes of an LMS text; an SMS without subject is cut at 90 by carriers.
const LMS_TEXT: usize = 2000;

/// A refusal: HTTP 400 with this code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    pub code: &'static str,
    pub message: String,
}

fn invalid(code: &'static str, message: String) -> Invalid {
    Invalid { code, message }
}

/// Check one message body for `channel`.
pub fn check_body(channel: Channel, body: &[u8]) -> Result<Map<String, Value>, Invalid> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|e| invalid("INVALID_JSON", format!("the body is not JSON: {e}")))?;
    let Value::Object(map) = value else {
        return Err(invalid(
            "INVALID_JSON",
            "the body must be a JSON object".into(),
        ));
    };
    let known = channel.fields();
    for (key, value) in &map {
        if !known.iter().any(|(k, _)| k == key) {
            return Err(invalid(
                "UNKNOWN_FIELD",
                format!("{key:?} is not a field of {}", channel.as_str()),
            ));
        }
        if !value.is_string() {
            return Err(invalid(
                "INVALID_FIELD",
                format!("{key:?} must be a string, got {value}"),
            ));
        }
    }
    let text = |key: &str| map.get(key).and_then(Value::as_str).unwrap_or_default();
    for (key, required) in known {
        if *required && text(key).trim().is_empty() {
            return Err(invalid(
                "MISSING_FIELD",
                format!("{key:?} is required for {}", channel.as_str()),
            ));
        }
    }
    if !is_mobile(text("to")) {
        return Err(invalid(
            "INVALID_PHONE",
            format!(
                "\"to\" must be a Korean mobile number in digits (01012345678), got {:?}",
                text("to")
            ),
        ));
    }
    let limit = match channel {
        Channel::Alimtalk => ALIMTALK_TEXT,
        Channel::Sms => LMS_TEXT,
    };
    if text("text").len() > limit {
        return Err(invalid(
            "TEXT_TOO_LONG",
            format!("\"text\" is {} bytes, over {limit}", text("text").len()),
        ));
    }
    if channel == Channel::Sms {
        let from = text("from");
        if !(8..=12).contains(&from.len()) || !from.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(
                "INVALID_SENDER",
                format!("\"from\" must be a registered number in digits, got {from:?}"),
            ));
        }
    }
    Ok(map)
}

/// `01[016789]` and 7 or 8 more digits.
fn is_mobile(to: &str) -> bool {
    let b = to.as_bytes();
    (10..=11).contains(&b.len())
        && b.iter().all(u8::is_ascii_digit)
        && b[0] == b'0'
        && b[1] == b'1'
        && matches!(b[2], b'0' | b'1' | b'6' | b'7' | b'8' | b'9')
}

/// An idempotency key: 1 to 200 visible ASCII characters.
pub fn check_key(key: Option<&str>, header: &str) -> Result<String, Invalid> {
    match key {
        Some(k) if !k.is_empty() && k.len() <= 200 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            Ok(k.to_owned())
        }
        Some(k) => Err(invalid(
            "INVALID_IDEMPOTENCY_KEY",
            format!("{header} must be 1 to 200 visible ASCII characters, got {k:?}"),
        )),
        None => Err(invalid(
            "MISSING_IDEMPOTENCY_KEY",
            format!("every message needs a {header} header"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(channel: Channel, body: &str) -> &'static str {
        check_body(channel, body.as_bytes()).unwrap_err().code
    }

    #[test]
    fn a_complete_message_passes_and_each_rule_has_its_refusal() {
        let alimtalk =
            r#"{"to":"01012345678","sender_key":"sk","template_code":"T1","text":"이체 완료"}"#;
        assert!(check_body(Channel::Alimtalk, alimtalk.as_bytes()).is_ok());
        let sms = r#"{"to":"0161234567","from":"15881234","text":"x"}"#;
        assert!(check_body(Channel::Sms, sms.as_bytes()).is_ok());
        assert_eq!(code(Channel::Sms, "[1]"), "INVALID_JSON");
        assert_eq!(
            code(
                Channel::Sms,
                r#"{"to":"01012345678","from":"15881234","text":"x","x":"y"}"#
            ),
            "UNKNOWN_FIELD"
        );
        assert_eq!(
            code(
                Channel::Sms,
                r#"{"to":"01012345678","from":"15881234","text":null}"#
            ),
            "INVALID_FIELD"
        );
        assert_eq!(
            code(
                Channel::Alimtalk,
                r#"{"to":"01012345678","sender_key":"sk","text":"t"}"#
            ),
            "MISSING_FIELD"
        );
        assert_eq!(
            code(
                Channel::Sms,
                r#"{"to":"010-1234-5678","from":"15881234","text":"x"}"#
            ),
            "INVALID_PHONE"
        );
        assert_eq!(
            code(
                Channel::Sms,
                r#"{"to":"01012345678","from":"1588-1234","text":"x"}"#
            ),
            "INVALID_SENDER"
        );
        let long = format!(
            r#"{{"to":"01012345678","from":"15881234","text":"{}"}}"#,
            "가".repeat(700)
        );
        assert_eq!(code(Channel::Sms, &long), "TEXT_TOO_LONG");
    }

    #[test]
    fn an_idempotency_key_is_required_and_visible_ascii() {
        assert_eq!(
            check_key(None, "Idempotency-Key").unwrap_err().code,
            "MISSING_IDEMPOTENCY_KEY"
        );
        assert_eq!(
            check_key(Some("a b"), "Idempotency-Key").unwrap_err().code,
            "INVALID_IDEMPOTENCY_KEY"
        );
        assert_eq!(
            check_key(Some("K1:sms"), "Idempotency-Key").unwrap(),
            "K1:sms"
        );
    }
}
