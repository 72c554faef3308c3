//! Trees `ledger@2` (what Switchboard registered, per backend), its index
//! `services@2`, and `queue@2` (operations not yet applied, at most one per
//! backend and registration). Keys are `backend \0 app \0 registration id`,
//! so one app's entries on one backend are one prefix scan.
//!
//! Invariants:
//! - An op leaves the queue only after its effect is in the ledger, so a
//!   crash never loses an op nor leaves the ledger claiming something that
//!   was not done (see `complete_many` for why that is an order of writes,
//!   not a transaction).
//! - `services@2` counts, under `backend \0 service \0 app`, the ledger's
//!   entries of that service and app, and never counts one the ledger lacks: every ledger write updates it
//!   (imports and forgets in one transaction, completions in a safe order),
//!   and open repairs what a crash left out.
//! - A write that would leave a record as it was is not made.
//! - A ledger value leaves out what its key holds (app and registration id).

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::{Error, Store, decode, encode, key, part, prefix};
use crate::model::Registration;
use crate::plan::Op;

/// An operation waiting to be applied to one backend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueuedOp {
    pub op: Op,
    /// Failed attempts so far.
    pub attempts: u32,
    /// Local wall-clock milliseconds before which it is not retried.
    pub not_before_ms: u64,
    pub last_error: Option<String>,
}

/// The ledger and queue key of `reg` on `backend`.
fn entry_key(backend: &str, reg: &Registration) -> Vec<u8> {
    key(&[backend, &reg.app_id, &reg.id])
}

/// The `services@2` key of `reg` on `backend`: `backend \0 service \0 app`.
/// Its value counts the app's ledger entries of that service (u64, big-endian).
pub(super) fn service_key(backend: &str, reg: &Registration) -> Vec<u8> {
    key(&[backend, &reg.service, &reg.app_id])
}

fn count(v: Option<&[u8]>) -> u64 {
    v.and_then(|b| <[u8; 8]>::try_from(b).ok()).map(u64::from_be_bytes).unwrap_or(0)
}

fn counted(n: u64) -> Option<Vec<u8>> {
    (n > 0).then(|| n.to_be_bytes().to_vec())
}

/// The ledger's value for `reg`: the registration without what its key
/// holds (app and id), which `ledger_record` puts back.
pub(super) fn ledger_value(reg: &Registration) -> Result<Vec<u8>, Error> {
    encode(&Registration { id: String::new(), app_id: String::new(), ..reg.clone() })
}

/// The registration stored under `key` (`backend \0 app \0 id`).
pub(super) fn ledger_record(key: &[u8], value: &[u8]) -> Result<Registration, Error> {
    let mut r: Registration = decode("ledger", value)?;
    r.app_id = String::from_utf8_lossy(part(key, 1)).into_owned();
    r.id = String::from_utf8_lossy(super::part_after(key, 2)).into_owned();
    Ok(r)
}

fn ledger_all(iter: sled::Iter) -> Result<Vec<Registration>, Error> {
    iter.map(|kv| {
        let (k, v) = kv?;
        ledger_record(&k, &v)
    })
    .collect()
}

/// Counts `reg`'s service up or down in the index, inside a transaction.
fn bump(
    services: &TransactionalTree,
    backend: &str,
    reg: &Registration,
    up: bool,
) -> Result<(), ConflictableTransactionError<Error>> {
    let key = service_key(backend, reg);
    let n = count(services.get(&key)?.as_deref());
    match counted(if up { n + 1 } else { n.saturating_sub(1) }) {
        Some(v) => services.insert(key, v)?,
        None => services.remove(key)?,
    };
    Ok(())
}

fn abort(e: Error) -> ConflictableTransactionError<Error> {
    ConflictableTransactionError::Abort(e)
}

/// Sets (`Some`) or removes (`None`) the ledger entry under `key`, and its
/// service index entry, inside a transaction; writes nothing when the entry
/// is already so.
fn set_entry(
    ledger: &TransactionalTree,
    services: &TransactionalTree,
    backend: &str,
    key: &[u8],
    reg: Option<&Registration>,
) -> Result<isize, ConflictableTransactionError<Error>> {
    let old: Option<Registration> = ledger.get(key)?.map(|v| ledger_record(key, &v)).transpose().map_err(abort)?;
    if old.as_ref() == reg {
        return Ok(0);
    }
    if let Some(old) = &old
        && reg.is_none_or(|r| r.service != old.service)
    {
        bump(services, backend, old, false)?;
    }
    match reg {
        Some(r) => {
            ledger.insert(key, ledger_value(r).map_err(abort)?)?;
            if old.as_ref().is_none_or(|o| o.service != r.service) {
                bump(services, backend, r, true)?;
            }
        }
        None => {
            ledger.remove(key)?;
        }
    }
    Ok(delta(old.is_some(), reg.is_some()))
}

/// How a write changes a count: an entry that appears (+1) or goes (-1).
fn delta(had: bool, has: bool) -> isize {
    isize::from(has) - isize::from(had)
}

/// How many ledger entries and queued ops each backend has, kept so the
/// gauges (and the drain's "anything queued?") need no scan. A backend's
/// count is taken by one scan on first use and then moved by every write,
/// under this lock, which every ledger and queue writer holds.
#[derive(Default)]
pub(super) struct Counts {
    ledger: std::collections::HashMap<String, usize>,
    queue: std::collections::HashMap<String, usize>,
}

fn adjust(map: &mut std::collections::HashMap<String, usize>, backend: &str, by: isize) {
    if let Some(n) = map.get_mut(backend) {
        *n = n.saturating_add_signed(by);
    }
}

fn counted_keys(map: &mut std::collections::HashMap<String, usize>, tree: &sled::Tree, backend: &str) -> usize {
    *map.entry(backend.to_owned()).or_insert_with(|| tree.scan_prefix(prefix(&[backend])).keys().count())
}

/// The distinct apps that keys `backend \0 app \0 ...` of `tree` name: one
/// seek per app, nothing decoded.
fn apps_of(tree: &sled::Tree, backend: &str, out: &mut BTreeSet<String>) -> Result<(), Error> {
    let p = prefix(&[backend]);
    let mut from = p.clone();
    while let Some(kv) = tree.range(from.clone()..).next() {
        let (k, _) = kv?;
        if !k.starts_with(&p) {
            break;
        }
        let app = part(&k, 1);
        out.insert(String::from_utf8_lossy(app).into_owned());
        // The first key past every `backend \0 app \0 ...`.
        from = key(&[backend]);
        from.push(0);
        from.extend_from_slice(app);
        from.push(1);
    }
    Ok(())
}

fn decode_all<T: serde::de::DeserializeOwned>(tree: &'static str, iter: sled::Iter) -> Result<Vec<T>, Error> {
    iter.values().map(|v| decode(tree, &v?)).collect()
}

impl Store {
    /// What Switchboard registered on `backend`, by app then registration id.
    pub fn ledger(&self, backend: &str) -> Result<Vec<Registration>, Error> {
        ledger_all(self.ledger.scan_prefix(prefix(&[backend])))
    }

    /// Whether the ledger of `backend` holds a registration of `service`
    /// (of any app): one seek in the service index.
    pub fn ledger_holds_service(&self, backend: &str, service: &str) -> Result<bool, Error> {
        Ok(self.services.scan_prefix(prefix(&[backend, service])).next().transpose()?.is_some())
    }

    /// How many registrations the ledger of `backend` holds (counts keys:
    /// nothing is decoded).
    pub fn ledger_len(&self, backend: &str) -> usize {
        counted_keys(&mut self.counts().ledger, &self.ledger, backend)
    }

    fn counts(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What Switchboard registered on `backend` for one app (one prefix scan).
    pub fn ledger_of(&self, backend: &str, app: &str) -> Result<Vec<Registration>, Error> {
        ledger_all(self.ledger.scan_prefix(prefix(&[backend, app])))
    }

    /// The apps (as in `Registration::app_id`) with a registration in the
    /// ledger of `backend` or an op in its queue (from the keys: nothing decoded).
    pub fn planned_apps(&self, backend: &str) -> Result<BTreeSet<String>, Error> {
        let mut apps = BTreeSet::new();
        apps_of(&self.ledger, backend, &mut apps)?;
        apps_of(&self.queue, backend, &mut apps)?;
        Ok(apps)
    }

    /// Copies ledger entries in (for a scratch store seeded from the real
    /// one, or a ledger shared under `--ha`). Entries already so are not written.
    pub fn import_ledger(&self, backend: &str, regs: &[Registration]) -> Result<(), Error> {
        if regs.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = regs.iter().map(|r| entry_key(backend, r)).collect();
        let mut counts = self.counts();
        let by = (&self.ledger, &self.services).transaction(|(ledger, services)| {
            let mut by = 0;
            for (r, key) in regs.iter().zip(&keys) {
                by += set_entry(ledger, services, backend, key, Some(r))?;
            }
            Ok(by)
        })?;
        adjust(&mut counts.ledger, backend, by);
        Ok(())
    }

    /// Drops the ledger entries of `backend` with these registration ids
    /// (used by a resync for entries that are neither desired nor present).
    /// Finds their keys by one scan of the backend's keys.
    pub fn forget(&self, backend: &str, ids: &[String]) -> Result<(), Error> {
        if ids.is_empty() {
            return Ok(());
        }
        let wanted: BTreeSet<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
        let mut keys = Vec::new();
        for k in self.ledger.scan_prefix(prefix(&[backend])).keys() {
            let k = k?;
            if wanted.contains(super::part_after(&k, 2)) {
                keys.push(k);
            }
        }
        let mut counts = self.counts();
        let by = (&self.ledger, &self.services).transaction(|(ledger, services)| {
            let mut by = 0;
            for key in &keys {
                by += set_entry(ledger, services, backend, key, None)?;
            }
            Ok(by)
        })?;
        adjust(&mut counts.ledger, backend, by);
        Ok(())
    }

    /// Queues ops for `backend`, replacing any queued op for the same key.
    /// All ops of one call commit together; an op queued exactly so already
    /// is not written again.
    pub fn enqueue(&self, backend: &str, ops: &[Op]) -> Result<(), Error> {
        let mut counts = self.counts();
        let mut writes = Vec::new();
        let mut by = 0;
        for op in ops {
            let q = QueuedOp { op: op.clone(), attempts: 0, not_before_ms: 0, last_error: None };
            let key = entry_key(backend, op.registration());
            let value = encode(&q)?;
            match self.queue.get(&key)? {
                Some(old) if *old == value[..] => continue,
                Some(_) => {}
                None => by += 1,
            }
            writes.push((key, Some(value)));
        }
        super::write_together(&self.queue, writes)?;
        adjust(&mut counts.queue, backend, by);
        Ok(())
    }

    /// Every queued op of `backend`, by app then registration id.
    pub fn queued(&self, backend: &str) -> Result<Vec<QueuedOp>, Error> {
        decode_all("queue", self.queue.scan_prefix(prefix(&[backend])))
    }

    /// The queued ops of one app on `backend`, by registration id (one prefix scan).
    pub fn queued_of(&self, backend: &str, app: &str) -> Result<Vec<QueuedOp>, Error> {
        decode_all("queue", self.queue.scan_prefix(prefix(&[backend, app])))
    }

    /// How many ops are queued for `backend` (counts keys: nothing is decoded).
    pub fn queue_len(&self, backend: &str) -> usize {
        counted_keys(&mut self.counts().queue, &self.queue, backend)
    }

    /// Records that `op` was applied: the ledger takes its effect, then the
    /// queue entry goes (see `complete_many`). If a newer op replaced it in
    /// the meantime, the newer one stays queued.
    pub fn complete(&self, backend: &str, op: &Op) -> Result<(), Error> {
        self.complete_many(backend, std::slice::from_ref(op))
    }

    /// `complete` for several applied ops. Each op's writes are single-key
    /// writes in a safe order, not a transaction: every sled transaction
    /// and batch writes and syncs sled's log buffer at once, which made
    /// completions the largest part of the bytes the store wrote. sled
    /// recovers its log in order, so after a crash:
    /// - the ledger is written before the queue entry goes: at worst the op
    ///   is still queued and applied again (ops are idempotent);
    /// - the service index never names a service the ledger does not hold
    ///   (an index entry is added after its ledger entry and removed before
    ///   it), so ownership is never over-claimed; what it lacks is added
    ///   back on open (`repair_service_index`).
    pub fn complete_many(&self, backend: &str, ops: &[Op]) -> Result<(), Error> {
        let mut counts = self.counts();
        for op in ops {
            let key = entry_key(backend, op.registration());
            let effect = match op {
                Op::Register(r) => Some(r),
                Op::Deregister { .. } => None,
            };
            let by = self.set_entry_ordered(backend, &key, effect)?;
            adjust(&mut counts.ledger, backend, by);
            if let Some(cur) = self.queue.get(&key)?
                && decode::<QueuedOp>("queue", &cur)?.op == *op
                // A newer op that replaced it meanwhile stays.
                && self.queue.compare_and_swap(&key, Some(cur), None as Option<&[u8]>)?.is_ok()
            {
                adjust(&mut counts.queue, backend, -1);
            }
        }
        Ok(())
    }

    /// `set_entry` without a transaction, in the order `complete_many` needs.
    fn set_entry_ordered(&self, backend: &str, key: &[u8], reg: Option<&Registration>) -> Result<isize, Error> {
        let old: Option<Registration> = self.ledger.get(key)?.map(|v| ledger_record(key, &v)).transpose()?;
        if old.as_ref() == reg {
            return Ok(0);
        }
        let bump = |r: &Registration, up: bool| -> Result<(), Error> {
            self.services.update_and_fetch(service_key(backend, r), |v| {
                let n = count(v);
                counted(if up { n + 1 } else { n.saturating_sub(1) })
            })?;
            Ok(())
        };
        if let Some(old) = &old
            && reg.is_none_or(|r| r.service != old.service)
        {
            bump(old, false)?;
        }
        match reg {
            Some(r) => {
                self.ledger.insert(key, ledger_value(r)?)?;
                if old.as_ref().is_none_or(|o| o.service != r.service) {
                    bump(r, true)?;
                }
            }
            None => {
                self.ledger.remove(key)?;
            }
        }
        Ok(delta(old.is_some(), reg.is_some()))
    }

    /// Makes `services@2` name exactly the ledger's services (after a crash
    /// between a ledger write and its index write). One scan of each.
    pub(super) fn repair_service_index(&self) -> Result<(), Error> {
        let want = service_counts(&self.ledger)?;
        let mut have = std::collections::BTreeMap::new();
        for kv in self.services.iter() {
            let (k, v) = kv?;
            have.insert(k.to_vec(), count(Some(&v)));
        }
        for (k, n) in &have {
            if want.get(k) != Some(n) {
                match want.get(k) {
                    Some(n) => self.services.insert(k.as_slice(), &n.to_be_bytes())?,
                    None => self.services.remove(k.as_slice())?,
                };
            }
        }
        for (k, n) in want.iter().filter(|(k, _)| !have.contains_key(*k)) {
            self.services.insert(k.as_slice(), &n.to_be_bytes())?;
        }
        Ok(())
    }

    /// Records a failed attempt of `op`: retried not before `not_before_ms`.
    pub fn retry_later(&self, backend: &str, op: &Op, not_before_ms: u64, error: &str) -> Result<u32, Error> {
        let key = entry_key(backend, op.registration());
        let mut attempts = 0;
        self.queue.fetch_and_update(&key, |cur| {
            let cur = cur?;
            let mut q: QueuedOp = postcard::from_bytes(cur).ok()?;
            if q.op != *op {
                return Some(cur.to_vec());
            }
            q.attempts += 1;
            attempts = q.attempts;
            q.not_before_ms = not_before_ms;
            q.last_error = Some(error.to_owned());
            postcard::to_allocvec(&q).ok()
        })?;
        Ok(attempts)
    }

    /// Drops a queued op that can never succeed as it is (permanent error).
    pub fn drop_queued(&self, backend: &str, op: &Op) -> Result<(), Error> {
        let key = entry_key(backend, op.registration());
        let mut counts = self.counts();
        let Some(cur) = self.queue.get(&key)? else { return Ok(()) };
        if decode::<QueuedOp>("queue", &cur).is_ok_and(|q| q.op == *op)
            // Lost a race with a newer op: that one stays.
            && self.queue.compare_and_swap(&key, Some(cur), None as Option<&[u8]>)?.is_ok()
        {
            adjust(&mut counts.queue, backend, -1);
        }
        Ok(())
    }
}

/// What `services@2` should hold for `ledger`: each key and its count.
pub(super) fn service_counts(ledger: &sled::Tree) -> Result<std::collections::BTreeMap<Vec<u8>, u64>, Error> {
    let mut want = std::collections::BTreeMap::new();
    for kv in ledger.iter() {
        let (k, v) = kv?;
        let r = ledger_record(&k, &v)?;
        *want.entry(service_key(std::str::from_utf8(part(&k, 0)).unwrap_or_default(), &r)).or_insert(0) += 1;
    }
    Ok(want)
}
