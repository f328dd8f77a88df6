//! The ports' route scripts: the list, and one script's page where it is checked,
//! tried on a sample or a stored record, saved or restored from a version.

use std::net::SocketAddr;

use askama::Template;
use hyper::{Method, StatusCode};
use serde_json::Value;

use super::versions::{Version, list_versions, read_version, save_script};
use super::{Chrome, Input, error_page, render};
use crate::admin::auth::Session;
use crate::admin::{AdminState, Reply};
use crate::config::Role;

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

/// `GET /scripts`: every port's script and whether it compiles.
pub(super) async fn list(state: &AdminState, session: &Session) -> Reply {
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

/// `GET /scripts/{port}` shows a port's script; `POST` checks, tries, saves or
/// restores it (`action`).
pub(super) async fn page(
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
        match read_version(&path, restore) {
            Some(text) => text,
            None => return error_page(Some(session), StatusCode::NOT_FOUND, "No such version."),
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
                    // The gate's effect is part of what Try shows: the sample customer's
                    // consents, the port's kind, now by the gate's clock.
                    let csno = msg.get("csno").and_then(Value::as_str).unwrap_or_default();
                    let consents = state
                        .ads
                        .consents([csno].into_iter())
                        .await
                        .unwrap_or_default();
                    let consent = consents.get(csno).cloned();
                    let gate = state.ads.gate();
                    let origin = crate::ingest::Origin {
                        source: port_config.name.clone(),
                        queue: port_config.queue(),
                        kind: port_config.kind,
                    };
                    let now = state.ads.now_ms();
                    let decided = tokio::task::spawn_blocking(move || {
                        crate::ingest::decide(
                            &engine,
                            &route,
                            &origin,
                            gate.as_ref(),
                            consent.as_ref(),
                            now,
                            &msg,
                        )
                    })
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
        return Ok(stored.message_fields());
    }
    match serde_json::from_str::<Value>(sample) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err("the sample must be a JSON object".into()),
        Err(e) => Err(format!("the sample is not valid JSON: {e}")),
    }
}
