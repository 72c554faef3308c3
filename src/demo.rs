//! `switchboard demo`: the simulators and the daemon in one process. A
//! scripted deploy / scale / restart / kill / destroy of an app, and a pod
//! of two containers, with events delivered out of order, each step printed
//! with what Consul, Kong and Vulcand hold.
//! Exits once every step has converged. The daemon's status page is printed
//! first and served while the steps run (and after, with `--keep-running`),
//! so a newcomer can watch convergence in a browser.
//!
//! Invariant: nothing leaves 127.0.0.1; the store lives in a temporary
//! directory removed on exit.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use crate::config::{CommonArgs, Config, Env, FileConfig};
use crate::sim::consul::{ConsulSim, ConsulSimOptions};
use crate::sim::kong::{KongSim, KongSimOptions};
use crate::sim::marathon::{MarathonSim, ModelOptions, SimEvent};
use crate::sim::vulcand::{VulcandSim, VulcandSimOptions};

const APP: &str = "/shop/web";
/// A Marathon pod (1.4+) of two containers, registered like an app.
const POD: &str = "/shop/cart";
const SERVICE: &str = "web";
const STEP_DEADLINE: Duration = Duration::from_secs(30);

fn app_definition() -> Value {
    json!({
        "id": APP,
        "cmd": "python3 -m http.server $PORT0",
        "labels": {
            "consul": SERVICE,
            "public": "tag",
            "kong.hosts": "shop.example.com",
            "kong.paths": "/",
            "vulcand.host": "shop.example.com"
        },
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
        "healthChecks": [{"protocol": "HTTP", "path": "/health", "portIndex": 0, "intervalSeconds": 10, "timeoutSeconds": 2}]
    })
}

/// `web` declares a hostPort (agent host : allocated port); the `metrics`
/// sidecar's `prom` only a containerPort (instance IP on network `dcos`).
fn pod_definition() -> Value {
    json!({
        "id": POD,
        "labels": {"consul": "", "public": "tag"},
        "containers": [
            {"name": "web", "resources": {"cpus": 0.5, "mem": 128},
             "endpoints": [{"name": "http", "containerPort": 8080, "hostPort": 0, "labels": {"consul": "cart"}}],
             "healthCheck": {"http": {"endpoint": "http", "path": "/health"}}},
            {"name": "metrics", "resources": {"cpus": 0.1, "mem": 32},
             "endpoints": [{"name": "prom", "containerPort": 9102, "labels": {"consul": "cart-metrics"}}]}
        ],
        "networks": [{"name": "dcos", "mode": "container"}]
    })
}

struct Sims {
    marathon: MarathonSim,
    consul: ConsulSim,
    kong: KongSim,
    vulcand: VulcandSim,
}

/// What the registries hold for the demo app, in comparable form.
#[derive(Debug, PartialEq, Eq)]
struct Held {
    consul: BTreeSet<String>,
    /// `host:port` of the pod's Consul services.
    pod: BTreeSet<String>,
    kong: BTreeSet<String>,
    vulcand: BTreeSet<String>,
}

impl Sims {
    /// `host:port` of every running task of the demo app, per Marathon's model.
    fn running(&self) -> BTreeSet<String> {
        let body = self.marathon.model().apps_json();
        let mut out = BTreeSet::new();
        for app in body["apps"].as_array().into_iter().flatten().filter(|a| a["id"] == APP) {
            for t in app["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
                out.insert(format!("{}:{}", t["host"].as_str().unwrap_or("?"), t["ports"][0]));
            }
        }
        out
    }

    fn held(&self) -> Held {
        let consul = self
            .consul
            .services()
            .values()
            .filter(|s| s["Meta"]["marathon_app_id"] == APP)
            .map(|s| format!("{}:{}", s["Address"].as_str().unwrap_or("?"), s["Port"]))
            .collect();
        let kong = self
            .kong
            .targets(&format!("{SERVICE}.default"))
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|t| t["target"].as_str().map(str::to_owned))
            .collect();
        let vulcand = self
            .vulcand
            .servers(&format!("sb.default.{SERVICE}~"))
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| s["URL"].as_str().map(|u| u.trim_start_matches("http://").to_owned()))
            .collect();
        let pod = self
            .consul
            .services()
            .values()
            .filter(|s| s["Meta"]["marathon_app_id"] == POD)
            .map(|s| format!("{}:{}", s["Address"].as_str().unwrap_or("?"), s["Port"]))
            .collect();
        Held { consul, pod, kong, vulcand }
    }

    fn print(&self, elapsed: Duration) {
        println!("   converged in {} ms", elapsed.as_millis());
        let consul = self.consul.services();
        let mut any = false;
        for s in consul.values().filter(|s| s["Meta"]["marathon_app_id"] == APP || s["Meta"]["marathon_app_id"] == POD)
        {
            any = true;
            println!(
                "   consul   {:<12} {:<21} tags {}  id {}",
                s["Service"].as_str().unwrap_or("?"),
                format!("{}:{}", s["Address"].as_str().unwrap_or("?"), s["Port"]),
                s["Tags"],
                s["ID"].as_str().unwrap_or("?")
            );
        }
        if !any {
            println!("   consul   (no {SERVICE} instances)");
        }
        let routes: Vec<String> =
            self.kong.routes().as_array().into_iter().flatten().map(|r| format!("{}", r["hosts"])).collect();
        let held = self.held();
        println!(
            "   kong     upstream {SERVICE}.default targets {:?}  routes {}",
            held.kong,
            if routes.is_empty() { "none".to_owned() } else { routes.join(" ") }
        );
        let frontends: Vec<String> = self
            .vulcand
            .frontends()
            .as_array()
            .into_iter()
            .flatten()
            .map(|f| format!("{} → {}", f["Route"].as_str().unwrap_or("?"), f["BackendId"].as_str().unwrap_or("?")))
            .collect();
        println!(
            "   vulcand  servers {:?}  frontends {}",
            held.vulcand,
            if frontends.is_empty() { "none".to_owned() } else { frontends.join(", ") }
        );
    }

    /// Waits until all three registries hold exactly Marathon's running instances.
    async fn converge(&self) -> anyhow::Result<Duration> {
        let start = Instant::now();
        loop {
            let want = self.running();
            let want_pod: BTreeSet<String> =
                self.marathon.model().pod_endpoints(POD).into_iter().map(|(_, addr)| addr).collect();
            let held = self.held();
            if held.consul == want && held.kong == want && held.vulcand == want && held.pod == want_pod {
                return Ok(start.elapsed());
            }
            if start.elapsed() > STEP_DEADLINE {
                bail!(
                    "not converged after {STEP_DEADLINE:?}: Marathon runs {want:?} and pod endpoints {want_pod:?}, registries hold {held:?}"
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Marathon's order turned around, so facts arrive before what explains them.
fn reversed(events: Vec<SimEvent>) -> Vec<SimEvent> {
    events.into_iter().rev().collect()
}

pub async fn run(keep_running: bool) -> anyhow::Result<()> {
    let sims = Sims {
        marathon: MarathonSim::start(ModelOptions { keepalive: Duration::from_secs(1), ..Default::default() })
            .await
            .context("starting the Marathon simulator")?,
        consul: ConsulSim::start(ConsulSimOptions::default()).await.context("starting the Consul simulator")?,
        kong: KongSim::start(KongSimOptions::default()).await.context("starting the Kong simulator")?,
        vulcand: VulcandSim::start(VulcandSimOptions::default()).context("starting the Vulcand simulator")?,
    };
    let data = std::env::temp_dir().join(format!("switchboard-demo-{}", std::process::id()));
    let _cleanup = RemoveOnDrop(data.clone());
    let mut args = CommonArgs {
        marathon: vec![sims.marathon.url().to_string()],
        data_dir: Some(data.clone()),
        listen: Some("127.0.0.1:0".into()),
        grace_period: Some("500ms".into()),
        resync_interval: Some("30s".into()),
        ..Default::default()
    };
    args.backends.consul.url = Some(sims.consul.url());
    args.backends.kong.url = Some(sims.kong.url().to_string());
    args.backends.vulcand.url = Some(sims.vulcand.url().to_string());
    let cfg = Config::merge(&args, &FileConfig::default(), &Env::none()).context("demo configuration")?;

    println!("switchboard demo: simulated Marathon, Consul, Kong and Vulcand on 127.0.0.1");
    println!(
        "   marathon {}  consul {}  kong {}  vulcand {}",
        sims.marathon.url(),
        sims.consul.url(),
        sims.kong.url(),
        sims.vulcand.url()
    );
    let shutdown = CancellationToken::new();
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let daemon = tokio::spawn(crate::daemon::run(cfg, shutdown.clone(), Some(ready_tx)));
    let status = ready_rx.await.context("the daemon did not start")?;
    println!("   status page http://{status}/ (live while the steps run; it refreshes itself)");
    println!("   also http://{status}/api/status  http://{status}/metrics  http://{status}/ready\n");
    let start = Instant::now();
    while sims.marathon.subscribers() == 0 {
        if start.elapsed() > STEP_DEADLINE {
            bail!("the daemon never subscribed to the event stream");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let steps: Vec<(&str, Step)> = vec![
        (
            "deploy /shop/web with 2 instances; events reversed, so TASK_RUNNING arrives before the labels",
            Box::new(|s: &Sims| reversed(s.marathon.model().deploy(app_definition(), 2))),
        ),
        ("scale /shop/web to 3", Box::new(|s: &Sims| s.marathon.model().scale(APP, 3))),
        (
            "restart /shop/web from the UI: only status updates arrive, the new version is fetched",
            Box::new(|s: &Sims| {
                let events = s.marathon.model().restart(APP);
                events.into_iter().filter(|e| e.event_type == "status_update_event").collect()
            }),
        ),
        (
            "kill one task: TASK_KILLING deregisters it at once, a replacement follows",
            Box::new(|s: &Sims| {
                let task = s.marathon.model().task_ids(APP).into_iter().next();
                task.map(|t| s.marathon.model().kill_task(&t)).unwrap_or_default()
            }),
        ),
        (
            "deploy pod /shop/cart (containers web + metrics sidecar, 2 instances); events reversed, the pod spec is fetched",
            Box::new(|s: &Sims| reversed(s.marathon.model().deploy_pod(pod_definition(), 2))),
        ),
        (
            "destroy /shop/web and pod /shop/cart",
            Box::new(|s: &Sims| {
                let mut events = s.marathon.model().destroy(APP);
                events.extend(s.marathon.model().destroy_pod(POD));
                events
            }),
        ),
    ];
    let mut result = Ok(());
    for (n, (title, step)) in steps.iter().enumerate() {
        println!("== step {}: {title}", n + 1);
        let events = step(&sims);
        sims.marathon.emit(&events);
        match sims.converge().await {
            Ok(elapsed) => {
                sims.print(elapsed);
                print_status_page(&status).await;
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
        println!();
    }
    if result.is_ok() {
        println!("every step converged: Consul, Kong and Vulcand hold exactly what Marathon runs.");
    }
    if keep_running && result.is_ok() {
        println!("--keep-running: Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    shutdown.cancel();
    daemon.await.context("daemon task")??;
    result
}

/// One line of what the status page shows now (it is served all along).
async fn print_status_page(addr: &std::net::SocketAddr) {
    let url = format!("http://{addr}/api/status");
    let model = match reqwest::get(&url).await {
        Ok(r) => r.json::<crate::status::StatusModel>().await,
        Err(e) => {
            println!("   status page did not answer: {e}");
            return;
        }
    };
    match model {
        Ok(m) => {
            let held: Vec<String> = m.totals.registered.iter().map(|(b, n)| format!("{b} {n}")).collect();
            println!(
                "   status page http://{addr}/: {} instances, {} pending, registered: {}",
                m.totals.instances,
                m.totals.pending,
                held.join(", ")
            );
        }
        Err(e) => println!("   status page unreadable: {e}"),
    }
}

/// One scripted change: mutates Marathon's model, returns the events to deliver.
type Step = Box<dyn Fn(&Sims) -> Vec<SimEvent>>;

struct RemoveOnDrop(std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
