//! HA replicas: leader election on a Consul session and the KV lock
//! `switchboard/<cluster>/leader`, and the fence that keeps every replica but
//! the leader from writing to a backend.
//!
//! Parts:
//! - `Core`: pure. Takes what Consul answered and the time, returns the next
//!   step (create session, renew, acquire, watch the key until a deadline) and
//!   the lease the fence may grant. No I/O, no clock.
//! - `run`: the I/O loop doing those steps against Consul (`client`), publishing
//!   the role on a `watch` and the lease on the `Fence` (`fence`).
//!
//! Invariants:
//! - Never two writers. The leader writes only before its last successful
//!   renew (sent at) + TTL − margin, by its own monotonic clock; Consul drops a
//!   session no earlier than TTL after that renew arrived, then keeps the lock
//!   closed for the lock delay, which is longer than the margin and, with it,
//!   covers a request in flight (`config` checks both). Before each batch the
//!   applier reads the key (`Fence::confirm`): the lock index must still be ours.
//! - A session not renewed for a whole TTL is given up (Consul may have dropped
//!   it): the replica steps down and starts over with a new session.
//! - On shutdown the leader closes the fence, waits for writes in flight, then
//!   releases the lock (no lock delay on a release) and destroys its session, so
//!   a standby takes over at once.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub mod client;
pub mod fence;
pub mod ledger;
pub mod settings;

pub use client::{ClientError, LockClient};
pub use fence::{Fence, Lease};
pub use ledger::Sharing;
pub use settings::{HaSettings, Wiring};

use crate::model::Timestamp;

/// Default session TTL. After a kill -9, Consul drops the session within
/// 2 × TTL (20 s), the lock delay (15 s) follows, and the standby retries
/// every second: a takeover within 36 s, under the 45 s promised.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Default lock delay (Consul's own default).
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

/// The timing of one replica's session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub ttl: Duration,
    pub lock_delay: Duration,
}

impl Timing {
    /// How long before the TTL runs out the leader stops writing.
    pub fn margin(&self) -> Duration {
        self.ttl / 3
    }

    /// How often the session is renewed: a renew lost on the way still
    /// leaves time for the next before the fence closes.
    pub fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Pause after a failed call or a refused acquire (the lock delay).
    pub fn retry(&self) -> Duration {
        (self.ttl / 10).clamp(Duration::from_millis(50), Duration::from_secs(1))
    }
}

/// What this replica is, published on a `watch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Not HA: the only writer.
    Single,
    Standby {
        since: SystemTime,
    },
    Leader {
        since: SystemTime,
    },
}

/// The role for `/state`, `/ready` and the status page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RoleReport {
    /// `leader`, `standby`, or `single` (no `--ha`).
    pub role: String,
    /// Since when (RFC 3339), for leader and standby.
    pub since: Option<String>,
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. } | Role::Single)
    }

    pub fn report(&self) -> RoleReport {
        let at = |t: &SystemTime| {
            let ms = t.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
            Some(Timestamp(ms).to_string())
        };
        match self {
            Role::Single => RoleReport { role: "single".into(), since: None },
            Role::Standby { since } => RoleReport { role: "standby".into(), since: at(since) },
            Role::Leader { since } => RoleReport { role: "leader".into(), since: at(since) },
        }
    }
}

/// The next thing the elector does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    CreateSession,
    Renew,
    Acquire,
    /// Watch the key (a blocking query past `index`) until `until`.
    Watch {
        index: u64,
        until: Instant,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Leading {
    since: SystemTime,
    lock_index: u64,
}

/// The pure state machine: standby → acquiring → leader(since, last renew,
/// lock index) → lost (back to standby, or to a new session).
#[derive(Debug, Clone)]
pub struct Core {
    timing: Timing,
    session: Option<String>,
    /// When the last successful create/renew was *sent*: Consul's TTL started later.
    renewed_at: Option<Instant>,
    renew_due: Option<Instant>,
    leading: Option<Leading>,
    /// Blocking-query index on the key.
    index: u64,
    /// The key had no holder when last read (or was never read).
    key_free: bool,
    /// No acquire or session create before this (after a failure or a refusal).
    not_before: Option<Instant>,
    standby_since: SystemTime,
}

impl Core {
    pub fn new(timing: Timing, now: SystemTime) -> Core {
        Core {
            timing,
            session: None,
            renewed_at: None,
            renew_due: None,
            leading: None,
            index: 0,
            key_free: true,
            not_before: None,
            standby_since: now,
        }
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub fn is_leader(&self) -> bool {
        self.leading.is_some()
    }

    pub fn role(&self) -> Role {
        match &self.leading {
            Some(l) => Role::Leader { since: l.since },
            None => Role::Standby { since: self.standby_since },
        }
    }

    /// What the fence may grant: leader, until last renew + TTL − margin.
    pub fn lease(&self) -> Option<Lease> {
        let l = self.leading.as_ref()?;
        Some(Lease {
            until: self.renewed_at? + self.timing.ttl - self.timing.margin(),
            session: self.session.clone()?,
            lock_index: l.lock_index,
        })
    }

    /// The next step at `now`. A session not renewed for a TTL is given up first.
    pub fn next(&mut self, now: Instant, wall: SystemTime) -> Step {
        if self.renewed_at.is_some_and(|at| now >= at + self.timing.ttl) {
            warn!(session = ?self.session, "HA session not renewed for a TTL; starting over");
            self.drop_session(wall);
        }
        let waiting = self.not_before.filter(|t| now < *t);
        let Some(renew_due) = self.renew_due.filter(|_| self.session.is_some()) else {
            return match waiting {
                Some(until) => Step::Watch { index: self.index, until },
                None => Step::CreateSession,
            };
        };
        if now >= renew_due {
            return Step::Renew;
        }
        let campaigning = self.leading.is_none() && self.key_free;
        if campaigning && waiting.is_none() {
            return Step::Acquire;
        }
        let until = match waiting.filter(|_| campaigning) {
            Some(t) => t.min(renew_due),
            None => renew_due,
        };
        Step::Watch { index: self.index, until }
    }

    pub fn session_created(&mut self, id: String, sent_at: Instant) {
        self.session = Some(id);
        self.renewed_at = Some(sent_at);
        self.renew_due = Some(sent_at + self.timing.renew_every());
        self.not_before = None;
    }

    /// A create, acquire or watch that failed: pause before the next.
    pub fn failed(&mut self, now: Instant) {
        self.not_before = Some(now + self.timing.retry());
    }

    pub fn renewed(&mut self, sent_at: Instant) {
        self.renewed_at = Some(sent_at);
        self.renew_due = Some(sent_at + self.timing.renew_every());
    }

    /// A renew that did not get through: try again soon; the fence closes by itself.
    pub fn renew_failed(&mut self, now: Instant) {
        self.renew_due = Some(now + self.timing.retry());
    }

    /// Consul does not know the session any more (renew 404, acquire 500).
    pub fn session_gone(&mut self, wall: SystemTime) {
        self.drop_session(wall);
    }

    fn drop_session(&mut self, wall: SystemTime) {
        self.step_down(wall);
        self.session = None;
        self.renewed_at = None;
        self.renew_due = None;
    }

    fn step_down(&mut self, wall: SystemTime) {
        if self.leading.take().is_some() {
            self.standby_since = wall;
        }
    }

    /// The acquire returned true and a read of the key showed `lock_index` for us.
    pub fn acquired(&mut self, lock_index: u64, wall: SystemTime) {
        if self.session.is_some() {
            self.leading = Some(Leading { since: wall, lock_index });
            self.key_free = false;
        }
    }

    /// The acquire returned false: held, or in its lock delay.
    pub fn refused(&mut self, now: Instant) {
        self.not_before = Some(now + self.timing.retry());
    }

    /// A read of the key: index, and who holds it at which lock index.
    pub fn observed(&mut self, index: u64, holder: Option<(&str, u64)>, wall: SystemTime) {
        // Consul: an index that goes backwards resets the watch.
        self.index = if index < self.index { 0 } else { index };
        self.key_free = holder.is_none();
        if let Some(l) = &self.leading {
            let ours = holder.is_some_and(|(s, i)| Some(s) == self.session.as_deref() && i == l.lock_index);
            if !ours {
                warn!(holder = ?holder.map(|h| h.0), "HA lock lost; stepping down");
                self.step_down(wall);
            }
        }
    }
}

/// The handle of a running elector.
#[derive(Clone)]
pub struct Ha {
    pub fence: Fence,
    role: watch::Receiver<Role>,
    /// Reads the lock key (who leads), with `--ha`.
    client: Option<LockClient>,
}

impl Ha {
    /// Without `--ha`: always the writer.
    pub fn single() -> Ha {
        Ha { fence: Fence::always(), role: watch::Sender::new(Role::Single).subscribe(), client: None }
    }

    /// Leader, or the only writer (no `--ha`).
    pub fn is_leader(&self) -> bool {
        self.role.borrow().is_leader()
    }

    /// Who holds the lock now (one read of the key); `None` without `--ha`
    /// or while nobody holds it.
    pub async fn leader(&self) -> Result<Option<Holder>, ClientError> {
        match &self.client {
            Some(client) => holder_of(client).await,
            None => Ok(None),
        }
    }

    pub fn role(&self) -> RoleReport {
        self.role.borrow().report()
    }

    pub fn watch_role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }
}

/// The lock is held by another replica (`reconcile --once --ha`).
#[derive(Debug, thiserror::Error)]
#[error("the HA lock {key} is held by another replica: {holder}")]
pub struct LockHeld {
    pub key: String,
    /// `session <id> (<name>)`, or why the lock cannot be taken now.
    pub holder: String,
}

/// Who holds the HA lock of a cluster, as its key says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Holder {
    /// The holder's `--replica-name` (the key's value, else its session's name).
    pub replica: String,
    pub session: String,
}

impl std::fmt::Display for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "replica {} (session {})", self.replica, self.session)
    }
}

/// One read of the lock key: its holder, `None` when no session holds it.
async fn holder_of(client: &LockClient) -> Result<Option<Holder>, ClientError> {
    let (_, key) = client.read(0, None).await?;
    let Some(key) = key else { return Ok(None) };
    let Some(session) = key.session else { return Ok(None) };
    let replica = match key.value.trim() {
        "" => client.session_name(&session).await.ok().flatten().unwrap_or_else(|| "name unknown".to_owned()),
        name => name.to_owned(),
    };
    Ok(Some(Holder { replica, session }))
}

/// `reconcile --once` without `--ha`: a daemon of the cluster holds its lock,
/// so this run does not write beside it.
#[derive(Debug, thiserror::Error)]
#[error(
    "a daemon leads cluster {cluster}: {holder} holds the HA lock {key}; reconcile --once without --ha does not write beside it (--ha takes turns with it, --dry-run only plans, --force writes anyway)"
)]
pub struct DaemonLeads {
    pub cluster: String,
    pub key: String,
    pub holder: Holder,
}

/// The lock of `cluster` could not be read, so whether a daemon leads is unknown.
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot tell whether a daemon leads cluster {cluster} (reading the HA lock {key} on {setting}): {source}; --force writes without checking"
)]
pub struct LeaderUnknown {
    pub cluster: String,
    pub key: String,
    /// `--ha-consul` or `--consul`: where the lock was looked for.
    pub setting: &'static str,
    #[source]
    pub source: ClientError,
}

/// Who leads `cluster` on the Consul agent at `consul` (one read of the lock
/// key; `reconcile --once` without `--ha`, which takes no lock itself).
pub async fn leader_of(
    consul: &url::Url,
    token: Option<&crate::secret::Secret>,
    tls: crate::tls::EndpointTls,
    cluster: &str,
    timeout: Duration,
) -> Result<Option<Holder>, ClientError> {
    let client = LockClient::new(consul.clone(), token, lock_key(cluster), default_replica_name(), timeout, tls)?;
    holder_of(&client).await
}

/// `hostname-pid`, the default replica name.
fn default_replica_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "switchboard".to_owned());
    format!("{host}-{}", std::process::id())
}

/// The Consul key of the lock of `cluster`.
pub fn lock_key(cluster: &str) -> String {
    format!("switchboard/{cluster}/leader")
}

fn lock_client(w: &Wiring) -> Result<LockClient, ClientError> {
    let ha = &w.settings;
    let name = ha.replica_name.clone().unwrap_or_else(default_replica_name);
    // A renew slower than a third of the TTL is as good as lost.
    let timeout = w.request_timeout.min(ha.session_ttl / 3).max(Duration::from_millis(100));
    LockClient::new(ha.consul.clone(), w.consul_token.as_ref(), lock_key(&w.cluster), name, timeout, w.tls.clone())
}

/// Starts the elector of `switchboard run --ha` (or `Ha::single` without
/// `--ha`); the task ends after `shutdown`, once the lock is released.
pub fn start(
    wiring: Option<Wiring>,
    sharing: Sharing,
    shutdown: CancellationToken,
) -> Result<(Ha, Option<impl Future<Output = ()> + Send + 'static>), ClientError> {
    let Some(w) = wiring else { return Ok((Ha::single(), None)) };
    let client = lock_client(&w)?;
    let settings = &w.settings;
    let timing = Timing { ttl: settings.session_ttl, lock_delay: settings.lock_delay };
    let fence = Fence::new(client.clone());
    let core = Core::new(timing, SystemTime::now());
    let (tx, rx) = watch::channel(core.role());
    info!(replica = %client.replica, key = %client.key(), ttl = ?timing.ttl, lock_delay = ?timing.lock_delay, "HA: standby, campaigning");
    let task = run(client.clone(), core, fence.clone(), tx, Some(sharing), w.request_timeout, shutdown);
    Ok((Ha { fence, role: rx, client: Some(client) }, Some(task)))
}

/// `reconcile --once --ha`: takes the lock (one attempt) and keeps its session
/// renewed until `release`. `LockHeld` when another replica has it.
pub async fn take_once(w: &Wiring) -> anyhow::Result<Held> {
    let settings = &w.settings;
    let client = lock_client(w)?;
    let timing = Timing { ttl: settings.session_ttl, lock_delay: settings.lock_delay };
    let mut core = Core::new(timing, SystemTime::now());
    let sent = Instant::now();
    let sid = client.create_session(timing.ttl, timing.lock_delay).await?;
    core.session_created(sid.clone(), sent);
    let acquired = match client.acquire(&sid).await {
        Ok(true) => client.read(0, None).await.map(|(_, k)| k.filter(|k| k.session.as_deref() == Some(sid.as_str()))),
        Ok(false) => Ok(None),
        Err(e) => Err(e),
    };
    let lock_index = match acquired {
        Ok(Some(k)) => k.lock_index,
        Ok(None) => {
            let holder = client.read(0, None).await.ok().and_then(|(_, k)| k).and_then(|k| k.session);
            let _ = client.destroy(&sid).await;
            let holder = match holder {
                Some(session) => {
                    let name = client.session_name(&session).await.ok().flatten();
                    format!("session {session} ({})", name.as_deref().unwrap_or("name unknown"))
                }
                None => "no session: the lock is in its lock delay after its last holder was lost; try again shortly"
                    .to_owned(),
            };
            return Err(LockHeld { key: client.key().to_owned(), holder }.into());
        }
        Err(e) => {
            // If the acquire went through: release (no lock delay), then end the session.
            let _ = client.release(&sid).await;
            let _ = client.destroy(&sid).await;
            return Err(e.into());
        }
    };
    core.acquired(lock_index, SystemTime::now());
    let fence = Fence::new(client.clone());
    fence.set_lease(core.lease());
    let (tx, _rx) = watch::channel(core.role());
    let stop = CancellationToken::new();
    let task = tokio::spawn(run(client.clone(), core, fence.clone(), tx, None, w.request_timeout, stop.clone()));
    Ok(Held { fence, stop, task, client, lock_index })
}

/// The lock, held by `reconcile --once --ha`.
pub struct Held {
    pub fence: Fence,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
    client: LockClient,
    /// The lock index this run holds the lock at: its shared records go there.
    lock_index: u64,
}

impl Held {
    /// Adopts the ledgers the last leader shared (see `ledger`), before any write.
    pub async fn adopt(&self, sharing: &mut Sharing) -> Result<(), ledger::SharingError> {
        sharing.adopt(&self.client).await
    }

    /// Shares this run's ledgers with the next leader.
    pub async fn publish(&self, sharing: &mut Sharing) -> Result<(), ledger::SharingError> {
        sharing.publish(&self.client, self.lock_index, ledger::Gate::Fence(&self.fence)).await
    }

    /// Releases the lock and destroys the session.
    pub async fn release(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

/// How long after a write the ledgers are shared (a burst of writes shares once).
const SHARE_DEBOUNCE: Duration = Duration::from_millis(200);

/// The elector: performs `Core`'s steps until `shutdown`, then leaves.
/// Without `sharing` (reconcile, which adopts and publishes itself) it never
/// acquires: it only keeps what it holds.
async fn run(
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

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing { ttl: Duration::from_secs(9), lock_delay: Duration::from_secs(15) };

    fn wall() -> SystemTime {
        SystemTime::UNIX_EPOCH
    }

    #[test]
    fn standby_campaigns_then_leads_with_a_lease_short_of_the_ttl() {
        let t0 = Instant::now();
        let mut c = Core::new(T, wall());
        assert_eq!(c.next(t0, wall()), Step::CreateSession);
        c.session_created("s1".into(), t0);
        assert_eq!(c.next(t0, wall()), Step::Acquire);
        c.acquired(7, wall());
        let lease = c.lease().unwrap();
        assert_eq!((lease.until, lease.session.as_str(), lease.lock_index), (t0 + Duration::from_secs(6), "s1", 7));
        assert_eq!(c.next(t0, wall()), Step::Watch { index: 0, until: t0 + Duration::from_secs(3) });
        assert_eq!(c.next(t0 + Duration::from_secs(3), wall()), Step::Renew);
        c.renewed(t0 + Duration::from_secs(3));
        assert_eq!(c.lease().unwrap().until, t0 + Duration::from_secs(9));
    }

    #[test]
    fn a_refused_acquire_waits_and_a_held_key_is_watched() {
        let t0 = Instant::now();
        let mut c = Core::new(T, wall());
        c.session_created("s1".into(), t0);
        c.refused(t0);
        assert_eq!(c.next(t0, wall()), Step::Watch { index: 0, until: t0 + T.retry() });
        assert_eq!(c.next(t0 + T.retry(), wall()), Step::Acquire);
        c.observed(12, Some(("other", 3)), wall());
        // Held by another: watch until the renew is due, no acquire.
        assert_eq!(c.next(t0 + T.retry(), wall()), Step::Watch { index: 12, until: t0 + Duration::from_secs(3) });
        assert!(c.lease().is_none());
        c.observed(13, None, wall());
        assert_eq!(c.next(t0 + T.retry(), wall()), Step::Acquire);
    }

    #[test]
    fn the_leader_steps_down_when_the_key_is_not_ours_or_the_session_is_gone() {
        let t0 = Instant::now();
        let mut c = Core::new(T, wall());
        c.session_created("s1".into(), t0);
        c.acquired(2, wall());
        c.observed(5, Some(("s1", 2)), wall());
        assert!(c.is_leader());
        c.observed(6, Some(("s1", 3)), wall());
        assert!(!c.is_leader(), "another lock index is another tenure");
        assert_eq!(c.session(), Some("s1"));
        c.acquired(4, wall());
        c.session_gone(wall());
        assert!(!c.is_leader());
        assert_eq!(c.next(t0, wall()), Step::CreateSession);
    }

    #[test]
    fn unrenewed_for_a_ttl_the_session_is_given_up_and_the_fence_closed_before() {
        let t0 = Instant::now();
        let mut c = Core::new(T, wall());
        c.session_created("s1".into(), t0);
        c.acquired(1, wall());
        // Renews fail: the lease ends at TTL − margin, the session at TTL.
        c.renew_failed(t0 + Duration::from_secs(3));
        assert_eq!(c.lease().unwrap().until, t0 + Duration::from_secs(6));
        assert_eq!(c.next(t0 + Duration::from_secs(8), wall()), Step::Renew);
        assert_eq!(c.next(t0 + Duration::from_secs(9), wall()), Step::CreateSession);
        assert!(c.lease().is_none());
    }

    #[test]
    fn the_lock_delay_outlasts_the_margin_with_the_defaults() {
        let t = Timing { ttl: DEFAULT_TTL, lock_delay: DEFAULT_LOCK_DELAY };
        assert!(t.lock_delay > t.margin());
        // kill -9 takeover: 2 × TTL + lock delay + one retry, within 45 s.
        assert!(2 * t.ttl + t.lock_delay + t.retry() <= Duration::from_secs(45));
    }
}
