//! The Consul backend against the in-process agent simulator.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::model::Check;
use crate::secret::Secret;
use crate::sim::consul::{ConsulSim, ConsulSimOptions, UnknownDeregister};

fn reg(task: &str, port: u16) -> Registration {
    Registration {
        id: format!("{task}:{port}"),
        service: "web".into(),
        app_id: "/shop/web".into(),
        task_id: task.into(),
        address: "10.0.3.17".into(),
        port,
        tags: vec!["switchboard".into(), "http".into()],
        consul: true,
        checks: vec![Check::Http {
            url: format!("http://10.0.3.17:{port}/health"),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(2),
        }],
        healthy: Some(true),
        has_health_checks: true,
        routes: Default::default(),
        host: String::new(),
    }
}

async fn start(opts: ConsulSimOptions) -> ConsulSim {
    ConsulSim::start(opts).await.expect("simulator starts")
}

fn backend_with(sim: &ConsulSim, cluster: &str, token: Option<&str>) -> ConsulBackend {
    ConsulBackend::new(ConsulConfig {
        url: sim.url().parse().expect("url"),
        token: token.map(Secret::new),
        cluster: cluster.into(),
        timeout: Duration::from_secs(2),
        agents: Default::default(),
        tls: Default::default(),
        replace: None,
    })
    .expect("valid config")
}

fn backend(sim: &ConsulSim) -> ConsulBackend {
    backend_with(sim, "east", None)
}

fn deregister(r: &Registration) -> Op {
    Op::Deregister { registration: r.clone(), service_empty: true }
}

#[tokio::test]
async fn register_is_listed_with_exact_fields() {
    let sim = start(ConsulSimOptions::default()).await;
    let b = backend(&sim);
    let r = reg("web.instance-1._app.1", 31045);
    b.apply(&Op::Register(r.clone())).await.unwrap();

    let services = sim.services();
    let listed = &services["web.instance-1._app.1:31045"];
    assert_eq!(listed["ID"], "web.instance-1._app.1:31045");
    assert_eq!(listed["Service"], "web");
    assert_eq!(listed["Tags"], json!(["switchboard", "http"]));
    assert_eq!(listed["Address"], "10.0.3.17");
    assert_eq!(listed["Port"], 31045);
    let meta = listed["Meta"].as_object().unwrap();
    assert_eq!(meta["marathon_task_id"], "web.instance-1._app.1");
    assert_eq!(meta["marathon_app_id"], "/shop/web");
    assert_eq!(meta["managed_by"], "switchboard");
    assert_eq!(meta["switchboard_cluster"], "east");
    assert_eq!(meta["switchboard_hash"], map::content_hash(&r).as_str());
    assert_eq!(meta.len(), 5);
    // The first register lists first (whose IDs are someone else's).
    let paths: Vec<String> = sim.requests().into_iter().map(|(_, p)| p).collect();
    assert_eq!(paths, ["/v1/agent/services", "/v1/agent/service/register?replace-existing-checks"]);

    // The HTTP check is there, with the Go durations Consul parsed.
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let health = http.get(format!("{}/v1/health/service/web", sim.url())).send().await.unwrap();
    let health: serde_json::Value = health.json().await.unwrap();
    assert_eq!(health[0]["Checks"][1]["Type"], "http");

    // Read back, it is the same registration (checks carried from the ledger).
    let owned = b.list_owned(std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(owned, vec![r.clone()]);
    assert!(b.same(&r, &owned[0]));
    // Without a ledger it is still owned, and still the same.
    let owned = b.list_owned(&[]).await.unwrap();
    assert_eq!(owned.len(), 1);
    assert!(b.same(&r, &owned[0]));
}

#[tokio::test]
async fn reregister_is_idempotent() {
    let sim = start(ConsulSimOptions::default()).await;
    let b = backend(&sim);
    let r = reg("web.1", 31000);
    b.apply(&Op::Register(r.clone())).await.unwrap();
    let first = sim.services();
    b.apply(&Op::Register(r.clone())).await.unwrap();
    assert_eq!(sim.services(), first);
    assert_eq!(sim.services().len(), 1);
    assert_eq!(b.list_owned(&[]).await.unwrap().len(), 1);
}

#[tokio::test]
async fn same_detects_drift_in_listed_fields_and_checks() {
    let sim = start(ConsulSimOptions::default()).await;
    let b = backend(&sim);
    let r = reg("web.1", 31000);
    b.apply(&Op::Register(r.clone())).await.unwrap();
    let observed = b.list_owned(&[]).await.unwrap().remove(0);
    assert!(b.same(&r, &observed));

    // Checks are not listed by Consul: the hash catches the change.
    let mut new_check = r.clone();
    new_check.checks = vec![];
    assert!(!b.same(&new_check, &observed));
    let mut moved = r.clone();
    moved.port = 31001;
    assert!(!b.same(&moved, &observed));
    let mut retagged = r.clone();
    retagged.tags.push("extra".into());
    assert!(!b.same(&retagged, &observed));
    // Health is not something Consul holds from us.
    let mut sick = r.clone();
    sick.healthy = Some(false);
    assert!(b.same(&sick, &observed));
}

#[tokio::test]
async fn deregister_twice_succeeds_in_every_unknown_mode() {
    for mode in [UnknownDeregister::Modern404, UnknownDeregister::Legacy200, UnknownDeregister::Acl500] {
        let sim = start(ConsulSimOptions { acl_token: None, deregister_unknown: mode, ..Default::default() }).await;
        let b = backend(&sim);
        let mut r = reg("web.1", 31000);
        r.id = "odd/id with space:31000".into();
        b.apply(&Op::Register(r.clone())).await.unwrap();
        b.apply(&deregister(&r)).await.unwrap_or_else(|e| panic!("{mode:?}: {e}"));
        assert!(sim.services().is_empty(), "{mode:?}");
        b.apply(&deregister(&r)).await.unwrap_or_else(|e| panic!("{mode:?} second: {e}"));
        let paths: Vec<String> = sim.requests().into_iter().map(|(_, p)| p).collect();
        assert_eq!(paths[2], "/v1/agent/service/deregister/odd%2Fid%20with%20space:31000", "{mode:?}");
    }
}

#[tokio::test]
async fn foreign_and_other_cluster_services_are_never_owned() {
    let sim = start(ConsulSimOptions::default()).await;
    let b = backend(&sim);
    let ours = reg("web.1", 31000);
    b.apply(&Op::Register(ours.clone())).await.unwrap();
    // Someone else's service, no tag.
    sim.insert_raw(json!({"ID": "redis-1", "Name": "redis", "Port": 6379, "Address": "10.0.0.9"}));
    // Another Switchboard, another cluster, same shape as ours.
    backend_with(&sim, "west", None).apply(&Op::Register(reg("web.2", 31001))).await.unwrap();
    // Tagged by hand but with no ownership meta and not in our ledger.
    sim.insert_raw(json!({"ID": "manual:1", "Name": "web", "Tags": ["switchboard"], "Port": 1, "Address": "10.0.0.1"}));
    // Claims the cluster but not managed by Switchboard.
    sim.insert_raw(json!({"ID": "fake:1", "Name": "web", "Tags": ["switchboard"], "Port": 1, "Address": "10.0.0.1",
        "Meta": {"switchboard_cluster": "east"}}));

    let owned = b.list_owned(std::slice::from_ref(&ours)).await.unwrap();
    assert_eq!(owned.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["web.1:31000"]);
    let west = backend_with(&sim, "west", None).list_owned(&[]).await.unwrap();
    assert_eq!(west.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(), ["web.2:31001"]);
}

#[tokio::test]
async fn agent_without_meta_owns_by_ledger() {
    let sim = start(ConsulSimOptions::default()).await;
    sim.set_legacy_no_meta(true);
    let b = backend(&sim);
    let r = reg("web.1", 31000);
    b.apply(&Op::Register(r.clone())).await.unwrap();
    assert!(sim.services()["web.1:31000"].get("Meta").is_none());
    sim.insert_raw(json!({"ID": "other:1", "Name": "web", "Tags": ["switchboard"], "Port": 1, "Address": "10.0.0.1"}));

    assert!(b.list_owned(&[]).await.unwrap().is_empty(), "not in the ledger: not ours");
    let owned = b.list_owned(std::slice::from_ref(&r)).await.unwrap();
    assert_eq!(owned, vec![r.clone()], "task and app ids come from the ledger");
    assert!(b.same(&r, &owned[0]));
}

#[tokio::test]
async fn select_rejects_what_consul_would_refuse() {
    let sim = start(ConsulSimOptions::default()).await;
    let b = backend(&sim);
    let good = reg("web.1", 31000);
    let mut not_consul = reg("web.2", 31001);
    not_consul.consul = false;
    let bad = |edit: fn(&mut Registration)| {
        let mut r = reg("bad.1", 31002);
        r.app_id = "/shop/bad".into();
        edit(&mut r);
        r
    };
    let desired = vec![
        good.clone(),
        not_consul,
        bad(|r| r.service.clear()),
        bad(|r| r.port = 0),
        bad(|r| r.address = "0.0.0.0".into()),
        bad(|r| r.address = "::".into()),
        bad(|r| r.address.clear()),
        bad(|r| r.task_id = "t".repeat(600)),
        bad(|r| r.service = "consul".into()),
        good.clone(),
    ];
    let sel = b.select(&desired);
    // Kept without Marathon's health: Consul is never sent it.
    assert_eq!(sel.keep, vec![Registration { healthy: None, ..good.clone() }]);
    assert_eq!(sel.rejected.len(), 8, "{:#?}", sel.rejected);
    for rej in &sel.rejected[..7] {
        assert_eq!((rej.backend.as_str(), rej.app_id.as_str(), rej.label.as_str()), ("consul", "/shop/bad", "consul"));
        assert!(!rej.reason.is_empty());
    }
    assert!(sel.rejected[7].reason.contains("twice"), "{:?}", sel.rejected[7]);

    // apply refuses them too, before any call.
    let err = b.apply(&Op::Register(bad(|r| r.port = 0))).await.unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("port 0"), "{err}");
    assert!(sim.requests().is_empty());
}

#[tokio::test]
async fn server_errors_are_transient_client_errors_permanent() {
    let sim = start(ConsulSimOptions::default()).await;
    let b = backend(&sim);
    let r = reg("web.1", 31000);
    for status in [500, 503, 429] {
        sim.set_failing(Some(status));
        let err = b.apply(&Op::Register(r.clone())).await.unwrap_err();
        assert!(err.is_transient(), "{status}: {err}");
        assert!(b.list_owned(&[]).await.unwrap_err().is_transient());
    }
    sim.set_failing(Some(400));
    let err = b.apply(&Op::Register(r.clone())).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    assert!(err.to_string().contains("HTTP 400: simulated failure"), "{err}");
    let err = b.apply(&deregister(&r)).await.unwrap_err();
    assert!(!err.is_transient(), "{err}");
    sim.set_failing(None);
    b.apply(&Op::Register(r)).await.unwrap();
    assert_eq!(sim.services().len(), 1);
}

#[tokio::test]
async fn acl_token_is_sent_and_missing_token_is_permanent() {
    let sim = start(ConsulSimOptions { acl_token: Some("s3cret-token".into()), ..Default::default() }).await;
    let r = reg("web.1", 31000);
    let with = backend_with(&sim, "east", Some("s3cret-token"));
    with.apply(&Op::Register(r.clone())).await.unwrap();
    assert_eq!(with.list_owned(&[]).await.unwrap().len(), 1);

    let without = backend_with(&sim, "east", None);
    let err = without.apply(&Op::Register(r.clone())).await.unwrap_err();
    assert!(!err.is_transient());
    assert!(err.to_string().contains("HTTP 403: Permission denied"), "{err}");
    let wrong = backend_with(&sim, "east", Some("nope"));
    let err = wrong.apply(&deregister(&r)).await.unwrap_err();
    assert!(err.to_string().contains("HTTP 403: ACL not found"), "{err}");
    assert_eq!(sim.services().len(), 1);

    let cfg = ConsulConfig {
        url: "http://user:pw@127.0.0.1:8500".parse().unwrap(),
        token: Some(Secret::new("s3cret-token")),
        cluster: "east".into(),
        timeout: Duration::from_secs(1),
        agents: Default::default(),
        tls: Default::default(),
        replace: None,
    };
    let shown = format!("{cfg:?} {err} {:?}", ConsulBackend::new(cfg.clone()).unwrap());
    assert!(!shown.contains("s3cret") && !shown.contains("pw@"), "{shown}");
}

#[tokio::test]
async fn agent_down_is_transient_then_recovers() {
    let sim = start(ConsulSimOptions::default()).await;
    let b = backend(&sim);
    let r = reg("web.1", 31000);
    b.apply(&Op::Register(r.clone())).await.unwrap();
    sim.stop().await;
    let err = b.apply(&deregister(&r)).await.unwrap_err();
    assert!(err.is_transient(), "{err}");
    assert!(b.list_owned(&[]).await.unwrap_err().is_transient());
    sim.restart().await.unwrap();
    assert_eq!(b.list_owned(&[]).await.unwrap().len(), 1, "state kept across restart");
    b.apply(&deregister(&r)).await.unwrap();
    assert!(sim.services().is_empty());
}

#[test]
fn bad_config_is_refused() {
    let cfg = |url: &str, cluster: &str| ConsulConfig {
        url: url.parse().unwrap(),
        token: None,
        cluster: cluster.into(),
        timeout: Duration::from_secs(1),
        agents: Default::default(),
        tls: Default::default(),
        replace: None,
    };
    assert!(matches!(ConsulBackend::new(cfg("ftp://x", "east")), Err(ConsulConfigError::Scheme { .. })));
    assert!(matches!(ConsulBackend::new(cfg("http://x", "")), Err(ConsulConfigError::EmptyCluster)));
    let token = ConsulConfig { token: Some(Secret::new("a\nb")), ..cfg("http://x", "east") };
    assert!(matches!(ConsulBackend::new(token), Err(ConsulConfigError::Token)));
}

#[test]
fn per_host_lanes_follow_the_agent_of_each_host() {
    let cfg = |agents: Agents| ConsulConfig {
        url: "http://consul.service:8500".parse().unwrap(),
        token: None,
        cluster: "east".into(),
        timeout: Duration::from_secs(1),
        agents,
        tls: Default::default(),
        replace: None,
    };
    let on = |host: &str| Registration { host: host.into(), ..reg("t1", 31000) };
    let single = ConsulBackend::new(cfg(Agents::Single)).unwrap();
    assert_eq!(single.lane(&on("10.0.0.1")), None);

    let map = std::collections::BTreeMap::from([("node-b".to_owned(), "https://b.example:8501".parse().unwrap())]);
    let per_host =
        ConsulBackend::new(cfg(Agents::PerHost { scheme: "http".into(), port: 8500, map: map.clone() })).unwrap();
    assert_eq!(per_host.lane(&on("10.0.0.1")).as_deref(), Some("http://10.0.0.1:8500/"));
    assert_eq!(per_host.lane(&on("node-b")).as_deref(), Some("https://b.example:8501/"));
    assert_eq!(per_host.lane(&on("fe80::1")).as_deref(), Some("http://[fe80::1]:8500/"));
    // No host (static services): the --consul agent.
    assert_eq!(per_host.lane(&on("")).as_deref(), Some("http://consul.service:8500/"));

    let bad = ConsulBackend::new(cfg(Agents::PerHost { scheme: "ftp".into(), port: 8500, map }));
    assert!(matches!(bad, Err(ConsulConfigError::AgentScheme(_))));
}
