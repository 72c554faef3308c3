//! Sessions and the KV store of the Consul simulator: what leader election on
//! a Consul lock needs (reference `consul.md` §8–§9), plus the switches a test
//! needs to cut one client off and the log to prove who wrote when.
//!
//! Invariants:
//! - One global index, bumped on every write (session create/destroy/expiry,
//!   KV write); `X-Consul-Index` is never 0.
//! - A session with a TTL is invalidated `expiry_factor × TTL` after its last
//!   create/renew (Consul servers use 2×; a test may pick 1× to play the
//!   earliest a fenced writer must have stopped). Invalidation (expiry or
//!   destroy) releases (or deletes) its keys and starts their lock delay, during
//!   which `?acquire` answers `false`. A voluntary `?release` starts no delay.
//! - Requests carrying `x-switchboard-replica: <name>` of a partitioned replica
//!   get no answer (they hang until the partition heals, then fail), whatever the
//!   path: that replica is cut off from this agent. A `delay`ed replica's
//!   session and KV requests are held unanswered and take effect when let
//!   through: late writes, as a slow network delivers them.
//! - State lives behind one std `Mutex`, never held across an `.await`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use tokio::sync::watch;

/// The header by which Switchboard replicas name themselves to Consul.
pub const REPLICA_HEADER: &str = "x-switchboard-replica";

/// The longest a blocking query may wait (Consul caps `wait` at 10 minutes).
const MAX_WAIT: Duration = Duration::from_secs(600);
/// Lock delays above this are capped (`structs.MaxLockDelay`).
const MAX_LOCK_DELAY: Duration = Duration::from_secs(60);

/// The session and KV half of one simulated agent. Cheap to clone.
#[derive(Clone)]
pub struct Kv {
    inner: Arc<Inner>,
}

struct Inner {
    state: Mutex<KvState>,
    /// The global index; blocking queries wait on it.
    index: watch::Sender<u64>,
    /// Replicas cut off from this agent; their requests wait on it.
    partitioned: watch::Sender<BTreeSet<String>>,
    /// Replicas whose requests (with a path containing the value) are held
    /// and take effect when let through.
    delayed: watch::Sender<BTreeMap<String, String>>,
}

struct KvState {
    index: u64,
    /// Index of the last change to the KV table (what a read of a missing key answers).
    kv_index: u64,
    sessions: BTreeMap<String, Session>,
    keys: BTreeMap<String, Entry>,
    /// Key → end of its lock delay.
    lock_delays: BTreeMap<String, Instant>,
    requests: Vec<KvRequest>,
    locks: Vec<LockEvent>,
    ttl_min: Duration,
    expiry_factor: f64,
    next_id: u64,
}

#[derive(Debug, Clone)]
struct Session {
    id: String,
    name: String,
    ttl: Option<Duration>,
    lock_delay: Duration,
    delete: bool,
    expires_at: Option<Instant>,
    create_index: u64,
    modify_index: u64,
    /// The node checks that invalidate it when critical (`serfHealth` by
    /// default; none when created with `"Checks": []` or `"NodeChecks": []`).
    node_checks: Vec<String>,
    /// `ServiceChecks` as sent (`null` when not).
    service_checks: Value,
}

/// The agent's own node check, every session's by default.
pub const SERF_HEALTH: &str = "serfHealth";

/// The node checks a session is bound to, from its create body's `Checks`
/// and `NodeChecks` (absent: the default `["serfHealth"]`; `null` is empty),
/// by Consul's rules (1.7+ `agent/session_endpoint.go`,
/// `fixupEmptySessionChecks`; the server binds both lists).
fn node_checks_of(checks: Option<&Value>, node_checks: Option<&Value>) -> Result<Vec<String>, String> {
    let list = |v: Option<&Value>, field: &str| -> Result<Vec<String>, String> {
        match v {
            None => Ok(vec![SERF_HEALTH.to_owned()]),
            Some(Value::Null) => Ok(Vec::new()),
            Some(Value::Array(items)) => items
                .iter()
                .map(|i| i.as_str().map(str::to_owned).ok_or_else(|| format!("{field}: not a list of strings")))
                .collect(),
            Some(_) => Err(format!("{field}: not a list")),
        }
    };
    let (mut checks, mut node) = (list(checks, "Checks")?, list(node_checks, "NodeChecks")?);
    if checks.is_empty() {
        node.clear();
    } else if checks == [SERF_HEALTH] || node.is_empty() {
        checks.clear();
    }
    for c in checks {
        if !node.contains(&c) {
            node.push(c);
        }
    }
    Ok(node)
}

#[derive(Debug, Clone)]
struct Entry {
    value: Vec<u8>,
    flags: u64,
    session: Option<String>,
    lock_index: u64,
    create_index: u64,
    modify_index: u64,
}

/// One request to a session or KV endpoint, or any request of a cut-off replica.
#[derive(Debug, Clone)]
pub struct KvRequest {
    pub at: Instant,
    /// The `x-switchboard-replica` header, if any.
    pub replica: Option<String>,
    pub method: String,
    /// Path with query.
    pub path: String,
    /// True when the replica was partitioned: the request had no effect.
    pub dropped: bool,
}

/// What happened to a lock, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockChange {
    Acquired,
    Released,
    /// The holding session was destroyed or expired.
    Invalidated,
}

#[derive(Debug, Clone)]
pub struct LockEvent {
    pub at: Instant,
    pub key: String,
    pub session: String,
    /// The session's `Name`.
    pub name: String,
    pub lock_index: u64,
    pub change: LockChange,
}

impl Default for Kv {
    fn default() -> Kv {
        Kv {
            inner: Arc::new(Inner {
                state: Mutex::new(KvState {
                    index: 1,
                    kv_index: 1,
                    sessions: BTreeMap::new(),
                    keys: BTreeMap::new(),
                    lock_delays: BTreeMap::new(),
                    requests: Vec::new(),
                    locks: Vec::new(),
                    ttl_min: Duration::from_secs(10),
                    expiry_factor: 2.0,
                    next_id: 1,
                }),
                index: watch::Sender::new(1),
                partitioned: watch::Sender::new(BTreeSet::new()),
                delayed: watch::Sender::new(BTreeMap::new()),
            }),
        }
    }
}

impl Kv {
    fn lock(&self) -> MutexGuard<'_, KvState> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The smallest session TTL accepted (Consul's `session_ttl_min`, 10 s by
    /// default; tests lower it to stay fast).
    pub fn set_session_ttl_min(&self, min: Duration) {
        self.lock().ttl_min = min;
    }

    /// A TTL session is invalidated this many TTLs after its last renew
    /// (Consul servers: 2; 1 plays the earliest Consul is allowed to).
    pub fn set_expiry_factor(&self, factor: f64) {
        self.lock().expiry_factor = factor.max(1.0);
    }

    /// Cuts `replica` off from this agent (`on`), or heals the partition.
    pub fn partition(&self, replica: &str, on: bool) {
        self.inner.partitioned.send_modify(|p| {
            if on {
                p.insert(replica.to_owned());
            } else {
                p.remove(replica);
            }
        });
    }

    /// Holds the session and KV requests of `replica` whose path contains
    /// `paths` (`Some("")`: all of them): unanswered, so its client times out,
    /// they take effect only when let through (`None`), late, as a network
    /// that delays packets would have them.
    pub fn delay(&self, replica: &str, paths: Option<&str>) {
        self.inner.delayed.send_modify(|p| match paths {
            Some(sub) => {
                p.insert(replica.to_owned(), sub.to_owned());
            }
            None => {
                p.remove(replica);
            }
        });
    }

    /// Every session/KV request so far, and every request of a cut-off replica.
    pub fn requests(&self) -> Vec<KvRequest> {
        self.lock().requests.clone()
    }

    /// Acquisitions, releases and invalidations of locks, in order.
    pub fn locks(&self) -> Vec<LockEvent> {
        self.lock().locks.clone()
    }

    /// The session holding `key` and its `Name`, if any.
    pub fn holder(&self, key: &str) -> Option<(String, String)> {
        let mut st = self.lock();
        st.expire(Instant::now(), &self.inner.index);
        let sid = st.keys.get(key)?.session.clone()?;
        let name = st.sessions.get(&sid).map(|s| s.name.clone()).unwrap_or_default();
        Some((sid, name))
    }

    /// The value stored at `key`, if any.
    pub fn value(&self, key: &str) -> Option<Vec<u8>> {
        self.lock().keys.get(key).map(|e| e.value.clone())
    }

    /// The node checks of the live session named `name` (as `/v1/session/info` shows them).
    pub fn session_checks(&self, name: &str) -> Option<Vec<String>> {
        let mut st = self.lock();
        st.expire(Instant::now(), &self.inner.index);
        st.sessions.values().find(|s| s.name == name).map(|s| s.node_checks.clone())
    }

    /// The agent's `serfHealth` check goes critical (a flapping node, a
    /// gossip hiccup): Consul invalidates every session bound to it at once,
    /// whatever its TTL. Returns how many it invalidated.
    pub fn fail_node_check(&self) -> usize {
        let mut st = self.lock();
        let bound: Vec<String> = st
            .sessions
            .values()
            .filter(|s| s.node_checks.iter().any(|c| c == SERF_HEALTH))
            .map(|s| s.id.clone())
            .collect();
        for id in &bound {
            st.invalidate(id, Instant::now(), &self.inner.index);
        }
        bound.len()
    }

    /// The keys under `prefix`, in order.
    pub fn keys(&self, prefix: &str) -> Vec<String> {
        self.lock().keys.keys().filter(|k| k.starts_with(prefix)).cloned().collect()
    }

    /// How many sessions are alive.
    pub fn session_count(&self) -> usize {
        let mut st = self.lock();
        st.expire(Instant::now(), &self.inner.index);
        st.sessions.len()
    }
}

fn text(status: u16, body: impl Into<String>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    (status, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], body.into()).into_response()
}

fn with_index(mut r: Response, index: u64) -> Response {
    if let Ok(v) = header::HeaderValue::from_str(&index.max(1).to_string()) {
        r.headers_mut().insert("x-consul-index", v);
    }
    r.headers_mut().insert("x-consul-knownleader", header::HeaderValue::from_static("true"));
    r.headers_mut().insert("x-consul-lastcontact", header::HeaderValue::from_static("0"));
    r
}

fn json_reply(v: Value, index: u64) -> Response {
    with_index((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response(), index)
}

fn not_allowed(method: &Method, allow: &'static str) -> Response {
    let mut r = text(405, format!("method {method} not allowed"));
    r.headers_mut().insert(header::ALLOW, header::HeaderValue::from_static(allow));
    r
}

fn params(uri: &Uri) -> Vec<(String, String)> {
    uri.query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (p.to_owned(), String::new()),
        })
        .collect()
}

fn param<'a>(ps: &'a [(String, String)], key: &str) -> Option<&'a str> {
    ps.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// Go's duration text for the few values the sim prints (`10s`, `1.5s`, `250ms`).
fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

/// The hook `sim::consul` calls for every request: answers session and KV
/// calls, and holds back every call of a partitioned replica. `None`: not ours.
pub(crate) async fn intercept(
    kv: &Kv,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    acl_token: Option<&str>,
) -> Option<Response> {
    let replica = headers.get(REPLICA_HEADER).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let path = uri.path();
    let ours = path.starts_with("/v1/kv/") || path.starts_with("/v1/session/");
    let cut_off = replica.as_ref().is_some_and(|r| kv.inner.partitioned.borrow().contains(r));
    if ours || cut_off {
        let path_and_query = uri.path_and_query().map(|p| p.as_str().to_owned()).unwrap_or_default();
        kv.lock().requests.push(KvRequest {
            at: Instant::now(),
            replica: replica.clone(),
            method: method.to_string(),
            path: path_and_query,
            dropped: cut_off,
        });
    }
    if let Some(r) = replica.clone().filter(|_| cut_off) {
        // No answer while cut off, as a dropped network would do; the client's
        // timeout fires first. Once healed, the request still has no effect.
        let mut rx = kv.inner.partitioned.subscribe();
        let _ = tokio::time::timeout(MAX_WAIT, rx.wait_for(|p| !p.contains(&r))).await;
        return Some(text(503, "request dropped by a network partition"));
    }
    if !ours {
        return None;
    }
    let held = |p: &BTreeMap<String, String>, r: &str| p.get(r).is_some_and(|sub| uri.path().contains(sub.as_str()));
    let delayed = replica.as_ref().filter(|r| held(&kv.inner.delayed.borrow(), r)).cloned();
    if let Some(r) = delayed {
        // Applied when let through, even if the client has given up by then.
        let (kv, method, uri, headers, body) =
            (kv.clone(), method.clone(), uri.clone(), headers.clone(), body.to_vec());
        let acl_token = acl_token.map(str::to_owned);
        let late = tokio::spawn(async move {
            let mut rx = kv.inner.delayed.subscribe();
            let _ = tokio::time::timeout(MAX_WAIT, rx.wait_for(|p| !p.contains_key(&r))).await;
            answer(&kv, &method, &uri, &headers, &body, acl_token.as_deref()).await
        });
        return Some(late.await.unwrap_or_else(|_| text(500, "delayed request lost")));
    }
    Some(answer(kv, method, uri, headers, body, acl_token).await)
}

async fn answer(
    kv: &Kv,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    acl_token: Option<&str>,
) -> Response {
    if let Some(want) = acl_token {
        let given = param(&params(uri), "token")
            .map(str::to_owned)
            .or_else(|| headers.get("x-consul-token").and_then(|v| v.to_str().ok()).map(str::to_owned));
        match given {
            Some(t) if t == want => {}
            Some(t) if !t.is_empty() => return text(403, "ACL not found"),
            _ => return text(403, "Permission denied"),
        }
    }
    kv.handle(method, uri, body).await
}

impl Kv {
    async fn handle(&self, method: &Method, uri: &Uri, body: &[u8]) -> Response {
        let path = uri.path();
        let ps = params(uri);
        if let Some(rest) = path.strip_prefix("/v1/session/") {
            let (op, id) = rest.split_once('/').unwrap_or((rest, ""));
            let (want, allow) = match op {
                "create" | "renew" | "destroy" => (Method::PUT, "OPTIONS,PUT"),
                "info" => (Method::GET, "GET,OPTIONS"),
                _ => return text(404, "404 page not found"),
            };
            if *method != want {
                return not_allowed(method, allow);
            }
            let now = Instant::now();
            let mut st = self.lock();
            st.expire(now, &self.inner.index);
            return match op {
                "create" => st.create_session(body, now, &self.inner.index),
                "renew" => st.renew(id, now),
                "destroy" => {
                    if id.is_empty() {
                        return text(400, "Missing session");
                    }
                    st.invalidate(id, now, &self.inner.index);
                    json_reply(json!(true), st.index)
                }
                _ => {
                    let out: Vec<Value> = st.sessions.get(id).map(|s| s.json()).into_iter().collect();
                    json_reply(Value::Array(out), st.index)
                }
            };
        }
        let key = path.strip_prefix("/v1/kv/").unwrap_or_default().to_owned();
        if key.is_empty() {
            return text(400, "Missing key name");
        }
        match *method {
            Method::GET => self.get(&key, &ps).await,
            Method::PUT => {
                let now = Instant::now();
                let mut st = self.lock();
                st.expire(now, &self.inner.index);
                st.put(&key, &ps, body, now, &self.inner.index)
            }
            Method::DELETE => {
                let mut st = self.lock();
                st.delete(&key, &ps, &self.inner.index)
            }
            _ => not_allowed(method, "DELETE,GET,OPTIONS,PUT"),
        }
    }

    /// `GET /v1/kv/<key>`, blocking when `?index=` is given; `?keys` lists
    /// the keys under the prefix `key` instead.
    async fn get(&self, key: &str, ps: &[(String, String)]) -> Response {
        if param(ps, "recurse").is_some() {
            let st = self.lock();
            let entries: Vec<Value> =
                st.keys.iter().filter(|(k, _)| k.starts_with(key)).map(|(k, e)| e.json(k)).collect();
            if entries.is_empty() {
                return with_index(StatusCode::NOT_FOUND.into_response(), st.kv_index);
            }
            return json_reply(Value::Array(entries), st.kv_index);
        }
        if param(ps, "keys").is_some() {
            let st = self.lock();
            let keys: Vec<&String> = st.keys.keys().filter(|k| k.starts_with(key)).collect();
            if keys.is_empty() {
                return with_index(StatusCode::NOT_FOUND.into_response(), st.kv_index);
            }
            return json_reply(json!(keys), st.kv_index);
        }
        let min_index = match param(ps, "index").map(str::parse::<u64>) {
            None => None,
            Some(Ok(i)) => Some(i),
            Some(Err(_)) => return text(400, "Invalid index"),
        };
        let wait = match param(ps, "wait") {
            None => Duration::from_secs(300),
            Some(w) => match humantime::parse_duration(w) {
                Ok(d) => d.min(MAX_WAIT),
                Err(_) => return text(400, "Invalid wait time"),
            },
        };
        let deadline = Instant::now() + wait;
        let mut changes = self.inner.index.subscribe();
        loop {
            let now = Instant::now();
            let (index, entry, next_expiry) = {
                let mut st = self.lock();
                st.expire(now, &self.inner.index);
                let entry = st.keys.get(key).cloned();
                let index = entry.as_ref().map_or(st.kv_index, |e| e.modify_index);
                (index, entry, st.sessions.values().filter_map(|s| s.expires_at).min())
            };
            let settled = min_index.is_none_or(|i| index > i) || now >= deadline;
            if settled {
                return match entry {
                    None => with_index(StatusCode::NOT_FOUND.into_response(), index),
                    Some(e) => json_reply(json!([e.json(key)]), index),
                };
            }
            let until = next_expiry.map_or(deadline, |x| x.min(deadline)).max(now + Duration::from_millis(1));
            changes.borrow_and_update();
            let _ = tokio::time::timeout_at(until.into(), changes.changed()).await;
        }
    }
}

impl KvState {
    fn bump(&mut self, tx: &watch::Sender<u64>) -> u64 {
        self.index += 1;
        tx.send_replace(self.index);
        self.index
    }

    /// Invalidates every TTL session whose time is up.
    fn expire(&mut self, now: Instant, tx: &watch::Sender<u64>) {
        let due: Vec<String> =
            self.sessions.values().filter(|s| s.expires_at.is_some_and(|at| at <= now)).map(|s| s.id.clone()).collect();
        for id in due {
            self.invalidate(&id, now, tx);
        }
    }

    fn invalidate(&mut self, id: &str, now: Instant, tx: &watch::Sender<u64>) {
        let Some(s) = self.sessions.remove(id) else { return };
        let idx = self.bump(tx);
        let held: Vec<String> =
            self.keys.iter().filter(|(_, e)| e.session.as_deref() == Some(id)).map(|(k, _)| k.clone()).collect();
        for key in held {
            if !s.lock_delay.is_zero() {
                self.lock_delays.insert(key.clone(), now + s.lock_delay);
            }
            let lock_index = self.keys.get(&key).map_or(0, |e| e.lock_index);
            if s.delete {
                self.keys.remove(&key);
            } else if let Some(e) = self.keys.get_mut(&key) {
                e.session = None;
                e.modify_index = idx;
            }
            self.kv_index = idx;
            self.locks.push(LockEvent {
                at: now,
                key,
                session: s.id.clone(),
                name: s.name.clone(),
                lock_index,
                change: LockChange::Invalidated,
            });
        }
    }

    fn create_session(&mut self, body: &[u8], now: Instant, tx: &watch::Sender<u64>) -> Response {
        let req: Value = if body.iter().all(u8::is_ascii_whitespace) {
            json!({})
        } else {
            match serde_json::from_slice(body) {
                Ok(v) => v,
                Err(e) => return text(400, format!("Request decode failed: {e}")),
            }
        };
        let Some(obj) = req.as_object() else { return text(400, "Request decode failed: not an object") };
        const KNOWN: &[&str] =
            &["name", "node", "ttl", "lockdelay", "behavior", "checks", "nodechecks", "servicechecks", "id"];
        if let Some(k) = obj.keys().find(|k| !KNOWN.contains(&k.to_ascii_lowercase().as_str())) {
            return text(400, format!("Request decode failed: json: unknown field {k:?}"));
        }
        let get = |name: &str| obj.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v);
        let node_checks = match node_checks_of(get("Checks"), get("NodeChecks")) {
            Ok(c) => c,
            Err(e) => return text(400, format!("Request decode failed: {e}")),
        };
        let service_checks = get("ServiceChecks").cloned().unwrap_or(Value::Null);
        let name = get("Name").and_then(Value::as_str).unwrap_or("").to_owned();
        let behavior = get("Behavior").and_then(Value::as_str).unwrap_or("release");
        let delete = match behavior {
            "" | "release" => false,
            "delete" => true,
            other => return text(500, format!("Invalid Behavior setting '{other}'")),
        };
        let ttl = match get("TTL").and_then(Value::as_str).unwrap_or("") {
            "" => None,
            raw => match humantime::parse_duration(raw) {
                Ok(d) if d.is_zero() => None,
                Ok(d) if d < self.ttl_min || d > Duration::from_secs(86_400) => {
                    return text(
                        500,
                        format!(
                            "Invalid Session TTL '{}', must be between [{}=24h0m0s]",
                            d.as_nanos(),
                            go_duration(self.ttl_min)
                        ),
                    );
                }
                Ok(d) => Some(d),
                Err(e) => return text(500, format!("Session TTL '{raw}' invalid: {e}")),
            },
        };
        let lock_delay = match get("LockDelay") {
            None => Duration::from_secs(15),
            Some(Value::Number(n)) => {
                let n = n.as_u64().unwrap_or(0);
                if n < 1000 { Duration::from_secs(n) } else { Duration::from_nanos(n) }
            }
            Some(Value::String(s)) => match humantime::parse_duration(s) {
                Ok(d) => d,
                Err(e) => return text(400, format!("Request decode failed: LockDelay: {e}")),
            },
            Some(_) => return text(400, "Request decode failed: LockDelay"),
        }
        .min(MAX_LOCK_DELAY);
        let idx = self.bump(tx);
        let n = self.next_id;
        self.next_id += 1;
        let id = format!(
            "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
            0x5b0a_7d00_u32.wrapping_add(n as u32),
            n & 0xffff,
            0x4000,
            0x8000,
            idx
        );
        let expires_at = ttl.map(|t| now + t.mul_f64(self.expiry_factor));
        self.sessions.insert(
            id.clone(),
            Session {
                id: id.clone(),
                name,
                ttl,
                lock_delay,
                delete,
                expires_at,
                create_index: idx,
                modify_index: idx,
                node_checks,
                service_checks,
            },
        );
        json_reply(json!({ "ID": id }), idx)
    }

    fn renew(&mut self, id: &str, now: Instant) -> Response {
        let factor = self.expiry_factor;
        let index = self.index;
        match self.sessions.get_mut(id) {
            Some(s) => {
                s.expires_at = s.ttl.map(|t| now + t.mul_f64(factor));
                json_reply(json!([s.json()]), index)
            }
            None => text(404, format!("Session id '{id}' not found")),
        }
    }

    /// `DELETE /v1/kv/<key>`: `?recurse` deletes the prefix; `?cas=<index>`
    /// deletes only if the key's ModifyIndex is that (0 deletes nothing).
    fn delete(&mut self, key: &str, ps: &[(String, String)], tx: &watch::Sender<u64>) -> Response {
        let cas = match param(ps, "cas").map(str::parse::<u64>) {
            None => None,
            Some(Ok(i)) => Some(i),
            Some(Err(_)) => return text(400, "Invalid cas index"),
        };
        if let Some(cas) = cas
            && (cas == 0 || self.keys.get(key).map(|e| e.modify_index) != Some(cas))
        {
            return json_reply(json!(false), self.index);
        }
        let idx = self.bump(tx);
        self.kv_index = idx;
        if param(ps, "recurse").is_some() && cas.is_none() {
            self.keys.retain(|k, _| !k.starts_with(key));
        } else {
            self.keys.remove(key);
        }
        json_reply(json!(true), idx)
    }

    fn put(
        &mut self,
        key: &str,
        ps: &[(String, String)],
        body: &[u8],
        now: Instant,
        tx: &watch::Sender<u64>,
    ) -> Response {
        if body.len() > 512 * 1024 {
            return text(413, "Value exceeds 524288 byte limit");
        }
        let flags = param(ps, "flags").and_then(|f| f.parse().ok());
        let cas = match param(ps, "cas").map(str::parse::<u64>) {
            None => None,
            Some(Ok(i)) => Some(i),
            Some(Err(_)) => return text(400, "Invalid cas index"),
        };
        // Check-and-set: 0 creates only if absent, else the key's ModifyIndex must match.
        if let Some(cas) = cas {
            let current = self.keys.get(key).map(|e| e.modify_index);
            let matches = match cas {
                0 => current.is_none(),
                i => current == Some(i),
            };
            if !matches {
                return json_reply(json!(false), self.index);
            }
        }
        if let Some(sid) = param(ps, "acquire") {
            let Some(name) = self.sessions.get(sid).map(|s| s.name.clone()) else {
                return text(500, format!("invalid session {sid:?}"));
            };
            let held_by = self.keys.get(key).and_then(|e| e.session.clone());
            match held_by {
                Some(h) if h == sid => {
                    let idx = self.bump(tx);
                    self.kv_index = idx;
                    if let Some(e) = self.keys.get_mut(key) {
                        e.value = body.to_vec();
                        e.modify_index = idx;
                        e.flags = flags.unwrap_or(e.flags);
                    }
                    return json_reply(json!(true), idx);
                }
                Some(_) => return json_reply(json!(false), self.index),
                None => {}
            }
            if self.lock_delays.get(key).is_some_and(|until| now < *until) {
                return json_reply(json!(false), self.index);
            }
            let idx = self.bump(tx);
            self.kv_index = idx;
            let e = self.keys.entry(key.to_owned()).or_insert(Entry {
                value: Vec::new(),
                flags: 0,
                session: None,
                lock_index: 0,
                create_index: idx,
                modify_index: idx,
            });
            e.value = body.to_vec();
            e.flags = flags.unwrap_or(e.flags);
            e.session = Some(sid.to_owned());
            e.lock_index += 1;
            e.modify_index = idx;
            let lock_index = e.lock_index;
            self.locks.push(LockEvent {
                at: now,
                key: key.to_owned(),
                session: sid.to_owned(),
                name,
                lock_index,
                change: LockChange::Acquired,
            });
            return json_reply(json!(true), idx);
        }
        if let Some(sid) = param(ps, "release") {
            if !self.sessions.contains_key(sid) {
                return text(500, format!("invalid session {sid:?}"));
            }
            let held = self.keys.get(key).is_some_and(|e| e.session.as_deref() == Some(sid));
            if !held {
                return json_reply(json!(false), self.index);
            }
            let idx = self.bump(tx);
            self.kv_index = idx;
            let name = self.sessions.get(sid).map(|s| s.name.clone()).unwrap_or_default();
            let mut lock_index = 0;
            if let Some(e) = self.keys.get_mut(key) {
                e.session = None;
                e.modify_index = idx;
                e.value = body.to_vec();
                lock_index = e.lock_index;
            }
            self.locks.push(LockEvent {
                at: now,
                key: key.to_owned(),
                session: sid.to_owned(),
                name,
                lock_index,
                change: LockChange::Released,
            });
            return json_reply(json!(true), idx);
        }
        let idx = self.bump(tx);
        self.kv_index = idx;
        let e = self.keys.entry(key.to_owned()).or_insert(Entry {
            value: Vec::new(),
            flags: 0,
            session: None,
            lock_index: 0,
            create_index: idx,
            modify_index: idx,
        });
        e.value = body.to_vec();
        e.flags = flags.unwrap_or(e.flags);
        e.modify_index = idx;
        json_reply(json!(true), idx)
    }
}

impl Session {
    fn json(&self) -> Value {
        json!({
            "ID": self.id,
            "Name": self.name,
            "Node": "sim-agent",
            "LockDelay": self.lock_delay.as_nanos() as u64,
            "Behavior": if self.delete { "delete" } else { "release" },
            "TTL": self.ttl.map(go_duration).unwrap_or_default(),
            "NodeChecks": self.node_checks,
            "ServiceChecks": self.service_checks,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }
}

impl Entry {
    fn json(&self, key: &str) -> Value {
        let mut v = json!({
            "Key": key,
            "Flags": self.flags,
            "Value": if self.value.is_empty() {
                Value::Null
            } else {
                Value::String(base64::engine::general_purpose::STANDARD.encode(&self.value))
            },
            "LockIndex": self.lock_index,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        });
        if let (Some(obj), Some(s)) = (v.as_object_mut(), &self.session) {
            obj.insert("Session".to_owned(), Value::String(s.clone()));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(kv: &Kv, method: Method, uri: &str, body: &str) -> (u16, Value) {
        let uri: Uri = uri.parse().unwrap();
        let r = intercept(kv, &method, &uri, &HeaderMap::new(), body.as_bytes(), None).await.unwrap();
        let status = r.status().as_u16();
        let bytes = axum::body::to_bytes(r.into_body(), usize::MAX).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(Value::Null))
    }

    async fn session(kv: &Kv, body: &str) -> String {
        let (status, v) = call(kv, Method::PUT, "/v1/session/create", body).await;
        assert_eq!(status, 200, "{v}");
        v["ID"].as_str().unwrap().to_owned()
    }

    #[tokio::test]
    async fn acquire_is_exclusive_and_release_frees_without_delay() {
        let kv = Kv::default();
        let a = session(&kv, r#"{"Name":"a","TTL":"10s","LockDelay":"15s"}"#).await;
        let b = session(&kv, r#"{"Name":"b","TTL":"10s"}"#).await;
        let k = "/v1/kv/switchboard/x/leader";
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?acquire={a}"), "a").await.1, json!(true));
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?acquire={b}"), "b").await.1, json!(false));
        let (_, got) = call(&kv, Method::GET, k, "").await;
        assert_eq!(got[0]["Session"], json!(a));
        assert_eq!(got[0]["LockIndex"], json!(1));
        assert_eq!(got[0]["Value"], json!("YQ=="));
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?release={a}"), "").await.1, json!(true));
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?acquire={b}"), "b").await.1, json!(true));
        assert_eq!(kv.holder("switchboard/x/leader").unwrap().1, "b");
        assert_eq!(call(&kv, Method::GET, k, "").await.1[0]["LockIndex"], json!(2));
    }

    #[tokio::test]
    async fn destroy_starts_the_lock_delay() {
        let kv = Kv::default();
        let a = session(&kv, r#"{"Name":"a","LockDelay":"1h"}"#).await;
        let b = session(&kv, r#"{"Name":"b"}"#).await;
        let k = "/v1/kv/l";
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?acquire={a}"), "").await.1, json!(true));
        assert_eq!(call(&kv, Method::PUT, &format!("/v1/session/destroy/{a}"), "").await.1, json!(true));
        assert_eq!(call(&kv, Method::GET, k, "").await.1[0].get("Session"), None);
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?acquire={b}"), "").await.1, json!(false));
        assert_eq!(call(&kv, Method::PUT, &format!("/v1/session/renew/{a}"), "").await.0, 404);
        let (status, _) = call(&kv, Method::PUT, &format!("{k}?acquire={a}"), "").await;
        assert_eq!(status, 500);
    }

    #[tokio::test]
    async fn keys_list_a_prefix() {
        let kv = Kv::default();
        assert_eq!(call(&kv, Method::GET, "/v1/kv/sb/x/?keys", "").await.0, 404);
        call(&kv, Method::PUT, "/v1/kv/sb/x/a", "1").await;
        call(&kv, Method::PUT, "/v1/kv/sb/x/b", "2").await;
        call(&kv, Method::PUT, "/v1/kv/sb/y", "3").await;
        assert_eq!(call(&kv, Method::GET, "/v1/kv/sb/x/?keys", "").await.1, json!(["sb/x/a", "sb/x/b"]));
    }

    #[tokio::test]
    async fn cas_writes_and_deletes_only_over_the_index_they_read() {
        let kv = Kv::default();
        let k = "/v1/kv/sb/x/intent/a";
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?cas=0"), "1").await.1, json!(true), "cas=0 creates");
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?cas=0"), "2").await.1, json!(false), "only if absent");
        let read = call(&kv, Method::GET, k, "").await.1;
        let index = read[0]["ModifyIndex"].as_u64().unwrap();
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?cas={}", index + 1), "3").await.1, json!(false));
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?cas={index}"), "4").await.1, json!(true));
        assert_eq!(kv.value("sb/x/intent/a").unwrap(), b"4");
        // The write moved the index: a delete over the old one does nothing.
        assert_eq!(call(&kv, Method::DELETE, &format!("{k}?cas={index}"), "").await.1, json!(false));
        assert_eq!(call(&kv, Method::DELETE, &format!("{k}?cas=0"), "").await.1, json!(false));
        let now = call(&kv, Method::GET, k, "").await.1[0]["ModifyIndex"].as_u64().unwrap();
        assert_eq!(call(&kv, Method::DELETE, &format!("{k}?cas={now}"), "").await.1, json!(true));
        assert_eq!(kv.value("sb/x/intent/a"), None);
        assert_eq!(call(&kv, Method::PUT, &format!("{k}?cas=x"), "").await.0, 400);
    }

    #[tokio::test]
    async fn recurse_reads_and_deletes_a_prefix() {
        let kv = Kv::default();
        assert_eq!(call(&kv, Method::GET, "/v1/kv/sb/x/?recurse", "").await.0, 404);
        call(&kv, Method::PUT, "/v1/kv/sb/x/a", "1").await;
        call(&kv, Method::PUT, "/v1/kv/sb/x/b", "2").await;
        call(&kv, Method::PUT, "/v1/kv/sb/y", "3").await;
        let (status, all) = call(&kv, Method::GET, "/v1/kv/sb/x/?recurse", "").await;
        assert_eq!(status, 200);
        let keys: Vec<&str> = all.as_array().unwrap().iter().map(|e| e["Key"].as_str().unwrap()).collect();
        assert_eq!(keys, ["sb/x/a", "sb/x/b"]);
        assert_eq!(all[1]["Value"], json!("Mg=="));
        assert_eq!(call(&kv, Method::DELETE, "/v1/kv/sb/x/?recurse", "").await.1, json!(true));
        assert_eq!(kv.value("sb/x/a"), None);
        assert_eq!(kv.value("sb/y").unwrap(), b"3");
    }

    #[tokio::test]
    async fn a_partitioned_replica_gets_no_answer_and_no_effect() {
        let kv = Kv::default();
        let mut headers = HeaderMap::new();
        headers.insert(REPLICA_HEADER, "a".parse().unwrap());
        kv.partition("a", true);
        let uri: Uri = "/v1/kv/k".parse().unwrap();
        let kv2 = kv.clone();
        let pending = tokio::spawn(async move { intercept(&kv2, &Method::PUT, &uri, &headers, b"v", None).await });
        tokio::task::yield_now().await;
        assert!(!pending.is_finished(), "answered while cut off");
        kv.partition("a", false);
        let r = pending.await.unwrap().unwrap();
        assert_eq!(r.status().as_u16(), 503);
        assert_eq!(kv.value("k"), None, "a dropped request took effect");
        assert!(kv.requests().iter().any(|r| r.dropped && r.replica.as_deref() == Some("a")));
    }

    #[tokio::test]
    async fn sessions_are_bound_to_serf_health_unless_told_otherwise() {
        let kv = Kv::default();
        let checks = |name: &str| kv.session_checks(name).unwrap();
        session(&kv, r#"{"Name":"default"}"#).await;
        session(&kv, r#"{"Name":"old","Checks":[]}"#).await;
        session(&kv, r#"{"Name":"new","NodeChecks":[]}"#).await;
        session(&kv, r#"{"Name":"both","Checks":[],"NodeChecks":[]}"#).await;
        session(&kv, r#"{"Name":"custom","NodeChecks":["serfHealth","disk"]}"#).await;
        assert_eq!(checks("default"), [SERF_HEALTH]);
        assert!(checks("old").is_empty() && checks("new").is_empty() && checks("both").is_empty());
        assert_eq!(checks("custom"), [SERF_HEALTH, "disk"]);
        let both = kv.lock().sessions.values().find(|s| s.name == "both").unwrap().id.clone();
        let (_, info) = call(&kv, Method::GET, &format!("/v1/session/info/{both}"), "").await;
        assert_eq!(info[0]["NodeChecks"], json!([]));
        // A failing node check drops the bound sessions at once, and only those.
        assert_eq!(kv.fail_node_check(), 2);
        assert_eq!(kv.session_count(), 3);
        assert!(kv.session_checks("default").is_none() && kv.session_checks("both").is_some());
        let (status, _) = call(&kv, Method::PUT, "/v1/session/create", r#"{"Checks":"x"}"#).await;
        assert_eq!(status, 400);
    }

    #[tokio::test]
    async fn a_delayed_replicas_request_takes_effect_when_let_through() {
        let kv = Kv::default();
        let mut headers = HeaderMap::new();
        headers.insert(REPLICA_HEADER, "a".parse().unwrap());
        kv.delay("a", Some("/v1/kv/"));
        let uri: Uri = "/v1/kv/k".parse().unwrap();
        let kv2 = kv.clone();
        let pending = tokio::spawn(async move { intercept(&kv2, &Method::PUT, &uri, &headers, b"v", None).await });
        tokio::task::yield_now().await;
        assert_eq!(kv.value("k"), None, "applied while held");
        pending.abort();
        kv.delay("a", None);
        let deadline = Instant::now() + Duration::from_secs(5);
        while kv.value("k").is_none() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(kv.value("k").unwrap(), b"v", "a request given up by its client still lands, late");
    }

    #[tokio::test]
    async fn ttl_bounds_and_expiry() {
        let kv = Kv::default();
        let (status, _) = call(&kv, Method::PUT, "/v1/session/create", r#"{"TTL":"5s"}"#).await;
        assert_eq!(status, 500);
        let (status, _) = call(&kv, Method::PUT, "/v1/session/create", r#"{"Bogus":1}"#).await;
        assert_eq!(status, 400);
        kv.set_session_ttl_min(Duration::from_millis(10));
        kv.set_expiry_factor(1.0);
        let a = session(&kv, r#"{"Name":"a","TTL":"50ms","LockDelay":"0s"}"#).await;
        assert_eq!(call(&kv, Method::PUT, &format!("/v1/kv/l?acquire={a}"), "").await.1, json!(true));
        let (_, first) = call(&kv, Method::GET, "/v1/kv/l", "").await;
        let index = first[0]["ModifyIndex"].as_u64().unwrap();
        // A blocking query returns when the expiry releases the key.
        let (_, after) = call(&kv, Method::GET, &format!("/v1/kv/l?index={index}&wait=5s"), "").await;
        assert_eq!(after[0].get("Session"), None);
        assert_eq!(kv.session_count(), 0);
        assert_eq!(kv.locks().last().unwrap().change, LockChange::Invalidated);
    }
}
