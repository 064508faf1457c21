//! `seed`: a simulated cluster, an app, N environments and one or more deployments each,
//! through the HTTP API only.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use futures::StreamExt;
use serde_json::{Value, json};

use crate::{emit, http_client, loopback, note};

#[derive(Debug, Args)]
pub(crate) struct SeedArgs {
    /// Base URL of a `slipway serve` (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:18281")]
    api: String,
    /// App that holds the environments (created if missing).
    #[arg(long, default_value = "bench")]
    app: String,
    /// Simulated cluster the environments deploy to (created if missing).
    #[arg(long, default_value = "sim")]
    cluster: String,
    /// Number of environments.
    #[arg(long)]
    envs: usize,
    /// Environment names are `<prefix><index, 5 digits>`.
    #[arg(long, default_value = "e")]
    env_prefix: String,
    /// Replicas of each environment's workload.
    #[arg(long, default_value_t = 4)]
    replicas: u32,
    /// The environments' strategy, as JSON (e.g. `{"type":"rolling"}`).
    #[arg(long)]
    strategy: String,
    /// The environments' progress deadline.
    #[arg(long, default_value = "10m")]
    progress_deadline: String,
    /// One deployment per image and environment, in this order (the first deployment to an
    /// environment deploys at full size; the next ones run the strategy).
    #[arg(long = "image", required = true)]
    images: Vec<String>,
    /// Requests in flight.
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 900)]
    timeout_s: u64,
    /// Bearer token for the API (`slipway token issue --sub bench`).
    #[arg(long, env = "SLIPWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

#[derive(Debug, Default)]
struct Tally {
    by_status: BTreeMap<String, u64>,
    first_errors: Vec<String>,
}

impl Tally {
    fn record(&mut self, what: &str, status: u16, body: Option<String>) {
        *self
            .by_status
            .entry(format!("{what} {status}"))
            .or_default() += 1;
        if let Some(body) = body
            && self.first_errors.len() < 5
        {
            self.first_errors.push(format!(
                "{what} {status}: {}",
                body.chars().take(300).collect::<String>()
            ));
        }
    }
}

async fn send(request: reqwest::RequestBuilder) -> anyhow::Result<(u16, String)> {
    let response = request.send().await?;
    let status = response.status().as_u16();
    let body = response.text().await.unwrap_or_default();
    Ok((status, body))
}

/// POST that may answer 409 when the object already exists.
async fn ensure(client: &reqwest::Client, url: String, body: Value) -> anyhow::Result<()> {
    let (status, text) = send(client.post(&url).json(&body)).await?;
    if status == 201 || status == 409 {
        Ok(())
    } else {
        bail!("POST {url} answered {status}: {text}")
    }
}

pub(crate) async fn run(args: SeedArgs) -> anyhow::Result<()> {
    let api = loopback(&args.api)?;
    if args.envs == 0 || args.envs > 100_000 {
        bail!("--envs must be between 1 and 100000");
    }
    if args.concurrency == 0 || args.concurrency > 256 {
        bail!("--concurrency must be between 1 and 256");
    }
    if args.images.len() > 8 {
        bail!("at most 8 --image per environment");
    }
    let strategy: Value = serde_json::from_str(&args.strategy).context("--strategy is not JSON")?;
    let client = http_client(args.concurrency, args.token.as_deref())?;
    ensure(
        &client,
        format!("{api}/v1/clusters"),
        json!({"name": args.cluster, "kind": "simulated"}),
    )
    .await?;
    ensure(
        &client,
        format!("{api}/v1/apps"),
        json!({"name": args.app, "description": "engine benchmark"}),
    )
    .await?;

    let tally = Mutex::new(Tally::default());
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.timeout_s);
    let one_env = |i: usize| {
        let client = client.clone();
        let api = api.clone();
        let strategy = strategy.clone();
        let args = &args;
        let tally = &tally;
        async move {
            if Instant::now() > deadline {
                return;
            }
            let env = format!("{}{:05}", args.env_prefix, i);
            let spec = json!({
                "cluster": args.cluster,
                "namespace": env,
                "workload": {"name": "web", "container": "web", "replicas": args.replicas, "port": 8080},
                "strategy": strategy,
                "progress_deadline": args.progress_deadline,
            });
            let url = format!("{api}/v1/apps/{}/environments/{env}", args.app);
            let put = send(client.put(&url).json(&spec)).await;
            let ok = match put {
                Ok((status, body)) => {
                    let ok = (200..300).contains(&status);
                    if let Ok(mut t) = tally.lock() {
                        t.record("PUT environment", status, (!ok).then_some(body));
                    }
                    ok
                }
                Err(e) => {
                    if let Ok(mut t) = tally.lock() {
                        t.record("PUT environment", 0, Some(e.to_string()));
                    }
                    false
                }
            };
            if !ok {
                return;
            }
            for image in &args.images {
                let body = json!({"image": image, "reason": "engine benchmark"});
                let answer = send(client.post(format!("{url}/deployments")).json(&body)).await;
                if let Ok(mut t) = tally.lock() {
                    match answer {
                        Ok((status, text)) => {
                            let ok = status == 201;
                            t.record("POST deployment", status, (!ok).then_some(text));
                        }
                        Err(e) => t.record("POST deployment", 0, Some(e.to_string())),
                    }
                }
            }
        }
    };
    let progress_every = (args.envs / 10).max(1);
    let mut done = 0usize;
    let mut stream = futures::stream::iter(0..args.envs)
        .map(one_env)
        .buffer_unordered(args.concurrency);
    while stream.next().await.is_some() {
        done += 1;
        if done.is_multiple_of(progress_every) {
            note(&format!(
                "seeded {done}/{} environments in {:.1}s",
                args.envs,
                started.elapsed().as_secs_f64()
            ));
        }
    }
    drop(stream);
    let elapsed = started.elapsed().as_secs_f64();
    let tally = tally.into_inner().unwrap_or_default();
    let requests: u64 = tally.by_status.values().sum();
    let created: u64 = tally
        .by_status
        .get("POST deployment 201")
        .copied()
        .unwrap_or(0);
    let summary = json!({
        "phase": "seed",
        "envs": args.envs,
        "deployments_created": created,
        "requests": requests,
        "by_status": tally.by_status,
        "first_errors": tally.first_errors,
        "elapsed_s": (elapsed * 100.0).round() / 100.0,
        "requests_per_s": ((requests as f64 / elapsed) * 10.0).round() / 10.0,
        "timed_out": Instant::now() > deadline,
    });
    emit(&summary.to_string());
    let expected = (args.envs * args.images.len()) as u64;
    if created != expected {
        bail!("created {created} deployments, expected {expected}");
    }
    Ok(())
}
