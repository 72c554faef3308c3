//! The ownership record, shared between replicas through Consul KV.
//!
//! Vulcand (and Kong before 1.1) have no tags: what Switchboard owns there is
//! what its ledger says. Each replica has its own store, so a new leader would
//! take the previous leader's entries for someone else's and refuse them. The
//! leader therefore publishes, per backend, its ledger and recorded intents at
//! `switchboard/<cluster>/ledger/<backend>` (on every renew, when they changed,
//! and once more when it steps down on purpose), and a replica that takes the
//! lock adopts them into its own store before its fence opens.
//!
//! The first write of a new service is the one a periodic share could miss
//! (a leader killed right after it): before it, the fence records the
//! service's intent at `switchboard/<cluster>/intent/<backend>/<service>`
//! synchronously (`Fence::share_intent`, from the applier's claim), and a new
//! leader adopts those too.
//!
//! Invariant: adopting only adds ownership records; the resync that follows a
//! takeover lists each backend and forgets what is no longer there. Not shared:
//! Consul, whose entries carry their owner in tags and meta.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use super::client::LockClient;
use crate::model::Registration;
use crate::store::StoreHandle;

/// Consul KV refuses values over 512 KiB.
const MAX_VALUE: usize = 512 * 1024;

/// Backends whose entries carry their owner (tags, meta): nothing to share.

#[derive(Serialize, Deserialize)]
struct Record {
    ledger: Vec<Registration>,
    intents: Vec<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum SharingError {
    #[error("store: {0}")]
    Store(#[from] crate::store::Error),
    #[error(transparent)]
    Consul(#[from] super::client::ClientError),
    #[error("{backend}: cannot decode the shared ledger: {message}")]
    Decode { backend: &'static str, message: String },
}

/// The store and backends whose ledgers this replica shares.
pub struct Sharing {
    store: StoreHandle,
    cluster: String,
    backends: Vec<&'static str>,
    /// What was last published per backend, to write only on change.
    published: BTreeMap<&'static str, Vec<u8>>,
}

impl Sharing {
    pub fn new(store: StoreHandle, cluster: &str, backends: &[&'static str]) -> Sharing {
        let backends =
            backends.iter().copied().filter(|b| !crate::backends::kind(b).is_some_and(|k| k.self_described)).collect();
        Sharing { store, cluster: cluster.to_owned(), backends, published: BTreeMap::new() }
    }

    fn key(&self, backend: &str) -> String {
        format!("switchboard/{}/ledger/{backend}", self.cluster)
    }

    /// Publishes every shared ledger that changed since the last call.
    pub async fn publish(&mut self, client: &LockClient) -> Result<(), SharingError> {
        for backend in self.backends.clone() {
            let (ledger, intents) = self.store.call(move |s| Ok((s.ledger(backend)?, s.intents(backend)?))).await?;
            let record = Record { ledger, intents: intents.into_iter().collect() };
            let bytes =
                serde_json::to_vec(&record).map_err(|e| SharingError::Decode { backend, message: e.to_string() })?;
            if self.published.get(backend) == Some(&bytes) {
                continue;
            }
            if bytes.len() > MAX_VALUE {
                warn!(backend, bytes = bytes.len(), "ledger too large to share through Consul KV");
                self.published.insert(backend, bytes);
                continue;
            }
            client.put_value(&self.key(backend), bytes.clone()).await?;
            self.published.insert(backend, bytes);
        }
        Ok(())
    }

    /// Adopts what the previous leader published (before writing anything).
    pub async fn adopt(&mut self, client: &LockClient) -> Result<(), SharingError> {
        for backend in self.backends.clone() {
            let Some(bytes) = client.get_value(&self.key(backend)).await? else { continue };
            let record: Record =
                serde_json::from_slice(&bytes).map_err(|e| SharingError::Decode { backend, message: e.to_string() })?;
            let (entries, intents) = (record.ledger.len(), record.intents.len());
            self.store
                .call(move |s| {
                    s.import_ledger(backend, &record.ledger)?;
                    for service in &record.intents {
                        s.intend(backend, service)?;
                    }
                    Ok(())
                })
                .await?;
            info!(backend, entries, intents, "adopted the shared ledger");
        }
        for backend in self.backends.clone() {
            let prefix = intent_prefix(client, backend);
            let services: Vec<String> = client
                .keys(&prefix)
                .await?
                .iter()
                .map(|key| super::client::from_key_segment(key.strip_prefix(&prefix).unwrap_or(key)))
                .collect();
            self.store
                .call(move |s| {
                    for service in &services {
                        s.intend(backend, service)?;
                    }
                    Ok(())
                })
                .await?;
        }
        self.store.flush().await?;
        // What we hold now is at least what was published: publish again on change only.
        self.published.clear();
        Ok(())
    }
}

/// Where the intents of `backend` are shared.
pub fn intent_prefix(client: &LockClient, backend: &str) -> String {
    format!("{}intent/{backend}/", client.prefix())
}
