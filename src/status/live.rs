//! What the daemon knows about itself right now and the store does not hold:
//! the event stream (which Marathon, since when, last event, reconnects), the
//! last resync (when, how long, what it changed) and whether the first one is
//! done. The daemon writes it through `Metrics` hooks; the status server reads
//! a copy.
//!
//! Invariant: a std `Mutex` held only to copy or update a few fields, never
//! across an `.await`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

use serde::{Deserialize, Serialize};

use crate::model::Timestamp;

/// The event stream as the daemon sees it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StreamStatus {
    pub connected: bool,
    /// The Marathon that answered (the leader after a standby's redirect).
    pub endpoint: Option<String>,
    /// Since when it is connected (or disconnected).
    pub since: Option<String>,
    pub last_event: Option<String>,
    /// Connections after the first one.
    pub reconnects: u64,
    /// Why the stream went down, while it is down.
    pub last_error: Option<String>,
}

/// The last full resync.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ResyncStatus {
    /// A resync has read Marathon's snapshot and listed the backends.
    pub first_done: bool,
    /// When the last resync finished (successful or not).
    pub last_at: Option<String>,
    pub last_duration_ms: Option<u64>,
    /// Operations the last resync queued, by backend.
    pub last_changes: BTreeMap<String, usize>,
    /// Backends (or `marathon`) the last resync could not read, with why.
    pub last_failures: BTreeMap<String, String>,
}

/// The HA role of this instance (leader or standby, and since when). `None`
/// until an HA mode exists: every daemon acts alone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Role {
    /// `leader` or `standby`.
    pub role: String,
    pub since: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LiveStatus {
    pub stream: StreamStatus,
    pub resync: ResyncStatus,
    /// Set by the HA mode when there is one (see `Role`).
    pub role: Option<Role>,
    /// Unix seconds of the last finished resync, for the gauge.
    #[serde(skip)]
    pub last_resync_unix: Option<f64>,
    /// Whether the stream was ever connected (the next connection is a reconnect).
    #[serde(skip)]
    pub ever_connected: bool,
}

/// A cloneable handle to the live status.
#[derive(Clone, Default)]
pub struct Live {
    inner: Arc<Mutex<LiveStatus>>,
}

impl Live {
    pub fn lock(&self) -> MutexGuard<'_, LiveStatus> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A copy, for the status model.
    pub fn snapshot(&self) -> LiveStatus {
        self.lock().clone()
    }
}

/// Why the daemon is not ready (empty: ready): store open, first resync
/// done, stream connected.
pub fn not_ready_reasons(live: &LiveStatus, store_open: bool) -> Vec<String> {
    let mut reasons = Vec::new();
    if !store_open {
        reasons.push("store not open".to_owned());
    }
    if !live.resync.first_done {
        let why = live.resync.last_failures.get("marathon").map(|e| format!(": {e}")).unwrap_or_default();
        reasons.push(format!("first resync not done yet{why}"));
    }
    if !live.stream.connected {
        let why = live.stream.last_error.as_deref().map(|e| format!(": {e}")).unwrap_or_default();
        reasons.push(format!("event stream not connected{why}"));
    }
    reasons
}

pub fn now_string() -> String {
    Timestamp::now().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_the_first_resync_and_a_connected_stream() {
        let mut live = LiveStatus::default();
        let reasons = not_ready_reasons(&live, true);
        assert_eq!(reasons.len(), 2, "{reasons:?}");
        assert!(reasons[0].contains("first resync"), "{reasons:?}");
        live.resync.first_done = true;
        live.stream.connected = true;
        assert!(not_ready_reasons(&live, true).is_empty());
        live.stream.connected = false;
        live.stream.last_error = Some("closed by server".into());
        assert_eq!(not_ready_reasons(&live, true), ["event stream not connected: closed by server"]);
        assert_eq!(not_ready_reasons(&live, false).len(), 2);
    }
}
