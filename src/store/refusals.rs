//! Trees `refusals` (permanent refusals in force, by `backend \0
//! registration id`) and `intents` (services whose first write started, by
//! `backend \0 service`), the ownership records beside the ledger.
//!
//! Invariants:
//! - At most one refusal per backend and registration; it is written when a
//!   backend refuses an op for good and removed when the plan no longer calls
//!   for that very op, or the operator asks for a retry.
//! - An intent is durable before the first write of its service on a
//!   backend whose ledger is the only ownership record, so a retry after a
//!   kill -9 knows the names it finds as its own.

use super::{Error, Store, decode, encode, key2, prefix};
use crate::plan::Refusal;

impl Store {
    /// The refusals in force on `backend`, in key order.
    pub fn refusals(&self, backend: &str) -> Result<Vec<Refusal>, Error> {
        self.refusals.scan_prefix(prefix(backend)).values().map(|v| decode("refusals", &v?)).collect()
    }

    /// Every refusal in force, on every backend.
    pub fn all_refusals(&self) -> Result<Vec<Refusal>, Error> {
        self.refusals.iter().values().map(|v| decode("refusals", &v?)).collect()
    }

    /// Records a refusal. An identical input refused again keeps its first
    /// `since`. Returns whether it is new (not the same input again).
    pub fn refuse(&self, r: &Refusal) -> Result<bool, Error> {
        let key = key2(&r.backend, &r.entity);
        let old: Option<Refusal> = self.refusals.get(&key)?.map(|v| decode("refusals", &v)).transpose()?;
        if old.as_ref().is_some_and(|o| o.input == r.input) {
            return Ok(false);
        }
        self.refusals.insert(key, encode(r)?)?;
        Ok(true)
    }

    /// Lifts the refusals of `backend` for these registration ids.
    pub fn lift_refusals(&self, backend: &str, entities: &[String]) -> Result<(), Error> {
        if entities.is_empty() {
            return Ok(());
        }
        let mut batch = sled::Batch::default();
        for e in entities {
            batch.remove(key2(backend, e));
        }
        self.refusals.apply_batch(batch)?;
        Ok(())
    }

    /// Services of `backend` whose first write has started.
    pub fn intents(&self, backend: &str) -> Result<std::collections::BTreeSet<String>, Error> {
        let skip = prefix(backend).len();
        self.intents
            .scan_prefix(prefix(backend))
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[skip..]).into_owned()))
            .collect()
    }

    /// Records that the first write of `service` on `backend` is about to
    /// start (the caller flushes before writing).
    pub fn intend(&self, backend: &str, service: &str) -> Result<(), Error> {
        self.intents.insert(key2(backend, service), &[])?;
        Ok(())
    }

    /// Forgets an intent: the ledger holds the service now, or it is gone.
    pub fn drop_intent(&self, backend: &str, service: &str) -> Result<(), Error> {
        self.intents.remove(key2(backend, service))?;
        Ok(())
    }

    /// Lifts every refusal (the operator's `--retry-refused`); how many.
    pub fn clear_refusals(&self) -> Result<usize, Error> {
        let n = self.refusals.len();
        self.refusals.clear()?;
        Ok(n)
    }
}
