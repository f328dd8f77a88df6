//! The push log: the search form and its pages, the CSV export of a search, and
//! flushing the whole log (stopped ports only). A search is one field's value plus the
//! filters status, app, lane and receipt, each a bitmap ANDed with the rest ("no
//! receipt" ANDs the inverse of `bit:receipt:delivered`).

use std::net::SocketAddr;

use askama::Template;
use hyper::header::HeaderValue;
use hyper::{Method, StatusCode};

use super::{Chrome, Input, app_and_lane, error_page, render};
use crate::admin::auth::Session;
use crate::admin::view::{self, Sight};
use crate::admin::{AdminState, Reply, full, with_type};
use crate::config::Role;
use crate::push::fields::{LOG_COLUMNS, SUBSTRING_FIELDS};
use crate::push::queue::is_app_name;
use crate::push::{Lane, Status};
use crate::store::log::{LogQuery, ReceiptFilter, Total, searchable_fields};
use crate::supervisor::PortState;

const PER_PAGE: u64 = 100;

/// The highest page number asked for (a page past the end is simply empty).
const MAX_PAGE: u64 = 1_000_000_000;

/// Rows a CSV export holds at most.
const CSV_LIMIT: u64 = 100_000;

/// One record on a page of the log.
struct LogRow {
    id: u64,
    status: String,
    /// Its push's app and lane; empty when its route sent nothing.
    app: String,
    lane: String,
    cells: Vec<String>,
}

/// An option of a select box, and whether the request chose it.
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
    apps: Vec<Choice>,
    lanes: Vec<Choice>,
    /// `none`, `delivered`, `opened`: "sent, no receipt" is status sent + `none`.
    receipts: Vec<Choice>,
    /// `{rung}:{outcome}` for every configured fallback rung.
    fallbacks: Vec<Choice>,
    q: String,
    from: String,
    to: String,
    oldest: bool,
    columns: &'static [&'static str],
    rows: Vec<LogRow>,
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
    let app = input.get("app");
    if !app.is_empty() && !is_app_name(app) {
        return Err(format!("{app:?} is not an app name"));
    }
    let query = LogQuery {
        field: (!field.is_empty()).then_some(field.clone()),
        value: input.get("q").to_owned(),
        status: Status::resting(status).map(|s| s.as_str().to_owned()),
        app: (!app.is_empty()).then(|| app.to_owned()),
        lane: Lane::parse(input.get("lane")).map(|l| l.as_str().to_owned()),
        receipt: ReceiptFilter::parse(input.get("receipt")),
        fallback: crate::store::log::parse_fallback_filter(input.get("fallback"))
            .map(|_| input.get("fallback").to_owned()),
        from_ms: parse_time("from")?,
        to_ms: parse_time("to")?,
        oldest_first: input.get("order") == "oldest",
        page: input.get("page").parse().unwrap_or(1).clamp(1, MAX_PAGE),
        per_page: PER_PAGE,
    };
    let base: String = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(
            [
                "field", "q", "status", "app", "lane", "receipt", "fallback", "from", "to", "order",
            ]
            .iter()
            .map(|k| (*k, input.get(k)))
            .filter(|(_, v)| !v.is_empty()),
        )
        .finish();
    Ok((query, base))
}

/// `GET /log`: one page of the push log, searched and filtered.
pub(super) async fn page(state: &AdminState, session: &Session, input: &Input) -> Reply {
    let config = state.config();
    // The configured apps, and the one asked for if a reload removed it since.
    let mut app_names: Vec<String> = config.apps().map(|a| a.name.clone()).collect();
    let asked = input.get("app");
    if !asked.is_empty() && !app_names.iter().any(|a| a == asked) {
        app_names.push(asked.to_owned());
    }
    let mut page = LogPageView {
        chrome: Some(Chrome::new(session, "log")),
        // App and lane have selects of their own.
        fields: searchable_fields()
            .into_iter()
            .filter(|f| !matches!(*f, "app" | "lane"))
            .map(|f| Choice {
                value: f.to_owned(),
                selected: input.get("field") == f,
            })
            .collect(),
        statuses: Status::RESTING
            .iter()
            .map(|s| Choice {
                value: s.as_str().to_owned(),
                selected: input.get("status") == s.as_str(),
            })
            .collect(),
        apps: app_names
            .into_iter()
            .map(|a| Choice {
                selected: a == asked,
                value: a,
            })
            .collect(),
        lanes: Lane::ALL
            .iter()
            .map(|l| Choice {
                value: l.as_str().to_owned(),
                selected: input.get("lane") == l.as_str(),
            })
            .collect(),
        receipts: ["none", "delivered", "opened"]
            .iter()
            .map(|r| Choice {
                value: (*r).to_owned(),
                selected: input.get("receipt") == *r,
            })
            .collect(),
        fallbacks: config
            .fallbacks
            .iter()
            .flat_map(|rung| {
                crate::push::RungOutcome::ALL
                    .iter()
                    .map(move |o| format!("{}:{}", rung.name, o.as_str()))
            })
            .map(|value| Choice {
                selected: input.get("fallback") == value,
                value,
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
                    let (app, lane) = app_and_lane(r);
                    LogRow {
                        id: r.id,
                        status: r.status.as_str().to_owned(),
                        app,
                        lane,
                        cells: LOG_COLUMNS.iter().map(|c| seen.column(c)).collect(),
                    }
                })
                .collect();
        }
        Err(e) => page.error = e.to_string(),
    }
    page.query_base = base;
    render(&page)
}

/// `GET /log.csv`: the same search as a CSV download (at most [`CSV_LIMIT`] rows).
pub(super) async fn csv(state: &AdminState, session: &Session, input: &Input) -> Reply {
    let config = state.config();
    let sight = session.sight();
    let (mut query, _) = match log_query(input, config.zone(), sight) {
        Ok(q) => q,
        Err(e) => return error_page(Some(session), StatusCode::BAD_REQUEST, &e),
    };
    query.per_page = 1000;
    let mut out = String::from("\u{feff}id,status,app,lane,");
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
            let (app, lane) = app_and_lane(record);
            let mut fields = vec![
                record.id.to_string(),
                record.status.as_str().to_owned(),
                app,
                lane,
            ];
            fields.extend(LOG_COLUMNS.iter().map(|c| seen.column(c)));
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
    let mut reply = with_type(StatusCode::OK, "text/csv; charset=utf-8", full(out));
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

/// `GET /log/flush` asks to confirm; `POST` deletes every record, once no port runs
/// anywhere (admins only).
pub(super) async fn flush(
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_fields_are_quoted_and_formulas_defused() {
        assert_eq!(csv_field("이체 \"완료\""), "\"이체 \"\"완료\"\"\"");
        assert_eq!(csv_field("=HYPERLINK(\"x\")"), "\"'=HYPERLINK(\"\"x\"\")\"");
    }

    #[test]
    fn csv_defuses_tab_and_carriage_return_too() {
        assert_eq!(csv_field("\t=1+1"), "\"'\t=1+1\"");
        assert_eq!(csv_field("\r=1+1"), "\"'\r=1+1\"");
        assert_eq!(csv_field("plain"), "\"plain\"");
    }
}
