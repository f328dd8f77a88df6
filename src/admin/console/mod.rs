//! The console: server-rendered pages for people, one file per page. Plain forms work
//! without JavaScript; every POST carries the session's CSRF token. This file routes a
//! request to its page and holds only what several pages share: the [`Chrome`] around
//! every signed-in page, [`render`], [`error_page`], the request's [`Input`], a
//! record's [`cell`] and its push's [`app_and_lane`].
//!
//! - `login`: signing in and out, built to hold under a flood of strangers
//! - `dashboard`: ports, apps, queues, nodes and Redis; starting and stopping ports
//! - `events`: the dashboard's live figures, as Server-Sent Events
//! - `log`: the push log, its CSV export and flushing it
//! - `push`: one push; resend, route again, legal hold
//! - `scripts`: the ports' route scripts; check, try, save, restore
//! - `versions`: earlier versions of a script kept on disk, and a version's diff page
//! - `audit`: the audit log
//! - `consents`: customers' ad consents, and those due for re-confirmation

mod audit;
mod consents;
mod dashboard;
mod events;
mod log;
mod login;
mod push;
mod scripts;
mod versions;

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

use crate::admin::auth::{self, Session};
use crate::admin::{
    AdminState, Reply, full, html, json_error, probes, read_body, redirect, with_type,
};
use crate::clock::now_ms;
use crate::config::Role;

const STYLE: &str = include_str!("../../../static/app.css");
const SCRIPT: &str = include_str!("../../../static/app.js");

/// What every signed-in page shows around its content.
struct Chrome {
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub nav: &'static str,
    pub can_operate: bool,
    pub can_admin: bool,
}

impl Chrome {
    fn new(session: &Session, nav: &'static str) -> Chrome {
        Chrome {
            user: session.user.clone(),
            role: session.role.as_str(),
            csrf: session.csrf.clone(),
            nav,
            can_operate: session.may(Role::Operator),
            can_admin: session.may(Role::Admin),
        }
    }
}

/// The page as HTML; a template that fails to render is logged and answered 500.
fn render(page: &impl Template) -> Reply {
    match page.render() {
        Ok(text) => html(StatusCode::OK, text),
        Err(e) => {
            tracing::error!(error = %e, "rendering a page");
            html(
                StatusCode::INTERNAL_SERVER_ERROR,
                "page failed to render".into(),
            )
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    chrome: Option<Chrome>,
    status: u16,
    message: &'a str,
}

/// A page that says what went wrong, with the chrome when someone is signed in.
fn error_page(session: Option<&Session>, status: StatusCode, message: &str) -> Reply {
    let mut reply = render(&ErrorPage {
        chrome: session.map(|s| Chrome::new(s, "")),
        status: status.as_u16(),
        message,
    });
    *reply.status_mut() = status;
    reply
}

/// A request's fields, decoded once: the form's for a POST, the query's otherwise
/// (never both, so nothing a POST acts on can ride in a URL).
struct Input {
    fields: HashMap<String, String>,
}

impl Input {
    fn get(&self, key: &str) -> &str {
        self.fields.get(key).map(String::as_str).unwrap_or("")
    }
}

fn pairs(text: &[u8]) -> HashMap<String, String> {
    form_urlencoded::parse(text).into_owned().collect()
}

/// The largest form a signed-in user may post (a script is the largest).
const FORM_LIMIT: usize = 1024 * 1024;

/// Answer one request that is not for the JSON API: static files, the probes (when
/// open or signed in), sign-in, then the pages of a signed-in session.
pub(super) async fn handle(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let config = state.config();
    match (&method, path.as_str()) {
        (&Method::GET, "/static/app.css") => {
            return with_type(StatusCode::OK, "text/css; charset=utf-8", full(STYLE));
        }
        (&Method::GET, "/static/app.js") => {
            return with_type(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                full(SCRIPT),
            );
        }
        _ => {}
    }
    let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    if probe && config.console.open_paths.contains(&path) {
        return probes::answer(state, &path).await;
    }
    let session = auth::session(&state.store, &config, req.headers(), now_ms()).await;
    if path == "/login" {
        // The only body read before a session is known, and a small one.
        let form = if method == Method::POST {
            match read_body(state, req.into_body(), login::SIGN_IN_FORM_LIMIT).await {
                Ok(body) => Some(body),
                Err(reply) => return reply,
            }
        } else {
            None
        };
        return login::answer(state, &method, form.as_deref(), session.as_ref(), peer).await;
    }
    if probe && session.is_some() {
        return probes::answer(state, &path).await;
    }
    let Some(session) = session else {
        let wants_html = req
            .headers()
            .get(hyper::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("text/html"));
        return if method == Method::GET && wants_html {
            redirect("/login")
        } else {
            json_error(StatusCode::UNAUTHORIZED, "sign in first")
        };
    };
    let fields = if method == Method::POST {
        match read_body(state, req.into_body(), FORM_LIMIT).await {
            Ok(body) => pairs(&body),
            Err(reply) => return reply,
        }
    } else {
        pairs(req.uri().query().unwrap_or("").as_bytes())
    };
    let input = Input { fields };
    if method == Method::POST && !auth::same(input.get("csrf"), &session.csrf) {
        return error_page(
            Some(&session),
            StatusCode::FORBIDDEN,
            "The form was missing its CSRF token or it was wrong. Reload the page and try again.",
        );
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let s = &session;
    match (&method, segments.as_slice()) {
        (&Method::POST, ["logout"]) => login::logout(state, s).await,
        (&Method::GET, [""]) => dashboard::page(state, s).await,
        (&Method::GET, ["events"]) => events::stream(state, s),
        (&Method::POST, ["ports", name, action @ ("start" | "stop")]) => {
            dashboard::start_or_stop(state, s, name, action, peer).await
        }
        (&Method::GET, ["log"]) => log::page(state, s, &input).await,
        (&Method::GET, ["log.csv"]) => log::csv(state, s, &input).await,
        (&Method::GET | &Method::POST, ["log", "flush"]) => {
            log::flush(state, s, &method, &input, peer).await
        }
        (&Method::GET, ["push", id]) => push::page(state, s, id, None).await,
        (&Method::POST, ["push", id, "resend"]) => push::resend(state, s, id, peer).await,
        (&Method::POST, ["push", id, "reroute"]) => push::reroute(state, s, id, peer).await,
        (&Method::POST, ["push", id, "hold"]) => push::hold(state, s, id, &input, peer).await,
        (&Method::GET, ["scripts"]) => scripts::list(state, s).await,
        (&Method::GET | &Method::POST, ["scripts", port]) => {
            scripts::page(state, s, port, &method, &input, peer).await
        }
        (&Method::GET, ["scripts", port, "versions", version]) => {
            versions::page(state, s, port, version).await
        }
        (&Method::GET, ["audit"]) => audit::page(state, s, &input).await,
        (&Method::GET, ["consents"]) => consents::page(state, s, &input, peer).await,
        _ => error_page(
            Some(s),
            StatusCode::NOT_FOUND,
            &format!("There is no page at {path}."),
        ),
    }
}

/// A cell of a record already seen through the session's eyes
/// ([`crate::admin::view::record`]), as the log and the push page show it.
fn cell(record: &Value, column: &str) -> String {
    match &record[column] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// A record's push's app and lane, as the log and the push page show them; empty when
/// its route decided no push.
fn app_and_lane(record: &crate::push::Record) -> (String, String) {
    record
        .push()
        .map(|p| {
            let queue = p.queue();
            (queue.app, queue.lane.as_str().to_owned())
        })
        .unwrap_or_default()
}
