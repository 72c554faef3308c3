//! Prometheus metrics: one registry, handles cloned where they are counted.
//!
//! Invariant: metric names and labels are fixed here; callers only bump them.

use prometheus::{Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

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
            registry,
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
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
