//! What Switchboard thinks and why, for operators: the status model (`model`),
//! its HTML page (`html`), the live stream/resync status the daemon keeps
//! (`live`), and readiness for systemd (`systemd`).
//!
//! Invariant: one source of truth. `/api/status` (and its alias `/state`),
//! the page at `/` and `switchboard state` all show one `StatusModel`,
//! built by `model::build` from the store and the live status.

pub mod html;
pub mod live;
pub mod model;
pub mod systemd;

pub use live::{Live, LiveStatus, Role};
pub use model::{Inputs, Query, StatusModel};

impl StatusModel {
    /// Human-readable rendering for `switchboard state`.
    pub fn render_text(&self) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let ready = if self.ready.ready { "yes".to_owned() } else { format!("no ({})", self.ready.reasons.join("; ")) };
        if !self.generated_at.is_empty() {
            let _ = writeln!(out, "switchboard {} as of {}", self.version, self.generated_at);
            let _ = writeln!(out, "ready: {ready}");
        }
        if let Some(role) = &self.role {
            let _ = writeln!(out, "role: {} since {}", role.role, role.since);
        }
        let s = &self.stream;
        if s.connected {
            let _ = writeln!(
                out,
                "stream: connected to {} since {}, last event {}, reconnects {}",
                s.endpoint.as_deref().unwrap_or("?"),
                s.since.as_deref().unwrap_or("?"),
                s.last_event.as_deref().unwrap_or("none"),
                s.reconnects
            );
        } else if s.since.is_some() {
            let _ = writeln!(out, "stream: not connected ({})", s.last_error.as_deref().unwrap_or("?"));
        }
        let _ = writeln!(out, "last resync: {}", self.last_resync.as_deref().unwrap_or("never"));
        if let (Some(at), Some(ms)) = (&self.resync.last_at, self.resync.last_duration_ms) {
            let changes: Vec<String> = self.resync.last_changes.iter().map(|(b, n)| format!("{b} {n}")).collect();
            let _ = writeln!(out, "  finished {at} in {ms} ms, changed: {}", changes.join(", "));
            for (what, e) in &self.resync.last_failures {
                let _ = writeln!(out, "  {what} failed: {e}");
            }
        }
        let _ = writeln!(out, "\napps ({}):", self.apps.len());
        for a in &self.apps {
            let stopped = a.stopped_at.as_deref().map(|s| format!("  stopped {s}")).unwrap_or_default();
            let services =
                if a.services.is_empty() { String::new() } else { format!("  services {}", a.services.join(",")) };
            let _ = writeln!(out, "  {}  version {}{services}{stopped}", a.app_id, a.version.as_deref().unwrap_or("?"));
        }
        let _ = writeln!(out, "\ninstances ({}):", self.instances.len());
        for i in &self.instances {
            let backends: Vec<String> = i.backends.iter().map(|(b, s)| format!("{b}={}", s.state)).collect();
            let _ = writeln!(
                out,
                "  {}  {}  {}  {}  {}",
                i.instance,
                i.state.as_deref().unwrap_or("-"),
                i.status,
                i.endpoint.as_deref().unwrap_or("-"),
                backends.join(" ")
            );
        }
        let _ = writeln!(out, "\npending ({}):", self.pending.len());
        for p in &self.pending {
            let _ = writeln!(out, "  {}  {}  lacks {}  for {} s", p.instance, p.app_id, p.lack, p.waiting_ms / 1000);
        }
        for (b, regs) in &self.ledger {
            let _ = writeln!(out, "\nledger {b} ({}):", regs.len());
            for r in regs {
                let _ = writeln!(out, "  {}  {}  {}:{}", r.id, r.service, r.address, r.port);
            }
        }
        for (b, ops) in &self.queue {
            let _ = writeln!(out, "\nqueue {b} ({}):", ops.len());
            for q in ops {
                let err = q.last_error.as_deref().map(|e| format!("  last error: {e}")).unwrap_or_default();
                let _ = writeln!(out, "  {} {}  attempts {}{err}", q.op.verb(), q.op.key(), q.attempts);
            }
        }
        let _ = writeln!(out, "\nrejections ({}):", self.rejections.len());
        for r in &self.rejections {
            let _ = writeln!(out, "  [{}] app {} label {}: {}", r.backend, r.app_id, r.label, r.reason);
        }
        let _ = writeln!(out, "\nrefusals ({}):", self.refusals.len());
        for r in &self.refusals {
            let _ = writeln!(
                out,
                "  [{}] app {} {} {}  since {}: {}",
                r.backend, r.app_id, r.op, r.entity, r.since, r.reason
            );
        }
        out
    }
}
