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
//! - A service ID someone else holds is never overwritten: refused if the
//!   last listing showed it foreign, and in per-host mode also if the target
//!   agent's own listing does (read before its first register after each
//!   resync), whatever its tags.
//! - Nothing is half-registered: a registration is validated before any call,
//!   and one register call carries the service and all its checks.
//! - Registrations carry a `switchboard_hash` of their content, so drift in
//!   what Consul does not list (checks) is still detected by `same`.
//! - Never logs the token (it lives in a sensitive default header).
//! - Someone else's entries are touched only by explicit request:
//!   `--replace marathon-consul` (`replace.rs`) deregisters marathon-consul's
//!   registration of a task and port once Switchboard's own registration of
//!   them has succeeded at the same agent, or with Switchboard's own when the
//!   task is not wanted; each one is logged and counted
//!   (`switchboard_replaced_total`).

mod client;
mod config;
mod map;
mod replace;
#[cfg(test)]
mod replace_tests;
pub mod settings;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use async_trait::async_trait;

pub use config::{Agents, ConsulConfig, ConsulConfigError};
pub use replace::{Replace, ReplaceError};

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
    /// `--replace`: whose registrations are taken over; `None`: nobody's.
    replace: Option<Replace>,
    /// With `--replace`: marathon-consul's entries as of the last listing,
    /// by the ID of Switchboard's registration each stands for, each with
    /// the host of its agent. `None` until the first listing (the first
    /// register lists them first). Std mutex: short sections, never held
    /// across an `.await`.
    replaceable: Mutex<Option<Replaceable>>,
    /// With `--replace`: marathon-consul's service IDs deregistered since the
    /// last listing started. A listing in flight may still show them; they are
    /// left out of what it records, so none is removed (or counted) twice.
    /// Std mutex: short sections, never held across an `.await`.
    replaced: Mutex<HashSet<String>>,
    /// Per-host mode: per agent (by URL, as `agent_key`), the service IDs
    /// its own `/v1/agent/services` listing shows held by someone else,
    /// whatever their tags (the catalog listing sees only services tagged
    /// `switchboard`). Read before the first register at an agent, dropped
    /// by every `list_owned`, so each resync reads each agent again. Std
    /// mutex: short sections, never held across an `.await`.
    agent_foreign: Mutex<HashMap<String, HashMap<String, String>>>,
}

/// marathon-consul's entries by the Switchboard registration they stand for.
type Replaceable = BTreeMap<String, Vec<(replace::Found, String)>>;

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
            replace: cfg.replace,
            replaceable: Mutex::new(None),
            replaced: Mutex::new(HashSet::new()),
            agent_foreign: Mutex::new(HashMap::new()),
        })
    }

    /// Takes over from marathon-consul (`--replace`), or from nobody.
    pub fn with_replace(mut self, replace: Option<Replace>) -> ConsulBackend {
        self.replace = replace;
        self
    }

    fn replaceable(&self) -> std::sync::MutexGuard<'_, Option<Replaceable>> {
        self.replaceable.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn replaced(&self) -> std::sync::MutexGuard<'_, HashSet<String>> {
        self.replaced.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// marathon-consul's entries standing for registration `id` at the agent
    /// `agent` (an `agent_key`), as of the last listing.
    fn replaceable_at(&self, id: &str, agent: &str) -> Vec<(replace::Found, String)> {
        let found = self.replaceable().as_ref().and_then(|m| m.get(id).cloned()).unwrap_or_default();
        found.into_iter().filter(|(_, host)| self.agent_key(host) == agent).collect()
    }

    /// marathon-consul's entries, read now: in single mode among `listed`
    /// (the agent's services; read here when `None`), in per-host mode from
    /// `--consul`'s catalog (services tagged with its tag).
    async fn list_replaceable(
        &self,
        replace: &Replace,
        listed: Option<&[(String, map::AgentService, String)]>,
    ) -> Result<Replaceable, BackendError> {
        let entries = |l: &[(String, map::AgentService, String)]| {
            replace::by_registration(replace, l.iter().map(|(k, s, h)| (k.as_str(), s, h.as_str())))
        };
        let Agents::PerHost { map: hosts, .. } = &self.agents else {
            return match listed {
                Some(l) => Ok(entries(l)),
                None => {
                    let services = self.client.services().await?;
                    Ok(replace::by_registration(replace, services.iter().map(|(k, s)| (k.as_str(), s, ""))))
                }
            };
        };
        let mut out = Vec::new();
        for (name, tags) in self.client.catalog_services().await? {
            if name == "consul" || !tags.iter().any(|t| t == replace.tag()) {
                continue;
            }
            for entry in self.client.catalog_service(&name, replace.tag()).await? {
                // The host its agent stands for, as `listing` tells it.
                let host = if hosts.contains_key(&entry.node) || entry.address.is_empty() {
                    entry.node.clone()
                } else {
                    entry.address.clone()
                };
                out.push((entry.service_id.clone(), entry.service(), host));
            }
        }
        Ok(entries(&out))
    }

    /// `--replace`: deregisters marathon-consul's entries that stand for
    /// `reg` at `reg`'s agent, now that Switchboard's own registration of the
    /// same task and port is in place there (`why` = `registered`) or the
    /// task is not wanted (`not wanted`). A transient failure fails the op
    /// (retried with backoff); a permanent one (an ACL refusal) is logged and
    /// left to the next resync, since our own write did what it was for.
    async fn take_over(&self, reg: &Registration, why: &'static str) -> Result<(), BackendError> {
        let Some(replace) = &self.replace else { return Ok(()) };
        if self.replaceable().is_none() {
            let found = self.list_replaceable(replace, None).await?;
            self.replaceable().get_or_insert(found);
        }
        let agent = self.agent_key(&reg.host);
        for (found, host) in self.replaceable_at(&reg.id, &agent) {
            let at = Registration { host: host.clone(), ..reg.clone() };
            let removed = match self.agent_for(&at, &format!("deregister {}", found.id)) {
                Ok(agent) => agent.deregister(&found.id).await,
                Err(e) => Err(e),
            };
            match removed {
                Ok(()) => {}
                // Our own op did what it was for; theirs is tried again when
                // the next listing shows it (`same` is false until then).
                Err(e) if !e.is_transient() => {
                    tracing::warn!(
                        service_id = %found.id,
                        task_id = %found.task_id,
                        agent = %agent,
                        error = %e,
                        "cannot deregister marathon-consul's registration; the next resync tries again"
                    );
                    continue;
                }
                Err(e) => return Err(e),
            }
            self.replaced().insert(found.id.clone());
            if let Some(m) = self.replaceable().as_mut()
                && let Some(left) = m.get_mut(&reg.id)
            {
                left.retain(|(f, h)| f.id != found.id || *h != host);
                if left.is_empty() {
                    m.remove(&reg.id);
                }
            }
            crate::metrics::REPLACED.with_label_values(&[NAME]).inc();
            tracing::info!(
                service_id = %found.id,
                task_id = %found.task_id,
                agent = %agent,
                registration = %reg.id,
                why,
                "marathon-consul registration deregistered"
            );
        }
        Ok(())
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
            for entry in self.client.catalog_service(&name, map::TAG).await? {
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
            let listed = self.listing().await?;
            if matches!(self.agents, Agents::PerHost { .. }) {
                // Where our services sit, for a register planned before any
                // resync listed them (from the ledger, after a restart): a
                // service on another agent is removed from there.
                let mut placed: HashMap<String, Vec<(String, String)>> = HashMap::new();
                for (key, svc, host) in &listed {
                    if let Some(o) = map::owned(key, svc, &self.cluster, None) {
                        placed.entry(o.registration.id).or_default().push((self.agent_key(host), host.clone()));
                    }
                }
                let mut known = self.observed_agents();
                for (id, on) in placed {
                    known.entry(id).or_insert(on);
                }
            }
            let services: BTreeMap<String, map::AgentService> = listed.into_iter().map(|(k, s, _)| (k, s)).collect();
            *self.foreign() = Some(map::foreign_ids(&services, &self.cluster));
        }
        Ok(self.foreign().as_ref().and_then(|f| f.get(id).cloned()))
    }

    fn agent_foreign(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashMap<String, String>>> {
        self.agent_foreign.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Per-host mode: who holds service ID `reg.id` at the agent `reg` goes
    /// to, if someone else does, as that agent's own listing shows (read
    /// now if it was not since the last resync). Single mode: `None` (the
    /// one agent's listing is the catalog `held_by` reads).
    async fn held_at_agent(&self, reg: &Registration, what: &str) -> Result<Option<String>, BackendError> {
        if !matches!(self.agents, Agents::PerHost { .. }) {
            return Ok(None);
        }
        let key = self.agent_key(&reg.host);
        if let Some(ids) = self.agent_foreign().get(&key) {
            return Ok(ids.get(&reg.id).cloned());
        }
        let services = self.agent_for(reg, what)?.services().await?;
        let ids = map::foreign_ids(&services, &self.cluster);
        let holder = ids.get(&reg.id).cloned();
        self.agent_foreign().insert(key, ids);
        Ok(holder)
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
    file_keys: crate::settings::field_names::<settings::File>,
    settings: settings::merge,
    build: settings::build,
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
        if self.replace.is_some() && !self.replaceable_at(&observed.id, &self.agent_key(&desired.host)).is_empty() {
            // `--replace`: marathon-consul's entry of the same task and port
            // is still there; a register puts ours in place and removes it.
            return false;
        }
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
        self.replaced().clear();
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
        if let Some(replace) = &self.replace {
            let mut found = self.list_replaceable(replace, Some(&listed)).await?;
            let replaced = std::mem::take(&mut *self.replaced());
            for on in found.values_mut() {
                on.retain(|(f, _)| !replaced.contains(&f.id));
            }
            found.retain(|_, on| !on.is_empty());
            let ours: HashSet<&str> = owned.iter().map(|r| r.id.as_str()).collect();
            let stand_ins: Vec<Registration> = found
                .iter()
                .filter(|(id, _)| !ours.contains(id.as_str()))
                .filter_map(|(_, on)| on.first().map(|(f, host)| f.stand_in(host)))
                .collect();
            owned.extend(stand_ins);
            *self.replaceable() = Some(found);
        }
        *self.hashes() = hashes;
        *self.observed_agents() = agents;
        let services: BTreeMap<String, map::AgentService> = listed.into_iter().map(|(k, s, _)| (k, s)).collect();
        *self.foreign() = Some(map::foreign_ids(&services, &self.cluster));
        // Each agent's own listing is read again before its next register.
        self.agent_foreign().clear();
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
                let what = format!("register {}", reg.id);
                let holder = match self.held_by(&reg.id).await? {
                    Some(holder) => Some(holder),
                    None => self.held_at_agent(reg, &what).await?,
                };
                if let Some(holder) = holder {
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
                self.take_over(reg, "registered").await?;
            }
            Op::Deregister { registration, .. } => {
                let agent = self.agent_for(registration, &format!("deregister {}", registration.id))?;
                agent.deregister(&registration.id).await?;
                self.observed_agents().remove(&registration.id);
                self.hashes().remove(&registration.id);
                tracing::debug!(service_id = %registration.id, "deregistered");
                self.take_over(registration, "not wanted").await?;
            }
        }
        Ok(())
    }

    async fn claim(&self, _reg: &Registration) -> Result<Claim, BackendError> {
        Ok(Claim::Tagged)
    }

    /// Tags and meta say what is ours: nothing to adopt.
    async fn adoptable(&self, _desired: &[Registration]) -> Result<Vec<crate::backends::Found>, BackendError> {
        Ok(Vec::new())
    }

    fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        None
    }

    async fn heartbeat(&self, _ledger: &[Registration]) -> Result<(), BackendError> {
        Ok(())
    }
}
