//! `switchboard reconcile --once`: one full resync, every queued op applied
//! with bounded retries, then a report.
//!
//! Invariant: `--dry-run` writes to no backend and leaves the real store as it
//! was: it plans in a scratch store seeded with the real ledger and refusals.
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
}

#[derive(Debug, Serialize)]
pub struct OpLine {
    pub backend: String,
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
            let _ = writeln!(out, "backend {b} failed: {e}");
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
        out
    }
}

fn line(backend: &str, op: &Op, result: String) -> OpLine {
    let r = op.registration();
    OpLine {
        backend: backend.to_owned(),
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
    let held = if cfg.ha.is_some() && !dry_run { Some(crate::ha::take_once(cfg).await?) } else { None };
    let result = once_fenced(cfg, dry_run, retry_refused, held.as_ref()).await;
    if let Some(h) = held {
        h.release().await;
    }
    result
}

async fn once_fenced(
    cfg: &Config,
    dry_run: bool,
    retry_refused: bool,
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
    let resync = engine.resync().await.context("resync from Marathon failed")?;
    let mut report = OnceReport {
        dry_run,
        ops: Vec::new(),
        failed_backends: resync.failed.iter().map(|(b, e)| (b.to_string(), e.clone())).collect(),
        rejections: store.rejections()?,
        refusals: store.all_refusals()?,
    };
    if dry_run {
        for b in &engine.backends {
            for q in store.queued(b.name())? {
                report.ops.push(line(b.name(), &q.op, "planned".into()));
            }
        }
        return Ok(report);
    }
    for b in &engine.backends {
        let before = store.queued(b.name())?;
        drain_with_retries(&engine, b).await?;
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
