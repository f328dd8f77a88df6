//! `/healthz` (the process answers), `/readyz` (Redis reachable and writable, the
//! sender holds an FCM token) and `/metrics` (Prometheus text; the queue gauges are
//! read from Redis at each scrape).

use hyper::StatusCode;
use serde_json::json;

use super::{AdminState, Reply, delivery, full, json, with_type};
use crate::clock::now_ms;
use crate::metrics::{QueueSample, labels, metrics};
use crate::supervisor::PortState;

pub(super) async fn answer(state: &AdminState, path: &str) -> Reply {
    match path {
        "/readyz" => ready(state).await,
        "/metrics" => scrape(state).await,
        _ => json(StatusCode::OK, &json!({"status": "ok"})),
    }
}

async fn ready(state: &AdminState) -> Reply {
    // Probes may come in floods: Redis is written to at most once a second for them.
    let checked = state
        .limits
        .ready(|| async { state.store.write_check().await.map_err(|e| e.to_string()) })
        .await;
    let redis = match checked {
        Ok(()) => "ok".to_owned(),
        Err(e) => e,
    };
    // Each app: whether it holds a token (ready needs one per app), and its health (an
    // unhealthy app is named here but keeps the node ready: its misconfiguration is the
    // same on every node, and the other apps and ingest still work).
    let senders = state.apps.senders();
    let mut apps = serde_json::Map::new();
    let mut tokens = true;
    for sender in &senders {
        let health = sender.health();
        let token = sender.has_token();
        tokens &= token;
        apps.insert(
            sender.app().to_owned(),
            json!({
                "token": if token { "ok" } else { "no access token yet" },
                "healthy": health.healthy,
                "unhealthy": health.unhealthy,
            }),
        );
    }
    let fcm = match senders.len() {
        0 => "not configured",
        _ if tokens => "ok",
        _ => "no access token yet",
    };
    let ready = redis == "ok" && tokens;
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    json(
        status,
        &json!({"ready": ready, "redis": redis, "fcm": fcm, "apps": apps}),
    )
}

async fn scrape(state: &AdminState) -> Reply {
    let m = metrics();
    if let Ok((due, inflight)) = state.store.queue_depths().await {
        m.due.set(due as i64);
        m.inflight.set(inflight as i64);
    }
    if let Ok(queues) = delivery::queue_views(&state.store, &state.config(), now_ms()).await {
        m.set_queues(queues.iter().map(|q| QueueSample {
            app: &q.app,
            lane: q.lane.as_str(),
            due: q.due,
            scheduled: q.scheduled,
            oldest_ms: q.oldest_ms,
        }));
    }
    for view in state.supervisor.ports().await {
        for candidate in [
            PortState::Stopped,
            PortState::Starting,
            PortState::Running,
            PortState::Failed,
        ] {
            let name = serde_json::to_value(candidate)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            m.port_state
                .get_or_create(&labels(&[("port", &view.name), ("state", &name)]))
                .set(i64::from(view.state == candidate));
        }
    }
    with_type(
        StatusCode::OK,
        "application/openmetrics-text; version=1.0.0; charset=utf-8",
        full(m.render()),
    )
}
