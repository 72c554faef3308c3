//! systemd integration through `sd_notify`: `READY=1` once the daemon is
//! ready (store open, first resync done, stream connected: what `/ready`
//! says), `WATCHDOG=1` every half watchdog interval when `WatchdogSec=` is
//! set, `STOPPING=1` on shutdown. Without `NOTIFY_SOCKET` (not under
//! systemd's `Type=notify`) it does nothing.
//!
//! Invariant: the watchdog is fed by a task of the daemon's runtime, so a
//! wedged runtime stops feeding it and systemd restarts the service.

use std::time::Duration;

use sd_notify::NotifyState;
use tokio_util::sync::CancellationToken;

use crate::status::live::{Live, not_ready_reasons};

/// How often readiness is checked before `READY=1` was sent.
const READY_POLL: Duration = Duration::from_millis(100);

/// Runs until `shutdown` fires.
pub async fn run(live: Live, shutdown: CancellationToken) {
    if std::env::var_os("NOTIFY_SOCKET").is_none() {
        return;
    }
    let watchdog = sd_notify::watchdog_enabled().map(|d| (d / 2).max(Duration::from_millis(10)));
    let mut feed = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
    let mut poll = tokio::time::interval(READY_POLL);
    let mut ready_sent = false;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => {
                let _ = sd_notify::notify(&[NotifyState::Stopping]);
                return;
            }
            _ = feed.tick(), if watchdog.is_some() => {
                if let Err(e) = sd_notify::notify(&[NotifyState::Watchdog]) {
                    tracing::warn!(error = %e, "cannot feed the systemd watchdog");
                }
            }
            _ = poll.tick(), if !ready_sent => {
                if not_ready_reasons(&live.snapshot(), true).is_empty() {
                    ready_sent = true;
                    match sd_notify::notify(&[NotifyState::Ready, NotifyState::Status("ready: stream connected, first resync done")]) {
                        Ok(()) => tracing::info!("told systemd we are ready"),
                        Err(e) => tracing::warn!(error = %e, "cannot notify systemd"),
                    }
                }
            }
        }
    }
}
