//! Prometheus metrics: one registry, handles cloned where they are counted.
//!
//! Invariant: metric names and labels are fixed here; callers only bump them
//! (README.md lists them). The daemon's hooks (`stream_connected`,
//! `resync_finished`, ...) also update the live status (`status::Live`) that
//! `/ready` and the status page read, so the two never disagree.
//!
//! The `TASK_RUNNING` → 2xx latency is measured on Switchboard's own clock:
//! the consumer notes when it received a task's `TASK_RUNNING` (`saw_event`),
//! the applier reports each successful register (`applied`). The map of
//! receive instants is bounded (`RUNNING_CAPACITY`, oldest dropped first) and
//! each (task, backend) is observed once.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use prometheus::{
    Encoder, Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::status::live::{Live, now_string};

/// Tasks whose `TASK_RUNNING` receive instant is kept for the latency histogram.
pub const RUNNING_CAPACITY: usize = 65_536;

/// Someone else's registrations deregistered by explicit request
/// (`--replace marathon-consul`), by backend. Process-wide because the
/// backend that counts it is built without a `Metrics`; every `Metrics`
/// registers it.
pub static REPLACED: std::sync::LazyLock<IntCounterVec> = std::sync::LazyLock::new(|| {
    IntCounterVec::new(
        Opts::new(
            "switchboard_replaced_total",
            "Registrations of another tool (--replace) deregistered once Switchboard's own was in place, by backend",
        ),
        &["backend"],
    )
    .expect("metric definitions are static and valid")
});

#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// Events received, by Marathon event type.
    pub events: IntCounterVec,
    /// Events skipped: `reason` is `unknown_type` or `malformed`.
    pub events_skipped: IntCounterVec,
    /// Stream (re)connections and disconnections, by `what`.
    pub stream: IntCounterVec,
    /// Operations applied, by backend, op and result (`ok`, `retry`, `failed`).
    pub ops: IntCounterVec,
    /// Seconds one backend call took, by backend and op.
    pub op_seconds: HistogramVec,
    /// Seconds one planning pass took (desired state against every ledger).
    pub plan_seconds: prometheus::Histogram,
    /// Operations waiting, by backend.
    pub queue_depth: IntGaugeVec,
    /// Entries in the ledger, by backend.
    pub registered: IntGaugeVec,
    /// Instances waiting, by what they lack: `spec` or `task_facts`.
    pub pending: IntGaugeVec,
    /// Registrations refused (bad labels, conflicts), by backend (`labels` for app-wide label errors).
    pub rejections: IntGaugeVec,
    /// Permanent refusals in force (not retried until their input changes), by backend.
    pub refusals: IntGaugeVec,
    /// Permanent refusals recorded, by backend.
    pub refusals_recorded: IntCounterVec,
    /// Full resyncs, by result.
    pub resyncs: IntCounterVec,
    /// App spec fetches for pending instances, by result.
    pub spec_fetches: IntCounterVec,
    /// Marathon snapshots (`GET /v2/apps`) fetched by resyncs, by result.
    pub snapshot_fetches: IntCounterVec,
    /// 1 while the event stream is attached.
    pub stream_connected: IntGauge,
    /// Connections of the event stream after the first.
    pub stream_reconnects: IntCounter,
    /// Unix time of the last event received.
    pub last_event: Gauge,
    /// Seconds one full resync took (snapshot and every listing).
    pub resync_seconds: Histogram,
    /// Operations queued by resyncs, by backend.
    pub resync_changes: IntCounterVec,
    /// Unix time of the last finished resync.
    pub last_resync: Gauge,
    /// Seconds from receiving a task's `TASK_RUNNING` to the backend's 2xx for it.
    pub running_to_registered: HistogramVec,
    /// 1 when `/ready` answers 200.
    pub ready: IntGauge,
    /// `REPLACED`, as registered here.
    pub replaced: IntCounterVec,
    /// What `/ready` and the status page show live.
    pub live: Live,
    /// When each task's `TASK_RUNNING` was received, bounded.
    running: Arc<Mutex<RunningClock>>,
}

/// Receive instants of `TASK_RUNNING`, oldest dropped first past the capacity.
#[derive(Default)]
struct RunningClock {
    /// Task id → when its `TASK_RUNNING` arrived, and the backends observed since.
    at: HashMap<String, (Instant, Vec<String>)>,
    order: VecDeque<String>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        macro_rules! reg {
            ($m:expr) => {{
                let m = $m.expect("metric definitions are static and valid");
                registry.register(Box::new(m.clone())).expect("metric names are unique");
                m
            }};
        }
        Metrics {
            events: reg!(IntCounterVec::new(
                Opts::new("switchboard_events_total", "Marathon events received, by type"),
                &["type"]
            )),
            events_skipped: reg!(IntCounterVec::new(
                Opts::new("switchboard_events_skipped_total", "Events skipped, by reason"),
                &["reason"]
            )),
            stream: reg!(IntCounterVec::new(
                Opts::new("switchboard_stream_total", "Event stream connections and disconnections"),
                &["what"]
            )),
            ops: reg!(IntCounterVec::new(
                Opts::new("switchboard_ops_total", "Backend operations, by backend, op and result"),
                &["backend", "op", "result"]
            )),
            op_seconds: reg!(HistogramVec::new(
                HistogramOpts::new("switchboard_op_seconds", "Duration of one backend call")
                    .buckets(vec![0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]),
                &["backend", "op"]
            )),
            plan_seconds: reg!(prometheus::Histogram::with_opts(
                HistogramOpts::new("switchboard_plan_seconds", "Duration of one planning pass")
                    .buckets(vec![0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0])
            )),
            queue_depth: reg!(IntGaugeVec::new(
                Opts::new("switchboard_queue_depth", "Operations waiting, by backend"),
                &["backend"]
            )),
            registered: reg!(IntGaugeVec::new(
                Opts::new("switchboard_registrations", "Registrations in the ledger, by backend"),
                &["backend"]
            )),
            pending: reg!(IntGaugeVec::new(
                Opts::new("switchboard_pending_instances", "Instances waiting, by what they lack"),
                &["lack"]
            )),
            rejections: reg!(IntGaugeVec::new(
                Opts::new("switchboard_rejections", "Registrations refused, by backend"),
                &["backend"]
            )),
            refusals: reg!(IntGaugeVec::new(
                Opts::new("switchboard_refusals", "Permanent refusals in force, by backend"),
                &["backend"]
            )),
            refusals_recorded: reg!(IntCounterVec::new(
                Opts::new("switchboard_refusals_recorded_total", "Permanent refusals recorded, by backend"),
                &["backend"]
            )),
            resyncs: reg!(IntCounterVec::new(
                Opts::new("switchboard_resyncs_total", "Full resyncs, by result"),
                &["result"]
            )),
            spec_fetches: reg!(IntCounterVec::new(
                Opts::new("switchboard_spec_fetches_total", "App spec fetches, by result"),
                &["result"]
            )),
            snapshot_fetches: reg!(IntCounterVec::new(
                Opts::new("switchboard_snapshot_fetches_total", "Marathon snapshots fetched by resyncs, by result"),
                &["result"]
            )),
            stream_connected: reg!(IntGauge::new(
                "switchboard_stream_connected",
                "1 while the event stream is attached"
            )),
            stream_reconnects: reg!(IntCounter::new(
                "switchboard_stream_reconnects_total",
                "Event stream connections after the first"
            )),
            last_event: reg!(Gauge::new("switchboard_last_event_timestamp_seconds", "Unix time of the last event")),
            resync_seconds: reg!(Histogram::with_opts(
                HistogramOpts::new("switchboard_resync_duration_seconds", "Duration of one full resync")
                    .buckets(vec![0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0])
            )),
            resync_changes: reg!(IntCounterVec::new(
                Opts::new("switchboard_resync_changes_total", "Operations queued by resyncs, by backend"),
                &["backend"]
            )),
            last_resync: reg!(Gauge::new(
                "switchboard_last_resync_timestamp_seconds",
                "Unix time of the last finished resync"
            )),
            running_to_registered: reg!(HistogramVec::new(
                HistogramOpts::new(
                    "switchboard_running_to_registered_seconds",
                    "From receiving TASK_RUNNING to the backend's 2xx, on Switchboard's clock"
                )
                .buckets(vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0]),
                &["backend"]
            )),
            ready: reg!(IntGauge::new("switchboard_ready", "1 when /ready answers 200")),
            replaced: reg!(Ok::<_, prometheus::Error>(REPLACED.clone())),
            live: Live::default(),
            running: Arc::default(),
            registry: {
                let build = IntGaugeVec::new(
                    Opts::new("switchboard_build_info", "Always 1; the version is a label"),
                    &["version"],
                )
                .expect("metric definitions are static and valid");
                registry.register(Box::new(build.clone())).expect("metric names are unique");
                build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
                registry
            },
        }
    }

    /// The event stream attached to `endpoint`.
    pub fn stream_connected(&self, endpoint: &str) {
        self.stream.with_label_values(&["connected"]).inc();
        self.stream_connected.set(1);
        let mut live = self.live.lock();
        if live.ever_connected {
            self.stream_reconnects.inc();
            live.stream.reconnects += 1;
        }
        live.ever_connected = true;
        live.stream.connected = true;
        live.stream.endpoint = Some(endpoint.to_owned());
        live.stream.since = Some(now_string());
        live.stream.last_error = None;
    }

    /// The event stream went down.
    pub fn stream_disconnected(&self, reason: &str) {
        self.stream.with_label_values(&["disconnected"]).inc();
        self.stream_connected.set(0);
        let mut live = self.live.lock();
        live.stream.connected = false;
        live.stream.since = Some(now_string());
        live.stream.last_error = Some(reason.to_owned());
    }

    /// One Marathon event received (before folding); notes a `TASK_RUNNING`'s
    /// receive instant for the latency histogram.
    pub fn saw_event(&self, event: &crate::marathon::event::Event) {
        if let crate::marathon::event::Event::Status(facts) = event
            && facts.state == crate::model::TaskState::Running
        {
            self.task_running(&facts.task_id.to_string(), Instant::now());
        }
    }

    /// Marks the instant an SSE event arrived (the stream's last event).
    pub fn event_received(&self) {
        let now = crate::model::Timestamp::now();
        self.last_event.set(now.0 as f64 / 1000.0);
        self.live.lock().stream.last_event = Some(now.to_string());
    }

    /// Notes when `task_id`'s `TASK_RUNNING` was received (the first time only).
    pub fn task_running(&self, task_id: &str, at: Instant) {
        let mut clock = self.running.lock().unwrap_or_else(|p| p.into_inner());
        if clock.at.contains_key(task_id) {
            return;
        }
        if clock.order.len() >= RUNNING_CAPACITY
            && let Some(old) = clock.order.pop_front()
        {
            clock.at.remove(&old);
        }
        clock.at.insert(task_id.to_owned(), (at, Vec::new()));
        clock.order.push_back(task_id.to_owned());
    }

    /// A backend answered 2xx to `op`: observes the `TASK_RUNNING` → 2xx
    /// latency of its task, once per task and backend.
    pub fn applied(&self, backend: &str, op: &crate::plan::Op) {
        let crate::plan::Op::Register(reg) = op else { return };
        let mut clock = self.running.lock().unwrap_or_else(|p| p.into_inner());
        let Some((at, seen)) = clock.at.get_mut(&reg.task_id) else { return };
        if seen.iter().any(|b| b == backend) {
            return;
        }
        seen.push(backend.to_owned());
        self.running_to_registered.with_label_values(&[backend]).observe(at.elapsed().as_secs_f64());
    }

    /// Tasks whose receive instant is kept (for tests of the bound).
    pub fn running_tracked(&self) -> usize {
        self.running.lock().unwrap_or_else(|p| p.into_inner()).at.len()
    }

    /// A resync could not read Marathon's snapshot.
    pub fn resync_failed(&self, started: Instant, error: &str) {
        self.snapshot_fetches.with_label_values(&["error"]).inc();
        self.resync_seconds.observe(started.elapsed().as_secs_f64());
        let mut live = self.live.lock();
        live.resync.last_at = Some(now_string());
        live.resync.last_duration_ms = Some(started.elapsed().as_millis() as u64);
        live.resync.last_changes.clear();
        live.resync.last_failures = [("marathon".to_owned(), error.to_owned())].into();
    }

    /// A resync read Marathon and listed every backend it could: what it
    /// queued per backend and which backends failed.
    pub fn resync_finished(&self, started: Instant, report: &crate::plan::ResyncReport) {
        self.snapshot_fetches.with_label_values(&["ok"]).inc();
        let took = started.elapsed();
        self.resync_seconds.observe(took.as_secs_f64());
        let now = crate::model::Timestamp::now();
        self.last_resync.set(now.0 as f64 / 1000.0);
        for (backend, ops) in &report.ops {
            self.resync_changes.with_label_values(&[backend]).inc_by(ops.len() as u64);
        }
        let mut live = self.live.lock();
        live.resync.first_done = true;
        live.resync.last_at = Some(now.to_string());
        live.resync.last_duration_ms = Some(took.as_millis() as u64);
        live.resync.last_changes = report.ops.iter().map(|(b, ops)| (b.to_string(), ops.len())).collect();
        live.resync.last_failures = report.failed.iter().map(|(b, e)| (b.to_string(), e.clone())).collect();
        live.last_resync_unix = Some(now.0 as f64 / 1000.0);
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let ready = crate::status::live::not_ready_reasons(&self.live.snapshot(), true).is_empty();
        self.ready.set(ready as i64);
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// The span a backend call for `op` runs in: every line a backend logs
/// about it carries the app id and task id.
pub fn op_span(backend: &str, op: &crate::plan::Op) -> tracing::Span {
    let r = op.registration();
    tracing::info_span!("op", backend, op = op.verb(), app_id = %r.app_id, task_id = %r.task_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Registration;
    use crate::plan::Op;

    fn reg(task: &str) -> Registration {
        Registration {
            id: format!("{task}:31000"),
            service: "web".into(),
            app_id: "/web".into(),
            task_id: task.into(),
            address: "10.0.0.1".into(),
            host: "10.0.0.1".into(),
            port: 31000,
            tags: vec![],
            consul: true,
            checks: vec![],
            healthy: None,
            has_health_checks: false,
            routes: Default::default(),
        }
    }

    fn count(m: &Metrics, backend: &str) -> u64 {
        m.running_to_registered.with_label_values(&[backend]).get_sample_count()
    }

    #[test]
    fn running_to_registered_is_observed_once_per_task_and_backend() {
        let m = Metrics::new();
        m.task_running("t1", Instant::now());
        m.applied("consul", &Op::Register(reg("t1")));
        m.applied("consul", &Op::Register(reg("t1")));
        m.applied("kong", &Op::Register(reg("t1")));
        m.applied("consul", &Op::Register(reg("unknown")));
        assert_eq!((count(&m, "consul"), count(&m, "kong")), (1, 1));
    }

    #[test]
    fn the_running_clock_is_bounded() {
        let m = Metrics::new();
        let now = Instant::now();
        for i in 0..RUNNING_CAPACITY + 10 {
            m.task_running(&format!("t{i}"), now);
        }
        assert_eq!(m.running_tracked(), RUNNING_CAPACITY);
        m.applied("consul", &Op::Register(reg("t0")));
        assert_eq!(count(&m, "consul"), 0, "the oldest was dropped");
    }

    #[test]
    fn build_info_carries_the_version() {
        let text = Metrics::new().render();
        assert!(text.contains(&format!("switchboard_build_info{{version=\"{}\"}} 1", env!("CARGO_PKG_VERSION"))));
    }
}
