//! Delivery for one app: claims its due records under a lease (urgent first, paced by
//! the app's token bucket in Redis), keeps up to `max_in_flight` sends going, and records
//! each outcome; retryable failures go back to their queue with exponential backoff and
//! jitter (honouring Retry-After) until the push's deadline. A quota answer that names a
//! device holds back that device only (`devices`); one that names the project (or none)
//! pauses the app's new sends. What the app has seen lately is in `health`.
//!
//! Durability comes from the store: a record leaves `inflight` only when its
//! outcome is written, and a lease that expires (the process died mid-send)
//! returns it to `due`. A record can therefore be sent twice only if the process
//! died after FCM accepted it and before the outcome was written.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::ads::{Consents, LiveGate, Verdict};
use crate::config::{AppConfig, Bucket};
use crate::fcm::{self, Answer, Retry};
use crate::metrics::{labels, metrics};
use crate::push::{Attempt, Push, Status, Target};
use crate::script::format_local;
use crate::store::Store;
use crate::store::delivery::{Claimed, Outcome};

pub mod apps;
pub mod client;
pub mod devices;
pub mod health;

pub use apps::{AppChanges, Apps};
pub use client::Client;
pub use health::{Health, HealthView};

/// Most records claimed in one round trip.
const CLAIM_BATCH: usize = 256;
/// Most outcomes written in one round trip.
const FINISH_BATCH: usize = 512;
/// How long an ad waits when the consent registry could not be read (ms).
const AD_CONSENT_RETRY_MS: i64 = 5_000;
/// How often an idle sender looks for records that became due (reserved times).
const IDLE_POLL: Duration = Duration::from_millis(100);

/// The app's name, pacing, retry policy and limits, from its `[[app]]` (or `[fcm]`).
#[derive(Debug, Clone)]
pub struct Policy {
    pub app: String,
    pub bucket: Option<Bucket>,
    pub max_in_flight: usize,
    pub lease: Duration,
    pub max_attempts: u32,
    pub max_age: Duration,
    pub retry_base: Duration,
    pub retry_max: Duration,
    pub quota_retry: Duration,
}

impl Policy {
    pub fn from_config(config: &AppConfig) -> Policy {
        Policy {
            app: config.name.clone(),
            bucket: config.bucket(),
            max_in_flight: config.max_in_flight,
            lease: Duration::from_secs(config.lease_secs),
            max_attempts: config.max_attempts,
            max_age: Duration::from_secs(config.max_age_secs),
            retry_base: Duration::from_millis(config.retry_base_ms),
            retry_max: Duration::from_millis(config.retry_max_ms),
            quota_retry: Duration::from_millis(config.quota_retry_ms),
        }
    }

    /// Delay before attempt `attempts + 1`: Retry-After when FCM gave one, else
    /// `base · 2^(attempts-1)` capped, then 50–100% of it so a fleet does not retry in step.
    pub fn retry_delay(
        &self,
        retry: Retry,
        attempts: u32,
        retry_after: Option<Duration>,
    ) -> Duration {
        if let Some(after) = retry_after {
            return after;
        }
        let base = match retry {
            Retry::Quota => self.quota_retry,
            _ => self.retry_base,
        };
        backoff(base, self.retry_max.max(base), attempts)
    }
}

/// The delay before attempt `attempts + 1`: `base · 2^(attempts-1)` capped at `max`, then
/// 50–100 % of it, so a fleet does not retry in step. Pushes and fallback rungs share it.
pub fn backoff(base: Duration, max: Duration, attempts: u32) -> Duration {
    let exponent = attempts.saturating_sub(1).min(20);
    let full = base.saturating_mul(1 << exponent).min(max);
    full.mul_f64(rand::random_range(0.5..=1.0))
}

pub struct Sender {
    store: Store,
    /// Where outcomes are written (waits for `ack_replicas` when set).
    outcomes: Store,
    client: Client,
    policy: Policy,
    zone: chrono_tz::Tz,
    /// Ports whose records are sent with `validate_only`.
    dry_run_ports: RwLock<HashSet<String>>,
    /// Set by QUOTA_EXCEEDED: no new sends start before this.
    paused_until: Mutex<Option<Instant>>,
    /// Ingest pokes this when it queued records, so they go out without waiting for a poll.
    wake: Arc<Notify>,
    /// `pushgate_fcm_sends_total{outcome="accepted"}`, looked up once: nearly every send
    /// counts here, and a label lookup costs more than the count.
    accepted: prometheus_client::metrics::counter::Counter,
    /// What this app's sends have met lately.
    health: Health,
    /// Devices over their own quota, held back.
    devices: devices::DeviceHolds,
    /// The ad gate, applied again to an ad when it comes due (consent may have been
    /// withdrawn, or the night window begun), and the clock the sender reads.
    ads: LiveGate,
}

impl Sender {
    /// `outcomes` is where send outcomes are written: with `ack_replicas`, a store on a
    /// connection of its own, whose `WAIT`s hold up no claim.
    pub fn new(
        store: Store,
        outcomes: Store,
        client: Client,
        policy: Policy,
        zone: chrono_tz::Tz,
        wake: Arc<Notify>,
        ads: LiveGate,
    ) -> Arc<Sender> {
        let accepted = metrics()
            .sends
            .get_or_create(&labels(&[
                ("app", &policy.app),
                ("outcome", "accepted"),
                ("class", "NONE"),
            ]))
            .clone();
        Arc::new(Sender {
            store,
            outcomes,
            client,
            policy,
            zone,
            dry_run_ports: RwLock::new(HashSet::new()),
            paused_until: Mutex::new(None),
            wake,
            accepted,
            health: Health::default(),
            devices: devices::DeviceHolds::default(),
            ads,
        })
    }

    /// Now, by the clock the ad gate reads (a test may have shifted it).
    fn now_ms(&self) -> i64 {
        self.ads.now_ms()
    }

    pub fn set_dry_run_ports(&self, ports: impl IntoIterator<Item = String>) {
        if let Ok(mut set) = self.dry_run_ports.write() {
            *set = ports.into_iter().collect();
        }
    }

    /// Whether an access or provider token is at hand (for `/readyz`).
    pub fn has_token(&self) -> bool {
        self.client.has_token()
    }

    pub fn app(&self) -> &str {
        &self.policy.app
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// What this app's sends have met lately (this node's view).
    pub fn health(&self) -> HealthView {
        self.health.view()
    }

    fn is_dry_run(&self, port: &str) -> bool {
        self.dry_run_ports.read().is_ok_and(|s| s.contains(port))
    }

    fn pause_for(&self, delay: Duration) {
        let until = Instant::now() + delay;
        if let Ok(mut paused) = self.paused_until.lock()
            && paused.is_none_or(|p| p < until)
        {
            tracing::warn!(app = %self.policy.app, ?delay, "project quota exceeded: pausing the app's new sends");
            *paused = Some(until);
            self.health
                .slowed(crate::clock::now_ms() + delay.as_millis() as i64);
        }
    }

    fn paused(&self) -> Option<Instant> {
        let until = self.paused_until.lock().ok().and_then(|p| *p)?;
        (until > Instant::now()).then_some(until)
    }

    /// Claim and send until `cancel`; then let in-flight sends finish and write their
    /// outcomes before returning.
    pub async fn run(self: Arc<Self>, cancel: CancellationToken) {
        let slots = Arc::new(Semaphore::new(self.policy.max_in_flight));
        let (done, outcomes) = mpsc::channel(self.policy.max_in_flight * 2);
        let stalled = Arc::new(AtomicBool::new(false));
        let finisher = tokio::spawn(finish_loop(
            self.outcomes.clone(),
            outcomes,
            stalled.clone(),
        ));
        let sends = TaskTracker::new();
        while !cancel.is_cancelled() {
            if stalled.load(Ordering::Acquire) {
                // Redis refuses our outcomes: claim nothing until they are written.
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => continue,
                    _ = cancel.cancelled() => break,
                }
            }
            if let Some(until) = self.paused() {
                tokio::select! {
                    _ = tokio::time::sleep_until(until) => {}
                    _ = cancel.cancelled() => break,
                }
            }
            let Some(permits) = crate::sender::take_slots(&slots, CLAIM_BATCH, &cancel).await
            else {
                break;
            };
            let now = self.now_ms();
            let lease_until = now + self.policy.lease.as_millis() as i64;
            let claim = self
                .store
                .claim(
                    &self.policy.app,
                    now,
                    lease_until,
                    permits.len(),
                    self.policy.bucket,
                )
                .await;
            let (claimed, paced) = match claim {
                Ok(c) => (c.records, c.paced),
                Err(e) => {
                    tracing::warn!(error = %e, "claiming due records");
                    drop(permits);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                        _ = cancel.cancelled() => break,
                    }
                    continue;
                }
            };
            if claimed.is_empty() {
                drop(permits);
                // Paced: the bucket refills a token in `paced`; an urgent push arriving
                // meanwhile wakes this loop and may use the reserve at once.
                let idle = paced.map_or(IDLE_POLL, |p| p.min(IDLE_POLL));
                tokio::select! {
                    _ = tokio::time::sleep(idle) => {}
                    _ = self.wake.notified() => {}
                    _ = cancel.cancelled() => break,
                }
                continue;
            }
            let dead = self.dead_tokens(&claimed).await;
            let consents = self.ad_consents(&claimed).await;
            for (claim, permit) in claimed.into_iter().zip(permits) {
                let this = self.clone();
                let done = done.clone();
                let dead_since = claim.record.token().and_then(|t| dead.get(t).copied());
                let ad = self.ad_verdict(&claim, consents.as_ref());
                sends.spawn(async move {
                    let outcome = this.attempt(claim, dead_since, ad).await;
                    let _ = done
                        .send(UnwrittenOutcome {
                            outcome,
                            _slot: permit,
                        })
                        .await;
                });
            }
        }
        sends.close();
        sends.wait().await;
        drop(done);
        let _ = finisher.await;
        tracing::info!(app = %self.policy.app, "sender stopped");
    }

    /// Which of the claimed records' tokens FCM already called UNREGISTERED.
    async fn dead_tokens(&self, claimed: &[Claimed]) -> HashMap<String, i64> {
        let tokens: Vec<&str> = claimed.iter().filter_map(|c| c.record.token()).collect();
        match self.store.dead_tokens(&self.policy.app, &tokens).await {
            Ok(found) => tokens
                .iter()
                .zip(found)
                .filter_map(|(t, at)| Some(((*t).to_owned(), at?)))
                .collect(),
            Err(e) => {
                tracing::warn!(error = %e, "reading dead tokens; sending anyway");
                HashMap::new()
            }
        }
    }

    /// The ad consents of the claimed ads' customers, in one round trip; none when
    /// the registry could not be read (the ads then wait, see [`Sender::ad_verdict`]).
    async fn ad_consents(&self, claimed: &[Claimed]) -> Option<Consents> {
        let csnos = claimed
            .iter()
            .filter(|c| c.record.push().is_some_and(Push::is_ad))
            .map(|c| c.record.text("csno"));
        match self.ads.consents(csnos).await {
            Ok(found) => Some(found),
            Err(e) => {
                tracing::warn!(error = %e, "reading ad consents; ads due now wait");
                None
            }
        }
    }

    /// What the ad gate says of a claimed ad now (none for anything else): consent is
    /// checked again, and so is the night window. Without `[ads]` an ad is not sent.
    fn ad_verdict(&self, claim: &Claimed, consents: Option<&Consents>) -> Option<Verdict> {
        if !claim.record.push().is_some_and(Push::is_ad) {
            return None;
        }
        let now = self.now_ms();
        let Some(gate) = self.ads.gate() else {
            return Some(Verdict::Drop {
                reason: "the push is an ad but the config has no [ads] section".into(),
            });
        };
        Some(match consents {
            Some(found) => gate.check(found.get(claim.record.text("csno")), now, now),
            None => Verdict::Hold {
                until_ms: now + AD_CONSENT_RETRY_MS,
                reason: "the consent registry could not be read; trying again".into(),
            },
        })
    }

    /// Send one claimed record (unless it cannot be) and decide what becomes of it.
    async fn attempt(
        &self,
        claim: Claimed,
        dead_since: Option<i64>,
        ad: Option<Verdict>,
    ) -> Outcome {
        let Claimed {
            id,
            lease,
            mut record,
            text: base,
        } = claim;
        let old_status = record.status;
        let port = record.worker.clone();
        let attempts = record.attempts + 1;
        // A reserved push ages from its reserved time, not from when it arrived.
        let deadline_ms = record.deadline(self.policy.max_age.as_millis() as i64);
        let push: Option<Push> = record.push().cloned();
        let dry_run = self.is_dry_run(&port);

        let (status, retry_at, delivered, step) = match (push, dead_since) {
            (Some(_), _) if let Some(Verdict::Drop { reason }) = &ad => (
                Status::Dropped,
                None,
                false,
                Step {
                    counted: false,
                    ..Step::local("AD_GATE", reason)
                },
            ),
            // Held past its deadline, it would never go out: it ends expired, saying why.
            (Some(_), _) if let Some(Verdict::Hold { until_ms, reason }) = &ad => {
                let fits = *until_ms <= deadline_ms;
                (
                    if fits {
                        Status::Scheduled
                    } else {
                        Status::Expired
                    },
                    fits.then_some(*until_ms),
                    false,
                    Step {
                        counted: false,
                        ..Step::local("AD_HELD", reason)
                    },
                )
            }
            (None, _) => (
                Status::Failed,
                None,
                false,
                Step::local("NO_PUSH", "the record has no send decision"),
            ),
            (Some(push), _) if push.has_no_token() => (
                Status::Dropped,
                None,
                false,
                Step::local(
                    "NO_TOKEN",
                    &format!(
                        "the route gave no token; its fallback ladder ({}) is tried instead",
                        push.fallback.join(" → ")
                    ),
                ),
            ),
            (Some(_), Some(since)) => (
                Status::Failed,
                None,
                false,
                Step::local(
                    "UNREGISTERED",
                    &format!(
                        "{} reported this token unregistered (dead for app {:?}) as of {}; not sent again",
                        self.client.provider().name(),
                        self.policy.app,
                        format_local(since, self.zone, "%Y-%m-%d %H:%M:%S")
                    ),
                ),
            ),
            (Some(push), None)
                if let Some(until) = push
                    .target
                    .token()
                    .and_then(|t| self.devices.held_until(t, self.now_ms()))
                    && until <= deadline_ms =>
            {
                (
                    Status::Retrying,
                    Some(until),
                    false,
                    Step {
                        counted: false,
                        ..Step::local(
                            "DEVICE_QUOTA",
                            &format!(
                                "the device is over its own quota; held back until {}",
                                format_local(until, self.zone, "%H:%M:%S")
                            ),
                        )
                    },
                )
            }
            (Some(_), None) if self.now_ms() >= deadline_ms => (
                Status::Expired,
                None,
                false,
                Step {
                    counted: false,
                    ..Step::local(
                        "EXPIRED",
                        &format!(
                            "its deadline ({}) passed before it could be sent; not sent",
                            format_local(deadline_ms, self.zone, "%Y-%m-%d %H:%M:%S")
                        ),
                    )
                },
            ),
            (Some(push), None) => {
                let started = std::time::Instant::now();
                // The whole attempt (token refresh, resend after a 401) must end well
                // inside the lease, or another claim could send the record meanwhile.
                // Measured from now, not from the claim: a process paused (SIGSTOP, a
                // VM stall) since claiming may find the lease nearly gone, and then
                // must not send at all.
                let margin = self.policy.lease.mul_f64(0.2).as_millis() as i64;
                let deadline =
                    Duration::from_millis((lease - margin - self.now_ms()).max(0) as u64);
                let answer = if deadline.is_zero() {
                    Answer::Refused {
                        class: fcm::ErrorClass::Transport,
                        http: 0,
                        body: json!({"error": "not sent: the claim's lease ran out before the send began (was this process paused?)"}).to_string(),
                        retry_after: None,
                        quota: None,
                    }
                } else {
                    tokio::time::timeout(deadline, self.client.send(&push, deadline_ms, dry_run))
                        .await
                        .unwrap_or_else(|_| Answer::Refused {
                            class: fcm::ErrorClass::Transport,
                            http: 0,
                            body: json!({"error": format!("no answer within {deadline:?} (before 80% of the lease)")}).to_string(),
                            retry_after: None,
                            quota: None,
                        })
                };
                let m = metrics();
                m.send_seconds.observe(started.elapsed().as_secs_f64());
                match &answer {
                    Answer::Accepted { .. } => {
                        self.accepted.inc();
                        self.health.note(None);
                    }
                    Answer::Refused { class, body, .. } => {
                        m.sends
                            .get_or_create(&labels(&[
                                ("app", &self.policy.app),
                                ("outcome", "refused"),
                                ("class", class.name()),
                            ]))
                            .inc();
                        self.health.note(Some((*class, body)));
                    }
                }
                self.judge(&push, answer, attempts, deadline_ms).await
            }
        };

        // validate_only reaches FCM's checks but no phone.
        let delivered = delivered && !dry_run;
        let now = self.now_ms();
        record.status = status;
        // Quota answers and pushes never sent are not attempts: only the deadline ends those.
        record.attempts = attempts - u32::from(!step.counted);
        if delivered {
            record.fcm_send_yn = "Y".into();
        }
        if step.sent {
            record.fcm_send_time = format_local(now, self.zone, "%Y%m%d%H%M%S");
        }
        record.dry_run = dry_run;
        record.due_at = retry_at;
        record.remember(Attempt {
            at: now,
            attempt: record.attempts,
            http: step.http,
            outcome: step.outcome,
            // A success's answer is only the message name, already in `result`;
            // errors keep theirs, since `result` holds only the last one.
            answer: (!delivered).then(|| step.answer.clone()),
        });
        record.result = step.answer;
        // A push that ends unreached goes to its ladder's first rung, in the same atomic
        // step as this outcome; one that was sent waits for its receipt (if receipts are on).
        // Dropped only for want of a token: a push dropped for any other reason (an ad
        // whose consent was withdrawn) must not reach the customer another way.
        let unreached = match status {
            Status::Failed | Status::Expired => true,
            Status::Dropped => record.push().is_some_and(Push::has_no_token),
            _ => false,
        };
        let fallback = if unreached && !dry_run {
            record.next_rung(None).map(str::to_owned)
        } else {
            None
        };
        let watch_receipt = status == Status::Sent && !dry_run && record.next_rung(None).is_some();
        Outcome {
            id,
            lease,
            base,
            record,
            old_status,
            new_status: status,
            retry_at_ms: retry_at,
            delivered,
            port,
            at_ms: now,
            fallback,
            watch_receipt,
        }
    }

    /// Turn FCM's answer into the record's next state. A transient failure is tried again
    /// with backoff until the push's deadline, then ends `expired`; only an explicit
    /// `[fcm] max_attempts` (counting no quota answer) ends it `failed` sooner.
    async fn judge(
        &self,
        push: &Push,
        answer: Answer,
        attempts: u32,
        deadline_ms: i64,
    ) -> (Status, Option<i64>, bool, Step) {
        match answer {
            Answer::Accepted { body, .. } => (
                Status::Sent,
                None,
                true,
                Step {
                    sent: true,
                    counted: true,
                    http: 200,
                    outcome: "ACCEPTED".into(),
                    answer: body,
                },
            ),
            Answer::Refused {
                class,
                http,
                body,
                retry_after,
                quota,
            } => {
                let retry = class.retry();
                let step = Step {
                    sent: true,
                    counted: retry != Retry::Quota,
                    http,
                    outcome: class.name().into(),
                    answer: body,
                };
                if class.is_dead_token()
                    && let Target::Token(token) = &push.target
                {
                    // Dead since Apple's 410 timestamp when it gives one; FCM gives none.
                    let now = self.now_ms();
                    let since = crate::apns::answer::unregistered_at(&step.answer, now);
                    if let Err(e) = self
                        .store
                        .remember_dead_token(&self.policy.app, token, since.unwrap_or(now))
                        .await
                    {
                        tracing::warn!(error = %e, "remembering a dead token");
                    }
                }
                if retry == Retry::Never {
                    return (Status::Failed, None, false, step);
                }
                let delay = self.policy.retry_delay(retry, attempts, retry_after);
                if retry == Retry::Quota {
                    match (quota, push.target.token()) {
                        // The device's own limit: only its pushes wait.
                        (Some(fcm::QuotaScope::Device), Some(token)) => {
                            let now = self.now_ms();
                            self.devices
                                .hold(token, now + delay.as_millis() as i64, now)
                        }
                        _ => self.pause_for(delay),
                    }
                }
                let retry_at = self.now_ms() + delay.as_millis() as i64;
                let counted = attempts - u32::from(!step.counted);
                if retry_at > deadline_ms {
                    (Status::Expired, None, false, step)
                } else if self.policy.max_attempts > 0 && counted >= self.policy.max_attempts {
                    (Status::Failed, None, false, step)
                } else {
                    metrics().retries.inc();
                    (Status::Retrying, Some(retry_at), false, step)
                }
            }
        }
    }
}

/// One attempt as the record's history shows it.
struct Step {
    /// Whether FCM was asked at all.
    sent: bool,
    /// Whether it counts as an attempt (quota answers do not).
    counted: bool,
    http: u16,
    outcome: String,
    answer: String,
}

impl Step {
    fn local(outcome: &str, message: &str) -> Step {
        Step {
            sent: false,
            counted: true,
            http: 0,
            outcome: outcome.into(),
            answer: json!({"error": message}).to_string(),
        }
    }
}

/// Wait for one free in-flight slot, then take up to `max` without waiting: the slots a
/// claim may fill. None once `cancel` fires or the slots are closed.
pub(crate) async fn take_slots(
    slots: &Arc<Semaphore>,
    max: usize,
    cancel: &CancellationToken,
) -> Option<Vec<OwnedSemaphorePermit>> {
    let first = tokio::select! {
        permit = slots.clone().acquire_owned() => permit.ok()?,
        _ = cancel.cancelled() => return None,
    };
    let mut permits = vec![first];
    while permits.len() < max {
        match slots.clone().try_acquire_owned() {
            Ok(p) => permits.push(p),
            Err(_) => break,
        }
    }
    Some(permits)
}

/// An outcome on its way to Redis, with the in-flight slot it still holds: the slot
/// is given back only once the outcome is written, so the sender never claims more
/// while answers it already has are unwritten.
struct UnwrittenOutcome {
    outcome: Outcome,
    _slot: OwnedSemaphorePermit,
}

/// Write outcomes in batches. A failed write is retried until it succeeds (the records
/// stay leased meanwhile, and `stalled` stops new claims so that this sender never
/// re-claims its own unwritten records when their leases run out).
async fn finish_loop(
    store: Store,
    mut outcomes: mpsc::Receiver<UnwrittenOutcome>,
    stalled: Arc<AtomicBool>,
) {
    while let Some(first) = outcomes.recv().await {
        let mut batch = vec![first];
        while batch.len() < FINISH_BATCH {
            match outcomes.try_recv() {
                Ok(o) => batch.push(o),
                Err(_) => break,
            }
        }
        // The slots are held until the outcomes are written.
        let (written, _slots): (Vec<Outcome>, Vec<OwnedSemaphorePermit>) =
            batch.into_iter().map(|p| (p.outcome, p._slot)).unzip();
        let mut wait = Duration::from_millis(100);
        loop {
            match store.finish(&written).await {
                Ok(applied) => {
                    stalled.store(false, Ordering::Release);
                    let lost = applied.iter().filter(|a| !**a).count();
                    if lost > 0 {
                        tracing::warn!(
                            lost,
                            "outcomes arrived after their lease expired; the records were re-claimed"
                        );
                    }
                    break;
                }
                Err(e) => {
                    stalled.store(true, Ordering::Release);
                    tracing::warn!(error = %e, records = written.len(), "writing send outcomes; retrying");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(2));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> Policy {
        Policy {
            app: "default".into(),
            bucket: None,
            max_in_flight: 1,
            lease: Duration::from_secs(30),
            max_attempts: 5,
            max_age: Duration::from_secs(3600),
            retry_base: Duration::from_millis(1000),
            retry_max: Duration::from_millis(8000),
            quota_retry: Duration::from_secs(60),
        }
    }

    #[test]
    fn backoff_doubles_with_jitter_and_stops_at_the_cap() {
        let p = policy();
        for (attempts, full_ms) in [
            (1, 1000),
            (2, 2000),
            (3, 4000),
            (4, 8000),
            (5, 8000),
            (30, 8000),
        ] {
            for _ in 0..50 {
                let d = p.retry_delay(Retry::Backoff, attempts, None).as_millis() as u64;
                assert!(
                    d >= full_ms / 2 && d <= full_ms,
                    "attempt {attempts}: {d} ms"
                );
            }
        }
    }

    #[test]
    fn retry_after_wins_and_quota_starts_at_a_minute() {
        let p = policy();
        assert_eq!(
            p.retry_delay(Retry::Backoff, 3, Some(Duration::from_secs(7))),
            Duration::from_secs(7)
        );
        let d = p.retry_delay(Retry::Quota, 1, None);
        assert!(
            d >= Duration::from_secs(30) && d <= Duration::from_secs(60),
            "{d:?}"
        );
    }
}
