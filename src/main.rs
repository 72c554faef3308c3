//! `switchboard`: clap → Config → run / reconcile --once / state / sim / demo.
//! Exit codes are decided here only: 0 converged/ok, 1 operations still
//! failing (or a runtime error), 2 bad configuration or usage.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use switchboard::config::{CommonArgs, Config, ConfigError};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(name = "switchboard", version, about = "Keeps Consul, Kong and Vulcand in step with Apache Marathon")]
struct Cli {
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

fn init_tracing(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SWITCHBOARD_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
}

fn config_error(e: &ConfigError) -> ExitCode {
    eprintln!("switchboard: {e}");
    ExitCode::from(2)
}

fn load(common: &CommonArgs) -> Result<Config, ExitCode> {
    let cfg = Config::load(common).map_err(|e| config_error(&e))?;
    cfg.require_runnable().map_err(|e| config_error(&e))?;
    Ok(cfg)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("switchboard: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        match cli.command {
            Command::Run { common } => {
                init_tracing("info");
                let cfg = match load(&common) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                let shutdown = CancellationToken::new();
                let on_signal = shutdown.clone();
                tokio::spawn(async move {
                    wait_for_signal().await;
                    on_signal.cancel();
                });
                match switchboard::daemon::run(cfg, shutdown, None).await {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("switchboard: {e:#}");
                        if e.to_string().starts_with("invalid setting") { ExitCode::from(2) } else { ExitCode::from(1) }
                    }
                }
            }
            Command::Reconcile { once, dry_run, json, retry_refused, common } => {
                init_tracing("warn");
                if !once {
                    eprintln!("switchboard: reconcile needs --once (the long-running form is `switchboard run`)");
                    return ExitCode::from(2);
                }
                let cfg = match load(&common) {
                    Ok(c) => c,
                    Err(code) => return code,
                };
                if retry_refused && !dry_run {
                    match switchboard::reconcile::ask_daemon_to_retry(&cfg).await {
                        Ok(Some(lifted)) => {
                            println!("the daemon on {} lifted {lifted} refusal(s) and retries them now", cfg.listen);
                            return ExitCode::SUCCESS;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            eprintln!("switchboard: {e:#}");
                            return ExitCode::from(1);
                        }
                    }
                }
                match switchboard::reconcile::once(&cfg, dry_run, retry_refused).await {
                    Ok(report) => {
                        if json {
                            match serde_json::to_string_pretty(&report) {
                                Ok(s) => println!("{s}"),
                                Err(e) => eprintln!("switchboard: cannot encode report: {e}"),
                            }
                        } else {
                            print!("{}", report.render_table());
                        }
                        if report.converged() { ExitCode::SUCCESS } else { ExitCode::from(1) }
                    }
                    Err(e) => {
                        eprintln!("switchboard: {e:#}");
                        // Another replica holds the HA lock: not ours to run now.
                        let held = e.downcast_ref::<switchboard::ha::LockHeld>().is_some();
                        let usage = held || e.to_string().starts_with("invalid setting");
                        if usage { ExitCode::from(2) } else { ExitCode::from(1) }
                    }
                }
            }
            Command::State { json, common } => {
                init_tracing("warn");
                let cfg = match Config::load(&common) {
                    Ok(c) => c,
                    Err(e) => return config_error(&e),
                };
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
                        eprintln!("switchboard: {e:#}");
                        ExitCode::from(1)
                    }
                }
            }
            Command::Sim(args) => {
                init_tracing("warn");
                run_sim(args).await
            }
            Command::Demo { keep_running } => {
                init_tracing("warn");
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
