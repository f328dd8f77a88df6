//! The consent registry's API (scope `consent`, API keys only): a system of record (the
//! app's settings screen, the web site, a branch's terminal) reports each customer's ad
//! and night-ad consent, given or withdrawn, and reads it back.
//!
//! - `GET /api/v1/consents/{csno}`: one customer's consents, and whether ad consent
//!   lapsed (over two years old).
//! - `PUT /api/v1/consents/{csno}`: `{"ad": {...}, "night": {...}}`, either or both;
//!   a grant is `{"given": bool, "channel": "app", "at_ms": unix ms (default now)}`.
//! - `POST /api/v1/consents`: up to [`MAX_CONSENT_BATCH`] `{"csno": …, "ad": …, "night": …}`;
//!   every entry is checked before any is recorded.
//!
//! Every change is written to the audit log: who, the customer number masked, what changed.

use std::net::SocketAddr;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AdminState, Reply, json as reply_json, json_error};
use crate::ads::{AdGate, lapses_at};
use crate::push::consent::{MAX_CSNO, is_csno};
use crate::push::{Consent, Grant};
use crate::store::consent::ConsentChange;

/// Most customers in one `POST /api/v1/consents`.
pub const MAX_CONSENT_BATCH: usize = 1000;
/// Largest body the consent API reads.
pub const MAX_CONSENT_BODY: usize = 512 * 1024;

/// One grant as a caller sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantIn {
    given: bool,
    channel: String,
    /// When the customer said so; default: when pushgate received it.
    #[serde(default)]
    at_ms: Option<i64>,
}

/// One customer's change as a caller sends it.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ChangeIn {
    #[serde(default)]
    csno: Option<String>,
    #[serde(default)]
    ad: Option<GrantIn>,
    #[serde(default)]
    night: Option<GrantIn>,
}

impl ChangeIn {
    /// The checked change for `csno`, or what is wrong with it.
    fn parse(self, csno: &str, now_ms: i64) -> Result<(String, Consent), String> {
        if !is_csno(csno) {
            return Err(format!(
                "csno must be 1 to {MAX_CSNO} printable characters without spaces, got {:?}",
                csno.chars().take(40).collect::<String>()
            ));
        }
        if self.ad.is_none() && self.night.is_none() {
            return Err("name ad, night or both".into());
        }
        let grant = |g: Option<GrantIn>, what: &str| -> Result<Option<Grant>, String> {
            let Some(g) = g else { return Ok(None) };
            let grant = Grant {
                given: g.given,
                at_ms: g.at_ms.unwrap_or(now_ms),
                channel: g.channel,
            };
            match grant.problem(what) {
                Some(p) => Err(p),
                None if grant.at_ms > now_ms + 86_400_000 => {
                    Err(format!("{what}.at_ms is more than a day in the future"))
                }
                None => Ok(Some(grant)),
            }
        };
        Ok((
            csno.to_owned(),
            Consent {
                ad: grant(self.ad, "ad")?,
                night: grant(self.night, "night")?,
            },
        ))
    }
}

/// `GET /api/v1/consents/{csno}`. The look-up is audited (who, the customer masked,
/// from where): a customer's consents are personal data.
pub(super) async fn get(state: &AdminState, csno: &str, who: &str, peer: SocketAddr) -> Reply {
    if !is_csno(csno) {
        return json_error(StatusCode::BAD_REQUEST, format!("{csno:?} is not a csno"));
    }
    audit_lookup(state, who, csno, peer).await;
    match state.store.consents(&[csno]).await {
        Ok(found) => match found.into_iter().next().flatten() {
            Some(consent) => reply_json(StatusCode::OK, &shown(state, csno, &consent)),
            None => json_error(
                StatusCode::NOT_FOUND,
                format!("no consent recorded for customer {csno}"),
            ),
        },
        Err(e) => json_error(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
    }
}

/// `PUT /api/v1/consents/{csno}` (one) and `POST /api/v1/consents` (a batch).
pub(super) async fn set(
    state: &AdminState,
    path_csno: Option<&str>,
    body: &[u8],
    who: &str,
) -> Reply {
    let now = state.ads.now_ms();
    let value: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return json_error(StatusCode::BAD_REQUEST, format!("body is not JSON: {e}")),
    };
    let entries: Vec<Value> = match (path_csno, value) {
        (Some(_), v @ Value::Object(_)) => vec![v],
        (Some(_), _) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body must be an object {\"ad\": …, \"night\": …}",
            );
        }
        (None, Value::Array(items)) if items.len() > MAX_CONSENT_BATCH => {
            return json_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "{} customers in one request; at most {MAX_CONSENT_BATCH}",
                    items.len()
                ),
            );
        }
        (None, Value::Array(items)) => items,
        (None, _) => {
            return json_error(
                StatusCode::BAD_REQUEST,
                "body must be an array of {\"csno\": …, \"ad\": …, \"night\": …}",
            );
        }
    };
    let mut changes = Vec::with_capacity(entries.len());
    let mut problems = Vec::new();
    for (i, entry) in entries.into_iter().enumerate() {
        let parsed = serde_json::from_value::<ChangeIn>(entry)
            .map_err(|e| e.to_string())
            .and_then(|change| {
                let csno = match (path_csno, &change.csno) {
                    (Some(path), Some(body)) if path != body => {
                        return Err("csno in the body differs from the path".into());
                    }
                    (Some(path), _) => path.to_owned(),
                    (None, Some(body)) => body.clone(),
                    (None, None) => return Err("csno is missing".into()),
                };
                change.parse(&csno, now)
            });
        match parsed {
            Ok(change) => changes.push(change),
            // A few are enough to fix the rest: the list is bounded.
            Err(p) if problems.len() < 20 => problems.push(json!({"index": i, "error": p})),
            Err(_) => {}
        }
    }
    if !problems.is_empty() {
        return reply_json(
            StatusCode::BAD_REQUEST,
            &json!({"error": "nothing recorded: some entries are invalid", "problems": problems}),
        );
    }
    let changed = match state.store.set_consents(&changes).await {
        Ok(c) => c,
        Err(e) => {
            return json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not recorded: {e}"),
            );
        }
    };
    audit(state, who, &changed).await;
    let shown: Vec<Value> = changed
        .iter()
        .map(|c| shown(state, &c.csno, &c.after))
        .collect();
    match path_csno {
        Some(_) => reply_json(StatusCode::OK, &shown[0]),
        None => reply_json(
            StatusCode::OK,
            &json!({"recorded": shown.len(), "consents": shown}),
        ),
    }
}

/// A customer's consents as the API shows them, with the ad consent's lapse.
fn shown(state: &AdminState, csno: &str, consent: &Consent) -> Value {
    let zone = state
        .ads
        .gate()
        .map_or_else(|| state.config().zone(), |g: AdGate| g.zone());
    let lapses = consent
        .ad
        .as_ref()
        .filter(|g| g.given)
        .and_then(|g| lapses_at(g.at_ms, zone));
    json!({
        "csno": csno,
        "ad": consent.ad,
        "night": consent.night,
        "ad_lapses_at_ms": lapses,
        "ad_lapsed": lapses.is_some_and(|at| state.ads.now_ms() >= at),
    })
}

/// One audit entry for looking customer `csno`'s consents up (the console's look-up and
/// `GET /api/v1/consents/{csno}`): who, the customer masked, from where.
pub(super) async fn audit_lookup(state: &AdminState, who: &str, csno: &str, peer: SocketAddr) {
    let target = format!("customer {}", super::view::mask_csno(csno));
    super::actions::audit(state, who, "consent-lookup", &target, peer).await;
}

/// One audit entry per customer changed: who, the customer masked, before → after.
async fn audit(state: &AdminState, who: &str, changed: &[ConsentChange]) {
    let zone = state.config().zone();
    let entries: Vec<Vec<(String, String)>> = changed
        .iter()
        .map(|c| {
            vec![
                ("who".to_owned(), who.to_owned()),
                ("action".to_owned(), "consent".to_owned()),
                (
                    "target".to_owned(),
                    format!("customer {}", super::view::mask_csno(&c.csno)),
                ),
                ("change".to_owned(), describe(c, zone)),
            ]
        })
        .collect();
    if let Err(e) = state.store.audit_many(&entries).await {
        tracing::warn!(error = %e, "writing the audit log");
    }
}

/// "ad: none → given 2026-03-02 via app; night: given 2025-01-01 via web → withdrawn …"
fn describe(change: &ConsentChange, zone: chrono_tz::Tz) -> String {
    let grant = |g: &Option<Grant>| match g {
        None => "none".to_owned(),
        Some(g) => format!(
            "{} {} via {}",
            if g.given { "given" } else { "withdrawn" },
            crate::script::format_local(g.at_ms, zone, "%Y-%m-%d"),
            g.channel
        ),
    };
    let part = |what: &str, before: &Option<Grant>, after: &Option<Grant>| {
        if before == after {
            format!("{what}: {} (unchanged)", grant(after))
        } else {
            format!("{what}: {} → {}", grant(before), grant(after))
        }
    };
    format!(
        "{}; {}",
        part("ad", &change.before.ad, &change.after.ad),
        part("night", &change.before.night, &change.after.night)
    )
}
