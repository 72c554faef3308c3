//! The elector's pure state machine: standby → acquiring → leader(since,
//! last renew, lock index) → lost. `Core` takes what Consul answered and the
//! time, and returns the next `Step` (create session, renew, acquire, watch
//! the key until a deadline) and the `Lease` the fence may grant.
//!
//! Invariant: no I/O, no clock (every instant is passed in). The lease
//! arithmetic lives here (`Timing`) and in `settings` (the start-up check).

use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use super::{Lease, Role};

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
    pub(super) timing: Timing,
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

#[cfg(test)]
mod tests {
    use super::*;

    use super::super::{DEFAULT_LOCK_DELAY, DEFAULT_TTL};

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
