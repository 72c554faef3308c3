//! The showcase's promises checked through Switchboard's own code: the
//! Switchboard config Terraform renders is accepted by the config loader, and
//! every app in `specs/` yields exactly the registrations `specs/README.md`
//! documents for its sample task.
//!
//! Invariants:
//! - The expected registrations live in `specs/README.md` only (the table
//!   after `<!-- registrations`); this file holds no second copy.
//! - The sample task is the one `specs/README.md` describes: agent
//!   10.0.12.21, host ports 31000.., task IP 172.17.0.5 for IP-per-task apps.
//! - `specs/switchboard.json` (Switchboard itself on Marathon) is checked
//!   against README's "Run Switchboard on Marathon" and the Dockerfile, and
//!   the packaged config example (`dist/`) is accepted by the config loader.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use switchboard::config::FileConfig;
use switchboard::labels::{LabelOptions, registrations};
use switchboard::marathon::event::parse_app;
use switchboard::model::{AppSpec, Registration, TaskFacts, TaskId, TaskState, Timestamp};

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn rendered_config() -> String {
    let path = root().join("terraform/templates/switchboard.toml.tftpl");
    let mut out = std::fs::read_to_string(&path).expect("switchboard.toml.tftpl exists");
    for (k, v) in common::sample_config_vars() {
        out = out.replace(&format!("${{{k}}}"), v);
    }
    assert!(!out.contains("${") && !out.contains("%{"), "unrendered template parts:\n{out}");
    out
}

#[test]
fn rendered_showcase_config_is_accepted_by_switchboard() {
    let toml = rendered_config();
    if let Err(e) = FileConfig::from_toml_str(&toml) {
        panic!("Switchboard rejects the showcase config: {e}\n{toml}");
    }
}

#[test]
fn a_typo_in_the_showcase_config_would_be_caught() {
    // Guards the test above: the loader is strict, so "accepted" means something.
    let toml = format!("kong_forward_too = \"http://10.0.12.30:8181\"\n{}", rendered_config());
    let err = FileConfig::from_toml_str(&toml).expect_err("unknown key must be rejected");
    assert!(err.to_string().contains("kong_forward_too"), "error should name the key: {err}");
}

/// One row of the README table, or one registration, in comparable form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Row {
    id: String,
    service: String,
    address: String,
    tags: Vec<String>,
    kong_hosts: Vec<String>,
    kong_paths: Vec<String>,
    vulcand_route: Option<String>,
}

fn list(cell: &str) -> Vec<String> {
    cell.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

/// The registrations table of specs/README.md: spec file → rows (empty for
/// a `(none)` row).
fn documented_registrations() -> BTreeMap<String, Vec<Row>> {
    let text = std::fs::read_to_string(root().join("specs/README.md")).expect("specs/README.md");
    let start = text.find("<!-- registrations").expect("registrations table marker in specs/README.md");
    let mut out: BTreeMap<String, Vec<Row>> = BTreeMap::new();
    let mut header_seen = false;
    for line in text[start..].lines().skip(1) {
        let line = line.trim();
        if !line.starts_with('|') {
            if header_seen {
                break;
            }
            continue;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        if !header_seen {
            assert_eq!(cells.first(), Some(&"spec"), "table header first: {line}");
            header_seen = true;
            continue;
        }
        if cells.iter().all(|c| c.chars().all(|ch| ch == '-')) {
            continue;
        }
        assert_eq!(cells.len(), 8, "8 cells per row: {line}");
        let entry = out.entry(cells[0].to_owned()).or_default();
        if cells[1] == "(none)" {
            continue;
        }
        entry.push(Row {
            id: cells[1].to_owned(),
            service: cells[2].to_owned(),
            address: cells[3].to_owned(),
            tags: list(cells[4]),
            kong_hosts: list(cells[5]),
            kong_paths: list(cells[6]),
            vulcand_route: (!cells[7].is_empty()).then(|| cells[7].to_owned()),
        });
    }
    assert!(!out.is_empty(), "no rows in the registrations table");
    out
}

/// The sample task of specs/README.md for an app.
fn sample_task(spec: &AppSpec) -> TaskFacts {
    let name = spec.id.as_str().trim_start_matches('/').replace('/', "_");
    let task_id = TaskId::parse(&format!("{name}.instance-1._app.1")).expect("valid task id");
    let (ports, ip) = if spec.ip_per_task && spec.ports.iter().all(|p| p.container_port.is_some()) {
        (Vec::new(), "172.17.0.5")
    } else {
        let n = spec.ports.len().max(1);
        ((0..n).map(|i| 31000 + i as u16).collect(), "10.0.12.21")
    };
    TaskFacts {
        task_id,
        app_id: spec.id.clone(),
        host: "10.0.12.21".to_owned(),
        ports,
        ip_addresses: vec![ip.to_owned()],
        state: TaskState::Running,
        version: spec.version.clone(),
        at: Timestamp(1_700_000_000_000),
    }
}

fn row(r: &Registration) -> Row {
    Row {
        id: r.id.clone(),
        service: r.service.clone(),
        address: format!("{}:{}", r.address, r.port),
        tags: r.tags.clone(),
        kong_hosts: r.routes.kong_hosts.clone(),
        kong_paths: r.routes.kong_paths.clone(),
        vulcand_route: r.routes.vulcand_route.clone(),
    }
}

fn spec_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join("specs"))
        .expect("specs/ exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().and_then(|e| e.to_str()) == Some("json"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_spec_yields_the_registrations_its_readme_documents() {
    let documented = documented_registrations();
    let files = spec_files();
    assert!(files.len() >= 4, "expected at least 4 specs, found {files:?}");
    for path in &files {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let json = std::fs::read_to_string(path).expect("readable spec");
        let spec = parse_app(&json).unwrap_or_else(|e| panic!("{name} is not a Marathon app definition: {e}"));
        let task = sample_task(&spec);
        let regs = registrations(&spec, &task, None, &LabelOptions::default())
            .unwrap_or_else(|e| panic!("{name}: labels rejected: {e}"));
        let mut got: Vec<Row> = regs.iter().map(row).collect();
        got.sort();
        let mut want =
            documented.get(&name).unwrap_or_else(|| panic!("{name} has no row in the specs/README.md table")).clone();
        want.sort();
        assert_eq!(got, want, "{name}: registrations differ from specs/README.md");
    }
    // And the README documents no spec that does not exist.
    for name in documented.keys() {
        assert!(root().join("specs").join(name).is_file(), "README documents missing spec {name}");
    }
}

#[test]
fn every_registration_is_owned_by_switchboard_and_consul_opted_in() {
    for path in spec_files() {
        let json = std::fs::read_to_string(&path).expect("readable spec");
        let spec = parse_app(&json).expect("parses (see the test above)");
        let task = sample_task(&spec);
        for r in registrations(&spec, &task, None, &LabelOptions::default()).expect("labels valid") {
            assert_eq!(r.tags.first().map(String::as_str), Some("switchboard"), "{}", path.display());
            assert!(r.consul, "{}: every documented registration opted into Consul", path.display());
            assert_eq!(r.task_id, task.task_id.as_str());
        }
    }
}

/// `specs/switchboard.json`: Switchboard itself as a Marathon app, as README's
/// "Run Switchboard on Marathon" describes it.
#[test]
fn switchboard_runs_on_marathon_as_two_ha_replicas_of_its_image() {
    let text = std::fs::read_to_string(root().join("specs/switchboard.json")).expect("specs/switchboard.json");
    let app: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let spec = parse_app(&text).expect("a Marathon app definition");
    assert_eq!(spec.id.as_str(), "/switchboard");
    assert_eq!(app["instances"], 2, "two replicas: one leader, one warm standby");

    let args: Vec<&str> = app["args"].as_array().expect("args").iter().filter_map(|a| a.as_str()).collect();
    assert_eq!(args.first(), Some(&"run"), "the image's entrypoint is `switchboard`: {args:?}");
    assert!(args.contains(&"--ha"), "{args:?}");
    let flag = |name: &str| args.iter().position(|a| *a == name).and_then(|i| args.get(i + 1)).copied();
    assert_eq!(flag("--listen"), Some("0.0.0.0:9102"), "the status port must be reachable from the agent");
    let data_dir = flag("--data-dir").expect("--data-dir");

    // Marathon and the backends from the environment.
    let env = app["env"].as_object().expect("env");
    for key in ["SWITCHBOARD_MARATHON_URL", "SWITCHBOARD_CONSUL_URL", "SWITCHBOARD_KONG_URL", "SWITCHBOARD_VULCAND_URL"]
    {
        let v = env.get(key).and_then(|v| v.as_str()).unwrap_or_else(|| panic!("env lacks {key}"));
        url::Url::parse(v).unwrap_or_else(|e| panic!("{key}={v}: {e}"));
    }
    assert!(!env.keys().any(|k| k.contains("TOKEN") || k.contains("AUTH")), "no secrets in the app definition");

    // The status port, and the checks on it.
    let ports = app["container"]["portMappings"].as_array().expect("portMappings");
    assert_eq!(ports[0]["containerPort"], 9102);
    let port_name = ports[0]["name"].as_str().expect("a named port");
    let health = &app["healthChecks"][0];
    assert_eq!((health["path"].as_str(), health["portIndex"].as_u64()), (Some("/health"), Some(0)));
    let ready = &app["readinessChecks"][0];
    assert_eq!((ready["path"].as_str(), ready["portName"].as_str()), (Some("/ready"), Some(port_name)));
    assert_eq!(ready["httpStatusCodesForReady"], serde_json::json!([200]));

    // Never more replicas than `instances` (no third campaigner during an
    // upgrade), and never fewer than one serving.
    let up = &app["upgradeStrategy"];
    let n = app["instances"].as_f64().expect("instances");
    assert_eq!(up["maximumOverCapacity"].as_f64(), Some(0.0), "an upgrade must not start a third replica");
    let min = up["minimumHealthCapacity"].as_f64().expect("minimumHealthCapacity");
    assert!((min * n).ceil() >= 1.0 && min < 1.0, "one replica keeps running while the other is replaced: {min}");

    // The data dir outlives the task: a host path, one replica per host.
    let volumes = app["container"]["volumes"].as_array().expect("volumes");
    assert!(
        volumes.iter().any(|v| v["containerPath"] == data_dir && v["mode"] == "RW" && v["hostPath"].is_string()),
        "the data dir {data_dir} is a host path: {volumes:?}"
    );
    assert_eq!(app["constraints"], serde_json::json!([["hostname", "UNIQUE"]]), "two replicas never share a data dir");

    // Resources from BENCHMARKS.md: peak RSS 604 MiB at 10,000 instances, about one core in an event storm.
    assert!(app["mem"].as_f64().is_some_and(|m| m >= 604.0 * 1.2), "mem leaves headroom over the measured peak");
    assert!(app["cpus"].as_f64().is_some_and(|c| c >= 1.0));

    // The image is the one the Dockerfile builds (its entrypoint and port).
    let dockerfile = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    assert!(dockerfile.contains("ENTRYPOINT [\"/usr/local/bin/switchboard\"]"), "Dockerfile's entrypoint");
    assert!(dockerfile.contains(&format!("VOLUME [\"{data_dir}\"]")), "the image's volume is the data dir");
    assert!(dockerfile.contains("EXPOSE 9102"));
}

#[test]
fn the_packaged_config_example_is_accepted_by_switchboard() {
    let text = std::fs::read_to_string(root().join("dist/switchboard.toml.example")).expect("config example");
    if let Err(e) = FileConfig::from_toml_str(&text) {
        panic!("Switchboard rejects dist/switchboard.toml.example: {e}");
    }
}
