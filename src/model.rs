//! Domain words shared by every layer: ids, app specs, task facts and the
//! backend-neutral `Registration`.
//!
//! Invariants:
//! - Ids are parsed once, at the edge, into newtypes; nothing downstream
//!   re-normalises strings.
//! - No I/O and no Marathon wire JSON here: `marathon/` converts its wire
//!   structs into these types by hand.
//! - `serde` derives exist on purpose: they are the encoding of records in the
//!   sled store and of `--json` output, not a wire format of any backend.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since the Unix epoch, as Marathon stamps its events.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Parses Marathon's ISO-8601 UTC form, e.g. `2017-07-19T17:35:15.661Z`.
    pub fn parse(s: &str) -> Result<Timestamp, IdError> {
        let t = humantime::parse_rfc3339_weak(s).map_err(|_| IdError::Timestamp(s.to_owned()))?;
        let ms = t.duration_since(std::time::UNIX_EPOCH).map_err(|_| IdError::Timestamp(s.to_owned()))?.as_millis();
        Ok(Timestamp(i64::try_from(ms).map_err(|_| IdError::Timestamp(s.to_owned()))?))
    }

    pub fn from_system(t: std::time::SystemTime) -> Timestamp {
        let ms = t.duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis()).unwrap_or(0);
        Timestamp(i64::try_from(ms).unwrap_or(i64::MAX))
    }

    pub fn now() -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let t = std::time::UNIX_EPOCH + Duration::from_millis(self.0.max(0) as u64);
        write!(f, "{}", humantime::format_rfc3339_millis(t))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("empty app id")]
    EmptyApp,
    #[error("invalid app id {0:?}: must be a path like /group/app without spaces")]
    App(String),
    #[error("empty task id")]
    EmptyTask,
    #[error("invalid task id {0:?}")]
    Task(String),
    #[error("invalid timestamp {0:?}: expected ISO-8601 like 2017-07-19T17:35:15.661Z")]
    Timestamp(String),
}

/// A Marathon app id, always absolute (`/group/app`), never with a trailing `/`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AppId(String);

impl AppId {
    pub fn parse(s: &str) -> Result<AppId, IdError> {
        let trimmed = s.trim_end_matches('/');
        let body = trimmed.trim_start_matches('/');
        if body.is_empty() {
            return Err(IdError::EmptyApp);
        }
        if body.chars().any(|c| c.is_whitespace() || c.is_control()) || body.contains("//") {
            return Err(IdError::App(s.to_owned()));
        }
        Ok(AppId(format!("/{body}")))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The service name DESIGN.md derives from an app id: no leading `/`,
    /// `/` replaced by `separator`, lower-cased, restricted to `[a-z0-9-]`
    /// (plus the separator itself).
    pub fn derived_service_name(&self, separator: char) -> String {
        let mut out = String::with_capacity(self.0.len());
        for c in self.0.trim_start_matches('/').chars() {
            let c = c.to_ascii_lowercase();
            if c == '/' {
                out.push(separator);
            } else if c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == separator {
                out.push(c);
            } else {
                out.push('-');
            }
        }
        out
    }
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Mesos task id as Marathon writes it, in any generation (Marathon's
/// `core/task/Task.scala`, 1.1 – 1.10):
///
/// | generation | task id | instance id |
/// |---|---|---|
/// | apps 1.1 – 1.7 | `prod_web.<uuid>` (very old: `prod_web_<uuid>`) | `prod_web.marathon-<uuid>` |
/// | resident apps 1.5+ | `prod_web.<uuid>.<attempt>` | `prod_web.marathon-<uuid>` |
/// | apps 1.8+ | `prod_web.instance-<uuid>._app.<n>` | `prod_web.instance-<uuid>` |
/// | pods 1.4 – 1.7 | `pod.instance-<uuid>.<container>` | `pod.instance-<uuid>` |
/// | pods 1.8+ | `pod.instance-<uuid>.<container>.<n>` | `pod.instance-<uuid>` |
///
/// Events keyed by instance id (`instance_*`, 1.4+ health) and events keyed
/// by task id meet on the same `InstanceId`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TaskId(String);

/// A task id split into what Marathon encodes in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct TaskIdParts<'a> {
    /// Safe run spec id (`prod_web`).
    run_spec: &'a str,
    /// `instance-` or `marathon-` for instance-era ids; `None` for legacy ids.
    prefix: Option<&'a str>,
    uuid: &'a str,
    /// The relaunch counter: 1.8+ `._app.<n>`, a resident attempt, 0 when absent.
    incarnation: u64,
}

/// A segment of a uuid: no `.` and no `_` (Marathon's `[^_\.]+`).
fn uuid_like(s: &str) -> bool {
    !s.is_empty() && !s.contains(['.', '_'])
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn task_id_parts(id: &str) -> Option<TaskIdParts<'_>> {
    // Instance era: `<run spec>.(instance-|marathon-)<uuid>[<sep><container>[.<n>]]`.
    for prefix in ["instance-", "marathon-"] {
        let marker = format!(".{prefix}");
        if let Some(pos) = id.rfind(&marker) {
            let run_spec = &id[..pos];
            let rest = &id[pos + marker.len()..];
            let end = rest.find(['.', '_']).unwrap_or(rest.len());
            let (uuid, tail) = rest.split_at(end);
            if run_spec.is_empty() || !uuid_like(uuid) {
                continue;
            }
            // tail: "" (an instance id), ".<container>", "._app.<n>", ".<container>.<n>".
            let incarnation = match tail.rsplit_once('.') {
                Some((head, n)) if !head.is_empty() && all_digits(n) => n.parse().unwrap_or(0),
                _ => 0,
            };
            return Some(TaskIdParts { run_spec, prefix: Some(prefix), uuid, incarnation });
        }
    }
    // Resident apps: `<run spec>[._]<uuid>.<attempt>`.
    if let Some((head, attempt)) = id.rsplit_once('.')
        && all_digits(attempt)
        && let Some(pos) = head.rfind(['.', '_'])
        && pos > 0
        && uuid_like(&head[pos + 1..])
    {
        let incarnation = attempt.parse().unwrap_or(0);
        return Some(TaskIdParts { run_spec: &head[..pos], prefix: None, uuid: &head[pos + 1..], incarnation });
    }
    // Legacy: `<run spec>[._]<uuid>`.
    let pos = id.rfind(['.', '_'])?;
    if pos == 0 || !uuid_like(&id[pos + 1..]) {
        return None;
    }
    Some(TaskIdParts { run_spec: &id[..pos], prefix: None, uuid: &id[pos + 1..], incarnation: 0 })
}

impl TaskId {
    pub fn parse(s: &str) -> Result<TaskId, IdError> {
        if s.is_empty() {
            return Err(IdError::EmptyTask);
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control() || c == '/') {
            return Err(IdError::Task(s.to_owned()));
        }
        Ok(TaskId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The instance this task belongs to, as Marathon derives it: instance-era
    /// ids keep their `<run spec>.<prefix><uuid>`; legacy and resident ids map
    /// to `<run spec>.marathon-<uuid>`. An id of no known shape is its own
    /// instance.
    pub fn instance_id(&self) -> InstanceId {
        match task_id_parts(&self.0) {
            Some(p) => InstanceId(format!("{}.{}{}", p.run_spec, p.prefix.unwrap_or("marathon-"), p.uuid)),
            None => InstanceId(self.0.clone()),
        }
    }

    /// The container of a pod task (`<pod>.instance-<uuid>.<container>[.<n>]`,
    /// Marathon 1.4+), or `None` for an app task (1.8+ `._app`, ≤1.7 `$anon`)
    /// and for ids of any other shape. An instance id names no container.
    pub fn pod_container(&self) -> Option<&str> {
        let pos = self.0.rfind(".instance-")?;
        let rest = &self.0[pos + ".instance-".len()..];
        let (uuid, tail) = rest.split_once('.')?;
        let container = tail.split('.').next().unwrap_or("");
        (pos > 0 && uuid_like(uuid) && !container.is_empty() && container != "_app" && container != "$anon")
            .then_some(container)
    }

    /// Which launch of its instance this task is: `n` of a 1.8+ `._app.<n>`
    /// or a pod's `.<container>.<n>`, the attempt of a resident task, else 0.
    /// A relaunch in the same instance has a greater incarnation.
    pub fn incarnation(&self) -> u64 {
        task_id_parts(&self.0).map(|p| p.incarnation).unwrap_or(0)
    }
}

impl fmt::Display for TaskId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether a registration's task id is a pod instance id: pod registrations
/// carry the instance id (`<pod>.instance-<uuid>`, nothing after the uuid),
/// app registrations always a task id (`._app.<n>` in 1.8+, no `instance-`
/// before).
pub fn is_pod_instance_id(task_id: &str) -> bool {
    task_id.rfind(".instance-").is_some_and(|pos| pos > 0 && uuid_like(&task_id[pos + ".instance-".len()..]))
}

/// A Marathon instance id (`prod_web.instance-<uuid>`, `prod_web.marathon-<uuid>`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct InstanceId(String);

impl InstanceId {
    /// Accepts an instance id, or a task id (which names its instance).
    pub fn parse(s: &str) -> Result<InstanceId, IdError> {
        Ok(TaskId::parse(s)?.instance_id())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for InstanceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Mesos task states as Marathon names them in `taskStatus` / `state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum TaskState {
    Staging,
    Starting,
    Running,
    Unreachable,
    Killing,
    Finished,
    Failed,
    Killed,
    Lost,
    Error,
    Dropped,
    Gone,
    GoneByOperator,
    Unknown,
}

impl TaskState {
    /// `TASK_RUNNING` → `Running`. Unknown names give `None` (the caller
    /// counts and skips them).
    pub fn parse(s: &str) -> Option<TaskState> {
        Some(match s {
            "TASK_STAGING" => TaskState::Staging,
            "TASK_STARTING" => TaskState::Starting,
            "TASK_RUNNING" => TaskState::Running,
            "TASK_UNREACHABLE" => TaskState::Unreachable,
            "TASK_KILLING" => TaskState::Killing,
            "TASK_FINISHED" => TaskState::Finished,
            "TASK_FAILED" => TaskState::Failed,
            "TASK_KILLED" => TaskState::Killed,
            "TASK_LOST" => TaskState::Lost,
            "TASK_ERROR" => TaskState::Error,
            "TASK_DROPPED" => TaskState::Dropped,
            "TASK_GONE" => TaskState::Gone,
            "TASK_GONE_BY_OPERATOR" => TaskState::GoneByOperator,
            "TASK_UNKNOWN" => TaskState::Unknown,
            _ => return None,
        })
    }

    pub fn as_mesos_str(self) -> &'static str {
        match self {
            TaskState::Staging => "TASK_STAGING",
            TaskState::Starting => "TASK_STARTING",
            TaskState::Running => "TASK_RUNNING",
            TaskState::Unreachable => "TASK_UNREACHABLE",
            TaskState::Killing => "TASK_KILLING",
            TaskState::Finished => "TASK_FINISHED",
            TaskState::Failed => "TASK_FAILED",
            TaskState::Killed => "TASK_KILLED",
            TaskState::Lost => "TASK_LOST",
            TaskState::Error => "TASK_ERROR",
            TaskState::Dropped => "TASK_DROPPED",
            TaskState::Gone => "TASK_GONE",
            TaskState::GoneByOperator => "TASK_GONE_BY_OPERATOR",
            TaskState::Unknown => "TASK_UNKNOWN",
        }
    }

    /// Terminal states are final: nothing brings such a task back.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            TaskState::Finished
                | TaskState::Failed
                | TaskState::Killed
                | TaskState::Lost
                | TaskState::Error
                | TaskState::Dropped
                | TaskState::Gone
                | TaskState::GoneByOperator
                | TaskState::Unknown
        )
    }

    /// Only a running task takes traffic (`TASK_KILLING` drains,
    /// `TASK_UNREACHABLE` is not serving but may come back).
    pub fn is_serving(self) -> bool {
        self == TaskState::Running
    }
}

impl fmt::Display for TaskState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_mesos_str())
    }
}

/// Health-check protocols Marathon knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum HealthProtocol {
    Http,
    Https,
    Tcp,
    MesosHttp,
    MesosHttps,
    MesosTcp,
    Command,
    Other,
}

impl HealthProtocol {
    pub fn parse(s: &str) -> HealthProtocol {
        match s {
            "HTTP" => HealthProtocol::Http,
            "HTTPS" => HealthProtocol::Https,
            "TCP" => HealthProtocol::Tcp,
            "MESOS_HTTP" => HealthProtocol::MesosHttp,
            "MESOS_HTTPS" => HealthProtocol::MesosHttps,
            "MESOS_TCP" => HealthProtocol::MesosTcp,
            "COMMAND" => HealthProtocol::Command,
            _ => HealthProtocol::Other,
        }
    }
}

/// One health check of an app definition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheckSpec {
    pub protocol: HealthProtocol,
    /// HTTP path, e.g. `/health`.
    pub path: Option<String>,
    /// Index into the app's ports; Marathon's default is 0.
    pub port_index: Option<usize>,
    /// A fixed port instead of `port_index`.
    pub port: Option<u16>,
    pub interval: Duration,
    pub timeout: Duration,
}

/// One port definition (host networking) or port mapping (bridge/container).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct PortSpec {
    pub name: Option<String>,
    pub labels: BTreeMap<String, String>,
    /// `containerPort` of a port mapping; used for IP-per-task apps.
    pub container_port: Option<u16>,
    /// A port mapping without `hostPort` on a container network: it takes no
    /// element of the task's `ports` and is reached at the task IP and its
    /// container port (Marathon's `NetworkInfo.computePortAssignments`).
    #[serde(default)]
    pub no_host_port: bool,
}

/// The parts of a Marathon app definition Switchboard uses, for one version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub id: AppId,
    /// App version timestamp string as Marathon gives it.
    pub version: String,
    pub labels: BTreeMap<String, String>,
    /// Port definitions, or the container's port mappings, in Marathon order
    /// (the order of a task's `ports`).
    pub ports: Vec<PortSpec>,
    pub health_checks: Vec<HealthCheckSpec>,
    /// True when tasks get their own IP (container networking, or the legacy
    /// `ipAddress` field) so the task IP and container port are used when a
    /// task has no host ports.
    pub ip_per_task: bool,
    /// Set when this spec is a Marathon pod (1.4+): `id` is the pod id,
    /// `labels` the pod labels, and `ports` the endpoints of all containers,
    /// flattened in container order (an endpoint's `name`, `labels` and
    /// `containerPort`; `no_host_port` when it has no `hostPort`).
    /// (`default` reads specs stored before pods; never `skip_serializing_if`:
    /// the store encodes specs with postcard, which needs every field.)
    #[serde(default)]
    pub pod: Option<PodSpec>,
}

impl AppSpec {
    /// What to call this run spec in messages: `pod` or `app`.
    pub fn kind(&self) -> &'static str {
        if self.pod.is_some() { "pod" } else { "app" }
    }
}

/// The containers of a pod, in definition order: how the pod's endpoints
/// (`AppSpec::ports`) and a pod instance's container tasks line up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodSpec {
    pub containers: Vec<PodContainer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PodContainer {
    /// Container name: the `<container>` of its task ids.
    pub name: String,
    /// How many of `AppSpec::ports` (in order, after the previous
    /// containers') are this container's endpoints.
    pub endpoints: usize,
    /// How many of those declare a `hostPort`: the length of this container
    /// task's allocated `ports`, which pair with them by position.
    pub host_ports: usize,
    /// Whether the container has a (Mesos) health check.
    pub health_checked: bool,
}

/// What Marathon says about one task, as folded from events or a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskFacts {
    pub task_id: TaskId,
    pub app_id: AppId,
    /// Agent host name or IP; `unknown` while staging.
    pub host: String,
    /// Host ports in port-definition order; may be empty while staging.
    pub ports: Vec<u16>,
    /// Task IPs (IP-per-task), empty in host networking on old versions.
    pub ip_addresses: Vec<String>,
    pub state: TaskState,
    /// App version this task runs.
    pub version: String,
    /// When Marathon stamped the fact.
    pub at: Timestamp,
}

/// One backend-neutral registration: a service instance at an address.
///
/// Every backend sees only these; none sees Marathon types.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Registration {
    /// `<task id>:<port>`: unique, stable, and the Consul service ID.
    pub id: String,
    /// Service name after label and derivation rules.
    pub service: String,
    /// Marathon app id (or the static service's name) as plain text.
    pub app_id: String,
    /// Marathon task id (or `static:<name>:<addr>` for static services).
    pub task_id: String,
    pub address: String,
    pub port: u16,
    /// Consul tags, `switchboard` first, the rest sorted.
    pub tags: Vec<String>,
    /// Whether the app opted into Consul (`consul` label on app or port).
    pub consul: bool,
    pub checks: Vec<Check>,
    /// Marathon's view of health: `None` when the app has no health checks
    /// or no result is known yet.
    pub healthy: Option<bool>,
    /// Whether the app defines health checks (for gating on backends that
    /// must only route to healthy instances).
    pub has_health_checks: bool,
    /// App-level routes, set on the app's primary registration only (its
    /// first selected port) so an app is published once per gateway.
    pub routes: Routes,
    /// The host the task runs on (the Consul agent's node in per-host mode),
    /// which `address` need not be (IP-per-task). Empty for static services
    /// and for entries recorded before it existed: the `--consul` agent.
    /// Backends never compare it in `same` (a task never changes host).
    #[serde(default)]
    pub host: String,
}

/// A health check to carry over to a backend that runs checks (Consul).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Check {
    /// Full URL, e.g. `http://10.0.2.148:31565/health`.
    Http { url: String, interval: Duration, timeout: Duration },
    /// `host:port`.
    Tcp { address: String, interval: Duration, timeout: Duration },
}

/// App-level routing labels, unvalidated beyond parsing; each backend
/// validates what it publishes.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct Routes {
    /// `kong.hosts`, comma-separated in the label.
    pub kong_hosts: Vec<String>,
    /// `kong.paths`, comma-separated in the label.
    pub kong_paths: Vec<String>,
    /// `kong.strip_path`; `None` when not set.
    pub kong_strip_path: Option<bool>,
    /// `vulcand.route` as given, or `Host("<vulcand.host>")`.
    pub vulcand_route: Option<String>,
}

impl Routes {
    pub fn wants_kong(&self) -> bool {
        !self.kong_hosts.is_empty() || !self.kong_paths.is_empty()
    }
    pub fn wants_vulcand(&self) -> bool {
        self.vulcand_route.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_ids_are_absolute() {
        assert_eq!(AppId::parse("shop/web").unwrap().as_str(), "/shop/web");
        assert_eq!(AppId::parse("/shop/web/").unwrap().as_str(), "/shop/web");
        assert!(AppId::parse("/").is_err());
        assert!(AppId::parse("/a b").is_err());
    }

    #[test]
    fn derived_names() {
        let check = |id: &str, sep: char, want: &str| {
            assert_eq!(AppId::parse(id).unwrap().derived_service_name(sep), want, "{id}");
        };
        check("/shop/web", '-', "shop-web");
        check("/Shop/Web_API", '-', "shop-web-api");
        check("/shop/web", '.', "shop.web");
        check("/a.b/c", '-', "a-b-c");
    }

    #[test]
    fn instance_ids_from_task_ids() {
        // (task or instance id, instance id, incarnation) in every generation.
        let check = |task: &str, inst: &str, n: u64| {
            let id = TaskId::parse(task).unwrap();
            assert_eq!((id.instance_id().as_str(), id.incarnation()), (inst, n), "{task}");
            // An instance id is its own instance.
            assert_eq!(InstanceId::parse(inst).unwrap().as_str(), inst, "{inst}");
        };
        let uuid = "0c1d2e3f-6f9a-11e8-a0c3-0242ac11000b";
        check(&format!("prod_web.{uuid}"), &format!("prod_web.marathon-{uuid}"), 0);
        check(&format!("prod_web_{uuid}"), &format!("prod_web.marathon-{uuid}"), 0);
        check(&format!("prod_web.{uuid}.3"), &format!("prod_web.marathon-{uuid}"), 3);
        check(&format!("prod_web.instance-{uuid}._app.1"), &format!("prod_web.instance-{uuid}"), 1);
        check(&format!("prod_web.instance-{uuid}._app.12"), &format!("prod_web.instance-{uuid}"), 12);
        check(&format!("prod_cache.instance-{uuid}.redis"), &format!("prod_cache.instance-{uuid}"), 0);
        check(&format!("prod_cache.instance-{uuid}.redis.2"), &format!("prod_cache.instance-{uuid}"), 2);
        check(&format!("prod_web.marathon-{uuid}"), &format!("prod_web.marathon-{uuid}"), 0);
        // App ids with dots keep them in the safe id.
        check(&format!("a.b_c.{uuid}"), &format!("a.b_c.marathon-{uuid}"), 0);
        // No known shape: its own instance.
        check("weird", "weird", 0);
    }

    #[test]
    fn pod_containers_from_task_ids() {
        let uuid = "5c6a4cf0-5ec5-11ea-8f4e-0242ac110003";
        let check = |task: String, want: Option<&str>| {
            assert_eq!(TaskId::parse(&task).unwrap().pod_container(), want, "{task}");
        };
        check(format!("prod_shop.instance-{uuid}.web.1"), Some("web"));
        check(format!("prod_shop.instance-{uuid}.web"), Some("web"));
        check(format!("prod_shop.instance-{uuid}"), None);
        check(format!("prod_web.instance-{uuid}._app.1"), None);
        check(format!("prod_web.instance-{uuid}.$anon"), None);
        check(format!("prod_web.{uuid}"), None);
        check(format!("prod_web.marathon-{uuid}"), None);
    }

    #[test]
    fn timestamps_parse_marathon_form() {
        let t = Timestamp::parse("2017-07-19T17:35:15.661Z").unwrap();
        assert_eq!(t.0, 1_500_485_715_661);
        assert_eq!(t.to_string(), "2017-07-19T17:35:15.661Z");
        assert!(Timestamp::parse("yesterday").is_err());
    }

    #[test]
    fn terminal_states() {
        assert!(TaskState::Killed.is_terminal());
        assert!(!TaskState::Unreachable.is_terminal());
        assert!(!TaskState::Killing.is_terminal());
        assert!(TaskState::Running.is_serving());
        assert_eq!(TaskState::parse("TASK_GONE_BY_OPERATOR"), Some(TaskState::GoneByOperator));
        assert_eq!(TaskState::parse("TASK_WAT"), None);
    }
}
