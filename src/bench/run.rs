//! The harness: starts `switchboard sim` and `switchboard run` as separate
//! processes, drives the phases through the simulator's control API, and
//! fills a [`Report`].
//!
//! Invariants:
//! - Every wait has a deadline; a phase that does not converge is reported
//!   ("did not converge in N s, X of Y") and the run goes on to the next.
//! - Child processes are killed on drop (`kill_on_drop`), so an error or a
//!   Ctrl-C never leaves a daemon or simulator behind.
//! - Only 127.0.0.1 is contacted, unless the user names real servers.
//! - Latencies are measured inside the simulator process, on its clock; this
//!   process only polls counts, so its own scheduling does not skew them.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};
use tracing::{info, warn};

use crate::bench::floor;
use crate::bench::procfs::{self, Usage};
use crate::bench::report::{
    Daemon, Floor, Idle, Machine, Phase, Report, ScenarioInfo, StatusPage, StoreContents, Stream,
};
use crate::bench::stats::summarize;
use crate::sim::cluster::{ArrivalReport, Counts};
use crate::sim::scenario::{PerBackend, Scenario};
use crate::sim::tap::{SimBackend, WriteLatency};

/// Everything a run needs, from the command line.
#[derive(Debug, Clone)]
pub struct Options {
    pub switchboard: PathBuf,
    pub scenario: Scenario,
    pub backends: Vec<SimBackend>,
    pub latency: Vec<WriteLatency>,
    /// Real servers instead of the simulators, per backend.
    pub real: Vec<(SimBackend, String)>,
    pub heavy_plans: bool,
    pub floor: bool,
    pub floor_concurrency: usize,
    pub out_of_order: f64,
    pub churn_per_second: f64,
    pub churn_seconds: f64,
    pub cold_deadline: Duration,
    pub storm_deadline: Duration,
    /// After the churn's last restart.
    pub churn_deadline: Duration,
    pub idle_deadline: Duration,
    /// A phase gives up when the daemon's HTTP server has not answered this long.
    pub hang_after: Duration,
    pub start_deadline: Duration,
    pub poll: Duration,
    /// Extra arguments for `switchboard run`.
    pub daemon_args: Vec<String>,
    pub work_dir: Option<PathBuf>,
    pub label: String,
    pub seed: u64,
    pub progress: indicatif::ProgressBar,
}

/// The simulator process and where it listens.
struct Sim {
    child: Child,
    urls: Value,
    control: String,
}

/// One `switchboard run` process.
struct DaemonProc {
    child: Child,
    pid: u32,
    metrics_url: String,
}

/// Sends SIGTERM and waits up to 10 s, then kills. Returns nothing: a
/// process that is already gone is fine.
async fn stop(child: &mut Child) {
    if let Some(pid) = child.id() {
        let _ = std::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status();
        if tokio::time::timeout(Duration::from_secs(10), child.wait()).await.is_ok() {
            return;
        }
        warn!(pid, "process ignored SIGTERM for 10 s; killing it");
    }
    let _ = child.kill().await;
}

fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("binding a probe port")?;
    Ok(l.local_addr()?.port())
}

async fn start_sim(o: &Options) -> anyhow::Result<Sim> {
    let mut cmd = Command::new(&o.switchboard);
    cmd.arg("sim")
        .arg("--apps")
        .arg(o.scenario.apps.to_string())
        .arg("--instances")
        .arg(o.scenario.instances.to_string())
        .arg("--seed")
        .arg(o.seed.to_string());
    for l in &o.latency {
        cmd.arg("--latency").arg(l.to_string());
    }
    if o.heavy_plans {
        cmd.arg("--heavy-plans");
    }
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit()).kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| format!("starting {} sim", o.switchboard.display()))?;
    let stdout = child.stdout.take().context("sim stdout")?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(o.start_deadline, lines.next_line())
        .await
        .with_context(|| format!("switchboard sim printed nothing within {:?}", o.start_deadline))?
        .context("reading switchboard sim's first line")?
        .context("switchboard sim exited before printing its URLs")?;
    let urls: Value = serde_json::from_str(&line).with_context(|| format!("switchboard sim printed {line:?}"))?;
    let control = urls["control"].as_str().context("no control URL in sim's line")?.to_owned();
    Ok(Sim { child, urls, control })
}

impl Options {
    fn url_of(&self, sim: &Sim, b: SimBackend) -> String {
        self.real
            .iter()
            .find(|(rb, _)| *rb == b)
            .map(|(_, u)| u.clone())
            .unwrap_or_else(|| sim.urls[b.name()].as_str().unwrap_or_default().to_owned())
    }

    fn is_real(&self, b: SimBackend) -> bool {
        self.real.iter().any(|(rb, _)| *rb == b)
    }
}

async fn start_daemon(o: &Options, sim: &Sim, data: &Path, log: &Path) -> anyhow::Result<DaemonProc> {
    let port = free_port()?;
    let mut cmd = Command::new(&o.switchboard);
    cmd.arg("run")
        .arg("--marathon")
        .arg(sim.urls["marathon"].as_str().unwrap_or_default())
        .arg("--data-dir")
        .arg(data)
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--resync-interval")
        .arg("0")
        .arg("--cluster")
        .arg("bench");
    for b in &o.backends {
        cmd.arg(format!("--{}", b.name())).arg(o.url_of(sim, *b));
    }
    cmd.args(&o.daemon_args);
    let log_file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(log_file).kill_on_drop(true);
    let child = cmd.spawn().with_context(|| format!("starting {} run", o.switchboard.display()))?;
    let pid = child.id().context("daemon pid")?;
    Ok(DaemonProc { child, pid, metrics_url: format!("http://127.0.0.1:{port}/metrics") })
}

/// Sum of a Prometheus metric's samples whose labels contain `filter`.
pub fn metric_sum(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.starts_with(name) && matches!(l.as_bytes().get(name.len()), Some(b'{') | Some(b' ')))
        .filter(|l| l.contains(filter))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

struct Harness<'a> {
    o: &'a Options,
    http: reqwest::Client,
    control: String,
}

impl Harness<'_> {
    async fn get<T: serde::de::DeserializeOwned>(&self, path: &str) -> anyhow::Result<T> {
        let r = self.http.get(format!("{}{path}", self.control)).send().await.with_context(|| format!("GET {path}"))?;
        r.error_for_status_ref().with_context(|| format!("GET {path}"))?;
        r.json().await.with_context(|| format!("GET {path}: body"))
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        let r = self
            .http
            .post(format!("{}{path}", self.control))
            .json(&body)
            .send()
            .await
            .with_context(|| format!("POST {path}"))?;
        r.error_for_status_ref().with_context(|| format!("POST {path}"))?;
        r.json().await.with_context(|| format!("POST {path}: body"))
    }

    /// Counts, with the backends that are not benchmarked zeroed and the
    /// real servers' holdings listed from them and compared with what the
    /// simulator's Marathon says they should hold.
    async fn counts(&self, sim: &Sim) -> anyhow::Result<Counts> {
        let mut c: Counts = self.get("/v1/counts").await?;
        let expected: Value = if self.o.real.is_empty() { Value::Null } else { self.get("/v1/expected").await? };
        for b in SimBackend::ALL {
            if !self.o.backends.contains(&b) {
                for p in [&mut c.expected, &mut c.held, &mut c.extra] {
                    *pick(p, b) = 0;
                }
            } else if self.o.is_real(b) {
                let want: HashSet<&str> =
                    expected[b.name()].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
                let held: HashSet<String> = self.list_real(sim, b).await.unwrap_or_else(|e| {
                    warn!(backend = %b, error = %e, "cannot list the real server");
                    HashSet::new()
                });
                let matched = held.iter().filter(|e| want.contains(e.as_str())).count();
                *pick(&mut c.held, b) = matched;
                *pick(&mut c.extra, b) = held.len() - matched;
                // Requests and writes of a real server are not seen.
                *pick(&mut c.requests, b) = 0;
                *pick(&mut c.writes, b) = 0;
            }
        }
        Ok(c)
    }

    /// `host:port` of every registration of cluster `bench` a real server holds.
    async fn list_real(&self, sim: &Sim, b: SimBackend) -> anyhow::Result<HashSet<String>> {
        let base = self.o.url_of(sim, b);
        let base = base.trim_end_matches('/');
        let get = |path: String| async move {
            let r = self.http.get(format!("{base}{path}")).send().await?;
            anyhow::Ok(r.error_for_status()?.json::<Value>().await?)
        };
        let mut out = HashSet::new();
        match b {
            SimBackend::Consul => {
                let v = get("/v1/agent/services".into()).await?;
                for s in v.as_object().into_iter().flat_map(|m| m.values()) {
                    if s["Meta"]["switchboard_cluster"] == "bench" {
                        out.insert(format!("{}:{}", s["Address"].as_str().unwrap_or_default(), s["Port"]));
                    }
                }
            }
            SimBackend::Kong => {
                let mut next = Some("/upstreams?tags=cluster:bench&size=1000".to_owned());
                while let Some(path) = next.take() {
                    let page = get(path).await?;
                    for u in page["data"].as_array().into_iter().flatten() {
                        let name = u["name"].as_str().unwrap_or_default();
                        let t = get(format!("/upstreams/{name}/targets?size=1000")).await?;
                        for row in t["data"].as_array().into_iter().flatten() {
                            if row["weight"].as_u64().unwrap_or(0) > 0
                                && let Some(target) = row["target"].as_str()
                            {
                                out.insert(target.to_owned());
                            }
                        }
                    }
                    next = page["next"].as_str().map(|s| s.trim_start_matches(base).to_owned());
                }
            }
            SimBackend::Vulcand => {
                let v = get("/v2/backends".into()).await?;
                for bk in v["Backends"].as_array().into_iter().flatten() {
                    let id = bk["Id"].as_str().unwrap_or_default();
                    if id.starts_with("sb.bench.") {
                        let s = get(format!("/v2/backends/{id}/servers")).await?;
                        for srv in s["Servers"].as_array().into_iter().flatten() {
                            let url = srv["URL"].as_str().unwrap_or_default();
                            out.insert(url.split_once("://").map_or(url, |(_, r)| r).to_owned());
                        }
                    }
                }
            }
        }
        Ok(out)
    }

    /// Polls until every benchmarked backend holds exactly what it should,
    /// `extra_done` holds too, or the deadline passes. Gives up early, with a
    /// note, when the daemon's HTTP server has not answered for `o.hang_after`
    /// (a wedged runtime would otherwise cost the whole deadline).
    async fn converge(
        &self,
        sim: &Sim,
        daemon: &DaemonProc,
        what: &str,
        deadline: Duration,
        mut extra_done: impl FnMut(&Counts) -> bool,
    ) -> anyhow::Result<Converged> {
        let started = Instant::now();
        let mut answered = Instant::now();
        let mut probed = Instant::now();
        loop {
            let c = self.counts(sim).await?;
            let total = |p: &PerBackend| p.consul + p.kong + p.vulcand;
            self.o.progress.set_length(total(&c.expected) as u64);
            self.o.progress.set_position(total(&c.held) as u64);
            self.o.progress.set_message(format!("{what}: extra {}", total(&c.extra)));
            if c.converged() && extra_done(&c) {
                return Ok(Converged { ok: true, took: started.elapsed(), counts: c, hung: None });
            }
            if started.elapsed() > deadline {
                return Ok(Converged { ok: false, took: started.elapsed(), counts: c, hung: None });
            }
            if probed.elapsed() >= Duration::from_secs(5) {
                probed = Instant::now();
                if self.responsive(daemon).await {
                    answered = Instant::now();
                } else if answered.elapsed() > self.o.hang_after {
                    let hung = format!(
                        "the daemon's HTTP server has not answered for {:.0} s",
                        answered.elapsed().as_secs_f64()
                    );
                    warn!(phase = what, "{hung}");
                    return Ok(Converged { ok: false, took: started.elapsed(), counts: c, hung: Some(hung) });
                }
            }
            tokio::time::sleep(self.o.poll).await;
        }
    }

    /// Whether the daemon answers `/healthz` within 2 s.
    async fn responsive(&self, d: &DaemonProc) -> bool {
        let url = d.metrics_url.replace("/metrics", "/healthz");
        self.http.get(url).timeout(Duration::from_secs(2)).send().await.is_ok()
    }

    async fn arrivals(&self) -> anyhow::Result<ArrivalReport> {
        self.get("/v1/arrivals").await
    }

    async fn metrics(&self, d: &DaemonProc) -> String {
        match self.http.get(&d.metrics_url).send().await {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }
}

/// How a wait for convergence ended.
struct Converged {
    ok: bool,
    took: Duration,
    counts: Counts,
    /// Set when the wait was cut short because the daemon stopped answering.
    hung: Option<String>,
}

fn pick(p: &mut PerBackend, b: SimBackend) -> &mut usize {
    match b {
        SimBackend::Consul => &mut p.consul,
        SimBackend::Kong => &mut p.kong,
        SimBackend::Vulcand => &mut p.vulcand,
    }
}

fn phase(r: &Converged, took: Duration, deadline: Duration, floor_s: Option<f64>) -> Phase {
    let (converged, c) = (r.ok, &r.counts);
    let seconds = took.as_secs_f64();
    let note = (!converged).then(|| {
        let why = match &r.hung {
            Some(h) => format!("gave up after {seconds:.0} s: {h}"),
            None => format!("did not converge in {:.0} s", deadline.as_secs_f64()),
        };
        format!("{why}: held {:?} of {:?}, extra {:?}", c.held, c.expected, c.extra)
    });
    Phase {
        ran: true,
        converged,
        seconds,
        deadline_s: deadline.as_secs_f64(),
        expected: c.expected,
        held: c.held,
        extra: c.extra,
        ratio_to_floor: floor_s.filter(|f| *f > 0.0 && converged).map(|f| seconds / f),
        cpu_s: 0.0,
        peak_rss_mib: 0.0,
        rss_mib: 0.0,
        note,
    }
}

fn latency_of(o: &Options, a: &ArrivalReport, s: &mut Stream) {
    for b in &o.backends {
        if o.is_real(*b) {
            continue;
        }
        let arr = match b {
            SimBackend::Consul => &a.consul,
            SimBackend::Kong => &a.kong,
            SimBackend::Vulcand => &a.vulcand,
        };
        s.latency.insert(b.name().to_owned(), summarize(&arr.micros));
        s.missing.insert(b.name().to_owned(), arr.missing);
    }
}

/// Time from the last reset to the last write answered (registration or
/// deregistration), over the benchmarked simulated backends: more precise
/// than the poll that saw convergence. `None` when a real server is
/// measured (its writes are not seen) or nothing was written.
fn last_write(o: &Options, a: &ArrivalReport) -> Option<Duration> {
    if o.backends.iter().any(|b| o.is_real(*b)) {
        return None;
    }
    o.backends
        .iter()
        .filter_map(|b| match b {
            SimBackend::Consul => a.consul.last_write_micros,
            SimBackend::Kong => a.kong.last_write_micros,
            SimBackend::Vulcand => a.vulcand.last_write_micros,
        })
        .max()
        .map(Duration::from_micros)
}

fn machine() -> Machine {
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    let mem_kib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines().find_map(|l| l.strip_prefix("MemTotal:")?.split_whitespace().next()?.parse::<u64>().ok())
        })
        .unwrap_or(0);
    Machine { cpus, mem_gib: mem_kib as f64 / 1_048_576.0 }
}

/// Runs every phase and returns the report. Errors are for the harness
/// itself failing (cannot start a process, control API gone), not for a
/// daemon that does not converge.
pub async fn run(o: &Options) -> anyhow::Result<Report> {
    let tmp;
    let work: PathBuf = match &o.work_dir {
        Some(d) => {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
            d.clone()
        }
        None => {
            tmp = tempfile::Builder::new().prefix("switchboard-bench-").tempdir().context("temp dir")?;
            tmp.path().to_owned()
        }
    };
    let data = work.join("data");
    let _ = std::fs::remove_dir_all(&data);
    let http = reqwest::Client::builder().timeout(Duration::from_secs(120)).build().context("HTTP client")?;
    let mut report = Report {
        scenario: ScenarioInfo {
            apps: o.scenario.apps,
            instances: o.scenario.instances,
            backends: o.backends.iter().map(|b| b.name().to_owned()).collect(),
            latency: o.latency.iter().map(ToString::to_string).collect(),
            real: o.real.iter().map(|(b, _)| b.name().to_owned()).collect(),
            heavy_plans: o.heavy_plans,
            out_of_order: o.out_of_order,
            churn_per_second: o.churn_per_second,
            churn_seconds: o.churn_seconds,
            expected: PerBackend::default(),
            label: o.label.clone(),
        },
        machine: machine(),
        ..Report::default()
    };

    o.progress.set_message("starting the simulators");
    let mut sim = start_sim(o).await?;
    let h = Harness { o, http: http.clone(), control: sim.control.clone() };
    let first = h.counts(&sim).await?;
    report.scenario.expected = first.expected;
    info!(expected = ?first.expected, "simulators up");

    // Floor.
    let floor_s = if o.floor {
        o.progress.set_message("floor");
        let f = run_floor(o, &h, &sim).await?;
        let best = f.best_s;
        eprintln!("floor: {:.2} s one at a time, {:.2} s at {}", f.sequential_s, f.concurrent_s, f.concurrency);
        report.floor = Some(f);
        Some(best)
    } else {
        None
    };

    // Cold resync.
    h.post("/v1/reset", json!({})).await?;
    let log_a = work.join("daemon-1.log");
    let started = Instant::now();
    let mut daemon = start_daemon(o, &sim, &data, &log_a).await?;
    let r = h.converge(&sim, &daemon, "cold resync", o.cold_deadline, |_| true).await?;
    let since_start = started.elapsed();
    let took = if r.ok { last_write(o, &h.arrivals().await?).unwrap_or(since_start).min(since_start) } else { r.took };
    report.cold_resync = phase(&r, took, o.cold_deadline, floor_s);
    let u_cold = procfs::usage(daemon.pid);
    report.cold_resync.cpu_s = u_cold.cpu_seconds;
    report.cold_resync.peak_rss_mib = mib(u_cold.peak_rss_kib);
    report.cold_resync.rss_mib = mib(u_cold.rss_kib);
    eprintln!("cold resync: {}", summary_line(&report.cold_resync));
    report.status_page = status_page(&h.http, &daemon, o.scenario.apps * o.scenario.instances).await;
    if report.status_page.ran {
        let p = &report.status_page;
        eprintln!("status page: min {:.1} ms, median {:.1} ms at {} instances", p.min_ms, p.median_ms, p.instances);
    }

    // Idle resync: restart on the same store, nothing changed.
    let usage_a = procfs::usage(daemon.pid);
    stop(&mut daemon.child).await;
    let before = h.counts(&sim).await?;
    let log_b = work.join("daemon-2.log");
    let started = Instant::now();
    daemon = start_daemon(o, &sim, &data, &log_b).await?;
    let mut idle = Idle { ran: true, ..Idle::default() };
    loop {
        let m = h.metrics(&daemon).await;
        let resynced = metric_sum(&m, "switchboard_resyncs_total", "result=\"ok\"") >= 1.0;
        let queued = metric_sum(&m, "switchboard_queue_depth", "");
        if resynced && queued == 0.0 {
            idle.converged = true;
            break;
        }
        if started.elapsed() > o.idle_deadline {
            idle.note = Some(format!(
                "no finished resync within {:.0} s (resyncs {}, queue {queued})",
                o.idle_deadline.as_secs_f64(),
                metric_sum(&m, "switchboard_resyncs_total", "")
            ));
            break;
        }
        tokio::time::sleep(o.poll).await;
    }
    idle.seconds = started.elapsed().as_secs_f64();
    idle.peak_rss_mib = mib(procfs::usage(daemon.pid).peak_rss_kib);
    let after = h.counts(&sim).await?;
    let diff = |a: PerBackend, b: PerBackend| PerBackend {
        consul: a.consul.saturating_sub(b.consul),
        kong: a.kong.saturating_sub(b.kong),
        vulcand: a.vulcand.saturating_sub(b.vulcand),
    };
    idle.requests = diff(after.requests, before.requests);
    idle.writes = diff(after.writes, before.writes);
    for b in SimBackend::ALL {
        if !o.backends.contains(&b) {
            *pick(&mut idle.requests, b) = 0;
            *pick(&mut idle.writes, b) = 0;
        }
    }
    idle.marathon_snapshots = after.marathon_snapshots - before.marathon_snapshots;
    idle.marathon_app_fetches = after.marathon_app_fetches - before.marathon_app_fetches;
    eprintln!("idle resync: writes {:?}, requests {:?}", idle.writes, idle.requests);
    report.idle_resync = idle;
    let cpu_b0 = procfs::usage(daemon.pid).cpu_seconds;

    // Event storm: every app redeployed at once, a share out of order.
    h.post("/v1/reset", json!({})).await?;
    let events_before = metric_sum(&h.metrics(&daemon).await, "switchboard_events_total", "");
    let sent = h.post("/v1/deploy", json!({"out_of_order": o.out_of_order, "seed": o.seed})).await?;
    let started = Instant::now();
    let r = h.converge(&sim, &daemon, "event storm", o.storm_deadline, |c| c.sent > 0 && c.subscribers > 0).await?;
    let arrivals = h.arrivals().await?;
    let since_sent = started.elapsed();
    let took = if r.ok { last_write(o, &arrivals).unwrap_or(since_sent).min(since_sent) } else { r.took };
    let mut storm = Stream {
        phase: phase(&r, took, o.storm_deadline, floor_s),
        events_sent: sent["events"].as_u64().unwrap_or(0),
        instances: sent["running"].as_u64().unwrap_or(0),
        ..Stream::default()
    };
    let received = metric_sum(&h.metrics(&daemon).await, "switchboard_events_total", "") - events_before;
    storm.events_received = received.max(0.0) as u64;
    storm.events_per_s = if took.as_secs_f64() > 0.0 { received / took.as_secs_f64() } else { 0.0 };
    latency_of(o, &arrivals, &mut storm);
    let u_storm = procfs::usage(daemon.pid);
    let cpu_storm = u_storm.cpu_seconds;
    storm.phase.cpu_s = cpu_storm - cpu_b0;
    storm.phase.peak_rss_mib = mib(u_storm.peak_rss_kib);
    storm.phase.rss_mib = mib(u_storm.rss_kib);
    eprintln!("event storm: {}", summary_line(&storm.phase));
    report.storm = storm;

    // Churn.
    h.post("/v1/reset", json!({})).await?;
    let events_before = metric_sum(&h.metrics(&daemon).await, "switchboard_events_total", "");
    let started_churn =
        h.post("/v1/churn", json!({"per_second": o.churn_per_second, "seconds": o.churn_seconds})).await?;
    if started_churn["started"] != true {
        bail!("churn did not start: {started_churn}");
    }
    let churn_deadline = Duration::from_secs_f64(o.churn_seconds) + o.churn_deadline;
    let started = Instant::now();
    let r = h.converge(&sim, &daemon, "churn", churn_deadline, |c| !c.churn_running).await?;
    let arrivals = h.arrivals().await?;
    let mut churn = Stream {
        phase: phase(&r, r.took, churn_deadline, None),
        instances: r.counts.churn_restarted,
        events_sent: 0,
        ..Stream::default()
    };
    let received = metric_sum(&h.metrics(&daemon).await, "switchboard_events_total", "") - events_before;
    churn.events_received = received.max(0.0) as u64;
    churn.events_per_s = received / started.elapsed().as_secs_f64().max(0.001);
    latency_of(o, &arrivals, &mut churn);
    let u_churn = procfs::usage(daemon.pid);
    churn.phase.cpu_s = u_churn.cpu_seconds - cpu_storm;
    churn.phase.peak_rss_mib = mib(u_churn.peak_rss_kib);
    churn.phase.rss_mib = mib(u_churn.rss_kib);
    eprintln!("churn: {}", summary_line(&churn.phase));
    report.churn = churn;

    // Costs.
    let usage_b = procfs::usage(daemon.pid);
    stop(&mut daemon.child).await;
    report.daemon = daemon_costs(&[usage_a, usage_b], &data, o.scenario);
    report.daemon.contents = store_contents(&data);
    stop(&mut sim.child).await;

    report.ok = report.cold_resync.converged
        && report.idle_resync.converged
        && report.storm.phase.converged
        && report.churn.phase.converged;
    o.progress.finish_and_clear();
    Ok(report)
}

/// Fetches of `/` timed after the cold resync.
const PAGE_FETCHES: usize = 7;

/// Times `GET /` (the status page) a few times, and `/api/status` once.
async fn status_page(http: &reqwest::Client, d: &DaemonProc, instances: usize) -> StatusPage {
    let base = d.metrics_url.trim_end_matches("/metrics").to_owned();
    let mut out = StatusPage { instances, ..Default::default() };
    let mut times = Vec::new();
    for _ in 0..PAGE_FETCHES {
        let started = Instant::now();
        let Ok(r) = http.get(format!("{base}/")).send().await else { return out };
        let Ok(body) = r.text().await else { return out };
        times.push(started.elapsed().as_secs_f64() * 1000.0);
        out.bytes = body.len();
    }
    times.sort_by(f64::total_cmp);
    out.ran = true;
    out.fetches = times.len();
    out.min_ms = times[0];
    out.median_ms = times[times.len() / 2];
    out.max_ms = times[times.len() - 1];
    let started = Instant::now();
    if let Ok(r) = http.get(format!("{base}/api/status")).send().await
        && let Ok(body) = r.text().await
    {
        out.api_ms = started.elapsed().as_secs_f64() * 1000.0;
        out.api_bytes = body.len();
    }
    out
}

fn summary_line(p: &Phase) -> String {
    match (&p.note, p.ratio_to_floor) {
        (Some(n), _) => n.clone(),
        (None, Some(r)) => format!("{:.2} s ({r:.1}× the floor)", p.seconds),
        (None, None) => format!("{:.2} s", p.seconds),
    }
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

/// Opens the stopped daemon's store and counts what it holds (its size on
/// disk is read before, so opening it does not change that figure).
fn store_contents(data: &Path) -> StoreContents {
    let read = || -> Result<StoreContents, crate::store::Error> {
        let store = crate::store::Store::open(data)?;
        let mut c = StoreContents { read: true, ..StoreContents::default() };
        for t in store.footprint()? {
            c.records += t.records;
            c.live_bytes += t.key_bytes + t.value_bytes;
            c.trees.insert(t.tree.to_owned(), (t.records, t.key_bytes + t.value_bytes));
        }
        let census = store.instance_census()?;
        c.instances_live = census.live;
        c.instances_live_bytes = census.live_bytes;
        c.tombstones = census.tombstones;
        c.tombstone_bytes = census.tombstone_bytes;
        Ok(c)
    };
    read().unwrap_or_else(|e| {
        warn!(error = %e, "cannot read the daemon's store after the run");
        StoreContents::default()
    })
}

fn daemon_costs(usages: &[Usage], data: &Path, s: Scenario) -> Daemon {
    let store_bytes = procfs::dir_size(data);
    let instances = (s.apps * s.instances).max(1);
    Daemon {
        peak_rss_mib: usages.iter().map(|u| u.peak_rss_kib).max().unwrap_or(0) as f64 / 1024.0,
        cpu_s: usages.iter().map(|u| u.cpu_seconds).sum(),
        write_bytes: usages.iter().map(|u| u.write_bytes).sum(),
        store_bytes,
        store_bytes_per_instance: store_bytes as f64 / instances as f64,
        store_allocated_bytes: procfs::dir_allocated(data),
        contents: StoreContents::default(),
    }
}

async fn run_floor(o: &Options, h: &Harness<'_>, sim: &Sim) -> anyhow::Result<Floor> {
    let marathon = sim.urls["marathon"].as_str().unwrap_or_default();
    let apps: Value = h
        .http
        .get(format!("{marathon}/v2/apps?embed=apps.tasks"))
        .send()
        .await
        .context("floor: GET /v2/apps")?
        .json()
        .await
        .context("floor: /v2/apps body")?;
    let plans: Vec<(SimBackend, String, Vec<floor::Job>)> =
        o.backends.iter().map(|b| (*b, o.url_of(sim, *b), floor::jobs(&apps, *b))).collect();
    let mut f = Floor { concurrency: o.floor_concurrency, ..Floor::default() };
    for (round, concurrency) in [(0, 1), (1, o.floor_concurrency)] {
        let started = Instant::now();
        let runs = plans.iter().map(|(b, url, jobs)| {
            let http = h.http.clone();
            async move { (*b, floor::run(&http, url, *b, jobs, concurrency).await) }
        });
        for (b, took) in futures::future::join_all(runs).await {
            let took = took?;
            let entry = f.per_backend.entry(b.name().to_owned()).or_default();
            if round == 0 {
                entry.sequential_s = took.as_secs_f64();
            } else {
                entry.concurrent_s = took.as_secs_f64();
            }
        }
        let all = started.elapsed().as_secs_f64();
        if round == 0 {
            f.sequential_s = all
        } else {
            f.concurrent_s = all
        }
        // Empty the backends again: the daemon must start from nothing.
        h.post("/v1/clear", json!({})).await?;
        for (b, url, jobs) in &plans {
            if o.is_real(*b) {
                floor::run(&h.http, url, *b, &floor::undo_jobs(jobs, *b), o.floor_concurrency).await?;
            }
        }
    }
    for (b, _, jobs) in &plans {
        if let Some(e) = f.per_backend.get_mut(b.name()) {
            e.writes = floor::write_count(jobs);
            e.per_op_ms = if e.writes > 0 { e.sequential_s * 1000.0 / e.writes as f64 } else { 0.0 };
        }
    }
    f.best_s = f.sequential_s.min(f.concurrent_s);
    Ok(f)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_prometheus_samples() {
        let text = "# HELP switchboard_resyncs_total Full resyncs\n\
                    switchboard_resyncs_total{result=\"ok\"} 2\n\
                    switchboard_resyncs_total{result=\"marathon_error\"} 1\n\
                    switchboard_resyncs_total_extra 9\n\
                    switchboard_queue_depth{backend=\"consul\"} 0\n\
                    switchboard_queue_depth{backend=\"kong\"} 3\n";
        assert_eq!(metric_sum(text, "switchboard_resyncs_total", ""), 3.0);
        assert_eq!(metric_sum(text, "switchboard_resyncs_total", "result=\"ok\""), 2.0);
        assert_eq!(metric_sum(text, "switchboard_queue_depth", ""), 3.0);
        assert_eq!(metric_sum(text, "switchboard_absent", ""), 0.0);
    }
}
