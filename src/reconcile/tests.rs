//! The reconcile core against a real (temporary) store on its own thread and
//! fake or real backends that never leave the process: per-app planning
//! equals a whole-world selection (with and without `--ha`), the drain's
//! concurrency, order and lanes (with and without `--ha`), and a resync's
//! merge cancelling queued ops that the listing and the facts make stale.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;

use super::applier::{Applier, Drain};
use super::planner::{AppWant, DirtySet, PlanInputs, Planner, desired_of, known_apps};
use super::*;
use crate::backends::consul::{ConsulBackend, ConsulConfig};
use crate::backends::kong::{KongBackend, KongConfig};
use crate::backends::{BackendError, Claim, Registry, Routing, Selection};
use crate::ha::Fence;
use crate::model::{AppId, AppSpec, PortSpec, Registration, TaskFacts, TaskId, TaskState, Timestamp};
use crate::plan::Op;
use crate::store::{SnapshotApp, Store};

/// A store on its thread and the backends, as the daemon wires them.
struct World {
    store: StoreHandle,
    backends: Vec<Backend>,
    labels: Labels,
    metrics: Metrics,
}

fn world(dir: &std::path::Path, backends: Vec<Backend>) -> World {
    let store = StoreHandle::spawn(Store::open(dir).expect("store")).expect("store thread");
    World { store, backends, labels: Labels::default(), metrics: Metrics::new() }
}

impl World {
    fn inputs(&self) -> PlanInputs {
        PlanInputs {
            routing: self.backends.iter().map(|b| b.routing.clone()).collect(),
            labels: self.labels.clone(),
            metrics: self.metrics.clone(),
        }
    }

    fn run<R: Send + 'static>(&self, f: impl FnOnce(&Store) -> Result<R, crate::store::Error> + Send + 'static) -> R {
        self.store.call_blocking(f).expect("store call")
    }

    /// One planning pass over `dirty` (on the store's thread).
    fn pass(&self, planner: Planner, dirty: DirtySet) -> (Planner, BTreeMap<&'static str, Vec<AppWant>>) {
        let inputs = self.inputs();
        self.run(move |s| {
            let mut planner = planner;
            let apps = Planner::apps_of(s, &inputs, dirty).expect("apps");
            let wants = planner.pass(s, &inputs, &apps, 1).expect("pass");
            Ok((planner, wants))
        })
    }

    fn applier(&self, fence: Fence, limit: usize) -> (Applier, super::applier::ApplierHandle) {
        Applier::new(self.backends[0].clone(), self.store.clone(), self.metrics.clone(), fence, limit)
    }
}

/// Without `--ha`, and with `--ha` on and this replica leading.
fn fences() -> Vec<(&'static str, Fence)> {
    let leased = Fence::leased_until(std::time::Instant::now() + Duration::from_secs(600)).expect("fence");
    vec![("single", Fence::always()), ("ha", leased)]
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

fn put(w: &World, apps: &[SnapshotApp]) {
    let apps = apps.to_vec();
    w.run(move |s| {
        for a in &apps {
            s.apply_app(a, Timestamp(2_000))?;
        }
        Ok(())
    });
}

fn url(s: &str) -> url::Url {
    url::Url::parse(s).expect("url")
}

fn kong() -> Backend {
    Backend::new(KongBackend::new(KongConfig::new(url("http://127.0.0.1:9"))).expect("kong"))
}

fn consul() -> Backend {
    Backend::new(
        ConsulBackend::new(ConsulConfig {
            url: url("http://127.0.0.1:9"),
            token: None,
            cluster: "default".into(),
            timeout: Duration::from_secs(1),
            agents: Default::default(),
            tls: Default::default(),
            replace: None,
        })
        .expect("consul"),
    )
}

/// What each backend keeps per app, by one selection over every app's
/// registrations (the oracle the per-app passes must agree with).
fn world_keep(w: &World) -> BTreeMap<&'static str, BTreeMap<String, Vec<Registration>>> {
    let (labels, names) = (w.labels.clone(), w.backends.iter().map(Backend::name).collect::<Vec<_>>());
    let all: Vec<Registration> = w.run(move |s| {
        let mut all = Vec::new();
        for app in known_apps(s, &labels, &names).expect("apps") {
            all.extend(desired_of(s, &labels, &app).expect("desired").desired.registrations);
        }
        Ok(all)
    });
    let mut out = BTreeMap::new();
    for b in &w.backends {
        let mut by_app: BTreeMap<String, Vec<Registration>> = BTreeMap::new();
        for r in b.routing.select(&all).keep {
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
    for (mode, backends) in [("single", vec![consul(), kong()]), ("ha", ha_backends())] {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = world(dir.path(), backends);
        // Three apps contest one Kong host; one has its own; one is Consul only.
        put(
            &w,
            &[
                app(spec("/b", &[("consul", ""), ("kong.hosts", "shop.example")]), 2),
                app(spec("/c", &[("kong.hosts", "shop.example")]), 1),
                app(spec("/d", &[("kong.hosts", "shop.example")]), 1),
                app(spec("/e", &[("kong.hosts", "own.example")]), 3),
                app(spec("/f", &[("consul", "")]), 2),
            ],
        );
        let mut seen = BTreeMap::new();
        let (planner, wants) = w.pass(Planner::default(), DirtySet::everything());
        fold(&mut seen, wants);
        assert_eq!(sorted(seen.clone()), sorted(world_keep(&w)), "{mode}");
        assert_eq!(
            seen["kong"].keys().collect::<Vec<_>>(),
            ["/b", "/e"],
            "{mode}: the smallest app id keeps a contested host"
        );

        // /b gives the host up: only /b is dirty, yet /c (next in line) must now
        // be published, and /d still refused.
        put(&w, &[app(spec("/b", &[("consul", "")]), 2)]);
        let (planner, wants) = w.pass(planner, dirty(&["/b"]));
        let kong_apps: BTreeSet<&str> = wants["kong"].iter().map(|w| w.app.as_str()).collect();
        assert!(kong_apps.contains("/c") && !kong_apps.contains("/e"), "{mode}: replanned on kong: {kong_apps:?}");
        assert_eq!(
            wants["consul"].iter().map(|w| w.app.as_str()).collect::<Vec<_>>(),
            ["/b"],
            "{mode}: consul judges apps alone"
        );
        fold(&mut seen, wants);
        assert_eq!(sorted(seen.clone()), sorted(world_keep(&w)), "{mode}");
        assert_eq!(seen["kong"].keys().collect::<Vec<_>>(), ["/c", "/e"], "{mode}");

        // /f scales down and /d goes away: each planned alone still agrees.
        put(&w, &[app(spec("/f", &[("consul", "")]), 1)]);
        let rest = vec![
            app(spec("/b", &[("consul", "")]), 2),
            app(spec("/c", &[("kong.hosts", "shop.example")]), 1),
            app(spec("/e", &[("kong.hosts", "own.example")]), 3),
            app(spec("/f", &[("consul", "")]), 1),
        ];
        w.run(move |s| s.apply_snapshot(&rest, &BTreeSet::new(), Timestamp(3_000), u64::MAX));
        let (_, wants) = w.pass(planner, dirty(&["/d", "/f"]));
        fold(&mut seen, wants);
        assert_eq!(sorted(seen), sorted(world_keep(&w)), "{mode}");
    }
}

/// The backends as `switchboard run --ha` builds them (the fence is the
/// applier's, so the planner sees the same routing with or without it).
fn ha_backends() -> Vec<Backend> {
    let mut args =
        crate::config::CommonArgs { marathon: vec!["http://127.0.0.1:9".into()], ha: true, ..Default::default() };
    args.backends.consul.url = Some("http://127.0.0.1:9".into());
    args.backends.kong.url = Some("http://127.0.0.1:9".into());
    let cfg = crate::config::Config::merge(&args, &Default::default(), &crate::config::Env::none()).expect("config");
    assert!(cfg.ha.is_some(), "--ha is on");
    crate::daemon::build_backends(&cfg, &crate::ha::Fence::always()).expect("backends")
}

#[test]
fn a_pass_reads_only_the_apps_it_plans() {
    let dir = tempfile::tempdir().expect("tempdir");
    let w = world(dir.path(), vec![consul()]);
    let apps: Vec<SnapshotApp> = (0..50).map(|i| app(spec(&format!("/app{i:02}"), &[("consul", "")]), 4)).collect();
    put(&w, &apps);
    let (planner, _) = w.pass(Planner::default(), DirtySet::everything());
    let (_, wants) = w.pass(planner, dirty(&["/app07"]));
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
    /// What `list_owned` answers.
    listing: Mutex<Vec<Registration>>,
}

impl Routing for Recorder {
    fn name(&self) -> &'static str {
        "consul"
    }
    fn select(&self, desired: &[Registration]) -> Selection {
        Selection { keep: desired.to_vec(), rejected: Vec::new() }
    }
    fn conflict_keys(&self, _: &Registration) -> Vec<String> {
        Vec::new()
    }
    fn lane(&self, reg: &Registration) -> Option<String> {
        Some(reg.address.clone())
    }
    fn same(&self, desired: &Registration, observed: &Registration) -> bool {
        desired == observed
    }
}

#[async_trait]
impl Registry for Recorder {
    async fn list_owned(&self, _: &[Registration]) -> Result<Vec<Registration>, BackendError> {
        Ok(self.listing.lock().expect("listing").clone())
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
    async fn claim(&self, reg: &Registration) -> Result<Claim, BackendError> {
        self.calls.lock().expect("calls").push(("claim".into(), reg.service.clone()));
        Ok(if self.names_exist { Claim::Held("exists, not in the ledger".into()) } else { Claim::Free })
    }
    async fn adoptable(&self, _: &[Registration]) -> Result<Vec<crate::backends::Found>, BackendError> {
        Ok(Vec::new())
    }
    fn heartbeat_interval(&self) -> Option<Duration> {
        None
    }
    async fn heartbeat(&self, _: &[Registration]) -> Result<(), BackendError> {
        Ok(())
    }
}

/// The recorder as a backend (both halves), and the recorder to inspect.
fn recorder(rec: Recorder) -> (Arc<Recorder>, Backend) {
    let rec = Arc::new(rec);
    (rec.clone(), Backend { routing: rec.clone(), registry: rec })
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

/// Store calls from a test's async body.
async fn on(w: &World, f: impl FnOnce(&Store) -> Result<(), crate::store::Error> + Send + 'static) {
    w.store.call(f).await.expect("store call");
}

async fn ledger_len(w: &World) -> usize {
    w.store.call(|s| Ok(s.ledger("consul")?.len())).await.expect("ledger")
}

async fn queue_len(w: &World) -> usize {
    w.store.call(|s| Ok(s.queue_len("consul"))).await.expect("queue")
}

#[tokio::test]
async fn apps_apply_concurrently_each_in_order_and_deregistrations_first() {
    for (mode, fence) in fences() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rec, b) = recorder(Recorder::default());
        let w = world(dir.path(), vec![b]);
        let (mut applier, _) = w.applier(fence, 4);
        let old: Vec<Registration> = (0..3).map(|n| reg("/old", n, "10.0.0.9")).collect();
        let mut ops: Vec<Op> =
            (0..8).flat_map(|a| (0..3).map(move |n| Op::Register(reg(&format!("/app{a}"), n, "10.0.0.1")))).collect();
        ops.extend(old.iter().map(|r| Op::Deregister { registration: r.clone(), service_empty: true }));
        let queued = ops.clone();
        on(&w, move |s| {
            s.import_ledger("consul", &old)?;
            s.enqueue("consul", &queued)
        })
        .await;

        let drained = applier.drain().await.expect("drain");
        assert_eq!(drained, Drain::Idle { next_due_ms: None }, "{mode}");
        let most = rec.most.load(Ordering::SeqCst);
        assert!((2..=4).contains(&most), "{mode}: ops in flight at once: {most}");
        let calls: Vec<(String, String)> =
            rec.calls.lock().expect("calls").iter().filter(|(verb, _)| verb != "claim").cloned().collect();
        assert_eq!(calls.len(), ops.len(), "{mode}");
        let first_register = calls.iter().position(|(verb, _)| verb == "register").expect("registers");
        assert!(calls[..first_register].iter().all(|(verb, _)| verb == "deregister"), "{mode}");
        assert_eq!(first_register, 3, "{mode}: every deregistration before any registration");
        for a in 0..8 {
            let app = format!("/app{a}.");
            let mine: Vec<&str> = calls.iter().filter(|(_, k)| k.starts_with(&app)).map(|(_, k)| k.as_str()).collect();
            let mut in_order = mine.clone();
            in_order.sort();
            assert_eq!(mine, in_order, "{mode}: ops of one app run in order");
        }
        assert_eq!(ledger_len(&w).await, 24, "{mode}");
        assert_eq!(queue_len(&w).await, 0, "{mode}");
    }
}

#[tokio::test]
async fn a_transient_failure_backs_off_its_lane_only() {
    for (mode, fence) in fences() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (rec, b) = recorder(Recorder::default());
        rec.failing.lock().expect("failing").insert("10.0.0.66".into());
        let w = world(dir.path(), vec![b]);
        let (mut applier, _) = w.applier(fence, 2);
        let mut ops: Vec<Op> = (0..3).map(|n| Op::Register(reg("/down", n, "10.0.0.66"))).collect();
        ops.extend((0..3).map(|n| Op::Register(reg("/up", n, "10.0.0.1"))));
        on(&w, move |s| s.enqueue("consul", &ops)).await;

        let drained = applier.drain().await.expect("drain");
        assert!(matches!(drained, Drain::Backoff { .. }), "{mode}: {drained:?}");
        let ledger: Vec<String> = w
            .store
            .call(|s| Ok(s.ledger("consul")?.into_iter().map(|r| r.app_id).collect::<Vec<_>>()))
            .await
            .expect("ledger");
        assert_eq!(ledger, ["/up", "/up", "/up"], "{mode}: the healthy lane went on");
        let down_calls = || rec.calls.lock().expect("calls").iter().filter(|(_, k)| k.starts_with("/down")).count();
        assert_eq!(down_calls(), 1, "{mode}: the failed lane stopped at its first failure");
        assert_eq!(queue_len(&w).await, 3, "{mode}: its ops stay queued");

        // At once again: the lane is still backing off, so nothing is tried.
        on(&w, |s| s.enqueue("consul", &[Op::Register(reg("/up", 7, "10.0.0.1"))])).await;
        applier.drain().await.expect("drain");
        assert_eq!(down_calls(), 1, "{mode}: a backed-off lane is not tried before its time");
        assert_eq!(ledger_len(&w).await, 4, "{mode}: other lanes are");
    }
}

#[tokio::test]
async fn a_fence_without_a_lease_sends_nothing_and_keeps_the_ops() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, b) = recorder(Recorder::default());
    let w = world(dir.path(), vec![b]);
    let expired = Fence::leased_until(std::time::Instant::now()).expect("fence");
    let (mut applier, _) = w.applier(expired, 2);
    on(&w, |s| s.enqueue("consul", &[Op::Register(reg("/web", 1, "10.0.0.1"))])).await;
    let drained = applier.drain().await.expect("drain");
    // Not the backend's failure: no backoff, no attempt counted (the fence holds the drain).
    assert!(matches!(drained, Drain::Idle { .. }), "{drained:?}");
    let sent = rec.calls.lock().expect("calls").iter().filter(|(v, _)| v == "register").count();
    assert_eq!(sent, 0, "no write past the lease");
    let queued = w.store.call(|s| s.queued("consul")).await.expect("queue");
    assert_eq!(queued.len(), 1, "the op stays queued for the next leader");
    assert_eq!((queued[0].attempts, queued[0].last_error.as_deref()), (0, None), "queued as it was");
}

#[tokio::test]
async fn a_service_whose_last_instance_is_replaced_stays_ours_within_a_drain_and_across_drains() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, b) = recorder(Recorder { names_exist: true, ..Recorder::default() });
    let w = world(dir.path(), vec![b]);
    let (mut applier, _) = w.applier(Fence::always(), 4);
    let old = reg("/web", 1, "10.0.0.1");
    let refusals = || async { w.store.call(|s| Ok(s.refusals("consul")?.len())).await.expect("refusals") };

    // A relaunch: the old instance goes (its service stays: another is on
    // its way) and the new one comes, in one drain.
    on(&w, move |s| {
        s.import_ledger("consul", std::slice::from_ref(&old))?;
        s.enqueue(
            "consul",
            &[Op::Deregister { registration: old, service_empty: false }, Op::Register(reg("/web", 2, "10.0.0.1"))],
        )
    })
    .await;
    applier.drain().await.expect("drain");
    assert_eq!(refusals().await, 0, "our own service taken for someone else's");
    assert_eq!(ledger_len(&w).await, 1);

    // The same across drains: the deregistration lands first, alone.
    let new = reg("/web", 2, "10.0.0.1");
    on(&w, move |s| s.enqueue("consul", &[Op::Deregister { registration: new, service_empty: false }])).await;
    applier.drain().await.expect("drain");
    assert_eq!(ledger_len(&w).await, 0);
    on(&w, |s| s.enqueue("consul", &[Op::Register(reg("/web", 3, "10.0.0.1"))])).await;
    applier.drain().await.expect("drain");
    assert_eq!(refusals().await, 0, "our own service taken for someone else's");
    assert_eq!(ledger_len(&w).await, 1);
    let claims = rec.calls.lock().expect("calls").iter().filter(|(v, _)| v == "claim").count();
    assert_eq!(claims, 0, "a service the ledger or an intent makes ours is not asked about");

    // Someone else's service is still refused.
    on(&w, |s| s.enqueue("consul", &[Op::Register(reg("/other", 1, "10.0.0.2"))])).await;
    applier.drain().await.expect("drain");
    assert_eq!(refusals().await, 1);
}

#[tokio::test]
async fn a_resync_merge_cancels_a_queued_register_of_an_instance_that_died_meanwhile() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (rec, b) = recorder(Recorder::default());
    let w = world(dir.path(), vec![b]);
    let (mut applier, handle) = w.applier(Fence::always(), 4);
    // /web runs two instances; both are registered and in the ledger.
    let web = app(spec("/web", &[("consul", "")]), 2);
    put(&w, std::slice::from_ref(&web));
    let (planner, wants) = w.pass(Planner::default(), DirtySet::everything());
    applier.plan(wants["consul"].clone()).await.expect("plan");
    assert_eq!(applier.drain().await.expect("drain"), Drain::Idle { next_due_ms: None });
    let registered: Vec<Registration> = w.store.call(|s| s.ledger("consul")).await.expect("ledger");
    assert_eq!(registered.len(), 2);
    // The second instance's registration is lost by the backend (an agent
    // restarted) and its repair waits in the queue behind a backoff; then
    // the instance dies while the event stream is down: only the next
    // snapshot says so.
    let lost = registered[1].clone();
    let repair = Op::Register(lost.clone());
    on(&w, move |s| {
        s.enqueue("consul", std::slice::from_ref(&repair))?;
        s.retry_later("consul", &repair, u64::MAX / 2, "agent down")?;
        Ok(())
    })
    .await;
    let survivor = SnapshotApp { spec: web.spec.clone(), tasks: web.tasks[..1].to_vec() };
    w.run(move |s| s.apply_snapshot(&[survivor], &BTreeSet::new(), Timestamp(5_000), u64::MAX));
    *rec.listing.lock().expect("listing") = vec![registered[0].clone()];

    // The resync: listing, merge, one pass over every app.
    let listed = handle.list().await.expect("list");
    let answer = handle.merge(listed, 1);
    let (_, wants) = w.pass(planner, DirtySet::everything());
    applier.plan(wants["consul"].clone()).await.expect("plan");
    let merged = answer.await.expect("answered").expect("merged");
    assert!(merged.is_empty(), "nothing to repair: {merged:?}");
    let queued = w.store.call(|s| s.queued("consul")).await.expect("queue");
    assert!(queued.is_empty(), "the register of the dead instance is cancelled: {queued:?}");
    let ledger: Vec<String> =
        w.store.call(|s| Ok(s.ledger("consul")?.into_iter().map(|r| r.id).collect::<Vec<_>>())).await.expect("ledger");
    assert_eq!(ledger, [registered[0].id.clone()], "the lost registration is forgotten, not kept");
    // Nothing is sent for it when its lane would have recovered.
    applier.drain().await.expect("drain");
    let sent_again = rec.calls.lock().expect("calls").iter().filter(|(v, k)| v == "register" && *k == lost.id).count();
    assert_eq!(sent_again, 1, "registered once, before it was lost; never again");
}
