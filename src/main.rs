//! pgrelay's command line: run the pooler, check a configuration, or start the demo.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgrelay::config::{Config, LogFormat};
use tracing::{error, info, warn};

#[derive(Parser)]
#[command(
    name = "pgrelay",
    version,
    about = "PostgreSQL connection pooler and read/write query router"
)]
struct Cli {
    /// YAML configuration file (else $PGRELAY_CONFIG; PGBOUNCER_* variables override it).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the pooler (the default).
    Run,
    /// Validate the configuration and print the effective settings (secrets masked).
    CheckConfig,
    /// Explain where a statement would be routed, which rule matched and why.
    Route {
        /// The SQL text (several statements allowed).
        sql: String,
        /// Database and user the session would have (rules may match on them).
        #[arg(long, default_value = "app")]
        database: String,
        #[arg(long, default_value = "app")]
        user: String,
        #[arg(long)]
        application_name: Option<String>,
        /// Rule files to load instead of the configured ones.
        #[arg(long = "rules")]
        rules: Vec<PathBuf>,
    },
    /// Start a local PostgreSQL primary + 2 replicas + DNS server with pgrelay in front.
    Demo {
        /// Port pgrelay listens on (127.0.0.1); 0 picks a free one.
        #[arg(long, default_value_t = 6432)]
        port: u16,
    },
}

fn env_map() -> BTreeMap<String, String> {
    std::env::vars().collect()
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGRELAY_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // stderr, as PgBouncer logs without a logfile: stdout stays for what a
    // command prints (the demo's connection strings), and colour codes are
    // left out when stderr is not a terminal.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command.unwrap_or(Command::Run) {
        Command::CheckConfig => match Config::load(cli.config.as_deref(), &env_map()) {
            Ok(cfg) => {
                print!("{}", pgrelay::config::check_config_report(&cfg));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("pgrelay: invalid configuration: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Route {
            sql,
            database,
            user,
            application_name,
            rules,
        } => {
            let rules = if rules.is_empty() {
                match Config::load(cli.config.as_deref(), &env_map()) {
                    Ok(cfg) => cfg.routing.rule_files_or_default(|p| p.exists()),
                    // No usable config: the shipped rules still explain the decision.
                    Err(_) => Vec::new(),
                }
            } else {
                rules
            };
            let ruleset = if rules.is_empty() {
                Ok(pgrelay::router::RuleSet::builtin())
            } else {
                pgrelay::router::RuleSet::load(&rules)
            };
            match ruleset {
                Ok(ruleset) => {
                    let classifier = pgrelay::router::Classifier::new(ruleset, 0);
                    let mut ctx = pgrelay::router::SessionContext::new(&database, &user);
                    ctx.application_name = application_name.as_deref();
                    print!("{}", pgrelay::router::explain(&classifier, &sql, &ctx));
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pgrelay route: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Demo { port } => {
            init_logging(LogFormat::Text);
            // As `run` with the default settings: per-core runtimes.
            let runtime = build_runtime(&Default::default()).expect("tokio runtime");
            match runtime.block_on(demo(port)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pgrelay demo: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Run => {
            let cfg = match Config::load(cli.config.as_deref(), &env_map()) {
                Ok(cfg) => cfg,
                Err(e) => {
                    eprintln!("pgrelay: invalid configuration: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(cfg.logging.log_format);
            for w in cfg.warnings() {
                warn!("{w}");
            }
            let runtime = match build_runtime(&cfg.runtime) {
                Ok(runtime) => runtime,
                Err(e) => {
                    eprintln!("pgrelay: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            match runtime.block_on(run(cfg, cli.config)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    error!("{e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}

/// Per-core scheduling, and one thread, run the entry point on a
/// current-thread runtime (core 0; `app::start` adds the other cores);
/// `work_stealing` with more threads uses tokio's work-stealing scheduler.
fn build_runtime(
    runtime: &pgrelay::config::RuntimeConfig,
) -> std::io::Result<tokio::runtime::Runtime> {
    match (runtime.threads(), runtime.scheduler) {
        (n, pgrelay::config::Scheduler::WorkStealing) if n > 1 => {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(n)
                .enable_all()
                .build()
        }
        _ => pgrelay::idle_poll::current_thread_runtime(),
    }
}

async fn run(cfg: Config, config_path: Option<PathBuf>) -> Result<(), pgrelay::app::AppError> {
    use tokio::signal::unix::{signal, SignalKind};
    // Handlers first: a SIGTERM as soon as "listening" is logged must drain,
    // not kill the process.
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    let mut hup = signal(SignalKind::hangup()).expect("SIGHUP handler");
    let running = pgrelay::app::start_from(cfg, config_path.clone()).await?;
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = running.stop_requested() => break,
            _ = hup.recv() => match pgrelay::frontend::Directory::reload(running.app.as_ref(), &running.pools) {
                Ok(()) => info!("configuration reloaded"),
                Err(e) => error!("reload failed, keeping the old configuration: {e}"),
            },
        }
    }
    info!("shutting down: draining sessions");
    running.shutdown().await;
    Ok(())
}

/// The demo: a real cluster, pgrelay in front of it, torn down on Ctrl-C.
async fn demo(port: u16) -> Result<(), Box<dyn std::error::Error>> {
    use pgrelay::demo::{DemoCluster, DemoOptions};
    println!("starting PostgreSQL primary + 2 streaming replicas + DNS server ...");
    let cluster =
        tokio::task::spawn_blocking(|| DemoCluster::start(&DemoOptions::default())).await??;
    let config = pgrelay::demo::pgrelay_config(cluster.cluster(), port)?;
    let running = match pgrelay::app::start(config.clone()).await {
        Ok(r) => r,
        // 6432 may belong to a real PgBouncer: fall back to any free port.
        Err(pgrelay::app::AppError::Bind { .. }) if port != 0 => {
            pgrelay::app::start(pgrelay::demo::pgrelay_config(cluster.cluster(), 0)?).await?
        }
        Err(e) => return Err(e.into()),
    };
    println!("{}", cluster.describe());
    let (user, password) = cluster.cluster().app_user();
    println!(
        "pgrelay (transaction pooling) listens on {}",
        running.addrs[0]
    );
    println!(
        "    psql \"host=127.0.0.1 port={} user={user} password={password} dbname={}\"",
        running.addrs[0].port(),
        cluster.cluster().database()
    );
    println!(
        "Reads go to the replicas DNS names once their health checks pass (a few seconds); \
         until then, to the primary."
    );
    println!("Press Ctrl-C to stop pgrelay and the cluster and delete its files.");
    // SIGTERM too (`kill`, `timeout`, a container stop): without it the
    // process would die without stopping the PostgreSQL servers it started.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        signalled = tokio::signal::ctrl_c() => signalled?,
        _ = term.recv() => {}
    }
    running.shutdown().await;
    tokio::task::spawn_blocking(move || drop(cluster)).await?;
    println!("demo stopped and removed");
    Ok(())
}
