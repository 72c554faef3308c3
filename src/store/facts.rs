//! Trees `specs@2`, `apps@2` and `instances@2`: merging folded facts
//! durably. An instance is keyed `app id \0 instance id`, so one app's
//! instances are one prefix scan; a merge that changes nothing writes
//! nothing.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{Error, Store, decode, encode, key, key2, part, prefix};
use crate::assemble::{AppRecord, InstanceRecord, StateFact, Touch};
use crate::model::{AppId, AppSpec, InstanceId, TaskFacts, TaskState, Timestamp};

/// How many versions of an app's spec are kept.
const SPEC_VERSIONS_KEPT: usize = 3;

/// An instance record plus the local receive sequence of its last fact.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Stored {
    pub(super) record: InstanceRecord,
    pub(super) seq: u64,
}

/// Live instance records and tombstones in `instances@2` (`Store::instance_census`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceCensus {
    pub live: u64,
    pub live_bytes: u64,
    pub tombstones: u64,
    pub tombstone_bytes: u64,
}

/// One app of a REST snapshot (or a single-app fetch), in domain types.
#[derive(Debug, Clone)]
pub struct SnapshotApp {
    pub spec: AppSpec,
    /// Each task's facts and Marathon's view of its health.
    pub tasks: Vec<(TaskFacts, Option<bool>)>,
}

/// The key of an instance: `app id \0 instance id`.
fn instance_key(rec: &InstanceRecord) -> Vec<u8> {
    key(&[rec.app_id.as_str(), rec.instance.as_str()])
}

/// The app id a key of `specs@2` or `instances@2` starts with.
fn app_of_key(k: &[u8]) -> Option<AppId> {
    AppId::parse(std::str::from_utf8(part(k, 0)).ok()?).ok()
}

/// The tree a fact is stored in.
#[derive(Debug, Clone, Copy)]
enum Which {
    Instances,
    Apps,
    Specs,
}

/// Where a touch's fact is stored (`None` for a hint).
fn located(touch: &Touch) -> Option<(Which, Vec<u8>)> {
    match touch {
        Touch::Instance(rec) => Some((Which::Instances, instance_key(rec))),
        Touch::App(app_id, _) => Some((Which::Apps, app_id.as_str().as_bytes().to_vec())),
        Touch::Spec(spec) => Some((Which::Specs, key2(spec.id.as_str(), &spec.version))),
        Touch::Hint(_) => None,
    }
}

/// The record a touch makes of `old` (what its key holds), or `None` when
/// it leaves it as it is.
fn merged(touch: &Touch, old: Option<&[u8]>, seq: u64) -> Result<Option<Vec<u8>>, Error> {
    match touch {
        Touch::Instance(rec) => {
            let merged = match old {
                Some(old) => {
                    let old: Stored = decode("instances", old)?;
                    let record = old.record.merge(rec);
                    if record == old.record {
                        return Ok(None);
                    }
                    Stored { record, seq: old.seq.max(seq) }
                }
                None => Stored { record: rec.clone(), seq },
            };
            encode(&merged).map(Some)
        }
        Touch::App(_, rec) => {
            let merged = match old {
                Some(old) => {
                    let old: AppRecord = decode("apps", old)?;
                    let merged = old.merge(rec);
                    if merged == old {
                        return Ok(None);
                    }
                    merged
                }
                None => rec.clone(),
            };
            encode(&merged).map(Some)
        }
        Touch::Spec(spec) => {
            let value = encode(spec)?;
            Ok(old.is_none_or(|old| *old != value[..]).then_some(value))
        }
        Touch::Hint(_) => Ok(None),
    }
}

fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

impl Store {
    /// Merges the facts of one event in one transaction; an event whose
    /// facts change nothing writes nothing. Returns the apps named by hints
    /// (whose spec may need fetching).
    ///
    /// A transaction, even for one fact: sled writes a transaction's log
    /// buffer at once, so a folded event survives a `kill -9` without a
    /// flush, which the consumer (and `tests/order_independence.rs`) rely
    /// on today. A single key's write would wait for the next flush; once
    /// the store thread flushes every burst (group commit), one fact can be
    /// one compare-and-swap (measured in BENCHMARKS.md, issue 18).
    pub fn apply_touches(&self, touches: &[Touch], seq: u64) -> Result<Vec<AppId>, Error> {
        let hints: Vec<AppId> =
            touches.iter().filter_map(|t| if let Touch::Hint(a) = t { Some(a.clone()) } else { None }).collect();
        let facts: Vec<(&Touch, Which, Vec<u8>)> =
            touches.iter().filter_map(|t| located(t).map(|(which, key)| (t, which, key))).collect();
        // A fact that changes nothing writes nothing: not even the
        // transaction, which would write and sync sled's log buffer.
        let mut changes = false;
        for (touch, which, key) in &facts {
            if merged(touch, self.tree(*which).get(key)?.as_deref(), seq)?.is_some() {
                changes = true;
                break;
            }
        }
        let mut written_specs = Vec::new();
        if changes {
            written_specs = (&self.instances, &self.apps, &self.specs).transaction(|(instances, apps, specs)| {
                let mut written_specs = Vec::new();
                for (touch, which, key) in &facts {
                    let tree = match which {
                        Which::Instances => instances,
                        Which::Apps => apps,
                        Which::Specs => specs,
                    };
                    let old = tree.get(key)?;
                    if let Some(new) = merged(touch, old.as_deref(), seq).map_err(abort)? {
                        tree.insert(key.as_slice(), new)?;
                        if let Touch::Spec(spec) = touch {
                            written_specs.push(spec.id.clone());
                        }
                    }
                }
                Ok(written_specs)
            })?;
        }
        for app in written_specs {
            self.prune_spec_versions(&app)?;
        }
        Ok(hints)
    }

    fn tree(&self, which: Which) -> &sled::Tree {
        match which {
            Which::Instances => &self.instances,
            Which::Apps => &self.apps,
            Which::Specs => &self.specs,
        }
    }

    fn prune_spec_versions(&self, app: &AppId) -> Result<(), Error> {
        let keys: Vec<sled::IVec> = self.specs.scan_prefix(prefix(&[app.as_str()])).keys().collect::<Result<_, _>>()?;
        if keys.len() > SPEC_VERSIONS_KEPT {
            for k in &keys[..keys.len() - SPEC_VERSIONS_KEPT] {
                self.specs.remove(k)?;
            }
        }
        Ok(())
    }

    /// Applies a full REST snapshot taken with Marathon time `as_of`.
    /// Instances absent from it are tombstoned, unless a fact about them was
    /// received after the snapshot was requested (`seq_at_request`), or their
    /// app is in `broken` (its definition could not be read: leave it alone).
    /// Apps absent from it are marked stopped.
    pub fn apply_snapshot(
        &self,
        apps: &[SnapshotApp],
        broken: &BTreeSet<String>,
        as_of: Timestamp,
        seq_at_request: u64,
    ) -> Result<(), Error> {
        let seq = self.next_seq()?;
        let mut present_instances = BTreeSet::new();
        let mut present_apps = BTreeSet::new();
        for app in apps {
            present_apps.insert(app.spec.id.clone());
            let touches = crate::assemble::snapshot_touches(&app.spec, &app.tasks, as_of);
            present_instances.extend(touches.iter().filter_map(|t| match t {
                Touch::Instance(r) => Some(r.instance.clone()),
                _ => None,
            }));
            self.apply_touches(&touches, seq)?;
        }
        for v in self.instances.iter().values() {
            let stored: Stored = decode("instances", &v?)?;
            let id = stored.record.instance.clone();
            if present_instances.contains(&id)
                || stored.seq > seq_at_request
                || stored.record.is_tombstone()
                || broken.contains(stored.record.app_id.as_str())
            {
                continue;
            }
            let mut gone = InstanceRecord::empty(id, stored.record.app_id.clone());
            // Gone is about the launch the store knows; a later one may still come.
            gone.state =
                Some(StateFact { state: TaskState::Gone, at: as_of, incarnation: stored.record.incarnation() });
            self.apply_touches(&[Touch::Instance(gone)], seq_at_request)?;
        }
        for app_id in self.spec_app_ids()? {
            if !present_apps.contains(&app_id) && !broken.contains(app_id.as_str()) {
                let stopped = AppRecord { stopped_at: Some(as_of) };
                self.apply_touches(&[Touch::App(app_id, stopped)], seq_at_request)?;
            }
        }
        Ok(())
    }

    /// Applies a single-app fetch (`GET /v2/apps/{id}`): its spec and tasks.
    pub fn apply_app(&self, app: &SnapshotApp, as_of: Timestamp) -> Result<(), Error> {
        let seq = self.next_seq()?;
        self.apply_touches(&crate::assemble::snapshot_touches(&app.spec, &app.tasks, as_of), seq)?;
        Ok(())
    }

    /// Tombstones the given instances (their app is gone from Marathon).
    pub fn bury(&self, ids: &[(InstanceId, AppId)], at: Timestamp) -> Result<(), Error> {
        let seq = self.next_seq()?;
        let touches: Vec<Touch> = ids
            .iter()
            .map(|(id, app)| {
                let mut rec = InstanceRecord::empty(id.clone(), app.clone());
                // The app is gone: no launch of this instance comes back.
                rec.state = Some(StateFact { state: TaskState::Gone, at, incarnation: u64::MAX });
                Touch::Instance(rec)
            })
            .collect();
        self.apply_touches(&touches, seq)?;
        Ok(())
    }

    /// Every stored instance, decoded as read (no copy is kept).
    fn stored_instances(&self) -> Result<Vec<Stored>, Error> {
        self.instances.iter().values().map(|v| decode("instances", &v?)).collect()
    }

    /// Every instance record, tombstones included, by app then instance id.
    pub fn instances(&self) -> Result<Vec<InstanceRecord>, Error> {
        Ok(self.stored_instances()?.into_iter().map(|s| s.record).collect())
    }

    /// How many instance records are live and how many are tombstones, and
    /// the bytes (keys and values) each kind takes. One scan of the tree.
    pub fn instance_census(&self) -> Result<InstanceCensus, Error> {
        let mut c = InstanceCensus::default();
        for kv in self.instances.iter() {
            let (k, v) = kv?;
            let stored: Stored = decode("instances", &v)?;
            let bytes = (k.len() + v.len()) as u64;
            if stored.record.is_tombstone() {
                c.tombstones += 1;
                c.tombstone_bytes += bytes;
            } else {
                c.live += 1;
                c.live_bytes += bytes;
            }
        }
        Ok(c)
    }

    /// The instance records of one app, tombstones included (one prefix scan).
    pub fn instances_of(&self, app: &AppId) -> Result<Vec<InstanceRecord>, Error> {
        self.instances
            .scan_prefix(prefix(&[app.as_str()]))
            .values()
            .map(|v| Ok(decode::<Stored>("instances", &v?)?.record))
            .collect()
    }

    /// The apps with an instance record (from the keys: nothing decoded).
    fn instance_app_ids(&self) -> Result<BTreeSet<AppId>, Error> {
        app_ids_of_keys(&self.instances)
    }

    /// The app-level facts of one app.
    pub fn app(&self, app: &AppId) -> Result<Option<AppRecord>, Error> {
        self.apps.get(app.as_str().as_bytes())?.map(|v| decode("apps", &v)).transpose()
    }

    /// The newest known spec of one app.
    pub fn newest_spec(&self, app: &AppId) -> Result<Option<AppSpec>, Error> {
        let mut newest: Option<AppSpec> = None;
        for v in self.specs.scan_prefix(prefix(&[app.as_str()])).values() {
            let spec: AppSpec = decode("specs", &v?)?;
            if newest.as_ref().is_none_or(|have| have.version < spec.version) {
                newest = Some(spec);
            }
        }
        Ok(newest)
    }

    /// Every app the store knows anything of: facts, a spec or an instance.
    pub fn app_ids(&self) -> Result<BTreeSet<AppId>, Error> {
        let mut ids: BTreeSet<AppId> = self.apps()?.into_keys().collect();
        ids.extend(self.spec_app_ids()?);
        ids.extend(self.instance_app_ids()?);
        Ok(ids)
    }

    pub fn apps(&self) -> Result<BTreeMap<AppId, AppRecord>, Error> {
        let mut out = BTreeMap::new();
        for kv in self.apps.iter() {
            let (k, v) = kv?;
            let id = String::from_utf8_lossy(&k).into_owned();
            if let Ok(id) = AppId::parse(&id) {
                out.insert(id, decode("apps", &v)?);
            }
        }
        Ok(out)
    }

    /// The apps with a spec (from the keys: nothing decoded).
    fn spec_app_ids(&self) -> Result<BTreeSet<AppId>, Error> {
        app_ids_of_keys(&self.specs)
    }

    /// The newest known spec of every app.
    pub fn newest_specs(&self) -> Result<BTreeMap<AppId, AppSpec>, Error> {
        let mut out: BTreeMap<AppId, AppSpec> = BTreeMap::new();
        for kv in self.specs.iter() {
            let (_, v) = kv?;
            let spec: AppSpec = decode("specs", &v)?;
            match out.get(&spec.id) {
                Some(have) if have.version >= spec.version => {}
                _ => {
                    out.insert(spec.id.clone(), spec);
                }
            }
        }
        Ok(out)
    }

    /// Removes tombstones and instances of stopped apps whose last fact is
    /// older than `before`, then apps stopped before it that have no
    /// instance left and no spec newer than their stop. Returns how many
    /// records went.
    pub fn prune(&self, before: Timestamp) -> Result<usize, Error> {
        let apps = self.apps()?;
        let mut removed = 0;
        for kv in self.instances.iter() {
            let (key, v) = kv?;
            let stored: Stored = decode("instances", &v)?;
            let rec = &stored.record;
            let app_stopped = apps.get(&rec.app_id).and_then(|a| a.stopped_at).is_some_and(|s| rec.last_at() <= s);
            if (rec.is_tombstone() || app_stopped) && rec.last_at() < before {
                self.instances.remove(key)?;
                removed += 1;
            }
        }
        // Apps destroyed before `before`, with no instance record left and no
        // spec newer than their stop: forget the app and its specs, so a
        // cluster that keeps creating and destroying apps does not grow the
        // store without end.
        let with_instances = self.instance_app_ids()?;
        for (app_id, rec) in apps {
            let Some(stopped) = rec.stopped_at else { continue };
            if stopped >= before || with_instances.contains(&app_id) {
                continue;
            }
            let respawned = self
                .newest_spec(&app_id)?
                .and_then(|spec| Timestamp::parse(&spec.version).ok())
                .is_some_and(|v| v > stopped);
            if !respawned {
                self.apps.remove(app_id.as_str().as_bytes())?;
                let keys: Vec<sled::IVec> =
                    self.specs.scan_prefix(prefix(&[app_id.as_str()])).keys().collect::<Result<_, _>>()?;
                for k in keys {
                    self.specs.remove(k)?;
                }
                removed += 1;
            }
        }
        Ok(removed)
    }
}

/// The distinct app ids that keys of `tree` (`app id \0 ...`) start with,
/// skipping from one app to the next: one seek per app, nothing decoded.
fn app_ids_of_keys(tree: &sled::Tree) -> Result<BTreeSet<AppId>, Error> {
    let mut out = BTreeSet::new();
    let mut from: Vec<u8> = Vec::new();
    while let Some(kv) = tree.range(from.clone()..).next() {
        let (k, _) = kv?;
        let app = part(&k, 0);
        if let Some(id) = app_of_key(&k) {
            out.insert(id);
        }
        // The first key past every `app \0 ...`.
        from = app.to_vec();
        from.push(1);
    }
    Ok(out)
}
