//! The status model: what Switchboard thinks and why, per app and instance,
//! with the live stream and resync status. `/api/status` serves it as JSON,
//! `/` renders it as HTML (`status::html`), `switchboard state` prints it.
//!
//! Invariant: `build` is pure (values in, value out, `now` passed in); `read`
//! is the one place it reads the store. Filtering (`?app=`) and paging pick
//! whole apps; totals always count everything.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::assemble::{self, AppRecord, InstanceRecord, Lack, Status};
use crate::model::{AppId, AppSpec, Registration, Timestamp};
use crate::plan::{Refusal, Rejection};
use crate::status::live::{LiveStatus, ResyncStatus, Role, StreamStatus};
use crate::store::{PendingEntry, QueuedOp, Store};

/// Apps per page on the HTML page unless `per_page` says otherwise.
pub const DEFAULT_PER_PAGE: usize = 25;

/// Which part of the model to build: `app` filters app ids (substring, any
/// case), `page` (1-based) and `per_page` page over the matching apps. No
/// `per_page`: every matching app.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Query {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub page: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub per_page: Option<usize>,
}

/// What the model was built for, and how many pages there are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PageInfo {
    pub app: Option<String>,
    pub page: usize,
    pub per_page: Option<usize>,
    pub pages: usize,
    /// Apps matching the filter (on every page).
    pub matched_apps: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Readiness {
    pub ready: bool,
    /// Why not, when not.
    pub reasons: Vec<String>,
}

/// Counts over the whole store, whatever the filter.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    pub apps: usize,
    /// Instances not dead.
    pub instances: usize,
    pub pending: usize,
    pub registered: BTreeMap<String, usize>,
    pub queued: BTreeMap<String, usize>,
    pub refused: BTreeMap<String, usize>,
}

/// Everything Switchboard knows, for the status page, `/api/status`,
/// `/state` and `switchboard state`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StatusModel {
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub generated_at: String,
    /// Leader or standby under an HA mode; `None` while every daemon acts alone.
    #[serde(default)]
    pub role: Option<Role>,
    #[serde(default)]
    pub ready: Readiness,
    #[serde(default)]
    pub stream: StreamStatus,
    #[serde(default)]
    pub resync: ResyncStatus,
    #[serde(default)]
    pub backends: Vec<String>,
    #[serde(default)]
    pub totals: Totals,
    #[serde(default)]
    pub page: PageInfo,
    pub apps: Vec<AppLine>,
    pub instances: Vec<InstanceLine>,
    pub pending: Vec<PendingLine>,
    pub ledger: BTreeMap<String, Vec<Registration>>,
    pub queue: BTreeMap<String, Vec<QueuedOp>>,
    pub rejections: Vec<Rejection>,
    /// Permanent refusals in force: not retried until their input changes.
    #[serde(default)]
    pub refusals: Vec<Refusal>,
    /// When the store last recorded a finished resync.
    pub last_resync: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AppLine {
    pub app_id: String,
    pub version: Option<String>,
    pub stopped_at: Option<String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Service names it has registered or queued, on any backend.
    #[serde(default)]
    pub services: Vec<String>,
    #[serde(default)]
    pub instances: usize,
}

/// One backend's view of one instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackendState {
    /// `registered`, `queued`, `refused` or `absent`.
    pub state: String,
    /// Queued: `register` or `deregister`; refused: the op refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub op: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempts: Option<u32>,
    /// Queued: when it is tried next (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_try: Option<String>,
    /// Queued: the last error; refused: the backend's reason.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstanceLine {
    pub instance: String,
    pub app_id: String,
    pub task_id: Option<String>,
    pub state: Option<String>,
    /// `ready`, `idle`, `dead`, or `pending: <what it lacks>`.
    pub status: String,
    /// `host:port[,port…]` (or the task IPs when it has no host ports).
    pub endpoint: Option<String>,
    pub healthy: Option<bool>,
    /// Per enabled backend.
    #[serde(default)]
    pub backends: BTreeMap<String, BackendState>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingLine {
    pub instance: String,
    pub app_id: String,
    pub lack: Lack,
    /// What it lacks, in words.
    #[serde(default)]
    pub lacks: String,
    pub since_ms: u64,
    /// How long it has waited when the model was built.
    #[serde(default)]
    pub waiting_ms: u64,
}

/// What `build` reads: the store's trees as values.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub backends: Vec<String>,
    pub instances: Vec<InstanceRecord>,
    pub apps: BTreeMap<AppId, AppRecord>,
    pub specs: BTreeMap<AppId, AppSpec>,
    pub pending: Vec<PendingEntry>,
    pub ledger: BTreeMap<String, Vec<Registration>>,
    pub queue: BTreeMap<String, Vec<QueuedOp>>,
    pub rejections: Vec<Rejection>,
    pub refusals: Vec<Refusal>,
    pub last_resync: Option<String>,
    /// Every app id, when the trees above hold only some apps' specs,
    /// ledger and queue (`read_for`).
    pub app_ids: Option<BTreeSet<String>>,
    /// Ledger and queue sizes per backend, when the trees above hold only some apps'.
    pub sizes: Option<BTreeMap<String, (usize, usize)>>,
}

/// Reads every tree `build` needs, once each.
pub fn read(store: &Store, backends: &[&str]) -> Result<Inputs, crate::store::Error> {
    let mut ledger = BTreeMap::new();
    let mut queue = BTreeMap::new();
    for b in backends {
        ledger.insert(b.to_string(), store.ledger(b)?);
        queue.insert(b.to_string(), store.queued(b)?);
    }
    let instances = store.instances()?;
    let apps = store.apps()?;
    let specs = store.newest_specs()?;
    let pending = store.pending()?;
    Ok(Inputs {
        backends: backends.iter().map(|b| b.to_string()).collect(),
        instances,
        apps,
        specs,
        pending,
        ledger,
        queue,
        rejections: store.rejections()?,
        refusals: store.all_refusals()?,
        last_resync: store.last_resync()?,
        app_ids: None,
        sizes: None,
    })
}

/// The task id a registration id `<task id>:<port>` belongs to.
fn task_of(registration_id: &str) -> &str {
    registration_id.rsplit_once(':').map_or(registration_id, |(t, _)| t)
}

fn matches(filter: Option<&str>, app_id: &str) -> bool {
    match filter.map(str::trim).filter(|f| !f.is_empty()) {
        None => true,
        Some(f) => app_id.to_lowercase().contains(&f.to_lowercase()),
    }
}

fn time_ms(ms: u64) -> String {
    Timestamp(ms as i64).to_string()
}

/// Every app the trees of `inputs` know anything of.
fn universe(inputs: &Inputs) -> BTreeSet<String> {
    let mut all: BTreeSet<String> = inputs.specs.keys().map(|a| a.to_string()).collect();
    all.extend(inputs.apps.keys().map(|a| a.to_string()));
    all.extend(inputs.instances.iter().map(|r| r.app_id.to_string()));
    all.extend(inputs.pending.iter().map(|p| p.app_id.to_string()));
    all.extend(inputs.ledger.values().flatten().map(|r| r.app_id.clone()));
    all.extend(inputs.queue.values().flatten().map(|q| q.op.registration().app_id.clone()));
    all
}

/// The apps a query picks out of `all`.
struct Selected<'a> {
    /// Apps matching the filter, on every page.
    matched: Vec<&'a str>,
    per_page: Option<usize>,
    pages: usize,
    page: usize,
    /// Apps on the page.
    shown: BTreeSet<&'a str>,
}

fn select<'a>(all: &'a BTreeSet<String>, query: &Query) -> Selected<'a> {
    let matched: Vec<&str> = all.iter().map(String::as_str).filter(|a| matches(query.app.as_deref(), a)).collect();
    let per_page = query.per_page.filter(|n| *n > 0);
    let pages = per_page.map_or(1, |n| matched.len().div_ceil(n).max(1));
    let page = query.page.unwrap_or(1).clamp(1, pages);
    let shown = match per_page {
        Some(n) => matched.iter().skip((page - 1) * n).take(n).copied().collect(),
        None => matched.iter().copied().collect(),
    };
    Selected { matched, per_page, pages, page, shown }
}

/// Like `read`, but reads specs, ledgers and queues only for the apps
/// `query` shows (a page, or a search): what the page at 10,000 instances
/// needs, instead of every registration of every backend. Totals still count
/// everything (`app_ids`, `sizes`). Without filter and paging it is `read`.
pub fn read_for(store: &Store, backends: &[&str], query: &Query) -> Result<Inputs, crate::store::Error> {
    if query.app.is_none() && query.per_page.is_none() {
        return read(store, backends);
    }
    let instances = store.instances()?;
    let apps = store.apps()?;
    let pending = store.pending()?;
    let mut all: BTreeSet<String> = apps.keys().map(|a| a.to_string()).collect();
    all.extend(instances.iter().map(|r| r.app_id.to_string()));
    all.extend(pending.iter().map(|p| p.app_id.to_string()));
    // Decoding every spec costs ~3 ms at 1,000 apps; it finds apps known by a spec alone.
    all.extend(store.newest_specs()?.keys().map(|a| a.to_string()));
    let mut sizes = BTreeMap::new();
    for b in backends {
        all.extend(store.planned_apps(b)?);
        sizes.insert(b.to_string(), (store.ledger_len(b), store.queue_len(b)));
    }
    let shown: Vec<String> = select(&all, query).shown.into_iter().map(str::to_owned).collect();
    let mut specs = BTreeMap::new();
    // Every backend has its entry, even when the shown apps hold nothing there.
    let mut ledger: BTreeMap<String, Vec<Registration>> =
        backends.iter().map(|b| (b.to_string(), Vec::new())).collect();
    let mut queue: BTreeMap<String, Vec<QueuedOp>> = backends.iter().map(|b| (b.to_string(), Vec::new())).collect();
    for app in &shown {
        if let Ok(id) = AppId::parse(app)
            && let Some(spec) = store.newest_spec(&id)?
        {
            specs.insert(id, spec);
        }
        for b in backends {
            ledger.entry(b.to_string()).or_default().extend(store.ledger_of(b, app)?);
            queue.entry(b.to_string()).or_default().extend(store.queued_of(b, app)?);
        }
    }
    Ok(Inputs {
        backends: backends.iter().map(|b| b.to_string()).collect(),
        instances,
        apps,
        specs,
        pending,
        ledger,
        queue,
        rejections: store.rejections()?,
        refusals: store.all_refusals()?,
        last_resync: store.last_resync()?,
        app_ids: Some(all),
        sizes: Some(sizes),
    })
}

/// Builds the model of the apps `query` selects. `now_ms` is the local clock
/// (for pending ages); `store_open` feeds readiness.
pub fn build(inputs: &Inputs, live: &LiveStatus, query: &Query, now_ms: u64) -> StatusModel {
    // Every app anything is known of.
    let all_apps = match &inputs.app_ids {
        Some(ids) => ids.clone(),
        None => universe(inputs),
    };
    let Selected { matched, per_page, pages, page, shown } = select(&all_apps, query);

    // Per backend, per task: what is registered, queued, refused.
    let mut registered: HashMap<(&str, &str), ()> = HashMap::new();
    let mut services: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for (b, regs) in &inputs.ledger {
        for r in regs {
            registered.insert((b.as_str(), r.task_id.as_str()), ());
            services.entry(r.app_id.as_str()).or_default().insert(r.service.as_str());
        }
    }
    let mut queued: HashMap<(&str, &str), &QueuedOp> = HashMap::new();
    for (b, ops) in &inputs.queue {
        for q in ops {
            let r = q.op.registration();
            services.entry(r.app_id.as_str()).or_default().insert(r.service.as_str());
            queued.insert((b.as_str(), r.task_id.as_str()), q);
        }
    }
    let mut refused: HashMap<(&str, &str), &Refusal> = HashMap::new();
    for r in &inputs.refusals {
        refused.insert((r.backend.as_str(), task_of(&r.entity)), r);
    }

    let mut instance_counts: BTreeMap<String, usize> = BTreeMap::new();
    let mut instances = Vec::new();
    let mut live_instances = 0;
    for rec in &inputs.instances {
        let app_id = rec.app_id.to_string();
        let status = assemble::status(rec, inputs.apps.get(&rec.app_id), inputs.specs.get(&rec.app_id));
        if status != Status::Dead {
            live_instances += 1;
            *instance_counts.entry(app_id.clone()).or_default() += 1;
        }
        if !shown.contains(app_id.as_str()) {
            continue;
        }
        let task_id = rec.location.as_ref().map(|l| l.task_id.to_string());
        let backends = inputs
            .backends
            .iter()
            .map(|b| {
                let state = match task_id.as_deref() {
                    Some(t) => backend_state(b, t, &registered, &queued, &refused),
                    None => BackendState::absent(),
                };
                (b.clone(), state)
            })
            .collect();
        instances.push(InstanceLine {
            instance: rec.instance.to_string(),
            app_id,
            task_id,
            state: rec.state.as_ref().map(|s| s.state.to_string()),
            status: match status {
                Status::Ready => "ready".to_owned(),
                Status::Idle => "idle".to_owned(),
                Status::Dead => "dead".to_owned(),
                Status::Pending(lack) => format!("pending: {lack}"),
            },
            endpoint: rec.location.as_ref().map(|l| {
                if l.ports.is_empty() {
                    format!("{} ({})", l.host, l.ip_addresses.join(","))
                } else {
                    let ports: Vec<String> = l.ports.iter().map(u16::to_string).collect();
                    format!("{}:{}", l.host, ports.join(","))
                }
            }),
            healthy: rec.health.as_ref().and_then(|h| h.healthy),
            backends,
        });
    }

    let apps = shown
        .iter()
        .map(|id| {
            let key = AppId::parse(id).ok();
            let spec = key.as_ref().and_then(|k| inputs.specs.get(k));
            AppLine {
                app_id: id.to_string(),
                version: spec.map(|s| s.version.clone()),
                stopped_at: key
                    .as_ref()
                    .and_then(|k| inputs.apps.get(k))
                    .and_then(|a| a.stopped_at)
                    .map(|t| t.to_string()),
                labels: spec.map(|s| s.labels.clone()).unwrap_or_default(),
                services: services.get(id).map(|s| s.iter().map(|x| x.to_string()).collect()).unwrap_or_default(),
                instances: instance_counts.get(*id).copied().unwrap_or(0),
            }
        })
        .collect();

    let on_page = |app: &str| shown.contains(app);
    let mut totals =
        Totals { apps: all_apps.len(), instances: live_instances, pending: inputs.pending.len(), ..Default::default() };
    for b in &inputs.backends {
        let sizes = inputs.sizes.as_ref().and_then(|s| s.get(b)).copied();
        let (ledger_len, queue_len) = sizes
            .unwrap_or_else(|| (inputs.ledger.get(b).map_or(0, Vec::len), inputs.queue.get(b).map_or(0, Vec::len)));
        totals.registered.insert(b.clone(), ledger_len);
        totals.queued.insert(b.clone(), queue_len);
        totals.refused.insert(b.clone(), inputs.refusals.iter().filter(|r| &r.backend == b).count());
    }
    let reasons = crate::status::live::not_ready_reasons(live, true);
    StatusModel {
        version: env!("CARGO_PKG_VERSION").to_owned(),
        generated_at: time_ms(now_ms),
        role: live.role.clone(),
        ready: Readiness { ready: reasons.is_empty(), reasons },
        stream: live.stream.clone(),
        resync: live.resync.clone(),
        backends: inputs.backends.clone(),
        totals,
        page: PageInfo { app: query.app.clone(), page, per_page, pages, matched_apps: matched.len() },
        apps,
        instances,
        pending: inputs
            .pending
            .iter()
            .filter(|p| on_page(p.app_id.as_str()))
            .map(|p| PendingLine {
                instance: p.instance.to_string(),
                app_id: p.app_id.to_string(),
                lack: p.lack,
                lacks: p.lack.to_string(),
                since_ms: p.since_ms,
                waiting_ms: now_ms.saturating_sub(p.since_ms),
            })
            .collect(),
        ledger: inputs
            .ledger
            .iter()
            .map(|(b, regs)| (b.clone(), regs.iter().filter(|r| on_page(&r.app_id)).cloned().collect()))
            .collect(),
        queue: inputs
            .queue
            .iter()
            .map(|(b, ops)| (b.clone(), ops.iter().filter(|q| on_page(&q.op.registration().app_id)).cloned().collect()))
            .collect(),
        rejections: inputs.rejections.iter().filter(|r| on_page(&r.app_id)).cloned().collect(),
        refusals: inputs.refusals.iter().filter(|r| on_page(&r.app_id)).cloned().collect(),
        last_resync: inputs.last_resync.clone(),
    }
}

fn backend_state(
    backend: &str,
    task: &str,
    registered: &HashMap<(&str, &str), ()>,
    queued: &HashMap<(&str, &str), &QueuedOp>,
    refused: &HashMap<(&str, &str), &Refusal>,
) -> BackendState {
    if let Some(r) = refused.get(&(backend, task)) {
        return BackendState {
            state: "refused".into(),
            op: Some(r.op.clone()),
            attempts: None,
            next_try: None,
            reason: Some(r.reason.clone()),
        };
    }
    if let Some(q) = queued.get(&(backend, task)) {
        return BackendState {
            state: "queued".into(),
            op: Some(q.op.verb().to_owned()),
            attempts: Some(q.attempts),
            next_try: (q.not_before_ms > 0).then(|| time_ms(q.not_before_ms)),
            reason: q.last_error.clone(),
        };
    }
    if registered.contains_key(&(backend, task)) {
        return BackendState { state: "registered".into(), op: None, attempts: None, next_try: None, reason: None };
    }
    BackendState::absent()
}

impl BackendState {
    fn absent() -> BackendState {
        BackendState { state: "absent".into(), op: None, attempts: None, next_try: None, reason: None }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assemble::{Folded, touches};
    use crate::labels::LabelOptions;
    use crate::marathon::event::parse;
    use crate::sim::marathon::{Model, ModelOptions};
    use crate::sim::scenario::Scenario;

    /// Three apps of two instances: app 0 registered in consul, app 1's
    /// first instance queued (2 attempts), app 2's first refused.
    fn world() -> Inputs {
        let mut m = Model::new(ModelOptions::default());
        let mut f = Folded::default();
        for i in 0..3 {
            for e in m.deploy(Scenario::app_definition(i), 2) {
                for ev in parse(&e.event_type, &e.data.to_string()).unwrap_or_default() {
                    for t in touches(&ev) {
                        f.apply(&t);
                    }
                }
            }
        }
        let regs = f.desired(&LabelOptions::default()).registrations;
        let of = |app: &str| regs.iter().filter(|r| r.app_id == app).cloned().collect::<Vec<_>>();
        let queued = QueuedOp {
            op: crate::plan::Op::Register(of("/bench/app-00001")[0].clone()),
            attempts: 2,
            not_before_ms: 5_000,
            last_error: Some("HTTP 503".into()),
        };
        let refused = &of("/bench/app-00002")[0];
        Inputs {
            backends: vec!["consul".into()],
            instances: f.instances.into_values().collect(),
            apps: f.apps,
            specs: f.specs,
            ledger: [("consul".to_owned(), of("/bench/app-00000"))].into(),
            queue: [("consul".to_owned(), vec![queued])].into(),
            refusals: vec![Refusal {
                backend: "consul".into(),
                app_id: refused.app_id.clone(),
                entity: refused.id.clone(),
                op: "register".into(),
                reason: "HTTP 403: Permission denied".into(),
                since: "2026-01-01T00:00:00Z".into(),
                input: "x".into(),
            }],
            ..Default::default()
        }
    }

    fn states(m: &StatusModel, app: &str) -> Vec<String> {
        m.instances.iter().filter(|i| i.app_id == app).map(|i| i.backends["consul"].state.clone()).collect()
    }

    #[test]
    fn each_instance_shows_what_each_backend_holds_of_it() {
        let m = build(&world(), &LiveStatus::default(), &Query::default(), 10_000);
        assert_eq!(states(&m, "/bench/app-00000"), ["registered", "registered"]);
        let mut q = states(&m, "/bench/app-00001");
        q.sort();
        assert_eq!(q, ["absent", "queued"]);
        let queued = m.instances.iter().find(|i| i.backends["consul"].state == "queued").map(|i| &i.backends["consul"]);
        assert_eq!(queued.and_then(|b| b.attempts), Some(2));
        assert_eq!(queued.and_then(|b| b.reason.as_deref()), Some("HTTP 503"));
        let refused =
            m.instances.iter().find(|i| i.backends["consul"].state == "refused").map(|i| &i.backends["consul"]);
        assert_eq!(refused.and_then(|b| b.reason.as_deref()), Some("HTTP 403: Permission denied"));
        assert_eq!((m.totals.apps, m.totals.instances), (3, 6));
        assert!(!m.ready.ready, "no resync yet: {:?}", m.ready);
    }

    #[test]
    fn reading_only_the_page_gives_the_model_of_reading_everything() {
        let w = world();
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("store");
        let mut m = Model::new(ModelOptions::default());
        let mut seq = 0;
        for i in 0..3 {
            for e in m.deploy(Scenario::app_definition(i), 2) {
                for ev in parse(&e.event_type, &e.data.to_string()).unwrap_or_default() {
                    seq += 1;
                    store.apply_touches(&touches(&ev), seq).expect("touches");
                }
            }
        }
        store.import_ledger("consul", &w.ledger["consul"]).expect("ledger");
        store.enqueue("consul", &[w.queue["consul"][0].op.clone()]).expect("queue");
        let live = LiveStatus::default();
        let json = |i: &Inputs, q: &Query| serde_json::to_value(build(i, &live, q, 7)).expect("json");
        let full = read(&store, &["consul"]).expect("read");
        for q in [
            Query { per_page: Some(2), ..Default::default() },
            Query { page: Some(2), per_page: Some(2), ..Default::default() },
            Query { app: Some("00001".into()), ..Default::default() },
            Query::default(),
        ] {
            let part = read_for(&store, &["consul"], &q).expect("read_for");
            assert_eq!(json(&part, &q), json(&full, &q), "{q:?}");
        }
    }

    #[test]
    fn a_search_and_a_page_pick_whole_apps_and_totals_count_everything() {
        let w = world();
        let live = LiveStatus::default();
        let m = build(&w, &live, &Query { app: Some("APP-00002".into()), ..Default::default() }, 0);
        assert_eq!(m.apps.iter().map(|a| a.app_id.as_str()).collect::<Vec<_>>(), ["/bench/app-00002"]);
        assert!(m.instances.iter().all(|i| i.app_id == "/bench/app-00002") && m.instances.len() == 2);
        assert_eq!((m.refusals.len(), m.ledger["consul"].len(), m.queue["consul"].len()), (1, 0, 0));
        assert_eq!(m.totals.instances, 6);
        let p = build(&w, &live, &Query { page: Some(2), per_page: Some(2), ..Default::default() }, 0);
        assert_eq!(p.apps.iter().map(|a| a.app_id.as_str()).collect::<Vec<_>>(), ["/bench/app-00002"]);
        assert_eq!((p.page.page, p.page.pages, p.page.matched_apps), (2, 2, 3));
        let past = build(&w, &live, &Query { page: Some(9), per_page: Some(2), ..Default::default() }, 0);
        assert_eq!(past.page.page, 2, "a page past the end shows the last");
    }
}
