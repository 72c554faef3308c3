//! Pure translation of an app spec plus one running task into backend-neutral
//! `Registration`s, following DESIGN.md's label contract.
//!
//! Invariants:
//! - No I/O, no clock. Same inputs, same output.
//! - All or nothing per app: a label Switchboard cannot honour makes the whole
//!   app fail with a `LabelError` naming the app and label; nothing is half
//!   registered, and other apps are unaffected.
//! - Routes (Kong, Vulcand) ride on the app's primary registration only (the
//!   first selected port), so each gateway publishes an app once.

use std::collections::{BTreeMap, BTreeSet};

use crate::model::{
    AppId, AppSpec, Check, HealthProtocol, PortSpec, Registration, Routes, TaskFacts, TaskId, TaskState, Timestamp,
};

/// Tag every Switchboard registration carries in Consul.
pub const OWNER_TAG: &str = "switchboard";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LabelOptions {
    /// Replaces `/` when deriving a service name from an app id (`-` or `.`).
    pub separator: char,
}

impl Default for LabelOptions {
    fn default() -> Self {
        LabelOptions { separator: '-' }
    }
}

/// A label (or app field) Switchboard cannot honour.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, serde::Serialize, serde::Deserialize)]
#[error("app {app_id}: label `{label}`: {reason}")]
pub struct LabelError {
    pub app_id: String,
    pub label: String,
    pub reason: String,
}

fn err(spec: &AppSpec, label: &str, reason: impl Into<String>) -> LabelError {
    LabelError { app_id: spec.id.to_string(), label: label.to_owned(), reason: reason.into() }
}

/// Whether the app opted into any backend at all.
pub fn opted_in(spec: &AppSpec) -> bool {
    spec.labels.contains_key("consul")
        || spec.ports.iter().any(|p| p.labels.contains_key("consul"))
        || spec.labels.keys().any(|k| k.starts_with("kong.") || k.starts_with("vulcand."))
}

/// Routes from the app-level labels, validated only as far as parsing goes
/// (each backend validates the values it publishes).
pub fn routes(spec: &AppSpec) -> Result<Routes, LabelError> {
    let list = |key: &str| -> Vec<String> {
        spec.labels
            .get(key)
            .map(|v| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default()
    };
    let kong_strip_path = match spec.labels.get("kong.strip_path").map(|s| s.trim()) {
        None => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(other) => {
            return Err(err(spec, "kong.strip_path", format!("expected true or false, got {other:?}")));
        }
    };
    let vulcand_route = match (spec.labels.get("vulcand.route"), spec.labels.get("vulcand.host")) {
        (Some(_), Some(_)) => {
            return Err(err(spec, "vulcand.host", "set either vulcand.route or vulcand.host, not both"));
        }
        (Some(route), None) => {
            let route = route.trim();
            if route.is_empty() {
                return Err(err(spec, "vulcand.route", "empty route expression"));
            }
            Some(route.to_owned())
        }
        (None, Some(host)) => {
            let host = host.trim();
            if host.is_empty() || host.contains('"') {
                return Err(err(spec, "vulcand.host", format!("invalid host {host:?}")));
            }
            Some(format!("Host(\"{host}\")"))
        }
        (None, None) => None,
    };
    let routes =
        Routes { kong_hosts: list("kong.hosts"), kong_paths: list("kong.paths"), kong_strip_path, vulcand_route };
    if kong_strip_path.is_some() && !routes.wants_kong() {
        return Err(err(spec, "kong.strip_path", "set without kong.hosts or kong.paths"));
    }
    Ok(routes)
}

fn is_explicit(value: &str) -> bool {
    let v = value.trim();
    !v.is_empty() && v != "true"
}

fn validate_service_name(spec: &AppSpec, label: &str, name: &str) -> Result<(), LabelError> {
    if name.is_empty() {
        return Err(err(spec, label, "service name is empty"));
    }
    if name.len() > 255 {
        return Err(err(spec, label, "service name longer than 255 characters"));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))) {
        return Err(err(spec, label, format!("service name {name:?} contains {c:?}; use [A-Za-z0-9._-]")));
    }
    if name.starts_with('-') || name.starts_with('.') || name.ends_with('.') {
        return Err(err(spec, label, format!("service name {name:?} must start and end with a letter or digit")));
    }
    Ok(())
}

/// Where the task serves the port at `index`: host and host port, or (for
/// IP-per-task apps without host ports) the task IP and container port.
///
/// The task's `ports` hold one element per port that has a host port, in
/// order: a port mapping without one (`no_host_port`) takes none, so the
/// element for `index` is found by counting the ports before it that do.
fn endpoint(spec: &AppSpec, task: &TaskFacts, index: usize) -> Result<(String, u16), LabelError> {
    if spec.pod.is_some() {
        return pod_endpoint(spec, task, index);
    }
    let port_spec: Option<&PortSpec> = spec.ports.get(index);
    let host_index = spec.ports.iter().take(index).filter(|p| !p.no_host_port).count();
    let host_port = if port_spec.is_some_and(|p| p.no_host_port) { None } else { task.ports.get(host_index).copied() };
    if let Some(port) = host_port
        && port != 0
    {
        if task.host.is_empty() || task.host == "unknown" {
            return Err(err(spec, "host", format!("task {} has no known host", task.task_id)));
        }
        return Ok((task.host.clone(), port));
    }
    if spec.ip_per_task || task.ports.is_empty() || port_spec.is_some_and(|p| p.no_host_port) {
        let ip = task.ip_addresses.first().ok_or_else(|| {
            err(
                spec,
                "ipAddresses",
                format!("task {} has neither a host port nor an IP for port {index}", task.task_id),
            )
        })?;
        let port = port_spec
            .and_then(|p| p.container_port)
            .filter(|p| *p != 0)
            .ok_or_else(|| err(spec, "portMappings", format!("port {index} has no host port and no container port")))?;
        return Ok((ip.clone(), port));
    }
    Err(err(spec, "ports", format!("task {} has no host port at index {index}", task.task_id)))
}

/// Where a pod instance serves its endpoint at `index` (of the pod's
/// flattened endpoints), as Marathon allocates it (PODS.md §2): with a
/// `hostPort` (host, `container/bridge`, or declared on a container network)
/// the agent host and the allocated host port; on a container network
/// without one, the instance's address and the `containerPort`. Anything
/// missing is a rejection naming the pod and the endpoint, never a guess.
fn pod_endpoint(spec: &AppSpec, task: &TaskFacts, index: usize) -> Result<(String, u16), LabelError> {
    let ep = spec.ports.get(index);
    let name = ep.and_then(|p| p.name.clone()).unwrap_or_else(|| index.to_string());
    let label = format!("endpoints[{name}]");
    let reject =
        |reason: String| err(spec, &label, format!("pod instance {}: endpoint {name:?} {reason}", task.task_id));
    if ep.is_some_and(|p| !p.no_host_port) {
        let host_index = spec.ports.iter().take(index).filter(|p| !p.no_host_port).count();
        let port = task
            .ports
            .get(host_index)
            .copied()
            .filter(|p| *p != 0)
            .ok_or_else(|| reject("has no allocated host port".into()))?;
        if task.host.is_empty() || task.host == "unknown" {
            return Err(reject("has a host port but the instance has no known agent host".into()));
        }
        return Ok((task.host.clone(), port));
    }
    let port = ep
        .and_then(|p| p.container_port)
        .filter(|p| *p != 0)
        .ok_or_else(|| reject("has neither a hostPort nor a containerPort".into()))?;
    let ip = task
        .ip_addresses
        .first()
        .ok_or_else(|| reject("is on a container network but the instance has no address there".into()))?;
    Ok((ip.clone(), port))
}

fn checks(spec: &AppSpec, task: &TaskFacts) -> Result<Vec<Check>, LabelError> {
    let mut out = Vec::new();
    for hc in &spec.health_checks {
        let (address, port) = match hc.port {
            Some(p) if p != 0 => {
                let (addr, _) = endpoint(spec, task, hc.port_index.unwrap_or(0))?;
                (addr, p)
            }
            _ => endpoint(spec, task, hc.port_index.unwrap_or(0))?,
        };
        let host = if address.contains(':') { format!("[{address}]") } else { address.clone() };
        let scheme = match hc.protocol {
            HealthProtocol::Http | HealthProtocol::MesosHttp => "http",
            HealthProtocol::Https | HealthProtocol::MesosHttps => "https",
            HealthProtocol::Tcp | HealthProtocol::MesosTcp => {
                out.push(Check::Tcp { address: format!("{host}:{port}"), interval: hc.interval, timeout: hc.timeout });
                continue;
            }
            HealthProtocol::Command | HealthProtocol::Other => continue,
        };
        let path = hc.path.as_deref().unwrap_or("/");
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        out.push(Check::Http {
            url: format!("{scheme}://{host}:{port}{path}"),
            interval: hc.interval,
            timeout: hc.timeout,
        });
    }
    Ok(out)
}

fn tags(app: &BTreeMap<String, String>, port: &BTreeMap<String, String>) -> Vec<String> {
    let set: BTreeSet<&str> = app
        .iter()
        .chain(port.iter())
        .filter(|(_, v)| v.trim() == "tag")
        .map(|(k, _)| k.as_str())
        .filter(|k| *k != OWNER_TAG)
        .collect();
    std::iter::once(OWNER_TAG.to_owned()).chain(set.into_iter().map(str::to_owned)).collect()
}

/// The registrations one running task of `spec` should have. Empty when the
/// app opted out.
pub fn registrations(
    spec: &AppSpec,
    task: &TaskFacts,
    healthy: Option<bool>,
    opts: &LabelOptions,
) -> Result<Vec<Registration>, LabelError> {
    if !opted_in(spec) {
        return Ok(Vec::new());
    }
    let routes = routes(spec)?;
    let app_consul = spec.labels.get("consul");
    let port_labelled: Vec<usize> =
        spec.ports.iter().enumerate().filter(|(_, p)| p.labels.contains_key("consul")).map(|(i, _)| i).collect();
    let consul = app_consul.is_some() || !port_labelled.is_empty();
    if spec.ports.is_empty() && task.ports.is_empty() {
        let label = if consul {
            "consul"
        } else if routes.wants_kong() {
            "kong.hosts"
        } else {
            "vulcand.route"
        };
        let what = if spec.pod.is_some() {
            "pod defines no endpoints to register"
        } else {
            "app defines no ports to register"
        };
        return Err(err(spec, label, what));
    }
    let selected = if port_labelled.is_empty() { vec![0] } else { port_labelled };
    let checks = checks(spec, task)?;
    let no_labels = BTreeMap::new();

    let mut out = Vec::with_capacity(selected.len());
    for (n, index) in selected.into_iter().enumerate() {
        let port_labels = spec.ports.get(index).map(|p| &p.labels).unwrap_or(&no_labels);
        let (label, service) = match (port_labels.get("consul"), app_consul) {
            (Some(v), _) if is_explicit(v) => ("consul", v.trim().to_owned()),
            (_, Some(v)) if is_explicit(v) => ("consul", v.trim().to_owned()),
            _ => ("consul", spec.id.derived_service_name(opts.separator)),
        };
        validate_service_name(spec, label, &service)?;
        let (address, port) = endpoint(spec, task, index)?;
        out.push(Registration {
            id: format!("{}:{}", task.task_id, port),
            service,
            app_id: spec.id.to_string(),
            task_id: task.task_id.to_string(),
            address,
            port,
            tags: tags(&spec.labels, port_labels),
            consul,
            checks: checks.clone(),
            healthy,
            has_health_checks: !spec.health_checks.is_empty(),
            routes: if n == 0 { routes.clone() } else { Routes::default() },
            host: task.host.clone(),
        });
    }
    Ok(out)
}

/// A service Marathon does not run, declared in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StaticService {
    pub name: String,
    /// `host:port` of each instance.
    pub instances: Vec<String>,
    pub labels: BTreeMap<String, String>,
}

/// Registrations for a static service: reconciled exactly like an app whose
/// instances are always running. App id `/<name>`; task id
/// `static.<name>.<host>_<port>`.
pub fn static_registrations(svc: &StaticService, opts: &LabelOptions) -> Result<Vec<Registration>, LabelError> {
    let bad = |label: &str, reason: String| LabelError {
        app_id: format!("static:{}", svc.name),
        label: label.to_owned(),
        reason,
    };
    let app_id = AppId::parse(&svc.name).map_err(|e| bad("name", e.to_string()))?;
    let spec = AppSpec {
        id: app_id,
        version: "static".to_owned(),
        labels: svc.labels.clone(),
        ports: vec![PortSpec::default()],
        health_checks: Vec::new(),
        ip_per_task: false,
        pod: None,
    };
    let mut out = Vec::new();
    for inst in &svc.instances {
        let (host, port) = inst
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok().filter(|p| *p != 0)?)))
            .filter(|(h, _)| !h.is_empty())
            .ok_or_else(|| bad("instances", format!("{inst:?} is not host:port")))?;
        let task_id =
            TaskId::parse(&format!("static.{}.{}_{}", svc.name.trim_matches('/').replace('/', "_"), host, port))
                .map_err(|e| bad("instances", e.to_string()))?;
        let task = TaskFacts {
            task_id,
            app_id: spec.id.clone(),
            host: host.to_owned(),
            ports: vec![port],
            ip_addresses: Vec::new(),
            state: TaskState::Running,
            version: spec.version.clone(),
            at: Timestamp(0),
        };
        out.extend(registrations(&spec, &task, None, opts).map(|regs| {
            regs.into_iter().map(|mut r| {
                r.app_id = format!("static:{}", svc.name);
                // Not a Marathon host: registered at the `--consul` agent.
                r.host = String::new();
                r
            })
        })?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::model::HealthCheckSpec;

    fn spec(labels: &[(&str, &str)], ports: Vec<PortSpec>) -> AppSpec {
        AppSpec {
            id: AppId::parse("/shop/web").unwrap(),
            version: "2017-07-19T17:34:41.967Z".into(),
            labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            ports,
            health_checks: Vec::new(),
            ip_per_task: false,
            pod: None,
        }
    }

    fn port(labels: &[(&str, &str)]) -> PortSpec {
        PortSpec { labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..Default::default() }
    }

    fn task(ports: &[u16]) -> TaskFacts {
        TaskFacts {
            task_id: TaskId::parse("shop_web.instance-1._app.1").unwrap(),
            app_id: AppId::parse("/shop/web").unwrap(),
            host: "10.0.2.148".into(),
            ports: ports.to_vec(),
            ip_addresses: vec!["172.17.0.5".into()],
            state: TaskState::Running,
            version: "2017-07-19T17:34:41.967Z".into(),
            at: Timestamp(1),
        }
    }

    /// (service, address:port, tags) of each registration.
    fn check(spec: AppSpec, task: TaskFacts, sep: char, want: &[(&str, &str, &[&str])]) {
        let regs = registrations(&spec, &task, None, &LabelOptions { separator: sep }).unwrap();
        let got: Vec<(String, String, Vec<String>)> =
            regs.iter().map(|r| (r.service.clone(), format!("{}:{}", r.address, r.port), r.tags.clone())).collect();
        let want: Vec<(String, String, Vec<String>)> = want
            .iter()
            .map(|(s, a, t)| (s.to_string(), a.to_string(), t.iter().map(|t| t.to_string()).collect()))
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn opt_out_gives_nothing() {
        check(spec(&[("owner", "team-a")], vec![port(&[])]), task(&[31000]), '-', &[]);
    }

    #[test]
    fn app_label_derives_name_and_takes_first_port() {
        check(
            spec(&[("consul", "")], vec![port(&[]), port(&[])]),
            task(&[31000, 31001]),
            '-',
            &[("shop-web", "10.0.2.148:31000", &["switchboard"])],
        );
        check(
            spec(&[("consul", "true")], vec![port(&[])]),
            task(&[31000]),
            '.',
            &[("shop.web", "10.0.2.148:31000", &["switchboard"])],
        );
        check(
            spec(&[("consul", "web")], vec![port(&[])]),
            task(&[31000]),
            '-',
            &[("web", "10.0.2.148:31000", &["switchboard"])],
        );
    }

    #[test]
    fn port_labels_select_ports_and_name_them() {
        let s = spec(
            &[("consul", "web"), ("public", "tag")],
            vec![port(&[("consul", "web-http"), ("http", "tag")]), port(&[]), port(&[("consul", "true")])],
        );
        check(
            s,
            task(&[31000, 31001, 31002]),
            '-',
            &[
                ("web-http", "10.0.2.148:31000", &["switchboard", "http", "public"]),
                ("web", "10.0.2.148:31002", &["switchboard", "public"]),
            ],
        );
        // Port-level label without an app-level one.
        let s = spec(&[], vec![port(&[]), port(&[("consul", "")])]);
        check(s, task(&[31000, 31001]), '-', &[("shop-web", "10.0.2.148:31001", &["switchboard"])]);
    }

    #[test]
    fn ip_per_task_uses_task_ip_and_container_port() {
        let mut s = spec(&[("consul", "")], vec![PortSpec { container_port: Some(8080), ..port(&[]) }]);
        s.ip_per_task = true;
        check(s, task(&[]), '-', &[("shop-web", "172.17.0.5:8080", &["switchboard"])]);
    }

    #[test]
    fn mappings_without_host_port_take_no_task_port() {
        // Container network: `admin` has no hostPort, so the task's one host
        // port belongs to `http` (docs/marathon.md, "Addresses": ports are not index-aligned).
        let mut s = spec(
            &[],
            vec![
                PortSpec { container_port: Some(9000), no_host_port: true, ..port(&[("consul", "admin")]) },
                PortSpec { container_port: Some(8080), ..port(&[("consul", "http")]) },
            ],
        );
        s.ip_per_task = true;
        check(
            s,
            task(&[31500]),
            '-',
            &[("admin", "172.17.0.5:9000", &["switchboard"]), ("http", "10.0.2.148:31500", &["switchboard"])],
        );
    }

    /// A pod spec of endpoints (name, containerPort, hostPort?) in one container.
    fn pod_spec(labels: &[(&str, &str)], endpoints: &[(&str, Option<u16>, bool)], container_net: bool) -> AppSpec {
        let ports: Vec<PortSpec> = endpoints
            .iter()
            .map(|(name, cp, host)| PortSpec {
                name: Some(name.to_string()),
                container_port: *cp,
                no_host_port: container_net && !host,
                ..port(&[("consul", name)])
            })
            .collect();
        let host_ports = ports.iter().filter(|p| !p.no_host_port).count();
        let mut s = spec(labels, ports);
        s.ip_per_task = container_net;
        s.pod = Some(crate::model::PodSpec {
            containers: vec![crate::model::PodContainer {
                name: "main".into(),
                endpoints: endpoints.len(),
                host_ports,
                health_checked: false,
            }],
        });
        s
    }

    fn pod_instance(ports: &[u16], ips: &[&str]) -> TaskFacts {
        TaskFacts {
            task_id: TaskId::parse("shop_web.instance-5c6a4cf0").unwrap(),
            ip_addresses: ips.iter().map(|s| s.to_string()).collect(),
            ..task(ports)
        }
    }

    #[test]
    fn pod_endpoints_at_the_addresses_marathon_allocates() {
        // Host (and bridge) networking: every endpoint on the agent's allocated host port.
        check(
            pod_spec(&[], &[("http", None, true), ("admin", Some(9000), true)], false),
            pod_instance(&[31000, 31001], &[]),
            '-',
            &[("http", "10.0.2.148:31000", &["switchboard"]), ("admin", "10.0.2.148:31001", &["switchboard"])],
        );
        // Container network: with a hostPort the host pair, without one the instance IP.
        check(
            pod_spec(&[], &[("admin", Some(9000), false), ("http", Some(8080), true)], true),
            pod_instance(&[31500], &["9.0.0.7"]),
            '-',
            &[("admin", "9.0.0.7:9000", &["switchboard"]), ("http", "10.0.2.148:31500", &["switchboard"])],
        );
        // Registration ids are the instance id and the endpoint's port.
        let regs = registrations(
            &pod_spec(&[], &[("http", Some(8080), false)], true),
            &pod_instance(&[], &["9.0.0.7"]),
            None,
            &LabelOptions::default(),
        )
        .unwrap();
        assert_eq!(regs[0].id, "shop_web.instance-5c6a4cf0:8080");
    }

    #[test]
    fn unreachable_pod_endpoints_are_rejections_naming_pod_and_endpoint() {
        let reject = |spec: AppSpec, inst: TaskFacts| {
            registrations(&spec, &inst, None, &LabelOptions::default()).unwrap_err().to_string()
        };
        let e = reject(pod_spec(&[], &[("admin", Some(9000), false)], true), pod_instance(&[], &[]));
        assert!(e.contains("/shop/web") && e.contains("\"admin\"") && e.contains("no address"), "{e}");
        let e = reject(pod_spec(&[], &[("admin", None, false)], true), pod_instance(&[], &["9.0.0.7"]));
        assert!(e.contains("neither a hostPort nor a containerPort"), "{e}");
        let e = reject(pod_spec(&[], &[("http", None, true)], false), pod_instance(&[], &[]));
        assert!(e.contains("no allocated host port"), "{e}");
    }

    #[test]
    fn ids_checks_and_routes() {
        let mut s = spec(
            &[("consul", ""), ("kong.hosts", "a.example.com, b.example.com"), ("vulcand.host", "web.local")],
            vec![port(&[("consul", "")]), port(&[("consul", "metrics")])],
        );
        s.health_checks = vec![
            HealthCheckSpec {
                protocol: HealthProtocol::MesosHttp,
                path: Some("/health".into()),
                port_index: Some(0),
                port: None,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(5),
            },
            HealthCheckSpec {
                protocol: HealthProtocol::Tcp,
                path: None,
                port_index: Some(1),
                port: None,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
            },
            HealthCheckSpec {
                protocol: HealthProtocol::Command,
                path: None,
                port_index: None,
                port: None,
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(2),
            },
        ];
        let regs = registrations(&s, &task(&[31000, 31001]), Some(true), &LabelOptions::default()).unwrap();
        assert_eq!(regs.len(), 2);
        assert_eq!(regs[0].id, "shop_web.instance-1._app.1:31000");
        assert_eq!(regs[1].id, "shop_web.instance-1._app.1:31001");
        assert_eq!(regs[0].routes.kong_hosts, vec!["a.example.com", "b.example.com"]);
        assert_eq!(regs[0].routes.vulcand_route.as_deref(), Some("Host(\"web.local\")"));
        assert_eq!(regs[1].routes, Routes::default());
        assert!(regs[0].has_health_checks && regs[0].healthy == Some(true));
        assert_eq!(
            regs[0].checks,
            vec![
                Check::Http {
                    url: "http://10.0.2.148:31000/health".into(),
                    interval: Duration::from_secs(10),
                    timeout: Duration::from_secs(5)
                },
                Check::Tcp {
                    address: "10.0.2.148:31001".into(),
                    interval: Duration::from_secs(10),
                    timeout: Duration::from_secs(2)
                },
            ]
        );
    }

    #[test]
    fn kong_only_app_is_not_in_consul() {
        let regs = registrations(
            &spec(&[("kong.paths", "/shop")], vec![port(&[])]),
            &task(&[31000]),
            None,
            &LabelOptions::default(),
        )
        .unwrap();
        assert_eq!(regs.len(), 1);
        assert!(!regs[0].consul);
        assert_eq!(regs[0].routes.kong_paths, vec!["/shop"]);
    }

    #[test]
    fn bad_labels_name_app_and_label() {
        let bad = |labels: &[(&str, &str)], want_label: &str| {
            let e = registrations(&spec(labels, vec![port(&[])]), &task(&[31000]), None, &LabelOptions::default())
                .unwrap_err();
            assert_eq!(e.app_id, "/shop/web");
            assert_eq!(e.label, want_label, "{e}");
        };
        bad(&[("consul", "web api")], "consul");
        bad(&[("consul", "web/api")], "consul");
        bad(&[("kong.hosts", "a.com"), ("kong.strip_path", "yes")], "kong.strip_path");
        bad(&[("vulcand.host", "a"), ("vulcand.route", "Host(\"a\")")], "vulcand.host");
        let e =
            registrations(&spec(&[("consul", "")], vec![]), &task(&[]), None, &LabelOptions::default()).unwrap_err();
        assert_eq!(e.label, "consul");
    }

    #[test]
    fn static_services() {
        let svc = StaticService {
            name: "marathon".into(),
            instances: vec!["10.0.12.10:8080".into()],
            labels: [("consul".to_string(), "marathon".to_string())].into(),
        };
        let regs = static_registrations(&svc, &LabelOptions::default()).unwrap();
        assert_eq!(regs.len(), 1);
        assert_eq!(regs[0].id, "static.marathon.10.0.12.10_8080:8080");
        assert_eq!(regs[0].service, "marathon");
        assert_eq!(regs[0].app_id, "static:marathon");
        let svc = StaticService { instances: vec!["nope".into()], ..svc };
        assert_eq!(static_registrations(&svc, &LabelOptions::default()).unwrap_err().label, "instances");
    }
}
