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

use std::collections::{BTreeMap, BTreeSet};

use crate::backends::Op;
use crate::model::Registration;

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
}
