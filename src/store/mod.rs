//! The durable store: sled trees, each with one job.
//!
//! - `specs`: app specs by `app id \0 version` (newest versions kept);
//! - `apps`: app-level facts (stop time) by app id;
//! - `instances`: folded instance records by instance id, with the local
//!   receive sequence of the last fact that touched them;
//! - `pending`: instances that are serving but incomplete, since when;
//! - `ledger`: what Switchboard registered, by `backend \0 registration id`;
//! - `queue`: operations not yet applied, by `backend \0 registration id`;
//! - `refusals`: permanent refusals in force, by `backend \0 registration id`;
//! - `intents`: services whose first write started on a backend without tags,
//!   by `backend \0 service`;
//! - `meta`: sequence counter, Marathon high-water time, last resync, rejections,
//!   the store's `format` (refused when newer than `FORMAT`).
//!
//! Invariants:
//! - Writes that belong together commit in one sled transaction: the facts
//!   of one event; a queue entry's completion together with its ledger update.
//! - The store decides nothing: folding rules live in `assemble`, diffing in
//!   `plan`. Records are encoded as JSON for `switchboard state` readability.

mod actor;
mod cache;
mod facts;
mod ledger;
mod pending;
mod refusals;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use actor::{Hold, StoreHandle, hold_every_store};
pub use facts::SnapshotApp;
pub use ledger::QueuedOp;
pub use pending::PendingEntry;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot open store in {dir}: {source}")]
    Open {
        dir: String,
        #[source]
        source: sled::Error,
    },
    #[error("store: {0}")]
    Sled(#[from] sled::Error),
    #[error("store: corrupt record in tree {tree}: {source}")]
    Decode {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("store: cannot encode record: {0}")]
    Encode(#[source] serde_json::Error),
    #[error(
        "the store in {dir} has format {found}, newer than this switchboard reads ({supported}): run the release that wrote it, or point --data-dir elsewhere"
    )]
    FutureFormat { dir: String, found: u64, supported: u64 },
    #[error("store: {0}")]
    Thread(String),
    #[error("store: cannot flush: {0}")]
    Flush(String),
}

/// The store's format. 1: the trees listed above, records as JSON. A data
/// dir without a format (written before formats were stamped) holds format
/// 1's records already and is stamped in place on open.
pub const FORMAT: u64 = 1;

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Error {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::Sled(e),
        }
    }
}

/// A cloneable handle to the store; every clone shares the same trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Decoded copies of the trees every planning pass reads (see `cache`).
    instance_cache: cache::Cache<facts::Stored>,
    ledger_cache: cache::Cache<crate::model::Registration>,
    queue_cache: cache::Cache<ledger::QueuedOp>,
    /// Held while a flush is in flight (see `flush`).
    flushing: std::sync::Arc<tokio::sync::Mutex<()>>,
    pending_cache: cache::Cache<PendingEntry>,
    specs: sled::Tree,
    apps: sled::Tree,
    instances: sled::Tree,
    pending: sled::Tree,
    ledger: sled::Tree,
    queue: sled::Tree,
    refusals: sled::Tree,
    intents: sled::Tree,
    meta: sled::Tree,
}

pub(crate) fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, Error> {
    serde_json::to_vec(v).map_err(Error::Encode)
}

pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::Decode { tree, source })
}

pub(crate) fn key2(a: &str, b: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(a.len() + b.len() + 1);
    k.extend_from_slice(a.as_bytes());
    k.push(0);
    k.extend_from_slice(b.as_bytes());
    k
}

/// `backend \0 app`: the group of a ledger or queue key (`backend \0 id`)
/// whose registration belongs to `app`.
pub(crate) fn backend_app(key: &[u8], app: &str) -> Vec<u8> {
    let backend = key.split(|b| *b == 0).next().unwrap_or_default();
    key2(&String::from_utf8_lossy(backend), app)
}

pub(crate) fn prefix(a: &str) -> Vec<u8> {
    let mut k = a.as_bytes().to_vec();
    k.push(0);
    k
}

/// sled's page cache unless `--store-cache` says otherwise.
pub const DEFAULT_CACHE_BYTES: u64 = 16 * 1024 * 1024;

/// How the store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// sled's page cache, in bytes (`--store-cache`).
    pub cache_bytes: u64,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_bytes: DEFAULT_CACHE_BYTES }
    }
}

impl Store {
    /// Opens (or creates) the store in `dir`. Fails if another process holds it.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        Store::open_with(dir, &StoreOptions::default())
    }

    /// `open` with options.
    pub fn open_with(dir: &Path, opts: &StoreOptions) -> Result<Store, Error> {
        let open_err = |source| Error::Open { dir: dir.display().to_string(), source };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(opts.cache_bytes)
            .flush_every_ms(Some(200))
            .open()
            .map_err(open_err)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_err);
        Store {
            instance_cache: cache::Cache::new("instances", |_, s| facts::app_group(s)),
            ledger_cache: cache::Cache::new("ledger", |k, r| backend_app(k, &r.app_id)),
            queue_cache: cache::Cache::new("queue", |k, q| backend_app(k, &q.op.registration().app_id)),
            pending_cache: cache::Cache::new("pending", |_, p| p.app_id.as_str().as_bytes().to_vec()),
            flushing: Default::default(),
            specs: tree("specs")?,
            apps: tree("apps")?,
            instances: tree("instances")?,
            pending: tree("pending")?,
            ledger: tree("ledger")?,
            queue: tree("queue")?,
            refusals: tree("refusals")?,
            intents: tree("intents")?,
            meta: tree("meta")?,
            db,
        }
        .checked_format(dir)
    }

    /// Refuses a format this build cannot read; stamps an unversioned store.
    fn checked_format(self, dir: &Path) -> Result<Store, Error> {
        match self.meta_get::<u64>("format")? {
            Some(found) if found > FORMAT => {
                Err(Error::FutureFormat { dir: dir.display().to_string(), found, supported: FORMAT })
            }
            Some(_) => Ok(self),
            None => {
                self.meta_put("format", &FORMAT)?;
                self.flush_blocking()?;
                Ok(self)
            }
        }
    }

    /// The format stamped on this store.
    pub fn format(&self) -> Result<Option<u64>, Error> {
        self.meta_get("format")
    }

    /// Stamps a format (tests of what a future release would leave).
    #[doc(hidden)]
    pub fn stamp_format(&self, format: u64) -> Result<(), Error> {
        self.meta_put("format", &format)?;
        self.flush_blocking()
    }

    /// Forces everything written so far to disk. One flush at a time:
    /// each `flush_async` occupies one of sled's I/O threads until its
    /// buffer is stable, and the write that makes it stable needs one of
    /// those threads too, so concurrent flushes (a burst of first writes,
    /// each recording its intent) could take them all and hang the store.
    pub async fn flush(&self) -> Result<(), Error> {
        let _one_at_a_time = self.flushing.lock().await;
        self.db.flush_async().await?;
        Ok(())
    }

    pub fn flush_blocking(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.meta.get(key)?.map(|v| decode("meta", &v)).transpose()
    }

    fn meta_put<T: Serialize>(&self, key: &str, v: &T) -> Result<(), Error> {
        self.meta.insert(key, encode(v)?)?;
        Ok(())
    }

    /// The next local receive sequence number (persisted, monotonic).
    pub fn next_seq(&self) -> Result<u64, Error> {
        let v = self.meta.update_and_fetch("seq", |old| {
            let n = old.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes).unwrap_or(0);
            Some((n + 1).to_be_bytes().to_vec())
        })?;
        Ok(v.and_then(|b| <[u8; 8]>::try_from(b.as_ref()).ok()).map(u64::from_be_bytes).unwrap_or(0))
    }

    /// The newest Marathon timestamp seen in any event.
    pub fn high_water(&self) -> Result<crate::model::Timestamp, Error> {
        Ok(self.meta_get("high_water")?.unwrap_or_default())
    }

    pub fn raise_high_water(&self, at: crate::model::Timestamp) -> Result<(), Error> {
        if at > self.high_water()? {
            self.meta_put("high_water", &at)?;
        }
        Ok(())
    }

    pub fn last_resync(&self) -> Result<Option<String>, Error> {
        self.meta_get("last_resync")
    }

    pub fn set_last_resync(&self, when: &str) -> Result<(), Error> {
        self.meta_put("last_resync", &when)
    }

    /// Registrations the backends refused, and apps whose labels are bad,
    /// as last computed: shown by `switchboard state`.
    pub fn rejections(&self) -> Result<Vec<crate::plan::Rejection>, Error> {
        Ok(self.meta_get("rejections")?.unwrap_or_default())
    }

    /// Replaces the rejections of `apps` (those named after them) with
    /// `rejections`; other apps' rejections stay.
    pub fn set_rejections_of(&self, apps: &[String], rejections: &[crate::plan::Rejection]) -> Result<(), Error> {
        let apps: std::collections::BTreeSet<&str> = apps.iter().map(String::as_str).collect();
        let mut all = self.rejections()?;
        all.retain(|r| !apps.contains(r.app_id.as_str()));
        all.extend(rejections.iter().cloned());
        all.sort_by(|a, b| (&a.app_id, &a.backend, &a.label).cmp(&(&b.app_id, &b.backend, &b.label)));
        self.set_rejections(&all)
    }

    pub fn set_rejections(&self, r: &[crate::plan::Rejection]) -> Result<(), Error> {
        if self.rejections()?.as_slice() != r {
            self.meta_put("rejections", &r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
