//! Thin HTTP client for Vulcand's API v2: one method per call Switchboard
//! makes, wire structs kept here.
//!
//! Invariants:
//! - Every request sends `Content-Type: application/json` (Vulcand parses
//!   form bodies first and would lose the JSON otherwise).
//! - Ids go into the URL as escaped path segments, never concatenated.
//! - A delete of something absent (404 on etcd v2, 200 on v3) is success.
//! - Errors never carry the base URL (it could hold userinfo).

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use serde_json::Value;

use crate::backends::BackendError;

const NAME: &str = "vulcand";

#[derive(Debug, Clone, Deserialize)]
pub struct WireBackend {
    #[serde(rename = "Id")]
    pub id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireServer {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "URL")]
    pub url: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WireFrontend {
    #[serde(rename = "Id")]
    pub id: String,
    #[serde(rename = "BackendId", default)]
    pub backend_id: String,
    #[serde(rename = "Route", default)]
    pub route: String,
}

#[derive(Deserialize)]
struct Backends {
    #[serde(rename = "Backends")]
    backends: Option<Vec<WireBackend>>,
}

#[derive(Deserialize)]
struct Servers {
    // `[]` on etcd v2, `null` on etcd v3 for an unknown backend.
    #[serde(rename = "Servers")]
    servers: Option<Vec<WireServer>>,
}

#[derive(Deserialize)]
struct Frontends {
    #[serde(rename = "Frontends")]
    frontends: Option<Vec<WireFrontend>>,
}

pub struct Client {
    /// Built by `tls`: follows the TLS files of `--vulcand-*-file`.
    http: crate::tls::HttpClient,
    base: url::Url,
}

impl Client {
    pub fn new(
        base: url::Url,
        timeout: Duration,
        tls: crate::tls::EndpointTls,
    ) -> Result<Client, crate::tls::TlsError> {
        let http = crate::tls::HttpClient::build(tls, move || reqwest::Client::builder().timeout(timeout))?;
        Ok(Client { http, base })
    }

    /// The same client with its writes behind the HA fence.
    pub fn gated(&self, gate: crate::ha::Fence) -> Client {
        Client { http: self.http.gated(gate), base: self.base.clone() }
    }

    /// A failed send: fenced, or a transport failure (TLS failures name the
    /// settings that fix them).
    fn transport_error(&self, what: &str, e: &crate::tls::SendError) -> BackendError {
        BackendError::from_send(NAME, what.to_owned(), e, |e| self.http.explain(e))
    }

    fn url(&self, segments: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut path) = u.path_segments_mut() {
            path.pop_if_empty();
            path.push("v2");
            path.extend(segments);
        }
        u
    }

    /// Sends one request; returns the status and body text.
    async fn call(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
        what: &str,
    ) -> Result<(StatusCode, String), BackendError> {
        let mut req = self.http.get().request(method, self.url(segments));
        if let Some(b) = body {
            req = req.header(reqwest::header::CONTENT_TYPE, "application/json").body(b.to_string());
        }
        let resp = self.http.send(req).await.map_err(|e| self.transport_error(what, &e))?;
        let status = resp.status();
        let text = resp.text().await.map_err(|e| BackendError::from_reqwest(NAME, what.to_owned(), &e))?;
        Ok((status, text))
    }

    async fn expect_ok(
        &self,
        method: Method,
        segments: &[&str],
        body: Option<&Value>,
        what: &str,
    ) -> Result<String, BackendError> {
        let (status, text) = self.call(method, segments, body, what).await?;
        if status == StatusCode::OK {
            Ok(text)
        } else {
            Err(BackendError::from_status(NAME, what.to_owned(), status.as_u16(), &text))
        }
    }

    async fn delete(&self, segments: &[&str], what: &str) -> Result<(), BackendError> {
        let (status, text) = self.call(Method::DELETE, segments, None, what).await?;
        if status == StatusCode::OK || status == StatusCode::NOT_FOUND {
            Ok(())
        } else {
            Err(BackendError::from_status(NAME, what.to_owned(), status.as_u16(), &text))
        }
    }

    fn decode<T: serde::de::DeserializeOwned>(text: &str, what: &str) -> Result<T, BackendError> {
        serde_json::from_str(text).map_err(|e| BackendError::Transient {
            backend: NAME,
            what: what.to_owned(),
            message: format!("unexpected response: {e}"),
        })
    }

    pub async fn upsert_backend(&self, pack: &Value, id: &str) -> Result<(), BackendError> {
        self.expect_ok(Method::POST, &["backends"], Some(pack), &format!("upsert backend {id}")).await.map(drop)
    }

    /// Upserts a server; `Ok(false)` when its backend does not exist (404).
    pub async fn upsert_server(&self, backend_id: &str, pack: &Value, id: &str) -> Result<bool, BackendError> {
        let what = format!("upsert server {id} in backend {backend_id}");
        let (status, text) = self.call(Method::POST, &["backends", backend_id, "servers"], Some(pack), &what).await?;
        match status {
            StatusCode::OK => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            s => Err(BackendError::from_status(NAME, what, s.as_u16(), &text)),
        }
    }

    pub async fn upsert_frontend(&self, pack: &Value, id: &str) -> Result<(), BackendError> {
        self.expect_ok(Method::POST, &["frontends"], Some(pack), &format!("upsert frontend {id}")).await.map(drop)
    }

    pub async fn delete_server(&self, backend_id: &str, id: &str) -> Result<(), BackendError> {
        self.delete(&["backends", backend_id, "servers", id], &format!("delete server {id} in backend {backend_id}"))
            .await
    }

    pub async fn delete_frontend(&self, id: &str) -> Result<(), BackendError> {
        self.delete(&["frontends", id], &format!("delete frontend {id}")).await
    }

    pub async fn delete_backend(&self, id: &str) -> Result<(), BackendError> {
        self.delete(&["backends", id], &format!("delete backend {id}")).await
    }

    /// `GET` of one object; 404 (absent) is `None`.
    async fn get_one(&self, segments: &[&str], what: &str) -> Result<Option<String>, BackendError> {
        let (status, text) = self.call(Method::GET, segments, None, what).await?;
        match status {
            StatusCode::OK => Ok(Some(text)),
            StatusCode::NOT_FOUND => Ok(None),
            s => Err(BackendError::from_status(NAME, what.to_owned(), s.as_u16(), &text)),
        }
    }

    /// One backend as Vulcand shows it (`Id`, `Type`, `Settings`), or `None`.
    pub async fn get_backend(&self, id: &str) -> Result<Option<Value>, BackendError> {
        let what = format!("get backend {id}");
        self.get_one(&["backends", id], &what).await?.map(|t| Self::decode(&t, &what)).transpose()
    }

    /// One server of a backend, or `None`.
    pub async fn get_server(&self, backend_id: &str, id: &str) -> Result<Option<WireServer>, BackendError> {
        let what = format!("get server {id} in backend {backend_id}");
        self.get_one(&["backends", backend_id, "servers", id], &what)
            .await?
            .map(|t| Self::decode(&t, &what))
            .transpose()
    }

    /// One frontend, or `None`.
    pub async fn get_frontend(&self, id: &str) -> Result<Option<WireFrontend>, BackendError> {
        let what = format!("get frontend {id}");
        self.get_one(&["frontends", id], &what).await?.map(|t| Self::decode(&t, &what)).transpose()
    }

    pub async fn list_backends(&self) -> Result<Vec<WireBackend>, BackendError> {
        let what = "list backends";
        let text = self.expect_ok(Method::GET, &["backends"], None, what).await?;
        Ok(Self::decode::<Backends>(&text, what)?.backends.unwrap_or_default())
    }

    pub async fn list_servers(&self, backend_id: &str) -> Result<Vec<WireServer>, BackendError> {
        let what = format!("list servers of backend {backend_id}");
        let text = self.expect_ok(Method::GET, &["backends", backend_id, "servers"], None, &what).await?;
        Ok(Self::decode::<Servers>(&text, &what)?.servers.unwrap_or_default())
    }

    pub async fn list_frontends(&self) -> Result<Vec<WireFrontend>, BackendError> {
        let what = "list frontends";
        let text = self.expect_ok(Method::GET, &["frontends"], None, what).await?;
        Ok(Self::decode::<Frontends>(&text, what)?.frontends.unwrap_or_default())
    }
}
