//! The agent calls the backend makes (register, deregister, list) and, in
//! per-host mode, the two catalog reads of the resync, with Consul's status
//! codes mapped onto `BackendError`.
//!
//! Invariants:
//! - The token travels only in the `X-Consul-Token` header, marked sensitive;
//!   it never appears in an error, a log line or a URL.
//! - 5xx, 429 and connection errors are transient; other 4xx are permanent
//!   and carry Consul's plain-text message.
//! - Deregistering an unknown ID is success (200, 404, or 500 `Unknown
//!   service`, depending on the agent's version and ACL mode).

use std::collections::BTreeMap;

use reqwest::header::{HeaderMap, HeaderValue};
use url::Url;

use super::config::{ConsulConfig, ConsulConfigError};
use super::map::{AgentService, CatalogEntry, RegisterBody};
use crate::backends::BackendError;

const BACKEND: &str = "consul";

#[derive(Clone)]
pub(crate) struct Client {
    /// Built by `tls`; shared by the clients of every agent (one pool, one
    /// set of TLS files).
    http: crate::tls::HttpClient,
    base: Url,
}

impl Client {
    pub(crate) fn new(cfg: &ConsulConfig) -> Result<Client, ConsulConfigError> {
        let mut headers = HeaderMap::new();
        if let Some(token) = &cfg.token {
            let mut value = HeaderValue::from_str(token.expose()).map_err(|_| ConsulConfigError::Token)?;
            value.set_sensitive(true);
            headers.insert("X-Consul-Token", value);
        }
        let timeout = cfg.timeout;
        let http = crate::tls::HttpClient::build(cfg.tls.clone(), move || {
            reqwest::Client::builder()
                .default_headers(headers.clone())
                .timeout(timeout)
                .connect_timeout(timeout)
                // The agent is local by design; a proxy from the environment
                // would only add a hop that can fail.
                .no_proxy()
        })
        .map_err(ConsulConfigError::Client)?;
        Ok(Client { http, base: cfg.url.clone() })
    }

    pub(crate) fn base(&self) -> &Url {
        &self.base
    }

    /// The same client with its writes behind the HA fence.
    pub(crate) fn gated(&self, gate: crate::ha::Fence) -> Client {
        Client { http: self.http.gated(gate), base: self.base.clone() }
    }

    /// The same client, talking to the agent at `base`.
    pub(crate) fn at(&self, base: Url) -> Client {
        Client { http: self.http.clone(), base }
    }

    /// `base` + `/v1/...`, each segment percent-encoded (so an ID holding
    /// `/` stays one segment, reference §2).
    fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        url.set_query(None);
        if let Ok(mut path) = url.path_segments_mut() {
            // A base URL is checked by `ConsulConfig::validate`, so this
            // branch is always taken.
            path.pop_if_empty().push("v1").extend(segments);
        }
        url
    }

    pub(crate) async fn register(&self, body: &RegisterBody) -> Result<(), BackendError> {
        let what = format!("register {}", body.id);
        let mut url = self.url(&["agent", "service", "register"]);
        url.set_query(Some("replace-existing-checks"));
        let (status, text) = self.send(self.http.get().put(url).json(body), &what).await?;
        match status {
            200..=299 => Ok(()),
            _ => Err(BackendError::from_status(BACKEND, what, status, &text)),
        }
    }

    pub(crate) async fn deregister(&self, id: &str) -> Result<(), BackendError> {
        let what = format!("deregister {id}");
        let url = self.url(&["agent", "service", "deregister", id]);
        let (status, text) = self.send(self.http.get().put(url), &what).await?;
        match status {
            200..=299 | 404 => Ok(()),
            500 if text.contains("Unknown service") => Ok(()),
            _ => Err(BackendError::from_status(BACKEND, what, status, &text)),
        }
    }

    /// `GET /v1/agent/services`: every service on the agent, keyed by ID.
    /// An entry that does not parse as a service is left out (it cannot be
    /// ours: Switchboard writes only well-formed entries).
    pub(crate) async fn services(&self) -> Result<BTreeMap<String, AgentService>, BackendError> {
        let what = "list services".to_owned();
        let url = self.url(&["agent", "services"]);
        let (status, text) = self.send(self.http.get().get(url), &what).await?;
        if !(200..=299).contains(&status) {
            return Err(BackendError::from_status(BACKEND, what, status, &text));
        }
        let raw: BTreeMap<String, serde_json::Value> = serde_json::from_str(&text).map_err(|e| {
            BackendError::Transient { backend: BACKEND, what: what.clone(), message: format!("invalid JSON: {e}") }
        })?;
        let mut out = BTreeMap::new();
        for (key, value) in raw {
            match serde_json::from_value::<AgentService>(value) {
                Ok(svc) => {
                    out.insert(key, svc);
                }
                Err(e) => {
                    tracing::debug!(service_id = %key, error = %e, "unreadable service entry skipped")
                }
            }
        }
        Ok(out)
    }

    /// `GET /v1/catalog/services`: every service name in the datacenter
    /// with the union of its tags.
    pub(crate) async fn catalog_services(&self) -> Result<BTreeMap<String, Vec<String>>, BackendError> {
        let what = "list catalog services".to_owned();
        let url = self.url(&["catalog", "services"]);
        let (status, text) = self.send(self.http.get().get(url), &what).await?;
        if !(200..=299).contains(&status) {
            return Err(BackendError::from_status(BACKEND, what, status, &text));
        }
        let raw: BTreeMap<String, Option<Vec<String>>> = serde_json::from_str(&text).map_err(|e| {
            BackendError::Transient { backend: BACKEND, what: what.clone(), message: format!("invalid JSON: {e}") }
        })?;
        Ok(raw.into_iter().map(|(k, v)| (k, v.unwrap_or_default())).collect())
    }

    /// `GET /v1/catalog/service/<name>?tag=<tag>`: the instances of one
    /// service tagged `tag` (`switchboard`, or marathon-consul's tag for
    /// `--replace`) on every node, with the node's name and address.
    pub(crate) async fn catalog_service(&self, name: &str, tag: &str) -> Result<Vec<CatalogEntry>, BackendError> {
        let what = format!("list catalog service {name}");
        let mut url = self.url(&["catalog", "service", name]);
        url.query_pairs_mut().append_pair("tag", tag);
        let (status, text) = self.send(self.http.get().get(url), &what).await?;
        if !(200..=299).contains(&status) {
            return Err(BackendError::from_status(BACKEND, what, status, &text));
        }
        let raw: Vec<serde_json::Value> = serde_json::from_str(&text).map_err(|e| BackendError::Transient {
            backend: BACKEND,
            what: what.clone(),
            message: format!("invalid JSON: {e}"),
        })?;
        Ok(raw.into_iter().filter_map(|v| serde_json::from_value::<CatalogEntry>(v).ok()).collect())
    }

    /// Sends through the HA gate (`tls::HttpClient::send`).
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> Result<(u16, String), BackendError> {
        let resp = self
            .http
            .send(req)
            .await
            .map_err(|e| BackendError::from_send(BACKEND, what.to_owned(), &e, |e| self.http.explain(e)))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.map_err(|e| BackendError::from_reqwest(BACKEND, what.to_owned(), &e))?;
        Ok((status, text))
    }
}
