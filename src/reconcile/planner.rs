//! The planner: level-triggered planning per app (the controller pattern).
//! Events only mark their app dirty; the planner takes the dirty apps from a
//! de-duplicating set, computes what each calls for (`desired_of`, the one
//! desired path), selects it per backend, and hands one `AppWant` per app to
//! each backend's applier, which plans it against its ledger. The work of a
//! pass is proportional to the apps it touches, not to the cluster.
//!
//! Invariants:
//! - Every pass reads current facts from the store (events are hints), on
//!   the store's thread (`Planner::pass` takes `&Store`).
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

/// What one app calls for now, from the store's facts (and the static
/// services of that name). Reads only that app's records. The one path from
/// facts to desired registrations.
pub fn desired_of(store: &Store, labels: &Labels, app: &str) -> Result<AppDesired, Error> {
    let mut out = AppDesired::default();
    if let Ok(id) = AppId::parse(app) {
        let instances = store.instances_of(&id)?;
        let apps: BTreeMap<AppId, assemble::AppRecord> = store.app(&id)?.map(|r| (id.clone(), r)).into_iter().collect();
        let specs: BTreeMap<AppId, crate::model::AppSpec> =
            store.newest_spec(&id)?.map(|s| (id.clone(), s)).into_iter().collect();
        out.desired = assemble::desired(&instances, &apps, &specs, &labels.opts);
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
    for svc in labels.statics.iter() {
        if let Ok(regs) = crate::labels::static_registrations(svc, &labels.opts)
            && regs.first().is_some_and(|r| r.app_id == app)
        {
            out.desired.registrations.extend(regs);
        }
    }
    out.desired.registrations.sort();
    out.desired.registrations.dedup_by(|a, b| a.id == b.id);
    Ok(out)
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

    /// One pass over `apps` (on the store's thread): facts → desired per app
    /// → selection per backend → wants, per backend name. Writes the pending
    /// set and the rejections of the apps it planned.
    pub fn pass(
        &mut self,
        store: &Store,
        inputs: &PlanInputs,
        apps: &BTreeSet<String>,
        epoch: u64,
    ) -> Result<BTreeMap<&'static str, Vec<AppWant>>, Error> {
        // Desired per app, from current facts (and of the apps pulled into a
        // group below, once each).
        let mut desired: HashMap<String, AppDesired> = HashMap::with_capacity(apps.len());
        let mut pending = Vec::new();
        let mut pending_apps = Vec::new();
        let mut touched: BTreeSet<String> = BTreeSet::new();
        for app in apps {
            let mut d = desired_of(store, &inputs.labels, app)?;
            if let Ok(id) = AppId::parse(app) {
                pending_apps.push(id);
            }
            let spec = d.desired.pending.iter().filter(|p| p.2 == assemble::Lack::Spec).count();
            let counts = (spec, d.desired.pending.len() - spec);
            if counts == (0, 0) {
                self.pending.remove(app);
            } else {
                self.pending.insert(app.clone(), counts);
            }
            self.set_rejections(app, "labels", label_rejections(&d.desired));
            touched.insert(app.clone());
            pending.append(&mut d.desired.pending);
            desired.insert(app.clone(), d);
        }
        store.set_pending_of(&pending_apps, &pending, now_ms())?;

        // Selection per backend, over the dirty apps and every app they
        // share a conflict key with.
        let mut out = BTreeMap::new();
        for routing in &inputs.routing {
            let name = routing.name();
            let fresh: HashMap<String, BTreeSet<String>> = apps
                .iter()
                .map(|app| {
                    let regs = desired.get(app).map(|d| d.desired.registrations.as_slice()).unwrap_or_default();
                    (app.clone(), regs.iter().flat_map(|r| routing.conflict_keys(r)).collect())
                })
                .collect();
            let index = self.keys.entry(name).or_default();
            let group = index.closure(apps, &fresh);
            for (app, keys) in fresh {
                index.set(&app, keys);
            }
            for app in &group {
                if !desired.contains_key(app) {
                    desired.insert(app.clone(), desired_of(store, &inputs.labels, app)?);
                }
            }
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
        store.set_rejections_of(&touched, &rejections)?;
        self.publish(inputs);
        Ok(out)
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

/// The planner task: takes the dirty apps (all of them coalesced), plans them
/// on the store's thread a chunk at a time, and hands each applier its
/// wants. Writes no op itself.
pub async fn run(
    store: crate::store::StoreHandle,
    inputs: PlanInputs,
    dirty: Arc<Dirty>,
    inboxes: Vec<(&'static str, Arc<Inbox>)>,
    shutdown: tokio_util::sync::CancellationToken,
) {
    let mut planner = Some(Planner::default());
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
        for chunk in apps.chunks(CHUNK) {
            let chunk: BTreeSet<String> = chunk.iter().cloned().collect();
            let (i, mut p) = (inputs.clone(), planner.take().unwrap_or_default());
            let outcome = store
                .call(move |s| {
                    let wants = p.pass(s, &i, &chunk, epoch).map_err(super::into_store);
                    Ok((p, wants))
                })
                .await;
            match outcome {
                Ok((p, Ok(mut wants))) => {
                    planner = Some(p);
                    for (name, inbox) in &inboxes {
                        inbox.push(wants.remove(name).unwrap_or_default());
                    }
                }
                Ok((p, Err(e))) => {
                    planner = Some(p);
                    tracing::warn!(error = %e, "planning failed; retrying");
                    failed = true;
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "planning failed; retrying");
                    failed = true;
                    break;
                }
            }
        }
        drop(timer);
        if failed && wait_then_remark(&dirty, retry, &shutdown).await {
            return;
        }
    }
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
