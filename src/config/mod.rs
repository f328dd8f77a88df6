//! The TOML configuration: parsed once, validated once, and diffed on reload.
//!
//! Everything here is plain data. Validation turns a parsed file into a [`Config`]
//! whose invariants the rest of the crate relies on (unique port names, a framing
//! that can carry `max_frame_bytes`, a field layout for fixed-width ports, …), with
//! messages that name the key and the problem.
//!
//! One file per section, each with its type, its defaults and its validation:
//! `redis.rs`, `node.rs`, `admin.rs` (`[admin]`, `[console]`, users and API keys), `ads.rs`,
//! `store.rs`, `script.rs`, `app.rs`, `port.rs`, `receipts.rs`; `diff.rs` is the reload diff.
//!
//! Defaults are written once. A section whose keys are all optional derives them
//! from its one `impl Default` (`#[serde(default)]` on the struct). A section with
//! a required key (`[[port]]`, `[fcm]`, `[[api_key]]`) cannot have a `Default`, so
//! each of its optional keys names its `default_*` fn.

mod admin;
mod ads;
mod app;
mod diff;
mod fallback;
mod node;
mod port;
mod receipts;
mod redis;
mod script;
mod store;

pub use admin::{AdminConfig, ApiKey, ConsoleConfig, MAX_USER_NAME, Role, Scope, User};
pub use ads::{AdsConfig, MAX_AD_LINE};
pub use app::{AppConfig, Bucket, Provider};
pub use diff::PortChanges;
pub use fallback::FallbackConfig;
pub use node::NodeConfig;
pub use port::{FramingKind, Mode, Payload, PortConfig};
pub use receipts::{MAX_RECEIPT_TIMEOUT_SECS, ReceiptsConfig};
pub use redis::{AppendFsync, RedisConfig};
pub use script::ScriptConfig;
pub use store::StoreConfig;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config {}: {cause}", .path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}:{line}:{column}: {message}", .path.display())]
    Parse {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    #[error("{}: {}", .path.display(), .problems.join("; "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// The whole file, as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Time zone for reserved times (`sndn_rsev_hour`) and script time helpers.
    pub zone: String,
    pub redis: RedisConfig,
    pub admin: AdminConfig,
    pub node: NodeConfig,
    pub store: StoreConfig,
    pub script: ScriptConfig,
    /// Delivery receipts: how long a sent push waits for one; none = nothing waits.
    pub receipts: Option<ReceiptsConfig>,
    /// The app `default` (FCM); with no app at all records stay `queued`.
    pub fcm: Option<AppConfig>,
    /// More apps: each its own provider project, credentials, rate and queues.
    #[serde(rename = "app")]
    pub apps: Vec<AppConfig>,
    #[serde(rename = "api_key")]
    pub api_keys: Vec<ApiKey>,
    pub console: ConsoleConfig,
    /// Console users (`pushgate hash-password` makes the hash).
    #[serde(rename = "user")]
    pub users: Vec<User>,
    #[serde(rename = "port")]
    pub ports: Vec<PortConfig>,
    /// What the ad gate adds to ads and when night consent is needed; none = no ads.
    pub ads: Option<AdsConfig>,
    /// The clock the ad gate and the senders read: the system clock, unless a test
    /// started pushgate with a shifted one (never from the file).
    #[serde(skip)]
    pub clock: crate::clock::Clock,
    /// The rungs a push's fallback ladder may name (Alimtalk, SMS through the firm's
    /// messaging gateway).
    #[serde(rename = "fallback")]
    pub fallbacks: Vec<FallbackConfig>,
    /// Directory the file was read from; relative paths (scripts, redis dir) resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            zone: "Asia/Seoul".into(),
            redis: RedisConfig::default(),
            admin: AdminConfig::default(),
            node: NodeConfig::default(),
            store: StoreConfig::default(),
            script: ScriptConfig::default(),
            receipts: None,
            fcm: None,
            apps: Vec::new(),
            api_keys: Vec::new(),
            console: ConsoleConfig::default(),
            users: Vec::new(),
            ports: Vec::new(),
            ads: None,
            clock: crate::clock::Clock::system(),
            fallbacks: Vec::new(),
            base_dir: PathBuf::new(),
        }
    }
}

impl ConfigError {
    /// One line per problem, for `pushgate check`.
    pub fn lines(&self) -> Vec<String> {
        match self {
            ConfigError::Invalid { path, problems } => problems
                .iter()
                .map(|p| format!("{}: {p}", path.display()))
                .collect(),
            other => vec![other.to_string()],
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

impl Config {
    /// Read, parse and validate `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|cause| ConfigError::Read {
            path: path.to_owned(),
            cause,
        })?;
        let base_dir = path
            .parent()
            .map(Path::to_owned)
            .unwrap_or_else(|| PathBuf::from("."));
        Config::parse(&text, path, base_dir)
    }

    /// Parse and validate TOML text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path, base_dir: PathBuf) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text).map_err(|e| {
            let offset = e.span().map_or(0, |span| span.start);
            let (line, column) = line_column(text, offset);
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                column,
                message: e.message().to_owned(),
            }
        })?;
        config.base_dir = if base_dir.as_os_str().is_empty() {
            PathBuf::from(".")
        } else {
            base_dir
        };
        let problems = config.problems();
        if problems.is_empty() {
            Ok(config)
        } else {
            Err(ConfigError::Invalid {
                path: path.to_owned(),
                problems,
            })
        }
    }

    pub fn zone(&self) -> chrono_tz::Tz {
        // Validated at load.
        self.zone.parse().unwrap_or(chrono_tz::Asia::Seoul)
    }

    pub fn resolve(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.base_dir.join(path)
        }
    }

    /// Every app: `[fcm]` (as `default`) first, then the `[[app]]` entries.
    pub fn apps(&self) -> impl Iterator<Item = &AppConfig> {
        self.fcm.iter().chain(&self.apps)
    }

    pub fn app(&self, name: &str) -> Option<&AppConfig> {
        self.apps().find(|a| a.name == name)
    }

    /// Problems of a port's or API key's `app`: it must name a configured app, when
    /// there is any (with none, nothing is sent and any name waits).
    fn app_problems(&self, at: &str, app: Option<&str>, out: &mut Vec<String>) {
        let has_apps = self.apps().next().is_some();
        let name = app.unwrap_or(crate::push::DEFAULT_APP);
        if has_apps && self.app(name).is_none() {
            let known: Vec<&str> = self.apps().map(|a| a.name.as_str()).collect();
            out.push(match app {
                Some(_) => format!(
                    "{at}: app = {name:?} is not configured (apps: {})",
                    known.join(", ")
                ),
                None => format!(
                    "{at}: no `app` is set and there is no app \"default\" ([fcm]); name one of: {}",
                    known.join(", ")
                ),
            });
        }
    }

    /// The queue a record from `worker` (a port, or `api-{key}`) waits in unless its
    /// script names another app or lane.
    pub fn queue_of(&self, worker: &str) -> crate::push::Queue {
        if let Some(port) = self.port(worker) {
            return port.queue();
        }
        self.api_key_of(worker)
            .map(ApiKey::queue)
            .unwrap_or_default()
    }

    /// The API key whose source (`api-<name>`) `worker` is.
    fn api_key_of(&self, worker: &str) -> Option<&ApiKey> {
        worker
            .strip_prefix("api-")
            .and_then(|key| self.api_keys.iter().find(|k| k.name == key))
    }

    /// Every source a record may come from here: the ports, then the API keys'
    /// `api-<name>`.
    pub fn sources(&self) -> Vec<String> {
        self.ports
            .iter()
            .map(|p| p.name.clone())
            .chain(self.api_keys.iter().map(ApiKey::source))
            .collect()
    }

    /// Whether a record from `worker` is an ad unless its script says (its port's or API
    /// key's `kind`).
    pub fn kind_of(&self, worker: &str) -> Option<crate::push::Kind> {
        if let Some(port) = self.port(worker) {
            return port.kind;
        }
        self.api_key_of(worker).and_then(|k| k.kind)
    }

    pub fn port(&self, name: &str) -> Option<&PortConfig> {
        self.ports.iter().find(|p| p.name == name)
    }
    fn problems(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.zone.parse::<chrono_tz::Tz>().is_err() {
            out.push(format!(
                "zone = {:?} is not an IANA time zone (e.g. \"Asia/Seoul\")",
                self.zone
            ));
        }
        self.redis.problems(&mut out);
        self.node.problems(&mut out);
        if let Some(fcm) = &self.fcm
            && fcm.name != crate::push::DEFAULT_APP
        {
            out.push(format!(
                "[fcm] is the app \"default\"; name = {:?} belongs in an [[app]] entry",
                fcm.name
            ));
        }
        let mut app_names = BTreeSet::new();
        for app in self.apps() {
            if !app_names.insert(app.name.as_str()) {
                out.push(format!(
                    "app {:?}: name is used twice ([fcm] is \"default\")",
                    app.name
                ));
            }
            app.problems(&mut out);
        }
        for key in &self.api_keys {
            if key.scopes.contains(&Scope::Ingest) {
                self.app_problems(
                    &format!("api_key {:?}", key.name),
                    key.app.as_deref(),
                    &mut out,
                );
            }
        }
        if let Some(ads) = &self.ads {
            ads.problems(&mut out);
        } else {
            let ad = Some(crate::push::Kind::Ad);
            let named = self
                .ports
                .iter()
                .filter(|p| p.kind == ad)
                .map(|p| format!("port {:?}", p.name))
                .chain(
                    self.api_keys
                        .iter()
                        .filter(|k| k.kind == ad)
                        .map(|k| format!("api_key {:?}", k.name)),
                );
            for at in named {
                out.push(format!(
                    "{at}: kind = \"ad\" needs an [ads] section (sender, opt_out)"
                ));
            }
        }
        let mut rung_names = BTreeSet::new();
        for rung in &self.fallbacks {
            if !rung_names.insert(rung.name.as_str()) {
                out.push(format!("fallback {:?}: name is used twice", rung.name));
            }
            rung.problems(&mut out);
        }
        self.store.problems(&mut out);
        self.script.problems(&mut out);
        if let Some(receipts) = &self.receipts {
            receipts.problems(&mut out);
        }
        admin::api_key_problems(&self.api_keys, &mut out);
        admin::user_problems(&self.users, &mut out);
        self.admin.problems(&mut out);
        self.console.problems(&mut out);
        let mut names = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = format!("port[{i}] {:?}", port.name);
            if !names.insert(port.name.as_str()) {
                out.push(format!("{at}: name is used twice"));
            }
            port.problems(&at, &mut out);
            self.app_problems(&at, port.app.as_deref(), &mut out);
        }
        out
    }
}

/// A Redis URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***@{}", &url[..scheme], &url[at + 1..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{Charset, Framing};
    use std::time::Duration;

    /// Parse test TOML as if read from `/etc/pushgate/test.toml`; every section's
    /// tests use it.
    pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), PathBuf::from("/etc/pushgate"))
    }

    /// The smallest valid port, for tests to add settings to.
    pub(super) const PORT: &str = r#"
[[port]]
name = "fep-transfer"
addr = "127.0.0.1:9001"
script = "scripts/transfer.rhai"
"#;

    #[test]
    fn sections_left_out_or_empty_take_the_documented_defaults() {
        let config = parse("").expect("an empty file is valid");
        assert_eq!(config.zone, "Asia/Seoul");
        let r = &config.redis;
        assert_eq!(
            (r.url.as_str(), r.prefix.as_str(), r.server_bin.to_str()),
            ("redis://127.0.0.1:6379", "pushgate:", Some("redis-server"))
        );
        assert_eq!((r.timeout_ms, r.ack_replicas_timeout_ms), (3000, 1000));
        assert_eq!(
            (r.managed, r.ack_replicas, r.commit_retry_ms),
            (false, 0, None)
        );
        assert_eq!(r.appendfsync, AppendFsync::Everysec);
        let a = &config.admin;
        assert_eq!(a.listen, "127.0.0.1:8080".parse().expect("addr"));
        assert_eq!((a.header_timeout_ms, a.body_timeout_ms), (10_000, 30_000));
        assert_eq!((a.max_connections, a.max_connections_per_addr), (512, 256));
        assert_eq!(
            (config.node.id.as_deref(), config.node.port_lease_ms),
            (None, 5000)
        );
        let s = &config.store;
        assert_eq!(
            (s.max_batch, s.stats_ttl_hours, s.retention_days),
            (512, 48, 30)
        );
        assert_eq!((s.bitmap_min_records, s.bitmap_max_values), (1000, 64));
        assert_eq!(
            (config.script.max_operations, config.script.deadline_ms),
            (100_000, 50)
        );
        let c = &config.console;
        assert_eq!((c.session_idle_minutes, c.session_max_hours), (30, 12));
        assert_eq!(c.open_paths, ["/healthz", "/readyz", "/metrics"]);
        assert_eq!((c.script_versions, c.max_failed_logins), (20, 5));
        assert_eq!(
            (c.free_failed_logins_per_addr, c.login_concurrency),
            (10, 2)
        );
        assert_eq!((c.login_queue_ms, c.streams_per_session), (2_000, 4));
        assert!(!c.secure_cookie);
        assert!(config.fcm.is_none() && config.ports.is_empty());
        let empty = parse("[redis]\n[admin]\n[node]\n[store]\n[script]\n[console]\n")
            .expect("empty sections are valid");
        assert_eq!(
            empty, config,
            "an empty section is the same as a missing one"
        );
        let one_key = parse("[redis]\ntimeout_ms = 500\n").expect("valid");
        assert_eq!(one_key.redis.timeout_ms, 500);
        assert_eq!(
            one_key.redis.prefix, "pushgate:",
            "the other keys keep their defaults"
        );
    }

    #[test]
    fn minimal_port_gets_documented_defaults() {
        let config = parse(PORT).expect("valid");
        let port = &config.ports[0];
        assert_eq!(port.mode, Mode::Listen);
        assert_eq!(port.framing(), Framing::Ndjson);
        assert_eq!(port.encoding, Charset::Utf8);
        assert_eq!(port.max_frame_bytes(), 65536);
        assert_eq!(port.addresses(), ["127.0.0.1:9001"]);
        assert!(port.allow.is_empty(), "no allow list: any peer");
        assert_eq!(port.max_connections_per_addr, 32);
        assert_eq!(port.first_frame_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(config.zone(), chrono_tz::Asia::Seoul);
        assert_eq!(config.redis.prefix, "pushgate:");
        assert_eq!(
            config.resolve(&port.script),
            PathBuf::from("/etc/pushgate/scripts/transfer.rhai")
        );
    }

    #[test]
    fn unknown_key_is_named_with_its_line_and_column() {
        let err = parse(&format!("{PORT}framming = \"ndjson\"\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml:6:1: "), "{text}");
        assert!(text.contains("framming"), "{text}");
    }

    #[test]
    fn duplicate_port_names_and_bad_addresses_are_rejected() {
        let text = format!("{PORT}{PORT}");
        assert!(parse(&text).unwrap_err().to_string().contains("used twice"));
        let text = PORT.replace("127.0.0.1:9001", "nowhere");
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("not an IP:port")
        );
        let text = format!(
            "{}mode = \"connect\"\n",
            PORT.replace("127.0.0.1:9001", "fep.internal:7000")
        );
        assert!(parse(&text).is_ok());
    }

    #[test]
    fn bad_zone_and_managed_redis_without_dir_are_rejected() {
        let err = parse(&format!(
            "zone = \"Mars/Base\"\n[redis]\nmanaged = true\n{PORT}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("Mars/Base"), "{err}");
        assert!(err.contains("needs redis.dir"), "{err}");
    }

    #[test]
    fn a_port_of_ads_without_an_ads_section_is_an_error_naming_it() {
        let ad_port = format!("{PORT}kind = \"ad\"\n");
        let err = parse(&ad_port).unwrap_err().to_string();
        assert!(
            err.contains("port \"fep-transfer\": kind = \"ad\" needs an [ads] section"),
            "{err}"
        );
        let with_ads = format!("[ads]\nsender = \"은행\"\nopt_out = \"080\"\n{ad_port}");
        let config = parse(&with_ads).expect("valid with [ads]");
        assert_eq!(config.kind_of("fep-transfer"), Some(crate::push::Kind::Ad));
        assert_eq!(config.kind_of("api-nobody"), None);
    }
}
