//! Trees `refusals@2` (permanent refusals in force, by `backend \0
//! registration id`), `intents` (services whose first write started, by
//! `backend \0 service`), the ownership records beside the ledger, and
//! `rejections@2` (what the planner would not register, and why, by app).
//!
//! Invariants:
//! - At most one refusal per backend and registration; it is written when a
//!   backend refuses an op for good and removed when the plan no longer calls
//!   for that very op, or the operator asks for a retry.
//! - An intent is durable before the first write of its service on a
//!   backend whose ledger is the only ownership record, so a retry after a
//!   kill -9 knows the names it finds as its own.
//! - A rejection lives under the app it names; replacing rejections writes
//!   only the apps whose list changed.

use std::collections::{BTreeMap, BTreeSet};

use super::{Error, Store, decode, encode, key2, prefix};
use crate::plan::{Refusal, Rejection};

impl Store {
    /// The refusals in force on `backend`, in key order.
    pub fn refusals(&self, backend: &str) -> Result<Vec<Refusal>, Error> {
        self.refusals.scan_prefix(prefix(&[backend])).values().map(|v| decode("refusals", &v?)).collect()
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
        let mut writes = Vec::new();
        for e in entities {
            let key = key2(backend, e);
            if self.refusals.contains_key(&key)? {
                writes.push((key, None));
            }
        }
        super::write_together(&self.refusals, writes)
    }

    /// Services of `backend` whose first write has started.
    pub fn intents(&self, backend: &str) -> Result<std::collections::BTreeSet<String>, Error> {
        let skip = prefix(&[backend]).len();
        self.intents
            .scan_prefix(prefix(&[backend]))
            .keys()
            .map(|k| Ok(String::from_utf8_lossy(&k?[skip..]).into_owned()))
            .collect()
    }

    /// Records that the first write of `service` on `backend` is about to
    /// start (the caller flushes before writing).
    pub fn intend(&self, backend: &str, service: &str) -> Result<(), Error> {
        let key = key2(backend, service);
        if !self.intents.contains_key(&key)? {
            self.intents.insert(key, &[])?;
        }
        Ok(())
    }

    /// Forgets an intent: the ledger holds the service now, or it is gone.
    pub fn drop_intent(&self, backend: &str, service: &str) -> Result<(), Error> {
        let key = key2(backend, service);
        if self.intents.contains_key(&key)? {
            self.intents.remove(key)?;
        }
        Ok(())
    }

    /// Lifts every refusal (the operator's `--retry-refused`); how many.
    pub fn clear_refusals(&self) -> Result<usize, Error> {
        let n = self.refusals.len();
        self.refusals.clear()?;
        Ok(n)
    }

    /// Registrations the backends refused, and apps whose labels are bad,
    /// as last computed: shown by `switchboard state`. By app, then in the
    /// order they were given.
    pub fn rejections(&self) -> Result<Vec<Rejection>, Error> {
        let mut out = Vec::new();
        for v in self.rejections.iter().values() {
            out.extend(decode::<Vec<Rejection>>("rejections", &v?)?);
        }
        Ok(out)
    }

    /// Replaces every rejection with `rejections`.
    pub fn set_rejections(&self, rejections: &[Rejection]) -> Result<(), Error> {
        let mut apps: BTreeSet<String> = BTreeSet::new();
        for k in self.rejections.iter().keys() {
            apps.insert(String::from_utf8_lossy(&k?).into_owned());
        }
        self.replace_rejections(apps, rejections)
    }

    /// Replaces the rejections of `apps` (and of the apps `rejections` name)
    /// with `rejections`; other apps' rejections are left as they are. Only
    /// the apps whose list changed are written.
    pub fn set_rejections_of(&self, apps: &[String], rejections: &[Rejection]) -> Result<(), Error> {
        self.replace_rejections(apps.iter().cloned().collect(), rejections)
    }

    fn replace_rejections(&self, mut apps: BTreeSet<String>, rejections: &[Rejection]) -> Result<(), Error> {
        let mut by_app: BTreeMap<&str, Vec<&Rejection>> = BTreeMap::new();
        for r in rejections {
            apps.insert(r.app_id.clone());
            by_app.entry(r.app_id.as_str()).or_default().push(r);
        }
        let mut writes = Vec::new();
        for app in &apps {
            let old = self.rejections.get(app.as_bytes())?;
            match by_app.get(app.as_str()) {
                Some(rs) => {
                    let value = encode(rs)?;
                    if old.is_none_or(|o| *o != value[..]) {
                        writes.push((app.as_bytes().to_vec(), Some(value)));
                    }
                }
                None if old.is_some() => writes.push((app.as_bytes().to_vec(), None)),
                None => {}
            }
        }
        super::write_together(&self.rejections, writes)
    }
}
