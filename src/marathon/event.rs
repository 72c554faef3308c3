//! Typed Marathon events: one SSE frame's `data` (or one callback body) in,
//! domain `Event`s out.
//!
//! Invariants:
//! - Pure: no I/O, no clock. Wire structs (`wire.rs`) are converted by hand
//!   into `model` types here; nothing downstream sees Marathon JSON.
//! - Unknown fields are ignored; an unknown `eventType` is `Event::Unknown`
//!   (counted and skipped by the caller), never an error.
//! - The JSON's own `eventType` wins over the SSE `event:` name.
//! - A `ParseError` always names the event type (or app) and the field at fault.

use std::time::Duration;

use serde_json::Value;

use super::wire;
use crate::model::{
    AppId, AppSpec, HealthCheckSpec, HealthProtocol, InstanceId, PortSpec, TaskFacts, TaskId, TaskState, Timestamp,
};

/// One fact Switchboard uses, taken from a Marathon event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// status_update_event
    Status(TaskFacts),
    /// instance_changed_event; `state` is `None` for conditions that say
    /// nothing about serving (Reserved, Scheduled, ...).
    InstanceChanged {
        instance: InstanceId,
        app_id: AppId,
        state: Option<TaskState>,
        host: Option<String>,
        version: String,
        at: Timestamp,
    },
    /// A state of one task without its location: `TASK_KILLING` from
    /// unhealthy_task_kill_event / unhealthy_instance_kill_event (Marathon is
    /// about to kill it), or the terminal state of
    /// unknown_task_terminated_event (1.3).
    TaskState { task_id: TaskId, app_id: AppId, state: TaskState, at: Timestamp },
    /// health_status_changed_event (`alive`) and instance_health_changed_event
    /// (`healthy`; null → None).
    Health { instance: InstanceId, app_id: AppId, healthy: Option<bool>, at: Timestamp },
    /// api_post_event's appDefinition, or an app of a heavy plan's target.
    Spec { spec: AppSpec, at: Timestamp },
    /// app_terminated_event, or a StopApplication action of deployment_info.
    AppStopped { app_id: AppId, at: Timestamp },
    /// An app named by another deployment_info action: its definition may
    /// have a new version.
    AppTouched { app_id: AppId, at: Timestamp },
    /// A known event type carrying nothing Switchboard uses.
    Ignored { event_type: String },
    /// An eventType this parser does not know.
    Unknown { event_type: String },
}

#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    #[error("{event_type}: invalid JSON: {source}")]
    Json {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("{event_type}: field {field}: {cause}")]
    Field { event_type: String, field: String, cause: String },
    #[error("app {app}: field {field}: {cause}")]
    App { app: String, field: String, cause: String },
}

/// Event types that are known and deliberately carry nothing we use.
const IGNORED: &[&str] = &[
    "event_stream_attached",
    "event_stream_detached",
    "subscribe_event",
    "unsubscribe_event",
    "group_change_success",
    "group_change_failed",
    "deployment_success",
    "deployment_failed",
    "deployment_step_failure",
    "failed_health_check_event",
    "add_health_check_event",
    "remove_health_check_event",
    "instance_update_event",
    "framework_message_event",
    "pod_created_event",
    "scheduler_registered_event",
    "scheduler_reregistered_event",
    "scheduler_disconnected_event",
];

/// Parses the `data` of one SSE frame: one JSON document (Marathon writes
/// each event as one compact line), into the events it stands for.
pub fn parse(event_type: &str, data: &str) -> Result<Vec<Event>, ParseError> {
    let value: Value = serde_json::from_str(data.trim())
        .map_err(|source| ParseError::Json { event_type: event_type.to_owned(), source })?;
    let ty = value.get("eventType").and_then(Value::as_str).unwrap_or(event_type).to_owned();
    let mut out = Vec::new();
    parse_one(&ty, value, &mut out)?;
    Ok(out)
}

fn parse_one(ty: &str, value: Value, out: &mut Vec<Event>) -> Result<(), ParseError> {
    let cx = Cx(ty);
    match ty {
        "status_update_event" => {
            let w: wire::StatusUpdate = cx.decode(value)?;
            out.push(Event::Status(status_facts(&cx, w)?));
        }
        "instance_changed_event" => {
            let w: wire::InstanceChanged = cx.decode(value)?;
            let condition = cx.req(w.condition, "condition")?;
            out.push(Event::InstanceChanged {
                instance: cx.instance(w.instance_id, "instanceId")?,
                app_id: cx.app_id(w.run_spec_id, "runSpecId")?,
                state: condition_state(&condition),
                host: w.host,
                version: w.run_spec_version.unwrap_or_default(),
                at: cx.timestamp(w.timestamp)?,
            });
        }
        "health_status_changed_event" => {
            let w: wire::HealthChanged = cx.decode(value)?;
            let (id, field) = match w.instance_id {
                Some(id) => (Some(id), "instanceId"),
                None => (w.task_id, "taskId"),
            };
            out.push(Event::Health {
                instance: cx.instance(id, field)?,
                app_id: cx.app_id(w.app_id, "appId")?,
                healthy: Some(cx.req(w.alive, "alive")?),
                at: cx.timestamp(w.timestamp)?,
            });
        }
        "instance_health_changed_event" => {
            let w: wire::HealthChanged = cx.decode(value)?;
            out.push(Event::Health {
                instance: cx.instance(w.instance_id, "instanceId")?,
                app_id: cx.app_id(w.run_spec_id, "runSpecId")?,
                healthy: w.healthy,
                at: cx.timestamp(w.timestamp)?,
            });
        }
        "unhealthy_task_kill_event" | "unhealthy_instance_kill_event" => {
            // Its timestamp is the last failure's, not the publish time; a
            // kill outranks any live state of the same launch regardless.
            let w: wire::TaskNotice = cx.decode(value)?;
            out.push(Event::TaskState {
                task_id: cx.task_id(w.task_id)?,
                app_id: cx.app_id(w.app_id, "appId")?,
                state: TaskState::Killing,
                at: cx.timestamp(w.timestamp)?,
            });
        }
        "unknown_task_terminated_event" => {
            let w: wire::TaskNotice = cx.decode(value)?;
            let status = cx.req(w.status, "status")?;
            let state = TaskState::parse(&status)
                .filter(|s| s.is_terminal())
                .ok_or_else(|| cx.field("status", format!("not a terminal task state: {status:?}")))?;
            out.push(Event::TaskState {
                task_id: cx.task_id(w.task_id)?,
                app_id: cx.app_id(w.run_spec_id, "runSpecId")?,
                state,
                at: cx.timestamp(w.timestamp)?,
            });
        }
        "unknown_instance_terminated_event" => {
            let w: wire::InstanceTerminated = cx.decode(value)?;
            let condition = cx.req(w.condition, "condition")?;
            let state = condition_state(&condition)
                .filter(|s| s.is_terminal())
                .ok_or_else(|| cx.field("condition", format!("not a terminal condition: {condition:?}")))?;
            out.push(Event::InstanceChanged {
                instance: cx.instance(w.instance_id, "instanceId")?,
                app_id: cx.app_id(w.run_spec_id, "runSpecId")?,
                state: Some(state),
                host: None,
                version: String::new(),
                at: cx.timestamp(w.timestamp)?,
            });
        }
        "api_post_event" => {
            let w: wire::ApiPost = cx.decode(value)?;
            let def = cx.req(w.app_definition, "appDefinition")?;
            let spec = app_from_value(&def).map_err(|e| cx.field("appDefinition", e))?;
            out.push(Event::Spec { spec, at: cx.timestamp(w.timestamp)? });
        }
        "pod_updated_event" | "pod_deleted_event" => {
            // `uri` is the request path: `/v2/pods/prod/shop`.
            let w: wire::PodEvent = cx.decode(value)?;
            let uri = cx.req(w.uri, "uri")?;
            let app_id =
                super::pod::pod_id_from_uri(&uri).ok_or_else(|| cx.field("uri", format!("{uri:?} names no pod")))?;
            let at = cx.timestamp(w.timestamp)?;
            out.push(if ty == "pod_deleted_event" {
                Event::AppStopped { app_id, at }
            } else {
                Event::AppTouched { app_id, at }
            });
        }
        "app_terminated_event" => {
            let w: wire::AppTerminated = cx.decode(value)?;
            out.push(Event::AppStopped { app_id: cx.app_id(w.app_id, "appId")?, at: cx.timestamp(w.timestamp)? });
        }
        "deployment_info" | "deployment_step_success" => {
            let w: wire::Deployment = cx.decode(value)?;
            let at = cx.timestamp(w.timestamp)?;
            let before = out.len();
            if let Some(target) = w.plan.and_then(|p| p.target) {
                let mut apps = Vec::new();
                collect_group_apps(&target, &mut apps);
                for app in apps {
                    let spec = app_from_value(app).map_err(|e| cx.field("plan.target", e))?;
                    out.push(Event::Spec { spec, at });
                }
            }
            if ty == "deployment_info" {
                for action in w.current_step.map(|s| s.actions).unwrap_or_default() {
                    // App actions name `app`; pod actions (1.4+) name `pod`.
                    let app_id = match (action.app, action.pod) {
                        (Some(app), _) => cx.app_id(Some(app), "currentStep.actions.app")?,
                        (None, Some(pod)) => cx.app_id(Some(pod), "currentStep.actions.pod")?,
                        (None, None) => continue,
                    };
                    match action.action.as_deref().or(action.kind.as_deref()) {
                        Some("StopApplication" | "StopPod") => out.push(Event::AppStopped { app_id, at }),
                        Some(
                            "StartApplication" | "ScaleApplication" | "RestartApplication" | "StartPod" | "ScalePod"
                            | "RestartPod",
                        ) => out.push(Event::AppTouched { app_id, at }),
                        _ => {}
                    }
                }
            }
            if out.len() == before {
                out.push(Event::Ignored { event_type: ty.to_owned() });
            }
        }
        _ if IGNORED.contains(&ty) => out.push(Event::Ignored { event_type: ty.to_owned() }),
        _ => out.push(Event::Unknown { event_type: ty.to_owned() }),
    }
    Ok(())
}

fn status_facts(cx: &Cx<'_>, w: wire::StatusUpdate) -> Result<TaskFacts, ParseError> {
    let status = cx.req(w.task_status, "taskStatus")?;
    let state =
        TaskState::parse(&status).ok_or_else(|| cx.field("taskStatus", format!("unknown task state {status:?}")))?;
    Ok(TaskFacts {
        task_id: cx.task_id(w.task_id)?,
        app_id: cx.app_id(w.app_id, "appId")?,
        host: w.host.unwrap_or_else(|| "unknown".to_owned()),
        ports: host_ports(w.ports.unwrap_or_default())
            .map_err(|p| cx.field("ports", format!("port {p} out of range")))?,
        ip_addresses: ip_list(w.ip_addresses),
        state,
        version: w.version.unwrap_or_default(),
        at: cx.timestamp(w.timestamp)?,
    })
}

pub(crate) fn ip_list(ips: Option<Vec<wire::IpAddress>>) -> Vec<String> {
    ips.unwrap_or_default().into_iter().filter_map(|ip| ip.ip_address).collect()
}

/// Host ports as u16; the offending value on failure.
pub(crate) fn host_ports(ports: Vec<i64>) -> Result<Vec<u16>, i64> {
    ports.into_iter().map(|p| u16::try_from(p).map_err(|_| p)).collect()
}

/// Instance condition → task state, for conditions that say something.
fn condition_state(condition: &str) -> Option<TaskState> {
    Some(match condition {
        "Provisioned" | "Staging" => TaskState::Staging,
        "Starting" => TaskState::Starting,
        "Running" => TaskState::Running,
        "Killing" => TaskState::Killing,
        "Killed" => TaskState::Killed,
        "Finished" => TaskState::Finished,
        "Failed" => TaskState::Failed,
        "Error" => TaskState::Error,
        "Gone" => TaskState::Gone,
        "Dropped" => TaskState::Dropped,
        "Unreachable" | "UnreachableInactive" => TaskState::Unreachable,
        "Unknown" => TaskState::Unknown,
        _ => return None,
    })
}

/// Every app of a group tree, recursively through `groups`.
fn collect_group_apps<'a>(group: &'a Value, out: &mut Vec<&'a Value>) {
    if let Some(apps) = group.get("apps").and_then(Value::as_array) {
        out.extend(apps.iter());
    }
    if let Some(groups) = group.get("groups").and_then(Value::as_array) {
        for g in groups {
            collect_group_apps(g, out);
        }
    }
}

/// Error context: the event type being parsed.
struct Cx<'a>(&'a str);

impl Cx<'_> {
    fn field(&self, field: &str, cause: impl std::fmt::Display) -> ParseError {
        ParseError::Field { event_type: self.0.to_owned(), field: field.to_owned(), cause: cause.to_string() }
    }
    fn decode<T: serde::de::DeserializeOwned>(&self, v: Value) -> Result<T, ParseError> {
        serde_json::from_value(v).map_err(|source| ParseError::Json { event_type: self.0.to_owned(), source })
    }
    fn req<T>(&self, v: Option<T>, field: &str) -> Result<T, ParseError> {
        v.ok_or_else(|| self.field(field, "missing"))
    }
    fn app_id(&self, v: Option<String>, field: &str) -> Result<AppId, ParseError> {
        AppId::parse(&self.req(v, field)?).map_err(|e| self.field(field, e))
    }
    fn task_id(&self, v: Option<String>) -> Result<TaskId, ParseError> {
        TaskId::parse(&self.req(v, "taskId")?).map_err(|e| self.field("taskId", e))
    }
    fn instance(&self, v: Option<String>, field: &str) -> Result<InstanceId, ParseError> {
        InstanceId::parse(&self.req(v, field)?).map_err(|e| self.field(field, e))
    }
    fn timestamp(&self, v: Option<String>) -> Result<Timestamp, ParseError> {
        Timestamp::parse(&self.req(v, "timestamp")?).map_err(|e| self.field("timestamp", e))
    }
}

/// Parses one Marathon app definition (REST, api_post_event, example files).
pub fn parse_app(json: &str) -> Result<AppSpec, ParseError> {
    let v: Value = serde_json::from_str(json)
        .map_err(|source| ParseError::Json { event_type: "app definition".to_owned(), source })?;
    app_from_value(&v)
}

/// Converts one Marathon app definition into an `AppSpec`.
pub fn app_from_value(v: &Value) -> Result<AppSpec, ParseError> {
    let raw_id = v.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
    let err = |field: &str, cause: String| ParseError::App { app: raw_id.clone(), field: field.to_owned(), cause };
    let w: wire::App = serde_json::from_value(v.clone()).map_err(|e| err("definition", e.to_string()))?;
    let id = AppId::parse(&raw_id).map_err(|e| err("id", e.to_string()))?;
    let port =
        |field: &str, p: i64| u16::try_from(p).map_err(|_| err(field, format!("port {p} out of range 0..=65535")));

    let ports = if let Some(defs) = w.port_definitions.as_ref().filter(|d| !d.is_empty()) {
        let mut out = Vec::with_capacity(defs.len());
        for d in defs {
            if let Some(p) = d.port {
                port("portDefinitions.port", p)?;
            }
            out.push(PortSpec {
                name: d.name.clone(),
                labels: d.labels.clone().unwrap_or_default(),
                container_port: None,
                no_host_port: false,
            });
        }
        out
    } else if let Some((field, maps)) = port_mappings(&w) {
        // On a container network a mapping without `hostPort` has none; in
        // bridge mode Marathon gives every mapping a host port (0 = dynamic).
        let container_net = w.networks.iter().flatten().any(|n| n.mode.as_deref() == Some("container"));
        let mut out = Vec::with_capacity(maps.len());
        for m in maps {
            if let Some(p) = m.host_port {
                port(&format!("{field}.hostPort"), p)?;
            }
            if let Some(p) = m.service_port {
                port(&format!("{field}.servicePort"), p)?;
            }
            let container_port = match m.container_port {
                Some(p) => Some(port(&format!("{field}.containerPort"), p)?),
                None => None,
            };
            out.push(PortSpec {
                name: m.name.clone(),
                labels: m.labels.clone().unwrap_or_default(),
                container_port,
                no_host_port: container_net && m.host_port.is_none(),
            });
        }
        out
    } else {
        let mut out = Vec::new();
        for p in w.ports.iter().flatten() {
            port("ports", *p)?;
            out.push(PortSpec::default());
        }
        out
    };

    let mut health_checks = Vec::new();
    for h in w.health_checks.iter().flatten() {
        let port_index = match h.port_index {
            Some(i) => {
                Some(usize::try_from(i).map_err(|_| err("healthChecks.portIndex", format!("negative index {i}")))?)
            }
            None => None,
        };
        let fixed = match h.port {
            Some(p) => Some(port("healthChecks.port", p)?),
            None => None,
        };
        health_checks.push(HealthCheckSpec {
            protocol: HealthProtocol::parse(h.protocol.as_deref().unwrap_or("HTTP")),
            path: h.path.clone(),
            port_index,
            port: fixed,
            interval: seconds(h.interval_seconds, 60.0).map_err(|c| err("healthChecks.intervalSeconds", c))?,
            timeout: seconds(h.timeout_seconds, 20.0).map_err(|c| err("healthChecks.timeoutSeconds", c))?,
        });
    }

    let container_net = w.networks.iter().flatten().any(|n| n.mode.as_deref() == Some("container"));
    let legacy_ip = w.ip_address.as_ref().is_some_and(|v| v.is_object());

    Ok(AppSpec {
        id,
        version: w.version.unwrap_or_default(),
        labels: w.labels.unwrap_or_default(),
        ports,
        health_checks,
        ip_per_task: container_net || legacy_ip,
        pod: None,
    })
}

fn port_mappings(w: &wire::App) -> Option<(&'static str, &Vec<wire::PortMapping>)> {
    let c = w.container.as_ref()?;
    if let Some(m) = c.port_mappings.as_ref().filter(|m| !m.is_empty()) {
        return Some(("container.portMappings", m));
    }
    let m = c.docker.as_ref()?.port_mappings.as_ref().filter(|m| !m.is_empty())?;
    Some(("container.docker.portMappings", m))
}

/// Marathon's `*Seconds` fields, with its default when absent.
pub(crate) fn seconds(v: Option<f64>, default: f64) -> Result<Duration, String> {
    let s = v.unwrap_or(default);
    Duration::try_from_secs_f64(s).map_err(|_| format!("invalid duration {s}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(ty: &str, data: &str) -> Event {
        let mut evs = parse(ty, data).unwrap();
        assert_eq!(evs.len(), 1, "{evs:?}");
        evs.remove(0)
    }

    #[test]
    fn condition_mapping() {
        let check = |c: &str, want: Option<TaskState>| {
            let data = format!(
                r#"{{"instanceId":"a_b.instance-1","condition":"{c}","runSpecId":"/a/b","host":null,"runSpecVersion":"v","timestamp":"2017-07-19T17:35:15.661Z"}}"#
            );
            match one("instance_changed_event", &data) {
                Event::InstanceChanged { state, host, .. } => {
                    assert_eq!(state, want, "{c}");
                    assert_eq!(host, None);
                }
                e => panic!("{e:?}"),
            }
        };
        check("Running", Some(TaskState::Running));
        check("Provisioned", Some(TaskState::Staging));
        check("UnreachableInactive", Some(TaskState::Unreachable));
        check("Gone", Some(TaskState::Gone));
        check("Reserved", None);
    }

    #[test]
    fn json_event_type_wins_and_unknown_is_not_an_error() {
        let e = one("status_update_event", r#"{"eventType":"brand_new_event","x":1}"#);
        assert_eq!(e, Event::Unknown { event_type: "brand_new_event".into() });
        let e = one("", r#"{"eventType":"pod_created_event"}"#);
        assert_eq!(e, Event::Ignored { event_type: "pod_created_event".into() });
    }

    #[test]
    fn errors_name_the_event_and_field() {
        let err = parse(
            "status_update_event",
            r#"{"taskId":"t.1","taskStatus":"TASK_WAT","appId":"/a","timestamp":"2017-07-19T17:35:15.661Z"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("status_update_event") && err.contains("taskStatus"), "{err}");
        let err = parse("status_update_event", "{not json").unwrap_err().to_string();
        assert!(err.contains("status_update_event"), "{err}");
        let err = parse("app_terminated_event", r#"{"appId":"/a"}"#).unwrap_err().to_string();
        assert!(err.contains("timestamp"), "{err}");
    }

    #[test]
    fn unknown_terminated_events_are_terminal_facts() {
        // 1.3: keyed by task id with a Mesos state name.
        let e = one(
            "unknown_task_terminated_event",
            r#"{"taskId":"prod_web.0c1d2e3f-6f9a-11e8-a0c3-0242ac11000b","runSpecId":"/prod/web","status":"TASK_KILLED","timestamp":"2018-06-14T10:02:21.930Z"}"#,
        );
        let Event::TaskState { task_id, state, .. } = e else { panic!("{e:?}") };
        assert_eq!(
            (task_id.instance_id().as_str(), state),
            ("prod_web.marathon-0c1d2e3f-6f9a-11e8-a0c3-0242ac11000b", TaskState::Killed)
        );
        // A live state there is an error naming the field.
        let err = parse(
            "unknown_task_terminated_event",
            r#"{"taskId":"a.b","runSpecId":"/a","status":"TASK_RUNNING","timestamp":"2018-06-14T10:02:21.930Z"}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("status"), "{err}");
    }

    #[test]
    fn instance_health_null_is_none() {
        let e = one(
            "instance_health_changed_event",
            r#"{"instanceId":"a.instance-1","runSpecId":"/a","healthy":null,"timestamp":"2017-07-19T17:35:15.661Z"}"#,
        );
        assert!(matches!(e, Event::Health { healthy: None, .. }), "{e:?}");
    }

    #[test]
    fn app_ports_from_each_source() {
        let check = |json: &str, ports: &[(Option<&str>, Option<u16>)], ip: bool| {
            let spec = parse_app(json).unwrap();
            let got: Vec<_> = spec.ports.iter().map(|p| (p.name.as_deref(), p.container_port)).collect();
            assert_eq!(got, ports, "{json}");
            assert_eq!(spec.ip_per_task, ip, "{json}");
        };
        check(r#"{"id":"/a","portDefinitions":[{"port":0,"name":"http"}]}"#, &[(Some("http"), None)], false);
        check(
            r#"{"id":"/a","networks":[{"mode":"container","name":"dcos"}],"container":{"portMappings":[{"containerPort":8080,"name":"web"}]}}"#,
            &[(Some("web"), Some(8080))],
            true,
        );
        check(
            r#"{"id":"/a","container":{"docker":{"portMappings":[{"containerPort":80,"hostPort":0}]}}}"#,
            &[(None, Some(80))],
            false,
        );
        check(r#"{"id":"/a","ports":[10000,10001]}"#, &[(None, None), (None, None)], false);
        check(r#"{"id":"/a","ipAddress":{"networkName":"x"},"portDefinitions":[]}"#, &[], true);
        check(r#"{"id":"/a","ipAddress":null}"#, &[], false);
    }

    #[test]
    fn app_port_out_of_range_names_app_and_field() {
        let err = parse_app(r#"{"id":"/shop/web","portDefinitions":[{"port":70000}]}"#).unwrap_err().to_string();
        assert!(err.contains("/shop/web") && err.contains("portDefinitions.port"), "{err}");
        let err =
            parse_app(r#"{"id":"/a","container":{"portMappings":[{"containerPort":-1}]}}"#).unwrap_err().to_string();
        assert!(err.contains("containerPort"), "{err}");
        assert!(parse_app(r#"{"id":"/a","healthChecks":[{"port":65536}]}"#).is_err());
    }

    #[test]
    fn health_check_defaults() {
        let spec = parse_app(r#"{"id":"/a","healthChecks":[{"protocol":"TCP"}]}"#).unwrap();
        let h = &spec.health_checks[0];
        assert_eq!(h.protocol, HealthProtocol::Tcp);
        assert_eq!((h.interval, h.timeout), (Duration::from_secs(60), Duration::from_secs(20)));
        assert_eq!(h.port_index, None);
    }

    #[test]
    fn deployment_actions() {
        let data = r#"{"plan":{"id":"x","steps":[]},"currentStep":{"actions":[
            {"action":"StopApplication","app":"/a"},{"action":"RestartApplication","app":"/b"},
            {"action":"StartPod","pod":"/p"}]},"timestamp":"2017-07-19T17:35:15.661Z"}"#
            .replace('\n', "");
        let evs = parse("deployment_info", &data).unwrap();
        assert!(matches!(&evs[0], Event::AppStopped { app_id, .. } if app_id.as_str() == "/a"));
        assert!(matches!(&evs[1], Event::AppTouched { app_id, .. } if app_id.as_str() == "/b"));
        // A pod is an app to the core: its actions touch it the same way.
        assert!(matches!(&evs[2], Event::AppTouched { app_id, .. } if app_id.as_str() == "/p"));
        assert_eq!(evs.len(), 3);
    }
}
