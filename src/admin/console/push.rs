//! One push: its page, and what operators may do to it — resend it, route it again
//! through its port's current script, place or release a legal hold.

use std::net::SocketAddr;

use askama::Template;
use hyper::StatusCode;
use serde_json::Value;

use super::{Chrome, Input, cell, error_page, render};
use crate::admin::auth::Session;
use crate::admin::{AdminState, Reply, actions, view};
use crate::clock::now_ms;
use crate::config::Role;
use crate::push::fields::LOG_COLUMNS;
use crate::script::format_local;
use crate::store::log::Resend;

/// One field of the record, as the session may see it.
struct FieldRow {
    name: String,
    value: String,
}

/// One attempt to send, from the record's history.
struct AttemptRow {
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
    fields: Vec<FieldRow>,
    decision: String,
    attempts: Vec<AttemptRow>,
    can_resend: bool,
    can_reroute: bool,
    can_hold: bool,
    held: bool,
    notice: String,
}

/// `GET /push/{id}`: one push, its fields as the session may see them, its decision
/// and its attempts; `notice` says what an action just did.
pub(super) async fn page(
    state: &AdminState,
    session: &Session,
    id: &str,
    notice: Option<&str>,
) -> Reply {
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
    let mut fields: Vec<FieldRow> = record
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
                    FieldRow {
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
                .map(|a| AttemptRow {
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
pub(super) async fn reroute(
    state: &AdminState,
    session: &Session,
    id: &str,
    peer: SocketAddr,
) -> Reply {
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
            page(state, session, id, Some(&notice)).await
        }
        Ok(false) => {
            page(
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

/// `POST /push/{id}/resend`: send a sent or failed push again (operators and up).
pub(super) async fn resend(
    state: &AdminState,
    session: &Session,
    id: &str,
    peer: SocketAddr,
) -> Reply {
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
            page(state, session, id, Some("Queued to be sent again.")).await
        }
        Ok(Resend::NotResendable) => error_page(
            Some(session),
            StatusCode::CONFLICT,
            "Only a sent or failed push with a send decision can be resent.",
        ),
        Ok(Resend::Busy) => {
            page(
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

/// `POST /push/{id}/hold`: place (`hold=1`) or release a legal hold (operators and up).
pub(super) async fn hold(
    state: &AdminState,
    session: &Session,
    id: &str,
    input: &Input,
    peer: SocketAddr,
) -> Reply {
    if !session.may(Role::Operator) {
        return error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            "Only operators may place a legal hold.",
        );
    }
    let Ok(num) = id.parse::<u64>() else {
        return error_page(Some(session), StatusCode::NOT_FOUND, "No such push.");
    };
    let hold = input.get("hold") == "1";
    match actions::set_hold(state, num, hold, &session.user, peer).await {
        Ok(_) => {
            page(
                state,
                session,
                id,
                Some(if hold {
                    "Legal hold placed: retention keeps this push."
                } else {
                    "Legal hold released."
                }),
            )
            .await
        }
        Err((status, message)) => error_page(Some(session), status, &message),
    }
}
