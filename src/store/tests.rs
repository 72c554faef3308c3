use std::collections::BTreeSet;

use super::*;
use crate::assemble::{InstanceRecord, Touch};
use crate::model::{AppId, AppSpec, Registration, Routes, TaskFacts, TaskId, TaskState, Timestamp};
use crate::plan::Op;

/// Reopens a store dropped just before: sled releases its lock from a
/// background thread, so the first attempts may find it still held.
fn reopen(dir: &std::path::Path) -> Store {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match Store::open(dir) {
            Err(e) if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other.unwrap(),
        }
    }
}

fn store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path()).unwrap();
    (dir, s)
}

fn facts(task: &str, state: TaskState, at: i64) -> TaskFacts {
    TaskFacts {
        task_id: TaskId::parse(task).unwrap(),
        app_id: AppId::parse("/web").unwrap(),
        host: "10.0.0.1".into(),
        ports: vec![31000],
        ip_addresses: vec![],
        state,
        version: "v1".into(),
        at: Timestamp(at),
    }
}

fn spec() -> AppSpec {
    AppSpec {
        id: AppId::parse("/web").unwrap(),
        version: "v1".into(),
        labels: Default::default(),
        ports: vec![Default::default()],
        health_checks: vec![],
        ip_per_task: false,
        pod: None,
    }
}

fn reg(id: &str) -> Registration {
    Registration {
        id: id.into(),
        service: "web".into(),
        app_id: "/web".into(),
        task_id: "t".into(),
        address: "10.0.0.1".into(),
        port: 1,
        tags: vec!["switchboard".into()],
        consul: true,
        checks: vec![],
        healthy: None,
        has_health_checks: false,
        routes: Routes::default(),
        host: String::new(),
    }
}

#[test]
fn facts_survive_reopen_and_merge() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        let seq = s.next_seq().unwrap();
        s.apply_touches(&[Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Running, 5)))], seq)
            .unwrap();
        s.apply_touches(&[Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Killed, 3)))], seq)
            .unwrap();
        s.flush_blocking().unwrap();
    }
    let s = reopen(dir.path());
    let recs = s.instances().unwrap();
    assert_eq!(recs.len(), 1);
    assert_eq!(recs[0].state.as_ref().unwrap().state, TaskState::Killed);
    assert!(s.next_seq().unwrap() >= 2);
}

#[test]
fn snapshot_tombstones_absent_instances_unless_newer() {
    let (_d, s) = store();
    let seq = s.next_seq().unwrap();
    s.apply_touches(&[Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Running, 5)))], seq)
        .unwrap();
    let request_seq = s.next_seq().unwrap();
    let later = s.next_seq().unwrap();
    s.apply_touches(&[Touch::Instance(InstanceRecord::from_task(&facts("web.b", TaskState::Running, 6)))], later)
        .unwrap();
    let app = SnapshotApp { spec: spec(), tasks: vec![] };
    s.apply_snapshot(&[app], &BTreeSet::new(), Timestamp(7), request_seq).unwrap();
    let by_id: std::collections::BTreeMap<String, TaskState> =
        s.instances().unwrap().into_iter().map(|r| (r.instance.to_string(), r.state.unwrap().state)).collect();
    // Legacy task ids name their instance `<app>.marathon-<uuid>`.
    assert_eq!(by_id["web.marathon-a"], TaskState::Gone, "absent and older than the snapshot");
    assert_eq!(by_id["web.marathon-b"], TaskState::Running, "received after the snapshot was requested");
}

#[test]
fn broken_apps_are_left_alone_and_absent_apps_stop() {
    let (_d, s) = store();
    let seq = s.next_seq().unwrap();
    s.apply_touches(
        &[Touch::Spec(spec()), Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Running, 5)))],
        seq,
    )
    .unwrap();
    let req = s.next_seq().unwrap();
    let broken: BTreeSet<String> = ["/web".to_string()].into();
    s.apply_snapshot(&[], &broken, Timestamp(9), req).unwrap();
    assert_eq!(s.instances().unwrap()[0].state.as_ref().unwrap().state, TaskState::Running);
    assert!(s.apps().unwrap().is_empty());
    s.apply_snapshot(&[], &BTreeSet::new(), Timestamp(9), req).unwrap();
    assert_eq!(s.apps().unwrap()[&AppId::parse("/web").unwrap()].stopped_at, Some(Timestamp(9)));
}

#[test]
fn queue_and_ledger_move_together() {
    let (_d, s) = store();
    let a = reg("t:1");
    s.enqueue("consul", &[Op::Register(a.clone())]).unwrap();
    assert_eq!(s.queued("consul").unwrap().len(), 1);
    assert_eq!(s.queue_len("kong"), 0);
    let attempts = s.retry_later("consul", &Op::Register(a.clone()), 5, "down").unwrap();
    assert_eq!(attempts, 1);
    assert_eq!(s.queued("consul").unwrap()[0].last_error.as_deref(), Some("down"));
    s.complete("consul", &Op::Register(a.clone())).unwrap();
    assert!(s.queued("consul").unwrap().is_empty());
    assert_eq!(s.ledger("consul").unwrap(), vec![a.clone()]);
    // A newer op queued meanwhile survives the completion of an older one.
    let dereg = Op::Deregister { registration: a.clone(), service_empty: true };
    s.enqueue("consul", &[dereg.clone()]).unwrap();
    s.complete("consul", &Op::Register(a.clone())).unwrap();
    assert_eq!(s.queued("consul").unwrap().len(), 1);
    s.complete("consul", &dereg).unwrap();
    assert!(s.ledger("consul").unwrap().is_empty());
    s.enqueue("consul", &[dereg.clone()]).unwrap();
    s.drop_queued("consul", &dereg).unwrap();
    assert!(s.queued("consul").unwrap().is_empty());
}

#[test]
fn prune_forgets_old_tombstones_and_destroyed_apps_only() {
    let (_d, s) = store();
    let seq = s.next_seq().unwrap();
    let mut live_spec = spec();
    live_spec.id = AppId::parse("/live").unwrap();
    let mut live = facts("live.a", TaskState::Running, 5);
    live.app_id = live_spec.id.clone();
    s.apply_touches(
        &[
            Touch::Spec(spec()),
            Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Killed, 5))),
            Touch::Spec(live_spec.clone()),
            Touch::Instance(InstanceRecord::from_task(&live)),
            Touch::App(AppId::parse("/web").unwrap(), crate::assemble::AppRecord { stopped_at: Some(Timestamp(6)) }),
        ],
        seq,
    )
    .unwrap();
    // Nothing is old enough yet.
    assert_eq!(s.prune(Timestamp(5)).unwrap(), 0);
    // The tombstone and the destroyed app go; the running app stays.
    assert_eq!(s.prune(Timestamp(100)).unwrap(), 2);
    let ids: Vec<String> = s.instances().unwrap().into_iter().map(|r| r.instance.to_string()).collect();
    assert_eq!(ids, vec!["live.marathon-a"]);
    assert!(s.apps().unwrap().is_empty());
    assert_eq!(s.newest_specs().unwrap().into_keys().collect::<Vec<_>>(), vec![live_spec.id]);
}

#[test]
fn refusals_and_intents_survive_a_reopen_and_are_kept_per_backend() {
    let dir = tempfile::tempdir().unwrap();
    let op = Op::Register(reg("t1:1"));
    let refusal = crate::plan::Refusal {
        backend: "consul".into(),
        app_id: "/web".into(),
        entity: "t1:1".into(),
        op: "register".into(),
        reason: "HTTP 403".into(),
        since: "then".into(),
        input: crate::plan::input_hash(&op),
    };
    {
        let s = Store::open(dir.path()).unwrap();
        assert!(s.refuse(&refusal).unwrap(), "new");
        let again = crate::plan::Refusal { since: "later".into(), ..refusal.clone() };
        assert!(!s.refuse(&again).unwrap(), "the same input refused again is not new");
        s.intend("vulcand", "web").unwrap();
        s.flush_blocking().unwrap();
    }
    let s = reopen(dir.path());
    assert_eq!(s.refusals("consul").unwrap(), [refusal.clone()], "the first `since` is kept");
    assert!(s.refusals("kong").unwrap().is_empty());
    assert_eq!(s.intents("vulcand").unwrap(), BTreeSet::from(["web".to_owned()]));
    assert!(s.intents("consul").unwrap().is_empty());
    s.lift_refusals("consul", &["t1:1".into()]).unwrap();
    assert!(s.all_refusals().unwrap().is_empty());
    s.refuse(&refusal).unwrap();
    assert_eq!(s.clear_refusals().unwrap(), 1);
    s.drop_intent("vulcand", "web").unwrap();
    assert!(s.intents("vulcand").unwrap().is_empty());
}

/// A watch on every tree: what a call wrote shows as events.
struct Writes(Vec<(&'static str, sled::Subscriber)>);

impl Writes {
    fn watch(s: &Store) -> Writes {
        Writes(
            [
                ("specs", &s.specs),
                ("apps", &s.apps),
                ("instances", &s.instances),
                ("pending", &s.pending),
                ("ledger", &s.ledger),
                ("services", &s.services),
                ("queue", &s.queue),
                ("refusals", &s.refusals),
                ("rejections", &s.rejections),
                ("intents", &s.intents),
                ("meta", &s.meta),
            ]
            .into_iter()
            .map(|(name, tree)| (name, tree.watch_prefix(Vec::new())))
            .collect(),
        )
    }

    /// The trees written since the last call (events are delivered before
    /// the write returns, so no wait is needed).
    fn trees(&mut self) -> Vec<&'static str> {
        let mut out = Vec::new();
        for (name, sub) in &mut self.0 {
            while sub.next_timeout(std::time::Duration::ZERO).is_ok() {
                if out.last() != Some(name) {
                    out.push(*name);
                }
            }
        }
        out
    }
}

fn rejection(app: &str, backend: &str) -> crate::plan::Rejection {
    crate::plan::Rejection {
        backend: backend.into(),
        app_id: app.into(),
        label: "kong.hosts".into(),
        reason: "taken".into(),
    }
}

/// Every write the daemon makes for one event and its ops, once.
fn fold_and_register(s: &Store, running_at: i64) {
    let seq = s.next_seq().unwrap();
    s.raise_high_water(Timestamp(running_at)).unwrap();
    s.apply_touches(
        &[
            Touch::Spec(spec()),
            Touch::App(AppId::parse("/web").unwrap(), crate::assemble::AppRecord { stopped_at: None }),
            Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Running, running_at))),
        ],
        seq,
    )
    .unwrap();
    let web = AppId::parse("/web").unwrap();
    let pending = [(crate::model::InstanceId::parse("web.b").unwrap(), web.clone(), crate::assemble::Lack::Spec)];
    s.set_pending_of(&[web.clone()], &pending, 5).unwrap();
    s.set_rejections_of(&["/web".into()], &[rejection("/web", "kong")]).unwrap();
    s.import_ledger("kong", &[reg("t:2")]).unwrap();
    s.enqueue("consul", &[Op::Register(reg("t:1"))]).unwrap();
    s.intend("vulcand", "web").unwrap();
    s.set_last_resync("then").unwrap();
}

#[test]
fn writing_what_the_store_holds_already_writes_nothing() {
    let (_d, s) = store();
    fold_and_register(&s, 5);
    let mut writes = Writes::watch(&s);
    // The same facts again (and an older one, which the merge ignores).
    fold_and_register(&s, 5);
    let seq = s.next_seq().unwrap();
    s.apply_touches(&[Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Staging, 1)))], seq)
        .unwrap();
    s.complete("kong", &Op::Register(reg("t:2"))).unwrap();
    s.set_rejections(&[rejection("/web", "kong")]).unwrap();
    s.lift_refusals("consul", &["t:9".into()]).unwrap();
    s.drop_intent("consul", "absent").unwrap();
    assert_eq!(writes.trees(), ["meta"], "only the sequence counter moves");

    // A changed fact writes its tree, and only it (so the watch sees writes).
    let seq = s.next_seq().unwrap();
    s.apply_touches(&[Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Killed, 9)))], seq).unwrap();
    assert_eq!(writes.trees(), ["instances", "meta"]);
    s.set_rejections_of(&["/web".into()], &[]).unwrap();
    assert_eq!(writes.trees(), ["rejections"]);
}

#[test]
fn per_app_reads_see_only_that_app_and_survive_other_apps_writes() {
    let (_d, s) = store();
    let seq = s.next_seq().unwrap();
    let mut other = facts("web2.a", TaskState::Running, 5);
    other.app_id = AppId::parse("/web2").unwrap(); // a prefix of it is `/web`
    s.apply_touches(
        &[
            Touch::Instance(InstanceRecord::from_task(&facts("web.a", TaskState::Running, 5))),
            Touch::Instance(InstanceRecord::from_task(&facts("web.b", TaskState::Running, 5))),
            Touch::Instance(InstanceRecord::from_task(&other)),
        ],
        seq,
    )
    .unwrap();
    let web = AppId::parse("/web").unwrap();
    let ids =
        |app: &AppId| s.instances_of(app).unwrap().into_iter().map(|r| r.instance.to_string()).collect::<Vec<_>>();
    assert_eq!(ids(&web), ["web.marathon-a", "web.marathon-b"]);
    assert_eq!(ids(&AppId::parse("/web2").unwrap()), ["web2.marathon-a"]);
    assert_eq!(s.app_ids().unwrap().len(), 2);

    let web2 = Registration { app_id: "/web2".into(), service: "web2".into(), ..reg("u:1") };
    s.enqueue("consul", &[Op::Register(reg("t:1")), Op::Register(web2.clone())]).unwrap();
    s.complete_many("consul", &[Op::Register(reg("t:1")), Op::Register(web2.clone())]).unwrap();
    s.enqueue("consul", &[Op::Register(reg("t:2"))]).unwrap();
    s.enqueue("kong", &[Op::Register(web2.clone())]).unwrap();
    let ledger_ids = |b: &str, app: &str| s.ledger_of(b, app).unwrap().into_iter().map(|r| r.id).collect::<Vec<_>>();
    assert_eq!(ledger_ids("consul", "/web"), ["t:1"]);
    assert_eq!(ledger_ids("consul", "/web2"), ["u:1"]);
    assert!(ledger_ids("kong", "/web2").is_empty());
    assert_eq!(s.queued_of("consul", "/web").unwrap().len(), 1);
    assert_eq!(s.queued_of("kong", "/web2").unwrap().len(), 1);
    assert_eq!(s.planned_apps("consul").unwrap(), BTreeSet::from(["/web".to_owned(), "/web2".to_owned()]));
    assert_eq!(s.planned_apps("kong").unwrap(), BTreeSet::from(["/web2".to_owned()]));
    assert_eq!((s.ledger_len("consul"), s.queue_len("consul"), s.ledger_len("kong")), (2, 1, 0));

    // The service index follows the ledger: a moved service, a forgotten entry.
    assert!(s.ledger_holds_service("consul", "web2").unwrap());
    assert!(!s.ledger_holds_service("kong", "web2").unwrap());
    let renamed = Registration { service: "web-two".into(), ..web2.clone() };
    s.complete("consul", &Op::Register(renamed)).unwrap();
    assert!(!s.ledger_holds_service("consul", "web2").unwrap());
    assert!(s.ledger_holds_service("consul", "web-two").unwrap());
    s.forget("consul", &["u:1".into()]).unwrap();
    assert!(!s.ledger_holds_service("consul", "web-two").unwrap());
    assert!(s.ledger_holds_service("consul", "web").unwrap());
    s.complete("consul", &Op::Deregister { registration: reg("t:1"), service_empty: true }).unwrap();
    assert!(!s.ledger_holds_service("consul", "web").unwrap());
    assert!(s.ledger("consul").unwrap().is_empty());
    // The counts moved with every write since they were first taken.
    assert_eq!((s.ledger_len("consul"), s.queue_len("consul")), (0, 1));
    s.drop_queued("consul", &Op::Register(reg("t:2"))).unwrap();
    s.import_ledger("kong", &[web2.clone(), web2.clone()]).unwrap();
    assert_eq!((s.queue_len("consul"), s.ledger_len("kong"), s.queue_len("kong")), (0, 1, 1));

    // Pending and rejections per app: another app's replacement leaves them be.
    let lack = crate::assemble::Lack::Spec;
    let a = crate::model::InstanceId::parse("web.a").unwrap();
    let b = crate::model::InstanceId::parse("web2.b").unwrap();
    s.set_pending_of(&[web.clone()], &[(a.clone(), web.clone(), lack)], 1).unwrap();
    s.set_pending_of(&[AppId::parse("/web2").unwrap()], &[(b, AppId::parse("/web2").unwrap(), lack)], 2).unwrap();
    s.set_pending_of(&[web.clone()], &[(a, web.clone(), lack)], 3).unwrap();
    let since: Vec<u64> = s.pending().unwrap().into_iter().map(|p| p.since_ms).collect();
    assert_eq!(since, [1, 2], "first seen kept; the other app untouched");
    s.set_rejections_of(&["/web".into()], &[rejection("/web", "kong"), rejection("/static", "kong")]).unwrap();
    s.set_rejections_of(&["/web2".into()], &[rejection("/web2", "vulcand")]).unwrap();
    s.set_rejections_of(&["/web".into()], &[]).unwrap();
    let apps: Vec<String> = s.rejections().unwrap().into_iter().map(|r| r.app_id).collect();
    assert_eq!(apps, ["/static", "/web2"], "a rejection named after another app stays until replaced");
    s.set_rejections(&[]).unwrap();
    assert!(s.rejections().unwrap().is_empty());
}

/// Writes a format-1 store by hand (JSON records, keys by id alone), as the
/// format-1 release left it; `stamped`: whether `meta` holds `format = 1`.
fn format1_dir(stamped: bool) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let db = sled::open(dir.path()).unwrap();
    let json = |v: &dyn erased::Json| v.to_json();
    let rec = InstanceRecord::from_task(&facts("web.a", TaskState::Running, 5));
    db.open_tree("instances")
        .unwrap()
        .insert(rec.instance.as_str(), json(&facts::Stored { record: rec.clone(), seq: 3 }))
        .unwrap();
    db.open_tree("specs").unwrap().insert(key2("/web", "v1"), json(&spec())).unwrap();
    db.open_tree("ledger").unwrap().insert(key2("kong", "t:1"), json(&reg("t:1"))).unwrap();
    let q = QueuedOp { op: Op::Register(reg("t:2")), attempts: 2, not_before_ms: 9, last_error: Some("503".into()) };
    db.open_tree("queue").unwrap().insert(key2("consul", "t:2"), json(&q)).unwrap();
    let meta = db.open_tree("meta").unwrap();
    meta.insert("high_water", json(&Timestamp(7))).unwrap();
    meta.insert("seq", &5u64.to_be_bytes()).unwrap();
    meta.insert("rejections", json(&vec![rejection("/web", "kong")])).unwrap();
    if stamped {
        meta.insert("format", "1").unwrap();
    }
    db.flush().unwrap();
    dir
}

mod erased {
    pub trait Json {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Json for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap()
        }
    }
}

fn assert_migrated(s: &Store) {
    assert_eq!(s.format().unwrap(), Some(FORMAT));
    let rec = InstanceRecord::from_task(&facts("web.a", TaskState::Running, 5));
    assert_eq!(s.instances_of(&AppId::parse("/web").unwrap()).unwrap(), [rec]);
    assert_eq!(s.newest_spec(&AppId::parse("/web").unwrap()).unwrap(), Some(spec()));
    assert_eq!(s.ledger_of("kong", "/web").unwrap(), [reg("t:1")]);
    assert!(s.ledger_holds_service("kong", "web").unwrap(), "the service index is built");
    assert_eq!(s.queued_of("consul", "/web").unwrap()[0].attempts, 2);
    assert_eq!(s.high_water().unwrap(), Timestamp(7));
    assert_eq!(s.rejections().unwrap(), [rejection("/web", "kong")]);
    assert!(s.next_seq().unwrap() > 5, "the sequence carries on");
}

#[test]
fn format1_and_unstamped_stores_migrate_in_place() {
    for stamped in [true, false] {
        let dir = format1_dir(stamped);
        let s = reopen(dir.path());
        assert_migrated(&s);
        let names: Vec<String> = s.db.tree_names().iter().map(|n| String::from_utf8_lossy(n).into_owned()).collect();
        assert!(!names.iter().any(|n| n == "instances" || n == "ledger"), "format-1 trees dropped: {names:?}");
        drop(s);
        let s = reopen(dir.path());
        assert_migrated(&s);
    }
}

#[test]
fn a_migration_cut_short_runs_again() {
    let dir = format1_dir(true);
    {
        // What a crash mid-migration leaves: some format-2 trees half filled,
        // the format-1 trees and the stamp as they were.
        let db = sled::open(dir.path()).unwrap();
        db.open_tree(trees::INSTANCES).unwrap().insert(b"junk", b"not postcard".as_slice()).unwrap();
        db.open_tree(trees::LEDGER)
            .unwrap()
            .insert(key(&["kong", "/gone", "x:1"]), encode(&reg("x:1")).unwrap())
            .unwrap();
        db.flush().unwrap();
    }
    let s = reopen(dir.path());
    assert_migrated(&s);
    assert_eq!(s.ledger("kong").unwrap(), [reg("t:1")], "leftovers of the cut-short run are gone");
    assert_eq!(s.instances().unwrap().len(), 1);
}

#[test]
fn a_stamped_store_with_format1_trees_left_drops_them() {
    // The crash came after the stamp, before the format-1 trees were dropped.
    let dir = format1_dir(true);
    drop(reopen(dir.path()));
    {
        let db = sled::open(dir.path()).unwrap();
        db.open_tree("ledger").unwrap().insert(key2("kong", "old:1"), b"{}".as_slice()).unwrap();
        db.flush().unwrap();
    }
    let s = reopen(dir.path());
    assert_migrated(&s);
    assert!(!s.db.tree_names().iter().any(|n| n == b"ledger".as_slice()));
}

#[test]
fn open_repairs_a_service_index_a_crash_left_behind_the_ledger() {
    let dir = tempfile::tempdir().unwrap();
    {
        let s = Store::open(dir.path()).unwrap();
        s.complete_many("kong", &[Op::Register(reg("t:1")), Op::Register(reg("t:2"))]).unwrap();
        // What a crash between a ledger write and its index write leaves:
        // the count behind, and an entry for a service the ledger lacks.
        s.services.insert(ledger::service_key("kong", &reg("t:1")), &1u64.to_be_bytes()).unwrap();
        let gone = Registration { service: "gone".into(), ..reg("t:3") };
        s.services.insert(ledger::service_key("kong", &gone), &1u64.to_be_bytes()).unwrap();
        s.flush_blocking().unwrap();
    }
    let s = reopen(dir.path());
    assert!(!s.ledger_holds_service("kong", "gone").unwrap());
    s.complete("kong", &Op::Deregister { registration: reg("t:1"), service_empty: false }).unwrap();
    assert!(s.ledger_holds_service("kong", "web").unwrap(), "t:2 still holds it");
    s.complete("kong", &Op::Deregister { registration: reg("t:2"), service_empty: true }).unwrap();
    assert!(!s.ledger_holds_service("kong", "web").unwrap());
}
