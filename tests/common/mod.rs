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
