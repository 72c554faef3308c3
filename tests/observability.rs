//! What an operator watches, through the binary: `/metrics` in strict
//! Prometheus text with counters that move as events are fed, `/ready` and
//! `/health`, systemd's notify socket, logs that never show a secret (text
//! and JSON) and carry app and task ids, `/api/status` with `?app=` and the
//! same model from `switchboard state`, and the first errors as one line.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Daemon, eventually, eventually_async, get, parse_prometheus, s};
use serde_json::{Value, json};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::kong::{KongSim, KongSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions};

const WAIT: Duration = Duration::from_secs(30);

fn web_app(id: &str) -> Value {
    json!({
        "id": id,
        "labels": {"consul": "", "kong.hosts": "shop.example.com", "kong.paths": "/"},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}]
    })
}

async fn marathon() -> MarathonSim {
    MarathonSim::start(ModelOptions { keepalive: Duration::from_millis(300), ..Default::default() })
        .await
        .expect("marathon sim")
}

fn consul_ids(consul: &ConsulSim, app: &str) -> usize {
    consul.services().values().filter(|v| v["Meta"]["marathon_app_id"] == app).count()
}

async fn metrics(base: &str) -> BTreeMap<String, f64> {
    let (code, text) = get(&format!("{base}/metrics")).await;
    assert_eq!(code, 200, "{text}");
    parse_prometheus(&text)
}

fn at(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    m.get(series).copied().unwrap_or(0.0)
}

async fn ready(base: &str) -> (u16, Value) {
    let (code, body) = get(&format!("{base}/ready")).await;
    (code, serde_json::from_str(&body).unwrap_or(Value::Null))
}

#[test]
fn the_strict_reader_rejects_what_prometheus_rejects() {
    let good = "# HELP a_total x\n# TYPE a_total counter\na_total{k=\"v\"} 1\n";
    assert_eq!(parse_prometheus(good).get("a_total{k=\"v\"}"), Some(&1.0));
    for bad in [
        "a_total 1\n",                                                                    // no TYPE
        "# TYPE a_total counter\na_total{k=v} 1\n",                                       // unquoted label
        "# TYPE a_total counter\na_total one\n",                                          // not a number
        "# TYPE h histogram\nh_bucket{le=\"1\"} 2\nh_bucket{le=\"+Inf\"} 1\nh_count 1\n", // not cumulative
        "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 2\nh_count 3\n",                       // +Inf != count
    ] {
        assert!(std::panic::catch_unwind(|| parse_prometheus(bad)).is_err(), "accepted: {bad:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_parse_as_prometheus_text_and_counters_move_as_events_are_fed() {
    let marathon = marathon().await;
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        &dir.path().join("data"),
        &s(&["--marathon", marathon.url().as_str(), "--consul", &consul.url()]),
    );
    let base = d.status_url().await;
    eventually_async("ready", WAIT, || async { ready(&base).await.0 == 200 }).await;

    let before = metrics(&base).await;
    assert_eq!(at(&before, "switchboard_stream_connected"), 1.0);
    assert_eq!(at(&before, &format!("switchboard_build_info{{version=\"{}\"}}", env!("CARGO_PKG_VERSION"))), 1.0);
    assert!(at(&before, "switchboard_last_resync_timestamp_seconds") > 1.6e9, "{before:?}");
    assert!(at(&before, "switchboard_resync_duration_seconds_count") >= 1.0);
    assert_eq!(at(&before, "switchboard_ready"), 1.0);

    marathon.emit(&marathon.model().deploy(web_app("/shop/web"), 2));
    eventually("registered in consul", WAIT, || consul_ids(&consul, "/shop/web") == 2).await;
    marathon.emit_raw("event: status_update_event\r\ndata: {\"taskId\": \r\n\r\n");
    eventually_async("counters moved", WAIT, || async {
        let m = metrics(&base).await;
        at(&m, "switchboard_events_total{type=\"status_update_event\"}")
            >= at(&before, "switchboard_events_total{type=\"status_update_event\"}") + 2.0
            && at(&m, "switchboard_ops_total{backend=\"consul\",op=\"register\",result=\"ok\"}") >= 2.0
            && at(&m, "switchboard_running_to_registered_seconds_count{backend=\"consul\"}") >= 2.0
            && at(&m, "switchboard_op_seconds_count{backend=\"consul\",op=\"register\"}") >= 2.0
            && at(&m, "switchboard_registrations{backend=\"consul\"}") == 2.0
            && at(&m, "switchboard_events_skipped_total{reason=\"malformed\"}") >= 1.0
            && at(&m, "switchboard_last_event_timestamp_seconds") > 1.6e9
    })
    .await;

    // A dropped stream: counted, and the reconnect too.
    marathon.disconnect_all();
    eventually_async("reconnected", WAIT, || async {
        let m = metrics(&base).await;
        at(&m, "switchboard_stream_reconnects_total") >= 1.0
            && at(&m, "switchboard_stream_total{what=\"disconnected\"}") >= 1.0
            && at(&m, "switchboard_stream_connected") == 1.0
            && at(&m, "switchboard_resync_duration_seconds_count")
                > at(&before, "switchboard_resync_duration_seconds_count")
    })
    .await;
    let (_, body) = get(&format!("{base}/api/status")).await;
    let model: Value = serde_json::from_str(&body).expect("status json");
    assert!(model["stream"]["reconnects"].as_u64() >= Some(1), "{}", model["stream"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_is_503_until_the_first_resync_then_200_and_503_while_the_stream_is_down() {
    let marathon = marathon().await;
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul");
    marathon.set_failing(Some(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        &dir.path().join("data"),
        &s(&["--marathon", marathon.url().as_str(), "--consul", &consul.url()]),
    );
    let base = d.status_url().await;
    assert_eq!(get(&format!("{base}/health")).await.0, 200);
    assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    let (code, body) = ready(&base).await;
    assert_eq!(code, 503, "{body}");
    // It stays 503 after a resync was tried and failed, and says why.
    eventually_async("the failed resync named", WAIT, || async {
        let (code, body) = ready(&base).await;
        code == 503
            && body["ready"] == false
            && body["reasons"].as_array().is_some_and(|r| {
                r.iter().any(|r| {
                    r.as_str().is_some_and(|t| t.starts_with("first resync not done yet: ") && t.contains("503"))
                }) && r.iter().any(|r| r.as_str().is_some_and(|t| t.starts_with("event stream not connected")))
            })
    })
    .await;

    marathon.set_failing(None);
    eventually_async("ready once Marathon answers", WAIT, || async { ready(&base).await.0 == 200 }).await;
    assert_eq!(ready(&base).await.1["reasons"], json!([]));

    // The stream drops and cannot come back.
    marathon.set_failing(Some(503));
    marathon.disconnect_all();
    eventually_async("not ready while the stream is down", WAIT, || async {
        let (code, body) = ready(&base).await;
        code == 503
            && body["reasons"].as_array().is_some_and(|r| {
                r.iter().any(|r| r.as_str().is_some_and(|t| t.starts_with("event stream not connected")))
            })
    })
    .await;
    assert_eq!(get(&format!("{base}/health")).await.0, 200, "alive while not ready");

    marathon.set_failing(None);
    eventually_async("ready again", WAIT, || async { ready(&base).await.0 == 200 }).await;
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn systemd_hears_ready_once_ready_and_the_watchdog_is_fed() {
    use std::os::unix::net::UnixDatagram;
    let marathon = marathon().await;
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul");
    marathon.set_failing(Some(503));
    let dir = tempfile::tempdir().expect("tempdir");
    let sock_path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&sock_path).expect("notify socket");
    sock.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
    let sock_env = sock_path.display().to_string();
    let d = Daemon::start_with_env(
        &dir.path().join("data"),
        &s(&["--marathon", marathon.url().as_str(), "--consul", &consul.url()]),
        &[("NOTIFY_SOCKET", &sock_env), ("WATCHDOG_USEC", "200000")],
    );
    let base = d.status_url().await;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let reader = std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match sock.recv(&mut buf) {
                Ok(n) => {
                    if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut => {
                    if tx.is_closed() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    });
    // The watchdog is fed while not ready; READY=1 waits for readiness.
    let mut got = Vec::new();
    let deadline = std::time::Instant::now() + WAIT;
    while !got.iter().any(|m: &String| m.contains("WATCHDOG=1")) {
        assert!(std::time::Instant::now() < deadline, "no WATCHDOG=1: {got:?}");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            got.push(m);
        }
    }
    assert!(!got.iter().any(|m| m.contains("READY=1")), "READY=1 before ready: {got:?}");
    assert_eq!(ready(&base).await.0, 503);
    marathon.set_failing(None);
    loop {
        assert!(std::time::Instant::now() < deadline, "no READY=1: {got:?}");
        if let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            if m.contains("READY=1") {
                break;
            }
            got.push(m);
        }
    }
    assert_eq!(ready(&base).await.0, 200, "READY=1 came with /ready answering 200");
    drop(rx);
    drop(d);
    let _ = reader.join();
}

const MARATHON_PASSWORD: &str = "m4rathon-Pa55w0rd";
const CONSUL_TOKEN: &str = "c0nsul-wr0ng-t0ken-9d1e";
const KONG_TOKEN: &str = "k0ng-t0ken-7f3a";

async fn secrets_stay_out_of(format: &str) {
    let marathon = MarathonSim::start(ModelOptions {
        keepalive: Duration::from_millis(300),
        basic_auth: Some(("ops".into(), MARATHON_PASSWORD.into())),
        ..Default::default()
    })
    .await
    .expect("marathon");
    // Consul wants another token: every call is refused, with errors to log.
    let consul = ConsulSim::start(ConsulSimOptions { acl_token: Some("the-right-one".into()), ..Default::default() })
        .await
        .expect("consul");
    let kong = KongSim::start(KongSimOptions {
        admin_token: Some(("Kong-Admin-Token".into(), KONG_TOKEN.into())),
        ..Default::default()
    })
    .await
    .expect("kong");
    let auth = format!("ops:{MARATHON_PASSWORD}");
    let env = [
        ("SWITCHBOARD_MARATHON_AUTH", auth.as_str()),
        ("SWITCHBOARD_CONSUL_TOKEN", CONSUL_TOKEN),
        ("SWITCHBOARD_KONG_TOKEN", KONG_TOKEN),
        ("SWITCHBOARD_LOG", "trace"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let args = s(&[
        "--log-format",
        format,
        "--marathon",
        marathon.url().as_str(),
        "--consul",
        &consul.url(),
        "--kong",
        kong.url().as_str(),
    ]);
    let d = Daemon::start_with_env(&dir.path().join("data"), &args, &env);
    eventually("subscribed", WAIT, || marathon.subscribers() > 0).await;
    marathon.emit(&marathon.model().deploy(web_app("/shop/web"), 2));
    eventually("kong applied, consul refused", WAIT, || {
        let log = d.log();
        log.matches("\"applied\"").count() + log.matches(" applied").count() >= 2 && log.contains("refused")
    })
    .await;

    // The CLI's own output too: reconcile --once against the same world.
    let data = dir.path().join("once").display().to_string();
    let mut once = s(&["reconcile", "--once", "--log-format", format, "--data-dir", &data]);
    once.extend(args[2..].iter().cloned());
    let env_owned: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    let out = common::run_cli_env(once, env_owned).await;
    let cli = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(
        cli.contains("consul refused the credentials (HTTP 403): check SWITCHBOARD_CONSUL_TOKEN"),
        "the refused token is one clear line: {cli}"
    );

    let log = d.log();
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(&auth);
    for (what, secret) in [
        ("marathon password", MARATHON_PASSWORD),
        ("basic header", basic.as_str()),
        ("consul token", CONSUL_TOKEN),
        ("kong token", KONG_TOKEN),
    ] {
        assert!(!log.contains(secret), "{format} log shows the {what}:\n{log}");
        assert!(!cli.contains(secret), "{format} CLI output shows the {what}:\n{cli}");
    }
    assert!(log.lines().count() > 20, "the trace log is suspiciously short:\n{log}");
    if format == "json" {
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
            assert!(v["timestamp"].is_string() && v["level"].is_string(), "{line}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_reach_text_logs() {
    secrets_stay_out_of("text").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_and_passwords_never_reach_json_logs() {
    secrets_stay_out_of("json").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_json_line_about_an_instance_carries_app_and_task_ids() {
    let marathon = marathon().await;
    let kong = KongSim::start(KongSimOptions::default()).await.expect("kong");
    let dir = tempfile::tempdir().expect("tempdir");
    let d = Daemon::start(
        &dir.path().join("data"),
        &s(&["--log-format", "json", "--marathon", marathon.url().as_str(), "--kong", kong.url().as_str()]),
    );
    eventually("subscribed", WAIT, || marathon.subscribers() > 0).await;
    marathon.emit(&marathon.model().deploy(web_app("/shop/web"), 2));
    let tasks = marathon.model().task_ids("/shop/web");
    let lines = || -> Vec<Value> { d.log().lines().filter_map(|l| serde_json::from_str(l).ok()).collect() };
    eventually("both applied", WAIT, || lines().iter().filter(|v| v["fields"]["message"] == "applied").count() >= 2)
        .await;
    let all = lines();
    // The engine's lines and the backend's own, inside the op's span.
    let applied: Vec<&Value> = all.iter().filter(|v| v["fields"]["message"] == "applied").collect();
    for v in &applied {
        assert_eq!(v["fields"]["app_id"], "/shop/web", "{v}");
        assert!(v["fields"]["task_id"].as_str().is_some_and(|t| tasks.iter().any(|x| x == t)), "{v}");
    }
    let backend: Vec<&Value> = all.iter().filter(|v| v["fields"]["message"] == "registered").collect();
    assert!(!backend.is_empty(), "kong logs its registrations");
    for v in backend {
        assert_eq!(v["span"]["app_id"], "/shop/web", "{v}");
        assert!(v["span"]["task_id"].as_str().is_some_and(|t| tasks.iter().any(|x| x == t)), "{v}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_status_filters_by_app_and_state_prints_the_same_model() {
    let marathon = marathon().await;
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = Daemon::start(&data, &s(&["--marathon", marathon.url().as_str(), "--consul", &consul.url()]));
    eventually("subscribed", WAIT, || marathon.subscribers() > 0).await;
    marathon.emit(&marathon.model().deploy(web_app("/shop/web"), 2));
    marathon.emit(&marathon.model().deploy(web_app("/admin"), 1));
    eventually("registered", WAIT, || consul_ids(&consul, "/shop/web") == 2 && consul_ids(&consul, "/admin") == 1)
        .await;
    let base = d.status_url().await;
    let json = |path: String| async move { serde_json::from_str::<Value>(&get(&path).await.1).expect("json") };
    let apps = |m: &Value| -> Vec<String> {
        m["apps"].as_array().into_iter().flatten().filter_map(|a| a["app_id"].as_str().map(str::to_owned)).collect()
    };

    let web = json(format!("{base}/api/status?app=shop")).await;
    assert_eq!(apps(&web), ["/shop/web"]);
    assert!(web["instances"].as_array().is_some_and(|i| i.len() == 2 && i.iter().all(|i| i["app_id"] == "/shop/web")));
    assert!(web["ledger"]["consul"].as_array().is_some_and(|l| l.len() == 2), "{}", web["ledger"]);
    assert_eq!(web["totals"]["instances"], 3, "totals count everything");
    assert_eq!(web["instances"][0]["backends"]["consul"]["state"], "registered");

    // `switchboard state` asks the daemon and prints the same model; /state is an alias.
    let listen = base.trim_start_matches("http://").to_owned();
    let out =
        common::run_cli(s(&["state", "--json", "--listen", &listen, "--data-dir", &data.display().to_string()])).await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let state: Value = serde_json::from_slice(&out.stdout).expect("state json");
    let all = json(format!("{base}/api/status")).await;
    let alias = json(format!("{base}/state")).await;
    for m in [&state, &alias] {
        assert_eq!(apps(m), ["/admin", "/shop/web"]);
        assert_eq!(m["instances"], all["instances"]);
        assert_eq!(m["stream"]["endpoint"], all["stream"]["endpoint"]);
        assert_eq!(m["resync"]["first_done"], true);
    }
    let text = common::run_cli(s(&["state", "--listen", &listen, "--data-dir", &data.display().to_string()])).await;
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(text.contains("stream: connected to") && text.contains("consul=registered"), "{text}");

    // The page pages and searches the same model.
    let (code, page) = get(&format!("{base}/?per_page=1&page=2")).await;
    assert_eq!(code, 200);
    assert!(
        page.contains("page 2 of 2") && page.contains("data-app=\"/shop/web\"") && !page.contains("<h2>/admin</h2>")
    );
    let (_, page) = get(&format!("{base}/?app=adm")).await;
    assert!(page.contains("<h2>/admin</h2>") && !page.contains("<h2>/shop/web</h2>"), "{page}");
    assert!(!page.contains("src=\"http") && !page.contains("<script"), "no external assets, no script");
}

fn one_line(out: &std::process::Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).trim_end().to_owned();
    assert_eq!(err.lines().count(), 1, "one line, not a cause chain:\n{err}");
    err
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_errors_read_as_one_line() {
    let marathon = marathon().await;
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul");
    let dir = tempfile::tempdir().expect("tempdir");
    let data = dir.path().join("data");
    let d = Daemon::start(&data, &s(&["--marathon", marathon.url().as_str(), "--consul", &consul.url()]));
    let _ = d.status_url().await;
    let data = data.display().to_string();

    // A second daemon on the same data dir: who holds it, and where to look.
    let out = common::run_cli(s(&[
        "run",
        "--data-dir",
        &data,
        "--listen",
        "127.0.0.1:0",
        "--marathon",
        marathon.url().as_str(),
        "--consul",
        &consul.url(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = one_line(&out);
    assert!(err.contains(&format!("another process (pid {})", d.pid())), "{err}");
    assert!(err.contains("holds the data dir") && err.contains("switchboard state"), "{err}");
    let out =
        common::run_cli(s(&["reconcile", "--once", "--data-dir", &data, "--marathon", marathon.url().as_str()])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(one_line(&out).contains(&format!("pid {}", d.pid())));

    // Marathon unreachable.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let other = dir.path().join("other").display().to_string();
    let out = common::run_cli(s(&[
        "reconcile",
        "--once",
        "--data-dir",
        &other,
        "--marathon",
        &format!("http://{closed}"),
        "--consul",
        &consul.url(),
    ]))
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = one_line(&out);
    assert!(err.contains(&format!("cannot reach Marathon at {closed}")) && err.contains("Connection refused"), "{err}");

    // Marathon refusing the credentials.
    let guarded =
        MarathonSim::start(ModelOptions { basic_auth: Some(("ops".into(), "right".into())), ..Default::default() })
            .await
            .expect("marathon with auth");
    let out = common::run_cli_env(
        s(&[
            "reconcile",
            "--once",
            "--data-dir",
            &other,
            "--marathon",
            guarded.url().as_str(),
            "--consul",
            &consul.url(),
        ]),
        vec![("SWITCHBOARD_MARATHON_AUTH".into(), "ops:wrong-pa55".into())],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = one_line(&out);
    assert!(err.contains("refused the credentials (HTTP 401): check SWITCHBOARD_MARATHON_AUTH"), "{err}");
    assert!(!err.contains("wrong-pa55"), "{err}");

    // `reconcile --once` on a terminal-less stderr: no progress bar; a summary per backend.
    let out = common::run_cli(s(&[
        "reconcile",
        "--once",
        "--data-dir",
        &other,
        "--marathon",
        marathon.url().as_str(),
        "--consul",
        &consul.url(),
    ]))
    .await;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.stderr.is_empty(), "no progress bar without a terminal: {}", String::from_utf8_lossy(&out.stderr));
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("summary:") && table.contains("REGISTERED") && table.contains("consul"), "{table}");
}

#[tokio::test]
async fn the_demo_prints_its_status_page_and_serves_it_while_the_steps_run() {
    let out = common::run_cli(s(&["demo"])).await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(stdout.contains("status page http://127.0.0.1:"), "{stdout}");
    // After every step the demo reads its own page: it was up all along.
    // Six steps: the app's five and the pod's (issue 20).
    assert_eq!(stdout.matches("instances, 0 pending, registered: consul").count(), 6, "{stdout}");
}

/// Runs `switchboard <args>` with stderr and stdout on a pseudo-terminal
/// (util-linux `script`), returning what the terminal showed.
async fn on_a_terminal(args: Vec<String>) -> String {
    let cmd = std::iter::once(common::BIN.to_owned()).chain(args).collect::<Vec<_>>().join(" ");
    tokio::task::spawn_blocking(move || {
        let out = std::process::Command::new("script")
            .args(["-qec", &cmd, "/dev/null"])
            .env_remove("SWITCHBOARD_CONSUL_URL")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("util-linux `script` runs a command on a pseudo-terminal");
        String::from_utf8_lossy(&out.stdout).into_owned()
    })
    .await
    .expect("join")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconcile_once_draws_a_progress_bar_only_on_a_terminal_and_never_with_json() {
    let marathon = marathon().await;
    let consul = ConsulSim::start(ConsulSimOptions::default()).await.expect("consul");
    for i in 0..3 {
        let _ = marathon.model().deploy(web_app(&format!("/shop/app-{i}")), 2);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let args = |data: &str, json: bool| {
        let mut a = s(&[
            "reconcile",
            "--once",
            "--data-dir",
            data,
            "--marathon",
            marathon.url().as_str(),
            "--consul",
            &consul.url(),
        ]);
        if json {
            a.push("--json".into());
        }
        a
    };
    let tty = on_a_terminal(args(&dir.path().join("a").display().to_string(), false)).await;
    assert!(tty.contains("resync: Marathon's snapshot"), "no progress bar on a terminal:\n{tty}");
    assert!(tty.contains("summary:") && tty.contains("REGISTERED"), "{tty}");
    assert_eq!(consul_ids(&consul, "/shop/app-0"), 2);
    let json = on_a_terminal(args(&dir.path().join("b").display().to_string(), true)).await;
    assert!(!json.contains("resync: Marathon's snapshot"), "a progress bar with --json:\n{json}");
    assert!(json.contains("\"summary\""), "{json}");
}
