//! `--replace marathon-consul` in the Consul backend, against the in-process
//! agent simulator: the listing's stand-ins, `same`, and the order of writes.

use std::time::Duration;

use serde_json::json;

use super::*;
use crate::sim::consul::{ConsulSim, ConsulSimOptions};

const TASK: &str = "shop_web.instance-00000001-6ca8-11e7-beb2-000000000001._app.1";

fn ours(task: &str, port: u16) -> Registration {
    Registration {
        id: format!("{task}:{port}"),
        service: "shop.web".into(),
        app_id: "/shop/web".into(),
        task_id: task.into(),
        address: "10.0.2.11".into(),
        port,
        tags: vec!["switchboard".into()],
        consul: true,
        checks: Vec::new(),
        healthy: None,
        has_health_checks: false,
        routes: Default::default(),
        host: "10.0.2.11".into(),
    }
}

/// An entry as marathon-consul 1.5.3 registers it.
fn theirs(sim: &ConsulSim, task: &str, port: u16) -> String {
    let id = format!("{task}_shop.web_{port}");
    sim.insert_raw(json!({
        "ID": id, "Name": "shop.web", "Port": port, "Address": "10.0.2.11",
        "Tags": ["marathon", format!("marathon-task:{task}")],
    }));
    id
}

async fn setup() -> (ConsulSim, ConsulBackend) {
    let sim = ConsulSim::start(ConsulSimOptions::default()).await.expect("simulator starts");
    let b = ConsulBackend::new(ConsulConfig {
        url: sim.url().parse().expect("url"),
        token: None,
        cluster: "default".into(),
        timeout: Duration::from_secs(2),
        agents: Default::default(),
        tls: Default::default(),
        replace: None,
    })
    .expect("valid config")
    .with_replace(Some(Replace::parse("marathon-consul").expect("valid")));
    (sim, b)
}

#[tokio::test]
async fn theirs_goes_only_after_ours_landed_and_only_for_the_same_task_and_port() {
    let (sim, b) = setup().await;
    let mine = theirs(&sim, TASK, 31000);
    let other_port = theirs(&sim, TASK, 31001);
    let other_task = theirs(&sim, "shop_web.instance-00000002-6ca8-11e7-beb2-000000000002._app.1", 31000);
    let r = ours(TASK, 31000);
    b.apply(&Op::Register(r.clone())).await.expect("register");
    let history = sim.history();
    let made = history.iter().position(|(reg, id)| *reg && *id == r.id).expect("ours registered");
    let broken = history.iter().position(|(reg, id)| !*reg && *id == mine).expect("theirs removed");
    assert!(made < broken, "{history:?}");
    assert!(sim.has_service(&other_port) && sim.has_service(&other_task));
    // Idempotent: a second register removes nothing more.
    b.apply(&Op::Register(r)).await.expect("register again");
    assert_eq!(sim.history().iter().filter(|(reg, _)| !*reg).count(), 1);
}

#[tokio::test]
async fn the_listing_stands_theirs_in_for_ours_until_ours_is_in_place() {
    let (sim, b) = setup().await;
    let id = theirs(&sim, TASK, 31000);
    let want = ours(TASK, 31000);
    let listed = b.list_owned(&[]).await.expect("list");
    assert_eq!(listed.len(), 1, "{listed:?}");
    let stand_in = &listed[0];
    assert_eq!((stand_in.id.as_str(), stand_in.app_id.as_str()), (want.id.as_str(), "/shop/web"));
    assert!(!b.same(&want, stand_in));

    // Ours next to theirs (registered before --replace): still not in place.
    sim.insert_raw(json!({
        "ID": want.id, "Name": "shop.web", "Port": 31000, "Address": "10.0.2.11", "Tags": ["switchboard"],
        "Meta": super::map::register_body(&want, "default").meta,
    }));
    let listed = b.list_owned(&[]).await.expect("list");
    assert_eq!(listed.len(), 1);
    assert!(listed[0].tags.contains(&"switchboard".to_owned()), "ours is listed, not the stand-in");
    assert!(!b.same(&want, &listed[0]));
    b.apply(&Op::Register(want.clone())).await.expect("register");
    assert!(!sim.has_service(&id));
    let listed = b.list_owned(&[]).await.expect("list");
    assert!(b.same(&want, &listed[0]), "in place once theirs is gone");
}

#[tokio::test]
async fn an_unwanted_stand_in_is_deregistered_with_theirs() {
    let (sim, b) = setup().await;
    let id = theirs(&sim, TASK, 31000);
    let listed = b.list_owned(&[]).await.expect("list");
    b.apply(&Op::Deregister { registration: listed[0].clone(), service_empty: true }).await.expect("deregister");
    assert!(!sim.has_service(&id));
}

#[tokio::test]
async fn without_replace_nothing_of_theirs_is_listed_or_touched() {
    let (sim, _) = setup().await;
    let id = theirs(&sim, TASK, 31000);
    let b = ConsulBackend::new(ConsulConfig {
        url: sim.url().parse().expect("url"),
        token: None,
        cluster: "default".into(),
        timeout: Duration::from_secs(2),
        agents: Default::default(),
        tls: Default::default(),
        replace: None,
    })
    .expect("valid config");
    assert!(b.list_owned(&[]).await.expect("list").is_empty());
    b.apply(&Op::Register(ours(TASK, 31000))).await.expect("register");
    assert!(sim.has_service(&id));
}
