//! Vulcand backend: routes each app through the internal router, one Vulcand
//! backend per service with one server per serving instance, and one
//! frontend carrying the app's route.
//!
//! # Ids
//!
//! | object | id | example |
//! |---|---|---|
//! | backend | `sb.<cluster>.<service>~` | `sb.default.shop-web~` |
//! | frontend | same as its backend | `sb.default.shop-web~` |
//! | server | `<task id>:<port>~` inside its backend | `shop_web.instance-8c._app.1:31045~` |
//!
//! Parts are escaped by [`map::escape`]: every character outside
//! `[A-Za-z0-9_.-]` becomes `%XX` (dots too, in the cluster part), so `~`
//! appears only as the final character. Hence **no id is a prefix of
//! another**: if `a` were a proper prefix of `b`, `b` would contain `a`'s
//! final `~` before its own end. That matters because Vulcand's etcd v3
//! engine deletes by key prefix (deleting `web` also deletes `web-api`).
//! The cluster is in backend and frontend ids, so two Switchboards of
//! different clusters never write the same object.
//!
//! # What is selected
//!
//! One server per serving instance of a service that has a valid route: the
//! instance's registration carrying the route, or, when the route rides only
//! on the app's primary registration, the instance's first registration
//! (its first port). Every kept registration carries its service's route
//! (the most common one when instances disagree, e.g. mid-deployment), so
//! the frontend does not flip between writes.
//!
//! # Invariants
//! - Vulcand has no tags: the ledger is the ownership record. `list_owned`
//!   reports only what the ledger holds, and nothing outside it is ever
//!   deleted; a foreign backend is invisible.
//! - Deletes check ownership too: an entity is deleted only if the ledger
//!   says it is ours and its content is still what Switchboard wrote
//!   (`map::server_is_ours`, `frontend_is_ours`, `backend_is_ours`); one
//!   recreated by someone else is left alone and logged.
//! - A backend or frontend id that the ledger (or a recorded intent) does
//!   not make ours but that Vulcand holds is someone else's: `claim` says
//!   so before the first write of a service, and the registration is
//!   refused, naming what holds the id; nothing of it changes.
//! - Order of writes: backend, then server, then frontend (never a frontend
//!   without its backend); on removal: server, then frontend, then backend
//!   (Vulcand refuses to delete a backend a frontend still uses).
//! - A route Vulcand would refuse is rejected in `select`, before any call,
//!   naming the app and label.
//! - With a server TTL, `heartbeat` re-posts every ledger server each
//!   `ttl / 3`; a Switchboard that dies leaves no server behind after the TTL.
//!   A heartbeat never creates a backend or frontend (a heartbeat racing a
//!   removal must not resurrect what the ledger dropped); resync does that.

mod client;
mod config;
pub mod map;
pub mod route;
pub mod settings;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use async_trait::async_trait;
use tracing::{debug, info, warn};

use crate::backends::{BackendError, Claim, Found, Op, Registry, Rejection, Routing, Selection};
use crate::model::Registration;

pub use config::{VulcandConfig, VulcandConfigError};

const NAME: &str = "vulcand";

/// Keeps Vulcand's backends, servers and frontends in step with the
/// registrations the planner hands over.
pub struct VulcandBackend {
    client: client::Client,
    cluster: String,
    /// Whole seconds; `None` for permanent servers.
    ttl_secs: Option<u64>,
}

impl VulcandBackend {
    pub fn new(cfg: VulcandConfig) -> Result<VulcandBackend, VulcandConfigError> {
        cfg.validate()?;
        let client = client::Client::new(cfg.url, cfg.timeout, cfg.tls)
            .map_err(|e| VulcandConfigError::Client(e.to_string()))?;
        Ok(VulcandBackend { client, cluster: cfg.cluster, ttl_secs: cfg.server_ttl.map(|t| t.as_secs()) })
    }

    /// Its write requests behind `gate`, the HA fence (see `tls::HttpClient::send`).
    pub fn gated(mut self, gate: crate::ha::Fence) -> Self {
        self.client = self.client.gated(gate);
        self
    }

    fn backend_id(&self, r: &Registration) -> String {
        map::backend_id(&self.cluster, &r.service)
    }

    fn frontend_id(&self, r: &Registration) -> String {
        map::frontend_id(&self.cluster, &r.service)
    }

    /// Upserts the server. `Ok(false)` when its backend is missing: never
    /// recreated here, so a heartbeat racing a service removal cannot bring
    /// back a backend the ledger no longer holds (the server itself would
    /// expire with its TTL).
    async fn put_server(&self, r: &Registration) -> Result<bool, BackendError> {
        let bid = self.backend_id(r);
        let sid = map::server_id(&r.task_id, r.port);
        self.client.upsert_server(&bid, &map::server_pack(&sid, r, self.ttl_secs), &sid).await
    }

    async fn register(&self, r: &Registration) -> Result<(), BackendError> {
        let route = r.routes.vulcand_route.as_deref();
        if let Some(route) = route
            && let Err(e) = route::parse(route)
        {
            return Err(BackendError::Permanent {
                backend: NAME,
                what: format!("route of {}", r.app_id),
                message: format!("{route:?}: {e}"),
            });
        }
        let bid = self.backend_id(r);
        self.client.upsert_backend(&map::backend_pack(&bid), &bid).await?;
        if !self.put_server(r).await? {
            return Err(BackendError::Transient {
                backend: NAME,
                what: format!("upsert server {} in backend {bid}", map::server_id(&r.task_id, r.port)),
                message: "backend vanished while writing".to_owned(),
            });
        }
        if let Some(route) = route {
            let fid = self.frontend_id(r);
            self.client.upsert_frontend(&map::frontend_pack(&fid, &bid, route), &fid).await?;
        }
        info!(service = %r.service, id = %r.id, "registered");
        Ok(())
    }

    /// Removes the server, and with the service's last instance its
    /// frontend and backend: each only if it is still the one Switchboard
    /// wrote (the ledger says so, and so must its content: the server's URL,
    /// the frontend's backend and route, the backend's type, settings and
    /// servers). One that someone else holds now (removed by hand and
    /// recreated) is left alone with a warning, and the deregistration
    /// counts as done, so it is not retried.
    async fn deregister(&self, r: &Registration, service_empty: bool) -> Result<(), BackendError> {
        let bid = self.backend_id(r);
        let sid = map::server_id(&r.task_id, r.port);
        if let Some(server) = self.client.get_server(&bid, &sid).await? {
            match map::server_is_ours(&server.url, r) {
                Ok(()) => self.client.delete_server(&bid, &sid).await?,
                Err(why) => left_alone(r, "server", &format!("{bid}/{sid}"), &why),
            }
        }
        if service_empty {
            let fid = self.frontend_id(r);
            // A frontend someone else made under our id that routes to our
            // backend id keeps the backend in use: it stays too.
            let mut backend_in_use = false;
            if let Some(f) = self.client.get_frontend(&fid).await? {
                match map::frontend_is_ours(&f.backend_id, &f.route, &bid, r) {
                    Ok(()) => self.client.delete_frontend(&fid).await?,
                    Err(why) => {
                        backend_in_use = f.backend_id == bid;
                        left_alone(r, "frontend", &fid, &why);
                    }
                }
            }
            if let Some(backend) = self.client.get_backend(&bid).await? {
                let servers: Vec<String> = self.client.list_servers(&bid).await?.into_iter().map(|s| s.id).collect();
                let ours = map::backend_is_ours(&backend, &servers).and_then(|()| {
                    if backend_in_use {
                        Err(format!("frontend {fid:?}, someone else's now, routes to it"))
                    } else {
                        Ok(())
                    }
                });
                match ours {
                    Ok(()) => self.client.delete_backend(&bid).await?,
                    Err(why) => left_alone(r, "backend", &bid, &why),
                }
            }
        }
        info!(service = %r.service, id = %r.id, service_empty, "deregistered");
        Ok(())
    }
}

/// The one log line for an entity left alone at delete time.
fn left_alone(r: &Registration, entity: &str, id: &str, why: &str) {
    warn!(
        service = %r.service,
        registration = %r.id,
        entity = %entity,
        entity_id = %id,
        why = %why,
        "left alone on deregistration: the id is held by someone else now"
    );
}

/// Gives every kept registration its service's route, picking one when they
/// disagree (two app
/// versions during a deployment, or two apps sharing a service name): the
/// most common, ties to the smallest. Without this the frontend would flip
/// at every write.
fn settle_routes(keep: &mut [Registration]) {
    let mut counts: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for r in keep.iter() {
        if let Some(route) = r.routes.vulcand_route.as_deref() {
            *counts.entry(r.service.as_str()).or_default().entry(route).or_default() += 1;
        }
    }
    let mut chosen: HashMap<String, String> = HashMap::new();
    for (service, routes) in counts {
        if routes.len() > 1 {
            warn!(service = %service, routes = ?routes.keys().collect::<Vec<_>>(), "instances disagree on the vulcand route");
        }
        // max_by_key keeps the last maximum; iterate in reverse so ties go
        // to the smallest route.
        if let Some((route, _)) = routes.iter().rev().max_by_key(|(_, n)| **n) {
            chosen.insert(service.to_owned(), (*route).to_owned());
        }
    }
    for r in keep.iter_mut() {
        if let Some(route) = chosen.get(&r.service) {
            r.routes.vulcand_route = Some(route.clone());
        }
    }
}

/// Vulcand among the kinds of backend (`backends::KINDS`).
pub const KIND: crate::backends::Kind = crate::backends::Kind {
    name: NAME,
    concurrency: 8,
    credentials: None,
    self_described: false,
    file_keys: crate::settings::field_names::<settings::File>,
    settings: settings::merge,
    build: settings::build,
};

impl Routing for VulcandBackend {
    fn name(&self) -> &'static str {
        NAME
    }

    fn select(&self, desired: &[Registration]) -> Selection {
        let mut sel = Selection::default();
        // Services with a valid route, and the instances already covered
        // (kept, or rejected with their route).
        let mut routed: HashSet<&str> = HashSet::new();
        let mut covered: HashSet<(&str, &str)> = HashSet::new();
        for r in desired {
            let Some(route) = r.routes.vulcand_route.as_deref() else {
                continue;
            };
            if !covered.insert((r.service.as_str(), r.task_id.as_str())) {
                continue; // one server per instance
            }
            match route::parse(route) {
                Ok(_) => {
                    routed.insert(r.service.as_str());
                    sel.keep.push(r.clone());
                }
                Err(e) => sel.rejected.push(Rejection {
                    backend: NAME.to_owned(),
                    app_id: r.app_id.clone(),
                    label: map::route_label(route).to_owned(),
                    reason: format!("Vulcand would refuse route {route:?}: {e}"),
                }),
            }
        }
        // An instance of a routed service whose registrations carry no route
        // (the route rides on the app's primary registration only) still
        // serves: keep its first registration, which is its first port.
        for r in desired {
            if r.routes.vulcand_route.is_none()
                && routed.contains(r.service.as_str())
                && covered.insert((r.service.as_str(), r.task_id.as_str()))
            {
                sel.keep.push(r.clone());
            }
        }
        // One rejection per app and label is enough (every instance carries
        // the same label).
        sel.rejected.sort_by(|a, b| (&a.app_id, &a.label, &a.reason).cmp(&(&b.app_id, &b.label, &b.reason)));
        sel.rejected.dedup();
        settle_routes(&mut sel.keep);
        // Vulcand is never sent Marathon's view of health: a flip of it is
        // no write here.
        for r in &mut sel.keep {
            r.healthy = None;
        }
        sel
    }

    /// Apps sharing a service name share its frontend and its route.
    fn conflict_keys(&self, reg: &Registration) -> Vec<String> {
        vec![format!("service {}", reg.service)]
    }

    fn lane(&self, _reg: &Registration) -> Option<String> {
        None
    }

    fn same(&self, desired: &Registration, observed: &Registration) -> bool {
        desired.service == observed.service
            && desired.address == observed.address
            && desired.port == observed.port
            && desired.routes.vulcand_route == observed.routes.vulcand_route
    }
}

#[async_trait]
impl Registry for VulcandBackend {
    async fn list_owned(&self, ledger: &[Registration]) -> Result<Vec<Registration>, BackendError> {
        if ledger.is_empty() {
            return Ok(Vec::new());
        }
        let existing: HashSet<String> = self.client.list_backends().await?.into_iter().map(|b| b.id).collect();
        let frontends: HashMap<String, client::WireFrontend> =
            self.client.list_frontends().await?.into_iter().map(|f| (f.id.clone(), f)).collect();

        // Servers of each ledger backend that exists, read once per backend.
        let mut servers: HashMap<String, HashMap<String, String>> = HashMap::new();
        for r in ledger {
            let bid = self.backend_id(r);
            if servers.contains_key(&bid) || !existing.contains(&bid) {
                continue;
            }
            let list = self.client.list_servers(&bid).await?;
            servers.insert(bid, list.into_iter().map(|s| (s.id, s.url)).collect());
        }

        let mut owned = Vec::new();
        for r in ledger {
            let bid = self.backend_id(r);
            let sid = map::server_id(&r.task_id, r.port);
            let Some(url) = servers.get(&bid).and_then(|s| s.get(&sid)) else {
                continue;
            };
            let mut seen = r.clone();
            match map::parse_server_url(url) {
                Some((address, port)) => {
                    seen.address = address;
                    seen.port = port;
                }
                None => {
                    // Unreadable: report an address that never equals a
                    // desired one, so the planner rewrites it.
                    seen.address = url.clone();
                }
            }
            if r.routes.vulcand_route.is_some() {
                seen.routes.vulcand_route =
                    frontends.get(&self.frontend_id(r)).filter(|f| f.backend_id == bid).map(|f| f.route.clone());
            }
            owned.push(seen);
        }
        Ok(owned)
    }

    async fn apply(&self, op: &Op) -> Result<(), BackendError> {
        match op {
            Op::Register(r) => self.register(r).await,
            Op::Deregister { registration, service_empty } => self.deregister(registration, *service_empty).await,
        }
    }

    async fn claim(&self, r: &Registration) -> Result<Claim, BackendError> {
        let bid = self.backend_id(r);
        let fid = self.frontend_id(r);
        let not_ours = "exists but is not in Switchboard's ledger: it belongs to someone else, and Switchboard does not take over what it did not create";
        if self.client.list_backends().await?.iter().any(|b| b.id == bid) {
            let servers: Vec<String> =
                self.client.list_servers(&bid).await?.into_iter().map(|s| format!("{} {}", s.id, s.url)).collect();
            return Ok(Claim::Held(format!("Vulcand backend {bid:?} (servers {servers:?}) {not_ours}")));
        }
        if let Some(f) = self.client.list_frontends().await?.into_iter().find(|f| f.id == fid) {
            return Ok(Claim::Held(format!(
                "Vulcand frontend {fid:?} (backend {:?}, route {:?}) {not_ours}",
                f.backend_id, f.route
            )));
        }
        Ok(Claim::Free)
    }

    /// Backends and frontends with this cluster's ids, and their servers
    /// with Switchboard's server ids (anything else in them is not listed).
    async fn adoptable(&self, desired: &[Registration]) -> Result<Vec<Found>, BackendError> {
        let frontends: HashMap<String, client::WireFrontend> =
            self.client.list_frontends().await?.into_iter().map(|f| (f.id.clone(), f)).collect();
        let mut services: BTreeMap<String, bool> = BTreeMap::new();
        for b in self.client.list_backends().await? {
            if let Some(service) = map::service_of_backend_id(&self.cluster, &b.id) {
                services.insert(service, true);
            }
        }
        for id in frontends.keys() {
            if let Some(service) = map::service_of_backend_id(&self.cluster, id) {
                services.entry(service).or_insert(false);
            }
        }
        let mut found = Vec::new();
        for (service, has_backend) in services {
            let bid = map::backend_id(&self.cluster, &service);
            let route = frontends.get(&bid).filter(|f| f.backend_id == bid).map(|f| f.route.clone());
            if has_backend {
                found.push(Found { entity: "backend", id: bid.clone(), service: service.clone(), registration: None });
            }
            if frontends.contains_key(&bid) {
                found.push(Found { entity: "frontend", id: bid.clone(), service: service.clone(), registration: None });
            }
            if !has_backend {
                continue;
            }
            // Apps wanting this service: an entry no instance stands for
            // goes to the first, whose plan then removes it.
            let wanted_by = desired.iter().find(|r| r.service == service).map(|r| r.app_id.clone());
            for server in self.client.list_servers(&bid).await? {
                let Some((task_id, port)) = map::parse_server_id(&server.id) else { continue };
                let id = format!("{task_id}:{port}");
                let mut reg = match desired.iter().find(|r| r.id == id && r.service == service) {
                    Some(r) => r.clone(),
                    None => Registration {
                        id,
                        service: service.clone(),
                        app_id: wanted_by.clone().unwrap_or_else(|| service.clone()),
                        task_id,
                        address: String::new(),
                        port,
                        tags: Vec::new(),
                        consul: false,
                        checks: Vec::new(),
                        healthy: None,
                        has_health_checks: false,
                        routes: crate::model::Routes::default(),
                        host: String::new(),
                    },
                };
                // What Vulcand holds, as `list_owned` reports it.
                match map::parse_server_url(&server.url) {
                    Some((address, port)) => {
                        reg.address = address;
                        reg.port = port;
                    }
                    None => reg.address = server.url.clone(),
                }
                reg.routes.vulcand_route.clone_from(&route);
                found.push(Found {
                    entity: "server",
                    id: format!("{bid}/{}", server.id),
                    service: service.clone(),
                    registration: Some(reg),
                });
            }
        }
        Ok(found)
    }

    fn heartbeat_interval(&self) -> Option<Duration> {
        self.ttl_secs.map(|s| Duration::from_secs(s) / 3)
    }

    async fn heartbeat(&self, ledger: &[Registration]) -> Result<(), BackendError> {
        if self.ttl_secs.is_none() {
            return Ok(());
        }
        let mut first_err = None;
        for r in ledger {
            match self.put_server(r).await {
                Ok(true) => {}
                Ok(false) => {
                    debug!(service = %r.service, id = %r.id, "backend missing, left to resync")
                }
                // The lease ended: no later server of this beat may go out.
                Err(e) if e.is_fenced() => return Err(e),
                Err(e) => {
                    debug!(service = %r.service, id = %r.id, error = %e, "heartbeat failed");
                    first_err.get_or_insert(e);
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    }
}
