//! `switchboard-bench`: measures Switchboard end to end. Starts `switchboard
//! sim` and `switchboard run` as separate processes and prints a markdown
//! table (or `--json`). `switchboard-bench plot` draws BENCHMARKS.md's PNG
//! from saved `--json` reports.
//!
//! Exit codes: 0 every phase converged, 1 some phase did not (or the harness
//! failed), 2 bad usage.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use switchboard::bench::report::Report;
use switchboard::bench::run::{Options, run};
use switchboard::sim::scenario::Scenario;
use switchboard::sim::tap::{SimBackend, WriteLatency};

#[derive(Parser)]
#[command(name = "switchboard-bench", version, about = "Measures Switchboard against its simulators or real servers")]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    #[command(flatten)]
    measure: Measure,
}

#[derive(Subcommand)]
enum Cmd {
    /// Draw latency and cold resync against cluster size from `--json` reports.
    Plot {
        /// PNG to write.
        #[arg(long, default_value = "benchmarks.png")]
        out: PathBuf,
        /// TrueType font for the text (Debian: fonts-dejavu-core).
        #[arg(long, default_value = switchboard::bench::plot::DEFAULT_FONT)]
        font: PathBuf,
        /// Report files written with `--json`.
        #[arg(required = true)]
        reports: Vec<PathBuf>,
    },
}

fn parse_secs(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

#[derive(Args)]
struct Measure {
    /// Apps in the scenario.
    #[arg(long, default_value_t = 1000)]
    apps: usize,
    /// Instances per app.
    #[arg(long, default_value_t = 10)]
    instances: usize,
    /// Backends to measure (comma list of consul, kong, vulcand).
    #[arg(long, value_delimiter = ',', default_value = "consul,kong,vulcand")]
    backends: Vec<SimBackend>,
    /// Fixed cost per write in the simulators: BACKEND=DUR or `consul-agent`; repeatable.
    #[arg(long, value_name = "BACKEND=DUR")]
    latency: Vec<WriteLatency>,
    /// A real Consul agent instead of the simulator (no latencies then).
    #[arg(long, value_name = "URL")]
    consul: Option<String>,
    /// A real Kong Admin API instead of the simulator.
    #[arg(long, value_name = "URL")]
    kong: Option<String>,
    /// A real Vulcand API instead of the simulator.
    #[arg(long, value_name = "URL")]
    vulcand: Option<String>,
    /// The `switchboard` binary (default: next to this one).
    #[arg(long)]
    switchboard: Option<PathBuf>,
    /// Marathon <= 1.6 deployment events with full app definitions (heavy plans).
    #[arg(long)]
    heavy_plans: bool,
    /// Skip the floor.
    #[arg(long)]
    no_floor: bool,
    /// Writes in flight per backend in the concurrent floor.
    #[arg(long, default_value_t = 8)]
    floor_concurrency: usize,
    /// Share of the storm's events put out of order.
    #[arg(long, default_value_t = 0.2)]
    out_of_order: f64,
    /// Share of all instances restarted per second during churn.
    #[arg(long, default_value_t = 0.05)]
    churn_rate: f64,
    /// How long churn lasts.
    #[arg(long, default_value = "30s", value_parser = parse_secs)]
    churn_duration: Duration,
    /// Deadline of the cold resync.
    #[arg(long, default_value = "600s", value_parser = parse_secs)]
    cold_deadline: Duration,
    /// Deadline of the event storm.
    #[arg(long, default_value = "600s", value_parser = parse_secs)]
    storm_deadline: Duration,
    /// Deadline after the churn's last restart.
    #[arg(long, default_value = "300s", value_parser = parse_secs)]
    churn_deadline: Duration,
    /// Deadline of the idle resync.
    #[arg(long, default_value = "300s", value_parser = parse_secs)]
    idle_deadline: Duration,
    /// A phase gives up early when the daemon's HTTP server has not answered this long.
    #[arg(long, default_value = "60s", value_parser = parse_secs)]
    hang_after: Duration,
    /// How often the harness polls the simulator's counts.
    #[arg(long, default_value = "100ms", value_parser = parse_secs)]
    poll: Duration,
    /// Extra argument for `switchboard run` (repeatable), e.g. `--daemon-arg=--grace-period=500ms`.
    #[arg(long, allow_hyphen_values = true)]
    daemon_arg: Vec<String>,
    /// Keep the store and daemon logs here instead of a temporary directory.
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Free text recorded in the report (e.g. the commit measured).
    #[arg(long, default_value = "")]
    label: String,
    /// Seed of the disorder and the churn's choices.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Print the report as JSON instead of a markdown table.
    #[arg(long)]
    json: bool,
}

fn sibling_switchboard() -> anyhow::Result<PathBuf> {
    let me = std::env::current_exe().context("locating switchboard-bench")?;
    let dir = me.parent().context("switchboard-bench has no directory")?;
    let candidate = dir.join(format!("switchboard{}", std::env::consts::EXE_SUFFIX));
    if candidate.is_file() {
        Ok(candidate)
    } else {
        anyhow::bail!("no switchboard binary next to {} (build it, or pass --switchboard PATH)", me.display())
    }
}

fn progress() -> indicatif::ProgressBar {
    if !std::io::stderr().is_terminal() {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(0);
    let style = indicatif::ProgressStyle::with_template("{elapsed_precise} [{bar:40}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

fn plot(out: PathBuf, font: PathBuf, reports: Vec<PathBuf>) -> anyhow::Result<()> {
    let mut parsed: Vec<Report> = Vec::new();
    for path in &reports {
        let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        parsed.push(serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?);
    }
    let text = switchboard::bench::plot::draw(&parsed, &out, &font)?;
    if !text {
        eprintln!(
            "switchboard-bench: no font at {} (install fonts-dejavu-core): plot drawn without text",
            font.display()
        );
    }
    eprintln!("wrote {}", out.display());
    Ok(())
}

async fn measure(m: Measure) -> anyhow::Result<Report> {
    let switchboard = match m.switchboard {
        Some(p) => p,
        None => sibling_switchboard()?,
    };
    let mut backends = m.backends;
    backends.sort();
    backends.dedup();
    let real: Vec<(SimBackend, String)> =
        [(SimBackend::Consul, m.consul), (SimBackend::Kong, m.kong), (SimBackend::Vulcand, m.vulcand)]
            .into_iter()
            .filter_map(|(b, u)| u.map(|u| (b, u)))
            .collect();
    let opts = Options {
        switchboard,
        scenario: Scenario { apps: m.apps, instances: m.instances },
        backends,
        latency: m.latency,
        real,
        heavy_plans: m.heavy_plans,
        floor: !m.no_floor,
        floor_concurrency: m.floor_concurrency,
        out_of_order: m.out_of_order,
        churn_per_second: m.churn_rate,
        churn_seconds: m.churn_duration.as_secs_f64(),
        cold_deadline: m.cold_deadline,
        storm_deadline: m.storm_deadline,
        churn_deadline: m.churn_deadline,
        idle_deadline: m.idle_deadline,
        hang_after: m.hang_after,
        start_deadline: Duration::from_secs(300),
        poll: m.poll,
        daemon_args: m.daemon_arg,
        work_dir: m.work_dir,
        label: m.label,
        seed: m.seed,
        progress: progress(),
    };
    run(&opts).await
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false).init();
    if let Some(Cmd::Plot { out, font, reports }) = cli.command {
        return match plot(out, font, reports) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("switchboard-bench plot: {e:#}");
                ExitCode::from(1)
            }
        };
    }
    let json = cli.measure.json;
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard-bench: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(measure(cli.measure)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("switchboard-bench: cannot encode the report: {e}");
                        return ExitCode::from(1);
                    }
                }
            } else {
                print!("{}", report.markdown());
            }
            if report.ok { ExitCode::SUCCESS } else { ExitCode::from(1) }
        }
        Err(e) => {
            eprintln!("switchboard-bench: {e:#}");
            ExitCode::from(1)
        }
    }
}
