//! The pure model: apps, tasks, a logical clock, and the scenario methods
//! returning the events Marathon would publish. No I/O.

use super::*;

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
    /// Which Marathon's ids, health keys and slow-consumer policy to follow.
    pub generation: Generation,
    /// Frames a subscriber may have queued and unread before Marathon gives
    /// up on it (`--event_stream_max_outstanding_messages`); `None`: never.
    /// What then happens depends on the generation.
    pub max_outstanding: Option<usize>,
}

impl Default for ModelOptions {
    fn default() -> Self {
        ModelOptions {
            heavy_plans: false,
            keepalive: Duration::from_secs(10),
            basic_auth: None,
            generation: Generation::V1_8,
            max_outstanding: None,
        }
    }
}

/// The Marathon generations whose shapes differ for a consumer
/// (`docs/marathon.md`, "Ids" and "Slow consumers").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// 1.1 – 1.3: task ids `<app>.<uuid>`, no instance events, health
    /// events keyed `taskId`; a slow consumer's events are dropped.
    V1_3,
    /// 1.4 – 1.7: task ids `<app>.<uuid>`, instance ids
    /// `<app>.marathon-<uuid>`, health keyed `instanceId`; a slow
    /// consumer's events are dropped.
    V1_4,
    /// 1.8+: `<app>.instance-<uuid>._app.<n>`; a killed task is relaunched
    /// in the same instance as `._app.<n+1>`; a slow consumer is
    /// disconnected.
    V1_8,
}

impl Generation {
    /// Whether Marathon closes the connection of a slow consumer (else it
    /// drops the events it cannot queue).
    pub fn disconnects_slow_consumers(self) -> bool {
        self == Generation::V1_8
    }
}

/// 2017-07-19T17:30:00.000Z: where the logical clock starts.
pub(super) const CLOCK_START_MS: i64 = 1_500_485_400_000;
pub(super) const HOSTS: &[&str] = &["10.0.2.11", "10.0.2.12", "10.0.2.13", "10.0.2.14"];

#[derive(Debug, Clone)]
pub(super) struct SimTask {
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
pub(super) struct SimApp {
    /// The app definition as stored (id normalised, `version`, `instances`).
    def: Value,
    tasks: Vec<SimTask>,
}

impl SimApp {
    pub(super) fn id(&self) -> &str {
        self.def.get("id").and_then(Value::as_str).unwrap_or("")
    }
    pub(super) fn version(&self) -> String {
        self.def.get("version").and_then(Value::as_str).unwrap_or("").to_owned()
    }
    pub(super) fn has_health_checks(&self) -> bool {
        self.def.get("healthChecks").and_then(Value::as_array).is_some_and(|h| !h.is_empty())
    }
    pub(super) fn ip_per_task(&self) -> bool {
        let container = self
            .def
            .get("networks")
            .and_then(Value::as_array)
            .is_some_and(|n| n.iter().any(|n| n.get("mode").and_then(Value::as_str) == Some("container")));
        container || self.def.get("ipAddress").is_some_and(Value::is_object)
    }
    /// Service ports, one per port definition / mapping, in order.
    pub(super) fn service_ports(&self) -> Vec<u64> {
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

/// Marathon's state: apps, their tasks, and the logical clock. A clone is
/// what a newly elected leader finds in ZooKeeper.
#[derive(Debug, Clone)]
pub struct Model {
    opts: ModelOptions,
    pub(super) clock_ms: i64,
    apps: BTreeMap<String, SimApp>,
    /// Pods (1.4+), by id: `pods.rs`.
    pub(super) pods: BTreeMap<String, super::pods::SimPod>,
    pub(super) next_uuid: u64,
    pub(super) next_port: u16,
    pub(super) next_host: usize,
    pub(super) next_deployment: u64,
}

impl Model {
    pub fn new(opts: ModelOptions) -> Model {
        Model {
            opts,
            clock_ms: CLOCK_START_MS,
            apps: BTreeMap::new(),
            pods: BTreeMap::new(),
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

    /// Ids of every app, in order.
    pub fn app_ids(&self) -> Vec<String> {
        self.apps.keys().cloned().collect()
    }

    /// Ids of every task of every app.
    pub fn all_task_ids(&self) -> Vec<String> {
        self.apps.values().flat_map(|a| a.tasks.iter().map(|t| t.id.clone())).collect()
    }

    /// `host:port` (first port) of every serving task (running, and healthy
    /// when its app has health checks), with its app's labels. Cheap enough
    /// to poll: no JSON is built.
    pub fn serving_endpoints(&self) -> Vec<(&Value, String)> {
        let mut out = Vec::new();
        for app in self.apps.values() {
            let checks = app.has_health_checks();
            let labels = app.def.get("labels").unwrap_or(&Value::Null);
            for t in &app.tasks {
                let serving = t.state == TaskState::Running && (!checks || t.alive == Some(true));
                if let (true, Some(port)) = (serving, t.ports.first()) {
                    out.push((labels, format!("{}:{port}", t.host)));
                }
            }
        }
        out
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
        let original = self.original();
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
        let original = self.original();
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
        let original = self.original();
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
    /// task with no deployment events: a new instance up to 1.7; from 1.8
    /// (no `wipe=true`) the same instance's next incarnation, `._app.<n+1>`.
    pub fn kill_task(&mut self, task_id: &str) -> Vec<SimEvent> {
        let Some(app_id) = self.app_of_task(task_id) else {
            return Vec::new();
        };
        if self.opts.generation != Generation::V1_8 {
            let mut out = self.kill(&app_id, task_id);
            out.extend(self.launch(&app_id));
            return out;
        }
        // 1.8+ without `wipe=true`: the same instance, the next incarnation,
        // on the same agent, at the app's current version.
        let Some(old) = self.apps.get(&app_id).and_then(|a| a.tasks.iter().find(|t| t.id == task_id)).cloned() else {
            return Vec::new();
        };
        let mut out = self.kill(&app_id, task_id);
        let Some(app) = self.apps.get(&app_id) else { return out };
        let (version, n_ports, checks) = (app.version(), old.ports.len(), app.has_health_checks());
        let n = task_id.rsplit_once("._app.").and_then(|(_, n)| n.parse::<u64>().ok()).unwrap_or(1);
        let mut ports = Vec::with_capacity(n_ports);
        for _ in 0..n_ports {
            ports.push(self.next_port);
            self.next_port = self.next_port.wrapping_add(1).max(31000);
        }
        let task = SimTask {
            id: format!("{}._app.{}", old.instance, n + 1),
            ports,
            state: TaskState::Staging,
            version,
            staged_at: Timestamp(self.clock_ms + 1).to_string(),
            started_at: None,
            alive: None,
            ..old
        };
        if let Some(app) = self.apps.get_mut(&app_id) {
            app.tasks.push(task.clone());
        }
        out.extend(self.start(&app_id, &task.id, checks));
        out
    }

    /// The generation this model follows.
    pub fn generation(&self) -> Generation {
        self.opts.generation
    }

    /// DELETE /v2/apps/{id}: StopApplication, every task killed,
    /// app_terminated_event, then the deployment's success events.
    pub fn destroy(&mut self, app_id: &str) -> Vec<SimEvent> {
        let Some(id) = self.app(app_id).map(|a| a.id().to_owned()) else {
            return Vec::new();
        };
        let original = self.original();
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
        let (task_id, instance, version) = (task.id.clone(), task.instance.clone(), task.version.clone());
        if self.opts.generation == Generation::V1_3 {
            // Before instances: keyed by the task id, and no aggregate event.
            return vec![self.ev(
                "health_status_changed_event",
                json!({"appId": app_id, "taskId": task_id, "version": version, "alive": alive}),
            )];
        }
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

    pub(super) fn apps_json_embed(&self, tasks: bool) -> Value {
        json!({"apps": self.apps.values().map(|a| self.app_value(a, tasks)).collect::<Vec<_>>()})
    }

    pub(super) fn app_value(&self, app: &SimApp, with_tasks: bool) -> Value {
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

    pub(super) fn app(&self, id: &str) -> Option<&SimApp> {
        let id = AppId::parse(id).ok()?;
        self.apps.get(id.as_str())
    }

    pub(super) fn app_of_task(&self, task_id: &str) -> Option<String> {
        self.apps.values().find(|a| a.tasks.iter().any(|t| t.id == task_id)).map(|a| a.id().to_owned())
    }

    pub(super) fn task_mut(&mut self, app_id: &str, task_id: &str) -> Option<&mut SimTask> {
        self.apps.get_mut(app_id)?.tasks.iter_mut().find(|t| t.id == task_id)
    }

    /// Advances the clock and returns the new time in Marathon's form.
    pub(super) fn tick(&mut self) -> String {
        self.clock_ms += 7;
        Timestamp(self.clock_ms).to_string()
    }

    pub(super) fn ev(&mut self, event_type: &str, mut data: Value) -> SimEvent {
        let at = self.tick();
        if let Some(obj) = data.as_object_mut() {
            obj.insert("eventType".into(), json!(event_type));
            obj.insert("timestamp".into(), json!(at));
        }
        SimEvent { event_type: event_type.to_owned(), data }
    }

    pub(super) fn group_change(&mut self, app_id: &str, version: &str) -> SimEvent {
        let group = parent(app_id);
        self.ev("group_change_success", json!({"groupId": group, "version": version}))
    }

    pub(super) fn plan(&mut self, steps: &[&str], app_id: &str, original: Value, version: &str) -> Value {
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

    pub(super) fn deployment(&mut self, ty: &str, plan: &Value, action: &str, app_id: &str) -> SimEvent {
        self.ev(
            ty,
            json!({"plan": plan, "currentStep": {"actions": [{"action": action, "app": app_id, "readinessCheckResults": []}]}}),
        )
    }

    /// The deployment plan's `original` group: only heavy plans carry it,
    /// and building it costs a walk over every app.
    pub(super) fn original(&self) -> Value {
        if self.opts.heavy_plans { self.root_group() } else { Value::Null }
    }

    /// The root group with every app, nested by path.
    pub(super) fn root_group(&self) -> Value {
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

    pub(super) fn group_value(&self, path: &str, groups: &BTreeSet<String>, version: &str) -> Value {
        let apps: Vec<Value> = self.apps.values().filter(|a| parent(a.id()) == path).map(|a| a.def.clone()).collect();
        let children: Vec<Value> =
            groups.iter().filter(|g| parent(g) == path).map(|g| self.group_value(g, groups, version)).collect();
        json!({"id": path, "apps": apps, "pods": [], "groups": children, "dependencies": [], "version": version})
    }

    /// Launches one task of the app's current version: STAGING, Staging,
    /// STARTING, RUNNING, Running, then health if the app has checks.
    pub(super) fn launch(&mut self, app_id: &str) -> Vec<SimEvent> {
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
        let safe = app_id.trim_start_matches('/').replace('/', "_");
        let (id, instance) = match self.opts.generation {
            Generation::V1_8 => (format!("{safe}.instance-{uuid}._app.1"), format!("{safe}.instance-{uuid}")),
            Generation::V1_3 | Generation::V1_4 => (format!("{safe}.{uuid}"), format!("{safe}.marathon-{uuid}")),
        };
        let staged_at = Timestamp(self.clock_ms + 1).to_string();
        let task = SimTask {
            id,
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
        if let Some(app) = self.apps.get_mut(app_id) {
            app.tasks.push(task.clone());
        }
        self.start(app_id, &task.id, checks)
    }

    /// Runs a task that was just placed: STAGING, STARTING, RUNNING (with
    /// instance events from 1.4), then health if the app has checks.
    fn start(&mut self, app_id: &str, tid: &str, checks: bool) -> Vec<SimEvent> {
        let tid = tid.to_owned();
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
    pub(super) fn kill(&mut self, app_id: &str, task_id: &str) -> Vec<SimEvent> {
        let mut out = self.transition(app_id, task_id, TaskState::Killing, "Killing");
        out.extend(self.transition(app_id, task_id, TaskState::Killed, "Killed"));
        if let Some(app) = self.apps.get_mut(app_id) {
            app.tasks.retain(|t| t.id != task_id);
        }
        out
    }

    /// status_update_event, then instance_changed_event unless `condition`
    /// is empty.
    pub(super) fn transition(
        &mut self,
        app_id: &str,
        task_id: &str,
        state: TaskState,
        condition: &str,
    ) -> Vec<SimEvent> {
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
        if !condition.is_empty() && self.opts.generation != Generation::V1_3 {
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

pub(super) fn ips_value(ips: &[String]) -> Value {
    json!(ips.iter().map(|ip| json!({"ipAddress": ip, "protocol": "IPv4"})).collect::<Vec<_>>())
}

pub(super) fn task_value(app_id: &str, t: &SimTask, service_ports: &[u64]) -> Value {
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
pub(super) fn parent(id: &str) -> String {
    match id.rfind('/') {
        Some(0) | None => "/".to_owned(),
        Some(i) => id[..i].to_owned(),
    }
}
