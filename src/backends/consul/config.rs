//! Settings of the Consul backend, validated once when the backend is built.
//!
//! Invariants:
//! - `Debug` never shows the token, nor a password in the URL.
//! - A `ConsulConfig` that `validate`s builds a backend that can form every
//!   request URL it needs (http/https base URL, usable cluster name).

use std::time::Duration;

use url::Url;

use super::map::META_VALUE_MAX;
use crate::secret::Secret;

/// How to reach one Consul agent and which Switchboard cluster we are.
#[derive(Clone)]
pub struct ConsulConfig {
    /// Agent HTTP API base, e.g. `http://127.0.0.1:8500` (a path prefix is kept).
    pub url: Url,
    /// ACL token sent as `X-Consul-Token`; `None` = the agent's default token.
    pub token: Option<Secret>,
    /// `--cluster`: written to meta `switchboard_cluster`; only services of
    /// this cluster are owned.
    pub cluster: String,
    /// Whole-request timeout of every call to the agent.
    pub timeout: Duration,
    /// Which agent each registration goes to (`--consul-agent-mode`).
    pub agents: Agents,
    /// TLS files (`--consul-*-file` / `--tls-*-file`), for every agent.
    pub tls: crate::tls::EndpointTls,
    /// `--replace`: whose registrations are taken over (marathon-consul's).
    pub replace: Option<super::Replace>,
}

/// Where registrations go: `--consul-agent-mode`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Agents {
    /// Everything at `url` (the default).
    #[default]
    Single,
    /// Each task at the agent on its host: `map[host]` if listed, else
    /// `scheme://host:port`; a registration without a host (static services)
    /// at `url`. `url`'s catalog lists what is owned on every node.
    PerHost { scheme: String, port: u16, map: std::collections::BTreeMap<String, Url> },
}

impl std::fmt::Debug for ConsulConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulConfig")
            .field("url", &redacted(&self.url))
            .field("token", &self.token)
            .field("cluster", &self.cluster)
            .field("timeout", &self.timeout)
            .field("agents", &self.agents)
            .field("tls", &self.tls)
            .field("replace", &self.replace)
            .finish()
    }
}

/// The URL without userinfo, for logs and errors.
pub(crate) fn redacted(url: &Url) -> String {
    let mut u = url.clone();
    // Only fails for URLs that cannot carry userinfo at all.
    let _ = u.set_username("");
    let _ = u.set_password(None);
    u.to_string()
}

#[derive(Debug, thiserror::Error)]
pub enum ConsulConfigError {
    #[error("consul url {url}: scheme must be http or https")]
    Scheme { url: String },
    #[error("consul: cluster name is empty")]
    EmptyCluster,
    #[error("consul: cluster name is {len} characters; Consul meta values are limited to {META_VALUE_MAX}")]
    ClusterTooLong { len: usize },
    #[error("consul: timeout must be greater than zero")]
    ZeroTimeout,
    #[error("consul: the token contains characters not allowed in an HTTP header")]
    Token,
    #[error("consul: cannot build the HTTP client: {0}")]
    Client(#[source] crate::tls::TlsError),
    #[error("consul: per-host agent scheme {0:?} is not http or https")]
    AgentScheme(String),
}

impl ConsulConfigError {
    /// The setting at fault, as the user gives it.
    pub fn setting(&self) -> &'static str {
        match self {
            ConsulConfigError::Scheme { .. } | ConsulConfigError::Client(_) => "--consul",
            ConsulConfigError::EmptyCluster | ConsulConfigError::ClusterTooLong { .. } => "--cluster",
            ConsulConfigError::ZeroTimeout => "--request-timeout",
            ConsulConfigError::Token => "SWITCHBOARD_CONSUL_TOKEN",
            ConsulConfigError::AgentScheme(_) => "--consul-agent-scheme",
        }
    }
}

impl ConsulConfig {
    pub(crate) fn validate(&self) -> Result<(), ConsulConfigError> {
        if !matches!(self.url.scheme(), "http" | "https") || self.url.cannot_be_a_base() {
            return Err(ConsulConfigError::Scheme { url: redacted(&self.url) });
        }
        if self.cluster.is_empty() {
            return Err(ConsulConfigError::EmptyCluster);
        }
        if self.cluster.len() > META_VALUE_MAX {
            return Err(ConsulConfigError::ClusterTooLong { len: self.cluster.len() });
        }
        if self.timeout.is_zero() {
            return Err(ConsulConfigError::ZeroTimeout);
        }
        if let Agents::PerHost { scheme, .. } = &self.agents
            && !matches!(scheme.as_str(), "http" | "https")
        {
            return Err(ConsulConfigError::AgentScheme(scheme.clone()));
        }
        Ok(())
    }
}
