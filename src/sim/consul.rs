//! In-process simulator of the Consul agent HTTP API (service register,
//! deregister, listing, plus minimal health and catalog reads), built against
//! `shared/reference/consul.md` §2–§4 and §10.
//!
//! Invariants:
//! - Binds `127.0.0.1` only; `stop`/`restart` keep the same port and state.
//! - Answers like a modern (1.11+) agent: PUT-only writes (405 + `Allow`
//!   otherwise), strict JSON decoding, plain-text error bodies, empty 200
//!   bodies on successful writes, `/v1/agent/services` keyed by service ID.
//! - The built-in `consul` service is always listed and can never be
//!   registered over or deregistered.
//! - State lives behind one std `Mutex`, never held across an `.await`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
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
    state: Mutex<SimState>,
}

#[derive(Default)]
struct SimState {
    services: BTreeMap<String, Service>,
    failing: Option<u16>,
    writes: usize,
    requests: Vec<(String, String)>,
    /// False imitates a pre-1.0.7 agent: `Meta` is silently dropped on
    /// register and absent from listings.
    no_meta: bool,
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
        let shared = Arc::new(Shared {
            opts,
            state: Mutex::new(SimState::default()),
        });
        let running = serve(shared.clone(), 0).await?;
        Ok(ConsulSim {
            shared,
            port: running.1,
            server: tokio::sync::Mutex::new(Some(running.0)),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Registered services by ID, each as `/v1/agent/services` shows it. The
    /// built-in `consul` service is not included.
    pub fn services(&self) -> BTreeMap<String, Value> {
        let st = self.shared.lock();
        st.services
            .iter()
            .map(|(id, s)| (id.clone(), s.listing(!st.no_meta)))
            .collect()
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

    /// Every request received, as (method, path with query).
    pub fn requests(&self) -> Vec<(String, String)> {
        self.shared.lock().requests.clone()
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
    socket.bind(SocketAddr::from(([127, 0, 0, 1], port)))?;
    let listener = socket.listen(128)?;
    let port = listener.local_addr()?.port();
    let app = Router::new().fallback(handle).with_state(shared);
    let (shutdown, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let signal = async move {
            let _ = rx.await;
        };
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(signal)
            .await;
    });
    Ok((Running { shutdown, task }, port))
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, SimState> {
        // A panic in a handler must not wedge every later test assertion.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        body.into(),
    )
        .into_response()
}

fn ok_empty() -> Response {
    StatusCode::OK.into_response()
}

fn json_reply(v: Value) -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        v.to_string(),
    )
        .into_response()
}

fn not_allowed(method: &Method, allow: &'static str) -> Response {
    let mut r = text(405, format!("method {method} not allowed"));
    r.headers_mut()
        .insert(header::ALLOW, header::HeaderValue::from_static(allow));
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
    let path_and_query = uri
        .path_and_query()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let failing = {
        let mut st = shared.lock();
        st.requests.push((method.to_string(), path_and_query));
        st.failing
    };
    if let Some(status) = failing {
        return text(status, format!("simulated failure (HTTP {status})"));
    }
    let Some((route, allow)) = route(uri.path()) else {
        return text(404, "404 page not found");
    };
    if method == Method::OPTIONS {
        let mut r = ok_empty();
        r.headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static(allow));
        return r;
    }
    let wanted = if allow == NOT_ALLOWED_WRITE {
        Method::PUT
    } else {
        Method::GET
    };
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
            let replace = query_params(&uri)
                .iter()
                .any(|(k, v)| k == "replace-existing-checks" && v != "false");
            register(&shared, &body, replace)
        }
        Route::Deregister(id) => deregister(&shared, &id),
        Route::Services => {
            let st = shared.lock();
            let mut out = Map::new();
            if visible {
                out.insert("consul".to_owned(), builtin_consul());
                for (id, s) in &st.services {
                    out.insert(id.clone(), s.listing(!st.no_meta));
                }
            }
            json_reply(Value::Object(out))
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
        Route::Health(name) | Route::Catalog(name) if name.is_empty() => {
            text(400, "Missing service name")
        }
        Route::Health(name) => {
            let passing_only = query_params(&uri)
                .iter()
                .any(|(k, v)| k == "passing" && v != "false");
            let st = shared.lock();
            let entries = if visible {
                instances(&st, &name)
            } else {
                Vec::new()
            };
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
            let st = shared.lock();
            let entries = if visible {
                instances(&st, &name)
            } else {
                Vec::new()
            };
            let out: Vec<Value> = entries
                .into_iter()
                .map(|(l, _)| {
                    json!({
                        "Node": NODE, "Address": "127.0.0.1", "Datacenter": "dc1", "NodeMeta": {},
                        "ServiceID": l["ID"], "ServiceName": l["Service"], "ServiceTags": l["Tags"],
                        "ServiceAddress": l["Address"], "ServicePort": l["Port"],
                        "ServiceMeta": l.get("Meta").cloned().unwrap_or(json!({})),
                        "ServiceWeights": l["Weights"], "ServiceEnableTagOverride": l["EnableTagOverride"],
                    })
                })
                .collect();
            json_reply(Value::Array(out))
        }
    }
}

const NODE: &str = "sim-agent";

fn unknown_id(id: &str) -> String {
    format!(
        "Unknown service ID {id:?}. Ensure that the service ID is passed, not the service name."
    )
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
    st.services.insert(svc.id.clone(), svc);
    st.writes += 1;
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
        let id = Some(s("ID"))
            .filter(|i| !i.is_empty())
            .unwrap_or_else(|| name.clone());
        Service {
            id,
            name,
            tags: get("Tags")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|t| t.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            address: s("Address"),
            port: get("Port").and_then(Value::as_i64).unwrap_or(0),
            meta: get("Meta")
                .and_then(Value::as_object)
                .map(|m| {
                    m.iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default(),
            weights: (1, 1),
            enable_tag_override: get("EnableTagOverride")
                .and_then(Value::as_bool)
                .unwrap_or(false),
            checks: Vec::new(),
        }
    }
}

/// Case-insensitive field lookup, as Go's JSON decoding does.
fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.as_object()?
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

const SERVICE_FIELDS: &[&str] = &[
    "ID",
    "Name",
    "Tags",
    "Address",
    "Port",
    "Meta",
    "EnableTagOverride",
    "enable_tag_override",
    "Weights",
    "Check",
    "Checks",
    "TaggedAddresses",
    "tagged_addresses",
    "Kind",
    "Proxy",
    "Connect",
    "SocketPath",
    "LocallyRegisteredAsSidecar",
];

const CHECK_FIELDS: &[&str] = &[
    "CheckID",
    "ID",
    "Name",
    "Notes",
    "ScriptArgs",
    "args",
    "DockerContainerID",
    "Shell",
    "HTTP",
    "Method",
    "Header",
    "Body",
    "TCP",
    "UDP",
    "GRPC",
    "GRPCUseTLS",
    "H2PING",
    "H2PingUseTLS",
    "OSService",
    "AliasNode",
    "AliasService",
    "TLSServerName",
    "TLSSkipVerify",
    "tls_skip_verify",
    "Interval",
    "TTL",
    "Timeout",
    "DeregisterCriticalServiceAfter",
    "deregister_critical_service_after",
    "Status",
    "SuccessBeforePassing",
    "FailuresBeforeWarning",
    "FailuresBeforeCritical",
    "OutputMaxSize",
    "ServiceID",
    "ServiceName",
    "Type",
];

fn decode_failed(msg: impl std::fmt::Display) -> String {
    format!("Request decode failed: {msg}")
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(v: &Value, field: &str, go_type: &str) -> String {
    decode_failed(format!(
        "json: cannot unmarshal {} into Go struct field {field} of type {go_type}",
        json_kind(v)
    ))
}

fn check_unknown(obj: &Map<String, Value>, known: &[&str]) -> Result<(), String> {
    for k in obj.keys() {
        if !known.iter().any(|f| f.eq_ignore_ascii_case(k)) {
            return Err(decode_failed(format!("json: unknown field {k:?}")));
        }
    }
    Ok(())
}

fn opt_str(obj: &Value, name: &str) -> Result<String, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(v) => Err(type_error(v, name, "string")),
    }
}

fn opt_int(obj: &Value, name: &str) -> Result<i64, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => v.as_i64().ok_or_else(|| type_error(v, name, "int")),
    }
}

/// Go duration: a number (nanoseconds) or a string like `10s`, `1m30s`, `500ms`.
fn opt_duration(obj: &Value, name: &str) -> Result<i128, String> {
    match field(obj, name) {
        None | Some(Value::Null) => Ok(0),
        Some(Value::Number(n)) => n
            .as_i64()
            .map(i128::from)
            .ok_or_else(|| type_error(&json!(0.5), name, "int64")),
        Some(Value::String(s)) => parse_go_duration(s)
            .ok_or_else(|| decode_failed(format!("time: invalid duration {s:?}"))),
        Some(v) => Err(type_error(v, name, "time.Duration")),
    }
}

/// Parses Go's `time.ParseDuration` syntax into nanoseconds.
fn parse_go_duration(s: &str) -> Option<i128> {
    let (neg, mut rest) = match s.strip_prefix('-') {
        Some(r) => (true, r),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    if rest == "0" {
        return Some(0);
    }
    if rest.is_empty() {
        return None;
    }
    let mut total: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let num: f64 = rest[..num_len].parse().ok()?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += num * scale;
    }
    let ns = total.round() as i128;
    Some(if neg { -ns } else { ns })
}

fn decode_register(body: &[u8], no_meta: bool) -> Result<Service, String> {
    let v: Value = serde_json::from_slice(body).map_err(decode_failed)?;
    let Some(obj) = v.as_object() else {
        return Err(decode_failed(format!(
            "json: cannot unmarshal {} into Go value of type structs.ServiceDefinition",
            json_kind(&v)
        )));
    };
    // Pre-1.7 agents (and so pre-1.0.7 ones) ignore unknown fields.
    if !no_meta {
        check_unknown(obj, SERVICE_FIELDS)?;
    }
    let name = opt_str(&v, "Name")?;
    let id = opt_str(&v, "ID")?;
    let address = opt_str(&v, "Address")?;
    let port = opt_int(&v, "Port")?;
    let tags = match field(&v, "Tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|t| {
                t.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| type_error(t, "Tags", "string"))
            })
            .collect::<Result<_, _>>()?,
        Some(t) => return Err(type_error(t, "Tags", "[]string")),
    };
    let meta: BTreeMap<String, String> = match field(&v, "Meta") {
        _ if no_meta => BTreeMap::new(),
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, val)| match val {
                Value::String(s) => Ok((k.clone(), s.clone())),
                other => Err(type_error(other, "Meta", "string")),
            })
            .collect::<Result<_, _>>()?,
        Some(m) => return Err(type_error(m, "Meta", "map[string]string")),
    };
    let enable_tag_override =
        match field(&v, "EnableTagOverride").or_else(|| field(&v, "enable_tag_override")) {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(b) => return Err(type_error(b, "EnableTagOverride", "bool")),
        };
    let weights = match field(&v, "Weights") {
        None | Some(Value::Null) => (1, 1),
        Some(w @ Value::Object(_)) => (opt_int(w, "Passing")?, opt_int(w, "Warning")?),
        Some(w) => return Err(type_error(w, "Weights", "api.AgentWeights")),
    };
    let mut raw_checks: Vec<CheckFields> = Vec::new();
    match field(&v, "Check") {
        None | Some(Value::Null) => {}
        Some(c @ Value::Object(m)) => {
            check_unknown(m, CHECK_FIELDS)?;
            if m.values().any(|x| !is_empty_json(x)) {
                raw_checks.push(decode_check(c)?);
            }
        }
        Some(c) => return Err(type_error(c, "Check", "structs.CheckType")),
    }
    match field(&v, "Checks") {
        None | Some(Value::Null) => {}
        Some(Value::Array(a)) => {
            for c in a {
                let Some(m) = c.as_object() else {
                    return Err(type_error(c, "Checks", "structs.CheckType"));
                };
                check_unknown(m, CHECK_FIELDS)?;
                raw_checks.push(decode_check(c)?);
            }
        }
        Some(c) => return Err(type_error(c, "Checks", "structs.CheckTypes")),
    }

    if name.is_empty() {
        return Err("Missing service name".to_owned());
    }
    validate_meta(&meta).map_err(|e| format!("Invalid Service Meta: {e}"))?;
    if weights.0 < 1 {
        return Err("Invalid Weights: Passing must be greater than 0".to_owned());
    }
    if weights.1 < 0 {
        return Err("Invalid Weights: Warning must be greater or equal than 0".to_owned());
    }
    if weights.0 > 65535 || weights.1 > 65535 {
        return Err("Invalid Weights: DNS Weight must be between 0 and 65535".to_owned());
    }
    let id = if id.is_empty() { name.clone() } else { id };
    let many = raw_checks.len() > 1;
    let mut checks = Vec::new();
    for (n, c) in raw_checks.into_iter().enumerate() {
        let kind = validate_check(&c).map_err(|e| format!("Invalid check: {e}"))?;
        let status = match c.status.as_str() {
            "" => "critical".to_owned(),
            "passing" | "warning" | "critical" => c.status,
            _ => return Err("Status for checks must 'passing', 'warning', 'critical'".to_owned()),
        };
        let check_id = match c.id {
            i if !i.is_empty() => i,
            _ if many => format!("service:{id}:{}", n + 1),
            _ => format!("service:{id}"),
        };
        let check_name = if c.name.is_empty() {
            format!("Service '{name}' check")
        } else {
            c.name
        };
        checks.push(SimCheck {
            id: check_id,
            name: check_name,
            kind,
            status,
        });
    }
    if matches!(address.as_str(), "0.0.0.0" | "::" | "[::]") {
        return Err("Invalid service address".to_owned());
    }
    Ok(Service {
        id,
        name,
        tags,
        address,
        port,
        meta,
        weights,
        enable_tag_override,
        checks,
    })
}

fn is_empty_json(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::Bool(b) => !b,
        Value::Number(n) => n.as_f64() == Some(0.0),
        Value::String(s) => s.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Object(o) => o.is_empty(),
    }
}

/// The fields of one check object that the simulator uses, decoded.
struct CheckFields {
    interval: i128,
    ttl: i128,
    kind: Option<&'static str>,
    status: String,
    id: String,
    name: String,
}

/// Decodes one check object; only type and syntax errors here.
fn decode_check(c: &Value) -> Result<CheckFields, String> {
    let interval = opt_duration(c, "Interval")?;
    let ttl = opt_duration(c, "TTL")?;
    opt_duration(c, "Timeout")?;
    opt_duration(c, "DeregisterCriticalServiceAfter")?;
    let kind = if !opt_str(c, "HTTP")?.is_empty() {
        Some("http")
    } else if !opt_str(c, "TCP")?.is_empty() {
        Some("tcp")
    } else if !opt_str(c, "GRPC")?.is_empty() {
        Some("grpc")
    } else if !opt_str(c, "UDP")?.is_empty() {
        Some("udp")
    } else if field(c, "ScriptArgs").is_some_and(|a| !is_empty_json(a)) {
        Some("script")
    } else {
        None
    };
    let mut id = opt_str(c, "CheckID")?;
    if id.is_empty() {
        id = opt_str(c, "ID")?;
    }
    Ok(CheckFields {
        interval,
        ttl,
        kind,
        status: opt_str(c, "Status")?,
        id,
        name: opt_str(c, "Name")?,
    })
}

/// `CheckType.Validate` of a modern agent; returns the check's type.
fn validate_check(c: &CheckFields) -> Result<&'static str, String> {
    if c.interval > 0 && c.ttl > 0 {
        return Err("Interval and TTL cannot both be specified".to_owned());
    }
    match c.kind {
        Some(_) if c.interval <= 0 => Err(
            "Interval must be > 0 for Script, HTTP, H2PING, TCP, UDP or OSService checks"
                .to_owned(),
        ),
        Some(k) => Ok(k),
        None if c.ttl <= 0 => Err("TTL must be > 0 for TTL checks".to_owned()),
        None => Ok("ttl"),
    }
}

/// `validateMetadata` + `validateMetaPair` of `agent/structs/structs.go`.
fn validate_meta(meta: &BTreeMap<String, String>) -> Result<(), String> {
    if meta.len() > 64 {
        return Err("Node metadata cannot contain more than 64 key/value pairs".to_owned());
    }
    for (k, v) in meta {
        let problem = if k.is_empty() {
            Some("Key cannot be blank")
        } else if !k
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            Some("Key contains invalid characters")
        } else if k.len() > 128 {
            Some("Key is too long (limit: 128 characters)")
        } else if k.starts_with("consul-") {
            Some("Key prefix 'consul-' is reserved for internal use")
        } else if v.len() > 512 {
            Some("Value is too long (limit: 512 characters)")
        } else {
            None
        };
        if let Some(p) = problem {
            return Err(format!("Couldn't load metadata pair ('{k}', '{v}'): {p}"));
        }
    }
    Ok(())
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
