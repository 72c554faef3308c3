//! Consul backend: keeps Switchboard's registrations on one Consul agent via
//! the agent service API (`/v1/agent/service/register`, `deregister`,
//! `/v1/agent/services`).
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

pub use config::{ConsulConfig, ConsulConfigError};

use crate::backends::{Backend, BackendError, Op, Rejection, Selection};
use crate::model::Registration;

const NAME: &str = "consul";

pub struct ConsulBackend {
    client: client::Client,
    cluster: String,
    /// `switchboard_hash` per owned service ID as of the last `list_owned`
    /// (`None`: listed without meta). `same` reads it, because a
    /// `Registration` has no place for the digest. Std mutex: short
    /// sections, never held across an `.await`.
    observed_hashes: Mutex<HashMap<String, Option<String>>>,
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
            cluster: cfg.cluster,
            observed_hashes: Mutex::new(HashMap::new()),
            foreign: Mutex::new(None),
        })
    }

    fn hashes(&self) -> std::sync::MutexGuard<'_, HashMap<String, Option<String>>> {
        self.observed_hashes.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn foreign(&self) -> std::sync::MutexGuard<'_, Option<HashMap<String, String>>> {
        self.foreign.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Who holds service ID `id`, if someone else does, as of the last
    /// listing (made now if there was none yet).
    async fn held_by(&self, id: &str) -> Result<Option<String>, BackendError> {
        if self.foreign().is_none() {
            let services = self.client.services().await?;
            *self.foreign() = Some(map::foreign_ids(&services, &self.cluster));
        }
        Ok(self.foreign().as_ref().and_then(|f| f.get(id).cloned()))
    }

    fn rejection(reg: &Registration, label: &str, reason: String) -> Rejection {
        Rejection { backend: NAME.to_owned(), app_id: reg.app_id.clone(), label: label.to_owned(), reason }
    }
}

#[async_trait]
impl Backend for ConsulBackend {
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

    fn same(&self, desired: &Registration, observed: &Registration) -> bool {
        let hashes = self.hashes();
        let observed_hash = hashes.get(&observed.id).map(Option::as_deref);
        map::same(desired, observed, observed_hash)
    }

    async fn list_owned(&self, ledger: &[Registration]) -> Result<Vec<Registration>, BackendError> {
        let services = self.client.services().await?;
        let by_id: BTreeMap<&str, &Registration> = ledger.iter().map(|r| (r.id.as_str(), r)).collect();
        let mut owned = Vec::new();
        let mut hashes = HashMap::new();
        for (key, svc) in &services {
            let id = svc.id.as_deref().unwrap_or(key);
            if let Some(o) = map::owned(key, svc, &self.cluster, by_id.get(id).copied()) {
                hashes.insert(o.registration.id.clone(), o.hash);
                owned.push(o.registration);
            }
        }
        *self.hashes() = hashes;
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
                self.client.register(&body).await?;
                // What Consul now holds, until the next listing says otherwise.
                self.hashes().insert(reg.id.clone(), body.meta.get(map::META_HASH).cloned());
                tracing::debug!(service_id = %reg.id, service = %reg.service, "registered");
            }
            Op::Deregister { registration, .. } => {
                self.client.deregister(&registration.id).await?;
                self.hashes().remove(&registration.id);
                tracing::debug!(service_id = %registration.id, "deregistered");
            }
        }
        Ok(())
    }
}
