//! Pure folding of Marathon facts into one record per task instance, and the
//! evaluation of those records into desired registrations.
//!
//! Invariants:
//! - No I/O, no clock, no sled: values in, values out.
//! - Order does not matter. Every record is a join-semilattice: `merge` is
//!   commutative, associative and idempotent, so any permutation or
//!   duplication of the same facts folds to the same record.
//!   - state: the greatest `(incarnation, tier, phase, at, rank)`, where
//!     tier is live < killing < terminal and phase is starting < running.
//!     Within one incarnation terminal states are final (a tombstone);
//!     `TASK_KILLING` never goes back to running; a running task never stages
//!     again; between running and unreachable the newest wins, so
//!     `TASK_UNREACHABLE` can recover. A relaunch in the same instance
//!     (Marathon 1.8+ `._app.2` after `._app.1`, a resident task's next
//!     attempt) has a greater incarnation and outranks the dead one.
//!     Instance-keyed events carry no incarnation (0): they never outrank a
//!     task-keyed fact of a later launch.
//!   - location (host, ports, IPs): of the newest incarnation, the newest
//!     fact that has ports or IPs.
//!   - health: the newest health fact.
//!   - app stop: the newest stop time; an instance whose state is no newer
//!     than its app's stop is dead.
//! - An instance is complete when it is serving, its location is known and a
//!   spec of its app at least as new as the task's version is known; the
//!   newest known spec of the app is the one used.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::labels::{self, LabelError, LabelOptions};
use crate::marathon::event::Event;
use crate::model::{AppId, AppSpec, InstanceId, PodSpec, Registration, TaskFacts, TaskId, TaskState, Timestamp};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateFact {
    pub state: TaskState,
    pub at: Timestamp,
    /// Which launch of the instance this fact is about (`TaskId::incarnation`).
    #[serde(default)]
    pub incarnation: u64,
}

impl StateFact {
    /// A fact about no particular launch (instance-keyed events).
    pub fn new(state: TaskState, at: Timestamp) -> StateFact {
        StateFact { state, at, incarnation: 0 }
    }

    fn tier(&self) -> u8 {
        if self.state.is_terminal() {
            2
        } else if self.state == TaskState::Killing {
            1
        } else {
            0
        }
    }

    fn rank(&self) -> u8 {
        match self.state {
            TaskState::Staging => 0,
            TaskState::Starting => 1,
            TaskState::Unreachable => 2,
            TaskState::Running => 3,
            s => 4 + s as u8,
        }
    }

    /// Staging and starting come before running or unreachable: a task that
    /// ran never stages again, whatever the timestamps say (a snapshot's
    /// facts can be stamped older than the events they already reflect).
    fn phase(&self) -> u8 {
        match self.state {
            TaskState::Staging | TaskState::Starting => 0,
            _ => 1,
        }
    }

    fn key(&self) -> (u64, u8, u8, Timestamp, u8) {
        (self.incarnation, self.tier(), self.phase(), self.at, self.rank())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Location {
    pub task_id: TaskId,
    pub host: String,
    pub ports: Vec<u16>,
    pub ip_addresses: Vec<String>,
    pub at: Timestamp,
}

impl Location {
    fn key(&self) -> (u64, bool, Timestamp, &Location) {
        (self.task_id.incarnation(), !self.ports.is_empty() || !self.ip_addresses.is_empty(), self.at, self)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthFact {
    pub healthy: Option<bool>,
    pub at: Timestamp,
}

impl HealthFact {
    fn key(&self) -> (Timestamp, u8) {
        // On a tie the more cautious value wins: unhealthy < unknown < healthy.
        let v = match self.healthy {
            Some(true) => 2,
            None => 1,
            Some(false) => 0,
        };
        (self.at, 2 - v)
    }
}

/// Everything known about one task instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceRecord {
    pub instance: InstanceId,
    pub app_id: AppId,
    pub state: Option<StateFact>,
    pub location: Option<Location>,
    /// App version the task runs (Marathon version strings sort by time).
    pub version: Option<String>,
    pub health: Option<HealthFact>,
    /// Pod instances (Marathon 1.4+): the state and location of each
    /// container task, by container name; empty for app instances. The
    /// instance-level `state` and `location` above still join every
    /// container's facts (a dead container kills its whole instance).
    #[serde(default)]
    pub containers: BTreeMap<String, ContainerFact>,
}

/// What is known about one container task of a pod instance: the same
/// lattices as an instance's state and location.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ContainerFact {
    pub state: Option<StateFact>,
    pub location: Option<Location>,
}

impl ContainerFact {
    fn merge(&self, other: &ContainerFact) -> ContainerFact {
        ContainerFact {
            state: join(&self.state, &other.state, |y, x| y.key() > x.key()),
            location: join(&self.location, &other.location, |y, x| y.key() > x.key()),
        }
    }
}

fn join<T: Clone>(a: &Option<T>, b: &Option<T>, greater: impl Fn(&T, &T) -> bool) -> Option<T> {
    match (a, b) {
        (Some(x), Some(y)) => Some(if greater(y, x) { y.clone() } else { x.clone() }),
        (Some(x), None) | (None, Some(x)) => Some(x.clone()),
        (None, None) => None,
    }
}

impl InstanceRecord {
    pub fn empty(instance: InstanceId, app_id: AppId) -> InstanceRecord {
        InstanceRecord {
            instance,
            app_id,
            state: None,
            location: None,
            version: None,
            health: None,
            containers: BTreeMap::new(),
        }
    }

    /// Lattice join of two records of the same instance.
    pub fn merge(&self, other: &InstanceRecord) -> InstanceRecord {
        InstanceRecord {
            instance: self.instance.clone(),
            app_id: self.app_id.clone().max(other.app_id.clone()),
            state: join(&self.state, &other.state, |y, x| y.key() > x.key()),
            location: join(&self.location, &other.location, |y, x| y.key() > x.key()),
            version: join(&self.version, &other.version, |y, x| y > x),
            health: join(&self.health, &other.health, |y, x| y.key() > x.key()),
            containers: merge_containers(&self.containers, &other.containers),
        }
    }

    /// The record a status fact (event or snapshot task) stands for.
    pub fn from_task(facts: &TaskFacts) -> InstanceRecord {
        let location =
            (!facts.host.is_empty() && facts.host != "unknown" || !facts.ip_addresses.is_empty()).then(|| Location {
                task_id: facts.task_id.clone(),
                host: facts.host.clone(),
                ports: facts.ports.clone(),
                ip_addresses: facts.ip_addresses.clone(),
                at: facts.at,
            });
        InstanceRecord {
            instance: facts.task_id.instance_id(),
            app_id: facts.app_id.clone(),
            state: Some(StateFact { state: facts.state, at: facts.at, incarnation: facts.task_id.incarnation() }),
            location,
            version: (!facts.version.is_empty()).then(|| facts.version.clone()),
            health: None,
            containers: BTreeMap::new(),
        }
        .with_container(facts)
    }

    /// A pod container task's facts also land under its container's name.
    fn with_container(mut self, facts: &TaskFacts) -> InstanceRecord {
        if let Some(name) = facts.task_id.pod_container() {
            let fact = ContainerFact { state: self.state.clone(), location: self.location.clone() };
            self.containers.insert(name.to_owned(), fact);
        }
        self
    }

    /// The newest time any fact of this record carries.
    pub fn last_at(&self) -> Timestamp {
        let s = self.state.as_ref().map(|s| s.at).unwrap_or_default();
        let l = self.location.as_ref().map(|l| l.at).unwrap_or_default();
        let h = self.health.as_ref().map(|h| h.at).unwrap_or_default();
        s.max(l).max(h)
    }

    /// The newest launch of this instance any fact speaks of.
    pub fn incarnation(&self) -> u64 {
        let s = self.state.as_ref().map(|s| s.incarnation).unwrap_or(0);
        let l = self.location.as_ref().map(|l| l.task_id.incarnation()).unwrap_or(0);
        s.max(l)
    }

    pub fn is_tombstone(&self) -> bool {
        self.state.as_ref().is_some_and(|s| s.state.is_terminal())
    }
}

fn merge_containers(
    a: &BTreeMap<String, ContainerFact>,
    b: &BTreeMap<String, ContainerFact>,
) -> BTreeMap<String, ContainerFact> {
    let mut out = a.clone();
    for (name, fact) in b {
        let merged = out.get(name).map(|have| have.merge(fact)).unwrap_or_else(|| fact.clone());
        out.insert(name.clone(), merged);
    }
    out
}

/// App-level facts: when it was stopped (destroyed).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AppRecord {
    pub stopped_at: Option<Timestamp>,
}

impl AppRecord {
    pub fn merge(&self, other: &AppRecord) -> AppRecord {
        AppRecord { stopped_at: self.stopped_at.max(other.stopped_at) }
    }
}

/// What one event means for the store: facts to merge, keyed by what they are about.
#[derive(Debug, Clone, PartialEq)]
pub enum Touch {
    Instance(InstanceRecord),
    App(AppId, AppRecord),
    Spec(AppSpec),
    /// The app may have a new version: fetch it if a task needs it.
    Hint(AppId),
}

/// Routes one typed event to the facts it carries. Events are hints plus
/// facts; nothing here reads a store.
pub fn touches(event: &Event) -> Vec<Touch> {
    match event {
        Event::Status(facts) => vec![Touch::Instance(InstanceRecord::from_task(facts))],
        Event::InstanceChanged { instance, app_id, state, host: _, version, at } => {
            let mut rec = InstanceRecord::empty(instance.clone(), app_id.clone());
            rec.state = state.map(|state| StateFact::new(state, *at));
            rec.version = (!version.is_empty()).then(|| version.clone());
            vec![Touch::Instance(rec)]
        }
        Event::TaskState { task_id, app_id, state, at } => {
            let mut rec = InstanceRecord::empty(task_id.instance_id(), app_id.clone());
            rec.state = Some(StateFact { state: *state, at: *at, incarnation: task_id.incarnation() });
            vec![Touch::Instance(rec)]
        }
        Event::Health { instance, app_id, healthy, at } => {
            let mut rec = InstanceRecord::empty(instance.clone(), app_id.clone());
            rec.health = Some(HealthFact { healthy: *healthy, at: *at });
            vec![Touch::Instance(rec)]
        }
        Event::Spec { spec, .. } => vec![Touch::Spec(spec.clone())],
        Event::AppStopped { app_id, at } => vec![Touch::App(app_id.clone(), AppRecord { stopped_at: Some(*at) })],
        Event::AppTouched { app_id, .. } => vec![Touch::Hint(app_id.clone())],
        Event::Ignored { .. } | Event::Unknown { .. } => Vec::new(),
    }
}

/// The facts one app of a REST snapshot (or a single-app fetch) stands for,
/// stamped `as_of`: its spec, and each task's status and health.
pub fn snapshot_touches(spec: &AppSpec, tasks: &[(TaskFacts, Option<bool>)], as_of: Timestamp) -> Vec<Touch> {
    let mut touches = vec![Touch::Spec(spec.clone())];
    for (facts, healthy) in tasks {
        let mut facts = facts.clone();
        facts.at = as_of;
        let mut rec = InstanceRecord::from_task(&facts);
        if spec.health_checks.is_empty() || healthy.is_some() {
            rec.health = Some(HealthFact { healthy: *healthy, at: as_of });
        }
        touches.push(Touch::Instance(rec));
    }
    touches
}

/// What an instance lacks before it can be registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Lack {
    /// No app spec at least as new as the task's version.
    Spec,
    /// Running, but host and ports are unknown (only instance events seen).
    TaskFacts,
}

impl std::fmt::Display for Lack {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Lack::Spec => "app spec",
            Lack::TaskFacts => "task facts (host, ports)",
        })
    }
}

/// Where one instance stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Status {
    /// Terminal, or its app was stopped after its last state.
    Dead,
    /// Alive but not taking traffic (staging, killing, unreachable, no state yet).
    Idle,
    /// Serving but incomplete.
    Pending(Lack),
    /// Serving and complete.
    Ready,
}

pub fn status(rec: &InstanceRecord, app: Option<&AppRecord>, newest_spec: Option<&AppSpec>) -> Status {
    let Some(state) = &rec.state else {
        return Status::Idle;
    };
    if state.state.is_terminal() {
        return Status::Dead;
    }
    if let Some(stopped) = app.and_then(|a| a.stopped_at)
        && state.at <= stopped
    {
        return Status::Dead;
    }
    if !state.state.is_serving() {
        return Status::Idle;
    }
    if let Some(pod) = newest_spec.and_then(|s| s.pod.as_ref()) {
        if let Some(not_yet) = pod_containers_status(rec, pod) {
            return not_yet;
        }
    } else {
        let has_location = rec.location.as_ref().is_some_and(|l| !l.ports.is_empty() || !l.ip_addresses.is_empty());
        if !has_location {
            return Status::Pending(Lack::TaskFacts);
        }
    }
    let spec_ok = match (newest_spec, &rec.version) {
        (Some(spec), Some(v)) => spec.version >= *v,
        (Some(_), None) => true,
        (None, _) => false,
    };
    if !spec_ok {
        return Status::Pending(Lack::Spec);
    }
    Status::Ready
}

/// A pod instance serves once every container of the spec runs in the
/// instance's current launch, each with its allocated host ports and the
/// instance with a known agent host. `None` when it does; else why not.
fn pod_containers_status(rec: &InstanceRecord, pod: &PodSpec) -> Option<Status> {
    let launch = rec.incarnation();
    let mut host_known = false;
    for c in &pod.containers {
        let fact = rec.containers.get(&c.name);
        let Some(state) = fact.and_then(|f| f.state.as_ref()).filter(|s| s.incarnation >= launch) else {
            // No word yet from this container's task of the current launch.
            return Some(Status::Pending(Lack::TaskFacts));
        };
        if !state.state.is_serving() {
            return Some(Status::Idle);
        }
        let loc = fact.and_then(|f| f.location.as_ref()).filter(|l| l.task_id.incarnation() >= launch);
        if loc.is_some_and(|l| !l.host.is_empty() && l.host != "unknown") {
            host_known = true;
        }
        if c.host_ports > 0 && loc.is_none_or(|l| l.ports.len() < c.host_ports) {
            return Some(Status::Pending(Lack::TaskFacts));
        }
    }
    (!host_known).then_some(Status::Pending(Lack::TaskFacts))
}

/// The facts of a complete pod instance as one task: the instance id as
/// task id (registration ids are `<instance id>:<port>`), the agent host,
/// the allocated host ports of every container in spec order (the order of
/// the pod's `hostPort` endpoints in `AppSpec::ports`), and the instance's
/// network addresses.
pub fn pod_task_facts(rec: &InstanceRecord, pod: &PodSpec) -> Option<TaskFacts> {
    let state = rec.state.as_ref()?;
    let task_id = TaskId::parse(rec.instance.as_str()).ok()?;
    let mut host = None;
    let mut ports = Vec::new();
    let mut ip_addresses: Vec<String> = Vec::new();
    for c in &pod.containers {
        let loc = rec.containers.get(&c.name).and_then(|f| f.location.as_ref());
        if let Some(loc) = loc {
            if host.is_none() && !loc.host.is_empty() && loc.host != "unknown" {
                host = Some(loc.host.clone());
            }
            for ip in &loc.ip_addresses {
                if !ip_addresses.contains(ip) {
                    ip_addresses.push(ip.clone());
                }
            }
        }
        let own = loc.map(|l| l.ports.as_slice()).unwrap_or_default();
        ports.extend(own.iter().take(c.host_ports));
    }
    Some(TaskFacts {
        task_id,
        app_id: rec.app_id.clone(),
        host: host.unwrap_or_else(|| "unknown".to_owned()),
        ports,
        ip_addresses,
        state: state.state,
        version: rec.version.clone().unwrap_or_default(),
        at: state.at,
    })
}

/// The task facts a complete record stands for.
pub fn task_facts(rec: &InstanceRecord) -> Option<TaskFacts> {
    let state = rec.state.as_ref()?;
    let loc = rec.location.as_ref()?;
    Some(TaskFacts {
        task_id: loc.task_id.clone(),
        app_id: rec.app_id.clone(),
        host: loc.host.clone(),
        ports: loc.ports.clone(),
        ip_addresses: loc.ip_addresses.clone(),
        state: state.state,
        version: rec.version.clone().unwrap_or_default(),
        at: state.at,
    })
}

/// Everything desired, derived from the store's records.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Desired {
    pub registrations: Vec<Registration>,
    pub pending: Vec<(InstanceId, AppId, Lack)>,
    /// Apps whose labels cannot be honoured; none of their instances is desired.
    pub errors: BTreeMap<AppId, LabelError>,
}

/// Pure: desired registrations from instance records, app records and the
/// newest spec of each app.
pub fn desired<'a>(
    instances: impl IntoIterator<Item = &'a InstanceRecord>,
    apps: &BTreeMap<AppId, AppRecord>,
    specs: &BTreeMap<AppId, AppSpec>,
    opts: &LabelOptions,
) -> Desired {
    let mut out = Desired::default();
    for rec in instances {
        let spec = specs.get(&rec.app_id);
        match status(rec, apps.get(&rec.app_id), spec) {
            Status::Dead | Status::Idle => {}
            Status::Pending(lack) => out.pending.push((rec.instance.clone(), rec.app_id.clone(), lack)),
            Status::Ready => {
                let Some(spec) = spec else { continue };
                let facts = match &spec.pod {
                    Some(pod) => pod_task_facts(rec, pod),
                    None => task_facts(rec),
                };
                let Some(facts) = facts else { continue };
                // Health only means something for apps that define checks.
                let healthy =
                    if spec.health_checks.is_empty() { None } else { rec.health.as_ref().and_then(|h| h.healthy) };
                match labels::registrations(spec, &facts, healthy, opts) {
                    Ok(regs) => out.registrations.extend(regs),
                    Err(e) => {
                        out.errors.insert(rec.app_id.clone(), e);
                    }
                }
            }
        }
    }
    out.registrations.sort();
    out.registrations.dedup_by(|a, b| a.id == b.id);
    out
}

/// An in-memory fold of touches: the same merge rules as the store, without
/// durability. For tests, and for reasoning about a set of events at once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Folded {
    pub instances: BTreeMap<InstanceId, InstanceRecord>,
    pub apps: BTreeMap<AppId, AppRecord>,
    /// The newest spec of each app.
    pub specs: BTreeMap<AppId, AppSpec>,
}

impl Folded {
    pub fn apply(&mut self, touch: &Touch) {
        match touch {
            Touch::Instance(rec) => {
                let merged = match self.instances.get(&rec.instance) {
                    Some(old) => old.merge(rec),
                    None => rec.clone(),
                };
                self.instances.insert(rec.instance.clone(), merged);
            }
            Touch::App(id, rec) => {
                let merged = self.apps.get(id).map(|old| old.merge(rec)).unwrap_or_else(|| rec.clone());
                self.apps.insert(id.clone(), merged);
            }
            Touch::Spec(spec) => {
                if self.specs.get(&spec.id).is_none_or(|have| have.version < spec.version) {
                    self.specs.insert(spec.id.clone(), spec.clone());
                }
            }
            Touch::Hint(_) => {}
        }
    }

    pub fn desired(&self, opts: &LabelOptions) -> Desired {
        desired(self.instances.values(), &self.apps, &self.specs, opts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    fn status_fact(state: TaskState, at: i64, ports: &[u16]) -> TaskFacts {
        TaskFacts {
            task_id: TaskId::parse("web.instance-1._app.1").unwrap(),
            app_id: AppId::parse("/web").unwrap(),
            host: if ports.is_empty() { "unknown".into() } else { "10.0.0.1".into() },
            ports: ports.to_vec(),
            ip_addresses: vec![],
            state,
            version: "v1".into(),
            at: t(at),
        }
    }

    fn fold_all(facts: &[TaskFacts]) -> InstanceRecord {
        let mut it = facts.iter().map(InstanceRecord::from_task);
        let first = it.next().unwrap();
        it.fold(first, |acc, r| acc.merge(&r))
    }

    fn final_state(facts: &[TaskFacts]) -> TaskState {
        fold_all(facts).state.unwrap().state
    }

    #[test]
    fn terminal_is_final_and_killing_does_not_go_back() {
        use TaskState::*;
        assert_eq!(final_state(&[status_fact(Killed, 5, &[1]), status_fact(Running, 9, &[1])]), Killed);
        assert_eq!(final_state(&[status_fact(Killing, 5, &[1]), status_fact(Running, 9, &[1])]), Killing);
        assert_eq!(final_state(&[status_fact(Unreachable, 5, &[1]), status_fact(Running, 9, &[1])]), Running);
        assert_eq!(final_state(&[status_fact(Running, 9, &[1]), status_fact(Unreachable, 5, &[1])]), Running);
        assert_eq!(final_state(&[status_fact(Running, 5, &[1]), status_fact(Staging, 5, &[])]), Running);
        // A snapshot stamped older than a stale STAGING still wins: running never stages again.
        assert_eq!(final_state(&[status_fact(Running, 1, &[1]), status_fact(Staging, 9, &[])]), Running);
    }

    fn launch(n: u64, state: TaskState, at: i64, ports: &[u16]) -> TaskFacts {
        let mut f = status_fact(state, at, ports);
        f.task_id = TaskId::parse(&format!("web.instance-1._app.{n}")).unwrap();
        f
    }

    #[test]
    fn a_relaunch_in_the_same_instance_outranks_the_dead_launch() {
        use TaskState::*;
        // Marathon 1.8+: a kill without wipe relaunches `._app.1` as `._app.2`.
        let facts = [launch(1, Running, 5, &[1]), launch(1, Killed, 9, &[1]), launch(2, Running, 7, &[2])];
        for order in [[0, 1, 2], [2, 1, 0], [1, 2, 0], [2, 0, 1]] {
            let rec = fold_all(&order.map(|i| facts[i].clone()));
            assert_eq!(rec.state.as_ref().unwrap().state, Running, "{order:?}");
            let loc = rec.location.unwrap();
            assert_eq!((loc.task_id.as_str(), loc.ports), ("web.instance-1._app.2", vec![2]), "{order:?}");
        }
        // An instance-keyed Killed (no incarnation) never buries a later launch.
        let mut rec = fold_all(&[launch(2, Running, 7, &[2])]);
        let mut killed = InstanceRecord::empty(rec.instance.clone(), rec.app_id.clone());
        killed.state = Some(StateFact::new(Killed, t(9)));
        rec = rec.merge(&killed);
        assert_eq!(rec.state.unwrap().state, Running);
        // Legacy ids have no incarnation: a tombstone stays final.
        assert_eq!(final_state(&[status_fact(Killed, 5, &[1]), status_fact(Running, 9, &[1])]), Killed);
    }

    #[test]
    fn location_prefers_facts_with_ports() {
        let rec = fold_all(&[status_fact(TaskState::Running, 5, &[31000]), status_fact(TaskState::Staging, 9, &[])]);
        assert_eq!(rec.location.unwrap().ports, vec![31000]);
    }

    #[test]
    fn merge_is_commutative_and_idempotent() {
        let a = InstanceRecord::from_task(&status_fact(TaskState::Running, 5, &[1]));
        let b = InstanceRecord::from_task(&status_fact(TaskState::Killing, 7, &[1]));
        assert_eq!(a.merge(&b), b.merge(&a));
        assert_eq!(a.merge(&a), a);
    }

    #[test]
    fn status_needs_spec_and_location() {
        let rec = fold_all(&[status_fact(TaskState::Running, 5, &[31000])]);
        assert_eq!(status(&rec, None, None), Status::Pending(Lack::Spec));
        let mut only_changed = InstanceRecord::empty(rec.instance.clone(), rec.app_id.clone());
        only_changed.state = Some(StateFact::new(TaskState::Running, t(5)));
        assert_eq!(status(&only_changed, None, None), Status::Pending(Lack::TaskFacts));
        let stopped = AppRecord { stopped_at: Some(t(6)) };
        assert_eq!(status(&rec, Some(&stopped), None), Status::Dead);
        let early_stop = AppRecord { stopped_at: Some(t(4)) };
        assert_eq!(status(&rec, Some(&early_stop), None), Status::Pending(Lack::Spec));
    }
}
