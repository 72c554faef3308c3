//! Every captured or composed Marathon sample in `tests/fixtures/marathon/`
//! (Marathon 1.1 – 1.10) goes through the parsers a real deployment uses,
//! with the facts a user would check asserted on each: ids of every
//! generation, states, hosts, ports, IPs, health, versions, plans and REST
//! snapshots. `docs/marathon.md` says what each version sends.
//!
//! The directory walk fails on a file no test here names, so a new sample
//! can never be skipped silently.

use std::collections::BTreeSet;
use std::path::PathBuf;

use serde_json::Value;
use switchboard::assemble::{Folded, snapshot_touches, touches};
use switchboard::labels::LabelOptions;
use switchboard::marathon::client::{parse_app_response, parse_snapshot, parse_tasks};
use switchboard::marathon::event::{Event, parse, parse_app};
use switchboard::marathon::stream::{StreamItem, replay, replay_framed};
use switchboard::model::{AppId, HealthProtocol, InstanceId, TaskState, Timestamp};

fn dir() -> PathBuf {
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/marathon"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn json(name: &str) -> Value {
    serde_json::from_str(&read(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The events one sample stands for, parsed from its compact one-line form
/// (the wire has one `data:` line per event; the files are pretty-printed).
fn events(name: &str) -> Vec<Event> {
    let v = json(name);
    let ty = v["eventType"].as_str().unwrap().to_owned();
    parse(&ty, &v.to_string()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn one(name: &str) -> Event {
    let evs = events(name);
    assert_eq!(evs.len(), 1, "{name}: {evs:?}");
    evs.into_iter().next().unwrap()
}

const UUID_WEB1: &str = "0c1d2e3f-6f9a-11e8-a0c3-0242ac11000b";
const UUID_WEB2: &str = "0c1e6cd0-6f9a-11e8-a0c3-0242ac11000b";
const V_WEB: &str = "2018-06-14T09:12:03.480Z";

fn inst(s: &str) -> InstanceId {
    InstanceId::parse(s).unwrap()
}

/// Known events that carry nothing for registration.
const BOOKKEEPING: &[&str] = &[
    "add_health_check_event.json",
    "remove_health_check_event.json",
    "event_stream_attached.json",
    "event_stream_detached.json",
    "framework_message_event.json",
    "group_change_success.json",
    "group_change_failed.json",
    "pod_created_event.json",
    "scheduler_registered_event.json",
    "scheduler_reregistered_event.json",
    "scheduler_disconnected_event.json",
    "subscribe_event.json",
    "unsubscribe_event.json",
];

/// Every sample file, by what asserts it (with `BOOKKEEPING`). A file in the directory that is
/// not here fails `every_sample_file_is_asserted`.
const SAMPLES: &[&str] = &[
    // status_update_event
    "status_update_event.json",
    "status_update_event-v1.8.json",
    "status_update_event-failed.json",
    "status_update_event-no-ipaddresses.json",
    "status_update_event-ip-per-task.json",
    "status_update_event-killing.json",
    "status_update_event-killed.json",
    "status_update_event-lost-v1.3.json",
    "status_update_event-unreachable.json",
    // instance and health events
    "instance_changed_event.json",
    "instance_changed_event-created.json",
    "instance_changed_event-v1.8-scheduled.json",
    "instance_changed_event-v1.8-provisioned.json",
    "health_status_changed_event.json",
    "health_status_changed_event-v1.3.json",
    "instance_health_changed_event.json",
    "instance_health_changed_event-unknown.json",
    "failed_health_check_event.json",
    "failed_health_check_event-v1.3.json",
    "failed_health_check_event-v1.4.json",
    "unhealthy_instance_kill_event.json",
    "unhealthy_task_kill_event-v1.3.json",
    "unknown_instance_terminated_event.json",
    // app definitions and deployments
    "api_post_event.json",
    "api_post_event-scale.json",
    "app_terminated_event.json",
    // pods (issue 20): a pod is an app to the core
    "pod_updated_event.json",
    "pod_deleted_event.json",
    "deployment_info.json",
    "deployment_info-light.json",
    "deployment_info-stop.json",
    "deployment_info-v1.1.0-type-key.json",
    "deployment_step_success.json",
    "deployment_step_failure.json",
    "deployment_success.json",
    "deployment_success-light.json",
    "deployment_failed.json",
    // events that carry nothing for registration: BOOKKEEPING
    // REST
    "rest-apps-embed-tasks.json",
    "rest-apps-embed-tasks-v1.10.json",
    "rest-apps-embed-tasks-v1.5-bridge.json",
    "rest-app.json",
    "rest-app-404.json",
    "rest-tasks.json",
    "rest-deployments.json",
    "rest-deployments-empty.json",
    "rest-info.json",
    "rest-leader.json",
    "rest-leader-404.json",
    // raw streams
    "stream.txt",
    "stream-capture-v1.5.txt",
    "stream-non-marathon-variants.txt",
];

#[test]
fn every_sample_file_is_asserted() {
    let mut on_disk = BTreeSet::new();
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with('.') {
            continue;
        }
        if name.starts_with("rest-") {
            json(&name);
        } else if name.ends_with(".json") {
            let evs = events(&name);
            assert!(!evs.iter().any(|e| matches!(e, Event::Unknown { .. })), "{name}: {evs:?}");
        } else if name.ends_with(".txt") {
            let items = stream_items(&name, 7);
            assert!(!items.iter().any(|i| matches!(i, StreamItem::Malformed { .. })), "{name}");
        }
        on_disk.insert(name);
    }
    let named: BTreeSet<String> = SAMPLES.iter().chain(BOOKKEEPING).map(|s| s.to_string()).collect();
    assert_eq!(on_disk, named, "samples on disk vs samples asserted here");
    assert_eq!(named.len(), 64);
}

// ---------------------------------------------------------------- status events

/// (task id, instance id, state, host, ports, IPs, version, timestamp).
fn status(name: &str) -> (String, String, TaskState, String, Vec<u16>, Vec<String>, String, Timestamp) {
    let Event::Status(f) = one(name) else { panic!("{name}") };
    (
        f.task_id.to_string(),
        f.task_id.instance_id().to_string(),
        f.state,
        f.host,
        f.ports,
        f.ip_addresses,
        f.version,
        f.at,
    )
}

#[test]
fn status_update_events_of_every_generation() {
    // 1.4 – 1.7: legacy task id, instance `<app>.marathon-<uuid>`.
    assert_eq!(
        status("status_update_event.json"),
        (
            format!("prod_web.{UUID_WEB1}"),
            format!("prod_web.marathon-{UUID_WEB1}"),
            TaskState::Running,
            "10.0.2.21".into(),
            vec![31004, 31005],
            vec!["10.0.2.21".into()],
            V_WEB.into(),
            ts("2018-06-14T09:12:05.390Z"),
        )
    );
    // 1.8+: `<app>.instance-<uuid>._app.<n>`, instance without the suffix.
    let Event::Status(f) = one("status_update_event-v1.8.json") else { panic!() };
    assert_eq!(f.task_id.as_str(), format!("prod_web.instance-{UUID_WEB1}._app.1"));
    assert_eq!(f.task_id.instance_id(), inst(&format!("prod_web.instance-{UUID_WEB1}")));
    assert_eq!(f.task_id.incarnation(), 1);
    assert_eq!((f.state, f.host.as_str(), &f.ports[..]), (TaskState::Running, "10.0.2.21", &[31004, 31005][..]));

    // Marathon's own docs (1.1 era, verbatim): no `ipAddresses` at all.
    assert_eq!(
        status("status_update_event-failed.json"),
        (
            "foo.0664256e-6771-11e5-94e1-be5b2935a987".into(),
            "foo.marathon-0664256e-6771-11e5-94e1-be5b2935a987".into(),
            TaskState::Failed,
            "srv5.hw.ca1.mesosphere.com".into(),
            vec![31776],
            vec![],
            "2015-09-30T09:09:17.614Z".into(),
            ts("2015-09-30T12:44:45.681Z"),
        )
    );
    let s = status("status_update_event-no-ipaddresses.json");
    assert_eq!(
        (s.2, s.3.as_str(), &s.4[..], s.5.len()),
        (TaskState::Running, "srv4.hw.ca1.mesosphere.com", &[31182][..], 0)
    );
    assert_eq!(s.1, "test-app.marathon-5dd78972-6771-11e5-94e1-be5b2935a987");

    // IP-per-task: no host ports, the container's IP.
    let s = status("status_update_event-ip-per-task.json");
    assert_eq!(
        (s.0.as_str(), s.2, &s.4[..], &s.5[..]),
        ("infra_api.5e2d1c44-6f8e-11e8-a0c3-0242ac11000b", TaskState::Running, &[][..], &["9.0.3.7".to_string()][..])
    );

    // A kill: KILLING (drain) then KILLED, same task.
    let killing = status("status_update_event-killing.json");
    let killed = status("status_update_event-killed.json");
    assert_eq!((killing.0.as_str(), killing.2), (format!("prod_web.{UUID_WEB2}").as_str(), TaskState::Killing));
    assert_eq!((killed.0.as_str(), killed.2), (killing.0.as_str(), TaskState::Killed));
    assert!(killed.2.is_terminal() && !killing.2.is_terminal());
    assert_eq!(killed.7, ts("2018-06-14T10:02:20.118Z"));

    // 1.3 reports every lost flavour as LOST (terminal); 1.4+ UNREACHABLE is not.
    let lost = status("status_update_event-lost-v1.3.json");
    assert_eq!((lost.2, lost.2.is_terminal(), lost.5.len()), (TaskState::Lost, true, 0));
    let unreachable = status("status_update_event-unreachable.json");
    assert_eq!((unreachable.2, unreachable.2.is_terminal()), (TaskState::Unreachable, false));
    assert!(unreachable.5.is_empty(), "1.4+ writes `ipAddresses: []` on a master-generated update");
}

// ---------------------------------------------------------------- instances, health

#[test]
fn instance_events_of_every_generation() {
    let changed = |name: &str| match one(name) {
        Event::InstanceChanged { instance, app_id, state, host, version, at } => {
            (instance.to_string(), app_id.to_string(), state, host, version, at)
        }
        e => panic!("{name}: {e:?}"),
    };
    assert_eq!(
        changed("instance_changed_event.json"),
        (
            format!("prod_web.marathon-{UUID_WEB1}"),
            "/prod/web".into(),
            Some(TaskState::Running),
            Some("10.0.2.21".into()),
            V_WEB.into(),
            ts("2018-06-14T09:12:05.391Z")
        )
    );
    // The same instance as the status update's legacy task id.
    let Event::Status(f) = one("status_update_event.json") else { panic!() };
    assert_eq!(f.task_id.instance_id().to_string(), changed("instance_changed_event.json").0);

    // Launch-time conditions say nothing about serving.
    let created = changed("instance_changed_event-created.json");
    assert_eq!((created.0.as_str(), created.2), ("prod_worker.marathon-1b7c9a21-6f9a-11e8-a0c3-0242ac11000b", None));
    let scheduled = changed("instance_changed_event-v1.8-scheduled.json");
    assert_eq!((scheduled.2, scheduled.3), (None, None), "1.8 Scheduled: no agent yet, host null");
    assert_eq!(scheduled.0, format!("prod_web.instance-{UUID_WEB1}"));
    let provisioned = changed("instance_changed_event-v1.8-provisioned.json");
    assert_eq!((provisioned.2, provisioned.3.as_deref()), (Some(TaskState::Staging), Some("10.0.2.21")));

    // A task Marathon no longer tracks went terminal: a tombstone for it.
    let gone = changed("unknown_instance_terminated_event.json");
    assert_eq!(
        (gone.0.as_str(), gone.1.as_str(), gone.2),
        (format!("prod_web.marathon-{UUID_WEB2}").as_str(), "/prod/web", Some(TaskState::Killed))
    );
}

#[test]
fn health_events_key_on_the_instance_in_every_version() {
    let health = |name: &str| match one(name) {
        Event::Health { instance, app_id, healthy, at } => (instance.to_string(), app_id.to_string(), healthy, at),
        e => panic!("{name}: {e:?}"),
    };
    let want_instance = format!("prod_web.marathon-{UUID_WEB1}");
    // 1.4+: `instanceId`; 1.1 – 1.3: `taskId` holding the task id. Both
    // name the instance the status update's task belongs to.
    let new = health("health_status_changed_event.json");
    let old = health("health_status_changed_event-v1.3.json");
    assert_eq!(new, (want_instance.clone(), "/prod/web".into(), Some(true), ts("2018-06-14T09:12:19.930Z")));
    assert_eq!(old, new);
    assert_eq!(
        health("instance_health_changed_event.json"),
        (want_instance, "/prod/web".into(), Some(true), ts("2018-06-14T09:12:19.931Z"))
    );
    let unknown = health("instance_health_changed_event-unknown.json");
    assert_eq!((unknown.0, unknown.2), (format!("prod_web.marathon-{UUID_WEB2}"), None));

    // Folded together, the task and its health meet in one record.
    let mut world = Folded::default();
    for name in ["status_update_event.json", "health_status_changed_event.json", "instance_changed_event.json"] {
        for e in events(name) {
            touches(&e).iter().for_each(|t| world.apply(t));
        }
    }
    assert_eq!(world.instances.len(), 1, "{:?}", world.instances.keys());
    let rec = world.instances.values().next().unwrap();
    assert_eq!(rec.health.as_ref().and_then(|h| h.healthy), Some(true));
    assert_eq!(rec.location.as_ref().unwrap().ports, [31004, 31005]);

    // A failed probe is not a state change, in any of its three shapes.
    for name in
        ["failed_health_check_event.json", "failed_health_check_event-v1.3.json", "failed_health_check_event-v1.4.json"]
    {
        assert_eq!(one(name), Event::Ignored { event_type: "failed_health_check_event".into() }, "{name}");
    }
}

#[test]
fn unhealthy_kills_drain_the_task_at_once() {
    for (name, ty) in
        [("unhealthy_instance_kill_event.json", "1.4+"), ("unhealthy_task_kill_event-v1.3.json", "1.1 – 1.3")]
    {
        match one(name) {
            Event::TaskState { task_id, app_id, state, at } => {
                assert_eq!(task_id.as_str(), format!("prod_web.{UUID_WEB1}"), "{ty}");
                assert_eq!(task_id.instance_id(), inst(&format!("prod_web.marathon-{UUID_WEB1}")), "{ty}");
                assert_eq!(
                    (app_id.as_str(), state, at),
                    ("/prod/web", TaskState::Killing, ts("2018-06-14T10:47:51.214Z"))
                );
            }
            e => panic!("{name}: {e:?}"),
        }
    }
    // Folded after the RUNNING update, the instance is no longer serving.
    let mut world = Folded::default();
    for name in ["status_update_event.json", "unhealthy_instance_kill_event.json"] {
        for e in events(name) {
            touches(&e).iter().for_each(|t| world.apply(t));
        }
    }
    let rec = world.instances.values().next().unwrap();
    assert_eq!(rec.state.as_ref().unwrap().state, TaskState::Killing);
}

// ---------------------------------------------------------------- app definitions, plans

#[test]
fn api_post_events_carry_the_app_definition() {
    let Event::Spec { spec, at } = one("api_post_event.json") else { panic!() };
    assert_eq!(at, ts("2018-06-14T13:40:12.118Z"));
    assert_eq!((spec.id.as_str(), spec.version.as_str()), ("/prod/web", "2018-06-14T13:40:12.007Z"));
    assert_eq!(spec.labels["consul"], "web");
    assert_eq!(spec.labels["public"], "tag");
    assert_eq!(spec.labels["kong.hosts"], "web.example.com");
    assert_eq!(spec.labels["vulcand.host"], "web.example.com");
    let ports: Vec<_> = spec.ports.iter().map(|p| (p.name.as_deref(), p.labels.get("consul").cloned())).collect();
    assert_eq!(ports, [(Some("http"), Some("web".to_string())), (Some("admin"), None)]);
    assert!(!spec.ip_per_task);
    let h = &spec.health_checks[0];
    assert_eq!((h.protocol, h.path.as_deref(), h.port_index), (HealthProtocol::Http, Some("/health"), Some(0)));
    assert_eq!((h.interval.as_secs(), h.timeout.as_secs()), (10, 5));

    // A UI scale: a new version, the same configuration.
    let Event::Spec { spec: scaled, .. } = one("api_post_event-scale.json") else { panic!() };
    assert_eq!(scaled.version, "2018-06-14T14:05:33.650Z");
    assert_eq!((scaled.labels.clone(), scaled.ports.clone()), (spec.labels, spec.ports));
}

fn spec_ids(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Spec { spec, .. } => Some(spec.id.to_string()),
            _ => None,
        })
        .collect()
}

#[test]
fn heavy_and_light_deployment_plans() {
    // Heavy (≤ 1.6): every app of the target root group, nested groups
    // included, then what the current step does.
    let evs = events("deployment_info.json");
    assert_eq!(spec_ids(&evs), ["/infra/api", "/prod/web", "/prod/worker"]);
    let Some(Event::Spec { spec, .. }) =
        evs.iter().find(|e| matches!(e, Event::Spec { spec, .. } if spec.id.as_str() == "/prod/web"))
    else {
        panic!()
    };
    assert_eq!((spec.version.as_str(), spec.labels["consul"].as_str()), (V_WEB, "web"));
    let Some(Event::Spec { spec: api, .. }) =
        evs.iter().find(|e| matches!(e, Event::Spec { spec, .. } if spec.id.as_str() == "/infra/api"))
    else {
        panic!()
    };
    assert!(api.ip_per_task, "container network");
    assert_eq!((api.ports[0].container_port, api.ports[0].no_host_port), (Some(8080), true));
    assert!(matches!(evs.last(), Some(Event::AppTouched { app_id, .. }) if app_id.as_str() == "/prod/worker"));

    let evs = events("deployment_step_success.json");
    assert_eq!(spec_ids(&evs), ["/infra/api", "/prod/web", "/prod/worker"]);
    assert!(!evs.iter().any(|e| matches!(e, Event::AppTouched { .. } | Event::AppStopped { .. })));

    // Light (1.7 default, 1.8+ only): no definitions, only the hint.
    assert_eq!(
        events("deployment_info-light.json"),
        [Event::AppTouched { app_id: AppId::parse("/prod/worker").unwrap(), at: ts("2018-06-14T09:12:20.436Z") }]
    );
    // 1.1.0 / 1.1.1 key the action `type`.
    assert_eq!(
        events("deployment_info-v1.1.0-type-key.json"),
        [Event::AppTouched { app_id: AppId::parse("/my-app").unwrap(), at: ts("2016-07-29T08:03:52.542Z") }]
    );
    // A stop: the target no longer holds the app; the app is stopped.
    let evs = events("deployment_info-stop.json");
    assert_eq!(spec_ids(&evs), ["/infra/api", "/prod/worker"]);
    assert!(matches!(evs.last(), Some(Event::AppStopped { app_id, .. }) if app_id.as_str() == "/prod/web"));
    assert_eq!(
        events("app_terminated_event.json"),
        [Event::AppStopped { app_id: AppId::parse("/prod/web").unwrap(), at: ts("2018-06-14T12:30:03.014Z") }]
    );
    // The ends of a deployment carry nothing Switchboard needs.
    for name in [
        "deployment_success.json",
        "deployment_success-light.json",
        "deployment_failed.json",
        "deployment_step_failure.json",
    ] {
        assert!(matches!(&events(name)[..], [Event::Ignored { .. }]), "{name}");
    }
    assert_eq!(json("deployment_failed.json")["reason"], "Deployment was canceled by a forced deployment");
}

#[test]
fn pod_events_touch_or_stop_the_pod_named_in_the_uri() {
    let cache = AppId::parse("/prod/cache").unwrap();
    assert_eq!(
        one("pod_updated_event.json"),
        Event::AppTouched { app_id: cache.clone(), at: ts("2018-06-14T15:05:00.221Z") }
    );
    assert_eq!(one("pod_deleted_event.json"), Event::AppStopped { app_id: cache, at: ts("2018-06-14T15:10:00.330Z") });
    // POST /v2/pods names no pod: nothing to act on.
    assert_eq!(json("pod_created_event.json")["uri"], "/v2/pods");
}

#[test]
fn bookkeeping_events_are_known_and_ignored() {
    for name in BOOKKEEPING {
        let ty = json(name)["eventType"].as_str().unwrap().to_owned();
        assert_eq!(one(name), Event::Ignored { event_type: ty }, "{name}");
    }
    // Where Marathon's own docs differ from its code, as the code writes it.
    assert_eq!(json("event_stream_attached.json")["remoteAddress"], "10.0.3.40");
    assert!(json("remove_health_check_event.json").get("healthCheck").is_none());
    assert!(json("framework_message_event.json")["message"].is_array());
}

// ---------------------------------------------------------------- REST

/// (service, address:port, healthy) of every registration a world wants.
fn registrations(world: &Folded) -> Vec<(String, String, Option<bool>)> {
    let d = world.desired(&LabelOptions::default());
    assert!(d.errors.is_empty(), "{:?}", d.errors);
    d.registrations.iter().map(|r| (r.service.clone(), format!("{}:{}", r.address, r.port), r.healthy)).collect()
}

fn snapshot_world(name: &str) -> Folded {
    let snap = parse_snapshot(&read(name), Timestamp(42)).unwrap_or_else(|e| panic!("{name}: {e}"));
    assert!(snap.broken.is_empty(), "{name}: {:?}", snap.broken);
    let mut world = Folded::default();
    for app in &snap.apps {
        let tasks: Vec<_> = app.tasks.iter().map(|t| (t.facts.clone(), t.healthy)).collect();
        snapshot_touches(&app.spec, &tasks, snap.as_of).iter().for_each(|t| world.apply(t));
    }
    world
}

#[test]
fn rest_snapshot_v1_6() {
    let snap = parse_snapshot(&read("rest-apps-embed-tasks.json"), Timestamp(42)).unwrap();
    let ids: Vec<_> = snap.apps.iter().map(|a| (a.spec.id.to_string(), a.tasks.len())).collect();
    assert_eq!(ids, [("/infra/api".into(), 1), ("/prod/web".into(), 2), ("/prod/worker".into(), 1)]);
    let web = &snap.apps[1];
    let t = &web.tasks[1];
    assert_eq!(t.facts.task_id.as_str(), format!("prod_web.{UUID_WEB2}"));
    assert_eq!((t.facts.host.as_str(), &t.facts.ports[..]), ("10.0.2.22", &[31812, 31813][..]));
    assert_eq!((t.facts.state, t.facts.at, t.healthy), (TaskState::Running, Timestamp(42), Some(true)));
    // IP-per-task on a container network: task IP and container port.
    assert_eq!(
        registrations(&snapshot_world("rest-apps-embed-tasks.json")),
        [
            ("api".into(), "9.0.3.7:8080".into(), Some(true)),
            ("web".into(), "10.0.2.21:31004".into(), Some(true)),
            ("web".into(), "10.0.2.22:31812".into(), Some(true)),
        ]
    );
    // The single-app answer carries the same definition and tasks.
    let one = parse_app_response(&read("rest-app.json"), Timestamp(42)).unwrap();
    assert_eq!((one.spec.clone(), one.tasks.clone()), (web.spec.clone(), web.tasks.clone()));
    let spec = parse_app(&json("rest-app.json")["app"].to_string()).unwrap();
    assert_eq!(spec, one.spec);
    assert_eq!(json("rest-app-404.json")["message"], "App '/prod/gone' does not exist");
}

#[test]
fn rest_snapshot_v1_10_with_incarnations() {
    let world = snapshot_world("rest-apps-embed-tasks-v1.10.json");
    let d = world.desired(&LabelOptions::default());
    let ids: Vec<_> = d.registrations.iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        ids,
        [
            "infra_api.instance-5e2d1c44-6f8e-11e8-a0c3-0242ac11000b._app.1:8080".to_string(),
            format!("prod_web.instance-{UUID_WEB1}._app.1:31004"),
            format!("prod_web.instance-{UUID_WEB2}._app.2:31907"),
        ]
    );
    let relaunched = &world.instances[&inst(&format!("prod_web.instance-{UUID_WEB2}"))];
    assert_eq!(relaunched.incarnation(), 2);
    assert_eq!(json("rest-apps-embed-tasks-v1.10.json")["apps"][1]["role"], "slave_public", "1.9+ `role`");
}

#[test]
fn rest_snapshot_v1_5_bridge_uses_the_host_port_not_the_bridge_ip() {
    let snap = parse_snapshot(&read("rest-apps-embed-tasks-v1.5-bridge.json"), Timestamp(1)).unwrap();
    let app = &snap.apps[0];
    assert_eq!(app.spec.id.as_str(), "/pywebserver");
    assert!(!app.spec.ip_per_task, "container/bridge is not IP-per-task");
    let t = &app.tasks[0].facts;
    assert_eq!(
        (t.host.as_str(), &t.ports[..], &t.ip_addresses[..]),
        ("10.0.2.148", &[1565][..], &["172.17.0.2".to_string()][..])
    );
    // Opted in (it carries HAPROXY labels only), it registers host:hostPort.
    let mut spec = app.spec.clone();
    spec.labels.insert("consul".into(), String::new());
    let regs = switchboard::labels::registrations(&spec, t, None, &LabelOptions::default()).unwrap();
    assert_eq!((regs[0].service.as_str(), regs[0].address.as_str(), regs[0].port), ("pywebserver", "10.0.2.148", 1565));
    // Opted out as it stands.
    assert!(registrations(&snapshot_world("rest-apps-embed-tasks-v1.5-bridge.json")).is_empty());
}

#[test]
fn rest_tasks_deployments_info_leader() {
    let tasks = parse_tasks(&read("rest-tasks.json"), Timestamp(1)).unwrap();
    let got: Vec<_> = tasks.iter().map(|t| (t.facts.app_id.to_string(), t.facts.ports.clone(), t.healthy)).collect();
    assert_eq!(
        got,
        [
            ("/infra/api".into(), vec![], Some(true)),
            ("/prod/web".into(), vec![31004, 31005], Some(true)),
            ("/prod/web".into(), vec![31812, 31813], Some(true)),
            ("/prod/worker".into(), vec![], None),
        ]
    );
    let deps = json("rest-deployments.json");
    assert_eq!(deps[0]["affectedApps"], serde_json::json!(["/prod/web", "/prod/worker"]));
    assert_eq!((deps[0]["currentStep"].as_u64(), deps[0]["totalSteps"].as_u64()), (Some(2), Some(3)));
    assert_eq!(json("rest-deployments-empty.json"), serde_json::json!([]));
    let info = json("rest-info.json");
    assert_eq!((info["version"].as_str(), info["leader"].as_str()), (Some("1.6.549"), Some("10.0.1.11:8080")));
    assert!(info["marathon_config"]["features"].as_array().unwrap().contains(&"task_killing".into()));
    assert_eq!(json("rest-leader.json")["leader"], "10.0.1.11:8080");
    assert_eq!(json("rest-leader-404.json")["message"], "There is no leader");
}

// ---------------------------------------------------------------- raw streams

/// The items a stream file gives through the real path (eventsource-client
/// over the transport's line cap), delivered `chunk` bytes at a time.
fn stream_items(name: &str, chunk: usize) -> Vec<StreamItem> {
    let bytes = std::fs::read(dir().join(name)).unwrap();
    split_items(&bytes, &bytes.chunks(chunk).map(|c| c.len()).collect::<Vec<_>>())
}

/// The items of `bytes` delivered in pieces of the given lengths.
fn split_items(bytes: &[u8], lengths: &[usize]) -> Vec<StreamItem> {
    let mut chunks = Vec::new();
    let mut at = 0;
    for len in lengths {
        chunks.push(bytes::Bytes::copy_from_slice(&bytes[at..at + len]));
        at += len;
    }
    chunks.push(bytes::Bytes::copy_from_slice(&bytes[at..]));
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(replay(chunks, 1 << 20))
}

fn stream_events(name: &str) -> Vec<Event> {
    stream_items(name, 7)
        .into_iter()
        .flat_map(|i| match i {
            StreamItem::Events { events, .. } => events,
            other => panic!("{name}: {other:?}"),
        })
        .collect()
}

fn types(items: &[StreamItem]) -> Vec<&str> {
    items
        .iter()
        .map(|i| match i {
            StreamItem::Events { event_type, .. } => event_type.as_str(),
            other => panic!("{other:?}"),
        })
        .collect()
}

/// Cut at every byte boundary (so CR and LF land in different reads), the
/// file frames to the same events as in one piece (framing only: the JSON
/// is the same string either way).
fn same_at_every_cut(name: &str) {
    let bytes = bytes::Bytes::from(std::fs::read(dir().join(name)).unwrap());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let whole = rt.block_on(replay_framed(vec![bytes.clone()], 1 << 20));
    assert!(whole.len() >= 16, "{name}: {} events", whole.len());
    for cut in 0..=bytes.len() {
        let got = rt.block_on(replay_framed(vec![bytes.slice(..cut), bytes.slice(cut..)], 1 << 20));
        assert!(got == whole, "{name} cut at byte {cut}");
    }
}

#[test]
fn stream_txt_at_every_byte_boundary() {
    same_at_every_cut("stream.txt");
}

#[test]
fn stream_capture_v1_5_at_every_byte_boundary() {
    same_at_every_cut("stream-capture-v1.5.txt");
}

#[test]
fn stream_txt_reconnected_mid_deploy() {
    let raw = std::fs::read(dir().join("stream.txt")).unwrap();
    assert!(raw.windows(2).filter(|w| w == b"\r\n").count() > 40, "CRLF line ends");
    assert!(!raw.windows(3).any(|w| w[0] != b'\r' && w[1..] == *b"\n\n"), "no bare LF line ends");
    let whole = stream_items("stream.txt", raw.len());
    assert_eq!(
        types(&whole),
        [
            "event_stream_attached",
            "status_update_event",
            "instance_changed_event",
            "status_update_event",
            "instance_changed_event",
            "health_status_changed_event",
            "instance_health_changed_event",
            "health_status_changed_event",
            "instance_health_changed_event",
            "deployment_step_success",
            "deployment_info",
            "instance_changed_event",
            "status_update_event",
            "instance_changed_event",
            "deployment_step_success",
            "deployment_success",
        ]
    );
    // Any chunking gives the same items (keepalive CR and LF split too).
    for chunk in [1, 2, 3, 5, 64, 1000] {
        assert_eq!(stream_items("stream.txt", chunk), whole, "chunk {chunk}");
    }
    let evs = stream_events("stream.txt");
    // Both TASK_RUNNING of /prod/web arrive before any event with its labels.
    let first_spec = evs.iter().position(|e| matches!(e, Event::Spec { .. })).unwrap();
    let running: Vec<_> = evs
        .iter()
        .enumerate()
        .filter(
            |(_, e)| matches!(e, Event::Status(f) if f.state == TaskState::Running && f.app_id.as_str() == "/prod/web"),
        )
        .map(|(i, _)| i)
        .collect();
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|i| *i < first_spec));

    // Folded, the stream wants what the REST snapshot of the same moment wants.
    let mut world = Folded::default();
    evs.iter().for_each(|e| touches(e).iter().for_each(|t| world.apply(t)));
    let from_stream = registrations(&world);
    assert_eq!(
        from_stream,
        [("web".into(), "10.0.2.21:31004".into(), Some(true)), ("web".into(), "10.0.2.22:31812".into(), Some(true))]
    );
    let from_rest: Vec<_> =
        registrations(&snapshot_world("rest-apps-embed-tasks.json")).into_iter().filter(|r| r.0 == "web").collect();
    assert_eq!(from_stream, from_rest);
}

#[test]
fn stream_capture_v1_5_create_then_destroy() {
    let raw = std::fs::read(dir().join("stream-capture-v1.5.txt")).unwrap();
    assert!(!raw.contains(&b'\r'), "stored with LF line ends");
    let evs = stream_events("stream-capture-v1.5.txt");
    let states: Vec<_> = evs
        .iter()
        .filter_map(|e| match e {
            Event::Status(f) => Some((f.task_id.to_string(), f.state, f.host.clone())),
            _ => None,
        })
        .collect();
    let task = "test-container.d309a701-40ba-11e8-9b0b-3665226eea24";
    assert_eq!(
        states,
        [
            (task.to_string(), TaskState::Running, "165.227.93.209".to_string()),
            (task.to_string(), TaskState::Killing, "165.227.93.209".to_string()),
            (task.to_string(), TaskState::Finished, "165.227.93.209".to_string()),
        ]
    );
    // api_post_event comes after deployment_info; app_terminated_event last (1.5).
    assert_eq!(spec_ids(&evs).first().map(String::as_str), Some("/test-container"));
    let last = evs.iter().rev().find(|e| !matches!(e, Event::Ignored { .. }));
    assert!(matches!(last, Some(Event::AppStopped { app_id, .. }) if app_id.as_str() == "/test-container"), "{last:?}");
    let mut world = Folded::default();
    evs.iter().for_each(|e| touches(e).iter().for_each(|t| world.apply(t)));
    let rec = &world.instances[&inst("test-container.marathon-d309a701-40ba-11e8-9b0b-3665226eea24")];
    assert_eq!(rec.state.as_ref().unwrap().state, TaskState::Finished);
    assert!(world.desired(&LabelOptions::default()).registrations.is_empty());
}

#[test]
fn stream_variants_marathon_never_sends_still_parse() {
    // LF endings, `:` comments, a lone CR, `data:` without a space.
    let evs = stream_events("stream-non-marathon-variants.txt");
    let got: Vec<_> = evs
        .iter()
        .map(|e| match e {
            Event::Status(f) => (f.task_id.to_string(), f.state),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        got,
        [
            (format!("prod_web.{UUID_WEB1}"), TaskState::Running),
            (format!("prod_web.{UUID_WEB2}"), TaskState::Killing),
            (format!("prod_web.{UUID_WEB2}"), TaskState::Killed),
        ]
    );
    for chunk in [1, 2, 3] {
        assert_eq!(
            stream_items("stream-non-marathon-variants.txt", chunk),
            stream_items("stream-non-marathon-variants.txt", 4096)
        );
    }
}
