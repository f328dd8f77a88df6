//! One fallback rung's delivery loop: claims the pushes waiting on the rung under a lease,
//! keeps up to `max_in_flight` gateway requests going (paced by the rung's `rate`, a
//! token bucket in Redis that every node draws on), and writes each outcome, which queues
//! the push on its next rung when this one failed or expired. Also the receipt-timeout
//! scan that starts a sent push's ladder when no receipt arrived in time.
//!
//! Exactly once per rung: a push leaves the rung's `fqinflight` only with its outcome
//! (fenced by the lease), and the gateway sees the same idempotency key
//! (`{uniqueKey}:{rung}`) every time, so the only repeats are the requests in flight when
//! a node died, and the gateway can tell those apart too.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::json;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::now_ms;
use crate::config::FallbackConfig;
use crate::push::{Record, RungAttempt, RungOutcome};
use crate::store::Store;
use crate::store::fallback::{RungClaim, RungResult, RungWrite};

use super::template::Template;

/// Most records claimed in one round trip.
const CLAIM_BATCH: usize = 64;
/// How often an idle rung looks for pushes that became due (retries).
const IDLE_POLL: Duration = Duration::from_millis(100);
/// How often the receipt-timeout scan runs, and how much one step reads.
const WATCH_POLL: Duration = Duration::from_millis(500);
const WATCH_BATCH: usize = 1000;
/// Most of a gateway's answer kept on the record.
const ANSWER_KEPT: usize = 500;

/// Every rung's loop, and the receipt-timeout scan.
pub struct RungSenders {
    rungs: Vec<Arc<RungSender>>,
    /// `[receipts] timeout_secs`: none = receipts off (the watch list is only trimmed).
    receipt_timeout: Arc<Mutex<Option<Duration>>>,
    cancel: CancellationToken,
    tasks: TaskTracker,
}

impl RungSenders {
    /// Build a client per rung and start its loop, and the receipt-timeout scan.
    /// `base_dir` resolves each rung's `ca_file`.
    pub fn start(
        store: Store,
        rungs: &[FallbackConfig],
        base_dir: &Path,
        receipt_timeout: Option<Duration>,
    ) -> Result<RungSenders, String> {
        let cancel = CancellationToken::new();
        let tasks = TaskTracker::new();
        let mut senders = Vec::with_capacity(rungs.len());
        for config in rungs {
            let sender = Arc::new(RungSender::new(store.clone(), config, base_dir)?);
            tasks.spawn(sender.clone().run(cancel.clone()));
            senders.push(sender);
        }
        let receipt_timeout = Arc::new(Mutex::new(receipt_timeout));
        if !rungs.is_empty() {
            tasks.spawn(watch_receipts(
                store,
                receipt_timeout.clone(),
                cancel.clone(),
            ));
        }
        Ok(RungSenders {
            rungs: senders,
            receipt_timeout,
            cancel,
            tasks,
        })
    }

    /// Receipts on (the timeout) or off (`None`), e.g. after a reload.
    pub fn set_receipt_timeout(&self, timeout: Option<Duration>) {
        if let Ok(mut slot) = self.receipt_timeout.lock() {
            *slot = timeout;
        }
    }

    /// The receipt timeout in force.
    pub fn receipt_timeout(&self) -> Option<Duration> {
        self.receipt_timeout.lock().ok().and_then(|t| *t)
    }

    /// The rungs' names, in config order.
    pub fn names(&self) -> Vec<String> {
        self.rungs.iter().map(|r| r.name.clone()).collect()
    }

    /// Stop claiming, let the requests in flight finish and their outcomes be written.
    pub async fn stop(self) {
        self.cancel.cancel();
        self.tasks.close();
        self.tasks.wait().await;
    }
}

/// One rung: its gateway endpoint, body template and limits.
pub struct RungSender {
    store: Store,
    name: String,
    url: String,
    headers: Vec<(String, String)>,
    idempotency_header: String,
    template: Template,
    client: reqwest::Client,
    max_in_flight: usize,
    max_age: Duration,
    lease: Duration,
    retry_base: Duration,
    retry_max: Duration,
    /// Most sends a second, for every node together (the claim's token bucket).
    rate: Option<u32>,
}

impl RungSender {
    pub fn new(store: Store, config: &FallbackConfig, base_dir: &Path) -> Result<Self, String> {
        let template = config
            .template()
            .map_err(|e| format!("fallback {:?}: body: {e}", config.name))?;
        let settings = crate::fcm::ClientSettings {
            // Not the gateway's URL: an `http://` endpoint would make the client speak
            // HTTP/2 without asking (h2c), which a firm's gateway rarely does.
            endpoint: String::new(),
            connect_timeout: Duration::from_millis(config.connect_timeout_ms),
            request_timeout: Duration::from_millis(config.request_timeout_ms),
            proxy: config.proxy.clone(),
            ca_file: config.ca_file.as_ref().map(|p| base_dir.join(p)),
        };
        let client = crate::fcm::http_client(&settings)
            .map_err(|e| format!("fallback {:?}: the HTTP client: {e}", config.name))?;
        Ok(RungSender {
            store,
            name: config.name.clone(),
            url: config.url.clone(),
            headers: config.headers.clone().into_iter().collect(),
            idempotency_header: config.idempotency_header.clone(),
            template,
            client,
            max_in_flight: config.max_in_flight,
            max_age: Duration::from_secs(config.max_age_secs),
            lease: Duration::from_secs(config.lease_secs),
            retry_base: Duration::from_millis(config.retry_base_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            rate: config.rate,
        })
    }

    /// Claim and send until `cancel`; then let the requests in flight finish and write
    /// their outcomes before returning.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.max_in_flight));
        let (done, results) = mpsc::channel(self.max_in_flight * 2);
        let stalled = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let finisher = tokio::spawn(finish_loop(self.store.clone(), results, stalled.clone()));
        let sends = TaskTracker::new();
        while !cancel.is_cancelled() {
            if stalled.load(std::sync::atomic::Ordering::Acquire) {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = cancel.cancelled() => break,
                }
            }
            let Some(permits) = crate::sender::take_slots(&slots, CLAIM_BATCH, &cancel).await
            else {
                break;
            };
            let now = now_ms();
            let lease_until = now + self.lease.as_millis() as i64;
            let claimed = match self
                .store
                .claim_rung(&self.name, now, lease_until, permits.len(), self.rate)
                .await
            {
                Ok(claimed) => claimed,
                Err(e) => {
                    tracing::warn!(rung = %self.name, error = %e, "claiming fallback records");
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = cancel.cancelled() => break,
                    }
                    continue;
                }
            };
            if claimed.records.is_empty() {
                drop(permits);
                // The rung's bucket says when a token is due; otherwise nothing is due.
                tokio::select! {
                    _ = tokio::time::sleep(claimed.paced.unwrap_or(IDLE_POLL)) => {}
                    _ = cancel.cancelled() => break,
                }
                continue;
            }
            for (claim, permit) in claimed.records.into_iter().zip(permits) {
                let this = self.clone();
                let done = done.clone();
                sends.spawn(async move {
                    let result = this.attempt(claim).await;
                    let _ = done.send((result, permit)).await;
                });
            }
            // The bucket held some back: no token before this.
            if let Some(wait) = claimed.paced {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = cancel.cancelled() => break,
                }
            }
        }
        sends.close();
        sends.wait().await;
        drop(done);
        let _ = finisher.await;
        tracing::info!(rung = %self.name, "fallback rung stopped");
    }

    /// Try the rung once for one claimed push and decide what becomes of it.
    async fn attempt(&self, claim: RungClaim) -> RungResult {
        let RungClaim {
            id,
            lease,
            mut record,
            text: base,
        } = claim;
        let mine: Vec<&RungAttempt> = record
            .fallback
            .iter()
            .filter(|a| a.rung == self.name)
            .collect();
        // Queued again after the rung already ended (an operator's resend, a receipt
        // timeout after a failure): the rung is not tried twice.
        if let Some(last) = mine.last()
            && last.outcome != RungOutcome::Retrying
        {
            let outcome = last.outcome;
            return RungResult {
                id,
                lease,
                rung: self.name.clone(),
                base,
                record,
                added: None,
                outcome,
                retry_at_ms: None,
                next_rung: None,
            };
        }
        let attempt = mine.len() as u32 + 1;
        let now = now_ms();
        // The rung's deadline runs from its first attempt.
        let started = mine.first().map_or(now, |a| a.at);
        let deadline_ms = started + self.max_age.as_millis() as i64;
        let (outcome, retry_at, http, answer) = if now >= deadline_ms {
            (
                RungOutcome::Expired,
                None,
                0,
                json!({"error": "the rung's deadline passed before the gateway accepted it"})
                    .to_string(),
            )
        } else {
            self.send(&record, attempt, lease, deadline_ms).await
        };
        crate::metrics::metrics()
            .fallback_sends
            .get_or_create(&crate::metrics::labels(&[
                ("rung", &self.name),
                ("outcome", outcome.as_str()),
            ]))
            .inc();
        let added = RungAttempt {
            rung: self.name.clone(),
            at: now_ms(),
            attempt,
            http,
            outcome,
            answer,
        };
        record.remember_rung(added.clone());
        let next_rung = if outcome.falls_through() {
            record.next_rung(Some(&self.name)).map(str::to_owned)
        } else {
            None
        };
        RungResult {
            id,
            lease,
            rung: self.name.clone(),
            base,
            record,
            added: Some(added),
            outcome,
            retry_at_ms: retry_at,
            next_rung,
        }
    }

    /// One request to the gateway, judged: 2xx sent; 408, 429, 5xx and transport errors
    /// tried again with backoff (Retry-After honoured) until the deadline; any other 4xx
    /// failed for good.
    async fn send(
        &self,
        record: &Record,
        attempt: u32,
        lease: i64,
        deadline_ms: i64,
    ) -> (RungOutcome, Option<i64>, u16, String) {
        // The request must end well inside the lease, or another claim could send it too.
        let margin = self.lease.mul_f64(0.2).as_millis() as i64;
        let budget = Duration::from_millis((lease - margin - now_ms()).max(0) as u64);
        let body = self.template.render(&record.message);
        let key = format!("{}:{}", record.unique_key(), self.name);
        let mut request = self
            .client
            .post(&self.url)
            .header(&self.idempotency_header, &key)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.to_string());
        for (name, value) in &self.headers {
            request = request.header(name, value);
        }
        let answer = if budget.is_zero() {
            Err("not sent: the claim's lease ran out before the request began".to_owned())
        } else {
            match tokio::time::timeout(budget, request.send()).await {
                Err(_) => Err(format!(
                    "no answer within {budget:?} (before 80% of the lease)"
                )),
                Ok(Err(e)) => Err(format!(
                    "the gateway could not be reached: {}",
                    crate::fcm::without_url(&e)
                )),
                Ok(Ok(response)) => {
                    let status = response.status().as_u16();
                    let retry_after = crate::fcm::retry_after(response.headers());
                    let text = response.text().await.unwrap_or_default();
                    Ok((status, retry_after, text))
                }
            }
        };
        let (http, retry_after, text, retryable) = match answer {
            Ok((status, _, text)) if (200..300).contains(&status) => {
                return (RungOutcome::Sent, None, status, truncate(text));
            }
            Ok((status, retry_after, text)) => (
                status,
                retry_after,
                text,
                matches!(status, 408 | 429 | 500..=599),
            ),
            Err(error) => (0, None, json!({ "error": error }).to_string(), true),
        };
        let text = truncate(text);
        if !retryable {
            return (RungOutcome::Failed, None, http, text);
        }
        let delay = retry_after.unwrap_or_else(|| self.retry_delay(attempt));
        let retry_at = now_ms() + delay.as_millis() as i64;
        if retry_at > deadline_ms {
            (RungOutcome::Expired, None, http, text)
        } else {
            (RungOutcome::Retrying, Some(retry_at), http, text)
        }
    }

    /// The push sender's backoff rule, with this rung's base and cap.
    fn retry_delay(&self, attempt: u32) -> Duration {
        crate::sender::backoff(self.retry_base, self.retry_max, attempt)
    }
}

fn truncate(text: String) -> String {
    crate::fcm::truncate(&text, ANSWER_KEPT).to_owned()
}

/// Write rung outcomes in batches; a failed write is retried until it succeeds (the
/// records stay leased meanwhile and `stalled` stops new claims).
async fn finish_loop(
    store: Store,
    mut results: mpsc::Receiver<(RungResult, OwnedSemaphorePermit)>,
    stalled: Arc<std::sync::atomic::AtomicBool>,
) {
    while let Some(first) = results.recv().await {
        let mut batch = vec![first];
        while batch.len() < CLAIM_BATCH {
            match results.try_recv() {
                Ok(r) => batch.push(r),
                Err(_) => break,
            }
        }
        let (written, _slots): (Vec<RungResult>, Vec<OwnedSemaphorePermit>) =
            batch.into_iter().unzip();
        let mut wait = Duration::from_millis(100);
        loop {
            match store.finish_rungs(&written, now_ms()).await {
                Ok(writes) => {
                    stalled.store(false, std::sync::atomic::Ordering::Release);
                    let count = |what| writes.iter().filter(|w| **w == what).count();
                    let (lost, changing) = (count(RungWrite::LeaseLost), count(RungWrite::Changed));
                    if lost + changing > 0 {
                        tracing::warn!(
                            lost,
                            changing,
                            "fallback outcomes not written (lease expired, or the record kept changing); those rungs are claimed again"
                        );
                    }
                    break;
                }
                Err(e) => {
                    stalled.store(true, std::sync::atomic::Ordering::Release);
                    tracing::warn!(error = %e, "writing fallback outcomes; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

/// The receipt-timeout scan: pushes sent with a ladder and no receipt within the timeout
/// go to their first rung. With receipts off the watch list is only trimmed.
async fn watch_receipts(
    store: Store,
    timeout: Arc<Mutex<Option<Duration>>>,
    cancel: CancellationToken,
) {
    let mut behind = false;
    loop {
        // A step that took a whole batch may have left more behind: go on at once, so
        // the scan keeps up with any send rate (each step is one bounded Lua call).
        if !behind {
            tokio::select! {
                _ = tokio::time::sleep(WATCH_POLL) => {}
                _ = cancel.cancelled() => return,
            }
        } else if cancel.is_cancelled() {
            return;
        }
        let timeout = timeout.lock().ok().and_then(|t| *t);
        let now = now_ms();
        let until = now - timeout.map_or(0, |t| t.as_millis() as i64);
        behind = match store
            .scan_receipt_timeouts(until, now, WATCH_BATCH, timeout.is_some())
            .await
        {
            Ok((looked, queued)) => {
                if queued > 0 {
                    tracing::info!(queued, "no receipt in time: fallback ladders started");
                }
                looked >= WATCH_BATCH as u64
            }
            Err(e) => {
                tracing::warn!(error = %e, "scanning for receipt timeouts");
                false
            }
        };
    }
}
