//! Marathon's behaviours across versions, through the binary: standbys and
//! their 302, credentials, a leader failover, slow consumers, a leader that
//! is not ready, and the id and health shapes of each generation. Consul is
//! the backend that shows what Switchboard made of it.

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{Daemon, eventually, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::marathon::{Generation, MarathonSim, ModelOptions};

const WAIT: Duration = Duration::from_secs(20);

fn web_app() -> Value {
    json!({
        "id": "/shop/web",
        "labels": {"consul": "web"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
    })
}

fn opts(generation: Generation) -> ModelOptions {
    ModelOptions { keepalive: Duration::from_millis(500), generation, ..Default::default() }
}

/// Consul service IDs Switchboard should hold for `sim`'s running tasks of `app`.
fn expected(sim: &MarathonSim, app: &str) -> BTreeSet<String> {
    let body = sim.model().apps_json();
    let mut out = BTreeSet::new();
    for a in body["apps"].as_array().into_iter().flatten().filter(|a| a["id"] == app) {
        for t in a["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
            out.insert(format!("{}:{}", t["id"].as_str().unwrap_or_default(), t["ports"][0]));
        }
    }
    out
}

fn held(consul: &ConsulSim, app: &str) -> BTreeSet<String> {
    consul.services().into_iter().filter(|(_, v)| v["Meta"]["marathon_app_id"] == app).map(|(k, _)| k).collect()
}

async fn converge(sim: &MarathonSim, consul: &ConsulSim, what: &str) {
    eventually(what, WAIT, || {
        let want = expected(sim, "/shop/web");
        !want.is_empty() && held(consul, "/shop/web") == want
    })
    .await;
}

fn daemon(dir: &tempfile::TempDir, marathon: &[&url::Url], consul: &ConsulSim, env: &[(&str, &str)]) -> Daemon {
    let mut args = Vec::new();
    for m in marathon {
        args.extend(s(&["--marathon", m.as_str()]));
    }
    args.extend(s(&["--consul", &consul.url()]));
    Daemon::start_with_env(&dir.path().join("data"), &args, env)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn given_only_a_standby_with_basic_auth_the_leader_is_followed() {
    let auth = Some(("ops".to_string(), "st4ndby-s3cret".to_string()));
    let leader = MarathonSim::start(ModelOptions { basic_auth: auth.clone(), ..opts(Generation::V1_8) }).await.unwrap();
    let standby =
        MarathonSim::start_standby(ModelOptions { basic_auth: auth, ..opts(Generation::V1_8) }, &leader.url())
            .await
            .unwrap();
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir, &[&standby.url()], &consul, &[("SWITCHBOARD_MARATHON_AUTH", "ops:st4ndby-s3cret")]);
    // The credentials got through the standby's 302 to the leader's stream.
    eventually("subscribed at the leader", WAIT, || leader.subscribers() == 1).await;
    assert!(standby.event_requests() >= 1, "the daemon never asked the standby");
    leader.emit(&leader.model().deploy(web_app(), 2));
    converge(&leader, &consul, "registered through the standby's redirect").await;
    let log = d.log();
    assert!(log.contains("event stream connected"), "{log}");
    assert!(!log.contains("st4ndby-s3cret") && !log.contains("b3BzOnN0NG5kYnktczNjcmV0"), "credentials in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_failover_in_the_middle_of_a_deploy_converges() {
    let leader = MarathonSim::start(opts(Generation::V1_8)).await.unwrap();
    let standby = MarathonSim::start_standby(opts(Generation::V1_8), &leader.url()).await.unwrap();
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _d = daemon(&dir, &[&leader.url(), &standby.url()], &consul, &[]);
    eventually("subscribed", WAIT, || leader.subscribers() == 1).await;

    // Half the deploy is published, then the leader exits: its stream ends
    // and the rest of the events are never sent by anyone.
    let events = leader.model().deploy(web_app(), 3);
    leader.emit(&events[..events.len() / 2]);
    let state = leader.model().clone();
    standby.promote(state);
    drop(leader);
    converge(&standby, &consul, "the new leader's snapshot completes the deploy").await;

    // The new leader's own events are followed from then on.
    let task = standby.model().task_ids("/shop/web")[0].clone();
    standby.emit(&standby.model().kill_task(&task));
    converge(&standby, &consul, "a kill on the new leader").await;
    assert!(!held(&consul, "/shop/web").iter().any(|id| id.starts_with(&format!("{task}:"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_consumer_disconnected_by_marathon_1_8_converges() {
    let sim = MarathonSim::start(ModelOptions { max_outstanding: Some(3), ..opts(Generation::V1_8) }).await.unwrap();
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _d = daemon(&dir, &[&sim.url()], &consul, &[]);
    eventually("subscribed", WAIT, || sim.subscribers() == 1).await;
    let requests = sim.event_requests();
    // A burst larger than the subscriber's queue: Marathon 1.8 hangs up.
    sim.emit(&sim.model().deploy(web_app(), 4));
    assert!(sim.slow_consumer_actions() >= 1, "the burst did not overflow the queue");
    eventually("reconnected", WAIT, || sim.event_requests() > requests && sim.subscribers() == 1).await;
    converge(&sim, &consul, "the resync after the reconnect registers what the stream lost").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_is_not_ready_is_backed_off_not_hammered() {
    let sim = MarathonSim::start(opts(Generation::V1_8)).await.unwrap();
    sim.set_not_ready(true);
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let d = daemon(&dir, &[&sim.url()], &consul, &[]);
    eventually("first attempts", WAIT, || sim.event_requests() >= 3).await;
    let before = sim.event_requests();
    tokio::time::sleep(Duration::from_secs(2)).await;
    // Backoff from 100 ms doubling (jittered to at least half): a handful in
    // two seconds; a client that took the 200 for a connection would spin.
    let in_two_seconds = sim.event_requests() - before;
    assert!(in_two_seconds <= 8, "{in_two_seconds} attempts in 2 s");
    assert!(d.log().contains("ended before event_stream_attached"), "{}", d.log());
    sim.set_not_ready(false);
    sim.model().deploy(web_app(), 2);
    converge(&sim, &consul, "once ready: attached, resynced, registered").await;
}

/// Deploy, kill one task (Marathon's replacement follows), destroy: the
/// registrations follow in every generation's id and health shapes.
async fn lifecycle(generation: Generation) {
    let sim = MarathonSim::start(opts(generation)).await.unwrap();
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let _d = daemon(&dir, &[&sim.url()], &consul, &[]);
    eventually("subscribed", WAIT, || sim.subscribers() == 1).await;
    sim.emit(&sim.model().deploy(web_app(), 2));
    converge(&sim, &consul, "deployed").await;
    for (_, svc) in consul.services() {
        let id = svc["Meta"]["marathon_task_id"].as_str().unwrap_or_default().to_owned();
        match generation {
            Generation::V1_8 => assert!(id.contains(".instance-") && id.ends_with("._app.1"), "{id}"),
            Generation::V1_3 | Generation::V1_4 => assert!(!id.contains(".instance-"), "{id}"),
        }
    }

    let task = sim.model().task_ids("/shop/web")[0].clone();
    sim.emit(&sim.model().kill_task(&task));
    converge(&sim, &consul, "the killed task is replaced").await;
    let ids = sim.model().task_ids("/shop/web");
    if generation == Generation::V1_8 {
        // Relaunched in the same instance: the next incarnation is served.
        let relaunched = task.replace("._app.1", "._app.2");
        assert!(ids.contains(&relaunched), "{ids:?}");
    }
    assert!(!held(&consul, "/shop/web").iter().any(|id| id.starts_with(&format!("{task}:"))));

    sim.emit(&sim.model().destroy("/shop/web"));
    eventually("destroyed", WAIT, || held(&consul, "/shop/web").is_empty()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_1_3_ids_and_task_keyed_health() {
    lifecycle(Generation::V1_3).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_1_4_ids_and_instance_keyed_health() {
    lifecycle(Generation::V1_4).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn marathon_1_8_ids_and_incarnations() {
    lifecycle(Generation::V1_8).await;
}
