//! Tree `pending@2`: instances that serve but cannot be registered yet, and
//! since when (local wall clock), so the grace period and `switchboard state`
//! can see them. Keyed `app id \0 instance id`: one app's entries are one
//! prefix scan; an entry that stays as it was is not written.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Error, Store, decode, encode, key, prefix};
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

fn entry_key(app: &AppId, instance: &InstanceId) -> Vec<u8> {
    key(&[app.as_str(), instance.as_str()])
}

impl Store {
    /// Every pending entry, by app then instance id.
    pub fn pending(&self) -> Result<Vec<PendingEntry>, Error> {
        self.pending.iter().values().map(|v| decode("pending", &v?)).collect()
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
            for v in self.pending.scan_prefix(prefix(&[app.as_str()])).values() {
                let p: PendingEntry = decode("pending", &v?)?;
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
        let mut writes = Vec::new();
        let mut keep = std::collections::BTreeSet::new();
        for (instance, app_id, lack) in now_pending {
            keep.insert(instance.clone());
            let since_ms = old.get(instance).map(|p| p.since_ms).unwrap_or(now_ms);
            let entry = PendingEntry { instance: instance.clone(), app_id: app_id.clone(), lack: *lack, since_ms };
            match old.get(instance) {
                Some(was) if *was == entry => {}
                Some(was) => {
                    // The same instance under another app: its old key goes.
                    if was.app_id != entry.app_id {
                        writes.push((entry_key(&was.app_id, instance), None));
                    }
                    writes.push((entry_key(app_id, instance), Some(encode(&entry)?)));
                }
                None => writes.push((entry_key(app_id, instance), Some(encode(&entry)?))),
            }
        }
        for (id, was) in old.iter().filter(|(id, _)| !keep.contains(*id)) {
            writes.push((entry_key(&was.app_id, id), None));
        }
        super::write_together(&self.pending, writes)
    }
}
