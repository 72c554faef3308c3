//! Every file of shared/reference/marathon/samples goes through the parsers
//! a real deployment uses, with assertions on the values.

use std::path::PathBuf;

use switchboard::marathon::client::{parse_app_response, parse_snapshot, parse_tasks};
use switchboard::marathon::event::{Event, parse, parse_app};
use switchboard::marathon::stream::{Frame, SseDecoder, StreamItem, frame_item};
use switchboard::model::{HealthProtocol, TaskState, Timestamp};

/// `../shared` beside the project root; from a git worktree under
/// `/work/wt/<name>` the shared directory is one level further up.
fn dir() -> PathBuf {
    let near = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../shared/reference/marathon/samples"));
    if near.is_dir() {
        return near;
    }
    PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/reference/marathon/samples"))
}

fn read(name: &str) -> String {
    std::fs::read_to_string(dir().join(name)).unwrap()
}

fn ts(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn event_of(name: &str) -> Vec<Event> {
    let body = read(name);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ty = v["eventType"].as_str().unwrap();
    // The sample files are pretty-printed; the wire has one line per JSON.
    parse(ty, &v.to_string()).unwrap_or_else(|e| panic!("{name}: {e}"))
}

#[test]
fn every_sample_file_is_parsed() {
    let mut seen = 0;
    for entry in std::fs::read_dir(dir()).unwrap() {
        let name = entry.unwrap().file_name().into_string().unwrap();
        if name.starts_with("rest-") {
            let body = read(&name);
            assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok(), "{name}");
        } else if name.ends_with(".json") {
            let evs = event_of(&name);
            assert!(!evs.is_empty(), "{name}");
            assert!(!evs.iter().any(|e| matches!(e, Event::Unknown { .. })), "{name}: {evs:?}");
        } else if name.ends_with(".txt") {
            let items = stream_items(&name);
            assert!(!items.is_empty(), "{name}");
            assert!(!items.iter().any(|i| matches!(i, StreamItem::Malformed { .. })), "{name}");
        } else {
            continue;
        }
        seen += 1;
    }
    assert!(seen >= 40, "only {seen} samples found");
}

#[test]
fn status_update_event() {
    let evs = event_of("status_update_event.json");
    let Event::Status(f) = &evs[0] else { panic!("{evs:?}") };
    assert_eq!(f.task_id.as_str(), "shop_web.instance-8cad6a69-6ca8-11e7-beb2-0e2beceebfcc._app.1");
    assert_eq!(f.task_id.instance_id().as_str(), "shop_web.instance-8cad6a69-6ca8-11e7-beb2-0e2beceebfcc");
    assert_eq!(f.app_id.as_str(), "/shop/web");
    assert_eq!(f.state, TaskState::Running);
    assert_eq!(f.host, "10.0.2.148");
    assert_eq!(f.ports, [31565, 31566]);
    assert_eq!(f.ip_addresses, ["10.0.2.148"]);
    assert_eq!(f.version, "2017-07-19T17:34:41.967Z");
    assert_eq!(f.at, ts("2017-07-19T17:35:15.661Z"));
}

#[test]
fn legacy_status_updates() {
    let evs = event_of("status_update_event-ip-per-task-legacy-id.json");
    let Event::Status(f) = &evs[0] else { panic!() };
    assert_eq!(f.task_id.instance_id().as_str(), "prod_api.1c2d3e4f-8291-11e7-a1d5-02427a3a4e1d");
    assert!(f.ports.is_empty());
    assert_eq!(f.ip_addresses, ["9.0.1.17"]);
    let evs = event_of("status_update_event-killed-legacy-id.json");
    let Event::Status(f) = &evs[0] else { panic!() };
    assert_eq!(f.state, TaskState::Killed);
    assert_eq!(f.ports, [31045, 31046]);
}

#[test]
fn instance_and_health_events() {
    let evs = event_of("instance_changed_event.json");
    assert_eq!(
        evs[0],
        Event::InstanceChanged {
            instance: switchboard::model::InstanceId::parse("shop_web.instance-8cad6a69-6ca8-11e7-beb2-0e2beceebfcc")
                .unwrap(),
            app_id: switchboard::model::AppId::parse("/shop/web").unwrap(),
            state: Some(TaskState::Running),
            host: Some("10.0.2.148".into()),
            version: "2017-07-19T17:34:41.967Z".into(),
            at: ts("2017-07-19T17:35:15.661Z"),
        }
    );
    let health = |name: &str| match &event_of(name)[0] {
        Event::Health { instance, app_id, healthy, at } => (instance.to_string(), app_id.to_string(), *healthy, *at),
        e => panic!("{name}: {e:?}"),
    };
    assert_eq!(
        health("health_status_changed_event.json"),
        (
            "shop_web.instance-8cad6a69-6ca8-11e7-beb2-0e2beceebfcc".into(),
            "/shop/web".into(),
            Some(true),
            ts("2017-07-19T17:35:30.103Z")
        )
    );
    let (inst, app, healthy, _) = health("health_status_changed_event-1.3.json");
    assert_eq!(
        (inst.as_str(), app.as_str(), healthy),
        ("prod_web.9a0b0c2d-8290-11e7-a1d5-02427a3a4e1d", "/prod/web", Some(false))
    );
    let (_, app, healthy, at) = health("instance_health_changed_event.json");
    assert_eq!((app.as_str(), healthy, at), ("/shop/web", Some(true), ts("2017-07-19T17:35:30.105Z")));
}

#[test]
fn app_definitions_from_events() {
    let evs = event_of("api_post_event.json");
    let Event::Spec { spec, at } = &evs[0] else { panic!("{evs:?}") };
    assert_eq!(*at, ts("2017-07-19T17:34:41.990Z"));
    assert_eq!(spec.id.as_str(), "/shop/web");
    assert_eq!(spec.version, "2017-07-19T17:34:41.967Z");
    assert_eq!(spec.labels["consul"], "web");
    assert_eq!(spec.ports.len(), 2);
    assert_eq!(spec.ports[0].name.as_deref(), Some("http"));
    assert_eq!(spec.ports[0].labels["consul"], "web-http");
    assert!(spec.ports[1].labels.is_empty());
    assert!(!spec.ip_per_task);
    let h = &spec.health_checks[0];
    assert_eq!(h.protocol, HealthProtocol::MesosHttp);
    assert_eq!(h.path.as_deref(), Some("/health"));
    assert_eq!(h.port_index, Some(0));
    assert_eq!(h.interval, std::time::Duration::from_secs(10));
    assert_eq!(h.timeout, std::time::Duration::from_secs(5));

    // Heavy deployment_info: the target's app, then the current step's hint.
    let evs = event_of("deployment_info.json");
    assert!(matches!(&evs[0], Event::Spec { spec: s, .. } if s == spec), "{evs:?}");
    assert!(matches!(&evs[1], Event::AppTouched { app_id, .. } if app_id.as_str() == "/shop/web"));
    assert_eq!(evs.len(), 2);

    let evs = event_of("deployment_info.light.json");
    assert!(
        matches!(&evs[..], [Event::AppTouched { app_id, at }] if app_id.as_str() == "/shop/web" && *at == ts("2017-07-19T17:34:42.012Z"))
    );

    let evs = event_of("deployment_info-stop-heavy.json");
    assert!(matches!(&evs[..], [Event::AppStopped { app_id, .. }] if app_id.as_str() == "/prod/web"), "{evs:?}");

    let evs = event_of("app_terminated_event.json");
    assert_eq!(
        evs,
        [Event::AppStopped {
            app_id: switchboard::model::AppId::parse("/shop/web").unwrap(),
            at: ts("2017-07-20T09:12:03.404Z")
        }]
    );
    // Light step success and the rest carry nothing we use.
    for name in [
        "deployment_step_success.json",
        "deployment_success.json",
        "failed_health_check_event.json",
        "pod_created_event.json",
        "event_stream_attached.json",
    ] {
        assert!(matches!(&event_of(name)[..], [Event::Ignored { .. }]), "{name}");
    }
}

#[test]
fn rest_samples() {
    let snap = parse_snapshot(&read("rest-apps-embed-tasks.json"), Timestamp(42)).unwrap();
    assert!(snap.broken.is_empty());
    let app = snap.apps.iter().find(|a| a.spec.id.as_str() == "/shop/web").unwrap();
    assert_eq!(app.spec.labels["KONG_ROUTE"], "/shop");
    assert_eq!(app.tasks.len(), 2);
    let t = &app.tasks[1];
    assert_eq!(t.facts.task_id.as_str(), "shop_web.instance-9b01f2aa-6ca8-11e7-beb2-0e2beceebfcc._app.1");
    assert_eq!(t.facts.host, "10.0.2.149");
    assert_eq!(t.facts.ports, [31012, 31013]);
    assert_eq!(t.facts.state, TaskState::Running);
    assert_eq!(t.facts.at, Timestamp(42));
    assert_eq!(t.healthy, Some(true));

    let one = parse_app_response(&read("rest-app.json"), Timestamp(1)).unwrap();
    assert_eq!(one.spec, app.spec);
    assert_eq!(one.tasks.len(), 2);

    let tasks = parse_tasks(&read("rest-tasks.json"), Timestamp(1)).unwrap();
    assert_eq!(tasks[0].facts.task_id.as_str(), "frontend-foosball.083be411-5d1f-11e5-88f7-56b91e7a505b");
    assert_eq!(tasks[0].facts.ports, [31292]);
    assert_eq!(tasks[0].facts.app_id.as_str(), "/frontend-foosball");

    let leader: serde_json::Value = serde_json::from_str(&read("rest-leader.json")).unwrap();
    assert_eq!(leader["leader"], "marathon.globalcorp.com:8080");
    let spec =
        parse_app(&serde_json::from_str::<serde_json::Value>(&read("rest-app.json")).unwrap()["app"].to_string())
            .unwrap();
    assert_eq!(spec, one.spec);
}

fn stream_items(name: &str) -> Vec<StreamItem> {
    let bytes = read(name);
    let mut d = SseDecoder::new(1 << 20);
    // Feed in small chunks to exercise splitting.
    bytes.as_bytes().chunks(7).flat_map(|c| d.feed(c)).map(frame_item).collect()
}

#[test]
fn stream_txt() {
    let mut d = SseDecoder::new(1 << 20);
    let frames = d.feed(read("stream.txt").as_bytes());
    let names: Vec<_> = frames
        .iter()
        .map(|f| match f {
            Frame::Event { event_type, .. } => event_type.as_str(),
            Frame::Oversized { .. } => "OVERSIZED",
        })
        .collect();
    assert_eq!(names[0], "event_stream_attached");
    assert_eq!(names.iter().filter(|n| **n == "status_update_event").count(), 5);
    assert_eq!(*names.last().unwrap(), "deployment_success");

    let items = stream_items("stream.txt");
    let events: Vec<Event> = items
        .into_iter()
        .flat_map(|i| match i {
            StreamItem::Events { events, .. } => events,
            other => panic!("{other:?}"),
        })
        .collect();
    // TASK_RUNNING for both instances before the labels arrive.
    let first_spec = events.iter().position(|e| matches!(e, Event::Spec { .. })).unwrap();
    let running: Vec<_> = events
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Event::Status(f) if f.state == TaskState::Running))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(running.len(), 2);
    assert!(running.iter().all(|i| *i < first_spec));
    let Event::Spec { spec, .. } = &events[first_spec] else { unreachable!() };
    assert_eq!(spec.labels["consul"], "web");
    let healthy = events.iter().filter(|e| matches!(e, Event::Health { healthy: Some(true), .. })).count();
    assert_eq!(healthy, 4);
}

#[test]
fn stream_multi_json() {
    let items = stream_items("stream-multi-json.txt");
    let [StreamItem::Events { event_type, events }] = &items[..] else { panic!("{items:?}") };
    assert_eq!(event_type, "status_update_event");
    let ids: Vec<_> = events
        .iter()
        .map(|e| match e {
            Event::Status(f) => (f.task_id.to_string(), f.host.clone(), f.ports.clone()),
            e => panic!("{e:?}"),
        })
        .collect();
    assert_eq!(
        ids,
        [
            ("prod_web.9a0b0c2d-8290-11e7-a1d5-02427a3a4e1d".to_string(), "10.0.12.31".to_string(), vec![31045, 31046]),
            ("prod_web.9a0c4d5e-8290-11e7-a1d5-02427a3a4e1d".to_string(), "10.0.12.33".to_string(), vec![31777, 31778]),
        ]
    );
}
