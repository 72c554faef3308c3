//! `switchboard adopt`: the explicit, reviewable way back after a lost data
//! dir on backends whose ledger is the only record of ownership (Vulcand,
//! Kong before 1.1). It lists what those backends hold under this cluster's
//! naming scheme, shows what it would record as Switchboard's, and records
//! it in the store's ledger only when asked to (`--yes`).
//!
//! Invariants:
//! - Nothing is adopted anywhere else: the daemon and `reconcile --once`
//!   refuse a name they hold no record of, and this is the only command that
//!   turns such names into records.
//! - It writes to no backend: it reads them, and Marathon's snapshot to learn
//!   which app and registration each entity stands for; the only write is to
//!   the real store, and only when recording (the snapshot's facts, as `run`
//!   would store them, then the ledger entries and intents). A dry run plans
//!   in a scratch store.
//! - What it records is what `run` would have written: ledger entries
//!   (`Store::import_ledger`) keyed by app and registration id, and an intent
//!   per service (`Store::intend`), so the next `run` owns the names, keeps
//!   what Marathon still runs and removes the rest.
//! - While a daemon of the cluster holds the HA lock it records nothing
//!   (`once`'s check, exit 2) unless forced.

use std::collections::BTreeSet;

use anyhow::Context;
use serde::Serialize;

use crate::backends::Found;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::reconcile::planner::{DirtySet, PlanInputs, Planner};
use crate::store::{Store, StoreHandle};

/// A daemon of the cluster leads: `adopt --yes` records nothing beside it.
#[derive(Debug, thiserror::Error)]
#[error(
    "a daemon leads cluster {cluster}: {holder} holds the HA lock {key}; adopt records nothing beside it (stop the daemons first; --dry-run only lists, --force records anyway)"
)]
pub struct BesideALeader {
    pub cluster: String,
    pub key: String,
    pub holder: crate::ha::Holder,
}

/// One entity found, and what happens to it.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub backend: String,
    pub entity: String,
    pub id: String,
    pub service: String,
    /// The app whose ledger entry would own it (instance-level entities).
    pub app_id: Option<String>,
    /// The registration id of that entry.
    pub registration: Option<String>,
    /// `adopt` (or `adopted`), or `owned already`.
    pub action: String,
}

/// What `adopt` found and did.
#[derive(Debug, Serialize)]
pub struct AdoptReport {
    /// Whether the rows were recorded.
    pub recorded: bool,
    pub rows: Vec<Row>,
    /// Backends with nothing to adopt by design (their tags or meta say
    /// what is ours), with why.
    pub skipped: Vec<(String, String)>,
}

impl AdoptReport {
    /// The table a person reviews.
    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if self.rows.is_empty() {
            out.push_str(
                "nothing to adopt: no entity of this cluster's naming scheme that Switchboard has no record of\n",
            );
        } else {
            let _ =
                writeln!(out, "{:<8} {:<9} {:<16} {:<20} {:<14} ID", "BACKEND", "ENTITY", "SERVICE", "APP", "ACTION");
            for r in &self.rows {
                let _ = writeln!(
                    out,
                    "{:<8} {:<9} {:<16} {:<20} {:<14} {}",
                    r.backend,
                    r.entity,
                    r.service,
                    r.app_id.as_deref().unwrap_or("-"),
                    r.action,
                    r.id
                );
            }
        }
        for (b, why) in &self.skipped {
            let _ = writeln!(out, "{b}: nothing to adopt ({why})");
        }
        let todo = self.rows.iter().filter(|r| r.action != "owned already").count();
        if self.recorded && todo > 0 {
            let _ =
                writeln!(out, "\nrecorded {todo} entities as Switchboard's: the next `switchboard run` manages them");
        } else if todo > 0 {
            let _ = writeln!(
                out,
                "\ndry run: nothing recorded; run again with --yes to record these {todo} entities as Switchboard's"
            );
        }
        out
    }
}

/// Lists the adoptable entities of every configured backend and, with
/// `record`, records them in the store's ledger. With `record` and without
/// `force`, first refuses while a daemon of this cluster holds the HA lock.
pub async fn adopt(cfg: &Config, record: bool, force: bool) -> anyhow::Result<AdoptReport> {
    if record
        && !force
        && let Err(e) = crate::once::refuse_beside_a_leader(cfg).await
    {
        return Err(match e.downcast::<crate::ha::DaemonLeads>() {
            Ok(l) => BesideALeader { cluster: l.cluster, key: l.key, holder: l.holder }.into(),
            Err(e) => e,
        });
    }
    let real = StoreHandle::spawn(
        Store::open(&cfg.data_dir).context("opening the store (is a daemon using this --data-dir? stop it first)")?,
    )?;
    // Recording: Marathon's facts go into the real store too, as the daemon
    // would have them, so the next `run` plans the adopted entries against
    // what Marathon runs from its first pass (with an empty store it would
    // take every adopted entry for an instance that is gone).
    let _scratch;
    let planning = if record {
        real.clone()
    } else {
        let dir = tempfile::Builder::new().prefix("switchboard-adopt-").tempdir().context("a scratch store")?;
        let scratch = StoreHandle::spawn(Store::open(dir.path()).context("opening a scratch store")?)?;
        _scratch = dir;
        scratch
    };
    let desired = desired(cfg, &planning).await?;
    let backends = crate::daemon::build_backends(cfg, &crate::ha::Fence::always())?;
    let mut report = AdoptReport { recorded: false, rows: Vec::new(), skipped: Vec::new() };
    let mut records: Vec<(&'static str, Vec<crate::model::Registration>, BTreeSet<String>)> = Vec::new();
    for b in &backends {
        let name = b.name();
        if crate::backends::kind(name).is_some_and(|k| k.self_described) {
            report.skipped.push((name.to_owned(), "its tags and meta say what is Switchboard's".to_owned()));
            continue;
        }
        let wanted: Vec<_> = desired.iter().filter(|(b, _)| *b == name).flat_map(|(_, w)| w.iter().cloned()).collect();
        let found = b.registry.adoptable(&wanted).await.with_context(|| format!("listing {name}"))?;
        if found.is_empty() {
            continue;
        }
        let (ledger, intents) = real.call(move |s| Ok((s.ledger(name)?, s.intents(name)?))).await?;
        let held_ids: BTreeSet<&str> = ledger.iter().map(|r| r.id.as_str()).collect();
        let held_services: BTreeSet<&str> =
            ledger.iter().map(|r| r.service.as_str()).chain(intents.iter().map(String::as_str)).collect();
        let mut regs = Vec::new();
        let mut services = BTreeSet::new();
        for Found { entity, id, service, registration } in found {
            let owned = match &registration {
                Some(r) => held_ids.contains(r.id.as_str()),
                None => held_services.contains(service.as_str()),
            };
            let row = Row {
                backend: name.to_owned(),
                entity: entity.to_owned(),
                id,
                service: service.clone(),
                app_id: registration.as_ref().map(|r| r.app_id.clone()),
                registration: registration.as_ref().map(|r| r.id.clone()),
                action: if owned { "owned already" } else { "adopt" }.to_owned(),
            };
            report.rows.push(row);
            if owned {
                continue;
            }
            if !held_services.contains(service.as_str()) {
                services.insert(service);
            }
            regs.extend(registration);
        }
        records.push((name, regs, services));
    }
    if record {
        for (name, regs, services) in records {
            real.call(move |s| {
                s.import_ledger(name, &regs)?;
                for service in &services {
                    s.intend(name, service)?;
                }
                Ok(())
            })
            .await?;
        }
        real.flush().await?;
        report.recorded = true;
        for row in report.rows.iter_mut().filter(|r| r.action == "adopt") {
            row.action = "adopted".to_owned();
        }
        tracing::info!(entities = report.rows.len(), "adopted");
    }
    Ok(report)
}

/// What each backend should hold by Marathon's snapshot now: the snapshot
/// into `store`, then one planning pass over every app (facts, pending and
/// rejections only: a pass writes no op and no ledger entry).
async fn desired(
    cfg: &Config,
    store: &StoreHandle,
) -> anyhow::Result<Vec<(&'static str, Vec<crate::model::Registration>)>> {
    let metrics = Metrics::new();
    let core = crate::daemon::build_core(cfg, store.clone(), metrics.clone(), &crate::ha::Fence::always())?;
    crate::reconcile::resync::refresh_from_marathon(&core).await.context("reading Marathon's snapshot")?;
    let inputs = PlanInputs {
        routing: core.backends.iter().map(|b| b.routing.clone()).collect(),
        labels: core.labels.clone(),
        metrics,
    };
    let wants = store
        .call(move |s| {
            let apps = Planner::apps_of(s, &inputs, DirtySet::everything()).map_err(crate::reconcile::into_store)?;
            Planner::default().pass(s, &inputs, &apps, 1).map_err(crate::reconcile::into_store)
        })
        .await?;
    Ok(wants.into_iter().map(|(b, ws)| (b, ws.into_iter().flat_map(|w| w.keep).collect())).collect())
}
