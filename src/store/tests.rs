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
