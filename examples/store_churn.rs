//! What the store costs in disk, bytes written and memory: folds a world of
//! N instances (apps of 10, each instance staged, running and healthy, each
//! registered on three backends through the queue and the ledger), then
//! churns: each restart kills one instance (deregistered on the three
//! backends) and starts its replacement (registered again). Every event is
//! one `apply_touches` (and the planner's `set_pending_of`), every op goes
//! through `enqueue` and `complete_many`, as the daemon does. The store is
//! flushed after each app's fold and after each restart (one group commit
//! per burst, as the daemon's store thread is to do).
//!
//! Run: `cargo run --release --example store_churn -- INSTANCES RESTARTS [CACHE_BYTES]`.
//! Prints one JSON line: store size on disk per instance, bytes written
//! (`/proc/self/io`: `write_bytes` reached the disk, `wchar` passed to
//! `write`) per instance for the fold and per restart for the churn, RSS,
//! and what each tree holds (`Store::footprint`: records, key and value bytes).

use std::path::Path;

use switchboard::assemble::{HealthFact, InstanceRecord, Touch};
use switchboard::model::{AppId, AppSpec, PortSpec, Registration, Routes, TaskFacts, TaskId, TaskState, Timestamp};
use switchboard::plan::Op;
use switchboard::store::{Store, StoreOptions};

const PER_APP: usize = 10;
const BACKENDS: [&str; 3] = ["consul", "kong", "vulcand"];

struct World {
    store: Store,
    clock: i64,
}

fn io(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/io").unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(": ")?.trim().parse().ok()).unwrap_or(0)
}

fn status_kib(field: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':')?.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

fn dir_size(dir: &Path) -> u64 {
    let mut total = 0;
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(meta) = entry.metadata() else { continue };
        total += if meta.is_dir() { dir_size(&entry.path()) } else { meta.len() };
    }
    total
}

fn app_id(app: usize) -> AppId {
    AppId::parse(&format!("/prod/team-{}/service-{app}", app % 7)).expect("app id")
}

fn task_id(app: usize, slot: usize, launch: usize) -> TaskId {
    TaskId::parse(&format!(
        "prod_team-{}_service-{app}.instance-{:08x}-{:04x}-4000-8000-{:012x}._app.1",
        app % 7,
        app,
        slot,
        launch
    ))
    .expect("task id")
}

fn spec(app: usize) -> AppSpec {
    AppSpec {
        id: app_id(app),
        version: "2026-12-01T10:00:00.000Z".into(),
        labels: [
            ("consul".to_string(), format!("service-{app}")),
            ("kong.hosts".into(), format!("s{app}.example.com")),
        ]
        .into(),
        ports: vec![PortSpec::default()],
        health_checks: vec![],
        ip_per_task: false,
        pod: None,
    }
}

fn host(app: usize, slot: usize) -> String {
    format!("10.{}.{}.{}", app % 200, slot, (app / 200) % 250)
}

fn registration(app: usize, slot: usize, launch: usize) -> Registration {
    let task = task_id(app, slot, launch);
    let port = 31_000 + (launch % 1000) as u16;
    Registration {
        id: format!("{task}:{port}"),
        service: format!("service-{app}"),
        app_id: app_id(app).to_string(),
        task_id: task.to_string(),
        address: host(app, slot),
        port,
        tags: vec!["switchboard".into()],
        consul: true,
        checks: vec![],
        healthy: Some(true),
        has_health_checks: false,
        routes: Routes { kong_hosts: vec![format!("s{app}.example.com")], ..Routes::default() },
        host: host(app, slot),
    }
}

impl World {
    fn event(&mut self, touches: &[Touch], app: usize) {
        self.clock += 1;
        let seq = self.store.next_seq().expect("seq");
        self.store.raise_high_water(Timestamp(self.clock)).expect("high water");
        self.store.apply_touches(touches, seq).expect("touches");
        self.store.set_pending_of(&[app_id(app)], &[], 1).expect("pending");
    }

    fn task(&mut self, app: usize, slot: usize, launch: usize, state: TaskState) {
        let facts = TaskFacts {
            task_id: task_id(app, slot, launch),
            app_id: app_id(app),
            host: host(app, slot),
            ports: vec![31_000 + (launch % 1000) as u16],
            ip_addresses: vec![],
            state,
            version: "2026-12-01T10:00:00.000Z".into(),
            at: Timestamp(self.clock + 1),
        };
        let mut rec = InstanceRecord::from_task(&facts);
        if state == TaskState::Running {
            rec.health = Some(HealthFact { healthy: Some(true), at: Timestamp(self.clock + 1) });
        }
        self.event(&[Touch::Instance(rec)], app);
    }

    fn apply(&self, ops: &[Op]) {
        for b in BACKENDS {
            self.store.enqueue(b, ops).expect("enqueue");
            self.store.complete_many(b, ops).expect("complete");
        }
    }

    fn start(&mut self, app: usize, slot: usize, launch: usize) {
        self.task(app, slot, launch, TaskState::Staging);
        self.task(app, slot, launch, TaskState::Running);
        self.apply(&[Op::Register(registration(app, slot, launch))]);
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let instances: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let restarts: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1_000);
    let tmp = tempfile::tempdir().expect("tempdir");
    let cache_bytes = args.next().and_then(|a| a.parse().ok()).unwrap_or(StoreOptions::DEFAULT_CACHE_BYTES);
    let store = Store::open_with(tmp.path(), &StoreOptions { cache_bytes }).expect("open");
    let mut world = World { store, clock: 1_000 };
    let apps = instances.div_ceil(PER_APP);

    let started = std::time::Instant::now();
    let (w0, c0, s0) = (io("write_bytes"), io("wchar"), io("syscw"));
    for app in 0..apps {
        world.event(&[Touch::Spec(spec(app))], app);
        for slot in 0..PER_APP {
            world.start(app, slot, 0);
        }
        world.store.flush_blocking().expect("flush");
    }
    world.store.flush_blocking().expect("flush");
    let (w1, c1, s1) = (io("write_bytes"), io("wchar"), io("syscw"));
    let fold_s = started.elapsed().as_secs_f64();
    let disk_after_fold = dir_size(tmp.path());

    let mut generation = vec![0usize; apps * PER_APP];
    for r in 0..restarts {
        let n = (r * 7919) % (apps * PER_APP);
        let (app, slot) = (n / PER_APP, n % PER_APP);
        let launch = generation[n];
        world.task(app, slot, launch, TaskState::Killed);
        world.apply(&[Op::Deregister { registration: registration(app, slot, launch), service_empty: false }]);
        generation[n] = launch + 1;
        world.start(app, slot, launch + 1);
        world.store.flush_blocking().expect("flush");
    }
    world.store.flush_blocking().expect("flush");
    let (w2, c2, s2) = (io("write_bytes"), io("wchar"), io("syscw"));
    let disk_after_churn = dir_size(tmp.path());
    // What a gauge update costs: one backend's ledger size, first taken by
    // a scan of its keys, then kept by every write.
    let counted = std::time::Instant::now();
    let held = world.store.ledger_len("consul");
    let first_ledger_len_us = counted.elapsed().as_micros();
    let counted = std::time::Instant::now();
    let _ = world.store.ledger_len("consul");
    let ledger_len_us = counted.elapsed().as_micros();
    let read = std::time::Instant::now();
    let one_app = world.store.ledger_of("consul", app_id(0).as_str()).expect("ledger of").len();
    let ledger_of_us = read.elapsed().as_micros();
    let footprint = world.store.footprint().expect("footprint");
    let live: u64 = footprint.iter().map(|f| f.key_bytes + f.value_bytes).sum();
    let per = |a: u64, n: usize| if n == 0 { 0 } else { a / n as u64 };
    println!(
        "{}",
        serde_json::json!({
            "instances": instances,
            "cache_bytes": cache_bytes,
            "restarts": restarts,
            "disk_per_instance_after_fold": per(disk_after_fold, instances),
            "disk_per_instance_after_churn": per(disk_after_churn, instances),
            "live_bytes_per_instance": per(live, instances),
            "ledger_len": held,
            "first_ledger_len_us": first_ledger_len_us,
            "ledger_len_us": ledger_len_us,
            "ledger_of_one_app": one_app,
            "ledger_of_one_app_us": ledger_of_us,
            "footprint": footprint,
            "fold_write_bytes_per_instance": per(w1 - w0, instances),
            "fold_wchar_per_instance": per(c1 - c0, instances),
            "churn_write_bytes_per_restart": per(w2 - w1, restarts),
            "churn_wchar_per_restart": per(c2 - c1, restarts),
            "fold_writes_per_instance": (s1 - s0) as f64 / instances as f64,
            "churn_writes_per_restart": (s2 - s1) as f64 / restarts.max(1) as f64,
            "total_write_bytes": w2 - w0,
            "total_wchar": c2 - c0,
            "rss_kib": status_kib("VmRSS"),
            "peak_rss_kib": status_kib("VmHWM"),
            "fold_seconds": fold_s,
            "total_seconds": started.elapsed().as_secs_f64(),
        })
    );
}
