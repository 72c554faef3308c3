//! Settings of the Vulcand backend, validated once before the backend is built.
//!
//! Invariants: a `VulcandConfig` that `validate`s builds a backend whose ids
//! and TTL strings Vulcand accepts; nothing here does I/O.

use std::time::Duration;

/// How to reach Vulcand and what to write there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VulcandConfig {
    /// Vulcand API v2 base URL, e.g. `http://127.0.0.1:8182`.
    pub url: url::Url,
    /// `--cluster`: part of every backend and frontend id, so Switchboards of
    /// several Marathon clusters never write the same ids.
    pub cluster: String,
    /// Server TTL; `None` registers permanent servers. With a TTL, servers are
    /// re-posted every `ttl / 3` and vanish when Switchboard stops.
    pub server_ttl: Option<Duration>,
    /// Per-request timeout.
    pub timeout: Duration,
    /// TLS files (`--vulcand-*-file` / `--tls-*-file`), for a Vulcand behind
    /// a TLS proxy.
    pub tls: crate::tls::EndpointTls,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VulcandConfigError {
    #[error("vulcand url: scheme {0:?} is not http or https")]
    Scheme(String),
    #[error("vulcand url: must not carry a query or fragment")]
    UrlExtras,
    #[error("cluster name must not be empty")]
    EmptyCluster,
    #[error("vulcand server ttl {0:?}: must be whole seconds and at least 1s (Vulcand stores TTLs in seconds)")]
    Ttl(Duration),
    #[error("vulcand timeout must be more than zero")]
    Timeout,
    #[error("vulcand http client: {0}")]
    Client(String),
}

impl VulcandConfigError {
    /// The setting at fault, as the user gives it.
    pub fn setting(&self) -> &'static str {
        match self {
            VulcandConfigError::Scheme(_) | VulcandConfigError::UrlExtras | VulcandConfigError::Client(_) => {
                "--vulcand"
            }
            VulcandConfigError::EmptyCluster => "--cluster",
            VulcandConfigError::Ttl(_) => "--vulcand-server-ttl",
            VulcandConfigError::Timeout => "--request-timeout",
        }
    }
}

impl VulcandConfig {
    pub fn validate(&self) -> Result<(), VulcandConfigError> {
        match self.url.scheme() {
            "http" | "https" => {}
            other => return Err(VulcandConfigError::Scheme(other.to_owned())),
        }
        if self.url.query().is_some() || self.url.fragment().is_some() {
            return Err(VulcandConfigError::UrlExtras);
        }
        if self.cluster.is_empty() {
            return Err(VulcandConfigError::EmptyCluster);
        }
        if let Some(ttl) = self.server_ttl
            && (ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0)
        {
            return Err(VulcandConfigError::Ttl(ttl));
        }
        if self.timeout.is_zero() {
            return Err(VulcandConfigError::Timeout);
        }
        Ok(())
    }
}
