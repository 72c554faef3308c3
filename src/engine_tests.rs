//! The engine and the planner against a real (temporary) store and fake or
//! real backends that never leave the process: per-app planning equals a
//! whole-world pass, and the drain's concurrency, order and lanes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::*;
use crate::backends::consul::{ConsulBackend, ConsulConfig};
use crate::backends::kong::{KongBackend, KongConfig};
use crate::marathon::client::ClientConfig;
use crate::model::{AppSpec, PortSpec, TaskFacts, TaskId, TaskState};
use crate::planner::{AppWant, DirtySet, Planner};
use crate::store::SnapshotApp;

fn url(s: &str) -> url::Url {
    url::Url::parse(s).expect("url")
}

fn engine(dir: &std::path::Path, backends: Vec<Arc<dyn Backend>>) -> Engine {
    let store = Store::open(dir).expect("store");
    let marathon = MarathonClient::new(ClientConfig {
        urls: vec![url("http://127.0.0.1:9")],
        auth: None,
        timeout: Duration::from_secs(1),
    })
    .expect("client");
    Engine::new(store, marathon, backends, LabelOptions::default(), Vec::new(), Metrics::new())
}

fn spec(id: &str, labels: &[(&str, &str)]) -> AppSpec {
    AppSpec {
        id: AppId::parse(id).expect("app id"),
        version: "2026-01-01T00:00:00.000Z".into(),
        labels: labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ports: vec![PortSpec::default()],
        health_checks: Vec::new(),
        ip_per_task: false,
        pod: None,
    }
}

fn app(spec: AppSpec, instances: usize) -> SnapshotApp {
    let tasks = (0..instances)
        .map(|i| {
            let name = spec.id.as_str().trim_start_matches('/').replace('/', "_");
            let facts = TaskFacts {
                task_id: TaskId::parse(&format!("{name}.0000000{i}-aaaa-bbbb-cccc-dddddddddddd")).expect("task id"),
                app_id: spec.id.clone(),
                host: format!("10.0.0.{}", i + 1),
                ports: vec![31000 + i as u16],
                ip_addresses: Vec::new(),
                state: TaskState::Running,
                version: spec.version.clone(),
                at: Timestamp(1_000),
            };
            (facts, None)
        })
        .collect();
    SnapshotApp { spec, tasks }
}

fn put(e: &Engine, apps: &[SnapshotApp]) {
    for a in apps {
        e.store.apply_app(a, Timestamp(2_000)).expect("apply app");
    }
}

fn kong() -> Arc<dyn Backend> {
    Arc::new(KongBackend::new(KongConfig::new(url("http://127.0.0.1:9"))).expect("kong"))
}

fn consul() -> Arc<dyn Backend> {
    Arc::new(
        ConsulBackend::new(ConsulConfig {
            url: url("http://127.0.0.1:9"),
            token: None,
            cluster: "default".into(),
            timeout: Duration::from_secs(1),
            agents: Default::default(),
            tls: Default::default(),
        })
        .expect("consul"),
    )
}

/// What each backend keeps per app, by a whole-world pass.
fn world_keep(e: &Engine) -> BTreeMap<&'static str, BTreeMap<String, Vec<Registration>>> {
    let state = e.desired().expect("desired");
    let mut out = BTreeMap::new();
    for b in &e.backends {
        let mut by_app: BTreeMap<String, Vec<Registration>> = BTreeMap::new();
        for r in state.selections.get(b.name()).map(|s| s.keep.clone()).unwrap_or_default() {
            by_app.entry(r.app_id.clone()).or_default().push(r);
        }
        out.insert(b.name(), by_app);
    }
    out
}

/// Folds wants into what each backend keeps per app (newest want wins).
fn fold(
    into: &mut BTreeMap<&'static str, BTreeMap<String, Vec<Registration>>>,
    wants: BTreeMap<&'static str, Vec<AppWant>>,
) {
    for (name, wants) in wants {
        let by_app = into.entry(name).or_default();
        for w in wants {
            let mut keep = w.keep;
            keep.sort();
            if keep.is_empty() {
                by_app.remove(&w.app);
            } else {
                by_app.insert(w.app, keep);
            }
        }
    }
}

fn sorted(
    mut m: BTreeMap<&'static str, BTreeMap<String, Vec<Registration>>>,
) -> BTreeMap<&'static str, BTreeMap<String, Vec<Registration>>> {
    for by_app in m.values_mut() {
        for regs in by_app.values_mut() {
            regs.sort();
        }
    }
    m
}

fn dirty(apps: &[&str]) -> DirtySet {
    DirtySet { all: false, apps: apps.iter().map(|a| a.to_string()).collect() }
}

#[test]
fn planning_dirty_apps_alone_ends_where_a_whole_world_pass_does() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path(), vec![consul(), kong()]);
    // Three apps contest one Kong host; one has its own; one is Consul only.
    put(
        &e,
        &[
            app(spec("/b", &[("consul", ""), ("kong.hosts", "shop.example")]), 2),
            app(spec("/c", &[("kong.hosts", "shop.example")]), 1),
            app(spec("/d", &[("kong.hosts", "shop.example")]), 1),
            app(spec("/e", &[("kong.hosts", "own.example")]), 3),
            app(spec("/f", &[("consul", "")]), 2),
        ],
    );
    let mut planner = Planner::default();
    let mut seen = BTreeMap::new();
    fold(&mut seen, planner.pass(&e, DirtySet { all: true, apps: BTreeSet::new() }).expect("pass"));
    assert_eq!(sorted(seen.clone()), sorted(world_keep(&e)));
    assert_eq!(seen["kong"].keys().collect::<Vec<_>>(), ["/b", "/e"], "the smallest app id keeps a contested host");

    // /b gives the host up: only /b is dirty, yet /c (next in line) must now
    // be published, and /d still refused.
    put(&e, &[app(spec("/b", &[("consul", "")]), 2)]);
    let wants = planner.pass(&e, dirty(&["/b"])).expect("pass");
    let kong_apps: BTreeSet<&str> = wants["kong"].iter().map(|w| w.app.as_str()).collect();
    assert!(kong_apps.contains("/c") && !kong_apps.contains("/e"), "replanned on kong: {kong_apps:?}");
    assert_eq!(wants["consul"].iter().map(|w| w.app.as_str()).collect::<Vec<_>>(), ["/b"], "consul judges apps alone");
    fold(&mut seen, wants);
    assert_eq!(sorted(seen.clone()), sorted(world_keep(&e)));
    assert_eq!(seen["kong"].keys().collect::<Vec<_>>(), ["/c", "/e"]);

    // /f scales down and /d goes away: each planned alone still agrees.
    put(&e, &[app(spec("/f", &[("consul", "")]), 1)]);
    e.store
        .apply_snapshot(
            &[
                app(spec("/b", &[("consul", "")]), 2),
                app(spec("/c", &[("kong.hosts", "shop.example")]), 1),
                app(spec("/e", &[("kong.hosts", "own.example")]), 3),
                app(spec("/f", &[("consul", "")]), 1),
            ],
            &BTreeSet::new(),
            Timestamp(3_000),
            u64::MAX,
        )
        .expect("snapshot");
    fold(&mut seen, planner.pass(&e, dirty(&["/d", "/f"])).expect("pass"));
    assert_eq!(sorted(seen), sorted(world_keep(&e)));
}

#[test]
fn a_pass_reads_only_the_apps_it_plans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let e = engine(dir.path(), vec![consul()]);
    let apps: Vec<SnapshotApp> = (0..50).map(|i| app(spec(&format!("/app{i:02}"), &[("consul", "")]), 4)).collect();
    put(&e, &apps);
    let mut planner = Planner::default();
    planner.pass(&e, DirtySet { all: true, apps: BTreeSet::new() }).expect("pass");
    let wants = planner.pass(&e, dirty(&["/app07"])).expect("pass");
    assert_eq!(wants["consul"].len(), 1);
    assert_eq!(wants["consul"][0].keep.len(), 4);
}

/// A backend that records what it is asked, how many ops run at once, and
/// fails every op on the lanes (addresses) it is told to.
#[derive(Default)]
struct Recorder {
    inflight: AtomicUsize,
    most: AtomicUsize,
    calls: Mutex<Vec<(String, String)>>,
    failing: Mutex<BTreeSet<String>>,
    /// Like Vulcand: the ledger is the only ownership record, and every
    /// name asked about is held by someone (the objects exist).
    names_exist: bool,
}

#[async_trait]
impl Backend for Recorder {
    fn name(&self) -> &'static str {
        "consul"
    }
    fn select(&self, desired: &[Registration]) -> Selection {
        Selection { keep: desired.to_vec(), rejected: Vec::new() }
    }
    async fn list_owned(&self, _: &[Registration]) -> Result<Vec<Registration>, BackendError> {
        Ok(Vec::new())
    }
    async fn apply(&self, op: &Op) -> Result<(), BackendError> {
        let now = self.inflight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most.fetch_max(now, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(5)).await;
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        self.calls.lock().expect("calls").push((op.verb().to_owned(), op.key().to_owned()));
        if self.failing.lock().expect("failing").contains(&op.registration().address) {
            return Err(BackendError::Transient { backend: "consul", what: op.key().into(), message: "down".into() });
        }
        Ok(())
    }
    fn lane(&self, reg: &Registration) -> Option<String> {
        Some(reg.address.clone())
    }
    async fn claim(&self, reg: &Registration) -> Result<Claim, BackendError> {
        self.calls.lock().expect("calls").push(("claim".into(), reg.service.clone()));
        Ok(if self.names_exist { Claim::Held("exists, not in the ledger".into()) } else { Claim::Free })
    }
}

fn reg(app: &str, n: usize, address: &str) -> Registration {
    Registration {
        id: format!("{app}.task{n}:3100{n}"),
        service: app.trim_start_matches('/').into(),
        app_id: app.into(),
        task_id: format!("{app}.task{n}"),
        address: address.into(),
        port: 31000 + n as u16,
        tags: vec!["switchboard".into()],
        consul: true,
        checks: Vec::new(),
        healthy: None,
        has_health_checks: false,
        routes: Default::default(),
        host: String::new(),
    }
}

#[tokio::test]
async fn apps_apply_concurrently_each_in_order_and_deregistrations_first() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Arc::new(Recorder::default());
    let b: Arc<dyn Backend> = rec.clone();
    let e = engine(dir.path(), vec![b.clone()]).with_concurrency(BTreeMap::from([("consul", 4)]));
    let old: Vec<Registration> = (0..3).map(|n| reg("/old", n, "10.0.0.9")).collect();
    e.store.import_ledger("consul", &old).expect("ledger");
    let mut ops: Vec<Op> =
        (0..8).flat_map(|a| (0..3).map(move |n| Op::Register(reg(&format!("/app{a}"), n, "10.0.0.1")))).collect();
    ops.extend(old.iter().map(|r| Op::Deregister { registration: r.clone(), service_empty: true }));
    e.store.enqueue("consul", &ops).expect("enqueue");

    let drained = e.drain(&b, &AppliedLog::default()).await.expect("drain");
    assert_eq!(drained, Drain::Idle { next_due_ms: None });
    let most = rec.most.load(Ordering::SeqCst);
    assert!((2..=4).contains(&most), "ops in flight at once: {most}");
    let calls: Vec<(String, String)> =
        rec.calls.lock().expect("calls").iter().filter(|(verb, _)| verb != "claim").cloned().collect();
    assert_eq!(calls.len(), ops.len());
    let first_register = calls.iter().position(|(verb, _)| verb == "register").expect("registers");
    assert!(calls[..first_register].iter().all(|(verb, _)| verb == "deregister"));
    assert_eq!(first_register, 3, "every deregistration before any registration");
    for a in 0..8 {
        let app = format!("/app{a}.");
        let mine: Vec<&str> = calls.iter().filter(|(_, k)| k.starts_with(&app)).map(|(_, k)| k.as_str()).collect();
        let mut in_order = mine.clone();
        in_order.sort();
        assert_eq!(mine, in_order, "ops of one app run in order");
    }
    assert_eq!(e.store.ledger("consul").expect("ledger").len(), 24);
    assert_eq!(e.store.queue_len("consul"), 0);
}

#[tokio::test]
async fn a_transient_failure_backs_off_its_lane_only() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Arc::new(Recorder::default());
    rec.failing.lock().expect("failing").insert("10.0.0.66".into());
    let b: Arc<dyn Backend> = rec.clone();
    let e = engine(dir.path(), vec![b.clone()]).with_concurrency(BTreeMap::from([("consul", 2)]));
    let mut ops: Vec<Op> = (0..3).map(|n| Op::Register(reg("/down", n, "10.0.0.66"))).collect();
    ops.extend((0..3).map(|n| Op::Register(reg("/up", n, "10.0.0.1"))));
    e.store.enqueue("consul", &ops).expect("enqueue");

    let drained = e.drain(&b, &AppliedLog::default()).await.expect("drain");
    assert!(matches!(drained, Drain::Backoff { .. }), "{drained:?}");
    let ledger: Vec<String> = e.store.ledger("consul").expect("ledger").into_iter().map(|r| r.app_id).collect();
    assert_eq!(ledger, ["/up", "/up", "/up"], "the healthy lane went on");
    let down_calls = || rec.calls.lock().expect("calls").iter().filter(|(_, k)| k.starts_with("/down")).count();
    assert_eq!(down_calls(), 1, "the failed lane stopped at its first failure");
    assert_eq!(e.store.queue_len("consul"), 3, "its ops stay queued");

    // At once again: the lane is still backing off, so nothing is tried.
    e.store.enqueue("consul", &[Op::Register(reg("/up", 7, "10.0.0.1"))]).expect("enqueue");
    e.drain(&b, &AppliedLog::default()).await.expect("drain");
    assert_eq!(down_calls(), 1, "a backed-off lane is not tried before its time");
    assert_eq!(e.store.ledger("consul").expect("ledger").len(), 4, "other lanes are");
}

#[tokio::test]
async fn a_service_whose_last_instance_is_replaced_stays_ours_within_a_drain_and_across_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let rec = Arc::new(Recorder { names_exist: true, ..Recorder::default() });
    let b: Arc<dyn Backend> = rec.clone();
    let e = engine(dir.path(), vec![b.clone()]).with_concurrency(BTreeMap::from([("consul", 4)]));
    let old = reg("/web", 1, "10.0.0.1");
    e.store.import_ledger("consul", &[old.clone()]).expect("ledger");

    // A relaunch: the old instance goes (its service stays: another is on
    // its way) and the new one comes, in one drain.
    e.store
        .enqueue(
            "consul",
            &[Op::Deregister { registration: old, service_empty: false }, Op::Register(reg("/web", 2, "10.0.0.1"))],
        )
        .expect("enqueue");
    e.drain(&b, &AppliedLog::default()).await.expect("drain");
    assert!(e.store.refusals("consul").expect("refusals").is_empty(), "our own service taken for someone else's");
    assert_eq!(e.store.ledger("consul").expect("ledger").len(), 1);

    // The same across drains: the deregistration lands first, alone.
    let new = reg("/web", 2, "10.0.0.1");
    e.store.enqueue("consul", &[Op::Deregister { registration: new, service_empty: false }]).expect("enqueue");
    e.drain(&b, &AppliedLog::default()).await.expect("drain");
    assert!(e.store.ledger("consul").expect("ledger").is_empty());
    e.store.enqueue("consul", &[Op::Register(reg("/web", 3, "10.0.0.1"))]).expect("enqueue");
    e.drain(&b, &AppliedLog::default()).await.expect("drain");
    assert!(e.store.refusals("consul").expect("refusals").is_empty(), "our own service taken for someone else's");
    assert_eq!(e.store.ledger("consul").expect("ledger").len(), 1);
    let claims = rec.calls.lock().expect("calls").iter().filter(|(v, _)| v == "claim").count();
    assert_eq!(claims, 0, "a service the ledger or an intent makes ours is not asked about");

    // Someone else's service is still refused.
    e.store.enqueue("consul", &[Op::Register(reg("/other", 1, "10.0.0.2"))]).expect("enqueue");
    e.drain(&b, &AppliedLog::default()).await.expect("drain");
    assert_eq!(e.store.refusals("consul").expect("refusals").len(), 1);
}
