//! Who is asking: API keys (SHA-256 in the config), console users (argon2id in the
//! config), sessions (random tokens in Redis with an idle and an absolute timeout),
//! CSRF tokens, and the throttle on failed sign-ins.

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use hyper::HeaderMap;
use hyper::header::{AUTHORIZATION, COOKIE};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{ApiKey, Config, Role, Scope};
use crate::store::Store;

pub const COOKIE_NAME: &str = "pg_session";
/// Failed sign-ins are counted over this window.
pub const FAILED_LOGIN_WINDOW_SECS: u64 = 15 * 60;

/// Lower-case hex SHA-256: how API keys are stored in the config.
pub fn hash_api_key(key: &str) -> String {
    hex(&Sha256::digest(key.as_bytes()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// 256 random bits as hex.
fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    hex(&bytes)
}

/// A fresh random API key and its hash.
pub fn new_api_key() -> (String, String) {
    let key = format!("pgk_{}", random_token());
    let hash = hash_api_key(&key);
    (key, hash)
}

/// An argon2id PHC string for the config's `[[user]] password`.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Call once at start-up, before threads. A password check allocates 19 MiB (argon2id's
/// memory). glibc's malloc raises its mmap threshold once such a block is freed, so later
/// ones come from heap arenas that are kept: a flood of sign-ins left the process at
/// gigabytes. A fixed threshold keeps each block of 1 MiB or more in a mapping of its
/// own, given back to the system when freed.
pub fn return_large_allocations() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; called before other threads run.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 20);
    }
}

/// Check a password against a PHC string (slow by design: run it off the runtime).
pub fn verify_password(password: &str, phc: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|hash| {
        Argon2::default()
            .verify_password(password.as_bytes(), &hash)
            .is_ok()
    })
}

/// Equal-time comparison, so a CSRF token cannot be guessed byte by byte.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A signed-in console user.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    #[serde(skip)]
    pub token: String,
    pub user: String,
    pub role: Role,
    /// Sent back with every state-changing form and fetch.
    pub csrf: String,
    pub created_ms: i64,
}

impl Session {
    pub fn may(&self, role: Role) -> bool {
        self.role >= role
    }

    /// What this session may see of a record: viewers see personal data masked.
    pub fn sight(&self) -> super::view::Sight {
        if self.may(Role::Operator) {
            super::view::Sight::Full
        } else {
            super::view::Sight::Masked
        }
    }
}

pub fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE_NAME)
        .map(|(_, value)| value.to_owned())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

fn idle_ms(config: &Config) -> u64 {
    config.console.session_idle_minutes * 60_000
}

/// The session named by the request's cookie, if it is alive (and push its idle timeout out).
pub async fn session(
    store: &Store,
    config: &Config,
    headers: &HeaderMap,
    now_ms: i64,
) -> Option<Session> {
    let token = cookie_token(headers)?;
    let text = store.touch_session(&token, idle_ms(config)).await.ok()??;
    let mut session: Session = serde_json::from_str(&text).ok()?;
    let max_ms = (config.console.session_max_hours * 3_600_000) as i64;
    if now_ms - session.created_ms > max_ms {
        let _ = store.delete_session(&token).await;
        return None;
    }
    // A user removed from the config (or given another role) loses the old session.
    let user = config.users.iter().find(|u| u.name == session.user)?;
    if user.role != session.role {
        return None;
    }
    session.token = token;
    Some(session)
}

/// Whether a session read earlier is still alive (not signed out, not expired, its
/// user still there with the same role), without pushing its idle timeout out: what a
/// long-lived stream checks so that it ends with its session.
pub async fn still_valid(store: &Store, config: &Config, session: &Session, now_ms: i64) -> bool {
    let max_ms = (config.console.session_max_hours * 3_600_000) as i64;
    now_ms - session.created_ms <= max_ms
        && config
            .users
            .iter()
            .any(|u| u.name == session.user && u.role == session.role)
        && store.session_exists(&session.token).await.unwrap_or(false)
}

/// Start a session; returns it with the `Set-Cookie` value.
pub async fn start_session(
    store: &Store,
    config: &Config,
    user: &str,
    role: Role,
    now_ms: i64,
    secure: bool,
) -> Result<(Session, String), crate::store::StoreError> {
    let session = Session {
        token: random_token(),
        user: user.to_owned(),
        role,
        csrf: random_token(),
        created_ms: now_ms,
    };
    let text = serde_json::to_string(&session).unwrap_or_default();
    store
        .put_session(&session.token, &text, idle_ms(config))
        .await?;
    let cookie = format!(
        "{COOKIE_NAME}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}",
        session.token,
        config.console.session_max_hours * 3600,
        if secure { "; Secure" } else { "" }
    );
    Ok((session, cookie))
}

pub fn clear_cookie() -> String {
    format!("{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0")
}

/// The API key presented as `Authorization: Bearer <key>`, if configured.
pub fn api_key<'a>(headers: &HeaderMap, keys: &'a [ApiKey]) -> Option<&'a ApiKey> {
    let presented = headers
        .get(AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")?
        .trim();
    let hash = hash_api_key(presented);
    keys.iter().find(|k| same(&k.sha256, &hash))
}

/// Whether a key's scopes cover `needed` (`control` and `personal` include `read`).
pub fn key_allows(key: &ApiKey, needed: Scope) -> bool {
    key.scopes.iter().any(|s| {
        *s == needed || (matches!(s, Scope::Control | Scope::Personal) && needed == Scope::Read)
    })
}

/// What a key may see of a record: only `personal` unmasks phone and customer numbers.
pub fn key_sight(key: &ApiKey) -> super::view::Sight {
    if key.scopes.contains(&Scope::Personal) {
        super::view::Sight::Full
    } else {
        super::view::Sight::Masked
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_key_hash_is_sha256_hex() {
        assert_eq!(
            hash_api_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn new_api_keys_differ_and_match_their_hash() {
        let (a, ha) = new_api_key();
        let (b, _) = new_api_key();
        assert_ne!(a, b);
        assert_eq!(hash_api_key(&a), ha);
        assert!(a.starts_with("pgk_") && a.len() == 68);
    }

    #[test]
    fn passwords_verify_only_against_their_own_hash() {
        let hash = hash_password("correct horse").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse", &hash));
        assert!(!verify_password("correct horsE", &hash));
        assert!(!verify_password("correct horse", "not a hash"));
    }

    #[test]
    fn the_session_cookie_is_found_among_others_and_must_look_like_a_token() {
        let mut headers = HeaderMap::new();
        let token = "a".repeat(64);
        headers.insert(
            COOKIE,
            format!("x=1; {COOKIE_NAME}={token}; y=2").parse().unwrap(),
        );
        assert_eq!(cookie_token(&headers), Some(token));
        headers.insert(COOKIE, format!("{COOKIE_NAME}=../../etc").parse().unwrap());
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn comparison_is_exact() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "ab"));
    }
}
