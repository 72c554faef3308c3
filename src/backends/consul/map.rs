//! Pure translation between `Registration`s and Consul's agent JSON: the
//! register body, validation before any call, the ownership rule and the
//! reading of `/v1/agent/services` entries back into registrations.
//!
//! Invariants:
//! - No I/O. Only this file and `client.rs` know Consul's field names.
//! - A registration that passes `validate` is one Consul accepts (reference
//!   §2): nothing is sent that would be refused half-way.
//! - `owned` never accepts the built-in `consul` service, a service without
//!   the `switchboard` tag, or one whose meta names another cluster.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::model::{Check, Registration};

/// Tag on every service Switchboard registers; works on every Consul version.
pub(crate) const TAG: &str = "switchboard";
pub(crate) const META_TASK: &str = "marathon_task_id";
pub(crate) const META_APP: &str = "marathon_app_id";
/// Pods only: the pod instance a registration stands for.
pub(crate) const META_POD_INSTANCE: &str = "marathon_pod_instance_id";
pub(crate) const META_MANAGED_BY: &str = "managed_by";
pub(crate) const META_CLUSTER: &str = "switchboard_cluster";
pub(crate) const META_HASH: &str = "switchboard_hash";
/// Consul's limit on a meta value (reference §2).
pub(crate) const META_VALUE_MAX: usize = 512;
/// The label a registration owes its place in Consul to.
pub(crate) const LABEL: &str = "consul";
/// The label health checks come from.
pub(crate) const CHECK_LABEL: &str = "healthChecks";

/// Why a registration cannot go to Consul, and which label is at fault.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Invalid {
    pub label: &'static str,
    pub reason: String,
}

fn invalid(label: &'static str, reason: impl Into<String>) -> Invalid {
    Invalid { label, reason: reason.into() }
}

/// Everything Consul would refuse, or that would break ownership, checked
/// before any call.
pub(crate) fn validate(reg: &Registration) -> Result<(), Invalid> {
    if reg.id.is_empty() {
        return Err(invalid(LABEL, "registration has an empty service ID"));
    }
    if reg.id == "consul" {
        return Err(invalid(LABEL, "service ID `consul` belongs to Consul itself"));
    }
    if reg.service.is_empty() {
        return Err(invalid(LABEL, "service name is empty (Consul answers `Missing service name`)"));
    }
    if reg.service == "consul" {
        return Err(invalid(LABEL, "service name `consul` is reserved for Consul's own service"));
    }
    if reg.port == 0 {
        return Err(invalid(LABEL, "port 0: the task has no usable port for this service"));
    }
    match reg.address.as_str() {
        "" => {
            return Err(invalid(LABEL, "empty address: Consul would advertise the agent's own address"));
        }
        "0.0.0.0" | "::" | "[::]" => {
            return Err(invalid(
                LABEL,
                format!("address {:?} is not routable (Consul answers `Invalid service address`)", reg.address),
            ));
        }
        _ => {}
    }
    for (what, value) in [("task id", &reg.task_id), ("app id", &reg.app_id)] {
        if value.len() > META_VALUE_MAX {
            return Err(invalid(
                LABEL,
                format!("{what} is {} characters; Consul meta values are limited to {META_VALUE_MAX}", value.len()),
            ));
        }
    }
    for check in &reg.checks {
        let (target, interval) = match check {
            Check::Http { url, interval, .. } => (url, interval),
            Check::Tcp { address, interval, .. } => (address, interval),
        };
        if target.is_empty() {
            return Err(invalid(CHECK_LABEL, "health check has no target"));
        }
        if interval.is_zero() {
            return Err(invalid(CHECK_LABEL, format!("health check on {target} has interval 0; Consul needs > 0")));
        }
    }
    Ok(())
}

/// Tags as sent and as Consul shows them: `switchboard` first, exactly once.
pub(crate) fn wire_tags(reg: &Registration) -> Vec<String> {
    let mut tags = vec![TAG.to_owned()];
    tags.extend(reg.tags.iter().filter(|t| *t != TAG).cloned());
    tags
}

/// A Go duration string Consul parses: `10s`, `1500ms`, `0s`.
pub(crate) fn go_duration(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if d.as_nanos().is_multiple_of(1_000_000) {
        format!("{}ms", d.as_millis())
    } else if d.as_nanos().is_multiple_of(1_000) {
        format!("{}us", d.as_micros())
    } else {
        format!("{}ns", d.as_nanos())
    }
}

/// Digest of everything Switchboard sends for `reg` except the digest itself
/// and the cluster, so a change Consul cannot show (the checks) is still
/// detectable. FNV-1a 64 over a length-prefixed encoding: stable across
/// builds and Rust versions.
pub(crate) fn content_hash(reg: &Registration) -> String {
    let mut enc = String::new();
    let mut push = |s: &str| {
        enc.push_str(&s.len().to_string());
        enc.push(':');
        enc.push_str(s);
    };
    push(&reg.id);
    push(&reg.service);
    push(&reg.address);
    push(&reg.port.to_string());
    push(&reg.task_id);
    push(&reg.app_id);
    for t in wire_tags(reg) {
        push(&format!("tag={t}"));
    }
    for c in &reg.checks {
        let b = check_body(c);
        push(&format!(
            "check={}|{}|{}|{}",
            b.http.unwrap_or_default(),
            b.tcp.unwrap_or_default(),
            b.interval,
            b.timeout.unwrap_or_default()
        ));
    }
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in enc.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("v1-{h:016x}")
}

/// Body of `PUT /v1/agent/service/register`.
#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct RegisterBody {
    #[serde(rename = "ID")]
    pub id: String,
    pub name: String,
    pub tags: Vec<String>,
    pub address: String,
    pub port: u16,
    pub meta: BTreeMap<&'static str, String>,
    /// Always sent, possibly empty: with `?replace-existing-checks` an empty
    /// list removes checks the registration no longer has.
    pub checks: Vec<CheckBody>,
}

#[derive(Debug, Serialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub(crate) struct CheckBody {
    #[serde(rename = "HTTP", skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    #[serde(rename = "TCP", skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    pub interval: String,
    /// Omitted when zero: Consul then uses its 10 s default.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
}

fn check_body(c: &Check) -> CheckBody {
    let timeout = |t: &Duration| (!t.is_zero()).then(|| go_duration(*t));
    match c {
        Check::Http { url, interval, timeout: t } => {
            CheckBody { http: Some(url.clone()), tcp: None, interval: go_duration(*interval), timeout: timeout(t) }
        }
        Check::Tcp { address, interval, timeout: t } => {
            CheckBody { http: None, tcp: Some(address.clone()), interval: go_duration(*interval), timeout: timeout(t) }
        }
    }
}

pub(crate) fn register_body(reg: &Registration, cluster: &str) -> RegisterBody {
    let mut meta = BTreeMap::from([
        (META_TASK, reg.task_id.clone()),
        (META_APP, reg.app_id.clone()),
        (META_MANAGED_BY, TAG.to_owned()),
        (META_CLUSTER, cluster.to_owned()),
        (META_HASH, content_hash(reg)),
    ]);
    if crate::model::is_pod_instance_id(&reg.task_id) {
        meta.insert(META_POD_INSTANCE, reg.task_id.clone());
    }
    RegisterBody {
        id: reg.id.clone(),
        name: reg.service.clone(),
        tags: wire_tags(reg),
        address: reg.address.clone(),
        port: reg.port,
        meta,
        checks: reg.checks.iter().map(check_body).collect(),
    }
}

/// One entry of `GET /v1/agent/services`, read leniently: unknown fields are
/// ignored, `Tags`/`Meta` may be null or absent (pre-1.0.7 has no `Meta`).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct AgentService {
    #[serde(rename = "ID")]
    pub id: Option<String>,
    pub service: Option<String>,
    pub tags: Option<Vec<String>>,
    pub meta: Option<BTreeMap<String, String>>,
    pub port: Option<u16>,
    pub address: Option<String>,
}

/// One instance in `/v1/catalog/service/<name>`: the service as registered
/// on its node's agent, with the node's name and address (per-host mode).
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub(crate) struct CatalogEntry {
    pub node: String,
    /// The node's address: where its agent listens.
    pub address: String,
    #[serde(rename = "ServiceID")]
    pub service_id: String,
    pub service_name: String,
    pub service_tags: Option<Vec<String>>,
    pub service_meta: Option<BTreeMap<String, String>>,
    pub service_port: Option<u16>,
    pub service_address: Option<String>,
}

impl CatalogEntry {
    /// The entry as the node's agent lists it.
    pub(crate) fn service(&self) -> AgentService {
        AgentService {
            id: Some(self.service_id.clone()),
            service: Some(self.service_name.clone()),
            tags: self.service_tags.clone(),
            meta: self.service_meta.clone(),
            port: self.service_port,
            address: self.service_address.clone(),
        }
    }
}

/// A listing entry Switchboard owns, read back.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Observed {
    pub registration: Registration,
    /// `switchboard_hash` as Consul shows it; `None` on agents without meta.
    pub hash: Option<String>,
}

/// Service IDs of a listing that are certainly someone else's, with who
/// holds them: without the `switchboard` tag, or with ownership meta naming
/// another owner or cluster. (Tagged without meta is left alone: on a
/// meta-less agent that may be ours, and the ledger decides.)
pub(crate) fn foreign_ids(
    services: &std::collections::BTreeMap<String, AgentService>,
    cluster: &str,
) -> std::collections::HashMap<String, String> {
    let mut out = std::collections::HashMap::new();
    for (key, svc) in services {
        let id = svc.id.as_deref().unwrap_or(key);
        let tagged = svc.tags.as_ref().is_some_and(|t| t.iter().any(|t| t == TAG));
        let meta = svc.meta.as_ref().filter(|m| m.contains_key(META_MANAGED_BY) || m.contains_key(META_CLUSTER));
        let ours_by_meta = meta.is_none_or(|m| {
            m.get(META_MANAGED_BY).map(String::as_str) == Some(TAG)
                && m.get(META_CLUSTER).map(String::as_str) == Some(cluster)
        });
        if !(tagged && ours_by_meta) {
            out.insert(id.to_owned(), holder(svc));
        }
    }
    out
}

/// Who holds a service that is not ours, as its listing shows it.
fn holder(svc: &AgentService) -> String {
    let meta = svc.meta.as_ref();
    let get = |k: &str| meta.and_then(|m| m.get(k)).map(String::as_str);
    match (get(META_MANAGED_BY), get(META_CLUSTER)) {
        (Some(by), Some(cluster)) => format!("managed by {by} for cluster {cluster}"),
        (Some(by), None) => format!("managed by {by}"),
        _ => {
            let tags = svc.tags.clone().unwrap_or_default();
            let name = svc.service.as_deref().unwrap_or("?");
            if tags.is_empty() {
                format!("service {name}, untagged")
            } else {
                format!("service {name}, tags {}", tags.join(","))
            }
        }
    }
}

/// Whether Switchboard of `cluster` owns the entry listed under `key`, and if
/// so the registration it shows. `ledger_entry` is what Switchboard recorded
/// registering under that ID, if anything.
pub(crate) fn owned(
    key: &str,
    svc: &AgentService,
    cluster: &str,
    ledger_entry: Option<&Registration>,
) -> Option<Observed> {
    let id = svc.id.as_deref().unwrap_or(key);
    if id == "consul" || key == "consul" {
        return None;
    }
    let tags = svc.tags.clone().unwrap_or_default();
    if !tags.iter().any(|t| t == TAG) {
        return None;
    }
    let meta = svc.meta.as_ref().filter(|m| m.contains_key(META_MANAGED_BY) || m.contains_key(META_CLUSTER));
    match meta {
        Some(m) => {
            if m.get(META_MANAGED_BY).map(String::as_str) != Some(TAG)
                || m.get(META_CLUSTER).map(String::as_str) != Some(cluster)
            {
                return None;
            }
        }
        // No ownership meta at all (a pre-1.0.7 agent dropped it): the
        // ledger is the record.
        None => {
            ledger_entry?;
        }
    }
    let from_meta = |k: &str| meta.and_then(|m| m.get(k)).cloned();
    let from_ledger = |f: fn(&Registration) -> &String| ledger_entry.map(|r| f(r).clone());
    let mut registration = Registration {
        id: id.to_owned(),
        service: svc.service.clone().unwrap_or_default(),
        app_id: from_meta(META_APP).or_else(|| from_ledger(|r| &r.app_id)).unwrap_or_default(),
        task_id: from_meta(META_TASK).or_else(|| from_ledger(|r| &r.task_id)).unwrap_or_default(),
        address: svc.address.clone().unwrap_or_default(),
        port: svc.port.unwrap_or(0),
        tags,
        consul: true,
        checks: Vec::new(),
        healthy: None,
        has_health_checks: false,
        routes: Default::default(),
        host: String::new(),
    };
    let hash = from_meta(META_HASH);
    // Consul does not list checks; carry the ledger's over when the digest
    // proves they are what Consul holds (or, without meta, trust the ledger).
    if let Some(l) = ledger_entry {
        let candidate = Registration { checks: l.checks.clone(), ..registration.clone() };
        if hash.is_none() || hash.as_deref() == Some(content_hash(&candidate).as_str()) {
            registration.checks = l.checks.clone();
        }
        registration.healthy = l.healthy;
        registration.has_health_checks = l.has_health_checks;
        registration.routes = l.routes.clone();
    }
    Some(Observed { registration, hash })
}

/// Whether Consul already shows `desired`: what Consul lists, plus the
/// digest for what it does not (checks). `observed_hash` is `Some(None)` for
/// an entry listed without meta, `None` when unknown.
pub(crate) fn same(desired: &Registration, observed: &Registration, observed_hash: Option<Option<&str>>) -> bool {
    let visible = desired.id == observed.id
        && desired.service == observed.service
        && desired.address == observed.address
        && desired.port == observed.port
        && wire_tags(desired) == observed.tags
        && desired.task_id == observed.task_id
        && desired.app_id == observed.app_id;
    visible
        && match observed_hash {
            Some(Some(h)) => h == content_hash(desired),
            Some(None) | None => desired.checks == observed.checks,
        }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    pub(crate) fn reg() -> Registration {
        Registration {
            id: "web.instance-1._app.1:31045".into(),
            service: "web".into(),
            app_id: "/shop/web".into(),
            task_id: "web.instance-1._app.1".into(),
            address: "10.0.3.17".into(),
            port: 31045,
            tags: vec!["switchboard".into(), "http".into()],
            consul: true,
            checks: vec![Check::Http {
                url: "http://10.0.3.17:31045/health".into(),
                interval: Duration::from_secs(10),
                timeout: Duration::from_millis(2500),
            }],
            healthy: None,
            has_health_checks: true,
            routes: Default::default(),
            host: String::new(),
        }
    }

    #[test]
    fn register_body_matches_consul_shape() {
        let body = serde_json::to_value(register_body(&reg(), "east")).unwrap();
        assert_eq!(
            body,
            json!({
                "ID": "web.instance-1._app.1:31045",
                "Name": "web",
                "Tags": ["switchboard", "http"],
                "Address": "10.0.3.17",
                "Port": 31045,
                "Meta": {
                    "marathon_task_id": "web.instance-1._app.1",
                    "marathon_app_id": "/shop/web",
                    "managed_by": "switchboard",
                    "switchboard_cluster": "east",
                    "switchboard_hash": content_hash(&reg()),
                },
                "Checks": [{"HTTP": "http://10.0.3.17:31045/health", "Interval": "10s", "Timeout": "2500ms"}],
            })
        );
    }

    #[test]
    fn go_durations() {
        let check = |d: Duration, want: &str| assert_eq!(go_duration(d), want);
        check(Duration::from_secs(10), "10s");
        check(Duration::from_secs(0), "0s");
        check(Duration::from_millis(1500), "1500ms");
        check(Duration::from_micros(7), "7us");
        check(Duration::from_nanos(3), "3ns");
    }

    #[test]
    fn hash_changes_with_content_only() {
        let base = content_hash(&reg());
        assert_eq!(base, content_hash(&reg()));
        assert!(base.starts_with("v1-") && base.len() == 19, "{base}");
        let mut r = reg();
        r.healthy = Some(true);
        assert_eq!(content_hash(&r), base, "health is not sent, so not hashed");
        let mut r = reg();
        r.checks[0] = Check::Tcp {
            address: "10.0.3.17:31045".into(),
            interval: Duration::from_secs(10),
            timeout: Duration::ZERO,
        };
        assert_ne!(content_hash(&r), base);
        let mut r = reg();
        r.port = 31046;
        assert_ne!(content_hash(&r), base);
    }

    #[test]
    fn tags_always_start_with_switchboard_once() {
        let mut r = reg();
        r.tags = vec!["a".into(), "switchboard".into()];
        assert_eq!(wire_tags(&r), ["switchboard", "a"]);
        r.tags.clear();
        assert_eq!(wire_tags(&r), ["switchboard"]);
    }

    #[test]
    fn validation() {
        let check = |edit: fn(&mut Registration), label: &str, reason_part: &str| {
            let mut r = reg();
            edit(&mut r);
            let err = validate(&r).expect_err(reason_part);
            assert_eq!(err.label, label);
            assert!(err.reason.contains(reason_part), "{} lacks {reason_part}", err.reason);
        };
        assert_eq!(validate(&reg()), Ok(()));
        check(|r| r.service.clear(), LABEL, "service name is empty");
        check(|r| r.service = "consul".into(), LABEL, "reserved");
        check(|r| r.port = 0, LABEL, "port 0");
        check(|r| r.address = "0.0.0.0".into(), LABEL, "not routable");
        check(|r| r.address = "::".into(), LABEL, "not routable");
        check(|r| r.address.clear(), LABEL, "empty address");
        check(|r| r.task_id = "t".repeat(513), LABEL, "task id is 513 characters");
        check(|r| r.app_id = "a".repeat(600), LABEL, "app id is 600 characters");
        check(
            |r| {
                r.checks = vec![Check::Tcp { address: "h:1".into(), interval: Duration::ZERO, timeout: Duration::ZERO }]
            },
            CHECK_LABEL,
            "interval 0",
        );
    }

    fn listed(v: serde_json::Value) -> AgentService {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn ownership() {
        let ours = listed(json!({
            "ID": "x:1", "Service": "web", "Tags": ["switchboard"], "Port": 1, "Address": "10.0.0.1",
            "Meta": {"managed_by": "switchboard", "switchboard_cluster": "east", "marathon_task_id": "x", "marathon_app_id": "/web"}
        }));
        let o = owned("x:1", &ours, "east", None).expect("ours");
        assert_eq!((o.registration.task_id.as_str(), o.registration.app_id.as_str()), ("x", "/web"));
        assert!(owned("x:1", &ours, "west", None).is_none(), "other cluster");

        let untagged = listed(json!({"ID": "x:1", "Service": "web", "Tags": null,
            "Meta": {"managed_by": "switchboard", "switchboard_cluster": "east"}}));
        assert!(owned("x:1", &untagged, "east", None).is_none());

        let consul = listed(json!({"ID": "consul", "Service": "consul", "Tags": ["switchboard"]}));
        assert!(owned("consul", &consul, "east", Some(&reg())).is_none());

        // No meta at all (pre-1.0.7): the ledger decides.
        let legacy = listed(
            json!({"ID": reg().id, "Service": "web", "Tags": ["switchboard", "http"], "Port": 31045, "Address": "10.0.3.17"}),
        );
        assert!(owned(&reg().id, &legacy, "east", None).is_none());
        let o = owned(&reg().id, &legacy, "east", Some(&reg())).expect("in ledger");
        assert_eq!(o.hash, None);
        assert!(same(&reg(), &o.registration, Some(None)));
    }
}
