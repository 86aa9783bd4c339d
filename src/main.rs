//! `tollgate`: the API gateway, developer portal and admin API in one binary.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tollgate::app::{self, Mode};
use tollgate::demo;
use tollgate_core::Settings;

// mimalloc: fewer cycles per allocation than glibc on the request path, and
// less fragmentation under many small, short-lived allocations.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Tollgate: API management with a metering gateway and a developer portal.
///
/// Settings come from embedded defaults, then a TOML file (--config, or
/// ./tollgate.toml when present), then TOLLGATE_* environment variables
/// (plus DATABASE_URL and CLICKHOUSE_URL). See docs/configuration.md.
#[derive(Parser, Debug)]
#[command(name = "tollgate", version, about, long_about)]
struct Cli {
    /// Path to a tollgate.toml settings file.
    #[arg(long, global = true, value_name = "PATH")]
    config: Option<PathBuf>,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the gateway, the portal and the admin API in one process.
    Up {
        /// Seed a demo API with a built-in sample upstream, a plan, a developer,
        /// an app and a key, generate an admin token when none is configured,
        /// and print a curl command that works. Works offline; a second run on
        /// the same data dir reuses the demo.
        #[arg(long)]
        demo: bool,
    },
    /// Run only the gateway (the data plane); scale out by running several.
    Gateway,
    /// Run only the portal and the admin API (the control plane).
    Portal,
    /// Apply migrations to the control-plane database and the usage store, then exit.
    Migrate,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(cli.config.as_deref()) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&settings.log);
    // One worker means one thread: a current-thread runtime runs every task on
    // this thread, without the multi-thread scheduler's cross-thread queues and
    // wake-ups (and without an idle main thread beside the one worker).
    let mut builder = match settings.workers {
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        workers => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if let Some(n) = workers {
                b.worker_threads(n);
            }
            b
        }
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli.command, &mut settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}

async fn run(command: Command, settings: &mut Settings) -> anyhow::Result<()> {
    let (store, usage) = app::open_stores(settings).await?;
    let (mode, demo_mode) = match command {
        Command::Migrate => {
            println!(
                "Migrations applied: control plane ({}), usage store ({}).",
                backend_name(&store),
                usage.describe()
            );
            store.close().await;
            return Ok(());
        }
        Command::Up { demo } => (Mode::All, demo),
        Command::Gateway => (Mode::Gateway, false),
        Command::Portal => (Mode::Portal, false),
    };

    let mut demo_state = None;
    let mut _sample_upstream = None;
    if demo_mode {
        let (upstream, task) = demo::start_sample_upstream().await?;
        _sample_upstream = Some(task);
        let state = demo::seed(&store, &settings.data_dir, upstream).await?;
        // A configured token always wins over the demo's.
        if settings.admin_token.is_none() {
            settings.admin_token = Some(state.admin_token.clone());
        }
        demo_state = Some(state);
    }

    let running = app::start(settings, mode, store, usage).await?;
    println!("Tollgate {} is running.", env!("CARGO_PKG_VERSION"));
    for line in running.banner(settings) {
        println!("  {line}");
    }
    if running.admin_addr.is_some() {
        match &settings.admin_token {
            Some(t) => println!("  Admin token: {t}"),
            None => println!("  Admin API disabled: set TOLLGATE_ADMIN_TOKEN to enable it."),
        }
    }
    if let (Some(state), Some(gw)) = (&demo_state, running.gateway_addr) {
        println!("  Demo key:  {}", state.key);
        println!(
            "Try: curl -H 'x-api-key: {}' {}/demo/hello",
            state.key,
            settings.gateway_url(gw)
        );
    }
    println!("Press Ctrl-C to stop.");

    wait_for_signal().await;
    eprintln!("Shutting down: finishing calls in flight and writing usage...");
    running.stop().await;
    Ok(())
}

fn backend_name(store: &tollgate_core::Store) -> &'static str {
    match store.backend() {
        tollgate_core::store::Backend::Sqlite => "SQLite",
        tollgate_core::store::Backend::Postgres => "PostgreSQL",
    }
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
