//! `switchboard sim` as a process: one JSON line of URLs on stdout, a
//! pre-loaded Marathon, and a control API that changes it.

use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::AsyncBufReadExt;

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

async fn get(url: &str) -> Value {
    reqwest::get(url).await.unwrap().error_for_status().unwrap().json().await.unwrap()
}

#[tokio::test]
async fn sim_prints_its_urls_and_obeys_the_control_api() {
    let mut child = tokio::process::Command::new(BIN)
        .args(["sim", "--apps", "3", "--instances", "2", "--latency", "consul-agent", "--latency", "kong=1ms"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("sim printed its line in time")
        .unwrap()
        .expect("a line");
    let urls: Value = serde_json::from_str(&line).unwrap();
    for key in ["marathon", "consul", "kong", "vulcand", "control"] {
        let url = urls[key].as_str().unwrap_or_else(|| panic!("{key} in {line}"));
        assert!(url.starts_with("http://127.0.0.1:"), "{key}: {url}");
    }
    assert_eq!((urls["apps"].as_u64(), urls["instances"].as_u64()), (Some(3), Some(2)));

    let marathon = urls["marathon"].as_str().unwrap();
    let apps = get(&format!("{marathon}/v2/apps?embed=apps.tasks")).await;
    let apps = apps["apps"].as_array().unwrap();
    assert_eq!(apps.len(), 3);
    assert!(apps.iter().all(|a| a["tasks"].as_array().unwrap().len() == 2));
    assert!(apps[1]["labels"]["kong.hosts"].is_string() && apps[2]["labels"]["vulcand.host"].is_string());

    let control = urls["control"].as_str().unwrap();
    let counts = get(&format!("{control}/v1/counts")).await;
    assert_eq!(counts["expected"], json!({"consul": 6, "kong": 2, "vulcand": 2}));
    assert_eq!(counts["held"], json!({"consul": 0, "kong": 0, "vulcand": 0}));

    let scaled: Value = reqwest::Client::new()
        .post(format!("{control}/v1/scale"))
        .json(&json!({"instances": 3}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(scaled["running"], 3, "{scaled}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let counts = get(&format!("{control}/v1/counts")).await;
        if counts["expected"] == json!({"consul": 9, "kong": 3, "vulcand": 3}) {
            assert_eq!(counts["sent"], 3);
            break;
        }
        assert!(Instant::now() < deadline, "scale not visible in counts: {counts}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // A write to the simulated Consul pays the profile's cost and arrives.
    let consul = urls["consul"].as_str().unwrap();
    let started = Instant::now();
    let body = json!({"ID": "x:31000", "Name": "x", "Address": "10.0.2.11", "Port": 31000});
    let r = reqwest::Client::new().put(format!("{consul}/v1/agent/service/register")).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_micros(3_600));
    let counts = get(&format!("{control}/v1/counts")).await;
    assert_eq!(counts["writes"]["consul"], 1);
    let _ = child.kill().await;
}
