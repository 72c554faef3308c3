//! In-process Vulcand API v2 simulator: backends, servers (with TTL) and
//! frontends, with Vulcand's request packs, status codes and error bodies
//! (Vulcand's API v2 as its README documents it, github.com/vulcand/vulcand
//! "API Reference"; see `docs/backends.md`).
//!
//! Invariants:
//! - Binds `127.0.0.1:0` only; `restart` rebinds the same port with the same
//!   state, as a Vulcand backed by a surviving etcd would.
//! - Server TTLs run on the real monotonic clock: expired servers are
//!   removed before every request is answered and before every inspection.
//! - Deliberate differences from Vulcand: no hosts, listeners or
//!   middlewares; the route check is Switchboard's own parser
//!   (`backends::vulcand::route`), so it cannot catch that parser's bugs.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::backends::vulcand::route;
use crate::sim::tap::Tap;

/// Which build of Vulcand's HTTP layer to mimic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Era {
    /// 2016 master (mailgun/scroll): generic errors answer 400.
    Y2016,
    /// v0.8.0-beta.4 onwards: generic errors answer 500.
    #[default]
    Current,
}

/// Which storage engine to mimic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Deleting something absent answers 404; deletes are exact.
    EtcdV2,
    /// Deleting something absent answers 200; deletes match by key prefix
    /// (deleting `web` also deletes `web-api`); servers of an unknown
    /// backend list as `null`. The default since Vulcand v0.9.1.
    #[default]
    EtcdV3,
}

#[derive(Debug, Clone, Default)]
pub struct VulcandSimOptions {
    pub era: Era,
    pub engine: Engine,
}

/// One request as the simulator received it.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Decoded path, e.g. `/v2/backends/web~/servers`.
    pub path: String,
    /// The JSON body, when there was one that parsed.
    pub body: Option<Value>,
}

#[derive(Debug, Clone)]
struct SimServer {
    url: String,
    expires: Option<Instant>,
}

#[derive(Debug, Clone)]
struct SimFrontend {
    backend_id: String,
    route: String,
    settings: Value,
}

#[derive(Debug, Default)]
struct State {
    /// Backend id → settings.
    backends: BTreeMap<String, Value>,
    /// Backend id → server id → server.
    servers: BTreeMap<String, BTreeMap<String, SimServer>>,
    frontends: BTreeMap<String, SimFrontend>,
    failing: Option<u16>,
    /// Like `failing`, for server writes only.
    failing_server_writes: Option<u16>,
    requests: Vec<RecordedRequest>,
    /// etcd v2 modification index, for realistic error texts.
    index: u64,
}

impl State {
    fn expire(&mut self, now: Instant) {
        for servers in self.servers.values_mut() {
            servers.retain(|_, s| s.expires.is_none_or(|t| t > now));
        }
    }
}

struct Shared {
    opts: VulcandSimOptions,
    /// Write cost and arrival recording (`switchboard sim`); off by default.
    tap: Tap,
    state: Mutex<State>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock only happens in a failing test;
        // the state is still usable for inspection.
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.expire(Instant::now());
        st
    }
}

/// A running simulator.
pub struct VulcandSim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    /// The serving task and its shutdown signal; `None` while stopped.
    server: Mutex<Option<(oneshot::Sender<()>, JoinHandle<()>)>>,
}

impl VulcandSim {
    /// Must be called inside a tokio runtime.
    pub fn start(opts: VulcandSimOptions) -> std::io::Result<VulcandSim> {
        VulcandSim::start_on(opts, 0, Tap::default())
    }

    /// Like `start`, on `127.0.0.1:port` (0 = any free port), with a tap
    /// (write cost, arrival times) as `switchboard sim` runs it.
    pub fn start_on(opts: VulcandSimOptions, port: u16, tap: Tap) -> std::io::Result<VulcandSim> {
        let shared = Arc::new(Shared { opts, tap, state: Mutex::new(State::default()) });
        let listener = bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
        let addr = listener.local_addr()?;
        let running = serve(listener, shared.clone());
        Ok(VulcandSim { addr, shared, server: Mutex::new(Some(running)) })
    }

    /// Base URL, e.g. `http://127.0.0.1:41234`.
    pub fn url(&self) -> url::Url {
        let s = format!("http://{}", self.addr);
        url::Url::parse(&s).unwrap_or_else(|_| unreachable!("a socket address always makes a URL"))
    }

    /// Every request answers this status with a `{"message"}` body, until
    /// set back to `None`.
    pub fn set_failing(&self, status: Option<u16>) {
        self.shared.lock().failing = status;
    }

    /// Like `set_failing`, for server writes only (a write cut half way).
    pub fn set_failing_server_writes(&self, status: Option<u16>) {
        self.shared.lock().failing_server_writes = status;
    }

    /// Stops listening: connections are refused until `restart`.
    pub async fn stop(&self) {
        let running = self.server.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some((tx, handle)) = running {
            let _ = tx.send(());
            let abort = handle.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), handle).await.is_err() {
                abort.abort();
            }
        }
    }

    /// Listens again on the same port, with the same state.
    pub async fn restart(&self) -> std::io::Result<()> {
        self.stop().await;
        let listener = bind(self.addr)?;
        let running = serve(listener, self.shared.clone());
        *self.server.lock().unwrap_or_else(|e| e.into_inner()) = Some(running);
        Ok(())
    }

    /// Forgets every backend, server, frontend and request (between benchmark phases).
    pub fn clear(&self) {
        let mut st = self.shared.lock();
        st.backends.clear();
        st.servers.clear();
        st.frontends.clear();
        st.requests.clear();
    }

    /// `host:port` of every server, over all backends.
    pub fn all_servers(&self) -> Vec<String> {
        let st = self.shared.lock();
        st.servers.values().flat_map(|m| m.values().map(|s| endpoint_of(&s.url).to_owned())).collect()
    }

    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests other than `GET`.
    pub fn writes(&self) -> Vec<RecordedRequest> {
        self.requests().into_iter().filter(|r| r.method != "GET").collect()
    }

    /// All backends, as `GET /v2/backends` would list them.
    pub fn backends(&self) -> Value {
        let st = self.shared.lock();
        Value::Array(st.backends.iter().map(|(id, s)| backend_json(id, s)).collect())
    }

    /// Servers of one backend (`[]` when unknown).
    pub fn servers(&self, backend_id: &str) -> Value {
        let st = self.shared.lock();
        Value::Array(
            st.servers
                .get(backend_id)
                .map(|m| m.iter().map(|(id, s)| server_json(id, s)).collect())
                .unwrap_or_default(),
        )
    }

    pub fn frontends(&self) -> Value {
        let st = self.shared.lock();
        Value::Array(st.frontends.iter().map(|(id, f)| frontend_json(id, f)).collect())
    }

    /// Deletes a server as an operator would with `vctl`; false when absent.
    pub fn delete_server_by_hand(&self, backend_id: &str, server_id: &str) -> bool {
        let mut st = self.shared.lock();
        st.servers.get_mut(backend_id).and_then(|m| m.remove(server_id)).is_some()
    }
}

fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(128)
}

fn serve(listener: tokio::net::TcpListener, shared: Arc<Shared>) -> (oneshot::Sender<()>, JoinHandle<()>) {
    let (tx, rx) = oneshot::channel::<()>();
    let tap = shared.tap.clone();
    let app = tap.layer(Router::new().fallback(move |method: Method, uri: Uri, headers: HeaderMap, body: Bytes| {
        let shared = shared.clone();
        async move { handle(&shared, method, uri, headers, body) }
    }));
    let handle = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(async {
                let _ = rx.await;
            })
            .await;
    });
    (tx, handle)
}

/// Vulcand's error classes (`docs/backends.md`, Vulcand).
enum SimError {
    /// `*NotFoundError`: 404.
    NotFound(String),
    /// `*InvalidFormatError`: 400.
    Invalid(String),
    /// Missing pack key: 400 in 2016, 500 current.
    MissingParam(String),
    /// Anything else: 400 in 2016, 500 current.
    Generic(String),
}

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(json!({ "message": text }))).into_response()
}

fn ok(v: Value) -> Response {
    (StatusCode::OK, axum::Json(v)).into_response()
}

fn handle(shared: &Shared, method: Method, uri: Uri, headers: HeaderMap, body: Bytes) -> Response {
    let path = percent_decode(uri.path());
    let mut st = shared.lock();
    st.requests.push(RecordedRequest {
        method: method.to_string(),
        path: path.clone(),
        body: serde_json::from_slice(&body).ok(),
    });
    let server_write = method != Method::GET && path.contains("/servers");
    if let Some(code) = st.failing.or(st.failing_server_writes.filter(|_| server_write)) {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return message(status, "simulated failure");
    }
    st.index += 1;
    let segments: Vec<String> = uri.path().trim_matches('/').split('/').map(percent_decode).collect();
    let seg: Vec<&str> = segments.iter().map(String::as_str).collect();
    let form = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    let opts = &shared.opts;
    let result = match (&method, seg.as_slice()) {
        (&Method::GET, ["v2", "status"]) => Ok(json!({"Status": "ok"})),
        (&Method::GET, ["v2", "backends"]) => Ok(json!({
            "Backends": st.backends.iter().map(|(id, s)| backend_json(id, s)).collect::<Vec<_>>()
        })),
        (&Method::POST, ["v2", "backends"]) => pack(&body, form, "Backend").and_then(|b| upsert_backend(&mut st, &b)),
        (&Method::GET, ["v2", "backends", id]) => match st.backends.get(*id) {
            Some(s) => Ok(backend_json(id, s)),
            None => Err(not_found(opts, &st, &format!("backends/{id}/backend"))),
        },
        (&Method::DELETE, ["v2", "backends", id]) => delete_backend(opts, &mut st, id),
        (&Method::GET, ["v2", "backends", id, "servers"]) => match st.servers.get(*id) {
            Some(m) if st.backends.contains_key(*id) => {
                Ok(json!({"Servers": m.iter().map(|(sid, s)| server_json(sid, s)).collect::<Vec<_>>()}))
            }
            _ if opts.engine == Engine::EtcdV3 => Ok(json!({"Servers": null})),
            _ => Ok(json!({"Servers": []})),
        },
        (&Method::POST, ["v2", "backends", id, "servers"]) => {
            let stored = pack_with_ttl(&body, form, "Server")
                .and_then(|(s, ttl)| upsert_server(opts, &mut st, id, &s, ttl.as_ref()));
            if let Ok(v) = &stored {
                shared.tap.arrived(endpoint_of(v["URL"].as_str().unwrap_or_default()));
            }
            stored
        }
        (&Method::GET, ["v2", "backends", id, "servers", sid]) => match st.servers.get(*id).and_then(|m| m.get(*sid)) {
            Some(s) => Ok(server_json(sid, s)),
            None => Err(not_found(opts, &st, &format!("backends/{id}/servers/{sid}"))),
        },
        (&Method::DELETE, ["v2", "backends", id, "servers", sid]) => delete_server(opts, &mut st, id, sid),
        (&Method::GET, ["v2", "frontends"]) => Ok(json!({
            "Frontends": st.frontends.iter().map(|(id, f)| frontend_json(id, f)).collect::<Vec<_>>()
        })),
        (&Method::POST, ["v2", "frontends"]) => {
            pack(&body, form, "Frontend").and_then(|f| upsert_frontend(opts, &mut st, &f))
        }
        (&Method::GET, ["v2", "frontends", id]) => match st.frontends.get(*id) {
            Some(f) => Ok(frontend_json(id, f)),
            None => Err(not_found(opts, &st, &format!("frontends/{id}/frontend"))),
        },
        (&Method::DELETE, ["v2", "frontends", id]) => delete_frontend(opts, &mut st, id),
        // gorilla/mux of that vintage has no 405: a wrong method is a 404.
        _ => Err(SimError::NotFound("Object not found".to_owned())),
    };
    match result {
        Ok(v) => ok(v),
        Err(SimError::NotFound(m)) => message(StatusCode::NOT_FOUND, &m),
        Err(SimError::Invalid(m)) => message(StatusCode::BAD_REQUEST, &m),
        Err(SimError::MissingParam(m) | SimError::Generic(m)) => {
            let status = match opts.era {
                Era::Y2016 => StatusCode::BAD_REQUEST,
                Era::Current => StatusCode::INTERNAL_SERVER_ERROR,
            };
            message(status, &m)
        }
    }
}

fn not_found(opts: &VulcandSimOptions, st: &State, key: &str) -> SimError {
    SimError::NotFound(match opts.engine {
        Engine::EtcdV2 => format!("100: Key not found (/vulcand/{key}) [{}]", st.index),
        Engine::EtcdV3 => "Key not found".to_owned(),
    })
}

/// Decodes `{"<key>": {…}}` (key matched case-insensitively).
fn pack(body: &[u8], form: bool, key: &str) -> Result<serde_json::Map<String, Value>, SimError> {
    pack_with_ttl(body, form, key).map(|(v, _)| v)
}

fn pack_with_ttl(
    body: &[u8],
    form: bool,
    key: &str,
) -> Result<(serde_json::Map<String, Value>, Option<String>), SimError> {
    if form {
        // Go's ParseForm consumed the body before the JSON decode.
        return Err(SimError::Generic("unexpected end of JSON input".to_owned()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| SimError::Generic(e.to_string()))?;
    let Value::Object(top) = v else {
        return Err(SimError::Generic("json: cannot unmarshal into Go value of type map".to_owned()));
    };
    let inner =
        field(&top, key).ok_or_else(|| SimError::MissingParam(format!("Missing mandatory parameter: {key}")))?;
    let Value::Object(obj) = inner.clone() else {
        return Err(SimError::Generic(format!("json: cannot unmarshal {key}")));
    };
    let ttl = match field(&top, "TTL") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => {
            return Err(SimError::Generic(format!("json: cannot unmarshal {other} into TTL")));
        }
    };
    Ok((obj, ttl))
}

/// Case-insensitive field lookup, as Go's `encoding/json` matches names.
fn field<'a>(obj: &'a serde_json::Map<String, Value>, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v))
}

fn str_field(obj: &serde_json::Map<String, Value>, name: &str) -> String {
    field(obj, name).and_then(Value::as_str).unwrap_or_default().to_owned()
}

fn default_backend_settings() -> Value {
    json!({"Timeouts": {"Read": "", "Dial": "", "TLSHandshake": ""},
           "KeepAlive": {"Period": "", "MaxIdleConnsPerHost": 0}})
}

fn default_frontend_settings() -> Value {
    json!({"Limits": {"MaxMemBodyBytes": 0, "MaxBodyBytes": 0}, "FailoverPredicate": "",
           "Hostname": "", "TrustForwardHeader": false, "PassHostHeader": false,
           "Stream": false, "StreamFlushIntervalNanoSecs": 0})
}

fn backend_json(id: &str, settings: &Value) -> Value {
    json!({"Id": id, "Type": "http", "Settings": settings})
}

fn server_json(id: &str, s: &SimServer) -> Value {
    json!({"Id": id, "URL": s.url})
}

fn frontend_json(id: &str, f: &SimFrontend) -> Value {
    json!({"Id": id, "Route": f.route, "Type": "http", "BackendId": f.backend_id, "Settings": f.settings})
}

fn upsert_backend(st: &mut State, b: &serde_json::Map<String, Value>) -> Result<Value, SimError> {
    let ty = str_field(b, "Type");
    if ty != "http" {
        return Err(SimError::Generic(format!("Unsupported backend type {ty}")));
    }
    let id = str_field(b, "Id");
    if id.is_empty() {
        return Err(SimError::Invalid("backend id can not be empty".to_owned()));
    }
    let settings = match field(b, "Settings") {
        Some(Value::Object(s)) => {
            let mut merged = default_backend_settings();
            for (k, v) in s {
                merged[k] = v.clone();
            }
            merged
        }
        _ => default_backend_settings(),
    };
    st.backends.insert(id.clone(), settings.clone());
    Ok(backend_json(&id, &settings))
}

fn upsert_server(
    opts: &VulcandSimOptions,
    st: &mut State,
    backend_id: &str,
    s: &serde_json::Map<String, Value>,
    ttl: Option<&String>,
) -> Result<Value, SimError> {
    let id = str_field(s, "Id");
    let url = str_field(s, "URL");
    let valid_url = url::Url::parse(&url).is_ok_and(|u| u.has_host());
    if !valid_url {
        return Err(SimError::Generic(format!("endpoint url '{url}' is not valid")));
    }
    let ttl = match ttl {
        None => None,
        Some(t) => parse_go_duration(t).ok_or_else(|| SimError::Generic(format!("time: invalid duration \"{t}\"")))?,
    };
    if id.is_empty() || backend_id.is_empty() {
        return Err(SimError::Invalid("backend id and server id can not be empty".to_owned()));
    }
    if !st.backends.contains_key(backend_id) {
        return Err(not_found(opts, st, &format!("backends/{backend_id}/backend")));
    }
    // etcd keeps whole seconds.
    let expires = ttl.map(|d| Instant::now() + Duration::from_secs(d.as_secs().max(1)));
    let server = SimServer { url, expires };
    let out = server_json(&id, &server);
    st.servers.entry(backend_id.to_owned()).or_default().insert(id, server);
    Ok(out)
}

fn upsert_frontend(
    opts: &VulcandSimOptions,
    st: &mut State,
    f: &serde_json::Map<String, Value>,
) -> Result<Value, SimError> {
    let ty = str_field(f, "Type");
    if ty != "http" {
        return Err(SimError::Generic(format!("Unsupported frontend type: {ty}")));
    }
    let id = str_field(f, "Id");
    let backend_id = str_field(f, "BackendId");
    let route_expr = str_field(f, "Route");
    if id.is_empty() || backend_id.is_empty() || route_expr.is_empty() {
        return Err(SimError::Generic("supply valid  route, id, and backendId".to_owned()));
    }
    if route::parse(&route_expr).is_err() {
        return Err(SimError::Generic(format!("route should be a valid route expression: {route_expr}")));
    }
    if !st.backends.contains_key(&backend_id) {
        return Err(not_found(opts, st, &format!("backends/{backend_id}/backend")));
    }
    let mut settings = default_frontend_settings();
    if let Some(Value::Object(s)) = field(f, "Settings") {
        for (k, v) in s {
            settings[k] = v.clone();
        }
    }
    let fe = SimFrontend { backend_id, route: route_expr, settings };
    let out = frontend_json(&id, &fe);
    st.frontends.insert(id, fe);
    Ok(out)
}

/// Ids an etcd delete of `id` removes: exactly `id` on v2, every id that
/// starts with it on v3.
fn doomed<V>(opts: &VulcandSimOptions, map: &BTreeMap<String, V>, id: &str) -> Vec<String> {
    match opts.engine {
        Engine::EtcdV2 => map.keys().filter(|k| k.as_str() == id).cloned().collect(),
        Engine::EtcdV3 => map.keys().filter(|k| k.starts_with(id)).cloned().collect(),
    }
}

fn delete_backend(opts: &VulcandSimOptions, st: &mut State, id: &str) -> Result<Value, SimError> {
    let users: Vec<&String> = st.frontends.iter().filter(|(_, f)| f.backend_id == id).map(|(fid, _)| fid).collect();
    if !users.is_empty() {
        let users: Vec<&str> = users.iter().map(|s| s.as_str()).collect();
        return Err(SimError::Generic(format!("can not delete backend '{id}', it is in use by [{}]", users.join(" "))));
    }
    let gone = doomed(opts, &st.backends, id);
    if gone.is_empty() && opts.engine == Engine::EtcdV2 {
        return Err(not_found(opts, st, &format!("backends/{id}")));
    }
    for b in gone {
        st.backends.remove(&b);
        st.servers.remove(&b);
    }
    Ok(json!({"message": "Backend deleted"}))
}

fn delete_server(opts: &VulcandSimOptions, st: &mut State, backend_id: &str, id: &str) -> Result<Value, SimError> {
    let empty = BTreeMap::new();
    let gone = doomed(opts, st.servers.get(backend_id).unwrap_or(&empty), id);
    if gone.is_empty() && opts.engine == Engine::EtcdV2 {
        return Err(not_found(opts, st, &format!("backends/{backend_id}/servers/{id}")));
    }
    if let Some(m) = st.servers.get_mut(backend_id) {
        for s in gone {
            m.remove(&s);
        }
    }
    Ok(json!({"message": "Server deleted"}))
}

fn delete_frontend(opts: &VulcandSimOptions, st: &mut State, id: &str) -> Result<Value, SimError> {
    let gone = doomed(opts, &st.frontends, id);
    if gone.is_empty() && opts.engine == Engine::EtcdV2 {
        return Err(not_found(opts, st, &format!("frontends/{id}")));
    }
    for f in gone {
        st.frontends.remove(&f);
    }
    Ok(json!({"message": "Frontend deleted"}))
}

/// Go's `time.ParseDuration` for non-negative values: `15s`, `1m30s`,
/// `500ms`, `0`. `Some(None)` means permanent (zero or empty).
fn parse_go_duration(s: &str) -> Option<Option<Duration>> {
    if s.is_empty() || s == "0" {
        return Some(None);
    }
    let mut rest = s;
    let mut total = 0f64;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        if num_len == 0 {
            return None;
        }
        let n: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += n * scale;
    }
    if total == 0.0 { Some(None) } else { Some(Some(Duration::from_secs_f64(total))) }
}

/// `http://10.0.0.1:31000` → `10.0.0.1:31000`.
fn endpoint_of(url: &str) -> &str {
    url.split_once("://").map_or(url, |(_, rest)| rest).trim_end_matches('/')
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(hi), Some(lo)) =
                (bytes.get(i + 1).and_then(|b| hex(*b)), bytes.get(i + 2).and_then(|b| hex(*b)))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(sim: &VulcandSim, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let client = reqwest::Client::new();
        let mut req = client.request(method, format!("{}{}", sim.url().as_str().trim_end_matches('/'), path));
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap())
    }

    #[tokio::test]
    async fn speaks_vulcands_shapes_and_errors() {
        use reqwest::Method as M;
        let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
        assert_eq!(call(&sim, M::GET, "/v2/status", None).await, (200, json!({"Status": "ok"})));
        assert_eq!(call(&sim, M::GET, "/v2/nope", None).await, (404, json!({"message": "Object not found"})));
        let (s, _) = call(&sim, M::POST, "/v2/backends", Some(json!({"Backend": {"Id": "b1", "Type": "tcp"}}))).await;
        assert_eq!(s, 500);
        let (s, v) = call(&sim, M::POST, "/v2/backends", Some(json!({"backend": {"id": "b1", "type": "http"}}))).await;
        assert_eq!((s, v["Id"].clone()), (200, json!("b1")));
        // Server into an unknown backend: 404.
        let srv = json!({"Server": {"Id": "s1", "URL": "http://10.0.0.1:80"}});
        assert_eq!(call(&sim, M::POST, "/v2/backends/zz/servers", Some(srv.clone())).await.0, 404);
        assert_eq!(call(&sim, M::POST, "/v2/backends/b1/servers", Some(srv)).await.0, 200);
        let bad_url = json!({"Server": {"Id": "s2", "URL": "nope"}});
        assert_eq!(call(&sim, M::POST, "/v2/backends/b1/servers", Some(bad_url)).await.0, 500);
        let fe = |route: &str| json!({"Frontend": {"Id": "f1", "Type": "http", "BackendId": "b1", "Route": route}});
        let (s, v) = call(&sim, M::POST, "/v2/frontends", Some(fe(r#"Host("a.b"#))).await;
        assert_eq!(s, 500);
        assert!(v["message"].as_str().unwrap().starts_with("route should be a valid route expression"));
        assert_eq!(call(&sim, M::POST, "/v2/frontends", Some(fe(r#"Host("a.b")"#))).await.0, 200);
        // Backend in use: refused with a generic error, not 409.
        let (s, v) = call(&sim, M::DELETE, "/v2/backends/b1", None).await;
        assert_eq!(s, 500);
        assert!(v["message"].as_str().unwrap().contains("it is in use by"), "{v}");
        assert_eq!(call(&sim, M::DELETE, "/v2/frontends/f1", None).await.0, 200);
        assert_eq!(call(&sim, M::DELETE, "/v2/backends/b1", None).await, (200, json!({"message": "Backend deleted"})));
        assert_eq!(sim.servers("b1"), json!([]));
        // etcd v3: unknown servers list as null, deletes of unknown succeed.
        assert_eq!(call(&sim, M::GET, "/v2/backends/b1/servers", None).await, (200, json!({"Servers": null})));
        assert_eq!(call(&sim, M::DELETE, "/v2/frontends/zz", None).await.0, 200);
        assert_eq!(call(&sim, M::POST, "/v2/backends", Some(json!({}))).await.0, 500);
    }

    #[tokio::test]
    async fn etcd_v2_in_2016_answers_404_and_400() {
        use reqwest::Method as M;
        let sim = VulcandSim::start(VulcandSimOptions { era: Era::Y2016, engine: Engine::EtcdV2 }).unwrap();
        let (s, v) = call(&sim, M::DELETE, "/v2/backends/x", None).await;
        assert_eq!(s, 404);
        assert!(v["message"].as_str().unwrap().starts_with("100: Key not found (/vulcand/backends/x"), "{v}");
        assert_eq!(call(&sim, M::POST, "/v2/backends", Some(json!({}))).await.0, 400);
        assert_eq!(call(&sim, M::GET, "/v2/backends/x/servers", None).await, (200, json!({"Servers": []})));
    }

    #[tokio::test]
    async fn etcd_v3_deletes_by_prefix() {
        use reqwest::Method as M;
        let sim = VulcandSim::start(VulcandSimOptions::default()).unwrap();
        for id in ["web", "web-api"] {
            let b = json!({"Backend": {"Id": id, "Type": "http"}});
            assert_eq!(call(&sim, M::POST, "/v2/backends", Some(b)).await.0, 200);
        }
        assert_eq!(call(&sim, M::DELETE, "/v2/backends/web", None).await.0, 200);
        assert_eq!(sim.backends(), json!([]));
    }

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("15s"), Some(Some(Duration::from_secs(15))));
        assert_eq!(parse_go_duration("1m30s"), Some(Some(Duration::from_secs(90))));
        assert_eq!(parse_go_duration("0s"), Some(None));
        assert_eq!(parse_go_duration("soon"), None);
        assert_eq!(parse_go_duration("5"), None);
    }
}
