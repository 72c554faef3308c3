//! A decoded copy of one sled tree, so hot readers (every planning pass) do
//! not decode every record each time, with an index by group (the app a
//! record belongs to), so planning one app reads only that app's records.
//!
//! Invariant: sled stays the truth. The copy is filled on first read, and
//! every writer re-reads the keys it wrote from sled under the lock *after*
//! committing, so whatever interleaving, the last word is sled's. A std
//! Mutex: held for short sections, never across `.await`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;

use super::{Error, decode};

/// The group of a record, from its sled key and value (for the ledger and
/// the queue: `backend \0 app id`; for instances: the app id).
pub(super) type GroupOf<T> = fn(&[u8], &T) -> Vec<u8>;

struct Copy<T> {
    records: BTreeMap<Vec<u8>, T>,
    /// Keys by group.
    groups: HashMap<Vec<u8>, BTreeSet<Vec<u8>>>,
}

pub(super) struct Cache<T> {
    name: &'static str,
    group_of: GroupOf<T>,
    inner: Arc<Mutex<Option<Copy<T>>>>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache { name: self.name, group_of: self.group_of, inner: self.inner.clone() }
    }
}

impl<T> Copy<T> {
    fn insert(&mut self, key: Vec<u8>, value: T, group_of: GroupOf<T>) {
        self.remove(&key, group_of);
        self.groups.entry(group_of(&key, &value)).or_default().insert(key.clone());
        self.records.insert(key, value);
    }

    fn remove(&mut self, key: &[u8], group_of: GroupOf<T>) {
        if let Some(old) = self.records.remove(key) {
            let group = group_of(key, &old);
            if let Some(keys) = self.groups.get_mut(&group) {
                keys.remove(key);
                if keys.is_empty() {
                    self.groups.remove(&group);
                }
            }
        }
    }
}

impl<T: DeserializeOwned + Clone> Cache<T> {
    pub(super) fn new(name: &'static str, group_of: GroupOf<T>) -> Cache<T> {
        Cache { name, group_of, inner: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Option<Copy<T>>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The copy, filled from `tree` on first use.
    fn filled<'a>(&self, cache: &'a mut Option<Copy<T>>, tree: &sled::Tree) -> Result<&'a mut Copy<T>, Error> {
        if cache.is_none() {
            let mut copy = Copy { records: BTreeMap::new(), groups: HashMap::new() };
            for kv in tree.iter() {
                let (k, v) = kv?;
                copy.insert(k.to_vec(), decode(self.name, &v)?, self.group_of);
            }
            return Ok(cache.insert(copy));
        }
        Ok(cache.get_or_insert_with(|| Copy { records: BTreeMap::new(), groups: HashMap::new() }))
    }

    /// Clones of the records whose key starts with `prefix`, in key order.
    pub(super) fn read(&self, tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<T>, Error> {
        let mut cache = self.lock();
        let copy = self.filled(&mut cache, tree)?;
        Ok(copy
            .records
            .range(prefix.to_vec()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, v)| v.clone())
            .collect())
    }

    /// Clones of the records of one group, in key order.
    pub(super) fn read_group(&self, tree: &sled::Tree, group: &[u8]) -> Result<Vec<T>, Error> {
        let mut cache = self.lock();
        let copy = self.filled(&mut cache, tree)?;
        let Some(keys) = copy.groups.get(group) else { return Ok(Vec::new()) };
        Ok(keys.iter().filter_map(|k| copy.records.get(k).cloned()).collect())
    }

    /// The groups whose keys start with `prefix` (for the ledger: the apps
    /// a backend holds registrations of).
    pub(super) fn groups(&self, tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<Vec<u8>>, Error> {
        let mut cache = self.lock();
        let copy = self.filled(&mut cache, tree)?;
        Ok(copy.groups.keys().filter(|g| g.starts_with(prefix)).cloned().collect())
    }

    /// Whether a record whose key starts with `prefix` satisfies `pred`
    /// (no copy is made).
    pub(super) fn any(&self, tree: &sled::Tree, prefix: &[u8], pred: impl Fn(&T) -> bool) -> Result<bool, Error> {
        let mut cache = self.lock();
        let copy = self.filled(&mut cache, tree)?;
        Ok(copy.records.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).any(|(_, v)| pred(v)))
    }

    /// How many records have keys starting with `prefix`.
    pub(super) fn count(&self, tree: &sled::Tree, prefix: &[u8]) -> Result<usize, Error> {
        let mut cache = self.lock();
        let copy = self.filled(&mut cache, tree)?;
        Ok(copy.records.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).count())
    }

    /// Re-reads `keys` from `tree` (after a write committed), if the copy is filled.
    pub(super) fn refresh<K: AsRef<[u8]>>(&self, tree: &sled::Tree, keys: &[K]) -> Result<(), Error> {
        let mut cache = self.lock();
        if let Some(copy) = cache.as_mut() {
            for key in keys {
                let key = key.as_ref();
                match tree.get(key)? {
                    Some(v) => copy.insert(key.to_vec(), decode(self.name, &v)?, self.group_of),
                    None => copy.remove(key, self.group_of),
                }
            }
        }
        Ok(())
    }
}
