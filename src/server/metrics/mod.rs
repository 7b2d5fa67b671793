//! The server's Prometheus metrics: one registry and every metric handle, recorded into through
//! small methods by the HTTP layer, the services, the committer and the store, and encoded in
//! the Prometheus text format (0.0.4, which every Prometheus and `promtool check metrics`
//! read) for `GET /metrics`.
//!
//! Names follow Prometheus conventions: the `orange_` prefix, `_total` on counters, base units
//! (`_seconds`, `_bytes`). No label carries an unbounded value: labels are route classes, status
//! classes, task, agent and job states, never an app id, task id, job id or command.
//!
//! Two kinds of figures:
//! - **Events** (counters and histograms) are recorded where they happen. Counters are the
//!   crate's atomics, so the per-request cost is one atomic add (the HTTP counters are created
//!   once at start and indexed by route and status class: no map and no lock per request).
//!   Histograms take a short lock of their own; they are observed per task move, per commit
//!   batch and per compaction, never per HTTP request.
//! - **State** (agents by status, parked polls, open tasks by state, queue depth, jobs by
//!   state, data directory size) is read at scrape time by [`state::StateGauges`], from the
//!   store's indexes with bounded scans and from the in-memory presence, cached for a few
//!   seconds so that frequent scrapes cost one read (see that module).

pub mod state;

use std::time::Duration;

use prometheus_client::encoding::prometheus_text::{self, encode};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Registry, Unit};

use crate::protocol::TaskStatus;

/// The content type of [`Metrics::encode`]'s text: `text/plain; version=0.0.4; charset=utf-8`.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Labels of one metric: fixed names, values from a closed set.
type Labels<const N: usize> = [(&'static str, &'static str); N];

/// What an HTTP request was for, as the request counters group them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteClass {
    /// The four endpoints of the original agent protocol (register, getTask, reportTask, ping).
    AgentOriginal,
    /// orange's own agent endpoints (output, facts, goodbye, batched reports, file chunks).
    AgentOrange,
    /// The operator API under `/api/v1/`.
    Admin,
    /// `/healthz`, `/readyz`, `/version`.
    Probe,
    /// `/metrics`.
    Metrics,
    /// Anything else (unknown paths).
    Other,
}

impl RouteClass {
    /// Every class, in the order of their counters.
    pub const ALL: [RouteClass; 6] = [
        RouteClass::AgentOriginal,
        RouteClass::AgentOrange,
        RouteClass::Admin,
        RouteClass::Probe,
        RouteClass::Metrics,
        RouteClass::Other,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            RouteClass::AgentOriginal => "agent_original",
            RouteClass::AgentOrange => "agent_orange",
            RouteClass::Admin => "admin",
            RouteClass::Probe => "probe",
            RouteClass::Metrics => "metrics",
            RouteClass::Other => "other",
        }
    }
}

/// Status classes of HTTP answers, in the order of their counters.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];
/// The overload answers counted on their own, with their label: too many requests, and
/// service unavailable.
const OVERLOAD_CODES: [(u16, &str); 2] = [(429, "429"), (503, "503")];

/// Something a transaction did to a task that the metrics count, handed over by the store once
/// the transaction has committed (an attempt that runs again or aborts counts nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TaskEvent {
    /// A task was queued (by an enqueue or by a job).
    Enqueued,
    /// A task was handed out to its agent, `waited_ms` after it was enqueued.
    Delivered {
        /// Milliseconds from enqueue to this hand-out.
        waited_ms: i64,
    },
    /// A task reached the final state `status`, `took_ms` after it was enqueued.
    Finished {
        /// Its final state.
        status: TaskStatus,
        /// Milliseconds from enqueue to the final state.
        took_ms: i64,
    },
    /// Output of a task was stored: `stored` bytes written, `dropped` older bytes removed by the
    /// output cap to make room.
    Output {
        /// Bytes written.
        stored: u64,
        /// Bytes removed by the cap.
        dropped: u64,
    },
}

/// Buckets of the enqueue → delivery and enqueue → result latencies, in seconds: from a task
/// handed to a parked poll at once to one that waited an hour for its agent.
const TASK_LATENCY_BUCKETS: [f64; 16] =
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];
/// Buckets of a compaction's duration, in seconds.
const COMPACTION_BUCKETS: [f64; 10] = [0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0];

/// The HTTP request counters, created once and indexed by route and status class.
struct HttpCounters {
    requests: Vec<[Counter; 5]>,
    overload: Vec<[Counter; 2]>,
}

/// Task counters and latency histograms.
struct TaskMetrics {
    enqueued: Counter,
    delivered: Counter,
    /// One counter per final state.
    finished: Vec<(TaskStatus, Counter)>,
    delivery_seconds: Histogram,
    result_seconds: Histogram,
}

/// The gauges set at scrape time from the store and the presence (see [`state`]).
pub struct StateHandles {
    /// Agents by status (online, offline, pending).
    pub agents: Family<Labels<1>, Gauge>,
    /// Long polls parked right now.
    pub parked_polls: Gauge,
    /// Open tasks by state (queued, delivered, running).
    pub tasks_open: Family<Labels<1>, Gauge>,
    /// Entries in the agents' queues.
    pub queue_depth: Gauge,
    /// Jobs by state.
    pub jobs: Family<Labels<1>, Gauge>,
    /// Bytes of the data directory on disk.
    pub data_dir_bytes: Gauge,
}

/// The registry and every metric handle.
pub struct Metrics {
    registry: Registry,
    http: HttpCounters,
    signature_failures: Counter,
    replays_refused: Counter,
    tasks: TaskMetrics,
    commit_batch_size: Histogram,
    commit_seconds: Histogram,
    output_stored_bytes: Counter,
    output_dropped_bytes: Counter,
    compactions: Counter,
    compaction_seconds: Histogram,
    state: StateHandles,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Every metric registered, at zero.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("orange");
        let http = http_counters(&mut registry);
        let tasks = task_metrics(&mut registry);
        let state = state_handles(&mut registry);
        let signature_failures = counter(
            &mut registry,
            "agent_signature_failures",
            "Agent calls refused for a bad signature or a wrong secret",
        );
        let replays_refused =
            counter(&mut registry, "agent_replays_refused", "Signed agent calls refused as replays");
        let commit_batch_size = Histogram::new(exponential_buckets(1.0, 2.0, 12));
        registry.register(
            "commit_batch_size",
            "Writes made durable by one sync of the write-ahead log",
            commit_batch_size.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.0001, 2.0, 16));
        registry.register_with_unit(
            "commit_duration",
            "Time of one sync of the write-ahead log",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let output_stored_bytes = Counter::default();
        registry.register_with_unit(
            "output_stored",
            "Task output bytes stored",
            Unit::Bytes,
            output_stored_bytes.clone(),
        );
        let output_dropped_bytes = Counter::default();
        registry.register_with_unit(
            "output_dropped",
            "Task output bytes dropped by the per-task output cap",
            Unit::Bytes,
            output_dropped_bytes.clone(),
        );
        let compactions = counter(&mut registry, "compactions", "Online compactions of the database");
        let compaction_seconds = Histogram::new(COMPACTION_BUCKETS);
        registry.register_with_unit(
            "compaction_duration",
            "Time of one online compaction, start to end",
            Unit::Seconds,
            compaction_seconds.clone(),
        );
        Metrics {
            registry,
            http,
            signature_failures,
            replays_refused,
            tasks,
            commit_batch_size,
            commit_seconds,
            output_stored_bytes,
            output_dropped_bytes,
            compactions,
            compaction_seconds,
            state,
        }
    }

    /// An HTTP answer with `status` to a request of `route`.
    pub fn http_response(&self, route: RouteClass, status: u16) {
        let row = route as usize;
        let class = usize::from(status / 100).saturating_sub(1).min(STATUS_CLASSES.len() - 1);
        self.http.requests[row][class].inc();
        if let Some(at) = OVERLOAD_CODES.iter().position(|(code, _)| *code == status) {
            self.http.overload[row][at].inc();
        }
    }

    /// An agent call refused for a bad signature or a wrong secret.
    pub fn signature_failed(&self) {
        self.signature_failures.inc();
    }

    /// A signed agent call refused because it was used before.
    pub fn replay_refused(&self) {
        self.replays_refused.inc();
    }

    /// The task events of a committed transaction.
    pub fn task_events(&self, events: &[TaskEvent]) {
        for event in events {
            match *event {
                TaskEvent::Enqueued => {
                    self.tasks.enqueued.inc();
                }
                TaskEvent::Delivered { waited_ms } => {
                    self.tasks.delivered.inc();
                    self.tasks.delivery_seconds.observe(seconds(waited_ms));
                }
                TaskEvent::Finished { status, took_ms } => {
                    if let Some((_, counter)) = self.tasks.finished.iter().find(|(s, _)| *s == status) {
                        counter.inc();
                    }
                    self.tasks.result_seconds.observe(seconds(took_ms));
                }
                TaskEvent::Output { stored, dropped } => self.output(stored, dropped),
            }
        }
    }

    /// One sync of the write-ahead log that answered `batch` waiters and took `took`.
    pub fn commit(&self, batch: usize, took: Duration) {
        self.commit_batch_size.observe(batch as f64);
        self.commit_seconds.observe(took.as_secs_f64());
    }

    /// Task output: `stored` bytes written, `dropped` bytes removed by the output cap.
    fn output(&self, stored: u64, dropped: u64) {
        self.output_stored_bytes.inc_by(stored);
        self.output_dropped_bytes.inc_by(dropped);
    }

    /// One online compaction that took `took`.
    pub fn compaction(&self, took: Duration) {
        self.compactions.inc();
        self.compaction_seconds.observe(took.as_secs_f64());
    }

    /// The gauges set at scrape time.
    pub fn state(&self) -> &StateHandles {
        &self.state
    }

    /// Every metric in the Prometheus text format ([`CONTENT_TYPE`]).
    pub fn encode(&self) -> String {
        let mut text = String::new();
        // Writing into a String cannot fail, and every label value is a static word.
        if encode(&mut text, &self.registry).is_err() {
            text.clear();
        }
        text
    }
}

/// Milliseconds as seconds; a clock step backwards counts as zero.
fn seconds(ms: i64) -> f64 {
    ms.max(0) as f64 / 1000.0
}

fn counter(registry: &mut Registry, name: &str, help: &str) -> Counter {
    let counter = Counter::default();
    registry.register(name, help, counter.clone());
    counter
}

fn http_counters(registry: &mut Registry) -> HttpCounters {
    let requests = Family::<Labels<2>, Counter>::default();
    registry.register(
        "http_requests",
        "HTTP requests answered, by route class and status class",
        requests.clone(),
    );
    let overload = Family::<Labels<2>, Counter>::default();
    registry.register(
        "http_overload_responses",
        "HTTP answers 429 (too many requests) and 503 (unavailable), by route class",
        overload.clone(),
    );
    let by_status = |route: RouteClass| {
        STATUS_CLASSES
            .map(|status| requests.get_or_create_owned(&[("route", route.as_str()), ("status", status)]))
    };
    let by_code = |route: RouteClass| {
        OVERLOAD_CODES
            .map(|(_, code)| overload.get_or_create_owned(&[("route", route.as_str()), ("code", code)]))
    };
    HttpCounters {
        requests: RouteClass::ALL.iter().map(|route| by_status(*route)).collect(),
        overload: RouteClass::ALL.iter().map(|route| by_code(*route)).collect(),
    }
}

fn task_metrics(registry: &mut Registry) -> TaskMetrics {
    let enqueued = counter(registry, "tasks_enqueued", "Tasks queued, by operators and by jobs");
    let delivered =
        counter(registry, "tasks_delivered", "Tasks handed out to agents (a redelivery counts again)");
    let finished = Family::<Labels<1>, Counter>::default();
    registry.register("tasks_finished", "Tasks that reached a final state, by that state", finished.clone());
    let delivery_seconds = Histogram::new(TASK_LATENCY_BUCKETS);
    registry.register_with_unit(
        "task_delivery",
        "Time from a task's enqueue to its hand-out to the agent",
        Unit::Seconds,
        delivery_seconds.clone(),
    );
    let result_seconds = Histogram::new(TASK_LATENCY_BUCKETS);
    registry.register_with_unit(
        "task_result",
        "Time from a task's enqueue to its final state",
        Unit::Seconds,
        result_seconds.clone(),
    );
    TaskMetrics {
        enqueued,
        delivered,
        finished: TaskStatus::ALL
            .into_iter()
            .filter(|status| status.is_final())
            .map(|status| (status, finished.get_or_create_owned(&[("state", status.as_str())])))
            .collect(),
        delivery_seconds,
        result_seconds,
    }
}

fn state_handles(registry: &mut Registry) -> StateHandles {
    let handles = StateHandles {
        agents: Family::default(),
        parked_polls: Gauge::default(),
        tasks_open: Family::default(),
        queue_depth: Gauge::default(),
        jobs: Family::default(),
        data_dir_bytes: Gauge::default(),
    };
    registry.register("agents", "Agents by status: online, offline, pending", handles.agents.clone());
    registry.register("parked_polls", "Agents' long polls parked right now", handles.parked_polls.clone());
    registry.register(
        "tasks_open",
        "Open tasks by state: queued, delivered, running",
        handles.tasks_open.clone(),
    );
    registry.register("queue_depth", "Tasks waiting in the agents' queues", handles.queue_depth.clone());
    registry.register("jobs", "Jobs kept (within retention) by state", handles.jobs.clone());
    registry.register_with_unit(
        "data_dir",
        "Size of the data directory on disk",
        Unit::Bytes,
        handles.data_dir_bytes.clone(),
    );
    handles
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the sample `name` with exactly `labels` in `text`.
    fn sample(text: &str, name: &str, labels: &str) -> Option<f64> {
        let wanted = if labels.is_empty() { name.to_owned() } else { format!("{name}{{{labels}}}") };
        text.lines()
            .filter_map(|line| line.rsplit_once(' '))
            .find(|(series, _)| *series == wanted)
            .and_then(|(_, value)| value.parse().ok())
    }

    #[test]
    fn http_answers_are_counted_by_route_and_status_class_and_overload_on_its_own() {
        let metrics = Metrics::new();
        metrics.http_response(RouteClass::AgentOriginal, 200);
        metrics.http_response(RouteClass::AgentOriginal, 429);
        metrics.http_response(RouteClass::Probe, 503);
        let text = metrics.encode();
        let requests = "orange_http_requests_total";
        assert_eq!(sample(&text, requests, r#"route="agent_original",status="2xx""#), Some(1.0));
        assert_eq!(sample(&text, requests, r#"route="agent_original",status="4xx""#), Some(1.0));
        assert_eq!(sample(&text, requests, r#"route="admin",status="2xx""#), Some(0.0), "created at zero");
        let overload = "orange_http_overload_responses_total";
        assert_eq!(sample(&text, overload, r#"route="agent_original",code="429""#), Some(1.0));
        assert_eq!(sample(&text, overload, r#"route="probe",code="503""#), Some(1.0));
        assert!(text.contains("# TYPE orange_http_requests_total counter\n"), "{text}");
    }

    #[test]
    fn task_events_feed_counters_and_latency_histograms() {
        let metrics = Metrics::new();
        metrics.task_events(&[
            TaskEvent::Enqueued,
            TaskEvent::Delivered { waited_ms: 20 },
            TaskEvent::Finished { status: TaskStatus::Lost, took_ms: 90_000 },
        ]);
        let text = metrics.encode();
        assert_eq!(sample(&text, "orange_tasks_enqueued_total", ""), Some(1.0));
        assert_eq!(sample(&text, "orange_tasks_finished_total", r#"state="lost""#), Some(1.0));
        assert_eq!(sample(&text, "orange_tasks_finished_total", r#"state="succeeded""#), Some(0.0));
        assert_eq!(sample(&text, "orange_task_delivery_seconds_bucket", r#"le="0.025""#), Some(1.0));
        assert_eq!(sample(&text, "orange_task_delivery_seconds_bucket", r#"le="0.01""#), Some(0.0));
        assert_eq!(sample(&text, "orange_task_result_seconds_count", ""), Some(1.0));
        assert_eq!(sample(&text, "orange_task_result_seconds_sum", ""), Some(90.0));
    }

    #[test]
    fn commits_output_and_compactions_are_recorded_in_base_units() {
        let metrics = Metrics::new();
        metrics.commit(3, Duration::from_millis(2));
        metrics.task_events(&[TaskEvent::Output { stored: 1000, dropped: 24 }]);
        metrics.compaction(Duration::from_secs(2));
        let text = metrics.encode();
        assert_eq!(sample(&text, "orange_commit_batch_size_sum", ""), Some(3.0));
        assert_eq!(sample(&text, "orange_commit_duration_seconds_count", ""), Some(1.0));
        assert_eq!(sample(&text, "orange_output_stored_bytes_total", ""), Some(1000.0));
        assert_eq!(sample(&text, "orange_output_dropped_bytes_total", ""), Some(24.0));
        assert_eq!(sample(&text, "orange_compactions_total", ""), Some(1.0));
        assert_eq!(sample(&text, "orange_compaction_duration_seconds_sum", ""), Some(2.0));
    }
}
