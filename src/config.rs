//! The TOML configuration: parsed once, validated once, and diffed on reload.
//!
//! Everything here is plain data. Validation turns a parsed file into a [`Config`]
//! whose invariants the rest of the crate relies on (unique port names, a framing
//! that can carry `max_frame_bytes`, a field layout for fixed-width ports, …), with
//! messages that name the key and the problem.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::push::fields::RESERVED_FIELDS;

use crate::wire::{Charset, FieldSpec, Framing};

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
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Time zone for reserved times (`sndn_rsev_hour`) and script time helpers.
    #[serde(default = "default_zone")]
    pub zone: String,
    #[serde(default)]
    pub redis: RedisConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub node: NodeConfig,
    #[serde(default)]
    pub store: StoreConfig,
    #[serde(default)]
    pub script: ScriptConfig,
    /// Delivery to FCM; without it records stay `queued`.
    #[serde(default)]
    pub fcm: Option<FcmConfig>,
    #[serde(default, rename = "api_key")]
    pub api_keys: Vec<ApiKey>,
    #[serde(default)]
    pub console: ConsoleConfig,
    /// Console users (`pushgate hash-password` makes the hash).
    #[serde(default, rename = "user")]
    pub users: Vec<User>,
    #[serde(default, rename = "port")]
    pub ports: Vec<PortConfig>,
    /// Directory the file was read from; relative paths (scripts, redis dir) resolve against it.
    #[serde(skip)]
    pub base_dir: PathBuf,
}

fn default_zone() -> String {
    "Asia/Seoul".into()
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` or `redis+unix:///path/redis.sock`; ignored when `managed`.
    #[serde(default = "default_redis_url")]
    pub url: String,
    /// Every key pushgate writes starts with this, so one Redis can hold other data too.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// Start and supervise a local `redis-server` (AOF on) instead of using `url`.
    #[serde(default)]
    pub managed: bool,
    /// Data directory of the managed Redis (AOF files, unix socket).
    #[serde(default)]
    pub dir: Option<PathBuf>,
    /// Managed Redis listens on this loopback TCP port; unset = a unix socket in `dir` only.
    #[serde(default)]
    pub managed_port: Option<u16>,
    /// Path of the `redis-server` binary for `managed`.
    #[serde(default = "default_redis_server")]
    pub server_bin: PathBuf,
    /// `appendfsync` of the managed Redis: `everysec` (default) or `always` (an ack
    /// then means the record is on disk; see docs/backup.md).
    #[serde(default)]
    pub appendfsync: AppendFsync,
    /// A Redis round trip slower than this fails, and its frames get error acks.
    #[serde(default = "default_redis_timeout_ms")]
    pub timeout_ms: u64,
    /// Sentinel addresses (`redis://host:port`); when set, pushgate asks them for the
    /// master named `master_name` and follows a failover. `url` then only supplies the
    /// password and db of the master.
    #[serde(default)]
    pub sentinels: Vec<String>,
    #[serde(default)]
    pub master_name: Option<String>,
    /// Ack a frame only once `WAIT` confirms its record reached this many replicas.
    #[serde(default)]
    pub ack_replicas: u32,
    /// How long `WAIT` may take before the frames get error acks ("send again").
    #[serde(default = "default_ack_replicas_timeout_ms")]
    pub ack_replicas_timeout_ms: u64,
    /// A group commit that fails on a lost connection is retried for this long (on
    /// the new master after a failover) before its frames get error acks.
    /// Default: 5000 with Sentinel, 300 without.
    #[serde(default)]
    pub commit_retry_ms: Option<u64>,
}

fn default_redis_url() -> String {
    "redis://127.0.0.1:6379".into()
}
fn default_prefix() -> String {
    "pushgate:".into()
}
fn default_redis_server() -> PathBuf {
    "redis-server".into()
}
fn default_redis_timeout_ms() -> u64 {
    3000
}
fn default_ack_replicas_timeout_ms() -> u64 {
    1000
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: default_redis_url(),
            prefix: default_prefix(),
            managed: false,
            dir: None,
            managed_port: None,
            server_bin: default_redis_server(),
            appendfsync: AppendFsync::default(),
            timeout_ms: default_redis_timeout_ms(),
            sentinels: Vec::new(),
            master_name: None,
            ack_replicas: 0,
            ack_replicas_timeout_ms: default_ack_replicas_timeout_ms(),
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

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin listener (JSON API, later the console).
    #[serde(default = "default_admin_listen")]
    pub listen: SocketAddr,
    /// PEM certificate chain: with `tls_key`, the console is served over HTTPS itself.
    #[serde(default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert`.
    #[serde(default)]
    pub tls_key: Option<PathBuf>,
    /// A request's headers must arrive within this (ms); it also closes a keep-alive
    /// connection idle this long, so half-sent requests cannot hold connections (slowloris).
    #[serde(default = "default_header_timeout_ms")]
    pub header_timeout_ms: u64,
    /// A request body must arrive within this (ms).
    #[serde(default = "default_body_timeout_ms")]
    pub body_timeout_ms: u64,
    /// Connections open at once; one more is closed at accept.
    #[serde(default = "default_admin_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one address.
    #[serde(default = "default_admin_max_connections_per_addr")]
    pub max_connections_per_addr: usize,
}

fn default_header_timeout_ms() -> u64 {
    10_000
}
fn default_body_timeout_ms() -> u64 {
    30_000
}
fn default_admin_max_connections() -> usize {
    256
}
fn default_admin_max_connections_per_addr() -> usize {
    32
}

impl AdminConfig {
    /// Whether the console is served over TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
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

/// This process among the nodes sharing one Redis.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Unique among the nodes; default `{hostname}:{admin port}`.
    #[serde(default)]
    pub id: Option<String>,
    /// A connect-mode port runs on the node holding its lease; a node that stops
    /// renewing it (dead, paused, cut off from Redis) loses the port after this long.
    #[serde(default = "default_lease_ms")]
    pub port_lease_ms: u64,
}

fn default_lease_ms() -> u64 {
    5000
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            id: None,
            port_lease_ms: default_lease_ms(),
        }
    }
}

fn default_admin_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 8080))
}

impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: default_admin_listen(),
            tls_cert: None,
            tls_key: None,
            header_timeout_ms: default_header_timeout_ms(),
            body_timeout_ms: default_body_timeout_ms(),
            max_connections: default_admin_max_connections(),
            max_connections_per_addr: default_admin_max_connections_per_addr(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    /// Most records written in one group-commit round trip.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// Per-minute counters live this long (hours).
    #[serde(default = "default_stats_ttl_hours")]
    pub stats_ttl_hours: u64,
    /// Records older than this are removed (with their index entries); 0 = keep forever.
    #[serde(default = "default_retention_days")]
    pub retention_days: u64,
    /// A message field's value (`D_servicename`, `push_grp_id`) gets a bitmap index once
    /// this many records hold it (and at least highest id / 512); until then it sits in
    /// a sorted-set index, so a stranger's fresh values cost bytes, not id/8 each.
    #[serde(default = "default_bitmap_min_records")]
    pub bitmap_min_records: u64,
    /// Most bitmaps a message field's values may earn; beyond it a value stays in its
    /// sorted-set index (still found, only a status filter on it is bounded).
    #[serde(default = "default_bitmap_max_values")]
    pub bitmap_max_values: u64,
    /// Values with a bitmap from their first record (operators' known service codes),
    /// per message field: `{ D_servicename = ["TRF", "ORD"] }`. Not counted in the cap.
    #[serde(default)]
    pub bitmap_values: std::collections::BTreeMap<String, Vec<String>>,
}

fn default_bitmap_min_records() -> u64 {
    1000
}

fn default_bitmap_max_values() -> u64 {
    64
}

impl StoreConfig {
    /// What is wrong with the bitmap admission settings.
    fn bitmap_problems(&self, out: &mut Vec<String>) {
        if self.bitmap_min_records < 2 {
            out.push(
                "store.bitmap_min_records must be 2 or more (one record's value sits in a shared hash)"
                    .into(),
            );
        }
        for (field, values) in &self.bitmap_values {
            if !crate::push::fields::MESSAGE_BITMAP_FIELDS.contains(&field.as_str()) {
                out.push(format!(
                    "store.bitmap_values.{field}: only {} take listed values",
                    crate::push::fields::MESSAGE_BITMAP_FIELDS.join(", ")
                ));
            }
            for value in values {
                if value.is_empty() || value.trim() != value {
                    out.push(format!(
                        "store.bitmap_values.{field}: {value:?} must be non-empty without surrounding spaces (values are stored trimmed)"
                    ));
                }
            }
        }
    }
}

fn default_retention_days() -> u64 {
    30
}

fn default_max_batch() -> usize {
    512
}
fn default_stats_ttl_hours() -> u64 {
    48
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            max_batch: default_max_batch(),
            stats_ttl_hours: default_stats_ttl_hours(),
            retention_days: default_retention_days(),
            bitmap_min_records: default_bitmap_min_records(),
            bitmap_max_values: default_bitmap_max_values(),
            bitmap_values: Default::default(),
        }
    }
}

/// Sandbox limits for every route script.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScriptConfig {
    #[serde(default = "default_max_operations")]
    pub max_operations: u64,
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
}

fn default_max_operations() -> u64 {
    100_000
}
fn default_deadline_ms() -> u64 {
    50
}

impl Default for ScriptConfig {
    fn default() -> Self {
        Self {
            max_operations: default_max_operations(),
            deadline_ms: default_deadline_ms(),
        }
    }
}

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
    /// After this many attempts a retryable failure becomes `failed`.
    #[serde(default = "default_max_attempts")]
    pub max_attempts: u32,
    /// A record older than this (since it was received) is not retried again.
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
    8
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
    fn problems(&self, out: &mut Vec<String>) {
        if !(self.endpoint.starts_with("https://") || self.endpoint.starts_with("http://")) {
            out.push(format!(
                "fcm.endpoint = {:?} must start with https:// (or http:// for the emulator)",
                self.endpoint
            ));
        }
        if self.max_in_flight == 0 || self.max_attempts == 0 {
            out.push("fcm.max_in_flight and fcm.max_attempts must be at least 1".into());
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

/// `[console]`: sessions and what is reachable without signing in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session unused this long ends.
    #[serde(default = "default_session_idle_minutes")]
    pub session_idle_minutes: u64,
    /// A session ends this long after sign-in, used or not.
    #[serde(default = "default_session_max_hours")]
    pub session_max_hours: u64,
    /// Paths served without a session or API key.
    #[serde(default = "default_open_paths")]
    pub open_paths: Vec<String>,
    /// Earlier versions kept per script.
    #[serde(default = "default_script_versions")]
    pub script_versions: usize,
    /// Failed sign-ins for one user *from one address* within 15 minutes before that
    /// address may not sign in as that user (others, and that user elsewhere, still may).
    #[serde(default = "default_max_failed_logins")]
    pub max_failed_logins: u64,
    /// Failed sign-ins from one address within 15 minutes before each further attempt
    /// from it waits: 1 s after the next failure, doubling up to 15 minutes.
    #[serde(default = "default_free_failed_logins_per_addr")]
    pub free_failed_logins_per_addr: u64,
    /// Password checks (argon2id, 19 MiB each) running at once; more wait.
    #[serde(default = "default_login_concurrency")]
    pub login_concurrency: usize,
    /// How long a sign-in waits for a password check slot before it gets 503.
    #[serde(default = "default_login_queue_ms")]
    pub login_queue_ms: u64,
    /// Mark the session cookie `Secure` (always so when `[admin] tls_cert` is set): for a
    /// console behind an HTTPS proxy.
    #[serde(default)]
    pub secure_cookie: bool,
    /// Live event streams one session may hold open at once.
    #[serde(default = "default_streams_per_session")]
    pub streams_per_session: usize,
}

fn default_session_idle_minutes() -> u64 {
    30
}
fn default_session_max_hours() -> u64 {
    12
}
fn default_open_paths() -> Vec<String> {
    vec!["/healthz".into(), "/readyz".into(), "/metrics".into()]
}
fn default_script_versions() -> usize {
    20
}
fn default_max_failed_logins() -> u64 {
    5
}
fn default_free_failed_logins_per_addr() -> u64 {
    10
}
fn default_login_concurrency() -> usize {
    2
}
fn default_login_queue_ms() -> u64 {
    2_000
}
fn default_streams_per_session() -> usize {
    4
}
/// Longest console user name, in bytes: longer names are refused before anything is stored.
pub const MAX_USER_NAME: usize = 64;

impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_idle_minutes: default_session_idle_minutes(),
            session_max_hours: default_session_max_hours(),
            open_paths: default_open_paths(),
            script_versions: default_script_versions(),
            max_failed_logins: default_max_failed_logins(),
            free_failed_logins_per_addr: default_free_failed_logins_per_addr(),
            login_concurrency: default_login_concurrency(),
            login_queue_ms: default_login_queue_ms(),
            secure_cookie: false,
            streams_per_session: default_streams_per_session(),
        }
    }
}

/// A console user.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub name: String,
    /// An argon2id PHC string (`$argon2id$v=19$...`).
    pub password: String,
    pub role: Role,
}

impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("name", &self.name)
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// What a console user may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads everything; phone and customer numbers masked.
    Viewer,
    /// Starts and stops ports, resends pushes.
    Operator,
    /// Edits scripts, flushes the log.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// An API key for the admin JSON API. Only its SHA-256 is stored (`pushgate api-key` makes one).
#[derive(Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub name: String,
    /// Lower-case hex SHA-256 of the key.
    pub sha256: String,
    /// `read` (ports, pushes masked), `control` (start/stop/restart, legal hold),
    /// `ingest` (POST pushes), `personal` (pushes unmasked).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
    /// (ingest) The route script for pushes posted with this key.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// (ingest) Fields that must be present and non-empty, besides `uniqueKey`.
    #[serde(default)]
    pub required: Vec<String>,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("scopes", &self.scopes)
            .finish_non_exhaustive()
    }
}

fn default_scopes() -> Vec<Scope> {
    vec![Scope::Read]
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Ports, cluster, pushes with phone and customer numbers masked.
    Read,
    /// Start/stop/restart, legal hold (and `read`).
    Control,
    /// `POST /api/v1/pushes`.
    Ingest,
    /// Pushes unmasked, and search by masked fields (and `read`).
    Personal,
}

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
    8
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

    /// Everything about the port except its script's contents: a difference here restarts it.
    fn same_wiring(&self, other: &PortConfig) -> bool {
        self == other
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
        if self.node.port_lease_ms < 1000 {
            out.push("node.port_lease_ms must be 1000 or more".into());
        }
        if let Some(id) = &self.node.id
            && (id.is_empty() || id.len() > 64 || id.contains('/'))
        {
            out.push("node.id must be 1-64 characters without '/'".into());
        }
        if let Some(fcm) = &self.fcm {
            fcm.problems(&mut out);
        }
        if self.store.max_batch == 0 {
            out.push("store.max_batch must be at least 1".into());
        }
        self.store.bitmap_problems(&mut out);
        if self.script.deadline_ms == 0 || self.script.max_operations == 0 {
            out.push("script.deadline_ms and script.max_operations must be above 0".into());
        }
        let mut key_names = BTreeSet::new();
        for (i, key) in self.api_keys.iter().enumerate() {
            let at = format!("api_key[{i}] {:?}", key.name);
            if !key_names.insert(key.name.as_str()) {
                out.push(format!("{at}: name is used twice"));
            }
            let hex_ok = key.sha256.len() == 64
                && key
                    .sha256
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
            if key.scopes.contains(&Scope::Ingest) != key.script.is_some() {
                out.push(format!(
                    "{at}: a key with the ingest scope needs a script, and only such a key may name one"
                ));
            }
            if !key
                .name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                out.push(format!("{at}: name must be letters, digits, '-' and '_'"));
            }
            if !hex_ok {
                out.push(format!(
                    "{at}: sha256 must be 64 lower-case hex digits (make one with `pushgate api-key`)"
                ));
            }
        }
        let mut user_names = BTreeSet::new();
        for (i, user) in self.users.iter().enumerate() {
            let at = format!("user[{i}] {:?}", user.name);
            if !user_names.insert(user.name.as_str()) || user.name.is_empty() {
                out.push(format!("{at}: name is empty or used twice"));
            }
            if user.name.len() > MAX_USER_NAME || user.name.chars().any(char::is_control) {
                out.push(format!(
                    "{at}: name must be at most {MAX_USER_NAME} bytes without control characters"
                ));
            }
            if !user.password.starts_with("$argon2id$")
                || argon2::PasswordHash::new(&user.password).is_err()
            {
                out.push(format!(
                    "{at}: password must be an argon2id hash (make one with `pushgate hash-password`)"
                ));
            }
        }
        if self.admin.tls_cert.is_some() != self.admin.tls_key.is_some() {
            out.push("admin.tls_cert and admin.tls_key go together".into());
        }
        if self.admin.header_timeout_ms == 0
            || self.admin.body_timeout_ms == 0
            || self.admin.max_connections == 0
            || self.admin.max_connections_per_addr == 0
        {
            out.push(
                "admin.header_timeout_ms, body_timeout_ms, max_connections and max_connections_per_addr must be above 0"
                    .into(),
            );
        }
        if self.console.login_concurrency == 0 || self.console.streams_per_session == 0 {
            out.push("console.login_concurrency and streams_per_session must be above 0".into());
        }
        if self.console.session_idle_minutes == 0 || self.console.session_max_hours == 0 {
            out.push(
                "console.session_idle_minutes and console.session_max_hours must be above 0".into(),
            );
        }
        let mut names = BTreeSet::new();
        for (i, port) in self.ports.iter().enumerate() {
            let at = format!("port[{i}] {:?}", port.name);
            if !names.insert(port.name.as_str()) {
                out.push(format!("{at}: name is used twice"));
            }
            port.problems(&at, &mut out);
        }
        out
    }
}

impl RedisConfig {
    fn problems(&self, out: &mut Vec<String>) {
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

impl PortConfig {
    fn problems(&self, at: &str, out: &mut Vec<String>) {
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

/// What a reload changes, port by port.
#[derive(Debug, Default, PartialEq)]
pub struct PortChanges {
    /// In the new config only: start (if autostart).
    pub added: Vec<PortConfig>,
    /// In the old config only: drain and stop.
    pub removed: Vec<String>,
    /// Wiring differs: restart with the new config.
    pub changed: Vec<PortConfig>,
    /// Same wiring: keep running; only its script may be swapped in place.
    pub unchanged: Vec<PortConfig>,
}

impl PortChanges {
    pub fn between(old: &Config, new: &Config) -> PortChanges {
        let mut changes = PortChanges::default();
        for port in &new.ports {
            match old.port(&port.name) {
                None => changes.added.push(port.clone()),
                Some(before) if before.same_wiring(port) => changes.unchanged.push(port.clone()),
                Some(_) => changes.changed.push(port.clone()),
            }
        }
        for port in &old.ports {
            if new.port(&port.name).is_none() {
                changes.removed.push(port.name.clone());
            }
        }
        changes
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

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"), PathBuf::from("/etc/pushgate"))
    }

    const PORT: &str = r#"
[[port]]
name = "fep-transfer"
addr = "127.0.0.1:9001"
script = "scripts/transfer.rhai"
"#;

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
        assert_eq!(port.max_connections_per_addr, 8);
        assert_eq!(port.first_frame_timeout(), Some(Duration::from_secs(10)));
        assert_eq!(config.zone(), chrono_tz::Asia::Seoul);
        assert_eq!(config.redis.prefix, "pushgate:");
        assert_eq!(
            config.resolve(&port.script),
            PathBuf::from("/etc/pushgate/scripts/transfer.rhai")
        );
    }

    #[test]
    fn ascii_len_default_frame_limit_fits_its_header() {
        let config = parse(&format!("{PORT}framing = \"ascii-len\"\n")).expect("valid");
        assert_eq!(config.ports[0].max_frame_bytes(), 9999);
    }

    #[test]
    fn unknown_key_is_named_with_its_line_and_column() {
        let err = parse(&format!("{PORT}framming = \"ndjson\"\n")).unwrap_err();
        let text = err.to_string();
        assert!(text.starts_with("test.toml:6:1: "), "{text}");
        assert!(text.contains("framming"), "{text}");
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
    fn bitmap_admission_settings_are_checked() {
        let config = parse(PORT).expect("valid");
        assert_eq!(
            (
                config.store.bitmap_min_records,
                config.store.bitmap_max_values
            ),
            (1000, 64)
        );
        let listed = parse(&format!(
            "[store]\nbitmap_values = {{ D_servicename = [\"TRF\", \"ORD\"] }}\n{PORT}"
        ))
        .expect("valid");
        assert_eq!(listed.store.bitmap_values["D_servicename"], ["TRF", "ORD"]);
        let err = parse(&format!(
            "[store]\nbitmap_min_records = 1\nbitmap_values = {{ status = [\"sent\"], push_grp_id = [\" G1\"] }}\n{PORT}"
        ))
        .unwrap_err()
        .to_string();
        assert!(err.contains("bitmap_min_records must be 2"), "{err}");
        assert!(err.contains("bitmap_values.status"), "{err}");
        assert!(err.contains("\" G1\" must be non-empty"), "{err}");
    }

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

    #[test]
    fn api_key_hash_must_be_hex_and_is_never_printed() {
        let text = format!("[[api_key]]\nname = \"ops\"\nsha256 = \"nothex\"\n{PORT}");
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("64 lower-case hex")
        );
        let hash = "a".repeat(64);
        let text = format!("[[api_key]]\nname = \"ops\"\nsha256 = \"{hash}\"\n{PORT}");
        let config = parse(&text).expect("valid");
        assert!(!format!("{config:?}").contains(&hash));
    }

    #[test]
    fn reload_diff_sorts_ports_into_added_removed_changed_unchanged() {
        let old = parse(&format!(
            "{PORT}{}{}",
            PORT.replace("fep-transfer", "keep").replace("9001", "9002"),
            PORT.replace("fep-transfer", "gone").replace("9001", "9003"),
        ))
        .expect("old");
        let new = parse(&format!(
            "{}{}{}",
            PORT.replace("9001", "9011"),
            PORT.replace("fep-transfer", "keep").replace("9001", "9002"),
            PORT.replace("fep-transfer", "new").replace("9001", "9004"),
        ))
        .expect("new");
        let changes = PortChanges::between(&old, &new);
        let names = |ports: &[PortConfig]| ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>();
        assert_eq!(names(&changes.added), ["new"]);
        assert_eq!(changes.removed, ["gone"]);
        assert_eq!(names(&changes.changed), ["fep-transfer"]);
        assert_eq!(names(&changes.unchanged), ["keep"]);
    }

    #[test]
    fn reload_restarts_a_port_whose_peer_limits_or_upstreams_changed() {
        let old = parse(PORT).expect("old");
        for setting in [
            "allow = [\"127.0.0.1\"]",
            "max_connections_per_addr = 3",
            "first_frame_timeout_ms = 500",
        ] {
            let new = parse(&format!("{PORT}{setting}\n")).expect("new");
            let changes = PortChanges::between(&old, &new);
            assert_eq!(changes.changed.len(), 1, "{setting}");
            assert!(changes.unchanged.is_empty(), "{setting}");
        }
        let connect = |addrs: &str| {
            parse(&format!(
                "[[port]]\nname = \"fep\"\nmode = \"connect\"\nscript = \"s.rhai\"\naddrs = {addrs}\n"
            ))
            .expect("valid")
        };
        let before = connect("[\"fep-a:7001\", \"fep-b:7001\"]");
        let reordered = connect("[\"fep-b:7001\", \"fep-a:7001\"]");
        assert_eq!(PortChanges::between(&before, &reordered).changed.len(), 1);
        assert_eq!(PortChanges::between(&before, &before).unchanged.len(), 1);
    }
}
