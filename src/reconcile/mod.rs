//! The reconcile core, one file per role it plays:
//!
//! - [`consumer`]: folds a burst of Marathon events into the store in one
//!   transaction and marks the apps they touched dirty;
//! - [`planner`]: takes the dirty apps, computes what each calls for (the one
//!   `desired` path) and selects it per backend; the only writer of the pending
//!   set and of rejections; hands one want per app to each applier;
//! - [`applier`]: one per backend, the only writer of its queue and ledger:
//!   plans each app against its ledger (or against a resync's listing, which it
//!   merges app by app), drains the queue, claims first writes, and is the one
//!   place a backend write passes the HA fence;
//! - [`resync`]: refreshes the store from Marathon (the snapshot, one app's
//!   spec for waiting instances) and asks each applier to observe its backend.
//!
//! Everything here reaches the store through its thread
//! ([`crate::store::StoreHandle`]): the planning work that reads the store
//! runs on that thread, never on the async runtime's.
//!
//! Imports point one way: `daemon` and the commands use this module; this
//! module uses `store`, `backends`, `plan`, `assemble`, `labels` and `model`,
//! never the other way round.

pub mod applier;
pub mod consumer;
pub mod listing;
pub mod planner;
pub mod resync;
pub mod wants;

#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use backon::BackoffBuilder;

use crate::backends::Backend;
use crate::labels::{LabelOptions, StaticService};
use crate::marathon::client::MarathonClient;
use crate::metrics::Metrics;
use crate::store::StoreHandle;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Marathon(#[from] crate::marathon::client::Error),
}

/// What every role shares: the store's thread, Marathon, the backends and the
/// label options. Cheap to clone.
#[derive(Clone)]
pub struct Core {
    pub store: StoreHandle,
    pub marathon: MarathonClient,
    pub backends: Vec<Backend>,
    pub labels: Labels,
    pub metrics: Metrics,
    /// Ops in flight at once per backend name (`--backend-concurrency`); a
    /// backend not named runs one at a time.
    pub concurrency: Arc<BTreeMap<&'static str, usize>>,
}

/// What turns facts into registrations besides the facts: the label options
/// and the static services of the config.
#[derive(Clone, Default)]
pub struct Labels {
    pub opts: LabelOptions,
    pub statics: Arc<Vec<StaticService>>,
}

impl Core {
    /// Ops in flight at once on `backend`.
    pub fn concurrency(&self, backend: &str) -> usize {
        self.concurrency.get(backend).copied().unwrap_or(1).max(1)
    }

    pub fn backend_names(&self) -> Vec<&'static str> {
        self.backends.iter().map(Backend::name).collect()
    }
}

/// The store error behind a core error, for work that runs on the store's
/// thread (which answers only store errors).
pub(crate) fn into_store(e: Error) -> crate::store::Error {
    match e {
        Error::Store(e) => e,
        other => crate::store::Error::Thread(other.to_string()),
    }
}

/// Local wall-clock milliseconds (for retry schedules and pending ages only;
/// folding never reads a clock).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// Capped exponential backoff with jitter for the `attempt`-th retry (1-based).
pub fn backoff(attempt: u32) -> Duration {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(Duration::from_secs(30))
}
