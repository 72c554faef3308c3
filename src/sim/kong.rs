//! In-process Kong Admin API: upstreams/targets/services/routes (1.x–3.x) and
//! the legacy `/apis` + append-only targets (0.10–0.14), picked by the
//! configured version that `GET /` reports.
//!
//! Invariants:
//! - Status codes and error bodies follow `shared/reference/kong.md`: 400
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
        let shared = Arc::new(Shared {
            era: Gen::from_version(&opts.version),
            opts,
            db: Mutex::new(Db::default()),
            failing: Mutex::new(None),
            log: Mutex::new(Vec::new()),
        });
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let addr = listener.local_addr()?;
        let sim = KongSim { shared, addr, running: Mutex::new(None) };
        sim.serve(listener);
        Ok(sim)
    }

    fn serve(&self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new().fallback(handle).with_state(self.shared.clone());
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

    /// Every request so far, as (method, path).
    pub fn requests(&self) -> Vec<(String, String)> {
        lock(&self.shared.log).clone()
    }

    /// How many requests so far were not `GET`/`HEAD`.
    pub fn writes(&self) -> usize {
        lock(&self.shared.log).iter().filter(|(m, _)| m != "GET" && m != "HEAD").count()
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
    let ctx = Ctx { era, query: &query, path: uri.path() };
    if era.legacy { legacy(&mut db, &ctx, method, &segs, body) } else { modern(&mut db, &ctx, method, &segs, body) }
}

struct Ctx<'a> {
    era: Gen,
    query: &'a BTreeMap<String, String>,
    path: &'a str,
}

// ---------------------------------------------------------------- helpers

fn find<'a>(list: &'a [Value], key: &str) -> Option<&'a Value> {
    list.iter().find(|v| v["id"].as_str() == Some(key) || v["name"].as_str() == Some(key))
}

fn position(list: &[Value], key: &str) -> Option<usize> {
    list.iter().position(|v| v["id"].as_str() == Some(key) || v["name"].as_str() == Some(key))
}

fn is_ip(s: &str) -> bool {
    s.parse::<std::net::IpAddr>().is_ok()
}

fn is_hostname(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// Splits `host[:port]`, IPv6 as `[::1]:80`.
fn split_host_port(s: &str) -> Option<(String, Option<u16>)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, tail) = rest.split_once(']')?;
        let port = match tail.strip_prefix(':') {
            Some(p) => Some(p.parse().ok()?),
            None if tail.is_empty() => None,
            None => return None,
        };
        return Some((format!("[{h}]"), port));
    }
    match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => Some((h.to_owned(), Some(p.parse().ok()?))),
        _ => Some((s.to_owned(), None)),
    }
}

fn check_tags(era: Gen, body: &Map<String, Value>, v: &mut BTreeMap<String, String>) -> Value {
    match body.get("tags") {
        None | Some(Value::Null) => Value::Null,
        Some(_) if !era.tags => {
            v.insert("tags".into(), "unknown field".into());
            Value::Null
        }
        Some(Value::Array(items)) => {
            for t in items {
                let ok = t
                    .as_str()
                    .is_some_and(|s| !s.is_empty() && !s.contains(',') && !s.contains('/') && !s.contains(' '));
                if !ok {
                    v.insert(
                        "tags".into(),
                        format!(
                            "invalid tag '{}': expected printable ascii (except `,` and `/`) or valid utf-8 sequences",
                            t.as_str().unwrap_or("?")
                        ),
                    );
                }
            }
            Value::Array(items.clone())
        }
        Some(_) => {
            v.insert("tags".into(), "expected a set".into());
            Value::Null
        }
    }
}

fn str_list(val: Option<&Value>) -> Option<Result<Vec<String>, ()>> {
    match val {
        None | Some(Value::Null) => None,
        Some(Value::Array(a)) => Some(a.iter().map(|x| x.as_str().map(str::to_owned).ok_or(())).collect()),
        Some(Value::String(s)) => {
            Some(Ok(s.split(',').map(|x| x.trim().to_owned()).filter(|x| !x.is_empty()).collect()))
        }
        Some(_) => Some(Err(())),
    }
}

fn reject_unknown(body: &Map<String, Value>, allowed: &[&str], v: &mut BTreeMap<String, String>) {
    for k in body.keys() {
        if !allowed.contains(&k.as_str()) {
            v.insert(k.clone(), "unknown field".into());
        }
    }
}

fn tags_match(entity: &Value, filter: &str) -> bool {
    let has = |t: &str| entity["tags"].as_array().is_some_and(|a| a.iter().any(|x| x.as_str() == Some(t)));
    if filter.contains('/') { filter.split('/').any(has) } else { filter.split(',').all(has) }
}

/// Paginates `items` per `size`/`offset`; `next` carries `tags`/`size` for
/// top-level collections as Kong does.
fn page(ctx: &Ctx, items: Vec<Value>, top_level: bool) -> Reply {
    let era = ctx.era;
    let size = match ctx.query.get("size") {
        None => 100,
        Some(s) => match s.parse::<usize>() {
            Ok(n) if (1..=1000).contains(&n) => n,
            _ => {
                return reply(400, json!({"code": 9, "name": "invalid size", "message": "size must be a number"}));
            }
        },
    };
    let start = match ctx.query.get("offset") {
        None => 0,
        Some(o) => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(o)
                .ok()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|s| s.strip_prefix("sim:").and_then(|n| n.parse::<usize>().ok()));
            match decoded {
                Some(n) => n,
                None => {
                    return reply(
                        400,
                        json!({"code": 7, "name": "invalid offset", "message": format!("'{o}' is not a valid offset: bad base64 encoding")}),
                    );
                }
            }
        }
    };
    let total = items.len();
    let data: Vec<Value> = items.into_iter().skip(start).take(size).collect();
    let mut out = Map::new();
    out.insert("data".into(), Value::Array(data));
    if era.legacy {
        out.insert("total".into(), json!(total));
    }
    if start + size < total {
        let offset = base64::engine::general_purpose::STANDARD.encode(format!("sim:{}", start + size));
        let mut next = url::form_urlencoded::Serializer::new(String::new());
        next.append_pair("offset", &offset);
        if top_level || era.legacy {
            if let Some(t) = ctx.query.get("tags") {
                next.append_pair("tags", t);
            }
            if let Some(s) = ctx.query.get("size") {
                next.append_pair("size", s);
            }
        }
        out.insert("offset".into(), json!(offset));
        out.insert("next".into(), json!(format!("{}?{}", ctx.path, next.finish())));
    } else if !era.legacy {
        out.insert("next".into(), Value::Null);
    }
    reply(200, Value::Object(out))
}

fn list(ctx: &Ctx, items: &[Value]) -> Reply {
    let filtered: Vec<Value> = match ctx.query.get("tags") {
        Some(t) if t.is_empty() => {
            return reply(
                400,
                json!({"code": 11, "name": "invalid options", "message": "invalid option (tags: cannot be null)", "fields": {"tags": "cannot be null"}}),
            );
        }
        Some(t) if !ctx.era.legacy => items.iter().filter(|e| tags_match(e, t)).cloned().collect(),
        _ => items.to_vec(),
    };
    page(ctx, filtered, true)
}

// ---------------------------------------------------------------- targets

fn render_target(t: &TargetRow, era: Gen) -> Value {
    if era.legacy {
        json!({"id": t.id, "created_at": t.created_at, "upstream_id": t.upstream_id, "target": t.target, "weight": t.weight})
    } else {
        json!({"id": t.id, "created_at": t.created_at as f64 / 1000.0, "upstream": {"id": t.upstream_id},
               "target": t.target, "weight": t.weight, "tags": t.tags})
    }
}

/// Newest row per target string, weight > 0 (append-only); all rows from 2.2.
fn active_targets(db: &Db, upstream_id: &str, era: Gen) -> Vec<TargetRow> {
    let rows = db.targets.iter().filter(|t| t.upstream_id == upstream_id);
    if !era.append_only {
        return rows.cloned().collect();
    }
    let mut newest: BTreeMap<&str, &TargetRow> = BTreeMap::new();
    for r in rows {
        newest.insert(&r.target, r);
    }
    let mut out: Vec<TargetRow> = newest.into_values().filter(|r| r.weight > 0).cloned().collect();
    out.sort_by_key(|r| r.created_at);
    out
}

fn parse_target(
    era: Gen,
    body: &Map<String, Value>,
    require_target: bool,
) -> Result<(Option<String>, Option<u64>, Value), Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(body, &["target", "weight", "tags", "upstream", "id", "created_at", "updated_at"], &mut v);
    let target = match body.get("target").and_then(Value::as_str) {
        Some(t) => match split_host_port(t) {
            Some((h, p)) if is_ip(h.trim_matches(['[', ']'])) || is_hostname(&h) => {
                Some(format!("{h}:{}", p.unwrap_or(8000)))
            }
            _ => {
                v.insert("target".into(), "Invalid target; not a valid hostname or ip address".into());
                None
            }
        },
        None => {
            if require_target {
                v.insert("target".into(), "required field missing".into());
            }
            None
        }
    };
    let weight = match body.get("weight") {
        None | Some(Value::Null) => None,
        Some(w) => match w.as_u64() {
            Some(n) if n <= era.max_weight => Some(n),
            _ => {
                let msg = if era.legacy {
                    "weight must be from 0 to 1000".to_owned()
                } else {
                    format!("value should be between 0 and {}", era.max_weight)
                };
                v.insert("weight".into(), msg);
                None
            }
        },
    };
    let tags = check_tags(era, body, &mut v);
    if v.is_empty() {
        Ok((target, weight, tags))
    } else if era.legacy && v.len() == 1 && !v.contains_key("tags") {
        Err(Violation::one("message", v.into_values().next().unwrap_or_default()))
    } else {
        Err(Violation(v))
    }
}

fn targets_endpoint(
    db: &mut Db,
    ctx: &Ctx,
    method: &Method,
    upstream: &str,
    rest: &[&str],
    body: Map<String, Value>,
) -> Reply {
    let era = ctx.era;
    let Some(uid) = find(&db.upstreams, upstream).and_then(|u| u["id"].as_str()).map(str::to_owned) else {
        return not_found();
    };
    match (method.as_str(), rest) {
        ("GET", []) => {
            let rows: Vec<TargetRow> = if era.history_in_targets {
                db.targets.iter().filter(|t| t.upstream_id == uid).cloned().collect()
            } else {
                active_targets(db, &uid, era)
            };
            page(ctx, rows.iter().rev().map(|t| render_target(t, era)).collect(), false)
        }
        ("GET", ["active"]) if era.history_in_targets => {
            let rows = active_targets(db, &uid, era);
            reply(
                200,
                json!({"total": rows.len(), "data": rows.iter().map(|t| render_target(t, era)).collect::<Vec<_>>()}),
            )
        }
        ("GET", ["all"]) if !era.history_in_targets => {
            let rows: Vec<Value> =
                db.targets.iter().filter(|t| t.upstream_id == uid).rev().map(|t| render_target(t, era)).collect();
            page(ctx, rows, false)
        }
        ("POST", []) => {
            let (target, weight, tags) = match parse_target(era, &body, true) {
                Ok(x) => x,
                Err(v) => return v.render(era),
            };
            let target = target.unwrap_or_default();
            let weight = weight.unwrap_or(100);
            let created_at = db.tick();
            if !era.append_only
                && let Some(existing) = db.targets.iter_mut().find(|t| t.upstream_id == uid && t.target == target)
            {
                if era.dup_target_409 {
                    return unique_violation(era, "target", &target);
                }
                existing.weight = weight;
                existing.tags = tags;
                return reply(200, render_target(existing, era));
            }
            let row = TargetRow { id: db.next_id(), upstream_id: uid, target, weight, tags, created_at };
            db.targets.push(row.clone());
            reply(201, render_target(&row, era))
        }
        (m, [t]) => {
            let t = if t.contains(':') || db.targets.iter().any(|r| r.id == *t) {
                (*t).to_owned()
            } else {
                format!("{t}:8000")
            };
            let matches = |r: &TargetRow| r.upstream_id == uid && (r.target == t || r.id == t);
            if era.append_only {
                if m != "DELETE" {
                    return method_not_allowed();
                }
                let Some(last) = db.targets.iter().rev().find(|r| matches(r)).cloned() else {
                    return not_found();
                };
                let created_at = db.tick();
                let row = TargetRow { id: db.next_id(), weight: 0, created_at, ..last };
                db.targets.push(row);
                return no_content();
            }
            let Some(pos) = db.targets.iter().position(matches) else {
                return not_found();
            };
            match m {
                "GET" => reply(200, render_target(&db.targets[pos], era)),
                "DELETE" => {
                    db.targets.remove(pos);
                    no_content()
                }
                "PUT" | "PATCH" => {
                    let (_, weight, tags) = match parse_target(era, &body, false) {
                        Ok(x) => x,
                        Err(v) => return v.render(era),
                    };
                    let row = &mut db.targets[pos];
                    if m == "PUT" {
                        row.weight = weight.unwrap_or(100);
                        row.tags = tags;
                    } else {
                        if let Some(w) = weight {
                            row.weight = w;
                        }
                        if body.contains_key("tags") {
                            row.tags = tags;
                        }
                    }
                    reply(200, render_target(row, era))
                }
                _ => method_not_allowed(),
            }
        }
        _ => not_found(),
    }
}

// ---------------------------------------------------------------- modern (1.x–3.x)

const UPSTREAM_FIELDS: &[&str] = &[
    "id",
    "name",
    "algorithm",
    "hash_on",
    "hash_fallback",
    "hash_on_header",
    "hash_fallback_header",
    "hash_on_cookie",
    "hash_on_cookie_path",
    "slots",
    "healthchecks",
    "tags",
    "host_header",
    "client_certificate",
    "use_srv_name",
    "created_at",
    "updated_at",
];

fn build_upstream(
    era: Gen,
    mut body: Map<String, Value>,
    name_from_url: Option<&str>,
    id: String,
) -> Result<Value, Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(&body, UPSTREAM_FIELDS, &mut v);
    if let Some(n) = name_from_url {
        body.insert("name".into(), json!(n));
    }
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        v.insert("name".into(), "required field missing".into());
    } else if is_ip(&name) {
        v.insert("name".into(), format!("Invalid name ('{name}'); no ip addresses allowed"));
    } else if name.contains(':') {
        v.insert("name".into(), format!("Invalid name ('{name}'); no port allowed"));
    } else if !is_hostname(&name) {
        v.insert("name".into(), format!("Invalid name ('{name}'); must be a valid hostname"));
    }
    let slots = body.get("slots").and_then(Value::as_u64).unwrap_or(10000);
    if !(10..=65536).contains(&slots) {
        v.insert("slots".into(), "value should be between 10 and 65536".into());
    }
    let tags = check_tags(era, &body, &mut v);
    if !v.is_empty() {
        return Err(Violation(v));
    }
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": 1_700_000_000, "updated_at": 1_700_000_000, "name": name,
        "algorithm": get("algorithm", json!("round-robin")), "hash_on": get("hash_on", json!("none")),
        "hash_fallback": get("hash_fallback", json!("none")), "hash_on_header": get("hash_on_header", Value::Null),
        "hash_fallback_header": get("hash_fallback_header", Value::Null), "hash_on_cookie": get("hash_on_cookie", Value::Null),
        "hash_on_cookie_path": get("hash_on_cookie_path", json!("/")), "slots": slots,
        "healthchecks": get("healthchecks", json!({"active": {}, "passive": {}, "threshold": 0})),
        "host_header": get("host_header", Value::Null), "client_certificate": get("client_certificate", Value::Null),
        "use_srv_name": get("use_srv_name", json!(false)),
    });
    if era.tags {
        out["tags"] = tags;
    }
    Ok(out)
}

const SERVICE_FIELDS: &[&str] = &[
    "id",
    "name",
    "protocol",
    "host",
    "port",
    "path",
    "retries",
    "connect_timeout",
    "write_timeout",
    "read_timeout",
    "tags",
    "client_certificate",
    "tls_verify",
    "tls_verify_depth",
    "ca_certificates",
    "enabled",
    "url",
    "created_at",
    "updated_at",
];

fn build_service(
    era: Gen,
    mut body: Map<String, Value>,
    name_from_url: Option<&str>,
    id: String,
) -> Result<Value, Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(&body, SERVICE_FIELDS, &mut v);
    if let Some(n) = name_from_url {
        body.insert("name".into(), json!(n));
    }
    if let Some(u) = body.remove("url") {
        match u.as_str().and_then(|s| url::Url::parse(s).ok()) {
            Some(u) => {
                body.insert("protocol".into(), json!(u.scheme()));
                body.insert("host".into(), json!(u.host_str().unwrap_or_default()));
                body.insert("port".into(), json!(u.port_or_known_default().unwrap_or(80)));
                let p = u.path();
                body.insert("path".into(), if p == "/" || p.is_empty() { Value::Null } else { json!(p) });
            }
            None => {
                v.insert("url".into(), "missing host in url".into());
            }
        }
    }
    let name = body.get("name").cloned().unwrap_or(Value::Null);
    if let Some(n) = name.as_str()
        && (n.is_empty() || !n.chars().all(|c| c.is_ascii_alphanumeric() || ".-_~".contains(c)))
    {
        v.insert("name".into(), "invalid value: only alphanumerics and '.', '-', '_', '~' allowed".into());
    }
    let host = body.get("host").and_then(Value::as_str).unwrap_or_default().to_owned();
    if host.is_empty() {
        v.insert("host".into(), "required field missing".into());
    } else if host.contains(':') && !is_ip(&host) {
        v.insert("host".into(), "must not have a port".into());
    } else if !is_ip(&host) && !is_hostname(&host) {
        v.insert("host".into(), "invalid value: must be a hostname or an ip address".into());
    }
    let path = body.get("path").cloned().unwrap_or(Value::Null);
    if let Some(p) = path.as_str()
        && (!p.starts_with('/') || p.contains("//"))
    {
        v.insert("path".into(), "should start with: /".into());
    }
    let tags = check_tags(era, &body, &mut v);
    if !v.is_empty() {
        return Err(Violation(v));
    }
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": 1_700_000_000, "updated_at": 1_700_000_000, "name": name,
        "protocol": get("protocol", json!("http")), "host": host, "port": get("port", json!(80)), "path": path,
        "retries": get("retries", json!(5)), "connect_timeout": get("connect_timeout", json!(60000)),
        "write_timeout": get("write_timeout", json!(60000)), "read_timeout": get("read_timeout", json!(60000)),
        "client_certificate": Value::Null, "tls_verify": Value::Null, "tls_verify_depth": Value::Null,
        "ca_certificates": Value::Null, "enabled": get("enabled", json!(true)),
    });
    if era.tags {
        out["tags"] = tags;
    }
    Ok(out)
}

const ROUTE_FIELDS: &[&str] = &[
    "id",
    "name",
    "protocols",
    "methods",
    "hosts",
    "paths",
    "headers",
    "snis",
    "sources",
    "destinations",
    "strip_path",
    "preserve_host",
    "regex_priority",
    "path_handling",
    "https_redirect_status_code",
    "request_buffering",
    "response_buffering",
    "tags",
    "service",
    "created_at",
    "updated_at",
];

fn build_route(
    db: &Db,
    era: Gen,
    mut body: Map<String, Value>,
    name_from_url: Option<&str>,
    id: String,
) -> Result<Value, Reply> {
    let mut v = BTreeMap::new();
    reject_unknown(&body, ROUTE_FIELDS, &mut v);
    if let Some(n) = name_from_url {
        body.insert("name".into(), json!(n));
    }
    let hosts = str_list(body.get("hosts"));
    let paths = str_list(body.get("paths"));
    let methods = str_list(body.get("methods"));
    for (field, list) in [("hosts", &hosts), ("paths", &paths), ("methods", &methods)] {
        if let Some(Err(())) = list {
            v.insert(field.into(), "expected a set".into());
        }
    }
    let hosts: Vec<String> = hosts.and_then(Result::ok).unwrap_or_default();
    let paths: Vec<String> = paths.and_then(Result::ok).unwrap_or_default();
    let methods: Vec<String> = methods.and_then(Result::ok).unwrap_or_default();
    for h in &hosts {
        let bare = split_host_port(h).map(|(h, _)| h).unwrap_or_default();
        let wild = bare.matches('*').count();
        let ok = match wild {
            0 => is_hostname(&bare) || is_ip(&bare),
            1 => bare.strip_prefix("*.").or_else(|| bare.strip_suffix(".*")).is_some_and(is_hostname),
            _ => false,
        };
        if !ok {
            v.insert("hosts".into(), format!("invalid wildcard: '{h}'"));
        }
    }
    for p in &paths {
        let p2 = if era.regex_tilde { p.strip_prefix('~').unwrap_or(p) } else { p.as_str() };
        if !p2.starts_with('/') {
            v.insert("paths".into(), "should start with: / (fixed path) or ~/ (regex path)".into());
        } else if p2.contains("//") {
            v.insert("paths".into(), "must not have empty segments".into());
        }
    }
    if hosts.is_empty() && paths.is_empty() && methods.is_empty() && body.get("headers").is_none_or(Value::is_null) {
        v.insert(
            "@entity".into(),
            "must set one of 'methods', 'hosts', 'headers', 'paths' when 'protocols' is 'http'".into(),
        );
    }
    let tags = check_tags(era, &body, &mut v);
    if !v.is_empty() {
        return Err(Violation(v).render(era));
    }
    let service = match body.get("service") {
        None | Some(Value::Null) => Value::Null,
        Some(s) => {
            let key = s["id"].as_str().or_else(|| s["name"].as_str()).unwrap_or_default();
            match find(&db.services, key) {
                Some(svc) => json!({"id": svc["id"]}),
                None => {
                    return Err(reply(
                        400,
                        json!({"code": 13, "name": "foreign keys unresolved",
                               "message": "foreign key unresolved (service: the foreign key cannot be resolved)",
                               "fields": {"service": "the foreign key cannot be resolved"}}),
                    ));
                }
            }
        }
    };
    let null_if_empty = |l: Vec<String>| if l.is_empty() { Value::Null } else { json!(l) };
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": 1_700_000_000, "updated_at": 1_700_000_000,
        "name": body.get("name").cloned().unwrap_or(Value::Null),
        "protocols": get("protocols", json!(["http", "https"])), "methods": null_if_empty(methods),
        "hosts": null_if_empty(hosts), "paths": null_if_empty(paths), "headers": get("headers", Value::Null),
        "snis": Value::Null, "sources": Value::Null, "destinations": Value::Null,
        "strip_path": get("strip_path", json!(true)), "preserve_host": get("preserve_host", json!(false)),
        "regex_priority": get("regex_priority", json!(0)), "path_handling": get("path_handling", json!("v0")),
        "https_redirect_status_code": 426, "request_buffering": true, "response_buffering": true,
        "service": service,
    });
    if era.tags {
        out["tags"] = tags;
    }
    Ok(out)
}

/// PUT (upsert, replace), PATCH (merge), GET, DELETE on one named entity of a
/// top-level collection. `build` validates and fills defaults.
fn entity(
    db: &mut Db,
    era: Gen,
    method: &Method,
    kind: Kind,
    key: &str,
    body: Map<String, Value>,
    forced: Option<(&str, Value)>,
) -> Reply {
    let pos = position(kind.list(db), key);
    match method.as_str() {
        "GET" => pos.map(|p| reply(200, kind.list(db)[p].clone())).unwrap_or_else(not_found),
        "DELETE" => {
            let Some(p) = pos else { return no_content() };
            let id = kind.list(db)[p]["id"].as_str().unwrap_or_default().to_owned();
            match kind {
                Kind::Service if db.routes.iter().any(|r| r["service"]["id"].as_str() == Some(id.as_str())) => {
                    return reply(
                        400,
                        json!({"code": 4, "name": "foreign key violation",
                               "message": "an existing 'routes' entity references this 'services' entity",
                               "fields": {"@referenced_by": "routes"}}),
                    );
                }
                Kind::Upstream => db.targets.retain(|t| t.upstream_id != id),
                _ => {}
            }
            kind.list_mut(db).remove(p);
            no_content()
        }
        "PUT" | "PATCH" => {
            let mut merged = body;
            if method == Method::PATCH {
                let Some(p) = pos else { return not_found() };
                let Value::Object(mut old) = kind.list(db)[p].clone() else {
                    return not_found();
                };
                for (k, v) in merged {
                    old.insert(k, v);
                }
                merged = old;
            }
            if let Some((k, v)) = &forced {
                merged.insert((*k).to_owned(), v.clone());
            }
            let id = match pos {
                Some(p) => kind.list(db)[p]["id"].as_str().unwrap_or_default().to_owned(),
                None => db.next_id(),
            };
            // A PUT addressed by name keeps that name; by id, the body may name it.
            let name_from_url = if key == id { None } else { Some(key) };
            let built = match kind {
                Kind::Upstream => build_upstream(era, merged, name_from_url, id).map_err(|v| v.render(era)),
                Kind::Service => build_service(era, merged, name_from_url, id).map_err(|v| v.render(era)),
                Kind::Route => build_route(db, era, merged, name_from_url, id),
            };
            let built = match built {
                Ok(b) => b,
                Err(r) => return r,
            };
            if let Some(name) = built["name"].as_str() {
                let clash =
                    kind.list(db).iter().enumerate().any(|(i, e)| Some(i) != pos && e["name"].as_str() == Some(name));
                if clash {
                    return unique_violation(era, "name", name);
                }
            }
            match pos {
                Some(p) => kind.list_mut(db)[p] = built.clone(),
                None => kind.list_mut(db).push(built.clone()),
            }
            reply(200, built)
        }
        _ => method_not_allowed(),
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Upstream,
    Service,
    Route,
}

impl Kind {
    fn list(self, db: &Db) -> &Vec<Value> {
        match self {
            Kind::Upstream => &db.upstreams,
            Kind::Service => &db.services,
            Kind::Route => &db.routes,
        }
    }
    fn list_mut(self, db: &mut Db) -> &mut Vec<Value> {
        match self {
            Kind::Upstream => &mut db.upstreams,
            Kind::Service => &mut db.services,
            Kind::Route => &mut db.routes,
        }
    }
}

fn create(db: &mut Db, era: Gen, kind: Kind, body: Map<String, Value>) -> Reply {
    if let Some(name) = body.get("name").and_then(Value::as_str)
        && position(kind.list(db), name).is_some()
    {
        return unique_violation(era, "name", name);
    }
    let id = db.next_id();
    let built = match kind {
        Kind::Upstream => build_upstream(era, body, None, id).map_err(|v| v.render(era)),
        Kind::Service => build_service(era, body, None, id).map_err(|v| v.render(era)),
        Kind::Route => build_route(db, era, body, None, id),
    };
    match built {
        Ok(b) => {
            kind.list_mut(db).push(b.clone());
            reply(201, b)
        }
        Err(r) => r,
    }
}

fn modern(db: &mut Db, ctx: &Ctx, method: &Method, segs: &[&str], body: Map<String, Value>) -> Reply {
    let era = ctx.era;
    let m = method.as_str();
    match segs {
        ["upstreams"] | ["services"] | ["routes"] => {
            let kind = match segs[0] {
                "upstreams" => Kind::Upstream,
                "services" => Kind::Service,
                _ => Kind::Route,
            };
            match m {
                "GET" => list(ctx, kind.list(db)),
                "POST" => create(db, era, kind, body),
                _ => method_not_allowed(),
            }
        }
        ["upstreams", u] => entity(db, era, method, Kind::Upstream, u, body, None),
        ["services", s] => entity(db, era, method, Kind::Service, s, body, None),
        ["routes", r] => entity(db, era, method, Kind::Route, r, body, None),
        ["upstreams", u, "targets", rest @ ..] => targets_endpoint(db, ctx, method, u, rest, body),
        ["services", s, "routes", rest @ ..] => {
            let Some(sid) = find(&db.services, s).map(|x| x["id"].clone()) else {
                return not_found();
            };
            match (m, rest) {
                ("GET", []) => {
                    let items: Vec<Value> = db.routes.iter().filter(|r| r["service"]["id"] == sid).cloned().collect();
                    page(ctx, items, false)
                }
                ("POST", []) => {
                    let mut body = body;
                    body.insert("service".into(), json!({"id": sid}));
                    create(db, era, Kind::Route, body)
                }
                (_, [r]) => {
                    let linked = find(&db.routes, r).map(|x| x["service"]["id"] == sid);
                    match (m, linked) {
                        ("PUT", None) | ("PUT", Some(true)) => {
                            entity(db, era, method, Kind::Route, r, body, Some(("service", json!({"id": sid}))))
                        }
                        (_, Some(true)) => entity(db, era, method, Kind::Route, r, body, None),
                        _ => not_found(),
                    }
                }
                _ => not_found(),
            }
        }
        _ => not_found(),
    }
}

// ---------------------------------------------------------------- legacy (0.10–0.14)

fn build_api(body: &Map<String, Value>, id: String, created_at: u64) -> Result<Value, Violation> {
    let mut v = BTreeMap::new();
    reject_unknown(
        body,
        &[
            "id",
            "created_at",
            "name",
            "hosts",
            "uris",
            "methods",
            "strip_uri",
            "preserve_host",
            "upstream_url",
            "retries",
            "upstream_connect_timeout",
            "upstream_send_timeout",
            "upstream_read_timeout",
            "https_only",
            "http_if_terminated",
        ],
        &mut v,
    );
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        v.insert("name".into(), "name is required".into());
    }
    let upstream_url = body.get("upstream_url").and_then(Value::as_str).unwrap_or_default().to_owned();
    if upstream_url.is_empty() {
        v.insert("upstream_url".into(), "upstream_url is required".into());
    } else if url::Url::parse(&upstream_url).ok().and_then(|u| u.host_str().map(str::to_owned)).is_none() {
        v.insert("upstream_url".into(), "upstream_url is not a url".into());
    }
    let hosts = str_list(body.get("hosts")).and_then(Result::ok).unwrap_or_default();
    let uris = str_list(body.get("uris")).and_then(Result::ok).unwrap_or_default();
    let methods = str_list(body.get("methods")).and_then(Result::ok).unwrap_or_default();
    for h in &hosts {
        let bare = h.trim_start_matches("*.").trim_end_matches(".*");
        if !is_hostname(bare) && !is_ip(bare) {
            v.insert("hosts".into(), format!("host with value '{h}' is invalid"));
        }
    }
    for u in &uris {
        if !u.starts_with('/') {
            v.insert("uris".into(), format!("uri with value '{u}' is invalid: must be prefixed with slash"));
        }
    }
    if !v.is_empty() {
        return Err(Violation(v));
    }
    if hosts.is_empty() && uris.is_empty() && methods.is_empty() {
        return Err(Violation::one("message", "at least one of 'hosts', 'uris' or 'methods' must be specified"));
    }
    let get = |k: &str, d: Value| body.get(k).cloned().filter(|x| !x.is_null()).unwrap_or(d);
    let mut out = json!({
        "id": id, "created_at": created_at, "name": name, "strip_uri": get("strip_uri", json!(true)),
        "preserve_host": get("preserve_host", json!(false)), "upstream_url": upstream_url, "retries": get("retries", json!(5)),
        "upstream_connect_timeout": 60000, "upstream_send_timeout": 60000, "upstream_read_timeout": 60000,
        "https_only": get("https_only", json!(false)), "http_if_terminated": get("http_if_terminated", json!(true)),
    });
    // 0.x omits empty arrays from responses.
    for (k, l) in [("hosts", hosts), ("uris", uris), ("methods", methods)] {
        if !l.is_empty() {
            out[k] = json!(l);
        }
    }
    Ok(out)
}

fn legacy_upstream(era: Gen, body: &Map<String, Value>, id: String, created_at: u64) -> Result<Value, Violation> {
    let name = body.get("name").and_then(Value::as_str).unwrap_or_default().to_owned();
    if name.is_empty() {
        return Err(Violation::one("name", "name is required"));
    }
    if is_ip(&name) || name.contains(':') || !is_hostname(&name) {
        return Err(Violation::one("message", format!("Invalid name; must be a valid hostname: {name}")));
    }
    if body.contains_key("tags") {
        return Err(Violation::one("tags", "unknown field"));
    }
    let slots = body.get("slots").and_then(Value::as_u64).unwrap_or(1000);
    let _ = era;
    Ok(
        json!({"id": id, "created_at": created_at, "name": name, "slots": slots, "orderlist": (1..=slots.min(16)).collect::<Vec<_>>()}),
    )
}

fn legacy(db: &mut Db, ctx: &Ctx, method: &Method, segs: &[&str], body: Map<String, Value>) -> Reply {
    let era = ctx.era;
    let m = method.as_str();
    match segs {
        ["apis"] => match m {
            "GET" => list(ctx, &db.apis),
            "POST" | "PUT" => {
                let existing = body.get("id").and_then(Value::as_str).and_then(|id| position(&db.apis, id));
                if m == "PUT" && body.contains_key("id") && existing.is_none() {
                    return not_found();
                }
                let (id, created_at) = match existing {
                    Some(p) => (
                        db.apis[p]["id"].as_str().unwrap_or_default().to_owned(),
                        db.apis[p]["created_at"].as_u64().unwrap_or(0),
                    ),
                    None => (db.next_id(), db.tick()),
                };
                let built = match build_api(&body, id, created_at) {
                    Ok(b) => b,
                    Err(v) => return v.render(era),
                };
                let name = built["name"].as_str().unwrap_or_default().to_owned();
                if db
                    .apis
                    .iter()
                    .enumerate()
                    .any(|(i, a)| Some(i) != existing && a["name"].as_str() == Some(name.as_str()))
                {
                    return unique_violation(era, "name", &name);
                }
                match existing {
                    Some(p) => {
                        db.apis[p] = built.clone();
                        reply(200, built)
                    }
                    None => {
                        db.apis.push(built.clone());
                        reply(201, built)
                    }
                }
            }
            _ => method_not_allowed(),
        },
        ["apis", a] => {
            let Some(p) = position(&db.apis, a) else {
                return not_found();
            };
            match m {
                "GET" => reply(200, db.apis[p].clone()),
                "DELETE" => {
                    db.apis.remove(p);
                    no_content()
                }
                "PATCH" => {
                    if body.is_empty() {
                        return reply(400, json!({"message": "empty body"}));
                    }
                    let Value::Object(mut merged) = db.apis[p].clone() else {
                        return not_found();
                    };
                    for (k, v) in body {
                        merged.insert(k, v);
                    }
                    let id = db.apis[p]["id"].as_str().unwrap_or_default().to_owned();
                    let created_at = db.apis[p]["created_at"].as_u64().unwrap_or(0);
                    match build_api(&merged, id, created_at) {
                        Ok(b) => {
                            db.apis[p] = b.clone();
                            reply(200, b)
                        }
                        Err(v) => v.render(era),
                    }
                }
                _ => method_not_allowed(),
            }
        }
        ["upstreams"] => match m {
            "GET" => list(ctx, &db.upstreams),
            "POST" => {
                let (id, at) = (db.next_id(), db.tick());
                let built = match legacy_upstream(era, &body, id, at) {
                    Ok(b) => b,
                    Err(v) => return v.render(era),
                };
                let name = built["name"].as_str().unwrap_or_default().to_owned();
                if position(&db.upstreams, &name).is_some() {
                    return unique_violation(era, "name", &name);
                }
                db.upstreams.push(built.clone());
                reply(201, built)
            }
            _ => method_not_allowed(),
        },
        ["upstreams", u] => {
            let Some(p) = position(&db.upstreams, u) else {
                return not_found();
            };
            match m {
                "GET" => reply(200, db.upstreams[p].clone()),
                "DELETE" => {
                    let id = db.upstreams[p]["id"].as_str().unwrap_or_default().to_owned();
                    db.targets.retain(|t| t.upstream_id != id);
                    db.upstreams.remove(p);
                    no_content()
                }
                _ => method_not_allowed(),
            }
        }
        ["upstreams", u, "targets", rest @ ..] => targets_endpoint(db, ctx, method, u, rest, body),
        _ => not_found(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(sim: &KongSim, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let url = sim.url().join(path.trim_start_matches('/')).expect("url");
        let mut req = reqwest::Client::new().request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.expect("call");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    #[tokio::test]
    async fn modern_codes_and_bodies() {
        use reqwest::Method as M;
        let sim = KongSim::start(KongSimOptions::default()).await.expect("sim");
        assert_eq!(call(&sim, M::GET, "/", None).await.1["version"], "3.4.2");
        let (s, b) = call(&sim, M::PUT, "/upstreams/1.2.3.4", Some(json!({}))).await;
        assert_eq!(
            (s, b["code"].clone(), b["fields"]["name"].clone()),
            (400, json!(2), json!("Invalid name ('1.2.3.4'); no ip addresses allowed"))
        );
        assert_eq!(call(&sim, M::PUT, "/upstreams/web", Some(json!({"tags": ["switchboard"]}))).await.0, 200);
        assert_eq!(call(&sim, M::POST, "/upstreams", Some(json!({"name": "web"}))).await.0, 409);
        let t = json!({"target": "10.0.0.1"});
        let (s, b) = call(&sim, M::POST, "/upstreams/web/targets", Some(t.clone())).await;
        assert_eq!((s, b["target"].clone(), b["weight"].clone()), (201, json!("10.0.0.1:8000"), json!(100)));
        let (s, b) = call(&sim, M::POST, "/upstreams/web/targets", Some(t)).await;
        assert_eq!((s, b["name"].clone()), (409, json!("unique constraint violation")));
        assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.9:1", None).await.0, 404);
        assert_eq!(call(&sim, M::PUT, "/services/web", Some(json!({"host": "web"}))).await.0, 200);
        let (s, b) = call(&sim, M::PUT, "/routes/web", Some(json!({"service": {"name": "web"}}))).await;
        assert_eq!((s, b["fields"]["@entity"].is_string()), (400, true));
        assert_eq!(
            call(&sim, M::PUT, "/routes/web", Some(json!({"paths": ["/"], "service": {"name": "web"}}))).await.0,
            200
        );
        let (s, b) = call(&sim, M::DELETE, "/services/web", None).await;
        assert_eq!((s, b["code"].clone()), (400, json!(4)));
        assert_eq!(call(&sim, M::DELETE, "/routes/nothing", None).await.0, 204);
        for n in 0..3 {
            call(&sim, M::PUT, &format!("/upstreams/u{n}"), Some(json!({"tags": ["switchboard"]}))).await;
        }
        let (_, p1) = call(&sim, M::GET, "/upstreams?size=2&tags=switchboard", None).await;
        assert_eq!(p1["data"].as_array().map(Vec::len), Some(2));
        let next = p1["next"].as_str().expect("next page");
        assert!(next.starts_with("/upstreams?offset=") && next.contains("tags=switchboard"), "{next}");
        let (_, p2) = call(&sim, M::GET, next, None).await;
        assert_eq!(
            (p2["data"].as_array().map(Vec::len), p2["next"].clone(), p2.get("offset")),
            (Some(2), Value::Null, None)
        );
        assert_eq!(call(&sim, M::GET, "/upstreams?offset=zzz", None).await.1["code"], 7);
        assert_eq!(sim.writes(), 14);
    }

    #[tokio::test]
    async fn legacy_targets_are_append_only() {
        use reqwest::Method as M;
        let sim = KongSim::start(KongSimOptions { version: "0.10.4".into(), admin_token: None }).await.expect("sim");
        assert_eq!(call(&sim, M::POST, "/upstreams", Some(json!({"name": "web"}))).await.0, 201);
        let (s, b) = call(&sim, M::POST, "/upstreams", Some(json!({"name": "web"}))).await;
        assert_eq!((s, b), (409, json!({"name": "already exists with value 'web'"})));
        for _ in 0..2 {
            assert_eq!(
                call(&sim, M::POST, "/upstreams/web/targets", Some(json!({"target": "10.0.0.1:80"}))).await.0,
                201
            );
        }
        assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.1:80", None).await.0, 204);
        assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.1:80", None).await.0, 204);
        assert_eq!(call(&sim, M::DELETE, "/upstreams/web/targets/10.0.0.2:80", None).await.0, 404);
        let (_, history) = call(&sim, M::GET, "/upstreams/web/targets", None).await;
        assert_eq!(history["data"].as_array().map(Vec::len), Some(4));
        let (_, active) = call(&sim, M::GET, "/upstreams/web/targets/active", None).await;
        assert_eq!(active["data"], json!([]));
        let (s, b) = call(&sim, M::POST, "/apis", Some(json!({"name": "web", "upstream_url": "http://web"}))).await;
        assert_eq!(
            (s, b["message"].clone()),
            (400, json!("at least one of 'hosts', 'uris' or 'methods' must be specified"))
        );
        assert_eq!(call(&sim, M::DELETE, "/apis/none", None).await.0, 404);
        let resp =
            reqwest::Client::new().post(sim.url().join("apis").expect("url")).body("{}").send().await.expect("call");
        assert_eq!(resp.status().as_u16(), 415);
    }
}
