//! An app: one provider project pushes are sent through, with its credentials, endpoint,
//! pacing and retry policy. `[[app]]` entries are apps; `[fcm]` is the app `default`. Each
//! optional key names its default fn (an app's `name` is required, so there is no
//! `Default`).

use std::path::PathBuf;

use serde::Deserialize;

/// Which provider an app sends through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Provider {
    /// Firebase Cloud Messaging HTTP v1 (`service_account`).
    #[default]
    Fcm,
    /// Apple's provider API directly, with token auth (`key_file`, `key_id`, `team_id`,
    /// `topic`).
    Apns,
}

impl Provider {
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Fcm => "fcm",
            Provider::Apns => "apns",
        }
    }

    /// As operators say it.
    pub fn name(self) -> &'static str {
        match self {
            Provider::Fcm => "FCM",
            Provider::Apns => "APNs",
        }
    }
}

/// Apple's production endpoint; `https://api.sandbox.push.apple.com` is the development one.
pub const APNS_ENDPOINT: &str = "https://api.push.apple.com";
/// Google's FCM endpoint.
pub const FCM_ENDPOINT: &str = "https://fcm.googleapis.com";

/// One app (`[[app]]`, or `[fcm]` as the app `default`): credentials, endpoint, pacing and
/// the sender's retry policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppConfig {
    /// The app's name, which ports, API keys and scripts use (`app = "..."`); `[fcm]`
    /// is `default`.
    #[serde(default = "default_app_name")]
    pub name: String,
    #[serde(default)]
    pub provider: Provider,
    /// (fcm) The Google service-account JSON key (relative to the config file).
    #[serde(default)]
    pub service_account: Option<PathBuf>,
    /// (apns) The `.p8` key Apple gives developers (PKCS#8 PEM, EC P-256), relative to the
    /// config file.
    #[serde(default)]
    pub key_file: Option<PathBuf>,
    /// (apns) The key's 10-character id (`kid`).
    #[serde(default)]
    pub key_id: Option<String>,
    /// (apns) The 10-character team id (`iss`).
    #[serde(default)]
    pub team_id: Option<String>,
    /// (apns) The app's bundle id, sent as `apns-topic`.
    #[serde(default)]
    pub topic: Option<String>,
    /// (apns) How long one provider token (JWT) is used before a new one is signed:
    /// Apple wants 20 to 60 minutes (faster refreshes get 429
    /// TooManyProviderTokenUpdates, older tokens 403 ExpiredProviderToken).
    #[serde(default = "default_token_refresh_secs")]
    pub token_refresh_secs: u64,
    /// Most sends per second, shared by every node on the same Redis (a token bucket in
    /// Redis); none = no cap of pushgate's own. Urgent pushes may use a reserve that
    /// normal and bulk ones leave untouched.
    #[serde(default)]
    pub rate: Option<u32>,
    /// Most sends the bucket lets go at once (its capacity); default a tenth of `rate`,
    /// at least 2. Over any window of T seconds at most `burst + rate × T` are sent.
    #[serde(default)]
    pub burst: Option<u32>,
    /// `https://fcm.googleapis.com` (fcm) or `https://api.push.apple.com` (apns) when
    /// unset; or an emulator's `http://host:port` (h2c) or `https://localhost:port`.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Most sends in flight at once.
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight: usize,
    /// A claimed record not finished within this returns to `due` (another sender may take it).
    #[serde(default = "default_lease_secs")]
    pub lease_secs: u64,
    /// With a value above 0, a transient failure after this many attempts (quota answers
    /// not counted) becomes `failed` even before its deadline; 0 (the default) = only the
    /// deadline ends retries.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// A push's deadline when its route set no `ttl`: seconds from when it was due
    /// (received, or its reserved time). Past it, it ends `expired`.
    #[serde(default = "default_max_age_secs")]
    pub max_age_secs: u64,
    /// First retry delay after UNAVAILABLE/INTERNAL/timeouts; doubles per attempt, with jitter.
    #[serde(default = "default_retry_base_ms")]
    pub retry_base_ms: u64,
    #[serde(default = "default_retry_max_ms")]
    pub retry_max_ms: u64,
    /// First pause after QUOTA_EXCEEDED without Retry-After (the whole sender pauses).
    #[serde(default = "default_quota_retry_ms")]
    pub quota_retry_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    #[serde(default = "default_request_timeout_ms")]
    pub request_timeout_ms: u64,
    /// `http://host:port` (or `http://user:password@host:port`): a CONNECT proxy that every
    /// request of this app goes through, the token grant and the sends alike, for networks
    /// where only a DMZ host reaches the internet. Unset, the usual `HTTPS_PROXY` /
    /// `NO_PROXY` environment applies.
    #[serde(default)]
    pub proxy: Option<String>,
    /// Extra PEM CA certificates to trust besides the system store (relative to the config
    /// file): a TLS-inspecting proxy's CA, or the emulator's self-signed certificate.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
}

fn default_app_name() -> String {
    crate::push::DEFAULT_APP.into()
}
fn default_token_refresh_secs() -> u64 {
    40 * 60
}
fn default_max_in_flight() -> usize {
    256
}
fn default_lease_secs() -> u64 {
    30
}
fn default_max_attempts() -> u32 {
    0
}
fn default_max_age_secs() -> u64 {
    3600
}
fn default_retry_base_ms() -> u64 {
    1000
}
fn default_retry_max_ms() -> u64 {
    300_000
}
fn default_quota_retry_ms() -> u64 {
    60_000
}
fn default_connect_timeout_ms() -> u64 {
    3000
}
fn default_request_timeout_ms() -> u64 {
    10_000
}

impl AppConfig {
    /// Where its sends go: `endpoint`, else the provider's own.
    pub fn endpoint(&self) -> &str {
        match (&self.endpoint, self.provider) {
            (Some(endpoint), _) => endpoint,
            (None, Provider::Fcm) => FCM_ENDPOINT,
            (None, Provider::Apns) => APNS_ENDPOINT,
        }
    }

    /// The bucket's capacity and the part of it only urgent pushes may use, for a rate.
    pub fn bucket(&self) -> Option<Bucket> {
        let rate = self.rate?;
        let burst = self.burst.unwrap_or(rate / 10).max(2);
        Some(Bucket {
            rate,
            burst,
            // A fifth of the burst, at least one send: urgent pushes go at once even when
            // bulk has used the window.
            urgent_reserve: (burst / 5).max(1),
        })
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        let at = format!("app {:?}", self.name);
        if !crate::push::queue::is_app_name(&self.name) {
            out.push(format!(
                "{at}: name must be 1 to {} of a-z, 0-9, '_' and '-'",
                crate::push::queue::MAX_APP_NAME
            ));
        }
        if self.rate == Some(0) {
            out.push(format!(
                "{at}: rate must be at least 1 send a second (leave it out for no cap)"
            ));
        }
        if let (Some(burst), Some(rate)) = (self.burst, self.rate)
            && (burst < 2 || burst > rate.max(2))
        {
            out.push(format!(
                "{at}: burst = {burst} must be 2 to rate ({rate}): a burst above a second's sends breaks the cap over short windows"
            ));
        }
        if self.burst.is_some() && self.rate.is_none() {
            out.push(format!("{at}: burst needs a rate"));
        }
        self.provider_problems(&at, out);
        let endpoint = self.endpoint();
        if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
            out.push(format!(
                "{at}: endpoint = {endpoint:?} must start with https:// (or http:// for the emulator)"
            ));
        }
        if self.max_in_flight == 0 || self.max_age_secs == 0 {
            out.push(format!(
                "{at}: max_in_flight and max_age_secs must be at least 1"
            ));
        }
        if self.request_timeout_ms == 0 || self.retry_base_ms == 0 {
            out.push(format!(
                "{at}: request_timeout_ms and retry_base_ms must be above 0"
            ));
        }
        if self.lease_secs * 1000 <= self.request_timeout_ms {
            out.push(format!(
                "{at}: lease_secs = {} must be longer than request_timeout_ms = {} (a lease may not expire during a send)",
                self.lease_secs, self.request_timeout_ms
            ));
        }
        if let Some(proxy) = &self.proxy {
            if let Err(why) = check_proxy(proxy) {
                out.push(format!(
                    "{at}: proxy = {:?} {why}",
                    crate::config::redact(proxy)
                ));
            }
            // A plain-http endpoint is the emulator's h2c, which no CONNECT proxy carries.
            if endpoint.starts_with("http://") {
                out.push(format!(
                    "{at}: proxy needs an https:// endpoint, not {endpoint:?}"
                ));
            }
        }
    }
}

impl AppConfig {
    /// Each provider's own keys are required, and the other's refused.
    fn provider_problems(&self, at: &str, out: &mut Vec<String>) {
        let apns_keys = [
            ("key_file", self.key_file.is_some()),
            ("key_id", self.key_id.is_some()),
            ("team_id", self.team_id.is_some()),
            ("topic", self.topic.is_some()),
        ];
        match self.provider {
            Provider::Fcm => {
                if self.service_account.is_none() {
                    out.push(format!(
                        "{at}: provider \"fcm\" needs service_account (the Google JSON key)"
                    ));
                }
                for (key, _) in apns_keys.iter().filter(|(_, set)| *set) {
                    out.push(format!(
                        "{at}: {key} is an APNs key; set provider = \"apns\" for Apple's API"
                    ));
                }
            }
            Provider::Apns => {
                for (key, _) in apns_keys.iter().filter(|(_, set)| !*set) {
                    out.push(format!("{at}: provider \"apns\" needs {key}"));
                }
                if self.service_account.is_some() {
                    out.push(format!(
                        "{at}: service_account is FCM's; an APNs app signs with key_file"
                    ));
                }
                for (key, value) in [("key_id", &self.key_id), ("team_id", &self.team_id)] {
                    if let Some(value) = value
                        && !(value.len() == 10 && value.bytes().all(|b| b.is_ascii_alphanumeric()))
                    {
                        out.push(format!(
                            "{at}: {key} = {value:?} must be Apple's 10 letters and digits"
                        ));
                    }
                }
                if let Some(topic) = &self.topic
                    && (topic.is_empty()
                        || topic.len() > 255
                        || topic
                            .bytes()
                            .any(|b| b.is_ascii_whitespace() || !b.is_ascii_graphic()))
                {
                    out.push(format!("{at}: topic = {topic:?} must be the app's bundle id (e.g. \"kr.example.bank\")"));
                }
                if self.token_refresh_secs == 0 {
                    out.push(format!(
                        "{at}: token_refresh_secs must be at least 1 (Apple wants 1200 to 3600)"
                    ));
                }
            }
        }
    }
}

/// Why `proxy` is not an `http://[user:password@]host[:port]` URL, if it is not. Only a
/// plain-http proxy: TLS to Google runs end to end inside its CONNECT tunnel.
fn check_proxy(proxy: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(proxy).map_err(|e| format!("is not a URL ({e})"))?;
    if url.scheme() != "http" {
        return Err(
            "must start with http:// (a CONNECT proxy, e.g. \"http://10.0.0.1:3128\")".into(),
        );
    }
    if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
        return Err("must be only http://host:port, with no path".into());
    }
    Ok(())
}

/// An app's token bucket, kept in Redis and shared by every node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Sends per second.
    pub rate: u32,
    /// Capacity.
    pub burst: u32,
    /// Tokens normal and bulk pushes leave for urgent ones.
    pub urgent_reserve: u32,
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PORT, parse};
    use super::{Bucket, Provider};

    const FCM: &str = "[fcm]\nservice_account = \"sa.json\"\n";

    #[test]
    fn proxy_and_ca_file_are_optional_and_read_as_written() {
        let config = parse(&format!("{FCM}{PORT}")).unwrap();
        let fcm = config.fcm.expect("[fcm]");
        assert_eq!((fcm.proxy, fcm.ca_file), (None, None));

        let text = format!(
            "{FCM}proxy = \"http://squid.dmz:3128\"\nca_file = \"certs/inspecting-proxy.pem\"\n{PORT}"
        );
        let fcm = parse(&text).unwrap().fcm.expect("[fcm]");
        assert_eq!(fcm.proxy.as_deref(), Some("http://squid.dmz:3128"));
        assert_eq!(
            fcm.ca_file.as_deref(),
            Some(std::path::Path::new("certs/inspecting-proxy.pem"))
        );
    }

    #[test]
    fn a_proxy_must_be_a_plain_http_url_and_its_password_never_shows() {
        for ok in [
            "http://10.0.0.1:3128",
            "http://squid.dmz:3128/",
            "http://pushgate:s3cret@squid.dmz:3128",
            "http://squid.dmz",
        ] {
            let text = format!("{FCM}proxy = \"{ok}\"\n{PORT}");
            assert!(parse(&text).is_ok(), "{ok} is a valid proxy");
        }
        for (bad, expected) in [
            ("squid.dmz:3128", "must start with http://"),
            ("https://squid.dmz:3128", "must start with http://"),
            ("socks5://squid.dmz:1080", "must start with http://"),
            ("http://", "is not a URL"),
            ("http://squid.dmz:3128/proxy", "with no path"),
            ("http://u:hunter2@squid.dmz:99999", "is not a URL"),
        ] {
            let err = parse(&format!("{FCM}proxy = \"{bad}\"\n{PORT}"))
                .unwrap_err()
                .to_string();
            assert!(err.contains("app \"default\": proxy = "), "{bad}: {err}");
            assert!(err.contains(expected), "{bad}: {err}");
            assert!(!err.contains("hunter2"), "the password is shown: {err}");
        }
        let h2c = format!(
            "{FCM}endpoint = \"http://127.0.0.1:8930\"\nproxy = \"http://squid.dmz:3128\"\n{PORT}"
        );
        let err = parse(&h2c).unwrap_err().to_string();
        assert!(
            err.contains("app \"default\": proxy needs an https:// endpoint"),
            "{err}"
        );
    }
    #[test]
    fn apps_are_named_and_fcm_is_the_default_one() {
        let text = format!(
            "{PORT}app = \"card\"\nlane = \"urgent\"\n{FCM}rate = 500\n[[app]]\nname = \"card\"\nservice_account = \"card.json\"\n"
        );
        let config = parse(&text).unwrap();
        let names: Vec<&str> = config.apps().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["default", "card"]);
        let default = config.app("default").unwrap();
        assert_eq!(default.provider, Provider::Fcm);
        assert_eq!(
            default.bucket(),
            Some(Bucket {
                rate: 500,
                burst: 50,
                urgent_reserve: 10
            })
        );
        assert_eq!(
            config.app("card").unwrap().bucket(),
            None,
            "no rate, no cap"
        );
        let port = &config.ports[0];
        assert_eq!(
            port.queue(),
            crate::push::Queue::new("card", crate::push::Lane::Urgent)
        );
        assert_eq!(config.queue_of("nowhere"), crate::push::Queue::default());
    }

    #[test]
    fn app_names_rates_and_references_are_checked() {
        for (text, problem) in [
            (
                format!("{FCM}[[app]]\nname = \"default\"\nservice_account = \"x\"\n"),
                "name is used twice",
            ),
            (
                format!("{FCM}name = \"mts\"\n"),
                "belongs in an [[app]] entry",
            ),
            (
                "[[app]]\nname = \"Bad Name\"\nservice_account = \"x\"\n".to_string(),
                "name must be 1 to 32",
            ),
            (format!("{FCM}rate = 0\n"), "rate must be at least 1"),
            (format!("{FCM}burst = 5\n"), "burst needs a rate"),
            (
                format!("{FCM}rate = 100\nburst = 500\n"),
                "burst = 500 must be 2 to rate",
            ),
            (
                format!("{PORT}app = \"nope\"\n{FCM}"),
                "app = \"nope\" is not configured",
            ),
            (
                format!("{PORT}[[app]]\nname = \"card\"\nservice_account = \"x\"\n"),
                "no `app` is set and there is no app \"default\"",
            ),
            (format!("{PORT}lane = \"fast\"\n"), "unknown variant `fast`"),
        ] {
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(problem), "{text}\n=> {err}");
        }
        // Without any app, a port may name one: nothing is sent yet.
        assert!(parse(&format!("{PORT}app = \"later\"\n")).is_ok());
    }
}
