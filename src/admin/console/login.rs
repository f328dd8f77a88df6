//! Signing in and out of the console, built to hold under a flood of strangers:
//! - credentials come only from a POST body of at most [`SIGN_IN_FORM_LIMIT`] bytes; other
//!   methods on `/login` get 405;
//! - a user name over [`MAX_USER_NAME`] bytes is refused before anything is stored;
//! - each attempt passes the Redis-side throttle first (per address, growing waits;
//!   per address and user name, a lock), so a stranger elsewhere cannot lock a user out;
//! - at most `[console] login_concurrency` argon2id checks (19 MiB each) run at once;
//!   the rest wait `login_queue_ms`, then get 503 — never a new allocation;
//! - failures of unknown names are audited as counts per address, never verbatim.

use std::net::SocketAddr;

use askama::Template;
use hyper::header::{ALLOW, HeaderValue, RETRY_AFTER, SET_COOKIE};
use hyper::{Method, StatusCode};

use super::{Chrome, render};
use crate::admin::auth::{self, Session};
use crate::admin::{AdminState, Reply, actions, redirect};
use crate::clock::now_ms;
use crate::config::MAX_USER_NAME;
use crate::metrics::{labels, metrics};
use crate::store::console::{LoginGate, LoginLimits};

/// The largest sign-in form read.
pub const SIGN_IN_FORM_LIMIT: usize = 8 * 1024;
/// The longest password checked (argon2 hashes any length; this bounds the work).
const MAX_PASSWORD: usize = 1024;
/// Counts of sign-in failures live this long.
const WINDOW_MS: u64 = 15 * 60 * 1000;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    chrome: Option<Chrome>,
    user: &'a str,
    error: &'a str,
}

/// `/login`: GET shows the form, POST signs in with the form's fields.
pub(super) async fn answer(
    state: &AdminState,
    method: &Method,
    form: Option<&[u8]>,
    session: Option<&Session>,
    peer: SocketAddr,
) -> Reply {
    match (method, form) {
        (&Method::GET, _) if session.is_some() => redirect("/"),
        (&Method::GET, _) => render(&LoginPage {
            chrome: None,
            user: "",
            error: "",
        }),
        (&Method::POST, Some(form)) => sign_in(state, form, peer).await,
        _ => {
            let mut reply = render(&LoginPage {
                chrome: None,
                user: "",
                error: "Sign in with the form.",
            });
            *reply.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
            reply
                .headers_mut()
                .insert(ALLOW, HeaderValue::from_static("GET, POST"));
            reply
        }
    }
}

fn count(outcome: &str) {
    metrics()
        .logins
        .get_or_create(&labels(&[("outcome", outcome)]))
        .inc();
}

fn refuse(status: StatusCode, user: &str, error: &str) -> Reply {
    let mut reply = render(&LoginPage {
        chrome: None,
        user,
        error,
    });
    *reply.status_mut() = status;
    reply
}

fn wait_reply(user: &str, ms: u64, what: &str) -> Reply {
    let secs = ms.div_ceil(1000).max(1);
    let mut reply = refuse(
        StatusCode::TOO_MANY_REQUESTS,
        user,
        &format!("{what} Try again in {secs} s."),
    );
    if let Ok(value) = HeaderValue::from_str(&secs.to_string()) {
        reply.headers_mut().insert(RETRY_AFTER, value);
    }
    reply
}

fn unavailable(user: &str) -> Reply {
    refuse(
        StatusCode::SERVICE_UNAVAILABLE,
        user,
        "Sign-in is unavailable right now. Try again shortly.",
    )
}

async fn sign_in(state: &AdminState, form: &[u8], peer: SocketAddr) -> Reply {
    let config = state.config();
    let mut name = String::new();
    let mut password = String::new();
    for (key, value) in form_urlencoded::parse(form) {
        match key.as_ref() {
            "user" => name = value.trim().to_owned(),
            "password" => password = value.into_owned(),
            _ => {}
        }
    }
    // No configured user has such a name: refuse before a byte of it is stored.
    if name.is_empty()
        || name.len() > MAX_USER_NAME
        || name.chars().any(char::is_control)
        || password.len() > MAX_PASSWORD
    {
        count("refused");
        return refuse(StatusCode::UNAUTHORIZED, "", "Wrong user name or password.");
    }
    let addr = peer.ip().to_string();
    // Counted under a digest: no name anyone typed is stored verbatim.
    let name_key = auth::hash_api_key(&name)[..16].to_owned();
    let limits = LoginLimits {
        per_user: config.console.max_failed_logins,
        free_per_addr: config.console.free_failed_logins_per_addr,
        window_ms: WINDOW_MS,
        max_wait_ms: WINDOW_MS,
    };
    match state.store.admit_login(&addr, &name_key, &limits).await {
        Ok(LoginGate::Admitted) => {}
        Ok(LoginGate::AddressWaits(ms)) => {
            count("throttled");
            return wait_reply(&name, ms, "Too many sign-in attempts from this address.");
        }
        Ok(LoginGate::UserLocked(ms)) => {
            count("throttled");
            return wait_reply(
                &name,
                ms,
                "Too many failed sign-ins for this user from this address.",
            );
        }
        Err(e) => {
            tracing::warn!(error = %e, "sign-in throttle unavailable");
            return unavailable(&name);
        }
    }
    let user = config.users.iter().find(|u| u.name == name).cloned();
    let phc = user.as_ref().map(|u| u.password.clone());
    let Ok(slot) = state.limits.password_check(&config).await else {
        count("busy");
        let mut reply = refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            &name,
            "Sign-in is busy. Try again in a moment.",
        );
        reply
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
        return reply;
    };
    let ok = tokio::task::spawn_blocking(move || {
        let _slot = slot;
        // Verify even for unknown users, so timing does not tell which names exist. The
        // stand-in hash is made (once) here too: inside the slot and off the runtime.
        let phc = phc.unwrap_or_else(|| dummy_hash().to_owned());
        auth::verify_password(&password, &phc)
    })
    .await
    .unwrap_or(false);
    let Some(user) = user.filter(|_| ok) else {
        count("wrong");
        audit_failure(
            state,
            &name,
            config.users.iter().any(|u| u.name == name),
            &addr,
        )
        .await;
        return refuse(
            StatusCode::UNAUTHORIZED,
            &name,
            "Wrong user name or password.",
        );
    };
    if let Err(e) = state.store.login_succeeded(&addr, &name_key).await {
        tracing::warn!(error = %e, "clearing sign-in counts");
    }
    let secure = config.admin.tls() || config.console.secure_cookie;
    match auth::start_session(
        &state.store,
        &config,
        &user.name,
        user.role,
        now_ms(),
        secure,
    )
    .await
    {
        Ok((_, cookie)) => {
            count("ok");
            actions::audit(state, &user.name, "sign-in", "", peer).await;
            let mut reply = redirect("/");
            if let Ok(value) = HeaderValue::from_str(&cookie) {
                reply.headers_mut().insert(SET_COOKIE, value);
            }
            reply
        }
        Err(e) => {
            tracing::warn!(error = %e, "starting a console session");
            unavailable(&name)
        }
    }
}

/// A known user's failure is audited by name; an unknown name's only as a count per
/// address, at the 1st, 10th, 100th … failure of the window, so a flood of invented
/// names cannot push real entries out of the capped audit stream.
async fn audit_failure(state: &AdminState, name: &str, known: bool, addr: &str) {
    if known {
        let _ = state
            .store
            .audit(&[
                ("who", name),
                ("action", "sign-in failed"),
                ("target", ""),
                ("addr", addr),
            ])
            .await;
        return;
    }
    let Ok(n) = state.store.count_unknown_login(addr, WINDOW_MS).await else {
        return;
    };
    if is_power_of_ten(n) {
        let detail = format!("{n} with unknown user names from this address in 15 min");
        let _ = state
            .store
            .audit(&[
                ("who", "(unknown name)"),
                ("action", "sign-in failed"),
                ("target", &detail),
                ("addr", addr),
            ])
            .await;
    }
}

fn is_power_of_ten(mut n: u64) -> bool {
    while n >= 10 && n.is_multiple_of(10) {
        n /= 10;
    }
    n == 1
}

/// An argon2id hash of a random string, checked when the user name is unknown.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        let secret: [u8; 16] = rand::random();
        auth::hash_password(&format!("{secret:?}")).unwrap_or_default()
    })
}

pub(super) async fn logout(state: &AdminState, session: &Session) -> Reply {
    let _ = state.store.delete_session(&session.token).await;
    let mut reply = redirect("/login");
    if let Ok(value) = HeaderValue::from_str(&auth::clear_cookie()) {
        reply.headers_mut().insert(SET_COOKIE, value);
    }
    reply
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_names_are_audited_at_powers_of_ten() {
        let audited: Vec<u64> = (1..=1000).filter(|n| is_power_of_ten(*n)).collect();
        assert_eq!(audited, [1, 10, 100, 1000]);
    }
}
