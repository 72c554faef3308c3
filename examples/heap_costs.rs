//! What the daemon's two largest transient structures cost on the heap, at
//! the harness's scale, counted by a global allocator that keeps the bytes
//! live and their peak:
//!
//! - Marathon's snapshot (`GET /v2/apps?embed=apps.tasks`, the body the
//!   simulator serves): the body, decoding it as one `serde_json::Value`
//!   (how `parse_snapshot` read it before issue 18's memory work), and
//!   `parse_snapshot` now (one app's JSON at a time), with what its result
//!   keeps;
//! - an event storm (every app redeployed, as `switchboard-bench`'s storm):
//!   its events parsed as the stream parses them, held as the stream's items
//!   (what the channel to the consumer holds) and as the consumer's buffer
//!   of events waiting to be folded.
//!
//! Run: `cargo run --release --example heap_costs -- [APPS] [INSTANCES]`
//! (default 1000 × 10). Prints one JSON object. Heap bytes are what the
//! program asked for (`Layout::size`); malloc's own overhead and
//! fragmentation come on top in RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_json::{Value, json};
use switchboard::marathon::client::parse_snapshot;
use switchboard::marathon::event::{Event, parse};
use switchboard::marathon::stream::StreamItem;
use switchboard::model::Timestamp;
use switchboard::sim::marathon::{Model, ModelOptions};
use switchboard::sim::scenario::Scenario;

/// Counts live heap bytes and their peak; the system allocator does the work.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::Relaxed) + by;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters are
// only bookkeeping.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded with the caller's layout.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: forwarded with the caller's pointer, layout and size.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
            grew(new_size);
        }
        p
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Runs `f`; returns its value, the peak bytes above what was live before,
/// and the bytes still live after it (what its value keeps).
fn measure<T>(f: impl FnOnce() -> T) -> (T, usize, usize) {
    let base = LIVE.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let v = f();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let kept = LIVE.load(Ordering::Relaxed).saturating_sub(base);
    (v, peak, kept)
}

fn mib(b: usize) -> f64 {
    (b as f64 / 1_048_576.0 * 10.0).round() / 10.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let apps: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(1000);
    let per_app: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);

    let mut model = Model::new(ModelOptions::default());
    for i in 0..apps {
        model.deploy(Scenario::app_definition(i), per_app);
    }

    // The snapshot, as the simulator serves it.
    let body = model.apps_json().to_string();
    let (tree, value_peak, value_kept) = measure(|| serde_json::from_str::<Value>(&body).ok());
    drop(tree);
    let (snap, parse_peak, parse_kept) = measure(|| parse_snapshot(&body, Timestamp(1)));
    let tasks: usize = snap.as_ref().map(|s| s.apps.iter().map(|a| a.tasks.len()).sum()).unwrap_or(0);
    drop(snap);

    // The storm: every app redeployed, each event parsed as the stream does.
    let mut storm = Vec::new();
    for i in 0..apps {
        storm.extend(model.deploy(Scenario::app_definition(i), per_app));
    }
    let frames: Vec<(String, String)> = storm.iter().map(|e| (e.event_type.clone(), e.data.to_string())).collect();
    drop(storm);
    let sse_bytes: usize = frames.iter().map(|(t, d)| t.len() + d.len() + 20).sum();
    let (items, items_peak, items_kept) = measure(|| {
        frames
            .iter()
            .filter_map(|(t, d)| parse(t, d).ok().map(|events| StreamItem::Events { event_type: t.clone(), events }))
            .collect::<Vec<StreamItem>>()
    });
    let (events, _, events_kept) = measure(|| {
        let mut waiting: Vec<Event> = Vec::new();
        for item in &items {
            if let StreamItem::Events { events, .. } = item {
                waiting.extend(
                    events.iter().filter(|e| !matches!(e, Event::Ignored { .. } | Event::Unknown { .. })).cloned(),
                );
            }
        }
        waiting
    });
    let n_events = events.len();

    let out = json!({
        "apps": apps,
        "instances": apps * per_app,
        "snapshot": {
            "tasks": tasks,
            "body_mib": mib(body.len()),
            "whole_value_tree_mib": mib(value_kept),
            "whole_value_peak_mib": mib(value_peak),
            "parse_snapshot_peak_mib": mib(parse_peak),
            "parse_snapshot_result_mib": mib(parse_kept),
        },
        "storm": {
            "frames": frames.len(),
            "sse_bytes_mib": mib(sse_bytes),
            "stream_items_mib": mib(items_kept),
            "stream_items_peak_mib": mib(items_peak),
            "events": n_events,
            "waiting_events_mib": mib(events_kept),
            "bytes_per_waiting_event": events_kept / n_events.max(1),
        },
    });
    println!("{out}");
}
