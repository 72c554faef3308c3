//! What an operator or an orchestrator runs against the release binary:
//! `switchboard --version` names the version and the commit it was built
//! from, and `switchboard probe URL` is a health check without curl (exit 0
//! on 2xx, 1 with one line of reason otherwise, bounded by `--timeout`).
//!
//! Every server here is a tiny one on 127.0.0.1 port 0 answering a fixed
//! HTTP response, so each outcome is certain.

mod common;

use std::process::Command;
use std::time::Duration;

use common::{run_cli, s};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Serves `response` (a whole HTTP/1.1 response) to every connection; with
/// `None` it accepts and never answers.
async fn server(response: Option<&'static str>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((mut sock, _)) = listener.accept().await {
            match response {
                Some(r) => {
                    tokio::spawn(async move {
                        let mut buf = [0u8; 4096];
                        let _ = sock.read(&mut buf).await;
                        let _ = sock.write_all(r.as_bytes()).await;
                        let _ = sock.shutdown().await;
                    });
                }
                None => held.push(sock),
            }
        }
    });
    format!("http://{addr}")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_names_the_crate_version_and_the_commit() {
    let out = Command::new(env!("CARGO_BIN_EXE_switchboard")).arg("--version").output().expect("run");
    assert!(out.status.success());
    let line = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    // The commit this checkout is at, when git can tell (as build.rs asks it).
    let head = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned());
    let commit = std::env::var("SWITCHBOARD_GIT_COMMIT").ok().filter(|c| !c.is_empty()).or(head);
    let commit = commit.as_deref().unwrap_or("unknown");
    assert_eq!(line, format!("switchboard {} (commit {commit})", env!("CARGO_PKG_VERSION")));
}

#[tokio::test]
async fn probe_exits_0_on_a_2xx_answer() {
    let url = server(Some("HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")).await;
    let out = run_cli(s(&["probe", &format!("{url}/health")])).await;
    assert!(out.status.success(), "exit {:?}: {}", out.status, stderr(&out));
    assert!(out.stdout.is_empty() && out.stderr.is_empty(), "a healthy probe prints nothing");
}

#[tokio::test]
async fn probe_names_the_status_and_the_first_line_of_the_body() {
    let url = server(Some(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 38\r\nconnection: close\r\n\r\nnot ready: first resync not done yet\n\n",
    ))
    .await;
    let out = run_cli(s(&["probe", &format!("{url}/ready")])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("/ready") && err.contains("503") && err.contains("first resync not done yet"), "{err}");
}

#[tokio::test]
async fn probe_does_not_follow_redirects() {
    let url = server(Some(
        "HTTP/1.1 302 Found\r\nlocation: http://127.0.0.1:1/\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
    ))
    .await;
    let out = run_cli(s(&["probe", &url])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("302"), "{}", stderr(&out));
}

#[tokio::test]
async fn probe_fails_with_a_reason_when_nothing_listens() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let out = run_cli(s(&["probe", &format!("http://{addr}/health")])).await;
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.starts_with("switchboard probe: ") && err.contains("cannot connect"), "{err}");
}

#[tokio::test]
async fn probe_gives_up_after_its_timeout() {
    let url = server(None).await;
    let started = std::time::Instant::now();
    let out = run_cli(s(&["probe", "--timeout", "300ms", &url])).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no answer within 300ms"), "{}", stderr(&out));
    assert!(started.elapsed() < Duration::from_secs(10), "the timeout bounds the probe");
}

#[tokio::test]
async fn probe_rejects_a_url_that_is_not_one() {
    let out = run_cli(s(&["probe", "not a url"])).await;
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("<URL>"), "names the argument: {}", stderr(&out));
}
