//! Fixed-width telegrams (`payload = "fixed"`): a port's layout names each field and its width
//! in bytes of the encoded text, the way core-banking copybooks define them.

pub use crate::wire::FieldSpec;
use serde_json::{Map, Value};

use super::charset::Charset;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FixedError {
    #[error("telegram is {got} bytes, the field layout needs {want}")]
    Length { got: usize, want: usize },
    #[error("field {field} (bytes {start}..{end}) is not valid {charset}")]
    Charset {
        field: String,
        start: usize,
        end: usize,
        charset: &'static str,
    },
    #[error("field {field} is {len} bytes in {charset}, the layout allows {max}")]
    TooLong {
        field: String,
        len: usize,
        max: usize,
        charset: &'static str,
    },
}

/// Total width of a layout. Saturating, so an absurd layout fails as a length mismatch rather
/// than overflowing.
pub fn layout_len(fields: &[FieldSpec]) -> usize {
    fields.iter().fold(0, |sum, f| sum.saturating_add(f.len))
}

/// Split `body` at the layout's byte offsets (lengths are bytes of the ENCODED text), decode
/// each field with `charset`, trim ASCII/Unicode whitespace at both ends, return name -> string.
///
/// The length must match exactly: a telegram of the wrong size means sender and layout
/// disagree, and every field after the first difference would be silently shifted.
pub fn decode_fixed(
    fields: &[FieldSpec],
    body: &[u8],
    charset: Charset,
) -> Result<Map<String, Value>, FixedError> {
    let want = layout_len(fields);
    if body.len() != want {
        return Err(FixedError::Length {
            got: body.len(),
            want,
        });
    }
    let mut values = Map::new();
    let mut start = 0;
    for field in fields {
        let end = start + field.len;
        let text = charset
            .decode(&body[start..end])
            .map_err(|_| FixedError::Charset {
                field: field.name.clone(),
                start,
                end,
                charset: charset.name(),
            })?;
        values.insert(field.name.clone(), Value::String(text.trim().to_owned()));
        start = end;
    }
    Ok(values)
}

/// The inverse, for tests and the `pushgate send` tool: each field's value (missing = empty;
/// non-string JSON values rendered with to_string) encoded in `charset` and right-padded with
/// spaces to its length.
pub fn encode_fixed(
    fields: &[FieldSpec],
    values: &Map<String, Value>,
    charset: Charset,
) -> Result<Vec<u8>, FixedError> {
    let mut out = Vec::with_capacity(layout_len(fields));
    for field in fields {
        let text = match values.get(&field.name) {
            None => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        let bytes = charset.encode(&text);
        if bytes.len() > field.len {
            return Err(FixedError::TooLong {
                field: field.name.clone(),
                len: bytes.len(),
                max: field.len,
                charset: charset.name(),
            });
        }
        out.extend_from_slice(&bytes);
        out.resize(out.len() + field.len - bytes.len(), b' ');
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A layout as (name, len) pairs.
    type Spec<'a> = &'a [(&'a str, usize)];

    fn layout(spec: Spec) -> Vec<FieldSpec> {
        spec.iter()
            .map(|&(name, len)| FieldSpec {
                name: name.into(),
                len,
            })
            .collect()
    }

    fn map(value: Value) -> Map<String, Value> {
        match value {
            Value::Object(map) => map,
            other => panic!("not an object: {other}"),
        }
    }

    /// A push telegram as a core-banking system defines it: 190 bytes.
    fn push_layout() -> Vec<FieldSpec> {
        layout(&[
            ("uniqueKey", 20),
            ("csno", 10),
            ("device_id", 40),
            ("msg_title", 40),
            ("msg_contents", 80),
        ])
    }

    fn push_values() -> Map<String, Value> {
        map(json!({
            "uniqueKey": "20240501TRX000000001",
            "csno": "0012345678",
            "device_id": "fcm-token-abc123:APA91bH",
            "msg_title": "이체 완료",
            "msg_contents": "홍길동님, 100,000원이 입금되었습니다.",
        }))
    }

    #[test]
    fn a_korean_push_telegram_round_trips_in_both_charsets() {
        for charset in [Charset::EucKr, Charset::Utf8] {
            let wire = encode_fixed(&push_layout(), &push_values(), charset).expect("encode");
            assert_eq!(wire.len(), 190, "{charset:?}");
            let decoded = decode_fixed(&push_layout(), &wire, charset).expect("decode");
            assert_eq!(decoded, push_values(), "{charset:?}");
        }
    }

    #[test]
    fn encode_measures_bytes_of_the_encoded_text_and_pads_with_spaces() {
        // "이체 완료" is 9 bytes in EUC-KR and 13 in UTF-8.
        let fields = layout(&[("title", 13), ("n", 3), ("none", 2)]);
        let values = map(json!({"title": "이체 완료", "n": 7}));
        let cases: &[(Charset, &[u8])] = &[
            (
                Charset::EucKr,
                b"\xc0\xcc\xc3\xbc \xbf\xcf\xb7\xe1    7    ",
            ),
            (Charset::Utf8, "이체 완료7    ".as_bytes()),
        ];
        for (charset, want) in cases {
            let got = encode_fixed(&fields, &values, *charset).expect("encode");
            assert_eq!(got, *want, "{charset:?}");
        }
    }

    #[test]
    fn decode_trims_ascii_and_unicode_whitespace() {
        let fields = layout(&[("a", 6), ("b", 7), ("c", 3)]);
        let body = "  x y\t\u{3000}이\r\n  ".as_bytes();
        let want = map(json!({"a": "x y", "b": "이", "c": ""}));
        assert_eq!(decode_fixed(&fields, body, Charset::Utf8), Ok(want));
    }

    #[test]
    fn decode_requires_the_exact_layout_length() {
        let cases: &[(&[u8], usize)] = &[(b"", 0), (b"12345", 5), (b"1234567", 7), (b"123456 ", 7)];
        let fields = layout(&[("a", 2), ("b", 4)]);
        for (body, got) in cases {
            let want = FixedError::Length { got: *got, want: 6 };
            assert_eq!(
                decode_fixed(&fields, body, Charset::Utf8),
                Err(want),
                "{body:?}"
            );
        }
    }

    #[test]
    fn a_field_boundary_inside_a_korean_character_names_the_field() {
        // "안녕하" in EUC-KR is 6 bytes; a 5-byte title cuts "녕" in half. Read as UTF-8, the
        // same bytes are invalid anywhere.
        let body = b"K1\xbe\xc8\xb3\xe7\xc7\xcf";
        let cases: &[(Spec, Charset, usize)] = &[
            (&[("key", 2), ("title", 5), ("rest", 1)], Charset::EucKr, 7),
            (&[("key", 2), ("title", 6)], Charset::Utf8, 8),
        ];
        for &(spec, charset, end) in cases {
            let want = FixedError::Charset {
                field: "title".into(),
                start: 2,
                end,
                charset: charset.name(),
            };
            assert_eq!(
                decode_fixed(&layout(spec), body, charset),
                Err(want),
                "{charset:?}"
            );
        }
        let whole = decode_fixed(&layout(&[("key", 2), ("title", 6)]), body, Charset::EucKr);
        assert_eq!(whole, Ok(map(json!({"key": "K1", "title": "안녕하"}))));
    }

    #[test]
    fn encode_rejects_a_value_wider_than_its_field() {
        let fields = layout(&[("key", 4), ("title", 8)]);
        let values = map(json!({"key": "K1", "title": "안녕하세요"}));
        let cases: &[(Charset, usize)] = &[(Charset::EucKr, 10), (Charset::Utf8, 15)];
        for &(charset, len) in cases {
            let want = FixedError::TooLong {
                field: "title".into(),
                len,
                max: 8,
                charset: charset.name(),
            };
            assert_eq!(
                encode_fixed(&fields, &values, charset),
                Err(want),
                "{charset:?}"
            );
        }
    }

    #[test]
    fn field_specs_reject_unknown_keys() {
        let ok: Result<FieldSpec, _> = serde_json::from_str(r#"{"name":"csno","len":10}"#);
        assert_eq!(
            ok.ok(),
            Some(FieldSpec {
                name: "csno".into(),
                len: 10
            })
        );
        let typo: Result<FieldSpec, _> = serde_json::from_str(r#"{"name":"csno","length":10}"#);
        assert!(typo.is_err());
    }
}
