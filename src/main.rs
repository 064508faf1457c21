//! `slipway`: the deployment control plane's server and tools.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use slipway::config::{Config, LogFormat, Overrides};
use slipway::embedded_pg::{EmbeddedPostgres, default_state_dir};
use slipway::startup;
use tokio::net::TcpListener;

#[derive(Debug, Parser)]
#[command(name = "slipway", version, about = "Deployment control plane")]
struct Cli {
    /// Configuration file (default: ./slipway.toml when it exists).
    #[arg(long, global = true, env = "SLIPWAY_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the API and run deployment workers against the configured database.
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<String>,
        /// Apply pending migrations before serving.
        #[arg(long)]
        migrate: bool,
        /// Deployment steps to run at once [default: 16].
        #[arg(long)]
        workers: Option<usize>,
        /// Run only the workers (no HTTP API).
        #[arg(long, conflicts_with = "no_workers")]
        no_api: bool,
        /// Run only the HTTP API (no workers).
        #[arg(long)]
        no_workers: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the OpenAPI description of the API.
    Openapi,
    /// Run locally: a private PostgreSQL (unless DATABASE_URL is set), migrated, and the API.
    Dev {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<String>,
        /// Where the private database lives.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        let spec = slipway_api::openapi()
            .to_pretty_json()
            .context("rendering the OpenAPI document")?;
        let mut out = std::io::stdout().lock();
        return match writeln!(out, "{spec}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(()),
        };
    }
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        anyhow::bail!("a TLS crypto provider was already installed");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Openapi => Ok(()),
        Command::Migrate => {
            let config = load(&cli.config, Config::default(), &Overrides::default())?;
            let pool = startup::connect(database_url(&config)?, 2).await?;
            startup::migrate(&pool).await
        }
        Command::Serve {
            listen,
            migrate,
            workers,
            no_api,
            no_workers,
        } => {
            let overrides = Overrides {
                listen,
                workers,
                ..Overrides::default()
            };
            let config = load(&cli.config, Config::default(), &overrides)?;
            let pool =
                startup::connect(database_url(&config)?, config.database_max_connections).await?;
            if migrate {
                startup::migrate(&pool).await?;
            }
            let listener = if no_api {
                None
            } else {
                Some(bind(&config).await?)
            };
            let drivers = drivers(&config);
            let shutdown = startup::shutdown_signal();
            startup::run(listener, !no_workers, pool, &config, drivers, shutdown).await
        }
        Command::Dev { listen, state_dir } => {
            let overrides = Overrides {
                listen,
                dev_state_dir: state_dir,
                ..Overrides::default()
            };
            let defaults = Config {
                log_format: LogFormat::Pretty,
                // Pods of the simulated cluster take a moment, so a rollout can be watched.
                sim_ready_after: slipway_core::DurationSpec::from_secs(2),
                ..Config::default()
            };
            let config = load(&cli.config, defaults, &overrides)?;
            dev(config).await
        }
    }
}

fn load(file: &Option<PathBuf>, defaults: Config, overrides: &Overrides) -> anyhow::Result<Config> {
    let config = Config::load(file.as_deref(), defaults, overrides)?;
    startup::init_logging(&config);
    tracing::debug!(?config, "configuration loaded");
    Ok(config)
}

fn database_url(config: &Config) -> anyhow::Result<&slipway::config::Secret> {
    config.database_url.as_ref().context(
        "configuration key `database_url` is not set: set DATABASE_URL (or SLIPWAY_DATABASE_URL, \
         or database_url in slipway.toml); `slipway dev` starts a private database instead",
    )
}

/// The cluster drivers of this process: one simulated cluster for every cluster registered
/// as `simulated`.
fn drivers(config: &Config) -> slipway_engine::Drivers {
    let settings = slipway_cluster::SimSettings {
        ready_after: config.sim_ready_after.as_std(),
        ..slipway_cluster::SimSettings::default()
    };
    let sim = slipway_cluster::SimCluster::with_settings(
        std::sync::Arc::new(slipway_cluster::SystemClock),
        settings,
    );
    slipway_engine::Drivers::new(std::sync::Arc::new(sim))
}

async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let addr = config.listen_addr()?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (configuration key `listen`)"))
}

async fn dev(mut config: Config) -> anyhow::Result<()> {
    if config.secrets_key.is_none() {
        let key = slipway_engine::secrets::SecretsKey::generate_base64()
            .context("generating a secrets key")?;
        config.secrets_key = Some(slipway::config::Secret::new(key));
        tracing::warn!(
            "no secrets_key configured: using a random one for this run; trigger secrets \
             created now will not open after a restart (set SLIPWAY_SECRETS_KEY to keep them)"
        );
    }
    let embedded = match &config.database_url {
        Some(_) => {
            tracing::info!("using the database from database_url / DATABASE_URL");
            None
        }
        None => {
            let dir = config
                .dev_state_dir
                .clone()
                .unwrap_or_else(default_state_dir);
            tracing::info!(state_dir = %dir.display(), "starting a private PostgreSQL");
            let pg = EmbeddedPostgres::start(&dir).await?;
            config.database_url = Some(slipway::config::Secret::new(pg.database_url()));
            Some(pg)
        }
    };
    let served = async {
        let pool =
            startup::connect(database_url(&config)?, config.database_max_connections).await?;
        startup::migrate(&pool).await?;
        slipway::demo::seed(&pool).await?;
        let listener = bind(&config).await?;
        let addr = listener.local_addr()?;
        tracing::info!("Slipway is up at http://{addr} (API docs: http://{addr}/docs)");
        for line in slipway::demo::walkthrough(&addr.to_string()).lines() {
            tracing::info!("{line}");
        }
        let drivers = drivers(&config);
        let shutdown = startup::shutdown_signal();
        let ran = startup::run(
            Some(listener),
            true,
            pool.clone(),
            &config,
            drivers,
            shutdown,
        )
        .await;
        // Close every connection before the private database stops under them.
        pool.close().await;
        ran
    }
    .await;
    if let Some(pg) = embedded {
        pg.stop().await?;
        tracing::info!("private PostgreSQL stopped");
    }
    served
}
