//! A resync's listing of one backend, on its way to the applier: taken by
//! `ApplierHandle::list` while the applier goes on applying, handed over with
//! `ApplierHandle::merge`, and merged app by app by `Applier::plan`. The
//! `AppliedLog` tells which registrations the applier wrote while a listing
//! was in flight: for those the listing may be stale, and the ledger stands.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;
use tracing::warn;

use crate::backends::Backend;
use crate::model::Registration;
use crate::plan::Op;
use crate::store::StoreHandle;

/// What a resync's observation of one backend came to: the repairs queued,
/// or why the backend could not be listed.
pub type Observation = Result<Vec<Op>, String>;

/// The writes one backend's applier made while listings were in flight: a
/// listing tells from it which registrations it may show stale.
#[derive(Clone, Default)]
pub struct AppliedLog {
    /// A std Mutex: held for a map update, never across `.await`.
    inner: Arc<Mutex<WriteLog>>,
}

#[derive(Default)]
struct WriteLog {
    /// Writes so far.
    writes: u64,
    /// Listings started and not finished.
    listings: usize,
    /// The number of the last write per registration id, kept only while a
    /// listing is in flight (so the log stays as small as one resync's writes).
    ids: BTreeMap<String, u64>,
}

impl AppliedLog {
    fn lock(&self) -> std::sync::MutexGuard<'_, WriteLog> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a listing: call before it is requested; pass the mark to `finish`.
    pub fn start(&self) -> u64 {
        let mut log = self.lock();
        log.listings += 1;
        log.writes
    }

    /// Records a write of registration `id` that has landed (or may have).
    pub fn record(&self, id: &str) {
        let mut log = self.lock();
        log.writes += 1;
        if log.listings > 0 {
            let n = log.writes;
            log.ids.insert(id.to_owned(), n);
        }
    }

    /// The registration ids written since `mark` (the listing goes on).
    pub fn written_since(&self, mark: u64) -> BTreeSet<String> {
        self.lock().ids.iter().filter(|(_, n)| **n > mark).map(|(id, _)| id.clone()).collect()
    }

    /// Ends the listing started at `mark`: the registration ids written since.
    pub fn finish(&self, mark: u64) -> BTreeSet<String> {
        let written = self.written_since(mark);
        let mut log = self.lock();
        log.listings = log.listings.saturating_sub(1);
        if log.listings == 0 {
            log.ids.clear();
        }
        written
    }
}

/// A listing of one backend, taken by the resync, before it is merged.
pub struct Listed {
    /// What the backend holds of ours, by app.
    by_app: HashMap<String, Vec<Registration>>,
    /// The `AppliedLog` mark taken before the listing was requested.
    mark: u64,
}

impl Listed {
    /// The apps the merge covers: every app listed or in the ledger.
    pub fn apps(&self) -> impl Iterator<Item = &String> {
        self.by_app.keys()
    }
}

/// A listing being merged app by app.
pub(super) struct Overlay {
    /// What the backend showed, by the app its entries name.
    pub(super) by_app: HashMap<String, Vec<Registration>>,
    /// Registration id → the app it is listed under (a backend that lost its
    /// ledger may name an entry after its service, not its app: the app that
    /// wants that id takes it).
    pub(super) by_id: HashMap<String, String>,
    pub(super) mark: u64,
    /// Wants of an earlier pass may have read facts from before the listing:
    /// only wants of this epoch or later merge it.
    pub(super) min_epoch: u64,
    pub(super) ops: Vec<Op>,
    pub(super) reply: Option<oneshot::Sender<Observation>>,
}

/// What the resync (and `reconcile --once`) holds of an applier: it lists the
/// backend and hands the listing over.
#[derive(Clone)]
pub struct ApplierHandle {
    pub(super) backend: Backend,
    pub(super) store: StoreHandle,
    pub(super) log: AppliedLog,
    pub(super) overlay: Arc<Mutex<Option<Overlay>>>,
}

impl ApplierHandle {
    pub fn name(&self) -> &'static str {
        self.backend.name()
    }

    /// Lists what the backend holds of ours (the applier goes on applying
    /// meanwhile). Reads only.
    pub async fn list(&self) -> Result<Listed, String> {
        let name = self.name();
        let mark = self.log.start();
        let read = self.store.call(move |s| Ok((s.ledger(name)?, s.planned_apps(name)?))).await;
        let listed = match read {
            Ok((ledger, apps)) => {
                self.backend.registry.list_owned(&ledger).await.map(|l| (l, apps)).map_err(|e| e.to_string())
            }
            Err(e) => Err(e.to_string()),
        };
        match listed {
            Ok((owned, apps)) => {
                let mut by_app: HashMap<String, Vec<Registration>> =
                    apps.into_iter().map(|a| (a, Vec::new())).collect();
                for r in owned {
                    by_app.entry(r.app_id.clone()).or_default().push(r);
                }
                Ok(Listed { by_app, mark })
            }
            Err(e) => {
                self.log.finish(mark);
                warn!(backend = name, error = %e, "cannot list owned entries; will retry");
                Err(e)
            }
        }
    }

    /// Hands a listing to the applier: each of its apps is merged with the
    /// first want of epoch `min_epoch` or later. The answer comes once every
    /// app was merged. A newer listing replaces one not yet merged.
    pub fn merge(&self, listed: Listed, min_epoch: u64) -> oneshot::Receiver<Observation> {
        let (reply, answer) = oneshot::channel();
        let mut slot = self.overlay.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = slot.take() {
            self.log.finish(old.mark);
            if let Some(r) = old.reply {
                let _ = r.send(Err("replaced by a newer listing".into()));
            }
        }
        if listed.by_app.is_empty() {
            self.log.finish(listed.mark);
            let _ = reply.send(Ok(Vec::new()));
        } else {
            let by_id = listed
                .by_app
                .iter()
                .flat_map(|(app, regs)| regs.iter().map(move |r| (r.id.clone(), app.clone())))
                .collect();
            *slot = Some(Overlay {
                by_id,
                by_app: listed.by_app,
                mark: listed.mark,
                min_epoch,
                ops: Vec::new(),
                reply: Some(reply),
            });
        }
        answer
    }
}

#[cfg(test)]
mod applied_log_tests {
    use super::AppliedLog;

    #[test]
    fn a_listing_sees_the_writes_made_while_it_was_in_flight_and_no_others() {
        let log = AppliedLog::default();
        log.record("before");
        let mark = log.start();
        log.record("during");
        let written = log.finish(mark);
        assert_eq!(written.into_iter().collect::<Vec<_>>(), ["during"]);
        log.record("after");
        let mark = log.start();
        assert!(log.finish(mark).is_empty(), "nothing is kept between listings");
        assert!(log.lock().ids.is_empty());
    }
}
