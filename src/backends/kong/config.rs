//! Settings of the Kong backend, validated once before the backend is built.
//!
//! Invariant: a `KongConfig` that `KongBackend::new` accepted names a usable
//! Admin API URL, a valid header name and a cluster name safe in entity names
//! and tags; the token is only ever read in `client.rs`, into a header.

use std::time::Duration;

use crate::secret::Secret;

/// How to reach and use one Kong Admin API.
#[derive(Debug, Clone)]
pub struct KongConfig {
    /// Admin API base URL (`http://kong:8001/` or `https://…:8444/`); a path
    /// prefix (`/admin-api/`) is kept.
    pub url: url::Url,
    /// Admin token (`SWITCHBOARD_KONG_TOKEN`); sent as `token_header`.
    pub token: Option<Secret>,
    /// Header carrying the token; Kong Enterprise's default is `Kong-Admin-Token`.
    pub token_header: String,
    /// `--cluster`: this Switchboard owns only entities of this cluster.
    pub cluster: String,
    /// Forwarding topology: Kong sends every app to this router (e.g. Vulcand's
    /// listener) with the Host header preserved, instead of to the instances.
    pub forward_to: Option<url::Url>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// TLS files (`--kong-*-file` / `--tls-*-file`).
    pub tls: crate::tls::EndpointTls,
}

impl KongConfig {
    /// Defaults: no token, `Kong-Admin-Token`, cluster `default`, direct
    /// topology, 10 s timeout.
    pub fn new(url: url::Url) -> KongConfig {
        KongConfig {
            url,
            token: None,
            token_header: "Kong-Admin-Token".to_owned(),
            cluster: "default".to_owned(),
            forward_to: None,
            timeout: Duration::from_secs(10),
            tls: crate::tls::EndpointTls { endpoint: super::KIND.endpoint(), ..Default::default() },
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KongConfigError {
    #[error("kong url: scheme {0:?} is not http or https")]
    UrlScheme(String),
    #[error("kong forward-to url: must be http(s) with a host")]
    ForwardTo,
    #[error("kong token header {0:?} is not a valid HTTP header name")]
    TokenHeader(String),
    #[error("kong token is not a valid HTTP header value")]
    TokenValue,
    #[error("cluster {0:?}: Kong needs 1-63 characters of [a-z0-9-], not starting or ending with '-'")]
    Cluster(String),
    #[error("kong http client: {0}")]
    Client(#[source] crate::tls::TlsError),
}

impl KongConfigError {
    /// The setting at fault, as the user gives it.
    pub fn setting(&self) -> &'static str {
        match self {
            KongConfigError::UrlScheme(_) | KongConfigError::Client(_) => "--kong",
            KongConfigError::ForwardTo => "--kong-forward-to",
            KongConfigError::TokenHeader(_) => "--kong-token-header",
            KongConfigError::TokenValue => "SWITCHBOARD_KONG_TOKEN",
            KongConfigError::Cluster(_) => "--cluster",
        }
    }
}

impl KongConfig {
    pub(crate) fn validate(&self) -> Result<(), KongConfigError> {
        if !matches!(self.url.scheme(), "http" | "https") {
            return Err(KongConfigError::UrlScheme(self.url.scheme().to_owned()));
        }
        if let Some(f) = &self.forward_to
            && (!matches!(f.scheme(), "http" | "https") || f.host_str().is_none_or(str::is_empty))
        {
            return Err(KongConfigError::ForwardTo);
        }
        if reqwest::header::HeaderName::from_bytes(self.token_header.as_bytes()).is_err() {
            return Err(KongConfigError::TokenHeader(self.token_header.clone()));
        }
        if let Some(t) = &self.token
            && reqwest::header::HeaderValue::from_str(t.expose()).is_err()
        {
            return Err(KongConfigError::TokenValue);
        }
        let c = &self.cluster;
        let ok = !c.is_empty()
            && c.len() <= 63
            && c.chars().all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || ch == '-')
            && !c.starts_with('-')
            && !c.ends_with('-');
        if !ok {
            return Err(KongConfigError::Cluster(c.clone()));
        }
        Ok(())
    }
}
