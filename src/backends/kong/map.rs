//! Pure translation between `Registration`s and Kong's entities: names, tags,
//! label validation and conflicts (`select`), request bodies, and the way back
//! from what Kong shows to observed registrations.
//!
//! Invariants:
//! - No I/O here; `client.rs` fetches, this module decides.
//! - Every entity of one app has the same name, `<service>.<cluster>`: the
//!   cluster has no dots, so the suffix after the last dot always names the
//!   cluster and two (service, cluster) pairs never share a name.
//! - Observed registrations carry `routes` only when Kong's route *and* the
//!   service/api it hangs off are exactly what Switchboard would write; any
//!   drift yields `Routes::default()`, so `same` is false and the planner
//!   re-registers (which repairs).

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use crate::backends::{Rejection, Selection};
use crate::model::{Registration, Routes};

/// Tag on every entity Switchboard creates (Kong 1.1+).
pub(crate) const OWNER_TAG: &str = "switchboard";
/// Kong's own default for `strip_path` / `strip_uri`, used when the label is absent.
pub(crate) const DEFAULT_STRIP_PATH: bool = true;

/// Name of the upstream, service, route (or 0.x api) of one app.
pub(crate) fn entity_name(service: &str, cluster: &str) -> String {
    format!("{service}.{cluster}")
}

/// `switchboard`, `cluster:<cluster>`, `app:<service>`.
pub(crate) fn tags(service: &str, cluster: &str) -> Vec<String> {
    vec![OWNER_TAG.to_owned(), format!("cluster:{cluster}"), format!("app:{service}")]
}

/// Prefix of the tag naming the registration a target stands for (1.1+).
pub(crate) const ID_TAG: &str = "id:";

/// Tags of a target: the app's tags plus `id:<registration id>`, so the
/// registration can be recognised without the ledger (the id tag is left out
/// when the id is not a valid Kong tag).
pub(crate) fn target_tags(service: &str, cluster: &str, id: &str) -> Vec<String> {
    let mut t = tags(service, cluster);
    let tag = format!("{ID_TAG}{id}");
    if tag.chars().all(|c| c.is_ascii_graphic() && c != ',' && c != '/') {
        t.push(tag);
    }
    t
}

/// The registration id an entity's `id:` tag names.
pub(crate) fn id_tag(entity: &Value) -> Option<String> {
    entity["tags"].as_array()?.iter().find_map(|t| t.as_str()?.strip_prefix(ID_TAG).map(str::to_owned))
}

/// Prefix of the ids of registrations `list_owned` makes up for what Kong
/// holds but neither the ledger nor a tag explains. It sorts before every
/// real id (task ids start with an alphanumeric), so when the queue is
/// drained in id order such a target's delete runs before a register of the
/// same address, never after it.
pub(crate) const SYNTHETIC: &str = "#kong:";

/// The tag filter selecting everything this cluster owns (AND of two tags).
pub(crate) fn owner_filter(cluster: &str) -> String {
    format!("{OWNER_TAG},cluster:{cluster}")
}

/// Whether an entity carries this cluster's ownership tags; if not, who
/// holds it, as its tags say.
pub(crate) fn check_owner(entity: &Value, cluster: &str) -> Result<(), String> {
    let tags: Vec<&str> = entity["tags"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
    let cluster_tag = format!("cluster:{cluster}");
    if tags.contains(&OWNER_TAG) && tags.contains(&cluster_tag.as_str()) {
        return Ok(());
    }
    Err(if tags.is_empty() { "untagged".to_owned() } else { format!("tags {}", tags.join(",")) })
}

/// The service name an entity's `app:` tag names.
pub(crate) fn app_tag(entity: &Value) -> Option<String> {
    entity["tags"].as_array()?.iter().find_map(|t| t.as_str()?.strip_prefix("app:").map(str::to_owned))
}

/// Kong target string for an instance: `host:port`, IPv6 bracketed.
pub(crate) fn target_of(address: &str, port: u16) -> String {
    if address.contains(':') { format!("[{address}]:{port}") } else { format!("{address}:{port}") }
}

/// Splits a Kong target string back into (address, port).
pub(crate) fn split_target(t: &str) -> Option<(String, u16)> {
    let (h, p) = t.rsplit_once(':')?;
    let h = h.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(h);
    Some((h.to_owned(), p.parse().ok()?))
}

/// Routes as Kong would hold them: lower-case sorted hosts, sorted paths
/// (none = `/`), strip flag resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NormRoutes {
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub strip_path: bool,
}

pub(crate) fn normalize(r: &Routes) -> NormRoutes {
    let hosts: BTreeSet<String> =
        r.kong_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
    let paths: BTreeSet<String> = r.kong_paths.iter().map(|p| p.trim().to_owned()).filter(|p| !p.is_empty()).collect();
    NormRoutes {
        hosts: hosts.into_iter().collect(),
        paths: paths.into_iter().collect(),
        strip_path: r.kong_strip_path.unwrap_or(DEFAULT_STRIP_PATH),
    }
}

/// What `select` weighs a registration against in other apps: its service
/// name and every host and path it would publish.
pub(crate) fn conflict_keys(r: &Registration) -> Vec<String> {
    if !r.routes.wants_kong() {
        return Vec::new();
    }
    let norm = normalize(&r.routes);
    let hosts = if norm.hosts.is_empty() { vec![String::new()] } else { norm.hosts };
    let paths = if norm.paths.is_empty() { vec!["/".to_owned()] } else { norm.paths };
    let mut keys = vec![format!("service {}", r.service)];
    for h in &hosts {
        for p in &paths {
            keys.push(format!("route {h} {p}"));
        }
    }
    keys
}

/// What Kong can show for a registration: service, address, port, routes.
pub(crate) fn same(desired: &Registration, observed: &Registration) -> bool {
    desired.service == observed.service
        && desired.address == observed.address
        && desired.port == observed.port
        && desired.routes.wants_kong() == observed.routes.wants_kong()
        && normalize(&desired.routes) == normalize(&observed.routes)
}

// ---------------------------------------------------------------- validation

/// A route host as Kong accepts it: a DNS name, optionally with a port, with
/// at most one `*` as the whole leftmost or rightmost label.
pub(crate) fn check_host(h: &str) -> Result<(), String> {
    let bare = match h.rsplit_once(':') {
        Some((b, p)) if p.parse::<u16>().is_ok() => b,
        Some(_) => return Err(format!("host {h:?} has an invalid port")),
        None => h,
    };
    let stripped = match bare.matches('*').count() {
        0 => bare,
        1 => bare
            .strip_prefix("*.")
            .or_else(|| bare.strip_suffix(".*"))
            .ok_or_else(|| format!("host {h:?}: a wildcard must be the whole leftmost or rightmost label"))?,
        _ => return Err(format!("host {h:?}: at most one wildcard")),
    };
    if dns_name(stripped) { Ok(()) } else { Err(format!("host {h:?} is not a valid DNS name")) }
}

fn dns_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        })
}

/// A route path as both API generations accept it: starts with `/`, no empty
/// segment, only RFC 3986 characters.
pub(crate) fn check_path(p: &str) -> Result<(), String> {
    if !p.starts_with('/') {
        return Err(format!("path {p:?} must start with '/'"));
    }
    if p.contains("//") {
        return Err(format!("path {p:?} has an empty segment"));
    }
    let ok = p.chars().all(|c| c.is_ascii_alphanumeric() || "-._~/!$&'()*+,;=:@%".contains(c));
    if ok { Ok(()) } else { Err(format!("path {p:?} has characters Kong does not accept")) }
}

/// The service name becomes an upstream host name and an `app:` tag.
pub(crate) fn check_service_name(service: &str, cluster: &str) -> Result<(), String> {
    let name = entity_name(service, cluster);
    if dns_name(&name.to_ascii_lowercase())
        && service.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
    {
        Ok(())
    } else {
        Err(format!("service name {service:?} cannot name a Kong upstream: use lower-case DNS labels"))
    }
}

fn check_routes(r: &Registration, cluster: &str) -> Result<(), (&'static str, String)> {
    check_service_name(&r.service, cluster).map_err(|e| ("consul", e))?;
    for h in &r.routes.kong_hosts {
        check_host(h.trim()).map_err(|e| ("kong.hosts", e))?;
    }
    for p in &r.routes.kong_paths {
        check_path(p.trim()).map_err(|e| ("kong.paths", e))?;
    }
    Ok(())
}

/// Keeps primary registrations that want Kong and are healthy (when the app
/// has health checks); rejects apps with bad labels or routes another app
/// already claims (the lexically smallest app id keeps a contested route).
pub(crate) fn select(desired: &[Registration], cluster: &str) -> Selection {
    let mut sel = Selection::default();
    let mut by_app: BTreeMap<&str, Vec<&Registration>> = BTreeMap::new();
    for r in desired {
        let ready = !r.has_health_checks || r.healthy == Some(true);
        if r.routes.wants_kong() && ready {
            by_app.entry(r.app_id.as_str()).or_default().push(r);
        }
    }
    let reject = |sel: &mut Selection, app: &str, label: &str, reason: String| {
        sel.rejected.push(Rejection {
            backend: "kong".to_owned(),
            app_id: app.to_owned(),
            label: label.to_owned(),
            reason,
        });
    };
    // (host, path) → (service, app) that published it first.
    let mut claims: BTreeMap<(String, String), (String, String)> = BTreeMap::new();
    // service → (app, routes) first publishing it: apps sharing a service name must agree.
    let mut services: BTreeMap<String, (String, NormRoutes)> = BTreeMap::new();
    for (app, regs) in by_app {
        // During a deployment instances of one app may carry different labels:
        // publish one set (the most common; ties go to the smallest).
        let mut counts: BTreeMap<&Routes, usize> = BTreeMap::new();
        for r in &regs {
            *counts.entry(&r.routes).or_default() += 1;
        }
        let max = counts.values().copied().max().unwrap_or(0);
        let Some(canonical) = counts.iter().find(|(_, n)| **n == max).map(|(r, _)| (*r).clone()) else {
            continue;
        };
        let Some(first) = regs.first() else { continue };
        let mut probe = (*first).clone();
        probe.routes = canonical.clone();
        if let Err((label, reason)) = check_routes(&probe, cluster) {
            reject(&mut sel, app, label, reason);
            continue;
        }
        let norm = normalize(&canonical);
        let service = first.service.clone();
        if let Some((owner, routes)) = services.get(&service)
            && *routes != norm
        {
            let reason = format!(
                "service {service:?} is already published on Kong by app {owner} with other kong.hosts/kong.paths"
            );
            reject(&mut sel, app, "kong.hosts", reason);
            continue;
        }
        let hosts = if norm.hosts.is_empty() { vec![String::new()] } else { norm.hosts.clone() };
        let paths = if norm.paths.is_empty() { vec!["/".to_owned()] } else { norm.paths.clone() };
        let mut conflict = None;
        for h in &hosts {
            for p in &paths {
                if let Some((other_service, other_app)) = claims.get(&(h.clone(), p.clone()))
                    && *other_service != service
                {
                    conflict = Some((h.clone(), p.clone(), other_app.clone()));
                }
            }
        }
        if let Some((h, p, other)) = conflict {
            let (label, what) = if h.is_empty() {
                ("kong.paths", format!("path {p}"))
            } else {
                ("kong.hosts", format!("host {h} path {p}"))
            };
            reject(&mut sel, app, label, format!("{what} is already published on Kong by app {other}"));
            continue;
        }
        for h in &hosts {
            for p in &paths {
                claims.insert((h.clone(), p.clone()), (service.clone(), app.to_owned()));
            }
        }
        services.entry(service).or_insert_with(|| (app.to_owned(), norm));
        for r in regs {
            let mut kept = r.clone();
            kept.routes = canonical.clone();
            sel.keep.push(kept);
        }
    }
    sel
}

// ---------------------------------------------------------------- wire bodies

/// Where a Kong service (or 0.x api) sends traffic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Destination {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    /// `None` for no path or `/`.
    pub path: Option<String>,
}

impl Destination {
    pub(crate) fn from_url(u: &url::Url) -> Destination {
        let path = Some(u.path().to_owned()).filter(|p| !p.is_empty() && p != "/");
        Destination {
            scheme: u.scheme().to_owned(),
            host: u.host_str().unwrap_or_default().to_owned(),
            port: u.port_or_known_default().unwrap_or(80),
            path,
        }
    }

    /// Direct topology: the app's own upstream.
    pub(crate) fn upstream(name: &str) -> Destination {
        Destination { scheme: "http".to_owned(), host: name.to_owned(), port: 80, path: None }
    }

    pub(crate) fn from_service(s: &Value) -> Destination {
        Destination {
            scheme: s["protocol"].as_str().unwrap_or("http").to_owned(),
            host: s["host"].as_str().unwrap_or_default().to_owned(),
            port: s["port"].as_u64().and_then(|p| u16::try_from(p).ok()).unwrap_or(80),
            path: s["path"].as_str().filter(|p| !p.is_empty() && *p != "/").map(str::to_owned),
        }
    }

    pub(crate) fn url(&self) -> String {
        format!("{}://{}:{}{}", self.scheme, self.host, self.port, self.path.as_deref().unwrap_or(""))
    }
}

fn null_if_empty(v: &[String]) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

pub(crate) fn upstream_body(name: &str, tags: Option<&[String]>) -> Value {
    let mut b = json!({ "name": name });
    if let Some(t) = tags {
        b["tags"] = json!(t);
    }
    b
}

pub(crate) fn service_body(name: &str, dest: &Destination, tags: Option<&[String]>) -> Value {
    let mut b = json!({"name": name, "protocol": dest.scheme, "host": dest.host, "port": dest.port, "path": dest.path});
    if let Some(t) = tags {
        b["tags"] = json!(t);
    }
    b
}

pub(crate) fn route_body(
    name: &str,
    service_id: &str,
    routes: &NormRoutes,
    preserve_host: bool,
    tags: Option<&[String]>,
) -> Value {
    let mut b = json!({
        "name": name, "hosts": null_if_empty(&routes.hosts), "paths": null_if_empty(&routes.paths),
        "strip_path": routes.strip_path, "preserve_host": preserve_host, "service": {"id": service_id},
    });
    if let Some(t) = tags {
        b["tags"] = json!(t);
    }
    b
}

pub(crate) fn target_body(target: &str, tags: Option<&[String]>) -> Value {
    let mut b = json!({"target": target, "weight": 100});
    if let Some(t) = tags {
        b["tags"] = json!(t);
    }
    b
}

/// Kong 0.10–0.14 `/apis` object.
pub(crate) fn api_body(name: &str, routes: &NormRoutes, dest: &Destination, preserve_host: bool) -> Value {
    let mut b = json!({"name": name, "strip_uri": routes.strip_path, "preserve_host": preserve_host, "upstream_url": dest.url()});
    if !routes.hosts.is_empty() {
        b["hosts"] = json!(routes.hosts);
    }
    if !routes.paths.is_empty() {
        b["uris"] = json!(routes.paths);
    }
    b
}

// ---------------------------------------------------------------- observed

/// A route as Kong holds it (0.x: the api's `hosts`/`uris`/`strip_uri`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RouteView {
    pub hosts: Vec<String>,
    pub paths: Vec<String>,
    pub strip_path: bool,
    pub preserve_host: bool,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|x| x.as_str().map(str::to_owned)).collect()).unwrap_or_default()
}

impl RouteView {
    pub(crate) fn from_route(r: &Value) -> RouteView {
        RouteView {
            hosts: strings(&r["hosts"]),
            paths: strings(&r["paths"]),
            strip_path: r["strip_path"].as_bool().unwrap_or(DEFAULT_STRIP_PATH),
            preserve_host: r["preserve_host"].as_bool().unwrap_or(false),
        }
    }

    pub(crate) fn from_api(a: &Value) -> RouteView {
        RouteView {
            hosts: strings(&a["hosts"]),
            paths: strings(&a["uris"]),
            strip_path: a["strip_uri"].as_bool().unwrap_or(DEFAULT_STRIP_PATH),
            preserve_host: a["preserve_host"].as_bool().unwrap_or(false),
        }
    }
}

/// Everything Kong holds for one owned app, whatever the API generation.
#[derive(Debug, Clone, Default)]
pub(crate) struct ObservedApp {
    /// Entity name, `<service>.<cluster>`.
    pub name: String,
    /// Switchboard service name.
    pub service: String,
    /// Active targets (weight > 0), `host:port`.
    pub targets: Vec<String>,
    /// Target → the registration id its `id:` tag names (1.1+).
    pub target_ids: BTreeMap<String, String>,
    /// Where the Kong service (0.x: api) sends traffic; `None` if absent.
    pub destination: Option<Destination>,
    pub route: Option<RouteView>,
}

/// The routes an app's registrations show: Kong's route when it and its
/// service are what Switchboard writes, else none (forcing a re-register).
fn observed_routes(app: &ObservedApp, forward_to: Option<&Destination>) -> Routes {
    let expected = forward_to.cloned().unwrap_or_else(|| Destination::upstream(&app.name));
    match (&app.route, &app.destination) {
        (Some(route), Some(dest)) if *dest == expected && route.preserve_host == forward_to.is_some() => Routes {
            kong_hosts: route.hosts.clone(),
            kong_paths: route.paths.clone(),
            kong_strip_path: Some(route.strip_path),
            vulcand_route: None,
        },
        _ => Routes::default(),
    }
}

fn synthetic(id: String, app: &ObservedApp, app_id: &str, address: String, port: u16, routes: Routes) -> Registration {
    Registration {
        id,
        service: app.service.clone(),
        app_id: app_id.to_owned(),
        task_id: String::new(),
        address,
        port,
        tags: Vec::new(),
        consul: false,
        checks: Vec::new(),
        healthy: None,
        has_health_checks: false,
        routes,
        host: String::new(),
    }
}

/// Observed registrations from what Kong holds (see the module doc of
/// `backends::kong` for the mapping).
pub(crate) fn observed_registrations(
    apps: &[ObservedApp],
    ledger: &[Registration],
    forward_to: Option<&Destination>,
) -> Vec<Registration> {
    let mut out = Vec::new();
    for app in apps {
        let routes = observed_routes(app, forward_to);
        let recorded: Vec<&Registration> = ledger.iter().filter(|r| r.service == app.service).collect();
        let app_id = recorded.first().map(|r| r.app_id.as_str()).unwrap_or(app.service.as_str());
        let with_routes = |r: &Registration| {
            let mut r = r.clone();
            r.routes = routes.clone();
            r
        };
        if forward_to.is_some() {
            if recorded.is_empty() {
                out.push(synthetic(format!("{SYNTHETIC}{}", app.name), app, app_id, String::new(), 0, routes.clone()));
            }
            out.extend(recorded.iter().map(|r| with_routes(r)));
            continue;
        }
        let mut targets: Vec<(String, u16)> = app.targets.iter().filter_map(|t| split_target(t)).collect();
        targets.sort();
        targets.dedup();
        if targets.is_empty() {
            // App-level leftovers with no instance: the planner deletes them.
            out.push(synthetic(format!("{SYNTHETIC}{}", app.name), app, app_id, String::new(), 0, routes.clone()));
        }
        for (address, port) in targets {
            // Two ledger entries can share an address (a task replaced on the
            // same host port): the latest recorded one owns the target.
            match recorded.iter().rev().find(|r| r.address == address && r.port == port) {
                Some(r) => out.push(with_routes(r)),
                None => {
                    let target = target_of(&address, port);
                    match app.target_ids.get(&target) {
                        // Registered by Switchboard, but the ledger lost it
                        // (crash before a flush, wiped data dir).
                        Some(id) => {
                            let mut r = synthetic(id.clone(), app, app_id, address, port, routes.clone());
                            r.task_id = id.rsplit_once(':').map(|(t, _)| t.to_owned()).unwrap_or_default();
                            out.push(r);
                        }
                        None => {
                            let id = format!("{SYNTHETIC}{}:{target}", app.name);
                            out.push(synthetic(id, app, app_id, address, port, routes.clone()));
                        }
                    }
                }
            }
        }
    }
    out
}

// ---------------------------------------------------------------- ownership without tags

/// Hosts and paths as comparable sets (Kong keeps them as sent).
fn route_sets(hosts: &[String], paths: &[String]) -> (BTreeSet<String>, BTreeSet<String>) {
    (hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect(), paths.iter().map(|p| p.trim().to_owned()).collect())
}

/// Whether a route (1.0: route; 0.x: api) still publishes what Switchboard
/// wrote for the app: its hosts and paths.
fn routes_are_ours(seen: &RouteView, wrote: &NormRoutes) -> Result<(), String> {
    let (hosts, paths) = route_sets(&seen.hosts, &seen.paths);
    let (want_hosts, want_paths) = route_sets(&wrote.hosts, &wrote.paths);
    if hosts == want_hosts && paths == want_paths {
        Ok(())
    } else {
        Err(format!(
            "it publishes hosts {:?} paths {:?}, Switchboard wrote hosts {:?} paths {:?}",
            seen.hosts, seen.paths, wrote.hosts, wrote.paths
        ))
    }
}

/// Kong before 1.1 (no tags): whether a service named like ours still sends
/// traffic where Switchboard pointed it (the app's upstream, or
/// `--kong-forward-to`).
pub(crate) fn untagged_service_is_ours(service: &Value, expected: &Destination) -> Result<(), String> {
    let seen = Destination::from_service(service);
    if seen == *expected {
        Ok(())
    } else {
        Err(format!("it sends traffic to {}, Switchboard wrote {}", seen.url(), expected.url()))
    }
}

/// Kong 1.0 (no tags): whether a route named like ours still hangs off the
/// service Switchboard wrote (`service_id`: that service's id, when it is
/// ours) and publishes what it wrote (`wrote`, when the ledger recorded it).
pub(crate) fn untagged_route_is_ours(
    route: &Value,
    service_id: Option<&str>,
    wrote: Option<&NormRoutes>,
) -> Result<(), String> {
    let on = route["service"]["id"].as_str();
    if service_id.is_none() || on != service_id {
        return Err(format!("it hangs off service {}, not Switchboard's", on.unwrap_or("none")));
    }
    wrote.map_or(Ok(()), |w| routes_are_ours(&RouteView::from_route(route), w))
}

/// Kong 0.x (no tags): whether an api named like ours still sends traffic
/// where Switchboard pointed it and publishes what it wrote (`wrote`, when
/// the ledger recorded it).
pub(crate) fn api_is_ours(api: &Value, expected: &Destination, wrote: Option<&NormRoutes>) -> Result<(), String> {
    let upstream_url = api["upstream_url"].as_str().unwrap_or_default();
    let seen = url::Url::parse(upstream_url).ok().map(|u| Destination::from_url(&u));
    if seen.as_ref() != Some(expected) {
        return Err(format!("it sends traffic to {upstream_url:?}, Switchboard wrote {:?}", expected.url()));
    }
    wrote.map_or(Ok(()), |w| routes_are_ours(&RouteView::from_api(api), w))
}

/// Whether a registration stands for app-level leftovers only (no target).
pub(crate) fn is_skeleton(r: &Registration) -> bool {
    r.address.is_empty() && r.port == 0
}
