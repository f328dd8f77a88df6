//! The one path every message takes into Redis, for ports and `POST /api/v1/pushes`
//! alike: route each checked message (off the async runtime), store the batch in one
//! group commit, and answer each message in order.

use std::sync::Arc;

use serde_json::Map;

use super::ack::Ack;
use super::message::{Message, Refusal};
use crate::clock::now_ms;
use crate::metrics::{labels, metrics};
use crate::push::{Decision, Queue, Status};
use crate::script::{CompiledRoute, RouteEngine};
use crate::store::{Committer, Fence, NewRecord, Stored};

/// The answers to a batch of messages.
pub struct Answered {
    /// One per message, in order.
    pub acks: Vec<Ack>,
    /// Why nothing was stored, when the write itself failed (Redis down, …).
    pub unstored: Option<String>,
    /// The fence refused the records: another node holds the port now.
    pub fenced: bool,
}

/// Route, store and answer checked messages for `source` (a port, or `api:<key>`):
/// the one path every message takes into Redis. Records metrics on the way.
pub async fn store_parsed(
    committer: &Committer,
    engine: &Arc<RouteEngine>,
    route: &CompiledRoute,
    source: &str,
    queue: &Queue,
    fence: Option<&Fence>,
    parsed: Vec<Result<Message, Refusal>>,
) -> Answered {
    let m = metrics();
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
        let route = route.clone();
        let port = source.to_owned();
        let queue = queue.clone();
        tokio::task::spawn_blocking(move || {
            messages
                .into_iter()
                .map(|m| route_message(&engine, &route, &port, &queue, m))
                .collect::<Vec<_>>()
        })
        .await
        .map_err(|e| format!("routing task failed: {e}"))
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

/// Run the route script on one message and turn its decision into a record. What the
/// script left unsaid of the app and lane comes from `queue`, its port's or API key's.
pub fn route_message(
    engine: &RouteEngine,
    route: &CompiledRoute,
    port: &str,
    queue: &Queue,
    message: Message,
) -> NewRecord {
    let now = now_ms();
    let mut record = NewRecord {
        unique_key: message.unique_key,
        port: port.to_owned(),
        received_at_ms: now,
        fields: Map::new(),
        status: Status::Received,
        due_ms: None,
        decision: None,
        error: None,
    };
    match engine.route(route, &message.fields, now) {
        Ok(mut decision) => {
            if let Decision::Send { push } | Decision::Later { push, .. } = &mut decision {
                push.default_to(queue);
            }
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
    record.fields = message.fields;
    record
}
