//! In-process Marathon: one in-memory model serving the REST API and the SSE
//! event bus, with scenario methods that emit the events real Marathon sends.
//!
//! Invariants:
//! - `Model` is pure (no I/O): each scenario method mutates it and returns
//!   the events Marathon would publish, in Marathon's order (EVENTS.md §4).
//!   The caller decides when (and whether) to `emit` them, so tests can drop,
//!   reorder or delay events.
//! - Timestamps come from a logical clock that strictly increases with every
//!   event; nothing reads the wall clock.
//! - The server's std Mutexes are never held across an `.await`.
//! - Binds 127.0.0.1:0 only.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;
use serde_json::{Value, json};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::model::{AppId, TaskState, Timestamp};

/// One event as Marathon would publish it (`data` includes `eventType` and
/// `timestamp`).
#[derive(Debug, Clone, PartialEq)]
pub struct SimEvent {
    pub event_type: String,
    pub data: Value,
}

impl SimEvent {
    /// The SSE frame Jetty writes for this event.
    pub fn frame(&self) -> String {
        format!("event: {}\r\ndata: {}\r\n\r\n", self.event_type, self.data)
    }
}

#[derive(Debug, Clone)]
pub struct ModelOptions {
    /// Deployment events carry `plan.original`/`plan.target` group trees
    /// with full app definitions (Marathon <= 1.6) instead of light plans.
    pub heavy_plans: bool,
    /// Interval of the bare `\r\n` keepalive on the event stream.
    pub keepalive: Duration,
    /// Require HTTP Basic with this user and password (401 otherwise).
    pub basic_auth: Option<(String, String)>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions { heavy_plans: false, keepalive: Duration::from_secs(10), basic_auth: None }
    }
}

/// 2017-07-19T17:30:00.000Z: where the logical clock starts.
const CLOCK_START_MS: i64 = 1_500_485_400_000;
const HOSTS: &[&str] = &["10.0.2.11", "10.0.2.12", "10.0.2.13", "10.0.2.14"];

#[derive(Debug, Clone)]
struct SimTask {
    id: String,
    instance: String,
    host: String,
    slave_id: String,
    ports: Vec<u16>,
    ips: Vec<String>,
    state: TaskState,
    version: String,
    staged_at: String,
    started_at: Option<String>,
    alive: Option<bool>,
}

#[derive(Debug, Clone)]
struct SimApp {
    /// The app definition as stored (id normalised, `version`, `instances`).
    def: Value,
    tasks: Vec<SimTask>,
}

impl SimApp {
    fn id(&self) -> &str {
        self.def.get("id").and_then(Value::as_str).unwrap_or("")
    }
    fn version(&self) -> String {
        self.def.get("version").and_then(Value::as_str).unwrap_or("").to_owned()
    }
    fn has_health_checks(&self) -> bool {
        self.def.get("healthChecks").and_then(Value::as_array).is_some_and(|h| !h.is_empty())
    }
    fn ip_per_task(&self) -> bool {
        let container = self
            .def
            .get("networks")
            .and_then(Value::as_array)
            .is_some_and(|n| n.iter().any(|n| n.get("mode").and_then(Value::as_str) == Some("container")));
        container || self.def.get("ipAddress").is_some_and(Value::is_object)
    }
    /// Service ports, one per port definition / mapping, in order.
    fn service_ports(&self) -> Vec<u64> {
        let d = &self.def;
        let list = |v: Option<&Value>, key: &str| -> Option<Vec<u64>> {
            let a = v?.as_array().filter(|a| !a.is_empty())?;
            Some(a.iter().map(|p| p.get(key).and_then(Value::as_u64).unwrap_or(0)).collect())
        };
        list(d.get("portDefinitions"), "port")
            .or_else(|| list(d.pointer("/container/portMappings"), "servicePort"))
            .or_else(|| list(d.pointer("/container/docker/portMappings"), "servicePort"))
            .or_else(|| d.get("ports").and_then(Value::as_array).map(|a| a.iter().filter_map(Value::as_u64).collect()))
            .unwrap_or_default()
    }
}

/// Marathon's state: apps, their tasks, and the logical clock.
#[derive(Debug)]
pub struct Model {
    opts: ModelOptions,
    clock_ms: i64,
    apps: BTreeMap<String, SimApp>,
    next_uuid: u64,
    next_port: u16,
    next_host: usize,
    next_deployment: u64,
}

impl Model {
    pub fn new(opts: ModelOptions) -> Model {
        Model {
            opts,
            clock_ms: CLOCK_START_MS,
            apps: BTreeMap::new(),
            next_uuid: 1,
            next_port: 31000,
            next_host: 0,
            next_deployment: 1,
        }
    }

    /// The current logical time (the stamp of the last event).
    pub fn now(&self) -> Timestamp {
        Timestamp(self.clock_ms)
    }

    /// Task ids of an app, in launch order.
    pub fn task_ids(&self, app_id: &str) -> Vec<String> {
        self.app(app_id).map(|a| a.tasks.iter().map(|t| t.id.clone()).collect()).unwrap_or_default()
    }

    /// The app's current version string, if the app exists.
    pub fn app_version(&self, app_id: &str) -> Option<String> {
        self.app(app_id).map(SimApp::version)
    }

    /// POST /v2/apps (or a PUT of an existing app: then the old tasks are
    /// replaced like a restart). `app_definition` needs an `id`; without
    /// one nothing happens.
    pub fn deploy(&mut self, app_definition: Value, instances: usize) -> Vec<SimEvent> {
        let Some(id) = app_definition.get("id").and_then(Value::as_str).and_then(|s| AppId::parse(s).ok()) else {
            return Vec::new();
        };
        let id = id.to_string();
        let mut def = app_definition;
        let version = self.tick();
        if let Some(obj) = def.as_object_mut() {
            obj.insert("id".into(), json!(id));
            obj.insert("version".into(), json!(version));
            obj.insert("instances".into(), json!(instances));
        }
        let original = self.root_group();
        let old_tasks = match self.apps.get_mut(&id) {
            Some(app) => {
                app.def = def.clone();
                std::mem::take(&mut app.tasks)
            }
            None => {
                self.apps.insert(id.clone(), SimApp { def: def.clone(), tasks: Vec::new() });
                Vec::new()
            }
        };
        let mut out = vec![self.ev(
            "api_post_event",
            json!({"clientIp": "10.0.1.7", "uri": format!("/v2/apps{id}"), "appDefinition": def}),
        )];
        out.push(self.group_change(&id, &version));
        let steps: &[&str] =
            if old_tasks.is_empty() { &["StartApplication", "ScaleApplication"] } else { &["RestartApplication"] };
        let plan = self.plan(steps, &id, original, &version);
        for (i, step) in steps.iter().enumerate() {
            out.push(self.deployment("deployment_info", &plan, step, &id));
            if i + 1 == steps.len() {
                for _ in 0..instances {
                    out.extend(self.launch(&id));
                }
                if let Some(app) = self.apps.get_mut(&id) {
                    // Old tasks go after the new ones are up (restart order).
                    let new = std::mem::replace(&mut app.tasks, old_tasks.clone());
                    let mut kills = Vec::new();
                    for t in &old_tasks {
                        kills.push(t.id.clone());
                    }
                    for t in kills {
                        out.extend(self.kill(&id, &t));
                    }
                    if let Some(app) = self.apps.get_mut(&id) {
                        app.tasks = new;
                    }
                }
            }
            out.push(self.deployment("deployment_step_success", &plan, step, &id));
        }
        out.push(self.ev("deployment_success", json!({"id": plan["id"], "plan": plan})));
        out
    }

    /// PUT /v2/apps/{id} {"instances": n}: a new app version; new tasks are
    /// launched or the youngest killed.
    pub fn scale(&mut self, app_id: &str, n: usize) -> Vec<SimEvent> {
        let Some(id) = self.app(app_id).map(|a| a.id().to_owned()) else {
            return Vec::new();
        };
        let original = self.root_group();
        let version = self.tick();
        let def = match self.apps.get_mut(&id) {
            Some(app) => {
                if let Some(obj) = app.def.as_object_mut() {
                    obj.insert("instances".into(), json!(n));
                    obj.insert("version".into(), json!(version));
                }
                app.def.clone()
            }
            None => return Vec::new(),
        };
        let mut out = vec![self.ev(
            "api_post_event",
            json!({"clientIp": "10.0.1.7", "uri": format!("/v2/apps{id}"), "appDefinition": def}),
        )];
        out.push(self.group_change(&id, &version));
        let plan = self.plan(&["ScaleApplication"], &id, original, &version);
        out.push(self.deployment("deployment_info", &plan, "ScaleApplication", &id));
        let current = self.task_ids(&id);
        if n > current.len() {
            for _ in current.len()..n {
                out.extend(self.launch(&id));
            }
        } else {
            for t in current[n..].iter().rev() {
                out.extend(self.kill(&id, t));
            }
        }
        out.push(self.deployment("deployment_step_success", &plan, "ScaleApplication", &id));
        out.push(self.ev("deployment_success", json!({"id": plan["id"], "plan": plan})));
        out
    }

    /// POST /v2/apps/{id}/restart: new version, no api_post_event; new tasks
    /// come up, then the old ones are killed.
    pub fn restart(&mut self, app_id: &str) -> Vec<SimEvent> {
        let Some(id) = self.app(app_id).map(|a| a.id().to_owned()) else {
            return Vec::new();
        };
        let original = self.root_group();
        let version = self.tick();
        if let Some(obj) = self.apps.get_mut(&id).and_then(|a| a.def.as_object_mut()) {
            obj.insert("version".into(), json!(version));
        }
        let old = self.task_ids(&id);
        let mut out = vec![self.group_change(&id, &version)];
        let plan = self.plan(&["RestartApplication"], &id, original, &version);
        out.push(self.deployment("deployment_info", &plan, "RestartApplication", &id));
        for _ in 0..old.len() {
            out.extend(self.launch(&id));
        }
        for t in &old {
            out.extend(self.kill(&id, t));
        }
        out.push(self.deployment("deployment_step_success", &plan, "RestartApplication", &id));
        out.push(self.ev("deployment_success", json!({"id": plan["id"], "plan": plan})));
        out
    }

    /// DELETE /v2/apps/{id}/tasks/{task}: KILLING, KILLED, then a replacement
    /// task with no deployment events.
    pub fn kill_task(&mut self, task_id: &str) -> Vec<SimEvent> {
        let Some(app_id) = self.app_of_task(task_id) else {
            return Vec::new();
        };
        let mut out = self.kill(&app_id, task_id);
        out.extend(self.launch(&app_id));
        out
    }

    /// DELETE /v2/apps/{id}: StopApplication, every task killed,
    /// app_terminated_event, then the deployment's success events.
    pub fn destroy(&mut self, app_id: &str) -> Vec<SimEvent> {
        let Some(id) = self.app(app_id).map(|a| a.id().to_owned()) else {
            return Vec::new();
        };
        let original = self.root_group();
        let version = self.tick();
        let removed = self.apps.remove(&id);
        let plan = self.plan(&["StopApplication"], &id, original, &version);
        let mut out = vec![self.group_change(&id, &version)];
        out.push(self.deployment("deployment_info", &plan, "StopApplication", &id));
        if let Some(app) = removed {
            let tasks: Vec<String> = app.tasks.iter().map(|t| t.id.clone()).collect();
            self.apps.insert(id.clone(), app);
            for t in &tasks {
                out.extend(self.kill(&id, t));
            }
            self.apps.remove(&id);
        }
        out.push(self.ev("app_terminated_event", json!({"appId": id})));
        out.push(self.deployment("deployment_step_success", &plan, "StopApplication", &id));
        out.push(self.ev("deployment_success", json!({"id": plan["id"], "plan": plan})));
        out
    }

    /// A Marathon health check result changes.
    pub fn set_health(&mut self, task_id: &str, alive: bool) -> Vec<SimEvent> {
        let Some(app_id) = self.app_of_task(task_id) else {
            return Vec::new();
        };
        let Some(task) = self.task_mut(&app_id, task_id) else {
            return Vec::new();
        };
        task.alive = Some(alive);
        let (instance, version) = (task.instance.clone(), task.version.clone());
        vec![
            self.ev(
                "health_status_changed_event",
                json!({"appId": app_id, "instanceId": instance, "version": version, "alive": alive}),
            ),
            self.ev(
                "instance_health_changed_event",
                json!({"instanceId": instance, "runSpecId": app_id, "healthy": alive, "runSpecVersion": version}),
            ),
        ]
    }

    /// The agent is lost: TASK_LOST (condition Gone; an approximation of
    /// Marathon's partition handling), then a replacement task.
    pub fn lose_task(&mut self, task_id: &str) -> Vec<SimEvent> {
        let Some(app_id) = self.app_of_task(task_id) else {
            return Vec::new();
        };
        let mut out = self.transition(&app_id, task_id, TaskState::Lost, "Gone");
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.tasks.retain(|t| t.id != task_id);
        }
        out.extend(self.launch(&app_id));
        out
    }

    /// The agent is partitioned: TASK_UNREACHABLE; the task stays listed.
    pub fn unreachable(&mut self, task_id: &str) -> Vec<SimEvent> {
        let Some(app_id) = self.app_of_task(task_id) else {
            return Vec::new();
        };
        self.transition(&app_id, task_id, TaskState::Unreachable, "Unreachable")
    }

    /// Exactly the `/v2/apps?embed=apps.tasks` body.
    pub fn apps_json(&self) -> Value {
        json!({"apps": self.apps.values().map(|a| self.app_value(a, true)).collect::<Vec<_>>()})
    }

    /// `/v2/apps/{id}` body, or None (404).
    pub fn app_json(&self, id: &str) -> Option<Value> {
        self.app(id).map(|a| json!({"app": self.app_value(a, true)}))
    }

    fn apps_json_embed(&self, tasks: bool) -> Value {
        json!({"apps": self.apps.values().map(|a| self.app_value(a, tasks)).collect::<Vec<_>>()})
    }

    fn app_value(&self, app: &SimApp, with_tasks: bool) -> Value {
        let mut v = app.def.clone();
        let running = app.tasks.iter().filter(|t| t.state == TaskState::Running).count();
        let staged = app.tasks.iter().filter(|t| t.state == TaskState::Staging).count();
        let healthy = app.tasks.iter().filter(|t| t.alive == Some(true)).count();
        let unhealthy = app.tasks.iter().filter(|t| t.alive == Some(false)).count();
        if let Some(obj) = v.as_object_mut() {
            obj.insert("tasksStaged".into(), json!(staged));
            obj.insert("tasksRunning".into(), json!(running));
            obj.insert("tasksHealthy".into(), json!(healthy));
            obj.insert("tasksUnhealthy".into(), json!(unhealthy));
            obj.insert("deployments".into(), json!([]));
            if with_tasks {
                let service_ports = app.service_ports();
                let tasks: Vec<Value> = app.tasks.iter().map(|t| task_value(app.id(), t, &service_ports)).collect();
                obj.insert("tasks".into(), json!(tasks));
            }
        }
        v
    }

    fn app(&self, id: &str) -> Option<&SimApp> {
        let id = AppId::parse(id).ok()?;
        self.apps.get(id.as_str())
    }

    fn app_of_task(&self, task_id: &str) -> Option<String> {
        self.apps.values().find(|a| a.tasks.iter().any(|t| t.id == task_id)).map(|a| a.id().to_owned())
    }

    fn task_mut(&mut self, app_id: &str, task_id: &str) -> Option<&mut SimTask> {
        self.apps.get_mut(app_id)?.tasks.iter_mut().find(|t| t.id == task_id)
    }

    /// Advances the clock and returns the new time in Marathon's form.
    fn tick(&mut self) -> String {
        self.clock_ms += 7;
        Timestamp(self.clock_ms).to_string()
    }

    fn ev(&mut self, event_type: &str, mut data: Value) -> SimEvent {
        let at = self.tick();
        if let Some(obj) = data.as_object_mut() {
            obj.insert("eventType".into(), json!(event_type));
            obj.insert("timestamp".into(), json!(at));
        }
        SimEvent { event_type: event_type.to_owned(), data }
    }

    fn group_change(&mut self, app_id: &str, version: &str) -> SimEvent {
        let group = parent(app_id);
        self.ev("group_change_success", json!({"groupId": group, "version": version}))
    }

    fn plan(&mut self, steps: &[&str], app_id: &str, original: Value, version: &str) -> Value {
        let id = format!("{:08x}-9b4f-4a5a-8bd4-{:012x}", self.next_deployment, self.next_deployment);
        self.next_deployment += 1;
        let steps: Vec<Value> = steps.iter().map(|s| json!({"actions": [{"action": s, "app": app_id}]})).collect();
        let mut plan = json!({"id": id, "steps": steps, "version": version});
        if self.opts.heavy_plans {
            plan["original"] = original;
            plan["target"] = self.root_group();
        }
        plan
    }

    fn deployment(&mut self, ty: &str, plan: &Value, action: &str, app_id: &str) -> SimEvent {
        self.ev(
            ty,
            json!({"plan": plan, "currentStep": {"actions": [{"action": action, "app": app_id, "readinessCheckResults": []}]}}),
        )
    }

    /// The root group with every app, nested by path.
    fn root_group(&self) -> Value {
        let mut groups: BTreeSet<String> = BTreeSet::new();
        for id in self.apps.keys() {
            let mut p = parent(id);
            while p != "/" {
                groups.insert(p.clone());
                p = parent(&p);
            }
        }
        let version = Timestamp(self.clock_ms).to_string();
        self.group_value("/", &groups, &version)
    }

    fn group_value(&self, path: &str, groups: &BTreeSet<String>, version: &str) -> Value {
        let apps: Vec<Value> = self.apps.values().filter(|a| parent(a.id()) == path).map(|a| a.def.clone()).collect();
        let children: Vec<Value> =
            groups.iter().filter(|g| parent(g) == path).map(|g| self.group_value(g, groups, version)).collect();
        json!({"id": path, "apps": apps, "pods": [], "groups": children, "dependencies": [], "version": version})
    }

    /// Launches one task of the app's current version: STAGING, Staging,
    /// STARTING, RUNNING, Running, then health if the app has checks.
    fn launch(&mut self, app_id: &str) -> Vec<SimEvent> {
        let Some(app) = self.apps.get(app_id) else {
            return Vec::new();
        };
        let (version, n_ports, ip_per_task, checks) =
            (app.version(), app.service_ports().len(), app.ip_per_task(), app.has_health_checks());
        let uuid = format!("{:08x}-6ca8-11e7-beb2-{:012x}", self.next_uuid, self.next_uuid);
        let host_no = self.next_host % HOSTS.len();
        let host = HOSTS[host_no].to_owned();
        self.next_host += 1;
        let ips = if ip_per_task {
            vec![format!("9.0.{}.{}", self.next_uuid / 250, self.next_uuid % 250 + 1)]
        } else {
            vec![host.clone()]
        };
        self.next_uuid += 1;
        let mut ports = Vec::new();
        if !ip_per_task {
            for _ in 0..n_ports {
                ports.push(self.next_port);
                self.next_port = self.next_port.wrapping_add(1).max(31000);
            }
        }
        let instance = format!("{}.instance-{uuid}", app_id.trim_start_matches('/').replace('/', "_"));
        let staged_at = Timestamp(self.clock_ms + 1).to_string();
        let task = SimTask {
            id: format!("{instance}._app.1"),
            instance,
            host,
            slave_id: format!("db7b40e2-791c-445f-b373-183e2a648a86-S{host_no}"),
            ports,
            ips,
            state: TaskState::Staging,
            version,
            staged_at,
            started_at: None,
            alive: None,
        };
        let tid = task.id.clone();
        if let Some(app) = self.apps.get_mut(app_id) {
            app.tasks.push(task);
        }
        let mut out = self.transition(app_id, &tid, TaskState::Staging, "Staging");
        out.extend(self.transition(app_id, &tid, TaskState::Starting, ""));
        out.extend(self.transition(app_id, &tid, TaskState::Running, "Running"));
        if checks {
            out.extend(self.set_health(&tid, true));
        }
        out
    }

    /// KILLING then KILLED (each with its instance_changed_event); the task
    /// is removed.
    fn kill(&mut self, app_id: &str, task_id: &str) -> Vec<SimEvent> {
        let mut out = self.transition(app_id, task_id, TaskState::Killing, "Killing");
        out.extend(self.transition(app_id, task_id, TaskState::Killed, "Killed"));
        if let Some(app) = self.apps.get_mut(app_id) {
            app.tasks.retain(|t| t.id != task_id);
        }
        out
    }

    /// status_update_event, then instance_changed_event unless `condition`
    /// is empty.
    fn transition(&mut self, app_id: &str, task_id: &str, state: TaskState, condition: &str) -> Vec<SimEvent> {
        let started = Timestamp(self.clock_ms + 1).to_string();
        let Some(t) = self.task_mut(app_id, task_id) else {
            return Vec::new();
        };
        t.state = state;
        if state == TaskState::Running && t.started_at.is_none() {
            t.started_at = Some(started);
        }
        let t = t.clone();
        let mut out = vec![self.ev(
            "status_update_event",
            json!({
                "slaveId": t.slave_id, "taskId": t.id, "taskStatus": state.as_mesos_str(), "message": "",
                "appId": app_id, "host": t.host, "ipAddresses": ips_value(&t.ips), "ports": t.ports,
                "version": t.version,
            }),
        )];
        if !condition.is_empty() {
            out.push(self.ev(
                "instance_changed_event",
                json!({
                    "instanceId": t.instance, "condition": condition, "runSpecId": app_id,
                    "agentId": t.slave_id, "host": t.host, "runSpecVersion": t.version,
                }),
            ));
        }
        out
    }
}

fn ips_value(ips: &[String]) -> Value {
    json!(ips.iter().map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"})).collect::<Vec<_>>())
}

fn task_value(app_id: &str, t: &SimTask, service_ports: &[u64]) -> Value {
    let results: Vec<Value> = match t.alive {
        Some(alive) => vec![json!({
            "alive": alive, "consecutiveFailures": if alive { 0 } else { 1 },
            "firstSuccess": t.started_at, "lastFailure": null, "lastSuccess": t.started_at,
            "lastFailureCause": null, "instanceId": t.instance,
        })],
        None => Vec::new(),
    };
    json!({
        "appId": app_id, "healthCheckResults": results, "host": t.host, "id": t.id,
        "ipAddresses": ips_value(&t.ips), "ports": t.ports, "servicePorts": service_ports,
        "slaveId": t.slave_id, "stagedAt": t.staged_at, "startedAt": t.started_at,
        "state": t.state.as_mesos_str(), "version": t.version, "localVolumes": [],
        "region": "eu-west", "zone": "a", "role": "*",
    })
}

/// `/shop/web` → `/shop`; `/web` → `/`.
fn parent(id: &str) -> String {
    match id.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => id[..i].to_owned(),
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// One connected event-stream client.
struct Subscriber {
    /// `event_type` query values; empty = everything.
    filter: Vec<String>,
    tx: mpsc::UnboundedSender<Bytes>,
}

impl Subscriber {
    fn wants(&self, event_type: &str) -> bool {
        self.filter.is_empty() || self.filter.iter().any(|f| f == event_type)
    }
}

struct Shared {
    model: Mutex<Model>,
    subscribers: Mutex<Vec<Subscriber>>,
    /// Connections stay open but nothing is written, not even keepalives.
    silent: AtomicBool,
    failing: Mutex<Option<u16>>,
    app_fetches: Mutex<HashMap<String, usize>>,
    snapshot_fetches: AtomicUsize,
    /// Delay the next `/v2/apps` answer by this much *after* its body was
    /// computed, so changes made meanwhile arrive (as events) before it:
    /// the race of allegro/marathon-consul#88.
    hold_snapshot: Mutex<Option<Duration>>,
    /// Expected `Authorization` header, if auth is required.
    auth: Option<String>,
    keepalive: Duration,
    addr: SocketAddr,
}

/// A running simulated Marathon; stops (and drops its streams) on drop.
pub struct MarathonSim {
    shared: Arc<Shared>,
    url: url::Url,
    stop: CancellationToken,
}

impl MarathonSim {
    /// Binds 127.0.0.1:0 and serves the model. Call inside a tokio runtime.
    pub async fn start(opts: ModelOptions) -> std::io::Result<MarathonSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let auth = opts
            .basic_auth
            .as_ref()
            .map(|(u, p)| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{u}:{p}"))));
        let shared = Arc::new(Shared {
            keepalive: opts.keepalive,
            model: Mutex::new(Model::new(opts)),
            subscribers: Mutex::new(Vec::new()),
            silent: AtomicBool::new(false),
            failing: Mutex::new(None),
            app_fetches: Mutex::new(HashMap::new()),
            snapshot_fetches: AtomicUsize::new(0),
            hold_snapshot: Mutex::new(None),
            auth,
            addr,
        });
        let router = Router::new()
            .route("/v2/events", get(events))
            .route("/v2/apps", get(apps))
            .route("/v2/apps/{*id}", get(app))
            .route("/v2/info", get(info))
            .route("/v2/leader", get(leader))
            .with_state(shared.clone());
        let stop = CancellationToken::new();
        serve(listener, router, stop.clone());
        let url = url::Url::parse(&format!("http://{addr}")).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(MarathonSim { shared, url, stop })
    }

    /// A non-leader: answers every request with 302 to `leader_url` + the
    /// same path and query.
    pub async fn start_redirecting(leader_url: url::Url) -> std::io::Result<RedirectingSim> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let leader = leader_url.as_str().trim_end_matches('/').to_owned();
        let router = Router::new().fallback(move |uri: Uri| {
            let leader = leader.clone();
            async move {
                let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                (StatusCode::FOUND, [(header::LOCATION, format!("{leader}{pq}"))]).into_response()
            }
        });
        let stop = CancellationToken::new();
        serve(listener, router, stop.clone());
        let url = url::Url::parse(&format!("http://{addr}")).map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok(RedirectingSim { url, stop })
    }

    pub fn url(&self) -> url::Url {
        self.url.clone()
    }

    /// The model; do not hold the guard across an `.await`.
    pub fn model(&self) -> MutexGuard<'_, Model> {
        lock(&self.shared.model)
    }

    /// Sends events to every subscriber whose filter accepts them (nothing
    /// while silent).
    pub fn emit(&self, events: &[SimEvent]) {
        if self.shared.silent.load(Ordering::SeqCst) {
            return;
        }
        let subs = lock(&self.shared.subscribers);
        for s in subs.iter() {
            for e in events.iter().filter(|e| s.wants(&e.event_type)) {
                let _ = s.tx.send(Bytes::from(e.frame()));
            }
        }
    }

    /// Writes bytes as-is to every subscriber, bypassing filters.
    pub fn emit_raw(&self, raw: &str) {
        let subs = lock(&self.shared.subscribers);
        for s in subs.iter() {
            let _ = s.tx.send(Bytes::from(raw.to_owned()));
        }
    }

    /// Closes every event stream.
    pub fn disconnect_all(&self) {
        lock(&self.shared.subscribers).clear();
    }

    pub fn set_silent(&self, silent: bool) {
        self.shared.silent.store(silent, Ordering::SeqCst);
    }

    /// Connected event-stream clients.
    pub fn subscribers(&self) -> usize {
        let mut subs = lock(&self.shared.subscribers);
        subs.retain(|s| !s.tx.is_closed());
        subs.len()
    }

    /// How many times `GET /v2/apps/{app_id}` was asked.
    pub fn app_fetches(&self, app_id: &str) -> usize {
        let key = AppId::parse(app_id).map(|a| a.to_string()).unwrap_or_default();
        lock(&self.shared.app_fetches).get(&key).copied().unwrap_or(0)
    }

    /// How many times `GET /v2/apps` was asked.
    pub fn snapshot_fetches(&self) -> usize {
        self.shared.snapshot_fetches.load(Ordering::SeqCst)
    }

    /// Answer REST calls with this status (None = normal service).
    /// The next `/v2/apps` computes its body at once but answers only
    /// after `delay`: a snapshot taken just before whatever the test does
    /// meanwhile.
    pub fn hold_next_snapshot(&self, delay: Duration) {
        *lock(&self.shared.hold_snapshot) = Some(delay);
    }

    pub fn set_failing(&self, status: Option<u16>) {
        *lock(&self.shared.failing) = status;
    }
}

impl Drop for MarathonSim {
    fn drop(&mut self) {
        self.stop.cancel();
        self.disconnect_all();
    }
}

/// A simulated non-leader Marathon that redirects everything to the leader.
pub struct RedirectingSim {
    url: url::Url,
    stop: CancellationToken,
}

impl RedirectingSim {
    pub fn url(&self) -> url::Url {
        self.url.clone()
    }
}

impl Drop for RedirectingSim {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn serve(listener: tokio::net::TcpListener, router: Router, stop: CancellationToken) {
    tokio::spawn(async move {
        let server = axum::serve(listener, router).with_graceful_shutdown(stop.cancelled_owned());
        if let Err(e) = server.await {
            tracing::warn!(error = %e, "marathon simulator stopped");
        }
    });
}

fn message(status: StatusCode, msg: &str) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], json!({"message": msg}).to_string()).into_response()
}

fn json_ok(v: &Value) -> Response {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

/// 401 without the right credentials.
fn unauthorized(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    let want = s.auth.as_ref()?;
    let got = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if got == Some(want.as_str()) {
        return None;
    }
    let mut r = message(StatusCode::UNAUTHORIZED, "Unauthorized");
    r.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"Mesosphere\""));
    Some(r)
}

/// Auth, then the configured failure status.
fn gate(s: &Shared, headers: &HeaderMap) -> Option<Response> {
    if let Some(r) = unauthorized(s, headers) {
        return Some(r);
    }
    let status = (*lock(&s.failing))?;
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    Some(message(status, "simulated failure"))
}

async fn apps(State(s): State<Arc<Shared>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    s.snapshot_fetches.fetch_add(1, Ordering::SeqCst);
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let embed_tasks =
        url::form_urlencoded::parse(q.unwrap_or_default().as_bytes()).any(|(k, v)| k == "embed" && v == "apps.tasks");
    let body = lock(&s.model).apps_json_embed(embed_tasks);
    let hold = lock(&s.hold_snapshot).take();
    if let Some(delay) = hold {
        tokio::time::sleep(delay).await;
    }
    json_ok(&body)
}

async fn app(State(s): State<Arc<Shared>>, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let key = AppId::parse(&id).map(|a| a.to_string()).unwrap_or_else(|_| format!("/{id}"));
    *lock(&s.app_fetches).entry(key.clone()).or_default() += 1;
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    let body = lock(&s.model).app_json(&key);
    match body {
        Some(b) => json_ok(&b),
        None => message(StatusCode::NOT_FOUND, &format!("App '{key}' does not exist")),
    }
}

async fn info(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    json_ok(&json!({
        "name": "marathon", "version": "1.10.0-sim", "buildref": "sim", "elected": true,
        "leader": s.addr.to_string(), "frameworkId": "96d7da70-b731-4cfb-96a7-0ee877af615d-0000",
        "http_config": {"http_port": s.addr.port()}, "event_subscriber": {"type": "http_callback"},
    }))
}

async fn leader(State(s): State<Arc<Shared>>, headers: HeaderMap) -> Response {
    if let Some(r) = gate(&s, &headers) {
        return r;
    }
    json_ok(&json!({"leader": s.addr.to_string()}))
}

async fn events(State(s): State<Arc<Shared>>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
    if let Some(r) = unauthorized(&s, &headers) {
        return r;
    }
    // Jetty's EventSourceServlet wants exactly one Accept value equal to
    // text/event-stream; anything else falls through to a plain GET: 405.
    let accepts: Vec<_> = headers.get_all(header::ACCEPT).iter().collect();
    if accepts.len() != 1 || accepts[0] != "text/event-stream" {
        return message(StatusCode::METHOD_NOT_ALLOWED, "HTTP method GET is not supported by this URL");
    }
    let filter: Vec<String> = url::form_urlencoded::parse(q.unwrap_or_default().as_bytes())
        .filter(|(k, _)| k == "event_type")
        .map(|(_, v)| v.into_owned())
        .collect();
    let (tx, rx) = mpsc::unbounded_channel();
    let sub = Subscriber { filter, tx };
    let attached = lock(&s.model).ev("event_stream_attached", json!({"remoteAddress": "127.0.0.1"}));
    if sub.wants(&attached.event_type) && !s.silent.load(Ordering::SeqCst) {
        let _ = sub.tx.send(Bytes::from(attached.frame()));
    }
    lock(&s.subscribers).push(sub);

    let start = tokio::time::Instant::now() + s.keepalive;
    let tick = tokio::time::interval_at(start, s.keepalive);
    let body = futures::stream::unfold((rx, tick, s, None::<Bytes>), |(mut rx, mut tick, s, pending)| async move {
        if let Some(b) = pending {
            return Some((Ok::<_, Infallible>(b), (rx, tick, s, None)));
        }
        loop {
            tokio::select! {
                m = rx.recv() => return m.map(|b| (Ok(b), (rx, tick, s, None))),
                _ = tick.tick() => {
                    if !s.silent.load(Ordering::SeqCst) {
                        // Jetty flushes `\r` and `\n` separately.
                        let next = Some(Bytes::from_static(b"\n"));
                        return Some((Ok(Bytes::from_static(b"\r")), (rx, tick, s, next)));
                    }
                }
            }
        }
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream;charset=UTF-8")
        .body(Body::from_stream(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::marathon::client::parse_snapshot;
    use crate::marathon::event::{Event, parse};

    fn web() -> Value {
        json!({"id": "/shop/web", "labels": {"consul": "web"},
               "portDefinitions": [{"port": 10101, "name": "http"}, {"port": 10102}],
               "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0}]})
    }

    fn types(evs: &[SimEvent]) -> Vec<&str> {
        evs.iter().map(|e| e.event_type.as_str()).collect()
    }

    /// Every event parses, and timestamps strictly increase.
    fn parse_all(evs: &[SimEvent]) -> Vec<Event> {
        let mut last = Timestamp(0);
        let mut out = Vec::new();
        for e in evs {
            let at = Timestamp::parse(e.data["timestamp"].as_str().unwrap()).unwrap();
            assert!(at > last, "{} not after {last}", e.event_type);
            last = at;
            out.extend(parse(&e.event_type, &e.data.to_string()).unwrap());
        }
        out
    }

    #[test]
    fn deploy_follows_marathon_order() {
        let mut m = Model::new(ModelOptions::default());
        let evs = m.deploy(web(), 1);
        assert_eq!(
            types(&evs),
            [
                "api_post_event",
                "group_change_success",
                "deployment_info",
                "deployment_step_success",
                "deployment_info",
                "status_update_event",
                "instance_changed_event",
                "status_update_event",
                "status_update_event",
                "instance_changed_event",
                "health_status_changed_event",
                "instance_health_changed_event",
                "deployment_step_success",
                "deployment_success",
            ]
        );
        let parsed = parse_all(&evs);
        let running = parsed.iter().find_map(|e| match e {
            Event::Status(f) if f.state == TaskState::Running => Some(f.clone()),
            _ => None,
        });
        let f = running.unwrap();
        assert!(f.task_id.as_str().starts_with("shop_web.instance-") && f.task_id.as_str().ends_with("._app.1"));
        assert_eq!(f.ports, [31000, 31001]);
        assert_eq!(f.version, m.app_version("/shop/web").unwrap());
    }

    #[test]
    fn snapshot_matches_model() {
        let mut m = Model::new(ModelOptions::default());
        m.deploy(web(), 2);
        let t0 = m.task_ids("/shop/web")[0].clone();
        m.set_health(&t0, false);
        let snap = parse_snapshot(&m.apps_json().to_string(), Timestamp(1)).unwrap();
        assert!(snap.broken.is_empty());
        let app = &snap.apps[0];
        assert_eq!(app.spec.labels["consul"], "web");
        let health: Vec<_> = app.tasks.iter().map(|t| (t.facts.task_id.to_string(), t.healthy)).collect();
        assert_eq!(health, [(t0, Some(false)), (m.task_ids("/shop/web")[1].clone(), Some(true))]);
        assert!(m.app_json("/nope").is_none());
        assert!(m.app_json("shop/web").is_some());
    }

    #[test]
    fn restart_has_no_api_post_and_replaces_tasks() {
        let mut m = Model::new(ModelOptions::default());
        m.deploy(web(), 2);
        let old = m.task_ids("/shop/web");
        let evs = m.restart("/shop/web");
        assert!(!types(&evs).contains(&"api_post_event"));
        let new = m.task_ids("/shop/web");
        assert_eq!(new.len(), 2);
        assert!(new.iter().all(|t| !old.contains(t)));
        let states: Vec<_> = parse_all(&evs)
            .into_iter()
            .filter_map(|e| match e {
                Event::Status(f) => Some((old.contains(&f.task_id.to_string()), f.state)),
                _ => None,
            })
            .collect();
        let first_old = states.iter().position(|(o, _)| *o).unwrap();
        assert!(states[..first_old].contains(&(false, TaskState::Running)), "new tasks run first");
        assert_eq!(states.last(), Some(&(true, TaskState::Killed)));
    }

    #[test]
    fn kill_task_is_replaced_without_deployment() {
        let mut m = Model::new(ModelOptions::default());
        m.deploy(web(), 1);
        let t = m.task_ids("/shop/web")[0].clone();
        let evs = m.kill_task(&t);
        assert!(!types(&evs).iter().any(|t| t.starts_with("deployment")));
        assert_eq!(evs[0].data["taskStatus"], "TASK_KILLING");
        assert_eq!(m.task_ids("/shop/web").len(), 1);
        assert_ne!(m.task_ids("/shop/web")[0], t);
    }

    #[test]
    fn destroy_stops_app_and_heavy_plans_carry_specs() {
        let mut m = Model::new(ModelOptions { heavy_plans: true, ..ModelOptions::default() });
        let deploy = parse_all(&m.deploy(web(), 1));
        assert!(deploy.iter().any(|e| matches!(e, Event::Spec { spec, .. } if spec.id.as_str() == "/shop/web")));
        let evs = m.destroy("/shop/web");
        let parsed = parse_all(&evs);
        assert!(matches!(parsed[1], Event::AppStopped { .. }), "{parsed:?}");
        assert!(types(&evs).contains(&"app_terminated_event"));
        assert_eq!(m.apps_json(), json!({"apps": []}));
    }

    #[test]
    fn scale_down_and_unreachable() {
        let mut m = Model::new(ModelOptions::default());
        m.deploy(web(), 3);
        m.scale("/shop/web", 1);
        assert_eq!(m.task_ids("/shop/web").len(), 1);
        let t = m.task_ids("/shop/web")[0].clone();
        m.unreachable(&t);
        assert_eq!(m.apps_json()["apps"][0]["tasks"][0]["state"], "TASK_UNREACHABLE");
        let evs = m.lose_task(&t);
        assert_eq!(evs[0].data["taskStatus"], "TASK_LOST");
        assert_eq!(m.task_ids("/shop/web").len(), 1);
    }
}
