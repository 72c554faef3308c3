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
use crate::engine::{Drain, Engine, now_ms};
use crate::metrics::Metrics;
use crate::plan::Op;
use crate::store::Store;

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
    fn summarise(&mut self, store: &Store, backends: &[&'static str]) -> Result<(), crate::store::Error> {
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
            s.held = store.ledger(b)?.len();
            self.summary.push(s);
        }
        Ok(())
    }
}

/// `<backend> refused the credentials (HTTP 401|403): check <variable>` when
/// `error` says so.
pub fn refused_credentials(backend: &str, error: &str) -> Option<String> {
    let status = ["401", "403"].into_iter().find(|s| error.contains(&format!("HTTP {s}")))?;
    let var = match backend {
        "consul" => "SWITCHBOARD_CONSUL_TOKEN",
        "kong" => "SWITCHBOARD_KONG_TOKEN",
        _ => "its credentials",
    };
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
    if !status.is_success() {
        anyhow::bail!("the daemon on {} refused POST /api/retry-refused: HTTP {status}", cfg.listen);
    }
    let answer: crate::http::RetryRefused = resp.json().await.context("reading the daemon's answer")?;
    Ok(Some(answer.lifted))
}

/// One resync and drain. With `--ha` (and not `--dry-run`) the HA lock is
/// taken first (`ha::LockHeld` while another replica holds it), every write
/// passes its fence, and the lock is released at the end, whatever the outcome.
pub async fn once(cfg: &Config, dry_run: bool, retry_refused: bool) -> anyhow::Result<OnceReport> {
    once_with_progress(cfg, dry_run, retry_refused, false).await
}

/// `once`, with a progress bar on stderr when `progress`.
pub async fn once_with_progress(
    cfg: &Config,
    dry_run: bool,
    retry_refused: bool,
    progress: bool,
) -> anyhow::Result<OnceReport> {
    let held = if cfg.ha.is_some() && !dry_run { Some(crate::ha::take_once(cfg).await?) } else { None };
    let bar = progress_bar(progress);
    let result = run_once(cfg, dry_run, retry_refused, &bar, held.as_ref()).await;
    bar.finish_and_clear();
    if let Some(h) = held {
        h.release().await;
    }
    result
}

async fn run_once(
    cfg: &Config,
    dry_run: bool,
    retry_refused: bool,
    bar: &indicatif::ProgressBar,
    held: Option<&crate::ha::Held>,
) -> anyhow::Result<OnceReport> {
    let metrics = Metrics::new();
    let backend_names: Vec<&'static str> = crate::daemon::build_backends(cfg)?.iter().map(|b| b.name()).collect();
    let _scratch;
    let store = if dry_run {
        let dir = std::env::temp_dir().join(format!("switchboard-dry-run-{}-{}", std::process::id(), now_ms()));
        _scratch = Scratch(dir.clone());
        let scratch = Store::open(&dir).context("opening a scratch store for --dry-run")?;
        match Store::open(&cfg.data_dir) {
            Ok(real) => {
                for b in &backend_names {
                    scratch.import_ledger(b, &real.ledger(b)?)?;
                    if !retry_refused {
                        for r in real.refusals(b)? {
                            scratch.refuse(&r)?;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "dry run without the ledger (store busy or missing)"),
        }
        scratch
    } else {
        Store::open(&cfg.data_dir).context("opening the store (is a daemon using this --data-dir?)")?
    };
    let mut engine = crate::daemon::build_engine(cfg, store.clone(), metrics)?;
    let mut sharing = crate::ha::Sharing::new(store.clone(), &cfg.cluster, &backend_names);
    if let Some(held) = held {
        engine.backends = crate::ha::fence_all(engine.backends, &held.fence);
        held.adopt(&mut sharing).await.context("adopting the ledgers the HA leader shared")?;
    }
    if retry_refused && !dry_run {
        engine.retry_refused()?;
    }
    bar.set_length(1 + backend_names.len() as u64);
    bar.set_message(format!("resync: Marathon's snapshot, then listing {}", backend_names.join(", ")));
    let resync = engine.resync().await.context("resync from Marathon failed")?;
    bar.inc(1 + backend_names.len() as u64);
    let mut report = OnceReport {
        dry_run,
        ops: Vec::new(),
        failed_backends: resync.failed.iter().map(|(b, e)| (b.to_string(), e.clone())).collect(),
        rejections: store.rejections()?,
        refusals: store.all_refusals()?,
        summary: Vec::new(),
    };
    if dry_run {
        for b in &engine.backends {
            for q in store.queued(b.name())? {
                report.ops.push(line(b.name(), &q.op, "planned".into()));
            }
        }
        report.summarise(&store, &backend_names)?;
        return Ok(report);
    }
    let mut total = 0;
    for b in &engine.backends {
        total += store.queue_len(b.name()) as u64;
    }
    bar.set_length(bar.position() + total);
    for b in &engine.backends {
        let before = store.queued(b.name())?;
        let apps: std::collections::BTreeSet<&str> =
            before.iter().map(|q| q.op.registration().app_id.as_str()).collect();
        bar.set_message(format!("{}: {} ops for {} apps", b.name(), before.len(), apps.len()));
        drain_with_retries(&engine, b).await?;
        bar.inc(before.len() as u64);
        let left = store.queued(b.name())?;
        let refused = store.refusals(b.name())?;
        for q in before {
            let input = crate::plan::input_hash(&q.op);
            let result = match left.iter().find(|l| l.op == q.op) {
                Some(l) => format!("failed: {}", l.last_error.as_deref().unwrap_or("not applied")),
                None => match refused.iter().find(|r| r.entity == q.op.key() && r.input == input) {
                    Some(r) => format!("refused: {}", r.reason),
                    None => "applied".to_owned(),
                },
            };
            report.ops.push(line(b.name(), &q.op, result));
        }
        if !left.is_empty() && !report.failed_backends.iter().any(|(n, _)| n == b.name()) {
            report.failed_backends.push((b.name().to_owned(), format!("{} operations not applied", left.len())));
        }
    }
    report.rejections = store.rejections()?;
    report.refusals = store.all_refusals()?;
    report.summarise(&store, &backend_names)?;
    store.flush().await?;
    if let Some(held) = held {
        held.publish(&mut sharing).await.context("sharing the ledgers with the next HA leader")?;
    }
    Ok(report)
}

async fn drain_with_retries(engine: &Engine, b: &std::sync::Arc<dyn crate::backends::Backend>) -> anyhow::Result<()> {
    loop {
        let wait_until = match engine.drain(b, &crate::engine::AppliedLog::default()).await? {
            Drain::Idle { next_due_ms: None } => return Ok(()),
            Drain::Idle { next_due_ms: Some(t) } | Drain::Backoff { until_ms: t } => t,
        };
        let exhausted = engine.store.queued(b.name())?.iter().any(|q| q.attempts >= MAX_ATTEMPTS);
        if exhausted {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(wait_until.saturating_sub(now_ms()).clamp(10, 5_000))).await;
    }
}
