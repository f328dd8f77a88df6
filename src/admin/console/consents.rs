//! Customers' ad consents: look one customer up (operators and admins: a customer
//! number is masked for viewers, who may not search by it), and the customers whose ad
//! consent is due for re-confirmation (over two years old, or within 30 days of it),
//! oldest first, a page at a time from the index by consent date.

use askama::Template;
use hyper::StatusCode;

use super::{Chrome, Input, error_page, render};
use crate::admin::auth::Session;
use crate::admin::view::mask_csno;
use crate::admin::{AdminState, Reply};
use crate::ads::{due_cutoff, lapses_at};
use crate::config::Role;
use crate::push::consent::is_csno;
use crate::push::{Consent, Grant};
use crate::script::format_local;

/// Customers on one page of the due list.
const DUE_PAGE: usize = 50;

/// One customer's consents as a row shows them.
struct ConsentRow {
    csno: String,
    ad: String,
    night: String,
    lapses: String,
}

#[derive(Template)]
#[template(path = "consents.html")]
struct ConsentsPage {
    chrome: Option<Chrome>,
    /// What was looked up, and what was found ("" = nothing asked).
    csno: String,
    found: Option<ConsentRow>,
    message: String,
    may_search: bool,
    due: Vec<ConsentRow>,
    offset: usize,
    next: Option<usize>,
}

/// `GET /consents?csno=…&offset=…`.
pub(super) async fn page(
    state: &AdminState,
    session: &Session,
    input: &Input,
    peer: std::net::SocketAddr,
) -> Reply {
    let zone = state.config().zone();
    let now = state.ads.now_ms();
    let may_search = session.may(Role::Operator);
    let row = |csno: &str, c: &Consent, full: bool| ConsentRow {
        csno: if full {
            csno.to_owned()
        } else {
            mask_csno(csno)
        },
        ad: grant(c.ad.as_ref(), zone),
        night: grant(c.night.as_ref(), zone),
        lapses: c
            .ad
            .as_ref()
            .filter(|g| g.given)
            .and_then(|g| lapses_at(g.at_ms, zone))
            .map(|at| {
                let day = format_local(at, zone, "%Y-%m-%d");
                if at <= now {
                    format!("lapsed {day}")
                } else {
                    day
                }
            })
            .unwrap_or_default(),
    };
    let csno = input.get("csno").trim().to_owned();
    let (mut found, mut message) = (None, String::new());
    if !csno.is_empty() {
        if !may_search {
            message = "Customer numbers are masked for viewers: only operators and admins may look a customer up.".into();
        } else if !is_csno(&csno) {
            message = format!("{csno:?} is not a customer number.");
        } else {
            crate::admin::consents::audit_lookup(state, &session.user, &csno, peer).await;
            match state.store.consents(&[csno.as_str()]).await {
                Ok(c) => match c.into_iter().next().flatten() {
                    Some(c) => found = Some(row(&csno, &c, true)),
                    None => message = format!("No consent is recorded for customer {csno}."),
                },
                Err(e) => {
                    return error_page(
                        Some(session),
                        StatusCode::SERVICE_UNAVAILABLE,
                        &e.to_string(),
                    );
                }
            }
        }
    }
    let offset: usize = input.get("offset").parse().unwrap_or(0).min(1_000_000);
    let due = match state
        .store
        .consents_given_by(due_cutoff(now, zone), offset, DUE_PAGE + 1)
        .await
    {
        Ok(d) => d,
        Err(e) => {
            return error_page(
                Some(session),
                StatusCode::SERVICE_UNAVAILABLE,
                &e.to_string(),
            );
        }
    };
    let next = (due.len() > DUE_PAGE).then_some(offset + DUE_PAGE);
    let due = due
        .iter()
        .take(DUE_PAGE)
        .map(|(csno, c)| row(csno, c, may_search))
        .collect();
    render(&ConsentsPage {
        chrome: Some(Chrome::new(session, "consents")),
        csno: if may_search { csno } else { String::new() },
        found,
        message,
        may_search,
        due,
        offset,
        next,
    })
}

/// "given 2026-03-02 via app", "withdrawn …", or "none".
fn grant(g: Option<&Grant>, zone: chrono_tz::Tz) -> String {
    match g {
        None => "none".into(),
        Some(g) => format!(
            "{} {} via {}",
            if g.given { "given" } else { "withdrawn" },
            format_local(g.at_ms, zone, "%Y-%m-%d"),
            g.channel
        ),
    }
}
