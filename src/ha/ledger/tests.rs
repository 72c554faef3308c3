use std::time::Duration;

use super::*;
use crate::model::Routes;
use crate::sim::consul::{ConsulSim, ConsulSimOptions};
use crate::store::Store;

fn reg(service: &str, id: &str) -> Registration {
    Registration {
        id: id.into(),
        service: service.into(),
        app_id: format!("/{service}"),
        task_id: id.split(':').next().unwrap_or(id).into(),
        address: "10.0.0.1".into(),
        port: 31000,
        tags: vec![],
        consul: false,
        checks: vec![],
        healthy: None,
        has_health_checks: false,
        routes: Routes::default(),
        host: "agent-1".into(),
    }
}

fn ledger(services: usize, per_service: usize) -> Vec<Registration> {
    (0..services)
        .flat_map(|s| (0..per_service).map(move |i| reg(&format!("svc-{s}"), &format!("svc-{s}.task-{i:05}:31000"))))
        .collect()
}

fn decode_all(parts: &BTreeMap<String, Vec<u8>>) -> Vec<Registration> {
    let mut out: Vec<Registration> =
        parts.values().flat_map(|v| serde_json::from_slice::<Vec<Registration>>(v).unwrap()).collect();
    out.sort_by(|a, b| a.id.cmp(&b.id));
    out
}

#[test]
fn parts_hold_every_entry_once_under_the_size_limit_and_a_change_touches_one_service() {
    // One service far over Consul's limit, and small ones beside it.
    let mut all = ledger(1, 5_000);
    all.extend(ledger(3, 2).into_iter().map(|mut r| {
        r.service = format!("small/{}", r.service);
        r.id = format!("small-{}", r.id);
        r
    }));
    let p = parts(&all).unwrap();
    assert!(p.values().all(|v| v.len() <= PART_BYTES && v.len() < 512 * 1024));
    assert!(p.keys().filter(|k| k.starts_with("svc-0/")).count() > 1, "the big service is cut: {:?}", p.keys());
    assert!(p.contains_key("small%2Fsvc-0/0"), "service names are key segments: {:?}", p.keys());
    let mut sorted = all.clone();
    sorted.sort_by(|a, b| a.id.cmp(&b.id));
    assert!(decode_all(&p) == sorted, "the parts hold another ledger");

    // Same ledger in another order: the same parts.
    let mut reversed = all.clone();
    reversed.reverse();
    assert_eq!(parts(&reversed).unwrap(), p);
    // One entry of a small service gone: only that service's part changes.
    let fewer: Vec<Registration> = all.iter().filter(|r| r.id != "small-svc-1.task-00000:31000").cloned().collect();
    let q = parts(&fewer).unwrap();
    let changed: Vec<&String> = p.keys().filter(|k| q.get(*k) != p.get(*k)).collect();
    assert_eq!(changed, ["small%2Fsvc-1/0"]);
    assert!(parts(&[]).unwrap().is_empty());
}

#[test]
fn only_three_segment_keys_are_parts() {
    assert_eq!(lock_index_of("12/web/0"), Some(12));
    assert_eq!(lock_index_of("12/web"), None);
    assert_eq!(lock_index_of("x/web/0"), None);
    assert_eq!(lock_index_of("12/web/0/1"), None);
}

struct World {
    consul: ConsulSim,
    client: LockClient,
    _dir: tempfile::TempDir,
}

async fn world() -> World {
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
    let url = url::Url::parse(&format!("{}/", consul.url().trim_end_matches('/'))).unwrap();
    let client = LockClient::new(
        url,
        None,
        "switchboard/prod/leader".into(),
        "a".into(),
        Duration::from_secs(5),
        Default::default(),
    )
    .unwrap();
    World { consul, client, _dir: tempfile::tempdir().unwrap() }
}

fn sharing(dir: &std::path::Path, seed: &[Registration], intents: &[&str]) -> Sharing {
    let store = StoreHandle::spawn(Store::open(dir).unwrap()).unwrap();
    let (seed, intents): (Vec<Registration>, Vec<String>) =
        (seed.to_vec(), intents.iter().map(|s| s.to_string()).collect());
    store
        .call_blocking(move |s| {
            s.import_ledger("vulcand", &seed)?;
            for i in &intents {
                s.intend("vulcand", i)?;
            }
            Ok(())
        })
        .unwrap();
    Sharing::new(store, "prod", &["consul", "vulcand"])
}

fn open() -> Gate<'static> {
    Gate::Until(Instant::now() + Duration::from_secs(60))
}

fn kv_keys(w: &World, prefix: &str) -> Vec<String> {
    w.consul.kv().keys(prefix)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deposed_leaders_publish_cannot_replace_a_newer_record_and_a_new_leader_adopts_the_union() {
    let w = world().await;
    let dir = w._dir.path();
    // The old leader (lock index 3) shares 5,000 entries: far over one value's limit.
    let big = ledger(50, 100);
    let mut old = sharing(&dir.join("old"), &big, &[]);
    old.publish(&w.client, 3, open()).await.unwrap();
    assert!(kv_keys(&w, "switchboard/prod/ledger/vulcand/3/").len() >= 50);
    assert!(kv_keys(&w, "switchboard/prod/ledger/consul").is_empty(), "Consul's ledger is not shared");
    let writes = w.consul.kv().requests().len();
    old.publish(&w.client, 3, open()).await.unwrap();
    let again: Vec<_> = w.consul.kv().requests()[writes..].iter().filter(|r| r.method != "GET").cloned().collect();
    assert!(again.is_empty(), "an unchanged ledger is written again: {again:?}");

    // The new leader (lock index 4) adopts all of it, then drops a service.
    let mut new = sharing(&dir.join("new"), &[], &[]);
    new.adopt(&w.client).await.unwrap();
    let adopted = new.store.call(|s| s.ledger("vulcand")).await.unwrap();
    assert_eq!(adopted.len(), 5_000);
    new.store
        .call(|s| s.forget("vulcand", &(0..100).map(|i| format!("svc-0.task-{i:05}:31000")).collect::<Vec<_>>()))
        .await
        .unwrap();
    new.publish(&w.client, 4, open()).await.unwrap();
    assert!(kv_keys(&w, "switchboard/prod/ledger/vulcand/3/").is_empty(), "older set dropped once ours is whole");

    // The deposed leader publishes late, changed or not: under its own index.
    old.store.call(|s| s.import_ledger("vulcand", &[reg("svc-x", "late:1")])).await.unwrap();
    old.publish(&w.client, 3, open()).await.unwrap();
    let newest = kv_keys(&w, "switchboard/prod/ledger/vulcand/4/");
    assert!(newest.iter().all(|k| !k.contains("/svc-0/")), "the new leader's record is intact");
    assert_eq!(newest.len(), 49);
    // A later leader adopts the union: what the new one kept, plus the late entries (only additive).
    let mut third = sharing(&dir.join("third"), &[], &[]);
    third.adopt(&w.client).await.unwrap();
    let ids: BTreeSet<String> =
        third.store.call(|s| s.ledger("vulcand")).await.unwrap().into_iter().map(|r| r.id).collect();
    assert!(ids.contains("late:1") && ids.contains("svc-9.task-00099:31000"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_written_once_the_gate_closes() {
    let w = world().await;
    let mut s = sharing(w._dir.path(), &ledger(2, 3), &["web"]);
    let closed = Gate::Until(Instant::now());
    assert!(matches!(s.publish(&w.client, 7, closed).await, Err(SharingError::Fenced)));
    assert!(kv_keys(&w, "switchboard/prod/").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn intents_are_shared_and_removed_once_their_service_is_gone_unless_written_again() {
    let w = world().await;
    let mut s = sharing(w._dir.path(), &[reg("web", "w:1")], &["api"]);
    let intent = |svc: &str| format!("switchboard/prod/intent/vulcand/{svc}");
    // Shared by claims (plain puts) of services the store holds, and of one it no longer holds.
    for svc in ["web", "gone", "back"] {
        w.client.put_value(&intent(svc), Vec::new()).await.unwrap();
    }
    s.publish(&w.client, 1, open()).await.unwrap();
    assert!(w.consul.kv().value(&intent("api")).is_some(), "a store intent is shared");
    assert!(w.consul.kv().value(&intent("gone")).is_some(), "removed only at the second look");
    // Claimed again between the two looks: its ModifyIndex moved, so it stays.
    w.client.put_value(&intent("back"), Vec::new()).await.unwrap();
    s.publish(&w.client, 1, open()).await.unwrap();
    assert_eq!(w.consul.kv().value(&intent("gone")), None, "the intent of a gone service is removed");
    assert!(w.consul.kv().value(&intent("back")).is_some());
    assert!(w.consul.kv().value(&intent("web")).is_some(), "the ledger holds web");
    s.publish(&w.client, 1, open()).await.unwrap();
    assert_eq!(w.consul.kv().value(&intent("back")), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_record_of_the_layout_before_parts_is_adopted_then_dropped() {
    let w = world().await;
    let legacy = serde_json::json!({"ledger": [reg("web", "w:1")], "intents": ["api"]});
    w.client.put_value("switchboard/prod/ledger/vulcand", legacy.to_string().into_bytes()).await.unwrap();
    let mut s = sharing(w._dir.path(), &[], &[]);
    s.adopt(&w.client).await.unwrap();
    let (ledger, intents) = s.store.call(|s| Ok((s.ledger("vulcand")?, s.intents("vulcand")?))).await.unwrap();
    assert_eq!(ledger, vec![reg("web", "w:1")]);
    assert!(intents.contains("api"));
    s.publish(&w.client, 2, open()).await.unwrap();
    assert_eq!(w.consul.kv().value("switchboard/prod/ledger/vulcand"), None);
    assert_eq!(kv_keys(&w, "switchboard/prod/ledger/vulcand/"), ["switchboard/prod/ledger/vulcand/2/web/0"]);
}
