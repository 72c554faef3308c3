//! The resync: refreshes the store from Marathon's REST API (the whole
//! snapshot; one app's spec for instances that wait for it) and asks each
//! applier to observe its backend. It writes no op itself.
//!
//! A resync, per app and with no whole-world pass:
//! 1. Marathon's snapshot goes into the store (facts older than the snapshot
//!    lose to it; instances it lacks are tombstoned unless a fact about them
//!    arrived after it was requested);
//! 2. each applier lists its backend (while it goes on applying);
//! 3. each listing is handed to its applier, and every app is marked dirty:
//!    the planner's next pass hands each applier one want per app, and the
//!    applier merges that app's part of the listing with it.
//!
//! A standby (HA) only takes Marathon's snapshot, so its store stays warm.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::applier::ApplierHandle;
use super::planner::Dirty;
use super::{Core, Error, now_ms};
use crate::ha::Fence;
use crate::model::{AppId, InstanceId, Timestamp};
use crate::plan::ResyncReport;
use crate::store::SnapshotApp;

/// Marathon's snapshot into the store (the first half of a resync).
pub async fn refresh_from_marathon(core: &Core) -> Result<(), Error> {
    let (seq_at_request, as_of) = core.store.call(|s| Ok((s.next_seq()?, Timestamp(s.high_water()?.0 + 1)))).await?;
    let snapshot = match core.marathon.snapshot().await {
        Ok(s) => s,
        Err(e) => {
            core.metrics.resyncs.with_label_values(&["marathon_error"]).inc();
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
    core.store.call(move |s| s.apply_snapshot(&apps, &broken, as_of, seq_at_request)).await?;
    Ok(())
}

/// Lists every backend, hands each listing to its applier and marks every
/// app dirty; waits until each applier merged its listing. Returns what was
/// queued per backend and the backends that could not be listed.
pub async fn observe_all(appliers: &[ApplierHandle], dirty: &Dirty) -> ResyncReport {
    let min_epoch = dirty.next_epoch();
    let listings = futures::future::join_all(appliers.iter().map(|a| async move { (a, a.list().await) })).await;
    let mut report = ResyncReport::default();
    let mut answers = Vec::new();
    let mut apps = BTreeSet::new();
    for (a, listed) in listings {
        match listed {
            Ok(listed) => {
                apps.extend(listed.apps().cloned());
                answers.push((a.name(), a.merge(listed, min_epoch)));
            }
            Err(e) => {
                debug!(backend = a.name(), error = %e, "backend listing failed during resync");
                report.failed.push((a.name(), e));
            }
        }
    }
    dirty.mark_all();
    dirty.mark(apps);
    for (name, answer) in answers {
        match tokio::time::timeout(MERGE_WAIT, answer).await {
            Ok(Ok(Ok(ops))) => {
                report.ops.insert(name, ops);
            }
            Ok(Ok(Err(e))) => report.failed.push((name, e)),
            Ok(Err(_)) => report.failed.push((name, "applier stopped".into())),
            Err(_) => {
                report.failed.push((name, "the listing was not merged in time; the next resync lists again".into()))
            }
        }
    }
    report
}

/// How long a resync waits for an applier to merge its listing (every app's
/// want has to come through the planner first).
const MERGE_WAIT: Duration = Duration::from_secs(600);

/// Records a finished resync: its time and its result metric.
pub async fn finish(core: &Core, report: &ResyncReport) -> Result<(), Error> {
    let when = Timestamp::now().to_string();
    core.store.call(move |s| s.set_last_resync(&when)).await?;
    let result = if report.failed.is_empty() { "ok" } else { "backend_error" };
    core.metrics.resyncs.with_label_values(&[result]).inc();
    Ok(())
}

/// Resyncs on start (once the stream first connects), on every reconnect
/// and every `every`.
pub async fn run(
    core: Core,
    every: Option<Duration>,
    wake: Arc<Notify>,
    dirty: Arc<Dirty>,
    appliers: Vec<ApplierHandle>,
    fence: Fence,
    shutdown: CancellationToken,
) {
    // Subscribe first, then snapshot: the first resync waits for the stream's
    // first connection, or 5 s if Marathon's stream cannot be reached.
    tokio::select! {
        _ = shutdown.cancelled() => return,
        _ = wake.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(5)) => {}
    }
    let mut failures = 0u32;
    loop {
        let ok = tokio::select! {
            _ = shutdown.cancelled() => return,
            ok = once(&core, &dirty, &appliers, &fence) => ok,
        };
        failures = if ok { 0 } else { failures + 1 };
        // A failed resync is retried with backoff; otherwise wait for the
        // interval or the next (re)connect.
        let next = if ok { every } else { Some(super::backoff(failures).min(every.unwrap_or(Duration::MAX))) };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = sleep_opt(next) => {}
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// One resync; true when Marathon and every backend could be read.
async fn once(core: &Core, dirty: &Dirty, appliers: &[ApplierHandle], fence: &Fence) -> bool {
    let started = Instant::now(); // status hook
    if let Err(e) = refresh_from_marathon(core).await {
        core.metrics.resync_failed(started, &e.to_string()); // status hook
        warn!(error = %e, "resync failed");
        return false;
    }
    if !fence.allows_write() {
        dirty.mark_all();
        core.metrics.resync_finished(started, &ResyncReport::default()); // status hook
        return true;
    }
    let report = observe_all(appliers, dirty).await;
    if let Err(e) = finish(core, &report).await {
        warn!(error = %e, "cannot record the resync");
    }
    core.metrics.resync_finished(started, &report); // status hook: duration, changes, first resync done
    if let Err(e) = core.store.flush().await {
        warn!(error = %e, "cannot flush the store");
    }
    report.failed.is_empty()
}

/// The spec fetcher: for instances pending longer than the grace period, one
/// `GET /v2/apps/{id}` per app however many instances wait.
pub async fn fetcher(core: Core, grace: Duration, dirty: Arc<Dirty>, shutdown: CancellationToken) {
    let tick = (grace / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    let inflight = Mutex::new(BTreeMap::new());
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        match fetch_pending(&core, grace, &inflight).await {
            Ok(apps) => dirty.mark(apps),
            Err(e) => warn!(error = %e, "spec fetch pass failed"),
        }
    }
}

/// Fetches the spec of every app with an instance pending longer than
/// `grace`. A 404 buries the waiting instances. Returns the apps whose facts
/// changed.
pub async fn fetch_pending(
    core: &Core,
    grace: Duration,
    inflight: &Mutex<BTreeMap<AppId, Instant>>,
) -> Result<BTreeSet<String>, Error> {
    let now = now_ms();
    let grace_ms = grace.as_millis() as u64;
    let pending = core.store.call(|s| s.pending()).await?;
    // An app qualifies once any of its instances has waited the grace
    // period; the one fetch then serves every instance of it that waits.
    let mut waiting: BTreeMap<AppId, (bool, Vec<InstanceId>)> = BTreeMap::new();
    for p in pending {
        let entry = waiting.entry(p.app_id).or_default();
        entry.0 |= now.saturating_sub(p.since_ms) >= grace_ms;
        entry.1.push(p.instance);
    }
    let mut changed = BTreeSet::new();
    for (app_id, (due, instances)) in waiting {
        if !due {
            continue;
        }
        {
            let mut inflight = inflight.lock().unwrap_or_else(|p| p.into_inner());
            // One fetch per app at a time, and not more often than the grace period.
            if inflight.get(&app_id).is_some_and(|t| t.elapsed() < grace.max(Duration::from_millis(500))) {
                continue;
            }
            inflight.insert(app_id.clone(), Instant::now());
        }
        let as_of = core.store.call(|s| Ok(Timestamp(s.high_water()?.0 + 1))).await?;
        match core.marathon.app(&app_id).await {
            Ok(Some(app)) => {
                core.metrics.spec_fetches.with_label_values(&["ok"]).inc();
                let app = SnapshotApp {
                    spec: app.spec.clone(),
                    tasks: app.tasks.iter().map(|t| (t.facts.clone(), t.healthy)).collect(),
                };
                core.store.call(move |s| s.apply_app(&app, as_of)).await?;
                info!(app_id = %app_id, waiting = instances.len(), "fetched app spec");
                changed.insert(app_id.as_str().to_owned());
            }
            Ok(None) => {
                core.metrics.spec_fetches.with_label_values(&["not_found"]).inc();
                info!(app_id = %app_id, waiting = instances.len(), "app no longer exists; dropping its waiting instances");
                let ids: Vec<_> = instances.into_iter().map(|i| (i, app_id.clone())).collect();
                core.store.call(move |s| s.bury(&ids, as_of)).await?;
                changed.insert(app_id.as_str().to_owned());
            }
            Err(e) => {
                core.metrics.spec_fetches.with_label_values(&["error"]).inc();
                warn!(app_id = %app_id, error = %e, "app spec fetch failed; will retry");
            }
        }
    }
    Ok(changed)
}

/// Drops tombstones older than `retention` every minute.
pub async fn pruner(core: Core, retention: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let retention_ms = retention.as_millis() as i64;
        let pruned = core
            .store
            .call(move |s| {
                let cutoff = Timestamp(s.high_water()?.0 - retention_ms);
                s.prune(cutoff)
            })
            .await;
        match pruned {
            Ok(0) => {}
            Ok(n) => debug!(removed = n, "pruned tombstones"),
            Err(e) => warn!(error = %e, "pruning failed"),
        }
    }
}
