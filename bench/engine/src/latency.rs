//! `latency`: command accepted → engine acted, on deployments parked at an indefinite pause.
//!
//! The clock is the database's: from the command's `created_at` (the API's transaction) to
//! the `at` of the deployment event of kind `command` that the engine wrote when it applied
//! it (the engine's persisting transaction). Commands are matched to their events by a unique
//! `reason`.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::json;
use uuid::Uuid;

use crate::stats::summary;
use crate::{connect, emit, http_client, loopback, note};

#[derive(Debug, Args)]
pub(crate) struct LatencyArgs {
    /// Base URL of a `slipway serve` with the API (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:18281")]
    api: String,
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Commands sent one at a time, `--spacing-ms` apart.
    #[arg(long, default_value_t = 250)]
    samples: usize,
    #[arg(long, default_value_t = 50)]
    spacing_ms: u64,
    /// Commands sent at once in each burst.
    #[arg(long, default_value_t = 50)]
    burst: usize,
    #[arg(long, default_value_t = 4)]
    burst_rounds: usize,
    /// Give up waiting for parked deployments or consumed commands after this long.
    #[arg(long, default_value_t = 120)]
    timeout_s: u64,
    /// Prefix of the commands' reasons, to find them again.
    #[arg(long, default_value = "bench")]
    tag: String,
    /// What this run is, copied into the summary.
    #[arg(long, default_value = "latency")]
    label: String,
    /// Bearer token for the API (`slipway token issue --sub bench`).
    #[arg(long, env = "SLIPWAY_TOKEN", hide_env_values = true)]
    token: Option<String>,
}

const PARKED: &str = "SELECT d.id FROM deployments d
     WHERE d.status = 'paused' AND d.phase = 'paused_step'
       AND NOT EXISTS (SELECT 1 FROM commands c WHERE c.deployment_id = d.id AND c.consumed_at IS NULL)
     ORDER BY d.updated_at LIMIT $1";

async fn parked(pool: &sqlx::PgPool, limit: i64) -> anyhow::Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(PARKED)
        .bind(limit)
        .fetch_all(pool)
        .await?)
}

/// Waits (bounded) until at least `n` deployments are parked; returns them.
async fn wait_parked(pool: &sqlx::PgPool, n: usize, until: Instant) -> anyhow::Result<Vec<Uuid>> {
    let limit = i64::try_from(n).unwrap_or(i64::MAX);
    loop {
        let ids = parked(pool, limit).await?;
        if ids.len() >= n {
            return Ok(ids);
        }
        if Instant::now() > until {
            bail!("only {} deployments parked, {n} needed", ids.len());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits (bounded) until every command with this reason prefix has been consumed.
async fn wait_consumed(pool: &sqlx::PgPool, prefix: &str, until: Instant) -> anyhow::Result<()> {
    loop {
        let left: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM commands WHERE reason LIKE $1 AND consumed_at IS NULL",
        )
        .bind(format!("{prefix}%"))
        .fetch_one(pool)
        .await?;
        if left == 0 {
            return Ok(());
        }
        if Instant::now() > until {
            bail!("{left} commands ({prefix}*) still not consumed");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// POSTs `promote`; the HTTP status and the client-side round trip in ms.
async fn promote(
    client: &reqwest::Client,
    api: &str,
    id: Uuid,
    reason: &str,
) -> anyhow::Result<(u16, f64)> {
    let sent = Instant::now();
    let response = client
        .post(format!("{api}/v1/deployments/{id}/promote"))
        .json(&json!({ "reason": reason }))
        .send()
        .await?;
    let status = response.status().as_u16();
    let _ = response.bytes().await;
    Ok((status, sent.elapsed().as_secs_f64() * 1000.0))
}

type Measured = (String, Option<f64>, Option<f64>, Option<String>);

async fn measured(pool: &sqlx::PgPool, prefix: &str) -> anyhow::Result<Vec<Measured>> {
    Ok(sqlx::query_as(
        "SELECT c.reason,
                (extract(epoch FROM (e.at - c.created_at)) * 1000.0)::float8,
                (extract(epoch FROM (c.consumed_at - c.created_at)) * 1000.0)::float8,
                c.outcome
         FROM commands c
         LEFT JOIN deployment_events e ON e.deployment_id = c.deployment_id
              AND e.kind = 'command' AND e.data->>'reason' = c.reason
         WHERE c.reason LIKE $1",
    )
    .bind(format!("{prefix}%"))
    .fetch_all(pool)
    .await?)
}

fn report(rows: &[Measured], rtt: &[f64], rejected: usize) -> serde_json::Value {
    let event: Vec<f64> = rows.iter().filter_map(|r| r.1).collect();
    let consumed: Vec<f64> = rows.iter().filter_map(|r| r.2).collect();
    let not_applied = rows
        .iter()
        .filter(|r| r.3.as_deref() != Some("applied"))
        .count();
    let over_50 = event.iter().filter(|ms| **ms >= 50.0).count();
    json!({
        "commands": rows.len(),
        "without_event": rows.len() - event.len(),
        "not_applied": not_applied,
        "rejected_409": rejected,
        "created_to_event_ms": summary(&event),
        "created_to_consumed_ms": summary(&consumed),
        "events_at_or_over_50ms": over_50,
        "http_round_trip_ms": summary(rtt),
    })
}

pub(crate) async fn run(args: LatencyArgs) -> anyhow::Result<()> {
    let api = loopback(&args.api)?;
    if args.samples > 10_000 || args.burst > 1_000 || args.burst_rounds > 100 {
        bail!("--samples ≤ 10000, --burst ≤ 1000, --burst-rounds ≤ 100");
    }
    if !(1..=10_000).contains(&args.spacing_ms) {
        bail!("--spacing-ms must be between 1 and 10000");
    }
    let pool = connect(&args.database_url, 4).await?;
    let client = http_client(args.burst.max(4), args.token.as_deref())?;
    let timeout = Duration::from_secs(args.timeout_s);
    let run_id = Uuid::new_v4().simple().to_string();
    let tag = format!("{}-{}", args.tag, &run_id[..8]);

    // Spaced: one command every `spacing_ms`, each to the deployment parked the longest.
    let spaced_prefix = format!("{tag}-s-");
    wait_parked(&pool, 1, Instant::now() + timeout).await?;
    let spacing = Duration::from_millis(args.spacing_ms);
    let began = Instant::now();
    let until = began + timeout + spacing * u32::try_from(args.samples).unwrap_or(u32::MAX);
    let mut rtt = Vec::with_capacity(args.samples);
    let mut rejected = 0usize;
    let mut sent = 0usize;
    let mut attempts = 0usize;
    while sent < args.samples && attempts < args.samples * 3 {
        if Instant::now() > until {
            note("spaced phase timed out");
            break;
        }
        attempts += 1;
        let Some(id) = parked(&pool, 1).await?.first().copied() else {
            tokio::time::sleep(Duration::from_millis(20)).await;
            continue;
        };
        let reason = format!("{spaced_prefix}{sent}");
        let (status, ms) = promote(&client, &api, id, &reason).await?;
        match status {
            202 => {
                rtt.push(ms);
                sent += 1;
            }
            409 => rejected += 1,
            other => bail!("promote answered {other}"),
        }
        let next = began + spacing * u32::try_from(attempts).unwrap_or(u32::MAX);
        tokio::time::sleep_until(next.into()).await;
    }
    note(&format!(
        "spaced: {sent} commands in {:.1}s",
        began.elapsed().as_secs_f64()
    ));
    wait_consumed(&pool, &spaced_prefix, Instant::now() + timeout).await?;
    let spaced = report(&measured(&pool, &spaced_prefix).await?, &rtt, rejected);

    // Bursts: `burst` commands at once, to `burst` different parked deployments.
    let burst_prefix = format!("{tag}-b-");
    let mut burst_rtt = Vec::new();
    let mut burst_rejected = 0usize;
    for round in 0..args.burst_rounds {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let ids = wait_parked(&pool, args.burst, Instant::now() + timeout).await?;
        let sends = ids.iter().enumerate().map(|(k, id)| {
            let reason = format!("{burst_prefix}{round}-{k}");
            let client = &client;
            let api = &api;
            async move { promote(client, api, *id, &reason).await }
        });
        for answer in futures::future::join_all(sends).await {
            let (status, ms) = answer.context("sending a burst command")?;
            match status {
                202 => burst_rtt.push(ms),
                409 => burst_rejected += 1,
                other => bail!("promote answered {other}"),
            }
        }
        wait_consumed(&pool, &burst_prefix, Instant::now() + timeout).await?;
    }
    let bursts = report(
        &measured(&pool, &burst_prefix).await?,
        &burst_rtt,
        burst_rejected,
    );
    emit(
        &json!({
            "phase": "latency",
            "label": args.label,
            "spacing_ms": args.spacing_ms,
            "burst": args.burst,
            "burst_rounds": args.burst_rounds,
            "spaced": spaced,
            "bursts": bursts,
        })
        .to_string(),
    );
    Ok(())
}
