//! Serde shapes of Marathon's JSON (events, app definitions, REST tasks).
//!
//! Invariants: private to `marathon/`; every field is optional or defaulted
//! so unknown or missing fields never fail decoding here; meaning (ranges,
//! required fields, ids) is checked by hand where these convert into
//! `model` types. Numbers that must become ports are read as `i64` so an
//! out-of-range value is reported with the app and field, not as a serde error.

use std::collections::BTreeMap;

use serde::Deserialize;

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct App {
    pub id: Option<String>,
    pub version: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub port_definitions: Option<Vec<PortDefinition>>,
    pub container: Option<Container>,
    /// Legacy (pre-1.5) flat list of service ports.
    pub ports: Option<Vec<i64>>,
    pub health_checks: Option<Vec<HealthCheck>>,
    pub networks: Option<Vec<Network>>,
    /// Legacy IP-per-task object; its presence (non-null) is what matters.
    pub ip_address: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PortDefinition {
    pub port: Option<i64>,
    pub name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Container {
    pub port_mappings: Option<Vec<PortMapping>>,
    pub docker: Option<Docker>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Docker {
    pub port_mappings: Option<Vec<PortMapping>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PortMapping {
    pub container_port: Option<i64>,
    pub host_port: Option<i64>,
    pub service_port: Option<i64>,
    pub name: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HealthCheck {
    pub protocol: Option<String>,
    pub path: Option<String>,
    pub port_index: Option<i64>,
    pub port: Option<i64>,
    pub interval_seconds: Option<f64>,
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Network {
    pub mode: Option<String>,
    /// Pods: the container network's name.
    pub name: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct IpAddress {
    pub ip_address: Option<String>,
}

/// `status_update_event`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct StatusUpdate {
    pub task_id: Option<String>,
    pub task_status: Option<String>,
    pub app_id: Option<String>,
    pub host: Option<String>,
    pub ip_addresses: Option<Vec<IpAddress>>,
    pub ports: Option<Vec<i64>>,
    pub version: Option<String>,
    pub timestamp: Option<String>,
}

/// `instance_changed_event`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct InstanceChanged {
    pub instance_id: Option<String>,
    pub condition: Option<String>,
    pub run_spec_id: Option<String>,
    pub host: Option<String>,
    pub run_spec_version: Option<String>,
    pub timestamp: Option<String>,
}

/// `health_status_changed_event` (`alive`) and
/// `instance_health_changed_event` (`healthy`, `runSpecId`).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct HealthChanged {
    pub app_id: Option<String>,
    pub run_spec_id: Option<String>,
    pub instance_id: Option<String>,
    pub task_id: Option<String>,
    pub alive: Option<bool>,
    pub healthy: Option<bool>,
    pub timestamp: Option<String>,
}

/// `api_post_event`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ApiPost {
    pub app_definition: Option<serde_json::Value>,
    pub timestamp: Option<String>,
}

/// `app_terminated_event`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct AppTerminated {
    pub app_id: Option<String>,
    pub timestamp: Option<String>,
}

/// `deployment_info` / `deployment_step_success` (light or heavy plan).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Deployment {
    pub plan: Option<Plan>,
    pub current_step: Option<Step>,
    pub timestamp: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Plan {
    /// Root group of the heavy format; absent in the light one.
    pub target: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Step {
    pub actions: Vec<Action>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Action {
    pub action: Option<String>,
    /// Marathon 1.1.0 and 1.1.1 named the action `type`.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub app: Option<String>,
    /// Pod actions (`StartPod`, `ScalePod`, `RestartPod`, `StopPod`) name `pod`.
    pub pod: Option<String>,
}

/// `unhealthy_task_kill_event` (≤ 1.3) / `unhealthy_instance_kill_event`
/// (1.4+), and `unknown_task_terminated_event` (1.3).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TaskNotice {
    pub task_id: Option<String>,
    pub app_id: Option<String>,
    pub run_spec_id: Option<String>,
    /// Mesos state name (`unknown_task_terminated_event`).
    pub status: Option<String>,
    pub timestamp: Option<String>,
}

/// `unknown_instance_terminated_event` (1.4+).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct InstanceTerminated {
    pub instance_id: Option<String>,
    pub run_spec_id: Option<String>,
    pub condition: Option<String>,
    pub timestamp: Option<String>,
}

/// A task in `/v2/apps?embed=apps.tasks`, `/v2/apps/{id}` or `/v2/tasks`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Task {
    pub id: Option<String>,
    pub app_id: Option<String>,
    pub host: Option<String>,
    pub ports: Option<Vec<i64>>,
    pub ip_addresses: Option<Vec<IpAddress>>,
    pub state: Option<String>,
    pub version: Option<String>,
    pub health_check_results: Option<Vec<HealthResult>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct HealthResult {
    pub alive: Option<bool>,
}

/// A pod definition (`GET /v2/pods`, a pod status's `spec`; PODS.md §1).
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Pod {
    pub id: Option<String>,
    pub version: Option<String>,
    pub labels: Option<BTreeMap<String, String>>,
    pub containers: Option<Vec<PodContainer>>,
    pub networks: Option<Vec<Network>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PodContainer {
    pub name: Option<String>,
    pub endpoints: Option<Vec<Endpoint>>,
    pub health_check: Option<PodHealthCheck>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Endpoint {
    pub name: Option<String>,
    pub container_port: Option<i64>,
    pub host_port: Option<i64>,
    pub labels: Option<BTreeMap<String, String>>,
}

/// One of `http`, `tcp` or `exec`, plus timings.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PodHealthCheck {
    pub http: Option<EndpointCheck>,
    pub tcp: Option<EndpointCheck>,
    pub exec: Option<serde_json::Value>,
    pub interval_seconds: Option<f64>,
    pub timeout_seconds: Option<f64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct EndpointCheck {
    pub endpoint: Option<String>,
    pub path: Option<String>,
    pub scheme: Option<String>,
}

/// `GET /v2/pods/{id}::status` (PODS.md §2); `spec` is decoded as a `Pod`.
#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PodStatus {
    pub id: Option<String>,
    pub spec: Option<serde_json::Value>,
    pub instances: Option<Vec<PodInstance>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PodInstance {
    pub id: Option<String>,
    pub agent_hostname: Option<String>,
    pub networks: Option<Vec<PodNetworkStatus>>,
    pub containers: Option<Vec<ContainerStatus>>,
    pub spec_reference: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct PodNetworkStatus {
    pub name: Option<String>,
    pub addresses: Option<Vec<String>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ContainerStatus {
    pub name: Option<String>,
    pub status: Option<String>,
    pub container_id: Option<String>,
    pub endpoints: Option<Vec<EndpointStatus>>,
    pub conditions: Option<Vec<Condition>>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct EndpointStatus {
    pub name: Option<String>,
    pub allocated_host_port: Option<i64>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct Condition {
    pub name: Option<String>,
    pub value: Option<String>,
}

/// `pod_created_event` / `pod_updated_event` / `pod_deleted_event`.
#[derive(Debug, Deserialize, Default)]
#[serde(default)]
pub(crate) struct PodEvent {
    pub uri: Option<String>,
    pub timestamp: Option<String>,
}
