//! The admin listener: a hyper 1 server with the authenticated JSON API
//! (`/api/v1/ports`, start/stop/restart) and `/healthz`. The console builds on it.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{AUTHORIZATION, CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::{ApiKey, Scope};
use crate::supervisor::{Supervisor, SupervisorError};

/// Bodies on the JSON API are small; refuse anything bigger before reading it.
const MAX_BODY_BYTES: usize = 64 * 1024;

pub struct AdminState {
    pub supervisor: Arc<Supervisor>,
    /// Replaced on reload.
    pub api_keys: RwLock<Vec<ApiKey>>,
}

/// Lower-case hex SHA-256: how API keys are stored in the config.
pub fn hash_api_key(key: &str) -> String {
    Sha256::digest(key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh random API key (256 bits, URL-safe) and its hash.
pub fn new_api_key() -> (String, String) {
    let bytes: [u8; 32] = rand::random();
    let key: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    let key = format!("pgk_{key}");
    let hash = hash_api_key(&key);
    (key, hash)
}

/// Bind the admin address (port 0 picks a free one) and serve until `cancel`.
pub async fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await
}

pub async fn serve(listener: TcpListener, state: Arc<AdminState>, cancel: CancellationToken) {
    let tracker = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "admin accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = cancel.cancelled() => break,
        };
        let state = state.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let service = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, std::convert::Infallible>(handle(&state, req).await) }
            });
            let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                result = conn.as_mut() => {
                    if let Err(e) = result {
                        tracing::debug!(%peer, error = %e, "admin connection");
                    }
                }
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    let _ = conn.await;
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

type Reply = Response<Full<Bytes>>;

fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    let mut reply = Response::new(Full::new(Bytes::from(text)));
    *reply.status_mut() = status;
    reply.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    reply
}

fn error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(status, &serde_json::json!({ "error": message.into() }))
}

async fn handle(state: &AdminState, req: Request<Incoming>) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    if path == "/healthz" {
        return json(StatusCode::OK, &serde_json::json!({"status": "ok"}));
    }
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let needed = match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "v1", "ports"] | ["api", "v1", "ports", _]) => Scope::Read,
        (&Method::POST, ["api", "v1", "ports", _, "start" | "stop" | "restart"]) => Scope::Control,
        (_, ["api", "v1", "ports", ..]) => {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            );
        }
        _ => return error(StatusCode::NOT_FOUND, format!("no such page: {path}")),
    };
    if let Err(denied) = authorize(state, &req, needed) {
        return denied.reply();
    }
    // Drain (bounded) whatever body came with it; the API takes none yet.
    let body = http_body_util::Limited::new(req.into_body(), MAX_BODY_BYTES);
    if body.collect().await.is_err() {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {MAX_BODY_BYTES} bytes"),
        );
    }
    let sup = &state.supervisor;
    let result = match segments.as_slice() {
        ["api", "v1", "ports"] => return json(StatusCode::OK, &sup.ports().await),
        ["api", "v1", "ports", name] => {
            return match sup.port(name).await {
                Some(view) => json(StatusCode::OK, &view),
                None => error(StatusCode::NOT_FOUND, format!("no port named {name:?}")),
            };
        }
        ["api", "v1", "ports", name, "start"] => sup.start(name).await,
        ["api", "v1", "ports", name, "stop"] => sup.stop(name).await,
        ["api", "v1", "ports", name, "restart"] => sup.restart(name).await,
        _ => return error(StatusCode::NOT_FOUND, format!("no such page: {path}")),
    };
    match result {
        Ok(view) => {
            tracing::info!(port = %view.name, action = %segments[4], "port control via API");
            json(StatusCode::OK, &view)
        }
        Err(e @ SupervisorError::UnknownPort(_)) => error(StatusCode::NOT_FOUND, e.to_string()),
        Err(e) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

/// Why a request was refused before reaching its route.
enum Denied {
    /// No key, or one that is not configured.
    Unknown,
    /// A valid key without the scope the route needs.
    Scope { key: String, scope: Scope },
}

impl Denied {
    fn reply(self) -> Reply {
        match self {
            Denied::Unknown => {
                let mut reply = error(StatusCode::UNAUTHORIZED, "missing or unknown API key");
                reply.headers_mut().insert(
                    WWW_AUTHENTICATE,
                    hyper::header::HeaderValue::from_static("Bearer"),
                );
                reply
            }
            Denied::Scope { key, scope } => error(
                StatusCode::FORBIDDEN,
                format!("API key {key:?} lacks the {scope:?} scope").to_lowercase(),
            ),
        }
    }
}

/// `Authorization: Bearer <key>` whose SHA-256 is a configured key with `scope`.
fn authorize(state: &AdminState, req: &Request<Incoming>, scope: Scope) -> Result<(), Denied> {
    let presented = req
        .headers()
        .get(AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Denied::Unknown)?;
    let hash = hash_api_key(presented);
    let keys = state.api_keys.read().map_err(|_| Denied::Unknown)?;
    match keys.iter().find(|k| k.sha256 == hash) {
        None => Err(Denied::Unknown),
        Some(key) if key.scopes.contains(&scope) => Ok(()),
        Some(key) => Err(Denied::Scope {
            key: key.name.clone(),
            scope,
        }),
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
}
