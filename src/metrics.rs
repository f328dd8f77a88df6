//! Every metric pushgate exports, in one place, and the `/metrics` text.
//!
//! One registry per process (there is one pushgate per process); parts record into
//! it through [`metrics()`]. Label values come from small fixed sets (port names,
//! reasons, statuses, error classes), never from message contents.

use std::sync::atomic::AtomicU64;
use std::sync::{Mutex, OnceLock};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    /// Frames answered, by port and result (`stored`, `duplicate`, `rejected`).
    pub frames: Family<Labels, Counter>,
    /// Frames refused, by port and reason.
    pub rejected: Family<Labels, Counter>,
    /// Records written by the group commit (new records only).
    pub stored: Counter,
    /// Route decisions, by port and resulting status.
    pub decisions: Family<Labels, Counter>,
    /// FCM sends by outcome (`accepted`, `refused`) and error class.
    pub sends: Family<Labels, Counter>,
    /// Fallback rung attempts, by rung and outcome (`sent`, `retrying`, `failed`, `expired`).
    pub fallback_sends: Family<Labels, Counter>,
    /// Seconds from request to FCM's answer.
    pub send_seconds: Histogram,
    /// Sends that will be tried again.
    pub retries: Counter,
    /// Ids in the `due` and `inflight` queues (sampled at scrape).
    pub due: Gauge,
    pub inflight: Gauge,
    /// Per app and lane, sampled at scrape by [`Metrics::set_queues`]: pushes due now,
    /// pushes due later, and the oldest due push's wait in seconds.
    queue_lane_due: Family<Labels, Gauge>,
    queue_lane_scheduled: Family<Labels, Gauge>,
    queue_oldest_seconds: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Held while the per-queue gauges are replaced and while rendering, so a scrape
    /// never shows them half replaced.
    queues_replacing: Mutex<()>,
    /// Seconds per group-commit round trip to Redis.
    pub redis_seconds: Histogram,
    /// Records per group-commit round trip.
    pub commit_batch: Histogram,
    /// 1 for the state each port is in (sampled at scrape).
    pub port_state: Family<Labels, Gauge>,
    /// Records removed by retention.
    pub retention_removed: Counter,
    /// Config reloads (SIGHUP) by result (`applied`, `failed`).
    pub reloads: Family<Labels, Counter>,
    /// Times a Redis connection followed Sentinel to a new master.
    pub master_switches: Counter,
    /// Group commits whose `WAIT` saw too few replicas (their frames got error acks).
    pub replication_timeouts: Counter,
    /// Group commits tried again after a connection failure.
    pub commit_retries: Counter,
    /// Connect-mode port leases taken and lost by this node.
    pub port_leases: Family<Labels, Counter>,
    /// Sign-in attempts by outcome (`ok`, `wrong`, `throttled`, `busy`, `refused`).
    pub logins: Family<Labels, Counter>,
    /// Admin connections and live streams refused, by reason.
    pub admin_refused: Family<Labels, Counter>,
    /// Listen-port connections turned away, by port and reason (`not_allowed`,
    /// `per_addr`, `full`, `first_frame_timeout`).
    pub ingest_refused: Family<Labels, Counter>,
}

pub fn metrics() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

impl Metrics {
    fn new() -> Metrics {
        let mut registry = Registry::with_prefix("pushgate");
        let m = Metrics {
            frames: Family::default(),
            rejected: Family::default(),
            stored: Counter::default(),
            decisions: Family::default(),
            sends: Family::default(),
            fallback_sends: Family::default(),
            send_seconds: Histogram::new(exponential_buckets(0.001, 2.0, 16)),
            retries: Counter::default(),
            due: Gauge::default(),
            inflight: Gauge::default(),
            queue_lane_due: Family::default(),
            queue_lane_scheduled: Family::default(),
            queue_oldest_seconds: Family::default(),
            queues_replacing: Mutex::new(()),
            redis_seconds: Histogram::new(exponential_buckets(0.0001, 2.0, 16)),
            commit_batch: Histogram::new(exponential_buckets(1.0, 2.0, 12)),
            port_state: Family::default(),
            retention_removed: Counter::default(),
            reloads: Family::default(),
            master_switches: Counter::default(),
            replication_timeouts: Counter::default(),
            commit_retries: Counter::default(),
            port_leases: Family::default(),
            logins: Family::default(),
            admin_refused: Family::default(),
            ingest_refused: Family::default(),
            registry: Registry::default(),
        };
        registry.register(
            "console_sign_ins",
            "Console sign-in attempts, by outcome",
            m.logins.clone(),
        );
        registry.register(
            "admin_refused",
            "Admin connections and live streams refused, by reason",
            m.admin_refused.clone(),
        );
        registry.register(
            "frames",
            "Frames answered, by port and result",
            m.frames.clone(),
        );
        registry.register(
            "frames_rejected",
            "Frames refused, by port and reason",
            m.rejected.clone(),
        );
        registry.register(
            "records_stored",
            "New records written to Redis",
            m.stored.clone(),
        );
        registry.register(
            "route_decisions",
            "Route decisions, by port and status",
            m.decisions.clone(),
        );
        registry.register(
            "fcm_sends",
            "FCM sends by outcome and error class",
            m.sends.clone(),
        );
        registry.register(
            "fallback_sends",
            "Fallback rung attempts (Alimtalk, SMS) by rung and outcome",
            m.fallback_sends.clone(),
        );
        registry.register(
            "fcm_send_seconds",
            "Seconds from an FCM request to its answer",
            m.send_seconds.clone(),
        );
        registry.register(
            "fcm_retries",
            "Sends scheduled to be tried again",
            m.retries.clone(),
        );
        registry.register(
            "queue_due",
            "Records waiting in the due queue",
            m.due.clone(),
        );
        registry.register(
            "queue_lane_due",
            "Pushes due now, per app and lane",
            m.queue_lane_due.clone(),
        );
        registry.register(
            "queue_lane_scheduled",
            "Pushes due later (reserved times, retries), per app and lane",
            m.queue_lane_scheduled.clone(),
        );
        registry.register(
            "queue_oldest_seconds",
            "Seconds the oldest due push has waited, per app and lane (0 when none is due)",
            m.queue_oldest_seconds.clone(),
        );
        registry.register(
            "queue_inflight",
            "Records claimed by a sender",
            m.inflight.clone(),
        );
        registry.register(
            "redis_commit_seconds",
            "Seconds per group-commit round trip",
            m.redis_seconds.clone(),
        );
        registry.register(
            "commit_batch_records",
            "Records per group-commit round trip",
            m.commit_batch.clone(),
        );
        registry.register(
            "port_state",
            "1 for each port's current state",
            m.port_state.clone(),
        );
        registry.register("reloads", "Config reloads by result", m.reloads.clone());
        registry.register(
            "redis_master_switches",
            "Times a Redis connection followed Sentinel to a new master",
            m.master_switches.clone(),
        );
        registry.register(
            "replication_timeouts",
            "Group commits that too few replicas confirmed in time (frames got error acks)",
            m.replication_timeouts.clone(),
        );
        registry.register(
            "commit_retries",
            "Group commits tried again after a Redis connection failure",
            m.commit_retries.clone(),
        );
        registry.register(
            "port_leases",
            "Connect-mode port leases by port and event (acquired, lost, released)",
            m.port_leases.clone(),
        );
        registry.register(
            "ingest_refused",
            "Listen-port connections refused at accept or closed without a first frame, by port and reason",
            m.ingest_refused.clone(),
        );
        registry.register(
            "retention_removed",
            "Records removed by retention",
            m.retention_removed.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Replace the per-queue gauges with these queues' (app, lane, due, scheduled,
    /// oldest due push's wait in ms): a queue not listed any more has no series.
    pub fn set_queues<'a>(&self, queues: impl IntoIterator<Item = QueueSample<'a>>) {
        let _replacing = self.queues_replacing.lock();
        self.queue_lane_due.clear();
        self.queue_lane_scheduled.clear();
        self.queue_oldest_seconds.clear();
        for q in queues {
            let labels = labels(&[("app", q.app), ("lane", q.lane)]);
            self.queue_lane_due.get_or_create(&labels).set(q.due as i64);
            self.queue_lane_scheduled
                .get_or_create(&labels)
                .set(q.scheduled as i64);
            self.queue_oldest_seconds
                .get_or_create(&labels)
                .set(q.oldest_ms as f64 / 1000.0);
        }
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let _replacing = self.queues_replacing.lock();
        let mut out = String::new();
        if encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}

/// One due queue's figures for [`Metrics::set_queues`].
pub struct QueueSample<'a> {
    pub app: &'a str,
    pub lane: &'a str,
    pub due: u64,
    pub scheduled: u64,
    pub oldest_ms: i64,
}

pub fn labels(pairs: &[(&'static str, &str)]) -> Labels {
    pairs.iter().map(|(k, v)| (*k, (*v).to_owned())).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_names_every_metric_with_its_labels() {
        let m = metrics();
        m.frames
            .get_or_create(&labels(&[("port", "t"), ("result", "stored")]))
            .inc();
        m.send_seconds.observe(0.02);
        let text = m.render();
        assert!(
            text.contains("pushgate_frames_total{port=\"t\",result=\"stored\"}"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE pushgate_fcm_send_seconds histogram"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "OpenMetrics text ends with EOF");
    }

    #[test]
    fn queue_gauges_are_replaced_whole_at_each_sample() {
        let m = metrics();
        let sample = |app, due| QueueSample {
            app,
            lane: "bulk",
            due,
            scheduled: 2,
            oldest_ms: 1500,
        };
        m.set_queues([sample("gone-app", 1), sample("kept-app", 7)]);
        let text = m.render();
        assert!(
            text.contains("pushgate_queue_lane_due{app=\"kept-app\",lane=\"bulk\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("pushgate_queue_oldest_seconds{app=\"kept-app\",lane=\"bulk\"} 1.5"),
            "{text}"
        );
        m.set_queues([sample("kept-app", 3)]);
        let text = m.render();
        assert!(!text.contains("gone-app"), "{text}");
        assert!(
            text.contains("pushgate_queue_lane_scheduled{app=\"kept-app\",lane=\"bulk\"} 2"),
            "{text}"
        );
    }
}
