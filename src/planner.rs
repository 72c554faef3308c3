//! Level-triggered planning per app (the controller pattern): events only
//! mark their app dirty; the planner takes the dirty apps from a
//! de-duplicating set, computes what each calls for, selects it per backend,
//! and hands one `AppWant` per app to each backend's applier, which plans it
//! against its ledger. The work of a pass is proportional to the apps it
//! touches, not to the cluster.
//!
//! Invariants:
//! - Every pass reads current facts from the store (events are hints).
//! - A backend whose `select` weighs apps against each other (Kong routes,
//!   a service name two apps share) selects a dirty app together with every
//!   app it shares a conflict key with, transitively: the result equals a
//!   selection over the whole world, restricted to those apps.
//! - Wants carry the epoch of their computation; a later epoch read every
//!   fact an earlier one read (`Engine::begin_epoch`).
//! - The planner writes no op and no ledger entry; it writes the pending set
//!   of the apps it planned and the rejection record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use crate::engine::{Engine, EngineError, now_ms};
use crate::model::{AppId, Registration};
use crate::plan::Rejection;

/// Apps waiting to be planned: a set, so an app marked a thousand times
/// before the planner gets to it is planned once.
#[derive(Default)]
pub struct Dirty {
    inner: Mutex<DirtySet>,
    notify: Notify,
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
}

impl Dirty {
    fn lock(&self) -> std::sync::MutexGuard<'_, DirtySet> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Marks apps dirty and wakes the planner.
    pub fn mark<I: IntoIterator<Item = String>>(&self, apps: I) {
        let mut set = self.lock();
        let before = set.apps.len();
        set.apps.extend(apps);
        if set.apps.len() != before {
            drop(set);
            self.notify.notify_one();
        }
    }

    /// Marks every app dirty (a resync, the operator's retry, the start).
    pub fn mark_all(&self) {
        self.lock().all = true;
        self.notify.notify_one();
    }

    /// Waits until something is dirty and takes it all.
    pub async fn take(&self) -> DirtySet {
        loop {
            {
                let mut set = self.lock();
                if !set.is_empty() {
                    return std::mem::take(&mut *set);
                }
            }
            self.notify.notified().await;
        }
    }
}

/// What one app calls for on one backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppWant {
    /// The computation this came from (see `Engine::begin_epoch`).
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

/// What the planner remembers between passes: what each app desired last
/// (to select groups of apps that share conflict keys) and the rejections
/// and pending counts per app (to publish totals without a whole pass).
#[derive(Default)]
pub struct Planner {
    /// Every app's desired registrations (all backends), as of its last pass.
    world: HashMap<String, Arc<Vec<Registration>>>,
    /// Per backend: conflict key → apps, app → keys.
    keys: BTreeMap<&'static str, KeyIndex>,
    /// Per app: backend or `labels` rejections.
    rejections: BTreeMap<String, Vec<Rejection>>,
    /// Per app: instances pending a spec, pending task facts.
    pending: BTreeMap<String, (usize, usize)>,
    /// Per app with label errors: the task ids whose registrations stay.
    held: HashMap<String, BTreeSet<String>>,
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
    /// One pass over `dirty`: facts → desired per app → selection per
    /// backend → wants, per backend name.
    pub fn pass(
        &mut self,
        engine: &Engine,
        dirty: DirtySet,
    ) -> Result<BTreeMap<&'static str, Vec<AppWant>>, EngineError> {
        let apps: BTreeSet<String> = if dirty.all {
            let mut all = engine.known_apps()?;
            all.extend(self.world.keys().cloned());
            all.extend(dirty.apps);
            all
        } else {
            dirty.apps
        };
        let (_epoch_guard, epoch) = engine.begin_epoch();

        // Desired per app, from current facts.
        let mut pending = Vec::new();
        let mut pending_apps = Vec::new();
        for app in &apps {
            let d = engine.desired_of(app)?;
            if let Ok(id) = AppId::parse(app) {
                pending_apps.push(id);
            }
            let spec = d.desired.pending.iter().filter(|p| p.2 == crate::assemble::Lack::Spec).count();
            let counts = (spec, d.desired.pending.len() - spec);
            if counts == (0, 0) {
                self.pending.remove(app);
            } else {
                self.pending.insert(app.clone(), counts);
            }
            let rejections = crate::engine::label_rejections(&d.desired);
            pending.extend(d.desired.pending);
            self.set_rejections(app, "labels", rejections);
            if d.held_tasks.is_empty() {
                self.held.remove(app);
            } else {
                self.held.insert(app.clone(), d.held_tasks);
            }
            if d.desired.registrations.is_empty() {
                self.world.remove(app);
            } else {
                self.world.insert(app.clone(), Arc::new(d.desired.registrations));
            }
        }
        engine.store.set_pending_of(&pending_apps, &pending, now_ms())?;

        // Selection per backend, over the dirty apps and every app they
        // share a conflict key with.
        let mut out = BTreeMap::new();
        for b in &engine.backends {
            let name = b.name();
            let fresh: HashMap<String, BTreeSet<String>> = apps
                .iter()
                .map(|app| {
                    let keys =
                        self.world.get(app).into_iter().flat_map(|regs| regs.iter()).flat_map(|r| b.conflict_keys(r));
                    (app.clone(), keys.collect())
                })
                .collect();
            let index = self.keys.entry(name).or_default();
            let group = index.closure(&apps, &fresh);
            for (app, keys) in fresh {
                index.set(&app, keys);
            }
            let regs: Vec<Registration> =
                group.iter().filter_map(|a| self.world.get(a)).flat_map(|regs| regs.iter().cloned()).collect();
            let sel = b.select(&regs);
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
            }
            // Rejections named after apps outside the group (statics).
            for (app, rs) in rejected {
                self.set_rejections(&app, name, rs);
            }
            let wants = keep
                .into_iter()
                .map(|(app, keep)| AppWant {
                    epoch,
                    held_tasks: self.held.get(&app).cloned().unwrap_or_default(),
                    app,
                    keep,
                })
                .collect();
            out.insert(name, wants);
        }
        self.publish(engine)?;
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

    /// Totals into the store (`switchboard state`) and the gauges.
    fn publish(&self, engine: &Engine) -> Result<(), EngineError> {
        let all: Vec<Rejection> = self.rejections.values().flatten().cloned().collect();
        engine.store.set_rejections(&all)?;
        let mut by_backend: BTreeMap<&str, i64> = BTreeMap::new();
        for r in &all {
            *by_backend.entry(r.backend.as_str()).or_default() += 1;
        }
        for name in engine.backends.iter().map(|b| b.name()).chain(["labels"]) {
            engine.metrics.rejections.with_label_values(&[name]).set(by_backend.get(name).copied().unwrap_or(0));
        }
        let (spec, facts) = self.pending.values().fold((0, 0), |(a, b), (s, f)| (a + s, b + f));
        engine.metrics.pending.with_label_values(&["spec"]).set(spec as i64);
        engine.metrics.pending.with_label_values(&["task_facts"]).set(facts as i64);
        Ok(())
    }
}
