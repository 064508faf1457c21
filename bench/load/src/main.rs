//! `slipway-load`: a load driver for Slipway's deployment-creation endpoint.
//!
//! It POSTs `/v1/apps/{app}/environments/{env}/deployments`, each request with its own
//! `Idempotency-Key` (a UUIDv4), from `--concurrency` workers sharing one HTTP/1.1 connection
//! pool, and reports how many were created per second and their latency percentiles.
//!
//! - Closed loop (default): every worker sends its next request as soon as the previous one is
//!   answered. This measures the peak rate at that concurrency.
//! - Open loop (`--rate R`): requests are due at fixed times, `R` per second across all workers,
//!   whatever the server's pace. Latency is measured from the time a request was *due*, so a
//!   server that falls behind is charged for the queueing it causes (no coordinated omission);
//!   the service time (from the moment the request was actually sent) is reported beside it.
//!
//! It is bounded (it stops after `--duration` or `--requests`) and refuses targets that are
//! not on the loopback interface: it is a benchmark for a server you started, not a tool to
//! load anyone else's.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Parser;
use reqwest::{StatusCode, Url};
use serde_json::json;
use tokio::time::Instant;

#[derive(Debug, Parser)]
#[command(
    name = "slipway-load",
    version,
    about = "Load driver: creates deployments through Slipway's API and reports rate and latency"
)]
struct Cli {
    /// Base URL of the Slipway API (loopback addresses only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    /// App to deploy.
    #[arg(long, default_value = "bench")]
    app: String,
    /// Environment of the app to deploy to.
    #[arg(long, default_value = "load")]
    env: String,
    /// Concurrent workers (and at most as many open connections).
    #[arg(long, default_value_t = 16)]
    concurrency: u32,
    /// How long to send requests, e.g. `20s`, `1500ms`, `2m` (ignored with --requests).
    #[arg(long, default_value = "20s", value_parser = parse_duration)]
    duration: Duration,
    /// Send exactly this many requests instead of running for --duration
    /// (0: only --setup, no load).
    #[arg(long)]
    requests: Option<u64>,
    /// Open loop: this many requests per second across all workers. Without it, closed loop:
    /// as fast as the server answers.
    #[arg(long)]
    rate: Option<f64>,
    /// Requests sent before measuring starts (they open the connections and warm the server);
    /// not counted.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    warmup: Duration,
    /// First register the simulated cluster `bench`, the app and its environment (rolling
    /// strategy). Idempotent: what already exists is left as it is.
    #[arg(long)]
    setup: bool,
    /// Print the result as one JSON document instead of text.
    #[arg(long)]
    json: bool,
    /// Bearer token sent with every request (`slipway token issue --sub bench`); its subject
    /// must be a bootstrap admin for --setup.
    #[arg(long, env = "SLIPWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

fn parse_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let split = raw
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(raw.len());
    let (number, unit) = raw.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{raw:?} is not a duration like 20s, 1500ms or 2m"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1_000.0,
        "m" => value * 60.0,
        other => return Err(format!("unknown unit {other:?}: use ms, s or m")),
    };
    if !seconds.is_finite() || !(0.0..=3_600.0).contains(&seconds) {
        return Err("the duration must be between 0 and 1 hour".into());
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Accepts only http(s) URLs whose host is a loopback address or `localhost`.
fn loopback_base(raw: &str) -> anyhow::Result<Url> {
    let mut url = Url::parse(raw).with_context(|| format!("--url {raw:?} is not a URL"))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!("--url must be http or https");
    }
    // `host_str` writes IPv6 addresses in brackets.
    let host = url.host_str().unwrap_or("");
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if !loopback {
        bail!("--url must point at a loopback address (127.0.0.0/8, ::1 or localhost)");
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    Ok(url)
}

/// What the workers share.
#[derive(Debug)]
struct Plan {
    client: reqwest::Client,
    endpoint: Url,
    /// Next request number, across workers.
    next: AtomicU64,
    /// When measuring starts (the warm-up ends).
    measure_from: Instant,
    /// No request is started at or after this instant (duration mode).
    stop_at: Option<Instant>,
    /// Measured requests to send (requests mode).
    limit: Option<u64>,
    /// Requests sent in the warm-up, numbered before the measured ones.
    warmup_sent: AtomicU64,
    /// Open loop: seconds between due times, across workers.
    interval: Option<f64>,
    /// Open loop: when request 0 is due.
    schedule_from: Instant,
    /// Distinguishes this run's images from an earlier run's.
    run_tag: u32,
}

/// What one worker saw.
#[derive(Debug, Default)]
struct Tally {
    /// Latency of each 201, in microseconds (from the due time in open loop).
    latency_us: Vec<u32>,
    /// Service time of each 201 (from the actual send), in microseconds.
    service_us: Vec<u32>,
    /// Answers other than 201, by status; `transport` for failures without an answer.
    errors: BTreeMap<String, u64>,
    /// A few error bodies, to say what went wrong.
    samples: Vec<String>,
    /// The last measured answer's arrival.
    last_done: Option<Instant>,
    /// How far behind its due time the most late request was sent (open loop).
    max_lag: Duration,
}

fn micros(d: Duration) -> u32 {
    u32::try_from(d.as_micros()).unwrap_or(u32::MAX)
}

/// Sends create request `n`; warm-up requests deploy major version 0, measured ones 1.
async fn create_one(
    plan: &Plan,
    major: u8,
    n: u64,
) -> Result<(StatusCode, String), reqwest::Error> {
    let body = json!({
        "image": format!("ghcr.io/acme/web:{major}.{}.{n}", plan.run_tag),
        "reason": "bench",
    });
    let response = plan
        .client
        .post(plan.endpoint.clone())
        .header("idempotency-key", uuid::Uuid::new_v4().to_string())
        .json(&body)
        .send()
        .await?;
    let status = response.status();
    // Read the whole body, as a real client would (and so the connection is reused).
    let text = response.text().await?;
    Ok((status, text))
}

async fn warm_up(plan: Arc<Plan>) {
    while Instant::now() < plan.measure_from {
        let n = plan.warmup_sent.fetch_add(1, Ordering::Relaxed);
        // Warm-up answers are not judged; a failing server shows up in the measured part.
        let _ = create_one(&plan, 0, n).await;
    }
}

async fn worker(plan: Arc<Plan>) -> Tally {
    let mut tally = Tally::default();
    loop {
        let n = plan.next.fetch_add(1, Ordering::Relaxed);
        if plan.limit.is_some_and(|limit| n >= limit) {
            break;
        }
        let due = match plan.interval {
            Some(interval) => {
                let due = plan.schedule_from + Duration::from_secs_f64(interval * n as f64);
                if plan.stop_at.is_some_and(|stop| due >= stop) {
                    break;
                }
                tokio::time::sleep_until(due).await;
                due
            }
            None => Instant::now(),
        };
        let sent = Instant::now();
        if plan.stop_at.is_some_and(|stop| sent >= stop) {
            break;
        }
        tally.max_lag = tally.max_lag.max(sent.saturating_duration_since(due));
        let result = create_one(&plan, 1, n).await;
        let done = Instant::now();
        tally.last_done = Some(done);
        match result {
            Ok((StatusCode::CREATED, _)) => {
                tally.latency_us.push(micros(done - due));
                tally.service_us.push(micros(done - sent));
            }
            Ok((status, text)) => {
                *tally.errors.entry(status.as_u16().to_string()).or_default() += 1;
                if tally.samples.len() < 3 {
                    tally.samples.push(format!("{status}: {text}"));
                }
            }
            Err(e) => {
                *tally.errors.entry("transport".into()).or_default() += 1;
                if tally.samples.len() < 3 {
                    tally.samples.push(format!("transport: {e}"));
                }
            }
        }
    }
    tally
}

/// The value at quantile `q` of sorted samples (nearest rank), in milliseconds.
fn quantile_ms(sorted: &[u32], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    let index = rank.clamp(1, sorted.len()) - 1;
    sorted.get(index).map(|&us| f64::from(us) / 1_000.0)
}

fn summary(sorted: &[u32]) -> serde_json::Value {
    json!({
        "p50_ms": quantile_ms(sorted, 0.50),
        "p90_ms": quantile_ms(sorted, 0.90),
        "p99_ms": quantile_ms(sorted, 0.99),
        "max_ms": sorted.last().map(|&us| f64::from(us) / 1_000.0),
    })
}

async fn expect_status(
    request: reqwest::RequestBuilder,
    what: &str,
    ok: &[StatusCode],
) -> anyhow::Result<StatusCode> {
    let response = request
        .send()
        .await
        .with_context(|| format!("{what}: no answer"))?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !ok.contains(&status) {
        bail!("{what}: {status}: {text}");
    }
    Ok(status)
}

/// Registers the simulated cluster `bench`, the app and its environment (in namespace
/// `<app>-<env>`: one workload belongs to one environment); what exists is kept.
async fn setup(client: &reqwest::Client, base: &Url, app: &str, env: &str) -> anyhow::Result<()> {
    let created_or_exists = [StatusCode::CREATED, StatusCode::CONFLICT];
    expect_status(
        client
            .post(base.join("v1/clusters")?)
            .json(&json!({"name": "bench", "kind": "simulated"})),
        "registering cluster bench",
        &created_or_exists,
    )
    .await?;
    expect_status(
        client
            .post(base.join("v1/apps")?)
            .json(&json!({"name": app, "description": "load benchmark"})),
        &format!("creating app {app}"),
        &created_or_exists,
    )
    .await?;
    expect_status(
        client
            .put(base.join(&format!("v1/apps/{app}/environments/{env}"))?)
            .json(&json!({
                "cluster": "bench",
                "namespace": format!("{app}-{env}"),
                "workload": {"name": app, "container": app, "replicas": 4, "port": 8080},
                "strategy": {"type": "rolling", "max_surge": "25%", "max_unavailable": 0},
            })),
        &format!("putting environment {app}/{env}"),
        &[StatusCode::OK, StatusCode::CREATED],
    )
    .await?;
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if rustls::crypto::ring::default_provider()
        .install_default()
        .is_err()
    {
        bail!("a TLS crypto provider was already installed");
    }
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let base = loopback_base(&cli.url)?;
    if cli.concurrency == 0 || cli.concurrency > 1_024 {
        bail!("--concurrency must be between 1 and 1024");
    }
    let interval = match cli.rate {
        None => None,
        Some(rate) if rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0 => Some(1.0 / rate),
        Some(_) => bail!("--rate must be a positive number of requests per second"),
    };
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(token) = &cli.token {
        let value = reqwest::header::HeaderValue::from_str(&format!("Bearer {}", token.trim()))
            .context("--token is not a valid header value")?;
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let client = reqwest::Client::builder()
        .default_headers(headers)
        .pool_max_idle_per_host(cli.concurrency as usize)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;

    if cli.setup {
        setup(&client, &base, &cli.app, &cli.env).await?;
    }
    if cli.requests == Some(0) {
        return Ok(());
    }
    if cli.requests.is_none() && cli.duration.is_zero() {
        bail!("--duration must be more than zero");
    }

    let endpoint = base.join(&format!(
        "v1/apps/{}/environments/{}/deployments",
        cli.app, cli.env
    ))?;
    let now = Instant::now();
    let measure_from = now + cli.warmup;
    let run_tag = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() % 1_000_000)
            .unwrap_or(0),
    )
    .unwrap_or(0);
    let plan = Arc::new(Plan {
        client,
        endpoint,
        next: AtomicU64::new(0),
        measure_from,
        stop_at: cli.requests.is_none().then(|| measure_from + cli.duration),
        limit: cli.requests,
        warmup_sent: AtomicU64::new(0),
        interval,
        schedule_from: measure_from,
        run_tag,
    });

    // Warm-up: the same workers, closed loop, not measured.
    if !cli.warmup.is_zero() {
        let warmers: Vec<_> = (0..cli.concurrency)
            .map(|_| tokio::spawn(warm_up(Arc::clone(&plan))))
            .collect();
        for w in warmers {
            w.await.context("a warm-up worker failed")?;
        }
    }

    let started = Instant::now().max(measure_from);
    let workers: Vec<_> = (0..cli.concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&plan))))
        .collect();
    let mut all = Tally::default();
    for w in workers {
        let t = w.await.context("a worker failed")?;
        all.latency_us.extend(t.latency_us);
        all.service_us.extend(t.service_us);
        for (status, count) in t.errors {
            *all.errors.entry(status).or_default() += count;
        }
        all.samples.extend(t.samples);
        all.last_done = all.last_done.max(t.last_done);
        all.max_lag = all.max_lag.max(t.max_lag);
    }
    // The window: from the start of measuring to the last answer (in duration mode, to the
    // stop time if every answer came before it).
    let ended = match (all.last_done, plan.stop_at) {
        (Some(done), Some(stop)) => done.max(stop),
        (Some(done), None) => done,
        (None, _) => Instant::now(),
    };
    let elapsed = ended.saturating_duration_since(started).as_secs_f64();
    all.latency_us.sort_unstable();
    all.service_us.sort_unstable();
    let created = all.latency_us.len() as u64;
    let errors: u64 = all.errors.values().sum();
    let rate = if elapsed > 0.0 {
        created as f64 / elapsed
    } else {
        0.0
    };

    let report = json!({
        "url": plan.endpoint.as_str(),
        "mode": if interval.is_some() { "open" } else { "closed" },
        "concurrency": cli.concurrency,
        "target_rate": cli.rate,
        "warmup_requests": plan.warmup_sent.load(Ordering::Relaxed),
        "elapsed_s": elapsed,
        "requests": created + errors,
        "created": created,
        "errors": errors,
        "errors_by_status": all.errors,
        "error_samples": all.samples,
        "rate_per_s": rate,
        "latency": summary(&all.latency_us),
        "service_time": summary(&all.service_us),
        "max_send_lag_ms": all.max_lag.as_secs_f64() * 1_000.0,
    });

    let mut out = std::io::stdout().lock();
    if cli.json {
        writeln!(out, "{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2} ms"));
        let line = |name: &str, sorted: &[u32]| {
            format!(
                "{name}: p50 {}  p90 {}  p99 {}  max {}",
                ms(quantile_ms(sorted, 0.50)),
                ms(quantile_ms(sorted, 0.90)),
                ms(quantile_ms(sorted, 0.99)),
                ms(sorted.last().map(|&us| f64::from(us) / 1_000.0)),
            )
        };
        let mode = match cli.rate {
            Some(r) => format!("open loop at {r:.1}/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            out,
            "{mode}, concurrency {}, {:.2} s measured",
            cli.concurrency, elapsed
        )?;
        writeln!(
            out,
            "requests: {}  created: {created}  errors: {errors}",
            created + errors
        )?;
        for (status, count) in &all.errors {
            writeln!(out, "  {status}: {count}")?;
        }
        for sample in &all.samples {
            writeln!(out, "  e.g. {sample}")?;
        }
        writeln!(out, "rate: {rate:.1} created/s")?;
        writeln!(out, "{}", line("latency", &all.latency_us))?;
        if interval.is_some() {
            writeln!(out, "{}", line("service time", &all.service_us))?;
            writeln!(
                out,
                "most late send: {:.2} ms behind schedule",
                all.max_lag.as_secs_f64() * 1_000.0
            )?;
        }
    }
    if created == 0 {
        bail!("no deployment was created");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("20s"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("20"), Ok(Duration::from_secs(20)));
        assert_eq!(parse_duration("1500ms"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("2h").is_err());
        assert!(parse_duration("x").is_err());
    }

    #[test]
    fn only_loopback() {
        assert!(loopback_base("http://127.0.0.1:8080").is_ok());
        assert!(loopback_base("http://localhost:1").is_ok());
        assert!(loopback_base("http://[::1]:1/").is_ok());
        assert!(loopback_base("http://10.0.0.1:8080").is_err());
        assert!(loopback_base("http://example.com").is_err());
        assert_eq!(
            loopback_base("http://127.0.0.1:1/api")
                .unwrap()
                .join("v1/x")
                .unwrap()
                .as_str(),
            "http://127.0.0.1:1/api/v1/x"
        );
    }

    #[test]
    fn nearest_rank() {
        let v: Vec<u32> = (1..=100).map(|i| i * 1_000).collect();
        assert_eq!(quantile_ms(&v, 0.50), Some(50.0));
        assert_eq!(quantile_ms(&v, 0.99), Some(99.0));
        assert_eq!(quantile_ms(&[], 0.5), None);
    }
}
