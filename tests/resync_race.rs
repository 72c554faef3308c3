//! The resync race: a resync's listing of a backend that straddles an
//! event-driven registration. The Consul simulator holds its listing while
//! the event path registers a new app's instance, so the interleaving is
//! forced, not hoped for, in both shapes:
//! - the listing reads Consul after the write (`hold_listings`): it shows the
//!   new instance, which the resync must not take for a leftover;
//! - the listing reads Consul before the write and answers after it
//!   (`hold_listings_stale`): it lacks the new instance, which the applier
//!   knows it wrote meanwhile (`AppliedLog`), so it trusts its ledger there.

mod common;

use std::time::Duration;

use common::{Daemon, eventually, eventually_async, s};
use serde_json::json;
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions};

const WAIT: Duration = Duration::from_secs(20);

/// How the Consul simulator holds the reconnect's listing.
#[derive(Clone, Copy)]
enum Hold {
    /// Reads after the release: the answer shows the write.
    ReadAtRelease,
    /// Reads at once, answers at the release: the answer predates the write.
    ReadAtRequest,
}

/// A daemon whose reconnect resync lists Consul while the event path
/// registers `/late`; returns the sims, the daemon and `/late`'s task id once
/// that resync is done and its repairs drained.
async fn race(hold: Hold) -> (ConsulSim, Daemon, String, tempfile::TempDir) {
    let marathon = MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() })
        .await
        .expect("marathon sim");
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul sim");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        &dir.path().join("data"),
        &s(&["--marathon", marathon.url().as_str(), "--consul", &consul.url()]),
    );
    eventually_async("the start-up resync done", WAIT, || async {
        d.sample("switchboard_resyncs_total{result=\"ok\"}").await >= Some(1.0)
    })
    .await;
    match hold {
        Hold::ReadAtRelease => consul.hold_listings(),
        Hold::ReadAtRequest => consul.hold_listings_stale(),
    }
    marathon.disconnect_all();
    eventually("the reconnect's resync is listing Consul", WAIT, || consul.listings_waiting() == 1).await;

    // An app deployed now is missing from the resync's Marathon snapshot, and
    // the event path registers it while the listing waits.
    let app = json!({"id": "/late", "labels": {"consul": "late"}, "portDefinitions": [{"port": 0}]});
    marathon.emit(&marathon.model().deploy(app, 1));
    let task = marathon.model().task_ids("/late")[0].clone();
    let registered = || consul.services().keys().any(|id| id.starts_with(&task));
    eventually("the new instance registered while the listing waits", WAIT, registered).await;
    assert_eq!(consul.listings_waiting(), 1, "the listing is still in flight");

    consul.release_listings();
    eventually_async("the reconnect's resync done", WAIT, || async {
        d.sample("switchboard_resyncs_total{result=\"ok\"}").await >= Some(2.0)
    })
    .await;
    eventually_async("the consul queue drained", WAIT, || async {
        d.sample("switchboard_queue_depth{backend=\"consul\"}").await == Some(0.0)
    })
    .await;
    (consul, d, task, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_instance_registered_during_a_resync_listing_stays_registered() {
    let (consul, d, task, _dir) = race(Hold::ReadAtRelease).await;
    assert!(consul.services().keys().any(|id| id.starts_with(&task)), "a live instance was deregistered by the resync");
    assert_eq!(
        d.sample("switchboard_ops_total{backend=\"consul\",op=\"deregister\",result=\"ok\"}").await,
        None,
        "no deregistration at all: no task was killed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listing_older_than_a_write_is_not_trusted_for_that_registration() {
    let (consul, _d, task, _dir) = race(Hold::ReadAtRequest).await;
    assert!(consul.services().keys().any(|id| id.starts_with(&task)), "the live instance stays registered");
    let writes: Vec<(bool, String)> = consul.history().into_iter().filter(|(_, id)| id.starts_with(&task)).collect();
    assert_eq!(writes.len(), 1, "one register, no repeat from the stale listing, no removal: {writes:?}");
    assert!(writes[0].0, "{writes:?}");
}
