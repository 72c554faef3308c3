//! Criterion micro-benchmarks of the pure core, at a small and a large world,
//! so the cost per item against cluster size shows below the end-to-end
//! level (`switchboard-bench` measures that).
//!
//! - `parse`: one deploy's events (one app, 10 instances) from SSE data to typed events;
//! - `fold`: the touches of that deploy applied to a world of N instances
//!   (`assemble::Folded`), and to a sled store holding N instances;
//! - `plan`: desired registrations of a world of N instances and the diff
//!   against a ledger that lacks one instance (what one event costs today).
//!
//! Run: `cargo bench --bench core` (add `-- --quick` for a fast pass).

use std::hint::black_box;

use criterion::{BatchSize, BenchmarkId, Criterion, criterion_group, criterion_main};
use switchboard::assemble::{Folded, Touch, touches};
use switchboard::labels::LabelOptions;
use switchboard::marathon::event::{Event, parse};
use switchboard::sim::marathon::{Model, ModelOptions, SimEvent};
use switchboard::sim::scenario::Scenario;

/// World sizes in instances: apps of 10 instances each.
const WORLDS: [usize; 2] = [100, 10_000];
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
}

criterion_group!(core, benches);
criterion_main!(core);
