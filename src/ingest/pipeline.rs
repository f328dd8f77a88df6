//! The one path every message takes into Redis, for ports and `POST /api/v1/pushes`
//! alike: route each checked message (off the async runtime), store the batch in one
//! group commit, and answer each message in order.

use std::sync::Arc;

use serde_json::Map;

use super::ack::Ack;
use super::message::{Message, Refusal};
use crate::ads::{AdGate, Consents, LiveGate, gated};
use crate::metrics::{labels, metrics};
use crate::push::{Consent, Decision, Kind, Queue, Status};
use crate::script::{CompiledRoute, RouteEngine, RouteError};
use crate::store::{Committer, Fence, NewRecord, Stored};

/// Where a batch came from, and what its pushes take from there when their script
/// leaves it unsaid.
#[derive(Debug, Clone)]
pub struct Origin {
    /// The port, or `api-<key>`.
    pub source: String,
    /// The app and lane.
    pub queue: Queue,
    /// Ad or informational; none = informational.
    pub kind: Option<Kind>,
}

/// The answers to a batch of messages.
pub struct Answered {
    /// One per message, in order.
    pub acks: Vec<Ack>,
    /// Why nothing was stored, when the write itself failed (Redis down, …).
    pub unstored: Option<String>,
    /// The fence refused the records: another node holds the port now.
    pub fenced: bool,
}

/// Route, store and answer checked messages from `origin` (a port, or an API key):
/// the one path every message takes into Redis. The consents of the customers the
/// batch's ads go to are read in one round trip (none for a batch without ads): while
/// the batch is routed when `origin`'s pushes are ads, after routing otherwise; then
/// the ad gate is applied. Records metrics on the way.
pub async fn store_parsed(
    committer: &Committer,
    engine: &Arc<RouteEngine>,
    route: &CompiledRoute,
    ads: &LiveGate,
    origin: &Origin,
    fence: Option<&Fence>,
    parsed: Vec<Result<Message, Refusal>>,
) -> Answered {
    let m = metrics();
    let source = origin.source.as_str();
    // The messages go to routing; each answer needs only its key (or its refusal).
    let mut messages = Vec::new();
    let parsed: Vec<Result<String, Refusal>> = parsed
        .into_iter()
        .map(|p| {
            p.map(|message| {
                let key = message.unique_key.clone();
                messages.push(message);
                key
            })
        })
        .collect();
    let records = if messages.is_empty() {
        Ok(Vec::new())
    } else {
        let engine = engine.clone();
        let script = route.clone();
        let from = origin.clone();
        let now = ads.now_ms();
        // A port or key whose pushes are ads reads its customers' consents while the
        // batch is routed (a script rarely makes one of them informational); any other
        // routes first and reads only for the ads its script made.
        let prefetch: Option<Vec<String>> =
            (origin.kind == Some(Kind::Ad) && ads.is_on()).then(|| {
                messages
                    .iter()
                    .filter_map(|m| Some(m.fields.get("csno")?.as_str()?.to_owned()))
                    .collect()
            });
        let routing = tokio::task::spawn_blocking(move || {
            messages
                .into_iter()
                .map(|m| {
                    let decided = route_ungated(&engine, &script, &from, now, &m.fields);
                    (m, decided)
                })
                .collect::<Vec<_>>()
        });
        let prefetched = async {
            match &prefetch {
                Some(csnos) => Some(ads.consents(csnos.iter().map(String::as_str)).await),
                None => None,
            }
        };
        let (routed, prefetched) = tokio::join!(routing, prefetched);
        match routed.map_err(|e| format!("routing task failed: {e}")) {
            Err(e) => Err(e),
            Ok(routed) => {
                let consents = match prefetched {
                    Some(Ok(read)) => Ok(read),
                    // The read ahead failed (or there was none): read for the ads the
                    // batch actually holds, so a batch without ads is still stored.
                    _ => {
                        let ad_customers = routed.iter().filter_map(|(m, decided)| {
                            let is_ad = matches!(decided, Ok(Decision::Send { push } | Decision::Later { push, .. }) if push.is_ad());
                            is_ad.then(|| m.fields.get("csno")?.as_str()).flatten()
                        });
                        ads.consents(ad_customers).await
                    }
                };
                consents
                    .map_err(|e| {
                        format!("not stored, send again: reading the customers' ad consents: {e}")
                    })
                    .map(|consents| {
                        let gate = ads.gate();
                        routed
                            .into_iter()
                            .map(|(m, decided)| {
                                let consent =
                                    m.fields.get("csno").and_then(|c| consents.get(c.as_str()?));
                                let decided = decided
                                    .and_then(|d| gate_decision(gate.as_ref(), d, consent, now));
                                new_record(route, origin, now, m, decided)
                            })
                            .collect()
                    })
            }
        }
    };
    let stored = match records {
        Ok(records) if records.is_empty() => Ok(Vec::new()),
        Ok(records) => {
            // Counted per batch, not per frame: a label lookup costs more than a frame.
            let mut by_status: Vec<(&'static str, u64)> = Vec::new();
            for r in &records {
                match by_status.iter_mut().find(|(s, _)| *s == r.status.as_str()) {
                    Some((_, n)) => *n += 1,
                    None => by_status.push((r.status.as_str(), 1)),
                }
            }
            for (status, n) in by_status {
                m.decisions
                    .get_or_create(&labels(&[("port", source), ("status", status)]))
                    .inc_by(n);
            }
            committer
                .commit(records, fence.cloned())
                .await
                .map_err(|e| format!("not stored, send again: {e}"))
        }
        Err(e) => Err(e),
    };
    let unstored = stored.as_ref().err().cloned();
    let mut stored = stored.map(Vec::into_iter);
    let (mut new, mut dups, mut fenced) = (0u64, 0u64, false);
    let mut rejects: Vec<&'static str> = Vec::new();
    let acks: Vec<Ack> = parsed
        .into_iter()
        .map(|p| match (p, &mut stored) {
            (Err(refusal), _) => {
                rejects.push(refusal.reason);
                Ack::error(refusal.key, refusal.error)
            }
            (Ok(key), Ok(results)) => match results.next() {
                Some(Stored::New { id }) => {
                    new += 1;
                    Ack::Stored {
                        key,
                        id,
                        dup: false,
                    }
                }
                Some(Stored::Duplicate { id }) => {
                    dups += 1;
                    Ack::Stored {
                        key,
                        id,
                        dup: true,
                    }
                }
                Some(Stored::Fenced) => {
                    fenced = true;
                    rejects.push("fenced");
                    Ack::error(
                        Some(key),
                        format!("not stored, send again: this node no longer holds port {source} (another node took it over)"),
                    )
                }
                None => {
                    rejects.push("store");
                    Ack::error(
                        Some(key),
                        "store returned too few results".into(),
                    )
                }
            },
            (Ok(key), Err(e)) => {
                rejects.push("store");
                Ack::error(Some(key), e.clone())
            }
        })
        .collect();
    let frames = |result: &str, n: u64| {
        if n > 0 {
            m.frames
                .get_or_create(&labels(&[("port", source), ("result", result)]))
                .inc_by(n);
        }
    };
    frames("stored", new);
    frames("duplicate", dups);
    frames("rejected", rejects.len() as u64);
    for reason in rejects {
        m.rejected
            .get_or_create(&labels(&[("port", source), ("reason", reason)]))
            .inc();
    }
    Answered {
        acks,
        unstored,
        fenced,
    }
}

/// Run the route script on one message at `now`, pass its decision through the ad gate
/// (the customer's consent from `consents`), and turn it into a record. What the script
/// left unsaid of the app, lane and kind comes from `origin`, its port or API key.
pub fn route_message(
    engine: &RouteEngine,
    route: &CompiledRoute,
    origin: &Origin,
    gate: Option<&AdGate>,
    consents: &Consents,
    now: i64,
    message: Message,
) -> NewRecord {
    let consent = message
        .fields
        .get("csno")
        .and_then(|c| consents.get(c.as_str()?));
    let decided = decide(engine, route, origin, gate, consent, now, &message.fields);
    new_record(route, origin, now, message, decided)
}

/// A message and what its route decided, as the record to store.
fn new_record(
    route: &CompiledRoute,
    origin: &Origin,
    now: i64,
    message: Message,
    decided: Result<Decision, RouteError>,
) -> NewRecord {
    let mut record = NewRecord {
        unique_key: message.unique_key,
        port: origin.source.clone(),
        received_at_ms: now,
        fields: message.fields,
        status: Status::Received,
        due_ms: None,
        decision: None,
        error: None,
    };
    match decided {
        Ok(decision) => {
            (record.status, record.due_ms) = match &decision {
                Decision::Send { .. } => (Status::Queued, Some(now)),
                Decision::Later { at_ms, .. } => (Status::Scheduled, Some(*at_ms)),
                Decision::Drop { .. } => (Status::Dropped, None),
            };
            record.decision = Some(decision);
        }
        Err(e) => {
            record.status = Status::ScriptError;
            record.error = Some(format!("{}:{e}", route.path));
        }
    }
    record
}

/// What becomes of one message: its script's decision at `now`, completed from `origin`
/// (app, lane, kind), through the ad gate with the customer's `consent`. Routing and the
/// script editor's Try both decide here.
pub fn decide(
    engine: &RouteEngine,
    route: &CompiledRoute,
    origin: &Origin,
    gate: Option<&AdGate>,
    consent: Option<&Consent>,
    now: i64,
    fields: &Map<String, serde_json::Value>,
) -> Result<Decision, RouteError> {
    let decision = route_ungated(engine, route, origin, now, fields)?;
    gate_decision(gate, decision, consent, now)
}

/// The script's decision at `now`, completed from `origin` (app, lane, kind), before the
/// ad gate: whether it is an ad is known only now.
fn route_ungated(
    engine: &RouteEngine,
    route: &CompiledRoute,
    origin: &Origin,
    now: i64,
    fields: &Map<String, serde_json::Value>,
) -> Result<Decision, RouteError> {
    let mut decision = engine.route(route, fields, now)?;
    if let Decision::Send { push } | Decision::Later { push, .. } = &mut decision {
        push.default_to(&origin.queue);
        if push.kind.is_none() {
            push.kind = origin.kind;
        }
        // Alimtalk is informational only, and an SMS ad needs the same consents: an ad
        // never climbs a fallback ladder.
        if push.is_ad() && !push.fallback.is_empty() {
            return Err(route_error(
                "an ad (`kind` = \"ad\") may not have a `fallback` ladder: Alimtalk carries \
                 informational messages only, and an SMS ad needs the same consents"
                    .into(),
            ));
        }
    }
    Ok(decision)
}

/// A routed decision through the ad gate with the customer's `consent`.
fn gate_decision(
    gate: Option<&AdGate>,
    decision: Decision,
    consent: Option<&Consent>,
    now: i64,
) -> Result<Decision, RouteError> {
    gated(gate, decision, consent, now).map_err(route_error)
}

fn route_error(message: String) -> RouteError {
    RouteError {
        message,
        line: 0,
        column: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::script::Limits;

    #[test]
    fn an_ad_never_climbs_a_fallback_ladder() {
        let engine = RouteEngine::new(Limits::default(), chrono_tz::Asia::Seoul);
        engine.set_rungs(["sms".to_owned()]);
        let route = engine
            .compile(
                "ladder.rhai",
                "fn route(msg) { let p = send_token(\"t\", \"\", \"\"); p.fallback = [\"sms\"]; p }",
            )
            .unwrap();
        let origin = |kind| Origin {
            source: "p".into(),
            queue: Queue::default(),
            kind,
        };
        let fields = Map::new();
        let info = decide(&engine, &route, &origin(None), None, None, 0, &fields);
        assert!(info.is_ok(), "{info:?}");
        let ad = decide(
            &engine,
            &route,
            &origin(Some(Kind::Ad)),
            None,
            None,
            0,
            &fields,
        )
        .unwrap_err();
        assert!(
            ad.message.contains("may not have a `fallback` ladder"),
            "{ad}"
        );
    }
}
