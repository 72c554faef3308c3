//! The elector: the I/O loop doing `Core`'s steps against Consul (`client`),
//! publishing the role on a `watch` and the lease on the `Fence`, sharing the
//! ledgers beside the renew loop, and handing over on shutdown.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::client::{self, ClientError, LockClient};
use super::machine::{Core, Step};
use super::{Fence, Role, Sharing, ledger};

/// How long after a write the ledgers are shared (a burst of writes shares once).
const SHARE_DEBOUNCE: Duration = Duration::from_millis(200);

/// The elector: performs `Core`'s steps until `shutdown`, then leaves.
/// Without `sharing` (reconcile, which adopts and publishes itself) it never
/// acquires: it only keeps what it holds.
pub(super) async fn run(
    client: LockClient,
    mut core: Core,
    fence: Fence,
    role: watch::Sender<Role>,
    sharing: Option<Sharing>,
    request_timeout: Duration,
    shutdown: CancellationToken,
) {
    let campaign = sharing.is_some();
    // Publishing reads the store: it runs beside the renew loop, never in
    // it, so a slow store (or a slow KV) cannot starve the session's renew.
    let sharing = sharing.map(|s| Arc::new(tokio::sync::Mutex::new(s)));
    // Whether this tenure adopted the shared ledgers: the fence opens only then.
    let mut adopted = false;
    // Adoption runs in a task of its own, like publishing: a slow KV or store
    // never delays a renew; the fence stays closed until it has finished.
    let mut adopting: Option<tokio::task::JoinHandle<Result<(), ledger::SharingError>>> = None;
    let mut published_at: Option<Instant> = None;
    loop {
        if !core.is_leader() {
            adopted = false;
            if let Some(t) = adopting.take() {
                t.abort();
            }
        } else if !adopted {
            match &sharing {
                None => adopted = true,
                Some(sh) if adopting.is_none() => {
                    let (sh, client) = (sh.clone(), client.clone());
                    adopting = Some(tokio::spawn(async move {
                        let mut sh = sh.lock_owned().await;
                        // A few requests (one may be megabytes) and a store write: no renew waits on it.
                        tokio::time::timeout(request_timeout * 4, sh.adopt(&client)).await.unwrap_or_else(|_| {
                            Err(ledger::SharingError::Consul(ClientError::Http {
                                what: "adopt the shared ledgers",
                                message: "timed out".into(),
                            }))
                        })
                    }));
                }
                Some(_) => {}
            }
        }
        fence.set_lease(core.lease().filter(|_| adopted));
        let due = published_at.is_none_or(|t| t.elapsed() >= core.timing.renew_every());
        let lock_index = core.lease().map(|l| l.lock_index);
        if let (Some(sh), Some(lock_index)) =
            (sharing.as_ref().filter(|_| adopted && due && fence.allows_write()), lock_index)
        {
            published_at = Some(Instant::now());
            // One publish at a time; one still running covers this turn.
            if let Ok(mut sh) = sh.clone().try_lock_owned() {
                let (client, fence) = (client.clone(), fence.clone());
                tokio::spawn(async move {
                    if let Err(e) = sh.publish(&client, lock_index, ledger::Gate::Fence(&fence)).await {
                        ledger::log_publish_error(&e);
                    }
                });
            }
        }
        let now_role = core.role();
        role.send_if_modified(|r| {
            if *r == now_role {
                return false;
            }
            match now_role {
                Role::Leader { .. } => info!(replica = %client.replica, "HA: leader"),
                _ => info!(replica = %client.replica, "HA: standby"),
            }
            *r = now_role;
            true
        });
        let mut step = core.next(Instant::now(), SystemTime::now());
        if !campaign && step == Step::Acquire {
            step = Step::Watch { index: 0, until: Instant::now() + core.timing.renew_every() };
        }
        // While only watching, a write wakes the elector to share the ledgers
        // soon (a renew is never cut short for it).
        let share_soon = adopted && sharing.is_some() && matches!(step, Step::Watch { .. });
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            done = async {
                match adopting.as_mut() {
                    Some(t) => t.await,
                    None => std::future::pending().await,
                }
            }, if adopting.is_some() => {
                adopting = None;
                match done {
                    Ok(Ok(())) => adopted = core.is_leader(),
                    Ok(Err(e)) => warn!(error = %e, "cannot adopt the shared ledgers; not writing yet"),
                    Err(e) => warn!(error = %e, "adopting the shared ledgers failed; not writing yet"),
                }
            }
            _ = fence.written(), if share_soon => {
                // Let the write's completion reach the ledger, and batch a burst.
                tokio::time::sleep(SHARE_DEBOUNCE).await;
                published_at = None;
            }
            _ = perform(&client, &mut core, step) => {}
        }
    }
    if let Some(t) = adopting.take() {
        t.abort();
    }
    // Stop writing, let the writes in flight land, then hand over at once.
    if !fence.close(request_timeout).await {
        warn!("writes still in flight at shutdown; leaving the lock to expire");
        return;
    }
    if let Some(sid) = core.session().map(str::to_owned) {
        if let (Some(sh), Some(lease)) = (sharing.as_ref().filter(|_| adopted), core.lease()) {
            // The next leader starts from everything this one wrote; only if
            // Consul still shows us holding the lock (not our own flag), and
            // only within the lease.
            let holder = client.read(0, None).await.ok().and_then(|(_, k)| k);
            if holder.is_some_and(|k| k.session.as_deref() == Some(sid.as_str()) && k.lock_index == lease.lock_index) {
                let gate = ledger::Gate::Until(lease.until);
                let publish = async { sh.lock().await.publish(&client, lease.lock_index, gate).await };
                match tokio::time::timeout(request_timeout, publish).await {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => ledger::log_publish_error(&e),
                    Err(_) => warn!("sharing the ledgers timed out"),
                }
            } else {
                info!(replica = %client.replica, "no longer holding the HA lock: not sharing the ledgers");
            }
        }
        if core.is_leader() {
            match client.release(&sid).await {
                Ok(_) => info!(replica = %client.replica, "HA lock released"),
                Err(e) => warn!(error = %e, "cannot release the HA lock; it frees when the session ends"),
            }
        }
        if let Err(e) = client.destroy(&sid).await {
            warn!(error = %e, "cannot destroy the HA session; it expires after its TTL");
        }
    }
    role.send_replace(Role::Standby { since: SystemTime::now() });
}

/// One step against Consul; its outcome goes into `core`.
async fn perform(client: &LockClient, core: &mut Core, step: Step) {
    let sent = Instant::now();
    match step {
        Step::CreateSession => match client.create_session(core.timing.ttl, core.timing.lock_delay).await {
            Ok(id) => {
                info!(session = %id, "HA session created");
                core.session_created(id, sent);
            }
            Err(e) => {
                warn!(error = %e, "cannot create the HA session");
                core.failed(Instant::now());
            }
        },
        Step::Renew => {
            let Some(sid) = core.session().map(str::to_owned) else { return };
            match client.renew(&sid).await {
                Ok(()) => core.renewed(sent),
                Err(ClientError::SessionGone(_)) => {
                    warn!(session = %sid, "HA session gone; stepping down");
                    core.session_gone(SystemTime::now());
                }
                Err(e) => {
                    warn!(error = %e, "cannot renew the HA session");
                    core.renew_failed(Instant::now());
                }
            }
        }
        Step::Acquire => {
            let Some(sid) = core.session().map(str::to_owned) else { return };
            let result = match client.acquire(&sid).await {
                Ok(true) => client.read(0, None).await.map(Some),
                Ok(false) => Ok(None),
                Err(e) => Err(e),
            };
            match result {
                Ok(Some((index, Some(k)))) if k.session.as_deref() == Some(sid.as_str()) => {
                    core.acquired(k.lock_index, SystemTime::now());
                    core.observed(index, Some((&sid, k.lock_index)), SystemTime::now());
                }
                Ok(_) => core.refused(Instant::now()),
                Err(ClientError::SessionGone(_)) => core.session_gone(SystemTime::now()),
                Err(e) => {
                    warn!(error = %e, "cannot acquire the HA lock");
                    core.failed(Instant::now());
                }
            }
        }
        Step::Watch { index, until } => {
            // Consul answers a little before our own deadline, so the connection is reused.
            let wait = until.saturating_duration_since(Instant::now()).saturating_sub(Duration::from_millis(50));
            let wait = wait.max(Duration::from_millis(10));
            if index == 0 {
                // First read: not blocking; then sleep until `until` unless it changed.
                match client.read(0, None).await {
                    Ok((i, k)) => observe(core, i, k.as_ref()),
                    Err(e) => {
                        warn!(error = %e, "cannot read the HA lock");
                        core.failed(Instant::now());
                        tokio::time::sleep_until(until.min(Instant::now() + core.timing.retry()).into()).await;
                    }
                }
                return;
            }
            match tokio::time::timeout_at(until.into(), client.read(index, Some(wait))).await {
                Ok(Ok((i, k))) => observe(core, i, k.as_ref()),
                Ok(Err(e)) => {
                    warn!(error = %e, "cannot watch the HA lock");
                    core.failed(Instant::now());
                    tokio::time::sleep_until(until.min(Instant::now() + core.timing.retry()).into()).await;
                }
                Err(_) => {}
            }
        }
    }
}

fn observe(core: &mut Core, index: u64, key: Option<&client::KeyState>) {
    let holder = key.and_then(|k| k.session.as_deref().map(|s| (s, k.lock_index)));
    core.observed(index, holder, SystemTime::now());
}
