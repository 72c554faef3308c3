//! What an applier plans, on the store's thread: each app's want against the
//! app's ledger entries with its queued ops on top, or, while a resync's
//! listing waits for it, against what the backend showed (`Merge`); a
//! deregistration empties its service only when no other app wants it
//! (`ServiceIndex`). Pure but for the store reads and the queue writes.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use tracing::info;

use super::planner::{AppWant, KeyIndex};
use crate::backends::Routing;
use crate::model::Registration;
use crate::plan::{Op, Refusal, plan};
use crate::store::{QueuedOp, Store};

/// What every app wants on one backend, by service: a deregistration
/// empties its service only if no other app wants the service there.
pub type ServiceIndex = KeyIndex;

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

/// What one app's listing contributes to its plan: what the backend showed,
/// and the registrations written while the listing was in flight (for those
/// the ledger stands for the backend).
pub struct Merge<'a> {
    pub listed: &'a [Registration],
    pub stale: &'a BTreeSet<String>,
}

/// Plans the apps of `wants` on one backend (on the store's thread), each
/// against its ledger entries with its queued ops on top, or, for apps in
/// `merges`, against what a listing showed; queues what differs in one batch.
/// `services` follows what every app wants on the backend, so a deregistration
/// empties its service only when no other app wants it. Returns the ops newly
/// queued.
pub fn plan_wants(
    store: &Store,
    routing: &dyn Routing,
    wants: &[AppWant],
    merges: &HashMap<String, Merge<'_>>,
    services: &mut ServiceIndex,
) -> Result<Vec<Op>, crate::store::Error> {
    let name = routing.name();
    let mut planned = Vec::with_capacity(wants.len());
    for w in wants {
        let (expected, queued) = with_queued(store.ledger_of(name, &w.app)?, store.queued_of(name, &w.app)?);
        let mut want = w.keep.clone();
        let ids: BTreeSet<String> = want.iter().map(|r| r.id.clone()).collect();
        want.extend(expected.iter().filter(|r| w.held_tasks.contains(&r.task_id) && !ids.contains(&r.id)).cloned());
        services.set(&w.app, want.iter().map(|r| r.service.clone()).collect());
        planned.push((w, want, expected, queued));
    }
    let refusals = store.refusals(name)?;
    let mut fresh_ops = Vec::new();
    let mut cancel = Vec::new();
    let mut lifted = Vec::new();
    for (w, want, expected, queued) in planned {
        let merge = merges.get(&w.app);
        let ops = match merge {
            None => plan(&want, &expected, |d, o| d == o),
            Some(m) => {
                let fresh = |r: &Registration| !m.stale.contains(&r.id);
                // A held task's registrations stay as they are: one the
                // listing shows that its app does not keep (another tool's
                // entry standing in for ours, `--replace`) is left alone too.
                let kept: BTreeSet<&str> = want.iter().map(|r| r.id.as_str()).collect();
                let held = |r: &Registration| w.held_tasks.contains(&r.task_id) && !kept.contains(r.id.as_str());
                // What the backend holds: the listing where it is fresh, the
                // ledger (with queued ops on top) for the rest.
                let observed: Vec<Registration> = m
                    .listed
                    .iter()
                    .filter(|r| fresh(r) && !held(r))
                    .chain(expected.iter().filter(|r| !fresh(r)))
                    .cloned()
                    .collect();
                let ops = plan(&want, &observed, |d, o| if fresh(o) { routing.same(d, o) } else { d == o });
                absorb(store, routing, name, &w.app, &want, &observed, m)?;
                // The queue of a fresh registration becomes what this plan
                // says: an op it no longer calls for is cancelled (a register
                // of an instance that died while its lane backed off), except
                // a deregistration that still has app-level objects to remove.
                let planned_keys: BTreeSet<&str> = ops.iter().map(|o| o.key()).collect();
                let wanted: BTreeSet<&str> = want.iter().map(|r| r.id.as_str()).collect();
                for (key, op) in &queued {
                    let keep = match op {
                        Op::Deregister { service_empty: true, .. } => !wanted.contains(key.as_str()),
                        _ => false,
                    };
                    if !m.stale.contains(key) && !planned_keys.contains(key.as_str()) && !keep {
                        cancel.push(op.clone());
                    }
                }
                ops
            }
        };
        let mut ops = ops;
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
        fresh_ops.extend(ops.into_iter().filter(|op| queued.get(op.key()) != Some(op)));
    }
    if !lifted.is_empty() {
        store.lift_refusals(name, &lifted)?;
        info!(backend = name, entities = ?lifted, "refusals lifted: their input changed or is no longer wanted");
    }
    for op in &cancel {
        store.drop_queued(name, op)?;
    }
    if !cancel.is_empty() {
        info!(
            backend = name,
            ops = cancel.len(),
            "queued ops cancelled: the listing and the facts no longer call for them"
        );
    }
    store.enqueue(name, &fresh_ops)?;
    Ok(fresh_ops)
}

/// What a backend already holds needs no write: wanted entries it shows in
/// step go into the ledger (it may have been lost, say with the data dir),
/// and fresh ledger entries of the app that are neither shown nor wanted were
/// removed by someone else: they are forgotten.
fn absorb(
    store: &Store,
    routing: &dyn Routing,
    name: &str,
    app: &str,
    want: &[Registration],
    observed: &[Registration],
    m: &Merge<'_>,
) -> Result<(), crate::store::Error> {
    let listed: BTreeMap<&str, &Registration> =
        m.listed.iter().filter(|r| !m.stale.contains(&r.id)).map(|r| (r.id.as_str(), r)).collect();
    let ledger: BTreeMap<String, Registration> =
        store.ledger_of(name, app)?.into_iter().map(|r| (r.id.clone(), r)).collect();
    let in_place: Vec<Registration> = want
        .iter()
        .filter(|w| listed.get(w.id.as_str()).is_some_and(|o| routing.same(w, o)) && ledger.get(&w.id) != Some(*w))
        .cloned()
        .collect();
    store.import_ledger(name, &in_place)?;
    let observed_ids: BTreeSet<&str> = observed.iter().map(|r| r.id.as_str()).collect();
    let want_ids: BTreeSet<&str> = want.iter().map(|r| r.id.as_str()).collect();
    let gone: Vec<String> = ledger
        .keys()
        .filter(|id| !m.stale.contains(*id) && !observed_ids.contains(id.as_str()) && !want_ids.contains(id.as_str()))
        .cloned()
        .collect();
    store.forget(name, &gone)
}
