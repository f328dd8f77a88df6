//! The words of a port's wire contract, shared by the config that names them and the
//! ingest code that speaks them: neither imports the other for them. The codecs (pure
//! functions over bytes) are `impl` blocks in `ingest::{charset, frame, fixed}`.

use std::net::IpAddr;

use ipnet::IpNet;

/// A port's `encoding` setting; its serde names are the config values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
pub enum Charset {
    #[serde(rename = "utf-8")]
    Utf8,
    /// Decoded with `encoding_rs::EUC_KR`, which is really windows-949 (CP949, Unified Hangul
    /// Code): a superset of EUC-KR covering all 11,172 Hangul syllables. That is what Korean
    /// core systems send when they say "EUC-KR".
    #[serde(rename = "euc-kr")]
    EucKr,
}

/// How a port delimits telegrams (DESIGN.md, "Wire contract of a port"). Acks go back in the
/// same framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// One body per `\n`-terminated line; a `\r` before the `\n` is tolerated.
    Ndjson,
    /// `digits` ASCII decimal digits giving the body length in bytes, then the body: the usual
    /// framing of financial telegrams.
    AsciiLen { digits: u8 },
    /// A 4-byte big-endian length, then the body.
    U32Be,
}

/// One field of a port's layout (`[[port.fields]] name, len`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FieldSpec {
    pub name: String,
    /// Width in bytes of the encoded text, not characters: a Hangul syllable takes 2 bytes in
    /// EUC-KR and 3 in UTF-8.
    pub len: usize,
}

/// An `allow` entry that is neither an IP address nor a CIDR block.
#[derive(Debug, PartialEq, thiserror::Error)]
#[error("allow entry {entry:?} is not an IP address or a CIDR block (like \"10.1.2.0/24\")")]
pub struct AllowEntryError {
    pub entry: String,
}

/// The peers a port accepts: CIDR blocks and single addresses. Empty lets any peer in.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AllowList {
    nets: Vec<IpNet>,
}

impl AllowList {
    pub fn parse(entries: &[String]) -> Result<AllowList, AllowEntryError> {
        let nets = entries
            .iter()
            .map(|e| parse_allow_entry(e))
            .collect::<Result<_, _>>()?;
        Ok(AllowList { nets })
    }

    /// Whether `peer` may connect. An IPv4 peer reaching a dual-stack (`[::]`) listener
    /// shows up as `::ffff:a.b.c.d`; it is matched as the IPv4 address it is.
    pub fn permits(&self, peer: IpAddr) -> bool {
        let peer = peer.to_canonical();
        self.nets.is_empty() || self.nets.iter().any(|net| net.contains(&peer))
    }
}

/// `10.1.2.0/24`, `fd00::/8`, or a single address (`127.0.0.1`, `::1`).
pub fn parse_allow_entry(entry: &str) -> Result<IpNet, AllowEntryError> {
    let text = entry.trim();
    let parsed = if text.contains('/') {
        text.parse::<IpNet>().ok()
    } else {
        text.parse::<IpAddr>()
            .ok()
            .map(|ip| IpNet::from(ip.to_canonical()))
    };
    parsed.ok_or_else(|| AllowEntryError {
        entry: entry.to_owned(),
    })
}
