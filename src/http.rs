//! The status server of `switchboard run`: `/healthz`, `/metrics`
//! (Prometheus text), `/state` (JSON, what `switchboard state` prints), a
//! plain-text summary at `/`, and one write: `POST /api/retry-refused`.
//!
//! Invariant: nothing here writes to a backend, and the only store write is
//! `POST /api/retry-refused` (what `switchboard reconcile --once
//! --retry-refused` asks a running daemon, which holds the store's lock): it
//! lifts the refusals in force and wakes the planner. It takes no body and is
//! idempotent; the server listens on loopback unless `--listen` says otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::assemble::{self, Status};
use crate::engine::Engine;
use crate::model::Registration;
use crate::plan::{Refusal, Rejection};
use crate::store::{PendingEntry, QueuedOp, Store};

/// Everything the store holds, for `switchboard state` and `/state`.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct StateReport {
    pub apps: Vec<AppLine>,
    pub instances: Vec<InstanceLine>,
    pub pending: Vec<PendingEntry>,
    pub ledger: BTreeMap<String, Vec<Registration>>,
    pub queue: BTreeMap<String, Vec<QueuedOp>>,
    pub rejections: Vec<Rejection>,
    /// Permanent refusals in force: not retried until their input changes.
    #[serde(default)]
    pub refusals: Vec<Refusal>,
    pub last_resync: Option<String>,
    /// HA role (leader or standby, and since when); absent without `--ha`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::ha::RoleReport>, // HA role
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct AppLine {
    pub app_id: String,
    pub version: Option<String>,
    pub stopped_at: Option<String>,
}

#[derive(Debug, Serialize, serde::Deserialize)]
pub struct InstanceLine {
    pub instance: String,
    pub app_id: String,
    pub task_id: Option<String>,
    pub state: Option<String>,
    /// `ready`, `idle`, `dead`, or `pending: <what it lacks>`.
    pub status: String,
    pub endpoint: Option<String>,
    pub healthy: Option<bool>,
}

/// Reads a consistent-enough picture of the store (each tree read once).
pub fn state_report(store: &Store, backends: &[&str]) -> Result<StateReport, crate::store::Error> {
    let specs = store.newest_specs()?;
    let apps = store.apps()?;
    let mut app_ids: std::collections::BTreeSet<_> = specs.keys().cloned().collect();
    app_ids.extend(apps.keys().cloned());
    let app_lines = app_ids
        .into_iter()
        .map(|id| AppLine {
            version: specs.get(&id).map(|s| s.version.clone()),
            stopped_at: apps.get(&id).and_then(|a| a.stopped_at).map(|t| t.to_string()),
            app_id: id.to_string(),
        })
        .collect();
    let instances = store
        .instances()?
        .into_iter()
        .map(|rec| {
            let status = match assemble::status(&rec, apps.get(&rec.app_id), specs.get(&rec.app_id)) {
                Status::Ready => "ready".to_owned(),
                Status::Idle => "idle".to_owned(),
                Status::Dead => "dead".to_owned(),
                Status::Pending(lack) => format!("pending: {lack}"),
            };
            InstanceLine {
                instance: rec.instance.to_string(),
                app_id: rec.app_id.to_string(),
                task_id: rec.location.as_ref().map(|l| l.task_id.to_string()),
                state: rec.state.as_ref().map(|s| s.state.to_string()),
                status,
                endpoint: rec.location.as_ref().map(|l| format!("{} {:?} {:?}", l.host, l.ports, l.ip_addresses)),
                healthy: rec.health.as_ref().and_then(|h| h.healthy),
            }
        })
        .collect();
    let mut ledger = BTreeMap::new();
    let mut queue = BTreeMap::new();
    for b in backends {
        ledger.insert(b.to_string(), store.ledger(b)?);
        queue.insert(b.to_string(), store.queued(b)?);
    }
    Ok(StateReport {
        apps: app_lines,
        instances,
        pending: store.pending()?,
        ledger,
        queue,
        rejections: store.rejections()?,
        refusals: store.all_refusals()?,
        last_resync: store.last_resync()?,
        role: None, // HA role: set by the daemon's /state
    })
}

impl StateReport {
    /// Human-readable rendering for `switchboard state`.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if let Some(r) = &self.role {
            let _ = writeln!(out, "role: {} since {}", r.role, r.since.as_deref().unwrap_or("?")); // HA role
        }
        let _ = writeln!(out, "last resync: {}", self.last_resync.as_deref().unwrap_or("never"));
        let _ = writeln!(out, "\napps ({}):", self.apps.len());
        for a in &self.apps {
            let stopped = a.stopped_at.as_deref().map(|s| format!("  stopped {s}")).unwrap_or_default();
            let _ = writeln!(out, "  {}  version {}{stopped}", a.app_id, a.version.as_deref().unwrap_or("?"));
        }
        let _ = writeln!(out, "\ninstances ({}):", self.instances.len());
        for i in &self.instances {
            let _ = writeln!(
                out,
                "  {}  {}  {}  {}",
                i.instance,
                i.state.as_deref().unwrap_or("-"),
                i.status,
                i.endpoint.as_deref().unwrap_or("-")
            );
        }
        let _ = writeln!(out, "\npending ({}):", self.pending.len());
        for p in &self.pending {
            let _ = writeln!(out, "  {}  {}  lacks {}", p.instance, p.app_id, p.lack);
        }
        for (b, regs) in &self.ledger {
            let _ = writeln!(out, "\nledger {b} ({}):", regs.len());
            for r in regs {
                let _ = writeln!(out, "  {}  {}  {}:{}", r.id, r.service, r.address, r.port);
            }
        }
        for (b, ops) in &self.queue {
            let _ = writeln!(out, "\nqueue {b} ({}):", ops.len());
            for q in ops {
                let err = q.last_error.as_deref().map(|e| format!("  last error: {e}")).unwrap_or_default();
                let _ = writeln!(out, "  {} {}  attempts {}{err}", q.op.verb(), q.op.key(), q.attempts);
            }
        }
        let _ = writeln!(out, "\nrejections ({}):", self.rejections.len());
        for r in &self.rejections {
            let _ = writeln!(out, "  [{}] app {} label {}: {}", r.backend, r.app_id, r.label, r.reason);
        }
        let _ = writeln!(out, "\nrefusals ({}):", self.refusals.len());
        for r in &self.refusals {
            let _ = writeln!(
                out,
                "  [{}] app {} {} {}  since {}: {}",
                r.backend, r.app_id, r.op, r.entity, r.since, r.reason
            );
        }
        out
    }
}

async fn healthz() -> &'static str {
    "ok\n"
}

/// What the handlers share.
#[derive(Clone)]
struct Server {
    engine: Engine,
    /// Wakes the planner, so the appliers plan again.
    replan: Arc<Notify>,
    ha: crate::ha::Ha, // HA role
}

async fn metrics(State(server): State<Server>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], server.engine.metrics.render())
}

fn report(server: &Server) -> Result<StateReport, (StatusCode, String)> {
    let engine = &server.engine;
    let names: Vec<&str> = engine.backends.iter().map(|b| b.name()).collect();
    let mut r = state_report(&engine.store, &names).map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    r.role = server.ha.fence.is_ha().then(|| server.ha.role()); // HA role
    Ok(r)
}

async fn state(State(server): State<Server>) -> Result<axum::Json<StateReport>, (StatusCode, String)> {
    report(&server).map(axum::Json)
}

async fn index(State(server): State<Server>) -> Result<String, (StatusCode, String)> {
    report(&server).map(|r| r.render_text())
}

/// What `POST /api/retry-refused` answers.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RetryRefused {
    /// Refusals lifted; the appliers try them again now.
    pub lifted: usize,
}

async fn retry_refused(State(server): State<Server>) -> Result<axum::Json<RetryRefused>, (StatusCode, String)> {
    let lifted = server.engine.retry_refused().map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
    if let Err(e) = server.engine.store.flush().await {
        tracing::warn!(error = %e, "cannot flush the store");
    }
    server.replan.notify_one();
    Ok(axum::Json(RetryRefused { lifted }))
}

/// Serves until `shutdown` fires. `replan` wakes the planner.
pub async fn serve(
    listener: tokio::net::TcpListener,
    engine: Engine,
    replan: Arc<Notify>,
    ha: crate::ha::Ha, // HA role
    shutdown: CancellationToken,
) {
    let app = axum::Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/state", get(state))
        .route("/api/retry-refused", post(retry_refused))
        .with_state(Server { engine, replan, ha }); // HA role
    let result = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "status server stopped");
    }
}
