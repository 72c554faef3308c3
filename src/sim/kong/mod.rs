//! In-process Kong Admin API: upstreams/targets/services/routes (1.x–3.x) and
//! the legacy `/apis` + append-only targets (0.10–0.14), picked by the
//! configured version that `GET /` reports.
//!
//! Invariants:
//! - Status codes and error bodies follow Kong's Admin API (docs.konghq.com/gateway/latest/admin-api/;
//!   `docs/backends.md`): 400
//!   schema violations with `fields`, 404 `{"message":"Not found"}`, 409 unique
//!   violations, pagination with `offset`/`next` (`next: null` on the last page).
//! - Generation rules come from the version only: `< 1.0` legacy (`/apis`, field
//!   map errors, 404 on deleting something absent), tags from 1.1, targets
//!   append-only before 2.2 (DELETE appends a weight-0 row), duplicate target
//!   POST answers 409 from 3.0.
//! - Every request (method, path) is recorded, even when failing or refused,
//!   so tests can count reads and writes.
//! - State lives in one std `Mutex`, never held across `.await`; it survives
//!   `stop()`/`restart()` (Kong down, then back on the same port).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Map, Value, json};

/// How the simulated Kong presents itself.
#[derive(Debug, Clone)]
pub struct KongSimOptions {
    /// What `GET /` reports, e.g. `3.4.2` or `0.10.4`; decides the API generation.
    pub version: String,
    /// When set, every request must carry this header with this value (else 401).
    pub admin_token: Option<(String, String)>,
}

impl Default for KongSimOptions {
    fn default() -> Self {
        KongSimOptions { version: "3.4.2".to_owned(), admin_token: None }
    }
}

/// Behaviour switches derived from the version.
#[derive(Debug, Clone, Copy)]
struct Gen {
    legacy: bool,
    tags: bool,
    append_only: bool,
    dup_target_409: bool,
    history_in_targets: bool,
    max_weight: u64,
    regex_tilde: bool,
}

impl Gen {
    fn from_version(v: &str) -> Gen {
        let mut it = v.split(|c: char| !c.is_ascii_digit()).filter(|s| !s.is_empty());
        let mut n = || it.next().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0);
        let v = (n(), n(), n());
        Gen {
            legacy: v < (1, 0, 0),
            tags: v >= (1, 1, 0),
            append_only: v < (2, 2, 0),
            dup_target_409: v >= (3, 0, 0),
            history_in_targets: v < (0, 12, 0),
            max_weight: if v < (2, 0, 5) { 1000 } else { 65535 },
            regex_tilde: v >= (3, 0, 0),
        }
    }
}

#[derive(Debug, Clone)]
struct TargetRow {
    id: String,
    upstream_id: String,
    target: String,
    weight: u64,
    tags: Value,
    created_at: u64,
}

#[derive(Default)]
struct Db {
    upstreams: Vec<Value>,
    targets: Vec<TargetRow>,
    services: Vec<Value>,
    routes: Vec<Value>,
    apis: Vec<Value>,
    counter: u64,
    /// Test hook (issue 12, tests/kill_points.rs): each target made active
    /// (`true`) or removed (`false`), as `host:port`, in order.
    history: Vec<(bool, String)>,
}

impl Db {
    fn next_id(&mut self) -> String {
        self.counter += 1;
        format!("5b1e0000-0000-4000-8000-{:012x}", self.counter)
    }
    fn tick(&mut self) -> u64 {
        self.counter += 1;
        1_700_000_000_000 + self.counter
    }
}

struct Shared {
    /// Write cost and arrival recording (`switchboard sim`); off by default.
    tap: crate::sim::tap::Tap,
    era: Gen,
    opts: KongSimOptions,
    db: Mutex<Db>,
    failing: Mutex<Option<u16>>,
    log: Mutex<Vec<(String, String)>>,
}

struct Running {
    shutdown: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

/// A running simulated Kong Admin API on `127.0.0.1`.
pub struct KongSim {
    shared: Arc<Shared>,
    addr: SocketAddr,
    running: Mutex<Option<Running>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

impl KongSim {
    /// Starts on `127.0.0.1:0`.
    pub async fn start(opts: KongSimOptions) -> std::io::Result<KongSim> {
        KongSim::start_on(opts, 0, crate::sim::tap::Tap::default()).await
    }

    /// Like `start`, on `127.0.0.1:port` (0 = any free port), with a tap
    /// (write cost, arrival times) as `switchboard sim` runs it.
    pub async fn start_on(opts: KongSimOptions, port: u16, tap: crate::sim::tap::Tap) -> std::io::Result<KongSim> {
        let shared = Arc::new(Shared {
            tap,
            era: Gen::from_version(&opts.version),
            opts,
            db: Mutex::new(Db::default()),
            failing: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        });
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let addr = listener.local_addr()?;
        let sim = KongSim { shared, addr, running: Mutex::new(None) };
        sim.serve(listener);
        Ok(sim)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = self.shared.tap.layer(axum::Router::new().fallback(handle).with_state(self.shared.clone()));
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        });
        *lock(&self.running) = Some(Running { shutdown: tx, task });
    }

    /// Admin API base URL, e.g. `http://127.0.0.1:41234/`.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}/", self.addr))
            .unwrap_or_else(|_| unreachable!("socket addr is a valid URL"))
    }

    /// `Some(status)`: every request is answered with that status until `None`.
    pub fn set_failing(&self, status: Option<u16>) {
        *lock(&self.shared.failing) = status;
    }

    /// Stops listening (Kong down); state is kept.
    pub async fn stop(&self) {
        let running = lock(&self.running).take();
        if let Some(r) = running {
            let _ = r.shutdown.send(());
            let abort = r.task.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(2), r.task).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Listens again on the same port with the same state.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let listener = bind(self.addr)?;
        self.serve(listener);
        Ok(())
    }

    /// Forgets every entity and request (between benchmark phases).
    pub fn clear(&self) {
        *lock(&self.shared.db) = Db::default();
        lock(&self.shared.log).clear();
    }

    /// `host:port` of every active target, over all upstreams.
    pub fn all_targets(&self) -> Vec<String> {
        let db = lock(&self.shared.db);
        let mut out = Vec::new();
        for u in &db.upstreams {
            let uid = u["id"].as_str().unwrap_or_default();
            out.extend(active_targets(&db, uid, self.shared.era).into_iter().map(|t| t.target));
        }
        out
    }

    /// Every request so far, as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.shared.log).clone()
    }

    /// How many requests so far were not `GET`/`HEAD`.
    pub fn writes(&self) -> usize {
        lock(&self.shared.log).iter().filter(|(m, _)| m != "GET" && m != "HEAD").count()
    }

    /// Test hook (issue 12): each target made active (`true`) or removed
    /// (`false`), in the order Kong applied them.
    pub fn history(&self) -> Vec<(bool, String)> {
        lock(&self.shared.db).history.clone()
    }

    pub fn upstreams(&self) -> Value {
        Value::Array(lock(&self.shared.db).upstreams.clone())
    }

    /// The active targets (newest row per target, weight > 0 in append-only
    /// mode; every target from 2.2) of an upstream named or id'd `upstream`.
    pub fn targets(&self, upstream: &str) -> Value {
        let db = lock(&self.shared.db);
        let Some(u) = find(&db.upstreams, upstream) else {
            return json!([]);
        };
        let uid = u["id"].as_str().unwrap_or_default().to_owned();
        let rows = active_targets(&db, &uid, self.shared.era);
        Value::Array(rows.iter().map(|t| render_target(t, self.shared.era)).collect())
    }

    pub fn services(&self) -> Value {
        Value::Array(lock(&self.shared.db).services.clone())
    }

    pub fn routes(&self) -> Value {
        Value::Array(lock(&self.shared.db).routes.clone())
    }

    pub fn apis(&self) -> Value {
        Value::Array(lock(&self.shared.db).apis.clone())
    }
}

type Reply = (StatusCode, Option<Value>);

fn reply(status: u16, body: Value) -> Reply {
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), Some(body))
}

fn not_found() -> Reply {
    reply(404, json!({"message": "Not found"}))
}

fn no_content() -> Reply {
    (StatusCode::NO_CONTENT, None)
}

fn method_not_allowed() -> Reply {
    reply(405, json!({"message": "Method not allowed"}))
}

/// A field-level validation failure, rendered per generation.
struct Violation(BTreeMap<String, String>);

impl Violation {
    fn one(field: &str, msg: impl Into<String>) -> Violation {
        Violation(BTreeMap::from([(field.to_owned(), msg.into())]))
    }
    fn render(self, era: Gen) -> Reply {
        if era.legacy {
            let map: Map<String, Value> = self.0.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
            return reply(400, Value::Object(map));
        }
        let parts: Vec<String> = self.0.iter().map(|(k, v)| format!("{k}: {v}")).collect();
        let message = if parts.len() == 1 {
            format!("schema violation ({})", parts[0])
        } else {
            format!("{} schema violations ({})", parts.len(), parts.join("; "))
        };
        let fields: Map<String, Value> = self.0.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
        reply(400, json!({"code": 2, "name": "schema violation", "message": message, "fields": fields}))
    }
}

fn unique_violation(era: Gen, field: &str, value: &str) -> Reply {
    if era.legacy {
        return reply(409, json!({ field: format!("already exists with value '{value}'") }));
    }
    reply(
        409,
        json!({"code": 5, "name": "unique constraint violation",
               "message": format!("UNIQUE violation detected on '{{{field}=\"{value}\"}}'"),
               "fields": { field: value }}),
    )
}

async fn handle(State(sh): State<Arc<Shared>>, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = uri.path().to_owned();
    lock(&sh.log).push((method.as_str().to_owned(), path.clone()));
    let (status, body) = dispatch(&sh, &method, &uri, &headers, &body);
    match body {
        Some(v) => (status, axum::Json(v)).into_response(),
        None => status.into_response(),
    }
}

fn dispatch(sh: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> Reply {
    if let Some(code) = *lock(&sh.failing) {
        return reply(code, json!({"message": "An unexpected error occurred"}));
    }
    if let Some((name, value)) = &sh.opts.admin_token {
        let given = headers.get(name.as_str()).and_then(|v| v.to_str().ok());
        if given != Some(value.as_str()) {
            return reply(401, json!({"message": "Invalid credentials. Token or User credentials required"}));
        }
    }
    let era = sh.era;
    let writes_body = matches!(*method, Method::POST | Method::PUT | Method::PATCH);
    let body: Map<String, Value> = if writes_body {
        let has_json = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !has_json && (era.legacy || !body.is_empty()) {
            return reply(415, json!({"message": "Unsupported Media Type"}));
        }
        if body.is_empty() {
            Map::new()
        } else {
            match serde_json::from_slice::<Value>(body) {
                Ok(Value::Object(m)) => m,
                _ => return reply(400, json!({"message": "Cannot parse JSON body"})),
            }
        }
    } else {
        Map::new()
    };
    let query: BTreeMap<String, String> =
        uri.query().map(|q| url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()).unwrap_or_default();
    let segs: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let mut db = lock(&sh.db);
    if segs.is_empty() {
        return if *method == Method::GET {
            reply(
                200,
                json!({"version": sh.opts.version, "tagline": "Welcome to kong", "hostname": "kong-sim",
                              "lua_version": "LuaJIT 2.1.0-beta3", "plugins": {"available_on_server": {}}}),
            )
        } else {
            method_not_allowed()
        };
    }
    let ctx = Ctx { era, query: &query, path: uri.path(), tap: &sh.tap };
    if era.legacy { legacy(&mut db, &ctx, method, &segs, body) } else { modern(&mut db, &ctx, method, &segs, body) }
}

struct Ctx<'a> {
    era: Gen,
    query: &'a BTreeMap<String, String>,
    path: &'a str,
    tap: &'a crate::sim::tap::Tap,
}

mod common;
mod legacy;
mod modern;
mod targets;

use common::*;
use legacy::*;
use modern::*;
use targets::*;

#[cfg(test)]
mod tests;
