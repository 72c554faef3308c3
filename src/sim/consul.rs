//! In-process simulator of the Consul agent HTTP API (service register,
//! deregister, listing, plus minimal health and catalog reads), built against
//! Consul's agent HTTP API documentation (developer.hashicorp.com/consul/api-docs/agent/service)
//! and `docs/backends.md`.
//!
//! Invariants:
//! - Binds `127.0.0.1` (or the loopback address of `ConsulSimOptions::bind`)
//!   only; `stop`/`restart` keep the same port and state.
//! - The catalog reads show every node of its `SimCatalog` (see `catalog`).
//! - Answers like a modern (1.11+) agent: PUT-only writes (405 + `Allow`
//!   otherwise), strict JSON decoding, plain-text error bodies, empty 200
//!   bodies on successful writes, `/v1/agent/services` keyed by service ID.
//! - The built-in `consul` service is always listed and can never be
//!   registered over or deregistered.
//! - State lives behind one std `Mutex`, never held across an `.await`.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use tokio::net::TcpSocket;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use decode::{decode_register, field};

use crate::sim::tap::Tap;

mod catalog;
mod decode;

pub use catalog::SimCatalog;

/// How the agent answers `PUT /v1/agent/service/deregister/{id}` for an ID
/// it does not know (reference §3: the answer changed across versions).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum UnknownDeregister {
    /// 1.11+: `404 Unknown service ID "x". Ensure that ...`.
    #[default]
    Modern404,
    /// ≤0.9 / early 1.x without ACLs: `200`, no-op.
    Legacy200,
    /// 1.x with ACLs enabled: `500 Unknown service "x"`.
    Acl500,
}

#[derive(Debug, Clone, Default)]
pub struct ConsulSimOptions {
    /// When set, every request must carry this token (`X-Consul-Token`,
    /// `Authorization: Bearer` or `?token=`). No token acts as the anonymous
    /// token: reads see nothing, writes get `403 Permission denied`; a wrong
    /// token gets `403 ACL not found`.
    pub acl_token: Option<String>,
    pub deregister_unknown: UnknownDeregister,
    /// Per-host agents: the loopback address to bind (default 127.0.0.1),
    /// which is also the node's address in the catalog.
    pub bind: Option<IpAddr>,
    /// The node's name in the catalog (default `sim-agent`).
    pub node: Option<String>,
    /// The datacenter's catalog shared with other agents; `None`: this
    /// agent alone.
    pub catalog: Option<SimCatalog>,
}

/// A running (or stopped) simulated agent. Dropping it shuts the server down.
pub struct ConsulSim {
    shared: Arc<Shared>,
    port: u16,
    /// The serving task while listening; `None` after `stop`. An async mutex
    /// because `stop`/`restart` await the task while holding it.
    server: tokio::sync::Mutex<Option<Running>>,
}

struct Running {
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

struct Shared {
    opts: ConsulSimOptions,
    tap: Tap,
    state: Mutex<SimState>,
    /// While true, `GET /v1/agent/services` waits before it reads the state
    /// (see `hold_listings`): lets a test make a listing straddle a write.
    listings_held: tokio::sync::watch::Sender<bool>,
    /// With `hold_listings_stale`: a held listing reads the state first and
    /// answers with it after the release (a stale answer).
    stale_listings: std::sync::atomic::AtomicBool,
    /// Sessions and KV (leader election), in `consul_kv`.
    kv: crate::sim::consul_kv::Kv,
}

#[derive(Default)]
struct SimState {
    services: BTreeMap<String, Service>,
    failing: Option<u16>,
    writes: usize,
    requests: Vec<(String, String)>,
    /// Listing requests waiting on `hold_listings` right now.
    listings_waiting: usize,
    /// False imitates a pre-1.0.7 agent: `Meta` is silently dropped on
    /// register and absent from listings.
    no_meta: bool,
    /// Test hook (issue 12, tests/kill_points.rs): every service ID
    /// registered (`true`) or removed (`false`), in order.
    history: Vec<(bool, String)>,
}

#[derive(Debug, Clone)]
struct Service {
    id: String,
    name: String,
    tags: Vec<String>,
    address: String,
    port: i64,
    meta: BTreeMap<String, String>,
    weights: (i64, i64),
    enable_tag_override: bool,
    checks: Vec<SimCheck>,
}

#[derive(Debug, Clone)]
struct SimCheck {
    id: String,
    name: String,
    kind: &'static str,
    status: String,
}

const NOT_ALLOWED_WRITE: &str = "OPTIONS,PUT";
const NOT_ALLOWED_READ: &str = "GET,OPTIONS";

impl ConsulSim {
    pub async fn start(opts: ConsulSimOptions) -> std::io::Result<ConsulSim> {
        ConsulSim::start_on(opts, 0, Tap::default()).await
    }

    /// Like `start`, on `127.0.0.1:port` (0 = any free port), with a tap
    /// (write cost, arrival times) as `switchboard sim` runs it.
    pub async fn start_on(opts: ConsulSimOptions, port: u16, tap: Tap) -> std::io::Result<ConsulSim> {
        let shared = Arc::new(Shared {
            opts,
            tap,
            state: Mutex::new(SimState::default()),
            listings_held: tokio::sync::watch::Sender::new(false),
            stale_listings: std::sync::atomic::AtomicBool::new(false),
            kv: crate::sim::consul_kv::Kv::default(),
        });
        if let Some(c) = &shared.opts.catalog {
            c.join(&shared);
        }
        let running = serve(shared.clone(), port).await?;
        Ok(ConsulSim { shared, port: running.1, server: tokio::sync::Mutex::new(Some(running.0)) })
    }

    /// Sessions and KV: options, the partition switch, the request and lock logs.
    pub fn kv(&self) -> &crate::sim::consul_kv::Kv {
        &self.shared.kv
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://{}:{}", self.shared.address(), self.port)
    }

    /// Registered services by ID, each as `/v1/agent/services` shows it. The
    /// built-in `consul` service is not included.
    pub fn services(&self) -> BTreeMap<String, Value> {
        let st = self.shared.lock();
        st.services.iter().map(|(id, s)| (id.clone(), s.listing(!st.no_meta))).collect()
    }

    /// Whether a service with this ID is registered (cheap: for tight polling).
    pub fn has_service(&self, id: &str) -> bool {
        self.shared.lock().services.contains_key(id)
    }

    /// `Address:Port` of every registered service.
    pub fn endpoints(&self) -> Vec<String> {
        self.shared.lock().services.values().map(|s| format!("{}:{}", s.address, s.port)).collect()
    }

    /// How many services are registered, the built-in `consul` one excluded.
    pub fn service_count(&self) -> usize {
        self.shared.lock().services.len()
    }

    /// Stores a register body as if someone else had registered it: no
    /// validation, no ACL, not counted in `writes`. `ID` defaults to `Name`.
    pub fn insert_raw(&self, register_body: Value) {
        let svc = Service::from_raw(&register_body);
        self.shared.lock().services.insert(svc.id.clone(), svc);
    }

    /// Answers every request with `status` and a text body until cleared.
    pub fn set_failing(&self, status: Option<u16>) {
        self.shared.lock().failing = status;
    }

    /// Imitates a pre-1.0.7 agent: `Meta` is dropped on register and absent
    /// from listings.
    pub fn set_legacy_no_meta(&self, on: bool) {
        self.shared.lock().no_meta = on;
    }

    /// From now on `GET /v1/agent/services` waits, before it reads anything,
    /// until `release_listings`: the answer then shows the state at release.
    pub fn hold_listings(&self) {
        self.shared.stale_listings.store(false, std::sync::atomic::Ordering::SeqCst);
        self.shared.listings_held.send_replace(true);
    }

    /// From now on `GET /v1/agent/services` reads the state at once but
    /// answers only at `release_listings`: the answer shows the state as it
    /// was when the request arrived, whatever was written meanwhile.
    pub fn hold_listings_stale(&self) {
        self.shared.stale_listings.store(true, std::sync::atomic::Ordering::SeqCst);
        self.shared.listings_held.send_replace(true);
    }

    pub fn release_listings(&self) {
        self.shared.listings_held.send_replace(false);
    }

    /// How many listing requests are waiting on `hold_listings` now.
    pub fn listings_waiting(&self) -> usize {
        self.shared.lock().listings_waiting
    }

    /// Closes the listener and open connections: connection refused from now on.
    pub async fn stop(&self) {
        let mut server = self.server.lock().await;
        if let Some(running) = server.take() {
            let _ = running.shutdown.send(());
            let _ = running.task.await;
        }
    }

    /// Listens again on the same port; state is kept.
    pub async fn restart(&self) -> std::io::Result<()> {
        let mut server = self.server.lock().await;
        if server.is_none() {
            let (running, _) = serve(self.shared.clone(), self.port).await?;
            *server = Some(running);
        }
        Ok(())
    }

    /// Successful (200) `PUT` register/deregister calls so far.
    pub fn writes(&self) -> usize {
        self.shared.lock().writes
    }

    /// Forgets every registration (between benchmark phases).
    pub fn clear(&self) {
        let mut st = self.shared.lock();
        st.services.clear();
        st.requests.clear();
    }

    /// Every request received, as (method, path with query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().requests.clone()
    }

    /// Test hook (issue 12): each service ID registered (`true`) or
    /// deregistered (`false`), in the order the agent applied them.
    pub fn history(&self) -> Vec<(bool, String)> {
        self.shared.lock().history.clone()
    }
}

impl Drop for ConsulSim {
    fn drop(&mut self) {
        if let Some(running) = self.server.get_mut().take() {
            let _ = running.shutdown.send(());
        }
    }
}

async fn serve(shared: Arc<Shared>, port: u16) -> std::io::Result<(Running, u16)> {
    let socket = TcpSocket::new_v4()?;
    // The restarted listener must get the same port while old connections
    // sit in TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.bind(SocketAddr::new(shared.bind_ip(), port))?;
    let listener = socket.listen(128)?;
    let port = listener.local_addr()?.port();
    let tap = shared.tap.clone();
    let app = tap.layer(Router::new().fallback(handle).with_state(shared));
    let (shutdown, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = rx.await;
        };
        let _ = axum::serve(listener, app).with_graceful_shutdown(signal).await;
    });
    Ok((Running { shutdown, task }, port))
}

impl Shared {
    fn bind_ip(&self) -> IpAddr {
        self.opts.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
    }

    fn address(&self) -> String {
        self.bind_ip().to_string()
    }

    fn node(&self) -> String {
        self.opts.node.clone().unwrap_or_else(|| NODE.to_owned())
    }

    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic in a handler must not wedge every later test assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

fn json_reply(v: Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn not_allowed(method: &Method, allow: &'static str) -> Response {
    let mut r = text(405, format!("method {method} not allowed"));
    r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

/// What the caller is allowed to do under ACLs.
#[derive(PartialEq)]
enum Access {
    Full,
    Anonymous,
}

enum Route {
    Register,
    Deregister(String),
    Services,
    Service(String),
    Health(String),
    Catalog(String),
    CatalogServices,
}

fn route(path: &str) -> Option<(Route, &'static str)> {
    let rest = path.strip_prefix("/v1/")?;
    if rest == "agent/service/register" {
        return Some((Route::Register, NOT_ALLOWED_WRITE));
    }
    if let Some(id) = rest.strip_prefix("agent/service/deregister/") {
        return Some((Route::Deregister(percent_decode(id)), NOT_ALLOWED_WRITE));
    }
    if rest == "agent/services" {
        return Some((Route::Services, NOT_ALLOWED_READ));
    }
    if let Some(id) = rest.strip_prefix("agent/service/") {
        return Some((Route::Service(percent_decode(id)), NOT_ALLOWED_READ));
    }
    if let Some(name) = rest.strip_prefix("health/service/") {
        return Some((Route::Health(percent_decode(name)), NOT_ALLOWED_READ));
    }
    if rest == "catalog/services" {
        return Some((Route::CatalogServices, NOT_ALLOWED_READ));
    }
    if let Some(name) = rest.strip_prefix("catalog/service/") {
        return Some((Route::Catalog(percent_decode(name)), NOT_ALLOWED_READ));
    }
    None
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn query_params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (percent_decode(k), percent_decode(v)),
            None => (percent_decode(p), String::new()),
        })
        .collect()
}

fn request_token(uri: &Uri, headers: &HeaderMap) -> Option<String> {
    if let Some((_, t)) = query_params(uri).into_iter().find(|(k, _)| k == "token") {
        return Some(t);
    }
    if let Some(t) = headers.get("x-consul-token").and_then(|v| v.to_str().ok()) {
        return Some(t.to_owned());
    }
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
}

async fn handle(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
    let failing = {
        let mut st = shared.lock();
        st.requests.push((method.to_string(), path_and_query));
        st.failing
    };
    if let Some(status) = failing {
        return text(status, format!("simulated failure (HTTP {status})"));
    }
    let acl = shared.opts.acl_token.as_deref();
    if let Some(r) = crate::sim::consul_kv::intercept(&shared.kv, &method, &uri, &headers, &body, acl).await {
        return r;
    }
    let Some((route, allow)) = route(uri.path()) else {
        return text(404, "404 page not found");
    };
    if method == Method::OPTIONS {
        let mut r = ok_empty();
        r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
        return r;
    }
    let wanted = if allow == NOT_ALLOWED_WRITE { Method::PUT } else { Method::GET };
    if method != wanted {
        return not_allowed(&method, allow);
    }
    let access = match (&shared.opts.acl_token, request_token(&uri, &headers)) {
        (None, _) => Access::Full,
        (Some(want), Some(got)) if *want == got => Access::Full,
        (Some(_), Some(got)) if !got.is_empty() => return text(403, "ACL not found"),
        (Some(_), _) => Access::Anonymous,
    };
    let writes = matches!(route, Route::Register | Route::Deregister(_));
    if writes && access == Access::Anonymous {
        return text(403, "Permission denied");
    }
    let visible = access == Access::Full;
    match route {
        Route::Register => {
            let replace = query_params(&uri).iter().any(|(k, v)| k == "replace-existing-checks" && v != "false");
            register(&shared, &body, replace)
        }
        Route::Deregister(id) => deregister(&shared, &id),
        Route::Services => {
            let read = |shared: &Shared| {
                let st = shared.lock();
                let mut out = Map::new();
                if visible {
                    out.insert("consul".to_owned(), builtin_consul());
                    for (id, s) in &st.services {
                        out.insert(id.clone(), s.listing(!st.no_meta));
                    }
                }
                out
            };
            let mut held = shared.listings_held.subscribe();
            let stale = shared.stale_listings.load(std::sync::atomic::Ordering::SeqCst);
            let early = (stale && *held.borrow()).then(|| read(&shared));
            if *held.borrow() {
                shared.lock().listings_waiting += 1;
                let _ = held.wait_for(|h| !*h).await;
                shared.lock().listings_waiting -= 1;
            }
            json_reply(Value::Object(early.unwrap_or_else(|| read(&shared))))
        }
        Route::Service(id) => {
            if !visible {
                return text(403, "Permission denied");
            }
            let st = shared.lock();
            let found = if id == "consul" {
                Some(builtin_consul())
            } else {
                st.services.get(&id).map(|s| s.listing(!st.no_meta))
            };
            match found {
                Some(mut v) => {
                    let hash = fnv_hex(v.to_string().as_bytes());
                    if let Some(obj) = v.as_object_mut() {
                        obj.insert("ContentHash".to_owned(), Value::String(hash));
                    }
                    json_reply(v)
                }
                None => text(404, unknown_id(&id)),
            }
        }
        Route::Health(name) | Route::Catalog(name) if name.is_empty() => text(400, "Missing service name"),
        Route::Health(name) => {
            let passing_only = query_params(&uri).iter().any(|(k, v)| k == "passing" && v != "false");
            let st = shared.lock();
            let entries = if visible { instances(&st, &name) } else { Vec::new() };
            let out: Vec<Value> = entries
                .into_iter()
                .filter_map(|(listing, checks)| {
                    let mut all = vec![json!({
                        "Node": NODE, "CheckID": "serfHealth", "Name": "Serf Health Status",
                        "Status": "passing", "ServiceID": "", "ServiceName": "", "Type": ""
                    })];
                    for c in &checks {
                        all.push(json!({
                            "Node": NODE, "CheckID": c.id, "Name": c.name, "Status": c.status,
                            "ServiceID": listing["ID"], "ServiceName": listing["Service"], "Type": c.kind
                        }));
                    }
                    if passing_only && all.iter().any(|c| c["Status"] != "passing") {
                        return None;
                    }
                    Some(json!({
                        "Node": {"Node": NODE, "Address": "127.0.0.1", "Datacenter": "dc1", "Meta": {}},
                        "Service": listing,
                        "Checks": all,
                    }))
                })
                .collect();
            json_reply(Value::Array(out))
        }
        Route::Catalog(name) => {
            if !visible {
                return json_reply(Value::Array(Vec::new()));
            }
            let tag = query_params(&uri).into_iter().find(|(k, _)| k == "tag").map(|(_, v)| v);
            json_reply(catalog::service(&shared, &name, tag.as_deref()))
        }
        Route::CatalogServices => {
            if !visible {
                return json_reply(json!({}));
            }
            json_reply(catalog::services(&shared))
        }
    }
}

const NODE: &str = "sim-agent";

fn unknown_id(id: &str) -> String {
    format!("Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name.")
}

fn builtin_consul() -> Value {
    json!({
        "ID": "consul", "Service": "consul", "Tags": [], "Meta": {}, "Port": 8300, "Address": "",
        "Weights": {"Passing": 1, "Warning": 1}, "EnableTagOverride": false, "Datacenter": "dc1"
    })
}

/// Listings and checks of every instance of service `name`, `consul` included.
fn instances(st: &SimState, name: &str) -> Vec<(Value, Vec<SimCheck>)> {
    let mut out = Vec::new();
    if name == "consul" {
        out.push((builtin_consul(), Vec::new()));
    }
    for s in st.services.values().filter(|s| s.name == name) {
        out.push((s.listing(!st.no_meta), s.checks.clone()));
    }
    out
}

fn deregister(shared: &Shared, id: &str) -> Response {
    let mut st = shared.lock();
    if st.services.remove(id).is_some() {
        st.history.push((false, id.to_owned()));
        st.writes += 1;
        return ok_empty();
    }
    match shared.opts.deregister_unknown {
        UnknownDeregister::Modern404 => text(404, unknown_id(id)),
        UnknownDeregister::Legacy200 => {
            st.writes += 1;
            ok_empty()
        }
        UnknownDeregister::Acl500 => text(500, format!("Unknown service {id:?}")),
    }
}

fn register(shared: &Shared, body: &[u8], replace_checks: bool) -> Response {
    let no_meta = shared.lock().no_meta;
    let mut svc = match decode_register(body, no_meta) {
        Ok(svc) => svc,
        Err(msg) => return text(400, msg),
    };
    if svc.id == "consul" {
        return text(400, "Invalid service ID: \"consul\" is reserved");
    }
    let mut st = shared.lock();
    if !replace_checks && let Some(old) = st.services.get(&svc.id) {
        for c in &old.checks {
            if !svc.checks.iter().any(|n| n.id == c.id) {
                svc.checks.push(c.clone());
            }
        }
    }
    let endpoint = format!("{}:{}", svc.address, svc.port);
    st.history.push((true, svc.id.clone()));
    st.services.insert(svc.id.clone(), svc);
    st.writes += 1;
    drop(st);
    shared.tap.arrived(&endpoint);
    ok_empty()
}

impl Service {
    fn listing(&self, with_meta: bool) -> Value {
        let mut v = json!({
            "ID": self.id,
            "Service": self.name,
            "Tags": self.tags,
            "Port": self.port,
            "Address": self.address,
            "Weights": {"Passing": self.weights.0, "Warning": self.weights.1},
            "EnableTagOverride": self.enable_tag_override,
            "Datacenter": "dc1",
        });
        if let Some(obj) = v.as_object_mut() {
            if with_meta {
                obj.insert("Meta".to_owned(), json!(self.meta));
            }
            if !self.address.is_empty() {
                let tagged = json!({
                    "lan_ipv4": {"Address": self.address, "Port": self.port},
                    "wan_ipv4": {"Address": self.address, "Port": self.port},
                });
                obj.insert("TaggedAddresses".to_owned(), tagged);
            }
        }
        v
    }

    /// Best-effort reading of a register body with no validation.
    fn from_raw(body: &Value) -> Service {
        let get = |k: &str| field(body, k);
        let s = |k: &str| get(k).and_then(Value::as_str).unwrap_or("").to_owned();
        let name = s("Name");
        let id = Some(s("ID")).filter(|i| !i.is_empty()).unwrap_or_else(|| name.clone());
        Service {
            id,
            name,
            tags: get("Tags")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|t| t.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            address: s("Address"),
            port: get("Port").and_then(Value::as_i64).unwrap_or(0),
            meta: get("Meta")
                .and_then(Value::as_object)
                .map(|m| m.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned())).collect())
                .unwrap_or_default(),
            weights: (1, 1),
            enable_tag_override: get("EnableTagOverride").and_then(Value::as_bool).unwrap_or(false),
            checks: Vec::new(),
        }
    }
}

/// Stable 64-bit FNV-1a, hex; stands in for Consul's `ContentHash`.
fn fnv_hex(bytes: &[u8]) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests;
