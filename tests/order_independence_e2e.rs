//! Order independence through the binary, with concurrent appliers: the
//! same set of Marathon events (a seeded scenario of deploys, scales,
//! kills, restarts, health changes, losses and destroys) is fed to a
//! running daemon with Consul, Kong and Vulcand in different orders
//! (Marathon's, reversed, shuffled, shuffled with duplicates), with
//! `--backend-concurrency 16` and once with 1; every run must leave the
//! sims exactly as Marathon's final snapshot says. The in-memory and
//! store-level properties are in tests/order_independence.rs.
//!
//! Each run starts its daemon against an empty Marathon (so its start-up
//! resync sees nothing), then serves the final state to REST reads (spec
//! fetches, as a real Marathon would answer them after the fact) and
//! delivers the events: only the events can bring the sims in step.

mod common;

use common::{World, everywhere_app, status_only};
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use switchboard::sim::marathon::{Model, ModelOptions, SimEvent};

const SEED: u64 = 12;

/// An app on every backend whose Kong targets follow its health.
fn checked_app(id: &str) -> serde_json::Value {
    let mut app = everywhere_app(id);
    app["healthChecks"] = json!([{"protocol": "HTTP", "path": "/health", "portIndex": 0}]);
    app
}

/// A seeded scenario; the model ends in the state the sims must reach.
fn scenario(seed: u64) -> (Model, Vec<SimEvent>) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut m = Model::new(ModelOptions::default());
    let mut events = Vec::new();
    events.extend(m.deploy(everywhere_app("/shop/web"), 3));
    events.extend(m.deploy(checked_app("/shop/cart"), 2));
    events.extend(m.deploy(everywhere_app("/api"), 2));
    events.extend(m.deploy(everywhere_app("/batch"), 1));
    for _ in 0..14 {
        let apps = m.app_ids();
        if apps.is_empty() {
            break;
        }
        let app = apps[rng.random_range(0..apps.len())].clone();
        let tasks = m.task_ids(&app);
        let task = (!tasks.is_empty()).then(|| tasks[rng.random_range(0..tasks.len())].clone());
        let step = match (rng.random_range(0..9), task) {
            (0 | 1, _) => m.scale(&app, rng.random_range(0..=4)),
            (2, Some(t)) => m.kill_task(&t),
            (3, _) => m.restart(&app),
            (4 | 5, Some(t)) => m.set_health(&t, rng.random_bool(0.6)),
            (6, Some(t)) => m.lose_task(&t),
            (7, _) if apps.len() > 2 => m.destroy(&app),
            _ => m.scale(&app, tasks.len() + 1),
        };
        events.extend(step);
    }
    (m, events)
}

/// The events in one order, with `dups` duplicates put anywhere.
fn reorder(events: &[SimEvent], rng: &mut StdRng, shuffle: bool, dups: usize) -> Vec<SimEvent> {
    let mut out = events.to_vec();
    if shuffle {
        out.shuffle(rng);
    }
    for _ in 0..dups {
        let e = events[rng.random_range(0..events.len())].clone();
        let at = rng.random_range(0..=out.len());
        out.insert(at, e);
    }
    out
}

async fn converges(order: &str, events: &[SimEvent], model: &Model, concurrency: &str) {
    let w = World::builder().all_backends().start().await;
    let d = w.daemon(&["--backend-concurrency", concurrency]);
    w.subscribed().await;
    d.wait_sample("the start-up resync done", "switchboard_resyncs_total{result=\"ok\"}", |v| v >= 1.0).await;
    w.marathon.promote(model.clone());
    w.emit(events);
    w.converge_everywhere(&format!("{order}, --backend-concurrency {concurrency}: the sims match the snapshot")).await;
    // Nothing more is on its way: the queues are empty and it stays in step.
    for backend in ["consul", "kong", "vulcand"] {
        let sample = format!("switchboard_queue_depth{{backend=\"{backend}\"}}");
        d.wait_sample(&format!("{order}: {backend} queue drained"), &sample, |v| v == 0.0).await;
    }
    assert_eq!(w.mismatch(), None, "{order}, --backend-concurrency {concurrency}");
    // The events did it: no resync after the start-up one saw the final state.
    assert_eq!(d.resyncs_ok().await, Some(1.0), "{order}: a resync ran after the start-up one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn any_order_of_the_same_events_ends_in_the_same_sims() {
    let (model, events) = scenario(SEED);
    // Guard against a vacuous pass: the scenario leaves something to publish
    // on every backend, and something was removed on the way.
    let probe = World::builder().all_backends().start().await;
    probe.marathon.promote(model.clone());
    assert!(!probe.expected_consul_ids(None).is_empty(), "the scenario leaves no instance");
    assert!(!probe.expected_kong_targets(None).is_empty(), "the scenario leaves no Kong target");
    assert!(events.iter().any(|e| e.data["taskStatus"] == "TASK_KILLED"), "the scenario kills nothing");
    drop(probe);

    let mut rng = StdRng::seed_from_u64(SEED);
    let runs: Vec<(String, Vec<SimEvent>, &str)> = vec![
        ("Marathon's order".into(), events.clone(), "16"),
        ("reversed".into(), events.iter().rev().cloned().collect(), "16"),
        ("shuffled".into(), reorder(&events, &mut rng, true, 0), "16"),
        ("shuffled with duplicates".into(), reorder(&events, &mut rng, true, 12), "16"),
        (
            "status updates first, shuffled with duplicates".into(),
            {
                let mut first = reorder(&status_only(&events), &mut rng, true, 6);
                first.extend(events.iter().filter(|e| e.event_type != "status_update_event").cloned());
                first
            },
            "16",
        ),
        ("shuffled with duplicates, one op at a time".into(), reorder(&events, &mut rng, true, 12), "1"),
    ];
    for (order, events, concurrency) in runs {
        converges(&order, &events, &model, concurrency).await;
    }
}
