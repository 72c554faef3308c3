//! Every Marathon pod sample in `tests/fixtures/marathon-pods/` (Marathon
//! 1.10, from `reference/marathon/PODS.md`) goes through the parsers a real
//! deployment uses, with the facts a user would check asserted on each; the
//! older generations' shapes (1.4: task ids without an incarnation, empty
//! collections written out, host networking) are derived from them here.
//!
//! The directory walk fails on a file no test here names, so a new sample
//! can never be skipped silently.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};
use switchboard::assemble::{Folded, snapshot_touches, touches};
use switchboard::labels::LabelOptions;
use switchboard::marathon::event::{Event, parse};
use switchboard::marathon::pod::{parse_pod, parse_pod_status, parse_pods_status, pod_from_value};
use switchboard::model::{AppId, HealthProtocol, InstanceId, TaskState, Timestamp};

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/marathon-pods"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn json_of(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

const INSTANCE: &str = "prod_shop.instance-5c6a4cf0-5ec5-11ea-8f4e-0242ac110003";
const VERSION: &str = "2020-03-05T10:15:30.123Z";

/// The events of one sample, parsed from its compact one-line form.
fn events_of(v: &Value) -> Vec<Event> {
    let ty = v["eventType"].as_str().unwrap().to_owned();
    parse(&ty, &v.to_string()).unwrap_or_else(|e| panic!("{ty}: {e}"))
}

fn one(v: &Value) -> Event {
    let evs = events_of(v);
    assert_eq!(evs.len(), 1, "{evs:?}");
    evs.into_iter().next().unwrap()
}

const NAMED: &[&str] =
    &["pod-definition.json", "pod-status.json", "pod-status-update-event.json", "pod-instance-changed-event.json"];

#[test]
fn every_sample_is_named_by_a_test() {
    let on_disk: BTreeSet<String> =
        std::fs::read_dir(dir()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let named: BTreeSet<String> = NAMED.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, named, "a sample was added or removed: give it assertions here");
}

#[test]
fn pod_definition() {
    let spec = parse_pod(&read("pod-definition.json")).unwrap();
    assert_eq!(spec.id.as_str(), "/prod/shop");
    assert_eq!(spec.version, VERSION);
    assert_eq!(spec.labels.get("team").map(String::as_str), Some("checkout"));
    // Endpoints of all containers, flattened in container order.
    let eps: Vec<(String, Option<u16>, bool)> =
        spec.ports.iter().map(|p| (p.name.clone().unwrap(), p.container_port, p.no_host_port)).collect();
    assert_eq!(
        eps,
        [("web".into(), Some(8080), false), ("admin".into(), Some(9090), true), ("prom".into(), Some(9102), true)]
    );
    assert_eq!(spec.ports[0].labels.get("VIP_0").map(String::as_str), Some("/prod/shop:80"));
    // On container network `dcos`: endpoints without hostPort use the instance IP.
    assert!(spec.ip_per_task);
    let pod = spec.pod.as_ref().unwrap();
    let shape: Vec<_> =
        pod.containers.iter().map(|c| (c.name.as_str(), c.endpoints, c.host_ports, c.health_checked)).collect();
    assert_eq!(shape, [("web", 2, 1, true), ("metrics", 1, 0, false)]);
    // The Mesos HTTP check of `web` on endpoint `web`.
    assert_eq!(spec.health_checks.len(), 1);
    let hc = &spec.health_checks[0];
    assert_eq!((hc.protocol, hc.path.as_deref(), hc.port_index), (HealthProtocol::MesosHttp, Some("/health"), Some(0)));
    assert_eq!((hc.interval, hc.timeout), (Duration::from_secs(10), Duration::from_secs(5)));
}

#[test]
fn pod_status() {
    let status = parse_pod_status(&read("pod-status.json"), Timestamp(7)).unwrap();
    assert_eq!(status.spec, parse_pod(&read("pod-definition.json")).unwrap(), "spec is the definition");
    let tasks: Vec<_> = status
        .tasks
        .iter()
        .map(|t| {
            let f = &t.facts;
            (f.task_id.as_str(), f.task_id.pod_container(), f.host.as_str(), f.ports.clone(), f.state, t.healthy)
        })
        .collect();
    let web = format!("{INSTANCE}.web.1");
    let metrics = format!("{INSTANCE}.metrics.1");
    assert_eq!(
        tasks,
        [
            (web.as_str(), Some("web"), "10.0.1.23", vec![31744], TaskState::Running, Some(true)),
            (metrics.as_str(), Some("metrics"), "10.0.1.23", vec![], TaskState::Running, Some(true)),
        ]
    );
    for t in &status.tasks {
        assert_eq!(t.facts.task_id.instance_id().as_str(), INSTANCE);
        assert_eq!(t.facts.ip_addresses, ["9.0.3.130"]);
        assert_eq!(t.facts.version, VERSION, "the version of the instance's specReference");
        assert_eq!(t.facts.at, Timestamp(7));
        assert_eq!(t.facts.app_id.as_str(), "/prod/shop");
    }
    // The array form of /v2/pods/::status.
    let array = format!("[{}]", read("pod-status.json"));
    let (pods, broken) = parse_pods_status(&array, Timestamp(7)).unwrap();
    assert!(broken.is_empty());
    assert_eq!(pods, [status]);
}

/// (id, address:port, service, tags) of every desired registration.
fn regs(folded: &Folded) -> Vec<(String, String, String, Vec<String>)> {
    let d = folded.desired(&LabelOptions::default());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    d.registrations
        .iter()
        .map(|r| (r.id.clone(), format!("{}:{}", r.address, r.port), r.service.clone(), r.tags.clone()))
        .collect()
}

/// The sample status with labels opting in: `consul` on the pod, and
/// `consul` on the `admin` and `prom` endpoints when `endpoints` is set.
fn labelled_status(endpoints: bool) -> Value {
    let mut v = json_of("pod-status.json");
    v["spec"]["labels"]["consul"] = json!("");
    v["spec"]["labels"]["edge"] = json!("tag");
    if endpoints {
        v["spec"]["containers"][0]["endpoints"][1]["labels"] = json!({"consul": "shop-admin"});
        v["spec"]["containers"][1]["endpoints"][0]["labels"] = json!({"consul": "shop-metrics", "prom": "tag"});
    }
    v
}

fn fold_status(v: &Value) -> Folded {
    let snap = parse_pod_status(&v.to_string(), Timestamp(7)).unwrap();
    let tasks: Vec<_> = snap.tasks.iter().map(|t| (t.facts.clone(), t.healthy)).collect();
    let mut f = Folded::default();
    for t in snapshot_touches(&snap.spec, &tasks, Timestamp(7)) {
        f.apply(&t);
    }
    f
}

#[test]
fn the_status_registers_the_endpoints_the_labels_select() {
    // The sample itself opts into nothing.
    assert!(regs(&fold_status(&json_of("pod-status.json"))).is_empty());
    // `consul` on the pod: the first endpoint (web: a hostPort on the
    // container network → agent host and allocated host port).
    let tags = |extra: &[&str]| -> Vec<String> {
        ["switchboard", "edge"].iter().chain(extra).map(|s| s.to_string()).collect()
    };
    assert_eq!(
        regs(&fold_status(&labelled_status(false))),
        [(format!("{INSTANCE}:31744"), "10.0.1.23:31744".into(), "prod-shop".into(), tags(&[]))]
    );
    // `consul` on endpoints: those, on the container network without a
    // hostPort → the instance's address and the containerPort.
    assert_eq!(
        regs(&fold_status(&labelled_status(true))),
        [
            (format!("{INSTANCE}:9090"), "9.0.3.130:9090".into(), "shop-admin".into(), tags(&[])),
            (format!("{INSTANCE}:9102"), "9.0.3.130:9102".into(), "shop-metrics".into(), tags(&["prom"])),
        ]
    );
    let d = fold_status(&labelled_status(false)).desired(&LabelOptions::default());
    let r = &d.registrations[0];
    assert_eq!(
        (r.app_id.as_str(), r.task_id.as_str(), r.healthy, r.has_health_checks),
        ("/prod/shop", INSTANCE, Some(true), true)
    );
    assert_eq!(r.checks.len(), 1, "the Mesos HTTP check becomes a check on the endpoint");
}

#[test]
fn an_unreachable_endpoint_is_a_rejection_naming_pod_and_endpoint() {
    let mut v = labelled_status(true);
    v["instances"][0]["networks"] = json!([]);
    let d = fold_status(&v).desired(&LabelOptions::default());
    assert!(d.registrations.is_empty());
    let e = d.errors.get(&AppId::parse("/prod/shop").unwrap()).expect("a rejection");
    let text = e.to_string();
    assert!(text.contains("/prod/shop") && text.contains("\"admin\"") && text.contains("no address"), "{text}");
}

#[test]
fn pod_status_update_event() {
    let Event::Status(f) = one(&json_of("pod-status-update-event.json")) else { panic!("not a status") };
    assert_eq!(f.task_id.as_str(), format!("{INSTANCE}.web.1"));
    assert_eq!(
        (f.task_id.instance_id().as_str(), f.task_id.pod_container(), f.task_id.incarnation()),
        (INSTANCE, Some("web"), 1)
    );
    assert_eq!(f.app_id.as_str(), "/prod/shop", "appId is the pod id");
    assert_eq!(
        (f.host.as_str(), f.ports.clone(), f.ip_addresses.clone()),
        ("10.0.1.23", vec![31744], vec!["9.0.3.130".to_owned()])
    );
    assert_eq!((f.state, f.version.as_str(), f.at), (TaskState::Running, VERSION, ts("2020-03-05T10:16:02.457Z")));
}

#[test]
fn pod_instance_changed_event() {
    let e = one(&json_of("pod-instance-changed-event.json"));
    let Event::InstanceChanged { instance, app_id, state, host, version, at } = e else { panic!("{e:?}") };
    assert_eq!(instance, InstanceId::parse(INSTANCE).unwrap());
    assert_eq!((app_id.as_str(), state, host.as_deref()), ("/prod/shop", Some(TaskState::Running), Some("10.0.1.23")));
    assert_eq!((version.as_str(), at), (VERSION, ts("2020-03-05T10:16:02.461Z")));
}

/// The `status_update_event` of container `name` derived from the sample:
/// `incarnation` None gives the 1.4 – 1.7 id (no `.<n>`).
fn container_event(name: &str, incarnation: Option<u32>, ports: &[u16], ms: u32) -> Value {
    let mut v = json_of("pod-status-update-event.json");
    v["taskId"] = json!(match incarnation {
        Some(n) => format!("{INSTANCE}.{name}.{n}"),
        None => format!("{INSTANCE}.{name}"),
    });
    v["ports"] = json!(ports);
    v["timestamp"] = json!(format!("2020-03-05T10:16:02.{ms:03}Z"));
    v
}

#[test]
fn events_fold_to_the_snapshot_records_in_any_order_and_generation() {
    let want = regs(&fold_status(&labelled_status(true)));
    let spec = pod_from_value(&labelled_status(true)["spec"]).unwrap();
    for incarnation in [Some(1), None] {
        let mut evs = vec![
            container_event("web", incarnation, &[31744], 100),
            container_event("metrics", incarnation, &[], 200),
            json_of("pod-instance-changed-event.json"),
        ];
        let health = json!({"instanceId": INSTANCE, "runSpecId": "/prod/shop", "healthy": true,
            "runSpecVersion": VERSION, "timestamp": "2020-03-05T10:16:31.457Z", "eventType": "instance_health_changed_event"});
        evs.push(health);
        // Every rotation and its reverse; the spec first, last or between.
        for rot in 0..evs.len() {
            for rev in [false, true] {
                let mut order: Vec<Value> = evs.iter().cycle().skip(rot).take(evs.len()).cloned().collect();
                if rev {
                    order.reverse();
                }
                for spec_at in 0..=order.len() {
                    let mut f = Folded::default();
                    for (i, ev) in order.iter().enumerate() {
                        if i == spec_at {
                            f.apply(&switchboard::assemble::Touch::Spec(spec.clone()));
                        }
                        for e in events_of(ev) {
                            for t in touches(&e) {
                                f.apply(&t);
                            }
                        }
                    }
                    if spec_at == order.len() {
                        f.apply(&switchboard::assemble::Touch::Spec(spec.clone()));
                    }
                    let got = regs(&f);
                    assert_eq!(got, want, "{incarnation:?} rot {rot} rev {rev} spec at {spec_at}");
                }
            }
        }
    }
}

#[test]
fn an_instance_waits_for_every_container() {
    let spec = pod_from_value(&labelled_status(true)["spec"]).unwrap();
    let mut f = Folded::default();
    f.apply(&switchboard::assemble::Touch::Spec(spec));
    for e in events_of(&container_event("web", Some(1), &[31744], 100)) {
        for t in touches(&e) {
            f.apply(&t);
        }
    }
    let d = f.desired(&LabelOptions::default());
    assert!(d.registrations.is_empty(), "metrics has not reported yet");
    assert_eq!(d.pending.len(), 1);
    assert_eq!(d.pending[0].2, switchboard::assemble::Lack::TaskFacts);
}

#[test]
fn a_killed_container_kills_the_instance_and_a_relaunch_comes_back() {
    let spec = pod_from_value(&labelled_status(true)["spec"]).unwrap();
    let fold = |evs: &[Value]| {
        let mut f = Folded::default();
        f.apply(&switchboard::assemble::Touch::Spec(spec.clone()));
        for ev in evs {
            for e in events_of(ev) {
                for t in touches(&e) {
                    f.apply(&t);
                }
            }
        }
        regs(&f)
    };
    let web1 = container_event("web", Some(1), &[31744], 100);
    let metrics1 = container_event("metrics", Some(1), &[], 200);
    let mut killed = container_event("web", Some(1), &[31744], 300);
    killed["taskStatus"] = json!("TASK_KILLED");
    assert_eq!(fold(&[web1.clone(), metrics1.clone()]).len(), 2);
    assert!(fold(&[web1.clone(), metrics1.clone(), killed.clone()]).is_empty());
    // 1.8+: relaunched in place as `.2`, maybe elsewhere.
    let mut web2 = container_event("web", Some(2), &[31800], 400);
    web2["host"] = json!("10.0.1.24");
    let mut metrics2 = container_event("metrics", Some(2), &[], 500);
    metrics2["host"] = json!("10.0.1.24");
    assert!(fold(&[web1.clone(), metrics1.clone(), killed.clone(), web2.clone()]).is_empty(), "metrics.2 not yet");
    let back = fold(&[metrics2, web1, killed, web2, metrics1]);
    assert_eq!(back.len(), 2, "{back:?}");
}

#[test]
fn pod_lifecycle_events() {
    let ev = |ty: &str, uri: &str| json!({"clientIp": "10.0.0.5", "uri": uri, "eventType": ty, "timestamp": "2020-03-05T10:15:30.130Z"});
    let at = ts("2020-03-05T10:15:30.130Z");
    let shop = AppId::parse("/prod/shop").unwrap();
    // POST /v2/pods names no pod.
    assert_eq!(one(&ev("pod_created_event", "/v2/pods")), Event::Ignored { event_type: "pod_created_event".into() });
    assert_eq!(one(&ev("pod_updated_event", "/v2/pods/prod/shop")), Event::AppTouched { app_id: shop.clone(), at });
    assert_eq!(one(&ev("pod_deleted_event", "/v2/pods/prod/shop")), Event::AppStopped { app_id: shop.clone(), at });
    // Deployments name pods in `pod`.
    let plan = json!({"plan": {"id": "9d5c", "steps": [], "version": VERSION},
        "currentStep": {"actions": [{"action": "StopPod", "pod": "/prod/shop"}, {"action": "ScalePod", "pod": "/prod/cart"}]},
        "eventType": "deployment_info", "timestamp": "2020-03-05T10:15:30.402Z"});
    let at = ts("2020-03-05T10:15:30.402Z");
    assert_eq!(
        events_of(&plan),
        [Event::AppStopped { app_id: shop, at }, Event::AppTouched { app_id: AppId::parse("/prod/cart").unwrap(), at }]
    );
}

#[test]
fn marathon_1_4_definitions_with_empty_collections_and_host_networking() {
    // 1.4 writes empty collections; host networking requires hostPort.
    let v = json!({"id": "/prod/shop", "labels": {}, "version": "2017-03-01T10:00:00.000Z", "containers": [
        {"name": "web", "endpoints": [{"name": "http", "hostPort": 0, "protocol": [], "labels": {}}], "labels": {},
         "healthCheck": {"tcp": {"endpoint": "http"}, "gracePeriodSeconds": 60, "intervalSeconds": 5,
                         "maxConsecutiveFailures": 3, "timeoutSeconds": 2, "delaySeconds": 15}},
        {"name": "log", "endpoints": [], "labels": {}, "healthCheck": {"exec": {"command": {"shell": "true"}}}}],
        "networks": [{"mode": "host", "labels": {}}], "secrets": {}, "volumes": [],
        "scaling": {"kind": "fixed", "instances": 2}});
    let spec = pod_from_value(&v).unwrap();
    assert!(!spec.ip_per_task);
    assert_eq!(spec.ports.len(), 1);
    assert!(!spec.ports[0].no_host_port);
    let protocols: Vec<_> = spec.health_checks.iter().map(|h| (h.protocol, h.port_index)).collect();
    assert_eq!(protocols, [(HealthProtocol::MesosTcp, Some(0)), (HealthProtocol::Command, None)]);
}
