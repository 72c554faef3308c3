//! `--consul-agent-mode per-host` through the `switchboard` binary: a
//! datacenter of Consul agent simulators sharing one catalog, each on its own
//! loopback address (127.0.0.2, .3, .4 on one port), plus the `--consul`
//! agent on 127.0.0.1. Marathon's simulated hosts (10.0.2.11-14) are mapped
//! to them through the TOML `[consul_agents]` table; a node that is not in
//! the table is reached by the `scheme://address:--consul-agent-port` rule.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::Duration;

use common::{Daemon, eventually, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions, SimCatalog};
use switchboard::sim::marathon::{MarathonSim, ModelOptions};
use switchboard::sim::tap::Tap;

const WAIT: Duration = Duration::from_secs(30);

/// Marathon's simulated hosts, in the order it places tasks, and the
/// loopback address of the agent simulator standing for each. The fourth
/// host's agent is the `--consul` one (a server runs an agent too).
const HOSTS: [(&str, &str); 4] =
    [("10.0.2.11", "127.0.0.2"), ("10.0.2.12", "127.0.0.3"), ("10.0.2.13", "127.0.0.4"), ("10.0.2.14", "127.0.0.1")];

struct World {
    marathon: MarathonSim,
    catalog: SimCatalog,
    /// By Marathon host.
    agents: BTreeMap<&'static str, ConsulSim>,
    /// The port every per-host agent listens on.
    port: u16,
    dir: tempfile::TempDir,
}

fn agent_opts(catalog: &SimCatalog, node: &str, bind: &str) -> ConsulSimOptions {
    ConsulSimOptions {
        bind: Some(bind.parse::<IpAddr>().expect("ip")),
        node: Some(node.to_owned()),
        catalog: Some(catalog.clone()),
        ..Default::default()
    }
}

/// Three agents on one free port (retried if another process holds it on
/// one of the addresses), and the `--consul` agent on its own port.
async fn world() -> World {
    let marathon = MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() })
        .await
        .expect("marathon sim");
    let catalog = SimCatalog::new();
    let server = ConsulSim::start(agent_opts(&catalog, HOSTS[3].0, HOSTS[3].1)).await.expect("server agent");
    'attempt: for _ in 0..20 {
        let first = ConsulSim::start(agent_opts(&catalog, HOSTS[0].0, HOSTS[0].1)).await.expect("first agent");
        let port: u16 = first.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let mut agents = BTreeMap::from([(HOSTS[0].0, first)]);
        for (host, ip) in &HOSTS[1..3] {
            match ConsulSim::start_on(agent_opts(&catalog, host, ip), port, Tap::default()).await {
                Ok(a) => {
                    agents.insert(*host, a);
                }
                Err(_) => continue 'attempt,
            }
        }
        agents.insert(HOSTS[3].0, server);
        return World { marathon, catalog, agents, port, dir: tempfile::tempdir().expect("tempdir") };
    }
    panic!("no port free on 127.0.0.2-4");
}

impl World {
    fn agent(&self, host: &str) -> &ConsulSim {
        &self.agents[host]
    }

    fn consul_url(&self) -> String {
        self.agent(HOSTS[3].0).url()
    }

    /// The config file: per-host mode and the host → agent table.
    fn config(&self) -> std::path::PathBuf {
        let mut text = "consul_agent_mode = \"per-host\"\n[consul_agents]\n".to_owned();
        for (host, _) in HOSTS {
            text.push_str(&format!("\"{host}\" = \"{}\"\n", self.agent(host).url()));
        }
        let path = self.dir.path().join("switchboard.toml");
        std::fs::write(&path, text).expect("config");
        path
    }

    fn args(&self) -> Vec<String> {
        let config = self.config();
        s(&[
            "--marathon",
            self.marathon.url().as_str(),
            "--consul",
            &self.consul_url(),
            "--config",
            &config.display().to_string(),
            "--consul-agent-port",
            &self.port.to_string(),
        ])
    }

    fn daemon(&self) -> Daemon {
        Daemon::start(&self.dir.path().join("data"), &self.args())
    }

    /// Running tasks of `app`: (Consul service ID, Marathon host).
    fn tasks(&self, app: &str) -> Vec<(String, String)> {
        let body = self.marathon.model().apps_json();
        let mut out = Vec::new();
        for a in body["apps"].as_array().into_iter().flatten().filter(|a| a["id"] == app) {
            for t in a["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
                let id = format!("{}:{}", t["id"].as_str().unwrap_or(""), t["ports"][0]);
                out.push((id, t["host"].as_str().unwrap_or("").to_owned()));
            }
        }
        out
    }

    fn ids_on(&self, host: &str) -> BTreeSet<String> {
        self.agent(host).services().into_keys().collect()
    }

    /// Whether every running task of `app` on one of `hosts` is registered
    /// on its host's agent, and nowhere else.
    fn placed(&self, app: &str, hosts: &[&str]) -> bool {
        self.tasks(app).iter().filter(|(_, h)| hosts.contains(&h.as_str())).all(|(id, host)| {
            self.agents.iter().all(|(agent_host, a)| a.has_service(id) == (*agent_host == host.as_str()))
        })
    }
}

fn app(id: &str, service: &str) -> Value {
    json!({
        "id": id,
        "labels": {"consul": service},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}]
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_lands_on_its_hosts_agent() {
    let w = world().await;
    let _d = w.daemon();
    eventually("stream subscribed", WAIT, || w.marathon.subscribers() > 0).await;

    let events = w.marathon.model().deploy(app("/shop/web", "web"), 4);
    w.marathon.emit(&events);
    let hosts: Vec<&str> = HOSTS.iter().map(|(h, _)| *h).collect();
    eventually("every task on its host's agent", WAIT, || {
        w.tasks("/shop/web").len() == 4 && w.placed("/shop/web", &hosts)
    })
    .await;
    for (host, _) in HOSTS {
        assert_eq!(w.ids_on(host).len(), 1, "agent of {host} holds {:?}", w.ids_on(host));
    }
    // The catalog of --consul sees all four, each on its node.
    let body: Value = reqwest::get(format!("{}/v1/catalog/service/web", w.consul_url()))
        .await
        .expect("catalog")
        .json()
        .await
        .expect("json");
    let nodes: BTreeSet<&str> = body.as_array().into_iter().flatten().filter_map(|e| e["Node"].as_str()).collect();
    assert_eq!(nodes, hosts.iter().copied().collect());

    // Scale down: each deregistration goes to the agent that holds the task.
    let events = w.marathon.model().scale("/shop/web", 1);
    w.marathon.emit(&events);
    eventually("scaled down to one, everywhere", WAIT, || {
        w.agents.values().map(ConsulSim::service_count).sum::<usize>() == 1 && w.placed("/shop/web", &hosts)
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agent_down_holds_only_its_own_ops() {
    let w = world().await;
    let _d = w.daemon();
    eventually("stream subscribed", WAIT, || w.marathon.subscribers() > 0).await;
    let events = w.marathon.model().deploy(app("/shop/web", "web"), 3);
    w.marathon.emit(&events);
    let all: Vec<&str> = HOSTS.iter().map(|(h, _)| *h).collect();
    eventually("web placed", WAIT, || w.tasks("/shop/web").len() == 3 && w.placed("/shop/web", &all)).await;

    // The agent of 10.0.2.12 goes away; a new app lands on all four hosts.
    let down = HOSTS[1].0;
    w.agent(down).stop().await;
    let events = w.marathon.model().deploy(app("/shop/api", "api"), 4);
    w.marathon.emit(&events);
    let up: Vec<&str> = all.iter().copied().filter(|h| *h != down).collect();
    eventually("api placed on the three reachable agents", WAIT, || {
        w.tasks("/shop/api").len() == 4 && w.placed("/shop/api", &up)
    })
    .await;
    let held: Vec<String> = w.tasks("/shop/api").into_iter().filter(|(_, h)| h == down).map(|(id, _)| id).collect();
    assert_eq!(held.len(), 1);
    assert!(!w.agent(down).has_service(&held[0]), "registered on an agent that is down?");

    // Back: the held registration lands there.
    w.agent(down).restart().await.expect("restart agent");
    eventually("held op lands once the agent is back", WAIT, || w.agent(down).has_service(&held[0])).await;
    assert!(w.placed("/shop/api", &all) && w.placed("/shop/web", &all));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resync_deregisters_leftovers_at_their_nodes_agent() {
    let w = world().await;
    // A node Marathon does not know, not in [consul_agents]: reached at
    // http://<its address>:--consul-agent-port.
    let gone = ConsulSim::start_on(agent_opts(&w.catalog, "retired-node", "127.0.0.5"), w.port, Tap::default())
        .await
        .expect("agent on 127.0.0.5 (port taken: rerun)");
    let leftover = |task: &str, port: u16| {
        json!({
            "ID": format!("{task}:{port}"), "Name": "web", "Tags": ["switchboard"], "Port": port, "Address": "10.0.2.13",
            "Meta": {"managed_by": "switchboard", "switchboard_cluster": "default",
                     "marathon_task_id": task, "marathon_app_id": "/shop/web"}
        })
    };
    // Owned leftovers of tasks Marathon no longer runs: one on a known host,
    // one on the retired node; and a foreign service that must stay.
    w.agent(HOSTS[2].0).insert_raw(leftover("shop_web.instance-dead1._app.1", 31001));
    gone.insert_raw(leftover("shop_web.instance-dead2._app.1", 31002));
    w.agent(HOSTS[2].0).insert_raw(json!({"ID": "redis-1", "Name": "redis", "Tags": ["cache"], "Port": 6379}));

    let out = common::run_cli(
        [s(&["reconcile", "--once", "--data-dir", &w.dir.path().join("data").display().to_string()]), w.args()]
            .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {stderr}");
    assert_eq!(w.ids_on(HOSTS[2].0), BTreeSet::from(["redis-1".to_owned()]));
    assert_eq!(gone.service_count(), 0, "leftover on the retired node survived");
    // Each was deregistered at its own node's agent, not at --consul.
    let deregisters =
        |a: &ConsulSim| a.requests().into_iter().filter(|(m, p)| m == "PUT" && p.contains("/deregister/")).count();
    assert_eq!(deregisters(w.agent(HOSTS[2].0)), 1);
    assert_eq!(deregisters(&gone), 1);
    assert_eq!(deregisters(w.agent(HOSTS[3].0)), 0);
}

/// Registrations made in single mode (all on the `--consul` agent) move to
/// their hosts' agents when the daemon restarts in per-host mode.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_from_single_mode_moves_services_to_their_hosts() {
    let w = world().await;
    let data = w.dir.path().join("data");
    let single = s(&["--marathon", w.marathon.url().as_str(), "--consul", &w.consul_url()]);
    let mut d = Daemon::start(&data, &single);
    eventually("stream subscribed", WAIT, || w.marathon.subscribers() > 0).await;
    let events = w.marathon.model().deploy(app("/shop/web", "web"), 3);
    w.marathon.emit(&events);
    eventually("all three on the --consul agent", WAIT, || w.agent(HOSTS[3].0).service_count() == 3).await;
    d.kill9();
    drop(d);

    let _d = w.daemon();
    let all: Vec<&str> = HOSTS.iter().map(|(h, _)| *h).collect();
    eventually("each moved to its host's agent", WAIT, || {
        w.placed("/shop/web", &all) && w.agent(HOSTS[3].0).service_count() == 0
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_without_consul_is_a_config_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = common::run_cli(s(&[
        "reconcile",
        "--once",
        "--data-dir",
        &dir.path().join("data").display().to_string(),
        "--marathon",
        "http://127.0.0.1:1",
        "--consul-agent-mode",
        "per-host",
    ]))
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("--consul-agent-mode") && stderr.contains("--consul"), "{stderr}");
}

/// A service ID someone else registered, untagged, at the agent a task
/// goes to (the catalog listing sees only services tagged `switchboard`):
/// the agent's own listing shows it, so the register is refused, naming the
/// holder, and the foreign service stays as it was; the other tasks land.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_id_on_a_hosts_agent_is_refused_not_overwritten() {
    let w = world().await;
    let _ = w.marathon.model().deploy(app("/shop/web", "web"), 3);
    let tasks = w.tasks("/shop/web");
    assert_eq!(tasks.len(), 3);
    let (taken, host) = tasks[0].clone();
    let foreign = json!({"ID": taken, "Name": "legacy-web", "Tags": ["blue"], "Port": 8080, "Address": "10.9.9.9"});
    w.agent(&host).insert_raw(foreign);

    let out = common::run_cli(
        [s(&["reconcile", "--once", "--data-dir", &w.dir.path().join("data").display().to_string()]), w.args()]
            .concat(),
    )
    .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "a refusal is not convergence\nstdout: {stdout}\nstderr: {stderr}");
    assert!(
        stdout.contains("belongs to someone else") && stdout.contains("legacy-web") && stdout.contains(&taken),
        "the refusal names the ID and its holder\nstdout: {stdout}"
    );
    let kept = &w.agent(&host).services()[&taken];
    assert_eq!(kept["Service"], "legacy-web", "the foreign service was overwritten: {kept}");
    assert_eq!(kept["Port"], 8080);
    for (id, h) in &tasks[1..] {
        assert!(w.agent(h).has_service(id), "{id} missing on the agent of {h}");
    }
}
