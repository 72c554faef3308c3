//! Tree `pending`: instances that serve but cannot be registered yet, and
//! since when (local wall clock), so the grace period and `switchboard state`
//! can see them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Error, Store, encode};
use crate::assemble::Lack;
use crate::model::{AppId, InstanceId};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingEntry {
    pub instance: InstanceId,
    pub app_id: AppId,
    pub lack: Lack,
    /// Local wall-clock milliseconds when it was first seen pending.
    pub since_ms: u64,
}

impl Store {
    pub fn pending(&self) -> Result<Vec<PendingEntry>, Error> {
        self.pending_cache.read(&self.pending, &[])
    }

    /// Replaces the pending entries of `apps` with `now_pending` (which holds
    /// only instances of those apps), keeping the first-seen time of entries
    /// that were already pending. Other apps' entries are left as they are.
    pub fn set_pending_of(
        &self,
        apps: &[AppId],
        now_pending: &[(InstanceId, AppId, Lack)],
        now_ms: u64,
    ) -> Result<(), Error> {
        let mut old = BTreeMap::new();
        for app in apps {
            for p in self.pending_cache.read_group(&self.pending, app.as_str().as_bytes())? {
                old.insert(p.instance.clone(), p);
            }
        }
        self.replace_pending(old, now_pending, now_ms)
    }

    /// Replaces the pending set with `now_pending`, keeping the first-seen
    /// time of entries that were already pending.
    pub fn set_pending(&self, now_pending: &[(InstanceId, AppId, Lack)], now_ms: u64) -> Result<(), Error> {
        let old: BTreeMap<InstanceId, PendingEntry> =
            self.pending()?.into_iter().map(|p| (p.instance.clone(), p)).collect();
        self.replace_pending(old, now_pending, now_ms)
    }

    fn replace_pending(
        &self,
        old: BTreeMap<InstanceId, PendingEntry>,
        now_pending: &[(InstanceId, AppId, Lack)],
        now_ms: u64,
    ) -> Result<(), Error> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        let mut batch = sled::Batch::default();
        let mut keep = std::collections::BTreeSet::new();
        for (instance, app_id, lack) in now_pending {
            keep.insert(instance.clone());
            let since_ms = old.get(instance).map(|p| p.since_ms).unwrap_or(now_ms);
            let entry = PendingEntry { instance: instance.clone(), app_id: app_id.clone(), lack: *lack, since_ms };
            if old.get(instance) != Some(&entry) {
                batch.insert(instance.as_str().as_bytes(), encode(&entry)?);
                keys.push(instance.as_str().as_bytes().to_vec());
            }
        }
        for id in old.keys().filter(|id| !keep.contains(*id)) {
            batch.remove(id.as_str().as_bytes());
            keys.push(id.as_str().as_bytes().to_vec());
        }
        if keys.is_empty() {
            return Ok(());
        }
        self.pending.apply_batch(batch)?;
        self.pending_cache.refresh(&self.pending, &keys)
    }
}
