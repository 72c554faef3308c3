//! `switchboard adopt` through the binary: a data dir lost while Vulcand (or
//! a Kong without tags) still routes the cluster's apps. `run` refuses the
//! ids it has no record of; `adopt` lists what matches this cluster's naming
//! scheme and changes nothing; `adopt --yes` records it; `run` then manages
//! it, removing what Marathon no longer runs. Other clusters' entities and
//! ids of other schemes are never listed, and nothing is recorded while a
//! daemon of the cluster holds the HA lock (unless forced).

mod common;

use std::collections::BTreeSet;
use std::process::Output;

use common::{WAIT, World, eventually, run_cli, s};
use serde_json::{Value, json};
use switchboard::sim::consul::ConsulSimOptions;
use switchboard::sim::vulcand::VulcandSimOptions;

const APP: &str = "/shop/web";
/// The app's Vulcand backend and frontend id in cluster `default`.
const OURS: &str = "sb.default.shop-web~";
/// Another cluster's, and one of no Switchboard's scheme.
const OTHER_CLUSTER: &str = "sb.other.shop-web~";
const HAND_MADE: &str = "legacy-web";

fn web_app() -> Value {
    json!({
        "id": APP,
        "labels": {"vulcand.host": "web.local", "kong.hosts": "web.example.com"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}]
    })
}

/// `switchboard <command> --data-dir <world's> <world's backend flags> <extra>`.
async fn cli(w: &World, command: &[&str], extra: &[&str]) -> Output {
    let mut args = s(command);
    args.extend(s(&["--data-dir", &w.data_dir().to_string_lossy()]));
    args.extend(w.args(extra));
    run_cli(args).await
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// The rows of `adopt --json`: (entity, id, app, action).
fn rows(out: &Output) -> Vec<(String, String, String, String)> {
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {:?}", text(out)));
    let get = |r: &Value, k: &str| r[k].as_str().unwrap_or("-").to_owned();
    report["rows"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|r| (get(r, "entity"), get(r, "id"), get(r, "app_id"), get(r, "action")))
        .collect()
}

fn server_ids(w: &World, backend: &str) -> BTreeSet<String> {
    let list = w.vulcand().servers(backend);
    list.as_array().into_iter().flatten().filter_map(|s| s["Id"].as_str().map(str::to_owned)).collect()
}

/// A backend `id` with one server `server`, made by hand.
async fn hand_made(w: &World, id: &str, server: &str) {
    use reqwest::Method as M;
    let url = w.vulcand().url();
    let backend = json!({"Backend": {"Id": id, "Type": "http"}});
    assert_eq!(w.call(&url, M::POST, "/v2/backends", Some(backend)).await, 200);
    let server = json!({"Server": {"Id": server, "URL": "http://10.9.9.9:8080"}});
    assert_eq!(w.call(&url, M::POST, &format!("/v2/backends/{id}/servers"), Some(server)).await, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_data_dir_is_adopted_explicitly_then_managed() {
    let w = World::builder().vulcand(VulcandSimOptions::default()).start().await;
    let mut d = w.daemon(&[]);
    w.subscribed().await;
    w.emit(&w.marathon.model().deploy(web_app(), 2));
    eventually("both servers routed", WAIT, || server_ids(&w, OURS).len() == 2).await;
    let ours = server_ids(&w, OURS);
    d.kill9();
    // Entities that are not this cluster's, or of no Switchboard scheme.
    let their_server = ours.iter().next().cloned().expect("a server");
    hand_made(&w, OTHER_CLUSTER, &their_server).await;
    hand_made(&w, HAND_MADE, "hand-1").await;
    std::fs::remove_dir_all(w.data_dir()).expect("wipe the data dir");
    // While nothing runs, Marathon scales the app down: one server stands
    // for a task that is gone.
    let _ = w.marathon.model().scale(APP, 1);
    let running = w.expected_vulcand_servers(Some(APP));
    assert_eq!(running.len(), 1);

    // `run` refuses ids it has no record of, as it always did.
    let writes = w.vulcand().writes().len();
    let d = w.daemon(&[]);
    eventually("run refuses the ids it has no record of", WAIT, || {
        d.log().lines().any(|l| l.contains("not in Switchboard's ledger") && l.contains(OURS))
    })
    .await;
    drop(d);
    assert_eq!(w.vulcand().writes().len(), writes, "run wrote to ids it has no record of");

    // A dry run (not a terminal, no --yes): lists, records nothing.
    let out = cli(&w, &["adopt"], &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("dry run: nothing recorded") && stdout.contains("--yes"), "{stdout}");
    assert!(stderr.contains("not a terminal and no --yes"), "{stderr}");
    for server in &ours {
        assert!(stdout.contains(&format!("{OURS}/{server}")), "{server} not listed:\n{stdout}");
    }
    assert!(stdout.contains(APP), "the app each server stands for:\n{stdout}");
    assert!(!stdout.contains("sb.other") && !stdout.contains(HAND_MADE), "not ours to list:\n{stdout}");
    let out = cli(&w, &["adopt", "--json", "--dry-run"], &[]).await;
    let listed = rows(&out);
    let want: BTreeSet<(String, String)> = ["backend", "frontend"]
        .iter()
        .map(|e| (e.to_string(), OURS.to_owned()))
        .chain(ours.iter().map(|sid| ("server".to_owned(), format!("{OURS}/{sid}"))))
        .collect();
    let got: BTreeSet<(String, String)> = listed.iter().map(|(e, id, _, _)| (e.clone(), id.clone())).collect();
    assert_eq!(got, want, "{listed:?}");
    assert!(listed.iter().all(|(_, _, _, action)| action == "adopt"), "the first dry run recorded: {listed:?}");
    assert!(listed.iter().filter(|(e, ..)| e == "server").all(|(_, _, app, _)| app == APP), "{listed:?}");
    assert_eq!(w.vulcand().writes().len(), writes, "adopt wrote to Vulcand");

    // Recorded.
    let out = cli(&w, &["adopt", "--yes"], &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("recorded 4 entities"), "{stdout}");
    let again = rows(&cli(&w, &["adopt", "--json"], &[]).await);
    assert!(again.iter().all(|(.., action)| action == "owned already"), "{again:?}");
    assert_eq!(w.vulcand().writes().len(), writes, "adopt wrote to Vulcand");

    // `run` owns them now: the dead task's server goes, the live one stays,
    // and the app's removal takes everything of it; nobody else's changes.
    let d = w.daemon(&[]);
    w.subscribed().await;
    eventually("the server of the task that is gone is removed", WAIT, || {
        server_ids(&w, OURS) == running.keys().cloned().collect()
    })
    .await;
    assert!(!d.log().contains("not in Switchboard's ledger"), "run still refuses adopted ids");
    // Not even for a moment was a live server removed or rewritten.
    let dead: Vec<&String> = ours.iter().filter(|sid| !running.contains_key(*sid)).collect();
    let task = dead[0].split(':').next().expect("task id");
    let made: Vec<(String, String)> =
        w.vulcand().writes()[writes..].iter().map(|r| (r.method.clone(), r.path.clone())).collect();
    assert_eq!(made.len(), 1, "{made:?}");
    assert!(made[0].0 == "DELETE" && made[0].1.contains(task), "only the dead task's server goes: {made:?}");
    let other = (w.vulcand().servers(OTHER_CLUSTER), w.vulcand().servers(HAND_MADE));
    w.emit(&w.marathon.model().destroy(APP));
    eventually("the app's backend and frontend removed", WAIT, || {
        let backends = w.vulcand().backends();
        let ids: BTreeSet<&str> = backends.as_array().into_iter().flatten().filter_map(|b| b["Id"].as_str()).collect();
        !ids.contains(OURS) && ids.contains(OTHER_CLUSTER) && ids.contains(HAND_MADE)
    })
    .await;
    assert_eq!((w.vulcand().servers(OTHER_CLUSTER), w.vulcand().servers(HAND_MADE)), other);
}

/// Kong 0.10 has no tags: after a lost data dir `reconcile --once` refuses
/// the app's names; `adopt --yes` records its api, upstream and targets, and
/// `reconcile --once` then converges, removing the target of a task that is
/// gone and rewriting nothing that is in place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kong_without_tags_is_adopted_then_reconciled() {
    let w = World::builder().kong("0.10.4").start().await;
    let mut d = w.daemon(&[]);
    w.subscribed().await;
    w.emit(&w.marathon.model().deploy(web_app(), 2));
    let targets = |w: &World| -> BTreeSet<String> {
        let t = w.kong().targets("shop-web.default");
        t.as_array().into_iter().flatten().filter_map(|t| t["target"].as_str().map(str::to_owned)).collect()
    };
    eventually("both targets published", WAIT, || targets(&w).len() == 2).await;
    d.kill9();
    std::fs::remove_dir_all(w.data_dir()).expect("wipe the data dir");
    let _ = w.marathon.model().scale(APP, 1);
    let running = w.expected_kong_targets(Some(APP));

    let out = cli(&w, &["reconcile", "--once"], &[]).await;
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("not in Switchboard's ledger"), "{stdout}");

    let out = cli(&w, &["adopt", "--json", "--yes"], &[]).await;
    let listed = rows(&out);
    let entities: BTreeSet<&str> = listed.iter().map(|(e, ..)| e.as_str()).collect();
    assert_eq!(entities, BTreeSet::from(["api", "upstream", "target"]), "{listed:?}");
    assert_eq!(listed.iter().filter(|(e, ..)| e == "target").count(), 2, "{listed:?}");
    assert!(listed.iter().all(|(.., action)| action == "adopted"), "{listed:?}");

    let before = w.kong().requests().len();
    let out = cli(&w, &["reconcile", "--once"], &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(targets(&w), running, "{stdout}");
    let made: Vec<(String, String)> =
        w.kong().requests()[before..].iter().filter(|(m, _)| m != "GET").cloned().collect();
    assert!(
        !made.is_empty() && made.iter().all(|(m, _)| m == "DELETE"),
        "only the dead task's target is removed: {made:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adopt_records_nothing_while_a_daemon_holds_the_lock_unless_forced() {
    let w = World::builder().consul(ConsulSimOptions::default()).vulcand(VulcandSimOptions::default()).start().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let _leader = common::Daemon::start(&dir.path().join("leader"), &w.args(&["--ha", "--replica-name", "a"]));
    let key = "switchboard/default/leader";
    eventually("a leads", WAIT, || w.consul().kv().holder(key).is_some_and(|(_, n)| n == "a")).await;
    // A backend with this cluster's id and a server of Switchboard's scheme.
    hand_made(&w, OURS, "shop_web.instance-1._app.1:31000~").await;

    let out = cli(&w, &["adopt", "--yes"], &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{stderr}");
    assert!(stderr.contains("replica a") && stderr.contains("--force"), "{stderr}");
    let listed = rows(&cli(&w, &["adopt", "--json"], &[]).await);
    assert!(!listed.is_empty() && listed.iter().all(|(.., a)| a == "adopt"), "recorded: {listed:?}");

    let out = cli(&w, &["adopt", "--yes", "--force"], &[]).await;
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(stdout.contains("recorded"), "{stdout}");
}
