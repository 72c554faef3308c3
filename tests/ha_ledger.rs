//! The shared ledger of HA replicas through the binary: two `switchboard run
//! --ha` on one Consul lock (the KV of the Consul simulator, which logs who
//! sent what when), the Marathon simulator, and Vulcand, whose only ownership
//! record is the ledger. Checks that a deposed leader's late publish leaves
//! the new leader's record alone, that a ledger far over Consul's 512 KiB
//! value limit survives a takeover, and that intents go with their service.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{Daemon, eventually, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::consul_kv::LockChange;
use switchboard::sim::marathon::{Generation, MarathonSim, ModelOptions};
use switchboard::sim::vulcand::{VulcandSim, VulcandSimOptions};

const WAIT: Duration = Duration::from_secs(60);
const KEY: &str = "switchboard/default/leader";
const LEDGER: &str = "switchboard/default/ledger/vulcand/";
const INTENTS: &str = "switchboard/default/intent/vulcand/";

struct Setup {
    marathon: MarathonSim,
    /// Holds the lock and the shared records only (`--ha-consul`).
    consul: ConsulSim,
    vulcand: VulcandSim,
    dirs: Vec<tempfile::TempDir>,
}

impl Setup {
    async fn new() -> Setup {
        let opts =
            ModelOptions { keepalive: Duration::from_millis(500), generation: Generation::V1_8, ..Default::default() };
        let marathon = MarathonSim::start(opts).await.unwrap();
        let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
        consul.kv().set_session_ttl_min(Duration::from_millis(100));
        // Consul may drop a session one TTL after its last renew: play that, to keep takeovers short.
        consul.kv().set_expiry_factor(1.0);
        let vulcand = VulcandSim::start(VulcandSimOptions::default()).unwrap();
        Setup { marathon, consul, vulcand, dirs: Vec::new() }
    }

    fn replica(&mut self, name: &str) -> Daemon {
        self.replica_timed(name, ["3s", "2500ms", "1500ms"])
    }

    /// A replica with its session TTL, lock delay and request timeout.
    fn replica_timed(&mut self, name: &str, [ttl, lock_delay, timeout]: [&str; 3]) -> Daemon {
        let dir = tempfile::tempdir().unwrap();
        let args = s(&[
            "--marathon",
            self.marathon.url().as_str(),
            "--vulcand",
            self.vulcand.url().as_str(),
            "--ha",
            "--ha-consul",
            &self.consul.url(),
            "--replica-name",
            name,
            "--ha-session-ttl",
            ttl,
            "--ha-lock-delay",
            lock_delay,
            "--request-timeout",
            timeout,
        ]);
        let d = Daemon::start(&dir.path().join("data"), &args);
        self.dirs.push(dir);
        d
    }

    async fn leader_is(&self, name: &str) {
        eventually(&format!("{name} holds the lock"), WAIT, || {
            self.consul.kv().holder(KEY).is_some_and(|(_, n)| n == name)
        })
        .await;
    }

    /// When `name` acquired the lock (the last time), and at which lock index.
    fn acquired(&self, name: &str) -> (Instant, u64) {
        let locks = self.consul.kv().locks();
        let ev = locks.iter().rev().find(|e| e.name == name && e.change == LockChange::Acquired);
        let ev = ev.unwrap_or_else(|| panic!("{name} never acquired the lock: {locks:?}"));
        (ev.at, ev.lock_index)
    }

    /// The shared ledger parts of one lock index: key → value.
    fn set_of(&self, lock_index: u64) -> BTreeMap<String, Vec<u8>> {
        let prefix = format!("{LEDGER}{lock_index}/");
        let kv = self.consul.kv();
        kv.keys(&prefix).into_iter().filter_map(|k| kv.value(&k).map(|v| (k, v))).collect()
    }

    /// How many registrations every shared set holds, by lock index.
    fn shared_counts(&self) -> BTreeMap<u64, usize> {
        let mut out = BTreeMap::new();
        for key in self.consul.kv().keys(LEDGER) {
            let Some(index) = key[LEDGER.len()..].split('/').next().and_then(|i| i.parse().ok()) else { continue };
            let Some(value) = self.consul.kv().value(&key) else { continue }; // deleted meanwhile
            let regs: Vec<Value> = serde_json::from_slice(&value).unwrap();
            *out.entry(index).or_default() += regs.len();
        }
        out
    }
}

fn app(id: &str, host: &str) -> Value {
    json!({
        "id": id,
        "labels": {"vulcand.host": host},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
    })
}

/// Vulcand server count of the backend of `service`.
fn servers_of(v: &VulcandSim, service: &str) -> usize {
    v.servers(&format!("sb.default.{service}~")).as_array().map_or(0, Vec::len)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_late_publish_does_not_replace_the_new_leaders_record() {
    let _one = common::serial().await;
    let mut env = Setup::new().await;
    let mut a = env.replica("a");
    env.leader_is("a").await;
    let b = env.replica("b");
    eventually("both replicas subscribed", WAIT, || env.marathon.subscribers() == 2).await;
    eventually("the standby has a session", WAIT, || env.consul.kv().session_count() == 2).await;
    env.marathon.emit(&env.marathon.model().deploy(app("/shop/web", "web.example.com"), 2));
    eventually("a routes both in Vulcand", WAIT, || env.vulcand.all_servers().len() == 2).await;
    let (_, a_index) = env.acquired("a");
    eventually("a shared its ledger", WAIT, || env.shared_counts().get(&a_index) == Some(&2)).await;

    // The network starts delaying a's writes of the shared ledger: a routes a
    // third server, and its publish of it is held on the way; then a dies.
    env.consul.kv().delay("a", Some("/ledger/"));
    let delayed_from = Instant::now();
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 3));
    eventually("a routes the third", WAIT, || env.vulcand.all_servers().len() == 3).await;
    eventually("a publishes the third server (held on the way)", WAIT, || {
        env.consul.kv().requests().iter().any(|r| {
            r.replica.as_deref() == Some("a") && r.at > delayed_from && r.method == "PUT" && r.path.contains("/ledger/")
        })
    })
    .await;
    a.kill9();
    // b takes over, scales up and shares its own record.
    env.leader_is("b").await;
    let (_, b_index) = env.acquired("b");
    assert!(b_index > a_index);
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 4));
    eventually("b routes the fourth", WAIT, || env.vulcand.all_servers().len() == 4).await;
    eventually("b shared its ledger", WAIT, || env.shared_counts().get(&b_index) == Some(&4)).await;
    let b_record = env.set_of(b_index);

    // a's delayed publish lands now, after b's.
    env.consul.kv().delay("a", None);
    eventually("a's late publish landed", WAIT, || env.shared_counts().get(&a_index) == Some(&3)).await;
    assert_eq!(env.set_of(b_index), b_record, "a's late publish replaced b's record");
    assert!(env.consul.kv().holder(KEY).is_some_and(|(_, n)| n == "b"));

    // b still owns all four: it scales down in Vulcand without refusing anything.
    env.marathon.emit(&env.marathon.model().scale("/shop/web", 1));
    eventually("b scales Vulcand down", WAIT, || env.vulcand.all_servers().len() == 1).await;
    assert!(!b.log().contains("refused"), "{}", b.log());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_ledger_of_5000_registrations_survives_a_takeover() {
    let _one = common::serial().await;
    const APPS: usize = 50;
    const INSTANCES: usize = 100;
    let mut env = Setup::new().await;
    // Already running when the first replica starts: its first resync registers them all.
    for i in 0..APPS {
        env.marathon.model().deploy(app(&format!("/big/app-{i}"), &format!("app-{i}.example.com")), INSTANCES);
    }
    // Marathon's snapshot of 5,000 tasks from the simulator in this process
    // takes seconds on a loaded machine: a request timeout to match (and the
    // TTL and lock delay the lease arithmetic then asks for).
    let timing = ["6s", "7s", "5s"];
    let mut a = env.replica_timed("a", timing);
    env.leader_is("a").await;
    let b = env.replica_timed("b", timing);
    eventually("a routes 5,000 servers", WAIT * 3, || env.vulcand.all_servers().len() == APPS * INSTANCES).await;
    let (_, a_index) = env.acquired("a");
    eventually("a shared all of them", WAIT, || env.shared_counts().get(&a_index) == Some(&(APPS * INSTANCES))).await;
    let largest = env.set_of(a_index).values().map(Vec::len).max().unwrap();
    let total: usize = env.set_of(a_index).values().map(Vec::len).sum();
    assert!(total > 512 * 1024 && largest < 512 * 1024, "{total} bytes shared, largest value {largest}");
    eprintln!("shared: {total} bytes in {} keys, largest {largest}", env.set_of(a_index).len());
    eventually("b subscribed", WAIT, || env.marathon.subscribers() == 2).await;

    a.kill9();
    env.leader_is("b").await;
    // b's lock index, read each time: on a loaded machine b may lose and take the lock again.
    let b_index = || env.acquired("b").1;
    eventually("b shared what it adopted", WAIT * 3, || {
        env.shared_counts().get(&b_index()) == Some(&(APPS * INSTANCES))
    })
    .await;
    let writes_before = env.vulcand.writes().len();
    let marathon_runs = |path: &str| !path.contains("big-app-0~") && !path.contains("big-app-1~");

    // b deletes what a wrote (an app destroyed, another scaled down) and keeps the rest.
    env.marathon.emit(&env.marathon.model().destroy("/big/app-0"));
    env.marathon.emit(&env.marathon.model().scale("/big/app-1", 40));
    let left = APPS * INSTANCES - INSTANCES - 60;
    eventually("b removed a's servers", WAIT * 3, || {
        env.vulcand.all_servers().len() == left && servers_of(&env.vulcand, "big-app-0") == 0
    })
    .await;
    assert_eq!(servers_of(&env.vulcand, "big-app-1"), 40);
    assert_eq!(servers_of(&env.vulcand, "big-app-2"), INSTANCES);
    assert!(!b.log().contains("refused"), "b refused a's entries: {}", b.log());
    // Kept: b deleted nothing of the apps Marathon still runs as they were.
    let deletes: Vec<String> =
        env.vulcand.writes()[writes_before..].iter().filter(|w| w.method == "DELETE").map(|w| w.path.clone()).collect();
    assert!(!deletes.is_empty());
    assert!(deletes.iter().all(|p| !marathon_runs(p)), "{deletes:?}");
    eventually("b shares the smaller ledger", WAIT, || env.shared_counts() == BTreeMap::from([(b_index(), left)]))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intent_of_a_destroyed_app_is_gone_from_kv_after_its_deregistration() {
    let _one = common::serial().await;
    let mut env = Setup::new().await;
    let _a = env.replica("a");
    env.leader_is("a").await;
    eventually("a subscribed", WAIT, || env.marathon.subscribers() == 1).await;
    env.marathon.emit(&env.marathon.model().deploy(app("/shop/api", "api.example.com"), 2));
    env.marathon.emit(&env.marathon.model().deploy(app("/shop/web", "web.example.com"), 1));
    eventually("both routed", WAIT, || env.vulcand.all_servers().len() == 3).await;
    let intent = |service: &str| format!("{INTENTS}{service}");
    eventually("the intents are shared", WAIT, || {
        env.consul.kv().keys(INTENTS) == vec![intent("shop-api"), intent("shop-web")]
    })
    .await;

    env.marathon.emit(&env.marathon.model().destroy("/shop/api"));
    eventually("api deregistered", WAIT, || env.vulcand.all_servers().len() == 1).await;
    eventually("its intent is gone", WAIT, || env.consul.kv().keys(INTENTS) == vec![intent("shop-web")]).await;
    let (_, index) = env.acquired("a");
    eventually("its ledger part is gone", WAIT, || {
        env.consul.kv().keys(LEDGER) == vec![format!("{LEDGER}{index}/shop-web/0")]
    })
    .await;
}
