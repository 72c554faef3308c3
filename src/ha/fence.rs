//! The fence: whether this replica may write to a backend now.
//!
//! Backends cannot refuse a stale writer, so the writer refuses itself:
//! - `allows_write`: leader, and the local monotonic clock is before the last
//!   successful renew (its *send* time) + TTL − margin. Consul cannot drop the
//!   session before that renew arrived + TTL, and the lock delay (longer than the
//!   margin) keeps a new leader out for a while after that;
//! - `confirm`: the lock index at the key is still the one we acquired (a read
//!   of the key before each batch of writes: the second guard).
//!
//! Every backend write request goes through `begin_write` twice: once per op
//! in the applier's write path (`reconcile::applier`), and once per HTTP
//! request in the client every backend sends with (`tls::HttpClient::send`,
//! the gate: a request is sent only while the lease holds, and given up at the
//! lease's end). Both count writes in flight, so a leader that steps down on
//! purpose (SIGTERM) closes the fence, waits for those writes to land, and
//! only then releases the lock. Without `--ha` the fence always allows.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, watch};

use super::client::LockClient;

/// The right to write, as the elector last established it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Writes stop at this instant unless a renew extends it.
    pub until: Instant,
    pub session: String,
    pub lock_index: u64,
}

#[derive(Clone, Default)]
pub struct Fence {
    /// `None`: not HA, always allows.
    inner: Option<Arc<Inner>>,
}

struct Inner {
    state: Mutex<State>,
    /// Bumped on every lease change, so appliers waiting on a closed fence wake.
    changes: watch::Sender<u64>,
    /// Notified when the last write in flight ends.
    idle: Notify,
    /// Notified after every write, so the elector shares the ledgers soon.
    wrote: Notify,
    client: LockClient,
}

#[derive(Default)]
struct State {
    lease: Option<Lease>,
    /// Closed for good (shutdown): no lease is taken any more.
    closed: bool,
    /// Tests: no Consul behind the fence (`confirm` trusts the lease, intents
    /// are not shared).
    without_consul: bool,
    in_flight: usize,
}

/// A write in progress; dropping it ends the write.
pub struct WriteGuard {
    inner: Option<Arc<Inner>>,
    /// The end of the lease the write started under (`None` without `--ha`).
    until: Option<Instant>,
    /// That lease's session and lock index: only its own renewals extend it.
    tenure: Option<(String, u64)>,
}

impl WriteGuard {
    /// The end of the lease this write started under: a request must be
    /// given up by then unless a renewal extends it. `None` without `--ha`
    /// (no end).
    pub fn until(&self) -> Option<Instant> {
        self.until
    }

    /// Resolves when the lease this write started under has ended: at its
    /// end, moved on by each renewal of the same tenure (same session and
    /// lock index) while the write is in flight, never shortened. Never
    /// resolves without `--ha`. So a request slower than the time left at
    /// its start is not given up while the leader keeps renewing, and none
    /// stays in flight past the end of the lease.
    pub async fn lease_ended(&self) {
        let (Some(inner), Some(mut until), Some((session, lock_index))) = (&self.inner, self.until, &self.tenure)
        else {
            return std::future::pending().await;
        };
        let mut changes = inner.changes.subscribe();
        let mut watching = true;
        loop {
            if Instant::now() >= until {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(until.into()) => {}
                r = changes.changed(), if watching => watching = r.is_ok(),
            }
            if let Some(l) = lock(inner).lease.as_ref()
                && l.session == *session
                && l.lock_index == *lock_index
            {
                until = until.max(l.until);
            }
        }
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        if let Some(inner) = &self.inner {
            let mut st = lock(inner);
            st.in_flight -= 1;
            if st.in_flight == 0 {
                inner.idle.notify_waiters();
            }
            inner.wrote.notify_one();
        }
    }
}

fn lock(inner: &Inner) -> MutexGuard<'_, State> {
    inner.state.lock().unwrap_or_else(|e| e.into_inner())
}

impl Fence {
    /// The fence of a Switchboard that is the only writer (no `--ha`).
    pub fn always() -> Fence {
        Fence { inner: None }
    }

    /// A closed fence that the elector opens with `set_lease`.
    pub(super) fn new(client: LockClient) -> Fence {
        Fence {
            inner: Some(Arc::new(Inner {
                state: Mutex::new(State::default()),
                changes: watch::Sender::new(0),
                idle: Notify::new(),
                wrote: Notify::new(),
                client,
            })),
        }
    }

    /// An HA fence holding a lease until `until` (tests: the applier with
    /// `--ha` on, as the daemon builds it, with no Consul behind it).
    #[doc(hidden)]
    pub fn leased_until(until: Instant) -> Result<Fence, super::ClientError> {
        let url = url::Url::parse("http://127.0.0.1:1")
            .map_err(|e| super::ClientError::Setting { setting: "--ha-consul", reason: e.to_string() })?;
        let client = LockClient::new(url, None, "k".into(), "r".into(), Duration::from_secs(1), Default::default())?;
        let fence = Fence::new(client);
        if let Some(inner) = &fence.inner {
            lock(inner).without_consul = true;
        }
        fence.set_lease(Some(Lease { until, session: "test".into(), lock_index: 1 }));
        Ok(fence)
    }

    pub fn is_ha(&self) -> bool {
        self.inner.is_some()
    }

    /// Leader, and before the lease's end by the local clock.
    pub fn allows_write(&self) -> bool {
        match &self.inner {
            None => true,
            Some(inner) => lock(inner).lease.as_ref().is_some_and(|l| Instant::now() < l.until),
        }
    }

    /// The second guard: reads the key and checks that our session still holds
    /// it at the lock index we acquired. False on any doubt (Consul unreachable).
    pub async fn confirm(&self) -> bool {
        let Some(inner) = &self.inner else { return true };
        let (lease, trusted) = {
            let st = lock(inner);
            (st.lease.clone(), st.without_consul)
        };
        let Some(lease) = lease else { return false };
        if Instant::now() >= lease.until {
            return false;
        }
        if trusted {
            return true;
        }
        match inner.client.read(0, None).await {
            Ok((_, Some(k))) => {
                k.session.as_deref() == Some(lease.session.as_str()) && k.lock_index == lease.lock_index
            }
            Ok((_, None)) => false,
            Err(e) => {
                tracing::warn!(error = %e, "cannot confirm the HA lock; not writing");
                false
            }
        }
    }

    /// Starts a write if the fence allows it now; `None` otherwise.
    pub fn begin_write(&self) -> Option<WriteGuard> {
        let Some(inner) = &self.inner else { return Some(WriteGuard { inner: None, until: None, tenure: None }) };
        let mut st = lock(inner);
        let lease = st.lease.as_ref().filter(|l| Instant::now() < l.until)?;
        let (until, tenure) = (lease.until, (lease.session.clone(), lease.lock_index));
        st.in_flight += 1;
        Some(WriteGuard { inner: Some(inner.clone()), until: Some(until), tenure: Some(tenure) })
    }

    /// Resolves on the next lease change (never without `--ha`).
    pub async fn changed(&self) {
        match &self.inner {
            None => std::future::pending().await,
            Some(inner) => {
                let mut rx = inner.changes.subscribe();
                let _ = rx.changed().await;
            }
        }
    }

    /// Shares, before the first write of `service` on `backend`, that it is
    /// this cluster's: a leader that takes over after a crash right after that
    /// write knows the service as its own (see `ledger`). Nothing without
    /// `--ha`; refused once the lease has ended.
    pub async fn share_intent(&self, backend: &str, service: &str) -> Result<(), super::ClientError> {
        let Some(inner) = &self.inner else { return Ok(()) };
        if lock(inner).without_consul {
            return Ok(());
        }
        // Only the holder shares: a deposed leader's late intent would name
        // a service the new leader never wrote. (A plain write, not `cas=0`:
        // it bumps the key's index, so a removal racing it fails its `cas`.)
        if !self.allows_write() {
            return Err(super::ClientError::Http {
                what: "share an intent",
                message: "the lease has ended: not writing".into(),
            });
        }
        let prefix = super::ledger::intent_prefix(&inner.client, backend);
        let key = format!("{prefix}{}", super::client::key_segment(service));
        inner.client.put_value(&key, Vec::new()).await
    }

    /// Resolves after a write (one wake-up for any number of writes before).
    pub(super) async fn written(&self) {
        match &self.inner {
            None => std::future::pending().await,
            Some(inner) => inner.wrote.notified().await,
        }
    }

    pub(super) fn set_lease(&self, lease: Option<Lease>) {
        let Some(inner) = &self.inner else { return };
        let mut st = lock(inner);
        if st.closed || st.lease == lease {
            return;
        }
        st.lease = lease;
        drop(st);
        inner.changes.send_modify(|n| *n += 1);
    }

    /// Closes the fence for good and waits (up to `within`) for the writes
    /// in flight to end: after this, nothing of ours reaches a backend.
    pub(super) async fn close(&self, within: Duration) -> bool {
        let Some(inner) = &self.inner else { return true };
        {
            let mut st = lock(inner);
            st.closed = true;
            st.lease = None;
        }
        inner.changes.send_modify(|n| *n += 1);
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let idle = inner.idle.notified();
            if lock(inner).in_flight == 0 {
                return true;
            }
            if tokio::time::timeout_at(deadline, idle).await.is_err() {
                return false;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fence() -> Fence {
        let url = url::Url::parse("http://127.0.0.1:1").unwrap();
        Fence::new(
            LockClient::new(url, None, "k".into(), "r".into(), Duration::from_secs(1), Default::default()).unwrap(),
        )
    }

    #[tokio::test]
    async fn writes_pass_only_during_the_lease_and_close_waits_for_writes_in_flight() {
        let f = fence();
        assert!(!f.allows_write() && f.begin_write().is_none(), "closed until a lease");
        let lease = |until| Some(Lease { until, session: "s".into(), lock_index: 1 });
        f.set_lease(lease(Instant::now() - Duration::from_millis(1)));
        assert!(!f.allows_write() && f.begin_write().is_none(), "a lease past its end allows nothing");
        f.set_lease(lease(Instant::now() + Duration::from_secs(60)));
        assert!(f.allows_write());
        let write = f.begin_write().unwrap();
        assert!(write.until().is_some_and(|u| u > Instant::now() + Duration::from_secs(59)), "the lease's end");
        assert!(!f.close(Duration::from_millis(50)).await, "a write is in flight");
        assert!(!f.allows_write() && f.begin_write().is_none());
        drop(write);
        assert!(f.close(Duration::from_millis(50)).await);
        f.set_lease(lease(Instant::now() + Duration::from_secs(60)));
        assert!(!f.allows_write(), "closed for good");
        assert!(Fence::always().allows_write() && Fence::always().confirm().await);
        assert_eq!(Fence::always().begin_write().map(|w| w.until()), Some(None), "no --ha: no end");
    }

    #[tokio::test]
    async fn a_write_in_flight_lives_as_long_as_its_tenure_is_renewed_and_no_longer() {
        let f = fence();
        let lease = |ms: u64, lock_index| {
            Some(Lease { until: Instant::now() + Duration::from_millis(ms), session: "s".into(), lock_index })
        };
        f.set_lease(lease(200, 1));
        let write = f.begin_write().unwrap();
        let started = Instant::now();
        let renewer = {
            let f = f.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.set_lease(lease(500, 1)); // a renewal: ends ~600 ms after the start
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.set_lease(lease(5_000, 2)); // another tenure: does not extend this write
            })
        };
        write.lease_ended().await;
        let took = started.elapsed();
        renewer.await.unwrap();
        assert!(took >= Duration::from_millis(550) && took < Duration::from_millis(2_000), "ended after {took:?}");
        assert!(
            Fence::always().begin_write().is_some_and(|w| w.until().is_none()),
            "no --ha: a write never ends by lease"
        );
    }

    #[tokio::test]
    async fn an_intent_is_shared_only_within_the_lease() {
        let f = fence();
        f.set_lease(Some(Lease {
            until: Instant::now() - Duration::from_millis(1),
            session: "s".into(),
            lock_index: 1,
        }));
        // Refused before any request (the client's agent at port 1 would
        // answer a connection error instead).
        let e = f.share_intent("vulcand", "web").await.unwrap_err().to_string();
        assert!(e.contains("the lease has ended"), "{e}");
        assert!(Fence::always().share_intent("vulcand", "web").await.is_ok(), "no --ha: nothing to share");
    }
}
