//! Benchmark: time from a `TASK_RUNNING` event leaving Marathon to the
//! instance being registered in Consul, on the in-process simulators, with
//! the daemon in the same process (as `switchboard demo` runs it).
//!
//! Run: `cargo bench --bench latency` (prints median, p90 and worst of 100).

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

    let mut samples = Vec::with_capacity(SAMPLES);
    for n in 2..SAMPLES + 2 {
        let events = marathon.model().scale("/bench/web", n);
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
            if consul.services().contains_key(&new_id) {
                break;
            }
            if t0.elapsed() > Duration::from_secs(10) {
                anyhow::bail!("{new_id} not registered after 10 s");
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        }
        samples.push(t0.elapsed());
    }
    shutdown.cancel();
    daemon.await??;
    let _ = std::fs::remove_dir_all(&dir);

    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "TASK_RUNNING -> Consul registration, {} samples: median {:.2} ms, p90 {:.2} ms, worst {:.2} ms, best {:.2} ms",
        samples.len(),
        ms(samples[samples.len() / 2]),
        ms(samples[samples.len() * 9 / 10]),
        ms(samples[samples.len() - 1]),
        ms(samples[0])
    );
    Ok(())
}
