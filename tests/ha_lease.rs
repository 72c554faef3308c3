//! The lease bounds every request (issue 19, point 1), through the binary:
//! two `switchboard run --ha` on one Consul lock, each replica's backends
//! behind a proxy of its own that names the replica and logs every write with
//! when it reached the proxy and when the backend answered (one clock: all
//! but the daemons is in this process). A proxy can hold each write for a
//! while, so a multi-request op (a Kong registration) or a heartbeat (one
//! request per Vulcand server) is still going when the lease ends.

mod common;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use common::{Daemon, eventually, run_cli, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::consul_kv::{LockChange, REPLICA_HEADER};
use switchboard::sim::kong::{KongSim, KongSimOptions};
use switchboard::sim::marathon::{Generation, MarathonSim, ModelOptions};
use switchboard::sim::vulcand::{VulcandSim, VulcandSimOptions};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "switchboard/default/leader";
/// Test timing: TTL 2 s, so the lease ends at most TTL − margin = 1.33 s
/// after the last renew was sent; request timeout 1.5 s; lock delay 2.5 s
/// (at least margin 0.67 s + one request timeout, as the start-up check asks).
const TTL: Duration = Duration::from_secs(2);
const LEASE: Duration = Duration::from_millis(1334);
const TIMING: &[&str] = &["--ha-session-ttl", "2s", "--ha-lock-delay", "2500ms", "--request-timeout", "1500ms"];
/// Loopback and scheduling between the gate letting a request out and the
/// proxy seeing it arrive.
const SLACK: Duration = Duration::from_millis(300);

/// One write that reached a replica's proxy.
#[derive(Debug, Clone)]
#[allow(dead_code)] // method and path are read through Debug, in failure messages
struct Write {
    replica: String,
    method: String,
    path: String,
    /// When it reached the proxy.
    sent: Instant,
    /// When the backend answered it.
    answered: Instant,
}

/// The write log, and how long each proxy holds a write before passing it on.
#[derive(Clone, Default)]
struct Writes {
    log: Arc<Mutex<Vec<Write>>>,
    hold: Arc<Mutex<Duration>>,
}

impl Writes {
    fn of(&self, replica: &str) -> Vec<Write> {
        self.log.lock().unwrap().iter().filter(|w| w.replica == replica).cloned().collect()
    }

    fn hold_each_write(&self, d: Duration) {
        *self.hold.lock().unwrap() = d;
    }
}

/// A reverse proxy to `upstream` naming `replica` on every request; logs the
/// writes (anything but GET and HEAD), each held for `writes.hold` first.
async fn tagging_proxy(replica: &str, upstream: String, writes: Writes) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let client = reqwest::Client::new();
    let replica = replica.to_owned();
    let app = axum::Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let (client, upstream, replica, writes) = (client.clone(), upstream.clone(), replica.clone(), writes.clone());
        async move {
            let sent = Instant::now();
            let is_write = method != Method::GET && method != Method::HEAD;
            let hold = *writes.hold.lock().unwrap();
            if is_write && !hold.is_zero() {
                tokio::time::sleep(hold).await;
            }
            let path = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
            let mut req = client.request(method.clone(), format!("{upstream}{path}")).body(body);
            for (k, v) in &headers {
                if k != "host" && k != "content-length" {
                    req = req.header(k, v);
                }
            }
            req = req.header(REPLICA_HEADER, HeaderValue::from_str(&replica).unwrap());
            let Ok(resp) = req.send().await else { return StatusCode::BAD_GATEWAY.into_response() };
            let status = resp.status();
            let mut out_headers = HeaderMap::new();
            for (k, v) in resp.headers() {
                if k != "content-length" && k != "transfer-encoding" {
                    out_headers.insert(k, v.clone());
                }
            }
            let body = resp.bytes().await.unwrap_or_default();
            if is_write {
                let w = Write { replica, method: method.to_string(), path, sent, answered: Instant::now() };
                writes.log.lock().unwrap().push(w);
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

/// Marathon, the Consul agents (a backend one, and a second holding only the
/// lock, so a test can cut a replica off the lock and not the backend), and
/// the backends a test asks for.
struct Setup {
    marathon: MarathonSim,
    consul: ConsulSim,
    lock: ConsulSim,
    kong: Option<KongSim>,
    vulcand: Option<VulcandSim>,
    writes: Writes,
    /// `SWITCHBOARD_LOG` of the replicas (`debug` unless a test with many
    /// requests asks for less).
    log: &'static str,
    dirs: Vec<tempfile::TempDir>,
}

impl Setup {
    async fn new() -> Setup {
        let opts =
            ModelOptions { keepalive: Duration::from_millis(500), generation: Generation::V1_8, ..Default::default() };
        let marathon = MarathonSim::start(opts).await.unwrap();
        let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
        let lock = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
        lock.kv().set_session_ttl_min(Duration::from_millis(100));
        // Consul may drop a session as early as one TTL after its last renew: play that.
        lock.kv().set_expiry_factor(1.0);
        let writes = Writes::default();
        Setup { marathon, consul, lock, kong: None, vulcand: None, writes, log: "debug", dirs: Vec::new() }
    }

    /// `switchboard run --ha` named `name`; every backend behind its own proxy.
    async fn replica(&mut self, name: &str, extra: &[&str]) -> Daemon {
        let consul = tagging_proxy(name, self.consul.url(), self.writes.clone()).await;
        let mut args = s(&["--marathon", self.marathon.url().as_str(), "--consul", &consul]);
        args.extend(s(&["--ha", "--ha-consul", &self.lock.url(), "--replica-name", name]));
        if let Some(k) = &self.kong {
            let upstream = k.url().as_str().trim_end_matches('/').to_owned();
            args.extend(s(&["--kong", &tagging_proxy(name, upstream, self.writes.clone()).await]));
        }
        if let Some(v) = &self.vulcand {
            let upstream = v.url().as_str().trim_end_matches('/').to_owned();
            args.extend(s(&["--vulcand", &tagging_proxy(name, upstream, self.writes.clone()).await]));
        }
        args.extend(s(TIMING));
        args.extend(s(extra));
        let dir = tempfile::tempdir().unwrap();
        let d = Daemon::start_with_env(&dir.path().join("data"), &args, &[("SWITCHBOARD_LOG", self.log)]);
        self.dirs.push(dir);
        d
    }

    async fn leader_is(&self, name: &str) {
        eventually(&format!("{name} holds the lock"), WAIT, || {
            self.lock.kv().holder(KEY).is_some_and(|(_, n)| n == name)
        })
        .await;
    }

    /// When `name` last acquired the lock.
    fn acquired_at(&self, name: &str) -> Instant {
        let locks = self.lock.kv().locks();
        let ev = locks.iter().rev().find(|e| e.name == name && e.change == LockChange::Acquired);
        ev.unwrap_or_else(|| panic!("{name} never acquired the lock: {locks:?}")).at
    }

    /// Two replicas: `a` leads, `b` stands by with a session of its own.
    async fn two_replicas(&mut self, extra: &[&str]) -> (Daemon, Daemon) {
        let a = self.replica("a", extra).await;
        self.leader_is("a").await;
        let b = self.replica("b", extra).await;
        eventually("both replicas subscribed", WAIT, || self.marathon.subscribers() == 2).await;
        eventually("the standby has a session", WAIT, || self.lock.kv().session_count() == 2).await;
        (a, b)
    }

    fn consul_ids(&self) -> BTreeSet<String> {
        self.consul.services().into_keys().collect()
    }

    /// Consul service IDs for the running tasks Marathon has.
    fn expected_consul_ids(&self) -> BTreeSet<String> {
        let body = self.marathon.model().apps_json();
        let mut out = BTreeSet::new();
        for a in body["apps"].as_array().into_iter().flatten() {
            if a["labels"].get("consul").is_none() {
                continue;
            }
            for t in a["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
                out.insert(format!("{}:{}", t["id"].as_str().unwrap_or_default(), t["ports"][0]));
            }
        }
        out
    }

    async fn consul_converged(&self, what: &str) {
        eventually(what, WAIT, || {
            let want = self.expected_consul_ids();
            !want.is_empty() && self.consul_ids() == want
        })
        .await;
    }
}

fn app(id: &str, labels: Value) -> Value {
    json!({
        "id": id,
        "labels": labels,
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
    })
}

fn signal(d: &Daemon, sig: &str) {
    let status = Command::new("kill").args([sig, &d.child.id().to_string()]).status().unwrap();
    assert!(status.success(), "kill {sig}");
}

/// No write of `old` answered after `new` took the lock, none of `new` sent
/// before; returns how many writes each made.
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

/// No write of `replica` reached the backend after `lease_end` (+ loopback slack).
fn nothing_sent_after(writes: &Writes, replica: &str, lease_end: Instant) {
    for w in writes.of(replica) {
        assert!(
            w.sent <= lease_end + SLACK,
            "{replica} sent a write {:?} after its lease had ended: {w:?}",
            w.sent - lease_end
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_paused_past_its_ttl_sends_nothing_after_the_new_leaders_first_write() {
    let _one = common::serial().await;
    let mut env = Setup::new().await;
    env.kong = Some(KongSim::start(KongSimOptions::default()).await.unwrap());
    let (a, b) = env.two_replicas(&[]).await;
    // The session answers to its TTL alone: a failing node check drops no session of ours.
    assert_eq!(env.lock.kv().session_checks("a"), Some(Vec::new()));
    assert_eq!(env.lock.kv().fail_node_check(), 0, "a session bound to serfHealth");
    env.marathon.emit(&env.marathon.model().deploy(app("/shop/warmup", json!({"consul": ""})), 1));
    env.consul_converged("a registers").await;

    // Paused in the middle of a Kong registration (four writes, each held
    // 300 ms): the rest of the op is still to be sent when it stops.
    env.writes.hold_each_write(Duration::from_millis(300));
    let kong_writes =
        |r: &str| env.writes.of(r).into_iter().filter(|w| !w.path.starts_with("/v1/")).collect::<Vec<_>>();
    let labels = json!({"consul": "", "kong.hosts": "shop.example.com", "kong.paths": "/"});
    env.marathon.emit(&env.marathon.model().deploy(app("/shop/web", labels), 1));
    eventually("a's Kong registration is under way", WAIT, || !kong_writes("a").is_empty()).await;
    signal(&a, "-STOP");
    let stopped = Instant::now();
    env.leader_is("b").await;
    let took_over = env.acquired_at("b");
    assert!(took_over >= stopped + TTL, "b took over {:?} after a stopped", took_over - stopped);
    env.writes.hold_each_write(Duration::ZERO);
    let kong = env.kong.as_ref().unwrap();
    eventually("b publishes the app on Kong", WAIT, || kong.all_targets().len() == 1).await;
    env.consul_converged("b registers in Consul").await;
    eventually("b writes", WAIT, || !kong_writes("b").is_empty()).await;

    // Resumed: a's clock says its lease is long over; the rest of its op must not go out.
    signal(&a, "-CONT");
    eventually("a notices it lost its session", WAIT, || a.log().contains("not renewed for a TTL")).await;
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 3));
    env.consul_converged("b converges after a came back").await;
    eventually("b scales Kong up", WAIT, || kong.all_targets().len() == 3).await;
    let first_of_b = env.writes.of("b").iter().map(|w| w.sent).min().unwrap();
    for w in env.writes.of("a") {
        assert!(w.sent < first_of_b, "a sent a write after b's first: {w:?}");
    }
    never_two_writers(&env.writes, "a", "b", took_over);
    assert!(kong_writes("a").len() < 4, "a finished its registration after it resumed: {:?}", kong_writes("a"));
    assert!(env.lock.kv().holder(KEY).is_some_and(|(_, n)| n == "b"));
    drop(b);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_in_the_middle_of_a_kong_registration_leaves_no_write_after_the_lease_end() {
    let _one = common::serial().await;
    let mut env = Setup::new().await;
    env.kong = Some(KongSim::start(KongSimOptions::default()).await.unwrap());
    let (_a, _b) = env.two_replicas(&[]).await;
    env.marathon.emit(&env.marathon.model().deploy(app("/shop/warmup", json!({"consul": ""})), 1));
    env.consul_converged("a registers").await;

    // Each write held 1 s: a first Kong registration (upstream, target,
    // service, route: four writes) takes 4 s, past a lease cut off mid-way.
    env.writes.hold_each_write(Duration::from_millis(1000));
    let kong_writes =
        |r: &str| env.writes.of(r).into_iter().filter(|w| !w.path.starts_with("/v1/")).collect::<Vec<_>>();
    let labels = json!({"kong.hosts": "shop.example.com", "kong.paths": "/"});
    env.marathon.emit(&env.marathon.model().deploy(app("/shop/web", labels), 1));
    eventually("a's Kong registration is under way", WAIT, || !kong_writes("a").is_empty()).await;
    // Cut off from the lock's agent between two requests of the op: no renew
    // gets through from now on, so the lease ends within TTL − margin.
    env.lock.kv().partition("a", true);
    let cut = Instant::now();
    env.leader_is("b").await;
    let took_over = env.acquired_at("b");
    env.writes.hold_each_write(Duration::ZERO);
    let kong = env.kong.as_ref().unwrap();
    eventually("b publishes the app on Kong", WAIT, || kong.all_targets().len() == 1).await;
    eventually("b's routes are in place", WAIT, || !kong_writes("b").is_empty()).await;

    nothing_sent_after(&env.writes, "a", cut + LEASE);
    never_two_writers(&env.writes, "a", "b", took_over);
    assert!(kong_writes("a").len() < 4, "a finished its registration after the cut: {:?}", kong_writes("a"));
    env.lock.kv().partition("a", false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partition_in_the_middle_of_a_vulcand_heartbeat_of_2000_servers_leaves_no_write_after_the_lease_end() {
    let _one = common::serial().await;
    let mut env = Setup::new().await;
    env.vulcand = Some(VulcandSim::start(VulcandSimOptions::default()).unwrap());
    env.log = "info";
    // Servers live 30 s, heartbeat every 10 s: a heartbeat of 2,000 takes seconds.
    let (_a, _b) = env.two_replicas(&["--vulcand-server-ttl", "30s", "--backend-concurrency", "64"]).await;
    // 2,000 servers in 40 apps, routed in Vulcand only.
    for i in 0..40 {
        let labels = json!({"vulcand.host": format!("app{i}.example.com")});
        env.marathon.emit(&env.marathon.model().deploy(app(&format!("/big/app{i}"), labels), 50));
    }
    let vulcand = env.vulcand.as_ref().unwrap();
    eventually("a routes 2,000 servers", WAIT * 3, || vulcand.all_servers().len() == 2000).await;

    // A heartbeat rewrites every server, one request each; held 2 ms each it takes 4 s.
    env.writes.hold_each_write(Duration::from_millis(2));
    let before = env.writes.of("a").len();
    eventually("a's heartbeat is under way", WAIT, || env.writes.of("a").len() >= before + 50).await;
    env.lock.kv().partition("a", true);
    let cut = Instant::now();
    env.leader_is("b").await;
    let took_over = env.acquired_at("b");
    // By now an unfenced a would have gone on for seconds past its lease.
    assert!(took_over >= cut + LEASE + Duration::from_secs(1), "b took over {:?} after the cut", took_over - cut);

    nothing_sent_after(&env.writes, "a", cut + LEASE);
    never_two_writers(&env.writes, "a", "b", took_over);
    let during = env.writes.of("a").iter().filter(|w| w.sent >= cut).count();
    assert!(during < 2000, "a kept going through its whole heartbeat ({during} after the cut)");
    env.lock.kv().partition("a", false);
}

#[tokio::test]
async fn a_lock_delay_shorter_than_margin_plus_request_timeout_is_refused_naming_ha_lock_delay() {
    let _one = common::serial().await;
    let args = s(&[
        "run",
        "--ha",
        "--marathon",
        "http://127.0.0.1:1",
        "--consul",
        "http://127.0.0.1:1",
        "--ha-session-ttl",
        "30s",
        "--ha-lock-delay",
        "15s",
        "--request-timeout",
        "10s",
    ]);
    let out = run_cli(args.clone()).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--ha-lock-delay"), "{err}");
    // The numbers: margin (a third of the TTL) + one request timeout.
    assert!(err.contains("10s") && err.contains("--request-timeout") && err.contains("at least 20s"), "{err}");
    // Any TTL: a short one with a long request timeout is refused too.
    let mut short = args.clone();
    short.splice(6..12, s(&["--ha-session-ttl", "3s", "--ha-lock-delay", "5s", "--request-timeout", "10s"]));
    let out = run_cli(short).await;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--ha-lock-delay") && err.contains("at least 11s"), "{err}");
}
