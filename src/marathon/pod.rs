//! Marathon pods (1.4+): a pod definition into the `AppSpec` the core uses
//! for apps, and a pod status into one `TaskSnapshot` per container task.
//!
//! Invariants:
//! - Pure: no I/O, no clock (`as_of` is passed in). Wire structs (`wire.rs`)
//!   are converted by hand; nothing downstream sees pod JSON.
//! - A pod is an app to the core: its id is an `AppId`, its labels the app
//!   labels, its endpoints (all containers', flattened in container order)
//!   the app's ports, its per-container health checks the app's checks.
//!   `AppSpec::pod` keeps how endpoints and containers line up.
//! - A pod instance's container tasks are task facts of one instance: the
//!   container task id names the instance (`TaskId::instance_id`) and the
//!   container (`TaskId::pod_container`), exactly as in `status_update_event`,
//!   so events and snapshots fold to the same record.
//! - Addresses follow Marathon's own discovery rule (PODS.md §2): an endpoint
//!   with a `hostPort` (host, `container/bridge`, and container networks when
//!   one is declared) is the agent host and the allocated host port; an
//!   endpoint on a container network without one is the instance's address
//!   and its `containerPort`.

use serde_json::Value;

use super::client::{AppSnapshot, TaskSnapshot};
use super::event::{ParseError, seconds};
use super::wire;
use crate::model::{
    AppId, AppSpec, HealthCheckSpec, HealthProtocol, PodContainer, PodSpec, PortSpec, TaskFacts, TaskId, TaskState,
    Timestamp,
};

/// Parses one pod definition (`GET /v2/pods/{id}`).
pub fn parse_pod(json: &str) -> Result<AppSpec, ParseError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|source| ParseError::Json { event_type: "pod definition".to_owned(), source })?;
    pod_from_value(&v)
}

/// Converts one pod definition into the `AppSpec` that stands for it.
pub fn pod_from_value(v: &Value) -> Result<AppSpec, ParseError> {
    let raw_id = v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let err = |field: &str, cause: String| ParseError::App { app: raw_id.clone(), field: field.to_owned(), cause };
    let w: wire::Pod = serde_json::from_value(v.clone()).map_err(|e| err("definition", e.to_string()))?;
    let id = AppId::parse(&raw_id).map_err(|e| err("id", e.to_string()))?;
    let port = |field: &str, p: i64| u16::try_from(p).map_err(|_| err(field, format!("{p} out of range 0..=65535")));

    // Only a container network lets an endpoint go without a host port;
    // host, `container/bridge` and no networks (1.5+: treated as host)
    // give every endpoint one, 0 meaning dynamic.
    let container_net = w.networks.iter().flatten().any(|n| n.mode.as_deref() == Some("container"));

    let mut ports = Vec::new();
    let mut containers = Vec::new();
    let mut checks = Vec::new();
    let wire_containers = w.containers.unwrap_or_default();
    if wire_containers.is_empty() {
        return Err(err("containers", "a pod has at least one container".into()));
    }
    for (ci, c) in wire_containers.iter().enumerate() {
        let name = c
            .name
            .clone()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| err(&format!("containers[{ci}].name"), "missing".into()))?;
        let first = ports.len();
        let mut host_ports = 0;
        for (ei, e) in c.endpoints.iter().flatten().enumerate() {
            let ep_name = e.name.clone().unwrap_or_else(|| ei.to_string());
            let field = |f: &str| format!("containers[{name}].endpoints[{ep_name}].{f}");
            if let Some(p) = e.host_port {
                port(&field("hostPort"), p)?;
            }
            let container_port = match e.container_port {
                Some(p) => Some(port(&field("containerPort"), p)?),
                None => None,
            };
            let no_host_port = container_net && e.host_port.is_none();
            if !no_host_port {
                host_ports += 1;
            }
            ports.push(PortSpec {
                name: e.name.clone(),
                labels: e.labels.clone().unwrap_or_default(),
                container_port,
                no_host_port,
            });
        }
        let health_checked = c.health_check.is_some();
        if let Some(h) = &c.health_check {
            let field = |f: &str| format!("containers[{name}].healthCheck.{f}");
            let interval = seconds(h.interval_seconds, 60.0).map_err(|e| err(&field("intervalSeconds"), e))?;
            let timeout = seconds(h.timeout_seconds, 20.0).map_err(|e| err(&field("timeoutSeconds"), e))?;
            let (protocol, check, kind) = match (&h.http, &h.tcp) {
                (Some(http), _) => {
                    let https = http.scheme.as_deref().is_some_and(|s| s.eq_ignore_ascii_case("HTTPS"));
                    let protocol = if https { HealthProtocol::MesosHttps } else { HealthProtocol::MesosHttp };
                    (protocol, Some(http), "http")
                }
                (None, Some(tcp)) => (HealthProtocol::MesosTcp, Some(tcp), "tcp"),
                (None, None) => (HealthProtocol::Command, None, "exec"),
            };
            let port_index = match check {
                Some(check) => {
                    let endpoint = check
                        .endpoint
                        .as_deref()
                        .ok_or_else(|| err(&field(&format!("{kind}.endpoint")), "missing".into()))?;
                    let at =
                        ports[first..].iter().position(|p| p.name.as_deref() == Some(endpoint)).ok_or_else(|| {
                            err(
                                &field(&format!("{kind}.endpoint")),
                                format!("no endpoint {endpoint:?} in this container"),
                            )
                        })?;
                    Some(first + at)
                }
                None => None,
            };
            checks.push(HealthCheckSpec {
                protocol,
                path: check.and_then(|c| c.path.clone()),
                port_index,
                port: None,
                interval,
                timeout,
            });
        }
        containers.push(PodContainer { name, endpoints: ports.len() - first, host_ports, health_checked });
    }

    Ok(AppSpec {
        id,
        version: w.version.unwrap_or_default(),
        labels: w.labels.unwrap_or_default(),
        ports,
        health_checks: checks,
        ip_per_task: container_net,
        pod: Some(PodSpec { containers }),
    })
}

/// Parses a `GET /v2/pods/::status` body (an array). A pod whose status does
/// not parse is collected in the second list (by raw id), never dropped
/// silently; only an undecodable body is an error.
#[allow(clippy::type_complexity)]
pub fn parse_pods_status(
    json: &str,
    as_of: Timestamp,
) -> Result<(Vec<AppSnapshot>, Vec<(String, ParseError)>), ParseError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|source| ParseError::Json { event_type: "/v2/pods/::status".into(), source })?;
    let list = v.as_array().ok_or_else(|| ParseError::Field {
        event_type: "/v2/pods/::status".into(),
        field: "(body)".into(),
        cause: "not an array".into(),
    })?;
    let mut pods = Vec::new();
    let mut broken = Vec::new();
    for status in list {
        match pod_status_from_value(status, as_of) {
            Ok(p) => pods.push(p),
            Err(e) => {
                let id = status.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                broken.push((id, e));
            }
        }
    }
    Ok((pods, broken))
}

/// Parses a `GET /v2/pods/{id}::status` body (one object).
pub fn parse_pod_status(json: &str, as_of: Timestamp) -> Result<AppSnapshot, ParseError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|source| ParseError::Json { event_type: "/v2/pods/{id}::status".into(), source })?;
    pod_status_from_value(&v, as_of)
}

/// One pod status: its spec (`spec`, the latest definition) and one task
/// snapshot per container of each instance, stamped `as_of`.
pub fn pod_status_from_value(v: &Value, as_of: Timestamp) -> Result<AppSnapshot, ParseError> {
    let raw_id = v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let err = |field: String, cause: String| ParseError::App { app: raw_id.clone(), field, cause };
    let w: wire::PodStatus = serde_json::from_value(v.clone()).map_err(|e| err("status".into(), e.to_string()))?;
    let spec_value = w.spec.ok_or_else(|| err("spec".into(), "missing".into()))?;
    let spec = pod_from_value(&spec_value)?;
    if let Some(id) = &w.id
        && AppId::parse(id).ok().as_ref() != Some(&spec.id)
    {
        return Err(err("spec.id".into(), format!("{} differs from the status's id {id:?}", spec.id)));
    }
    let pod = spec.pod.as_ref().map(|p| p.containers.as_slice()).unwrap_or_default();
    let mut tasks = Vec::new();
    for inst in w.instances.unwrap_or_default() {
        let inst_id = inst.id.clone().unwrap_or_default();
        let field = |f: &str| format!("instances[{inst_id}].{f}");
        let instance = TaskId::parse(&inst_id).map_err(|e| err(field("id"), e.to_string()))?;
        // The version this instance runs: the tail of its spec reference.
        let version = inst
            .spec_reference
            .as_deref()
            .and_then(|r| r.rsplit_once("::versions/"))
            .map(|(_, v)| v.to_owned())
            .unwrap_or_else(|| spec.version.clone());
        let host = inst.agent_hostname.clone().filter(|h| !h.is_empty()).unwrap_or_else(|| "unknown".to_owned());
        let mut ips: Vec<String> = Vec::new();
        for a in inst.networks.iter().flatten().flat_map(|n| n.addresses.iter().flatten()) {
            if !ips.contains(a) {
                ips.push(a.clone());
            }
        }
        let statuses = inst.containers.unwrap_or_default();
        let healthy = instance_health(pod, &statuses);
        for c in statuses {
            let name = c.name.clone().unwrap_or_default();
            let field = |f: &str| format!("instances[{inst_id}].containers[{name}].{f}");
            let raw_task = c.container_id.clone().unwrap_or_else(|| format!("{inst_id}.{name}"));
            let task_id = TaskId::parse(&raw_task).map_err(|e| err(field("containerId"), e.to_string()))?;
            if task_id.instance_id().as_str() != instance.as_str() || task_id.pod_container() != Some(name.as_str()) {
                return Err(err(
                    field("containerId"),
                    format!("{raw_task:?} is not container {name:?} of {inst_id:?}"),
                ));
            }
            let state_name = c.status.clone().unwrap_or_default();
            let state = TaskState::parse(&state_name)
                .ok_or_else(|| err(field("status"), format!("unknown task state {state_name:?}")))?;
            let ports = allocated_ports(&spec, &name, &c).map_err(|cause| err(field("endpoints"), cause))?;
            tasks.push(TaskSnapshot {
                facts: TaskFacts {
                    task_id,
                    app_id: spec.id.clone(),
                    host: host.clone(),
                    ports,
                    ip_addresses: ips.clone(),
                    state,
                    version: version.clone(),
                    at: as_of,
                },
                healthy,
            });
        }
    }
    Ok(AppSnapshot { spec, tasks })
}

/// The host ports allocated to a container's `hostPort` endpoints, in the
/// spec's order (the order of `status_update_event`'s `ports`), matched by
/// name. Empty while any of them is unallocated (staging, or terminal:
/// Marathon drops a finished task's endpoints).
fn allocated_ports(spec: &AppSpec, container: &str, status: &wire::ContainerStatus) -> Result<Vec<u16>, String> {
    let Some(range) = container_range(spec, container) else { return Ok(Vec::new()) };
    let mut out = Vec::new();
    for p in spec.ports[range].iter().filter(|p| !p.no_host_port) {
        let allocated = status
            .endpoints
            .iter()
            .flatten()
            .find(|e| e.name.is_some() && e.name == p.name)
            .and_then(|e| e.allocated_host_port);
        match allocated {
            Some(port) => out.push(u16::try_from(port).map_err(|_| format!("allocatedHostPort {port} out of range"))?),
            None => return Ok(Vec::new()),
        }
    }
    Ok(out)
}

/// Which of the spec's ports are the endpoints of `container`.
pub(crate) fn container_range(spec: &AppSpec, container: &str) -> Option<std::ops::Range<usize>> {
    let mut start = 0;
    for c in &spec.pod.as_ref()?.containers {
        if c.name == container {
            return Some(start..start + c.endpoints);
        }
        start += c.endpoints;
    }
    None
}

/// An instance's health from its containers' `healthy` conditions: false if
/// any checked container is unhealthy (or not yet reported), true when every
/// checked container is healthy, None when no container has a check.
fn instance_health(pod: &[PodContainer], statuses: &[wire::ContainerStatus]) -> Option<bool> {
    let values: Vec<Option<&str>> = pod
        .iter()
        .filter(|c| c.health_checked)
        .map(|c| {
            statuses
                .iter()
                .find(|s| s.name.as_deref() == Some(c.name.as_str()))
                .and_then(|s| s.conditions.iter().flatten().find(|k| k.name.as_deref() == Some("healthy")))
                .and_then(|k| k.value.as_deref())
        })
        .collect();
    if values.is_empty() {
        None
    } else if values.iter().any(|v| v.is_some_and(|v| v != "true")) {
        Some(false)
    } else if values.iter().all(|v| *v == Some("true")) {
        Some(true)
    } else {
        None
    }
}

/// The pod id in a pod event's `uri` (`/v2/pods/prod/shop`); `None` for the
/// bare `/v2/pods` of a POST.
pub(crate) fn pod_id_from_uri(uri: &str) -> Option<AppId> {
    let rest = uri.strip_prefix("/v2/pods")?;
    let rest = rest.split(['?', '#']).next().unwrap_or("");
    let rest = rest.split("::").next().unwrap_or("");
    AppId::parse(rest).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(json: serde_json::Value) -> AppSpec {
        pod_from_value(&json).unwrap()
    }

    #[test]
    fn endpoints_flatten_in_container_order() {
        let spec = pod(serde_json::json!({
            "id": "/p", "version": "v1", "labels": {"consul": ""},
            "containers": [
                {"name": "a", "endpoints": [{"name": "x", "hostPort": 0}, {"name": "y", "containerPort": 80}]},
                {"name": "b"},
                {"name": "c", "endpoints": [{"name": "z", "containerPort": 9000, "hostPort": 0}],
                 "healthCheck": {"tcp": {"endpoint": "z"}}}
            ],
            "networks": [{"mode": "container", "name": "dcos"}]
        }));
        let names: Vec<_> = spec.ports.iter().map(|p| (p.name.clone().unwrap(), p.no_host_port)).collect();
        assert_eq!(names, [("x".into(), false), ("y".into(), true), ("z".into(), false)]);
        let pod = spec.pod.unwrap();
        let shape: Vec<_> = pod.containers.iter().map(|c| (c.name.as_str(), c.endpoints, c.host_ports)).collect();
        assert_eq!(shape, [("a", 2, 1), ("b", 0, 0), ("c", 1, 1)]);
        assert!(spec.ip_per_task);
        assert_eq!(spec.health_checks[0].port_index, Some(2));
        assert_eq!(spec.health_checks[0].protocol, HealthProtocol::MesosTcp);
    }

    #[test]
    fn host_and_bridge_give_every_endpoint_a_host_port() {
        for mode in ["host", "container/bridge"] {
            let spec = pod(serde_json::json!({"id": "/p", "containers": [{"name": "a",
                "endpoints": [{"name": "x"}, {"name": "y", "containerPort": 80}]}], "networks": [{"mode": mode}]}));
            assert!(spec.ports.iter().all(|p| !p.no_host_port), "{mode}");
            assert!(!spec.ip_per_task, "{mode}");
        }
    }

    #[test]
    fn bad_definitions_name_the_pod_and_field() {
        let e = pod_from_value(&serde_json::json!({"id": "/p", "containers": [{"name": "a",
            "endpoints": [{"name": "x", "containerPort": 70000}]}]}))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "app /p: field containers[a].endpoints[x].containerPort: 70000 out of range 0..=65535"
        );
        let e = pod_from_value(&serde_json::json!({"id": "/p", "containers": [{"name": "a",
            "healthCheck": {"http": {"endpoint": "nope"}}}]}))
        .unwrap_err();
        assert!(e.to_string().contains("no endpoint \"nope\""), "{e}");
        assert!(pod_from_value(&serde_json::json!({"id": "/p", "containers": []})).is_err());
    }

    #[test]
    fn pod_ids_from_event_uris() {
        assert_eq!(pod_id_from_uri("/v2/pods/prod/shop").unwrap().as_str(), "/prod/shop");
        assert_eq!(pod_id_from_uri("/v2/pods/prod/shop::status").unwrap().as_str(), "/prod/shop");
        assert_eq!(pod_id_from_uri("/v2/pods"), None);
        assert_eq!(pod_id_from_uri("/v2/apps/x"), None);
    }

    #[test]
    fn health_needs_every_checked_container() {
        let c = |name: &str, checked: bool| PodContainer {
            name: name.into(),
            endpoints: 0,
            host_ports: 0,
            health_checked: checked,
        };
        let s = |name: &str, value: Option<&str>| wire::ContainerStatus {
            name: Some(name.into()),
            conditions: value.map(|v| vec![wire::Condition { name: Some("healthy".into()), value: Some(v.into()) }]),
            ..Default::default()
        };
        let pod = [c("a", true), c("b", false), c("c", true)];
        assert_eq!(instance_health(&pod, &[s("a", Some("true")), s("b", None), s("c", Some("true"))]), Some(true));
        assert_eq!(instance_health(&pod, &[s("a", Some("true")), s("c", Some("false"))]), Some(false));
        assert_eq!(instance_health(&pod, &[s("a", Some("true")), s("c", None)]), None);
        assert_eq!(instance_health(&pod, &[s("a", None), s("c", Some("false"))]), Some(false));
        assert_eq!(instance_health(&[c("b", false)], &[s("b", None)]), None);
    }
}
