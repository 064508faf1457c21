//! `monitor`: once per interval, the engine processes' RSS and CPU (from /proc) and the
//! database's view of the work (active/queued deployments, persisted steps, due backlog,
//! leases, connections, commits); a JSON summary at the end.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};

use crate::{connect, emit, note};

#[derive(Debug, Args)]
pub(crate) struct MonitorArgs {
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Engine processes to sample (repeat for several).
    #[arg(long = "pid")]
    pids: Vec<u32>,
    /// What this run is, copied into the summary.
    #[arg(long, default_value = "run")]
    label: String,
    #[arg(long, default_value_t = 1000)]
    interval_ms: u64,
    /// Stop after this many seconds whatever happens.
    #[arg(long, default_value_t = 600)]
    max_seconds: u64,
    /// Stop as soon as no deployment is queued or active.
    #[arg(long)]
    until_done: bool,
    /// Also summarize the samples in which at least this many deployments were active.
    #[arg(long, default_value_t = 0)]
    window_active: i64,
    /// Per-sample CSV.
    #[arg(long)]
    csv: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Proc {
    rss_kb: u64,
    hwm_kb: u64,
    cpu_ticks: u64,
    alive: bool,
}

#[derive(Debug, Clone, Default)]
struct Sample {
    t: f64,
    active: i64,
    queued: i64,
    total: i64,
    ticks: i64,
    due: i64,
    leased: i64,
    connections: i64,
    commits: i64,
    events: i64,
    procs: Vec<Proc>,
    /// CPU ticks of this database's backends, summed over the backends seen in the previous
    /// sample too (a backend's ticks count from the sample after it appeared).
    pg_ticks: u64,
    /// Machine-wide busy, busy without `nice`d work, and total jiffies (/proc/stat),
    /// cumulative.
    machine_busy: u64,
    machine_busy_unniced: u64,
    machine_total: u64,
    /// This database's client backends (the monitor's aside): running a statement, idle inside
    /// a transaction (waiting for their client), waiting for a heavyweight lock, for an LWLock.
    pg_running: i64,
    pg_idle_in_tx: i64,
    pg_lock_wait: i64,
    pg_lwlock_wait: i64,
}

const BACKENDS: &str = "SELECT count(*) FILTER (WHERE state = 'active'),
        count(*) FILTER (WHERE state = 'idle in transaction'),
        count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'Lock'),
        count(*) FILTER (WHERE state = 'active' AND wait_event_type = 'LWLock')
   FROM pg_stat_activity
  WHERE datname = current_database() AND pid <> pg_backend_pid()
    AND backend_type = 'client backend'";

/// Busy, busy without niced work, and total jiffies of all CPUs since boot (/proc/stat
/// "cpu" line: user nice system idle iowait irq softirq steal).
fn machine_cpu() -> (u64, u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0, 0);
    };
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0, 0);
    };
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    let total: u64 = v.iter().take(8).sum();
    // idle + iowait
    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
    let busy = total.saturating_sub(idle);
    let nice = v.get(1).copied().unwrap_or(0);
    (busy, busy.saturating_sub(nice), total)
}

fn read_proc(pid: u32) -> Proc {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"));
    let (Ok(status), Ok(stat)) = (status, stat) else {
        return Proc::default();
    };
    let kb = |key: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Fields after "(comm)": state is field 3, utime 14, stime 15 (1-based).
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    Proc {
        rss_kb: kb("VmRSS:"),
        hwm_kb: kb("VmHWM:"),
        cpu_ticks: field(11) + field(12),
        alive: !matches!(fields.first(), Some(&"Z") | None),
    }
}

fn clock_ticks() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|t| *t > 0.0)
        .unwrap_or(100.0)
}

const SAMPLE: &str = "SELECT
    count(*) FILTER (WHERE status IN ('running', 'paused', 'rolling_back')) AS active,
    count(*) FILTER (WHERE status = 'queued') AS queued,
    count(*) AS total,
    coalesce(sum(tick), 0)::bigint AS ticks,
    count(*) FILTER (WHERE next_wake_at <= now()
                     AND (lease_expires_at IS NULL OR lease_expires_at < now())) AS due,
    count(*) FILTER (WHERE lease_expires_at >= now()) AS leased,
    (SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()) AS connections,
    (SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()) AS commits,
    (SELECT coalesce(max(position), 0) FROM deployment_events) AS events,
    (SELECT coalesce(array_agg(pid), '{}') FROM pg_stat_activity
      WHERE datname = current_database()) AS backends
  FROM deployments";

type Row = (i64, i64, i64, i64, i64, i64, i64, i64, i64, Vec<i32>);

fn r2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

pub(crate) async fn run(args: MonitorArgs) -> anyhow::Result<()> {
    if args.interval_ms < 100 || args.interval_ms > 60_000 {
        bail!("--interval-ms must be between 100 and 60000");
    }
    if args.max_seconds > 3_600 {
        bail!("--max-seconds is at most 3600");
    }
    let pool = connect(&args.database_url, 2).await?;
    let hz = clock_ticks();
    let mut csv = match &args.csv {
        Some(path) => {
            let mut f = std::io::BufWriter::new(
                std::fs::File::create(path).with_context(|| format!("creating {path:?}"))?,
            );
            let mut header =
                "t,active,queued,total,ticks,due,leased,connections,commits,events,pg_ticks,machine_busy,machine_busy_unniced,machine_total,pg_running,pg_idle_in_tx,pg_lock_wait,pg_lwlock_wait"
                    .to_owned();
            for pid in &args.pids {
                header.push_str(&format!(",rss_kb_{pid},hwm_kb_{pid},cpu_ticks_{pid}"));
            }
            writeln!(f, "{header}")?;
            Some(f)
        }
        None => None,
    };
    let interval = Duration::from_millis(args.interval_ms);
    let started = Instant::now();
    let limit = Duration::from_secs(args.max_seconds);
    let max_samples = args.max_seconds * 1000 / args.interval_ms + 2;
    let mut samples: Vec<Sample> = Vec::new();
    let mut done_at: Option<f64> = None;
    let mut backend_ticks: std::collections::HashMap<i32, u64> = Default::default();
    let mut pg_total = 0u64;
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for _ in 0..max_samples {
        ticker.tick().await;
        let t = started.elapsed().as_secs_f64();
        let procs: Vec<Proc> = args.pids.iter().map(|p| read_proc(*p)).collect();
        let row: Row = match sqlx::query_as(SAMPLE).fetch_one(&pool).await {
            Ok(r) => r,
            Err(e) => {
                note(&format!("sample failed: {e}"));
                continue;
            }
        };
        let mut seen = std::collections::HashMap::new();
        for pid in &row.9 {
            let Ok(pid_u) = u32::try_from(*pid) else {
                continue;
            };
            let ticks = read_proc(pid_u).cpu_ticks;
            if let Some(before) = backend_ticks.get(pid) {
                pg_total += ticks.saturating_sub(*before);
            }
            seen.insert(*pid, ticks);
        }
        backend_ticks = seen;
        let (machine_busy, machine_busy_unniced, machine_total) = machine_cpu();
        let (pg_running, pg_idle_in_tx, pg_lock_wait, pg_lwlock_wait): (i64, i64, i64, i64) =
            sqlx::query_as(BACKENDS)
                .fetch_one(&pool)
                .await
                .unwrap_or_default();
        let s = Sample {
            t,
            active: row.0,
            queued: row.1,
            total: row.2,
            ticks: row.3,
            due: row.4,
            leased: row.5,
            connections: row.6,
            commits: row.7,
            events: row.8,
            procs,
            pg_ticks: pg_total,
            machine_busy,
            machine_busy_unniced,
            machine_total,
            pg_running,
            pg_idle_in_tx,
            pg_lock_wait,
            pg_lwlock_wait,
        };
        if let Some(f) = csv.as_mut() {
            let mut line = format!(
                "{:.2},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{},{}",
                s.t,
                s.active,
                s.queued,
                s.total,
                s.ticks,
                s.due,
                s.leased,
                s.connections,
                s.commits,
                s.events,
                s.pg_ticks,
                s.machine_busy,
                s.machine_busy_unniced,
                s.machine_total,
                s.pg_running,
                s.pg_idle_in_tx,
                s.pg_lock_wait,
                s.pg_lwlock_wait
            );
            for p in &s.procs {
                line.push_str(&format!(",{},{},{}", p.rss_kb, p.hwm_kb, p.cpu_ticks));
            }
            writeln!(f, "{line}")?;
        }
        let n = samples.len();
        if n.is_multiple_of(10) {
            let rss: Vec<String> = s
                .procs
                .iter()
                .map(|p| format!("{:.1}MB", p.rss_kb as f64 / 1024.0))
                .collect();
            note(&format!(
                "{}: t={:.0}s active={} queued={} steps={} due={} leased={} conns={} rss=[{}]",
                args.label,
                s.t,
                s.active,
                s.queued,
                s.ticks,
                s.due,
                s.leased,
                s.connections,
                rss.join(",")
            ));
        }
        let finished = s.total > 0 && s.active == 0 && s.queued == 0;
        let all_gone = !s.procs.is_empty() && s.procs.iter().all(|p| !p.alive);
        samples.push(s);
        if args.until_done && finished {
            done_at = Some(t);
            break;
        }
        if all_gone {
            note("every monitored process has exited");
            break;
        }
        if started.elapsed() >= limit {
            break;
        }
    }
    if let Some(f) = csv.as_mut() {
        f.flush()?;
    }
    let summary = summarize(&args, &samples, hz, done_at, &pool).await?;
    emit(&summary.to_string());
    Ok(())
}

/// Steps per second over the best `width`-second stretch of samples.
fn peak_rate(samples: &[Sample], width: f64) -> f64 {
    let mut best = 0.0f64;
    let mut j = 0;
    for i in 0..samples.len() {
        while j < samples.len() && samples[j].t - samples[i].t < width {
            j += 1;
        }
        if j >= samples.len() {
            break;
        }
        let dt = samples[j].t - samples[i].t;
        if dt > 0.0 {
            best = best.max((samples[j].ticks - samples[i].ticks) as f64 / dt);
        }
    }
    best
}

/// Over consecutive sample pairs selected by `keep`: seconds covered, steps, commits, CPU
/// ticks per process and the backends' states.
struct Span {
    seconds: f64,
    steps: i64,
    commits: i64,
    cpu: Vec<u64>,
    pg: u64,
    busy: u64,
    unniced: u64,
    total: u64,
    /// Sums over the kept samples, and how many were kept.
    backends: [i64; 4],
    kept: usize,
}

fn span(samples: &[Sample], keep: impl Fn(&Sample, &Sample) -> bool) -> Span {
    let mut seconds = 0.0;
    let mut steps = 0;
    let mut commits = 0;
    let (mut pg, mut busy, mut unniced, mut total) = (0u64, 0u64, 0u64, 0u64);
    let mut backends = [0i64; 4];
    let mut kept = 0usize;
    let procs = samples.first().map_or(0, |s| s.procs.len());
    let mut cpu = vec![0u64; procs];
    for pair in samples.windows(2) {
        let (a, b) = (&pair[0], &pair[1]);
        if !keep(a, b) {
            continue;
        }
        kept += 1;
        for (sum, x) in backends.iter_mut().zip([
            a.pg_running,
            a.pg_idle_in_tx,
            a.pg_lock_wait,
            a.pg_lwlock_wait,
        ]) {
            *sum += x;
        }
        seconds += b.t - a.t;
        steps += b.ticks - a.ticks;
        commits += b.commits - a.commits;
        pg += b.pg_ticks.saturating_sub(a.pg_ticks);
        busy += b.machine_busy.saturating_sub(a.machine_busy);
        unniced += b
            .machine_busy_unniced
            .saturating_sub(a.machine_busy_unniced);
        total += b.machine_total.saturating_sub(a.machine_total);
        for (k, c) in cpu.iter_mut().enumerate() {
            if let (Some(pa), Some(pb)) = (a.procs.get(k), b.procs.get(k)) {
                *c += pb.cpu_ticks.saturating_sub(pa.cpu_ticks);
            }
        }
    }
    Span {
        seconds,
        steps,
        commits,
        cpu,
        pg,
        busy,
        unniced,
        total,
        backends,
        kept,
    }
}

fn span_json(samples: &[Sample], hz: f64, keep: impl Fn(&Sample, &Sample) -> bool) -> Value {
    let Span {
        seconds,
        steps,
        commits,
        cpu,
        pg,
        busy,
        unniced,
        total,
        backends,
        kept,
    } = span(samples, keep);
    let mean = |i: usize| {
        if kept > 0 {
            r2(backends[i] as f64 / kept as f64)
        } else {
            0.0
        }
    };
    let ncpu = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
    let cpu_percent: Vec<f64> = cpu
        .iter()
        .map(|t| {
            if seconds > 0.0 {
                r2(*t as f64 / hz / seconds * 100.0)
            } else {
                0.0
            }
        })
        .collect();
    let per_s = |x: i64| {
        if seconds > 0.0 {
            r2(x as f64 / seconds)
        } else {
            0.0
        }
    };
    json!({
        "seconds": r2(seconds),
        "steps": steps,
        "steps_per_s": per_s(steps),
        "commits_per_s": per_s(commits),
        "cpu_percent": cpu_percent,
        "pg_backends_cpu_percent": if seconds > 0.0 { r2(pg as f64 / hz / seconds * 100.0) } else { 0.0 },
        "machine_busy_percent": if total > 0 { r2(busy as f64 / total as f64 * 100.0) } else { 0.0 },
        "machine_busy_cores": if total > 0 { r2(busy as f64 / total as f64 * ncpu) } else { 0.0 },
        "backends_mean": {
            "running": mean(0),
            "idle_in_transaction": mean(1),
            "waiting_lock": mean(2),
            "waiting_lwlock": mean(3),
        },
        "machine_busy_cores_without_niced": if total > 0 { r2(unniced as f64 / total as f64 * ncpu) } else { 0.0 },
    })
}

async fn summarize(
    args: &MonitorArgs,
    samples: &[Sample],
    hz: f64,
    done_at: Option<f64>,
    pool: &sqlx::PgPool,
) -> anyhow::Result<Value> {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        bail!("no samples were taken");
    };
    let procs: Vec<Value> = args
        .pids
        .iter()
        .enumerate()
        .map(|(k, pid)| {
            let peak_rss = samples
                .iter()
                .filter_map(|s| s.procs.get(k))
                .map(|p| p.rss_kb)
                .max()
                .unwrap_or(0);
            let hwm = samples
                .iter()
                .filter_map(|s| s.procs.get(k))
                .map(|p| p.hwm_kb)
                .max()
                .unwrap_or(0);
            json!({
                "pid": pid,
                "peak_rss_mb": r2(peak_rss as f64 / 1024.0),
                "vm_hwm_mb": r2(hwm as f64 / 1024.0),
                "final_rss_mb": r2(last.procs.get(k).map_or(0, |p| p.rss_kb) as f64 / 1024.0),
            })
        })
        .collect();
    let saturated = samples.iter().filter(|s| s.due > 0).count();
    let final_db = final_state(pool).await?;
    Ok(json!({
        "phase": "monitor",
        "label": args.label,
        "samples": samples.len(),
        "elapsed_s": r2(last.t - first.t),
        "all_done": done_at.is_some(),
        "done_after_s": done_at.map(r2),
        "processes": procs,
        "whole_run": span_json(samples, hz, |_, _| true),
        // Intervals that began and ended with due work waiting: the engines were never idle
        // for want of work (as far as one-second samples can tell).
        "while_work_due": span_json(samples, hz, |a, b| a.due > 0 && b.due > 0),
        "window_active": if args.window_active > 0 {
            let mut w = span_json(samples, hz, |a, _| a.active >= args.window_active);
            if let Value::Object(m) = &mut w {
                m.insert("threshold".into(), json!(args.window_active));
                let peak = samples
                    .iter()
                    .filter(|s| s.active >= args.window_active)
                    .flat_map(|s| s.procs.iter().map(|p| p.rss_kb))
                    .max()
                    .unwrap_or(0);
                m.insert("peak_rss_mb".into(), json!(r2(peak as f64 / 1024.0)));
            }
            w
        } else {
            Value::Null
        },
        "peak_steps_per_s_10s": r2(peak_rate(samples, 10.0)),
        "samples_with_due_backlog": saturated,
        "max_due_backlog": samples.iter().map(|s| s.due).max().unwrap_or(0),
        "max_active": samples.iter().map(|s| s.active).max().unwrap_or(0),
        "max_leased": samples.iter().map(|s| s.leased).max().unwrap_or(0),
        "max_connections": samples.iter().map(|s| s.connections).max().unwrap_or(0),
        "steps_start": first.ticks,
        "steps_end": last.ticks,
        "events_end": last.events,
        "final": final_db,
    }))
}

/// What the database holds at the end: outcomes, failure reasons, journal completeness,
/// canaries that started without seeing the previous release, and the activity window by
/// database timestamps.
async fn final_state(pool: &sqlx::PgPool) -> anyhow::Result<Value> {
    let statuses: Vec<(String, i64)> =
        sqlx::query_as("SELECT status::text, count(*) FROM deployments GROUP BY 1 ORDER BY 1")
            .fetch_all(pool)
            .await?;
    let failures: Vec<(String, i64)> = sqlx::query_as(
        "SELECT coalesce(failure_code, waiting_reason, '?'), count(*) FROM deployments
         WHERE failure_code IS NOT NULL OR waiting_reason IS NOT NULL GROUP BY 1 ORDER BY 2 DESC",
    )
    .fetch_all(pool)
    .await?;
    let (journal, unfinished, first_j, last_j): (
        i64,
        i64,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT count(*), count(*) FILTER (WHERE finished_at IS NULL), min(started_at),
                max(finished_at) FROM deployment_journal",
    )
    .fetch_one(pool)
    .await?;
    let (first_e, last_e): (
        Option<chrono::DateTime<chrono::Utc>>,
        Option<chrono::DateTime<chrono::Utc>>,
    ) = sqlx::query_as(
        "SELECT min(at) FILTER (WHERE kind = 'started'), max(at) FROM deployment_events",
    )
    .fetch_one(pool)
    .await?;
    let kinds: Vec<(String, i64)> =
        sqlx::query_as("SELECT kind, count(*) FROM deployment_events GROUP BY 1 ORDER BY 2 DESC")
            .fetch_all(pool)
            .await?;
    // Second and later deployments of an environment whose machine found no previous
    // release when it started (the process that started it had not seen the first one).
    let (later, blind): (i64, i64) = sqlx::query_as(
        "SELECT count(*),
                count(*) FILTER (WHERE d.state <> '{}'::jsonb
                                 AND jsonb_typeof(d.state->'previous') IS DISTINCT FROM 'object')
         FROM deployments d
         WHERE EXISTS (SELECT 1 FROM deployments o
                       WHERE o.environment_id = d.environment_id AND o.id < d.id)",
    )
    .fetch_one(pool)
    .await?;
    // Write volume: row versions written and how large the tables grew.
    let tables: Vec<(String, i64, i64, i64, i64, i64)> = sqlx::query_as(
        "SELECT relname::text, n_tup_ins, n_tup_upd, n_tup_hot_upd, pg_relation_size(relid),
                pg_total_relation_size(relid)
         FROM pg_stat_user_tables
         WHERE relname IN ('deployments', 'deployment_events', 'deployment_journal', 'commands')
         ORDER BY relname",
    )
    .fetch_all(pool)
    .await?;
    let tables: Vec<Value> = tables
        .into_iter()
        .map(|(name, ins, upd, hot, heap, total)| {
            json!({"table": name, "inserts": ins, "updates": upd, "hot_updates": hot,
                   "heap_mb": r2(heap as f64 / 1048576.0), "total_mb": r2(total as f64 / 1048576.0)})
        })
        .collect();
    // Every claim (and supersede) bumps the epoch: claims that persisted no step waited in
    // their environment's queue.
    let (ticks, claims): (i64, i64) = sqlx::query_as(
        "SELECT coalesce(sum(tick), 0)::bigint, coalesce(sum(epoch), 0)::bigint FROM deployments",
    )
    .fetch_one(pool)
    .await?;
    let from = match (first_j, first_e) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    let to = match (last_j, last_e) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    };
    let window = match (from, to) {
        (Some(f), Some(t)) => (t - f).num_milliseconds() as f64 / 1000.0,
        _ => 0.0,
    };
    Ok(json!({
        "statuses": statuses.into_iter().collect::<std::collections::BTreeMap<_, _>>(),
        "failure_or_waiting_reasons": failures,
        "steps_persisted": ticks,
        "claims": claims,
        "tables": tables,
        "journal_rows": journal,
        "journal_unfinished": unfinished,
        "event_kinds": kinds,
        "later_deployments": later,
        "later_deployments_started_without_previous": blind,
        "db_window_s": r2(window),
        "db_window_steps_per_s": if window > 0.0 { r2(ticks as f64 / window) } else { 0.0 },
    }))
}
