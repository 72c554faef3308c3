//! A REST body through every snapshot decoder a resync or a spec fetch
//! uses (`/v2/apps?embed=apps.tasks`, `/v2/apps/{id}`, `/v2/tasks`,
//! `/v2/pods/::status`, `/v2/pods/{id}::status`, a pod definition), then
//! folded into records and registrations as the store would.
//! Seeds: tests/fixtures/marathon (rest-*.json) and marathon-pods.
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::assemble::{Folded, snapshot_touches};
use switchboard::labels::LabelOptions;
use switchboard::marathon::client::{AppSnapshot, parse_app_response, parse_snapshot, parse_tasks};
use switchboard::marathon::pod::{parse_pod, parse_pod_status, parse_pods_status};
use switchboard::model::Timestamp;

fn fold(apps: &[AppSnapshot]) {
    let mut folded = Folded::default();
    for app in apps {
        let tasks: Vec<_> = app.tasks.iter().map(|t| (t.facts.clone(), t.healthy)).collect();
        for touch in snapshot_touches(&app.spec, &tasks, Timestamp(1)) {
            folded.apply(&touch);
        }
    }
    let _ = folded.desired(&LabelOptions::default());
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let as_of = Timestamp(1);
    if let Ok(snap) = parse_snapshot(text, as_of) {
        fold(&snap.apps);
    }
    if let Ok(app) = parse_app_response(text, as_of) {
        fold(&[app]);
    }
    let _ = parse_tasks(text, as_of);
    if let Ok((pods, _broken)) = parse_pods_status(text, as_of) {
        fold(&pods);
    }
    if let Ok(pod) = parse_pod_status(text, as_of) {
        fold(&[pod]);
    }
    let _ = parse_pod(text);
});
