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
