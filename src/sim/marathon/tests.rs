use super::*;
use crate::marathon::client::parse_snapshot;
use crate::marathon::event::{Event, parse};

fn web() -> Value {
    json!({"id": "/shop/web", "labels": {"consul": "web"},
           "portDefinitions": [{"port": 10101, "name": "http"}, {"port": 10102}],
           "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0}]})
}

fn types(evs: &[SimEvent]) -> Vec<&str> {
    evs.iter().map(|e| e.event_type.as_str()).collect()
}

/// Every event parses, and timestamps strictly increase.
fn parse_all(evs: &[SimEvent]) -> Vec<Event> {
    let mut last = Timestamp(0);
    let mut out = Vec::new();
    for e in evs {
        let at = Timestamp::parse(e.data["timestamp"].as_str().unwrap()).unwrap();
        assert!(at > last, "{} not after {last}", e.event_type);
        last = at;
        out.extend(parse(&e.event_type, &e.data.to_string()).unwrap());
    }
    out
}

#[test]
fn deploy_follows_marathon_order() {
    let mut m = Model::new(ModelOptions::default());
    let evs = m.deploy(web(), 1);
    assert_eq!(
        types(&evs),
        [
            "api_post_event",
            "group_change_success",
            "deployment_info",
            "deployment_step_success",
            "deployment_info",
            "status_update_event",
            "instance_changed_event",
            "status_update_event",
            "status_update_event",
            "instance_changed_event",
            "health_status_changed_event",
            "instance_health_changed_event",
            "deployment_step_success",
            "deployment_success",
        ]
    );
    let parsed = parse_all(&evs);
    let running = parsed.iter().find_map(|e| match e {
        Event::Status(f) if f.state == TaskState::Running => Some(f.clone()),
        _ => None,
    });
    let f = running.unwrap();
    assert!(f.task_id.as_str().starts_with("shop_web.instance-") && f.task_id.as_str().ends_with("._app.1"));
    assert_eq!(f.ports, [31000, 31001]);
    assert_eq!(f.version, m.app_version("/shop/web").unwrap());
}

#[test]
fn snapshot_matches_model() {
    let mut m = Model::new(ModelOptions::default());
    m.deploy(web(), 2);
    let t0 = m.task_ids("/shop/web")[0].clone();
    m.set_health(&t0, false);
    let snap = parse_snapshot(&m.apps_json().to_string(), Timestamp(1)).unwrap();
    assert!(snap.broken.is_empty());
    let app = &snap.apps[0];
    assert_eq!(app.spec.labels["consul"], "web");
    let health: Vec<_> = app.tasks.iter().map(|t| (t.facts.task_id.to_string(), t.healthy)).collect();
    assert_eq!(health, [(t0, Some(false)), (m.task_ids("/shop/web")[1].clone(), Some(true))]);
    assert!(m.app_json("/nope").is_none());
    assert!(m.app_json("shop/web").is_some());
}

#[test]
fn restart_has_no_api_post_and_replaces_tasks() {
    let mut m = Model::new(ModelOptions::default());
    m.deploy(web(), 2);
    let old = m.task_ids("/shop/web");
    let evs = m.restart("/shop/web");
    assert!(!types(&evs).contains(&"api_post_event"));
    let new = m.task_ids("/shop/web");
    assert_eq!(new.len(), 2);
    assert!(new.iter().all(|t| !old.contains(t)));
    let states: Vec<_> = parse_all(&evs)
        .into_iter()
        .filter_map(|e| match e {
            Event::Status(f) => Some((old.contains(&f.task_id.to_string()), f.state)),
            _ => None,
        })
        .collect();
    let first_old = states.iter().position(|(o, _)| *o).unwrap();
    assert!(states[..first_old].contains(&(false, TaskState::Running)), "new tasks run first");
    assert_eq!(states.last(), Some(&(true, TaskState::Killed)));
}

#[test]
fn kill_task_is_replaced_without_deployment() {
    let mut m = Model::new(ModelOptions::default());
    m.deploy(web(), 1);
    let t = m.task_ids("/shop/web")[0].clone();
    let evs = m.kill_task(&t);
    assert!(!types(&evs).iter().any(|t| t.starts_with("deployment")));
    assert_eq!(evs[0].data["taskStatus"], "TASK_KILLING");
    assert_eq!(m.task_ids("/shop/web").len(), 1);
    assert_ne!(m.task_ids("/shop/web")[0], t);
}

#[test]
fn destroy_stops_app_and_heavy_plans_carry_specs() {
    let mut m = Model::new(ModelOptions { heavy_plans: true, ..ModelOptions::default() });
    let deploy = parse_all(&m.deploy(web(), 1));
    assert!(deploy.iter().any(|e| matches!(e, Event::Spec { spec, .. } if spec.id.as_str() == "/shop/web")));
    let evs = m.destroy("/shop/web");
    let parsed = parse_all(&evs);
    assert!(matches!(parsed[1], Event::AppStopped { .. }), "{parsed:?}");
    assert!(types(&evs).contains(&"app_terminated_event"));
    assert_eq!(m.apps_json(), json!({"apps": []}));
}

#[test]
fn scale_down_and_unreachable() {
    let mut m = Model::new(ModelOptions::default());
    m.deploy(web(), 3);
    m.scale("/shop/web", 1);
    assert_eq!(m.task_ids("/shop/web").len(), 1);
    let t = m.task_ids("/shop/web")[0].clone();
    m.unreachable(&t);
    assert_eq!(m.apps_json()["apps"][0]["tasks"][0]["state"], "TASK_UNREACHABLE");
    let evs = m.lose_task(&t);
    assert_eq!(evs[0].data["taskStatus"], "TASK_LOST");
    assert_eq!(m.task_ids("/shop/web").len(), 1);
}

/// Two containers, three endpoints: `web` (hostPort on the container
/// network), `admin` (container port only), `prom` (container port only).
fn shop_pod() -> Value {
    json!({"id": "/prod/shop", "labels": {"consul": ""}, "containers": [
        {"name": "web", "resources": {"cpus": 0.5, "mem": 256},
         "endpoints": [{"name": "web", "containerPort": 8080, "hostPort": 0}, {"name": "admin", "containerPort": 9090}],
         "healthCheck": {"http": {"endpoint": "web", "path": "/health"}}},
        {"name": "metrics", "resources": {"cpus": 0.25, "mem": 64},
         "endpoints": [{"name": "prom", "containerPort": 9102}]}],
        "networks": [{"name": "dcos", "mode": "container"}]})
}

#[test]
fn pods_deploy_with_pod_actions_and_parse() {
    for (generation, suffix) in [(Generation::V1_8, ".web.1"), (Generation::V1_4, ".web")] {
        let mut m = Model::new(ModelOptions { generation, ..ModelOptions::default() });
        let evs = m.deploy_pod(shop_pod(), 2);
        assert_eq!(evs[0].event_type, "pod_created_event");
        assert_eq!(evs[0].data["uri"], "/v2/pods");
        let actions: Vec<&str> = evs
            .iter()
            .filter(|e| e.event_type == "deployment_info")
            .map(|e| e.data["currentStep"]["actions"][0]["action"].as_str().unwrap())
            .collect();
        assert_eq!(actions, ["StartPod", "ScalePod"]);
        let parsed = parse_all(&evs);
        let web_running: Vec<_> = parsed
            .iter()
            .filter_map(|e| match e {
                Event::Status(f) if f.state == TaskState::Running && f.task_id.pod_container() == Some("web") => {
                    Some(f.clone())
                }
                _ => None,
            })
            .collect();
        assert_eq!(web_running.len(), 2);
        assert!(web_running[0].task_id.as_str().ends_with(suffix), "{}", web_running[0].task_id);
        assert_eq!(web_running[0].app_id.as_str(), "/prod/shop");
        assert_eq!(web_running[0].ports.len(), 1, "one hostPort endpoint in `web`");
        // The status as a registrator reads it.
        let status = m.pods_status_json().unwrap();
        let (pods, broken) = crate::marathon::pod::parse_pods_status(&status.to_string(), Timestamp(1)).unwrap();
        assert!(broken.is_empty(), "{broken:?}");
        assert_eq!(pods[0].tasks.len(), 4, "2 instances × 2 containers");
        assert!(pods[0].tasks.iter().all(|t| t.healthy == Some(true)));
        assert_eq!(m.pod_endpoints("/prod/shop").len(), 6);
        // Scale down, then destroy.
        let evs = m.scale_pod("/prod/shop", 1);
        parse_all(&evs);
        assert_eq!(m.pod_instance_ids("/prod/shop").len(), 1);
        let evs = m.destroy_pod("/prod/shop");
        assert_eq!(evs[0].event_type, "pod_deleted_event");
        assert!(
            parse_all(&evs)
                .iter()
                .any(|e| matches!(e, Event::AppStopped { app_id, .. } if app_id.as_str() == "/prod/shop"))
        );
        assert_eq!(m.pods_status_json().unwrap(), json!([]));
    }
}

#[test]
fn marathon_1_3_has_no_pods() {
    let mut m = Model::new(ModelOptions { generation: Generation::V1_3, ..ModelOptions::default() });
    assert!(m.deploy_pod(shop_pod(), 1).is_empty());
    assert_eq!(m.pods_json(), None);
    assert_eq!(m.pods_status_json(), None);
}
