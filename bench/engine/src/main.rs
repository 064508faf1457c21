//! `slipway-engine-bench`: drives and measures Slipway's engine for `bench/run-engine.sh`.
//!
//! - `seed`: a simulated cluster, an app, N environments and their deployments, through the
//!   HTTP API of a running `slipway serve` (no SQL);
//! - `monitor`: samples engine processes (RSS, CPU from /proc) and the database (active and
//!   queued deployments, persisted steps, due backlog, connections) once a second, until every
//!   deployment is finished or a time limit; prints a JSON summary;
//! - `latency`: sends `promote` commands to deployments parked at an indefinite pause, spaced
//!   out and in bursts, and reports command accepted (`commands.created_at`) → engine acted
//!   (the `command` event's `at`), both database timestamps.
//!
//! Only loopback targets are expected; every loop is bounded in count and in time.

mod latency;
mod monitor;
mod seed;
mod stats;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "slipway-engine-bench", about = "Engine benchmarks for Slipway")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a simulated cluster, an app, environments and deployments through the API.
    Seed(seed::SeedArgs),
    /// Sample engine processes and the database until the deployments finish (or a limit).
    Monitor(monitor::MonitorArgs),
    /// Measure command → engine latency on deployments parked at an indefinite pause.
    Latency(latency::LatencyArgs),
}

/// Writes one line to stdout (results are machine-readable JSON lines).
pub(crate) fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Progress for humans, on stderr.
pub(crate) fn note(line: &str) {
    use std::io::Write;
    let mut err = std::io::stderr().lock();
    let _ = writeln!(err, "engine-bench: {line}");
}

/// Refuses anything but a loopback base URL: the benchmark never targets another host.
pub(crate) fn loopback(url: &str) -> anyhow::Result<String> {
    let parsed: reqwest::Url = url.parse().with_context(|| format!("bad URL {url:?}"))?;
    let host = parsed.host_str().unwrap_or_default();
    if !matches!(host, "127.0.0.1" | "localhost" | "[::1]" | "::1") {
        bail!("only loopback targets are allowed, not {host:?}");
    }
    Ok(url.trim_end_matches('/').to_owned())
}

/// A client for the API; with a token, every request carries it as a bearer token.
pub(crate) fn http_client(
    connections: usize,
    token: Option<&str>,
) -> anyhow::Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = token {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("--token is not a valid header value")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(connections)
        .tcp_nodelay(true)
        .timeout(std::time::Duration::from_secs(30))
        .build()
        .context("building the HTTP client")
}

pub(crate) async fn connect(url: &str, max: u32) -> anyhow::Result<sqlx::PgPool> {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(10))
        .connect(url)
        .await
        .context("connecting to DATABASE_URL")
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        bail!("a TLS crypto provider was already installed");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        match cli.command {
            Command::Seed(args) => seed::run(args).await,
            Command::Monitor(args) => monitor::run(args).await,
            Command::Latency(args) => latency::run(args).await,
        }
    })
}
