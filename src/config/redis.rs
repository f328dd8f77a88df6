//! `[redis]`: where the records live (a Redis URL, Sentinel, or a managed
//! `redis-server`), and how long a write may take and how durable its ack is.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `redis+unix:///path/redis.sock`; ignored when `managed`.
    pub url: String,
    /// Every key pushgate writes starts with this, so one Redis can hold other data too.
    pub prefix: String,
    /// Start and supervise a local `redis-server` (AOF on) instead of using `url`.
    pub managed: bool,
    /// Data directory of the managed Redis (AOF files, unix socket).
    pub dir: Option<PathBuf>,
    /// Managed Redis listens on this loopback TCP port; unset = a unix socket in `dir` only.
    pub managed_port: Option<u16>,
    /// Path of the `redis-server` binary for `managed`.
    pub server_bin: PathBuf,
    /// `appendfsync` of the managed Redis: `everysec` (default) or `always` (an ack
    /// then means the record is on disk; see docs/backup.md).
    pub appendfsync: AppendFsync,
    /// A Redis round trip slower than this fails, and its frames get error acks.
    pub timeout_ms: u64,
    /// Sentinel addresses (`redis://host:port`); when set, pushgate asks them for the
    /// master named `master_name` and follows a failover. `url` then only supplies the
    /// password and db of the master.
    pub sentinels: Vec<String>,
    pub master_name: Option<String>,
    /// Ack a frame only once `WAIT` confirms its record reached this many replicas.
    pub ack_replicas: u32,
    /// How long `WAIT` may take before the frames get error acks ("send again").
    pub ack_replicas_timeout_ms: u64,
    /// A group commit that fails on a lost connection is retried for this long (on
    /// the new master after a failover) before its frames get error acks.
    /// Default: 5000 with Sentinel, 300 without.
    pub commit_retry_ms: Option<u64>,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379".into(),
            prefix: "pushgate:".into(),
            managed: false,
            dir: None,
            managed_port: None,
            server_bin: "redis-server".into(),
            appendfsync: AppendFsync::default(),
            timeout_ms: 3000,
            sentinels: Vec::new(),
            master_name: None,
            ack_replicas: 0,
            ack_replicas_timeout_ms: 1000,
            commit_retry_ms: None,
        }
    }
}

impl RedisConfig {
    /// How long a failed group commit is retried (see `commit_retry_ms`).
    pub fn commit_retry(&self) -> std::time::Duration {
        // Without Sentinel, long enough to get past a connection that broke while idle.
        let default = if self.sentinels.is_empty() { 300 } else { 5000 };
        std::time::Duration::from_millis(self.commit_retry_ms.unwrap_or(default))
    }
}

/// When the managed Redis flushes its AOF to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppendFsync {
    /// fsync about once a second, in the background.
    #[default]
    Everysec,
    /// fsync before replying (once per group commit).
    Always,
}

impl AppendFsync {
    pub fn as_str(self) -> &'static str {
        match self {
            AppendFsync::Everysec => "everysec",
            AppendFsync::Always => "always",
        }
    }
}

impl RedisConfig {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.prefix.is_empty() {
            out.push("redis.prefix must not be empty (flush deletes by prefix)".into());
        }
        if self.timeout_ms == 0 {
            out.push("redis.timeout_ms must be above 0".into());
        }
        if !self.sentinels.is_empty() {
            if self.managed {
                out.push("redis.sentinels and redis.managed cannot be used together".into());
            }
            if self.master_name.as_deref().is_none_or(str::is_empty) {
                out.push(
                    "redis.sentinels needs redis.master_name (the name Sentinel monitors)".into(),
                );
            }
            for s in &self.sentinels {
                if let Err(e) = redis::Client::open(s.as_str()) {
                    out.push(format!(
                        "redis.sentinels: {:?}: {e}",
                        crate::config::redact(s)
                    ));
                }
            }
        } else if self.master_name.is_some() {
            out.push("redis.master_name is only used with redis.sentinels".into());
        }
        if self.ack_replicas > 0
            && (self.ack_replicas_timeout_ms == 0
                || self.ack_replicas_timeout_ms >= self.timeout_ms)
        {
            out.push(format!(
                "redis.ack_replicas_timeout_ms = {} must be above 0 and below redis.timeout_ms = {} (WAIT runs inside the write's round trip)",
                self.ack_replicas_timeout_ms, self.timeout_ms
            ));
        }
        if !self.managed && self.appendfsync != AppendFsync::default() {
            out.push(
                "redis.appendfsync only sets the managed Redis; set appendfsync in your Redis's own config"
                    .into(),
            );
        }
        if self.managed {
            if self.dir.is_none() {
                out.push("redis.managed = true needs redis.dir (where the AOF lives)".into());
            }
        } else if let Err(e) = redis::Client::open(self.url.as_str()) {
            out.push(format!(
                "redis.url = {:?}: {e}",
                crate::config::redact(&self.url)
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PORT, parse};

    #[test]
    fn ha_settings_are_checked_together() {
        let cases = [
            (
                "[redis]\nsentinels = [\"redis://127.0.0.1:26379\"]\n",
                "needs redis.master_name",
            ),
            (
                "[redis]\nmaster_name = \"pg\"\n",
                "only used with redis.sentinels",
            ),
            (
                "[redis]\nsentinels = [\"redis://127.0.0.1:26379\"]\nmaster_name = \"pg\"\nmanaged = true\ndir = \"d\"\n",
                "cannot be used together",
            ),
            (
                "[redis]\nack_replicas = 1\nack_replicas_timeout_ms = 3000\n",
                "below redis.timeout_ms",
            ),
            (
                "[node]\nport_lease_ms = 500\n",
                "node.port_lease_ms must be 1000",
            ),
            ("[node]\nid = \"a/b\"\n", "node.id must be"),
            (
                "[redis]\nappendfsync = \"always\"\n",
                "only sets the managed Redis",
            ),
        ];
        for (extra, expected) in cases {
            let err = parse(&format!("{extra}{PORT}")).unwrap_err().to_string();
            assert!(err.contains(expected), "{extra}: {err}");
        }
        let ok = "[redis]\nsentinels = [\"redis://127.0.0.1:26379\"]\nmaster_name = \"pg\"\nack_replicas = 1\n[node]\nid = \"node-a\"\n";
        let config = parse(&format!("{ok}{PORT}")).unwrap();
        assert_eq!(
            config.redis.commit_retry(),
            std::time::Duration::from_secs(5)
        );
        assert_eq!(config.node.port_lease_ms, 5000);
    }
}
