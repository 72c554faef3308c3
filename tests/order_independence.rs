//! Property: for any permutation and duplication of the events of a
//! generated scenario (deploys, scale up/down, restarts, kills, destroys,
//! health changes, lost and unreachable tasks, and a pod of two containers
//! deployed, scaled, destroyed and health-checked), once the stream is
//! drained the registrations equal those computed from Marathon's final
//! snapshot (`/v2/apps` and `/v2/pods/::status`).
//!
//! Events go through the real parser (`marathon::event::parse`) and the real
//! folding (`assemble`); the snapshot goes through the real REST parser. As
//! the daemon does after its grace period, instances still waiting for a spec
//! get the app's current definition (spec only: no task facts are taken from
//! that fetch, so it cannot mask a folding error).
//!
//! The second property drives the daemon's own fold instead of the in-memory
//! one: `reconcile::consumer::fold_burst` into the real store (sled), in
//! bursts of generated sizes (one receive sequence and one transaction per
//! burst, as the consumer folds them), with concurrent writers and
//! crash-and-reopen points; what the store then calls for is read through the
//! planner's one desired path (`reconcile::planner::desired_of`).

use proptest::prelude::*;
use serde_json::{Value, json};
use switchboard::assemble::{self, Folded, Lack};
use switchboard::labels::LabelOptions;
use switchboard::marathon::{client, event};
use switchboard::model::{Registration, Timestamp};
use switchboard::reconcile::Labels;
use switchboard::reconcile::consumer;
use switchboard::reconcile::planner::{desired_of, known_apps};
use switchboard::sim::marathon::{Generation, Model, ModelOptions, SimEvent};
use switchboard::store::Store;

#[derive(Debug, Clone)]
enum Step {
    Deploy {
        app: usize,
        instances: usize,
    },
    Scale {
        app: usize,
        instances: usize,
    },
    Restart {
        app: usize,
    },
    Kill {
        app: usize,
        pick: usize,
    },
    Destroy {
        app: usize,
    },
    Health {
        app: usize,
        pick: usize,
        alive: bool,
    },
    Lose {
        app: usize,
        pick: usize,
    },
    Unreachable {
        app: usize,
        pick: usize,
    },
    /// Pods (Marathon 1.4+; nothing on 1.3): deploy (or replace), scale,
    /// destroy, and the health Mesos reports for one instance.
    PodDeploy {
        instances: usize,
    },
    PodScale {
        instances: usize,
    },
    PodDestroy,
    PodHealth {
        pick: usize,
        healthy: bool,
    },
}

const POD: &str = "/prod/shop";

/// Two containers, three endpoints: `web` with a hostPort on the container
/// network, `admin` and `prom` reached at the instance IP.
fn pod_definition() -> Value {
    json!({"id": POD, "labels": {"consul": "", "kong.hosts": "shop.example.com"}, "containers": [
        {"name": "web", "endpoints": [
            {"name": "web", "containerPort": 8080, "hostPort": 0, "labels": {"consul": "shop-web"}},
            {"name": "admin", "containerPort": 9090, "labels": {"consul": "shop-admin"}}],
         "healthCheck": {"http": {"endpoint": "web", "path": "/health"}}},
        {"name": "metrics", "endpoints": [{"name": "prom", "containerPort": 9102, "labels": {"consul": "shop-metrics"}}]}],
        "networks": [{"name": "dcos", "mode": "container"}]})
}

const APPS: usize = 3;

fn app_definition(i: usize) -> Value {
    match i {
        0 => json!({
            "id": "/shop/web",
            "labels": {"consul": "web", "public": "tag", "kong.hosts": "shop.example.com"},
            "portDefinitions": [{"port": 0, "name": "http", "labels": {}}],
            "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
        }),
        1 => json!({
            "id": "/api",
            "labels": {},
            "portDefinitions": [
                {"port": 0, "name": "http", "labels": {"consul": ""}},
                {"port": 0, "name": "metrics", "labels": {"consul": "api-metrics", "metrics": "tag"}}
            ]
        }),
        _ => json!({
            "id": "/batch/worker",
            "labels": {"consul": "true"},
            "portDefinitions": [{"port": 0}]
        }),
    }
}

fn app_id(i: usize) -> &'static str {
    ["/shop/web", "/api", "/batch/worker"][i % APPS]
}

fn step() -> impl Strategy<Value = Step> {
    let app = 0..APPS;
    prop_oneof![
        3 => (app.clone(), 1..4usize).prop_map(|(app, instances)| Step::Deploy { app, instances }),
        2 => (app.clone(), 0..4usize).prop_map(|(app, instances)| Step::Scale { app, instances }),
        1 => app.clone().prop_map(|app| Step::Restart { app }),
        2 => (app.clone(), any::<usize>()).prop_map(|(app, pick)| Step::Kill { app, pick }),
        1 => app.clone().prop_map(|app| Step::Destroy { app }),
        2 => (app.clone(), any::<usize>(), any::<bool>()).prop_map(|(app, pick, alive)| Step::Health { app, pick, alive }),
        1 => (app.clone(), any::<usize>()).prop_map(|(app, pick)| Step::Lose { app, pick }),
        1 => (app, any::<usize>()).prop_map(|(app, pick)| Step::Unreachable { app, pick }),
        2 => (1..3usize).prop_map(|instances| Step::PodDeploy { instances }),
        1 => (0..3usize).prop_map(|instances| Step::PodScale { instances }),
        1 => Just(Step::PodDestroy),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, healthy)| Step::PodHealth { pick, healthy }),
    ]
}

fn pick_task(model: &Model, app: usize, pick: usize) -> Option<String> {
    let tasks = model.task_ids(app_id(app));
    (!tasks.is_empty()).then(|| tasks[pick % tasks.len()].clone())
}

fn run(model: &mut Model, steps: &[Step]) -> Vec<SimEvent> {
    let mut events = Vec::new();
    for s in steps {
        let evs = match *s {
            Step::Deploy { app, instances } => model.deploy(app_definition(app), instances),
            Step::Scale { app, instances } => model.scale(app_id(app), instances),
            Step::Restart { app } => model.restart(app_id(app)),
            Step::Kill { app, pick } => pick_task(model, app, pick).map(|t| model.kill_task(&t)).unwrap_or_default(),
            Step::Destroy { app } => model.destroy(app_id(app)),
            Step::Health { app, pick, alive } => {
                pick_task(model, app, pick).map(|t| model.set_health(&t, alive)).unwrap_or_default()
            }
            Step::Lose { app, pick } => pick_task(model, app, pick).map(|t| model.lose_task(&t)).unwrap_or_default(),
            Step::Unreachable { app, pick } => {
                pick_task(model, app, pick).map(|t| model.unreachable(&t)).unwrap_or_default()
            }
            Step::PodDeploy { instances } => model.deploy_pod(pod_definition(), instances),
            Step::PodScale { instances } => model.scale_pod(POD, instances),
            Step::PodDestroy => model.destroy_pod(POD),
            Step::PodHealth { pick, healthy } => {
                let ids = model.pod_instance_ids(POD);
                if ids.is_empty() { Vec::new() } else { model.set_pod_health(&ids[pick % ids.len()], healthy) }
            }
        };
        events.extend(evs);
    }
    events
}

fn from_snapshot(model: &Model) -> Vec<Registration> {
    let snap = client::parse_snapshot(&model.apps_json().to_string(), Timestamp(0)).expect("snapshot parses");
    assert!(snap.broken.is_empty(), "{:?}", snap.broken);
    let mut apps = snap.apps;
    if let Some(pods) = model.pods_status_json() {
        let (pods, broken) =
            switchboard::marathon::pod::parse_pods_status(&pods.to_string(), Timestamp(0)).expect("pod status parses");
        assert!(broken.is_empty(), "{broken:?}");
        apps.extend(pods);
    }
    let mut folded = Folded::default();
    for app in &apps {
        let tasks: Vec<_> = app.tasks.iter().map(|t| (t.facts.clone(), t.healthy)).collect();
        for t in assemble::snapshot_touches(&app.spec, &tasks, model.now()) {
            folded.apply(&t);
        }
    }
    let d = folded.desired(&LabelOptions::default());
    assert!(d.pending.is_empty(), "a snapshot alone leaves nothing pending: {:?}", d.pending);
    d.registrations
}

fn from_events(model: &Model, events: &[&SimEvent]) -> Vec<Registration> {
    let mut folded = Folded::default();
    for e in events {
        let parsed = event::parse(&e.event_type, &e.data.to_string()).expect("sim events parse");
        for ev in &parsed {
            for t in assemble::touches(ev) {
                folded.apply(&t);
            }
        }
    }
    // The grace-period fetch: the current definition of apps whose instances wait for a spec.
    let waiting: Vec<String> = folded
        .desired(&LabelOptions::default())
        .pending
        .iter()
        .filter(|(_, _, lack)| *lack == Lack::Spec)
        .map(|(_, app, _)| app.to_string())
        .collect();
    for app in waiting {
        if let Some(spec) = fetch_spec(model, &app) {
            folded.apply(&assemble::Touch::Spec(spec));
        }
    }
    folded.desired(&LabelOptions::default()).registrations
}

/// The grace-period fetch as the client does it: `/v2/apps/{id}`, else the
/// pod's `/v2/pods/{id}::status`.
fn fetch_spec(model: &Model, id: &str) -> Option<switchboard::model::AppSpec> {
    if let Some(body) = model.app_json(id) {
        return Some(client::parse_app_response(&body.to_string(), model.now()).expect("app parses").spec);
    }
    let body = model.pod_status_json(id)?;
    Some(switchboard::marathon::pod::parse_pod_status(&body.to_string(), model.now()).expect("pod parses").spec)
}

/// Applies a permutation and a set of duplicates (both generated) to `events`.
fn shuffle<'a>(events: &'a [SimEvent], keys: &[u64], dups: &[usize]) -> Vec<&'a SimEvent> {
    let mut order: Vec<(u64, usize)> =
        (0..events.len()).map(|i| (keys[i % keys.len()] ^ (i as u64 * 0x9E37_79B9), i)).collect();
    order.sort();
    let mut out: Vec<&SimEvent> = order.into_iter().map(|(_, i)| &events[i]).collect();
    for d in dups {
        if !events.is_empty() {
            let e = &events[d % events.len()];
            let at = d % (out.len() + 1);
            out.insert(at, e);
        }
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn any_order_folds_to_the_final_snapshot(
        steps in prop::collection::vec(step(), 1..12),
        keys in prop::collection::vec(any::<u64>(), 1..64),
        dups in prop::collection::vec(any::<usize>(), 0..8),
        heavy in any::<bool>(),
        generation in prop::sample::select(vec![Generation::V1_3, Generation::V1_4, Generation::V1_8]),
    ) {
        // 1.3: task-keyed health, no instance events; 1.4-1.7: two id shapes
        // joined; 1.8+: a killed task relaunched in the same instance.
        let mut model = Model::new(ModelOptions { heavy_plans: heavy, generation, ..ModelOptions::default() });
        let events = run(&mut model, &steps);
        let want = from_snapshot(&model);
        let in_order: Vec<&SimEvent> = events.iter().collect();
        prop_assert_eq!(&from_events(&model, &in_order), &want, "in Marathon's order");
        let shuffled = shuffle(&events, &keys, &dups);
        prop_assert_eq!(&from_events(&model, &shuffled), &want, "shuffled with duplicates");
        let reversed: Vec<&SimEvent> = events.iter().rev().collect();
        prop_assert_eq!(&from_events(&model, &reversed), &want, "reversed");
    }
}

#[test]
fn a_pod_deploy_yields_registrations_at_all() {
    // Guards the pod steps against passing vacuously.
    for generation in [Generation::V1_4, Generation::V1_8] {
        let mut model = Model::new(ModelOptions { generation, ..ModelOptions::default() });
        let events = run(&mut model, &[Step::PodDeploy { instances: 2 }, Step::PodHealth { pick: 0, healthy: false }]);
        let regs = from_events(&model, &events.iter().collect::<Vec<_>>());
        assert_eq!(regs.len(), 6, "2 instances x 3 endpoints");
        assert_eq!(regs.iter().filter(|r| r.healthy == Some(false)).count(), 3, "one instance unhealthy");
        assert_eq!(regs, from_snapshot(&model));
    }
}

#[test]
fn a_deploy_yields_registrations_at_all() {
    // Guards the property against passing vacuously.
    let mut model = Model::new(ModelOptions::default());
    let events = run(&mut model, &[Step::Deploy { app: 1, instances: 2 }]);
    let regs = from_events(&model, &events.iter().collect::<Vec<_>>());
    assert_eq!(regs.len(), 4, "2 instances x 2 labelled ports");
    assert_eq!(regs, from_snapshot(&model));
}

/// What the store's records call for, as they are: every app through the
/// planner's `desired_of`.
fn store_desired(s: &Store) -> assemble::Desired {
    let labels = Labels::default();
    let mut out = assemble::Desired::default();
    for app in known_apps(s, &labels, &[]).expect("apps") {
        let d = desired_of(s, &labels, &app).expect("desired").desired;
        out.registrations.extend(d.registrations);
        out.pending.extend(d.pending);
        out.errors.extend(d.errors);
    }
    out.registrations.sort();
    out.pending.sort();
    out
}

/// What the store's records call for (the grace-period fetch included, as in
/// `from_events`).
fn desired_from_store(model: &Model, store: &Store) -> Vec<Registration> {
    for (_, app, lack) in store_desired(store).pending {
        if lack != Lack::Spec {
            continue;
        }
        if let Some(spec) = fetch_spec(model, app.as_str()) {
            let seq = store.next_seq().expect("seq");
            store.apply_touches(&[assemble::Touch::Spec(spec)], seq).expect("spec stored");
        }
    }
    store_desired(store).registrations
}

/// Copies a data dir file by file, as it is on disk now.
fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    for entry in std::fs::read_dir(from).expect("read dir") {
        let entry = entry.expect("dir entry");
        let target = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&target).expect("mkdir");
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy");
        }
    }
}

/// Folds `events` into the store with the daemon's consumer fold, in bursts
/// of `burst` stream items (one receive sequence and one transaction each).
fn fold_into(store: &Store, events: &[&SimEvent], burst: usize) {
    for items in events.chunks(burst.max(1)) {
        let parsed: Vec<event::Event> = items
            .iter()
            .flat_map(|e| event::parse(&e.event_type, &e.data.to_string()).expect("sim events parse"))
            .collect();
        consumer::fold_burst(store, &parsed);
    }
}

proptest! {
    // Each case opens a sled store several times: fewer cases than the
    // in-memory property, same generators.
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    /// The real store merge (sled transactions, the decoded cache), with
    /// events in any order and duplicated, folded by two writers at once,
    /// and "kill -9" points: the data dir as it is on disk is what the next
    /// life opens; right after a flush it must hold exactly what it held.
    #[test]
    fn the_store_folds_any_order_with_concurrent_writers_and_crashes_to_the_final_snapshot(
        steps in prop::collection::vec(step(), 1..8),
        keys in prop::collection::vec(any::<u64>(), 1..64),
        dups in prop::collection::vec(any::<usize>(), 0..6),
        kills in prop::collection::vec(any::<usize>(), 0..3),
        writers in 1..3usize,
        burst in 1..24usize,
    ) {
        let mut model = Model::new(ModelOptions::default());
        let events = run(&mut model, &steps);
        let want = from_snapshot(&model);
        let shuffled = shuffle(&events, &keys, &dups);
        let mut cuts: Vec<usize> = kills.iter().map(|k| k % (shuffled.len() + 1)).collect();
        cuts.push(shuffled.len());
        cuts.sort();
        cuts.dedup();

        let mut dirs = vec![tempfile::tempdir().expect("tempdir")];
        let mut store = Store::open(dirs[0].path()).expect("open");
        let mut from = 0;
        // Where the events not yet known to be on disk start: everything since
        // the last flush may be lost at an unflushed kill, the refolds of
        // earlier lives included.
        let mut durable = 0;
        for (crash, cut) in cuts.into_iter().enumerate() {
            let segment = &shuffled[from..cut];
            from = cut;
            // Writers take alternate events of the segment, concurrently.
            std::thread::scope(|scope| {
                for w in 0..writers {
                    let mine: Vec<&SimEvent> = segment.iter().copied().skip(w).step_by(writers).collect();
                    let store = &store;
                    scope.spawn(move || fold_into(store, &mine, burst));
                }
            });
            // kill -9: the data dir as it is on disk right now becomes the
            // store of the next life; the old one is dropped unflushed. Odd
            // kill points come right after the consumer's flush, even ones
            // at any moment (everything since the last flush may be lost:
            // the next life gets those events again, as a resync would bring
            // their facts back).
            let flushed = kills.get(crash).is_none_or(|k| k % 2 == 1);
            let before = flushed.then(|| {
                store.flush_blocking().expect("flush");
                store_desired(&store)
            });
            let lost_from = durable;
            if flushed {
                durable = cut;
            }
            let next = tempfile::tempdir().expect("tempdir");
            copy_dir(dirs.last().expect("a live dir").path(), next.path());
            drop(store);
            store = Store::open(next.path()).expect("reopen after kill -9");
            dirs.push(next);
            match before {
                Some(before) => {
                    let after = store_desired(&store);
                    prop_assert_eq!(&after.registrations, &before.registrations, "the reopened store lost or changed facts");
                    prop_assert_eq!(&after.pending, &before.pending);
                }
                None => fold_into(&store, &shuffled[lost_from..cut], burst),
            }
        }
        prop_assert_eq!(&desired_from_store(&model, &store), &want, "folded in the store");
    }
}
