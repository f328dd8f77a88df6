//! The JSON API. Systems call it with an API key (`Authorization: Bearer`); the
//! console's own JavaScript with its session cookie plus `X-CSRF-Token` on POST.
//!
//! - `GET /api/v1/ports`, `GET /api/v1/ports/{name}` (read)
//! - `POST /api/v1/ports/{name}/start|stop|restart` (control)
//! - `GET /api/v1/apps`, `GET /api/v1/queues`: each app's state, each due queue's depth (read)
//! - `POST /api/v1/pushes` one message or an array of up to 1,000 (ingest, key only)
//! - `GET /api/v1/pushes/{id}`, `GET /api/v1/pushes?field=value&status=…&page=…` (read)
//! - `POST|DELETE /api/v1/pushes/{id}/hold` legal hold on or off (control)
//! - `POST /api/v1/receipts` up to 1,000 delivery receipts (receipt, key only; see
//!   `admin::receipts`)
//! - `GET|PUT /api/v1/consents/{csno}`, `POST /api/v1/consents`: ad consents (consent;
//!   see `consents.rs`)

use std::net::SocketAddr;

use hyper::body::Incoming;
use hyper::header::{CONTENT_TYPE, WWW_AUTHENTICATE};
use hyper::{Method, Request, StatusCode};
use serde_json::{Value, json};

use super::actions::{control_port, set_hold};
use super::auth::{self, Session};
use super::delivery;
use super::receipts::{self, MAX_RECEIPTS, MAX_RECEIPTS_BODY};
use super::view::{self, Sight};
use super::{AdminState, Reply, json as reply_json, json_error, read_body};
use crate::clock::now_ms;
use crate::config::{Role, Scope};
use crate::ingest;
use crate::push::Lane;
use crate::push::queue::is_app_name;
use crate::store::log::{LogQuery, ReceiptFilter, searchable_fields};
use crate::store::receipts::ReceiptIn;
use crate::supervisor::SupervisorError;

/// Largest body `POST /api/v1/pushes` takes.
pub const MAX_INGEST_BODY: usize = 4 * 1024 * 1024;
/// Most messages in one `POST /api/v1/pushes`.
pub const MAX_BATCH: usize = 1000;

pub(super) async fn handle(state: &AdminState, req: Request<Incoming>, peer: SocketAddr) -> Reply {
    let path = req.uri().path().to_owned();
    let method = req.method().clone();
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let needed = match (&method, segments.as_slice()) {
        (&Method::GET, ["api", "v1", "ports"] | ["api", "v1", "ports", _]) => Scope::Read,
        (&Method::GET, ["api", "v1", "cluster" | "apps" | "queues"]) => Scope::Read,
        (&Method::POST, ["api", "v1", "ports", _, "start" | "stop" | "restart"]) => Scope::Control,
        (&Method::POST, ["api", "v1", "pushes"]) => Scope::Ingest,
        (&Method::GET, ["api", "v1", "pushes"] | ["api", "v1", "pushes", _]) => Scope::Read,
        (&Method::POST | &Method::DELETE, ["api", "v1", "pushes", _, "hold"]) => Scope::Control,
        (&Method::POST, ["api", "v1", "receipts"]) => Scope::Receipt,
        (&Method::GET | &Method::PUT, ["api", "v1", "consents", _])
        | (&Method::POST, ["api", "v1", "consents"]) => Scope::Consent,
        (
            _,
            ["api", "v1", "ports" | "pushes" | "consents", ..]
            | ["api", "v1", "cluster" | "apps" | "queues" | "receipts"],
        ) => {
            return json_error(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{method} is not allowed on {path}"),
            );
        }
        _ => return json_error(StatusCode::NOT_FOUND, format!("no such API: {path}")),
    };
    // Pushes are for systems: only API keys may read them (masked unless `personal`).
    let session_ok = matches!(
        segments.get(2),
        Some(&"ports" | &"cluster" | &"apps" | &"queues")
    );
    let (caller, sight) = match authorize(state, &req, needed, session_ok).await {
        Ok(c) => c,
        Err(reply) => return reply,
    };
    let query: Vec<(String, String)> =
        form_urlencoded::parse(req.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if needed == Scope::Ingest {
        return ingest(state, req, &caller).await;
    }
    if needed == Scope::Receipt {
        return receipts(state, req).await;
    }
    if needed == Scope::Consent {
        let body = match read_body(state, req.into_body(), super::consents::MAX_CONSENT_BODY).await
        {
            Ok(b) => b,
            Err(reply) => return reply,
        };
        // The customer number as sent, percent-escapes decoded (a client may escape any
        // character of a path segment).
        let path_csno = match segments.as_slice() {
            [_, _, _, csno] => match percent_encoding::percent_decode_str(csno).decode_utf8() {
                Ok(csno) => Some(csno.into_owned()),
                Err(_) => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        "the customer number in the path is not UTF-8 once decoded",
                    );
                }
            },
            _ => None,
        };
        return match (&method, path_csno) {
            (&Method::GET, Some(csno)) => super::consents::get(state, &csno, &caller, peer).await,
            (&Method::PUT, Some(csno)) => {
                super::consents::set(state, Some(&csno), &body, &caller).await
            }
            _ => super::consents::set(state, None, &body, &caller).await,
        };
    }
    if let Err(reply) = read_body(state, req.into_body(), 64 * 1024).await {
        return reply;
    }
    let sup = &state.supervisor;
    match segments.as_slice() {
        ["api", "v1", "ports"] => reply_json(StatusCode::OK, &sup.ports().await),
        ["api", "v1", "ports", name] => match sup.port(name).await {
            Some(view) => reply_json(StatusCode::OK, &view),
            None => json_error(StatusCode::NOT_FOUND, format!("no port named {name:?}")),
        },
        ["api", "v1", "ports", name, action] => {
            match control_port(state, name, action, &caller, peer).await {
                Ok(view) => reply_json(StatusCode::OK, &view),
                Err(e @ SupervisorError::UnknownPort(_)) => {
                    json_error(StatusCode::NOT_FOUND, e.to_string())
                }
                Err(e) => json_error(StatusCode::CONFLICT, e.to_string()),
            }
        }
        ["api", "v1", "cluster"] => cluster(state).await,
        ["api", "v1", "apps"] => reply_json(
            StatusCode::OK,
            &delivery::app_views(&state.apps, &state.config(), sight),
        ),
        ["api", "v1", "queues"] => {
            match delivery::queue_views(&state.store, &state.config(), now_ms()).await {
                Ok(queues) => reply_json(StatusCode::OK, &queues),
                Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            }
        }
        ["api", "v1", "pushes"] => search(state, &query, sight).await,
        ["api", "v1", "pushes", id] => match id.parse::<u64>() {
            Ok(id) => match state.store.record(id).await {
                Ok(Some(record)) => reply_json(StatusCode::OK, &view::record(&record, sight)),
                Ok(None) => json_error(StatusCode::NOT_FOUND, format!("no push {id}")),
                Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
            },
            Err(_) => json_error(StatusCode::BAD_REQUEST, format!("{id:?} is not a push id")),
        },
        ["api", "v1", "pushes", id, "hold"] => {
            let Ok(id) = id.parse::<u64>() else {
                return json_error(StatusCode::BAD_REQUEST, format!("{id:?} is not a push id"));
            };
            match set_hold(state, id, method == Method::POST, &caller, peer).await {
                Ok(record) => reply_json(StatusCode::OK, &view::record(&record, sight)),
                Err((status, message)) => json_error(status, message),
            }
        }
        _ => json_error(StatusCode::NOT_FOUND, format!("no such API: {path}")),
    }
}

/// This node, every node seen in the last day, and Redis's replication picture.
async fn cluster(state: &AdminState) -> Reply {
    let nodes: Vec<Value> = match state.store.nodes().await {
        Ok(nodes) => nodes
            .into_iter()
            .map(|(id, seen_ms, body)| {
                let beat: Option<Value> = body.and_then(|b| serde_json::from_str(&b).ok());
                json!({"id": id, "alive": beat.is_some(), "seen_ms": seen_ms, "heartbeat": beat})
            })
            .collect(),
        Err(e) => return json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    };
    let topology = match state.store.topology().await {
        Ok(t) => serde_json::to_value(t).unwrap_or(Value::Null),
        Err(e) => json!({"error": e.to_string()}),
    };
    reply_json(
        StatusCode::OK,
        &json!({"node": state.supervisor.node().id, "nodes": nodes, "redis": topology}),
    )
}

/// `POST /api/v1/pushes`: the same checks, dedupe, routing and store as a port.
async fn ingest(state: &AdminState, req: Request<Incoming>, caller: &str) -> Reply {
    let is_json = req
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.split(';')
                .next()
                .is_some_and(|t| t.trim().eq_ignore_ascii_case("application/json"))
        });
    if !is_json {
        return json_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "Content-Type must be application/json",
        );
    }
    if state.flushing.load(std::sync::atomic::Ordering::SeqCst) {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the log is being flushed; send again shortly",
        );
    }
    let key_name = caller.trim_start_matches("api:").to_owned();
    let body = match read_body(state, req.into_body(), MAX_INGEST_BODY).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    let value: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                format!("body is not valid JSON: {e}"),
            );
        }
    };
    let (items, single) = match value {
        Value::Object(_) => (vec![value], true),
        Value::Array(items) if items.is_empty() => {
            return json_error(StatusCode::BAD_REQUEST, "the array holds no message");
        }
        Value::Array(items) if items.len() > MAX_BATCH => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} messages in one request; at most {MAX_BATCH}",
                    items.len()
                ),
            );
        }
        Value::Array(items) => (items, false),
        _ => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body must be a message object or an array of them",
            );
        }
    };
    let config = state.config();
    let Some(key) = config.api_keys.iter().find(|k| k.name == key_name) else {
        return json_error(StatusCode::UNAUTHORIZED, "missing or unknown API key");
    };
    let Some(route) = state
        .api_routes
        .read()
        .ok()
        .and_then(|r| r.get(&key.name).cloned())
    else {
        return json_error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("the route script of key {:?} is not compiled", key.name),
        );
    };
    let zone = config.zone();
    let parsed = items
        .into_iter()
        .map(|item| match item {
            Value::Object(map) => ingest::check_message(map, &key.required, zone),
            other => Err(ingest::Refusal {
                key: None,
                error: format!(
                    "each message must be a JSON object, got {}",
                    ingest::json_kind(&other)
                ),
                reason: "json",
            }),
        })
        .collect();
    let origin = ingest::Origin {
        source: key.source(),
        queue: key.queue(),
        kind: key.kind,
    };
    let answered = ingest::store_parsed(
        &state.committer,
        &state.engine,
        &route,
        &state.ads,
        &origin,
        None,
        parsed,
    )
    .await;
    let all_unstored = answered.unstored.is_some();
    let acks = answered.acks;
    let results: Vec<Value> = acks
        .iter()
        .map(|a| serde_json::from_str(&a.to_json()).unwrap_or(Value::Null))
        .collect();
    let status = if all_unstored {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    };
    if single {
        let result = results.into_iter().next().unwrap_or(Value::Null);
        let status = if result["ok"] == true {
            StatusCode::OK
        } else if status == StatusCode::SERVICE_UNAVAILABLE {
            status
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        };
        return reply_json(status, &result);
    }
    let stored = results.iter().filter(|r| r["ok"] == true).count();
    reply_json(
        status,
        &json!({"stored": stored, "refused": results.len() - stored, "results": results}),
    )
}

/// `POST /api/v1/receipts`: a batch of receipts, each answered on its own.
async fn receipts(state: &AdminState, req: Request<Incoming>) -> Reply {
    let body = match read_body(state, req.into_body(), MAX_RECEIPTS_BODY).await {
        Ok(b) => b,
        Err(reply) => return reply,
    };
    // Each item is kept as its text and checked on its own: one bad item is that
    // item's error, and a well-formed one is read without building a JSON tree.
    let items = match serde_json::from_slice::<Vec<&serde_json::value::RawValue>>(&body) {
        Ok(items) if items.is_empty() => {
            return json_error(StatusCode::BAD_REQUEST, "the array holds no receipt");
        }
        Ok(items) if items.len() > MAX_RECEIPTS => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} receipts in one request; at most {MAX_RECEIPTS}",
                    items.len()
                ),
            );
        }
        Ok(items) => items,
        Err(e) => {
            return match serde_json::from_slice::<Value>(&body) {
                Ok(_) => json_error(StatusCode::BAD_REQUEST, "body must be an array of receipts"),
                Err(_) => json_error(
                    StatusCode::BAD_REQUEST,
                    format!("body is not valid JSON: {e}"),
                ),
            };
        }
    };
    let now = now_ms();
    let checked: Vec<receipts::Checked> =
        items.iter().map(|i| receipts::check_raw(i, now)).collect();
    let good: Vec<ReceiptIn> = checked
        .iter()
        .filter_map(|c| c.as_ref().ok())
        .cloned()
        .collect();
    let sources = state.config().sources();
    let recorded = match state.store.record_receipts(&good, &sources, now).await {
        Ok(r) => r,
        Err(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("receipts not recorded, send again: {e}"),
            );
        }
    };
    let mut recorded = good.iter().zip(recorded);
    let results: Vec<receipts::Answer> = checked
        .iter()
        .filter_map(|c| match c {
            Ok(_) => recorded.next().map(|(r, done)| receipts::answer(r, done)),
            Err((key, why)) => Some(receipts::refusal(key, why)),
        })
        .collect();
    reply_json(StatusCode::OK, &receipts::BatchAnswer::new(results))
}

/// `GET /api/v1/pushes?field=value`: the first searchable field given, plus the filters
/// `status`, `app`, `lane`, `receipt` (`none`, `delivered`, `opened`: "sent, no receipt"
/// is `status=sent&receipt=none`) and `fallback` (`{rung}:{outcome}`), `order=oldest`,
/// `page`, `per_page` (≤ 1000).
async fn search(state: &AdminState, query: &[(String, String)], sight: Sight) -> Reply {
    let fields = searchable_fields();
    let mut q = LogQuery {
        page: 1,
        per_page: 100,
        ..Default::default()
    };
    for (k, v) in query {
        match k.as_str() {
            "status" => q.status = Some(v.clone()),
            "app" if is_app_name(v) => q.app = Some(v.clone()),
            "lane" if Lane::parse(v).is_some() => q.lane = Some(v.clone()),
            "fallback" if crate::store::log::parse_fallback_filter(v).is_some() => {
                q.fallback = Some(v.clone())
            }
            "fallback" => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{v:?} is not a fallback filter ({{rung}}:sent|retrying|failed|expired)"
                    ),
                );
            }
            "app" | "lane" => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{v:?} is not {}",
                        if k == "app" {
                            "an app name"
                        } else {
                            "a lane (urgent, normal, bulk)"
                        }
                    ),
                );
            }
            "receipt" => match ReceiptFilter::parse(v) {
                Some(r) => q.receipt = Some(r),
                None => {
                    return json_error(
                        StatusCode::BAD_REQUEST,
                        format!("{v:?} is not a receipt filter (none, delivered, opened)"),
                    );
                }
            },
            "order" => q.oldest_first = v == "oldest",
            "page" => q.page = v.parse().unwrap_or(1).clamp(1, 1_000_000_000),
            "per_page" => q.per_page = v.parse().unwrap_or(100),
            field if fields.contains(&field) && q.field.is_none() => {
                q.field = Some(field.to_owned());
                q.value = v.clone();
            }
            other => {
                return json_error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "{other:?} is not a search parameter (fields: {}; status, app, lane, receipt, order, page, per_page)",
                        fields.join(", ")
                    ),
                );
            }
        }
    }
    if let Some(field) = &q.field
        && let Err(why) = view::may_search(field, &q.value, sight)
    {
        return json_error(StatusCode::FORBIDDEN, why);
    }
    match state.store.log_page(&q).await {
        Ok(page) => {
            let pushes: Vec<_> = page.rows.iter().map(|r| view::record(r, sight)).collect();
            let (total, complete) = match page.total {
                crate::store::log::Total::Exact(n) => (n, true),
                crate::store::log::Total::AtLeast { found, .. } => (found, false),
            };
            reply_json(
                StatusCode::OK,
                &json!({"total": total, "complete": complete, "page": q.page, "pushes": pushes}),
            )
        }
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// An API key with the scope, or (where `session_ok`) a console session with the
/// matching role and, for POST/DELETE, its CSRF token in `X-CSRF-Token`. Returns who
/// is calling and what they may see of a record.
async fn authorize(
    state: &AdminState,
    req: &Request<Incoming>,
    needed: Scope,
    session_ok: bool,
) -> Result<(String, Sight), Reply> {
    let config = state.config();
    if let Some(key) = auth::api_key(req.headers(), &config.api_keys) {
        if !auth::key_allows(key, needed) {
            return Err(json_error(
                StatusCode::FORBIDDEN,
                format!(
                    "API key {:?} lacks the {} scope",
                    key.name,
                    format!("{needed:?}").to_lowercase()
                ),
            ));
        }
        return Ok((format!("api:{}", key.name), auth::key_sight(key)));
    }
    let session: Option<Session> = if !session_ok {
        None
    } else {
        auth::session(&state.store, &config, req.headers(), now_ms()).await
    };
    let Some(session) = session else {
        let mut reply = json_error(StatusCode::UNAUTHORIZED, "missing or unknown API key");
        reply.headers_mut().insert(
            WWW_AUTHENTICATE,
            hyper::header::HeaderValue::from_static("Bearer"),
        );
        return Err(reply);
    };
    if req.method() != Method::GET {
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
    let role = if needed == Scope::Read {
        Role::Viewer
    } else {
        Role::Operator
    };
    if !session.may(role) {
        return Err(json_error(
            StatusCode::FORBIDDEN,
            format!(
                "{} may not do this (needs {})",
                session.role.as_str(),
                role.as_str()
            ),
        ));
    }
    let sight = session.sight();
    Ok((session.user, sight))
}
