//! Behaviour of the Kong backend through the `switchboard` binary against the
//! Marathon and Kong simulators, each scenario once for a Kong 3.x
//! (services/routes/upstreams, tags) and once for a Kong 0.10 (`/apis`,
//! append-only targets, ownership by ledger only).

mod common;

use std::collections::BTreeSet;

use common::{Daemon, WAIT, World, eventually, eventually_async, run_cli, s};
use serde_json::{Value, json};
use switchboard::sim::marathon::SimEvent;

/// Runs scenario `$name(version)` as one test per Kong generation.
macro_rules! both_versions {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kong_3_4() {
                super::$name("3.4.2").await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kong_0_10() {
                super::$name("0.10.4").await;
            }
        }
    };
}

/// An app published on Kong with these routes (empty = label absent).
fn kong_app(id: &str, hosts: &str, paths: &str, health: bool) -> Value {
    let mut labels = serde_json::Map::new();
    if !hosts.is_empty() {
        labels.insert("kong.hosts".into(), json!(hosts));
    }
    if !paths.is_empty() {
        labels.insert("kong.paths".into(), json!(paths));
        labels.insert("kong.strip_path".into(), json!("false"));
    }
    let mut app = json!({
        "id": id,
        "cmd": "python3 -m http.server $PORT0",
        "labels": labels,
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
    });
    if health {
        app["healthChecks"] = json!([{"protocol": "HTTP", "path": "/health", "portIndex": 0}]);
    }
    app
}

/// Kong entity name of an app: derived service name + `.default` (the cluster).
fn entity(app_id: &str) -> String {
    format!("{}.default", app_id.trim_start_matches('/').replace('/', "-"))
}

/// What Kong publishes for one app, the same for both API generations.
#[derive(Debug, Clone, PartialEq)]
struct Published {
    hosts: Vec<String>,
    paths: Vec<String>,
    strip_path: bool,
    /// Where Kong sends traffic, `scheme://host:port`.
    destination: String,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

fn named<'a>(list: &'a Value, name: &str) -> Option<&'a Value> {
    list.as_array()?.iter().find(|e| e["name"] == name)
}

async fn world(version: &str) -> World {
    World::builder().kong(version).start().await
}

/// Kong's side of the world, as the scenarios below read it.
impl World {
    fn legacy(&self) -> bool {
        self.kong_legacy()
    }

    /// A daemon resyncing every `resync` (`0`: only on start and reconnect),
    /// subscribed to the stream.
    async fn kong_daemon(&self, resync: &str) -> Daemon {
        self.subscribed_daemon(&["--resync-interval", resync]).await
    }

    /// Active targets of the app's upstream.
    fn targets(&self, app: &str) -> BTreeSet<String> {
        let targets = self.kong().targets(&entity(app));
        targets.as_array().into_iter().flatten().filter_map(|t| t["target"].as_str().map(str::to_owned)).collect()
    }

    /// The app's route (0.x: api) and where its service sends traffic, if
    /// both exist and are linked.
    fn published(&self, app: &str) -> Option<Published> {
        let name = entity(app);
        if self.legacy() {
            let apis = self.kong().apis();
            let api = named(&apis, &name)?;
            return Some(Published {
                hosts: strings(&api["hosts"]),
                paths: strings(&api["uris"]),
                strip_path: api["strip_uri"].as_bool().unwrap_or(true),
                destination: api["upstream_url"].as_str().unwrap_or_default().to_owned(),
            });
        }
        let services = self.kong().services();
        let routes = self.kong().routes();
        let svc = named(&services, &name)?;
        let route = named(&routes, &name).filter(|r| r["service"]["id"] == svc["id"])?;
        Some(Published {
            hosts: strings(&route["hosts"]),
            paths: strings(&route["paths"]),
            strip_path: route["strip_path"].as_bool().unwrap_or(true),
            destination: format!(
                "{}://{}:{}",
                svc["protocol"].as_str().unwrap_or(""),
                svc["host"].as_str().unwrap_or(""),
                svc["port"]
            ),
        })
    }

    /// Kinds of Kong entities still named for the app.
    fn leftovers(&self, app: &str) -> Vec<&'static str> {
        let name = entity(app);
        let mut out = Vec::new();
        let lists: Vec<(&'static str, Value)> = vec![
            ("upstream", self.kong().upstreams()),
            ("service", self.kong().services()),
            ("route", self.kong().routes()),
            ("api", self.kong().apis()),
        ];
        for (kind, list) in lists {
            if named(&list, &name).is_some() {
                out.push(kind);
            }
        }
        out
    }

    /// Kong balances exactly the app's expected targets and publishes `want`.
    fn in_step(&self, app: &str, want: &Published) -> bool {
        let expected = self.expected_kong_targets(Some(app));
        !expected.is_empty() && self.targets(app) == expected && self.published(app).as_ref() == Some(want)
    }

    async fn converge(&self, app: &str, want: &Published, what: &str) {
        eventually(what, WAIT, || self.in_step(app, want)).await;
    }

    /// A call to Kong's Admin API, as an operator would make it.
    async fn admin(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        self.call(&self.kong().url(), method, path, body).await
    }
}

/// What Switchboard should publish for an app with these labels.
fn publish(app: &str, hosts: &[&str], paths: &[&str], strip_path: bool) -> Published {
    Published {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        paths: paths.iter().map(|p| p.to_string()).collect(),
        strip_path,
        destination: format!("http://{}:80", entity(app)),
    }
}

fn statuses(events: &[SimEvent]) -> (Vec<SimEvent>, Vec<SimEvent>) {
    events.iter().cloned().partition(|e| e.event_type == "status_update_event")
}

// ---------------------------------------------------------------- 1. out-of-order deploy

async fn deploy_out_of_order(version: &str) {
    let w = world(version).await;
    let _d = w.kong_daemon("0").await;

    // Every status update before the events carrying the labels.
    let events = w.marathon.model().deploy(kong_app("/shop/web", "shop.example.com", "/api", false), 2);
    let (status, rest) = statuses(&events);
    w.emit(&status);
    w.emit(&rest);
    let web = publish("/shop/web", &["shop.example.com"], &["/api"], false);
    w.converge("/shop/web", &web, "status-first app published with 2 targets").await;

    // Everything in reverse: RUNNING before STAGING, labels last.
    let mut events = w.marathon.model().deploy(kong_app("/shop/cart", "cart.example.com", "", false), 2);
    events.reverse();
    w.emit(&events);
    let cart = publish("/shop/cart", &["cart.example.com"], &[], true);
    w.converge("/shop/cart", &cart, "reversed app published with 2 targets").await;
    assert_eq!(w.targets("/shop/web").len(), 2);
    assert_eq!(w.targets("/shop/cart").len(), 2);
    if !w.legacy() {
        let ups = w.kong().upstreams();
        let up = named(&ups, &entity("/shop/web")).expect("upstream");
        let tags: BTreeSet<String> = strings(&up["tags"]).into_iter().collect();
        let want: BTreeSet<String> = ["switchboard", "cluster:default", "app:shop-web"].map(String::from).into();
        assert_eq!(tags, want, "ownership tags on the upstream");
    }
}
both_versions!(deploy_out_of_order);

// ---------------------------------------------------------------- 2. scale

async fn scale_up_and_down(version: &str) {
    let w = world(version).await;
    let _d = w.kong_daemon("0").await;
    let web = publish("/web", &["web.example.com"], &[], true);
    let events = w.marathon.model().deploy(kong_app("/web", "web.example.com", "", false), 1);
    w.emit(&events);
    w.converge("/web", &web, "1 target").await;

    let events = w.marathon.model().scale("/web", 4);
    w.emit(&events);
    w.converge("/web", &web, "scaled up to 4 targets").await;
    assert_eq!(w.targets("/web").len(), 4);

    let events = w.marathon.model().scale("/web", 2);
    w.emit(&events);
    w.converge("/web", &web, "scaled down to 2 targets").await;
    assert_eq!(w.targets("/web").len(), 2);
}
both_versions!(scale_up_and_down);

// ---------------------------------------------------------------- 3. health gating

async fn health_gates_targets(version: &str) {
    let w = world(version).await;
    let d = w.kong_daemon("500ms").await;
    let checked = "/checked";
    let want = publish(checked, &["checked.example.com"], &[], true);

    // The task runs, but its first health result is a failure.
    let events = w.marathon.model().deploy(kong_app(checked, "checked.example.com", "", true), 1);
    let no_health: Vec<SimEvent> = events.into_iter().filter(|e| !e.event_type.contains("health")).collect();
    w.emit(&no_health);
    let task = w.marathon.model().task_ids(checked)[0].clone();
    let events = w.marathon.model().set_health(&task, false);
    w.emit(&events);

    // A marker app behind it: once it is published, the checked app was seen.
    let marker = publish("/marker", &["marker.example.com"], &[], true);
    let events = w.marathon.model().deploy(kong_app("/marker", "marker.example.com", "", false), 1);
    w.emit(&events);
    w.converge("/marker", &marker, "marker published").await;
    d.more_resyncs(2.0).await;
    assert!(w.targets(checked).is_empty(), "unhealthy task got a target: {:?}", w.targets(checked));
    assert_eq!(w.published(checked), None, "app without a healthy task is published");

    let events = w.marathon.model().set_health(&task, true);
    w.emit(&events);
    w.converge(checked, &want, "healthy task gets its target").await;

    let events = w.marathon.model().set_health(&task, false);
    w.emit(&events);
    eventually("unhealthy task loses its target", WAIT, || w.targets(checked).is_empty()).await;
    d.more_resyncs(2.0).await;
    assert!(w.targets(checked).is_empty(), "a resync brought the unhealthy target back");
    assert!(w.in_step("/marker", &marker), "marker untouched");
}
both_versions!(health_gates_targets);

// ---------------------------------------------------------------- 4. destroy

async fn destroy_removes_everything(version: &str) {
    let w = world(version).await;
    let _d = w.kong_daemon("0").await;
    let app = "/shop/web";
    let events = w.marathon.model().deploy(kong_app(app, "shop.example.com", "/", false), 2);
    w.emit(&events);
    w.converge(app, &publish(app, &["shop.example.com"], &["/"], false), "published").await;
    assert!(!w.leftovers(app).is_empty());

    let events = w.marathon.model().destroy(app);
    w.emit(&events);
    eventually("every Kong entity of the app removed", WAIT, || w.leftovers(app).is_empty()).await;
    assert!(w.targets(app).is_empty());
}
both_versions!(destroy_removes_everything);

// ---------------------------------------------------------------- 5. foreign entities

/// Snapshot of everything in Kong not named `*.default`.
fn foreign_state(w: &World) -> Value {
    let keep = |list: Value| -> Vec<Value> {
        list.as_array()
            .into_iter()
            .flatten()
            .filter(|e| !e["name"].as_str().unwrap_or("").ends_with(".default"))
            .cloned()
            .collect()
    };
    json!({
        "upstreams": keep(w.kong().upstreams()),
        "services": keep(w.kong().services()),
        "routes": keep(w.kong().routes()),
        "apis": keep(w.kong().apis()),
        "targets": w.kong().targets("foreign"),
    })
}

async fn foreign_entities_survive(version: &str) {
    use reqwest::Method as M;
    let w = world(version).await;
    // Entities someone else made: an upstream with a target, and a published API.
    let up = if w.legacy() {
        w.admin(M::POST, "/upstreams", Some(json!({"name": "foreign"}))).await
    } else {
        w.admin(M::PUT, "/upstreams/foreign", Some(json!({}))).await
    };
    assert!(up < 300, "foreign upstream: {up}");
    assert_eq!(w.admin(M::POST, "/upstreams/foreign/targets", Some(json!({"target": "10.9.9.9:80"}))).await, 201);
    if w.legacy() {
        let api = json!({"name": "foreign", "hosts": ["foreign.example.com"], "upstream_url": "http://foreign"});
        assert_eq!(w.admin(M::POST, "/apis", Some(api)).await, 201);
    } else {
        assert!(w.admin(M::PUT, "/services/foreign", Some(json!({"host": "foreign"}))).await < 300);
        let route = json!({"name": "foreign", "hosts": ["foreign.example.com"]});
        assert_eq!(w.admin(M::POST, "/services/foreign/routes", Some(route)).await, 201);
        // Another cluster's Switchboard owns this one.
        let theirs = json!({"host": "other.other", "tags": ["switchboard", "cluster:other", "app:other"]});
        assert!(w.admin(M::PUT, "/services/other.other", Some(theirs)).await < 300);
    }
    let before = foreign_state(&w);
    let foreign_writes = |w: &World| -> Vec<(String, String)> {
        w.kong()
            .requests()
            .into_iter()
            .filter(|(m, p)| m != "GET" && (p.contains("foreign") || p.contains("other")))
            .collect()
    };
    let setup_writes = foreign_writes(&w).len();

    let d = w.kong_daemon("500ms").await;
    let app = "/web";
    let events = w.marathon.model().deploy(kong_app(app, "web.example.com", "", false), 2);
    w.emit(&events);
    w.converge(app, &publish(app, &["web.example.com"], &[], true), "published").await;
    d.more_resyncs(3.0).await;
    let events = w.marathon.model().destroy(app);
    w.emit(&events);
    eventually("app removed", WAIT, || w.leftovers(app).is_empty()).await;
    d.more_resyncs(3.0).await;

    assert_eq!(foreign_state(&w), before, "foreign entities changed");
    assert_eq!(foreign_writes(&w).len(), setup_writes, "switchboard wrote to foreign entities");
}
both_versions!(foreign_entities_survive);

// ---------------------------------------------------------------- 6. Kong outage

async fn kong_down_during_deploy(version: &str) {
    let w = world(version).await;
    let d = w.kong_daemon("500ms").await;

    w.kong().stop().await;
    let app = "/web";
    let events = w.marathon.model().deploy(kong_app(app, "web.example.com", "/web", false), 2);
    w.emit(&events);
    eventually_async("a register attempt failed while Kong is down", WAIT, || async {
        d.sample("switchboard_ops_total{backend=\"kong\",op=\"register\",result=\"retry\"}").await >= Some(1.0)
    })
    .await;
    assert!(w.published(app).is_none() && w.targets(app).is_empty());

    w.kong().restart().await.expect("kong back");
    w.converge(app, &publish(app, &["web.example.com"], &["/web"], false), "converged after Kong is back").await;
    eventually_async("queue drained", WAIT, || async {
        d.sample("switchboard_queue_depth{backend=\"kong\"}").await == Some(0.0)
    })
    .await;
}
both_versions!(kong_down_during_deploy);

/// SIGTERM, then waits: the daemon flushes its store on the way out.
fn stop(d: &mut Daemon) {
    let pid = d.child.id().to_string();
    let sent = std::process::Command::new("kill").args(["-TERM", &pid]).status().expect("kill -TERM");
    assert!(sent.success());
    let status = d.child.wait().expect("daemon exit");
    assert!(status.success(), "daemon exited with {status}");
}

// ---------------------------------------------------------------- 7. drift repair

async fn hand_changes_are_repaired(version: &str) {
    use reqwest::Method as M;
    let w = world(version).await;
    let d = w.kong_daemon("500ms").await;
    let app = "/web";
    let want = publish(app, &["web.example.com"], &[], true);
    let events = w.marathon.model().deploy(kong_app(app, "web.example.com", "", false), 2);
    w.emit(&events);
    w.converge(app, &want, "published").await;

    let name = entity(app);
    let hijack = json!({"hosts": ["evil.example.com"]});
    let path = if w.legacy() { format!("/apis/{name}") } else { format!("/routes/{name}") };
    assert_eq!(w.admin(M::PATCH, &path, Some(hijack)).await, 200);
    let victim = w.targets(app).into_iter().next().expect("a target");
    let deleted = w.admin(M::DELETE, &format!("/upstreams/{name}/targets/{victim}"), None).await;
    assert!(deleted < 300, "delete target: {deleted}");
    assert!(!w.in_step(app, &want), "hand changes did not take");

    w.converge(app, &want, "route hosts and deleted target repaired").await;
    // And it stays repaired: no flapping between resyncs.
    d.more_resyncs(2.0).await;
    assert!(w.in_step(app, &want));
}
both_versions!(hand_changes_are_repaired);

// ---------------------------------------------------------------- 8. host conflict

async fn conflicting_hosts_reject_second(version: &str) {
    let w = world(version).await;
    let d = w.kong_daemon("500ms").await;
    let first = "/a/shop";
    let second = "/b/shop";
    let events = w.marathon.model().deploy(kong_app(first, "shop.example.com", "", false), 1);
    w.emit(&events);
    let want = publish(first, &["shop.example.com"], &[], true);
    w.converge(first, &want, "first app published").await;
    let events = w.marathon.model().deploy(kong_app(second, "shop.example.com", "", false), 1);
    w.emit(&events);

    eventually_async("kong rejection metric", WAIT, || async {
        d.sample("switchboard_rejections{backend=\"kong\"}").await == Some(1.0)
    })
    .await;
    let listen = d.status_url().await.trim_start_matches("http://").to_owned();
    let data_dir = w.data_dir();
    let out = run_cli(vec![
        "state".into(),
        "--json".into(),
        "--listen".into(),
        listen,
        "--data-dir".into(),
        data_dir.to_string_lossy().into_owned(),
    ])
    .await;
    assert!(out.status.success(), "state failed: {}", String::from_utf8_lossy(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).expect("state json");
    let kong: Vec<&Value> =
        state["rejections"].as_array().into_iter().flatten().filter(|r| r["backend"] == "kong").collect();
    assert_eq!(kong.len(), 1, "rejections: {}", state["rejections"]);
    let r = kong[0];
    assert_eq!(r["app_id"], second);
    assert_eq!(r["label"], "kong.hosts");
    let reason = r["reason"].as_str().unwrap_or("");
    assert!(reason.contains("shop.example.com") && reason.contains(first), "unclear reason: {reason}");

    d.more_resyncs(2.0).await;
    assert!(w.in_step(first, &want), "first app disturbed");
    assert!(w.leftovers(second).is_empty(), "second app published: {:?}", w.leftovers(second));
}
both_versions!(conflicting_hosts_reject_second);

// ---------------------------------------------------------------- 9. reconcile --once, unchanged world

async fn reconcile_unchanged_reads_only(version: &str) {
    let w = world(version).await;
    let mut d = w.kong_daemon("0").await;
    let apps = [("/shop/web", "web.example.com"), ("/shop/cart", "cart.example.com"), ("/admin", "admin.example.com")];
    for (app, host) in apps {
        let events = w.marathon.model().deploy(kong_app(app, host, "", false), 2);
        w.emit(&events);
    }
    for (app, host) in apps {
        w.converge(app, &publish(app, &[host], &[], true), "published").await;
    }
    eventually_async("queue drained", WAIT, || async {
        d.sample("switchboard_queue_depth{backend=\"kong\"}").await == Some(0.0)
    })
    .await;
    stop(&mut d);

    let (writes, requests) = (w.kong().writes(), w.kong().requests().len());
    let mut args = s(&["reconcile", "--once", "--json", "--data-dir"]);
    args.push(w.data_dir().to_string_lossy().into_owned());
    args.extend(w.args(&[]));
    let out = run_cli(args).await;
    assert_eq!(
        out.status.code(),
        Some(0),
        "reconcile --once: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let made = w.kong().requests()[requests..].to_vec();
    eprintln!(
        "kong {version}: reconcile --once of 3 apps x 2 instances made {} requests: {:?}",
        made.len(),
        made.iter().map(|(m, p)| format!("{m} {p}")).collect::<Vec<_>>()
    );
    assert_eq!(
        w.kong().writes(),
        writes,
        "reconcile of an unchanged world wrote to Kong; its report: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(made.iter().all(|(m, _)| m == "GET"));
    for (app, host) in apps {
        assert!(w.in_step(app, &publish(app, &[host], &[], true)));
    }
}
both_versions!(reconcile_unchanged_reads_only);

// ---------------------------------------------------------------- 10. lost store

/// The data dir is lost (new host, wiped disk) while Kong still publishes
/// everything: a `reconcile --once` from scratch must leave Kong publishing
/// it all, never deleting live targets it has no record of. With tags (3.x)
/// it knows its own entities and re-registers them (idempotent writes);
/// without tags (0.x) the ledger was the only record: every name is refused
/// as someone else's and nothing is written (`switchboard adopt` is the way
/// back, tests/adopt.rs), never a silent re-adoption.
async fn lost_store_leaves_kong_alone(version: &str) {
    let w = world(version).await;
    let mut d = w.kong_daemon("0").await;
    let apps = [("/shop/web", "web.example.com"), ("/admin", "admin.example.com")];
    for (app, host) in apps {
        let events = w.marathon.model().deploy(kong_app(app, host, "", false), 2);
        w.emit(&events);
    }
    for (app, host) in apps {
        w.converge(app, &publish(app, &[host], &[], true), "published").await;
    }
    eventually_async("queue drained", WAIT, || async {
        d.sample("switchboard_queue_depth{backend=\"kong\"}").await == Some(0.0)
    })
    .await;
    stop(&mut d);
    std::fs::remove_dir_all(w.data_dir()).expect("wipe data dir");

    let before = w.kong().requests().len();
    let mut args = s(&["reconcile", "--once", "--json", "--data-dir"]);
    args.push(w.data_dir().to_string_lossy().into_owned());
    args.extend(w.args(&[]));
    let out = run_cli(args).await;
    let report = String::from_utf8_lossy(&out.stdout).into_owned();
    if w.legacy() {
        assert_eq!(out.status.code(), Some(1), "refusals: {report}\n{}", String::from_utf8_lossy(&out.stderr));
        for (app, _) in apps {
            let name = entity(app);
            assert!(
                report.contains(&format!("Kong api \\\"{name}\\\" exists but is not in Switchboard's ledger")),
                "{app} not refused by name: {report}"
            );
        }
        let writes: Vec<_> = w.kong().requests()[before..].iter().filter(|(m, _)| m != "GET").cloned().collect();
        assert!(writes.is_empty(), "wrote to entities it has no record of: {writes:?}; report {report}");
    } else {
        assert_eq!(out.status.code(), Some(0), "reconcile --once: {report}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    for (app, host) in apps {
        assert!(
            w.in_step(app, &publish(app, &[host], &[], true)),
            "{app} damaged: {:?}; report {report}",
            w.targets(app)
        );
    }
    // With an empty ledger every instance is re-registered (idempotent
    // writes), but nothing live may be deleted, not even for a moment.
    let deletes: Vec<_> = w.kong().requests()[before..].iter().filter(|(m, _)| m == "DELETE").cloned().collect();
    assert!(deletes.is_empty(), "deleted live entities: {deletes:?}; report {report}");
}
both_versions!(lost_store_leaves_kong_alone);

// ---------------------------------------------------------------- 11. names held by someone else

/// Another team's upstream, service and route named like the apps' (each
/// kind alone, then all three with a target): the registration is refused
/// against the app, naming the holder, and nothing of theirs changes.
async fn names_held_by_someone_else_are_refused(version: &str) {
    use reqwest::Method as M;
    let w = world(version).await;
    let team = json!(["team-a"]);
    // /web-up: an upstream with a target; /web-svc: a service; /web-route: a
    // route (on a service of theirs under another name); /web: all three.
    for name in ["web-up.default", "web.default"] {
        assert!(w.admin(M::PUT, &format!("/upstreams/{name}"), Some(json!({"tags": team}))).await < 300);
        let target = json!({"target": "10.9.9.9:8080", "tags": team});
        assert_eq!(w.admin(M::POST, &format!("/upstreams/{name}/targets"), Some(target)).await, 201);
    }
    for name in ["web-svc.default", "web.default", "team-a-svc"] {
        let svc = json!({"host": "10.9.9.9", "port": 8080, "tags": team});
        assert!(w.admin(M::PUT, &format!("/services/{name}"), Some(svc)).await < 300);
    }
    for (name, svc) in [("web-route.default", "team-a-svc"), ("web.default", "web.default")] {
        let route = json!({"name": name, "hosts": ["team-a.example.com"], "tags": team});
        assert_eq!(w.admin(M::POST, &format!("/services/{svc}/routes"), Some(route)).await, 201);
    }
    let held = ["web-up", "web-svc", "web-route", "web"];
    let theirs = |w: &World| -> Value {
        let pick = |list: Value| -> Vec<Value> {
            list.as_array()
                .into_iter()
                .flatten()
                .filter(|e| {
                    e["name"].as_str().is_some_and(|n| n == "team-a-svc" || held.iter().any(|h| n == entity(h)))
                })
                .cloned()
                .collect()
        };
        let targets = ["web-up.default", "web.default"].map(|u| w.kong().targets(u));
        json!({
            "upstreams": pick(w.kong().upstreams()),
            "services": pick(w.kong().services()),
            "routes": pick(w.kong().routes()),
            "targets": targets,
        })
    };
    let before = theirs(&w);

    let d = w.kong_daemon("500ms").await;
    for app in held.iter().chain(&["ok"]) {
        let host = format!("{app}.example.com");
        w.emit(&w.marathon.model().deploy(kong_app(&format!("/{app}"), &host, "", false), 1));
    }
    // Other apps carry on.
    w.converge("/ok", &publish("/ok", &["ok.example.com"], &[], true), "an unrelated app published").await;
    for app in held {
        let line = format!("app_id=/{app} ");
        eventually(&format!("/{app} refused"), WAIT, || {
            d.log().lines().any(|l| l.contains(&line) && l.contains("belongs to someone else") && l.contains("team-a"))
        })
        .await;
    }
    d.more_resyncs(2.0).await;
    assert_eq!(theirs(&w), before, "another team's entities changed");
    let written: Vec<(String, String)> = w
        .kong()
        .requests()
        .into_iter()
        .filter(|(m, p)| m != "GET" && held.iter().any(|h| p.contains(&entity(h))))
        .filter(|(_, p)| !p.is_empty())
        .collect();
    // The setup's own writes are the only ones to those names.
    assert_eq!(written.len(), 7, "switchboard wrote to names it does not hold: {written:?}");
}

mod names_held_by_someone_else_are_refused {
    // Kong 0.x has no tags: ownership there is the ledger's (not covered yet).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn kong_3_4() {
        super::names_held_by_someone_else_are_refused("3.4.2").await;
    }
}

// ---------------------------------------------------------------- 12. sticky refusal, counted

/// Writes Kong received to entities named `name` (refused ones included).
fn writes_to(w: &World, name: &str) -> usize {
    w.kong().requests().iter().filter(|(m, p)| m != "GET" && p.split('/').any(|s| s == name)).count()
}

/// An app whose Kong entity name Kong's schema refuses: service `svc` in
/// cluster `4` names its upstream `<svc>.4`, an IP address when `svc` is
/// `1.2.3` (Switchboard's own checks let it through; Kong answers 400).
fn refused_app(svc: &str) -> Value {
    let mut app = kong_app("/web", "web.example.com", "", false);
    app["labels"]["consul"] = json!(svc);
    app
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_refusal_is_tried_once_until_its_input_changes_even_across_a_restart() {
    let w = world("3.4.2").await;
    let mut d = w.subscribed_daemon(&["--cluster", "4", "--resync-interval", "300ms"]).await;
    let refused = |d: &Daemon| d.log().lines().filter(|l| l.contains("refused; not retried")).count();
    w.emit(&w.marathon.model().deploy(refused_app("1.2.3"), 1));
    eventually("refused once", WAIT, || refused(&d) == 1).await;
    assert_eq!(writes_to(&w, "1.2.3.4"), 1, "{:?}", w.kong().requests());
    assert!(w.kong().upstreams().as_array().is_some_and(Vec::is_empty), "nothing was written");

    // Events of another app and resyncs plan again; none tries the refused input.
    w.emit(&w.marathon.model().deploy(kong_app("/other", "other.example.com", "", false), 1));
    let other_published = || w.kong().targets("other.4").as_array().is_some_and(|t| t.len() == 1);
    eventually("the other app published", WAIT, other_published).await;
    d.more_resyncs(3.0).await;
    assert_eq!(writes_to(&w, "1.2.3.4"), 1, "a refused input was tried again");
    assert_eq!(refused(&d), 1, "one log line per refusal, not one per pass");
    assert_eq!(d.sample("switchboard_refusals{backend=\"kong\"}").await, Some(1.0));

    // Durable: a kill -9 and restart do not try it again.
    d.kill9_and_restart();
    w.subscribed().await;
    d.more_resyncs(3.0).await;
    assert_eq!(writes_to(&w, "1.2.3.4"), 1, "a restart retried a refusal");
    assert_eq!(d.sample("switchboard_refusals{backend=\"kong\"}").await, Some(1.0));

    // The input changes (another name Kong refuses): each new input tried
    // exactly once. The new task's, and, if the old task was still running
    // when the new labels became known, the old task's with the new labels
    // (the newest spec applies to every instance): each try is a new refusal.
    w.emit(&w.marathon.model().deploy(refused_app("1.2.5"), 1));
    eventually("the new input tried", WAIT, || writes_to(&w, "1.2.5.4") >= 1).await;
    d.more_resyncs(3.0).await;
    let tries = writes_to(&w, "1.2.5.4");
    assert!((1..=2).contains(&tries), "{tries} writes of the changed input");
    assert_eq!(tries, refused(&d) - 1, "a refused input was tried again: every try must be a new refusal");
    assert_eq!(writes_to(&w, "1.2.3.4"), 1, "the old input was tried again");
    assert_eq!(d.sample("switchboard_refusals{backend=\"kong\"}").await, Some(1.0), "the old refusal went");
}

// ---------------------------------------------------------------- 13. names taken over after ours went

/// Switchboard publishes /web; then another team replaces `web.default` by
/// hand (route, service, upstream, and a target at our instance's very
/// address, all tagged theirs). When /web is destroyed, the last instance's
/// deregistration finds every name held by someone else: it deletes none of
/// them, logs each with its tags, and lets go of the registration (nothing
/// left in the ledger or the queue, no refusal), so it is not retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_recreated_by_someone_else_survives_the_last_deregistration() {
    use reqwest::Method as M;
    let w = world("3.4.2").await;
    let d = w.kong_daemon("0").await;
    let app = "/web";
    let name = entity(app);
    w.emit(&w.marathon.model().deploy(kong_app(app, "web.example.com", "", false), 1));
    w.converge(app, &publish(app, &["web.example.com"], &[], true), "published").await;
    let ours = w.targets(app);
    assert_eq!(ours.len(), 1);

    // Another team takes the names over.
    for kind in ["routes", "services", "upstreams"] {
        assert!(w.admin(M::DELETE, &format!("/{kind}/{name}"), None).await < 300);
    }
    let team = json!(["team-b"]);
    assert!(w.admin(M::PUT, &format!("/upstreams/{name}"), Some(json!({"tags": team}))).await < 300);
    for t in &ours {
        let target = json!({"target": t, "tags": team});
        assert_eq!(w.admin(M::POST, &format!("/upstreams/{name}/targets"), Some(target)).await, 201);
    }
    let svc = json!({"host": "10.9.9.9", "port": 8080, "tags": team});
    assert!(w.admin(M::PUT, &format!("/services/{name}"), Some(svc)).await < 300);
    let route = json!({"name": name, "hosts": ["team-b.example.com"], "tags": team});
    assert_eq!(w.admin(M::POST, &format!("/services/{name}/routes"), Some(route)).await, 201);
    let theirs = |w: &World| -> Value {
        json!({
            "upstream": named(&w.kong().upstreams(), &name).cloned(),
            "service": named(&w.kong().services(), &name).cloned(),
            "route": named(&w.kong().routes(), &name).cloned(),
            "targets": w.kong().targets(&name),
        })
    };
    let before = theirs(&w);
    let writes = |w: &World| writes_to(w, &name);
    let setup_writes = writes(&w);

    w.emit(&w.marathon.model().destroy(app));
    let left_alone = |d: &Daemon| {
        let log = d.log();
        ["target", "route", "service", "upstream"].iter().all(|kind| {
            log.lines().any(|l| {
                l.contains("held by someone else now") && l.contains(&format!("entity={kind}")) && l.contains("team-b")
            })
        })
    };
    eventually("each of their entities left alone and logged", WAIT, || left_alone(&d)).await;
    eventually_async("the deregistration counts as done", WAIT, || async {
        d.sample("switchboard_registrations{backend=\"kong\"}").await == Some(0.0)
            && d.sample("switchboard_queue_depth{backend=\"kong\"}").await == Some(0.0)
    })
    .await;
    assert_eq!(d.sample("switchboard_refusals{backend=\"kong\"}").await, Some(0.0));
    assert_eq!(theirs(&w), before, "another team's entities changed");
    assert_eq!(writes(&w), setup_writes, "switchboard wrote to names it no longer holds: {:?}", w.kong().requests());
}

// ---------------------------------------------------------------- 12. delete-time ownership without tags

macro_rules! untagged_versions {
    ($name:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kong_1_0() {
                super::$name("1.0.3").await;
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn kong_0_10() {
                super::$name("0.10.4").await;
            }
        }
    };
}

/// Kong before 1.1 has no tags: the ledger says the app's entities are
/// Switchboard's, and at delete time their content must say so too. Another
/// team removes them by hand and recreates the names (their upstream with a
/// target at the very address, an api or service sending traffic to their
/// host, a route publishing their host). When /web is destroyed, nothing of
/// theirs is deleted: each entity is logged as left alone, and the
/// deregistration counts as done (nothing in the ledger or the queue, no
/// refusal).
async fn names_recreated_without_tags_survive_the_last_deregistration(version: &str) {
    use reqwest::Method as M;
    let w = world(version).await;
    let d = w.kong_daemon("0").await;
    let app = "/web";
    let name = entity(app);
    w.emit(&w.marathon.model().deploy(kong_app(app, "web.example.com", "", false), 1));
    w.converge(app, &publish(app, &["web.example.com"], &[], true), "published").await;
    let ours = w.targets(app);
    assert_eq!(ours.len(), 1);

    let kinds: &[&str] = if w.legacy() { &["apis", "upstreams"] } else { &["routes", "services", "upstreams"] };
    for kind in kinds {
        assert!(w.admin(M::DELETE, &format!("/{kind}/{name}"), None).await < 300);
    }
    if w.legacy() {
        assert_eq!(w.admin(M::POST, "/upstreams", Some(json!({"name": name}))).await, 201);
    } else {
        assert!(w.admin(M::PUT, &format!("/upstreams/{name}"), Some(json!({}))).await < 300);
    }
    for t in &ours {
        let target = json!({"target": t, "weight": 100});
        assert_eq!(w.admin(M::POST, &format!("/upstreams/{name}/targets"), Some(target)).await, 201);
    }
    if w.legacy() {
        let api = json!({"name": name, "upstream_url": "http://10.9.9.9:8080", "hosts": ["team-b.example.com"]});
        assert_eq!(w.admin(M::POST, "/apis", Some(api)).await, 201);
    } else {
        let svc = json!({"host": "10.9.9.9", "port": 8080});
        assert!(w.admin(M::PUT, &format!("/services/{name}"), Some(svc)).await < 300);
        let route = json!({"name": name, "hosts": ["team-b.example.com"]});
        assert_eq!(w.admin(M::POST, &format!("/services/{name}/routes"), Some(route)).await, 201);
    }
    let theirs = |w: &World| -> Value {
        json!({
            "upstream": named(&w.kong().upstreams(), &name).cloned(),
            "service": named(&w.kong().services(), &name).cloned(),
            "route": named(&w.kong().routes(), &name).cloned(),
            "api": named(&w.kong().apis(), &name).cloned(),
            "targets": w.kong().targets(&name),
        })
    };
    let before = theirs(&w);
    let setup_writes = writes_to(&w, &name);

    w.emit(&w.marathon.model().destroy(app));
    let logged: &[&str] =
        if w.legacy() { &["target", "api", "upstream"] } else { &["target", "route", "service", "upstream"] };
    eventually("each of their entities left alone and logged", WAIT, || {
        let log = d.log();
        logged.iter().all(|kind| {
            log.lines().any(|l| l.contains("held by someone else now") && l.contains(&format!("entity={kind}")))
        })
    })
    .await;
    assert!(d.log().contains("10.9.9.9"), "the log does not say where their entity sends traffic");
    eventually_async("the deregistration counts as done", WAIT, || async {
        d.sample("switchboard_registrations{backend=\"kong\"}").await == Some(0.0)
            && d.sample("switchboard_queue_depth{backend=\"kong\"}").await == Some(0.0)
    })
    .await;
    assert_eq!(d.sample("switchboard_refusals{backend=\"kong\"}").await, Some(0.0));
    assert_eq!(theirs(&w), before, "another team's entities changed");
    assert_eq!(
        writes_to(&w, &name),
        setup_writes,
        "switchboard wrote to names it no longer holds: {:?}",
        w.kong().requests()
    );
}
untagged_versions!(names_recreated_without_tags_survive_the_last_deregistration);
