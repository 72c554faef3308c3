//! `--replace marathon-consul` through the `switchboard` binary: Consul holds
//! what marathon-consul 1.5.3 registered for Marathon's running tasks (same
//! IDs, tags, checks and agent, sent through the agent API as its Go client
//! sends them), then Switchboard starts and takes over, make before break:
//! no instance marathon-consul had registered is ever missing from Consul.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Daemon, WAIT, World, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions, SimCatalog};
use switchboard::sim::marathon::{MarathonSim, ModelOptions};
use switchboard::sim::tap::Tap;

// ---- marathon-consul 1.5.3, as its source makes registrations ----

/// The register bodies marathon-consul 1.5.3 sends for `task` of `app` with
/// `--consul-tag tag` and `--consul-name-separator sep`, each at the agent on
/// the task's host; empty for what it does not register. Written from its
/// source (tag 1.5.3): `apps/app.go` (`IsConsulApp`, `RegistrationIntents`,
/// `labelsToName`, `labelsToTags`), `apps/task.go` (`IsHealthy`),
/// `consul/consul.go` (`marathonTaskToConsulServices`, `serviceID`,
/// `marathonToConsulCheck`) and its vendored `api.AgentServiceRegistration`
/// JSON (no `omitempty` on `Check` and `Checks`). Covers the label shapes the
/// tests use: no `,` lists in port labels, no `{port:..}` placeholders.
fn marathon_consul_bodies(app: &Value, task: &Value, tag: &str, sep: &str) -> Vec<Value> {
    let labels = &app["labels"];
    if labels.get("consul").is_none() {
        return Vec::new(); // not a Consul app: the label must be on the app
    }
    let results = task["healthCheckResults"].as_array().cloned().unwrap_or_default();
    if results.is_empty() || !results.iter().all(|r| r["alive"] == true) || task["state"] == "TASK_KILLING" {
        return Vec::new(); // registered only once Marathon says it is alive
    }
    let ports: Vec<u64> = task["ports"].as_array().into_iter().flatten().filter_map(Value::as_u64).collect();
    let host = task["host"].as_str().unwrap_or_default().to_owned();
    let name_of = |l: &Value| {
        let raw = match l["consul"].as_str() {
            Some(v) if !v.is_empty() && v != "true" => v.to_owned(),
            _ => app["id"].as_str().unwrap_or_default().to_owned(),
        };
        raw.trim().trim_matches('/').replace('/', sep)
    };
    let tags_of = |l: &Value| -> Vec<String> {
        l.as_object().into_iter().flatten().filter(|(_, v)| *v == "tag").map(|(k, _)| k.clone()).collect()
    };
    let defs: Vec<Value> = match app["container"]["portMappings"].as_array() {
        Some(m) if !m.is_empty() => m.clone(),
        _ => app["portDefinitions"].as_array().cloned().unwrap_or_default(),
    };
    let common_tags = tags_of(labels);
    let labelled: Vec<(usize, &Value)> =
        defs.iter().enumerate().filter(|(_, d)| d["labels"].get("consul").is_some()).collect();
    let intents: Vec<(String, u64, Vec<String>)> = if labelled.is_empty() {
        ports.first().map(|p| (name_of(labels), *p, common_tags.clone())).into_iter().collect()
    } else {
        labelled
            .into_iter()
            .filter(|(i, _)| *i < ports.len())
            .map(|(i, d)| (name_of(&d["labels"]), ports[i], [tags_of(&d["labels"]), common_tags.clone()].concat()))
            .collect()
    };
    let checks: Vec<Value> = app["healthChecks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|hc| {
            let port = match hc["port"].as_u64() {
                Some(p) if p != 0 => p,
                _ => *ports.get(hc["portIndex"].as_u64().unwrap_or(0) as usize)?,
            };
            let mut c = json!({
                "Interval": format!("{}s", hc["intervalSeconds"].as_u64().unwrap_or(60)),
                "Timeout": format!("{}s", hc["timeoutSeconds"].as_u64().unwrap_or(20)),
                "Status": "passing",
            });
            match hc["protocol"].as_str().unwrap_or("HTTP") {
                p @ ("HTTP" | "HTTPS" | "MESOS_HTTP" | "MESOS_HTTPS") => {
                    let scheme = if p.ends_with('S') { "https" } else { "http" };
                    let path = hc["path"].as_str().filter(|p| !p.is_empty()).unwrap_or("/");
                    c["HTTP"] = json!(format!("{scheme}://{host}:{port}{path}"));
                }
                "TCP" | "MESOS_TCP" => c["TCP"] = json!(format!("{host}:{port}")),
                "COMMAND" => {
                    let mut cmd = hc["command"]["value"].as_str().unwrap_or_default().to_owned();
                    for (i, p) in ports.iter().enumerate() {
                        cmd = cmd.replace(&format!("$PORT{i}"), &p.to_string());
                    }
                    c["ScriptArgs"] = json!([cmd.replace("$HOST", &host)]);
                }
                _ => return None,
            }
            Some(c)
        })
        .collect();
    let task_id = task["id"].as_str().unwrap_or_default();
    intents
        .into_iter()
        .map(|(name, port, tags)| {
            let tags: Vec<String> = [vec![tag.to_owned()], tags, vec![format!("marathon-task:{task_id}")]].concat();
            json!({
                "ID": format!("{task_id}_{name}_{port}"),
                "Name": name,
                "Tags": tags,
                "Port": port,
                "Address": host,
                "Check": null,
                "Checks": checks,
            })
        })
        .collect()
}

/// `PUT /v1/agent/service/register` of `body` at `agent`, as marathon-consul
/// sends it.
async fn register_at(agent: &ConsulSim, body: &Value) {
    let url = format!("{}/v1/agent/service/register", agent.url());
    let status = reqwest::Client::new().put(url).json(body).send().await.expect("agent answers").status();
    assert!(status.is_success(), "the agent refused {body}: {status}");
}

/// One instance marathon-consul had registered: its task and port, and the
/// IDs under which Switchboard and marathon-consul hold it.
#[derive(Debug, Clone)]
struct Held {
    /// The Marathon host whose agent holds it.
    host: String,
    task: String,
    port: u64,
    theirs: String,
    ours: String,
}

/// Whether a listed service has marathon-consul's shape (tag, task tag,
/// `<task>_<name>_<port>`).
fn marathon_consul_shaped(svc: &Value, tag: &str) -> bool {
    let tags: Vec<&str> = svc["Tags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let Some(task) = tags.iter().find_map(|t| t.strip_prefix("marathon-task:")) else { return false };
    tags.contains(&tag)
        && !tags.contains(&"switchboard")
        && svc["ID"] == format!("{task}_{}_{}", svc["Service"].as_str().unwrap_or(""), svc["Port"])
}

// ---- the scenario ----

/// A web app (app-level label, HTTP health check, a `tag` label), an API
/// whose second port carries the `consul` label (TCP check on the first),
/// a worker with a command check, and an app labelled on its port only
/// (which marathon-consul does not register).
fn apps() -> Vec<(Value, usize)> {
    let port = |labels: Value| json!({"port": 0, "protocol": "tcp", "labels": labels});
    vec![
        (
            json!({
                "id": "/shop/web", "labels": {"consul": "", "public": "tag"},
                "portDefinitions": [port(json!({}))],
                "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
            }),
            3,
        ),
        (
            json!({
                "id": "/shop/api", "labels": {"consul": "true"},
                "portDefinitions": [port(json!({})), port(json!({"consul": "api-admin"}))],
                "healthChecks": [{"protocol": "TCP", "portIndex": 0, "intervalSeconds": 5, "timeoutSeconds": 1}]
            }),
            2,
        ),
        (
            json!({
                "id": "/batch/worker", "labels": {"consul": ""},
                "portDefinitions": [port(json!({}))],
                "healthChecks": [{"protocol": "COMMAND", "command": {"value": "curl -f http://$HOST:$PORT0/"}, "intervalSeconds": 30, "timeoutSeconds": 5}]
            }),
            2,
        ),
        (
            json!({
                "id": "/shop/ports-only",
                "portDefinitions": [port(json!({"consul": "ports-only"}))],
                "healthChecks": [{"protocol": "HTTP", "path": "/", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
            }),
            2,
        ),
    ]
}

/// The apps deployed in Marathon's model; every running task's
/// marathon-consul registrations, as (agent host, body).
fn deploy(marathon: &MarathonSim, tag: &str) -> Vec<(String, Value)> {
    let mut model = marathon.model();
    for (app, n) in apps() {
        model.deploy(app, n);
    }
    let snapshot = model.apps_json();
    let mut out = Vec::new();
    for app in snapshot["apps"].as_array().into_iter().flatten() {
        for task in app["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
            for body in marathon_consul_bodies(app, task, tag, ".") {
                out.push((task["host"].as_str().unwrap_or_default().to_owned(), body));
            }
        }
    }
    out
}

fn held(bodies: &[(String, Value)]) -> Vec<Held> {
    bodies
        .iter()
        .map(|(host, b)| {
            let task = b["Tags"].as_array().unwrap().iter().find_map(|t| t.as_str()?.strip_prefix("marathon-task:"));
            let task = task.expect("task tag").to_owned();
            let port = b["Port"].as_u64().unwrap();
            let theirs = b["ID"].as_str().unwrap().to_owned();
            Held { host: host.clone(), ours: format!("{task}:{port}"), theirs, task, port }
        })
        .collect()
}

/// Switchboard's IDs for every running task of Marathon's model (the
/// consul-labelled port, else the first).
fn expected_ours(marathon: &MarathonSim) -> BTreeSet<String> {
    let snapshot = marathon.model().apps_json();
    let mut out = BTreeSet::new();
    for app in snapshot["apps"].as_array().into_iter().flatten() {
        let defs = app["portDefinitions"].as_array().cloned().unwrap_or_default();
        let index = defs.iter().position(|d| d["labels"].get("consul").is_some()).unwrap_or(0);
        for task in app["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
            out.insert(format!("{}:{}", task["id"].as_str().unwrap(), task["ports"][index]));
        }
    }
    out
}

/// Polls `snapshot` (every agent's services, each read in one piece) until
/// Consul holds exactly Switchboard's registrations and the foreign ones,
/// asserting at every poll that every instance in `held` is there under
/// Switchboard's or marathon-consul's ID. Returns the number of polls.
async fn converge_without_a_gap(
    snapshot: impl Fn() -> Vec<BTreeMap<String, Value>>,
    held: &[Held],
    ours: &BTreeSet<String>,
    foreign: &BTreeSet<String>,
    tag: &str,
) -> usize {
    let started = Instant::now();
    let deadline = started + WAIT;
    let mut polls = 0;
    loop {
        polls += 1;
        let agents = snapshot();
        for h in held {
            let there = agents.iter().any(|a| a.contains_key(&h.ours) || a.contains_key(&h.theirs));
            assert!(
                there,
                "poll {polls}: task {} port {} is missing from Consul (neither {} nor {})",
                h.task, h.port, h.ours, h.theirs
            );
        }
        let ids: BTreeSet<String> = agents.iter().flat_map(|a| a.keys().cloned()).collect();
        let want: BTreeSet<String> = ours.union(foreign).cloned().collect();
        let left = agents.iter().flat_map(|a| a.values()).any(|s| marathon_consul_shaped(s, tag));
        if ids == want && !left {
            eprintln!("converged after {polls} polls in {:?}, no instance missing at any", started.elapsed());
            return polls;
        }
        assert!(
            Instant::now() < deadline,
            "not converged within {WAIT:?} ({polls} polls): Consul holds {ids:?}, want {want:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// In the agent's ordered register/remove history, Switchboard's register of
/// each instance comes before the removal of marathon-consul's.
fn made_before_broken(history: &[(bool, String)], held: &[Held]) {
    for h in held {
        let made = history.iter().position(|(reg, id)| *reg && *id == h.ours);
        let broken = history.iter().position(|(reg, id)| !*reg && *id == h.theirs);
        let (Some(made), Some(broken)) = (made, broken) else {
            panic!("{}: registered at {made:?}, marathon-consul's {} removed at {broken:?}", h.ours, h.theirs)
        };
        assert!(made < broken, "{} removed before {} was registered", h.theirs, h.ours);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_marathon_consul_takeover_converges_with_no_instance_missing_at_any_poll() {
    let w = World::builder().consul(ConsulSimOptions::default()).start().await;
    let consul = w.consul();
    let bodies = deploy(&w.marathon, "marathon");
    let held = held(&bodies);
    // Every consul-labelled app's tasks (3 + 2 + 2); the port-only app is not
    // marathon-consul's to register.
    assert_eq!(held.len(), 7, "{bodies:?}");
    assert!(held.iter().all(|h| !h.task.starts_with("shop_ports-only")));
    for (_, body) in &bodies {
        register_at(consul, body).await;
    }
    // What marathon-consul registered, as the agent shows it.
    let web = consul.services().into_values().find(|s| s["Service"] == "shop.web").expect("shop.web");
    assert_eq!(web["Tags"][0], "marathon");

    // A task Marathon no longer runs, still registered by marathon-consul.
    let gone_task = "shop_web.instance-0badc0de-6ca8-11e7-beb2-0000000000aa._app.1";
    let gone = json!({
        "ID": format!("{gone_task}_shop.web_31999"), "Name": "shop.web", "Port": 31999, "Address": "10.0.2.11",
        "Tags": ["marathon", "public", format!("marathon-task:{gone_task}")], "Check": null, "Checks": [],
    });
    register_at(consul, &gone).await;
    // Not marathon-consul's: a service of another team, and a `marathon`-tagged
    // entry whose ID is of no shape marathon-consul 1.5.3 makes.
    let running = &held[0].task;
    let foreign_bodies = [
        json!({"ID": "billing-1", "Name": "billing", "Port": 8080, "Address": "10.0.9.1", "Tags": ["prod"]}),
        json!({"ID": running, "Name": "shop.web", "Port": 31500, "Address": "10.0.2.11",
               "Tags": ["marathon", format!("marathon-task:{running}")]}),
    ];
    for body in &foreign_bodies {
        register_at(consul, body).await;
    }
    let foreign: BTreeSet<String> = foreign_bodies.iter().map(|b| b["ID"].as_str().unwrap().to_owned()).collect();
    let ours = expected_ours(&w.marathon);
    assert_eq!(ours.len(), 9);

    let d = w.daemon(&["--replace", "marathon-consul", "--name-separator", ".", "--resync-interval", "1s"]);
    let polls = converge_without_a_gap(|| vec![consul.services()], &held, &ours, &foreign, "marathon").await;
    assert!(polls > 1, "the takeover was never seen in progress");
    made_before_broken(&consul.history(), &held);

    // Switchboard's entries keep marathon-consul's names under `--name-separator .`.
    let services = consul.services();
    for h in &held {
        let theirs = bodies.iter().find(|(_, b)| b["ID"] == h.theirs.as_str()).map(|(_, b)| &b["Name"]);
        assert_eq!(Some(&services[&h.ours]["Service"]), theirs, "{}", h.ours);
        assert_eq!(services[&h.ours]["Tags"][0], "switchboard");
    }
    // Each of marathon-consul's entries was deregistered once, logged and counted.
    let replaced = held.len() as f64 + 1.0;
    d.wait_sample("replacements counted", "switchboard_replaced_total{backend=\"consul\"}", |v| v == replaced).await;
    let log = d.log();
    for h in &held {
        assert!(log.contains(&h.theirs), "no log line names {}", h.theirs);
    }
    assert_eq!(log.matches("marathon-consul registration deregistered").count(), held.len() + 1);

    // A later resync leaves the foreign entries and takes nothing more.
    d.more_resyncs(2.0).await;
    let ids: BTreeSet<String> = consul.services().into_keys().collect();
    assert_eq!(ids, ours.union(&foreign).cloned().collect::<BTreeSet<_>>());
    assert_eq!(d.metric("switchboard_replaced_total{backend=\"consul\"}").await, replaced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_replace_marathon_consul_entries_are_left_alone() {
    let w = World::builder().consul(ConsulSimOptions::default()).start().await;
    let consul = w.consul();
    let bodies = deploy(&w.marathon, "marathon");
    for (_, body) in &bodies {
        register_at(consul, body).await;
    }
    let theirs: BTreeSet<String> = held(&bodies).into_iter().map(|h| h.theirs).collect();
    let ours = expected_ours(&w.marathon);
    let d = w.daemon(&["--name-separator", "."]);
    common::eventually("Switchboard registered every task", WAIT, || {
        let ids: BTreeSet<String> = consul.services().into_keys().collect();
        ids == ours.union(&theirs).cloned().collect()
    })
    .await;
    assert_eq!(d.sample("switchboard_replaced_total{backend=\"consul\"}").await, None);
}

/// An app whose labels Switchboard refuses (a `/` in its `consul` name, which
/// marathon-consul turns into the separator): Switchboard registers nothing of
/// it, and its tasks are still running, so marathon-consul's entries stay
/// through every resync: taking over never leaves an instance out of Consul.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_switchboard_refuses_keeps_marathon_consuls_entries() {
    let w = World::builder().consul(ConsulSimOptions::default()).start().await;
    let consul = w.consul();
    let legacy = json!({
        "id": "/team/legacy", "labels": {"consul": "team/legacy"},
        "portDefinitions": [{"port": 0, "protocol": "tcp", "labels": {}}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
    });
    w.marathon.model().deploy(legacy, 2);
    let snapshot = w.marathon.model().apps_json();
    let mut theirs = BTreeSet::new();
    for app in snapshot["apps"].as_array().into_iter().flatten() {
        for task in app["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
            for body in marathon_consul_bodies(app, task, "marathon", ".") {
                register_at(consul, &body).await;
                theirs.insert(body["ID"].as_str().unwrap().to_owned());
            }
        }
    }
    assert_eq!(theirs.len(), 2, "marathon-consul registers both tasks as team.legacy");

    let d = w.daemon(&["--replace", "marathon-consul", "--name-separator", ".", "--resync-interval", "1s"]);
    d.more_resyncs(3.0).await;
    let ids: BTreeSet<String> = consul.services().into_keys().collect();
    assert_eq!(ids, theirs, "marathon-consul's entries of a running, refused app were touched");
    assert_eq!(d.metric("switchboard_replaced_total{backend=\"consul\"}").await, 0.0);
}

// ---- per-host agents ----

/// Marathon's simulated hosts and the loopback address of the agent standing
/// for each; the fourth is the `--consul` agent (as in tests/consul_per_host.rs).
const HOSTS: [(&str, &str); 4] =
    [("10.0.2.11", "127.0.0.2"), ("10.0.2.12", "127.0.0.3"), ("10.0.2.13", "127.0.0.4"), ("10.0.2.14", "127.0.0.1")];

fn agent_opts(catalog: &SimCatalog, node: &str, bind: &str) -> ConsulSimOptions {
    ConsulSimOptions {
        bind: Some(bind.parse().expect("ip")),
        node: Some(node.to_owned()),
        catalog: Some(catalog.clone()),
        ..Default::default()
    }
}

/// One agent per Marathon host sharing one catalog (three on one free port,
/// the `--consul` one on its own), by host; and the shared port.
async fn agents() -> (BTreeMap<&'static str, ConsulSim>, u16) {
    let catalog = SimCatalog::new();
    let server = ConsulSim::start(agent_opts(&catalog, HOSTS[3].0, HOSTS[3].1)).await.expect("server agent");
    for _ in 0..20 {
        let first = ConsulSim::start(agent_opts(&catalog, HOSTS[0].0, HOSTS[0].1)).await.expect("first agent");
        let port: u16 = first.url().rsplit(':').next().and_then(|p| p.parse().ok()).expect("port");
        let mut agents = BTreeMap::from([(HOSTS[0].0, first)]);
        for (host, ip) in &HOSTS[1..3] {
            if let Ok(a) = ConsulSim::start_on(agent_opts(&catalog, host, ip), port, Tap::default()).await {
                agents.insert(*host, a);
            }
        }
        if agents.len() == 3 {
            agents.insert(HOSTS[3].0, server);
            return (agents, port);
        }
    }
    panic!("no port free on 127.0.0.2-4");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_host_the_takeover_happens_at_each_tasks_agent_with_no_instance_missing() {
    let marathon = MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() })
        .await
        .expect("marathon sim");
    let (agents, port) = agents().await;
    let tag = "mc-prod";
    let bodies = deploy(&marathon, tag);
    let held = held(&bodies);
    assert_eq!(held.len(), 7);
    for (host, body) in &bodies {
        register_at(&agents[host.as_str()], body).await;
    }
    // On the second host: an entry of a task Marathon no longer runs, and a
    // marathon-consul entry of another tag (another marathon-consul's).
    let gone_task = "shop_web.instance-0badc0de-6ca8-11e7-beb2-0000000000bb._app.1";
    let gone = json!({
        "ID": format!("{gone_task}_shop.web_31998"), "Name": "shop.web", "Port": 31998, "Address": "10.0.2.12",
        "Tags": [tag, format!("marathon-task:{gone_task}")], "Check": null, "Checks": [],
    });
    register_at(&agents["10.0.2.12"], &gone).await;
    let other_tag = json!({
        "ID": format!("{gone_task}_shop.web_31997"), "Name": "shop.web", "Port": 31997, "Address": "10.0.2.12",
        "Tags": ["marathon", format!("marathon-task:{gone_task}")], "Check": null, "Checks": [],
    });
    register_at(&agents["10.0.2.12"], &other_tag).await;
    let foreign = BTreeSet::from([other_tag["ID"].as_str().unwrap().to_owned()]);
    let ours = expected_ours(&marathon);

    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = "consul_agent_mode = \"per-host\"\n[consul_agents]\n".to_owned();
    for (host, _) in HOSTS {
        config.push_str(&format!("\"{host}\" = \"{}\"\n", agents[host].url()));
    }
    let config_path = dir.path().join("switchboard.toml");
    std::fs::write(&config_path, config).expect("config");
    let args = s(&[
        "--marathon",
        marathon.url().as_str(),
        "--consul",
        &agents[HOSTS[3].0].url(),
        "--config",
        &config_path.display().to_string(),
        "--consul-agent-port",
        &port.to_string(),
        "--name-separator",
        ".",
        "--resync-interval",
        "1s",
    ]);
    // The tag as marathon-consul ran with it, from the environment.
    let d =
        Daemon::start_with_env(&dir.path().join("data"), &args, &[("SWITCHBOARD_REPLACE", "marathon-consul:mc-prod")]);
    let snapshot = || agents.values().map(ConsulSim::services).collect::<Vec<_>>();
    converge_without_a_gap(snapshot, &held, &ours, &foreign, tag).await;
    for h in &held {
        let agent = &agents[h.host.as_str()];
        assert!(agent.has_service(&h.ours), "{} is not at the agent of {}", h.ours, h.host);
        made_before_broken(&agent.history(), std::slice::from_ref(h));
    }
    let replaced = held.len() as f64 + 1.0;
    d.wait_sample("replacements counted", "switchboard_replaced_total{backend=\"consul\"}", |v| v == replaced).await;
    d.more_resyncs(2.0).await;
    assert!(agents["10.0.2.12"].has_service(other_tag["ID"].as_str().unwrap()), "another tag's entry was touched");
    assert_eq!(d.metric("switchboard_replaced_total{backend=\"consul\"}").await, replaced);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_dry_run_shows_the_takeover_and_the_real_run_makes_it() {
    let w = World::builder().consul(ConsulSimOptions::default()).start().await;
    let consul = w.consul();
    let bodies = deploy(&w.marathon, "marathon");
    let held = held(&bodies);
    for (_, body) in &bodies {
        register_at(consul, body).await;
    }
    let gone_task = "batch_worker.instance-0badc0de-6ca8-11e7-beb2-0000000000cc._app.1";
    let gone = json!({
        "ID": format!("{gone_task}_batch.worker_31999"), "Name": "batch.worker", "Port": 31999,
        "Address": "10.0.2.13", "Tags": ["marathon", format!("marathon-task:{gone_task}")], "Check": null, "Checks": [],
    });
    register_at(consul, &gone).await;
    let ours = expected_ours(&w.marathon);
    let data = w.data_dir().display().to_string();
    let once = |extra: &[&str]| {
        let mut a = s(&["reconcile", "--once", "--data-dir", &data]);
        a.extend(w.args(&["--replace", "marathon-consul", "--name-separator", "."]));
        a.extend(s(extra));
        a
    };

    // The dry run: a register of each of ours, the deregistration of the gone
    // task's entry (under the ID it stands for), and no write.
    let writes = consul.writes();
    let out = common::run_cli(once(&["--dry-run", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    let ops: BTreeSet<(String, String)> = report["ops"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| (o["op"].as_str().unwrap_or("").to_owned(), o["id"].as_str().unwrap_or("").to_owned()))
        .collect();
    let mut want: BTreeSet<(String, String)> = ours.iter().map(|id| ("register".to_owned(), id.clone())).collect();
    want.insert(("deregister".to_owned(), format!("{gone_task}:31999")));
    assert_eq!(ops, want, "{report}");
    assert_eq!(consul.writes(), writes, "the dry run wrote to Consul");

    // For real: only Switchboard's entries remain, each made before theirs went.
    let out = common::run_cli(once(&[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stdout));
    let ids: BTreeSet<String> = consul.services().into_keys().collect();
    assert_eq!(ids, ours);
    made_before_broken(&consul.history(), &held);
}
