//! `switchboard reconcile --once`: one full resync, every queued op applied
//! with bounded retries, then a report.
//!
//! Invariant: `--dry-run` writes to no backend and leaves the real store as it
//! was: it plans in a scratch store seeded with the real ledger and refusals.
//!
//! With `progress` (stderr a terminal and no `--json`, decided by `main`) a
//! progress bar (indicatif, on stderr) follows the resync and then the
//! backends' queues, op by op per backend; the report ends with a summary
//! table per backend (`BackendSummary`).
//!
//! `--retry-refused` lifts the refusals in force first. When a daemon answers
//! on `--listen` it holds the store, so it is asked instead
//! (`POST /api/retry-refused`, see `ask_daemon_to_retry`).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use serde::Serialize;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::plan::Op;
use crate::reconcile::applier::{Applier, Drain};
use crate::reconcile::planner::{DirtySet, PlanInputs, Planner};
use crate::reconcile::{now_ms, resync};
use crate::store::{Store, StoreHandle};

/// Attempts per op before `reconcile --once` gives up on it.
const MAX_ATTEMPTS: u32 = 4;

#[derive(Debug, Serialize)]
pub struct OnceReport {
    pub dry_run: bool,
    pub ops: Vec<OpLine>,
    /// Backends that could not be listed or still hold failed ops.
    pub failed_backends: Vec<(String, String)>,
    pub rejections: Vec<crate::plan::Rejection>,
    /// Permanent refusals in force: held back until their input changes.
    pub refusals: Vec<crate::plan::Refusal>,
    /// What changed per backend.
    #[serde(default)]
    pub summary: Vec<BackendSummary>,
}

/// One backend's line of the summary table.
#[derive(Debug, Default, Serialize)]
pub struct BackendSummary {
    pub backend: String,
    /// Apps with at least one op on this backend.
    pub apps: usize,
    pub registered: usize,
    pub deregistered: usize,
    /// Planned (dry run).
    pub planned: usize,
    pub refused: usize,
    pub failed: usize,
    /// Registrations the ledger holds afterwards.
    pub held: usize,
}

#[derive(Debug, Serialize)]
pub struct OpLine {
    pub backend: String,
    pub app_id: String,
    pub op: String,
    pub service: String,
    pub id: String,
    pub address: String,
    /// `planned` (dry run), `applied`, `refused: <error>` (kept, not
    /// retried until its input changes) or `failed: <error>`.
    pub result: String,
}

impl OnceReport {
    pub fn converged(&self) -> bool {
        self.failed_backends.is_empty()
            && self.ops.iter().all(|o| !o.result.starts_with("failed") && !o.result.starts_with("refused"))
    }

    pub fn render_table(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        if self.ops.is_empty() {
            out.push_str("nothing to do: every backend is in step\n");
        } else {
            let _ =
                writeln!(out, "{:<8} {:<11} {:<24} {:<21} {:<8} ID", "BACKEND", "OP", "SERVICE", "ADDRESS", "RESULT");
            for o in &self.ops {
                let _ = writeln!(
                    out,
                    "{:<8} {:<11} {:<24} {:<21} {:<8} {}",
                    o.backend, o.op, o.service, o.address, o.result, o.id
                );
            }
        }
        for (b, e) in &self.failed_backends {
            match refused_credentials(b, e) {
                Some(line) => {
                    let _ = writeln!(out, "{line}");
                }
                None => {
                    let _ = writeln!(out, "backend {b} failed: {e}");
                }
            }
        }
        for r in &self.rejections {
            let _ = writeln!(out, "rejected [{}] app {} label {}: {}", r.backend, r.app_id, r.label, r.reason);
        }
        for r in &self.refusals {
            let _ = writeln!(
                out,
                "refused [{}] app {} {} {} since {}: {}",
                r.backend, r.app_id, r.op, r.entity, r.since, r.reason
            );
        }
        if !self.summary.is_empty() {
            let _ = writeln!(out, "\nsummary{}:", if self.dry_run { " (dry run: nothing changed)" } else { "" });
            let _ = writeln!(
                out,
                "{:<8} {:>5} {:>10} {:>12} {:>7} {:>7} {:>6} {:>5}",
                "BACKEND", "APPS", "REGISTERED", "DEREGISTERED", "PLANNED", "REFUSED", "FAILED", "HELD"
            );
            for s in &self.summary {
                let _ = writeln!(
                    out,
                    "{:<8} {:>5} {:>10} {:>12} {:>7} {:>7} {:>6} {:>5}",
                    s.backend, s.apps, s.registered, s.deregistered, s.planned, s.refused, s.failed, s.held
                );
            }
        }
        out
    }

    /// Counts `ops` per backend into the summary table.
    async fn summarise(&mut self, store: &StoreHandle, backends: &[&'static str]) -> Result<(), crate::store::Error> {
        for b in backends {
            let mut s = BackendSummary { backend: b.to_string(), ..Default::default() };
            let mut apps = std::collections::BTreeSet::new();
            for o in self.ops.iter().filter(|o| o.backend == *b) {
                apps.insert(o.app_id.clone());
                match (o.op.as_str(), o.result.as_str()) {
                    (_, "planned") => s.planned += 1,
                    ("register", "applied") => s.registered += 1,
                    (_, "applied") => s.deregistered += 1,
                    (_, r) if r.starts_with("refused") => s.refused += 1,
                    _ => s.failed += 1,
                }
            }
            s.apps = apps.len();
            let b: &'static str = b;
            s.held = store.call(move |st| Ok(st.ledger_len(b))).await?;
            self.summary.push(s);
        }
        Ok(())
    }
}

/// `<backend> refused the credentials (HTTP 401|403): check <variable>` when
/// `error` says so.
pub fn refused_credentials(backend: &str, error: &str) -> Option<String> {
    let status = ["401", "403"].into_iter().find(|s| error.contains(&format!("HTTP {s}")))?;
    let var = crate::backends::kind(backend).and_then(|k| k.credentials).unwrap_or("its credentials");
    Some(format!("{backend} refused the credentials (HTTP {status}): check {var}"))
}

/// The progress bar of `reconcile --once`: hidden unless asked for.
fn progress_bar(show: bool) -> indicatif::ProgressBar {
    if !show {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::with_draw_target(Some(0), indicatif::ProgressDrawTarget::stderr());
    let style = indicatif::ProgressStyle::with_template("{spinner} {elapsed_precise} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.enable_steady_tick(Duration::from_millis(120));
    bar
}

fn line(backend: &str, op: &Op, result: String) -> OpLine {
    let r = op.registration();
    OpLine {
        backend: backend.to_owned(),
        app_id: r.app_id.clone(),
        op: op.verb().to_owned(),
        service: r.service.clone(),
        id: r.id.clone(),
        address: format!("{}:{}", r.address, r.port),
        result,
    }
}

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The daemon asked to retry refusals is an HA standby (HTTP 409): it lifted
/// nothing; the leader is the one to ask.
#[derive(Debug, thiserror::Error)]
#[error(
    "the daemon on {listen} is an HA standby and lifted nothing (HTTP 409); the leader is {}: ask it (its --listen)",
    leader.as_ref().map_or_else(|| "unknown right now".to_owned(), |l| l.to_string())
)]
pub struct AskedAStandby {
    pub listen: std::net::SocketAddr,
    pub leader: Option<crate::ha::Holder>,
}

/// Asks the daemon answering on `--listen` to lift its refusals. `None`
/// when no daemon answers there (the caller opens the store itself); an
/// error when something answers but does not do it.
pub async fn ask_daemon_to_retry(cfg: &Config) -> anyhow::Result<Option<usize>> {
    let url = format!("http://{}/api/retry-refused", cfg.listen);
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().context("http client")?;
    let resp = match client.post(&url).send().await {
        Ok(r) => r,
        Err(e) if e.is_connect() => return Ok(None),
        Err(e) => {
            return Err(anyhow::anyhow!("the daemon on {} did not answer POST /api/retry-refused: {e}", cfg.listen));
        }
    };
    let status = resp.status();
    if status == reqwest::StatusCode::CONFLICT {
        let answer: crate::http::NotLeader = resp.json().await.context("reading the daemon's answer")?;
        return Err(AskedAStandby { listen: cfg.listen, leader: answer.leader }.into());
    }
    if !status.is_success() {
        anyhow::bail!("the daemon on {} refused POST /api/retry-refused: HTTP {status}", cfg.listen);
    }
    let answer: crate::http::RetryRefused = resp.json().await.context("reading the daemon's answer")?;
    Ok(Some(answer.lifted))
}

/// One resync and drain. With `--ha` (and not `--dry-run`) the HA lock is
/// taken first (`ha::LockHeld` while another replica holds it), every write
/// passes its fence, each backend's drain starts only once the lock index is
/// confirmed, and the lock is released at the end, whatever the outcome.
/// Without `--ha` (and not `--dry-run` or `force`) the cluster's lock key is
/// read first: while a daemon holds it, nothing is written (`ha::DaemonLeads`).
pub async fn once(cfg: &Config, dry_run: bool, retry_refused: bool, force: bool) -> anyhow::Result<OnceReport> {
    once_with_progress(cfg, dry_run, retry_refused, force, false).await
}

/// `once`, with a progress bar on stderr when `progress`.
pub async fn once_with_progress(
    cfg: &Config,
    dry_run: bool,
    retry_refused: bool,
    force: bool,
    progress: bool,
) -> anyhow::Result<OnceReport> {
    let held = match cfg.ha_wiring() {
        Some(w) if !dry_run => Some(crate::ha::take_once(&w).await?),
        Some(_) => None,
        None => {
            if !dry_run && !force {
                refuse_beside_a_leader(cfg).await?;
            }
            None
        }
    };
    let bar = progress_bar(progress);
    let result = run_once(cfg, dry_run, retry_refused, &bar, held.as_ref()).await;
    bar.finish_and_clear();
    if let Some(h) = held {
        h.release().await;
    }
    result
}

/// One writer per cluster: `reconcile --once` without `--ha` does not write
/// while a daemon of the cluster holds its HA lock (on `--ha-consul`, else
/// `--consul`). No Consul configured: there is no lock to check.
///
/// When the key cannot be read: with `--ha-consul` given (an HA deployment
/// is declared) nothing is written (`ha::LeaderUnknown`); with `--consul`
/// only, a warning, and the run goes on (a Consul that cannot be read is
/// reported by the run itself in its own terms, and a token without KV read
/// is common where no daemon runs with `--ha`).
pub(crate) async fn refuse_beside_a_leader(cfg: &Config) -> anyhow::Result<()> {
    let Some((consul, setting)) = &cfg.ha_lock_consul else { return Ok(()) };
    let key = crate::ha::lock_key(&cfg.cluster);
    let cluster = cfg.cluster.clone();
    let (token, tls) = cfg.consul_access();
    match crate::ha::leader_of(consul, token.as_ref(), tls, &cfg.cluster, cfg.request_timeout).await {
        Ok(None) => Ok(()),
        Ok(Some(holder)) => Err(crate::ha::DaemonLeads { cluster, key, holder }.into()),
        Err(source) if *setting == "--ha-consul" => {
            Err(crate::ha::LeaderUnknown { cluster, key, setting, source }.into())
        }
        Err(e) => {
            tracing::warn!(key = %key, error = %e, "cannot read the HA lock on --consul; going on as if no daemon leads (--ha-consul makes this an error)");
            Ok(())
        }
    }
}

async fn run_once(
    cfg: &Config,
    dry_run: bool,
    retry_refused: bool,
    bar: &indicatif::ProgressBar,
    held: Option<&crate::ha::Held>,
) -> anyhow::Result<OnceReport> {
    let metrics = Metrics::new();
    let backend_names: Vec<&'static str> =
        crate::daemon::build_backends(cfg, &crate::ha::Fence::always())?.iter().map(|b| b.name()).collect();
    let _scratch;
    let store = if dry_run {
        let dir = std::env::temp_dir().join(format!("switchboard-dry-run-{}-{}", std::process::id(), now_ms()));
        _scratch = Scratch(dir.clone());
        let scratch = StoreHandle::spawn(Store::open(&dir).context("opening a scratch store for --dry-run")?)?;
        match Store::open(&cfg.data_dir) {
            Ok(real) => {
                let real = StoreHandle::spawn(real)?;
                for b in backend_names.iter().copied() {
                    let (ledger, refusals) = real.call(move |s| Ok((s.ledger(b)?, s.refusals(b)?))).await?;
                    scratch
                        .call(move |s| {
                            s.import_ledger(b, &ledger)?;
                            if !retry_refused {
                                for r in &refusals {
                                    s.refuse(r)?;
                                }
                            }
                            Ok(())
                        })
                        .await?;
                }
            }
            Err(e) => tracing::warn!(error = %e, "dry run without the ledger (store busy or missing)"),
        }
        scratch
    } else {
        StoreHandle::spawn(
            Store::open(&cfg.data_dir).context("opening the store (is a daemon using this --data-dir?)")?,
        )?
    };
    // Every backend write request passes the lock's fence (with --ha).
    let gate = held.map_or_else(crate::ha::Fence::always, |h| h.fence.clone());
    let core = crate::daemon::build_core(cfg, store.clone(), metrics.clone(), &gate)?;
    let mut sharing = crate::ha::Sharing::new(store.clone(), &cfg.cluster, &backend_names);
    let fence = match held {
        Some(held) => {
            held.adopt(&mut sharing).await.context("adopting the ledgers the HA leader shared")?;
            held.fence.clone()
        }
        None => crate::ha::Fence::always(),
    };
    if retry_refused && !dry_run {
        let lifted = store.call(|s| s.clear_refusals()).await?;
        tracing::info!(lifted, "refusals lifted at the operator's request; retrying");
    }
    bar.set_length(1 + backend_names.len() as u64);
    bar.set_message(format!("resync: Marathon's snapshot, then listing {}", backend_names.join(", ")));
    resync::refresh_from_marathon(&core).await.context("resync from Marathon failed")?;
    let mut appliers = Vec::new();
    let mut handles = Vec::new();
    for b in &core.backends {
        let (applier, handle) =
            Applier::new(b.clone(), store.clone(), metrics.clone(), fence.clone(), core.concurrency(b.name()));
        appliers.push(applier);
        handles.push(handle);
    }
    // Each backend is listed and its listing merged app by app with one
    // planning pass over every app; a backend that cannot be listed is
    // planned against its ledger, so it still gets what the snapshot calls for.
    let listings = futures::future::join_all(handles.iter().map(|h| async move { (h, h.list().await) })).await;
    let mut failed_backends = Vec::new();
    let mut listed_apps = std::collections::BTreeSet::new();
    let mut answers = Vec::new();
    for (h, listed) in listings {
        match listed {
            Ok(listed) => {
                listed_apps.extend(listed.apps().cloned());
                answers.push(h.merge(listed, 1));
            }
            Err(e) => failed_backends.push((h.name().to_owned(), e)),
        }
    }
    let inputs = PlanInputs {
        routing: core.backends.iter().map(|b| b.routing.clone()).collect(),
        labels: core.labels.clone(),
        metrics: metrics.clone(),
    };
    let mut wants = store
        .call(move |s| {
            let mut dirty = DirtySet::everything();
            dirty.apps = listed_apps;
            let apps = Planner::apps_of(s, &inputs, dirty).map_err(crate::reconcile::into_store)?;
            Planner::default().pass(s, &inputs, &apps, 1).map_err(crate::reconcile::into_store)
        })
        .await?;
    for applier in &mut appliers {
        applier.plan(wants.remove(applier.name()).unwrap_or_default()).await?;
    }
    for answer in answers {
        // Every listed app had its want: the merges are done.
        let _ = answer.await;
    }
    let when = crate::model::Timestamp::now().to_string();
    store.call(move |s| s.set_last_resync(&when)).await?;
    bar.inc(1 + backend_names.len() as u64);
    let (rejections, refusals) = store.call(|s| Ok((s.rejections()?, s.all_refusals()?))).await?;
    let mut report =
        OnceReport { dry_run, ops: Vec::new(), failed_backends, rejections, refusals, summary: Vec::new() };
    if dry_run {
        for b in backend_names.iter().copied() {
            for q in store.call(move |s| s.queued(b)).await? {
                report.ops.push(line(b, &q.op, "planned".into()));
            }
        }
        report.summarise(&store, &backend_names).await?;
        return Ok(report);
    }
    let mut total = 0;
    for b in backend_names.iter().copied() {
        total += store.call(move |s| Ok(s.queue_len(b))).await? as u64;
    }
    bar.set_length(bar.position() + total);
    for applier in &mut appliers {
        let b = applier.name();
        let before = store.call(move |s| s.queued(b)).await?;
        let apps: std::collections::BTreeSet<&str> =
            before.iter().map(|q| q.op.registration().app_id.as_str()).collect();
        bar.set_message(format!("{b}: {} ops for {} apps", before.len(), apps.len()));
        drain_with_retries(&store, applier, &fence).await?;
        bar.inc(before.len() as u64);
        let (left, refused) = store.call(move |s| Ok((s.queued(b)?, s.refusals(b)?))).await?;
        for q in before {
            let input = crate::plan::input_hash(&q.op);
            let result = match left.iter().find(|l| l.op == q.op) {
                Some(l) => format!("failed: {}", l.last_error.as_deref().unwrap_or("not applied")),
                None => match refused.iter().find(|r| r.entity == q.op.key() && r.input == input) {
                    Some(r) => format!("refused: {}", r.reason),
                    None => "applied".to_owned(),
                },
            };
            report.ops.push(line(b, &q.op, result));
        }
        if !left.is_empty() && !report.failed_backends.iter().any(|(n, _)| n == b) {
            report.failed_backends.push((b.to_owned(), format!("{} operations not applied", left.len())));
        }
    }
    let (rejections, refusals) = store.call(|s| Ok((s.rejections()?, s.all_refusals()?))).await?;
    report.rejections = rejections;
    report.refusals = refusals;
    report.summarise(&store, &backend_names).await?;
    store.flush().await?;
    if let Some(held) = held {
        held.publish(&mut sharing).await.context("sharing the ledgers with the next HA leader")?;
    }
    Ok(report)
}

/// Drains `applier` until its queue is empty or its ops are out of attempts.
/// With `--ha`, every drain starts only once `Fence::confirm` has read the
/// lock key and found our session at our lock index, as the daemon's does.
async fn drain_with_retries(
    store: &StoreHandle,
    applier: &mut Applier,
    fence: &crate::ha::Fence,
) -> anyhow::Result<()> {
    let b = applier.name();
    loop {
        if fence.is_ha() && !fence.confirm().await {
            anyhow::bail!("the HA lock is no longer ours (checked before draining {b}): stopped writing");
        }
        let wait_until = match applier.drain().await? {
            Drain::Idle { next_due_ms: None } => return Ok(()),
            Drain::Idle { next_due_ms: Some(t) } | Drain::Backoff { until_ms: t } => t,
        };
        let exhausted = store.call(move |s| Ok(s.queued(b)?.iter().any(|q| q.attempts >= MAX_ATTEMPTS))).await?;
        if exhausted {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(wait_until.saturating_sub(now_ms()).clamp(10, 5_000))).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::backends::Backend;
    use crate::backends::kong::{KongBackend, KongConfig};
    use crate::ha::Fence;

    fn applier(dir: &std::path::Path, fence: Fence) -> (StoreHandle, Applier) {
        let store = StoreHandle::spawn(Store::open(dir).expect("store")).expect("store thread");
        let url = url::Url::parse("http://127.0.0.1:9").expect("url");
        let kong = Backend::new(KongBackend::new(KongConfig::new(url)).expect("kong"));
        let (applier, _handle) = Applier::new(kong, store.clone(), Metrics::new(), fence, 1);
        (store, applier)
    }

    /// `reconcile --once --ha` drains only once the lock is confirmed, as the
    /// daemon does: a lock it can no longer confirm stops it before a drain,
    /// with an error (an empty queue would otherwise drain to `Ok`).
    #[tokio::test]
    async fn a_drain_starts_only_with_the_lock_confirmed() {
        let dir = tempfile::tempdir().expect("dir");
        let lost = Fence::leased_until(Instant::now() - Duration::from_millis(1)).expect("fence");
        let (store, mut a) = applier(&dir.path().join("lost"), lost.clone());
        let err = drain_with_retries(&store, &mut a, &lost).await.expect_err("drained without the lock");
        assert!(err.to_string().contains("no longer ours") && err.to_string().contains("kong"), "{err}");

        let held = Fence::leased_until(Instant::now() + Duration::from_secs(600)).expect("fence");
        let (store, mut a) = applier(&dir.path().join("held"), held.clone());
        drain_with_retries(&store, &mut a, &held).await.expect("confirmed: drains");
        let (store, mut a) = applier(&dir.path().join("single"), Fence::always());
        drain_with_retries(&store, &mut a, &Fence::always()).await.expect("no --ha: drains");
    }
}
