//! The planner: level-triggered planning per app (the controller pattern).
//! Events only mark their app dirty; the planner takes the dirty apps from a
//! de-duplicating set, computes what each calls for (`desired_of`, the one
//! desired path), selects it per backend, and hands one `AppWant` per app to
//! each backend's applier, which plans it against its ledger. The work of a
//! pass is proportional to the apps it touches, not to the cluster.
//!
//! Invariants:
//! - Every pass reads current facts from the store (events are hints); the
//!   reads and the writes run on the store's thread, the planning itself
//!   (`Planner::begin`, `Planner::finish`: desired, labels, selection) is
//!   pure and runs beside it, so folds and drains are not held behind it.
//! - A backend whose `select` weighs apps against each other (Kong routes,
//!   a service name two apps share) selects a dirty app together with every
//!   app it shares a conflict key with, transitively: the result equals a
//!   selection over the whole world, restricted to those apps.
//! - Wants carry the epoch of the pass; a later epoch read every fact an
//!   earlier one read (`Dirty::take` numbers the passes).
//! - The planner is the only writer of the pending set and of rejections; it
//!   writes no op and no ledger entry.
//! - It keeps no copy of the world: only the conflict keys per app and the
//!   counts behind its gauges.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::{Error, Labels, now_ms};
use crate::assemble::{self, Desired};
use crate::backends::Routing;
use crate::metrics::Metrics;
use crate::model::{AppId, Registration};
use crate::plan::Rejection;
use crate::store::Store;

/// Apps planned per call on the store's thread: a whole-world pass is cut in
/// chunks so that folds and drains get the store in between.
pub const CHUNK: usize = 128;

/// Apps waiting to be planned: a set, so an app marked a thousand times
/// before the planner gets to it is planned once.
#[derive(Default)]
pub struct Dirty {
    inner: Mutex<DirtyState>,
    notify: Notify,
}

#[derive(Default)]
struct DirtyState {
    set: DirtySet,
    /// The epoch of the last pass taken.
    epoch: u64,
}

/// What a pass plans: every app, or the ones named.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DirtySet {
    pub all: bool,
    pub apps: BTreeSet<String>,
}

impl DirtySet {
    fn is_empty(&self) -> bool {
        !self.all && self.apps.is_empty()
    }

    pub fn apps(apps: impl IntoIterator<Item = String>) -> DirtySet {
        DirtySet { all: false, apps: apps.into_iter().collect() }
    }

    pub fn everything() -> DirtySet {
        DirtySet { all: true, apps: BTreeSet::new() }
    }
}

impl Dirty {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirtyState> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks apps dirty and wakes the planner.
    pub fn mark<I: IntoIterator<Item = String>>(&self, apps: I) {
        let mut st = self.lock();
        let before = st.set.apps.len();
        st.set.apps.extend(apps);
        if st.set.apps.len() != before {
            drop(st);
            self.notify.notify_one();
        }
    }

    /// Marks every app dirty (a resync, the operator's retry, the start).
    pub fn mark_all(&self) {
        self.lock().set.all = true;
        self.notify.notify_one();
    }

    /// The smallest epoch a pass can have that starts after this call: its
    /// wants read every fact stored before it.
    pub fn next_epoch(&self) -> u64 {
        self.lock().epoch + 1
    }

    /// Waits until something is dirty and takes it all, with the epoch of
    /// the pass that plans it.
    pub async fn take(&self) -> (DirtySet, u64) {
        loop {
            {
                let mut st = self.lock();
                if !st.set.is_empty() {
                    st.epoch += 1;
                    return (std::mem::take(&mut st.set), st.epoch);
                }
            }
            self.notify.notified().await;
        }
    }
}

/// What one app calls for on one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppWant {
    /// The pass this came from (see `Dirty::take`).
    pub epoch: u64,
    /// The app, as in `Registration::app_id`.
    pub app: String,
    /// The app's registrations this backend should hold.
    pub keep: Vec<Registration>,
    /// Task ids of the app's live instances whose registrations stay as they
    /// are (the app's labels cannot be honoured).
    pub held_tasks: BTreeSet<String>,
}

/// One backend applier's inbox: the newest want per app, de-duplicated.
#[derive(Default)]
pub struct Inbox {
    wants: Mutex<BTreeMap<String, AppWant>>,
    notify: Notify,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, AppWant>> {
        self.wants.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Puts wants in (a newer want of an app replaces an older one).
    pub fn push(&self, wants: Vec<AppWant>) {
        if wants.is_empty() {
            return;
        }
        let mut inbox = self.lock();
        for w in wants {
            match inbox.get(&w.app) {
                Some(have) if have.epoch > w.epoch => {}
                _ => {
                    inbox.insert(w.app.clone(), w);
                }
            }
        }
        drop(inbox);
        self.notify.notify_one();
    }

    /// Takes every want waiting.
    pub fn take(&self) -> Vec<AppWant> {
        std::mem::take(&mut *self.lock()).into_values().collect()
    }

    /// Resolves once wants are waiting (or were pushed since the last take).
    pub async fn ready(&self) {
        self.notify.notified().await
    }
}

/// What one app calls for: its desired registrations (all backends), the
/// instances still pending, its label errors, and the tasks whose
/// registrations stay as they are because its labels cannot be honoured.
#[derive(Debug, Default)]
pub struct AppDesired {
    pub desired: Desired,
    pub held_tasks: BTreeSet<String>,
}

/// What planning one app reads from the store: its instance records
/// (tombstones included), its app-level facts and its newest spec. Read on
/// the store's thread (`read_facts`); what it calls for is computed from it
/// anywhere (`desired_from`, pure), so a pass holds the store only for its
/// reads and writes.
#[derive(Debug, Default)]
pub struct AppFacts {
    /// The app, as in `Registration::app_id`.
    pub app: String,
    id: Option<AppId>,
    instances: Vec<assemble::InstanceRecord>,
    apps: BTreeMap<AppId, assemble::AppRecord>,
    specs: BTreeMap<AppId, crate::model::AppSpec>,
}

/// Reads what planning `app` needs (only that app's records).
pub fn read_facts(store: &Store, app: &str) -> Result<AppFacts, Error> {
    let mut facts = AppFacts { app: app.to_owned(), ..AppFacts::default() };
    if let Ok(id) = AppId::parse(app) {
        facts.instances = store.instances_of(&id)?;
        facts.apps = store.app(&id)?.map(|r| (id.clone(), r)).into_iter().collect();
        facts.specs = store.newest_spec(&id)?.map(|s| (id.clone(), s)).into_iter().collect();
        facts.id = Some(id);
    }
    Ok(facts)
}

/// Reads the facts of every app of `apps`.
pub fn read_all<'a>(store: &Store, apps: impl IntoIterator<Item = &'a String>) -> Result<Vec<AppFacts>, Error> {
    apps.into_iter().map(|app| read_facts(store, app)).collect()
}

/// What one app calls for, from its facts (and the static services of that
/// name). Pure.
pub fn desired_from(facts: &AppFacts, labels: &Labels) -> AppDesired {
    let mut out = AppDesired::default();
    let app = facts.app.as_str();
    if let Some(id) = &facts.id {
        out.desired = assemble::desired(&facts.instances, &facts.apps, &facts.specs, &labels.opts);
        if out.desired.errors.contains_key(id) {
            for rec in &facts.instances {
                if assemble::status(rec, facts.apps.get(id), facts.specs.get(id)) == assemble::Status::Ready
                    && let Some(loc) = &rec.location
                {
                    out.held_tasks.insert(loc.task_id.to_string());
                }
            }
        }
    }
    for svc in labels.statics.iter() {
        if let Ok(regs) = crate::labels::static_registrations(svc, &labels.opts)
            && regs.first().is_some_and(|r| r.app_id == app)
        {
            out.desired.registrations.extend(regs);
        }
    }
    out.desired.registrations.sort();
    out.desired.registrations.dedup_by(|a, b| a.id == b.id);
    out
}

/// What one app calls for now, from the store's facts (and the static
/// services of that name). Reads only that app's records. The one path from
/// facts to desired registrations: `read_facts`, then `desired_from`.
pub fn desired_of(store: &Store, labels: &Labels, app: &str) -> Result<AppDesired, Error> {
    Ok(desired_from(&read_facts(store, app)?, labels))
}

/// Every app the store, a static service or a backend's ledger or queue
/// knows of (as in `Registration::app_id`).
pub fn known_apps(store: &Store, labels: &Labels, backends: &[&'static str]) -> Result<BTreeSet<String>, Error> {
    let mut apps: BTreeSet<String> = store.app_ids()?.into_iter().map(|a| a.as_str().to_owned()).collect();
    for svc in labels.statics.iter() {
        if let Ok(id) = AppId::parse(&svc.name) {
            apps.insert(id.as_str().to_owned());
        }
    }
    for b in backends {
        apps.extend(store.planned_apps(b)?);
    }
    Ok(apps)
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

/// What a pass needs besides the store: the backends' routing halves, the
/// label options and the metrics it publishes.
#[derive(Clone)]
pub struct PlanInputs {
    pub routing: Vec<Arc<dyn Routing>>,
    pub labels: Labels,
    pub metrics: Metrics,
}

/// What the planner remembers between passes: the conflict keys per app and
/// backend (to select groups of apps that share them), and the rejections and
/// pending counts per app (to publish totals without a whole pass).
#[derive(Default)]
pub struct Planner {
    /// Per backend: conflict key → apps, app → keys.
    keys: BTreeMap<&'static str, KeyIndex>,
    /// Per app with rejections: backend or `labels` rejections.
    rejections: BTreeMap<String, Vec<Rejection>>,
    /// Per app with pending instances: pending a spec, pending task facts.
    pending: BTreeMap<String, (usize, usize)>,
}

/// Apps by key and keys by app (conflict keys, or the services an app
/// wants on a backend).
#[derive(Default)]
pub struct KeyIndex {
    apps_by_key: HashMap<String, BTreeSet<String>>,
    keys_by_app: HashMap<String, BTreeSet<String>>,
}

impl KeyIndex {
    /// Replaces the keys of `app`.
    pub fn set(&mut self, app: &str, keys: BTreeSet<String>) {
        if let Some(old) = self.keys_by_app.remove(app) {
            for k in old {
                if let Some(apps) = self.apps_by_key.get_mut(&k) {
                    apps.remove(app);
                    if apps.is_empty() {
                        self.apps_by_key.remove(&k);
                    }
                }
            }
        }
        for k in &keys {
            self.apps_by_key.entry(k.clone()).or_default().insert(app.to_owned());
        }
        if !keys.is_empty() {
            self.keys_by_app.insert(app.to_owned(), keys);
        }
    }

    /// Whether an app other than `app` has `key`.
    pub fn shared(&self, app: &str, key: &str) -> bool {
        self.apps_by_key.get(key).is_some_and(|apps| apps.iter().any(|a| a != app))
    }

    /// `apps` and every app that shares a key with one of them, transitively,
    /// by the keys indexed and by `fresh` (keys of the apps being replanned).
    fn closure(&self, apps: &BTreeSet<String>, fresh: &HashMap<String, BTreeSet<String>>) -> BTreeSet<String> {
        let mut out = apps.clone();
        let mut todo: Vec<String> = apps.iter().cloned().collect();
        let mut seen_keys: BTreeSet<String> = BTreeSet::new();
        let mut fresh_by_key: HashMap<&str, Vec<&str>> = HashMap::new();
        for (app, keys) in fresh {
            for k in keys {
                fresh_by_key.entry(k.as_str()).or_default().push(app.as_str());
            }
        }
        while let Some(app) = todo.pop() {
            let keys = self.keys_by_app.get(&app).into_iter().flatten().chain(fresh.get(&app).into_iter().flatten());
            for k in keys {
                if !seen_keys.insert(k.clone()) {
                    continue;
                }
                for other in self.apps_by_key.get(k).into_iter().flatten() {
                    if out.insert(other.clone()) {
                        todo.push(other.clone());
                    }
                }
                // Apps being replanned that newly take this key.
                for other in fresh_by_key.get(k.as_str()).into_iter().flatten() {
                    if out.insert((*other).to_owned()) {
                        todo.push((*other).to_owned());
                    }
                }
            }
        }
        out
    }
}

impl Planner {
    /// The apps a pass over `dirty` covers: the named ones, or every app
    /// known when `all`.
    pub fn apps_of(store: &Store, inputs: &PlanInputs, dirty: DirtySet) -> Result<BTreeSet<String>, Error> {
        if !dirty.all {
            return Ok(dirty.apps);
        }
        let names: Vec<&'static str> = inputs.routing.iter().map(|r| r.name()).collect();
        let mut all = known_apps(store, &inputs.labels, &names)?;
        all.extend(dirty.apps);
        Ok(all)
    }

    /// One pass over `apps`, all on the store's thread (`reconcile --once`,
    /// tests, benches): facts → desired per app → selection per backend →
    /// wants, per backend name. Writes the pending set and the rejections of
    /// the apps it planned. The planner task runs the same steps with only
    /// the reads and the writes on the store's thread.
    pub fn pass(
        &mut self,
        store: &Store,
        inputs: &PlanInputs,
        apps: &BTreeSet<String>,
        epoch: u64,
    ) -> Result<BTreeMap<&'static str, Vec<AppWant>>, Error> {
        let pass = self.begin(inputs, read_all(store, apps)?, epoch);
        let more = read_all(store, &pass.missing())?;
        let (wants, writes) = self.finish(inputs, pass, more);
        writes.write(store)?;
        Ok(wants)
    }

    /// The first half of a pass (pure): what each app of `facts` calls for,
    /// its pending instances and label rejections, and per backend the group
    /// to select together (the apps and every app they share a conflict key
    /// with, transitively). `Pass::missing` names the apps of those groups
    /// whose facts still have to be read.
    pub fn begin(&mut self, inputs: &PlanInputs, facts: Vec<AppFacts>, epoch: u64) -> Pass {
        let mut pass = Pass { epoch, ..Pass::default() };
        for f in facts {
            let mut d = desired_from(&f, &inputs.labels);
            let app = f.app;
            if let Some(id) = f.id {
                pass.pending_apps.push(id);
            }
            let spec = d.desired.pending.iter().filter(|p| p.2 == assemble::Lack::Spec).count();
            let counts = (spec, d.desired.pending.len() - spec);
            if counts == (0, 0) {
                self.pending.remove(&app);
            } else {
                self.pending.insert(app.clone(), counts);
            }
            self.set_rejections(&app, "labels", label_rejections(&d.desired));
            pass.touched.insert(app.clone());
            pass.pending.append(&mut d.desired.pending);
            pass.apps.insert(app.clone());
            pass.desired.insert(app, d);
        }
        // The group per backend: the apps of this pass and every app they
        // share a conflict key with (by the keys they had and now have).
        for routing in &inputs.routing {
            let name = routing.name();
            let fresh: HashMap<String, BTreeSet<String>> = pass
                .apps
                .iter()
                .map(|app| {
                    let regs = pass.desired.get(app).map(|d| d.desired.registrations.as_slice()).unwrap_or_default();
                    (app.clone(), regs.iter().flat_map(|r| routing.conflict_keys(r)).collect())
                })
                .collect();
            let index = self.keys.entry(name).or_default();
            let group = index.closure(&pass.apps, &fresh);
            for (app, keys) in fresh {
                index.set(&app, keys);
            }
            pass.groups.push(group);
        }
        pass
    }

    /// The second half of a pass (pure): `more` holds the facts of
    /// `pass.missing()`. Selects each backend's group and returns the wants
    /// per backend name and what the pass writes.
    pub fn finish(
        &mut self,
        inputs: &PlanInputs,
        pass: Pass,
        more: Vec<AppFacts>,
    ) -> (BTreeMap<&'static str, Vec<AppWant>>, PassWrites) {
        let Pass { epoch, mut desired, groups, mut touched, pending_apps, pending, .. } = pass;
        for f in more {
            let d = desired_from(&f, &inputs.labels);
            desired.entry(f.app).or_insert(d);
        }
        let mut out = BTreeMap::new();
        for (routing, group) in inputs.routing.iter().zip(groups) {
            let name = routing.name();
            let regs: Vec<Registration> = group
                .iter()
                .filter_map(|a| desired.get(a))
                .flat_map(|d| d.desired.registrations.iter().cloned())
                .collect();
            let sel = routing.select(&regs);
            let mut keep: BTreeMap<String, Vec<Registration>> = group.iter().map(|a| (a.clone(), Vec::new())).collect();
            for r in sel.keep {
                keep.entry(r.app_id.clone()).or_default().push(r);
            }
            let mut rejected: BTreeMap<String, Vec<Rejection>> = BTreeMap::new();
            for r in sel.rejected {
                rejected.entry(r.app_id.clone()).or_default().push(r);
            }
            for app in &group {
                self.set_rejections(app, name, rejected.remove(app).unwrap_or_default());
                touched.insert(app.clone());
            }
            // Rejections named after apps outside the group (statics).
            for (app, rs) in rejected {
                self.set_rejections(&app, name, rs);
                touched.insert(app);
            }
            let wants = keep
                .into_iter()
                .map(|(app, keep)| AppWant {
                    epoch,
                    held_tasks: desired.get(&app).map(|d| d.held_tasks.clone()).unwrap_or_default(),
                    app,
                    keep,
                })
                .collect();
            out.insert(name, wants);
        }
        let touched: Vec<String> = touched.into_iter().collect();
        let rejections: Vec<Rejection> =
            touched.iter().filter_map(|a| self.rejections.get(a)).flatten().cloned().collect();
        self.publish(inputs);
        (out, PassWrites { pending_apps, pending, now_ms: now_ms(), touched, rejections })
    }

    fn set_rejections(&mut self, app: &str, backend: &str, rs: Vec<Rejection>) {
        let entry = self.rejections.entry(app.to_owned()).or_default();
        entry.retain(|r| r.backend != backend);
        entry.extend(rs);
        if entry.is_empty() {
            self.rejections.remove(app);
        }
    }

    /// Totals into the gauges.
    fn publish(&self, inputs: &PlanInputs) {
        let mut by_backend: BTreeMap<&str, i64> = BTreeMap::new();
        for r in self.rejections.values().flatten() {
            *by_backend.entry(r.backend.as_str()).or_default() += 1;
        }
        for name in inputs.routing.iter().map(|b| b.name()).chain(["labels"]) {
            inputs.metrics.rejections.with_label_values(&[name]).set(by_backend.get(name).copied().unwrap_or(0));
        }
        let (spec, facts) = self.pending.values().fold((0, 0), |(a, b), (s, f)| (a + s, b + f));
        inputs.metrics.pending.with_label_values(&["spec"]).set(spec as i64);
        inputs.metrics.pending.with_label_values(&["task_facts"]).set(facts as i64);
    }
}

/// A pass between its two halves (`Planner::begin`, `Planner::finish`).
#[derive(Default)]
pub struct Pass {
    epoch: u64,
    /// The apps planned (dirty).
    apps: BTreeSet<String>,
    /// What each app read so far calls for.
    desired: HashMap<String, AppDesired>,
    /// Per backend (in `PlanInputs::routing` order): the apps selected together.
    groups: Vec<BTreeSet<String>>,
    /// Apps whose rejections this pass rewrites.
    touched: BTreeSet<String>,
    pending_apps: Vec<AppId>,
    pending: Vec<(crate::model::InstanceId, AppId, assemble::Lack)>,
}

impl Pass {
    /// The apps of a group whose facts were not read yet.
    pub fn missing(&self) -> Vec<String> {
        let missing: BTreeSet<&String> =
            self.groups.iter().flatten().filter(|app| !self.desired.contains_key(*app)).collect();
        missing.into_iter().cloned().collect()
    }
}

/// What a pass writes (on the store's thread): the pending set and the
/// rejections of the apps it planned. The planner is their only writer.
pub struct PassWrites {
    pending_apps: Vec<AppId>,
    pending: Vec<(crate::model::InstanceId, AppId, assemble::Lack)>,
    now_ms: u64,
    touched: Vec<String>,
    rejections: Vec<Rejection>,
}

impl PassWrites {
    pub fn write(&self, store: &Store) -> Result<(), Error> {
        store.set_pending_of(&self.pending_apps, &self.pending, self.now_ms)?;
        store.set_rejections_of(&self.touched, &self.rejections)?;
        Ok(())
    }
}

/// The planner task: takes the dirty apps (all of them coalesced) and plans
/// them a chunk at a time: the chunk's facts are read on the store's thread,
/// planned on a blocking thread (pure work: desired, labels, selection), and
/// each applier gets its wants at once; the pending set and rejections go
/// back to the store with the next chunk's read. Writes no op itself.
pub async fn run(
    store: crate::store::StoreHandle,
    inputs: PlanInputs,
    dirty: Arc<Dirty>,
    inboxes: Vec<(&'static str, Arc<Inbox>)>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut planner = Planner::default();
    loop {
        let (set, epoch) = tokio::select! {
            _ = shutdown.cancelled() => return,
            taken = dirty.take() => taken,
        };
        let timer = inputs.metrics.plan_seconds.start_timer();
        let retry = set.clone();
        let i = inputs.clone();
        let apps = match store.call(move |s| Planner::apps_of(s, &i, set).map_err(super::into_store)).await {
            Ok(apps) => apps,
            Err(e) => {
                tracing::warn!(error = %e, "planning failed; retrying");
                if wait_then_remark(&dirty, retry, &shutdown).await {
                    return;
                }
                continue;
            }
        };
        let apps: Vec<String> = apps.into_iter().collect();
        let mut failed = false;
        let mut writes: Option<PassWrites> = None;
        for chunk in apps.chunks(CHUNK) {
            match plan_chunk(&store, &inputs, &mut planner, chunk.to_vec(), writes.take(), epoch).await {
                Ok((mut wants, w)) => {
                    for (name, inbox) in &inboxes {
                        inbox.push(wants.remove(name).unwrap_or_default());
                    }
                    writes = Some(w);
                }
                Err(e) => {
                    tracing::warn!(error = %e, "planning failed; retrying");
                    failed = true;
                    break;
                }
            }
        }
        if let Some(w) = writes
            && let Err(e) = store.call(move |s| w.write(s).map_err(super::into_store)).await
        {
            tracing::warn!(error = %e, "cannot record the pending instances and rejections; retrying");
            failed = true;
        }
        drop(timer);
        if failed && wait_then_remark(&dirty, retry, &shutdown).await {
            return;
        }
    }
}

/// Plans one chunk of a pass: writes what the previous chunk planned and
/// reads this chunk's facts in one store call, plans them on a blocking
/// thread, reads the facts of the apps their groups pull in (if any), and
/// returns the wants with what this chunk writes.
async fn plan_chunk(
    store: &crate::store::StoreHandle,
    inputs: &PlanInputs,
    planner: &mut Planner,
    chunk: Vec<String>,
    previous: Option<PassWrites>,
    epoch: u64,
) -> Result<(BTreeMap<&'static str, Vec<AppWant>>, PassWrites), Error> {
    let facts = store
        .call(move |s| {
            if let Some(w) = previous {
                w.write(s).map_err(super::into_store)?;
            }
            read_all(s, &chunk).map_err(super::into_store)
        })
        .await?;
    let (i, mut p) = (inputs.clone(), std::mem::take(planner));
    let (p, pass) = blocking(move || {
        let pass = p.begin(&i, facts, epoch);
        (p, pass)
    })
    .await?;
    *planner = p;
    let missing = pass.missing();
    let more = if missing.is_empty() {
        Vec::new()
    } else {
        store.call(move |s| read_all(s, &missing).map_err(super::into_store)).await?
    };
    let (i, mut p) = (inputs.clone(), std::mem::take(planner));
    let (p, wants, writes) = blocking(move || {
        let (wants, writes) = p.finish(&i, pass, more);
        (p, wants, writes)
    })
    .await?;
    *planner = p;
    Ok((wants, writes))
}

/// Runs pure planning work on a blocking thread (it can take milliseconds
/// for a chunk of apps: not on the runtime's threads, not on the store's).
async fn blocking<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Result<R, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Store(crate::store::Error::Thread(format!("planning stopped: {e}"))))
}

/// Waits a second and marks `retry` dirty again; true on shutdown.
async fn wait_then_remark(dirty: &Dirty, retry: DirtySet, shutdown: &tokio_util::sync::CancellationToken) -> bool {
    tokio::select! {
        _ = shutdown.cancelled() => return true,
        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
    }
    if retry.all {
        dirty.mark_all();
    }
    dirty.mark(retry.apps);
    false
}
