//! `--replace marathon-consul[:<tag>]`: taking over from
//! allegro/marathon-consul, make before break. Which of a listing's entries
//! are marathon-consul's, shaped exactly as version 1.5.3 makes them, and
//! which task and port each stands for. Pure: the Consul backend
//! (`super::ConsulBackend`) does the reads and the deregistrations.
//!
//! # What marathon-consul 1.5.3 registers (read in its source at tag 1.5.3)
//!
//! - **Which apps and tasks.** Only apps with a `consul` label at app level
//!   (`apps/app.go:64-67`, `IsConsulApp`; checked in
//!   `events/event_handler.go:133` and `sync/sync.go:152`); an app with the
//!   label only on a port definition is never registered, although
//!   Switchboard registers it. Only healthy tasks: `Task.IsHealthy`
//!   (`apps/task.go:67-76`) needs at least one health check result, all
//!   alive, so tasks of apps without Marathon health checks are never in
//!   Consul (its README, "Task healthchecks"). Registration follows
//!   `health_status_changed_event` (`events/event_handler.go:109-157`) and the
//!   periodic sync (`sync/sync.go:149-188`); `TASK_FINISHED|FAILED|KILLING|
//!   KILLED|LOST` deregister by the `marathon-task:` tag
//!   (`events/event_handler.go:173-175`, `consul/consul.go:216-266`).
//! - **Which ports and names.** `App.RegistrationIntents`
//!   (`apps/app.go:113-142`): the port definitions (or port mappings) with a
//!   `consul` label, one intent per comma-separated name in it
//!   (`apps/app.go:207-225`); with none, the task's first port. The port is
//!   the task's host port *value* (`task.Ports[index]`), never an index. The
//!   name (`apps/app.go:69-78, 144-146, 177-186`): the label's value unless
//!   it is empty or `true`, else the app id; then whitespace trimmed,
//!   leading/trailing `/` trimmed and every `/` replaced by
//!   `--consul-name-separator` (default `.`, `config/config.go:78`). No
//!   lower-casing, no other character changed. A port's label falls back to
//!   the *app id*, not to the app's `consul` label.
//! - **Service ID.** `<taskId>_<name>_<port>` (`consul/consul.go:321-323`),
//!   `<name>` being the service name just described and `<port>` the host
//!   port in decimal.
//! - **Tags.** `--consul-tag` first (default `marathon`, `config/config.go:74`),
//!   then the labels whose value is `tag` (port labels before app labels,
//!   `{port:<name>}` placeholders resolved, `apps/app.go:148-175`), then
//!   `marathon-task:<taskId>` (`consul/consul.go:306-307`,
//!   `service/service.go:34-36`).
//! - **Address and port.** `Address` is the task's host resolved to IPv4
//!   (`consul/consul.go:297-301`), `Port` the host port.
//! - **Checks.** One per Marathon health check, the same list on every
//!   registration of the task (`consul/consul.go:302, 325-388`):
//!   `Interval`/`Timeout` as `<n>s`, `Status: passing`; HTTP/HTTPS/MESOS_HTTP(S)
//!   as `HTTP: <scheme>://<address>:<port><path>` (path default `/`), TCP and
//!   MESOS_TCP as `TCP: <address>:<port>`, COMMAND as `ScriptArgs` with
//!   `$PORTn`/`$HOST` substituted; the port is the check's `port`, else
//!   `task.Ports[portIndex]`. No `CheckID` or `Name`: the agent names them
//!   `service:<id>` (`service:<id>:<n>` with several) and
//!   `Service '<name>' check`. `EnableTagOverride` from its flag; no `Meta`.
//! - **Which agent.** `PUT /v1/agent/service/register` at the agent on the
//!   task's host: `<task host as IPv4>:--consul-port` (default 8500,
//!   `consul/consul.go:191-209`, `consul/agent.go:34-39`); it deregisters at
//!   the agent whose address the catalog shows for the entry
//!   (`consul/consul.go:279-289`).
//! - **Nothing else is its own.** Its sync deregisters only services tagged
//!   `--consul-tag` (`consul/consul.go:105-133`, `sync/sync.go:107-147`).
//!
//! # What Switchboard does with them
//!
//! An entry is marathon-consul's only if it carries the tag, exactly one
//! `marathon-task:<taskId>` tag, no `switchboard` tag, a port, and its ID is
//! exactly `<taskId>_<its service name>_<its port>`. Anything else tagged
//! with the tag (another tool, an older marathon-consul's ID shape) is left
//! alone. Such an entry stands for Switchboard's registration `<taskId>:<port>`
//! of the same task and port: the listing shows it under that ID, and `same`
//! says that registration is not yet in place while it is there, so the
//! planner (re)registers it; once that register succeeds, the entries
//! standing for it at the same agent are deregistered. A listed entry of a
//! task Marathon no longer runs is not wanted by any app, so the planner
//! deregisters it like one of Switchboard's own.
//!
//! Invariant: no I/O here; nothing in this file decides to delete anything
//! that `recognise` did not match exactly.

use std::collections::BTreeMap;

use super::map::{AgentService, TAG};
use crate::model::{Registration, TaskId};

/// The only tool Switchboard takes over from.
pub const MARATHON_CONSUL: &str = "marathon-consul";
/// marathon-consul's default `--consul-tag`.
pub const DEFAULT_TAG: &str = "marathon";
/// The tag prefix marathon-consul puts before the task id.
const TASK_TAG: &str = "marathon-task:";

/// `--replace`: whose registrations Switchboard takes over, and how to tell
/// them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Replace {
    /// marathon-consul's `--consul-tag`.
    tag: String,
}

/// A `--replace` value that is not `marathon-consul` or `marathon-consul:<tag>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{raw:?}: {reason}; use `marathon-consul` or `marathon-consul:<its --consul-tag>`")]
pub struct ReplaceError {
    raw: String,
    reason: &'static str,
}

impl Replace {
    /// Parses `marathon-consul` (tag `marathon`) or `marathon-consul:<tag>`.
    pub fn parse(raw: &str) -> Result<Replace, ReplaceError> {
        let fail = |reason| ReplaceError { raw: raw.to_owned(), reason };
        let v = raw.trim();
        let (tool, tag) = match v.split_once(':') {
            Some((tool, tag)) => (tool, tag),
            None => (v, DEFAULT_TAG),
        };
        if tool != MARATHON_CONSUL {
            return Err(fail("Switchboard can only take over from marathon-consul"));
        }
        if tag.is_empty() {
            return Err(fail("the tag after `:` is empty"));
        }
        if tag.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(fail("the tag contains whitespace"));
        }
        if tag == TAG {
            return Err(fail("`switchboard` is Switchboard's own tag"));
        }
        if tag.starts_with(TASK_TAG) {
            return Err(fail("the tag would be read as a task tag"));
        }
        Ok(Replace { tag: tag.to_owned() })
    }

    /// marathon-consul's `--consul-tag`.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Whether a listed entry is marathon-consul's, shaped exactly as 1.5.3
    /// makes it, and if so which task and port it stands for.
    pub(crate) fn recognise(&self, key: &str, svc: &AgentService) -> Option<Found> {
        let id = svc.id.as_deref().unwrap_or(key);
        let tags = svc.tags.as_deref()?;
        if !tags.contains(&self.tag) || tags.iter().any(|t| t == TAG) {
            return None;
        }
        let mut tasks = tags.iter().filter_map(|t| t.strip_prefix(TASK_TAG));
        let task = tasks.next().filter(|t| !t.is_empty())?;
        if tasks.next().is_some() {
            return None;
        }
        let name = svc.service.as_deref().filter(|n| !n.is_empty())?;
        let port = svc.port.filter(|p| *p != 0)?;
        (id == format!("{task}_{name}_{port}")).then(|| Found {
            id: id.to_owned(),
            task_id: task.to_owned(),
            service: name.to_owned(),
            address: svc.address.clone().unwrap_or_default(),
            port,
            tags: tags.to_vec(),
        })
    }
}

/// One marathon-consul entry found in a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Found {
    /// Its service ID, `<taskId>_<name>_<port>`.
    pub id: String,
    pub task_id: String,
    pub service: String,
    pub address: String,
    pub port: u16,
    pub tags: Vec<String>,
}

impl Found {
    /// The ID of Switchboard's registration of the same task and port.
    pub(crate) fn stands_for(&self) -> String {
        format!("{}:{}", self.task_id, self.port)
    }

    /// What a listing shows for Switchboard's registration of this task and
    /// port when only marathon-consul's entry is there (at `host`'s agent):
    /// not Switchboard's (no `switchboard` tag), so never `same` as what
    /// Switchboard wants, and, when no app wants it, deregistered with it.
    pub(crate) fn stand_in(&self, host: &str) -> Registration {
        Registration {
            id: self.stands_for(),
            service: self.service.clone(),
            app_id: app_of_task(&self.task_id),
            task_id: self.task_id.clone(),
            address: self.address.clone(),
            port: self.port,
            tags: self.tags.clone(),
            consul: true,
            checks: Vec::new(),
            healthy: None,
            has_health_checks: false,
            routes: Default::default(),
            host: host.to_owned(),
        }
    }
}

/// The Marathon app id a task id names (`shop_web.<uuid>` → `/shop/web`, the
/// same for 1.8+ `shop_web.instance-<uuid>._app.1`); a task id of no known
/// shape gives itself. Only the listing's grouping depends on it: an app
/// that wants the registration takes it whatever it is listed under.
pub(crate) fn app_of_task(task_id: &str) -> String {
    let instance = match TaskId::parse(task_id) {
        Ok(t) => t.instance_id().as_str().to_owned(),
        Err(_) => return task_id.to_owned(),
    };
    match instance.rsplit_once('.') {
        Some((run_spec, _)) if !run_spec.is_empty() => format!("/{}", run_spec.replace('_', "/")),
        _ => task_id.to_owned(),
    }
}

/// The marathon-consul entries of a listing, by the ID of Switchboard's
/// registration each stands for, each with the host of its agent.
pub(crate) fn by_registration<'a>(
    replace: &Replace,
    listed: impl IntoIterator<Item = (&'a str, &'a AgentService, &'a str)>,
) -> BTreeMap<String, Vec<(Found, String)>> {
    let mut out: BTreeMap<String, Vec<(Found, String)>> = BTreeMap::new();
    for (key, svc, host) in listed {
        if let Some(found) = replace.recognise(key, svc) {
            out.entry(found.stands_for()).or_default().push((found, host.to_owned()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mc(id: &str, name: &str, port: u16, tags: &[&str]) -> AgentService {
        AgentService {
            id: Some(id.to_owned()),
            service: Some(name.to_owned()),
            tags: Some(tags.iter().map(|t| (*t).to_owned()).collect()),
            meta: None,
            port: Some(port),
            address: Some("10.0.2.11".to_owned()),
        }
    }

    const TASK: &str = "shop_web.9f0b2a3c-1d4e-11ee-9d2a-0242ac110002";

    #[test]
    fn parses_the_tool_and_its_tag() {
        assert_eq!(Replace::parse("marathon-consul").unwrap().tag(), "marathon");
        assert_eq!(Replace::parse(" marathon-consul:prod ").unwrap().tag(), "prod");
        for bad in
            ["", "consul", "marathon-consul:", "marathon-lb:x", "marathon-consul:a b", "marathon-consul:switchboard"]
        {
            let e = Replace::parse(bad).unwrap_err().to_string();
            assert!(e.contains("marathon-consul:<its --consul-tag>"), "{bad}: {e}");
        }
    }

    #[test]
    fn recognises_only_the_exact_shape() {
        let r = Replace::parse("marathon-consul").unwrap();
        let task_tag = format!("marathon-task:{TASK}");
        let id = format!("{TASK}_shop.web_31000");
        let found = r.recognise(&id, &mc(&id, "shop.web", 31000, &["marathon", "public", &task_tag])).unwrap();
        assert_eq!(found.stands_for(), format!("{TASK}:31000"));
        assert_eq!(found.stand_in("h").app_id, "/shop/web");

        let check = |svc: AgentService, why: &str| assert_eq!(r.recognise(&id, &svc), None, "{why}");
        check(mc(&id, "shop.web", 31000, &["prod", &task_tag]), "another --consul-tag");
        check(mc(&id, "shop.web", 31000, &["marathon"]), "no task tag");
        check(mc(&id, "shop.web", 31000, &["marathon", &task_tag, "marathon-task:x"]), "two task tags");
        check(mc(&id, "shop.web", 31001, &["marathon", &task_tag]), "port differs from the ID");
        check(mc(&id, "shop-web", 31000, &["marathon", &task_tag]), "name differs from the ID");
        check(mc(&format!("{TASK}:31000"), "shop.web", 31000, &["marathon", &task_tag]), "Switchboard's ID shape");
        check(mc(&id, "shop.web", 31000, &["switchboard", "marathon", &task_tag]), "Switchboard's own");
        let other_task = "other.1_shop.web_31000";
        check(mc(other_task, "shop.web", 31000, &["marathon", &task_tag]), "another task's ID");
    }

    #[test]
    fn app_ids_from_task_ids_of_every_generation() {
        let check = |task: &str, app: &str| assert_eq!(app_of_task(task), app, "{task}");
        check("shop_web.9f0b2a3c-1d4e-11ee-9d2a-0242ac110002", "/shop/web");
        check("shop_web.instance-9f0b2a3c-1d4e-11ee-9d2a-0242ac110002._app.1", "/shop/web");
        check("web.v2.9f0b2a3c-1d4e-11ee-9d2a-0242ac110002", "/web.v2");
        check("odd", "odd");
    }
}
