//! The Consul calls of leader election: sessions and one KV lock.
//!
//! **Boundary:** the only place (with `sim::consul_kv`) that knows the JSON of
//! Consul's session and KV endpoints. Every request names the replica in
//! `x-switchboard-replica`, so Consul's logs (and the simulator) can tell
//! replicas apart.

use std::time::Duration;

use base64::Engine as _;
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use url::Url;

use crate::secret::Secret;

/// The header naming this replica on every request to the HA Consul.
pub const REPLICA_HEADER: &str = "x-switchboard-replica";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{what}: {message}")]
    Http { what: &'static str, message: String },
    #[error("{what}: HTTP {status}: {body}")]
    Status { what: &'static str, status: u16, body: String },
    /// Renew answered 404, or acquire named an unknown session: the session is gone.
    #[error("session {0} is gone")]
    SessionGone(String),
    #[error("invalid setting {setting}: {reason}")]
    Setting { setting: &'static str, reason: String },
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
}

/// The lock key as last read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    /// The session holding the lock, if any.
    pub session: Option<String>,
    pub lock_index: u64,
    /// The holder's value (Switchboard writes its replica name there).
    pub value: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireEntry {
    #[serde(default)]
    session: Option<String>,
    #[serde(default)]
    lock_index: u64,
    #[serde(default)]
    value: Option<String>,
}

/// One key under a prefix, as `?recurse` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvEntry {
    pub key: String,
    pub value: Vec<u8>,
    /// What a check-and-set over this read names (`?cas=`).
    pub modify_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireListed {
    key: String,
    #[serde(default)]
    value: Option<String>,
    #[serde(default)]
    modify_index: u64,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireSession {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    name: String,
}

/// A small HTTP client bound to one Consul agent, one key and one replica name.
#[derive(Clone)]
pub struct LockClient {
    /// Consul's TLS settings (`--consul-ca-file`, client certificate), re-read on rotation.
    http: crate::tls::HttpClient,
    base: Url,
    key: String,
    pub replica: String,
    /// Timeout of each non-blocking call.
    timeout: Duration,
}

/// A name as one segment of a KV key: `[A-Za-z0-9._-]` kept, the rest `%XX`.
pub fn key_segment(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The name a `key_segment` encodes.
pub fn from_key_segment(seg: &str) -> String {
    let bytes = seg.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%').then(|| seg.get(i + 1..i + 3)).flatten();
        match hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A reqwest error without its URL (which may carry userinfo).
fn without_url(e: &reqwest::Error) -> String {
    if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_connect() {
        "connection failed".to_owned()
    } else {
        "request failed".to_owned()
    }
}

/// Go's duration text (`10s`, `1500ms`), which Consul parses.
pub fn go_duration(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs()) } else { format!("{}ms", d.as_millis()) }
}

impl LockClient {
    pub fn new(
        base: Url,
        token: Option<&Secret>,
        key: String,
        replica: String,
        timeout: Duration,
        tls: crate::tls::EndpointTls,
    ) -> Result<LockClient, ClientError> {
        let mut headers = HeaderMap::new();
        let name = HeaderValue::from_str(&replica)
            .map_err(|e| ClientError::Setting { setting: "--replica-name", reason: e.to_string() })?;
        headers.insert(REPLICA_HEADER, name);
        if let Some(t) = token {
            let mut v = HeaderValue::from_str(t.expose()).map_err(|_| ClientError::Setting {
                setting: "SWITCHBOARD_CONSUL_TOKEN",
                reason: "not a valid header value".into(),
            })?;
            v.set_sensitive(true);
            headers.insert("x-consul-token", v);
        }
        let http = crate::tls::HttpClient::build(tls, move || {
            reqwest::Client::builder().default_headers(headers.clone()).no_proxy()
        })?;
        Ok(LockClient { http, base, key, replica, timeout })
    }

    pub fn key(&self) -> &str {
        &self.key
    }

    /// `switchboard/<cluster>/`: where this cluster's other keys live.
    pub fn prefix(&self) -> &str {
        self.key.strip_suffix("leader").unwrap_or(&self.key)
    }

    fn url(&self, path: &str) -> Result<Url, ClientError> {
        self.base.join(path).map_err(|e| ClientError::Setting {
            setting: "--ha-consul (SWITCHBOARD_HA_CONSUL_URL)",
            reason: e.to_string(),
        })
    }

    async fn send(
        &self,
        what: &'static str,
        req: reqwest::RequestBuilder,
        timeout: Duration,
    ) -> Result<(u16, HeaderMap, String), ClientError> {
        let resp =
            req.timeout(timeout).send().await.map_err(|e| ClientError::Http { what, message: without_url(&e) })?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.text().await.map_err(|e| ClientError::Http { what, message: without_url(&e) })?;
        Ok((status, headers, body))
    }

    fn unexpected(what: &'static str, status: u16, body: String) -> ClientError {
        ClientError::Status { what, status, body: body.chars().take(200).collect() }
    }

    /// `PUT /v1/session/create`: a TTL session named after this replica,
    /// bound to no health check: only its TTL (or a destroy) ends it.
    /// Consul binds a session to the node's `serfHealth` check unless told
    /// otherwise, and a flapping node check would drop the session at any
    /// moment after a renew, while the leader still writes on its lease
    /// (which counts on the TTL). `"Checks": []` says "none" to every
    /// Consul version (before 1.7 it is the only field; since 1.7 it empties
    /// `NodeChecks` too), `"NodeChecks": []` says it in 1.7+'s own words.
    pub async fn create_session(&self, ttl: Duration, lock_delay: Duration) -> Result<String, ClientError> {
        const WHAT: &str = "create session";
        let body = serde_json::json!({
            "Name": self.replica,
            "TTL": go_duration(ttl),
            "LockDelay": go_duration(lock_delay),
            "Behavior": "release",
            "Checks": [],
            "NodeChecks": [],
        });
        let req = self.http.get().put(self.url("v1/session/create")?).json(&body);
        let (status, _, body) = self.send(WHAT, req, self.timeout).await?;
        if status != 200 {
            return Err(Self::unexpected(WHAT, status, body));
        }
        let s: WireSession = serde_json::from_str(&body)
            .map_err(|e| ClientError::Http { what: WHAT, message: format!("cannot decode: {e}") })?;
        Ok(s.id)
    }

    /// `PUT /v1/session/renew/<id>`; `SessionGone` on 404.
    pub async fn renew(&self, session: &str) -> Result<(), ClientError> {
        const WHAT: &str = "renew session";
        let req = self.http.get().put(self.url(&format!("v1/session/renew/{session}"))?);
        match self.send(WHAT, req, self.timeout).await? {
            (200, _, _) => Ok(()),
            (404, _, _) => Err(ClientError::SessionGone(session.to_owned())),
            (status, _, body) => Err(Self::unexpected(WHAT, status, body)),
        }
    }

    /// `PUT /v1/session/destroy/<id>` (idempotent).
    pub async fn destroy(&self, session: &str) -> Result<(), ClientError> {
        const WHAT: &str = "destroy session";
        let req = self.http.get().put(self.url(&format!("v1/session/destroy/{session}"))?);
        match self.send(WHAT, req, self.timeout).await? {
            (200, _, _) => Ok(()),
            (status, _, body) => Err(Self::unexpected(WHAT, status, body)),
        }
    }

    /// The `Name` of a session, `None` when it does not exist.
    pub async fn session_name(&self, session: &str) -> Result<Option<String>, ClientError> {
        const WHAT: &str = "session info";
        let req = self.http.get().get(self.url(&format!("v1/session/info/{session}"))?);
        let (status, _, body) = self.send(WHAT, req, self.timeout).await?;
        if status != 200 {
            return Err(Self::unexpected(WHAT, status, body));
        }
        let list: Vec<WireSession> = serde_json::from_str(&body)
            .map_err(|e| ClientError::Http { what: WHAT, message: format!("cannot decode: {e}") })?;
        Ok(list.into_iter().find(|s| s.id == session).map(|s| s.name))
    }

    /// `PUT /v1/kv/<key>?acquire=<session>` with the replica name as value.
    pub async fn acquire(&self, session: &str) -> Result<bool, ClientError> {
        self.lock_call("acquire lock", "acquire", session).await
    }

    /// `PUT /v1/kv/<key>?release=<session>`.
    pub async fn release(&self, session: &str) -> Result<bool, ClientError> {
        self.lock_call("release lock", "release", session).await
    }

    async fn lock_call(&self, what: &'static str, verb: &str, session: &str) -> Result<bool, ClientError> {
        let mut url = self.url(&format!("v1/kv/{}", self.key))?;
        url.query_pairs_mut().append_pair(verb, session);
        let req = self.http.get().put(url).body(self.replica.clone());
        match self.send(what, req, self.timeout).await? {
            (200, _, body) => Ok(body.trim() == "true"),
            (500, _, body) if body.contains("invalid session") => Err(ClientError::SessionGone(session.to_owned())),
            (status, _, body) => Err(Self::unexpected(what, status, body)),
        }
    }

    /// The value at another key of ours (`None`: no such key).
    pub async fn get_value(&self, key: &str) -> Result<Option<Vec<u8>>, ClientError> {
        const WHAT: &str = "read key";
        let (status, _, body) =
            self.send(WHAT, self.http.get().get(self.url(&format!("v1/kv/{key}"))?), self.timeout).await?;
        match status {
            404 => Ok(None),
            200 => {
                let list: Vec<WireEntry> = serde_json::from_str(&body)
                    .map_err(|e| ClientError::Http { what: WHAT, message: format!("cannot decode: {e}") })?;
                let value = list.into_iter().next().and_then(|e| e.value).unwrap_or_default();
                base64::engine::general_purpose::STANDARD
                    .decode(value)
                    .map(Some)
                    .map_err(|e| ClientError::Http { what: WHAT, message: format!("cannot decode: {e}") })
            }
            _ => Err(Self::unexpected(WHAT, status, body)),
        }
    }

    /// The keys under `prefix` (`?keys`); empty when there are none.
    pub async fn keys(&self, prefix: &str) -> Result<Vec<String>, ClientError> {
        const WHAT: &str = "list keys";
        let mut url = self.url(&format!("v1/kv/{prefix}"))?;
        url.query_pairs_mut().append_key_only("keys");
        match self.send(WHAT, self.http.get().get(url), self.timeout).await? {
            (404, _, _) => Ok(Vec::new()),
            (200, _, body) => serde_json::from_str(&body)
                .map_err(|e| ClientError::Http { what: WHAT, message: format!("cannot decode: {e}") }),
            (status, _, body) => Err(Self::unexpected(WHAT, status, body)),
        }
    }

    /// Writes another key of ours (a plain write: no lock).
    pub async fn put_value(&self, key: &str, value: Vec<u8>) -> Result<(), ClientError> {
        const WHAT: &str = "write key";
        let req = self.http.get().put(self.url(&format!("v1/kv/{key}"))?).body(value);
        match self.send(WHAT, req, self.timeout).await? {
            (200, _, body) if body.trim() == "true" => Ok(()),
            (status, _, body) => Err(Self::unexpected(WHAT, status, body)),
        }
    }

    /// Every key under `prefix` with its value and ModifyIndex (`?recurse`);
    /// empty when there are none.
    pub async fn list(&self, prefix: &str) -> Result<Vec<KvEntry>, ClientError> {
        const WHAT: &str = "list keys";
        let mut url = self.url(&format!("v1/kv/{prefix}"))?;
        url.query_pairs_mut().append_key_only("recurse");
        // Every part of a shared ledger may be megabytes; this runs off the renew path.
        let body = match self.send(WHAT, self.http.get().get(url), self.timeout * 4).await? {
            (404, _, _) => return Ok(Vec::new()),
            (200, _, body) => body,
            (status, _, body) => return Err(Self::unexpected(WHAT, status, body)),
        };
        let decode_error = |e: String| ClientError::Http { what: WHAT, message: format!("cannot decode: {e}") };
        let listed: Vec<WireListed> = serde_json::from_str(&body).map_err(|e| decode_error(e.to_string()))?;
        listed
            .into_iter()
            .map(|e| {
                let value = base64::engine::general_purpose::STANDARD
                    .decode(e.value.unwrap_or_default())
                    .map_err(|err| decode_error(format!("{}: {err}", e.key)))?;
                Ok(KvEntry { key: e.key, value, modify_index: e.modify_index })
            })
            .collect()
    }

    /// Writes another key of ours with check-and-set: `cas` 0 creates it only
    /// if absent, another index replaces it only if that is still its
    /// ModifyIndex. `false`: someone changed it since (nothing written).
    pub async fn put_cas(&self, key: &str, value: Vec<u8>, cas: u64) -> Result<bool, ClientError> {
        const WHAT: &str = "write key";
        let mut url = self.url(&format!("v1/kv/{key}"))?;
        url.query_pairs_mut().append_pair("cas", &cas.to_string());
        match self.send(WHAT, self.http.get().put(url).body(value), self.timeout).await? {
            (200, _, body) => Ok(body.trim() == "true"),
            (status, _, body) => Err(Self::unexpected(WHAT, status, body)),
        }
    }

    /// Deletes another key of ours; with `cas`, only if that is still its
    /// ModifyIndex (`false`: changed since, nothing deleted). Deleting an
    /// absent key without `cas` succeeds.
    pub async fn delete(&self, key: &str, cas: Option<u64>) -> Result<bool, ClientError> {
        const WHAT: &str = "delete key";
        let mut url = self.url(&format!("v1/kv/{key}"))?;
        if let Some(cas) = cas {
            url.query_pairs_mut().append_pair("cas", &cas.to_string());
        }
        match self.send(WHAT, self.http.get().delete(url), self.timeout).await? {
            (200, _, body) => Ok(body.trim() == "true"),
            (status, _, body) => Err(Self::unexpected(WHAT, status, body)),
        }
    }

    /// `GET /v1/kv/<key>`, blocking past `index` for up to `wait` when given.
    /// Returns the `X-Consul-Index` and the key (`None`: no such key).
    pub async fn read(&self, index: u64, wait: Option<Duration>) -> Result<(u64, Option<KeyState>), ClientError> {
        const WHAT: &str = "read lock";
        let mut url = self.url(&format!("v1/kv/{}", self.key))?;
        let mut timeout = self.timeout;
        if let Some(wait) = wait.filter(|_| index > 0) {
            url.query_pairs_mut().append_pair("index", &index.to_string()).append_pair("wait", &go_duration(wait));
            // Consul adds up to wait/16 of jitter.
            timeout += wait + wait / 16;
        }
        let (status, headers, body) = self.send(WHAT, self.http.get().get(url), timeout).await?;
        let index = headers
            .get("x-consul-index")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1);
        match status {
            404 => Ok((index, None)),
            200 => {
                let list: Vec<WireEntry> = serde_json::from_str(&body)
                    .map_err(|e| ClientError::Http { what: WHAT, message: format!("cannot decode: {e}") })?;
                let key = list.into_iter().next().map(|e| KeyState {
                    session: e.session.filter(|s| !s.is_empty()),
                    lock_index: e.lock_index,
                    value: e
                        .value
                        .and_then(|v| base64::engine::general_purpose::STANDARD.decode(v).ok())
                        .map(|b| String::from_utf8_lossy(&b).into_owned())
                        .unwrap_or_default(),
                });
                Ok((index, key))
            }
            _ => Err(Self::unexpected(WHAT, status, body)),
        }
    }
}
