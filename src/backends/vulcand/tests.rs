//! Vulcand backend against the simulator: what an operator would check in
//! Vulcand after Switchboard ran (servers, frontends, who deleted what).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::*;
use crate::model::Routes;
use crate::sim::vulcand::{Engine, Era, VulcandSim, VulcandSimOptions};

pub(super) fn reg(app: &str, task: &str, address: &str, port: u16, route: Option<&str>) -> Registration {
    let service = app.trim_start_matches('/').replace('/', "-");
    Registration {
        id: format!("{task}:{port}"),
        service,
        app_id: app.to_owned(),
        task_id: task.to_owned(),
        address: address.to_owned(),
        port,
        tags: vec!["switchboard".to_owned()],
        consul: false,
        checks: vec![],
        healthy: None,
        has_health_checks: false,
        routes: Routes { vulcand_route: route.map(str::to_owned), ..Routes::default() },
        host: String::new(),
    }
}

const WEB_ROUTE: &str = r#"Host("web.example.com") && PathRegexp("/.*")"#;

fn web(n: usize) -> Vec<Registration> {
    (0..n)
        .map(|i| reg("/web", &format!("web.instance-{i}._app.1"), "10.0.3.17", 31000 + i as u16, Some(WEB_ROUTE)))
        .collect()
}

fn backend_for(sim: &VulcandSim, cluster: &str, ttl: Option<Duration>) -> VulcandBackend {
    VulcandBackend::new(VulcandConfig {
        url: sim.url(),
        cluster: cluster.to_owned(),
        server_ttl: ttl,
        timeout: Duration::from_secs(2),
        tls: Default::default(),
    })
    .unwrap()
}

/// What the planner does, in miniature: select, compare with `list_owned`,
/// register what differs, deregister what is no longer desired. Returns the
/// new ledger.
async fn converge(b: &VulcandBackend, desired: &[Registration], ledger: &[Registration]) -> Vec<Registration> {
    let keep = b.select(desired).keep;
    let observed = b.list_owned(ledger).await.unwrap();
    for d in &keep {
        let up_to_date = observed.iter().any(|o| o.id == d.id && b.same(d, o));
        if !up_to_date {
            b.apply(&Op::Register(d.clone())).await.unwrap();
        }
    }
    for old in ledger {
        if !keep.iter().any(|d| d.id == old.id) {
            let service_empty = !keep.iter().any(|d| d.service == old.service);
            b.apply(&Op::Deregister { registration: old.clone(), service_empty }).await.unwrap();
        }
    }
    keep
}

fn server_urls(sim: &VulcandSim, backend_id: &str) -> Vec<String> {
    let mut urls: Vec<String> =
        sim.servers(backend_id).as_array().unwrap().iter().map(|s| s["URL"].as_str().unwrap().to_owned()).collect();
    urls.sort();
    urls
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array().unwrap().iter().map(|o| o["Id"].as_str().unwrap().to_owned()).collect()
}

async fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !cond() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn post(sim: &VulcandSim, path: &str, body: Value) {
    let url = format!("{}{}", sim.url().as_str().trim_end_matches('/'), path);
    let resp = reqwest::Client::new().post(url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 200, "{path}: {}", resp.text().await.unwrap());
}

#[tokio::test]
async fn servers_follow_scale_up_and_down() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", None);
    let bid = "sb.default.web~";

    let ledger = converge(&b, &web(3), &[]).await;
    assert_eq!(ids(&sim.backends()), vec![bid]);
    assert_eq!(
        server_urls(&sim, bid),
        vec!["http://10.0.3.17:31000", "http://10.0.3.17:31001", "http://10.0.3.17:31002"]
    );
    let fe = &sim.frontends()[0];
    assert_eq!(
        (fe["Id"].as_str(), fe["BackendId"].as_str(), fe["Route"].as_str()),
        (Some(bid), Some(bid), Some(WEB_ROUTE))
    );
    assert_eq!(ids(&sim.servers(bid))[0], "web.instance-0._app.1:31000~");

    // Converged: a second pass writes nothing.
    let writes = sim.writes().len();
    let ledger = converge(&b, &web(3), &ledger).await;
    assert_eq!(sim.writes().len(), writes, "an up-to-date registration was rewritten");

    let ledger = converge(&b, &web(1), &ledger).await;
    assert_eq!(server_urls(&sim, bid), vec!["http://10.0.3.17:31000"]);
    assert_eq!(ids(&sim.frontends()), vec![bid], "scaling down keeps the frontend");
    assert_eq!(b.list_owned(&ledger).await.unwrap(), web(1));
}

#[tokio::test]
async fn destroy_removes_servers_then_frontend_then_backend() {
    for engine in [Engine::EtcdV2, Engine::EtcdV3] {
        let sim = VulcandSim::start(VulcandSimOptions { era: Era::Current, engine }).unwrap();
        let b = backend_for(&sim, "default", None);
        let ledger = converge(&b, &web(2), &[]).await;
        let before = sim.writes().len();

        converge(&b, &[], &ledger).await;
        let deletes: Vec<String> = sim.writes()[before..].iter().map(|r| format!("{} {}", r.method, r.path)).collect();
        // Both deregistrations say the service is empty; the first removes
        // server, frontend, backend in that order (the backend takes the
        // other server with it), the second reads them gone and deletes
        // nothing.
        assert_eq!(
            deletes,
            [
                "DELETE /v2/backends/sb.default.web~/servers/web.instance-0._app.1:31000~",
                "DELETE /v2/frontends/sb.default.web~",
                "DELETE /v2/backends/sb.default.web~",
            ],
            "{engine:?}"
        );
        assert_eq!(sim.backends(), json!([]));
        assert_eq!(sim.frontends(), json!([]));

        // Deregistering again (a retried op) is success, on v2's 404 too.
        let again = Op::Deregister { registration: web(1)[0].clone(), service_empty: true };
        b.apply(&again).await.unwrap();
    }
}

#[tokio::test]
async fn vulcand_down_then_back_is_transient() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", None);
    let op = Op::Register(web(1)[0].clone());

    sim.stop().await;
    let err = b.apply(&op).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(b.list_owned(&web(1)).await.unwrap_err().is_transient());
    assert!(!err.to_string().contains("127.0.0.1"), "error names the URL: {err}");

    sim.restart().await.unwrap();
    sim.set_failing(Some(503));
    assert!(b.apply(&op).await.unwrap_err().is_transient());
    sim.set_failing(None);
    b.apply(&op).await.unwrap();
    assert_eq!(server_urls(&sim, "sb.default.web~"), vec!["http://10.0.3.17:31000"]);
    assert_eq!(b.list_owned(&web(1)).await.unwrap(), web(1));
}

#[tokio::test]
async fn hand_deleted_server_and_edited_route_are_repaired() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", None);
    let bid = "sb.default.web~";
    let ledger = converge(&b, &web(2), &[]).await;

    assert!(sim.delete_server_by_hand(bid, "web.instance-1._app.1:31001~"));
    let owned = b.list_owned(&ledger).await.unwrap();
    assert_eq!(owned, web(1), "a missing server is absent from list_owned");

    // Someone points our frontend elsewhere by hand.
    post(
        &sim,
        "/v2/frontends",
        json!({"Frontend": {"Id": bid, "Type": "http", "BackendId": bid, "Route": "Path(`/old`)"}}),
    )
    .await;
    let owned = b.list_owned(&ledger).await.unwrap();
    assert_eq!(owned[0].routes.vulcand_route.as_deref(), Some("Path(`/old`)"));
    assert!(!b.same(&web(1)[0], &owned[0]));

    converge(&b, &web(2), &ledger).await;
    assert_eq!(server_urls(&sim, bid), vec!["http://10.0.3.17:31000", "http://10.0.3.17:31001"]);
    assert_eq!(sim.frontends()[0]["Route"], WEB_ROUTE);
    assert_eq!(b.list_owned(&ledger).await.unwrap(), web(2));
}

#[tokio::test]
async fn foreign_objects_are_never_listed_nor_touched() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    // An operator's own backend, with a name that is a prefix of ours.
    post(&sim, "/v2/backends", json!({"Backend": {"Id": "sb", "Type": "http"}})).await;
    post(&sim, "/v2/backends/sb/servers", json!({"Server": {"Id": "web", "URL": "http://10.9.9.9:80"}})).await;
    post(
        &sim,
        "/v2/frontends",
        json!({"Frontend": {"Id": "sb", "Type": "http", "BackendId": "sb", "Route": WEB_ROUTE}}),
    )
    .await;
    // Another cluster's Switchboard, same service name.
    let other = backend_for(&sim, "other", None);
    let other_ledger = converge(&other, &web(1), &[]).await;

    let b = backend_for(&sim, "default", None);
    let ledger = converge(&b, &web(2), &[]).await;
    let owned = b.list_owned(&ledger).await.unwrap();
    assert_eq!(owned, web(2), "only ledger entries of this cluster are owned");

    converge(&b, &[], &ledger).await;
    assert_eq!(ids(&sim.backends()), vec!["sb", "sb.other.web~"]);
    assert_eq!(ids(&sim.frontends()), vec!["sb", "sb.other.web~"]);
    assert_eq!(server_urls(&sim, "sb"), vec!["http://10.9.9.9:80"]);
    assert_eq!(other.list_owned(&other_ledger).await.unwrap(), web(1));
    assert!(sim.writes().iter().all(|w| w.method != "DELETE" || w.path.contains("sb.default.web~")));
}

#[tokio::test]
async fn prefix_deletes_never_reach_a_neighbour() {
    // etcd v3 deletes by prefix: removing `web` must leave `web-api` alone.
    let sim = VulcandSim::start(VulcandSimOptions { era: Era::Current, engine: Engine::EtcdV3 }).unwrap();
    let b = backend_for(&sim, "default", None);
    let web = reg("/web", "web.1", "10.0.0.1", 3100, Some(r#"Host("web")"#));
    let api = reg("/web-api", "web-api.1", "10.0.0.1", 31000, Some(r#"Host("web-api")"#));
    let web_port2 = reg("/web-api", "web-api.1", "10.0.0.1", 310, Some(r#"Host("web-api")"#));
    let ledger = converge(&b, &[web.clone(), api.clone(), web_port2.clone()], &[]).await;
    let ledger = converge(&b, std::slice::from_ref(&api), &ledger).await;
    assert_eq!(ids(&sim.backends()), vec!["sb.default.web-api~"]);
    assert_eq!(ids(&sim.frontends()), vec!["sb.default.web-api~"]);
    assert_eq!(server_urls(&sim, "sb.default.web-api~"), vec!["http://10.0.0.1:31000"]);
    assert_eq!(b.list_owned(&ledger).await.unwrap(), vec![api]);
}

#[tokio::test]
async fn ttl_servers_live_while_heartbeats_run_and_expire_after() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", Some(Duration::from_secs(1)));
    assert_eq!(b.heartbeat_interval(), Some(Duration::from_secs(1) / 3));
    let bid = "sb.default.web~";
    let ledger = converge(&b, &web(1), &[]).await;
    let sent = sim.writes().into_iter().find(|w| w.path.ends_with("/servers")).unwrap();
    assert_eq!(sent.body.unwrap()["TTL"], "1s");

    // Heartbeats for well over the TTL keep the server.
    let end = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < end {
        b.heartbeat(&ledger).await.unwrap();
        assert_eq!(server_urls(&sim, bid).len(), 1, "server expired despite heartbeats");
        tokio::time::sleep(b.heartbeat_interval().unwrap()).await;
    }

    // Heartbeats stop (Switchboard died): the server goes, nothing else.
    wait_until("server expiry", Duration::from_secs(3), || server_urls(&sim, bid).is_empty()).await;
    assert_eq!(ids(&sim.frontends()), vec![bid]);
    assert_eq!(b.list_owned(&ledger).await.unwrap(), vec![], "an expired server is missing, so it is re-registered");

    // A heartbeat after expiry brings it back.
    b.heartbeat(&ledger).await.unwrap();
    assert_eq!(server_urls(&sim, bid).len(), 1);
}

#[tokio::test]
async fn permanent_servers_send_no_ttl_and_need_no_heartbeat() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", None);
    assert_eq!(b.heartbeat_interval(), None);
    converge(&b, &web(1), &[]).await;
    let sent = sim.writes().into_iter().find(|w| w.path.ends_with("/servers")).unwrap();
    assert_eq!(sent.body.unwrap().get("TTL"), None);
}

#[tokio::test]
async fn bad_routes_are_rejected_against_their_app_before_any_call() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", None);
    let good = web(1);
    let unbalanced = reg("/shop/cart", "cart.1", "10.0.0.2", 80, Some(r#"Host("cart.example.com)"#));
    let parens = reg("/shop/pay", "pay.1", "10.0.0.2", 81, Some(r#"(Host("pay") && Path("/")"#));
    let unknown = reg("/shop/list", "list.1", "10.0.0.2", 82, Some(r#"Hostname("list")"#));
    let bad_host = reg("/shop/bad", "bad.1", "10.0.0.2", 83, Some(r#"Host("not a host")"#));
    let bad_host_2 = reg("/shop/bad", "bad.2", "10.0.0.3", 83, Some(r#"Host("not a host")"#));
    let no_route = reg("/other", "other.1", "10.0.0.2", 84, None);
    let desired = [good.clone(), vec![unbalanced, parens, unknown, bad_host, bad_host_2, no_route]].concat();

    let sel = b.select(&desired);
    assert_eq!(sel.keep, good, "the good app carries on; apps without a route are not Vulcand's");
    let got: Vec<(&str, &str)> = sel.rejected.iter().map(|r| (r.app_id.as_str(), r.label.as_str())).collect();
    assert_eq!(
        got,
        vec![
            ("/shop/bad", "vulcand.host"),
            ("/shop/cart", "vulcand.route"),
            ("/shop/list", "vulcand.route"),
            ("/shop/pay", "vulcand.route"),
        ]
    );
    assert!(sel.rejected.iter().all(|r| r.backend == "vulcand"));
    assert!(sel.rejected[2].reason.contains("unknown matcher \"Hostname\""), "{}", sel.rejected[2].reason);
    assert!(sel.rejected[1].reason.contains("unterminated"), "{}", sel.rejected[1].reason);
    assert!(sim.requests().is_empty(), "select made a call");

    // apply refuses too, permanently and without a call.
    let bad = reg("/shop/cart", "cart.1", "10.0.0.2", 80, Some(r#"Host("a") || Host("b")"#));
    let err = b.apply(&Op::Register(bad)).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn instances_that_disagree_on_the_route_settle_on_one() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", None);
    // A deployment changing the route: two new instances, one old.
    let mut desired = web(3);
    desired[0].routes.vulcand_route = Some(r#"Host("old.example.com")"#.to_owned());
    let ledger = converge(&b, &desired, &[]).await;
    assert!(ledger.iter().all(|r| r.routes.vulcand_route.as_deref() == Some(WEB_ROUTE)));
    assert_eq!(sim.frontends()[0]["Route"], WEB_ROUTE);
    let writes = sim.writes().len();
    converge(&b, &desired, &ledger).await;
    assert_eq!(sim.writes().len(), writes, "the frontend flips between routes");
}

#[test]
fn config_is_checked() {
    let cfg = |url: &str, cluster: &str, ttl: Option<Duration>| VulcandConfig {
        url: url::Url::parse(url).unwrap(),
        cluster: cluster.to_owned(),
        server_ttl: ttl,
        timeout: Duration::from_secs(1),
        tls: Default::default(),
    };
    assert!(cfg("http://v:8182", "default", Some(Duration::from_secs(15))).validate().is_ok());
    assert_eq!(cfg("ftp://v", "default", None).validate(), Err(VulcandConfigError::Scheme("ftp".into())));
    assert_eq!(cfg("http://v", "", None).validate(), Err(VulcandConfigError::EmptyCluster));
    let half = Duration::from_millis(500);
    assert_eq!(cfg("http://v", "c", Some(half)).validate(), Err(VulcandConfigError::Ttl(half)));
    let frac = Duration::from_millis(1500);
    assert_eq!(cfg("http://v", "c", Some(frac)).validate(), Err(VulcandConfigError::Ttl(frac)));
}

#[tokio::test]
async fn every_instance_serves_when_the_route_rides_on_one_registration() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", None);
    let mut desired = web(3);
    desired[1].routes.vulcand_route = None;
    desired[2].routes.vulcand_route = None;
    // Instance 2 has a second port: still one server for it.
    let mut second_port = desired[2].clone();
    second_port.port = 41002;
    second_port.id = format!("{}:41002", second_port.task_id);
    desired.push(second_port);
    // A service without any route is not Vulcand's.
    desired.push(reg("/other", "other.1", "10.0.0.9", 80, None));

    let ledger = converge(&b, &desired, &[]).await;
    assert_eq!(ledger, web(3), "one server per instance, each carrying the route");
    assert_eq!(
        server_urls(&sim, "sb.default.web~"),
        vec!["http://10.0.3.17:31000", "http://10.0.3.17:31001", "http://10.0.3.17:31002"]
    );
    assert_eq!(ids(&sim.backends()), vec!["sb.default.web~"]);
}

#[tokio::test]
async fn heartbeat_never_resurrects_a_removed_backend() {
    let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
    let b = backend_for(&sim, "default", Some(Duration::from_secs(5)));
    let ledger = converge(&b, &web(1), &[]).await;
    converge(&b, &[], &ledger).await;
    // A heartbeat still holding the old ledger runs after the removal.
    b.heartbeat(&ledger).await.unwrap();
    assert_eq!(sim.backends(), json!([]));
    assert_eq!(sim.frontends(), json!([]));
}
