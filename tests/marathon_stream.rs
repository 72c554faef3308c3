//! The SSE consumer and REST client against the in-process Marathon.

use std::time::Duration;

use serde_json::json;
use switchboard::marathon::client::{ClientConfig, Error, MarathonClient};
use switchboard::marathon::event::Event;
use switchboard::marathon::stream::{StreamConfig, StreamItem, run};
use switchboard::model::{AppId, TaskState};
use switchboard::secret::Secret;
use switchboard::sim::marathon::{MarathonSim, ModelOptions};
use tokio::sync::mpsc::Receiver;
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
    rx: Receiver<StreamItem>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    fn start(cfg: StreamConfig) -> Running {
        // Roomy: a test that reads late never makes the stream wait.
        let (tx, rx) = tokio::sync::mpsc::channel(65_536);
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
    // As the daemon does: the attach must pass the filter, or the connection never counts.
    cfg.event_types = vec!["event_stream_attached".into(), "status_update_event".into(), "app_terminated_event".into()];
    let mut s = Running::start(cfg);
    s.connected().await;
    wait_for("subscriber", || sim.subscribers() == 1).await;

    let evs = sim.model().deploy(web(), 1);
    sim.emit(&evs);
    let item = s
        .until(
            "events",
            |i| matches!(i, StreamItem::Events { event_type, .. } if event_type != "event_stream_attached"),
        )
        .await;
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

/// A hand-made `/v2/events` endpoint for the behaviours the simulator does
/// not script: each request is answered by `answer` (status, body).
async fn fake_marathon(
    answer: impl Fn(&axum::http::HeaderMap) -> (u16, String) + Send + Sync + 'static,
) -> (url::Url, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use axum::response::IntoResponse;
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let answer = std::sync::Arc::new(answer);
    let counter = hits.clone();
    let handler = move |headers: axum::http::HeaderMap| {
        let answer = answer.clone();
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let (status, body) = answer(&headers);
            let status = axum::http::StatusCode::from_u16(status).unwrap();
            (status, [("content-type", "text/event-stream;charset=UTF-8")], body).into_response()
        }
    };
    let app = axum::Router::new().route("/v2/events", axum::routing::get(handler.clone())).route(
        "/v2/apps",
        axum::routing::get(move |h: axum::http::HeaderMap| {
            let handler = handler.clone();
            async move {
                let r = handler(h).await;
                if r.status() == axum::http::StatusCode::OK {
                    (axum::http::StatusCode::OK, r#"{"apps":[]}"#).into_response()
                } else {
                    r
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = url::Url::parse(&format!("http://{}", listener.local_addr().unwrap())).unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hits)
}

const ATTACHED: &str = "event: event_stream_attached\r\ndata: {\"remoteAddress\":\"127.0.0.1\",\"eventType\":\"event_stream_attached\",\"timestamp\":\"2018-06-14T09:12:04.112Z\"}\r\n\r\n";

#[tokio::test]
async fn a_200_that_ends_before_the_attach_is_a_failed_connect_with_backoff() {
    // A freshly elected leader that is not ready yet accepts and closes.
    let ready = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let r = ready.clone();
    let (url, hits) = fake_marathon(move |_| {
        (200, if r.load(std::sync::atomic::Ordering::SeqCst) { ATTACHED.to_owned() } else { String::new() })
    })
    .await;
    let mut cfg = stream_cfg(vec![url]);
    cfg.backoff_min = Duration::from_millis(20);
    cfg.backoff_max = Duration::from_millis(400);
    let mut s = Running::start(cfg);
    wait_for("several attempts", || hits.load(std::sync::atomic::Ordering::SeqCst) >= 4).await;
    // Not a connection: nothing reported, so no resync is started on it.
    assert!(s.rx.try_recv().is_err(), "an early EOF was reported as a connection");
    // Backing off, not spinning: 20, 40, 80, 160, 320, 400 ms ... (each
    // jittered to half at least) allow only a handful in a second.
    let before = hits.load(std::sync::atomic::Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let in_a_second = hits.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert!(in_a_second <= 8, "{in_a_second} attempts in one second: spinning");
    // Once the leader is ready the attach comes, and with it Connected.
    ready.store(true, std::sync::atomic::Ordering::SeqCst);
    s.connected().await;
    s.stop().await;
}

#[tokio::test]
async fn a_refused_dcos_token_is_read_again_from_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("token");
    std::fs::write(&path, "token=expired\n").unwrap();
    let auth =
        switchboard::secret::SecretSource::File { var: "SWITCHBOARD_MARATHON_AUTH_FILE".into(), path: path.clone() }
            .read()
            .unwrap();
    let (url, hits) = fake_marathon(|h| match h.get("authorization").and_then(|v| v.to_str().ok()) {
        Some("token=fresh") => (200, ATTACHED.to_owned()),
        _ => (401, "{\"message\":\"Unauthorized\"}".to_owned()),
    })
    .await;
    let mut cfg = stream_cfg(vec![url.clone()]);
    cfg.auth = Some(auth.clone());
    let mut s = Running::start(cfg);
    wait_for("refusals", || hits.load(std::sync::atomic::Ordering::SeqCst) >= 2).await;
    assert!(s.rx.try_recv().is_err());
    // The token is rotated in its file: the next 401 picks it up.
    std::fs::write(&path, "token=fresh\n").unwrap();
    s.connected().await;
    s.stop().await;

    // The REST client does the same, once per refusal.
    std::fs::write(&path, "token=expired").unwrap();
    let client = MarathonClient::new(ClientConfig {
        urls: vec![url],
        auth: Some(auth.reread().unwrap()),
        timeout: Duration::from_secs(2),
    })
    .unwrap();
    assert!(matches!(client.snapshot().await.unwrap_err(), Error::Status { status: 401, .. }));
    std::fs::write(&path, "token=fresh").unwrap();
    assert!(client.snapshot().await.unwrap().apps.is_empty());
}

#[tokio::test]
async fn no_leader_502_is_transient_and_megabyte_lines_pass() {
    let sim = MarathonSim::start(ModelOptions::default()).await.unwrap();
    // During an election Marathon answers 502 "Could not determine the current leader".
    sim.set_failing(Some(502));
    let mut s = Running::start(stream_cfg(vec![sim.url()]));
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(s.rx.try_recv().is_err());
    sim.set_failing(None);
    s.connected().await;
    wait_for("subscriber", || sim.subscribers() == 1).await;

    // A heavy plan carries the whole root group twice: one data line of megabytes.
    let apps: Vec<_> = (0..6000)
        .map(|i| json!({"id": format!("/big/app-{i:04}"), "labels": {"consul": "x", "pad": "p".repeat(200)}, "version": "2018-06-14T09:12:03.480Z"}))
        .collect();
    let target = json!({"id": "/", "apps": [], "groups": [{"id": "/big", "apps": apps}]});
    let data = json!({"plan": {"id": "p", "original": target, "target": target, "steps": []},
        "currentStep": {"actions": []}, "eventType": "deployment_step_success", "timestamp": "2018-06-14T09:12:03.480Z"})
    .to_string();
    assert!(data.len() > 2 * 1024 * 1024, "{} bytes", data.len());
    sim.emit_raw(&format!("event: deployment_step_success\r\ndata: {data}\r\n\r\n"));
    let item = s
        .until(
            "heavy plan",
            |i| matches!(i, StreamItem::Events { event_type, .. } if event_type == "deployment_step_success"),
        )
        .await;
    let StreamItem::Events { events, .. } = item else { unreachable!() };
    assert_eq!(events.iter().filter(|e| matches!(e, Event::Spec { .. })).count(), 6000);
    s.stop().await;
}
