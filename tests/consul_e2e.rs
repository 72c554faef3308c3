//! Behaviour through the `switchboard` binary against the Marathon and Consul
//! simulators: events in awkward orders, restarts, kills, destroys, foreign
//! services, outages and crashes.

mod common;

use std::time::Duration;

use common::{Daemon, WAIT, World, eventually, s, status_only};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::marathon::{ModelOptions, SimEvent};

fn web_app() -> Value {
    json!({
        "id": "/shop/web",
        "cmd": "python3 -m http.server $PORT0",
        "labels": {"consul": "web", "public": "tag"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
    })
}

async fn world() -> World {
    World::builder().consul(ConsulSimOptions::default()).start().await
}

fn by_type<'a>(events: &'a [SimEvent], t: &str) -> Vec<&'a SimEvent> {
    events.iter().filter(|e| e.event_type == t).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_before_labels_then_scale_kill_destroy() {
    let w = world().await;
    let _d = w.daemon(&[]);
    w.subscribed().await;

    // Deploy 2 instances; deliver every status update before the events that carry labels.
    let events = w.marathon.model().deploy(web_app(), 2);
    let (status, rest): (Vec<SimEvent>, Vec<SimEvent>) =
        events.into_iter().partition(|e| e.event_type == "status_update_event");
    w.marathon.emit(&status);
    w.marathon.emit(&rest);
    w.converge_consul("/shop/web", "2 instances registered").await;
    assert_eq!(w.consul_ids().len(), 2);
    let svc = w.consul().services().into_values().next().unwrap();
    assert_eq!(svc["Service"], "web");
    assert_eq!(svc["Tags"], json!(["switchboard", "public"]));
    assert_eq!(svc["Meta"]["managed_by"], "switchboard");
    assert_eq!(svc["Meta"]["marathon_app_id"], "/shop/web");

    // Scale down to 1.
    let events = w.marathon.model().scale("/shop/web", 1);
    w.marathon.emit(&events);
    w.converge_consul("/shop/web", "scaled down to 1").await;
    assert_eq!(w.consul_ids().len(), 1);

    // Kill: deregistered at TASK_KILLING already, replacement registered.
    let task = w.marathon.model().task_ids("/shop/web")[0].clone();
    let events = w.marathon.model().kill_task(&task);
    let killing: Vec<SimEvent> = by_type(&events, "status_update_event")
        .into_iter()
        .filter(|e| e.data["taskStatus"] == "TASK_KILLING")
        .cloned()
        .collect();
    w.marathon.emit(&killing);
    eventually("killing task deregistered", WAIT, || !w.consul_ids().iter().any(|id| id.starts_with(&task))).await;
    w.marathon.emit(&events);
    w.converge_consul("/shop/web", "replacement registered").await;

    // A late, stale TASK_RUNNING of the killed task must not resurrect it.
    let stale: Vec<SimEvent> = by_type(&events, "status_update_event")
        .into_iter()
        .filter(|e| e.data["taskId"] == task.as_str() && e.data["taskStatus"] == "TASK_KILLING")
        .map(|e| {
            let mut e = e.clone();
            e.data["taskStatus"] = json!("TASK_RUNNING");
            e
        })
        .collect();
    w.marathon.emit(&stale);
    // Events are folded in order: once a marker app is registered, the stale event was seen.
    let marker = w
        .marathon
        .model()
        .deploy(json!({"id": "/marker", "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]}), 1);
    w.marathon.emit(&marker);
    w.converge_consul("/marker", "marker registered").await;
    assert!(!w.consul_ids().iter().any(|id| id.starts_with(&task)), "stale TASK_RUNNING resurrected {task}");
    // Destroy: everything goes.
    let events = w.marathon.model().destroy("/shop/web");
    w.marathon.emit(&events);
    eventually("app destroyed", WAIT, || w.consul_ids_of("/shop/web").is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_with_only_status_events_fetches_the_new_version_once() {
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 3);
    w.marathon.emit(&events);
    w.converge_consul("/shop/web", "deployed").await;
    let fetches_before = w.marathon.app_fetches("/shop/web");

    // A restart from the UI: new version, no api_post_event; deliver only the status updates.
    let events = w.marathon.model().restart("/shop/web");
    w.marathon.emit(&status_only(&events));
    w.converge_consul("/shop/web", "restarted instances registered after the spec fetch").await;
    // Three new tasks waited for the same spec: one fetch (two at most, if a retry raced the grace period).
    let fetches = w.marathon.app_fetches("/shop/web") - fetches_before;
    assert!((1..=2).contains(&fetches), "{fetches} fetches of /shop/web for 3 waiting tasks");
    assert!(d.sample("switchboard_spec_fetches_total{result=\"ok\"}").await >= Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_and_other_cluster_services_survive_every_resync() {
    let w = world().await;
    w.consul()
        .insert_raw(json!({"ID": "redis-1", "Name": "redis", "Tags": ["cache"], "Port": 6379, "Address": "10.0.0.9"}));
    w.consul().insert_raw(json!({
        "ID": "other.instance-1._app.1:31000", "Name": "web", "Tags": ["switchboard"], "Port": 31000, "Address": "10.0.0.8",
        "Meta": {"managed_by": "switchboard", "switchboard_cluster": "blue", "marathon_task_id": "other.instance-1._app.1", "marathon_app_id": "/web"}
    }));
    // Marathon has no apps at all: a careless resync would delete everything.
    let out = common::run_cli(
        [
            vec!["reconcile".to_string(), "--once".into(), "--data-dir".into(), w.data_dir().display().to_string()],
            w.args(&[]),
        ]
        .concat(),
    )
    .await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let d = w.daemon(&["--resync-interval", "200ms"]);
    eventually("several resyncs", WAIT, || w.marathon.snapshot_fetches() >= 4).await;
    let events = w.marathon.model().deploy(web_app(), 1);
    w.marathon.emit(&events);
    w.converge_consul("/shop/web", "own app registered").await;
    eventually("two more resyncs", WAIT, || w.marathon.snapshot_fetches() >= 6).await;
    let ids = w.consul_ids();
    assert!(ids.contains("redis-1"), "foreign service deleted: {ids:?}");
    assert!(ids.contains("other.instance-1._app.1:31000"), "other cluster's service deleted: {ids:?}");
    drop(d);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_taken_before_a_kill_does_not_resurrect_the_task() {
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 2));
    w.converge_consul("/shop/web", "deployed").await;

    // The next resync's snapshot is computed now, before the kill, and answered after it.
    w.marathon.hold_next_snapshot(Duration::from_millis(800));
    let fetches = w.marathon.snapshot_fetches();
    let resyncs = d.resyncs_ok().await.expect("the start-up resync is counted");
    w.marathon.disconnect_all();
    eventually("snapshot requested", WAIT, || w.marathon.snapshot_fetches() > fetches).await;
    let task = w.marathon.model().task_ids("/shop/web")[0].clone();
    let kill = w.marathon.model().kill_task(&task);
    w.marathon.emit(&kill);
    common::eventually_async("resync with the stale snapshot done", WAIT, || async {
        d.resyncs_ok().await.is_some_and(|v| v > resyncs)
    })
    .await;
    // And one more ordinary event to be sure every op of that resync ran.
    w.marathon.emit(
        &w.marathon
            .model()
            .deploy(json!({"id": "/marker", "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]}), 1),
    );
    w.converge_consul("/marker", "marker registered").await;
    assert!(
        !w.consul_ids().iter().any(|id| id.starts_with(&task)),
        "killed task {task} re-registered by a stale snapshot"
    );
    w.converge_consul("/shop/web", "still in step").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_down_during_a_deploy_then_back() {
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    w.consul().stop().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 2));
    common::eventually_async("registrations queued and retried", WAIT, || async {
        d.sample("switchboard_ops_total{backend=\"consul\",op=\"register\",result=\"retry\"}").await >= Some(1.0)
    })
    .await;
    w.consul().restart().await.expect("consul back");
    w.converge_consul("/shop/web", "registered once Consul is back").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consul_answering_5xx_keeps_ops_queued_across_a_crash() {
    let w = world().await;
    let mut d = w.daemon(&[]);
    w.subscribed().await;
    w.consul().set_failing(Some(500));
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 2));
    common::eventually_async("ops queued", WAIT, || async {
        d.sample("switchboard_queue_depth{backend=\"consul\"}").await >= Some(2.0)
    })
    .await;
    d.kill9();
    w.consul().set_failing(None);
    d.restart();
    w.converge_consul("/shop/web", "queued ops applied after restart").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_with_marathon_changing_while_down() {
    let w = world().await;
    let mut d = w.daemon(&[]);
    w.subscribed().await;
    let events = w.marathon.model().deploy(web_app(), 3);
    // Half the events, then kill -9.
    w.marathon.emit(&events[..events.len() / 2]);
    d.kill9();
    // While Switchboard is down: the rest of the deploy, a kill, a scale down, and a new app.
    let task = w.marathon.model().task_ids("/shop/web")[0].clone();
    let _lost = w.marathon.model().kill_task(&task);
    let _lost = w.marathon.model().scale("/shop/web", 2);
    let _lost =
        w.marathon.model().deploy(json!({"id": "/api", "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]}), 1);
    d.restart();
    w.converge_consul("/shop/web", "startup resync repairs /shop/web").await;
    w.converge_consul("/api", "startup resync registers /api").await;
    assert!(!w.consul_ids().iter().any(|id| id.starts_with(&task)), "dead task {task} still registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_lines_and_unknown_types_are_skipped() {
    let w = world().await;
    let d = w.daemon(&["--stream-line-limit", "1MiB"]);
    w.subscribed().await;
    eventually("startup resync", WAIT, || w.marathon.snapshot_fetches() >= 1).await;
    w.marathon.emit_raw("event: status_update_event\r\ndata: {\"taskId\": \r\n\r\n");
    w.marathon.emit_raw("event: brand_new_event\r\ndata: {\"eventType\":\"brand_new_event\",\"timestamp\":\"2017-07-19T17:35:15.661Z\"}\r\n\r\n");
    w.marathon.emit_raw("data: this is not json\r\n\r\n");
    // A line over the cap is skipped, not buffered without end; the event it
    // carried is lost, so a resync follows, and the connection stays up.
    let resyncs = w.marathon.snapshot_fetches();
    let huge = format!("event: api_post_event\r\ndata: {{\"pad\":\"{}\"}}\r\n\r\n", "x".repeat(2 * 1024 * 1024));
    w.marathon.emit_raw(&huge);
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 2));
    w.converge_consul("/shop/web", "events after the bad ones still applied").await;
    assert_eq!(d.sample("switchboard_events_skipped_total{reason=\"oversized\"}").await, Some(1.0));
    eventually("a resync after the oversized line", WAIT, || w.marathon.snapshot_fetches() > resyncs).await;
    assert_eq!(w.marathon.subscribers(), 1, "the connection stayed up");
    assert!(d.sample("switchboard_events_skipped_total{reason=\"malformed\"}").await >= Some(2.0), "bad JSON twice");
    assert!(d.sample("switchboard_events_skipped_total{reason=\"unknown_type\"}").await >= Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_stream_is_reconnected_and_resynced() {
    let w = world().await;
    let _d = w.daemon(&["--idle-timeout", "600ms"]);
    w.subscribed().await;
    eventually("startup resync", WAIT, || w.marathon.snapshot_fetches() >= 1).await;
    w.marathon.set_silent(true);
    // Changes while the stream is silent are only seen through the resync after the reconnect.
    let _lost = w.marathon.model().deploy(web_app(), 2);
    let before = w.marathon.snapshot_fetches();
    eventually("watchdog reconnect and resync", WAIT, || w.marathon.snapshot_fetches() > before).await;
    w.marathon.set_silent(false);
    w.converge_consul("/shop/web", "registered by the resync after the reconnect").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_marathon_drops_silently_are_repaired_by_the_periodic_resync() {
    // Marathon <= 1.7 drops a slow subscriber's events without a word: the
    // connection stays up, only the periodic resync can see the change.
    let w = world().await;
    let _d = w.daemon(&["--resync-interval", "300ms"]);
    w.subscribed().await;
    eventually("startup resync", WAIT, || w.marathon.snapshot_fetches() >= 1).await;
    let _dropped = w.marathon.model().deploy(web_app(), 2);
    w.converge_consul("/shop/web", "registered by a periodic resync, with no event and no reconnect").await;
    assert_eq!(w.marathon.subscribers(), 1, "the stream was never dropped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_exit_codes_and_dry_run() {
    let w = world().await;
    let data = w.data_dir().display().to_string();
    let _ = w.marathon.model().deploy(web_app(), 2);
    let once = |extra: &[&str]| {
        let mut a = s(&["reconcile", "--once", "--data-dir", &data]);
        a.extend(w.args(extra));
        a
    };

    // --dry-run: prints the plan, writes nothing.
    let out = common::run_cli(once(&["--dry-run", "--json"])).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).expect("json report");
    assert_eq!(report["ops"].as_array().map(Vec::len), Some(2), "{report}");
    assert!(report["ops"].as_array().unwrap().iter().all(|o| o["result"] == "planned" && o["op"] == "register"));
    assert_eq!(w.consul().writes(), 0, "dry run wrote to Consul");
    assert!(w.consul_ids().is_empty());

    // For real: converged, exit 0.
    let out = common::run_cli(once(&[])).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.consul_ids(), w.expected_consul_ids(Some("/shop/web")));

    // Unchanged world: zero writes.
    let writes = w.consul().writes();
    let out = common::run_cli(once(&[])).await;
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to do"));
    assert_eq!(w.consul().writes(), writes, "an unchanged world made writes");

    // Consul refusing: exit 1, and the failure is reported.
    let _ = w.marathon.model().scale("/shop/web", 3);
    w.consul().set_failing(Some(503));
    let out = common::run_cli(once(&[])).await;
    assert_eq!(out.status.code(), Some(1), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(String::from_utf8_lossy(&out.stdout).contains("failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_exits_2_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data").display().to_string();
    let check = |args: Vec<String>, setting: &'static str| async move {
        let out = common::run_cli(args).await;
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(err.contains(setting), "error does not name {setting}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
    };
    check(s(&["run", "--marathon", "http://127.0.0.1:1", "--consul", "consul:8500", "--data-dir", &data]), "--consul")
        .await;
    check(
        s(&["run", "--marathon", "http://127.0.0.1:1", "--resync-interval", "often", "--data-dir", &data]),
        "--resync-interval",
    )
    .await;
    check(s(&["reconcile", "--once", "--data-dir", &data]), "--marathon").await;
    // A backend's own check names the flag the user typed, not the backend's URL flag.
    let m = "http://127.0.0.1:1";
    check(
        s(&["run", "--marathon", m, "--kong", "http://127.0.0.1:2", "--cluster", "Prod", "--data-dir", &data]),
        "invalid setting --cluster:",
    )
    .await;
    check(
        s(&[
            "run",
            "--marathon",
            m,
            "--vulcand",
            "http://127.0.0.1:2",
            "--vulcand-server-ttl",
            "1500ms",
            "--data-dir",
            &data,
        ]),
        "invalid setting --vulcand-server-ttl:",
    )
    .await;
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "marathon = [\"http://127.0.0.1:1\"]\nconsul_url = \"http://x\"\n").unwrap();
    check(s(&["run", "--config", file.to_str().unwrap(), "--data-dir", &data]), "consul_url").await;
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let bad_dir = blocker.join("sub").display().to_string();
    check(s(&["run", "--marathon", "http://127.0.0.1:1", "--data-dir", &bad_dir]), "--data-dir").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_shows_apps_instances_pending_ledger_and_queue() {
    let w = world().await;
    let data = w.data_dir().display().to_string();
    let mut d = w.daemon(&[]);
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 1));
    w.converge_consul("/shop/web", "deployed").await;

    // An instance whose app spec cannot be fetched (Marathon's REST answers 500) stays pending;
    // a registration Consul refuses (503) stays queued.
    let events =
        w.marathon.model().deploy(json!({"id": "/api", "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]}), 1);
    w.marathon.set_failing(Some(500));
    w.marathon.emit(&status_only(&events));
    w.consul().set_failing(Some(503));
    w.marathon.emit(&w.marathon.model().scale("/shop/web", 2));
    common::eventually_async("scale-up op queued", WAIT, || async {
        d.sample("switchboard_queue_depth{backend=\"consul\"}").await >= Some(1.0)
    })
    .await;
    common::eventually_async("api instance pending", WAIT, || async {
        d.sample("switchboard_pending_instances{lack=\"spec\"}").await >= Some(1.0)
    })
    .await;

    // While the daemon runs, `state` asks it (the daemon holds the store).
    let status = d.status_url().await;
    let listen = status.trim_start_matches("http://").to_owned();
    let out = common::run_cli(s(&["state", "--json", "--listen", &listen, "--data-dir", &data])).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).expect("state json");
    let pending = state["pending"].as_array().expect("pending");
    assert!(pending.iter().any(|p| p["app_id"] == "/api" && p["lack"] == "Spec"), "{state:#}");
    assert_eq!(state["ledger"]["consul"].as_array().map(Vec::len), Some(1), "{state:#}");
    assert!(state["queue"]["consul"].as_array().is_some_and(|q| !q.is_empty()), "{state:#}");
    assert!(state["instances"].as_array().is_some_and(|i| i.iter().any(|i| i["status"] == "ready")), "{state:#}");
    assert!(state["apps"].as_array().is_some_and(|a| a.iter().any(|a| a["app_id"] == "/shop/web")), "{state:#}");

    // With the daemon gone, `state` opens the store itself; the text form names what is pending.
    d.kill9();
    let out = common::run_cli(s(&["state", "--listen", "127.0.0.1:1", "--data-dir", &data])).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("lacks app spec"), "{text}");
    assert!(text.contains("queue consul"), "{text}");
    assert!(text.contains("attempts"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_label_skips_that_app_only_and_is_reported() {
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    let bad = json!({"id": "/bad", "labels": {"consul": "no spaces allowed"}, "portDefinitions": [{"port": 0}]});
    w.marathon.emit(&w.marathon.model().deploy(bad, 2));
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 2));
    w.converge_consul("/shop/web", "the good app is registered").await;
    assert!(w.consul_ids_of("/bad").is_empty(), "nothing of the bad app is registered");
    common::eventually_async("rejection counted", WAIT, || async {
        d.sample("switchboard_rejections{backend=\"labels\"}").await >= Some(1.0)
    })
    .await;
    let state: Value = reqwest::get(format!("{}/state", d.status_url().await)).await.unwrap().json().await.unwrap();
    let rejections = state["rejections"].as_array().cloned().unwrap_or_default();
    assert!(
        rejections.iter().any(|r| r["app_id"] == "/bad" && r["label"] == "consul"),
        "rejection names app and label: {rejections:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_of_an_app_marathon_no_longer_knows_are_dropped() {
    let w = world().await;
    let d = w.daemon(&[]);
    w.subscribed().await;
    // Status updates for an app the snapshot never showed and REST answers 404 for.
    let events = w
        .marathon
        .model()
        .deploy(json!({"id": "/ghost", "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]}), 2);
    let _ = w.marathon.model().destroy("/ghost");
    w.marathon.emit(&status_only(&events));
    common::eventually_async("the 404 is seen", WAIT, || async {
        d.sample("switchboard_spec_fetches_total{result=\"not_found\"}").await >= Some(1.0)
    })
    .await;
    common::eventually_async("nothing pending any more", WAIT, || async {
        d.sample("switchboard_pending_instances{lack=\"spec\"}").await == Some(0.0)
    })
    .await;
    assert_eq!(w.marathon.app_fetches("/ghost"), 1, "one fetch for two waiting instances");
    assert!(w.consul_ids_of("/ghost").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_from_the_environment_reach_marathon_and_consul_but_never_the_log() {
    let w = World::builder()
        .marathon(ModelOptions {
            keepalive: Duration::from_millis(500),
            basic_auth: Some(("ops".into(), "m4rathon-s3cret".into())),
            ..Default::default()
        })
        .consul(ConsulSimOptions { acl_token: Some("c0nsul-t0ken".into()), ..Default::default() })
        .start()
        .await;
    let d = w.daemon_with_env(
        &[],
        &[("SWITCHBOARD_MARATHON_AUTH", "ops:m4rathon-s3cret"), ("SWITCHBOARD_CONSUL_TOKEN", "c0nsul-t0ken")],
    );
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 2));
    w.converge_consul("/shop/web", "registered with the ACL token").await;
    // The log line follows the write Consul already shows: wait for it.
    eventually("the debug log captured the applied ops", WAIT, || d.log().contains("applied")).await;
    let log = d.log();
    assert!(!log.contains("m4rathon-s3cret") && !log.contains("c0nsul-t0ken"), "a secret leaked into the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_service_id_held_by_someone_else_is_refused_not_taken_over() {
    let w = world().await;
    // Marathon runs the app already; someone else registered a service under
    // the very ID Switchboard would give its instance.
    let events = w.marathon.model().deploy(web_app(), 1);
    let id = w.expected_consul_ids(Some("/shop/web")).into_iter().next().expect("an instance id");
    w.consul().insert_raw(json!({
        "ID": id, "Name": "team-a-web", "Tags": ["team-a"], "Port": 8080, "Address": "10.9.9.9",
        "Meta": {"owner": "team-a"}
    }));
    let theirs = w.consul().services()[&id].clone();
    let writes = w.consul().writes();

    let d = w.daemon(&["--resync-interval", "500ms"]);
    w.subscribed().await;
    w.marathon.emit(&events);
    eventually("refused, naming the holder", WAIT, || {
        d.log()
            .lines()
            .any(|l| l.contains("app_id=/shop/web") && l.contains("belongs to someone else") && l.contains("team-a"))
    })
    .await;
    d.more_resyncs(2.0).await;
    assert_eq!(w.consul().services()[&id], theirs, "the other service changed");
    assert_eq!(w.consul().writes(), writes, "switchboard wrote to Consul");
}

/// Register calls Consul received (refused ones included).
fn register_calls(consul: &ConsulSim) -> usize {
    consul.requests().iter().filter(|(m, p)| m == "PUT" && p.starts_with("/v1/agent/service/register")).count()
}

/// Consul with ACLs on, and a Switchboard without a token: its listings see
/// nothing (200) and every register is refused for good (403).
async fn acl_world() -> World {
    World::builder()
        .consul(ConsulSimOptions { acl_token: Some("only-for-team-a".into()), ..Default::default() })
        .start()
        .await
}

fn refused_lines(d: &Daemon) -> usize {
    d.log().lines().filter(|l| l.contains("refused; not retried")).count()
}

/// A port nothing listens on (bound, then released).
fn free_listen() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// A daemon that has had the web app's one registration refused.
async fn refused_once(w: &World) -> Daemon {
    let d = w.daemon(&["--resync-interval", "300ms"]);
    w.subscribed().await;
    w.marathon.emit(&w.marathon.model().deploy(web_app(), 1));
    eventually("refused once", WAIT, || refused_lines(&d) == 1).await;
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_is_tried_once_until_its_input_changes_even_across_a_restart() {
    let w = acl_world().await;
    let data = w.data_dir().display().to_string();
    let mut d = refused_once(&w).await;
    assert_eq!(register_calls(w.consul()), 1);

    // Events of any app and resyncs plan again; none tries the refused input.
    w.marathon.emit(&w.marathon.model().deploy(json!({"id": "/other", "portDefinitions": [{"port": 0}]}), 1));
    d.more_resyncs(3.0).await;
    assert_eq!(register_calls(w.consul()), 1, "a refused input was tried again");
    assert_eq!(refused_lines(&d), 1, "one log line per refusal, not one per pass");
    assert_eq!(d.sample("switchboard_refusals{backend=\"consul\"}").await, Some(1.0));
    assert_eq!(d.sample("switchboard_refusals_recorded_total{backend=\"consul\"}").await, Some(1.0));

    // `state` lists it: backend, app, entity, reason, since when.
    let listen = d.status_url().await.trim_start_matches("http://").to_owned();
    let out = common::run_cli(s(&["state", "--json", "--listen", &listen, "--data-dir", &data])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).expect("state json");
    let refusals = state["refusals"].as_array().cloned().unwrap_or_default();
    assert_eq!(refusals.len(), 1, "{state}");
    let r = &refusals[0];
    let id = w.expected_consul_ids(Some("/shop/web")).into_iter().next().expect("an instance");
    assert_eq!(
        (r["backend"].as_str(), r["app_id"].as_str(), r["entity"].as_str()),
        (Some("consul"), Some("/shop/web"), Some(id.as_str()))
    );
    assert!(r["reason"].as_str().is_some_and(|t| t.contains("Permission denied")), "{r}");
    assert!(r["since"].as_str().is_some_and(|t| !t.is_empty()), "{r}");

    // Durable: a restart (even kill -9) does not try it again.
    d.kill9_and_restart();
    eventually("stream subscribed again", WAIT, || w.marathon.subscribers() > 0).await;
    d.more_resyncs(3.0).await;
    assert_eq!(register_calls(w.consul()), 1, "a restart retried a refusal");
    assert_eq!(d.sample("switchboard_refusals{backend=\"consul\"}").await, Some(1.0));

    // The app's labels change: each new input is tried exactly once. The new
    // task's, and, if the old task was still running when the new labels
    // became known, the old task's with the new labels too (the newest spec
    // applies to every instance): each try is a new refusal, logged once.
    let mut changed = web_app();
    changed["labels"]["public"] = json!("tag-b");
    w.marathon.emit(&w.marathon.model().deploy(changed, 1));
    let new_id = w.expected_consul_ids(Some("/shop/web")).into_iter().next().expect("the new instance");
    assert_ne!(new_id, id, "the deploy replaced the instance");
    let refused_new = || d.log().lines().any(|l| l.contains("refused; not retried") && l.contains(new_id.as_str()));
    eventually("the new instance's input tried and refused", WAIT, refused_new).await;
    d.more_resyncs(3.0).await;
    let calls = register_calls(w.consul());
    assert!(calls == 2 || calls == 3, "{calls} register calls");
    assert_eq!(calls, refused_lines(&d), "a refused input was tried again: every call must be a new refusal");
    assert_eq!(
        d.log().lines().filter(|l| l.contains("refused; not retried") && l.contains(new_id.as_str())).count(),
        1
    );
    // The old refusal went with its instance; the new one is in force.
    assert_eq!(d.sample("switchboard_refusals{backend=\"consul\"}").await, Some(1.0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_refused_asks_a_running_daemon_else_opens_the_store() {
    let w = acl_world().await;
    let data = w.data_dir().display().to_string();
    let mut d = refused_once(&w).await;

    // With the daemon up: asked through its API (it holds the store).
    let listen = d.status_url().await.trim_start_matches("http://").to_owned();
    let mut retry = s(&["reconcile", "--once", "--retry-refused", "--data-dir", &data, "--listen", &listen]);
    retry.extend(w.args(&[]));
    let out = common::run_cli(retry).await;
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("lifted 1 refusal"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    eventually("retried by the daemon", WAIT, || register_calls(w.consul()) == 2).await;
    eventually("refused again", WAIT, || refused_lines(&d) == 2).await;
    d.more_resyncs(2.0).await;
    assert_eq!(register_calls(w.consul()), 2);
    d.kill9();

    // Without a daemon: `reconcile --once` holds the refusal back...
    let quiet = free_listen();
    let once = |extra: &[&str]| {
        let mut a = s(&["reconcile", "--once", "--data-dir", &data, "--listen", &quiet]);
        a.extend(s(extra));
        a.extend(w.args(&[]));
        a
    };
    let out = common::run_cli(once(&[])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(0), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("refused [consul] app /shop/web register"), "{stdout}");
    assert_eq!(register_calls(w.consul()), 2, "reconcile --once retried a refusal");
    // ...and with --retry-refused opens the store and tries it once more.
    let out = common::run_cli(once(&["--retry-refused"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("refused: consul"), "{stdout}");
    assert_eq!(register_calls(w.consul()), 3);
}
