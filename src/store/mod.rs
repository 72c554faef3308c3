//! The durable store: sled trees, each with one job, records encoded with
//! postcard (format 2). Keys group records by app, so what one app needs is
//! one prefix scan:
//!
//! - `specs@2`: app specs by `app id \0 version` (newest versions kept);
//! - `apps@2`: app-level facts (stop time) by app id;
//! - `instances@2`: folded instance records by `app id \0 instance id`, with
//!   the local receive sequence of the last fact that changed them;
//! - `pending@2`: instances that are serving but incomplete, since when, by
//!   `app id \0 instance id`;
//! - `ledger@2`: what Switchboard registered, by `backend \0 app \0
//!   registration id`;
//! - `services@2`: index of the ledger: how many entries of one service and
//!   app it holds, by `backend \0 service \0 app`;
//! - `queue@2`: operations not yet applied, by `backend \0 app \0
//!   registration id`;
//! - `refusals@2`: permanent refusals in force, by `backend \0 registration id`;
//! - `rejections@2`: the rejections named after one app, by app id;
//! - `intents`: services whose first write started on a backend without tags,
//!   by `backend \0 service` (empty values: unchanged since format 1);
//! - `meta`: sequence counter (big-endian u64), Marathon high-water time, last
//!   resync, and the store's `format` as decimal text (refused when newer
//!   than `FORMAT`).
//!
//! Invariants:
//! - Writes that belong together commit together: the facts of one event in
//!   one sled transaction; a completion as ledger, service count, then queue
//!   removal, an order a crash cannot break harmfully (see `ledger.rs`).
//!   Transactions and batches are kept to that: each one writes and syncs
//!   sled's log buffer at once.
//! - Only changed keys are written: a merge, an import or a replacement that
//!   leaves a record as it was writes nothing.
//! - Nothing keeps a decoded copy of a tree: every read decodes what it
//!   scans, and sled's page cache (`StoreOptions::cache_bytes`) is the only
//!   cache.
//! - The store decides nothing: folding rules live in `assemble`, diffing in
//!   `plan`.

mod actor;
mod facts;
mod ledger;
mod migrate;
mod pending;
mod refusals;

use std::path::Path;

use serde::Serialize;
use serde::de::DeserializeOwned;

pub use actor::{Hold, StoreHandle, hold_every_store};
pub use facts::{InstanceCensus, SnapshotApp};
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
        source: postcard::Error,
    },
    #[error("store: corrupt format-1 record in tree {tree} (migrating to format {FORMAT}): {source}")]
    DecodeFormat1 {
        tree: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("store: corrupt format stamp {found:?} in {dir}")]
    BadFormat { dir: String, found: String },
    #[error("store: cannot encode record: {0}")]
    Encode(#[source] postcard::Error),
    #[error(
        "the store in {dir} has format {found}, newer than this switchboard reads ({supported}): run the release that wrote it, or point --data-dir elsewhere"
    )]
    FutureFormat { dir: String, found: u64, supported: u64 },
    #[error("store: {0}")]
    Thread(String),
    #[error("store: cannot flush: {0}")]
    Flush(String),
}

/// The store's format. 1: records as JSON, keyed by instance or
/// registration id alone. 2: the trees listed above, records as postcard.
/// A data dir without a format (written before formats were stamped) holds
/// format 1; format 1 is migrated in place on open (see `migrate`).
pub const FORMAT: u64 = 2;

/// How the store is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreOptions {
    /// Bytes of sled's page cache (decoded pages kept in memory).
    pub cache_bytes: u64,
}

/// sled's page cache by default: 4 MiB. Measured with
/// `examples/store_churn.rs` at 10,000 instances: 1 MiB to 64 MiB change
/// neither RSS nor bytes written; sled's own default (1 GiB) costs 15 MiB
/// more RSS (see ARCHITECTURE.md, `store/`).
pub const DEFAULT_CACHE_BYTES: u64 = 4 * 1024 * 1024;

impl StoreOptions {
    pub const DEFAULT_CACHE_BYTES: u64 = DEFAULT_CACHE_BYTES;
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions { cache_bytes: Self::DEFAULT_CACHE_BYTES }
    }
}

impl From<sled::transaction::TransactionError<Error>> for Error {
    fn from(e: sled::transaction::TransactionError<Error>) -> Error {
        match e {
            sled::transaction::TransactionError::Abort(e) => e,
            sled::transaction::TransactionError::Storage(e) => Error::Sled(e),
        }
    }
}

/// The live data of one tree (`Store::footprint`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TreeFootprint {
    pub tree: &'static str,
    pub records: u64,
    pub key_bytes: u64,
    pub value_bytes: u64,
}

/// A cloneable handle to the store; every clone shares the same trees.
#[derive(Clone)]
pub struct Store {
    db: sled::Db,
    /// Ledger and queue sizes per backend (see `ledger::Counts`): a std
    /// Mutex, held by each ledger or queue write for its sled calls, never
    /// across `.await`.
    counts: std::sync::Arc<std::sync::Mutex<ledger::Counts>>,
    specs: sled::Tree,
    apps: sled::Tree,
    instances: sled::Tree,
    pending: sled::Tree,
    ledger: sled::Tree,
    services: sled::Tree,
    queue: sled::Tree,
    refusals: sled::Tree,
    rejections: sled::Tree,
    intents: sled::Tree,
    meta: sled::Tree,
}

pub(crate) fn encode<T: Serialize + ?Sized>(v: &T) -> Result<Vec<u8>, Error> {
    postcard::to_allocvec(v).map_err(Error::Encode)
}

pub(crate) fn decode<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, Error> {
    postcard::from_bytes(bytes).map_err(|source| Error::Decode { tree, source })
}

/// `a \0 b \0 ...`: a key of several parts.
pub(crate) fn key(parts: &[&str]) -> Vec<u8> {
    let mut k = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            k.push(0);
        }
        k.extend_from_slice(p.as_bytes());
    }
    k
}

pub(crate) fn key2(a: &str, b: &str) -> Vec<u8> {
    key(&[a, b])
}

/// `a \0 b \0 ... \0`: the prefix of every key under those parts.
pub(crate) fn prefix(parts: &[&str]) -> Vec<u8> {
    let mut k = key(parts);
    k.push(0);
    k
}

/// The part of `key` after its first `skip` parts.
pub(crate) fn part_after(key: &[u8], skip: usize) -> &[u8] {
    let mut rest = key;
    for _ in 0..skip {
        rest = match rest.iter().position(|b| *b == 0) {
            Some(i) => &rest[i + 1..],
            None => &[],
        };
    }
    rest
}

/// The `n`th part (from 0) of `key`.
pub(crate) fn part(key: &[u8], n: usize) -> &[u8] {
    let rest = part_after(key, n);
    rest.split(|b| *b == 0).next().unwrap_or_default()
}

/// Inserts `value` under `key` unless the tree holds exactly that already.
/// Returns whether it wrote.
pub(crate) fn put_if_changed(tree: &sled::Tree, key: &[u8], value: Vec<u8>) -> Result<bool, Error> {
    if tree.get(key)?.is_some_and(|old| *old == value[..]) {
        return Ok(false);
    }
    tree.insert(key, value)?;
    Ok(true)
}

/// Writes (`Some`) and removes (`None`) keys of `tree` so that they all
/// take effect or none does: one write alone is atomic as it is; more go in
/// one batch. (Every sled batch and transaction writes and syncs sled's log
/// buffer at once: the store avoids them where one key does.)
pub(crate) fn write_together(tree: &sled::Tree, writes: Vec<(Vec<u8>, Option<Vec<u8>>)>) -> Result<(), Error> {
    match writes.len() {
        0 => {}
        1 => {
            for (k, v) in writes {
                match v {
                    Some(v) => tree.insert(k, v)?,
                    None => tree.remove(k)?,
                };
            }
        }
        _ => {
            let mut batch = sled::Batch::default();
            for (k, v) in writes {
                match v {
                    Some(v) => batch.insert(k, v),
                    None => batch.remove(k),
                }
            }
            tree.apply_batch(batch)?;
        }
    }
    Ok(())
}

/// The names of the record trees of format 2 (`meta` and `intents` keep
/// their format-1 names: their encoding did not change or is migrated in
/// place).
pub(crate) mod trees {
    pub const SPECS: &str = "specs@2";
    pub const APPS: &str = "apps@2";
    pub const INSTANCES: &str = "instances@2";
    pub const PENDING: &str = "pending@2";
    pub const LEDGER: &str = "ledger@2";
    pub const SERVICES: &str = "services@2";
    pub const QUEUE: &str = "queue@2";
    pub const REFUSALS: &str = "refusals@2";
    pub const REJECTIONS: &str = "rejections@2";
    pub const ALL: [&str; 9] = [SPECS, APPS, INSTANCES, PENDING, LEDGER, SERVICES, QUEUE, REFUSALS, REJECTIONS];
}

impl Store {
    /// Opens (or creates) the store in `dir` with default options. Fails if
    /// another process holds it.
    pub fn open(dir: &Path) -> Result<Store, Error> {
        Store::open_with(dir, &StoreOptions::default())
    }

    /// Opens (or creates) the store in `dir`, migrating an older format in
    /// place. Fails if another process holds it or its format is newer.
    pub fn open_with(dir: &Path, options: &StoreOptions) -> Result<Store, Error> {
        let open_err = |source| Error::Open { dir: dir.display().to_string(), source };
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(options.cache_bytes)
            .flush_every_ms(Some(FLUSH_EVERY_MS))
            .open()
            .map_err(open_err)?;
        let meta = db.open_tree("meta").map_err(open_err)?;
        let found = migrate::format_of(dir, &meta)?;
        if let Some(found) = found
            && found > FORMAT
        {
            return Err(Error::FutureFormat { dir: dir.display().to_string(), found, supported: FORMAT });
        }
        if found != Some(FORMAT) {
            migrate::to_current(&db, &meta)?;
        }
        migrate::drop_format1_trees(&db)?;
        let tree = |name: &str| db.open_tree(name).map_err(open_err);
        let store = Store {
            counts: Default::default(),
            specs: tree(trees::SPECS)?,
            apps: tree(trees::APPS)?,
            instances: tree(trees::INSTANCES)?,
            pending: tree(trees::PENDING)?,
            ledger: tree(trees::LEDGER)?,
            services: tree(trees::SERVICES)?,
            queue: tree(trees::QUEUE)?,
            refusals: tree(trees::REFUSALS)?,
            rejections: tree(trees::REJECTIONS)?,
            intents: tree("intents")?,
            meta,
            db,
        };
        store.repair_service_index()?;
        Ok(store)
    }

    /// The format stamped on this store.
    pub fn format(&self) -> Result<Option<u64>, Error> {
        migrate::format_of(Path::new(""), &self.meta)
    }

    /// Stamps a format (tests of what a future release would leave).
    #[doc(hidden)]
    pub fn stamp_format(&self, format: u64) -> Result<(), Error> {
        self.meta.insert("format", format.to_string().as_bytes())?;
        self.flush_blocking()
    }

    /// Forces everything written so far to disk. Called by the store's
    /// flusher thread (`StoreHandle::flush`, one at a time) and at open.
    pub fn flush_blocking(&self) -> Result<(), Error> {
        self.db.flush()?;
        Ok(())
    }

    /// What each tree holds: its name, how many records, and the bytes of
    /// their keys and values (the live data; sled's files hold more: see
    /// ARCHITECTURE.md). One scan of every tree.
    pub fn footprint(&self) -> Result<Vec<TreeFootprint>, Error> {
        let trees = [
            (trees::SPECS, &self.specs),
            (trees::APPS, &self.apps),
            (trees::INSTANCES, &self.instances),
            (trees::PENDING, &self.pending),
            (trees::LEDGER, &self.ledger),
            (trees::SERVICES, &self.services),
            (trees::QUEUE, &self.queue),
            (trees::REFUSALS, &self.refusals),
            (trees::REJECTIONS, &self.rejections),
            ("intents", &self.intents),
            ("meta", &self.meta),
        ];
        let mut out = Vec::with_capacity(trees.len());
        for (tree, t) in trees {
            let mut f = TreeFootprint { tree, records: 0, key_bytes: 0, value_bytes: 0 };
            for kv in t.iter() {
                let (k, v) = kv?;
                f.records += 1;
                f.key_bytes += k.len() as u64;
                f.value_bytes += v.len() as u64;
            }
            out.push(f);
        }
        Ok(out)
    }

    fn meta_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, Error> {
        self.meta.get(key)?.map(|v| decode("meta", &v)).transpose()
    }

    fn meta_put<T: Serialize>(&self, key: &str, v: &T) -> Result<(), Error> {
        put_if_changed(&self.meta, key.as_bytes(), encode(v)?)?;
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
}

/// sled's own background flush, in ms: a bound on what a crash loses
/// between the store's explicit flushes (every burst flushes anyway).
const FLUSH_EVERY_MS: u64 = 1_000;

#[cfg(test)]
mod tests;
