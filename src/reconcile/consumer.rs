//! The consumer: takes what the event stream parsed, folds each burst of
//! events into the store in one transaction (on the store's thread), and marks
//! the apps they touched dirty for the planner.
//!
//! Invariants:
//! - The stream task only parses and forwards; the consumer keeps taking its
//!   items while a burst is being folded, up to [`MAX_WAITING`] events. Past
//!   that it stops taking them: the channel ([`CHANNEL_CAPACITY`] items)
//!   fills, the stream task waits, and Marathon's events wait in the socket
//!   instead of in memory (a storm of 115,000 events at 10,000 instances was
//!   the daemon's peak RSS). A Marathon that falls too far behind on a slow
//!   client drops it (1.8+: the stream reconnects and resyncs) or drops its
//!   events (up to 1.7): so once the stream had to wait, the consumer asks
//!   for a resync when it has stayed caught up for [`RESYNC_QUIET`].
//! - Bursts are folded one at a time, in the order received: a burst shares
//!   one receive sequence number and one high-water update (`fold_events`, the
//!   function the order-independence property drives).
//! - Folded facts are not flushed here: the appliers flush before they apply
//!   anything planned from them, and facts lost to a crash come back with the
//!   start-up resync.

use std::collections::BTreeSet;
use std::sync::Arc;

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::planner::Dirty;
use crate::assemble::Touch;
use crate::marathon::event::Event;
use crate::marathon::stream::StreamItem;
use crate::metrics::Metrics;
use crate::store::{Store, StoreHandle};

/// Most events folded in one transaction.
pub const FOLD_BATCH: usize = 1024;

/// Most events taken from the stream and waiting to be folded.
pub const MAX_WAITING: usize = 4 * FOLD_BATCH;

/// After the stream had to wait, how long the consumer must stay caught up
/// (nothing waiting or folding, no new event) before it asks for the resync:
/// a storm that pauses for a moment gets no resync in its middle.
pub const RESYNC_QUIET: std::time::Duration = std::time::Duration::from_secs(2);

/// Stream items the channel from the stream task to the consumer holds
/// (`daemon` makes it); a full channel makes the stream task wait.
pub const CHANNEL_CAPACITY: usize = 1024;

/// The consumer task.
pub async fn run(
    store: StoreHandle,
    metrics: Metrics,
    mut rx: mpsc::Receiver<StreamItem>,
    dirty: Arc<Dirty>,
    resync_wake: Arc<Notify>,
    shutdown: CancellationToken,
) {
    let mut waiting: Vec<Event> = Vec::new();
    let mut folding: Option<tokio::task::JoinHandle<BTreeSet<String>>> = None;
    let mut open = true;
    // The stream task had to wait for us: Marathon may have dropped events.
    let mut stream_waited = false;
    // When that resync is due, once caught up.
    let mut resync_at: Option<tokio::time::Instant> = None;
    loop {
        if folding.is_none() && !waiting.is_empty() {
            let burst: Vec<Event> = if waiting.len() > FOLD_BATCH {
                let rest = waiting.split_off(FOLD_BATCH);
                std::mem::replace(&mut waiting, rest)
            } else {
                std::mem::take(&mut waiting)
            };
            let store = store.clone();
            folding = Some(tokio::spawn(async move {
                match store.call(move |s| Ok(fold_burst(s, &burst))).await {
                    Ok(apps) => apps,
                    Err(e) => {
                        warn!(error = %e, "cannot reach the store to fold events");
                        BTreeSet::new()
                    }
                }
            }));
        }
        // A full channel: the consumer was MAX_WAITING events behind long
        // enough for the stream task to wait (or to wait at its next send).
        if open && rx.capacity() == 0 {
            stream_waited = true;
        }
        let caught_up = folding.is_none() && waiting.is_empty();
        if !caught_up {
            resync_at = None;
        } else if stream_waited && resync_at.is_none() {
            resync_at = Some(tokio::time::Instant::now() + RESYNC_QUIET);
        }
        if !open && folding.is_none() {
            return;
        }
        let room = waiting.len() < MAX_WAITING;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = async {
                match resync_at {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            }, if resync_at.is_some() => {
                resync_at = None;
                stream_waited = false;
                info!(
                    waiting_at_most = MAX_WAITING,
                    "the event stream had to wait for the store; resyncing in case Marathon dropped events"
                );
                resync_wake.notify_one();
            }
            item = rx.recv(), if open && room => match item {
                Some(item) => {
                    handle(&metrics, item, &resync_wake, &mut waiting);
                    while waiting.len() < MAX_WAITING {
                        let Ok(item) = rx.try_recv() else { break };
                        handle(&metrics, item, &resync_wake, &mut waiting);
                    }
                }
                None => open = false,
            },
            done = async {
                match folding.as_mut() {
                    Some(f) => f.await,
                    None => std::future::pending().await,
                }
            }, if folding.is_some() => {
                folding = None;
                match done {
                    Ok(touched) if !touched.is_empty() => dirty.mark(touched),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "folding a burst failed"),
                }
            }
        }
    }
}

/// Handles one stream item; its events go into `events`, to be folded with
/// the rest of the burst.
pub fn handle(metrics: &Metrics, item: StreamItem, resync_wake: &Notify, events: &mut Vec<Event>) {
    match item {
        StreamItem::Connected { endpoint } => {
            metrics.stream_connected(&endpoint); // status hook: counter, gauge, live status
            info!(endpoint = %endpoint, "event stream connected; resyncing");
            resync_wake.notify_one();
        }
        StreamItem::Disconnected { reason } => {
            metrics.stream_disconnected(&reason); // status hook
            warn!(reason = %reason, "event stream lost; reconnecting");
        }
        StreamItem::Oversized { limit } => {
            // The line is gone and so is its event: only a resync can repair it.
            metrics.events_skipped.with_label_values(&["oversized"]).inc();
            warn!(limit, "event over the line limit skipped; resyncing");
            resync_wake.notify_one();
        }
        StreamItem::Malformed { event_type, error } => {
            metrics.events_skipped.with_label_values(&["malformed"]).inc();
            warn!(event_type = %event_type, error = %error, "malformed event skipped");
        }
        StreamItem::Events { event_type, events: parsed } => {
            metrics.events.with_label_values(&[&event_type]).inc();
            metrics.event_received(); // status hook: last event
            for event in parsed {
                metrics.saw_event(&event); // metrics hook: TASK_RUNNING receive instant
                match &event {
                    Event::Unknown { event_type } => {
                        metrics.events_skipped.with_label_values(&["unknown_type"]).inc();
                        debug!(event_type = %event_type, "unknown event type skipped");
                    }
                    Event::Ignored { .. } => {}
                    _ => events.push(event),
                }
            }
        }
    }
}

/// Folds a burst of events into the store in one transaction (one receive
/// sequence number, one high-water update); if that fails, event by event,
/// so one bad record costs only its own event. Runs on the store's thread.
/// Returns the apps whose facts were folded.
pub fn fold_burst(store: &Store, events: &[Event]) -> BTreeSet<String> {
    if events.is_empty() {
        return BTreeSet::new();
    }
    match fold_events(store, events) {
        Ok(apps) => apps,
        Err(e) => {
            warn!(events = events.len(), error = %e, "cannot store a burst of events; storing them one by one");
            let mut apps = BTreeSet::new();
            for event in events {
                match fold_events(store, std::slice::from_ref(event)) {
                    Ok(a) => apps.extend(a),
                    Err(e) => warn!(event = ?event, error = %e, "cannot store event"),
                }
            }
            apps
        }
    }
}

/// Folds the facts of `events` into the store in one transaction under one
/// receive sequence number. Returns the apps they touched.
pub fn fold_events(store: &Store, events: &[Event]) -> Result<BTreeSet<String>, crate::store::Error> {
    let mut apps = BTreeSet::new();
    let mut touches = Vec::new();
    let mut high = crate::model::Timestamp::default();
    for event in events {
        for t in crate::assemble::touches(event) {
            let at = match &t {
                Touch::Instance(r) => r.last_at(),
                Touch::App(_, a) => a.stopped_at.unwrap_or_default(),
                _ => Default::default(),
            };
            high = high.max(at);
            match &t {
                Touch::Instance(r) => apps.insert(r.app_id.as_str().to_owned()),
                Touch::App(id, _) | Touch::Hint(id) => apps.insert(id.as_str().to_owned()),
                Touch::Spec(spec) => apps.insert(spec.id.as_str().to_owned()),
            };
            touches.push(t);
        }
    }
    let seq = store.next_seq()?;
    store.raise_high_water(high)?;
    store.apply_touches(&touches, seq)?;
    Ok(apps)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::marathon::event::parse;
    use crate::sim::marathon::{Model, ModelOptions};
    use crate::sim::scenario::Scenario;

    /// One `status_update_event` of a simulated deploy, parsed as the stream
    /// parses it.
    fn one_status_event() -> (String, Event) {
        let mut model = Model::new(ModelOptions::default());
        let events = model.deploy(Scenario::app_definition(0), 1);
        let sim = events.iter().find(|e| e.event_type == "status_update_event").expect("a status update");
        let parsed = parse(&sim.event_type, &sim.data.to_string()).expect("parses");
        (sim.event_type.clone(), parsed.into_iter().next().expect("one event"))
    }

    #[tokio::test]
    async fn a_stalled_store_makes_the_stream_wait_instead_of_buffering_and_a_resync_follows() {
        let dir = tempfile::tempdir().expect("dir");
        let store = StoreHandle::spawn(Store::open(dir.path()).expect("store")).expect("spawn");
        let (event_type, event) = one_status_event();
        let app = match &event {
            Event::Status(f) => f.app_id.clone(),
            other => panic!("not a status update: {other:?}"),
        };
        let (tx, rx) = mpsc::channel(CHANNEL_CAPACITY);
        let resync = Arc::new(Notify::new());
        let shutdown = CancellationToken::new();
        let hold = store.hold();
        let consumer = tokio::spawn(run(
            store.clone(),
            Metrics::new(),
            rx,
            Arc::new(Dirty::default()),
            resync.clone(),
            shutdown.clone(),
        ));
        let item = || StreamItem::Events { event_type: event_type.clone(), events: vec![event.clone()] };
        // The store is held: the consumer takes at most MAX_WAITING events
        // (plus the burst it is folding), then the channel fills and the
        // stream would have to wait.
        let mut sent = 0usize;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            match tx.try_send(item()) {
                Ok(()) => sent += 1,
                Err(mpsc::error::TrySendError::Full(_)) => break,
                Err(e) => panic!("consumer gone: {e}"),
            }
            if sent.is_multiple_of(256) {
                tokio::task::yield_now().await;
            }
            assert!(tokio::time::Instant::now() < deadline, "the channel never filled after {sent} items");
        }
        let most = FOLD_BATCH + MAX_WAITING + CHANNEL_CAPACITY;
        assert!(sent <= most, "{sent} items taken with the store held, at most {most} may be");
        // Released: everything sent is folded, and a resync is asked for.
        drop(hold);
        tx.send(item()).await.expect("the stream goes on once the store does");
        tokio::time::timeout(Duration::from_secs(20), resync.notified())
            .await
            .expect("a resync after the stream waited");
        let folded = store.call(move |s| s.instances_of(&app)).await.expect("read");
        assert_eq!(folded.len(), 1, "the event was folded");
        shutdown.cancel();
        let _ = consumer.await;
    }
}
