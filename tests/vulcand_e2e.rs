//! Behaviour through the `switchboard` binary against the Marathon and Vulcand
//! simulators: out-of-order deploys, scaling, restarts seen only through
//! status events, destroy order, outages, hand edits, foreign objects and
//! server TTLs after a `kill -9`.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{WAIT, World, eventually, status_only};
use serde_json::{Value, json};
use switchboard::sim::marathon::SimEvent;
use switchboard::sim::vulcand::VulcandSimOptions;
const APP: &str = "/shop/web";
/// `sb.<cluster>.<service>~`: the id of the app's backend and frontend.
const OURS: &str = "sb.default.shop-web~";
const ROUTE: &str = r#"Host("web.local")"#;

fn web_app() -> Value {
    json!({
        "id": APP,
        "cmd": "python3 -m http.server $PORT0",
        "labels": {"vulcand.host": "web.local"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}]
    })
}

async fn world() -> World {
    World::builder().vulcand(VulcandSimOptions::default()).start().await
}

/// Vulcand's side of the world, as the scenarios below read it.
impl World {
    /// Server id → URL in one Vulcand backend.
    fn servers(&self, backend: &str) -> BTreeMap<String, String> {
        let list = self.vulcand().servers(backend);
        list.as_array()
            .into_iter()
            .flatten()
            .map(|s| (s["Id"].as_str().unwrap().to_owned(), s["URL"].as_str().unwrap().to_owned()))
            .collect()
    }

    fn backend_ids(&self) -> Vec<String> {
        let list = self.vulcand().backends();
        list.as_array().into_iter().flatten().map(|b| b["Id"].as_str().unwrap().to_owned()).collect()
    }

    /// Frontend id → (backend id, route).
    fn frontends(&self) -> BTreeMap<String, (String, String)> {
        let list = self.vulcand().frontends();
        list.as_array()
            .into_iter()
            .flatten()
            .map(|f| {
                let get = |k: &str| f[k].as_str().unwrap().to_owned();
                (get("Id"), (get("BackendId"), get("Route")))
            })
            .collect()
    }

    /// The app is routed: its backend has exactly one server per running
    /// task, and its frontend carries the route.
    fn converged(&self) -> bool {
        let want = self.expected_vulcand_servers(Some(APP));
        !want.is_empty()
            && self.servers(OURS) == want
            && self.frontends().get(OURS) == Some(&(OURS.to_owned(), ROUTE.to_owned()))
    }

    async fn converge(&self, what: &str) {
        eventually(what, WAIT, || self.converged()).await;
    }

    /// Backend, servers and frontend of the app are all gone.
    fn app_gone(&self) -> bool {
        !self.backend_ids().iter().any(|b| b == OURS) && !self.frontends().contains_key(OURS)
    }

    /// Writes `body` to the Vulcand simulator as an operator would.
    async fn vulcand_call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        self.call(&self.vulcand().url(), method, path, body).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_order_deploy_then_scale_up_and_down() {
    let w = world().await;
    let _d = w.daemon(&[]);
    w.subscribed().await;

    // Every status update arrives before the events that carry the labels.
    let events = w.marathon.model().deploy(web_app(), 2);
    let (status, rest): (Vec<SimEvent>, Vec<SimEvent>) =
        events.into_iter().partition(|e| e.event_type == "status_update_event");
    w.marathon.emit(&status);
    w.marathon.emit(&rest);
    w.converge("2 servers and the frontend").await;
    assert_eq!(w.servers(OURS).len(), 2);
    assert_eq!(w.backend_ids(), [OURS]);
    assert!(w.servers(OURS).values().all(|u| u.starts_with("http://10.0.2.")), "{:?}", w.servers(OURS));

    let events = w.marathon.model().scale(APP, 4);
    w.marathon.emit(&events);
    w.converge("scaled up to 4").await;
    assert_eq!(w.servers(OURS).len(), 4);

    let events = w.marathon.model().scale(APP, 1);
    w.marathon.emit(&events);
    w.converge("scaled down to 1").await;
    assert_eq!(w.servers(OURS).len(), 1);
    assert_eq!(w.frontends().len(), 1, "one frontend whatever the scale");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_seen_only_through_status_events() {
    let w = world().await;
    let _d = w.daemon(&[]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 2);
    w.marathon.emit(&events);
    w.converge("deployed").await;
    let old = w.servers(OURS);
    let fetches = w.marathon.app_fetches(APP);

    // The new version's definition never arrives on the stream: the daemon
    // has to fetch it once its grace period is over.
    let events = w.marathon.model().restart(APP);
    w.marathon.emit(&status_only(&events));
    w.converge("restarted tasks routed, old ones gone").await;
    let new = w.servers(OURS);
    assert_eq!(new.len(), 2);
    assert!(new.keys().all(|k| !old.contains_key(k)), "old {old:?} new {new:?}");
    assert!(w.marathon.app_fetches(APP) > fetches, "the new app version was never fetched");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn destroy_removes_servers_then_frontend_then_backend() {
    let w = world().await;
    let _d = w.daemon(&[]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 2);
    w.marathon.emit(&events);
    w.converge("deployed").await;

    let events = w.marathon.model().destroy(APP);
    w.marathon.emit(&events);
    eventually("backend and frontend removed", WAIT, || w.app_gone()).await;
    assert!(w.backend_ids().is_empty() && w.frontends().is_empty());

    let deletes: Vec<String> =
        w.vulcand().writes().into_iter().filter(|r| r.method == "DELETE").map(|r| r.path).collect();
    let at =
        |path: &str| deletes.iter().position(|p| p == path).unwrap_or_else(|| panic!("no DELETE {path}: {deletes:?}"));
    let frontend = at(&format!("/v2/frontends/{OURS}"));
    let backend = at(&format!("/v2/backends/{OURS}"));
    let server_deletes: Vec<usize> = deletes
        .iter()
        .enumerate()
        .filter(|(_, p)| p.starts_with(&format!("/v2/backends/{OURS}/servers/")))
        .map(|(i, _)| i)
        .collect();
    // Each server is gone: deleted (a delete may be repeated: ops are
    // idempotent and retried), or removed with its backend when a resync
    // found it gone before its own delete was tried.
    assert!(!server_deletes.is_empty(), "no server deleted: {deletes:?}");
    assert_eq!(w.vulcand().servers(OURS), serde_json::json!([]), "servers left: {deletes:?}");
    // Vulcand refuses to delete a backend a frontend still uses; traffic
    // stops reaching an instance before its app's frontend goes.
    assert!(server_deletes[0] < frontend, "a server before the frontend: {deletes:?}");
    assert!(frontend < backend, "frontend before the backend: {deletes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vulcand_down_then_back() {
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 1);
    w.marathon.emit(&events);
    w.converge("deployed").await;

    w.vulcand().stop().await;
    let events = w.marathon.model().scale(APP, 3);
    w.marathon.emit(&events);
    eventually("daemon notices Vulcand is down", WAIT, || d.log().contains("backend unavailable")).await;
    assert_eq!(w.servers(OURS).len(), 1, "nothing can change while Vulcand is down");

    w.vulcand().restart().await.expect("vulcand back");
    w.converge("queued registrations applied once Vulcand is back").await;
    assert_eq!(w.servers(OURS).len(), 3);

    // A destroy while Vulcand is down is applied when it returns.
    w.vulcand().stop().await;
    let events = w.marathon.model().destroy(APP);
    w.marathon.emit(&events);
    let retries = d.log().matches("backend unavailable").count();
    eventually("deregistrations retried", WAIT, || d.log().matches("backend unavailable").count() > retries).await;
    w.vulcand().restart().await.expect("vulcand back");
    eventually("app removed once Vulcand is back", WAIT, || w.app_gone()).await;
    assert!(w.servers(OURS).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_reconnect_resyncs_and_repairs() {
    // No periodic resync: only the reconnect can notice the hand edit.
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 2);
    w.marathon.emit(&events);
    w.converge("deployed").await;

    let before = w.servers(OURS);
    let victim = before.keys().next().unwrap().clone();
    assert!(w.vulcand().delete_server_by_hand(OURS, &victim));
    // Scaling while disconnected: only the resync after reconnecting sees it.
    w.marathon.disconnect_all();
    let _lost = w.marathon.model().scale(APP, 3);
    eventually("stream reconnected", WAIT, || w.marathon.subscribers() > 0).await;
    w.converge("hand-deleted server restored and missed scale-up applied").await;
    assert_eq!(w.servers(OURS).len(), 3);
    assert!(w.servers(OURS).contains_key(&victim));
    assert!(d.log().contains("resync queued repairs"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hand_deleted_server_and_frontend_are_restored_by_resync() {
    let w = world().await;
    let d = w.daemon(&["--resync-interval", "500ms"]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 2);
    w.marathon.emit(&events);
    w.converge("deployed").await;

    let before = w.servers(OURS);
    let victim = before.keys().next().unwrap().clone();
    assert!(w.vulcand().delete_server_by_hand(OURS, &victim));
    assert_eq!(w.servers(OURS).len(), 1);
    eventually("deleted server restored", WAIT, || w.servers(OURS) == before).await;

    assert_eq!(w.vulcand_call(reqwest::Method::DELETE, &format!("/v2/frontends/{OURS}"), None).await, 200);
    assert!(!w.frontends().contains_key(OURS));
    w.converge("deleted frontend restored").await;
    assert!(d.log().contains("resync queued repairs"), "repairs came from a resync");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_backends_are_never_touched() {
    let w = world().await;
    // An operator's own backend named like the service, and one that looks
    // like another cluster's Switchboard.
    let foreign = ["shop-web", "sb.other.shop-web~"];
    for id in foreign {
        hand_made(&w, id).await;
    }
    let snapshot = || (w.vulcand().backends(), w.vulcand().frontends(), foreign.map(|id| w.vulcand().servers(id)));
    let before = snapshot();
    let first_write = w.vulcand().writes().len();

    let d = w.daemon(&["--resync-interval", "500ms"]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 2);
    w.marathon.emit(&events);
    w.converge("deployed next to the foreign backends").await;
    d.more_resyncs(2.0).await;
    let events = w.marathon.model().destroy(APP);
    w.marathon.emit(&events);
    eventually("our backend removed", WAIT, || w.app_gone()).await;

    assert_eq!(snapshot().0.as_array().unwrap().len(), 2);
    let after = snapshot();
    assert_eq!(after.0, before.0, "foreign backends changed");
    assert_eq!(after.1, before.1, "foreign frontends changed");
    assert_eq!(after.2, before.2, "foreign servers changed");
    for r in &w.vulcand().writes()[first_write..] {
        let body_ids: Vec<&str> = ["/Backend/Id", "/Frontend/Id", "/Frontend/BackendId"]
            .iter()
            .filter_map(|p| r.body.as_ref().and_then(|b| b.pointer(p)).and_then(Value::as_str))
            .collect();
        let ours = if r.path == "/v2/backends" || r.path == "/v2/frontends" {
            !body_ids.is_empty() && body_ids.iter().all(|id| *id == OURS)
        } else {
            r.path.starts_with(&format!("/v2/backends/{OURS}")) || r.path == format!("/v2/frontends/{OURS}")
        };
        assert!(ours, "write outside Switchboard's own ids: {r:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn servers_expire_after_kill_9_and_come_back_on_restart() {
    let w = world().await;
    let mut d = w.daemon(&["--vulcand-server-ttl", "2s"]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 2);
    w.marathon.emit(&events);
    w.converge("deployed with TTL servers").await;
    let want = w.servers(OURS);
    let ttl: Vec<Value> = w
        .vulcand()
        .writes()
        .into_iter()
        .filter(|r| r.path.ends_with("/servers"))
        .filter_map(|r| r.body.map(|b| b["TTL"].clone()))
        .collect();
    assert!(!ttl.is_empty() && ttl.iter().all(|t| *t == "2s"), "server TTLs: {ttl:?}");

    // Heartbeats keep the servers alive past their TTL while the daemon runs.
    let until = Instant::now() + Duration::from_millis(3000);
    while Instant::now() < until {
        assert_eq!(w.servers(OURS), want, "a live daemon's servers expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    d.kill9();
    eventually("servers expired after kill -9", WAIT, || w.servers(OURS).is_empty()).await;
    assert!(w.frontends().contains_key(OURS), "the frontend is permanent");

    d.restart();
    eventually("servers re-registered after restart", WAIT, || w.servers(OURS) == want).await;
    w.converge("routed again").await;
}

/// Writes a backend with one server and a frontend under `id`, as an
/// operator (or another Switchboard sharing the cluster name) would.
async fn hand_made(w: &World, id: &str) {
    use reqwest::Method as M;
    assert_eq!(
        w.vulcand_call(M::POST, "/v2/backends", Some(json!({"Backend": {"Id": id, "Type": "http"}}))).await,
        200
    );
    let server = json!({"Server": {"Id": "hand-1", "URL": "http://10.9.9.9:8080"}});
    assert_eq!(w.vulcand_call(M::POST, &format!("/v2/backends/{id}/servers"), Some(server)).await, 200);
    let fe = json!({"Frontend": {"Id": id, "Type": "http", "BackendId": id, "Route": r#"Host("web.local")"#}});
    assert_eq!(w.vulcand_call(M::POST, "/v2/frontends", Some(fe)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_held_by_someone_else_is_refused_not_taken_over() {
    let w = world().await;
    // Switchboard's very ids, made by someone else: not in its ledger.
    hand_made(&w, OURS).await;
    let snapshot = || (w.vulcand().backends(), w.vulcand().frontends(), w.vulcand().servers(OURS));
    let before = snapshot();
    let writes = w.vulcand().writes().len();

    let d = w.daemon(&["--resync-interval", "300ms"]);
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 1));
    eventually("refused, naming the holder", WAIT, || {
        d.log().lines().any(|l| {
            l.contains("app_id=/shop/web") && l.contains("not in Switchboard's ledger") && l.contains("hand-1")
        })
    })
    .await;
    d.more_resyncs(2.0).await;
    assert_eq!(snapshot(), before, "the other backend, servers or frontend changed");
    assert_eq!(
        w.vulcand().writes().len(),
        writes,
        "switchboard wrote to Vulcand: {:?}",
        &w.vulcand().writes()[writes..]
    );
    let refused = d.log().lines().filter(|l| l.contains("not in Switchboard's ledger")).count();
    assert_eq!(refused, 1, "refused once, not once per pass");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_write_cut_by_kill_9_is_known_as_ours_on_restart() {
    let w = world().await;
    // The backend is written, then the server write fails: the op stays
    // queued with Switchboard's backend in Vulcand and not yet in the ledger.
    w.vulcand().set_failing_server_writes(Some(503));
    let mut d = w.daemon(&[]);
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 1));
    eventually("backend written, server write failed", WAIT, || {
        w.backend_ids().iter().any(|b| b == OURS)
            && w.vulcand()
                .requests()
                .iter()
                .any(|r| r.method == "POST" && r.path == format!("/v2/backends/{OURS}/servers"))
    })
    .await;
    d.kill9();
    w.vulcand().set_failing_server_writes(None);
    d.restart();
    w.converge("the retry finished its own first write").await;
    assert!(!d.log().contains("not in Switchboard's ledger"), "refused its own backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scaled_to_zero_then_up_again_is_routed_again() {
    let w = world().await;
    let mut d = w.daemon(&[]);
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 1));
    w.converge("deployed").await;
    w.marathon.emit(&w.marathon.model().scale(APP, 0));
    eventually("the last server removed", WAIT, || w.servers(OURS).is_empty()).await;
    d.wait_sample("vulcand queue drained", "switchboard_queue_depth{backend=\"vulcand\"}", |v| v == 0.0).await;
    // Once with the daemon running on, once after a kill -9 right there.
    d.kill9();
    d.restart();
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().scale(APP, 2));
    w.converge("scaled up again: servers back behind the app's own backend").await;
    assert!(!d.log().contains("not in Switchboard's ledger"), "refused its own backend");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_scaled_to_zero_loses_its_backend_and_frontend_and_comes_back() {
    let w = world().await;
    let _d = w.subscribed_daemon(&[]).await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 3));
    w.converge("deployed").await;
    // Each kill on its own, as Marathon reports a scale-down task by task.
    for e in w.marathon.model().scale(APP, 0) {
        w.marathon.emit(&[e]);
    }
    eventually("servers, frontend and backend removed", WAIT, || w.app_gone()).await;
    w.marathon.emit(&w.marathon.model().scale(APP, 2));
    w.converge("scaled up again").await;
}

/// The window the kill-point storm found: a resync's listing taken after an
/// instance's write returned but before the ledger holds it (the rest of its
/// app's ops are still being written), and the task killed meanwhile.
/// Vulcand's listing is the ledger's ids looked up, so the listing does not
/// show the instance; the merge must not then forget it or settle its
/// deregistration, or its server stays in Vulcand with nothing to remove it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_killed_while_a_listing_straddles_its_registration_leaves_no_server() {
    let w = World::builder()
        .vulcand(VulcandSimOptions::default())
        .vulcand_write_cost(Duration::from_millis(400))
        .start()
        .await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    d.wait_sample("the start-up resync done", "switchboard_resyncs_total{result=\"ok\"}", |v| v >= 1.0).await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 2));
    let tasks = w.marathon.model().task_ids(APP);
    let server_of = |task: &str| w.servers(OURS).keys().any(|id| id.starts_with(task));
    // The first instance's write has returned (its frontend is there too),
    // the second's is still being written.
    eventually("the first instance written, the second not yet", WAIT, || {
        tasks.iter().filter(|t| server_of(t)).count() == 1 && w.frontends().contains_key(OURS)
    })
    .await;
    let first = tasks.iter().find(|t| server_of(t)).cloned().expect("one server");
    // A reconnect's resync lists Vulcand now; the first task dies meanwhile.
    let resyncs = d.resyncs_ok().await.expect("resyncs counted");
    w.marathon.disconnect_all();
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().kill_task(&first));
    d.wait_sample("the reconnect's resync done", "switchboard_resyncs_total{result=\"ok\"}", |v| v > resyncs).await;
    let deadline = Instant::now() + WAIT;
    while !w.converged() {
        assert!(
            Instant::now() < deadline,
            "not in step: Vulcand holds {:?}, Marathon runs {:?}",
            w.servers(OURS),
            w.expected_vulcand_servers(Some(APP))
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!server_of(&first), "the killed task's server is still routed");
}

/// Switchboard's backend, server and frontend are removed by hand and the
/// same ids made again by someone else (other URL, route, settings). When
/// the app goes, the ledger still names them, but their content is not what
/// Switchboard wrote: each is left alone with a warning, and the
/// deregistration counts as done (nothing queued, the ledger empty).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_recreated_by_someone_else_survive_the_last_deregistration() {
    use reqwest::Method as M;
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 1));
    w.converge("deployed").await;
    let ours: Vec<String> = w.servers(OURS).into_keys().collect();
    assert_eq!(ours.len(), 1);

    assert_eq!(w.vulcand_call(M::DELETE, &format!("/v2/frontends/{OURS}"), None).await, 200);
    assert_eq!(w.vulcand_call(M::DELETE, &format!("/v2/backends/{OURS}"), None).await, 200);
    let backend = json!({"Backend": {"Id": OURS, "Type": "http", "Settings": {"Timeouts": {"Read": "30s"}}}});
    assert_eq!(w.vulcand_call(M::POST, "/v2/backends", Some(backend)).await, 200);
    let server = json!({"Server": {"Id": ours[0], "URL": "http://10.9.9.9:8080"}});
    assert_eq!(w.vulcand_call(M::POST, &format!("/v2/backends/{OURS}/servers"), Some(server)).await, 200);
    let fe = json!({"Frontend": {"Id": OURS, "Type": "http", "BackendId": OURS, "Route": r#"Host("theirs.local")"#}});
    assert_eq!(w.vulcand_call(M::POST, "/v2/frontends", Some(fe)).await, 200);
    let snapshot = || (w.vulcand().backends(), w.vulcand().frontends(), w.vulcand().servers(OURS));
    let before = snapshot();
    let writes = w.vulcand().writes().len();

    w.marathon.emit(&w.marathon.model().destroy(APP));
    eventually("server, frontend and backend left alone, each named", WAIT, || {
        let log = d.log();
        ["entity=server", "entity=frontend", "entity=backend"].iter().all(|e| {
            log.lines().any(|l| l.contains("left alone on deregistration") && l.contains(e) && l.contains(OURS))
        })
    })
    .await;
    d.wait_sample("the deregistration is done", "switchboard_registrations{backend=\"vulcand\"}", |v| v == 0.0).await;
    d.wait_sample("nothing queued", "switchboard_queue_depth{backend=\"vulcand\"}", |v| v == 0.0).await;
    assert_eq!(snapshot(), before, "someone else's backend, server or frontend changed");
    assert_eq!(w.vulcand().writes().len(), writes, "deleted: {:?}", &w.vulcand().writes()[writes..]);
    let log = d.log();
    assert!(log.contains("10.9.9.9:8080") && log.contains("theirs.local") && log.contains("30s"), "why not named");
}
