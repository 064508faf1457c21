//! Starting and stopping the server: logging, the database pool, migrations, the HTTP
//! listener with graceful shutdown, and housekeeping.

use std::future::Future;
use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::PgPoolOptions;
use tokio::net::TcpListener;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat, Secret};

/// Installs the global tracing subscriber. `RUST_LOG` overrides the configured level.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&config.log.level))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stdout().is_terminal());
    let installed = match config.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
    if installed.is_err() {
        tracing::debug!("a tracing subscriber was already installed");
    }
}

/// Connects a pool to the configured database.
pub async fn connect(url: &Secret, max_connections: u32) -> anyhow::Result<sqlx::PgPool> {
    PgPoolOptions::new()
        .max_connections(max_connections)
        .acquire_timeout(Duration::from_secs(5))
        // A round trip saved on every checkout; a broken connection fails its query instead
        // (answered 503) and is replaced.
        .test_before_acquire(false)
        .connect(url.expose())
        .await
        .context("cannot connect to the database (check database_url / DATABASE_URL)")
}

/// Applies every pending migration.
pub async fn migrate(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    slipway_store::MIGRATOR
        .run(pool)
        .await
        .context("applying database migrations")?;
    tracing::info!("database schema is current");
    Ok(())
}

/// A name for this process's engine in leases and the journal: host, pid and a random part.
pub fn worker_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    format!("{host}-{}-{}", std::process::id(), &suffix[..8])
}

/// Runs the API (when given a listener) and/or the engine (when `workers`) until `shutdown`
/// resolves. Both stop together; the log says which part stopped.
pub async fn run(
    listener: Option<TcpListener>,
    workers: bool,
    pool: sqlx::PgPool,
    config: &Config,
    drivers: slipway_engine::Drivers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let signal = {
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        }
    };
    tokio::spawn(signal);
    let api = {
        let pool = pool.clone();
        let drivers = drivers.clone();
        let rx = stop_rx.clone();
        let config = config.clone();
        async move {
            match listener {
                Some(listener) => serve(listener, pool, &config, drivers, stopped(rx)).await,
                None => {
                    stopped(rx).await;
                    Ok(())
                }
            }
        }
    };
    let relay = match config.github_status_settings() {
        Some(settings) if workers => Some(
            slipway_engine::github_status::StatusRelay::new(pool.clone(), settings)
                .context("starting the GitHub status relay")?,
        ),
        _ => None,
    };
    let engine = {
        let rx = stop_rx.clone();
        let worker = worker_name();
        let settings = config.engine_settings(worker);
        async move {
            if workers {
                let relay = async {
                    if let Some(relay) = relay {
                        relay.run(stopped(rx.clone())).await;
                    }
                };
                let engine = slipway_engine::Engine::new(pool, drivers, settings);
                tokio::join!(engine.run(stopped(rx.clone())), relay);
            } else {
                stopped(rx).await;
            }
            Ok::<(), anyhow::Error>(())
        }
    };
    let (api, engine) = tokio::join!(
        async {
            let r = api.await;
            tracing::info!(ok = r.is_ok(), "API stopped");
            let _ = stop_tx.send(true);
            r
        },
        async {
            let r = engine.await;
            tracing::info!("engine stopped");
            let _ = stop_tx.send(true);
            r
        }
    );
    api.and(engine)
}

/// Serves the API on `listener` until `shutdown` resolves, then stops accepting and lets
/// in-flight requests finish.
pub async fn serve(
    listener: TcpListener,
    pool: sqlx::PgPool,
    config: &Config,
    drivers: slipway_engine::Drivers,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    // The engine's drivers: one client per cluster in the process.
    let state =
        slipway_api::AppState::new(pool.clone(), config.api_settings()?).with_drivers(drivers);
    let housekeeping = tokio::spawn(purge_expired_keys(pool));
    let addr = listener.local_addr().context("listener address")?;
    tracing::info!(%addr, "API listening");
    let events = state.events.clone();
    let shutdown = async move {
        shutdown.await;
        // Event streams never finish by themselves: end them, or the drain waits forever.
        events.close();
    };
    let served = axum::serve(listener, slipway_api::app(state))
        .with_graceful_shutdown(shutdown)
        .await;
    housekeeping.abort();
    served.context("HTTP server failed")?;
    tracing::info!("API stopped: in-flight requests drained");
    Ok(())
}

/// How long a webhook delivery id is remembered (a redelivery within it creates nothing).
const DELIVERY_RETENTION_DAYS: i32 = 30;

/// Deletes expired idempotency keys and old webhook delivery ids every ten minutes.
async fn purge_expired_keys(pool: sqlx::PgPool) {
    let mut tick = tokio::time::interval(Duration::from_secs(600));
    loop {
        tick.tick().await;
        let purged = match pool.acquire().await {
            Ok(mut conn) => slipway_store::idempotency::purge_expired(&mut conn).await,
            Err(e) => Err(e.into()),
        };
        match purged {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "expired idempotency keys deleted"),
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys failed"),
        }
        let purged = match pool.acquire().await {
            Ok(mut conn) => {
                slipway_store::deliveries::purge_older_than(&mut conn, DELIVERY_RETENTION_DAYS)
                    .await
            }
            Err(e) => Err(e.into()),
        };
        match purged {
            Ok(0) => {}
            Ok(n) => tracing::info!(purged = n, "old webhook delivery ids deleted"),
            Err(e) => tracing::warn!(error = %e, "purging webhook deliveries failed"),
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::warn!(error = %e, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received: shutting down"),
        () = terminate => tracing::info!("SIGTERM received: shutting down"),
    }
}
