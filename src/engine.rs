//! The reconcile engine: the I/O shell around `assemble` and `plan`, shared by
//! the daemon and `reconcile --once`.
//!
//! Invariants:
//! - Events are hints: every pass reads current facts from the store, never
//!   from an event payload.
//! - Planning against the ledger uses the *expected* state (ledger with queued
//!   ops applied on top), so a queued repair is never cancelled and a queued
//!   deregistration is replaced when the instance comes back.
//! - Ops reach a backend only through the durable queue; an op leaves the
//!   queue in the same transaction that records it in the ledger.
//! - In the daemon, the methods that write a backend's queue or ledger
//!   (`plan_backend`, `observe`, `drain`) are called by that backend's
//!   applier only (`crate::applier`); `reconcile --once` calls them from its
//!   one task.
//! - A backend that fails does not hold up the others: each has its own queue,
//!   worker and backoff.
//! - Apps whose labels cannot be honoured keep what they already have
//!   registered (nothing is half-changed); every other app carries on.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use tracing::{debug, info, warn};

use crate::assemble::{self, Desired};
use crate::backends::{Backend, BackendError, Claim};
use crate::labels::{LabelOptions, StaticService};
use crate::marathon::client::MarathonClient;
use crate::metrics::Metrics;
use crate::model::{AppId, Registration, Timestamp};
use crate::plan::plan;
use crate::plan::{Op, Refusal, Rejection, Selection};
use crate::store::{QueuedOp, SnapshotApp, Store};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Marathon(#[from] crate::marathon::client::Error),
}

/// Local wall-clock milliseconds (for retry schedules and pending ages only;
/// folding never reads a clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Everything desired right now, and what each backend makes of it.
#[derive(Debug, Clone, Default)]
pub struct DesiredState {
    /// Which computation this was: a larger epoch ran later, so it read
    /// every fact a smaller one read.
    pub epoch: u64,
    pub desired: Desired,
    /// Per backend name: what it should hold and what it refused.
    pub selections: BTreeMap<&'static str, Selection>,
    /// Task ids of live instances of apps with label errors: what they have
    /// registered is kept as it is.
    pub held_tasks: BTreeSet<String>,
}

/// What one resync did.
#[derive(Debug, Default)]
pub struct ResyncReport {
    /// Ops queued, by backend.
    pub ops: BTreeMap<&'static str, Vec<Op>>,
    /// Backends that could not be listed, with the error.
    pub failed: Vec<(&'static str, String)>,
}

/// Outcome of draining one backend's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Nothing due is left.
    Idle { next_due_ms: Option<u64> },
    /// A transient failure: the backend is likely down; try again then.
    Backoff { until_ms: u64 },
}

#[derive(Clone)]
pub struct Engine {
    pub store: Store,
    pub marathon: MarathonClient,
    pub backends: Vec<Arc<dyn Backend>>,
    pub opts: LabelOptions,
    pub statics: Vec<StaticService>,
    pub metrics: Metrics,
    /// Apps whose spec fetch is in flight, so concurrent waiters share one.
    inflight: Arc<Mutex<BTreeMap<AppId, Instant>>>,
    /// Numbers the computations of `desired()` in the order they run; the
    /// lock makes them run one at a time, so a later one read every fact an
    /// earlier one did and writes the pending set and rejections after it.
    /// A std Mutex: `desired()` does not await.
    epochs: Arc<Mutex<u64>>,
    /// Ops in flight at once per backend name (`--<backend>-concurrency`);
    /// a backend not named runs one at a time.
    concurrency: Arc<BTreeMap<&'static str, usize>>,
    /// Per backend and lane: no op of the lane is tried before this local
    /// wall-clock millisecond (a transient failure backs off its lane).
    lanes: Arc<Mutex<LaneBackoff>>,
}

/// Per (backend, lane): the local wall-clock millisecond before which no op
/// of the lane is tried.
type LaneBackoff = HashMap<(&'static str, Option<String>), u64>;

/// What one app calls for: its desired registrations (all backends), the
/// instances still pending, its label errors, and the tasks whose
/// registrations stay as they are because its labels cannot be honoured.
#[derive(Debug, Default)]
pub struct AppDesired {
    pub desired: Desired,
    pub held_tasks: BTreeSet<String>,
}

/// What every app wants on one backend, by service: a deregistration
/// empties its service only if no other app wants the service there.
pub type ServiceIndex = crate::planner::KeyIndex;

/// What observing one backend queued, and the epoch of the desired state
/// it planned with.
#[derive(Debug)]
pub struct Observed {
    pub ops: Vec<Op>,
    pub epoch: u64,
}

/// The writes one backend's applier made while listings were in flight: a
/// listing tells from it which registrations it may show stale.
#[derive(Clone, Default)]
pub struct AppliedLog {
    /// A std Mutex: held for a map update, never across `.await`.
    inner: Arc<Mutex<WriteLog>>,
}

#[derive(Default)]
struct WriteLog {
    /// Writes so far.
    writes: u64,
    /// Listings started and not finished.
    listings: usize,
    /// The number of the last write per registration id, kept only while a
    /// listing is in flight (so the log stays as small as one resync's writes).
    ids: BTreeMap<String, u64>,
}

impl AppliedLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriteLog> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a listing: call before it is requested; pass the mark to `finish`.
    pub fn start(&self) -> u64 {
        let mut log = self.lock();
        log.listings += 1;
        log.writes
    }

    /// Records a write of registration `id` that has landed (or may have).
    fn record(&self, id: &str) {
        let mut log = self.lock();
        log.writes += 1;
        if log.listings > 0 {
            let n = log.writes;
            log.ids.insert(id.to_owned(), n);
        }
    }

    /// Ends the listing started at `mark`: the registration ids written since.
    pub fn finish(&self, mark: u64) -> BTreeSet<String> {
        let mut log = self.lock();
        let written = log.ids.iter().filter(|(_, n)| **n > mark).map(|(id, _)| id.clone()).collect();
        log.listings = log.listings.saturating_sub(1);
        if log.listings == 0 {
            log.ids.clear();
        }
        written
    }
}

/// `ledger` with `queued` ops applied on top (what the backend holds once
/// they drain), and the queued ops by key.
fn with_queued(ledger: Vec<Registration>, queued: Vec<QueuedOp>) -> (Vec<Registration>, BTreeMap<String, Op>) {
    let mut by_id: BTreeMap<String, Registration> = ledger.into_iter().map(|r| (r.id.clone(), r)).collect();
    let mut ops = BTreeMap::new();
    for q in queued {
        match &q.op {
            Op::Register(r) => {
                by_id.insert(r.id.clone(), r.clone());
            }
            Op::Deregister { registration, .. } => {
                by_id.remove(&registration.id);
            }
        }
        ops.insert(q.op.key().to_owned(), q.op);
    }
    (by_id.into_values().collect(), ops)
}

/// Apps whose labels cannot be honoured, as rejections.
pub fn label_rejections(desired: &Desired) -> Vec<Rejection> {
    desired
        .errors
        .values()
        .map(|e| Rejection {
            backend: "labels".into(),
            app_id: e.app_id.clone(),
            label: e.label.clone(),
            reason: e.reason.clone(),
        })
        .collect()
}

/// Ownership known during one drain, shared by the apps applied at once.
struct Claims {
    /// Services whose names are ours by the ledger or a recorded intent, as
    /// found so far.
    owned: Mutex<BTreeSet<String>>,
    /// Services with a recorded intent.
    intents: Mutex<BTreeSet<String>>,
    /// Services whose claim failed this drain: (transient, message).
    failed: Mutex<HashMap<String, (bool, String)>>,
}

/// A std Mutex held for a set update, never across `.await`.
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Capped exponential backoff with jitter for the `attempt`-th retry (1-based).
pub fn backoff(attempt: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(30))
}

impl Engine {
    pub fn new(
        store: Store,
        marathon: MarathonClient,
        backends: Vec<Arc<dyn Backend>>,
        opts: LabelOptions,
        statics: Vec<StaticService>,
        metrics: Metrics,
    ) -> Engine {
        Engine {
            store,
            marathon,
            backends,
            opts,
            statics,
            metrics,
            inflight: Arc::default(),
            epochs: Arc::default(),
            concurrency: Arc::default(),
            lanes: Arc::default(),
        }
    }

    /// Sets how many ops run at once per backend name.
    pub fn with_concurrency(mut self, limits: BTreeMap<&'static str, usize>) -> Engine {
        self.concurrency = Arc::new(limits);
        self
    }

    /// Ops in flight at once on `backend`.
    pub fn concurrency(&self, backend: &str) -> usize {
        self.concurrency.get(backend).copied().unwrap_or(1).max(1)
    }

    /// Starts a computation of what is desired: its epoch, and a guard that
    /// makes computations run one at a time, so a later epoch read every
    /// fact an earlier one read. Hold the guard until the computation's
    /// writes (pending set, rejections) are done.
    pub fn begin_epoch(&self) -> (std::sync::MutexGuard<'_, u64>, u64) {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        *epochs += 1;
        let epoch = *epochs;
        (epochs, epoch)
    }

    /// Every app the store, a static service or a backend's ledger or queue
    /// knows of (as in `Registration::app_id`).
    pub fn known_apps(&self) -> Result<BTreeSet<String>, EngineError> {
        let mut apps: BTreeSet<String> = self.store.app_ids()?.into_iter().map(|a| a.as_str().to_owned()).collect();
        for svc in &self.statics {
            if let Ok(id) = AppId::parse(&svc.name) {
                apps.insert(id.as_str().to_owned());
            }
        }
        for b in &self.backends {
            apps.extend(self.store.planned_apps(b.name())?);
        }
        Ok(apps)
    }

    /// What one app calls for now, from the store's facts (and the static
    /// services of that name). Reads only that app's records.
    pub fn desired_of(&self, app: &str) -> Result<AppDesired, EngineError> {
        let mut out = AppDesired::default();
        if let Ok(id) = AppId::parse(app) {
            let instances = self.store.instances_of(&id)?;
            let apps: BTreeMap<AppId, assemble::AppRecord> =
                self.store.app(&id)?.map(|r| (id.clone(), r)).into_iter().collect();
            let specs: BTreeMap<AppId, crate::model::AppSpec> =
                self.store.newest_spec(&id)?.map(|s| (id.clone(), s)).into_iter().collect();
            out.desired = assemble::desired(&instances, &apps, &specs, &self.opts);
            if out.desired.errors.contains_key(&id) {
                for rec in &instances {
                    if assemble::status(rec, apps.get(&id), specs.get(&id)) == assemble::Status::Ready
                        && let Some(loc) = &rec.location
                    {
                        out.held_tasks.insert(loc.task_id.to_string());
                    }
                }
            }
        }
        for svc in &self.statics {
            if let Ok(regs) = crate::labels::static_registrations(svc, &self.opts)
                && regs.first().is_some_and(|r| r.app_id == app)
            {
                out.desired.registrations.extend(regs);
            }
        }
        out.desired.registrations.sort();
        out.desired.registrations.dedup_by(|a, b| a.id == b.id);
        Ok(out)
    }

    /// The registrations one app holds on `backend` once its queue drains
    /// (ledger with queued ops on top), and its queued ops by key.
    fn expected_of(&self, backend: &str, app: &str) -> Result<(Vec<Registration>, BTreeMap<String, Op>), EngineError> {
        Ok(with_queued(self.store.ledger_of(backend, app)?, self.store.queued_of(backend, app)?))
    }

    /// Plans the apps of `wants` on `b` against its ledger, each app on its
    /// own, and queues the ops in one batch. Only the backend's applier calls
    /// this. `services` follows what every app wants on `b`, so a
    /// deregistration empties its service only when no other app wants it.
    pub fn plan_apps(
        &self,
        b: &Arc<dyn Backend>,
        wants: &[crate::planner::AppWant],
        services: &mut ServiceIndex,
    ) -> Result<Vec<Op>, EngineError> {
        let name = b.name();
        let mut planned = Vec::with_capacity(wants.len());
        for w in wants {
            let (expected, queued) = self.expected_of(name, &w.app)?;
            let mut want = w.keep.clone();
            let ids: BTreeSet<String> = want.iter().map(|r| r.id.clone()).collect();
            want.extend(expected.iter().filter(|r| w.held_tasks.contains(&r.task_id) && !ids.contains(&r.id)).cloned());
            services.set(&w.app, want.iter().map(|r| r.service.clone()).collect());
            planned.push((w, want, expected, queued));
        }
        let refusals = self.store.refusals(name)?;
        let mut fresh = Vec::new();
        let mut lifted = Vec::new();
        for (w, want, expected, queued) in planned {
            let mut ops = plan(&want, &expected, |d, o| d == o);
            for op in &mut ops {
                if let Op::Deregister { registration, service_empty } = op
                    && *service_empty
                    && services.shared(&w.app, &registration.service)
                {
                    *service_empty = false;
                }
            }
            let mine: Vec<Refusal> = refusals.iter().filter(|r| r.app_id == w.app).cloned().collect();
            let (ops, lift) = crate::plan::hold_refused(ops, &mine);
            lifted.extend(lift);
            fresh.extend(ops.into_iter().filter(|op| queued.get(op.key()) != Some(op)));
        }
        if !lifted.is_empty() {
            self.store.lift_refusals(name, &lifted)?;
            self.metrics.refusals.with_label_values(&[name]).set(self.store.refusals(name)?.len() as i64);
            info!(backend = name, entities = ?lifted, "refusals lifted: their input changed or is no longer wanted");
        }
        self.store.enqueue(name, &fresh)?;
        self.metrics.queue_depth.with_label_values(&[name]).set(self.store.queue_len(name) as i64);
        if !fresh.is_empty() {
            debug!(backend = name, apps = wants.len(), ops = fresh.len(), "queued");
        }
        Ok(fresh)
    }

    /// Desired registrations from the store plus static services, selected per
    /// backend. Also refreshes the pending tree and the rejection record.
    pub fn desired(&self) -> Result<DesiredState, EngineError> {
        let mut epochs = self.epochs.lock().unwrap_or_else(|p| p.into_inner());
        *epochs += 1;
        let epoch = *epochs;
        let instances = self.store.instances()?;
        let apps = self.store.apps()?;
        let specs = self.store.newest_specs()?;
        let mut desired = assemble::desired(&instances, &apps, &specs, &self.opts);
        for svc in &self.statics {
            if let Ok(regs) = crate::labels::static_registrations(svc, &self.opts) {
                desired.registrations.extend(regs);
            }
        }
        desired.registrations.sort();
        desired.registrations.dedup_by(|a, b| a.id == b.id);

        let mut held_tasks = BTreeSet::new();
        for rec in &instances {
            if desired.errors.contains_key(&rec.app_id)
                && assemble::status(rec, apps.get(&rec.app_id), specs.get(&rec.app_id)) == assemble::Status::Ready
                && let Some(loc) = &rec.location
            {
                held_tasks.insert(loc.task_id.to_string());
            }
        }

        let mut selections = BTreeMap::new();
        let mut rejections = label_rejections(&desired);
        for b in &self.backends {
            let sel = b.select(&desired.registrations);
            self.metrics.rejections.with_label_values(&[b.name()]).set(sel.rejected.len() as i64);
            rejections.extend(sel.rejected.iter().cloned());
            selections.insert(b.name(), sel);
        }
        self.metrics.rejections.with_label_values(&["labels"]).set(desired.errors.len() as i64);
        self.store.set_rejections(&rejections)?;
        self.store.set_pending(&desired.pending, now_ms())?;
        for (lack, label) in [(assemble::Lack::Spec, "spec"), (assemble::Lack::TaskFacts, "task_facts")] {
            let n = desired.pending.iter().filter(|p| p.2 == lack).count();
            self.metrics.pending.with_label_values(&[label]).set(n as i64);
        }
        Ok(DesiredState { epoch, desired, selections, held_tasks })
    }

    /// What a backend should hold: its selection, plus what apps with label
    /// errors already have there (held as it is).
    fn wanted(&self, state: &DesiredState, backend: &str, present: &[Registration]) -> Vec<Registration> {
        let mut want = state.selections.get(backend).map(|s| s.keep.clone()).unwrap_or_default();
        let ids: BTreeSet<String> = want.iter().map(|r| r.id.clone()).collect();
        want.extend(present.iter().filter(|r| state.held_tasks.contains(&r.task_id) && !ids.contains(&r.id)).cloned());
        want
    }

    /// The ledger with queued ops applied on top: what each backend will hold
    /// once its queue drains.
    fn expected(&self, backend: &str) -> Result<(Vec<Registration>, BTreeMap<String, Op>), EngineError> {
        Ok(with_queued(self.store.ledger(backend)?, self.store.queued(backend)?))
    }

    /// Queues the planned ops that are not queued already, except those a
    /// backend refused before with the very same input; refusals the plan no
    /// longer calls for are lifted.
    fn enqueue_new(&self, backend: &str, ops: Vec<Op>, queued: &BTreeMap<String, Op>) -> Result<Vec<Op>, EngineError> {
        let (ops, lifted) = crate::plan::hold_refused(ops, &self.store.refusals(backend)?);
        if !lifted.is_empty() {
            self.store.lift_refusals(backend, &lifted)?;
            self.metrics.refusals.with_label_values(&[backend]).set(self.store.refusals(backend)?.len() as i64);
            info!(backend, entities = ?lifted, "refusals lifted: their input changed or is no longer wanted");
        }
        let fresh: Vec<Op> = ops.into_iter().filter(|op| queued.get(op.key()) != Some(op)).collect();
        self.store.enqueue(backend, &fresh)?;
        self.metrics.queue_depth.with_label_values(&[backend]).set(self.store.queue_len(backend) as i64);
        Ok(fresh)
    }

    /// One planning pass of `b` against its ledger (no backend reads), with
    /// `state` computed by `desired()`. Returns the ops newly queued. Only the
    /// backend's applier calls this: it is the one writer of its queue.
    pub fn plan_backend(&self, b: &Arc<dyn Backend>, state: &DesiredState) -> Result<Vec<Op>, EngineError> {
        let (expected, queued) = self.expected(b.name())?;
        let want = self.wanted(state, b.name(), &expected);
        let ops = plan(&want, &expected, |d, o| d == o);
        let fresh = self.enqueue_new(b.name(), ops, &queued)?;
        if !fresh.is_empty() {
            debug!(backend = b.name(), ops = fresh.len(), "queued");
        }
        Ok(fresh)
    }

    /// Marathon's snapshot into the store (the first half of a resync; each
    /// backend is then `observe`d).
    pub async fn refresh_from_marathon(&self) -> Result<(), EngineError> {
        let seq_at_request = self.store.next_seq()?;
        let as_of = Timestamp(self.store.high_water()?.0 + 1);
        let snapshot = match self.marathon.snapshot().await {
            Ok(s) => s,
            Err(e) => {
                self.metrics.resyncs.with_label_values(&["marathon_error"]).inc();
                return Err(e.into());
            }
        };
        let apps: Vec<SnapshotApp> = snapshot
            .apps
            .iter()
            .map(|a| SnapshotApp {
                spec: a.spec.clone(),
                tasks: a.tasks.iter().map(|t| (t.facts.clone(), t.healthy)).collect(),
            })
            .collect();
        let broken: BTreeSet<String> = snapshot.broken.iter().map(|(id, _)| id.clone()).collect();
        for (id, err) in &snapshot.broken {
            warn!(app_id = %id, error = %err, "app definition unreadable; its registrations are left as they are");
        }
        self.store.apply_snapshot(&apps, &broken, as_of, seq_at_request)?;
        Ok(())
    }

    /// A full resync, one backend after the other (for `reconcile --once`;
    /// the daemon asks each backend's applier to `observe` instead).
    pub async fn resync(&self) -> Result<ResyncReport, EngineError> {
        self.refresh_from_marathon().await?;
        // Against the ledger first, so a backend that cannot be listed still
        // gets what the snapshot calls for.
        let state = self.desired()?;
        for b in &self.backends {
            self.plan_backend(b, &state)?;
        }
        let mut report = ResyncReport::default();
        for b in &self.backends {
            match self.observe(b).await? {
                Ok(observed) => {
                    report.ops.insert(b.name(), observed.ops);
                }
                Err(e) => report.failed.push((b.name(), e.to_string())),
            }
        }
        self.finish_resync(&report)?;
        Ok(report)
    }

    /// Records a finished resync: its time and its result metric.
    pub fn finish_resync(&self, report: &ResyncReport) -> Result<(), EngineError> {
        self.store.set_last_resync(&Timestamp::now().to_string())?;
        let result = if report.failed.is_empty() { "ok" } else { "backend_error" };
        self.metrics.resyncs.with_label_values(&[result]).inc();
        Ok(())
    }

    /// Lists what `b` holds of ours and merges the listing at once (for
    /// `reconcile --once`, where nothing else runs meanwhile).
    pub async fn observe(&self, b: &Arc<dyn Backend>) -> Result<Result<Observed, BackendError>, EngineError> {
        let ledger = self.store.ledger(b.name())?;
        match b.list_owned(&ledger).await {
            Ok(observed) => Ok(Ok(self.merge_listing(b, &observed, &BTreeSet::new())?)),
            Err(e) => {
                warn!(backend = b.name(), error = %e, "cannot list owned entries; will retry");
                Ok(Err(e))
            }
        }
    }

    /// Merges a listing of `b` (what it holds of ours) and queues the
    /// repairs. What is desired is read now, after the listing came back, so
    /// facts that changed while it was in flight are planned with. `stale`
    /// names the registrations an op was applied to while the listing was in
    /// flight: the listing may not show that op, so for those the ledger
    /// stands for the backend, never the listing. (Per registration rather
    /// than per app, so that a busy app's drift is still repaired.)
    ///
    /// Only the backend's applier calls this (or `reconcile --once`).
    pub fn merge_listing(
        &self,
        b: &Arc<dyn Backend>,
        listing: &[Registration],
        stale: &BTreeSet<String>,
    ) -> Result<Observed, EngineError> {
        let name = b.name();
        let state = self.desired()?;
        let (expected, _) = self.expected(name)?;
        let fresh = |r: &Registration| !stale.contains(&r.id);
        // What the backend holds: the listing where it is fresh, the ledger
        // (with queued ops on top) for the rest.
        let observed: Vec<Registration> =
            listing.iter().filter(|r| fresh(r)).chain(expected.iter().filter(|r| !fresh(r))).cloned().collect();
        let want = self.wanted(&state, name, &observed);
        let ops = plan(&want, &observed, |d, o| if fresh(o) { b.same(d, o) } else { d == o });
        // Fresh ledger entries that are neither present nor wanted
        // were removed by someone else: forget them.
        let observed_ids: BTreeSet<&str> = observed.iter().map(|r| r.id.as_str()).collect();
        let want_ids: BTreeSet<&str> = want.iter().map(|r| r.id.as_str()).collect();
        let gone: Vec<String> = self
            .store
            .ledger(name)?
            .iter()
            .filter(|r| fresh(r) && !observed_ids.contains(r.id.as_str()) && !want_ids.contains(r.id.as_str()))
            .map(|r| r.id.clone())
            .collect();
        self.store.forget(name, &gone)?;
        let fresh_want: Vec<Registration> = want.iter().filter(|r| fresh(r)).cloned().collect();
        let fresh_listing: Vec<Registration> = listing.iter().filter(|r| fresh(r)).cloned().collect();
        self.absorb(b, &fresh_want, &fresh_listing, stale)?;
        // Queued ops as they are after absorbing (some were settled).
        let (_, queued) = self.expected(name)?;
        let queued_now = self.enqueue_new(name, ops, &queued)?;
        if !queued_now.is_empty() {
            info!(backend = name, ops = queued_now.len(), stale = stale.len(), "resync queued repairs");
        }
        Ok(Observed { ops: queued_now, epoch: state.epoch })
    }

    /// What a backend already holds needs no write: wanted entries it shows
    /// in step go into the ledger (it may have been lost, say with the data
    /// dir), and queued ops that would only repeat what is there are settled.
    fn absorb(
        &self,
        b: &Arc<dyn Backend>,
        want: &[Registration],
        observed: &[Registration],
        stale: &BTreeSet<String>,
    ) -> Result<(), EngineError> {
        let name = b.name();
        let observed: BTreeMap<&str, &Registration> = observed.iter().map(|r| (r.id.as_str(), r)).collect();
        let ledger: BTreeMap<String, Registration> =
            self.store.ledger(name)?.into_iter().map(|r| (r.id.clone(), r)).collect();
        let in_place: Vec<Registration> = want
            .iter()
            .filter(|w| observed.get(w.id.as_str()).is_some_and(|o| b.same(w, o)) && ledger.get(&w.id) != Some(*w))
            .cloned()
            .collect();
        self.store.import_ledger(name, &in_place)?;
        for q in self.store.queued(name)? {
            if stale.contains(q.op.key()) {
                continue;
            }
            let settled = match &q.op {
                Op::Register(r) => observed.get(r.id.as_str()).is_some_and(|o| b.same(r, o)),
                // With `service_empty` app-level objects may remain without the
                // instance: let the op run so they go too.
                Op::Deregister { registration, service_empty } => {
                    !service_empty && !observed.contains_key(registration.id.as_str())
                }
            };
            if settled {
                self.store.complete(name, &q.op)?;
            }
        }
        Ok(())
    }

    /// Applies the due ops of one backend: every deregistration first
    /// (traffic drains before anything new appears), then the registrations.
    /// Within each phase the ops of different apps run concurrently, up to the
    /// backend's `concurrency`; the ops of one app run one after the other, in
    /// key order, and the ledger takes each app's completed ops in one
    /// transaction. A transient failure backs off its lane (`Backend::lane`;
    /// by default the whole backend): the rest of that lane waits, other lanes
    /// go on. Every write is recorded in `log` once the ledger holds it.
    pub async fn drain(&self, b: &Arc<dyn Backend>, log: &AppliedLog) -> Result<Drain, EngineError> {
        use futures::StreamExt;

        let name = b.name();
        let now = now_ms();
        let mut next_due: Option<u64> = None;
        let mut due = |at: u64| next_due = Some(next_due.map_or(at, |n: u64| n.min(at)));
        // Phase 0: deregistrations, phase 1: registrations; by app within.
        let mut phases: [BTreeMap<String, Vec<QueuedOp>>; 2] = Default::default();
        let lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner()).clone();
        for q in self.store.queued(name)? {
            let lane = b.lane(q.op.registration());
            let not_before = q.not_before_ms.max(lanes.get(&(name, lane)).copied().unwrap_or(0));
            if not_before > now {
                due(not_before);
                continue;
            }
            let phase = usize::from(matches!(q.op, Op::Register(_)));
            phases[phase].entry(q.op.registration().app_id.clone()).or_default().push(q);
        }
        if phases.iter().all(BTreeMap::is_empty) {
            self.update_gauges(name)?;
            return Ok(Drain::Idle { next_due_ms: next_due });
        }
        // Services whose names are ours by a recorded intent (the ledger is
        // asked per app in `claim`: reading all of it would cost a copy of
        // the whole ledger per drain).
        let intents = self.store.intents(name)?;
        let mut owned = intents.clone();
        // What the ledger holds of the apps drained now, read before any of
        // their ops runs: a deregistration in the first phase must not make
        // the service look someone else's to the registration after it.
        for app in phases.iter().flat_map(BTreeMap::keys) {
            owned.extend(self.store.ledger_of(name, app)?.into_iter().map(|r| r.service));
        }
        let claims = Claims { owned: Mutex::new(owned), intents: Mutex::new(intents), failed: Mutex::default() };
        let limit = self.concurrency(name);
        self.claim_first_writes(b, phases[1].values().flatten(), &claims, limit).await?;
        // Lanes that failed during this drain: their remaining ops wait.
        let failed: Mutex<BTreeSet<Option<String>>> = Mutex::default();
        let mut refused = false;
        let mut kept_services = false;
        let mut backoff_until: Option<u64> = None;
        for phase in phases {
            let groups = phase.into_values().map(|ops| self.apply_group(b, ops, &claims, &failed));
            let mut results = futures::stream::iter(groups).buffer_unordered(limit);
            while let Some(outcomes) = results.next().await {
                let outcomes = outcomes?;
                let done: Vec<Op> =
                    outcomes.iter().filter(|(_, r)| matches!(r, Ok(()))).map(|(q, _)| q.op.clone()).collect();
                self.store.complete_many(name, &done)?;
                // Recorded once the ledger holds them: a listing that read
                // the ledger before this point (a backend without tags lists
                // what its ledger names) may miss these writes, and so must
                // take them as stale.
                for (q, _) in &outcomes {
                    log.record(q.op.key());
                }
                for (q, result) in outcomes {
                    let reg = q.op.registration();
                    match result {
                        Ok(()) => {
                            if matches!(q.op, Op::Register(_)) && lock(&claims.intents).remove(&reg.service) {
                                // The ledger holds the service now.
                                self.store.drop_intent(name, &reg.service)?;
                            }
                            if let Op::Deregister { service_empty: false, .. } = q.op
                                && !self.store.ledger_holds_service(name, &reg.service)?
                                && lock(&claims.intents).insert(reg.service.clone())
                            {
                                // The service's own objects stay (another
                                // instance is on its way): the ledger no longer
                                // says they are ours, so an intent does.
                                self.store.intend(name, &reg.service)?;
                                kept_services = true;
                            }
                            if let Op::Deregister { service_empty: true, .. } = q.op
                                && lock(&claims.intents).remove(&reg.service)
                            {
                                self.store.drop_intent(name, &reg.service)?;
                            }
                            self.metrics.ops.with_label_values(&[name, q.op.verb(), "ok"]).inc();
                            self.metrics.applied(name, &q.op); // metrics hook: TASK_RUNNING → 2xx latency
                            info!(backend = name, op = q.op.verb(), app_id = %reg.app_id, task_id = %reg.task_id, service = %reg.service, id = %reg.id, "applied");
                        }
                        Err(e) if e.is_transient() => {
                            let delay = backoff(q.attempts + 1);
                            let until_ms = now_ms() + delay.as_millis() as u64;
                            let attempts = self.store.retry_later(name, &q.op, until_ms, &e.to_string())?;
                            let lane = b.lane(reg);
                            self.lanes.lock().unwrap_or_else(|p| p.into_inner()).insert((name, lane.clone()), until_ms);
                            backoff_until = Some(backoff_until.map_or(until_ms, |u| u.min(until_ms)));
                            self.metrics.ops.with_label_values(&[name, q.op.verb(), "retry"]).inc();
                            warn!(backend = name, lane = lane.as_deref().unwrap_or("all"), op = q.op.verb(), app_id = %reg.app_id, task_id = %reg.task_id, id = %reg.id, attempts, error = %e, retry_in = ?delay, "backend unavailable");
                        }
                        Err(e) => {
                            refused |= self.record_refusal(name, &q.op, &e)?;
                        }
                    }
                }
            }
        }
        if refused || kept_services {
            // A restart must not try a refusal again either, nor take the
            // objects of a service it keeps for someone else's.
            self.store.flush().await?;
        }
        self.update_gauges(name)?;
        Ok(match backoff_until {
            Some(until_ms) => Drain::Backoff { until_ms: next_due.map_or(until_ms, |n| n.min(until_ms)) },
            // What failed lanes left, and what is due again at once.
            None if self.store.queue_len(name) > 0 => Drain::Idle { next_due_ms: Some(next_due.unwrap_or(now)) },
            None => Drain::Idle { next_due_ms: next_due },
        })
    }

    /// Applies one app's due ops in order; after a transient failure in a
    /// lane, skips the rest of that lane (and ops whose lane failed meanwhile
    /// in another app).
    async fn apply_group(
        &self,
        b: &Arc<dyn Backend>,
        ops: Vec<QueuedOp>,
        claims: &Claims,
        failed: &Mutex<BTreeSet<Option<String>>>,
    ) -> Result<Vec<(QueuedOp, Result<(), BackendError>)>, EngineError> {
        let name = b.name();
        let mut out = Vec::with_capacity(ops.len());
        for q in ops {
            let lane = b.lane(q.op.registration());
            if lock(failed).contains(&lane) {
                continue;
            }
            let started = Instant::now();
            let result = match self.claim(b, &q.op, claims).await? {
                Ok(()) => tracing::Instrument::instrument(b.apply(&q.op), crate::metrics::op_span(name, &q.op)).await, // metrics hook: app_id, task_id on backend lines
                Err(e) => Err(e),
            };
            self.metrics.op_seconds.with_label_values(&[name, q.op.verb()]).observe(started.elapsed().as_secs_f64());
            if result.as_ref().is_err_and(BackendError::is_transient) {
                // The rest of this lane waits (the check above); the app's
                // ops in other lanes (another host's agent) go on.
                lock(failed).insert(lane);
            }
            out.push((q, result));
        }
        Ok(out)
    }

    /// Before the first write of a service whose names neither the ledger
    /// nor a recorded intent make ours: refuses if someone else holds them;
    /// on a backend whose ledger is the only ownership record, records the
    /// intent durably first, so a retry after a kill -9 knows the names it
    /// finds as its own.
    async fn claim(
        &self,
        b: &Arc<dyn Backend>,
        op: &Op,
        claims: &Claims,
    ) -> Result<Result<(), BackendError>, EngineError> {
        let Op::Register(reg) = op else { return Ok(Ok(())) };
        if lock(&claims.owned).contains(&reg.service) {
            return Ok(Ok(()));
        }
        if let Some((transient, message)) = lock(&claims.failed).get(&reg.service).cloned() {
            let what = format!("register {} (service {} of app {})", reg.id, reg.service, reg.app_id);
            let backend = b.name();
            return Ok(Err(if transient {
                BackendError::Transient { backend, what, message }
            } else {
                BackendError::Permanent { backend, what, message }
            }));
        }
        if self.store.ledger_of(b.name(), &reg.app_id)?.iter().any(|r| r.service == reg.service)
            || self.store.ledger_holds_service(b.name(), &reg.service)?
        {
            lock(&claims.owned).insert(reg.service.clone());
            return Ok(Ok(()));
        }
        match b.claim(reg).await {
            Ok(Claim::Tagged) => Ok(Ok(())),
            Ok(Claim::Free) => {
                self.store.intend(b.name(), &reg.service)?;
                self.store.flush().await?;
                lock(&claims.owned).insert(reg.service.clone());
                lock(&claims.intents).insert(reg.service.clone());
                Ok(Ok(()))
            }
            Ok(Claim::Held(holder)) => Ok(Err(BackendError::Permanent {
                backend: b.name(),
                what: format!("register {} (service {} of app {})", reg.id, reg.service, reg.app_id),
                message: holder,
            })),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Asks the backend, before any write of this drain, about every service
    /// that `ops` would write first (neither the ledger nor an intent makes it
    /// ours): concurrently, and the intents of the free ones recorded with one
    /// flush, so a thousand new services cost one flush, not a thousand. What
    /// is held by someone else (or could not be asked) is kept for `claim`.
    async fn claim_first_writes<'a>(
        &self,
        b: &Arc<dyn Backend>,
        ops: impl Iterator<Item = &'a QueuedOp>,
        claims: &Claims,
        limit: usize,
    ) -> Result<(), EngineError> {
        use futures::StreamExt;

        let name = b.name();
        let mut first: BTreeMap<String, Registration> = BTreeMap::new();
        for q in ops {
            if let Op::Register(reg) = &q.op
                && !first.contains_key(&reg.service)
                && !lock(&claims.owned).contains(&reg.service)
            {
                if self.store.ledger_holds_service(name, &reg.service)? {
                    lock(&claims.owned).insert(reg.service.clone());
                } else {
                    first.insert(reg.service.clone(), reg.clone());
                }
            }
        }
        if first.is_empty() {
            return Ok(());
        }
        let answers: Vec<(Registration, Result<Claim, BackendError>)> = futures::stream::iter(first.into_values())
            .map(|reg| async move {
                let answer = b.claim(&reg).await;
                (reg, answer)
            })
            .buffer_unordered(limit)
            .collect()
            .await;
        let mut intended = false;
        for (reg, answer) in answers {
            match answer {
                Ok(Claim::Tagged) => {
                    lock(&claims.owned).insert(reg.service);
                }
                Ok(Claim::Free) => {
                    self.store.intend(name, &reg.service)?;
                    intended = true;
                    lock(&claims.intents).insert(reg.service.clone());
                    lock(&claims.owned).insert(reg.service);
                }
                Ok(Claim::Held(holder)) => {
                    lock(&claims.failed).insert(reg.service, (false, holder));
                }
                Err(BackendError::Transient { message, .. }) => {
                    lock(&claims.failed).insert(reg.service, (true, message));
                }
                Err(BackendError::Permanent { message, .. }) => {
                    lock(&claims.failed).insert(reg.service, (false, message));
                }
            }
        }
        if intended {
            // Intents are durable before the first write they announce.
            self.store.flush().await?;
        }
        Ok(())
    }

    /// Drops an op a backend refused for good and keeps the refusal against
    /// (backend, registration, input), so the plan holds that op back until
    /// its input changes or the operator asks for a retry. Logs once per
    /// refusal. Returns whether the refusal is new.
    fn record_refusal(&self, name: &'static str, op: &Op, e: &BackendError) -> Result<bool, EngineError> {
        let reg = op.registration();
        self.metrics.ops.with_label_values(&[name, op.verb(), "failed"]).inc();
        self.store.drop_queued(name, op)?;
        let refusal = Refusal {
            backend: name.to_owned(),
            app_id: reg.app_id.clone(),
            entity: reg.id.clone(),
            op: op.verb().to_owned(),
            reason: e.to_string(),
            since: Timestamp::now().to_string(),
            input: crate::plan::input_hash(op),
        };
        let new = self.store.refuse(&refusal)?;
        if new {
            self.metrics.refusals_recorded.with_label_values(&[name]).inc();
            warn!(backend = name, op = op.verb(), app_id = %reg.app_id, task_id = %reg.task_id, id = %reg.id, error = %e, "refused; not retried until its input changes or `reconcile --once --retry-refused`");
        }
        Ok(new)
    }

    /// Lifts every refusal in force (the operator's `--retry-refused`): the
    /// next plan tries them again. Returns how many were lifted.
    pub fn retry_refused(&self) -> Result<usize, EngineError> {
        let n = self.store.clear_refusals()?;
        for b in &self.backends {
            self.metrics.refusals.with_label_values(&[b.name()]).set(0);
        }
        info!(lifted = n, "refusals lifted at the operator's request; retrying");
        Ok(n)
    }

    fn update_gauges(&self, name: &'static str) -> Result<(), EngineError> {
        self.metrics.queue_depth.with_label_values(&[name]).set(self.store.queue_len(name) as i64);
        self.metrics.registered.with_label_values(&[name]).set(self.store.ledger_len(name) as i64);
        self.metrics.refusals.with_label_values(&[name]).set(self.store.refusals(name)?.len() as i64);
        Ok(())
    }

    /// Fetches the spec of every app with an instance pending longer than
    /// `grace`, one request per app however many instances wait. A 404 buries
    /// the waiting instances. Returns the apps whose facts changed.
    pub async fn fetch_pending(&self, grace: Duration) -> Result<BTreeSet<String>, EngineError> {
        let now = now_ms();
        let grace_ms = grace.as_millis() as u64;
        // An app qualifies once any of its instances has waited the grace
        // period; the one fetch then serves every instance of it that waits.
        let mut waiting: BTreeMap<AppId, (bool, Vec<crate::model::InstanceId>)> = BTreeMap::new();
        for p in self.store.pending()? {
            let entry = waiting.entry(p.app_id).or_default();
            entry.0 |= now.saturating_sub(p.since_ms) >= grace_ms;
            entry.1.push(p.instance);
        }
        let waiting: BTreeMap<AppId, Vec<crate::model::InstanceId>> =
            waiting.into_iter().filter(|(_, (due, _))| *due).map(|(app, (_, ids))| (app, ids)).collect();
        let mut changed = BTreeSet::new();
        for (app_id, instances) in waiting {
            {
                let Ok(mut inflight) = self.inflight.lock() else { continue };
                // One fetch per app at a time, and not more often than the grace period.
                if inflight.get(&app_id).is_some_and(|t| t.elapsed() < grace.max(Duration::from_millis(500))) {
                    continue;
                }
                inflight.insert(app_id.clone(), Instant::now());
            }
            let as_of = Timestamp(self.store.high_water()?.0 + 1);
            match self.marathon.app(&app_id).await {
                Ok(Some(app)) => {
                    self.metrics.spec_fetches.with_label_values(&["ok"]).inc();
                    let app = SnapshotApp {
                        spec: app.spec.clone(),
                        tasks: app.tasks.iter().map(|t| (t.facts.clone(), t.healthy)).collect(),
                    };
                    self.store.apply_app(&app, as_of)?;
                    info!(app_id = %app_id, waiting = instances.len(), "fetched app spec");
                    changed.insert(app_id.as_str().to_owned());
                }
                Ok(None) => {
                    self.metrics.spec_fetches.with_label_values(&["not_found"]).inc();
                    info!(app_id = %app_id, waiting = instances.len(), "app no longer exists; dropping its waiting instances");
                    let ids: Vec<_> = instances.into_iter().map(|i| (i, app_id.clone())).collect();
                    self.store.bury(&ids, as_of)?;
                    changed.insert(app_id.as_str().to_owned());
                }
                Err(e) => {
                    self.metrics.spec_fetches.with_label_values(&["error"]).inc();
                    warn!(app_id = %app_id, error = %e, "app spec fetch failed; will retry");
                }
            }
        }
        Ok(changed)
    }
}

#[cfg(test)]
#[path = "engine_tests.rs"]
mod tests;

#[cfg(test)]
mod applied_log_tests {
    use super::AppliedLog;

    #[test]
    fn a_listing_sees_the_writes_made_while_it_was_in_flight_and_no_others() {
        let log = AppliedLog::default();
        log.record("before");
        let mark = log.start();
        log.record("during");
        let written = log.finish(mark);
        assert_eq!(written.into_iter().collect::<Vec<_>>(), ["during"]);
        log.record("after");
        let mark = log.start();
        assert!(log.finish(mark).is_empty(), "nothing is kept between listings");
        assert!(log.lock().ids.is_empty());
    }
}
