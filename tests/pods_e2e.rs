//! Marathon pods through the `switchboard` binary against the simulators:
//! a pod of two containers and three endpoints (host-port and
//! container-network endpoints) registered in Consul, Kong and Vulcand at
//! the addresses Marathon allocates; scaled down and destroyed it leaves
//! nothing; `reconcile --once` takes pods from `/v2/pods/::status`; and a
//! Marathon 1.3 (no `/v2/pods`) still converges for apps.

mod common;

use std::collections::{BTreeMap, BTreeSet};

use common::{WAIT, World, eventually, everywhere_app, run_cli, s};
use serde_json::{Value, json};
use switchboard::sim::consul::ConsulSimOptions;
use switchboard::sim::marathon::{Generation, ModelOptions, SimEvent};

/// Two containers, three endpoints on container network `dcos`: `web`
/// declares a hostPort (agent host : allocated port), `admin` and `prom`
/// only a containerPort (instance IP : container port). Published on Kong
/// and Vulcand through the pod labels (on its first selected endpoint).
fn shop_pod() -> Value {
    json!({
        "id": "/prod/shop",
        "labels": {"consul": "", "public": "tag", "kong.hosts": "shop.example.com", "vulcand.host": "shop.local"},
        "containers": [
            {"name": "web", "resources": {"cpus": 0.5, "mem": 256},
             "endpoints": [
                {"name": "web", "containerPort": 8080, "hostPort": 0, "labels": {"consul": "shop-web"}},
                {"name": "admin", "containerPort": 9090, "labels": {"consul": "shop-admin"}}],
             "healthCheck": {"http": {"endpoint": "web", "path": "/health"}, "intervalSeconds": 10, "timeoutSeconds": 2}},
            {"name": "metrics", "resources": {"cpus": 0.25, "mem": 64},
             "endpoints": [{"name": "prom", "containerPort": 9102, "labels": {"consul": "shop-metrics"}}]}
        ],
        "networks": [{"name": "dcos", "mode": "container"}]
    })
}

/// Consul: service ID → (service, address:port, pod instance meta).
fn consul_pod_services(w: &World) -> BTreeMap<String, (String, String, String)> {
    w.consul()
        .services()
        .into_iter()
        .filter(|(_, v)| v["Meta"]["marathon_app_id"] == "/prod/shop")
        .map(|(id, v)| {
            let addr = format!("{}:{}", v["Address"].as_str().unwrap_or(""), v["Port"]);
            let inst = v["Meta"]["marathon_pod_instance_id"].as_str().unwrap_or("").to_owned();
            (id, (v["Service"].as_str().unwrap_or("").to_owned(), addr, inst))
        })
        .collect()
}

/// What Consul should hold for the pod's running instances in the model.
fn expected_consul(w: &World) -> BTreeMap<String, (String, String, String)> {
    let m = w.marathon.model();
    let mut out = BTreeMap::new();
    for inst in m.pod_instance_ids("/prod/shop") {
        for (endpoint, addr) in m.pod_endpoints_of(&inst) {
            let port = addr.rsplit_once(':').map(|(_, p)| p.to_owned()).unwrap_or_default();
            let service = format!("shop-{}", if endpoint == "prom" { "metrics" } else { endpoint.as_str() });
            out.insert(format!("{inst}:{port}"), (service, addr, inst.clone()));
        }
    }
    out
}

/// Every Kong target of Switchboard's upstreams.
fn kong_targets(w: &World) -> BTreeSet<String> {
    let k = w.kong();
    let mut out = BTreeSet::new();
    for up in k.upstreams().as_array().into_iter().flatten() {
        let Some(name) = up["name"].as_str().filter(|n| n.ends_with(".default")) else { continue };
        for t in k.targets(name).as_array().into_iter().flatten() {
            out.extend(t["target"].as_str().map(str::to_owned));
        }
    }
    out
}

/// Every Vulcand server URL of Switchboard's backends.
fn vulcand_urls(w: &World) -> BTreeSet<String> {
    let v = w.vulcand();
    let mut out = BTreeSet::new();
    for b in v.backends().as_array().into_iter().flatten() {
        let Some(id) = b["Id"].as_str().filter(|id| id.starts_with("sb.default.")) else { continue };
        for srv in v.servers(id).as_array().into_iter().flatten() {
            out.extend(srv["URL"].as_str().map(str::to_owned));
        }
    }
    out
}

/// `host:port` of the `web` endpoint of every running instance.
fn web_targets(w: &World) -> BTreeSet<String> {
    let m = w.marathon.model();
    m.pod_endpoints("/prod/shop").into_iter().filter(|(e, _)| e == "web").map(|(_, a)| a).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_is_registered_everywhere_then_scaled_down_and_destroyed_leaves_nothing() {
    let w = World::builder().all_backends().start().await;
    let d = w.subscribed_daemon(&[]).await;

    let events = w.marathon.model().deploy_pod(shop_pod(), 2);
    w.emit(&events);
    eventually("2 instances × 3 endpoints in Consul", WAIT, || {
        let want = expected_consul(&w);
        want.len() == 6 && consul_pod_services(&w) == want
    })
    .await;
    // Addresses as Marathon allocates them: web on the agent's host port,
    // admin and prom at the instance's container IP and container port.
    let held = consul_pod_services(&w);
    let by_service =
        |svc: &str| -> Vec<String> { held.values().filter(|(s, _, _)| s == svc).map(|(_, a, _)| a.clone()).collect() };
    assert!(by_service("shop-web").iter().all(|a| a.starts_with("10.0.2.") && !a.ends_with(":8080")), "{held:?}");
    assert!(by_service("shop-admin").iter().all(|a| a.starts_with("9.0.") && a.ends_with(":9090")), "{held:?}");
    assert!(by_service("shop-metrics").iter().all(|a| a.starts_with("9.0.") && a.ends_with(":9102")), "{held:?}");
    let svc = w.consul().services().into_values().find(|v| v["Service"] == "shop-web").unwrap();
    assert_eq!(svc["Tags"], json!(["switchboard", "public"]));
    assert_eq!(svc["Meta"]["managed_by"], "switchboard");
    // Kong and Vulcand route to the first selected endpoint (web) of each instance.
    let want_targets = web_targets(&w);
    assert_eq!(want_targets.len(), 2);
    eventually("kong balances to both web endpoints", WAIT, || kong_targets(&w) == want_targets).await;
    let want_urls: BTreeSet<String> = want_targets.iter().map(|a| format!("http://{a}")).collect();
    eventually("vulcand routes to both web endpoints", WAIT, || vulcand_urls(&w) == want_urls).await;

    // The status page lists the pod beside apps (a pod is an app to the core).
    let (code, body) = common::get(&format!("{}/api/status", d.status_url().await)).await;
    assert_eq!(code, 200);
    assert!(body.contains("/prod/shop"), "{body}");

    // Scale down to one instance.
    let events = w.marathon.model().scale_pod("/prod/shop", 1);
    w.emit(&events);
    eventually("1 instance × 3 endpoints in Consul", WAIT, || {
        let want = expected_consul(&w);
        want.len() == 3 && consul_pod_services(&w) == want
    })
    .await;
    let want_targets = web_targets(&w);
    eventually("kong follows the scale-down", WAIT, || kong_targets(&w) == want_targets).await;

    // Destroy: nothing left anywhere.
    let events = w.marathon.model().destroy_pod("/prod/shop");
    w.emit(&events);
    eventually("nothing in Consul", WAIT, || consul_pod_services(&w).is_empty()).await;
    eventually("nothing in Kong", WAIT, || kong_targets(&w).is_empty()).await;
    eventually("nothing in Vulcand", WAIT, || vulcand_urls(&w).is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_events_in_a_scrambled_order_register_the_same() {
    let w = World::builder().consul(ConsulSimOptions::default()).start().await;
    let _d = w.subscribed_daemon(&[]).await;
    let mut events: Vec<SimEvent> = w.marathon.model().deploy_pod(shop_pod(), 2);
    // Status updates last, the rest reversed: nothing carries the pod spec,
    // which is fetched from /v2/pods/{id}::status after the grace period.
    let (status, mut rest): (Vec<SimEvent>, Vec<SimEvent>) =
        events.drain(..).partition(|e| e.event_type == "status_update_event");
    rest.reverse();
    w.emit(&rest);
    let mut status = status;
    status.reverse();
    w.emit(&status);
    eventually("registered from events in any order", WAIT, || {
        let want = expected_consul(&w);
        want.len() == 6 && consul_pod_services(&w) == want
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_registers_pods_from_the_snapshot() {
    let w = World::builder().consul(ConsulSimOptions::default()).start().await;
    let _ = w.marathon.model().deploy_pod(shop_pod(), 1);
    let data = w.data_dir().display().to_string();
    let mut args = s(&["reconcile", "--once", "--data-dir", &data]);
    args.extend(w.args(&[]));
    let out = run_cli(args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let want = expected_consul(&w);
    assert_eq!(want.len(), 3);
    assert_eq!(consul_pod_services(&w), want);
    // `switchboard state` lists the pod and its instance like an app's.
    let out = run_cli(s(&["state", "--data-dir", &data])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    let inst = w.marathon.model().pod_instance_ids("/prod/shop")[0].clone();
    assert!(text.contains("/prod/shop") && text.contains(&inst), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_marathon_without_pods_still_converges_for_apps() {
    let opts = ModelOptions {
        generation: Generation::V1_3,
        keepalive: std::time::Duration::from_millis(500),
        ..ModelOptions::default()
    };
    let w = World::builder().marathon(opts).consul(ConsulSimOptions::default()).start().await;
    // Marathon 1.3 knows no pods: 404 on /v2/pods.
    assert!(w.marathon.model().deploy_pod(shop_pod(), 1).is_empty());
    let _ = w.marathon.model().deploy(everywhere_app("/shop/old"), 1);
    let _d = w.subscribed_daemon(&[]).await;
    w.converge_consul("/shop/old", "the app registered from the startup resync").await;
    let events = w.marathon.model().deploy(everywhere_app("/shop/web"), 2);
    w.emit(&events);
    w.converge_consul("/shop/web", "a new app registered").await;
    assert_eq!(w.consul_ids().len(), 3);
    // And `reconcile --once` agrees.
    let data = w.dir.path().join("once").display().to_string();
    let mut args = s(&["reconcile", "--once", "--data-dir", &data]);
    args.extend(w.args(&[]));
    let out = run_cli(args).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
