//! One push: its page, and what operators may do to it — resend it, route it again
//! through its port's current script, place or release a legal hold.

use std::net::SocketAddr;

use askama::Template;
use hyper::StatusCode;

use super::{Chrome, Input, app_and_lane, cell, error_page, render};
use crate::admin::auth::Session;
use crate::admin::{AdminState, Reply, actions, view};
use crate::clock::now_ms;
use crate::config::Role;
use crate::push::Status;
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

/// One attempt on a fallback rung, from the record's `fallback`.
struct RungRow {
    rung: String,
    at: String,
    attempt: String,
    http: String,
    outcome: &'static str,
    answer: String,
}

#[derive(Template)]
#[template(path = "push.html")]
struct PushPage {
    chrome: Option<Chrome>,
    id: u64,
    status: String,
    /// Its push's app and lane (the queue it waits in); empty when it has no push.
    app: String,
    lane: String,
    fields: Vec<FieldRow>,
    decision: String,
    attempts: Vec<AttemptRow>,
    /// Its fallback ladder as climbed (Alimtalk, SMS), oldest first.
    rungs: Vec<RungRow>,
    can_resend: bool,
    can_reroute: bool,
    can_hold: bool,
    held: bool,
    /// When the app reported it delivered / opened (local time); empty = not reported.
    delivered: String,
    opened: String,
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
    let json = record.to_json();
    let mut fields: Vec<FieldRow> = json
        .as_object()
        .map(|m| {
            m.keys()
                .filter(|k| !matches!(k.as_str(), "history" | "decision" | "receipt" | "fallback"))
                .map(|k| {
                    let mut value = cell(&json, k);
                    if matches!(k.as_str(), "received_at" | "due_at")
                        && let Some(ms) = json[k].as_i64()
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
    let attempts = record
        .history
        .iter()
        .map(|a| AttemptRow {
            at: format_local(a.at, zone, "%Y-%m-%d %H:%M:%S%.3f"),
            attempt: a.attempt.to_string(),
            http: a.http.to_string(),
            outcome: a.outcome.clone(),
            answer: a.answer.clone().unwrap_or_default(),
        })
        .collect();
    let rungs = record
        .fallback
        .iter()
        .map(|a| RungRow {
            rung: a.rung.clone(),
            at: format_local(a.at, zone, "%Y-%m-%d %H:%M:%S%.3f"),
            attempt: a.attempt.to_string(),
            http: a.http.to_string(),
            outcome: a.outcome.as_str(),
            answer: a.answer.clone(),
        })
        .collect();
    let operator = session.may(Role::Operator);
    let (app, lane) = app_and_lane(&record);
    let receipt = record.receipt.unwrap_or_default();
    let when = |at: Option<i64>| {
        at.map(|ms| format_local(ms, zone, "%Y-%m-%d %H:%M:%S%.3f"))
            .unwrap_or_default()
    };
    render(&PushPage {
        chrome: Some(Chrome::new(session, "log")),
        id,
        can_resend: operator
            && record.push().is_some()
            && matches!(
                record.status,
                Status::Sent | Status::Failed | Status::Expired
            ),
        can_hold: operator,
        can_reroute: operator && matches!(record.status, Status::ScriptError | Status::Dropped),
        held: record.legal_hold,
        delivered: when(receipt.delivered_at),
        opened: when(receipt.opened_at),
        status: record.status.as_str().to_owned(),
        app,
        lane,
        fields,
        decision: serde_json::to_string_pretty(&json["decision"]).unwrap_or_default(),
        attempts,
        rungs,
        notice: notice.unwrap_or("").to_owned(),
    })
}

/// The push id an operator's action names, or the page saying why not: the action
/// needs the operator role, and the id must be a number.
fn operated_push(session: &Session, id: &str, what: &str) -> Result<u64, Box<Reply>> {
    if !session.may(Role::Operator) {
        return Err(Box::new(error_page(
            Some(session),
            StatusCode::FORBIDDEN,
            &format!("Only operators may {what}."),
        )));
    }
    id.parse::<u64>().map_err(|_| {
        Box::new(error_page(
            Some(session),
            StatusCode::NOT_FOUND,
            "No such push.",
        ))
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
    let num = match operated_push(session, id, "route a push again") {
        Ok(num) => num,
        Err(reply) => return *reply,
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
    match record.status {
        Status::ScriptError | Status::Dropped => {}
        _ => {
            return error_page(
                Some(session),
                StatusCode::CONFLICT,
                "Only a push that ended script_error or dropped can be routed again.",
            );
        }
    };
    let worker = record.worker.clone();
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
    let message = crate::ingest::Message {
        unique_key: record.unique_key().to_owned(),
        fields: record.message_fields(),
    };
    let engine = state.engine.clone();
    let config = state.config();
    let origin = crate::ingest::Origin {
        queue: config.queue_of(&worker),
        kind: config.kind_of(&worker),
        source: worker,
    };
    let consents = match state.ads.consents([record.text("csno")].into_iter()).await {
        Ok(c) => c,
        Err(e) => {
            return error_page(
                Some(session),
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("reading the customer's ad consent: {e}"),
            );
        }
    };
    let gate = state.ads.gate();
    let now = state.ads.now_ms();
    let routed = match tokio::task::spawn_blocking(move || {
        crate::ingest::route_message(
            &engine,
            &route,
            &origin,
            gate.as_ref(),
            &consents,
            now,
            message,
        )
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
    let updated = crate::push::Record {
        status: routed.status,
        decision: routed.decision,
        due_at: routed.due_ms,
        error: routed.error,
        requeued_at: Some(routed.received_at_ms),
        ..record.clone()
    };
    match state
        .store
        .requeue(num, &text, &record, &updated, routed.due_ms)
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

/// `POST /push/{id}/resend`: send a sent, failed or expired push again (operators and up).
pub(super) async fn resend(
    state: &AdminState,
    session: &Session,
    id: &str,
    peer: SocketAddr,
) -> Reply {
    let num = match operated_push(session, id, "resend") {
        Ok(num) => num,
        Err(reply) => return *reply,
    };
    match state.store.resend(num, now_ms()).await {
        Ok(Resend::Queued) => {
            actions::audit(state, &session.user, "resend", &format!("push {num}"), peer).await;
            page(state, session, id, Some("Queued to be sent again.")).await
        }
        Ok(Resend::NotResendable) => error_page(
            Some(session),
            StatusCode::CONFLICT,
            "Only a sent, failed or expired push with a send decision can be resent.",
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
    let num = match operated_push(session, id, "place a legal hold") {
        Ok(num) => num,
        Err(reply) => return *reply,
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
