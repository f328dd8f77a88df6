//! The dashboard: a card per port (state, counters, the last hour's sparkline), a card
//! per app (state, pace against its rate, errors, token, last error), the queues of every
//! app and lane, the nodes sharing this Redis and Redis's health; and the switches that
//! start and stop ports. Its live figures come from [`super::events`], which sends the
//! same [`AppCard`]s and [`QueueRow`]s the page is rendered from.

use std::collections::HashMap;
use std::net::SocketAddr;

use askama::Template;
use hyper::StatusCode;
use serde::Serialize;

use super::{Chrome, error_page, render};
use crate::admin::auth::Session;
use crate::admin::delivery::{self, AppState, AppView, QueueView, human_age};
use crate::admin::{AdminState, Reply, actions, redirect};
use crate::clock::now_ms;
use crate::config::Role;
use crate::script::format_local;
use crate::supervisor::PortState;

struct PortCard {
    name: String,
    mode: &'static str,
    addr: String,
    state: &'static str,
    running: bool,
    connections: usize,
    counts: crate::store::PortCounts,
    /// Receipts per push sent ([`receipt_rate`]).
    receipt_rate: String,
    last_frame: String,
    last_error: String,
    script_error: String,
    sparkline: String,
    peak: u64,
    /// Connect mode: which node runs it (empty when none or listen mode).
    holder: String,
    /// Connect mode: the upstream connected to now (empty when none).
    connected: String,
    /// Listen mode: connections turned away at accept or for want of a first frame.
    refused: u64,
}

/// One node sharing this Redis, from its heartbeat.
struct NodeRow {
    id: String,
    this: bool,
    alive: bool,
    console: String,
    seen: String,
    ports: String,
}

struct RedisHealth {
    role: String,
    replicas: String,
    aof: String,
    aof_rewrite: String,
    memory: String,
    version: String,
    error: String,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    chrome: Option<Chrome>,
    ports: Vec<PortCard>,
    admin_addr: String,
    redis: RedisHealth,
    topology: Option<crate::store::cluster::Topology>,
    nodes: Vec<NodeRow>,
    apps: Vec<AppCard>,
    queues: Vec<QueueRow>,
    /// Why the queues could not be read (Redis down).
    queue_error: String,
    due: u64,
    inflight: u64,
    records: u64,
}

/// An app's card as text ready to show; the live stream sends the same.
#[derive(Serialize)]
pub(super) struct AppCard {
    name: String,
    /// The card's colour, as a port state's CSS class.
    css: &'static str,
    /// The badge: ok, slowed, no token, unhealthy, not running.
    state: &'static str,
    /// The state in words when it is not ok: why unhealthy, until when slowed.
    detail: String,
    provider: &'static str,
    project: String,
    /// Sends a second against the rate: "412 / 500 per s", "3.5 per s · no cap".
    pace: String,
    /// Error classes of the last five minutes with counts.
    errors: String,
    token: String,
    last_error: String,
}

/// The cards of `views`, times in `zone`.
pub(super) fn app_cards(views: Vec<AppView>, zone: chrono_tz::Tz) -> Vec<AppCard> {
    let clock = |ms: i64| format_local(ms, zone, "%H:%M:%S");
    views
        .into_iter()
        .map(|v| {
            let detail = match v.state {
                AppState::Unhealthy => v
                    .unhealthy
                    .as_ref()
                    .map(|e| {
                        format!(
                            "{} at {}: nothing is sent until a send is accepted again",
                            e.class,
                            clock(e.at)
                        )
                    })
                    .unwrap_or_default(),
                AppState::Slowed => format!(
                    "slowed by the project's quota until {}",
                    v.slowed_until.map(clock).unwrap_or_default()
                ),
                AppState::NoToken => "no access token yet: nothing can be sent".into(),
                AppState::NotRunning => "its sender did not start: see the log".into(),
                AppState::Ok => String::new(),
            };
            let errors = if v.errors.is_empty() {
                "none".to_owned()
            } else {
                v.errors
                    .iter()
                    .map(|(class, n)| format!("{class} {n}"))
                    .collect::<Vec<_>>()
                    .join(" · ")
            };
            AppCard {
                css: match v.state {
                    AppState::Ok => "state-running",
                    AppState::Slowed | AppState::NoToken => "state-starting",
                    AppState::Unhealthy | AppState::NotRunning => "state-failed",
                },
                state: v.state.as_str(),
                detail,
                provider: v.provider,
                project: v.project.unwrap_or_default(),
                pace: pace(v.sends_per_sec, v.rate, v.state),
                errors,
                token: v
                    .token_expires_at
                    .map(|ms| format!("expires {}", clock(ms)))
                    .unwrap_or_else(|| "none".into()),
                last_error: v
                    .last_error
                    .map(|e| {
                        format!(
                            "{} at {}: {}",
                            e.class,
                            clock(e.at),
                            shortened(&provider_message(&e.answer), 160)
                        )
                    })
                    .unwrap_or_else(|| "none".into()),
                name: v.name,
            }
        })
        .collect()
}

/// Sends a second against the app's rate.
fn pace(per_sec: f64, rate: Option<u32>, state: AppState) -> String {
    let sends = if state == AppState::NotRunning {
        "—".to_owned()
    } else if per_sec < 10.0 {
        format!("{per_sec:.1}")
    } else {
        format!("{per_sec:.0}")
    };
    match rate {
        Some(rate) => format!("{sends} / {rate} per s"),
        None => format!("{sends} per s · no cap"),
    }
}

/// What a provider's answer says in words: FCM's `error.message` when the answer is its
/// JSON error, else the answer as it is.
fn provider_message(answer: &str) -> std::borrow::Cow<'_, str> {
    serde_json::from_str::<serde_json::Value>(answer)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
        .map_or(std::borrow::Cow::Borrowed(answer), std::borrow::Cow::Owned)
}

/// At most `chars` characters of `text`, with an ellipsis when cut.
fn shortened(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// One due queue's row on the queue card; the live stream sends the same.
#[derive(Serialize)]
pub(super) struct QueueRow {
    /// `app/lane`, which the live stream finds the row by.
    key: String,
    app: String,
    lane: &'static str,
    due: u64,
    /// How long the oldest due push has waited ("3 s", "2 min"), "—" when none is due.
    oldest: String,
    scheduled: u64,
    /// No configured app sends from it.
    orphan: bool,
}

pub(super) fn queue_rows(views: Vec<QueueView>) -> Vec<QueueRow> {
    views
        .into_iter()
        .map(|q| QueueRow {
            key: format!("{}/{}", q.app, q.lane),
            lane: q.lane.as_str(),
            due: q.due,
            oldest: if q.due == 0 {
                "—".into()
            } else {
                human_age(q.oldest_ms)
            },
            scheduled: q.scheduled,
            orphan: !q.configured,
            app: q.app,
        })
        .collect()
}

/// `GET /`: every port's card, the nodes sharing this Redis, Redis's health and the
/// queue.
pub(super) async fn page(state: &AdminState, session: &Session) -> Reply {
    let config = state.config();
    let now = now_ms();
    let views = state.supervisor.ports().await;
    let names: Vec<String> = views.iter().map(|v| v.name.clone()).collect();
    let counts = state.store.port_counts(&names).await.unwrap_or_default();
    let mut ports = Vec::new();
    for (i, view) in views.into_iter().enumerate() {
        let counts = counts.get(i).copied().unwrap_or_default();
        let minutes = state
            .store
            .minute_counts(&view.name, "received", now, 60)
            .await
            .unwrap_or_default();
        let (sparkline, peak) = sparkline(&minutes);
        ports.push(PortCard {
            mode: match view.mode {
                crate::config::Mode::Listen => "listen",
                crate::config::Mode::Connect => "connect",
            },
            addr: view.bound.clone().unwrap_or(view.addr.clone()),
            state: view.state.as_str(),
            running: matches!(
                view.state,
                PortState::Running | PortState::Starting | PortState::Standby
            ),
            holder: view.holder.clone().unwrap_or_default(),
            connected: view.connected.clone().unwrap_or_default(),
            refused: view.refused,
            connections: view.connections,
            receipt_rate: receipt_rate(&counts),
            counts,
            last_frame: view
                .last_frame_ms
                .map(|ms| format_local(ms, config.zone(), "%Y-%m-%d %H:%M:%S"))
                .unwrap_or_else(|| "—".into()),
            last_error: crate::admin::view::text(
                view.last_error.as_deref().unwrap_or_default(),
                session.sight(),
            ),
            script_error: view.script_error.clone().unwrap_or_default(),
            sparkline,
            peak,
            name: view.name,
        });
    }
    // One INFO for the Redis card and the replication picture.
    let info = state
        .store
        .info(&["replication", "persistence", "memory", "server"])
        .await;
    let topology = match &info {
        Ok(info) => Some(state.store.topology_from(info).await),
        Err(_) => None,
    };
    let redis = redis_health(info);
    let nodes = node_rows(state, now).await;
    let (due, inflight) = state.store.queue_depths().await.unwrap_or((0, 0));
    let records = state.store.record_count().await.unwrap_or(0);
    let apps = app_cards(
        delivery::app_views(&state.apps, &config, session.sight()),
        config.zone(),
    );
    let (queues, queue_error) = match delivery::queue_views(&state.store, &config, now).await {
        Ok(views) => (queue_rows(views), String::new()),
        Err(e) => (Vec::new(), e.to_string()),
    };
    render(&DashboardPage {
        chrome: Some(Chrome::new(session, "dashboard")),
        ports,
        admin_addr: state.admin_addr.to_string(),
        redis,
        topology,
        nodes,
        apps,
        queues,
        queue_error,
        due,
        inflight,
        records,
    })
}

/// `POST /ports/{name}/start|stop`: the dashboard's switches, for operators and up.
pub(super) async fn start_or_stop(
    state: &AdminState,
    session: &Session,
    name: &str,
    action: &str,
    peer: SocketAddr,
) -> Reply {
    if !session.may(Role::Operator) {
        return error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            "Only operators may start and stop ports.",
        );
    }
    match actions::control_port(state, name, action, &session.user, peer).await {
        Ok(_) => redirect("/"),
        Err(e) => error_page(Some(session), StatusCode::CONFLICT, &e.to_string()),
    }
}

/// Every node seen in the last day, this one first.
async fn node_rows(state: &AdminState, now: i64) -> Vec<NodeRow> {
    let this = &state.supervisor.node().id;
    let mut rows: Vec<NodeRow> = state
        .store
        .nodes()
        .await
        .unwrap_or_default()
        .into_iter()
        .map(|(id, seen_ms, body)| {
            let beat: Option<crate::supervisor::NodeBeat> =
                body.and_then(|b| serde_json::from_str(&b).ok());
            NodeRow {
                this: id == *this,
                alive: beat.is_some(),
                console: beat.as_ref().map(|b| b.console.clone()).unwrap_or_default(),
                seen: format!("{} s ago", ((now - seen_ms) / 1000).max(0)),
                ports: beat
                    .map(|b| {
                        b.ports
                            .iter()
                            .map(|p| format!("{} {}", p.name, p.state.as_str()))
                            .collect::<Vec<_>>()
                            .join(" · ")
                    })
                    .unwrap_or_else(|| "gone: no heartbeat".into()),
                id,
            }
        })
        .collect();
    rows.sort_by_key(|r| (!r.this, !r.alive, r.id.clone()));
    rows
}

/// A port's receipt rate as its card shows it: pushes the app reported delivered or
/// opened per push sent, `—` before anything was sent.
pub(super) fn receipt_rate(counts: &crate::store::PortCounts) -> String {
    counts
        .receipt_rate()
        .map_or_else(|| "—".into(), |rate| format!("{rate:.1}%"))
}

/// SVG polyline points (120×28 box) for per-minute counts, and the peak.
fn sparkline(counts: &[u64]) -> (String, u64) {
    let peak = counts.iter().copied().max().unwrap_or(0);
    let n = counts.len().max(2) - 1;
    let points = counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let x = i as f64 * 120.0 / n as f64;
            let y = if peak == 0 {
                27.0
            } else {
                27.0 - (*c as f64 / peak as f64) * 25.0
            };
            format!("{x:.1},{y:.1}")
        })
        .collect::<Vec<_>>()
        .join(" ");
    (points, peak)
}

fn redis_health(info: Result<HashMap<String, String>, crate::store::StoreError>) -> RedisHealth {
    match info {
        Ok(info) => {
            let get = |k: &str| info.get(k).cloned().unwrap_or_default();
            RedisHealth {
                role: get("role"),
                replicas: get("connected_slaves"),
                aof: if get("aof_enabled") == "1" {
                    "on".into()
                } else {
                    "off".into()
                },
                aof_rewrite: get("aof_last_bgrewrite_status"),
                memory: get("used_memory_human"),
                version: get("redis_version"),
                error: String::new(),
            }
        }
        Err(e) => RedisHealth {
            role: "unreachable".into(),
            replicas: String::new(),
            aof: String::new(),
            aof_rewrite: String::new(),
            memory: String::new(),
            version: String::new(),
            error: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_reads_against_the_rate_or_says_there_is_none() {
        assert_eq!(pace(412.4, Some(500), AppState::Ok), "412 / 500 per s");
        assert_eq!(pace(0.44, Some(1), AppState::Slowed), "0.4 / 1 per s");
        assert_eq!(pace(3.5, None, AppState::Ok), "3.5 per s · no cap");
        assert_eq!(pace(0.0, Some(9), AppState::NotRunning), "— / 9 per s");
    }

    #[test]
    fn an_fcm_error_answer_reads_as_its_message() {
        let answer = r#"{"error":{"code":400,"message":"The registration token is not valid","status":"INVALID_ARGUMENT"}}"#;
        assert_eq!(
            provider_message(answer),
            "The registration token is not valid"
        );
        assert_eq!(provider_message("connection reset"), "connection reset");
    }

    #[test]
    fn long_answers_are_shortened_on_a_character_boundary() {
        assert_eq!(shortened("이체 완료", 2), "이체…");
        assert_eq!(shortened("short", 160), "short");
    }

    #[test]
    fn sparkline_scales_to_the_peak() {
        let (points, peak) = sparkline(&[0, 5, 10]);
        assert_eq!(peak, 10);
        assert_eq!(points, "0.0,27.0 60.0,14.5 120.0,2.0");
        assert_eq!(sparkline(&[0, 0]).0, "0.0,27.0 120.0,27.0");
    }
}
