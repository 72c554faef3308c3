//! Consul backend: keeps Switchboard's registrations in Consul via the agent
//! service API (`/v1/agent/service/register`, `deregister`,
//! `/v1/agent/services`), on the one agent at `--consul` (single mode) or on
//! the agent of each task's host (per-host mode, `Agents::PerHost`).
//!
//! Per-host mode: a registration goes to the agent of `Registration.host`
//! (`--consul` when it has none: static services); the listing reads
//! `--consul`'s catalog (`/v1/catalog/services`, then each tagged service),
//! so it also finds what sits on hosts Marathon no longer has, and each entry
//! is deregistered at its node's agent. Every agent is its own `lane`: an
//! unreachable agent holds only its own host's ops.
//!
//! Invariants:
//! - Ownership: a service is ours only if it carries the `switchboard` tag
//!   and meta `managed_by=switchboard` + `switchboard_cluster=<cluster>`; on
//!   agents that list no meta (pre-1.0.7), the tag plus an entry in the
//!   ledger. The built-in `consul` service is never ours.
//! - Nothing is half-registered: a registration is validated before any call,
//!   and one register call carries the service and all its checks.
//! - Registrations carry a `switchboard_hash` of their content, so drift in
//!   what Consul does not list (checks) is still detected by `same`.
//! - Never logs the token (it lives in a sensitive default header).

mod client;
mod config;
mod map;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

pub use config::{Agents, ConsulConfig, ConsulConfigError};

use url::Url;

use crate::backends::{BackendError, Claim, Op, Registry, Rejection, Routing, Selection};
use crate::model::Registration;

const NAME: &str = "consul";

pub struct ConsulBackend {
    /// The agent at `--consul`: everything in single mode; the catalog (and
    /// registrations without a host) in per-host mode.
    client: client::Client,
    agents: Agents,
    cluster: String,
    /// `switchboard_hash` per owned service ID as of the last `list_owned`
    /// (`None`: listed without meta). `same` reads it, because a
    /// `Registration` has no place for the digest. Std mutex: short
    /// sections, never held across an `.await`.
    observed_hashes: Mutex<HashMap<String, Option<String>>>,
    /// Per-host mode: the agents (by URL) each owned service ID was listed
    /// on by the last `list_owned`, each with the host it stands for. `same`
    /// reads it (a task whose service sits on another host's agent is not in
    /// place: after a switch from single mode, say) and a register removes
    /// the service from the other agents. Std mutex: short sections, never
    /// held across an `.await`.
    observed_agents: Mutex<HashMap<String, Vec<(String, String)>>>,
    /// Service IDs the last listing found held by someone else, with who
    /// holds them: a register over one is refused, never a takeover. `None`
    /// until the first listing (the first register lists first). Std mutex:
    /// short sections, never held across an `.await`.
    foreign: Mutex<Option<HashMap<String, String>>>,
}

impl std::fmt::Debug for ConsulBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsulBackend").field("cluster", &self.cluster).finish_non_exhaustive()
    }
}

impl ConsulBackend {
    pub fn new(cfg: ConsulConfig) -> Result<ConsulBackend, ConsulConfigError> {
        cfg.validate()?;
        Ok(ConsulBackend {
            client: client::Client::new(&cfg)?,
            agents: cfg.agents,
            cluster: cfg.cluster,
            observed_hashes: Mutex::new(HashMap::new()),
            observed_agents: Mutex::new(HashMap::new()),
            foreign: Mutex::new(None),
        })
    }

    /// Its write requests behind `gate`, the HA fence (see `tls::HttpClient::send`).
    pub fn gated(mut self, gate: crate::ha::Fence) -> Self {
        self.client = self.client.gated(gate);
        self
    }

    fn observed_agents(&self) -> std::sync::MutexGuard<'_, HashMap<String, Vec<(String, String)>>> {
        self.observed_agents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The URL of the agent holding registrations of `host` (`--consul` for
    /// none), as a comparable string.
    fn agent_key(&self, host: &str) -> String {
        let url = self.agent_url(host).ok().flatten().unwrap_or_else(|| self.client.base().clone());
        config::redacted(&url)
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.observed_hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn foreign(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, String>>> {
        self.foreign.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The base URL of the agent that holds registrations of `host`.
    fn agent_url(&self, host: &str) -> Result<Option<Url>, String> {
        let Agents::PerHost { scheme, port, map } = &self.agents else { return Ok(None) };
        if host.is_empty() {
            return Ok(None);
        }
        if let Some(url) = map.get(host) {
            return Ok(Some(url.clone()));
        }
        let bracketed =
            if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_owned() };
        Url::parse(&format!("{scheme}://{bracketed}:{port}"))
            .map(Some)
            .map_err(|e| format!("host {host:?} gives no usable agent URL: {e}"))
    }

    /// The client of the agent that holds `reg`.
    fn agent_for(&self, reg: &Registration, what: &str) -> Result<client::Client, BackendError> {
        match self.agent_url(&reg.host) {
            Ok(None) => Ok(self.client.clone()),
            Ok(Some(url)) => Ok(self.client.at(url)),
            Err(message) => Err(BackendError::Permanent { backend: NAME, what: what.to_owned(), message }),
        }
    }

    /// Everything listed that may be ours: (listing key, entry, host). Single
    /// mode: the agent's services (no host). Per-host mode: `--consul`'s
    /// catalog, services tagged `switchboard` only, each with the host of its
    /// node (a `[consul_agents]` key naming the node or its address, else
    /// the address).
    async fn listing(&self) -> Result<Vec<(String, map::AgentService, String)>, BackendError> {
        let Agents::PerHost { map: hosts, .. } = &self.agents else {
            let services = self.client.services().await?;
            return Ok(services.into_iter().map(|(k, s)| (k, s, String::new())).collect());
        };
        let mut out = Vec::new();
        for (name, tags) in self.client.catalog_services().await? {
            if name == "consul" || !tags.iter().any(|t| t == map::TAG) {
                continue;
            }
            for entry in self.client.catalog_service(&name).await? {
                let host = if hosts.contains_key(&entry.node) || entry.address.is_empty() {
                    entry.node.clone()
                } else {
                    entry.address.clone()
                };
                out.push((entry.service_id.clone(), entry.service(), host));
            }
        }
        Ok(out)
    }

    /// Who holds service ID `id`, if someone else does, as of the last
    /// listing (made now if there was none yet).
    async fn held_by(&self, id: &str) -> Result<Option<String>, BackendError> {
        if self.foreign().is_none() {
            let services: BTreeMap<String, map::AgentService> =
                self.listing().await?.into_iter().map(|(k, s, _)| (k, s)).collect();
            *self.foreign() = Some(map::foreign_ids(&services, &self.cluster));
        }
        Ok(self.foreign().as_ref().and_then(|f| f.get(id).cloned()))
    }

    fn rejection(reg: &Registration, label: &str, reason: String) -> Rejection {
        Rejection { backend: NAME.to_owned(), app_id: reg.app_id.clone(), label: label.to_owned(), reason }
    }
}

/// Consul among the kinds of backend (`backends::KINDS`).
pub const KIND: crate::backends::Kind = crate::backends::Kind {
    name: NAME,
    concurrency: 8,
    credentials: Some("SWITCHBOARD_CONSUL_TOKEN"),
    self_described: true,
};

impl Routing for ConsulBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn select(&self, desired: &[Registration]) -> Selection {
        let mut out = Selection::default();
        let mut seen = HashSet::new();
        for reg in desired.iter().filter(|r| r.consul) {
            if let Err(bad) = map::validate(reg) {
                out.rejected.push(Self::rejection(reg, bad.label, bad.reason));
            } else if !seen.insert(reg.id.as_str()) {
                let reason = format!("service ID {:?} is registered twice; Consul would keep only one", reg.id);
                out.rejected.push(Self::rejection(reg, map::LABEL, reason));
            } else {
                // Consul runs its own checks and is never sent Marathon's
                // view of health: a flip of it is no write here.
                out.keep.push(Registration { healthy: None, ..reg.clone() });
            }
        }
        out
    }

    fn conflict_keys(&self, _reg: &Registration) -> Vec<String> {
        Vec::new()
    }

    fn lane(&self, reg: &Registration) -> Option<String> {
        if !matches!(self.agents, Agents::PerHost { .. }) {
            return None;
        }
        // No host (or an unusable one, refused in `apply`): the `--consul` agent.
        let url = self.agent_url(&reg.host).ok().flatten().unwrap_or_else(|| self.client.base().clone());
        Some(config::redacted(&url))
    }

    fn same(&self, desired: &Registration, observed: &Registration) -> bool {
        if matches!(self.agents, Agents::PerHost { .. }) {
            let want = self.agent_key(&desired.host);
            let placed = match self.observed_agents().get(&observed.id) {
                Some(agents) => agents.len() == 1 && agents[0].0 == want,
                None => self.agent_key(&observed.host) == want,
            };
            if !placed {
                return false;
            }
        }
        let hashes = self.hashes();
        let observed_hash = hashes.get(&observed.id).map(Option::as_deref);
        map::same(desired, observed, observed_hash)
    }
}

#[async_trait]
impl Registry for ConsulBackend {
    async fn list_owned(&self, ledger: &[Registration]) -> Result<Vec<Registration>, BackendError> {
        let listed = self.listing().await?;
        let by_id: BTreeMap<&str, &Registration> = ledger.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut owned = Vec::new();
        let mut hashes = HashMap::new();
        let mut agents: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for (key, svc, host) in &listed {
            let id = svc.id.as_deref().unwrap_or(key);
            if let Some(mut o) = map::owned(key, svc, &self.cluster, by_id.get(id).copied()) {
                o.registration.host = host.clone();
                let on = agents.entry(o.registration.id.clone()).or_default();
                on.push((self.agent_key(host), host.clone()));
                if on.len() > 1 {
                    // Listed on several nodes (a move half done): one
                    // observed entry; `same` says it is not in place.
                    continue;
                }
                hashes.insert(o.registration.id.clone(), o.hash);
                owned.push(o.registration);
            }
        }
        *self.hashes() = hashes;
        *self.observed_agents() = agents;
        let services: BTreeMap<String, map::AgentService> = listed.into_iter().map(|(k, s, _)| (k, s)).collect();
        *self.foreign() = Some(map::foreign_ids(&services, &self.cluster));
        Ok(owned)
    }

    async fn apply(&self, op: &Op) -> Result<(), BackendError> {
        match op {
            Op::Register(reg) => {
                map::validate(reg).map_err(|bad| BackendError::Permanent {
                    backend: NAME,
                    what: format!("register {}", reg.id),
                    message: format!("{} (label {} of app {})", bad.reason, bad.label, reg.app_id),
                })?;
                if let Some(holder) = self.held_by(&reg.id).await? {
                    return Err(BackendError::Permanent {
                        backend: NAME,
                        what: format!("register {} (label {} of app {})", reg.id, map::LABEL, reg.app_id),
                        message: format!(
                            "Consul service ID {:?} belongs to someone else ({holder}); Switchboard does not take over what it did not create",
                            reg.id
                        ),
                    });
                }
                let body = map::register_body(reg, &self.cluster);
                let what = format!("register {}", reg.id);
                self.agent_for(reg, &what)?.register(&body).await?;
                // Per-host: the same service ID listed on other agents (the
                // task was registered elsewhere before) goes from there.
                let want = self.agent_key(&reg.host);
                let elsewhere: Vec<String> = match self.observed_agents().get(&reg.id) {
                    Some(on) if matches!(self.agents, Agents::PerHost { .. }) => {
                        on.iter().filter(|(agent, _)| *agent != want).map(|(_, host)| host.clone()).collect()
                    }
                    _ => Vec::new(),
                };
                for host in elsewhere {
                    let old = Registration { host: host.clone(), ..reg.clone() };
                    self.agent_for(&old, &what)?.deregister(&reg.id).await?;
                    tracing::debug!(service_id = %reg.id, from = %host, "moved to the agent of its host");
                }
                if matches!(self.agents, Agents::PerHost { .. }) {
                    self.observed_agents().insert(reg.id.clone(), vec![(want, reg.host.clone())]);
                }
                // What Consul now holds, until the next listing says otherwise.
                self.hashes().insert(reg.id.clone(), body.meta.get(map::META_HASH).cloned());
                tracing::debug!(service_id = %reg.id, service = %reg.service, "registered");
            }
            Op::Deregister { registration, .. } => {
                let agent = self.agent_for(registration, &format!("deregister {}", registration.id))?;
                agent.deregister(&registration.id).await?;
                self.observed_agents().remove(&registration.id);
                self.hashes().remove(&registration.id);
                tracing::debug!(service_id = %registration.id, "deregistered");
            }
        }
        Ok(())
    }

    async fn claim(&self, _reg: &Registration) -> Result<Claim, BackendError> {
        Ok(Claim::Tagged)
    }

    fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        None
    }

    async fn heartbeat(&self, _ledger: &[Registration]) -> Result<(), BackendError> {
        Ok(())
    }
}
