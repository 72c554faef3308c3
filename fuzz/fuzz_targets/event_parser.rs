//! One SSE frame's `data` through the event parser, then what a daemon
//! does with the events: fold them and derive registrations (labels).
//! Seeds: every sample in tests/fixtures/marathon and marathon-pods (the
//! JSON's own `eventType` wins over the SSE name, so a sample is an input).
#![no_main]

use libfuzzer_sys::fuzz_target;
use switchboard::assemble::{Folded, touches};
use switchboard::labels::LabelOptions;
use switchboard::marathon::event::parse;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // The SSE `event:` name as well, when the input carries one first.
    let (name, body) = match text.split_once('\u{0}') {
        Some((name, body)) => (name, body),
        None => ("", text),
    };
    let Ok(events) = parse(name, body) else { return };
    let mut folded = Folded::default();
    for event in &events {
        for touch in touches(event) {
            folded.apply(&touch);
        }
    }
    let _ = folded.desired(&LabelOptions::default());
});
