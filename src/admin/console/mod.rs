//! The console's pages: sign-in, dashboard (with live counters over SSE), push log,
//! one push, scripts (check, try, save, versions) and the audit log. Plain forms
//! work without JavaScript; every POST carries the session's CSRF token.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use askama::Template;
use hyper::body::{Bytes, Incoming};
use hyper::header::HeaderValue;
use hyper::{Method, Request, StatusCode};
use serde_json::Value;

mod login;

use crate::admin::auth::{self, Session};
use crate::admin::view::{self, Sight};
use crate::admin::{AdminState, Reply, actions, html, read_body, redirect, streaming, with_type};
use crate::clock::now_ms;
use crate::config::Role;
use crate::push::fields::{LOG_COLUMNS, SUBSTRING_FIELDS};
use crate::script::format_local;
use crate::store::log::{LogQuery, Resend, Total, searchable_fields};
use crate::supervisor::PortState;

const STYLE: &str = include_str!("../../../static/app.css");
const SCRIPT: &str = include_str!("../../../static/app.js");
const PER_PAGE: u64 = 100;
/// The highest page number asked for (a page past the end is simply empty).
const MAX_PAGE: u64 = 1_000_000_000;
/// Rows a CSV export holds at most.
const CSV_LIMIT: u64 = 100_000;
const STATUSES: &[&str] = &[
    "queued",
    "scheduled",
    "retrying",
    "sent",
    "failed",
    "dropped",
    "script_error",
];

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

pub(super) async fn handle(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let config = state.config();
    match (&method, path.as_str()) {
        (&Method::GET, "/static/app.css") => {
            return with_type(
                StatusCode::OK,
                "text/css; charset=utf-8",
                crate::admin::full(STYLE),
            );
        }
        (&Method::GET, "/static/app.js") => {
            return with_type(
                StatusCode::OK,
                "text/javascript; charset=utf-8",
                crate::admin::full(SCRIPT),
            );
        }
        _ => {}
    }
    let probe = matches!(path.as_str(), "/healthz" | "/readyz" | "/metrics");
    if probe && config.console.open_paths.contains(&path) {
        return crate::admin::probes::answer(state, &path).await;
    }
    let session = auth::session(&state.store, &config, req.headers(), now_ms()).await;
    if path == "/login" {
        // The only body read before a session is known, and a small one.
        let form = if method == Method::POST {
            match read_body(state, req.into_body(), login::FORM_LIMIT).await {
                Ok(body) => Some(body),
                Err(reply) => return reply,
            }
        } else {
            None
        };
        return login::answer(state, &method, form.as_deref(), session.as_ref(), peer).await;
    }
    if probe && session.is_some() {
        return crate::admin::probes::answer(state, &path).await;
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
            crate::admin::json_error(StatusCode::UNAUTHORIZED, "sign in first")
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
        (&Method::GET, [""]) => dashboard(state, s).await,
        (&Method::GET, ["events"]) => events(state, s),
        (&Method::POST, ["ports", name, action @ ("start" | "stop")]) => {
            if !s.may(Role::Operator) {
                return error_page(
                    Some(s),
                    StatusCode::FORBIDDEN,
                    "Only operators may start and stop ports.",
                );
            }
            match actions::control_port(state, name, action, &s.user, peer).await {
                Ok(_) => redirect("/"),
                Err(e) => error_page(Some(s), StatusCode::CONFLICT, &e.to_string()),
            }
        }
        (&Method::GET, ["log"]) => log_page(state, s, &input).await,
        (&Method::GET, ["log.csv"]) => log_csv(state, s, &input).await,
        (&Method::GET | &Method::POST, ["log", "flush"]) => {
            flush(state, s, &method, &input, peer).await
        }
        (&Method::GET, ["push", id]) => push_page(state, s, id, None).await,
        (&Method::POST, ["push", id, "resend"]) => resend(state, s, id, peer).await,
        (&Method::POST, ["push", id, "reroute"]) => reroute(state, s, id, peer).await,
        (&Method::POST, ["push", id, "hold"]) => {
            if !s.may(Role::Operator) {
                return error_page(
                    Some(s),
                    StatusCode::FORBIDDEN,
                    "Only operators may place a legal hold.",
                );
            }
            let Ok(num) = id.parse::<u64>() else {
                return error_page(Some(s), StatusCode::NOT_FOUND, "No such push.");
            };
            let hold = input.get("hold") == "1";
            match actions::set_hold(state, num, hold, &s.user, peer).await {
                Ok(_) => {
                    push_page(
                        state,
                        s,
                        id,
                        Some(if hold {
                            "Legal hold placed: retention keeps this push."
                        } else {
                            "Legal hold released."
                        }),
                    )
                    .await
                }
                Err((status, message)) => error_page(Some(s), status, &message),
            }
        }
        (&Method::GET, ["scripts"]) => scripts_page(state, s).await,
        (&Method::GET | &Method::POST, ["scripts", port]) => {
            script_page(state, s, port, &method, &input, peer).await
        }
        (&Method::GET, ["scripts", port, "versions", version]) => {
            version_page(state, s, port, version).await
        }
        (&Method::GET, ["audit"]) => audit_page(state, s, &input).await,
        _ => error_page(
            Some(s),
            StatusCode::NOT_FOUND,
            &format!("There is no page at {path}."),
        ),
    }
}

// ---------------------------------------------------------------- dashboard

struct PortCard {
    name: String,
    mode: &'static str,
    addr: String,
    state: &'static str,
    running: bool,
    connections: usize,
    counts: crate::store::PortCounts,
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
    due: u64,
    inflight: u64,
    records: u64,
}

async fn dashboard(state: &AdminState, session: &Session) -> Reply {
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
            counts,
            last_frame: view
                .last_frame_ms
                .map(|ms| format_local(ms, config.zone(), "%Y-%m-%d %H:%M:%S"))
                .unwrap_or_else(|| "—".into()),
            last_error: view::text(
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
    render(&DashboardPage {
        chrome: Some(Chrome::new(session, "dashboard")),
        ports,
        admin_addr: state.admin_addr.to_string(),
        redis,
        topology,
        nodes,
        due,
        inflight,
        records,
    })
}

/// Ports that other live nodes report not stopped, as `port on node`.
async fn ports_running_elsewhere(state: &AdminState) -> Vec<String> {
    let this = &state.supervisor.node().id;
    let nodes = match state.store.nodes().await {
        Ok(nodes) => nodes,
        Err(e) => return vec![format!("perhaps others (the nodes cannot be read: {e})")],
    };
    nodes
        .into_iter()
        .filter(|(id, _, _)| id != this)
        .filter_map(|(_, _, body)| serde_json::from_str::<crate::supervisor::NodeBeat>(&body?).ok())
        .flat_map(|beat| {
            beat.ports
                .into_iter()
                .filter(|p| p.state != PortState::Stopped)
                .map(move |p| format!("{} on {}", p.name, beat.id))
        })
        .collect()
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

/// Server-Sent Events: every port's counters once a second, for as long as the session
/// that opened the stream lives (sign-out, expiry or a role change end it within a
/// second), and at most `[console] streams_per_session` at once per session.
fn events(state: &AdminState, session: &Session) -> Reply {
    let config = state.config();
    let Some(slot) = state.limits.stream(&session.token, &config) else {
        crate::metrics::metrics()
            .admin_refused
            .get_or_create(&crate::metrics::labels(&[("reason", "streams")]))
            .inc();
        return crate::admin::json_error(
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
                    let mut port = serde_json::to_value(counts.get(i).copied().unwrap_or_default())
                        .unwrap_or_default();
                    port["name"] = view.name.into();
                    port["state"] = view.state.as_str().into();
                    port["connections"] = view.connections.into();
                    port["connected"] = view.connected.into();
                    port["refused"] = view.refused.into();
                    port
                })
                .collect();
            let (due, inflight) = store.queue_depths().await.unwrap_or((0, 0));
            let event = serde_json::json!({"ports": ports, "due": due, "inflight": inflight});
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

// ---------------------------------------------------------------- push log

struct Row {
    id: u64,
    status: String,
    cells: Vec<String>,
}

struct Choice {
    value: String,
    selected: bool,
}

#[derive(Template)]
#[template(path = "log.html")]
struct LogPageView {
    chrome: Option<Chrome>,
    fields: Vec<Choice>,
    statuses: Vec<Choice>,
    q: String,
    from: String,
    to: String,
    oldest: bool,
    columns: &'static [&'static str],
    rows: Vec<Row>,
    page: u64,
    pages: u64,
    total: String,
    note: String,
    error: String,
    query_base: String,
    prev: Option<u64>,
    next: Option<u64>,
    took_ms: String,
}

/// The log query from the request, and the same query string without `page`.
fn log_query(
    input: &Input,
    zone: chrono_tz::Tz,
    sight: Sight,
) -> Result<(LogQuery, String), String> {
    let field = input.get("field").to_owned();
    view::may_search(&field, input.get("q"), sight)?;
    let parse_time = |key: &str| -> Result<Option<i64>, String> {
        let text = input.get(key).trim().replace('T', " ");
        if text.is_empty() {
            return Ok(None);
        }
        let naive = chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M")
            .or_else(|_| chrono::NaiveDateTime::parse_from_str(&text, "%Y-%m-%d %H:%M:%S"))
            .map_err(|_| format!("{key} must look like 2026-11-25 09:30"))?;
        naive
            .and_local_timezone(zone)
            .earliest()
            .map(|t| Some(t.timestamp_millis()))
            .ok_or_else(|| format!("{key} does not exist in {zone}"))
    };
    let status = input.get("status");
    let query = LogQuery {
        field: (!field.is_empty()).then_some(field.clone()),
        value: input.get("q").to_owned(),
        status: STATUSES.contains(&status).then(|| status.to_owned()),
        from_ms: parse_time("from")?,
        to_ms: parse_time("to")?,
        oldest_first: input.get("order") == "oldest",
        page: input.get("page").parse().unwrap_or(1).clamp(1, MAX_PAGE),
        per_page: PER_PAGE,
    };
    let base: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            ["field", "q", "status", "from", "to", "order"]
                .iter()
                .map(|k| (*k, input.get(k)))
                .filter(|(_, v)| !v.is_empty()),
        )
        .finish();
    Ok((query, base))
}

/// A cell of a record already seen through the session's eyes ([`view::record`]).
fn cell(record: &Value, column: &str) -> String {
    match &record[column] {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

async fn log_page(state: &AdminState, session: &Session, input: &Input) -> Reply {
    let config = state.config();
    let mut page = LogPageView {
        chrome: Some(Chrome::new(session, "log")),
        fields: searchable_fields()
            .into_iter()
            .map(|f| Choice {
                value: f.to_owned(),
                selected: input.get("field") == f,
            })
            .collect(),
        statuses: STATUSES
            .iter()
            .map(|s| Choice {
                value: (*s).to_owned(),
                selected: input.get("status") == *s,
            })
            .collect(),
        q: input.get("q").to_owned(),
        from: input.get("from").to_owned(),
        to: input.get("to").to_owned(),
        oldest: input.get("order") == "oldest",
        columns: LOG_COLUMNS,
        rows: Vec::new(),
        page: 1,
        pages: 1,
        total: "0".into(),
        note: String::new(),
        error: String::new(),
        query_base: String::new(),
        prev: None,
        next: None,
        took_ms: String::new(),
    };
    let sight = session.sight();
    let (query, base) = match log_query(input, config.zone(), sight) {
        Ok(q) => q,
        Err(e) => {
            page.error = e;
            return render(&page);
        }
    };
    let started = std::time::Instant::now();
    match state.store.log_page(&query).await {
        Ok(result) => {
            page.took_ms = format!("{:.1}", started.elapsed().as_secs_f64() * 1000.0);
            let count = result.total.count();
            page.pages = count.div_ceil(PER_PAGE).max(1);
            page.page = query.page;
            page.total = count.to_string();
            if let Total::AtLeast { scanned, .. } = result.total {
                page.total = format!("{count}+");
                page.note = format!(
                    "Substring search looked at the {scanned} {} records; narrow it with a time range to look further.",
                    if query.oldest_first {
                        "oldest"
                    } else {
                        "newest"
                    }
                );
                page.pages = page
                    .pages
                    .max(query.page + u64::from(result.rows.len() as u64 == PER_PAGE));
            }
            page.prev = (query.page > 1).then(|| query.page - 1);
            page.next = (query.page < page.pages).then(|| query.page + 1);
            page.rows = result
                .rows
                .iter()
                .map(|r| {
                    let seen = view::record(r, sight);
                    Row {
                        id: seen["id"].as_u64().unwrap_or(0),
                        status: seen["status"].as_str().unwrap_or("").to_owned(),
                        cells: LOG_COLUMNS.iter().map(|c| cell(&seen, c)).collect(),
                    }
                })
                .collect();
        }
        Err(e) => page.error = e.to_string(),
    }
    page.query_base = base;
    render(&page)
}

async fn log_csv(state: &AdminState, session: &Session, input: &Input) -> Reply {
    let config = state.config();
    let sight = session.sight();
    let (mut query, _) = match log_query(input, config.zone(), sight) {
        Ok(q) => q,
        Err(e) => return error_page(Some(session), StatusCode::BAD_REQUEST, &e),
    };
    query.per_page = 1000;
    let mut out = String::from("\u{feff}id,status,");
    out.push_str(&LOG_COLUMNS.join(","));
    out.push_str("\r\n");
    let mut written = 0;
    for page in 1.. {
        query.page = page;
        let result = match state.store.log_page(&query).await {
            Ok(r) => r,
            Err(e) => {
                return error_page(
                    Some(session),
                    StatusCode::SERVICE_UNAVAILABLE,
                    &e.to_string(),
                );
            }
        };
        for record in &result.rows {
            let seen = view::record(record, sight);
            let mut fields = vec![seen["id"].to_string(), cell(&seen, "status")];
            fields.extend(LOG_COLUMNS.iter().map(|c| cell(&seen, c)));
            let line: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
            out.push_str(&line.join(","));
            out.push_str("\r\n");
            written += 1;
        }
        // A substring search rescans its budget for every page: one page is the limit.
        let bounded = matches!(result.total, Total::AtLeast { .. })
            || query
                .field
                .as_deref()
                .is_some_and(|f| SUBSTRING_FIELDS.contains(&f));
        if (result.rows.len() as u64) < query.per_page || written >= CSV_LIMIT || bounded {
            break;
        }
    }
    let mut reply = with_type(
        StatusCode::OK,
        "text/csv; charset=utf-8",
        crate::admin::full(out),
    );
    reply.headers_mut().insert(
        hyper::header::CONTENT_DISPOSITION,
        HeaderValue::from_static("attachment; filename=\"pushgate-log.csv\""),
    );
    reply
}

/// Quote a CSV field; a leading = + - @ TAB or CR is defused so a spreadsheet never
/// takes the cell for a formula.
fn csv_field(text: &str) -> String {
    let defused = if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{text}")
    } else {
        text.to_owned()
    };
    format!("\"{}\"", defused.replace('"', "\"\""))
}

#[derive(Template)]
#[template(path = "flush.html")]
struct FlushPage {
    chrome: Option<Chrome>,
    records: u64,
    done: Option<u64>,
}

async fn flush(
    state: &AdminState,
    session: &Session,
    method: &Method,
    input: &Input,
    peer: SocketAddr,
) -> Reply {
    if !session.may(Role::Admin) {
        return error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            "Only admins may flush the log.",
        );
    }
    let records = state.store.record_count().await.unwrap_or(0);
    if *method == Method::GET {
        return render(&FlushPage {
            chrome: Some(Chrome::new(session, "log")),
            records,
            done: None,
        });
    }
    let mut running: Vec<String> = state
        .supervisor
        .ports()
        .await
        .into_iter()
        .filter(|p| p.state != PortState::Stopped)
        .map(|p| p.name)
        .collect();
    running.extend(ports_running_elsewhere(state).await);
    if !running.is_empty() {
        return error_page(
            Some(session),
            StatusCode::CONFLICT,
            &format!(
                "Stop every port before flushing, so that nothing arrives meanwhile. Still running: {}.",
                running.join(", ")
            ),
        );
    }
    if input.get("confirm") != records.to_string() {
        return error_page(
            Some(session),
            StatusCode::CONFLICT,
            "The number of records changed since the confirmation page; look again before flushing.",
        );
    }
    state
        .flushing
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let flushed = state.store.flush().await;
    state
        .flushing
        .store(false, std::sync::atomic::Ordering::SeqCst);
    match flushed {
        Ok(keys) => {
            let addr = peer.ip().to_string();
            let detail = format!("{records} records, {keys} keys");
            let _ = state
                .store
                .audit(&[
                    ("who", &session.user),
                    ("action", "flush"),
                    ("target", &detail),
                    ("addr", &addr),
                ])
                .await;
            render(&FlushPage {
                chrome: Some(Chrome::new(session, "log")),
                records,
                done: Some(keys),
            })
        }
        Err(e) => error_page(
            Some(session),
            StatusCode::SERVICE_UNAVAILABLE,
            &e.to_string(),
        ),
    }
}

// ---------------------------------------------------------------- one push

struct Field {
    name: String,
    value: String,
}

struct Attempt {
    at: String,
    attempt: String,
    http: String,
    outcome: String,
    answer: String,
}

#[derive(Template)]
#[template(path = "push.html")]
struct PushPage {
    chrome: Option<Chrome>,
    id: u64,
    status: String,
    fields: Vec<Field>,
    decision: String,
    attempts: Vec<Attempt>,
    can_resend: bool,
    can_reroute: bool,
    can_hold: bool,
    held: bool,
    notice: String,
}

async fn push_page(state: &AdminState, session: &Session, id: &str, notice: Option<&str>) -> Reply {
    let config = state.config();
    let Ok(id) = id.parse::<u64>() else {
        return error_page(Some(session), StatusCode::NOT_FOUND, "No such push.");
    };
    let record = match state.store.record(id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return error_page(
                Some(session),
                StatusCode::NOT_FOUND,
                &format!("Push {id} is not stored (flushed or past retention)."),
            );
        }
        Err(e) => {
            return error_page(
                Some(session),
                StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
            );
        }
    };
    let zone = config.zone();
    let record = view::record(&record, session.sight());
    let mut fields: Vec<Field> = record
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !matches!(k.as_str(), "history" | "decision"))
                .map(|k| {
                    let mut value = cell(&record, k);
                    if matches!(k.as_str(), "received_at" | "due_at")
                        && let Some(ms) = record[k].as_i64()
                    {
                        value =
                            format!("{} ({ms})", format_local(ms, zone, "%Y-%m-%d %H:%M:%S%.3f"));
                    }
                    Field {
                        name: k.clone(),
                        value,
                    }
                })
                .collect()
        })
        .unwrap_or_default();
    fields.sort_by_key(|f| !LOG_COLUMNS.contains(&f.name.as_str()));
    let attempts = record["history"]
        .as_array()
        .map(|list| {
            list.iter()
                .map(|a| Attempt {
                    at: a["at"]
                        .as_i64()
                        .map(|ms| format_local(ms, zone, "%Y-%m-%d %H:%M:%S%.3f"))
                        .unwrap_or_default(),
                    attempt: a["attempt"].to_string(),
                    http: a["http"].to_string(),
                    outcome: a["outcome"].as_str().unwrap_or("").to_owned(),
                    answer: a["answer"].as_str().unwrap_or("").to_owned(),
                })
                .collect()
        })
        .unwrap_or_default();
    let status = record["status"].as_str().unwrap_or("").to_owned();
    let has_push = !record["decision"]["push"].is_null();
    render(&PushPage {
        chrome: Some(Chrome::new(session, "log")),
        id,
        can_resend: session.may(Role::Operator)
            && has_push
            && matches!(status.as_str(), "sent" | "failed"),
        can_hold: session.may(Role::Operator),
        can_reroute: session.may(Role::Operator)
            && matches!(status.as_str(), "script_error" | "dropped"),
        held: record["legal_hold"] == true,
        status,
        fields,
        decision: serde_json::to_string_pretty(&record["decision"]).unwrap_or_default(),
        attempts,
        notice: notice.unwrap_or("").to_owned(),
    })
}

/// Run a `script_error` or `dropped` record through its port's current script again
/// (after the script was fixed), storing the new decision as if it had just arrived.
async fn reroute(state: &AdminState, session: &Session, id: &str, peer: SocketAddr) -> Reply {
    if !session.may(Role::Operator) {
        return error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            "Only operators may route a push again.",
        );
    }
    let Ok(num) = id.parse::<u64>() else {
        return error_page(Some(session), StatusCode::NOT_FOUND, "No such push.");
    };
    let (text, record) = match state.store.record_text(num).await {
        Ok(Some(found)) => found,
        Ok(None) => return error_page(Some(session), StatusCode::NOT_FOUND, "No such push."),
        Err(e) => {
            return error_page(
                Some(session),
                StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
            );
        }
    };
    let old: crate::push::Status = match serde_json::from_value(record["status"].clone()) {
        Ok(s @ (crate::push::Status::ScriptError | crate::push::Status::Dropped)) => s,
        _ => {
            return error_page(
                Some(session),
                StatusCode::CONFLICT,
                "Only a push that ended script_error or dropped can be routed again.",
            );
        }
    };
    let worker = record["worker"].as_str().unwrap_or_default().to_owned();
    let route = match worker.strip_prefix("api-") {
        Some(key) => state
            .api_routes
            .read()
            .ok()
            .and_then(|r| r.get(key).cloned()),
        None => state.supervisor.route_of(&worker).await,
    };
    let Some(route) = route else {
        return error_page(
            Some(session),
            StatusCode::CONFLICT,
            &format!("{worker} has no script that compiles right now."),
        );
    };
    let fields = crate::store::record::message_fields(&record);
    let message = crate::ingest::Message {
        unique_key: record["uniqueKey"].as_str().unwrap_or_default().to_owned(),
        fields,
    };
    let engine = state.engine.clone();
    let routed = match tokio::task::spawn_blocking(move || {
        crate::ingest::route_message(&engine, &route, &worker, message)
    })
    .await
    {
        Ok(r) => r,
        Err(e) => {
            return error_page(
                Some(session),
                StatusCode::INTERNAL_SERVER_ERROR,
                &format!("routing failed: {e}"),
            );
        }
    };
    let mut updated = record.clone();
    if let Some(map) = updated.as_object_mut() {
        map.insert("status".into(), routed.status.as_str().into());
        for (key, value) in [
            ("decision", routed.decision.clone()),
            ("due_at", routed.due_ms.map(Value::from)),
            ("error", routed.error.clone().map(Value::from)),
        ] {
            match value {
                Some(v) => map.insert(key.into(), v),
                None => map.remove(key),
            };
        }
    }
    match state
        .store
        .requeue(num, &text, &updated, old, routed.status, routed.due_ms)
        .await
    {
        Ok(true) => {
            actions::audit(
                state,
                &session.user,
                "route again",
                &format!("push {num}"),
                peer,
            )
            .await;
            let notice = format!("Routed again: now {}.", routed.status.as_str());
            push_page(state, session, id, Some(&notice)).await
        }
        Ok(false) => {
            push_page(
                state,
                session,
                id,
                Some("Not routed again: the push changed meanwhile."),
            )
            .await
        }
        Err(e) => error_page(
            Some(session),
            StatusCode::SERVICE_UNAVAILABLE,
            &e.to_string(),
        ),
    }
}

async fn resend(state: &AdminState, session: &Session, id: &str, peer: SocketAddr) -> Reply {
    if !session.may(Role::Operator) {
        return error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            "Only operators may resend.",
        );
    }
    let Ok(num) = id.parse::<u64>() else {
        return error_page(Some(session), StatusCode::NOT_FOUND, "No such push.");
    };
    match state.store.resend(num, now_ms()).await {
        Ok(Resend::Queued) => {
            actions::audit(state, &session.user, "resend", &format!("push {num}"), peer).await;
            push_page(state, session, id, Some("Queued to be sent again.")).await
        }
        Ok(Resend::NotResendable) => error_page(
            Some(session),
            StatusCode::CONFLICT,
            "Only a sent or failed push with a send decision can be resent.",
        ),
        Ok(Resend::Busy) => {
            push_page(
                state,
                session,
                id,
                Some("Not resent: the push is queued or being sent right now."),
            )
            .await
        }
        Ok(Resend::Missing) => error_page(Some(session), StatusCode::NOT_FOUND, "No such push."),
        Err(e) => error_page(
            Some(session),
            StatusCode::SERVICE_UNAVAILABLE,
            &e.to_string(),
        ),
    }
}

// ---------------------------------------------------------------- scripts

struct ScriptRow {
    port: String,
    path: String,
    state: &'static str,
    error: String,
}

#[derive(Template)]
#[template(path = "scripts.html")]
struct ScriptsPage {
    chrome: Option<Chrome>,
    scripts: Vec<ScriptRow>,
}

async fn scripts_page(state: &AdminState, session: &Session) -> Reply {
    let scripts = state
        .supervisor
        .ports()
        .await
        .into_iter()
        .map(|v| ScriptRow {
            state: v.state.as_str(),
            path: v.script.clone(),
            error: v.script_error.unwrap_or_default(),
            port: v.name,
        })
        .collect();
    render(&ScriptsPage {
        chrome: Some(Chrome::new(session, "scripts")),
        scripts,
    })
}

struct Version {
    name: String,
    when: String,
}

#[derive(Template)]
#[template(path = "script.html")]
struct ScriptPage {
    chrome: Option<Chrome>,
    port: String,
    path: String,
    source: String,
    sample: String,
    record_id: String,
    errors: Vec<String>,
    result: String,
    notice: String,
    versions: Vec<Version>,
}

/// Earlier versions live beside the script: `<script>.versions/<unix ms>.rhai`.
fn versions_dir(script: &Path) -> PathBuf {
    let mut name = script
        .file_name()
        .map(|n| n.to_os_string())
        .unwrap_or_default();
    name.push(".versions");
    script.with_file_name(name)
}

fn list_versions(script: &Path, zone: chrono_tz::Tz) -> Vec<Version> {
    let mut names: Vec<String> = std::fs::read_dir(versions_dir(script))
        .map(|dir| {
            dir.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.ends_with(".rhai"))
                .collect()
        })
        .unwrap_or_default();
    names.sort_by(|a, b| b.cmp(a));
    names
        .into_iter()
        .map(|name| {
            let when = name
                .trim_end_matches(".rhai")
                .parse::<i64>()
                .map(|ms| format_local(ms, zone, "%Y-%m-%d %H:%M:%S"))
                .unwrap_or_default();
            Version { name, when }
        })
        .collect()
}

/// Keep the current file as a version, then replace it atomically (write + rename).
fn save_script(script: &Path, source: &str, keep: usize) -> std::io::Result<()> {
    let dir = versions_dir(script);
    std::fs::create_dir_all(&dir)?;
    if script.exists() {
        std::fs::copy(script, dir.join(format!("{}.rhai", now_ms())))?;
    }
    let tmp = script.with_extension(format!("rhai.saving-{}", rand::random::<u64>()));
    std::fs::write(&tmp, source)?;
    std::fs::rename(&tmp, script)?;
    let mut old: Vec<PathBuf> = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    old.sort();
    let excess = old.len().saturating_sub(keep);
    for path in &old[..excess] {
        std::fs::remove_file(path)?;
    }
    Ok(())
}

async fn script_page(
    state: &AdminState,
    session: &Session,
    port: &str,
    method: &Method,
    input: &Input,
    peer: SocketAddr,
) -> Reply {
    let config = state.config();
    let Some(port_config) = config.port(port).cloned() else {
        return error_page(
            Some(session),
            StatusCode::NOT_FOUND,
            &format!("No port named {port}."),
        );
    };
    let path = config.resolve(&port_config.script);
    let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
    let mut page = ScriptPage {
        chrome: Some(Chrome::new(session, "scripts")),
        port: port.to_owned(),
        path: path.display().to_string(),
        source: on_disk.clone(),
        sample: SAMPLE.to_owned(),
        record_id: String::new(),
        errors: Vec::new(),
        result: String::new(),
        notice: String::new(),
        versions: list_versions(&path, config.zone()),
    };
    if *method == Method::GET {
        return render(&page);
    }
    let action = input.get("action");
    let restore = input.get("restore");
    page.source = if action == "restore" {
        let file = versions_dir(&path).join(restore);
        match (
            restore.ends_with(".rhai") && !restore.contains('/'),
            std::fs::read_to_string(&file),
        ) {
            (true, Ok(text)) => text,
            _ => return error_page(Some(session), StatusCode::NOT_FOUND, "No such version."),
        }
    } else {
        input.get("source").replace("\r\n", "\n")
    };
    page.sample = input.get("sample").to_owned();
    page.record_id = input.get("record").to_owned();
    let shown = path.display().to_string();
    let compiled = state.engine.compile(&shown, &page.source);
    match (&compiled, action) {
        (Err(e), _) => page.errors.push(e.to_string()),
        (Ok(_), "check") => page.notice = "Compiles.".into(),
        (Ok(route), "try") => {
            // A script can print any field it is given, so Try is for operators and up.
            if !session.may(Role::Operator) {
                return error_page(
                    Some(session),
                    StatusCode::FORBIDDEN,
                    "Only operators may try scripts.",
                );
            }
            page.result = match try_message(state, &page.sample, &page.record_id).await {
                Ok(msg) => {
                    let engine = state.engine.clone();
                    let route = route.clone();
                    let decided =
                        tokio::task::spawn_blocking(move || engine.route(&route, &msg, now_ms()))
                            .await;
                    match decided {
                        Ok(Ok(decision)) => {
                            serde_json::to_string_pretty(&decision).unwrap_or_default()
                        }
                        Ok(Err(e)) => format!("script_error: {shown}:{e}"),
                        Err(e) => format!("the script could not run: {e}"),
                    }
                }
                Err(e) => e,
            };
        }
        (Ok(_), "save" | "restore") => {
            if !session.may(Role::Admin) {
                return error_page(
                    Some(session),
                    StatusCode::FORBIDDEN,
                    "Only admins may change scripts.",
                );
            }
            let _one_save_at_a_time = state.script_saves.lock().await;
            if let Err(e) = save_script(&path, &page.source, config.console.script_versions) {
                return error_page(
                    Some(session),
                    StatusCode::INTERNAL_SERVER_ERROR,
                    &format!("Saving {shown}: {e}"),
                );
            }
            match state.supervisor.reload_script(&config, port).await {
                Ok(()) => {
                    page.notice = if action == "save" {
                        "Saved; the port routes with it from the next message.".into()
                    } else {
                        format!(
                            "Restored {restore}; the port routes with it from the next message."
                        )
                    }
                }
                Err(e) => page.errors.push(e.to_string()),
            }
            let addr = peer.ip().to_string();
            let what = if action == "save" {
                "script save".to_owned()
            } else {
                format!("script restore {restore}")
            };
            let _ = state
                .store
                .audit(&[
                    ("who", &session.user),
                    ("action", &what),
                    ("target", port),
                    ("addr", &addr),
                ])
                .await;
            page.versions = list_versions(&path, config.zone());
        }
        _ => {}
    }
    render(&page)
}

const SAMPLE: &str = r#"{"uniqueKey": "TRY-0001", "sndn_rsev_hour": "", "csno": "1234567890", "device_id": "fcm-token-sample", "msg_title": "이체 완료", "msg_contents": "10,000원이 입금되었습니다", "D_servicename": "TRF", "push_grp_id": "", "cust_telno": "01012345678"}"#;

/// The message to try a script on: a stored record (without pushgate's own fields)
/// or pasted JSON.
async fn try_message(
    state: &AdminState,
    sample: &str,
    record: &str,
) -> Result<serde_json::Map<String, Value>, String> {
    if !record.trim().is_empty() {
        let id: u64 = record
            .trim()
            .parse()
            .map_err(|_| "the record id must be a number".to_owned())?;
        let stored = state
            .store
            .record(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("record {id} is not stored"))?;
        return Ok(crate::store::record::message_fields(&stored));
    }
    match serde_json::from_str::<Value>(sample) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the sample must be a JSON object".into()),
        Err(e) => Err(format!("the sample is not valid JSON: {e}")),
    }
}

struct DiffLine {
    kind: &'static str,
    text: String,
}

#[derive(Template)]
#[template(path = "version.html")]
struct VersionPage {
    chrome: Option<Chrome>,
    port: String,
    version: String,
    when: String,
    lines: Vec<DiffLine>,
}

async fn version_page(state: &AdminState, session: &Session, port: &str, version: &str) -> Reply {
    let config = state.config();
    let Some(port_config) = config.port(port) else {
        return error_page(
            Some(session),
            StatusCode::NOT_FOUND,
            &format!("No port named {port}."),
        );
    };
    let path = config.resolve(&port_config.script);
    if !version.ends_with(".rhai") || version.contains('/') || version.contains("..") {
        return error_page(Some(session), StatusCode::NOT_FOUND, "No such version.");
    }
    let Ok(old) = std::fs::read_to_string(versions_dir(&path).join(version)) else {
        return error_page(Some(session), StatusCode::NOT_FOUND, "No such version.");
    };
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    let diff = similar::TextDiff::from_lines(&old, &current);
    let lines = diff
        .iter_all_changes()
        .map(|change| DiffLine {
            kind: match change.tag() {
                similar::ChangeTag::Delete => "del",
                similar::ChangeTag::Insert => "ins",
                similar::ChangeTag::Equal => "same",
            },
            text: change.to_string_lossy().trim_end_matches('\n').to_owned(),
        })
        .collect();
    let when = version
        .trim_end_matches(".rhai")
        .parse::<i64>()
        .map(|ms| format_local(ms, config.zone(), "%Y-%m-%d %H:%M:%S"))
        .unwrap_or_default();
    render(&VersionPage {
        chrome: Some(Chrome::new(session, "scripts")),
        port: port.to_owned(),
        version: version.to_owned(),
        when,
        lines,
    })
}

// ---------------------------------------------------------------- audit

struct AuditRow {
    when: String,
    who: String,
    action: String,
    target: String,
    addr: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    chrome: Option<Chrome>,
    who: String,
    action: String,
    rows: Vec<AuditRow>,
    older: String,
}

async fn audit_page(state: &AdminState, session: &Session, input: &Input) -> Reply {
    let config = state.config();
    let who = input.get("who").trim().to_owned();
    let action = input.get("action").trim().to_owned();
    let mut rows = Vec::new();
    let mut before = Some(input.get("before").to_owned()).filter(|b| !b.is_empty());
    let mut older = String::new();
    // Walk back in chunks until a page of matches (bounded: 20 chunks).
    for _ in 0..20 {
        let entries = match state.store.audit_entries(before.as_deref(), 500).await {
            Ok(e) => e,
            Err(e) => {
                return error_page(
                    Some(session),
                    StatusCode::SERVICE_UNAVAILABLE,
                    &e.to_string(),
                );
            }
        };
        let exhausted = entries.len() < 500;
        for (id, fields) in entries {
            before = Some(id.clone());
            let get = |k: &str| {
                fields
                    .iter()
                    .find(|(f, _)| f == k)
                    .map(|(_, v)| v.clone())
                    .unwrap_or_default()
            };
            let row = AuditRow {
                when: id
                    .split('-')
                    .next()
                    .and_then(|ms| ms.parse::<i64>().ok())
                    .map(|ms| format_local(ms, config.zone(), "%Y-%m-%d %H:%M:%S"))
                    .unwrap_or_default(),
                who: get("who"),
                action: get("action"),
                target: get("target"),
                addr: get("addr"),
            };
            let matches = (who.is_empty() || row.who.contains(&who))
                && (action.is_empty() || row.action.contains(&action));
            if matches {
                rows.push(row);
                if rows.len() == 100 {
                    older = id;
                    break;
                }
            }
        }
        if rows.len() == 100 || exhausted {
            break;
        }
    }
    render(&AuditPage {
        chrome: Some(Chrome::new(session, "audit")),
        who,
        action,
        rows,
        older,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("이체 \"완료\""), "\"이체 \"\"완료\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn sparkline_scales_to_the_peak() {
        let (points, peak) = sparkline(&[0, 5, 10]);
        assert_eq!(peak, 10);
        assert_eq!(points, "0.0,27.0 60.0,14.5 120.0,2.0");
        assert_eq!(sparkline(&[0, 0]).0, "0.0,27.0 120.0,27.0");
    }

    #[test]
    fn csv_defuses_tab_and_carriage_return_too() {
        assert_eq!(csv_field("\t=1+1"), "\"'\t=1+1\"");
        assert_eq!(csv_field("\r=1+1"), "\"'\r=1+1\"");
        assert_eq!(csv_field("plain"), "\"plain\"");
    }
}
