//! A stalled store does not stop the daemon: with every sled call held on the
//! store's thread (a test hook that blocks it, as a disk that stops
//! answering would), the status server still answers `/health`, the event
//! stream is still read (events are counted as they arrive), and an HA leader
//! still renews its session and stays the leader. Once the store answers
//! again, what arrived meanwhile is registered.
//!
//! The daemon runs in this process (`daemon::run`, as `switchboard demo`
//! runs it) so the test can hold its store thread.

mod common;

use std::time::{Duration, Instant};

use common::{eventually, eventually_async};
use serde_json::json;
use switchboard::config::{CommonArgs, Config, Env, FileConfig};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(30);

async fn get(url: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let resp = client.get(url).send().await.ok()?;
    resp.status().is_success().then_some(())?;
    resp.text().await.ok()
}

async fn sample(status: &str, name: &str) -> Option<f64> {
    let text = get(&format!("{status}/metrics")).await?;
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse::<f64>().ok()))
}

/// The HA role `/ready` reports (from the live status: no store read).
async fn role(status: &str) -> Option<String> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().ok()?;
    let v: serde_json::Value = client.get(format!("{status}/ready")).send().await.ok()?.json().await.ok()?;
    v["role"]["role"].as_str().map(str::to_owned)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_store_stops_neither_health_nor_the_stream_nor_the_leaders_renew() {
    let marathon = MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() })
        .await
        .expect("marathon sim");
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul sim");
    consul.kv().set_session_ttl_min(Duration::from_millis(100));
    let dir = tempfile::tempdir().expect("tempdir");
    let mut args = CommonArgs {
        marathon: vec![marathon.url().to_string()],
        data_dir: Some(dir.path().join("data")),
        listen: Some("127.0.0.1:0".into()),
        ha: true,
        replica_name: Some("stalled".into()),
        ha_session_ttl: Some("2s".into()),
        ha_lock_delay: Some("2500ms".into()),
        request_timeout: Some("1500ms".into()),
        ..Default::default()
    };
    args.backends.consul.url = Some(consul.url());
    let cfg = Config::merge(&args, &FileConfig::default(), &Env::none()).expect("config");
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let daemon = tokio::spawn(switchboard::daemon::run(cfg, shutdown.clone(), Some(ready_tx)));
    let status = format!("http://{}", ready_rx.await.expect("the daemon listens"));
    eventually_async("this replica leads", WAIT, || async { role(&status).await.as_deref() == Some("leader") }).await;
    eventually_async("the start-up resync done", WAIT, || async {
        sample(&status, "switchboard_resyncs_total{result=\"ok\"}").await >= Some(1.0)
    })
    .await;

    // The disk stops answering.
    let hold = switchboard::store::hold_every_store();
    let held_at = Instant::now();
    let events = "switchboard_events_total{type=\"status_update_event\"}";
    let before = sample(&status, events).await.unwrap_or(0.0);
    let app = json!({"id": "/web", "labels": {"consul": "web"}, "portDefinitions": [{"port": 0}]});
    marathon.emit(&marathon.model().deploy(app, 3));

    eventually_async("the stream is read while the store is held", WAIT, || async {
        sample(&status, events).await.unwrap_or(0.0) >= before + 3.0
    })
    .await;
    // Two session TTLs with the store held: the leader renews throughout.
    let renews = || -> Vec<Instant> {
        consul
            .kv()
            .requests()
            .iter()
            .filter(|r| r.at > held_at && r.path.starts_with("/v1/session/renew/"))
            .map(|r| r.at)
            .collect()
    };
    eventually("two TTLs with the store held", WAIT, || held_at.elapsed() >= Duration::from_secs(4)).await;
    let during = renews();
    assert!(during.len() >= 3, "the leader renews while the store is held: {} renews", during.len());
    let mut gaps: Vec<Duration> = during.windows(2).map(|w| w[1] - w[0]).collect();
    gaps.push(during[0] - held_at);
    assert!(gaps.iter().all(|g| *g < Duration::from_secs(2)), "no renew gap as long as the TTL: {gaps:?}");
    assert_eq!(get(&format!("{status}/health")).await.as_deref(), Some("ok\n"), "/health answers");
    assert_eq!(role(&status).await.as_deref(), Some("leader"), "still the leader");
    assert!(consul.services().keys().all(|id| !id.contains("web")), "nothing is written from a held store");

    // The disk answers again: what arrived meanwhile is registered.
    drop(hold);
    let tasks = marathon.model().task_ids("/web");
    eventually("the instances that arrived meanwhile are registered", WAIT, || {
        tasks.iter().all(|t| consul.services().keys().any(|id| id.starts_with(t.as_str())))
    })
    .await;
    shutdown.cancel();
    let _ = tokio::time::timeout(WAIT, daemon).await;
}
