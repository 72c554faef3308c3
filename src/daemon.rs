//! Wiring, timers and shutdown: builds the components from a validated
//! `Config` and runs the tasks of `switchboard run`.
//!
//! Tasks, each with one job:
//! - stream: reads Marathon's SSE (parse only) into a bounded channel to the
//!   consumer; it waits only when the consumer is `MAX_WAITING` events
//!   behind (the consumer then resyncs once it stayed caught up, in case
//!   Marathon dropped events of a client that fell behind);
//! - the store's own thread (`store::StoreHandle`): every sled call;
//! - consumer, planner, one applier per backend, resync, fetcher, pruner: the
//!   roles of the reconcile core (`reconcile`);
//! - the HTTP server (`http`, over a read-only `http::View`), the HA elector.
//!
//! Shutdown: one `CancellationToken`; every task returns when it fires and
//! the store is flushed last.
//!
//! The runtime's threads never wait on sled: a stalled disk holds the store's
//! thread and whatever awaits it, while the HTTP server, the event stream and
//! the HA elector go on (`tests/store_stall.rs`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::backends::{Backend, KINDS};
use crate::config::Config;
use crate::ha::Fence;
use crate::labels::LabelOptions;
use crate::marathon::client::{ClientConfig, MarathonClient};
use crate::marathon::stream::{self, StreamConfig};
use crate::metrics::Metrics;
use crate::reconcile::applier::Applier;
use crate::reconcile::planner::{Dirty, Inbox, PlanInputs};
use crate::reconcile::{Core, Labels, consumer, planner, resync};
use crate::store::{Store, StoreHandle, StoreOptions};

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

/// Builds the backends that are on, one kind at a time (`KINDS` order):
/// each kind builds its own from its settings, its write requests behind
/// `gate` (the HA fence; `Fence::always()` without `--ha`).
pub fn build_backends(cfg: &Config, gate: &Fence) -> anyhow::Result<Vec<Backend>> {
    let mut out: Vec<Backend> = Vec::new();
    for kind in KINDS {
        if let Some(settings) = cfg.backend(kind.name).filter(|s| s.is_on()) {
            out.push((kind.build)(settings, gate)?);
        }
    }
    Ok(out)
}

/// Builds the core (store thread, Marathon client, backends behind `gate`) from a config.
pub fn build_core(cfg: &Config, store: StoreHandle, metrics: Metrics, gate: &Fence) -> anyhow::Result<Core> {
    let marathon = MarathonClient::with_tls(
        ClientConfig { urls: cfg.marathon.clone(), auth: cfg.marathon_auth.clone(), timeout: cfg.request_timeout },
        cfg.tls.marathon.clone(),
    )
    .context("invalid setting --marathon")?;
    Ok(Core {
        store,
        marathon,
        backends: build_backends(cfg, gate)?,
        labels: Labels { opts: LabelOptions { separator: cfg.name_separator }, statics: Arc::new(cfg.statics.clone()) },
        metrics,
        concurrency: Arc::new(cfg.backend_concurrency.clone()),
    })
}

/// Opens the store of `cfg` and moves it onto its own thread.
pub fn open_store(cfg: &Config) -> anyhow::Result<StoreHandle> {
    let opts = StoreOptions { cache_bytes: cfg.store_cache };
    let store = Store::open_with(&cfg.data_dir, &opts).context("invalid setting --data-dir")?;
    Ok(StoreHandle::spawn(store)?)
}

/// Runs the daemon until `shutdown` fires. `ready` receives the bound status
/// address once the HTTP server listens.
pub async fn run(
    cfg: Config,
    shutdown: CancellationToken,
    ready: Option<tokio::sync::oneshot::Sender<std::net::SocketAddr>>,
) -> anyhow::Result<()> {
    let store = open_store(&cfg)?;
    let metrics = Metrics::new();
    // The fence first: every backend client sends its writes through it.
    let elector = crate::ha::prepare(cfg.ha_wiring()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let core = build_core(&cfg, store.clone(), metrics.clone(), &elector.fence())?;
    let names = core.backend_names();
    let sharing = crate::ha::Sharing::new(store.clone(), &cfg.cluster, &names);
    let (ha, elector) = elector.start(sharing, shutdown.clone());

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("invalid setting --listen: cannot bind {}", cfg.listen))?;
    let addr = listener.local_addr().context("listen address")?;
    info!(listen = %addr, cluster = %cfg.cluster, backends = core.backends.len(), "switchboard running");
    if let Some(tx) = ready {
        let _ = tx.send(addr);
    }

    let dirty = Arc::new(Dirty::default());
    // The status server's wake-up (after the operator lifted refusals)
    // replans every app.
    let plan_wake = Arc::new(Notify::new());
    let mut tasks = tokio::task::JoinSet::new();
    let view = crate::http::View::new(store.clone(), metrics.clone(), names.clone()).with_ha(ha.clone());
    tasks.spawn(crate::http::serve(listener, view, plan_wake.clone(), shutdown.clone()));
    if ha.fence.is_ha() {
        tasks.spawn(publish_role(ha.clone(), metrics.clone(), shutdown.clone()));
    }
    tasks.spawn(replan_all_on(plan_wake, dirty.clone(), shutdown.clone()));

    let (tx, rx) = mpsc::channel(crate::reconcile::consumer::CHANNEL_CAPACITY);
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
    let mut handles = Vec::new();
    let mut inboxes = Vec::new();
    for b in &core.backends {
        let inbox = Arc::new(Inbox::default());
        inboxes.push((b.name(), inbox.clone()));
        let limit = core.concurrency(b.name());
        let (applier, handle) = Applier::new(b.clone(), store.clone(), metrics.clone(), ha.fence.clone(), limit);
        tasks.spawn(applier.run(inbox, shutdown.clone()));
        handles.push(handle);
    }

    // Everything is planned once at start, against the ledger.
    dirty.mark_all();
    tasks.spawn(consumer::run(
        store.clone(),
        metrics.clone(),
        rx,
        dirty.clone(),
        resync_wake.clone(),
        shutdown.clone(),
    ));
    let inputs = PlanInputs {
        routing: core.backends.iter().map(|b| b.routing.clone()).collect(),
        labels: core.labels.clone(),
        metrics: metrics.clone(),
    };
    tasks.spawn(planner::run(store.clone(), inputs, dirty.clone(), inboxes, shutdown.clone()));
    tasks.spawn(resync::run(
        core.clone(),
        cfg.resync_interval,
        resync_wake,
        dirty.clone(),
        handles,
        ha.fence.clone(),
        shutdown.clone(),
    ));
    tasks.spawn(resync::fetcher(core.clone(), cfg.grace_period, dirty.clone(), shutdown.clone()));
    tasks.spawn(resync::pruner(core.clone(), cfg.tombstone_retention, shutdown.clone()));

    shutdown.cancelled().await;
    info!("shutting down");
    while tasks.join_next().await.is_some() {}
    store.flush().await.context("flushing the store")?;
    Ok(())
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
