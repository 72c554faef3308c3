//! Pure diff of desired registrations against what a backend holds (or what
//! the ledger says it holds), producing idempotent operations.
//!
//! Invariants:
//! - No I/O. Same inputs, same ops, in a stable order: deregistrations of
//!   instances first (traffic drains before anything new appears), then
//!   registrations, each sorted by id.
//! - An unchanged world yields no ops.
//! - Only `observed` entries can be deregistered, and `observed` only ever
//!   holds what this Switchboard owns, so nothing foreign is touched.
//! - A refusal holds back exactly the op that was refused (same backend,
//!   same key, same input hash) and lives only as long as the plan keeps
//!   calling for that very op (`hold_refused`).

use std::collections::{BTreeMap, BTreeSet};

use crate::model::Registration;

/// One idempotent change to a backend.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Op {
    /// Create or replace this registration.
    Register(Registration),
    /// Remove this registration. `service_empty` is true when no registration
    /// of the same service remains desired on this backend, so app-level
    /// objects (Kong service/route/upstream, Vulcand frontend/backend) go too.
    Deregister { registration: Registration, service_empty: bool },
}

impl Op {
    pub fn registration(&self) -> &Registration {
        match self {
            Op::Register(r) => r,
            Op::Deregister { registration, .. } => registration,
        }
    }

    /// The key under which at most one op is queued per backend.
    pub fn key(&self) -> &str {
        &self.registration().id
    }

    pub fn verb(&self) -> &'static str {
        match self {
            Op::Register(_) => "register",
            Op::Deregister { .. } => "deregister",
        }
    }
}

/// A desired registration a backend refuses, with the label at fault.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Rejection {
    pub backend: String,
    pub app_id: String,
    pub label: String,
    pub reason: String,
}

/// What a backend makes of the desired registrations.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// What this backend should hold.
    pub keep: Vec<Registration>,
    /// What it will not hold, and why. The rest carries on.
    pub rejected: Vec<Rejection>,
}

/// Ops that turn `observed` into `desired`. `same` says whether an observed
/// entry already matches its desired one.
pub fn plan(
    desired: &[Registration],
    observed: &[Registration],
    same: impl Fn(&Registration, &Registration) -> bool,
) -> Vec<Op> {
    let desired_by_id: BTreeMap<&str, &Registration> = desired.iter().map(|r| (r.id.as_str(), r)).collect();
    let observed_by_id: BTreeMap<&str, &Registration> = observed.iter().map(|r| (r.id.as_str(), r)).collect();
    let desired_services: BTreeSet<&str> = desired.iter().map(|r| r.service.as_str()).collect();

    let mut ops = Vec::new();
    for (id, obs) in &observed_by_id {
        if !desired_by_id.contains_key(id) {
            ops.push(Op::Deregister {
                registration: (*obs).clone(),
                service_empty: !desired_services.contains(obs.service.as_str()),
            });
        }
    }
    for (id, want) in &desired_by_id {
        match observed_by_id.get(id) {
            Some(obs) if same(want, obs) => {}
            _ => ops.push(Op::Register((*want).clone())),
        }
    }
    ops
}

/// A permanent refusal by a backend (an ACL 403, a schema error, a name held
/// by someone else), kept so the same input is not tried again.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Refusal {
    pub backend: String,
    pub app_id: String,
    /// The registration the op was for (its key in the queue).
    pub entity: String,
    /// `register` or `deregister`.
    pub op: String,
    pub reason: String,
    /// When it was first refused (RFC 3339, local clock).
    pub since: String,
    /// `input_hash` of the refused op.
    pub input: String,
}

/// A stable digest of an op (FNV-1a 64 over its store encoding): equal ops
/// hash equal, across restarts and processes. The instance's health is left
/// out: it flips at run time, no backend refuses by it, and a refusal must
/// not be retried at every flip.
pub fn input_hash(op: &Op) -> String {
    let mut op = op.clone();
    match &mut op {
        Op::Register(r) | Op::Deregister { registration: r, .. } => r.healthy = None,
    }
    let bytes = serde_json::to_vec(&op).unwrap_or_default();
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Planned ops minus those refused before with the very same input; and the
/// refusals (by entity) to lift, because the plan no longer calls for the op
/// they refused (its input changed, or it is not wanted any more).
pub fn hold_refused(ops: Vec<Op>, refusals: &[Refusal]) -> (Vec<Op>, Vec<String>) {
    let by_entity: BTreeMap<&str, &str> = refusals.iter().map(|r| (r.entity.as_str(), r.input.as_str())).collect();
    let mut held = BTreeSet::new();
    let ops = ops
        .into_iter()
        .filter(|op| {
            let refused = by_entity.get(op.key()).is_some_and(|input| *input == input_hash(op));
            if refused {
                held.insert(op.key().to_owned());
            }
            !refused
        })
        .collect();
    let lifted = refusals.iter().filter(|r| !held.contains(&r.entity)).map(|r| r.entity.clone()).collect();
    (ops, lifted)
}

/// What one resync did: the ops it queued per backend, and the backends that
/// could not be listed.
#[derive(Debug, Default)]
pub struct ResyncReport {
    pub ops: std::collections::BTreeMap<&'static str, Vec<Op>>,
    pub failed: Vec<(&'static str, String)>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Routes;

    fn reg(id: &str, service: &str, port: u16) -> Registration {
        Registration {
            id: id.into(),
            service: service.into(),
            app_id: "/web".into(),
            task_id: id.split(':').next().unwrap_or(id).into(),
            address: "10.0.0.1".into(),
            port,
            tags: vec!["switchboard".into()],
            consul: true,
            checks: vec![],
            healthy: None,
            has_health_checks: false,
            routes: Routes::default(),
            host: String::new(),
        }
    }

    /// Renders ops as short strings: `+id`, `-id`, `-id!` (service empty).
    fn check(desired: &[Registration], observed: &[Registration], want: &[&str]) {
        let got: Vec<String> = plan(desired, observed, |a, b| a == b)
            .iter()
            .map(|op| match op {
                Op::Register(r) => format!("+{}", r.id),
                Op::Deregister { registration, service_empty } => {
                    format!("-{}{}", registration.id, if *service_empty { "!" } else { "" })
                }
            })
            .collect();
        assert_eq!(got, want);
    }

    #[test]
    fn unchanged_world_makes_no_ops() {
        let a = reg("t1:1", "web", 1);
        check(&[a.clone()], &[a], &[]);
        check(&[], &[], &[]);
    }

    #[test]
    fn adds_missing_removes_dead_fixes_different() {
        let a = reg("t1:1", "web", 1);
        let b = reg("t2:2", "web", 2);
        let c = reg("t3:3", "api", 3);
        check(&[a.clone(), b.clone()], &[a.clone()], &["+t2:2"]);
        check(&[a.clone()], &[a.clone(), b.clone()], &["-t2:2"]);
        check(&[a.clone()], &[a.clone(), c.clone()], &["-t3:3!"]);
        let mut moved = b.clone();
        moved.port = 9;
        check(&[a.clone(), moved], &[a.clone(), b.clone()], &["+t2:2"]);
        check(&[], &[a, b], &["-t1:1!", "-t2:2!"]);
    }

    #[test]
    fn backend_equality_decides_drift() {
        let a = reg("t1:1", "web", 1);
        let mut seen = a.clone();
        seen.checks.clear();
        seen.healthy = Some(true);
        let ops = plan(&[a.clone()], &[seen], |d, o| d.service == o.service && d.port == o.port);
        assert!(ops.is_empty());
    }

    fn refusal(op: &Op) -> Refusal {
        Refusal {
            backend: "consul".into(),
            app_id: "/web".into(),
            entity: op.key().into(),
            op: op.verb().into(),
            reason: "HTTP 403: Permission denied".into(),
            since: "2026-01-01T00:00:00Z".into(),
            input: input_hash(op),
        }
    }

    #[test]
    fn a_refusal_holds_back_only_the_very_op_it_refused() {
        let a = Op::Register(reg("t1:1", "web", 1));
        let b = Op::Register(reg("t2:2", "web", 2));
        let refused = [refusal(&a)];
        let (ops, lifted) = hold_refused(vec![a.clone(), b.clone()], &refused);
        assert_eq!(ops, [b.clone()]);
        assert!(lifted.is_empty());
        // The input changed: the op goes out and the refusal is lifted.
        let moved = Op::Register(reg("t1:1", "web", 9));
        let (ops, lifted) = hold_refused(vec![moved.clone(), b], &refused);
        assert_eq!(ops.first(), Some(&moved));
        assert_eq!(lifted, ["t1:1"]);
        // Not planned any more: lifted too.
        let (ops, lifted) = hold_refused(vec![], &refused);
        assert!(ops.is_empty());
        assert_eq!(lifted, ["t1:1"]);
    }

    #[test]
    fn the_input_hash_is_stable_and_tells_inputs_apart() {
        let a = Op::Register(reg("t1:1", "web", 1));
        assert_eq!(input_hash(&a), input_hash(&a.clone()));
        assert_ne!(input_hash(&a), input_hash(&Op::Register(reg("t1:1", "web", 2))));
        let gone = Op::Deregister { registration: reg("t1:1", "web", 1), service_empty: true };
        assert_ne!(input_hash(&a), input_hash(&gone));
        assert_eq!(input_hash(&a).len(), 16);
        let mut healthy = reg("t1:1", "web", 1);
        healthy.healthy = Some(true);
        assert_eq!(input_hash(&a), input_hash(&Op::Register(healthy)), "a health flip is not a new input");
    }
}
