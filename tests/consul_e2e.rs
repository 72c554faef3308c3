//! Behaviour through the `switchboard` binary against the Marathon and Consul
//! simulators: events in awkward orders, restarts, kills, destroys, foreign
//! services, outages and crashes.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Daemon, eventually, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions, SimEvent};

const WAIT: Duration = Duration::from_secs(20);

fn web_app() -> Value {
    json!({
        "id": "/shop/web",
        "cmd": "python3 -m http.server $PORT0",
        "labels": {"consul": "web", "public": "tag"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
    })
}

struct World {
    marathon: MarathonSim,
    consul: ConsulSim,
    dir: tempfile::TempDir,
}

async fn world() -> World {
    let marathon = MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() })
        .await
        .expect("marathon sim");
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul sim");
    World { marathon, consul, dir: tempfile::tempdir().expect("tempdir") }
}

impl World {
    fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a =
            s(&["--marathon", self.marathon.url().as_str(), "--consul", &self.consul.url(), "--resync-interval", "0"]);
        a.extend(s(extra));
        a
    }

    fn daemon(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.dir.path().join("data"), &self.args(extra))
    }

    /// Consul service IDs Switchboard should hold for the model's running tasks.
    fn expected_ids(&self, app: &str) -> BTreeSet<String> {
        let body = self.marathon.model().apps_json();
        let mut out = BTreeSet::new();
        for a in body["apps"].as_array().into_iter().flatten() {
            if a["id"] != app {
                continue;
            }
            for t in a["tasks"].as_array().into_iter().flatten() {
                if t["state"] == "TASK_RUNNING" {
                    out.insert(format!("{}:{}", t["id"].as_str().unwrap(), t["ports"][0]));
                }
            }
        }
        out
    }

    fn consul_ids(&self) -> BTreeSet<String> {
        self.consul.services().into_keys().collect()
    }

    fn consul_ids_of(&self, app: &str) -> BTreeSet<String> {
        self.consul
            .services()
            .into_iter()
            .filter(|(_, v)| v["Meta"]["marathon_app_id"] == app)
            .map(|(k, _)| k)
            .collect()
    }

    async fn converge(&self, app: &str, what: &str) {
        eventually(what, WAIT, || self.consul_ids_of(app) == self.expected_ids(app)).await;
    }
}

fn by_type<'a>(events: &'a [SimEvent], t: &str) -> Vec<&'a SimEvent> {
    events.iter().filter(|e| e.event_type == t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_before_labels_then_scale_kill_destroy() {
    let w = world().await;
    let _d = w.daemon(&[]);
    eventually("stream subscribed", WAIT, || w.marathon.subscribers() > 0).await;

    // Deploy 2 instances; deliver every status update before the events that carry labels.
    let events = w.marathon.model().deploy(web_app(), 2);
    let (status, rest): (Vec<SimEvent>, Vec<SimEvent>) =
        events.into_iter().partition(|e| e.event_type == "status_update_event");
    w.marathon.emit(&status);
    w.marathon.emit(&rest);
    w.converge("/shop/web", "2 instances registered").await;
    assert_eq!(w.consul_ids().len(), 2);
    let svc = w.consul.services().into_values().next().unwrap();
    assert_eq!(svc["Service"], "web");
    assert_eq!(svc["Tags"], json!(["switchboard", "public"]));
    assert_eq!(svc["Meta"]["managed_by"], "switchboard");
    assert_eq!(svc["Meta"]["marathon_app_id"], "/shop/web");

    // Scale down to 1.
    let events = w.marathon.model().scale("/shop/web", 1);
    w.marathon.emit(&events);
    w.converge("/shop/web", "scaled down to 1").await;
    assert_eq!(w.consul_ids().len(), 1);

    // Kill: deregistered at TASK_KILLING already, replacement registered.
    let task = w.marathon.model().task_ids("/shop/web")[0].clone();
    let events = w.marathon.model().kill_task(&task);
    let killing: Vec<SimEvent> = by_type(&events, "status_update_event")
        .into_iter()
        .filter(|e| e.data["taskStatus"] == "TASK_KILLING")
        .cloned()
        .collect();
    w.marathon.emit(&killing);
    eventually("killing task deregistered", WAIT, || !w.consul_ids().iter().any(|id| id.starts_with(&task))).await;
    w.marathon.emit(&events);
    w.converge("/shop/web", "replacement registered").await;

    // A late, stale TASK_RUNNING of the killed task must not resurrect it.
    let stale: Vec<SimEvent> = by_type(&events, "status_update_event")
        .into_iter()
        .filter(|e| e.data["taskId"] == task.as_str() && e.data["taskStatus"] == "TASK_KILLING")
        .map(|e| {
            let mut e = e.clone();
            e.data["taskStatus"] = json!("TASK_RUNNING");
            e
        })
        .collect();
    w.marathon.emit(&stale);
    // Events are folded in order: once a marker app is registered, the stale event was seen.
    let marker = w
        .marathon
        .model()
        .deploy(json!({"id": "/marker", "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]}), 1);
    w.marathon.emit(&marker);
    w.converge("/marker", "marker registered").await;
    assert!(!w.consul_ids().iter().any(|id| id.starts_with(&task)), "stale TASK_RUNNING resurrected {task}");
    // Destroy: everything goes.
    let events = w.marathon.model().destroy("/shop/web");
    w.marathon.emit(&events);
    eventually("app destroyed", WAIT, || w.consul_ids_of("/shop/web").is_empty()).await;
}
