//! A `[[fallback]]` rung's JSON body template: any JSON value whose strings may hold
//! `{{field}}` placeholders, filled from the record's standard message fields.
//!
//! Invariant: a placeholder names one of [`FIELDS`] (checked when the config loads), a
//! value is only ever put inside a JSON string (so escaping is serde_json's, and a
//! customer's text cannot change the body's shape), and nothing is evaluated.

use serde_json::{Map, Value};

/// The record fields a template may use: the standard message fields.
pub const FIELDS: [&str; 10] = crate::push::fields::STANDARD_FIELDS;

/// What a placeholder may do to its value after `|`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Filter {
    /// As it arrived.
    Plain,
    /// Digits only (`010-1234-5678` → `01012345678`), what gateways want of a phone number.
    Digits,
}

/// A checked body template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    body: Value,
}

impl Template {
    /// Check every placeholder of `body`; the error names the first bad one.
    pub fn parse(body: Value) -> Result<Template, String> {
        check(&body)?;
        Ok(Template { body })
    }

    /// The body for one record: every string's placeholders filled from `fields` (a field
    /// the message lacks is `""`).
    pub fn render(&self, fields: &Map<String, Value>) -> Value {
        fill(&self.body, fields)
    }
}

fn check(value: &Value) -> Result<(), String> {
    match value {
        Value::String(text) => {
            for piece in pieces(text) {
                if let Piece::Field(name, _) = piece?
                    && !FIELDS.contains(&name)
                {
                    return Err(format!(
                        "{{{{{name}}}}} is not a field a template may use ({})",
                        FIELDS.join(", ")
                    ));
                }
            }
            Ok(())
        }
        Value::Array(items) => items.iter().try_for_each(check),
        Value::Object(map) => map.values().try_for_each(check),
        _ => Ok(()),
    }
}

fn fill(value: &Value, fields: &Map<String, Value>) -> Value {
    match value {
        Value::String(text) => {
            let mut out = String::with_capacity(text.len());
            for piece in pieces(text).flatten() {
                match piece {
                    Piece::Text(t) => out.push_str(t),
                    Piece::Field(name, filter) => {
                        let value = fields.get(name).and_then(Value::as_str).unwrap_or("");
                        match filter {
                            Filter::Plain => out.push_str(value),
                            Filter::Digits => {
                                out.extend(value.chars().filter(char::is_ascii_digit))
                            }
                        }
                    }
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| fill(v, fields)).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), fill(v, fields)))
                .collect(),
        ),
        other => other.clone(),
    }
}

enum Piece<'t> {
    Text(&'t str),
    Field(&'t str, Filter),
}

/// A template string as text and placeholders, in order.
fn pieces(text: &str) -> impl Iterator<Item = Result<Piece<'_>, String>> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let Some(open) = rest.find("{{") else {
            let text = rest;
            rest = "";
            return Some(Ok(Piece::Text(text)));
        };
        if open > 0 {
            let text = &rest[..open];
            rest = &rest[open..];
            return Some(Ok(Piece::Text(text)));
        }
        let Some(close) = rest.find("}}") else {
            rest = "";
            return Some(Err(format!("an unclosed {{{{ in {text:?}")));
        };
        let inner = rest[2..close].trim();
        rest = &rest[close + 2..];
        let (name, filter) = match inner.split_once('|') {
            None => (inner, Filter::Plain),
            Some((name, "digits")) => (name.trim(), Filter::Digits),
            Some((_, other)) => {
                return Some(Err(format!(
                    "unknown filter |{other} (only |digits) in {text:?}"
                )));
            }
        };
        Some(Ok(Piece::Field(name, filter)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fields() -> Map<String, Value> {
        json!({"cust_telno": "010-1234-5678", "msg_title": "이체", "msg_contents": "\"50,000원\"\n출금",
               "uniqueKey": "K1"})
        .as_object()
        .unwrap()
        .clone()
    }

    #[test]
    fn placeholders_are_filled_inside_strings_and_values_stay_strings() {
        let template = Template::parse(json!({
            "to": "{{cust_telno|digits}}",
            "text": "{{msg_title}} {{ msg_contents }}",
            "ref": ["{{uniqueKey}}", 3],
            "csno": "{{csno}}",
            "fixed": true
        }))
        .unwrap();
        let body = template.render(&fields());
        assert_eq!(
            body,
            json!({"to": "01012345678", "text": "이체 \"50,000원\"\n출금", "ref": ["K1", 3],
                   "csno": "", "fixed": true})
        );
        // Quotes and newlines in a customer's text are escaped, not interpreted.
        let text = body.to_string();
        assert!(text.contains(r#"\"50,000원\"\n출금"#), "{text}");
    }

    #[test]
    fn unknown_fields_filters_and_unclosed_braces_are_refused() {
        assert_eq!(
            Template::parse(json!({"to": "{{password}}"})).unwrap_err(),
            format!(
                "{{{{password}}}} is not a field a template may use ({})",
                FIELDS.join(", ")
            )
        );
        assert!(
            Template::parse(json!({"to": "{{cust_telno|upper}}"}))
                .unwrap_err()
                .contains("unknown filter |upper")
        );
        assert!(
            Template::parse(json!(["{{msg_title"]))
                .unwrap_err()
                .contains("unclosed")
        );
    }
}
