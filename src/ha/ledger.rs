//! The ownership record, shared between replicas through Consul KV.
//!
//! Vulcand (and Kong before 1.1) have no tags: what Switchboard owns there is
//! what its ledger says. Each replica has its own store, so a new leader would
//! take the previous leader's entries for someone else's and refuse them. The
//! leader therefore publishes, per backend, its ledger in Consul KV (shortly
//! after writes, and once more when it steps down on purpose), and a replica
//! that takes the lock adopts it into its own store before its fence opens.
//!
//! Key layout under `switchboard/<cluster>/`:
//! - `ledger/<backend>/<lock index>/<service>/<part>`: a JSON array of that
//!   service's registrations, cut into parts of at most `PART_BYTES` (Consul
//!   refuses values over 512 KiB), so no ledger is too large to share. Each
//!   leader writes only under the lock index it acquired the lock with, and
//!   only what changed since its last publish; parts it no longer needs it
//!   deletes. Once its whole set is written, it deletes the sets of older lock
//!   indexes.
//! - `intent/<backend>/<service>`: the service is this cluster's (its first
//!   write started, or its objects are kept for an instance on its way).
//!   Written by the applier's claim before the first write
//!   (`Fence::share_intent`), created here for every intent of the store
//!   (`?cas=0`: only if absent), and deleted once no ledger entry or intent of
//!   the store names the service any more (`?cas=<ModifyIndex>`, so an intent
//!   written again since is kept).
//!
//! Why keyed by lock index rather than check-and-set on one record: a deposed
//! leader (paused, cut off, finishing a SIGTERM late) writes under its own,
//! older lock index, so whatever it writes can never replace a newer leader's
//! record; nothing depends on when its request lands. A reader takes the union
//! of every set it finds (newest version of an entry first), which is safe
//! because adopting only adds ownership records: the takeover resync lists
//! each backend and forgets what is not there. The union also makes a set cut
//! short (a leader killed mid-publish) harmless: the older sets it would have
//! replaced are deleted only after a complete one.
//!
//! Every KV write here is checked against the lease right before it is sent
//! (`Gate`): a leader whose lease ended writes nothing more.
//!
//! Invariant: adopting only adds ownership records. Not shared: Consul (and
//! Kong 1.1+), whose entries carry their owner in tags and meta.

use std::collections::{BTreeMap, BTreeSet};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::Instant;

use serde::Deserialize;
use tracing::{debug, info, warn};

use super::client::{LockClient, from_key_segment, key_segment};
use super::fence::Fence;
use crate::model::Registration;
use crate::store::StoreHandle;

/// A part is cut before it reaches this size, well under Consul's 512 KiB
/// limit on a value (one registration alone is a few hundred bytes).
const PART_BYTES: usize = 256 * 1024;

/// What a ledger was shared as before it was split (one key per backend,
/// ledger and intents together): still read on adoption, deleted once a
/// complete set of the new layout is written.
#[derive(Deserialize)]
struct LegacyRecord {
    ledger: Vec<Registration>,
    intents: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Consul(#[from] super::client::ClientError),
    #[error("{backend}: cannot encode or decode the shared ledger at {key}: {message}")]
    Codec { backend: &'static str, key: String, message: String },
    /// The lease ended before a write: nothing more is written.
    #[error("the HA lease ended: shared records left as they are")]
    Fenced,
}

/// When a shared record may be written; asked right before every KV write.
#[derive(Clone, Copy)]
pub enum Gate<'a> {
    /// While the fence allows backend writes.
    Fence(&'a Fence),
    /// Until this instant (the lease's end, when the fence is already closed
    /// for the backends: the last publish of a leader stepping down).
    Until(Instant),
}

impl Gate<'_> {
    fn open(&self) -> bool {
        match self {
            Gate::Fence(f) => f.allows_write(),
            Gate::Until(t) => Instant::now() < *t,
        }
    }

    fn check(&self) -> Result<(), SharingError> {
        if self.open() { Ok(()) } else { Err(SharingError::Fenced) }
    }
}

/// A backend's ledger as the values to share: `<service>/<part>` (key
/// segments) → JSON array of registrations. Pure: the same ledger always
/// gives the same parts, and a change in one service changes only its parts.
pub fn parts(ledger: &[Registration]) -> Result<BTreeMap<String, Vec<u8>>, serde_json::Error> {
    let mut by_service: BTreeMap<&str, Vec<&Registration>> = BTreeMap::new();
    for r in ledger {
        by_service.entry(r.service.as_str()).or_default().push(r);
    }
    let mut out = BTreeMap::new();
    for (service, mut regs) in by_service {
        regs.sort_by(|a, b| a.id.cmp(&b.id));
        let segment = key_segment(service);
        let mut part: Vec<u8> = Vec::new();
        let mut n = 0;
        for r in regs {
            let one = serde_json::to_vec(r)?;
            if !part.is_empty() && part.len() + one.len() + 2 > PART_BYTES {
                part.push(b']');
                out.insert(format!("{segment}/{n}"), std::mem::take(&mut part));
                n += 1;
            }
            part.push(if part.is_empty() { b'[' } else { b',' });
            part.extend_from_slice(&one);
        }
        if !part.is_empty() {
            part.push(b']');
            out.insert(format!("{segment}/{n}"), part);
        }
    }
    Ok(out)
}

/// The lock index a key under `ledger/<backend>/` belongs to, if it is a part.
fn lock_index_of(rest: &str) -> Option<u64> {
    let mut it = rest.split('/');
    let index = it.next()?.parse().ok()?;
    (it.next().is_some() && it.next().is_some() && it.next().is_none()).then_some(index)
}

fn digest(bytes: &[u8]) -> u64 {
    let mut h = DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// The store and backends whose ledgers this replica shares.
pub struct Sharing {
    store: StoreHandle,
    backends: Vec<&'static str>,
    /// The lock index this replica publishes under (its current tenure).
    tenure: Option<u64>,
    /// What this tenure wrote: key → digest of the value, to write only on change.
    published: BTreeMap<String, u64>,
    /// Backends whose whole set this tenure has written once: older sets may go.
    complete: BTreeSet<&'static str>,
    /// Intent keys that named no service of ours at the last publish, with
    /// their ModifyIndex: deleted at the next publish if still so. Two looks
    /// apart cover a claim whose intent reached Consul just before the store.
    stale_intents: BTreeMap<String, u64>,
}

impl Sharing {
    pub fn new(store: StoreHandle, _cluster: &str, backends: &[&'static str]) -> Sharing {
        let backends =
            backends.iter().copied().filter(|b| !crate::backends::kind(b).is_some_and(|k| k.self_described)).collect();
        Sharing {
            store,
            backends,
            tenure: None,
            published: BTreeMap::new(),
            complete: BTreeSet::new(),
            stale_intents: BTreeMap::new(),
        }
    }

    /// Publishes, under `lock_index`, every part of the shared ledgers that
    /// changed since the last call, deletes the parts no longer needed and,
    /// once this tenure's set is whole, the older sets; shares the store's
    /// intents and deletes those whose service is gone. Every write is
    /// checked against `gate` right before it is sent.
    pub async fn publish(&mut self, client: &LockClient, lock_index: u64, gate: Gate<'_>) -> Result<(), SharingError> {
        if self.tenure != Some(lock_index) {
            self.tenure = Some(lock_index);
            self.published.clear();
            self.complete.clear();
            self.stale_intents.clear();
        }
        let mut stale_intents = BTreeMap::new();
        for backend in self.backends.clone() {
            let (ledger, intents) = self.store.call(move |s| Ok((s.ledger(backend)?, s.intents(backend)?))).await?;
            let services: BTreeSet<String> = ledger.iter().map(|r| r.service.clone()).collect();
            self.publish_ledger(client, backend, lock_index, &ledger, gate).await?;
            self.share_intents(client, backend, &services, &intents, gate, &mut stale_intents).await?;
        }
        self.stale_intents = stale_intents;
        Ok(())
    }

    async fn publish_ledger(
        &mut self,
        client: &LockClient,
        backend: &'static str,
        lock_index: u64,
        ledger: &[Registration],
        gate: Gate<'_>,
    ) -> Result<(), SharingError> {
        let base = ledger_base(client, backend);
        let mine = format!("{base}{lock_index}/");
        let codec = |e: serde_json::Error| SharingError::Codec { backend, key: mine.clone(), message: e.to_string() };
        let want: BTreeMap<String, Vec<u8>> =
            parts(ledger).map_err(codec)?.into_iter().map(|(k, v)| (format!("{mine}{k}"), v)).collect();
        let (mut wrote, mut deleted) = (0, 0);
        for (key, bytes) in &want {
            let d = digest(bytes);
            if self.published.get(key) == Some(&d) {
                continue;
            }
            gate.check()?;
            client.put_value(key, bytes.clone()).await?;
            self.published.insert(key.clone(), d);
            wrote += 1;
        }
        let gone: Vec<String> =
            self.published.keys().filter(|k| k.starts_with(&mine) && !want.contains_key(*k)).cloned().collect();
        for key in gone {
            gate.check()?;
            client.delete(&key, None).await?;
            self.published.remove(&key);
            deleted += 1;
        }
        let first_whole = self.complete.insert(backend);
        if wrote + deleted > 0 || first_whole {
            debug!(backend, lock_index, parts = want.len(), wrote, deleted, "shared the ledger");
            self.drop_older_sets(client, backend, lock_index, gate).await?;
        }
        Ok(())
    }

    /// Deletes the sets of lock indexes older than ours (and the record of
    /// the layout before parts), now that ours is whole.
    async fn drop_older_sets(
        &mut self,
        client: &LockClient,
        backend: &'static str,
        lock_index: u64,
        gate: Gate<'_>,
    ) -> Result<(), SharingError> {
        let base = ledger_base(client, backend);
        let legacy = base.trim_end_matches('/').to_owned();
        let mut older: Vec<String> = client
            .keys(&base)
            .await?
            .into_iter()
            .filter(|k| k.strip_prefix(&base).and_then(lock_index_of).is_some_and(|i| i < lock_index))
            .collect();
        if client.get_value(&legacy).await?.is_some() {
            older.push(legacy);
        }
        for key in &older {
            gate.check()?;
            client.delete(key, None).await?;
        }
        if !older.is_empty() {
            info!(backend, lock_index, keys = older.len(), "dropped the ledgers older leaders shared");
        }
        Ok(())
    }

    async fn share_intents(
        &self,
        client: &LockClient,
        backend: &'static str,
        services: &BTreeSet<String>,
        intents: &BTreeSet<String>,
        gate: Gate<'_>,
        stale_now: &mut BTreeMap<String, u64>,
    ) -> Result<(), SharingError> {
        let prefix = intent_prefix(client, backend);
        let listed = client.list(&prefix).await?;
        let shared: BTreeSet<String> =
            listed.iter().filter_map(|e| e.key.strip_prefix(&prefix)).map(from_key_segment).collect();
        for service in intents.difference(&shared) {
            gate.check()?;
            client.put_cas(&format!("{prefix}{}", key_segment(service)), Vec::new(), 0).await?;
        }
        for e in listed {
            let Some(service) = e.key.strip_prefix(&prefix).map(from_key_segment) else { continue };
            if services.contains(&service) || intents.contains(&service) {
                continue;
            }
            if self.stale_intents.get(&e.key) != Some(&e.modify_index) {
                stale_now.insert(e.key, e.modify_index);
                continue;
            }
            gate.check()?;
            if client.delete(&e.key, Some(e.modify_index)).await? {
                info!(backend, service = %service, "service gone: intent removed");
            }
        }
        Ok(())
    }

    /// Adopts what earlier leaders shared (before writing anything): the
    /// union of every set of parts, the newest lock index winning for an
    /// entry found in several, and every intent.
    pub async fn adopt(&mut self, client: &LockClient) -> Result<(), SharingError> {
        for backend in self.backends.clone() {
            let base = ledger_base(client, backend);
            let legacy = base.trim_end_matches('/').to_owned();
            let mut sets: BTreeMap<u64, Vec<Registration>> = BTreeMap::new();
            let mut intents: BTreeSet<String> = BTreeSet::new();
            for e in client.list(&legacy).await? {
                let codec = |m: String| SharingError::Codec { backend, key: e.key.clone(), message: m };
                if e.key == legacy {
                    let old: LegacyRecord = serde_json::from_slice(&e.value).map_err(|m| codec(m.to_string()))?;
                    sets.entry(0).or_default().extend(old.ledger);
                    intents.extend(old.intents);
                    continue;
                }
                let Some(index) = e.key.strip_prefix(&base).and_then(lock_index_of) else {
                    continue; // another backend's name starting with this one
                };
                let regs: Vec<Registration> = serde_json::from_slice(&e.value).map_err(|m| codec(m.to_string()))?;
                sets.entry(index).or_default().extend(regs);
            }
            let prefix = intent_prefix(client, backend);
            intents.extend(
                client.keys(&prefix).await?.iter().filter_map(|k| k.strip_prefix(&prefix)).map(from_key_segment),
            );
            let newest = sets.keys().next_back().copied();
            let mut by_id: BTreeMap<String, Registration> = BTreeMap::new();
            for regs in sets.into_values() {
                by_id.extend(regs.into_iter().map(|r| (r.id.clone(), r)));
            }
            let ledger: Vec<Registration> = by_id.into_values().collect();
            let (entries, n_intents) = (ledger.len(), intents.len());
            self.store
                .call(move |s| {
                    s.import_ledger(backend, &ledger)?;
                    for service in &intents {
                        s.intend(backend, service)?;
                    }
                    Ok(())
                })
                .await?;
            info!(backend, entries, intents = n_intents, newest_lock_index = ?newest, "adopted the shared ledger");
        }
        self.store.flush().await?;
        // A new tenure writes its own set in full.
        self.tenure = None;
        Ok(())
    }
}

/// Where the ledger parts of `backend` are shared (ends in `/`).
fn ledger_base(client: &LockClient, backend: &str) -> String {
    format!("{}ledger/{backend}/", client.prefix())
}

/// Where the intents of `backend` are shared.
pub fn intent_prefix(client: &LockClient, backend: &str) -> String {
    format!("{}intent/{backend}/", client.prefix())
}

/// Logs a failed publish once, at the level it deserves.
pub fn log_publish_error(e: &SharingError) {
    match e {
        SharingError::Fenced => debug!("lease ended while sharing the ledgers"),
        e => warn!(error = %e, "cannot share the ledgers"),
    }
}

#[cfg(test)]
mod tests;
