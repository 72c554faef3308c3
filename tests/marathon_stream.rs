//! The SSE consumer and REST client against the in-process Marathon.

use std::time::Duration;

use serde_json::json;
use switchboard::marathon::client::{ClientConfig, Error, MarathonClient};
use switchboard::marathon::event::Event;
use switchboard::marathon::stream::{StreamConfig, StreamItem, run};
use switchboard::model::{AppId, TaskState};
use switchboard::secret::Secret;
use switchboard::sim::marathon::{MarathonSim, ModelOptions};
use tokio::sync::mpsc::UnboundedReceiver;
use tokio_util::sync::CancellationToken;

fn web() -> serde_json::Value {
    json!({"id": "/shop/web", "labels": {"consul": "web"}, "portDefinitions": [{"port": 10101, "name": "http"}]})
}

fn stream_cfg(urls: Vec<url::Url>) -> StreamConfig {
    StreamConfig {
        urls,
        backoff_min: Duration::from_millis(20),
        backoff_max: Duration::from_millis(100),
        ..StreamConfig::default()
    }
}

struct Running {
    rx: UnboundedReceiver<StreamItem>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(cfg: StreamConfig) -> Running {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stop = CancellationToken::new();
        let task = tokio::spawn(run(cfg, tx, stop.clone()));
        Running { rx, stop, task }
    }

    /// The next item matching `want`, skipping others, within 5 s.
    async fn until(&mut self, what: &str, want: impl Fn(&StreamItem) -> bool) -> StreamItem {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(item)) if want(&item) => return item,
                Ok(Some(_)) => continue,
                Ok(None) => panic!("stream ended waiting for {what}"),
                Err(_) => panic!("timed out waiting for {what}"),
            }
        }
    }

    async fn connected(&mut self) -> String {
        match self.until("Connected", |i| matches!(i, StreamItem::Connected { .. })).await {
            StreamItem::Connected { endpoint } => endpoint,
            _ => unreachable!(),
        }
    }

    async fn stop(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(2), self.task).await.unwrap().unwrap();
    }
}

async fn wait_for(what: &str, cond: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn filtered_typed_events_survive_garbage() {
    let sim = MarathonSim::start(ModelOptions::default()).await.unwrap();
    let mut cfg = stream_cfg(vec![sim.url()]);
    cfg.event_types = vec!["status_update_event".into(), "app_terminated_event".into()];
    let mut s = Running::start(cfg);
    s.connected().await;
    wait_for("subscriber", || sim.subscribers() == 1).await;

    let evs = sim.model().deploy(web(), 1);
    sim.emit(&evs);
    let item = s.until("events", |i| matches!(i, StreamItem::Events { .. })).await;
    // The filter holds back everything but status updates (and terminations).
    let StreamItem::Events { event_type, events } = item else { unreachable!() };
    assert_eq!(event_type, "status_update_event");
    let Event::Status(f) = &events[0] else { panic!("{events:?}") };
    assert_eq!((f.state, f.app_id.as_str()), (TaskState::Staging, "/shop/web"));

    sim.emit_raw("event: status_update_event\r\ndata: {\"taskId\": broken\r\n\r\n");
    sim.emit_raw("event: brand_new_event\r\ndata: {\"eventType\":\"brand_new_event\"}\r\n\r\n");
    let evs = sim.model().destroy("/shop/web");
    sim.emit(&evs);
    let mut seen = Vec::new();
    loop {
        let item = s.until("items", |_| true).await;
        match item {
            StreamItem::Malformed { event_type, .. } => seen.push(format!("malformed {event_type}")),
            StreamItem::Events { events, .. } => {
                for e in events {
                    match e {
                        Event::Unknown { event_type } => seen.push(format!("unknown {event_type}")),
                        Event::AppStopped { app_id, .. } => {
                            seen.push(format!("stopped {app_id}"));
                        }
                        Event::Status(f) => seen.push(format!("status {}", f.state)),
                        other => panic!("filtered type leaked: {other:?}"),
                    }
                }
            }
            other => panic!("{other:?}"),
        }
        if seen.last().is_some_and(|l| l.starts_with("stopped")) {
            break;
        }
    }
    let after_garbage: Vec<_> = seen.iter().skip_while(|l| !l.starts_with("malformed")).map(String::as_str).collect();
    assert_eq!(
        after_garbage,
        [
            "malformed status_update_event",
            "unknown brand_new_event",
            "status TASK_KILLING",
            "status TASK_KILLED",
            "stopped /shop/web"
        ]
    );
    s.stop().await;
}

#[tokio::test]
async fn reconnects_after_disconnect_and_after_silence() {
    let sim = MarathonSim::start(ModelOptions::default()).await.unwrap();
    let mut cfg = stream_cfg(vec![sim.url()]);
    cfg.idle_timeout = Duration::from_millis(300);
    let mut s = Running::start(cfg);
    s.connected().await;
    wait_for("subscriber", || sim.subscribers() == 1).await;

    sim.disconnect_all();
    s.until("Disconnected", |i| matches!(i, StreamItem::Disconnected { .. })).await;
    s.connected().await;
    wait_for("resubscribed", || sim.subscribers() == 1).await;

    sim.set_silent(true);
    let item = s.until("idle", |i| matches!(i, StreamItem::Disconnected { .. })).await;
    assert_eq!(item, StreamItem::Disconnected { reason: "idle".into() });
    s.connected().await;

    // Still a working stream after both reconnects.
    sim.set_silent(false);
    wait_for("subscriber", || sim.subscribers() >= 1).await;
    let evs = sim.model().deploy(web(), 1);
    sim.emit(&evs);
    s.until(
        "spec",
        |i| matches!(i, StreamItem::Events { events, .. } if matches!(events.first(), Some(Event::Spec { .. }))),
    )
    .await;
    s.stop().await;
}

#[tokio::test]
async fn keepalives_keep_an_idle_stream_alive() {
    let opts = ModelOptions { keepalive: Duration::from_millis(50), ..ModelOptions::default() };
    let sim = MarathonSim::start(opts).await.unwrap();
    let mut cfg = stream_cfg(vec![sim.url()]);
    cfg.idle_timeout = Duration::from_millis(300);
    let mut s = Running::start(cfg);
    s.connected().await;
    // Well past the idle timeout with only keepalives on the wire.
    let r = tokio::time::timeout(
        Duration::from_millis(900),
        s.until("disconnect", |i| matches!(i, StreamItem::Disconnected { .. })),
    )
    .await;
    assert!(r.is_err(), "disconnected despite keepalives: {r:?}");
    s.stop().await;
}

#[tokio::test]
async fn follows_redirect_to_leader_with_auth() {
    let opts = ModelOptions { basic_auth: Some(("ops".into(), "s3cret".into())), ..ModelOptions::default() };
    let leader = MarathonSim::start(opts).await.unwrap();
    let follower = MarathonSim::start_redirecting(leader.url()).await.unwrap();
    leader.model().deploy(web(), 2);

    let mut cfg = stream_cfg(vec![follower.url()]);
    cfg.auth = Some(Secret::new("ops:s3cret"));
    let mut s = Running::start(cfg);
    let endpoint = s.connected().await;
    assert_eq!(endpoint, format!("127.0.0.1:{}", leader.url().port().unwrap()));
    s.stop().await;

    let client = MarathonClient::new(ClientConfig {
        urls: vec![follower.url()],
        auth: Some(Secret::new("ops:s3cret")),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    let snap = client.snapshot().await.unwrap();
    assert_eq!(snap.apps[0].tasks.len(), 2);

    // Without credentials the leader refuses, and the error hides the secret.
    let anon =
        MarathonClient::new(ClientConfig { urls: vec![follower.url()], auth: None, timeout: Duration::from_secs(2) })
            .unwrap();
    let err = anon.snapshot().await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 401, .. }), "{err}");
}

#[tokio::test]
async fn client_snapshot_app_404_and_failover() {
    let sim = MarathonSim::start(ModelOptions::default()).await.unwrap();
    sim.model().deploy(web(), 2);
    // A port nobody listens on: bind, read it, close.
    let refused = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        url::Url::parse(&format!("http://{}", l.local_addr().unwrap())).unwrap()
    };
    let client = MarathonClient::new(ClientConfig {
        urls: vec![refused, sim.url()],
        auth: None,
        timeout: Duration::from_secs(2),
    })
    .unwrap();

    let snap = client.snapshot().await.unwrap();
    assert!(snap.broken.is_empty());
    let app = &snap.apps[0];
    assert_eq!(app.spec.id.as_str(), "/shop/web");
    assert_eq!(app.spec.labels["consul"], "web");
    let want: Vec<String> = sim.model().task_ids("/shop/web");
    let got: Vec<String> = app.tasks.iter().map(|t| t.facts.task_id.to_string()).collect();
    assert_eq!(got, want);
    assert!(app.tasks.iter().all(|t| t.facts.at == snap.as_of && t.facts.state == TaskState::Running));
    assert_eq!(sim.snapshot_fetches(), 1);

    let one = client.app(&AppId::parse("/shop/web").unwrap()).await.unwrap().unwrap();
    assert_eq!(one.spec, app.spec);
    assert_eq!(sim.app_fetches("/shop/web"), 1);
    assert!(client.app(&AppId::parse("/nope").unwrap()).await.unwrap().is_none());

    sim.set_failing(Some(503));
    let err = client.snapshot().await.unwrap_err();
    assert!(matches!(err, Error::Status { status: 503, .. }), "{err}");
    assert!(err.to_string().contains("/v2/apps"), "{err}");
}
