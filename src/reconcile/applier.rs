//! The applier: one per backend, the only writer of that backend's queue and
//! ledger, and the one place where a write reaches the backend.
//!
//! What it does, in its own task:
//! - plans each app the planner hands it (an `AppWant`, newest per app in its
//!   `Inbox`) against that app's ledger entries with its queued ops on top
//!   (`plan_wants`, on the store's thread), and queues what differs;
//! - merges a resync's listing app by app: the resync installs the listing
//!   (`ApplierHandle::merge`) and marks every app dirty; each app's next want
//!   is then planned against what the backend showed, its queue replaced by
//!   that plan (a queued op the listing and the facts make stale is cancelled),
//!   entries already in place recorded in the ledger, and entries someone else
//!   removed forgotten;
//! - drains the queue: apps concurrently up to `--backend-concurrency`, one
//!   app's ops in order, every deregistration before any registration, one
//!   ledger commit per app, a transient failure backing off only its lane;
//! - refreshes expiring entries (`heartbeat`).
//!
//! Invariants:
//! - Every backend write (an op, a heartbeat) passes the HA fence here, just
//!   before it is sent (`Fence::begin_write`); the planner and every routing
//!   method stay outside the fence, so no wrapper can drop one.
//! - An op leaves the queue only in the transaction that records it in the
//!   ledger; a write is recorded in the `AppliedLog` once the ledger holds it,
//!   and a listing in flight meanwhile is not trusted for that registration:
//!   the ledger stands for the backend there.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::listing::Overlay;
pub use super::listing::{AppliedLog, ApplierHandle, Listed, Observation};
use super::planner::{AppWant, Inbox};
pub use super::wants::{Merge, ServiceIndex, plan_wants};
use super::{Error, backoff, now_ms};
use crate::backends::{Backend, BackendError, Claim, Registry};
use crate::ha::Fence;
use crate::metrics::Metrics;
use crate::model::{Registration, Timestamp};
use crate::plan::{Op, Refusal};
use crate::store::{QueuedOp, StoreHandle};

/// Outcome of draining one backend's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drain {
    /// Nothing due is left.
    Idle { next_due_ms: Option<u64> },
    /// A transient failure: the backend is likely down; try again then.
    Backoff { until_ms: u64 },
}

/// The applier of one backend.
pub struct Applier {
    backend: Backend,
    store: StoreHandle,
    metrics: Metrics,
    fence: Fence,
    /// Ops in flight at once.
    limit: usize,
    log: AppliedLog,
    overlay: Arc<Mutex<Option<Overlay>>>,
    services: ServiceIndex,
    /// Per lane: no op of the lane is tried before this local wall-clock
    /// millisecond (a transient failure backs off its lane).
    lanes: HashMap<Option<String>, u64>,
}

/// Ownership known during one drain, shared by the apps applied at once.
#[derive(Default)]
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

/// How one op went.
enum Outcome {
    Done,
    Retry {
        until_ms: u64,
        error: String,
    },
    Refused(Refusal),
    /// The HA gate stopped it (the lease ended): it stays queued as it was,
    /// no attempt counted, no lane backed off; the fence holds the drain.
    Fenced,
}

impl Applier {
    /// The applier of `backend`, and the handle the resync uses.
    pub fn new(
        backend: Backend,
        store: StoreHandle,
        metrics: Metrics,
        fence: Fence,
        limit: usize,
    ) -> (Applier, ApplierHandle) {
        let log = AppliedLog::default();
        let overlay = Arc::new(Mutex::new(None));
        let handle = ApplierHandle {
            backend: backend.clone(),
            store: store.clone(),
            log: log.clone(),
            overlay: overlay.clone(),
        };
        let applier = Applier {
            backend,
            store,
            metrics,
            fence,
            limit: limit.max(1),
            log,
            overlay,
            services: ServiceIndex::default(),
            lanes: HashMap::new(),
        };
        (applier, handle)
    }

    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// Plans `wants` (merging a listing waiting for their apps) and queues
    /// what differs. Returns the ops newly queued.
    pub async fn plan(&mut self, wants: Vec<AppWant>) -> Result<Vec<Op>, Error> {
        if wants.is_empty() {
            return Ok(Vec::new());
        }
        // The apps whose listing this plan merges, taken out of the overlay.
        let mut merging: HashMap<String, Vec<Registration>> = HashMap::new();
        let mut stale = BTreeSet::new();
        {
            let mut slot = lock(&self.overlay);
            if let Some(o) = slot.as_mut() {
                stale = self.log.written_since(o.mark);
                for w in wants.iter().filter(|w| w.epoch >= o.min_epoch) {
                    let own = o.by_app.remove(&w.app);
                    let mut listed = own.clone().unwrap_or_default();
                    // Entries listed under another name whose ids this app wants.
                    for r in &w.keep {
                        let Some(under) = o.by_id.get(&r.id).filter(|k| **k != w.app).cloned() else { continue };
                        if let Some(regs) = o.by_app.get_mut(&under)
                            && let Some(at) = regs.iter().position(|x| x.id == r.id)
                        {
                            listed.push(regs.swap_remove(at));
                        }
                    }
                    if own.is_some() || !listed.is_empty() {
                        merging.insert(w.app.clone(), listed);
                    }
                }
            }
        }
        let routing = self.backend.routing.clone();
        let services = std::mem::take(&mut self.services);
        let (services, ops) = self
            .store
            .call(move |s| {
                let mut services = services;
                let merges: HashMap<String, Merge<'_>> =
                    merging.iter().map(|(app, listed)| (app.clone(), Merge { listed, stale: &stale })).collect();
                let ops = plan_wants(s, routing.as_ref(), &wants, &merges, &mut services);
                Ok((services, ops))
            })
            .await?;
        self.services = services;
        let ops = ops?;
        let name = self.name();
        {
            let mut slot = lock(&self.overlay);
            if let Some(o) = slot.as_mut() {
                o.ops.extend(ops.iter().cloned());
                if o.by_app.is_empty()
                    && let Some(done) = slot.take()
                {
                    self.log.finish(done.mark);
                    if !done.ops.is_empty() {
                        info!(backend = name, ops = done.ops.len(), "resync queued repairs");
                    }
                    if let Some(reply) = done.reply {
                        let _ = reply.send(Ok(done.ops));
                    }
                }
            }
        }
        if !ops.is_empty() {
            debug!(backend = name, ops = ops.len(), "queued");
            // Queued ops are durable before any of them is tried.
            self.store.flush().await?;
        }
        self.update_gauges().await?;
        Ok(ops)
    }

    /// Applies the due ops: every deregistration first (traffic drains before
    /// anything new appears), then the registrations. Within each phase the
    /// ops of different apps run concurrently, up to the backend's limit; the
    /// ops of one app one after the other, in key order, and the ledger takes
    /// each app's completed ops in one transaction. A transient failure backs
    /// off its lane: the rest of that lane waits, other lanes go on.
    pub async fn drain(&mut self) -> Result<Drain, Error> {
        use futures::StreamExt;

        let name = self.name();
        let now = now_ms();
        let mut next_due: Option<u64> = None;
        let mut due = |at: u64| next_due = Some(next_due.map_or(at, |n: u64| n.min(at)));
        let queued = self.store.call(move |s| s.queued(name)).await?;
        // Phase 0: deregistrations, phase 1: registrations; by app within.
        let mut phases: [BTreeMap<String, Vec<QueuedOp>>; 2] = Default::default();
        for q in queued {
            let lane = self.backend.routing.lane(q.op.registration());
            let not_before = q.not_before_ms.max(self.lanes.get(&lane).copied().unwrap_or(0));
            if not_before > now {
                due(not_before);
                continue;
            }
            let phase = usize::from(matches!(q.op, Op::Register(_)));
            phases[phase].entry(q.op.registration().app_id.clone()).or_default().push(q);
        }
        if phases.iter().all(BTreeMap::is_empty) {
            self.update_gauges().await?;
            return Ok(Drain::Idle { next_due_ms: next_due });
        }
        // Services whose names are ours by a recorded intent, or by what the
        // ledger holds of the apps drained now, read before any of their ops
        // runs: a deregistration in the first phase must not make the service
        // look someone else's to the registration after it.
        let apps: Vec<String> = phases.iter().flat_map(BTreeMap::keys).cloned().collect();
        let (intents, owned) = self
            .store
            .call(move |s| {
                let intents = s.intents(name)?;
                let mut owned = intents.clone();
                for app in &apps {
                    owned.extend(s.ledger_of(name, app)?.into_iter().map(|r| r.service));
                }
                Ok((intents, owned))
            })
            .await?;
        let claims = Claims { owned: Mutex::new(owned), intents: Mutex::new(intents), failed: Mutex::default() };
        self.claim_first_writes(phases[1].values().flatten(), &claims).await?;
        // Lanes that failed during this drain: their remaining ops wait.
        let failed: Mutex<BTreeSet<Option<String>>> = Mutex::default();
        let mut refused = false;
        let mut kept_services = false;
        let mut backoff_until: Option<u64> = None;
        for phase in phases {
            let groups: Vec<_> = phase.into_values().map(|ops| self.apply_group(ops, &claims, &failed)).collect();
            let mut results = futures::stream::iter(groups).buffer_unordered(self.limit);
            let mut finished = Vec::new();
            while let Some(outcomes) = results.next().await {
                finished.push(outcomes?);
            }
            drop(results);
            let settled = self.settle(finished, &claims).await?;
            refused |= settled.refused;
            kept_services |= settled.kept_services;
            for (lane, until_ms) in settled.backoff {
                self.lanes.insert(lane, until_ms);
                backoff_until = Some(backoff_until.map_or(until_ms, |u| u.min(until_ms)));
            }
        }
        if refused || kept_services {
            // A restart must not try a refusal again either, nor take the
            // objects of a service it keeps for someone else's.
            self.store.flush().await?;
        }
        let left = self.update_gauges().await?;
        Ok(match backoff_until {
            Some(until_ms) => Drain::Backoff { until_ms: next_due.map_or(until_ms, |n| n.min(until_ms)) },
            // What failed lanes left, and what is due again at once.
            None if left > 0 => Drain::Idle { next_due_ms: Some(next_due.unwrap_or(now)) },
            None => Drain::Idle { next_due_ms: next_due },
        })
    }

    /// Records what the ops of a phase came to, in one store call for every
    /// app (the apps one after the other, as they finished): completed ops
    /// into the ledger, retries and refusals, intents. One call, not one per
    /// app: each call waits its turn on the store's thread behind folds and
    /// plans, and a drain of a storm settles hundreds of apps.
    async fn settle(&self, groups: Vec<Vec<(QueuedOp, Outcome)>>, claims: &Claims) -> Result<Settled, Error> {
        let name = self.name();
        let work: Vec<SettleWork> = groups.iter().map(|outcomes| SettleWork::of(outcomes, claims)).collect();
        let answers = self
            .store
            .call(move |s| {
                let mut answers = Vec::with_capacity(work.len());
                for w in work {
                    answers.push(w.record(s, name)?);
                }
                Ok(answers)
            })
            .await;
        let answers = match answers {
            Ok(answers) => answers,
            Err(e) => {
                // The writes were sent: a listing in flight may not show them.
                for (q, _) in groups.iter().flatten() {
                    self.log.record(q.op.key());
                }
                return Err(e.into());
            }
        };
        let mut settled = Settled::default();
        for (outcomes, (intended, attempts, new_refusals)) in groups.into_iter().zip(answers) {
            settled.kept_services |= !intended.is_empty();
            lock(&claims.intents).extend(intended);
            self.report(outcomes, attempts, new_refusals, &mut settled);
        }
        Ok(settled)
    }

    /// Logs and counts what one app's ops came to, once the store holds it.
    fn report(
        &self,
        outcomes: Vec<(QueuedOp, Outcome)>,
        attempts: Vec<u32>,
        new_refusals: Vec<bool>,
        settled: &mut Settled,
    ) {
        let name = self.name();
        let (mut attempts, mut new_refusals) = (attempts.into_iter(), new_refusals.into_iter());
        for (q, outcome) in outcomes {
            // Recorded once the ledger holds it: a listing that read the
            // ledger before this point may miss this write, and so must take
            // it as stale.
            self.log.record(q.op.key());
            let reg = q.op.registration();
            match outcome {
                Outcome::Done => {
                    self.metrics.ops.with_label_values(&[name, q.op.verb(), "ok"]).inc();
                    self.metrics.applied(name, &q.op); // metrics hook: TASK_RUNNING → 2xx latency
                    info!(backend = name, op = q.op.verb(), app_id = %reg.app_id, task_id = %reg.task_id, service = %reg.service, id = %reg.id, "applied");
                }
                Outcome::Retry { until_ms, error } => {
                    let lane = self.backend.routing.lane(reg);
                    let n = attempts.next().unwrap_or_default();
                    self.metrics.ops.with_label_values(&[name, q.op.verb(), "retry"]).inc();
                    warn!(backend = name, lane = lane.as_deref().unwrap_or("all"), op = q.op.verb(), app_id = %reg.app_id, task_id = %reg.task_id, id = %reg.id, attempts = n, error = %error, retry_in_ms = until_ms.saturating_sub(now_ms()), "backend unavailable");
                    settled.backoff.push((lane, until_ms));
                }
                Outcome::Refused(r) => {
                    self.metrics.ops.with_label_values(&[name, q.op.verb(), "failed"]).inc();
                    if new_refusals.next().unwrap_or(false) {
                        settled.refused = true;
                        self.metrics.refusals_recorded.with_label_values(&[name]).inc();
                        warn!(backend = name, op = q.op.verb(), app_id = %reg.app_id, task_id = %reg.task_id, id = %reg.id, error = %r.reason, "refused; not retried until its input changes or `reconcile --once --retry-refused`");
                    }
                }
                Outcome::Fenced => {}
            }
        }
    }

    /// Applies one app's due ops in order; after a transient failure in a
    /// lane, skips the rest of that lane (and ops whose lane failed meanwhile
    /// in another app).
    async fn apply_group(
        &self,
        ops: Vec<QueuedOp>,
        claims: &Claims,
        failed: &Mutex<BTreeSet<Option<String>>>,
    ) -> Result<Vec<(QueuedOp, Outcome)>, Error> {
        let name = self.name();
        let mut out = Vec::with_capacity(ops.len());
        for q in ops {
            let lane = self.backend.routing.lane(q.op.registration());
            if lock(failed).contains(&lane) {
                continue;
            }
            let started = Instant::now();
            let result = match self.claim(&q.op, claims).await? {
                Ok(()) => self.write(&q.op).await,
                Err(e) => Err(e),
            };
            self.metrics.op_seconds.with_label_values(&[name, q.op.verb()]).observe(started.elapsed().as_secs_f64());
            let outcome = match result {
                Ok(()) => Outcome::Done,
                Err(e) if e.is_fenced() => {
                    debug!(backend = name, op = q.op.verb(), id = %q.op.registration().id, error = %e, "fenced off; stays queued");
                    // The rest of this app's ops would meet the same fence.
                    out.push((q, Outcome::Fenced));
                    break;
                }
                Err(e) if e.is_transient() => {
                    // The rest of this lane waits (the check above); the app's
                    // ops in other lanes (another host's agent) go on.
                    lock(failed).insert(lane);
                    let delay = backoff(q.attempts + 1);
                    Outcome::Retry { until_ms: now_ms() + delay.as_millis() as u64, error: e.to_string() }
                }
                Err(e) => {
                    let reg = q.op.registration();
                    Outcome::Refused(Refusal {
                        backend: name.to_owned(),
                        app_id: reg.app_id.clone(),
                        entity: reg.id.clone(),
                        op: q.op.verb().to_owned(),
                        reason: e.to_string(),
                        since: Timestamp::now().to_string(),
                        input: crate::plan::input_hash(&q.op),
                    })
                }
            };
            out.push((q, outcome));
        }
        Ok(out)
    }

    /// One write to the backend: sent only while the fence allows it.
    async fn write(&self, op: &Op) -> Result<(), BackendError> {
        let Some(_write) = self.fence.begin_write() else {
            // The op stays queued for whoever leads next (us, later).
            return Err(BackendError::Fenced {
                backend: self.name(),
                what: op.verb().to_owned(),
                message: "not the HA leader: write fenced off".to_owned(),
            });
        };
        let registry: &dyn Registry = self.backend.registry.as_ref();
        tracing::Instrument::instrument(registry.apply(op), crate::metrics::op_span(self.name(), op)).await // metrics hook: app_id, task_id on backend lines
    }

    /// Asks the backend whose a service's names are, before its first write;
    /// a free one's intent is shared with the other HA replicas first.
    async fn ask(&self, reg: &Registration) -> Result<Claim, BackendError> {
        let claim = self.backend.registry.claim(reg).await?;
        if matches!(claim, Claim::Free) {
            // No first write before the other replicas can know the service is ours.
            self.fence.share_intent(self.name(), &reg.service).await.map_err(|e| {
                let (backend, what) = (self.name(), format!("claim service {}", reg.service));
                let message = format!("cannot share the intent with the other replicas: {e}");
                // The lease ended: the op waits for the fence, like any write.
                if self.fence.allows_write() {
                    BackendError::Transient { backend, what, message }
                } else {
                    BackendError::Fenced { backend, what, message }
                }
            })?;
        }
        Ok(claim)
    }

    /// Before the first write of a service whose names neither the ledger nor
    /// a recorded intent make ours: refuses if someone else holds them; on a
    /// backend whose ledger is the only ownership record, records the intent
    /// durably first, so a retry after a kill -9 knows the names it finds as
    /// its own.
    async fn claim(&self, op: &Op, claims: &Claims) -> Result<Result<(), BackendError>, Error> {
        let Op::Register(reg) = op else { return Ok(Ok(())) };
        if lock(&claims.owned).contains(&reg.service) {
            return Ok(Ok(()));
        }
        let backend = self.name();
        if let Some((transient, message)) = lock(&claims.failed).get(&reg.service).cloned() {
            let what = format!("register {} (service {} of app {})", reg.id, reg.service, reg.app_id);
            return Ok(Err(if transient && !self.fence.allows_write() {
                // Asked before the lease ended: waits for the fence.
                BackendError::Fenced { backend, what, message }
            } else if transient {
                BackendError::Transient { backend, what, message }
            } else {
                BackendError::Permanent { backend, what, message }
            }));
        }
        let (app, service) = (reg.app_id.clone(), reg.service.clone());
        let ours = self
            .store
            .call(move |s| {
                Ok(s.ledger_of(backend, &app)?.iter().any(|r| r.service == service)
                    || s.ledger_holds_service(backend, &service)?)
            })
            .await?;
        if ours {
            lock(&claims.owned).insert(reg.service.clone());
            return Ok(Ok(()));
        }
        match self.ask(reg).await {
            Ok(Claim::Tagged) => Ok(Ok(())),
            Ok(Claim::Free) => {
                let service = reg.service.clone();
                self.store.call(move |s| s.intend(backend, &service)).await?;
                self.store.flush().await?;
                lock(&claims.owned).insert(reg.service.clone());
                lock(&claims.intents).insert(reg.service.clone());
                Ok(Ok(()))
            }
            Ok(Claim::Held(holder)) => Ok(Err(BackendError::Permanent {
                backend,
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
        ops: impl Iterator<Item = &'a QueuedOp>,
        claims: &Claims,
    ) -> Result<(), Error> {
        use futures::StreamExt;

        let name = self.name();
        let mut first: BTreeMap<String, Registration> = BTreeMap::new();
        for q in ops {
            if let Op::Register(reg) = &q.op
                && !first.contains_key(&reg.service)
                && !lock(&claims.owned).contains(&reg.service)
            {
                first.insert(reg.service.clone(), reg.clone());
            }
        }
        if first.is_empty() {
            return Ok(());
        }
        let services: Vec<String> = first.keys().cloned().collect();
        let held = self
            .store
            .call(move |s| {
                let mut held = Vec::new();
                for service in services {
                    if s.ledger_holds_service(name, &service)? {
                        held.push(service);
                    }
                }
                Ok(held)
            })
            .await?;
        for service in held {
            first.remove(&service);
            lock(&claims.owned).insert(service);
        }
        if first.is_empty() {
            return Ok(());
        }
        let answers: Vec<(Registration, Result<Claim, BackendError>)> = futures::stream::iter(first.into_values())
            .map(|reg| async move {
                let answer = self.ask(&reg).await;
                (reg, answer)
            })
            .buffer_unordered(self.limit)
            .collect()
            .await;
        let mut free = Vec::new();
        for (reg, answer) in answers {
            match answer {
                Ok(Claim::Tagged) => {
                    lock(&claims.owned).insert(reg.service);
                }
                Ok(Claim::Free) => free.push(reg.service),
                Ok(Claim::Held(holder)) => {
                    lock(&claims.failed).insert(reg.service, (false, holder));
                }
                Err(BackendError::Transient { message, .. } | BackendError::Fenced { message, .. }) => {
                    lock(&claims.failed).insert(reg.service, (true, message));
                }
                Err(BackendError::Permanent { message, .. }) => {
                    lock(&claims.failed).insert(reg.service, (false, message));
                }
            }
        }
        if !free.is_empty() {
            let services = free.clone();
            self.store
                .call(move |s| {
                    for service in &services {
                        s.intend(name, service)?;
                    }
                    Ok(())
                })
                .await?;
            // Intents are durable before the first write they announce.
            self.store.flush().await?;
            for service in free {
                lock(&claims.intents).insert(service.clone());
                lock(&claims.owned).insert(service);
            }
        }
        Ok(())
    }

    /// Refreshes the entries the ledger holds on a backend whose entries
    /// expire; a write like any other, so it passes the fence.
    pub async fn heartbeat(&self) {
        let name = self.name();
        let Some(_write) = self.fence.begin_write() else { return };
        match self.store.call(move |s| s.ledger(name)).await {
            Ok(ledger) => {
                if let Err(e) = self.backend.registry.heartbeat(&ledger).await {
                    warn!(backend = name, error = %e, "heartbeat failed");
                }
            }
            Err(e) => warn!(backend = name, error = %e, "heartbeat: cannot read the ledger"),
        }
    }

    /// The queue, ledger and refusal gauges; returns the queue's length.
    async fn update_gauges(&self) -> Result<usize, Error> {
        let name = self.name();
        let (queued, held, refused) =
            self.store.call(move |s| Ok((s.queue_len(name), s.ledger_len(name), s.refusals(name)?.len()))).await?;
        self.metrics.queue_depth.with_label_values(&[name]).set(queued as i64);
        self.metrics.registered.with_label_values(&[name]).set(held as i64);
        self.metrics.refusals.with_label_values(&[name]).set(refused as i64);
        Ok(queued)
    }

    /// The applier's task: plans what its inbox holds, drains, heartbeats,
    /// until `shutdown`. With `--ha` it drains only while the fence is open
    /// and the lock confirmed.
    pub async fn run(mut self, inbox: Arc<Inbox>, shutdown: CancellationToken) {
        let name = self.name();
        let beat = self.backend.registry.heartbeat_interval();
        let mut next_beat = beat.map(|d| tokio::time::Instant::now() + d);
        loop {
            let fenced = self.fence.is_ha() && (!self.fence.allows_write() || !self.confirmed().await);
            let drained = if fenced { Ok(Drain::Idle { next_due_ms: None }) } else { self.drain().await };
            let wait = match drained {
                Ok(Drain::Idle { next_due_ms: None }) => None,
                Ok(Drain::Idle { next_due_ms: Some(at) }) | Ok(Drain::Backoff { until_ms: at }) => {
                    Some(Duration::from_millis(at.saturating_sub(now_ms()).max(10)))
                }
                Err(e) => {
                    warn!(backend = name, error = %e, "applier failed; retrying");
                    Some(Duration::from_secs(1))
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.fence.changed(), if fenced => {} // leader again, or renewed
                _ = inbox.ready() => {
                    let wants = inbox.take();
                    if let Err(e) = self.plan(wants).await {
                        warn!(backend = name, error = %e, "planning failed");
                    }
                }
                _ = sleep_until(next_beat) => {
                    next_beat = beat.map(|d| tokio::time::Instant::now() + d);
                    self.heartbeat().await;
                }
                _ = sleep_opt(wait) => {}
            }
        }
    }

    /// With `--ha`, before a batch of writes: is something due, and does the
    /// lock key still show our session? (Without `--ha`: always.)
    async fn confirmed(&self) -> bool {
        let name = self.name();
        let due = self.store.call(move |s| Ok(s.queue_len(name) > 0)).await.unwrap_or(true);
        !due || self.fence.confirm().await
    }
}

/// What settling one app's outcomes came to.
#[derive(Default)]
struct Settled {
    refused: bool,
    kept_services: bool,
    backoff: Vec<(Option<String>, u64)>,
}

/// What the store answers for one app's settle: the services now kept by an
/// intent, the attempts of each retry, and which refusals are new.
type Recorded = (Vec<String>, Vec<u32>, Vec<bool>);

/// What settling one app's outcomes writes, taken apart before the store call.
struct SettleWork {
    done: Vec<Op>,
    drop_intents: Vec<String>,
    maybe_keep: Vec<String>,
    retries: Vec<(Op, u64, String)>,
    refusals: Vec<(Op, Refusal)>,
}

impl SettleWork {
    fn of(outcomes: &[(QueuedOp, Outcome)], claims: &Claims) -> SettleWork {
        let mut w = SettleWork {
            done: Vec::new(),
            drop_intents: Vec::new(),
            maybe_keep: Vec::new(),
            retries: Vec::new(),
            refusals: Vec::new(),
        };
        for (q, outcome) in outcomes {
            match outcome {
                Outcome::Done => {}
                Outcome::Retry { until_ms, error } => {
                    w.retries.push((q.op.clone(), *until_ms, error.clone()));
                    continue;
                }
                Outcome::Refused(r) => {
                    w.refusals.push((q.op.clone(), r.clone()));
                    continue;
                }
                // Stays queued as it was: nothing to record.
                Outcome::Fenced => continue,
            }
            w.done.push(q.op.clone());
            let reg = q.op.registration();
            match &q.op {
                // The ledger holds the service now, or nothing is left of it.
                Op::Register(_) | Op::Deregister { service_empty: true, .. } => {
                    if lock(&claims.intents).remove(&reg.service) {
                        w.drop_intents.push(reg.service.clone());
                    }
                }
                Op::Deregister { service_empty: false, .. } => w.maybe_keep.push(reg.service.clone()),
            }
        }
        w
    }

    /// On the store's thread: the ledger takes the completed ops, then
    /// intents, retries and refusals. Returns the services now kept by an
    /// intent, the attempts of each retry and which refusals are new.
    fn record(self, s: &crate::store::Store, name: &str) -> Result<Recorded, crate::store::Error> {
        s.complete_many(name, &self.done)?;
        for service in &self.drop_intents {
            s.drop_intent(name, service)?;
        }
        // The service's own objects stay (another instance is on its way):
        // the ledger no longer says they are ours, so an intent does.
        let mut intended = Vec::new();
        for service in self.maybe_keep {
            if !s.ledger_holds_service(name, &service)? {
                s.intend(name, &service)?;
                intended.push(service);
            }
        }
        let mut attempts = Vec::new();
        for (op, until_ms, error) in &self.retries {
            attempts.push(s.retry_later(name, op, *until_ms, error)?);
        }
        let mut new_refusals = Vec::new();
        for (op, refusal) in &self.refusals {
            s.drop_queued(name, op)?;
            new_refusals.push(s.refuse(refusal)?);
        }
        Ok((intended, attempts, new_refusals))
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

async fn sleep_until(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
