//! The harness's result: one serde structure (`--json`) and its markdown
//! table. Pure.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::bench::floor::FloorResult;
use crate::bench::stats::Summary;
use crate::sim::scenario::PerBackend;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub scenario: ScenarioInfo,
    pub machine: Machine,
    /// Absent when `--no-floor`.
    pub floor: Option<Floor>,
    pub cold_resync: Phase,
    pub idle_resync: Idle,
    pub storm: Stream,
    pub churn: Stream,
    pub daemon: Daemon,
    /// Render time of the status page after the cold resync.
    #[serde(default)]
    pub status_page: StatusPage,
    /// Every phase converged.
    pub ok: bool,
}

/// `GET /` of the daemon (the HTML status page, server-side rendered from
/// the whole store), timed from the harness over loopback.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatusPage {
    pub ran: bool,
    /// Instances the store held (the scenario's).
    pub instances: usize,
    pub fetches: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
    pub bytes: usize,
    /// `GET /api/status` (every app, JSON) once, for comparison.
    pub api_ms: f64,
    pub api_bytes: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ScenarioInfo {
    pub apps: usize,
    pub instances: usize,
    pub backends: Vec<String>,
    pub latency: Vec<String>,
    /// Backends given as URLs of real servers instead of simulators.
    pub real: Vec<String>,
    /// Marathon <= 1.6 deployment events (full app definitions).
    #[serde(default)]
    pub heavy_plans: bool,
    pub out_of_order: f64,
    pub churn_per_second: f64,
    pub churn_seconds: f64,
    /// Registrations every backend together should hold.
    pub expected: PerBackend,
    /// What `--label` said (e.g. the commit measured).
    pub label: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub mem_gib: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Floor {
    pub per_backend: BTreeMap<String, FloorResult>,
    /// Every backend in parallel, each one write after another.
    pub sequential_s: f64,
    /// Every backend in parallel, each `concurrency` writes at a time.
    pub concurrent_s: f64,
    pub concurrency: usize,
    /// The faster of the two: what ratios are relative to.
    pub best_s: f64,
}

/// A phase that ends when every backend holds what it should.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Phase {
    pub ran: bool,
    pub converged: bool,
    /// Until convergence (or the deadline).
    pub seconds: f64,
    pub deadline_s: f64,
    pub expected: PerBackend,
    pub held: PerBackend,
    pub extra: PerBackend,
    /// `seconds / floor.best_s`.
    pub ratio_to_floor: Option<f64>,
    /// Daemon CPU seconds spent in the phase.
    pub cpu_s: f64,
    /// The daemon's peak RSS (VmHWM) since it started, read at the end of
    /// the phase (the cold resync has a process of its own; idle, storm and
    /// churn share the second), and its RSS then (VmRSS).
    #[serde(default)]
    pub peak_rss_mib: f64,
    #[serde(default)]
    pub rss_mib: f64,
    /// Why it did not converge, in words.
    pub note: Option<String>,
}

/// A phase driven by streamed events (storm, churn).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Stream {
    pub phase: Phase,
    /// Events the simulator sent, and the daemon's count of events received.
    pub events_sent: u64,
    pub events_received: u64,
    pub events_per_s: f64,
    /// Instances started (storm: deployed; churn: restarted).
    pub instances: u64,
    /// Per backend: `TASK_RUNNING` sent → registration stored.
    pub latency: BTreeMap<String, Summary>,
    /// Sent instances that never arrived, per backend.
    pub missing: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Idle {
    pub ran: bool,
    pub converged: bool,
    pub seconds: f64,
    pub requests: PerBackend,
    pub writes: PerBackend,
    pub marathon_snapshots: usize,
    pub marathon_app_fetches: usize,
    pub note: Option<String>,
    /// The restarted daemon's peak RSS (VmHWM) at the end of its resync.
    #[serde(default)]
    pub peak_rss_mib: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Daemon {
    pub peak_rss_mib: f64,
    pub cpu_s: f64,
    pub write_bytes: u64,
    pub store_bytes: u64,
    pub store_bytes_per_instance: f64,
    /// Blocks the store's files take (`store_bytes` is their apparent
    /// size; sled's files can have holes).
    #[serde(default)]
    pub store_allocated_bytes: u64,
    /// What the store held at the end, read by the harness once the daemon
    /// stopped.
    #[serde(default)]
    pub contents: StoreContents,
}

/// The live data of the store at the end of a run (`Store::footprint`,
/// `Store::instance_census`): what sled's files would hold without old
/// page versions.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreContents {
    pub read: bool,
    /// Records of every tree, and the bytes of their keys and values.
    pub records: u64,
    pub live_bytes: u64,
    /// Per tree: records and bytes (keys + values).
    pub trees: BTreeMap<String, (u64, u64)>,
    /// Instance records: live ones and tombstones, with their bytes.
    pub instances_live: u64,
    pub instances_live_bytes: u64,
    pub tombstones: u64,
    pub tombstone_bytes: u64,
}

fn per_backend_line(p: &PerBackend, backends: &[String]) -> String {
    backends
        .iter()
        .map(|b| {
            let v = match b.as_str() {
                "consul" => p.consul,
                "kong" => p.kong,
                _ => p.vulcand,
            };
            format!("{b} {v}")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// One table row per backend: `TASK_RUNNING` → registration percentiles.
fn latency_rows(out: &mut String, phase: &str, latency: &BTreeMap<String, Summary>) {
    for (name, l) in latency {
        let _ = writeln!(
            out,
            "| {phase}: TASK_RUNNING → {name} (n={}) | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms | |",
            l.count, l.p50_ms, l.p99_ms, l.max_ms
        );
    }
}

fn ratio(r: Option<f64>) -> String {
    r.map(|r| format!("{r:.1}×")).unwrap_or_else(|| "–".to_owned())
}

fn phase_value(p: &Phase, backends: &[String]) -> String {
    if !p.ran {
        return "not run".to_owned();
    }
    if p.converged {
        format!("{:.2} s", p.seconds)
    } else {
        format!(
            "did not converge in {:.0} s: {} of {}",
            p.deadline_s,
            per_backend_line(&p.held, backends),
            per_backend_line(&p.expected, backends)
        )
    }
}

impl Report {
    /// The markdown table (plus a heading line) printed without `--json`.
    pub fn markdown(&self) -> String {
        let s = &self.scenario;
        let b = &s.backends;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Switchboard benchmark: {} apps × {} instances ({}{}), latency {}, {} CPUs, {:.0} GiB{}",
            s.apps,
            s.instances,
            b.join("+"),
            if s.heavy_plans { ", heavy plans" } else { "" },
            if s.latency.is_empty() { "none".to_owned() } else { s.latency.join(" ") },
            self.machine.cpus,
            self.machine.mem_gib,
            if s.label.is_empty() { String::new() } else { format!(", {}", s.label) }
        );
        let _ = writeln!(out);
        let _ = writeln!(out, "| measure | value | vs floor |");
        let _ = writeln!(out, "|---|---|---|");
        if let Some(f) = &self.floor {
            for (name, r) in &f.per_backend {
                let _ = writeln!(
                    out,
                    "| floor {name}: {} writes | {:.2} s one at a time ({:.3} ms/op), {:.2} s at {} | |",
                    r.writes, r.sequential_s, r.per_op_ms, r.concurrent_s, f.concurrency
                );
            }
            let _ = writeln!(
                out,
                "| floor, all backends in parallel | {:.2} s one at a time, {:.2} s at {} | 1.0× |",
                f.sequential_s, f.concurrent_s, f.concurrency
            );
        }
        let c = &self.cold_resync;
        let _ = writeln!(out, "| cold resync | {} | {} |", phase_value(c, b), ratio(c.ratio_to_floor));
        let st = &self.storm;
        let _ = writeln!(
            out,
            "| event storm: {} instances redeployed, {} events, {:.0}% out of order | {} | {} |",
            st.instances,
            st.events_sent,
            s.out_of_order * 100.0,
            phase_value(&st.phase, b),
            ratio(st.phase.ratio_to_floor)
        );
        let _ = writeln!(out, "| event storm: events/s received by the daemon | {:.0} | |", st.events_per_s);
        latency_rows(&mut out, "event storm", &st.latency);
        let ch = &self.churn;
        let _ = writeln!(
            out,
            "| churn: {:.0}%/s for {:.0} s, {} restarted | {} | |",
            s.churn_per_second * 100.0,
            s.churn_seconds,
            ch.instances,
            phase_value(&ch.phase, b)
        );
        latency_rows(&mut out, "churn", &ch.latency);
        let i = &self.idle_resync;
        let idle = if !i.ran {
            "not run".to_owned()
        } else {
            format!(
                "{}writes: {}; requests: {}; Marathon: {} snapshot(s), {} app fetch(es); {:.2} s",
                if i.converged { "" } else { "did not finish: " },
                per_backend_line(&i.writes, b),
                per_backend_line(&i.requests, b),
                i.marathon_snapshots,
                i.marathon_app_fetches,
                i.seconds
            )
        };
        let unseen =
            if s.real.is_empty() { String::new() } else { format!(" ({} real: not counted)", s.real.join(", ")) };
        let _ = writeln!(out, "| idle resync (daemon restarted, nothing changed){unseen} | {idle} | |");
        let p = &self.status_page;
        if p.ran {
            let _ = writeln!(
                out,
                "| status page `/` at {} instances ({} fetches, {:.0} KiB) | min {:.1} ms, median {:.1} ms, max {:.1} ms | |",
                p.instances,
                p.fetches,
                p.bytes as f64 / 1024.0,
                p.min_ms,
                p.median_ms,
                p.max_ms
            );
            let _ = writeln!(
                out,
                "| `/api/status` (all apps, JSON, {:.1} MiB) | {:.0} ms | |",
                p.api_bytes as f64 / 1_048_576.0,
                p.api_ms
            );
        }
        let d = &self.daemon;
        let _ = writeln!(out, "| daemon peak RSS (VmHWM) | {:.1} MiB | |", d.peak_rss_mib);
        let _ = writeln!(
            out,
            "| daemon peak RSS after cold / idle / storm / churn | {:.1} / {:.1} / {:.1} / {:.1} MiB (RSS at their ends: {:.1} / – / {:.1} / {:.1}) | |",
            c.peak_rss_mib,
            i.peak_rss_mib,
            st.phase.peak_rss_mib,
            ch.phase.peak_rss_mib,
            c.rss_mib,
            st.phase.rss_mib,
            ch.phase.rss_mib
        );
        let _ = writeln!(out, "| daemon CPU | {:.2} s | |", d.cpu_s);
        let _ = writeln!(
            out,
            "| store on disk | {:.1} MiB ({:.0} B per instance; blocks in use {:.1} MiB) | |",
            d.store_bytes as f64 / 1_048_576.0,
            d.store_bytes_per_instance,
            d.store_allocated_bytes as f64 / 1_048_576.0
        );
        let k = &d.contents;
        if k.read {
            let running = (s.apps * s.instances).max(1) as f64;
            let _ = writeln!(
                out,
                "| store live data (keys + values) | {:.1} MiB in {} records ({:.0} B per running instance; on disk {:.0} B per record) | |",
                k.live_bytes as f64 / 1_048_576.0,
                k.records,
                k.live_bytes as f64 / running,
                d.store_bytes as f64 / (k.records.max(1) as f64)
            );
            let _ = writeln!(
                out,
                "| store instance records: live / tombstones | {} ({:.0} B each) / {} ({:.0} B each) | |",
                k.instances_live,
                k.instances_live_bytes as f64 / (k.instances_live.max(1) as f64),
                k.tombstones,
                k.tombstone_bytes as f64 / (k.tombstones.max(1) as f64)
            );
        }
        let _ = writeln!(out, "| bytes written by the daemon | {:.1} MiB | |", d.write_bytes as f64 / 1_048_576.0);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markdown_says_what_did_not_converge() {
        let mut r = Report {
            scenario: ScenarioInfo {
                apps: 2,
                instances: 3,
                backends: vec!["consul".into(), "kong".into()],
                ..Default::default()
            },
            ..Default::default()
        };
        r.cold_resync = Phase {
            ran: true,
            converged: false,
            deadline_s: 60.0,
            expected: PerBackend { consul: 6, kong: 3, vulcand: 0 },
            held: PerBackend { consul: 4, kong: 3, vulcand: 0 },
            ..Default::default()
        };
        r.storm.phase =
            Phase { ran: true, converged: true, seconds: 1.5, ratio_to_floor: Some(3.0), ..Default::default() };
        r.storm.latency.insert("consul".into(), Summary { count: 6, p50_ms: 1.0, p99_ms: 2.0, max_ms: 3.0 });
        let md = r.markdown();
        assert!(
            md.contains("| cold resync | did not converge in 60 s: consul 4, kong 3 of consul 6, kong 3 | – |"),
            "{md}"
        );
        assert!(md.contains("1.50 s | 3.0× |"), "{md}");
        assert!(md.contains("TASK_RUNNING → consul (n=6) | p50 1.0 ms, p99 2.0 ms, max 3.0 ms"), "{md}");
        let back: Report = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }
}
