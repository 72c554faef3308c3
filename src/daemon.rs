//! Wiring, timers and shutdown: builds the components from a validated
//! `Config` and runs the tasks of `switchboard run`.
//!
//! Tasks, each with one job:
//! - stream: reads Marathon's SSE (parse only) into an unbounded channel, so
//!   it never waits on anything else and Marathon never drops us for lag;
//! - consumer: folds events into the store, flushing once per burst, and
//!   marks the apps they touched dirty;
//! - planner (`planner`): takes the dirty apps, computes what each calls for
//!   and hands one want per app to every applier;
//! - one applier per backend (`applier`): the only writer of that backend's
//!   queue and ledger; plans against the ledger, takes the resync's listings,
//!   drains the queue with backoff;
//! - resync: on start, after every (re)connect and every `resync_interval`:
//!   Marathon's snapshot into the store, then a listing by every applier;
//! - fetcher: app specs for instances pending longer than the grace period;
//! - pruner, heartbeats (backends with expiring entries), the HTTP server.
//!
//! Shutdown: one `CancellationToken`; every task returns when it fires and
//! the store is flushed last.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::applier::{self, Applier};
use crate::assemble::Touch;
use crate::backends::Backend;
use crate::backends::consul::{ConsulBackend, ConsulConfig};
use crate::backends::kong::{KongBackend, KongConfig};
use crate::backends::vulcand::{VulcandBackend, VulcandConfig};
use crate::config::Config;
use crate::engine::Engine;
use crate::labels::LabelOptions;
use crate::marathon::client::{ClientConfig, MarathonClient};
use crate::marathon::event::Event;
use crate::marathon::stream::{self, StreamConfig, StreamItem};
use crate::metrics::Metrics;
use crate::planner::{Dirty, Inbox, Planner};
use crate::store::Store;

/// Event types Switchboard asks Marathon for (server-side filter). The
/// stream's own `event_stream_attached` must be among them, or a filtering
/// Marathon never sends it and the connection never counts as attached.
pub const EVENT_TYPES: &[&str] = &[
    "event_stream_attached",
    "status_update_event",
    "instance_changed_event",
    "health_status_changed_event",
    "instance_health_changed_event",
    "api_post_event",
    "deployment_info",
    "deployment_step_success",
    "app_terminated_event",
    "unhealthy_task_kill_event",
    "unhealthy_instance_kill_event",
    "unknown_task_terminated_event",
    "unknown_instance_terminated_event",
];

/// Builds the backends that are configured (each is optional).
pub fn build_backends(cfg: &Config) -> anyhow::Result<Vec<Arc<dyn Backend>>> {
    let mut out: Vec<Arc<dyn Backend>> = Vec::new();
    if let Some(url) = &cfg.consul {
        let b = ConsulBackend::new(ConsulConfig {
            url: url.clone(),
            token: cfg.consul_token.clone(),
            cluster: cfg.cluster.clone(),
            timeout: cfg.request_timeout,
            agents: cfg.consul_agents.clone(),
            tls: cfg.tls.consul.clone(),
        })
        .map_err(|e| anyhow::anyhow!("invalid setting {}: {e}", e.setting()))?;
        out.push(Arc::new(b));
    }
    if let Some(url) = &cfg.kong {
        let b = KongBackend::new(KongConfig {
            url: url.clone(),
            token: cfg.kong_token.clone(),
            token_header: cfg.kong_token_header.clone(),
            cluster: cfg.cluster.clone(),
            forward_to: cfg.kong_forward_to.clone(),
            timeout: cfg.request_timeout,
            tls: cfg.tls.kong.clone(),
        })
        .map_err(|e| anyhow::anyhow!("invalid setting {}: {e}", e.setting()))?;
        out.push(Arc::new(b));
    }
    if let Some(url) = &cfg.vulcand {
        let b = VulcandBackend::new(VulcandConfig {
            url: url.clone(),
            cluster: cfg.cluster.clone(),
            server_ttl: cfg.vulcand_server_ttl,
            timeout: cfg.request_timeout,
            tls: cfg.tls.vulcand.clone(),
        })
        .map_err(|e| anyhow::anyhow!("invalid setting {}: {e}", e.setting()))?;
        out.push(Arc::new(b));
    }
    Ok(out)
}

/// Builds the engine (store, Marathon client, backends) from a config.
pub fn build_engine(cfg: &Config, store: Store, metrics: Metrics) -> anyhow::Result<Engine> {
    let marathon = MarathonClient::with_tls(
        ClientConfig { urls: cfg.marathon.clone(), auth: cfg.marathon_auth.clone(), timeout: cfg.request_timeout },
        cfg.tls.marathon.clone(),
    )
    .context("invalid setting --marathon")?;
    Ok(Engine::new(
        store,
        marathon,
        build_backends(cfg)?,
        LabelOptions { separator: cfg.name_separator },
        cfg.statics.clone(),
        metrics,
    )
    .with_concurrency(cfg.backend_concurrency.clone()))
}

/// Runs the daemon until `shutdown` fires. `ready` receives the bound status
/// address once the HTTP server listens.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let store = Store::open(&cfg.data_dir).context("invalid setting --data-dir")?;
    let metrics = Metrics::new();
    let mut engine = build_engine(&cfg, store.clone(), metrics.clone())?;
    // HA: every backend write passes the fence; without --ha it always allows.
    let names: Vec<&'static str> = engine.backends.iter().map(|b| b.name()).collect();
    let sharing = crate::ha::Sharing::new(store.clone(), &cfg.cluster, &names);
    let (ha, elector) = crate::ha::start(&cfg, sharing, shutdown.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
    engine.backends = crate::ha::fence_all(engine.backends, &ha.fence);

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("invalid setting --listen: cannot bind {}", cfg.listen))?;
    let addr = listener.local_addr().context("listen address")?;
    info!(listen = %addr, cluster = %cfg.cluster, backends = engine.backends.len(), "switchboard running");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }

    let dirty = Arc::new(Dirty::default());
    // The status server's wake-up (after the operator lifted refusals)
    // replans every app.
    let plan_wake = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(crate::http::serve(listener, engine.clone(), plan_wake.clone(), shutdown.clone()));
    if ha.fence.is_ha() {
        tasks.spawn(publish_role(ha.clone(), engine.metrics.clone(), shutdown.clone()));
    }
    tasks.spawn(replan_all_on(plan_wake, dirty.clone(), shutdown.clone()));

    let (tx, rx) = mpsc::unbounded_channel();
    let stream_cfg = StreamConfig {
        urls: cfg.marathon.clone(),
        auth: cfg.marathon_auth.clone(),
        idle_timeout: cfg.idle_timeout,
        max_line: cfg.stream_line_limit,
        backoff_min: Duration::from_millis(100),
        backoff_max: Duration::from_secs(30),
        event_types: EVENT_TYPES.iter().map(|s| s.to_string()).collect(),
        tls: cfg.tls.marathon.clone(),
    };
    tasks.spawn(stream::run(stream_cfg, tx, shutdown.clone()));

    let resync_wake = Arc::new(Notify::new());
    if let Some(elector) = elector {
        tasks.spawn(elector);
        tasks.spawn(resync_on_takeover(ha.clone(), resync_wake.clone(), shutdown.clone()));
    }
    let mut appliers = Vec::new();
    let mut inboxes = Vec::new();
    for b in &engine.backends {
        let inbox = Arc::new(Inbox::default());
        inboxes.push((b.name(), inbox.clone()));
        let (handle, task) = applier::spawn(engine.clone(), b.clone(), inbox, ha.fence.clone(), shutdown.clone());
        tasks.spawn(task);
        appliers.push(handle);
        if let Some(every) = b.heartbeat_interval() {
            tasks.spawn(heartbeat(engine.clone(), b.clone(), every, shutdown.clone()));
        }
    }

    // Everything is planned once at start, against the ledger.
    dirty.mark_all();
    tasks.spawn(consume(engine.clone(), rx, dirty.clone(), resync_wake.clone(), shutdown.clone()));
    tasks.spawn(planner(engine.clone(), dirty.clone(), inboxes, shutdown.clone()));
    tasks.spawn(resyncer(
        engine.clone(),
        cfg.resync_interval,
        resync_wake,
        dirty.clone(),
        appliers,
        ha.fence.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(fetcher(engine.clone(), cfg.grace_period, dirty.clone(), shutdown.clone()));
    tasks.spawn(pruner(engine.clone(), cfg.tombstone_retention, shutdown.clone()));

    shutdown.cancelled().await;
    info!("shutting down");
    while tasks.join_next().await.is_some() {}
    store.flush().await.context("flushing the store")?;
    Ok(())
}

/// Most stream items folded in one transaction: a burst of events costs one
/// commit, not one per event.
const FOLD_BATCH: usize = 1024;

async fn consume(
    engine: Engine,
    mut rx: mpsc::UnboundedReceiver<StreamItem>,
    dirty: Arc<Dirty>,
    resync_wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            item = rx.recv() => match item { Some(i) => i, None => return },
        };
        let mut events = Vec::new();
        let mut next = Some(first);
        let mut taken = 0;
        while let Some(item) = next.take() {
            handle(&engine, item, &resync_wake, &mut events);
            taken += 1;
            if taken < FOLD_BATCH {
                next = rx.try_recv().ok();
            }
        }
        // Folded facts are not flushed here: the appliers flush before they
        // apply anything planned from them (one flush covers every tree), sled
        // flushes on its own within 200 ms, and facts lost to a crash are
        // what the start-up resync takes from Marathon again. Waiting here
        // for a flush per burst bounded the event rate by the disk.
        let touched = fold_burst(&engine, &events);
        if !touched.is_empty() {
            dirty.mark(touched);
        }
    }
}

/// Handles one stream item; its events go into `events`, to be folded with
/// the rest of the burst.
fn handle(engine: &Engine, item: StreamItem, resync_wake: &Notify, events: &mut Vec<Event>) {
    match item {
        StreamItem::Connected { endpoint } => {
            engine.metrics.stream_connected(&endpoint); // status hook: counter, gauge, live status
            info!(endpoint = %endpoint, "event stream connected; resyncing");
            resync_wake.notify_one();
        }
        StreamItem::Disconnected { reason } => {
            engine.metrics.stream_disconnected(&reason); // status hook
            warn!(reason = %reason, "event stream lost; reconnecting");
        }
        StreamItem::Oversized { limit } => {
            // The line is gone and so is its event: only a resync can repair it.
            engine.metrics.events_skipped.with_label_values(&["oversized"]).inc();
            warn!(limit, "event over the line limit skipped; resyncing");
            resync_wake.notify_one();
        }
        StreamItem::Malformed { event_type, error } => {
            engine.metrics.events_skipped.with_label_values(&["malformed"]).inc();
            warn!(event_type = %event_type, error = %error, "malformed event skipped");
        }
        StreamItem::Events { event_type, events: parsed } => {
            engine.metrics.events.with_label_values(&[&event_type]).inc();
            engine.metrics.event_received(); // status hook: last event
            for event in parsed {
                engine.metrics.saw_event(&event); // metrics hook: TASK_RUNNING receive instant
                match &event {
                    Event::Unknown { event_type } => {
                        engine.metrics.events_skipped.with_label_values(&["unknown_type"]).inc();
                        debug!(event_type = %event_type, "unknown event type skipped");
                    }
                    Event::Ignored { .. } => {}
                    _ => events.push(event),
                }
            }
        }
    }
}

/// Folds a burst of events into the store in one transaction (one receive
/// sequence number, one high-water update); if that fails, event by event,
/// so one bad record costs only its own event. The caller flushes. Returns
/// the apps whose facts were folded.
fn fold_burst(engine: &Engine, events: &[Event]) -> BTreeSet<String> {
    if events.is_empty() {
        return BTreeSet::new();
    }
    match fold_events(engine, events) {
        Ok(apps) => apps,
        Err(e) => {
            warn!(events = events.len(), error = %e, "cannot store a burst of events; storing them one by one");
            let mut apps = BTreeSet::new();
            for event in events {
                match fold_events(engine, std::slice::from_ref(event)) {
                    Ok(a) => apps.extend(a),
                    Err(e) => warn!(event = ?event, error = %e, "cannot store event"),
                }
            }
            apps
        }
    }
}

/// Folds the facts of `events` into the store in one transaction (the
/// caller flushes). Returns the apps they touched.
pub fn fold_events(engine: &Engine, events: &[Event]) -> Result<BTreeSet<String>, crate::store::Error> {
    let mut apps = BTreeSet::new();
    let mut touches = Vec::new();
    let mut high = crate::model::Timestamp::default();
    for event in events {
        for t in crate::assemble::touches(event) {
            let at = match &t {
                Touch::Instance(r) => r.last_at(),
                Touch::App(_, a) => a.stopped_at.unwrap_or_default(),
                _ => Default::default(),
            };
            high = high.max(at);
            match &t {
                Touch::Instance(r) => apps.insert(r.app_id.as_str().to_owned()),
                Touch::App(id, _) | Touch::Hint(id) => apps.insert(id.as_str().to_owned()),
                Touch::Spec(spec) => apps.insert(spec.id.as_str().to_owned()),
            };
            touches.push(t);
        }
    }
    let seq = engine.store.next_seq()?;
    engine.store.raise_high_water(high)?;
    engine.store.apply_touches(&touches, seq)?;
    Ok(apps)
}

/// Takes the dirty apps (all of them coalesced), plans them off the
/// runtime's threads (the store's reads block), and hands each applier its
/// wants. Writes no op itself.
async fn planner(
    engine: Engine,
    dirty: Arc<Dirty>,
    inboxes: Vec<(&'static str, Arc<Inbox>)>,
    shutdown: CancellationToken,
) {
    let mut state = Planner::default();
    loop {
        let set = tokio::select! {
            _ = shutdown.cancelled() => return,
            set = dirty.take() => set,
        };
        let timer = engine.metrics.plan_seconds.start_timer();
        let e = engine.clone();
        let retry = set.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            let wants = state.pass(&e, set);
            (state, wants)
        })
        .await;
        drop(timer);
        let wants = match outcome {
            Ok((s, wants)) => {
                state = s;
                wants
            }
            Err(e) => {
                warn!(error = %e, "planning pass panicked; starting over");
                state = Planner::default();
                dirty.mark_all();
                continue;
            }
        };
        match wants {
            Ok(mut wants) => {
                for (name, inbox) in &inboxes {
                    inbox.push(wants.remove(name).unwrap_or_default());
                }
            }
            Err(e) => {
                warn!(error = %e, "planning failed; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
                if retry.all {
                    dirty.mark_all();
                } else {
                    dirty.mark(retry.apps);
                }
            }
        }
    }
}

/// Every wake-up of `wake` replans every app.
async fn replan_all_on(wake: Arc<Notify>, dirty: Arc<Dirty>, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => dirty.mark_all(),
        }
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}

/// Resyncs on start (once the stream first connects), on every reconnect
/// and every `every`: Marathon's snapshot into the store, then each backend's
/// applier lists and repairs its backend. It writes no op itself.
async fn resyncer(
    engine: Engine,
    every: Option<Duration>,
    wake: Arc<Notify>,
    dirty: Arc<Dirty>,
    appliers: Vec<Applier>,
    fence: crate::ha::Fence,
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
            ok = resync_once(&engine, &dirty, &appliers, &fence) => ok,
        };
        failures = if ok { 0 } else { failures + 1 };
        // A failed resync is retried with backoff; otherwise wait for the
        // interval or the next (re)connect.
        let next = if ok { every } else { Some(crate::engine::backoff(failures).min(every.unwrap_or(Duration::MAX))) };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = wake.notified() => {}
            _ = sleep_opt(next) => {}
        }
    }
}

/// One resync; true when Marathon and every backend could be read. A standby
/// only takes Marathon's snapshot (its store stays warm); the backends are the
/// leader's to list and repair.
async fn resync_once(engine: &Engine, dirty: &Dirty, appliers: &[Applier], fence: &crate::ha::Fence) -> bool {
    let started = std::time::Instant::now(); // status hook
    if let Err(e) = engine.refresh_from_marathon().await {
        engine.metrics.resync_failed(started, &e.to_string()); // status hook
        warn!(error = %e, "resync failed");
        return false;
    }
    dirty.mark_all();
    if !fence.allows_write() {
        engine.metrics.resync_finished(started, &crate::engine::ResyncReport::default()); // status hook
        return true;
    }
    let mut report = crate::engine::ResyncReport::default();
    let observations = appliers.iter().map(|a| async move { (a.name(), a.observe().await) });
    for (name, result) in futures::future::join_all(observations).await {
        match result {
            Ok(ops) => {
                report.ops.insert(name, ops);
            }
            Err(e) => {
                debug!(backend = name, error = %e, "backend listing failed during resync");
                report.failed.push((name, e));
            }
        }
    }
    if let Err(e) = engine.finish_resync(&report) {
        warn!(error = %e, "cannot record the resync");
    }
    engine.metrics.resync_finished(started, &report); // status hook: duration, changes, first resync done
    if let Err(e) = engine.store.flush().await {
        warn!(error = %e, "cannot flush the store");
    }
    report.failed.is_empty()
}

/// Keeps the HA role (leader or standby, since when) in the live status that
/// `/ready`, the status page and `/state` show.
async fn publish_role(ha: crate::ha::Ha, metrics: Metrics, shutdown: CancellationToken) {
    let mut role = ha.watch_role();
    loop {
        let report = ha.role();
        metrics.live.lock().role =
            Some(crate::status::Role { role: report.role, since: report.since.unwrap_or_default() });
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = role.changed() => if changed.is_err() { return },
        }
        role.borrow_and_update();
    }
}

/// A replica that becomes the leader resyncs first: its ledger does not know
/// what the previous leader wrote, the backends' listings do.
async fn resync_on_takeover(ha: crate::ha::Ha, resync_wake: Arc<Notify>, shutdown: CancellationToken) {
    let mut role = ha.watch_role();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            changed = role.changed() => if changed.is_err() { return },
        }
        if matches!(*role.borrow_and_update(), crate::ha::Role::Leader { .. }) {
            info!("leader now; resyncing before writing");
            resync_wake.notify_one();
        }
    }
}

async fn fetcher(engine: Engine, grace: Duration, dirty: Arc<Dirty>, shutdown: CancellationToken) {
    let tick = (grace / 4).clamp(Duration::from_millis(20), Duration::from_millis(250));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(tick) => {}
        }
        match engine.fetch_pending(grace).await {
            Ok(apps) => dirty.mark(apps),
            Err(e) => warn!(error = %e, "spec fetch pass failed"),
        }
    }
}

async fn pruner(engine: Engine, retention: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(60)) => {}
        }
        let cutoff = match engine.store.high_water() {
            Ok(hw) => crate::model::Timestamp(hw.0 - retention.as_millis() as i64),
            Err(_) => continue,
        };
        match engine.store.prune(cutoff) {
            Ok(0) => {}
            Ok(n) => debug!(removed = n, "pruned tombstones"),
            Err(e) => warn!(error = %e, "pruning failed"),
        }
    }
}

async fn heartbeat(engine: Engine, b: Arc<dyn Backend>, every: Duration, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
        match engine.store.ledger(b.name()) {
            Ok(ledger) => {
                if let Err(e) = b.heartbeat(&ledger).await {
                    warn!(backend = b.name(), error = %e, "heartbeat failed");
                }
            }
            Err(e) => warn!(backend = b.name(), error = %e, "heartbeat: cannot read ledger"),
        }
    }
}
