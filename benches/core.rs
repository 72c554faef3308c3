//! Criterion micro-benchmarks of the pure core, at a small and a large world,
//! so the cost per item against cluster size shows below the end-to-end
//! level (`switchboard-bench` measures that).
//!
//! - `parse`: one deploy's events (one app, 10 instances) from SSE data to typed events;
//! - `fold`: the touches of that deploy applied to a world of N instances
//!   (`assemble::Folded`), and to a sled store holding N instances;
//! - `plan`: desired registrations of a world of N instances and the diff
//!   against a ledger that lacks one instance (what one event cost before
//!   per-app planning, and what a resync's whole-world merge still costs);
//! - `one event`: what one event costs now, at 100, 1,000 and 10,000
//!   instances: its fold into the store (`consumer::fold_events`, the
//!   daemon's fold), the planner's pass over the one app it touched (store
//!   reads, desired, selection on Consul, Kong and Vulcand, pending and
//!   rejections written) and each applier planning that app against its
//!   ledger (`plan_wants`, ops queued). The event is a health change of one
//!   instance, alternating, so every iteration changes the app's plan.
//!
//! Run: `cargo bench --bench core` (add `-- --quick` for a fast pass).

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use switchboard::assemble::{Folded, Touch, touches};
use switchboard::backends::Backend;
use switchboard::backends::consul::{ConsulBackend, ConsulConfig};
use switchboard::backends::kong::{KongBackend, KongConfig};
use switchboard::backends::vulcand::{VulcandBackend, VulcandConfig};
use switchboard::labels::LabelOptions;
use switchboard::marathon::event::{Event, parse};
use switchboard::metrics::Metrics;
use switchboard::reconcile::Labels;
use switchboard::reconcile::applier::{ServiceIndex, plan_wants};
use switchboard::reconcile::consumer::fold_events;
use switchboard::reconcile::planner::{DirtySet, PlanInputs, Planner};
use switchboard::sim::marathon::{Model, ModelOptions, SimEvent};
use switchboard::sim::scenario::Scenario;

/// World sizes in instances: apps of 10 instances each.
const WORLDS: [usize; 2] = [100, 10_000];
/// World sizes of the per-event group: flat from the first to the last is
/// the point (issue 18: within 2x from 100 to 10,000).
const EVENT_WORLDS: [usize; 3] = [100, 1_000, 10_000];
const PER_APP: usize = 10;

fn parse_all(events: &[SimEvent]) -> Vec<Event> {
    events.iter().flat_map(|e| parse(&e.event_type, &e.data.to_string()).unwrap_or_default()).collect()
}

/// A model holding `instances` instances, the parsed events that built it,
/// and the raw events of one more app's deploy.
fn world(instances: usize) -> (Vec<Event>, Vec<SimEvent>) {
    let mut m = Model::new(ModelOptions::default());
    let mut raw = Vec::new();
    for i in 0..instances / PER_APP {
        raw.extend(m.deploy(Scenario::app_definition(i), PER_APP));
    }
    let extra = m.deploy(Scenario::app_definition(instances / PER_APP + 1), PER_APP);
    (parse_all(&raw), extra)
}

fn folded(events: &[Event]) -> Folded {
    let mut f = Folded::default();
    for e in events {
        for t in touches(e) {
            f.apply(&t);
        }
    }
    f
}

fn benches(c: &mut Criterion) {
    let (_, one_deploy) = world(0);
    let data: Vec<(String, String)> = one_deploy.iter().map(|e| (e.event_type.clone(), e.data.to_string())).collect();
    c.bench_function(&format!("parse/one deploy ({} events)", data.len()), |b| {
        b.iter(|| {
            for (ty, d) in &data {
                black_box(parse(ty, d).ok());
            }
        })
    });

    let opts = LabelOptions::default();
    let mut fold = c.benchmark_group("fold one deploy into a world of N instances");
    for n in WORLDS {
        let (events, extra) = world(n);
        let base = folded(&events);
        let extra_touches: Vec<Touch> = parse_all(&extra).iter().flat_map(touches).collect();
        fold.bench_with_input(BenchmarkId::new("Folded::apply", n), &n, |b, _| {
            b.iter_batched(
                || base.clone(),
                |mut f| {
                    for t in &extra_touches {
                        f.apply(t);
                    }
                    f
                },
                BatchSize::LargeInput,
            )
        });
        let dir = tempfile::tempdir().expect("temp dir");
        let store = switchboard::store::Store::open(dir.path()).expect("store");
        for (seq, e) in events.iter().enumerate() {
            store.apply_touches(&touches(e), seq as u64 + 1).expect("apply");
        }
        let mut seq = events.len() as u64 + 1;
        fold.bench_with_input(BenchmarkId::new("Store::apply_touches", n), &n, |b, _| {
            b.iter(|| {
                seq += 1;
                store.apply_touches(&extra_touches, seq).expect("apply")
            })
        });
    }
    fold.finish();

    let mut plan = c.benchmark_group("plan a world of N instances");
    for n in WORLDS {
        let (events, _) = world(n);
        let f = folded(&events);
        plan.bench_with_input(BenchmarkId::new("desired", n), &n, |b, _| b.iter(|| f.desired(&opts)));
        let desired = f.desired(&opts).registrations;
        let ledger: Vec<_> = desired.iter().skip(1).cloned().collect();
        plan.bench_with_input(BenchmarkId::new("plan vs ledger", n), &n, |b, _| {
            b.iter(|| switchboard::plan::plan(&desired, &ledger, |a, b| a == b))
        });
    }
    plan.finish();

    let mut one = c.benchmark_group("one event: fold it and plan its app, in a world of N instances");
    for n in EVENT_WORLDS {
        let mut m = Model::new(ModelOptions::default());
        let mut raw = Vec::new();
        for i in 0..n / PER_APP {
            raw.extend(m.deploy(Scenario::app_definition(i), PER_APP));
        }
        let events = parse_all(&raw);
        let dir = tempfile::tempdir().expect("temp dir");
        let store = switchboard::store::Store::open(dir.path()).expect("store");
        let (backends, inputs) = backends();
        for chunk in events.chunks(1024) {
            fold_events(&store, chunk).expect("fold");
        }
        let mut planner = Planner::default();
        let everything = Planner::apps_of(&store, &inputs, DirtySet::everything()).expect("apps");
        let wants = planner.pass(&store, &inputs, &everything, 1).expect("pass");
        let mut services: Vec<ServiceIndex> = backends.iter().map(|_| ServiceIndex::default()).collect();
        let no_merge = HashMap::new();
        for (b, index) in backends.iter().zip(&mut services) {
            let ops = plan_wants(&store, b.routing.as_ref(), &wants[b.name()], &no_merge, index).expect("plan");
            // The ledger holds all of it, as after the cold resync.
            store.complete_many(b.name(), &ops).expect("complete");
        }
        let app = Scenario::app_id(n / PER_APP / 2);
        let task = m.task_ids(&app).into_iter().next().expect("a task of the app");
        let mut alive = true;
        one.bench_with_input(BenchmarkId::new("fold + pass + plan_wants", n), &n, |bench, _| {
            bench.iter_batched(
                || {
                    alive = !alive;
                    parse_all(&m.set_health(&task, alive))
                },
                |event| {
                    let dirty = fold_events(&store, &event).expect("fold");
                    let wants = planner.pass(&store, &inputs, &dirty, 2).expect("pass");
                    for (b, index) in backends.iter().zip(&mut services) {
                        black_box(
                            plan_wants(&store, b.routing.as_ref(), &wants[b.name()], &no_merge, index).expect("plan"),
                        );
                    }
                },
                BatchSize::SmallInput,
            )
        });
    }
    one.finish();
}

/// The three backends (never called) and the planner's inputs.
fn backends() -> (Vec<Backend>, PlanInputs) {
    let url = |s: &str| url::Url::parse(s).expect("url");
    let consul = ConsulBackend::new(ConsulConfig {
        url: url("http://127.0.0.1:9"),
        token: None,
        cluster: "default".into(),
        timeout: Duration::from_secs(1),
        agents: Default::default(),
        tls: Default::default(),
        replace: None,
    })
    .expect("consul");
    let kong = KongBackend::new(KongConfig::new(url("http://127.0.0.1:9"))).expect("kong");
    let vulcand = VulcandBackend::new(VulcandConfig {
        url: url("http://127.0.0.1:9"),
        cluster: "default".into(),
        server_ttl: None,
        timeout: Duration::from_secs(1),
        tls: Default::default(),
    })
    .expect("vulcand");
    let backends = vec![Backend::new(consul), Backend::new(kong), Backend::new(vulcand)];
    let inputs = PlanInputs {
        routing: backends.iter().map(|b| b.routing.clone()).collect(),
        labels: Labels::default(),
        metrics: Metrics::new(),
    };
    (backends, inputs)
}

criterion_group!(core, benches);
criterion_main!(core);
