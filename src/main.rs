//! `switchboard`: clap → Config → run / reconcile --once / state / sim / demo.
//! Exit codes are decided here only: 0 converged/ok, 1 operations still
//! failing (or a runtime error), 2 bad configuration or usage.
//!
//! Logging: `--log-format text` (default; colours only on a terminal) or
//! `json` (one object per line), always on stderr. Every line goes through
//! `Redactor`, which replaces the secrets of the environment (tokens,
//! passwords, the Basic header of `SWITCHBOARD_MARATHON_AUTH`) by `***`, so a
//! secret that slipped into an error message still never reaches the log.
//!
//! Errors a user meets first read as one line (`explain`): a data dir held
//! by another process (with its pid from `/proc/locks`, pointing at
//! `switchboard state`), Marathon unreachable, a backend or Marathon refusing
//! the credentials. Other errors print their cause chain without repeats.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, RwLock};

use clap::{Parser, Subcommand};
use switchboard::config::{CommonArgs, Config, ConfigError};
use tokio_util::sync::CancellationToken;

/// `switchboard --version`: the crate version and the git commit it was
/// built from (build.rs; "unknown" outside a git checkout).
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("SWITCHBOARD_COMMIT"), ")");

#[derive(Parser)]
#[command(name = "switchboard", version = VERSION, about = "Keeps Consul, Kong and Vulcand in step with Apache Marathon")]
struct Cli {
    /// Log format on stderr: `text` (human; colours on a terminal) or `json`
    /// (one object per line, fields as keys).
    #[arg(long, global = true, value_enum, env = "SWITCHBOARD_LOG_FORMAT", default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon: event stream, durable buffer, backends, periodic resync.
    Run {
        #[command(flatten)]
        common: CommonArgs,
    },
    /// One full resync against Marathon's snapshot, then exit.
    Reconcile {
        /// Required: run once and exit (the daemon is `switchboard run`).
        #[arg(long)]
        once: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Try again what backends refused for good (kept otherwise until its
        /// input changes). A daemon answering on --listen is asked to.
        #[arg(long)]
        retry_refused: bool,
        /// Without --ha: write even while a daemon of this cluster holds the
        /// HA lock (refused otherwise, exit code 2).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// After a lost data dir: list what Vulcand (and Kong before 1.1, which
    /// has no tags) holds under this cluster's naming scheme and, with
    /// --yes, record it in the ledger as Switchboard's. A dry run otherwise.
    Adopt {
        /// Record what is listed (otherwise nothing is recorded).
        #[arg(long)]
        yes: bool,
        /// List only, even with --yes.
        #[arg(long)]
        dry_run: bool,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        /// Record even while a daemon of this cluster holds the HA lock
        /// (refused otherwise, exit code 2).
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// Print what the store holds: apps, instances, pending, ledger, queue.
    State {
        /// Print JSON instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        common: CommonArgs,
    },
    /// The Marathon, Consul, Kong and Vulcand simulators as one process, for
    /// benchmarks and any Marathon consumer; prints one JSON line of URLs.
    Sim(SimArgs),
    /// Sandbox: simulators and the daemon in one process, converging live.
    Demo {
        /// Stay up after the scripted steps (Ctrl-C to stop).
        #[arg(long)]
        keep_running: bool,
    },
    /// GET a URL (e.g. http://127.0.0.1:9102/health) and exit 0 on a 2xx
    /// answer, 1 otherwise with one line saying why: a health check for
    /// orchestrators and container images without curl.
    Probe {
        /// The URL to GET (http or https).
        url: url::Url,
        /// Give up after this long (connect and answer together).
        #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

/// `switchboard probe`: `Ok(())` on a 2xx answer, else the one-line reason.
/// Redirects are not followed: a health endpoint answers itself.
async fn probe(url: &url::Url, timeout: std::time::Duration) -> Result<(), String> {
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
    let resp = client.get(url.clone()).send().await.map_err(|e| {
        if e.is_timeout() {
            format!("{url}: no answer within {}", humantime::format_duration(timeout))
        } else if e.is_connect() {
            format!("{url}: cannot connect ({})", innermost(&e))
        } else {
            format!("{url}: {}", innermost(&e))
        }
    })?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    // The body of /ready says what is missing: its first line, kept short.
    let body = tokio::time::timeout(timeout, resp.text()).await.ok().and_then(Result::ok).unwrap_or_default();
    let first: String = body.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("").chars().take(200).collect();
    if first.is_empty() { Err(format!("{url}: HTTP {status}")) } else { Err(format!("{url}: HTTP {status}: {first}")) }
}

/// The deepest cause of an error (reqwest's own text is "error sending request").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[derive(clap::Args)]
struct SimArgs {
    /// Apps pre-loaded into Marathon (every one on Consul, shares on Kong and Vulcand).
    #[arg(long, default_value_t = 0)]
    apps: usize,
    /// Instances per app.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// A fixed cost per write, BACKEND=DURATION (e.g. consul=3.6ms), or the
    /// profile `consul-agent`; repeatable.
    #[arg(long, value_name = "BACKEND=DUR")]
    latency: Vec<switchboard::sim::tap::WriteLatency>,
    /// Ports on 127.0.0.1 (0 = pick a free one).
    #[arg(long, default_value_t = 0)]
    marathon_port: u16,
    #[arg(long, default_value_t = 0)]
    consul_port: u16,
    #[arg(long, default_value_t = 0)]
    kong_port: u16,
    #[arg(long, default_value_t = 0)]
    vulcand_port: u16,
    /// Port of the control API (deploy storm, scale, restart, destroy, churn, counts).
    #[arg(long, default_value_t = 0)]
    control_port: u16,
    /// Deployment events carry full app definitions (Marathon <= 1.6).
    #[arg(long)]
    heavy_plans: bool,
    /// Seed of the churn's task choice.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

/// `switchboard sim`: starts the simulators, prints their URLs as one JSON
/// line on stdout, and serves until SIGINT/SIGTERM.
async fn run_sim(args: SimArgs) -> ExitCode {
    use switchboard::sim::cluster::{ClusterOptions, Ports, SimCluster};
    use switchboard::sim::scenario::Scenario;
    let opts = ClusterOptions {
        scenario: Scenario { apps: args.apps, instances: args.instances },
        latency: args.latency,
        ports: Ports {
            marathon: args.marathon_port,
            consul: args.consul_port,
            kong: args.kong_port,
            vulcand: args.vulcand_port,
            control: args.control_port,
        },
        heavy_plans: args.heavy_plans,
        seed: args.seed,
    };
    let stop = CancellationToken::new();
    let cluster = match SimCluster::start(opts, stop.clone()).await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("switchboard sim: cannot start the simulators: {e}");
            return ExitCode::from(1);
        }
    };
    {
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        if writeln!(out, "{}", cluster.describe()).and_then(|()| out.flush()).is_err() {
            return ExitCode::from(1);
        }
    }
    wait_for_signal().await;
    stop.cancel();
    ExitCode::SUCCESS
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// How often secret files are read again for `Redactor`.
const SECRET_FILE_REREAD: std::time::Duration = std::time::Duration::from_secs(5);

/// Replaces known secret values by `***` in everything logged. Each log
/// event reaches the writer in one `write` (tracing-subscriber formats a
/// whole line first), so a secret is never split across two writes.
#[derive(Clone, Default)]
struct Redactor {
    /// Secret values, longest first; a std lock read once per line.
    secrets: Arc<RwLock<Vec<String>>>,
}

impl Redactor {
    /// Hides `value`, and for `user:password` also the password alone and
    /// the Basic header that carries both.
    fn hide(&self, value: &str) {
        use base64::Engine;
        let value = value.trim();
        if value.len() < 3 {
            return;
        }
        let mut add = vec![value.to_owned(), base64::engine::general_purpose::STANDARD.encode(value)];
        if let Some((_, password)) = value.split_once(':')
            && password.len() >= 3
        {
            add.push(password.to_owned());
        }
        let mut secrets = self.secrets.write().unwrap_or_else(|p| p.into_inner());
        if add.iter().all(|a| secrets.contains(a)) {
            return;
        }
        secrets.extend(add);
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
    }

    /// The secrets of the environment, read directly (before any config).
    /// A secret file may be rewritten while the daemon runs (a fresh DC/OS
    /// token, which the Marathon client re-reads on a 401): a thread
    /// re-reads the files every `SECRET_FILE_REREAD` and hides new values too.
    fn hide_env(&self) {
        let mut files = Vec::new();
        // Marathon's and each backend's (and the files their `*_FILE` forms name).
        for var in switchboard::config::secret_vars() {
            if let Ok(v) = std::env::var(var) {
                self.hide(&v);
            }
            if let Ok(path) = std::env::var(format!("{var}_FILE")) {
                if let Ok(v) = std::fs::read_to_string(&path) {
                    self.hide(&v);
                }
                files.push(path);
            }
        }
        if !files.is_empty() {
            let me = self.clone();
            std::thread::spawn(move || {
                loop {
                    std::thread::sleep(SECRET_FILE_REREAD);
                    for path in &files {
                        if let Ok(v) = std::fs::read_to_string(path) {
                            me.hide(&v);
                        }
                    }
                }
            });
        }
    }

    fn hide_config(&self, cfg: &Config) {
        for s in cfg.secrets() {
            self.hide(s.expose());
        }
    }

    fn redact(&self, text: &str) -> String {
        let secrets = self.secrets.read().unwrap_or_else(|p| p.into_inner());
        let mut out = text.to_owned();
        for s in secrets.iter() {
            if out.contains(s.as_str()) {
                out = out.replace(s.as_str(), "***");
            }
        }
        out
    }
}

/// Stderr behind the redactor.
struct RedactedStderr(Redactor);

impl Write for RedactedStderr {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let text = self.0.redact(&String::from_utf8_lossy(buf));
        std::io::stderr().lock().write_all(text.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Redactor {
    type Writer = RedactedStderr;

    fn make_writer(&'a self) -> Self::Writer {
        RedactedStderr(self.clone())
    }
}

/// Prints one line on stderr, redacted.
fn say(redactor: &Redactor, line: &str) {
    let _ = writeln!(std::io::stderr(), "{}", redactor.redact(line));
}

fn init_tracing(format: LogFormat, default: &str) -> Redactor {
    let redactor = Redactor::default();
    redactor.hide_env();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(redactor.clone()).with_target(false);
    match format {
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).init(),
    }
    redactor
}

fn config_error(redactor: &Redactor, e: &ConfigError) -> ExitCode {
    say(redactor, &format!("switchboard: {e}"));
    ExitCode::from(2)
}

fn load(redactor: &Redactor, common: &CommonArgs) -> Result<Config, ExitCode> {
    let cfg = Config::load(common).map_err(|e| config_error(redactor, &e))?;
    redactor.hide_config(&cfg);
    cfg.require_runnable().map_err(|e| config_error(redactor, &e))?;
    Ok(cfg)
}

/// The pid holding a lock on a file of `dir`, from `/proc/locks` (Linux).
fn lock_holder(dir: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inodes: Vec<u64> =
        std::fs::read_dir(dir).ok()?.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.ino()).collect();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    let me = std::process::id();
    locks.lines().find_map(|line| {
        // `1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF` (waiters add a `->` field).
        let fields: Vec<&str> = line.split_whitespace().filter(|f| *f != "->").collect();
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let inode: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
        (inodes.contains(&inode) && pid != me).then_some(pid)
    })
}

/// One line for the errors a user meets first; `None` for the others.
fn explain(e: &anyhow::Error, data_dir: Option<&Path>, listen: Option<&str>) -> Option<String> {
    use switchboard::backends::BackendError;
    use switchboard::marathon::client::Error as MarathonError;
    let chain = format!("{e:#}");
    if chain.contains("could not acquire lock") {
        let dir = data_dir.map(|d| d.display().to_string()).unwrap_or_else(|| "the data dir".into());
        let who = match data_dir.and_then(lock_holder) {
            Some(pid) => format!("another process (pid {pid})"),
            None => "another process".to_owned(),
        };
        let ask = match listen {
            Some(l) => format!("`switchboard state --listen {l}`"),
            None => "`switchboard state`".to_owned(),
        };
        return Some(format!(
            "{who} holds the data dir {dir} (could not acquire lock): a daemon is probably running on it; {ask} asks it what it holds"
        ));
    }
    for cause in e.chain() {
        let marathon = match cause.downcast_ref::<switchboard::reconcile::Error>() {
            Some(switchboard::reconcile::Error::Marathon(m)) => Some(m),
            _ => cause.downcast_ref::<MarathonError>(),
        };
        if let Some(m) = marathon {
            return Some(match m {
                // `tls::explain` already said what failed and which setting fixes it.
                MarathonError::Http { endpoint, cause, .. } if cause.starts_with("TLS handshake") => {
                    format!("Marathon at {endpoint}: {cause}")
                }
                MarathonError::Http { endpoint, cause, .. } => {
                    let why = cause.rsplit(": ").next().unwrap_or(cause);
                    format!("cannot reach Marathon at {endpoint} ({why}): check --marathon / SWITCHBOARD_MARATHON_URL")
                }
                MarathonError::Status { endpoint, status: status @ (401 | 403), .. } => format!(
                    "Marathon at {endpoint} refused the credentials (HTTP {status}): check SWITCHBOARD_MARATHON_AUTH"
                ),
                other => format!("Marathon: {other}"),
            });
        }
        if let Some(BackendError::Permanent { backend, message, .. }) = cause.downcast_ref::<BackendError>()
            && let Some(line) = switchboard::once::refused_credentials(backend, message)
        {
            return Some(line);
        }
    }
    None
}

/// An error as one line: `explain`'s words, else the cause chain without
/// causes that only repeat the one before.
fn one_line(e: &anyhow::Error, data_dir: Option<&Path>, listen: Option<&str>) -> String {
    if let Some(line) = explain(e, data_dir, listen) {
        return line;
    }
    let mut parts: Vec<String> = Vec::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if parts.last().is_some_and(|p| p.contains(&text)) {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ").replace('\n', " ")
}

/// glibc's malloc gives each thread that allocates an arena of its own (up to
/// 8 per core) and keeps each arena's high-water mark resident: sled's threads,
/// the store thread and the runtime's workers each held their own. Two arenas:
/// peak RSS 339 → 221 MiB at 10,000 instances (BENCHMARKS.md, "Issue 18: where
/// the memory goes"). A `MALLOC_ARENA_MAX` in the environment wins.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: called first thing in `main`, before any thread exists; it
        // only sets a parameter of glibc's malloc.
        unsafe {
            libc::mallopt(libc::M_ARENA_MAX, 2);
        }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

fn main() -> ExitCode {
    limit_malloc_arenas();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let format = cli.log_format;
    runtime.block_on(async move {
        match cli.command {
            Command::Run { common } => {
                let redactor = init_tracing(format, "info");
                let cfg = match load(&redactor, &common) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let (data_dir, listen) = (cfg.data_dir.clone(), cfg.listen.to_string());
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    on_signal.cancel();
                });
                match switchboard::daemon::run(cfg, shutdown, None).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        say(&redactor, &format!("switchboard: {}", one_line(&e, Some(&data_dir), Some(&listen))));
                        if explain(&e, None, None).is_none() && e.to_string().starts_with("invalid setting") {
                            ExitCode::from(2)
                        } else {
                            ExitCode::from(1)
                        }
                    }
                }
            }
            Command::Reconcile { once, dry_run, json, retry_refused, force, common } => {
                // The final error names the Marathon that failed; the client's
                // per-URL warnings would repeat it (SWITCHBOARD_LOG shows them).
                let redactor = init_tracing(format, "warn,switchboard::marathon::client=error");
                if !once {
                    say(&redactor, "switchboard: reconcile needs --once (the long-running form is `switchboard run`)");
                    return ExitCode::from(2);
                }
                let cfg = match load(&redactor, &common) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let (data_dir, listen) = (cfg.data_dir.clone(), cfg.listen.to_string());
                if retry_refused && !dry_run {
                    match switchboard::once::ask_daemon_to_retry(&cfg).await {
                        Ok(Some(lifted)) => {
                            println!("the daemon on {} lifted {lifted} refusal(s) and retries them now", cfg.listen);
                            return ExitCode::SUCCESS;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            say(&redactor, &format!("switchboard: {}", one_line(&e, Some(&data_dir), Some(&listen))));
                            // An HA standby answered 409: the leader is the one to ask.
                            let standby = e.downcast_ref::<switchboard::once::AskedAStandby>().is_some();
                            return ExitCode::from(if standby { 2 } else { 1 });
                        }
                    }
                }
                // A progress bar only for a person watching: stderr a terminal, no --json.
                let progress = !json && std::io::IsTerminal::is_terminal(&std::io::stderr());
                match switchboard::once::once_with_progress(&cfg, dry_run, retry_refused, force, progress).await {
                    Ok(report) => {
                        if json {
                            match serde_json::to_string_pretty(&report) {
                                Ok(s) => println!("{s}"),
                                Err(e) => say(&redactor, &format!("switchboard: cannot encode report: {e}")),
                            }
                        } else {
                            print!("{}", redactor.redact(&report.render_table()));
                        }
                        if report.converged() { ExitCode::SUCCESS } else { ExitCode::from(1) }
                    }
                    Err(e) => {
                        say(&redactor, &format!("switchboard: {}", one_line(&e, Some(&data_dir), Some(&listen))));
                        // Another replica holds the HA lock: not ours to run now.
                        let held = e.downcast_ref::<switchboard::ha::LockHeld>().is_some()
                            || e.downcast_ref::<switchboard::ha::DaemonLeads>().is_some();
                        if held || (explain(&e, None, None).is_none() && e.to_string().starts_with("invalid setting")) {
                            ExitCode::from(2)
                        } else {
                            ExitCode::from(1)
                        }
                    }
                }
            }
            Command::Adopt { yes, dry_run, json, force, common } => {
                let redactor = init_tracing(format, "warn,switchboard::marathon::client=error");
                let cfg = match load(&redactor, &common) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let (data_dir, listen) = (cfg.data_dir.clone(), cfg.listen.to_string());
                let record = yes && !dry_run;
                match switchboard::adopt::adopt(&cfg, record, force).await {
                    Ok(report) => {
                        if json {
                            match serde_json::to_string_pretty(&report) {
                                Ok(s) => println!("{s}"),
                                Err(e) => say(&redactor, &format!("switchboard: cannot encode report: {e}")),
                            }
                        } else {
                            print!("{}", redactor.redact(&report.render_table()));
                        }
                        let unrecorded = report.rows.iter().any(|r| r.action == "adopt");
                        if unrecorded && !yes && !dry_run && !std::io::IsTerminal::is_terminal(&std::io::stdin()) {
                            say(
                                &redactor,
                                "switchboard adopt: not a terminal and no --yes: a dry run, nothing recorded",
                            );
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        say(&redactor, &format!("switchboard: {}", one_line(&e, Some(&data_dir), Some(&listen))));
                        let held = e.downcast_ref::<switchboard::adopt::BesideALeader>().is_some();
                        if held || (explain(&e, None, None).is_none() && e.to_string().starts_with("invalid setting")) {
                            ExitCode::from(2)
                        } else {
                            ExitCode::from(1)
                        }
                    }
                }
            }
            Command::State { json, common } => {
                let redactor = init_tracing(format, "warn");
                let cfg = match Config::load(&common) {
                    Ok(c) => c,
                    Err(e) => return config_error(&redactor, &e),
                };
                redactor.hide_config(&cfg);
                match switchboard::state::read(&cfg).await {
                    Ok(report) => {
                        if json {
                            match serde_json::to_string_pretty(&report) {
                                Ok(s) => println!("{s}"),
                                Err(e) => eprintln!("switchboard: cannot encode state: {e}"),
                            }
                        } else {
                            print!("{}", report.render_text());
                        }
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        let line = one_line(&e, Some(&cfg.data_dir), None);
                        let line = if explain(&e, None, None).is_some() {
                            format!("no daemon answered on {}; {line}", cfg.listen)
                        } else {
                            line
                        };
                        say(&redactor, &format!("switchboard: {line}"));
                        ExitCode::from(1)
                    }
                }
            }
            Command::Sim(args) => {
                init_tracing(format, "warn");
                run_sim(args).await
            }
            Command::Probe { url, timeout } => match probe(&url, timeout).await {
                Ok(()) => ExitCode::SUCCESS,
                Err(why) => {
                    eprintln!("switchboard probe: {why}");
                    ExitCode::from(1)
                }
            },
            Command::Demo { keep_running } => {
                init_tracing(format, "warn");
                match switchboard::demo::run(keep_running).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("switchboard demo: {e:#}");
                        ExitCode::from(1)
                    }
                }
            }
        }
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}
