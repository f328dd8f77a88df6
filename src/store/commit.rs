//! Writing new records: a whole batch in one atomic round trip (the ingest script
//! dedupes by `uniqueKey`, allocates ids, stores, indexes, schedules and counts), and
//! the group-commit writer that gathers what every connection submits into one batch.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{Notify, mpsc, oneshot};

use super::scripts::scripts;
use super::{Store, StoreError, bitmaps, record};
use crate::push::fields::{MESSAGE_BITMAP_FIELDS, OWN_BITMAP_FIELDS, ZSET_FIELDS};
use crate::push::{Decision, Status};

/// A write allowed only while Redis key `key` (under the prefix) holds `token`: how a
/// connect-mode port's records are refused once its node lost the port's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub key: String,
    pub token: String,
}

/// A message that passed validation and routing, ready to be written.
#[derive(Debug, Clone)]
pub struct NewRecord {
    pub unique_key: String,
    /// Name of the port (or API key) it arrived on; stored as `worker`.
    pub port: String,
    pub received_at_ms: i64,
    /// The message's own fields, as decoded.
    pub fields: Map<String, Value>,
    pub status: Status,
    /// When to send (unix ms) for `queued`/`scheduled` records.
    pub due_ms: Option<i64>,
    /// What the route script decided (none for a script error).
    pub decision: Option<Decision>,
    pub error: Option<String>,
}

impl NewRecord {
    fn push(&self) -> Option<&crate::push::Push> {
        match &self.decision {
            Some(Decision::Send { push } | Decision::Later { push, .. }) => Some(push),
            _ => None,
        }
    }

    /// The queue it waits in when it is due: its push's (the default one without a push,
    /// as queue.lua reads it).
    pub fn queue(&self) -> crate::push::Queue {
        self.push().map(|p| p.queue()).unwrap_or_default()
    }
}

/// The result of writing one record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stored {
    New {
        id: u64,
    },
    /// The `uniqueKey` was already stored under `id`; nothing was written.
    Duplicate {
        id: u64,
    },
    /// Not written: the writer's [`Fence`] no longer holds (another node has the port).
    Fenced,
}

impl Store {
    /// Write records in one atomic round trip (a Lua script): dedupe by `uniqueKey`,
    /// allocate ids, store, index, schedule, count. Answers in input order. A record's
    /// decision is stored as given: [`NewRecord::compacted`] first, to store it compactly.
    pub async fn ingest(&self, records: &[NewRecord]) -> Result<Vec<Stored>, StoreError> {
        self.ingest_fenced(records, &[], &vec![0; records.len()])
            .await
    }

    /// [`Store::ingest`], where record `i` is written only if `fences[fence_of[i] - 1]`
    /// holds (`fence_of[i] == 0`: unfenced). With `ack_replicas`, the same round trip
    /// ends with `WAIT`, and too few replicas fail the whole batch.
    pub async fn ingest_fenced(
        &self,
        records: &[NewRecord],
        fences: &[Fence],
        fence_of: &[usize],
    ) -> Result<Vec<Stored>, StoreError> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        // The ARGV layout is the one `lua/ingest.lua` opens with.
        let mut invocation = scripts().ingest.prepare_invoke();
        invocation
            .arg(&self.prefix)
            .arg(records.len())
            .arg(self.stats_ttl_secs)
            .arg(fences.len())
            .arg(self.admission.min_records)
            .arg(self.admission.max_values)
            .arg(bitmaps::IDS_PER_EARNED_RECORD)
            .arg(bitmaps::MAX_MOVE_FACTOR);
        for fence in fences {
            invocation.arg(&fence.key).arg(&fence.token);
        }
        for (record, fence) in records.iter().zip(fence_of) {
            let minute = record.received_at_ms.div_euclid(60_000);
            invocation
                .arg(fence)
                .arg(&record.unique_key)
                .arg(record_body_after_id(record))
                .arg(record.due_ms.map(|ms| ms.to_string()).unwrap_or_default())
                .arg(record.queue().due_key());
            let zsets = index_keys(ZSET_FIELDS, "idx", record);
            invocation.arg(zsets.len()).arg(zsets);
            let bits = index_keys(OWN_BITMAP_FIELDS, "bit", record);
            invocation.arg(bits.len()).arg(bits);
            let admitted = index_values(MESSAGE_BITMAP_FIELDS, record);
            invocation.arg(admitted.len());
            for (field, value) in admitted {
                let listed = self.admission.is_listed(field, &value);
                invocation.arg(field).arg(value).arg(u8::from(listed));
            }
            invocation
                .arg(format!("stats:{}:{minute}", record.port))
                .arg(format!("stats:{}:total", record.port))
                .arg(record.status.as_str());
        }
        let mut con = self.con().await?;
        let flat: Vec<i64> = if self.ack_replicas == 0 {
            self.run(invocation.invoke_async(&mut con)).await?
        } else {
            // A duplicate also writes (its counters), so its `WAIT` covers the first
            // write too.
            self.invoke_replicated(&scripts().ingest, &invocation, &mut con)
                .await?
        };
        if flat.len() != records.len() * 2 {
            return Err(StoreError::Protocol(format!(
                "ingest returned {} numbers for {} records",
                flat.len(),
                records.len()
            )));
        }
        Ok(flat
            .chunks_exact(2)
            .map(|pair| {
                let id = pair[0] as u64;
                match pair[1] {
                    1 => Stored::Duplicate { id },
                    2 => Stored::Fenced,
                    _ => Stored::New { id },
                }
            })
            .collect())
    }
}

/// The index key suffixes (`idx:csno:123`, `bit:status:queued`) a record belongs to.
fn index_keys(fields: &[&str], kind: &str, record: &NewRecord) -> Vec<String> {
    index_values(fields, record)
        .into_iter()
        .map(|(field, value)| format!("{kind}:{field}:{value}"))
        .collect()
}

/// The record's non-empty values of `fields`, as indexed.
fn index_values<'f>(fields: &[&'f str], record: &NewRecord) -> Vec<(&'f str, String)> {
    fields
        .iter()
        .filter_map(|&field| {
            let value = match field {
                "status" => record.status.as_str().to_owned(),
                "worker" => record.port.clone(),
                "fcm_send_yn" => "N".to_owned(),
                "app" => record.push()?.queue().app,
                "lane" => record.push()?.queue().lane.as_str().to_owned(),
                _ => scalar_text(record.fields.get(field)?)?,
            };
            (!value.is_empty()).then_some((field, value))
        })
        .collect()
}

/// A JSON scalar as the text an operator would search for.
pub fn scalar_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.trim().to_owned()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The record's JSON after `{"id":N,` — the id is only known inside the Lua script.
/// Serialised straight from the typed parts (no copy of the message), in the compact
/// form of [`record::encode`].
fn record_body_after_id(new: &NewRecord) -> String {
    #[derive(serde::Serialize)]
    struct Body<'a> {
        #[serde(flatten)]
        fields: record::CompactFields<'a>,
        worker: &'a str,
        status: &'static str,
        received_at: i64,
        #[serde(skip_serializing_if = "Option::is_none")]
        due_at: Option<i64>,
        #[serde(skip_serializing_if = "Option::is_none")]
        decision: Option<record::CompactDecision<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<&'a str>,
    }
    let body = Body {
        fields: record::CompactFields(&new.fields),
        worker: &new.port,
        status: new.status.as_str(),
        received_at: new.received_at_ms,
        due_at: new.due_ms,
        decision: new
            .decision
            .as_ref()
            .map(|decision| record::CompactDecision {
                decision,
                fields: &new.fields,
            }),
        error: new.error.as_deref(),
    };
    let text = serde_json::to_string(&body).unwrap_or_else(|_| "{}".into());
    // `{...}` → `...}`; the script prepends `{"id":N,`.
    text[1..].to_owned()
}

/// One connection's records waiting for the writer.
struct CommitRequest {
    records: Vec<NewRecord>,
    fence: Option<Fence>,
    reply: oneshot::Sender<Result<Vec<Stored>, StoreError>>,
}

/// Sends records to the group-commit writer and waits for them to be in Redis.
#[derive(Clone)]
pub struct Committer {
    tx: mpsc::Sender<CommitRequest>,
}

impl Committer {
    /// Start the writer. It ends once every `Committer` clone is dropped and the
    /// queue is empty, so dropping them after the ports stop drains it.
    /// `stored` is notified after each write that stored records (the sender waits on it).
    /// A write that fails on the connection is tried again for up to `retry_for`.
    pub fn spawn(
        store: Store,
        max_batch: usize,
        retry_for: Duration,
        stored: Arc<Notify>,
    ) -> (Committer, tokio::task::JoinHandle<()>) {
        let (tx, rx) = mpsc::channel(1024);
        let writer = Writer {
            store,
            max_batch,
            retry_for,
            stored,
        };
        let task = tokio::spawn(writer.run(rx));
        (Committer { tx }, task)
    }

    /// Resolves once the records are in Redis (or the write failed). With a `fence`,
    /// the records are refused ([`Stored::Fenced`]) unless it holds.
    pub async fn commit(
        &self,
        records: Vec<NewRecord>,
        fence: Option<Fence>,
    ) -> Result<Vec<Stored>, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(CommitRequest {
                records,
                fence,
                reply,
            })
            .await
            .map_err(|_| StoreError::WriterGone)?;
        answer.await.map_err(|_| StoreError::WriterGone)?
    }
}

struct Writer {
    store: Store,
    max_batch: usize,
    retry_for: Duration,
    stored: Arc<Notify>,
}

impl Writer {
    /// Whatever queued up during the previous round trip goes together in the next one.
    async fn run(self, mut rx: mpsc::Receiver<CommitRequest>) {
        while let Some(first) = rx.recv().await {
            let mut records = Vec::new();
            let mut replies = Vec::new();
            let mut fences: Vec<Fence> = Vec::new();
            let mut fence_of = Vec::new();
            let mut next = Some(first);
            while let Some(pending) = next.take() {
                let fence = match pending.fence {
                    None => 0,
                    Some(fence) => match fences.iter().position(|f| *f == fence) {
                        Some(at) => at + 1,
                        None => {
                            fences.push(fence);
                            fences.len()
                        }
                    },
                };
                fence_of.extend(std::iter::repeat_n(fence, pending.records.len()));
                replies.push((pending.reply, pending.records.len()));
                records.extend(pending.records);
                if records.len() < self.max_batch {
                    next = rx.try_recv().ok();
                }
            }
            let written = self.write(&records, &fences, &fence_of).await;
            match written {
                Ok(results) => {
                    let new = results
                        .iter()
                        .filter(|r| matches!(r, Stored::New { .. }))
                        .count();
                    crate::metrics::metrics().stored.inc_by(new as u64);
                    if new > 0 {
                        self.stored.notify_one();
                    }
                    let mut results = results.into_iter();
                    for (reply, n) in replies {
                        let _ = reply.send(Ok(results.by_ref().take(n).collect()));
                    }
                }
                Err(e) => {
                    tracing::warn!(records = records.len(), error = %e, "group commit failed");
                    let text = e.to_string();
                    for (reply, _) in replies {
                        let _ = reply.send(Err(StoreError::Commit(text.clone())));
                    }
                }
            }
        }
    }

    /// One group commit, tried again while the connection (not the request) fails
    /// and `retry_for` lasts. Trying again is safe: a record that did get written
    /// comes back as a duplicate of itself.
    async fn write(
        &self,
        records: &[NewRecord],
        fences: &[Fence],
        fence_of: &[usize],
    ) -> Result<Vec<Stored>, StoreError> {
        let m = crate::metrics::metrics();
        let give_up = tokio::time::Instant::now() + self.retry_for;
        let mut pause = Duration::from_millis(50);
        loop {
            let started = std::time::Instant::now();
            let written = self.store.ingest_fenced(records, fences, fence_of).await;
            m.redis_seconds.observe(started.elapsed().as_secs_f64());
            m.commit_batch.observe(records.len() as f64);
            match written {
                Err(e) if e.is_transient() && tokio::time::Instant::now() + pause < give_up => {
                    tracing::warn!(records = records.len(), error = %e, retry_in = ?pause, "group commit failed; trying again");
                    m.commit_retries.inc();
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::push::fields::BITMAP_FIELDS;

    #[test]
    fn every_bitmap_field_is_either_pushgates_own_or_admitted() {
        let mut split: Vec<&str> = OWN_BITMAP_FIELDS
            .iter()
            .chain(MESSAGE_BITMAP_FIELDS)
            .copied()
            .collect();
        let mut all = BITMAP_FIELDS.to_vec();
        split.sort_unstable();
        all.sort_unstable();
        assert_eq!(split, all);
    }
}
