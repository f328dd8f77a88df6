//! The dashboard's live figures: one Server-Sent Event a second per open stream (the
//! ports' counters, the app cards, the queue rows), and the channel-fed body that
//! carries them.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body_util::BodyExt;
use hyper::StatusCode;
use hyper::body::{Bytes, Frame};
use hyper::header::HeaderValue;
use serde_json::Value;

use super::dashboard::{app_cards, queue_rows};
use crate::admin::auth::{self, Session};
use crate::admin::delivery::{app_views, queue_views};
use crate::admin::{AdminState, Reply, json_error, with_type};
use crate::clock::now_ms;

/// Server-Sent Events: once a second, every port's counters, the app cards and the queue
/// rows (of the apps the config named when the stream opened: an app a reload adds
/// shows when the page is loaded again), for as long as the session
/// that opened the stream lives (sign-out, expiry or a role change end it within a
/// second), and at most `[console] streams_per_session` at once per session.
pub(super) fn stream(state: &AdminState, session: &Session) -> Reply {
    let config = state.config();
    let Some(slot) = state.limits.stream(&session.token, &config) else {
        crate::metrics::metrics()
            .admin_refused
            .get_or_create(&crate::metrics::labels(&[("reason", "streams")]))
            .inc();
        return json_error(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "this session already has {} live streams open",
                config.console.streams_per_session
            ),
        );
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    let supervisor = state.supervisor.clone();
    let store = state.store.clone();
    let apps = state.apps.clone();
    let sight = session.sight();
    let shutdown = state.shutdown.clone();
    let session = session.clone();
    tokio::spawn(async move {
        let _slot = slot;
        let _ = tx.send(Bytes::from_static(b"retry: 3000\n\n")).await;
        loop {
            if !auth::still_valid(&store, &config, &session, now_ms()).await {
                return;
            }
            let views = supervisor.ports().await;
            let names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
            let counts = store.port_counts(&names).await.unwrap_or_default();
            let ports: Vec<Value> = views
                .into_iter()
                .enumerate()
                .map(|(i, view)| {
                    let count = counts.get(i).copied().unwrap_or_default();
                    let mut port = serde_json::to_value(count).unwrap_or_default();
                    port["receipt_rate"] = super::dashboard::receipt_rate(&count).into();
                    port["name"] = view.name.into();
                    port["state"] = view.state.as_str().into();
                    port["connections"] = view.connections.into();
                    port["connected"] = view.connected.into();
                    port["refused"] = view.refused.into();
                    port
                })
                .collect();
            let (due, inflight) = store.queue_depths().await.unwrap_or((0, 0));
            let cards = app_cards(app_views(&apps, &config, sight), config.zone());
            let queues = queue_views(&store, &config, now_ms())
                .await
                .map(queue_rows)
                .unwrap_or_default();
            let event = serde_json::json!({
                "ports": ports,
                "due": due,
                "inflight": inflight,
                "apps": cards,
                "queues": queues,
            });
            if tx
                .send(Bytes::from(format!("data: {event}\n\n")))
                .await
                .is_err()
            {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                _ = shutdown.cancelled() => return,
                _ = tx.closed() => return,
            }
        }
    });
    streaming(rx)
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

/// An event-stream answer fed by `rx`; proxies are told not to buffer it.
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
