//! Shared helpers for the binary-level tests: spawn `switchboard` as a child
//! process against in-process simulators, and poll conditions with deadlines.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

/// Polls `cond` every 20 ms until it holds or `within` passes; panics naming `what`.
pub async fn eventually(what: &str, within: Duration, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    loop {
        if cond() {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Like `eventually`, for conditions that must await (HTTP reads).
pub async fn eventually_async<F, Fut>(what: &str, within: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    loop {
        if cond().await {
            return;
        }
        if Instant::now() > deadline {
            panic!("timed out after {within:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A `switchboard run` child process, killed on drop.
pub struct Daemon {
    pub child: Child,
    pub data_dir: PathBuf,
    pub args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
}

impl Daemon {
    /// Starts `switchboard run` with fast test timings plus `args`.
    pub fn start(data_dir: &Path, args: &[String]) -> Daemon {
        Daemon::start_with_env(data_dir, args, &[])
    }

    /// Like `start`, with extra environment variables (secrets).
    pub fn start_with_env(data_dir: &Path, args: &[String], env: &[(&str, &str)]) -> Daemon {
        let log = data_dir.with_extension(format!("log{}", std::process::id()));
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Daemon {
            child: spawn(data_dir, args, &log, &env),
            data_dir: data_dir.to_owned(),
            args: args.to_vec(),
            env,
            log,
        }
    }

    /// `kill -9`, then a fresh start on the same data dir.
    pub fn kill9_and_restart(&mut self) {
        self.kill9();
        self.child = spawn(&self.data_dir, &self.args, &self.log, &self.env);
    }

    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.child = spawn(&self.data_dir, &self.args, &self.log, &self.env);
    }

    /// The daemon's log so far (stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

fn spawn(data_dir: &Path, args: &[String], log: &Path, env: &[(String, String)]) -> Child {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).expect("log file");
    Command::new(BIN)
        .arg("run")
        .arg("--data-dir")
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"])
        .args(defaults(args, &[("--grace-period", "300ms"), ("--idle-timeout", "5s"), ("--resync-interval", "0")]))
        .args(args)
        .env("SWITCHBOARD_LOG", "debug")
        // Not the test runner's systemd or log format; a test passes its own.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .env_remove("SWITCHBOARD_LOG_FORMAT")
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env_remove("SWITCHBOARD_CONSUL_URL")
        .env_remove("SWITCHBOARD_KONG_URL")
        .env_remove("SWITCHBOARD_VULCAND_URL")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spawn switchboard")
}

/// Test defaults for the flags `args` does not set itself.
fn defaults(args: &[String], pairs: &[(&str, &str)]) -> Vec<String> {
    pairs
        .iter()
        .filter(|(flag, _)| !args.iter().any(|a| a == flag))
        .flat_map(|(f, v)| [f.to_string(), v.to_string()])
        .collect()
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            eprintln!("---- switchboard log ----\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Runs `switchboard <args>` to completion (in a blocking thread).
pub async fn run_cli(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("SWITCHBOARD_CONSUL_URL")
            .stdin(Stdio::null())
            .output()
            .expect("run switchboard")
    })
    .await
    .expect("join")
}

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

impl Daemon {
    /// The status server's base URL, read from the daemon's log line
    /// `switchboard running listen=ADDR` (the daemon binds port 0).
    pub async fn status_url(&self) -> String {
        let mut found = None;
        eventually("daemon status address in log", Duration::from_secs(20), || {
            found = self.log().lines().rev().find_map(|l| {
                let rest = l.split("listen=").nth(1)?;
                let addr = rest.split_whitespace().next()?;
                Some(format!("http://{addr}"))
            });
            found.is_some()
        })
        .await;
        found.unwrap_or_default()
    }

    /// The value of a Prometheus sample (name with labels, exactly as
    /// rendered), or 0 when absent or the daemon does not answer. Only for
    /// conditions that cannot hold by absence (`>= 1`); to wait for a value
    /// of 0, use `sample`, which tells absence apart.
    pub async fn metric(&self, sample: &str) -> f64 {
        self.sample(sample).await.unwrap_or(0.0)
    }

    /// The value of a Prometheus sample, `None` when the daemon does not
    /// answer or does not render it.
    pub async fn sample(&self, sample: &str) -> Option<f64> {
        let url = format!("{}/metrics", self.status_url().await);
        let text = reqwest::get(&url).await.ok()?.text().await.ok()?;
        text.lines().find_map(|l| l.strip_prefix(sample).and_then(|v| v.trim().parse::<f64>().ok()))
    }
}

/// Sample values for the Switchboard config template of the Terraform
/// showcase (tests/showcase.rs checks they cover every variable of it;
/// tests/specs.rs renders it with them).
pub fn sample_config_vars() -> std::collections::BTreeMap<&'static str, &'static str> {
    std::collections::BTreeMap::from([
        ("master_ip", "10.0.12.10"),
        ("kong_ip", "10.0.5.10"),
        ("vulcand_ip", "10.0.12.30"),
        ("domain", "switchboard.test"),
        ("cluster", "showcase"),
    ])
}

/// Debian's Chromium, which `.ci/run` installs. A test that needs it fails
/// with this message when it is missing: it must not pass without running.
pub const CHROMIUM: &str = "/usr/bin/chromium";

pub fn chromium() -> PathBuf {
    let path = PathBuf::from(std::env::var("SWITCHBOARD_TEST_CHROMIUM").unwrap_or_else(|_| CHROMIUM.to_owned()));
    assert!(
        path.is_file(),
        "Chromium is missing at {}: the status page test needs Debian's `chromium` package \
         (`apt-get install -y chromium`, as .ci/run does)",
        path.display()
    );
    path
}

/// GET `url`: status code and body ("" when nothing answers).
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(r) => {
            let code = r.status().as_u16();
            (code, r.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

/// Runs `switchboard <args>` to completion with extra environment variables.
pub async fn run_cli_env(args: Vec<String>, env: Vec<(String, String)>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(BIN)
            .args(&args)
            .env_remove("SWITCHBOARD_CONSUL_URL")
            .envs(env)
            .stdin(Stdio::null())
            .output()
            .expect("run switchboard")
    })
    .await
    .expect("join")
}

impl Daemon {
    /// The daemon's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A strict reader of the Prometheus text exposition format (0.0.4): every
/// line is `# HELP`, `# TYPE` or a sample of a declared family with valid
/// names, quoted label values and a float value; a family's TYPE comes before
/// its samples and only once; counters are non-negative; a histogram's
/// buckets carry `le`, are cumulative, and its `+Inf` bucket equals its
/// `_count`. Returns every sample (`name{labels}` as rendered) with its value;
/// panics naming the first line that breaks a rule.
pub fn parse_prometheus(text: &str) -> std::collections::BTreeMap<String, f64> {
    use std::collections::{BTreeMap, HashMap};
    fn metric_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_' || f == ':')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_' || x == ':')
    }
    fn label_name(s: &str) -> bool {
        let mut c = s.chars();
        c.next().is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
            && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
    }
    fn value(s: &str) -> Option<f64> {
        match s {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            "NaN" => Some(f64::NAN),
            _ => s.parse().ok(),
        }
    }
    /// `{a="x",b="y"}` → pairs; None when malformed.
    fn labels(s: &str) -> Option<Vec<(String, String)>> {
        let mut out = Vec::new();
        let mut chars = s.chars().peekable();
        loop {
            let name: String = std::iter::from_fn(|| chars.next_if(|c| *c != '=')).collect();
            if name.is_empty() && chars.peek().is_none() {
                return Some(out);
            }
            if !label_name(&name) || chars.next() != Some('=') || chars.next() != Some('"') {
                return None;
            }
            let mut v = String::new();
            loop {
                match chars.next()? {
                    '\\' => match chars.next()? {
                        'n' => v.push('\n'),
                        '\\' => v.push('\\'),
                        '"' => v.push('"'),
                        _ => return None,
                    },
                    '"' => break,
                    '\n' => return None,
                    c => v.push(c),
                }
            }
            out.push((name, v));
            match chars.next() {
                None => return Some(out),
                Some(',') => {}
                Some(_) => return None,
            }
        }
    }
    assert!(text.ends_with('\n'), "exposition must end with a newline");
    let mut types: HashMap<String, String> = HashMap::new();
    let mut seen_samples: std::collections::HashSet<String> = Default::default();
    let mut samples = BTreeMap::new();
    /// Per histogram series: its buckets `(le, count)` in order, and its `_count`.
    type Series = (Vec<(f64, f64)>, Option<f64>);
    // (histogram family, labels without le) → series
    let mut hist: HashMap<(String, String), Series> = HashMap::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("line {}: {line:?}", n + 1);
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let kind = parts.next().unwrap_or("");
            let name = parts.next().unwrap_or("");
            assert!(metric_name(name), "bad metric name, {at}");
            match kind {
                "HELP" => {}
                "TYPE" => {
                    let t = parts.next().unwrap_or("");
                    assert!(["counter", "gauge", "histogram", "summary", "untyped"].contains(&t), "bad type, {at}");
                    assert!(!seen_samples.contains(name), "TYPE after samples, {at}");
                    assert!(types.insert(name.to_owned(), t.to_owned()).is_none(), "TYPE twice, {at}");
                }
                _ => panic!("unknown comment, {at}"),
            }
            continue;
        }
        assert!(!line.is_empty() && !line.starts_with('#'), "stray line, {at}");
        let (series, rest) = match line.find('{') {
            Some(_) => {
                let close = line.rfind('}').unwrap_or_else(|| panic!("unclosed labels, {at}"));
                (&line[..=close], line[close + 1..].trim_start())
            }
            None => line.split_once(' ').unwrap_or_else(|| panic!("no value, {at}")),
        };
        let (name, label_text) = match series.find('{') {
            Some(i) => (&series[..i], &series[i + 1..series.len() - 1]),
            None => (series, ""),
        };
        assert!(metric_name(name), "bad metric name, {at}");
        let pairs = labels(label_text).unwrap_or_else(|| panic!("bad labels, {at}"));
        let mut fields = rest.split(' ');
        let v = fields.next().and_then(value).unwrap_or_else(|| panic!("bad value, {at}"));
        if let Some(ts) = fields.next() {
            assert!(ts.parse::<i64>().is_ok(), "bad timestamp, {at}");
        }
        assert!(fields.next().is_none(), "trailing fields, {at}");
        let family = ["_bucket", "_sum", "_count", "_total"]
            .iter()
            .filter_map(|s| name.strip_suffix(s))
            .find(|f| types.contains_key(*f) && (types[*f] == "histogram" || types[*f] == "summary"))
            .unwrap_or(name);
        let kind = types.get(family).unwrap_or_else(|| panic!("sample without TYPE, {at}"));
        seen_samples.insert(family.to_owned());
        if kind == "counter" {
            assert!(v >= 0.0, "negative counter, {at}");
        }
        if kind == "histogram" {
            let others: Vec<String> =
                pairs.iter().filter(|(k, _)| k != "le").map(|(k, v)| format!("{k}={v}")).collect();
            let entry = hist.entry((family.to_owned(), others.join(","))).or_default();
            if name.ends_with("_bucket") {
                let le = pairs.iter().find(|(k, _)| k == "le").unwrap_or_else(|| panic!("bucket without le, {at}"));
                let le = value(&le.1).unwrap_or_else(|| panic!("bad le, {at}"));
                if let Some((prev_le, prev)) = entry.0.last() {
                    assert!(le > *prev_le && v >= *prev, "buckets not cumulative, {at}");
                }
                entry.0.push((le, v));
            } else if name.ends_with("_count") {
                entry.1 = Some(v);
            }
        }
        assert!(samples.insert(series.to_owned(), v).is_none(), "sample twice, {at}");
    }
    for ((family, labels), (buckets, count)) in hist {
        let inf = buckets.last().filter(|(le, _)| le.is_infinite()).map(|(_, v)| *v);
        assert_eq!(inf, count, "histogram {family}{{{labels}}}: +Inf bucket must equal _count");
    }
    samples
}
// ====================================================================
// Shared test world (issue 12, tests): Marathon sim + backend sims +
// temp dir + daemon launcher, for every binary-level suite. Kept in its
// own section so the status-page helpers above/below merge cleanly.
// ====================================================================

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;
use switchboard::sim::consul::{ConsulSim, ConsulSimOptions};
use switchboard::sim::kong::{KongSim, KongSimOptions};
use switchboard::sim::marathon::{MarathonSim, ModelOptions, SimEvent};
use switchboard::sim::tap::{SimBackend, Tap, Timeline};
use switchboard::sim::vulcand::{VulcandSim, VulcandSimOptions};

/// How long any single wait of the e2e suites may take.
pub const WAIT: Duration = Duration::from_secs(20);

/// Which simulators a `World` runs, and with what options.
pub struct WorldBuilder {
    marathon: ModelOptions,
    consul: Option<ConsulSimOptions>,
    kong: Option<KongSimOptions>,
    vulcand: Option<VulcandSimOptions>,
    /// What every Vulcand write costs (answered that much later).
    vulcand_write_cost: Option<Duration>,
}

impl WorldBuilder {
    /// Marathon's options (default: a 500 ms keepalive).
    pub fn marathon(mut self, opts: ModelOptions) -> Self {
        self.marathon = opts;
        self
    }
    pub fn consul(mut self, opts: ConsulSimOptions) -> Self {
        self.consul = Some(opts);
        self
    }
    /// A Kong of `version` (`3.4.2` modern, `0.10.4` legacy), no admin token.
    pub fn kong(self, version: &str) -> Self {
        self.kong_with(KongSimOptions { version: version.to_owned(), admin_token: None })
    }
    pub fn kong_with(mut self, opts: KongSimOptions) -> Self {
        self.kong = Some(opts);
        self
    }
    pub fn vulcand(mut self, opts: VulcandSimOptions) -> Self {
        self.vulcand = Some(opts);
        self
    }
    /// Every Vulcand write waits `cost` before it is applied (one at a
    /// time, as etcd commits them): widens the windows a test needs.
    pub fn vulcand_write_cost(mut self, cost: Duration) -> Self {
        self.vulcand_write_cost = Some(cost);
        self
    }
    /// Consul, a modern Kong and Vulcand, all with default options.
    pub fn all_backends(self) -> Self {
        self.consul(ConsulSimOptions::default()).kong("3.4.2").vulcand(VulcandSimOptions::default())
    }

    pub async fn start(self) -> World {
        let marathon = MarathonSim::start(self.marathon).await.expect("marathon sim");
        let consul = match self.consul {
            Some(o) => Some(ConsulSim::start(o).await.expect("consul sim")),
            None => None,
        };
        let kong_legacy = self.kong.as_ref().is_some_and(|o| o.version.starts_with("0."));
        let kong = match self.kong {
            Some(o) => Some(KongSim::start(o).await.expect("kong sim")),
            None => None,
        };
        let tap = |cost| Tap::new(SimBackend::Vulcand, Some(cost), std::sync::Arc::new(Timeline::default()));
        let vulcand = self.vulcand.map(|o| {
            VulcandSim::start_on(o, 0, self.vulcand_write_cost.map(tap).unwrap_or_default()).expect("vulcand sim")
        });
        World {
            marathon,
            consul,
            kong,
            kong_legacy,
            vulcand,
            dir: tempfile::tempdir().expect("tempdir"),
            http: reqwest::Client::new(),
        }
    }
}

/// Simulators, a temp dir for the daemon's data, and the launcher.
pub struct World {
    pub marathon: MarathonSim,
    consul: Option<ConsulSim>,
    kong: Option<KongSim>,
    /// The Kong sim speaks the 0.x API (`/apis`, ownership by ledger only).
    kong_legacy: bool,
    vulcand: Option<VulcandSim>,
    pub dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl World {
    /// No backend yet; Marathon with a 500 ms keepalive.
    pub fn builder() -> WorldBuilder {
        WorldBuilder {
            marathon: ModelOptions { keepalive: Duration::from_millis(500), ..Default::default() },
            consul: None,
            kong: None,
            vulcand: None,
            vulcand_write_cost: None,
        }
    }

    pub fn consul(&self) -> &ConsulSim {
        self.consul.as_ref().expect("this world runs no Consul sim")
    }
    pub fn kong(&self) -> &KongSim {
        self.kong.as_ref().expect("this world runs no Kong sim")
    }
    pub fn vulcand(&self) -> &VulcandSim {
        self.vulcand.as_ref().expect("this world runs no Vulcand sim")
    }
    pub fn kong_legacy(&self) -> bool {
        self.kong_legacy
    }
    pub fn has_consul(&self) -> bool {
        self.consul.is_some()
    }
    pub fn has_kong(&self) -> bool {
        self.kong.is_some()
    }
    pub fn has_vulcand(&self) -> bool {
        self.vulcand.is_some()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// `--marathon` and one URL flag per running backend sim, then `extra`.
    pub fn args(&self, extra: &[&str]) -> Vec<String> {
        let mut a = s(&["--marathon", self.marathon.url().as_str()]);
        if let Some(c) = &self.consul {
            a.extend(["--consul".to_owned(), c.url()]);
        }
        if let Some(k) = &self.kong {
            a.extend(["--kong".to_owned(), k.url().to_string()]);
        }
        if let Some(v) = &self.vulcand {
            a.extend(["--vulcand".to_owned(), v.url().to_string()]);
        }
        a.extend(s(extra));
        a
    }

    /// `switchboard run` on this world's data dir (not yet subscribed).
    pub fn daemon(&self, extra: &[&str]) -> Daemon {
        Daemon::start(&self.data_dir(), &self.args(extra))
    }

    /// Like `daemon`, with extra environment variables (secrets).
    pub fn daemon_with_env(&self, extra: &[&str], env: &[(&str, &str)]) -> Daemon {
        Daemon::start_with_env(&self.data_dir(), &self.args(extra), env)
    }

    /// Waits until the daemon holds Marathon's event stream.
    pub async fn subscribed(&self) {
        eventually("stream subscribed", WAIT, || self.marathon.subscribers() > 0).await;
    }

    /// `daemon`, then `subscribed`.
    pub async fn subscribed_daemon(&self, extra: &[&str]) -> Daemon {
        let d = self.daemon(extra);
        self.subscribed().await;
        d
    }

    pub fn emit(&self, events: &[SimEvent]) {
        self.marathon.emit(events);
    }

    /// `f(app, task)` for every running task of `app` in Marathon's model
    /// (`None`: every app), collected. The generic "expected ids" helper.
    pub fn expected<T: Ord>(&self, app: Option<&str>, f: impl Fn(&Value, &Value) -> Option<T>) -> BTreeSet<T> {
        let body = self.marathon.model().apps_json();
        let mut out = BTreeSet::new();
        for a in body["apps"].as_array().into_iter().flatten().filter(|a| app.is_none_or(|id| a["id"] == id)) {
            for t in a["tasks"].as_array().into_iter().flatten().filter(|t| t["state"] == "TASK_RUNNING") {
                out.extend(f(a, t));
            }
        }
        out
    }

    /// Consul service IDs (`<task>:<port>`) Switchboard should hold for the
    /// running tasks of `app` (`None`: of every app).
    pub fn expected_consul_ids(&self, app: Option<&str>) -> BTreeSet<String> {
        self.expected(app, |_, t| Some(format!("{}:{}", t["id"].as_str()?, t["ports"][0])))
    }

    /// `host:port` Kong should balance to for `app`: running, and healthy
    /// when the app has health checks.
    pub fn expected_kong_targets(&self, app: Option<&str>) -> BTreeSet<String> {
        self.expected(app, |a, t| {
            let checked = a["healthChecks"].as_array().is_some_and(|h| !h.is_empty());
            let healthy = t["healthCheckResults"][0]["alive"] == true;
            (!checked || healthy).then(|| format!("{}:{}", t["host"].as_str().unwrap_or(""), t["ports"][0]))
        })
    }

    /// Vulcand server id (`<task>:<port>~`) → URL for the running tasks of `app`.
    pub fn expected_vulcand_servers(&self, app: Option<&str>) -> BTreeMap<String, String> {
        self.expected(app, |_, t| {
            let (id, host, port) = (t["id"].as_str()?, t["host"].as_str()?, &t["ports"][0]);
            Some((format!("{id}:{port}~"), format!("http://{host}:{port}")))
        })
        .into_iter()
        .collect()
    }

    /// Every service ID in the Consul sim.
    pub fn consul_ids(&self) -> BTreeSet<String> {
        self.consul().services().into_keys().collect()
    }

    /// Service IDs in the Consul sim whose meta names `app`.
    pub fn consul_ids_of(&self, app: &str) -> BTreeSet<String> {
        self.consul()
            .services()
            .into_iter()
            .filter(|(_, v)| v["Meta"]["marathon_app_id"] == app)
            .map(|(k, _)| k)
            .collect()
    }

    /// Waits until Consul holds exactly the running tasks of `app`.
    pub async fn converge_consul(&self, app: &str, what: &str) {
        eventually(what, WAIT, || self.consul_ids_of(app) == self.expected_consul_ids(Some(app))).await;
    }

    /// An HTTP call to a sim's API as an operator would make it (`base` is
    /// the sim's URL); the status code.
    pub async fn call(&self, base: &url::Url, method: reqwest::Method, path: &str, body: Option<Value>) -> u16 {
        let url = base.join(path.trim_start_matches('/')).expect("sim url");
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        req.send().await.expect("sim answers").status().as_u16()
    }
}

/// The service name Switchboard derives from an app id (`/shop/web` →
/// `shop-web`), as every backend names the app's entities by it.
pub fn service_of(app_id: &str) -> String {
    app_id.trim_start_matches('/').replace('/', "-")
}

/// An app published on every backend: Consul (derived name), Kong
/// (`<service>.example.com`) and Vulcand (`<service>.local`).
pub fn everywhere_app(app_id: &str) -> Value {
    let svc = service_of(app_id);
    serde_json::json!({
        "id": app_id,
        "labels": {"consul": "", "kong.hosts": format!("{svc}.example.com"), "vulcand.host": format!("{svc}.local")},
        "portDefinitions": [{"port": 0, "name": "http", "protocol": "tcp", "labels": {}}],
    })
}

/// Drops the entries with nothing in them.
fn non_empty<K: Ord, V: IntoIterator + Clone>(m: BTreeMap<K, V>) -> BTreeMap<K, V> {
    m.into_iter().filter(|(_, v)| v.clone().into_iter().next().is_some()).collect()
}

/// Entity name → what it holds, in a backend and in Marathon's model (empty
/// entries dropped on both sides); `None` when they agree.
fn differs<V: IntoIterator + Clone + PartialEq + std::fmt::Debug>(
    backend: &str,
    held: BTreeMap<String, V>,
    want: &BTreeMap<String, V>,
) -> Option<String> {
    let held = non_empty(held);
    (held != *want).then(|| format!("{backend} holds {held:?}, Marathon runs {want:?}"))
}

/// Entity name (from the app's service name) → `want(app)`, for the apps
/// that want something.
fn per_app<V: IntoIterator + Clone>(
    apps: &[String],
    name: impl Fn(&str) -> String,
    want: impl Fn(&str) -> V,
) -> BTreeMap<String, V> {
    non_empty(apps.iter().map(|a| (name(&service_of(a)), want(a))).collect())
}

/// The values of `key` in a listed collection that `keep` accepts.
fn listed(list: Value, key: &str, keep: impl Fn(&str) -> bool) -> Vec<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e[key].as_str().filter(|v| keep(v)).map(str::to_owned))
        .collect()
}

impl World {
    /// What differs between Marathon's running tasks and what Switchboard
    /// holds in each backend sim of this world (only Switchboard's own
    /// entities of the default cluster are compared; foreign ones are the
    /// test's to check); `None` when every sim is exactly in step.
    pub fn mismatch(&self) -> Option<String> {
        let apps: Vec<String> = self.marathon.model().app_ids();
        if self.has_consul() {
            let held: BTreeSet<String> = self
                .consul()
                .services()
                .into_iter()
                .filter(|(_, v)| v["Meta"]["managed_by"] == "switchboard")
                .map(|(k, _)| k)
                .collect();
            let want = self.expected_consul_ids(None);
            if held != want {
                return Some(format!("consul holds {held:?}, Marathon runs {want:?}"));
            }
        }
        if self.has_kong() {
            let k = self.kong();
            let held: BTreeMap<String, BTreeSet<String>> = listed(k.upstreams(), "name", |n| n.ends_with(".default"))
                .into_iter()
                .map(|name| (name.clone(), listed(k.targets(&name), "target", |_| true).into_iter().collect()))
                .collect();
            let want = per_app(&apps, |s| format!("{s}.default"), |a| self.expected_kong_targets(Some(a)));
            if let Some(diff) = differs("kong", held, &want) {
                return Some(diff);
            }
            let named = |list: Value, name: &str| list.as_array().into_iter().flatten().any(|e| e["name"] == name);
            for name in want.keys() {
                let legacy = self.kong_legacy();
                let published =
                    if legacy { named(k.apis(), name) } else { named(k.services(), name) && named(k.routes(), name) };
                if !published {
                    return Some(format!("kong does not publish {name}"));
                }
            }
        }
        if self.has_vulcand() {
            let v = self.vulcand();
            let server = |s: &Value| Some((s["Id"].as_str()?.to_owned(), s["URL"].as_str()?.to_owned()));
            let held: BTreeMap<String, BTreeMap<String, String>> =
                listed(v.backends(), "Id", |id| id.starts_with("sb.default."))
                    .into_iter()
                    .map(|id| {
                        (id.clone(), v.servers(&id).as_array().into_iter().flatten().filter_map(server).collect())
                    })
                    .collect();
            let want = per_app(&apps, |s| format!("sb.default.{s}~"), |a| self.expected_vulcand_servers(Some(a)));
            if let Some(diff) = differs("vulcand", held, &want) {
                return Some(diff);
            }
            let frontends = v.frontends();
            for id in want.keys() {
                if !frontends.as_array().into_iter().flatten().any(|f| f["Id"] == id.as_str()) {
                    return Some(format!("vulcand has no frontend {id}"));
                }
            }
        }
        None
    }

    /// Waits until `mismatch` finds nothing; panics with the last difference.
    pub async fn converge_everywhere(&self, what: &str) {
        let deadline = Instant::now() + WAIT;
        loop {
            let Some(diff) = self.mismatch() else { return };
            assert!(Instant::now() < deadline, "timed out after {WAIT:?} waiting for: {what}; still: {diff}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Only the status update events of `events`.
pub fn status_only(events: &[SimEvent]) -> Vec<SimEvent> {
    events.iter().filter(|e| e.event_type == "status_update_event").cloned().collect()
}

impl Daemon {
    /// Successful resyncs so far; `None` while the daemon does not render it.
    pub async fn resyncs_ok(&self) -> Option<f64> {
        self.sample("switchboard_resyncs_total{result=\"ok\"}").await
    }

    /// Waits for `n` more successful resyncs than the daemon reports now
    /// (waiting first for the counter to exist: absence is not 0).
    pub async fn more_resyncs(&self, n: f64) {
        let deadline = Instant::now() + WAIT;
        let start = loop {
            if let Some(v) = self.resyncs_ok().await {
                break v;
            }
            assert!(Instant::now() < deadline, "the resync counter was never rendered within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        eventually_async(&format!("{n} more resyncs than {start}"), WAIT, || async {
            self.resyncs_ok().await.is_some_and(|v| v >= start + n)
        })
        .await;
    }

    /// Waits until `sample` is rendered and `ok(value)` holds.
    pub async fn wait_sample(&self, what: &str, sample: &str, ok: impl Fn(f64) -> bool) {
        eventually_async(what, WAIT, || async { self.sample(sample).await.is_some_and(&ok) }).await;
    }
}

// ==================== end of the shared test world ====================

/// One at a time within a test binary: for tests whose timing (short HA
/// leases, takeovers) must not compete with a heavy neighbour for the CPU.
/// Each test binary has its own copy; the guard is held for the whole test.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static ONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ONE.lock().await
}
