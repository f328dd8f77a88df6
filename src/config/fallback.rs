//! `[[fallback]]`: one rung of a fallback ladder, an HTTP endpoint of the firm's messaging
//! gateway (KakaoTalk Alimtalk, SMS/LMS) that a push falls back to when it cannot reach
//! the customer. A push's route names its ladder (`push.fallback = ["alimtalk", "sms"]`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

use crate::fallback::template::Template;

/// One rung: where to send, what body, how fast, how long to keep trying.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FallbackConfig {
    /// What scripts call it (`"alimtalk"`, `"sms"`): a-z, 0-9, `_`, `-`.
    pub name: String,
    /// The gateway's endpoint for this channel, `https://…` (or `http://` inside the
    /// firm's network and for the emulator).
    pub url: String,
    /// Extra request headers (an API key, a sender profile id).
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The JSON body, whose strings may hold `{{field}}` (a standard message field) or
    /// `{{field|digits}}` placeholders.
    pub body: serde_json::Value,
    /// The header carrying the idempotency key (`{uniqueKey}:{name}`), so a send repeated
    /// after a crash is the same message to the gateway.
    #[serde(default = "default_idempotency_header")]
    pub idempotency_header: String,
    /// Most sends a second to the rung's gateway, for every node together (the claim's
    /// token bucket in Redis); none = no cap of pushgate's own.
    #[serde(default)]
    pub rate: Option<u32>,
    /// Most sends in flight at once; after a crash at most this many are sent again.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// The rung's deadline: seconds from when the push reached this rung. Past it the rung
    /// ends `expired` and the next rung is tried.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
    /// A claim not finished within this returns to the rung's queue.
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// First retry delay after a 5xx, 429 or timeout; doubles per attempt, with jitter.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `http://[user:password@]host:port`: the CONNECT proxy to the gateway.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Extra PEM CA certificates to trust (relative to the config file).
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_idempotency_header() -> String {
    "Idempotency-Key".into()
}
fn default_max_in_flight() -> usize {
    16
}
fn default_max_age_secs() -> u64 {
    600
}
fn default_lease_secs() -> u64 {
    30
}
fn default_retry_base_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    60_000
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}

impl FallbackConfig {
    /// The checked body template (the config's validation has already passed it).
    pub fn template(&self) -> Result<Template, String> {
        Template::parse(self.body.clone())
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        let at = format!("fallback {:?}", self.name);
        if !crate::push::queue::is_app_name(&self.name) {
            out.push(format!(
                "{at}: name must be 1 to {} of a-z, 0-9, '_' and '-'",
                crate::push::queue::MAX_APP_NAME
            ));
        }
        if !(self.url.starts_with("https://") || self.url.starts_with("http://")) {
            out.push(format!(
                "{at}: url = {:?} must start with https:// (or http://)",
                self.url
            ));
        }
        if let Err(e) = self.template() {
            out.push(format!("{at}: body: {e}"));
        }
        let header_ok = |name: &str| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        };
        if !header_ok(&self.idempotency_header) {
            out.push(format!(
                "{at}: idempotency_header = {:?} is not a header name",
                self.idempotency_header
            ));
        }
        for (name, value) in &self.headers {
            if !header_ok(name) || value.contains(['\r', '\n']) {
                out.push(format!("{at}: headers.{name} is not a usable header"));
            }
        }
        if self.rate == Some(0) {
            out.push(format!(
                "{at}: rate must be at least 1 send a second (leave it out for no cap)"
            ));
        }
        if self.max_in_flight == 0 || self.max_age_secs == 0 || self.lease_secs == 0 {
            out.push(format!(
                "{at}: max_in_flight, max_age_secs and lease_secs must be at least 1"
            ));
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            out.push(format!(
                "{at}: retry_base_ms must be at least 1 and retry_max_ms at least retry_base_ms"
            ));
        }
        if self.request_timeout_ms.saturating_mul(2) > self.lease_secs.saturating_mul(1000) {
            out.push(format!(
                "{at}: request_timeout_ms must be at most half of lease_secs, or a slow gateway's message could be claimed and sent again"
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::tests::parse;

    const RUNGS: &str = r#"
[[fallback]]
name = "alimtalk"
url = "https://gw.example.kr/alimtalk"
headers = { Authorization = "Bearer k" }
body = { to = "{{cust_telno|digits}}", sender_key = "sk", template_code = "TRF01", text = "{{msg_title}} {{msg_contents}}" }

[[fallback]]
name = "sms"
url = "https://gw.example.kr/sms"
body = { to = "{{cust_telno|digits}}", from = "15881234", text = "{{msg_contents}}" }
rate = 50
"#;

    #[test]
    fn a_ladder_of_two_rungs_loads_with_the_documented_defaults() {
        let config = parse(RUNGS).expect("valid");
        let [alimtalk, sms] = &config.fallbacks[..] else {
            panic!("{:?}", config.fallbacks)
        };
        assert_eq!(alimtalk.idempotency_header, "Idempotency-Key");
        assert_eq!(
            (
                alimtalk.max_in_flight,
                alimtalk.max_age_secs,
                alimtalk.lease_secs
            ),
            (16, 600, 30)
        );
        assert_eq!(alimtalk.rate, None);
        assert_eq!(sms.rate, Some(50));
        assert_eq!(alimtalk.headers["Authorization"], "Bearer k");
    }

    #[test]
    fn the_worked_configuration_in_operations_md_loads() {
        let doc = include_str!("../../docs/operations.md");
        let section = &doc[doc
            .find("### Fallback to Alimtalk and SMS")
            .expect("the section")..];
        let start = section.find("```toml\n").expect("a toml block") + 8;
        let block = &section[start..];
        let block = &block[..block.find("```").expect("the block's end")];
        let config = parse(block).expect("the documented configuration is valid");
        let names: Vec<&str> = config.fallbacks.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["alimtalk", "sms"]);
    }

    #[test]
    fn bad_rungs_are_named_with_what_is_wrong() {
        let text = format!(
            "{RUNGS}\n[[fallback]]\nname = \"sms\"\nurl = \"ftp://x\"\nbody = {{ to = \"{{{{password}}}}\" }}\nmax_in_flight = 0\n"
        );
        let err = parse(&text).unwrap_err().to_string();
        for wanted in [
            "fallback \"sms\": name is used twice",
            "fallback \"sms\": url = \"ftp://x\" must start with https://",
            "fallback \"sms\": body: {{password}} is not a field a template may use",
            "fallback \"sms\": max_in_flight, max_age_secs and lease_secs must be at least 1",
        ] {
            assert!(err.contains(wanted), "{wanted:?} in {err}");
        }
    }
}
