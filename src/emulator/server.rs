//! The accept loop both emulators (FCM and APNs) run: plain connections or TLS, HTTP/1.1 or
//! HTTP/2 chosen per connection by its preface, and a bounded drain on shutdown.
//!
//! Invariant: once `cancel` fires no new connection is accepted, and `serve` returns only
//! after every connection has finished or been dropped after [`DRAIN`].

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long shutdown waits for in-flight requests before dropping them.
const DRAIN: Duration = Duration::from_secs(5);
/// A TLS client that has not finished its handshake by then is dropped.
const HANDSHAKE: Duration = Duration::from_secs(10);

/// What an emulator does with one request; it never fails, every refusal is an answer.
pub(super) trait Handler: Send + Sync + 'static {
    fn handle(&self, req: Request<Incoming>) -> impl Future<Output = Response<Full<Bytes>>> + Send;
}

/// Accept on `listener` until `cancel`, serving each connection (through `tls` if given) with
/// `handler`; `name` ("FCM emulator") prefixes the log lines.
pub(super) async fn serve<H: Handler>(
    name: &'static str,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let builder = auto::Builder::new(TokioExecutor::new());
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = cancel.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Usually fd exhaustion: back off instead of spinning on it.
                    tracing::warn!("{name}: accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (builder, handler, cancel) = (builder.clone(), handler.clone(), cancel.clone());
        let Some(acceptor) = tls.clone() else {
            connections.spawn(serve_connection(builder, stream, handler, cancel));
            continue;
        };
        connections.spawn(async move {
            let handshake = tokio::select! {
                () = cancel.cancelled() => return,
                done = tokio::time::timeout(HANDSHAKE, acceptor.accept(stream)) => done,
            };
            match handshake {
                Ok(Ok(stream)) => serve_connection(builder, stream, handler, cancel).await,
                Ok(Err(e)) => tracing::debug!("{name}: TLS handshake: {e}"),
                Err(_) => tracing::debug!("{name}: TLS handshake timed out"),
            }
        });
    }
    connections.close();
    connections.wait().await;
}

/// HTTP/1.1 or HTTP/2 (by preface) on one connection, until it ends or shutdown drains it.
async fn serve_connection<H: Handler>(
    builder: auto::Builder<TokioExecutor>,
    io: impl AsyncRead + AsyncWrite + Unpin + Send + 'static,
    handler: Arc<H>,
    cancel: CancellationToken,
) {
    let service = hyper::service::service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, Infallible>(handler.handle(req).await) }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        () = cancel.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(DRAIN, conn).await;
        }
    }
}
