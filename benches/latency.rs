//! Benchmark: time from a `TASK_RUNNING` event leaving Marathon to the
//! instance being registered in Consul, on the in-process simulators, with
//! the daemon in the same process (as `switchboard demo` runs it).
//!
//! Run: `cargo bench --bench latency`. Prints median, p90 and worst of 100
//! samples with one app running, then again with 1,000 more instances in the
//! store (every event triggers a planning pass over all of them), and the
//! process's resident memory at the end.

use std::time::{Duration, Instant};

use serde_json::json;
use switchboard::config::{CommonArgs, Config, Env, FileConfig};
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions, SimEvent};
use tokio_util::sync::CancellationToken;

const SAMPLES: usize = 100;

fn is_running(e: &SimEvent) -> bool {
    e.event_type == "status_update_event" && e.data["taskStatus"] == "TASK_RUNNING"
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let marathon = MarathonSim::start(ModelOptions::default()).await?;
    let consul = ConsulSim::start(ConsulSimOptions::default()).await?;
    let dir = std::env::temp_dir().join(format!("switchboard-bench-{}", std::process::id()));
    let args = CommonArgs {
        marathon: vec![marathon.url().to_string()],
        consul: Some(consul.url()),
        data_dir: Some(dir.clone()),
        listen: Some("127.0.0.1:0".into()),
        resync_interval: Some("0".into()),
        ..Default::default()
    };
    let cfg = Config::merge(&args, &FileConfig::default(), &Env::none())?;
    let shutdown = CancellationToken::new();
    let daemon = tokio::spawn(switchboard::daemon::run(cfg, shutdown.clone(), None));
    while marathon.subscribers() == 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let app = json!({"id": "/bench/web", "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]});
    marathon.emit(&marathon.model().deploy(app, 1));

    let small = measure(&marathon, &consul, "/bench/web", 2).await?;
    report("1 app", small);

    // A bigger world: 50 apps x 20 instances, registered before measuring again.
    let mut expected = 0;
    for i in 0..50 {
        let app = json!({"id": format!("/load/app-{i}"), "labels": {"consul": ""}, "portDefinitions": [{"port": 0}]});
        marathon.emit(&marathon.model().deploy(app, 20));
        expected += 20;
    }
    let t0 = Instant::now();
    while consul.service_count() < expected + SAMPLES + 1 {
        if t0.elapsed() > Duration::from_secs(120) {
            anyhow::bail!("the 1,000 instances were not registered within 120 s");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    println!("registered 1,000 more instances (50 deploys) in {:.2} s", t0.elapsed().as_secs_f64());
    let big = measure(&marathon, &consul, "/bench/web", SAMPLES + 2).await?;
    report("with 1,000 more instances", big);
    println!("resident memory at the end: {}", rss().unwrap_or_else(|| "unknown".into()));

    shutdown.cancel();
    daemon.await??;
    let _ = std::fs::remove_dir_all(&dir);

    Ok(())
}

/// Scales `app` up one instance at a time, `SAMPLES` times, timing each new
/// instance from its TASK_RUNNING event to its Consul registration.
async fn measure(marathon: &MarathonSim, consul: &ConsulSim, app: &str, first: usize) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(SAMPLES);
    for n in first..first + SAMPLES {
        let events = marathon.model().scale(app, n);
        let (running, rest): (Vec<SimEvent>, Vec<SimEvent>) = events.into_iter().partition(is_running);
        let new_id = running
            .iter()
            .map(|e| format!("{}:{}", e.data["taskId"].as_str().unwrap_or_default(), e.data["ports"][0]))
            .next()
            .ok_or_else(|| anyhow::anyhow!("scale produced no TASK_RUNNING"))?;
        marathon.emit(&rest);
        let t0 = Instant::now();
        marathon.emit(&running);
        loop {
            if consul.has_service(&new_id) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("{new_id} not registered after 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(t0.elapsed());
    }
    Ok(samples)
}

fn report(what: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "TASK_RUNNING -> Consul registration ({what}), {} samples: median {:.2} ms, p90 {:.2} ms, worst {:.2} ms, best {:.2} ms",
        samples.len(),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1]),
        ms(samples[0])
    );
}

/// VmRSS from /proc (Linux), as printed there.
fn rss() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status.lines().find_map(|l| l.strip_prefix("VmRSS:").map(|v| v.trim().to_owned()))
}
