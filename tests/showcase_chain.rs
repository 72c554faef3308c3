//! The showcase chain through the `switchboard` binary: one Marathon app
//! labelled for Consul, Kong and Vulcand lands in all three registries, with
//! Kong forwarding to Vulcand's listener (no Kong targets), and leaves all
//! three when destroyed.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Daemon, eventually, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::kong::{KongSim, KongSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions};
use switchboard::sim::vulcand::{VulcandSim, VulcandSimOptions};

const WAIT: Duration = Duration::from_secs(20);
const APP: &str = "/shop/web";
/// Stands for Vulcand's HTTP listener; Kong forwards there. Never contacted.
const VULCAND_LISTENER: &str = "http://127.0.0.1:8181";
const VULCAND_ID: &str = "sb.default.shop-web~";

fn as_vec(v: Value) -> Vec<Value> {
    match v {
        Value::Array(a) => a,
        _ => Vec::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_deploy_lands_in_consul_vulcand_and_kong_and_one_destroy_removes_it() {
    let marathon = MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() })
        .await
        .expect("marathon sim");
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul sim");
    let kong = KongSim::start(KongSimOptions::default()).await.expect("kong sim");
    let vulcand = VulcandSim::start(VulcandSimOptions::default()).expect("vulcand sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let _d = Daemon::start(
        &dir.path().join("data"),
        &s(&[
            "--marathon",
            marathon.url().as_str(),
            "--consul",
            &consul.url(),
            "--kong",
            kong.url().as_str(),
            "--kong-forward-to",
            VULCAND_LISTENER,
            "--vulcand",
            vulcand.url().as_str(),
            "--resync-interval",
            "0",
        ]),
    );
    eventually("stream subscribed", WAIT, || marathon.subscribers() > 0).await;

    // Kong keeps the Host header (preserve_host), so Vulcand's frontend must
    // match the same public host for traffic to flow through the chain.
    let events = marathon.model().deploy(
        json!({
            "id": APP,
            "cmd": "python3 -m http.server $PORT0",
            "labels": {"consul": "", "kong.hosts": "shop.example.com", "vulcand.host": "shop.example.com"},
            "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}]
        }),
        2,
    );
    marathon.emit(&events);

    // (task id, host, port) of every running instance.
    let instances: BTreeSet<(String, String, u64)> = {
        let apps = marathon.model().apps_json();
        apps["apps"][0]["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|t| {
                (
                    t["id"].as_str().unwrap().to_owned(),
                    t["host"].as_str().unwrap().to_owned(),
                    t["ports"][0].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(instances.len(), 2);

    // Consul: one service per instance, named after the app.
    let consul_want: BTreeSet<String> = instances.iter().map(|(t, _, p)| format!("{t}:{p}")).collect();
    let consul_ids = || -> BTreeSet<String> { consul.services().into_keys().collect() };
    eventually("one Consul service per instance", WAIT, || consul_ids() == consul_want).await;
    assert!(consul.services().values().all(|v| v["Service"] == "shop-web" && v["Meta"]["marathon_app_id"] == APP));

    // Vulcand: the backend with one server per instance, and the frontend.
    let vulcand_want: BTreeSet<(String, String)> =
        instances.iter().map(|(t, h, p)| (format!("{t}:{p}~"), format!("http://{h}:{p}"))).collect();
    let vulcand_servers = || -> BTreeSet<(String, String)> {
        as_vec(vulcand.servers(VULCAND_ID))
            .iter()
            .map(|s| {
                (s["Id"].as_str().unwrap_or_default().to_owned(), s["URL"].as_str().unwrap_or_default().to_owned())
            })
            .collect()
    };
    let frontend_ok = || {
        as_vec(vulcand.frontends()).iter().any(|f| {
            f["Id"] == VULCAND_ID && f["BackendId"] == VULCAND_ID && f["Route"] == r#"Host("shop.example.com")"#
        })
    };
    eventually("Vulcand backend, servers and frontend", WAIT, || vulcand_servers() == vulcand_want && frontend_ok())
        .await;
    assert_eq!(as_vec(vulcand.backends()).len(), 1);
    assert_eq!(as_vec(vulcand.frontends()).len(), 1);

    // Kong: one service forwarding to Vulcand's listener, one route for the
    // public host keeping the Host header, and no upstream or targets.
    let kong_ok = || {
        let services = as_vec(kong.services());
        let routes = as_vec(kong.routes());
        let [svc] = services.as_slice() else { return false };
        let [route] = routes.as_slice() else { return false };
        svc["protocol"] == "http"
            && svc["host"] == "127.0.0.1"
            && svc["port"] == 8181
            && route["hosts"] == json!(["shop.example.com"])
            && route["preserve_host"] == true
            && route["service"]["id"] == svc["id"]
    };
    eventually("Kong service and route forwarding to Vulcand", WAIT, kong_ok).await;
    let upstreams = as_vec(kong.upstreams());
    let targets: Vec<Value> =
        upstreams.iter().flat_map(|u| as_vec(kong.targets(u["name"].as_str().unwrap_or_default()))).collect();
    assert!(targets.is_empty(), "Kong must not balance the instances itself: {targets:?}");
    assert!(upstreams.is_empty(), "no Kong upstream in forwarding mode: {upstreams:?}");

    eprintln!(
        "DBG {} {} {:?} {}",
        kong.services(),
        kong.routes(),
        consul.services().keys().collect::<Vec<_>>(),
        vulcand.frontends()
    );
    // Destroy: all three registries lose the app.
    let events = marathon.model().destroy(APP);
    marathon.emit(&events);
    eventually("Consul services removed", WAIT, || consul.services().is_empty()).await;
    eventually("Vulcand backend and frontend removed", WAIT, || {
        as_vec(vulcand.backends()).is_empty() && as_vec(vulcand.frontends()).is_empty()
    })
    .await;
    eventually("Kong service and route removed", WAIT, || {
        as_vec(kong.services()).is_empty() && as_vec(kong.routes()).is_empty()
    })
    .await;
    assert!(as_vec(kong.upstreams()).is_empty());
}
