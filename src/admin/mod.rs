//! The admin listener: a hyper 1 server with the operators' console (server-rendered
//! askama pages, plain forms, a little JavaScript for live counters and switches) and
//! the authenticated JSON API. Every response carries the security headers; every
//! request but the configured open paths needs a session or an API key.

mod actions;
mod api;
pub mod auth;
mod consents;
mod console;
mod delivery;
mod limits;
mod probes;
mod receipts;
pub mod tls;
pub mod view;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::script::RouteEngine;
use crate::store::Store;
use crate::supervisor::Supervisor;

pub use auth::{hash_api_key, hash_password, new_api_key};
pub use limits::Limits;

/// Everything the pages and the API read or act on.
pub struct AdminState {
    pub supervisor: Arc<Supervisor>,
    pub store: Store,
    pub engine: Arc<RouteEngine>,
    /// The running config; replaced on reload.
    pub config: RwLock<Arc<Config>>,
    /// Cancelled when the process drains: live streams end.
    pub shutdown: CancellationToken,
    /// Where the console actually listens (the config may say port 0).
    pub admin_addr: SocketAddr,
    /// The sender, when `[fcm]` is configured (for `/readyz`).
    /// The running apps' senders.
    pub apps: Arc<crate::sender::Apps>,
    /// Where `POST /api/v1/pushes` hands its records.
    pub committer: crate::store::Committer,
    /// One script Save at a time (each keeps a version and swaps the port's script).
    pub script_saves: tokio::sync::Mutex<()>,
    /// Set while the log is flushed: HTTP ingest waits it out.
    pub flushing: std::sync::atomic::AtomicBool,
    /// Compiled route scripts of the ingest API keys, by key name.
    pub api_routes: RwLock<std::collections::HashMap<String, crate::script::CompiledRoute>>,
    /// Bounds on what callers can hold: connections, password checks, live streams.
    pub limits: limits::Limits,
    /// The ad gate (HTTP ingest, route again, the script editor's Try) and the consent
    /// registry's clock.
    pub ads: crate::ads::LiveGate,
    /// Serves the console over TLS when `[admin] tls_cert` is set.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
}

impl AdminState {
    /// The running config (cheap: shared, not copied).
    pub fn config(&self) -> Arc<Config> {
        self.config
            .read()
            .map(|c| c.clone())
            .unwrap_or_else(|p| p.into_inner().clone())
    }
}

pub type Body = BoxBody<Bytes, Infallible>;
pub type Reply = Response<Body>;

/// Serve until `cancel`; open connections finish their current request.
///
/// Each connection holds a slot (`[admin] max_connections`, and per address
/// `max_connections_per_addr`; a connection over either is closed at accept), must send
/// each request's headers within `header_timeout_ms` (which also ends a keep-alive
/// connection idle that long), and, with TLS, finish its handshake within the same time.
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
        let Some(slot) = state.limits.connection(peer.ip(), &state.config()) else {
            crate::metrics::metrics()
                .admin_refused
                .get_or_create(&crate::metrics::labels(&[("reason", "connections")]))
                .inc();
            drop(stream);
            continue;
        };
        let state = state.clone();
        let cancel = cancel.clone();
        tracker.spawn(async move {
            let _slot = slot;
            let config = state.config();
            let header_timeout = std::time::Duration::from_millis(config.admin.header_timeout_ms);
            match state.tls.clone() {
                None => serve_connection(stream, peer, state, cancel, header_timeout).await,
                Some(acceptor) => {
                    match tokio::time::timeout(header_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            serve_connection(tls, peer, state, cancel, header_timeout).await
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "admin TLS handshake"),
                        Err(_) => tracing::debug!(%peer, "admin TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn serve_connection<S>(
    stream: S,
    peer: SocketAddr,
    state: Arc<AdminState>,
    cancel: CancellationToken,
    header_timeout: std::time::Duration,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        // Type-erased: the page futures are deep, and the compiler proves them Send once
        // here instead of inside each stream type's connection future.
        let answer: Pin<Box<dyn std::future::Future<Output = Reply> + Send>> =
            Box::pin(async move { handle(&state, req, peer).await });
        async move { Ok::<_, Infallible>(answer.await) }
    });
    let conn = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(header_timeout)
        .max_buf_size(64 * 1024)
        .serve_connection(TokioIo::new(stream), service);
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
}

async fn handle(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let mut reply = if path.starts_with("/api/") {
        api::handle(state, req, peer).await
    } else {
        console::handle(state, req, peer).await
    };
    secure(&mut reply);
    reply
}

/// Headers every answer carries: no inline script, no framing, no sniffing.
fn secure(reply: &mut Reply) {
    let headers = reply.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "same-origin"),
        ("cache-control", "no-store"),
    ] {
        headers.insert(name, HeaderValue::from_static(value));
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn with_type(status: StatusCode, content_type: &'static str, body: Body) -> Reply {
    let mut reply = Response::new(body);
    *reply.status_mut() = status;
    reply
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    reply
}

pub(crate) fn json(status: StatusCode, body: &impl serde::Serialize) -> Reply {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    with_type(status, "application/json", full(text))
}

pub(crate) fn json_error(status: StatusCode, message: impl Into<String>) -> Reply {
    json(status, &serde_json::json!({ "error": message.into() }))
}

fn html(status: StatusCode, page: String) -> Reply {
    with_type(status, "text/html; charset=utf-8", full(page))
}

fn redirect(location: &str) -> Reply {
    let mut reply = Response::new(full(Bytes::new()));
    *reply.status_mut() = StatusCode::SEE_OTHER;
    if let Ok(value) = HeaderValue::from_str(location) {
        reply.headers_mut().insert(hyper::header::LOCATION, value);
    }
    reply
}

/// Read a request body up to `limit` bytes, within `[admin] body_timeout_ms`.
async fn read_body(state: &AdminState, body: Incoming, limit: usize) -> Result<Bytes, Reply> {
    let within = std::time::Duration::from_millis(state.config().admin.body_timeout_ms);
    let read = http_body_util::Limited::new(body, limit).collect();
    match tokio::time::timeout(within, read).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {limit} bytes"),
        )),
        Err(_) => Err(json_error(
            StatusCode::REQUEST_TIMEOUT,
            format!("body not received within {} ms", within.as_millis()),
        )),
    }
}
