//! The floor: the registrations Switchboard would make, sent straight to each
//! backend with nothing in between, one after another and N at a time. It is
//! the cost of the work itself, measured in the same run as everything else.
//!
//! Invariants:
//! - `jobs` is pure: Marathon's `/v2/apps?embed=apps.tasks` body → the wire
//!   requests, in the order a backend needs them (app-level objects before
//!   their instances). Hand-written shapes, independent of `backends/`, so the
//!   floor does not move when Switchboard's own clients change.
//! - Within a job requests are sequential; jobs may run concurrently.
//! - `undo_jobs` removes exactly what `jobs` created (real servers only; the
//!   simulators are cleared through their control API).

use std::time::{Duration, Instant};

use futures::StreamExt;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::sim::tap::SimBackend;

/// One HTTP request of the floor.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub method: Method,
    pub path: String,
    pub body: Option<Value>,
}

/// Requests that must go in order (one app's objects, or one instance).
pub type Job = Vec<Request>;

/// What one backend's floor took.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct FloorResult {
    pub writes: usize,
    pub sequential_s: f64,
    pub concurrent_s: f64,
    /// Sequential time per write, in milliseconds.
    pub per_op_ms: f64,
}

/// The floor failed: a backend refused or could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("{backend}: {method} {path} answered {status}: {body}")]
    Status { backend: SimBackend, method: Method, path: String, status: u16, body: String },
    #[error("{backend}: {method} {path}: {source}")]
    Http {
        backend: SimBackend,
        method: Method,
        path: String,
        #[source]
        source: reqwest::Error,
    },
}

/// Cluster name used by the floor's objects, apart from the daemon's.
const CLUSTER: &str = "floor";

/// `/shop/web` → `shop-web`, as Switchboard derives service names.
fn service_name(app_id: &str) -> String {
    app_id
        .trim_start_matches('/')
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

struct Instance {
    task_id: String,
    host: String,
    port: u64,
}

/// Serving tasks (running, healthy when the app has checks) of an app.
fn serving(app: &Value) -> Vec<Instance> {
    let checks = app["healthChecks"].as_array().is_some_and(|h| !h.is_empty());
    app["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["state"] == "TASK_RUNNING")
        .filter(|t| !checks || t["healthCheckResults"].as_array().is_some_and(|r| r.iter().all(|h| h["alive"] == true)))
        .filter_map(|t| {
            Some(Instance {
                task_id: t["id"].as_str()?.to_owned(),
                host: t["host"].as_str()?.to_owned(),
                port: t["ports"][0].as_u64()?,
            })
        })
        .collect()
}

fn req(method: Method, path: String, body: Option<Value>) -> Request {
    Request { method, path, body }
}

/// The requests that register every serving instance of `apps` (Marathon's
/// `/v2/apps?embed=apps.tasks` body) in `backend`.
pub fn jobs(apps: &Value, backend: SimBackend) -> Vec<Job> {
    let mut out = Vec::new();
    for app in apps["apps"].as_array().into_iter().flatten() {
        let Some(app_id) = app["id"].as_str() else { continue };
        let labels = &app["labels"];
        let name = service_name(app_id);
        let instances = serving(app);
        match backend {
            SimBackend::Consul if labels.get("consul").is_some() => {
                for i in &instances {
                    let body = json!({
                        "ID": format!("{}:{}", i.task_id, i.port), "Name": name, "Tags": ["switchboard"],
                        "Address": i.host, "Port": i.port,
                        "Meta": {"marathon_task_id": i.task_id, "marathon_app_id": app_id,
                                 "managed_by": "switchboard", "switchboard_cluster": CLUSTER},
                        "Checks": [{"Name": "marathon health", "HTTP": format!("http://{}:{}/health", i.host, i.port),
                                    "Interval": "10s", "Timeout": "2s"}],
                    });
                    out.push(vec![req(Method::PUT, "/v1/agent/service/register".into(), Some(body))]);
                }
            }
            SimBackend::Kong if labels.get("kong.hosts").is_some() || labels.get("kong.paths").is_some() => {
                if instances.is_empty() {
                    continue;
                }
                let upstream = format!("{name}.{CLUSTER}");
                let tags = json!(["switchboard", format!("cluster:{CLUSTER}"), format!("app:{name}")]);
                let hosts: Vec<&str> =
                    labels["kong.hosts"].as_str().unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
                let paths: Vec<&str> =
                    labels["kong.paths"].as_str().unwrap_or("").split(',').filter(|s| !s.is_empty()).collect();
                let mut job = vec![req(Method::PUT, format!("/upstreams/{upstream}"), Some(json!({"tags": tags})))];
                for i in &instances {
                    let body = json!({"target": format!("{}:{}", i.host, i.port), "weight": 100, "tags": tags});
                    job.push(req(Method::POST, format!("/upstreams/{upstream}/targets"), Some(body)));
                }
                let service = json!({"protocol": "http", "host": upstream, "port": 80, "path": "/", "tags": tags});
                job.push(req(Method::PUT, format!("/services/{upstream}"), Some(service)));
                let route = json!({"hosts": if hosts.is_empty() { Value::Null } else { json!(hosts) },
                                   "paths": if paths.is_empty() { Value::Null } else { json!(paths) },
                                   "strip_path": false, "preserve_host": true,
                                   "service": {"name": upstream}, "tags": tags});
                job.push(req(Method::PUT, format!("/routes/{upstream}"), Some(route)));
                out.push(job);
            }
            SimBackend::Vulcand if labels.get("vulcand.host").is_some() || labels.get("vulcand.route").is_some() => {
                if instances.is_empty() {
                    continue;
                }
                let id = format!("sb.{CLUSTER}.{name}~");
                let route = match labels["vulcand.route"].as_str() {
                    Some(r) => r.to_owned(),
                    None => format!("Host(\"{}\")", labels["vulcand.host"].as_str().unwrap_or("")),
                };
                let mut job = vec![req(
                    Method::POST,
                    "/v2/backends".into(),
                    Some(json!({"Backend": {"Id": id, "Type": "http"}})),
                )];
                for i in &instances {
                    let server = json!({"Server": {"Id": format!("{}:{}~", i.task_id, i.port),
                                                   "URL": format!("http://{}:{}", i.host, i.port)}});
                    job.push(req(Method::POST, format!("/v2/backends/{id}/servers"), Some(server)));
                }
                let frontend = json!({"Frontend": {"Id": id, "Type": "http", "BackendId": id, "Route": route}});
                job.push(req(Method::POST, "/v2/frontends".into(), Some(frontend)));
                out.push(job);
            }
            _ => {}
        }
    }
    out
}

/// The deletes that undo `jobs` (for real servers), each job reversed.
pub fn undo_jobs(jobs: &[Job], backend: SimBackend) -> Vec<Job> {
    jobs.iter()
        .map(|job| {
            job.iter()
                .rev()
                .filter_map(|r| {
                    let b = r.body.as_ref();
                    match backend {
                        SimBackend::Consul => {
                            let id = b?["ID"].as_str()?;
                            Some(req(Method::PUT, format!("/v1/agent/service/deregister/{id}"), None))
                        }
                        // Deleting the upstream takes its targets with it.
                        SimBackend::Kong if r.method == Method::PUT => Some(req(Method::DELETE, r.path.clone(), None)),
                        SimBackend::Kong => None,
                        SimBackend::Vulcand => {
                            let b = b?;
                            if let Some(s) = b.get("Server") {
                                return Some(req(Method::DELETE, format!("{}/{}", r.path, s["Id"].as_str()?), None));
                            }
                            if let Some(f) = b.get("Frontend") {
                                return Some(req(Method::DELETE, format!("/v2/frontends/{}", f["Id"].as_str()?), None));
                            }
                            let id = b["Backend"]["Id"].as_str()?;
                            Some(req(Method::DELETE, format!("/v2/backends/{id}"), None))
                        }
                    }
                })
                .collect()
        })
        .collect()
}

/// Percent-encodes what a path segment cannot carry as-is.
fn encode_path(path: &str) -> String {
    path.chars()
        .map(|c| match c {
            '~' | '/' | '.' | '-' | '_' | ':' => c.to_string(),
            c if c.is_ascii_alphanumeric() => c.to_string(),
            c => format!("%{:02X}", c as u32),
        })
        .collect()
}

async fn send(client: &reqwest::Client, base: &str, backend: SimBackend, r: &Request) -> Result<(), FloorError> {
    let path = encode_path(&r.path);
    let mut rb = client.request(r.method.clone(), format!("{}{}", base.trim_end_matches('/'), path));
    if let Some(b) = &r.body {
        rb = rb.json(b);
    }
    let resp = rb.send().await.map_err(|source| FloorError::Http {
        backend,
        method: r.method.clone(),
        path: r.path.clone(),
        source,
    })?;
    let status = resp.status().as_u16();
    // 404 on a delete: already gone, fine; 409 on a Kong target: already there.
    let fine = resp.status().is_success() || (r.method == Method::DELETE && status == 404) || status == 409;
    if !fine {
        let body = resp.text().await.unwrap_or_default();
        return Err(FloorError::Status { backend, method: r.method.clone(), path: r.path.clone(), status, body });
    }
    Ok(())
}

/// Sends every job to `base`, `concurrency` jobs at a time; returns the time taken.
pub async fn run(
    client: &reqwest::Client,
    base: &str,
    backend: SimBackend,
    jobs: &[Job],
    concurrency: usize,
) -> Result<Duration, FloorError> {
    let started = Instant::now();
    let mut results = futures::stream::iter(jobs.iter().map(|job| async move {
        for r in job {
            send(client, base, backend, r).await?;
        }
        Ok::<(), FloorError>(())
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some(r) = results.next().await {
        r?;
    }
    Ok(started.elapsed())
}

/// Writes in `jobs`.
pub fn write_count(jobs: &[Job]) -> usize {
    jobs.iter().map(Vec::len).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apps() -> Value {
        let task = |id: &str, port: u64, alive: bool| {
            json!({"id": id, "host": "10.0.2.11", "ports": [port], "state": "TASK_RUNNING",
                   "healthCheckResults": [{"alive": alive}]})
        };
        json!({"apps": [
            {"id": "/bench/app-00003", "labels": {"consul": "", "kong.hosts": "a.example.com", "vulcand.host": "a.internal"},
             "healthChecks": [{"protocol": "HTTP"}],
             "tasks": [task("t1", 31000, true), task("t2", 31001, true), task("t3", 31002, false)]},
            {"id": "/plain", "labels": {}, "tasks": [task("t4", 31003, true)]},
        ]})
    }

    #[test]
    fn one_request_per_instance_plus_app_objects() {
        let consul = jobs(&apps(), SimBackend::Consul);
        assert_eq!((consul.len(), write_count(&consul)), (2, 2), "unhealthy t3 and unlabelled /plain skipped");
        assert_eq!(consul[0][0].body.as_ref().unwrap()["ID"], "t1:31000");
        assert_eq!(consul[0][0].body.as_ref().unwrap()["Name"], "bench-app-00003");
        let kong = jobs(&apps(), SimBackend::Kong);
        assert_eq!((kong.len(), write_count(&kong)), (1, 5), "upstream, 2 targets, service, route");
        assert_eq!(kong[0][1].path, "/upstreams/bench-app-00003.floor/targets");
        let vulcand = jobs(&apps(), SimBackend::Vulcand);
        assert_eq!(write_count(&vulcand), 4, "backend, 2 servers, frontend");
        assert_eq!(vulcand[0][3].body.as_ref().unwrap()["Frontend"]["Route"], "Host(\"a.internal\")");
    }

    #[test]
    fn undo_reverses_each_job() {
        let undo = undo_jobs(&jobs(&apps(), SimBackend::Vulcand), SimBackend::Vulcand);
        let paths: Vec<&str> = undo[0].iter().map(|r| r.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "/v2/frontends/sb.floor.bench-app-00003~",
                "/v2/backends/sb.floor.bench-app-00003~/servers/t2:31001~",
                "/v2/backends/sb.floor.bench-app-00003~/servers/t1:31000~",
                "/v2/backends/sb.floor.bench-app-00003~"
            ]
        );
        let kong = undo_jobs(&jobs(&apps(), SimBackend::Kong), SimBackend::Kong);
        assert_eq!(kong[0].len(), 3, "route, service, upstream");
        let consul = undo_jobs(&jobs(&apps(), SimBackend::Consul), SimBackend::Consul);
        assert_eq!(consul[1][0].path, "/v1/agent/service/deregister/t2:31001");
    }
}
