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

    fn refresh_ledger_cache(&self, keys: &[Vec<u8>]) -> Result<(), Error> {
        self.ledger_cache.refresh(&self.ledger, keys)
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
        for op in ops {
            let q = QueuedOp { op: op.clone(), attempts: 0, not_before_ms: 0, last_error: None };
            batch.insert(key2(backend, op.key()), encode(&q)?);
        }
        self.queue.apply_batch(batch)?;
        Ok(())
    }

    /// Every queued op of `backend`, in key order.
    pub fn queued(&self, backend: &str) -> Result<Vec<QueuedOp>, Error> {
        self.queue.scan_prefix(prefix(backend)).values().map(|v| decode("queue", &v?)).collect()
    }

    pub fn queue_len(&self, backend: &str) -> usize {
        self.queue.scan_prefix(prefix(backend)).count()
    }

    /// Records that `op` was applied: the ledger takes its effect and the
    /// queue entry goes, in one transaction. If a newer op replaced it in the
    /// meantime, the newer one stays queued.
    pub fn complete(&self, backend: &str, op: &Op) -> Result<(), Error> {
        let key = key2(backend, op.key());
        (&self.queue, &self.ledger).transaction(|(queue, ledger)| {
            if let Some(cur) = queue.get(&key)? {
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
            Ok(())
        })?;
        self.refresh_ledger_cache(&[key])
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
        Ok(())
    }
}
