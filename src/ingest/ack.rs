//! The answer to one frame: its JSON body in the documented field order, and its
//! bytes on the wire in the port's charset and framing.

use crate::config::PortConfig;

/// The answer to one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Ack {
    Stored { key: String, id: u64, dup: bool },
    Error { key: Option<String>, error: String },
}

impl Ack {
    pub(super) fn error(key: Option<String>, error: String) -> Ack {
        Ack::Error { key, error }
    }

    /// The ack body, fields in the documented order: `ok`, `key`, then `id` and `dup`
    /// or `error`.
    pub fn to_json(&self) -> String {
        #[derive(serde::Serialize)]
        struct Body<'a> {
            ok: bool,
            key: Option<&'a str>,
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<String>,
            #[serde(skip_serializing_if = "std::ops::Not::not")]
            dup: bool,
            #[serde(skip_serializing_if = "Option::is_none")]
            error: Option<&'a str>,
        }
        let body = match self {
            Ack::Stored { key, id, dup } => Body {
                ok: true,
                key: Some(key),
                id: Some(id.to_string()),
                dup: *dup,
                error: None,
            },
            Ack::Error { key, error } => Body {
                ok: false,
                key: key.as_deref(),
                id: None,
                dup: false,
                error: Some(error),
            },
        };
        serde_json::to_string(&body)
            .unwrap_or_else(|_| r#"{"ok":false,"key":null,"error":"ack"}"#.into())
    }
}

pub(super) fn encode_ack(port: &PortConfig, ack: &Ack, out: &mut Vec<u8>) {
    let text = ack.to_json();
    let body = port.encoding.encode(&text);
    if let Err(e) = port.framing().encode(&body, out) {
        // Only an ascii-len header too short for a long error text gets here.
        let short = Ack::error(None, e.to_string()).to_json();
        let _ = port.framing().encode(short.as_bytes(), out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acks_follow_the_wire_contract_field_order() {
        let ok = Ack::Stored {
            key: "K1".into(),
            id: 42,
            dup: false,
        };
        assert_eq!(ok.to_json(), r#"{"ok":true,"key":"K1","id":"42"}"#);
        let dup = Ack::Stored {
            key: "K1".into(),
            id: 42,
            dup: true,
        };
        assert_eq!(
            dup.to_json(),
            r#"{"ok":true,"key":"K1","id":"42","dup":true}"#
        );
        let err = Ack::error(None, "frame is not valid JSON".into());
        assert_eq!(
            err.to_json(),
            r#"{"ok":false,"key":null,"error":"frame is not valid JSON"}"#
        );
    }
}
