//! `tollgate`: the API gateway, developer portal and admin API in one binary.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use tollgate::app::{self, Mode};
use tollgate::config_file;
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
    Gateway {
        /// Serve APIs, plans, apps and key hashes from this YAML file instead of a
        /// database (DB-less mode); the file is reloaded when it changes. State
        /// such as quota counters lives in the data dir.
        #[arg(long, value_name = "FILE")]
        config_file: Option<PathBuf>,
    },
    /// Run only the portal and the admin API (the control plane).
    Portal,
    /// Apply migrations to the control-plane database and the usage store, then exit.
    Migrate,
    /// Declarative configuration: dump the database as a YAML file, apply one, check one.
    #[command(subcommand)]
    Config(ConfigCommand),
}

#[derive(Subcommand, Debug)]
enum ConfigCommand {
    /// Write the database's configuration (APIs, plans, developers, apps, key
    /// hashes, subscriptions) as a YAML file.
    Dump {
        /// Where to write; standard output when absent.
        #[arg(long, short, value_name = "FILE")]
        output: Option<PathBuf>,
    },
    /// Load a YAML file into the database. Objects are matched by id; applying
    /// the same file twice changes nothing.
    Apply {
        /// The file (as written by `config dump`).
        file: PathBuf,
        /// Also delete APIs, plans, developers, apps, keys and subscriptions the
        /// file does not list (admins and analysts are never deleted).
        #[arg(long)]
        prune: bool,
        /// Report what would change without changing anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// Check a YAML file without touching any database; exit 2 when invalid.
    Check {
        /// The file.
        file: PathBuf,
    },
    /// Generate an API key and print it with the hash and prefix a file lists.
    NewKey,
}

/// A problem with what the user gave us: printed as is, exit status 2.
#[derive(Debug)]
struct UsageError(String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

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
        Err(e) if e.downcast_ref::<UsageError>().is_some() => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
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
    let (mode, demo_mode, config_path) = match command {
        Command::Config(c) => return config_command(c, settings).await,
        Command::Migrate => return migrate(settings).await,
        Command::Up { demo } => (Mode::All, demo, None),
        Command::Gateway { config_file } => (Mode::Gateway, false, config_file),
        Command::Portal => (Mode::Portal, false, None),
    };
    // DB-less: the file is checked before anything starts, and the gateway keeps
    // its state in a private database in the data dir.
    let config_file = match config_path {
        Some(path) => {
            let loaded = config_file::read(&path).map_err(|e| UsageError(e.to_string()))?;
            settings.database_url = config_file::state_database_url(&settings.data_dir);
            Some((path, loaded))
        }
        None => None,
    };
    let (store, usage) = app::open_stores(settings).await?;
    let mut file_follower = None;
    if let Some((path, loaded)) = config_file {
        let report = config_file::apply(&store, &loaded)
            .await
            .map_err(|e| UsageError(format!("cannot apply {}: {e}", path.display())))?;
        tracing::info!(file = %path.display(), %report, "configuration file applied");
        file_follower = Some((
            path.clone(),
            tokio::spawn(config_file::follow(path, store.clone(), loaded.digest)),
        ));
    }

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
    let stop = shutdown_signal();
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
    if let Some((path, _)) = &file_follower {
        println!("  Config:    {} (reloaded when it changes)", path.display());
    }
    println!("Press Ctrl-C to stop.");

    stop.await;
    eprintln!("Shutting down: finishing calls in flight and writing usage...");
    if let Some((_, f)) = file_follower {
        f.abort();
    }
    running.stop().await;
    Ok(())
}

async fn migrate(settings: &Settings) -> anyhow::Result<()> {
    let (store, usage) = app::open_stores(settings).await?;
    println!(
        "Migrations applied: control plane ({}), usage store ({}).",
        backend_name(&store),
        usage.describe()
    );
    store.close().await;
    Ok(())
}

async fn config_command(command: ConfigCommand, settings: &Settings) -> anyhow::Result<()> {
    use tollgate_core::store::{ApplyError, ApplyOptions};
    match command {
        ConfigCommand::Check { file } => {
            let loaded = config_file::read(&file).map_err(|e| UsageError(e.to_string()))?;
            let d = &loaded.document;
            let keys: usize = d.apps.iter().map(|a| a.keys.len()).sum();
            println!(
                "{} is valid: {} APIs, {} plans, {} developers, {} apps, {} keys.",
                file.display(),
                d.apis.len(),
                d.plans.len(),
                d.developers.len(),
                d.apps.len(),
                keys
            );
            Ok(())
        }
        ConfigCommand::NewKey => {
            let key = tollgate_core::key::generate();
            println!(
                "Key (shown once, give it to the app's developer): {}",
                key.key
            );
            println!("List it under the app's keys:");
            println!("      - id: key_{}", &key.hash.to_hex()[..12]);
            println!("        prefix: {}", key.prefix);
            println!("        hash: {}", key.hash.to_hex());
            Ok(())
        }
        ConfigCommand::Dump { output } => {
            let store = tollgate_core::Store::open(&settings.database_url)
                .await
                .context("cannot open the control-plane database (DATABASE_URL)")?;
            let yaml = store.dump_document().await?.to_yaml();
            store.close().await;
            match output {
                Some(path) => {
                    write_private(&path, &yaml)
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    eprintln!("Configuration written to {}.", path.display());
                }
                None => print!("{yaml}"),
            }
            Ok(())
        }
        ConfigCommand::Apply {
            file,
            prune,
            dry_run,
        } => {
            let loaded = config_file::read(&file).map_err(|e| UsageError(e.to_string()))?;
            let store = tollgate_core::Store::open(&settings.database_url)
                .await
                .context("cannot open the control-plane database (DATABASE_URL)")?;
            let result = store
                .apply_document(&loaded.document, ApplyOptions { prune, dry_run })
                .await;
            store.close().await;
            match result {
                Ok(report) if dry_run => {
                    println!("Dry run, nothing changed. Would apply: {report}")
                }
                Ok(report) => println!("Applied {}: {report}", file.display()),
                Err(ApplyError::Store(e)) => return Err(e.into()),
                Err(e) => {
                    return Err(
                        UsageError(format!("{} cannot be applied:\n{e}", file.display())).into(),
                    );
                }
            }
            Ok(())
        }
    }
}

/// Writes a file readable by its owner only: a dump names every customer.
fn write_private(path: &std::path::Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(text.as_bytes())
}

fn backend_name(store: &tollgate_core::Store) -> &'static str {
    match store.backend() {
        tollgate_core::store::Backend::Sqlite => "SQLite",
        tollgate_core::store::Backend::Postgres => "PostgreSQL",
    }
}

/// Listens for Ctrl-C and SIGTERM from now on (before the banner tells
/// anyone the process is up, so an early SIGTERM still shuts down cleanly)
/// and returns a future that ends at the first of them.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let term = signal(SignalKind::terminate());
        let interrupt = signal(SignalKind::interrupt());
        async move {
            match (term, interrupt) {
                (Ok(mut term), Ok(mut interrupt)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = interrupt.recv() => {}
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
