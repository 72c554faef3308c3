//! Pods in the simulated Marathon (1.4+, `reference/marathon/PODS.md`):
//! definitions, instances of several container tasks, the events of each
//! generation, `/v2/pods` and `/v2/pods/::status` bodies, and deployments
//! with pod actions. A 1.3 model has no pods: its scenario methods do
//! nothing and the server answers 404 on `/v2/pods`.
//!
//! Invariants: pure like the rest of the model (no I/O, logical clock);
//! container task ids are `<instance>.<container>` (1.4 – 1.7) or
//! `<instance>.<container>.<n>` (1.8+); a container task's `ports` are the
//! host ports allocated to its own `hostPort` endpoints, in order.

use super::model::{HOSTS, ips_value};
use super::*;

#[derive(Debug, Clone)]
pub(super) struct SimPod {
    /// The definition as stored (`id` normalised, `version`, `scaling`).
    def: Value,
    instances: Vec<SimPodInstance>,
}

#[derive(Debug, Clone)]
struct SimPodInstance {
    id: String,
    host: String,
    slave_id: String,
    /// The instance's address on its container network (container mode).
    ip: Option<String>,
    version: String,
    containers: Vec<SimContainer>,
    healthy: Option<bool>,
    since: String,
}

#[derive(Debug, Clone)]
struct SimContainer {
    name: String,
    task_id: String,
    state: TaskState,
    /// Allocated host ports of this container's `hostPort` endpoints, in order.
    ports: Vec<u16>,
    checked_endpoint: Option<String>,
    has_check: bool,
}

impl SimPod {
    fn id(&self) -> &str {
        self.def.get("id").and_then(Value::as_str).unwrap_or("")
    }
    fn version(&self) -> String {
        self.def.get("version").and_then(Value::as_str).unwrap_or("").to_owned()
    }
    fn mode(&self) -> String {
        let nets = self.def.get("networks").and_then(Value::as_array);
        nets.and_then(|n| n.first()).and_then(|n| n.get("mode")).and_then(Value::as_str).unwrap_or("host").to_owned()
    }
    fn network_name(&self) -> String {
        let nets = self.def.get("networks").and_then(Value::as_array);
        nets.and_then(|n| n.first()).and_then(|n| n.get("name")).and_then(Value::as_str).unwrap_or("dcos").to_owned()
    }
    fn containers(&self) -> Vec<Value> {
        self.def.get("containers").and_then(Value::as_array).cloned().unwrap_or_default()
    }
}

/// Whether an endpoint takes a host port under `mode`.
fn takes_host_port(mode: &str, endpoint: &Value) -> bool {
    mode != "container" || endpoint.get("hostPort").is_some()
}

impl Model {
    fn pods_supported(&self) -> bool {
        self.generation() != Generation::V1_3
    }

    /// Ids of every pod, in order.
    pub fn pod_ids(&self) -> Vec<String> {
        self.pods.keys().cloned().collect()
    }

    /// Instance ids of a pod, in launch order.
    pub fn pod_instance_ids(&self, pod_id: &str) -> Vec<String> {
        self.pod(pod_id).map(|p| p.instances.iter().map(|i| i.id.clone()).collect()).unwrap_or_default()
    }

    /// Container task ids of a pod instance, in container order.
    pub fn pod_task_ids(&self, instance_id: &str) -> Vec<String> {
        let inst = self.pods.values().flat_map(|p| p.instances.iter()).find(|i| i.id == instance_id);
        inst.map(|i| i.containers.iter().map(|c| c.task_id.clone()).collect()).unwrap_or_default()
    }

    /// `(endpoint, host:port)` of every endpoint of every running pod
    /// instance as Marathon allocates it (PODS.md §2): what a registrator
    /// should register.
    pub fn pod_endpoints(&self, pod_id: &str) -> Vec<(String, String)> {
        self.pod_instance_ids(pod_id).iter().flat_map(|i| self.pod_endpoints_of(i)).collect()
    }

    /// `pod_endpoints` of one instance (nothing unless every container runs).
    pub fn pod_endpoints_of(&self, instance_id: &str) -> Vec<(String, String)> {
        let Some(pod) = self.pods.values().find(|p| p.instances.iter().any(|i| i.id == instance_id)) else {
            return Vec::new();
        };
        let mode = pod.mode();
        let mut out = Vec::new();
        let running = |i: &&SimPodInstance| i.containers.iter().all(|c| c.state == TaskState::Running);
        for inst in pod.instances.iter().filter(|i| i.id == instance_id).filter(running) {
            for (spec, c) in pod.containers().iter().zip(&inst.containers) {
                let mut host_ports = c.ports.iter();
                for e in spec.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
                    let name = e.get("name").and_then(Value::as_str).unwrap_or("").to_owned();
                    if takes_host_port(&mode, e) {
                        if let Some(p) = host_ports.next() {
                            out.push((name, format!("{}:{p}", inst.host)));
                        }
                    } else if let (Some(ip), Some(p)) = (&inst.ip, e.get("containerPort").and_then(Value::as_u64)) {
                        out.push((name, format!("{ip}:{p}")));
                    }
                }
            }
        }
        out
    }

    /// POST /v2/pods (or PUT /v2/pods/{id} of an existing pod: its
    /// instances are replaced). Needs an `id`; nothing happens without one,
    /// nor on a Marathon without pods (1.3).
    pub fn deploy_pod(&mut self, pod_definition: Value, instances: usize) -> Vec<SimEvent> {
        let Some(id) = pod_definition.get("id").and_then(Value::as_str).and_then(|s| AppId::parse(s).ok()) else {
            return Vec::new();
        };
        if !self.pods_supported() {
            return Vec::new();
        }
        let id = id.to_string();
        let version = self.tick();
        let mut def = pod_definition;
        if let Some(obj) = def.as_object_mut() {
            obj.insert("id".into(), json!(id));
            obj.insert("version".into(), json!(version));
            obj.insert("scaling".into(), json!({"kind": "fixed", "instances": instances}));
        }
        let existed = self.pods.contains_key(&id);
        let old: Vec<String> = self.pod_instance_ids(&id);
        match self.pods.get_mut(&id) {
            Some(p) => p.def = def,
            None => {
                self.pods.insert(id.clone(), SimPod { def, instances: Vec::new() });
            }
        }
        // POST writes the bare collection path as `uri` (PODS.md §4).
        let (ty, uri) = if existed {
            ("pod_updated_event", format!("/v2/pods{id}"))
        } else {
            ("pod_created_event", "/v2/pods".into())
        };
        let mut out = vec![self.ev(ty, json!({"clientIp": "10.0.1.7", "uri": uri}))];
        let steps: &[&str] = if existed { &["RestartPod"] } else { &["StartPod", "ScalePod"] };
        out.extend(self.pod_deployment(&id, steps, &version, |m, id| {
            let mut evs = Vec::new();
            for _ in 0..instances {
                evs.extend(m.launch_pod_instance(id));
            }
            for inst in &old {
                evs.extend(m.kill_pod_instance(id, inst));
            }
            evs
        }));
        out
    }

    /// PUT /v2/pods/{id} with a new `scaling.instances`: new instances are
    /// launched or the youngest killed.
    pub fn scale_pod(&mut self, pod_id: &str, n: usize) -> Vec<SimEvent> {
        let Some(id) = self.pod(pod_id).map(|p| p.id().to_owned()) else { return Vec::new() };
        let version = self.tick();
        if let Some(obj) = self.pods.get_mut(&id).and_then(|p| p.def.as_object_mut()) {
            obj.insert("version".into(), json!(version));
            obj.insert("scaling".into(), json!({"kind": "fixed", "instances": n}));
        }
        let mut out =
            vec![self.ev("pod_updated_event", json!({"clientIp": "10.0.1.7", "uri": format!("/v2/pods{id}")}))];
        out.extend(self.pod_deployment(&id, &["ScalePod"], &version, |m, id| {
            let current = m.pod_instance_ids(id);
            let mut evs = Vec::new();
            if n > current.len() {
                for _ in current.len()..n {
                    evs.extend(m.launch_pod_instance(id));
                }
            } else {
                for inst in current[n..].iter().rev() {
                    evs.extend(m.kill_pod_instance(id, inst));
                }
            }
            evs
        }));
        out
    }

    /// DELETE /v2/pods/{id}: pod_deleted_event, StopPod, every instance killed.
    pub fn destroy_pod(&mut self, pod_id: &str) -> Vec<SimEvent> {
        let Some(id) = self.pod(pod_id).map(|p| p.id().to_owned()) else { return Vec::new() };
        let version = self.tick();
        let mut out =
            vec![self.ev("pod_deleted_event", json!({"clientIp": "10.0.1.7", "uri": format!("/v2/pods{id}")}))];
        out.extend(self.pod_deployment(&id, &["StopPod"], &version, |m, id| {
            let mut evs = Vec::new();
            for inst in m.pod_instance_ids(id) {
                evs.extend(m.kill_pod_instance(id, &inst));
            }
            m.pods.remove(id);
            evs
        }));
        out
    }

    /// Mesos reports a pod instance's health checks: every checked container
    /// becomes `healthy`; `instance_health_changed_event` when the
    /// instance's health changes.
    pub fn set_pod_health(&mut self, instance_id: &str, healthy: bool) -> Vec<SimEvent> {
        let Some((pod_id, version, changed)) = self.pods.iter_mut().find_map(|(id, p)| {
            let inst = p.instances.iter_mut().find(|i| i.id == instance_id)?;
            let changed = inst.healthy != Some(healthy);
            inst.healthy = Some(healthy);
            Some((id.clone(), inst.version.clone(), changed))
        }) else {
            return Vec::new();
        };
        if !changed {
            return Vec::new();
        }
        vec![self.ev(
            "instance_health_changed_event",
            json!({"instanceId": instance_id, "runSpecId": pod_id, "healthy": healthy, "runSpecVersion": version}),
        )]
    }

    /// deployment_info / deployment_step_success per step, `work` done in
    /// the last step, then deployment_success. Pod actions name `pod`.
    fn pod_deployment(
        &mut self,
        id: &str,
        steps: &[&str],
        version: &str,
        work: impl FnOnce(&mut Model, &str) -> Vec<SimEvent>,
    ) -> Vec<SimEvent> {
        let did = format!("{:08x}-9b4f-4a5a-8bd4-{:012x}", self.next_deployment, self.next_deployment);
        self.next_deployment += 1;
        let step_values: Vec<Value> = steps.iter().map(|s| json!({"actions": [{"action": s, "pod": id}]})).collect();
        let plan = json!({"id": did, "steps": step_values, "version": version});
        let mut out = Vec::new();
        let mut work = Some(work);
        for (i, step) in steps.iter().enumerate() {
            let current = json!({"actions": [{"action": step, "pod": id}]});
            out.push(self.ev("deployment_info", json!({"plan": plan, "currentStep": current})));
            if i + 1 == steps.len()
                && let Some(w) = work.take()
            {
                out.extend(w(self, id));
            }
            out.push(self.ev("deployment_step_success", json!({"plan": plan, "currentStep": current})));
        }
        out.push(self.ev("deployment_success", json!({"id": did, "plan": plan})));
        out
    }

    /// Places one instance: every container task STAGING then RUNNING
    /// (status_update_event each), instance_changed_event Running, then
    /// health when a container has a check.
    fn launch_pod_instance(&mut self, pod_id: &str) -> Vec<SimEvent> {
        let Some(pod) = self.pods.get(pod_id) else { return Vec::new() };
        let (mode, version, specs) = (pod.mode(), pod.version(), pod.containers());
        let uuid = format!("{:08x}-5ec5-11ea-8f4e-{:012x}", self.next_uuid, self.next_uuid);
        let host_no = self.next_host % HOSTS.len();
        self.next_host += 1;
        let ip = (mode == "container").then(|| format!("9.0.{}.{}", self.next_uuid / 250, self.next_uuid % 250 + 1));
        self.next_uuid += 1;
        let safe = pod_id.trim_start_matches('/').replace('/', "_");
        let id = format!("{safe}.instance-{uuid}");
        let mut containers = Vec::new();
        for c in &specs {
            let name = c.get("name").and_then(Value::as_str).unwrap_or("main").to_owned();
            let mut ports = Vec::new();
            for e in c.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
                if takes_host_port(&mode, e) {
                    let fixed = e.get("hostPort").and_then(Value::as_u64).filter(|p| *p != 0);
                    ports.push(match fixed {
                        Some(p) => u16::try_from(p).unwrap_or(0),
                        None => {
                            let p = self.next_port;
                            self.next_port = self.next_port.wrapping_add(1).max(31000);
                            p
                        }
                    });
                }
            }
            let check = c.get("healthCheck");
            let checked_endpoint = check
                .and_then(|h| h.get("http").or_else(|| h.get("tcp")))
                .and_then(|k| k.get("endpoint"))
                .and_then(Value::as_str)
                .map(str::to_owned);
            let task_id = match self.generation() {
                Generation::V1_8 => format!("{id}.{name}.1"),
                _ => format!("{id}.{name}"),
            };
            containers.push(SimContainer {
                name,
                task_id,
                state: TaskState::Staging,
                ports,
                checked_endpoint,
                has_check: check.is_some(),
            });
        }
        let checked = containers.iter().any(|c| c.has_check);
        let inst = SimPodInstance {
            id: id.clone(),
            host: HOSTS[host_no].to_owned(),
            slave_id: format!("db7b40e2-791c-445f-b373-183e2a648a86-S{host_no}"),
            ip,
            version,
            containers,
            healthy: None,
            since: Timestamp(self.clock_ms + 1).to_string(),
        };
        let tasks: Vec<String> = inst.containers.iter().map(|c| c.task_id.clone()).collect();
        if let Some(p) = self.pods.get_mut(pod_id) {
            p.instances.push(inst);
        }
        let mut out = Vec::new();
        for t in &tasks {
            out.extend(self.pod_transition(pod_id, &id, t, TaskState::Staging));
        }
        out.extend(self.instance_changed(pod_id, &id, "Staging"));
        for t in &tasks {
            out.extend(self.pod_transition(pod_id, &id, t, TaskState::Running));
        }
        out.extend(self.instance_changed(pod_id, &id, "Running"));
        if checked {
            out.extend(self.set_pod_health(&id, true));
        }
        out
    }

    /// Every container KILLING then KILLED, instance_changed_event for each
    /// step; the instance is removed.
    fn kill_pod_instance(&mut self, pod_id: &str, instance_id: &str) -> Vec<SimEvent> {
        let tasks = self.pod_task_ids(instance_id);
        let mut out = Vec::new();
        for state in [TaskState::Killing, TaskState::Killed] {
            for t in &tasks {
                out.extend(self.pod_transition(pod_id, instance_id, t, state));
            }
            let condition = if state == TaskState::Killed { "Killed" } else { "Killing" };
            out.extend(self.instance_changed(pod_id, instance_id, condition));
        }
        if let Some(p) = self.pods.get_mut(pod_id) {
            p.instances.retain(|i| i.id != instance_id);
        }
        out
    }

    fn pod_transition(&mut self, pod_id: &str, instance_id: &str, task_id: &str, state: TaskState) -> Vec<SimEvent> {
        let Some(inst) = self.pods.get_mut(pod_id).and_then(|p| p.instances.iter_mut().find(|i| i.id == instance_id))
        else {
            return Vec::new();
        };
        let Some(c) = inst.containers.iter_mut().find(|c| c.task_id == task_id) else { return Vec::new() };
        c.state = state;
        let ports = c.ports.clone();
        let ips: Vec<String> = match (&inst.ip, state) {
            (Some(ip), TaskState::Running) => vec![ip.clone()],
            (None, TaskState::Running) => vec![inst.host.clone()],
            _ => Vec::new(),
        };
        let data = json!({
            "slaveId": inst.slave_id, "taskId": task_id, "taskStatus": state.as_mesos_str(), "message": "",
            "appId": pod_id, "host": inst.host, "ipAddresses": ips_value(&ips), "ports": ports,
            "version": inst.version,
        });
        vec![self.ev("status_update_event", data)]
    }

    fn instance_changed(&mut self, pod_id: &str, instance_id: &str, condition: &str) -> Vec<SimEvent> {
        let Some(inst) = self.pods.get(pod_id).and_then(|p| p.instances.iter().find(|i| i.id == instance_id)) else {
            return Vec::new();
        };
        let data = json!({
            "instanceId": instance_id, "condition": condition, "runSpecId": pod_id, "agentId": inst.slave_id,
            "host": inst.host, "runSpecVersion": inst.version,
        });
        vec![self.ev("instance_changed_event", data)]
    }

    pub(super) fn pod(&self, id: &str) -> Option<&SimPod> {
        let id = AppId::parse(id).ok()?;
        self.pods.get(id.as_str())
    }

    /// `GET /v2/pods` body; None on a Marathon without pods (404).
    pub fn pods_json(&self) -> Option<Value> {
        self.pods_supported().then(|| json!(self.pods.values().map(|p| p.def.clone()).collect::<Vec<_>>()))
    }

    /// `GET /v2/pods/{id}` body, or None (404).
    pub fn pod_json(&self, id: &str) -> Option<Value> {
        self.pods_supported().then(|| self.pod(id).map(|p| p.def.clone())).flatten()
    }

    /// `GET /v2/pods/::status` body; None on a Marathon without pods.
    pub fn pods_status_json(&self) -> Option<Value> {
        self.pods_supported().then(|| json!(self.pods.values().map(|p| self.pod_status(p)).collect::<Vec<_>>()))
    }

    /// `GET /v2/pods/{id}::status` body, or None (404).
    pub fn pod_status_json(&self, id: &str) -> Option<Value> {
        self.pods_supported().then(|| self.pod(id).map(|p| self.pod_status(p))).flatten()
    }

    fn pod_status(&self, pod: &SimPod) -> Value {
        let now = Timestamp(self.clock_ms).to_string();
        let id = pod.id();
        let specs = pod.containers();
        let mode = pod.mode();
        let mut stable = 0;
        let mut instances = Vec::new();
        for inst in &pod.instances {
            let running = inst.containers.iter().all(|c| c.state == TaskState::Running);
            let unhealthy = inst.healthy != Some(true) && inst.containers.iter().any(|c| c.has_check);
            let status = match (running, unhealthy) {
                (true, false) => "STABLE",
                (true, true) => "DEGRADED",
                (false, _) => "STAGING",
            };
            if status == "STABLE" {
                stable += 1;
            }
            let containers: Vec<Value> = inst
                .containers
                .iter()
                .zip(&specs)
                .map(|(c, spec)| {
                    let mut host_ports = c.ports.iter();
                    let mut endpoints = Vec::new();
                    for e in spec.get("endpoints").and_then(Value::as_array).into_iter().flatten() {
                        let name = e.get("name").and_then(Value::as_str).unwrap_or("");
                        let mut ep = json!({"name": name});
                        if takes_host_port(&mode, e)
                            && let Some(p) = host_ports.next()
                        {
                            ep["allocatedHostPort"] = json!(p);
                        }
                        if c.checked_endpoint.as_deref() == Some(name)
                            && let Some(h) = inst.healthy
                        {
                            ep["healthy"] = json!(h);
                        }
                        endpoints.push(ep);
                    }
                    let conditions: Vec<Value> = if c.has_check && c.state == TaskState::Running {
                        let (value, reason) = match inst.healthy {
                            Some(h) => (h.to_string(), "health-reported-by-mesos"),
                            None => ("false".to_owned(), "health-unreported-by-mesos"),
                        };
                        vec![json!({"name": "healthy", "lastChanged": inst.since, "lastUpdated": inst.since,
                                     "value": value, "reason": reason})]
                    } else {
                        Vec::new()
                    };
                    json!({
                        "name": c.name, "status": c.state.as_mesos_str(), "statusSince": inst.since,
                        "conditions": conditions, "containerId": c.task_id, "endpoints": endpoints,
                        "resources": spec.get("resources").cloned().unwrap_or(json!({})),
                        "lastUpdated": inst.since, "lastChanged": inst.since,
                    })
                })
                .collect();
            let networks = match &inst.ip {
                Some(ip) => json!([{"name": pod.network_name(), "addresses": [ip]}]),
                None => json!([]),
            };
            instances.push(json!({
                "id": inst.id, "status": status, "statusSince": inst.since, "conditions": [],
                "agentHostname": inst.host, "agentId": inst.slave_id,
                "resources": {"cpus": 0.85, "mem": 352, "disk": 10, "gpus": 0},
                "networks": networks, "containers": containers,
                "specReference": format!("/v2/pods{id}::versions/{}", inst.version),
                "localVolumes": [], "lastUpdated": inst.since, "lastChanged": inst.since, "role": "*",
            }));
        }
        let want = pod.def.pointer("/scaling/instances").and_then(Value::as_u64).unwrap_or(0) as usize;
        let status = if stable >= want { "STABLE" } else { "DEGRADED" };
        json!({
            "id": id, "spec": pod.def, "status": status, "statusSince": now, "instances": instances,
            "terminationHistory": [], "lastUpdated": now, "lastChanged": now,
        })
    }
}
