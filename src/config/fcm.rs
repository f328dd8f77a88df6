//! `[fcm]`: credentials, endpoint and the sender's retry policy. The section has a
//! required key (`service_account`), so it has no `Default`: each optional key names
//! its default fn.

use std::path::PathBuf;

use serde::Deserialize;

/// `[fcm]`: credentials, endpoint and the sender's retry policy.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FcmConfig {
    /// The Google service-account JSON key (relative to the config file).
    pub service_account: PathBuf,
    /// `https://fcm.googleapis.com`, or the emulator's `http://host:port` (h2c).
    #[serde(default = "default_fcm_endpoint")]
    pub endpoint: String,
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
}

fn default_fcm_endpoint() -> String {
    "https://fcm.googleapis.com".into()
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

impl FcmConfig {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) {
            out.push(format!(
                "fcm.endpoint = {:?} must start with https:// (or http:// for the emulator)",
                self.endpoint
            ));
        }
        if self.max_in_flight == 0 || self.max_age_secs == 0 {
            out.push("fcm.max_in_flight and fcm.max_age_secs must be at least 1".into());
        }
        if self.request_timeout_ms == 0 || self.retry_base_ms == 0 {
            out.push("fcm.request_timeout_ms and fcm.retry_base_ms must be above 0".into());
        }
        if self.lease_secs * 1000 <= self.request_timeout_ms {
            out.push(format!(
                "fcm.lease_secs = {} must be longer than fcm.request_timeout_ms = {} (a lease may not expire during a send)",
                self.lease_secs, self.request_timeout_ms
            ));
        }
    }
}
