//! The JSON API: `/api/v1/ports` and start/stop/restart. Callers are systems with an
//! API key (`Authorization: Bearer`) or the console's own JavaScript (session cookie
//! plus `X-CSRF-Token` on POST).

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::header::WWW_AUTHENTICATE;
use hyper::{Method, Request, StatusCode};

use super::auth::{self, Session};
use super::{AdminState, Reply, json, json_error, read_body};
use crate::config::{Role, Scope};
use crate::ingest::now_ms;
use crate::supervisor::SupervisorError;

pub(super) async fn handle(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let needed = match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "v1", "ports"] | ["api", "v1", "ports", _]) => Role::Viewer,
        (&Method::POST, ["api", "v1", "ports", _, "start" | "stop" | "restart"]) => Role::Operator,
        (_, ["api", "v1", "ports", ..]) => {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            );
        }
        _ => return json_error(StatusCode::NOT_FOUND, format!("no such API: {path}")),
    };
    let caller = match authorize(state, &req, needed).await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    if read_body(req.into_body(), 64 * 1024).await.is_err() {
        return json_error(StatusCode::PAYLOAD_TOO_LARGE, "body over 65536 bytes");
    }
    let sup = &state.supervisor;
    let (name, action) = match segments.as_slice() {
        ["api", "v1", "ports"] => return json(StatusCode::OK, &sup.ports().await),
        ["api", "v1", "ports", name] => {
            return match sup.port(name).await {
                Some(view) => json(StatusCode::OK, &view),
                None => json_error(StatusCode::NOT_FOUND, format!("no port named {name:?}")),
            };
        }
        ["api", "v1", "ports", name, action] => (*name, *action),
        _ => return json_error(StatusCode::NOT_FOUND, format!("no such API: {path}")),
    };
    match control_port(state, name, action, &caller, peer).await {
        Ok(view) => json(StatusCode::OK, &view),
        Err(e @ SupervisorError::UnknownPort(_)) => {
            json_error(StatusCode::NOT_FOUND, e.to_string())
        }
        Err(e) => json_error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// Start, stop or restart a port, and write it in the audit log.
pub(super) async fn control_port(
    state: &AdminState,
    name: &str,
    action: &str,
    who: &str,
    peer: SocketAddr,
) -> Result<crate::supervisor::PortView, SupervisorError> {
    let sup = &state.supervisor;
    let result = match action {
        "start" => sup.start(name).await,
        "stop" => sup.stop(name).await,
        _ => sup.restart(name).await,
    };
    if result.is_ok() {
        tracing::info!(port = %name, %action, %who, "port control");
        let addr = peer.ip().to_string();
        let what = format!("port {action}");
        if let Err(e) = state
            .store
            .audit(&[
                ("who", who),
                ("action", &what),
                ("target", name),
                ("addr", &addr),
            ])
            .await
        {
            tracing::warn!(error = %e, "writing the audit log");
        }
    }
    result
}

/// An API key with the scope, or a console session with the role (and, for POST,
/// its CSRF token in `X-CSRF-Token`). Returns who is calling, for the audit log.
async fn authorize(
    state: &AdminState,
    req: &Request<Incoming>,
    needed: Role,
) -> Result<String, Reply> {
    let config = state.config();
    if let Some(key) = auth::api_key(req.headers(), &config.api_keys) {
        let allowed = key.scopes.iter().any(|s| auth::scope_role(*s) >= needed);
        if !allowed {
            let scope = if needed >= Role::Operator {
                Scope::Control
            } else {
                Scope::Read
            };
            return Err(json_error(
                StatusCode::FORBIDDEN,
                format!("API key {:?} lacks the {scope:?} scope", key.name).to_lowercase(),
            ));
        }
        return Ok(format!("api:{}", key.name));
    }
    let session: Option<Session> =
        auth::session(&state.store, &config, req.headers(), now_ms()).await;
    let Some(session) = session else {
        let mut reply = json_error(
            StatusCode::UNAUTHORIZED,
            "missing or unknown API key or session",
        );
        reply.headers_mut().insert(
            WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return Err(reply);
    };
    if req.method() == Method::POST {
        let token = req
            .headers()
            .get("x-csrf-token")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        if !auth::same(token, &session.csrf) {
            return Err(json_error(
                StatusCode::FORBIDDEN,
                "missing or wrong CSRF token",
            ));
        }
    }
    if !session.may(needed) {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not do this (needs {})",
                session.role.as_str(),
                needed.as_str()
            ),
        ));
    }
    Ok(session.user)
}
