//! The catalog of a simulated datacenter: several agent simulators (each its
//! own node, on its own loopback address) that share one `SimCatalog` answer
//! `/v1/catalog/services` and `/v1/catalog/service/<name>` with the services
//! of every node, each entry carrying its node's name and address, as
//! Consul's servers do. An agent without a catalog is a datacenter of one.
//!
//! Invariants:
//! - A stopped agent's services stay in the catalog (Consul keeps a failed
//!   node's services until the node is reaped).
//! - Members are held weakly: a dropped simulator leaves the catalog.
//! - Each member's state lock is taken alone, never two at once.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, Weak};

use serde_json::{Value, json};

use super::{Shared, builtin_consul};

/// A shared catalog; clone it into the options of every agent of one datacenter.
#[derive(Clone, Default)]
pub struct SimCatalog {
    members: Arc<Mutex<Vec<Weak<Shared>>>>,
}

impl std::fmt::Debug for SimCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimCatalog").finish_non_exhaustive()
    }
}

impl SimCatalog {
    pub fn new() -> SimCatalog {
        SimCatalog::default()
    }

    pub(super) fn join(&self, member: &Arc<Shared>) {
        self.lock().push(Arc::downgrade(member));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Weak<Shared>>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self) -> Vec<Arc<Shared>> {
        self.lock().iter().filter_map(Weak::upgrade).collect()
    }
}

/// The agents whose services `shared`'s catalog shows.
fn members(shared: &Arc<Shared>) -> Vec<Arc<Shared>> {
    match &shared.opts.catalog {
        Some(c) => c.live(),
        None => vec![shared.clone()],
    }
}

/// `GET /v1/catalog/services`: name → union of tags.
pub(super) fn services(shared: &Arc<Shared>) -> Value {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    out.insert("consul".to_owned(), BTreeSet::new());
    for m in members(shared) {
        let st = m.lock();
        for s in st.services.values() {
            out.entry(s.name.clone()).or_default().extend(s.tags.iter().cloned());
        }
    }
    json!(out)
}

/// `GET /v1/catalog/service/<name>[?tag=t]`: every instance on every node.
pub(super) fn service(shared: &Arc<Shared>, name: &str, tag: Option<&str>) -> Value {
    let mut out = Vec::new();
    for m in members(shared) {
        let (node, address) = (m.node(), m.address());
        let st = m.lock();
        let mut listings: Vec<Value> = Vec::new();
        if name == "consul" {
            listings.push(builtin_consul());
        }
        listings.extend(st.services.values().filter(|s| s.name == name).map(|s| s.listing(!st.no_meta)));
        for l in listings {
            let tags = l["Tags"].as_array().cloned().unwrap_or_default();
            if let Some(t) = tag
                && !tags.iter().any(|x| x == t)
            {
                continue;
            }
            out.push(json!({
                "Node": node, "Address": address, "Datacenter": "dc1", "NodeMeta": {},
                "ServiceID": l["ID"], "ServiceName": l["Service"], "ServiceTags": l["Tags"],
                "ServiceAddress": l["Address"], "ServicePort": l["Port"],
                "ServiceMeta": l.get("Meta").cloned().unwrap_or(json!({})),
                "ServiceWeights": l["Weights"], "ServiceEnableTagOverride": l["EnableTagOverride"],
            }));
        }
    }
    Value::Array(out)
}
