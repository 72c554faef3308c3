//! HTTP shell over Kong's Admin API: one request helper, pagination, version
//! detection, and the reads that gather an `ObservedApp` per owned app.
//!
//! Invariants:
//! - The token goes only into its header (marked sensitive); errors and logs
//!   name the method and path, never the URL (it may carry userinfo).
//! - Pagination is followed to the end by re-issuing our own request with the
//!   `offset` Kong returned, so an Admin API behind a path prefix still works.

use std::collections::BTreeMap;

use reqwest::Method;
use reqwest::header::{HeaderName, HeaderValue};
use serde_json::Value;

use super::config::{KongConfig, KongConfigError};
use super::map::{self, Destination, ObservedApp, RouteView};
use crate::backends::BackendError;

const BACKEND: &str = "kong";
/// Items per list page; tiny under test so every test walks several pages.
const PAGE_SIZE: &str = if cfg!(test) { "2" } else { "1000" };

/// What the detected Kong version can do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Caps {
    pub version: (u32, u32, u32),
    /// Before 1.0: `/apis` instead of services/routes.
    pub legacy: bool,
    /// 1.1+: tags and `?tags=` filtering.
    pub tags: bool,
    /// Before 0.12 the active target view is `…/targets/active`.
    pub active_suffix: bool,
}

impl Caps {
    pub(crate) fn from_version(v: &str) -> Option<Caps> {
        let mut it = v.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let minor = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let patch = it.next().and_then(|s| s.parse().ok()).unwrap_or(0);
        let version = (major, minor, patch);
        Some(Caps {
            version,
            legacy: version < (1, 0, 0),
            tags: version >= (1, 1, 0),
            active_suffix: version < (0, 12, 0),
        })
    }
}

pub(crate) struct Client {
    /// Built by `tls`: follows the TLS files of `--kong-*-file`.
    http: crate::tls::HttpClient,
    base: url::Url,
    token: Option<(HeaderName, HeaderValue)>,
}

pub(crate) struct Answer {
    pub status: u16,
    pub body: Value,
    pub text: String,
}

impl Client {
    pub(crate) fn new(cfg: &KongConfig) -> Result<Client, KongConfigError> {
        let timeout = cfg.timeout;
        let http = crate::tls::HttpClient::build(cfg.tls.clone(), move || reqwest::Client::builder().timeout(timeout))
            .map_err(KongConfigError::Client)?;
        let token = match &cfg.token {
            Some(t) => {
                let name = HeaderName::from_bytes(cfg.token_header.as_bytes())
                    .map_err(|_| KongConfigError::TokenHeader(cfg.token_header.clone()))?;
                let mut value = HeaderValue::from_str(t.expose()).map_err(|_| KongConfigError::TokenValue)?;
                value.set_sensitive(true);
                Some((name, value))
            }
            None => None,
        };
        Ok(Client { http, base: cfg.url.clone(), token })
    }

    /// The same client with its writes behind the HA fence.
    pub(crate) fn gated(&self, gate: crate::ha::Fence) -> Client {
        Client { http: self.http.gated(gate), base: self.base.clone(), token: self.token.clone() }
    }

    /// A failed send: fenced, or a transport failure (TLS failures name the
    /// settings that fix them).
    fn transport_error(&self, what: String, e: &crate::tls::SendError) -> BackendError {
        BackendError::from_send(BACKEND, what, e, |e| self.http.explain(e))
    }

    fn url(&self, path: &str, query: &[(&str, &str)]) -> url::Url {
        let mut u = self.base.clone();
        let joined = format!("{}{}", self.base.path().trim_end_matches('/'), path);
        u.set_path(&joined);
        u.set_query(None);
        if !query.is_empty() {
            u.query_pairs_mut().extend_pairs(query);
        }
        u
    }

    /// One request; any HTTP status is an `Answer`, transport failures are
    /// transient errors.
    pub(crate) async fn call(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<Answer, BackendError> {
        let what = format!("{method} {path}");
        let mut req = self.http.get().request(method, self.url(path, query));
        if let Some((name, value)) = &self.token {
            req = req.header(name.clone(), value.clone());
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = self.http.send(req).await.map_err(|e| self.transport_error(what.clone(), &e))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| BackendError::from_reqwest(BACKEND, what, &e))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Answer { status, body, text })
    }

    /// A request whose status must be one of `ok`.
    pub(crate) async fn expect(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
        ok: &[u16],
    ) -> Result<Answer, BackendError> {
        let what = format!("{method} {path}");
        let a = self.call(method, path, &[], body).await?;
        if ok.contains(&a.status) { Ok(a) } else { Err(BackendError::from_status(BACKEND, what, a.status, &a.text)) }
    }

    /// `GET`; 404 is `None`.
    pub(crate) async fn get(&self, path: &str) -> Result<Option<Value>, BackendError> {
        let a = self.expect(Method::GET, path, None, &[200, 404]).await?;
        Ok((a.status == 200).then_some(a.body))
    }

    /// Every item of a paginated collection.
    pub(crate) async fn list_all(&self, path: &str, tags: Option<&str>) -> Result<Vec<Value>, BackendError> {
        let mut out = Vec::new();
        let mut offset: Option<String> = None;
        loop {
            let mut query: Vec<(&str, &str)> = vec![("size", PAGE_SIZE)];
            if let Some(t) = tags {
                query.push(("tags", t));
            }
            if let Some(o) = &offset {
                query.push(("offset", o));
            }
            let what = format!("GET {path}");
            let a = self.call(Method::GET, path, &query, None).await?;
            if a.status != 200 {
                return Err(BackendError::from_status(BACKEND, what, a.status, &a.text));
            }
            let Some(data) = a.body["data"].as_array() else {
                return Err(BackendError::Permanent {
                    backend: BACKEND,
                    what,
                    message: "list without a data array".to_owned(),
                });
            };
            out.extend(data.iter().cloned());
            match a.body["offset"].as_str() {
                Some(o) if !data.is_empty() && offset.as_deref() != Some(o) => offset = Some(o.to_owned()),
                _ => return Ok(out),
            }
        }
    }

    /// `GET /` → the version's capabilities; Kong before 0.10 is refused.
    pub(crate) async fn detect(&self) -> Result<Caps, BackendError> {
        let root = self.expect(Method::GET, "/", None, &[200]).await?;
        let version = root.body["version"].as_str().unwrap_or_default().to_owned();
        let permanent =
            |message: String| BackendError::Permanent { backend: BACKEND, what: "GET /".to_owned(), message };
        let caps =
            Caps::from_version(&version).ok_or_else(|| permanent(format!("unrecognised Kong version {version:?}")))?;
        if caps.version < (0, 10, 0) {
            return Err(permanent(format!("Kong {version} has no upstreams; 0.10 or later is needed")));
        }
        Ok(caps)
    }

    /// Active targets (weight > 0) of an upstream, as `host:port`.
    pub(crate) async fn active_targets(&self, caps: Caps, upstream: &str) -> Result<Vec<String>, BackendError> {
        Ok(self.active_target_rows(caps, upstream).await?.into_keys().collect())
    }

    /// Active targets (weight > 0) of an upstream: `host:port` → the
    /// registration id its `id:` tag names, if any.
    pub(crate) async fn active_target_rows(
        &self,
        caps: Caps,
        upstream: &str,
    ) -> Result<BTreeMap<String, Option<String>>, BackendError> {
        let rows = if caps.active_suffix {
            match self.get(&format!("/upstreams/{upstream}/targets/active")).await? {
                Some(v) => v["data"].as_array().cloned().unwrap_or_default(),
                None => Vec::new(),
            }
        } else {
            match self.list_all(&format!("/upstreams/{upstream}/targets"), None).await {
                Ok(rows) => rows,
                Err(BackendError::Permanent { message, .. }) if message.starts_with("HTTP 404") => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        Ok(rows
            .iter()
            .filter(|t| t["weight"].as_u64().unwrap_or(0) > 0)
            .filter_map(|t| Some((t["target"].as_str()?.to_owned(), map::id_tag(t))))
            .collect())
    }

    /// Kong 1.1+: everything tagged for this cluster, grouped per app.
    pub(crate) async fn observe_tagged(&self, caps: Caps, cluster: &str) -> Result<Vec<ObservedApp>, BackendError> {
        let filter = map::owner_filter(cluster);
        let upstreams = self.list_all("/upstreams", Some(&filter)).await?;
        let services = self.list_all("/services", Some(&filter)).await?;
        let routes = self.list_all("/routes", Some(&filter)).await?;
        let mut apps: BTreeMap<String, ObservedApp> = BTreeMap::new();
        let mut entry = |e: &Value| -> Option<String> {
            let service = map::app_tag(e)?;
            let name = e["name"].as_str()?.to_owned();
            if name != map::entity_name(&service, cluster) {
                return None;
            }
            apps.entry(name.clone()).or_insert_with(|| ObservedApp {
                name: name.clone(),
                service,
                ..ObservedApp::default()
            });
            Some(name)
        };
        let mut upstream_names = Vec::new();
        for u in &upstreams {
            if let Some(name) = entry(u) {
                upstream_names.push(name);
            }
        }
        let mut service_ids: BTreeMap<String, String> = BTreeMap::new();
        let mut dests = Vec::new();
        for s in &services {
            if let Some(name) = entry(s) {
                if let Some(id) = s["id"].as_str() {
                    service_ids.insert(id.to_owned(), name.clone());
                }
                dests.push((name, Destination::from_service(s)));
            }
        }
        let mut found_routes = Vec::new();
        for r in &routes {
            let (Some(rname), Some(sid)) = (r["name"].as_str(), r["service"]["id"].as_str()) else {
                continue;
            };
            if service_ids.get(sid).is_some_and(|n| n == rname) {
                found_routes.push((rname.to_owned(), RouteView::from_route(r)));
            }
        }
        for (name, d) in dests {
            if let Some(app) = apps.get_mut(&name) {
                app.destination = Some(d);
            }
        }
        for (name, r) in found_routes {
            if let Some(app) = apps.get_mut(&name) {
                app.route = Some(r);
            }
        }
        for name in upstream_names {
            let rows = self.active_target_rows(caps, &name).await?;
            if let Some(app) = apps.get_mut(&name) {
                for (target, id) in rows {
                    if let Some(id) = id {
                        app.target_ids.insert(target.clone(), id);
                    }
                    app.targets.push(target);
                }
            }
        }
        Ok(apps.into_values().collect())
    }

    /// Kong without tags (before 1.1): look up, by name, the apps the ledger
    /// says Switchboard registered.
    pub(crate) async fn observe_by_name(
        &self,
        caps: Caps,
        cluster: &str,
        services: &[String],
    ) -> Result<Vec<ObservedApp>, BackendError> {
        let mut out = Vec::new();
        for service in services {
            let name = map::entity_name(service, cluster);
            let mut app = ObservedApp { name: name.clone(), service: service.clone(), ..ObservedApp::default() };
            let upstream = self.get(&format!("/upstreams/{name}")).await?;
            if upstream.is_some() {
                app.targets = self.active_targets(caps, &name).await?;
            }
            if caps.legacy {
                if let Some(api) = self.get(&format!("/apis/{name}")).await? {
                    app.destination = api["upstream_url"]
                        .as_str()
                        .and_then(|u| url::Url::parse(u).ok())
                        .map(|u| Destination::from_url(&u));
                    app.route = Some(RouteView::from_api(&api));
                }
            } else {
                if let Some(s) = self.get(&format!("/services/{name}")).await? {
                    app.destination = Some(Destination::from_service(&s));
                    if let Some(r) = self.get(&format!("/routes/{name}")).await?
                        && r["service"]["id"] == s["id"]
                    {
                        app.route = Some(RouteView::from_route(&r));
                    }
                }
            }
            if upstream.is_some() || app.destination.is_some() {
                out.push(app);
            }
        }
        Ok(out)
    }
}
