//! `switchboard sim`: the four simulators as one process, Marathon pre-loaded
//! from a [`Scenario`], plus a small HTTP control API that drives scenario
//! steps and reports counts and latencies, so a benchmark in another process
//! can poll cheaply.
//!
//! Invariants:
//! - Everything binds 127.0.0.1; port 0 picks a free port.
//! - One process, one monotonic clock: the Marathon side records when each
//!   `TASK_RUNNING` is handed to the event stream, the backend simulators
//!   record when the registration of the same `host:port` is stored
//!   ([`Timeline`]).
//! - The model's std mutex is never held across an `.await`.
//!
//! Control API (JSON; every POST answers what it did):
//! - `GET  /v1/counts`: expected, held and extra registrations per backend,
//!   requests and writes per backend, Marathon reads, churn progress;
//! - `GET  /v1/expected`: the `host:port` list each backend should hold;
//! - `GET  /v1/arrivals`: per backend, send→arrival microseconds since the last
//!   reset, and when the last registration arrived and the last write was answered;
//! - `POST /v1/reset`: forget sends and arrivals; `POST /v1/clear`: also empty the backends;
//! - `POST /v1/deploy {"out_of_order": 0.2, "seed": 1}`: redeploy every app
//!   (new tasks replace the old), all events at once, a share out of order;
//! - `POST /v1/scale {"instances": n, "app": id?}`, `POST /v1/restart {"app": id?}`,
//!   `POST /v1/destroy {"app": id?}`: every app unless `app` is given;
//! - `POST /v1/churn {"per_second": 0.05, "seconds": 30}`: kill random tasks
//!   (Marathon replaces them) at that share of all instances per second.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::sim::consul::{ConsulSim, ConsulSimOptions};
use crate::sim::kong::{KongSim, KongSimOptions};
use crate::sim::marathon::{MarathonSim, Model, ModelOptions, SimEvent};
use crate::sim::scenario::{PerBackend, Scenario, disorder};
use crate::sim::tap::{Arrivals, SimBackend, Tap, Timeline, WriteLatency};
use crate::sim::vulcand::{VulcandSim, VulcandSimOptions};

/// Ports to bind on 127.0.0.1 (0 = pick one).
#[derive(Debug, Clone, Copy, Default)]
pub struct Ports {
    pub marathon: u16,
    pub consul: u16,
    pub kong: u16,
    pub vulcand: u16,
    pub control: u16,
}

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    pub scenario: Scenario,
    pub latency: Vec<WriteLatency>,
    pub ports: Ports,
    /// Deployment events carry full app definitions (Marathon ≤ 1.6).
    pub heavy_plans: bool,
    /// Seeds task choice for churn and the storm's disorder.
    pub seed: u64,
}

/// The running simulators and their shared clock.
pub struct SimCluster {
    pub marathon: MarathonSim,
    pub consul: ConsulSim,
    pub kong: KongSim,
    pub vulcand: VulcandSim,
    pub timeline: Arc<Timeline>,
    scenario: Scenario,
    taps: [Tap; 3],
    control: SocketAddr,
    rng: Mutex<StdRng>,
    churn: Churn,
}

/// Progress of the churn started by `POST /v1/churn`.
#[derive(Default)]
struct Churn {
    running: AtomicBool,
    restarted: AtomicU64,
}

impl SimCluster {
    /// Starts the simulators and the control API, and pre-loads Marathon.
    pub async fn start(opts: ClusterOptions, stop: CancellationToken) -> std::io::Result<Arc<SimCluster>> {
        let timeline = Arc::new(Timeline::default());
        timeline.reset();
        let cost = |b: SimBackend| opts.latency.iter().filter(|l| l.backend == b).map(|l| l.per_write).next_back();
        let taps = SimBackend::ALL.map(|b| Tap::new(b, cost(b), timeline.clone()));
        let model = ModelOptions { heavy_plans: opts.heavy_plans, ..ModelOptions::default() };
        let marathon = MarathonSim::start_on(model, opts.ports.marathon).await?;
        let consul = ConsulSim::start_on(ConsulSimOptions::default(), opts.ports.consul, taps[0].clone()).await?;
        let kong = KongSim::start_on(KongSimOptions::default(), opts.ports.kong, taps[1].clone()).await?;
        let vulcand = VulcandSim::start_on(VulcandSimOptions::default(), opts.ports.vulcand, taps[2].clone())?;
        {
            let mut m = marathon.model();
            for i in 0..opts.scenario.apps {
                // Nobody is subscribed yet: the events go nowhere.
                m.deploy(Scenario::app_definition(i), opts.scenario.instances);
            }
        }
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.ports.control)).await?;
        let control = listener.local_addr()?;
        let cluster = Arc::new(SimCluster {
            marathon,
            consul,
            kong,
            vulcand,
            timeline,
            scenario: opts.scenario,
            taps,
            control,
            rng: Mutex::new(StdRng::seed_from_u64(opts.seed)),
            churn: Churn::default(),
        });
        let router = Router::new()
            .route("/v1/counts", get(counts))
            .route("/v1/arrivals", get(arrivals))
            .route("/v1/expected", get(expected))
            .route("/v1/reset", post(reset))
            .route("/v1/clear", post(clear))
            .route("/v1/deploy", post(deploy))
            .route("/v1/scale", post(scale))
            .route("/v1/restart", post(restart))
            .route("/v1/destroy", post(destroy))
            .route("/v1/churn", post(churn))
            .with_state(cluster.clone());
        tokio::spawn(async move {
            let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
            if let Err(e) = server.await {
                warn!(error = %e, "control API stopped");
            }
        });
        Ok(cluster)
    }

    /// The one JSON line `switchboard sim` prints: every URL and the scenario.
    pub fn describe(&self) -> Value {
        json!({
            "marathon": self.marathon.url().as_str().trim_end_matches('/'),
            "consul": self.consul.url(),
            "kong": self.kong.url().as_str().trim_end_matches('/'),
            "vulcand": self.vulcand.url().as_str().trim_end_matches('/'),
            "control": format!("http://{}", self.control),
            "apps": self.scenario.apps,
            "instances": self.scenario.instances,
            "pid": std::process::id(),
        })
    }

    /// Emits events to the stream, recording each `TASK_RUNNING` as sent now.
    pub fn emit(&self, events: &[SimEvent]) -> usize {
        let mut sent = 0;
        for e in events {
            if e.event_type == "status_update_event"
                && e.data["taskStatus"] == "TASK_RUNNING"
                && let (Some(host), Some(port)) = (e.data["host"].as_str(), e.data["ports"][0].as_u64())
            {
                self.timeline.sent(format!("{host}:{port}"));
                sent += 1;
            }
        }
        self.marathon.emit(events);
        sent
    }

    /// Endpoints each backend should hold, from Marathon's current tasks.
    fn expected(&self) -> [HashSet<String>; 3] {
        let m = self.marathon.model();
        let mut out: [HashSet<String>; 3] = Default::default();
        for (labels, endpoint) in m.serving_endpoints() {
            let has = |k: &str| labels.get(k).is_some();
            if has("consul") {
                out[0].insert(endpoint.clone());
            }
            if has("kong.hosts") || has("kong.paths") {
                out[1].insert(endpoint.clone());
            }
            if has("vulcand.host") || has("vulcand.route") {
                out[2].insert(endpoint);
            }
        }
        out
    }

    fn held(&self, b: SimBackend) -> Vec<String> {
        match b {
            SimBackend::Consul => self.consul.endpoints(),
            SimBackend::Kong => self.kong.all_targets(),
            SimBackend::Vulcand => self.vulcand.all_servers(),
        }
    }

    /// Counts for `GET /v1/counts`.
    pub fn counts(&self) -> Counts {
        let expected = self.expected();
        let mut c = Counts::default();
        for (i, b) in SimBackend::ALL.into_iter().enumerate() {
            let held: HashSet<String> = self.held(b).into_iter().collect();
            let matched = held.iter().filter(|e| expected[i].contains(*e)).count();
            set(&mut c.expected, b, expected[i].len());
            set(&mut c.held, b, matched);
            set(&mut c.extra, b, held.len() - matched);
            let (requests, writes) = self.taps[i].counts();
            set(&mut c.requests, b, requests as usize);
            set(&mut c.writes, b, writes as usize);
        }
        c.marathon_snapshots = self.marathon.snapshot_fetches();
        c.marathon_app_fetches = self.marathon.all_app_fetches();
        c.subscribers = self.marathon.subscribers();
        c.sent = self.timeline.sent_count();
        c.churn_running = self.churn.running.load(Ordering::SeqCst);
        c.churn_restarted = self.churn.restarted.load(Ordering::SeqCst);
        c
    }

    /// Per-backend latencies since the last reset (`GET /v1/arrivals`).
    pub fn arrivals(&self) -> ArrivalReport {
        let expected = self.expected();
        let get = |i: usize| self.timeline.arrivals(SimBackend::ALL[i], |e| expected[i].contains(e));
        ArrivalReport { consul: get(0), kong: get(1), vulcand: get(2) }
    }

    fn targets(&self, app: Option<String>) -> Vec<String> {
        match app {
            Some(a) => vec![a],
            None => self.marathon.model().app_ids(),
        }
    }

    fn churn_tick(&self, share_per_tick: f64, carry: &mut f64) {
        let mut events = Vec::new();
        {
            let mut m = self.marathon.model();
            let tasks = m.all_task_ids();
            *carry += tasks.len() as f64 * share_per_tick;
            let n = carry.floor() as usize;
            *carry -= n as f64;
            let picked: Vec<String> = {
                let mut rng = self.rng.lock().unwrap_or_else(|e| e.into_inner());
                tasks.choose_multiple(&mut *rng, n).cloned().collect()
            };
            for t in picked {
                events.extend(m.kill_task(&t));
            }
            self.churn.restarted.fetch_add(n as u64, Ordering::SeqCst);
        }
        self.emit(&events);
    }
}

fn set(p: &mut PerBackend, b: SimBackend, v: usize) {
    match b {
        SimBackend::Consul => p.consul = v,
        SimBackend::Kong => p.kong = v,
        SimBackend::Vulcand => p.vulcand = v,
    }
}

/// `GET /v1/counts`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Counts {
    /// Registrations each backend should hold (serving tasks of labelled apps).
    pub expected: PerBackend,
    /// Of those, how many it holds.
    pub held: PerBackend,
    /// What it holds beyond them (stale, or not yet deregistered).
    pub extra: PerBackend,
    /// Requests and writes each backend simulator answered since it started.
    pub requests: PerBackend,
    pub writes: PerBackend,
    pub marathon_snapshots: usize,
    pub marathon_app_fetches: usize,
    pub subscribers: usize,
    /// `TASK_RUNNING` events sent since the last reset.
    pub sent: usize,
    pub churn_running: bool,
    pub churn_restarted: u64,
}

impl Counts {
    /// Every backend holds exactly what it should.
    pub fn converged(&self) -> bool {
        self.held == self.expected && self.extra == PerBackend::default()
    }
}

/// `GET /v1/arrivals`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ArrivalReport {
    pub consul: Arrivals,
    pub kong: Arrivals,
    pub vulcand: Arrivals,
}

type Shared = State<Arc<SimCluster>>;

async fn counts(State(c): Shared) -> Json<Counts> {
    Json(c.counts())
}

/// `GET /v1/expected`: the `host:port` each backend should hold, so a
/// benchmark can check real servers too.
async fn expected(State(c): Shared) -> Json<Value> {
    let [consul, kong, vulcand] = c.expected();
    Json(json!({"consul": consul, "kong": kong, "vulcand": vulcand}))
}

async fn arrivals(State(c): Shared) -> Json<ArrivalReport> {
    Json(c.arrivals())
}

async fn reset(State(c): Shared) -> Json<Value> {
    c.timeline.reset();
    Json(json!({"reset": true}))
}

async fn clear(State(c): Shared) -> Json<Value> {
    c.consul.clear();
    c.kong.clear();
    c.vulcand.clear();
    c.timeline.reset();
    Json(json!({"cleared": true}))
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct DeployBody {
    out_of_order: f64,
    seed: u64,
    /// Disorder swaps events at most this many positions apart.
    window: Option<usize>,
}

async fn deploy(State(c): Shared, body: Option<Json<DeployBody>>) -> Json<Value> {
    let b = body.map(|Json(b)| b).unwrap_or_default();
    let mut events = Vec::new();
    {
        let mut m = c.marathon.model();
        let ids: HashSet<String> = m.app_ids().into_iter().collect();
        for i in 0..c.scenario.apps {
            if ids.contains(&Scenario::app_id(i)) {
                events.extend(m.deploy(Scenario::app_definition(i), c.scenario.instances));
            }
        }
    }
    let moved = disorder(&mut events, b.out_of_order, b.window.unwrap_or(256), b.seed);
    c.timeline.mark();
    let running = c.emit(&events);
    info!(events = events.len(), out_of_order = moved, running, "deploy storm sent");
    Json(json!({"events": events.len(), "out_of_order": moved, "running": running}))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScaleBody {
    instances: usize,
    app: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default, deny_unknown_fields)]
struct AppBody {
    app: Option<String>,
}

/// Runs `step` on one app (or every app), sends the events, says how many.
fn each_app(c: &SimCluster, app: Option<String>, step: impl Fn(&mut Model, &str) -> Vec<SimEvent>) -> Json<Value> {
    let mut events = Vec::new();
    for id in c.targets(app) {
        events.extend(step(&mut c.marathon.model(), &id));
    }
    let running = c.emit(&events);
    Json(json!({"events": events.len(), "running": running}))
}

async fn scale(State(c): Shared, Json(b): Json<ScaleBody>) -> Json<Value> {
    each_app(&c, b.app, |m, id| m.scale(id, b.instances))
}

async fn restart(State(c): Shared, body: Option<Json<AppBody>>) -> Json<Value> {
    each_app(&c, body.and_then(|Json(b)| b.app), Model::restart)
}

async fn destroy(State(c): Shared, body: Option<Json<AppBody>>) -> Json<Value> {
    each_app(&c, body.and_then(|Json(b)| b.app), Model::destroy)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChurnBody {
    per_second: f64,
    seconds: f64,
}

/// Churn ticks ten times a second.
const CHURN_TICK: Duration = Duration::from_millis(100);

async fn churn(State(c): Shared, Json(b): Json<ChurnBody>) -> Json<Value> {
    if !(b.per_second.is_finite() && b.per_second > 0.0 && b.seconds.is_finite() && b.seconds > 0.0) {
        return Json(json!({"started": false, "error": "per_second and seconds must be positive"}));
    }
    if c.churn.running.swap(true, Ordering::SeqCst) {
        return Json(json!({"started": false, "error": "churn already running"}));
    }
    c.churn.restarted.store(0, Ordering::SeqCst);
    let ticks = (b.seconds / CHURN_TICK.as_secs_f64()).round().max(1.0) as u64;
    let share = b.per_second * CHURN_TICK.as_secs_f64();
    let cluster = c.clone();
    tokio::spawn(async move {
        let mut every = tokio::time::interval(CHURN_TICK);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut carry = 0.0;
        for _ in 0..ticks {
            every.tick().await;
            cluster.churn_tick(share, &mut carry);
        }
        cluster.churn.running.store(false, Ordering::SeqCst);
    });
    Json(json!({"started": true, "ticks": ticks, "tick_ms": CHURN_TICK.as_millis()}))
}
