//! `[[port]]`: where telegrams arrive and how they are framed, decoded and routed,
//! and what makes one valid. A port has required keys (`name`, `script`), so it has
//! no `Default`: each optional key names its default fn.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::push::fields::RESERVED_FIELDS;
use crate::wire::{Charset, FieldSpec, Framing};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Listen,
    Connect,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FramingKind {
    Ndjson,
    AsciiLen,
    U32be,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Payload {
    Json,
    Fixed,
}

/// One `[[port]]`: where telegrams arrive and how they are framed, decoded and routed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortConfig {
    pub name: String,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// `listen`: the address to bind; `connect`: the `host:port` to dial. Exactly one
    /// of `addr` and `addrs` is set (see [`PortConfig::addresses`]).
    #[serde(default)]
    pub addr: Option<String>,
    /// (connect) Upstreams dialled in order: when one refuses or drops the connection
    /// the next is dialled at once; the backoff applies only after a whole round failed.
    #[serde(default)]
    pub addrs: Vec<String>,
    /// (listen) Peers that may connect: CIDR blocks or single addresses; empty = any.
    /// Anyone else is closed at accept, before a byte is read.
    #[serde(default)]
    pub allow: Vec<String>,
    /// (listen) Most connections from one peer address, so one host cannot take every
    /// slot of `max_connections`.
    #[serde(default = "default_max_connections_per_addr")]
    pub max_connections_per_addr: usize,
    /// (listen) A connection that has not sent one complete frame within this is
    /// closed (an idle connection must not hold a slot); 0 = no limit. After the
    /// first frame, `idle_timeout` applies.
    #[serde(default = "default_first_frame_timeout_ms")]
    pub first_frame_timeout_ms: u64,
    #[serde(default = "default_framing")]
    pub framing: FramingKind,
    /// Digits of the ASCII length header (`ascii-len` only).
    #[serde(default)]
    pub len_digits: Option<u8>,
    #[serde(default = "default_encoding")]
    pub encoding: Charset,
    #[serde(default = "default_payload")]
    pub payload: Payload,
    /// Byte layout of a fixed-width telegram (`payload = "fixed"` only).
    #[serde(default)]
    pub fields: Vec<FieldSpec>,
    /// Fields that must be present and non-empty, besides `uniqueKey`.
    #[serde(default)]
    pub required: Vec<String>,
    /// Largest frame body accepted. Default 65536, or the most an `ascii-len`
    /// header of `len_digits` can express when that is less.
    #[serde(default)]
    pub max_frame_bytes: Option<usize>,
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Seconds without a byte before a connection is closed; 0 = never.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: u64,
    /// Path of the route script (relative to the config file).
    pub script: PathBuf,
    /// The app its pushes are sent through, unless the script names one (`push.app`);
    /// none = `default`.
    #[serde(default)]
    pub app: Option<String>,
    /// The lane its pushes wait in, unless the script names one (`push.lane`).
    #[serde(default)]
    pub lane: crate::push::Lane,
    /// Whether its pushes are ads unless the script says (`push.kind`); none = info.
    /// An ad needs `[ads]` and passes the ad gate.
    #[serde(default)]
    pub kind: Option<crate::push::Kind>,
    #[serde(default = "default_true")]
    pub autostart: bool,
    /// Longest wait between reconnects in `connect` mode (seconds).
    #[serde(default = "default_reconnect_max")]
    pub reconnect_max: u64,
    /// Send with FCM's `validate_only`: checked by FCM, delivered to nobody.
    #[serde(default)]
    pub dry_run: bool,
}

fn default_mode() -> Mode {
    Mode::Listen
}
fn default_framing() -> FramingKind {
    FramingKind::Ndjson
}
fn default_encoding() -> Charset {
    Charset::Utf8
}
fn default_payload() -> Payload {
    Payload::Json
}
const DEFAULT_MAX_FRAME_BYTES: usize = 64 * 1024;
fn default_max_connections() -> usize {
    64
}
fn default_idle_timeout() -> u64 {
    300
}
/// A FEP opens one connection, or a small pool; 8 leaves it room to reconnect while its
/// old connections time out, and takes 8 hosts to fill the default 64 slots.
fn default_max_connections_per_addr() -> usize {
    32
}
fn default_first_frame_timeout_ms() -> u64 {
    10_000
}
fn default_true() -> bool {
    true
}
fn default_reconnect_max() -> u64 {
    30
}

const DEFAULT_LEN_DIGITS: u8 = 4;

impl PortConfig {
    /// The queue its pushes wait in unless their script names another app or lane.
    pub fn queue(&self) -> crate::push::Queue {
        crate::push::Queue::new(
            self.app.as_deref().unwrap_or(crate::push::DEFAULT_APP),
            self.lane,
        )
    }

    pub fn framing(&self) -> Framing {
        match self.framing {
            FramingKind::Ndjson => Framing::Ndjson,
            FramingKind::AsciiLen => Framing::AsciiLen {
                digits: self.len_digits.unwrap_or(DEFAULT_LEN_DIGITS),
            },
            FramingKind::U32be => Framing::U32Be,
        }
    }

    pub fn max_frame_bytes(&self) -> usize {
        self.max_frame_bytes.unwrap_or(match self.framing() {
            Framing::AsciiLen { digits } if digits <= 9 => {
                DEFAULT_MAX_FRAME_BYTES.min(10usize.pow(u32::from(digits)) - 1)
            }
            _ => DEFAULT_MAX_FRAME_BYTES,
        })
    }

    pub fn idle_timeout(&self) -> Option<Duration> {
        (self.idle_timeout > 0).then(|| Duration::from_secs(self.idle_timeout))
    }

    /// `listen`: the one address to bind; `connect`: the upstreams in the order they
    /// are dialled. Validation makes it exactly one of `addr` and `addrs`, never empty.
    pub fn addresses(&self) -> &[String] {
        match &self.addr {
            Some(addr) => std::slice::from_ref(addr),
            None => &self.addrs,
        }
    }

    /// The address as shown to people: one, or the upstreams joined with ", ".
    pub fn addresses_text(&self) -> String {
        self.addresses().join(", ")
    }

    pub fn first_frame_timeout(&self) -> Option<Duration> {
        (self.first_frame_timeout_ms > 0)
            .then(|| Duration::from_millis(self.first_frame_timeout_ms))
    }

    pub(super) fn problems(&self, at: &str, out: &mut Vec<String>) {
        let name_ok = !self.name.is_empty()
            && self.name.len() <= 64
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            out.push(format!(
                "{at}: name must be 1-64 characters of letters, digits, '-' and '_'"
            ));
        }
        let one_of_addr_and_addrs = matches!(
            (&self.addr, self.addrs.is_empty()),
            (Some(_), true) | (None, false)
        );
        if !one_of_addr_and_addrs {
            out.push(format!(
                "{at}: set exactly one of addr and addrs (addrs: connect mode's upstreams)"
            ));
        }
        for (i, entry) in self.allow.iter().enumerate() {
            if let Err(e) = crate::wire::parse_allow_entry(entry) {
                out.push(format!("{at}: allow[{i}]: {e}"));
            }
        }
        if self.max_connections_per_addr == 0 {
            out.push(format!("{at}: max_connections_per_addr must be at least 1"));
        }
        match self.mode {
            Mode::Listen => {
                if !self.addrs.is_empty() {
                    out.push(format!(
                        "{at}: addrs only applies to mode = \"connect\"; a listen port binds one addr"
                    ));
                }
                if let Some(addr) = &self.addr
                    && addr.parse::<SocketAddr>().is_err()
                {
                    out.push(format!(
                        "{at}: addr = {addr:?} is not an IP:port to listen on"
                    ));
                }
            }
            Mode::Connect => {
                // A connect port chooses its peers itself (addr/addrs); an allow list
                // would suggest a protection that does not exist.
                if !self.allow.is_empty() {
                    out.push(format!(
                        "{at}: allow only applies to mode = \"listen\"; a connect port dials only its addr/addrs"
                    ));
                }
                let mut seen = BTreeSet::new();
                for addr in self.addresses() {
                    let ok = addr.rsplit_once(':').is_some_and(|(host, port)| {
                        !host.is_empty() && port.parse::<u16>().is_ok()
                    });
                    if !ok {
                        out.push(format!(
                            "{at}: addr = {addr:?} is not a host:port to connect to"
                        ));
                    }
                    if !seen.insert(addr.as_str()) {
                        out.push(format!("{at}: addrs lists {addr:?} twice"));
                    }
                }
            }
        }
        let max_frame_bytes = self.max_frame_bytes();
        if !(16..=16 * 1024 * 1024).contains(&max_frame_bytes) {
            out.push(format!(
                "{at}: max_frame_bytes = {max_frame_bytes} is outside 16..=16777216"
            ));
        }
        match (self.framing, self.len_digits) {
            (FramingKind::AsciiLen, digits) => {
                let digits = digits.unwrap_or(DEFAULT_LEN_DIGITS);
                // Fewer than 3 digits cannot carry an ack naming a long uniqueKey.
                if !(3..=9).contains(&digits) {
                    out.push(format!("{at}: len_digits = {digits} is outside 3..=9"));
                } else {
                    let largest = 10usize.pow(u32::from(digits)) - 1;
                    if max_frame_bytes > largest {
                        out.push(format!(
                            "{at}: max_frame_bytes = {max_frame_bytes} cannot be written in {digits} digits (at most {largest})"
                        ));
                    }
                }
            }
            (_, Some(_)) => out.push(format!(
                "{at}: len_digits only applies to framing = \"ascii-len\""
            )),
            (_, None) => {}
        }
        if self.max_connections == 0 {
            out.push(format!("{at}: max_connections must be at least 1"));
        }
        if self.reconnect_max == 0 {
            out.push(format!("{at}: reconnect_max must be at least 1 second"));
        }
        match self.payload {
            Payload::Json => {
                if !self.fields.is_empty() {
                    out.push(format!("{at}: fields only apply to payload = \"fixed\""));
                }
            }
            Payload::Fixed => {
                if self.fields.is_empty() {
                    out.push(format!(
                        "{at}: payload = \"fixed\" needs a [[port.fields]] layout"
                    ));
                }
                let mut seen = BTreeSet::new();
                for field in &self.fields {
                    if field.len == 0 {
                        out.push(format!("{at}: field {:?} has len 0", field.name));
                    }
                    if !seen.insert(field.name.as_str()) {
                        out.push(format!("{at}: field {:?} appears twice", field.name));
                    }
                    if RESERVED_FIELDS.contains(&field.name.as_str()) {
                        out.push(format!(
                            "{at}: field {:?} is reserved for pushgate's own record fields",
                            field.name
                        ));
                    }
                }
                if !self.fields.is_empty() && !seen.contains("uniqueKey") {
                    out.push(format!("{at}: the field layout has no uniqueKey"));
                }
                let total: usize = self.fields.iter().map(|f| f.len).sum();
                if total > max_frame_bytes {
                    out.push(format!(
                        "{at}: the field layout is {total} bytes, over max_frame_bytes = {max_frame_bytes}"
                    ));
                }
            }
        }
        for field in &self.required {
            if self.payload == Payload::Fixed && !self.fields.iter().any(|f| &f.name == field) {
                out.push(format!(
                    "{at}: required field {field:?} is not in the field layout"
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PORT, parse};

    #[test]
    fn ascii_len_default_frame_limit_fits_its_header() {
        let config = parse(&format!("{PORT}framing = \"ascii-len\"\n")).expect("valid");
        assert_eq!(config.ports[0].max_frame_bytes(), 9999);
    }

    #[test]
    fn each_invalid_setting_is_reported_with_its_key() {
        let cases = [
            (
                "len_digits = 12\nframing = \"ascii-len\"",
                "len_digits = 12",
            ),
            ("len_digits = 4", "len_digits only applies"),
            (
                "framing = \"ascii-len\"\nlen_digits = 3\nmax_frame_bytes = 1000",
                "cannot be written in 3 digits",
            ),
            ("payload = \"fixed\"", "needs a [[port.fields]] layout"),
            ("max_connections = 0", "max_connections must be at least 1"),
            (
                "max_connections_per_addr = 0",
                "max_connections_per_addr must be at least 1",
            ),
            (
                "allow = [\"10.1.2.0/24\", \"10.1.2.0/33\"]",
                "allow[1]: allow entry \"10.1.2.0/33\" is not an IP address or a CIDR block",
            ),
            ("allow = [\"fep-a\"]", "allow[0]: allow entry \"fep-a\""),
            (
                "addrs = [\"127.0.0.1:9002\"]",
                "set exactly one of addr and addrs",
            ),
            (
                "required = [\"csno\"]\npayload = \"fixed\"\nfields = [{ name = \"uniqueKey\", len = 10 }]",
                "required field \"csno\"",
            ),
            (
                "fields = [{ name = \"uniqueKey\", len = 10 }]",
                "fields only apply",
            ),
        ];
        for (extra, expected) in cases {
            let err = parse(&format!("{PORT}{extra}\n")).unwrap_err().to_string();
            assert!(err.contains("port[0] \"fep-transfer\""), "{extra}: {err}");
            assert!(err.contains(expected), "{extra}: {err}");
        }
    }

    #[test]
    fn connect_ports_take_several_upstreams_and_no_allow_list() {
        let connect = |lines: &str| {
            format!("[[port]]\nname = \"fep\"\nmode = \"connect\"\nscript = \"s.rhai\"\n{lines}\n")
        };
        let config = parse(&connect("addrs = [\"fep-a:7001\", \"fep-b:7001\"]")).expect("valid");
        assert_eq!(config.ports[0].addresses(), ["fep-a:7001", "fep-b:7001"]);
        assert_eq!(config.ports[0].addresses_text(), "fep-a:7001, fep-b:7001");
        let config = parse(&connect("addr = \"fep-a:7001\"")).expect("addr still works");
        assert_eq!(config.ports[0].addresses(), ["fep-a:7001"]);
        let cases = [
            ("", "set exactly one of addr and addrs"),
            (
                "addr = \"fep-a:7001\"\naddrs = [\"fep-b:7001\"]",
                "set exactly one of addr and addrs",
            ),
            (
                "addrs = [\"fep-a:7001\", \"fep-b\"]",
                "\"fep-b\" is not a host:port",
            ),
            (
                "addrs = [\"fep-a:7001\", \"fep-a:7001\"]",
                "lists \"fep-a:7001\" twice",
            ),
            (
                "addr = \"fep-a:7001\"\nallow = [\"10.0.0.0/8\"]",
                "allow only applies to mode = \"listen\"",
            ),
        ];
        for (lines, expected) in cases {
            let err = parse(&connect(lines)).unwrap_err().to_string();
            assert!(err.contains("port[0] \"fep\""), "{lines}: {err}");
            assert!(err.contains(expected), "{lines}: {err}");
        }
        let listen = PORT.replace("addr = \"127.0.0.1:9001\"", "addrs = [\"127.0.0.1:9001\"]");
        let err = parse(&listen).unwrap_err().to_string();
        assert!(
            err.contains("addrs only applies to mode = \"connect\""),
            "{err}"
        );
    }

    #[test]
    fn listen_ports_take_an_allow_list_of_addresses_and_blocks() {
        let text = format!(
            "{PORT}allow = [\"10.1.2.0/24\", \"127.0.0.1\", \"::1\"]\nmax_connections_per_addr = 2\nfirst_frame_timeout_ms = 0\n"
        );
        let config = parse(&text).expect("valid");
        let port = &config.ports[0];
        assert_eq!(port.allow.len(), 3);
        assert_eq!(port.max_connections_per_addr, 2);
        assert_eq!(port.first_frame_timeout(), None, "0 = no limit");
    }

    #[test]
    fn fixed_layout_must_hold_unique_key_and_no_reserved_field() {
        let text = format!(
            "{PORT}payload = \"fixed\"\nfields = [{{ name = \"csno\", len = 10 }}, {{ name = \"status\", len = 2 }}]\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.contains("no uniqueKey"), "{err}");
        assert!(err.contains("\"status\" is reserved"), "{err}");
    }
}
