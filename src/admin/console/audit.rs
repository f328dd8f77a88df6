//! The audit log: who did what, to which target, from which address; newest first,
//! filtered by who and action.

use askama::Template;
use hyper::StatusCode;

use super::{Chrome, Input, error_page, render};
use crate::admin::auth::Session;
use crate::admin::{AdminState, Reply};
use crate::script::format_local;

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

/// `GET /audit`: a hundred entries at a time, walking back from `before`.
pub(super) async fn page(state: &AdminState, session: &Session, input: &Input) -> Reply {
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
