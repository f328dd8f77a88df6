//! The text encodings a port may speak, decoded strictly so a garbled telegram is rejected
//! instead of being stored and pushed with replacement characters.

pub use crate::wire::Charset;
use std::borrow::Cow;

use encoding_rs::{DecoderResult, EUC_KR, EncoderResult, Encoding};

/// Where decoding stopped, so an error ack can point at the bad byte.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("bytes are not valid {charset} at offset {offset}")]
pub struct CharsetError {
    pub charset: &'static str,
    /// Offset of the first byte of the first malformed sequence.
    pub offset: usize,
}

impl Charset {
    /// The config name, also used in error messages.
    pub fn name(&self) -> &'static str {
        match self {
            Charset::Utf8 => "utf-8",
            Charset::EucKr => "euc-kr",
        }
    }

    /// Strict: any malformed sequence is an error (never replacement chars).
    pub fn decode<'a>(&self, bytes: &'a [u8]) -> Result<Cow<'a, str>, CharsetError> {
        let error = |offset| CharsetError {
            charset: self.name(),
            offset,
        };
        match self {
            Charset::Utf8 => std::str::from_utf8(bytes)
                .map(Cow::Borrowed)
                .map_err(|e| error(e.valid_up_to())),
            Charset::EucKr => EUC_KR
                .decode_without_bom_handling_and_without_replacement(bytes)
                .ok_or_else(|| error(malformed_offset(EUC_KR, bytes))),
        }
    }

    /// Characters the charset cannot represent become '?' (acks only ever contain
    /// keys/ids/errors, and a readable ack beats encoding_rs's HTML `&#...;` escapes).
    pub fn encode<'a>(&self, text: &'a str) -> Cow<'a, [u8]> {
        match self {
            Charset::Utf8 => Cow::Borrowed(text.as_bytes()),
            Charset::EucKr if text.is_ascii() => Cow::Borrowed(text.as_bytes()),
            Charset::EucKr => Cow::Owned(encode_lossy(EUC_KR, text)),
        }
    }
}

/// Re-decode `bytes` (known to be malformed) to find where the first bad sequence starts.
/// Only runs on the error path, so the second pass costs nothing in the normal case.
fn malformed_offset(encoding: &'static Encoding, bytes: &[u8]) -> usize {
    let mut decoder = encoding.new_decoder_without_bom_handling();
    let mut scratch = [0u8; 1024];
    let mut read_total = 0;
    loop {
        let (result, read, _) =
            decoder.decode_to_utf8_without_replacement(&bytes[read_total..], &mut scratch, true);
        read_total += read;
        match result {
            DecoderResult::OutputFull => continue,
            // `read` already includes the bad sequence and any bytes accepted after it.
            DecoderResult::Malformed(bad, after) => {
                return read_total.saturating_sub(usize::from(bad) + usize::from(after));
            }
            // Unreachable for malformed input; the end is the least wrong answer.
            DecoderResult::InputEmpty => return read_total,
        }
    }
}

/// Encode with '?' for every character `encoding` cannot represent.
fn encode_lossy(encoding: &'static Encoding, text: &str) -> Vec<u8> {
    let mut encoder = encoding.new_encoder();
    // Hangul is 3 bytes in UTF-8 and 2 in CP949, and '?' is shorter than any non-ASCII char,
    // so the UTF-8 length is enough; the OutputFull arm is only a safety net.
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text;
    loop {
        let (result, read) =
            encoder.encode_from_utf8_to_vec_without_replacement(rest, &mut out, true);
        rest = &rest[read..];
        match result {
            EncoderResult::InputEmpty => return out,
            EncoderResult::OutputFull => out.reserve(rest.len().max(16)),
            EncoderResult::Unmappable(_) => out.push(b'?'),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// "안녕하세요" and "이체 완료" in EUC-KR/CP949.
    const ANNYEONG: &[u8] = b"\xbe\xc8\xb3\xe7\xc7\xcf\xbc\xbc\xbf\xe4";
    const ICHE_WANRYO: &[u8] = b"\xc0\xcc\xc3\xbc \xbf\xcf\xb7\xe1";

    #[test]
    fn decodes_valid_text() {
        let cases: &[(Charset, &[u8], &str)] = &[
            (Charset::Utf8, b"", ""),
            (Charset::Utf8, b"abc", "abc"),
            (Charset::Utf8, "안녕하세요".as_bytes(), "안녕하세요"),
            (Charset::EucKr, b"", ""),
            (Charset::EucKr, b"key-1", "key-1"),
            (Charset::EucKr, ANNYEONG, "안녕하세요"),
            (Charset::EucKr, ICHE_WANRYO, "이체 완료"),
            // CP949-only syllable (not in plain EUC-KR/KS X 1001): "똠".
            (Charset::EucKr, b"\x8c\x63", "똠"),
        ];
        for (charset, bytes, want) in cases {
            assert_eq!(
                charset.decode(bytes).as_deref(),
                Ok(*want),
                "{charset:?} {bytes:?}"
            );
        }
    }

    #[test]
    fn rejects_malformed_bytes_at_their_offset() {
        let cases: &[(Charset, &[u8], usize)] = &[
            (Charset::Utf8, b"\xff", 0),
            (Charset::Utf8, b"ab\xc3(", 2),
            // Truncated: first two bytes of the three-byte "안".
            (Charset::Utf8, b"ok \xec\x95", 3),
            // EUC-KR bytes sent to a UTF-8 port.
            (Charset::Utf8, ANNYEONG, 0),
            (Charset::EucKr, b"\xff\xff", 0),
            (Charset::EucKr, b"ab\x80", 2),
            // A lead byte cut off at the end of the input.
            (Charset::EucKr, b"\xbe\xc8\xb3", 2),
            // A lead byte followed by ASCII that is no CP949 trail (letters are).
            (Charset::EucKr, b"\xbe\xc8\xb3 1", 2),
            // A lead byte followed by a byte that is no valid trail.
            (Charset::EucKr, b"abc\xc8\xff", 3),
        ];
        for (charset, bytes, offset) in cases {
            let want = CharsetError {
                charset: charset.name(),
                offset: *offset,
            };
            assert_eq!(charset.decode(bytes), Err(want), "{charset:?} {bytes:?}");
        }
    }

    #[test]
    fn the_offset_is_found_past_the_scratch_buffer() {
        let mut bytes = ANNYEONG.repeat(500);
        bytes.push(0xff);
        let got = Charset::EucKr.decode(&bytes).unwrap_err();
        assert_eq!(got.offset, 5000);
        assert_eq!(got.to_string(), "bytes are not valid euc-kr at offset 5000");
    }

    #[test]
    fn encodes_and_replaces_unmappable_chars_with_a_question_mark() {
        let cases: &[(Charset, &str, &[u8])] = &[
            (Charset::Utf8, "안녕 😀", "안녕 😀".as_bytes()),
            (Charset::EucKr, "{\"ok\":true}", b"{\"ok\":true}"),
            (Charset::EucKr, "안녕하세요", ANNYEONG),
            (Charset::EucKr, "이체 완료", ICHE_WANRYO),
            (Charset::EucKr, "a😀b", b"a?b"),
            (Charset::EucKr, "이체😀😀", b"\xc0\xcc\xc3\xbc??"),
            (Charset::EucKr, "ก", b"?"),
        ];
        for (charset, text, want) in cases {
            assert_eq!(&*charset.encode(text), *want, "{charset:?} {text:?}");
        }
    }

    #[test]
    fn encode_borrows_when_no_conversion_is_needed() {
        assert!(matches!(Charset::Utf8.encode("이체"), Cow::Borrowed(_)));
        assert!(matches!(Charset::EucKr.encode("K-1"), Cow::Borrowed(_)));
        assert!(matches!(Charset::EucKr.encode("이체"), Cow::Owned(_)));
    }

    #[test]
    fn config_names_match_serde_and_name() {
        for charset in [Charset::Utf8, Charset::EucKr] {
            let json = serde_json::to_string(&charset).expect("serialize");
            assert_eq!(json, format!("\"{}\"", charset.name()));
            assert_eq!(serde_json::from_str::<Charset>(&json).ok(), Some(charset));
        }
        assert!(serde_json::from_str::<Charset>("\"cp949\"").is_err());
    }
}
