//! Trees `ledger` (what Switchboard registered, per backend) and `queue`
//! (operations not yet applied, at most one per backend and registration).
//!
//! Invariant: an op leaves the queue only in the same transaction that
//! records its effect in the ledger, so a crash never loses an op nor leaves
//! the ledger claiming something that was not done.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::{Error, Store, decode, encode, key2, prefix};

/// The ledger and queue group of `app` on `backend`.
fn group(backend: &str, app: &str) -> Vec<u8> {
    key2(backend, app)
}
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

impl Store {
    /// What Switchboard registered on `backend`.
    pub fn ledger(&self, backend: &str) -> Result<Vec<Registration>, Error> {
        self.ledger_cache.read(&self.ledger, &prefix(backend))
    }

    /// Whether the ledger of `backend` holds a registration of `service`
    /// (of any app).
    pub fn ledger_holds_service(&self, backend: &str, service: &str) -> Result<bool, Error> {
        self.ledger_cache.any(&self.ledger, &prefix(backend), |r| r.service == service)
    }

    /// How many registrations the ledger of `backend` holds.
    pub fn ledger_len(&self, backend: &str) -> usize {
        self.ledger_cache.count(&self.ledger, &prefix(backend)).unwrap_or(0)
    }

    /// What Switchboard registered on `backend` for one app.
    pub fn ledger_of(&self, backend: &str, app: &str) -> Result<Vec<Registration>, Error> {
        self.ledger_cache.read_group(&self.ledger, &group(backend, app))
    }

    /// The apps (as in `Registration::app_id`) with a registration in the
    /// ledger of `backend` or an op in its queue.
    pub fn planned_apps(&self, backend: &str) -> Result<std::collections::BTreeSet<String>, Error> {
        let p = prefix(backend);
        let mut apps = std::collections::BTreeSet::new();
        for g in
            self.ledger_cache.groups(&self.ledger, &p)?.into_iter().chain(self.queue_cache.groups(&self.queue, &p)?)
        {
            apps.insert(String::from_utf8_lossy(&g[p.len()..]).into_owned());
        }
        Ok(apps)
    }

    fn refresh_ledger_cache(&self, keys: &[Vec<u8>]) -> Result<(), Error> {
        self.ledger_cache.refresh(&self.ledger, keys)
    }

    fn refresh_queue_cache(&self, keys: &[Vec<u8>]) -> Result<(), Error> {
        self.queue_cache.refresh(&self.queue, keys)
    }

    /// Copies ledger entries in (for a scratch store seeded from the real one).
    pub fn import_ledger(&self, backend: &str, regs: &[Registration]) -> Result<(), Error> {
        let mut keys = Vec::with_capacity(regs.len());
        for r in regs {
            let key = key2(backend, &r.id);
            self.ledger.insert(key.as_slice(), encode(r)?)?;
            keys.push(key);
        }
        self.refresh_ledger_cache(&keys)
    }

    /// Drops ledger entries of `backend` that are in none of `keep` (used by
    /// a resync for entries that are neither desired nor present).
    pub fn forget(&self, backend: &str, ids: &[String]) -> Result<(), Error> {
        let keys: Vec<Vec<u8>> = ids.iter().map(|id| key2(backend, id)).collect();
        for key in &keys {
            self.ledger.remove(key.as_slice())?;
        }
        self.refresh_ledger_cache(&keys)
    }

    /// Queues ops for `backend`, replacing any queued op for the same key.
    /// All ops of one call commit together.
    pub fn enqueue(&self, backend: &str, ops: &[Op]) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        let mut keys = Vec::with_capacity(ops.len());
        for op in ops {
            let q = QueuedOp { op: op.clone(), attempts: 0, not_before_ms: 0, last_error: None };
            let key = key2(backend, op.key());
            batch.insert(key.as_slice(), encode(&q)?);
            keys.push(key);
        }
        self.queue.apply_batch(batch)?;
        self.refresh_queue_cache(&keys)
    }

    /// Every queued op of `backend`, in key order.
    pub fn queued(&self, backend: &str) -> Result<Vec<QueuedOp>, Error> {
        self.queue_cache.read(&self.queue, &prefix(backend))
    }

    /// The queued ops of one app on `backend`, in key order.
    pub fn queued_of(&self, backend: &str, app: &str) -> Result<Vec<QueuedOp>, Error> {
        self.queue_cache.read_group(&self.queue, &group(backend, app))
    }

    pub fn queue_len(&self, backend: &str) -> usize {
        self.queue_cache.count(&self.queue, &prefix(backend)).unwrap_or(0)
    }

    /// Records that `op` was applied: the ledger takes its effect and the
    /// queue entry goes, in one transaction. If a newer op replaced it in the
    /// meantime, the newer one stays queued.
    pub fn complete(&self, backend: &str, op: &Op) -> Result<(), Error> {
        self.complete_many(backend, std::slice::from_ref(op))
    }

    /// `complete` for several applied ops, in one transaction (a group of
    /// ledger updates costs one commit).
    pub fn complete_many(&self, backend: &str, ops: &[Op]) -> Result<(), Error> {
        if ops.is_empty() {
            return Ok(());
        }
        let keys: Vec<Vec<u8>> = ops.iter().map(|op| key2(backend, op.key())).collect();
        (&self.queue, &self.ledger).transaction(|(queue, ledger)| {
            for (op, key) in ops.iter().zip(&keys) {
                if let Some(cur) = queue.get(key)? {
                    let cur: QueuedOp = decode("queue", &cur).map_err(ConflictableTransactionError::Abort)?;
                    if cur.op == *op {
                        queue.remove(key.as_slice())?;
                    }
                }
                match op {
                    Op::Register(r) => {
                        ledger.insert(key.as_slice(), encode(r).map_err(ConflictableTransactionError::Abort)?)?;
                    }
                    Op::Deregister { .. } => {
                        ledger.remove(key.as_slice())?;
                    }
                }
            }
            Ok(())
        })?;
        self.refresh_queue_cache(&keys)?;
        self.refresh_ledger_cache(&keys)
    }

    /// Records a failed attempt of `op`: retried not before `not_before_ms`.
    pub fn retry_later(&self, backend: &str, op: &Op, not_before_ms: u64, error: &str) -> Result<u32, Error> {
        let key = key2(backend, op.key());
        let mut attempts = 0;
        self.queue.fetch_and_update(&key, |cur| {
            let cur = cur?;
            let mut q: QueuedOp = serde_json::from_slice(cur).ok()?;
            if q.op != *op {
                return Some(cur.to_vec());
            }
            q.attempts += 1;
            attempts = q.attempts;
            q.not_before_ms = not_before_ms;
            q.last_error = Some(error.to_owned());
            serde_json::to_vec(&q).ok()
        })?;
        self.refresh_queue_cache(std::slice::from_ref(&key))?;
        Ok(attempts)
    }

    /// Drops a queued op that can never succeed as it is (permanent error).
    pub fn drop_queued(&self, backend: &str, op: &Op) -> Result<(), Error> {
        let key = key2(backend, op.key());
        self.queue
            .compare_and_swap(
                &key,
                self.queue.get(&key)?.filter(|cur| decode::<QueuedOp>("queue", cur).is_ok_and(|q| q.op == *op)),
                None as Option<&[u8]>,
            )?
            .ok();
        self.refresh_queue_cache(std::slice::from_ref(&key))
    }
}
