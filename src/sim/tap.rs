//! Instrumentation of the backend simulators for `switchboard sim` and the
//! benchmark: a fixed cost per write (serialised as the real server
//! serialises it) and the arrival time of every instance registration, on
//! one monotonic clock shared with the Marathon simulator's send times.
//!
//! Invariants:
//! - A default `Tap` does nothing: the test suite and `switchboard demo` run
//!   the simulators untouched.
//! - Instances are keyed by `host:port`, the one thing every backend's write
//!   carries (Consul `Address`/`Port`, a Kong target, a Vulcand server URL).
//! - Only the first arrival after a send counts; later re-registrations of
//!   the same endpoint do not move it.
//! - Std mutexes only, never held across an `.await`; the write gate is a
//!   tokio mutex because it is held while the cost is slept.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;

/// The three backends a simulator can stand in for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SimBackend {
    Consul,
    Kong,
    Vulcand,
}

impl SimBackend {
    pub const ALL: [SimBackend; 3] = [SimBackend::Consul, SimBackend::Kong, SimBackend::Vulcand];

    pub fn name(self) -> &'static str {
        match self {
            SimBackend::Consul => "consul",
            SimBackend::Kong => "kong",
            SimBackend::Vulcand => "vulcand",
        }
    }

    /// Whether the real server applies writes one at a time: a Consul agent
    /// takes its state lock per registration and Vulcand commits each write
    /// to etcd before answering; Kong's nginx workers write to the database
    /// in parallel.
    pub fn serialises_writes(self) -> bool {
        !matches!(self, SimBackend::Kong)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for SimBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for SimBackend {
    type Err = LatencyError;
    fn from_str(s: &str) -> Result<SimBackend, LatencyError> {
        SimBackend::ALL.into_iter().find(|b| b.name() == s).ok_or_else(|| LatencyError::Backend(s.to_owned()))
    }
}

/// A `--latency` value that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum LatencyError {
    #[error("unknown backend {0:?} in --latency (consul, kong or vulcand)")]
    Backend(String),
    #[error("bad duration {value:?} in --latency: {reason}")]
    Duration { value: String, reason: String },
    #[error("--latency wants BACKEND=DURATION or a profile (consul-agent), got {0:?}")]
    Shape(String),
}

/// A fixed cost added to every write a backend simulator answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteLatency {
    pub backend: SimBackend,
    pub per_write: Duration,
}

/// The per-op cost measured on a real Consul agent (issue 11): 100 × 10
/// registrations with one HTTP check each took 3.6 s one after another.
pub const CONSUL_AGENT_PROFILE: Duration = Duration::from_micros(3_600);

impl FromStr for WriteLatency {
    type Err = LatencyError;

    /// `consul=3.6ms`, `kong=500us`, or the profile name `consul-agent`.
    fn from_str(s: &str) -> Result<WriteLatency, LatencyError> {
        if s == "consul-agent" {
            return Ok(WriteLatency { backend: SimBackend::Consul, per_write: CONSUL_AGENT_PROFILE });
        }
        let (backend, dur) = s.split_once('=').ok_or_else(|| LatencyError::Shape(s.to_owned()))?;
        let backend: SimBackend = backend.trim().parse()?;
        let per_write = parse_duration(dur.trim())?;
        Ok(WriteLatency { backend, per_write })
    }
}

impl fmt::Display for WriteLatency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}={}us", self.backend, self.per_write.as_micros())
    }
}

/// Humantime durations plus fractional milliseconds (`3.6ms`), which
/// humantime does not take.
fn parse_duration(s: &str) -> Result<Duration, LatencyError> {
    let bad = |reason: &str| LatencyError::Duration { value: s.to_owned(), reason: reason.to_owned() };
    if let Some(ms) = s.strip_suffix("ms")
        && ms.contains('.')
    {
        let v: f64 = ms.parse().map_err(|_| bad("not a number"))?;
        if !v.is_finite() || v < 0.0 {
            return Err(bad("must be a non-negative number"));
        }
        return Ok(Duration::from_secs_f64(v / 1000.0));
    }
    humantime::parse_duration(s).map_err(|e| bad(&e.to_string()))
}

/// Send and arrival times of instance registrations, one clock for all.
#[derive(Debug, Default)]
pub struct Timeline {
    inner: Mutex<Times>,
}

#[derive(Debug, Default)]
struct Times {
    /// `host:port` → when its `TASK_RUNNING` left the Marathon simulator.
    sent: HashMap<String, Instant>,
    /// Per backend: `host:port` → first registration seen since the reset.
    arrived: [HashMap<String, Instant>; 3],
    last_arrival: Option<Instant>,
    /// Per backend: when its last write (of any kind) was answered.
    last_write: [Option<Instant>; 3],
    since: Option<Instant>,
}

/// Latencies of one backend since the last reset.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Arrivals {
    /// Microseconds from send to arrival, one per instance that arrived.
    pub micros: Vec<u64>,
    /// Sent instances that have not arrived (yet) at this backend.
    pub missing: usize,
    /// Registrations that arrived since the reset (sent or not).
    pub arrived: usize,
    /// Microseconds from the reset to the last arrival, if any.
    pub last_arrival_micros: Option<u64>,
    /// Microseconds from the reset to this backend's last answered write
    /// (registrations and deregistrations alike), if any.
    #[serde(default)]
    pub last_write_micros: Option<u64>,
}

impl Timeline {
    fn lock(&self) -> MutexGuard<'_, Times> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets every send and arrival; the clock for `last_arrival` restarts.
    pub fn reset(&self) {
        let mut t = self.lock();
        *t = Times { since: Some(Instant::now()), ..Times::default() };
    }

    /// Restarts the clock of `last_*` without forgetting anything: a phase
    /// starts now (after its events were built, before they are sent).
    pub fn mark(&self) {
        self.lock().since = Some(Instant::now());
    }

    /// Records that `TASK_RUNNING` of `endpoint` leaves now.
    pub fn sent(&self, endpoint: String) {
        let now = Instant::now();
        let mut t = self.lock();
        for a in &mut t.arrived {
            a.remove(&endpoint);
        }
        t.sent.insert(endpoint, now);
    }

    /// Records that `backend` just stored a registration of `endpoint`.
    pub fn arrived(&self, backend: SimBackend, endpoint: &str) {
        let now = Instant::now();
        let mut t = self.lock();
        let map = &mut t.arrived[backend.index()];
        if !map.contains_key(endpoint) {
            map.insert(endpoint.to_owned(), now);
        }
        t.last_arrival = Some(now);
    }

    /// Latencies of `backend`, counting as missing only the sent endpoints in `expected`
    /// (an endpoint a backend is not meant to hold is not missing there).
    pub fn arrivals(&self, backend: SimBackend, expected: impl Fn(&str) -> bool) -> Arrivals {
        let t = self.lock();
        let arrived = &t.arrived[backend.index()];
        let mut out = Arrivals { arrived: arrived.len(), ..Arrivals::default() };
        for (endpoint, sent) in &t.sent {
            match arrived.get(endpoint) {
                Some(at) => out.micros.push(at.saturating_duration_since(*sent).as_micros() as u64),
                None if expected(endpoint) => out.missing += 1,
                None => {}
            }
        }
        let since_reset = |at: Option<Instant>| Some(at?.saturating_duration_since(t.since?).as_micros() as u64);
        out.last_arrival_micros = since_reset(t.last_arrival);
        out.last_write_micros = since_reset(t.last_write[backend.index()]);
        out
    }

    /// Records that `backend` just answered a write.
    pub fn wrote(&self, backend: SimBackend) {
        let now = Instant::now();
        self.lock().last_write[backend.index()] = Some(now);
    }

    /// How many `TASK_RUNNING` sends were recorded since the reset.
    pub fn sent_count(&self) -> usize {
        self.lock().sent.len()
    }
}

/// What one backend simulator does besides answering: the write cost and
/// where it reports arrivals. The default does nothing.
#[derive(Clone, Default)]
pub struct Tap(Option<Arc<TapInner>>);

struct TapInner {
    backend: SimBackend,
    per_write: Option<Duration>,
    /// Held while a write's cost is slept when the real server serialises writes.
    gate: tokio::sync::Mutex<()>,
    timeline: Arc<Timeline>,
    requests: std::sync::atomic::AtomicU64,
    writes: std::sync::atomic::AtomicU64,
}

impl fmt::Debug for Tap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Tap(off)"),
            Some(t) => write!(f, "Tap({}, {:?})", t.backend, t.per_write),
        }
    }
}

impl Tap {
    pub fn new(backend: SimBackend, per_write: Option<Duration>, timeline: Arc<Timeline>) -> Tap {
        Tap(Some(Arc::new(TapInner {
            backend,
            per_write: per_write.filter(|d| !d.is_zero()),
            gate: tokio::sync::Mutex::new(()),
            timeline,
            requests: Default::default(),
            writes: Default::default(),
        })))
    }

    /// Records that this backend stored a registration of `endpoint`.
    pub fn arrived(&self, endpoint: &str) {
        if let Some(t) = &self.0 {
            t.timeline.arrived(t.backend, endpoint);
        }
    }

    /// Requests and writes (anything but GET/HEAD/OPTIONS) answered so far.
    pub fn counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        self.0.as_ref().map(|t| (t.requests.load(Relaxed), t.writes.load(Relaxed))).unwrap_or_default()
    }

    /// Wraps a simulator's router: counts requests, adds the write cost.
    pub fn layer(&self, router: Router) -> Router {
        match &self.0 {
            None => router,
            Some(_) => router.layer(axum::middleware::from_fn_with_state(self.clone(), around)),
        }
    }
}

/// Waits `cost` precisely: tokio's timer rounds up to whole milliseconds
/// (3.6 ms would cost 4–5), so the wait is a thread sleep on the blocking pool.
async fn pay(cost: Duration) {
    if tokio::task::spawn_blocking(move || std::thread::sleep(cost)).await.is_err() {
        tokio::time::sleep(cost).await;
    }
}

async fn around(State(tap): State<Tap>, req: Request, next: Next) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let Some(t) = tap.0.as_ref() else {
        return next.run(req).await;
    };
    t.requests.fetch_add(1, Relaxed);
    let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    if !write {
        return next.run(req).await;
    }
    t.writes.fetch_add(1, Relaxed);
    let response = match t.per_write {
        None => next.run(req).await,
        Some(cost) if t.backend.serialises_writes() => {
            let _one_at_a_time = t.gate.lock().await;
            pay(cost).await;
            next.run(req).await
        }
        Some(cost) => {
            pay(cost).await;
            next.run(req).await
        }
    };
    t.timeline.wrote(t.backend);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(SimBackend, Duration), LatencyError>) {
        let got = input.parse::<WriteLatency>().map(|l| (l.backend, l.per_write));
        assert_eq!(got, expected, "{input}");
    }

    #[test]
    fn latency_flags() {
        check("consul-agent", Ok((SimBackend::Consul, Duration::from_micros(3600))));
        check("consul=3.6ms", Ok((SimBackend::Consul, Duration::from_micros(3600))));
        check("kong=2ms", Ok((SimBackend::Kong, Duration::from_millis(2))));
        check("vulcand = 500us", Ok((SimBackend::Vulcand, Duration::from_micros(500))));
        check("vulcand=0s", Ok((SimBackend::Vulcand, Duration::ZERO)));
        check("etcd=1ms", Err(LatencyError::Backend("etcd".into())));
        check("consul", Err(LatencyError::Shape("consul".into())));
        assert!(matches!("consul=fast".parse::<WriteLatency>(), Err(LatencyError::Duration { .. })));
        assert!(matches!("consul=-1.5ms".parse::<WriteLatency>(), Err(LatencyError::Duration { .. })));
    }

    #[test]
    fn only_the_first_arrival_after_a_send_counts() {
        let tl = Timeline::default();
        tl.reset();
        tl.arrived(SimBackend::Consul, "10.0.0.1:31000");
        tl.sent("10.0.0.1:31000".into());
        tl.sent("10.0.0.2:31001".into());
        tl.arrived(SimBackend::Consul, "10.0.0.1:31000");
        let first = tl.arrivals(SimBackend::Consul, |_| true);
        tl.arrived(SimBackend::Consul, "10.0.0.1:31000");
        let again = tl.arrivals(SimBackend::Consul, |_| true);
        assert_eq!(first.micros.len(), 1);
        assert_eq!(first.missing, 1);
        assert_eq!(first.micros, again.micros);
        // Kong is not meant to hold 10.0.0.2: not missing there.
        let kong = tl.arrivals(SimBackend::Kong, |e| e == "10.0.0.1:31000");
        assert_eq!((kong.micros.len(), kong.missing), (0, 1));
    }
}
