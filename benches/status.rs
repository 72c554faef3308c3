//! Criterion benchmark of the status page at 1,000 and 10,000 instances: the status
//! model built from the store's trees as values (`status::model::build`) and
//! rendered to HTML (`status::html::render`), for the first page (what `/`
//! serves), a search by app, and the whole model (what `/api/status` builds).
//! The store reads and HTTP are measured end to end by `switchboard-bench`
//! (its `status_page` row).
//!
//! Run: `cargo bench --bench status` (add `-- --quick` for a fast pass).

use std::collections::BTreeMap;
use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use switchboard::assemble::{Folded, touches};
use switchboard::labels::LabelOptions;
use switchboard::marathon::event::parse;
use switchboard::sim::marathon::{Model, ModelOptions};
use switchboard::sim::scenario::Scenario;
use switchboard::status::html::render;
use switchboard::status::live::LiveStatus;
use switchboard::status::model::{DEFAULT_PER_PAGE, Inputs, Query, build};

const PER_APP: usize = 10;

/// The store of a world of `instances` instances, every registration in
/// every backend's ledger.
fn inputs(instances: usize) -> Inputs {
    let mut m = Model::new(ModelOptions::default());
    let mut f = Folded::default();
    for i in 0..instances / PER_APP {
        for e in m.deploy(Scenario::app_definition(i), PER_APP) {
            for ev in parse(&e.event_type, &e.data.to_string()).unwrap_or_default() {
                for t in touches(&ev) {
                    f.apply(&t);
                }
            }
        }
    }
    let desired = f.desired(&LabelOptions::default()).registrations;
    let backends = vec!["consul".to_owned(), "kong".to_owned(), "vulcand".to_owned()];
    let ledger: BTreeMap<String, _> = backends.iter().map(|b| (b.clone(), desired.clone())).collect();
    Inputs {
        queue: backends.iter().map(|b| (b.clone(), Vec::new())).collect(),
        backends,
        instances: f.instances.into_values().collect(),
        apps: f.apps,
        specs: f.specs,
        ledger,
        ..Default::default()
    }
}

fn benches(c: &mut Criterion) {
    let live = LiveStatus::default();
    let mut g = c.benchmark_group("status page");
    for n in [1_000, 10_000] {
        let inputs = inputs(n);
        assert_eq!(inputs.instances.len(), n);
        let page = Query { per_page: Some(DEFAULT_PER_PAGE), ..Default::default() };
        g.bench_with_input(BenchmarkId::new("first page: build + render", n), &n, |b, _| {
            b.iter(|| black_box(render(&build(&inputs, &live, &page, 0))))
        });
        let search = Query { app: Some("app-0042".into()), per_page: Some(DEFAULT_PER_PAGE), ..Default::default() };
        g.bench_with_input(BenchmarkId::new("search by app: build + render", n), &n, |b, _| {
            b.iter(|| black_box(render(&build(&inputs, &live, &search, 0))))
        });
        g.bench_with_input(BenchmarkId::new("whole model: build + JSON", n), &n, |b, _| {
            b.iter(|| black_box(serde_json::to_vec(&build(&inputs, &live, &Query::default(), 0)).map(|v| v.len())))
        });
    }
    g.finish();
}

criterion_group!(status, benches);
criterion_main!(status);
