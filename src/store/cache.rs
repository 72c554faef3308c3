//! A decoded copy of one sled tree, so hot readers (every planning pass) do
//! not decode every record each time.
//!
//! Invariant: sled stays the truth. The copy is filled on first read, and
//! every writer re-reads the keys it wrote from sled under the lock *after*
//! committing, so whatever interleaving, the last word is sled's. A std
//! Mutex: held for short sections, never across `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::de::DeserializeOwned;

use super::{Error, decode};

/// Records by sled key; `None` until first read.
type Copy<T> = Option<BTreeMap<Vec<u8>, T>>;

pub(super) struct Cache<T> {
    name: &'static str,
    inner: Arc<Mutex<Copy<T>>>,
}

impl<T> Clone for Cache<T> {
    fn clone(&self) -> Self {
        Cache { name: self.name, inner: self.inner.clone() }
    }
}

impl<T: DeserializeOwned + Clone> Cache<T> {
    pub(super) fn new(name: &'static str) -> Cache<T> {
        Cache { name, inner: Arc::default() }
    }

    fn lock(&self) -> MutexGuard<'_, Copy<T>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Clones of the records whose key starts with `prefix`, in key order.
    pub(super) fn read(&self, tree: &sled::Tree, prefix: &[u8]) -> Result<Vec<T>, Error> {
        let mut cache = self.lock();
        if cache.is_none() {
            let mut map = BTreeMap::new();
            for kv in tree.iter() {
                let (k, v) = kv?;
                map.insert(k.to_vec(), decode(self.name, &v)?);
            }
            *cache = Some(map);
        }
        Ok(cache
            .as_ref()
            .map(|m| {
                m.range(prefix.to_vec()..).take_while(|(k, _)| k.starts_with(prefix)).map(|(_, v)| v.clone()).collect()
            })
            .unwrap_or_default())
    }

    /// Re-reads `keys` from `tree` (after a write committed), if the copy is filled.
    pub(super) fn refresh<K: AsRef<[u8]>>(&self, tree: &sled::Tree, keys: &[K]) -> Result<(), Error> {
        let mut cache = self.lock();
        if let Some(map) = cache.as_mut() {
            for key in keys {
                let key = key.as_ref();
                match tree.get(key)? {
                    Some(v) => {
                        map.insert(key.to_vec(), decode(self.name, &v)?);
                    }
                    None => {
                        map.remove(key);
                    }
                }
            }
        }
        Ok(())
    }
}
