//! One applier per backend: the only writer of that backend's queue and
//! ledger in the daemon.
//!
//! Invariants:
//! - Ops and ledger entries of a backend are written by its applier alone:
//!   plans against the ledger, the merge of a resync's listing, completions
//!   and refusals all happen on this one task, one after the other.
//! - It plans per app: the planner hands it one `AppWant` per dirty app
//!   (de-duplicated in its `Inbox`, newest wins), and it plans each against
//!   that app's ledger entries and queued ops only. A want computed before
//!   the newest whole-world plan it merged (a resync's listing) is skipped
//!   (whatever changed since was folded and marked its app dirty, so a later
//!   want knows it too).
//! - A resync only *observes*: it takes the listing (while the applier goes
//!   on applying) and hands it over. The applier merges it, planning with
//!   facts read at the merge; a registration it wrote while the listing was
//!   in flight is planned against the ledger, never against the listing,
//!   which may predate that write (`AppliedLog`).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::backends::Backend;
use crate::engine::{AppliedLog, Drain, Engine, ServiceIndex, now_ms};
use crate::model::Registration;
use crate::plan::Op;
use crate::planner::Inbox;

/// What a resync's observation of one backend came to: the repairs queued,
/// or why the backend could not be listed.
pub type Observation = Result<Vec<Op>, String>;

/// A listing handed to the applier to merge.
struct Listing {
    /// What the backend holds of ours.
    owned: Vec<Registration>,
    /// `AppliedLog::start` taken before the listing started.
    mark: u64,
    reply: oneshot::Sender<Observation>,
}

/// The handle the resync uses to observe one backend.
#[derive(Clone)]
pub struct Applier {
    engine: Engine,
    backend: Arc<dyn Backend>,
    log: AppliedLog,
    listings: mpsc::Sender<Listing>,
}

impl Applier {
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// Lists what the backend holds of ours (the applier goes on applying
    /// meanwhile), then has the applier merge it; waits for the repairs it
    /// queued.
    pub async fn observe(&self) -> Observation {
        let name = self.name();
        let mark = self.log.start();
        let listed = match self.engine.store.ledger(name) {
            Ok(ledger) => self.backend.list_owned(&ledger).await.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        let owned = match listed {
            Ok(o) => o,
            Err(e) => {
                self.log.finish(mark);
                warn!(backend = name, error = %e, "cannot list owned entries; will retry");
                return Err(e);
            }
        };
        let (reply, answer) = oneshot::channel();
        if self.listings.send(Listing { owned, mark, reply }).await.is_err() {
            return Err("applier stopped".into());
        }
        answer.await.unwrap_or_else(|_| Err("applier stopped".into()))
    }
}

/// The applier of `b`: its handle, and the task to run.
pub fn spawn(
    engine: Engine,
    b: Arc<dyn Backend>,
    inbox: Arc<Inbox>,
    shutdown: CancellationToken,
) -> (Applier, impl Future<Output = ()> + Send + 'static) {
    let (tx, rx) = mpsc::channel(1);
    let log = AppliedLog::default();
    let handle = Applier { engine: engine.clone(), backend: b.clone(), log: log.clone(), listings: tx };
    (handle, run(engine, b, log, inbox, rx, shutdown))
}

async fn run(
    engine: Engine,
    b: Arc<dyn Backend>,
    log: AppliedLog,
    inbox: Arc<Inbox>,
    mut listings: mpsc::Receiver<Listing>,
    shutdown: CancellationToken,
) {
    let name = b.name();
    // The epoch of the newest whole-world plan merged so far.
    let mut planned = 0u64;
    let mut services = ServiceIndex::default();
    loop {
        let wait = match engine.drain(&b, &log).await {
            Ok(Drain::Idle { next_due_ms: None }) => None,
            Ok(Drain::Idle { next_due_ms: Some(at) }) | Ok(Drain::Backoff { until_ms: at }) => {
                Some(Duration::from_millis(at.saturating_sub(now_ms()).max(10)))
            }
            Err(e) => {
                warn!(backend = name, error = %e, "applier failed; retrying");
                Some(Duration::from_secs(1))
            }
        };
        tokio::select! {
            _ = shutdown.cancelled() => return,
            listing = listings.recv() => {
                let Some(listing) = listing else { return };
                let stale = log.finish(listing.mark);
                let answer = match engine.merge_listing(&b, &listing.owned, &stale) {
                    Ok(observed) => {
                        planned = planned.max(observed.epoch);
                        flush(&engine).await;
                        Ok(observed.ops)
                    }
                    Err(e) => {
                        warn!(backend = name, error = %e, "cannot merge the listing");
                        Err(e.to_string())
                    }
                };
                let _ = listing.reply.send(answer);
            }
            _ = inbox.ready() => {
                let wants: Vec<_> = inbox.take().into_iter().filter(|w| w.epoch >= planned).collect();
                // Off the runtime's threads: the store's writes block.
                let (e, backend, mut index) = (engine.clone(), b.clone(), std::mem::take(&mut services));
                let planned_now = tokio::task::spawn_blocking(move || {
                    let ops = e.plan_apps(&backend, &wants, &mut index);
                    (index, ops)
                })
                .await;
                match planned_now {
                    Ok((index, ops)) => {
                        services = index;
                        match ops {
                            // Queued ops are durable before any of them is tried.
                            Ok(ops) if !ops.is_empty() => flush(&engine).await,
                            Ok(_) => {}
                            Err(e) => warn!(backend = name, error = %e, "planning failed"),
                        }
                    }
                    Err(e) => warn!(backend = name, error = %e, "planning panicked"),
                }
            }
            _ = sleep_opt(wait) => {}
        }
    }
}

async fn flush(engine: &Engine) {
    if let Err(e) = engine.store.flush().await {
        warn!(error = %e, "cannot flush the store");
    }
}

async fn sleep_opt(d: Option<Duration>) {
    match d {
        Some(d) => tokio::time::sleep(d).await,
        None => std::future::pending().await,
    }
}
