//! The status server of `switchboard run` (`--listen`, default
//! `127.0.0.1:9102`):
//! - `GET /`: the status page (HTML, rendered from the model of `/api/status`);
//! - `GET /api/status` (`?app=`, `page`, `per_page`) and its alias `/state`:
//!   the status model as JSON, what `switchboard state` prints;
//! - `GET /metrics`: Prometheus text (names in `metrics`, listed in README.md);
//! - `GET /health` (alias `/healthz`): the process answers;
//! - `GET /ready`: 200 once the store is open, the first resync done and the
//!   stream connected; 503 with a JSON reason otherwise;
//! - one write: `POST /api/retry-refused` (on an HA standby: 409 with a JSON
//!   body naming the leader, `NotLeader`; the leader's refusals are the ones
//!   that hold ops back).
//!
//! Invariant: nothing here writes to a backend, and the only store write is
//! `POST /api/retry-refused` (what `switchboard reconcile --once
//! --retry-refused` asks a running daemon, which holds the store's lock): it
//! lifts the refusals in force and wakes the planner. It takes no body and is
//! idempotent; the server listens on loopback unless `--listen` says otherwise.
//! Reads of the store run on the store's thread, so a large page does not
//! hold up the runtime; a page or a search reads only its apps' specs,
//! ledger and queue (`model::read_for`). The server is handed a read-only
//! `View`, never the reconcile core.

use std::sync::Arc;

use axum::extract::{Query as QueryParams, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::reconcile::now_ms;
use crate::status::model::{self, DEFAULT_PER_PAGE, Query};
use crate::status::{LiveStatus, StatusModel, html};
use crate::store::{Store, StoreHandle};

/// The status server's view of the daemon: the store's thread (read through
/// `model::read_for`), the metrics and live status, and the backend names.
/// It holds no backend and no part of the reconcile core, so the server
/// cannot write to a backend; its one store write is the operator's retry of
/// refusals.
#[derive(Clone)]
pub struct View {
    store: StoreHandle,
    pub metrics: Metrics,
    backends: Vec<&'static str>,
    /// With `--ha`: whether this replica leads, and who does (the lock key).
    ha: Option<crate::ha::Ha>,
}

impl View {
    pub fn new(store: StoreHandle, metrics: Metrics, backends: Vec<&'static str>) -> View {
        View { store, metrics, backends, ha: None }
    }

    /// The view of an HA replica: `POST /api/retry-refused` is the leader's.
    pub fn with_ha(mut self, ha: crate::ha::Ha) -> View {
        self.ha = Some(ha);
        self
    }

    /// The status model for `query`: the store read on its thread (only the
    /// apps the query shows, in full), built here.
    pub async fn model(&self, query: Query) -> Result<StatusModel, crate::store::Error> {
        let started = std::time::Instant::now();
        let (names, q) = (self.backends.clone(), query.clone());
        let inputs = self.store.call(move |s| model::read_for(s, &names, &q)).await?;
        let read = started.elapsed();
        let m = model::build(&inputs, &self.metrics.live.snapshot(), &query, now_ms());
        tracing::debug!(
            read_ms = read.as_millis() as u64,
            build_ms = (started.elapsed() - read).as_millis() as u64,
            instances = inputs.instances.len(),
            "status model built"
        );
        Ok(m)
    }

    /// Lifts every refusal in force (the operator's retry), durably; the
    /// caller wakes the planner. Returns how many were lifted.
    pub async fn retry_refused(&self) -> Result<usize, crate::store::Error> {
        let n = self.store.call(|s| s.clear_refusals()).await?;
        self.store.flush().await?;
        for b in &self.backends {
            self.metrics.refusals.with_label_values(&[b]).set(0);
        }
        tracing::info!(lifted = n, "refusals lifted at the operator's request; retrying");
        Ok(n)
    }
}

/// What `/state` and `switchboard state` print: the status model.
pub type StateReport = StatusModel;

/// The status model of everything in `store`, without live status (for
/// `switchboard state` when no daemon answers).
pub fn state_report(store: &Store, backends: &[&str]) -> Result<StateReport, crate::store::Error> {
    let inputs = model::read(store, backends)?;
    let mut m = model::build(&inputs, &LiveStatus::default(), &Query::default(), now_ms());
    m.ready.reasons = vec!["no daemon answered: this is what the store holds".to_owned()];
    Ok(m)
}

async fn health() -> &'static str {
    "ok\n"
}

/// What the handlers share.
#[derive(Clone)]
struct Server {
    view: View,
    /// Wakes the planner, so the appliers plan again.
    replan: Arc<Notify>,
}

async fn metrics(State(server): State<Server>) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], server.view.metrics.render())
}

/// Builds the model (the store read on its thread).
async fn build(server: &Server, query: Query) -> Result<StatusModel, (StatusCode, String)> {
    server.view.model(query).await.map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn api_status(
    State(server): State<Server>,
    QueryParams(query): QueryParams<Query>,
) -> Result<axum::Json<StatusModel>, (StatusCode, String)> {
    build(&server, query).await.map(axum::Json)
}

async fn index(
    State(server): State<Server>,
    QueryParams(mut query): QueryParams<Query>,
) -> Result<Html<String>, (StatusCode, String)> {
    query.per_page = Some(query.per_page.unwrap_or(DEFAULT_PER_PAGE).clamp(1, 500));
    let m = build(&server, query).await?;
    Ok(Html(html::render(&m)))
}

/// What `/ready` answers.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct ReadyAnswer {
    pub ready: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
    /// Leader or standby, once an HA mode exists.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<crate::status::Role>,
}

async fn ready(State(server): State<Server>) -> Response {
    let live = server.view.metrics.live.snapshot();
    // The daemon opened the store before it started serving.
    let reasons = crate::status::live::not_ready_reasons(&live, true);
    let answer = ReadyAnswer { ready: reasons.is_empty(), reasons, role: live.role };
    let code = if answer.ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, axum::Json(answer)).into_response()
}

/// What `POST /api/retry-refused` answers.
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct RetryRefused {
    /// Refusals lifted; the appliers try them again now.
    pub lifted: usize,
}

/// What `POST /api/retry-refused` answers on an HA standby (HTTP 409).
#[derive(Debug, Serialize, serde::Deserialize)]
pub struct NotLeader {
    pub error: String,
    /// The replica holding the lock, if the standby could read it.
    pub leader: Option<crate::ha::Holder>,
}

/// Lifts the refusals, on the leader (or without `--ha`) only: a standby's
/// refusals are not the ones its leader's appliers hold back, so lifting them
/// there would do nothing; it answers 409 naming the leader instead.
async fn retry_refused(State(server): State<Server>) -> Response {
    if let Some(ha) = server.view.ha.as_ref().filter(|ha| !ha.is_leader()) {
        let (leader, error) = match ha.leader().await {
            Ok(Some(l)) => {
                let e = format!("this replica is an HA standby; ask the leader, {l}");
                (Some(l), e)
            }
            Ok(None) => (None, "this replica is an HA standby and no replica leads right now".to_owned()),
            Err(e) => (None, format!("this replica is an HA standby; the leader is unknown ({e})")),
        };
        return (StatusCode::CONFLICT, axum::Json(NotLeader { error, leader })).into_response();
    }
    match server.view.retry_refused().await {
        Ok(lifted) => {
            server.replan.notify_one();
            axum::Json(RetryRefused { lifted }).into_response()
        }
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

/// The status server's routes.
pub fn router(view: View, replan: Arc<Notify>) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/api/status", get(api_status))
        .route("/state", get(api_status))
        .route("/health", get(health))
        .route("/healthz", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/retry-refused", post(retry_refused))
        .with_state(Server { view, replan })
}

/// Serves until `shutdown` fires. `replan` wakes the planner. Also tells
/// systemd when the daemon is ready and feeds its watchdog.
pub async fn serve(listener: tokio::net::TcpListener, view: View, replan: Arc<Notify>, shutdown: CancellationToken) {
    let systemd = tokio::spawn(crate::status::systemd::run(view.metrics.live.clone(), shutdown.clone()));
    let app = router(view, replan);
    let result = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "status server stopped");
    }
    let _ = systemd.await;
}
