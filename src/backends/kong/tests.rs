//! Kong backend against the simulator, for a 3.x and a 0.x Kong each (and a
//! few in-between generations), driving `select`/`list_owned`/`apply` the way
//! the planner does.

use serde_json::{Value, json};

use super::map;
use super::{KongBackend, KongConfig};
use crate::backends::{BackendError, Op, Registry, Routing, Selection};
use crate::model::{Registration, Routes};
use crate::secret::Secret;
use crate::sim::kong::{KongSim, KongSimOptions};

const MODERN: &str = "3.4.2";
const LEGACY: &str = "0.10.4";
const ALL: &[&str] = &[MODERN, LEGACY, "0.12.3", "1.0.3", "2.1.4", "2.8.1"];

fn reg(app: &str, n: u32, hosts: &[&str], paths: &[&str]) -> Registration {
    let service = app.trim_start_matches('/').replace('/', "-");
    let task = format!("{}.instance-{n}._app.1", service.replace('-', "_"));
    let port = 31000 + n as u16;
    Registration {
        id: format!("{task}:{port}"),
        service,
        app_id: app.to_owned(),
        task_id: task,
        address: format!("10.0.0.{n}"),
        port,
        tags: vec!["switchboard".to_owned()],
        consul: true,
        checks: Vec::new(),
        healthy: None,
        has_health_checks: false,
        routes: Routes {
            kong_hosts: hosts.iter().map(|s| s.to_string()).collect(),
            kong_paths: paths.iter().map(|s| s.to_string()).collect(),
            kong_strip_path: Some(false),
            vulcand_route: None,
        },
        host: String::new(),
    }
}

fn web(n: u32) -> Registration {
    reg("/shop/web", n, &["web.example.com"], &["/"])
}

async fn start(version: &str) -> KongSim {
    KongSim::start(KongSimOptions { version: version.to_owned(), admin_token: None }).await.expect("sim starts")
}

fn backend(sim: &KongSim, tweak: impl FnOnce(&mut KongConfig)) -> KongBackend {
    let mut cfg = KongConfig::new(sim.url());
    tweak(&mut cfg);
    KongBackend::new(cfg).expect("valid config")
}

/// The planner's diff, reduced to what these tests need: register what is
/// desired and not `same` as observed, deregister what is observed and not desired.
fn plan(b: &KongBackend, desired: &[Registration], observed: &[Registration]) -> Vec<Op> {
    let mut ops = Vec::new();
    for d in desired {
        if !observed.iter().any(|o| o.id == d.id && b.same(d, o)) {
            ops.push(Op::Register(d.clone()));
        }
    }
    for o in observed {
        if !desired.iter().any(|d| d.id == o.id) {
            let service_empty = !desired.iter().any(|d| d.service == o.service);
            ops.push(Op::Deregister { registration: o.clone(), service_empty });
        }
    }
    ops
}

/// One resync: select, list, plan, apply, keep the ledger. Returns the selection.
async fn converge(
    b: &KongBackend,
    ledger: &mut Vec<Registration>,
    desired: &[Registration],
) -> Result<Selection, BackendError> {
    let sel = b.select(desired);
    let observed = b.list_owned(ledger).await?;
    for op in plan(b, &sel.keep, &observed) {
        b.apply(&op).await?;
        ledger.retain(|r| r.id != op.registration().id);
        if let Op::Register(r) = &op {
            ledger.push(r.clone());
        }
    }
    Ok(sel)
}

fn name(service: &str) -> String {
    map::entity_name(service, "default")
}

/// Active target strings of an app's upstream.
fn targets(sim: &KongSim, service: &str) -> Vec<String> {
    let mut t: Vec<String> = sim
        .targets(&name(service))
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| t["target"].as_str().map(str::to_owned))
        .collect();
    t.sort();
    t
}

fn names(v: Value) -> Vec<String> {
    let mut n: Vec<String> =
        v.as_array().into_iter().flatten().filter_map(|e| e["name"].as_str().map(str::to_owned)).collect();
    n.sort();
    n
}

fn legacy(version: &str) -> bool {
    version.starts_with("0.")
}

/// Names of what routes traffic for apps: routes (1.x+) or apis (0.x).
fn published(sim: &KongSim, version: &str) -> Vec<String> {
    if legacy(version) { names(sim.apis()) } else { names(sim.routes()) }
}

/// The hosts of the route (or api) named `n`.
fn route_hosts(sim: &KongSim, version: &str, n: &str) -> Option<Value> {
    let all = if legacy(version) { sim.apis() } else { sim.routes() };
    all.as_array()?.iter().find(|r| r["name"] == n).map(|r| r["hosts"].clone())
}

async fn admin(sim: &KongSim, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
    let url = sim.url().join(path.trim_start_matches('/')).expect("url");
    let mut req = reqwest::Client::new().request(method, url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    req.send().await.expect("admin call").status().as_u16()
}

#[tokio::test]
async fn scale_up_and_down_targets_follow() {
    for version in ALL {
        let sim = start(version).await;
        let b = backend(&sim, |_| {});
        let mut ledger = Vec::new();
        converge(&b, &mut ledger, &[web(1), web(2), web(3)]).await.expect("converge");
        assert_eq!(targets(&sim, "shop-web"), ["10.0.0.1:31001", "10.0.0.2:31002", "10.0.0.3:31003"], "{version}");
        assert_eq!(published(&sim, version), [name("shop-web")], "{version}");
        assert_eq!(route_hosts(&sim, version, &name("shop-web")), Some(json!(["web.example.com"])), "{version}");

        converge(&b, &mut ledger, &[web(2)]).await.expect("converge");
        assert_eq!(targets(&sim, "shop-web"), ["10.0.0.2:31002"], "{version}");
        assert_eq!(published(&sim, version), [name("shop-web")], "{version}: app still published");
        assert_eq!(ledger.len(), 1, "{version}");
    }
}

#[tokio::test]
async fn destroying_an_app_removes_all_its_entities() {
    for version in ALL {
        let sim = start(version).await;
        let b = backend(&sim, |_| {});
        let mut ledger = Vec::new();
        let other = reg("/blog", 7, &["blog.example.com"], &[]);
        converge(&b, &mut ledger, &[web(1), web(2), other.clone()]).await.expect("converge");
        converge(&b, &mut ledger, std::slice::from_ref(&other)).await.expect("converge");
        assert_eq!(published(&sim, version), [name("blog")], "{version}");
        assert_eq!(names(sim.upstreams()), [name("blog")], "{version}");
        assert_eq!(names(sim.services()), if legacy(version) { vec![] } else { vec![name("blog")] }, "{version}");
        assert_eq!(targets(&sim, "blog"), ["10.0.0.7:31007"], "{version}");
        assert!(ledger.iter().all(|r| r.service == "blog"), "{version}");
    }
}

#[tokio::test]
async fn health_gating_adds_a_target_only_once_healthy() {
    for version in [MODERN, LEGACY] {
        let sim = start(version).await;
        let b = backend(&sim, |_| {});
        let mut ledger = Vec::new();
        let mut r = web(1);
        r.has_health_checks = true;
        r.healthy = None;
        converge(&b, &mut ledger, std::slice::from_ref(&r)).await.expect("converge");
        assert!(targets(&sim, "shop-web").is_empty(), "{version}: unknown health is not routed");
        assert!(published(&sim, version).is_empty(), "{version}");
        r.healthy = Some(false);
        converge(&b, &mut ledger, std::slice::from_ref(&r)).await.expect("converge");
        assert!(targets(&sim, "shop-web").is_empty(), "{version}");
        r.healthy = Some(true);
        converge(&b, &mut ledger, std::slice::from_ref(&r)).await.expect("converge");
        assert_eq!(targets(&sim, "shop-web"), ["10.0.0.1:31001"], "{version}");
        r.healthy = Some(false);
        converge(&b, &mut ledger, std::slice::from_ref(&r)).await.expect("converge");
        assert!(targets(&sim, "shop-web").is_empty(), "{version}: unhealthy again, unrouted");
        assert!(published(&sim, version).is_empty(), "{version}");
    }
}

#[tokio::test]
async fn foreign_entities_and_other_clusters_survive() {
    for version in [MODERN, LEGACY, "1.0.3"] {
        let sim = start(version).await;
        if legacy(version) {
            let api =
                json!({"name": "legacy-site", "hosts": ["site.example.com"], "upstream_url": "http://10.9.9.9:80"});
            assert_eq!(admin(&sim, reqwest::Method::POST, "/apis", Some(api)).await, 201);
        } else {
            let svc = json!({"name": "hand-made", "host": "10.9.9.9", "port": 80});
            assert_eq!(admin(&sim, reqwest::Method::PUT, "/services/hand-made", Some(svc)).await, 200);
            let route = json!({"hosts": ["site.example.com"], "service": {"name": "hand-made"}});
            assert_eq!(admin(&sim, reqwest::Method::PUT, "/routes/hand-made", Some(route)).await, 200);
        }
        let b = backend(&sim, |_| {});
        let other_cluster = backend(&sim, |c| c.cluster = "east".to_owned());
        let mut ledger = Vec::new();
        let mut east_ledger = Vec::new();
        converge(&other_cluster, &mut east_ledger, &[web(5)]).await.expect("converge east");
        converge(&b, &mut ledger, &[web(1)]).await.expect("converge");
        assert!(
            b.list_owned(&ledger).await.expect("list").iter().all(|r| r.id == web(1).id),
            "{version}: only ours listed"
        );
        converge(&b, &mut ledger, &[]).await.expect("converge");
        let mut want =
            vec!["shop-web.east".to_owned(), if legacy(version) { "legacy-site" } else { "hand-made" }.to_owned()];
        want.sort();
        assert_eq!(published(&sim, version), want, "{version}");
        assert_eq!(sim.targets("shop-web.east").as_array().map(Vec::len), Some(1), "{version}");
    }
}

#[tokio::test]
async fn kong_down_then_back() {
    for version in [MODERN, LEGACY] {
        let sim = start(version).await;
        let b = backend(&sim, |c| c.timeout = std::time::Duration::from_secs(2));
        let mut ledger = Vec::new();
        converge(&b, &mut ledger, &[web(1)]).await.expect("converge");

        sim.stop().await;
        let err = converge(&b, &mut ledger, &[web(1), web(2)]).await.expect_err("kong is down");
        assert!(err.is_transient(), "{version}: {err}");
        let err = b.apply(&Op::Register(web(2))).await.expect_err("kong is down");
        assert!(err.is_transient(), "{version}: {err}");
        sim.restart().await.expect("restart");

        sim.set_failing(Some(503));
        let err = b.list_owned(&ledger).await.expect_err("kong answers 503");
        assert!(err.is_transient(), "{version}: {err}");
        sim.set_failing(None);

        converge(&b, &mut ledger, &[web(1), web(2)]).await.expect("converge after restart");
        assert_eq!(targets(&sim, "shop-web"), ["10.0.0.1:31001", "10.0.0.2:31002"], "{version}");
    }
}

#[tokio::test]
async fn hand_edits_are_detected_and_repaired() {
    for version in [MODERN, LEGACY, "2.1.4"] {
        let sim = start(version).await;
        let b = backend(&sim, |_| {});
        let mut ledger = Vec::new();
        let desired = [web(1), web(2)];
        converge(&b, &mut ledger, &desired).await.expect("converge");
        let n = name("shop-web");

        // A route retargeted by hand, a target removed, a stray target added.
        if legacy(version) {
            let patch = json!({"hosts": ["evil.example.com"]});
            assert_eq!(admin(&sim, reqwest::Method::PATCH, &format!("/apis/{n}"), Some(patch)).await, 200);
        } else {
            let patch = json!({"hosts": ["evil.example.com"]});
            assert_eq!(admin(&sim, reqwest::Method::PATCH, &format!("/routes/{n}"), Some(patch)).await, 200);
        }
        assert_eq!(
            admin(&sim, reqwest::Method::DELETE, &format!("/upstreams/{n}/targets/10.0.0.2:31002"), None).await,
            204
        );
        let stray = json!({"target": "10.6.6.6:666", "weight": 100});
        assert_eq!(admin(&sim, reqwest::Method::POST, &format!("/upstreams/{n}/targets"), Some(stray)).await, 201);

        let observed = b.list_owned(&ledger).await.expect("list");
        let ops = plan(&b, &b.select(&desired).keep, &observed);
        assert!(
            ops.iter().any(|o| matches!(o, Op::Register(r) if r.id == web(1).id)),
            "{version}: drifted route seen: {ops:?}"
        );
        assert!(
            ops.iter().any(|o| matches!(o, Op::Register(r) if r.id == web(2).id)),
            "{version}: missing target seen"
        );
        assert!(
            ops.iter().any(|o| matches!(o, Op::Deregister { registration, service_empty: false } if registration.id == format!("#kong:{n}:10.6.6.6:666"))),
            "{version}: stray target seen: {ops:?}"
        );

        converge(&b, &mut ledger, &desired).await.expect("repair");
        assert_eq!(targets(&sim, "shop-web"), ["10.0.0.1:31001", "10.0.0.2:31002"], "{version}");
        assert_eq!(route_hosts(&sim, version, &n), Some(json!(["web.example.com"])), "{version}");
        let observed = b.list_owned(&ledger).await.expect("list");
        assert!(plan(&b, &b.select(&desired).keep, &observed).is_empty(), "{version}: repaired");
    }
}

#[tokio::test]
async fn conflicting_hosts_reject_the_second_app_only() {
    for version in [MODERN, LEGACY] {
        let sim = start(version).await;
        let b = backend(&sim, |_| {});
        let mut ledger = Vec::new();
        let first = reg("/a/shop", 1, &["shop.example.com"], &["/"]);
        let second = reg("/b/shop", 2, &["SHOP.example.com"], &[]);
        let bystander = reg("/blog", 3, &["blog.example.com"], &[]);
        let sel = converge(&b, &mut ledger, &[second.clone(), first.clone(), bystander]).await.expect("converge");
        assert_eq!(sel.rejected.len(), 1, "{version}: {:?}", sel.rejected);
        let rej = &sel.rejected[0];
        assert_eq!((rej.app_id.as_str(), rej.label.as_str(), rej.backend.as_str()), ("/b/shop", "kong.hosts", "kong"));
        assert!(rej.reason.contains("shop.example.com") && rej.reason.contains("/a/shop"), "{}", rej.reason);
        assert_eq!(published(&sim, version), [name("a-shop"), name("blog")], "{version}");
        assert_eq!(targets(&sim, "a-shop"), ["10.0.0.1:31001"], "{version}");
    }
}

#[tokio::test]
async fn an_unchanged_world_costs_reads_only() {
    for version in ALL {
        let sim = start(version).await;
        let b = backend(&sim, |_| {});
        let mut ledger = Vec::new();
        let desired = [
            web(1),
            web(2),
            web(3),
            reg("/blog", 4, &[], &["/blog"]),
            reg("/api", 5, &["*.api.example.com"], &["/v1", "/v2"]),
        ];
        converge(&b, &mut ledger, &desired).await.expect("converge");
        let writes = sim.writes();
        let reads = sim.requests().len();
        converge(&b, &mut ledger, &desired).await.expect("resync");
        assert_eq!(sim.writes(), writes, "{version}: {:?}", &sim.requests()[reads..]);
        assert!(sim.requests().len() > reads, "{version}: the resync did read");
    }
}

#[tokio::test]
async fn forwarding_topology_points_every_app_at_the_router() {
    for version in [MODERN, LEGACY] {
        let sim = start(version).await;
        let fw: url::Url = "http://10.1.1.1:8181".parse().expect("url");
        let b = backend(&sim, |c| c.forward_to = Some(fw.clone()));
        let mut ledger = Vec::new();
        converge(&b, &mut ledger, &[web(1), web(2)]).await.expect("converge");
        assert!(names(sim.upstreams()).is_empty(), "{version}: no upstream in forwarding mode");
        let n = name("shop-web");
        if legacy(version) {
            let api = sim.apis()[0].clone();
            assert_eq!(
                (api["upstream_url"].clone(), api["preserve_host"].clone()),
                (json!("http://10.1.1.1:8181"), json!(true))
            );
        } else {
            let svc = sim.services()[0].clone();
            assert_eq!((svc["host"].clone(), svc["port"].clone()), (json!("10.1.1.1"), json!(8181)), "{version}");
            assert_eq!(sim.routes()[0]["preserve_host"], json!(true));
        }
        let writes = sim.writes();
        converge(&b, &mut ledger, &[web(1), web(2)]).await.expect("resync");
        assert_eq!(sim.writes(), writes, "{version}: resync writes nothing");
        converge(&b, &mut ledger, &[web(2)]).await.expect("scale down");
        assert_eq!(published(&sim, version), [n], "{version}");
        converge(&b, &mut ledger, &[]).await.expect("destroy");
        assert!(published(&sim, version).is_empty(), "{version}");
        assert!(ledger.is_empty());
    }
}

#[tokio::test]
async fn admin_token_is_sent_in_the_configured_header() {
    let token = ("X-Admin-Key".to_owned(), "s3cret".to_owned());
    let sim =
        KongSim::start(KongSimOptions { version: MODERN.to_owned(), admin_token: Some(token) }).await.expect("sim");
    let without = backend(&sim, |_| {});
    let err = without.list_owned(&[]).await.expect_err("no token");
    assert!(!err.is_transient() && err.to_string().contains("401"), "{err}");
    let with = backend(&sim, |c| {
        c.token = Some(Secret::new("s3cret"));
        c.token_header = "X-Admin-Key".to_owned();
    });
    assert!(!format!("{with:?}").contains("s3cret"));
    let mut ledger = Vec::new();
    converge(&with, &mut ledger, &[web(1)]).await.expect("converge with token");
    assert_eq!(targets(&sim, "shop-web"), ["10.0.0.1:31001"]);
}

#[tokio::test]
async fn kong_before_0_10_is_refused_clearly() {
    let sim = start("0.9.9").await;
    let err = backend(&sim, |_| {}).list_owned(&[]).await.expect_err("0.9");
    assert!(!err.is_transient() && err.to_string().contains("0.10"), "{err}");
}

#[test]
fn bad_configs_are_named() {
    let base = |f: &dyn Fn(&mut KongConfig)| {
        let mut c = KongConfig::new("http://127.0.0.1:8001".parse().expect("url"));
        f(&mut c);
        KongBackend::new(c).map(|_| ()).map_err(|e| e.to_string())
    };
    assert!(base(&|_| {}).is_ok());
    assert!(base(&|c| c.url = "ftp://x".parse().expect("url")).unwrap_err().contains("ftp"));
    assert!(base(&|c| c.cluster = "East.1".to_owned()).unwrap_err().contains("East.1"));
    assert!(base(&|c| c.token_header = "bad header".to_owned()).unwrap_err().contains("bad header"));
}

#[test]
fn label_validation() {
    let check = |hosts: &[&str], paths: &[&str], want: Option<&str>| {
        let sel = map::select(&[reg("/x", 1, hosts, paths)], "default");
        let got = sel.rejected.first().map(|r| r.label.as_str());
        assert_eq!(got, want, "{hosts:?} {paths:?}: {:?}", sel.rejected);
        assert_eq!(sel.keep.len(), usize::from(want.is_none()));
    };
    check(&["web.example.com"], &[], None);
    check(&["*.example.com"], &["/api"], None);
    check(&["example.*"], &[], None);
    check(&["web.example.com:8080"], &[], None);
    check(&["web_example.com"], &[], Some("kong.hosts"));
    check(&["*.*.example.com"], &[], Some("kong.hosts"));
    check(&["web.*.com"], &[], Some("kong.hosts"));
    check(&["-web.example.com"], &[], Some("kong.hosts"));
    check(&[], &["api"], Some("kong.paths"));
    check(&[], &["/a//b"], Some("kong.paths"));
    check(&[], &["/a b"], Some("kong.paths"));
    // Not for Kong at all: neither kept nor rejected.
    let sel = map::select(&[reg("/x", 1, &[], &[])], "default");
    assert_eq!(sel, Selection::default());
}

#[test]
fn conflicts_are_decided_by_the_smallest_app_id() {
    let apps = [
        reg("/z", 1, &[], &["/shared"]),
        reg("/m", 2, &[], &["/shared"]),
        reg("/a", 3, &["a.example.com"], &["/shared"]),
        reg("/m", 4, &[], &["/shared"]),
    ];
    let sel = map::select(&apps, "default");
    let kept: Vec<&str> = sel.keep.iter().map(|r| r.app_id.as_str()).collect();
    assert_eq!(kept, ["/a", "/m", "/m"], "different hosts do not conflict; /m beats /z");
    assert_eq!(sel.rejected.len(), 1);
    assert_eq!((sel.rejected[0].app_id.as_str(), sel.rejected[0].label.as_str()), ("/z", "kong.paths"));
}

#[test]
fn same_ignores_what_kong_cannot_show() {
    let d = web(1);
    let mut o = d.clone();
    o.tags.clear();
    o.checks.clear();
    o.healthy = Some(true);
    o.routes.kong_hosts = vec!["WEB.example.com".to_owned()];
    o.routes.vulcand_route = Some("Host(`x`)".to_owned());
    assert!(map::same(&d, &o));
    o.routes.kong_strip_path = Some(true);
    assert!(!map::same(&d, &o), "strip_path is visible");
    let mut unset = d.clone();
    unset.routes.kong_strip_path = None;
    assert!(map::same(&unset, &o), "unset strip_path means Kong's default, true");
    o.port += 1;
    assert!(!map::same(&unset, &o));
}

#[tokio::test]
async fn a_further_instance_of_a_published_app_costs_one_write_and_a_lost_upstream_is_republished() {
    let sim = start(MODERN).await;
    let b = backend(&sim, |_| {});
    b.apply(&Op::Register(web(1))).await.expect("first instance");
    let writes = sim.writes();
    b.apply(&Op::Register(web(2))).await.expect("second instance");
    assert_eq!(sim.writes() - writes, 1, "only the target is written: {:?}", sim.requests());

    // Kong loses the upstream behind our back: the next register fails transiently, then republishes.
    let upstream = map::entity_name("shop-web", "default");
    let url = sim.url().join(&format!("upstreams/{upstream}")).unwrap();
    let del = reqwest::Client::new().delete(url).send().await.unwrap();
    assert_eq!(del.status().as_u16(), 204);
    let err = b.apply(&Op::Register(web(3))).await.expect_err("upstream is gone");
    assert!(err.is_transient(), "{err}");
    b.apply(&Op::Register(web(3))).await.expect("republished");
    let targets = sim.targets(&upstream);
    assert_eq!(targets.as_array().map(Vec::len), Some(1), "{targets}");
}

#[test]
fn ownership_needs_both_the_owner_and_the_cluster_tag() {
    let check = |tags: serde_json::Value| map::check_owner(&json!({"name": "web.default", "tags": tags}), "default");
    assert_eq!(check(json!(["switchboard", "cluster:default", "app:web"])), Ok(()));
    assert_eq!(check(json!(["team-a"])), Err("tags team-a".to_owned()));
    assert_eq!(check(json!(["switchboard", "cluster:other"])), Err("tags switchboard,cluster:other".to_owned()));
    assert_eq!(check(Value::Null), Err("untagged".to_owned()));
}

/// Kong before 1.1: what Switchboard wrote is its own, anything sending
/// traffic elsewhere or publishing other hosts is not (pure checks).
#[test]
fn untagged_content_tells_ours_from_theirs() {
    let r = web(1);
    let wrote = map::normalize(&r.routes);
    let dest = map::Destination::upstream(&name("web"));
    let api = map::api_body(&name("web"), &wrote, &dest, false);
    assert_eq!(map::api_is_ours(&api, &dest, Some(&wrote)), Ok(()));
    let mut theirs = api.clone();
    theirs["upstream_url"] = json!("http://10.9.9.9:8080");
    assert!(map::api_is_ours(&theirs, &dest, Some(&wrote)).unwrap_err().contains("10.9.9.9"));
    let mut other_hosts = api.clone();
    other_hosts["hosts"] = json!(["team-b.example.com"]);
    assert!(map::api_is_ours(&other_hosts, &dest, Some(&wrote)).unwrap_err().contains("team-b"));
    assert_eq!(map::api_is_ours(&other_hosts, &dest, None), Ok(()), "nothing recorded: where traffic goes decides");

    let service = map::service_body(&name("web"), &dest, None);
    assert_eq!(map::untagged_service_is_ours(&service, &dest), Ok(()));
    let elsewhere = json!({"host": "10.9.9.9", "port": 8080, "protocol": "http"});
    assert!(map::untagged_service_is_ours(&elsewhere, &dest).is_err());

    let route = map::route_body(&name("web"), "s-1", &wrote, false, None);
    assert_eq!(map::untagged_route_is_ours(&route, Some("s-1"), Some(&wrote)), Ok(()));
    assert!(map::untagged_route_is_ours(&route, Some("s-2"), Some(&wrote)).is_err(), "on another service");
    assert!(map::untagged_route_is_ours(&route, None, Some(&wrote)).is_err(), "its service is not ours");
}
