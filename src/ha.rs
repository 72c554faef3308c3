//! HA replicas: leader election on a Consul session and the KV lock
//! `switchboard/<cluster>/leader`, and the fence that keeps every replica but
//! the leader from writing to a backend.
//!
//! Parts, a file each:
//! - `machine`: `Core`, pure. Takes what Consul answered and the time, returns
//!   the next step (create session, renew, acquire, watch the key until a
//!   deadline) and the lease the fence may grant; `Timing`, the lease
//!   arithmetic. No I/O, no clock.
//! - `elector`: the I/O loop doing those steps against Consul (`client`),
//!   publishing the role on a `watch` and the lease on the `Fence` (`fence`).
//! - `fence`: the lease as the writers see it; `tls::HttpClient::send` passes
//!   every backend write request through it (the gate).
//! - `settings`: the HA settings and the start-up check of the lease arithmetic.
//! - this file: the handles (`Ha`, `Held`), starting the elector, and one read
//!   of the lock key (who leads).
//!
//! Invariants:
//! - Never two writers. The leader sends a write request only before its last
//!   successful renew (sent at) + TTL − margin, by its own monotonic clock, and
//!   gives it up at that instant (the gate); Consul drops a session no earlier
//!   than TTL after that renew arrived (the session has no health checks that
//!   could drop it sooner), then keeps the lock closed for the lock delay,
//!   which covers the margin and one request timeout (`settings` checks it).
//!   Before each batch the applier reads the key (`Fence::confirm`): the lock
//!   index must still be ours.
//! - A session not renewed for a whole TTL is given up (Consul may have dropped
//!   it): the replica steps down and starts over with a new session.
//! - On shutdown the leader closes the fence, waits for writes in flight, then
//!   releases the lock (no lock delay on a release) and destroys its session, so
//!   a standby takes over at once.

use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

pub mod client;
mod elector;
pub mod fence;
pub mod ledger;
pub mod machine;
pub mod settings;

pub use client::{ClientError, LockClient};
pub use fence::{Fence, Lease};
pub use ledger::Sharing;
pub use machine::{Core, Step, Timing};
pub use settings::{HaSettings, Wiring};

use crate::model::Timestamp;

/// Default session TTL. After a kill -9, Consul drops the session within
/// 2 × TTL (20 s), the lock delay (15 s) follows, and the standby retries
/// every second: a takeover within 36 s, under the 45 s promised.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
/// Default lock delay (Consul's own default).
pub const DEFAULT_LOCK_DELAY: Duration = Duration::from_secs(15);

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

/// The elector of `switchboard run`, before it runs: its fence exists
/// (closed) so the backends can be built behind it (`fence`), then `start`
/// runs it. Without `--ha`: `Fence::always()`, and `start` gives `Ha::single`.
pub struct Prepared {
    ha: Option<(Wiring, LockClient, Fence)>,
}

/// Prepares the elector of `switchboard run --ha` (or none without `--ha`).
pub fn prepare(wiring: Option<Wiring>) -> Result<Prepared, ClientError> {
    let Some(w) = wiring else { return Ok(Prepared { ha: None }) };
    let client = lock_client(&w)?;
    let fence = Fence::new(client.clone());
    Ok(Prepared { ha: Some((w, client, fence)) })
}

impl Prepared {
    /// The fence every backend write passes: hand it to the backends
    /// (`gated`) and to the appliers.
    pub fn fence(&self) -> Fence {
        self.ha.as_ref().map_or_else(Fence::always, |(_, _, f)| f.clone())
    }

    /// Starts campaigning; the task ends after `shutdown`, once the lock is
    /// released.
    pub fn start(
        self,
        sharing: Sharing,
        shutdown: CancellationToken,
    ) -> (Ha, Option<impl Future<Output = ()> + Send + 'static>) {
        let Some((w, client, fence)) = self.ha else { return (Ha::single(), None) };
        let settings = &w.settings;
        let timing = Timing { ttl: settings.session_ttl, lock_delay: settings.lock_delay };
        let core = Core::new(timing, SystemTime::now());
        let (tx, rx) = watch::channel(core.role());
        info!(replica = %client.replica, key = %client.key(), ttl = ?timing.ttl, lock_delay = ?timing.lock_delay, "HA: standby, campaigning");
        let task = elector::run(client.clone(), core, fence.clone(), tx, Some(sharing), w.request_timeout, shutdown);
        (Ha { fence, role: rx, client: Some(client) }, Some(task))
    }
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
    let task =
        tokio::spawn(elector::run(client.clone(), core, fence.clone(), tx, None, w.request_timeout, stop.clone()));
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
