//! Format migrations, run on open: format 1 (JSON records keyed by instance
//! or registration id alone; also a data dir without a stamp, which holds
//! format 1) becomes format 2 in place.
//!
//! Invariant: a crash at any point leaves a store that the next open
//! migrates or reads correctly. Format 2 lives in trees of other names
//! (`trees::ALL`). A migration clears them (whatever a crash mid-migration
//! left there), fills them from the format-1 trees, flushes, then re-encodes
//! `meta` and stamps it in one transaction, flushes again, and only then
//! drops the format-1 trees. A crash before the stamp re-runs it from the
//! start on the next open; after the stamp, open drops the format-1 trees
//! left over.

use std::collections::BTreeMap;
use std::path::Path;

use serde::de::DeserializeOwned;

use super::{Error, FORMAT, encode, key, trees};
use crate::model::{AppSpec, Registration, Timestamp};
use crate::plan::{Refusal, Rejection};

/// The record trees of format 1 (`meta` and `intents` carry over).
const FORMAT1_TREES: [&str; 7] = ["specs", "apps", "instances", "pending", "ledger", "queue", "refusals"];

/// The format stamped in `meta` (decimal text in every format).
pub(super) fn format_of(dir: &Path, meta: &sled::Tree) -> Result<Option<u64>, Error> {
    let Some(raw) = meta.get("format")? else { return Ok(None) };
    let text = String::from_utf8_lossy(&raw);
    text.trim()
        .parse()
        .map(Some)
        .map_err(|_| Error::BadFormat { dir: dir.display().to_string(), found: text.into_owned() })
}

fn json<T: DeserializeOwned>(tree: &'static str, bytes: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(bytes).map_err(|source| Error::DecodeFormat1 { tree, source })
}

/// Re-encodes every record of the format-1 tree `name` (if there is one)
/// into `to`, under the key `rekey` gives it, in one batch.
fn recode<T: DeserializeOwned + serde::Serialize>(
    db: &sled::Db,
    name: &'static str,
    to: &sled::Tree,
    rekey: impl Fn(&[u8], &T) -> Vec<u8>,
) -> Result<(), Error> {
    if !db.tree_names().iter().any(|n| n == name.as_bytes()) {
        return Ok(());
    }
    let mut batch = sled::Batch::default();
    for kv in db.open_tree(name)?.iter() {
        let (k, v) = kv?;
        let record: T = json(name, &v)?;
        batch.insert(rekey(&k, &record), encode(&record)?);
    }
    to.apply_batch(batch)?;
    Ok(())
}

/// The backend of a format-1 ledger, queue or refusal key (`backend \0 id`).
fn backend_of(k: &[u8]) -> &str {
    std::str::from_utf8(super::part(k, 0)).unwrap_or_default()
}

/// Migrates whatever format-1 records the store holds to format 2 and stamps it.
pub(super) fn to_current(db: &sled::Db, meta: &sled::Tree) -> Result<(), Error> {
    // A new data dir has nothing to migrate: it is only stamped (and says nothing).
    let names = db.tree_names();
    let had_records = FORMAT1_TREES.iter().any(|t| names.iter().any(|n| n == t.as_bytes()))
        || meta.iter().next().transpose()?.is_some();
    let tree = |name: &str| db.open_tree(name);
    for name in trees::ALL {
        tree(name)?.clear()?;
    }
    recode::<AppSpec>(db, "specs", &tree(trees::SPECS)?, |k, _| k.to_vec())?;
    recode::<crate::assemble::AppRecord>(db, "apps", &tree(trees::APPS)?, |k, _| k.to_vec())?;
    recode::<super::facts::Stored>(db, "instances", &tree(trees::INSTANCES)?, |_, s| {
        key(&[s.record.app_id.as_str(), s.record.instance.as_str()])
    })?;
    recode::<super::PendingEntry>(db, "pending", &tree(trees::PENDING)?, |_, p| {
        key(&[p.app_id.as_str(), p.instance.as_str()])
    })?;
    if db.tree_names().iter().any(|n| n == b"ledger".as_slice()) {
        let mut batch = sled::Batch::default();
        for kv in db.open_tree("ledger")?.iter() {
            let (k, v) = kv?;
            let r: Registration = json("ledger", &v)?;
            batch.insert(key(&[backend_of(&k), &r.app_id, &r.id]), super::ledger::ledger_value(&r)?);
        }
        tree(trees::LEDGER)?.apply_batch(batch)?;
    }
    recode::<super::QueuedOp>(db, "queue", &tree(trees::QUEUE)?, |k, q| {
        let r = q.op.registration();
        key(&[backend_of(k), &r.app_id, &r.id])
    })?;
    recode::<Refusal>(db, "refusals", &tree(trees::REFUSALS)?, |k, _| k.to_vec())?;
    // The ledger's service index, from the migrated ledger.
    let mut index = sled::Batch::default();
    for (k, n) in super::ledger::service_counts(&tree(trees::LEDGER)?)? {
        index.insert(k, &n.to_be_bytes());
    }
    tree(trees::SERVICES)?.apply_batch(index)?;
    // Rejections: one list in `meta` before, one per app now.
    let rejections: Vec<Rejection> = meta.get("rejections")?.map(|v| json("meta", &v)).transpose()?.unwrap_or_default();
    let mut by_app: BTreeMap<String, Vec<Rejection>> = BTreeMap::new();
    for r in rejections {
        by_app.entry(r.app_id.clone()).or_default().push(r);
    }
    let mut batch = sled::Batch::default();
    for (app, rs) in by_app {
        batch.insert(app.as_bytes(), encode(&rs)?);
    }
    tree(trees::REJECTIONS)?.apply_batch(batch)?;
    db.flush()?;

    // `meta`, re-encoded and stamped at once.
    let high_water: Option<Timestamp> = meta.get("high_water")?.map(|v| json("meta", &v)).transpose()?;
    let last_resync: Option<String> = meta.get("last_resync")?.map(|v| json("meta", &v)).transpose()?;
    let high_water = high_water.map(|t| encode(&t)).transpose()?;
    let last_resync = last_resync.map(|t| encode(&t)).transpose()?;
    meta.transaction(|m| {
        if let Some(v) = &high_water {
            m.insert("high_water", v.as_slice())?;
        }
        if let Some(v) = &last_resync {
            m.insert("last_resync", v.as_slice())?;
        }
        m.remove("rejections")?;
        m.insert("format", FORMAT.to_string().as_bytes())?;
        Ok::<_, sled::transaction::ConflictableTransactionError<Error>>(())
    })?;
    db.flush()?;
    if had_records {
        tracing::info!(format = FORMAT, "store migrated");
    }
    Ok(())
}

/// Drops the format-1 record trees (once format 2 is stamped).
pub(super) fn drop_format1_trees(db: &sled::Db) -> Result<(), Error> {
    let names = db.tree_names();
    let mut dropped = false;
    for name in FORMAT1_TREES {
        if names.iter().any(|n| n == name.as_bytes()) {
            db.drop_tree(name)?;
            dropped = true;
        }
    }
    if dropped {
        db.flush()?;
    }
    Ok(())
}
