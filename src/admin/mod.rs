//! The admin listener: a hyper 1 server with the operators' console (server-rendered
//! askama pages, plain forms, a little JavaScript for live counters and switches) and
//! the authenticated JSON API. Every response carries the security headers; every
//! request but the configured open paths needs a session or an API key.

mod api;
pub mod auth;
mod pages;
mod probes;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};

use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Frame, Incoming};
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
    pub sender: Option<Arc<crate::sender::Sender>>,
    /// Where `POST /api/v1/pushes` hands its records.
    pub committer: crate::store::Committer,
    /// One script Save at a time (each keeps a version and swaps the port's script).
    pub script_saves: tokio::sync::Mutex<()>,
    /// Set while the log is flushed: HTTP ingest waits it out.
    pub flushing: std::sync::atomic::AtomicBool,
    /// Compiled route scripts of the ingest API keys, by key name.
    pub api_routes: RwLock<std::collections::HashMap<String, crate::script::CompiledRoute>>,
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
                async move { Ok::<_, Infallible>(handle(&state, req, peer).await) }
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

async fn handle(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let mut reply = if path.starts_with("/api/") {
        api::handle(state, req, peer).await
    } else {
        pages::handle(state, req, peer).await
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

/// Read a request body up to `limit` bytes.
async fn read_body(body: Incoming, limit: usize) -> Result<Bytes, Reply> {
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(_) => Err(json_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("body over {limit} bytes"),
        )),
    }
}

/// A body fed by a channel, for Server-Sent Events.
struct ChannelBody {
    rx: tokio::sync::mpsc::Receiver<Bytes>,
}

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

fn streaming(rx: tokio::sync::mpsc::Receiver<Bytes>) -> Reply {
    let mut reply = with_type(
        StatusCode::OK,
        "text/event-stream",
        ChannelBody { rx }.boxed(),
    );
    reply
        .headers_mut()
        .insert("x-accel-buffering", HeaderValue::from_static("no"));
    reply
}
