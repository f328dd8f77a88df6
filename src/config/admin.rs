//! `[admin]`, `[console]`, `[[user]]` and `[[api_key]]`: the admin listener, console
//! sessions, and who may sign in or call the API with what rights.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// Longest console user name, in bytes: longer names are refused before anything is stored.
pub const MAX_USER_NAME: usize = 64;

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdminConfig {
    /// The admin listener (JSON API, later the console).
    pub listen: SocketAddr,
    /// PEM certificate chain: with `tls_key`, the console is served over HTTPS itself.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1) for `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// A request's headers must arrive within this (ms); it also closes a keep-alive
    /// connection idle this long, so half-sent requests cannot hold connections (slowloris).
    pub header_timeout_ms: u64,
    /// A request body must arrive within this (ms).
    pub body_timeout_ms: u64,
    /// Connections open at once; one more is closed at accept.
    pub max_connections: usize,
    /// Connections open at once from one address.
    pub max_connections_per_addr: usize,
}
impl Default for AdminConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            tls_cert: None,
            tls_key: None,
            header_timeout_ms: 10_000,
            body_timeout_ms: 30_000,
            max_connections: 512,
            max_connections_per_addr: 256,
        }
    }
}

impl AdminConfig {
    /// Whether the console is served over TLS.
    pub fn tls(&self) -> bool {
        self.tls_cert.is_some()
    }

    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            out.push("admin.tls_cert and admin.tls_key go together".into());
        }
        if self.header_timeout_ms == 0
            || self.body_timeout_ms == 0
            || self.max_connections == 0
            || self.max_connections_per_addr == 0
        {
            out.push(
                "admin.header_timeout_ms, body_timeout_ms, max_connections and max_connections_per_addr must be above 0"
                    .into(),
            );
        }
    }
}

/// `[console]`: sessions and what is reachable without signing in.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ConsoleConfig {
    /// A session unused this long ends.
    pub session_idle_minutes: u64,
    /// A session ends this long after sign-in, used or not.
    pub session_max_hours: u64,
    /// Paths served without a session or API key.
    pub open_paths: Vec<String>,
    /// Earlier versions kept per script.
    pub script_versions: usize,
    /// Failed sign-ins for one user *from one address* within 15 minutes before that
    /// address may not sign in as that user (others, and that user elsewhere, still may).
    pub max_failed_logins: u64,
    /// Failed sign-ins from one address within 15 minutes before each further attempt
    /// from it waits: 1 s after the next failure, doubling up to 15 minutes.
    pub free_failed_logins_per_addr: u64,
    /// Password checks (argon2id, 19 MiB each) running at once; more wait.
    pub login_concurrency: usize,
    /// How long a sign-in waits for a password check slot before it gets 503.
    pub login_queue_ms: u64,
    /// Mark the session cookie `Secure` (always so when `[admin] tls_cert` is set): for a
    /// console behind an HTTPS proxy.
    pub secure_cookie: bool,
    /// Live event streams one session may hold open at once.
    pub streams_per_session: usize,
}
impl Default for ConsoleConfig {
    fn default() -> Self {
        Self {
            session_idle_minutes: 30,
            session_max_hours: 12,
            open_paths: vec!["/healthz".into(), "/readyz".into(), "/metrics".into()],
            script_versions: 20,
            max_failed_logins: 5,
            free_failed_logins_per_addr: 10,
            login_concurrency: 2,
            login_queue_ms: 2_000,
            secure_cookie: false,
            streams_per_session: 4,
        }
    }
}

impl ConsoleConfig {
    pub(super) fn problems(&self, out: &mut Vec<String>) {
        if self.login_concurrency == 0 || self.streams_per_session == 0 {
            out.push("console.login_concurrency and streams_per_session must be above 0".into());
        }
        if self.session_idle_minutes == 0 || self.session_max_hours == 0 {
            out.push(
                "console.session_idle_minutes and console.session_max_hours must be above 0".into(),
            );
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
    /// `ingest` (POST pushes), `personal` (pushes unmasked), `receipt` (POST receipts),
    /// `consent` (ad consents).
    #[serde(default = "default_scopes")]
    pub scopes: Vec<Scope>,
    /// (ingest) The route script for pushes posted with this key.
    #[serde(default)]
    pub script: Option<PathBuf>,
    /// (ingest) Fields that must be present and non-empty, besides `uniqueKey`.
    #[serde(default)]
    pub required: Vec<String>,
    /// (ingest) The app its pushes go through unless the script names one; none = `default`.
    #[serde(default)]
    pub app: Option<String>,
    /// (ingest) The lane its pushes wait in unless the script names one.
    #[serde(default)]
    pub lane: crate::push::Lane,
    /// (ingest) Whether its pushes are ads unless the script says; none = info.
    #[serde(default)]
    pub kind: Option<crate::push::Kind>,
}

impl ApiKey {
    /// The source its pushes are recorded from (a record's `worker`): `api-<name>`.
    pub fn source(&self) -> String {
        format!("api-{}", self.name)
    }

    /// The queue its pushes wait in unless their script names another app or lane.
    pub fn queue(&self) -> crate::push::Queue {
        crate::push::Queue::new(
            self.app.as_deref().unwrap_or(crate::push::DEFAULT_APP),
            self.lane,
        )
    }
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
    /// `POST /api/v1/receipts`: the app's delivery receipts, relayed by its server.
    Receipt,
    /// Customers' ad consents: read and record them (`/api/v1/consents`).
    Consent,
}

/// What is wrong with the `[[user]]` entries: names unique, short and printable,
/// passwords argon2id hashes.
pub(super) fn user_problems(users: &[User], out: &mut Vec<String>) {
    let mut user_names = BTreeSet::new();
    for (i, user) in users.iter().enumerate() {
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
}

/// What is wrong with the `[[api_key]]` entries: names unique and plain, hashes
/// hex, a script exactly when the key may ingest.
pub(super) fn api_key_problems(api_keys: &[ApiKey], out: &mut Vec<String>) {
    let mut key_names = BTreeSet::new();
    for (i, key) in api_keys.iter().enumerate() {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::{PORT, parse};

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
}
