//! Publishes each app labelled `kong.hosts`/`kong.paths` on Kong, the public
//! gateway, for Kong 1.x–3.x (services/routes/upstreams/targets) and Kong
//! 0.10–0.14 (`/apis` + upstreams with append-only targets).
//!
//! # Mapping
//!
//! Kong only sees an app's *primary* registrations (those carrying
//! `routes`); every entity of one app is named `<service>.<cluster>`
//! (`map::entity_name`).
//!
//! | Switchboard | Kong 1.x–3.x | Kong 0.10–0.14 |
//! |---|---|---|
//! | app (service name) | upstream + service (`host` = upstream) + route | upstream + api (`upstream_url` = `http://<upstream>`) |
//! | primary registration | target `address:port`, weight 100 | target row `address:port`, weight 100 |
//! | `kong.hosts`/`kong.paths`/`kong.strip_path` | route `hosts`/`paths`/`strip_path` | api `hosts`/`uris`/`strip_uri` |
//! | ownership | tags `switchboard`, `cluster:<c>`, `app:<service>` (1.1+), targets also `id:<registration id>`; ledger before 1.1 | the ledger |
//!
//! Forwarding topology (`forward_to` set): per app only a service (0.x: api)
//! whose URL is `forward_to`, and a route with `preserve_host: true`; no
//! upstream, no targets: the instances live in the router behind it.
//!
//! `list_owned` returns, in direct mode, one registration per active target of
//! an owned upstream: the ledger entry with the same service, address and port
//! (the latest one if several), else a synthetic `kong:<upstream>:<host:port>`
//! so the planner deletes it. An owned app with no active target yields one
//! synthetic `kong:<name>` (address empty, port 0) so leftovers get removed. In
//! forwarding mode, it returns the ledger's registrations of each owned service
//! (or one synthetic `kong:<name>`). Each carries the routes Kong actually
//! holds, or none when the route or its service has drifted from what
//! Switchboard writes, so `same` turns false and a re-register repairs it.
//!
//! Invariants:
//! - Writes are idempotent: 1.x+ entities are `PUT` by name; targets are
//!   `POST`ed, a 409 (3.x) turns into a `PATCH`; deletes accept 404.
//! - Build order upstream → target → service → route; teardown route →
//!   service → upstream (which takes its targets with it).
//! - The Kong version is read once (lazily, on first use) and cached.
//! - Only entities named for this cluster (and, from 1.1, tagged for it) are
//!   ever listed, changed or deleted.

mod client;
mod config;
mod map;
pub mod settings;
#[cfg(test)]
mod tests;

use async_trait::async_trait;
use reqwest::Method;
use tracing::{debug, info, warn};

pub use config::{KongConfig, KongConfigError};

use self::client::{Caps, Client};
use self::map::{Destination, NormRoutes};
use std::collections::BTreeMap;

use crate::backends::{BackendError, Claim, Found, Op, Registry, Routing, Selection};
use crate::model::Registration;

/// The Kong backend; cheap to share behind an `Arc`.
pub struct KongBackend {
    client: Client,
    cluster: String,
    /// `Some` in the forwarding topology.
    forward_to: Option<Destination>,
    /// Detected once, on the first call that reaches Kong.
    caps: tokio::sync::OnceCell<Caps>,
    /// App-level entities (upstream, service, route) this process wrote and
    /// has not seen change since, by entity name, with the routes written:
    /// a further instance of the same app then costs one target write, not
    /// four. Cleared by every `list_owned` (so a resync re-verifies and
    /// repairs hand edits) and when an app is unpublished. A std Mutex: never
    /// held across `.await`.
    published: std::sync::Mutex<std::collections::HashMap<String, NormRoutes>>,
}

impl std::fmt::Debug for KongBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KongBackend").field("cluster", &self.cluster).field("forward_to", &self.forward_to).finish()
    }
}

impl KongBackend {
    pub fn new(cfg: KongConfig) -> Result<KongBackend, KongConfigError> {
        cfg.validate()?;
        Ok(KongBackend {
            client: Client::new(&cfg)?,
            cluster: cfg.cluster.clone(),
            forward_to: cfg.forward_to.as_ref().map(Destination::from_url),
            caps: tokio::sync::OnceCell::new(),
            published: Default::default(),
        })
    }

    /// Its write requests behind `gate`, the HA fence (see `tls::HttpClient::send`).
    pub fn gated(mut self, gate: crate::ha::Fence) -> Self {
        self.client = self.client.gated(gate);
        self
    }

    async fn caps(&self) -> Result<Caps, BackendError> {
        self.caps.get_or_try_init(|| self.client.detect()).await.copied()
    }

    fn tags(&self, caps: Caps, service: &str) -> Option<Vec<String>> {
        caps.tags.then(|| map::tags(service, &self.cluster))
    }

    fn destination(&self, name: &str) -> Destination {
        self.forward_to.clone().unwrap_or_else(|| Destination::upstream(name))
    }

    async fn register_modern(
        &self,
        caps: Caps,
        r: &Registration,
        name: &str,
        routes: &NormRoutes,
    ) -> Result<(), BackendError> {
        let tags = self.tags(caps, &r.service);
        let tags = tags.as_deref();
        let in_place = self.published_lock().get(name) == Some(routes);
        if !in_place && caps.tags {
            // Every name is checked before anything is written, so a refusal
            // leaves even our own half of the app unwritten.
            self.refuse_foreign(r, name).await?;
        }
        if self.forward_to.is_none() {
            if !in_place {
                self.client
                    .expect(
                        Method::PUT,
                        &format!("/upstreams/{name}"),
                        Some(&map::upstream_body(name, tags)),
                        &[200, 201],
                    )
                    .await?;
            }
            let target = map::target_of(&r.address, r.port);
            let targets = format!("/upstreams/{name}/targets");
            let target_tags = caps.tags.then(|| map::target_tags(&r.service, &self.cluster, &r.id));
            let body = map::target_body(&target, target_tags.as_deref());
            let a = self.client.call(Method::POST, &targets, &[], Some(&body)).await?;
            match a.status {
                200 | 201 => {}
                409 => {
                    self.client.expect(Method::PATCH, &format!("{targets}/{target}"), Some(&body), &[200]).await?;
                }
                404 if in_place => {
                    // The upstream went away behind our back (Kong's database
                    // reset, say): forget what we thought was in place and let
                    // the retry publish the app in full.
                    self.published_lock().remove(name);
                    return Err(BackendError::Transient {
                        backend: "kong",
                        what: format!("POST {targets}"),
                        message: "upstream missing; publishing the app again".to_owned(),
                    });
                }
                s => {
                    return Err(BackendError::from_status("kong", format!("POST {targets}"), s, &a.text));
                }
            }
        }
        if in_place {
            return Ok(());
        }
        let service = map::service_body(name, &self.destination(name), tags);
        let s = self.client.expect(Method::PUT, &format!("/services/{name}"), Some(&service), &[200, 201]).await?;
        let service_id = s.body["id"].as_str().unwrap_or(name).to_owned();
        let route = map::route_body(name, &service_id, routes, self.forward_to.is_some(), tags);
        self.client.expect(Method::PUT, &format!("/routes/{name}"), Some(&route), &[200, 201]).await?;
        self.published_lock().insert(name.to_owned(), routes.clone());
        Ok(())
    }

    /// A name held by someone else is a refusal, never a takeover: the
    /// upstream, service and route named `name` must each be absent or
    /// carry this cluster's ownership tags.
    async fn refuse_foreign(&self, r: &Registration, name: &str) -> Result<(), BackendError> {
        let mut kinds = vec!["services", "routes"];
        if self.forward_to.is_none() {
            kinds.insert(0, "upstreams");
        }
        for kind in kinds {
            let Some(entity) = self.client.get(&format!("/{kind}/{name}")).await? else { continue };
            if let Err(holder) = map::check_owner(&entity, &self.cluster) {
                return Err(BackendError::Permanent {
                    backend: "kong",
                    what: format!("register {} (label kong.hosts/kong.paths)", r.id),
                    message: format!(
                        "Kong {} {name:?} belongs to someone else ({holder}); Switchboard does not take over what it did not create",
                        kind.trim_end_matches('s')
                    ),
                });
            }
        }
        Ok(())
    }

    fn published_lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<String, NormRoutes>> {
        self.published.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn register_legacy(
        &self,
        caps: Caps,
        r: &Registration,
        name: &str,
        routes: &NormRoutes,
    ) -> Result<(), BackendError> {
        if self.forward_to.is_none() {
            if self.client.get(&format!("/upstreams/{name}")).await?.is_none() {
                self.client
                    .expect(Method::POST, "/upstreams", Some(&map::upstream_body(name, None)), &[201, 409])
                    .await?;
            }
            let target = map::target_of(&r.address, r.port);
            // Targets are append-only here: post only when not already active,
            // so history does not grow on every resync.
            if !self.client.active_targets(caps, name).await?.contains(&target) {
                let body = map::target_body(&target, None);
                self.client
                    .expect(Method::POST, &format!("/upstreams/{name}/targets"), Some(&body), &[200, 201])
                    .await?;
            }
        }
        let mut api = map::api_body(name, routes, &self.destination(name), self.forward_to.is_some());
        match self.client.get(&format!("/apis/{name}")).await? {
            None => {
                self.client.expect(Method::POST, "/apis", Some(&api), &[201]).await?;
            }
            Some(current) => {
                let fields = ["hosts", "uris", "strip_uri", "preserve_host", "upstream_url"];
                let differs = fields.iter().any(|f| {
                    current.get(*f).unwrap_or(&serde_json::Value::Null)
                        != api.get(*f).unwrap_or(&serde_json::Value::Null)
                });
                if differs {
                    api["id"] = current["id"].clone();
                    api["created_at"] = current["created_at"].clone();
                    self.client.expect(Method::PUT, "/apis", Some(&api), &[200]).await?;
                }
            }
        }
        Ok(())
    }

    /// Whose the entity at `path` is now (Kong 1.1+, tags).
    async fn holder(&self, path: &str) -> Result<Holder, BackendError> {
        Ok(match self.client.get(path).await? {
            None => Holder::Absent,
            Some(entity) => match map::check_owner(&entity, &self.cluster) {
                Ok(()) => Holder::Ours,
                Err(tags) => Holder::Foreign(tags),
            },
        })
    }

    /// Deletes the entity at `path` if it is still ours. On a Kong with tags
    /// its owner is read first (without tags, `known` holds what
    /// `judge_untagged` found): absent means nothing to delete, and a name
    /// someone else holds now (another team recreated it after ours went) is
    /// left alone and logged; either way the deregistration is done, so the
    /// ledger lets go of it and it is not retried. `known`: what an earlier
    /// read of the same path found.
    async fn delete_own(
        &self,
        caps: Caps,
        r: &Registration,
        kind: &'static str,
        path: &str,
        known: Option<Holder>,
    ) -> Result<bool, BackendError> {
        let holder = match known {
            Some(h) => Some(h),
            None if caps.tags => Some(self.holder(path).await?),
            None => None,
        };
        if let Some(holder) = holder {
            match holder {
                Holder::Absent => return Ok(false),
                Holder::Foreign(tags) => {
                    warn!(
                        service = %r.service,
                        entity = %kind,
                        path = %path,
                        holder = %tags,
                        "left alone on deregistration: the name is held by someone else now"
                    );
                    return Ok(false);
                }
                Holder::Ours => {}
            }
        }
        self.client.expect(Method::DELETE, path, None, &[200, 204, 404]).await?;
        Ok(true)
    }

    async fn deregister(&self, caps: Caps, r: &Registration, service_empty: bool) -> Result<(), BackendError> {
        let name = map::entity_name(&r.service, &self.cluster);
        let upstream_path = format!("/upstreams/{name}");
        let with_target = self.forward_to.is_none() && !map::is_skeleton(r);
        // Without tags the ledger said ours; the content must say so too
        // (read once for the target and the app-level entities).
        let mut untagged = if !caps.tags && (with_target || service_empty) {
            Some(self.judge_untagged(caps, r, &name).await?)
        } else {
            None
        };
        // The upstream's owner decides about its targets (and, read once,
        // about the upstream itself below).
        let mut upstream = None;
        if with_target {
            let target = map::target_of(&r.address, r.port);
            let path = format!("{upstream_path}/targets/{target}");
            // A target is judged by its upstream: in ours it is ours (a stray
            // one added by hand is repaired, as `list_owned` reports it), in
            // an upstream someone else holds now it is theirs.
            let known = match &untagged {
                Some(judged) => judged.get("upstream").cloned(),
                None => Some(self.holder(&upstream_path).await?),
            };
            upstream.clone_from(&known);
            let deleted = self.delete_own(caps, r, "target", &path, known).await?;
            if deleted {
                info!(service = %r.service, target = %target, "deregistered target");
            }
        }
        if service_empty {
            self.published_lock().remove(&name);
            let app_level: &[(&'static str, &str)] = if caps.legacy {
                &[("api", "/apis"), ("upstream", "/upstreams")]
            } else {
                &[("route", "/routes"), ("service", "/services"), ("upstream", "/upstreams")]
            };
            for (kind, collection) in app_level {
                let path = format!("{collection}/{name}");
                let known = match untagged.as_mut() {
                    Some(judged) => judged.remove(kind),
                    None if *kind == "upstream" => upstream.take(),
                    None => None,
                };
                self.delete_own(caps, r, kind, &path, known).await?;
            }
            info!(service = %r.service, name = %name, "unpublished app");
        }
        Ok(())
    }

    /// Kong before 1.1 (no tags): whose each app-level entity named `name`
    /// is now, by what it holds: the api (0.x) or the service and route
    /// (1.0) must send traffic where Switchboard pointed them and publish
    /// the hosts and paths the ledger recorded. The upstream has nothing of
    /// its own to judge by: it goes with the api or service of its name (one
    /// someone else holds now keeps it).
    async fn judge_untagged(
        &self,
        caps: Caps,
        r: &Registration,
        name: &str,
    ) -> Result<std::collections::HashMap<&'static str, Holder>, BackendError> {
        // A registration `list_owned` made up (a target no ledger entry
        // explains) carries the routes Kong showed, not what Switchboard
        // wrote: only where traffic goes is judged then.
        let wrote = (!r.id.starts_with(map::SYNTHETIC)).then(|| map::normalize(&r.routes));
        let wrote = wrote.as_ref();
        let dest = self.destination(name);
        let mut judged = std::collections::HashMap::new();
        let verdict = |v: Result<(), String>| match v {
            Ok(()) => Holder::Ours,
            Err(why) => Holder::Foreign(why),
        };
        let front = if caps.legacy {
            let api = match self.client.get(&format!("/apis/{name}")).await? {
                None => Holder::Absent,
                Some(api) => verdict(map::api_is_ours(&api, &dest, wrote)),
            };
            judged.insert("api", api.clone());
            api
        } else {
            let service = self.client.get(&format!("/services/{name}")).await?;
            let service_holder = match &service {
                None => Holder::Absent,
                Some(s) => verdict(map::untagged_service_is_ours(s, &dest)),
            };
            let service_id = match (&service, &service_holder) {
                (Some(s), Holder::Ours) => s["id"].as_str(),
                _ => None,
            };
            let route = match self.client.get(&format!("/routes/{name}")).await? {
                None => Holder::Absent,
                Some(route) => verdict(map::untagged_route_is_ours(&route, service_id, wrote)),
            };
            judged.insert("route", route);
            judged.insert("service", service_holder.clone());
            service_holder
        };
        let upstream = match front {
            Holder::Foreign(why) => Holder::Foreign(format!(
                "the {} of its name is someone else's now ({why})",
                if caps.legacy { "api" } else { "service" }
            )),
            Holder::Ours | Holder::Absent => Holder::Ours,
        };
        judged.insert("upstream", upstream);
        Ok(judged)
    }

    /// Kong before 1.1 (no tags): whose the app-level names `reg` would
    /// write are, before the service's first write. Any of them present is
    /// someone else's (the ledger and intents, which make a service ours,
    /// were asked first).
    async fn claim_untagged(&self, caps: Caps, reg: &Registration) -> Result<Claim, BackendError> {
        let name = map::entity_name(&reg.service, &self.cluster);
        let mut kinds = if caps.legacy { vec!["apis"] } else { vec!["services", "routes"] };
        if self.forward_to.is_none() {
            kinds.push("upstreams");
        }
        for kind in kinds {
            if self.client.get(&format!("/{kind}/{name}")).await?.is_some() {
                return Ok(Claim::Held(format!(
                    "Kong {} {name:?} exists but is not in Switchboard's ledger: it belongs to someone else, and Switchboard does not take over what it did not create (Kong {}.{} has no tags; after a lost data dir see `switchboard adopt`)",
                    kind.trim_end_matches('s'),
                    caps.version.0,
                    caps.version.1
                )));
            }
        }
        Ok(Claim::Free)
    }
}

/// Whose an entity named like ours is, as its tags say (Kong 1.1+).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Holder {
    Absent,
    Ours,
    /// Someone else's: its tags (or `untagged`); before 1.1 (no tags), how
    /// its content differs from what Switchboard wrote.
    Foreign(String),
}

/// Kong among the kinds of backend (`backends::KINDS`).
pub const KIND: crate::backends::Kind = crate::backends::Kind {
    name: "kong",
    concurrency: 16,
    credentials: Some("SWITCHBOARD_KONG_TOKEN"),
    self_described: false,
    file_keys: crate::settings::field_names::<settings::File>,
    settings: settings::merge,
    build: settings::build,
};

impl Routing for KongBackend {
    fn name(&self) -> &'static str {
        "kong"
    }

    fn select(&self, desired: &[Registration]) -> Selection {
        map::select(desired, &self.cluster)
    }

    /// Apps sharing a service name must agree on its routes, and two apps
    /// may claim one host and path (the smallest app id keeps it).
    fn conflict_keys(&self, reg: &Registration) -> Vec<String> {
        map::conflict_keys(reg)
    }

    fn lane(&self, _reg: &Registration) -> Option<String> {
        None
    }

    fn same(&self, desired: &Registration, observed: &Registration) -> bool {
        map::same(desired, observed)
    }
}

#[async_trait]
impl Registry for KongBackend {
    async fn list_owned(&self, ledger: &[Registration]) -> Result<Vec<Registration>, BackendError> {
        let caps = self.caps().await?;
        self.published_lock().clear();
        let apps = if caps.tags {
            self.client.observe_tagged(caps, &self.cluster).await?
        } else {
            let mut services: Vec<String> = ledger.iter().map(|r| r.service.clone()).collect();
            services.sort();
            services.dedup();
            self.client.observe_by_name(caps, &self.cluster, &services).await?
        };
        let observed = map::observed_registrations(&apps, ledger, self.forward_to.as_ref());
        debug!(apps = apps.len(), registrations = observed.len(), "listed kong");
        Ok(observed)
    }

    async fn apply(&self, op: &Op) -> Result<(), BackendError> {
        let caps = self.caps().await?;
        match op {
            Op::Register(r) => {
                if !r.routes.wants_kong() {
                    return Err(BackendError::Permanent {
                        backend: "kong",
                        what: format!("register {}", r.id),
                        message: "registration carries no kong routes".to_owned(),
                    });
                }
                let name = map::entity_name(&r.service, &self.cluster);
                let routes = map::normalize(&r.routes);
                if caps.legacy {
                    self.register_legacy(caps, r, &name, &routes).await?;
                } else {
                    self.register_modern(caps, r, &name, &routes).await?;
                }
                info!(service = %r.service, id = %r.id, "registered");
                Ok(())
            }
            Op::Deregister { registration, service_empty } => self.deregister(caps, registration, *service_empty).await,
        }
    }

    async fn claim(&self, reg: &Registration) -> Result<Claim, BackendError> {
        let caps = self.caps().await?;
        if caps.tags { Ok(Claim::Tagged) } else { self.claim_untagged(caps, reg).await }
    }

    /// Kong before 1.1 (no tags): apis, services, routes and upstreams
    /// named `<service>.<cluster>`, and the active targets of those
    /// upstreams. With tags: nothing (tags say what is ours).
    async fn adoptable(&self, desired: &[Registration]) -> Result<Vec<Found>, BackendError> {
        let caps = self.caps().await?;
        if caps.tags {
            return Ok(Vec::new());
        }
        let kinds: &[(&'static str, &str)] = if caps.legacy {
            &[("api", "/apis"), ("upstream", "/upstreams")]
        } else {
            &[("service", "/services"), ("route", "/routes"), ("upstream", "/upstreams")]
        };
        let suffix = format!(".{}", self.cluster);
        let mut named: BTreeMap<String, Vec<(&'static str, String)>> = BTreeMap::new();
        for (kind, path) in kinds {
            for e in self.client.list_all(path, None).await? {
                let Some(name) = e["name"].as_str() else { continue };
                let Some(service) = name.strip_suffix(&suffix) else { continue };
                if map::check_service_name(service, &self.cluster).is_ok() {
                    named.entry(service.to_owned()).or_default().push((*kind, name.to_owned()));
                }
            }
        }
        let services: Vec<String> = named.keys().cloned().collect();
        let apps = self.client.observe_by_name(caps, &self.cluster, &services).await?;
        // Desired registrations stand for the ledger: a target one of them
        // explains is owned through it; any other through a made-up entry
        // its app's plan removes (`map::observed_registrations`).
        let wanted: Vec<Registration> = desired.iter().filter(|r| named.contains_key(&r.service)).cloned().collect();
        let mut regs = map::observed_registrations(&apps, &wanted, self.forward_to.as_ref());
        // In place: the very registration the planner wants, so the next
        // `run` has nothing to rewrite.
        for r in &mut regs {
            if let Some(d) = wanted.iter().find(|d| d.id == r.id)
                && map::same(d, r)
            {
                *r = d.clone();
            }
        }
        let mut found = Vec::new();
        for (service, entities) in named {
            let name = map::entity_name(&service, &self.cluster);
            let mut mine: Vec<Registration> = Vec::new();
            regs.retain(|r| {
                if r.service == service {
                    mine.push(r.clone());
                    false
                } else {
                    true
                }
            });
            // An app without targets is owned through one skeleton entry.
            let skeleton = mine.iter().position(map::is_skeleton).map(|i| mine.remove(i));
            for (i, (entity, id)) in entities.into_iter().enumerate() {
                let registration = if i == 0 { skeleton.clone() } else { None };
                found.push(Found { entity, id, service: service.clone(), registration });
            }
            for r in mine {
                let (entity, id) = if self.forward_to.is_none() {
                    ("target", format!("{name}/{}", map::target_of(&r.address, r.port)))
                } else {
                    ("instance", r.id.clone())
                };
                found.push(Found { entity, id, service: service.clone(), registration: Some(r) });
            }
        }
        Ok(found)
    }

    fn heartbeat_interval(&self) -> Option<std::time::Duration> {
        None
    }

    async fn heartbeat(&self, _ledger: &[Registration]) -> Result<(), BackendError> {
        Ok(())
    }
}
