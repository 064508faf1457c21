//! `slipway`: the deployment control plane's server and tools.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use slipway::config::{AuthConfig, Config, LogConfig, LogFormat, Overrides, SimConfig};
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
        /// Deployment steps to run at once [default: 64].
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
    /// Bearer tokens for the API.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Run locally: a private PostgreSQL (unless DATABASE_URL is set), migrated, and the API.
    Dev {
        /// Address to listen on [default: 127.0.0.1:8080].
        #[arg(long)]
        listen: Option<String>,
        /// Where the private database lives.
        #[arg(long)]
        state_dir: Option<PathBuf>,
    },
    /// Client commands: deploy, status, promote, events, lists…
    #[command(flatten)]
    Client(slipway::cli::ClientCommand),
}

#[derive(Debug, Subcommand)]
enum TokenCommand {
    /// Print an HS256 token signed with the configured jwt_secret (for local use and CI).
    Issue {
        /// The subject (`sub`) the token names.
        #[arg(long)]
        sub: String,
        /// A group (`groups`) of the subject; repeat for several.
        #[arg(long = "group")]
        groups: Vec<String>,
        /// How long the token is valid, e.g. 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: slipway_core::DurationSpec,
    },
}

fn main() -> anyhow::Result<ExitCode> {
    let cli = Cli::parse();
    if let Command::Openapi = cli.command {
        let spec = slipway_api::openapi()
            .to_pretty_json()
            .context("rendering the OpenAPI document")?;
        let mut out = std::io::stdout().lock();
        return match writeln!(out, "{spec}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(ExitCode::SUCCESS),
        };
    }
    if let Command::Token(TokenCommand::Issue { sub, groups, ttl }) = &cli.command {
        // No logging set up: stdout carries only the token.
        let config = Config::load(
            cli.config.as_deref(),
            Config::default(),
            &Overrides::default(),
        )?;
        let token = issue_token(&config, sub, groups, *ttl)?;
        let mut out = std::io::stdout().lock();
        return match writeln!(out, "{token}") {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
            _ => Ok(ExitCode::SUCCESS),
        };
    }
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        anyhow::bail!("a TLS crypto provider was already installed");
    }
    // The thread count is the one setting needed before the runtime exists: read from the
    // layers here; a configuration that does not load is reported by `run` with its reason.
    let threads = Config::load(
        cli.config.as_deref(),
        Config::default(),
        &Overrides::default(),
    )
    .unwrap_or_default()
    .runtime_threads();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    if let Command::Client(command) = cli.command {
        return Ok(runtime.block_on(slipway::cli::run(command)));
    }
    runtime.block_on(run(cli))?;
    Ok(ExitCode::SUCCESS)
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Openapi | Command::Token(_) | Command::Client(_) => Ok(()),
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
            let url = database_url(&config)?;
            if !no_api {
                // Fails here, before anything starts, on an unusable or missing key.
                warn_if_open(&config.auth_settings()?);
            }
            let pool = startup::connect(url, config.database.max_connections).await?;
            if migrate {
                startup::migrate(&pool).await?;
            }
            let listener = if no_api {
                None
            } else {
                Some(bind(&config).await?)
            };
            let drivers = drivers(&config)?;
            let shutdown = startup::shutdown_signal();
            startup::run(listener, !no_workers, pool, &config, drivers, shutdown).await
        }
        Command::Dev { listen, state_dir } => {
            let overrides = Overrides {
                listen,
                dev_state_dir: state_dir,
                ..Overrides::default()
            };
            let base = Config::default();
            let defaults = Config {
                log: LogConfig {
                    format: LogFormat::Pretty,
                    ..base.log
                },
                // Pods of the simulated cluster take a moment, so a rollout can be watched.
                sim: SimConfig {
                    ready_after: slipway_core::DurationSpec::from_secs(2),
                    ..base.sim
                },
                // A laptop sandbox: no tokens needed unless the configuration asks for them.
                auth: AuthConfig {
                    enabled: false,
                    ..base.auth
                },
                ..base
            };
            let config = load(&cli.config, defaults, &overrides)?;
            // Fails before the private database starts on an unusable key.
            config.auth_settings()?;
            dev(config).await
        }
    }
}

fn issue_token(
    config: &Config,
    sub: &str,
    groups: &[String],
    ttl: slipway_core::DurationSpec,
) -> anyhow::Result<String> {
    let secret = config.auth.jwt_secret.as_ref().context(
        "configuration key `auth.jwt_secret` is not set: set SLIPWAY_AUTH_JWT_SECRET (or \
         SLIPWAY_JWT_SECRET, or jwt_secret under [auth] in slipway.toml) to the secret the \
         server verifies tokens with",
    )?;
    anyhow::ensure!(!sub.trim().is_empty(), "--sub must not be empty");
    anyhow::ensure!(ttl.as_secs() > 0, "--ttl must be longer than 0s");
    Ok(slipway_api::auth::issue_hs256(
        secret.expose().as_bytes(),
        &config.auth.jwt_issuer,
        &config.auth.jwt_audience,
        sub,
        groups,
        ttl.as_std(),
    )?)
}

/// Says, loudly, that the API answers anyone.
fn warn_if_open(auth: &slipway_api::auth::AuthSettings) {
    if !auth.enabled() {
        tracing::warn!(
            "AUTHENTICATION IS OFF: every caller is an admin of everything. Never expose this \
             server; set auth.enabled = true and auth.jwt_secret or public keys for real use"
        );
    }
}

fn load(file: &Option<PathBuf>, defaults: Config, overrides: &Overrides) -> anyhow::Result<Config> {
    let config = Config::load(file.as_deref(), defaults, overrides)?;
    startup::init_logging(&config);
    tracing::debug!(?config, "configuration loaded");
    Ok(config)
}

fn database_url(config: &Config) -> anyhow::Result<&slipway::config::Secret> {
    config.database.url.as_ref().context(
        "configuration key `database.url` is not set: set DATABASE_URL (or SLIPWAY_DATABASE_URL, \
         or url under [database] in slipway.toml); `slipway dev` starts a private database \
         instead",
    )
}

/// The cluster drivers of this process: one simulated cluster for every cluster registered
/// as `simulated`, and one rate-limited client per Kubernetes cluster.
fn drivers(config: &Config) -> anyhow::Result<slipway_engine::Drivers> {
    let settings = slipway_cluster::SimSettings {
        ready_after: config.sim.ready_after.as_std(),
        ..slipway_cluster::SimSettings::default()
    };
    let clock = std::sync::Arc::new(slipway_cluster::SystemClock);
    let sim = match &config.sim.state_dir {
        None => slipway_cluster::SimCluster::with_settings(clock, settings),
        Some(dir) => {
            slipway_cluster::SimCluster::shared(clock, settings, dir).with_context(|| {
                format!(
                    "configuration key `sim.state_dir`: cannot use {}",
                    dir.display()
                )
            })?
        }
    };
    let kube = slipway_cluster::KubeSettings {
        qps: config.kube.qps,
        burst: config.kube.burst,
        ..slipway_cluster::KubeSettings::default()
    };
    Ok(slipway_engine::Drivers::new(std::sync::Arc::new(sim)).with_kube_settings(kube))
}

async fn bind(config: &Config) -> anyhow::Result<TcpListener> {
    let addr = config.listen_addr()?;
    TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (configuration key `server.listen`)"))
}

async fn dev(mut config: Config) -> anyhow::Result<()> {
    if config.secrets.key.is_none() {
        let key = slipway_engine::secrets::SecretsKey::generate_base64()
            .context("generating a secrets key")?;
        config.secrets.key = Some(slipway::config::Secret::new(key));
        tracing::warn!(
            "no secrets_key configured: using a random one for this run; trigger secrets \
             created now will not open after a restart (set SLIPWAY_SECRETS_KEY to keep them)"
        );
    }
    let embedded = match &config.database.url {
        Some(_) => {
            tracing::info!("using the database from database.url / DATABASE_URL");
            None
        }
        None => {
            let dir = config
                .dev
                .state_dir
                .clone()
                .unwrap_or_else(default_state_dir);
            tracing::info!(state_dir = %dir.display(), "starting a private PostgreSQL");
            let pg = EmbeddedPostgres::start(&dir).await?;
            config.database.url = Some(slipway::config::Secret::new(pg.database_url()));
            Some(pg)
        }
    };
    let served = async {
        let pool =
            startup::connect(database_url(&config)?, config.database.max_connections).await?;
        startup::migrate(&pool).await?;
        slipway::demo::seed(&pool).await?;
        let listener = bind(&config).await?;
        let addr = listener.local_addr()?;
        tracing::info!("Slipway is up at http://{addr} (API docs: http://{addr}/docs)");
        for line in slipway::demo::walkthrough(&addr.to_string()).lines() {
            tracing::info!("{line}");
        }
        warn_if_open(&config.auth_settings()?);
        let drivers = drivers(&config)?;
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
