//! HA replicas through the binary: two `switchboard run --ha` on one Consul
//! lock, the Marathon and Consul simulators, and a small tagging proxy in
//! front of the backend per replica, so the request log says which replica
//! wrote what and when (one clock: everything but the daemons is in this
//! process). Never two writers is checked on that log against the simulator's
//! record of who held the lock since when.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Daemon, eventually, eventually_async, run_cli, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::consul_kv::{LockChange, REPLICA_HEADER};
use switchboard::sim::marathon::{Generation, MarathonSim, ModelOptions};
use switchboard::sim::vulcand::{VulcandSim, VulcandSimOptions};

const WAIT: Duration = Duration::from_secs(30);
const KEY: &str = "switchboard/default/leader";
/// Test timing: a 2 s TTL, so the fence closes 1.33 s after the last renew,
/// and a 2.5 s lock delay (at least the 0.67 s margin + the 1.5 s request timeout).
const TTL: Duration = Duration::from_secs(2);

/// One write that reached the backend, as the replica's proxy saw it.
#[derive(Debug, Clone)]
#[allow(dead_code)] // method and path are read through Debug, in failure messages
struct Write {
    replica: String,
    method: String,
    path: String,
    sent: Instant,
    answered: Instant,
}

#[derive(Clone, Default)]
struct Writes(Arc<Mutex<Vec<Write>>>);

impl Writes {
    fn of(&self, replica: &str) -> Vec<Write> {
        self.0.lock().unwrap().iter().filter(|w| w.replica == replica).cloned().collect()
    }
}

/// A reverse proxy to `upstream` that names `replica` on every request and
/// logs the writes (anything but GET, sessions and KV excluded) with when they
/// were sent and answered.
async fn tagging_proxy(replica: &str, upstream: String, writes: Writes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = reqwest::Client::new();
    let replica = replica.to_owned();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, upstream, replica, writes) = (client.clone(), upstream.clone(), replica.clone(), writes.clone());
        async move {
            let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let mut req = client.request(method.clone(), format!("{upstream}{path}")).body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            if !headers.contains_key(REPLICA_HEADER) {
                req = req.header(REPLICA_HEADER, HeaderValue::from_str(&replica).unwrap());
            }
            let sent = Instant::now();
            let Ok(resp) = req.send().await else { return StatusCode::BAD_GATEWAY.into_response() };
            let status = resp.status();
            let mut out_headers = HeaderMap::new();
            for (k, v) in resp.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    out_headers.insert(k, v.clone());
                }
            }
            let body = resp.bytes().await.unwrap_or_default();
            let is_write = method != Method::GET && !path.starts_with("/v1/session/") && !path.starts_with("/v1/kv/");
            if is_write {
                writes.0.lock().unwrap().push(Write {
                    replica,
                    method: method.to_string(),
                    path,
                    sent,
                    answered: Instant::now(),
                });
            }
            let mut r: Response = (status, body).into_response();
            r.headers_mut().extend(out_headers);
            r
        }
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

fn web_app(id: &str) -> Value {
    json!({
        "id": id,
        "labels": {"consul": ""},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
    })
}

/// Consul service IDs Switchboard should hold for the running tasks of `sim`.
fn expected(sim: &MarathonSim) -> BTreeSet<String> {
    let body = sim.model().apps_json();
    let mut out = BTreeSet::new();
    for a in body["apps"].as_array().into_iter().flatten() {
        for t in a["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
            out.insert(format!("{}:{}", t["id"].as_str().unwrap_or_default(), t["ports"][0]));
        }
    }
    out
}

fn held(consul: &ConsulSim) -> BTreeSet<String> {
    consul.services().into_keys().collect()
}

async fn converged(sim: &MarathonSim, consul: &ConsulSim, what: &str) {
    eventually(what, WAIT, || {
        let want = expected(sim);
        !want.is_empty() && held(consul) == want
    })
    .await;
}

struct Setup {
    marathon: MarathonSim,
    /// The backend (and, unless `ha_consul`, the lock too).
    consul: ConsulSim,
    /// A second agent holding only the lock, when the test cuts a replica off it.
    ha_consul: Option<ConsulSim>,
    writes: Writes,
    /// A second backend, when the test gives one (Vulcand: no tags, the ledger is the ownership record).
    vulcand: Option<VulcandSim>,
    dirs: Vec<tempfile::TempDir>,
}

impl Setup {
    async fn new(separate_lock_agent: bool) -> Setup {
        let opts =
            ModelOptions { keepalive: Duration::from_millis(500), generation: Generation::V1_8, ..Default::default() };
        let marathon = MarathonSim::start(opts).await.unwrap();
        let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
        let ha_consul = match separate_lock_agent {
            true => Some(ConsulSim::start(ConsulSimOptions::default()).await.unwrap()),
            false => None,
        };
        for c in std::iter::once(&consul).chain(ha_consul.as_ref()) {
            c.kv().set_session_ttl_min(Duration::from_millis(100));
        }
        Setup { marathon, consul, ha_consul, writes: Writes::default(), vulcand: None, dirs: Vec::new() }
    }

    fn lock_agent(&self) -> &ConsulSim {
        self.ha_consul.as_ref().unwrap_or(&self.consul)
    }

    /// `switchboard run --ha` named `name`, its backend behind its own tagging proxy.
    async fn replica(&mut self, name: &str, extra: &[&str]) -> Daemon {
        let proxy = tagging_proxy(name, self.consul.url(), self.writes.clone()).await;
        let dir = tempfile::tempdir().unwrap();
        let mut args =
            s(&["--marathon", self.marathon.url().as_str(), "--consul", &proxy, "--ha", "--replica-name", name]);
        if let Some(ha) = &self.ha_consul {
            args.extend(s(&["--ha-consul", &ha.url()]));
        }
        if let Some(v) = &self.vulcand {
            let upstream = v.url().as_str().trim_end_matches('/').to_owned();
            let proxy = tagging_proxy(name, upstream, self.writes.clone()).await;
            args.extend(s(&["--vulcand", &proxy]));
        }
        args.extend(s(extra));
        let d = Daemon::start(&dir.path().join("data"), &args);
        self.dirs.push(dir);
        d
    }

    async fn leader_is(&self, name: &str) {
        eventually(&format!("{name} holds the lock"), WAIT, || {
            self.lock_agent().kv().holder(KEY).is_some_and(|(_, n)| n == name)
        })
        .await;
    }

    /// When `name` acquired the lock (the last time).
    fn acquired_at(&self, name: &str) -> Instant {
        let locks = self.lock_agent().kv().locks();
        let ev = locks.iter().rev().find(|e| e.name == name && e.change == LockChange::Acquired);
        ev.unwrap_or_else(|| panic!("{name} never acquired the lock: {locks:?}")).at
    }
}

fn fast(ttl: &str, lock_delay: &str, timeout: &str) -> Vec<&'static str> {
    let leak = |v: &str| -> &'static str { Box::leak(v.to_owned().into_boxed_str()) };
    vec!["--ha-session-ttl", leak(ttl), "--ha-lock-delay", leak(lock_delay), "--request-timeout", leak(timeout)]
}

/// The role a replica reports on `/state` (`leader`, `standby`), if it answers.
async fn role_of(d: &Daemon) -> Option<String> {
    let url = format!("{}/state", d.status_url().await);
    let state: Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
    state["role"]["role"].as_str().map(str::to_owned)
}

fn sigterm(d: &Daemon) {
    let status = Command::new("kill").args(["-TERM", &d.child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// No write of `old` after `new` took the lock, none of `new` before; returns
/// how many writes each made.
fn never_two_writers(writes: &Writes, old: &str, new: &str, new_acquired: Instant) -> (usize, usize) {
    let (o, n) = (writes.of(old), writes.of(new));
    for w in &o {
        assert!(w.answered <= new_acquired, "{old} wrote after {new} took the lock: {w:?}");
    }
    for w in &n {
        assert!(w.sent >= new_acquired, "{new} wrote before it held the lock: {w:?}");
    }
    (o.len(), n.len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_mid_deploy_the_standby_converges_and_never_two_writers() {
    let mut env = Setup::new(false).await;
    let mut a = env.replica("a", &fast("2s", "2500ms", "1500ms")).await;
    env.leader_is("a").await;
    let b = env.replica("b", &fast("2s", "2500ms", "1500ms")).await;
    // The standby follows the stream too (its store stays warm).
    eventually("both replicas subscribed", WAIT, || env.marathon.subscribers() == 2).await;
    eventually("the standby has a session", WAIT, || env.lock_agent().kv().session_count() == 2).await;

    let events = env.marathon.model().deploy(web_app("/shop/web"), 4);
    env.marathon.emit(&events[..events.len() / 2]);
    eventually("the leader registered part of the deploy", WAIT, || env.consul.service_count() >= 1).await;
    assert_eq!(role_of(&a).await.as_deref(), Some("leader"));
    assert_eq!(role_of(&b).await.as_deref(), Some("standby"));
    a.kill9();
    let killed = Instant::now();
    env.marathon.emit(&events[events.len() / 2..]);
    env.marathon.emit(&env.marathon.model().deploy(web_app("/shop/api"), 2));

    env.leader_is("b").await;
    let took_over = env.acquired_at("b");
    // 2 × TTL (the simulator drops a session as Consul servers do) + lock delay + a retry.
    assert!(took_over.duration_since(killed) < 2 * TTL + Duration::from_millis(5000), "slow takeover");
    converged(&env.marathon, &env.consul, "the new leader completes the deploy").await;
    let (old, new) = never_two_writers(&env.writes, "a", "b", took_over);
    assert!(old >= 1 && new >= 1, "a wrote {old}, b wrote {new}");
    assert!(b.log().contains("HA: leader"), "{}", b.log());
    assert_eq!(role_of(&b).await.as_deref(), Some("leader"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_owns_what_the_old_one_wrote_on_a_backend_without_tags() {
    let mut env = Setup::new(false).await;
    env.vulcand = Some(VulcandSim::start(VulcandSimOptions::default()).unwrap());
    let mut a = env.replica("a", &fast("2s", "2500ms", "1500ms")).await;
    env.leader_is("a").await;
    let b = env.replica("b", &fast("2s", "2500ms", "1500ms")).await;
    eventually("both replicas subscribed", WAIT, || env.marathon.subscribers() == 2).await;
    let app = json!({
        "id": "/shop/web",
        "labels": {"consul": "", "vulcand.host": "web.example.com"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
    });
    env.marathon.emit(&env.marathon.model().deploy(app, 2));
    converged(&env.marathon, &env.consul, "a registers").await;
    let vulcand = env.vulcand.as_ref().unwrap();
    eventually("a routes both in Vulcand", WAIT, || vulcand.all_servers().len() == 2).await;
    // a shares its Vulcand ledger (shortly after each write) before it dies.
    eventually("a shared its ledger", WAIT, || {
        let kv = env.lock_agent().kv();
        let parts = kv.keys("switchboard/default/ledger/vulcand/").into_iter().filter_map(|k| kv.value(&k));
        parts.map(|v| String::from_utf8_lossy(&v).matches("\"task_id\"").count()).sum::<usize>() == 2
    })
    .await;
    a.kill9();
    env.leader_is("b").await;

    // b takes Vulcand's entries written by a as its own: it scales them down and up.
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 1));
    converged(&env.marathon, &env.consul, "b scales down in Consul").await;
    eventually("b removed a's server from Vulcand", WAIT, || vulcand.all_servers().len() == 1).await;
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 3));
    eventually("b adds servers to a's Vulcand backend", WAIT, || vulcand.all_servers().len() == 3).await;
    assert!(!b.log().contains("refused"), "{}", b.log());
    never_two_writers(&env.writes, "a", "b", env.acquired_at("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_killed_right_after_its_first_vulcand_write_leaves_the_service_to_the_next() {
    let mut env = Setup::new(false).await;
    env.vulcand = Some(VulcandSim::start(VulcandSimOptions::default()).unwrap());
    let mut a = env.replica("a", &fast("2s", "2500ms", "1500ms")).await;
    env.leader_is("a").await;
    let b = env.replica("b", &fast("2s", "2500ms", "1500ms")).await;
    eventually("both replicas subscribed", WAIT, || env.marathon.subscribers() == 2).await;
    let app = json!({
        "id": "/shop/api",
        "labels": {"consul": "", "vulcand.host": "api.example.com"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
    });
    env.marathon.emit(&env.marathon.model().deploy(app, 2));
    // Killed at its first write to Vulcand: before any periodic share of its ledger.
    eventually("a writes to Vulcand", WAIT, || env.writes.of("a").iter().any(|w| w.path.starts_with("/v2/"))).await;
    a.kill9();
    env.leader_is("b").await;
    env.marathon.emit(&env.marathon.model().scale("/shop/api", 3));
    let vulcand = env.vulcand.as_ref().unwrap();
    eventually("b routes all three in Vulcand", WAIT, || vulcand.all_servers().len() == 3).await;
    env.marathon.emit(&env.marathon.model().scale("/shop/api", 1));
    eventually("b scales Vulcand down", WAIT, || vulcand.all_servers().len() == 1).await;
    assert!(!b.log().contains("refused"), "{}", b.log());
    never_two_writers(&env.writes, "a", "b", env.acquired_at("b"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_consul_stops_writing_within_a_ttl_and_never_two_writers() {
    let mut env = Setup::new(true).await;
    // Consul may drop a session as early as one TTL after its last renew: play that.
    env.lock_agent().kv().set_expiry_factor(1.0);
    let a = env.replica("a", &fast("2s", "2500ms", "1500ms")).await;
    env.leader_is("a").await;
    let _b = env.replica("b", &fast("2s", "2500ms", "1500ms")).await;
    eventually("both replicas subscribed", WAIT, || env.marathon.subscribers() == 2).await;
    env.marathon.emit(&env.marathon.model().deploy(web_app("/shop/web"), 2));
    converged(&env.marathon, &env.consul, "the leader registers").await;

    // The leader can still reach the backend, but no longer the lock's agent.
    env.lock_agent().kv().partition("a", true);
    let cut = Instant::now();
    eventually("a gives its session up", WAIT, || a.log().contains("not renewed for a TTL")).await;
    // Something to write now: an unfenced leader would write it at once.
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 4));
    env.leader_is("b").await;
    let took_over = env.acquired_at("b");
    converged(&env.marathon, &env.consul, "the new leader registers the scale-up").await;
    for w in env.writes.of("a") {
        assert!(w.sent < cut + TTL, "a wrote {:?} after it was cut off for a TTL", w);
    }
    let (_, new) = never_two_writers(&env.writes, "a", "b", took_over);
    assert!(new >= 2, "b wrote {new}");

    // Healed, the old leader finds its session gone and stays a standby.
    env.lock_agent().kv().partition("a", false);
    eventually("a is back as a standby", WAIT, || {
        a.log().contains("HA session created") && a.log().matches("HA session created").count() >= 2
    })
    .await;
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 1));
    converged(&env.marathon, &env.consul, "the leader scales down").await;
    assert!(env.lock_agent().kv().holder(KEY).is_some_and(|(_, n)| n == "b"));
    never_two_writers(&env.writes, "a", "b", took_over);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_at_once() {
    let mut env = Setup::new(false).await;
    // Default TTL (10 s) and lock delay (15 s): only a release makes a quick takeover.
    let mut a = env.replica("a", &[]).await;
    env.leader_is("a").await;
    let _b = env.replica("b", &[]).await;
    eventually("the standby has a session", WAIT, || env.lock_agent().kv().session_count() == 2).await;
    env.marathon.emit(&env.marathon.model().deploy(web_app("/shop/web"), 2));
    converged(&env.marathon, &env.consul, "the leader registers").await;

    let stopped = Instant::now();
    sigterm(&a);
    env.leader_is("b").await;
    let took_over = env.acquired_at("b");
    assert!(took_over.duration_since(stopped) < Duration::from_secs(3), "took {:?}", took_over.duration_since(stopped));
    eventually("a exits", WAIT, || matches!(a.child.try_wait(), Ok(Some(_)))).await;
    assert!(a.child.try_wait().unwrap().unwrap().success());
    let changes: Vec<_> = env.lock_agent().kv().locks().into_iter().map(|e| (e.name, e.change)).collect();
    assert!(changes.contains(&("a".to_owned(), LockChange::Released)), "{changes:?}");

    env.marathon.emit(&env.marathon.model().scale("/shop/web", 3));
    converged(&env.marathon, &env.consul, "the new leader follows on").await;
    let (old, new) = never_two_writers(&env.writes, "a", "b", took_over);
    assert!(old >= 2 && new >= 1, "a wrote {old}, b wrote {new}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_with_ha_exits_2_while_a_daemon_holds_the_lock() {
    let mut env = Setup::new(false).await;
    let a = env.replica("a", &[]).await;
    env.leader_is("a").await;
    env.marathon.emit(&env.marathon.model().deploy(web_app("/shop/web"), 1));
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("once").to_string_lossy().into_owned();
    let once = s(&[
        "reconcile",
        "--once",
        "--ha",
        "--replica-name",
        "ops",
        "--marathon",
        env.marathon.url().as_str(),
        "--consul",
        &env.consul.url(),
        "--data-dir",
        &data,
    ]);
    let out = run_cli(once.clone()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("held by another replica") && err.contains("(a)"), "{err}");
    assert!(env.lock_agent().kv().holder(KEY).is_some_and(|(_, n)| n == "a"));

    sigterm(&a);
    eventually("a released the lock", WAIT, || env.lock_agent().kv().holder(KEY).is_none()).await;
    let out = run_cli(once).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    converged(&env.marathon, &env.consul, "reconcile registered").await;
    assert!(env.lock_agent().kv().locks().iter().any(|e| e.name == "ops" && e.change == LockChange::Released));
    assert_eq!(env.lock_agent().kv().session_count(), 0, "reconcile left its session behind");
}

/// `reconcile --once` without `--ha` against `consul` (through a proxy naming
/// it `ops` in the request log), the lock looked for on `lock` when given.
fn once_without_ha(env: &Setup, consul: &str, lock: Option<&str>, data: &str, extra: &[&str]) -> Vec<String> {
    let mut args = s(&["reconcile", "--once", "--marathon", env.marathon.url().as_str(), "--consul", consul]);
    if let Some(lock) = lock {
        args.extend(s(&["--ha-consul", lock]));
    }
    args.extend(s(&["--data-dir", data]));
    args.extend(s(extra));
    args
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_without_ha_writes_nothing_while_a_daemon_leads_unless_forced() {
    let env = Setup::new(true).await;
    // The daemon leads (lock on --ha-consul) but routes only to Vulcand: every
    // Consul write below is reconcile's.
    let vulcand = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lock = env.lock_agent().url();
    let args = s(&[
        "--marathon",
        env.marathon.url().as_str(),
        "--vulcand",
        vulcand.url().as_str(),
        "--ha",
        "--ha-consul",
        &lock,
        "--replica-name",
        "a",
    ]);
    let _a = Daemon::start(&dir.path().join("data"), &args);
    env.leader_is("a").await;
    env.marathon.emit(&env.marathon.model().deploy(web_app("/shop/web"), 2));
    let proxy = tagging_proxy("ops", env.consul.url(), env.writes.clone()).await;
    let data = dir.path().join("once").to_string_lossy().into_owned();

    let out = run_cli(once_without_ha(&env, &proxy, Some(&lock), &data, &[])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    assert!(err.contains("replica a") && err.contains(KEY) && err.contains("--force"), "{err}");
    assert!(env.writes.of("ops").is_empty(), "reconcile wrote beside the leader: {:?}", env.writes.of("ops"));
    assert_eq!(env.consul.service_count(), 0);

    // A dry run still plans.
    let out = run_cli(once_without_ha(&env, &proxy, Some(&lock), &data, &["--dry-run"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(stdout.matches("planned").count(), 2, "{stdout}");
    assert!(env.writes.of("ops").is_empty());

    // Forced, it writes.
    let out = run_cli(once_without_ha(&env, &proxy, Some(&lock), &data, &["--force"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    converged(&env.marathon, &env.consul, "the forced reconcile registered").await;
    assert!(!env.writes.of("ops").is_empty());
    assert!(env.lock_agent().kv().holder(KEY).is_some_and(|(_, n)| n == "a"), "the daemon still leads");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_refused_sent_to_a_standby_answers_409_naming_the_leader() {
    let mut env = Setup::new(false).await;
    let a = env.replica("a", &[]).await;
    env.leader_is("a").await;
    let b = env.replica("b", &[]).await;
    eventually_async("b is a standby", WAIT, || async { role_of(&b).await.as_deref() == Some("standby") }).await;
    let client = reqwest::Client::new();

    let resp = client.post(format!("{}/api/retry-refused", b.status_url().await)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::CONFLICT);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["leader"]["replica"], "a", "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("standby")), "{body}");
    let resp = client.post(format!("{}/api/retry-refused", a.status_url().await)).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK, "the leader lifts its refusals");

    // reconcile --once --retry-refused asks the daemon on --listen: the standby's 409, said plainly.
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("once").to_string_lossy().into_owned();
    let standby = b.status_url().await.trim_start_matches("http://").to_owned();
    let consul = env.consul.url();
    let out = run_cli(once_without_ha(&env, &consul, None, &data, &["--retry-refused", "--listen", &standby])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("HA standby") && err.contains("409") && err.contains("replica a"), "{err}");

    // The lock on --consul (no --ha-consul): reconcile --once without --ha stands back too.
    let out = run_cli(once_without_ha(&env, &consul, None, &data, &[])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("replica a"), "{err}");
}

#[tokio::test]
async fn ha_without_a_consul_agent_is_refused_naming_both_settings() {
    let out = run_cli(s(&["run", "--ha", "--marathon", "http://127.0.0.1:1"])).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--ha-consul") && err.contains("--consul"), "{err}");
}
