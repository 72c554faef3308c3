//! `kill -9` at seeded random points of a deploy storm over Consul, Kong and
//! Vulcand: after k registrations observed at the simulators (k drawn from
//! a seeded RNG, several kills per run) the daemon is killed and restarted
//! on the same data dir. Afterwards every sim holds exactly what Marathon
//! runs, nothing foreign was touched, no instance that still runs was ever
//! deregistered, and no registration came back after it was removed.
//!
//! The seed is printed on failure; `SWITCHBOARD_KILL_SEED=N` replays one.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use common::{Daemon, WAIT, World, everywhere_app, service_of};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use switchboard::sim::consul::ConsulSimOptions;
use switchboard::sim::marathon::SimEvent;
use switchboard::sim::vulcand::VulcandSimOptions;

/// Kills per run.
const KILLS: usize = 4;
/// Registrations seen at the sims between two kills: 1..=MAX_K.
const MAX_K: usize = 12;

/// The storm's own record: apps deployed so far, and apps that were left
/// without a running task at some moment (scaled to 0, their last task
/// killed, restarted, destroyed): removing such an app's Kong route or
/// Vulcand frontend is no harm.
#[derive(Default)]
struct Storm {
    next_app: usize,
    emptied: BTreeSet<String>,
}

/// One step of the storm, applied to Marathon's model.
fn storm_step(w: &World, rng: &mut StdRng, storm: &mut Storm) -> Vec<SimEvent> {
    let mut m = w.marathon.model();
    let apps = m.app_ids();
    let roll = rng.random_range(0..100);
    if apps.len() < 2 || (roll < 30 && apps.len() < 6) {
        storm.next_app += 1;
        let n = rng.random_range(1..=3);
        return m.deploy(everywhere_app(&format!("/app{}", storm.next_app)), n);
    }
    let app = apps[rng.random_range(0..apps.len())].clone();
    let tasks = m.task_ids(&app);
    let (emptied, events) = match roll {
        0..=54 => {
            let n = rng.random_range(0..=4);
            (n == 0, m.scale(&app, n))
        }
        55..=79 if !tasks.is_empty() => {
            let t = tasks[rng.random_range(0..tasks.len())].clone();
            (tasks.len() == 1, m.kill_task(&t))
        }
        80..=89 => (true, m.restart(&app)),
        90..=94 => (true, m.destroy(&app)),
        _ => (tasks.is_empty(), m.scale(&app, tasks.len() + 1)),
    };
    if emptied {
        storm.emptied.insert(app);
    }
    events
}

/// Instance registrations (`true`) and removals (`false`) in the order each
/// sim applied them, keyed `backend:id` (Consul service ID, Kong target,
/// Vulcand server id).
fn history(w: &World) -> Vec<(bool, String)> {
    let mut out: Vec<(bool, String)> = Vec::new();
    out.extend(w.consul().history().into_iter().map(|(on, id)| (on, format!("consul:{id}"))));
    out.extend(w.kong().history().into_iter().map(|(on, t)| (on, format!("kong:{t}"))));
    let vulcand = if w.has_vulcand() { w.vulcand().requests() } else { Vec::new() };
    for r in vulcand {
        let servers = r.path.strip_prefix("/v2/backends/").and_then(|p| p.split_once("/servers"));
        match (r.method.as_str(), servers) {
            ("POST", Some((_, ""))) => {
                let id = r.body.as_ref().and_then(|b| b.pointer("/Server/Id")).and_then(Value::as_str);
                out.extend(id.map(|id| (true, format!("vulcand:{id}"))));
            }
            ("DELETE", Some((_, id))) => out.push((false, format!("vulcand:{}", id.trim_start_matches('/')))),
            _ => {}
        }
    }
    out
}

fn registrations(w: &World) -> usize {
    history(w).iter().filter(|(on, _)| *on).count()
}

/// Every instance Marathon runs now, keyed like `history`.
fn running(w: &World) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    out.extend(w.expected_consul_ids(None).into_iter().map(|id| format!("consul:{id}")));
    out.extend(w.expected_kong_targets(None).into_iter().map(|t| format!("kong:{t}")));
    if w.has_vulcand() {
        out.extend(w.expected_vulcand_servers(None).into_keys().map(|id| format!("vulcand:{id}")));
    }
    out
}

/// Harm the history shows: a removal of an instance that still runs, or a
/// registration after the instance's removal (a flap).
fn harm(history: &[(bool, String)], running: &BTreeSet<String>) -> Vec<String> {
    let mut removed: BTreeMap<&str, usize> = BTreeMap::new();
    let mut out = Vec::new();
    for (i, (on, id)) in history.iter().enumerate() {
        if *on {
            if let Some(at) = removed.get(id.as_str()) {
                out.push(format!("{id} registered again (write {i}) after its removal (write {at})"));
            }
        } else {
            if running.contains(id) {
                out.push(format!("{id} removed (write {i}) though its task still runs"));
            }
            removed.entry(id).or_insert(i);
        }
    }
    out
}

/// Whole-app deletes (Kong upstream/service/route, Vulcand backend/frontend)
/// of an app that has had a running task all along.
fn live_app_deletes(w: &World, storm: &Storm) -> Vec<String> {
    let apps = w.marathon.model().app_ids();
    let live: BTreeSet<String> = apps
        .into_iter()
        .filter(|a| !storm.emptied.contains(a) && !w.expected_consul_ids(Some(a)).is_empty())
        .map(|a| service_of(&a))
        .collect();
    let mut out = Vec::new();
    for (m, p) in w.kong().requests() {
        let segs: Vec<&str> = p.split('/').filter(|s| !s.is_empty()).collect();
        if let (true, [kind, name]) = (m == "DELETE", segs.as_slice())
            && live.iter().any(|s| *name == format!("{s}.default"))
        {
            out.push(format!("kong DELETE /{kind}/{name}"));
        }
    }
    let vulcand = if w.has_vulcand() { w.vulcand().requests() } else { Vec::new() };
    for r in vulcand.into_iter().filter(|r| r.method == "DELETE") {
        let segs: Vec<&str> = r.path.split('/').filter(|s| !s.is_empty()).collect();
        if let ["v2", kind, id] = segs.as_slice()
            && live.iter().any(|s| *id == format!("sb.default.{s}~"))
        {
            out.push(format!("vulcand DELETE /v2/{kind}/{id}"));
        }
    }
    out
}

/// Entities another team made in each backend, to be left alone.
async fn foreign(w: &World) {
    use reqwest::Method as M;
    w.consul()
        .insert_raw(json!({"ID": "redis-1", "Name": "redis", "Tags": ["cache"], "Port": 6379, "Address": "10.9.9.9"}));
    let kong = w.kong().url();
    assert!(w.call(&kong, M::PUT, "/upstreams/foreign", Some(json!({"tags": ["team-a"]}))).await < 300);
    let target = json!({"target": "10.9.9.9:80", "tags": ["team-a"]});
    assert_eq!(w.call(&kong, M::POST, "/upstreams/foreign/targets", Some(target)).await, 201);
    if !w.has_vulcand() {
        return;
    }
    let vulcand = w.vulcand().url();
    let backend = json!({"Backend": {"Id": "foreign", "Type": "http"}});
    assert_eq!(w.call(&vulcand, M::POST, "/v2/backends", Some(backend)).await, 200);
    let server = json!({"Server": {"Id": "hand-1", "URL": "http://10.9.9.9:8080"}});
    assert_eq!(w.call(&vulcand, M::POST, "/v2/backends/foreign/servers", Some(server)).await, 200);
}

fn foreign_state(w: &World) -> Value {
    let upstreams = w.kong().upstreams();
    let mut state = json!({
        "consul": w.consul().services().get("redis-1").cloned(),
        "kong": w.kong().targets("foreign"),
        "kong_upstream": upstreams.as_array().into_iter().flatten().find(|u| u["name"] == "foreign").cloned(),
    });
    if w.has_vulcand() {
        let backends = w.vulcand().backends();
        let backend = backends.as_array().into_iter().flatten().find(|b| b["Id"] == "foreign").cloned();
        state["vulcand"] = json!([backend, w.vulcand().servers("foreign")]);
    }
    state
}

/// Waits until the restarted daemon holds a new event stream.
async fn resubscribed(w: &World, before: usize) {
    common::eventually("the restarted daemon subscribed", WAIT, || {
        w.marathon.event_requests() > before && w.marathon.subscribers() > 0
    })
    .await;
}

async fn run(seed: u64, vulcand: bool) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut world = World::builder().consul(ConsulSimOptions::default()).kong("3.4.2");
    if vulcand {
        world = world.vulcand(VulcandSimOptions::default());
    }
    let w = world.start().await;
    let backends: &[&str] = if vulcand { &["consul", "kong", "vulcand"] } else { &["consul", "kong"] };
    foreign(&w).await;
    let before = foreign_state(&w);
    let mut storm = Storm::default();
    let mut d: Daemon = w.daemon(&["--resync-interval", "0"]);
    w.subscribed().await;

    for kill in 0..KILLS {
        let k = rng.random_range(1..=MAX_K);
        let target = registrations(&w) + k;
        let deadline = Instant::now() + WAIT;
        // Storm until k more registrations reached the sims, then kill -9
        // right there, whatever is in flight.
        'storm: loop {
            let events = storm_step(&w, &mut rng, &mut storm);
            w.emit(&events);
            let step_end = Instant::now() + Duration::from_millis(rng.random_range(5..120));
            while Instant::now() < step_end {
                if registrations(&w) >= target {
                    break 'storm;
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            assert!(Instant::now() < deadline, "seed {seed}: kill {kill}: {k} registrations never came");
        }
        d.kill9();
        // Marathon moves on while Switchboard is down: those events are lost.
        if rng.random_bool(0.5) {
            let _lost = storm_step(&w, &mut rng, &mut storm);
        }
        let streams = w.marathon.event_requests();
        d.restart();
        resubscribed(&w, streams).await;
    }
    // A last burst with the daemon up, then calm.
    for _ in 0..rng.random_range(0..4) {
        let events = storm_step(&w, &mut rng, &mut storm);
        w.emit(&events);
    }
    w.converge_everywhere(&format!("seed {seed}: every sim in step after {KILLS} kills")).await;
    for backend in backends {
        let sample = format!("switchboard_queue_depth{{backend=\"{backend}\"}}");
        d.wait_sample(&format!("seed {seed}: {backend} queue drained"), &sample, |v| v == 0.0).await;
    }

    let harm = harm(&history(&w), &running(&w));
    assert!(harm.is_empty(), "seed {seed}: harmful writes:\n{}", harm.join("\n"));
    let deletes = live_app_deletes(&w, &storm);
    assert!(deletes.is_empty(), "seed {seed}: deletes of apps that still run: {deletes:?}");
    assert_eq!(foreign_state(&w), before, "seed {seed}: a foreign entity changed");
    assert!(w.mismatch().is_none(), "seed {seed}: {:?}", w.mismatch());
    eprintln!("seed {seed}: {} instance writes, {} apps deployed", history(&w).len(), storm.next_app);
}

/// Seeds to run: `SWITCHBOARD_KILL_SEED` alone when set, else `fixed` and
/// one fresh seed (printed, so a failure can be replayed).
fn seeds(fixed: &[u64]) -> Vec<u64> {
    if let Ok(s) = std::env::var("SWITCHBOARD_KILL_SEED") {
        return vec![s.parse().expect("SWITCHBOARD_KILL_SEED is a number")];
    }
    let fresh =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(7);
    fixed.iter().copied().chain([fresh]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_seeded_random_points_over_consul_and_kong_loses_nothing_and_harms_nothing() {
    for seed in seeds(&[12, 7]) {
        eprintln!("kill_points seed {seed} (replay: SWITCHBOARD_KILL_SEED={seed})");
        run(seed, false).await;
    }
}

/// The same storm with Vulcand too, whose ledger is its only record of
/// ownership.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_seeded_random_points_over_consul_kong_and_vulcand_loses_nothing_and_harms_nothing() {
    for seed in seeds(&[12, 7, 8]) {
        eprintln!("kill_points seed {seed} (replay: SWITCHBOARD_KILL_SEED={seed})");
        run(seed, true).await;
    }
}

#[test]
fn harm_sees_a_removal_of_a_running_instance_and_a_flap() {
    let h: Vec<(bool, String)> = [
        (true, "consul:a"),
        (false, "consul:a"),
        (true, "consul:a"),
        (true, "kong:b"),
        (false, "kong:b"),
        (true, "kong:c"),
    ]
    .into_iter()
    .map(|(on, id)| (on, id.to_owned()))
    .collect();
    let running: BTreeSet<String> = ["kong:b".to_owned(), "kong:c".to_owned()].into();
    let found = harm(&h, &running);
    assert_eq!(found.len(), 2, "{found:?}");
    assert!(found[0].starts_with("consul:a registered again"), "{found:?}");
    assert!(found[1].starts_with("kong:b removed"), "{found:?}");
}
