//! Marathon REST client: the full snapshot (`/v2/apps?embed=apps.tasks`, and
//! `/v2/pods/::status` where Marathon has pods) and single-app (or pod)
//! fetches, with failover across URLs and leader redirects.
//!
//! Invariants:
//! - Redirects are followed by hand (at most `MAX_REDIRECTS` hops) so the
//!   Authorization header is kept on the hop to the leader (Marathon 1.7+
//!   standbys answer the event stream with 302), and never from https to
//!   http, where the credentials would travel in clear.
//! - A 401 while using a DC/OS token (`token=...`) re-reads the token from
//!   its source (`SWITCHBOARD_MARATHON_AUTH` or its `_FILE`) and retries
//!   once: such tokens expire and are rotated under a running process.
//! - Errors and logs name the endpoint as `host:port` plus the path, never
//!   a full URL with userinfo, and never the secret.
//! - An app whose definition or tasks fail to parse is reported in
//!   `Snapshot::broken`, never silently dropped: the caller must leave that
//!   app's registrations untouched.

use std::time::Duration;

use base64::Engine;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue, LOCATION};
use serde_json::Value;

use super::event::{ParseError, app_from_value, host_ports, ip_list};
use super::wire;
use crate::model::{AppId, AppSpec, TaskFacts, TaskId, TaskState, Timestamp};
use crate::secret::Secret;

/// How many leader redirects one request follows.
pub(crate) const MAX_REDIRECTS: usize = 5;

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Marathon endpoints, tried in turn; any may redirect to the leader.
    pub urls: Vec<url::Url>,
    /// `token=XYZ` (DC/OS) or `user:pass` (HTTP Basic).
    pub auth: Option<Secret>,
    /// Timeout of one whole request.
    pub timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("marathon client configuration: {0}")]
    Config(String),
    #[error("GET {path} on {endpoint}: {cause}")]
    Http { endpoint: String, path: String, cause: String },
    #[error("GET {path} on {endpoint}: HTTP {status}")]
    Status { endpoint: String, path: String, status: u16 },
    #[error("GET {path}: more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects { path: String },
    #[error("GET {path} on {from}: refusing a redirect from https to http ({to}): credentials would travel in clear")]
    InsecureRedirect { path: String, from: String, to: String },
    #[error("GET {path}: {source}")]
    Parse {
        path: String,
        #[source]
        source: ParseError,
    },
}

impl Error {
    /// Worth trying the next URL: the endpoint is unreachable or failing.
    fn try_next(&self) -> bool {
        match self {
            Error::Http { .. } | Error::TooManyRedirects { .. } => true,
            Error::Status { status, .. } => *status >= 500,
            _ => false,
        }
    }
}

/// Everything Marathon runs, as of one REST call.
#[derive(Debug)]
pub struct Snapshot {
    /// Local time when the request was sent.
    pub as_of: Timestamp,
    pub apps: Vec<AppSnapshot>,
    /// Apps (by raw id) whose definition or tasks did not parse.
    pub broken: Vec<(String, ParseError)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppSnapshot {
    pub spec: AppSpec,
    pub tasks: Vec<TaskSnapshot>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskSnapshot {
    /// `facts.at` is the snapshot's `as_of`.
    pub facts: TaskFacts,
    /// None when the app has no health checks or no results yet; else
    /// whether every result is alive.
    pub healthy: Option<bool>,
}

#[derive(Debug, Clone)]
pub struct MarathonClient {
    /// Built by `tls`: follows the TLS files of `--marathon-*-file`.
    http: crate::tls::HttpClient,
    urls: Vec<url::Url>,
    auth: Auth,
}

/// The Authorization header in force, shared by clones of one client so a
/// refreshed token serves every later request.
#[derive(Debug, Clone)]
pub(crate) struct Auth {
    state: std::sync::Arc<std::sync::RwLock<(Option<Secret>, HeaderMap)>>,
}

impl Auth {
    pub(crate) fn new(secret: Option<Secret>) -> Result<Auth, Error> {
        let headers = auth_headers(secret.as_ref())?;
        Ok(Auth { state: std::sync::Arc::new(std::sync::RwLock::new((secret, headers))) })
    }

    pub(crate) fn headers(&self) -> HeaderMap {
        match self.state.read() {
            Ok(s) => s.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    /// After a 401: when a DC/OS token is in use, reads it again from its
    /// source; true when a different token is now in force.
    pub(crate) fn refresh(&self) -> bool {
        let mut state = match self.state.write() {
            Ok(s) => s,
            Err(poisoned) => poisoned.into_inner(),
        };
        let Some(current) = state.0.as_ref().filter(|s| s.expose().starts_with("token=")) else {
            return false;
        };
        let Some(fresh) = current.reread().filter(|f| f.expose() != current.expose()) else {
            tracing::warn!("marathon refused the DC/OS token and its source holds no newer one");
            return false;
        };
        match auth_headers(Some(&fresh)) {
            Ok(h) => {
                tracing::info!("marathon refused the DC/OS token; using the one its source holds now");
                *state = (Some(fresh), h);
                true
            }
            Err(e) => {
                tracing::warn!(error = %e, "re-read Marathon credentials are unusable");
                false
            }
        }
    }
}

impl MarathonClient {
    pub fn new(cfg: ClientConfig) -> Result<MarathonClient, Error> {
        MarathonClient::with_tls(cfg, crate::tls::EndpointTls::default())
    }

    /// Like `new`, with the TLS files of `--marathon-*-file` / `--tls-*-file`.
    pub fn with_tls(cfg: ClientConfig, tls: crate::tls::EndpointTls) -> Result<MarathonClient, Error> {
        if cfg.urls.is_empty() {
            return Err(Error::Config("no Marathon URL given".into()));
        }
        let timeout = cfg.timeout;
        let http = crate::tls::HttpClient::build(tls, move || {
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).timeout(timeout)
        })
        .map_err(|e| Error::Config(e.to_string()))?;
        Ok(MarathonClient { http, urls: cfg.urls, auth: Auth::new(cfg.auth)? })
    }

    /// `GET /v2/apps?embed=apps.tasks`, then `GET /v2/pods/::status`: pods
    /// are apps to the core, so they join `apps` (a Marathon without pods,
    /// before 1.4, answers 404 there: no pods).
    pub async fn snapshot(&self) -> Result<Snapshot, Error> {
        let path = "/v2/apps?embed=apps.tasks";
        let as_of = Timestamp::now();
        let body = self.get(path).await?.ok_or_else(|| Error::Status {
            endpoint: "all".into(),
            path: path.into(),
            status: 404,
        })?;
        let mut snap = parse_snapshot(&body, as_of).map_err(|source| Error::Parse { path: path.into(), source })?;
        let (pods, broken) = self.pods(as_of).await?;
        snap.apps.extend(pods);
        snap.broken.extend(broken);
        Ok(snap)
    }

    /// `GET /v2/pods/::status`: every pod with its instances; empty on 404.
    /// The status carries each pod's latest definition (`spec`), so
    /// `/v2/pods` itself is not read: a second request could only disagree.
    #[allow(clippy::type_complexity)]
    pub async fn pods(&self, as_of: Timestamp) -> Result<(Vec<AppSnapshot>, Vec<(String, ParseError)>), Error> {
        let path = "/v2/pods/::status";
        match self.get(path).await? {
            None => Ok((Vec::new(), Vec::new())),
            Some(body) => {
                super::pod::parse_pods_status(&body, as_of).map_err(|source| Error::Parse { path: path.into(), source })
            }
        }
    }

    /// `GET /v2/apps/{id}`, or for a pod `GET /v2/pods/{id}::status`; a
    /// missing app or pod is `Ok(None)`.
    pub async fn app(&self, id: &AppId) -> Result<Option<AppSnapshot>, Error> {
        let path = format!("/v2/apps{}", id.as_str());
        let as_of = Timestamp::now();
        match self.get(&path).await? {
            None => self.pod(id, as_of).await,
            Some(body) => parse_app_response(&body, as_of).map(Some).map_err(|source| Error::Parse { path, source }),
        }
    }

    /// `GET /v2/pods/{id}::status`; a missing pod (or a Marathon without
    /// pods) is `Ok(None)`.
    pub async fn pod(&self, id: &AppId, as_of: Timestamp) -> Result<Option<AppSnapshot>, Error> {
        let path = format!("/v2/pods{}::status", id.as_str());
        match self.get(&path).await? {
            None => Ok(None),
            Some(body) => {
                super::pod::parse_pod_status(&body, as_of).map(Some).map_err(|source| Error::Parse { path, source })
            }
        }
    }

    /// Tries every URL in turn; `Ok(None)` on 404.
    async fn get(&self, path: &str) -> Result<Option<String>, Error> {
        let mut last = None;
        for base in &self.urls {
            let result = async {
                let url = join(base, path).map_err(|cause| Error::Http {
                    endpoint: endpoint(base),
                    path: path.into(),
                    cause,
                })?;
                let mut resp = send_following(&self.http.get(), url.clone(), &self.auth.headers(), path).await?;
                if resp.status() == reqwest::StatusCode::UNAUTHORIZED && self.auth.refresh() {
                    resp = send_following(&self.http.get(), url, &self.auth.headers(), path).await?;
                }
                let status = resp.status();
                if status == reqwest::StatusCode::NOT_FOUND {
                    return Ok(None);
                }
                let endpoint = endpoint(resp.url());
                if !status.is_success() {
                    return Err(Error::Status { endpoint, path: path.into(), status: status.as_u16() });
                }
                // The body's bytes become the String in place (reqwest's
                // `text()` copies it once more: 7.5 MiB at 10,000 instances).
                let bytes = resp.bytes().await.map_err(|e| Error::Http {
                    endpoint,
                    path: path.into(),
                    cause: e.without_url().to_string(),
                })?;
                Ok(Some(
                    String::from_utf8(Vec::from(bytes))
                        .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
                ))
            }
            .await;
            match result {
                Err(e) if e.try_next() => {
                    tracing::warn!(error = %e, "marathon endpoint failed, trying next");
                    last = Some(e);
                }
                other => return other,
            }
        }
        Err(last.unwrap_or_else(|| Error::Config("no Marathon URL given".into())))
    }
}

/// `host:port` of a URL, without scheme path or userinfo: safe to log.
pub(crate) fn endpoint(url: &url::Url) -> String {
    match (url.host_str(), url.port_or_known_default()) {
        (Some(h), Some(p)) => format!("{h}:{p}"),
        (Some(h), None) => h.to_owned(),
        _ => "?".to_owned(),
    }
}

/// `base` (which may carry a path prefix, as behind DC/OS Admin Router)
/// plus an absolute path-and-query.
pub(crate) fn join(base: &url::Url, path_and_query: &str) -> Result<url::Url, String> {
    let mut s = base.as_str().trim_end_matches('/').to_owned();
    s.push_str(path_and_query);
    url::Url::parse(&s).map_err(|e| format!("invalid URL: {e}"))
}

/// Authorization header from the configured secret.
pub(crate) fn auth_headers(auth: Option<&Secret>) -> Result<HeaderMap, Error> {
    let mut h = HeaderMap::new();
    if let Some(secret) = auth {
        let raw = secret.expose();
        let value = if raw.starts_with("token=") {
            raw.to_owned()
        } else if raw.contains(':') {
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(raw))
        } else {
            return Err(Error::Config("SWITCHBOARD_MARATHON_AUTH must be `token=...` or `user:password`".into()));
        };
        let mut v = HeaderValue::from_str(&value)
            .map_err(|_| Error::Config("Marathon auth holds invalid header characters".into()))?;
        v.set_sensitive(true);
        h.insert(AUTHORIZATION, v);
    }
    Ok(h)
}

/// Sends a GET with `headers`, following 301/302/303/307/308 by hand (the
/// Authorization header kept) up to `MAX_REDIRECTS` hops.
pub(crate) async fn send_following(
    http: &reqwest::Client,
    mut url: url::Url,
    headers: &HeaderMap,
    path: &str,
) -> Result<reqwest::Response, Error> {
    for _ in 0..=MAX_REDIRECTS {
        let resp = http.get(url.clone()).headers(headers.clone()).send().await.map_err(|e| Error::Http {
            endpoint: endpoint(&url),
            path: path.into(),
            cause: crate::tls::explain(crate::tls::Endpoint::MARATHON, &e).unwrap_or_else(|| describe(&e)),
        })?;
        if !resp.status().is_redirection() {
            return Ok(resp);
        }
        let location = resp.headers().get(LOCATION).and_then(|l| l.to_str().ok()).and_then(|l| url.join(l).ok());
        match location {
            Some(next) if !redirect_allowed(&url, &next) => {
                return Err(Error::InsecureRedirect { path: path.into(), from: endpoint(&url), to: endpoint(&next) });
            }
            Some(next) => {
                tracing::debug!(from = %endpoint(&url), to = %endpoint(&next), "following leader redirect");
                url = next;
            }
            None => return Ok(resp),
        }
    }
    Err(Error::TooManyRedirects { path: path.into() })
}

/// Whether a redirect may carry the credentials on: never from https down
/// to plain http.
pub(crate) fn redirect_allowed(from: &url::Url, to: &url::Url) -> bool {
    from.scheme() != "https" || to.scheme() == "https"
}

/// A reqwest error without its URL (which may hold userinfo), with its causes.
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut out = kind.to_owned();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}

/// Parses a `/v2/apps?embed=apps.tasks` body. Broken apps are collected,
/// not fatal; only an undecodable body is an error.
///
/// One app at a time: each element of `apps` is decoded into a JSON value,
/// turned into an [`AppSnapshot`] and dropped before the next is read, so
/// the decoded JSON of the whole cluster never exists at once (at 10,000
/// instances that tree was the daemon's largest allocation).
pub fn parse_snapshot(json: &str, as_of: Timestamp) -> Result<Snapshot, ParseError> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(json);
    let snap = SnapshotSeed { as_of }
        .deserialize(&mut de)
        .and_then(|snap| de.end().map(|()| snap))
        .map_err(|source| ParseError::Json { event_type: "/v2/apps".into(), source })?;
    snap.ok_or_else(|| ParseError::Field {
        event_type: "/v2/apps".into(),
        field: "apps".into(),
        cause: "missing or not an array".into(),
    })
}

/// The top object of `/v2/apps`: its `apps` array, other keys skipped.
/// `None` when there is no `apps` array.
struct SnapshotSeed {
    as_of: Timestamp,
}

impl<'de> serde::de::DeserializeSeed<'de> for SnapshotSeed {
    type Value = Option<Snapshot>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Snapshot>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for SnapshotSeed {
    type Value = Option<Snapshot>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object with an array of apps")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<Snapshot>, A::Error> {
        let mut snap = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "apps" {
                snap = map.next_value_seed(AppsSeed { as_of: self.as_of })?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(snap)
    }
}

/// The `apps` array, decoded and converted one app at a time; `None` when
/// it is not an array.
struct AppsSeed {
    as_of: Timestamp,
}

impl<'de> serde::de::DeserializeSeed<'de> for AppsSeed {
    type Value = Option<Snapshot>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Option<Snapshot>, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AppsSeed {
    type Value = Option<Snapshot>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of apps")
    }

    fn visit_seq<S: serde::de::SeqAccess<'de>>(self, mut seq: S) -> Result<Option<Snapshot>, S::Error> {
        let mut snap = Snapshot { as_of: self.as_of, apps: Vec::new(), broken: Vec::new() };
        while let Some(app) = seq.next_element::<Value>()? {
            match app_snapshot(&app, self.as_of) {
                Ok(a) => snap.apps.push(a),
                Err(e) => {
                    let id = app.get("id").and_then(Value::as_str).unwrap_or("").to_owned();
                    snap.broken.push((id, e));
                }
            }
        }
        Ok(Some(snap))
    }

    // Anything but an array: no apps array (the caller names the field).
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Option<Snapshot>, A::Error> {
        while map.next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_unit<E: serde::de::Error>(self) -> Result<Option<Snapshot>, E> {
        Ok(None)
    }

    fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Option<Snapshot>, E> {
        Ok(None)
    }

    fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Option<Snapshot>, E> {
        Ok(None)
    }

    fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Option<Snapshot>, E> {
        Ok(None)
    }

    fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Option<Snapshot>, E> {
        Ok(None)
    }

    fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<Option<Snapshot>, E> {
        Ok(None)
    }
}

/// Parses a `/v2/apps/{id}` body (`{"app": {...}}`).
pub fn parse_app_response(json: &str, as_of: Timestamp) -> Result<AppSnapshot, ParseError> {
    let v: Value =
        serde_json::from_str(json).map_err(|source| ParseError::Json { event_type: "/v2/apps/{id}".into(), source })?;
    let app = v.get("app").ok_or_else(|| ParseError::Field {
        event_type: "/v2/apps/{id}".into(),
        field: "app".into(),
        cause: "missing".into(),
    })?;
    app_snapshot(app, as_of)
}

/// Parses a `/v2/tasks` body; every task must parse.
pub fn parse_tasks(json: &str, as_of: Timestamp) -> Result<Vec<TaskSnapshot>, ParseError> {
    #[derive(serde::Deserialize)]
    struct Tasks {
        tasks: Vec<wire::Task>,
    }
    let t: Tasks =
        serde_json::from_str(json).map_err(|source| ParseError::Json { event_type: "/v2/tasks".into(), source })?;
    t.tasks.into_iter().map(|t| task_snapshot(t, None, true, as_of)).collect()
}

fn app_snapshot(app: &Value, as_of: Timestamp) -> Result<AppSnapshot, ParseError> {
    let spec = app_from_value(app)?;
    let tasks: Vec<wire::Task> = match app.get("tasks") {
        None | Some(Value::Null) => Vec::new(),
        Some(t) => <Vec<wire::Task> as serde::Deserialize>::deserialize(t).map_err(|e| ParseError::App {
            app: spec.id.to_string(),
            field: "tasks".into(),
            cause: e.to_string(),
        })?,
    };
    let has_checks = !spec.health_checks.is_empty();
    let tasks =
        tasks.into_iter().map(|t| task_snapshot(t, Some(&spec.id), has_checks, as_of)).collect::<Result<_, _>>()?;
    Ok(AppSnapshot { spec, tasks })
}

fn task_snapshot(
    t: wire::Task,
    app: Option<&AppId>,
    has_checks: bool,
    as_of: Timestamp,
) -> Result<TaskSnapshot, ParseError> {
    let raw_id = t.id.unwrap_or_default();
    let err = |field: &str, cause: String| ParseError::App {
        app: app.map(|a| a.to_string()).unwrap_or_default(),
        field: format!("tasks[{raw_id}].{field}"),
        cause,
    };
    let task_id = TaskId::parse(&raw_id).map_err(|e| err("id", e.to_string()))?;
    let app_id = match (&t.app_id, app) {
        (Some(a), _) => AppId::parse(a).map_err(|e| err("appId", e.to_string()))?,
        (None, Some(a)) => a.clone(),
        (None, None) => return Err(err("appId", "missing".into())),
    };
    let state_name = t.state.unwrap_or_default();
    let state =
        TaskState::parse(&state_name).ok_or_else(|| err("state", format!("unknown task state {state_name:?}")))?;
    let ports = host_ports(t.ports.unwrap_or_default()).map_err(|p| err("ports", format!("port {p} out of range")))?;
    let results = t.health_check_results.unwrap_or_default();
    let healthy =
        if !has_checks || results.is_empty() { None } else { Some(results.iter().all(|r| r.alive == Some(true))) };
    Ok(TaskSnapshot {
        facts: TaskFacts {
            task_id,
            app_id,
            host: t.host.unwrap_or_else(|| "unknown".into()),
            ports,
            ip_addresses: ip_list(t.ip_addresses),
            state,
            version: t.version.unwrap_or_default(),
            at: as_of,
        },
        healthy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_is_read_one_app_at_a_time_and_names_a_missing_apps_array() {
        let body =
            r#"{"groups": [{"x": 1}], "apps": [{"id": "/a", "instances": 1, "tasks": []}, {"id": 7}], "more": null}"#;
        let snap = parse_snapshot(body, Timestamp(5)).expect("parses");
        assert_eq!(snap.apps.len(), 1, "{snap:?}");
        assert_eq!(snap.apps[0].spec.id.as_str(), "/a");
        assert_eq!(snap.broken.len(), 1, "the app without a readable id is broken, not fatal");
        for bad in [r#"{}"#, r#"{"apps": 5}"#, r#"{"apps": null}"#, r#"{"apps": {"id": "/a"}}"#] {
            let e = parse_snapshot(bad, Timestamp(5)).expect_err(bad);
            assert!(e.to_string().contains("field apps: missing or not an array"), "{bad}: {e}");
        }
        let e = parse_snapshot(r#"{"apps": [}"#, Timestamp(5)).expect_err("truncated");
        assert!(matches!(e, ParseError::Json { .. }), "{e}");
        assert!(parse_snapshot(r#"{"apps": []} trailing"#, Timestamp(5)).is_err(), "trailing bytes");
    }

    #[test]
    fn auth_header_forms() {
        let h = auth_headers(Some(&Secret::new("token=abc"))).unwrap();
        assert_eq!(h[AUTHORIZATION], "token=abc");
        let h = auth_headers(Some(&Secret::new("user:pass"))).unwrap();
        assert_eq!(h[AUTHORIZATION], "Basic dXNlcjpwYXNz");
        assert!(auth_headers(Some(&Secret::new("nocolon"))).is_err());
        assert!(auth_headers(None).unwrap().is_empty());
    }

    #[test]
    fn redirects_never_go_from_https_to_http() {
        let u = |s: &str| url::Url::parse(s).unwrap();
        assert!(redirect_allowed(&u("http://standby:8080/v2/events"), &u("http://leader:8080/v2/events")));
        assert!(redirect_allowed(&u("http://standby:8080/v2/events"), &u("https://leader:8443/v2/events")));
        assert!(redirect_allowed(&u("https://standby:8443/v2/events"), &u("https://leader:8443/v2/events")));
        assert!(!redirect_allowed(&u("https://standby:8443/v2/events"), &u("http://leader:8080/v2/events")));
    }

    #[test]
    fn endpoint_hides_userinfo() {
        let u = url::Url::parse("http://bob:hunter2@m1:8080/service/marathon").unwrap();
        assert_eq!(endpoint(&u), "m1:8080");
        assert_eq!(join(&u, "/v2/apps?embed=apps.tasks").unwrap().path(), "/service/marathon/v2/apps");
    }

    #[test]
    fn broken_app_is_reported_not_dropped() {
        let body = r#"{"apps":[
            {"id":"/good","tasks":[{"id":"good.instance-1._app.1","state":"TASK_RUNNING","host":"h","ports":[31000]}]},
            {"id":"/bad","portDefinitions":[{"port":99999}]},
            {"id":"/badtask","tasks":[{"id":"x.instance-2._app.1","state":"TASK_WEIRD"}]}]}"#;
        let snap = parse_snapshot(body, Timestamp(5)).unwrap();
        assert_eq!(snap.apps.len(), 1);
        assert_eq!(snap.apps[0].tasks[0].facts.at, Timestamp(5));
        assert_eq!(snap.apps[0].tasks[0].facts.app_id.as_str(), "/good");
        assert_eq!(snap.apps[0].tasks[0].healthy, None);
        let broken: Vec<_> = snap.broken.iter().map(|(id, _)| id.as_str()).collect();
        assert_eq!(broken, ["/bad", "/badtask"]);
    }

    #[test]
    fn health_is_all_results_alive() {
        let body = |results: &str| {
            format!(
                r#"{{"app":{{"id":"/a","healthChecks":[{{"protocol":"HTTP"}}],"tasks":[{{"id":"a.instance-1._app.1","state":"TASK_RUNNING","healthCheckResults":{results}}}]}}}}"#
            )
        };
        let healthy = |r: &str| parse_app_response(&body(r), Timestamp(0)).unwrap().tasks[0].healthy;
        assert_eq!(healthy("[]"), None);
        assert_eq!(healthy(r#"[{"alive":true},{"alive":true}]"#), Some(true));
        assert_eq!(healthy(r#"[{"alive":true},{"alive":false}]"#), Some(false));
    }
}
